//! The ptrace thread: the one thread of muppy that makes ptrace requests (the kernel takes them
//! only from the thread that seized the tracee).
//!
//! It follows processes through fork, exec and exit ([`Tracer::start`]), telling
//! each event while the process concerned is held, and on request stops every thread of a
//! process, reads its registers, and lets it go on exactly as it was ([`Tracer::freeze`],
//! [`Tracer::resume`]), whether it follows that process already or seizes it for the freeze
//! only.
//!
//! It blocks in `waitpid(__WNOTHREAD)`, which reaps its own tracees and no other child of
//! muppy's. A request is put in its inbox and the thread woken by a `SIGURG` (a no-op handler
//! installed without `SA_RESTART`, so `waitpid` returns `EINTR`), sent again after a while in
//! case it came just before the thread went to sleep. While an event is held for the session it
//! polls instead, so a release is seen within a millisecond. A tracee held for an event never
//! keeps it from answering a request.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Once,
        atomic::{AtomicI32, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::{
        ptrace,
        signal::Signal,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};

use super::{Exit, TargetError, check_pid, memory, mmaps::MapWatch, sys};

mod freeze;
use crate::symbols::MapsEntry;
pub use freeze::{Frozen, FrozenThread, Registers};

/// What happens to the processes followed, told while the process concerned is held still: it
/// goes on once the event's [`Release`] is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeEvent {
    /// `parent` forked `child`, which has not run yet.
    Forked {
        /// The process that forked.
        parent: u32,
        /// The new process.
        child: u32,
    },
    /// The process has exec'd, and these are the executable file mappings its old image made
    /// while followed (its libraries, mapped by ld.so after its own exec), which the exec has
    /// just removed: name the old image's call paths with them. Told just before [`Exec`]
    /// (`TreeEvent::Exec`), only when there are some.
    OldImage {
        /// The process.
        pid: u32,
        /// The old image's mappings, as the kernel reported them when they were made.
        mappings: Vec<MapsEntry>,
    },
    /// The process has exec'd a new program, which has not run yet.
    Exec {
        /// The process.
        pid: u32,
    },
    /// A thread of the process entered `_exit` (`exit()` calls it after the atexit handlers
    /// and destructors), where the session asked the probes to hold it
    /// ([`crate::probe::Probes::hold_exit`]): every thread is still alive, the caller held in
    /// its stop. Once released it goes on to `exit_group` (the stop's `SIGSTOP` is never
    /// delivered).
    ExitCalled {
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

/// Which process the ptrace thread starts following.
#[derive(Clone, Copy, Debug)]
pub enum Root {
    /// Our child, forked by [`super::spawn_paused`], single-threaded and not yet exec'd.
    Launched(u32),
    /// A running process: every one of its threads is seized.
    Running(u32),
}

/// Holds the process an event is about until dropped: drop it once the event is handled.
#[derive(Debug)]
pub struct Release {
    tx: mpsc::Sender<Msg>,
    tids: Vec<i32>,
}

impl Drop for Release {
    fn drop(&mut self) {
        // The ptrace thread polls its inbox while an event is held: no wake-up is needed.
        let _ = self.tx.send(Msg::Release(std::mem::take(&mut self.tids)));
    }
}

/// A handle on the ptrace thread: each method sends a request and waits for the answer.
///
/// Dropping it resumes whatever it froze; the thread goes on following its root, if it has
/// one, until that ends.
#[derive(Debug)]
pub struct Tracer {
    tx: mpsc::Sender<Msg>,
    /// The ptrace thread's id, to wake it; 0 once it has ended.
    tid: Arc<AtomicI32>,
}

type Reply<T> = mpsc::SyncSender<Result<T, TargetError>>;

#[derive(Debug)]
enum Msg {
    /// An event was handled: its tasks may go on.
    Release(Vec<i32>),
    Freeze(u32, Reply<Frozen>),
    Resume(u32, Reply<()>),
    /// The handle was dropped.
    Close,
}

impl Tracer {
    /// Starts the ptrace thread. With a `root` it follows it (and its descendants with
    /// `children`), telling `on` each event; `ended` is told how the root ended (or why
    /// following failed) and the thread then ends once the handle is dropped too. Without a
    /// root it only serves requests. Returns once the root is seized, with the error if that
    /// failed (a launched root is then still waited for, and `ended` told its exit).
    pub fn start(
        root: Option<Root>,
        children: bool,
        on: impl FnMut(TreeEvent, Release) + Send + 'static,
        ended: impl FnOnce(Result<Exit, TargetError>) + Send + 'static,
    ) -> Result<Self, TargetError> {
        install_wake_handler();
        let (tx, rx) = mpsc::channel();
        let (seized_tx, seized_rx) = mpsc::channel();
        let inbox = tx.clone();
        let tid = Arc::new(AtomicI32::new(0));
        let own_tid = Arc::clone(&tid);
        thread::Builder::new()
            .name("muppy-ptrace".into())
            .spawn(move || {
                own_tid.store(nix::unistd::gettid().as_raw(), Ordering::SeqCst);
                // Whatever ends the thread, no one waits on a wake-up any more.
                struct Gone(Arc<AtomicI32>);
                impl Drop for Gone {
                    fn drop(&mut self) {
                        self.0.store(0, Ordering::SeqCst);
                    }
                }
                let _gone = Gone(own_tid);
                let mut core = Core::new(inbox, rx, children, Box::new(on));
                let seized = match root {
                    Some(root) => core.seize_root(root),
                    None => Ok(()),
                };
                let failed = seized.is_err();
                let _ = seized_tx.send(seized);
                if failed {
                    drop(core);
                    // Without ptrace the exit cannot be held, but our child can still be
                    // waited for.
                    if let Some(Root::Launched(pid)) = root {
                        ended(wait_plain(Pid::from_raw(i32::try_from(pid).unwrap_or(0))));
                    }
                    return;
                }
                if root.is_some() {
                    core.ended = Some(Box::new(ended));
                }
                let r = core.run();
                // Told at the root's exit already, unless the thread failed before.
                if let (Some(ended), Err(e)) = (core.ended.take(), r) {
                    ended(Err(e));
                }
            })
            .map_err(|_| sys("starting the ptrace thread")(Errno::EAGAIN))?;
        seized_rx
            .recv()
            .map_err(|_| TargetError::TracerGone)?
            .map(|()| Self { tx, tid })
    }

    /// Stops every thread of `pid` and returns their registers: threads it follows are
    /// interrupted, the others seized and interrupted, and `/proc/PID/task` listed again until
    /// no new thread appears. A thread traced by another tracer is an error naming it.
    pub fn freeze(&self, pid: u32) -> Result<Frozen, TargetError> {
        self.ask(|reply| Msg::Freeze(pid, reply))
    }

    /// Lets every thread of a frozen `pid` go on as it was: a signal it was stopped for is
    /// delivered, a thread in a job-control stop stays stopped, threads seized for the freeze
    /// only are detached, followed ones stay followed.
    pub fn resume(&self, pid: u32) -> Result<(), TargetError> {
        self.ask(|reply| Msg::Resume(pid, reply))
    }

    /// Reads `ranges` of `pid`'s memory (see [`memory::read`]); freeze it first for a
    /// consistent image. Runs on the caller's thread: `process_vm_readv` needs no ptrace stop.
    pub fn read(
        &self,
        pid: u32,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<memory::Memory>, TargetError> {
        memory::read(pid, ranges)
    }

    fn ask<T>(&self, msg: impl FnOnce(Reply<T>) -> Msg) -> Result<T, TargetError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send(msg(reply))
            .map_err(|_| TargetError::TracerGone)?;
        // The thread may have gone to sleep just after looking at its inbox: wake it again
        // until it answers, less and less often (a freeze can take a while).
        let mut pause = Duration::from_micros(500);
        loop {
            self.wake();
            match answer.recv_timeout(pause) {
                Ok(r) => return r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    pause = (pause * 2).min(Duration::from_millis(50))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(TargetError::TracerGone),
            }
        }
    }

    fn wake(&self) {
        let tid = self.tid.load(Ordering::SeqCst);
        if tid != 0 {
            // SAFETY: tgkill sends SIGURG, whose handler does nothing, to our own thread.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGURG) };
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Close);
        self.wake();
    }
}

extern "C" fn on_wake(_: libc::c_int) {}

/// Installs the no-op `SIGURG` handler that interrupts the ptrace thread's `waitpid`. `SIGURG`
/// is otherwise ignored by default, and muppy uses no out-of-band socket data.
fn install_wake_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that touches nothing; no SA_RESTART, so
        // that a blocking waitpid returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_wake as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&raw mut sa.sa_mask);
            libc::sigaction(libc::SIGURG, &raw const sa, std::ptr::null_mut());
        }
    });
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

