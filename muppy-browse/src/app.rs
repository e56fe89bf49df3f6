//! The browser's state, what each key does to it, and the rows of each view, computed from
//! the core's analyses over the latest heap copy.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use muppy_core::{
    analysis::{
        GroupBy, Key as RowKey, Label, Node, RefReport, RefTree, Referrer, callgraph, leak_report,
        objects, summarize,
    },
    model::{Filter, LeakKind},
    report::text::{format_age, format_size_change},
    snapshot::Snapshot,
};
use regex::Regex;

use crate::Update;

/// The views, in the order of their number keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Live objects and bytes per group, with growth.
    Summary,
    /// The call tree from the program's entry down to the allocation sites.
    TopDown,
    /// The allocation sites, their callers below.
    BottomUp,
    /// One function's callers and callees.
    Graph,
    /// The blocks of one row.
    Objects,
    /// Leak verdicts per group.
    Leaks,
    /// One block: its allocation path, verdict and referrers.
    Refs,
}

impl View {
    /// Every view, numbered from 1.
    pub const ALL: [View; 7] = [
        View::Summary,
        View::TopDown,
        View::BottomUp,
        View::Graph,
        View::Objects,
        View::Leaks,
        View::Refs,
    ];

    /// Its tab's name.
    pub fn title(self) -> &'static str {
        match self {
            View::Summary => "summary",
            View::TopDown => "top-down",
            View::BottomUp => "bottom-up",
            View::Graph => "callers",
            View::Objects => "objects",
            View::Leaks => "leaks",
            View::Refs => "refs",
        }
    }

    fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }
}

/// How the summary's rows (and the trees' branches) are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Bytes, largest first.
    Size,
    /// Objects, most first.
    Count,
    /// Growth in bytes (since the mark, else against the baseline, else since the start).
    Growth,
}

impl Sort {
    /// Its name on the status line.
    pub fn name(self) -> &'static str {
        match self {
            Sort::Size => "size",
            Sort::Count => "count",
            Sort::Growth => "growth",
        }
    }
}

/// A key, as the browser reads it (the terminal's events map onto these).
/// What the browser asks of the tracer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Who points at the live block at this address.
    Referrers(u64),
    /// A leak check of the process now.
    LeakCheck,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A printable character.
    Char(char),
    /// ↑.
    Up,
    /// ↓.
    Down,
    /// ←.
    Left,
    /// →.
    Right,
    /// Page up.
    PageUp,
    /// Page down.
    PageDown,
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Tab.
    Tab,
    /// Backspace.
    Backspace,
    /// Ctrl-C.
    Interrupt,
}

/// What a row leads to.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    None,
    /// A summary row (a leak row: with its kind).
    Row(RowKey, Option<LeakKind>),
    /// A function of the call graph.
    Function(String),
    /// A live block.
    Block(u64),
}

/// One row of a view.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Tree depth (0 outside trees).
    pub depth: usize,
    /// `Some(open)` for a tree node with children.
    pub open: Option<bool>,
    /// The cells, one per column.
    pub cells: Vec<String>,
    /// Tree nodes: where it is, for expanding it.
    id: String,
    target: Target,
}

impl Item {
    fn line(cells: Vec<String>, target: Target) -> Self {
        Item {
            depth: 0,
            open: None,
            cells,
            id: String::new(),
            target,
        }
    }

    fn note(text: impl Into<String>, columns: usize, at: usize) -> Self {
        let mut cells = vec![String::new(); columns];
        cells[at] = text.into();
        Item::line(cells, Target::None)
    }
}

/// A column: its header, its width (0: the rest of the line) and whether it is right-aligned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The header.
    pub header: String,
    /// Width in cells; 0 takes what the others leave.
    pub width: u16,
    /// Numbers are right-aligned.
    pub right: bool,
}

fn col(header: &str, width: u16, right: bool) -> Column {
    Column {
        header: header.to_string(),
        width,
        right,
    }
}

