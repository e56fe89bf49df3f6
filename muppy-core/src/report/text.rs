//! The text printer: sizes the way Pympler prints them, summary and diff tables in Pympler's
//! three-column form, object tables, and trees in the form of `ConsoleBrowser.print_tree`.
//! The one place that decides how a figure looks in a terminal.

use std::{io, time::Duration};

use prettytable::{
    Cell, Row as TRow, Table,
    format::{FormatBuilder, LinePosition, LineSeparator},
};

use super::{Facts, ProcView, ReportError, View, ViewOptions, process_rows};
use crate::{
    analysis::{
        self, Diff, Key, LeakReport, LeakRow, Node, Object, RefReport, RefTree, Referrer, Step,
        Summary,
    },
    model::{Counters, Frame, Identity, LeakKind, MapRow, Trace},
};

const UNITS: [&str; 7] = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];

/// Formats a byte count as Pympler's `stringutils.pp` does: whole bytes up to 1024
/// (`"864     B"`), then two decimals in the largest unit that keeps the value above 1
/// (`" 953.30 KB"`).
pub fn format_size(bytes: u64) -> String {
    if bytes <= 1024 {
        return format!("{bytes:4}     B");
    }
    #[expect(clippy::cast_precision_loss, reason = "shown with two decimals")]
    let mut v = bytes as f64;
    let mut unit = 0;
    while v > 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:7.2} {}", UNITS[unit])
}

