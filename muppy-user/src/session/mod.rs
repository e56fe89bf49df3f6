//! A tracing session: probes → ring → tables, for one process (and its children, when
//! following) or for every process, from attach or launch until the target exits, the duration
//! ends, or a signal arrives. What happens goes to a [`Sink`] as typed events: periodic ticks,
//! processes that end, notes, and the final state. The session prints nothing.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    num::NonZeroU32,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use muppy_common::{MapsSeen, StackMode};
use muppy_core::{
    model::{Counters, End, Exit},
    report::{Facts, ProbeOffset, Probed, ProbedLibrary, ProcView, TracerUsage},
    snapshot::{Snapshot, SnapshotError},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    event::Event,
    probe::{ProbeConfig, ProbeError, ProbePlan, ProbePoint, Probes, Scope},
    process::Process,
    pump::Pump,
    stacks::{FpCode, Notice, StackDecoder, StackReader},
    target::{self, Root, TargetError, Tracer},
};

mod check;
mod follow;
mod mode;
mod sink;
mod system;

pub use crate::clock::monotonic_ns;
pub use check::{Asked, CheckSpec, RefsError};
use follow::{ExitWatch, Request};
use mode::Kind;
pub use mode::Mode;
pub use sink::{Note, SessionEvent, Sink, SinkError};
pub use system::Select;
use system::SystemWide;

/// How a session went wrong.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Probing failed.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The target could not be traced.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The sink refused an event (the report could not be shown).
    #[error(transparent)]
    Sink(SinkError),
    /// `--save` failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// `refs --addr` named no live block.
    #[error(transparent)]
    Refs(#[from] RefsError),
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

/// How long a session runs, what it records, and what it saves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Tick this often (the sink shows a diff at each tick).
    pub interval: Option<Duration>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Save the final live set to this snapshot file.
    pub save: Option<PathBuf>,
    /// What is traced (the command line, or `pid N`), recorded in snapshots.
    pub label: String,
    /// Say per probe where it went and, at the end, how long each program ran.
    pub verbose: bool,
    /// Map sizes, and whether to collect stacks.
    pub probe: ProbeConfig,
    /// `--allocator`: which file serves malloc, instead of the one detected.
    pub allocator: Option<String>,
    /// Trace the anonymous memory processes map themselves.
    pub mappings: bool,
    /// Check the root process (`leaks`, `refs`) at each tick and at the end, instead of
    /// showing its live summary.
    pub check: Option<CheckSpec>,
    /// Make the checks the sink asks for ([`Sink::request`]) at each tick: the root can be
    /// stopped and read whenever the user asks (the browser's referrers).
    pub on_request: bool,
    /// System-wide: only the processes this selects get tables.
    pub select: Option<Select>,
}

/// How a session ended.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// The target's pid (none system-wide).
    pub pid: Option<u32>,
    /// How the target ended, if it was our child and it did.
    pub exit: Option<Exit>,
}

/// What was probed for a process, as reports show it.
pub fn probed(plan: &ProbePlan) -> Probed {
    Probed {
        allocator: plan.describe(),
        libraries: plan
            .libs
            .iter()
            .map(|l| ProbedLibrary {
                library: l.path.display().to_string(),
                what: l.what.clone(),
                functions: l.points.iter().map(ProbePoint::name).collect(),
                offsets: l
                    .points
                    .iter()
                    .map(|p| ProbeOffset {
                        function: p.name(),
                        skip: p.offset - p.entry,
                    })
                    .collect(),
                missing: l.missing.clone(),
            })
            .collect(),
    }
}

/// Point ids attached, by (device, inode, offset).
type PointId = (u64, u64, u64);