/// A tree before it is flattened into rows.
struct Tree {
    name: String,
    figures: (u64, u64),
    target: Target,
    children: Vec<Tree>,
}

impl Tree {
    fn of_node(n: &Node) -> Tree {
        Tree {
            name: n.name.clone(),
            figures: (n.objects, n.bytes),
            target: match &n.label {
                Label::Frame(f) => Target::Function(f.function_name()),
                Label::Block(a) => Target::Block(*a),
                Label::End(_) => Target::None,
            },
            children: n.children.iter().map(Tree::of_node).collect(),
        }
    }

    fn of_refs(t: &RefTree) -> Tree {
        let mut children: Vec<Tree> = t
            .referrers
            .iter()
            .map(|r| match r {
                Referrer::Block { tree, interior, .. } => {
                    let mut sub = Tree::of_refs(tree);
                    if *interior {
                        sub.name.push_str(" (interior)");
                    }
                    sub
                }
                Referrer::Seen { addr, .. } => Tree::leaf(format!("{addr:#x} (shown above)")),
                Referrer::Root { place, .. } => Tree::leaf(place.describe()),
            })
            .collect();
        if t.cut_depth {
            children.push(Tree::leaf("[more: --maxdepth]".into()));
        }
        if t.more_roots > 0 {
            children.push(Tree::leaf(format!("[{} more roots]", t.more_roots)));
        }
        Tree {
            name: format!("{:#x} {}", t.addr, t.site.name()),
            figures: (1, t.size),
            target: Target::Block(t.addr),
            children,
        }
    }

    fn leaf(name: String) -> Tree {
        Tree {
            name,
            figures: (0, 0),
            target: Target::None,
            children: Vec::new(),
        }
    }

    fn sort(&mut self, by: Sort) {
        if by == Sort::Count {
            self.children.sort_by(|a, b| {
                b.figures
                    .0
                    .cmp(&a.figures.0)
                    .then(b.figures.1.cmp(&a.figures.1))
            });
        }
        self.children.iter_mut().for_each(|c| c.sort(by));
    }
}

/// Objects shown at most in the objects view (a heap may hold millions).
const MAX_OBJECTS: usize = 2000;

/// The browser's state.
pub struct App {
    label: String,
    cur: Option<Arc<Snapshot>>,
    start: Option<Arc<Snapshot>>,
    mark: Option<Arc<Snapshot>>,
    baseline: Option<Arc<Snapshot>>,
    history: Vec<u64>,
    view: View,
    group_by: GroupBy,
    sort: Sort,
    base: Filter,
    site: Option<Regex>,
    typing: Option<String>,
    status: String,
    ended: Option<String>,
    selected: [usize; 7],
    expanded: HashSet<String>,
    focus_fn: Option<String>,
    row: Option<(RowKey, Option<LeakKind>)>,
    block: Option<u64>,
    refs: HashMap<u64, RefReport>,
    /// Live: referrer searches are asked of the tracer. Blocks asked about (answered or not),
    /// why those that failed did, and the question not yet taken.
    live: bool,
    asked: HashSet<u64>,
    refs_failed: HashMap<u64, String>,
    ask: Option<Ask>,
    /// Live: the heap as the last leak check asked for found it, and whether one is under way.
    checked: Option<Arc<Snapshot>>,
    checking: bool,
    items: Vec<Item>,
    /// The view `items` were made for.
    items_view: View,
    columns: Vec<Column>,
    quit: bool,
}

