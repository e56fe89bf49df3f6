//! The leak check at exit: a thread of the traced command that enters `_exit` (which `exit()`
//! calls once the atexit handlers and destructors have run) stops there, with every other
//! thread still alive, until user space has checked the process and lets it go on. Valgrind
//! checks at the same point; once `exit_group` has run, the other threads and their registers
//! are gone.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_send_signal_thread};

use crate::maps::EXIT_HOLD;

/// `SIGSTOP`: 19 on x86_64 and in the kernel's generic numbering, which aarch64 uses.
const SIGSTOP: u32 = 19;

/// `_exit`'s entry: stops the calling thread if its process is the one [`EXIT_HOLD`] names.
///
/// The kernel sends the signal as itself (`si_code` `SI_KERNEL`), which is how the ptrace
/// thread tells this stop from a user's `SIGSTOP`; it resumes the thread without the signal.
/// The tgid is checked here, not only by the probe's process filter: that filter compares
/// address spaces, which a `vfork` child (as `posix_spawn` makes) shares with its parent.
#[inline(always)]
pub fn on_exit_call() {
    let Some(held) = EXIT_HOLD.get_ptr(0) else {
        return;
    };
    // SAFETY: an aligned 4-byte read of a map value, which user space may write meanwhile.
    let held = unsafe { core::ptr::read_volatile(held) };
    if held == 0 || held != (bpf_get_current_pid_tgid() >> 32) as u32 {
        return;
    }
    // The result is not looked at: a thread not stopped here is checked at its exit stop,
    // the other threads gone by then.
    // SAFETY: a helper call with a signal number.
    unsafe { bpf_send_signal_thread(SIGSTOP) };
}
