//! Every map and global of the probes, in one place. Each one's name in the object is its
//! identifier here, which `muppy_common::names` lists for the loader (a unit test in
//! muppy-user checks the two agree).

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use muppy_common::{CodeRanges, DROP_KINDS, INTERVALS, InFlight, KernelLayout, MapCall, MapsSeen};

/// Events to user space. Sized by user space (`--ring-mb`) before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Allocator calls between entry and return, one slot per thread id modulo the slot count
/// (a power of two set by user space): an array lookup is an indexed load, a hash lookup
/// costs more than the rest of a probe's work. A thread claims its slot for the length of a
/// call with a compare-and-swap on [`InFlight::owner`]; a thread that finds its slot taken
/// by another thread's call keeps its record in [`INFLIGHT`] instead.
#[map]
pub static SLOTS: Array<InFlight> = Array::with_max_entries(1, 0);

/// `SLOTS` entries - 1.
#[unsafe(no_mangle)]
pub static SLOT_MASK: Global<u32> = Global::new(0);

/// The fallback for calls whose slot was taken, keyed by pid_tgid, marked idle between calls
/// and rewritten in place. Least-recently-used records (threads long gone) make room for new
/// threads. Sized by user space.
#[map]
pub static INFLIGHT: LruHashMap<u64, InFlight> = LruHashMap::with_max_entries(16384, 0);

/// Calls in flight in `INFLIGHT`: while 0, no thread needs to look there.
#[map]
pub static FALLBACKS: Array<u64> = Array::with_max_entries(1, 0);

/// Per process (tgid), the code of its modules that keep frame pointers, where
/// [`muppy_common::StackMode::Auto`] walks them instead of copying the stack. Written by user
/// space.
#[map]
pub static FP_CODE: HashMap<u32, CodeRanges> = HashMap::with_max_entries(1024, 0);

/// Events that could not be delivered, per [`muppy_common::Drop`] reason.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_KINDS, 0);

/// Every this many bytes submitted on one CPU, a submit wakes the reader; between them the
/// reader polls. Waking on every event costs ≈1.5 µs per call; counting bytes, not records,
/// keeps a stream of large records (stack copies) from filling the ring before a wake-up.
/// Set by user space.
#[unsafe(no_mangle)]
pub static WAKEUP_EVERY: Global<u64> = Global::new(1 << 16);

/// Bytes submitted per CPU since this CPU last woke the reader.
#[map]
pub static SUBMITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Sampling (`--sample-bytes`): the live blocks that were sampled, so that only their frees
/// reach the ring. Sized by user space.
#[map]
pub static SAMPLED: HashMap<u64, u8> = HashMap::with_max_entries(1, 0);

/// Sampling: gaps between samples in bytes, quantiles of an exponential distribution with mean
/// `--sample-bytes`, written by user space. A random entry is the next gap.
#[map]
pub static SAMPLE_GAPS: Array<u64> = Array::with_max_entries(INTERVALS, 0);

/// Sampling: per CPU, bytes left until the next sample. Gaps drawn independently per CPU still
/// sample every byte at the same rate, and a per-CPU slot needs no lock.
#[map]
pub static COUNTDOWN: PerCpuArray<i64> = PerCpuArray::with_max_entries(1, 0);

/// Non-zero: sample allocations byte-weighted instead of recording all.
#[unsafe(no_mangle)]
pub static SAMPLING: Global<u32> = Global::new(0);

/// How allocations' stacks are taken: a [`muppy_common::StackMode`].
#[unsafe(no_mangle)]
pub static STACK_MODE: Global<u32> = Global::new(1);

/// Pages of user stack a stack copy carries: 2, 3, 5 or 9.
#[unsafe(no_mangle)]
pub static STACK_PAGES: Global<u32> = Global::new(3);

/// muppy-trace's own process: probes placed on every process (`--all`) must not record the
/// tracer's allocations, which reading events makes.
#[unsafe(no_mangle)]
pub static TRACER_TGID: Global<u32> = Global::new(0);

/// Non-zero: stamp events with the kernel's tick count, which the JIT reads inline, instead
/// of the nanosecond clock, a helper call (≈30 ns); user space converts ticks to ns.
#[unsafe(no_mangle)]
pub static TICKS: Global<u32> = Global::new(0);

/// The target's page size, for pvalloc.
#[unsafe(no_mangle)]
pub static PAGE_SIZE: Global<u64> = Global::new(4096);