impl App {
    /// A browser for the heaps of `label` (a file, `pid N`, a command), filtered by `filter`
    /// (the command line's), grouped `by`, compared with `baseline` if given.
    pub fn new(label: &str, filter: Filter, by: GroupBy, baseline: Option<Snapshot>) -> Self {
        let mut app = App {
            label: label.to_string(),
            cur: None,
            start: None,
            mark: None,
            baseline: baseline.map(Arc::new),
            history: Vec::new(),
            view: View::Summary,
            group_by: by,
            sort: Sort::Size,
            base: filter,
            site: None,
            typing: None,
            status: String::new(),
            ended: None,
            selected: [0; 7],
            expanded: HashSet::new(),
            focus_fn: None,
            row: None,
            block: None,
            refs: HashMap::new(),
            live: false,
            asked: HashSet::new(),
            refs_failed: HashMap::new(),
            ask: None,
            checked: None,
            checking: false,
            items: Vec::new(),
            items_view: View::Summary,
            columns: Vec::new(),
            quit: false,
        };
        app.refresh();
        app
    }

    /// Takes one update from the tracer.
    pub fn update(&mut self, u: Update) {
        match u {
            Update::Heap(snap) => {
                let snap = Arc::new(*snap);
                let total = snap.blocks.iter().map(|(_, b)| b.size).sum();
                self.history.push(total);
                if self.start.is_none() {
                    self.start = Some(Arc::clone(&snap));
                }
                self.cur = Some(snap);
            }
            Update::Note(n) => {
                // A check that could not be made says so in a note.
                self.checking = false;
                self.status = n;
            }
            Update::Referrers(r) => {
                self.refs.insert(r.tree.addr, *r);
            }
            Update::NoReferrers { addr, why } => {
                self.refs_failed.insert(addr, why);
            }
            Update::Checked(snap) => {
                self.checked = Some(Arc::new(*snap));
                self.checking = false;
            }
            Update::Quit => self.quit = true,
            Update::Ended(why) => {
                self.status.clone_from(&why);
                self.ended = Some(why);
            }
        }
        self.refresh();
    }

    /// Takes one key.
    pub fn key(&mut self, k: Key) {
        if k == Key::Interrupt {
            self.quit = true;
            return;
        }
        if let Some(buf) = &mut self.typing {
            match k {
                Key::Char(c) => buf.push(c),
                Key::Backspace => {
                    buf.pop();
                }
                Key::Esc => self.typing = None,
                Key::Enter => {
                    let text = self.typing.take().unwrap_or_default();
                    self.set_site(&text);
                }
                _ => {}
            }
            return;
        }
        // A message stays until the next key.
        self.status.clear();
        match k {
            Key::Char('q') => self.quit = true,
            Key::Char(c @ '1'..='7') => self.view = View::ALL[c as usize - '1' as usize],
            Key::Tab => self.view = View::ALL[(self.view.index() + 1) % View::ALL.len()],
            Key::Up | Key::Char('k') => self.step(-1),
            Key::Down | Key::Char('j') => self.step(1),
            Key::PageUp => self.step(-10),
            Key::PageDown => self.step(10),
            Key::Enter | Key::Right | Key::Char('l') => self.open(k != Key::Right),
            Key::Left | Key::Char('h') => self.close(),
            Key::Char('s') => {
                self.sort = match self.sort {
                    Sort::Size => Sort::Count,
                    Sort::Count => Sort::Growth,
                    Sort::Growth => Sort::Size,
                }
            }
            Key::Char('g') => {
                self.group_by = match self.group_by {
                    GroupBy::Site => GroupBy::Function,
                    GroupBy::Function => GroupBy::Stack,
                    GroupBy::Stack => GroupBy::Size,
                    GroupBy::Size => GroupBy::Site,
                };
                self.row = None;
            }
            Key::Char('m') => {
                self.mark.clone_from(&self.cur);
                self.status = "mark set: growth since now in the last column".into();
            }
            Key::Char('/') => self.typing = Some(String::new()),
            Key::Esc => self.site = None,
            Key::Char('c') if self.live && self.ended.is_none() => {
                self.ask = Some(Ask::LeakCheck);
                self.checking = true;
                self.view = View::Leaks;
            }
            Key::Char('r') if self.view == View::Refs => {
                // Search again: the pointers may have changed.
                if let Some(a) = self.block {
                    self.asked.remove(&a);
                    self.refs.remove(&a);
                    self.refs_failed.remove(&a);
                }
            }
            _ => {}
        }
        self.refresh();
        self.ask_for_referrers();
    }