/// How a stopped task goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// An event or an interrupt: continue.
    Plain,
    /// A signal on its way to the task: deliver it.
    Signal(Signal),
    /// A job-control stop (SIGSTOP and the like): stay stopped, as without a tracer, until
    /// SIGCONT.
    Group,
}

#[derive(Debug)]
struct Task {
    /// Its process.
    tgid: i32,
    /// Seized to be followed (with the follow options); false: seized for a freeze only, and
    /// detached when it ends.
    followed: bool,
    /// In a ptrace stop and not yet let go, and how to let it go.
    stop: Option<Stop>,
    /// Events about it not yet released.
    holds: u32,
    /// Its process is frozen.
    frozen: bool,
    /// A new task whose parent's fork or clone event has not been seen yet.
    unannounced: bool,
    /// A new task announced by its parent, whose first stop is still to come.
    first_stop_pending: bool,
}

impl Task {
    fn new(tgid: i32, followed: bool) -> Self {
        Self {
            tgid,
            followed,
            stop: None,
            holds: 0,
            frozen: false,
            unannounced: false,
            first_stop_pending: false,
        }
    }
}

type OnEvent<'a> = Box<dyn FnMut(TreeEvent, Release) + 'a>;
type Ended = Box<dyn FnOnce(Result<Exit, TargetError>) + Send>;

