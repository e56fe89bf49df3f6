//! A tracing session: probes → ring → tables → summary/diff → output, for one process (and its
//! children, with `--follow-forks`) or for every process (`--all`), from attach or launch until
//! the target exits, the duration ends, or a signal arrives.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::Write,
    num::NonZeroU32,
    path::PathBuf,
    time::Duration,
};

use muppy_common::EventKind;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::oneshot,
};

use crate::{
    output::{self, SummaryExtras},
    probe::{self, ProbeConfig, ProbeError, ProbePlan, ProbePoint, Probes, Scope},
    process::{End, Process},
    ring,
    snapshot::{Snapshot, SnapshotError},
    stacks::StackReader,
    summary::{self, Summary},
    target::{self, Exit, Launched, Release, Root, TargetError, Tracer, TreeEvent},
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
    /// Trace the target's children too, each with its own table, re-resolving the allocator
    /// of each program exec'd.
    pub follow_forks: bool,
    /// Processes to show in full when there are several.
    pub top_procs: usize,
    /// Trace the anonymous memory processes map themselves.
    pub mappings: bool,
}

/// Which process to trace.
#[derive(Debug)]
pub enum Mode {
    /// A running process.
    Attach(u32),
    /// A forked child, paused before exec, and the plan for the allocator it will load.
    Launch(Launched, ProbePlan),
    /// Every process that uses a probed allocator, new ones included.
    All,
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

/// Says on stderr what the plan leaves out, and with `verbose` where each probe goes and why.
fn tell_plan(plan: &ProbePlan, verbose: bool) {
    for lib in &plan.libs {
        let path = lib.path.display();
        if !lib.missing.is_empty() {
            note(format_args!(
                "{path} has no {}; not probed",
                lib.missing.join(", ")
            ));
        }
        if verbose {
            match lib.teardown {
                Some(t) => note(format_args!(
                    "probe thread teardown at {path}+{t:#x}: frees read their caller only while a thread is in teardown"
                )),
                None if std::ptr::eq(lib, &plan.libs[0]) => note(format_args!(
                    "{path} has no thread-teardown marker: every free reads its caller (≈60 ns more)"
                )),
                None => {}
            }
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
}

/// What was probed, for the JSON summary.
fn plan_json(plan: &ProbePlan) -> serde_json::Value {
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
    /// `--all`: no one process ends the session.
    Never,
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
            ExitWatch::Never => std::future::pending().await,
        }
    }
}

/// A request from the ptrace thread: an event about a followed process, handled while that
/// process waits; dropping `done` lets it go on.
struct Request {
    event: TreeEvent,
    done: Release,
}

/// The ptrace thread's report of the root's end, and its handle (freeze, read, resume) if
/// seizing the root worked.
type Follower = (
    oneshot::Receiver<Result<Exit, TargetError>>,
    Result<Tracer, TargetError>,
);

/// The state a session accumulates.
struct Session {
    probes: Probes,
    stacks: StackReader,
    /// The process traced first (the command, or `--pid`); 0 with `--all`.
    root: u32,
    /// Process images being traced, by pid.
    live: BTreeMap<u32, Process>,
    /// Images that ended, kept for the final report (not with `--all`, which reports each as
    /// it ends and forgets it).
    ended: Vec<Process>,
    /// Per scope, the probe points attached, by (device, inode, offset): the root's pid, 0
    /// for every process (`--all`), `u32::MAX` for the followed children.
    attached: HashMap<u32, HashSet<(u64, u64, u64)>>,
    /// `--all`: events of unknown pids start a new process.
    all: bool,
    /// `--all`: processes whose files were looked at, and the files (device, inode) seen.
    scanned: HashSet<u32>,
    seen_files: HashSet<(u64, u64)>,
    /// `--all`: processes that were running when the session began (until they end).
    preexisting: HashSet<u32>,
    /// The launched command's own exec is still to come (its plan is in place already).
    root_exec_pending: bool,
    allocator: Option<String>,
    sample_bytes: u64,
    /// Events from pids without a table (none are expected: the probes filter by process).
    foreign_events: u64,
    view: ViewOptions,
}

impl Session {
    fn drain(&mut self, ring: &mut ring::Ring) {
        let (live, foreign, all, preexisting) = (
            &mut self.live,
            &mut self.foreign_events,
            self.all,
            &mut self.preexisting,
        );
        let mut ended = Vec::new();
        let mut execd = Vec::new();
        ring.drain(|ev| match EventKind::from_u32(ev.kind) {
            // --all: a process's events before these belong to its old image, after them to
            // the new one (or to none).
            Some(EventKind::Exec) => {
                let comm = comm_text(ev);
                if let Some(mut old) = live.remove(&ev.pid) {
                    old.end = Some(End::Exec(comm.clone()));
                    ended.push(old);
                }
                let mut p = Process::new(ev.pid, None, None);
                if p.id.comm.is_empty() {
                    p.id.comm = comm; // already gone
                }
                live.insert(ev.pid, p);
                execd.push(ev.pid);
            }
            Some(EventKind::Exit) => {
                preexisting.remove(&ev.pid); // its pid may be reused by a new process
                if let Some(mut p) = live.remove(&ev.pid) {
                    if p.id.comm.is_empty() {
                        p.id.comm = comm_text(ev);
                    }
                    p.end = Some(End::Gone);
                    ended.push(p);
                }
            }
            _ => match live.get_mut(&ev.pid) {
                Some(p) => p.apply(ev),
                // A process that ran before the session began is traced from mid-run: what it
                // allocated before is not in its table. One started since (forked) is whole.
                None if all => live
                    .entry(ev.pid)
                    .or_insert_with(|| {
                        let mut p = Process::new(ev.pid, None, None);
                        p.whole = !preexisting.contains(&ev.pid);
                        p
                    })
                    .apply(ev),
                None => *foreign += 1,
            },
        });
        for p in self.live.values_mut().chain(&mut ended) {
            p.settle(&mut self.stacks);
        }
        for p in ended {
            self.finish(p);
        }
        for pid in execd {
            self.scanned.remove(&pid); // a new program
            self.discover_pid(pid);
        }
    }

