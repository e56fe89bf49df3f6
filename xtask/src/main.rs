//! `cargo xtask`: muppy's developer tasks.
//!
//! - `setup`: installs what building the eBPF probes needs (nightly rust-src; bpf-linker built
//!   against the nightly's own LLVM), plus the C toolchain pieces the tests use. Idempotent.
//! - `build`: setup, then `target/release/muppy-trace`.
//! - `test`: build, then every test (`MUPPY_REQUIRE_EBPF=1` makes eBPF tests fail, not skip,
//!   without root).
//! - `demo`: build, then trace the bundled leaking demo with periodic diffs, save its live set,
//!   and draw who allocated the leak from the saved snapshot.
//! - `bench`: build, then the malloc/free microbenchmark, plain and traced.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build needs (idempotent).
    Setup,
    /// Build target/release/muppy-trace.
    Build,
    /// Build, then run all tests.
    Test,
    /// Build, then trace the bundled leaking demo.
    Demo,
    /// Build, then benchmark malloc/free plain and traced.
    Bench {
        /// Print one final JSON line with every figure.
        #[arg(long)]
        json: bool,
        /// Runs of each configuration (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Live blocks held for the tracer-memory measurement.
        #[arg(long, default_value_t = 10_000_000)]
        live: u64,
    },
}

fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const BPF_LINKER_VERSION: &str = "0.13.0";

fn setup() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let have_linker = output(Command::new("bpf-linker").arg("--version"))
        .is_ok_and(|v| v.contains(BPF_LINKER_VERSION));
    if !have_linker {
        // Link bpf-linker against the nightly's own libLLVM: it must match the LLVM that emits
        // the bitcode, and the distribution has no such LLVM.
        let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
        let lib = Path::new(sysroot.trim()).join("lib");
        let llvm = std::fs::read_dir(&lib)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("libLLVM-") && n.ends_with(".so"))
            .with_context(|| format!("no libLLVM-*.so in {}", lib.display()))?;
        let name = llvm.trim_start_matches("lib").trim_end_matches(".so");
        let major = name
            .trim_start_matches("LLVM-")
            .split(['-', '.'])
            .next()
            .unwrap_or_default();
        let lib = lib.display();
        run(Command::new("cargo")
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
            ])
            .args(["--features", &format!("llvm-{major},no-llvm-linking")])
            .env(
                "RUSTFLAGS",
                format!("-L native={lib} -l dylib={name} -C link-arg=-Wl,-rpath,{lib}"),
            ))?;
    }
    // The tests build C workloads, one of them static (libc.a comes with libc6-dev).
    if which("gcc").is_none() || !Path::new("/usr/lib/x86_64-linux-gnu/libc.a").exists() {
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get").args(["install", "-y", "gcc", "libc6-dev"]))?;
    }
    Ok(())
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.exists())
}

fn build() -> anyhow::Result<PathBuf> {
    setup()?;
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "muppy-user",
    ]))?;
    Ok(root().join("target/release/muppy-trace"))
}

