//! The process being traced: checking a pid given to attach to, or starting a command with the
//! probes in place before its first instruction ([`launch`]), following it and its children
//! through fork, exec and exit, and stopping it to look at it ([`tracer`], the one thread that
//! makes ptrace requests), and reading its memory ([`memory`]).

mod launch;
pub mod memory;
mod mmaps;
pub mod tracer;

use std::{
    fs,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::fs::PermissionsExt,
    },
    path::{Path, PathBuf},
};

use nix::errno::Errno;

pub use launch::{Launched, spawn_paused};
pub use memory::Memory;
pub use tracer::{
    Frozen, FrozenThread, Registers, Release, Root, Tracer, TreeEvent, check_untraced,
};

/// Why a target could not be traced.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No process has the pid.
    #[error("no process with pid {pid}")]
    NoSuchProcess {
        /// The pid given.
        pid: u32,
    },
    /// The pid is a kernel thread, which has no user-space heap.
    #[error("pid {pid} is a kernel thread; it has no heap to trace")]
    KernelThread {
        /// The pid given.
        pid: u32,
    },
    /// The process has exited and waits for its parent to reap it: it has no memory left.
    #[error(
        "pid {pid} is a zombie: it has exited and only waits for its parent to collect it; nothing to trace"
    )]
    Zombie {
        /// The pid given.
        pid: u32,
    },
    /// Tracing oneself would trace the tracer's own allocations.
    #[error("pid {pid} is muppy-trace itself")]
    SelfTrace {
        /// The pid given.
        pid: u32,
    },
    /// The command was not found.
    #[error("{program}: command not found (not a path, and not in PATH)")]
    NotFound {
        /// As given.
        program: String,
    },
    /// The command is not an executable file.
    #[error("{program}: not an executable file")]
    NotExecutable {
        /// As given.
        program: String,
    },
    /// An argument held a NUL byte.
    #[error("argument {arg:?} contains a NUL byte")]
    NulInArgument {
        /// The argument.
        arg: String,
    },
    /// A range to read ends before it starts, or is larger than memory can hold.
    #[error("cannot read {start:#x}..{end:#x}: not a range this process can hold")]
    BadRange {
        /// Where it starts.
        start: u64,
        /// Where it ends.
        end: u64,
    },
    /// Another tracer (a debugger, strace) holds a thread of the process: a thread has one
    /// tracer at a time.
    #[error(
        "pid {pid} (thread {tid}) is already traced by pid {tracer}; detach that tracer (gdb, strace) and try again"
    )]
    TracedByOther {
        /// The process.
        pid: u32,
        /// Its thread that is traced.
        tid: u32,
        /// The tracer, as `/proc/PID/status` `TracerPid` gives it.
        tracer: u32,
    },
    /// The process is frozen already.
    #[error("pid {pid} is already frozen")]
    AlreadyFrozen {
        /// The process.
        pid: u32,
    },
    /// The process is not frozen.
    #[error("pid {pid} is not frozen")]
    NotFrozen {
        /// The process.
        pid: u32,
    },
    /// The ptrace thread has ended (its root exited, or it failed), so it can take no request.
    #[error("the ptrace thread has ended")]
    TracerGone,
    /// A system call failed.
    #[error("{call} failed: {errno}")]
    Sys {
        /// Which call.
        call: &'static str,
        /// The error.
        errno: Errno,
    },
    /// execve in the child failed.
    #[error("cannot run {program}: {errno}")]
    Exec {
        /// The program.
        program: String,
        /// Why.
        errno: Errno,
    },
}

fn sys(call: &'static str) -> impl FnOnce(Errno) -> TargetError {
    move |errno| TargetError::Sys { call, errno }
}

pub use muppy_core::model::Exit;

/// A task's state letter from `/proc/TID/stat` (`R`, `S`, `Z`...), if it can be read. The
/// command name before it is in parentheses and may hold any character: read after the last
/// `)`.
pub(crate) fn task_state(tid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    let i = stat.rfind(')')?;
    stat[i + 1..].trim_start().chars().next()
}

/// Checks that `pid` is a live user-space process other than this one.
pub fn check_pid(pid: u32) -> Result<(), TargetError> {
    if pid == std::process::id() {
        return Err(TargetError::SelfTrace { pid });
    }
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if pid == 0 || !proc.join("stat").exists() {
        return Err(TargetError::NoSuchProcess { pid });
    }
    if matches!(task_state(pid), Some('Z' | 'X')) {
        return Err(TargetError::Zombie { pid });
    }
    // Kernel threads have no mm: an empty maps file and no exe link.
    let maps = fs::read_to_string(proc.join("maps")).unwrap_or_default();
    if maps.is_empty() && fs::read_link(proc.join("exe")).is_err() {
        return Err(TargetError::KernelThread { pid });
    }
    Ok(())
}

/// Opens a pidfd, which polls readable once the process has exited.
pub fn pidfd(pid: u32) -> Result<OwnedFd, TargetError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let errno = Errno::last();
        return Err(if errno == Errno::ESRCH {
            TargetError::NoSuchProcess { pid }
        } else {
            TargetError::Sys {
                call: "pidfd_open",
                errno,
            }
        });
    }
    let fd = i32::try_from(fd).map_err(|_| sys("pidfd_open")(Errno::EBADF))?;
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Finds `program` as a shell would: a path if it has a slash, else the first executable match
/// in PATH.
pub fn resolve_program(program: &str) -> Result<PathBuf, TargetError> {
    let is_exec = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        if !p.exists() {
            return Err(TargetError::NotFound {
                program: program.into(),
            });
        }
        return if is_exec(&p) {
            Ok(p)
        } else {
            Err(TargetError::NotExecutable {
                program: program.into(),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_exec(p))
        .ok_or_else(|| TargetError::NotFound {
            program: program.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_a_zombie() {
        // A child that exits and is not reaped stays a zombie until waited for.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !matches!(check_pid(pid), Err(TargetError::Zombie { .. })) {
            assert!(std::time::Instant::now() < deadline, "{:?}", check_pid(pid));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().unwrap();
    }

    #[test]
    fn rejects_missing_pid_and_self() {
        assert!(matches!(
            check_pid(u32::MAX - 1),
            Err(TargetError::NoSuchProcess { .. })
        ));
        assert!(matches!(
            check_pid(std::process::id()),
            Err(TargetError::SelfTrace { .. })
        ));
    }

    #[test]
    fn resolves_programs_like_a_shell() {
        assert!(resolve_program("sh").unwrap().is_absolute());
        assert!(matches!(
            resolve_program("no-such-program-muppy"),
            Err(TargetError::NotFound { .. })
        ));
        let plain = std::env::temp_dir().join(format!("muppy-not-exec-{}", std::process::id()));
        fs::write(&plain, "data").unwrap();
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
        let r = resolve_program(plain.to_str().unwrap());
        fs::remove_file(&plain).unwrap();
        assert!(matches!(r, Err(TargetError::NotExecutable { .. })), "{r:?}");
        assert!(matches!(
            resolve_program("/no/such/muppy"),
            Err(TargetError::NotFound { .. })
        ));
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(Exit::Code(3).shell_code(), 3);
        assert_eq!(Exit::Signal(9).shell_code(), 137);
        assert_eq!(
            Exit::Signal(9).to_string(),
            "was killed by signal 9 (SIGKILL)"
        );
    }
}
