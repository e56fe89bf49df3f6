//! The text printer: sizes the way Pympler prints them, summary and diff tables in Pympler's
//! three-column form, object tables, and trees in the form of `ConsoleBrowser.print_tree`.
//! The one place that decides how a figure looks in a terminal.
//!
//! Every function that prints names takes a `width`: `Some(columns)` fits tables and trees to
//! it, shortening the names that do not fit ([`super::fit`]); `None` prints them in full (a
//! pipe, a file, `--full-names`).

use std::{io, time::Duration};

use prettytable::{
    Cell, Row as TRow, Table,
    format::{FormatBuilder, LinePosition, LineSeparator},
};

use super::{
    Facts, ProcView, ReportError, View, ViewOptions,
    fit::{MIN_NAME_WIDTH, Name, columns},
    process_rows,
};
use crate::{
    analysis::{
        self, Diff, Key, Label, LeakReport, LeakRow, Node, Object, RefReport, RefTree, Referrer,
        Step, Summary,
    },
    model::{Counters, Frame, Identity, LeakKind, MapRow, Place, Trace},
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

fn cut_note(shown: usize, all: usize, noun: &str) -> String {
    if shown < all {
        format!(" (top {shown} of {all} {noun} shown)")
    } else {
        String::new()
    }
}

/// A row key's names, as [`Key::names`] gives them but kept structured: one, or a stack's
/// frames innermost first (and the marker of a stack that is not whole).
fn key_names(k: &Key) -> Vec<Name<'_>> {
    match k {
        Key::Site(f) => vec![Name::Frame(f)],
        Key::Function(s) => vec![Name::Text(s.clone())],
        Key::Stack { frames, end } => {
            let mut v: Vec<Name> = frames.iter().map(Name::Frame).collect();
            v.extend(end.map(|m| Name::Text(m.to_string())));
            v
        }
        Key::Size(_) => k.names().into_iter().map(Name::Text).collect(),
    }
}

/// A table row before layout: the cells of every column but the names', and the names, one a
/// line (a stack cell holds one frame per line).
type Pending<'a> = (Vec<String>, Vec<Name<'a>>);

/// The widest line of a cell.
fn cell_width(cell: &str) -> usize {
    cell.lines().map(columns).max().unwrap_or(0)
}

/// A table in Pympler's form ([`table_with`]) whose column `names_at` holds names. With a
/// `width`, every line of a name cell is shortened to what the other columns leave (padding
/// and ` | ` included), but to no fewer than [`MIN_NAME_WIDTH`] columns: so the table is no
/// wider than `width` where that leaves room for names.
fn fitted_table(
    titles: &[&str],
    names_at: usize,
    rows: Vec<Pending>,
    width: Option<usize>,
) -> Table {
    let budget = width.map(|w| {
        let others: usize = titles
            .iter()
            .enumerate()
            .filter(|&(c, _)| c != names_at)
            .map(|(c, title)| {
                let c = if c < names_at { c } else { c - 1 };
                let cells = rows.iter().map(|(cells, _)| cell_width(&cells[c]));
                // Padding on both sides and the separator.
                cells.max().unwrap_or(0).max(columns(title)) + 3
            })
            .sum();
        w.saturating_sub(others + 2).max(MIN_NAME_WIDTH)
    });
    let mut t = table_with(titles);
    for (mut cells, names) in rows {
        let lines: Vec<String> = names.iter().map(|n| n.fit(budget)).collect();
        cells.insert(names_at, lines.join("\n"));
        t.add_row(TRow::new(
            cells.iter().map(|c| Cell::new(c).style_spec("r")).collect(),
        ));
    }
    t
}

/// The largest number of columns `names` can each take so that together they fit in `room`
/// (`usize::MAX` when they fit whole): names shorter than that stay whole and leave their
/// room to the longer ones.
fn share(lengths: &[usize], room: usize) -> usize {
    if lengths.iter().sum::<usize>() <= room {
        return usize::MAX;
    }
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable();
    let mut left = room;
    for (i, &l) in sorted.iter().enumerate() {
        let rest = sorted.len() - i;
        if l * rest > left {
            return left / rest;
        }
        left -= l;
    }
    usize::MAX
}

