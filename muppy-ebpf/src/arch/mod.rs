//! The target architecture's registers, return addresses and system call numbers. Only x86-64
//! so far; another would sit beside it, chosen by the `bpf_target_arch` cfg aya-build sets.

mod x86_64;

pub use x86_64::*;
