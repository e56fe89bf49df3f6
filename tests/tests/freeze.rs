//! The ptrace thread stops every thread of a live process, reads its memory and registers, and
//! lets it go on exactly as it was: with a plain `--pid` target (seized for the freeze only),
//! with a followed one (`--pid --follow-forks`), and refusing one another tracer holds.
//!
//! The workload (workloads/freeze.c) runs spinning, sleeping and constantly created threads, so
//! a freeze that misses a thread leaves one running, which the checks below catch by its state.

use std::{
    collections::BTreeSet,
    process::ChildStdin,
    sync::mpsc,
    time::{Duration, Instant},
};

use muppy::target::{Frozen, Root, TargetError, Tracer, TreeEvent};
use muppy_tests::{
    Lines, Proc, field_u64, poll, send, signal, start_workload, state, task_states, tracer_pid,
};

/// Main, spinners and spawner; the sleepers come on top.
const THREADS_BUT_SLEEPERS: usize = 1 + 4 + 1;
const MARKER: u64 = 0x6d75_7070_7946_5a21;

struct Workload {
    /// How many threads it has at least.
    threads: usize,
    child: Proc,
    stdin: ChildStdin,
    lines: Lines,
    pid: u32,
    marker: u64,
    heap: u64,
    size: u64,
    guard: u64,
    page: u64,
    usr1: u64,
    /// A thread that lives as long as the process (a sleeper).
    sleeper: u32,
}

fn start() -> Workload {
    start_with(3)
}

fn start_with(sleepers: usize) -> Workload {
    let mut child = start_workload("freeze", &[&sleepers.to_string()]);
    let stdin = child.stdin();
    let lines = child.stdout();
    let ready = lines.wait_for("ready", 60).pop().expect("ready line");
    let value = |key| field_u64(&ready, key);
    Workload {
        threads: THREADS_BUT_SLEEPERS + sleepers,
        pid: u32::try_from(value("pid")).expect("pid"),
        marker: value("marker"),
        heap: value("heap"),
        size: value("size"),
        guard: value("guard"),
        page: value("page"),
        usr1: value("usr1"),
        sleeper: u32::try_from(value("sleeper")).expect("tid"),
        child,
        stdin,
        lines,
    }
}

impl Workload {
    /// Lets it finish; checks it saw `usr1` SIGUSR1s and found its memory untouched. A
    /// followed child of ours is reaped by the ptrace thread (in our thread group, so the
    /// kernel gives it the exit status), which tells its exit instead.
    fn finish(mut self, usr1: u32, followed: bool) {
        send(&mut self.stdin, "go");
        let done = self.lines.wait_for("done", 60).pop().expect("done line");
        assert_eq!(
            done,
            format!("done usr1={usr1} heap_same=1 spun=1 spawned>0=1"),
            "the workload did not go on as it was"
        );
        if followed {
            assert!(
                poll(30, || state(self.pid).is_none()),
                "the ptrace thread did not reap {}",
                self.pid
            );
        } else {
            let status = self.child.wait(60);
            assert!(status.success(), "{status}");
        }
    }
}

/// No thread stays stopped: a followed process's threads stop for a moment at each event
/// (the workload creates threads all the time), so only one stopped in every look is stuck.
fn check_none_stays_stopped(w: &Workload) {
    let mut stuck: Option<BTreeSet<u32>> = None;
    for _ in 0..20 {
        let now: BTreeSet<u32> = task_states(w.pid)
            .into_iter()
            .filter(|(_, s)| *s == 't')
            .map(|(t, _)| t)
            .collect();
        stuck = Some(match stuck {
            None => now,
            Some(s) => s.intersection(&now).copied().collect(),
        });
        std::thread::sleep(Duration::from_millis(5));
    }
    let stuck = stuck.unwrap_or_default();
    assert!(
        stuck.is_empty(),
        "threads {stuck:?} stay stopped after resume"
    );
}

/// (start, end, perms, name) of each mapping.
fn maps(pid: u32) -> Vec<(u64, u64, String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("maps")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = f[0].split_once('-').expect("range");
            (
                u64::from_str_radix(a, 16).expect("start"),
                u64::from_str_radix(b, 16).expect("end"),
                f[1].to_string(),
                f.get(5).map_or(String::new(), |s| (*s).to_string()),
            )
        })
        .collect()
}

/// Every thread of the process is stopped by the freeze, and the freeze names each.
fn check_all_stopped(w: &Workload, frozen: &Frozen) {
    let tids: BTreeSet<u32> = frozen.threads.iter().map(|t| t.tid).collect();
    assert!(
        tids.len() >= w.threads,
        "only {} threads frozen: {tids:?}",
        tids.len()
    );
    for (tid, state) in task_states(w.pid) {
        if matches!(state, 'Z' | 'X') {
            continue; // a short-lived thread that had already ended
        }
        assert_eq!(
            state, 't',
            "thread {tid} of {} is in state {state:?}: the freeze missed it (frozen: {tids:?})",
            w.pid
        );
        assert!(
            tids.contains(&tid),
            "thread {tid} is stopped but not in the freeze's list {tids:?}"
        );
    }
}

