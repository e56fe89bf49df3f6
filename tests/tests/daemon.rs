//! `muppy-trace daemon` end to end: the real daemon on a socket of each test's own, its API
//! asked through `muppy-trace query`, raw requests, Prometheus' promtool and Go's pprof, with
//! phases.c's exact figures; who may connect; bad requests; the log's final record at SIGTERM;
//! and a two-minute soak (`daemon_soak_two_minutes`) of short processes under `--all`.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{Shutdown, TcpStream},
    os::unix::{
        fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        net::UnixStream,
    },
    path::{Path, PathBuf},
    process::{ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use muppy_tests::{
    Lines, Proc, Run, Tracing, ebpf_available, expected_rows, ledger, muppy_trace, poll, rows,
    rows_in, scratch, send, signal, workload,
};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// The daemon, its client, raw requests.

/// A daemon started by a test, on a socket under its scratch directory; killed if dropped.
struct Daemon {
    t: Tracing,
    socket: PathBuf,
    /// `--listen`'s address, as the daemon printed it.
    tcp: Option<String>,
}

impl Daemon {
    /// `muppy-trace daemon --socket DIR/run/muppy.sock ARGS`, once its probes are attached.
    fn start(dir: &Path, args: &[&str]) -> Self {
        let socket = dir.join("run").join("muppy.sock");
        let mut all = vec!["daemon", "--socket", socket.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut t = Tracing::spawn(&all);
        let lines = t.stderr_until("muppy-trace: tracing", 120);
        let serving = lines
            .iter()
            .find(|l| l.contains("serving on"))
            .unwrap_or_else(|| panic!("no `serving on` line: {lines:#?}"));
        assert!(
            serving.starts_with(&format!("muppy-trace: serving on {}", socket.display())),
            "{serving}"
        );
        let tcp = serving
            .split_once(" and http://")
            .map(|(_, a)| a.trim_end_matches("/metrics").to_string());
        let d = Daemon { t, socket, tcp };
        // Ready for queries once it has copied the tables a first time (it ticks every second).
        let mut last = Value::Null;
        let ticked = poll(10, || {
            let a = d.get("/processes?format=json");
            assert_eq!(a.status, 200, "{a:?}");
            last = serde_json::from_str(a.text().lines().last().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{a:?}: {e}"));
            last["ticks"].as_u64().unwrap_or(0) > 0
        });
        assert!(ticked, "no tick within 10 s: {last}");
        d
    }

    fn pid(&self) -> u32 {
        self.t.pid()
    }

    /// Whether it still runs.
    fn running(&self) -> bool {
        muppy_tests::state(self.pid()).is_some_and(|s| s != 'Z')
    }

    /// `muppy-trace query WHAT --socket S ARGS`.
    fn query(&self, what: &str, args: &[&str]) -> Run {
        let mut all = vec!["query", what, "--socket", self.socket.to_str().unwrap()];
        all.extend_from_slice(args);
        muppy_tests::trace(&all, "")
    }

    /// As [`Daemon::query`], which must succeed: its JSON lines.
    fn json(&self, what: &str, args: &[&str]) -> Vec<Value> {
        let r = self.query(what, args);
        assert_eq!(r.code, Some(0), "query {what} {args:?}\n{r}");
        r.json()
    }

    /// A raw request on the socket.
    fn raw(&self, request: &[u8]) -> Answer {
        exchange(UnixStream::connect(&self.socket).expect("connect"), request)
    }

    /// `GET path` on the socket.
    fn get(&self, path: &str) -> Answer {
        self.raw(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
    }

    /// SIGTERM, then everything it wrote; it must end within `secs`.
    fn stop(self, secs: u64) -> Run {
        signal(self.pid(), libc::SIGTERM);
        self.t.finish(secs)
    }
}

/// A response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// An error's body: one line, ended by its newline.
    fn one_line(&self) -> String {
        let t = self.text();
        assert!(
            t.ends_with('\n') && t.matches('\n').count() == 1 && t.len() > 1,
            "not one line: {self:?}"
        );
        t
    }
}

/// Writes `request` (as far as the server reads it), closes the writing half, and reads the
/// whole answer, which must be HTTP with a Content-Length equal to its body's.
fn exchange<S: std::io::Read + std::io::Write + Shutdownable>(mut s: S, request: &[u8]) -> Answer {
    s.timeouts();
    // The server may answer and close before reading all of a too-large head.
    let _ = s.write_all(request);
    s.close_write();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let body = all[end + 4..].to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    assert_eq!(length, body.len(), "{head}");
    Answer { status, head, body }
}

/// Header `name`'s value.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The streams [`exchange`] takes.
trait Shutdownable {
    fn timeouts(&self);
    fn close_write(&self);
}

impl Shutdownable for UnixStream {
    fn timeouts(&self) {
        self.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        self.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
    }
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Shutdownable for TcpStream {
    fn timeouts(&self) {
        self.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        self.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
    }
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// `GET path` on the daemon's `--listen` address, as a scraper asks.
fn tcp_get(addr: &str, path: &str) -> Answer {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    exchange(
        s,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// phases.c: 10 x 100 B at phase_grow; then 4 of them freed and 3 x 2048 B at phase_more.

/// phases.c's site of `function`: `function (phases.c:LINE)`, LINE that of its malloc.
fn phase_site(function: &str) -> String {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/phases.c"))
            .unwrap();
    let lines: Vec<&str> = src.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains(&format!("void {function}(void)")))
        .unwrap();
    let at = (start..lines.len())
        .find(|&i| lines[i].contains("malloc("))
        .unwrap();
    format!("{function} (phases.c:{})", at + 1)
}

fn after_phase1() -> BTreeMap<String, (u64, u64)> {
    BTreeMap::from([(phase_site("phase_grow"), (10, 1000))])
}

fn after_phase2() -> BTreeMap<String, (u64, u64)> {
    BTreeMap::from([
        (phase_site("phase_grow"), (6, 600)),
        (phase_site("phase_more"), (3, 6144)),
    ])
}

/// phases.c, running: its pid, its stdin, its stderr's lines.
struct Phases {
    proc: Proc,
    stdin: ChildStdin,
    err: Lines,
}

impl Phases {
    fn start() -> Self {
        let mut proc = Proc::spawn(
            Command::new(workload("phases"))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
            "phases",
        );
        Phases {
            stdin: proc.stdin(),
            err: proc.stderr(),
            proc,
        }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Runs phase `n` and waits for it to be done.
    fn phase(&mut self, n: u32) {
        send(&mut self.stdin, &n.to_string());
        self.err.wait_for(&format!("phase{n} done"), 30);
    }
}

/// The rows of the `summary` line the daemon answers for `pid`.
fn daemon_rows(d: &Daemon, pid: u32) -> BTreeMap<String, (u64, u64)> {
    let p = pid.to_string();
    let lines = d.json("summary", &["--pid", &p, "--format", "json"]);
    let s = lines
        .iter()
        .find(|l| l["type"] == "summary")
        .unwrap_or_else(|| panic!("no summary line: {lines:?}"));
    assert_eq!(s["pid"], pid, "{s}");
    rows(s)
}

/// Waits (at most 5 s: the daemon ticks every second) until the daemon's summary of `pid` has
/// exactly `want`; panics with the last rows seen.
fn until_rows(d: &Daemon, pid: u32, want: &BTreeMap<String, (u64, u64)>) {
    let mut last = BTreeMap::new();
    let ok = poll(5, || {
        last = daemon_rows(d, pid);
        &last == want
    });
    assert!(ok, "after 5 s the daemon shows {last:?}, want {want:?}");
}

/// phases.c traced by its own daemon (`ARGS` added), both phases run and seen by the daemon.
fn phased(dir: &Path, args: &[&str]) -> (Phases, Daemon) {
    let mut ph = Phases::start();
    let pid = ph.pid().to_string();
    let mut all = vec!["--pid", pid.as_str()];
    all.extend_from_slice(args);
    let d = Daemon::start(dir, &all);
    ph.phase(1);
    until_rows(&d, ph.pid(), &after_phase1());
    ph.phase(2);
    until_rows(&d, ph.pid(), &after_phase2());
    (ph, d)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

// ---------------------------------------------------------------------------------------------
// 1. Start and stop.

#[test]
fn daemon_serves_on_a_private_socket_and_stops_on_sigterm() {
    if !ebpf_available("daemon_serves_on_a_private_socket_and_stops_on_sigterm") {
        return;
    }
    let dir = scratch("daemon-start-stop");
    let mut ph = Phases::start();
    let pid = ph.pid().to_string();
    let d = Daemon::start(&dir, &["--pid", &pid]);
    let sock = d.socket.clone();
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket(), "{meta:?}");
    assert_eq!((meta.uid(), mode(&sock)), (0, 0o600));
    assert_eq!(mode(sock.parent().unwrap()), 0o700);
    let index = d.get("/");
    assert_eq!(index.status, 200, "{index:?}");
    assert!(
        index.text().starts_with("muppy daemon endpoints"),
        "{index:?}"
    );
    // A second daemon on the same socket is refused, and leaves it to the first.
    let second = muppy_tests::trace(
        &["daemon", "--socket", sock.to_str().unwrap(), "--pid", &pid],
        "",
    );
    assert_eq!(second.code, Some(2), "{second}");
    assert!(
        second.stderr.contains("another daemon is serving on it"),
        "{second}"
    );
    assert_eq!(d.get("/").status, 200);

    let t0 = Instant::now();
    let run = d.stop(5);
    let took = t0.elapsed();
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stderr.contains("muppy-trace: daemon stopped"), "{run}");
    assert!(!sock.exists(), "the socket is removed at the stop");
    eprintln!("daemon stopped {took:?} after SIGTERM");
    // The target was left running, as found.
    assert!(ph.proc.running());
    ph.phase(1);
    ph.phase(2);
    send(&mut ph.stdin, "3");
    assert!(ph.proc.wait(10).success());
    muppy_tests::wait_for_no_tracer();
}

// ---------------------------------------------------------------------------------------------
// 2. The ledger through the socket: summary, snapshot, diff, processes, snapshot file, leaks.

#[test]
fn daemon_answers_the_ledger_exactly() {
    if !ebpf_available("daemon_answers_the_ledger_exactly") {
        return;
    }
    let dir = scratch("daemon-ledger");
    let mut ph = Phases::start();
    let pid = ph.pid();
    let p = pid.to_string();
    let d = Daemon::start(&dir, &["--pid", &p]);
    ph.phase(1);
    until_rows(&d, pid, &after_phase1());
    let snap = d.json("snapshot", &["--pid", &p, "--name", "p1"]);
    assert_eq!(snap.len(), 1, "{snap:?}");
    assert_eq!(
        (
            &snap[0]["type"],
            &snap[0]["pid"],
            &snap[0]["name"],
            &snap[0]["blocks"]
        ),
        (
            &Value::from("snapshot"),
            &Value::from(pid),
            &Value::from("p1"),
            &Value::from(10)
        ),
        "{snap:?}"
    );
    ph.phase(2);
    until_rows(&d, pid, &after_phase2());

    // The diff since p1: 4 blocks of phase_grow freed, 3 of phase_more allocated.
    let diff = d.json("diff", &["--pid", &p, "--since", "p1", "--format", "json"]);
    let dl = diff
        .iter()
        .find(|l| l["type"] == "diff")
        .unwrap_or_else(|| panic!("no diff line: {diff:?}"));
    let got: BTreeMap<String, (i64, i64)> = dl["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["site"].as_str().unwrap().to_string(),
                (r["objects"].as_i64().unwrap(), r["bytes"].as_i64().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        got,
        BTreeMap::from([
            (phase_site("phase_grow"), (-4, -400)),
            (phase_site("phase_more"), (3, 6144)),
        ]),
        "{dl}"
    );
    // A diff needs a snapshot to compare with.
    let r = d.query("diff", &["--pid", &p, "--format", "json"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("--since NAME"), "{r}");

    // processes: the one live process, its figures, and the closing line.
    let procs = d.json("processes", &["--format", "json"]);
    assert_eq!(procs.len(), 2, "{procs:?}");
    let pl = &procs[0];
    assert_eq!(
        (
            &pl["type"],
            &pl["pid"],
            &pl["comm"],
            &pl["live"],
            &pl["objects"],
            &pl["bytes"]
        ),
        (
            &Value::from("process"),
            &Value::from(pid),
            &Value::from("phases"),
            &Value::from(true),
            &Value::from(9),
            &Value::from(6744)
        ),
        "{pl}"
    );
    let closing = &procs[1];
    assert_eq!(closing["type"], "processes", "{closing}");
    assert_eq!(
        (
            &closing["live"],
            &closing["ended_kept"],
            &closing["lost_events"]
        ),
        (&Value::from(1), &Value::from(0), &Value::from(0)),
        "{closing}"
    );

    // The current heap as a snapshot file, read by `muppy-trace summary`; and p1's.
    for (name, want) in [(None, after_phase2()), (Some("p1"), after_phase1())] {
        let file = dir.join(format!("{}.muppy", name.unwrap_or("now")));
        let mut args = vec!["--pid", p.as_str(), "-o", file.to_str().unwrap()];
        if let Some(n) = name {
            args.extend(["--name", n]);
        }
        let r = d.query("snapshot", &args);
        assert_eq!(r.code, Some(0), "{r}");
        assert!(r.stdout.is_empty(), "{r}");
        let s = muppy_tests::trace(&["summary", file.to_str().unwrap(), "--format", "json"], "");
        assert_eq!(s.code, Some(0), "{s}");
        assert_eq!(rows(&s.summary()), want, "{name:?}\n{s}");
    }

    // A leak check of the --pid target: every block is still reachable (the globals hold them).
    let leaks = d.json("leaks", &["--pid", &p, "--format", "json"]);
    let l = leaks
        .iter()
        .find(|l| l["type"] == "leaks")
        .unwrap_or_else(|| panic!("no leaks line: {leaks:?}"));
    let t = &l["totals"];
    let total = |k: &str| (t[k]["objects"].as_u64(), t[k]["bytes"].as_u64());
    assert_eq!(total("reachable"), (Some(9), Some(6744)), "{l}");
    for k in ["definitely_lost", "indirectly_lost", "possibly_lost"] {
        assert_eq!(total(k), (Some(0), Some(0)), "{k}: {l}");
    }
    assert_eq!(l["pid"], pid, "{l}");
    // The target runs on after the check.
    assert!(ph.proc.running());
    assert_eq!(daemon_rows(&d, pid), after_phase2());

    let run = d.stop(10);
    assert_eq!(run.code, Some(0), "{run}");
    send(&mut ph.stdin, "3");
    assert!(ph.proc.wait(10).success());
    muppy_tests::wait_for_no_tracer();
}

/// Several `--pid`: each gets its table, exact, and can be checked; a process not named is
/// left out (in the kernel: it has no table, and nothing of it reaches the daemon).
#[test]
fn a_daemon_traces_the_pids_it_is_given() {
    if !ebpf_available("a_daemon_traces_the_pids_it_is_given") {
        return;
    }
    muppy_tests::wait_for_no_tracer();
    let dir = scratch("daemon-pids");
    let mut named = [Phases::start(), Phases::start()];
    let mut other = Phases::start();
    let pids = format!("{},{}", named[0].pid(), named[1].pid());
    let d = Daemon::start(&dir, &["--pid", &pids]);
    for ph in &mut named {
        ph.phase(1);
        // Its table is made at its first allocation, and the daemon sees it at its next tick.
        let summary = format!("/summary?pid={}", ph.pid());
        assert!(poll(5, || d.get(&summary).status == 200));
        until_rows(&d, ph.pid(), &after_phase1());
    }
    other.phase(1);
    for ph in &mut named {
        ph.phase(2);
        until_rows(&d, ph.pid(), &after_phase2());
    }
    other.phase(2);
    let procs = d.json("processes", &["--format", "json"]);
    let listed: Vec<u64> = procs
        .iter()
        .filter(|l| l["type"] == "process")
        .filter_map(|l| l["pid"].as_u64())
        .collect();
    let mut want: Vec<u64> = named.iter().map(|p| u64::from(p.pid())).collect();
    want.sort_unstable();
    let mut got = listed.clone();
    got.sort_unstable();
    assert_eq!(got, want, "{procs:?}");
    assert_eq!(
        d.get(&format!("/summary?pid={}", other.pid())).status,
        404,
        "a pid not given has a table"
    );
    // Every block recorded (no sampling with pids): each can be checked.
    let leaks = d.json(
        "leaks",
        &["--pid", &named[1].pid().to_string(), "--format", "json"],
    );
    let l = leaks.iter().find(|l| l["type"] == "leaks").unwrap();
    assert_eq!(l["totals"]["reachable"]["objects"], 9, "{l}");
    let run = d.stop(10);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(!run.stderr.contains("events were lost"), "{run}");
    for ph in named.iter_mut().chain([&mut other]) {
        send(&mut ph.stdin, "3");
        assert!(ph.proc.wait(10).success());
    }
}

/// System-wide with every block recorded, any traced process can be checked: phases.c's
/// blocks are all still reachable, and the global `more` holds a phase_more block. A sampled
/// daemon says why it cannot check.
#[test]
fn a_system_wide_daemon_checks_any_process_it_traces() {
    if !ebpf_available("a_system_wide_daemon_checks_any_process_it_traces") {
        return;
    }
    muppy_tests::wait_for_no_tracer();
    let dir = scratch("daemon-all-leaks");
    let d = Daemon::start(
        &dir,
        &["--all", "--sample-bytes", "0", "--comm", "^phases$"],
    );
    // Started after the daemon: traced whole.
    let mut ph = Phases::start();
    let (pid, p) = (ph.pid(), ph.pid().to_string());
    ph.phase(1);
    // Its table is made at its first allocation, and the daemon sees it at its next tick.
    assert!(poll(5, || d.get(&format!("/summary?pid={p}")).status == 200));
    until_rows(&d, pid, &after_phase1());
    ph.phase(2);
    until_rows(&d, pid, &after_phase2());
    let leaks = d.json("leaks", &["--pid", &p, "--format", "json"]);
    let l = leaks
        .iter()
        .find(|l| l["type"] == "leaks")
        .unwrap_or_else(|| panic!("no leaks line: {leaks:?}"));
    let t = &l["totals"];
    let total = |k: &str| (t[k]["objects"].as_u64(), t[k]["bytes"].as_u64());
    assert_eq!(total("reachable"), (Some(9), Some(6744)), "{l}");
    for k in ["definitely_lost", "indirectly_lost", "possibly_lost"] {
        assert_eq!(total(k), (Some(0), Some(0)), "{k}: {l}");
    }
    assert_eq!(l["pid"], pid, "{l}");
    // Who holds the first phase_more block: the global `more`.
    let objects = d.json("objects", &["--pid", &p, "--format", "json"]);
    let more = objects
        .iter()
        .find(|o| {
            o["site"]
                .as_str()
                .is_some_and(|s| s.starts_with("phase_more"))
        })
        .unwrap_or_else(|| panic!("no phase_more block: {objects:?}"));
    let addr = more["addr"].as_str().unwrap();
    let refs = d.query("referrers", &["--pid", &p, "--addr", addr]);
    assert_eq!(refs.code, Some(0), "{refs}");
    assert!(refs.stdout.contains("global more"), "{refs}");
    assert!(ph.proc.running());
    let run = d.stop(10);
    assert_eq!(run.code, Some(0), "{run}");
    send(&mut ph.stdin, "3");
    assert!(ph.proc.wait(10).success());

    // Sampled (every block of phases' sizes is sampled at 1 byte, so it has a table): refused,
    // with the way out.
    muppy_tests::wait_for_no_tracer();
    let d = Daemon::start(
        &dir,
        &["--all", "--sample-bytes", "1", "--comm", "^phases$"],
    );
    let mut ph = Phases::start();
    let p = ph.pid().to_string();
    ph.phase(1);
    assert!(poll(5, || d.get(&format!("/summary?pid={p}")).status == 200));
    let r = d.query("leaks", &["--pid", &p]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr.contains("409") && r.stderr.contains("--sample-bytes 0"),
        "{r}"
    );
    d.stop(10);
    drop(ph);
    muppy_tests::wait_for_no_tracer();
}

// ---------------------------------------------------------------------------------------------
// 3. /metrics, as Prometheus reads it.

#[test]
fn metrics_pass_promtool_and_equal_the_ledger() {
    if !ebpf_available("metrics_pass_promtool_and_equal_the_ledger") {
        return;
    }
    let promtool = Path::new("/usr/bin/promtool");
    assert!(
        promtool.exists(),
        "/usr/bin/promtool is missing: `cargo xtask setup` installs prometheus, whose promtool \
         checks the daemon's /metrics"
    );
    let dir = scratch("daemon-metrics");
    let (mut ph, d) = phased(&dir, &["--listen", "127.0.0.1:0"]);
    let pid = ph.pid();
    let addr = d.tcp.clone().expect("--listen's address on stderr");
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
    let m = tcp_get(&addr, "/metrics");
    assert_eq!(m.status, 200, "{m:?}");
    assert_eq!(
        header(&m.head, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        m.head
    );
    let text = m.text();
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {:?}\n{}{}\n--- metrics\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |series: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .to_string()
    };
    let who = format!("pid=\"{pid}\",comm=\"phases\"");
    assert_eq!(value(&format!("muppy_live_bytes{{{who}}}")), "6744");
    assert_eq!(value(&format!("muppy_live_blocks{{{who}}}")), "9");
    for (f, bytes) in [("phase_more", "6144"), ("phase_grow", "600")] {
        assert_eq!(
            value(&format!(
                "muppy_site_live_bytes{{{who},site=\"{}\"}}",
                phase_site(f)
            )),
            bytes
        );
    }
    assert_eq!(value("muppy_processes_traced"), "1");
    assert_eq!(value("muppy_lost_events_total"), "0");
    // The socket's /metrics is the same text (its tracer figures aside).
    let s = d.get("/metrics");
    assert_eq!(s.status, 200);
    assert!(
        s.text()
            .contains(&format!("\nmuppy_live_bytes{{{who}}} 6744\n")),
        "{}",
        s.text()
    );
    // The port serves scrapers only.
    let refused = tcp_get(&addr, &format!("/summary?pid={pid}"));
    assert_eq!(refused.status, 403, "{refused:?}");
    refused.one_line();

    assert_eq!(d.stop(10).code, Some(0));
    send(&mut ph.stdin, "3");
    assert!(ph.proc.wait(10).success());
    muppy_tests::wait_for_no_tracer();
}

// ---------------------------------------------------------------------------------------------
// 4. Go's pprof on /debug/pprof/heap.

/// Runs `go tool pprof ARGS SOURCE`; its stdout. Go's caches go to `dir`.
fn go_pprof(dir: &Path, args: &[&str], source: &str) -> String {
    muppy_tests::go_pprof(dir, args, std::ffi::OsStr::new(source))
}

/// `-top` rows of `index`: function → flat.
fn pprof_top(dir: &Path, index: &str, source: &str) -> BTreeMap<String, u64> {
    let mut args = vec![
        "-top".to_string(),
        "-nodecount=1000".to_string(),
        format!("-sample_index={index}"),
    ];
    if index.ends_with("_space") {
        args.push("-unit=B".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = go_pprof(dir, &args, source);
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // flat flat% sum% cum cum% name...
            if w.len() < 6 || !w[1].ends_with('%') || !w[4].ends_with('%') {
                return None;
            }
            let flat = w[0].trim_end_matches('B').parse().ok()?;
            Some((w[5..].join(" "), flat))
        })
        .filter(|(_, flat)| *flat > 0)
        .collect()
}

#[test]
fn go_pprof_reads_the_heap_profile_over_http() {
    if !ebpf_available("go_pprof_reads_the_heap_profile_over_http") {
        return;
    }
    let dir = scratch("daemon-pprof");
    let (mut ph, d) = phased(&dir, &["--listen", "127.0.0.1:0"]);
    let pid = ph.pid();
    let addr = d.tcp.clone().expect("--listen's address on stderr");
    let url = format!("http://{addr}/debug/pprof/heap?pid={pid}");
    let want = |grow: u64, more: u64| {
        BTreeMap::from([
            ("phase_grow".to_string(), grow),
            ("phase_more".to_string(), more),
        ])
    };
    assert_eq!(
        pprof_top(&dir, "inuse_space", &url),
        want(600, 6144),
        "{url}"
    );
    assert_eq!(pprof_top(&dir, "inuse_objects", &url), want(6, 3), "{url}");
    // Go's allocs profile: what each path allocated since tracing began, the 4 of phase_grow's
    // 10 blocks freed since included; alloc_space is its default type (pprof marks it).
    let allocs = format!("http://{addr}/debug/pprof/allocs?pid={pid}");
    assert_eq!(
        pprof_top(&dir, "alloc_space", &allocs),
        want(1000, 6144),
        "{allocs}"
    );
    assert_eq!(
        pprof_top(&dir, "alloc_objects", &allocs),
        want(10, 3),
        "{allocs}"
    );
    for (source, default) in [(&url, "inuse_space"), (&allocs, "alloc_space")] {
        let raw = go_pprof(&dir, &["-raw"], source);
        assert!(
            raw.contains(&format!(
                "alloc_objects/count alloc_space/bytes{} inuse_objects/count inuse_space/bytes{}",
                if default == "alloc_space" {
                    "[dflt]"
                } else {
                    ""
                },
                if default == "inuse_space" {
                    "[dflt]"
                } else {
                    ""
                },
            )),
            "{source}: {raw}"
        );
    }
    // The same profile through the client, to a file.
    let file = dir.join("heap.pb.gz");
    let r = d.query(
        "pprof",
        &["--pid", &pid.to_string(), "-o", file.to_str().unwrap()],
    );
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(
        pprof_top(&dir, "inuse_space", file.to_str().unwrap()),
        want(600, 6144)
    );
    // An untraced pid is a 404 that pprof reports.
    let other = tcp_get(&addr, "/debug/pprof/heap?pid=1");
    assert_eq!(other.status, 404, "{other:?}");
    other.one_line();

    assert_eq!(d.stop(10).code, Some(0));
    send(&mut ph.stdin, "3");
    assert!(ph.proc.wait(10).success());
    muppy_tests::wait_for_no_tracer();
}

// ---------------------------------------------------------------------------------------------
// 5. Who may connect.

/// `muppy-trace query processes --socket S` as uid:gid `ids`, no supplementary groups.
fn query_as(ids: (u32, u32), socket: &Path) -> Run {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={}", ids.0))
        .arg(format!("--regid={}", ids.1))
        .arg("--clear-groups")
        .arg(muppy_trace())
        .args(["query", "processes", "--format", "json", "--socket"])
        .arg(socket)
        .output()
        .expect("run setpriv");
    Run::from_output(out)
}

#[test]
fn only_root_and_the_group_may_query() {
    if !ebpf_available("only_root_and_the_group_may_query") {
        return;
    }
    let bin = muppy_trace();
    // setpriv runs the client as nobody: it must be able to reach the binary.
    let reachable = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "test",
            "-x",
        ])
        .arg(&bin)
        .status()
        .unwrap();
    assert!(
        reachable.success(),
        "nobody cannot run {}: its directories must be searchable",
        bin.display()
    );
    let dir = scratch("daemon-peers");
    let ph = Phases::start();
    let pid = ph.pid().to_string();
    let d = Daemon::start(&dir, &["--pid", &pid]);
    let nobody = (65534, 65534);
    // The 0700 directory keeps nobody out before the daemon sees it.
    let r = query_as(nobody, &d.socket);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stdout.is_empty(), "{r}");
    let line = r.stderr.trim_end();
    assert!(!line.contains('\n'), "one line: {r}");
    assert!(
        line.starts_with("muppy-trace: ") && line.contains("Permission denied"),
        "{r}"
    );
    // Opened up by hand, the socket still refuses: the daemon checks the peer's uid.
    let sdir = d.socket.parent().unwrap().to_path_buf();
    std::fs::set_permissions(&sdir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = query_as(nobody, &d.socket);
    assert_eq!(r.code, Some(2), "{r}");
    assert_eq!(
        r.stderr,
        "muppy-trace: the daemon answered 403 Forbidden: uid 65534 may not query the daemon: \
         only root (start the daemon with --group G to let a group in)\n",
        "{r}"
    );
    // Root may.
    let procs = d.json("processes", &["--format", "json"]);
    assert_eq!(procs[0]["pid"], ph.pid(), "{procs:?}");
    assert_eq!(d.stop(10).code, Some(0));
    drop(ph);
    muppy_tests::wait_for_no_tracer();

    // --group nogroup: its members in, others still out.
    let dir = scratch("daemon-peers-group");
    let ph = Phases::start();
    let pid = ph.pid().to_string();
    let d = Daemon::start(&dir, &["--pid", &pid, "--group", "nogroup"]);
    let sdir = d.socket.parent().unwrap().to_path_buf();
    let (dm, sm) = (
        std::fs::metadata(&sdir).unwrap(),
        std::fs::metadata(&d.socket).unwrap(),
    );
    assert_eq!((dm.gid(), mode(&sdir)), (65534, 0o750));
    assert_eq!((sm.gid(), mode(&d.socket)), (65534, 0o660));
    let r = query_as(nobody, &d.socket);
    assert_eq!(r.code, Some(0), "{r}");
    let lines = r.json();
    assert_eq!(lines[0]["pid"], ph.pid(), "{r}");
    let r = query_as((65533, 65533), &d.socket);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("Permission denied"), "{r}");
    assert_eq!(d.stop(10).code, Some(0));
    drop(ph);
    muppy_tests::wait_for_no_tracer();
}

// ---------------------------------------------------------------------------------------------
// 6. Bad requests.

/// A small xorshift generator: the same garbage on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

#[test]
fn bad_requests_get_a_4xx_and_the_daemon_lives_on() {
    if !ebpf_available("bad_requests_get_a_4xx_and_the_daemon_lives_on") {
        return;
    }
    let dir = scratch("daemon-bad");
    let mut ph = Phases::start();
    let pid = ph.pid();
    let d = Daemon::start(&dir, &["--pid", &pid.to_string()]);
    ph.phase(1);
    until_rows(&d, pid, &after_phase1());

    let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes();
    let long_site = "a".repeat(2000);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"GET /\r\n\r\n".to_vec(), 400, "request line"),
        (
            b"GET / HTTP/2\r\n\r\n".to_vec(),
            400,
            "HTTP/1.0 and HTTP/1.1",
        ),
        (b"get / HTTP/1.1\r\n\r\n".to_vec(), 400, "not a token"),
        (b"DELETE / HTTP/1.1\r\n\r\n".to_vec(), 405, "DELETE"),
        (get("summary"), 400, "must start with /"),
        (get("/?a=%zz"), 400, "%-escapes"),
        (get("/%ff"), 400, "%-escapes"),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n".to_vec(), 400, "colon"),
        (
            format!("POST /snapshot?pid={pid}&name=x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
                .into_bytes(),
            413,
            "query string",
        ),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            413,
            "query string",
        ),
        (
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(20_000)).into_bytes(),
            431,
            "16384 bytes",
        ),
        (
            format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(65)).into_bytes(),
            431,
            "64 headers",
        ),
        (b"\x00\xff\r\n\r\n".to_vec(), 400, "UTF-8"),
        (b"\r\n\r\n".to_vec(), 400, "request line"),
        (get("/nope"), 404, "no endpoint /nope"),
        (get("/debug/pprof/allocs"), 400, "pid=N"),
        (get(&format!("/diff?pid={pid}")), 400, "since=NAME"),
        (get("/summary"), 400, "pid=N"),
        (get("/summary?pid=abc"), 400, "pid=\"abc\" is not a number"),
        (get("/summary?pid=-1"), 400, "not a number"),
        (get("/summary?pid=1"), 404, "pid 1 is not traced"),
        (
            get(&format!("/summary?pid={pid}&site=(")),
            400,
            "not a regular expression",
        ),
        (
            get(&format!("/summary?pid={pid}&site={long_site}")),
            400,
            "longer than 1024 bytes",
        ),
        (
            get(&format!("/objects?pid={pid}&top=0")),
            400,
            "top=0: from 1",
        ),
        (
            get(&format!("/summary?pid={pid}&format=xml")),
            400,
            "json or table",
        ),
        (
            get(&format!("/summary?pid={pid}&group_by=color")),
            400,
            "site, function",
        ),
        (
            get(&format!("/summary?pid={pid}&older_than=-3")),
            400,
            "0 or more",
        ),
        (
            get(&format!("/summary?pid={pid}&bogus=1")),
            400,
            "does not take parameter \"bogus\"",
        ),
        (get("/?x=1"), 400, "does not take"),
        (
            format!("POST /snapshot?pid={pid}&name=a%2Fb HTTP/1.1\r\n\r\n").into_bytes(),
            400,
            "letters, digits",
        ),
        (
            format!("POST /summary?pid={pid} HTTP/1.1\r\n\r\n").into_bytes(),
            405,
            "POST is for taking a snapshot",
        ),
        (
            get(&format!("/diff?pid={pid}&since=nosuch")),
            404,
            "no snapshot named \"nosuch\"",
        ),
        (get(&format!("/referrers?pid={pid}")), 400, "one of them"),
        (
            get(&format!("/referrers?pid={pid}&addr=0xzz")),
            400,
            "an address",
        ),
        (
            get(&format!("/debug/pprof/heap?pid={pid}&debug=1")),
            400,
            "debug=0",
        ),
    ];
    for (req, status, says) in &cases {
        let a = d.raw(req);
        let shown = String::from_utf8_lossy(&req[..req.len().min(120)]).into_owned();
        assert_eq!(a.status, *status, "{shown:?}: {a:?}");
        let line = a.one_line();
        assert!(
            line.contains(says),
            "{shown:?}: {line:?} should say {says:?}"
        );
    }
    // A client that sends nothing is answered 408 after the head's deadline (5 s).
    let mut idle = UnixStream::connect(&d.socket).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut all = Vec::new();
    let t0 = Instant::now();
    let _ = idle.read_to_end(&mut all);
    let waited = t0.elapsed();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text:?}"
    );
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    // HEAD: the head of the GET's answer, no body.
    let mut head = UnixStream::connect(&d.socket).unwrap();
    head.write_all(b"HEAD /processes HTTP/1.1\r\n\r\n").unwrap();
    let mut all = Vec::new();
    head.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\n"),
        "{text:?}"
    );

    // 2000 requests cut and corrupted at random, or random bytes: each an answer, never a
    // 5xx; an error's body one line.
    let templates = [
        format!(
            "GET /summary?pid={pid}&site=phase_%28grow%7Cmore%29&top=5 HTTP/1.1\r\nHost: x\r\n\r\n"
        ),
        format!("GET /objects?pid={pid}&format=table&min_size=50 HTTP/1.1\r\n\r\n"),
        format!("GET /diff?pid={pid}&since=start HTTP/1.0\r\n\r\n"),
        "GET /processes?format=json HTTP/1.1\r\nAccept: */*\r\n\r\n".to_string(),
        "GET /metrics HTTP/1.1\r\n\r\n".to_string(),
        format!("GET /snapshot?pid={pid} HTTP/1.1\r\n\r\n"),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut by_status: BTreeMap<u16, u32> = BTreeMap::new();
    for i in 0..2000 {
        let req: Vec<u8> = if i % 4 == 0 {
            let n = rng.below(200);
            (0..n).map(|_| rng.next().to_le_bytes()[0]).collect()
        } else {
            let mut b = templates[rng.below(templates.len())].clone().into_bytes();
            for _ in 0..rng.below(5) {
                let at = rng.below(b.len());
                b[at] = rng.next().to_le_bytes()[0];
            }
            if rng.below(3) == 0 {
                b.truncate(rng.below(b.len() + 1));
            }
            b
        };
        let a = d.raw(&req);
        *by_status.entry(a.status).or_default() += 1;
        assert!(
            (200..500).contains(&a.status),
            "{:?}: {a:?}",
            String::from_utf8_lossy(&req)
        );
        if a.status != 200 {
            a.one_line();
        }
    }
    eprintln!("2000 garbled requests: answers by status {by_status:?}");
    assert!(
        by_status.get(&200).copied().unwrap_or(0) > 0,
        "{by_status:?}"
    );
    assert!(
        by_status.get(&400).copied().unwrap_or(0) > 0,
        "{by_status:?}"
    );

    // Alive, and its figures unchanged.
    assert!(d.running());
    let procs = d.get("/processes");
    assert_eq!(procs.status, 200, "{procs:?}");
    assert_eq!(daemon_rows(&d, pid), after_phase1());
    assert_eq!(d.stop(10).code, Some(0));
    drop(ph);
    muppy_tests::wait_for_no_tracer();
}

