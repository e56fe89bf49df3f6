//! The JSON Lines printer, and the wire format as serde types: one struct per line kind
//! (`summary`, `exited`, `diff`, `object`, `tree`, `process`, `processes`). A line about one of
//! several processes says whose it is (`pid`, `comm`, `ns_pid`), and so does each of its rows.

use std::io;

use serde::Serialize;

use super::{Facts, Print, Probed, ProcView, ReportError, View, ViewOptions, process_rows};
use crate::{
    analysis::{self, Diff, Key, LeakReport, Node, RefReport, RefTree, Referrer, Step, Summary},
    model::{Counters, Exit, Frame, Identity, LeakKind, MapRow, Place},
};

/// Whose a line or row is, when a report covers several processes.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Who<'a> {
    /// Its pid.
    pub pid: u32,
    /// Its command name.
    pub comm: &'a str,
    /// Its pid in its own namespace, where that differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
}

impl<'a> Who<'a> {
    fn of(id: &'a Identity) -> Self {
        Who {
            pid: id.pid,
            comm: &id.comm,
            ns_pid: id.ns_pid,
        }
    }
}

/// A row's key as fields: `site`, `function`, `size`, or `site` and `stack`.
#[derive(Debug, Default, Serialize)]
pub struct KeyFields {
    /// The site's name (also the first frame of a stack).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The function.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The block size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The frames' names, innermost first (`[stack lost]` last where it was lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<Vec<String>>,
}

impl KeyFields {
    fn of(k: &Key) -> Self {
        match k {
            Key::Site(f) => KeyFields {
                site: Some(f.name().to_string()),
                ..KeyFields::default()
            },
            Key::Function(f) => KeyFields {
                function: Some(f.clone()),
                ..KeyFields::default()
            },
            Key::Size(n) => KeyFields {
                size: Some(*n),
                ..KeyFields::default()
            },
            Key::Stack { .. } => {
                let names = k.names();
                KeyFields {
                    site: names.first().cloned(),
                    stack: Some(names),
                    ..KeyFields::default()
                }
            }
        }
    }
}

/// One row of a summary (unsigned) or a diff (signed).
#[derive(Debug, Serialize)]
pub struct RowLine<'a, N> {
    /// The group.
    #[serde(flatten)]
    pub key: KeyFields,
    /// Objects (or their change).
    pub objects: N,
    /// Bytes (or their change).
    pub bytes: N,
    /// Whose, with several processes.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub who: Option<Who<'a>>,
}

/// The trust counters, as fields of a summary or diff line, and whether the figures are
/// estimates.
#[derive(Debug, Serialize)]
pub struct CounterFields {
    /// The counters, each a field of its own name.
    #[serde(flatten)]
    pub counters: Counters,
    /// Whether the figures are estimates from samples.
    pub estimated: bool,
    /// The mean gap between samples, when sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_bytes: Option<u64>,
}

impl CounterFields {
    fn of(c: &Counters, sample_bytes: u64) -> Self {
        CounterFields {
            counters: *c,
            estimated: sample_bytes > 0,
            sample_bytes: (sample_bytes > 0).then_some(sample_bytes),
        }
    }
}

/// Objects and bytes over all rows.
#[derive(Debug, Serialize)]
pub struct Total {
    /// Live blocks.
    pub objects: u64,
    /// Live bytes.
    pub bytes: u64,
}

/// How the target ended: `{"exit_code":N}` or `{"signal":N}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitLine {
    /// It exited with this code.
    ExitCode(i32),
    /// A signal killed it.
    Signal(i32),
}

impl From<Exit> for ExitLine {
    fn from(e: Exit) -> Self {
        match e {
            Exit::Code(c) => ExitLine::ExitCode(c),
            Exit::Signal(s) => ExitLine::Signal(s),
        }
    }
}

/// The session's facts, as fields of the closing line.
#[derive(Debug, Default, Serialize)]
pub struct FactFields {
    /// How the target ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitLine>,
    /// The tracer's peak resident memory, in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracer_peak_rss_kb: Option<u64>,
    /// The tracer's resident memory at the end, in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracer_rss_kb: Option<u64>,
    /// CPU time the tracer used, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracer_cpu_ms: Option<u64>,
}