/// Registers look like the threads': the stack pointer inside a writable mapping (the main
/// thread's in [stack]), the instruction pointer inside an executable one.
fn check_registers(w: &Workload, frozen: &Frozen) {
    let maps = maps(w.pid);
    let find = |addr: u64| maps.iter().find(|(s, e, _, _)| *s <= addr && addr < *e);
    for t in &frozen.threads {
        let sp = t.regs.sp();
        let pc = t.regs.pc();
        let (_, _, perms, name) =
            find(sp).unwrap_or_else(|| panic!("thread {}: sp {sp:#x} is in no mapping", t.tid));
        assert!(
            perms.starts_with("rw"),
            "thread {}: sp {sp:#x} in {perms} {name}",
            t.tid
        );
        if t.tid == w.pid {
            assert_eq!(name, "[stack]", "main thread's sp {sp:#x}");
        }
        let (_, _, perms, name) =
            find(pc).unwrap_or_else(|| panic!("thread {}: pc {pc:#x} is in no mapping", t.tid));
        assert!(
            perms.contains('x'),
            "thread {}: pc {pc:#x} in {perms} {name}",
            t.tid
        );
    }
}

/// The marker, the patterned heap buffer, and the readable pages around an unreadable one.
fn check_memory(tracer: &Tracer, w: &Workload) {
    let t = Instant::now();
    let read = tracer
        .read(
            w.pid,
            &[
                w.marker..w.marker + 8,
                w.heap..w.heap + w.size,
                w.guard..w.guard + 3 * w.page,
            ],
        )
        .expect("read");
    let took = t.elapsed();
    // Again, now that this process's buffer pages are faulted in too.
    let t = Instant::now();
    let again = tracer
        .read(w.pid, std::slice::from_ref(&(w.heap..w.heap + w.size)))
        .expect("read");
    let warm = t.elapsed();
    assert_eq!(again[0].bytes, read[1].bytes);
    eprintln!(
        "read {} MiB in {took:?} ({:.2} GB/s), again in {warm:?} ({:.2} GB/s)",
        w.size >> 20,
        w.size as f64 / took.as_secs_f64() / 1e9,
        w.size as f64 / warm.as_secs_f64() / 1e9
    );
    let marker = read[0].get(w.marker, 8).expect("marker readable");
    assert_eq!(
        u64::from_le_bytes(marker.try_into().expect("8 bytes")),
        MARKER
    );
    let heap = &read[1];
    assert!(heap.unreadable.is_empty(), "{:?}", heap.unreadable);
    let wrong = heap
        .bytes
        .iter()
        .enumerate()
        .filter(|&(i, b)| u64::from(*b) != (i as u64 * 7 + 3) % 256)
        .count();
    assert_eq!(wrong, 0, "heap bytes differ from the workload's pattern");
    let guard = &read[2];
    assert_eq!(
        guard.unreadable,
        vec![w.guard + w.page..w.guard + 2 * w.page]
    );
    assert_eq!(guard.get(w.guard, 1), Some(&[0x11][..]));
    assert_eq!(guard.get(w.guard + 2 * w.page, 1), Some(&[0x22][..]));
}

fn usr1_count(tracer: &Tracer, w: &Workload) -> i32 {
    let r = tracer
        .read(w.pid, std::slice::from_ref(&(w.usr1..w.usr1 + 4)))
        .expect("read usr1");
    i32::from_le_bytes(r[0].get(w.usr1, 4).expect("usr1").try_into().expect("4"))
}

/// Freezes, checks, sends SIGUSR1 while frozen (it must wait), resumes; `times` rounds.
fn freeze_rounds(tracer: &Tracer, w: &Workload, followed: bool, times: u32) -> u32 {
    let mut sent = 0;
    for round in 0..times {
        let t = Instant::now();
        let frozen = tracer.freeze(w.pid).expect("freeze");
        let freeze_took = t.elapsed();
        check_all_stopped(w, &frozen);
        check_registers(w, &frozen);
        if round == 0 {
            check_memory(tracer, w);
            assert!(matches!(
                tracer.freeze(w.pid),
                Err(TargetError::AlreadyFrozen { .. })
            ));
        }
        let before = usr1_count(tracer, w);
        signal(w.pid, libc::SIGUSR1);
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
        check_all_stopped(w, &frozen);
        assert_eq!(
            usr1_count(tracer, w),
            before,
            "SIGUSR1 was handled during the freeze"
        );
        let t = Instant::now();
        tracer.resume(w.pid).expect("resume");
        let resume_took = t.elapsed();
        eprintln!(
            "round {round}: froze {} threads in {freeze_took:?} ({} passes), resumed in {resume_took:?}",
            frozen.threads.len(),
            frozen.passes
        );
        // The signal is delivered once the threads go on.
        assert!(
            poll(10, || usr1_count(tracer, w) != before),
            "SIGUSR1 was never delivered after resume"
        );
        let traced = frozen
            .threads
            .iter()
            .filter(|t| tracer_pid(t.tid) != 0)
            .count();
        if followed {
            assert!(
                tracer_pid(w.pid) != 0,
                "a followed process must stay followed"
            );
        } else {
            assert_eq!(traced, 0, "threads seized for the freeze must be detached");
        }
        check_none_stays_stopped(w);
        assert!(matches!(
            tracer.resume(w.pid),
            Err(TargetError::NotFrozen { .. })
        ));
    }
    sent
}

