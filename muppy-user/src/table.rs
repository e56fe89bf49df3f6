//! The live-allocation table of one process: every block the probes saw allocated and not yet
//! freed, keyed by address.
//!
//! Events arrive in the order the probes reserved them in the ring buffer. Frees are recorded at
//! the entry of `free`, before the block is released, and allocations at the return of the
//! allocator, after the block exists, so for those two the ring order is the heap order. A
//! moving realloc is the exception: it releases the old block inside the call and is only
//! recorded at its return, so another thread can be handed the old address (and its allocation
//! recorded) first. [`LiveTable`] resolves that race by setting the older block aside as
//! displaced until its late release arrives; see [`LiveTable::apply`].

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

use muppy_core::model::{Allocated, Blocks};
pub use muppy_core::model::{Block, TraceId};

use crate::{
    event::{Alloc, HeapChange},
    freed::FreeRanges,
};

/// How the probes identified where a block was allocated: the caller's return address (the
/// *site*) and its interned call path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceKey {
    /// The caller's return address.
    pub caller: u64,
    /// What the event said of the stack.
    pub stack: StackRef,
}

/// Where an allocation's stack is, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StackRef {
    /// Stacks were not collected.
    Off,
    /// Stacks were on but this one could not be sent (counted as lost).
    Lost,
    /// The call path with this id in the [`crate::stacks::StackStore`].
    Id(u32),
}

/// Counters that say how far the table can be trusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Frees (including the old block of a realloc) of addresses the table did not hold: blocks
    /// allocated before tracing began, or whose allocation event was lost.
    pub unknown_frees: u64,
    /// Events applied.
    pub events: u64,
}

/// What the table keeps per live block beside its address: 16 bytes, so that a table of ten
/// million blocks stays near 40 bytes a block. The allocating trace and thread share one
/// interned *origin*; sizes of 4 GiB and more live in a side map.
#[derive(Clone, Copy, Debug)]
struct Slot {
    ts_ns: u64,
    size: u32,
    origin: u32,
}

/// [`Slot::size`] of a block whose size is in [`LiveTable::big_sizes`].
const BIG: u32 = u32::MAX;

/// A trace and a thread: what allocated a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Origin {
    key: TraceKey,
    tid: u32,
}

/// Hashes the table's keys (addresses, origins): a multiply and a fold per word, where SipHash
/// would cost more than the rest of an event's work. The keys come from the probes, not from
/// anyone choosing collisions.
#[derive(Clone, Copy, Debug, Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        // Blocks are 16-byte aligned: the low bits carry nothing.
        let h = (self.0.rotate_left(5) ^ (v >> 4)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

/// A map hashed with [`AddrHasher`].
pub type FastHash = BuildHasherDefault<AddrHasher>;
type AddrMap<V> = HashMap<u64, V, FastHash>;

/// The live set is split into this many maps by address, so that growing one map (which
/// briefly holds the old and the new storage, and stops the reader while it rehashes) costs a
/// sliver of the table, not all of it again.
const SHARDS: usize = 64;

/// Which shard each value of a hash's top [`SHARD_BITS`] bits goes to. Shard `i` gets a share
/// proportional to 2^(i/SHARDS): equal shares would make every map double at the same moment
/// (one long stall, and the memory of all maps at their emptiest); shares spread over one
/// doubling make the maps grow one at a time and keep their average fill the same at any
/// table size.
const SHARD_BITS: u32 = 12;

fn shard_table() -> Vec<u8> {
    let weights: Vec<f64> = (0..SHARDS)
        .map(|i| (i as f64 / SHARDS as f64).exp2())
        .collect();
    let total: f64 = weights.iter().sum();
    let slots = 1usize << SHARD_BITS;
    let mut table: Vec<u8> = Vec::with_capacity(slots);
    let mut acc = 0.0;
    for (shard, w) in (0u8..).zip(&weights) {
        acc += w / total;
        // The cumulative share of the 4096 slots, rounded: always within 0..=4096.
        #[expect(clippy::cast_possible_truncation, reason = "0.0..=4096.0")]
        let end = (acc * slots as f64).round() as usize;
        table.resize(end.clamp(table.len(), slots), shard);
    }
    table.resize(slots, u8::try_from(SHARDS - 1).unwrap_or(u8::MAX));
    table
}

fn addr_hash(addr: u64) -> u64 {
    let mut h = AddrHasher::default();
    h.write_u64(addr);
    h.finish()
}

/// The live blocks of one process and the call paths that allocated them.
#[derive(Debug)]
pub struct LiveTable {
    shards: Vec<AddrMap<Slot>>,
    shard_of: Vec<u8>,
    live: usize,
    big_sizes: AddrMap<u64>,
    /// Blocks that a newer allocation at the same address pushed out before the event that
    /// released them arrived (a moving realloc recorded late), with when that happened. Not
    /// live; kept only so that the late realloc finds its old block. Pruned by
    /// [`LiveTable::prune_displaced`].
    displaced: AddrMap<(Block, u64)>,
    origin_index: HashMap<Origin, u32, FastHash>,
    origins: Vec<(TraceId, u32)>,
    trace_index: HashMap<TraceKey, TraceId, FastHash>,
    traces: Vec<TraceKey>,
    /// What each trace allocated since tracing began, by trace.
    allocated: Vec<Allocated>,
    /// Unknown frees per caller return address, so they can be told apart by who freed.
    unknown_free_callers: HashMap<u64, u64>,
    /// With a leak check to come, the memory of blocks freed while traced and not allocated
    /// since (see [`crate::freed`]).
    freed: Option<FreeRanges>,
    stats: TableStats,
}

impl Default for LiveTable {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| AddrMap::default()).collect(),
            shard_of: shard_table(),
            live: 0,
            big_sizes: AddrMap::default(),
            displaced: AddrMap::default(),
            origin_index: HashMap::default(),
            origins: Vec::new(),
            trace_index: HashMap::default(),
            traces: Vec::new(),
            allocated: Vec::new(),
            unknown_free_callers: HashMap::new(),
            freed: None,
            stats: TableStats::default(),
        }
    }
}

