//! Leak reports: the verdicts of a leak check added up per group (site, function or stack)
//! and kind, Valgrind's loss records in Pympler's table style; and referrer trees, Pympler's
//! refbrowser for native blocks.

use std::collections::HashMap;

use super::{
    aggregate::largest_first,
    summary::{GroupBy, Key},
};
use crate::model::{CheckFacts, Counters, Filter, Frame, Heap, LeakKind, Place};

/// One step of a retention path: why a block is not freed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A block that holds the pointer to the one before it.
    Block {
        /// Its address.
        addr: u64,
        /// Its size.
        size: u64,
        /// Its allocation site.
        site: Frame,
        /// The address of the pointing word, inside it.
        at: u64,
    },
    /// The root that holds the pointer.
    Root {
        /// Where it is.
        place: Place,
        /// The address of the pointing word (0 for a register).
        at: u64,
    },
}

/// One loss record: blocks of one kind from one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakRow {
    /// Their kind.
    pub kind: LeakKind,
    /// The group.
    pub key: Key,
    /// Blocks.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// For definitely lost rows: the bytes those blocks alone reach (indirectly lost).
    pub indirect_bytes: u64,
    /// The call path of one of its blocks, innermost first.
    pub stack: Vec<Frame>,
    /// With `--retention`, for reachable rows: the shortest path from one of its blocks to a
    /// root, the block first.
    pub retention: Vec<Step>,
}

/// Objects and bytes of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Total {
    /// Blocks.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
}

/// What one leak check of one process found, per group and kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakReport {
    /// The process.
    pub pid: u32,
    /// What the rows are.
    pub group_by: GroupBy,
    /// Definitely lost first, then indirectly, possibly lost, reachable; in each kind largest
    /// first.
    pub rows: Vec<LeakRow>,
    /// Per kind (in [`LeakKind::ALL`] order), confirmed blocks only.
    pub totals: [Total; 4],
    /// Lost blocks seen lost at this check only (periodic checks): not in `totals`.
    pub unconfirmed: Total,
    /// What the check did.
    pub facts: CheckFacts,
    /// How far the table behind it can be trusted.
    pub counters: Counters,
}

impl LeakReport {
    /// The total of `kind`.
    pub fn total(&self, kind: LeakKind) -> Total {
        self.totals[kind as usize]
    }
}

/// Adds up the verdicts of the blocks of `heap` that `filter` selects, per `by` group (by
/// size is taken as by site: a loss record needs a call path). Blocks without a verdict are
/// left out. `retention` names the path of a block (its address) to its root.
pub fn leak_report(
    heap: &Heap,
    filter: &Filter,
    by: GroupBy,
    facts: CheckFacts,
    retention: Option<&dyn Fn(u64) -> Vec<Step>>,
) -> LeakReport {
    let by = if by == GroupBy::Size {
        GroupBy::Site
    } else {
        by
    };
    let key_of = |t: &crate::model::Trace| match by {
        GroupBy::Function => Key::Function(t.site().function_name()),
        GroupBy::Stack => Key::Stack {
            frames: t.owned_frames(),
            end: t.state.marker(),
        },
        _ => Key::Site(t.site().clone()),
    };
    // Per (kind, key): figures and the smallest address seen (its block's stack and retention
    // path stand for the row, the same one at every run). Lost blocks not confirmed yet are
    // only counted apart.
    let mut rows: HashMap<(LeakKind, Key), (LeakRow, u64)> = HashMap::new();
    let mut totals = [Total::default(); 4];
    let mut unconfirmed = Total::default();
    heap.select(filter, &mut |addr, b, t| {
        let Some(v) = b.leak else { return };
        let lost = matches!(v.kind, LeakKind::DefinitelyLost | LeakKind::IndirectlyLost);
        let confirmed = !lost || v.confirmed;
        if !confirmed {
            unconfirmed.objects += 1;
            unconfirmed.bytes += b.size;
            return;
        }
        totals[v.kind as usize].objects += 1;
        totals[v.kind as usize].bytes += b.size;
        let (row, first) = rows
            .entry((v.kind, key_of(t)))
            .or_insert_with_key(|(kind, key)| {
                (
                    LeakRow {
                        kind: *kind,
                        key: key.clone(),
                        objects: 0,
                        bytes: 0,
                        indirect_bytes: 0,
                        stack: t.owned_frames(),
                        retention: Vec::new(),
                    },
                    addr,
                )
            });
        row.objects += 1;
        row.bytes += b.size;
        row.indirect_bytes += v.indirect_bytes;
        if addr < *first {
            *first = addr;
            row.stack = t.owned_frames();
        }
    });
    let mut rows: Vec<LeakRow> = rows
        .into_values()
        .map(|(mut row, first)| {
            if let Some(path) = retention
                && row.kind == LeakKind::Reachable
            {
                row.retention = path(first);
            }
            row
        })
        .collect();
    largest_first(&mut rows, |r| {
        (
            (r.bytes + r.indirect_bytes).into(),
            r.objects.into(),
            &r.key,
        )
    });
    // Stable: kinds in report order, largest first within.
    rows.sort_by_key(|r| r.kind);
    LeakReport {
        pid: heap.pid,
        group_by: by,
        rows,
        totals,
        unconfirmed,
        facts,
        counters: heap.counters,
    }
}

/// A referrer tree: a block at the root, each branch something that points at the node above
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefTree {
    /// The block.
    pub addr: u64,
    /// Its size.
    pub size: u64,
    /// Its allocation site (unknown for memory muppy holds no block for).
    pub site: Frame,
    /// What points at it.
    pub referrers: Vec<Referrer>,
    /// Referrers left out: `maxdepth` reached with more to show.
    pub cut_depth: bool,
    /// Root referrers left out beyond `--max-roots`.
    pub more_roots: usize,
}

/// One referrer in a [`RefTree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Referrer {
    /// A live block holds a pointer: its own referrers below it.
    Block {
        /// The pointing word's address, inside that block.
        at: u64,
        /// The pointer points inside the block below, not at its start.
        interior: bool,
        /// That block and what points at it.
        tree: RefTree,
    },
    /// A block shown higher in the tree already (a cycle): not expanded again.
    Seen {
        /// The block.
        addr: u64,
        /// The pointing word's address.
        at: u64,
        /// The pointer points inside the block below.
        interior: bool,
    },
    /// A root.
    Root {
        /// Where.
        place: Place,
        /// The word's address (0 for a register).
        at: u64,
        /// The pointer points inside the block below.
        interior: bool,
    },
}

/// `refs`'s answer about one selected block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefReport {
    /// The process.
    pub pid: u32,
    /// The tree, the selected block at its root.
    pub tree: RefTree,
    /// What the check did.
    pub facts: CheckFacts,
}
