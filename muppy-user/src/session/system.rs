//! System-wide tracing: finding the processes that start and end, and probing each allocator
//! once for every process.

use std::collections::{HashMap, HashSet};

use super::{Note, Session, TraceError};
use crate::{
    probe::{self, Scope},
    pump::Pump,
};

/// What system-wide tracing has looked at.
#[derive(Debug, Default)]
pub(super) struct SystemWide {
    /// Processes whose files were looked at.
    pub(super) scanned: HashSet<u32>,
    /// Files (device, inode) whose allocators were planned.
    pub(super) seen_files: HashSet<(u64, u64)>,
    /// Processes that were running when the session began (until they end).
    pub(super) preexisting: HashSet<u32>,
    /// Which processes get tables (`None`: all).
    pub(super) select: Option<Select>,
    /// Processes the selection refused, until they exec or end.
    pub(super) refused: HashSet<u32>,
    /// Per process, the exec events read since tracing began (the probes count the same: see
    /// [`crate::probe::Probes::refuse`]): which program a refusal is of, and which image each
    /// table is of ([`muppy_common::MapsSeen`]).
    pub(super) execs: HashMap<u32, u64>,
    /// Refusals the probes are to be told of: a process and which of its programs (its
    /// execs before it), or `None` to let its events through again.
    pub(super) to_tell: Vec<(u32, Option<u64>)>,
}

/// Which processes a system-wide session traces: those among `pids`, whose command name
/// matches `comm` and whose cgroup is `cgroup` or below it, as each starts (or execs).
#[derive(Clone, Debug, Default)]
pub struct Select {
    /// The command name (`comm`, as `ps -o comm` shows it).
    pub comm: Option<regex::Regex>,
    /// The cgroup v2 path (`/system.slice/nginx.service`), itself or below.
    pub cgroup: Option<String>,
    /// These processes only (the daemon's several `--pid`).
    pub pids: Option<HashSet<u32>>,
}

impl Select {
    /// Whether `pid`, named `comm`, is selected.
    fn admits(&self, pid: u32, comm: &str) -> bool {
        self.pids.as_ref().is_none_or(|p| p.contains(&pid))
            && self.comm.as_ref().is_none_or(|re| re.is_match(comm))
            && self.cgroup.as_ref().is_none_or(|want| {
                let want = want.trim_end_matches('/');
                std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|s| {
                    s.lines().filter_map(|l| l.strip_prefix("0::")).any(|path| {
                        path == want || path.starts_with(&format!("{want}/")) || want.is_empty()
                    })
                })
            })
    }
}

/// The processes running now (in `/proc`), but this one.
fn others_running() -> impl Iterator<Item = u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |&pid| pid != me)
}

impl SystemWide {
    /// With a selection, judges every process running now (before the probes are placed).
    pub(super) fn judge_running(&mut self) {
        if self.select.is_none() {
            return;
        }
        for pid in others_running() {
            self.admits(pid, None);
        }
    }

    /// Which image of `pid` the events applied so far are of: its execs applied since tracing
    /// began, as the probes count them in `EXECS` (see [`muppy_common::MapsSeen`]).
    pub(super) fn image(&self, pid: u32) -> u64 {
        self.execs.get(&pid).copied().unwrap_or(0)
    }

    /// Process `pid` exec'd (an exec event, in the ring's order).
    pub(super) fn execd(&mut self, pid: u32) {
        *self.execs.entry(pid).or_default() += 1;
    }

    /// Whether `pid` gets a table; a refusal holds until it execs or ends.
    pub(super) fn admits(&mut self, pid: u32, comm: Option<&str>) -> bool {
        let Some(select) = &self.select else {
            return true;
        };
        if comm.is_none() && self.refused.contains(&pid) {
            return false;
        }
        let read;
        let comm = match comm {
            Some(c) => c,
            None => {
                read = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
                // Gone already: judged by no name, and its exit is on its way.
                read.as_deref()
                    .map_or("", |s| s.strip_suffix('\n').unwrap_or(s))
            }
        };
        let ok = select.admits(pid, comm);
        if ok {
            if self.refused.remove(&pid) {
                self.to_tell.push((pid, None));
            }
        } else {
            self.refused.insert(pid);
            self.to_tell.push((pid, Some(self.image(pid))));
        }
        ok
    }

    /// Process `pid` exited: the probes forgot its refusal themselves, and one told after
    /// its exit must not outlive it.
    pub(super) fn exited(&mut self, pid: u32) {
        self.preexisting.remove(&pid);
        // A pid given is that process's: one that reuses it is another.
        if let Some(pids) = self.select.as_mut().and_then(|s| s.pids.as_mut()) {
            pids.remove(&pid);
        }
        self.execs.remove(&pid);
        self.to_tell.retain(|&(p, _)| p != pid);
        if self.refused.remove(&pid) {
            self.to_tell.push((pid, None));
        }
    }

    /// Forgets a process that ended (its pid may be reused).
    pub(super) fn forget(&mut self, pid: u32) {
        self.scanned.remove(&pid);
        self.preexisting.remove(&pid);
    }
}

impl Session<'_> {
    /// Ends the processes that are gone (their exit was not seen).
    pub(super) fn reap(&mut self, pump: &mut Pump) -> Result<(), TraceError> {
        let gone: Vec<u32> = self
            .live
            .keys()
            .copied()
            .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        self.drain(pump, true)?;
        for pid in gone {
            // Its pid may be reused, by a process that exec'd no time yet.
            self.system.exited(pid);
            if let Some(mut p) = self.live.remove(&pid) {
                p.end = Some(muppy_core::model::End::Gone);
                self.finish(p)?;
            }
        }
        Ok(())
    }

    /// Probes the allocators of processes started since the last look.
    pub(super) fn discover(&mut self) -> Result<(), TraceError> {
        for pid in others_running() {
            self.discover_pid(pid)?;
        }
        Ok(())
    }

    /// Probes `pid`'s allocator in every process, if it is not probed yet. A process is looked
    /// at once, and its files are read only if some are new to the session. Only system-wide.
    pub(super) fn discover_pid(&mut self, pid: u32) -> Result<(), TraceError> {
        use std::os::unix::fs::MetadataExt as _;
        if self.kind != super::Kind::System || !self.system.scanned.insert(pid) {
            return Ok(());
        }
        let Ok(c) = probe::candidates_of_pid(pid) else {
            return Ok(());
        };
        let ids: Vec<(u64, u64)> = std::iter::once(&c.exe)
            .chain(&c.libs)
            .filter_map(|p| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino())))
            .collect();
        if !ids.is_empty() && ids.iter().all(|id| self.system.seen_files.contains(id)) {
            return Ok(());
        }
        let Ok(plan) = probe::plan(&c, None) else {
            return Ok(());
        };
        // Only files whose plan was made count as seen: another process may still plan them.
        self.system.seen_files.extend(ids);
        let probed = |s: &Self| s.attached.get(&Scope::All).map_or(0, HashSet::len);
        let before = probed(self);
        if let Err(e) = self.attach(None, &plan) {
            self.note(Note::PlanFailed {
                what: plan.describe(),
                why: e.to_string(),
            })?;
        }
        // Its allocator was probed only now: what it allocated before is not in its table.
        if probed(self) > before
            && let Some(p) = self.live.get_mut(&pid)
        {
            p.whole = false;
        }
        Ok(())
    }
}
