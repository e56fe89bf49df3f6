//! Uprobes on the target's allocator entry points.
//!
//! `alloc_enter`/`alloc_exit` bracket every allocating function (and C++ operator delete, which
//! may reach `free` inside) and `free_enter` sees frees.
//! Each heap change becomes one [`Event`] in the `EVENTS` ring buffer. Calls that libc makes to
//! probed functions from inside another probed call (realloc(NULL, n) reaching malloc,
//! realloc(p, 0) reaching free, reallocarray reaching realloc) are recognised by their deeper
//! (or, for a tail call, equal) stack pointer and ignored: the outermost call alone accounts for
//! the heap change, so every allocation counts exactly once.
//!
//! Reading the target's memory is the dearest thing a probe can do here (≈60 ns a read, as
//! much as the rest of a probe), so the hot path reads none: the allocation's caller comes
//! from the return probe's registers, and a free's caller is read only while it can matter
//! ([`FREE_CALLERS`]).
#![no_std]
#![no_main]
// The target has atomic loads and stores but no compare-and-swap in Rust's eyes; the kernel's
// BPF has it (BPF_ATOMIC | BPF_CMPXCHG, 5.12+), reached through inline assembly.
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_ANY, BPF_F_USER_STACK, BPF_NOEXIST, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_prandom_u32,
        bpf_jiffies64, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext, tracing::StackIdContext},
};
use muppy_common::{
    AllocFn, DROP_KINDS, Drop, Event, EventKind, FREE_CALLERS_ALWAYS, FREE_CALLERS_TEARDOWNS,
    FreeEvent, INFLIGHT_IDLE, INTERVALS, InFlight, MapCall, MapEvent, NO_STACK, ProcEvent,
    STACK_HAS_CALLER, STACK_LOST, decode_cookie,
};

/// Sized by user space (`--ring-mb`) before load.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Allocator calls between entry and return, one slot per thread id modulo the slot count
/// (a power of two set by user space): an array lookup is an indexed load, a hash lookup
/// costs more than the rest of a probe's work. A thread claims its slot for the length of a
/// call with a compare-and-swap on [`InFlight::owner`]; a thread that finds its slot taken
/// by another thread's call keeps its record in [`INFLIGHT`] instead.
#[map(name = "SLOTS")]
static SLOTS: Array<InFlight> = Array::with_max_entries(1, 0);

/// `SLOTS` entries - 1.
#[unsafe(no_mangle)]
static SLOT_MASK: Global<u32> = Global::new(0);

/// The fallback for calls whose slot was taken, keyed by pid_tgid, marked idle between calls
/// and rewritten in place. Least-recently-used records (threads long gone) make room for new
/// threads. Sized by user space.
#[map(name = "INFLIGHT")]
static INFLIGHT: LruHashMap<u64, InFlight> = LruHashMap::with_max_entries(16384, 0);

/// Calls in flight in `INFLIGHT`: while 0, no thread needs to look there.
#[map(name = "FALLBACKS")]
static FALLBACKS: Array<u64> = Array::with_max_entries(1, 0);

/// [`InFlight::owner`] bit: the owning thread is inside a call.
const BUSY: u64 = 1 << 63;

/// User stacks of allocations. Sized by user space.
#[map(name = "STACKS")]
static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// Events that could not be delivered, per [`Drop`] reason.
#[map(name = "DROPS")]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_KINDS, 0);

/// Every this many submits on one CPU, a submit wakes the reader; between them the reader
/// polls. Waking on every event costs ≈1.5 µs per call. Set by user space.
#[unsafe(no_mangle)]
static WAKEUP_EVERY: Global<u64> = Global::new(1024);

/// Submits per CPU since this CPU last woke the reader.
#[map(name = "SUBMITS")]
static SUBMITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Sampling (`--sample-bytes`): the live blocks that were sampled, so that only their frees
/// reach the ring. Sized by user space.
#[map(name = "SAMPLED")]
static SAMPLED: HashMap<u64, u8> = HashMap::with_max_entries(1, 0);

/// Sampling: gaps between samples in bytes, quantiles of an exponential distribution with mean
/// `--sample-bytes`, written by user space. A random entry is the next gap.
#[map(name = "INTERVALS")]
static INTERVALS_BYTES: Array<u64> = Array::with_max_entries(INTERVALS, 0);

