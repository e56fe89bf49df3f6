//! `--format pprof`: the profile Go's own `go tool pprof` reads, live and from a snapshot, with
//! the ledger's exact figures (`-top` by space and by objects), its call paths (`-traces`) and
//! the mapped files' build ids (`-raw`); sampled figures equal the JSON output's.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use muppy_tests::{ebpf_available, ledger, paths_stacks, scratch, trace, workload};

/// Runs `go tool pprof ARGS PROFILE` and returns its stdout; Go's caches go to `dir`.
fn pprof(dir: &Path, args: &[&str], profile: &Path) -> String {
    muppy_tests::go_pprof(dir, args, profile.as_os_str())
}

/// Options showing the figures of sample type `index` unscaled (bytes in B, not kB).
fn index_args(index: &str) -> Vec<String> {
    let mut v = vec![format!("-sample_index={index}")];
    if index.ends_with("_space") {
        v.push("-unit=B".to_string());
    }
    v
}

/// `-top` rows: (function, flat, cum).
fn top(dir: &Path, index: &str, profile: &Path) -> Vec<(String, u64, u64)> {
    let mut args = vec!["-top".to_string(), "-nodecount=1000".to_string()];
    args.extend(index_args(index));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pprof(dir, &args, profile);
    let num = |s: &str| -> Option<u64> { s.trim_end_matches('B').parse().ok() };
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // flat flat% sum% cum cum% name...
            if w.len() < 6 || !w[1].ends_with('%') || !w[4].ends_with('%') {
                return None;
            }
            Some((w[5..].join(" "), num(w[0])?, num(w[3])?))
        })
        .collect()
}

/// The total `-top` reports: `Showing nodes accounting for X, 100% of X total`.
fn total(dir: &Path, index: &str, profile: &Path) -> u64 {
    let mut args = vec!["-top".to_string()];
    args.extend(index_args(index));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pprof(dir, &args, profile);
    let line = out
        .lines()
        .find(|l| l.contains(" total"))
        .unwrap_or_else(|| panic!("no total in\n{out}"));
    let t = line
        .split(" of ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no total in {line}"));
    t.trim_end_matches('B')
        .parse()
        .unwrap_or_else(|_| panic!("no total in {line}"))
}

/// The GNU build id of `file`, as `readelf -n` prints it.
fn build_id(file: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(file)
        .output()
        .expect("run readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("{} has no build id:\n{text}", file.display()))
        .to_string()
}

/// Traces workload `name`, writing its profile live and saving a snapshot; returns the live
/// profile, the snapshot's and the snapshot.
fn profiles(dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    muppy_tests::live_and_saved(dir, name, "pprof", "pb.gz", extra)
}

#[test]
fn go_pprof_reads_the_ledger_live_and_from_a_snapshot() {
    if !ebpf_available("go_pprof_reads_the_ledger_live_and_from_a_snapshot") {
        return;
    }
    let dir = scratch("pprof-ledger");
    let (live, saved, _) = profiles(&dir, "paths", &[]);
    let site = &ledger("paths")[0];
    let bin = workload("paths");
    for profile in [&live, &saved] {
        // -top: the ledger's site, by space and by objects, with nothing above it in the
        // program's own frames.
        for (index, want) in [("inuse_space", site.bytes), ("inuse_objects", site.objects)] {
            let rows = top(&dir, index, profile);
            let row = rows
                .iter()
                .find(|r| r.0 == site.function)
                .unwrap_or_else(|| panic!("no {} row in {rows:?}", site.function));
            assert_eq!((row.1, row.2), (want, want), "{index} {rows:?}");
            let main = rows.iter().find(|r| r.0 == "main").unwrap();
            assert_eq!(main.1, 0, "{index} {rows:?}");
            assert!(main.2 >= want, "{index} {rows:?}");
        }
        // -traces: each call path leaf first, with its exact bytes.
        let traces = pprof(
            &dir,
            &["-traces", "-sample_index=inuse_space", "-unit=B"],
            profile,
        );
        let samples = parse_traces(&traces);
        for (stack, _, bytes) in paths_stacks() {
            let want: Vec<String> = stack
                .iter()
                .map(|f| f.split(' ').next().unwrap().to_string())
                .collect();
            let found = samples
                .iter()
                .find(|t| t.names.len() >= want.len() && t.names[..want.len()] == want[..])
                .unwrap_or_else(|| panic!("no sample {want:?} in\n{traces}"));
            assert_eq!(found.value, bytes, "{want:?}\n{traces}");
            assert!(found.labels.is_empty(), "one process: no labels\n{traces}");
        }
        // -raw: the program's mapping, with its build id.
        let raw = pprof(&dir, &["-raw"], profile);
        let id = build_id(&bin);
        let mapping = raw
            .lines()
            .find(|l| l.contains(bin.to_str().unwrap()))
            .unwrap_or_else(|| panic!("no mapping of {} in\n{raw}", bin.display()));
        assert!(
            mapping.contains(&id),
            "want build id {id}: {mapping}\n{raw}"
        );
    }
}

/// One sample as `-traces` shows it.
struct Traced {
    /// Its value.
    value: u64,
    /// Function names, leaf first.
    names: Vec<String>,
    /// Its labels: (key, value).
    labels: Vec<(String, String)>,
}

/// `-traces` samples: each block between separators is label lines (`key:  value`), then the
/// value and the leaf, then the callers.
fn parse_traces(text: &str) -> Vec<Traced> {
    text.split("-----------+")
        .filter_map(|block| {
            let mut lines = block
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('-'));
            let mut labels = Vec::new();
            let (value, leaf) = loop {
                let line = lines.next()?;
                if let Some((k, v)) = line.split_once(":  ") {
                    labels.push((k.to_string(), v.trim().to_string()));
                    continue;
                }
                let (value, leaf) = line.split_once(char::is_whitespace)?;
                break (value.trim_end_matches('B').parse().ok()?, leaf.trim());
            };
            let names = std::iter::once(leaf)
                .chain(lines)
                .map(str::to_string)
                .collect();
            Some(Traced {
                value,
                names,
                labels,
            })
        })
        .collect()
}

