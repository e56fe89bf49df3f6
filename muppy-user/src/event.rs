//! What the probes report, as user space handles it: each ring record decoded once, by the
//! ring reader ([`crate::ring::decode`]), into an [`Event`] that says what it is. The wire
//! structs (`muppy_common::{Event, FreeEvent, ProcEvent, MapEvent}`) stay as small as the
//! probes need them; nothing past the ring looks at their `kind` or reuses their fields.

use crate::table::StackRef;

/// One record from the probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Process `pid`'s heap or its own mappings changed.
    Change {
        /// The process (thread-group id).
        pid: u32,
        /// What changed.
        change: Change,
    },
    /// System-wide tracing: process `pid` exec'd a new program.
    Exec {
        /// The process.
        pid: u32,
        /// Its command name after the exec (the kernel's `comm`, at most 15 bytes).
        comm: String,
    },
    /// System-wide tracing: an executable file mapping of process `pid`, sent as it exited
    /// because user space had not seen it (see `muppy_common::ExitMapping`); it comes before
    /// the process's [`Event::Exit`].
    ExitMapping {
        /// The process.
        pid: u32,
        /// The mapping.
        mapping: ExitMap,
    },
    /// System-wide tracing: process `pid` exited.
    Exit {
        /// The process.
        pid: u32,
        /// Its command name as it exited.
        comm: String,
    },
}

/// An executable file mapping of an exiting process, as the kernel saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitMap {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// The file offset `start` maps.
    pub offset: u64,
    /// The file's device, numbered as `stat` numbers it.
    pub dev: u64,
    /// The file's inode.
    pub ino: u64,
    /// The file's path from the root of the process's mount namespace, if the kernel could
    /// tell it whole.
    pub path: Option<std::path::PathBuf>,
}

/// A change to one process's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An allocator call changed the heap.
    Heap(HeapChange),
    /// The program mapped, unmapped or moved memory itself (`--mmap`).
    Map(MapChange),
}

impl Change {
    /// When it happened, in `CLOCK_MONOTONIC` ns; 0 for a free sent at `free`'s entry, which
    /// is not timed.
    pub fn ts_ns(&self) -> u64 {
        match self {
            Change::Heap(HeapChange::Alloc(a) | HeapChange::Realloc { new: a, .. }) => a.ts_ns,
            Change::Heap(HeapChange::Free(f)) => f.ts_ns,
            Change::Map(m) => m.ts_ns(),
        }
    }
}

/// An allocator call that changed the heap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeapChange {
    /// A new block.
    Alloc(Alloc),
    /// The block at `old` was replaced by `new` (possibly at the same address, when it grew or
    /// shrank in place).
    Realloc {
        /// The block passed in.
        old: u64,
        /// The block returned.
        new: Alloc,
    },
    /// A block was freed.
    Free(Free),
}

/// A new block, as its allocating call returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alloc {
    /// Its address.
    pub addr: u64,
    /// Bytes the program asked for (calloc: n×size; pvalloc: rounded to a page).
    pub size: u64,
    /// The allocating thread.
    pub tid: u32,
    /// The return address into the code that called the allocator: the allocation *site*.
    pub caller: u64,
    /// When the call returned, in `CLOCK_MONOTONIC` ns (or the end of its kernel tick).
    pub ts_ns: u64,
    /// Where its call stack is.
    pub stack: StackRef,
}

/// A freed block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Free {
    /// The block.
    pub addr: u64,
    /// The return address into the code that freed it; 0 where the probe did not read it
    /// (see `muppy_common::FreeEvent::caller`).
    pub caller: u64,
    /// Sent at a realloc's return (realloc(p, 0), or a sampled block a realloc moved off), so
    /// it may arrive after a newer allocation of its address (see
    /// [`crate::table::LiveTable::apply`]).
    pub by_realloc: bool,
    /// When: a realloc's return; 0 for a free sent at `free`'s entry.
    pub ts_ns: u64,
}

/// A memory-mapping system call the program made itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapChange {
    /// Anonymous memory mapped.
    Mmap {
        /// The mapping.
        addr: u64,
        /// Its length as asked.
        len: u64,
        /// The return address into the code that called the `mmap` wrapper.
        caller: u64,
        /// When the call returned.
        ts_ns: u64,
    },
    /// A range unmapped.
    Munmap {
        /// The range.
        addr: u64,
        /// Its length as asked.
        len: u64,
        /// When the call returned.
        ts_ns: u64,
    },
    /// A mapping moved or resized.
    Mremap {
        /// The mapping before.
        old_addr: u64,
        /// Its length before.
        old_len: u64,
        /// The mapping after.
        addr: u64,
        /// Its length after.
        len: u64,
        /// When the call returned.
        ts_ns: u64,
    },
}

impl MapChange {
    /// When the call returned, in `CLOCK_MONOTONIC` ns.
    pub fn ts_ns(&self) -> u64 {
        match *self {
            MapChange::Mmap { ts_ns, .. }
            | MapChange::Munmap { ts_ns, .. }
            | MapChange::Mremap { ts_ns, .. } => ts_ns,
        }
    }
}

impl Event {
    /// The process it concerns.
    pub fn pid(&self) -> u32 {
        match *self {
            Event::Change { pid, .. }
            | Event::Exec { pid, .. }
            | Event::ExitMapping { pid, .. }
            | Event::Exit { pid, .. } => pid,
        }
    }
}