    /// Probes `plan` for process `pid`: the root gets probes of its own (the kernel filters,
    /// nothing else fires); any other (a child) is followed through probes shared by every
    /// process, placed once per point, since the kernel takes ≈0.1 s to place or remove each
    /// probe, too long at every fork. 0: every process (`--all`). Points already probed for
    /// the same scope are skipped.
    fn attach(&mut self, pid: u32, plan: &ProbePlan) -> Result<(), ProbeError> {
        let (key, scope) = match NonZeroU32::new(pid) {
            None => (0, Scope::All),
            Some(p) if pid == self.root => (pid, Scope::One(p)),
            Some(_) => {
                self.probes.follow_pid(pid, true);
                (u32::MAX, Scope::Followed)
            }
        };
        if pid != 0 {
            self.probes.map_pid(pid, true);
        }
        let done = self.attached.entry(key).or_default();
        let mut new = Vec::new();
        let fresh = plan.only(|id| {
            let is_new = !done.contains(&id);
            if is_new {
                new.push(id);
            }
            is_new
        });
        self.probes.attach(&fresh, scope)?;
        if plan.libs[0].teardown.is_none() {
            self.probes.read_every_free_caller()?;
        }
        // Counted as probed once placed: a failed attach is tried again for the next process.
        self.attached.entry(key).or_default().extend(new);
        Ok(())
    }

    /// What a process that just exec'd will use, from its new executable, seen from inside
    /// its root, with its own loader environment.
    fn resolve(&self, pid: u32) -> Result<ProbePlan, ProbeError> {
        let exe =
            std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|source| ProbeError::Read {
                path: format!("/proc/{pid}/exe"),
                source,
            })?;
        let env = probe::loader_env(pid);
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        probe::plan(
            &probe::candidates_in_root(&probe::inner_path(pid, &exe), &root, &env)?,
            self.allocator.as_deref(),
        )
    }

