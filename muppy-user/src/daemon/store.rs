//! What the daemon knows, shared between the session (which writes it at each tick) and the
//! API's threads (which read it): an owned copy of each traced process's heap as of the last
//! tick, the last processes that ended, the snapshots clients took, and the checks they asked
//! for. Everything kept is bounded, and what was dropped is counted.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, mpsc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use muppy_core::{
    model::{Identity, MapRow},
    report::{Probed, ProcView},
    snapshot::Snapshot,
};

use crate::session::CheckSpec;

/// Ended processes kept for queries: the most recent ones.
pub const ENDED_KEPT: usize = 256;
/// Snapshots a client may name per process.
pub const MARKS_PER_PROCESS: usize = 16;
/// Checks that may wait for the session at once.
pub const CHECKS_QUEUED: usize = 4;

/// One process image as of a tick.
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
    /// Its heap, every block.
    pub snap: Arc<Snapshot>,
    /// Wall-clock milliseconds since the epoch when it was copied.
    pub as_of_ms: u64,
}

impl Image {
    /// Copies `p` (every block).
    pub fn of(p: &ProcView, label: &str) -> Self {
        Image {
            id: p.id.clone(),
            parent: p.parent,
            state: p.state.clone(),
            probed: p.probed.clone(),
            mappings: p.mappings.clone(),
            snap: Arc::new(Snapshot::of(&p.heap, label)),
            as_of_ms: unix_ms(),
        }
    }

    /// The image as the printers take it.
    pub fn view(&self) -> ProcView<'_> {
        ProcView {
            id: self.id.clone(),
            parent: self.parent,
            state: self.state.clone(),
            probed: self.probed.clone(),
            mappings: self.mappings.clone(),
            heap: self.snap.heap(),
        }
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
    /// What to check.
    pub spec: CheckSpec,
    /// Where its answer goes.
    pub reply: mpsc::Sender<CheckAnswer>,
}

/// A check's answer.
pub enum CheckAnswer {
    /// The leak report (boxed: it is far larger than the others).
    Leaks(Box<muppy_core::analysis::LeakReport>),
    /// Who points at each selected block.
    Referrers(Vec<muppy_core::analysis::RefReport>),
    /// No check was made, and why.
    Failed(String),
}

/// The daemon's state.
#[derive(Default)]
pub struct State {
    /// Live processes by pid, as of the last tick.
    pub live: BTreeMap<u32, Image>,
    /// The last [`ENDED_KEPT`] processes that ended, oldest first.
    pub ended: VecDeque<Image>,
    /// Processes that ended since the start.
    pub ended_total: u64,
    /// Per pid, the snapshots clients took by name (`start` is the first tick's).
    pub marks: HashMap<u32, BTreeMap<String, Arc<Snapshot>>>,
    /// Checks waiting for the session.
    pub checks: VecDeque<PendingCheck>,
    /// The one process leak checks and referrer searches can be made of (`daemon --pid`).
    pub checkable: Option<u32>,
    /// Ticks so far.
    pub ticks: u64,
    /// Wall-clock ms of the last tick.
    pub last_tick_ms: u64,
    /// The tick's period.
    pub interval: Duration,
    /// Probes attached: the daemon is tracing.
    pub tracing: bool,
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

    /// Records that `img` ended: kept among the last [`ENDED_KEPT`], its marks dropped.
    pub fn end(&mut self, img: Image) {
        self.live.remove(&img.id.pid);
        self.marks.remove(&img.id.pid);
        self.ended_total += 1;
        if self.ended.len() == ENDED_KEPT {
            self.ended.pop_front();
        }
        self.ended.push_back(img);
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
}