impl FactFields {
    fn of(f: &Facts) -> Self {
        FactFields {
            exit: f.exit.map(ExitLine::from),
            tracer_peak_rss_kb: f.tracer.peak_rss_kb,
            tracer_rss_kb: f.tracer.rss_kb,
            tracer_cpu_ms: f.tracer.cpu_ms,
        }
    }
}

/// One row of the memory a process mapped itself.
#[derive(Debug, Serialize)]
pub struct MmapRow {
    /// The site's name.
    pub site: String,
    /// Regions.
    pub regions: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The memory a process mapped itself, outside the allocator.
#[derive(Debug, Serialize)]
pub struct Mmap {
    /// Per site, largest first.
    pub rows: Vec<MmapRow>,
    /// Over all sites.
    pub total: MmapTotal,
}

/// [`Mmap`]'s totals.
#[derive(Debug, Serialize)]
pub struct MmapTotal {
    /// Regions.
    pub regions: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Mmap {
    fn of(rows: &[MapRow]) -> Option<Self> {
        if rows.is_empty() {
            return None;
        }
        let (regions, bytes) = super::text::map_totals(rows);
        Some(Mmap {
            rows: rows
                .iter()
                .map(|m| MmapRow {
                    site: m.site.name().to_string(),
                    regions: m.regions,
                    bytes: m.bytes,
                })
                .collect(),
            total: MmapTotal { regions, bytes },
        })
    }
}

/// `{"type":"summary"}` (the final state) or `{"type":"exited"}` (a process as it ended).
#[derive(Debug, Serialize)]
pub struct SummaryLine<'a> {
    /// `summary` or `exited`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The process.
    pub pid: u32,
    /// Its command name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<&'a str>,
    /// Its namespace pid, where that differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// How it ended (`exited` lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'a str>,
    /// What the rows are.
    pub group_by: &'static str,
    /// Every row.
    pub rows: Vec<RowLine<'a, u64>>,
    /// Over all rows.
    pub total: Total,
    /// How far the figures can be trusted.
    #[serde(flatten)]
    pub counters: CounterFields,
    /// The session's facts.
    #[serde(flatten)]
    pub facts: FactFields,
    /// What was probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probed: Option<&'a Probed>,
    /// What it mapped itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmap: Option<Mmap>,
}

/// `{"type":"diff"}`: the groups that changed.
#[derive(Debug, Serialize)]
pub struct DiffLine<'a> {
    /// Always `diff`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The process.
    pub pid: u32,
    /// Its name, with several processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<&'a str>,
    /// Its namespace pid, with several processes, where that differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// What the rows are.
    pub group_by: &'static str,
    /// Changed rows.
    pub rows: Vec<RowLine<'a, i64>>,
    /// How far the figures can be trusted.
    #[serde(flatten)]
    pub counters: CounterFields,
}

/// `{"type":"object"}`: one live block.
#[derive(Debug, Serialize)]
pub struct ObjectLine<'a> {
    /// Always `object`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its address, `0x…`.
    pub addr: String,
    /// Bytes requested.
    pub size: u64,
    /// At least this old, in ms.
    pub age_ms: u64,
    /// The allocating thread.
    pub tid: u32,
    /// The site's name.
    pub site: String,
    /// The call path's names.
    pub stack: Vec<String>,
    /// Whose, with several processes.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub who: Option<Who<'a>>,
}

/// One node of a `tree` line.
#[derive(Debug, Serialize)]
pub struct TreeNode {
    /// The frame's name (or the block's address at a block's root).
    pub frame: String,
    /// Objects allocated through it.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Callers, largest first.
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    fn of(n: &Node, depth: usize, maxdepth: usize) -> Self {
        let children = if depth < maxdepth {
            n.children
                .iter()
                .map(|c| TreeNode::of(c, depth + 1, maxdepth))
                .collect()
        } else {
            Vec::new()
        };
        TreeNode {
            frame: n.name.clone(),
            objects: n.objects,
            bytes: n.bytes,
            children,
        }
    }
}

/// `{"type":"tree"}`: who allocated the selected blocks.
#[derive(Debug, Serialize)]
pub struct TreeLine<'a> {
    /// Always `tree`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The roots, largest first.
    pub roots: Vec<TreeNode>,
    /// The process (and, with several, its name).
    #[serde(flatten)]
    pub who: WhoOrPid<'a>,
}

