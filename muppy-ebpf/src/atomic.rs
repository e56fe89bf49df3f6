//! The BPF atomics Rust does not offer on this target: it has atomic loads and stores but no
//! compare-and-swap in Rust's eyes; the kernel's BPF has it (BPF_ATOMIC | BPF_CMPXCHG, 5.12+),
//! reached through inline assembly.

/// Atomically adds `delta` (two's complement for a subtraction) to the counter at `p`.
///
/// # Safety
/// `p` points into a map value.
#[inline(always)]
pub unsafe fn atomic_add(p: *mut u64, delta: u64) {
    // SAFETY: the caller's pointer; the locked add is atomic.
    unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {d}", p = in(reg) p, d = in(reg) delta) };
}

/// Atomically: if `*word == expected`, `*word = new`. Returns the value seen.
///
/// # Safety
/// `word` points into a map value.
#[inline(always)]
pub unsafe fn compare_and_swap(word: *mut u64, expected: u64, new: u64) -> u64 {
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
