//! `/metrics`, in Prometheus' text format (version 0.0.4). Series per process are kept to the
//! [`TOP_PROCESSES`] largest live heaps, and per site to the [`TOP_SITES`] largest sites of
//! each of those: however many processes the machine runs, a scrape stays bounded. What was
//! left out is counted (`muppy_processes_not_exported`).

use std::fmt::Write as _;

use muppy_core::analysis::Summary;

use super::store::{Image, State};
use crate::session;

/// Prometheus' text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Processes with series of their own.
pub const TOP_PROCESSES: usize = 50;
/// Sites with series of their own, per exported process.
pub const TOP_SITES: usize = 5;

/// A label value, escaped as the format asks (backslash, quote, newline).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// What the metrics are made of, taken from the state under its lock (the images are shared,
/// not copied), so that the summaries are made after it is let go.
pub struct Figures {
    live: Vec<Image>,
    ended_total: u64,
    lost_events: u64,
    lost_stacks: u64,
    ticks: u64,
}

impl Figures {
    /// The state's figures now.
    pub fn of(st: &State) -> Self {
        Figures {
            live: st.live.values().cloned().collect(),
            ended_total: st.ended_total,
            lost_events: st.lost_events,
            lost_stacks: st.lost_stacks,
            ticks: st.ticks,
        }
    }
}

/// A family of per-process series: name, type, help, and its value for a process.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Image, &Summary) -> u64,
);

/// The metrics, from the state as of the last tick.
pub fn render(st: &Figures) -> String {
    let mut procs: Vec<(&Image, &Summary)> =
        st.live.iter().map(|img| (img, &*img.by_site)).collect();
    procs.sort_by_key(|(img, s)| (std::cmp::Reverse(s.total().1), img.id.pid));
    let left_out = procs.len().saturating_sub(TOP_PROCESSES);
    procs.truncate(TOP_PROCESSES);

    let mut out = String::new();
    let who = |img: &Image| format!("pid=\"{}\",comm=\"{}\"", img.id.pid, label(&img.id.comm));
    // One series per exported process, each family from its image and summary.
    let families: [Family; 3] = [
        (
            "muppy_live_bytes",
            "gauge",
            "Bytes in live heap blocks of a traced process (estimated when sampled).",
            |_, s| s.total().1,
        ),
        (
            "muppy_live_blocks",
            "gauge",
            "Live heap blocks of a traced process (estimated when sampled).",
            |_, s| s.total().0,
        ),
        (
            "muppy_events_total",
            "counter",
            "Allocator events applied to a traced process's table.",
            |img, _| img.counters.events,
        ),
    ];
    for (name, kind, help, value) in families {
        header(&mut out, name, kind, help);
        for (img, s) in &procs {
            let _ = writeln!(out, "{name}{{{}}} {}", who(img), value(img, s));
        }
    }
    header(
        &mut out,
        "muppy_site_live_bytes",
        "gauge",
        "Bytes in live blocks per allocation site, for each exported process's largest sites.",
    );
    for (img, s) in &procs {
        for r in s.rows.iter().take(TOP_SITES) {
            let _ = writeln!(
                out,
                "muppy_site_live_bytes{{{},site=\"{}\"}} {}",
                who(img),
                label(&r.key.names().join(";")),
                r.bytes
            );
        }
    }
    let scalar = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    };
    scalar(
        &mut out,
        "muppy_processes_traced",
        "gauge",
        "Processes with a live table.",
        st.live.len() as u64,
    );
    scalar(
        &mut out,
        "muppy_processes_not_exported",
        "gauge",
        "Traced processes left out of the per-process series (smaller heaps).",
        left_out as u64,
    );
    scalar(
        &mut out,
        "muppy_processes_ended_total",
        "counter",
        "Traced processes that ended.",
        st.ended_total,
    );
    scalar(
        &mut out,
        "muppy_lost_events_total",
        "counter",
        "Events the probes could not deliver: figures may be off by that many blocks.",
        st.lost_events,
    );
    scalar(
        &mut out,
        "muppy_lost_stacks_total",
        "counter",
        "Allocations recorded without their call stack.",
        st.lost_stacks,
    );
    scalar(
        &mut out,
        "muppy_ticks_total",
        "counter",
        "Copies of the live tables made for the API.",
        st.ticks,
    );
    header(
        &mut out,
        "muppy_tracer_cpu_seconds_total",
        "counter",
        "CPU time the tracer used (user and system).",
    );
    #[expect(clippy::cast_precision_loss, reason = "seconds for display")]
    let cpu = session::cpu_ms().unwrap_or(0) as f64 / 1000.0;
    let _ = writeln!(out, "muppy_tracer_cpu_seconds_total {cpu}");
    scalar(
        &mut out,
        "muppy_tracer_resident_bytes",
        "gauge",
        "The tracer's resident memory.",
        session::status_kb("VmRSS:").unwrap_or(0) * 1024,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn an_empty_state_has_every_family() {
        let text = render(&Figures::of(&State::default()));
        for name in [
            "muppy_live_bytes",
            "muppy_lost_events_total",
            "muppy_tracer_resident_bytes",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{text}");
        }
        assert!(text.contains("\nmuppy_processes_traced 0\n"), "{text}");
    }
}