/// The ptrace thread's state.
struct Core<'a> {
    tx: mpsc::Sender<Msg>,
    inbox: mpsc::Receiver<Msg>,
    options: ptrace::Options,
    on: OnEvent<'a>,
    tasks: HashMap<i32, Task>,
    /// The followed processes.
    leaders: HashSet<i32>,
    root: Option<i32>,
    /// Frozen processes and their tasks.
    frozen: HashMap<i32, Vec<i32>>,
    /// Per followed process (with `children`), its executable mappings as they are made.
    watches: HashMap<i32, MapWatch>,
    /// Requests that came while a freeze waited for its stops.
    deferred: VecDeque<Msg>,
    root_exit: Option<Exit>,
    /// Told how the root ended, as soon as it has.
    ended: Option<Ended>,
    closed: bool,
    /// A freeze is waiting for its stops.
    freezing: bool,
}

impl<'a> Core<'a> {
    fn new(
        tx: mpsc::Sender<Msg>,
        inbox: mpsc::Receiver<Msg>,
        children: bool,
        on: OnEvent<'a>,
    ) -> Self {
        let mut options = ptrace::Options::PTRACE_O_TRACEEXIT;
        if children {
            options |= ptrace::Options::PTRACE_O_TRACEFORK
                | ptrace::Options::PTRACE_O_TRACEVFORK
                | ptrace::Options::PTRACE_O_TRACECLONE
                | ptrace::Options::PTRACE_O_TRACEEXEC;
        }
        Self {
            tx,
            inbox,
            options,
            on,
            tasks: HashMap::new(),
            leaders: HashSet::new(),
            root: None,
            frozen: HashMap::new(),
            watches: HashMap::new(),
            deferred: VecDeque::new(),
            root_exit: None,
            ended: None,
            closed: false,
            freezing: false,
        }
    }

