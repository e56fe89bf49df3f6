//! Harness for muppy's end-to-end tests: the workloads and their ledgers, running
//! `muppy-trace`, and reading its JSON Lines.
//!
//! Tests need root to load eBPF. Without it they skip with a message, unless
//! `MUPPY_REQUIRE_EBPF=1` (as in CI), where they fail instead.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
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
    let mut child = Command::new(muppy_trace())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn muppy-trace");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, input.as_bytes()).expect("write stdin");
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

/// Lines a child writes to a pipe, readable with a timeout.
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

    /// Waits for a line containing `needle` and returns it with the lines read before it.
    /// Panics after a generous minute: a hang, not a timing check.
    pub fn wait_for(&self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.0.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    seen.push(l);
                    if hit {
                        return seen;
                    }
                }
                Err(e) => panic!("no line containing {needle:?} ({e}); got: {seen:#?}"),
            }
        }
    }

    /// Every line until the pipe closes.
    pub fn rest(&self) -> Vec<String> {
        self.0.iter().collect()
    }
}

/// Spawns muppy-trace with piped stdio.
pub fn spawn_trace(args: &[&str]) -> Child {
    Command::new(muppy_trace())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn muppy-trace")
}

/// Waits (up to 30 s) until no muppy-trace is left from an earlier test: one that has exited
/// leaves a child removing its probes for a second or so, and while the kernel removes uprobes
/// it places others slowly. A system-wide session attaching meanwhile counts the calls that
/// every process on the machine had under way for longer (their returns come without entries).
pub fn wait_for_no_tracer() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let tracer_alive = || {
        std::fs::read_dir("/proc").is_ok_and(|d| {
            d.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "muppy-trace")
            })
        })
    };
    while tracer_alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
