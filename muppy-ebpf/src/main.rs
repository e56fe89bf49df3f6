//! Uprobes on the target's allocator entry points.
//!
//! `alloc_enter`/`alloc_exit` bracket every allocating function (and C++ operator delete, which
//! may reach `free` inside) and `free_enter` sees frees.
//! Each heap change becomes one event in the `EVENTS` ring buffer. Calls that libc makes to
//! probed functions from inside another probed call (realloc(NULL, n) reaching malloc,
//! realloc(p, 0) reaching free, reallocarray reaching realloc) are recognised by their deeper
//! (or, for a tail call, equal) stack pointer and ignored: the outermost call alone accounts for
//! the heap change, so every allocation counts exactly once.
//!
//! Reading the target's memory is the dearest thing a probe can do here (≈60 ns a read, as
//! much as the rest of a probe), so the hot path reads none: the allocation's caller comes
//! from the return probe's registers, and a free's caller is read only while it can matter
//! ([`maps::FREE_CALLERS`]).
//!
//! This file holds the programs alone, each a thin wrapper; every map and global is in
//! [`maps`], and each program area has its module. The names the loader finds them by are
//! `muppy_common::names`.
#![no_std]
#![no_main]
// The target has atomic loads and stores but no compare-and-swap in Rust's eyes; the kernel's
// BPF has it (BPF_ATOMIC | BPF_CMPXCHG, 5.12+), reached through inline assembly.
#![feature(asm_experimental_arch)]

mod alloc;
mod arch;
mod atomic;
mod emit;
mod exit_hold;
mod exit_maps;
mod free;
mod inflight;
mod maps;
mod mmap;
mod proc;
mod sampling;
mod scope;
mod stack;

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_attach_cookie,
    macros::{raw_tracepoint, uprobe, uretprobe},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};
use muppy_common::{AllocFn, decode_cookie};

/// One entry program per function, named by [`AllocFn::entry_program`] from the same list
/// (`muppy_common::entry_programs!`): the function is a constant in each, where asking the
/// kernel for the attach cookie cost ≈13 ns a call.
macro_rules! define_entry_programs {
    ($($name:ident => $func:ident),* $(,)?) => {
        $(
            #[uprobe]
            pub fn $name(ctx: ProbeContext) -> u32 {
                alloc::on_alloc_enter::<false>(&ctx, AllocFn::$func as u32);
                0
            }
        )*
    };
}

muppy_common::entry_programs!(define_entry_programs);

/// The return of every allocating function (and of operator delete).
#[uretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
    alloc::on_alloc_exit::<false>(&ctx);
    0
}

/// `free`'s entry.
#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    free::on_free_enter::<false>(&ctx);
    0
}

/// The entry programs on probes shared by every process: only for followed ones, the
/// function in the attach cookie.
#[uprobe]
pub fn alloc_enter_shared(ctx: ProbeContext) -> u32 {
    if scope::followed() {
        // SAFETY: the context pointer is the probe's own.
        let (func, _) = decode_cookie(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
        alloc::on_alloc_enter::<true>(&ctx, func);
    }
    0
}

/// [`alloc_exit`] on probes shared by every process: only for followed ones.
#[uretprobe]
pub fn alloc_exit_shared(ctx: RetProbeContext) -> u32 {
    if scope::followed() {
        alloc::on_alloc_exit::<true>(&ctx);
    }
    0
}

/// [`free_enter`] on probes shared by every process: only for followed ones.
#[uprobe]
pub fn free_enter_shared(ctx: ProbeContext) -> u32 {
    if scope::followed() {
        free::on_free_enter::<true>(&ctx);
    }
    0
}

/// glibc's `__call_tls_dtors`, entered as a thread (or the process, at exit) begins its
/// teardown: from here until the thread exits, frees read their caller.
#[uprobe]
pub fn thread_teardown(_ctx: ProbeContext) -> u32 {
    free::on_thread_teardown();
    0
}

/// `_exit`'s entry in the traced command: holds the thread there for the leak check at exit,
/// while user space asks for it.
#[uprobe]
pub fn exit_hold(_ctx: ProbeContext) -> u32 {
    exit_hold::on_exit_call();
    0
}

/// A task exited: if it was in teardown, it no longer is.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn teardown_exit(_ctx: RawTracePointContext) -> u32 {
    free::on_teardown_exit();
    0
}

/// System-wide tracing: a process exec'd. Wakes the reader at once.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn proc_exec(_ctx: RawTracePointContext) -> u32 {
    proc::on_exec();
    0
}

/// System-wide tracing: a process's main thread exited.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn proc_exit(_ctx: RawTracePointContext) -> u32 {
    proc::on_exit();
    0
}

/// System-wide tracing: a process is about to exec, its old program still mapped.
#[raw_tracepoint(tracepoint = "sched_prepare_exec")]
pub fn proc_prepare_exec(_ctx: RawTracePointContext) -> u32 {
    proc::on_prepare_exec();
    0
}

/// `--mmap`: a system call is entered.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn map_enter(ctx: RawTracePointContext) -> u32 {
    mmap::on_sys_enter(&ctx);
    0
}

/// `--mmap`: a system call returns.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn map_exit(ctx: RawTracePointContext) -> u32 {
    mmap::on_sys_exit(&ctx);
    0
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
