//! The process being traced: checking a pid given to attach to, or starting a command with the
//! probes in place before its first instruction, and learning when and how it ends.

use std::{
    ffi::CString,
    fs,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::PermissionsExt},
    },
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    sys::{
        ptrace,
        signal::Signal,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::{ForkResult, Pid, fork},
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

/// Checks that `pid` is a live user-space process other than this one.
pub fn check_pid(pid: u32) -> Result<(), TargetError> {
    if pid == std::process::id() {
        return Err(TargetError::SelfTrace { pid });
    }
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if pid == 0 || !proc.join("stat").exists() {
        return Err(TargetError::NoSuchProcess { pid });
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

/// A forked child waiting, before exec, for the probes to be attached.
#[derive(Debug)]
pub struct Launched {
    /// The child's pid (unchanged by exec).
    pub pid: u32,
    program: String,
    go: OwnedFd,
    exec_err: OwnedFd,
}

fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd), TargetError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe2"))
}

/// Forks a child that will exec `path` with `argv` once [`Launched::release`] is called.
///
/// Call this while the process has a single thread: after fork the child only calls
/// async-signal-safe functions (read, execv, write, _exit).
pub fn spawn_paused(path: &Path, argv: &[String]) -> Result<Launched, TargetError> {
    let cstr = |s: &[u8]| {
        CString::new(s).map_err(|_| TargetError::NulInArgument {
            arg: String::from_utf8_lossy(s).into_owned(),
        })
    };
    let c_path = cstr(path.as_os_str().as_bytes())?;
    let c_argv = argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut c_ptrs: Vec<*const libc::c_char> = c_argv.iter().map(|a| a.as_ptr()).collect();
    c_ptrs.push(std::ptr::null());
    let (go_r, go_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    // SAFETY: the child below only makes async-signal-safe calls before exec or _exit.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            // SAFETY: raw syscalls on fds we own, and execv with NUL-terminated arrays built
            // before fork.
            unsafe {
                libc::close(go_w.as_raw_fd());
                libc::close(err_r.as_raw_fd());
                let mut b = 0u8;
                if libc::read(go_r.as_raw_fd(), (&raw mut b).cast(), 1) == 1 {
                    libc::execv(c_path.as_ptr(), c_ptrs.as_ptr());
                    let errno = *libc::__errno_location();
                    libc::write(err_w.as_raw_fd(), (&raw const errno).cast(), 4);
                }
                libc::_exit(127);
            }
        }
        ForkResult::Parent { child } => Ok(Launched {
            pid: u32::try_from(child.as_raw()).unwrap_or(0),
            program: argv.first().cloned().unwrap_or_default(),
            go: go_w,
            exec_err: err_r,
        }),
    }
}

impl Launched {
    /// Lets the child exec; returns once exec has succeeded, or with the reason it failed.
    pub fn release(self) -> Result<(), TargetError> {
        nix::unistd::write(&self.go, b"g").map_err(sys("write"))?;
        drop(self.go);
        let mut buf = [0u8; 4];
        // The error pipe is close-on-exec: EOF means exec succeeded.
        match nix::unistd::read(&self.exec_err, &mut buf) {
            Ok(4) => Err(TargetError::Exec {
                program: self.program,
                errno: Errno::from_raw(i32::from_ne_bytes(buf)),
            }),
            Ok(_) => Ok(()),
            Err(e) => Err(sys("read")(e)),
        }
    }
}

/// What happens to the processes [`follow`] watches, told while the process concerned is
/// held still: the handler runs before it goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeEvent {
    /// `parent` forked `child`, which has not run yet.
    Forked {
        /// The process that forked.
        parent: u32,
        /// The new process.
        child: u32,
    },
    /// The process has exec'd a new program, which has not run yet.
    Exec {
        /// The process.
        pid: u32,
    },
    /// The process is exiting; its mappings are still in place.
    Exiting {
        /// The process.
        pid: u32,
    },
    /// The process has ended.
    Exited {
        /// The process.
        pid: u32,
        /// How.
        exit: Exit,
    },
}

/// Which process [`follow`] starts with.
#[derive(Clone, Copy, Debug)]
pub enum Root {
    /// Our child, forked by [`spawn_paused`], single-threaded and not yet exec'd.
    Launched(u32),
    /// A running process: every one of its threads is seized.
    Running(u32),
}

fn tgid_of(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// Seizes every thread of `pid`, again until no new thread appears.
fn seize_all(pid: i32, options: ptrace::Options) -> Result<Vec<i32>, TargetError> {
    let mut seized = Vec::new();
    loop {
        let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|_| TargetError::NoSuchProcess { pid: pid as u32 })?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|t| !seized.contains(t))
            .collect();
        if tids.is_empty() {
            return Ok(seized);
        }
        for t in tids {
            match ptrace::seize(Pid::from_raw(t), options) {
                Ok(()) => seized.push(t),
                Err(Errno::ESRCH) => {} // the thread ended meanwhile
                Err(e) => return Err(sys("ptrace(SEIZE)")(e)),
            }
        }
    }
}

