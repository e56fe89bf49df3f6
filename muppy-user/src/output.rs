//! How muppy prints: sizes the way Pympler prints them, summary and diff tables in Pympler's
//! three-column form, and JSON Lines for machines. The one place that decides how a figure looks.

use prettytable::{
    Cell, Row as TRow, Table,
    format::{FormatBuilder, LinePosition, LineSeparator},
};
use serde_json::json;

use crate::summary::{Diff, Summary};

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

fn table(first_column: &str) -> Table {
    let mut t = Table::new();
    t.set_format(
        FormatBuilder::new()
            .column_separator('|')
            .padding(1, 1)
            .separator(LinePosition::Title, LineSeparator::new('=', '|', ' ', ' '))
            .build(),
    );
    t.set_titles(TRow::new(vec![
        Cell::new(first_column).style_spec("r"),
        Cell::new("# objects").style_spec("r"),
        Cell::new("total size").style_spec("r"),
    ]));
    t
}

fn cut_note(shown: usize, all: usize) -> String {
    if shown < all {
        format!(" (top {shown} of {all} sites shown)")
    } else {
        String::new()
    }
}

/// The summary as Pympler prints one: `sites | # objects | total size`, the `top` largest
/// rows, then a line with the totals and how far the figures can be trusted.
pub fn summary_table(s: &Summary, top: usize) -> String {
    let mut t = table("sites");
    for r in s.rows.iter().take(top) {
        t.add_row(TRow::new(vec![
            Cell::new(&r.site).style_spec("r"),
            Cell::new(&r.objects.to_string()).style_spec("r"),
            Cell::new(&format_size(r.bytes)).style_spec("r"),
        ]));
    }
    let (objects, bytes) = s.total();
    format!(
        "{t}total: {objects} objects, {} live in {} sites{}; lost_events: {}; unknown_frees: {}\n",
        format_size_compact(bytes),
        s.rows.len(),
        cut_note(s.rows.len().min(top), s.rows.len()),
        s.lost_events,
        s.unknown_frees,
    )
}

/// A diff as `SummaryTracker.print_diff()` prints one, with signed figures.
pub fn diff_table(d: &Diff, top: usize) -> String {
    let mut t = table("sites");
    for r in d.rows.iter().take(top) {
        let objects = if r.objects > 0 {
            format!("+{}", r.objects)
        } else {
            r.objects.to_string()
        };
        t.add_row(TRow::new(vec![
            Cell::new(&r.site).style_spec("r"),
            Cell::new(&objects).style_spec("r"),
            Cell::new(&format_size_change(r.bytes)).style_spec("r"),
        ]));
    }
    let note = cut_note(d.rows.len().min(top), d.rows.len());
    let mut out = t.to_string();
    if !note.is_empty() {
        out.push_str(note.trim_start());
        out.push('\n');
    }
    out
}

/// Extra facts for the final JSON summary line.
#[derive(Clone, Debug, Default)]
pub struct SummaryExtras {
    /// How the target ended, when it did: `{"exit_code":N}` or `{"signal":N}`.
    pub exit: Option<serde_json::Value>,
    /// Events the tracer applied.
    pub events: u64,
    /// The tracer's peak resident memory, in KiB.
    pub tracer_peak_rss_kb: Option<u64>,
    /// What was probed, for the reader: library path and functions.
    pub probed: Option<serde_json::Value>,
}

/// The final summary as one JSON line, with every row.
pub fn summary_json(s: &Summary, extras: &SummaryExtras) -> String {
    let (objects, bytes) = s.total();
    let mut v = json!({
        "type": "summary",
        "pid": s.pid,
        "rows": s.rows,
        "total": {"objects": objects, "bytes": bytes},
        "lost_events": s.lost_events,
        "unknown_frees": s.unknown_frees,
        "libc_unknown_frees": s.libc_unknown_frees,
        "refrees": s.refrees,
        "events": extras.events,
    });
    if let Some(exit) = &extras.exit {
        v["exit"] = exit.clone();
    }
    if let Some(rss) = extras.tracer_peak_rss_kb {
        v["tracer_peak_rss_kb"] = rss.into();
    }
    if let Some(p) = &extras.probed {
        v["probed"] = p.clone();
    }
    v.to_string()
}

/// A diff as one JSON line, with every changed row.
pub fn diff_json(d: &Diff) -> String {
    json!({"type": "diff", "pid": d.pid, "rows": d.rows, "lost_events": d.lost_events}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{DiffRow, Summary};

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

    #[test]
    fn summary_table_has_pympler_columns_and_trust_line() {
        let s = Summary::from_sites(
            1,
            vec![
                ("leak (a.c:3)".to_string(), 2, 2048),
                ("x".to_string(), 1, 8),
            ],
            0,
            3,
        );
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

    #[test]
    fn json_lines_carry_all_rows() {
        let s = Summary::from_sites(9, vec![("a".to_string(), 2, 20)], 1, 0);
        let v: serde_json::Value =
            serde_json::from_str(&summary_json(&s, &SummaryExtras::default())).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["pid"], 9);
        assert_eq!(v["rows"][0]["site"], "a");
        assert_eq!(v["total"]["bytes"], 20);
        assert_eq!(v["lost_events"], 1);
        let d = Diff {
            pid: 9,
            rows: vec![DiffRow {
                site: "a".into(),
                objects: -1,
                bytes: -10,
            }],
            lost_events: 0,
        };
        let v: serde_json::Value = serde_json::from_str(&diff_json(&d)).unwrap();
        assert_eq!(v["rows"][0]["objects"], -1);
    }
}