    /// Handles what the ptrace thread saw, while the process concerned waits.
    fn handle(&mut self, event: TreeEvent, ring: &mut ring::Ring) {
        // [pre-exec images, target-thread] The old image's mappings, gone with its exec: known
        // before its last events are drained and named.
        if let TreeEvent::OldImage { pid, mappings } = &event
            && let Some(p) = self.live.get(pid)
        {
            p.modules
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(mappings.clone());
        }
        self.drain(ring);
        match event {
            TreeEvent::OldImage { .. } => {} // [pre-exec images] handled above
            TreeEvent::Forked { parent, child } => {
                let plan = self.live.get(&parent).and_then(|p| p.plan.clone());
                if let Some(plan) = &plan
                    && let Err(e) = self.attach(child, plan)
                {
                    note(format_args!("pid {child} is not traced: {e}"));
                }
                self.live
                    .insert(child, Process::new(child, Some(parent), plan));
            }
            TreeEvent::Exec { pid } => {
                if pid == self.root && self.root_exec_pending {
                    self.root_exec_pending = false;
                    return;
                }
                let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let parent = self.live.get(&pid).and_then(|p| p.parent);
                if let Some(mut old) = self.live.remove(&pid) {
                    old.end = Some(End::Exec(exe.clone()));
                    self.finish(old);
                }
                let plan = self
                    .resolve(pid)
                    .and_then(|plan| self.attach(pid, &plan).map(|()| plan));
                let plan = match plan {
                    Ok(plan) => Some(plan),
                    Err(e) => {
                        note(format_args!("pid {pid} ({exe}) is not traced: {e}"));
                        None
                    }
                };
                self.live.insert(pid, Process::new(pid, parent, plan));
            }
            TreeEvent::Exiting { pid } => {
                if let Some(p) = self.live.get(&pid) {
                    let _ = p
                        .modules
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .refresh();
                }
            }
            TreeEvent::Exited { pid, exit } => {
                if let Some(mut p) = self.live.remove(&pid) {
                    p.end = Some(End::Exit(exit));
                    self.finish(p);
                }
                self.probes.map_pid(pid, false);
                self.probes.follow_pid(pid, false);
            }
        }
    }

    /// Keeps an ended image for the final report, or with `--all` reports it now and frees
    /// its table. An image that recorded nothing (a child that only exec'd) is dropped.
    fn finish(&mut self, p: Process) {
        self.scanned.remove(&p.id.pid);
        self.preexisting.remove(&p.id.pid);
        // An image that recorded nothing (a child that only exec'd; with --all, any process
        // that never allocated while traced) has nothing to report.
        let mappings = p.mappings();
        if p.table.stats().events == 0
            && mappings.is_empty()
            && (self.all || matches!(p.end, Some(End::Exec(_))))
        {
            return;
        }
        if self.all {
            let heap = p.heap(monotonic_ns(), self.counters(&p), self.sample_bytes);
            print_out(&view::render_ended(
                &p.id,
                &p.state(),
                &heap,
                &mappings,
                &self.view,
            ));
        } else {
            self.ended.push(p);
        }
    }

    /// `--all`: ends the processes that are gone (their exit was not seen).
    fn reap(&mut self, ring: &mut ring::Ring) {
        let gone: Vec<u32> = self
            .live
            .keys()
            .copied()
            .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        if gone.is_empty() {
            return;
        }
        self.drain(ring);
        for pid in gone {
            if let Some(mut p) = self.live.remove(&pid) {
                p.end = Some(End::Gone);
                self.finish(p);
            }
        }
    }

