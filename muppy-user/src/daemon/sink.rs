//! The daemon's sink: at each tick, copies the traced heaps into the shared state for the API
//! and writes the log's diffs when they are due; hands the session the checks clients asked
//! for, and their answers back.

use std::{
    collections::HashMap,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use muppy_core::{
    analysis::{self, GroupBy, RefReport, Summary},
    snapshot::Snapshot,
};

use super::{
    log::Log,
    store::{CheckAnswer, ENDED_BLOCKS_KEPT, Image, Shared, unix_ms},
};
use crate::session::{Asked, CheckSpec, Note, SessionEvent, Sink, SinkError};

/// A process that ends having applied fewer events than this keeps a copy of its heap for
/// queries (fewer events than blocks is impossible, so its copy is at most this large).
const ENDED_COPY_EVENTS: u64 = (ENDED_BLOCKS_KEPT / 16) as u64;

/// How often a changing process's summary is made again (a client that waits for its heap
/// gets a new one at the next tick).
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// Where the daemon's notes go: the binary prints them.
pub type Notes = Box<dyn FnMut(&dyn std::fmt::Display) + Send>;

/// What a tick does for one process.
#[derive(Clone, Copy)]
enum Work {
    /// Nothing: its image shows it.
    Keep,
    /// Its table changed; its summary waits for the next round, its copy is dropped.
    Stale,
    /// A client waits for its heap, which did not change: copy it.
    Copy,
    /// A new image, with its heap copied if a client waits for it.
    Image(bool),
}

/// What a tick made for one process, outside the lock, to put in the state.
enum Made {
    /// Nothing to change.
    Nothing,
    /// Its copy no longer shows it.
    Stale(u32),
    /// A copy of its heap.
    Copy(u32, Arc<Snapshot>),
    /// A new image.
    Image(Box<Image>),
}

/// The daemon's sink.
pub struct DaemonSink {
    /// What the API reads.
    pub shared: Shared,
    /// What is traced, for the snapshots' label.
    pub label: String,
    /// The diff log, if one is kept.
    pub log: Option<Log>,
    /// How often the log gets a record.
    pub log_every: Duration,
    /// Where notes go (the binary prints them).
    pub notes: Notes,
    /// Per pid, the summary the log's last record showed.
    logged: HashMap<u32, Summary>,
    /// When the log's last record was written.
    last_log: Instant,
    /// When the changed processes' summaries were last made.
    last_summaries: Instant,
    /// The check under way: where its answer goes, and the referrers found so far.
    asked: Option<(mpsc::Sender<CheckAnswer>, Vec<RefReport>)>,
    /// Leak checks on a schedule (`--check-every`): how often, when the last was asked for,
    /// and where the one under way answers.
    check_every: Option<Duration>,
    last_check: Instant,
    scheduled: Option<mpsc::Receiver<CheckAnswer>>,
}

impl DaemonSink {
    /// A sink into `shared`.
    pub fn new(
        shared: Shared,
        label: String,
        log: Option<Log>,
        log_every: Duration,
        notes: Notes,
    ) -> Self {
        DaemonSink {
            shared,
            label,
            log,
            log_every,
            notes,
            logged: HashMap::new(),
            last_log: Instant::now(),
            last_summaries: Instant::now(),
            asked: None,
            check_every: None,
            last_check: Instant::now(),
            scheduled: None,
        }
    }

    /// Makes a leak check every `every`, its report written to the log.
    pub fn check_every(&mut self, every: Duration) {
        self.check_every = Some(every);
    }

    /// Logs the scheduled check's answer, once it came.
    fn log_scheduled(&mut self) -> Result<(), SinkError> {
        let Some(answer) = self.scheduled.as_ref().and_then(|rx| rx.try_recv().ok()) else {
            return Ok(());
        };
        self.scheduled = None;
        match answer {
            CheckAnswer::Leaks(r) => {
                if let Some(log) = &mut self.log {
                    log.leaks(&r)?;
                }
            }
            CheckAnswer::Failed(why) => (self.notes)(&format!("scheduled leak check: {why}")),
            CheckAnswer::Referrers(_) => {}
        }
        Ok(())
    }

    /// Answers the check under way, with the referrers it found if nothing else answered it.
    fn answer_asked(&mut self) {
        if let Some((reply, refs)) = self.asked.take() {
            let answer = if refs.is_empty() {
                CheckAnswer::Failed("the check found nothing to report".into())
            } else {
                CheckAnswer::Referrers(refs)
            };
            let _ = reply.send(answer);
        }
    }

    fn answer(&mut self, a: CheckAnswer) {
        if let Some((reply, _)) = self.asked.take() {
            let _ = reply.send(a);
        }
    }

    /// Takes the tick's processes in: a process whose table changed gets a new summary (at
    /// most every [`SUMMARY_EVERY`], unless a client waits for it), and the heaps clients
    /// asked for are copied. The work is done outside the lock, so that answers go on.
    fn tick(&mut self, procs: &[muppy_core::report::ProcView], last: bool) {
        let due = last || self.last_summaries.elapsed() >= SUMMARY_EVERY;
        if due {
            self.last_summaries = Instant::now();
        }
        let work: Vec<Work> = {
            let st = self.shared.lock();
            procs
                .iter()
                .map(|p| {
                    let pid = p.id.pid;
                    let wanted = st.wants.iter().any(|(w, _)| *w == pid);
                    match st.live.get(&pid) {
                        Some(img) if img.shows(p) => match (wanted, &img.snap) {
                            (true, None) => Work::Copy,
                            _ => Work::Keep,
                        },
                        Some(_) if !due && !wanted => Work::Stale,
                        _ => Work::Image(wanted),
                    }
                })
                .collect()
        };
        let label = &self.label;
        let made: Vec<Made> = procs
            .iter()
            .zip(work)
            .map(|(p, w)| match w {
                Work::Keep => Made::Nothing,
                Work::Stale => Made::Stale(p.id.pid),
                Work::Copy => Made::Copy(p.id.pid, Arc::new(Snapshot::of(&p.heap, label))),
                Work::Image(copy) => Made::Image(Box::new(Image::of(p, label, copy))),
            })
            .collect();
        let now = unix_ms();
        let mut st = self.shared.lock();
        for m in made {
            match m {
                Made::Nothing => {}
                Made::Image(img) => {
                    st.live.insert(img.id.pid, *img);
                }
                Made::Copy(pid, copy) => {
                    if let Some(img) = st.live.get_mut(&pid) {
                        img.snap = Some(copy);
                        img.as_of_ms = now;
                    }
                }
                // Its copy, if any, no longer shows it; its summary is as of `as_of_ms`.
                Made::Stale(pid) => {
                    if let Some(img) = st.live.get_mut(&pid) {
                        img.snap = None;
                    }
                }
            }
        }
        // Images no longer live that did not end through `Ended`.
        let gone: Vec<u32> = st
            .live
            .keys()
            .copied()
            .filter(|pid| !procs.iter().any(|p| p.id.pid == *pid))
            .collect();
        for pid in gone {
            if let Some(img) = st.live.remove(&pid) {
                st.end(img);
            }
        }
        // Every client waiting gets its copy, or an end to its wait.
        for (pid, tx) in std::mem::take(&mut st.wants) {
            if let Some(img) = st.live.get(&pid).filter(|i| i.snap.is_some()) {
                let _ = tx.send(img.clone());
            }
        }
        if let Some(c) = procs.first().map(|p| p.heap.counters) {
            note_lost(&mut st, &c);
        }
        st.ticks += 1;
        st.last_tick_ms = now;
    }

    /// The log's record: the diff of every process that changed since the last one.
    fn log_diffs(&mut self, force: bool) -> Result<(), SinkError> {
        let Some(log) = &mut self.log else {
            return Ok(());
        };
        if !force && self.last_log.elapsed() < self.log_every {
            return Ok(());
        }
        self.last_log = Instant::now();
        let images: Vec<Image> = self.shared.lock().live.values().cloned().collect();
        let mut diffs = Vec::new();
        for img in &images {
            let cur = Summary::clone(&img.by_site);
            let old = self.logged.remove(&img.id.pid).unwrap_or_else(|| Summary {
                pid: img.id.pid,
                group_by: GroupBy::Site,
                ..Summary::default()
            });
            let d = analysis::diff(&old, &cur);
            self.logged.insert(img.id.pid, cur);
            if !d.rows.is_empty() {
                diffs.push((d, img.id.clone()));
            }
        }
        self.logged
            .retain(|pid, _| images.iter().any(|i| i.id.pid == *pid));
        // A record says what changed; a quiet machine's log stays quiet.
        if !diffs.is_empty() {
            log.diffs(&diffs)?;
        }
        Ok(())
    }
}

impl Sink for DaemonSink {
    fn event(&mut self, ev: SessionEvent<'_>) -> Result<(), SinkError> {
        match ev {
            SessionEvent::Note(mut n) => {
                match &mut n {
                    Note::Tracing { until_ctrl_c, .. } => {
                        // A daemon stops on SIGTERM (systemctl stop).
                        *until_ctrl_c = false;
                        super::notify_ready();
                    }
                    Note::CheckFailed { why } => {
                        self.answer(CheckAnswer::Failed(why.clone()));
                    }
                    Note::NoBlockSelected => {
                        self.answer(CheckAnswer::Failed(n.to_string()));
                    }
                    _ => {}
                }
                (self.notes)(&n);
            }
            SessionEvent::Tick { procs, .. } => {
                self.answer_asked();
                self.log_scheduled()?;
                // SIGHUP: the log was moved away (logrotate); write into a new file.
                if super::log::take_reopen()
                    && let Some(log) = &mut self.log
                    && let Err(e) = log.reopen()
                {
                    (self.notes)(&e);
                }
                self.tick(&procs, false);
                self.log_diffs(false)?;
            }
            SessionEvent::Ended(p) => {
                // Kept with its heap (while the ended ones' copies stay small), for queries.
                let small = p.heap.counters.events < ENDED_COPY_EVENTS;
                let img = Image::of(&p, &self.label, small);
                if let Some(log) = &mut self.log {
                    log.ended(&p)?;
                }
                self.logged.remove(&p.id.pid);
                let mut st = self.shared.lock();
                // The probes' counts come with every view: a machine whose processes are
                // short-lived may have none live at a tick.
                note_lost(&mut st, &p.heap.counters);
                st.end(img);
            }
            SessionEvent::Leaks(r) => self.answer(CheckAnswer::Leaks(Box::new(r))),
            SessionEvent::Referrers(r) => {
                if let Some((_, refs)) = &mut self.asked {
                    refs.push(r);
                }
            }
            SessionEvent::Checked { .. } | SessionEvent::Progress { .. } => {}
            SessionEvent::Final { procs, facts, .. } => {
                self.answer_asked();
                self.tick(&procs, true);
                self.log_diffs(true)?;
                if let Some(log) = &mut self.log {
                    log.last(&procs, &facts)?;
                }
                let mut st = self.shared.lock();
                st.stopped = true;
                for c in st.checks.drain(..) {
                    let _ = c
                        .reply
                        .send(CheckAnswer::Failed("the daemon is stopping".into()));
                }
            }
        }
        Ok(())
    }

    fn request(&mut self) -> Option<Asked> {
        self.answer_asked();
        if let Some(c) = self.shared.lock().checks.pop_front() {
            self.asked = Some((c.reply, Vec::new()));
            return Some(Asked {
                pid: Some(c.pid),
                spec: c.spec,
            });
        }
        let every = self.check_every?;
        if self.scheduled.is_some() || self.last_check.elapsed() < every {
            return None;
        }
        self.last_check = Instant::now();
        let (tx, rx) = mpsc::channel();
        self.scheduled = Some(rx);
        self.asked = Some((tx, Vec::new()));
        Some(Asked {
            pid: None,
            spec: CheckSpec::Leaks {
                filter: muppy_core::model::Filter::default(),
                group_by: GroupBy::Site,
                retention: false,
            },
        })
    }
}

/// The probes' counts of lost events and stacks (for every process together, growing only).
fn note_lost(st: &mut super::store::State, c: &muppy_core::model::Counters) {
    st.lost_events = st.lost_events.max(c.lost_events);
    st.lost_stacks = st.lost_stacks.max(c.lost_stacks);
}
