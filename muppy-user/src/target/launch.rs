//! Starting a command paused before exec, so that its probes are in place before its first
//! instruction.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use nix::{
    errno::Errno,
    unistd::{ForkResult, fork},
};

use super::{TargetError, sys};

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