/// A line's `pid`, with `comm` and `ns_pid` when it is one of several processes.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum WhoOrPid<'a> {
    /// One of several.
    Who(Who<'a>),
    /// The only one.
    Pid {
        /// Its pid.
        pid: u32,
    },
}

/// `{"type":"process"}`: one of several processes, before its lines.
#[derive(Debug, Serialize)]
pub struct ProcessLine<'a> {
    /// Always `process`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its pid.
    pub pid: u32,
    /// Its name.
    pub comm: &'a str,
    /// Its namespace pid, where that differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// `running`, `exited with code 0`, …
    pub state: &'a str,
    /// The pid it was forked from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// What was probed for it, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probed: Option<&'a str>,
    /// Its live blocks.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// `{"type":"processes"}`: the closing line of a report on several processes.
#[derive(Debug, Serialize)]
pub struct ProcessesLine {
    /// Always `processes`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// How many.
    pub count: usize,
    /// Over all of them.
    pub total: Total,
    /// Events lost, for all processes together.
    pub lost_events: u64,
    /// The session's facts.
    #[serde(flatten)]
    pub facts: FactFields,
}

/// Objects and bytes of one leak kind.
#[derive(Debug, Serialize)]
pub struct KindTotals {
    /// Definitely lost (confirmed).
    pub definitely_lost: Total,
    /// Indirectly lost (confirmed).
    pub indirectly_lost: Total,
    /// Possibly lost.
    pub possibly_lost: Total,
    /// Still reachable.
    pub reachable: Total,
}

/// One loss record of a `leaks` line.
#[derive(Debug, Serialize)]
pub struct LeakRowLine {
    /// `definitely_lost`, `indirectly_lost`, `possibly_lost` or `reachable`.
    pub kind: &'static str,
    /// The site (with `--group-by site` or `stack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The function (with `--group-by function`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Blocks.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes only these blocks reach (definitely lost rows).
    pub indirect_bytes: u64,
    /// The call path (the group's, or one block's), innermost first.
    pub stack: Vec<String>,
    /// With `--retention`: the shortest path to a root, the block first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<StepLine>,
}

/// What holds a pointer, in a retention path or a referrer tree: a block (its address, site
/// and size), or a root (in words).
#[derive(Debug, Default, Serialize)]
pub struct HolderFields {
    /// The block's address, `0x…`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The block's site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The block's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The root, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

impl HolderFields {
    fn block(addr: u64, site: &Frame, size: u64) -> Self {
        HolderFields {
            addr: Some(format!("{addr:#x}")),
            site: Some(site.name().to_string()),
            size: Some(size),
            root: None,
        }
    }

