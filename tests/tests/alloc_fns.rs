//! Every allocator entry point, traced from the command's first allocation: the summary must
//! hold exactly the workload's ledger, nothing more (no temporaries, no failed calls).

use muppy_tests::{ebpf_available, expected_rows, ledger, ledger_rows, rows, trace, workload};

#[test]
fn every_entry_point_counts_exactly_once() {
    if !ebpf_available("every_entry_point_counts_exactly_once") {
        return;
    }
    let bin = workload("alloc_fns");
    let run = trace(&["--format", "json", "--", bin.to_str().unwrap()], "");
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    let want = expected_rows(&ledger("alloc_fns"));
    assert_eq!(want.len(), 13, "the ledger itself changed");
    assert_eq!(rows(&s), want, "{run}");
    let (objects, bytes) = want.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
    assert_eq!(s["total"]["objects"], objects);
    assert_eq!(s["total"]["bytes"], bytes);
    assert_eq!(s["unknown_frees"], 0, "{run}");
    assert_eq!(s["lost_events"], 0, "{run}");
    assert_eq!(s["exit"]["exit_code"], 0);
    assert!(s["pid"].as_u64().is_some());
}

#[test]
fn table_output_names_sites_with_file_and_line() {
    if !ebpf_available("table_output_names_sites_with_file_and_line") {
        return;
    }
    let bin = workload("alloc_fns");
    let run = trace(&["--top", "3", "--", bin.to_str().unwrap()], "");
    assert_eq!(run.code, Some(0), "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{run}");
    assert!(
        lines[0]
            .trim_end()
            .ends_with("sites | # objects | total size"),
        "{run}"
    );
    assert!(lines[1].starts_with("====="), "{run}");
    let move_site = ledger("alloc_fns")
        .into_iter()
        .find(|e| e.function == "site_realloc_move")
        .unwrap()
        .site;
    assert!(
        lines[2].contains(&move_site) && lines[2].contains("|         4 |  781.25 KB"),
        "{run}"
    );
    assert!(lines[5].starts_with("total: 59 objects, 809.85 KB live in 13 sites (top 3 of 13 sites shown); lost_events: 0; unknown_frees: 0"), "{run}");
    // What was probed, in the summary itself.
    assert_eq!(lines[6], "probed: malloc from libc.so.6 (glibc)", "{run}");
}

#[test]
fn a_call_left_by_longjmp_loses_only_counted_events() {
    if !ebpf_available("a_call_left_by_longjmp_loses_only_counted_events") {
        return;
    }
    let bin = workload("escape");
    let run = trace(&["--format", "json", "--", bin.to_str().unwrap()], "");
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    assert_eq!(
        ledger_rows(&s, "escape"),
        expected_rows(&ledger("escape")),
        "{run}"
    );
    // The escaped call and the 64 calls its stale record took: lost, and said so.
    assert_eq!(s["lost_events"], 65, "{run}");
    assert!(
        run.stderr
            .contains("65 events were lost (65: an entry whose return was never seen)"),
        "{run}"
    );
}
