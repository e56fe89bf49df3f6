//! Byte-weighted sampling (`--sample-bytes`): which allocations are sampled, and the set of
//! sampled live blocks whose frees alone reach the ring.

use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_get_prandom_u32};
use muppy_common::{Drop, Event, EventKind, INTERVALS};

use crate::{
    emit::count_drop,
    maps::{COUNTDOWN, SAMPLE_GAPS, SAMPLED},
};

/// Byte-weighted sampling, as tcmalloc and jemalloc profile heaps: a countdown of bytes, and
/// the allocation that crosses zero is sampled, so a block of `s` bytes is sampled with
/// probability 1 - exp(-s / mean gap).
#[inline(always)]
pub fn take_sample(size: u64) -> bool {
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
    let gap = SAMPLE_GAPS.get(pick).copied().unwrap_or(1);
    *left = i64::try_from(gap).unwrap_or(i64::MAX);
    true
}

/// Sampling: whether `addr` is a sampled block, forgetting it (it is being freed).
#[inline(always)]
pub fn forget_sampled(addr: u64) -> bool {
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

/// Sampling: reduces an allocator's event to what concerns sampled blocks. Returns false if
/// nothing is left to send. The old block of a realloc (or of realloc(p, 0)) counts only if
/// it was sampled; the new block only if this call was.
#[inline(always)]
pub fn sample_event(ev: &mut Event, new_sampled: bool) -> bool {
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