/// Why a free's caller is read ([`muppy_common::FreeEvent::caller`]): user space tells the
/// program's frees of blocks it does not hold (allocated before tracing, inherited at fork)
/// from glibc's, which frees its per-thread caches (blocks allocated with no call to malloc)
/// as a thread ends. [`muppy_common::FREE_CALLERS_TEARDOWNS`] counts the threads in teardown
/// now, so that only their frees, and other threads' frees meanwhile, pay for the read;
/// [`muppy_common::FREE_CALLERS_ALWAYS`] is set by user space where no teardown can be seen.
#[map]
pub static FREE_CALLERS: Array<u64> = Array::with_max_entries(2, 0);

/// Threads that began their teardown (glibc's `__call_tls_dtors`) and have not exited yet.
#[map]
pub static TEARDOWN_TIDS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// Processes followed through probes shared by every process (the children of the traced
/// command): placing probes per process costs the kernel ≈0.1 s each, too much at every fork.
/// Maintained by user space while each child is stopped at its fork and its exit.
#[map]
pub static FOLLOWED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Processes whose own memory mappings are traced (their tgids). Maintained by user space as
/// processes are followed and end.
#[map]
pub static MAP_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Non-zero: trace the memory mappings of every process (`--all`).
#[unsafe(no_mangle)]
pub static MAP_ALL: Global<u32> = Global::new(0);

/// Memory-mapping calls between entry and return, by pid_tgid.
#[map]
pub static MAP_CALLS: HashMap<u64, MapCall> = HashMap::with_max_entries(16384, 0);

/// The process whose threads `exit_hold` stops as they enter `_exit` (its tgid), 0 for none:
/// written by user space while the session runs (a global could only be set at load), and
/// cleared as it ends, so that a command that outlives the session is never stopped with no
/// tracer to let it go.
#[map]
pub static EXIT_HOLD: Array<u32> = Array::with_max_entries(1, 0);

/// System-wide: per process (tgid), the [`muppy_common::mapping_sum`] of the executable file
/// mappings user space read in its `/proc/PID/maps`, and the image (its [`EXECS`] count) it
/// read them for. At its exit, a process whose memory map sums otherwise, or whose entry is
/// another image's (or that has none: user space never read it) sends its mappings
/// (`exit_maps`). Written by user space; an exec removes the entry (a new program).
#[map]
pub static MAPS_SEEN: HashMap<u32, MapsSeen> = HashMap::with_max_entries(65536, 0);

/// System-wide with a selection (`--comm`, `--cgroup`): per process (tgid) that user space
/// refused, which of its programs it refused: the count of its execs seen before it (as
/// [`EXECS`] counts them). Its allocator events and exit mappings stay here while it runs that
/// program; after another exec they go to user space, which judges the new program. Counted,
/// not a flag, so that a refusal user space writes late (after a newer exec) leaves the new
/// program's events alone. Removed at its exit (its pid may be reused). Written by user space.
#[map]
pub static REFUSED: HashMap<u32, u64> = HashMap::with_max_entries(65536, 0);

/// System-wide: per process (tgid), the execs seen since tracing began (no entry: none), in
/// step with the exec events user space reads: which program a refusal is of, and which image
/// a [`MAPS_SEEN`] entry must be of. Removed at its exit.
#[map]
pub static EXECS: HashMap<u32, u64> = HashMap::with_max_entries(65536, 0);

/// Non-zero: system-wide with a selection; the probes look processes up in [`REFUSED`].
#[unsafe(no_mangle)]
pub static SELECTING: Global<u32> = Global::new(0);

/// Until when (`bpf_ktime_get_ns`) a return without its entry is counted as a call under way
/// as probes were placed ([`muppy_common::Drop::UnderWayAtAttach`]): user space sets it to
/// the end of time while it places probes and to [`muppy_common::ATTACH_GRACE_NS`] after
/// once they are placed.
#[map]
pub static ATTACH_UNTIL: Array<u64> = Array::with_max_entries(1, 0);

/// Where the kernel's structures keep what `exit_maps` reads, from the kernel's BTF.
#[unsafe(no_mangle)]
pub static KERNEL_LAYOUT: Global<KernelLayout> = Global::new(KernelLayout {
    ok: 0,
    vma_start: 0,
    vma_end: 0,
    vma_flags: 0,
    vma_pgoff: 0,
    vma_file: 0,
    file_mnt: 0,
    file_dentry: 0,
    file_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    dentry_parent: 0,
    dentry_name: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    vfsmount_root: 0,
});
