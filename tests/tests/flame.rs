//! Folded stacks and flame graphs (`--format folded|flamegraph`), live and from snapshots, and
//! the differential flame graph of two snapshots, against the ledgers of paths.c (two call paths
//! of known frames and bytes) and ages.c (a site that grows with its argument).

use std::path::Path;

use std::collections::BTreeMap;

use muppy_tests::{
    Run, ebpf_available, expected_rows, ledger, paths_stacks, scratch, trace, workload,
};
use quick_xml::{Reader, events::Event};

/// Folded lines as (frames root first, counts).
fn folded(run: &Run) -> Vec<(Vec<String>, Vec<u64>)> {
    assert_eq!(run.code, Some(0), "{run}");
    run.stdout
        .lines()
        .map(|l| {
            let mut parts: Vec<&str> = l.rsplitn(3, ' ').collect();
            parts.reverse();
            // `path count` or, from a diff, `path before after`.
            let counts_from = parts
                .iter()
                .position(|p| p.parse::<u64>().is_ok())
                .unwrap_or_else(|| panic!("no count in {l:?}\n{run}"));
            let path = parts[..counts_from].join(" ");
            let counts = parts[counts_from..]
                .iter()
                .map(|c| c.parse().unwrap_or_else(|_| panic!("bad count in {l:?}")))
                .collect();
            (path.split(';').map(str::to_string).collect(), counts)
        })
        .collect()
}

/// The lines whose path ends with `stack` (innermost first, as the ledger helpers give it).
fn ending_with<'a>(
    lines: &'a [(Vec<String>, Vec<u64>)],
    stack: &[String],
) -> Vec<&'a (Vec<String>, Vec<u64>)> {
    let tail: Vec<&String> = stack.iter().rev().collect();
    lines
        .iter()
        .filter(|(p, _)| {
            p.len() >= tail.len() && p[p.len() - tail.len()..].iter().eq(tail.iter().copied())
        })
        .collect()
}

/// Every `<title>` of an SVG, after checking it is well-formed XML.
fn svg_titles(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut r = Reader::from_str(&text);
    let (mut titles, mut in_title, mut depth, mut root) = (Vec::new(), false, 0i64, None);
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                root.get_or_insert(name.clone());
                in_title = name == "title";
            }
            Ok(Event::End(_)) => {
                depth -= 1;
                in_title = false;
            }
            Ok(Event::Text(t)) if in_title => {
                titles.push(t.decode().expect("utf-8").into_owned());
            }
            Ok(Event::GeneralRef(g)) if in_title => {
                // An escaped character in a name (`&lt;`): keep it in the title.
                let last = titles.last_mut().expect("a title before its reference");
                last.push_str(&format!("&{};", String::from_utf8_lossy(&g)));
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "{} is not XML at {}: {e}",
                file.display(),
                r.buffer_position()
            ),
        }
    }
    assert_eq!(depth, 0, "{}: unclosed elements", file.display());
    assert_eq!(root.as_deref(), Some("svg"), "{}", file.display());
    titles
}

