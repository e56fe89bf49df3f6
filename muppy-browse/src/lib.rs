//! `muppy-trace browse`: a terminal browser over the core's model, live or over a snapshot.
//!
//! - [`app`]: the browser's state and what each key does to it, and the rows each view shows;
//!   no terminal involved, so tests drive it key by key.
//! - [`draw`]: one frame of the state, laid out to fit 80x24.
//! - [`term`]: the terminal (raw mode, alternate screen), restored on exit, Ctrl-C and panic,
//!   and the loop that reads keys and [`Update`]s.
//!
//! The browser knows no kernel: the tracer hands it owned copies of the heap ([`Update`])
//! through a channel, about once a second.

pub mod app;
pub mod draw;
pub mod term;

pub use app::{App, Ask, Key, Sort, View};
pub use term::{BrowseError, run};

use muppy_core::{analysis::RefReport, snapshot::Snapshot};

#[cfg(test)]
mod tests;

/// What the tracer tells the browser.
pub enum Update {
    /// The heap now (an owned copy, every block).
    Heap(Box<Snapshot>),
    /// A fact for the status line.
    Note(String),
    /// Who points at a block (a referrer search made for it).
    Referrers(Box<RefReport>),
    /// The heap as a leak check asked for ([`Ask::LeakCheck`]) found it: every block with its
    /// verdict, and the check's facts.
    Checked(Box<Snapshot>),
    /// A referrer search asked for ([`Ask::Referrers`]) could not be made, and why.
    NoReferrers {
        /// The block.
        addr: u64,
        /// Why (it was freed since, the process is gone).
        why: String,
    },
    /// The session is over (the command exited, the tracer stopped): the last heap stays.
    Ended(String),
    /// Leave, as `q` does (the tracer was asked to end: SIGTERM).
    Quit,
}
