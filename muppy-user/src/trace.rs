//! A tracing session: probes → ring → table → summary/diff → output, for one process, from
//! attach (or launch) until the process exits, the duration ends, or a signal arrives.

use std::{
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::oneshot,
};

use crate::{
    heap::{Counters, Heap, Trace},
    output::{self, SummaryExtras},
    probe::{self, ProbeConfig, ProbeError, ProbePlan, ProbePoint, Probes},
    ring,
    snapshot::{Snapshot, SnapshotError},
    stacks::StackReader,
    summary::{self, Summary},
    symbols::{Modules, SiteNamer},
    table::LiveTable,
    target::{self, Exit, Launched, TargetError},
    view::{self, ViewError, ViewOptions},
};

/// How a session went wrong.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Probing failed.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The target could not be traced.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The view could not be shown.
    #[error(transparent)]
    View(#[from] ViewError),
    /// `--save` failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Waiting on the ring, a signal or the target failed.
    #[error("{what} failed")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> TraceError {
    move |source| TraceError::Io { what, source }
}

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Pympler-style tables.
    #[default]
    Table,
    /// JSON Lines.
    Json,
}

/// What a session prints and when it stops.
#[derive(Clone, Debug)]
pub struct Options {
    /// Print a diff this often.
    pub interval: Option<Duration>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// What to show at the end (and how the periodic diffs group and filter).
    pub view: ViewOptions,
    /// Save the final live set to this snapshot file.
    pub save: Option<PathBuf>,
    /// What is traced (the command line, or `pid N`), recorded in snapshots.
    pub label: String,
    /// Say per probe where it went.
    pub verbose: bool,
    /// Map sizes, and whether to collect stacks.
    pub probe: ProbeConfig,
    /// `--allocator`: which file serves malloc, instead of the one detected.
    pub allocator: Option<String>,
}

/// Which process to trace.
#[derive(Debug)]
pub enum Mode {
    /// A running process.
    Attach(u32),
    /// A forked child, paused before exec, and the plan for the libc it will load.
    Launch(Launched, ProbePlan),
}

/// How a session ended.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// The target's pid.
    pub pid: u32,
    /// How the target ended, if it was our child and it did.
    pub exit: Option<Exit>,
}

/// Prepares launch mode for `argv`: finds the program and its libc and forks it paused.
/// Call before any thread is started (see [`target::spawn_paused`]).
pub fn prepare_launch(argv: &[String], allocator: Option<&str>) -> Result<Mode, TraceError> {
    let program = argv.first().map(String::as_str).unwrap_or_default();
    let path = target::resolve_program(program)?;
    let plan = probe::plan(&probe::candidates_of_program(&path)?, allocator)?;
    let launched = target::spawn_paused(&path, argv)?;
    Ok(Mode::Launch(launched, plan))
}

fn note(msg: impl std::fmt::Display) {
    eprintln!("muppy-trace: {msg}");
}

fn describe_plan(plan: &ProbePlan, verbose: bool) -> serde_json::Value {
    for lib in &plan.libs {
        let path = lib.path.display();
        if !lib.missing.is_empty() {
            note(format_args!(
                "{path} has no {}; not probed",
                lib.missing.join(", ")
            ));
        }
        if verbose {
            for p in &lib.points {
                note(format_args!(
                    "probe {} at {path}+{:#x}, entry {:#x} {}",
                    p.name(),
                    p.offset,
                    p.entry,
                    p.reason
                ));
            }
        }
    }
    serde_json::json!({
        "allocator": plan.describe(),
        "libraries": plan.libs.iter().map(|l| serde_json::json!({
            "library": l.path.display().to_string(),
            "what": l.what,
            "functions": l.points.iter().map(ProbePoint::name).collect::<Vec<_>>(),
            "offsets": l.points.iter().map(|p| serde_json::json!({"function": p.name(), "skip": p.offset - p.entry})).collect::<Vec<_>>(),
            "missing": l.missing,
        })).collect::<Vec<_>>(),
    })
}

enum ExitWatch {
    Pidfd(AsyncFd<std::os::fd::OwnedFd>),
    Child(oneshot::Receiver<Result<Exit, TargetError>>),
}

impl ExitWatch {
    async fn wait(&mut self) -> Result<Option<Exit>, TraceError> {
        match self {
            ExitWatch::Pidfd(fd) => {
                let _guard = fd.readable().await.map_err(io("waiting for the target"))?;
                Ok(None)
            }
            ExitWatch::Child(rx) => match rx.await {
                Ok(r) => Ok(Some(r?)),
                Err(_) => Ok(None),
            },
        }
    }
}

/// The state a session accumulates.
struct Session {
    pid: u32,
    probes: Probes,
    table: LiveTable,
    modules: Arc<Mutex<Modules>>,
    namer: SiteNamer,
    stacks: StackReader,
    /// The table's traces, symbolized, in the same order.
    traces: Vec<Trace>,
    /// File name of the probed libc, to tell its own frees from the program's.
    libc_name: String,
    /// `--sample-bytes`, or 0.
    sample_bytes: u64,
    latest_ns: u64,
    foreign_events: u64,
}

