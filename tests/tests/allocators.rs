//! Other allocators: the one the program actually uses is detected from its files and probed,
//! whether linked, preloaded, prefixed beside glibc's, or linked into a static executable; C++
//! operators are probed where they are defined. Each run must give the source's exact ledger.

use muppy_tests::{
    Run, ebpf_available, expected_rows, ledger, ledger_rows, muppy_trace, trace, workload,
};

/// Traces `bin` and checks the ledger of `source` and that `allocator` was probed.
fn check(run: &Run, source: &str, allocator: &str) {
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    // Only the ledger's sites: an allocator's start-up blocks and libstdc++'s emergency pool
    // are real but not the ledger's.
    assert_eq!(
        ledger_rows(&s, source),
        expected_rows(&ledger(source)),
        "{run}"
    );
    assert_eq!(s["lost_events"], 0, "{run}");
    assert_eq!(s["unknown_frees"], 0, "{run}");
    let probed = s["probed"]["allocator"].as_str().unwrap_or_default();
    assert!(
        probed.contains(allocator),
        "probed {probed:?}, not {allocator}\n{run}"
    );
}

fn run(bin: &str) -> Run {
    let bin = workload(bin);
    trace(&["--format", "json", "--", bin.to_str().unwrap()], "")
}

#[test]
fn glibc_jemalloc_tcmalloc_mimalloc_and_static_give_one_ledger() {
    if !ebpf_available("glibc_jemalloc_tcmalloc_mimalloc_and_static_give_one_ledger") {
        return;
    }
    for (bin, allocator) in [
        ("allocators", "malloc from libc.so.6 (glibc)"),
        (
            "allocators_jemalloc",
            "malloc, operator new/delete from libjemalloc.so.2 (jemalloc)",
        ),
        (
            "allocators_tcmalloc",
            "from libtcmalloc_minimal.so.4 (tcmalloc)",
        ),
        ("allocators_mimalloc", "from libmimalloc.so.2 (mimalloc)"),
        (
            "allocators_static",
            "malloc from allocators_static (linked into the executable)",
        ),
    ] {
        check(&run(bin), "allocators", allocator);
    }
}

#[test]
fn a_preloaded_allocator_is_the_one_probed() {
    if !ebpf_available("a_preloaded_allocator_is_the_one_probed") {
        return;
    }
    let bin = workload("allocators");
    let lib = std::process::Command::new("gcc")
        .arg("-print-file-name=libtcmalloc_minimal.so.4")
        .output()
        .expect("gcc");
    let lib = String::from_utf8_lossy(&lib.stdout).trim().to_string();
    let out = std::process::Command::new(muppy_trace())
        .args(["--format", "json", "--", bin.to_str().unwrap()])
        .env("LD_PRELOAD", &lib)
        .output()
        .expect("muppy-trace");
    check(&Run::from_output(out), "allocators", "(tcmalloc)");
}

#[test]
fn a_je_prefixed_allocator_is_probed_beside_glibc() {
    if !ebpf_available("a_je_prefixed_allocator_is_probed_beside_glibc") {
        return;
    }
    let r = run("je_prefixed");
    check(
        &r,
        "je_prefixed",
        "malloc from libc.so.6 (glibc); je_malloc from libje_alloc.so",
    );
}

#[test]
fn cxx_operators_count_once_with_the_callers_site() {
    if !ebpf_available("cxx_operators_count_once_with_the_callers_site") {
        return;
    }
    for (bin, allocator) in [
        (
            "cxx_ops",
            "operator new/delete from libstdc++.so.6 (libstdc++)",
        ),
        (
            "cxx_ops_jemalloc",
            "malloc, operator new/delete from libjemalloc.so.2",
        ),
        (
            "cxx_ops_tcmalloc",
            "malloc, operator new/delete from libtcmalloc_minimal.so.4",
        ),
    ] {
        check(&run(bin), "cxx_ops", allocator);
    }
}

#[test]
fn allocator_override_names_what_the_target_has() {
    if !ebpf_available("allocator_override_names_what_the_target_has") {
        return;
    }
    let bin = workload("allocators_tcmalloc");
    let r = trace(
        &[
            "--allocator",
            "tcmalloc",
            "--format",
            "json",
            "--",
            bin.to_str().unwrap(),
        ],
        "",
    );
    check(&r, "allocators", "(tcmalloc)");
    let r = trace(&["--allocator", "hoard", "--", bin.to_str().unwrap()], "");
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr.contains("--allocator hoard: no file of the target with that name defines malloc (it has: allocators_tcmalloc, libtcmalloc_minimal.so.4"),
        "{r}"
    );
}
