//! The only table of the names by which user space finds the probes' maps, globals and
//! programs in the eBPF object.
//!
//! On the eBPF side each name is the item's own identifier (`#[map] static EVENTS`,
//! `static SLOT_MASK: Global<u32>`, `pub fn alloc_exit`), so nothing there spells it as a
//! string; the loader uses only the constants here. A unit test in muppy-user parses the
//! embedded object and checks both directions: every name here is in the object, and every map,
//! global and program of the object is here. The entry programs of the allocator functions are
//! one list, [`entry_programs!`](crate::entry_programs), that both sides expand.

/// Maps (`#[map] static NAME` in muppy-ebpf's `maps.rs`).
pub mod map {
    /// The ring buffer that carries events to user space. Sized by user space.
    pub const EVENTS: &str = "EVENTS";
    /// Per-thread in-flight slots, indexed by thread id modulo their count.
    pub const SLOTS: &str = "SLOTS";
    /// Allocator calls in flight whose thread's slot was taken, keyed by `pid_tgid`.
    pub const INFLIGHT: &str = "INFLIGHT";
    /// The count of calls in flight in [`INFLIGHT`].
    pub const FALLBACKS: &str = "FALLBACKS";
    /// Per process (tgid), the code of modules that keep frame pointers
    /// ([`crate::CodeRanges`]), where `--unwind auto` walks them rather than copy the stack.
    pub const FP_CODE: &str = "FP_CODE";
    /// Per-CPU counters of events that could not be delivered, by [`crate::Drop`] reason.
    pub const DROPS: &str = "DROPS";
    /// Per-CPU count of submits since the CPU last woke the reader.
    pub const SUBMITS: &str = "SUBMITS";
    /// Sampling: the hash set of sampled live blocks.
    pub const SAMPLED: &str = "SAMPLED";
    /// Sampling: [`crate::INTERVALS`] gaps between samples in bytes, drawn at random.
    pub const SAMPLE_GAPS: &str = "SAMPLE_GAPS";
    /// Sampling: per CPU, bytes left until the next sample.
    pub const COUNTDOWN: &str = "COUNTDOWN";
    /// The two counters that decide whether a free reads its caller
    /// ([`crate::FREE_CALLERS_TEARDOWNS`], [`crate::FREE_CALLERS_ALWAYS`]).
    pub const FREE_CALLERS: &str = "FREE_CALLERS";
    /// Threads between the start of their teardown and their exit.
    pub const TEARDOWN_TIDS: &str = "TEARDOWN_TIDS";
    /// The hash set of processes followed through probes shared by every process.
    pub const FOLLOWED: &str = "FOLLOWED";
    /// The hash set of processes whose memory-mapping calls are traced.
    pub const MAP_PIDS: &str = "MAP_PIDS";
    /// Memory-mapping calls between their entry and their return.
    pub const MAP_CALLS: &str = "MAP_CALLS";
    /// The process whose threads [`EXIT_HOLD`](super::program::EXIT_HOLD) stops as they
    /// enter `_exit` (its tgid; 0: none). Set while the session runs, unlike a global.
    pub const EXIT_HOLD: &str = "EXIT_HOLD";
    /// System-wide: per process, the [`crate::mapping_sum`] of the executable file mappings
    /// user space read in its `/proc/PID/maps`, and for which image ([`crate::MapsSeen`]).
    pub const MAPS_SEEN: &str = "MAPS_SEEN";
    /// System-wide with a selection (`--comm`, `--cgroup`): per process refused, which of its
    /// programs (its execs before it); its events stay in the kernel while it runs that one.
    pub const REFUSED: &str = "REFUSED";
    /// System-wide: per process, the execs seen since tracing began.
    pub const EXECS: &str = "EXECS";
    /// Until when (the kernel's monotonic ns) a return without its entry is a call that was
    /// under way as probes were placed.
    pub const ATTACH_UNTIL: &str = "ATTACH_UNTIL";

    /// Every map.
    pub const ALL: [&str; 20] = [
        EVENTS,
        SLOTS,
        INFLIGHT,
        FALLBACKS,
        FP_CODE,
        DROPS,
        SUBMITS,
        SAMPLED,
        SAMPLE_GAPS,
        COUNTDOWN,
        FREE_CALLERS,
        TEARDOWN_TIDS,
        FOLLOWED,
        MAP_PIDS,
        MAP_CALLS,
        EXIT_HOLD,
        MAPS_SEEN,
        REFUSED,
        EXECS,
        ATTACH_UNTIL,
    ];
}

