//! The HTML report (`--format html`): one self-contained page, with its style and script
//! inline and nothing fetched: per process, the totals and trust counters, what was probed,
//! the summary (sortable by any column), the call tree (nested `<details>`), the flame graph
//! (inferno's SVG, inline) and, where a leak check left verdicts, the leak kinds.
//!
//! Stable hooks for tools and tests: `section.process[data-pid]`, `table.sortable` with
//! `tr.row` rows whose cells carry `data-value`, `details.node`, and `body[data-ready]` set
//! once the script ran (with `data-selfcheck="ok"` when sorting sorted).

use std::{fmt::Write as _, io};

use super::{Facts, Print, ProcView, ReportError, ViewOptions, flame, process_rows};
use crate::{
    analysis::{self, Diff, GroupBy, LeakReport, Node, RefReport},
    model::{CheckFacts, Counters, LeakKind},
};

/// Writes `--format html` reports.
pub struct HtmlPrinter<W> {
    opts: ViewOptions,
    out: W,
}

/// `s` as HTML text or attribute value.
pub(crate) fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "
body{font-family:sans-serif;margin:1em 2em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;background:#eee}
table.sortable th[data-dir=asc]::after{content:' \\25B2'}
table.sortable th[data-dir=desc]::after{content:' \\25BC'}
details.node{margin-left:1.2em}
details.node>summary{cursor:pointer}
.leaf{margin-left:2.4em}
.fig{color:#555}
section.process{border-top:2px solid #888;margin-top:1.5em}
svg{max-width:100%;height:auto}
";

// Sorting: a header click sorts its table's rows by that column's `data-value` (numbers as
// numbers), again to reverse. On load the page checks its own sorting (on copies of its tables,
// by every column both ways) and says so.
const SCRIPT: &str = "
(function(){
function val(td){var v=td.getAttribute('data-value');return td.classList.contains('num')?Number(v):v;}
function sortBy(table,col,dir){
  var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){var x=val(a.cells[col]),y=val(b.cells[col]);var c=x<y?-1:x>y?1:0;return dir==='asc'?c:-c;});
  rows.forEach(function(r){body.appendChild(r);});
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){if(i===col){th.setAttribute('data-dir',dir);}else{th.removeAttribute('data-dir');}});
}
function sorted(table,col,dir){
  var rows=table.tBodies[0].rows;
  for(var i=1;i<rows.length;i++){var x=val(rows[i-1].cells[col]),y=val(rows[i].cells[col]);if(dir==='asc'?x>y:x<y){return false;}}
  return true;
}
var ok=true;
Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(t){
  Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){
    th.addEventListener('click',function(){sortBy(t,i,th.getAttribute('data-dir')==='desc'?'asc':'desc');});
  });
  // The check sorts a copy: the page keeps its tables in the report's order.
  var c=t.cloneNode(true);
  for(var i=0;i<c.tHead.rows[0].cells.length;i++){
    sortBy(c,i,'asc');ok=ok&&sorted(c,i,'asc');
    sortBy(c,i,'desc');ok=ok&&sorted(c,i,'desc');
  }
});
document.body.setAttribute('data-selfcheck',ok?'ok':'failed');
document.body.setAttribute('data-ready','1');
})();
";

