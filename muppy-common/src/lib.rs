//! The types that cross the kernel/user boundary: one definition of each, shared by `muppy-ebpf`
//! (which writes them) and `muppy-user` (which reads them).
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of padding, so that the bytes the probe
//! reserves in the ring buffer are exactly the bytes user space decodes.
#![no_std]
#![deny(missing_docs)]

pub mod names;

/// Entries in the [`names::map::SAMPLE_GAPS`] map: quantiles of the exponential distribution,
/// so that a random index gives an exponentially distributed gap between samples.
pub const INTERVALS: u32 = 4096;

/// [`Event::flags`] bit: stacks were on, but this allocation's stack could not be sent (the
/// ring had no room for the larger record); the event itself, with its exact site, was sent
/// alone. Counted as [`Drop::StackLost`].
pub const STACK_LOST: u32 = 2;
/// [`Event::flags`] bit: the record goes on with [`Event::stack`] return addresses (`u64`) of
/// the kernel's frame-pointer walk, the caller's own first.
pub const STACK_FRAMES: u32 = 4;
/// [`Event::flags`] bit: the record goes on with a [`StackCopy`], then the pages the copy
/// spans, from the page that holds [`StackCopy::sp`] up: the copy is the bytes from `sp` for
/// one page less than the record has, or up to the end of the first [`Event::stack`] pages
/// if fewer could be read (the top of the thread's stack).
pub const STACK_COPY: u32 = 8;
/// [`Event::flags`] bit with [`STACK_FRAMES`]: the walk filled the record's
/// [`MAX_FP_FRAMES`], so the stack may go on above.
pub const STACK_FULL: u32 = 16;

/// Return addresses a frame-pointer stack carries at most: the kernel's default
/// `perf_event_max_stack`.
pub const MAX_FP_FRAMES: usize = 127;
/// The size of the pages a [`StackCopy`] is read in: copies start at the page that holds the
/// stack pointer so that every read is a whole page at a fixed offset (the verifier proves
/// those in bounds), and a read past the top of a thread's stack mapping fails on a page
/// boundary, losing nothing below it.
pub const STACK_PAGE: usize = 4096;

/// What follows an [`Event`] flagged [`STACK_COPY`]: the registers the unwinder starts from
/// (the instruction pointer is [`Event::caller`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCopy {
    /// The caller's stack pointer at the allocator's return.
    pub sp: u64,
    /// The caller's frame pointer register (any value where the code keeps none).
    pub bp: u64,
}

/// Size of [`StackCopy`] in bytes, for decoding.
pub const STACK_COPY_SIZE: usize = core::mem::size_of::<StackCopy>();

/// How allocations' stacks are taken (`--unwind`), the probes' `STACK_MODE`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackMode {
    /// No stacks: the exact site alone.
    Off = 0,
    /// The kernel's frame-pointer walk.
    Fp = 1,
    /// A copy of the user stack, unwound in user space with the modules' call frame
    /// information.
    Dwarf = 2,
    /// [`StackMode::Fp`] where the caller's code is in [`names::map::FP_CODE`] (modules that
    /// keep frame pointers), else [`StackMode::Dwarf`].
    Auto = 3,
}

/// Code ranges of one process kept in [`names::map::FP_CODE`]: at most this many.
pub const MAX_CODE_RANGES: usize = 32;

/// A process's executable mappings of modules that keep frame pointers, `[start, end)`: with
/// [`StackMode::Auto`], an allocation whose caller is in one gets the kernel's frame-pointer
/// walk, any other a [`StackCopy`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeRanges {
    /// Ranges in use.
    pub n: u64,
    /// The ranges.
    pub ranges: [[u64; 2]; MAX_CODE_RANGES],
}