/// One line of running text, `before` + `names` joined by `sep` + `after`, the names shortened
/// so that the line fits `width` where it can (each to no fewer than [`MIN_NAME_WIDTH`]).
fn fit_line(before: &str, names: &[Name], sep: &str, after: &str, width: Option<usize>) -> String {
    let budget = width.map(|w| {
        let fixed = columns(before) + columns(after) + columns(sep) * names.len().saturating_sub(1);
        let lengths: Vec<usize> = names.iter().map(|n| columns(&n.full())).collect();
        share(&lengths, w.saturating_sub(fixed)).max(MIN_NAME_WIDTH)
    });
    let names: Vec<String> = names.iter().map(|n| n.fit(budget)).collect();
    format!("{before}{}{after}", names.join(sep))
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

/// A line of prose (totals, trust figures, what was probed) in `width` columns: broken after
/// `; ` where it can, else after `, `, else after a space, the lines after the first indented
/// by two. A word longer than the width stays whole. No limit: the line as it is. Ends with a
/// newline.
pub fn prose(line: &str, width: Option<usize>) -> String {
    let line = line.trim_end_matches('\n');
    let Some(width) = width.filter(|&w| crate::report::fit::columns(line) > w) else {
        return format!("{line}\n");
    };
    let cols = crate::report::fit::columns;
    let mut out = String::new();
    let mut rest = line;
    let mut indent = "";
    while cols(indent) + cols(rest) > width {
        let room = width.saturating_sub(cols(indent));
        // The last break that leaves the piece within the room, preferring `; `, then `, `.
        let fits = |i: &usize| cols(&rest[..*i]) <= room;
        let at = ["; ", ", ", " "]
            .iter()
            .find_map(|sep| {
                rest.match_indices(sep)
                    .map(|(i, _)| i + sep.len())
                    .filter(fits)
                    .last()
            })
            // No break fits: the first word overflows alone.
            .or_else(|| rest.find(' ').map(|i| i + 1));
        let Some(at) = at.filter(|&a| a > 0) else {
            break;
        };
        out.push_str(indent);
        out.push_str(rest[..at].trim_end());
        out.push('\n');
        rest = &rest[at..];
        indent = "  ";
    }
    out.push_str(indent);
    out.push_str(rest);
    out.push('\n');
    out
}

/// The summary as Pympler prints one: `sites | # objects | total size` (or functions, stacks,
/// sizes), the `top` largest rows, then a line with the totals and how far the figures can be
/// trusted. Names are fitted to `width` (see the module's documentation).
pub fn summary_table(s: &Summary, top: usize, width: Option<usize>) -> String {
    let noun = s.group_by.noun();
    let rows = s
        .rows
        .iter()
        .take(top)
        .map(|r| {
            let cells = vec![r.objects.to_string(), format_size(r.bytes)];
            (cells, key_names(&r.key))
        })
        .collect();
    let t = fitted_table(&[noun, "# objects", "total size"], 0, rows, width);
    let (objects, bytes) = s.total();
    let total = format!(
        "total: {objects} objects, {} live in {} {noun}{}; {}{}",
        format_size_compact(bytes),
        s.rows.len(),
        cut_note(s.rows.len().min(top), s.rows.len(), noun),
        trust(&s.counters),
        estimate_note(s.sample_bytes),
    );
    format!("{t}{}", prose(&total, width))
}

/// A diff as `SummaryTracker.print_diff()` prints one, with signed figures; names fitted to
/// `width`.
pub fn diff_table(d: &Diff, top: usize, width: Option<usize>) -> String {
    let noun = d.group_by.noun();
    let rows = d
        .rows
        .iter()
        .take(top)
        .map(|r| {
            let objects = if r.objects > 0 {
                format!("+{}", r.objects)
            } else {
                r.objects.to_string()
            };
            let cells = vec![objects, format_size_change(r.bytes)];
            (cells, key_names(&r.key))
        })
        .collect();
    let t = fitted_table(&[noun, "# objects", "total size"], 0, rows, width);
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
/// `mmap sites | # regions | total size`, names fitted to `width`. Empty when it mapped none.
pub fn mappings_table(rows: &[MapRow], top: usize, width: Option<usize>) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let pending = rows
        .iter()
        .take(top)
        .map(|r| {
            let cells = vec![r.regions.to_string(), format_size(r.bytes)];
            (cells, vec![Name::Frame(&r.site)])
        })
        .collect();
    let t = fitted_table(
        &["mmap sites", "# regions", "total size"],
        0,
        pending,
        width,
    );
    let (regions, bytes) = map_totals(rows);
    let total = format!(
        "mmap total: {regions} regions, {} mapped by the program itself (anonymous mmap outside the allocator; not in the heap figures){}",
        format_size_compact(bytes),
        cut_note(rows.len().min(top), rows.len(), "sites"),
    );
    format!("\n{t}{}", prose(&total, width))
}

/// The process table that heads a report on several processes, largest first as given:
/// `pid | comm | state | # objects | total size`, then the totals. The state (`exec'd PATH`)
/// is what gives way to `width`.
fn processes_table(
    rows: &[super::ProcRow],
    top: usize,
    lost_events: u64,
    width: Option<usize>,
) -> String {
    let pending = rows
        .iter()
        .take(top)
        .map(|r| {
            let cells = vec![
                r.pids.clone(),
                r.comm.clone(),
                r.objects.to_string(),
                format_size(r.bytes),
            ];
            (cells, vec![Name::Text(r.state.clone())])
        })
        .collect();
    let t = fitted_table(
        &["pid", "comm", "state", "# objects", "total size"],
        2,
        pending,
        width,
    );
    let (objects, bytes) = rows
        .iter()
        .fold((0, 0), |a, r| (a.0 + r.objects, a.1 + r.bytes));
    let total = format!(
        "total: {objects} objects, {} live in {} processes{}; lost_events: {lost_events} (all processes)",
        format_size_compact(bytes),
        rows.len(),
        cut_note(rows.len().min(top), rows.len(), "processes"),
    );
    format!("{t}{}", prose(&total, width))
}

/// The process table alone, from figures made elsewhere (the daemon's process list): each
/// process with its state, live objects and bytes, largest first, the `top` first shown.
pub fn process_list(
    procs: &[(Identity, String, u64, u64)],
    top: usize,
    lost_events: u64,
    width: Option<usize>,
) -> String {
    let mut rows: Vec<super::ProcRow> = procs
        .iter()
        .enumerate()
        .map(|(index, (id, state, objects, bytes))| super::ProcRow {
            index,
            pids: id.pids(),
            comm: id.comm.clone(),
            state: state.clone(),
            objects: *objects,
            bytes: *bytes,
        })
        .collect();
    super::order_process_rows(&mut rows);
    processes_table(&rows, top, lost_events, width)
}

/// A pause: to the hundredth of a millisecond below 10 ms (`"0.21 ms"`), else as an age.
fn format_pause(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    } else {
        format_age(d)
    }
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
/// line saying how many there are; sites fitted to `width`.
pub fn objects_table(
    objects: &[Object],
    traces: &[Trace],
    top: usize,
    age_resolution_ns: u64,
    width: Option<usize>,
) -> String {
    let rows = objects
        .iter()
        .take(top)
        .map(|o| {
            let cells = vec![
                format!("{:#x}", o.addr),
                format_size(o.size),
                format_age(o.age),
                o.tid.to_string(),
            ];
            (cells, vec![Name::Frame(traces[o.trace as usize].site())])
        })
        .collect();
    let t = fitted_table(
        &["address", "size", "age", "thread", "site"],
        4,
        rows,
        width,
    );
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

/// A tree as the text printer draws it: a label per node, `before` + a name that may be
/// shortened + `after`.
struct Labeled<'a> {
    /// What comes before the name (`0x1000 `).
    before: String,
    /// The name.
    name: Name<'a>,
    /// What comes after it (` [3, 24 B]`).
    after: String,
    children: Vec<Labeled<'a>>,
}

impl<'a> Labeled<'a> {
    /// A node of the call tree, `name [objects, size]`.
    fn of_node(n: &'a Node) -> Self {
        Labeled {
            before: String::new(),
            name: match &n.label {
                Label::Frame(f) => Name::Frame(f),
                Label::End(_) | Label::Block(_) => Name::Text(n.name.clone()),
            },
            after: format!(" [{}, {}]", n.objects, format_size_compact(n.bytes)),
            children: n.children.iter().map(Labeled::of_node).collect(),
        }
    }

    /// A label of text alone, never shortened.
    fn text(label: String) -> Self {
        Labeled {
            before: label,
            name: Name::Text(String::new()),
            after: String::new(),
            children: Vec::new(),
        }
    }

    /// The label, its name fitted to `budget`.
    fn label(&self, budget: Option<usize>) -> String {
        format!("{}{}{}", self.before, self.name.fit(budget), self.after)
    }
}

/// How a tree is drawn: how deep, and in how many columns (`None`: names in full).
#[derive(Clone, Copy)]
struct Bounds {
    maxdepth: usize,
    width: Option<usize>,
}

/// Trees in the form of Pympler's `ConsoleBrowser.print_tree()`: a node's first child on its
/// own line after `-+-` (or `--` when it is the only one), the others below after `+-`, joined
/// by `|`; a free line closes a node's branches. Nodes deeper than `maxdepth` are left out.
/// With a `width`, each node's name shares what its line leaves with the names drawn after it on
/// that line (short names stay whole), never below [`MIN_NAME_WIDTH`].
pub fn tree_text(roots: &[Node], maxdepth: usize, width: Option<usize>) -> String {
    let mut out = String::new();
    for root in roots {
        print_node(
            &Labeled::of_node(root),
            String::new(),
            String::new(),
            0,
            Bounds { maxdepth, width },
            &mut out,
        );
    }
    out
}

/// The columns a node's name may take when its label starts `room` columns before the end of
/// the line: the line holds it and its first child, that child's first child, and so on down
/// to `maxdepth`, each with its connector; those names share the room ([`share`]: short ones
/// stay whole), but none gets fewer than [`MIN_NAME_WIDTH`].
fn name_budget(n: &Labeled, depth: usize, maxdepth: usize, room: usize) -> usize {
    let mut lengths = Vec::new();
    let mut fixed = 0;
    let (mut node, mut depth) = (n, depth);
    loop {
        lengths.push(columns(&node.name.full()));
        fixed += columns(&node.before) + columns(&node.after);
        if depth == maxdepth || node.children.is_empty() {
            break;
        }
        fixed += if node.children.len() > 1 { 3 } else { 2 };
        node = &node.children[0];
        depth += 1;
    }
    share(&lengths, room.saturating_sub(fixed)).max(MIN_NAME_WIDTH)
}

fn print_node(
    n: &Labeled,
    mut prefix: String,
    mut carry: String,
    depth: usize,
    bounds: Bounds,
    out: &mut String,
) {
    let budget = bounds.width.map(|w| {
        let room = w.saturating_sub(columns(&prefix));
        name_budget(n, depth, bounds.maxdepth, room)
    });
    let label = n.label(budget);
    prefix.push_str(&label);
    carry.push_str(&" ".repeat(columns(&label)));
    if depth == bounds.maxdepth || n.children.is_empty() {
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
        print_node(child, prefix.clone(), carry.clone(), depth + 1, bounds, out);
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

/// A block as trees and paths name it, `0xADDR site [size]`, cut around its site.
fn block_label(addr: u64, site: &Frame, size: u64) -> (String, Name<'_>, String) {
    (
        format!("{addr:#x} "),
        Name::Frame(site),
        format!(" [{}]", format_size_compact(size)),
    )
}

/// A root as [`Place::describe`] names it, cut before the part that may be shortened: the
/// frame of a stack root (`thread 12 stack in ` + frame), else the whole description.
fn place_label(place: &Place) -> (String, Name<'_>) {
    match place {
        Place::Stack {
            tid,
            frame: Some(f),
        } => (format!("thread {tid} stack in "), Name::Frame(f)),
        _ => (String::new(), Name::Text(place.describe())),
    }
}

fn interior_mark(interior: bool) -> &'static str {
    if interior { " (interior pointer)" } else { "" }
}

fn ref_labeled(t: &RefTree) -> Labeled<'_> {
    let mut children: Vec<Labeled> = t
        .referrers
        .iter()
        .map(|r| match r {
            Referrer::Block { tree, interior, .. } => {
                let mut l = ref_labeled(tree);
                l.after.push_str(interior_mark(*interior));
                l
            }
            Referrer::Seen { addr, interior, .. } => Labeled::text(format!(
                "{addr:#x} (shown above){}",
                interior_mark(*interior)
            )),
            Referrer::Root {
                place, interior, ..
            } => {
                let (before, name) = place_label(place);
                Labeled {
                    before,
                    name,
                    after: interior_mark(*interior).to_string(),
                    children: Vec::new(),
                }
            }
        })
        .collect();
    if t.more_roots > 0 {
        children.push(Labeled::text(format!(
            "... {} more roots (--max-roots)",
            t.more_roots
        )));
    }
    if t.cut_depth {
        children.push(Labeled::text("... (--maxdepth reached)".into()));
    }
    if children.is_empty() {
        children.push(Labeled::text(
            "(nothing points at it: no root reaches it)".into(),
        ));
    }
    let (before, name, after) = block_label(t.addr, &t.site, t.size);
    Labeled {
        before,
        name,
        after,
        children,
    }
}

/// `refs`: the referrer tree of one block in `print_tree` form, names fitted to `width`.
pub fn referrers_text(r: &RefReport, width: Option<usize>) -> String {
    let mut out = String::new();
    print_node(
        &ref_labeled(&r.tree),
        String::new(),
        String::new(),
        0,
        Bounds {
            maxdepth: usize::MAX,
            width,
        },
        &mut out,
    );
    out
}

/// A loss record's size cell: Valgrind's "D direct, I indirect" where some is indirect.
fn leak_size(r: &LeakRow) -> String {
    if r.indirect_bytes == 0 {
        format_size(r.bytes)
    } else {
        // Compact, so that the names keep their room in a terminal.
        format!(
            "{} + {} indirect",
            format_size_compact(r.bytes),
            format_size_compact(r.indirect_bytes)
        )
    }
}

/// A leak check: `kind | sites | # objects | total size`, definitely lost first, then the
/// four totals, what the check cost, and, with `--retention`, why each reachable row is kept.
/// Names, in the table and in the retention paths, are fitted to `width`.
pub fn leaks_table(r: &LeakReport, top: usize, width: Option<usize>) -> String {
    let noun = r.group_by.noun();
    let rows = r
        .rows
        .iter()
        .take(top)
        .map(|row| {
            let cells = vec![
                row.kind.words().to_string(),
                row.objects.to_string(),
                leak_size(row),
            ];
            (cells, key_names(&row.key))
        })
        .collect();
    let t = fitted_table(&["kind", noun, "# objects", "total size"], 1, rows, width);
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
    out.push_str(&prose(&totals.join("; "), width));
    if r.facts.two_checks {
        out.push_str(&prose(
            &format!(
                "lost at this check only, reported if the next check finds them lost too: {} in {} blocks",
                format_size_compact(r.unconfirmed.bytes),
                r.unconfirmed.objects
            ),
            width,
        ));
    }
    let f = &r.facts;
    out.push_str(&prose(
        &format!(
            "check {}: paused {} ({} thread{}); scanned {}; heap memory from before tracing scanned as roots: {}; {} dynamic-loader blocks taken as reachable; {}",
            f.check,
            format_pause(f.pause),
            f.threads,
            if f.threads == 1 { "" } else { "s" },
            format_size_compact(f.scanned_bytes),
            format_size_compact(f.unaccounted_root_bytes),
            f.loader_blocks,
            trust(&r.counters),
        ),
        width,
    ));
    // Each step holds the one before: the row's block, then its holder, up to a root.
    for row in r.rows.iter().take(top).filter(|r| !r.retention.is_empty()) {
        let names = key_names(&row.key);
        out.push_str(&fit_line(
            "why ",
            &names,
            " <- ",
            " is still reachable:",
            width,
        ));
        out.push('\n');
        for step in &row.retention {
            let line = match step {
                Step::Block {
                    addr,
                    size,
                    site,
                    at,
                } => {
                    let (before, name, after) = block_label(*addr, site, *size);
                    fit_line(
                        &format!("  held by {before}"),
                        &[name],
                        "",
                        &format!("{after} (word at +{:#x})", at - addr),
                        width,
                    )
                }
                Step::Root { place, .. } => {
                    let (before, name) = place_label(place);
                    fit_line(&format!("  held by {before}"), &[name], "", "", width)
                }
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

    /// The columns names are fitted to: `None` with `--full-names` or where there is no limit.
    fn width(&self) -> Option<usize> {
        if self.opts.full_names {
            None
        } else {
            self.opts.width
        }
    }

    fn write(&mut self, text: &str) -> Result<(), ReportError> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    /// The view of one heap, and what was probed for it where that is known.
    fn heap_view(&self, p: &ProcView, probed: bool) -> Result<String, ReportError> {
        let o = &self.opts;
        let width = self.width();
        Ok(match &o.view {
            View::Summary => {
                let s = analysis::summarize(&p.heap, &o.filter, o.group_by);
                let probed = match (&p.probed, probed) {
                    (Some(pr), true) => prose(&format!("probed: {}", pr.allocator), width),
                    _ => String::new(),
                };
                summary_table(&s, o.top, width)
                    + &probed
                    + &mappings_table(&p.mappings, o.top, width)
            }
            View::Objects => objects_table(
                &analysis::objects(&p.heap, &o.filter),
                p.heap.traces,
                o.top,
                p.heap.counters.age_resolution_ns,
                width,
            ),
            View::Tree { addr, maxdepth } => {
                let roots = super::tree_roots(&p.heap, &o.filter, *addr)?;
                tree_text(&roots, *maxdepth, width)
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
        // The table lists as many rows as any table (-n), and at least those shown in full.
        let listed = self.opts.top.max(self.opts.top_procs);
        let mut out = processes_table(&rows, listed, lost, self.width());
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
        let mut line = format!(
            "pid {} {} {}: {objects} objects, {} still live",
            p.id.pids(),
            p.id.comm,
            p.state,
            format_size_compact(bytes)
        );
        if let Some(r) = s.rows.first() {
            line = fit_line(
                &format!("{line}; largest: "),
                &key_names(&r.key),
                " <- ",
                &format!(" ({})", format_size_compact(r.bytes)),
                self.width(),
            );
        }
        line.push('\n');
        self.write(&line)
    }

    fn leaks(&mut self, r: &LeakReport) -> Result<(), ReportError> {
        let text = leaks_table(r, self.opts.top, self.width());
        self.write(&text)
    }

    fn referrers(&mut self, r: &RefReport) -> Result<(), ReportError> {
        let text = referrers_text(r, self.width());
        self.write(&text)
    }

    fn diff(&mut self, d: &Diff, who: Option<&Identity>) -> Result<(), ReportError> {
        let table = diff_table(d, self.opts.top, self.width());
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

    /// The daemon's process list: largest first, `top` rows, the total over all.
    #[test]
    fn process_list_orders_and_cuts() {
        let id = |pid, comm: &str| Identity {
            pid,
            ns_pid: None,
            comm: comm.into(),
        };
        let procs = [
            (id(1, "small"), "running".to_string(), 1, 10),
            (id(2, "big"), "running".to_string(), 5, 5000),
            (id(3, "mid"), "exited with code 0".to_string(), 2, 300),
        ];
        let t = process_list(&procs, 2, 0, None);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[2].contains(" big ") && lines[3].contains(" mid "),
            "{t}"
        );
        assert!(!t.contains("small"), "{t}");
        assert!(
            t.contains(
                "total: 8 objects, 5.19 KB live in 3 processes (top 2 of 3 processes shown)"
            ),
            "{t}"
        );
    }
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
        let out = summary_table(&s, 1, None);
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
        let text = tree_text(&[root], 8, None);
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
            tree_text(&[node("s", 1, vec![leaf("d")])], 0, None),
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
            "            kind |        sites | # objects |              total size ",
            "=================|==============|===========|=========================",
            " definitely lost | lost (a.c:3) |         1 | 48 B + 4.69 KB indirect ",
            " indirectly lost | lost (a.c:5) |       100 |                 4.69 KB ",
            " still reachable | kept (a.c:9) |         2 |                 1.95 KB ",
            "definitely lost: 48 B in 1 blocks; indirectly lost: 4.69 KB in 100 blocks; possibly lost: 0 B in 0 blocks; still reachable: 1.95 KB in 2 blocks",
            "check 1: paused 12 ms (3 threads); scanned 4.00 KB; heap memory from before tracing scanned as roots: 2.00 KB; 0 dynamic-loader blocks taken as reachable; lost_events: 0; unknown_frees: 0",
            "why kept (a.c:9) is still reachable:",
            "  held by 0x1000 table (a.c:2) [64 B] (word at +0x10)",
            "  held by global g_table (a .bss+0x8)",
            "",
        ]
        .join("\n");
        assert_eq!(leaks_table(&r, 15, None), want);
        // Cut to one row, it says so.
        assert!(leaks_table(&r, 1, None).contains("(top 1 of 3 rows shown; -n to see more)"));
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
        assert_eq!(referrers_text(&r, None), want);
    }

    #[test]
    fn prose_breaks_at_semicolons_then_commas() {
        let line = "total: 3 objects, 2.01 KB live in 2 sites; lost_events: 0; unknown_frees: 3";
        assert_eq!(prose(line, None), format!("{line}\n"));
        assert_eq!(prose(line, Some(200)), format!("{line}\n"));
        assert_eq!(
            prose(line, Some(45)),
            "total: 3 objects, 2.01 KB live in 2 sites;\n  lost_events: 0; unknown_frees: 3\n"
        );
        assert_eq!(
            prose(line, Some(30)),
            "total: 3 objects,\n  2.01 KB live in 2 sites;\n  lost_events: 0;\n  unknown_frees: 3\n"
        );
        // A word longer than the width stays whole.
        assert_eq!(prose("probed: x,y", Some(3)), "probed:\n  x,y\n");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(format_age(Duration::from_millis(850)), "850 ms");
        assert_eq!(format_age(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(format_age(Duration::from_secs(240)), "4.0 min");
    }

    /// Frames of a C++ program seen through LLVM, and of Rust code, too long for a terminal.
    mod wide {
        use super::*;
        use crate::{
            analysis::{DiffRow, RefReport, RefTree, Referrer},
            model::{Block, CheckFacts, Heap, Place, StackState},
            report::{Format, Probed, ProbedLibrary, fit::LLVM_GROW, printer},
        };

        fn grow() -> Frame {
            Frame {
                module: Some("libLLVM.so.18.1".into()),
                function: Some(LLVM_GROW.into()),
                function_offset: 0x69,
                ..Frame::default()
            }
        }

        fn rust_fmt() -> Frame {
            Frame {
                function: Some("<impl core::fmt::Debug for my_crate::config::ServerConfiguration<alloc::string::String>>::fmt".into()),
                file: Some("/home/me/.cargo/registry/src/index.crates.io-6f17d22bba15001f/my_crate-1.0.0/src/config.rs".into()),
                line: Some(123),
                ..Frame::default()
            }
        }

        fn cpp_print() -> Frame {
            Frame {
                function: Some("std::basic_ostream<char, std::char_traits<char> >& (anonymous namespace)::operator<< <std::vector<std::pair<int, int>, std::allocator<std::pair<int, int> > > >(std::basic_ostream<char, std::char_traits<char> >&, Printer<std::vector<int> > const&)".into()),
                file: Some("/usr/include/c++/12/ostream".into()),
                line: Some(611),
                ..Frame::default()
            }
        }

        fn traces() -> Vec<Trace> {
            vec![
                Trace::new(
                    vec![grow(), rust_fmt(), Frame::from_name("main (main.rs:3)")],
                    StackState::Walked,
                ),
                Trace::new(vec![cpp_print(), grow()], StackState::Lost),
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
            vec![(0x10, b(8, 0)), (0x20, b(4000, 0)), (0x30, b(100, 1))]
        }

        fn proc_view<'a>(
            blocks: &'a Vec<(u64, Block)>,
            traces: &'a [Trace],
            pid: u32,
            state: &str,
        ) -> ProcView<'a> {
            ProcView {
                id: Identity {
                    pid,
                    ns_pid: None,
                    comm: "rustc".into(),
                },
                parent: None,
                state: state.into(),
                probed: Some(Probed {
                    allocator: "malloc from libc.so.6 (glibc)".into(),
                    libraries: Vec::<ProbedLibrary>::new(),
                }),
                mappings: vec![MapRow {
                    site: grow(),
                    regions: 2,
                    bytes: 1 << 20,
                }],
                heap: Heap {
                    pid,
                    blocks,
                    traces,
                    now_ns: 3_000_000,
                    counters: Counters::default(),
                    sample_bytes: 0,
                    modules: &[],
                    allocated: &[],
                },
            }
        }

        /// Everything the printer writes for `opts`: every view, grouping, a process table,
        /// an ended process, a diff, a leak check and a referrer tree.
        fn everything(opts: &ViewOptions) -> String {
            let (b, t) = (blocks(), traces());
            let long_state = "exec'd /opt/toolchains/llvm-project/build/Release/bin/clang-18-with-a-very-long-name";
            let procs = [
                proc_view(&b, &t, 10, "running"),
                proc_view(&b, &t, 11, long_state),
            ];
            let mut out = Vec::new();
            let views = [
                View::Summary,
                View::Objects,
                View::Tree {
                    addr: None,
                    maxdepth: 8,
                },
            ];
            for view in views {
                for group_by in [GroupBy::Site, GroupBy::Function, GroupBy::Stack] {
                    let opts = ViewOptions {
                        view: view.clone(),
                        group_by,
                        ..opts.clone()
                    };
                    let mut p = printer(opts, &mut out);
                    p.view(&procs[0], &Facts::default()).unwrap();
                    p.processes(&procs, &Facts::default()).unwrap();
                    p.ended(&procs[0]).unwrap();
                }
            }
            let mut p = printer(opts.clone(), &mut out);
            let diff = Diff {
                pid: 10,
                group_by: GroupBy::Stack,
                rows: vec![DiffRow {
                    key: Key::Stack {
                        frames: vec![grow(), rust_fmt()],
                        end: Some(crate::model::LOST_STACK),
                    },
                    objects: 3,
                    bytes: 4096,
                }],
                before: Vec::new(),
                counters: Counters::default(),
                sample_bytes: 0,
            };
            p.diff(&diff, Some(&procs[0].id)).unwrap();
            p.leaks(&leak_report()).unwrap();
            p.referrers(&ref_report()).unwrap();
            drop(p);
            String::from_utf8(out).unwrap()
        }

        fn leak_report() -> LeakReport {
            use crate::analysis::{LeakRow, Step, Total};
            let row = |kind, key, retention| LeakRow {
                kind,
                key,
                objects: 1,
                bytes: 48,
                indirect_bytes: 4800,
                stack: vec![grow()],
                retention,
            };
            LeakReport {
                pid: 10,
                group_by: GroupBy::Site,
                rows: vec![
                    row(LeakKind::DefinitelyLost, Key::Site(grow()), vec![]),
                    row(
                        LeakKind::Reachable,
                        Key::Site(cpp_print()),
                        vec![
                            Step::Block {
                                addr: 0x1000,
                                size: 64,
                                site: rust_fmt(),
                                at: 0x1010,
                            },
                            Step::Root {
                                place: Place::Stack {
                                    tid: 12,
                                    frame: Some(grow()),
                                },
                                at: 0x7ff0,
                            },
                        ],
                    ),
                ],
                totals: [Total::default(); 4],
                unconfirmed: Total::default(),
                facts: CheckFacts::default(),
                counters: Counters::default(),
            }
        }

        fn ref_report() -> RefReport {
            RefReport {
                pid: 10,
                facts: CheckFacts::default(),
                tree: RefTree {
                    addr: 0x2000,
                    size: 100,
                    site: grow(),
                    referrers: vec![
                        Referrer::Block {
                            at: 0x1008,
                            interior: false,
                            tree: RefTree {
                                addr: 0x1000,
                                size: 64,
                                site: cpp_print(),
                                referrers: vec![Referrer::Root {
                                    place: Place::Stack {
                                        tid: 9,
                                        frame: Some(rust_fmt()),
                                    },
                                    at: 0,
                                    interior: true,
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
                    more_roots: 0,
                },
            }
        }

        fn text(width: Option<usize>, full_names: bool) -> ViewOptions {
            ViewOptions {
                top: 15,
                top_procs: 5,
                width,
                full_names,
                ..ViewOptions::default()
            }
        }

        /// The lines of `text` wider than `width`.
        fn too_wide(text: &str, width: usize) -> Vec<&str> {
            text.lines().filter(|l| columns(l) > width).collect()
        }

        /// Issue 16's summary: 80 and 120 columns, the LLVM site shortened, its module and
        /// offset whole; no limit, in full.
        #[test]
        fn summary_fits_the_terminal() {
            let s = Summary::from_figures(
                1,
                GroupBy::Site,
                [
                    (Key::Site(grow()), 500, 27_993),
                    (Key::Site(Frame::from_name("leak (a.c:3)")), 2, 2048),
                ],
                Counters::default(),
            );
            let at80 = summary_table(&s, 15, Some(80));
            let lines: Vec<&str> = at80.lines().collect();
            assert_eq!(
                lines[..4],
                [
                    "                                                 sites | # objects | total size ",
                    "=======================================================|===========|============",
                    " llvm::DenseMapBase<…>::grow(…)+0x69 (libLLVM.so.18.1) |       500 |   27.34 KB ",
                    "                                          leak (a.c:3) |         2 |    2.00 KB ",
                ]
            );
            assert_eq!(too_wide(&at80, 80), Vec::<&str>::new());
            let at120 = summary_table(&s, 15, Some(120));
            assert!(at120.contains(
                " llvm::DenseMapBase<…>::grow(unsigned int)+0x69 (libLLVM.so.18.1) |       500 |"
            ));
            assert_eq!(too_wide(&at120, 120), Vec::<&str>::new());
            let full = summary_table(&s, 15, None);
            assert!(full.contains(&format!(" {}+0x69 (libLLVM.so.18.1) |", LLVM_GROW)));
        }

        /// Grouped by stack, each frame of a cell is fitted on its own line.
        #[test]
        fn stack_cells_fit_frame_by_frame() {
            let key = Key::Stack {
                frames: vec![
                    cpp_print(),
                    grow(),
                    rust_fmt(),
                    Frame::from_name("main (a.c:9)"),
                ],
                end: Some(crate::model::LOST_STACK),
            };
            let s = Summary::from_figures(
                1,
                GroupBy::Stack,
                [(key.clone(), 3, 300)],
                Counters::default(),
            );
            let out = summary_table(&s, 15, Some(80));
            let cell: Vec<&str> = out
                .lines()
                .skip(2)
                .take(5)
                .map(|l| l.split(" | ").next().unwrap().trim())
                .collect();
            assert_eq!(
                cell,
                [
                    "std::basic_ostrea…::operator<< <…>(…) (…/ostream:611)",
                    "llvm::DenseMapBase<…>::grow(…)+0x69 (libLLVM.so.18.1)",
                    "<imp…::ServerConfiguration<…>>::fmt (…/config.rs:123)",
                    "main (a.c:9)",
                    "[stack lost]",
                ]
            );
            assert_eq!(too_wide(&out, 80), Vec::<&str>::new());
            // The structured names are the names tables always showed.
            let names: Vec<String> = key_names(&key).iter().map(Name::full).collect();
            assert_eq!(names, key.names());
        }

        /// The diff, objects, mmap and process tables fit too.
        #[test]
        fn every_table_fits() {
            let d = Diff {
                pid: 1,
                group_by: GroupBy::Site,
                rows: vec![DiffRow {
                    key: Key::Site(rust_fmt()),
                    objects: -3,
                    bytes: -4096,
                }],
                before: Vec::new(),
                counters: Counters::default(),
                sample_bytes: 0,
            };
            let objects = crate::analysis::objects(
                &proc_view(&blocks(), &traces(), 1, "running").heap,
                &crate::model::Filter::default(),
            );
            let maps = [MapRow {
                site: cpp_print(),
                regions: 1,
                bytes: 4096,
            }];
            let rows = [crate::report::ProcRow {
                index: 0,
                pids: "1234".into(),
                comm: "clang".into(),
                state: "exec'd /opt/toolchains/llvm-project/build/Release/bin/clang-18-with-a-very-long-name".into(),
                objects: 1,
                bytes: 8,
            }];
            for w in [80, 120] {
                let tables = [
                    diff_table(&d, 15, Some(w)),
                    objects_table(&objects, &traces(), 15, 0, Some(w)),
                    mappings_table(&maps, 15, Some(w)),
                    processes_table(&rows, 15, 0, Some(w)),
                ];
                for t in tables {
                    // The table's lines; the prose under it is not shortened.
                    let table: Vec<&str> = t.lines().filter(|l| l.contains('|')).collect();
                    assert!(table.len() >= 3, "{t}");
                    assert!(table.iter().all(|l| columns(l) <= w), "{w}:\n{t}");
                }
            }
            let at80 = processes_table(&rows, 15, 0, Some(80));
            assert!(
                at80.contains(" exec'd /opt/toolcha…h-a-very-long-name |"),
                "{at80}"
            );
        }

        /// A leak check at 120 columns: the table, then the retention path, each naming its
        /// block's site and its root's frame.
        #[test]
        fn leaks_fit() {
            let out = leaks_table(&leak_report(), 15, Some(120));
            let want = [
                "            kind |                                                          sites | # objects |              total size ",
                "=================|================================================================|===========|=========================",
                " definitely lost |          llvm::DenseMapBase<…>::grow(…)+0x69 (libLLVM.so.18.1) |         1 | 48 B + 4.69 KB indirect ",
                " still reachable | std::basic_ostream<…>& (an…::operator<< <…>(…) (…/ostream:611) |         1 | 48 B + 4.69 KB indirect ",
            ];
            assert_eq!(out.lines().take(4).collect::<Vec<_>>(), want);
            let why: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("why")).collect();
            assert_eq!(
                why,
                [
                    "why std::basic_ostream<…>& (anonymous namespace)::operator<< <…>(…) (…/include/c++/12/ostream:611) is still reachable:",
                    "  held by 0x1000 <impl core::fmt::Debug for my_c…::ServerConfiguration<…>>::fmt (…/config.rs:123) [64 B] (word at +0x10)",
                    "  held by thread 12 stack in llvm::DenseMapBase<…>::grow(unsigned int)+0x69 (libLLVM.so.18.1)",
                ]
            );
            // Only the totals and the check's figures, which name nothing, run on.
            let wide = too_wide(&out, 120);
            assert!(
                wide.iter()
                    .all(|l| l.starts_with("definitely lost:") || l.starts_with("check ")),
                "{wide:?}"
            );
        }

        /// Trees: each node's name shares what its line leaves with the names drawn after it
        /// on that line, short names whole; never under the floor.
        #[test]
        fn trees_fit_where_they_can() {
            let node = |f: Frame, objects, children| Node {
                name: f.name().to_string(),
                label: Label::Frame(f),
                objects,
                bytes: objects * 8,
                children,
            };
            let leaf = |f| node(f, 1, vec![]);
            let root = node(
                grow(),
                3,
                vec![
                    node(rust_fmt(), 2, vec![leaf(Frame::from_name("main (a.c:9)"))]),
                    leaf(cpp_print()),
                ],
            );
            let roots = [root];
            let at120 = tree_text(&roots, 8, Some(120));
            let want = "\
llvm…::grow(…)+0x69 (libLLVM.so.18.1) [3, 24 B]-+-…iguration<…>>::fmt (…/config.rs:123) [2, 16 B]--main (a.c:9) [1, 8 B]
                                                +-std::basic_ostream<…>& (a…::operator<< <…>(…) (…/ostream:611) [1, 8 B]
";
            assert_eq!(at120, want);
            assert_eq!(too_wide(&at120, 120), Vec::<&str>::new());
            // At 80 the names would get less than the floor: they keep it, and the lines
            // overflow.
            let at80 = tree_text(&roots, 8, Some(80));
            assert!(
                at80.starts_with("…::grow(…)+0x69 (libLLVM…) [3, 24 B]-+-"),
                "{at80}"
            );
            // With one level, the root's name takes what the line leaves.
            let at80 = tree_text(&roots, 0, Some(80));
            assert_eq!(
                at80,
                "llvm::DenseMapBase<…>::grow(unsigned int)+0x69 (libLLVM.so.18.1) [3, 24 B]\n"
            );
            assert_eq!(
                tree_text(&roots, 8, None).lines().next().map(columns),
                Some(
                    columns(LLVM_GROW)
                        + "+0x69 (libLLVM.so.18.1) [3, 24 B]-+-".len()
                        + columns(&rust_fmt().name().to_string())
                        + " [2, 16 B]--main (a.c:9) [1, 8 B]".len()
                )
            );
        }

        /// The referrer tree fits its names the same way; its roots keep their words.
        #[test]
        fn referrers_fit() {
            let out = referrers_text(&ref_report(), Some(200));
            let want = "\
0x2000 llvm::Dens…::grow(…)+0x69 (libLLVM.so.18.1) [100 B]-+-0x1000 std::ba…::operator<< <…>(…) (…/ostream:611) [64 B]--thread 9 stack in …erConfiguration<…>>::fmt (…/config.rs:123) (interior pointer)
                                                           +-thread 9 TLS (interior pointer)
";
            assert_eq!(out, want);
            assert_eq!(too_wide(&out, 200), Vec::<&str>::new());
            let stack = Place::Stack {
                tid: 9,
                frame: Some(rust_fmt()),
            };
            let (before, name) = place_label(&stack);
            assert_eq!(before + &name.full(), stack.describe());
        }

        /// Through the printer: `width` fits every table, tree and line; `full_names` and no
        /// width print names in full; JSON is the same whatever the width.
        #[test]
        fn the_printer_honours_width_and_full_names() {
            let full = everything(&text(None, false));
            assert_eq!(everything(&text(Some(80), true)), full);
            assert!(full.contains(LLVM_GROW));
            let fitted = everything(&text(Some(200), false));
            assert_ne!(fitted, full);
            assert!(!fitted.contains(LLVM_GROW));
            assert_eq!(too_wide(&fitted, 200), Vec::<&str>::new());
            let json = |width| {
                let mut o = text(width, false);
                o.format = Format::Json;
                everything(&o)
            };
            assert_eq!(json(Some(80)), json(None));
            assert!(json(Some(80)).contains(&LLVM_GROW.replace('"', "\\\"")));
        }
    }
}