/// A sortable table: `head` names the columns (`num` ones hold numbers), each row its cells'
/// (shown, sort value) pairs.
fn table(s: &mut String, id: &str, head: &[(&str, bool)], rows: &[Vec<String>]) {
    let _ = write!(
        s,
        "<table class=\"sortable\" id=\"{}\"><thead><tr>",
        escape(id)
    );
    for (h, num) in head {
        let class = if *num { " class=\"num\"" } else { "" };
        let _ = write!(s, "<th{class}>{}</th>", escape(h));
    }
    s.push_str("</tr></thead><tbody>\n");
    for r in rows {
        s.push_str("<tr class=\"row\">");
        for (cell, (_, num)) in r.iter().zip(head) {
            let class = if *num { " class=\"num\"" } else { "" };
            let e = escape(cell);
            let _ = write!(s, "<td{class} data-value=\"{e}\">{e}</td>");
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
}

fn counters(s: &mut String, c: &Counters, sample_bytes: u64) {
    s.push_str("<table class=\"counters\"><tbody>");
    for (name, v) in [
        ("lost_events", c.lost_events),
        ("unknown_frees", c.unknown_frees),
        ("libc_unknown_frees", c.libc_unknown_frees),
        ("lost_stacks", c.lost_stacks),
        ("events", c.events),
    ] {
        let _ = write!(
            s,
            "<tr><th>{name}</th><td class=\"num\" id=\"{name}\">{v}</td></tr>"
        );
    }
    if sample_bytes > 0 {
        let _ = write!(
            s,
            "<tr><th>sampled</th><td>every {sample_bytes} bytes on average: figures are estimates</td></tr>"
        );
    }
    s.push_str("</tbody></table>\n");
}

fn tree(s: &mut String, n: &Node, depth: usize, maxdepth: usize) {
    let label = format!(
        "{} <span class=\"fig\">{} objects, {} bytes</span>",
        escape(&n.name),
        n.objects,
        n.bytes
    );
    if n.children.is_empty() || depth >= maxdepth {
        let _ = writeln!(s, "<div class=\"leaf node\">{label}</div>");
        return;
    }
    let _ = writeln!(s, "<details class=\"node\"><summary>{label}</summary>");
    for c in &n.children {
        tree(s, c, depth + 1, maxdepth);
    }
    s.push_str("</details>\n");
}

/// The leak kinds' totals, and the loss records, of a report.
fn leak_tables(s: &mut String, r: &LeakReport, id: &str) {
    let totals: Vec<Vec<String>> = LeakKind::ALL
        .iter()
        .map(|k| {
            let t = r.total(*k);
            vec![
                k.words().to_string(),
                t.objects.to_string(),
                t.bytes.to_string(),
            ]
        })
        .collect();
    s.push_str("<h3>Leak kinds</h3>\n");
    table(
        s,
        &format!("leak-kinds-{id}"),
        &[("kind", false), ("objects", true), ("bytes", true)],
        &totals,
    );
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            vec![
                row.kind.words().to_string(),
                row.key.text(),
                row.objects.to_string(),
                row.bytes.to_string(),
            ]
        })
        .collect();
    s.push_str("<h3>Loss records</h3>\n");
    table(
        s,
        &format!("leaks-{id}"),
        &[
            ("kind", false),
            (r.group_by.name(), false),
            ("objects", true),
            ("bytes", true),
        ],
        &rows,
    );
}

impl<W: io::Write> HtmlPrinter<W> {
    /// A printer writing into `out`.
    pub fn new(opts: ViewOptions, out: W) -> Self {
        HtmlPrinter { opts, out }
    }

    fn page(&mut self, title: &str, body: &str) -> Result<(), ReportError> {
        write!(
            self.out,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>{}</title><style>{STYLE}</style></head>\n<body>\n<h1>{}</h1>\n{body}\
             <script>{SCRIPT}</script>\n</body></html>\n",
            escape(title),
            escape(title)
        )?;
        self.out.flush()?;
        Ok(())
    }

