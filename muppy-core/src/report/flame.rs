//! Folded stacks and flame graphs (`--format folded`, `--format flamegraph`).
//!
//! Folded lines are root first, `a;b;c bytes`, one line per call path as the stack summary
//! groups them (so sampled heaps carry the same estimates as every other view); a path that is
//! not whole starts with its marker (`[stack lost]`, `[frame limit reached]`), so it never
//! passes for a short one. A flame graph is those lines drawn by inferno. A diff's lines carry
//! both sides, `path before after`, which inferno draws as a differential flame graph.

use std::{collections::BTreeMap, io};

use inferno::flamegraph::{self, color};

use super::{Facts, Format, Print, ProcView, ReportError, ViewOptions};
use crate::{
    analysis::{self, Diff, GroupBy, Key, LeakReport, RefReport},
    model::{Filter, Heap, Identity},
};

/// Writes `--format folded` and `--format flamegraph` reports.
pub struct FlamePrinter<W> {
    opts: ViewOptions,
    out: W,
}

/// A frame's name as a folded line can carry it: `;` separates frames.
fn frame(name: &str) -> String {
    name.replace(';', ":")
}

/// A key's path, root first.
fn path(key: &Key) -> Vec<String> {
    key.names().iter().rev().map(|n| frame(n)).collect()
}

/// How a process heads its paths when a report covers several: `comm (pid)`.
pub(crate) fn process_name(id: &Identity) -> String {
    if id.comm.is_empty() {
        format!("pid {}", id.pid)
    } else {
        format!("{} ({})", id.comm, id.pid)
    }
}

/// The folded lines of the blocks `filter` selects, root first, under `root` when given: one
/// per call path, largest first, with its live bytes.
pub(crate) fn folded(heap: &Heap, filter: &Filter, root: Option<&str>) -> Vec<String> {
    let summary = analysis::summarize(heap, filter, GroupBy::Stack);
    summary
        .rows
        .iter()
        .map(|r| {
            let mut p = path(&r.key);
            if let Some(root) = root {
                p.insert(0, frame(root));
            }
            format!("{} {}", p.join(";"), r.bytes)
        })
        .collect()
}

/// A diff's lines, `path before after` in bytes, for every path live on either side, in
/// path order (inferno's differential input).
pub(crate) fn diff_lines(d: &Diff) -> Vec<String> {
    let mut acc: BTreeMap<Vec<String>, (u64, i64)> = BTreeMap::new();
    for r in &d.before {
        acc.entry(path(&r.key)).or_default().0 += r.bytes;
    }
    for r in &d.rows {
        acc.entry(path(&r.key)).or_default().1 += r.bytes;
    }
    acc.into_iter()
        .map(|(p, (before, change))| {
            let after = before.saturating_add_signed(change);
            format!("{} {before} {after}", p.join(";"))
        })
        .collect()
}

/// A leak check's loss records as folded lines: the kind (`definitely lost`) at the root,
/// then the group's path (a whole stack when grouped by stack), with the records' bytes.
pub(crate) fn leak_lines(r: &LeakReport) -> Vec<String> {
    r.rows
        .iter()
        .map(|row| {
            let mut p = path(&row.key);
            p.insert(0, row.kind.words().to_string());
            format!("{} {}", p.join(";"), row.bytes)
        })
        .collect()
}

/// Draws folded `lines` as a flame graph titled `title`. `embedded`: without its script (a
/// page that holds it shows the names as tooltips).
pub(crate) fn svg(
    lines: &[String],
    title: &str,
    embedded: bool,
    mut out: impl io::Write,
) -> Result<(), ReportError> {
    let mut opts = flamegraph::Options::default();
    opts.colors = color::Palette::Basic(color::BasicPalette::Mem);
    opts.count_name = "bytes".into();
    opts.title = title.into();
    opts.deterministic = true;
    opts.no_javascript = embedded;
    let drawn: Vec<&str> = lines.iter().map(String::as_str).collect();
    if total(lines) == 0 {
        // inferno draws nothing of no counts; say so in a picture of its own.
        write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"60\">\
             <text x=\"10\" y=\"30\">{}: nothing live</text></svg>",
            super::html::escape(title)
        )?;
        return Ok(());
    }
    flamegraph::from_lines(&mut opts, drawn, &mut out)?;
    Ok(())
}

