//! What a session traces: a command it starts, a running process, or every process.

use crate::{
    probe::{self, ProbePlan},
    target::{self, Launched},
};

use super::TraceError;

/// What a session traces.
#[derive(Debug)]
pub enum Mode {
    /// A command, forked and paused before exec, with the plan for the allocator it will
    /// load; `follow`: its children too, each with its own table.
    Launch {
        /// The paused child.
        launched: Launched,
        /// Its probes.
        plan: ProbePlan,
        /// Follow its children through fork and exec.
        follow: bool,
    },
    /// A running process; `follow`: its children too (from the attach on).
    Attach {
        /// The process.
        pid: u32,
        /// Follow its children through fork and exec.
        follow: bool,
    },
    /// Every process that uses a probed allocator, new ones included, each reported as it
    /// ends.
    System,
}

impl Mode {
    /// Launch mode for `argv`: finds the program and its allocator and forks it paused.
    /// Call before any thread is started (see [`target::spawn_paused`]).
    pub fn launch(
        argv: &[String],
        allocator: Option<&str>,
        follow: bool,
    ) -> Result<Mode, TraceError> {
        let program = argv.first().map(String::as_str).unwrap_or_default();
        let path = target::resolve_program(program)?;
        let plan = probe::plan(&probe::candidates_of_program(&path)?, allocator)?;
        let launched = target::spawn_paused(&path, argv)?;
        Ok(Mode::Launch {
            launched,
            plan,
            follow,
        })
    }
}

/// The mode's kind, once the session has taken what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A command started by the session.
    Launch,
    /// A running process.
    Attach,
    /// Every process.
    System,
}