    /// `--all`: probes the allocators of processes started since the last look.
    fn discover(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        let me = std::process::id();
        for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            if pid != me {
                self.discover_pid(pid);
            }
        }
    }

    /// `--all`: probes `pid`'s allocator in every process, if it is not probed yet. A
    /// process is looked at once, and its files are read only if some are new to the session.
    fn discover_pid(&mut self, pid: u32) {
        use std::os::unix::fs::MetadataExt as _;
        if !self.scanned.insert(pid) {
            return;
        }
        let Ok(c) = probe::candidates_of_pid(pid) else {
            return;
        };
        let ids: Vec<(u64, u64)> = std::iter::once(&c.exe)
            .chain(&c.libs)
            .filter_map(|p| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino())))
            .collect();
        if !ids.is_empty() && ids.iter().all(|id| self.seen_files.contains(id)) {
            return;
        }
        let Ok(plan) = probe::plan(&c, None) else {
            return;
        };
        // Only files whose plan was made count as seen: another process may still plan them.
        self.seen_files.extend(ids);
        let before = self.attached.get(&0).map_or(0, HashSet::len);
        if let Err(e) = self.attach(0, &plan) {
            note(format_args!("{}: {e}", plan.describe()));
        }
        // Its allocator was probed only now: what it allocated before is not in its table.
        if self.attached.get(&0).map_or(0, HashSet::len) > before
            && let Some(p) = self.live.get_mut(&pid)
        {
            p.whole = false;
        }
    }

    /// Every image, the live ones first, for the report.
    fn images(&self) -> Vec<&Process> {
        self.live.values().chain(&self.ended).collect()
    }

    fn counters(&self, p: &Process) -> crate::heap::Counters {
        p.counters(crate::heap::Counters {
            lost_events: self.probes.lost_events(),
            lost_stacks: self.probes.lost_stacks(),
            age_resolution_ns: self.probes.age_resolution_ns(),
            ..crate::heap::Counters::default()
        })
    }

    /// The one image the session is about, when there is one: the root, with no other
    /// process seen.
    fn single(&self) -> Option<&Process> {
        match (self.all, self.images().as_slice()) {
            (false, [p]) => Some(p),
            _ => None,
        }
    }

    /// The latest image of the root process, for `--save`.
    fn root_image(&self) -> Option<&Process> {
        self.live
            .get(&self.root)
            .or_else(|| self.ended.iter().rev().find(|p| p.id.pid == self.root))
    }
}