/// Sampling: per CPU, bytes left until the next sample. Gaps drawn independently per CPU still
/// sample every byte at the same rate, and a per-CPU slot needs no lock.
#[map(name = "COUNTDOWN")]
static COUNTDOWN: PerCpuArray<i64> = PerCpuArray::with_max_entries(1, 0);

/// Non-zero: sample allocations byte-weighted instead of recording all.
#[unsafe(no_mangle)]
static SAMPLING: Global<u32> = Global::new(0);

/// Non-zero: record a user stack with every allocation.
#[unsafe(no_mangle)]
static WANT_STACKS: Global<u32> = Global::new(1);

/// muppy-trace's own process: probes placed on every process (`--all`) must not record the
/// tracer's allocations, which reading events makes.
#[unsafe(no_mangle)]
static TRACER_TGID: Global<u32> = Global::new(0);

#[inline(always)]
fn is_tracer(id: u64) -> bool {
    (id >> 32) as u32 == TRACER_TGID.load()
}

/// Non-zero: stamp events with the kernel's tick count, which the JIT reads inline, instead
/// of the nanosecond clock, a helper call (≈30 ns); user space converts ticks to ns.
#[unsafe(no_mangle)]
static TICKS: Global<u32> = Global::new(0);

/// When an event happened: ticks or ns, see [`TICKS`].
#[inline(always)]
fn timestamp() -> u64 {
    // SAFETY: plain helper calls.
    unsafe {
        if TICKS.load() != 0 {
            bpf_jiffies64()
        } else {
            bpf_ktime_get_ns()
        }
    }
}

/// The target's page size, for pvalloc.
#[unsafe(no_mangle)]
static PAGE_SIZE: Global<u64> = Global::new(4096);

#[inline(always)]
fn count_drop(reason: Drop) {
    count_drops(reason, 1);
}

#[inline(always)]
fn count_drops(reason: Drop, n: u64) {
    if let Some(slot) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot; eBPF programs do not preempt each other on one CPU.
        unsafe { *slot += n };
    }
}

/// Whether this submit wakes the reader: every `WAKEUP_EVERY`th event on this CPU does (a
/// per-CPU count costs less than asking the ring how full it is, which reads a position the
/// reader writes). Between wake-ups the reader polls.
#[inline(always)]
fn wakeup_flag() -> u32 {
    let Some(n) = SUBMITS.get_ptr_mut(0) else {
        return BPF_RB_FORCE_WAKEUP;
    };
    // SAFETY: this CPU's slot; programs do not preempt each other on one CPU.
    let n = unsafe { &mut *n };
    *n += 1;
    if *n >= WAKEUP_EVERY.load() {
        *n = 0;
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Sends one event. By value, so that its fields can be stored straight into the ring.
#[inline(always)]
fn emit<T: 'static>(ev: T) {
    send(ev, false);
}

/// Sends one event, waking the reader at once if `wake`, else when [`wakeup_flag`] says.
#[inline(always)]
fn send<T: 'static>(ev: T, wake: bool) {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count_drop(Drop::RingFull);
        return;
    };
    entry.write(ev);
    let flags = if wake {
        BPF_RB_FORCE_WAKEUP
    } else {
        wakeup_flag()
    };
    entry.submit(flags.into());
}

#[inline(always)]
fn stack_pointer(ctx: &ProbeContext) -> u64 {
    // SAFETY: the kernel hands uprobes a valid pt_regs.
    unsafe { (*ctx.regs).rsp }
}

#[inline(always)]
fn mul_or_max(a: u64, b: u64) -> u64 {
    // An overflowing n*size makes calloc/reallocarray fail; the size is then never recorded.
    // (checked_mul would lower to a 128-bit multiply, which BPF has no instruction for.)
    // LLVM turns the obvious checks back into that multiply; black_box keeps the division.
    let product = a.wrapping_mul(b);
    if a != 0 && core::hint::black_box(product) / a != b {
        u64::MAX
    } else {
        product
    }
}

/// Reads the return address into the caller from the stack at the probed instruction.
#[inline(always)]
fn caller(sp: u64, sp_offset: u64) -> u64 {
    // SAFETY: a read of the target's own stack through the checked helper.
    unsafe { bpf_probe_read_user((sp + sp_offset) as *const u64) }.unwrap_or(0)
}