/// The state a session accumulates.
struct Session<'s> {
    probes: Probes,
    stacks: StackReader,
    sink: &'s mut dyn Sink,
    kind: Kind,
    /// The process traced first (the command, or `--pid`); none system-wide.
    root: Option<u32>,
    /// Process images being traced, by pid.
    live: BTreeMap<u32, Process>,
    /// Images that ended, kept for the final report (not system-wide, where each is reported
    /// as it ends and forgotten).
    ended: Vec<Process>,
    /// Per scope, the probe points attached.
    attached: HashMap<Scope, HashSet<PointId>>,
    /// System-wide: what has been looked at.
    system: SystemWide,
    /// The ptrace thread, where one follows the target: the only user of ptrace, which can
    /// also freeze the target, read its memory and resume it.
    tracer: Option<Tracer>,
    /// The launched command's own exec is still to come (its plan is in place already).
    root_exec_pending: bool,
    allocator: Option<String>,
    sample_bytes: u64,
    /// Events from pids without a table (none are expected: the probes filter by process).
    foreign_events: u64,
    /// The check to make of the root, if any, and what the checks made remember.
    check: Option<CheckSpec>,
    /// Checks are made when the sink asks for them.
    on_request: bool,
    checks: check::Checks,
    /// `--unwind auto`: which code keeps frame pointers.
    fp_code: Option<FpCode>,
    verbose: bool,
}

