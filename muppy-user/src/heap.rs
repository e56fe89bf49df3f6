//! The heap as every view sees it, live or loaded from a snapshot: the live blocks, their
//! symbolized call paths, the counters that say how far the figures can be trusted, and the
//! filter that selects blocks (Pympler's `muppy.filter`).

use std::time::Duration;

use regex::Regex;

use crate::{stacks::StackState, table::Block};

/// A symbolized call path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Frame names, innermost first; `frames[0]` is the allocation site.
    pub frames: Vec<String>,
    /// The function of the site, for grouping by function.
    pub function: String,
    /// Whether the frames above the site are there.
    pub state: StackState,
}

impl Trace {
    /// The allocation site.
    pub fn site(&self) -> &str {
        &self.frames[0]
    }

    /// The frames to show as this path's stack: the frames, and a marker where the stack was
    /// lost, so that a missing stack never passes for a short one.
    pub fn stack(&self) -> Vec<String> {
        let mut v = self.frames.clone();
        if self.state == StackState::Lost {
            v.push(LOST_STACK.to_string());
        }
        v
    }
}

/// Stands in for the frames above the site when the stack map had no room for them.
pub const LOST_STACK: &str = "[stack lost]";

/// Counters that say how far a heap's figures can be trusted (see the summary output).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// Ages are lower bounds short by less than this many ns (one kernel tick, see
    /// [`crate::clock`]); 0 if exact.
    pub age_resolution_ns: u64,
}

/// Anything that holds live blocks by address.
pub trait Blocks {
    /// Calls `f` with every live block.
    fn for_each_block(&self, f: &mut dyn FnMut(u64, &Block));
    /// The live block at `addr`.
    fn block(&self, addr: u64) -> Option<Block>;
}

impl Blocks for crate::table::LiveTable {
    fn for_each_block(&self, f: &mut dyn FnMut(u64, &Block)) {
        for (a, b) in self.blocks() {
            f(a, &b);
        }
    }

    fn block(&self, addr: u64) -> Option<Block> {
        self.get(addr)
    }
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
}

/// One live block, for `objects` (Pympler's `muppy.get_objects`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// Address.
    pub addr: u64,
    /// Bytes requested.
    pub size: u64,
    /// Time since it was allocated.
    pub age: Duration,
    /// The allocating thread.
    pub tid: u32,
    /// Index into the heap's traces.
    pub trace: u32,
}

impl Heap<'_> {
    /// How many blocks of `size` bytes one recorded block stands for: 1 without sampling;
    /// with it, 1 / P(sampled) = 1 / (1 - exp(-size / sample_bytes)), which makes sums of
    /// weights unbiased estimates of objects and bytes.
    pub fn weight(&self, size: u64) -> f64 {
        if self.sample_bytes == 0 {
            return 1.0;
        }
        #[expect(clippy::cast_precision_loss, reason = "an estimate")]
        let p = -(-(size.max(1) as f64) / self.sample_bytes as f64).exp_m1();
        1.0 / p
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

    /// The selected blocks, largest first, then oldest first, then by address.
    pub fn objects(&self, filter: &Filter) -> Vec<Object> {
        let mut v = Vec::new();
        self.select(filter, &mut |addr, b, _| {
            v.push(Object {
                addr,
                size: b.size,
                age: age(b, self.now_ns),
                tid: b.tid,
                trace: b.trace,
            });
        });
        v.sort_by(|a, b| {
            b.size
                .cmp(&a.size)
                .then(b.age.cmp(&a.age))
                .then(a.addr.cmp(&b.addr))
        });
        v
    }
}

fn age(b: &Block, now_ns: u64) -> Duration {
    Duration::from_nanos(now_ns.saturating_sub(b.ts_ns))
}

/// Which blocks a view covers, like `muppy.filter(objects, Type, min, max)`.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Keep blocks whose call path has a frame matching this.
    pub site: Option<Regex>,
    /// Keep blocks of at least this many bytes.
    pub min_size: Option<u64>,
    /// Keep blocks of at most this many bytes.
    pub max_size: Option<u64>,
    /// Keep blocks allocated at least this long ago.
    pub older_than: Option<Duration>,
}

impl Filter {
    /// Per trace, whether its blocks can pass (the site pattern matches some frame).
    pub fn traces(&self, traces: &[Trace]) -> Vec<bool> {
        traces
            .iter()
            .map(|t| {
                self.site
                    .as_ref()
                    .is_none_or(|re| t.frames.iter().any(|f| re.is_match(f)))
            })
            .collect()
    }

    /// Whether a block passes the size and age limits.
    pub fn block(&self, b: &Block, now_ns: u64) -> bool {
        self.min_size.is_none_or(|m| b.size >= m)
            && self.max_size.is_none_or(|m| b.size <= m)
            && self.older_than.is_none_or(|d| age(b, now_ns) >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(frames: &[&str]) -> Trace {
        Trace {
            frames: frames.iter().map(|s| s.to_string()).collect(),
            function: frames[0].to_string(),
            state: StackState::Walked,
        }
    }

    fn block(size: u64, ts_ns: u64, trace: u32) -> Block {
        Block {
            size,
            ts_ns,
            trace,
            tid: 1,
        }
    }

    #[test]
    fn filters_by_any_frame_size_and_age() {
        let traces = [
            trace(&["leaf (a.c:1)", "path_a (a.c:9)"]),
            trace(&["leaf (a.c:1)", "path_b (a.c:19)"]),
        ];
        let blocks = vec![
            (0x10, block(8, 1_000_000_000, 0)),
            (0x20, block(64, 1_000_000_000, 1)),
            (0x30, block(128, 4_000_000_000, 1)),
        ];
        let heap = Heap {
            pid: 1,
            blocks: &blocks,
            traces: &traces,
            now_ns: 5_000_000_000,
            counters: Counters::default(),
            sample_bytes: 0,
        };
        let addrs = |f: Filter| heap.objects(&f).iter().map(|o| o.addr).collect::<Vec<_>>();
        assert_eq!(addrs(Filter::default()), vec![0x30, 0x20, 0x10]);
        let site = |re: &str| Filter {
            site: Some(Regex::new(re).unwrap()),
            ..Filter::default()
        };
        assert_eq!(addrs(site("path_b")), vec![0x30, 0x20]);
        assert_eq!(addrs(site("^leaf")), vec![0x30, 0x20, 0x10]);
        assert_eq!(addrs(site("nowhere")), Vec::<u64>::new());
        let sizes = Filter {
            min_size: Some(64),
            max_size: Some(64),
            ..Filter::default()
        };
        assert_eq!(addrs(sizes), vec![0x20]);
        let old = Filter {
            older_than: Some(Duration::from_secs(2)),
            ..Filter::default()
        };
        assert_eq!(addrs(old), vec![0x20, 0x10]);
        let o = &heap.objects(&Filter::default())[0];
        assert_eq!(o.age, Duration::from_secs(1));
    }
}
