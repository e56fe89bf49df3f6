//! What a session tells the world: typed events into a [`Sink`]. The command line's sink prints
//! them; a daemon would store them, a browser would update its views. The session itself
//! prints nothing.

use std::{fmt, path::PathBuf, time::Duration};

use muppy_core::{
    analysis::{LeakReport, RefReport},
    model::{CheckFacts, Exit},
    report::{Facts, ProcView},
};

use muppy_common::Drop;

/// Something that happened in a session.
pub enum SessionEvent<'a> {
    /// A fact for the user (stderr on the command line).
    Note(Note),
    /// The `--interval` tick: the processes being traced now (`several` when the report is
    /// about more than one process). The sink decides what changed since its last look.
    Tick {
        /// Every live process image.
        procs: Vec<ProcView<'a>>,
        /// Whether the session is about several processes (follow or system-wide).
        several: bool,
    },
    /// System-wide: a process ended; what it left live. Its table is dropped after this.
    Ended(ProcView<'a>),
    /// A leak check of the root process (`leaks`): at each tick and at the end.
    Leaks(LeakReport),
    /// Who points at one selected block (`refs`), at the end.
    Referrers(RefReport),
    /// A leak check asked for ([`Sink::request`]): the root's heap with each block's verdict,
    /// and the check's facts.
    Checked {
        /// The root, its blocks carrying their verdicts.
        view: ProcView<'a>,
        /// What the check did.
        facts: CheckFacts,
    },
    /// Long work under way, in steps (a leak check's stages): `step` of `steps` are done, and
    /// `what` is the one under way; `step == steps` when it is over.
    Progress {
        /// The step under way, in words.
        what: &'static str,
        /// Steps done.
        step: u32,
        /// Steps in all.
        steps: u32,
    },
    /// The end of the session: every image, the live ones first.
    Final {
        /// The images.
        procs: Vec<ProcView<'a>>,
        /// Whether the report is about several processes.
        several: bool,
        /// The session's facts.
        facts: Facts,
    },
}

