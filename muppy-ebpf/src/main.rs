//! Uprobes on the target's allocator entry points.
//!
//! `alloc_enter`/`alloc_exit` bracket every allocating function and `free_enter` sees frees.
//! Each heap change becomes one [`Event`] in the `EVENTS` ring buffer. Calls that libc makes to
//! probed functions from inside another probed call (realloc(NULL, n) reaching malloc,
//! realloc(p, 0) reaching free, reallocarray reaching realloc) are recognised by their deeper
//! stack pointer and ignored: the outermost call alone accounts for the heap change, so every
//! allocation counts exactly once.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{
        BPF_ANY, BPF_F_USER_STACK, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
    },
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_ktime_get_ns,
        bpf_probe_read_user,
    },
    macros::{map, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{ProbeContext, RetProbeContext, tracing::StackIdContext},
};
use muppy_common::{
    AllocFn, DROP_KINDS, Drop, Event, EventKind, INFLIGHT_IDLE, INTERVALS, InFlight, NO_STACK,
    STACK_HAS_CALLER, STACK_LOST, decode_cookie,
};

/// Sized by user space (`--ring-mb`) before load.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Allocator calls between entry and return, keyed by pid_tgid: one record per thread, marked
/// idle between calls and rewritten in place (two lookups per call instead of a lookup, an
/// insert and a delete). Least-recently-used records, those of threads long gone, make room
/// for new threads. Sized by user space.
#[map(name = "INFLIGHT")]
static INFLIGHT: LruHashMap<u64, InFlight> = LruHashMap::with_max_entries(16384, 0);

/// User stacks of allocations. Sized by user space.
#[map(name = "STACKS")]
static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// Events that could not be delivered, per [`Drop`] reason.
#[map(name = "DROPS")]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_KINDS, 0);

/// Once this many bytes wait in the ring, a submit wakes the reader; below it the reader polls.
/// Waking on every event costs ≈1.5 µs per call.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: Global<u64> = Global::new(512 << 10);

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

/// The target's page size, for pvalloc.
#[unsafe(no_mangle)]
static PAGE_SIZE: Global<u64> = Global::new(4096);

#[inline(always)]
fn count_drop(reason: Drop) {
    if let Some(slot) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot; eBPF programs do not preempt each other on one CPU.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn emit(ev: &Event) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop(Drop::RingFull);
        return;
    };
    entry.write(*ev);
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA.into()) >= WAKEUP_BYTES.load() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
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

/// Whether a call entering with stack pointer `sp` and return address `ret` runs inside the
/// probed call `outer` of the same thread.
///
/// A deeper (lower) sp is a nested call. An equal sp is a tail call (glibc's realloc(NULL, n)
/// jumps to malloc, reallocarray to realloc) when the return slot no longer holds the outer
/// call's return address: the outer uretprobe has replaced it with its trampoline. Otherwise
/// `outer` returned unseen (its frame is gone) and its record is stale.
#[inline(always)]
fn nested_in(outer: &InFlight, sp: u64, ret: u64) -> bool {
    sp < outer.sp || (sp == outer.sp && ret != outer.caller)
}

#[uprobe]
pub fn alloc_enter(ctx: ProbeContext) -> u32 {
    on_alloc_enter(&ctx);
    0
}

#[inline(always)]
fn on_alloc_enter(ctx: &ProbeContext) {
    let id = bpf_get_current_pid_tgid();
    let sp = stack_pointer(ctx);
    // SAFETY: the context pointer is the probe's own.
    let (func, sp_offset) = decode_cookie(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
    let ret = caller(sp, sp_offset);
    let slot = INFLIGHT.get_ptr_mut(id);
    if let Some(outer) = slot {
        // SAFETY: the entry belongs to this thread; only this thread's probes touch it.
        let outer = unsafe { &mut *outer };
        if outer.func != INFLIGHT_IDLE {
            if nested_in(outer, sp, ret) {
                outer.nested += 1;
                return;
            }
            count_drop(Drop::EntryWithoutReturn);
        }
    }
    let Some(func) = AllocFn::from_u32(func) else {
        return;
    };
    let a0: u64 = ctx.arg(0).unwrap_or(0);
    let a1: u64 = ctx.arg(1).unwrap_or(0);
    let a2: u64 = ctx.arg(2).unwrap_or(0);
    let (size, ptr_arg) = match func {
        AllocFn::Malloc | AllocFn::Valloc => (a0, 0),
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
        AllocFn::Free => return,
    };
    let sampled = u32::from(SAMPLING.load() == 0 || take_sample(size));
    let entry_ns = match func {
        // SAFETY: plain helper call.
        AllocFn::Realloc | AllocFn::Reallocarray => unsafe { bpf_ktime_get_ns() },
        _ => 0,
    };
    let rec = InFlight {
        func: func as u32,
        nested: 0,
        sampled,
        reserved: 0,
        size,
        ptr_arg,
        caller: ret,
        sp,
        entry_ns,
    };
    match slot {
        // SAFETY: this thread's own record.
        Some(p) => unsafe { *p = rec },
        None => {
            if INFLIGHT.insert(id, rec, BPF_ANY.into()).is_err() {
                count_drop(Drop::InflightFull);
            }
        }
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
    let slot = INFLIGHT.get_ptr_mut(id);
    // SAFETY: this thread's own record.
    let Some(rec) = slot.map(|p| unsafe { &mut *p }) else {
        count_drop(Drop::ReturnWithoutEntry);
        return;
    };
    if rec.func == INFLIGHT_IDLE {
        count_drop(Drop::ReturnWithoutEntry);
        return;
    }
    if rec.nested > 0 {
        rec.nested -= 1;
        return;
    }
    let copy = *rec;
    rec.func = INFLIGHT_IDLE;
    let rec = copy;
    let ret: u64 = ctx.ret();
    let Some(func) = AllocFn::from_u32(rec.func) else {
        return;
    };
    let mut ev = Event {
        kind: EventKind::Alloc as u32,
        func: rec.func,
        pid: (id >> 32) as u32,
        tid: id as u32,
        addr: ret,
        old_addr: 0,
        size: rec.size,
        caller: rec.caller,
        entry_ns: rec.entry_ns,
        // SAFETY: plain helper call.
        ts_ns: unsafe { bpf_ktime_get_ns() },
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
    emit(&ev);
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
    let sp = stack_pointer(ctx);
    // SAFETY: the context pointer is the probe's own.
    let (_, sp_offset) = decode_cookie(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
    let ret = caller(sp, sp_offset);
    if let Some(outer) = INFLIGHT.get_ptr_mut(id) {
        // SAFETY: this thread's own entry.
        let outer = unsafe { &*outer };
        if outer.func != INFLIGHT_IDLE && nested_in(outer, sp, ret) {
            return; // e.g. realloc(p, 0) freeing p: accounted at realloc's return
        }
    }
    if SAMPLING.load() != 0 && !forget_sampled(ptr) {
        return; // an unsampled block: its allocation was never sent either
    }
    emit(&Event {
        kind: EventKind::Free as u32,
        func: AllocFn::Free as u32,
        pid: (id >> 32) as u32,
        tid: id as u32,
        addr: ptr,
        old_addr: 0,
        size: 0,
        caller: ret,
        entry_ns: 0,
        ts_ns: 0,
        stack: NO_STACK,
        flags: 0,
    });
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