/// The allocator entry points muppy probes.
///
/// The numeric value travels in the low 32 bits of each probe's attach cookie and in
/// [`Event::func`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AllocFn {
    /// `malloc(size)`
    Malloc = 0,
    /// `calloc(n, size)`: `n * size` bytes.
    Calloc = 1,
    /// `realloc(ptr, size)`
    Realloc = 2,
    /// `reallocarray(ptr, n, size)`: `realloc(ptr, n * size)`.
    Reallocarray = 3,
    /// `posix_memalign(&ptr, align, size)`: returns 0 and stores the block on success.
    PosixMemalign = 4,
    /// `aligned_alloc(align, size)`
    AlignedAlloc = 5,
    /// `memalign(align, size)`
    Memalign = 6,
    /// `valloc(size)`
    Valloc = 7,
    /// `pvalloc(size)`: the size rounded up to a whole page.
    Pvalloc = 8,
    /// `free(ptr)`
    Free = 9,
    /// C++ `operator new` and `new[]`, plain, nothrow and aligned: the size is the first
    /// argument in every form.
    New = 10,
    /// C++ `operator delete` and `delete[]`, plain, sized, nothrow and aligned: the block is
    /// the first argument. Unlike `free`, it gets a return probe, so that the `free` it may
    /// call inside is recognised as nested and the block is freed once.
    Delete = 11,
}

impl AllocFn {
    /// Every entry point, in probe order.
    pub const ALL: [AllocFn; 12] = [
        AllocFn::Malloc,
        AllocFn::Calloc,
        AllocFn::Realloc,
        AllocFn::Reallocarray,
        AllocFn::PosixMemalign,
        AllocFn::AlignedAlloc,
        AllocFn::Memalign,
        AllocFn::Valloc,
        AllocFn::Pvalloc,
        AllocFn::Free,
        AllocFn::New,
        AllocFn::Delete,
    ];

    /// Decodes [`Event::func`] or a cookie's low half.
    pub const fn from_u32(v: u32) -> Option<AllocFn> {
        if (v as usize) < Self::ALL.len() {
            // SAFETY: the discriminants are exactly 0..ALL.len() (asserted below). No table
            // lookup: the BPF verifier loses the index's bound between check and load.
            Some(unsafe { core::mem::transmute::<u32, AllocFn>(v) })
        } else {
            None
        }
    }

    /// The C symbol name, or the C++ operator's name.
    pub const fn symbol(self) -> &'static str {
        match self {
            AllocFn::Malloc => "malloc",
            AllocFn::Calloc => "calloc",
            AllocFn::Realloc => "realloc",
            AllocFn::Reallocarray => "reallocarray",
            AllocFn::PosixMemalign => "posix_memalign",
            AllocFn::AlignedAlloc => "aligned_alloc",
            AllocFn::Memalign => "memalign",
            AllocFn::Valloc => "valloc",
            AllocFn::Pvalloc => "pvalloc",
            AllocFn::Free => "free",
            AllocFn::New => "operator new",
            AllocFn::Delete => "operator delete",
        }
    }
}

/// Defines [`AllocFn::entry_program`] from the one list of entry programs.
macro_rules! entry_program_names {
    ($($program:ident => $func:ident),* $(,)?) => {
        impl AllocFn {
            /// The entry program probing this function on the traced process's own probes
            /// (free has its own program, [`names::program::FREE_ENTER`]; probes shared by
            /// followed children use [`names::program::ALLOC_ENTER_SHARED`] with the function
            /// in the attach cookie).
            pub const fn entry_program(self) -> &'static str {
                match self {
                    $(AllocFn::$func => stringify!($program),)*
                    AllocFn::Free => names::program::FREE_ENTER,
                }
            }
        }
    };
}

crate::entry_programs!(entry_program_names);

/// Packs what an entry probe needs to know about its attach point into the 64-bit cookie:
/// the function (low 32 bits) and how many bytes above the stack pointer the caller's return
/// address sits at the probed instruction (bits 32..40; 0 at the function's first instruction,
/// 8 after one `push`).
pub const fn cookie(func: AllocFn, ret_addr_sp_offset: u8) -> u64 {
    (func as u64) | ((ret_addr_sp_offset as u64) << 32)
}

/// Inverse of [`cookie`]: `(function number, return-address offset above sp)`.
pub const fn decode_cookie(cookie: u64) -> (u32, u64) {
    ((cookie & 0xffff_ffff) as u32, (cookie >> 32) & 0xff)
}

/// What an [`Event`] records.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A new block at `addr` of `size` bytes.
    Alloc = 1,
    /// The block at `addr` was freed.
    Free = 2,
    /// The block at `old_addr` was replaced by the block at `addr` of `size` bytes (possibly the
    /// same address, when the block grew or shrank in place).
    Realloc = 3,
    /// The program mapped anonymous memory itself (not inside an allocator call): a
    /// [`MapEvent`] for `len` bytes at `addr`.
    Mmap = 6,
    /// The program unmapped `len` bytes at `addr` (a [`MapEvent`]).
    Munmap = 7,
    /// The program moved or resized the mapping at `old_addr` (`old_len` bytes) to `addr`
    /// (`len` bytes) (a [`MapEvent`]).
    Mremap = 8,
    /// System-wide tracing: process `pid` exec'd a new program (a [`ProcEvent`]).
    Exec = 4,
    /// System-wide tracing: process `pid` exited (a [`ProcEvent`]).
    Exit = 5,
}