fn compile_c(src: &str, out: &str) -> anyhow::Result<PathBuf> {
    let out = root().join("target").join(out);
    std::fs::create_dir_all(out.parent().unwrap_or(&root()))?;
    // The same flags as the test workloads: one definition, in tests/workloads/cflags.
    let cflags = std::fs::read_to_string(root().join("tests/workloads/cflags"))?;
    run(Command::new("gcc")
        .args(cflags.split_whitespace())
        .arg("-o")
        .arg(&out)
        .arg(root().join(src)))?;
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn field(text: &str, key: &str) -> Option<f64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

/// Tracer memory: peak RSS with one live block (the base) and with `live` live blocks.
struct Memory {
    base_kb: f64,
    peak_kb: f64,
    held: u64,
    lost: u64,
}

impl Memory {
    fn per_block(&self) -> f64 {
        (self.peak_kb - self.base_kb) * 1024.0 / self.held.max(1) as f64
    }
}

fn traced_summary(trace: &Path, prog: &Path, args: &[String]) -> anyhow::Result<serde_json::Value> {
    let out = output(
        Command::new(trace)
            .args(["--format", "json", "--"])
            .arg(prog)
            .args(args),
    )?;
    Ok(serde_json::from_str(
        out.lines().last().context("no summary")?,
    )?)
}

fn memory(trace: &Path, live: u64) -> anyhow::Result<Memory> {
    let prog = compile_c("tests/workloads/hold.c", "bench/hold")?;
    let base = traced_summary(trace, &prog, &["1".into()])?;
    let full = traced_summary(trace, &prog, &[live.to_string()])?;
    // (Both with stacks on: one site, one stack; the table is what grows.)
    let kb = |s: &serde_json::Value| s["tracer_peak_rss_kb"].as_f64().unwrap_or(0.0);
    Ok(Memory {
        base_kb: kb(&base),
        peak_kb: kb(&full),
        held: full["total"]["objects"].as_u64().unwrap_or(0),
        lost: full["lost_events"].as_u64().unwrap_or(0),
    })
}

/// One traced run of the loop: its ns per call and the tracer's figures.
struct Traced {
    ns: f64,
    events_per_second: f64,
    lost: u64,
    rss_kb: f64,
}

fn traced_loop(trace: &Path, prog: &Path, extra: &[&str], pairs: &str) -> anyhow::Result<Traced> {
    let out = output(
        Command::new(trace)
            .args(extra)
            .args(["--format", "json", "--"])
            .arg(prog)
            .args(["1", pairs]),
    )?;
    let mut lines = out.lines();
    let first = lines.next().context("no bench output")?;
    let summary: serde_json::Value = serde_json::from_str(lines.last().context("no summary")?)?;
    let events = summary["events"].as_f64().unwrap_or(0.0);
    Ok(Traced {
        ns: field(first, "ns_per_call").context("bench_loop output")?,
        events_per_second: events / field(first, "seconds").unwrap_or(1.0),
        lost: summary["lost_events"].as_u64().unwrap_or(0),
        rss_kb: summary["tracer_peak_rss_kb"].as_f64().unwrap_or(0.0),
    })
}

fn bench(json: bool, runs: usize, live: u64) -> anyhow::Result<()> {
    let trace = build()?;
    let prog = compile_c("tests/workloads/bench_loop.c", "bench/bench_loop")?;
    let pairs = "1000000";
    let configs: [(&str, &[&str]); 2] = [
        ("muppy, stacks off", &["--no-stacks"]),
        ("muppy, stacks on", &[]),
    ];
    let mut plain = vec![];
    let mut traced: Vec<Vec<Traced>> = configs.iter().map(|_| vec![]).collect();
    // Interleave the configurations so drift hits all alike.
    for _ in 0..runs.max(1) {
        let out = output(Command::new(&prog).args(["1", pairs]))?;
        plain.push(field(&out, "ns_per_call").context("bench_loop output")?);
        for ((_, extra), runs) in configs.iter().zip(&mut traced) {
            runs.push(traced_loop(&trace, &prog, extra, pairs)?);
        }
    }
    let p = median(plain);
    println!("malloc/free loop, {pairs} pairs, 1 thread, median of {runs} runs");
    println!(
        "{:<20} {:>10} {:>12} {:>11} {:>12} {:>6}",
        "config", "ns/call", "x plain", "events/s", "peak RSS KiB", "lost"
    );
    println!("{:<20} {:>10.1} {:>12.2}", "plain", p, 1.0);
    let mut figures = serde_json::json!({"plain_ns_per_call": p, "runs": runs});
    for ((name, extra), runs) in configs.iter().zip(traced) {
        let ns = median(runs.iter().map(|t| t.ns).collect());
        let eps = median(runs.iter().map(|t| t.events_per_second).collect());
        let rss = median(runs.iter().map(|t| t.rss_kb).collect());
        let lost: u64 = runs.iter().map(|t| t.lost).sum();
        println!(
            "{name:<20} {ns:>10.1} {:>12.2} {eps:>11.0} {rss:>12.0} {lost:>6}",
            ns / p
        );
        let key = if extra.is_empty() {
            "stacks"
        } else {
            "no_stacks"
        };
        figures[key] = serde_json::json!({"ns_per_call": ns, "ratio_to_plain": ns / p,
            "events_per_second": eps, "tracer_peak_rss_kb": rss, "lost_events": lost});
    }
    let m = memory(&trace, live)?;
    println!(
        "tracer memory: base {:.0} KiB; {} live blocks held: peak {:.0} KiB, {:.1} B per live block; lost events: {}",
        m.base_kb,
        m.held,
        m.peak_kb,
        m.per_block(),
        m.lost
    );
    if json {
        figures["memory"] = serde_json::json!({"base_rss_kb": m.base_kb, "live_blocks": m.held,
            "live_peak_rss_kb": m.peak_kb, "bytes_per_live_block": m.per_block(),
            "lost_events": m.lost});
        println!("{figures}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup(),
        Task::Build => build().map(|p| println!("built {}", p.display())),
        Task::Test => {
            let bin = build()?;
            run(Command::new("cargo")
                .current_dir(root())
                .args(["test", "--release"]) // default members: muppy-ebpf builds only for bpf
                .env("MUPPY_TRACE_BIN", bin))
        }
        Task::Demo => {
            let bin = build()?;
            let demo = compile_c("demo/leaky.c", "demo/leaky")?;
            let snap = root().join("target/demo/leaky.muppy");
            let snap_s = snap.display().to_string();
            println!(
                "\n$ sudo muppy-trace --interval 1 --save {snap_s} -- {}\n",
                demo.display()
            );
            run(Command::new(&bin)
                .args(["--interval", "1", "--save", &snap_s, "--"])
                .arg(&demo))?;
            println!("\n$ muppy-trace tree {snap_s} --site new_session\n");
            run(Command::new(&bin).args(["tree", &snap_s, "--site", "new_session"]))
        }
        Task::Bench { json, runs, live } => bench(json, runs, live),
    }
}
