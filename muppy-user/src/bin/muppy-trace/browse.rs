//! `muppy-trace browse`: the terminal browser over a snapshot, or over a process traced now.
//! The session runs on this thread as ever; the browser on another, fed an owned copy of the
//! heap at every tick (once a second) through a channel. Quitting the browser ends the
//! session as a Ctrl-C (`--pid`: the target is left running as it was found) or a SIGTERM
//! (`-- CMD`: the command is asked to end, as `kill` would) does.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use muppy::session::{self, CheckSpec, Mode, Note, SessionEvent, Sink, SinkError};
use muppy_browse::{App, Ask, Update};
use muppy_core::{analysis::GroupBy, model::Filter, report::ViewOptions, snapshot::Snapshot};

use crate::{REFS_MAX_ROOTS, REFS_MAXDEPTH, TraceArgs, options, progress, verdicts_of};

/// Browses `file`, or the target `t` names, compared with `baseline` if given.
pub fn browse(
    file: Option<&Path>,
    baseline: Option<&Path>,
    t: &TraceArgs,
    view: &ViewOptions,
) -> anyhow::Result<u8> {
    if t.all {
        bail!("browse follows one process: give --pid PID or -- CMD, not --all");
    }
    muppy_browse::term::check()?;
    let baseline = baseline.map(progress::load_snapshot).transpose()?;
    match file {
        Some(file) => {
            if t.wants_target() || t.save.is_some() {
                bail!("give either a SNAPSHOT file or a target (--pid PID, -- CMD), not both");
            }
            let snap = progress::load_snapshot(file)?;
            if view.filter.kind.is_some() {
                verdicts_of(file, &snap)?;
            }
            let app = App::new(
                &file.display().to_string(),
                view.filter.clone(),
                view.group_by,
                baseline,
            );
            let (tx, rx) = mpsc::channel();
            let _ = tx.send(Update::Heap(Box::new(snap)));
            quit_on_signals(tx)?;
            muppy_browse::run(app, &rx, |_| {})?;
            Ok(0)
        }
        None => live(t, view, baseline),
    }
}

/// Browsing a file: SIGTERM and SIGHUP leave the browser as `q` does, so that the terminal
/// is restored (their default would end the process with the terminal in raw mode). They are
/// blocked here, before any other thread exists, and taken by a thread of their own.
fn quit_on_signals(tx: Sender<Update>) -> anyhow::Result<()> {
    // SAFETY: a sigset_t filled by sigemptyset/sigaddset, then given to pthread_sigmask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        libc::sigaddset(&raw mut set, libc::SIGHUP);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) != 0 {
            bail!("cannot block SIGTERM");
        }
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: sigwait on the set blocked above, into a local.
        if unsafe { libc::sigwait(&raw const set, &raw mut sig) } == 0 {
            let _ = tx.send(Update::Quit);
        }
    });
    Ok(())
}

/// Where a launched command's output goes, so that it does not draw over the browser.
fn output_file() -> PathBuf {
    let dir = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    dir.join(format!("muppy-browse-{}.out", std::process::id()))
}

/// Runs `f` with stdin from /dev/null and stdout and stderr into `out`, then puts them back:
/// the command forked in it keeps them.
fn with_output_to<T>(out: &Path, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::create(out)
        .with_context(|| format!("cannot create {} for the command's output", out.display()))?;
    let null = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    let fds = [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO];
    // SAFETY: dup and dup2 on descriptors this process owns; each is restored below.
    let saved = fds.map(|fd| unsafe { libc::dup(fd) });
    if saved.contains(&-1) {
        bail!("cannot save the terminal's descriptors");
    }
    // SAFETY: as above.
    unsafe {
        libc::dup2(null.as_raw_fd(), libc::STDIN_FILENO);
        libc::dup2(file.as_raw_fd(), libc::STDOUT_FILENO);
        libc::dup2(file.as_raw_fd(), libc::STDERR_FILENO);
    }
    let r = f();
    for (fd, old) in fds.into_iter().zip(saved) {
        // SAFETY: as above.
        unsafe {
            libc::dup2(old, fd);
            libc::close(old);
        }
    }
    Ok(r)
}

