//! The leak check at a launched command's exit (`muppy-trace leaks -- CMD`) is made where the
//! command enters `_exit`, every thread alive, as Valgrind's is: the probes stop the thread
//! there and the ptrace thread holds it for the check (workloads/exit_hold.c).
//!
//! Each test bounds its waits and kills what it started on every path.

use std::{
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use muppy_tests::{Lines, Run, ebpf_available, marked_frame, muppy_trace, workload};
use serde_json::Value;

/// A muppy-trace run, killed (and reaped) when dropped.
struct Tracer(Child);

impl Tracer {
    fn spawn(args: &[&str]) -> Self {
        Tracer(
            Command::new(muppy_trace())
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn muppy-trace"),
        )
    }

    /// Its output, read on threads.
    fn pipes(&mut self) -> (Lines, Lines) {
        (
            Lines::new(self.0.stdout.take().expect("stdout")),
            Lines::new(self.0.stderr.take().expect("stderr")),
        )
    }

    /// Waits at most `secs` for it to end, then for its output (`seen`: stderr lines read
    /// already).
    fn finish(&mut self, (out, err): (Lines, Lines), seen: Vec<String>, secs: u64) -> Run {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(s) = self.0.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "muppy-trace still running after {secs} s\n--- stderr so far\n{}",
                seen.join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = seen;
        stderr.extend(err.rest());
        Run {
            code: status.code(),
            stdout: out.rest().join("\n"),
            stderr: stderr.join("\n"),
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs muppy-trace to its end (at most a minute).
fn trace(args: &[&str]) -> Run {
    let mut t = Tracer::spawn(args);
    let pipes = t.pipes();
    t.finish(pipes, Vec::new(), 60)
}

/// The last `leaks` line of a run.
fn leaks_line(run: &Run) -> Value {
    run.json()
        .into_iter()
        .rev()
        .find(|v| v["type"] == "leaks")
        .unwrap_or_else(|| panic!("no leaks line\n{run}"))
}

/// The kind of the row at `site` in a leaks line, if there is one.
fn kind_at(line: &Value, site: &str) -> Option<String> {
    line["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("rows: {line}"))
        .iter()
        .find(|r| r["site"] == site)
        .map(|r| r["kind"].as_str().expect("kind").to_string())
}

/// The threads the check saw (every one of the command's, held at `_exit`).
fn threads(line: &Value) -> u64 {
    line["threads"]
        .as_u64()
        .unwrap_or_else(|| panic!("threads: {line}"))
}

/// A pointer held only in a register of a second thread keeps its block reachable at the
/// check at exit, as under Valgrind: the check runs before `exit_group` kills that thread.
/// The command's exit code is muppy-trace's.
#[test]
fn a_register_of_another_thread_is_a_root_at_exit() {
    if !ebpf_available("a_register_of_another_thread_is_a_root_at_exit") {
        return;
    }
    let bin = workload("exit_hold");
    let run = trace(&[
        "leaks",
        "--format",
        "json",
        "--",
        bin.to_str().expect("utf-8"),
        "regs",
        "7",
    ]);
    assert_eq!(run.code, Some(7), "the command's exit code\n{run}");
    let line = leaks_line(&run);
    assert_eq!(threads(&line), 2, "checked with both threads alive\n{run}");
    let held = marked_frame("exit_hold", "spinner", "held");
    let lost = marked_frame("exit_hold", "lose", "lost");
    assert_eq!(
        kind_at(&line, &held).as_deref(),
        Some("reachable"),
        "{held}\n{run}"
    );
    assert_eq!(
        kind_at(&line, &lost).as_deref(),
        Some("definitely_lost"),
        "{lost}\n{run}"
    );
}

/// The same where jemalloc serves malloc: the hold is still at libc's `_exit`, which `exit`
/// calls.
#[test]
fn the_hold_is_at_libcs_exit_under_jemalloc() {
    if !ebpf_available("the_hold_is_at_libcs_exit_under_jemalloc") {
        return;
    }
    let bin = workload("exit_hold_jemalloc");
    let run = trace(&[
        "leaks",
        "--format",
        "json",
        "--verbose",
        "--",
        bin.to_str().expect("utf-8"),
        "regs",
        "0",
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stderr.contains("exit_hold: 1 runs"), "{run}");
    let line = leaks_line(&run);
    assert_eq!(threads(&line), 2, "checked with both threads alive\n{run}");
    let held = marked_frame("exit_hold", "spinner", "held");
    assert_eq!(
        kind_at(&line, &held).as_deref(),
        Some("reachable"),
        "{held}\n{run}"
    );
}

/// Without a leak check nothing is held: the exit probe is not even placed, and the command's
/// code passes through.
#[test]
fn without_a_check_no_exit_probe_is_placed() {
    if !ebpf_available("without_a_check_no_exit_probe_is_placed") {
        return;
    }
    let bin = workload("exit_hold");
    let run = trace(&[
        "--verbose",
        "--format",
        "json",
        "--",
        bin.to_str().expect("utf-8"),
        "regs",
        "7",
    ]);
    assert_eq!(run.code, Some(7), "{run}");
    assert!(!run.stderr.contains("exit_hold"), "{run}");
    let run = trace(&["--format", "json", "--", "true"]);
    assert_eq!(run.code, Some(0), "{run}");
    run.summary();
    // With a check it is placed, and runs once.
    let run = trace(&[
        "leaks",
        "--verbose",
        "--format",
        "json",
        "--",
        bin.to_str().expect("utf-8"),
        "regs",
        "7",
    ]);
    assert_eq!(run.code, Some(7), "{run}");
    assert!(run.stderr.contains("exit_hold: 1 runs"), "{run}");
}

/// The state letter of `/proc/PID/stat`.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
}

/// A user's SIGSTOP and SIGCONT act as without muppy on a command checked at exit (only the
/// probes' own SIGSTOP, sent by the kernel, is the hold), and a thread that calls `_exit`
/// directly is held and checked too.
#[test]
fn a_users_sigstop_still_stops_the_command() {
    if !ebpf_available("a_users_sigstop_still_stops_the_command") {
        return;
    }
    let bin = workload("exit_hold");
    let mut t = Tracer::spawn(&[
        "leaks",
        "--format",
        "json",
        "--",
        bin.to_str().expect("utf-8"),
        "stop",
        "5",
    ]);
    let (out, err) = t.pipes();
    let mut seen = err.wait_for("ready ");
    let pid: u32 = seen
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {seen:?}"));
    // SAFETY: kill sends a signal to the workload, our tracer's child.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(state(pid), Some('T' | 't')) {
        assert!(
            Instant::now() < deadline,
            "pid {pid} not stopped: state {:?}",
            state(pid)
        );
        thread::sleep(Duration::from_millis(10));
    }
    // It stays stopped: it neither goes on nor exits.
    thread::sleep(Duration::from_millis(500));
    assert!(
        matches!(state(pid), Some('T' | 't')),
        "pid {pid} went on while stopped: state {:?}",
        state(pid)
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    seen.extend(err.wait_for("continued"));
    let run = t.finish((out, err), seen, 60);
    assert_eq!(run.code, Some(5), "the command's exit code\n{run}");
    let line = leaks_line(&run);
    assert_eq!(threads(&line), 2, "checked with both threads alive\n{run}");
}
