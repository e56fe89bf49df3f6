//! `--sample-bytes`: byte-weighted sampling estimates each site's objects and bytes within 5%
//! of the ledger, and unsampled allocations cost no event.
//!
//! The sample sizes are chosen so that 5% is more than five standard errors: these tests check
//! the estimator, they do not gamble on it.

use muppy_tests::{ebpf_available, expected_rows, ledger, rows, rows_of, trace, workload};

fn within_5_percent(got: u64, want: u64) -> bool {
    got.abs_diff(want) * 20 <= want
}

#[test]
fn estimates_are_within_5_percent_and_most_events_are_skipped() {
    if !ebpf_available("estimates_are_within_5_percent_and_most_events_are_skipped") {
        return;
    }
    let bin = workload("sampling");
    // 200000 blocks of 64 bytes at one sample per ~1024 bytes: ≈12000 samples, 0.9% error.
    let run = trace(
        &[
            "--sample-bytes",
            "1024",
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
    assert_eq!(s["sample_bytes"], 1024, "{run}");
    assert_eq!(s["lost_events"], 0, "{run}");
    let got = rows(&s);
    let ours = rows_of(&got, &["many_small", "few_large", "churn"]);
    let want = expected_rows(&ledger("sampling"));
    assert_eq!(ours.len(), want.len(), "{run}");
    for (site, (objects, bytes)) in &want {
        let (o, b) = got[site];
        assert!(
            within_5_percent(o, *objects),
            "{site}: {o} objects, want {objects}\n{run}"
        );
        assert!(
            within_5_percent(b, *bytes),
            "{site}: {b} bytes, want {bytes}\n{run}"
        );
    }
    // 2.2 million calls; a sample every ~1 KiB of 64..271-byte blocks keeps well under a fifth.
    let events = s["events"].as_u64().unwrap();
    assert!(events < 2_202_000 / 5, "{events} events\n{run}");
}

#[test]
fn threads_ledger_holds_under_sampling() {
    if !ebpf_available("threads_ledger_holds_under_sampling") {
        return;
    }
    let bin = workload("threads");
    // 64-byte blocks at one sample per ~16 bytes: P(sampled) = 98%, error 0.4%.
    let run = trace(
        &[
            "--sample-bytes",
            "16",
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
    let want = expected_rows(&ledger("threads"));
    for (site, (objects, bytes)) in &want {
        let (o, b) = got.get(site).copied().unwrap_or_default();
        assert!(
            within_5_percent(o, *objects),
            "{site}: {o} objects, want {objects}\n{run}"
        );
        assert!(
            within_5_percent(b, *bytes),
            "{site}: {b} bytes, want {bytes}\n{run}"
        );
    }
    assert!(rows_of(&got, &["thread_churn"]).is_empty(), "{run}");
}