/// Probed calls one allocator call can make inside itself (glibc's realloc makes two at most;
/// C++ delete one): a record that has seen more is stale.
const MAX_NESTED_CALLS: u32 = 64;

/// Whether a call entering with stack pointer `sp` runs inside the probed call `outer` of the
/// same thread, counting it there if so.
///
/// A deeper (lower) sp is a nested call; an equal one a tail call (glibc's realloc(NULL, n)
/// jumps to malloc, reallocarray to realloc, libstdc++'s sized delete to delete). A higher sp
/// means `outer` returned unseen and its record is stale. Return probes are attached before
/// entry probes, so every entry seen has its return seen: a stale record needs a call left by
/// longjmp or a thread killed inside the allocator. Such a record would take every later call
/// of its thread made from as deep or deeper for a nested one; past [`MAX_NESTED_CALLS`] it is
/// known stale, and the calls it took are counted as lost, never silently.
#[inline(always)]
fn nested_in(outer: &mut InFlight, sp: u64) -> bool {
    if sp > outer.sp {
        return false;
    }
    outer.nested_calls += 1;
    if outer.nested_calls <= MAX_NESTED_CALLS {
        return true;
    }
    // The calls it took before this one (this one goes on as a call of its own).
    count_drops(Drop::EntryWithoutReturn, u64::from(MAX_NESTED_CALLS));
    false
}

/// Why a free's caller is read ([`FreeEvent::caller`]): user space tells the program's frees
/// of blocks it does not hold (allocated before tracing, inherited at fork) from glibc's,
/// which frees its per-thread caches (blocks allocated with no call to malloc) as a thread
/// ends. [`FREE_CALLERS_TEARDOWNS`] counts the threads in teardown now, so that only their
/// frees, and other threads' frees meanwhile, pay for the read; [`FREE_CALLERS_ALWAYS`] is set
/// by user space where no teardown can be seen.
#[map(name = "FREE_CALLERS")]
static FREE_CALLERS: Array<u64> = Array::with_max_entries(2, 0);

/// Threads that began their teardown (glibc's `__call_tls_dtors`) and have not exited yet.
#[map(name = "TEARDOWN_TIDS")]
static TEARDOWN_TIDS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

#[inline(always)]
fn free_callers_wanted() -> bool {
    let read = |i| {
        FREE_CALLERS
            .get_ptr(i)
            // SAFETY: an aligned 8-byte read of a map value.
            .is_some_and(|p| unsafe { core::ptr::read_volatile(p) } != 0)
    };
    read(FREE_CALLERS_TEARDOWNS) || read(FREE_CALLERS_ALWAYS)
}

/// Reads the caller of the free probed at `ctx` if it can matter, else 0.
#[inline(always)]
fn free_caller(ctx: &ProbeContext, sp: u64) -> u64 {
    if !free_callers_wanted() {
        return 0;
    }
    // SAFETY: the context pointer is the probe's own.
    let (_, sp_offset) = decode_cookie(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
    caller(sp, sp_offset)
}

/// Atomically adds `delta` (two's complement for a subtraction) to the counter at `p`.
///
/// # Safety
/// `p` points into a map value.
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, delta: u64) {
    // SAFETY: the caller's pointer; the locked add is atomic.
    unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {d}", p = in(reg) p, d = in(reg) delta) };
}

/// glibc's `__call_tls_dtors`, entered as a thread (or the process, at exit) begins its
/// teardown: from here until the thread exits, frees read their caller.
#[uprobe]
pub fn thread_teardown(_ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if is_tracer(id) {
        return 0;
    }
    // BPF_NOEXIST: a thread counts once, however often it gets here (exit() from a thread).
    if TEARDOWN_TIDS
        .insert(id as u32, 1, BPF_NOEXIST.into())
        .is_ok()
        && let Some(p) = FREE_CALLERS.get_ptr_mut(FREE_CALLERS_TEARDOWNS)
    {
        // SAFETY: a map value.
        unsafe { atomic_add(p, 1) };
    }
    0
}

/// A task exited: if it was in teardown, it no longer is.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn teardown_exit(_ctx: RawTracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    if TEARDOWN_TIDS.remove(tid).is_ok()
        && let Some(p) = FREE_CALLERS.get_ptr_mut(FREE_CALLERS_TEARDOWNS)
    {
        // SAFETY: a map value.
        unsafe { atomic_add(p, u64::MAX) };
    }
    0
}

