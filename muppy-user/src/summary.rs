//! Summaries (live objects and bytes per group: site, function, stack or size) and diffs between
//! two summaries: Pympler's `summary.summarize` and `summary.get_diff` for native allocations.

use std::collections::{BTreeMap, HashMap};

use crate::heap::{Counters, Filter, Heap};

/// What a summary's rows are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupBy {
    /// The allocation site: `function (file:line)`.
    #[default]
    Site,
    /// The function that called the allocator.
    Function,
    /// The whole call path.
    Stack,
    /// The block size in bytes.
    Size,
}

impl GroupBy {
    /// The plural noun for the table's first column: `sites`, `functions`, `stacks`, `sizes`.
    pub fn noun(self) -> &'static str {
        match self {
            GroupBy::Site => "sites",
            GroupBy::Function => "functions",
            GroupBy::Stack => "stacks",
            GroupBy::Size => "sizes",
        }
    }
}

/// What one row stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// An allocation site.
    Site(String),
    /// A function.
    Function(String),
    /// A call path, innermost first.
    Stack(Vec<String>),
    /// A block size.
    Size(u64),
}

impl Key {
    /// The key as one line of text (a stack's frames joined by `" <- "`).
    pub fn text(&self) -> String {
        match self {
            Key::Site(s) | Key::Function(s) => s.clone(),
            Key::Stack(frames) => frames.join(" <- "),
            Key::Size(n) => format!("{n} B"),
        }
    }
}

/// One row of a summary: what one group holds live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The group.
    pub key: Key,
    /// Live blocks.
    pub objects: u64,
    /// Live bytes (as requested from the allocator).
    pub bytes: u64,
}

/// What was live in one process at one moment, per group, largest total first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The process.
    pub pid: u32,
    /// What the rows are.
    pub group_by: GroupBy,
    /// One row per group with live blocks, sorted by bytes, then objects (both descending),
    /// then key.
    pub rows: Vec<Row>,
    /// How far the figures can be trusted.
    pub counters: Counters,
    /// Non-zero: the figures are estimates from samples this many bytes apart on average.
    pub sample_bytes: u64,
}

fn sort_rows<T>(rows: &mut [T], fig: impl Fn(&T) -> (i128, i128, &Key)) {
    rows.sort_by(|a, b| {
        let (ab, ao, ak) = fig(a);
        let (bb, bo, bk) = fig(b);
        bb.cmp(&ab).then(bo.cmp(&ao)).then_with(|| ak.cmp(bk))
    });
}

impl Summary {
    /// Builds a summary from `(key, objects, bytes)` figures. Equal keys are merged (two return
    /// addresses in one line of code, say), and keys with nothing live are left out.
    pub fn from_figures(
        pid: u32,
        group_by: GroupBy,
        figures: impl IntoIterator<Item = (Key, u64, u64)>,
        counters: Counters,
    ) -> Self {
        let mut merged: HashMap<Key, (u64, u64)> = HashMap::new();
        for (key, objects, bytes) in figures {
            if objects == 0 {
                continue;
            }
            let slot = merged.entry(key).or_default();
            slot.0 += objects;
            slot.1 += bytes;
        }
        let mut rows: Vec<Row> = merged
            .into_iter()
            .map(|(key, (objects, bytes))| Row {
                key,
                objects,
                bytes,
            })
            .collect();
        sort_rows(&mut rows, |r| (r.bytes.into(), r.objects.into(), &r.key));
        Summary {
            pid,
            group_by,
            rows,
            counters,
            sample_bytes: 0,
        }
    }

    /// Live objects and bytes over all rows.
    pub fn total(&self) -> (u64, u64) {
        self.rows
            .iter()
            .fold((0, 0), |(o, b), r| (o + r.objects, b + r.bytes))
    }
}

