//! `cargo xtask bench`: what tracing costs, measured against what it cannot avoid.
//!
//! - Overhead, on the leaky-style malloc/free loop (`bench_loop`, one thread), interleaved
//!   configurations, medians of several runs: plain; the floor (empty programs at muppy's
//!   chosen probe points: the traps alone); muppy with stacks off and on; muppy sampling; and,
//!   where installed, bpftrace with empty probes at the +0 entries and heaptrack.
//! - Throughput: two threads allocating flat out for about five seconds, on the default ring;
//!   and 4, 8 and 16 threads (more than the CPUs) replacing blocks flat out, with what was lost.
//! - Exit: how long `muppy-trace -- true` takes from start to exit.
//! - Memory: tracer memory per live block with 10 million held, and its base resident size.
//! - Idle: the tracer's CPU while its target does nothing.
//! - Analysis: summary, diff, tree and snapshots of 10 million blocks (the library alone).
//! - Stacks: see [`crate::bench_stacks`].
//! - Leak checks: see [`crate::bench_leaks`].

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{build, compile_c, output, root};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn field(text: &str, key: &str) -> Option<f64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.exists())
}

/// The libc `prog` links, from the dynamic loader's own listing.
fn libc_of(prog: &Path) -> anyhow::Result<String> {
    let out = output(Command::new("ldd").arg(prog))?;
    out.lines()
        .filter_map(|l| l.split_once("=>"))
        .filter_map(|(_, r)| r.split_whitespace().next())
        .find(|p| p.ends_with("/libc.so.6"))
        .map(str::to_string)
        .context("bench_loop links no libc.so.6")
}

/// How one configuration runs the loop.
enum Runner {
    Plain,
    Muppy(&'static [&'static str]),
    Bpftrace(String),
    Heaptrack(PathBuf),
}

struct Config {
    name: &'static str,
    key: &'static str,
    runner: Runner,
}

/// One run: ns per call, and for muppy the tracer's figures.
#[derive(Default)]
struct Sample {
    ns: f64,
    events_per_second: f64,
    lost: u64,
}

/// Waits (up to 30 s) until no muppy-trace is left from an earlier run. An exiting tracer's
/// probes are removed in a background child for a few seconds, and while the kernel removes
/// uprobes every other uprobe hit takes a slower path: a run started meanwhile measured up to
/// 14% slower, which biased whichever configuration came next.
pub(crate) fn settle() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let tracer_alive = || {
        std::fs::read_dir("/proc").is_ok_and(|d| {
            d.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "muppy-trace")
            })
        })
    };
    while tracer_alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn run_loop(trace: &Path, prog: &Path, c: &Config, args: &[&str]) -> anyhow::Result<Sample> {
    settle();
    let out = match &c.runner {
        Runner::Plain => output(Command::new(prog).args(args))?,
        Runner::Muppy(extra) => output(
            Command::new(trace)
                .args(*extra)
                .args(["--format", "json", "--"])
                .arg(prog)
                .args(args),
        )?,
        Runner::Bpftrace(script) => output(
            Command::new("bpftrace")
                .args(["-e", script, "-c"])
                .arg(format!("{} {}", prog.display(), args.join(" "))),
        )?,
        Runner::Heaptrack(dir) => output(
            Command::new("heaptrack")
                .arg("-o")
                .arg(dir.join("bench"))
                .arg(prog)
                .args(args),
        )?,
    };
    let line = out
        .lines()
        .find(|l| l.contains("ns_per_call="))
        .with_context(|| format!("{}: no bench_loop line in {out}", c.name))?;
    let mut s = Sample {
        ns: field(line, "ns_per_call").context("ns_per_call")?,
        ..Sample::default()
    };
    if matches!(c.runner, Runner::Muppy(_)) {
        let summary: Value = serde_json::from_str(out.lines().last().context("no summary")?)?;
        s.events_per_second =
            summary["events"].as_f64().unwrap_or(0.0) / field(line, "seconds").unwrap_or(1.0);
        s.lost = summary["lost_events"].as_u64().unwrap_or(0);
    }
    Ok(s)
}

