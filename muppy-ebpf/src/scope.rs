//! Which processes the probes record: never the tracer itself nor a process the selection
//! refused, and on probes shared by every process only the followed ones.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::maps::{EXECS, FOLLOWED, REFUSED, SELECTING, TRACER_TGID};

/// Whether `id` (a pid_tgid) is a thread of muppy-trace itself.
#[inline(always)]
pub fn is_tracer(id: u64) -> bool {
    (id >> 32) as u32 == TRACER_TGID.load()
}

/// Whether the current process, `id` (a pid_tgid), runs a program the selection refused (see
/// [`REFUSED`]).
#[inline(always)]
pub fn refused(id: u64) -> bool {
    if SELECTING.load() == 0 {
        return false;
    }
    let tgid = (id >> 32) as u32;
    // SAFETY: lookups by value; the entries are copied at once.
    unsafe { REFUSED.get(&tgid) }
        .is_some_and(|&program| unsafe { EXECS.get(&tgid) }.copied().unwrap_or(0) == program)
}

/// Whether the probes leave out the current thread's calls, `id` its pid_tgid; `SHARED`: on
/// a probe shared by followed processes, which no selection refuses.
#[inline(always)]
pub fn ignored<const SHARED: bool>(id: u64) -> bool {
    is_tracer(id) || (!SHARED && refused(id))
}

/// Whether the current process is followed (see [`FOLLOWED`]).
#[inline(always)]
pub fn followed() -> bool {
    FOLLOWED
        .get_ptr((bpf_get_current_pid_tgid() >> 32) as u32)
        .is_some()
}

/// Process `tgid` exec'd (see [`EXECS`]).
#[inline(always)]
pub fn count_exec(tgid: u32) {
    match EXECS.get_ptr_mut(&tgid) {
        // SAFETY: a map value; only this process's exec, which its other threads cannot
        // race (an exec ends them), writes it.
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = EXECS.insert(&tgid, &1, 0);
        }
    }
}

/// Process `tgid` ended: its pid may be reused by a process the selection admits.
#[inline(always)]
pub fn forget(tgid: u32) {
    let _ = EXECS.remove(&tgid);
    if SELECTING.load() != 0 {
        let _ = REFUSED.remove(&tgid);
    }
}