/// The command name a process event carries.
fn comm_text(ev: &muppy_common::Event) -> String {
    let c = muppy_common::ProcEvent::comm_of(ev);
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock blocks are stamped in (see [`crate::clock`]).
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

/// Starts the ptrace thread that follows `root` (and its children with `children`), sending
/// each event to the session, the process concerned held until the session drops the
/// request's release.
fn start_follower(
    root: Root,
    children: bool,
    requests: tokio::sync::mpsc::UnboundedSender<Request>,
) -> Follower {
    let (exit_tx, exit_rx) = oneshot::channel();
    let tracer = Tracer::start(
        Some(root),
        children,
        // A request the session no longer takes is dropped, and its release with it.
        move |event, done| drop(requests.send(Request { event, done })),
        move |r| drop(exit_tx.send(r)),
    );
    (exit_rx, tracer)
}

/// Runs a session to its end and prints its diffs and final summary.
pub async fn run(mode: Mode, opts: &Options) -> Result<Outcome, TraceError> {
    raise_fd_limit();
    let probes = Probes::load(opts.probe)?;
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
    let stacks = StackReader::new(None);
    let mut s = Session {
        probes,
        stacks,
        root: 0,
        live: BTreeMap::new(),
        ended: Vec::new(),
        attached: HashMap::new(),
        all: matches!(mode, Mode::All),
        scanned: HashSet::new(),
        seen_files: HashSet::new(),
        preexisting: HashSet::new(),
        root_exec_pending: false,
        allocator: opts.allocator.clone(),
        sample_bytes: opts.probe.sample_bytes,
        foreign_events: 0,
        view: opts.view.clone(),
    };
    if opts.mappings {
        s.probes.watch_mappings()?;
    }
    let (req_tx, mut requests) = tokio::sync::mpsc::unbounded_channel::<Request>();
    // The ptrace thread's handle, where one follows the target: leak verdicts (the next
    // issue) freeze, read and resume through it.
    let mut _tracer: Option<Tracer> = None;
    let mut exit_watch = match mode {
        Mode::Attach(pid) => {
            target::check_pid(pid)?;
            let plan = probe::plan(&probe::candidates_of_pid(pid)?, opts.allocator.as_deref())?;
            s.root = pid;
            s.attach(pid, &plan)?;
            tell_plan(&plan, opts.verbose);
            let what = plan.describe();
            s.live.insert(pid, Process::new(pid, None, Some(plan)));
            let watch = if opts.follow_forks {
                let (rx, tracer) = start_follower(Root::Running(pid), true, req_tx.clone());
                _tracer = Some(tracer?);
                ExitWatch::Child(rx)
            } else {
                // SAFETY: the AsyncFd owns the pidfd, so it stays open while registered.
                let watch = unsafe {
                    AsyncFd::register_with_interest(target::pidfd(pid)?, Interest::READABLE)
                }
                .map_err(|e| io("watching the target")(e.into()))?;
                ExitWatch::Pidfd(watch)
            };
            // Said last: a script may take it as the sign that tracing has begun.
            let pids = s.live.get(&pid).map_or(pid.to_string(), |p| p.id.pids());
            note(format_args!("tracing pid {pids}: {what}; Ctrl-C to stop"));
            watch
        }
        Mode::Launch(launched, plan) => {
            let pid = launched.pid;
            s.root = pid;
            s.root_exec_pending = opts.follow_forks;
            s.attach(pid, &plan)?;
            tell_plan(&plan, opts.verbose);
            let (rx, tracer) =
                start_follower(Root::Launched(pid), opts.follow_forks, req_tx.clone());
            match tracer {
                Ok(t) => _tracer = Some(t),
                Err(e) => note(format_args!(
                    "{e}; sites in libraries unloaded at exit may stay unnamed"
                )),
            }
            launched.release()?;
            note(format_args!("tracing pid {pid}: {}", plan.describe()));
            // Created after exec, so that its name and mappings are the program's.
            s.live.insert(pid, Process::new(pid, None, Some(plan)));
            ExitWatch::Child(rx)
        }
        Mode::All => {
            s.probes.watch_processes()?;
            s.discover();
            s.preexisting = s.scanned.clone();
            let files: Vec<String> = s
                .attached
                .get(&0)
                .map(HashSet::len)
                .into_iter()
                .map(|n| format!("{n} probe points"))
                .collect();
            note(format_args!(
                "tracing every process ({}); Ctrl-C to stop",
                files.join("")
            ));
            ExitWatch::Never
        }
    };
    drop(req_tx);

    // SAFETY: the AsyncFd owns the ring buffer map and its fd.
    let mut ring =
        unsafe { AsyncFd::register_with_interest(s.probes.take_ring()?, Interest::READABLE) }
            .map_err(|e| io("polling the ring buffer")(e.into()))?;
    if opts.probe.stacks > 0 {
        s.stacks = StackReader::new(Some(s.probes.take_stacks()?));
    }
    let launched = matches!(exit_watch, ExitWatch::Child(_)) && s.root != 0;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io("installing SIGINT handler"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io("installing SIGTERM handler"))?;
    // Submits below the wake-up threshold do not wake us; poll for them.
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    // --all: look for ended processes and new allocators now and then.
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    let mut report = tokio::time::interval(opts.interval.unwrap_or(Duration::from_secs(3600)));
    report.tick().await;
    let deadline = tokio::time::sleep(opts.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut prev: HashMap<u32, Summary> = HashMap::new();
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
            Some(req) = requests.recv() => {
                s.handle(req.event, ring.get_mut());
                drop(req.done);
            }
            _ = housekeeping.tick(), if s.all => {
                s.reap(ring.get_mut());
                s.discover();
            }
            _ = report.tick(), if opts.interval.is_some() => {
                s.drain(ring.get_mut());
                print_out(&periodic_diff(&s, &mut prev, &opts.view));
            }
            r = exit_watch.wait() => {
                exit = r?;
                match exit {
                    Some(e) => note(format_args!("pid {} {e}", s.root)),
                    None => note(format_args!("pid {} exited", s.root)),
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
                        nix::unistd::Pid::from_raw(i32::try_from(s.root).unwrap_or(0)),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                } else {
                    break;
                }
            }
        }
    }
    // Requests still queued (a child forked as the root ended) must not stay blocked.
    while let Ok(req) = requests.try_recv() {
        s.handle(req.event, ring.get_mut());
        drop(req.done);
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
    let lost_events = s.probes.lost_events();
    let lost_stacks = s.probes.lost_stacks();
    if lost_events > 0 {
        let why: Vec<String> = s
            .probes
            .lost_events_by_reason()
            .iter()
            .map(|(d, n)| format!("{n}: {}", d.describe()))
            .collect();
        note(format_args!(
            "warning: {lost_events} events were lost ({}); figures may be off by that many blocks",
            why.join("; ")
        ));
    }
    if s.foreign_events > 0 {
        note(format_args!(
            "warning: {} events came from processes muppy was not tracing and were left out",
            s.foreign_events
        ));
    }
    if lost_stacks > 0 {
        note(format_args!(
            "warning: {lost_stacks} allocations have no stack (the stack map was full); their sites are exact; try a larger --stack-entries"
        ));
    }
    let now = monotonic_ns();
    if let Some(path) = &opts.save {
        match s.root_image() {
            Some(p) => {
                Snapshot::of(&p.heap(now, s.counters(p), s.sample_bytes), &opts.label)
                    .save(path)?;
                note(format_args!(
                    "saved {} live blocks of pid {} to {}",
                    p.table.len(),
                    p.id.pid,
                    path.display()
                ));
            }
            None => note("nothing to save: --save keeps the traced command's (or --pid's) heap"),
        }
    }
    let mut extras = SummaryExtras {
        exit: exit.map(Exit::to_json),
        tracer_peak_rss_kb: status_kb("VmHWM:"),
        tracer_rss_kb: status_kb("VmRSS:"),
        tracer_cpu_ms: cpu_ms(),
        probed: None,
        comm: None,
        ns_pid: None,
        mappings: Vec::new(),
    };
    let out = match s.single() {
        Some(p) => {
            extras.probed = p.plan.as_ref().map(plan_json);
            extras.comm = Some(p.id.comm.clone());
            extras.mappings = p.mappings();
            extras.ns_pid = p.id.ns_pid;
            view::render(
                &p.heap(now, s.counters(p), s.sample_bytes),
                &opts.view,
                &extras,
            )?
        }
        None => {
            let images = s.images();
            let procs: Vec<view::Proc<'_>> = images
                .iter()
                .map(|p| view::Proc {
                    id: &p.id,
                    parent: p.parent,
                    state: p.state(),
                    probed: p.plan.as_ref().map(ProbePlan::describe),
                    mappings: p.mappings(),
                    heap: p.heap(now, s.counters(p), s.sample_bytes),
                })
                .collect();
            view::render_procs(&procs, &opts.view, &extras, opts.top_procs)?
        }
    };
    print_out(&out);
    remove_probes_in_background();
    Ok(Outcome { pid: s.root, exit })
}

/// Raises the limit on open files to the hard limit: each followed process holds two file
/// descriptors per probed function (≈17 for glibc) while it lives, so `make -j64` would pass
/// the usual soft limit of 1024.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
        }
    }
}