/// Why a sink failed.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where a session's events go.
pub trait Sink {
    /// Takes one event. An error ends the session with that error.
    fn event(&mut self, ev: SessionEvent<'_>) -> Result<(), SinkError>;

    /// A check the user asked for since the last tick (the browser's referrers of a block, a
    /// daemon client's leak check of a process), made at this tick when the session takes
    /// requests ([`super::Options::on_request`]).
    fn request(&mut self) -> Option<super::Asked> {
        None
    }
}

/// A fact a session tells the user.
#[derive(Clone, Debug, PartialEq)]
pub enum Note {
    /// Tracing has begun (a script may take it as the sign).
    Tracing {
        /// `pid 1234` with its namespace pid, or `every process`.
        who: String,
        /// What was probed, in words.
        what: String,
        /// Whether Ctrl-C ends the session (not in launch mode, where the command's end does).
        until_ctrl_c: bool,
    },
    /// A library lacks some allocator functions.
    NotProbed {
        /// The library.
        path: PathBuf,
        /// What it lacks.
        missing: Vec<String>,
    },
    /// `--verbose`: where frees read their caller.
    Teardown {
        /// The library.
        path: PathBuf,
        /// The thread-teardown marker's offset, if the library has one.
        offset: Option<u64>,
    },
    /// `--verbose`: where one probe went and why.
    Probe {
        /// The library.
        path: PathBuf,
        /// The function(s).
        name: String,
        /// Where the probe sits.
        offset: u64,
        /// The function's entry.
        entry: u64,
        /// Why there.
        reason: String,
    },
    /// A process could not be traced.
    NotTraced {
        /// The process.
        pid: u32,
        /// Its program, where known.
        exe: Option<String>,
        /// Why.
        why: String,
    },
    /// System-wide: a process's allocator could not be probed.
    PlanFailed {
        /// What was to be probed.
        what: String,
        /// Why.
        why: String,
    },
    /// Following the command's children failed; it is still traced.
    NotFollowed {
        /// Why.
        why: String,
    },
    /// The traced process ended (how, when it was our child).
    TargetEnded {
        /// The process.
        pid: u32,
        /// How, when known.
        exit: Option<Exit>,
    },
    /// `--duration` ran out.
    Stopped {
        /// After this long.
        after: Duration,
    },
    /// Ctrl-C reached the command too; the session waits for it.
    WaitingForCommand,
    /// `--verbose`: how long one probe program ran.
    ProgramTime {
        /// The program.
        name: String,
        /// Runs.
        runs: u64,
        /// Total time.
        time: Duration,
    },
    /// Events were lost: figures may be off by that many blocks.
    LostEvents {
        /// How many.
        count: u64,
        /// How many for each reason.
        reasons: Vec<(Drop, u64)>,
    },
    /// Events from processes not traced were left out.
    ForeignEvents {
        /// How many.
        count: u64,
    },
    /// `--verbose`, `--unwind auto`: how one module's stacks are taken.
    Unwind {
        /// The module.
        path: PathBuf,
        /// Whether its code keeps frame pointers (walked in the kernel) or not (copied and
        /// unwound with its call frame information), and what that was decided from.
        how: crate::unwind::FramePointers,
    },
    /// `--verbose`: what the stack copies cost the reader.
    StackCost {
        /// Copies unwound.
        copies: u64,
        /// Bytes of stack they held.
        bytes: u64,
        /// Time spent unwinding them.
        time: Duration,
        /// Frames they gave.
        frames: u64,
        /// Distinct call paths interned, from copies and walks.
        paths: usize,
    },
    /// `--verbose`: allocator calls under way as their probes were placed (not lost: their
    /// blocks belong before tracing began, with what a process traced from mid-run had).
    UnderWayAtAttach {
        /// How many.
        count: u64,
    },
    /// Allocations without their stack.
    LostStacks {
        /// How many.
        count: u64,
    },
    /// `--save` wrote a snapshot.
    Saved {
        /// Blocks saved.
        blocks: usize,
        /// Whose.
        pid: u32,
        /// Where.
        path: PathBuf,
    },
    /// `--save` had no heap to save.
    NothingToSave,
    /// A leak check or referrer search could not be made.
    CheckFailed {
        /// Why.
        why: String,
    },
    /// `refs --site` selected no live block.
    NoBlockSelected,
    /// The ring's reader could not be given a real-time priority: with more busy threads than
    /// CPUs, the ring may fill while it waits for one.
    NotRealtime,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Tracing {
                who,
                what,
                until_ctrl_c,
            } => {
                write!(f, "tracing {who}: {what}")?;
                if *until_ctrl_c {
                    f.write_str("; Ctrl-C to stop")?;
                }
                Ok(())
            }
            Note::NotProbed { path, missing } => write!(
                f,
                "{} has no {}; not probed",
                path.display(),
                missing.join(", ")
            ),
            Note::Teardown {
                path,
                offset: Some(t),
            } => write!(
                f,
                "probe thread teardown at {}+{t:#x}: frees read their caller only while a thread is in teardown",
                path.display()
            ),
            Note::Teardown { path, offset: None } => write!(
                f,
                "{} has no thread-teardown marker: every free reads its caller (≈60 ns more)",
                path.display()
            ),
            Note::Probe {
                path,
                name,
                offset,
                entry,
                reason,
            } => write!(
                f,
                "probe {name} at {}+{offset:#x}, entry {entry:#x} {reason}",
                path.display()
            ),
            Note::NotTraced {
                pid,
                exe: Some(exe),
                why,
            } => write!(f, "pid {pid} ({exe}) is not traced: {why}"),
            Note::NotTraced {
                pid,
                exe: None,
                why,
            } => write!(f, "pid {pid} is not traced: {why}"),
            Note::PlanFailed { what, why } => write!(f, "{what}: {why}"),
            Note::NotFollowed { why } => write!(
                f,
                "{why}; sites in libraries unloaded at exit may stay unnamed"
            ),
            Note::TargetEnded { pid, exit: Some(e) } => write!(f, "pid {pid} {e}"),
            Note::TargetEnded { pid, exit: None } => write!(f, "pid {pid} exited"),
            Note::Stopped { after } => write!(f, "stopped after {}s", after.as_secs_f64()),
            Note::WaitingForCommand => {
                f.write_str("waiting for the command to exit (Ctrl-C again to stop now)")
            }
            Note::ProgramTime { name, runs, time } => {
                #[expect(clippy::cast_precision_loss, reason = "a mean, shown rounded")]
                let each = time.as_nanos() as f64 / *runs as f64;
                write!(f, "{name}: {runs} runs, {each:.0} ns each")
            }
            Note::LostEvents { count, reasons } => {
                let why: Vec<String> = reasons
                    .iter()
                    .map(|(d, n)| format!("{n}: {}", d.describe()))
                    .collect();
                write!(
                    f,
                    "warning: {count} events were lost ({}); figures may be off by that many blocks",
                    why.join("; ")
                )
            }
            Note::ForeignEvents { count } => write!(
                f,
                "warning: {count} events came from processes muppy was not tracing and were left out"
            ),
            Note::Unwind { path, how } => write!(
                f,
                "stacks in {}: {} ({} of {} functions' call frame information uses the frame pointer)",
                path.display(),
                if how.kept() {
                    "frame pointers, walked in the kernel"
                } else {
                    "no frame pointers, copied and unwound with .eh_frame"
                },
                how.rbp_cfa,
                how.fdes
            ),
            Note::StackCost {
                copies,
                bytes,
                time,
                frames,
                paths,
            } => {
                #[expect(clippy::cast_precision_loss, reason = "means, shown rounded")]
                let (each, per_frame) = (
                    time.as_nanos() as f64 / (*copies).max(1) as f64,
                    time.as_nanos() as f64 / (*frames).max(1) as f64,
                );
                write!(
                    f,
                    "stacks: {copies} copies ({bytes} bytes) unwound in {:.1} ms, {each:.0} ns each, {per_frame:.0} ns a frame; {paths} distinct call paths",
                    time.as_secs_f64() * 1e3
                )
            }
            Note::UnderWayAtAttach { count } => write!(
                f,
                "{count} allocator calls were under way as their probes were placed: their blocks count with what was allocated before tracing began"
            ),
            Note::LostStacks { count } => write!(
                f,
                "warning: {count} allocations have no stack (the ring had no room for it); their sites are exact; try a larger --ring-mb, or --sample-bytes"
            ),
            Note::Saved { blocks, pid, path } => write!(
                f,
                "saved {blocks} live blocks of pid {pid} to {}",
                path.display()
            ),
            Note::NothingToSave => {
                f.write_str("nothing to save: --save keeps the traced command's (or --pid's) heap")
            }
            Note::CheckFailed { why } => write!(f, "no check made: {why}"),
            Note::NoBlockSelected => f.write_str(
                "no live block matches --site at the check; `muppy-trace objects` lists the live blocks",
            ),
            Note::NotRealtime => f.write_str(
                "the ring's reader could not get a real-time priority; with more busy threads than CPUs, events may be lost",
            ),
        }
    }
}
