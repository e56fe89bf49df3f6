//! The ring's reader thread. It empties the probes' ring buffer into memory as soon as the
//! probes wake it, at a real-time priority, so that a target with more busy threads than the
//! machine has CPUs cannot fill the ring while the session waits for a CPU. The session applies
//! the events in their ring order at its own pace, from the queue this thread fills.
//!
//! The thread never spins: it sleeps in `poll` until the probes wake it (every so many events
//! per CPU, and at once for a process's exit), the session asks it for everything up to now,
//! or 50 ms pass (submits below the wake-up threshold wake no one). A real-time thread that
//! sleeps costs the target only the time it takes to copy the events out.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use tokio::io::{Interest, unix::AsyncFd};

use crate::{event::Event, ring::Ring, stacks::StackDecoder};

/// Events queued between the thread and the session at most (≈70 MiB). Past it the thread
/// stops emptying the ring until the session catches up, so a session that cannot keep up on
/// average loses events the way it always did, counted by the probes as a full ring.
const MAX_QUEUED: usize = 1 << 20;

/// The real-time priority of the reader (SCHED_FIFO, 1..=99): above every normal thread, below
/// the kernel's own real-time threads (which run at 50 and above).
const PRIORITY: i32 = 10;

/// What the thread sends the session, in order.
enum Msg {
    /// Events, in ring order.
    Events(Vec<Event>),
    /// Everything the ring held when the session's request `n` was seen has been sent.
    Synced(u64),
}

/// The reader thread's handle, held by the session.
pub struct Pump {
    rx: mpsc::Receiver<Msg>,
    /// Readable when the thread has sent something.
    notify: AsyncFd<OwnedFd>,
    /// Written by the session to wake the thread (a request, or the stop).
    control: Arc<OwnedFd>,
    shared: Arc<Shared>,
    asked: u64,
    thread: Option<JoinHandle<()>>,
    /// Whether the thread got its real-time priority.
    pub realtime: bool,
}

struct Shared {
    /// The latest request the session made.
    asked: AtomicU64,
    /// The session wants the thread gone.
    stop: AtomicBool,
    /// Events sent and not yet taken.
    queued: AtomicUsize,
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory arguments; the descriptor is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bump(fd: &OwnedFd) {
    let one = 1u64;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd.
    unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
}

fn clear(fd: &OwnedFd) {
    let mut n = 0u64;
    // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd.
    unsafe { libc::read(fd.as_raw_fd(), (&raw mut n).cast(), 8) };
}

/// Gives the calling thread a real-time priority; false where that is not permitted.
fn make_realtime() -> bool {
    let param = libc::sched_param {
        sched_priority: PRIORITY,
    };
    // SAFETY: sched_setscheduler reads the struct it is given; pid 0 is the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) == 0 }
}

impl Pump {
    /// Starts the reader thread over `ring`, its stacks interned by `stacks`.
    pub fn start(mut ring: Ring, mut stacks: StackDecoder) -> io::Result<Pump> {
        let notify = eventfd()?;
        let notify_tx = notify.try_clone()?;
        let control = Arc::new(eventfd()?);
        let shared = Arc::new(Shared {
            asked: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let (rt_tx, rt_rx) = mpsc::channel();
        let (ctl, sh) = (Arc::clone(&control), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("muppy-ring".into())
            .spawn(move || {
                let _ = rt_tx.send(make_realtime());
                run(&mut ring, &mut stacks, &ctl, &sh, &tx, &notify_tx);
            })?;
        let realtime = rt_rx.recv().unwrap_or(false);
        // SAFETY: the AsyncFd owns the eventfd, so it stays open while registered.
        let notify = unsafe { AsyncFd::register_with_interest(notify, Interest::READABLE) }?;
        Ok(Pump {
            rx,
            notify,
            control,
            shared,
            asked: 0,
            thread: Some(thread),
            realtime,
        })
    }

    /// Waits until the thread has sent something.
    pub async fn ready(&self) -> io::Result<()> {
        let mut guard = self.notify.readable().await?;
        clear(guard.get_inner());
        guard.clear_ready();
        Ok(())
    }

    /// The events sent so far, in order, without waiting.
    pub fn take(&mut self, mut apply: impl FnMut(Vec<Event>)) {
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Events(batch) = msg {
                self.shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
                apply(batch);
            }
        }
    }

    /// Every event the probes had sent by now, in order: asks the thread to empty the ring
    /// and waits until it has.
    pub fn sync(&mut self, mut apply: impl FnMut(Vec<Event>)) {
        self.asked += 1;
        self.shared.asked.store(self.asked, Ordering::Release);
        bump(&self.control);
        loop {
            match self.rx.recv() {
                Ok(Msg::Events(batch)) => {
                    self.shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
                    apply(batch);
                }
                Ok(Msg::Synced(n)) if n >= self.asked => return,
                Ok(Msg::Synced(_)) => {}
                Err(_) => return, // the thread is gone: nothing more will come
            }
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        bump(&self.control);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread's loop: sleep until woken, empty the ring, send what it held.
fn run(
    ring: &mut Ring,
    stacks: &mut StackDecoder,
    control: &OwnedFd,
    shared: &Shared,
    tx: &mpsc::Sender<Msg>,
    notify: &OwnedFd,
) {
    let mut answered = 0;
    loop {
        // Past the cap the ring is left alone (and not polled, which would return at once)
        // until the session has taken some, or asks for everything.
        let full = shared.queued.load(Ordering::Relaxed) >= MAX_QUEUED;
        let mut fds = [
            libc::pollfd {
                fd: ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: control.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let polled = if full { &mut fds[1..] } else { &mut fds[..] };
        let n = libc::nfds_t::try_from(polled.len()).unwrap_or(1);
        // SAFETY: poll reads and writes the pollfds it is given, `n` of them.
        unsafe { libc::poll(polled.as_mut_ptr(), n, 50) };
        clear(control);
        let asked = shared.asked.load(Ordering::Acquire);
        let must = asked > answered;
        if must || shared.queued.load(Ordering::Relaxed) < MAX_QUEUED {
            let mut batch = Vec::new();
            stacks.heed();
            ring.drain(stacks, |ev| batch.push(ev));
            // Before the batch goes: the session names its sites from what this says.
            stacks.publish();
            if !batch.is_empty() {
                shared.queued.fetch_add(batch.len(), Ordering::Relaxed);
                if tx.send(Msg::Events(batch)).is_err() {
                    return;
                }
                bump(notify);
            }
        }
        if must {
            answered = asked;
            if tx.send(Msg::Synced(asked)).is_err() {
                return;
            }
            bump(notify);
        }
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
    }
}
