//! The allocation tree, muppy's answer to Pympler's referrer browser (`ConsoleBrowser`): for the
//! selected blocks, who allocated them. Each root is an allocation site (or one block, with
//! `--addr`); its children are the functions that called it, their children the callers of
//! those, out to the program's entry. Every node carries the objects and bytes that went
//! through it.

use std::collections::HashMap;

use crate::heap::{Filter, Heap};

/// One node of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The frame (`function (file:line)`), or the block for a tree rooted at one block.
    pub label: String,
    /// Live blocks allocated through this node.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Callers, largest first.
    pub children: Vec<Node>,
}

impl Node {
    fn leaf(label: String) -> Self {
        Node {
            label,
            objects: 0,
            bytes: 0,
            children: Vec::new(),
        }
    }

    /// Adds `objects`/`bytes` along `path`, below this node.
    fn add(&mut self, path: &[String], objects: u64, bytes: u64) {
        self.objects += objects;
        self.bytes += bytes;
        if let Some((first, rest)) = path.split_first() {
            let child = match self.children.iter().position(|c| &c.label == first) {
                Some(i) => &mut self.children[i],
                None => {
                    self.children.push(Node::leaf(first.clone()));
                    self.children.last_mut().expect("just pushed")
                }
            };
            child.add(rest, objects, bytes);
        }
    }

    fn sort(&mut self) {
        self.children.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then(b.objects.cmp(&a.objects))
                .then_with(|| a.label.cmp(&b.label))
        });
        self.children.iter_mut().for_each(Node::sort);
    }
}

/// The trees of the blocks `filter` selects, one per allocation site, largest first.
pub fn build(heap: &Heap, filter: &Filter) -> Vec<Node> {
    let mut per_trace: HashMap<u32, (f64, f64)> = HashMap::new();
    heap.select(filter, &mut |_, b, _| {
        let slot = per_trace.entry(b.trace).or_default();
        let w = heap.weight(b.size);
        slot.0 += w;
        #[expect(clippy::cast_precision_loss, reason = "exact below 2^53 bytes")]
        let size = b.size as f64;
        slot.1 += w * size;
    });
    let mut top = Node::leaf(String::new());
    let mut traces: Vec<_> = per_trace.into_iter().collect();
    traces.sort_unstable_by_key(|(t, _)| *t);
    for (t, (objects, bytes)) in traces {
        #[expect(clippy::cast_possible_truncation, reason = "non-negative sums")]
        let (objects, bytes) = (objects.round() as u64, bytes.round() as u64);
        top.add(&heap.traces[t as usize].stack(), objects, bytes);
    }
    top.sort();
    top.children
}

/// The tree of the one live block at `addr`: the block, then its call path. `None` if no live
/// block starts there.
pub fn build_for_block(heap: &Heap, addr: u64) -> Option<Node> {
    let b = heap.blocks.block(addr)?;
    let mut root = Node::leaf(format!("{addr:#x}"));
    root.add(&heap.traces[b.trace as usize].stack(), 1, b.size);
    Some(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        heap::{Counters, Trace},
        stacks::StackState,
        table::Block,
    };

    #[test]
    fn two_paths_to_one_site_branch_with_exact_counts() {
        let t = |frames: &[&str]| Trace {
            frames: frames.iter().map(|s| s.to_string()).collect(),
            function: String::new(),
            state: StackState::Walked,
        };
        let traces = [
            t(&["leaf", "a3", "a2", "main"]),
            t(&["leaf", "b3", "b2", "main"]),
        ];
        let b = |size, trace| Block {
            size,
            ts_ns: 0,
            trace,
            tid: 1,
        };
        let blocks = vec![(1, b(8, 0)), (2, b(8, 0)), (3, b(100, 1))];
        let heap = Heap {
            pid: 1,
            blocks: &blocks,
            traces: &traces,
            now_ns: 0,
            counters: Counters::default(),
            sample_bytes: 0,
        };
        let roots = build(&heap, &Filter::default());
        assert_eq!(roots.len(), 1);
        let leaf = &roots[0];
        assert_eq!(
            (leaf.label.as_str(), leaf.objects, leaf.bytes),
            ("leaf", 3, 116)
        );
        let kids: Vec<_> = leaf
            .children
            .iter()
            .map(|c| (c.label.as_str(), c.objects, c.bytes))
            .collect();
        assert_eq!(kids, vec![("b3", 1, 100), ("a3", 2, 16)]);
        assert_eq!(leaf.children[1].children[0].children[0].label, "main");
        let one = build_for_block(&heap, 3).unwrap();
        assert_eq!((one.label.as_str(), one.objects), ("0x3", 1));
        assert_eq!(one.children[0].children[0].label, "b3");
        assert!(build_for_block(&heap, 4).is_none());
    }
}
