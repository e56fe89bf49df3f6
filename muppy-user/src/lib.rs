//! muppy's Linux collector: everything that needs the kernel, root or the traced process.
//!
//! The data path, one module each: [`probe`] (find the allocator, load and attach the eBPF
//! probes) → [`ring`] (read their records, decoded once into [`event`]s, emptied by the
//! real-time [`pump`] thread) → [`table`] and [`regions`] (live blocks and mappings per
//! process, with call paths read by [`stacks`] and named by [`symbols`]) → [`process`] (one
//! traced process image, seen as a `muppy_core::model::Heap`). [`target`] starts, checks and
//! follows the traced processes (the one ptrace thread), and freezes one for a leak check,
//! whose root words [`places`] names; [`session`] runs a whole session and emits what happens
//! into a [`session::Sink`]. The model, the analyses and the printers are
//! in `muppy-core`, which this crate depends on and which knows nothing of it.
#![deny(missing_docs)]

pub mod check;
pub mod clock;
pub mod daemon;
pub mod event;
pub mod freed;
pub mod placement;
pub mod places;
pub mod probe;
pub mod process;
pub mod pump;
pub mod regions;
pub mod ring;
pub mod session;
pub mod stacks;
pub mod symbols;
pub mod table;
pub mod target;
pub mod unwind;
