//! `--sample-bytes`: byte-weighted sampling estimates each site's objects and bytes within 5%
//! of the ledger, and unsampled allocations cost no event.
//!
//! The sample sizes are chosen so that 5% is more than five standard errors: these tests check
//! the estimator, they do not gamble on it.

use muppy_tests::{ebpf_available, expected_rows, ledger, rows_in, trace, workload};

/// Traces `name` sampling every ~`bytes` bytes; checks every ledger row within 5% and that the
/// functions `ours` show no other rows. Returns the summary.
fn estimates_within_5_percent(name: &str, bytes: &str, ours: &[&str]) -> serde_json::Value {
    let bin = workload(name);
    let run = trace(
        &[
            "--sample-bytes",
            bytes,
            "--format",
            "json",
            "--",
            bin.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    assert_eq!(s["estimated"], true, "{run}");
    assert_eq!(s["lost_events"], 0, "{run}");
    let got = rows_in(&s, ours);
    let want = expected_rows(&ledger(name));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{run}"
    );
    let close = |a: u64, b: u64| a.abs_diff(b) * 20 <= b;
    for (site, (objects, bytes)) in &want {
        let (o, b) = got[site];
        assert!(
            close(o, *objects),
            "{site}: {o} objects, want {objects}\n{run}"
        );
        assert!(close(b, *bytes), "{site}: {b} bytes, want {bytes}\n{run}");
    }
    s
}

#[test]
fn estimates_are_within_5_percent_and_most_events_are_skipped() {
    if !ebpf_available("estimates_are_within_5_percent_and_most_events_are_skipped") {
        return;
    }
    // 200000 blocks of 64 bytes at one sample per ~1024 bytes: ≈12000 samples, 0.9% error.
    let s = estimates_within_5_percent("sampling", "1024", &["many_small", "few_large", "churn"]);
    assert_eq!(s["sample_bytes"], 1024, "{s}");
    // 2.2 million calls; a sample every ~1 KiB of 64..271-byte blocks keeps well under a fifth.
    let events = s["events"].as_u64().unwrap();
    assert!(events < 2_202_000 / 5, "{events} events\n{s}");
}

#[test]
fn threads_ledger_holds_under_sampling() {
    if !ebpf_available("threads_ledger_holds_under_sampling") {
        return;
    }
    // 64-byte blocks at one sample per ~16 bytes: P(sampled) = 98%, error 0.4%. No churn row.
    estimates_within_5_percent(
        "threads",
        "16",
        &["thread_leak_a", "thread_leak_b", "thread_churn"],
    );
}
