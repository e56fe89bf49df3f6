//! What the user asked to see, rendered from a heap, live or saved: the summary, the objects
//! or the tree, in the chosen format. One entry point for the live session and the offline
//! commands, so both print the same thing.

use crate::{
    heap::{Filter, Heap},
    output::{self, ProcRow, SummaryExtras},
    process::Identity,
    summary::{self, GroupBy},
    trace::Format,
    tree,
};

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
}

/// Why a view could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// `tree --addr` named no live block.
    #[error("no live block starts at {0:#x}; `muppy-trace objects` lists the live blocks")]
    NoBlock(u64),
}

/// Renders `opts.view` of `heap`, ending with a newline.
pub fn render(
    heap: &Heap,
    opts: &ViewOptions,
    extras: &SummaryExtras,
) -> Result<String, ViewError> {
    let json = opts.format == Format::Json;
    Ok(match &opts.view {
        View::Summary => {
            let s = summary::summarize(heap, &opts.filter, opts.group_by);
            if json {
                output::summary_json(&s, extras) + "\n"
            } else {
                let probed = extras
                    .probed
                    .as_ref()
                    .and_then(|p| p["allocator"].as_str())
                    .map_or(String::new(), |a| format!("probed: {a}\n"));
                output::summary_table(&s, opts.top)
                    + &probed
                    + &output::mappings_table(&extras.mappings, opts.top)
            }
        }
        View::Objects => {
            let objects = heap.objects(&opts.filter);
            if json {
                objects
                    .iter()
                    .map(|o| output::object_json(o, heap.traces) + "\n")
                    .collect()
            } else {
                output::objects_table(
                    &objects,
                    heap.traces,
                    opts.top,
                    heap.counters.age_resolution_ns,
                )
            }
        }
        View::Tree { addr, maxdepth } => {
            let roots = match addr {
                Some(a) => vec![tree::build_for_block(heap, *a).ok_or(ViewError::NoBlock(*a))?],
                None => tree::build(heap, &opts.filter),
            };
            if json {
                output::tree_json(heap.pid, &roots, *maxdepth) + "\n"
            } else {
                output::tree_text(&roots, *maxdepth)
            }
        }
    })
}

/// Renders the diff from `old` to `new` (grouped and filtered alike), as `summary.get_diff`.
pub fn render_diff(old: &Heap, new: &Heap, opts: &ViewOptions) -> String {
    let a = summary::summarize(old, &opts.filter, opts.group_by);
    let b = summary::summarize(new, &opts.filter, opts.group_by);
    let d = summary::diff(&a, &b);
    match opts.format {
        Format::Json => output::diff_json(&d) + "\n",
        Format::Table => output::diff_table(&d, opts.top),
    }
}

/// One process's part of a report on several.
pub struct Proc<'a> {
    /// Who it is.
    pub id: &'a Identity,
    /// The pid it was forked from, if seen.
    pub parent: Option<u32>,
    /// `running`, `exited with code 0`, `exec'd /bin/sh`.
    pub state: String,
    /// What was probed for it, in words.
    pub probed: Option<String>,
    /// What it mapped itself, outside the allocator.
    pub mappings: Vec<crate::regions::MapRow>,
    /// Its heap.
    pub heap: Heap<'a>,
}

/// Adds the process's pid, namespace pid and name to each JSON line of `lines`.
fn tag_lines(lines: &str, id: &Identity) -> String {
    lines
        .lines()
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(mut v) => {
                let tag = |v: &mut serde_json::Value| {
                    v["pid"] = id.pid.into();
                    v["comm"] = id.comm.as_str().into();
                    if let Some(n) = id.ns_pid {
                        v["ns_pid"] = n.into();
                    }
                };
                tag(&mut v);
                // Every row says whose it is, so rows of several processes can be mixed.
                if let Some(rows) = v.get_mut("rows").and_then(|r| r.as_array_mut()) {
                    rows.iter_mut().for_each(tag);
                }
                v.to_string() + "\n"
            }
            Err(_) => l.to_string() + "\n",
        })
        .collect()
}

/// A process's heading in a table report.
fn heading(p: &Proc) -> String {
    let mut h = format!("\n-- pid {} {}, {}", p.id.pids(), p.id.comm, p.state);
    if let Some(parent) = p.parent {
        h.push_str(&format!(", child of {parent}"));
    }
    if let Some(probed) = &p.probed {
        h.push_str(&format!("; probed {probed}"));
    }
    h + " --\n"
}

