//! `cargo xtask bench`, the daemon (issue 15):
//!
//! - System-wide on a busy machine: two allocation-heavy processes, Debian's python3.11
//!   building dicts, lists and strings (a real program that allocates a lot) and `busy` (one
//!   thread replacing blocks flat out: nothing but allocator calls, the worst case for any
//!   uprobe tracer, each call a trap), and a stream of short processes started one after
//!   another (`ls -l /usr/lib` and `hold 20000`, each living a few milliseconds), for a
//!   window untraced, then the same window under `muppy-trace daemon --all` with its default
//!   sampling, then untraced again. Figures: each part's slowdown (its rate against the mean
//!   of the untraced windows), lost events during the window (calls under way while the probes
//!   were being attached are counted apart: they began before tracing did), lost stacks, the
//!   share of the short processes that ended with every site named (a function, or in a
//!   stripped program its file and offset; not a bare address), and the daemon's resident
//!   size over time.
//! - The API under load: `daemon --pid` on `busy` with 2 threads and every block recorded
//!   (about a million events a second), 100 client threads asking `/summary` as fast as they
//!   get answers for 10 s: requests answered, latency percentiles, lost events.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{bench::settle, compile_c, root};

/// The system-wide window, in seconds.
const WINDOW_S: u64 = 60;
/// How long the API is loaded, and by how many clients.
const API_S: u64 = 10;
const CLIENTS: usize = 100;

