//! What the probes know of x86-64: where `pt_regs` keeps the registers they read, where the
//! return address is at a function's entry, and the system call numbers of the mapping calls.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user},
    programs::{ProbeContext, RetProbeContext},
};

/// `mmap`'s system call number.
pub const SYS_MMAP: u64 = 9;
/// `munmap`'s.
pub const SYS_MUNMAP: u64 = 11;
/// `mremap`'s.
pub const SYS_MREMAP: u64 = 25;

/// Offsets in the x86-64 `struct pt_regs` (a fixed ABI) of the registers read at the system
/// call tracepoints: the fourth argument.
pub const REG_R10: usize = 7 * 8;
/// The third argument.
pub const REG_DX: usize = 12 * 8;
/// The second argument.
pub const REG_SI: usize = 13 * 8;
/// The first argument.
pub const REG_DI: usize = 14 * 8;
/// The system call number.
pub const REG_ORIG_AX: usize = 15 * 8;
/// The user stack pointer.
pub const REG_SP: usize = 19 * 8;

/// The stack pointer at a uprobe.
#[inline(always)]
pub fn stack_pointer(ctx: &ProbeContext) -> u64 {
    // SAFETY: the kernel hands uprobes a valid pt_regs.
    unsafe { (*ctx.regs).rsp }
}

/// The instruction pointer at a return probe: the return address into the caller.
#[inline(always)]
pub fn return_ip(ctx: &RetProbeContext) -> u64 {
    // SAFETY: the kernel hands return probes a valid pt_regs.
    unsafe { (*ctx.regs).rip }
}

/// The caller's stack pointer and frame pointer register at a return probe.
#[inline(always)]
pub fn return_sp_bp(ctx: &RetProbeContext) -> (u64, u64) {
    // SAFETY: the kernel hands return probes a valid pt_regs.
    unsafe { ((*ctx.regs).rsp, (*ctx.regs).rbp) }
}

/// One register from the saved user registers at `regs` (a raw tracepoint's `pt_regs`).
#[inline(always)]
pub fn reg(regs: u64, offset: usize) -> u64 {
    // SAFETY: a checked read of the kernel's saved user registers.
    unsafe { bpf_probe_read_kernel((regs + offset as u64) as *const u64) }.unwrap_or(0)
}

/// Reads the return address into the caller from the stack at the probed instruction.
#[inline(always)]
pub fn caller(sp: u64, sp_offset: u64) -> u64 {
    // SAFETY: a read of the target's own stack through the checked helper.
    unsafe { bpf_probe_read_user((sp + sp_offset) as *const u64) }.unwrap_or(0)
}
