//! System-wide tracing (`--all`): every process, new ones included, each with its own table,
//! reported as it exits. In a test binary of its own, so that no other test's workloads run
//! meanwhile and the counts below are this test's alone.

use muppy_tests::{Run, ebpf_available, expected_rows, ledger, rows_in, workload};
use serde_json::Value;

#[test]
fn system_wide_tracing_reports_each_process_as_it_exits() {
    if !ebpf_available("system_wide_tracing_reports_each_process_as_it_exits") {
        return;
    }
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

/// Sends SIGINT, as Ctrl-C would.
fn sigint(pid: u32) {
    // SAFETY: kill(2) on a child we spawned.
    unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGINT) };
}