/// Atomically: if `*word == expected`, `*word = new`. Returns the value seen.
///
/// # Safety
/// `word` points into a map value.
#[inline(always)]
unsafe fn compare_and_swap(word: *mut u64, expected: u64, new: u64) -> u64 {
    let mut seen = expected;
    // SAFETY: the caller's pointer; cmpxchg_64 compares r0 with *word and stores `new` when
    // they match, returning the old value in r0.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({word} + 0, r0, {new})",
            word = in(reg) word,
            new = in(reg) new,
            inout("r0") seen,
        );
    }
    seen
}

/// Atomically adds `delta` (two's complement for a subtraction) to the count of fallbacks.
#[inline(always)]
fn fallbacks_add(delta: u64) {
    if let Some(p) = FALLBACKS.get_ptr_mut(0) {
        // SAFETY: a map value.
        unsafe { atomic_add(p, delta) };
    }
}

fn fallbacks_in_flight() -> bool {
    // SAFETY: an aligned read of a map value (a torn read is impossible for 8 aligned bytes).
    FALLBACKS
        .get_ptr(0)
        .is_some_and(|p| unsafe { core::ptr::read_volatile(p) } > 0)
}

/// The owner word of a slot.
fn owner(rec: *mut InFlight) -> *mut u64 {
    // SAFETY: a field of a map value.
    unsafe { &raw mut (*rec).owner }
}

fn load_owner(rec: *mut InFlight) -> u64 {
    // SAFETY: an aligned 8-byte read of a map value.
    unsafe { core::ptr::read_volatile(owner(rec)) }
}

/// Where a thread's in-flight record is.
#[derive(Clone, Copy)]
enum Record {
    /// Its slot, claimed (owner = tid | BUSY).
    Slot(*mut InFlight),
    /// The fallback map.
    Fallback(*mut InFlight),
}

impl Record {
    fn ptr(self) -> *mut InFlight {
        match self {
            Record::Slot(p) | Record::Fallback(p) => p,
        }
    }
}

fn slot_of(tid: u32) -> Option<*mut InFlight> {
    SLOTS.get_ptr_mut(tid & SLOT_MASK.load())
}

/// The record of the call this thread is inside, if any.
#[inline(always)]
fn in_flight(id: u64) -> Option<Record> {
    let tid = id as u32;
    if let Some(slot) = slot_of(tid)
        && load_owner(slot) == u64::from(tid) | BUSY
    {
        return Some(Record::Slot(slot));
    }
    if fallbacks_in_flight()
        && let Some(rec) = INFLIGHT.get_ptr_mut(id)
        // SAFETY: this thread's own record.
        && unsafe { (*rec).func } != INFLIGHT_IDLE
    {
        return Some(Record::Fallback(rec));
    }
    None
}

/// Ends the call recorded at `rec`: frees its slot, or marks its fallback record idle.
#[inline(always)]
fn end_call(rec: Record, tid: u32) {
    match rec {
        // SAFETY: this thread's claimed slot; an aligned 8-byte store is atomic.
        Record::Slot(p) => unsafe { core::ptr::write_volatile(owner(p), u64::from(tid)) },
        Record::Fallback(p) => {
            // SAFETY: this thread's own record.
            unsafe { (*p).func = INFLIGHT_IDLE };
            fallbacks_add(u64::MAX);
        }
    }
}

/// Stores the record of a new outermost call: in this thread's slot if no other thread's call
/// holds it, else in the fallback map.
#[inline(always)]
fn begin_call(id: u64, mut rec: InFlight) {
    let tid = id as u32;
    let mine = u64::from(tid) | BUSY;
    rec.owner = mine;
    if let Some(slot) = slot_of(tid) {
        let seen = load_owner(slot);
        // SAFETY: the owner word of a map value.
        if seen & BUSY == 0 && unsafe { compare_and_swap(owner(slot), seen, mine) } == seen {
            // SAFETY: claimed: no other thread writes this slot until it is released.
            unsafe { *slot = rec };
            return;
        }
    }
    rec.owner = 0;
    let stored = match INFLIGHT.get_ptr_mut(id) {
        // SAFETY: this thread's own (idle) record.
        Some(p) => {
            unsafe { *p = rec };
            true
        }
        None => INFLIGHT.insert(id, rec, BPF_ANY.into()).is_ok(),
    };
    if stored {
        fallbacks_add(1);
    } else {
        count_drop(Drop::InflightFull);
    }
}

