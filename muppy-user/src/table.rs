//! The live-allocation table of one process: every block the probes saw allocated and not yet
//! freed, keyed by address.
//!
//! Events arrive in the order the probes reserved them in the ring buffer. Frees are recorded at
//! the entry of `free`, before the block is released, and allocations at the return of the
//! allocator, after the block exists, so for those two the ring order is the heap order. A
//! moving realloc is the exception: it releases the old block inside the call and is only
//! recorded at its return, so another thread can be handed the old address (and its allocation
//! recorded) first. [`LiveTable`] resolves that race with the timestamps the events carry; see
//! [`LiveTable::apply`].

use std::collections::{HashMap, VecDeque};

use muppy_common::{Event, EventKind, NO_STACK, STACK_HAS_CALLER, STACK_LOST};

/// Index of a [`TraceKey`] in a [`LiveTable`]'s trace list.
pub type TraceId = u32;

/// How the probes identified where a block was allocated: the caller's return address (the
/// *site*) and the user stack above it, as the stack map holds it.
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
    /// Stacks were on but this one did not fit in the stack map (counted as lost).
    Lost,
    /// In the stack map under `id`; `has_caller` says whether its first frame is the caller
    /// itself or the caller's caller.
    Map {
        /// The stack id.
        id: u32,
        /// Whether the stored stack starts at the caller.
        has_caller: bool,
    },
}

impl StackRef {
    /// What an event's `stack` and `flags` fields say.
    pub fn of(ev: &Event) -> Self {
        if ev.stack != NO_STACK {
            StackRef::Map {
                id: ev.stack,
                has_caller: ev.flags & STACK_HAS_CALLER != 0,
            }
        } else if ev.flags & STACK_LOST != 0 {
            StackRef::Lost
        } else {
            StackRef::Off
        }
    }
}

/// One live block. Kept small: a table holds millions of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Bytes requested.
    pub size: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when the allocating call returned.
    pub ts_ns: u64,
    /// Where it was allocated: an index into [`LiveTable::traces`].
    pub trace: TraceId,
    /// The allocating thread.
    pub tid: u32,
}

/// Counters that say how far the table can be trusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Frees (including the old block of a realloc) of addresses the table did not hold: blocks
    /// allocated before tracing began, or whose allocation event was lost.
    pub unknown_frees: u64,
    /// Frees of addresses the table saw freed and not allocated again: libc handing its own
    /// cached chunks back (glibc's tcache does this for every exiting thread). No block changes.
    pub refrees: u64,
    /// Events applied.
    pub events: u64,
}

/// How many recently freed addresses are remembered to recognise re-frees. glibc's per-thread
/// cache holds at most a few hundred chunks per thread.
const RECENTLY_FREED: usize = 1 << 16;

/// The live blocks of one process and the call paths that allocated them.
#[derive(Debug, Default)]
pub struct LiveTable {
    blocks: HashMap<u64, Block>,
    /// Blocks that a newer allocation at the same address pushed out before the event that
    /// released them arrived (a moving realloc recorded late). Not live; kept only so that the
    /// late realloc finds its old block. Pruned by [`LiveTable::prune_displaced`].
    displaced: HashMap<u64, Block>,
    trace_index: HashMap<TraceKey, TraceId>,
    traces: Vec<TraceKey>,
    /// Addresses freed lately and not allocated since, with the sequence number of that free;
    /// `freed_order` lists (address, sequence) oldest first, and may hold outdated pairs.
    freed: HashMap<u64, u64>,
    freed_order: VecDeque<(u64, u64)>,
    /// Unknown frees per caller return address, so they can be told apart by who freed.
    unknown_free_callers: HashMap<u64, u64>,
    stats: TableStats,
}

