//! An allocation's call stack, sent in the same record as its event, so that nothing in the
//! kernel keeps stacks (a stack map fills over a long run and then loses every new stack):
//! user space interns them. Two forms, by [`StackMode`]:
//!
//! - the kernel's frame-pointer walk, its return addresses after the event;
//! - a copy of the user stack from the caller's stack pointer up, with the registers the
//!   unwinder starts from, for code built without frame pointers: user space unwinds it with
//!   the modules' call frame information and drops the bytes.
//!
//! Either record is reserved in the ring and written in place (a per-CPU scratch buffer could
//! be overwritten by a program that preempts this one). If the ring has no room for it, the
//! event goes alone, flagged [`STACK_LOST`] and counted: an event is never lost for its stack.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_USER_STACK,
    helpers::generated::{bpf_get_stack, bpf_probe_read_user},
    programs::RetProbeContext,
};
use muppy_common::{
    Drop, Event, MAX_CODE_RANGES, MAX_FP_FRAMES, STACK_COPY, STACK_FRAMES, STACK_FULL, STACK_LOST,
    STACK_PAGE, StackCopy, StackMode,
};

use crate::{
    arch::return_sp_bp,
    emit::{count_drop, emit, submit},
    maps::{EVENTS, FP_CODE, STACK_MODE, STACK_PAGES},
};

/// Frames walked into the probe's own stack first: most stacks are shorter, and their record
/// is then sized to fit them (the ring's bandwidth is what the probes pay for).
const SHORT: usize = 32;

/// An event with `N` return addresses after it.
#[repr(C)]
struct Frames<const N: usize> {
    ev: Event,
    ips: [u64; N],
}

/// An event with a copy of `P` pages of stack after it.
#[repr(C)]
struct Copy<const P: usize> {
    ev: Event,
    regs: StackCopy,
    pages: [[u8; STACK_PAGE]; P],
}

/// Sends allocation `ev` with its stack, taken as `STACK_MODE` says.
#[inline(always)]
pub fn send_alloc(ctx: &RetProbeContext, ev: Event) {
    let mode = STACK_MODE.load();
    let copy = if mode == StackMode::Dwarf as u32 {
        true
    } else if mode == StackMode::Auto as u32 {
        !in_fp_code(ev.pid, ev.caller)
    } else if mode == StackMode::Fp as u32 {
        false
    } else {
        emit(ev);
        return;
    };
    if copy {
        match STACK_PAGES.load() {
            2 => send_copy::<2>(ctx, ev),
            3 => send_copy::<3>(ctx, ev),
            5 => send_copy::<5>(ctx, ev),
            _ => send_copy::<9>(ctx, ev),
        }
    } else {
        send_frames(ctx, ev);
    }
}

/// Whether `caller` is in code of process `tgid` that keeps frame pointers.
#[inline(always)]
fn in_fp_code(tgid: u32, caller: u64) -> bool {
    // SAFETY: a read-only look at a map value user space writes whole.
    let Some(code) = (unsafe { FP_CODE.get(&tgid) }) else {
        return false;
    };
    let n = code.n as usize;
    for i in 0..MAX_CODE_RANGES {
        if i >= n {
            break;
        }
        let [start, end] = code.ranges[i];
        if caller >= start && caller < end {
            return true;
        }
    }
    false
}

/// The event alone, its stack counted as lost.
#[inline(always)]
fn without_stack(mut ev: Event) {
    count_drop(Drop::StackLost);
    ev.flags |= STACK_LOST;
    emit(ev);
}

/// The frame-pointer walk: into the probe's own stack, then into a record of the size that
/// holds it; a walk that fills the short buffer is made again into a full-size record.
#[inline(always)]
fn send_frames(ctx: &RetProbeContext, ev: Event) {
    let mut buf = [0u64; SHORT];
    // SAFETY: the helper writes at most the buffer's size into it.
    let got = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            buf.as_mut_ptr().cast(),
            (SHORT * 8) as u32,
            u64::from(BPF_F_USER_STACK),
        )
    };
    if got < 0 {
        without_stack(ev);
        return;
    }
    let n = (got as usize) / 8;
    if n < 8 {
        send_short::<8>(ev, &buf, n);
    } else if n < 16 {
        send_short::<16>(ev, &buf, n);
    } else if n < SHORT {
        send_short::<SHORT>(ev, &buf, n);
    } else {
        send_long(ctx, ev);
    }
}

