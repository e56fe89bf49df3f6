//! Frees: `free` at its entry (the block is sent before it is released), and whether a free
//! reads its caller, which only matters while a thread tears down (see
//! [`FREE_CALLERS`](crate::maps::FREE_CALLERS)).

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_attach_cookie, bpf_get_current_pid_tgid},
    programs::ProbeContext,
};
use muppy_common::{
    Drop, EventKind, FREE_CALLERS_ALWAYS, FREE_CALLERS_TEARDOWNS, FreeEvent, decode_cookie,
};

use crate::{
    arch::{caller, stack_pointer},
    atomic::atomic_add,
    emit::{count_drop, emit},
    inflight::{end_call, in_flight, nested_in},
    maps::{FREE_CALLERS, SAMPLING, TEARDOWN_TIDS},
    sampling::forget_sampled,
    scope::ignored,
};

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
pub fn free_caller(ctx: &ProbeContext, sp: u64) -> u64 {
    if !free_callers_wanted() {
        return 0;
    }
    // SAFETY: the context pointer is the probe's own.
    let (_, sp_offset) = decode_cookie(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
    caller(sp, sp_offset)
}

/// glibc's `__call_tls_dtors`, entered as a thread (or the process, at exit) begins its
/// teardown: from here until the thread exits, frees read their caller.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "a pid_tgid's low half is the thread id"
)]
pub fn on_thread_teardown() {
    let id = bpf_get_current_pid_tgid();
    if ignored::<false>(id) {
        return;
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
}

/// A task exited: if it was in teardown, it no longer is.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "a pid_tgid's low half is the thread id"
)]
pub fn on_teardown_exit() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if TEARDOWN_TIDS.remove(tid).is_ok()
        && let Some(p) = FREE_CALLERS.get_ptr_mut(FREE_CALLERS_TEARDOWNS)
    {
        // SAFETY: a map value.
        unsafe { atomic_add(p, u64::MAX) };
    }
}

/// `free` was entered; `SHARED` as for [`crate::alloc::on_alloc_enter`].
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "a pid_tgid's low half is the thread id"
)]
pub fn on_free_enter<const SHARED: bool>(ctx: &ProbeContext) {
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    if ptr == 0 {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    if ignored::<SHARED>(id) {
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
pub fn emit_free(id: u64, ptr: u64, ret: u64) {
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
