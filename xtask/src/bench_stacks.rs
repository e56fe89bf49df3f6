//! `cargo xtask bench`, stacks (issue 13): what each way of taking allocation stacks costs.
//!
//! - Overhead on the malloc/free loop (`bench_loop 1 N`, built with frame pointers like the
//!   other workloads), the configurations alternated round after round, medians: the floor
//!   (empty probes), muppy without stacks (all, and sampled at 512K), `--unwind fp`,
//!   `--unwind auto` (the default), `--unwind dwarf` on every allocation and sampled at 512K.
//!   The target runs on CPU 1, the tracer on CPU 0 (`taskset`), so the reader never takes the
//!   loop's CPU. Every run's `lost_events` and `lost_stacks`, and the reader thread's CPU
//!   (`muppy-ring`, from /proc/PID/task/TID/stat while it runs).
//! - One more round with `--verbose`, for the kernel's own run time of each probe program (the
//!   timed rounds run without it: timing the programs costs every run a little) and the
//!   reader's `stacks:` line (unwinding, ns per stack and per frame).
//! - Unwinding a real stack: Debian's python3.11 (built without frame pointers) running an
//!   allocation-heavy script under `--unwind dwarf`, and the loop built `-O2
//!   -fomit-frame-pointer`.
//! - A burst: two threads flat out under `--unwind dwarf`, unpinned, on the default ring, and
//!   on 64 MiB if it lost any (so the loop above, if `--unwind dwarf` lost any there).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{compile_c, compile_c_flags, output, root};

/// Pairs of malloc/free per timed run, one thread.
const PAIRS: &str = "300000";

/// Python, allocating blocks above pymalloc's 512 bytes (so through malloc): dicts, lists,
/// bytes and strings, one in 50 kept, built in an object's `__init__` called from `map`, as a
/// request handler might (C frames: the eval loop, `map`, the type's call, the eval loop).
const PY_SCRIPT: &str = r#"
import sys
def leaf(i, keep):
    d = {j: i for j in range(48)}
    l = [i] * 100
    b = bytes(600 + i % 400)
    s = "x" * (700 + i % 300)
    if i % 50 == 0:
        keep.append((d, l, b, s))
class Request:
    def __init__(self, i, keep):
        leaf(i, keep)
def handle(n, keep):
    return list(map(lambda i: Request(i, keep), range(n)))
def top(n):
    keep = []
    handle(n, keep)
    return len(keep)
print("kept", top(int(sys.argv[1])))
"#;

/// One muppy configuration of the alternation.
struct Config {
    name: &'static str,
    key: &'static str,
    args: &'static [&'static str],
}

const CONFIGS: [Config; 7] = [
    Config {
        name: "floor (empty probes)",
        key: "floor",
        args: &["--empty-probes", "--no-stacks"],
    },
    Config {
        name: "--no-stacks",
        key: "no_stacks",
        args: &["--no-stacks"],
    },
    Config {
        name: "--no-stacks --sample-bytes 512K",
        key: "no_stacks_512k",
        args: &["--no-stacks", "--sample-bytes", "512K"],
    },
    Config {
        name: "--unwind fp",
        key: "fp",
        args: &["--unwind", "fp"],
    },
    Config {
        name: "--unwind auto (default)",
        key: "auto",
        args: &["--unwind", "auto"],
    },
    Config {
        name: "--unwind dwarf",
        key: "dwarf",
        args: &["--unwind", "dwarf"],
    },
    Config {
        name: "--unwind dwarf --sample-bytes 512K",
        key: "dwarf_512k",
        args: &["--unwind", "dwarf", "--sample-bytes", "512K"],
    },
];

/// The reader's `stacks:` line.
#[derive(Clone, Copy, Default)]
struct StackCost {
    copies: f64,
    bytes: f64,
    ms: f64,
    ns_each: f64,
    ns_per_frame: f64,
    paths: f64,
}

impl StackCost {
    /// `stacks: C copies (B bytes) unwound in T ms, E ns each, F ns a frame; P distinct call
    /// paths`.
    fn parse(line: &str) -> Option<StackCost> {
        let nums: Vec<f64> = line
            .split(|c: char| c.is_whitespace() || c == '(' || c == ',' || c == ';')
            .filter_map(|w| w.parse().ok())
            .collect();
        match nums[..] {
            [copies, bytes, ms, ns_each, ns_per_frame, paths] => Some(StackCost {
                copies,
                bytes,
                ms,
                ns_each,
                ns_per_frame,
                paths,
            }),
            _ => None,
        }
    }

