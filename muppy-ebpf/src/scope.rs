//! Which processes the probes record: never the tracer itself, and on probes shared by every
//! process only the followed ones.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::maps::{FOLLOWED, TRACER_TGID};

/// Whether `id` (a pid_tgid) is a thread of muppy-trace itself.
#[inline(always)]
pub fn is_tracer(id: u64) -> bool {
    (id >> 32) as u32 == TRACER_TGID.load()
}

/// Whether the current process is followed (see [`FOLLOWED`]).
#[inline(always)]
pub fn followed() -> bool {
    FOLLOWED
        .get_ptr((bpf_get_current_pid_tgid() >> 32) as u32)
        .is_some()
}
