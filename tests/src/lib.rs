//! Harness for muppy's end-to-end tests: the workloads and their ledgers, running
//! `muppy-trace`, and reading its JSON Lines; children killed when dropped ([`Proc`],
//! [`Tracing`]), their lines read with bounded waits ([`Lines`]), and what /proc tells of a
//! process's threads.
//!
//! Tests need root to load eBPF. Without it they skip with a message, unless
//! `MUPPY_REQUIRE_EBPF=1` (as in CI), where they fail instead.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// A built workload.
pub fn workload(name: &str) -> PathBuf {
    Path::new(env!("MUPPY_WORKLOADS")).join(name)
}

/// The muppy-trace binary under test: `$MUPPY_TRACE_BIN`, else the workspace's release build.
pub fn muppy_trace() -> PathBuf {
    let path = std::env::var_os("MUPPY_TRACE_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/muppy-trace"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} does not exist: run the tests with `cargo xtask test`, which builds it first",
        path.display()
    );
    path
}

/// Whether eBPF tests can run here. Prints why a test is skipped; panics instead where
/// `MUPPY_REQUIRE_EBPF=1`.
pub fn ebpf_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("MUPPY_REQUIRE_EBPF").as_deref() != Ok("1"),
        "{test}: MUPPY_REQUIRE_EBPF=1 but not running as root, so the probes cannot load"
    );
    eprintln!("skipping {test}: needs root to load eBPF probes");
    false
}

/// What one ledger comment says must be live at one site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The site name muppy must print: `function (file.c:line)`.
    pub site: String,
    /// The function, for rows that must be absent.
    pub function: String,
    /// Live blocks.
    pub objects: u64,
    /// Live bytes.
    pub bytes: u64,
}

/// A fresh scratch directory for one test, under the system's temporary directory.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("muppy-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A workload's C or C++ source (`name` may be a path under `workloads/`, as `lib/plugin`):
/// its file name, as debug information names it, and its text.
fn source(name: &str) -> (String, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
    let path = ["c", "cc"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join(format!("{name}.c")));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = path
        .file_name()
        .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
    (file, text)
}

/// The two call paths of `paths.c` (also built without frame pointers, as `nofp_paths`), from
/// its markers: each stack from the site to main, its objects and bytes, largest first as the
/// rows are.
pub fn paths_stacks() -> Vec<(Vec<String>, u64, u64)> {
    let site = ledger("paths")[0].site.clone();
    let f = |func: &str, marker: &str| marked_frame("paths", func, marker);
    let path = |p: &str| {
        vec![
            site.clone(),
            f(&format!("{p}3"), &format!("{p}3")),
            f(&format!("{p}2"), &format!("{p}2")),
            f(&format!("{p}1"), &format!("{p}1")),
            f("main", &format!("main_{p}")),
        ]
    };
    vec![(path("a"), 300, 300 * 48), (path("b"), 200, 200 * 64)]
}

/// Reads the `ledger: site=F objects=N bytes=B` comments of a workload's source.
pub fn ledger(name: &str) -> Vec<Expected> {
    let (file, src) = source(name);
    src.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let l = line.split("ledger:").nth(1)?;
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .map(str::to_string)
            };
            let function = field("site")?;
            Some(Expected {
                site: format!("{function} ({file}:{})", i + 1),
                function,
                objects: field("objects")?.parse().ok()?,
                bytes: field("bytes")?.parse().ok()?,
            })
        })
        .collect()
}

/// The functions a workload's ledger names, each once.
pub fn ledger_functions(name: &str) -> Vec<String> {
    let mut f: Vec<String> = ledger(name).into_iter().map(|e| e.function).collect();
    f.sort();
    f.dedup();
    f
}

/// The rows of `summary` at the sites of workload `name`'s ledger, to compare with its
/// [`expected_rows`] (rows of other sites, such as an allocator's start-up blocks, are real
/// but not the ledger's).
pub fn ledger_rows(summary: &Value, name: &str) -> BTreeMap<String, (u64, u64)> {
    let f = ledger_functions(name);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    rows_in(summary, &f)
}