/// Follows a process with ptrace until it ends, so that it can be looked at while it is held
/// on its way out (its mappings still in place), and reports how it ended. With `children`,
/// its descendants are followed too: every fork, exec and exit is told to `on` while the
/// process concerned waits, so that probes can be placed before a new program's first
/// instruction.
///
/// Runs on a thread of its own: ptrace requests must come from the thread that seized the
/// tracees. `seized` is told once the root is seized.
pub fn follow(
    root: Root,
    children: bool,
    seized: impl FnOnce(Result<(), TargetError>),
    mut on: impl FnMut(TreeEvent),
) -> Result<Exit, TargetError> {
    let mut options = ptrace::Options::PTRACE_O_TRACEEXIT;
    if children {
        options |= ptrace::Options::PTRACE_O_TRACEFORK
            | ptrace::Options::PTRACE_O_TRACEVFORK
            | ptrace::Options::PTRACE_O_TRACECLONE
            | ptrace::Options::PTRACE_O_TRACEEXEC;
    }
    let (pid, res) = match root {
        Root::Launched(pid) => (
            pid,
            ptrace::seize(Pid::from_raw(pid as i32), options)
                .map(|()| vec![pid as i32])
                .map_err(sys("ptrace(SEIZE)")),
        ),
        Root::Running(pid) => (pid, seize_all(pid as i32, options)),
    };
    let root_pid = i32::try_from(pid).map_err(|_| TargetError::NoSuchProcess { pid })?;
    let (ok, mut known): (bool, std::collections::HashSet<i32>) = match &res {
        Ok(t) => (true, t.iter().copied().collect()),
        Err(_) => (false, Default::default()),
    };
    seized(res.map(|_| ()));
    if !ok {
        // Without ptrace the exit cannot be held, but our child can still be waited for.
        return wait_plain(Pid::from_raw(root_pid));
    }
    let mut leaders = std::collections::HashSet::from([root_pid]);
    // New tasks announced by their parent's event, and tasks that stopped before that.
    let mut announced = std::collections::HashSet::new();
    let mut early = std::collections::HashSet::new();
    loop {
        let status = match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(s) => s,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(sys("waitpid")(e)),
        };
        let (task, resume) = match status {
            WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _) => {
                let t = p.as_raw();
                known.remove(&t);
                if leaders.remove(&t) {
                    let exit = match status {
                        WaitStatus::Exited(_, code) => Exit::Code(code),
                        WaitStatus::Signaled(_, sig, _) => Exit::Signal(sig as i32),
                        _ => unreachable!("matched above"),
                    };
                    on(TreeEvent::Exited {
                        pid: t as u32,
                        exit,
                    });
                    if t == root_pid {
                        return Ok(exit);
                    }
                }
                continue;
            }
            WaitStatus::PtraceEvent(p, _, ev)
                if ev == libc::PTRACE_EVENT_FORK
                    || ev == libc::PTRACE_EVENT_VFORK
                    || ev == libc::PTRACE_EVENT_CLONE =>
            {
                if let Some(new) = ptrace::getevent(p).ok().and_then(|n| i32::try_from(n).ok()) {
                    known.insert(new);
                    // A clone without CLONE_THREAD is a process too.
                    if tgid_of(new) == Some(new) {
                        leaders.insert(new);
                        let parent = tgid_of(p.as_raw()).unwrap_or(p.as_raw());
                        on(TreeEvent::Forked {
                            parent: parent as u32,
                            child: new as u32,
                        });
                    }
                    if early.remove(&new) {
                        let _ = ptrace::cont(Pid::from_raw(new), None);
                    } else {
                        announced.insert(new);
                    }
                }
                (p, ptrace::cont(p, None))
            }
            WaitStatus::PtraceEvent(p, _, libc::PTRACE_EVENT_EXEC) => {
                // The exec'ing thread now has the process's pid; other threads are gone.
                on(TreeEvent::Exec {
                    pid: p.as_raw() as u32,
                });
                (p, ptrace::cont(p, None))
            }
            WaitStatus::PtraceEvent(p, _, libc::PTRACE_EVENT_EXIT) => {
                if leaders.contains(&p.as_raw()) {
                    on(TreeEvent::Exiting {
                        pid: p.as_raw() as u32,
                    });
                }
                (p, ptrace::cont(p, None))
            }
            WaitStatus::PtraceEvent(p, sig, libc::PTRACE_EVENT_STOP) => {
                let t = p.as_raw();
                if announced.remove(&t) {
                    // A new task's first stop: its probes are in place.
                    (p, ptrace::cont(p, None))
                } else if !known.contains(&t) {
                    // A new task stopped before its parent's event: hold it until then.
                    early.insert(t);
                    continue;
                } else if matches!(
                    sig,
                    Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
                ) {
                    // Group-stop: stay stopped, as without a tracer, until SIGCONT.
                    // SAFETY: PTRACE_LISTEN on our seized, stopped tracee.
                    let r = unsafe { libc::ptrace(libc::PTRACE_LISTEN, t, 0, 0) };
                    (p, if r < 0 { Err(Errno::last()) } else { Ok(()) })
                } else {
                    (p, ptrace::cont(p, None))
                }
            }
            // A signal on its way to the task: deliver it unchanged.
            WaitStatus::Stopped(p, sig) => (p, ptrace::cont(p, Some(sig))),
            WaitStatus::PtraceEvent(p, _, _) | WaitStatus::PtraceSyscall(p) => {
                (p, ptrace::cont(p, None))
            }
            WaitStatus::Continued(_) | WaitStatus::StillAlive => continue,
        };
        match resume {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                let _ = task;
                return Err(sys("ptrace(CONT)")(e));
            }
        }
    }
}

fn wait_plain(child: Pid) -> Result<Exit, TargetError> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Exit::Signal(sig as i32)),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(sys("waitpid")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
