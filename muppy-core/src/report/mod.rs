//! Reports: what the user asked to see (the summary, the objects or the tree, of one process or
//! of several, and periodic diffs), written by a printer chosen once ([`printer`]) into an
//! [`io::Write`]. The live session and the offline commands go through the same printer, so
//! both print the same thing.

use std::io;

use serde::Serialize;

use crate::{
    analysis::{self, Diff, GroupBy, LeakReport, RefReport, aggregate::largest_first},
    model::{Exit, Filter, Heap, Identity, MapRow},
};

pub mod fit;
pub mod flame;
pub mod html;
pub mod json;
pub mod pprof;
pub mod text;

/// Which view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum View {
    /// Live objects and bytes per group (Pympler's `summary.print_`).
    #[default]
    Summary,
    /// Every live block (Pympler's `muppy.get_objects`).
    Objects,
    /// Who allocated the selected blocks (Pympler's `ConsoleBrowser.print_tree`).
    Tree {
        /// Root the tree at the one live block at this address.
        addr: Option<u64>,
        /// Levels below the roots.
        maxdepth: usize,
    },
}

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Pympler-style tables.
    #[default]
    Table,
    /// JSON Lines.
    Json,
    /// Folded stacks, root first, one line a path: `a;b;c bytes` (flame graph tools' input).
    Folded,
    /// A flame graph (SVG, drawn by inferno), bytes as the count.
    Flamegraph,
    /// One self-contained HTML page: sortable tables, the call tree, a flame graph.
    Html,
    /// A gzipped pprof profile (profile.proto), shaped as Go writes heap profiles.
    Pprof,
}

impl Format {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Folded => "folded",
            Format::Flamegraph => "flamegraph",
            Format::Html => "html",
            Format::Pprof => "pprof",
        }
    }

    /// Whether it is made to be read by another program, not on a terminal (a gzipped
    /// profile, an SVG, a page).
    pub fn for_programs(self) -> bool {
        matches!(self, Format::Flamegraph | Format::Html | Format::Pprof)
    }
}

/// A view and how to show it.
#[derive(Clone, Debug, Default)]
pub struct ViewOptions {
    /// Which view.
    pub view: View,
    /// Summary and diff rows.
    pub group_by: GroupBy,
    /// Which blocks.
    pub filter: Filter,
    /// Table rows to show.
    pub top: usize,
    /// Output format.
    pub format: Format,
    /// Processes to show in full when there are several.
    pub top_procs: usize,
    /// Tables no wider than this many columns (the terminal's): names that do not fit are
    /// shortened where they say least. `None`: no limit (a pipe, a file).
    pub width: Option<usize>,
    /// Names in full, whatever the width.
    pub full_names: bool,
    /// Where the report goes (`-o FILE`); stdout when `None`. The binary opens it.
    pub output: Option<std::path::PathBuf>,
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `tree --addr` named no live block.
    #[error("no live block starts at {0:#x}; `muppy-trace objects` lists the live blocks")]
    NoBlock(u64),
    /// The format cannot show this report.
    #[error("--format {format} cannot show {what}; {hint}")]
    Unsupported {
        /// The format's name.
        format: &'static str,
        /// What it was asked to show.
        what: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// Writing failed.
    #[error("writing the report failed")]
    Write(#[source] io::Error),
}

impl From<io::Error> for ReportError {
    fn from(e: io::Error) -> Self {
        ReportError::Write(e)
    }
}

/// What was probed for a process: the allocator in words, and each library's probe points.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Probed {
    /// `malloc, operator new/delete from libc.so.6 (glibc)`.
    pub allocator: String,
    /// Each library probed.
    pub libraries: Vec<ProbedLibrary>,
}

/// One library's probes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProbedLibrary {
    /// Its path.
    pub library: String,
    /// What it is (`glibc`, `jemalloc`, …).
    pub what: String,
    /// The functions probed.
    pub functions: Vec<String>,
    /// Where each probe sits past its function's entry.
    pub offsets: Vec<ProbeOffset>,
    /// Functions it lacks.
    pub missing: Vec<String>,
}

/// How far past a function's entry its probe sits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProbeOffset {
    /// The function.
    pub function: String,
    /// Bytes skipped.
    pub skip: u64,
}

/// The tracer's own use of the machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracerUsage {
    /// Peak resident memory, in KiB.
    pub peak_rss_kb: Option<u64>,
    /// Resident memory at the end, in KiB.
    pub rss_kb: Option<u64>,
    /// CPU time used (user and system), in milliseconds.
    pub cpu_ms: Option<u64>,
}