fn live(t: &TraceArgs, view: &ViewOptions, baseline: Option<Snapshot>) -> anyhow::Result<u8> {
    let mut opts = options(t)?;
    // The refs view asks who points at a block: the target must be ready to be stopped.
    opts.on_request = true;
    // A copy of the heap for the browser each second, unless asked otherwise.
    opts.interval.get_or_insert(Duration::from_secs(1));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("eBPF probes need root: run it with sudo");
    }
    let follow = t.follow_forks.unwrap_or(false);
    let (mode, out) = match (t.one_pid()?, t.command.is_empty()) {
        (Some(pid), true) => (Mode::Attach { pid, follow }, None),
        (None, false) => {
            let out = output_file();
            let mode = with_output_to(&out, || {
                Mode::launch(&t.command, t.allocator.as_deref(), follow)
            })??;
            (mode, Some(out))
        }
        _ => {
            bail!("say what to browse: a SNAPSHOT file, --pid PID, or -- CMD ARGS... (see --help)")
        }
    };
    let launched = out.is_some();
    let mut app = App::new(&opts.label, view.filter.clone(), view.group_by, baseline);
    if let Some(out) = &out {
        app.update(Update::Note(format!(
            "the command's output goes to {}",
            out.display()
        )));
    }
    let (tx, rx) = mpsc::channel();
    let (ask_tx, asks) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let browser = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let r = muppy_browse::run(app.live(), &rx, |a| {
                let _ = ask_tx.send(a);
            });
            if !done.load(Ordering::SeqCst) {
                // End the session as the terminal's signals would.
                let sig = if launched {
                    libc::SIGTERM
                } else {
                    libc::SIGINT
                };
                // SAFETY: kill sends a signal to this process, whose session handles it.
                unsafe { libc::kill(libc::getpid(), sig) };
            }
            r
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut sink = BrowseSink {
        tx: tx.clone(),
        label: opts.label.clone(),
        asks,
        asking: None,
    };
    let outcome = rt.block_on(session::run(mode, &opts, &mut sink));
    done.store(true, Ordering::SeqCst);
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // The error goes to the terminal, not under the browser.
            muppy_browse::term::restore();
            return Err(e.into());
        }
    };
    let how = match outcome.exit {
        Some(e) => format!("ended: {e}"),
        None => "tracing stopped".into(),
    };
    let _ = tx.send(Update::Ended(how));
    drop(tx);
    drop(sink);
    browser
        .join()
        .map_err(|_| anyhow::anyhow!("the browser failed"))??;
    if let Some(out) = out {
        eprintln!("muppy-trace: the command's output is in {}", out.display());
    }
    Ok(outcome
        .exit
        .map_or(0, |e| u8::try_from(e.shell_code() & 0xff).unwrap_or(255)))
}

/// The session's sink for the browser: each tick's heap, copied, and the notes.
struct BrowseSink {
    tx: Sender<Update>,
    label: String,
    /// What the browser asks, and the block whose referrers are being searched for.
    asks: Receiver<Ask>,
    asking: Option<u64>,
}

impl BrowseSink {
    fn send(&self, u: Update) {
        // The browser may be gone (the user quit); the session ends on its own.
        let _ = self.tx.send(u);
    }
}

impl Sink for BrowseSink {
    fn event(&mut self, ev: SessionEvent<'_>) -> Result<(), SinkError> {
        match ev {
            SessionEvent::Note(Note::CheckFailed { why }) if self.asking.is_some() => {
                let addr = self.asking.take().unwrap_or_default();
                self.send(Update::NoReferrers {
                    addr,
                    why: why.clone(),
                });
            }
            SessionEvent::Note(n) => self.send(Update::Note(n.to_string())),
            SessionEvent::Tick { procs, .. } | SessionEvent::Final { procs, .. } => {
                if let Some(p) = procs.first() {
                    self.send(Update::Heap(Box::new(Snapshot::of(&p.heap, &self.label))));
                }
            }
            SessionEvent::Referrers(r) => {
                self.asking = None;
                self.send(Update::Referrers(Box::new(r)));
            }
            SessionEvent::Checked { view, facts } => {
                let snap = Snapshot {
                    check: Some(facts),
                    ..Snapshot::of(&view.heap, &self.label)
                };
                self.send(Update::Checked(Box::new(snap)));
            }
            SessionEvent::Ended(_) | SessionEvent::Leaks(_) | SessionEvent::Progress { .. } => {}
        }
        Ok(())
    }

    fn request(&mut self) -> Option<session::Asked> {
        if let Some(addr) = self.asking.take() {
            // The last search told nothing: the process could no longer be checked.
            self.send(Update::NoReferrers {
                addr,
                why: "the process can no longer be read".into(),
            });
        }
        let spec = match self.asks.try_recv().ok()? {
            Ask::Referrers(addr) => {
                self.asking = Some(addr);
                CheckSpec::Refs {
                    addr: Some(addr),
                    site: None,
                    maxdepth: REFS_MAXDEPTH,
                    max_roots: REFS_MAX_ROOTS,
                    top: 1,
                }
            }
            // Every block, by site: the browser groups and filters them itself.
            Ask::LeakCheck => CheckSpec::Leaks {
                filter: Filter::default(),
                group_by: GroupBy::Site,
                retention: false,
            },
        };
        Some(session::Asked { pid: None, spec })
    }
}