    fn seize_root(&mut self, root: Root) -> Result<(), TargetError> {
        let (pid, tids) = match root {
            Root::Launched(pid) => {
                let p = i32::try_from(pid).map_err(|_| TargetError::NoSuchProcess { pid })?;
                ptrace::seize(Pid::from_raw(p), self.options).map_err(sys("ptrace(SEIZE)"))?;
                (p, vec![(p, false)])
            }
            Root::Running(pid) => {
                let p = i32::try_from(pid).map_err(|_| TargetError::NoSuchProcess { pid })?;
                (p, seize_all(p, self.options)?)
            }
        };
        for (t, attached) in tids {
            let mut task = Task::new(pid, true);
            task.first_stop_pending = attached;
            self.tasks.insert(t, task);
        }
        self.leaders.insert(pid);
        self.root = Some(pid);
        self.watch(pid);
        Ok(())
    }

    /// Starts recording the mappings a followed process makes, to name its image after an exec.
    fn watch(&mut self, pid: i32) {
        if self.options.contains(ptrace::Options::PTRACE_O_TRACEEXEC)
            && let Some(w) = MapWatch::open(pid)
        {
            self.watches.insert(pid, w);
        }
    }

    /// Follows the tracees and serves the inbox until the root has ended and the handle is
    /// dropped.
    fn run(&mut self) -> Result<Exit, TargetError> {
        loop {
            while let Some(m) = self.deferred.pop_front() {
                self.dispatch(m)?;
            }
            while let Ok(m) = self.inbox.try_recv() {
                self.dispatch(m)?;
            }
            let root_done = self.root.is_none() || self.root_exit.is_some();
            if root_done && self.closed {
                self.thaw_all();
                return match self.root_exit {
                    Some(e) => Ok(e),
                    None => Err(TargetError::TracerGone),
                };
            }
            self.wait_once()?;
        }
    }

    /// Waits for a tracee's next status, a release or a request, and handles it. A request
    /// that comes during a freeze is kept for later.
    fn wait_once(&mut self) -> Result<(), TargetError> {
        let held = self.tasks.values().any(|t| t.holds > 0);
        let mut flags = WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD;
        if held {
            flags |= WaitPidFlag::WNOHANG;
        }
        match waitpid(None, Some(flags)) {
            Ok(WaitStatus::StillAlive) => {
                if let Ok(m) = self.inbox.recv_timeout(Duration::from_millis(1)) {
                    self.take(m)?;
                }
            }
            Ok(status) => self.on_wait(status)?,
            Err(Errno::EINTR) => {
                while let Ok(m) = self.inbox.try_recv() {
                    self.take(m)?;
                }
            }
            // Nothing is traced: only a request can come.
            Err(Errno::ECHILD) => {
                let m = self.inbox.recv().map_err(|_| TargetError::TracerGone)?;
                self.take(m)?;
            }
            Err(e) => return Err(sys("waitpid")(e)),
        }
        Ok(())
    }

    fn take(&mut self, m: Msg) -> Result<(), TargetError> {
        match m {
            Msg::Freeze(..) | Msg::Resume(..) | Msg::Close if self.freezing => {
                self.deferred.push_back(m);
                Ok(())
            }
            m => self.dispatch(m),
        }
    }

    fn dispatch(&mut self, msg: Msg) -> Result<(), TargetError> {
        match msg {
            Msg::Release(tids) => {
                for t in tids {
                    if let Some(task) = self.tasks.get_mut(&t) {
                        task.holds = task.holds.saturating_sub(1);
                    }
                    self.settle(t)?;
                }
            }
            Msg::Freeze(pid, reply) => {
                let r = self.freeze(pid);
                let _ = reply.send(r);
            }
            Msg::Resume(pid, reply) => {
                let r = match i32::try_from(pid) {
                    Ok(p) if self.frozen.contains_key(&p) => self.thaw(p),
                    _ => Err(TargetError::NotFrozen { pid }),
                };
                let _ = reply.send(r);
            }
            Msg::Close => {
                self.closed = true;
                self.thaw_all();
            }
        }
        Ok(())
    }