/// A daemon started for the bench, stopped (SIGTERM) when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(trace: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let socket = dir.join("muppy.sock");
        let mut child = Command::new(trace)
            .arg("daemon")
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the daemon")?;
        let err = child.stderr.take().context("the daemon's stderr")?;
        let mut lines = BufReader::new(err).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("muppy-trace: tracing ") => break,
                Some(Ok(_)) => {}
                _ => bail!("the daemon ended before it said it was tracing"),
            }
        }
        // Its later notes are read and dropped, so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Daemon { child, socket })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn get(&self, path: &str) -> anyhow::Result<String> {
        let mut c = UnixStream::connect(&self.socket)?;
        write!(c, "GET {path} HTTP/1.1\r\nHost: b\r\n\r\n")?;
        let mut all = String::new();
        c.read_to_string(&mut all)?;
        let (head, body) = all.split_once("\r\n\r\n").context("not HTTP")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {head} {body}");
        }
        Ok(body.to_string())
    }

    fn stop(mut self) -> anyhow::Result<()> {
        crate::run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the daemon ended with {status}");
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident KiB of `pid`.
fn rss_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What the workload did in one window.
#[derive(Debug, Default)]
struct Work {
    /// python3's rounds per second.
    python_per_s: f64,
    /// busy's allocator calls per second.
    calls_per_s: f64,
    /// Short processes started and ended per second.
    procs_per_s: f64,
    /// Short processes run.
    procs: u64,
}

/// python3's part: rounds of building a dict of lists and joining its keys, for argv[1] s.
const PYTHON: &str = "import time, sys
end = time.time() + float(sys.argv[1]); n = 0
while time.time() < end:
    d = {str(i): [i] * 8 for i in range(2000)}
    s = ','.join(d.keys()) * 4
    n += 1
print('rounds=%d' % n)";

/// The `key` figure (`rounds=`, `calls=`) a workload printed.
fn figure(out: &std::process::Output, key: &str) -> anyhow::Result<f64> {
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no {key} in {text:?}"))
}

/// Runs the workload for `secs`: python3, busy and the stream of short processes.
fn workload(busy: &Path, hold: &Path, secs: u64) -> anyhow::Result<Work> {
    let python = Command::new("python3.11")
        .args(["-c", PYTHON, &secs.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("running python3.11")?;
    let busy = Command::new(busy)
        .args(["1", &secs.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    let mut procs = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let mut cmd = if procs.is_multiple_of(2) {
            let mut c = Command::new("ls");
            c.args(["-l", "/usr/lib"]);
            c
        } else {
            let mut c = Command::new(hold);
            c.arg("20000");
            c
        };
        if !cmd.stdout(Stdio::null()).status()?.success() {
            bail!("{cmd:?} failed");
        }
        procs += 1;
    }
    let took = started.elapsed().as_secs_f64();
    #[expect(
        clippy::cast_precision_loss,
        reason = "seconds and counts of one window"
    )]
    let (secs, n) = (secs as f64, procs as f64);
    Ok(Work {
        python_per_s: figure(&python.wait_with_output()?, "rounds=")? / secs,
        calls_per_s: figure(&busy.wait_with_output()?, "calls=")? / secs,
        procs_per_s: n / took,
        procs,
    })
}

/// The daemon's lost events so far.
fn lost(d: &Daemon) -> anyhow::Result<u64> {
    d.get("/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix("muppy_lost_events_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .context("no lost events in /metrics")
}

/// System-wide: untraced, traced, untraced.
fn system_wide(trace: &Path, busy: &Path, hold: &Path, dir: &Path) -> anyhow::Result<Value> {
    settle();
    let before = workload(busy, hold, WINDOW_S / 2)?;
    settle();
    let log = dir.join("daemon.jsonl");
    let _ = std::fs::remove_file(&log);
    let log_arg = log.display().to_string();
    let d = Daemon::start(
        trace,
        dir,
        &["--all", "--log", &log_arg, "--log-every", "10"],
    )?;
    // Calls under way while the probes were attached began before tracing: counted apart.
    let at_attach = lost(&d)?;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, pid) = (Arc::clone(&done), d.pid());
        std::thread::spawn(move || {
            let mut rss = Vec::new();
            let t = Instant::now();
            while !done.load(Ordering::SeqCst) {
                rss.push((t.elapsed().as_secs(), rss_kb(pid).unwrap_or(0)));
                std::thread::sleep(Duration::from_secs(5));
            }
            rss
        })
    };
    let traced = workload(busy, hold, WINDOW_S)?;
    done.store(true, Ordering::SeqCst);
    let rss = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    // The last record's figures, then the stop.
    std::thread::sleep(Duration::from_secs(2));
    let processes = d.get("/processes")?;
    let closing: Value = serde_json::from_str(processes.lines().last().unwrap_or("{}"))?;
    let lost_total = lost(&d)?;
    d.stop()?;
    settle();
    let after = workload(busy, hold, WINDOW_S / 2)?;

    // Every `exited` line of a short process: named when none of its sites is a bare address.
    let text = std::fs::read_to_string(&log)?;
    let (mut ended, mut named, mut with_rows) = (0u64, 0u64, 0u64);
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_default();
        if v["type"] != "exited" || !(v["comm"] == "hold" || v["comm"] == "ls") {
            continue;
        }
        ended += 1;
        let rows = v["rows"].as_array().cloned().unwrap_or_default();
        if !rows.is_empty() {
            with_rows += 1;
        }
        // A site in a stripped program reads `[unknown] (ls+0x1a2b)`: its file and offset
        // are known, all there is to name. A bare address, `[unknown] (0x7f...)`, is not.
        if rows.iter().all(|r| {
            !r["site"]
                .as_str()
                .unwrap_or("[unknown] (0x")
                .starts_with("[unknown] (0x")
        }) {
            named += 1;
        }
    }
    let plain_python = f64::midpoint(before.python_per_s, after.python_per_s);
    let plain_calls = f64::midpoint(before.calls_per_s, after.calls_per_s);
    let plain_procs = f64::midpoint(before.procs_per_s, after.procs_per_s);
    Ok(json!({
        "window_s": WINDOW_S,
        "untraced": {"python_per_s": plain_python, "calls_per_s": plain_calls,
                     "procs_per_s": plain_procs, "procs": before.procs + after.procs},
        "traced": {"python_per_s": traced.python_per_s, "calls_per_s": traced.calls_per_s,
                   "procs_per_s": traced.procs_per_s, "procs": traced.procs},
        "slowdown_python": plain_python / traced.python_per_s,
        "slowdown_calls": plain_calls / traced.calls_per_s,
        "slowdown_procs": plain_procs / traced.procs_per_s,
        "lost_events_at_attach": at_attach,
        "lost_events_in_window": lost_total - at_attach,
        "lost_stacks": closing["lost_stacks"],
        "ended_total": closing["ended_total"],
        "short_ended_logged": ended,
        "short_with_sampled_blocks": with_rows,
        "short_fully_named": named,
        "rss_kb_over_time": rss,
    }))
}

