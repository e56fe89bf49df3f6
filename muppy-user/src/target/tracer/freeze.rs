//! Freezing a process: every thread stopped (threads created meanwhile caught by listing
//! `/proc/PID/task` until a pass finds none new), its registers read, and later every thread
//! let go exactly as it was.

use nix::{errno::Errno, sys::ptrace, unistd::Pid};

use super::*;

/// A thread's general-purpose registers, as `PTRACE_GETREGS` gives them.
#[derive(Clone, Copy)]
pub struct Registers(pub libc::user_regs_struct);

impl Registers {
    /// The stack pointer.
    pub fn sp(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        return self.0.rsp;
        #[cfg(target_arch = "aarch64")]
        return self.0.sp;
    }

    /// The instruction pointer.
    pub fn pc(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        return self.0.rip;
        #[cfg(target_arch = "aarch64")]
        return self.0.pc;
    }
}

impl std::fmt::Debug for Registers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registers")
            .field("pc", &format_args!("{:#x}", self.pc()))
            .field("sp", &format_args!("{:#x}", self.sp()))
            .finish_non_exhaustive()
    }
}

/// One stopped thread of a frozen process.
#[derive(Clone, Debug)]
pub struct FrozenThread {
    /// Its thread id.
    pub tid: u32,
    /// Its registers where it stopped.
    pub regs: Registers,
    /// A signal it was about to take when it stopped; it takes it once resumed.
    pub pending_signal: Option<i32>,
}

/// Every thread of a process, stopped.
#[derive(Clone, Debug)]
pub struct Frozen {
    /// The process.
    pub pid: u32,
    /// Its threads, by thread id.
    pub threads: Vec<FrozenThread>,
    /// How many times `/proc/PID/task` was listed before a pass found no new thread.
    pub passes: u32,
}

impl Core<'_> {
    pub(super) fn freeze(&mut self, pid: u32) -> Result<Frozen, TargetError> {
        check_pid(pid)?;
        let p = i32::try_from(pid).map_err(|_| TargetError::NoSuchProcess { pid })?;
        if self.frozen.contains_key(&p) {
            return Err(TargetError::AlreadyFrozen { pid });
        }
        self.frozen.insert(p, Vec::new());
        self.freezing = true;
        let r = self.stop_all(pid, p);
        self.freezing = false;
        match r {
            Ok(f) => Ok(f),
            Err(e) => {
                let _ = self.thaw(p);
                Err(e)
            }
        }
    }

    fn stop_all(&mut self, pid: u32, p: i32) -> Result<Frozen, TargetError> {
        let mut passes = 0;
        loop {
            passes += 1;
            let mut new = false;
            for t in list_tasks(p)? {
                if self.tasks.get(&t).is_some_and(|task| task.frozen) {
                    continue;
                }
                if let Some(task) = self.tasks.get_mut(&t) {
                    // Followed already: interrupt it unless it is in a stop.
                    task.frozen = true;
                    if task.stop.is_none() {
                        interrupt(t)?;
                    }
                } else if tracer_of(t) == Some(std::process::id()) {
                    // A followed task's new thread, attached by the kernel, whose first stop
                    // (and its parent's event) are still to come.
                    let mut task = Task::new(p, true);
                    task.frozen = true;
                    task.first_stop_pending = true;
                    self.tasks.insert(t, task);
                } else {
                    if let Some(tracer) = tracer_of(t) {
                        return Err(TargetError::TracedByOther {
                            pid,
                            tid: t as u32,
                            tracer,
                        });
                    }
                    match ptrace::seize(Pid::from_raw(t), ptrace::Options::empty()) {
                        Ok(()) => {}
                        Err(Errno::ESRCH) => continue, // it ended meanwhile
                        Err(Errno::EPERM) if ended(t) => continue,
                        Err(e) => {
                            return Err(match tracer_of(t) {
                                Some(tracer) => TargetError::TracedByOther {
                                    pid,
                                    tid: t as u32,
                                    tracer,
                                },
                                None => sys("ptrace(SEIZE)")(e),
                            });
                        }
                    }
                    let mut task = Task::new(p, false);
                    task.frozen = true;
                    self.tasks.insert(t, task);
                    interrupt(t)?;
                }
                if let Some(tids) = self.frozen.get_mut(&p) {
                    tids.push(t);
                }
                new = true;
            }
            // Wait until each is in a stop (or gone); what else comes meanwhile is handled, and
            // requests wait their turn.
            while self.frozen.get(&p).is_some_and(|tids| {
                tids.iter()
                    .any(|t| self.tasks.get(t).is_some_and(|task| task.stop.is_none()))
            }) {
                self.wait_once()?;
            }
            if !new {
                break;
            }
        }
        let mut tids: Vec<i32> = self.frozen.get(&p).cloned().unwrap_or_default();
        tids.retain(|t| self.tasks.contains_key(t));
        tids.sort_unstable();
        if tids.is_empty() {
            return Err(TargetError::NoSuchProcess { pid });
        }
        let mut threads = Vec::with_capacity(tids.len());
        for t in tids {
            let regs = match ptrace::getregs(Pid::from_raw(t)) {
                Ok(r) => Registers(r),
                // Killed while stopped (SIGKILL wakes a stopped tracee).
                Err(Errno::ESRCH) => continue,
                Err(e) => return Err(sys("ptrace(GETREGS)")(e)),
            };
            let pending_signal = match self.tasks.get(&t).and_then(|task| task.stop) {
                Some(Stop::Signal(s)) => Some(s as i32),
                _ => None,
            };
            threads.push(FrozenThread {
                tid: t as u32,
                regs,
                pending_signal,
            });
        }
        Ok(Frozen {
            pid,
            threads,
            passes,
        })
    }

    /// Lets the tasks of a frozen process go on as they were.
    pub(super) fn thaw(&mut self, p: i32) -> Result<(), TargetError> {
        let tids = self.frozen.remove(&p).unwrap_or_default();
        let mut first_err = None;
        for t in tids {
            if let Some(task) = self.tasks.get_mut(&t) {
                task.frozen = false;
                // Seized for the freeze but never stopped (the freeze failed): let go now.
                if !task.followed && task.stop.is_none() {
                    let _ = interrupt(t);
                    // It cannot be detached until it stops; wait for that stop.
                    self.freezing = true;
                    while self.tasks.get(&t).is_some_and(|task| task.stop.is_none()) {
                        if self.wait_once().is_err() {
                            break;
                        }
                    }
                    self.freezing = false;
                }
            }
            if let Err(e) = self.settle(t) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub(super) fn thaw_all(&mut self) {
        let pids: Vec<i32> = self.frozen.keys().copied().collect();
        for p in pids {
            let _ = self.thaw(p);
        }
    }
}
