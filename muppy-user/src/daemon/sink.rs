//! The daemon's sink: at each tick, copies the traced heaps into the shared state for the API
//! and writes the log's diffs when they are due; hands the session the checks clients asked
//! for, and their answers back.

use std::{
    collections::HashMap,
    sync::mpsc,
    time::{Duration, Instant},
};

use muppy_core::{
    analysis::{self, GroupBy, RefReport, Summary},
    model::Filter,
};

use super::{
    log::Log,
    store::{CheckAnswer, Image, Shared, unix_ms},
};
use crate::session::{CheckSpec, Note, SessionEvent, Sink, SinkError};

/// An unchanged table is copied again after this many ms (its names may have been learned).
const RECOPY_MS: u64 = 10_000;

/// Where the sink's notes go (the binary prints them).
pub type Notes = Box<dyn FnMut(&dyn std::fmt::Display) + Send>;

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
    /// The check under way: where its answer goes, and the referrers found so far.
    asked: Option<(mpsc::Sender<CheckAnswer>, Vec<RefReport>)>,
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
            asked: None,
        }
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

    /// Copies the tick's images: a process whose table did not change keeps its copy.
    fn tick(&mut self, procs: &[muppy_core::report::ProcView]) {
        let now = unix_ms();
        let mut st = self.shared.lock();
        let mut seen = Vec::with_capacity(procs.len());
        for p in procs {
            let pid = p.id.pid;
            seen.push(pid);
            // Names may be learned later than events (a module's symbols read once its
            // mappings are): a copy is made again now and then even so.
            let unchanged = st.live.get(&pid).is_some_and(|old| {
                old.snap.counters == p.heap.counters
                    && old.snap.traces.len() == p.heap.traces.len()
                    && old.state == p.state
                    && now.saturating_sub(old.as_of_ms) < RECOPY_MS
            });
            if unchanged {
                continue;
            }
            let img = Image::of(p, &self.label);
            st.marks
                .entry(pid)
                .or_default()
                .entry("start".into())
                .or_insert_with(|| std::sync::Arc::clone(&img.snap));
            st.live.insert(pid, img);
        }
        // Images no longer live that did not end through `Ended` (a followed child that
        // exited: the session keeps it for its final report).
        let gone: Vec<u32> = st
            .live
            .keys()
            .copied()
            .filter(|pid| !seen.contains(pid))
            .collect();
        for pid in gone {
            if let Some(img) = st.live.remove(&pid) {
                st.end(img);
            }
        }
        if let Some(c) = procs.first().map(|p| p.heap.counters) {
            note_lost(&mut st, &c);
        }
        st.ticks += 1;
        st.last_tick_ms = unix_ms();
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
            let cur = analysis::summarize(&img.snap.heap(), &Filter::default(), GroupBy::Site);
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
                        self.shared.lock().tracing = true;
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
                // SIGHUP: the log was moved away (logrotate); write into a new file.
                if super::log::take_reopen()
                    && let Some(log) = &mut self.log
                    && let Err(e) = log.reopen()
                {
                    (self.notes)(&e);
                }
                self.tick(&procs);
                self.log_diffs(false)?;
            }
            SessionEvent::Ended(p) => {
                let img = Image::of(&p, &self.label);
                // The probes' counts come with every view: a machine whose processes are
                // short-lived may have none live at a tick.
                note_lost(&mut self.shared.lock(), &p.heap.counters);
                if let Some(log) = &mut self.log {
                    log.ended(&p)?;
                }
                self.logged.remove(&p.id.pid);
                self.shared.lock().end(img);
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
                self.tick(&procs);
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

    fn request(&mut self) -> Option<CheckSpec> {
        self.answer_asked();
        let c = self.shared.lock().checks.pop_front()?;
        self.asked = Some((c.reply, Vec::new()));
        Some(c.spec)
    }
}

/// The probes' counts of lost events and stacks (for every process together, growing only).
fn note_lost(st: &mut super::store::State, c: &muppy_core::model::Counters) {
    st.lost_events = st.lost_events.max(c.lost_events);
    st.lost_stacks = st.lost_stacks.max(c.lost_stacks);
}