impl EventKind {
    /// Decodes [`Event::kind`].
    pub const fn from_u32(v: u32) -> Option<EventKind> {
        match v {
            1 => Some(EventKind::Alloc),
            2 => Some(EventKind::Free),
            3 => Some(EventKind::Realloc),
            4 => Some(EventKind::Exec),
            5 => Some(EventKind::Exit),
            6 => Some(EventKind::Mmap),
            7 => Some(EventKind::Munmap),
            8 => Some(EventKind::Mremap),
            _ => None,
        }
    }
}

/// One allocator call that changed the heap, as the probes saw it.
///
/// Calls that changed nothing (a failed allocation, `free(NULL)`, calls nested inside another
/// probed call) produce no event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// An [`EventKind`].
    pub kind: u32,
    /// The outermost [`AllocFn`] the program called.
    pub func: u32,
    /// Process id (thread-group id).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The new block (alloc, realloc) or the freed block (free).
    pub addr: u64,
    /// For realloc: the block passed in. Otherwise 0.
    pub old_addr: u64,
    /// Bytes the program asked for (calloc: n×size; pvalloc: rounded to a page).
    pub size: u64,
    /// The return address into the code that called the allocator: the allocation *site*.
    pub caller: u64,
    /// Zero: keeps the record at the 72 bytes the reader tells it by.
    pub reserved: u64,
    /// Allocations (and mappings): when the call returned, in `CLOCK_MONOTONIC` ns once
    /// decoded. The probes write the kernel's tick count instead where user space asked for
    /// it (`TICKS` in muppy-ebpf; the ring reader converts). 0 for frees.
    pub ts_ns: u64,
    /// Allocations: with [`STACK_FRAMES`], the return addresses that follow; with
    /// [`STACK_COPY`], the pages of stack that follow. Otherwise 0.
    pub stack: u32,
    /// [`STACK_LOST`], [`STACK_FRAMES`], [`STACK_COPY`], [`STACK_FULL`].
    pub flags: u32,
}

/// Size of [`Event`] in bytes, for decoding.
pub const EVENT_SIZE: usize = core::mem::size_of::<Event>();

/// A free as the `free` probe sends it: a third of an [`Event`]'s size, since half of all
/// events are frees and the ring's bandwidth is what the probes pay for. Told apart from the
/// other records by its length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FreeEvent {
    /// [`EventKind::Free`].
    pub kind: u32,
    /// Process id (thread-group id).
    pub pid: u32,
    /// The freed block.
    pub addr: u64,
    /// The return address into the code that called `free`, or 0 where the probe did not
    /// read it: reading the caller's stack costs as much as the rest of the probe, and the
    /// caller only matters for a free of a block the table does not hold, which outside
    /// thread teardown only the program makes (see [`names::map::FREE_CALLERS`]).
    pub caller: u64,
}

/// [`names::map::FREE_CALLERS`] index: threads in teardown. The map holds two counters that
/// decide whether the free probe reads its caller: this one, threads now between the start of
/// their teardown (glibc's `__call_tls_dtors`, after which glibc frees its per-thread caches:
/// blocks no probe saw allocated) and their exit; and [`FREE_CALLERS_ALWAYS`], non-zero when a
/// probed allocator has no such marker, so that every free reads its caller.
pub const FREE_CALLERS_TEARDOWNS: u32 = 0;
/// [`names::map::FREE_CALLERS`] index: read the caller of every free.
pub const FREE_CALLERS_ALWAYS: u32 = 1;

/// A process exec'd or exited ([`EventKind::Exec`], [`EventKind::Exit`]), with its command
/// name then: the process may be gone before user space can ask `/proc`. The same size as a
/// [`FreeEvent`], told apart by `kind`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    /// [`EventKind::Exec`] or [`EventKind::Exit`].
    pub kind: u32,
    /// Process id.
    pub pid: u32,
    /// `comm`, NUL-padded.
    pub comm: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<ProcEvent>() == core::mem::size_of::<FreeEvent>());

