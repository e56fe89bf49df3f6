//! The analyses on small heaps whose answers are known.

use std::time::Duration;

use regex::Regex;

use super::*;
use crate::model::{Block, Counters, Filter, Frame, Heap, StackState, Trace};

fn trace(frames: &[&str], state: StackState) -> Trace {
    Trace::new(frames.iter().map(|s| Frame::from_name(s)).collect(), state)
}

fn block(size: u64, ts_ns: u64, trace: u32) -> Block {
    Block {
        size,
        ts_ns,
        trace,
        tid: 1,
        leak: None,
    }
}

fn heap<'a>(blocks: &'a Vec<(u64, Block)>, traces: &'a [Trace], now_ns: u64) -> Heap<'a> {
    Heap {
        pid: 3,
        blocks,
        traces,
        now_ns,
        counters: Counters::default(),
        sample_bytes: 0,
        modules: &[],
        allocated: &[],
    }
}

#[test]
fn filters_by_any_frame_size_and_age() {
    let traces = [
        trace(&["leaf (a.c:1)", "path_a (a.c:9)"], StackState::Walked),
        trace(&["leaf (a.c:1)", "path_b (a.c:19)"], StackState::Walked),
    ];
    let blocks = vec![
        (0x10, block(8, 1_000_000_000, 0)),
        (0x20, block(64, 1_000_000_000, 1)),
        (0x30, block(128, 4_000_000_000, 1)),
    ];
    let heap = heap(&blocks, &traces, 5_000_000_000);
    let addrs = |f: Filter| {
        objects(&heap, &f)
            .iter()
            .map(|o| o.addr)
            .collect::<Vec<_>>()
    };
    assert_eq!(addrs(Filter::default()), vec![0x30, 0x20, 0x10]);
    let site = |re: &str| Filter {
        site: Some(Regex::new(re).unwrap()),
        ..Filter::default()
    };
    assert_eq!(addrs(site("path_b")), vec![0x30, 0x20]);
    assert_eq!(addrs(site("^leaf")), vec![0x30, 0x20, 0x10]);
    assert_eq!(addrs(site(r"\(a\.c:19\)$")), vec![0x30, 0x20]);
    assert_eq!(addrs(site("nowhere")), Vec::<u64>::new());
    let sizes = Filter {
        min_size: Some(64),
        max_size: Some(64),
        ..Filter::default()
    };
    assert_eq!(addrs(sizes), vec![0x20]);
    let old = Filter {
        older_than: Some(Duration::from_secs(2)),
        ..Filter::default()
    };
    assert_eq!(addrs(old), vec![0x20, 0x10]);
    assert_eq!(
        objects(&heap, &Filter::default())[0].age,
        Duration::from_secs(1)
    );
}

fn sites(rows: &[(&str, u64, u64)]) -> Summary {
    Summary::from_figures(
        7,
        GroupBy::Site,
        rows.iter()
            .map(|(n, o, b)| (Key::Site(Frame::from_name(n)), *o, *b)),
        Counters::default(),
    )
}

fn texts<N: Copy>(rows: impl Iterator<Item = (String, N, N)>) -> Vec<(String, N, N)> {
    rows.collect()
}

fn v<N>(k: &str, o: N, b: N) -> (String, N, N) {
    (k.to_string(), o, b)
}

#[test]
fn merges_same_keys_and_sorts_by_bytes() {
    let sum = sites(&[("a", 1, 10), ("b", 2, 300), ("a", 3, 30), ("z", 0, 0)]);
    let rows = texts(sum.rows.iter().map(|r| (r.key.text(), r.objects, r.bytes)));
    assert_eq!(rows, vec![v("b", 2, 300), v("a", 4, 40)]);
    assert_eq!(sum.total(), (6, 340));
}