impl LiveTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the memory of blocks freed from now on (for leak checks: see [`crate::freed`]).
    pub fn track_freed(&mut self) {
        self.freed.get_or_insert_with(FreeRanges::default);
    }

    /// Memory freed while traced and not allocated since, if [`LiveTable::track_freed`] is on.
    pub fn freed(&self) -> Option<&FreeRanges> {
        self.freed.as_ref()
    }

    fn shard(&self, addr: u64) -> usize {
        // The top bits pick the shard; the maps index by the low ones.
        usize::from(self.shard_of[(addr_hash(addr) >> (64 - SHARD_BITS)) as usize])
    }

    /// Applies one event from the probes; each new block counts in what its trace allocated,
    /// weighed for sampling by `sample_bytes` (the mean gap; 0: every block recorded).
    ///
    /// - alloc: the block becomes live at its site. If the address was still live, that older
    ///   block must already have been released by a call recorded later (a moving realloc), so it
    ///   is set aside as displaced.
    /// - free: the block leaves the table, or counts as an unknown free.
    /// - realloc: the old block leaves (the displaced one if there is one, else the live one),
    ///   then the new block becomes live at the realloc's site. realloc(p, 0), a free sent
    ///   at realloc's return, releases p the same way.
    ///
    /// Why a displaced block is the realloc's: events are sent as allocations return and as
    /// frees begin, so a block's release reaches the ring after a newer allocation of its
    /// address only when a realloc released it inside the call and another thread got the
    /// address before the realloc returned. With no events lost, a displaced block therefore
    /// always awaits its realloc, and no clock is needed to tell the two blocks apart.
    pub fn apply(&mut self, change: &HeapChange, sample_bytes: u64) {
        self.stats.events += 1;
        match change {
            HeapChange::Alloc(block) => self.insert(block, sample_bytes),
            HeapChange::Free(free) => {
                if free.by_realloc {
                    self.release_realloc_source(free.addr, free.caller);
                } else if self.remove(free.addr).is_none() {
                    self.count_unknown_free(free.caller);
                }
            }
            HeapChange::Realloc { old, new } => {
                self.release_realloc_source(*old, new.caller);
                self.insert(new, sample_bytes);
            }
        }
    }

    fn count_unknown_free(&mut self, caller: u64) {
        self.stats.unknown_frees += 1;
        *self.unknown_free_callers.entry(caller).or_default() += 1;
    }

    /// Unknown frees by the return address of the code that made them.
    pub fn unknown_free_callers(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.unknown_free_callers.iter().map(|(a, n)| (*a, *n))
    }

    /// Releases the block a realloc was given (see [`LiveTable::apply`]).
    fn release_realloc_source(&mut self, old: u64, caller: u64) {
        if self.displaced.remove(&old).is_none() && self.remove(old).is_none() {
            self.count_unknown_free(caller);
        }
    }

    fn block_of(&self, addr: u64, slot: &Slot) -> Block {
        let (trace, tid) = self.origins[slot.origin as usize];
        let size = if slot.size == BIG {
            self.big_sizes.get(&addr).copied().unwrap_or(u64::from(BIG))
        } else {
            u64::from(slot.size)
        };
        Block {
            size,
            ts_ns: slot.ts_ns,
            trace,
            tid,
            leak: None,
        }
    }

    fn remove(&mut self, addr: u64) -> Option<Block> {
        let shard = self.shard(addr);
        let slot = self.shards[shard].remove(&addr)?;
        self.live -= 1;
        let block = self.block_of(addr, &slot);
        if slot.size == BIG {
            self.big_sizes.remove(&addr);
        }
        if let Some(f) = &mut self.freed
            && block.size < crate::freed::SMALL
        {
            f.insert(addr..addr + block.size.max(1));
        }
        Some(block)
    }

    /// Records a new block; `sample_bytes` weighs it in what its trace allocated.
    fn insert(&mut self, ev: &Alloc, sample_bytes: u64) {
        let origin = self.intern_origin(Origin {
            key: TraceKey {
                caller: ev.caller,
                stack: ev.stack,
            },
            tid: ev.tid,
        });
        let trace = self.origins[origin as usize].0 as usize;
        if let Some(a) = self.allocated.get_mut(trace) {
            a.add(ev.size, sample_bytes);
        }
        let small = u32::try_from(ev.size).ok().filter(|&s| s != BIG);
        let big = small.is_none();
        let slot = Slot {
            ts_ns: ev.ts_ns,
            size: small.unwrap_or(BIG),
            origin,
        };
        if let Some(f) = &mut self.freed {
            f.remove(ev.addr..ev.addr.saturating_add(ev.size.max(1)));
        }
        let shard = self.shard(ev.addr);
        let older = self.shards[shard].insert(ev.addr, slot);
        // The older block's size may be in the side map under this address: read it first.
        let older = older.map(|o| {
            let b = self.block_of(ev.addr, &o);
            if o.size == BIG {
                self.big_sizes.remove(&ev.addr);
            }
            b
        });
        if big {
            self.big_sizes.insert(ev.addr, ev.size);
        }
        match older {
            Some(b) => {
                self.displaced.insert(ev.addr, (b, ev.ts_ns));
            }
            None => self.live += 1,
        }
    }

    fn intern_origin(&mut self, o: Origin) -> u32 {
        if let Some(&id) = self.origin_index.get(&o) {
            return id;
        }
        let trace = *self.trace_index.entry(o.key).or_insert_with(|| {
            self.traces.push(o.key);
            self.allocated.push(Allocated::default());
            TraceId::try_from(self.traces.len() - 1).unwrap_or(TraceId::MAX)
        });
        self.origins.push((trace, o.tid));
        let id = u32::try_from(self.origins.len() - 1).unwrap_or(u32::MAX);
        self.origin_index.insert(o, id);
        id
    }

    /// Forgets blocks displaced before `before_ns`: a realloc still in flight after that long
    /// is not plausible (their release was lost), and they are not live either way.
    pub fn prune_displaced(&mut self, before_ns: u64) {
        if !self.displaced.is_empty() {
            self.displaced.retain(|_, (_, at)| *at >= before_ns);
        }
    }

    /// The live blocks by address.
    pub fn blocks(&self) -> impl Iterator<Item = (u64, Block)> + '_ {
        self.shards
            .iter()
            .flat_map(|m| m.iter())
            .map(|(a, s)| (*a, self.block_of(*a, s)))
    }

    /// The live block at `addr`.
    pub fn get(&self, addr: u64) -> Option<Block> {
        self.shards[self.shard(addr)]
            .get(&addr)
            .map(|s| self.block_of(addr, s))
    }

    /// Number of live blocks.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no block is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Every call path seen so far, indexed by [`TraceId`].
    pub fn traces(&self) -> &[TraceKey] {
        &self.traces
    }

    /// What each trace allocated since tracing began, in the order of [`LiveTable::traces`].
    pub fn allocated(&self) -> &[Allocated] {
        &self.allocated
    }

    /// Trust counters.
    pub fn stats(&self) -> TableStats {
        self.stats
    }
}

