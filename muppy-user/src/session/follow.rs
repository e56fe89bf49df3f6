//! The session's side of the ptrace thread: the events it reports about followed processes,
//! handled while the process concerned waits, and the watch on the target's end.

use std::path::PathBuf;

use muppy_core::model::{End, Exit};
use tokio::{io::unix::AsyncFd, sync::oneshot};

use super::{Note, Session, TraceError, io};
use crate::{
    probe::{self, ProbeError, ProbePlan},
    process::Process,
    pump::Pump,
    target::{Release, Root, TargetError, Tracer, TreeEvent},
};

/// How the session learns that the target ended.
pub(super) enum ExitWatch {
    /// A running process's pidfd.
    Pidfd(AsyncFd<std::os::fd::OwnedFd>),
    /// The ptrace thread's report of the root's end.
    Child(oneshot::Receiver<Result<Exit, TargetError>>),
    /// System-wide: no one process ends the session.
    Never,
}

impl ExitWatch {
    pub(super) async fn wait(&mut self) -> Result<Option<Exit>, TraceError> {
        match self {
            ExitWatch::Pidfd(fd) => {
                let _guard = fd.readable().await.map_err(io("waiting for the target"))?;
                Ok(None)
            }
            ExitWatch::Child(rx) => match rx.await {
                Ok(r) => Ok(Some(r?)),
                Err(_) => Ok(None),
            },
            ExitWatch::Never => std::future::pending().await,
        }
    }
}

/// A request from the ptrace thread: an event about a followed process, handled while that
/// process waits; dropping `done` lets it go on.
pub(super) struct Request {
    pub(super) event: TreeEvent,
    pub(super) done: Release,
}

/// The ptrace thread's report of the root's end, and its handle (freeze, read, resume) if
/// seizing the root worked.
type Follower = (
    oneshot::Receiver<Result<Exit, TargetError>>,
    Result<Tracer, TargetError>,
);

/// Starts the ptrace thread that follows `root` (and its children with `children`), sending
/// each event to the session, the process concerned held until the session drops the
/// request's release.
pub(super) fn start(
    root: Root,
    children: bool,
    requests: tokio::sync::mpsc::UnboundedSender<Request>,
) -> Follower {
    let (exit_tx, exit_rx) = oneshot::channel();
    let tracer = Tracer::start(
        Some(root),
        children,
        // A request the session no longer takes is dropped, and its release with it.
        move |event, done| drop(requests.send(Request { event, done })),
        move |r| drop(exit_tx.send(r)),
    );
    (exit_rx, tracer)
}

impl Session<'_> {
    /// What a process that just exec'd will use, from its new executable, seen from inside
    /// its root, with its own loader environment.
    pub(super) fn resolve(&self, pid: u32) -> Result<ProbePlan, ProbeError> {
        let exe =
            std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|source| ProbeError::Read {
                path: format!("/proc/{pid}/exe"),
                source,
            })?;
        let env = probe::loader_env(pid);
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        probe::plan(
            &probe::candidates_in_root(&probe::inner_path(pid, &exe), &root, &env)?,
            self.allocator.as_deref(),
        )
    }

    /// Handles what the ptrace thread saw, while the process concerned waits.
    pub(super) fn handle(&mut self, event: TreeEvent, pump: &mut Pump) -> Result<(), TraceError> {
        // The old image's mappings, gone with its exec: known before its last events are
        // drained and named.
        if let TreeEvent::OldImage { pid, mappings } = &event
            && let Some(p) = self.live.get_mut(pid)
        {
            p.modules.add(mappings.clone());
        }
        self.drain(pump, true)?;
        match event {
            TreeEvent::OldImage { .. } => {} // handled above
            TreeEvent::Forked { parent, child } => {
                let plan = self.live.get(&parent).and_then(|p| p.plan.clone());
                if let Some(plan) = &plan
                    && let Err(e) = self.attach(Some(child), plan)
                {
                    self.note(Note::NotTraced {
                        pid: child,
                        exe: None,
                        why: e.to_string(),
                    })?;
                }
                let traced = plan.is_some();
                self.live
                    .insert(child, Process::new(child, Some(parent), plan));
                if traced {
                    self.plan_stacks(child)?;
                }
            }
            TreeEvent::Exec { pid } => {
                if Some(pid) == self.root && self.root_exec_pending {
                    self.root_exec_pending = false;
                    return Ok(());
                }
                let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let parent = self.live.get(&pid).and_then(|p| p.parent);
                if let Some(mut old) = self.live.remove(&pid) {
                    old.end = Some(End::Exec(exe.clone()));
                    self.finish(old)?;
                }
                let plan = self
                    .resolve(pid)
                    .and_then(|plan| self.attach(Some(pid), &plan).map(|()| plan));
                let plan = match plan {
                    Ok(plan) => Some(plan),
                    Err(e) => {
                        self.note(Note::NotTraced {
                            pid,
                            exe: Some(exe),
                            why: e.to_string(),
                        })?;
                        None
                    }
                };
                let traced = plan.is_some();
                let mut p = Process::new(pid, parent, plan);
                if Some(pid) == self.root && self.check.is_some() {
                    p.table.track_freed();
                }
                self.live.insert(pid, p);
                // After the table has read the new program's mappings (see `start`).
                if traced {
                    self.plan_stacks(pid)?;
                }
            }
            TreeEvent::ExitCalled { pid } => {
                // Every thread still alive, as Valgrind's check at exit and LeakSanitizer's
                // (from an atexit handler) see it; the Exiting check below then has nothing
                // left to do.
                if Some(pid) == self.root
                    && let Some(spec) = self.check.clone()
                {
                    if let Some(p) = self.live.get_mut(&pid) {
                        let _ = p.modules.refresh();
                    }
                    let two_checks = self.checks.two_checks;
                    self.check(pump, &spec, two_checks)?;
                    self.checks.done = true;
                }
            }
            TreeEvent::Exiting { pid } => {
                if let Some(p) = self.live.get_mut(&pid) {
                    let _ = p.modules.refresh();
                }
                // Its memory is still there, as LeakSanitizer's check at exit sees it.
                if Some(pid) == self.root
                    && let Some(spec) = self.check.clone()
                {
                    let two_checks = self.checks.two_checks;
                    self.check(pump, &spec, two_checks)?;
                    self.checks.done = true;
                }
            }
            TreeEvent::Exited { pid, exit } => {
                if let Some(mut p) = self.live.remove(&pid) {
                    p.end = Some(End::Exit(exit));
                    self.finish(p)?;
                }
                self.probes.map_pid(pid, false);
                self.probes.follow_pid(pid, false);
            }
        }
        Ok(())
    }
}