/// Two return addresses in one line of code are one site: frames that show the same name
/// are one group, whatever their addresses.
#[test]
fn frames_of_one_name_are_one_site() {
    let at = |addr| Frame {
        addr,
        offset: addr,
        ..Frame::from_name("leaf (a.c:3)")
    };
    let traces = [
        Trace::new(vec![at(0x10)], StackState::Off),
        Trace::new(vec![at(0x18)], StackState::Off),
    ];
    let blocks = vec![(1, block(10, 0, 0)), (2, block(20, 0, 1))];
    let s = summarize(
        &heap(&blocks, &traces, 0),
        &Filter::default(),
        GroupBy::Site,
    );
    assert_eq!(s.rows.len(), 1);
    assert_eq!((s.rows[0].objects, s.rows[0].bytes), (2, 30));
    assert_eq!(s.rows[0].key.text(), "leaf (a.c:3)");
}

#[test]
fn diff_keeps_only_changed_rows_signed() {
    let old = sites(&[("a", 4, 40), ("b", 2, 300), ("gone", 1, 8)]);
    let new = sites(&[("a", 4, 40), ("b", 5, 750), ("new", 1, 16)]);
    let d = diff(&old, &new);
    let rows = texts(d.rows.iter().map(|r| (r.key.text(), r.objects, r.bytes)));
    assert_eq!(
        rows,
        vec![v("b", 3, 450), v("new", 1, 16), v("gone", -1, -8)]
    );
    let a = sites(&[("a", 4, 40)]);
    assert!(diff(&a, &a.clone()).rows.is_empty());
}

#[test]
fn groups_by_site_function_stack_and_size() {
    let traces = [
        trace(&["leaf (a.c:3)", "a (a.c:10)"], StackState::Walked),
        trace(&["leaf (a.c:3)", "b (a.c:20)"], StackState::Walked),
        trace(&["leaf (a.c:4)"], StackState::Lost),
    ];
    let b = |size, trace| block(size, 0, trace);
    let blocks = vec![(1, b(10, 0)), (2, b(10, 0)), (3, b(30, 1)), (4, b(100, 2))];
    let heap = heap(&blocks, &traces, 0);
    let rows = |by| {
        texts(
            summarize(&heap, &Filter::default(), by)
                .rows
                .into_iter()
                .map(|r| (r.key.text(), r.objects, r.bytes)),
        )
    };
    assert_eq!(
        rows(GroupBy::Site),
        vec![v("leaf (a.c:4)", 1, 100), v("leaf (a.c:3)", 3, 50)]
    );
    assert_eq!(rows(GroupBy::Function), vec![v("leaf", 4, 150)]);
    assert_eq!(
        rows(GroupBy::Stack),
        vec![
            v("leaf (a.c:4) <- [stack lost]", 1, 100),
            v("leaf (a.c:3) <- b (a.c:20)", 1, 30),
            v("leaf (a.c:3) <- a (a.c:10)", 2, 20),
        ]
    );
    assert_eq!(
        rows(GroupBy::Size),
        vec![v("100 B", 1, 100), v("30 B", 1, 30), v("10 B", 2, 20)]
    );
}

/// Sampled blocks stand for 1/p blocks each: the figures are the weighted sums, rounded.
#[test]
fn sampled_figures_are_weighted() {
    let traces = [trace(&["leaf (a.c:3)"], StackState::Off)];
    let blocks = vec![(1, block(1000, 0, 0))];
    let mut h = heap(&blocks, &traces, 0);
    h.sample_bytes = 1000;
    // p = 1 - e^-1 = 0.632..., so one block of 1000 bytes stands for 1.58 blocks.
    let s = summarize(&h, &Filter::default(), GroupBy::Site);
    assert_eq!((s.rows[0].objects, s.rows[0].bytes), (2, 1582));
    let t = calltree::build(&h, &Filter::default());
    assert_eq!((t[0].objects, t[0].bytes), (2, 1582));
}