impl Session {
    fn drain(&mut self, ring: &mut ring::Ring) {
        let (pid, table, latest, foreign) = (
            self.pid,
            &mut self.table,
            &mut self.latest_ns,
            &mut self.foreign_events,
        );
        ring.drain(|ev| {
            if ev.pid == pid {
                table.apply(ev);
                *latest = (*latest).max(ev.ts_ns);
            } else {
                *foreign += 1;
            }
        });
        // A realloc is never in flight for 10 s; older displaced blocks are just freed ones.
        table.prune_displaced(self.latest_ns.saturating_sub(10_000_000_000));
        self.symbolize_new_traces();
    }

    /// Reads and names the call paths that appeared since the last call, while the target is
    /// still there to ask about libraries it loaded since (mapped files stay open afterwards,
    /// so names made later still resolve).
    fn symbolize_new_traces(&mut self) {
        let keys = &self.table.traces()[self.traces.len()..];
        if keys.is_empty() {
            return;
        }
        let paths: Vec<_> = keys.iter().map(|k| self.stacks.path(k)).collect();
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if paths
            .iter()
            .flat_map(|p| &p.addrs)
            .any(|&a| modules.find(a).is_none())
        {
            let _ = modules.refresh();
        }
        for p in paths {
            let names: Vec<_> = p
                .addrs
                .iter()
                .map(|&a| self.namer.frame(&modules, a).clone())
                .collect();
            self.traces.push(Trace {
                function: names[0].function.clone(),
                frames: names.into_iter().map(|n| n.site).collect(),
                state: p.state,
            });
        }
    }

    fn counters(&self) -> Counters {
        let modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        let (mut program, mut libc) = (0, 0);
        for (caller, n) in self.table.unknown_free_callers() {
            if modules.in_module_named(caller, &self.libc_name) {
                libc += n;
            } else {
                program += n;
            }
        }
        let stats = self.table.stats();
        Counters {
            lost_events: self.probes.lost_events(),
            unknown_frees: program,
            libc_unknown_frees: libc,
            lost_stacks: self.probes.lost_stacks(),
            events: stats.events,
        }
    }