/// One entry program per function, named by [`AllocFn::entry_program`]: the function is a
/// constant in each, where asking the kernel for the attach cookie cost ≈13 ns a call.
macro_rules! entry_programs {
    ($($name:ident => $func:ident),* $(,)?) => {
        $(
            #[uprobe]
            pub fn $name(ctx: ProbeContext) -> u32 {
                on_alloc_enter(&ctx, AllocFn::$func as u32);
                0
            }
        )*
    };
}

entry_programs! {
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

/// Processes followed through probes shared by every process (the children of the traced
/// command): placing probes per process costs the kernel ≈0.1 s each, too much at every fork.
/// Maintained by user space while each child is stopped at its fork and its exit.
#[map(name = "FOLLOWED")]
static FOLLOWED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

#[inline(always)]
fn followed() -> bool {
    FOLLOWED
        .get_ptr((bpf_get_current_pid_tgid() >> 32) as u32)
        .is_some()
}

/// [`alloc_enter`] on probes shared by every process: only for followed ones.
#[uprobe]
pub fn alloc_enter_shared(ctx: ProbeContext) -> u32 {
    if followed() {
        // SAFETY: the context pointer is the probe's own.
        let (func, _) = decode_cookie(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
        on_alloc_enter(&ctx, func);
    }
    0
}

/// [`alloc_exit`] on probes shared by every process: only for followed ones.
#[uretprobe]
pub fn alloc_exit_shared(ctx: RetProbeContext) -> u32 {
    if followed() {
        on_alloc_exit(&ctx);
    }
    0
}

/// [`free_enter`] on probes shared by every process: only for followed ones.
#[uprobe]
pub fn free_enter_shared(ctx: ProbeContext) -> u32 {
    if followed() {
        on_free_enter(&ctx);
    }
    0
}

#[inline(always)]
fn on_alloc_enter(ctx: &ProbeContext, func: u32) {
    let id = bpf_get_current_pid_tgid();
    if is_tracer(id) {
        return;
    }
    let sp = stack_pointer(ctx);
    let current = in_flight(id);
    if let Some(outer) = current {
        // SAFETY: the record belongs to this thread; only this thread's probes write it.
        let outer = unsafe { &mut *outer.ptr() };
        if nested_in(outer, sp) {
            outer.nested += 1;
            return;
        }
        count_drop(Drop::EntryWithoutReturn);
    }
    // A constant in every program but the shared one, where it comes from the cookie.
    let Some(func) = AllocFn::from_u32(func) else {
        return;
    };
    let a0: u64 = ctx.arg(0).unwrap_or(0);
    let a1: u64 = ctx.arg(1).unwrap_or(0);
    let a2: u64 = ctx.arg(2).unwrap_or(0);
    let (size, ptr_arg) = match func {
        AllocFn::Malloc | AllocFn::Valloc | AllocFn::New => (a0, 0),
        AllocFn::Calloc => (mul_or_max(a0, a1), 0),
        AllocFn::Realloc => (a1, a0),
        AllocFn::Reallocarray => (mul_or_max(a1, a2), a0),
        AllocFn::PosixMemalign => (a2, a0),
        AllocFn::AlignedAlloc | AllocFn::Memalign => (a1, 0),
        AllocFn::Pvalloc => {
            let page = PAGE_SIZE.load();
            let pages = a0.div_ceil(page.max(1));
            (mul_or_max(pages, page), 0)
        }
        AllocFn::Delete => {
            // The block is freed here, at the outermost call; the call stays recorded until
            // it returns so that the free it reaches inside is seen as nested.
            if a0 != 0 {
                emit_free(id, a0, free_caller(ctx, sp));
            }
            (0, 0)
        }
        AllocFn::Free => return,
    };
    let sampled = u32::from(func != AllocFn::Delete && (SAMPLING.load() == 0 || take_sample(size)));
    let rec = InFlight {
        func: func as u32,
        nested: 0,
        sampled,
        nested_calls: 0,
        owner: 0,
        size,
        ptr_arg,
        sp,
    };
    match current {
        // A stale record (its call never returned): reuse its place, still claimed.
        Some(stale) => {
            // SAFETY: this thread's own record; the owner word keeps its value.
            let p = stale.ptr();
            let owner_word = load_owner(p);
            unsafe {
                *p = InFlight {
                    owner: owner_word,
                    ..rec
                }
            };
        }
        None => begin_call(id, rec),
    }
}

/// Byte-weighted sampling, as tcmalloc and jemalloc profile heaps: a countdown of bytes, and
/// the allocation that crosses zero is sampled, so a block of `s` bytes is sampled with
/// probability 1 - exp(-s / mean gap).
#[inline(always)]
fn take_sample(size: u64) -> bool {
    let Some(left) = COUNTDOWN.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's slot; programs do not preempt each other on one CPU.
    let left = unsafe { &mut *left };
    *left -= i64::try_from(size).unwrap_or(i64::MAX);
    if *left > 0 {
        return false;
    }
    // SAFETY: plain helper call.
    let pick = unsafe { bpf_get_prandom_u32() } % INTERVALS;
    let gap = INTERVALS_BYTES.get(pick).copied().unwrap_or(1);
    *left = i64::try_from(gap).unwrap_or(i64::MAX);
    true
}

/// Sampling: whether `addr` is a sampled block, forgetting it (it is being freed).
#[inline(always)]
fn forget_sampled(addr: u64) -> bool {
    SAMPLED.remove(addr).is_ok()
}

/// Sampling: remembers a sampled block; false if the set is full (the drop is counted).
#[inline(always)]
fn remember_sampled(addr: u64) -> bool {
    if SAMPLED.insert(addr, 1, BPF_ANY.into()).is_ok() {
        true
    } else {
        count_drop(Drop::SampledFull);
        false
    }
}

#[uretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
    on_alloc_exit(&ctx);
    0
}

#[inline(always)]
fn on_alloc_exit(ctx: &RetProbeContext) {
    let id = bpf_get_current_pid_tgid();
    if is_tracer(id) {
        return;
    }
    let Some(record) = in_flight(id) else {
        count_drop(Drop::ReturnWithoutEntry);
        return;
    };
    // SAFETY: this thread's own record.
    let rec = unsafe { &mut *record.ptr() };
    if rec.nested > 0 {
        rec.nested -= 1;
        return;
    }
    let rec = *rec;
    end_call(record, id as u32);
    let ret: u64 = ctx.ret();
    // The return probe sees the registers at the return address: the allocation site.
    // SAFETY: the kernel hands return probes a valid pt_regs.
    let caller = unsafe { (*ctx.regs).rip };
    let Some(func) = AllocFn::from_u32(rec.func) else {
        return;
    };
    if func == AllocFn::Delete {
        return; // its free was sent at entry
    }
    let mut ev = Event {
        kind: EventKind::Alloc as u32,
        func: rec.func,
        pid: (id >> 32) as u32,
        tid: id as u32,
        addr: ret,
        old_addr: 0,
        size: rec.size,
        caller,
        old_len: 0,
        ts_ns: timestamp(),
        stack: NO_STACK,
        flags: 0,
    };
    match func {
        AllocFn::Realloc | AllocFn::Reallocarray => {
            let old = rec.ptr_arg;
            if ret == 0 {
                if rec.size == 0 && old != 0 {
                    // realloc(p, 0) freed p and returned NULL.
                    ev.kind = EventKind::Free as u32;
                    ev.addr = old;
                    ev.size = 0;
                } else {
                    return; // failed: p is untouched
                }
            } else if old != 0 {
                ev.kind = EventKind::Realloc as u32;
                ev.old_addr = old;
            }
        }
        AllocFn::PosixMemalign => {
            // Returns 0 on success and stores the block through its first argument.
            if ret as u32 != 0 {
                return;
            }
            // SAFETY: checked read of the target's memory.
            let Ok(block) = (unsafe { bpf_probe_read_user(rec.ptr_arg as *const u64) }) else {
                return;
            };
            ev.addr = block;
        }
        _ => {}
    }
    if ev.addr == 0 {
        return;
    }
    if SAMPLING.load() != 0 && !sample_event(&mut ev, rec.sampled != 0) {
        return;
    }
    if ev.kind != EventKind::Free as u32 && WANT_STACKS.load() != 0 {
        (ev.stack, ev.flags) = user_stack(ctx);
    }
    emit(ev);
}

/// Sampling: reduces an allocator's event to what concerns sampled blocks. Returns false if
/// nothing is left to send. The old block of a realloc (or of realloc(p, 0)) counts only if
/// it was sampled; the new block only if this call was.
#[inline(always)]
fn sample_event(ev: &mut Event, new_sampled: bool) -> bool {
    let kind = ev.kind;
    if kind == EventKind::Free as u32 {
        return forget_sampled(ev.addr);
    }
    let old_sampled = kind == EventKind::Realloc as u32 && forget_sampled(ev.old_addr);
    let new_kept = new_sampled && remember_sampled(ev.addr);
    match (old_sampled, new_kept) {
        (true, true) => true,
        (true, false) => {
            ev.kind = EventKind::Free as u32;
            ev.addr = ev.old_addr;
            ev.old_addr = 0;
            ev.size = 0;
            true
        }
        (false, true) => {
            ev.kind = EventKind::Alloc as u32;
            ev.old_addr = 0;
            true
        }
        (false, false) => false,
    }
}

/// The allocation's user stack, taken at the allocator's return: the probe sees the caller's
/// registers with the instruction pointer at the return address, so the frame-pointer walk
/// starts at the caller itself (exact even if the caller keeps no frame pointer) and goes on
/// through its callers.
///
/// The stack map stores one stack per hash bucket and refuses a different stack whose hash
/// lands on a taken bucket. The first try skips the caller frame, which the event carries
/// anyway (sites calling the allocator from one function share the entry); a refused stack is
/// tried again whole, which hashes to another bucket. Only if both are refused is the stack
/// lost, and that is counted, never guessed.
#[inline(always)]
fn user_stack(ctx: &RetProbeContext) -> (u32, u32) {
    let skip_caller = 1;
    if let Ok(id) = ctx.get_stackid(&STACKS, (BPF_F_USER_STACK | skip_caller).into()) {
        return (id as u32, 0);
    }
    if let Ok(id) = ctx.get_stackid(&STACKS, BPF_F_USER_STACK.into()) {
        return (id as u32, STACK_HAS_CALLER);
    }
    count_drop(Drop::StackLost);
    (NO_STACK, STACK_LOST)
}

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    on_free_enter(&ctx);
    0
}

