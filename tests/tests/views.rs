//! get_objects, the filters, snapshots and the offline views, on a workload of known sizes and
//! ages (ages.c: old blocks at least 2 s old at exit, young ones allocated just before it).

use std::path::{Path, PathBuf};

use muppy_tests::{ebpf_available, expected_rows, ledger, rows, scratch, trace, workload};
use serde_json::Value;

fn ages(args: &[&str], count: &str) -> Vec<Value> {
    let bin = workload("ages");
    let mut all = args.to_vec();
    all.extend(["--format", "json", "--", bin.to_str().unwrap(), count]);
    let run = trace(&all, "");
    assert_eq!(run.code, Some(0), "{run}");
    run.json()
}

/// (size, site function) of each object line, sorted.
fn objects(lines: &[Value]) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = lines
        .iter()
        .map(|o| {
            assert_eq!(o["type"], "object", "{o}");
            let site = o["site"].as_str().unwrap();
            (
                o["size"].as_u64().unwrap(),
                site.split(' ').next().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Blocks expected: (size, site function, how many).
type Spec<'a> = &'a [(u64, &'a str, usize)];

fn expect(spec: Spec) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = spec
        .iter()
        .flat_map(|(size, f, n)| std::iter::repeat_n((*size, f.to_string()), *n))
        .collect();
    v.sort();
    v
}

#[test]
fn objects_lists_every_live_block_with_size_age_thread_and_stack() {
    if !ebpf_available("objects_lists_every_live_block_with_size_age_thread_and_stack") {
        return;
    }
    let lines = ages(&["objects"], "10");
    assert_eq!(
        objects(&lines),
        expect(&[(100, "old", 10), (200, "young", 5), (4000, "young", 3)])
    );
    let want = expected_rows(&ledger("ages"));
    for o in &lines {
        assert!(want.contains_key(o["site"].as_str().unwrap()), "{o}");
        assert!(o["addr"].as_str().unwrap().starts_with("0x"), "{o}");
        assert!(o["tid"].as_u64().unwrap() > 0, "{o}");
        assert_eq!(o["stack"][0], o["site"], "{o}");
        assert!(
            o["stack"][1].as_str().unwrap().starts_with("main (ages.c:"),
            "{o}"
        );
        let age = o["age_ms"].as_u64().unwrap();
        // The workload sleeps 2 s between the two batches. Ages are lower bounds short by
        // less than one kernel tick (10 ms at most, at HZ=100).
        if o["size"] == 100 {
            assert!(age >= 2000 - 10, "{o}");
        } else {
            assert!(age < 2000, "{o}");
        }
    }
}

#[test]
fn filters_select_by_frame_size_and_age() {
    if !ebpf_available("filters_select_by_frame_size_and_age") {
        return;
    }
    let cases: [(&[&str], Spec); 6] = [
        (
            &["--min-size", "150"],
            &[(200, "young", 5), (4000, "young", 3)],
        ),
        (&["--max-size", "150"], &[(100, "old", 10)]),
        (
            &["--min-size", "150", "--max-size", "1K"],
            &[(200, "young", 5)],
        ),
        (
            &["--site", "^young"],
            &[(200, "young", 5), (4000, "young", 3)],
        ),
        (&["--older-than", "1.5"], &[(100, "old", 10)]),
        // Any frame matches: every block has main below it.
        (
            &["--site", "^main ", "--max-size", "200"],
            &[(100, "old", 10), (200, "young", 5)],
        ),
    ];
    for (flags, want) in cases {
        let mut args = vec!["objects"];
        args.extend_from_slice(flags);
        assert_eq!(objects(&ages(&args, "10")), expect(want), "{flags:?}");
    }
    // The filters apply to summaries too.
    let out = ages(&["--site", "^young", "--min-size", "1000"], "10");
    let s = out.last().unwrap();
    assert_eq!(
        rows(s).into_values().collect::<Vec<_>>(),
        vec![(3, 12000)],
        "{s}"
    );
}

fn save(dir: &Path, name: &str, count: &str) -> (PathBuf, Value) {
    let file = dir.join(name);
    let out = ages(&["--save", file.to_str().unwrap()], count);
    (file, out.last().unwrap().clone())
}

#[test]
fn snapshots_round_trip_and_diff_offline() {
    if !ebpf_available("snapshots_round_trip_and_diff_offline") {
        return;
    }
    let dir = scratch("snapshots");
    let (a, live_a) = save(&dir, "a.muppy", "10");
    let (b, _) = save(&dir, "b.muppy", "25");
    // The summary of a saved file equals the live one.
    let r = trace(&["summary", a.to_str().unwrap(), "--format", "json"], "");
    assert_eq!(r.code, Some(0), "{r}");
    let saved = r.summary();
    for k in [
        "rows",
        "total",
        "lost_events",
        "unknown_frees",
        "pid",
        "age_resolution_ns",
    ] {
        assert_eq!(saved[k], live_a[k], "{k}: {r}");
    }
    // Ages are to one kernel tick, 1/CONFIG_HZ s.
    let tick = live_a["age_resolution_ns"].as_u64().unwrap();
    assert!(
        [100, 250, 300, 1000]
            .iter()
            .any(|hz| tick == 1_000_000_000 / hz),
        "{live_a}"
    );
    // Also as a table, and grouped by stack.
    let r = trace(&["summary", a.to_str().unwrap(), "--group-by", "stack"], "");
    assert!(r.stdout.contains("main (ages.c:"), "{r}");
    // b grew by exactly 15 old blocks of 100 bytes and nothing else.
    let d = trace(
        &[
            "diff",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--format",
            "json",
        ],
        "",
    );
    assert_eq!(d.code, Some(0), "{d}");
    let v = &d.json()[0];
    assert_eq!(v["type"], "diff");
    let old_site = &ledger("ages")[0].site;
    assert_eq!(v["rows"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(v["rows"][0]["site"], old_site.as_str());
    assert_eq!(
        (
            v["rows"][0]["objects"].as_i64(),
            v["rows"][0]["bytes"].as_i64()
        ),
        (Some(15), Some(1500))
    );
    let d = trace(&["diff", a.to_str().unwrap(), b.to_str().unwrap()], "");
    assert!(
        d.stdout
            .lines()
            .nth(2)
            .unwrap()
            .contains("|       +15 |   +1.46 KB"),
        "{d}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn broken_snapshots_give_one_line_errors() {
    // No eBPF needed: the files are made here.
    let dir = scratch("broken");
    let good = {
        // A real snapshot needs a trace; without root, build the cases from a minimal header.
        let mut v = b"MUPPYSNP".to_vec();
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&1000u64.to_le_bytes());
        v
    };
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "text.muppy",
            b"hello, world\n".to_vec(),
            "not a muppy snapshot",
        ),
        ("short.muppy", good.clone(), "truncated snapshot"),
        (
            "v9.muppy",
            {
                let mut v = good.clone();
                v[8] = 9;
                v
            },
            "version 9",
        ),
        (
            "crc.muppy",
            {
                let mut v = good[..12].to_vec();
                v.extend_from_slice(&2u64.to_le_bytes());
                v.extend_from_slice(&[1, 2, 0, 0, 0, 0]);
                v
            },
            "corrupt snapshot (checksum mismatch)",
        ),
    ];
    for (name, bytes, msg) in cases {
        let f = dir.join(name);
        std::fs::write(&f, bytes).unwrap();
        for args in [
            vec!["summary", f.to_str().unwrap()],
            vec!["diff", f.to_str().unwrap(), f.to_str().unwrap()],
        ] {
            let r = trace(&args, "");
            assert_eq!(r.code, Some(2), "{r}");
            assert_eq!(r.stderr.lines().count(), 1, "{r}");
            assert!(r.stderr.contains(msg) && r.stderr.contains(name), "{r}");
            assert!(r.stdout.is_empty(), "{r}");
        }
    }
    let r = trace(
        &["summary", dir.join("missing.muppy").to_str().unwrap()],
        "",
    );
    assert_eq!(r.code, Some(2), "{r}");
    assert_eq!(r.stderr.lines().count(), 1, "{r}");
    let _ = std::fs::remove_dir_all(&dir);
}