#[test]
fn two_paths_to_one_site_branch_with_exact_counts() {
    let traces = [
        trace(&["leaf", "a3", "a2", "main"], StackState::Walked),
        trace(&["leaf", "b3", "b2", "main"], StackState::Walked),
    ];
    let b = |size, trace| block(size, 0, trace);
    let blocks = vec![(1, b(8, 0)), (2, b(8, 0)), (3, b(100, 1))];
    let heap = heap(&blocks, &traces, 0);
    let roots = calltree::build(&heap, &Filter::default());
    assert_eq!(roots.len(), 1);
    let leaf = &roots[0];
    assert_eq!(
        (leaf.name.as_str(), leaf.objects, leaf.bytes),
        ("leaf", 3, 116)
    );
    let kids: Vec<_> = leaf
        .children
        .iter()
        .map(|c| (c.name.as_str(), c.objects, c.bytes))
        .collect();
    assert_eq!(kids, vec![("b3", 1, 100), ("a3", 2, 16)]);
    assert_eq!(leaf.children[1].children[0].children[0].name, "main");
    let one = calltree::build_for_block(&heap, 3).unwrap();
    assert_eq!((one.name.as_str(), one.objects), ("0x3", 1));
    assert_eq!(one.label, Label::Block(3));
    assert_eq!(one.children[0].children[0].name, "b3");
    assert!(calltree::build_for_block(&heap, 4).is_none());
}

/// Loss records: per kind and site, definitely lost first, indirect bytes on the leaders'
/// rows; lost blocks not yet confirmed by a second check only counted apart; blocks without a
/// verdict left out; `--kind` selects by verdict; the retention path is the lowest block's.
#[test]
fn leak_reports_add_verdicts_up_per_kind_and_site() {
    use crate::model::{CheckFacts, LeakKind, Verdict};
    let traces = [
        trace(&["lost (a.c:1)"], StackState::Walked),
        trace(&["kept (a.c:2)"], StackState::Walked),
    ];
    let with = |size, t, kind, indirect_bytes, confirmed| Block {
        leak: Some(Verdict {
            kind,
            indirect_bytes,
            confirmed,
        }),
        ..block(size, 0, t)
    };
    let blocks = vec![
        (0x100, with(10, 0, LeakKind::DefinitelyLost, 30, true)),
        (0x200, with(30, 0, LeakKind::IndirectlyLost, 0, true)),
        (0x300, with(5, 0, LeakKind::DefinitelyLost, 0, false)),
        (0x400, with(7, 1, LeakKind::Reachable, 0, true)),
        (0x500, with(9, 1, LeakKind::Reachable, 0, true)),
        (0x600, block(1000, 0, 1)),
    ];
    let h = heap(&blocks, &traces, 0);
    let path = |addr: u64| {
        vec![Step::Root {
            place: crate::model::Place::Tls { tid: 1 },
            at: addr,
        }]
    };
    let r = leak_report(
        &h,
        &Filter::default(),
        GroupBy::Site,
        CheckFacts::default(),
        Some(&path),
    );
    let rows: Vec<(LeakKind, String, u64, u64, u64)> = r
        .rows
        .iter()
        .map(|r| (r.kind, r.key.text(), r.objects, r.bytes, r.indirect_bytes))
        .collect();
    assert_eq!(
        rows,
        vec![
            (LeakKind::DefinitelyLost, "lost (a.c:1)".into(), 1, 10, 30),
            (LeakKind::IndirectlyLost, "lost (a.c:1)".into(), 1, 30, 0),
            (LeakKind::Reachable, "kept (a.c:2)".into(), 2, 16, 0),
        ]
    );
    assert_eq!(
        r.total(LeakKind::DefinitelyLost),
        Total {
            objects: 1,
            bytes: 10
        }
    );
    assert_eq!(
        r.unconfirmed,
        Total {
            objects: 1,
            bytes: 5
        }
    );
    let kept = &r.rows[2];
    assert_eq!(kept.retention, path(0x400));
    assert!(r.rows[0].retention.is_empty());
    let only = Filter {
        kind: Some(LeakKind::Reachable),
        ..Filter::default()
    };
    let r = leak_report(&h, &only, GroupBy::Site, CheckFacts::default(), None);
    assert_eq!(r.rows.len(), 1);
    assert_eq!(
        r.total(LeakKind::Reachable),
        Total {
            objects: 2,
            bytes: 16
        }
    );
    assert_eq!(summarize(&h, &only, GroupBy::Site).total(), (2, 16));
}

