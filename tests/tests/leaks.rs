//! `muppy-trace leaks` (Valgrind memcheck's leak verdicts on a live process) and `muppy-trace
//! refs` (who points at a block), against workloads/leak_cases.c, whose `leak:` comments give
//! each allocation site's verdict, and against Valgrind itself.
//!
//! The oracle: leak_cases runs under `valgrind --vgdb=yes --leak-check-heuristics=none
//! --num-callers=50`, gets SIGUSR1 after `ready`, prints `built`, and
//! `vgdb leak_check full reachable any heuristics none` reports on it while it idles, as muppy
//! does. Its loss records per (kind, site), the site being the first frame that is not an
//! allocator's (valgrind-3.19.0, glibc 2.36, Debian 12; gcc -O1 -g):
//!
//! | case | kind            | site                             | objects | bytes (indirect) |
//! |------|-----------------|----------------------------------|---------|------------------|
//! | T    | reachable       | pre_attach (leak_cases.c:74)     | 1       | 800 (before the SIGUSR1: an attached muppy never sees it) |
//! | 1    | reachable       | case1 (leak_cases.c:81)          | 1       | 1000  |
//! | 2    | reachable       | case2 (leak_cases.c:88)          | 1       | 2000  |
//! | 2    | reachable       | case2 (leak_cases.c:90)          | 1       | 2001  |
//! | 3    | definitely_lost | case3 (leak_cases.c:98)          | 1       | 3000  |
//! | 4    | definitely_lost | case4 (leak_cases.c:105)         | 1       | 4000 (4001) |
//! | 4    | indirectly_lost | case4 (leak_cases.c:107)         | 1       | 4001  |
//! | 5    | possibly_lost   | case5 (leak_cases.c:115)         | 1       | 5000  |
//! | 6    | reachable       | case6 (leak_cases.c:122)         | 1       | 6000  |
//! | 6    | possibly_lost   | case6 (leak_cases.c:124)         | 1       | 6001  |
//! | 7    | possibly_lost   | case7 (leak_cases.c:132)         | 1       | 7000  |
//! | 7    | possibly_lost   | case7 (leak_cases.c:134)         | 1       | 7001  |
//! | 8    | possibly_lost   | case8 (leak_cases.c:142)         | 1       | 8000  |
//! | 8    | possibly_lost   | case8 (leak_cases.c:144)         | 1       | 8001  |
//! | 9    | definitely_lost | case9 (leak_cases.c:152)         | 1       | 9000 (9001) |
//! | 9    | indirectly_lost | case9 (leak_cases.c:154)         | 1       | 9001  |
//! | 10   | definitely_lost | case10 (leak_cases.c:163)        | 1       | 10000 (10001): A, the lower address, leads |
//! | 10   | indirectly_lost | case10 (leak_cases.c:165)        | 1       | 10001 |
//! | 11   | reachable       | case11_thread (leak_cases.c:176) | 1       | 11000 |
//! | 12   | reachable       | case12 (leak_cases.c:197)        | 1       | 12000 |
//! | 13   | definitely_lost | case13 (leak_cases.c:204)        | 1       | 13000 |
//! | 14   | reachable       | case14_thread (leak_cases.c:215) | 1       | 14000 |
//! | 15   | reachable       | case15 (leak_cases.c:278)        | 1       | 15000 |
//! | 16   | reachable       | case16 (leak_cases.c:287)        | 1       | 16000 |
//! | 17   | reachable       | case17 (leak_cases.c:295)        | 1       | 17000 |
//! | list | definitely_lost | lost_list (leak_cases.c:307)     | 1       | 48 (47952) |
//! | list | indirectly_lost | lost_list (leak_cases.c:311)     | 999     | 47952 |
//! | 18   | definitely_lost | case18 (leak_cases.c:324)        | 1       | 18000 (F, case18 (leak_cases.c:322), freed: no record) |
//!
//! `who_points_at` agrees with what `refs` must name: case 1 from data symbol g_case1; 11 from
//! thread 2's stack, frame created by case11_thread, nothing else; 12 from an rw- anonymous
//! segment (ld.so's mapping holding the main thread's static TLS); 14 only from "tid 3 register
//! R12"; 15 from data symbol g_plugin_slot (libleak_plugin.so); 16 from an rw- anonymous
//! segment; 17 from 56 bytes inside T (T[7]).
//!
//! The dynamic loader's records, all made after the SIGUSR1 (muppy reports them `reachable`,
//! as LeakSanitizer does: a documented difference). L is the length of the plugin's path + 1
//! (86 in the test build, whose path is in cargo's OUT_DIR):
//!
//! | kind          | site (Valgrind's name)                                 | objects | bytes    | from |
//! |---------------|--------------------------------------------------------|---------|----------|------|
//! | possibly_lost | allocate_dtv (dl-tls.c:401)                            | 2       | 2 x 288  | pthread_create of threads 11 and 14: the DTV (the TCB points at dtv[1]) |
//! | possibly_lost | _dlfo_mappings_segment_allocate (dl-find_object.c:217) | 1       | 2304     | dlopen: _dl_find_object's table |
//! | reachable     | _dl_new_object (dl-object.c:92)                        | 1       | 1224 + L | dlopen: the link_map |
//! | reachable     | _dl_new_object (dl-object.c:199)                       | 1       | L        | dlopen: the path |
//! | reachable     | strdup (strdup.c:42)                                   | 1       | L        | dlopen (_dl_map_object) |
//! | reachable     | _dl_map_object_deps (dl-deps.c:463)                    | 1       | 24       | dlopen |
//!
//! muppy's own names for them (symbols of ld.so): allocate_dtv+0x23, _dl_find_object_update+0x1ec,
//! _dl_new_object+0x6a and +0x349, __strdup+0x1b, _dl_map_object_deps+0x690: the test compares
//! the loader's blocks in total (7 blocks, 4,128 + 3L bytes: 4,386 in the test build), not
//! site by site.
//! No other record: the workload formats its lines on the stack (no stdio buffer).
//!
//! Summary of the workload's own blocks: definitely lost 57,048 B in 7 blocks, indirectly lost
//! 70,955 B in 1,002, possibly lost 41,003 B in 6, still reachable 96,801 B in 11 (800 B of
//! them, T, before the attach). muppy, attached after `ready`, must report the same per site,
//! the loader's 7 blocks as reachable, and nothing at T's site or F's.
//!
//! Valgrind's end-of-run check (`leak_cases exit`, at exit) gives the same verdicts for the
//! workload's blocks (threads 11 and 14 still count as roots), without two of the loader's
//! (freed by __libc_freeres).
//!
//! The tests run the shared pieces once per test binary (the Valgrind run, and one native
//! `leaks --save` run that three tests read), kill every child on every path, and bound every
//! wait. The oracle's test needs Valgrind, not eBPF, so it runs without root too.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

use muppy_tests::{ebpf_available, muppy_trace, scratch, workload};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Children, their output, bounded waits.