#[inline(always)]
fn on_free_enter(ctx: &ProbeContext) {
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    if ptr == 0 {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    if is_tracer(id) {
        return;
    }
    let sp = stack_pointer(ctx);
    if let Some(record) = in_flight(id) {
        // SAFETY: this thread's own record.
        let outer = unsafe { &mut *record.ptr() };
        if nested_in(outer, sp) {
            return; // e.g. realloc(p, 0) freeing p: accounted at realloc's return
        }
        if sp <= outer.sp {
            // Known stale (see nested_in): its own call is lost too.
            count_drop(Drop::EntryWithoutReturn);
            end_call(record, id as u32);
        }
    }
    emit_free(id, ptr, free_caller(ctx, sp));
}

/// Sends the free of `ptr` (not null), called from `ret`.
#[inline(always)]
fn emit_free(id: u64, ptr: u64, ret: u64) {
    if SAMPLING.load() != 0 && !forget_sampled(ptr) {
        return; // an unsampled block: its allocation was never sent either
    }
    emit(FreeEvent {
        kind: EventKind::Free as u32,
        pid: (id >> 32) as u32,
        addr: ptr,
        caller: ret,
    });
}

/// System-wide tracing (raw tracepoints: no tracefs needed): a process exec'd, so user space reads its new program's name and
/// mappings (and probes its allocator) while it is young. Wakes the reader at once.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn proc_exec(_ctx: RawTracePointContext) -> u32 {
    emit_proc(EventKind::Exec, bpf_get_current_pid_tgid());
    0
}

