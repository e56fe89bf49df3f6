//! Summaries: live objects and bytes per group (site, function, stack or size), Pympler's
//! `summary.summarize` for native allocations.

use std::{cmp::Ordering, collections::HashMap, hash::Hash};

use super::aggregate::{largest_first, per_size, per_trace};
use crate::model::{Counters, Filter, Frame, Heap, Trace};

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

    /// Every grouping.
    pub const ALL: [GroupBy; 4] = [
        GroupBy::Site,
        GroupBy::Function,
        GroupBy::Stack,
        GroupBy::Size,
    ];

    /// The grouping [`GroupBy::name`] calls `name`.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.name() == name)
    }

    /// The singular, as JSON's `group_by` says it.
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Site => "site",
            GroupBy::Function => "function",
            GroupBy::Stack => "stack",
            GroupBy::Size => "size",
        }
    }
}

/// What one row stands for. Frames stay structured; two keys are the same group when they
/// show the same (two return addresses in one line of code are one site).
#[derive(Clone, Debug)]
pub enum Key {
    /// An allocation site.
    Site(Frame),
    /// A function.
    Function(String),
    /// A call path, innermost first, with what ends it where it is not whole.
    Stack {
        /// The frames.
        frames: Vec<Frame>,
        /// [`crate::model::StackState::marker`]: why the frames stop short, if they do.
        end: Option<&'static str>,
    },
    /// A block size.
    Size(u64),
}

impl Key {
    /// The names a row shows for the key: one, or a stack's frames innermost first (and
    /// the marker of a stack that is not whole).
    pub fn names(&self) -> Vec<String> {
        match self {
            Key::Site(f) => vec![f.name().to_string()],
            Key::Function(s) => vec![s.clone()],
            Key::Stack { frames, end } => {
                let mut v: Vec<String> = frames.iter().map(|f| f.name().to_string()).collect();
                v.extend(end.map(str::to_string));
                v
            }
            Key::Size(n) => vec![format!("{n} B")],
        }
    }

    /// The key as one line of text (a stack's frames joined by `" <- "`).
    pub fn text(&self) -> String {
        self.names().join(" <- ")
    }

    /// The group a block of `size` bytes allocated along `trace` falls in.
    pub fn of(trace: &Trace, size: u64, by: GroupBy) -> Key {
        match by {
            GroupBy::Site => Key::Site(trace.site().clone()),
            GroupBy::Function => Key::Function(trace.site().function_name()),
            GroupBy::Stack => Key::Stack {
                frames: trace.owned_frames(),
                end: trace.state.marker(),
            },
            GroupBy::Size => Key::Size(size),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Key::Site(_) => 0,
            Key::Function(_) => 1,
            Key::Stack { .. } => 2,
            Key::Size(_) => 3,
        }
    }

    /// What makes two keys one group: the kind and what they show.
    fn identity(&self) -> (u8, Vec<String>, u64) {
        match self {
            Key::Size(n) => (self.rank(), Vec::new(), *n),
            _ => (self.rank(), self.names(), 0),
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.identity().cmp(&other.identity())
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
        largest_first(&mut rows, |r| (r.bytes.into(), r.objects.into(), &r.key));
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
    let figures: Vec<(Key, u64, u64)> = if by == GroupBy::Size {
        per_size(heap, filter)
            .into_iter()
            .map(|(size, t)| {
                let (o, b) = t.rounded();
                (Key::Size(size), o, b)
            })
            .collect()
    } else {
        per_trace(heap, filter)
            .into_iter()
            .zip(heap.traces)
            .filter(|(t, _)| !t.is_empty())
            .map(|(t, trace)| {
                let key = Key::of(trace, 0, by);
                let (o, b) = t.rounded();
                (key, o, b)
            })
            .collect()
    };
    Summary {
        sample_bytes: heap.sample_bytes,
        ..Summary::from_figures(heap.pid, by, figures, heap.counters)
    }
}
