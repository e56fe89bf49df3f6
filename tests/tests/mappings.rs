//! Memory a program maps itself (anonymous mmap, munmap, mremap outside the allocator), as a
//! category of its own beside the heap.

use std::collections::BTreeMap;

use muppy_tests::{ebpf_available, expected_rows, ledger, marked_frame, rows, trace, workload};

#[test]
fn own_mappings_are_counted_apart_from_the_heap() {
    if !ebpf_available("own_mappings_are_counted_apart_from_the_heap") {
        return;
    }
    let bin = workload("mappings");
    let run = trace(
        &["--mmap", "--format", "json", "--", bin.to_str().unwrap()],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    // The 1 MiB malloc is a heap block, though glibc maps it itself.
    assert_eq!(rows(&s), expected_rows(&ledger("mappings")), "{run}");
    let got: BTreeMap<String, (u64, u64)> = s["mmap"]["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no mmap rows\n{run}"))
        .iter()
        .map(|r| {
            (
                r["site"].as_str().unwrap().to_string(),
                (r["regions"].as_u64().unwrap(), r["bytes"].as_u64().unwrap()),
            )
        })
        .collect();
    let want: BTreeMap<String, (u64, u64)> = [
        (marked_frame("mappings", "m_keep", "keep"), (3, 3 * 65536)),
        (marked_frame("mappings", "m_cut", "cut"), (2, 2 * 4096)),
        (marked_frame("mappings", "m_move", "move"), (1, 65536)),
    ]
    .into_iter()
    .collect();
    // Nothing else: not the unmapped ones, not the file mapping, not the loader's.
    assert_eq!(got, want, "{run}");
    assert_eq!(s["mmap"]["total"]["bytes"], 3 * 65536 + 2 * 4096 + 65536);
}

#[test]
fn without_mmap_mappings_are_left_out() {
    if !ebpf_available("without_mmap_mappings_are_left_out") {
        return;
    }
    let bin = workload("mappings");
    let run = trace(&["--format", "json", "--", bin.to_str().unwrap()], "");
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    assert!(s.get("mmap").is_none(), "{run}");
    assert_eq!(rows(&s), expected_rows(&ledger("mappings")), "{run}");
}