/// [`format_size`] without the column padding, for running text: `"1000 B"`, `"2.01 KB"`.
pub fn format_size_compact(bytes: u64) -> String {
    format_size(bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A size change with its sign: `"+953.30 KB"`, `"-864     B"`, `"0     B"`.
pub fn format_size_change(delta: i64) -> String {
    let sign = match delta.signum() {
        1 => "+",
        -1 => "-",
        _ => "",
    };
    format!("{sign}{}", format_size(delta.unsigned_abs()).trim_start())
}

/// A table in Pympler's form (`a | b | c`, titles underlined with `=`), right-aligned.
fn table_with(titles: &[&str]) -> Table {
    let mut t = Table::new();
    t.set_format(
        FormatBuilder::new()
            .column_separator('|')
            .padding(1, 1)
            .separator(LinePosition::Title, LineSeparator::new('=', '|', ' ', ' '))
            .build(),
    );
    t.set_titles(TRow::new(
        titles
            .iter()
            .map(|h| Cell::new(h).style_spec("r"))
            .collect(),
    ));
    t
}

/// The summary table: `first_column | # objects | total size`.
fn table(first_column: &str) -> Table {
    table_with(&[first_column, "# objects", "total size"])
}

fn cut_note(shown: usize, all: usize, noun: &str) -> String {
    if shown < all {
        format!(" (top {shown} of {all} {noun} shown)")
    } else {
        String::new()
    }
}

/// A row key as a table cell: a stack shows one frame per line.
fn key_cell(k: &Key) -> String {
    k.names().join("\n")
}

/// The trust figures after a table's totals. Every counter that can make a figure wrong is
/// named; lost stacks only when there are any (they leave every count exact).
fn trust(c: &Counters) -> String {
    let mut s = format!(
        "lost_events: {}; unknown_frees: {}",
        c.lost_events, c.unknown_frees
    );
    if c.lost_stacks > 0 {
        s.push_str(&format!("; lost_stacks: {}", c.lost_stacks));
    }
    s
}

/// Says that figures are estimates, when they are.
fn estimate_note(sample_bytes: u64) -> String {
    if sample_bytes == 0 {
        String::new()
    } else {
        format!("; estimated from samples every ~{sample_bytes} bytes allocated")
    }
}

/// The summary as Pympler prints one: `sites | # objects | total size` (or functions, stacks,
/// sizes), the `top` largest rows, then a line with the totals and how far the figures can be
/// trusted.
pub fn summary_table(s: &Summary, top: usize) -> String {
    let noun = s.group_by.noun();
    let mut t = table(noun);
    for r in s.rows.iter().take(top) {
        t.add_row(TRow::new(vec![
            Cell::new(&key_cell(&r.key)).style_spec("r"),
            Cell::new(&r.objects.to_string()).style_spec("r"),
            Cell::new(&format_size(r.bytes)).style_spec("r"),
        ]));
    }
    let (objects, bytes) = s.total();
    format!(
        "{t}total: {objects} objects, {} live in {} {noun}{}; {}{}\n",
        format_size_compact(bytes),
        s.rows.len(),
        cut_note(s.rows.len().min(top), s.rows.len(), noun),
        trust(&s.counters),
        estimate_note(s.sample_bytes),
    )
}

/// A diff as `SummaryTracker.print_diff()` prints one, with signed figures.
pub fn diff_table(d: &Diff, top: usize) -> String {
    let noun = d.group_by.noun();
    let mut t = table(noun);
    for r in d.rows.iter().take(top) {
        let objects = if r.objects > 0 {
            format!("+{}", r.objects)
        } else {
            r.objects.to_string()
        };
        t.add_row(TRow::new(vec![
            Cell::new(&key_cell(&r.key)).style_spec("r"),
            Cell::new(&objects).style_spec("r"),
            Cell::new(&format_size_change(r.bytes)).style_spec("r"),
        ]));
    }
    let note = cut_note(d.rows.len().min(top), d.rows.len(), noun) + &estimate_note(d.sample_bytes);
    let mut out = t.to_string();
    let note = note.trim_start().trim_start_matches("; ");
    if !note.is_empty() {
        out.push_str(note);
        out.push('\n');
    }
    out
}

pub(super) fn map_totals(rows: &[MapRow]) -> (u64, u64) {
    rows.iter()
        .fold((0, 0), |a, m| (a.0 + m.regions, a.1 + m.bytes))
}

/// The memory a process mapped itself, outside the allocator, after its heap summary:
/// `mmap sites | # regions | total size`. Empty when it mapped none.
pub fn mappings_table(rows: &[MapRow], top: usize) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut t = table_with(&["mmap sites", "# regions", "total size"]);
    for r in rows.iter().take(top) {
        t.add_row(TRow::new(vec![
            Cell::new(&r.site.name().to_string()).style_spec("r"),
            Cell::new(&r.regions.to_string()).style_spec("r"),
            Cell::new(&format_size(r.bytes)).style_spec("r"),
        ]));
    }
    let (regions, bytes) = map_totals(rows);
    format!(
        "\n{t}mmap total: {regions} regions, {} mapped by the program itself (anonymous mmap outside the allocator; not in the heap figures){}\n",
        format_size_compact(bytes),
        cut_note(rows.len().min(top), rows.len(), "sites"),
    )
}

/// The process table that heads a report on several processes, largest first as given:
/// `pid | comm | state | # objects | total size`, then the totals.
fn processes_table(rows: &[super::ProcRow], top: usize, lost_events: u64) -> String {
    let mut t = table_with(&["pid", "comm", "state", "# objects", "total size"]);
    for r in rows.iter().take(top) {
        t.add_row(TRow::new(vec![
            Cell::new(&r.pids).style_spec("r"),
            Cell::new(&r.comm).style_spec("r"),
            Cell::new(&r.state).style_spec("r"),
            Cell::new(&r.objects.to_string()).style_spec("r"),
            Cell::new(&format_size(r.bytes)).style_spec("r"),
        ]));
    }
    let (objects, bytes) = rows
        .iter()
        .fold((0, 0), |a, r| (a.0 + r.objects, a.1 + r.bytes));
    format!(
        "{t}total: {objects} objects, {} live in {} processes{}; lost_events: {lost_events} (all processes)\n",
        format_size_compact(bytes),
        rows.len(),
        cut_note(rows.len().min(top), rows.len(), "processes"),
    )
}

/// An age as people read one: `"850 ms"`, `"12.3 s"`, `"4.0 min"`, `"2.5 h"`.
pub fn format_age(age: Duration) -> String {
    let secs = age.as_secs_f64();
    if secs < 1.0 {
        format!("{} ms", age.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

/// Live blocks as a table (`address | size | age | thread | site`), the first `top`, then a
/// line saying how many there are.
pub fn objects_table(
    objects: &[Object],
    traces: &[Trace],
    top: usize,
    age_resolution_ns: u64,
) -> String {
    let mut t = table_with(&["address", "size", "age", "thread", "site"]);
    for o in objects.iter().take(top) {
        t.add_row(TRow::new(vec![
            Cell::new(&format!("{:#x}", o.addr)).style_spec("r"),
            Cell::new(&format_size(o.size)).style_spec("r"),
            Cell::new(&format_age(o.age)).style_spec("r"),
            Cell::new(&o.tid.to_string()).style_spec("r"),
            Cell::new(&traces[o.trace as usize].site().name().to_string()).style_spec("r"),
        ]));
    }
    let bytes: u64 = objects.iter().map(|o| o.size).sum();
    let ages = if age_resolution_ns > 0 {
        format!(
            "; ages are lower bounds, to one kernel tick ({})",
            format_age(Duration::from_nanos(age_resolution_ns))
        )
    } else {
        String::new()
    };
    format!(
        "{t}{} objects, {}{}{ages}\n",
        objects.len(),
        format_size_compact(bytes),
        cut_note(objects.len().min(top), objects.len(), "objects"),
    )
}

fn node_label(n: &Node) -> String {
    format!(
        "{} [{}, {}]",
        n.name,
        n.objects,
        format_size_compact(n.bytes)
    )
}

/// A tree as the text printer draws it: a label per node.
struct Labeled {
    label: String,
    children: Vec<Labeled>,
}

impl Labeled {
    fn of_node(n: &Node) -> Self {
        Labeled {
            label: node_label(n),
            children: n.children.iter().map(Labeled::of_node).collect(),
        }
    }
}

/// Trees in the form of Pympler's `ConsoleBrowser.print_tree()`: a node's first child on its
/// own line after `-+-` (or `--` when it is the only one), the others below after `+-`, joined
/// by `|`; a free line closes a node's branches. Nodes deeper than `maxdepth` are left out.
pub fn tree_text(roots: &[Node], maxdepth: usize) -> String {
    let mut out = String::new();
    for root in roots {
        print_node(
            &Labeled::of_node(root),
            String::new(),
            String::new(),
            0,
            maxdepth,
            &mut out,
        );
    }
    out
}

fn print_node(
    n: &Labeled,
    mut prefix: String,
    mut carry: String,
    depth: usize,
    maxdepth: usize,
    out: &mut String,
) {
    prefix.push_str(&n.label);
    carry.push_str(&" ".repeat(n.label.chars().count()));
    if depth == maxdepth || n.children.is_empty() {
        out.push_str(&prefix);
        out.push('\n');
        return;
    }
    let many = n.children.len() > 1;
    prefix.push_str(if many { "-+-" } else { "--" });
    carry.push_str(if many { " | " } else { "  " });
    let last = n.children.len() - 1;
    for (i, child) in n.children.iter().enumerate() {
        if i > 0 {
            // Siblings hang from the `|` column, which the last one closes.
            let stem: String = carry.chars().take(carry.chars().count() - 2).collect();
            prefix = format!("{stem}+-");
            if i == last {
                carry = format!("{stem}  ");
            }
        }
        print_node(
            child,
            prefix.clone(),
            carry.clone(),
            depth + 1,
            maxdepth,
            out,
        );
        if i == last && i > 0 {
            let stem: String = carry.chars().take(carry.chars().count() - 2).collect();
            let line = stem.trim_end();
            if !line.is_empty() {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

/// A block as trees and paths name it: `0xADDR site [size]`.
fn block_label(addr: u64, site: &Frame, size: u64) -> String {
    format!("{addr:#x} {} [{}]", site.name(), format_size_compact(size))
}

fn interior_mark(interior: bool) -> &'static str {
    if interior { " (interior pointer)" } else { "" }
}

fn ref_labeled(t: &RefTree) -> Labeled {
    let mut children: Vec<Labeled> = t
        .referrers
        .iter()
        .map(|r| match r {
            Referrer::Block { tree, interior, .. } => {
                let mut l = ref_labeled(tree);
                l.label.push_str(interior_mark(*interior));
                l
            }
            Referrer::Seen { addr, interior, .. } => Labeled {
                label: format!("{addr:#x} (shown above){}", interior_mark(*interior)),
                children: Vec::new(),
            },
            Referrer::Root {
                place, interior, ..
            } => Labeled {
                label: format!("{}{}", place.describe(), interior_mark(*interior)),
                children: Vec::new(),
            },
        })
        .collect();
    if t.more_roots > 0 {
        children.push(Labeled {
            label: format!("... {} more roots (--max-roots)", t.more_roots),
            children: Vec::new(),
        });
    }
    if t.cut_depth {
        children.push(Labeled {
            label: "... (--maxdepth reached)".into(),
            children: Vec::new(),
        });
    }
    if children.is_empty() {
        children.push(Labeled {
            label: "(nothing points at it: no root reaches it)".into(),
            children: Vec::new(),
        });
    }
    Labeled {
        label: block_label(t.addr, &t.site, t.size),
        children,
    }
}

/// `refs`: the referrer tree of one block in `print_tree` form.
pub fn referrers_text(r: &RefReport) -> String {
    let mut out = String::new();
    print_node(
        &ref_labeled(&r.tree),
        String::new(),
        String::new(),
        0,
        usize::MAX,
        &mut out,
    );
    out
}

/// A loss record's size cell: Valgrind's "D direct, I indirect" where some is indirect.
fn leak_size(r: &LeakRow) -> String {
    if r.indirect_bytes == 0 {
        format_size(r.bytes)
    } else {
        format!(
            "{} (+{} indirect)",
            format_size(r.bytes),
            format_size_compact(r.indirect_bytes)
        )
    }
}

/// A leak check: `kind | sites | # objects | total size`, definitely lost first, then the
/// four totals, what the check cost, and, with `--retention`, why each reachable row is kept.
pub fn leaks_table(r: &LeakReport, top: usize) -> String {
    let noun = r.group_by.noun();
    let mut t = table_with(&["kind", noun, "# objects", "total size"]);
    for row in r.rows.iter().take(top) {
        t.add_row(TRow::new(vec![
            Cell::new(row.kind.words()).style_spec("r"),
            Cell::new(&key_cell(&row.key)).style_spec("r"),
            Cell::new(&row.objects.to_string()).style_spec("r"),
            Cell::new(&leak_size(row)).style_spec("r"),
        ]));
    }
    let mut out = t.to_string();
    if r.rows.len() > top {
        out.push_str(&format!(
            "(top {top} of {} rows shown; -n to see more)\n",
            r.rows.len()
        ));
    }
    let totals: Vec<String> = LeakKind::ALL
        .iter()
        .map(|&k| {
            let tot = r.total(k);
            format!(
                "{}: {} in {} blocks",
                k.words(),
                format_size_compact(tot.bytes),
                tot.objects
            )
        })
        .collect();
    out.push_str(&totals.join("; "));
    out.push('\n');
    if r.facts.two_checks {
        out.push_str(&format!(
            "lost at this check only, reported if the next check finds them lost too: {} in {} blocks\n",
            format_size_compact(r.unconfirmed.bytes),
            r.unconfirmed.objects
        ));
    }
    let f = &r.facts;
    out.push_str(&format!(
        "check {}: paused {} ({} threads); scanned {}; heap memory from before tracing scanned as roots: {}; {} dynamic-loader blocks taken as reachable; {}\n",
        f.check,
        format_age(f.pause),
        f.threads,
        format_size_compact(f.scanned_bytes),
        format_size_compact(f.unaccounted_root_bytes),
        f.loader_blocks,
        trust(&r.counters),
    ));
    // Each step holds the one before: the row's block, then its holder, up to a root.
    for row in r.rows.iter().take(top).filter(|r| !r.retention.is_empty()) {
        out.push_str(&format!("why {} is still reachable:\n", row.key.text()));
        for step in &row.retention {
            let line = match step {
                Step::Block {
                    addr,
                    size,
                    site,
                    at,
                } => format!(
                    "  held by {} (word at +{:#x})",
                    block_label(*addr, site, *size),
                    at - addr
                ),
                Step::Root { place, .. } => format!("  held by {}", place.describe()),
            };
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Writes reports as tables and trees.
pub struct TextPrinter<W> {
    opts: ViewOptions,
    out: W,
}

impl<W: io::Write> TextPrinter<W> {
    /// A printer of `opts`'s view into `out`.
    pub fn new(opts: ViewOptions, out: W) -> Self {
        TextPrinter { opts, out }
    }

    fn write(&mut self, text: &str) -> Result<(), ReportError> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    /// The view of one heap, and what was probed for it where that is known.
    fn heap_view(&self, p: &ProcView, probed: bool) -> Result<String, ReportError> {
        let o = &self.opts;
        Ok(match &o.view {
            View::Summary => {
                let s = analysis::summarize(&p.heap, &o.filter, o.group_by);
                let probed = match (&p.probed, probed) {
                    (Some(pr), true) => format!("probed: {}\n", pr.allocator),
                    _ => String::new(),
                };
                summary_table(&s, o.top) + &probed + &mappings_table(&p.mappings, o.top)
            }
            View::Objects => objects_table(
                &analysis::objects(&p.heap, &o.filter),
                p.heap.traces,
                o.top,
                p.heap.counters.age_resolution_ns,
            ),
            View::Tree { addr, maxdepth } => {
                tree_text(&super::tree_roots(&p.heap, &o.filter, *addr)?, *maxdepth)
            }
        })
    }
}

/// A process's heading in a report on several.
fn heading(p: &ProcView) -> String {
    let mut h = format!("\n-- pid {} {}, {}", p.id.pids(), p.id.comm, p.state);
    if let Some(parent) = p.parent {
        h.push_str(&format!(", child of {parent}"));
    }
    if let Some(probed) = &p.probed {
        h.push_str(&format!("; probed {}", probed.allocator));
    }
    h + " --\n"
}

impl<W: io::Write> super::Print for TextPrinter<W> {
    fn view(&mut self, p: &ProcView, _facts: &Facts) -> Result<(), ReportError> {
        let text = self.heap_view(p, true)?;
        self.write(&text)
    }

    fn processes(&mut self, procs: &[ProcView], _facts: &Facts) -> Result<(), ReportError> {
        let rows = process_rows(procs, &self.opts);
        let lost = procs.first().map_or(0, |p| p.heap.counters.lost_events);
        let mut out = processes_table(&rows, self.opts.top_procs, lost);
        for r in rows.iter().take(self.opts.top_procs) {
            let p = &procs[r.index];
            if r.objects == 0 && p.mappings.is_empty() {
                continue;
            }
            out.push_str(&heading(p));
            out.push_str(&self.heap_view(p, false)?);
        }
        self.write(&out)
    }

    fn ended(&mut self, p: &ProcView) -> Result<(), ReportError> {
        let s = analysis::summarize(&p.heap, &self.opts.filter, self.opts.group_by);
        let (objects, bytes) = s.total();
        let top = s.rows.first().map_or(String::new(), |r| {
            format!(
                "; largest: {} ({})",
                r.key.text(),
                format_size_compact(r.bytes)
            )
        });
        let line = format!(
            "pid {} {} {}: {objects} objects, {} still live{top}\n",
            p.id.pids(),
            p.id.comm,
            p.state,
            format_size_compact(bytes)
        );
        self.write(&line)
    }

    fn leaks(&mut self, r: &LeakReport) -> Result<(), ReportError> {
        let text = leaks_table(r, self.opts.top);
        self.write(&text)
    }

    fn referrers(&mut self, r: &RefReport) -> Result<(), ReportError> {
        let text = referrers_text(r);
        self.write(&text)
    }

    fn diff(&mut self, d: &Diff, who: Option<&Identity>) -> Result<(), ReportError> {
        let table = diff_table(d, self.opts.top);
        let text = match who {
            Some(id) => format!("\n-- pid {} {} --\n{table}", id.pids(), id.comm),
            None => table,
        };
        self.write(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::{GroupBy, Label},
        model::Frame,
    };

    #[test]
    fn sizes_print_like_pympler() {
        assert_eq!(format_size(864), " 864     B");
        assert_eq!(format_size(0), "   0     B");
        assert_eq!(format_size(1024), "1024     B");
        assert_eq!(format_size(1025), "   1.00 KB");
        assert_eq!(format_size(976_179), " 953.30 KB");
        assert_eq!(format_size(1_121_977), "   1.07 MB");
        assert_eq!(format_size(u64::MAX), "  16.00 EB");
    }

    #[test]
    fn size_changes_are_signed() {
        assert_eq!(format_size_change(976_179), "+953.30 KB");
        assert_eq!(format_size_change(-864), "-864     B");
        assert_eq!(format_size_change(0), "0     B");
    }

    fn sites(rows: &[(&str, u64, u64)], unknown_frees: u64) -> Summary {
        Summary::from_figures(
            1,
            GroupBy::Site,
            rows.iter()
                .map(|(k, o, b)| (Key::Site(Frame::from_name(k)), *o, *b)),
            Counters {
                unknown_frees,
                ..Counters::default()
            },
        )
    }

    #[test]
    fn summary_table_has_pympler_columns_and_trust_line() {
        let s = sites(&[("leak (a.c:3)", 2, 2048), ("x", 1, 8)], 3);
        let out = summary_table(&s, 1);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "        sites | # objects | total size ");
        assert_eq!(lines[1], "==============|===========|============");
        assert_eq!(lines[2], " leak (a.c:3) |         2 |    2.00 KB ");
        assert_eq!(
            lines[3],
            "total: 3 objects, 2.01 KB live in 2 sites (top 1 of 2 sites shown); lost_events: 0; unknown_frees: 3"
        );
    }

    fn node(label: &str, objects: u64, children: Vec<Node>) -> Node {
        Node {
            label: Label::Frame(Frame::from_name(label)),
            name: label.into(),
            objects,
            bytes: objects * 8,
            children,
        }
    }

    /// The shape of the guide's `print_tree` example: a root with five branches, the first two
    /// with branches of their own, the others with one each.
    #[test]
    fn tree_prints_like_console_browser() {
        let leaf = |l: &str| node(l, 1, vec![]);
        let root = node(
            "s",
            5,
            vec![
                node("d", 1, vec![leaf("l1"), leaf("l2")]),
                node("e", 1, vec![leaf("m1"), leaf("m2")]),
                node("l", 1, vec![leaf("d2")]),
                node("t", 1, vec![leaf("d3")]),
            ],
        );
        let text = tree_text(&[root], 8);
        let want = "\
s [5, 40 B]-+-d [1, 8 B]-+-l1 [1, 8 B]
            |            +-l2 [1, 8 B]
            |
            +-e [1, 8 B]-+-m1 [1, 8 B]
            |            +-m2 [1, 8 B]
            |
            +-l [1, 8 B]--d2 [1, 8 B]
            +-t [1, 8 B]--d3 [1, 8 B]
";
        assert_eq!(text, want);
        assert_eq!(
            tree_text(&[node("s", 1, vec![leaf("d")])], 0),
            "s [1, 8 B]\n"
        );
    }

    fn site(f: &str, line: u32) -> Frame {
        Frame {
            function: Some(f.into()),
            file: Some("a.c".into()),
            line: Some(line),
            ..Frame::default()
        }
    }

    /// Loss records in Pympler's table form, definitely lost first with their indirect bytes,
    /// the four totals, and what the check cost; a retention path under the table.
    #[test]
    fn leaks_print_as_loss_records() {
        use crate::{
            analysis::{LeakReport, LeakRow, Step, Total},
            model::{CheckFacts, Counters, LeakKind, Place},
        };
        let row = |kind, f, line, objects, bytes, indirect_bytes, retention| LeakRow {
            kind,
            key: Key::Site(site(f, line)),
            objects,
            bytes,
            indirect_bytes,
            stack: vec![site(f, line)],
            retention,
        };
        let r = LeakReport {
            pid: 7,
            group_by: GroupBy::Site,
            rows: vec![
                row(LeakKind::DefinitelyLost, "lost", 3, 1, 48, 4800, vec![]),
                row(LeakKind::IndirectlyLost, "lost", 5, 100, 4800, 0, vec![]),
                row(
                    LeakKind::Reachable,
                    "kept",
                    9,
                    2,
                    2000,
                    0,
                    vec![
                        Step::Block {
                            addr: 0x1000,
                            size: 64,
                            site: site("table", 2),
                            at: 0x1010,
                        },
                        Step::Root {
                            place: Place::Global {
                                symbol: Some("g_table".into()),
                                module: "a".into(),
                                section: Some(".bss".into()),
                                offset: 8,
                            },
                            at: 0x4008,
                        },
                    ],
                ),
            ],
            totals: [
                Total {
                    objects: 1,
                    bytes: 48,
                },
                Total {
                    objects: 100,
                    bytes: 4800,
                },
                Total::default(),
                Total {
                    objects: 2,
                    bytes: 2000,
                },
            ],
            unconfirmed: Total::default(),
            facts: CheckFacts {
                check: 1,
                pause: Duration::from_millis(12),
                scanned_bytes: 4096,
                unaccounted_root_bytes: 2048,
                threads: 3,
                ..CheckFacts::default()
            },
            counters: Counters::default(),
        };
        let want = [
            "            kind |        sites | # objects |                     total size ",
            "=================|==============|===========|================================",
            " definitely lost | lost (a.c:3) |         1 |   48     B (+4.69 KB indirect) ",
            " indirectly lost | lost (a.c:5) |       100 |                        4.69 KB ",
            " still reachable | kept (a.c:9) |         2 |                        1.95 KB ",
            "definitely lost: 48 B in 1 blocks; indirectly lost: 4.69 KB in 100 blocks; possibly lost: 0 B in 0 blocks; still reachable: 1.95 KB in 2 blocks",
            "check 1: paused 12 ms (3 threads); scanned 4.00 KB; heap memory from before tracing scanned as roots: 2.00 KB; 0 dynamic-loader blocks taken as reachable; lost_events: 0; unknown_frees: 0",
            "why kept (a.c:9) is still reachable:",
            "  held by 0x1000 table (a.c:2) [64 B] (word at +0x10)",
            "  held by global g_table (a .bss+0x8)",
            "",
        ]
        .join("\n");
        assert_eq!(leaks_table(&r, 15), want);
        // Cut to one row, it says so.
        assert!(leaks_table(&r, 1).contains("(top 1 of 3 rows shown; -n to see more)"));
    }

    /// `refs` draws its tree as `print_tree` does: the block at the root, blocks and roots
    /// that point at it to the right.
    #[test]
    fn referrers_print_as_a_tree() {
        use crate::{
            analysis::{RefReport, RefTree, Referrer},
            model::{CheckFacts, Place},
        };
        let r = RefReport {
            pid: 7,
            facts: CheckFacts::default(),
            tree: RefTree {
                addr: 0x2000,
                size: 100,
                site: site("leaf", 4),
                referrers: vec![
                    Referrer::Block {
                        at: 0x1008,
                        interior: false,
                        tree: RefTree {
                            addr: 0x1000,
                            size: 64,
                            site: site("table", 2),
                            referrers: vec![Referrer::Root {
                                place: Place::Register {
                                    tid: 9,
                                    reg: "rbx".into(),
                                },
                                at: 0,
                                interior: false,
                            }],
                            cut_depth: false,
                            more_roots: 0,
                        },
                    },
                    Referrer::Root {
                        place: Place::Tls { tid: 9 },
                        at: 0x7000,
                        interior: true,
                    },
                ],
                cut_depth: false,
                more_roots: 2,
            },
        };
        let want = "\
0x2000 leaf (a.c:4) [100 B]-+-0x1000 table (a.c:2) [64 B]--thread 9 register rbx
                            +-thread 9 TLS (interior pointer)
                            +-... 2 more roots (--max-roots)
";
        assert_eq!(referrers_text(&r), want);
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(format_age(Duration::from_millis(850)), "850 ms");
        assert_eq!(format_age(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(format_age(Duration::from_secs(240)), "4.0 min");
    }
}