    /// Tells `on` an event while `hold` (tasks in a stop) wait for its release.
    fn tell(&mut self, event: TreeEvent, hold: &[i32]) {
        for t in hold {
            if let Some(task) = self.tasks.get_mut(t) {
                task.holds += 1;
            }
        }
        let release = Release {
            tx: self.tx.clone(),
            tids: hold.to_vec(),
        };
        (self.on)(event, release);
    }

    fn on_wait(&mut self, status: WaitStatus) -> Result<(), TargetError> {
        match status {
            WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _) => {
                let t = p.as_raw();
                self.tasks.remove(&t);
                self.watches.remove(&t);
                if self.leaders.remove(&t) {
                    let exit = match status {
                        WaitStatus::Exited(_, code) => Exit::Code(code),
                        WaitStatus::Signaled(_, sig, _) => Exit::Signal(sig as i32),
                        _ => unreachable!("matched above"),
                    };
                    self.tell(
                        TreeEvent::Exited {
                            pid: t as u32,
                            exit,
                        },
                        &[],
                    );
                    if Some(t) == self.root {
                        self.root_exit = Some(exit);
                        if let Some(ended) = self.ended.take() {
                            ended(Ok(exit));
                        }
                    }
                }
            }
            WaitStatus::PtraceEvent(p, _, ev)
                if ev == libc::PTRACE_EVENT_FORK
                    || ev == libc::PTRACE_EVENT_VFORK
                    || ev == libc::PTRACE_EVENT_CLONE =>
            {
                let t = p.as_raw();
                self.stopped(t, Stop::Plain);
                let new = ptrace::getevent(p).ok().and_then(|n| i32::try_from(n).ok());
                if let Some(new) = new {
                    let tgid = tgid_of(new).unwrap_or(new);
                    let frozen = self.frozen.contains_key(&tgid);
                    match self.tasks.get_mut(&new) {
                        // It stopped before this event: it is held until now.
                        Some(task) => task.unannounced = false,
                        None => {
                            let mut task = Task::new(tgid, true);
                            task.first_stop_pending = true;
                            self.tasks.insert(new, task);
                        }
                    }
                    if let Some(task) = self.tasks.get_mut(&new) {
                        task.tgid = tgid;
                        task.frozen = frozen;
                    }
                    if let Some(tids) = self.frozen.get_mut(&tgid)
                        && !tids.contains(&new)
                    {
                        tids.push(new);
                    }
                    // A clone without CLONE_THREAD is a process too.
                    if tgid == new {
                        self.leaders.insert(new);
                        self.watch(new);
                        let parent = self.tasks.get(&t).map_or(t, |task| task.tgid);
                        self.tell(
                            TreeEvent::Forked {
                                parent: parent as u32,
                                child: new as u32,
                            },
                            &[t, new],
                        );
                    }
                    self.settle(new)?;
                }
                self.settle(t)?;
            }
            WaitStatus::PtraceEvent(p, _, libc::PTRACE_EVENT_EXEC) => {
                // The exec'ing thread now has the process's pid; the other threads are gone,
                // the exec'ing one under its former tid too.
                let t = p.as_raw();
                if let Some(former) = ptrace::getevent(p).ok().and_then(|n| i32::try_from(n).ok())
                    && former != t
                {
                    self.tasks.remove(&former);
                }
                let task = self.tasks.entry(t).or_insert_with(|| Task::new(t, true));
                task.tgid = t;
                task.stop = Some(Stop::Plain);
                if let Some(mappings) = self.watches.get_mut(&t).and_then(MapWatch::before_exec) {
                    self.tell(
                        TreeEvent::OldImage {
                            pid: t as u32,
                            mappings,
                        },
                        &[t],
                    );
                }
                self.tell(TreeEvent::Exec { pid: t as u32 }, &[t]);
                self.settle(t)?;
            }
            WaitStatus::PtraceEvent(p, _, libc::PTRACE_EVENT_EXIT) => {
                let t = p.as_raw();
                self.stopped(t, Stop::Plain);
                if self.leaders.contains(&t) {
                    self.tell(TreeEvent::Exiting { pid: t as u32 }, &[t]);
                }
                self.settle(t)?;
            }
            WaitStatus::PtraceEvent(p, sig, libc::PTRACE_EVENT_STOP) => {
                let t = p.as_raw();
                match self.tasks.get_mut(&t) {
                    // A new task stopped before its parent's event: hold it until then.
                    None => {
                        let tgid = tgid_of(t).unwrap_or(t);
                        let mut task = Task::new(tgid, true);
                        task.unannounced = true;
                        task.stop = Some(Stop::Plain);
                        task.frozen = self.frozen.contains_key(&tgid);
                        self.tasks.insert(t, task);
                        if let Some(tids) = self.frozen.get_mut(&tgid) {
                            tids.push(t);
                        }
                    }
                    // A new task's first stop: its probes are in place.
                    Some(task) if task.first_stop_pending => {
                        task.first_stop_pending = false;
                        task.stop = Some(Stop::Plain);
                    }
                    Some(task) => {
                        task.stop = Some(
                            if matches!(
                                sig,
                                Signal::SIGSTOP
                                    | Signal::SIGTSTP
                                    | Signal::SIGTTIN
                                    | Signal::SIGTTOU
                            ) {
                                Stop::Group
                            } else {
                                Stop::Plain
                            },
                        );
                    }
                }
                self.settle(t)?;
            }
            WaitStatus::Stopped(p, sig) => {
                let t = p.as_raw();
                if let Some(task) = self.tasks.get(&t) {
                    if sig == Signal::SIGSTOP && task.followed && is_exit_hold(p) {
                        // Held for the check at exit; the SIGSTOP is dropped as it goes on.
                        let pid = task.tgid as u32;
                        self.stopped(t, Stop::Plain);
                        self.tell(TreeEvent::ExitCalled { pid }, &[t]);
                    } else {
                        self.stopped(t, Stop::Signal(sig));
                    }
                    self.settle(t)?;
                } else {
                    resumed(ptrace::cont(p, Some(sig)))?;
                }
            }
            WaitStatus::PtraceEvent(p, _, _) | WaitStatus::PtraceSyscall(p) => {
                let t = p.as_raw();
                if self.tasks.contains_key(&t) {
                    self.stopped(t, Stop::Plain);
                    self.settle(t)?;
                } else {
                    resumed(ptrace::cont(p, None))?;
                }
            }
            WaitStatus::Continued(_) | WaitStatus::StillAlive => {}
        }
        Ok(())
    }

    fn stopped(&mut self, t: i32, stop: Stop) {
        if let Some(task) = self.tasks.get_mut(&t) {
            task.stop = Some(stop);
        }
    }

    /// Lets a stopped task go on unless an event, a freeze or its parent's event holds it.
    fn settle(&mut self, t: i32) -> Result<(), TargetError> {
        let Some(task) = self.tasks.get_mut(&t) else {
            return Ok(());
        };
        let Some(stop) = task.stop else {
            return Ok(());
        };
        if task.holds > 0 || task.frozen || task.unannounced {
            return Ok(());
        }
        task.stop = None;
        let p = Pid::from_raw(t);
        if task.followed {
            let r = match stop {
                Stop::Plain => ptrace::cont(p, None),
                Stop::Signal(s) => ptrace::cont(p, Some(s)),
                // SAFETY: PTRACE_LISTEN on our seized tracee, in a stop.
                Stop::Group => match unsafe { libc::ptrace(libc::PTRACE_LISTEN, t, 0, 0) } {
                    r if r < 0 => Err(Errno::last()),
                    _ => Ok(()),
                },
            };
            resumed(r)
        } else {
            // Seized for a freeze only: let go. A job-control stop is restored by the kernel
            // on detach; a signal the task stopped for goes with it.
            self.tasks.remove(&t);
            let sig = match stop {
                Stop::Signal(s) => Some(s),
                Stop::Plain | Stop::Group => None,
            };
            match ptrace::detach(p, sig) {
                Ok(()) | Err(Errno::ESRCH) => Ok(()),
                Err(e) => Err(sys("ptrace(DETACH)")(e)),
            }
        }
    }
}