impl Blocks for LiveTable {
    fn for_each_block(&self, f: &mut dyn FnMut(u64, &Block)) {
        for (a, b) in self.blocks() {
            f(a, &b);
        }
    }

    fn block(&self, addr: u64) -> Option<Block> {
        self.get(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Free;

    #[derive(Clone, Copy)]
    enum EventKind {
        Alloc,
        Free,
        Realloc,
    }

    fn block(addr: u64, size: u64, caller: u64, ts: u64) -> Alloc {
        Alloc {
            addr,
            size,
            tid: 1,
            caller,
            ts_ns: ts,
            stack: StackRef::Off,
        }
    }

    fn ev(kind: EventKind, addr: u64, old: u64, size: u64, caller: u64, ts: u64) -> HeapChange {
        match kind {
            EventKind::Alloc => HeapChange::Alloc(block(addr, size, caller, ts)),
            EventKind::Realloc => HeapChange::Realloc {
                old,
                new: block(addr, size, caller, ts),
            },
            EventKind::Free => HeapChange::Free(Free {
                addr,
                caller,
                by_realloc: false,
                ts_ns: ts,
            }),
        }
    }

    fn live(t: &LiveTable) -> Vec<(u64, u64, u64)> {
        let mut v: Vec<_> = t
            .blocks()
            .map(|(a, b)| (a, b.size, t.traces()[b.trace as usize].caller))
            .collect();
        assert_eq!(v.len(), t.len());
        v.sort();
        v
    }

    #[test]
    fn alloc_then_free_leaves_nothing() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 32, 0xa, 2), 0);
        t.apply(&ev(EventKind::Free, 0x10, 0, 0, 0xb, 3), 0);
        assert!(t.is_empty());
        assert_eq!(t.stats().unknown_frees, 0);
        assert_eq!(t.stats().events, 2);
    }

    #[test]
    fn free_of_unseen_block_is_unknown() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Free, 0x10, 0, 0, 0xb, 3), 0);
        assert_eq!(t.stats().unknown_frees, 1);
    }

    #[test]
    fn sizes_of_4_gib_and_more_are_kept_whole() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 5 << 30, 0xa, 2), 0);
        t.apply(
            &ev(EventKind::Alloc, 0x20, 0, u64::from(u32::MAX), 0xa, 2),
            0,
        );
        assert_eq!(t.get(0x10).unwrap().size, 5 << 30);
        assert_eq!(t.get(0x20).unwrap().size, u64::from(u32::MAX));
        t.apply(&ev(EventKind::Realloc, 0x30, 0x10, 7, 0xc, 6), 0);
        assert_eq!(t.get(0x30).unwrap().size, 7);
        t.apply(&ev(EventKind::Free, 0x20, 0, 0, 0xb, 3), 0);
        assert_eq!(live(&t), vec![(0x30, 7, 0xc)]);
        assert!(t.big_sizes.is_empty());
    }

    #[test]
    fn thousands_of_blocks_spread_over_shards_and_leave_cleanly() {
        let mut t = LiveTable::new();
        for i in 0..10_000u64 {
            t.apply(&ev(EventKind::Alloc, 0x1000 + i * 16, 0, i, 0xa, 2), 0);
        }
        assert_eq!(t.len(), 10_000);
        assert!(
            t.shards.iter().all(|m| m.len() > 50),
            "addresses must spread"
        );
        // Shares grow from the first shard to the last, over about a factor of two.
        let (first, last) = (t.shards[0].len(), t.shards[SHARDS - 1].len());
        assert!(last > first * 3 / 2, "{first} {last}");
        for i in 0..10_000u64 {
            t.apply(&ev(EventKind::Free, 0x1000 + i * 16, 0, 0, 0xb, 3), 0);
        }
        assert!(t.is_empty());
        assert_eq!(t.stats().unknown_frees, 0);
    }

    #[test]
    fn realloc_moves_block_to_realloc_site() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 16, 0xa, 2), 0);
        t.apply(&ev(EventKind::Realloc, 0x20, 0x10, 4096, 0xc, 6), 0);
        assert_eq!(live(&t), vec![(0x20, 4096, 0xc)]);
        assert_eq!(t.stats().unknown_frees, 0);
    }

    #[test]
    fn realloc_in_place_keeps_one_block() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 1000, 0xa, 2), 0);
        t.apply(&ev(EventKind::Realloc, 0x10, 0x10, 500, 0xc, 6), 0);
        assert_eq!(live(&t), vec![(0x10, 500, 0xc)]);
    }

    #[test]
    fn realloc_of_unseen_block_counts_unknown_and_tracks_new() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Realloc, 0x20, 0x10, 64, 0xc, 6), 0);
        assert_eq!(live(&t), vec![(0x20, 64, 0xc)]);
        assert_eq!(t.stats().unknown_frees, 1);
    }

    /// Thread A reallocs 0x10 to 0x20; inside the call the old block is released and thread B's
    /// malloc gets 0x10, and B's event reaches the ring before A's.
    #[test]
    fn late_realloc_releases_the_displaced_block_not_the_new_owner() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 16, 0xa, 2), 0); // A's original block
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 24, 0xb, 8), 0); // B, recorded first
        t.apply(&ev(EventKind::Realloc, 0x20, 0x10, 4096, 0xc, 9), 0);
        assert_eq!(live(&t), vec![(0x10, 24, 0xb), (0x20, 4096, 0xc)]);
        assert_eq!(t.stats().unknown_frees, 0);
    }

    /// The same race with realloc(p, 0), whose free is sent at realloc's return.
    #[test]
    fn late_realloc_free_releases_the_displaced_block() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 16, 0xa, 2), 0);
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 24, 0xb, 8), 0);
        t.apply(
            &HeapChange::Free(Free {
                addr: 0x10,
                caller: 0xc,
                by_realloc: true,
                ts_ns: 0,
            }),
            0,
        );
        assert_eq!(live(&t), vec![(0x10, 24, 0xb)]);
        // A plain free of the address is the new owner's.
        t.apply(&ev(EventKind::Free, 0x10, 0, 0, 0xd, 0), 0);
        assert_eq!(live(&t), vec![]);
        assert_eq!(t.stats().unknown_frees, 0);
    }

    /// What each trace allocated counts every new block, a realloc's included, freed or not;
    /// with sampling, each weighed as the live figures are.
    #[test]
    fn each_trace_counts_what_it_allocated_since_the_start() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 100, 0xa, 2), 0);
        t.apply(&ev(EventKind::Alloc, 0x20, 0, 50, 0xa, 2), 0);
        t.apply(&ev(EventKind::Free, 0x10, 0, 0, 0xb, 3), 0);
        t.apply(&ev(EventKind::Realloc, 0x30, 0x20, 70, 0xc, 4), 0);
        t.apply(&ev(EventKind::Free, 0x30, 0, 0, 0xb, 5), 0);
        let figures: Vec<(u64, u64, (u64, u64))> = t
            .traces()
            .iter()
            .zip(t.allocated())
            .map(|(k, a)| (k.caller, a.objects, a.figures(0)))
            .collect();
        assert_eq!(figures, [(0xa, 2, (2, 150)), (0xc, 1, (1, 70))]);
        assert!(t.is_empty());
        // Sampled at a 100-byte mean gap, a 100-byte block stands for 1 / (1 - e^-1) blocks.
        let mut s = LiveTable::new();
        s.apply(&ev(EventKind::Alloc, 0x10, 0, 100, 0xa, 2), 100);
        let w = 1.0 / (1.0 - (-1.0f64).exp());
        assert!((s.allocated()[0].estimated.0 - w).abs() < 1e-9);
        assert_eq!(s.allocated()[0].figures(100), (2, 158));
    }

    #[test]
    fn same_site_with_other_stack_is_another_trace() {
        let mut t = LiveTable::new();
        let mut a = block(0x100, 10, 0xa, 2);
        a.stack = StackRef::Id(7);
        t.apply(&HeapChange::Alloc(a), 0);
        a.addr = 0x200;
        t.apply(&HeapChange::Alloc(a), 0);
        a.addr = 0x300;
        a.stack = StackRef::Id(8);
        t.apply(&HeapChange::Alloc(a), 0);
        a.addr = 0x400;
        a.stack = StackRef::Lost;
        t.apply(&HeapChange::Alloc(a), 0);
        let stacks: Vec<StackRef> = t.traces().iter().map(|k| k.stack).collect();
        assert_eq!(
            stacks,
            vec![StackRef::Id(7), StackRef::Id(8), StackRef::Lost]
        );
        assert!(t.traces().iter().all(|k| k.caller == 0xa));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn prune_forgets_blocks_displaced_long_ago() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 16, 0xa, 2), 0);
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 24, 0xb, 150), 0); // displaces at 150
        t.prune_displaced(100);
        assert_eq!(t.displaced.len(), 1, "displaced at 150, kept");
        t.prune_displaced(200);
        assert!(t.displaced.is_empty());
        assert_eq!(live(&t), vec![(0x10, 24, 0xb)]);
    }
}