    fn root(place: &Place) -> Self {
        HolderFields {
            root: Some(place.describe()),
            ..HolderFields::default()
        }
    }
}

/// One step of a retention path.
#[derive(Debug, Serialize)]
pub struct StepLine {
    /// The block that holds the pointer, or the root (the last step).
    #[serde(flatten)]
    pub holder: HolderFields,
    /// The address of the pointing word.
    pub at: String,
}

impl StepLine {
    fn of(s: &Step) -> Self {
        let (holder, at) = match s {
            Step::Block {
                addr,
                size,
                site,
                at,
            } => (HolderFields::block(*addr, site, *size), at),
            Step::Root { place, at } => (HolderFields::root(place), at),
        };
        StepLine {
            holder,
            at: format!("{at:#x}"),
        }
    }
}

/// `{"type":"leaks"}`: one leak check of one process.
#[derive(Debug, Serialize)]
pub struct LeaksLine {
    /// Always `leaks`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The process.
    pub pid: u32,
    /// Which check of the session, from 1.
    pub check: u32,
    /// What the rows are.
    pub group_by: &'static str,
    /// Loss records, definitely lost first.
    pub rows: Vec<LeakRowLine>,
    /// Per kind, confirmed blocks.
    pub totals: KindTotals,
    /// Lost blocks seen lost at this check only (periodic checks): in no row or total until
    /// the next check finds them lost too.
    pub unconfirmed: Total,
    /// No lost block awaits its second check.
    pub confirmed: bool,
    /// Lost blocks must be lost at two checks in a row to count.
    pub two_checks: bool,
    /// Heap bytes muppy holds no block for, scanned as roots.
    pub unaccounted_root_bytes: u64,
    /// Bytes scanned for pointers.
    pub scanned_bytes: u64,
    /// How long the target was stopped, in ms.
    pub pause_ms: f64,
    /// How long the whole check took (the pause, then classifying the copy), in ms.
    pub check_ms: f64,
    /// Threads stopped.
    pub threads: u32,
    /// Blocks the dynamic loader allocated, taken as reachable.
    pub loader_blocks: u64,
    /// How far the table behind it can be trusted.
    #[serde(flatten)]
    pub counters: CounterFields,
}

/// One node of a `referrers` tree: a block, or a root.
#[derive(Debug, Serialize)]
pub struct RefNodeLine {
    /// The block, or the root.
    #[serde(flatten)]
    pub holder: HolderFields,
    /// A block shown higher in the tree already (a cycle), not expanded.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub seen: bool,
    /// The address of the word that points at the node above (absent at the tree's root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// That word points inside the node above, not at its start.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interior: bool,
    /// What points at this block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrers: Option<Vec<RefNodeLine>>,
    /// `maxdepth` reached with referrers left out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
    /// Root referrers left out beyond `--max-roots`.
    #[serde(skip_serializing_if = "is_zero")]
    pub more_roots: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl RefNodeLine {
    fn block(t: &RefTree, at: Option<u64>, interior: bool) -> Self {
        RefNodeLine {
            holder: HolderFields::block(t.addr, &t.site, t.size),
            seen: false,
            at: at.map(|a| format!("{a:#x}")),
            interior,
            referrers: Some(t.referrers.iter().map(RefNodeLine::of).collect()),
            cut: t.cut_depth,
            more_roots: t.more_roots,
        }
    }

    fn of(r: &Referrer) -> Self {
        let leaf = |holder: HolderFields, seen: bool, at: u64, interior: bool| RefNodeLine {
            holder,
            seen,
            at: Some(format!("{at:#x}")),
            interior,
            referrers: None,
            cut: false,
            more_roots: 0,
        };
        match r {
            Referrer::Block { at, interior, tree } => {
                RefNodeLine::block(tree, Some(*at), *interior)
            }
            Referrer::Seen { addr, at, interior } => {
                let holder = HolderFields {
                    addr: Some(format!("{addr:#x}")),
                    ..HolderFields::default()
                };
                leaf(holder, true, *at, *interior)
            }
            Referrer::Root {
                place,
                at,
                interior,
            } => leaf(HolderFields::root(place), false, *at, *interior),
        }
    }
}

/// `{"type":"referrers"}`: who points at one block.
#[derive(Debug, Serialize)]
pub struct ReferrersLine {
    /// Always `referrers`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The process.
    pub pid: u32,
    /// The block's address, `0x…`.
    pub addr: String,
    /// Its site.
    pub site: String,
    /// Its size.
    pub size: u64,
    /// The tree, the block at its root.
    pub tree: RefNodeLine,
    /// How long the target was stopped, in ms.
    pub pause_ms: f64,
}

/// A duration in milliseconds, to the microsecond.
fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Writes reports as JSON Lines.
pub struct JsonPrinter<W> {
    opts: ViewOptions,
    out: W,
}

fn rows<'a, N: Copy>(
    rows: impl Iterator<Item = (&'a Key, N, N)>,
    who: Option<Who<'a>>,
) -> Vec<RowLine<'a, N>> {
    rows.map(|(key, objects, bytes)| RowLine {
        key: KeyFields::of(key),
        objects,
        bytes,
        who,
    })
    .collect()
}

impl<W: io::Write> JsonPrinter<W> {
    /// A printer of `opts`'s view into `out`.
    pub fn new(opts: ViewOptions, out: W) -> Self {
        JsonPrinter { opts, out }
    }

    fn line(&mut self, v: &impl Serialize) -> Result<(), ReportError> {
        serde_json::to_writer(&mut self.out, v).map_err(io::Error::from)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }

    /// A summary line of `p` (`kind` `summary` or `exited`); `several` tags it and its rows
    /// with the process.
    fn summary_line(
        &mut self,
        kind: &'static str,
        s: &Summary,
        p: &ProcView,
        several: bool,
        facts: &Facts,
        probed: bool,
    ) -> Result<(), ReportError> {
        let who = several.then(|| Who::of(&p.id));
        let (objects, bytes) = s.total();
        let line = SummaryLine {
            kind,
            pid: s.pid,
            comm: Some(p.id.comm.as_str()).filter(|c| several || !c.is_empty()),
            ns_pid: p.id.ns_pid,
            state: (kind == "exited").then_some(p.state.as_str()),
            group_by: s.group_by.name(),
            rows: rows(s.rows.iter().map(|r| (&r.key, r.objects, r.bytes)), who),
            total: Total { objects, bytes },
            counters: CounterFields::of(&s.counters, s.sample_bytes),
            facts: FactFields::of(facts),
            probed: p.probed.as_ref().filter(|_| probed),
            mmap: Mmap::of(&p.mappings),
        };
        self.line(&line)
    }

    /// The view of one heap; `several` tags each line with the process.
    fn heap_view(&mut self, p: &ProcView, several: bool, facts: &Facts) -> Result<(), ReportError> {
        let opts = self.opts.clone();
        let who = several.then(|| Who::of(&p.id));
        match &opts.view {
            View::Summary => {
                let s = analysis::summarize(&p.heap, &opts.filter, opts.group_by);
                self.summary_line("summary", &s, p, several, facts, !several)
            }
            View::Objects => {
                for o in analysis::objects(&p.heap, &opts.filter) {
                    let t = &p.heap.traces[o.trace as usize];
                    self.line(&ObjectLine {
                        kind: "object",
                        addr: format!("{:#x}", o.addr),
                        size: o.size,
                        age_ms: u64::try_from(o.age.as_millis()).unwrap_or(u64::MAX),
                        tid: o.tid,
                        site: t.site().name().to_string(),
                        stack: t.stack_names(),
                        who,
                    })?;
                }
                Ok(())
            }
            View::Tree { addr, maxdepth } => {
                let roots = super::tree_roots(&p.heap, &opts.filter, *addr)?;
                self.line(&TreeLine {
                    kind: "tree",
                    roots: roots
                        .iter()
                        .map(|r| TreeNode::of(r, 0, *maxdepth))
                        .collect(),
                    who: match who {
                        Some(w) => WhoOrPid::Who(w),
                        None => WhoOrPid::Pid { pid: p.heap.pid },
                    },
                })
            }
        }
    }
}

impl<W: io::Write> Print for JsonPrinter<W> {
    fn view(&mut self, p: &ProcView, facts: &Facts) -> Result<(), ReportError> {
        self.heap_view(p, false, facts)
    }

    fn processes(&mut self, procs: &[ProcView], facts: &Facts) -> Result<(), ReportError> {
        let table = process_rows(procs, &self.opts);
        for r in &table {
            let p = &procs[r.index];
            self.line(&ProcessLine {
                kind: "process",
                pid: p.id.pid,
                comm: &p.id.comm,
                ns_pid: p.id.ns_pid,
                state: &p.state,
                parent: p.parent,
                probed: p.probed.as_ref().map(|pr| pr.allocator.as_str()),
                objects: r.objects,
                bytes: r.bytes,
            })?;
            self.heap_view(p, true, &Facts::default())?;
        }
        let (objects, bytes) = table
            .iter()
            .fold((0, 0), |a, r| (a.0 + r.objects, a.1 + r.bytes));
        self.line(&ProcessesLine {
            kind: "processes",
            count: table.len(),
            total: Total { objects, bytes },
            lost_events: procs.first().map_or(0, |p| p.heap.counters.lost_events),
            facts: FactFields::of(facts),
        })
    }

    fn ended(&mut self, p: &ProcView) -> Result<(), ReportError> {
        let s = analysis::summarize(&p.heap, &self.opts.filter, self.opts.group_by);
        self.summary_line("exited", &s, p, true, &Facts::default(), false)
    }

