//! What the daemon knows, shared between the session (which writes it at each tick) and the
//! API's threads (which read it): each traced process's summary per site as of its last
//! change, a copy of its heap where a client asked for one, the last processes that ended,
//! the snapshots clients took, and the checks and copies they are waiting for. Everything
//! kept is bounded, and what was dropped is counted.
//!
//! Heaps are copied only when asked for, at the next tick: copying every heap at every tick
//! would cost the tracer as much memory again as its tables, and the machine's largest heaps
//! (a compiler's millions of blocks) the most.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, mpsc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use muppy_core::{
    analysis::{self, GroupBy, Summary},
    model::{Counters, Filter, Identity, MapRow},
    report::{Probed, ProcView},
    snapshot::Snapshot,
};

use crate::session::CheckSpec;

/// Ended processes kept for queries: the most recent ones, up to this many...
pub const ENDED_KEPT: usize = 256;
/// ...with the heaps of those that fit in this many blocks among them (the others keep their
/// summary), so that large heaps that ended do not hold the daemon's memory up.
pub const ENDED_BLOCKS_KEPT: usize = 1 << 20;
/// Snapshots clients may name, per process and in all.
pub const MARKS_PER_PROCESS: usize = 16;
/// Snapshots clients may name in all.
pub const MARKS_KEPT: usize = 64;
/// Checks that may wait for the session at once.
pub const CHECKS_QUEUED: usize = 4;

/// One process image: as of its last change, and its heap if a copy was made.
#[derive(Clone, Debug)]
pub struct Image {
    /// Who.
    pub id: Identity,
    /// Its parent, if seen.
    pub parent: Option<u32>,
    /// `running`, `exited with code 0`...
    pub state: String,
    /// What was probed for it.
    pub probed: Option<Probed>,
    /// What it mapped itself.
    pub mappings: Vec<MapRow>,
    /// Its trust counters (`events` tells whether its table changed).
    pub counters: Counters,
    /// Non-zero: its blocks are samples.
    pub sample_bytes: u64,
    /// Its summary per site, every block.
    pub by_site: Arc<Summary>,
    /// Its heap, copied at a client's request; `None` until one asks (or, for an image that
    /// ended, when it was too large to keep).
    pub snap: Option<Arc<Snapshot>>,
    /// Wall-clock milliseconds since the epoch when it was last looked at.
    pub as_of_ms: u64,
}

impl Image {
    /// `p` as of now: its summary, and a copy of its heap if `copy`.
    pub fn of(p: &ProcView, label: &str, copy: bool) -> Self {
        Image {
            id: p.id.clone(),
            parent: p.parent,
            state: p.state.clone(),
            probed: p.probed.clone(),
            mappings: p.mappings.clone(),
            counters: p.heap.counters,
            sample_bytes: p.heap.sample_bytes,
            by_site: Arc::new(analysis::summarize(
                &p.heap,
                &Filter::default(),
                GroupBy::Site,
            )),
            snap: copy.then(|| Arc::new(Snapshot::of(&p.heap, label))),
            as_of_ms: unix_ms(),
        }
    }

    /// Whether `p` is what this image shows (its table did not change since).
    pub fn shows(&self, p: &ProcView) -> bool {
        self.counters.events == p.heap.counters.events && self.state == p.state
    }

