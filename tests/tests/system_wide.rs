//! System-wide tracing (`--all`): every process, new ones included, each with its own table,
//! reported as it exits. In a test binary of its own, so that no other test's workloads run
//! meanwhile and the counts below are this test's alone.

use std::sync::{Mutex, MutexGuard};

use muppy_tests::{Run, Tracing, ebpf_available, expected_rows, ledger, rows_in, workload};
use serde_json::Value;

/// The tests here take turns: each counts every process on the machine.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn system_wide_tracing_reports_each_process_as_it_exits() {
    if !ebpf_available("system_wide_tracing_reports_each_process_as_it_exits") {
        return;
    }
    let _turn = one_at_a_time();
    muppy_tests::wait_for_no_tracer();
    let mut tracer =
        muppy_tests::spawn_trace(&["--all", "--sample-bytes", "0", "--format", "json"]);
    let err = muppy_tests::Lines::new(tracer.stderr.take().unwrap());
    err.wait_for("tracing every process", 60);
    // Started after the tracer, so traced from its exec on: ages lives 2 s, long enough for
    // its mappings to be read and its sites named; allocators lives about a millisecond,
    // which may be over before they are (its counts are exact all the same).
    let run_one = |bin: &str, args: &[&str]| {
        let status = std::process::Command::new(workload(bin))
            .args(args)
            .status()
            .unwrap();
        assert!(status.success());
    };
    run_one("ages", &[]);
    run_one("allocators", &[]);
    run_one("forks", &[workload("allocators").to_str().unwrap()]);
    // Exit events wake the reader at once; give it a moment, then stop as Ctrl-C would.
    std::thread::sleep(std::time::Duration::from_millis(500));
    sigint(tracer.id());
    let run = Run::from_output(tracer.wait_with_output().unwrap());
    assert_eq!(run.code, Some(0), "{run}");
    let lines = run.json();
    let exited = |comm: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["type"] == "exited" && l["comm"] == comm && l["state"] == "exited")
            .collect()
    };
    let ages = exited("ages");
    assert_eq!(ages.len(), 1, "{run}");
    assert_eq!(
        rows_in(ages[0], &["old", "young"]),
        expected_rows(&ledger("ages")),
        "{run}"
    );
    // allocators ran twice (once on its own, once exec'd by a child of forks).
    let total: (u64, u64) = ledger("allocators")
        .iter()
        .fold((0, 0), |a, e| (a.0 + e.objects, a.1 + e.bytes));
    let runs = exited("allocators");
    assert_eq!(runs.len(), 2, "{run}");
    for r in runs {
        assert_eq!(
            (
                r["total"]["objects"].as_u64().unwrap(),
                r["total"]["bytes"].as_u64().unwrap()
            ),
            total,
            "{run}"
        );
        assert_eq!(r["unknown_frees"], 0, "{run}");
    }
    // forks: the parent with its 8 blocks, its child with 3 and one inherited block freed.
    let mut forks: Vec<(u64, u64, u64)> = exited("forks")
        .iter()
        .map(|l| {
            (
                l["total"]["objects"].as_u64().unwrap(),
                l["total"]["bytes"].as_u64().unwrap(),
                l["unknown_frees"].as_u64().unwrap(),
            )
        })
        .collect();
    forks.sort_unstable();
    assert_eq!(forks, vec![(3, 12000, 1), (8, 800, 0)], "{run}");
    assert_eq!(lines.last().unwrap()["type"], "processes", "{run}");
    assert_eq!(lines.last().unwrap()["lost_events"], 0, "{run}");
}