/// The frame name muppy must print for the line of workload `name` marked
/// `/* frame: MARKER */`: `function (file.c:line)`.
pub fn marked_frame(name: &str, function: &str, marker: &str) -> String {
    let (file, src) = source(name);
    let tag = format!("/* frame: {marker} */");
    let line = src
        .lines()
        .position(|l| l.contains(&tag))
        .unwrap_or_else(|| panic!("{file} has no {tag}"));
    format!("{function} ({file}:{})", line + 1)
}

/// The rows a ledger says must be present: site → (objects, bytes).
pub fn expected_rows(ledger: &[Expected]) -> BTreeMap<String, (u64, u64)> {
    let mut m = BTreeMap::new();
    for e in ledger.iter().filter(|e| e.objects > 0) {
        let slot: &mut (u64, u64) = m.entry(e.site.clone()).or_default();
        slot.0 += e.objects;
        slot.1 += e.bytes;
    }
    m
}

/// A finished muppy-trace run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Run {
    /// A finished process's exit code and output.
    pub fn from_output(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// The JSON lines of stdout.
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}\n{self}"))
            })
            .collect()
    }

    /// The last `{"type":"leaks"}` line.
    pub fn leaks(&self) -> Value {
        self.json()
            .into_iter()
            .rev()
            .find(|v| v["type"] == "leaks")
            .unwrap_or_else(|| panic!("no leaks line\n{self}"))
    }

    /// The final summary line.
    pub fn summary(&self) -> Value {
        let last = self
            .json()
            .pop()
            .unwrap_or_else(|| panic!("no output\n{self}"));
        assert_eq!(
            last["type"], "summary",
            "last line is not the summary\n{self}"
        );
        last
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code: {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs muppy-trace to completion with `args`, stdin from `input`.
pub fn trace(args: &[&str], input: &str) -> Run {
    let mut child = spawn_trace(args);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    Run::from_output(child.wait_with_output().expect("wait muppy-trace"))
}

/// A summary's rows: site → (objects, bytes).
pub fn rows(summary: &Value) -> BTreeMap<String, (u64, u64)> {
    summary["rows"]
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
        .collect()
}

/// The rows of `summary` whose site is in one of `functions`, owned, to compare with
/// [`expected_rows`].
pub fn rows_in(summary: &Value, functions: &[&str]) -> BTreeMap<String, (u64, u64)> {
    rows_of(&rows(summary), functions)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Rows whose site is in one of `functions` (matched as `function (` or `function+`).
pub fn rows_of<'a>(
    rows: &'a BTreeMap<String, (u64, u64)>,
    functions: &[&str],
) -> BTreeMap<&'a str, (u64, u64)> {
    rows.iter()
        .filter(|(site, _)| {
            functions
                .iter()
                .any(|f| site.starts_with(&format!("{f} (")) || site.starts_with(&format!("{f}+")))
        })
        .map(|(s, v)| (s.as_str(), *v))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Children: killed when dropped, their lines read with bounded waits.

/// A child process, killed (and reaped) when dropped, so that no path of a test, a failed
/// assertion's included, leaves one running. Every wait on it is bounded.
pub struct Proc {
    child: Child,
    /// What it is, for messages.
    what: String,
}

impl Proc {
    /// Spawns `cmd`; `what` names it in messages.
    pub fn spawn(cmd: &mut Command, what: &str) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        Proc {
            child,
            what: what.to_string(),
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stdout, which must be piped, read on a thread.
    pub fn stdout(&mut self) -> Lines {
        Lines::new(self.child.stdout.take().expect("stdout piped"))
    }

    /// Its stderr, which must be piped, read on a thread.
    pub fn stderr(&mut self) -> Lines {
        Lines::new(self.child.stderr.take().expect("stderr piped"))
    }

    /// Its stdin, which must be piped; dropping it closes the pipe.
    pub fn stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin piped")
    }

    /// Waits for it to end, at most `secs`; None if it had not by then (it is killed).
    pub fn end_within(&mut self, secs: u64) -> Option<ExitStatus> {
        let mut status = None;
        if !poll(secs, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        }) {
            self.kill();
        }
        status
    }

    /// Waits for it to end, at most `secs`; kills it and panics after that.
    pub fn wait(&mut self, secs: u64) -> ExitStatus {
        self.end_within(secs).unwrap_or_else(|| {
            panic!(
                "{} (pid {}) still running after {secs} s",
                self.what,
                self.pid()
            )
        })
    }

    /// Whether it still runs (not exited, not a zombie).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills and reaps it (a workload that idles forever ends so).
    pub fn kill(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `done` every 10 ms until it holds, at most `secs`; whether it did.
pub fn poll(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Workload `name` with `args`, started: stdin piped for its commands, stdout for its lines
/// ([`Proc::stdin`], [`Proc::stdout`]), stderr the test's.
pub fn start_workload(name: &str, args: &[&str]) -> Proc {
    Proc::spawn(
        Command::new(workload(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
        name,
    )
}

/// Lines a child writes to a pipe, read on a thread; every wait for one is bounded.
pub struct Lines(mpsc::Receiver<String>);

impl Lines {
    /// Starts reading `pipe` line by line on a thread.
    pub fn new(pipe: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The next line, or None if none comes within `secs` or the pipe closed.
    pub fn next(&self, secs: u64) -> Option<String> {
        self.0.recv_timeout(Duration::from_secs(secs)).ok()
    }

    /// The lines up to and including the first containing `needle`. Panics if none comes
    /// within `secs` (a bound on a hang, not a timing check) or the pipe closes first.
    pub fn wait_for(&self, needle: &str, secs: u64) -> Vec<String> {
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
    pub fn rest(&self, secs: u64) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        while let Ok(l) = self
            .0
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            out.push(l);
        }
        out
    }
}

/// Lines as a pipe carried them, each ended by a newline.
fn text(lines: Vec<String>) -> String {
    lines.into_iter().map(|l| l + "\n").collect()
}

/// The muppy-trace command with `args`, its stdio piped.
fn trace_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(muppy_trace());
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Spawns muppy-trace with piped stdio.
pub fn spawn_trace(args: &[&str]) -> Child {
    trace_command(args).spawn().expect("spawn muppy-trace")
}

/// A running muppy-trace, stdin closed, its output read on threads; killed when dropped.
pub struct Tracing {
    proc: Proc,
    /// Its stdout.
    pub out: Lines,
    err: Lines,
    /// Its stderr lines read so far: a finished run's stderr starts with them.
    seen: Vec<String>,
}

impl Tracing {
    /// Spawns `muppy-trace ARGS`.
    pub fn spawn(args: &[&str]) -> Self {
        let mut proc = Proc::spawn(
            trace_command(args).stdin(Stdio::null()),
            &format!("muppy-trace {}", args.join(" ")),
        );
        Tracing {
            out: proc.stdout(),
            err: proc.stderr(),
            proc,
            seen: Vec::new(),
        }
    }

    /// Spawns `muppy-trace ARGS` and waits (at most two minutes) until its probes are in place:
    /// its `muppy-trace: tracing` line.
    pub fn start(args: &[&str]) -> Self {
        let mut t = Tracing::spawn(args);
        t.stderr_until("muppy-trace: tracing", 120);
        t
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Its stderr (a launched command's too) up to and including the first line containing
    /// `needle`, read within `secs`.
    pub fn stderr_until(&mut self, needle: &str, secs: u64) -> Vec<String> {
        let lines = self.err.wait_for(needle, secs);
        self.seen.extend(lines.iter().cloned());
        lines
    }

    /// Ctrl-C, then as [`Tracing::finish`].
    pub fn interrupt(self, secs: u64) -> Run {
        signal(self.pid(), libc::SIGINT);
        self.finish(secs)
    }

    /// Waits (at most `secs`) for it to end by itself; everything it wrote. Panics with what it
    /// wrote if it is still running then.
    pub fn finish(mut self, secs: u64) -> Run {
        let status = self.proc.end_within(secs);
        let mut stderr = std::mem::take(&mut self.seen);
        stderr.extend(self.err.rest(10));
        let run = Run {
            code: status.and_then(|s| s.code()),
            stdout: text(self.out.rest(10)),
            stderr: text(stderr),
        };
        assert!(
            status.is_some(),
            "{} still running after {secs} s\n{run}",
            self.proc.what
        );
        run
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to workloads, and what /proc tells of them.

/// Sends signal `sig` to `pid`, which must exist.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory preconditions; the tests signal only what they started.
    let r = unsafe { libc::kill(i32::try_from(pid).expect("pid"), sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Writes `line` and a newline to a child's stdin, flushed.
pub fn send(stdin: &mut ChildStdin, line: &str) {
    stdin
        .write_all(format!("{line}\n").as_bytes())
        .and_then(|()| stdin.flush())
        .unwrap_or_else(|e| panic!("writing {line:?} to the workload: {e}"));
}

/// `VALUE` of the word `key=VALUE` in a workload's protocol line; panics if it has none.
pub fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key}= missing in {line:?}"))
        .to_string()
}

/// The number of the word `key=VALUE`: hexadecimal after `0x`, else decimal.
pub fn field_u64(line: &str, key: &str) -> u64 {
    let v = field(line, key);
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    }
    .unwrap_or_else(|e| panic!("{key}={v} in {line:?}: {e}"))
}

/// The pid of a `ready <pid>` line, the last of `lines` (as [`Lines::wait_for`] returns them).
pub fn ready_pid(lines: &[String]) -> u32 {
    let l = lines.last().expect("ready line");
    l.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad ready line {l:?}"))
}

/// The state letter of a `/proc/.../stat` text ('t': stopped by a tracer, 'T': by a signal).
fn stat_state(stat: &str) -> Option<char> {
    let close = stat.rfind(')')?;
    stat[close + 1..].trim_start().chars().next()
}

/// The state letter of process `pid`, if it still exists.
pub fn state(pid: u32) -> Option<char> {
    stat_state(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Each thread of process `pid`, which must exist, and its state letter. A thread that ends
/// meanwhile is left out.
pub fn task_states(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/task: {e}"));
    for e in dir.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue; // ended meanwhile
        };
        let state = stat_state(&stat).unwrap_or_else(|| panic!("no state in {stat:?}"));
        out.push((tid, state));
    }
    out
}

/// The pid of the tracer of thread `tid` (`TracerPid:` of its status); 0 for none.
pub fn tracer_pid(tid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (up to 30 s) until no muppy-trace is left from an earlier test: one that has exited
/// leaves a child removing its probes for a second or so, and while the kernel removes uprobes
/// it places others slowly. A system-wide session attaching meanwhile counts the calls that
/// every process on the machine had under way for longer (their returns come without entries).
pub fn wait_for_no_tracer() {
    let deadline = Instant::now() + Duration::from_secs(30);
    let tracer_alive = || {
        std::fs::read_dir("/proc").is_ok_and(|d| {
            d.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "muppy-trace")
            })
        })
    };
    while tracer_alive() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
}

/// Traces workload `name` (with `extra` options first) writing `--format FORMAT` into
/// `DIR/live.EXT` and saving a snapshot, then reads the snapshot into `DIR/saved.EXT`: the live
/// file, the saved one and the snapshot. Both runs must succeed and print nothing on stdout.
pub fn live_and_saved(
    dir: &Path,
    name: &str,
    format: &str,
    ext: &str,
    extra: &[&str],
) -> (PathBuf, PathBuf, PathBuf) {
    let (live, saved) = (
        dir.join(format!("live.{ext}")),
        dir.join(format!("saved.{ext}")),
    );
    let snap = dir.join("saved.muppy");
    let bin = workload(name);
    let mut args = extra.to_vec();
    args.extend([
        "--format",
        format,
        "-o",
        live.to_str().unwrap(),
        "--save",
        snap.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
    ]);
    let run = trace(&args, "");
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.is_empty(), "the report goes to the file\n{run}");
    let run = trace(
        &[
            "summary",
            snap.to_str().unwrap(),
            "--format",
            format,
            "-o",
            saved.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    (live, saved, snap)
}

/// Runs `go tool pprof ARGS SOURCE` (a profile file or a URL) with Go's caches in `dir`; its
/// stdout. Panics unless it succeeds.
pub fn go_pprof(dir: &Path, args: &[&str], source: &std::ffi::OsStr) -> String {
    let go = Path::new("/usr/bin/go");
    assert!(
        go.exists(),
        "/usr/bin/go is missing: `cargo xtask setup` installs golang-go, whose `go tool pprof` \
         reads the profiles the tests check"
    );
    let home = dir.join("go-home");
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new(go)
        .args(["tool", "pprof"])
        .args(args)
        .arg(source)
        .env("HOME", &home)
        .env("GOPATH", home.join("gopath"))
        .env("GOCACHE", home.join("cache"))
        .env("PPROF_TMPDIR", &home)
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} {} failed\n--- stdout\n{stdout}--- stderr\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
