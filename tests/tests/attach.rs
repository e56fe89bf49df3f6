//! Attaching to a process that was already running, and targets that end mid-trace.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use muppy_tests::{
    Lines, ebpf_available, expected_rows, ledger, rows, spawn_trace, trace, workload,
};

#[test]
fn attach_to_running_process_counts_only_what_follows() {
    if !ebpf_available("attach_to_running_process_counts_only_what_follows") {
        return;
    }
    let mut target = Command::new(workload("attach"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let target_err = Lines::new(target.stderr.take().unwrap());
    target_err.wait_for("ready", 60);
    let pid = target.id().to_string();
    let mut tracer = spawn_trace(&["--format", "json", "--pid", &pid]);
    let tracer_err = Lines::new(tracer.stderr.take().unwrap());
    tracer_err.wait_for("tracing pid", 60);
    // The target now frees its 50 pre-attach blocks, leaks 30 more, and exits mid-trace.
    target.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(target.wait().unwrap().success());
    let out = tracer.wait_with_output().unwrap();
    let stderr = tracer_err.rest(60).join("\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let s: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        rows(&s),
        expected_rows(&ledger("attach")),
        "{stdout}\n{stderr}"
    );
    assert_eq!(s["unknown_frees"], 50, "{stdout}");
    assert_eq!(s["lost_events"], 0);
    assert!(stderr.contains(&format!("pid {pid} exited")), "{stderr}");
}

#[test]
fn target_killed_mid_trace_still_gets_its_summary() {
    if !ebpf_available("target_killed_mid_trace_still_gets_its_summary") {
        return;
    }
    let bin = workload("attach");
    let run = trace(
        &["--format", "json", "--", bin.to_str().unwrap(), "kill"],
        "go\n",
    );
    // The command died of SIGKILL: the tracer reports it and exits as a shell would (128 + 9).
    assert_eq!(run.code, Some(137), "{run}");
    let s = run.summary();
    assert_eq!(s["exit"]["signal"], 9, "{run}");
    // Launched, the tracer saw the pre-attach blocks allocated and freed too.
    assert_eq!(rows(&s), expected_rows(&ledger("attach")), "{run}");
    assert_eq!(s["unknown_frees"], 0, "{run}");
    assert!(
        run.stderr.contains("was killed by signal 9 (SIGKILL)"),
        "{run}"
    );
}
