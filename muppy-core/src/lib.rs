//! muppy's pure core: everything about a heap that does not need the kernel.
//!
//! - [`model`]: live blocks, structured frames and call paths, trust counters, filters.
//! - [`snapshot`]: a heap saved to a file and read back (format v3; v1 and v2 still read).
//! - [`analysis`]: summaries, diffs, call trees and object lists, from one weighted
//!   aggregation and one ordering.
//! - [`report`]: printers (tables, JSON Lines) chosen once and written into an `io::Write`.
//!
//! It depends on no eBPF loader, async runtime or system-call crate: it builds and its tests
//! run on any machine, without root. The Linux collector (`muppy-user`) depends on it, never
//! the reverse.
#![deny(missing_docs)]

pub mod analysis;
pub mod model;
pub mod report;
pub mod snapshot;