/// A process that lives a millisecond is gone before the tracer can read its
/// `/proc/PID/maps`; the kernel sends its mappings as it exits, so its site is named all the
/// same: each of 300 such processes started by a shell, however briefly it lived.
#[test]
fn system_wide_names_the_sites_of_processes_that_lived_a_millisecond() {
    if !ebpf_available("system_wide_names_the_sites_of_processes_that_lived_a_millisecond") {
        return;
    }
    const RUNS: usize = 300;
    let _turn = one_at_a_time();
    muppy_tests::wait_for_no_tracer();
    let tracer = Tracing::start(&["--all", "--sample-bytes", "0", "--format", "json"]);
    let script = format!(
        "i=0; while [ $i -lt {RUNS} ]; do {}; i=$((i+1)); done",
        workload("blink").display()
    );
    let status = std::process::Command::new("sh")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    // Exit events wake the reader at once; give it a moment, then stop as Ctrl-C would.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let run = tracer.interrupt(60);
    assert_eq!(run.code, Some(0), "{run}");
    let lines = run.json();
    let ended: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "exited" && l["comm"] == "blink" && l["state"] == "exited")
        .collect();
    let expected = expected_rows(&ledger("blink"));
    let named = ended
        .iter()
        .filter(|l| {
            rows_in(l, &["blink_site"]) == expected
                && l["rows"].as_array().is_some_and(|rows| {
                    rows.iter()
                        .all(|r| !r["site"].as_str().unwrap_or("").starts_with("[unknown]"))
                })
        })
        .count();
    eprintln!(
        "blink: {} processes ended, {named} with their sites named",
        ended.len()
    );
    // Every one ends, counted exactly, and is named.
    assert_eq!(
        ended.len(),
        RUNS,
        "processes ended of {RUNS} runs of blink\n{run}"
    );
    assert_eq!(named, RUNS, "runs of blink named\n{run}");
}

/// With `--comm`, the processes it refuses send nothing: the probes learn each refusal (of a
/// process running at the start, or of one as it execs) and keep its events in the kernel, so
/// a busy process the selection leaves out cannot fill the ring. A busy process runs from
/// before the start and another starts after it; of their allocator calls the probes saw
/// (`--verbose` counts the programs' runs), those that reached user space (before the probes
/// learnt of a refusal) are "left out", and must be under 1% (without the kernel's filter,
/// all are).
#[test]
fn system_wide_selection_keeps_refused_processes_events_in_the_kernel() {
    if !ebpf_available("system_wide_selection_keeps_refused_processes_events_in_the_kernel") {
        return;
    }
    let _turn = one_at_a_time();
    muppy_tests::wait_for_no_tracer();
    let busy = |what: &str| {
        muppy_tests::Proc::spawn(
            std::process::Command::new(workload("busy"))
                .args(["2", "4"])
                .stderr(std::process::Stdio::null()),
            what,
        )
    };
    let before = busy("busy from before the tracer");
    let tracer = Tracing::start(&[
        "--all",
        "--sample-bytes",
        "0",
        "--comm",
        "^ages$",
        "--verbose",
        "--format",
        "json",
    ]);
    let mut after = busy("busy from after the tracer");
    let status = std::process::Command::new(workload("ages"))
        .status()
        .unwrap();
    assert!(status.success());
    let _ = after.end_within(30);
    drop(before);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let run = tracer.interrupt(60);
    assert_eq!(run.code, Some(0), "{run}");
    let figure = |prefix: &str, until: &str| -> u64 {
        run.stderr
            .lines()
            .find_map(|l| l.strip_prefix(prefix)?.split_once(until)?.0.parse().ok())
            .unwrap_or(0)
    };
    let returns = figure("muppy-trace: alloc_exit: ", " runs");
    let left_out = figure(
        "muppy-trace: warning: ",
        " events came from processes muppy was not tracing",
    );
    eprintln!(
        "allocator returns probed: {returns}; events that reached user space and were left out: {left_out}"
    );
    assert!(returns > 100_000, "only {returns} returns probed\n{run}");
    assert!(
        left_out * 100 < returns,
        "{left_out} events of {returns} calls reached user space\n{run}"
    );
    let lines = run.json();
    let ages: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "exited" && l["comm"] == "ages")
        .collect();
    assert_eq!(ages.len(), 1, "{run}");
    assert_eq!(
        rows_in(ages[0], &["old", "young"]),
        expected_rows(&ledger("ages")),
        "{run}"
    );
    assert!(
        !lines.iter().any(|l| l["comm"] == "busy"),
        "a refused process has a table\n{run}"
    );
    assert_eq!(lines.last().unwrap()["lost_events"], 0, "{run}");
}

/// Sends SIGINT, as Ctrl-C would.
fn sigint(pid: u32) {
    // SAFETY: kill(2) on a child we spawned.
    unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGINT) };
}
