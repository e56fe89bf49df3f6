//! Sending events to user space through the ring, timestamps, and counting what could not be
//! sent.

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
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
    let flags = if wake {
        BPF_RB_FORCE_WAKEUP
    } else {
        wakeup_flag()
    };
    entry.submit(flags.into());
}