    /// One process's section.
    fn section(&self, s: &mut String, p: &ProcView) -> Result<(), ReportError> {
        let o = &self.opts;
        let name = flame::process_name(&p.id);
        let summary = analysis::summarize(&p.heap, &o.filter, o.group_by);
        let (objects, bytes) = summary.total();
        let pid = p.id.pid;
        let _ = write!(
            s,
            "<section class=\"process\" id=\"process-{pid}\" data-pid=\"{pid}\">\n<h2>{}</h2>\n\
             <p class=\"totals\">total: <span id=\"objects-{pid}\">{objects}</span> objects, \
             <span id=\"bytes-{pid}\">{bytes}</span> bytes live{}</p>\n",
            escape(&name),
            if p.state.is_empty() {
                String::new()
            } else {
                format!("; {}", escape(&p.state))
            }
        );
        counters(s, &p.heap.counters, p.heap.sample_bytes);
        if let Some(pr) = &p.probed {
            let _ = write!(
                s,
                "<h3>Probed</h3>\n<p class=\"probed\">{}</p>\n<ul>",
                escape(&pr.allocator)
            );
            for l in &pr.libraries {
                let _ = write!(
                    s,
                    "<li>{} ({}): {}{}</li>",
                    escape(&l.library),
                    escape(&l.what),
                    escape(&l.functions.join(", ")),
                    if l.missing.is_empty() {
                        String::new()
                    } else {
                        format!("; lacks {}", escape(&l.missing.join(", ")))
                    }
                );
            }
            s.push_str("</ul>\n");
        }
        let _ = writeln!(s, "<h3>Live {}</h3>", summary.group_by.noun());
        let rows: Vec<Vec<String>> = summary
            .rows
            .iter()
            .map(|r| vec![r.key.text(), r.objects.to_string(), r.bytes.to_string()])
            .collect();
        table(
            s,
            &format!("summary-{pid}"),
            &[
                (summary.group_by.name(), false),
                ("objects", true),
                ("bytes", true),
            ],
            &rows,
        );
        let (addr, maxdepth) = match &o.view {
            super::View::Tree { addr, maxdepth } => (*addr, *maxdepth),
            _ => (None, usize::MAX),
        };
        s.push_str("<h3>Call tree</h3>\n<div class=\"tree\">\n");
        for root in super::tree_roots(&p.heap, &o.filter, addr)? {
            tree(s, &root, 0, maxdepth);
        }
        s.push_str("</div>\n<h3>Flame graph</h3>\n<div class=\"flame\">\n");
        let lines = flame::folded(&p.heap, &o.filter, None);
        s.push_str(&inline_svg(&lines, &format!("Live bytes of {name}"))?);
        s.push_str("</div>\n");
        let mut verdicts = false;
        p.heap
            .select(&o.filter, &mut |_, b, _| verdicts |= b.leak.is_some());
        if verdicts {
            let by = if o.group_by == GroupBy::Size {
                GroupBy::Site
            } else {
                o.group_by
            };
            let r = analysis::leak_report(&p.heap, &o.filter, by, CheckFacts::default(), None);
            leak_tables(s, &r, &pid.to_string());
        }
        s.push_str("</section>\n");
        Ok(())
    }
}

