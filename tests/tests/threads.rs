//! Four threads leaking at named sites while churning temporaries: exact counts per site, and no
//! row for the churn. More busy threads than CPUs: no event lost.

use muppy_tests::{ebpf_available, expected_rows, ledger, rows_in, trace, workload};

/// Traces the threads workload with `flags` and checks the ledger exactly.
fn exact_ledger(flags: &[&str]) -> serde_json::Value {
    let bin = workload("threads");
    let mut args = flags.to_vec();
    args.extend(["--format", "json", "--", bin.to_str().unwrap()]);
    let run = trace(&args, "");
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    let ours = rows_in(
        &s,
        &["thread_leak_a", "thread_leak_b", "thread_churn", "worker"],
    );
    assert_eq!(ours, expected_rows(&ledger("threads")), "{run}");
    assert_eq!(s["lost_events"], 0, "{run}");
    assert_eq!(s["unknown_frees"], 0, "{run}");
    // Each thread's exit frees its glibc cache (allocated with no call to malloc), at least
    // the cache itself: seen as glibc's because frees read their caller during teardown.
    assert!(s["libc_unknown_frees"].as_u64().unwrap() >= 4, "{run}");
    s
}

#[test]
fn four_threads_leak_exact_counts_and_no_temporaries() {
    if !ebpf_available("four_threads_leak_exact_counts_and_no_temporaries") {
        return;
    }
    let s = exact_ledger(&[]);
    // 4 × 250 rounds × 40 × (malloc, realloc, free) churn events, at the least.
    assert!(s["events"].as_u64().unwrap() >= 4 * 250 * 40 * 3, "{s}");
}

#[test]
fn threads_sharing_one_in_flight_slot_still_count_exactly() {
    if !ebpf_available("threads_sharing_one_in_flight_slot_still_count_exactly") {
        return;
    }
    // One slot for five threads: all but one call at a time take the fallback path, and the
    // slot changes hands constantly.
    exact_ledger(&["--inflight-slots", "1"]);
}

/// More busy threads than this machine has CPUs: four threads replace their blocks as fast as
/// they can for 10 s, at default settings. The ring's reader keeps up (it drains at a
/// real-time priority): not one event lost, and the live count exact.
#[test]
fn busy_threads_outnumbering_cpus_lose_no_event() {
    if !ebpf_available("busy_threads_outnumbering_cpus_lose_no_event") {
        return;
    }
    let bin = workload("busy");
    let run = trace(
        &["--format", "json", "--", bin.to_str().unwrap(), "4", "10"],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    assert_eq!(s["lost_events"], 0, "{run}");
    assert_eq!(
        rows_in(&s, &["busy_block"]),
        expected_rows(&ledger("busy")),
        "{run}"
    );
    // It was busy: millions of events (≈700 ns a trap, two CPUs, ten seconds).
    assert!(s["events"].as_u64().unwrap() > 1_000_000, "{run}");
}