/// Summarizes the blocks of `heap` that `filter` selects, grouped `by`.
pub fn summarize(heap: &Heap, filter: &Filter, by: GroupBy) -> Summary {
    // Add up per trace (or per size) first: millions of blocks, few traces. Without sampling
    // every weight is 1 and the sums are exact (f64 holds integers to 2^53).
    let mut per_trace = vec![(0f64, 0f64); heap.traces.len()];
    let mut per_size: HashMap<u64, (f64, f64)> = HashMap::new();
    heap.select(filter, &mut |_, b, _| {
        let slot = if by == GroupBy::Size {
            per_size.entry(b.size).or_default()
        } else {
            &mut per_trace[b.trace as usize]
        };
        let w = heap.weight(b.size);
        slot.0 += w;
        #[expect(clippy::cast_precision_loss, reason = "exact below 2^53 bytes")]
        let size = b.size as f64;
        slot.1 += w * size;
    });
    let round = |v: f64| {
        #[expect(clippy::cast_possible_truncation, reason = "non-negative sums")]
        let r = v.round() as u64;
        r
    };
    let figures: Vec<(Key, u64, u64)> = if by == GroupBy::Size {
        per_size
            .into_iter()
            .map(|(size, (o, b))| (Key::Size(size), round(o), round(b)))
            .collect()
    } else {
        per_trace
            .into_iter()
            .zip(heap.traces)
            .filter(|((o, _), _)| *o > 0.0)
            .map(|((o, b), t)| {
                let key = match by {
                    GroupBy::Site => Key::Site(t.site().to_string()),
                    GroupBy::Function => Key::Function(t.function.clone()),
                    GroupBy::Stack => Key::Stack(t.stack()),
                    GroupBy::Size => unreachable!("sizes are added up per block"),
                };
                (key, round(o), round(b))
            })
            .collect()
    };
    Summary {
        sample_bytes: heap.sample_bytes,
        ..Summary::from_figures(heap.pid, by, figures, heap.counters)
    }
}

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
    sort_rows(&mut rows, |r| (r.bytes.into(), r.objects.into(), &r.key));
    Diff {
        pid: new.pid,
        group_by: new.group_by,
        rows,
        counters: new.counters,
        sample_bytes: new.sample_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{heap::Trace, stacks::StackState, table::Block};

    fn s(rows: &[(&str, u64, u64)]) -> Summary {
        Summary::from_figures(
            7,
            GroupBy::Site,
            rows.iter()
                .map(|(n, o, b)| (Key::Site(n.to_string()), *o, *b)),
            Counters::default(),
        )
    }

    fn row(k: &str, objects: u64, bytes: u64) -> Row {
        Row {
            key: Key::Site(k.into()),
            objects,
            bytes,
        }
    }

    fn drow(k: &str, objects: i64, bytes: i64) -> DiffRow {
        DiffRow {
            key: Key::Site(k.into()),
            objects,
            bytes,
        }
    }

    #[test]
    fn merges_same_keys_and_sorts_by_bytes() {
        let sum = s(&[("a", 1, 10), ("b", 2, 300), ("a", 3, 30), ("z", 0, 0)]);
        assert_eq!(sum.rows, vec![row("b", 2, 300), row("a", 4, 40)]);
        assert_eq!(sum.total(), (6, 340));
    }

    #[test]
    fn diff_keeps_only_changed_rows_signed() {
        let old = s(&[("a", 4, 40), ("b", 2, 300), ("gone", 1, 8)]);
        let new = s(&[("a", 4, 40), ("b", 5, 750), ("new", 1, 16)]);
        let d = diff(&old, &new);
        assert_eq!(
            d.rows,
            vec![drow("b", 3, 450), drow("new", 1, 16), drow("gone", -1, -8)]
        );
    }

    #[test]
    fn diff_of_equal_summaries_is_empty() {
        let a = s(&[("a", 4, 40)]);
        assert!(diff(&a, &a.clone()).rows.is_empty());
    }

    #[test]
    fn groups_by_site_function_stack_and_size() {
        let t = |frames: &[&str], function: &str, state| Trace {
            frames: frames.iter().map(|s| s.to_string()).collect(),
            function: function.into(),
            state,
        };
        let traces = [
            t(&["leaf (a.c:3)", "a (a.c:10)"], "leaf", StackState::Walked),
            t(&["leaf (a.c:3)", "b (a.c:20)"], "leaf", StackState::Walked),
            t(&["leaf (a.c:4)"], "leaf", StackState::Lost),
        ];
        let b = |size, trace| Block {
            size,
            ts_ns: 0,
            trace,
            tid: 1,
        };
        let blocks = vec![(1, b(10, 0)), (2, b(10, 0)), (3, b(30, 1)), (4, b(100, 2))];
        let heap = Heap {
            pid: 3,
            blocks: &blocks,
            traces: &traces,
            now_ns: 0,
            counters: Counters::default(),
            sample_bytes: 0,
        };
        let rows = |by| {
            summarize(&heap, &Filter::default(), by)
                .rows
                .into_iter()
                .map(|r| (r.key.text(), r.objects, r.bytes))
                .collect::<Vec<_>>()
        };
        let v = |k: &str, o, b| (k.to_string(), o, b);
        assert_eq!(
            rows(GroupBy::Site),
            vec![v("leaf (a.c:4)", 1, 100), v("leaf (a.c:3)", 3, 50)]
        );
        assert_eq!(rows(GroupBy::Function), vec![v("leaf", 4, 150)]);
        assert_eq!(
            rows(GroupBy::Stack),
            vec![
                v("leaf (a.c:4) <- [stack lost]", 1, 100),
                v("leaf (a.c:3) <- b (a.c:20)", 1, 30),
                v("leaf (a.c:3) <- a (a.c:10)", 2, 20),
            ]
        );
        assert_eq!(
            rows(GroupBy::Size),
            vec![v("100 B", 1, 100), v("30 B", 1, 30), v("10 B", 2, 20)]
        );
    }
}
