//! Four threads leaking at named sites while churning temporaries: exact counts per site, and no
//! row for the churn.

use muppy_tests::{ebpf_available, expected_rows, ledger, rows, rows_of, trace, workload};

#[test]
fn four_threads_leak_exact_counts_and_no_temporaries() {
    if !ebpf_available("four_threads_leak_exact_counts_and_no_temporaries") {
        return;
    }
    let bin = workload("threads");
    let run = trace(&["--format", "json", "--", bin.to_str().unwrap()], "");
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    let got = rows(&s);
    let want = expected_rows(&ledger("threads"));
    let ours = rows_of(
        &got,
        &["thread_leak_a", "thread_leak_b", "thread_churn", "worker"],
    );
    let ours: std::collections::BTreeMap<String, (u64, u64)> =
        ours.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(ours, want, "{run}");
    assert_eq!(s["lost_events"], 0, "{run}");
    assert_eq!(s["unknown_frees"], 0, "{run}");
    // 4 × 250 rounds × 40 × (malloc, realloc, free) churn events, at the least.
    assert!(s["events"].as_u64().unwrap() >= 4 * 250 * 40 * 3, "{run}");
}

#[test]
fn threads_sharing_one_in_flight_slot_still_count_exactly() {
    if !ebpf_available("threads_sharing_one_in_flight_slot_still_count_exactly") {
        return;
    }
    // One slot for five threads: all but one call at a time take the fallback path, and the
    // slot changes hands constantly.
    let bin = workload("threads");
    let run = trace(
        &[
            "--inflight-slots",
            "1",
            "--format",
            "json",
            "--",
            bin.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    let got = rows(&s);
    let ours: std::collections::BTreeMap<String, (u64, u64)> = rows_of(
        &got,
        &["thread_leak_a", "thread_leak_b", "thread_churn", "worker"],
    )
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(ours, expected_rows(&ledger("threads")), "{run}");
    assert_eq!(s["lost_events"], 0, "{run}");
    assert_eq!(s["unknown_frees"], 0, "{run}");
}