/// Leaves the removal of the probes to a child process, so that muppy-trace can exit now.
///
/// The kernel removes uprobes one at a time, ≈0.09 s each (two per probed function), when
/// the last file descriptor of each is closed: ≈1.5 s for glibc. A forked child shares the
/// descriptors; it lets go of the terminal and exits, and its exit does the removing while
/// the user has the prompt back. Until then the probes still fire, into a ring no one reads.
fn remove_probes_in_background() {
    // SAFETY: the child only makes async-signal-safe calls (close, _exit).
    if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
        // SAFETY: closing our own standard descriptors, then leaving without unwinding.
        unsafe {
            libc::close(0);
            libc::close(1);
            libc::close(2);
            libc::_exit(0);
        }
    }
}

/// The periodic diff: of the one process, or of each process that changed.
fn periodic_diff(s: &Session, prev: &mut HashMap<u32, Summary>, view: &ViewOptions) -> String {
    let now = monotonic_ns();
    let single = s.single().is_some();
    let mut out = String::new();
    for p in s.live.values() {
        let cur = summary::summarize(
            &p.heap(now, s.counters(p), s.sample_bytes),
            &view.filter,
            view.group_by,
        );
        let old = prev.remove(&p.id.pid).unwrap_or_else(|| Summary {
            pid: p.id.pid,
            group_by: view.group_by,
            ..Summary::default()
        });
        let d = summary::diff(&old, &cur);
        prev.insert(p.id.pid, cur);
        if single {
            out.push_str(&match view.format {
                Format::Table => output::diff_table(&d, view.top),
                Format::Json => output::diff_json(&d) + "\n",
            });
        } else if !d.rows.is_empty() {
            out.push_str(&view::render_proc_diff(&p.id, &d, view));
        }
    }
    out
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
