//! The model: live blocks, structured frames and call paths, trust counters, filters, and
//! the facts about a process that reports show.

pub mod filter;
pub mod frame;
pub mod heap;
pub mod leak;
pub mod process;

pub use filter::Filter;
pub use frame::{Cut, Frame, LOST_STACK, StackState, Trace};
pub use heap::{Allocated, Block, Blocks, Counters, Heap, ModuleFile, TraceId, sample_weight};
pub use leak::{CheckFacts, Image, LeakKind, Place, Segment, Verdict};
pub use process::{End, Exit, Identity, MapRow};