/// A memory-mapping system call the program made directly ([`EventKind::Mmap`],
/// [`EventKind::Munmap`], [`EventKind::Mremap`]), seen at the system call tracepoints. Told
/// apart from the other records by its length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapEvent {
    /// The [`EventKind`].
    pub kind: u32,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Zero; keeps the layout free of implicit padding.
    pub reserved: u32,
    /// The mapping (new mapping, for mremap).
    pub addr: u64,
    /// Its length in bytes, as asked.
    pub len: u64,
    /// mremap: the mapping moved or resized.
    pub old_addr: u64,
    /// mremap: its length before.
    pub old_len: u64,
    /// mmap: the return address into the code that called the `mmap` wrapper.
    pub caller: u64,
    /// When the call returned, as [`Event::ts_ns`].
    pub ts_ns: u64,
}

/// Size of [`MapEvent`] in bytes, for decoding.
pub const MAP_EVENT_SIZE: usize = core::mem::size_of::<MapEvent>();

/// A memory-mapping call between its entry and its return, per thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapCall {
    /// The system call number.
    pub nr: u64,
    /// Its first three arguments.
    pub args: [u64; 3],
    /// The return address into the caller of the wrapper.
    pub caller: u64,
}

/// Size of [`FreeEvent`] in bytes, for decoding.
pub const FREE_EVENT_SIZE: usize = core::mem::size_of::<FreeEvent>();

/// Path components an [`ExitMapping`] carries at most, the file's first.
pub const EXIT_MAP_DEPTH: usize = 20;
/// Bytes of each path component an [`ExitMapping`] carries, NUL included: a longer name is cut,
/// and the path it makes then names no file with the mapping's device and inode.
pub const EXIT_MAP_NAME: usize = 64;
/// [`ExitMapping::depth`] bit: the walk up the directories stopped before the root (too deep,
/// or unreadable), so the names do not make a whole path.
pub const EXIT_MAP_CUT: u32 = 1 << 31;

/// System-wide tracing: an executable file mapping of a process that is exiting, sent at its
/// exit (while its memory map is still there) when user space has not seen it in the process's
/// `/proc/PID/maps`: a process that lives a few milliseconds is gone before user space can
/// read its maps, and its sites could not be named otherwise. Told apart from the other
/// records by its length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitMapping {
    /// The process.
    pub pid: u32,
    /// The file's device as the kernel numbers it (`MAJOR << 20 | MINOR`).
    pub dev: u32,
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// The file offset `start` maps.
    pub offset: u64,
    /// The file's inode.
    pub ino: u64,
    /// Path components filled in [`ExitMapping::names`], with [`EXIT_MAP_CUT`] if they do not
    /// reach the root.
    pub depth: u32,
    /// Zero; keeps the layout free of implicit padding.
    pub reserved: u32,
    /// The path's components, NUL-terminated, from the file's own name up, as seen from the
    /// root of the process's mount namespace.
    pub names: [[u8; EXIT_MAP_NAME]; EXIT_MAP_DEPTH],
}

/// Size of [`ExitMapping`] in bytes, for decoding: larger than any [`Event`] with frames, and
/// smaller than any with a stack copy, so that no other record has its length.
pub const EXIT_MAPPING_SIZE: usize = core::mem::size_of::<ExitMapping>();

const _: () = assert!(EXIT_MAPPING_SIZE > EVENT_SIZE + 8 * MAX_FP_FRAMES);
const _: () = assert!(EXIT_MAPPING_SIZE < EVENT_SIZE + STACK_COPY_SIZE + STACK_PAGE);

/// What [`ExitMapping`]s are compared by: a process's executable file mappings summed into
/// one word, by user space from the `/proc/PID/maps` it read and by the probes from the
/// memory map at exit. Equal sums: the process mapped no code user space has not seen, and
/// nothing is sent.
pub const fn mapping_sum(sum: u64, start: u64, end: u64, offset: u64) -> u64 {
    sum.wrapping_add(start ^ end.rotate_left(17) ^ offset.rotate_left(41))
}