/// `14400` as inferno writes counts: `14,400`.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn folded_stacks_are_root_first_with_each_paths_bytes_live_and_saved() {
    if !ebpf_available("folded_stacks_are_root_first_with_each_paths_bytes_live_and_saved") {
        return;
    }
    let dir = scratch("folded");
    let snap = dir.join("paths.muppy");
    let bin = workload("paths");
    let live = trace(
        &[
            "--format",
            "folded",
            "--save",
            snap.to_str().unwrap(),
            "--",
            bin.to_str().unwrap(),
        ],
        "",
    );
    let lines = folded(&live);
    for (stack, _, bytes) in paths_stacks() {
        let found = ending_with(&lines, &stack);
        assert_eq!(found.len(), 1, "{stack:?}\n{live}");
        let (path, counts) = found[0];
        assert_eq!(counts, &vec![bytes], "{live}");
        // Root first: main before the site, and the site is the leaf.
        assert_eq!(path.last(), Some(&stack[0]), "{live}");
        let main = path
            .iter()
            .position(|f| f.starts_with("main ("))
            .expect("main");
        assert_eq!(main + stack.len(), path.len(), "{live}");
    }
    let site = &ledger("paths")[0];
    let at_site: u64 = lines
        .iter()
        .filter(|(p, _)| p.last() == Some(&site.site))
        .map(|(_, c)| c[0])
        .sum();
    assert_eq!(at_site, site.bytes, "{live}");
    // The snapshot gives the same lines.
    let saved = trace(
        &["summary", snap.to_str().unwrap(), "--format", "folded"],
        "",
    );
    assert_eq!(saved.code, Some(0), "{saved}");
    assert_eq!(saved.stdout, live.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flame_graphs_are_svg_naming_each_frame_with_its_bytes() {
    if !ebpf_available("flame_graphs_are_svg_naming_each_frame_with_its_bytes") {
        return;
    }
    let dir = scratch("flamegraph");
    let (live_svg, saved_svg, _) =
        muppy_tests::live_and_saved(&dir, "paths", "flamegraph", "svg", &[]);
    for svg in [&live_svg, &saved_svg] {
        let titles = svg_titles(svg);
        // Every frame of each path, with that path's bytes (each frame but the site is on
        // one path only; the site is drawn once per path).
        for (stack, _, bytes) in paths_stacks() {
            for f in &stack {
                let want = format!("{f} ({} bytes, ", grouped(bytes));
                assert!(
                    titles.iter().any(|t| t.starts_with(&want)),
                    "{}: no title {want:?} in {titles:#?}",
                    svg.display()
                );
            }
        }
        assert!(
            titles
                .iter()
                .any(|t| t.starts_with("all (27,200 bytes, 100%)")),
            "{titles:#?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn diffs_of_snapshots_give_both_sides_and_a_differential_flame_graph() {
    if !ebpf_available("diffs_of_snapshots_give_both_sides_and_a_differential_flame_graph") {
        return;
    }
    let dir = scratch("flamediff");
    let bin = workload("ages");
    let save = |name: &str, count: &str| {
        let file = dir.join(name);
        let run = trace(
            &[
                "--save",
                file.to_str().unwrap(),
                "--",
                bin.to_str().unwrap(),
                count,
            ],
            "",
        );
        assert_eq!(run.code, Some(0), "{run}");
        file
    };
    let (a, b) = (save("a.muppy", "10"), save("b.muppy", "25"));
    let d = trace(
        &[
            "diff",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--format",
            "folded",
        ],
        "",
    );
    let lines = folded(&d);
    // ages.c: `old` holds 100 bytes per count; the two `young` sites do not change.
    let sites = ledger("ages");
    let at = |site: &str| -> Vec<u64> {
        let found: Vec<_> = lines
            .iter()
            .filter(|(p, _)| p.last().map(String::as_str) == Some(site))
            .collect();
        assert_eq!(found.len(), 1, "{site}\n{d}");
        assert!(
            found[0].0.iter().any(|f| f.starts_with("main (ages.c:")),
            "{d}"
        );
        found[0].1.clone()
    };
    assert_eq!(at(&sites[0].site), vec![1000, 2500], "{d}");
    assert_eq!(at(&sites[1].site), vec![1000, 1000], "{d}");
    assert_eq!(at(&sites[2].site), vec![12000, 12000], "{d}");
    let svg = dir.join("diff.svg");
    let run = trace(
        &[
            "diff",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--format",
            "flamegraph",
            "-o",
            svg.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let titles = svg_titles(&svg);
    // The grown site is drawn at its newer size, with its growth; the others with none.
    let grown = format!("{} (2,500 bytes, ", sites[0].site);
    let t = titles
        .iter()
        .find(|t| t.starts_with(&grown))
        .unwrap_or_else(|| panic!("no {grown:?} in {titles:#?}"));
    assert!(t.contains("; +"), "{t}");
    let same = format!("{} (12,000 bytes, ", sites[2].site);
    let t = titles
        .iter()
        .find(|t| t.starts_with(&same))
        .unwrap_or_else(|| panic!("no {same:?} in {titles:#?}"));
    assert!(!t.contains("; +") && !t.contains("; -"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn several_processes_head_their_paths_with_comm_and_pid() {
    if !ebpf_available("several_processes_head_their_paths_with_comm_and_pid") {
        return;
    }
    // forks.c: the parent keeps f_parent's blocks, a forked child f_child's, and another child
    // execs allocators, with its own ledger.
    let (forks, exec) = (workload("forks"), workload("allocators"));
    let run = trace(
        &[
            "--format",
            "folded",
            "--",
            forks.to_str().unwrap(),
            exec.to_str().unwrap(),
        ],
        "",
    );
    let lines = folded(&run);
    let parent: u32 = run
        .stderr
        .split("tracing pid ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no parent pid\n{run}"));
    // Bytes per (root frame, leaf site), for the sites of `ledger_of`.
    let per_leaf = |ledger_of: &str| -> BTreeMap<(String, String), u64> {
        let sites = expected_rows(&ledger(ledger_of));
        let mut m = BTreeMap::new();
        for (p, c) in &lines {
            let leaf = p.last().expect("a frame");
            if sites.contains_key(leaf) {
                *m.entry((p[0].clone(), leaf.clone())).or_default() += c[0];
            }
        }
        m
    };
    let f = per_leaf("forks");
    let want = expected_rows(&ledger("forks"));
    let (parent_site, child_site) = (&ledger("forks")[0].site, &ledger("forks")[1].site);
    let parent_root = format!("forks ({parent})");
    let child_roots: Vec<&String> = f
        .keys()
        .map(|(root, _)| root)
        .filter(|r| r.starts_with("forks (") && **r != parent_root)
        .collect();
    assert_eq!(child_roots.len(), 1, "{f:?}\n{run}");
    let child_root = child_roots[0].clone();
    assert_eq!(
        f,
        BTreeMap::from([
            ((parent_root, parent_site.clone()), want[parent_site].1),
            ((child_root, child_site.clone()), want[child_site].1),
        ]),
        "{run}"
    );
    let a = per_leaf("allocators");
    let want: BTreeMap<String, u64> = expected_rows(&ledger("allocators"))
        .into_iter()
        .map(|(site, (_, bytes))| (site, bytes))
        .collect();
    let roots: Vec<&String> = a.keys().map(|(root, _)| root).collect();
    assert!(
        roots.iter().all(|r| r.starts_with("allocators (")),
        "{roots:?}"
    );
    let got: BTreeMap<String, u64> = a.into_iter().map(|((_, site), b)| (site, b)).collect();
    assert_eq!(got, want, "{run}");
}

#[test]
fn leak_checks_fold_their_loss_records_under_the_kind() {
    if !ebpf_available("leak_checks_fold_their_loss_records_under_the_kind") {
        return;
    }
    let dir = scratch("flameleaks");
    let snap = dir.join("leaks.muppy");
    let bin = workload("leak_small");
    // Two blocks of 4242 bytes, the first lost when the second replaces it in g_keep, the
    // second when `drop` clears it: both definitely lost at the check at exit.
    let live = trace(
        &[
            "leaks",
            "--format",
            "folded",
            "--save",
            snap.to_str().unwrap(),
            "--",
            bin.to_str().unwrap(),
        ],
        "alloc\nalloc\ndrop\nexit\n",
    );
    let lines = folded(&live);
    assert_eq!(lines.len(), 1, "{live}");
    let (path, counts) = &lines[0];
    assert_eq!(path[0], "definitely lost", "{live}");
    assert!(
        path.iter().any(|f| f.starts_with("main (leak_small.c:")),
        "{live}"
    );
    assert!(
        path.last()
            .unwrap()
            .starts_with("small_alloc (leak_small.c:"),
        "{live}"
    );
    assert_eq!(counts, &vec![2 * 4242], "{live}");
    let saved = trace(&["leaks", snap.to_str().unwrap(), "--format", "folded"], "");
    assert_eq!(saved.code, Some(0), "{saved}");
    assert_eq!(saved.stdout, live.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}
