//! muppy: a memory-leak tracer for unmodified native processes.
//!
//! The data path, one module each: [`probe`] (find the allocator, load and attach the eBPF
//! probes) → [`ring`] (read their records, decoded once into [`event`]s) → [`table`] (live
//! blocks per process, with call paths read by [`stacks`] and named by [`symbols`]) → [`heap`]
//! (the blocks as the views see them, and the filter) → [`summary`] (summaries and diffs),
//! [`tree`] (who allocated what) → [`output`] (tables, trees and JSON), chosen by [`view`].
//! [`snapshot`] saves a heap and reads it back for offline views. [`target`] starts or checks
//! the traced process; [`trace`] runs a whole session.
#![deny(missing_docs)]

pub mod clock;
pub mod event;
pub mod heap;
pub mod output;
pub mod placement;
pub mod probe;
pub mod process;
pub mod regions;
pub mod ring;
pub mod snapshot;
pub mod stacks;
pub mod summary;
pub mod symbols;
pub mod table;
pub mod target;
pub mod trace;
pub mod tree;
pub mod view;
