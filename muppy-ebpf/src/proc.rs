//! Process events for system-wide tracing (raw tracepoints: no tracefs needed): exec and exit,
//! with the command name, sent at once.

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid};
use muppy_common::{EventKind, ProcEvent};

use crate::{
    emit::send,
    exit_maps,
    scope::{self, ignored, is_tracer},
};

/// A process exec'd: user space reads its new program's name and mappings (and probes its
/// allocator) while it is young.
#[inline(always)]
pub fn on_exec() {
    let id = bpf_get_current_pid_tgid();
    exit_maps::on_exec((id >> 32) as u32);
    scope::count_exec((id >> 32) as u32);
    emit_proc(EventKind::Exec, id);
}

/// A process is about to exec: its old program's mappings go where user space has not seen
/// them, for naming what that image allocated (a shell's child between fork and exec, which
/// user space never reads).
#[inline(always)]
pub fn on_prepare_exec() {
    let id = bpf_get_current_pid_tgid();
    if !ignored::<false>(id) {
        exit_maps::on_exit((id >> 32) as u32);
    }
}

/// A task exited: if it was a process's main thread, its table can be reported and freed once
/// the events before it are read. Its executable mappings go first where user space has not
/// seen them, for naming its sites.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "a pid_tgid's low half is the thread id"
)]
pub fn on_exit() {
    let id = bpf_get_current_pid_tgid();
    if id as u32 == (id >> 32) as u32 {
        if !ignored::<false>(id) {
            exit_maps::on_exit(id as u32);
        }
        scope::forget(id as u32);
        emit_proc(EventKind::Exit, id);
    }
}

#[inline(always)]
fn emit_proc(kind: EventKind, id: u64) {
    if is_tracer(id) {
        return;
    }
    let ev = ProcEvent {
        kind: kind as u32,
        pid: (id >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    send(ev, true);
}