    /// Live, the browser asks the tracer who points at the block the refs view shows, once
    /// per block (`r` asks again): the tracer stops the process and reads its memory.
    pub fn live(mut self) -> Self {
        self.live = true;
        self
    }

    /// What the browser asks of the tracer, taken once.
    pub fn take_ask(&mut self) -> Option<Ask> {
        self.ask.take()
    }

    fn ask_for_referrers(&mut self) {
        if !self.live || self.view != View::Refs || self.ended.is_some() {
            return;
        }
        if let Some(a) = self.block
            && self.asked.insert(a)
        {
            self.ask = Some(Ask::Referrers(a));
            self.refresh();
        }
    }

    fn set_site(&mut self, text: &str) {
        if text.is_empty() {
            self.site = None;
            self.status.clear();
            return;
        }
        match Regex::new(text) {
            Ok(re) => {
                self.site = Some(re);
                self.status.clear();
            }
            Err(e) => {
                let why = e.to_string();
                self.status = format!(
                    "not a regular expression: {}",
                    why.lines().last().unwrap_or_default().trim()
                );
            }
        }
        self.refresh();
    }

    /// Whether the user asked to leave.
    pub fn quit(&self) -> bool {
        self.quit
    }

    /// The view shown.
    pub fn view(&self) -> View {
        self.view
    }

    /// The rows of the view shown.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The columns of the view shown.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The selected row.
    pub fn selected(&self) -> usize {
        self.selected[self.view.index()]
    }

    /// Live bytes at each heap copy received.
    pub fn history(&self) -> &[u64] {
        &self.history
    }

    /// The title line.
    pub fn title(&self) -> String {
        match &self.cur {
            Some(s) => {
                let bytes: u64 = s.blocks.iter().map(|(_, b)| b.size).sum();
                format!(
                    "muppy browse: {} (pid {}): {} objects, {} live",
                    self.label,
                    s.pid,
                    s.blocks.len(),
                    size(bytes)
                )
            }
            None => format!("muppy browse: {} (waiting for the first heap)", self.label),
        }
    }

    /// The status line: what is typed, a message, or the settings.
    pub fn status(&self) -> String {
        if let Some(buf) = &self.typing {
            return format!("site regex: {buf}_  (Enter applies, Esc cancels)");
        }
        if !self.status.is_empty() {
            return self.status.clone();
        }
        let mut s = format!("by {} | sort {}", self.group_by.name(), self.sort.name());
        if let Some(re) = &self.site {
            s.push_str(&format!(" | site /{}/", re.as_str()));
        } else if let Some(re) = &self.base.site {
            s.push_str(&format!(" | --site {}", re.as_str()));
        }
        if self.mark.is_some() {
            s.push_str(" | mark set");
        }
        if let Some(e) = &self.ended {
            s.push_str(&format!(" | {e}"));
        }
        s
    }

    fn filter(&self) -> Filter {
        let mut f = self.base.clone();
        if let Some(re) = &self.site {
            f.site = Some(re.clone());
        }
        f
    }

    fn step(&mut self, by: isize) {
        let i = self.view.index();
        let last = self.items.len().saturating_sub(1);
        self.selected[i] = self.selected[i].saturating_add_signed(by).min(last);
        self.follow_selection();
    }

    fn current(&self) -> Option<&Item> {
        self.items.get(self.selected())
    }

