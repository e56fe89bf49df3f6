//! Memory mappings a traced process makes itself (`--mmap`), seen at the system call
//! tracepoints: anonymous mmap, munmap and mremap outside any probed allocator call.

use aya_ebpf::{
    bindings::BPF_ANY, helpers::bpf_get_current_pid_tgid, programs::RawTracePointContext,
};
use muppy_common::{EventKind, MapCall, MapEvent};

use crate::{
    arch::{
        REG_DI, REG_DX, REG_ORIG_AX, REG_R10, REG_SI, REG_SP, SYS_MMAP, SYS_MREMAP, SYS_MUNMAP,
        caller, reg,
    },
    emit::{emit, timestamp},
    inflight::in_flight,
    maps::{MAP_ALL, MAP_CALLS, MAP_PIDS},
    scope::ignored,
};

const MAP_ANONYMOUS: u64 = 0x20;

/// A system call is entered: records mmap, munmap and mremap made by a traced process itself,
/// not by an allocator inside a probed call (glibc's malloc maps large blocks itself; those are
/// heap blocks already). File mappings are left out: they are not memory the program keeps.
#[inline(always)]
pub fn on_sys_enter(ctx: &RawTracePointContext) {
    let nr: u64 = ctx.arg(1);
    if nr != SYS_MMAP && nr != SYS_MUNMAP && nr != SYS_MREMAP {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if ignored::<false>(id) || (MAP_ALL.load() == 0 && MAP_PIDS.get_ptr(tgid).is_none()) {
        return;
    }
    if in_flight(id).is_some() {
        return;
    }
    let regs: u64 = ctx.arg(0);
    let args = [reg(regs, REG_DI), reg(regs, REG_SI), reg(regs, REG_DX)];
    let mut caller = 0;
    if nr == SYS_MMAP {
        if reg(regs, REG_R10) & MAP_ANONYMOUS == 0 {
            return;
        }
        // The mmap wrapper is a leaf: the return address into its caller is on top.
        caller = self::caller(reg(regs, REG_SP), 0);
    }
    let _ = MAP_CALLS.insert(id, MapCall { nr, args, caller }, BPF_ANY.into());
}

/// A system call returns: sends the mapping change if it succeeded.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "a pid_tgid's low half is the thread id"
)]
pub fn on_sys_exit(ctx: &RawTracePointContext) {
    let regs: u64 = ctx.arg(0);
    let nr = reg(regs, REG_ORIG_AX);
    if nr != SYS_MMAP && nr != SYS_MUNMAP && nr != SYS_MREMAP {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    let Some(call) = MAP_CALLS.get_ptr(id) else {
        return;
    };
    // SAFETY: this thread's own record.
    let call = unsafe { *call };
    let _ = MAP_CALLS.remove(id);
    let ret: i64 = ctx.arg(1);
    if (-4095..0).contains(&ret) {
        return; // failed: nothing changed
    }
    let mut ev = MapEvent {
        kind: EventKind::Mmap as u32,
        pid: (id >> 32) as u32,
        tid: id as u32,
        reserved: 0,
        addr: ret as u64,
        len: call.args[1],
        old_addr: 0,
        old_len: 0,
        caller: call.caller,
        ts_ns: timestamp(),
    };
    if call.nr == SYS_MUNMAP {
        ev.kind = EventKind::Munmap as u32;
        ev.addr = call.args[0];
    } else if call.nr == SYS_MREMAP {
        ev.kind = EventKind::Mremap as u32;
        ev.old_addr = call.args[0];
        ev.old_len = call.args[1];
        ev.len = call.args[2];
    }
    emit(ev);
}