/// The name of a global the loader sets before load, and its type: the loader can only give it
/// a `T`, and the test checks the object's variable has `T`'s size.
#[derive(Debug)]
pub struct GlobalName<T> {
    /// The variable's symbol.
    pub name: &'static str,
    ty: core::marker::PhantomData<T>,
}

impl<T> GlobalName<T> {
    const fn new(name: &'static str) -> Self {
        Self {
            name,
            ty: core::marker::PhantomData,
        }
    }

    /// The name and the size of its value, for a list of globals of any type.
    pub const fn erased(&self) -> (&'static str, usize) {
        (self.name, core::mem::size_of::<T>())
    }
}

impl<T> Clone for GlobalName<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for GlobalName<T> {}

/// Globals (`#[unsafe(no_mangle)] static NAME: Global<T>` in muppy-ebpf's `maps.rs`), all set
/// by user space at load.
pub mod global {
    use super::GlobalName;

    /// Entries of the [`SLOTS`](super::map::SLOTS) map - 1.
    pub const SLOT_MASK: GlobalName<u32> = GlobalName::new("SLOT_MASK");
    /// Every this many bytes submitted on one CPU, a submit wakes the reader.
    pub const WAKEUP_EVERY: GlobalName<u64> = GlobalName::new("WAKEUP_EVERY");
    /// Non-zero: sample allocations byte-weighted.
    pub const SAMPLING: GlobalName<u32> = GlobalName::new("SAMPLING");
    /// How allocations' stacks are taken: a [`crate::StackMode`].
    pub const STACK_MODE: GlobalName<u32> = GlobalName::new("STACK_MODE");
    /// Pages of user stack a [`crate::StackCopy`] carries (from the one that holds the stack
    /// pointer): 2, 3, 5 or 9, for `--stack-bytes` 4, 8, 16 or 32 KiB above it.
    pub const STACK_PAGES: GlobalName<u32> = GlobalName::new("STACK_PAGES");
    /// The tracer's own process, whose allocations are never recorded.
    pub const TRACER_TGID: GlobalName<u32> = GlobalName::new("TRACER_TGID");
    /// Non-zero: stamp events with the kernel's tick count instead of ns.
    pub const TICKS: GlobalName<u32> = GlobalName::new("TICKS");
    /// The target's page size, for pvalloc.
    pub const PAGE_SIZE: GlobalName<u64> = GlobalName::new("PAGE_SIZE");
    /// Non-zero: trace the memory mappings of every process.
    pub const MAP_ALL: GlobalName<u32> = GlobalName::new("MAP_ALL");
    /// Non-zero: system-wide with a selection; the probes look processes up in
    /// [`REFUSED`](super::map::REFUSED).
    pub const SELECTING: GlobalName<u32> = GlobalName::new("SELECTING");
    /// Where the kernel's structures keep what an exiting process's mappings are read from.
    pub const KERNEL_LAYOUT: GlobalName<crate::KernelLayout> = GlobalName::new("KERNEL_LAYOUT");

    /// Every global: name and size in bytes.
    pub const ALL: [(&str, usize); 11] = [
        SLOT_MASK.erased(),
        WAKEUP_EVERY.erased(),
        SAMPLING.erased(),
        STACK_MODE.erased(),
        STACK_PAGES.erased(),
        TRACER_TGID.erased(),
        TICKS.erased(),
        PAGE_SIZE.erased(),
        MAP_ALL.erased(),
        SELECTING.erased(),
        KERNEL_LAYOUT.erased(),
    ];
}