/// Facts of the whole session, shown with the final report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// How the target ended, when it did.
    pub exit: Option<Exit>,
    /// The tracer's own use of the machine.
    pub tracer: TracerUsage,
}

/// One process as a report shows it.
pub struct ProcView<'a> {
    /// Who it is; an empty `comm` when not known (a snapshot).
    pub id: Identity,
    /// The pid it was forked from, if seen.
    pub parent: Option<u32>,
    /// `running`, `exited with code 0`, `exec'd /bin/sh`.
    pub state: String,
    /// What was probed for it.
    pub probed: Option<Probed>,
    /// What it mapped itself, outside the allocator, per site.
    pub mappings: Vec<MapRow>,
    /// Its heap.
    pub heap: Heap<'a>,
}

impl<'a> ProcView<'a> {
    /// A heap with nothing else known of its process (a snapshot read offline).
    pub fn of_heap(heap: Heap<'a>) -> Self {
        ProcView {
            id: Identity {
                pid: heap.pid,
                ..Identity::default()
            },
            parent: None,
            state: String::new(),
            probed: None,
            mappings: Vec::new(),
            heap,
        }
    }
}

/// One row of the process table: who, how it stands, and what it holds live.
#[derive(Clone, Debug)]
pub(crate) struct ProcRow {
    /// Index into the processes given.
    pub index: usize,
    /// `1234` or `1234 (1 in its namespace)`.
    pub pids: String,
    /// Command name.
    pub comm: String,
    /// `running`, `exited with code 0`...
    pub state: String,
    /// Live blocks.
    pub objects: u64,
    /// Live bytes.
    pub bytes: u64,
}

/// The process table's rows, largest live heap first (then in the order given).
pub(crate) fn process_rows(procs: &[ProcView], opts: &ViewOptions) -> Vec<ProcRow> {
    let mut rows: Vec<ProcRow> = procs
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let (objects, bytes) =
                analysis::summarize(&p.heap, &opts.filter, opts.group_by).total();
            ProcRow {
                index,
                pids: p.id.pids(),
                comm: p.id.comm.clone(),
                state: p.state.clone(),
                objects,
                bytes,
            }
        })
        .collect();
    order_process_rows(&mut rows);
    rows
}

/// The process table's order: largest live heap first, then in the order given.
pub(crate) fn order_process_rows(rows: &mut [ProcRow]) {
    largest_first(rows, |r| (r.bytes.into(), 0, &r.index));
}

/// A printer: writes reports in one format. Made once, by [`printer`].
pub trait Print {
    /// The view of one process: the final report when it is the only one, or a snapshot's.
    fn view(&mut self, p: &ProcView, facts: &Facts) -> Result<(), ReportError>;
    /// A report on several processes: the process table, largest live heap first, then the
    /// view of the `top_procs` largest (every process in JSON), then the totals.
    fn processes(&mut self, procs: &[ProcView], facts: &Facts) -> Result<(), ReportError>;
    /// With `--all`, a process as it ends: what it left live.
    fn ended(&mut self, p: &ProcView) -> Result<(), ReportError>;
    /// A diff (periodic, or between snapshots); `who` when it is one of several processes.
    fn diff(&mut self, d: &Diff, who: Option<&Identity>) -> Result<(), ReportError>;
    /// What one leak check found: loss records per group and kind, and the totals.
    fn leaks(&mut self, r: &LeakReport) -> Result<(), ReportError>;
    /// Who points at one block, as a tree.
    fn referrers(&mut self, r: &RefReport) -> Result<(), ReportError>;
}

/// The printer for `opts.format`, writing into `out`.
pub fn printer<'w, W: io::Write + 'w>(opts: ViewOptions, out: W) -> Box<dyn Print + 'w> {
    match opts.format {
        Format::Table => Box::new(text::TextPrinter::new(opts, out)),
        Format::Json => Box::new(json::JsonPrinter::new(opts, out)),
        Format::Folded | Format::Flamegraph => Box::new(flame::FlamePrinter::new(opts, out)),
        Format::Html => Box::new(html::HtmlPrinter::new(opts, out)),
        Format::Pprof => Box::new(pprof::PprofPrinter::new(opts, out)),
    }
}

/// The tree roots `view` asks for.
pub(crate) fn tree_roots(
    heap: &Heap,
    filter: &Filter,
    addr: Option<u64>,
) -> Result<Vec<analysis::Node>, ReportError> {
    Ok(match addr {
        Some(a) => {
            vec![analysis::calltree::build_for_block(heap, a).ok_or(ReportError::NoBlock(a))?]
        }
        None => analysis::calltree::build(heap, filter),
    })
}