/// Sampled heaps: the profile's totals are the estimates the JSON output shows for the same
/// heap (the snapshot's), live and from the snapshot, and the period is the sampling gap.
#[test]
fn sampled_profiles_total_what_json_shows() {
    if !ebpf_available("sampled_profiles_total_what_json_shows") {
        return;
    }
    let dir = scratch("pprof-sampled");
    let (live, saved, snap) = profiles(&dir, "sampling", &["--sample-bytes", "1024"]);
    let r = trace(&["summary", snap.to_str().unwrap(), "--format", "json"], "");
    assert_eq!(r.code, Some(0), "{r}");
    let s = r.summary();
    assert_eq!(s["estimated"], true, "{s}");
    let want = (
        s["total"]["objects"].as_u64().unwrap(),
        s["total"]["bytes"].as_u64().unwrap(),
    );
    // Estimates, not the blocks seen: far more than the ~44000 samples of 45 MB.
    assert!(want.1 > 40_000_000, "{s}");
    for profile in [&live, &saved] {
        let got = (
            total(&dir, "inuse_objects", profile),
            total(&dir, "inuse_space", profile),
        );
        assert_eq!(got, want, "{}", profile.display());
        let raw = pprof(&dir, &["-raw"], profile);
        assert!(
            raw.contains("PeriodType: space bytes\nPeriod: 1024\n"),
            "{raw}"
        );
    }
}