/// Paths main -> a -> leaf (2 x 10 B), main -> b -> leaf (30 B), main -> b (self, 5 B),
/// and one path cut short at b: the trees and b's neighbours add up exactly.
#[test]
fn call_graph_top_down_bottom_up_and_neighbours() {
    let traces = [
        trace(&["leaf", "a", "main"], StackState::Walked),
        trace(&["leaf", "b", "main"], StackState::Walked),
        trace(&["b", "main"], StackState::Walked),
        trace(&["leaf", "b"], StackState::Lost),
    ];
    let b = |size, trace| block(size, 0, trace);
    let blocks = vec![
        (1, b(10, 0)),
        (2, b(10, 0)),
        (3, b(30, 1)),
        (4, b(5, 2)),
        (5, b(7, 3)),
    ];
    let heap = heap(&blocks, &traces, 0);
    let all = Filter::default();
    let flat = |n: &Node| (n.name.clone(), n.objects, n.bytes);
    let down = top_down(&heap, &all);
    assert_eq!(
        down.iter().map(flat).collect::<Vec<_>>(),
        vec![v("main", 4, 55), v("[stack lost]", 1, 7)]
    );
    assert_eq!(
        down[0].children.iter().map(flat).collect::<Vec<_>>(),
        vec![v("b", 2, 35), v("a", 2, 20)]
    );
    assert_eq!(
        down[0].children[0]
            .children
            .iter()
            .map(flat)
            .collect::<Vec<_>>(),
        vec![v("leaf", 1, 30)]
    );
    let up = bottom_up(&heap, &all);
    assert_eq!(
        up.iter().map(flat).collect::<Vec<_>>(),
        vec![v("leaf", 4, 57), v("b", 1, 5)]
    );
    assert_eq!(
        up[0].children.iter().map(flat).collect::<Vec<_>>(),
        vec![v("b", 2, 37), v("a", 2, 20)]
    );
    let nb = neighbours(&heap, &all, "b");
    assert_eq!((nb.objects, nb.bytes), (3, 42));
    let edges = |e: &[callgraph::Neighbour]| {
        e.iter()
            .map(|n| (n.name.clone(), n.objects, n.bytes))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        edges(&nb.callers),
        vec![v("main", 2, 35), v("[stack lost]", 1, 7)]
    );
    assert_eq!(
        edges(&nb.callees),
        vec![v("leaf", 2, 37), v(callgraph::ALLOCATOR, 1, 5)]
    );
    // A filter narrows them; a function on no path has none.
    let only_a = Filter {
        site: Some(Regex::new("^a$").unwrap()),
        ..Filter::default()
    };
    assert_eq!(
        neighbours(&heap, &only_a, "b"),
        callgraph::Neighbours::default()
    );
    assert_eq!(
        edges(&neighbours(&heap, &only_a, "leaf").callers),
        vec![v("a", 2, 20)]
    );
}

/// A recursive function counts each block once among its callers and callees.
#[test]
fn recursion_counts_once_per_neighbour() {
    let traces = [trace(&["leaf", "r", "r", "r", "main"], StackState::Walked)];
    let blocks = vec![(1, block(8, 0, 0))];
    let heap = heap(&blocks, &traces, 0);
    let nb = neighbours(&heap, &Filter::default(), "r");
    assert_eq!((nb.objects, nb.bytes), (1, 8));
    let names = |e: &[callgraph::Neighbour]| {
        e.iter()
            .map(|n| (n.name.clone(), n.objects))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&nb.callers),
        vec![("main".to_string(), 1), ("r".to_string(), 1)]
    );
    assert_eq!(
        names(&nb.callees),
        vec![("leaf".to_string(), 1), ("r".to_string(), 1)]
    );
}

#[test]
fn each_grouping_is_found_by_its_name() {
    for g in GroupBy::ALL {
        assert_eq!(GroupBy::named(g.name()), Some(g));
    }
    assert_eq!(GroupBy::named("sites"), None);
}