#[test]
fn freezes_a_plain_pid_reads_it_and_lets_it_go_on() {
    let w = start();
    let tracer = Tracer::start(None, false, |_, _| {}, |_| {}).expect("tracer");
    let sent = freeze_rounds(&tracer, &w, false, 5);
    drop(tracer);
    w.finish(sent, false);
}

#[test]
fn a_stopped_process_stays_stopped_and_dropping_the_tracer_resumes() {
    let w = start();
    let tracer = Tracer::start(None, false, |_, _| {}, |_| {}).expect("tracer");
    // Stopped by job control before the freeze: stopped (T) again after it, until SIGCONT.
    signal(w.pid, libc::SIGSTOP);
    assert!(
        poll(10, || task_states(w.pid)
            .iter()
            .all(|(_, s)| matches!(s, 'T' | 'Z' | 'X'))),
        "SIGSTOP did not stop it"
    );
    let frozen = tracer.freeze(w.pid).expect("freeze a stopped process");
    check_all_stopped(&w, &frozen);
    tracer.resume(w.pid).expect("resume");
    std::thread::sleep(Duration::from_millis(50));
    let states = task_states(w.pid);
    assert!(
        states.iter().all(|(_, s)| matches!(s, 'T' | 'Z' | 'X')),
        "a job-control stop must outlast the freeze: {states:?}"
    );
    signal(w.pid, libc::SIGCONT);
    // Frozen, then the handle dropped without a resume: every thread goes on, untraced.
    let frozen = tracer.freeze(w.pid).expect("freeze");
    check_all_stopped(&w, &frozen);
    drop(tracer);
    check_none_stays_stopped(&w);
    for t in &frozen.threads {
        assert_eq!(tracer_pid(t.tid), 0, "thread {} still traced", t.tid);
    }
    w.finish(0, false);
}

#[test]
fn freezes_hundreds_of_threads() {
    let w = start_with(300);
    let tracer = Tracer::start(None, false, |_, _| {}, |_| {}).expect("tracer");
    let sent = freeze_rounds(&tracer, &w, false, 3);
    drop(tracer);
    w.finish(sent, false);
}

#[test]
fn freezes_a_followed_process_and_it_stays_followed() {
    let w = start();
    let (ev_tx, ev_rx) = mpsc::channel();
    let (end_tx, end_rx) = mpsc::channel();
    let tracer = Tracer::start(
        Some(Root::Running(w.pid)),
        true,
        move |ev, release| {
            let _ = ev_tx.send(ev);
            drop(release);
        },
        move |r| {
            let _ = end_tx.send(r.map_err(|e| e.to_string()));
        },
    )
    .expect("follow");
    let sent = freeze_rounds(&tracer, &w, true, 5);
    let pid = w.pid;
    w.finish(sent, true);
    let exit = end_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the root's end is told");
    assert_eq!(exit.expect("followed to the end").shell_code(), 0);
    let events: Vec<TreeEvent> = ev_rx.try_iter().collect();
    assert!(
        events.contains(&TreeEvent::Exiting { pid }),
        "events: {events:?}"
    );
    drop(tracer);
}

#[test]
fn refuses_a_process_another_tracer_holds() {
    let w = start();
    // Another tracer holds one thread, not the first listed: the freeze has seized others by
    // the time it finds it, and must let them go.
    let tid = w.sleeper;
    let mut holder = start_workload("ptrace_holder", &[&tid.to_string()]);
    let holder_stdin = holder.stdin();
    let held = holder.stdout();
    held.wait_for("held", 60);
    let tracer = Tracer::start(None, false, |_, _| {}, |_| {}).expect("tracer");
    let err = tracer
        .freeze(w.pid)
        .expect_err("a thread has another tracer");
    assert!(
        matches!(err, TargetError::TracedByOther { tracer, tid: t, .. } if tracer == holder.pid() && t == tid),
        "{err:?}"
    );
    assert!(err.to_string().contains(&holder.pid().to_string()), "{err}");
    // Nothing of ours is left behind: no thread stopped, none traced but the holder's.
    for (t, state) in task_states(w.pid) {
        assert_ne!(state, 't', "thread {t} left stopped by a failed freeze");
        let by = tracer_pid(t);
        assert!(
            by == 0 || (t == tid && by == holder.pid()),
            "thread {t} left traced by {by}"
        );
    }
    drop(holder_stdin);
    assert!(
        holder.wait(30).success(),
        "the holder ends at the end of its input"
    );
    // Then the freeze works.
    let sent = freeze_rounds(&tracer, &w, false, 1);
    drop(tracer);
    w.finish(sent, false);
}