/// Several processes (a fork and an exec): one profile, each sample labelled with its
/// process's pid and command; each process's ledger exact.
#[test]
fn processes_are_labelled_by_pid_and_command() {
    if !ebpf_available("processes_are_labelled_by_pid_and_command") {
        return;
    }
    let dir = scratch("pprof-processes");
    let profile = dir.join("procs.pb.gz");
    let (forks, exec) = (workload("forks"), workload("allocators_tcmalloc"));
    let run = trace(
        &[
            "--format",
            "pprof",
            "-o",
            profile.to_str().unwrap(),
            "--",
            forks.to_str().unwrap(),
            exec.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let traces = pprof(
        &dir,
        &["-traces", "-sample_index=inuse_space", "-unit=B"],
        &profile,
    );
    let samples = parse_traces(&traces);
    let label = |t: &Traced, k: &str| -> String {
        t.labels
            .iter()
            .find(|l| l.0 == k)
            .unwrap_or_else(|| panic!("a sample without {k}\n{traces}"))
            .1
            .clone()
    };
    // Per ledger site: (bytes, the pids of its samples).
    for e in ledger("forks").iter().filter(|e| e.objects > 0) {
        let at: Vec<&Traced> = samples
            .iter()
            .filter(|t| t.names[0] == e.function)
            .collect();
        let bytes: u64 = at.iter().map(|t| t.value).sum();
        assert_eq!(bytes, e.bytes, "{}\n{traces}", e.function);
        let mut pids: Vec<String> = at.iter().map(|t| label(t, "pid")).collect();
        pids.dedup();
        assert_eq!(pids.len(), 1, "{} in one process\n{traces}", e.function);
        assert!(at.iter().all(|t| label(t, "comm") == "forks"), "{traces}");
    }
    let pid = |f: &str| label(samples.iter().find(|t| t.names[0] == f).unwrap(), "pid");
    assert_ne!(pid("f_parent"), pid("f_child"), "{traces}");
    // The exec'd program's samples carry its own command.
    assert!(
        samples
            .iter()
            .any(|t| label(t, "comm") == "allocators_tcma"),
        "{traces}"
    );
}

/// A stack cut short ends in a pseudo-frame saying why, as tables mark it.
#[test]
fn a_cut_stack_ends_in_its_marker() {
    if !ebpf_available("a_cut_stack_ends_in_its_marker") {
        return;
    }
    let dir = scratch("pprof-cut");
    let profile = dir.join("cut.pb.gz");
    let bin = workload("unwind_cases");
    let run = trace(
        &[
            "--unwind",
            "dwarf",
            "--format",
            "pprof",
            "-o",
            profile.to_str().unwrap(),
            "--",
            bin.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let traces = pprof(
        &dir,
        &["-traces", "-sample_index=inuse_space", "-unit=B"],
        &profile,
    );
    let site = ledger("unwind_cases")
        .into_iter()
        .find(|e| e.function == "bottom_site")
        .expect("bottom_site in the ledger");
    let deep: Vec<Traced> = parse_traces(&traces)
        .into_iter()
        .filter(|t| t.names[0] == "bottom_site")
        .collect();
    assert_eq!(
        deep.iter().map(|t| t.value).sum::<u64>(),
        site.bytes,
        "{traces}"
    );
    for t in &deep {
        assert_eq!(
            t.names.last().map(String::as_str),
            Some("[stack deeper than the copy]"),
            "{traces}"
        );
        assert!(
            t.names[1..t.names.len() - 1]
                .iter()
                .all(|n| n.starts_with("recurse")),
            "{traces}"
        );
    }
}

/// A leak check grouped by stack: one sample per loss record, labelled with its kind (the
/// check at a launched command's exit, as tests/exit_hold.rs makes it: a block held only in
/// another thread's register is reachable, a dropped one definitely lost).
#[test]
fn loss_records_are_samples_labelled_with_their_kind() {
    if !ebpf_available("loss_records_are_samples_labelled_with_their_kind") {
        return;
    }
    let dir = scratch("pprof-leaks");
    let profile = dir.join("leaks.pb.gz");
    let bin = workload("exit_hold");
    let run = trace(
        &[
            "leaks",
            "--group-by",
            "stack",
            "--format",
            "pprof",
            "-o",
            profile.to_str().unwrap(),
            "--",
            bin.to_str().unwrap(),
            "regs",
            "0",
        ],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let traces = pprof(
        &dir,
        &["-traces", "-sample_index=inuse_space", "-unit=B"],
        &profile,
    );
    let samples = parse_traces(&traces);
    // exit_hold.c: spinner's 24000-byte block, held in r12; lose's 22000, dropped.
    for (function, bytes, kind) in [
        ("spinner", 24000, "reachable"),
        ("lose", 22000, "definitely_lost"),
    ] {
        let at: Vec<&Traced> = samples.iter().filter(|t| t.names[0] == function).collect();
        assert_eq!(at.len(), 1, "{function}\n{traces}");
        assert_eq!(at[0].value, bytes, "{function}\n{traces}");
        assert_eq!(
            at[0].labels,
            [("kind".to_string(), kind.to_string())],
            "{traces}"
        );
    }
}