    fn leaks(&mut self, r: &LeakReport) -> Result<(), ReportError> {
        let total = |k: LeakKind| {
            let t = r.total(k);
            Total {
                objects: t.objects,
                bytes: t.bytes,
            }
        };
        self.line(&LeaksLine {
            kind: "leaks",
            pid: r.pid,
            check: r.facts.check,
            group_by: r.group_by.name(),
            rows: r
                .rows
                .iter()
                .map(|row| {
                    let key = KeyFields::of(&row.key);
                    LeakRowLine {
                        kind: row.kind.key(),
                        site: key
                            .site
                            .or_else(|| row.stack.first().map(|f| f.name().to_string()))
                            .filter(|_| key.function.is_none()),
                        function: key.function,
                        objects: row.objects,
                        bytes: row.bytes,
                        indirect_bytes: row.indirect_bytes,
                        stack: key.stack.unwrap_or_else(|| {
                            row.stack.iter().map(|f| f.name().to_string()).collect()
                        }),
                        retention: row.retention.iter().map(StepLine::of).collect(),
                    }
                })
                .collect(),
            totals: KindTotals {
                definitely_lost: total(LeakKind::DefinitelyLost),
                indirectly_lost: total(LeakKind::IndirectlyLost),
                possibly_lost: total(LeakKind::PossiblyLost),
                reachable: total(LeakKind::Reachable),
            },
            unconfirmed: Total {
                objects: r.unconfirmed.objects,
                bytes: r.unconfirmed.bytes,
            },
            confirmed: r.unconfirmed.objects == 0,
            two_checks: r.facts.two_checks,
            unaccounted_root_bytes: r.facts.unaccounted_root_bytes,
            scanned_bytes: r.facts.scanned_bytes,
            pause_ms: millis(r.facts.pause),
            check_ms: millis(r.facts.took),
            threads: r.facts.threads,
            loader_blocks: r.facts.loader_blocks,
            counters: CounterFields::of(&r.counters, 0),
        })
    }

    fn referrers(&mut self, r: &RefReport) -> Result<(), ReportError> {
        self.line(&ReferrersLine {
            kind: "referrers",
            pid: r.pid,
            addr: format!("{:#x}", r.tree.addr),
            site: r.tree.site.name().to_string(),
            size: r.tree.size,
            tree: RefNodeLine::block(&r.tree, None, false),
            pause_ms: millis(r.facts.pause),
        })
    }