/// System-wide tracing: a process's main thread exited, so its table can be reported and
/// freed once the events before it are read.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn proc_exit(_ctx: RawTracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if id as u32 == (id >> 32) as u32 {
        emit_proc(EventKind::Exit, id);
    }
    0
}

#[inline(always)]
fn emit_proc(kind: EventKind, id: u64) {
    if is_tracer(id) {
        return;
    }
    let ev = ProcEvent {
        kind: kind as u32,
        pid: (id >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    send(ev, true);
}

/// Processes whose own memory mappings are traced (their tgids). Maintained by user space as
/// processes are followed and end.
#[map(name = "MAP_PIDS")]
static MAP_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Non-zero: trace the memory mappings of every process (`--all`).
#[unsafe(no_mangle)]
static MAP_ALL: Global<u32> = Global::new(0);

/// Memory-mapping calls between entry and return, by pid_tgid.
#[map(name = "MAP_CALLS")]
static MAP_CALLS: HashMap<u64, MapCall> = HashMap::with_max_entries(16384, 0);

const SYS_MMAP: u64 = 9;
const SYS_MUNMAP: u64 = 11;
const SYS_MREMAP: u64 = 25;
const MAP_ANONYMOUS: u64 = 0x20;

/// Offsets in the x86-64 `struct pt_regs` (a fixed ABI) of the registers read here.
const REG_R10: usize = 7 * 8;
const REG_DX: usize = 12 * 8;
const REG_SI: usize = 13 * 8;
const REG_DI: usize = 14 * 8;
const REG_ORIG_AX: usize = 15 * 8;
const REG_SP: usize = 19 * 8;

#[inline(always)]
fn reg(regs: u64, offset: usize) -> u64 {
    // SAFETY: a checked read of the kernel's saved user registers.
    unsafe { bpf_probe_read_kernel((regs + offset as u64) as *const u64) }.unwrap_or(0)
}

/// A system call is entered: records mmap, munmap and mremap made by a traced process itself,
/// not by an allocator inside a probed call (glibc's malloc maps large blocks itself; those are
/// heap blocks already). File mappings are left out: they are not memory the program keeps.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn map_enter(ctx: RawTracePointContext) -> u32 {
    let nr: u64 = ctx.arg(1);
    if nr != SYS_MMAP && nr != SYS_MUNMAP && nr != SYS_MREMAP {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if is_tracer(id) || (MAP_ALL.load() == 0 && MAP_PIDS.get_ptr(tgid).is_none()) {
        return 0;
    }
    if in_flight(id).is_some() {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    let args = [reg(regs, REG_DI), reg(regs, REG_SI), reg(regs, REG_DX)];
    let mut caller = 0;
    if nr == SYS_MMAP {
        if reg(regs, REG_R10) & MAP_ANONYMOUS == 0 {
            return 0;
        }
        // The mmap wrapper is a leaf: the return address into its caller is on top.
        caller = self::caller(reg(regs, REG_SP), 0);
    }
    let _ = MAP_CALLS.insert(id, MapCall { nr, args, caller }, BPF_ANY.into());
    0
}

/// A system call returns: sends the mapping change if it succeeded.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn map_exit(ctx: RawTracePointContext) -> u32 {
    let regs: u64 = ctx.arg(0);
    let nr = reg(regs, REG_ORIG_AX);
    if nr != SYS_MMAP && nr != SYS_MUNMAP && nr != SYS_MREMAP {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let Some(call) = MAP_CALLS.get_ptr(id) else {
        return 0;
    };
    // SAFETY: this thread's own record.
    let call = unsafe { *call };
    let _ = MAP_CALLS.remove(id);
    let ret: i64 = ctx.arg(1);
    if (-4095..0).contains(&ret) {
        return 0; // failed: nothing changed
    }
    let mut ev = MapEvent {
        kind: EventKind::Mmap as u32,
        pid: (id >> 32) as u32,
        tid: id as u32,
        reserved: 0,
        addr: ret as u64,
        len: call.args[1],
        old_addr: 0,
        old_len: 0,
        caller: call.caller,
        ts_ns: timestamp(),
    };
    if call.nr == SYS_MUNMAP {
        ev.kind = EventKind::Munmap as u32;
        ev.addr = call.args[0];
    } else if call.nr == SYS_MREMAP {
        ev.kind = EventKind::Mremap as u32;
        ev.old_addr = call.args[0];
        ev.old_len = call.args[1];
        ev.len = call.args[2];
    }
    emit(ev);
    0
}

/// Does nothing: attached in place of the real programs, it measures what the traps alone cost
/// (the benchmark's floor).
#[uprobe]
pub fn noop_enter(_ctx: ProbeContext) -> u32 {
    0
}

/// The return-probe half of the floor.
#[uretprobe]
pub fn noop_exit(_ctx: RetProbeContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never reached at run time.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