/// Renders a report on several processes: the process table, largest live heap first, then
/// `opts.view` of the `top_procs` largest (of every process in JSON, each line tagged with
/// `pid` and `comm`, then one `processes` line).
pub fn render_procs(
    procs: &[Proc],
    opts: &ViewOptions,
    extras: &SummaryExtras,
    top_procs: usize,
) -> Result<String, ViewError> {
    let mut order: Vec<(usize, ProcRow)> = procs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (objects, bytes) = summary::summarize(&p.heap, &opts.filter, opts.group_by).total();
            let row = ProcRow {
                pids: p.id.pids(),
                comm: p.id.comm.clone(),
                state: p.state.clone(),
                objects,
                bytes,
            };
            (i, row)
        })
        .collect();
    order.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(&b.0)));
    let lost = procs.first().map_or(0, |p| p.heap.counters.lost_events);
    let rows: Vec<ProcRow> = order.iter().map(|(_, r)| r.clone()).collect();
    let json = opts.format == Format::Json;
    let mut out = String::new();
    if json {
        for (i, r) in &order {
            let p = &procs[*i];
            let mut v = serde_json::json!({
                "type": "process",
                "pid": p.id.pid,
                "comm": p.id.comm,
                "state": p.state,
                "objects": r.objects,
                "bytes": r.bytes,
            });
            if let Some(n) = p.id.ns_pid {
                v["ns_pid"] = n.into();
            }
            if let Some(parent) = p.parent {
                v["parent"] = parent.into();
            }
            if let Some(probed) = &p.probed {
                v["probed"] = probed.as_str().into();
            }
            out.push_str(&(v.to_string() + "\n"));
            let extras = SummaryExtras {
                mappings: p.mappings.clone(),
                ..SummaryExtras::default()
            };
            out.push_str(&tag_lines(&render(&p.heap, opts, &extras)?, p.id));
        }
        out.push_str(&(output::processes_json(&rows, lost, extras) + "\n"));
    } else {
        out.push_str(&output::processes_table(&rows, top_procs, lost));
        for (i, r) in order.iter().take(top_procs) {
            let p = &procs[*i];
            if r.objects == 0 && p.mappings.is_empty() {
                continue;
            }
            out.push_str(&heading(p));
            let extras = SummaryExtras {
                mappings: p.mappings.clone(),
                ..SummaryExtras::default()
            };
            out.push_str(&render(&p.heap, opts, &extras)?);
        }
    }
    Ok(out)
}

/// With `--all`, the report on a process as it ends: what it left live.
pub fn render_ended(
    id: &Identity,
    state: &str,
    heap: &Heap,
    mappings: &[crate::regions::MapRow],
    opts: &ViewOptions,
) -> String {
    let s = summary::summarize(heap, &opts.filter, opts.group_by);
    match opts.format {
        Format::Json => {
            let extras = SummaryExtras {
                mappings: mappings.to_vec(),
                ..SummaryExtras::default()
            };
            let line = output::summary_json(&s, &extras);
            let tagged = tag_lines(&line, id);
            let mut v: serde_json::Value =
                serde_json::from_str(tagged.trim_end()).unwrap_or_default();
            v["type"] = "exited".into();
            v["state"] = state.into();
            v.to_string() + "\n"
        }
        Format::Table => {
            let (objects, bytes) = s.total();
            let top = s.rows.first().map_or(String::new(), |r| {
                format!(
                    "; largest: {} ({})",
                    r.key.text(),
                    output::format_size_compact(r.bytes)
                )
            });
            format!(
                "pid {} {} {state}: {objects} objects, {} still live{top}\n",
                id.pids(),
                id.comm,
                output::format_size_compact(bytes)
            )
        }
    }
}

/// A periodic diff of one of several processes.
pub fn render_proc_diff(id: &Identity, d: &summary::Diff, opts: &ViewOptions) -> String {
    match opts.format {
        Format::Json => tag_lines(&output::diff_json(d), id),
        Format::Table => format!(
            "\n-- pid {} {} --\n{}",
            id.pids(),
            id.comm,
            output::diff_table(d, opts.top)
        ),
    }
}
