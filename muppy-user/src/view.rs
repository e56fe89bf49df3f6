//! What the user asked to see, rendered from a heap, live or saved: the summary, the objects
//! or the tree, in the chosen format. One entry point for the live session and the offline
//! commands, so both print the same thing.

use crate::{
    heap::{Filter, Heap},
    output::{self, SummaryExtras},
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
                output::summary_table(&s, opts.top)
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
                output::objects_table(&objects, heap.traces, opts.top)
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
