//! Diffs between two summaries: Pympler's `summary.get_diff` for native allocations.

use std::collections::BTreeMap;

use super::{
    aggregate::largest_first,
    summary::{GroupBy, Key, Row, Summary},
};
use crate::model::Counters;

/// One row of a diff: how a group's live figures changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffRow {
    /// The group.
    pub key: Key,
    /// Change in live blocks.
    pub objects: i64,
    /// Change in live bytes.
    pub bytes: i64,
}

/// The change between two summaries of one process: the rows whose count or size changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// The process.
    pub pid: u32,
    /// What the rows are.
    pub group_by: GroupBy,
    /// Changed groups, largest growth in bytes first.
    pub rows: Vec<DiffRow>,
    /// The older summary's rows, for the views that draw both sides (a differential flame
    /// graph): a group's newer figures are its older ones plus its change.
    pub before: Vec<Row>,
    /// The newer summary's counters (cumulative since tracing began).
    pub counters: Counters,
    /// Non-zero: estimates from samples (see [`Summary::sample_bytes`]).
    pub sample_bytes: u64,
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `new - old`, per group, leaving out groups that did not change.
pub fn diff(old: &Summary, new: &Summary) -> Diff {
    let mut acc: BTreeMap<&Key, (i64, i64)> = BTreeMap::new();
    for r in &new.rows {
        let slot = acc.entry(&r.key).or_default();
        slot.0 += signed(r.objects);
        slot.1 += signed(r.bytes);
    }
    for r in &old.rows {
        let slot = acc.entry(&r.key).or_default();
        slot.0 -= signed(r.objects);
        slot.1 -= signed(r.bytes);
    }
    let mut rows: Vec<DiffRow> = acc
        .into_iter()
        .filter(|(_, (o, b))| *o != 0 || *b != 0)
        .map(|(key, (objects, bytes))| DiffRow {
            key: key.clone(),
            objects,
            bytes,
        })
        .collect();
    largest_first(&mut rows, |r| (r.bytes.into(), r.objects.into(), &r.key));
    Diff {
        pid: new.pid,
        group_by: new.group_by,
        rows,
        before: old.rows.clone(),
        counters: new.counters,
        sample_bytes: new.sample_bytes,
    }
}
