//! The traced processes: one live table per process image, the events of each routed to it by
//! pid, and its call paths named while the process is still there to ask.
//!
//! A process that execs gets a new image (a new table, new names) under the same pid; the old
//! image ends there, with what it had live at the exec, since exec discards that heap.

use std::fs;

use muppy_core::model::{Counters, End, Frame, Heap, Identity, MapRow, Trace};

use crate::{
    probe::ProbePlan,
    regions::Regions,
    stacks::StackReader,
    symbols::{Modules, SiteNamer},
    table::LiveTable,
};

/// Reads `pid`'s name and namespace pid from `/proc`; what cannot be read stays empty.
pub fn identity(pid: u32) -> Identity {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default();
    let ns_pid = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("NSpid:"))?.to_string();
            line.split_whitespace().last()?.parse::<u32>().ok()
        })
        .filter(|&n| n != pid);
    Identity { pid, ns_pid, comm }
}

/// One process image and everything recorded about it.
pub struct Process {
    /// Who it is.
    pub id: Identity,
    /// The pid it was forked from, when muppy saw the fork.
    pub parent: Option<u32>,
    /// What was probed for it.
    pub plan: Option<ProbePlan>,
    /// Its live blocks.
    pub table: LiveTable,
    /// Its executable mappings, kept as they were seen (also after they are unmapped).
    pub modules: Modules,
    namer: SiteNamer,
    /// The table's traces, named, in the same order.
    pub traces: Vec<Trace>,
    /// File name of the library serving malloc, to tell its own frees from the program's.
    heap_lib: String,
    /// How it ended, once it has.
    pub end: Option<End>,
    /// Its table holds everything it allocated: it was traced from its first instruction (or
    /// its attach). False when it was first seen, or its allocator probed, while it ran
    /// (`--all`): older blocks are missing and their frees count as unknown.
    pub whole: bool,
    latest_ns: u64,
    /// System-wide: the [`crate::symbols::maps_sum`] the probes were told, for their choice
    /// at its exit.
    pub maps_told: Option<u64>,
    /// Indices of [`Process::traces`] with a frame in no module known when they were named:
    /// named again once the kernel sends mappings (the process ended before its maps could be
    /// read, and its mappings come with its exit, perhaps in a later batch of events).
    unplaced: Vec<usize>,
    /// Mappings came from the kernel since the last [`Process::settle`].
    learnt: bool,
    /// Memory it mapped itself, outside the allocator.
    regions: Regions,
    /// The regions' sites, named, in the same order.
    region_names: Vec<Frame>,
}

impl Process {
    /// Starts recording `pid`, reading its identity and mappings now.
    pub fn new(pid: u32, parent: Option<u32>, plan: Option<ProbePlan>) -> Self {
        let mut modules = Modules::new(pid);
        let _ = modules.refresh();
        let heap_lib = plan
            .as_ref()
            .and_then(|p| p.heap_lib().file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            id: identity(pid),
            parent,
            plan,
            table: LiveTable::new(),
            modules,
            namer: SiteNamer::new(),
            traces: Vec::new(),
            heap_lib,
            end: None,
            whole: true,
            latest_ns: 0,
            maps_told: None,
            unplaced: Vec::new(),
            learnt: false,
            regions: Regions::default(),
            region_names: Vec::new(),
        }
    }

    /// Applies one of its changes.
    /// Applies one change; `sample_bytes` as the session samples (see [`LiveTable::apply`]).
    pub fn apply(&mut self, change: &crate::event::Change, sample_bytes: u64) {
        match change {
            crate::event::Change::Map(m) => self.regions.apply(m),
            crate::event::Change::Heap(h) => self.table.apply(h, sample_bytes),
        }
        self.latest_ns = self.latest_ns.max(change.ts_ns());
    }