    /// The image as the printers take it, if its heap was copied.
    pub fn view(&self) -> Option<ProcView<'_>> {
        let snap = self.snap.as_ref()?;
        Some(ProcView {
            id: self.id.clone(),
            parent: self.parent,
            state: self.state.clone(),
            probed: self.probed.clone(),
            mappings: self.mappings.clone(),
            heap: snap.heap(),
        })
    }

    /// Blocks its copy holds.
    fn blocks(&self) -> usize {
        self.snap.as_ref().map_or(0, |s| s.blocks.len())
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A check a client asked for, waiting for the session's next tick.
pub struct PendingCheck {
    /// Of which process.
    pub pid: u32,
    /// What to check.
    pub spec: CheckSpec,
    /// Where its answer goes.
    pub reply: mpsc::Sender<CheckAnswer>,
}

/// A check's answer.
pub enum CheckAnswer {
    /// The leak report.
    Leaks(Box<muppy_core::analysis::LeakReport>),
    /// Who points at each selected block.
    Referrers(Vec<muppy_core::analysis::RefReport>),
    /// No check was made, and why.
    Failed(String),
}

/// Which processes the daemon can check for leaks (every block of theirs recorded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Checkable {
    /// None: their blocks are samples (`--sample-bytes`).
    #[default]
    Sampled,
    /// The one it traces (`--pid`).
    One(u32),
    /// Every process it traces (`--all --sample-bytes 0`).
    All,
}

/// The daemon's state.
#[derive(Default)]
pub struct State {
    /// Live processes by pid.
    pub live: BTreeMap<u32, Image>,
    /// The last processes that ended, oldest first ([`ENDED_KEPT`], [`ENDED_BLOCKS_KEPT`]).
    pub ended: VecDeque<Image>,
    /// Processes that ended since the start.
    pub ended_total: u64,
    /// Per pid, the snapshots clients took by name.
    pub marks: HashMap<u32, BTreeMap<String, Arc<Snapshot>>>,
    /// Copies of heaps clients wait for, by pid, with where each goes.
    pub wants: Vec<(u32, mpsc::Sender<Image>)>,
    /// Checks waiting for the session.
    pub checks: VecDeque<PendingCheck>,
    /// Which processes leak checks and referrer searches can be made of.
    pub checkable: Checkable,
    /// Ticks so far.
    pub ticks: u64,
    /// Wall-clock ms of the last tick.
    pub last_tick_ms: u64,
    /// The session is over (SIGTERM): what is here is final.
    pub stopped: bool,
    /// Events the probes could not deliver, since the start.
    pub lost_events: u64,
    /// Allocations recorded without their stack, since the start.
    pub lost_stacks: u64,
}

impl State {
    /// The image of `pid`: live, else the last that ended with that pid.
    pub fn image(&self, pid: u32) -> Option<&Image> {
        self.live
            .get(&pid)
            .or_else(|| self.ended.iter().rev().find(|i| i.id.pid == pid))
    }

    /// Records that `img` ended: kept among the last [`ENDED_KEPT`] (its heap while they hold
    /// fewer than [`ENDED_BLOCKS_KEPT`] blocks), its marks dropped.
    pub fn end(&mut self, img: Image) {
        self.live.remove(&img.id.pid);
        self.marks.remove(&img.id.pid);
        self.ended_total += 1;
        self.ended.push_back(img);
        if self.ended.len() > ENDED_KEPT {
            self.ended.pop_front();
        }
        // The newest heaps are kept; older ones keep their summary only.
        let mut blocks = 0;
        for i in self.ended.iter_mut().rev() {
            blocks += i.blocks();
            if blocks > ENDED_BLOCKS_KEPT {
                i.snap = None;
            }
        }
    }

    /// Marks held in all.
    pub fn marks_held(&self) -> usize {
        self.marks.values().map(BTreeMap::len).sum()
    }
}

/// The state, shared.
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<State>>);

impl Shared {
    /// Locks it. A thread that panicked holding it left it as consistent as any tick leaves
    /// it, so a poisoned lock is taken as it is.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The image of live process `pid` with its heap copied: the copy made for an earlier
    /// request if the table has not changed since, else a new one made at the next tick
    /// (waited for up to `wait`). `None` if the process is not live or the wait ran out.
    pub fn with_heap(&self, pid: u32, wait: Duration) -> Option<Image> {
        let rx = {
            let mut st = self.lock();
            let img = st.live.get(&pid)?;
            if img.snap.is_some() {
                return Some(img.clone());
            }
            if st.stopped {
                return None;
            }
            let (tx, rx) = mpsc::channel();
            st.wants.push((pid, tx));
            rx
        };
        rx.recv_timeout(wait).ok()
    }
}
