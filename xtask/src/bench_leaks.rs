//! `cargo xtask bench`, leak checks: the pause of a check of a 1 GiB heap of a million live
//! blocks, Valgrind's `vgdb leak_check` of the same heap side by side, and a lost list of a
//! million nodes (one definitely lost, the rest indirectly: no recursion runs out of stack).
//! The classifier alone on ten million blocks is timed by `muppy-core`'s `leak_bench` example.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{compile_c, output, root};

/// `muppy-trace leaks -- bigheap ARGS`, bigheap exiting a while after it is ready: the check
/// at its exit, as a JSON line.
fn muppy_check(trace: &Path, bigheap: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let out = output(
        Command::new(trace)
            .args(["leaks", "--format", "json", "--"])
            .arg(bigheap)
            .args(args),
    )?;
    if !out.lines().any(|l| l.starts_with("ready ")) {
        bail!("bigheap {args:?} never said it was ready: {out}");
    }
    let line = out
        .lines()
        .find(|l| l.contains("\"type\":\"leaks\""))
        .with_context(|| format!("no leaks line: {out}"))?;
    Ok(serde_json::from_str(line)?)
}

/// Runs bigheap under Valgrind, waits until it is ready, and times `vgdb leak_check summary`.
fn valgrind_check(bigheap: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let prefix = root().join("target/bench/vgdb");
    std::fs::create_dir_all(&prefix)?;
    let prefix = format!("--vgdb-prefix={}", prefix.join("pipe").display());
    let mut vg = Command::new("valgrind")
        .args(["--vgdb=yes", &prefix, "--leak-check-heuristics=none"])
        .arg(bigheap)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running valgrind")?;
    let pid = vg.id();
    let started = Instant::now();
    let mut lines = BufReader::new(vg.stdout.take().context("valgrind's stdout")?).lines();
    let ready = lines.next().transpose()?.unwrap_or_default();
    let build_s = started.elapsed().as_secs_f64();
    let result = (|| {
        if !ready.starts_with("ready ") {
            bail!("bigheap under valgrind said {ready:?}");
        }
        let t = Instant::now();
        let text = output(Command::new("vgdb").args([
            &prefix,
            &format!("--pid={pid}"),
            "leak_check",
            "summary",
        ]))?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        // `==PID==    definitely lost: 10,240 (+10,240) bytes in 10 (+10) blocks`, per kind.
        let figure = |kind: &str| -> Option<(u64, u64)> {
            let line = text.lines().find(|l| l.contains(&format!("{kind}: ")))?;
            let nums: Vec<u64> = line
                .split_whitespace()
                .filter_map(|w| w.replace(',', "").parse().ok())
                .collect();
            Some((*nums.get(1)?, *nums.first()?))
        };
        let kinds = [
            "definitely lost",
            "indirectly lost",
            "possibly lost",
            "still reachable",
        ];
        let totals: serde_json::Map<String, Value> = kinds
            .iter()
            .filter_map(|k| {
                let (objects, bytes) = figure(k)?;
                Some((
                    k.replace(' ', "_"),
                    json!({"objects": objects, "bytes": bytes}),
                ))
            })
            .collect();
        Ok(json!({"vgdb_leak_check_ms": ms, "build_s": build_s, "totals": totals}))
    })();
    let _ = vg.kill();
    let _ = vg.wait();
    result
}

/// The leak-check figures.
pub fn bench(trace: &Path) -> anyhow::Result<Value> {
    let bigheap = &compile_c("tests/workloads/bigheap.c", "bench/bigheap")?;
    // 1 GiB: a million blocks of 1 KiB, lists of 1000, one list in 100 dropped.
    let big = muppy_check(trace, bigheap, &["1000000", "1024", "1000", "100", "1"])?;
    let pause = big["pause_ms"].as_f64().unwrap_or(f64::NAN);
    let total_ms = big["check_ms"].as_f64().unwrap_or(f64::NAN);
    println!(
        "leak check of 1 GiB in {} blocks: pause {pause:.0} ms, whole check {total_ms:.0} ms, {} MB scanned; definitely lost {} blocks ({} B indirect)",
        big["totals"]["definitely_lost"]["objects"]
            .as_u64()
            .unwrap_or(0)
            + big["totals"]["indirectly_lost"]["objects"]
                .as_u64()
                .unwrap_or(0)
            + big["totals"]["reachable"]["objects"].as_u64().unwrap_or(0),
        big["scanned_bytes"].as_u64().unwrap_or(0) >> 20,
        big["totals"]["definitely_lost"]["objects"],
        big["rows"][0]["indirect_bytes"],
    );
    let vg = valgrind_check(bigheap, &["1000000", "1024"])?;
    let vg_ms = vg["vgdb_leak_check_ms"].as_f64().unwrap_or(f64::NAN);
    // Valgrind's verdicts on the same heap must be muppy's, kind by kind.
    for (ours, theirs) in [
        ("definitely_lost", "definitely_lost"),
        ("indirectly_lost", "indirectly_lost"),
        ("possibly_lost", "possibly_lost"),
        ("reachable", "still_reachable"),
    ] {
        if big["totals"][ours] != vg["totals"][theirs] {
            bail!(
                "{ours}: muppy {} but valgrind {} on the same heap",
                big["totals"][ours],
                vg["totals"][theirs]
            );
        }
    }
    println!("valgrind's verdicts on the same heap: the same, kind by kind");
    println!(
        "the same heap under valgrind: vgdb leak_check {vg_ms:.0} ms ({:.1}x muppy's whole check, {:.1}x its pause); building it took {:.0} s under valgrind",
        vg_ms / total_ms,
        vg_ms / pause,
        vg["build_s"].as_f64().unwrap_or(0.0)
    );
    // One list of a million nodes, its head dropped.
    let list = muppy_check(trace, bigheap, &["1000000", "16", "1000000", "1", "1"])?;
    let lost = (
        list["totals"]["definitely_lost"]["objects"].as_u64(),
        list["totals"]["indirectly_lost"]["objects"].as_u64(),
    );
    println!(
        "lost list of 1,000,000 nodes: {} definitely lost, {} indirectly lost; pause {:.0} ms, whole check {:.0} ms",
        lost.0.unwrap_or(0),
        lost.1.unwrap_or(0),
        list["pause_ms"].as_f64().unwrap_or(f64::NAN),
        list["check_ms"].as_f64().unwrap_or(f64::NAN),
    );
    if lost != (Some(1), Some(999_999)) {
        bail!("the lost list should be 1 definitely and 999,999 indirectly lost: {list}");
    }
    // The classifier alone, on ten million blocks: nodes in allocation order (as a heap
    // mostly is), and every pointer to a random place (the cache's worst case).
    let mut classify = serde_json::Map::new();
    for layout in ["local", "random"] {
        let out = output(Command::new("cargo").current_dir(root()).args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "muppy-core",
            "--example",
            "leak_bench",
            "--",
            "10000000",
            layout,
        ]))?;
        let v: Value = serde_json::from_str(out.lines().last().context("no leak_bench line")?)?;
        println!("classifier alone, 10 M blocks, {layout} layout: {v}");
        classify.insert(layout.into(), v);
    }
    Ok(json!({
        "big": {"pause_ms": pause, "check_ms": total_ms, "scanned_bytes": big["scanned_bytes"], "totals": big["totals"]},
        "valgrind": vg,
        "lost_list": {"pause_ms": list["pause_ms"], "check_ms": list["check_ms"], "totals": list["totals"]},
        "classify": classify,
    }))
}