/// Programs (`pub fn name` in muppy-ebpf's `main.rs`), besides the entry programs of
/// [`entry_programs!`](crate::entry_programs), which
/// [`AllocFn::entry_program`](crate::AllocFn::entry_program) names.
pub mod program {
    /// The return probe of every allocating function (and of operator delete).
    pub const ALLOC_EXIT: &str = "alloc_exit";
    /// `free`'s entry.
    pub const FREE_ENTER: &str = "free_enter";
    /// The entry probe shared by followed processes, the function in its cookie.
    pub const ALLOC_ENTER_SHARED: &str = "alloc_enter_shared";
    /// [`ALLOC_EXIT`] for followed processes.
    pub const ALLOC_EXIT_SHARED: &str = "alloc_exit_shared";
    /// [`FREE_ENTER`] for followed processes.
    pub const FREE_ENTER_SHARED: &str = "free_enter_shared";
    /// The empty entry probe (the benchmark's floor).
    pub const NOOP_ENTER: &str = "noop_enter";
    /// The empty return probe.
    pub const NOOP_EXIT: &str = "noop_exit";
    /// glibc's thread teardown begins.
    pub const THREAD_TEARDOWN: &str = "thread_teardown";
    /// A task exited: its teardown, if any, ended. At
    /// [`SCHED_PROCESS_EXIT`](super::tracepoint::SCHED_PROCESS_EXIT).
    pub const TEARDOWN_EXIT: &str = "teardown_exit";
    /// A process exec'd. At [`SCHED_PROCESS_EXEC`](super::tracepoint::SCHED_PROCESS_EXEC).
    pub const PROC_EXEC: &str = "proc_exec";
    /// A process exited. At [`SCHED_PROCESS_EXIT`](super::tracepoint::SCHED_PROCESS_EXIT).
    pub const PROC_EXIT: &str = "proc_exit";
    /// A process is about to exec, its old program still mapped. At
    /// [`SCHED_PREPARE_EXEC`](super::tracepoint::SCHED_PREPARE_EXEC).
    pub const PROC_PREPARE_EXEC: &str = "proc_prepare_exec";
    /// A memory-mapping system call entered. At [`SYS_ENTER`](super::tracepoint::SYS_ENTER).
    pub const MAP_ENTER: &str = "map_enter";
    /// A memory-mapping system call returned. At [`SYS_EXIT`](super::tracepoint::SYS_EXIT).
    pub const MAP_EXIT: &str = "map_exit";
    /// `_exit`'s entry: stops the thread of the process [`EXIT_HOLD`](super::map::EXIT_HOLD)
    /// names, for the leak check at exit.
    pub const EXIT_HOLD: &str = "exit_hold";

    /// Every uprobe and uretprobe program but the entry programs, loaded at start.
    pub const UPROBES: [&str; 9] = [
        ALLOC_EXIT,
        FREE_ENTER,
        ALLOC_ENTER_SHARED,
        ALLOC_EXIT_SHARED,
        FREE_ENTER_SHARED,
        NOOP_ENTER,
        NOOP_EXIT,
        THREAD_TEARDOWN,
        EXIT_HOLD,
    ];

    /// Every raw tracepoint program, loaded when first attached.
    pub const RAW_TRACEPOINTS: [&str; 6] = [
        TEARDOWN_EXIT,
        PROC_EXEC,
        PROC_EXIT,
        PROC_PREPARE_EXEC,
        MAP_ENTER,
        MAP_EXIT,
    ];
}

/// The kernel's raw tracepoints the tracepoint programs attach to.
pub mod tracepoint {
    /// A task exits.
    pub const SCHED_PROCESS_EXIT: &str = "sched_process_exit";
    /// A process execs.
    pub const SCHED_PROCESS_EXEC: &str = "sched_process_exec";
    /// A process is past the point of no return of an exec, its old memory map still in
    /// place (Linux 6.10+).
    pub const SCHED_PREPARE_EXEC: &str = "sched_prepare_exec";
    /// A system call is entered.
    pub const SYS_ENTER: &str = "sys_enter";
    /// A system call returns.
    pub const SYS_EXIT: &str = "sys_exit";
}

/// The entry programs, one per allocating function (and operator delete), as
/// `program_name => AllocFn variant` pairs handed to the macro `$then`: muppy-ebpf expands it
/// into the programs themselves, this crate into [`AllocFn::entry_program`](crate::AllocFn::entry_program).
/// `free` has its own program, [`program::FREE_ENTER`].
#[macro_export]
macro_rules! entry_programs {
    ($then:ident) => {
        $then! {
            enter_malloc => Malloc,
            enter_calloc => Calloc,
            enter_realloc => Realloc,
            enter_reallocarray => Reallocarray,
            enter_posix_memalign => PosixMemalign,
            enter_aligned_alloc => AlignedAlloc,
            enter_memalign => Memalign,
            enter_valloc => Valloc,
            enter_pvalloc => Pvalloc,
            enter_new => New,
            enter_delete => Delete,
        }
    };
}