/// A child process, killed (and reaped) when dropped, on every path.
struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    fn spawn(cmd: &mut Command, what: &str) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        Proc {
            child,
            what: what.to_string(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout(&mut self) -> Stream {
        Stream::new(self.child.stdout.take().expect("stdout piped"))
    }

    fn stderr(&mut self) -> Stream {
        Stream::new(self.child.stderr.take().expect("stderr piped"))
    }

    fn stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin piped")
    }

    /// Waits for it to end, at most `secs`; kills it and panics after that.
    fn wait(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} (pid {}) still running after {secs} s",
                    self.what,
                    self.pid()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it is still running (not exited, not a zombie).
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Lines a child writes to a pipe, each wait bounded.
struct Stream(mpsc::Receiver<String>);

impl Stream {
    fn new(pipe: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Stream(rx)
    }

    /// The next line, or None if none comes within `secs` or the pipe closed.
    fn next(&self, secs: u64) -> Option<String> {
        self.0.recv_timeout(Duration::from_secs(secs)).ok()
    }

    /// Lines up to and including the first containing `needle`; panics after `secs`.
    fn wait_for(&self, needle: &str, secs: u64) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    seen.push(l);
                    if hit {
                        return seen;
                    }
                }
                Err(e) => {
                    panic!("no line containing {needle:?} within {secs} s ({e}); got: {seen:#?}")
                }
            }
        }
    }

    /// Every line until the pipe closes, or until `secs` have passed.
    fn rest(&self, secs: u64) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(_) => return out,
            }
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process this test started.
    let r = unsafe { libc::kill(i32::try_from(pid).expect("pid"), sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

fn send(stdin: &mut ChildStdin, line: &str) {
    stdin
        .write_all(format!("{line}\n").as_bytes())
        .and_then(|()| stdin.flush())
        .unwrap_or_else(|e| panic!("writing {line:?} to the target: {e}"));
}

/// `muppy-trace ARGS` with piped stdio.
fn tracer(args: &[&str]) -> Proc {
    Proc::spawn(
        Command::new(muppy_trace())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        &format!("muppy-trace {}", args.join(" ")),
    )
}

/// A workload with stdin and stderr piped (its protocol lines are on stderr).
fn target(name: &str, args: &[&str], no_aslr: bool) -> Proc {
    let mut cmd = Command::new(workload(name));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if no_aslr {
        // SAFETY: personality(2) is async-signal-safe; the closure touches nothing else.
        unsafe {
            cmd.pre_exec(|| {
                const ADDR_NO_RANDOMIZE: libc::c_ulong = 0x0040000;
                if libc::personality(ADDR_NO_RANDOMIZE) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Proc::spawn(&mut cmd, name)
}

/// A finished muppy-trace run: exit code, stdout's JSON lines, stderr.
struct Finished {
    code: Option<i32>,
    json: Vec<Value>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Finished {
    /// Waits (at most `secs`) for the tracer to end and collects what it wrote.
    fn collect(t: &mut Proc, out: &Stream, err: &Stream, secs: u64) -> Self {
        let status = t.wait(secs);
        let stdout = out.rest(10);
        let stderr = err.rest(10).join("\n");
        let json = stdout
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("stdout line is not JSON ({e}): {l:?}\n--- stderr\n{stderr}")
                })
            })
            .collect();
        Finished {
            code: status.code(),
            json,
            stdout: stdout.join("\n"),
            stderr,
        }
    }

    /// The last `{"type":"leaks"}` line.
    fn leaks(&self) -> &Value {
        self.json
            .iter()
            .rev()
            .find(|v| v["type"] == "leaks")
            .unwrap_or_else(|| panic!("no leaks line\n{self}"))
    }

    /// Output that is no crash: no panic, no signal.
    fn assert_sane(&self) {
        assert!(
            matches!(self.code, Some(0..=2)),
            "exit code not 0, 1 or 2\n{self}"
        );
        assert!(!self.stderr.contains("panicked"), "{self}");
    }
}

/// A running `muppy-trace` and its output.
struct Tracing {
    proc: Proc,
    out: Stream,
    err: Stream,
    /// Its stderr up to the line saying it traces.
    early: Vec<String>,
}

impl Tracing {
    /// Starts `muppy-trace ARGS` and waits until its probes are in place.
    fn start(args: &[&str]) -> Self {
        let mut proc = tracer(args);
        let out = proc.stdout();
        let err = proc.stderr();
        let early = err.wait_for("muppy-trace: tracing", 120);
        Tracing {
            proc,
            out,
            err,
            early,
        }
    }

    /// Ctrl-C, then everything it wrote.
    fn interrupt(self, secs: u64) -> Finished {
        signal(self.proc.pid(), libc::SIGINT);
        self.finish(secs)
    }

    /// Waits (at most `secs`) for it to end by itself; everything it wrote.
    fn finish(mut self, secs: u64) -> Finished {
        let mut run = Finished::collect(&mut self.proc, &self.out, &self.err, secs);
        self.early.push(run.stderr);
        run.stderr = self.early.join("\n");
        run
    }
}

// ---------------------------------------------------------------------------------------------
// What the workloads say they make: their `leak:` comments.

/// Blocks, bytes, and (for a definitely lost row) the bytes its cliques hold besides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Fig {
    objects: u64,
    bytes: u64,
    indirect: u64,
}

impl std::ops::AddAssign for Fig {
    fn add_assign(&mut self, o: Fig) {
        self.objects += o.objects;
        self.bytes += o.bytes;
        self.indirect += o.indirect;
    }
}

/// (kind, site) → figures.
type Table = BTreeMap<(String, String), Fig>;

const KINDS: [&str; 4] = [
    "definitely_lost",
    "indirectly_lost",
    "possibly_lost",
    "reachable",
];

fn show(t: &Table) -> String {
    let mut s = String::new();
    for ((kind, site), f) in t {
        s += &format!(
            "  {kind:16} {site:40} {:>5} objects {:>7} bytes {:>7} indirect\n",
            f.objects, f.bytes, f.indirect
        );
    }
    s
}

/// One `leak:` comment: the verdict its line's allocation must get.
#[derive(Clone, Debug)]
struct Case {
    kind: String,
    function: String,
    site: String,
    fig: Fig,
    /// Allocated before the attach: an attached tracer never sees it.
    before: bool,
}

fn cases(name: &str) -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workloads")
        .join(format!("{name}.c"));
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases: Vec<Case> = src
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let l = line.split("/* leak: ").nth(1)?;
            let words: Vec<&str> = l.split_whitespace().collect();
            let field = |k: &str| {
                words
                    .iter()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .map(str::to_string)
            };
            let num = |k: &str| field(k).map_or(Some(0), |v| v.parse::<u64>().ok());
            let function = field("site")?;
            Some(Case {
                kind: field("kind")?,
                site: format!("{function} ({name}.c:{})", i + 1),
                function,
                fig: Fig {
                    objects: num("objects")?,
                    bytes: num("bytes")?,
                    indirect: num("indirect")?,
                },
                before: words.contains(&"before"),
            })
        })
        .collect();
    assert!(
        !cases.is_empty(),
        "{} has no leak: comments",
        path.display()
    );
    cases
}

/// The rows `cases` must produce; `attached`: for a tracer that attached after the blocks
/// marked `before` were allocated.
fn expected(cases: &[Case], attached: bool) -> Table {
    let mut t = Table::new();
    for c in cases
        .iter()
        .filter(|c| c.fig.objects > 0 && !(attached && c.before))
    {
        *t.entry((c.kind.clone(), c.site.clone())).or_default() += c.fig;
    }
    t
}