/// A record of `N` frames from the short walk's `n`.
#[inline(always)]
fn send_short<const N: usize>(mut ev: Event, buf: &[u64; SHORT], n: usize) {
    let Some(mut entry) = EVENTS.reserve::<Frames<N>>(0) else {
        without_stack(ev);
        return;
    };
    ev.stack = n as u32;
    ev.flags |= STACK_FRAMES;
    let rec = entry.as_mut_ptr();
    // SAFETY: the record is this program's until submitted; N <= SHORT, and the helper
    // zeroed the buffer past the frames it wrote.
    unsafe {
        (*rec).ev = ev;
        for i in 0..N {
            (*rec).ips[i] = buf[i];
        }
    }
    submit(entry);
}

/// A stack of [`SHORT`] frames or more, walked again into a full-size record.
#[inline(always)]
fn send_long(ctx: &RetProbeContext, mut ev: Event) {
    let Some(mut entry) = EVENTS.reserve::<Frames<MAX_FP_FRAMES>>(0) else {
        without_stack(ev);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: the helper writes at most the array's size into the record's array.
    let got = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            core::ptr::addr_of_mut!((*rec).ips).cast(),
            (MAX_FP_FRAMES * 8) as u32,
            u64::from(BPF_F_USER_STACK),
        )
    };
    if got < 0 {
        entry.discard(0);
        without_stack(ev);
        return;
    }
    let n = (got as usize) / 8;
    ev.stack = n as u32;
    ev.flags |= STACK_FRAMES;
    if n >= MAX_FP_FRAMES {
        ev.flags |= STACK_FULL;
    }
    // SAFETY: as above.
    unsafe { (*rec).ev = ev };
    submit(entry);
}

/// A copy of the `P - 1` pages' worth of stack above the stack pointer, laid out as the
/// pages it spans (`P` of them): each read stays within one page, so the copy stops exactly
/// at the top of the thread's stack mapping (the first page that cannot be read).
#[inline(always)]
fn send_copy<const P: usize>(ctx: &RetProbeContext, mut ev: Event) {
    let Some(mut entry) = EVENTS.reserve::<Copy<P>>(0) else {
        without_stack(ev);
        return;
    };
    let (sp, bp) = return_sp_bp(ctx);
    let page = STACK_PAGE as u64;
    let base = sp & !(page - 1);
    let off = (sp & (page - 1)) as usize;
    let rec = entry.as_mut_ptr();
    let mut pages = 0u32;
    for k in 0..P {
        // The first page from the stack pointer on, the last up to the same offset.
        let (from, len) = if k == 0 {
            (off, STACK_PAGE - off)
        } else if k == P - 1 {
            (0, off)
        } else {
            (0, STACK_PAGE)
        };
        if len == 0 {
            break;
        }
        // SAFETY: a checked read of the target's memory into the record's page k, from
        // `from` (below a page) for `len` bytes (to the page's end at most).
        let failed = unsafe {
            bpf_probe_read_user(
                core::ptr::addr_of_mut!((*rec).pages[k])
                    .cast::<u8>()
                    .add(from)
                    .cast(),
                len as u32,
                (base + (k * STACK_PAGE + from) as u64) as *const _,
            )
        } != 0;
        if failed {
            break;
        }
        pages += 1;
    }
    if pages == 0 {
        entry.discard(0);
        without_stack(ev);
        return;
    }
    ev.stack = pages;
    ev.flags |= STACK_COPY;
    // SAFETY: the record is this program's until submitted.
    unsafe {
        (*rec).ev = ev;
        (*rec).regs = StackCopy { sp, bp };
    }
    submit(entry);
}