/// A flame graph as a page holds it: the `<svg>` element alone, without its comments, its
/// `onload` (its script is left out) and its namespace addresses: HTML needs none of them, and
/// the page names no other place.
fn inline_svg(lines: &[String], title: &str) -> Result<String, ReportError> {
    let mut buf = Vec::new();
    flame::svg(lines, title, true, &mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut rest = &text[text.find("<svg").unwrap_or(0)..];
    let mut svg = String::with_capacity(rest.len());
    while let Some(i) = rest.find("<!--") {
        svg.push_str(&rest[..i]);
        rest = rest[i..].find("-->").map_or("", |j| &rest[i + j + 3..]);
    }
    svg.push_str(rest);
    for attr in [
        " onload=\"init(evt)\"",
        " xmlns=\"http://www.w3.org/2000/svg\"",
        " xmlns:xlink=\"http://www.w3.org/1999/xlink\"",
        " xmlns:fg=\"http://github.com/jonhoo/inferno\"",
    ] {
        svg = svg.replace(attr, "");
    }
    Ok(svg)
}

impl<W: io::Write> Print for HtmlPrinter<W> {
    fn view(&mut self, p: &ProcView, _facts: &Facts) -> Result<(), ReportError> {
        let mut s = String::new();
        self.section(&mut s, p)?;
        self.page(
            &format!("muppy: live heap of {}", flame::process_name(&p.id)),
            &s,
        )
    }

    fn processes(&mut self, procs: &[ProcView], _facts: &Facts) -> Result<(), ReportError> {
        let table_rows = process_rows(procs, &self.opts);
        let rows: Vec<Vec<String>> = table_rows
            .iter()
            .map(|r| {
                vec![
                    r.pids.clone(),
                    r.comm.clone(),
                    r.state.clone(),
                    r.objects.to_string(),
                    r.bytes.to_string(),
                ]
            })
            .collect();
        let (objects, bytes) = table_rows
            .iter()
            .fold((0, 0), |a, r| (a.0 + r.objects, a.1 + r.bytes));
        let mut s = format!(
            "<p class=\"totals\">total: <span id=\"objects-all\">{objects}</span> objects, \
             <span id=\"bytes-all\">{bytes}</span> bytes live in {} processes</p>\n",
            procs.len()
        );
        table(
            &mut s,
            "processes",
            &[
                ("pid", false),
                ("comm", false),
                ("state", false),
                ("objects", true),
                ("bytes", true),
            ],
            &rows,
        );
        for r in &table_rows {
            self.section(&mut s, &procs[r.index])?;
        }
        self.page(
            &format!("muppy: live heaps of {} processes", procs.len()),
            &s,
        )
    }

    fn ended(&mut self, _p: &ProcView) -> Result<(), ReportError> {
        // One page at the end: an ended process is in the final report's.
        Ok(())
    }

    fn diff(&mut self, d: &Diff, who: Option<&crate::model::Identity>) -> Result<(), ReportError> {
        let name = who.map_or_else(|| format!("pid {}", d.pid), flame::process_name);
        let mut s = String::new();
        counters(&mut s, &d.counters, d.sample_bytes);
        let rows: Vec<Vec<String>> = d
            .rows
            .iter()
            .map(|r| vec![r.key.text(), r.objects.to_string(), r.bytes.to_string()])
            .collect();
        let _ = writeln!(s, "<h3>Changed {}</h3>", d.group_by.noun());
        table(
            &mut s,
            "diff",
            &[
                (d.group_by.name(), false),
                ("objects", true),
                ("bytes", true),
            ],
            &rows,
        );
        s.push_str("<h3>Flame graph</h3>\n<div class=\"flame\">\n");
        s.push_str(&inline_svg(
            &flame::diff_lines(d),
            &format!("Change in live bytes of {name}"),
        )?);
        s.push_str("</div>\n");
        self.page(&format!("muppy: change in live heap of {name}"), &s)
    }

    fn leaks(&mut self, r: &LeakReport) -> Result<(), ReportError> {
        let mut s = String::new();
        counters(&mut s, &r.counters, 0);
        leak_tables(&mut s, r, &r.pid.to_string());
        self.page(&format!("muppy: leak check of pid {}", r.pid), &s)
    }

    fn referrers(&mut self, _r: &RefReport) -> Result<(), ReportError> {
        Err(ReportError::Unsupported {
            format: self.opts.format.name(),
            what: "referrers",
            hint: "use --format table or json for who points at a block",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{Block, Frame, Heap, StackState, Trace, Verdict},
        report::{Format, printer},
    };

    const TEMPLATE: &str = "std::vector<int, A<\"q\">>::push_back(int const&) (v.h:7)";

    fn traces() -> Vec<Trace> {
        vec![
            Trace::new(
                vec![
                    Frame::from_name(TEMPLATE),
                    Frame::from_name("main (m.cc:3)"),
                ],
                StackState::Walked,
            ),
            Trace::new(vec![Frame::from_name("leaf (m.cc:9)")], StackState::Lost),
        ]
    }

    fn block(size: u64, trace: u32, leak: Option<LeakKind>) -> Block {
        Block {
            size,
            ts_ns: 0,
            trace,
            tid: 1,
            leak: leak.map(|kind| Verdict {
                kind,
                indirect_bytes: 0,
                confirmed: true,
            }),
        }
    }

    fn page(blocks: &Vec<(u64, Block)>, several: bool) -> String {
        let t = traces();
        let heap = |pid| Heap {
            pid,
            blocks,
            traces: &t,
            now_ns: 0,
            counters: Counters {
                lost_events: 2,
                unknown_frees: 3,
                ..Counters::default()
            },
            sample_bytes: 0,
            modules: &[],
            allocated: &[],
        };
        let opts = ViewOptions {
            format: Format::Html,
            ..ViewOptions::default()
        };
        let mut out = Vec::new();
        let mut p = ProcView::of_heap(heap(5));
        p.id.comm = "a<b>".into();
        if several {
            printer(opts, &mut out)
                .processes(&[p, ProcView::of_heap(heap(6))], &Facts::default())
                .unwrap();
        } else {
            printer(opts, &mut out).view(&p, &Facts::default()).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn names_are_escaped_everywhere() {
        let b = vec![(0x10, block(40, 0, None)), (0x20, block(2, 1, None))];
        let html = page(&b, false);
        let escaped =
            "std::vector&lt;int, A&lt;&quot;q&quot;&gt;&gt;::push_back(int const&amp;) (v.h:7)";
        // The summary row, its cells' sort values, the tree and the flame graph's tooltips.
        assert!(html.contains(&format!(
            "<td data-value=\"{escaped}\">{escaped}</td><td class=\"num\" data-value=\"1\">1</td>\
             <td class=\"num\" data-value=\"40\">40</td>"
        )));
        assert!(html.contains(&format!(
            "<summary>{escaped} <span class=\"fig\">1 objects, 40 bytes</span></summary>"
        )));
        assert!(html.contains("<h2>a&lt;b&gt; (5)</h2>"));
        assert!(!html.contains("A<\"q\">") && !html.contains("a<b>"));
        // A lost stack's marker shows, at the root side of the flame graph too.
        assert!(html.contains("[stack lost]"));
        assert!(html.contains("<td class=\"num\" id=\"lost_events\">2</td>"));
        assert!(html.contains("<td class=\"num\" id=\"unknown_frees\">3</td>"));
        assert!(!html.contains("http"));
        assert!(!html.contains("Leak kinds"), "no verdicts, no leak table");
    }

    #[test]
    fn verdicts_show_leak_kinds_and_several_processes_a_section_each() {
        let b = vec![
            (0x10, block(40, 0, Some(LeakKind::DefinitelyLost))),
            (0x20, block(2, 1, Some(LeakKind::Reachable))),
            (0x30, block(8, 1, Some(LeakKind::Reachable))),
        ];
        let html = page(&b, false);
        assert!(html.contains(
            "<table class=\"sortable\" id=\"leak-kinds-5\"><thead><tr><th>kind</th>\
             <th class=\"num\">objects</th><th class=\"num\">bytes</th></tr></thead><tbody>\n\
             <tr class=\"row\"><td data-value=\"definitely lost\">definitely lost</td>\
             <td class=\"num\" data-value=\"1\">1</td><td class=\"num\" data-value=\"40\">40</td></tr>"
        ), "{html}");
        assert!(
            html.contains(
                "<td data-value=\"still reachable\">still reachable</td>\
             <td class=\"num\" data-value=\"2\">2</td><td class=\"num\" data-value=\"10\">10</td>"
            ),
            "{html}"
        );
        let html = page(&b, true);
        assert!(html.contains("id=\"process-5\" data-pid=\"5\""));
        assert!(html.contains("id=\"process-6\" data-pid=\"6\""));
        assert!(html.contains("<span id=\"bytes-all\">100</span>"), "{html}");
        assert!(html.contains("<td data-value=\"a&lt;b&gt;\">a&lt;b&gt;</td>"));
    }
}
