//! Allocating calls: the entry records what was asked (the size, the block to reallocate) in
//! the thread's in-flight record, and the return sends the block with its site and stack.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    programs::{ProbeContext, RetProbeContext},
};
use muppy_common::{AllocFn, Drop, Event, EventKind, InFlight};

use crate::{
    arch::{return_ip, stack_pointer},
    emit::{count_drop, emit, timestamp},
    free::{emit_free, free_caller},
    inflight::{begin_call, end_call, in_flight, load_owner, nested_in},
    maps::{ATTACH_UNTIL, PAGE_SIZE, SAMPLING},
    sampling::{sample_event, take_sample},
    scope::{ignored, is_tracer, refused},
    stack::send_alloc,
};

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

/// Whether probes are being placed (or were placed a moment ago): a return without its entry
/// is then a call that began before its entry was probed.
#[inline(always)]
fn placing_probes() -> bool {
    // SAFETY: a plain helper call.
    ATTACH_UNTIL
        .get(0)
        .is_some_and(|&until| unsafe { bpf_ktime_get_ns() } < until)
}

/// An allocating function (or operator delete), `func` an [`AllocFn`], was entered. `SHARED`:
/// on a probe shared by followed processes, where no selection refuses any (and the verifier
/// is spared the lookup).
#[inline(always)]
pub fn on_alloc_enter<const SHARED: bool>(ctx: &ProbeContext, func: u32) {
    let id = bpf_get_current_pid_tgid();
    if ignored::<SHARED>(id) {
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

/// An allocating function (or operator delete) returned; `SHARED` as for [`on_alloc_enter`].
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "a pid_tgid's low half is the thread id; posix_memalign returns an int"
)]
pub fn on_alloc_exit<const SHARED: bool>(ctx: &RetProbeContext) {
    let id = bpf_get_current_pid_tgid();
    if is_tracer(id) {
        return;
    }
    let Some(record) = in_flight(id) else {
        // A refused process's entries are not recorded.
        if SHARED || !refused(id) {
            count_drop(if placing_probes() {
                Drop::UnderWayAtAttach
            } else {
                Drop::ReturnWithoutEntry
            });
        }
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
    let caller = return_ip(ctx);
    let Some(func) = AllocFn::from_u32(rec.func) else {
        return;
    };
    // A delete's free was sent at entry; a process refused since its entry is left out.
    if func == AllocFn::Delete || (!SHARED && refused(id)) {
        return;
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
        reserved: 0,
        ts_ns: timestamp(),
        stack: 0,
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
    if ev.kind == EventKind::Free as u32 {
        emit(ev);
    } else {
        send_alloc(ctx, ev);
    }
}