    /// Remembers what the selected row stands for, for the views that follow it.
    fn follow_selection(&mut self) {
        let Some(item) = self.current() else { return };
        match item.target.clone() {
            Target::Row(key, kind) => {
                self.focus_fn = function_of(&key).or(self.focus_fn.take());
                self.row = Some((key, kind));
            }
            // In the graph itself, only Enter moves the focus.
            Target::Function(f) if self.view != View::Graph => self.focus_fn = Some(f),
            // In the refs view, the block shown stays while its referrers are walked.
            Target::Block(a) if self.view != View::Refs => self.block = Some(a),
            Target::Block(_) | Target::Function(_) => {}
            Target::None => {}
        }
    }

    fn open(&mut self, toggle: bool) {
        let Some(item) = self.current().cloned() else {
            return;
        };
        match item.open {
            Some(false) => {
                self.expanded.insert(item.id);
                return;
            }
            Some(true) if toggle => {
                self.expanded.remove(&item.id);
                return;
            }
            _ => {}
        }
        if !toggle {
            return;
        }
        let next = match (self.view, item.target) {
            (View::Summary | View::Leaks, Target::Row(..)) => View::Objects,
            (View::Graph, Target::Function(f)) => {
                self.focus_fn = Some(f);
                View::Graph
            }
            (View::Objects | View::TopDown | View::BottomUp, Target::Block(_)) => View::Refs,
            (View::TopDown | View::BottomUp, Target::Function(_)) => View::Graph,
            _ => return,
        };
        self.view = next;
        self.selected[next.index()] = 0;
    }

    fn close(&mut self) {
        let i = self.selected();
        let Some(item) = self.items.get(i).cloned() else {
            return;
        };
        if item.open == Some(true) {
            self.expanded.remove(&item.id);
        } else if item.depth > 0 {
            // To the parent.
            if let Some(p) = self.items[..i].iter().rposition(|o| o.depth < item.depth) {
                self.selected[self.view.index()] = p;
            }
        }
    }

    /// Recomputes the rows of the view shown.
    fn refresh(&mut self) {
        // The selected row, to be found again when the rows move (a live update, a sort).
        let keep = (self.items_view == self.view)
            .then(|| self.current().map(|i| (i.id.clone(), i.cells.clone())))
            .flatten();
        let (columns, items) = match self.cur.clone() {
            None => (
                vec![col("", 0, false)],
                vec![Item::note("waiting for the first heap copy...", 1, 0)],
            ),
            Some(cur) => match self.view {
                View::Summary => self.summary(&cur),
                View::TopDown | View::BottomUp => self.tree(&cur),
                View::Graph => self.graph(&cur),
                View::Objects if matches!(self.row, Some((_, Some(_)))) => {
                    self.objects(&self.with_verdicts(&cur))
                }
                View::Objects => self.objects(&cur),
                View::Leaks => self.leaks(&self.with_verdicts(&cur)),
                View::Refs => self.refs(&cur),
            },
        };
        self.columns = columns;
        self.items = items;
        self.items_view = self.view;
        let i = self.view.index();
        if let Some((id, cells)) = keep {
            let same = |o: &Item| o.id == id && o.cells.first() == cells.first();
            if let Some(p) = self.items.iter().position(same) {
                self.selected[i] = p;
            }
        }
        self.selected[i] = self.selected[i].min(self.items.len().saturating_sub(1));
        self.follow_selection();
    }

