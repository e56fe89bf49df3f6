//! Which blocks a view covers, like Pympler's `muppy.filter(objects, Type, min, max)`.

use std::time::Duration;

use regex::Regex;

use super::{
    LeakKind,
    frame::Trace,
    heap::{Block, age},
};

/// Which blocks a view covers.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Keep blocks whose call path has a frame whose name matches this.
    pub site: Option<Regex>,
    /// Keep blocks of at least this many bytes.
    pub min_size: Option<u64>,
    /// Keep blocks of at most this many bytes.
    pub max_size: Option<u64>,
    /// Keep blocks allocated at least this long ago.
    pub older_than: Option<Duration>,
    /// Keep blocks a leak check found to be of this kind.
    pub kind: Option<LeakKind>,
}

impl Filter {
    /// Per trace, whether its blocks can pass (the site pattern matches some frame's name).
    pub fn traces(&self, traces: &[Trace]) -> Vec<bool> {
        traces
            .iter()
            .map(|t| {
                self.site
                    .as_ref()
                    .is_none_or(|re| t.frames.iter().any(|f| re.is_match(&f.name().to_string())))
            })
            .collect()
    }

    /// Whether it limits blocks by more than their call path (size, age, kind): figures of
    /// everything a call path allocated, freed blocks included, cannot be limited so.
    pub fn limits_blocks(&self) -> bool {
        self.min_size.is_some()
            || self.max_size.is_some()
            || self.older_than.is_some()
            || self.kind.is_some()
    }

    /// Whether a block passes the size and age limits.
    pub fn block(&self, b: &Block, now_ns: u64) -> bool {
        self.min_size.is_none_or(|m| b.size >= m)
            && self.max_size.is_none_or(|m| b.size <= m)
            && self.older_than.is_none_or(|d| age(b, now_ns) >= d)
            && self
                .kind
                .is_none_or(|k| b.leak.is_some_and(|v| v.kind == k))
    }
}