fn traced_summary(trace: &Path, args: &[&str], cmd: &[&str]) -> anyhow::Result<Value> {
    settle();
    let out = output(
        Command::new(trace)
            .args(args)
            .args(["--format", "json", "--"])
            .args(cmd),
    )?;
    Ok(serde_json::from_str(
        out.lines().last().context("no summary")?,
    )?)
}

fn kb(s: &Value, k: &str) -> f64 {
    s[k].as_f64().unwrap_or(0.0)
}

/// Runs every benchmark and prints the table (and with `json`, one final JSON line).
pub fn bench(json: bool, runs: usize, live: u64) -> anyhow::Result<()> {
    let trace = build()?;
    // The comparison tools, from the distribution, where it can install them; the rows of a
    // tool that is still missing are left out.
    if which("bpftrace").is_none() || which("heaptrack").is_none() {
        let ok = Command::new("apt-get")
            .args(["install", "-y", "bpftrace", "heaptrack"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("bench: could not install bpftrace and heaptrack; their rows are left out");
        }
    }
    let prog = compile_c("tests/workloads/bench_loop.c", "bench/bench_loop")?;
    let hold = compile_c("tests/workloads/hold.c", "bench/hold")?;
    let busy = compile_c("tests/workloads/busy.c", "bench/busy")?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let libc = libc_of(&prog)?;
    let runs = runs.max(1);
    let pairs = "500000";
    let mut configs = vec![
        Config {
            name: "plain",
            key: "plain",
            runner: Runner::Plain,
        },
        Config {
            name: "floor (empty probes)",
            key: "floor",
            runner: Runner::Muppy(&["--empty-probes", "--no-stacks"]),
        },
        Config {
            name: "muppy, stacks off",
            key: "muppy_no_stacks",
            runner: Runner::Muppy(&["--no-stacks"]),
        },
        Config {
            name: "muppy, stacks on",
            key: "muppy_stacks",
            runner: Runner::Muppy(&[]),
        },
        Config {
            name: "muppy, --sample-bytes 4096",
            key: "muppy_sampled",
            runner: Runner::Muppy(&["--sample-bytes", "4096"]),
        },
    ];
    if which("bpftrace").is_some() {
        let probes: Vec<String> = [
            "malloc",
            "calloc",
            "realloc",
            "reallocarray",
            "posix_memalign",
            "aligned_alloc",
            "memalign",
            "valloc",
            "pvalloc",
            "free",
        ]
        .iter()
        .map(|f| format!("uprobe:{libc}:{f}"))
        .collect();
        configs.push(Config {
            name: "bpftrace, empty, +0",
            key: "bpftrace",
            runner: Runner::Bpftrace(format!("{} {{}}", probes.join(","))),
        });
    }
    let heaptrack_dir = root().join("target/bench/heaptrack");
    if which("heaptrack").is_some() {
        std::fs::create_dir_all(&heaptrack_dir)?;
        configs.push(Config {
            name: "heaptrack",
            key: "heaptrack",
            runner: Runner::Heaptrack(heaptrack_dir.clone()),
        });
    }
    // Interleave the configurations so drift hits all alike.
    let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (c, v) in configs.iter().zip(&mut samples) {
            v.push(run_loop(&trace, &prog, c, &["1", pairs])?);
        }
    }
    let _ = std::fs::remove_dir_all(&heaptrack_dir);
    let ns: Vec<f64> = samples
        .iter()
        .map(|v| median(v.iter().map(|s| s.ns).collect()))
        .collect();
    let at = |key: &str| configs.iter().position(|c| c.key == key).map(|i| ns[i]);
    let plain = at("plain").unwrap_or(1.0);
    let floor = at("floor").unwrap_or(1.0);
    let mut figures = json!({"runs": runs, "pairs": pairs.parse::<u64>()?});
    println!(
        "malloc/free loop (bench_loop), {pairs} pairs, 1 thread; median of {runs} interleaved runs"
    );
    println!(
        "{:<28} {:>10} {:>9} {:>9} {:>12} {:>6}",
        "configuration", "ns/call", "x plain", "x floor", "events/s", "lost"
    );
    for ((c, v), n) in configs.iter().zip(&samples).zip(&ns) {
        let eps = median(v.iter().map(|s| s.events_per_second).collect());
        let lost: u64 = v.iter().map(|s| s.lost).sum();
        let muppy = matches!(c.runner, Runner::Muppy(_));
        println!(
            "{:<28} {n:>10.1} {:>9.2} {:>9} {:>12} {:>6}",
            c.name,
            n / plain,
            if c.key == "plain" {
                String::new()
            } else {
                format!("{:.2}", n / floor)
            },
            if muppy {
                format!("{eps:.0}")
            } else {
                String::new()
            },
            if muppy {
                lost.to_string()
            } else {
                String::new()
            },
        );
        figures[c.key] = json!({"ns_per_call": n, "x_plain": n / plain, "x_floor": n / floor});
        if muppy {
            figures[c.key]["events_per_second"] = eps.into();
            figures[c.key]["lost_events"] = lost.into();
        }
    }
    if let (Some(m), Some(b)) = (at("muppy_no_stacks"), at("bpftrace")) {
        println!(
            "muppy (stacks off) / bpftrace empty +0 probes: {:.2}",
            m / b
        );
        figures["muppy_x_bpftrace"] = (m / b).into();
    }

    // Throughput: two threads flat out for about five seconds, several times; the highest rate
    // of a run that lost nothing, and the median.
    let burst_config = Config {
        name: "burst",
        key: "burst",
        runner: Runner::Muppy(&["--no-stacks"]),
    };
    let bursts: Vec<Sample> = (0..runs.min(3))
        .map(|_| run_loop(&trace, &prog, &burst_config, &["2", "2500000"]))
        .collect::<anyhow::Result<_>>()?;
    let best = bursts
        .iter()
        .filter(|b| b.lost == 0)
        .map(|b| b.events_per_second)
        .fold(0.0, f64::max);
    let median_rate = median(bursts.iter().map(|b| b.events_per_second).collect());
    let lost: u64 = bursts.iter().map(|b| b.lost).sum();
    println!(
        "burst, 2 threads, default ring, {} runs: highest rate with 0 lost {best:.0} events/s; median {median_rate:.0}; lost in all runs {lost}",
        bursts.len()
    );
    figures["burst"] = json!({"threads": 2, "runs": bursts.len(),
        "highest_events_per_second_with_0_lost": best, "median_events_per_second": median_rate,
        "lost_events": lost});

    // More busy threads than CPUs: each replaces its blocks flat out for five seconds.
    let busy_s = busy.display().to_string();
    let mut crowd = Vec::new();
    for threads in [4, 8, 16] {
        let t = threads.to_string();
        let v = traced_summary(&trace, &["--no-stacks"], &[&busy_s, &t, "5"])?;
        let eps = v["events"].as_f64().unwrap_or(0.0) / 5.0;
        let lost = v["lost_events"].as_u64().unwrap_or(0);
        println!("crowd, {threads} threads on {cpus} CPUs, 5 s: {eps:.0} events/s, lost {lost}");
        crowd.push(json!({"threads": threads, "events_per_second": eps, "lost_events": lost}));
    }
    figures["crowd"] = json!({"cpus": cpus, "runs": crowd});

    // Start to exit of a command that is gone at once: what a user waits for, including
    // loading the probes; their removal (≈0.1 s per probe) is left to a background child.
    let exit_ms: Vec<f64> = (0..runs)
        .map(|_| {
            settle();
            let t = std::time::Instant::now();
            output(Command::new(&trace).args(["--", "true"]))?;
            Ok(t.elapsed().as_secs_f64() * 1000.0)
        })
        .collect::<anyhow::Result<_>>()?;
    let exit_median = median(exit_ms.clone());
    println!("muppy-trace -- true, start to exit: median {exit_median:.0} ms of {runs} runs");
    figures["exit_ms"] = json!({"median": exit_median, "runs": exit_ms});

    // Memory: tracer growth per live block, and its size with next to nothing live.
    let hold_s = hold.display().to_string();
    let base = traced_summary(&trace, &[], &[&hold_s, "1"])?;
    let full = traced_summary(&trace, &[], &[&hold_s, &live.to_string()])?;
    let held = full["total"]["objects"].as_u64().unwrap_or(0);
    let per_block = (kb(&full, "tracer_peak_rss_kb") - kb(&base, "tracer_peak_rss_kb")) * 1024.0
        / held.max(1) as f64;
    println!(
        "memory: {held} live blocks held: peak {:.0} KiB, {per_block:.1} B per live block ({} lost); base: {:.0} KiB resident ({:.0} KiB peak)",
        kb(&full, "tracer_peak_rss_kb"),
        full["lost_events"],
        kb(&base, "tracer_rss_kb"),
        kb(&base, "tracer_peak_rss_kb"),
    );
    figures["memory"] = json!({"live_blocks": held, "live_peak_rss_kb": kb(&full, "tracer_peak_rss_kb"),
        "bytes_per_live_block": per_block, "lost_events": full["lost_events"],
        "base_rss_kb": kb(&base, "tracer_rss_kb"), "base_peak_rss_kb": kb(&base, "tracer_peak_rss_kb")});

    // Idle: the CPU of six seconds of tracing a sleeping process, less that of one second
    // (start-up, symbolization), over the five seconds between.
    let cpu = |secs: &str| -> anyhow::Result<f64> {
        Ok(
            traced_summary(&trace, &[], &["sleep", secs])?["tracer_cpu_ms"]
                .as_f64()
                .unwrap_or(0.0),
        )
    };
    let idle = ((cpu("6")? - cpu("1")?) / 5000.0 * 100.0).max(0.0);
    println!("idle target: tracer CPU {idle:.2}%");
    figures["idle_cpu_percent"] = idle.into();

    // Analysis: the library alone, on 10 million blocks.
    let out = output(
        Command::new("cargo")
            .current_dir(root())
            .args([
                "bench",
                "--quiet",
                "-p",
                "muppy-user",
                "--bench",
                "analysis",
                "--",
            ])
            .arg(live.to_string()),
    )?;
    let analysis: Value = serde_json::from_str(out.lines().last().context("no analysis line")?)?;
    println!(
        "analysis of {} blocks: summary {:.0} ms, summary+diff {:.0} ms, tree {:.0} ms, snapshot save {:.0} ms / load {:.0} ms",
        analysis["blocks"],
        analysis["summary_site_ms"].as_f64().unwrap_or(0.0),
        analysis["summary_and_diff_ms"].as_f64().unwrap_or(0.0),
        analysis["tree_ms"].as_f64().unwrap_or(0.0),
        analysis["snapshot_save_ms"].as_f64().unwrap_or(0.0),
        analysis["snapshot_load_ms"].as_f64().unwrap_or(0.0),
    );
    figures["analysis"] = analysis;

    // Stacks: what each way of taking them costs (issue 13).
    settle();
    figures["stacks"] = crate::bench_stacks::bench(&trace, runs)?;

    // Leak checks: a 1 GiB heap, the same under Valgrind, a lost list of a million nodes.
    settle();
    figures["leaks"] = crate::bench_leaks::bench(&trace)?;

    // The daemon: system-wide on a busy machine, and its API under load (issue 15).
    settle();
    figures["daemon"] = crate::bench_daemon::bench(&trace)?;
    if json {
        println!("{figures}");
    }
    Ok(())
}