    fn summary(&self, cur: &Snapshot) -> (Vec<Column>, Vec<Item>) {
        let f = self.filter();
        let by = self.group_by;
        let figures = |s: &Snapshot| -> HashMap<RowKey, (u64, u64)> {
            summarize(&s.heap(), &f, by)
                .rows
                .into_iter()
                .map(|r| (r.key, (r.objects, r.bytes)))
                .collect()
        };
        let now = summarize(&cur.heap(), &f, by);
        let start = self.start.as_deref().map(figures).unwrap_or_default();
        let (second, second_name) = match (&self.mark, &self.baseline) {
            (Some(m), _) => (Some(figures(m)), "+mark"),
            (None, Some(b)) => (Some(figures(b)), "vs base"),
            (None, None) => (None, ""),
        };
        let growth = |m: &HashMap<RowKey, (u64, u64)>, k: &RowKey, bytes: u64| {
            let was = m.get(k).map_or(0, |v| v.1);
            i64::try_from(bytes).unwrap_or(i64::MAX) - i64::try_from(was).unwrap_or(i64::MAX)
        };
        let mut rows: Vec<(RowKey, u64, u64, i64, Option<i64>)> = now
            .rows
            .into_iter()
            .map(|r| {
                let g1 = growth(&start, &r.key, r.bytes);
                let g2 = second.as_ref().map(|m| growth(m, &r.key, r.bytes));
                (r.key, r.objects, r.bytes, g1, g2)
            })
            .collect();
        // Groups the reference held that are gone now.
        if let Some(m) = &second {
            for (k, (_, bytes)) in m {
                if !rows.iter().any(|r| &r.0 == k) {
                    let gone = -i64::try_from(*bytes).unwrap_or(i64::MAX);
                    rows.push((k.clone(), 0, 0, growth(&start, k, 0), Some(gone)));
                }
            }
        }
        match self.sort {
            Sort::Size => {}
            Sort::Count => rows.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2))),
            Sort::Growth => {
                rows.sort_by(|a, b| {
                    b.4.unwrap_or(b.3)
                        .cmp(&a.4.unwrap_or(a.3))
                        .then(b.2.cmp(&a.2))
                });
            }
        }
        let mut columns = vec![
            col(by.noun(), 0, false),
            col("# objects", 9, true),
            col("total size", 10, true),
            col("+start", 10, true),
        ];
        if second.is_some() {
            columns.push(col(second_name, 10, true));
        }
        let items = rows
            .into_iter()
            .map(|(key, objects, bytes, g1, g2)| {
                let mut cells = vec![
                    key.text(),
                    objects.to_string(),
                    size(bytes),
                    tight(&format_size_change(g1)),
                ];
                cells.extend(g2.map(|g| tight(&format_size_change(g))));
                Item::line(cells, Target::Row(key, None))
            })
            .collect::<Vec<_>>();
        let items = if items.is_empty() {
            vec![Item::note("no live blocks match", columns.len(), 0)]
        } else {
            items
        };
        (columns, items)
    }

    fn tree(&self, cur: &Snapshot) -> (Vec<Column>, Vec<Item>) {
        let f = self.filter();
        let heap = cur.heap();
        let roots = if self.view == View::TopDown {
            callgraph::top_down(&heap, &f)
        } else {
            callgraph::bottom_up(&heap, &f)
        };
        let mut trees: Vec<Tree> = roots.iter().map(Tree::of_node).collect();
        let mut top = Tree::leaf(String::new());
        top.children = std::mem::take(&mut trees);
        top.sort(self.sort);
        let name = if self.view == View::TopDown {
            "callers -> callees"
        } else {
            "sites <- callers"
        };
        let columns = vec![
            col(name, 0, false),
            col("# objects", 9, true),
            col("total size", 10, true),
        ];
        let mut items = Vec::new();
        self.flatten(&top.children, 0, self.view.title(), &mut items);
        if items.is_empty() {
            items.push(Item::note("no live blocks match", 3, 0));
        }
        (columns, items)
    }

    fn flatten(&self, trees: &[Tree], depth: usize, at: &str, out: &mut Vec<Item>) {
        for t in trees {
            let id = format!("{at}\u{1f}{}", t.name);
            let open = self.expanded.contains(&id);
            let cells = match t.figures {
                // A root or a note (a referrer that is no block) holds no blocks of its own.
                (0, 0) => vec![t.name.clone(), String::new(), String::new()],
                (objects, bytes) => vec![t.name.clone(), objects.to_string(), size(bytes)],
            };
            out.push(Item {
                depth,
                open: (!t.children.is_empty()).then_some(open),
                cells,
                id: id.clone(),
                target: t.target.clone(),
            });
            if open {
                self.flatten(&t.children, depth + 1, &id, out);
            }
        }
    }

    fn graph(&self, cur: &Snapshot) -> (Vec<Column>, Vec<Item>) {
        let columns = vec![
            col("function", 0, false),
            col("# objects", 9, true),
            col("total size", 10, true),
        ];
        let Some(function) = &self.focus_fn else {
            let hint = "select a row of the summary or a tree, then press 4";
            return (columns, vec![Item::note(hint, 3, 0)]);
        };
        let nb = callgraph::neighbours(&cur.heap(), &self.filter(), function);
        let figures = |o: u64, b: u64| vec![o.to_string(), size(b)];
        let heading = |what: &str| {
            let mut cells = vec![format!("{what} {function}")];
            cells.extend(figures(nb.objects, nb.bytes));
            Item::line(cells, Target::Function(function.clone()))
        };
        let mut items = vec![heading("callers of")];
        let edge = |n: &callgraph::Neighbour| {
            let mut cells = vec![n.name.clone()];
            cells.extend(figures(n.objects, n.bytes));
            let target = if n.name == callgraph::ALLOCATOR || n.name.starts_with('[') {
                Target::None
            } else {
                Target::Function(n.name.clone())
            };
            Item {
                depth: 1,
                ..Item::line(cells, target)
            }
        };
        items.extend(nb.callers.iter().map(edge));
        items.push(heading("callees of"));
        items.extend(nb.callees.iter().map(edge));
        (columns, items)
    }

    fn objects(&self, cur: &Snapshot) -> (Vec<Column>, Vec<Item>) {
        let mut f = self.filter();
        if let Some((_, Some(kind))) = &self.row {
            f.kind = Some(*kind);
        }
        let heap = cur.heap();
        let columns = vec![
            col("address", 14, false),
            col("size", 10, true),
            col("age", 8, true),
            col("thread", 7, true),
            col("site", 0, false),
        ];
        let mut all = objects(&heap, &f);
        if let Some((key, _)) = &self.row {
            all.retain(|o| {
                &RowKey::of(&cur.traces[o.trace as usize], o.size, self.group_by) == key
            });
        }
        let more = all.len().saturating_sub(MAX_OBJECTS);
        let mut items: Vec<Item> = all
            .iter()
            .take(MAX_OBJECTS)
            .map(|o| {
                let site = cur.traces[o.trace as usize].site().name().to_string();
                Item::line(
                    vec![
                        format!("{:#x}", o.addr),
                        size(o.size),
                        format_age(o.age),
                        o.tid.to_string(),
                        site,
                    ],
                    Target::Block(o.addr),
                )
            })
            .collect();
        if more > 0 {
            items.push(Item::note(format!("... {more} more"), 5, 4));
        }
        if items.is_empty() {
            items.push(Item::note("no live blocks match", 5, 4));
        }
        (columns, items)
    }

    /// The heap whose blocks carry verdicts: a snapshot's own, or live, the last check's.
    fn with_verdicts(&self, cur: &Arc<Snapshot>) -> Arc<Snapshot> {
        match &self.checked {
            Some(c) if cur.check.is_none() => Arc::clone(c),
            _ => Arc::clone(cur),
        }
    }

    fn leaks(&self, cur: &Snapshot) -> (Vec<Column>, Vec<Item>) {
        let columns = vec![
            col("kind", 15, false),
            col(self.group_by.noun(), 0, false),
            col("# objects", 9, true),
            // Room for a loss record's `48 B + 46.83 KB` (indirect).
            col("total size", 20, true),
        ];
        let Some(facts) = cur.check else {
            let hint = match (self.live, self.checking) {
                (true, true) => "checking: the process is stopped while its memory is copied...",
                (true, false) => "c: check for leaks now (the process stops while it is copied)",
                _ => "no leak verdicts: browse a snapshot saved by `leaks --save FILE`",
            };
            return (columns, vec![Item::note(hint, 4, 1)]);
        };
        let r = leak_report(&cur.heap(), &self.filter(), self.group_by, facts, None);
        let items = r
            .rows
            .into_iter()
            .map(|row| {
                let mut text = size(row.bytes);
                if row.indirect_bytes > 0 {
                    text = format!("{text} + {}", size(row.indirect_bytes));
                }
                Item::line(
                    vec![
                        row.kind.words().to_string(),
                        row.key.text(),
                        row.objects.to_string(),
                        text,
                    ],
                    Target::Row(row.key, Some(row.kind)),
                )
            })
            .collect();
        (columns, items)
    }

    fn refs(&self, cur: &Snapshot) -> (Vec<Column>, Vec<Item>) {
        let columns = vec![
            col("block", 0, false),
            col("# objects", 9, true),
            col("total size", 10, true),
        ];
        let Some(addr) = self.block else {
            let hint = "select a block in the objects view (5), then press Enter";
            return (columns, vec![Item::note(hint, 3, 0)]);
        };
        let Some(b) = muppy_core::model::Blocks::block(cur, addr) else {
            return (
                columns,
                vec![Item::note(format!("{addr:#x} is no longer live"), 3, 0)],
            );
        };
        let trace = &cur.traces[b.trace as usize];
        let mut items = vec![Item::line(
            vec![
                format!("{addr:#x} {}", trace.site().name()),
                "1".into(),
                size(b.size),
            ],
            Target::Block(addr),
        )];
        let checked = self.checked.as_deref();
        let leak = b
            .leak
            .or_else(|| checked.and_then(|c| muppy_core::model::Blocks::block(c, addr)?.leak));
        if let Some(v) = leak {
            items.push(Item::note(format!("verdict: {}", v.kind.words()), 3, 0));
        }
        items.push(Item::note("allocated by:", 3, 0));
        for name in trace.stack_names() {
            items.push(Item {
                depth: 1,
                ..Item::note(name, 3, 0)
            });
        }
        items.push(Item::note("referrers:", 3, 0));
        match self.refs.get(&addr) {
            Some(r) => {
                let tree = Tree::of_refs(&r.tree);
                self.flatten(&tree.children, 1, &format!("refs{addr:#x}"), &mut items);
                if tree.children.is_empty() {
                    items.push(Item {
                        depth: 1,
                        ..Item::note("nothing points at it", 3, 0)
                    });
                }
            }
            None if self.live => {
                let line = match self.refs_failed.get(&addr) {
                    Some(why) => format!("not found: {why} (r: search again)"),
                    None if self.asked.contains(&addr) => {
                        "searching the process's memory...".to_string()
                    }
                    None => "r: search the process's memory".to_string(),
                };
                items.push(Item {
                    depth: 1,
                    ..Item::note(line, 3, 0)
                });
            }
            None => {
                // Referrers come from a copy of the live memory, which a snapshot does not
                // hold: the command that finds them.
                for line in [
                    "found in live memory, by:".to_string(),
                    format!("muppy-trace refs --addr {addr:#x} --pid {}", cur.pid),
                ] {
                    items.push(Item {
                        depth: 1,
                        ..Item::note(line, 3, 0)
                    });
                }
            }
        }
        (columns, items)
    }
}

/// Bytes as tables show them, without the tables' leading padding.
fn size(bytes: u64) -> String {
    tight(&muppy_core::report::text::format_size(bytes))
}

/// A table's figure without the padding that aligns its unit (`1000     B`): cells are narrow.
fn tight(figure: &str) -> String {
    figure.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn function_of(key: &RowKey) -> Option<String> {
    match key {
        RowKey::Site(f) => Some(f.function_name()),
        RowKey::Function(s) => Some(s.clone()),
        RowKey::Stack { frames, .. } => frames.first().map(muppy_core::model::Frame::function_name),
        RowKey::Size(_) => None,
    }
}
