//! The session's leak checks and referrer searches: when they run (each tick, the end, a
//! launched command's exit while its memory is still there) and how the target is stopped
//! and let go around the copy.

use std::time::Instant;

use muppy_core::{
    analysis::{self, GroupBy, RefReport},
    model::{Block, CheckFacts, Filter},
};
use regex::Regex;

use super::{Note, Session, SessionEvent, TraceError, monotonic_ns};
use crate::{
    check::{self, Capture, LostBefore, Scan},
    pump::Pump,
};

/// What a session checks in its root process.
#[derive(Clone, Debug)]
pub enum CheckSpec {
    /// `leaks`: classify every block as Valgrind does.
    Leaks {
        /// The blocks reported.
        filter: Filter,
        /// What the rows are.
        group_by: GroupBy,
        /// Show why each reachable row is kept.
        retention: bool,
    },
    /// `refs`: who points at the selected blocks.
    Refs {
        /// The block at this address.
        addr: Option<u64>,
        /// Or the blocks whose call path matches.
        site: Option<Regex>,
        /// Levels of referrers.
        maxdepth: usize,
        /// Root referrers shown per block.
        max_roots: usize,
        /// Blocks shown with `site`, at most.
        top: usize,
    },
}

/// A check a sink asks for ([`super::Sink::request`]): of process `pid` (system-wide), or of
/// the root (`None`).
#[derive(Clone, Debug)]
pub struct Asked {
    /// The process, system-wide; `None` for the root.
    pub pid: Option<u32>,
    /// What to check.
    pub spec: CheckSpec,
}

/// Why a `refs --addr` found no block.
#[derive(Debug, thiserror::Error)]
pub enum RefsError {
    /// The address is in no live block.
    #[error("{addr:#x} is not a live block; `muppy-trace objects` lists the live blocks")]
    NoBlock {
        /// The address.
        addr: u64,
    },
    /// The address is inside a live block.
    #[error(
        "{addr:#x} is inside the live block {block:#x} ({size} bytes, allocated at {site}), at +{:#x}; give that block's address",
        addr - block
    )]
    Inside {
        /// The address.
        addr: u64,
        /// The block.
        block: u64,
        /// Its size.
        size: u64,
        /// Its site.
        site: String,
    },
}

/// What the checks of a session remember.
#[derive(Debug, Default)]
pub(super) struct Checks {
    /// Checks made.
    pub made: u32,
    /// Periodic checks: lost blocks must be lost at two checks in a row.
    pub two_checks: bool,
    /// Lost blocks at the last check.
    pub lost: LostBefore,
    /// The root's memory is gone: checked at its exit already, or it ended unchecked.
    pub done: bool,
    /// The last check, for `--save`.
    pub last: Option<LastCheck>,
}

/// What the last check found, kept for `--save`.
#[derive(Debug)]
pub(super) struct LastCheck {
    /// The process.
    pub pid: u32,
    /// Its blocks with their verdicts.
    pub blocks: Vec<(u64, Block)>,
    /// The check.
    pub facts: CheckFacts,
}

/// A check's stages, as [`SessionEvent::Progress`] counts them.
const CHECK_STEPS: u32 = 3;

