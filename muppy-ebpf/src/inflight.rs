//! Per-thread state between an allocator's entry and its return: a slot per thread id in
//! [`SLOTS`], claimed with a compare-and-swap, or a record in the fallback map [`INFLIGHT`]
//! when another thread's call holds the slot; and how a call inside another is told apart.

use aya_ebpf::bindings::BPF_ANY;
use muppy_common::{Drop, INFLIGHT_IDLE, InFlight};

use crate::{
    atomic::{atomic_add, compare_and_swap},
    emit::{count_drop, count_drops},
    maps::{FALLBACKS, INFLIGHT, SLOT_MASK, SLOTS},
};

/// [`InFlight::owner`] bit: the owning thread is inside a call.
const BUSY: u64 = 1 << 63;

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
pub fn nested_in(outer: &mut InFlight, sp: u64) -> bool {
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

/// The owner word of a record, read once.
pub fn load_owner(rec: *mut InFlight) -> u64 {
    // SAFETY: an aligned 8-byte read of a map value.
    unsafe { core::ptr::read_volatile(owner(rec)) }
}

/// Where a thread's in-flight record is.
#[derive(Clone, Copy)]
pub enum Record {
    /// Its slot, claimed (owner = tid | BUSY).
    Slot(*mut InFlight),
    /// The fallback map.
    Fallback(*mut InFlight),
}

impl Record {
    /// The record itself.
    pub fn ptr(self) -> *mut InFlight {
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
#[expect(
    clippy::cast_possible_truncation,
    reason = "a pid_tgid's low half is the thread id"
)]
pub fn in_flight(id: u64) -> Option<Record> {
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
pub fn end_call(rec: Record, tid: u32) {
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
#[expect(
    clippy::cast_possible_truncation,
    reason = "a pid_tgid's low half is the thread id"
)]
pub fn begin_call(id: u64, mut rec: InFlight) {
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