impl LiveTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event from the probes.
    ///
    /// - alloc: the block becomes live at its site. If the address was still live, that older
    ///   block must already have been released by a call recorded later (a moving realloc), so it
    ///   is set aside as displaced.
    /// - free: the block leaves the table, or counts as an unknown free.
    /// - realloc: the old block leaves (the live one if it is older than the realloc call,
    ///   otherwise the displaced one), then the new block becomes live at the realloc's site.
    pub fn apply(&mut self, ev: &Event) {
        self.stats.events += 1;
        match EventKind::from_u32(ev.kind) {
            Some(EventKind::Alloc) => self.insert(ev),
            Some(EventKind::Free) => {
                if self.blocks.remove(&ev.addr).is_some() {
                    self.remember_freed(ev.addr);
                } else if self.freed.contains_key(&ev.addr) {
                    self.stats.refrees += 1;
                } else {
                    self.count_unknown_free(ev.caller);
                }
            }
            Some(EventKind::Realloc) => {
                self.release_realloc_source(ev.old_addr, ev.entry_ns, ev.caller);
                if ev.old_addr != ev.addr {
                    self.remember_freed(ev.old_addr);
                }
                self.insert(ev);
            }
            None => {}
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

    fn release_realloc_source(&mut self, old: u64, entry_ns: u64, caller: u64) {
        match self.blocks.get(&old) {
            Some(b) if b.ts_ns <= entry_ns => {
                self.blocks.remove(&old);
            }
            _ => {
                if self.displaced.remove(&old).is_none() {
                    self.count_unknown_free(caller);
                }
            }
        }
    }

    fn remember_freed(&mut self, addr: u64) {
        let seq = self.stats.events;
        self.freed.insert(addr, seq);
        self.freed_order.push_back((addr, seq));
        if self.freed_order.len() > RECENTLY_FREED
            && let Some((old, old_seq)) = self.freed_order.pop_front()
            && self.freed.get(&old) == Some(&old_seq)
        {
            self.freed.remove(&old);
        }
    }

    fn insert(&mut self, ev: &Event) {
        self.freed.remove(&ev.addr);
        let trace = self.intern_trace(TraceKey {
            caller: ev.caller,
            stack: StackRef::of(ev),
        });
        let block = Block {
            size: ev.size,
            ts_ns: ev.ts_ns,
            trace,
            tid: ev.tid,
        };
        if let Some(older) = self.blocks.insert(ev.addr, block) {
            self.displaced.insert(ev.addr, older);
        }
    }

    fn intern_trace(&mut self, key: TraceKey) -> TraceId {
        *self.trace_index.entry(key).or_insert_with(|| {
            self.traces.push(key);
            TraceId::try_from(self.traces.len() - 1).unwrap_or(TraceId::MAX)
        })
    }

    /// Forgets displaced blocks set aside before `before_ns`: a realloc still in flight after
    /// that long is not plausible, and they are not live either way.
    pub fn prune_displaced(&mut self, before_ns: u64) {
        self.displaced.retain(|_, b| b.ts_ns >= before_ns);
    }

    /// The live blocks by address.
    pub fn blocks(&self) -> impl Iterator<Item = (u64, &Block)> {
        self.blocks.iter().map(|(a, b)| (*a, b))
    }

    /// The live block at `addr`.
    pub fn get(&self, addr: u64) -> Option<&Block> {
        self.blocks.get(&addr)
    }

    /// Number of live blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether no block is live.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Every call path seen so far, indexed by [`TraceId`].
    pub fn traces(&self) -> &[TraceKey] {
        &self.traces
    }

    /// Trust counters.
    pub fn stats(&self) -> TableStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(
        kind: EventKind,
        addr: u64,
        old: u64,
        size: u64,
        caller: u64,
        entry: u64,
        ts: u64,
    ) -> Event {
        Event {
            kind: kind as u32,
            func: 0,
            pid: 1,
            tid: 1,
            addr,
            old_addr: old,
            size,
            caller,
            entry_ns: entry,
            ts_ns: ts,
            stack: NO_STACK,
            flags: 0,
        }
    }

    fn live(t: &LiveTable) -> Vec<(u64, u64, u64)> {
        let mut v: Vec<_> = t
            .blocks()
            .map(|(a, b)| (a, b.size, t.traces()[b.trace as usize].caller))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn alloc_then_free_leaves_nothing() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 32, 0xa, 1, 2));
        t.apply(&ev(EventKind::Free, 0x10, 0, 0, 0xb, 3, 3));
        assert!(t.is_empty());
        assert_eq!(t.stats().unknown_frees, 0);
        assert_eq!(t.stats().events, 2);
    }

    #[test]
    fn free_of_unseen_block_is_unknown() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Free, 0x10, 0, 0, 0xb, 3, 3));
        assert_eq!(t.stats().unknown_frees, 1);
    }

    #[test]
    fn refree_of_a_freed_chunk_is_not_unknown() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 32, 0xa, 1, 2));
        t.apply(&ev(EventKind::Free, 0x10, 0, 0, 0xb, 3, 3));
        t.apply(&ev(EventKind::Free, 0x10, 0, 0, 0xc, 4, 4)); // libc's cache giving it back
        assert_eq!(t.stats().refrees, 1);
        assert_eq!(t.stats().unknown_frees, 0);
        // Allocated again, freed again: still known.
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 32, 0xa, 5, 6));
        assert_eq!(t.len(), 1);
        t.apply(&ev(EventKind::Free, 0x10, 0, 0, 0xb, 7, 7));
        assert!(t.is_empty());
        assert_eq!(t.stats().unknown_frees, 0);
    }

    #[test]
    fn realloc_moves_block_to_realloc_site() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 16, 0xa, 1, 2));
        t.apply(&ev(EventKind::Realloc, 0x20, 0x10, 4096, 0xc, 5, 6));
        assert_eq!(live(&t), vec![(0x20, 4096, 0xc)]);
        assert_eq!(t.stats().unknown_frees, 0);
    }

    #[test]
    fn realloc_in_place_keeps_one_block() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 1000, 0xa, 1, 2));
        t.apply(&ev(EventKind::Realloc, 0x10, 0x10, 500, 0xc, 5, 6));
        assert_eq!(live(&t), vec![(0x10, 500, 0xc)]);
    }

    #[test]
    fn realloc_of_unseen_block_counts_unknown_and_tracks_new() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Realloc, 0x20, 0x10, 64, 0xc, 5, 6));
        assert_eq!(live(&t), vec![(0x20, 64, 0xc)]);
        assert_eq!(t.stats().unknown_frees, 1);
    }

    /// Thread A reallocs 0x10 to 0x20; inside the call the old block is released and thread B's
    /// malloc gets 0x10, and B's event reaches the ring before A's.
    #[test]
    fn late_realloc_releases_the_displaced_block_not_the_new_owner() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 16, 0xa, 1, 2)); // A's original block
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 24, 0xb, 7, 8)); // B, recorded first
        t.apply(&ev(EventKind::Realloc, 0x20, 0x10, 4096, 0xc, 5, 9)); // A entered at 5
        assert_eq!(live(&t), vec![(0x10, 24, 0xb), (0x20, 4096, 0xc)]);
        assert_eq!(t.stats().unknown_frees, 0);
    }

    #[test]
    fn same_site_with_other_stack_is_another_trace() {
        let mut t = LiveTable::new();
        let mut a = ev(EventKind::Alloc, 0x100, 0, 10, 0xa, 1, 2);
        a.stack = 7;
        t.apply(&a);
        a.addr = 0x200;
        t.apply(&a);
        a.addr = 0x300;
        a.stack = 8;
        a.flags = STACK_HAS_CALLER;
        t.apply(&a);
        a.addr = 0x400;
        a.stack = NO_STACK;
        a.flags = STACK_LOST;
        t.apply(&a);
        let stacks: Vec<StackRef> = t.traces().iter().map(|k| k.stack).collect();
        assert_eq!(
            stacks,
            vec![
                StackRef::Map {
                    id: 7,
                    has_caller: false
                },
                StackRef::Map {
                    id: 8,
                    has_caller: true
                },
                StackRef::Lost
            ]
        );
        assert!(t.traces().iter().all(|k| k.caller == 0xa));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn prune_forgets_old_displaced_blocks() {
        let mut t = LiveTable::new();
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 16, 0xa, 1, 2));
        t.apply(&ev(EventKind::Alloc, 0x10, 0, 24, 0xb, 7, 8));
        t.prune_displaced(100);
        // The realloc now finds neither a fitting live block nor a displaced one.
        t.apply(&ev(EventKind::Realloc, 0x20, 0x10, 64, 0xc, 5, 200));
        assert_eq!(t.stats().unknown_frees, 1);
        assert_eq!(t.len(), 2);
    }
}