impl Session<'_> {
    /// Makes the check of `spec` on the root process now: stops it, applies every event sent
    /// so far, copies its memory, lets it go, and reports. `two_checks`: lost blocks must be
    /// lost at two checks in a row. A check that cannot be made (the target is gone) is said
    /// and skipped.
    pub(super) fn check(
        &mut self,
        pump: &mut Pump,
        spec: &CheckSpec,
        two_checks: bool,
    ) -> Result<(), TraceError> {
        let Some(pid) = self.root else { return Ok(()) };
        if self.checks.done {
            return Ok(());
        }
        self.check_pid(pump, spec, two_checks, pid)
    }

    /// Makes the check of `spec` on process `pid` (the root, or any system-wide).
    pub(super) fn check_pid(
        &mut self,
        pump: &mut Pump,
        spec: &CheckSpec,
        two_checks: bool,
        pid: u32,
    ) -> Result<(), TraceError> {
        let r = self.check_stages(pump, spec, two_checks, pid);
        self.progress("leak check", CHECK_STEPS)?;
        r
    }

    /// A check's stage: the sink may show how far it is.
    fn progress(&mut self, what: &'static str, step: u32) -> Result<(), TraceError> {
        self.emit(SessionEvent::Progress {
            what,
            step,
            steps: CHECK_STEPS,
        })
    }

    fn check_stages(
        &mut self,
        pump: &mut Pump,
        spec: &CheckSpec,
        two_checks: bool,
        pid: u32,
    ) -> Result<(), TraceError> {
        let Some(tracer) = self.tracer.take() else {
            return self.note(Note::CheckFailed {
                why: "the ptrace thread is not running".into(),
            });
        };
        // Made before the pause: faulting the copy's pages in would be most of it. (Counted
        // in the check's time, not in the pause.)
        let started = Instant::now();
        self.progress("leak check: making room for the copy", 0)?;
        let mut buffers = check::prepare(pid).unwrap_or_default();
        self.progress("leak check: stopping the target and copying its memory", 1)?;
        let stopped = Instant::now();
        let captured = match tracer.freeze(pid) {
            Ok(frozen) => {
                // The table must equal memory: every completed call is in the ring by now.
                let drained = self.drain(pump, true);
                let cap = check::capture(pid, frozen.threads, &mut buffers);
                let resumed = tracer.resume(pid);
                let pause = stopped.elapsed();
                drop(buffers);
                self.tracer = Some(tracer);
                drained?;
                match (cap, resumed) {
                    (Ok(c), Ok(())) => Ok((c, pause)),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
            Err(e) => {
                self.tracer = Some(tracer);
                Err(e)
            }
        };
        let (cap, pause) = match captured {
            Ok(c) => c,
            Err(e) => {
                if !self.live.contains_key(&pid) || crate::target::check_pid(pid).is_err() {
                    // The root's memory is gone for good; another process was just one.
                    self.checks.done |= self.root == Some(pid);
                    return self.note(Note::CheckFailed {
                        why: format!("pid {pid} exited before its memory could be read"),
                    });
                }
                return self.note(Note::CheckFailed { why: e.to_string() });
            }
        };
        self.checks.made += 1;
        let made = self.checks.made;
        self.progress("leak check: following pointers", 2)?;
        match spec {
            CheckSpec::Leaks {
                filter,
                group_by,
                retention,
            } => self.report_leaks(
                pid,
                &cap,
                made,
                two_checks,
                (pause, started),
                filter,
                *group_by,
                *retention,
            ),
            CheckSpec::Refs {
                addr,
                site,
                maxdepth,
                max_roots,
                top,
            } => {
                let facts = CheckFacts {
                    check: made,
                    pause,
                    took: started.elapsed(),
                    threads: u32::try_from(cap.threads.len()).unwrap_or(u32::MAX),
                    ..CheckFacts::default()
                };
                self.report_refs(
                    pid,
                    &cap,
                    facts,
                    *addr,
                    site.as_ref(),
                    *maxdepth,
                    *max_roots,
                    *top,
                )
            }
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one check's settings, passed on once"
    )]
    fn report_leaks(
        &mut self,
        root: u32,
        cap: &Capture,
        made: u32,
        two_checks: bool,
        (pause, started): (std::time::Duration, Instant),
        filter: &Filter,
        group_by: GroupBy,
        retention: bool,
    ) -> Result<(), TraceError> {
        let (now, base) = (monotonic_ns(), self.base_counters());
        let Some(p) = self.live.get_mut(&root) else {
            return Ok(());
        };
        let scan = Scan::new(cap, p);
        let v = scan.classify();
        let blocks = check::verdicts(&scan, &v, two_checks, &mut self.checks.lost);
        let facts = check::facts(&scan, &v, made, two_checks, pause, started.elapsed());
        let paths = retention.then(|| check::retention_by_addr(&scan, &v));
        let p = &self.live[&root];
        let heap = muppy_core::model::Heap {
            blocks: &blocks,
            ..p.heap(now, p.counters(base), self.sample_bytes)
        };
        let report = analysis::leak_report(
            &heap,
            filter,
            group_by,
            facts,
            paths
                .as_ref()
                .map(|f| f as &dyn Fn(u64) -> Vec<analysis::Step>),
        );
        drop(paths);
        self.checks.last = Some(LastCheck {
            pid: root,
            blocks,
            facts,
        });
        self.emit(SessionEvent::Leaks(report))
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one search's settings, passed on once"
    )]
    fn report_refs(
        &mut self,
        root: u32,
        cap: &Capture,
        facts: CheckFacts,
        addr: Option<u64>,
        site: Option<&Regex>,
        maxdepth: usize,
        max_roots: usize,
        top: usize,
    ) -> Result<(), TraceError> {
        let Some(p) = self.live.get_mut(&root) else {
            return Ok(());
        };
        let scan = Scan::new(cap, p);
        let selected: Vec<usize> = match addr {
            Some(a) => match scan.block_at(a) {
                Ok(i) => vec![i],
                Err(None) => return Err(TraceError::Refs(RefsError::NoBlock { addr: a })),
                Err(Some((block, b))) => {
                    let site = p
                        .traces
                        .get(b.trace as usize)
                        .map(|t| t.site().name().to_string())
                        .unwrap_or_default();
                    return Err(TraceError::Refs(RefsError::Inside {
                        addr: a,
                        block,
                        size: b.size,
                        site,
                    }));
                }
            },
            None => {
                let traces = Filter {
                    site: site.cloned(),
                    ..Filter::default()
                }
                .traces(&p.traces);
                scan.blocks
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, b))| traces.get(b.trace as usize).copied().unwrap_or(false))
                    .map(|(i, _)| i)
                    .take(top)
                    .collect()
            }
        };
        if selected.is_empty() {
            return self.note(Note::NoBlockSelected);
        }
        let reports: Vec<RefReport> = scan
            .referrers(&selected, maxdepth, max_roots)
            .into_iter()
            .map(|tree| RefReport {
                pid: root,
                tree,
                facts,
            })
            .collect();
        for r in reports {
            self.emit(SessionEvent::Referrers(r))?;
        }
        Ok(())
    }
}