    fn json(&self) -> Value {
        json!({"copies": self.copies, "bytes": self.bytes, "unwind_ms": self.ms,
            "ns_each": self.ns_each, "ns_per_frame": self.ns_per_frame,
            "frames_per_stack": self.frames(), "distinct_paths": self.paths})
    }

    fn frames(&self) -> f64 {
        if self.ns_per_frame > 0.0 {
            self.ns_each / self.ns_per_frame
        } else {
            0.0
        }
    }
}

/// One traced run.
#[derive(Default)]
struct Run {
    /// From bench_loop's own line (0 for other commands).
    ns_per_call: f64,
    seconds: f64,
    calls: f64,
    /// The target's events.
    events: f64,
    lost_events: u64,
    lost_stacks: u64,
    tracer_cpu_ms: f64,
    /// CPU of the reader thread, `muppy-ring` (to the kernel's tick).
    reader_cpu_ms: f64,
    /// (program, runs, ns each), with `--verbose`.
    programs: Vec<(String, u64, f64)>,
    stacks: Option<StackCost>,
    /// `--unwind auto`'s decisions, with `--verbose`: `stacks in PATH: HOW (...)`.
    decisions: Vec<String>,
}

impl Run {
    /// The reader thread's CPU per event of the target, in ns.
    fn reader_ns_per_event(&self) -> f64 {
        self.reader_cpu_ms * 1e6 / self.events.max(1.0)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn clock_ticks() -> f64 {
    output(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields of /proc/PATH/stat after the command name: state is [0], pgrp [2], utime [11],
/// stime [12].
fn stat_fields(path: &Path) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(
        rest.split_whitespace()
            .map(|w| w.parse().unwrap_or(0))
            .collect(),
    )
}

/// The CPU ticks of process `pid`'s thread named `muppy-ring`, if it has one now.
fn reader_ticks(pid: u32) -> Option<u64> {
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        if std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "muppy-ring") {
            let f = stat_fields(&e.path().join("stat"))?;
            return Some(f.get(11)? + f.get(12)?);
        }
    }
    None
}

/// Waits (up to 30 s) until no process is left in process group `pgid`: a tracer's probes are
/// removed after it exits by a child it forked (same group), and while the kernel removes
/// uprobes every other uprobe hit takes a slower path. Other engineers' tracers on the
/// machine are not waited for.
fn settle_group(pgid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let alive = || {
        std::fs::read_dir("/proc").is_ok_and(|d| {
            d.flatten().any(|e| {
                e.file_name().to_string_lossy().parse::<u32>().is_ok()
                    && stat_fields(&e.path().join("stat"))
                        .is_some_and(|f| f.get(2).is_some_and(|&g| g == u64::from(pgid)))
            })
        })
    };
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `trace ARGS --format json -- CMD`, the tracer pinned to CPU 0 and the command to CPU 1
/// when `pin`, watching the reader thread's CPU while it runs; then waits for its probes to
/// be gone.
fn traced(trace: &Path, args: &[&str], cmd: &[&str], pin: bool, hz: f64) -> anyhow::Result<Run> {
    let dir = root().join("target/bench/stacks");
    std::fs::create_dir_all(&dir)?;
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut c = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(trace);
        c
    } else {
        Command::new(trace)
    };
    c.args(args).args(["--format", "json", "--"]);
    if pin {
        c.args(["taskset", "-c", "1"]);
    }
    c.args(cmd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?);
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let mut child = c.spawn().with_context(|| format!("running {c:?}"))?;
    let pid = child.id();
    let mut ticks = 0;
    let status = loop {
        if let Some(t) = reader_ticks(pid) {
            ticks = ticks.max(t);
        }
        if let Some(s) = child.try_wait()? {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    settle_group(pid);
    let out = std::fs::read_to_string(&out_path)?;
    let err = std::fs::read_to_string(&err_path)?;
    if !status.success() {
        bail!("{c:?} failed ({status}): {err}");
    }
    let comm = Path::new(cmd[0])
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let lines: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let last = lines
        .last()
        .with_context(|| format!("no JSON from {c:?}"))?;
    let counter = |k: &str| {
        lines
            .iter()
            .filter_map(|v| v[k].as_u64())
            .max()
            .unwrap_or(0)
    };
    let mut run = Run {
        events: lines
            .iter()
            .filter(|v| v["type"] == "summary" && v["comm"] == comm.as_str())
            .filter_map(|v| v["events"].as_f64())
            .sum(),
        lost_events: counter("lost_events"),
        lost_stacks: counter("lost_stacks"),
        tracer_cpu_ms: last["tracer_cpu_ms"].as_f64().unwrap_or(f64::NAN),
        #[expect(clippy::cast_precision_loss, reason = "ticks of a run: small")]
        reader_cpu_ms: ticks as f64 * 1000.0 / hz,
        ..Run::default()
    };
    if let Some(l) = out.lines().find(|l| l.contains("ns_per_call=")) {
        let field = |key: &str| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        run.ns_per_call = field("ns_per_call");
        run.seconds = field("seconds");
        run.calls = field("calls");
    }
    for l in err.lines() {
        let Some(l) = l.strip_prefix("muppy-trace: ") else {
            continue;
        };
        if l.starts_with("stacks: ") {
            run.stacks = StackCost::parse(l);
        } else if let Some(d) = l.strip_prefix("stacks in ") {
            run.decisions.push(d.to_string());
        } else if let Some((name, rest)) = l.split_once(": ")
            && let Some((runs, each)) = rest.split_once(" runs, ")
            && let (Ok(runs), Some(Ok(each))) = (
                runs.parse(),
                each.strip_suffix(" ns each").map(str::parse::<f64>),
            )
        {
            run.programs.push((name.to_string(), runs, each));
        }
    }
    Ok(run)
}

/// Two threads flat out, unpinned, every allocation's stack copied, `rounds` times on the
/// default ring, and as many on a 64 MiB one if the default lost any.
fn burst(trace: &Path, prog: &str, rounds: usize, hz: f64) -> anyhow::Result<Vec<Value>> {
    let mut rows = Vec::new();
    for ring in [None, Some("64")] {
        let mut args = vec!["--unwind", "dwarf"];
        if let Some(mb) = ring {
            args.extend(["--ring-mb", mb]);
        }
        let v: Vec<Run> = (0..rounds)
            .map(|_| traced(trace, &args, &[prog, "2", PAIRS], false, hz))
            .collect::<anyhow::Result<_>>()?;
        let eps = median(v.iter().map(|r| r.events / r.seconds).collect());
        let ns = median(v.iter().map(|r| r.ns_per_call).collect());
        let reader_pct = median(
            v.iter()
                .map(|r| r.reader_cpu_ms / r.seconds / 10.0)
                .collect(),
        );
        let per_event = median(v.iter().map(Run::reader_ns_per_event).collect());
        let lost_stacks: Vec<u64> = v.iter().map(|r| r.lost_stacks).collect();
        let lost_events: Vec<u64> = v.iter().map(|r| r.lost_events).collect();
        println!(
            "burst, 2 threads unpinned, --unwind dwarf, ring {} MiB, median of {rounds}: {eps:.0} events/s, {ns:.1} ns/call; reader {reader_pct:.1}% of a CPU, {per_event:.0} ns per event; lost stacks {lost_stacks:?}, events {lost_events:?}",
            ring.unwrap_or("16 (default)"),
        );
        let lost = lost_stacks.iter().chain(&lost_events).any(|&n| n > 0);
        rows.push(
            json!({"ring_mb": ring.map_or(16, |m| m.parse::<u64>().unwrap_or(0)),
            "runs": rounds, "events_per_second": eps, "ns_per_call": ns,
            "reader_cpu_percent": reader_pct, "reader_ns_per_event": per_event,
            "lost_stacks": lost_stacks, "lost_events": lost_events}),
        );
        if !lost {
            break;
        }
    }
    Ok(rows)
}

/// The probe programs' kernel run time per allocator call of the loop (`--verbose` runs).
#[expect(clippy::cast_precision_loss, reason = "run counts of one run: small")]
fn probe_ns_per_call(run: &Run) -> f64 {
    let total: f64 = run
        .programs
        .iter()
        .map(|&(_, runs, each)| runs as f64 * each)
        .sum();
    total / run.calls
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "not met" }
}

/// The stacks figures, printed and as JSON.
pub fn bench(trace: &Path, runs: usize) -> anyhow::Result<Value> {
    let prog = compile_c("tests/workloads/bench_loop.c", "bench/bench_loop")?;
    let nofp = compile_c_flags(
        "tests/workloads/bench_loop.c",
        "bench/bench_loop_nofp",
        &["-O2", "-fomit-frame-pointer"],
    )?;
    let hz = clock_ticks();
    let runs = runs.max(1);
    let started = Instant::now();
    crate::bench::settle();
    let prog_s = prog.display().to_string();
    let loop_cmd = [prog_s.as_str(), "1", PAIRS];

    // The alternation: every configuration once a round.
    let mut samples: Vec<Vec<Run>> = CONFIGS.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (c, v) in CONFIGS.iter().zip(&mut samples) {
            v.push(traced(trace, c.args, &loop_cmd, true, hz)?);
        }
    }
    // One round with --verbose: the kernel's time per program, the reader's unwinding.
    let verbose: Vec<Run> = CONFIGS
        .iter()
        .map(|c| {
            let args: Vec<&str> = c.args.iter().copied().chain(["--verbose"]).collect();
            traced(trace, &args, &loop_cmd, true, hz)
        })
        .collect::<anyhow::Result<_>>()?;

    let at = |key: &str| CONFIGS.iter().position(|c| c.key == key).unwrap_or(0);
    let ns: Vec<f64> = samples
        .iter()
        .map(|v| median(v.iter().map(|r| r.ns_per_call).collect()))
        .collect();
    let (floor, base, base_512k) = (
        ns[at("floor")],
        ns[at("no_stacks")],
        ns[at("no_stacks_512k")],
    );
    println!(
        "stacks: malloc/free loop (bench_loop 1 {PAIRS}, frame pointers), loop on CPU 1, tracer on CPU 0; median of {runs} alternated runs"
    );
    println!(
        "{:<36} {:>8} {:>8} {:>11} {:>10} {:>8} {:>8} {:>11} {:>10} {:>10}",
        "configuration",
        "ns/call",
        "x floor",
        "x no-stacks",
        "events/s",
        "lost ev",
        "lost st",
        "reader ms",
        "ns/event",
        "probes/call"
    );
    let mut figures = json!({"runs": runs, "pairs": PAIRS.parse::<u64>()?, "pinned": "loop on CPU 1, tracer on CPU 0"});
    for ((c, v), (n, verbose)) in CONFIGS.iter().zip(&samples).zip(ns.iter().zip(&verbose)) {
        let eps = median(v.iter().map(|r| r.events / r.seconds).collect());
        let reader = median(v.iter().map(|r| r.reader_cpu_ms).collect());
        let events = median(v.iter().map(|r| r.events).collect());
        let per_event = median(v.iter().map(Run::reader_ns_per_event).collect());
        let lost_events: Vec<u64> = v.iter().map(|r| r.lost_events).collect();
        let lost_stacks: Vec<u64> = v.iter().map(|r| r.lost_stacks).collect();
        let probes = format!("{:.0} ns", probe_ns_per_call(verbose));
        println!(
            "{:<36} {n:>8.1} {:>8.2} {:>11.2} {eps:>10.0} {:>8} {:>8} {reader:>11.0} {per_event:>10.0} {:>10}",
            c.name,
            n / floor,
            n / base,
            lost_events.iter().sum::<u64>(),
            lost_stacks.iter().sum::<u64>(),
            probes,
        );
        let programs: serde_json::Map<String, Value> = verbose
            .programs
            .iter()
            .map(|(p, runs, each)| (p.clone(), json!({"runs": runs, "ns_each": each})))
            .collect();
        figures[c.key] = json!({
            "ns_per_call": n, "x_floor": n / floor, "x_no_stacks": n / base,
            "ns_per_call_runs": v.iter().map(|r| r.ns_per_call).collect::<Vec<_>>(),
            "events_per_second": eps, "events": events,
            "lost_events": lost_events, "lost_stacks": lost_stacks,
            "reader_cpu_ms": reader, "reader_ns_per_event": per_event,
            "tracer_cpu_ms": median(v.iter().map(|r| r.tracer_cpu_ms).collect()),
            "verbose": {"programs": programs, "probe_ns_per_call": probe_ns_per_call(verbose), "stacks": verbose.stacks.map(|s| s.json()),
                "lost_events": verbose.lost_events, "lost_stacks": verbose.lost_stacks},
        });
    }
    // The kernel's run time of each program, from the verbose round.
    println!("probe programs, kernel run time (the --verbose round), ns each:");
    for (c, v) in CONFIGS.iter().zip(&verbose) {
        let each: Vec<String> = v
            .programs
            .iter()
            .filter(|(_, runs, _)| *runs > 1000)
            .map(|(p, _, ns)| format!("{p} {ns:.0}"))
            .collect();
        println!("  {:<36} {}", c.name, each.join(", "));
    }
    for d in &verbose[at("auto")].decisions {
        println!("  --unwind auto decided: {d}");
    }
    figures["auto"]["verbose"]["decisions"] = verbose[at("auto")].decisions.clone().into();
    // Paired ratios, round by round: each round's runs are minutes apart at most.
    let paired = |a: &str, b: &str| -> Vec<f64> {
        samples[at(a)]
            .iter()
            .zip(&samples[at(b)])
            .map(|(x, y)| x.ns_per_call / y.ns_per_call)
            .collect()
    };
    let target = ns[at("dwarf_512k")] / base;
    let vs_sampled = ns[at("dwarf_512k")] / base_512k;
    let rounds = paired("dwarf_512k", "no_stacks");
    let rounds_sampled = paired("dwarf_512k", "no_stacks_512k");
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.2}–{hi:.2}")
    };
    println!(
        "target: dwarf at --sample-bytes 512K / --no-stacks (recording all): {target:.2} (round by round {}; ≤ 1.15: {})",
        range(&rounds),
        verdict(target <= 1.15)
    );
    println!(
        "        dwarf at --sample-bytes 512K / --no-stacks --sample-bytes 512K: {vs_sampled:.2} (round by round {})",
        range(&rounds_sampled)
    );
    // The same from the kernel's run time of the probes (the verbose round): the floor's wall
    // time, plus what each configuration's programs take beyond the empty ones.
    let kernel = |key: &str| {
        floor + probe_ns_per_call(&verbose[at(key)]) - probe_ns_per_call(&verbose[at("floor")])
    };
    let by_kernel = kernel("dwarf_512k") / kernel("no_stacks");
    let by_kernel_sampled = kernel("dwarf_512k") / kernel("no_stacks_512k");
    println!(
        "        by the probes' kernel run time (floor + what the programs add): {by_kernel:.2} against --no-stacks, {by_kernel_sampled:.2} against --no-stacks --sample-bytes 512K"
    );
    figures["target"] = json!({"dwarf_512k_x_no_stacks": target, "rounds": rounds,
        "dwarf_512k_x_no_stacks_512k": vs_sampled, "rounds_512k": rounds_sampled,
        "by_kernel_time": by_kernel, "by_kernel_time_512k": by_kernel_sampled,
        "met": target <= 1.15});
    let lost = |key: &str| -> (u64, u64) {
        let v = &samples[at(key)];
        (
            v.iter().map(|r| r.lost_events).sum(),
            v.iter().map(|r| r.lost_stacks).sum(),
        )
    };
    let (auto, d512) = (lost("auto"), lost("dwarf_512k"));
    let dwarf16 = lost("dwarf");
    println!(
        "lost by --unwind dwarf on every allocation, all {runs} runs, ring 16 MiB (default): {} events, {} stacks",
        dwarf16.0, dwarf16.1
    );
    // Where it lost any: as many runs again on a 64 MiB ring.
    if dwarf16 != (0, 0) {
        let big: Vec<Run> = (0..runs)
            .map(|_| {
                traced(
                    trace,
                    &["--unwind", "dwarf", "--ring-mb", "64"],
                    &loop_cmd,
                    true,
                    hz,
                )
            })
            .collect::<anyhow::Result<_>>()?;
        let lost_stacks: Vec<u64> = big.iter().map(|r| r.lost_stacks).collect();
        let lost_events: Vec<u64> = big.iter().map(|r| r.lost_events).collect();
        let ns = median(big.iter().map(|r| r.ns_per_call).collect());
        println!(
            "  the same on a 64 MiB ring, {runs} runs: {ns:.1} ns/call; lost stacks {lost_stacks:?}, events {lost_events:?}"
        );
        figures["dwarf_ring64"] = json!({"ns_per_call": ns, "lost_stacks": lost_stacks,
            "lost_events": lost_events});
    }
    println!(
        "lost at default settings, all {runs} runs: auto {} events, {} stacks; dwarf at 512K {} events, {} stacks (target 0: {})",
        auto.0,
        auto.1,
        d512.0,
        d512.1,
        verdict(auto == (0, 0) && d512 == (0, 0))
    );

    // The reader at the loop's full rate, every allocation's stack copied and unwound.
    let dwarf = &samples[at("dwarf")];
    let eps = median(dwarf.iter().map(|r| r.events / r.seconds).collect());
    let cpu_per_s = median(
        dwarf
            .iter()
            .map(|r| r.reader_cpu_ms / r.seconds / 10.0)
            .collect(),
    );
    let per_event = median(dwarf.iter().map(Run::reader_ns_per_event).collect());
    let tracer_per_event = median(
        dwarf
            .iter()
            .map(|r| r.tracer_cpu_ms * 1e6 / r.events.max(1.0))
            .collect(),
    );
    println!(
        "reader under --unwind dwarf, every allocation: {eps:.0} events/s; reader thread {cpu_per_s:.1}% of a CPU, {per_event:.0} ns per event (whole tracer {tracer_per_event:.0} ns per event, start-up included)"
    );
    figures["reader_dwarf"] = json!({"events_per_second": eps, "reader_cpu_percent": cpu_per_s,
        "reader_ns_per_event": per_event, "tracer_ns_per_event": tracer_per_event});

    // Unwinding a stack in the reader: the loop (both builds), and python3.11.
    let mut unwinding = serde_json::Map::new();
    let mut show = |what: &str, key: &str, r: &Run| {
        if let Some(s) = r.stacks {
            println!(
                "unwinding, {what}: {:.0} stacks ({:.0} MB copied) in {:.1} ms: {:.0} ns each, {:.0} ns a frame, {:.1} frames a stack, {:.0} distinct paths; lost {} stacks, {} events",
                s.copies,
                s.bytes / 1e6,
                s.ms,
                s.ns_each,
                s.ns_per_frame,
                s.frames(),
                s.paths,
                r.lost_stacks,
                r.lost_events
            );
        } else {
            println!("unwinding, {what}: no stacks line");
        }
        unwinding.insert(
            key.into(),
            json!({"stacks": r.stacks.map(|s| s.json()), "lost_stacks": r.lost_stacks,
                "lost_events": r.lost_events, "reader_cpu_ms": r.reader_cpu_ms,
                "events": r.events}),
        );
    };
    show(
        "bench_loop (frame pointers), --unwind dwarf",
        "bench_loop",
        &verbose[at("dwarf")],
    );
    let nofp_s = nofp.display().to_string();
    let r = traced(
        trace,
        &["--unwind", "dwarf", "--verbose"],
        &[&nofp_s, "1", PAIRS],
        true,
        hz,
    )?;
    show(
        "bench_loop -O2 -fomit-frame-pointer, --unwind dwarf",
        "bench_loop_nofp",
        &r,
    );
    if Path::new("/usr/bin/python3.11").exists() {
        let r = traced(
            trace,
            &["--unwind", "dwarf", "--verbose"],
            &["/usr/bin/python3.11", "-c", PY_SCRIPT, "20000"],
            true,
            hz,
        )?;
        show(
            "python3.11 (Debian, no frame pointers), --unwind dwarf",
            "python3_11",
            &r,
        );
    }
    figures["unwinding"] = unwinding.into();

    // A burst: two threads flat out, unpinned, every allocation's stack copied.
    figures["burst_dwarf"] = burst(trace, &prog_s, runs.min(3), hz)?.into();
    println!("stacks section: {:.0} s", started.elapsed().as_secs_f64());
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::StackCost;

    #[test]
    fn parses_the_stacks_line() {
        let s = StackCost::parse(
            "stacks: 100003 copies (852816848 bytes) unwound in 2.7 ms, 27 ns each, 9 ns a frame; 4 distinct call paths",
        )
        .expect("parsed");
        assert!((s.copies - 100_003.0).abs() < 0.5);
        assert!((s.frames() - 3.0).abs() < 1e-9);
        assert!((s.paths - 4.0).abs() < 0.5);
    }
}
