//! The browser driven key by key over hand-made heaps, drawn into an 80x24 test terminal.

use muppy_core::{
    analysis::GroupBy,
    model::{Block, Counters, Filter, Frame, StackState, Trace},
    snapshot::Snapshot,
};
use ratatui::{Terminal, backend::TestBackend};

use crate::{App, Key, Update, View, draw::draw};

fn trace(frames: &[&str]) -> Trace {
    Trace::new(
        frames.iter().map(|s| Frame::from_name(s)).collect(),
        StackState::Walked,
    )
}

/// main -> parse -> leaf (a.c:3): `parse` blocks of 100 B; main -> load (a.c:9): `load`
/// blocks of 4000 B.
fn snap(parse: u64, load: u64) -> Snapshot {
    let traces = vec![
        trace(&["leaf (a.c:3)", "parse (a.c:20)", "main (a.c:30)"]),
        trace(&["load (a.c:9)", "main (a.c:31)"]),
    ];
    let mut blocks = Vec::new();
    for (t, n, size) in [(0, parse, 100), (1, load, 4000)] {
        for i in 0..n {
            let addr = 0x1000 * (u64::from(t) + 1) + i * 0x10;
            blocks.push((
                addr,
                Block {
                    size,
                    ts_ns: 0,
                    trace: t,
                    tid: 7,
                    leak: None,
                },
            ));
        }
    }
    Snapshot {
        pid: 42,
        now_ns: 3_000_000_000,
        saved_unix_secs: 0,
        counters: Counters::default(),
        sample_bytes: 0,
        label: String::new(),
        traces,
        blocks,
        check: None,
        modules: Vec::new(),
        allocated: Vec::new(),
    }
}

fn app(parse: u64, load: u64) -> App {
    let mut a = App::new("t", Filter::default(), GroupBy::Site, None);
    a.update(Update::Heap(Box::new(snap(parse, load))));
    a
}

fn keys(a: &mut App, ks: &[Key]) {
    for k in ks {
        a.key(*k);
    }
}

fn typed(a: &mut App, text: &str) {
    a.key(Key::Char('/'));
    for c in text.chars() {
        a.key(Key::Char(c));
    }
    a.key(Key::Enter);
}

