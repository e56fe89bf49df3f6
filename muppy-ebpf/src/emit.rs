//! Sending events to user space through the ring, timestamps, and counting what could not be
//! sent.

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    maps::ring_buf::RingBufEntry,
};
use muppy_common::Drop;

use crate::maps::{DROPS, EVENTS, SUBMITS, TICKS, WAKEUP_EVERY};

/// When an event happened: ticks or ns, see [`TICKS`].
#[inline(always)]
pub fn timestamp() -> u64 {
    // SAFETY: plain helper calls.
    unsafe {
        if TICKS.load() != 0 {
            bpf_jiffies64()
        } else {
            bpf_ktime_get_ns()
        }
    }
}

/// Counts one event that could not be delivered.
#[inline(always)]
pub fn count_drop(reason: Drop) {
    count_drops(reason, 1);
}

/// Counts `n` events that could not be delivered.
#[inline(always)]
pub fn count_drops(reason: Drop, n: u64) {
    if let Some(slot) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot; eBPF programs do not preempt each other on one CPU.
        unsafe { *slot += n };
    }
}

/// Whether a submit of `bytes` wakes the reader: the one that takes this CPU past
/// `WAKEUP_EVERY` bytes since its last wake-up does (a per-CPU count costs less than asking
/// the ring how full it is, which reads a position the reader writes). Between wake-ups the
/// reader polls.
#[inline(always)]
fn wakeup_flag(bytes: u64) -> u32 {
    let Some(n) = SUBMITS.get_ptr_mut(0) else {
        return BPF_RB_FORCE_WAKEUP;
    };
    // SAFETY: this CPU's slot; programs do not preempt each other on one CPU.
    let n = unsafe { &mut *n };
    *n += bytes;
    if *n >= WAKEUP_EVERY.load() {
        *n = 0;
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Sends one event. By value, so that its fields can be stored straight into the ring.
#[inline(always)]
pub fn emit<T: 'static>(ev: T) {
    send(ev, false);
}

/// Sends one event, waking the reader at once if `wake`, else when [`wakeup_flag`] says.
#[inline(always)]
pub fn send<T: 'static>(ev: T, wake: bool) {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count_drop(Drop::RingFull);
        return;
    };
    entry.write(ev);
    if wake {
        entry.submit(BPF_RB_FORCE_WAKEUP.into());
    } else {
        submit(entry);
    }
}

/// Submits a record reserved and written in place, waking the reader when [`wakeup_flag`]
/// says.
#[inline(always)]
pub fn submit<T: 'static>(entry: RingBufEntry<T>) {
    // The ring's own 8-byte header counts too.
    let bytes = core::mem::size_of::<T>() as u64 + 8;
    entry.submit(wakeup_flag(bytes).into());
}
