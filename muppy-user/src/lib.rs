//! muppy: a memory-leak tracer for unmodified native processes.
//!
//! The data path, one module each: [`probe`] (find the allocator, load and attach the eBPF
//! probes) → [`ring`] (read their events) → [`table`] (live blocks per process) →
//! [`summary`] (per-site summaries and diffs, named by [`symbols`]) → [`output`] (tables and
//! JSON). [`target`] starts or checks the traced process; [`trace`] runs a whole session.
#![deny(missing_docs)]

pub mod output;
pub mod probe;
pub mod ring;
pub mod summary;
pub mod symbols;
pub mod table;
pub mod target;
pub mod trace;