/// The API under load while the daemon records every event of a busy process.
fn api_load(trace: &Path, busy: &Path, dir: &Path) -> anyhow::Result<Value> {
    settle();
    let secs = API_S + 8;
    let mut target = Command::new(busy)
        .args(["2", &secs.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = target.id().to_string();
    let d = Arc::new(Daemon::start(
        trace,
        dir,
        &["--pid", &pid, "--sample-bytes", "0"],
    )?);
    let events = |d: &Daemon| -> anyhow::Result<u64> {
        let body = d.get("/processes")?;
        let line: Value = serde_json::from_str(body.lines().next().unwrap_or("{}"))?;
        line["events"].as_u64().context("no events figure")
    };
    std::thread::sleep(Duration::from_secs(2));
    let (e0, t0, lost0) = (events(&d)?, Instant::now(), lost(&d)?);
    let path = format!("/summary?pid={pid}");
    let deadline = Instant::now() + Duration::from_secs(API_S);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (d, path) = (Arc::clone(&d), path.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut failed = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match d.get(&path) {
                        Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => failed += 1,
                    }
                }
                (lat, failed)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut failed = 0;
    for c in clients {
        let (l, f) = c.join().map_err(|_| anyhow::anyhow!("a client panicked"))?;
        lat.extend(l);
        failed += f;
    }
    let (e1, took, lost1) = (events(&d)?, t0.elapsed().as_secs_f64(), lost(&d)?);
    let _ = target.wait();
    Arc::try_unwrap(d)
        .map_err(|_| anyhow::anyhow!("the daemon is still shared"))?
        .stop()?;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into the sorted latencies"
        )]
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat.get(i).copied().unwrap_or(f64::NAN)
    };
    #[expect(clippy::cast_precision_loss, reason = "counts of one run")]
    Ok(json!({
        "clients": CLIENTS,
        "seconds": API_S,
        "requests": lat.len(),
        "failed": failed,
        "events_per_s": (e1 - e0) as f64 / took,
        "lost_events_at_attach": lost0,
        "lost_events_under_load": lost1 - lost0,
        "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0),
    }))
}

/// The daemon's figures.
pub fn bench(trace: &Path) -> anyhow::Result<Value> {
    let busy = compile_c("tests/workloads/busy.c", "bench/busy")?;
    let hold = compile_c("tests/workloads/hold.c", "bench/hold")?;
    let dir = root().join("target/bench/daemon");
    std::fs::create_dir_all(&dir)?;
    let sw = system_wide(trace, &busy, &hold, &dir)?;
    println!("\ndaemon --all, {WINDOW_S} s, two busy processes and a stream of short ones:");
    println!(
        "  slowdown: python3 {:.3}x, busy {:.1}x (a trap per allocator call), short processes {:.3}x",
        sw["slowdown_python"].as_f64().unwrap_or(f64::NAN),
        sw["slowdown_calls"].as_f64().unwrap_or(f64::NAN),
        sw["slowdown_procs"].as_f64().unwrap_or(f64::NAN),
    );
    println!(
        "  lost events in the window {} (at attach {}), lost stacks {}",
        sw["lost_events_in_window"], sw["lost_events_at_attach"], sw["lost_stacks"]
    );
    println!(
        "  short processes: {} ran traced, {} ended with sampled blocks logged, {} fully named",
        sw["traced"]["procs"], sw["short_ended_logged"], sw["short_fully_named"]
    );
    println!("  daemon RSS (s, KiB): {}", sw["rss_kb_over_time"]);
    let api = api_load(trace, &busy, &dir)?;
    println!(
        "API: {CLIENTS} clients for {API_S} s at {:.0} events/s: {} answers, {} failed, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; lost events under load {}",
        api["events_per_s"].as_f64().unwrap_or(f64::NAN),
        api["requests"],
        api["failed"],
        api["p50_ms"].as_f64().unwrap_or(f64::NAN),
        api["p99_ms"].as_f64().unwrap_or(f64::NAN),
        api["max_ms"].as_f64().unwrap_or(f64::NAN),
        api["lost_events_under_load"]
    );
    Ok(json!({"system_wide": sw, "api": api}))
}
