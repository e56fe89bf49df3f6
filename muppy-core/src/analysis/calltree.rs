//! The allocation tree, muppy's answer to Pympler's referrer browser (`ConsoleBrowser`): for the
//! selected blocks, who allocated them. Each root is an allocation site (or one block, with
//! `--addr`); its children are the functions that called it, their children the callers of
//! those, out to the program's entry. Every node carries the objects and bytes that went
//! through it.

use super::aggregate::{largest_first, per_trace};
use crate::model::{Filter, Frame, Heap, LOST_STACK, Trace};

/// What a node stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Label {
    /// A frame of the call paths.
    Frame(Frame),
    /// Where a path that is not whole ends: its [`StackState::marker`].
    End(&'static str),
    /// The one block a tree is rooted at.
    Block(u64),
}

/// One node of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// What it stands for.
    pub label: Label,
    /// Its name, as tables show it; nodes of one name under one parent are one node.
    pub name: String,
    /// Live blocks allocated through this node.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Callers, largest first.
    pub children: Vec<Node>,
}

impl Node {
    pub(crate) fn new(label: Label) -> Self {
        let name = match &label {
            Label::Frame(f) => f.name().to_string(),
            Label::End(marker) => (*marker).to_string(),
            Label::Block(addr) => format!("{addr:#x}"),
        };
        Node {
            label,
            name,
            objects: 0,
            bytes: 0,
            children: Vec::new(),
        }
    }

    /// Adds `objects`/`bytes` along `path`, below this node.
    pub(crate) fn add(&mut self, path: &[Node], objects: u64, bytes: u64) {
        self.objects += objects;
        self.bytes += bytes;
        if let Some((first, rest)) = path.split_first() {
            let child = match self.children.iter().position(|c| c.name == first.name) {
                Some(i) => &mut self.children[i],
                None => {
                    self.children.push(first.clone());
                    self.children.last_mut().expect("just pushed")
                }
            };
            child.add(rest, objects, bytes);
        }
    }

    pub(crate) fn sort(&mut self) {
        largest_first(&mut self.children, |c| {
            (c.bytes.into(), c.objects.into(), c.name.as_str())
        });
        self.children.iter_mut().for_each(Node::sort);
    }
}

/// A trace as empty nodes, innermost first, ending in [`Label::End`] where it is not whole.
pub(crate) fn path(t: &Trace) -> Vec<Node> {
    let mut v: Vec<Node> = t
        .frames
        .iter()
        .map(|f| Node::new(Label::Frame(Frame::clone(f))))
        .collect();
    v.extend(t.state.marker().map(|m| Node::new(Label::End(m))));
    v
}

/// The trees of the blocks `filter` selects, one per allocation site, largest first.
pub fn build(heap: &Heap, filter: &Filter) -> Vec<Node> {
    let mut top = Node::new(Label::End(LOST_STACK));
    for (t, tally) in per_trace(heap, filter).into_iter().enumerate() {
        if tally.is_empty() {
            continue;
        }
        let (objects, bytes) = tally.rounded();
        top.add(&path(&heap.traces[t]), objects, bytes);
    }
    top.sort();
    top.children
}

/// The tree of the one live block at `addr`: the block, then its call path. `None` if no live
/// block starts there.
pub fn build_for_block(heap: &Heap, addr: u64) -> Option<Node> {
    let b = heap.blocks.block(addr)?;
    let mut root = Node::new(Label::Block(addr));
    root.add(&path(&heap.traces[b.trace as usize]), 1, b.size);
    Some(root)
}