// ---------------------------------------------------------------------------------------------
// 7. SIGTERM writes the log's final record.

#[test]
fn sigterm_writes_the_final_record_to_the_log() {
    if !ebpf_available("sigterm_writes_the_final_record_to_the_log") {
        return;
    }
    let dir = scratch("daemon-log");
    let log = dir.join("muppy.jsonl");
    let (mut ph, d) = phased(
        &dir,
        &["--log", log.to_str().unwrap(), "--log-every", "3600"],
    );
    let pid = ph.pid();
    // Nothing was due yet: the log is empty until the stop.
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
    assert_eq!(mode(&log), 0o600);
    let run = d.stop(10);
    assert_eq!(run.code, Some(0), "{run}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}\n{text}")))
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    // The forced record (what changed since the start), then the final state.
    assert_eq!(
        kinds,
        ["record", "diff", "process", "summary", "processes", "stop"],
        "{text}"
    );
    assert_eq!(lines[0]["changed"], 1, "{text}");
    let diff = &lines[1];
    assert_eq!(diff["pid"], pid, "{text}");
    let d_rows: BTreeMap<String, (i64, i64)> = diff["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["site"].as_str().unwrap().to_string(),
                (r["objects"].as_i64().unwrap(), r["bytes"].as_i64().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        d_rows,
        BTreeMap::from([
            (phase_site("phase_grow"), (6, 600)),
            (phase_site("phase_more"), (3, 6144)),
        ]),
        "{text}"
    );
    let p = &lines[2];
    assert_eq!(
        (&p["pid"], &p["comm"], &p["objects"], &p["bytes"]),
        (
            &Value::from(pid),
            &Value::from("phases"),
            &Value::from(9),
            &Value::from(6744)
        ),
        "{text}"
    );
    assert_eq!(lines[3]["pid"], pid, "{text}");
    assert_eq!(rows(&lines[3]), after_phase2(), "{text}");
    assert_eq!(lines[4]["count"], 1, "{text}");
    assert_eq!(
        (&lines[4]["total"]["objects"], &lines[4]["total"]["bytes"]),
        (&Value::from(9), &Value::from(6744)),
        "{text}"
    );
    assert_eq!(lines[4]["lost_events"], 0, "{text}");
    assert!(lines[5]["unix_ms"].as_u64().unwrap() > 0, "{text}");
    assert_eq!(mode(&log), 0o600);
    send(&mut ph.stdin, "3");
    assert!(ph.proc.wait(10).success());
    muppy_tests::wait_for_no_tracer();
}