/// The counts of folded lines added up (the last count of each: a diff's newer side).
fn total(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

impl<W: io::Write> FlamePrinter<W> {
    /// A printer writing into `out`.
    pub fn new(opts: ViewOptions, out: W) -> Self {
        FlamePrinter { opts, out }
    }

    fn unsupported(&self, what: &'static str) -> ReportError {
        ReportError::Unsupported {
            format: self.opts.format.name(),
            what,
            hint: "use --format table or json for this report",
        }
    }

    fn write(&mut self, lines: &[String], title: &str) -> Result<(), ReportError> {
        if self.opts.format == Format::Flamegraph {
            svg(lines, title, false, &mut self.out)?;
        } else {
            for l in lines {
                writeln!(self.out, "{l}")?;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

impl<W: io::Write> Print for FlamePrinter<W> {
    fn view(&mut self, p: &ProcView, _facts: &Facts) -> Result<(), ReportError> {
        let lines = folded(&p.heap, &self.opts.filter, None);
        self.write(&lines, &format!("Live bytes of {}", process_name(&p.id)))
    }

    fn processes(&mut self, procs: &[ProcView], _facts: &Facts) -> Result<(), ReportError> {
        let mut lines = Vec::new();
        for p in procs {
            lines.extend(folded(
                &p.heap,
                &self.opts.filter,
                Some(&process_name(&p.id)),
            ));
        }
        self.write(&lines, &format!("Live bytes of {} processes", procs.len()))
    }

    fn ended(&mut self, _p: &ProcView) -> Result<(), ReportError> {
        // One picture at the end: an ended process is in the final report's.
        Ok(())
    }

    fn diff(&mut self, d: &Diff, who: Option<&Identity>) -> Result<(), ReportError> {
        let name = who.map_or_else(|| format!("pid {}", d.pid), process_name);
        self.write(
            &diff_lines(d),
            &format!("Change in live bytes of {name} (width: after; red: grew, blue: shrank)"),
        )
    }

    fn leaks(&mut self, r: &LeakReport) -> Result<(), ReportError> {
        self.write(
            &leak_lines(r),
            &format!("Leaked bytes of pid {} by kind", r.pid),
        )
    }

    fn referrers(&mut self, _r: &RefReport) -> Result<(), ReportError> {
        Err(self.unsupported("referrers"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::{DiffRow, Row},
        model::{Block, Counters, Frame, StackState, Trace},
        report::{View, printer},
    };

    fn frame_at(function: &str, line: u32) -> Frame {
        Frame {
            function: Some(function.into()),
            file: Some("a.cc".into()),
            line: Some(line),
            ..Frame::default()
        }
    }

    fn traces() -> Vec<Trace> {
        vec![
            Trace::new(
                vec![frame_at("leaf", 3), frame_at("mid", 7), frame_at("main", 9)],
                StackState::Walked,
            ),
            Trace::new(
                vec![frame_at("leaf", 3), frame_at("main", 10)],
                StackState::Walked,
            ),
            Trace::new(vec![frame_at("f<a;b>", 1)], StackState::Lost),
        ]
    }

    fn block(size: u64, trace: u32) -> Block {
        Block {
            size,
            ts_ns: 0,
            trace,
            tid: 1,
            leak: None,
        }
    }

    fn blocks() -> Vec<(u64, Block)> {
        vec![
            (0x10, block(100, 0)),
            (0x20, block(28, 0)),
            (0x30, block(7, 1)),
            (0x40, block(5, 2)),
        ]
    }

    fn heap<'a>(pid: u32, b: &'a Vec<(u64, Block)>, t: &'a [Trace], sample_bytes: u64) -> Heap<'a> {
        Heap {
            pid,
            blocks: b,
            traces: t,
            now_ns: 0,
            counters: Counters::default(),
            sample_bytes,
            modules: &[],
            allocated: &[],
        }
    }

    fn opts(format: Format) -> ViewOptions {
        ViewOptions {
            view: View::Summary,
            format,
            ..ViewOptions::default()
        }
    }

    #[test]
    fn folded_lines_are_root_first_with_bytes_per_path() {
        let (b, t) = (blocks(), traces());
        let heap = heap(7, &b, &t, 0);
        let mut out = Vec::new();
        printer(opts(Format::Folded), &mut out)
            .view(&ProcView::of_heap(heap), &Facts::default())
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "main (a.cc:9);mid (a.cc:7);leaf (a.cc:3) 128\n\
             main (a.cc:10);leaf (a.cc:3) 7\n\
             [stack lost];f<a:b> (a.cc:1) 5\n"
        );
    }

    #[test]
    fn sampled_heaps_fold_the_summarys_estimates() {
        let (b, t) = (blocks(), traces());
        let heap = heap(7, &b, &t, 64);
        let lines = folded(&heap, &Filter::default(), None);
        let s = analysis::summarize(&heap, &Filter::default(), GroupBy::Stack);
        let want: Vec<u64> = s.rows.iter().map(|r| r.bytes).collect();
        let got: Vec<u64> = lines
            .iter()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(got, want);
        // Scaled up: 7 bytes sampled at a 64-byte mean gap stand for 7 / (1 - e^(-7/64)) = 67.56.
        assert_eq!(got[1], 68);
    }

    #[test]
    fn several_processes_head_their_paths() {
        let (b, t) = (blocks(), traces());
        let mut a = ProcView::of_heap(heap(1, &b, &t, 0));
        a.id.comm = "sh".into();
        let b2 = ProcView::of_heap(heap(2, &b, &t, 0));
        let mut out = Vec::new();
        printer(opts(Format::Folded), &mut out)
            .processes(&[a, b2], &Facts::default())
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[0],
            "sh (1);main (a.cc:9);mid (a.cc:7);leaf (a.cc:3) 128"
        );
        assert_eq!(lines[5], "pid 2;[stack lost];f<a:b> (a.cc:1) 5");
    }

    #[test]
    fn diff_lines_carry_both_sides() {
        let stack = |names: &[&str]| Key::Stack {
            frames: names.iter().map(|n| Frame::from_name(n)).collect(),
            end: None,
        };
        let d = Diff {
            pid: 3,
            group_by: GroupBy::Stack,
            rows: vec![
                DiffRow {
                    key: stack(&["a", "main"]),
                    objects: 1,
                    bytes: 50,
                },
                DiffRow {
                    key: stack(&["b", "main"]),
                    objects: -1,
                    bytes: -10,
                },
                DiffRow {
                    key: stack(&["c", "main"]),
                    objects: 2,
                    bytes: 8,
                },
            ],
            before: vec![
                Row {
                    key: stack(&["a", "main"]),
                    objects: 1,
                    bytes: 20,
                },
                Row {
                    key: stack(&["b", "main"]),
                    objects: 1,
                    bytes: 10,
                },
                Row {
                    key: stack(&["d", "main"]),
                    objects: 1,
                    bytes: 4,
                },
            ],
            counters: Counters::default(),
            sample_bytes: 0,
        };
        assert_eq!(
            diff_lines(&d),
            vec!["main;a 20 70", "main;b 10 0", "main;c 0 8", "main;d 4 4"]
        );
        let mut out = Vec::new();
        printer(opts(Format::Flamegraph), &mut out)
            .diff(&d, None)
            .unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
        // The grown path is drawn red, with its change in its tooltip.
        assert!(
            svg.contains("main;a") || svg.contains(">a (70 bytes"),
            "{svg}"
        );
    }

    #[test]
    fn flame_graphs_name_the_frames_escaped() {
        let (b, t) = (blocks(), traces());
        let heap = heap(7, &b, &t, 0);
        let mut out = Vec::new();
        printer(opts(Format::Flamegraph), &mut out)
            .view(&ProcView::of_heap(heap), &Facts::default())
            .unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.contains("Live bytes of pid 7"), "{svg}");
        assert!(svg.contains("f&lt;a:b&gt; (a.cc:1)"), "{svg}");
        assert!(svg.contains("140 bytes"), "{svg}");
    }

    #[test]
    fn leak_reports_are_drawn_by_kind() {
        let (t, mut b) = (traces(), blocks());
        let lost = |kind| {
            Some(crate::model::Verdict {
                kind,
                indirect_bytes: 0,
                confirmed: true,
            })
        };
        b[0].1.leak = lost(crate::model::LeakKind::DefinitelyLost);
        b[1].1.leak = lost(crate::model::LeakKind::Reachable);
        b[2].1.leak = lost(crate::model::LeakKind::Reachable);
        b[3].1.leak = lost(crate::model::LeakKind::Reachable);
        let heap = heap(7, &b, &t, 0);
        let r = analysis::leak_report(
            &heap,
            &Filter::default(),
            GroupBy::Stack,
            crate::model::CheckFacts::default(),
            None,
        );
        let mut lines = leak_lines(&r);
        lines.sort();
        assert_eq!(
            lines,
            vec![
                "definitely lost;main (a.cc:9);mid (a.cc:7);leaf (a.cc:3) 100",
                "still reachable;[stack lost];f<a:b> (a.cc:1) 5",
                "still reachable;main (a.cc:10);leaf (a.cc:3) 7",
                "still reachable;main (a.cc:9);mid (a.cc:7);leaf (a.cc:3) 28",
            ]
        );
    }
}
