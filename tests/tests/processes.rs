//! Several processes: children followed through fork and exec (each with its own table and,
//! after exec, its own allocator), short-lived commands, and targets in a container.

use std::collections::BTreeMap;

use muppy_tests::{Run, ebpf_available, expected_rows, ledger, rows_in, trace, workload};
use serde_json::Value;

/// The ledger rows of `source` for the sites in `functions`.
fn expected_for(source: &str, functions: &[&str]) -> BTreeMap<String, (u64, u64)> {
    let l: Vec<_> = ledger(source)
        .into_iter()
        .filter(|e| functions.contains(&e.function.as_str()))
        .collect();
    expected_rows(&l)
}

/// The `process` lines and the per-process `summary` lines of a multi-process JSON report.
fn report(run: &Run) -> (Vec<Value>, BTreeMap<u64, Value>) {
    let lines = run.json();
    let last = lines.last().unwrap_or_else(|| panic!("no output\n{run}"));
    assert_eq!(last["type"], "processes", "{run}");
    assert_eq!(last["lost_events"], 0, "{run}");
    let procs: Vec<Value> = lines
        .iter()
        .filter(|l| l["type"] == "process")
        .cloned()
        .collect();
    let sums = lines
        .iter()
        .filter(|l| l["type"] == "summary")
        .map(|l| (l["pid"].as_u64().unwrap(), l.clone()))
        .collect();
    (procs, sums)
}

#[test]
fn children_get_their_own_tables_through_fork_and_exec() {
    if !ebpf_available("children_get_their_own_tables_through_fork_and_exec") {
        return;
    }
    let (forks, exec) = (workload("forks"), workload("allocators_tcmalloc"));
    let run = trace(
        &[
            "--format",
            "json",
            "--",
            forks.to_str().unwrap(),
            exec.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let (procs, sums) = report(&run);
    assert_eq!(procs.len(), 3, "{run}");
    let root = procs
        .iter()
        .find(|p| p["parent"].is_null())
        .unwrap_or_else(|| panic!("no root\n{run}"));
    let root_pid = root["pid"].as_u64().unwrap();
    let by_comm =
        |comm: &str| -> Vec<&Value> { procs.iter().filter(|p| p["comm"] == comm).collect() };
    let child = *by_comm("forks")
        .iter()
        .find(|p| p["parent"] == root_pid)
        .unwrap_or_else(|| panic!("no forked child\n{run}"));
    let execd = by_comm("allocators_tcma")[0];
    assert_eq!(execd["parent"], root_pid, "{run}");
    for p in [root, child, execd] {
        assert_eq!(p["state"], "exited with code 0", "{run}");
    }
    // The parent: its own blocks. The child: its own, not the parent's copies, and the free of
    // an inherited block counted as unknown.
    let s = &sums[&root_pid];
    assert_eq!(
        rows_in(s, &["f_parent", "f_child"]),
        expected_for("forks", &["f_parent"]),
        "{run}"
    );
    assert_eq!(s["unknown_frees"], 0, "{run}");
    let s = &sums[&child["pid"].as_u64().unwrap()];
    assert_eq!(
        rows_in(s, &["f_parent", "f_child"]),
        expected_for("forks", &["f_child"]),
        "{run}"
    );
    assert_eq!(s["unknown_frees"], 1, "{run}");
    // The exec'd program, re-resolved to the allocator it links: its exact ledger.
    assert!(
        execd["probed"].as_str().unwrap().contains("(tcmalloc)"),
        "{run}"
    );
    let s = &sums[&execd["pid"].as_u64().unwrap()];
    let f: Vec<String> = ledger("allocators")
        .into_iter()
        .map(|e| e.function)
        .collect();
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    assert_eq!(
        rows_in(s, &f),
        expected_rows(&ledger("allocators")),
        "{run}"
    );
    assert_eq!(s["unknown_frees"], 0, "{run}");
    assert_eq!(s["comm"], "allocators_tcma", "{run}");
}

#[test]
fn without_follow_forks_only_the_command_is_traced() {
    if !ebpf_available("without_follow_forks_only_the_command_is_traced") {
        return;
    }
    let (forks, exec) = (workload("forks"), workload("allocators"));
    let run = trace(
        &[
            "--follow-forks=false",
            "--format",
            "json",
            "--",
            forks.to_str().unwrap(),
            exec.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    assert_eq!(
        rows_in(&s, &["f_parent", "f_child", "a_malloc"]),
        expected_for("forks", &["f_parent"]),
        "{run}"
    );
    assert_eq!(s["comm"], "forks", "{run}");
}

#[test]
fn a_command_that_lives_50_ms_is_traced_and_named_after_it_exits() {
    if !ebpf_available("a_command_that_lives_50_ms_is_traced_and_named_after_it_exits") {
        return;
    }
    let bin = workload("short");
    let run = trace(&["--format", "json", "--", bin.to_str().unwrap()], "");
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    // One site is in a library the program loads with dlopen as it ends: named only if its
    // mappings were read while the process was held on its way out.
    let mut want = expected_rows(&ledger("short"));
    want.extend(expected_rows(&ledger("lib/plugin")));
    assert_eq!(rows_in(&s, &["s_main", "s_plugin"]), want, "{run}");
    assert_eq!(s["lost_events"], 0, "{run}");
}