/// The screen as text lines, trailing blanks cut.
fn screen(a: &App) -> Vec<String> {
    let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
    t.draw(|f| draw(a, f)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..24)
        .map(|y| {
            (0..80)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect()
}

fn names(a: &App) -> Vec<String> {
    a.items().iter().map(|i| i.cells[0].clone()).collect()
}

#[test]
fn summary_rows_fit_80_columns_with_the_keys() {
    let a = app(10, 2);
    let s = screen(&a);
    assert_eq!(s[0], "muppy browse: t (pid 42): 12 objects, 8.79 KB live");
    assert_eq!(
        &s[2..5],
        [
            "  sites                                          # objects total size     +start",
            "> load (a.c:9)                                           2    7.81 KB        0 B",
            "  leaf (a.c:3)                                          10     1000 B        0 B",
        ]
    );
    assert_eq!(s[21], "by site | sort size");
    assert_eq!(&s[22..], crate::draw::HELP.map(String::from));
    assert!(s.iter().all(|l| l.chars().count() <= 80));
}

#[test]
fn growth_since_start_and_mark_and_sorts() {
    let mut a = app(10, 2);
    a.key(Key::Char('m'));
    a.update(Update::Heap(Box::new(snap(30, 2))));
    let row = |a: &App, name: &str| {
        let r = a.items().iter().find(|i| i.cells[0] == name).unwrap();
        r.cells[1..].to_vec()
    };
    assert_eq!(
        row(&a, "leaf (a.c:3)"),
        ["30", "2.93 KB", "+1.95 KB", "+1.95 KB"]
    );
    a.update(Update::Heap(Box::new(snap(30, 3))));
    assert_eq!(
        row(&a, "load (a.c:9)"),
        ["3", "11.72 KB", "+3.91 KB", "+3.91 KB"]
    );
    a.key(Key::Char('m'));
    a.update(Update::Heap(Box::new(snap(31, 3))));
    assert_eq!(row(&a, "leaf (a.c:3)")[2..], ["+2.05 KB", "+100 B"]);
    assert_eq!(row(&a, "load (a.c:9)")[2..], ["+3.91 KB", "0 B"]);
    // By size, by count, by growth since the mark.
    assert_eq!(names(&a), ["load (a.c:9)", "leaf (a.c:3)"]);
    a.key(Key::Char('s'));
    assert_eq!(names(&a), ["leaf (a.c:3)", "load (a.c:9)"]);
    a.key(Key::Char('s'));
    assert_eq!(names(&a), ["leaf (a.c:3)", "load (a.c:9)"]);
    assert_eq!(a.status(), "by site | sort growth | mark set");
    a.key(Key::Char('s'));
    assert_eq!(names(&a), ["load (a.c:9)", "leaf (a.c:3)"]);
    assert_eq!(a.history(), [9000, 11000, 15000, 15100]);
}

#[test]
fn a_bad_regex_is_one_line_and_a_good_one_narrows() {
    let mut a = app(10, 2);
    typed(&mut a, "(");
    assert_eq!(
        a.status(),
        "not a regular expression: error: unclosed group"
    );
    assert_eq!(names(&a), ["load (a.c:9)", "leaf (a.c:3)"]);
    typed(&mut a, "parse");
    assert_eq!(names(&a), ["leaf (a.c:3)"]);
    assert_eq!(a.status(), "by site | sort size | site /parse/");
    a.key(Key::Esc);
    assert_eq!(names(&a), ["load (a.c:9)", "leaf (a.c:3)"]);
    // Typing takes q as a letter; Esc cancels it.
    a.key(Key::Char('/'));
    a.key(Key::Char('q'));
    assert!(!a.quit());
    assert_eq!(a.status(), "site regex: q_  (Enter applies, Esc cancels)");
    a.key(Key::Esc);
    a.key(Key::Char('q'));
    assert!(a.quit());
}

#[test]
fn trees_expand_and_collapse() {
    let mut a = app(10, 2);
    a.key(Key::Char('2'));
    assert_eq!(a.view(), View::TopDown);
    assert_eq!(names(&a), ["main (a.c:31)", "main (a.c:30)"]);
    keys(&mut a, &[Key::Down, Key::Enter]);
    let s = screen(&a);
    assert_eq!(
        &s[3..6],
        [
            "  + main (a.c:31)                                                   2    7.81 KB",
            "> - main (a.c:30)                                                  10     1000 B",
            "    + parse (a.c:20)                                               10     1000 B",
        ]
    );
    keys(&mut a, &[Key::Down, Key::Right]);
    assert_eq!(
        names(&a),
        [
            "main (a.c:31)",
            "main (a.c:30)",
            "parse (a.c:20)",
            "leaf (a.c:3)"
        ]
    );
    // Left on an open node closes it; on a leaf, goes to its parent.
    keys(&mut a, &[Key::Down, Key::Left]);
    assert_eq!(a.selected(), 2);
    a.key(Key::Left);
    assert_eq!(
        names(&a),
        ["main (a.c:31)", "main (a.c:30)", "parse (a.c:20)"]
    );
    a.key(Key::Char('3'));
    assert_eq!(names(&a), ["load (a.c:9)", "leaf (a.c:3)"]);
}

#[test]
fn callers_objects_and_refs_follow_the_selection() {
    let mut a = app(10, 2);
    // The summary's second row: its function's callers and callees.
    keys(&mut a, &[Key::Down, Key::Char('4')]);
    let rows = |a: &App| {
        a.items()
            .iter()
            .map(|i| (i.cells[0].clone(), i.cells[1].clone()))
            .collect::<Vec<_>>()
    };
    let v = |n: &str, o: &str| (n.to_string(), o.to_string());
    assert_eq!(
        rows(&a),
        [
            v("callers of leaf", "10"),
            v("parse", "10"),
            v("callees of leaf", "10"),
            v("[allocator]", "10"),
        ]
    );
    // Enter on a caller walks to it.
    keys(&mut a, &[Key::Down, Key::Enter]);
    assert_eq!(rows(&a)[1], v("main", "10"));
    assert_eq!(rows(&a)[3], v("leaf", "10"));
    // The objects of the first row, then the refs of one of them.
    keys(&mut a, &[Key::Char('1'), Key::Up, Key::Enter]);
    assert_eq!(a.view(), View::Objects);
    assert_eq!(
        a.items()
            .iter()
            .map(|i| i.cells[0].as_str())
            .collect::<Vec<_>>(),
        ["0x2000", "0x2010"]
    );
    assert_eq!(a.items()[0].cells[1..4], ["3.91 KB", "3.0 s", "7"]);
    keys(&mut a, &[Key::Down, Key::Enter]);
    assert_eq!(a.view(), View::Refs);
    assert_eq!(
        names(&a)[..4],
        [
            "0x2010 load (a.c:9)",
            "allocated by:",
            "load (a.c:9)",
            "main (a.c:31)"
        ]
    );
    a.key(Key::Char('6'));
    assert_eq!(
        a.items()[0].cells[1],
        "no leak verdicts: browse a snapshot saved by `leaks --save FILE`"
    );
}

#[test]
fn group_by_cycles_and_views_cycle_with_tab() {
    let mut a = app(10, 2);
    a.key(Key::Char('g'));
    assert_eq!(names(&a), ["load", "leaf"]);
    a.key(Key::Char('g'));
    assert_eq!(
        names(&a),
        [
            "load (a.c:9) <- main (a.c:31)",
            "leaf (a.c:3) <- parse (a.c:20) <- main (a.c:30)"
        ]
    );
    a.key(Key::Char('g'));
    assert_eq!(names(&a), ["4000 B", "100 B"]);
    for v in View::ALL.iter().skip(1).chain([&View::Summary]) {
        a.key(Key::Tab);
        assert_eq!(a.view(), *v);
    }
}

#[test]
fn a_baseline_adds_its_column() {
    let mut a = App::new("t", Filter::default(), GroupBy::Site, Some(snap(5, 3)));
    a.update(Update::Heap(Box::new(snap(10, 2))));
    let s = screen(&a);
    assert!(s[2].ends_with("+start    vs base"), "{}", s[2]);
    assert_eq!(a.items()[0].cells[4], "-3.91 KB");
    assert_eq!(a.items()[1].cells[4], "+500 B");
}

#[test]
fn the_selection_stays_on_its_row_when_rows_move() {
    let mut a = app(10, 2);
    a.key(Key::Down);
    assert_eq!(names(&a)[a.selected()], "leaf (a.c:3)");
    // leaf grows past load: it moves up, and the selection with it.
    a.update(Update::Heap(Box::new(snap(100, 2))));
    assert_eq!(names(&a), ["leaf (a.c:3)", "load (a.c:9)"]);
    assert_eq!(a.selected(), 0);
    // A screen too small for anything does not break the drawing.
    let mut t = Terminal::new(TestBackend::new(3, 2)).unwrap();
    t.draw(|f| draw(&a, f)).unwrap();
}

#[test]
fn live_refs_ask_the_tracer_once_and_show_its_answer() {
    use muppy_core::{
        analysis::{RefReport, RefTree, Referrer},
        model::{CheckFacts, Place},
    };

    use crate::Ask;

    let mut a = App::new("t", Filter::default(), GroupBy::Site, None).live();
    a.update(Update::Heap(Box::new(snap(10, 2))));
    // The load row's objects; the second block's refs: one question, asked once.
    keys(&mut a, &[Key::Enter, Key::Down, Key::Enter]);
    assert_eq!(a.view(), View::Refs);
    assert_eq!(a.take_ask(), Some(Ask::Referrers(0x2010)));
    assert_eq!(a.take_ask(), None);
    a.key(Key::Down);
    assert_eq!(a.take_ask(), None);
    assert!(
        names(&a).contains(&"searching the process's memory...".to_string()),
        "{:?}",
        names(&a)
    );
    // The answer: a global points at a block that points at it.
    let global = Referrer::Root {
        place: Place::Global {
            symbol: Some("registry".into()),
            module: "a.out".into(),
            section: Some(".bss".into()),
            offset: 8,
        },
        at: 0x5000,
        interior: false,
    };
    let holder = RefTree {
        addr: 0x1000,
        size: 100,
        site: Frame::from_name("leaf (a.c:3)"),
        referrers: vec![global],
        cut_depth: false,
        more_roots: 0,
    };
    let report = RefReport {
        pid: 42,
        tree: RefTree {
            addr: 0x2010,
            size: 4000,
            site: Frame::from_name("load (a.c:9)"),
            referrers: vec![Referrer::Block {
                at: 0x1008,
                interior: false,
                tree: holder,
            }],
            cut_depth: false,
            more_roots: 0,
        },
        facts: CheckFacts::default(),
    };
    a.update(Update::Referrers(Box::new(report)));
    a.key(Key::Down);
    let shown = names(&a);
    let at = shown.iter().position(|n| n == "referrers:").unwrap();
    assert_eq!(shown[at + 1], "0x1000 leaf (a.c:3)", "{shown:?}");
    // Walked with the keys: the holder opens onto the global that holds it.
    for _ in 0..names(&a).len() {
        if a.items()[a.selected()].cells[0] == "0x1000 leaf (a.c:3)" {
            break;
        }
        a.key(Key::Down);
    }
    assert_eq!(a.items()[a.selected()].cells[0], "0x1000 leaf (a.c:3)");
    a.key(Key::Right);
    assert_eq!(
        a.items()[at + 2].cells,
        ["global registry (a.out .bss+0x8)", "", ""],
        "{:?}",
        names(&a)
    );
    // r asks again; a failure says why.
    a.key(Key::Char('r'));
    assert_eq!(a.take_ask(), Some(Ask::Referrers(0x2010)));
    a.update(Update::NoReferrers {
        addr: 0x2010,
        why: "0x2010 is not a live block".into(),
    });
    a.key(Key::Down);
    assert!(
        names(&a).contains(&"not found: 0x2010 is not a live block (r: search again)".to_string()),
        "{:?}",
        names(&a)
    );
}

#[test]
fn a_live_leak_check_is_asked_for_and_its_verdicts_shown_by_kind() {
    use muppy_core::model::{CheckFacts, LeakKind, Verdict};

    use crate::Ask;

    let mut a = App::new("t", Filter::default(), GroupBy::Site, None).live();
    a.update(Update::Heap(Box::new(snap(10, 2))));
    a.key(Key::Char('c'));
    assert_eq!(a.take_ask(), Some(Ask::LeakCheck));
    assert_eq!(a.view(), View::Leaks);
    assert!(
        a.items()[0].cells[1].starts_with("checking"),
        "{:?}",
        a.items()[0].cells
    );
    // The check: load's two blocks lost, parse's reachable.
    let mut checked = snap(10, 2);
    for (_, b) in &mut checked.blocks {
        b.leak = Some(Verdict {
            kind: if b.trace == 1 {
                LeakKind::DefinitelyLost
            } else {
                LeakKind::Reachable
            },
            indirect_bytes: 0,
            confirmed: true,
        });
    }
    checked.check = Some(CheckFacts::default());
    a.update(Update::Checked(Box::new(checked)));
    // A tick's heap copy (no verdicts) does not hide the check's.
    a.update(Update::Heap(Box::new(snap(10, 2))));
    a.key(Key::Down);
    let rows: Vec<Vec<String>> = a.items().iter().map(|i| i.cells.clone()).collect();
    assert_eq!(
        rows,
        [
            ["definitely lost", "load (a.c:9)", "2", "7.81 KB"],
            ["still reachable", "leaf (a.c:3)", "10", "1000 B"],
        ]
    );
    // The lost row's objects.
    keys(&mut a, &[Key::Up, Key::Enter]);
    assert_eq!(a.view(), View::Objects);
    assert_eq!(names(&a), ["0x2000", "0x2010"]);
}