    /// What it has mapped itself, per site. The dynamic loader's mappings (zero-filled pages
    /// of libraries it loads, its own start-up allocator) are the loader's, not the program's.
    pub fn mappings(&self) -> Vec<MapRow> {
        let modules = &self.modules;
        self.regions.rows(|i| {
            let by_loader = modules
                .find(self.regions.sites()[i])
                .is_some_and(|m| crate::probe::is_loader(m.name()));
            if by_loader {
                return None;
            }
            Some(
                self.region_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| Frame::unknown(self.regions.sites()[i])),
            )
        })
    }

    /// Takes in mappings read elsewhere (`/proc/PID/maps` text) for naming its sites.
    pub fn learn_maps(&mut self, text: &str) {
        self.modules.learn(text);
    }

    /// Takes in a mapping the kernel sent as the process exited, which user space had not seen
    /// (see [`crate::event::Event::ExitMapping`]), for naming its sites as `/proc/PID/maps`
    /// would have.
    pub fn learn_exit_mapping(&mut self, m: &crate::event::ExitMap) {
        let Some(path) = &m.path else {
            return;
        };
        self.modules.add(vec![crate::symbols::MapsEntry {
            start: m.start,
            end: m.end,
            offset: m.offset,
            path: path.to_string_lossy().into_owned(),
            file_id: Some((m.dev, m.ino)),
        }]);
        self.learnt = true;
    }

    /// Housekeeping after a batch of events: forgets old displaced blocks and names the call
    /// paths that appeared, while the process is still there to ask about libraries it loaded
    /// since (mapped files stay open afterwards, so names made later still resolve).
    pub fn settle(&mut self, stacks: &StackReader) {
        // A realloc is never in flight for 10 s; older displaced blocks are just freed ones.
        self.table
            .prune_displaced(self.latest_ns.saturating_sub(10_000_000_000));
        if std::mem::take(&mut self.learnt) && !self.unplaced.is_empty() {
            self.name_unplaced(stacks);
        }
        let keys = &self.table.traces()[self.traces.len()..];
        let new_regions = &self.regions.sites()[self.region_names.len()..];
        if keys.is_empty() && new_regions.is_empty() {
            return;
        }
        let paths: Vec<_> = keys.iter().map(|k| stacks.path(k)).collect();
        let modules = &mut self.modules;
        if paths
            .iter()
            .flat_map(|p| &p.addrs)
            .chain(new_regions)
            .any(|&a| modules.find(a).is_none())
        {
            let _ = modules.refresh();
        }
        for &a in new_regions {
            self.region_names
                .push(Frame::clone(self.namer.frame(modules, a)));
        }
        for p in paths {
            let frames: Vec<_> = p
                .addrs
                .iter()
                .map(|&a| self.namer.frame(modules, a).clone())
                .collect();
            if frames.iter().any(|f| f.module.is_none()) {
                self.unplaced.push(self.traces.len());
            }
            self.traces.push(Trace {
                frames,
                state: p.state,
            });
        }
    }

    /// Names again the traces that had frames in no known module, now that the kernel sent
    /// mappings: what the namer remembered of those addresses is forgotten first.
    fn name_unplaced(&mut self, stacks: &StackReader) {
        self.namer.forget_unplaced();
        let keys = self.table.traces();
        for i in std::mem::take(&mut self.unplaced) {
            let (Some(key), Some(trace)) = (keys.get(i), self.traces.get_mut(i)) else {
                continue;
            };
            let frames: Vec<_> = stacks
                .path(key)
                .addrs
                .iter()
                .map(|&a| self.namer.frame(&self.modules, a).clone())
                .collect();
            if frames.iter().any(|f| f.module.is_none()) {
                self.unplaced.push(i);
            }
            trace.frames = frames;
        }
    }

    /// Its trust counters: its own unknown frees and events, added to `session`'s figures
    /// (lost events and stacks, which the probes count for all processes together, so each
    /// process's figures may be off by up to that many; the age resolution).
    pub fn counters(&self, session: Counters) -> Counters {
        let (mut program, mut libc) = (0, 0);
        for (caller, n) in self.table.unknown_free_callers() {
            if self.modules.in_module_named(caller, &self.heap_lib) {
                libc += n;
            } else {
                program += n;
            }
        }
        Counters {
            unknown_frees: program,
            libc_unknown_frees: libc,
            events: self.table.stats().events,
            ..session
        }
    }

    /// Its modules and its namer, to name code addresses (a leak check's stack frames).
    pub fn naming(&mut self) -> (&Modules, &mut SiteNamer) {
        (&self.modules, &mut self.namer)
    }

    /// Its heap now, for the views.
    pub fn heap(&self, now_ns: u64, counters: Counters, sample_bytes: u64) -> Heap<'_> {
        Heap {
            pid: self.id.pid,
            blocks: &self.table,
            traces: &self.traces,
            now_ns,
            counters,
            sample_bytes,
            modules: self.modules.files(),
            allocated: self.table.allocated(),
        }
    }

    /// `running`, `exited with code 0`, `exec'd /bin/true`; `(traced from mid-run)` after it
    /// when its table is not whole.
    pub fn state(&self) -> String {
        let state = self
            .end
            .as_ref()
            .map_or_else(|| "running".to_string(), End::to_string);
        if self.whole {
            state
        } else {
            state + " (traced from mid-run)"
        }
    }
}
