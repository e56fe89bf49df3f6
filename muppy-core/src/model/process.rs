//! Who a traced process is and how it ended: facts the collector learns from `/proc` and
//! ptrace, and the reports print.

use std::fmt;

/// Who a process is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Its pid as the tracer's pid namespace sees it.
    pub pid: u32,
    /// Its pid in its own pid namespace, where that differs (a container).
    pub ns_pid: Option<u32>,
    /// Its command name.
    pub comm: String,
}

impl Identity {
    /// `1234` or `1234 (1 in its namespace)`.
    pub fn pids(&self) -> String {
        match self.ns_pid {
            Some(n) => format!("{} ({n} in its namespace)", self.pid),
            None => self.pid.to_string(),
        }
    }
}

/// How a target ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It called exit with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// The exit code a shell would report: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// The usual names of the signals that end processes, for messages.
fn signal_name(s: i32) -> &'static str {
    match s {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        16 => "SIGSTKFLT",
        17 => "SIGCHLD",
        18 => "SIGCONT",
        19 => "SIGSTOP",
        20 => "SIGTSTP",
        21 => "SIGTTIN",
        22 => "SIGTTOU",
        23 => "SIGURG",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        26 => "SIGVTALRM",
        27 => "SIGPROF",
        28 => "SIGWINCH",
        29 => "SIGIO",
        30 => "SIGPWR",
        31 => "SIGSYS",
        _ => "?",
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => write!(f, "was killed by signal {s} ({})", signal_name(*s)),
        }
    }
}

/// How a process image ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The process exited (or a signal killed it).
    Exit(Exit),
    /// It exec'd this program, which replaced the image's heap.
    Exec(String),
    /// It is gone; how it ended was not seen (system-wide tracing).
    Gone,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Exit(e) => write!(f, "{e}"),
            End::Exec(p) => write!(f, "exec'd {p}"),
            End::Gone => write!(f, "exited"),
        }
    }
}

/// Memory a process mapped itself, outside the allocator, at one site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapRow {
    /// The site.
    pub site: super::Frame,
    /// Ranges (a range split by a partial munmap counts twice).
    pub regions: u64,
    /// Bytes, whole pages.
    pub bytes: u64,
}
