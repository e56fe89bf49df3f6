//! The one weighted accumulator and the one ordering every analysis uses: figures are added
//! up per call path (or per size) with each block's sampling weight, and rows are shown
//! largest total first.

use std::collections::HashMap;

use crate::model::{Filter, Heap};

/// Objects and bytes added up with sampling weights. Without sampling every weight is 1 and
/// the sums are exact (f64 holds integers to 2^53).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    /// Weighted count of blocks.
    pub objects: f64,
    /// Weighted bytes.
    pub bytes: f64,
}

impl Tally {
    fn add(&mut self, weight: f64, size: u64) {
        self.objects += weight;
        #[expect(clippy::cast_precision_loss, reason = "exact below 2^53 bytes")]
        let size = size as f64;
        self.bytes += weight * size;
    }

    /// Whether any block was added.
    pub fn is_empty(&self) -> bool {
        self.objects <= 0.0
    }

    /// The figures as whole objects and bytes.
    pub fn rounded(self) -> (u64, u64) {
        let round = |v: f64| {
            #[expect(clippy::cast_possible_truncation, reason = "non-negative sums")]
            let r = v.round() as u64;
            r
        };
        (round(self.objects), round(self.bytes))
    }
}

/// The selected blocks added up per call path, indexed like `heap.traces`: millions of
/// blocks, few paths.
pub fn per_trace(heap: &Heap, filter: &Filter) -> Vec<Tally> {
    let mut per = vec![Tally::default(); heap.traces.len()];
    heap.select(filter, &mut |_, b, _| {
        per[b.trace as usize].add(heap.weight(b.size), b.size);
    });
    per
}

/// The selected blocks added up per block size.
pub fn per_size(heap: &Heap, filter: &Filter) -> HashMap<u64, Tally> {
    let mut per: HashMap<u64, Tally> = HashMap::new();
    heap.select(filter, &mut |_, b, _| {
        per.entry(b.size)
            .or_default()
            .add(heap.weight(b.size), b.size);
    });
    per
}

/// The order of every table and tree: bytes, then objects (both largest first), then the
/// key. Signed, so that diffs use it too.
pub fn largest_first<T, K: Ord + ?Sized>(rows: &mut [T], fig: impl Fn(&T) -> (i128, i128, &K)) {
    rows.sort_by(|a, b| {
        let (ab, ao, ak) = fig(a);
        let (bb, bo, bk) = fig(b);
        bb.cmp(&ab).then(bo.cmp(&ao)).then_with(|| ak.cmp(bk))
    });
}