// ---------------------------------------------------------------------------------------------
// 8. SOAK: two minutes of short processes under `daemon --all`. In CI.

/// VmRSS of `pid` in KiB.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// SOAK TEST, two minutes: `daemon --all --comm '^(short|steady)$' --sample-bytes 0` while
/// short.c (≈50 ms each) is started over and over and steady.c allocates and frees steadily.
/// The daemon's resident memory must level off after a 30 s warm-up; every short process that
/// ended has its sites named (none `[unknown]`) and its ledger exact, in the API and the log;
/// steady.c's exit leaves its exact 512 blocks.
#[test]
fn daemon_soak_two_minutes() {
    if !ebpf_available("daemon_soak_two_minutes") {
        return;
    }
    const SOAK: Duration = Duration::from_secs(120);
    const WARM_UP: Duration = Duration::from_secs(30);
    muppy_tests::wait_for_no_tracer();
    let dir = scratch("daemon-soak");
    let log = dir.join("soak.jsonl");
    let d = Daemon::start(
        &dir,
        &[
            "--all",
            "--comm",
            "^(short|steady)$",
            "--sample-bytes",
            "0",
            "--log",
            log.to_str().unwrap(),
            "--log-every",
            "10",
        ],
    );
    let dpid = d.pid();
    let t0 = Instant::now();
    // steady runs most of the soak, and ends before it (its exit line is checked).
    let mut steady = Proc::spawn(
        Command::new(workload("steady"))
            .arg("100")
            .stdin(Stdio::null()),
        "steady",
    );
    let steady_pid = steady.pid();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let starter = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut pids = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let mut p = Proc::spawn(
                    Command::new(workload("short")).stdin(Stdio::null()),
                    "short",
                );
                let pid = p.pid();
                assert!(p.wait(30).success(), "short {pid}");
                pids.push(pid);
                std::thread::sleep(Duration::from_millis(100));
            }
            pids
        })
    };
    // RSS every 10 s, and the API asked meanwhile.
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut next = Duration::ZERO;
    while t0.elapsed() < SOAK {
        if t0.elapsed() >= next {
            samples.push((t0.elapsed().as_secs(), rss_kb(dpid)));
            assert_eq!(d.get("/processes?format=json").status, 200);
            assert_eq!(d.get("/metrics").status, 200);
            next += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let shorts = starter.join().expect("the starter thread");
    assert!(steady.wait(30).success());
    samples.push((t0.elapsed().as_secs(), rss_kb(dpid)));
    // Ended processes are seen within a tick or two.
    std::thread::sleep(Duration::from_secs(3));
    eprintln!(
        "soak: {} short processes; daemon VmRSS (s, KiB): {samples:?}",
        shorts.len()
    );

    // Through the API: the ended processes kept (the last 256), each short one's sites.
    let procs = d.json("processes", &["--format", "json"]);
    let closing = procs.last().unwrap();
    assert_eq!(closing["type"], "processes", "{closing}");
    let ended: Vec<&Value> = procs
        .iter()
        .filter(|l| l["type"] == "process" && l["live"] == false)
        .collect();
    let short_ended: Vec<u32> = ended
        .iter()
        .filter(|l| l["comm"] == "short")
        .map(|l| u32::try_from(l["pid"].as_u64().unwrap()).unwrap())
        .collect();
    let mut short_ledger = ledger("short");
    short_ledger.extend(ledger("lib/plugin"));
    let want_short = expected_rows(&short_ledger);
    let mut api_unnamed = Vec::new();
    let mut api_inexact = Vec::new();
    for pid in &short_ended {
        let lines = d.json("summary", &["--pid", &pid.to_string(), "--format", "json"]);
        let s = lines.iter().find(|l| l["type"] == "summary").unwrap();
        let r = rows(s);
        if r.keys().any(|k| k.starts_with("[unknown]")) {
            api_unnamed.push((*pid, r.clone()));
        }
        if rows_in(s, &["s_main", "s_plugin"]) != want_short {
            api_inexact.push((*pid, r));
        }
    }
    let steady_line = procs
        .iter()
        .find(|l| l["type"] == "process" && l["pid"] == steady_pid)
        .unwrap_or_else(|| panic!("steady {steady_pid} not in /processes"));
    let run = d.stop(15);
    assert_eq!(run.code, Some(0), "{run}");

    // The log: an `exited` line per process that ended.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["type"], "stop");
    let exited: Vec<&Value> = lines.iter().filter(|l| l["type"] == "exited").collect();
    let short_exited: Vec<&&Value> = exited.iter().filter(|l| l["comm"] == "short").collect();
    let log_unnamed: Vec<u64> = short_exited
        .iter()
        .filter(|l| rows(l).keys().any(|k| k.starts_with("[unknown]")))
        .map(|l| l["pid"].as_u64().unwrap())
        .collect();
    let log_inexact: Vec<u64> = short_exited
        .iter()
        .filter(|l| rows_in(l, &["s_main", "s_plugin"]) != want_short)
        .map(|l| l["pid"].as_u64().unwrap())
        .collect();
    let steady_exit = exited
        .iter()
        .find(|l| l["pid"] == steady_pid)
        .unwrap_or_else(|| panic!("no exited line for steady {steady_pid}"));
    let lost = closing["lost_events"].as_u64().unwrap();
    eprintln!(
        "soak: /processes kept {} ended ({} short), ended_total {}; short with [unknown] sites: \
         {} in the API, {} of {} in the log; short with inexact ledger: {} in the API, {} in \
         the log; lost events {lost}",
        ended.len(),
        short_ended.len(),
        closing["ended_total"],
        api_unnamed.len(),
        log_unnamed.len(),
        short_exited.len(),
        api_inexact.len(),
        log_inexact.len(),
    );

    if let Some((pid, r)) = api_unnamed.first() {
        eprintln!("soak: e.g. short {pid}'s rows in the API: {r:?}");
    }
    eprintln!("soak: the daemon's stderr at the stop:\n{}", run.stderr);

    // Every short process started ended and was seen ending (the log has them all; the API
    // keeps the last 256 of every process that ended).
    assert_eq!(short_exited.len(), shorts.len(), "exited lines of short");
    assert_eq!(ended.len(), (shorts.len() + 1).min(256), "{closing}");
    assert_eq!(
        closing["ended_total"].as_u64().unwrap(),
        shorts.len() as u64 + 1,
        "{closing}"
    );
    // steady: its last 512 blocks, 65280 bytes, in the API and the log.
    assert_eq!(
        (&steady_line["objects"], &steady_line["bytes"]),
        (&Value::from(512), &Value::from(65280)),
        "{steady_line}"
    );
    assert_eq!(
        (
            &steady_exit["total"]["objects"],
            &steady_exit["total"]["bytes"]
        ),
        (&Value::from(512), &Value::from(65280)),
        "{steady_exit}"
    );
    // No event lost: the processes the selection refuses send nothing (the probes keep their
    // events in the kernel), and calls under way as the probes were placed are not lost
    // events (they belong before tracing began). The API's count, before the stop, is at most
    // the session's at the stop, which says nothing was lost.
    assert_eq!(lost, 0, "{closing}\n{run}");
    assert!(
        !run.stderr.contains("events were lost"),
        "lost events at the stop\n{run}"
    );
    // Every short process's sites named and every ledger exact.
    assert!(
        api_unnamed.is_empty(),
        "[unknown] sites in the API: {api_unnamed:?}"
    );
    assert!(
        log_unnamed.is_empty(),
        "[unknown] sites in the log: {log_unnamed:?}"
    );
    assert!(
        api_inexact.is_empty(),
        "inexact in the API: {api_inexact:?}"
    );
    assert!(
        log_inexact.is_empty(),
        "inexact in the log: {log_inexact:?}"
    );
    // Resident memory levels off. The 256 ended images kept fill up in the first ~45 s (at
    // about 6 short processes a second), each a few KiB; after that nothing should grow. The
    // bound: growth after the 30 s warm-up under 10% of the RSS then, or 8 MiB if more.
    let warm = samples
        .iter()
        .find(|(s, _)| *s >= WARM_UP.as_secs())
        .unwrap()
        .1;
    let peak = samples.iter().map(|s| s.1).max().unwrap();
    assert!(
        peak.saturating_sub(warm) < (warm / 10).max(8192),
        "VmRSS grew from {warm} KiB at {} s to {peak} KiB: {samples:?}",
        WARM_UP.as_secs()
    );
    muppy_tests::wait_for_no_tracer();
}