impl Session<'_> {
    /// Readies stacks for process `pid`, whose program is in place: the unwinders read its
    /// mappings now (it may end before they would), and with `--unwind auto` the probes learn
    /// which of its code keeps frame pointers.
    fn plan_stacks(&mut self, pid: u32) -> Result<(), TraceError> {
        self.stacks.store().tell(Notice::Watch(pid));
        let Some((code, decided)) = self.fp_code.as_mut().and_then(|f| f.of(pid)) else {
            return Ok(());
        };
        self.probes.set_fp_code(pid, Some(&code));
        if self.verbose {
            for (path, how) in decided {
                self.note(Note::Unwind {
                    path: path.into(),
                    how,
                })?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, ev: SessionEvent<'_>) -> Result<(), TraceError> {
        self.sink.event(ev).map_err(TraceError::Sink)
    }

    fn note(&mut self, note: Note) -> Result<(), TraceError> {
        self.emit(SessionEvent::Note(note))
    }

    /// Applies the events the reader thread has sent; with `everything`, first asks it for
    /// every event the probes have sent by now (before acting on a process that waits for us,
    /// or reporting).
    fn drain(&mut self, pump: &mut Pump, everything: bool) -> Result<(), TraceError> {
        let mut ended = Vec::new();
        let mut execd = Vec::new();
        let mut apply = |batch: Vec<Event>| {
            for ev in &batch {
                self.apply(ev, &mut ended, &mut execd);
            }
            // At once: a refused process's events fill the ring until the probes know.
            self.tell_refusals();
        };
        if everything {
            pump.sync(&mut apply);
        } else {
            pump.take(&mut apply);
        }
        // Mappings the ring thread read at a process's first stack, perhaps before it exec'd.
        for (pid, text) in self.stacks.store().take_maps() {
            if let Some(p) = self.live.get_mut(&pid) {
                p.learn_maps(&text);
            }
        }
        for p in self.live.values_mut().chain(&mut ended) {
            p.settle(&self.stacks);
        }
        for p in ended {
            self.finish(p)?;
        }
        if self.kind == Kind::System {
            // What the probes are told of a pid before its exec is applied comes from the old
            // image's reading, made perhaps after the exec (of a map half made, or whole): it
            // is told as the old image's, which the probes then do not count for the new one.
            self.tell_maps_seen();
        }
        for pid in execd {
            self.system.scanned.remove(&pid); // a new program
            self.discover_pid(pid)?;
        }
        Ok(())
    }

    /// Tells the probes which processes the selection refused or admits again since.
    fn tell_refusals(&mut self) {
        for (pid, program) in std::mem::take(&mut self.system.to_tell) {
            self.probes.refuse(pid, program);
        }
    }

    /// Tells the probes which processes' mappings have been read since, and how they summed:
    /// at exit, a process that mapped no code since sends none (see
    /// [`Event::ExitMapping`]).
    fn tell_maps_seen(&mut self) {
        for (&pid, p) in &mut self.live {
            let sum = p.modules.sum();
            if let Some(sum) = sum
                && Some(sum) != p.maps_told
            {
                // A live image is its pid's latest: the execs applied so far.
                let seen = MapsSeen {
                    sum,
                    image: self.system.image(pid),
                };
                self.probes.maps_seen(pid, Some(seen));
                p.maps_told = Some(sum);
            }
        }
    }

    /// Applies one event: to its process's table, or, system-wide, a process's exec or exit
    /// (the image that ended goes to `ended`, a pid that exec'd to `execd`).
    fn apply(&mut self, ev: &Event, ended: &mut Vec<Process>, execd: &mut Vec<u32>) {
        let checkable = self.checkable();
        let sample_bytes = self.sample_bytes;
        let (live, foreign, system) = (&mut self.live, &mut self.foreign_events, &mut self.system);
        let all = self.kind == Kind::System;
        match *ev {
            // System-wide: a process's events before these belong to its old image, after
            // them to the new one (or to none).
            Event::Exec { pid, ref comm } => {
                system.execd(pid);
                if let Some(mut old) = live.remove(&pid) {
                    old.end = Some(End::Exec(comm.clone()));
                    ended.push(old);
                }
                if !system.admits(pid, Some(comm)) {
                    return;
                }
                let mut p = Process::new(pid, None, None);
                if p.id.comm.is_empty() {
                    p.id.comm = comm.clone(); // already gone
                }
                if checkable {
                    p.table.track_freed();
                }
                live.insert(pid, p);
                execd.push(pid);
            }
            // Before its exit, the mappings user space had not seen; the process may have
            // recorded nothing (and have no table).
            Event::ExitMapping { pid, ref mapping } => {
                if let Some(p) = live.get_mut(&pid) {
                    p.learn_exit_mapping(mapping);
                }
            }
            Event::Exit { pid, ref comm } => {
                // Its pid may be reused by a new process.
                system.exited(pid);
                if let Some(mut p) = live.remove(&pid) {
                    if p.id.comm.is_empty() {
                        p.id.comm = comm.clone();
                    }
                    p.end = Some(End::Gone);
                    ended.push(p);
                }
            }
            Event::Change { pid, ref change } => match live.get_mut(&pid) {
                Some(p) => p.apply(change, sample_bytes),
                // A process that ran before the session began is traced from mid-run: what it
                // allocated before is not in its table. One started since (forked) is whole.
                None if all && !system.admits(pid, None) => *foreign += 1,
                None if all => live
                    .entry(pid)
                    .or_insert_with(|| {
                        let mut p = Process::new(pid, None, None);
                        p.whole = !system.preexisting.contains(&pid);
                        if checkable {
                            p.table.track_freed();
                        }
                        p
                    })
                    .apply(change, sample_bytes),
                None => *foreign += 1,
            },
        }
    }

    /// Probes `plan` for process `pid`: the root gets probes of its own (the kernel filters,
    /// nothing else fires); any other (a child) is followed through probes shared by every
    /// process, placed once per point, since the kernel takes ≈0.1 s to place or remove each
    /// probe, too long at every fork. `None`: every process (system-wide). Points already
    /// probed for the same scope are skipped.
    fn attach(&mut self, pid: Option<u32>, plan: &ProbePlan) -> Result<(), ProbeError> {
        let scope = match pid.and_then(NonZeroU32::new) {
            None => Scope::All,
            Some(p) if pid == self.root => Scope::One(p),
            Some(p) => {
                self.probes.follow_pid(p.get(), true);
                Scope::Followed
            }
        };
        if let Some(pid) = pid {
            self.probes.map_pid(pid, true);
        }
        let done = self.attached.entry(scope).or_default();
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
        self.attached.entry(scope).or_default().extend(new);
        Ok(())
    }

    /// Says what the plan leaves out, and with `verbose` where each probe goes and why.
    fn tell_plan(&mut self, plan: &ProbePlan, verbose: bool) -> Result<(), TraceError> {
        for (i, lib) in plan.libs.iter().enumerate() {
            if !lib.missing.is_empty() {
                self.note(Note::NotProbed {
                    path: lib.path.clone(),
                    missing: lib.missing.clone(),
                })?;
            }
            if !verbose {
                continue;
            }
            // Only the allocator's own library reads every free's caller without a marker.
            if lib.teardown.is_some() || i == 0 {
                self.note(Note::Teardown {
                    path: lib.path.clone(),
                    offset: lib.teardown,
                })?;
            }
            for p in &lib.points {
                self.note(Note::Probe {
                    path: lib.path.clone(),
                    name: p.name(),
                    offset: p.offset,
                    entry: p.entry,
                    reason: p.reason.clone(),
                })?;
            }
        }
        Ok(())
    }

    /// Keeps an ended image for the final report, or system-wide reports it now and frees its
    /// table. An image that recorded nothing (a child that only exec'd; system-wide, any
    /// process that never allocated while traced) has nothing to report.
    fn finish(&mut self, p: Process) -> Result<(), TraceError> {
        self.system.forget(p.id.pid);
        // A process that exec'd lives on as a new image, whose sum is the new one's.
        if p.maps_told.is_some() && !self.live.contains_key(&p.id.pid) {
            self.probes.maps_seen(p.id.pid, None);
        }
        self.stacks.store().tell(Notice::Forget(p.id.pid));
        if self.fp_code.is_some() {
            self.probes.set_fp_code(p.id.pid, None);
        }
        let all = self.kind == Kind::System;
        // Mappings last: they are looked up only for an image that recorded no event.
        if p.table.stats().events == 0
            && (all || matches!(p.end, Some(End::Exec(_))))
            && p.mappings().is_empty()
        {
            return Ok(());
        }
        if all {
            let view = view(&p, monotonic_ns(), self.base_counters(), self.sample_bytes);
            self.emit(SessionEvent::Ended(view))?;
            // Reported and dropped: its call paths are named in the report, and no event
            // still to come is its.
            self.stacks
                .store()
                .release(p.table.traces().iter().filter_map(|k| match k.stack {
                    crate::table::StackRef::Id(id) => Some(id),
                    _ => None,
                }));
        } else {
            self.ended.push(p);
        }
        Ok(())
    }

    /// The counters the probes keep for every process together (see [`Process::counters`]).
    fn base_counters(&self) -> Counters {
        Counters {
            lost_events: self.probes.lost_events(),
            lost_stacks: self.probes.lost_stacks(),
            age_resolution_ns: self.probes.age_resolution_ns(),
            ..Counters::default()
        }
    }

    /// Whether the report is about several processes: system-wide, or more than one image.
    fn several(&self) -> bool {
        self.kind == Kind::System || self.live.len() + self.ended.len() != 1
    }

    /// The latest image of the root process, for `--save`.
    fn root_image(&self) -> Option<&Process> {
        let root = self.root?;
        self.live
            .get(&root)
            .or_else(|| self.ended.iter().rev().find(|p| p.id.pid == root))
    }

    /// Whether the root is made ready to be checked: stopped with ptrace, its freed memory
    /// tracked.
    fn checkable(&self) -> bool {
        self.check.is_some() || self.on_request
    }

    /// A check the user asked for: one that finds nothing to show (the block was freed since)
    /// says so and the session goes on.
    fn requested_check(&mut self, pump: &mut Pump, asked: &Asked) -> Result<(), TraceError> {
        let (made, spec) = (self.checks.made, &asked.spec);
        let checked = match asked.pid.or(self.root) {
            // System-wide, any process traced now; else the root, while it can be.
            Some(pid) if self.kind == Kind::System || Some(pid) != self.root => {
                if !self.live.contains_key(&pid) {
                    return self.note(Note::CheckFailed {
                        why: format!("pid {pid} is not traced now"),
                    });
                }
                self.check_pid(pump, spec, false, pid)
            }
            _ => self.check(pump, spec, false),
        };
        match checked {
            Err(TraceError::Refs(e)) => return self.note(Note::CheckFailed { why: e.to_string() }),
            r => r?,
        }
        if self.checks.made == made || !matches!(spec, CheckSpec::Leaks { .. }) {
            return Ok(());
        }
        // The blocks with their verdicts, for a sink that shows them by block (the browser).
        let (now, base) = (monotonic_ns(), self.base_counters());
        let Some(last) = &self.checks.last else {
            return Ok(());
        };
        let Some(p) = self.live.get(&last.pid) else {
            return Ok(());
        };
        let mut v = view(p, now, base, self.sample_bytes);
        v.heap.blocks = &last.blocks;
        let ev = SessionEvent::Checked {
            view: v,
            facts: last.facts,
        };
        self.sink.event(ev).map_err(TraceError::Sink)
    }

    /// The `--interval` tick: every live image, to the sink.
    fn tick(&mut self) -> Result<(), TraceError> {
        let (now, base, several) = (monotonic_ns(), self.base_counters(), self.several());
        let procs = self
            .live
            .values()
            .map(|p| view(p, now, base, self.sample_bytes))
            .collect();
        self.sink
            .event(SessionEvent::Tick { procs, several })
            .map_err(TraceError::Sink)
    }

    /// Sets the session up for `mode`: probes, the root's table, the ptrace thread.
    fn start(
        &mut self,
        mode: Mode,
        opts: &Options,
        requests: tokio::sync::mpsc::UnboundedSender<Request>,
    ) -> Result<ExitWatch, TraceError> {
        match mode {
            Mode::Attach { pid, follow } => {
                target::check_pid(pid)?;
                if self.check.is_some() {
                    // Checks stop the target with ptrace: another tracer would make them fail.
                    target::check_untraced(pid)?;
                } else if self.on_request && target::check_untraced(pid).is_err() {
                    // Only the checks asked for later cannot be made; they say so then.
                    self.on_request = false;
                }
                let plan = crate::probe::plan(
                    &crate::probe::candidates_of_pid(pid)?,
                    opts.allocator.as_deref(),
                )?;
                self.root = Some(pid);
                self.attach(Some(pid), &plan)?;
                self.tell_plan(&plan, opts.verbose)?;
                self.plan_stacks(pid)?;
                let what = plan.describe();
                let mut p = Process::new(pid, None, Some(plan));
                if self.checkable() {
                    p.table.track_freed();
                }
                let who = format!("pid {}", p.id.pids());
                self.live.insert(pid, p);
                let watch = if follow {
                    let (rx, tracer) = follow::start(Root::Running(pid), true, requests);
                    self.tracer = Some(tracer?);
                    ExitWatch::Child(rx)
                } else {
                    if self.checkable() {
                        // No following: the ptrace thread serves the checks' freezes only.
                        self.tracer = Some(Tracer::start(None, false, |_, _| {}, |_| {})?);
                    }
                    // SAFETY: the AsyncFd owns the pidfd, so it stays open while registered.
                    let watch = unsafe {
                        AsyncFd::register_with_interest(target::pidfd(pid)?, Interest::READABLE)
                    }
                    .map_err(|e| io("watching the target")(e.into()))?;
                    ExitWatch::Pidfd(watch)
                };
                // Said last: a script may take it as the sign that tracing has begun.
                self.note(Note::Tracing {
                    who,
                    what,
                    until_ctrl_c: true,
                })?;
                Ok(watch)
            }
            Mode::Launch {
                launched,
                plan,
                follow,
            } => {
                let pid = launched.pid;
                self.root = Some(pid);
                self.root_exec_pending = follow;
                self.attach(Some(pid), &plan)?;
                self.tell_plan(&plan, opts.verbose)?;
                let (rx, tracer) = follow::start(Root::Launched(pid), follow, requests);
                match tracer {
                    Ok(t) => self.tracer = Some(t),
                    Err(e) => self.note(Note::NotFollowed { why: e.to_string() })?,
                }
                // Checked where it enters `_exit`, every thread alive, as Valgrind checks; a
                // hold needs the ptrace thread to let it go.
                if self.check.is_some()
                    && self.tracer.is_some()
                    && let (Some(exit), Some(p)) = (&plan.exit, NonZeroU32::new(pid))
                {
                    self.probes.hold_exit(exit, p)?;
                }
                launched.release()?;
                self.note(Note::Tracing {
                    who: format!("pid {pid}"),
                    what: plan.describe(),
                    until_ctrl_c: false,
                })?;
                // Created after exec, so that its name and mappings are the program's.
                let mut p = Process::new(pid, None, Some(plan));
                if self.checkable() {
                    p.table.track_freed();
                }
                self.live.insert(pid, p);
                // After the table, whose names need the program's mappings before it may exec
                // again: deciding each module's frame pointers takes milliseconds.
                self.plan_stacks(pid)?;
                Ok(ExitWatch::Child(rx))
            }
            Mode::System => {
                if self.on_request {
                    // The ptrace thread serves the freezes of the checks asked for.
                    self.tracer = Some(Tracer::start(None, false, |_, _| {}, |_| {})?);
                }
                self.probes.watch_processes()?;
                // The running processes the selection refuses send nothing from the start.
                self.system.judge_running();
                self.tell_refusals();
                self.discover()?;
                self.system.preexisting = self.system.scanned.clone();
                let points = self.attached.get(&Scope::All).map_or(0, HashSet::len);
                self.note(Note::Tracing {
                    who: "every process".into(),
                    what: format!("{points} probe points"),
                    until_ctrl_c: true,
                })?;
                Ok(ExitWatch::Never)
            }
        }
    }

    /// The end of the session: warnings, `--save`, and the final state to the sink.
    fn end(&mut self, opts: &Options, exit: Option<Exit>) -> Result<(), TraceError> {
        if opts.verbose {
            let stats: Vec<(String, u64, Duration)> = self
                .probes
                .program_stats()
                .into_iter()
                .map(|(name, runs, time)| (name.to_string(), runs, time))
                .collect();
            for (name, runs, time) in stats {
                self.note(Note::ProgramTime { name, runs, time })?;
            }
        }
        let lost_events = self.probes.lost_events();
        let lost_stacks = self.probes.lost_stacks();
        let store = self.stacks.store();
        let copies = store.copies.load(Ordering::Relaxed);
        if opts.verbose && copies > 0 {
            let note = Note::StackCost {
                copies,
                bytes: store.copied_bytes.load(Ordering::Relaxed),
                time: Duration::from_nanos(store.unwind_ns.load(Ordering::Relaxed)),
                frames: store.unwound_frames.load(Ordering::Relaxed),
                paths: store.len(),
            };
            self.note(note)?;
        }
        if lost_events > 0 {
            let reasons = self.probes.lost_events_by_reason();
            self.note(Note::LostEvents {
                count: lost_events,
                reasons,
            })?;
        }
        let under_way = self.probes.under_way_at_attach();
        if opts.verbose && under_way > 0 {
            self.note(Note::UnderWayAtAttach { count: under_way })?;
        }
        if self.foreign_events > 0 {
            let count = self.foreign_events;
            self.note(Note::ForeignEvents { count })?;
        }
        if lost_stacks > 0 {
            self.note(Note::LostStacks { count: lost_stacks })?;
        }
        let (now, base) = (monotonic_ns(), self.base_counters());
        if let Some(path) = &opts.save {
            let saved = match (&self.checks.last, self.root_image()) {
                // The blocks with their verdicts, as the last check found them.
                (Some(check::LastCheck { pid, blocks, facts }), Some(p)) => {
                    let heap = p.heap(now, p.counters(base), self.sample_bytes);
                    let snap = Snapshot {
                        check: Some(*facts),
                        ..Snapshot::of(&muppy_core::model::Heap { blocks, ..heap }, &opts.label)
                    };
                    snap.save(path)?;
                    Note::Saved {
                        blocks: blocks.len(),
                        pid: *pid,
                        path: path.clone(),
                    }
                }
                (None, Some(p)) => {
                    Snapshot::of(
                        &p.heap(now, p.counters(base), self.sample_bytes),
                        &opts.label,
                    )
                    .save(path)?;
                    Note::Saved {
                        blocks: p.table.len(),
                        pid: p.id.pid,
                        path: path.clone(),
                    }
                }
                (_, None) => Note::NothingToSave,
            };
            self.note(saved)?;
        }
        let facts = Facts {
            exit,
            tracer: TracerUsage {
                peak_rss_kb: status_kb("VmHWM:"),
                rss_kb: status_kb("VmRSS:"),
                cpu_ms: cpu_ms(),
            },
        };
        let several = self.several();
        let procs: Vec<ProcView<'_>> = self
            .live
            .values()
            .chain(&self.ended)
            .map(|p| view(p, now, base, self.sample_bytes))
            .collect();
        self.sink
            .event(SessionEvent::Final {
                procs,
                several,
                facts,
            })
            .map_err(TraceError::Sink)
    }
}

/// Runs a session to its end, telling `sink` what happens.
pub async fn run(mode: Mode, opts: &Options, sink: &mut dyn Sink) -> Result<Outcome, TraceError> {
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
    let kind = match mode {
        Mode::Launch { .. } => Kind::Launch,
        Mode::Attach { .. } => Kind::Attach,
        Mode::System => Kind::System,
    };
    let mut s = Session {
        probes,
        stacks: StackReader::default(),
        sink,
        kind,
        root: None,
        live: BTreeMap::new(),
        ended: Vec::new(),
        attached: HashMap::new(),
        system: SystemWide {
            select: opts.select.clone(),
            ..SystemWide::default()
        },
        tracer: None,
        root_exec_pending: false,
        allocator: opts.allocator.clone(),
        sample_bytes: opts.probe.sample_bytes,
        foreign_events: 0,
        check: opts.check.clone(),
        on_request: opts.on_request,
        checks: check::Checks {
            two_checks: opts.interval.is_some(),
            ..check::Checks::default()
        },
        fp_code: (opts.probe.stack_mode == StackMode::Auto).then(FpCode::default),
        verbose: opts.verbose,
    };
    if opts.mappings {
        s.probes.watch_mappings()?;
    }
    // The reader runs before any probe is attached: a busy process fills the ring within
    // tens of milliseconds of the attach, while the session is still reading its mappings.
    let decoder = StackDecoder::new(Arc::clone(s.stacks.store()));
    let mut pump =
        Pump::start(s.probes.take_ring()?, decoder).map_err(io("starting the ring reader"))?;
    if !pump.realtime {
        s.note(Note::NotRealtime)?;
    }
    let (req_tx, mut requests) = tokio::sync::mpsc::unbounded_channel::<Request>();
    // Before the start, which says "tracing": a Ctrl-C that follows must end the session
    // with its report, not kill it.
    let mut sigint = signal(SignalKind::interrupt()).map_err(io("installing SIGINT handler"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io("installing SIGTERM handler"))?;
    let mut exit_watch = s.start(mode, opts, req_tx)?;

    let launched = kind == Kind::Launch;
    // System-wide: look for ended processes and new allocators now and then.
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    let mut report = tokio::time::interval(opts.interval.unwrap_or(Duration::from_secs(3600)));
    report.tick().await;
    let deadline = tokio::time::sleep(opts.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut signalled = false;
    let mut exit = None;
    loop {
        tokio::select! {
            r = pump.ready() => {
                r.map_err(io("waiting for the ring reader"))?;
                s.drain(&mut pump, false)?;
            }
            Some(req) = requests.recv() => {
                s.handle(req.event, &mut pump)?;
                drop(req.done);
            }
            _ = housekeeping.tick(), if kind == Kind::System => {
                s.reap(&mut pump)?;
                s.discover()?;
                // The files of programs no process runs any more, on a machine that keeps
                // starting new ones.
                crate::symbols::release_unused_files(std::time::Instant::now());
            }
            _ = report.tick(), if opts.interval.is_some() => {
                match s.check.clone() {
                    Some(spec) => s.check(&mut pump, &spec, s.checks.two_checks)?,
                    None => {
                        s.drain(&mut pump, true)?;
                        s.tick()?;
                        if s.on_request && let Some(asked) = s.sink.request() {
                            s.requested_check(&mut pump, &asked)?;
                        }
                    }
                }
            }
            r = exit_watch.wait() => {
                exit = r?;
                let pid = s.root.unwrap_or_default();
                s.note(Note::TargetEnded { pid, exit })?;
                break;
            }
            () = &mut deadline => {
                s.note(Note::Stopped { after: opts.duration.unwrap_or_default() })?;
                break;
            }
            _ = sigint.recv() => {
                // A terminal's Ctrl-C reached our child too; wait for it to finish.
                if launched && !signalled {
                    signalled = true;
                    s.note(Note::WaitingForCommand)?;
                } else {
                    break;
                }
            }
            _ = sigterm.recv() => {
                if launched && !signalled {
                    signalled = true;
                    if let Some(root) = s.root.and_then(|r| i32::try_from(r).ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(root),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                } else {
                    break;
                }
            }
        }
    }
    // No request is waited for from here on: a command still running (after --duration) must
    // not stop at `_exit` for a check that will not come, nor once no one follows it.
    s.probes.release_exit_hold()?;
    // Requests still queued (a child forked as the root ended) must not stay blocked.
    while let Ok(req) = requests.try_recv() {
        s.handle(req.event, &mut pump)?;
        drop(req.done);
    }
    s.drain(&mut pump, true)?;
    if let Some(spec) = s.check.clone() {
        if s.live.contains_key(&s.root.unwrap_or_default()) && exit.is_none() {
            s.check(&mut pump, &spec, s.checks.two_checks)?;
        } else if !s.checks.done {
            s.checks.done = true;
            s.note(Note::CheckFailed {
                why: "the target exited before a check could read its memory".into(),
            })?;
        }
    }
    drop(pump);
    s.end(opts, exit)?;
    let root = s.root;
    remove_probes_in_background(s.probes);
    Ok(Outcome { pid: root, exit })
}

/// Leaves the removal of the probes to a child process, so that muppy-trace can exit now.
///
/// The kernel removes uprobes one at a time, ≈0.09 s each (two per probed function), when the
/// last file descriptor of each is closed: ≈1.5 s for glibc. A forked child shares the
/// descriptors; it lets go of the terminal and waits until this process has exited (its end of
/// a pipe sees EOF), so that its own exit, not ours, closes the last descriptors while the
/// user has the prompt back. Until then the probes still fire, into a ring no one reads.
fn remove_probes_in_background(probes: Probes) {
    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    // SAFETY: the child makes only async-signal-safe calls (close, read, _exit).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: closing descriptors this child owns, blocking on its end of the pipe
            // (EOF once the parent is gone), then leaving without unwinding.
            unsafe {
                libc::close(0);
                libc::close(1);
                libc::close(2);
                libc::close(pipe[1]);
                let mut byte = 0u8;
                while libc::read(pipe[0], (&raw mut byte).cast(), 1) < 0 {}
                libc::_exit(0);
            }
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            // SAFETY: closing our copy of the child's end; ours stays open until we exit.
            unsafe { libc::close(pipe[0]) };
            // Dropping would detach each probe here, one at a time; exiting only lets go of
            // our references, and the child's are the last.
            std::mem::forget(probes);
        }
        Err(_) => {
            // SAFETY: both ends are ours.
            unsafe {
                libc::close(pipe[0]);
                libc::close(pipe[1]);
            }
        }
    }
}

/// An image as reports show it, at `now_ns`, with the probes' counters `base`.
fn view(p: &Process, now_ns: u64, base: Counters, sample_bytes: u64) -> ProcView<'_> {
    ProcView {
        id: p.id.clone(),
        parent: p.parent,
        state: p.state(),
        probed: p.plan.as_ref().map(probed),
        mappings: p.mappings(),
        heap: p.heap(now_ns, p.counters(base), sample_bytes),
    }
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