/// What user space read of a process's executable file mappings ([`names::map::MAPS_SEEN`]),
/// and for which of its pid's images: a text read for one image may be the next one's (the
/// pid exec'd before user space applied its exec event), and user space then holds those
/// mappings for the image that did not map them. The probes count only an entry of the image
/// that is exiting.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapsSeen {
    /// The [`mapping_sum`] of the mappings read.
    pub sum: u64,
    /// The image they were read for: the execs of the pid before it since tracing began (as
    /// [`names::map::EXECS`] counts them).
    pub image: u64,
}

/// Where the probes find what they read of the kernel's structures to make an
/// [`ExitMapping`]: byte offsets of fields, read by user space from the kernel's BTF before
/// load (the probes have no CO-RE relocations). `ok` is 0 where they could not be found, and
/// the probes send none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// Non-zero: the offsets below are the running kernel's.
    pub ok: u64,
    /// `vm_area_struct.vm_start`.
    pub vma_start: u64,
    /// `vm_area_struct.vm_end`.
    pub vma_end: u64,
    /// `vm_area_struct.vm_flags`.
    pub vma_flags: u64,
    /// `vm_area_struct.vm_pgoff`.
    pub vma_pgoff: u64,
    /// `vm_area_struct.vm_file`.
    pub vma_file: u64,
    /// `file.f_path.mnt`.
    pub file_mnt: u64,
    /// `file.f_path.dentry`.
    pub file_dentry: u64,
    /// `file.f_inode`.
    pub file_inode: u64,
    /// `inode.i_ino`.
    pub inode_ino: u64,
    /// `inode.i_sb`.
    pub inode_sb: u64,
    /// `super_block.s_dev`.
    pub sb_dev: u64,
    /// `dentry.d_parent`.
    pub dentry_parent: u64,
    /// `dentry.d_name.name`.
    pub dentry_name: u64,
    /// `mount.mnt`: the `vfsmount` a file's path points to, inside its `mount`.
    pub mount_mnt: u64,
    /// `mount.mnt_parent`.
    pub mount_parent: u64,
    /// `mount.mnt_mountpoint`.
    pub mount_mountpoint: u64,
    /// `vfsmount.mnt_root`.
    pub vfsmount_root: u64,
}

/// The placeholders the probes call the kernel's VMA iterator through (kfuncs, which aya does
/// not link): helper calls with these numbers, which user space turns into calls of the
/// kfuncs by their BTF ids before load. No helper has numbers this high.
pub mod kfunc {
    /// `bpf_iter_task_vma_new`.
    pub const ITER_NEW: i32 = 0x7fff_f001;
    /// `bpf_iter_task_vma_next`.
    pub const ITER_NEXT: i32 = 0x7fff_f002;
    /// `bpf_iter_task_vma_destroy`.
    pub const ITER_DESTROY: i32 = 0x7fff_f003;
    /// Each placeholder with its kfunc's name.
    pub const ALL: [(i32, &str); 3] = [
        (ITER_NEW, "bpf_iter_task_vma_new"),
        (ITER_NEXT, "bpf_iter_task_vma_next"),
        (ITER_DESTROY, "bpf_iter_task_vma_destroy"),
    ];
}

/// Indices into the per-CPU drop counters: each is an event that could not be delivered.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// The ring buffer was full when an event was reserved.
    RingFull = 0,
    /// The in-flight map was full at an allocator's entry, so its return could not be recorded.
    InflightFull = 1,
    /// An allocator returned without its entry having been recorded: an allocation missed.
    /// Calls under way as probes were placed are counted apart ([`Drop::UnderWayAtAttach`]).
    ReturnWithoutEntry = 2,
    /// An allocator call was entered and its return never seen (its record went stale): an
    /// allocation missed.
    EntryWithoutReturn = 3,
    /// An allocation was recorded without its stack: the ring had no room for the record
    /// with the stack. The allocation itself and its site are exact; only its call path is
    /// missing.
    StackLost = 4,
    /// Sampling: a sampled block could not be remembered (the sampled set was full), so it was
    /// not recorded either: an allocation missed.
    SampledFull = 5,
    /// An allocator returned without its entry while probes were being placed (or within
    /// [`ATTACH_GRACE_NS`] after): a call that began before its entry was probed. Its block
    /// belongs with what the process allocated before tracing began, which no table holds
    /// (such a process is traced from mid-run), so it is not a lost event.
    UnderWayAtAttach = 6,
}

