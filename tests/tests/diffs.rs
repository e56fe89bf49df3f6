//! Periodic diffs: added up, they must equal the live state after each phase of the workload.

use std::{collections::BTreeMap, io::Write};

use muppy_tests::{Lines, ebpf_available, rows, spawn_trace, workload};
use serde_json::Value;

fn add(acc: &mut BTreeMap<String, (i64, i64)>, diff: &Value) {
    for r in diff["rows"].as_array().unwrap() {
        let site = r["site"].as_str().unwrap();
        let function = site.split([' ', '+']).next().unwrap().to_string();
        let slot = acc.entry(function).or_default();
        slot.0 += r["objects"].as_i64().unwrap();
        slot.1 += r["bytes"].as_i64().unwrap();
    }
    acc.retain(|_, v| *v != (0, 0));
}

/// Reads diffs until two in a row arrive after `after` lines and the last one is empty:
/// the state has settled.
fn settle(out: &Lines, acc: &mut BTreeMap<String, (i64, i64)>) {
    let mut empty_in_a_row = 0;
    while empty_in_a_row < 2 {
        let line = out.wait_for("\"type\":\"diff\"", 60).pop().unwrap();
        let d: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(d["type"], "diff");
        add(acc, &d);
        empty_in_a_row = if d["rows"].as_array().unwrap().is_empty() {
            empty_in_a_row + 1
        } else {
            0
        };
    }
}

#[test]
fn periodic_diffs_add_up_to_each_phase() {
    if !ebpf_available("periodic_diffs_add_up_to_each_phase") {
        return;
    }
    let bin = workload("phases");
    let mut tracer = spawn_trace(&[
        "--format",
        "json",
        "--interval",
        "0.2",
        "--",
        bin.to_str().unwrap(),
    ]);
    let out = Lines::new(tracer.stdout.take().unwrap());
    let err = Lines::new(tracer.stderr.take().unwrap());
    let mut stdin = tracer.stdin.take().unwrap();
    let mut acc = BTreeMap::new();

    stdin.write_all(b"1\n").unwrap();
    err.wait_for("phase1 done", 60);
    settle(&out, &mut acc);
    assert_eq!(
        acc,
        BTreeMap::from([("phase_grow".to_string(), (10, 1000))])
    );

    stdin.write_all(b"2\n").unwrap();
    err.wait_for("phase2 done", 60);
    settle(&out, &mut acc);
    assert_eq!(
        acc,
        BTreeMap::from([
            ("phase_grow".to_string(), (6, 600)),
            ("phase_more".to_string(), (3, 6144))
        ])
    );

    stdin.write_all(b"3\n").unwrap();
    let rest = out.rest(60);
    assert_eq!(tracer.wait().unwrap().code(), Some(0));
    let s: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    let r = rows(&s);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(
        r.values().copied().collect::<Vec<_>>(),
        vec![(6, 600), (3, 6144)]
    );
}