    fn diff(&mut self, d: &Diff, who: Option<&Identity>) -> Result<(), ReportError> {
        let tag = who.map(Who::of);
        self.line(&DiffLine {
            kind: "diff",
            pid: d.pid,
            comm: tag.map(|w| w.comm),
            ns_pid: tag.and_then(|w| w.ns_pid),
            group_by: d.group_by.name(),
            rows: rows(d.rows.iter().map(|r| (&r.key, r.objects, r.bytes)), tag),
            counters: CounterFields::of(&d.counters, d.sample_bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::{
        analysis::{DiffRow, GroupBy},
        model::{Block, Frame, Heap, StackState, Trace},
        report::{TracerUsage, printer},
    };

    fn lines(out: &[u8]) -> Vec<Value> {
        std::str::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn json(view: View) -> ViewOptions {
        ViewOptions {
            view,
            format: super::super::Format::Json,
            top: 15,
            top_procs: 5,
            ..ViewOptions::default()
        }
    }

    fn traces() -> Vec<Trace> {
        vec![
            Trace::new(
                vec![
                    Frame::from_name("leak (a.c:3)"),
                    Frame::from_name("main (a.c:9)"),
                ],
                StackState::Walked,
            ),
            Trace::new(vec![Frame::from_name("keep (a.c:5)")], StackState::Lost),
        ]
    }

    fn blocks() -> Vec<(u64, Block)> {
        let b = |size, trace| Block {
            size,
            ts_ns: 1_000_000,
            trace,
            tid: 7,
            leak: None,
        };
        vec![(0x10, b(8, 0)), (0x20, b(8, 0)), (0x30, b(100, 1))]
    }

    fn proc_view<'a>(blocks: &'a Vec<(u64, Block)>, traces: &'a [Trace], pid: u32) -> ProcView<'a> {
        ProcView {
            id: Identity {
                pid,
                ns_pid: Some(1),
                comm: "prog".into(),
            },
            parent: None,
            state: "running".into(),
            probed: Some(Probed {
                allocator: "malloc from glibc".into(),
                libraries: Vec::new(),
            }),
            mappings: Vec::new(),
            heap: Heap {
                pid,
                blocks,
                traces,
                now_ns: 3_000_000,
                counters: Counters {
                    lost_events: 2,
                    ..Counters::default()
                },
                sample_bytes: 0,
                modules: &[],
                allocated: &[],
            },
        }
    }

    #[test]
    fn one_process_summary_carries_rows_totals_counters_and_facts() {
        let (b, t) = (blocks(), traces());
        let mut out = Vec::new();
        let facts = Facts {
            exit: Some(Exit::Signal(9)),
            tracer: TracerUsage {
                peak_rss_kb: Some(100),
                rss_kb: None,
                cpu_ms: Some(3),
            },
        };
        printer(json(View::Summary), &mut out)
            .view(&proc_view(&b, &t, 42), &facts)
            .unwrap();
        let v = &lines(&out)[0];
        assert_eq!(v["type"], "summary");
        assert_eq!(
            (v["pid"].as_u64(), v["comm"].as_str()),
            (Some(42), Some("prog"))
        );
        assert_eq!(v["ns_pid"], 1);
        assert_eq!(v["group_by"], "site");
        assert_eq!(v["rows"][0]["site"], "keep (a.c:5)");
        assert_eq!(v["rows"][1]["objects"], 2);
        assert!(v["rows"][0].get("pid").is_none());
        assert_eq!(v["total"]["bytes"], 116);
        assert_eq!(v["lost_events"], 2);
        assert_eq!(v["estimated"], false);
        assert!(v.get("sample_bytes").is_none());
        assert_eq!(v["exit"]["signal"], 9);
        assert_eq!(v["tracer_peak_rss_kb"], 100);
        assert!(v.get("tracer_rss_kb").is_none());
        assert_eq!(v["probed"]["allocator"], "malloc from glibc");
        assert!(v.get("mmap").is_none());
    }

    #[test]
    fn several_processes_tag_every_line_and_row() {
        let (b, t) = (blocks(), traces());
        let mut out = Vec::new();
        let procs = [proc_view(&b, &t, 42), proc_view(&b, &t[..1], 43)];
        printer(json(View::Summary), &mut out)
            .processes(&procs, &Facts::default())
            .unwrap();
        let v = lines(&out);
        let kinds: Vec<&str> = v.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["process", "summary", "process", "summary", "processes"]
        );
        assert_eq!(v[1]["rows"][0]["pid"], 42);
        assert_eq!(v[1]["rows"][0]["comm"], "prog");
        assert!(v[1].get("probed").is_none());
        assert_eq!(v[4]["count"], 2);
        assert_eq!(v[4]["lost_events"], 2);
        let mut out = Vec::new();
        printer(json(View::Objects), &mut out)
            .processes(&procs[..1], &Facts::default())
            .unwrap();
        let v = lines(&out);
        assert_eq!(v[1]["type"], "object");
        assert_eq!(v[1]["addr"], "0x30");
        assert_eq!(v[1]["stack"][1], "[stack lost]");
        assert_eq!(
            (v[1]["pid"].as_u64(), v[1]["ns_pid"].as_u64()),
            (Some(42), Some(1))
        );
    }

    #[test]
    fn diffs_are_signed_and_trees_nest() {
        let d = Diff {
            pid: 9,
            group_by: GroupBy::Stack,
            rows: vec![DiffRow {
                key: Key::Stack {
                    frames: vec![Frame::from_name("a"), Frame::from_name("main")],
                    end: None,
                },
                objects: -1,
                bytes: -10,
            }],
            before: Vec::new(),
            counters: Counters::default(),
            sample_bytes: 0,
        };
        let mut out = Vec::new();
        printer(json(View::Summary), &mut out)
            .diff(&d, None)
            .unwrap();
        let v = &lines(&out)[0];
        assert_eq!(v["type"], "diff");
        assert_eq!(v["rows"][0]["objects"], -1);
        assert_eq!(v["rows"][0]["site"], "a");
        assert_eq!(v["rows"][0]["stack"][1], "main");
        assert!(v.get("comm").is_none());
        let (b, t) = (blocks(), traces());
        let mut out = Vec::new();
        let view = View::Tree {
            addr: None,
            maxdepth: 8,
        };
        printer(json(view), &mut out)
            .view(&proc_view(&b, &t, 42), &Facts::default())
            .unwrap();
        let v = &lines(&out)[0];
        assert_eq!(v["type"], "tree");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["roots"][0]["frame"], "keep (a.c:5)");
        assert_eq!(v["roots"][1]["children"][0]["frame"], "main (a.c:9)");
        let mut out = Vec::new();
        let missing = View::Tree {
            addr: Some(0x99),
            maxdepth: 8,
        };
        let err = printer(json(missing), &mut out)
            .view(&proc_view(&b, &t, 42), &Facts::default())
            .unwrap_err();
        assert!(matches!(err, ReportError::NoBlock(0x99)));
    }
}