fn resumed(r: Result<(), Errno>) -> Result<(), TargetError> {
    match r {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(sys("ptrace(CONT)")(e)),
    }
}

/// Whether a task in a signal-delivery-stop for `SIGSTOP` stopped at `_exit` for the probes'
/// exit hold: the kernel sent that signal as itself (`SI_KERNEL`, from the probe's
/// `bpf_send_signal_thread`), where a user's `kill` or `tgkill` sends `SI_USER` or `SI_TKILL`.
fn is_exit_hold(p: Pid) -> bool {
    ptrace::getsiginfo(p).is_ok_and(|info| info.si_code == libc::SI_KERNEL)
}

fn interrupt(t: i32) -> Result<(), TargetError> {
    match ptrace::interrupt(Pid::from_raw(t)) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(sys("ptrace(INTERRUPT)")(e)),
    }
}

fn status_field(tid: i32, field: &str) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .parse()
        .ok()
}

fn tgid_of(tid: i32) -> Option<i32> {
    status_field(tid, "Tgid:")
}

/// The process tracing `tid`, when another does: `TracerPid` names the tracing thread, whose
/// process is the tracer a user knows (gdb, strace).
fn tracer_of(tid: i32) -> Option<u32> {
    let thread = status_field(tid, "TracerPid:").filter(|&t| t != 0)?;
    Some(tgid_of(thread).unwrap_or(thread) as u32)
}