    fn heap(&self) -> Heap<'_> {
        Heap {
            pid: self.pid,
            blocks: &self.table,
            traces: &self.traces,
            now_ns: monotonic_ns(),
            counters: self.counters(),
            sample_bytes: self.sample_bytes,
        }
    }

    fn summary(&self, opts: &ViewOptions) -> Summary {
        summary::summarize(&self.heap(), &opts.filter, opts.group_by)
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of `bpf_ktime_get_ns`, which stamps blocks.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn print_out(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// Runs a session to its end and prints its diffs and final summary.
pub async fn run(mode: Mode, opts: &Options) -> Result<Outcome, TraceError> {
    let mut probes = Probes::load(opts.probe)?;
    // The reader must keep up with every thread of the target at once; when the machine is
    // busy, let it run first rather than lose events. (Root may raise its priority.)
    // SAFETY: setpriority on this process only.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
    // Loading parsed the kernel's BTF (aya does it eagerly): megabytes of small allocations,
    // all freed now. Hand those pages back, so the tracer's resident size is what it keeps.
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    // With --verbose, the kernel times each program run (it costs a little per run).
    let _stats = opts
        .verbose
        .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime).ok())
        .flatten();
    let (pid, plan, mut exit_watch, modules) = match mode {
        Mode::Attach(pid) => {
            target::check_pid(pid)?;
            let plan = probe::plan(&probe::candidates_of_pid(pid)?, opts.allocator.as_deref())?;
            probes.attach(&plan, pid)?;
            // SAFETY: the AsyncFd owns the pidfd, so it stays open while registered.
            let watch =
                unsafe { AsyncFd::register_with_interest(target::pidfd(pid)?, Interest::READABLE) }
                    .map_err(|e| io("watching the target")(e.into()))?;
            let mut modules = Modules::new(pid);
            modules
                .refresh()
                .map_err(|_| TargetError::NoSuchProcess { pid })?;
            (
                pid,
                plan,
                ExitWatch::Pidfd(watch),
                Arc::new(Mutex::new(modules)),
            )
        }
        Mode::Launch(launched, plan) => {
            let pid = launched.pid;
            probes.attach(&plan, pid)?;
            let modules = Arc::new(Mutex::new(Modules::new(pid)));
            let (seized_tx, seized_rx) = mpsc::channel();
            let (exit_tx, exit_rx) = oneshot::channel();
            let at_exit = Arc::clone(&modules);
            std::thread::Builder::new()
                .name("muppy-child".into())
                .spawn(move || {
                    let r = target::follow_child(
                        pid,
                        |r| {
                            let _ = seized_tx.send(r);
                        },
                        || {
                            if let Ok(mut m) = at_exit.lock() {
                                let _ = m.refresh();
                            }
                        },
                    );
                    let _ = exit_tx.send(r);
                })
                .map_err(io("starting the child watcher"))?;
            if let Ok(Err(e)) = seized_rx.recv() {
                note(format_args!(
                    "{e}; sites in libraries unloaded at exit may stay unnamed"
                ));
            }
            launched.release()?;
            (pid, plan, ExitWatch::Child(exit_rx), modules)
        }
    };
    let probed = describe_plan(&plan, opts.verbose);
    note(format_args!(
        "tracing pid {pid}: {}; Ctrl-C to stop",
        plan.describe()
    ));

    // SAFETY: the AsyncFd owns the ring buffer map and its fd.
    let mut ring =
        unsafe { AsyncFd::register_with_interest(probes.take_ring()?, Interest::READABLE) }
            .map_err(|e| io("polling the ring buffer")(e.into()))?;
    let stacks = if opts.probe.stacks > 0 {
        Some(probes.take_stacks()?)
    } else {
        None
    };
    let mut s = Session {
        pid,
        probes,
        table: LiveTable::new(),
        modules,
        namer: SiteNamer::new(),
        stacks: StackReader::new(stacks),
        traces: Vec::new(),
        libc_name: plan
            .heap_lib()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sample_bytes: opts.probe.sample_bytes,
        latest_ns: 0,
        foreign_events: 0,
    };
    let launched = matches!(exit_watch, ExitWatch::Child(_));
    let mut sigint = signal(SignalKind::interrupt()).map_err(io("installing SIGINT handler"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io("installing SIGTERM handler"))?;
    // Submits below the wake-up threshold do not wake us; poll for them.
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let mut report = tokio::time::interval(opts.interval.unwrap_or(Duration::from_secs(3600)));
    report.tick().await;
    let deadline = tokio::time::sleep(opts.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut prev = Summary {
        pid,
        group_by: opts.view.group_by,
        ..Summary::default()
    };
    let mut signalled = false;
    let mut exit = None;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(io("polling the ring buffer"))?;
                s.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = poll.tick() => s.drain(ring.get_mut()),
            _ = report.tick(), if opts.interval.is_some() => {
                s.drain(ring.get_mut());
                let cur = s.summary(&opts.view);
                let d = summary::diff(&prev, &cur);
                match opts.view.format {
                    Format::Table => print_out(&output::diff_table(&d, opts.view.top)),
                    Format::Json => print_out(&(output::diff_json(&d) + "\n")),
                }
                prev = cur;
            }
            r = exit_watch.wait() => {
                exit = r?;
                match exit {
                    Some(e) => note(format_args!("pid {pid} {e}")),
                    None => note(format_args!("pid {pid} exited")),
                }
                break;
            }
            () = &mut deadline => {
                note(format_args!("stopped after {}s", opts.duration.unwrap_or_default().as_secs_f64()));
                break;
            }
            _ = sigint.recv() => {
                // A terminal's Ctrl-C reached our child too; wait for it to finish.
                if launched && !signalled {
                    signalled = true;
                    note("waiting for the command to exit (Ctrl-C again to stop now)");
                } else {
                    break;
                }
            }
            _ = sigterm.recv() => {
                if launched && !signalled {
                    signalled = true;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                } else {
                    break;
                }
            }
        }
    }
    s.drain(ring.get_mut());
    if opts.verbose {
        for (name, runs, time) in s.probes.program_stats() {
            note(format_args!(
                "{name}: {runs} runs, {:.0} ns each",
                time.as_nanos() as f64 / runs as f64
            ));
        }
    }
    let heap = s.heap();
    let c = heap.counters;
    if c.lost_events > 0 {
        note(format_args!(
            "warning: {} events were lost; figures may be off by that many blocks; try a larger --ring-mb",
            c.lost_events
        ));
    }
    if c.lost_stacks > 0 {
        note(format_args!(
            "warning: {} allocations have no stack (the stack map was full); their sites are exact; try a larger --stack-entries",
            c.lost_stacks
        ));
    }
    if let Some(path) = &opts.save {
        Snapshot::of(&heap, &opts.label).save(path)?;
        note(format_args!(
            "saved {} live blocks to {}",
            s.table.len(),
            path.display()
        ));
    }
    let extras = SummaryExtras {
        exit: exit.map(Exit::to_json),
        tracer_peak_rss_kb: status_kb("VmHWM:"),
        tracer_rss_kb: status_kb("VmRSS:"),
        tracer_cpu_ms: cpu_ms(),
        probed: Some(probed),
    };
    print_out(&view::render(&heap, &opts.view, &extras)?);
    Ok(Outcome { pid, exit })
}

/// A figure in KiB from this process's `/proc/self/status` (`VmHWM:` peak resident set,
/// `VmRSS:` resident set now).
pub fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time this process has used, user and system, in milliseconds.
pub fn cpu_ms() -> Option<u64> {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) } != 0 {
        return None;
    }
    let ms = |t: libc::timeval| -> Option<u64> {
        Some(u64::try_from(t.tv_sec).ok()? * 1000 + u64::try_from(t.tv_usec).ok()? / 1000)
    };
    Some(ms(ru.ru_utime)? + ms(ru.ru_stime)?)
}
