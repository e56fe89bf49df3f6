//! Call graphs over the live blocks, for the terminal browser: the top-down tree (the
//! program's entry at the root, allocation sites at the leaves), the bottom-up tree (the
//! allocation sites at the root, their callers below: [`super::calltree::build`]), and one
//! function's callers and callees with the objects and bytes that went through each.

use std::collections::HashMap;

use super::{
    aggregate::{largest_first, per_trace},
    calltree::{self, Label, Node},
};
use crate::model::{Filter, Heap, LOST_STACK};

/// The top-down tree of the blocks `filter` selects: each root is an outermost frame (or the
/// marker of a path that is not whole), its children the functions it called, down to the
/// allocation sites. Largest first at every level.
pub fn top_down(heap: &Heap, filter: &Filter) -> Vec<Node> {
    let mut top = Node::new(Label::End(LOST_STACK));
    for (t, tally) in per_trace(heap, filter).into_iter().enumerate() {
        if tally.is_empty() {
            continue;
        }
        let (objects, bytes) = tally.rounded();
        let mut path = calltree::path(&heap.traces[t]);
        path.reverse();
        top.add(&path, objects, bytes);
    }
    top.sort();
    top.children
}

/// The bottom-up tree: each root an allocation site, its children its callers (the tree
/// `tree` prints).
pub fn bottom_up(heap: &Heap, filter: &Filter) -> Vec<Node> {
    calltree::build(heap, filter)
}

/// A caller or callee of a function, and what was allocated through that edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The function's name (or the marker of a path cut there, or `[allocator]` for the
    /// function's own calls into the allocator).
    pub name: String,
    /// Live blocks allocated through the edge.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One function's place in the call graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Neighbours {
    /// Live blocks allocated with the function on their path (each block once, however
    /// often the function recurses).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The functions that called it, largest first.
    pub callers: Vec<Neighbour>,
    /// The functions it called on the way to the allocator, largest first; `[allocator]` is
    /// its own calls.
    pub callees: Vec<Neighbour>,
}

/// What a function's own calls into the allocator are called among its callees.
pub const ALLOCATOR: &str = "[allocator]";

/// The callers and callees of the function named `function` (as
/// [`crate::model::Frame::function_name`] gives it), over the blocks `filter` selects. A path
/// that passes through the function several times (recursion) counts once per distinct
/// neighbour.
pub fn neighbours(heap: &Heap, filter: &Filter, function: &str) -> Neighbours {
    let mut out = Neighbours::default();
    let mut callers: HashMap<String, (u64, u64)> = HashMap::new();
    let mut callees: HashMap<String, (u64, u64)> = HashMap::new();
    for (t, tally) in per_trace(heap, filter).into_iter().enumerate() {
        if tally.is_empty() {
            continue;
        }
        let trace = &heap.traces[t];
        let names: Vec<String> = trace.frames.iter().map(|f| f.function_name()).collect();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for (i, n) in names.iter().enumerate() {
            if n != function {
                continue;
            }
            // Frames are innermost first: the caller is the next one out.
            let caller = names
                .get(i + 1)
                .cloned()
                .or_else(|| trace.state.marker().map(str::to_string));
            up.extend(caller);
            down.push(match i {
                0 => ALLOCATOR.to_string(),
                _ => names[i - 1].clone(),
            });
        }
        if down.is_empty() {
            continue;
        }
        let (objects, bytes) = tally.rounded();
        out.objects += objects;
        out.bytes += bytes;
        for (names, into) in [(up, &mut callers), (down, &mut callees)] {
            let mut names = names;
            names.sort();
            names.dedup();
            for n in names {
                let slot = into.entry(n).or_default();
                slot.0 += objects;
                slot.1 += bytes;
            }
        }
    }
    let list = |m: HashMap<String, (u64, u64)>| {
        let mut v: Vec<Neighbour> = m
            .into_iter()
            .map(|(name, (objects, bytes))| Neighbour {
                name,
                objects,
                bytes,
            })
            .collect();
        largest_first(&mut v, |n| {
            (n.bytes.into(), n.objects.into(), n.name.as_str())
        });
        v
    };
    out.callers = list(callers);
    out.callees = list(callees);
    out
}
