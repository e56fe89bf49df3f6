//! The leak check at a launched command's exit (`muppy-trace leaks -- CMD`) is made where the
//! command enters `_exit`, every thread alive, as Valgrind's is: the probes stop the thread
//! there and the ptrace thread holds it for the check (workloads/exit_hold.c).
//!
//! Each test bounds its waits and kills what it started on every path.

use std::{thread, time::Duration};

use muppy_tests::{
    Run, Tracing, ebpf_available, marked_frame, poll, ready_pid, signal, state, workload,
};
use serde_json::Value;

/// `muppy-trace ARGS -- BIN MODE CODE`, started (`bin`: a build of exit_hold).
fn spawn(args: &[&str], bin: &str, mode: &str, code: &str) -> Tracing {
    let bin = workload(bin);
    let mut all = args.to_vec();
    all.extend(["--", bin.to_str().expect("utf-8"), mode, code]);
    Tracing::spawn(&all)
}

/// `muppy-trace ARGS -- BIN MODE CODE`, run to its end (at most a minute).
fn launch(args: &[&str], bin: &str, mode: &str, code: &str) -> Run {
    spawn(args, bin, mode, code).finish(60)
}

/// `muppy-trace leaks --verbose -- BIN regs CODE`, run to its end: the command's exit code,
/// and the hold placed and run once.
fn checked_once(bin: &str, code: &str) -> Run {
    let run = launch(
        &["leaks", "--verbose", "--format", "json"],
        bin,
        "regs",
        code,
    );
    assert_eq!(run.code, Some(code.parse().expect("code")), "{run}");
    assert!(run.stderr.contains("exit_hold: 1 runs"), "{run}");
    run
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

/// The leaks line of a check that saw both of exit_hold's threads (every one of the command's,
/// held at `_exit`).
fn checked_with_both_threads(run: &Run) -> Value {
    let line = run.leaks();
    assert_eq!(
        line["threads"].as_u64(),
        Some(2),
        "checked with both threads alive\n{run}"
    );
    line
}

/// The row at the line of exit_hold marked `/* frame: MARKER */`, in `function`, is `kind`.
fn assert_kind(run: &Run, line: &Value, function: &str, marker: &str, kind: &str) {
    let site = marked_frame("exit_hold", function, marker);
    assert_eq!(kind_at(line, &site).as_deref(), Some(kind), "{site}\n{run}");
}

/// A pointer held only in a register of a second thread keeps its block reachable at the
/// check at exit, as under Valgrind: the check runs before `exit_group` kills that thread.
/// The command's exit code is muppy-trace's.
#[test]
fn a_register_of_another_thread_is_a_root_at_exit() {
    if !ebpf_available("a_register_of_another_thread_is_a_root_at_exit") {
        return;
    }
    let run = launch(&["leaks", "--format", "json"], "exit_hold", "regs", "7");
    assert_eq!(run.code, Some(7), "the command's exit code\n{run}");
    let line = checked_with_both_threads(&run);
    assert_kind(&run, &line, "spinner", "held", "reachable");
    assert_kind(&run, &line, "lose", "lost", "definitely_lost");
}

/// The same where jemalloc serves malloc: the hold is still at libc's `_exit`, which `exit`
/// calls.
#[test]
fn the_hold_is_at_libcs_exit_under_jemalloc() {
    if !ebpf_available("the_hold_is_at_libcs_exit_under_jemalloc") {
        return;
    }
    let run = checked_once("exit_hold_jemalloc", "0");
    let line = checked_with_both_threads(&run);
    assert_kind(&run, &line, "spinner", "held", "reachable");
}

/// Without a leak check nothing is held: the exit probe is not even placed, and the command's
/// code passes through.
#[test]
fn without_a_check_no_exit_probe_is_placed() {
    if !ebpf_available("without_a_check_no_exit_probe_is_placed") {
        return;
    }
    let run = launch(&["--verbose", "--format", "json"], "exit_hold", "regs", "7");
    assert_eq!(run.code, Some(7), "{run}");
    // The exit probe's program would say how often it ran.
    assert!(!run.stderr.contains("muppy-trace: exit_hold:"), "{run}");
    let run = Tracing::spawn(&["--format", "json", "--", "true"]).finish(60);
    assert_eq!(run.code, Some(0), "{run}");
    run.summary();
    // With a check it is placed, and runs once.
    checked_once("exit_hold", "7");
}

/// A user's SIGSTOP and SIGCONT act as without muppy on a command checked at exit (only the
/// probes' own SIGSTOP, sent by the kernel, is the hold), and a thread that calls `_exit`
/// directly is held and checked too.
#[test]
fn a_users_sigstop_still_stops_the_command() {
    if !ebpf_available("a_users_sigstop_still_stops_the_command") {
        return;
    }
    let mut t = spawn(&["leaks", "--format", "json"], "exit_hold", "stop", "5");
    let pid = ready_pid(&t.stderr_until("ready ", 60));
    let stopped = || matches!(state(pid), Some('T' | 't'));
    signal(pid, libc::SIGSTOP);
    assert!(
        poll(10, stopped),
        "pid {pid} not stopped: state {:?}",
        state(pid)
    );
    // It stays stopped: it neither goes on nor exits.
    thread::sleep(Duration::from_millis(500));
    assert!(
        stopped(),
        "pid {pid} went on while stopped: state {:?}",
        state(pid)
    );
    signal(pid, libc::SIGCONT);
    t.stderr_until("continued", 60);
    let run = t.finish(60);
    assert_eq!(run.code, Some(5), "the command's exit code\n{run}");
    checked_with_both_threads(&run);
}