/// Fails, naming the tracer, if a thread of `pid` is traced by another process than this one
/// (a freeze would fail later: say so before tracing begins).
pub fn check_untraced(pid: u32) -> Result<(), TargetError> {
    let p = i32::try_from(pid).map_err(|_| TargetError::NoSuchProcess { pid })?;
    for t in list_tasks(p)? {
        if let Some(tracer) = tracer_of(t).filter(|&t| t != std::process::id()) {
            return Err(TargetError::TracedByOther {
                pid,
                tid: t as u32,
                tracer,
            });
        }
    }
    Ok(())
}

/// Whether `tid` has ended (or is ending: ptrace cannot seize a zombie).
fn ended(tid: i32) -> bool {
    matches!(
        u32::try_from(tid).ok().and_then(super::task_state),
        None | Some('Z' | 'X')
    )
}

fn list_tasks(pid: i32) -> Result<Vec<i32>, TargetError> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|_| TargetError::NoSuchProcess { pid: pid as u32 })?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// Seizes every thread of `pid`, again until no new thread appears. Each comes with whether
/// the kernel attached it (a thread created by one seized before it, whose first stop is still
/// to come).
fn seize_all(pid: i32, options: ptrace::Options) -> Result<Vec<(i32, bool)>, TargetError> {
    let mut seized: Vec<(i32, bool)> = Vec::new();
    loop {
        let tids: Vec<i32> = list_tasks(pid)?
            .into_iter()
            .filter(|t| !seized.iter().any(|(s, _)| s == t))
            .collect();
        if tids.is_empty() {
            return Ok(seized);
        }
        for t in tids {
            match ptrace::seize(Pid::from_raw(t), options) {
                Ok(()) => seized.push((t, false)),
                Err(Errno::ESRCH) => {} // the thread ended meanwhile
                Err(Errno::EPERM) if ended(t) => {}
                // Created by a thread seized above, and so attached by the kernel already.
                Err(Errno::EPERM) if tracer_of(t) == Some(std::process::id()) => {
                    seized.push((t, true));
                }
                Err(e) => {
                    // What was seized is let go when this thread ends.
                    return Err(match tracer_of(t) {
                        Some(tracer) => TargetError::TracedByOther {
                            pid: pid as u32,
                            tid: t as u32,
                            tracer,
                        },
                        None => sys("ptrace(SEIZE)")(e),
                    });
                }
            }
        }
    }
}
