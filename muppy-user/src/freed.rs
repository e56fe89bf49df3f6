//! Heap memory known to be free: blocks freed while traced whose bytes no allocation has
//! taken since.
//!
//! A leak check scans every writable byte that is not a live block as a root, since heap
//! memory muppy holds no block for may be a live object allocated before tracing began. Bytes
//! of a block freed while traced are not such an object: they are left out, so that a pointer
//! left behind in a freed block does not keep its target "reachable" (Valgrind, whose
//! allocator marks freed blocks inaccessible, agrees).

use std::{collections::BTreeMap, ops::Range};

/// Only blocks smaller than this are kept when freed. Allocators hand larger ones back to the
/// system (glibc unmaps its mmapped chunks at free), and the program may map something else
/// at the same address later: memory that must be scanned. Small blocks stay in the
/// allocator's arenas; a freed block not kept is scanned as a root, which can hide a leak but
/// never make a false one.
pub const SMALL: u64 = 64 << 10;

/// Disjoint, non-adjacent address ranges (adjacent ones are merged).
#[derive(Clone, Debug, Default)]
pub struct FreeRanges {
    /// Start → end.
    map: BTreeMap<u64, u64>,
}

impl FreeRanges {
    /// Adds `r` (a block just freed).
    pub fn insert(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // A range starting before `r` that reaches it.
        if let Some((&s, &e)) = self.map.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.map.remove(&s);
        }
        // Ranges starting inside or right after.
        while let Some((&s, &e)) = self.map.range(start..=end).next() {
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
    }

    /// Removes `r` (a block just allocated there).
    pub fn remove(&mut self, r: Range<u64>) {
        if r.is_empty() || self.map.is_empty() {
            return;
        }
        let mut cut = Vec::new();
        if let Some((&s, &e)) = self.map.range(..r.start).next_back()
            && e > r.start
        {
            cut.push((s, e));
        }
        cut.extend(self.map.range(r.start..r.end).map(|(&s, &e)| (s, e)));
        for (s, e) in cut {
            self.map.remove(&s);
            if s < r.start {
                self.map.insert(s, r.start);
            }
            if e > r.end {
                self.map.insert(r.end, e);
            }
        }
    }

    /// The ranges overlapping `r`, clipped to it, in address order.
    pub fn within(&self, r: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let first = self
            .map
            .range(..r.start)
            .next_back()
            .filter(|&(_, &e)| e > r.start)
            .map_or(r.start, |(&s, _)| s);
        self.map
            .range(first..r.end)
            .map(move |(&s, &e)| s.max(r.start)..e.min(r.end))
    }

    /// How many ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(f: &FreeRanges) -> Vec<Range<u64>> {
        f.within(0..u64::MAX).collect()
    }

    #[test]
    fn merges_and_carves() {
        let mut f = FreeRanges::default();
        f.insert(100..200);
        f.insert(300..400);
        f.insert(200..300); // bridges both
        assert_eq!(all(&f), vec![100..400]);
        f.remove(150..160);
        assert_eq!(all(&f), vec![100..150, 160..400]);
        f.remove(90..110);
        f.remove(390..500);
        assert_eq!(all(&f), vec![110..150, 160..390]);
        f.insert(140..170);
        assert_eq!(all(&f), vec![110..390]);
        assert_eq!(f.within(0..120).collect::<Vec<_>>(), vec![110..120]);
        assert_eq!(f.within(200..210).collect::<Vec<_>>(), vec![200..210]);
        f.remove(0..1000);
        assert!(f.is_empty());
    }
}