impl Drop {
    /// Every reason, by index.
    pub const ALL: [Drop; DROP_KINDS as usize] = [
        Drop::RingFull,
        Drop::InflightFull,
        Drop::ReturnWithoutEntry,
        Drop::EntryWithoutReturn,
        Drop::StackLost,
        Drop::SampledFull,
        Drop::UnderWayAtAttach,
    ];

    /// What happened, and what to do about it, for a warning.
    pub const fn describe(self) -> &'static str {
        match self {
            Drop::RingFull => "the ring was full (try a larger --ring-mb)",
            Drop::InflightFull => "too many threads were inside allocator calls at once",
            Drop::ReturnWithoutEntry => "a return without its entry",
            Drop::EntryWithoutReturn => "an entry whose return was never seen",
            Drop::StackLost => "the ring had no room for the stack (try a larger --ring-mb)",
            Drop::SampledFull => "the set of sampled blocks was full",
            Drop::UnderWayAtAttach => "a call under way as its probes were placed",
        }
    }

    /// Whether a drop is an event missing from a table that claims it. A lost stack leaves
    /// the block recorded, and a call under way at attach belongs before tracing began.
    pub const fn is_lost_event(self) -> bool {
        !matches!(self, Drop::StackLost | Drop::UnderWayAtAttach)
    }
}

/// Number of [`Drop`] counters.
pub const DROP_KINDS: u32 = 7;

/// How long after probes are placed a return without its entry still counts as a call that
/// was under way ([`Drop::UnderWayAtAttach`]): an allocator call lasts microseconds, but its
/// thread may wait that long for a CPU on a loaded machine. A call that outlasts it is
/// counted as lost, which over-reports and never hides a loss.
pub const ATTACH_GRACE_NS: u64 = 500_000_000;

/// [`InFlight::func`] of a thread that is in no allocator call: the record stays in the map
/// (rewriting it in place is cheaper than deleting and inserting it on every call).
pub const INFLIGHT_IDLE: u32 = u32::MAX;

/// State kept between an allocator's entry and its return, per thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InFlight {
    /// The [`AllocFn`] entered, or [`INFLIGHT_IDLE`].
    pub func: u32,
    /// Probed allocator calls currently nested inside this one (their returns are ignored).
    pub nested: u32,
    /// Sampling: non-zero if this call's new block is sampled.
    pub sampled: u32,
    /// Probed calls that entered inside this one so far: more than any allocator makes means
    /// the record is stale.
    pub nested_calls: u32,
    /// In a per-thread slot: the thread id of the slot's last user, with the top bit set while
    /// that thread is inside a call (the slot is claimed). 0 in the fallback map.
    pub owner: u64,
    /// Requested size.
    pub size: u64,
    /// realloc/reallocarray: the old block; posix_memalign: where the block will be stored.
    pub ptr_arg: u64,
    /// Stack pointer at entry; a deeper (lower) sp at a later entry means a nested call.
    pub sp: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both types are #[repr(C)], Copy, contain only integers and have no padding
    // (checked by the size assertions below).
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::InFlight {}
    unsafe impl aya::Pod for super::FreeEvent {}
    unsafe impl aya::Pod for super::ProcEvent {}
    unsafe impl aya::Pod for super::MapEvent {}
    unsafe impl aya::Pod for super::MapCall {}
    unsafe impl aya::Pod for super::CodeRanges {}
    unsafe impl aya::Pod for super::ExitMapping {}
    unsafe impl aya::Pod for super::KernelLayout {}
    unsafe impl aya::Pod for super::MapsSeen {}
}

const _: () = {
    let mut i = 0;
    while i < AllocFn::ALL.len() {
        assert!(AllocFn::ALL[i] as usize == i);
        i += 1;
    }
};
const _: () = assert!(core::mem::size_of::<Event>() == 6 * 4 + 6 * 8);
const _: () = assert!(core::mem::size_of::<FreeEvent>() == 2 * 4 + 2 * 8);
const _: () = assert!(core::mem::size_of::<InFlight>() == 4 * 4 + 4 * 8);
const _: () = assert!(core::mem::size_of::<MapEvent>() == 4 * 4 + 6 * 8);
const _: () = assert!(core::mem::size_of::<CodeRanges>() == 8 + MAX_CODE_RANGES * 16);
const _: () = assert!(EXIT_MAPPING_SIZE == 48 + EXIT_MAP_DEPTH * EXIT_MAP_NAME);
