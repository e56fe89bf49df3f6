//! The heap as every analysis sees it, live or loaded from a snapshot: the live blocks, their
//! call paths, and the counters that say how far the figures can be trusted.

use std::time::Duration;

use super::{Verdict, filter::Filter, frame::Trace};

/// Index of a call path in a heap's traces.
pub type TraceId = u32;

/// One live block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Bytes requested.
    pub size: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when the allocating call returned, or the latest it can
    /// have (the end of its kernel tick; see [`Counters::age_resolution_ns`]).
    pub ts_ns: u64,
    /// Where it was allocated: an index into the heap's traces.
    pub trace: TraceId,
    /// The allocating thread.
    pub tid: u32,
    /// What the last leak check found it to be, where one was made (snapshots saved by
    /// `leaks --save`); `None` otherwise.
    pub leak: Option<Verdict>,
}

/// Counters that say how far a heap's figures can be trusted (see the summary output; JSON
/// lines carry each under its own name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Events the probes could not deliver.
    pub lost_events: u64,
    /// The program's frees of blocks the table did not hold.
    pub unknown_frees: u64,
    /// libc's own frees of chunks the table did not hold (glibc's per-thread cache hands back
    /// chunks it split off or kept, when a thread exits).
    pub libc_unknown_frees: u64,
    /// Allocations recorded without their stack.
    pub lost_stacks: u64,
    /// Events applied.
    pub events: u64,
    /// Ages are lower bounds short by less than this many ns (one kernel tick); 0 if exact.
    pub age_resolution_ns: u64,
}

/// What one call path allocated since tracing began, freed or not: every allocation, a
/// realloc's new block included (Go's `alloc_objects` and `alloc_space`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Allocated {
    /// Allocations recorded.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// With sampling, the estimates of all allocations the recorded ones stand for (the sums
    /// of [`sample_weight`]); equal to the counts without.
    pub estimated: (f64, f64),
}

impl Allocated {
    /// Counts one allocation of `size` bytes, recorded with sampling `sample_bytes`.
    pub fn add(&mut self, size: u64, sample_bytes: u64) {
        self.objects += 1;
        self.bytes = self.bytes.saturating_add(size);
        let w = sample_weight(size, sample_bytes);
        #[expect(clippy::cast_precision_loss, reason = "an estimate")]
        let bytes = size as f64;
        self.estimated.0 += w;
        self.estimated.1 += w * bytes;
    }

    /// (objects, bytes): the counts, or with sampling their estimates, rounded.
    pub fn figures(&self, sample_bytes: u64) -> (u64, u64) {
        if sample_bytes == 0 {
            return (self.objects, self.bytes);
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "rounded estimates, never negative"
        )]
        let round = |v: f64| v.round() as u64;
        (round(self.estimated.0), round(self.estimated.1))
    }
}

/// How many allocations of `size` bytes one recorded allocation stands for: 1 without
/// sampling; with it (`sample_bytes` the mean gap), 1 / P(sampled) = 1 / (1 - exp(-size /
/// sample_bytes)), which makes sums of weights unbiased estimates of objects and bytes.
pub fn sample_weight(size: u64, sample_bytes: u64) -> f64 {
    if sample_bytes == 0 {
        return 1.0;
    }
    #[expect(clippy::cast_precision_loss, reason = "an estimate")]
    let p = -(-(size.max(1) as f64) / sample_bytes as f64).exp_m1();
    1.0 / p
}

/// Anything that holds live blocks by address.
pub trait Blocks {
    /// Calls `f` with every live block.
    fn for_each_block(&self, f: &mut dyn FnMut(u64, &Block));
    /// The live block at `addr`.
    fn block(&self, addr: u64) -> Option<Block>;
}

/// Blocks as a list of (address, block), as tests and small tools make them.
impl Blocks for Vec<(u64, Block)> {
    fn for_each_block(&self, f: &mut dyn FnMut(u64, &Block)) {
        for (a, b) in self {
            f(*a, b);
        }
    }

    fn block(&self, addr: u64) -> Option<Block> {
        self.iter().find(|(a, _)| *a == addr).map(|(_, b)| *b)
    }
}

/// One executable file mapping of the process: where its code sits, so that a profile can say
/// which file (and which build of it) each frame's address is in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModuleFile {
    /// The file's path as the process sees it.
    pub path: String,
    /// The GNU build id of the file (lower-case hex), where it has one.
    pub build_id: Option<String>,
    /// First address of the mapping.
    pub start: u64,
    /// One past its last address.
    pub limit: u64,
    /// The file offset that `start` maps.
    pub offset: u64,
}

/// One process's heap at one moment.
pub struct Heap<'a> {
    /// The process.
    pub pid: u32,
    /// Its live blocks; each [`Block::trace`] indexes `traces`.
    pub blocks: &'a dyn Blocks,
    /// Call paths.
    pub traces: &'a [Trace],
    /// `CLOCK_MONOTONIC` nanoseconds of the moment, for ages.
    pub now_ns: u64,
    /// Trust counters.
    pub counters: Counters,
    /// With `--sample-bytes`: the mean gap between samples. The blocks are a sample, and every
    /// figure made from them is an estimate (see [`Heap::weight`]). 0: every block.
    pub sample_bytes: u64,
    /// Its executable file mappings, where known (empty for snapshots before format
    /// version 6).
    pub modules: &'a [ModuleFile],
    /// What each trace allocated since tracing began, by trace; empty where not known
    /// (snapshots keep only what was live).
    pub allocated: &'a [Allocated],
}

impl Heap<'_> {
    /// How many blocks of `size` bytes one recorded block stands for ([`sample_weight`]).
    pub fn weight(&self, size: u64) -> f64 {
        sample_weight(size, self.sample_bytes)
    }

    /// Calls `f` with every block `filter` selects, and its trace.
    pub fn select(&self, filter: &Filter, f: &mut dyn FnMut(u64, &Block, &Trace)) {
        let by_trace = filter.traces(self.traces);
        self.blocks.for_each_block(&mut |addr, b| {
            let t = b.trace as usize;
            if by_trace.get(t).copied().unwrap_or(false) && filter.block(b, self.now_ns) {
                f(addr, b, &self.traces[t]);
            }
        });
    }

    /// How long ago `b` was allocated, at this heap's moment.
    pub fn age(&self, b: &Block) -> Duration {
        age(b, self.now_ns)
    }
}

pub(crate) fn age(b: &Block, now_ns: u64) -> Duration {
    Duration::from_nanos(now_ns.saturating_sub(b.ts_ns))
}
