//! One frame of the browser: title, tabs, the view's rows, a line of live bytes over time,
//! the status line and the keys. Laid out to fit an 80x24 terminal.

use muppy_core::report::fit::fit_function;
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Paragraph, Sparkline},
};

use crate::app::{App, Column, Item, View};

/// The keys, as the help lines show them.
pub const HELP: [&str; 2] = [
    "q quit  1-7/Tab views  Up/Down/j/k move  Enter/Right open  Left close",
    "s sort  g group  m mark  / regex  Esc clear  live: c leak check  r referrers",
];

/// Draws `app` into the frame.
pub fn draw(app: &App, f: &mut Frame) {
    let [title, tabs, header, body, graph, status, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Length(2),
    ])
    .areas(f.area());
    let strong = Style::default().add_modifier(Modifier::BOLD);
    f.render_widget(Paragraph::new(app.title()).style(strong), title);
    let mut spans = Vec::new();
    for (i, v) in View::ALL.iter().enumerate() {
        let text = format!("{} {} ", i + 1, v.title());
        spans.push(if *v == app.view() {
            Span::styled(
                format!("[{}]", text.trim_end()),
                Style::default().add_modifier(Modifier::REVERSED),
            )
        } else {
            Span::raw(format!(" {text}"))
        });
    }
    f.render_widget(Paragraph::new(Line::from(spans)), tabs);
    let width = usize::from(header.width);
    let columns = app.columns();
    let names: Vec<String> = columns.iter().map(|c| c.header.clone()).collect();
    f.render_widget(
        Paragraph::new(format!(
            "  {}",
            row_text(columns, &names, None, width.saturating_sub(2))
        ))
        .style(strong),
        header,
    );
    let rows = usize::from(body.height);
    let sel = app.selected();
    let first = sel.saturating_sub(rows.saturating_sub(1));
    let lines: Vec<Line> = app
        .items()
        .iter()
        .enumerate()
        .skip(first)
        .take(rows)
        .map(|(i, item)| {
            let text = item_text(columns, item, width);
            if i == sel {
                Line::styled(
                    format!("> {text}"),
                    Style::default().add_modifier(Modifier::REVERSED),
                )
            } else {
                Line::raw(format!("  {text}"))
            }
        })
        .collect();
    f.render_widget(Paragraph::new(lines), body);
    draw_history(app, f, graph);
    f.render_widget(Paragraph::new(app.status()), status);
    f.render_widget(Paragraph::new(HELP.join("\n")), help);
}

fn draw_history(app: &App, f: &mut Frame, area: Rect) {
    let [label, line] =
        Layout::horizontal([Constraint::Length(12), Constraint::Min(1)]).areas(area);
    let h = app.history();
    let peak = h.iter().copied().max().unwrap_or(0);
    let text = format!(
        "live bytes\n{:>10}",
        muppy_core::report::text::format_size_compact(peak)
    );
    f.render_widget(Paragraph::new(text), label);
    // The newest points that fit, oldest on the left.
    let keep = usize::from(line.width);
    let shown = &h[h.len().saturating_sub(keep)..];
    f.render_widget(Sparkline::default().data(shown).max(peak.max(1)), line);
}

fn item_text(columns: &[Column], item: &Item, width: usize) -> String {
    let prefix = format!(
        "{}{}",
        "  ".repeat(item.depth),
        match item.open {
            Some(true) => "- ",
            Some(false) => "+ ",
            None if item.depth > 0 => "  ",
            None => "",
        }
    );
    row_text(columns, &item.cells, Some(&prefix), width.saturating_sub(2))
}

/// A row's cells laid out in the columns; the flexible column (width 0) gets what the others
/// leave, its text shortened to fit (`prefix` before it: a tree's indent).
fn row_text(columns: &[Column], cells: &[String], prefix: Option<&str>, width: usize) -> String {
    let fixed: usize = columns
        .iter()
        .filter(|c| c.width > 0)
        .map(|c| usize::from(c.width) + 1)
        .sum();
    let flex = width.saturating_sub(fixed).max(8);
    let mut out = Vec::new();
    for (c, cell) in columns.iter().zip(cells) {
        if c.width == 0 {
            let p = prefix.unwrap_or("");
            let room = flex.saturating_sub(p.chars().count()).max(4);
            let name = if cell.chars().count() > room {
                fit_function(cell, room)
            } else {
                cell.clone()
            };
            out.push(format!("{p}{name:<room$}"));
        } else {
            let w = usize::from(c.width);
            let cell: String = cell.chars().take(w).collect();
            out.push(if c.right {
                format!("{cell:>w$}")
            } else {
                format!("{cell:<w$}")
            });
        }
    }
    out.join(" ").trim_end().to_string()
}
