//! The analyses over a [`crate::model::Heap`]: summaries, diffs, call trees and object lists,
//! all from one weighted aggregation and one ordering ([`aggregate`]).

pub mod aggregate;
pub mod callgraph;
pub mod calltree;
pub mod diff;
pub mod leaks;
pub mod objects;
pub mod summary;
pub mod verdicts;

pub use callgraph::{Neighbour, Neighbours, bottom_up, neighbours, top_down};
pub use calltree::{Label, Node};
pub use diff::{Diff, DiffRow, diff};
pub use objects::{Object, objects};
pub use summary::{GroupBy, Key, Row, Summary, summarize};
pub use verdicts::{LeakReport, LeakRow, RefReport, RefTree, Referrer, Step, Total, leak_report};

#[cfg(test)]
mod tests;