/// Sites that must have no row at all: blocks freed, or never seen.
fn absent_sites(cases: &[Case], attached: bool) -> Vec<String> {
    cases
        .iter()
        .filter(|c| c.fig.objects == 0 || (attached && c.before))
        .map(|c| c.site.clone())
        .collect()
}

fn site_of(cases: &[Case], function: &str, bytes: u64) -> String {
    cases
        .iter()
        .find(|c| c.function == function && c.fig.bytes == bytes)
        .unwrap_or_else(|| panic!("no case {function} of {bytes} bytes"))
        .site
        .clone()
}

/// Whether a site is in one of the workloads' own files.
fn in_workload(site: &str) -> bool {
    ["leak_cases.c:", "leak_plugin.c:"]
        .iter()
        .any(|f| site.contains(&format!("({f}")))
}

fn sum(t: &Table, kind: &str) -> Fig {
    let mut f = Fig::default();
    for ((k, _), v) in t {
        if k == kind {
            f += *v;
        }
    }
    f
}

// ---------------------------------------------------------------------------------------------
// muppy's JSON.

/// A leaks line's rows; a (kind, site) may appear once.
fn leak_table(line: &Value) -> Table {
    let mut t = Table::new();
    for r in line["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("rows: {line}"))
    {
        let kind = r["kind"].as_str().unwrap_or_else(|| panic!("kind: {r}"));
        assert!(KINDS.contains(&kind), "unknown kind in {r}");
        let site = r["site"].as_str().unwrap_or_else(|| panic!("site: {r}"));
        let fig = Fig {
            objects: r["objects"]
                .as_u64()
                .unwrap_or_else(|| panic!("objects: {r}")),
            bytes: r["bytes"].as_u64().unwrap_or_else(|| panic!("bytes: {r}")),
            indirect: r["indirect_bytes"]
                .as_u64()
                .unwrap_or_else(|| panic!("indirect_bytes: {r}")),
        };
        let old = t.insert((kind.to_string(), site.to_string()), fig);
        assert!(old.is_none(), "two rows for ({kind}, {site}) in {line}");
    }
    t
}

fn workload_rows(t: &Table) -> Table {
    t.iter()
        .filter(|((_, site), _)| in_workload(site))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn other_rows(t: &Table) -> Table {
    t.iter()
        .filter(|((_, site), _)| !in_workload(site))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// A leaks line's `totals` agree with its rows, kind by kind.
fn check_totals(line: &Value) {
    let t = leak_table(line);
    for kind in KINDS {
        let s = sum(&t, kind);
        let tot = &line["totals"][kind];
        assert_eq!(
            (tot["objects"].as_u64(), tot["bytes"].as_u64()),
            (Some(s.objects), Some(s.bytes)),
            "totals.{kind} disagree with the rows: {line}"
        );
    }
}

/// An address, as a JSON number or a "0x..." string.
fn addr(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| {
            v.as_str()
                .and_then(|s| s.strip_prefix("0x"))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or_else(|| panic!("not an address: {v}"))
}

/// `key=value` of a workload's protocol line.
fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key}= missing in {line:?}"))
        .to_string()
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The pid of a `ready <pid>` line.
fn ready_pid(lines: &[String]) -> u32 {
    let l = lines.last().expect("ready line");
    l.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad ready line {l:?}"))
}

// ---------------------------------------------------------------------------------------------
// The Valgrind oracle.

/// One loss record of `leak_check`.
#[derive(Clone, Debug)]
struct Record {
    /// Its number, for `block_list`.
    number: u64,
    kind: &'static str,
    fig: Fig,
    /// Frames, innermost first, as Valgrind names them: `FUNC (FILE:LINE)` or `FUNC (in OBJ)`.
    stack: Vec<String>,
}

const ALLOCATORS: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "memalign",
    "posix_memalign",
    "aligned_alloc",
    "valloc",
    "pvalloc",
    "operator new(unsigned long)",
    "operator new[](unsigned long)",
];

fn frame_function(frame: &str) -> &str {
    frame.split(" (").next().unwrap_or(frame)
}

impl Record {
    /// The first frame that is not an allocator's, as muppy names a site: `FUNC (FILE:LINE)`
    /// with FILE's base name.
    fn site(&self) -> String {
        let frame = self
            .stack
            .iter()
            .find(|f| !ALLOCATORS.contains(&frame_function(f)))
            .map_or("[no frame]", String::as_str);
        let func = frame_function(frame);
        let loc = frame
            .strip_prefix(func)
            .and_then(|r| r.trim().strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or("");
        let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
        match loc.strip_prefix("in ") {
            Some(obj) => format!("{func} (in {})", base(obj)),
            None => format!("{func} ({})", base(loc)),
        }
    }

    fn through(&self, function: &str) -> bool {
        self.stack.iter().any(|f| {
            let name = frame_function(f);
            name == function || name.starts_with(&format!("{function}@"))
        })
    }

    /// Made by the dynamic loader: a thread's DTV, or dlopen's bookkeeping.
    fn loader(&self) -> bool {
        self.through("_dl_allocate_tls") || self.through("_dl_open") || self.through("dlopen")
    }

    /// Made before the SIGUSR1 (the attach).
    fn before(&self) -> bool {
        self.through("pre_attach")
    }
}

fn number(s: &str) -> u64 {
    s.trim()
        .replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("not a number {s:?}: {e}"))
}

/// The loss records of `leak_check full` output (`==PID== ` prefixes or not).
fn parse_valgrind(text: &str) -> Vec<Record> {
    const WORDS: [(&str, &str); 4] = [
        (" are definitely lost in loss record ", "definitely_lost"),
        (" are indirectly lost in loss record ", "indirectly_lost"),
        (" are possibly lost in loss record ", "possibly_lost"),
        (" are still reachable in loss record ", "reachable"),
    ];
    let mut out = Vec::new();
    let mut cur: Option<Record> = None;
    for raw in text.lines() {
        let l = match raw.strip_prefix("==") {
            Some(r) => r.split_once("== ").map_or("", |(_, rest)| rest),
            None => raw,
        };
        if let Some((_, kind)) = WORDS.iter().find(|(w, _)| l.contains(w)) {
            out.extend(cur.take());
            // "8,001 (4,000 direct, 4,001 indirect) bytes in 1 blocks are definitely lost ..."
            let (amount, rest) = l.split_once(" bytes in ").expect("bytes in");
            let objects = number(rest.split_whitespace().next().expect("blocks"));
            let record = number(
                rest.split(" in loss record ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .expect("loss record number"),
            );
            let (bytes, indirect) = match amount.split_once('(') {
                Some((_, paren)) => {
                    let paren = paren.trim_end_matches(')');
                    let (d, i) = paren.split_once(", ").expect("direct, indirect");
                    (
                        number(d.trim().trim_end_matches("direct")),
                        number(i.trim().trim_end_matches("indirect")),
                    )
                }
                None => (number(amount), 0),
            };
            cur = Some(Record {
                number: record,
                kind,
                fig: Fig {
                    objects,
                    bytes,
                    indirect,
                },
                stack: Vec::new(),
            });
        } else if let Some(r) = cur.as_mut() {
            let t = l.trim_start();
            if t.starts_with("at 0x") || t.starts_with("by 0x") {
                if let Some((_, frame)) = t.split_once(": ") {
                    r.stack.push(frame.to_string());
                }
            } else {
                out.extend(cur.take());
            }
        }
    }
    out.extend(cur);
    out
}

/// Valgrind's verdicts on leak_cases, taken once per test binary.
struct Oracle {
    records: Vec<Record>,
    /// vgdb's output, to print on failure.
    raw: String,
    /// `who_points_at` of the block of each site in [`WHO_POINTS_AT`].
    pointers: BTreeMap<String, String>,
}

/// The single-block sites whose roots `refs` names (function, bytes), asked of Valgrind too.
const WHO_POINTS_AT: [(&str, u64); 7] = [
    ("case1", 1000),
    ("case11_thread", 11000),
    ("case12", 12000),
    ("case14_thread", 14000),
    ("case15", 15000),
    ("case16", 16000),
    ("case17", 17000),
];

impl Oracle {
    /// Records grouped per (kind, site), those `keep` selects.
    fn table(&self, keep: impl Fn(&Record) -> bool) -> Table {
        let mut t = Table::new();
        for r in self.records.iter().filter(|r| keep(r)) {
            *t.entry((r.kind.to_string(), r.site())).or_default() += r.fig;
        }
        t
    }

    /// What an attached muppy must report at the workload's own sites: what Valgrind found
    /// there, but the blocks allocated before the attach.
    fn after_attach(&self) -> Table {
        self.table(|r| !r.before() && !r.loader())
    }

    /// The loader's blocks, all kinds together.
    fn loader(&self) -> Fig {
        let mut f = Fig::default();
        for r in self.records.iter().filter(|r| r.loader()) {
            f.objects += r.fig.objects;
            f.bytes += r.fig.bytes;
        }
        f
    }
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.exists())
}

fn run_valgrind() -> Oracle {
    for prog in ["valgrind", "vgdb"] {
        assert!(
            which(prog).is_some(),
            "{prog} is not installed: run `cargo xtask setup`, which installs valgrind"
        );
    }
    let dir = scratch("leaks-valgrind");
    // vgdb's FIFOs live here, not in /tmp, so that killing Valgrind leaves nothing behind.
    let prefix = format!("--vgdb-prefix={}", dir.join("vgdb").display());
    let mut vg = Proc::spawn(
        Command::new("valgrind")
            .arg("--tool=memcheck")
            .arg("--vgdb=yes")
            .arg(&prefix)
            .arg("--num-callers=50")
            .arg("--leak-check-heuristics=none")
            .arg(format!("--log-file={}", dir.join("valgrind.log").display()))
            .arg(workload("leak_cases"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "valgrind leak_cases",
    );
    let lines = vg.stderr();
    let pid = ready_pid(&lines.wait_for("ready ", 120));
    assert_eq!(
        pid,
        vg.pid(),
        "valgrind runs the program in its own process"
    );
    signal(pid, libc::SIGUSR1);
    lines.wait_for("built", 120);
    let raw = vgdb(
        pid,
        &prefix,
        &[
            "leak_check",
            "full",
            "reachable",
            "any",
            "heuristics",
            "none",
        ],
    );
    let records = parse_valgrind(&raw);
    if records.is_empty() {
        drop(vg);
        let log = std::fs::read_to_string(dir.join("valgrind.log")).unwrap_or_default();
        panic!("no loss records in vgdb's output:\n{raw}\n--- valgrind.log\n{log}");
    }
    // Where Valgrind finds the pointers to the blocks whose roots `refs` must name.
    let cases = cases("leak_cases");
    let mut pointers = BTreeMap::new();
    for (function, bytes) in WHO_POINTS_AT {
        let site = site_of(&cases, function, bytes);
        let record = records
            .iter()
            .find(|r| r.site() == site)
            .unwrap_or_else(|| panic!("no record at {site}\n{raw}"));
        let list = vgdb(pid, &prefix, &["block_list", &record.number.to_string()]);
        // "==PID== 0x4A403A0[1000]"
        let block = list
            .lines()
            .find_map(|l| {
                let (a, size) = l.split("== ").nth(1)?.trim().split_once('[')?;
                (size == format!("{bytes}]")).then(|| a.to_string())
            })
            .unwrap_or_else(|| panic!("no block of {bytes} bytes in block_list:\n{list}"));
        pointers.insert(site, vgdb(pid, &prefix, &["who_points_at", &block]));
    }
    drop(vg);
    let _ = std::fs::remove_dir_all(&dir);
    Oracle {
        records,
        raw,
        pointers,
    }
}

/// A monitor command's output (`==PID== ` prefixes kept).
fn vgdb(pid: u32, prefix: &str, command: &[&str]) -> String {
    let mut vgdb = Proc::spawn(
        Command::new("vgdb")
            .arg(format!("--pid={pid}"))
            .arg(prefix)
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        &format!("vgdb {}", command.join(" ")),
    );
    let out = vgdb.stdout();
    let err = vgdb.stderr();
    let status = vgdb.wait(120);
    let text = out.rest(10).join("\n");
    assert!(
        status.success(),
        "vgdb {}: {status}\n{text}\n{}",
        command.join(" "),
        err.rest(10).join("\n")
    );
    text
}

fn oracle() -> &'static Oracle {
    static ORACLE: OnceLock<Oracle> = OnceLock::new();
    ORACLE.get_or_init(run_valgrind)
}

// ---------------------------------------------------------------------------------------------
// One native run of leak_cases under `muppy-trace leaks --pid --save`, shared.

struct Native {
    run: Finished,
    pid: u32,
    /// The snapshot `--save` wrote (in a scratch directory kept for the test binary's life).
    saved: PathBuf,
}

/// leak_cases, started; returns it and its stderr once it printed `ready`.
fn start_cases(no_aslr: bool) -> (Proc, Stream, u32) {
    let mut t = target("leak_cases", &[], no_aslr);
    let lines = t.stderr();
    let pid = ready_pid(&lines.wait_for("ready ", 60));
    (t, lines, pid)
}

/// Attaches `muppy-trace SUBCOMMAND --pid N EXTRA` to a fresh leak_cases, lets it build its
/// cases once the probes are in place, then Ctrl-C: the check.
fn traced_cases(sub: &str, extra: &[&str], no_aslr: bool) -> (Finished, u32, String) {
    let (target, lines, pid) = start_cases(no_aslr);
    let pid_s = pid.to_string();
    let mut args = vec![sub, "--pid", &pid_s, "--format", "json"];
    args.extend_from_slice(extra);
    let tracing = Tracing::start(&args);
    signal(pid, libc::SIGUSR1);
    let built = lines.wait_for("built", 120).pop().expect("built");
    let run = tracing.interrupt(120);
    drop(target);
    (run, pid, built)
}

fn native() -> &'static Native {
    static NATIVE: OnceLock<Native> = OnceLock::new();
    NATIVE.get_or_init(|| {
        let dir = scratch("leaks-native");
        let saved = dir.join("cases.muppy");
        let (run, pid, _) =
            traced_cases("leaks", &["--save", saved.to_str().expect("utf-8")], false);
        assert_eq!(run.code, Some(0), "{run}");
        Native { run, pid, saved }
    })
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Valgrind's verdicts are the design's (the `leak:` comments), site by site; every other
/// record is the dynamic loader's. Needs Valgrind, not eBPF.
#[test]
fn valgrind_oracle_matches_the_design() {
    let o = oracle();
    let cases = cases("leak_cases");
    let ours = o.table(|r| in_workload(&r.site()));
    let want = expected(&cases, false);
    assert_eq!(
        ours,
        want,
        "Valgrind:\n{}design:\n{}\n{}",
        show(&ours),
        show(&want),
        o.raw
    );
    for site in absent_sites(&cases, false) {
        assert!(
            !ours.keys().any(|(_, s)| *s == site),
            "a row at {site}, whose block was freed\n{}",
            o.raw
        );
    }
    let others: Vec<&Record> = o
        .records
        .iter()
        .filter(|r| !in_workload(&r.site()))
        .collect();
    for r in &others {
        assert!(
            r.loader(),
            "a record neither the workload's nor the loader's: {r:#?}"
        );
    }
    // The two threads' DTVs: possibly lost for Valgrind (the TCB points at dtv[1]), one each.
    let dtvs: Vec<&&Record> = others
        .iter()
        .filter(|r| r.through("_dl_allocate_tls"))
        .collect();
    assert_eq!(dtvs.len(), 2, "{dtvs:#?}");
    for r in &dtvs {
        assert_eq!(r.kind, "possibly_lost", "{r:#?}");
        assert_eq!(r.fig.objects, 1, "{r:#?}");
        assert!(r.through("case11") || r.through("case14"), "{r:#?}");
    }
    eprintln!(
        "Valgrind: workload\n{}loader\n{}",
        show(&ours),
        show(&o.table(Record::loader))
    );
    // The roots `refs` must name are the ones Valgrind finds (its thread numbers are its own:
    // 1 main, 2 thread 11, 3 the spinner).
    let who = |function: &str, bytes: u64| -> Vec<String> {
        let site = site_of(&cases, function, bytes);
        o.pointers[&site]
            .lines()
            .map(|l| l.split_once("== ").map_or(l, |(_, r)| r).trim().to_string())
            .filter(|l| !l.starts_with("Searching for pointers"))
            .collect()
    };
    let found = who("case1", 1000);
    assert!(
        found.iter().any(|l| l.contains("data symbol \"g_case1\"")),
        "{found:#?}"
    );
    let found = who("case11_thread", 11000);
    assert!(
        found.iter().any(|l| l.contains("on thread 2's stack")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|l| l.contains("created by case11_thread (")),
        "{found:#?}"
    );
    assert!(
        !found.iter().any(|l| l.contains("register")),
        "only the stack: {found:#?}"
    );
    let found = who("case12", 12000);
    assert!(
        found.iter().any(|l| l.contains("anonymous segment")),
        "static TLS: {found:#?}"
    );
    let found = who("case14_thread", 14000);
    assert_eq!(found.len(), 1, "r12 only: {found:#?}");
    assert!(
        found[0].starts_with("tid 3 register R12 pointing at"),
        "{found:#?}"
    );
    let found = who("case15", 15000);
    assert!(
        found
            .iter()
            .any(|l| l.contains("data symbol \"g_plugin_slot\"")),
        "{found:#?}"
    );
    let found = who("case16", 16000);
    assert!(
        found.iter().any(|l| l.contains("anonymous segment")),
        "{found:#?}"
    );
    let found = who("case17", 17000);
    assert!(
        found
            .iter()
            .any(|l| l.contains("56 bytes inside a block of size 800 alloc'd")),
        "T[7]: {found:#?}"
    );
    for (site, text) in &o.pointers {
        eprintln!("who_points_at, block at {site}:\n{text}");
    }
}

/// (a) muppy, attached after `ready`, gives Valgrind's verdict at every site allocated after
/// the attach, and the loader's blocks as reachable.
#[test]
fn valgrind_agrees() {
    if !ebpf_available("valgrind_agrees") {
        return;
    }
    let o = oracle();
    let n = native();
    let line = n.run.leaks();
    assert_eq!(line["pid"], n.pid, "{}", n.run);
    let got = leak_table(line);
    let want = o.after_attach();
    let mine = workload_rows(&got);
    assert_eq!(
        mine,
        want,
        "muppy:\n{}Valgrind:\n{}\n{}",
        show(&got),
        show(&o.table(|_| true)),
        n.run
    );
    // The loader's blocks: reachable for muppy, as many and as large as Valgrind's.
    let others = other_rows(&got);
    let mut loader = Fig::default();
    for ((kind, site), f) in &others {
        assert_eq!(
            kind,
            "reachable",
            "{site}: a block not the workload's is not reachable\nmuppy:\n{}",
            show(&got)
        );
        loader += *f;
    }
    assert_eq!(
        (loader.objects, loader.bytes),
        (o.loader().objects, o.loader().bytes),
        "the loader's blocks\nmuppy:\n{}Valgrind:\n{}",
        show(&others),
        show(&o.table(Record::loader))
    );
    check_totals(line);
    for kind in ["definitely_lost", "indirectly_lost", "possibly_lost"] {
        let f = sum(&want, kind);
        assert_eq!(
            line["totals"][kind]["objects"].as_u64(),
            Some(f.objects),
            "{kind}: {line}"
        );
        assert_eq!(
            line["totals"][kind]["bytes"].as_u64(),
            Some(f.bytes),
            "{kind}: {line}"
        );
    }
    assert_eq!(
        line["confirmed"], true,
        "one check, without --interval: {line}"
    );
    // T (800 B, allocated before the attach) is heap memory muppy holds no block for.
    assert!(
        line["unaccounted_root_bytes"]
            .as_u64()
            .is_some_and(|b| b >= 800),
        "{line}"
    );
    assert!(
        line["scanned_bytes"].as_u64().is_some_and(|b| b > 0),
        "{line}"
    );
    assert!(line["pause_ms"].as_f64().is_some(), "{line}");
}

/// (i) The 1000-node list whose head was dropped: the head definitely lost, holding the other
/// 999 nodes' bytes as indirect; the 999 indirectly lost, at their own site.
#[test]
fn lost_list_is_one_definite_and_999_indirect() {
    if !ebpf_available("lost_list_is_one_definite_and_999_indirect") {
        return;
    }
    let cases = cases("leak_cases");
    let head = site_of(&cases, "lost_list", 48);
    let nodes = site_of(&cases, "lost_list", 47952);
    let n = native();
    let got = leak_table(n.run.leaks());
    let at = |site: &str| -> Table {
        got.iter()
            .filter(|((_, s), _)| s == site)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    let want_head: Table = [(
        ("definitely_lost".to_string(), head.clone()),
        Fig {
            objects: 1,
            bytes: 48,
            indirect: 47952,
        },
    )]
    .into();
    let want_nodes: Table = [(
        ("indirectly_lost".to_string(), nodes.clone()),
        Fig {
            objects: 999,
            bytes: 47952,
            indirect: 0,
        },
    )]
    .into();
    assert_eq!(at(&head), want_head, "{}", show(&got));
    assert_eq!(at(&nodes), want_nodes, "{}", show(&got));
}

/// (d) `--save` keeps the verdicts: `leaks FILE` prints the live rows again, and `summary` and
/// `objects` filter by verdict.
#[test]
fn saved_verdicts_read_back_offline() {
    if !ebpf_available("saved_verdicts_read_back_offline") {
        return;
    }
    let n = native();
    let live = n.run.leaks();
    let live_rows = leak_table(live);
    let file = n.saved.to_str().expect("utf-8");
    let offline = |args: &[&str]| -> Finished {
        let mut t = tracer(args);
        let out = t.stdout();
        let err = t.stderr();
        Finished::collect(&mut t, &out, &err, 60)
    };
    let again = offline(&["leaks", file, "--format", "json"]);
    assert_eq!(again.code, Some(0), "{again}");
    let line = again.leaks();
    assert_eq!(
        leak_table(line),
        live_rows,
        "offline:\n{}live:\n{}",
        show(&leak_table(line)),
        show(&live_rows)
    );
    assert_eq!(line["totals"], live["totals"], "{again}");
    assert_eq!(line["pid"], live["pid"], "{again}");
    for kind in ["definitely_lost", "indirectly_lost"] {
        let s = offline(&["summary", file, "--kind", kind, "--format", "json"]);
        assert_eq!(s.code, Some(0), "{s}");
        let summary = s.json.last().unwrap_or_else(|| panic!("no output\n{s}"));
        assert_eq!(summary["type"], "summary", "{s}");
        let rows: BTreeMap<String, (u64, u64)> = summary["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["site"].as_str().expect("site").to_string(),
                    (
                        r["objects"].as_u64().expect("objects"),
                        r["bytes"].as_u64().expect("bytes"),
                    ),
                )
            })
            .collect();
        let want: BTreeMap<String, (u64, u64)> = live_rows
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|((_, site), f)| (site.clone(), (f.objects, f.bytes)))
            .collect();
        assert_eq!(rows, want, "summary --kind {kind}\n{s}");
    }
    // Every definitely lost block, one line each, at its site.
    let o = offline(&[
        "objects",
        file,
        "--kind",
        "definitely_lost",
        "--format",
        "json",
    ]);
    assert_eq!(o.code, Some(0), "{o}");
    let mut got: Vec<(u64, String)> = o
        .json
        .iter()
        .map(|v| {
            assert_eq!(v["type"], "object", "{o}");
            (
                v["size"].as_u64().expect("size"),
                v["site"].as_str().expect("site").to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(u64, String)> = cases("leak_cases")
        .into_iter()
        .filter(|c| c.kind == "definitely_lost")
        .map(|c| (c.fig.bytes, c.site))
        .collect();
    want.sort();
    assert_eq!(got, want, "objects --kind definitely_lost\n{o}");
}

/// (b) Launch mode: the check runs when the command exits (held at its exit), and sees the
/// blocks allocated before `ready` too.
#[test]
fn launch_mode_checks_at_exit() {
    if !ebpf_available("launch_mode_checks_at_exit") {
        return;
    }
    let bin = workload("leak_cases");
    let mut t = tracer(&[
        "leaks",
        "--format",
        "json",
        "--",
        bin.to_str().expect("utf-8"),
        "exit",
    ]);
    let out = t.stdout();
    let err = t.stderr();
    let run = Finished::collect(&mut t, &out, &err, 180);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stderr.contains("built"),
        "the workload did not finish\n{run}"
    );
    let line = run.leaks();
    let got = leak_table(line);
    let cases = cases("leak_cases");
    let want = expected(&cases, false);
    assert_eq!(
        workload_rows(&got),
        want,
        "muppy:\n{}want:\n{}\n{run}",
        show(&got),
        show(&want)
    );
    for ((kind, site), _) in other_rows(&got) {
        assert_eq!(kind, "reachable", "{site}\n{}", show(&got));
    }
    check_totals(line);
    // definitely 57,048 B in 7, indirectly 70,955 B in 1,002, possibly 41,003 B in 6.
    for (kind, objects, bytes) in [
        ("definitely_lost", 7, 57_048),
        ("indirectly_lost", 1_002, 70_955),
        ("possibly_lost", 6, 41_003),
    ] {
        let f = sum(&want, kind);
        assert_eq!(
            (f.objects, f.bytes),
            (objects, bytes),
            "the design changed: {kind}"
        );
        assert_eq!(
            (
                line["totals"][kind]["objects"].as_u64(),
                line["totals"][kind]["bytes"].as_u64()
            ),
            (Some(objects), Some(bytes)),
            "{kind}\n{run}"
        );
    }
}

/// The rows at `site` of a leaks line.
fn rows_at(line: &Value, site: &str) -> Table {
    leak_table(line)
        .into_iter()
        .filter(|((_, s), _)| s == site)
        .collect()
}

/// (c) With --interval, a block that became unreachable is reported definitely lost only at the
/// second check that finds it so: the first says `confirmed: false` and does not list it as
/// definitely lost.
#[test]
fn interval_confirms_a_leak_at_the_second_check() {
    if !ebpf_available("interval_confirms_a_leak_at_the_second_check") {
        return;
    }
    let cases = cases("leak_small");
    let site = site_of(&cases, "small_alloc", 4242);
    let reachable =
        |l: &Value| rows_at(l, &site).contains_key(&("reachable".to_string(), site.clone()));
    let lost = Fig {
        objects: 1,
        bytes: 4242,
        indirect: 0,
    };
    let mut t = target("leak_small", &[], false);
    let lines = t.stderr();
    let mut stdin = t.stdin();
    let pid = ready_pid(&lines.wait_for("ready ", 60));
    let pid_s = pid.to_string();
    let tracing = Tracing::start(&[
        "leaks",
        "--pid",
        &pid_s,
        "--interval",
        "1",
        "--format",
        "json",
    ]);
    send(&mut stdin, "alloc");
    lines.wait_for("ok alloc", 30);
    let mut checks = Vec::new();
    let next_check = |checks: &mut Vec<Value>| -> Value {
        loop {
            let l = tracing
                .out
                .next(60)
                .unwrap_or_else(|| panic!("no check within 60 s; had {checks:#?}"));
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            if v["type"] == "leaks" {
                checks.push(v.clone());
                return v;
            }
        }
    };
    // Until a check has seen the block reachable.
    loop {
        let c = next_check(&mut checks);
        if reachable(&c) {
            break;
        }
        assert!(
            checks.len() < 10,
            "the block never shows reachable: {checks:#?}"
        );
    }
    send(&mut stdin, "drop");
    lines.wait_for("ok drop", 30);
    // A check under way during the drop may still see it reachable; the first that does not is
    // the first to find it unreachable.
    let first = loop {
        let c = next_check(&mut checks);
        if !reachable(&c) {
            break c;
        }
        assert!(checks.len() < 20, "the block stays reachable: {checks:#?}");
    };
    assert!(
        !rows_at(&first, &site).contains_key(&("definitely_lost".to_string(), site.clone())),
        "definitely lost at the first check that found it unreachable: {first}"
    );
    assert_eq!(first["confirmed"], false, "{first}");
    let second = next_check(&mut checks);
    assert_eq!(
        rows_at(&second, &site),
        [(("definitely_lost".to_string(), site.clone()), lost)].into(),
        "the second check confirms it: {second}"
    );
    assert_eq!(second["confirmed"], true, "{second}");
    let run = tracing.interrupt(60);
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(
        rows_at(run.leaks(), &site),
        [(("definitely_lost".to_string(), site.clone()), lost)].into(),
        "{run}"
    );
    drop(stdin);
    drop(t);
}

/// Every root description in a referrers tree, with the depth it was found at (1: it points
/// at the block itself).
fn roots(node: &Value, depth: usize, out: &mut Vec<(usize, String)>) {
    for r in node["referrers"].as_array().into_iter().flatten() {
        if let Some(root) = r["root"].as_str() {
            out.push((depth, root.to_string()));
        } else {
            roots(r, depth + 1, out);
        }
    }
}

/// `refs --site` on one of leak_cases' blocks: its one referrers line, checked against the
/// block, and the workload's `built` line.
fn refs_of(
    cases: &[Case],
    function: &str,
    bytes: u64,
) -> (Value, Vec<(usize, String)>, String, u32) {
    let site = site_of(cases, function, bytes);
    let regex = regex_escape(&site);
    let (run, pid, built) = traced_cases("refs", &["--site", &regex, "--maxdepth", "4"], false);
    assert_eq!(run.code, Some(0), "{run}");
    let lines: Vec<&Value> = run
        .json
        .iter()
        .filter(|v| v["type"] == "referrers")
        .collect();
    assert_eq!(lines.len(), 1, "one block at {site}\n{run}");
    let line = lines[0].clone();
    assert_eq!(line["site"], site.as_str(), "{run}");
    assert_eq!(line["size"], bytes, "{run}");
    assert_eq!(line["tree"]["site"], site.as_str(), "{run}");
    assert_eq!(addr(&line["addr"]), addr(&line["tree"]["addr"]), "{run}");
    let mut found = Vec::new();
    roots(&line["tree"], 1, &mut found);
    (line, found, built, pid)
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn has_root(found: &[(usize, String)], depth: usize, prefix: &str) -> bool {
    found
        .iter()
        .any(|(d, r)| *d == depth && r.starts_with(prefix))
}

/// (e) `refs` names the roots: a global, a thread's stack frame, TLS, a register, heap memory
/// from before tracing, and a chain through a block.
#[test]
fn refs_names_each_kind_of_root() {
    if !ebpf_available("refs_names_each_kind_of_root") {
        return;
    }
    let cases = cases("leak_cases");

    let (line, found, built, _) = refs_of(&cases, "case1", 1000);
    assert_eq!(addr(&line["addr"]), hex(&field(&built, "case1")), "{line}");
    assert!(
        has_root(&found, 1, "global g_case1 ("),
        "{found:#?}\n{line}"
    );

    let (line, found, built, _) = refs_of(&cases, "case11_thread", 11000);
    let tid = field(&built, "case11_tid");
    assert!(
        has_root(&found, 1, &format!("thread {tid} stack in case11_thread")),
        "{found:#?}\n{line}"
    );

    let (line, found, _, pid) = refs_of(&cases, "case12", 12000);
    assert!(
        has_root(&found, 1, &format!("thread {pid} TLS")),
        "{found:#?}\n{line}"
    );

    let (line, found, built, _) = refs_of(&cases, "case14_thread", 14000);
    let tid = field(&built, "case14_tid");
    assert_eq!(
        found,
        vec![(1, format!("thread {tid} register r12"))],
        "r12 is the only copy\n{line}"
    );

    let (line, found, _, _) = refs_of(&cases, "case17", 17000);
    assert!(
        has_root(&found, 1, "heap memory from before tracing"),
        "{found:#?}\n{line}"
    );

    // B of case 2: A points at it, a global at A.
    let (line, found, _, _) = refs_of(&cases, "case2", 2001);
    let a_site = site_of(&cases, "case2", 2000);
    let via: Vec<&Value> = line["tree"]["referrers"]
        .as_array()
        .expect("referrers")
        .iter()
        .filter(|r| r["site"] == a_site.as_str())
        .collect();
    assert_eq!(via.len(), 1, "{line}");
    assert_eq!(via[0]["size"], 2000, "{line}");
    assert!(
        has_root(&found, 2, "global g_case2 ("),
        "{found:#?}\n{line}"
    );
}

/// (e) `refs --addr`: inside a live block it names that block; elsewhere it says no live block
/// is there. One clear line, exit 0 or 2.
#[test]
fn refs_addr_inside_and_outside_blocks() {
    if !ebpf_available("refs_addr_inside_and_outside_blocks") {
        return;
    }
    // Without address randomisation leak_cases puts case 1's block at the same address on every
    // run: learn it from a run of its own.
    let (mut t, lines, pid) = start_cases(true);
    signal(pid, libc::SIGUSR1);
    let built = lines.wait_for("built", 60).pop().expect("built");
    t.wait_or_kill();
    let case1 = hex(&field(&built, "case1"));
    let inside = format!("{:#x}", case1 + 16);
    let (run, _, built) = traced_cases("refs", &["--addr", &inside], true);
    assert_eq!(
        hex(&field(&built, "case1")),
        case1,
        "the heap layout is not the same from run to run without ASLR; the test's premise fails"
    );
    run.assert_sane();
    let site = site_of(&cases("leak_cases"), "case1", 1000);
    let named = run
        .json
        .iter()
        .any(|v| v["type"] == "referrers" && addr(&v["addr"]) == case1)
        || run.stderr.contains(&format!("{case1:#x}")) && run.stderr.contains(&site);
    assert!(
        named,
        "{inside} is inside case 1's block at {case1:#x}\n{run}"
    );

    // Nothing is allocated at 0x10.
    let mut t = target("leak_small", &[], false);
    let lines = t.stderr();
    let mut stdin = t.stdin();
    let pid = ready_pid(&lines.wait_for("ready ", 60)).to_string();
    let tracing = Tracing::start(&["refs", "--pid", &pid, "--addr", "0x10", "--format", "json"]);
    send(&mut stdin, "alloc");
    lines.wait_for("ok alloc", 30);
    let run = tracing.interrupt(60);
    run.assert_sane();
    assert!(
        !run.json.iter().any(|v| v["type"] == "referrers"),
        "no block at 0x10\n{run}"
    );
    let said: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("0x10") && l.contains("block"))
        .collect();
    assert_eq!(
        said.len(),
        1,
        "one line saying 0x10 is no live block\n{run}"
    );
    drop(stdin);
}

impl Proc {
    /// Ends a target that idles forever.
    fn wait_or_kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (f) A target that exits, or is killed, while muppy traces it and checks every second: a
/// clean note, no hang, a sane exit code.
#[test]
fn target_ending_during_tracing_is_a_clean_end() {
    if !ebpf_available("target_ending_during_tracing_is_a_clean_end") {
        return;
    }
    // It exits by itself, between two checks.
    let mut t = target("leak_small", &[], false);
    let lines = t.stderr();
    let mut stdin = t.stdin();
    let pid = ready_pid(&lines.wait_for("ready ", 60));
    let pid_s = pid.to_string();
    let tracing = Tracing::start(&[
        "leaks",
        "--pid",
        &pid_s,
        "--interval",
        "1",
        "--format",
        "json",
    ]);
    send(&mut stdin, "alloc");
    lines.wait_for("ok alloc", 30);
    tracing.out.wait_for("\"type\":\"leaks\"", 60);
    send(&mut stdin, "exit");
    assert!(t.wait(30).success());
    let run = tracing.finish(60);
    run.assert_sane();
    assert!(
        run.stderr.contains(&format!("pid {pid} exited")),
        "the note says the target exited\n{run}"
    );

    // Killed with SIGKILL about when the next check freezes its 50 threads.
    for delay_ms in [0, 950] {
        let mut t = target("leak_threads", &["50"], false);
        let lines = t.stderr();
        let mut stdin = t.stdin();
        let pid = ready_pid(&lines.wait_for("ready ", 60));
        let pid_s = pid.to_string();
        let tracing = Tracing::start(&[
            "leaks",
            "--pid",
            &pid_s,
            "--interval",
            "1",
            "--format",
            "json",
        ]);
        send(&mut stdin, "go");
        lines.wait_for("started", 60);
        tracing.out.wait_for("\"type\":\"leaks\"", 60);
        thread::sleep(Duration::from_millis(delay_ms));
        signal(pid, libc::SIGKILL);
        let _ = t.wait(30);
        let run = tracing.finish(60);
        run.assert_sane();
        assert!(
            run.stderr.contains(&pid_s),
            "the note names the target\n{run}"
        );
        drop(stdin);
    }
}

/// States of a process's threads ('t': stopped by a tracer).
fn task_states(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        if let Some(state) = stat[close + 1..].trim_start().chars().next() {
            out.push((tid, state));
        }
    }
    out
}

fn tracer_pid(tid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The smallest count of any of leak_threads' threads.
fn min_count(stdin: &mut ChildStdin, lines: &Stream) -> u64 {
    send(stdin, "min");
    let l = lines.wait_for("min ", 30).pop().expect("min line");
    l.trim_start_matches("min ")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{l:?}: {e}"))
}

/// (g) 200 threads: the check completes, finds each thread's blocks, and every thread runs on
/// after it (each one's count grows), none left stopped or traced.
#[test]
fn check_of_200_threads_resumes_them_all() {
    if !ebpf_available("check_of_200_threads_resumes_them_all") {
        return;
    }
    let cases = cases("leak_threads");
    let mut t = target("leak_threads", &["200"], false);
    let lines = t.stderr();
    let mut stdin = t.stdin();
    let pid = ready_pid(&lines.wait_for("ready ", 60));
    let pid_s = pid.to_string();
    let tracing = Tracing::start(&["leaks", "--pid", &pid_s, "--format", "json"]);
    send(&mut stdin, "go");
    lines.wait_for("started 200", 120);
    let run = tracing.interrupt(180);
    assert_eq!(run.code, Some(0), "{run}");
    let got = workload_rows_of(&leak_table(run.leaks()), "leak_threads.c");
    assert_eq!(
        got,
        expected(&cases, false),
        "{}",
        show(&leak_table(run.leaks()))
    );
    for ((kind, site), _) in leak_table(run.leaks()) {
        if !site.contains("(leak_threads.c:") {
            assert_eq!(
                kind, "reachable",
                "{site}: the threads' DTVs are the loader's"
            );
        }
    }
    assert!(t.running(), "the target died");
    let tasks = task_states(pid);
    assert_eq!(tasks.len(), 201, "{tasks:?}");
    for (tid, _) in &tasks {
        assert_eq!(tracer_pid(*tid), 0, "thread {tid} is still traced");
    }
    // Every thread counts on: the smallest count grows.
    let before = min_count(&mut stdin, &lines);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = min_count(&mut stdin, &lines);
        if now >= before + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a thread stopped counting at {now} (was {before}): {:?}",
            task_states(pid)
                .into_iter()
                .filter(|(_, s)| *s == 't' || *s == 'T')
                .collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        task_states(pid).iter().all(|(_, s)| *s != 't'),
        "{:?}",
        task_states(pid)
    );
    drop(stdin);
    assert!(
        t.wait(30).success(),
        "leak_threads ends at the end of its input"
    );
}

fn workload_rows_of(t: &Table, file: &str) -> Table {
    t.iter()
        .filter(|((_, site), _)| site.contains(&format!("({file}:")))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// (h) A target strace holds: refused in one line with exit code 2, the target left running,
/// still strace's. An unknown pid: the same.
#[test]
fn refuses_a_target_under_strace_and_an_unknown_pid() {
    if !ebpf_available("refuses_a_target_under_strace_and_an_unknown_pid") {
        return;
    }
    assert!(
        which("strace").is_some(),
        "strace is not installed: run `cargo xtask setup`"
    );
    let mut t = target("leak_small", &[], false);
    let lines = t.stderr();
    let mut stdin = t.stdin();
    let pid = ready_pid(&lines.wait_for("ready ", 60));
    let pid_s = pid.to_string();
    let strace = Proc::spawn(
        Command::new("strace")
            .args(["-f", "-o", "/dev/null", "-p", &pid_s])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "strace",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while tracer_pid(pid) != strace.pid() {
        assert!(Instant::now() < deadline, "strace did not attach");
        thread::sleep(Duration::from_millis(20));
    }
    let mut m = tracer(&[
        "leaks",
        "--pid",
        &pid_s,
        "--duration",
        "2",
        "--format",
        "json",
    ]);
    let out = m.stdout();
    let err = m.stderr();
    let run = Finished::collect(&mut m, &out, &err, 120);
    assert_eq!(run.code, Some(2), "{run}");
    let said: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(said.len(), 1, "one line\n{run}");
    assert!(
        said[0].contains(&strace.pid().to_string()),
        "the line names the tracer holding it\n{run}"
    );
    assert!(run.json.iter().all(|v| v["type"] != "leaks"), "{run}");
    // Untouched: running, still traced by strace only, answering.
    assert!(t.running(), "the target died");
    for (tid, state) in task_states(pid) {
        assert_eq!(tracer_pid(tid), strace.pid(), "thread {tid} ({state})");
    }
    send(&mut stdin, "tick");
    lines.wait_for("tick ", 30);
    drop(strace);
    drop(stdin);
    assert!(t.wait(30).success());

    // A pid that no longer exists.
    let mut gone = Command::new("true").spawn().expect("true");
    let gone_pid = gone.id().to_string();
    gone.wait().expect("wait true");
    let mut m = tracer(&["leaks", "--pid", &gone_pid, "--format", "json"]);
    let out = m.stdout();
    let err = m.stderr();
    let run = Finished::collect(&mut m, &out, &err, 60);
    assert_eq!(run.code, Some(2), "{run}");
    let said: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(said.len(), 1, "one line\n{run}");
    assert!(said[0].contains(&gone_pid), "{run}");
}
