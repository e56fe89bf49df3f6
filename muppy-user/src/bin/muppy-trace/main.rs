//! `muppy-trace`: trace a running process (`--pid N`) or a command (`-- CMD ARGS...`) and print
//! what it leaves allocated, per allocation site.
//!
//! Exit codes: 0 when tracing a pid went well; in launch mode, the command's own exit code
//! (128 + signal if a signal killed it); 2 for any error, with a one-line message on stderr.
//!
//! Its man page and shell completions are generated from this clap definition, the one that
//! makes `--help` (`muppy-trace --generate man|bash|zsh|fish`, hidden; `cargo xtask install`
//! installs them): see `generate.rs`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use muppy::{
    probe::ProbeConfig,
    session::{self, CheckSpec, Mode, Options, SessionEvent, Sink, SinkError},
    symbols,
};
use muppy_common::StackMode;
use muppy_core::{
    analysis::{self, GroupBy, Summary},
    model::{CheckFacts, Filter, LeakKind},
    report::{self, Facts, Format, Print, ProcView, ReportError, View, ViewOptions},
    snapshot::Snapshot,
};
use progress::{Bar, Unit};

mod browse;
mod daemon;
mod generate;
mod progress;

/// Trace heap allocations of an unmodified process and show what stays live: per site,
/// function, stack or size; every block; or who allocated them as a tree.
#[derive(Debug, Parser)]
#[command(name = "muppy-trace", version, help_expected = true)]
#[command(args_conflicts_with_subcommands = true)]
#[command(after_help = "Examples:
  sudo muppy-trace --pid 1234 --interval 5
  sudo muppy-trace --format json -- ./my-program arg
  sudo muppy-trace --group-by stack --save before.muppy -- ./my-program
  sudo muppy-trace tree --site 'parse_.*' -- ./my-program
  sudo muppy-trace leaks --pid 1234 --interval 60
  sudo muppy-trace refs --pid 1234 --addr 0x55d0c1a2b3c0
  muppy-trace diff before.muppy after.muppy")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    trace: TraceArgs,
    #[command(flatten)]
    view: ViewArgs,
    /// Packaging: write the man page or a shell's completion script, generated from this
    /// definition, to stdout (`cargo xtask install` installs them).
    #[arg(long, hide = true, value_enum, value_name = "WHAT", exclusive = true)]
    generate: Option<generate::Output>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List every live block: address, size, age, thread and site (Pympler's get_objects).
    Objects {
        /// Read this snapshot instead of tracing.
        #[arg(value_name = "SNAPSHOT")]
        file: Option<PathBuf>,
        #[command(flatten)]
        trace: TraceArgs,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Show who allocated the selected blocks, as a tree rooted at each allocation site with
    /// its callers branching off (Pympler's ConsoleBrowser.print_tree).
    Tree {
        /// Read this snapshot instead of tracing.
        #[arg(value_name = "SNAPSHOT")]
        file: Option<PathBuf>,
        /// Root the tree at the live block at this address (0x...).
        #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
        addr: Option<u64>,
        /// Caller levels to show below each root.
        #[arg(long, value_name = "N", default_value_t = 8)]
        maxdepth: usize,
        #[command(flatten)]
        trace: TraceArgs,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Find leaks as Valgrind's memcheck does, in the running process: definitely,
    /// indirectly, possibly lost and still reachable blocks per site. Checks at the end (and
    /// every --interval); a launched command is checked at its exit. Or show a snapshot's.
    Leaks {
        /// Read the verdicts saved in this snapshot (`leaks --save`) instead of tracing.
        #[arg(value_name = "SNAPSHOT")]
        file: Option<PathBuf>,
        /// For each still-reachable row, show the shortest path from a root to one of its
        /// blocks: why it is not freed.
        #[arg(long)]
        retention: bool,
        #[command(flatten)]
        trace: TraceArgs,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Show who points at a block, found in the process's memory: the blocks and roots
    /// (globals, stack frames, registers, TLS) that hold it, as a tree (Pympler's refbrowser).
    Refs {
        /// The live block at this address (0x...); or select blocks with --site.
        #[arg(long, value_name = "ADDR", value_parser = parse_addr, required_unless_present = "site")]
        addr: Option<u64>,
        /// Levels of referrers to follow.
        #[arg(long, value_name = "N", default_value_t = REFS_MAXDEPTH)]
        maxdepth: usize,
        /// Roots shown per block.
        #[arg(long, value_name = "N", default_value_t = REFS_MAX_ROOTS)]
        max_roots: usize,
        #[command(flatten)]
        trace: TraceArgs,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Browse the heap in the terminal: the summary with its growth, call trees, a function's
    /// callers and callees, a row's blocks, leak verdicts, a block's referrers, and live bytes
    /// over time; live while tracing (--pid PID, -- CMD) or over a snapshot. q quits (a --pid
    /// target is left running as it was found; a command is sent SIGTERM).
    Browse {
        /// Browse this snapshot instead of tracing.
        #[arg(value_name = "SNAPSHOT")]
        file: Option<PathBuf>,
        /// Show each row's growth against this snapshot too.
        #[arg(long, value_name = "A.muppy")]
        baseline: Option<PathBuf>,
        #[command(flatten)]
        trace: TraceArgs,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Run in the background of a machine, tracing --all (sampled by default) or --pid (one or
    /// several), and answer queries over a Unix socket: processes, summaries, diffs since a
    /// snapshot, objects, leak checks, referrers, Prometheus metrics and Go heap profiles.
    /// Stops on SIGTERM, writing the log's final record; SIGHUP reopens the log.
    #[command(
        mut_args(daemon_arg),
        override_usage = "muppy-trace daemon [OPTIONS] --all | --pid PID..."
    )]
    Daemon {
        #[command(flatten)]
        trace: TraceArgs,
        #[command(flatten)]
        daemon: daemon::DaemonArgs,
    },
    /// Ask a running daemon: the same tables and JSON as the other commands.
    Query(daemon::QueryArgs),
    /// Summarize a saved snapshot.
    Summary {
        /// A file written by --save.
        #[arg(value_name = "SNAPSHOT")]
        file: PathBuf,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Show what changed from snapshot A to snapshot B (Pympler's get_diff).
    Diff {
        /// The earlier snapshot.
        #[arg(value_name = "A")]
        a: PathBuf,
        /// The later snapshot.
        #[arg(value_name = "B")]
        b: PathBuf,
        #[command(flatten)]
        view: ViewArgs,
    },
}

/// The trace options as the daemon shows them: those that do not apply to it stay out of its
/// help (each is refused with a one-line reason if given), and `--interval` is its tick.
fn daemon_arg(a: clap::Arg) -> clap::Arg {
    match a.get_id().as_str() {
        "follow_forks" | "save" | "top_procs" => a.hide(true),
        // Out of both helps without `hide`, which clap_complete's zsh script trips on for a
        // positional that another argument conflicts with.
        "command" => a.hide_short_help(true).hide_long_help(true),
        "interval" => a.help(
            "The tick: every SECS seconds (default 0.25) the tables are drained and the heaps \
             clients asked for are copied",
        ),
        _ => a,
    }
}

/// What to trace and for how long.
#[derive(Debug, Args)]
#[command(next_help_heading = "Trace options")]
struct TraceArgs {
    /// Trace this running process. The daemon takes several (`--pid A --pid B`, or `A,B`),
    /// traced as --all is, the others left out in the kernel.
    #[arg(
        short,
        long,
        value_name = "PID",
        value_delimiter = ',',
        conflicts_with_all = ["command", "all"]
    )]
    pid: Vec<u32>,

    /// Trace every process that uses a probed allocator, new ones included, each with its own
    /// table; processes that end are reported as they go.
    #[arg(long, conflicts_with = "command")]
    all: bool,

    /// With --all: trace only the processes whose command name matches this regular
    /// expression, as they start or exec (and those running at the start).
    #[arg(long, value_name = "REGEX", requires = "all")]
    comm: Option<String>,

    /// With --all: trace only the processes in this cgroup (a v2 path, as in
    /// /proc/PID/cgroup: /system.slice/nginx.service) or below it.
    #[arg(long, value_name = "PATH", requires = "all")]
    cgroup: Option<String>,

    /// Trace the target's children too, each with its own table, following exec into other
    /// programs (and their allocators). On by default with -- CMD; off with --pid.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    follow_forks: Option<bool>,

    /// Processes shown in full when several are traced (the process table lists the -n
    /// largest).
    #[arg(long, value_name = "N", default_value_t = 5)]
    top_procs: usize,

    /// Stop after SECS seconds.
    #[arg(short, long, value_name = "SECS")]
    duration: Option<f64>,

    /// Print a diff of the live summary every SECS seconds.
    #[arg(short, long, value_name = "SECS")]
    interval: Option<f64>,

    /// Save the final live set to a snapshot file, for `summary FILE` and `diff A B`.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,

    /// Also trace the anonymous memory the program maps itself (mmap, munmap, mremap made
    /// outside the allocator), shown apart from the heap. Costs every system call on the
    /// machine a little while on (uretprobes return through one: ≈90 ns per allocation).
    #[arg(long)]
    mmap: bool,

    /// Do not record call stacks (cheaper; sites stay exact).
    #[arg(long)]
    no_stacks: bool,

    /// How call stacks are taken: `fp` walks frame pointers in the kernel (cheap, but stops
    /// at the first function built without them, as most distributions build); `dwarf` copies
    /// the stack at each allocation and unwinds it with the modules' .eh_frame (full stacks,
    /// ≈1 µs more per stack: combine with --sample-bytes on busy services); `auto` decides per
    /// module, walking code that keeps frame pointers and copying the rest (--verbose says
    /// which). System-wide (--all), auto walks frame pointers.
    #[arg(long, value_name = "HOW", default_value = "auto")]
    unwind: Unwind,

    /// With dwarf stacks: bytes of stack copied above the stack pointer (4K, 8K, 16K or 32K).
    /// Deeper stacks keep their innermost frames and say they were cut.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "8K")]
    stack_bytes: u64,

    /// Sample allocations instead of recording all: on average one sample every BYTES bytes
    /// allocated, byte-weighted (Poisson), as tcmalloc's and jemalloc's heap profilers do.
    /// Figures become estimates; unsampled blocks and their frees cost no event. On by
    /// default at 512K for --all and the daemon, where every process on the machine sends
    /// events; 0 records every block.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    sample_bytes: Option<u64>,

    /// Testing only: per-thread in-flight slots (a power of two); 1 sends every thread but one
    /// to the fallback map.
    #[arg(long, hide = true, default_value_t = 1 << 16)]
    inflight_slots: u32,

    /// Benchmark only: attach empty programs at the same points and record nothing.
    #[arg(long, hide = true)]
    empty_probes: bool,

    /// Probe this allocator instead of the one detected: a library path, or part of a file
    /// name the target maps (glibc, jemalloc, tcmalloc, mimalloc...).
    #[arg(long, value_name = "LIB")]
    allocator: Option<String>,

    /// Ring buffer size in MiB (a power of two). Default 2 with --unwind fp or --no-stacks; 16
    /// where stacks may be copied (kilobytes each), and with --all, where every process on
    /// the machine shares it and bursts of process start-ups are common.
    #[arg(long, value_name = "MIB")]
    ring_mb: Option<u32>,

    /// Say where each probe went and why, and at the end how long each probe program ran.
    #[arg(short, long)]
    verbose: bool,

    /// The command to start and trace from its first allocation.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

impl TraceArgs {
    fn wants_target(&self) -> bool {
        !self.pid.is_empty() || self.all || !self.command.is_empty()
    }

    /// The one running process to trace, if given.
    fn one_pid(&self) -> anyhow::Result<Option<u32>> {
        match self.pid[..] {
            [] => Ok(None),
            [pid] => Ok(Some(pid)),
            _ => bail!(
                "--pid: this command traces one running process; the daemon traces several \
                 (muppy-trace daemon --pid A --pid B), and --all --comm REGEX selects by name"
            ),
        }
    }

    /// Whether probes go on every process (--all, or the daemon's several pids).
    fn system_wide(&self) -> bool {
        self.all || self.pid.len() > 1
    }
}

/// How to show what was found.
#[derive(Debug, Args)]
#[command(next_help_heading = "View options")]
struct ViewArgs {
    /// Table rows to show (JSON always has every row).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 15)]
    top: usize,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,

    /// Write the report to FILE instead of stdout (created or replaced).
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// What the summary and diff rows are.
    #[arg(long, value_enum, default_value_t = Grouping::Site)]
    group_by: Grouping,

    /// Only blocks with a frame of their call path matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    site: Option<String>,

    /// Only blocks of at least this size (bytes; K, M, G suffixes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    min_size: Option<u64>,

    /// Only blocks of at most this size (bytes; K, M, G suffixes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,

    /// Only blocks allocated at least SECS seconds ago.
    #[arg(long, value_name = "SECS")]
    older_than: Option<f64>,

    /// Only blocks a leak check found to be of this kind (a snapshot saved by `leaks --save`).
    #[arg(long, value_enum, value_name = "KIND")]
    kind: Option<Kind>,

    /// Fit tables in COLS columns, shortening the names that do not fit (their least telling
    /// parts first; the module or file:line stays); 0 for no limit. Default: the terminal's
    /// width ($COLUMNS if set, else the terminal's size) when stdout is a terminal; no limit
    /// when it is a pipe or a file. JSON is never shortened.
    #[arg(long, value_name = "COLS")]
    width: Option<usize>,

    /// Show names in full, however wide the table gets.
    #[arg(long)]
    full_names: bool,

    /// Show function and symbol names demangled (yes) or as the files store them (no:
    /// `_ZN...`), in tables and JSON. Names are fixed when traced: a snapshot keeps those it
    /// was saved with.
    #[arg(long, value_enum, default_value_t = Demangle::Yes)]
    demangle: Demangle,
}

/// `--unwind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Unwind {
    /// The kernel's frame-pointer walk.
    Fp,
    /// A copy of the stack, unwound with .eh_frame.
    Dwarf,
    /// Per module: frame pointers where kept, else a copy.
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Demangle {
    /// Readable names: `ns::Type<int>::f(int)`.
    Yes,
    /// Symbol names as stored: `_ZN2ns4TypeIiE1fEi`.
    No,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
#[clap(rename_all = "snake_case")]
enum Kind {
    /// Pointed at by nothing reachable; leads its group of lost blocks.
    DefinitelyLost,
    /// Reached only from definitely lost blocks.
    IndirectlyLost,
    /// Reached only through a pointer into its middle.
    PossiblyLost,
    /// Reached from a root.
    Reachable,
}

impl Kind {
    fn model(self) -> LeakKind {
        match self {
            Kind::DefinitelyLost => LeakKind::DefinitelyLost,
            Kind::IndirectlyLost => LeakKind::IndirectlyLost,
            Kind::PossiblyLost => LeakKind::PossiblyLost,
            Kind::Reachable => LeakKind::Reachable,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutputFormat {
    /// Pympler-style tables.
    Table,
    /// JSON Lines.
    Json,
    /// Folded stacks, root first: `main;parse;leaf 4096` (bytes), for flame graph tools.
    Folded,
    /// A flame graph (SVG), bytes as the width; `diff A B` draws a differential one.
    Flamegraph,
    /// One self-contained HTML page: sortable tables, the call tree, a flame graph.
    Html,
    /// A gzipped pprof heap profile, as Go writes them (`go tool pprof`, Pyroscope, Parca).
    Pprof,
}

impl OutputFormat {
    fn model(self) -> Format {
        match self {
            OutputFormat::Table => Format::Table,
            OutputFormat::Json => Format::Json,
            OutputFormat::Folded => Format::Folded,
            OutputFormat::Flamegraph => Format::Flamegraph,
            OutputFormat::Html => Format::Html,
            OutputFormat::Pprof => Format::Pprof,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Grouping {
    /// The allocation site: function (file:line).
    Site,
    /// The function that called the allocator.
    Function,
    /// The whole call stack.
    Stack,
    /// The block size.
    Size,
}

fn parse_addr(s: &str) -> Result<u64, String> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"));
    match hex {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|_| format!("{s:?} is not an address (0x... or decimal)"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit.trim().to_ascii_uppercase().trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("{s:?} is not a size (bytes, or with K, M, G)")),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a size (bytes, or with K, M, G)"))
}

fn seconds(v: Option<f64>, flag: &str) -> anyhow::Result<Option<Duration>> {
    v.map(|s| {
        Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero())
            .with_context(|| format!("{flag} takes a positive number of seconds, not {s}"))
    })
    .transpose()
}

/// The regular expression `s` given to `flag`, or why it is not one (the regex crate's last
/// line, which says what is wrong where).
fn regex_flag(flag: &str, s: &str) -> anyhow::Result<regex::Regex> {
    regex::Regex::new(s).map_err(|e| {
        let why = e.to_string();
        anyhow::anyhow!(
            "{flag}: not a regular expression: {}",
            why.lines().last().unwrap_or_default().trim()
        )
    })
}

fn view_options(v: &ViewArgs, view: View) -> anyhow::Result<ViewOptions> {
    let site = v
        .site
        .as_deref()
        .map(|s| regex_flag("--site", s))
        .transpose()?;
    let older_than = match v.older_than {
        Some(0.0) => None,
        other => seconds(other, "--older-than")?,
    };
    let format = v.format.model();
    Ok(ViewOptions {
        view,
        group_by: match v.group_by {
            // A flame graph's paths are whole stacks (a diff's, a leak check's), whatever the
            // tables would group by.
            _ if matches!(format, Format::Folded | Format::Flamegraph) => GroupBy::Stack,
            Grouping::Site => GroupBy::Site,
            Grouping::Function => GroupBy::Function,
            Grouping::Stack => GroupBy::Stack,
            Grouping::Size => GroupBy::Size,
        },
        filter: Filter {
            site,
            min_size: v.min_size,
            max_size: v.max_size,
            older_than,
            kind: v.kind.map(Kind::model),
        },
        top: v.top,
        format,
        // A target's option (--top-procs), set by `live`; a snapshot is one process.
        top_procs: 0,
        width: match v.width {
            Some(0) => None,
            Some(cols) => Some(cols),
            None => terminal_width(),
        },
        full_names: v.full_names,
        output: v.output.clone(),
    })
}

/// The sampling of --all and the daemon, unless told: one sample every 512 KiB allocated on
/// average, as tcmalloc's heap profiler samples, so that a busy machine's events stay few.
const DEFAULT_SAMPLE_BYTES: u64 = 512 * 1024;

/// `refs`' levels of referrers and roots per block, unless told; the browser's searches too.
const REFS_MAXDEPTH: usize = 4;
const REFS_MAX_ROOTS: usize = 20;

/// The `-o` file this run created, so that a run that fails before writing anything into it
/// (a report the format refuses) does not leave an empty file behind.
static CREATED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Where a report goes: `-o FILE`, else stdout. A format made for programs (a profile, an
/// SVG, a page) is not written to a terminal.
fn destination(view: &ViewOptions) -> anyhow::Result<Box<dyn std::io::Write>> {
    match &view.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("-o: cannot create {}", path.display()))?;
            let _ = CREATED.set(path.clone());
            Ok(Box::new(std::io::BufWriter::new(file)))
        }
        None => {
            // SAFETY: isatty only looks at the descriptor.
            let tty = unsafe { libc::isatty(libc::STDOUT_FILENO) } == 1;
            if tty && view.format.for_programs() {
                bail!(
                    "--format {} is not for a terminal: write it to a file with -o FILE, or pipe it",
                    view.format.name()
                );
            }
            Ok(Box::new(std::io::stdout()))
        }
    }
}

/// The width of the terminal stdout is, or `None` when stdout is not a terminal (a pipe, a
/// file): see [`width_for`].
fn terminal_width() -> Option<usize> {
    // SAFETY: isatty only looks at the descriptor.
    if unsafe { libc::isatty(libc::STDOUT_FILENO) } != 1 {
        return None;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` where the pointer points, at one.
    let got = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &raw mut size) } == 0;
    let columns = std::env::var("COLUMNS").ok();
    width_for(got.then_some(usize::from(size.ws_col)), columns.as_deref())
}

/// A terminal's width: `$COLUMNS` where it is set to a positive number (POSIX: it overrides the
/// size the system gives, as `ls` takes it), else the size the terminal reports; `None` (no
/// limit) where neither says (a serial line that reports 0 columns).
fn width_for(reported: Option<usize>, columns: Option<&str>) -> Option<usize> {
    let positive = |w: &usize| *w > 0;
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(positive)
        .or(reported.filter(positive))
}

/// Errs when `--demangle=no` asks to re-read names a snapshot already holds.
fn names_as_saved(v: &ViewArgs) -> anyhow::Result<()> {
    if v.demangle == Demangle::No {
        bail!(
            "a snapshot holds the names it was saved with: --demangle=no applies when tracing (save with `--demangle=no --save FILE`)"
        );
    }
    Ok(())
}

fn options(t: &TraceArgs) -> anyhow::Result<Options> {
    // Stack copies are kilobytes each: a burst of them needs room while the reader wakes.
    let copies = !t.no_stacks && !t.system_wide() && t.unwind != Unwind::Fp;
    let ring_mb = t
        .ring_mb
        .unwrap_or(if t.system_wide() || copies { 16 } else { 2 });
    if !ring_mb.is_power_of_two() || ring_mb > 1024 {
        bail!("--ring-mb takes a power of two up to 1024, not {ring_mb}");
    }
    if !t.inflight_slots.is_power_of_two() {
        bail!("--inflight-slots takes a power of two");
    }
    let stack_pages = match t.stack_bytes {
        4096 => 2,
        8192 => 3,
        16384 => 5,
        32768 => 9,
        n => bail!("--stack-bytes takes 4K, 8K, 16K or 32K, not {n}"),
    };
    let stack_mode = match t.unwind {
        _ if t.no_stacks => StackMode::Off,
        Unwind::Fp => StackMode::Fp,
        Unwind::Dwarf => StackMode::Dwarf,
        Unwind::Auto if t.system_wide() => StackMode::Fp,
        Unwind::Auto => StackMode::Auto,
    };
    let select = select(t)?;
    Ok(Options {
        interval: seconds(t.interval, "--interval")?,
        duration: seconds(t.duration, "--duration")?,
        save: t.save.clone(),
        label: match t.pid[..] {
            [pid] => format!("pid {pid}"),
            [] if t.all => "all processes".into(),
            [] => t.command.join(" "),
            ref pids => format!(
                "pids {}",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        verbose: t.verbose,
        probe: ProbeConfig {
            ring_bytes: ring_mb << 20,
            max_inflight: 16384,
            slots: t.inflight_slots,
            stack_mode,
            stack_pages,
            empty: t.empty_probes,
            sample_bytes: t
                .sample_bytes
                .unwrap_or(if t.all { DEFAULT_SAMPLE_BYTES } else { 0 }),
            max_sampled: 1 << 20,
            all_mappings: t.system_wide(),
            selecting: select.is_some(),
        },
        mappings: t.mmap,
        allocator: t.allocator.clone(),
        check: None,
        on_request: false,
        select,
    })
}

/// `--comm` and `--cgroup`: which processes `--all` traces; the daemon's several pids.
fn select(t: &TraceArgs) -> anyhow::Result<Option<session::Select>> {
    if t.comm.is_none() && t.cgroup.is_none() && t.pid.len() < 2 {
        return Ok(None);
    }
    let comm = t
        .comm
        .as_deref()
        .map(|s| regex_flag("--comm", s))
        .transpose()?;
    if let Some(c) = &t.cgroup
        && !c.starts_with('/')
    {
        bail!("--cgroup takes a path as /proc/PID/cgroup shows it, starting with /: not {c:?}");
    }
    Ok(Some(session::Select {
        comm,
        cgroup: t.cgroup.clone(),
        pids: (t.pid.len() > 1).then(|| t.pid.iter().copied().collect()),
    }))
}

/// What a printer's failure means here: a reader that went away (a pager that quit early, a
/// closed pipe) ends nothing; any other failure is one (a full disk under `-o FILE`).
fn shown(r: Result<(), ReportError>) -> Result<(), ReportError> {
    match r {
        Err(ReportError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The command line's sink: notes on stderr, reports on stdout through the printer chosen
/// once, and the diff at each tick against what the last tick showed.
struct CliSink {
    printer: Box<dyn Print>,
    view: ViewOptions,
    /// Per pid, the summary shown at the last tick.
    prev: HashMap<u32, Summary>,
    /// The session checks (`leaks`, `refs`): their reports replace the summary.
    checking: bool,
    /// A long check's bar, while one is under way.
    bar: Option<Bar>,
}

impl CliSink {
    fn tick(&mut self, procs: &[ProcView], several: bool) -> Result<(), ReportError> {
        for p in procs {
            let cur = analysis::summarize(&p.heap, &self.view.filter, self.view.group_by);
            let old = self.prev.remove(&p.id.pid).unwrap_or_else(|| Summary {
                pid: p.id.pid,
                group_by: self.view.group_by,
                ..Summary::default()
            });
            let d = analysis::diff(&old, &cur);
            self.prev.insert(p.id.pid, cur);
            if !several {
                shown(self.printer.diff(&d, None))?;
            } else if !d.rows.is_empty() {
                shown(self.printer.diff(&d, Some(&p.id)))?;
            }
        }
        Ok(())
    }
}

impl Sink for CliSink {
    fn event(&mut self, ev: SessionEvent<'_>) -> Result<(), SinkError> {
        match ev {
            SessionEvent::Note(n) => {
                if let Some(bar) = &mut self.bar {
                    bar.finish();
                }
                eprintln!("muppy-trace: {n}");
            }
            SessionEvent::Progress { what, step, steps } => {
                let bar = self.bar.get_or_insert_with(|| Bar::new(what, Unit::Steps));
                bar.stage(what);
                bar.set(step.into(), steps.into());
                if step == steps {
                    self.bar = None;
                }
            }
            SessionEvent::Tick { procs, several } => self.tick(&procs, several)?,
            SessionEvent::Ended(p) => shown(self.printer.ended(&p))?,
            SessionEvent::Leaks(r) => shown(self.printer.leaks(&r))?,
            SessionEvent::Referrers(r) => shown(self.printer.referrers(&r))?,
            // Checks on request are the browser's.
            SessionEvent::Checked { .. } => {}
            // A check's reports stand for the final state.
            SessionEvent::Final { .. } if self.checking => {}
            SessionEvent::Final {
                procs,
                several,
                facts,
            } => match (several, procs.as_slice()) {
                (false, [p]) => shown(self.printer.view(p, &facts))?,
                _ => shown(self.printer.processes(&procs, &facts))?,
            },
        }
        Ok(())
    }
}

/// Shows a view of a saved snapshot given in place of a target.
fn offline(file: &Path, t: &TraceArgs, v: &ViewArgs, view: ViewOptions) -> anyhow::Result<u8> {
    if t.wants_target() || t.save.is_some() {
        bail!("give either a SNAPSHOT file or a target (--pid PID, -- CMD), not both");
    }
    names_as_saved(v)?;
    show_snapshot(file, view)
}

/// The verdicts saved in a snapshot, or an error saying how to save some.
fn verdicts_of(file: &Path, snap: &Snapshot) -> anyhow::Result<CheckFacts> {
    snap.check.with_context(|| {
        format!(
            "{} holds no leak verdicts: save them with `muppy-trace leaks --save FILE --pid PID` (or -- CMD)",
            file.display()
        )
    })
}

/// Shows the leak report saved in a snapshot.
fn show_leaks(file: &Path, view: ViewOptions) -> anyhow::Result<u8> {
    let out = destination(&view)?;
    let snap = progress::load_snapshot(file)?;
    let facts = verdicts_of(file, &snap)?;
    let r = analysis::leak_report(&snap.heap(), &view.filter, view.group_by, facts, None);
    shown(report::printer(view, out).leaks(&r))?;
    Ok(0)
}

/// Shows a view of a saved snapshot.
fn show_snapshot(file: &Path, view: ViewOptions) -> anyhow::Result<u8> {
    let out = destination(&view)?;
    let snap = progress::load_snapshot(file)?;
    if view.filter.kind.is_some() {
        verdicts_of(file, &snap)?;
    }
    let mut printer = report::printer(view, out);
    shown(printer.view(&ProcView::of_heap(snap.heap()), &Facts::default()))?;
    Ok(0)
}

fn live(t: &TraceArgs, view: ViewOptions) -> anyhow::Result<u8> {
    live_checking(t, view, None)
}

/// Traces as `live` does, making `check` of the target at each tick and at the end.
fn live_checking(
    t: &TraceArgs,
    mut view: ViewOptions,
    check: Option<CheckSpec>,
) -> anyhow::Result<u8> {
    let mut opts = options(t)?;
    if check.is_some() {
        if t.all {
            bail!("a leak check looks at one process: give --pid PID or -- CMD, not --all");
        }
        if t.sample_bytes.is_some_and(|b| b > 0) {
            bail!("a leak check needs every block: drop --sample-bytes");
        }
    } else if view.filter.kind.is_some() {
        bail!(
            "--kind selects by the verdicts of a leak check: use it with `leaks`, or on a snapshot saved by `leaks --save`"
        );
    }
    if t.interval.is_some() && !matches!(view.format, Format::Table | Format::Json) {
        bail!(
            "--interval prints diffs as tables or JSON; --format {} writes one report at the end (for a change over time, --save snapshots and `diff A B --format {}`)",
            view.format.name(),
            view.format.name()
        );
    }
    let checking = check.is_some();
    opts.check = check;
    view.top_procs = t.top_procs;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("eBPF probes need root: run it with sudo");
    }
    // Before the command is forked: a report that cannot be written stops nothing running.
    let printer = report::printer(view.clone(), destination(&view)?);
    // Fork the command before any thread exists; the runtime comes after.
    let mode = match (t.one_pid()?, t.command.is_empty(), t.all) {
        (Some(pid), true, false) => Mode::Attach {
            pid,
            follow: t.follow_forks.unwrap_or(false),
        },
        (None, false, false) => Mode::launch(
            &t.command,
            t.allocator.as_deref(),
            t.follow_forks.unwrap_or(true),
        )?,
        (None, true, true) => {
            if t.allocator.is_some() || t.follow_forks.is_some() {
                bail!(
                    "--all traces every process with its own allocator; --allocator and --follow-forks do not apply"
                );
            }
            Mode::System
        }
        _ => bail!("say what to trace: --pid PID, --all, or -- CMD ARGS... (see --help)"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut sink = CliSink {
        printer,
        view,
        prev: HashMap::new(),
        checking,
        bar: None,
    };
    let outcome = rt.block_on(session::run(mode, &opts, &mut sink))?;
    Ok(outcome
        .exit
        .map_or(0, |e| u8::try_from(e.shell_code() & 0xff).unwrap_or(255)))
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Some(what) = cli.generate {
        match generate::write(what, &mut std::io::stdout().lock()) {
            // A reader that stopped early (`| head`) is no error.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(e).context("writing to stdout");
            }
            _ => return Ok(0),
        }
    }
    // Chosen once, before any name is resolved; every symbolizer is built with it.
    let view = match &cli.cmd {
        None => Some(&cli.view),
        Some(Cmd::Daemon { .. } | Cmd::Query(_)) => None,
        Some(
            Cmd::Objects { view, .. }
            | Cmd::Tree { view, .. }
            | Cmd::Leaks { view, .. }
            | Cmd::Refs { view, .. }
            | Cmd::Browse { view, .. }
            | Cmd::Summary { view, .. }
            | Cmd::Diff { view, .. },
        ) => Some(view),
    };
    symbols::set_demangling(view.is_none_or(|v| v.demangle == Demangle::Yes));
    match cli.cmd {
        None => live(&cli.trace, view_options(&cli.view, View::Summary)?),
        Some(Cmd::Objects { file, trace, view }) => {
            let v = view_options(&view, View::Objects)?;
            match file {
                Some(f) => offline(&f, &trace, &view, v),
                None => live(&trace, v),
            }
        }
        Some(Cmd::Tree {
            file,
            addr,
            maxdepth,
            trace,
            view,
        }) => {
            let v = view_options(&view, View::Tree { addr, maxdepth })?;
            match file {
                Some(f) => offline(&f, &trace, &view, v),
                None => live(&trace, v),
            }
        }
        Some(Cmd::Leaks {
            file,
            retention,
            trace,
            view,
        }) => {
            let v = view_options(&view, View::Summary)?;
            match file {
                Some(f) => {
                    if trace.wants_target() || trace.save.is_some() {
                        bail!(
                            "give either a SNAPSHOT file or a target (--pid PID, -- CMD), not both"
                        );
                    }
                    names_as_saved(&view)?;
                    show_leaks(&f, v)
                }
                None => {
                    let spec = CheckSpec::Leaks {
                        filter: v.filter.clone(),
                        group_by: v.group_by,
                        retention,
                    };
                    live_checking(&trace, v, Some(spec))
                }
            }
        }
        Some(Cmd::Refs {
            addr,
            maxdepth,
            max_roots,
            trace,
            view,
        }) => {
            let v = view_options(&view, View::Summary)?;
            if addr.is_some() && v.filter.site.is_some() {
                bail!("give --addr or --site, not both");
            }
            let spec = CheckSpec::Refs {
                addr,
                site: v.filter.site.clone(),
                maxdepth,
                max_roots,
                top: v.top,
            };
            live_checking(&trace, v, Some(spec))
        }
        Some(Cmd::Browse {
            file,
            baseline,
            trace,
            view,
        }) => {
            if file.is_some() {
                names_as_saved(&view)?;
            }
            let v = view_options(&view, View::Summary)?;
            browse::browse(file.as_deref(), baseline.as_deref(), &trace, &v)
        }
        Some(Cmd::Daemon { trace, daemon }) => daemon::run(&trace, &daemon),
        Some(Cmd::Query(q)) => daemon::query(&q),
        Some(Cmd::Summary { file, view }) => {
            names_as_saved(&view)?;
            show_snapshot(&file, view_options(&view, View::Summary)?)
        }
        Some(Cmd::Diff { a, b, view }) => {
            names_as_saved(&view)?;
            let (a, b) = (progress::load_snapshot(&a)?, progress::load_snapshot(&b)?);
            let v = view_options(&view, View::Summary)?;
            let summary = |s: &Snapshot| analysis::summarize(&s.heap(), &v.filter, v.group_by);
            let d = analysis::diff(&summary(&a), &summary(&b));
            shown(report::printer(v.clone(), destination(&v)?).diff(&d, None))?;
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "muppy-trace: {}; see --help",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("muppy-trace: {e:#}");
            if let Some(path) = CREATED.get()
                && std::fs::metadata(path).is_ok_and(|m| m.len() == 0)
            {
                let _ = std::fs::remove_file(path);
            }
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pid_and_command_conflict() {
        assert!(Cli::try_parse_from(["muppy-trace", "--pid", "1", "--", "ls"]).is_err());
        let cli = Cli::try_parse_from(["muppy-trace", "--", "ls", "-l"]).unwrap();
        assert_eq!(cli.trace.command, vec!["ls", "-l"]);
    }

    #[test]
    fn subcommands_take_their_own_target_and_view() {
        let cli = Cli::try_parse_from([
            "muppy-trace",
            "tree",
            "--site",
            "leaf",
            "--maxdepth",
            "3",
            "--",
            "./prog",
        ])
        .unwrap();
        let Some(Cmd::Tree {
            file,
            maxdepth,
            trace,
            view,
            ..
        }) = cli.cmd
        else {
            panic!("not a tree");
        };
        assert_eq!((file, maxdepth), (None, 3));
        assert_eq!(trace.command, vec!["./prog"]);
        assert_eq!(view.site.as_deref(), Some("leaf"));
        // Target options belong after the subcommand.
        assert!(Cli::try_parse_from(["muppy-trace", "--pid", "1", "objects"]).is_err());
        assert!(Cli::try_parse_from(["muppy-trace", "diff", "a"]).is_err());
    }

    #[test]
    fn browse_takes_a_file_or_a_target_and_a_baseline() {
        let cli =
            Cli::try_parse_from(["muppy-trace", "browse", "b.muppy", "--baseline", "a.muppy"])
                .unwrap();
        let Some(Cmd::Browse { file, baseline, .. }) = cli.cmd else {
            panic!("not browse");
        };
        assert_eq!(file, Some(PathBuf::from("b.muppy")));
        assert_eq!(baseline, Some(PathBuf::from("a.muppy")));
        let cli =
            Cli::try_parse_from(["muppy-trace", "browse", "--site", "x", "--", "./p"]).unwrap();
        let Some(Cmd::Browse { trace, view, .. }) = cli.cmd else {
            panic!("not browse");
        };
        assert_eq!(trace.command, vec!["./p"]);
        assert_eq!(view.site.as_deref(), Some("x"));
    }

    #[test]
    fn sizes_and_addresses_parse() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("2MB"), Ok(2 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1").is_err());
        assert_eq!(parse_addr("0x10"), Ok(16));
        assert!(parse_addr("0xzz").is_err());
    }

    #[test]
    fn width_comes_from_the_flag_then_the_terminal() {
        let view = |args: &[&str]| {
            let cli = Cli::try_parse_from(["muppy-trace"].iter().chain(args)).unwrap();
            let v = view_options(&cli.view, View::Summary).unwrap();
            (v.width, v.full_names, cli.view.demangle)
        };
        assert_eq!(view(&["--width", "80"]), (Some(80), false, Demangle::Yes));
        assert_eq!(
            view(&["--width=0", "--full-names"]),
            (None, true, Demangle::Yes)
        );
        assert_eq!(view(&["--demangle=no"]).2, Demangle::No);
        assert!(Cli::try_parse_from(["muppy-trace", "--demangle=maybe"]).is_err());
        // Every subcommand takes them.
        let cli = Cli::try_parse_from(["muppy-trace", "leaks", "--width", "100", "--full-names"])
            .unwrap();
        let Some(Cmd::Leaks { view, .. }) = cli.cmd else {
            panic!("not leaks");
        };
        assert_eq!((view.width, view.full_names), (Some(100), true));
        // On a terminal: $COLUMNS, else its size; neither, no limit.
        assert_eq!(width_for(Some(120), None), Some(120));
        assert_eq!(width_for(Some(120), Some("90")), Some(90));
        assert_eq!(width_for(Some(120), Some("wide")), Some(120));
        assert_eq!(width_for(Some(120), Some("0")), Some(120));
        assert_eq!(width_for(Some(0), None), None);
        assert_eq!(width_for(None, None), None);
    }

    #[test]
    fn generate_is_hidden_and_alone() {
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("--generate"), "{help}");
        assert!(help.contains("--full-names"), "{help}");
        assert!(Cli::try_parse_from(["muppy-trace", "--generate", "man"]).is_ok());
        assert!(Cli::try_parse_from(["muppy-trace", "--generate", "man", "--pid", "1"]).is_err());
    }

    #[test]
    fn bad_durations_are_rejected() {
        assert!(seconds(Some(-1.0), "--duration").is_err());
        assert!(seconds(Some(0.0), "--interval").is_err());
        assert_eq!(
            seconds(Some(1.5), "--duration").unwrap(),
            Some(Duration::from_millis(1500))
        );
    }
}
