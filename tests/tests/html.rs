//! The HTML report (`--format html`), live and from a snapshot, loaded in headless Chromium: the
//! page's script runs without a console error, sorts its tables (its own check), and the DOM
//! holds the ledger's rows and call tree of paths.c with their exact figures. The page names no
//! other place, so it makes no request.

use std::{path::Path, process::Command};

use muppy_tests::{ebpf_available, ledger, paths_stacks, scratch, trace, workload};

/// The DOM of `page` after its script ran, and Chromium's log.
fn chromium_dom(page: &Path, scratch_dir: &Path) -> (String, String) {
    let profile = scratch_dir.join(format!(
        "chromium-profile-{}",
        page.file_stem().unwrap().to_string_lossy()
    ));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            &format!("file://{}", page.display()),
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("chromium could not run ({e}): `cargo xtask setup` installs it (apt chromium)")
        });
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {log}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), log)
}

/// The rows of the table with this id: each row's cells' `data-value`s.
fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom
        .find(&format!("<table class=\"sortable\" id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table {id} in\n{dom}"));
    let table = &dom[start..start + dom[start..].find("</table>").expect("table end")];
    table
        .split("<tr class=\"row\">")
        .skip(1)
        .map(|row| {
            row.split("data-value=\"")
                .skip(1)
                .map(|v| v[..v.find('"').expect("attribute end")].to_string())
                .collect()
        })
        .collect()
}

#[test]
fn html_page_loads_in_chromium_with_the_ledger_rows() {
    if !ebpf_available("html_page_loads_in_chromium_with_the_ledger_rows") {
        return;
    }
    let dir = scratch("html");
    let (live, saved, _) = muppy_tests::live_and_saved(&dir, "paths", "html", "html", &[]);
    let site = &ledger("paths")[0];
    for page in [&live, &saved] {
        let text = std::fs::read_to_string(page).unwrap();
        for net in ["http://", "https://", "<link", "src="] {
            assert!(!text.contains(net), "{}: has {net:?}", page.display());
        }
        let (dom, log) = chromium_dom(page, &dir);
        for line in log.lines() {
            assert!(
                !(line.contains("CONSOLE") || line.contains("Uncaught")),
                "{}: console output: {line}\n{log}",
                page.display()
            );
        }
        assert!(
            dom.contains("data-ready=\"1\""),
            "the script did not run\n{dom}"
        );
        assert!(
            dom.contains("data-selfcheck=\"ok\""),
            "the tables did not sort\n{dom}"
        );
        let pid = dom
            .split("<section class=\"process\" id=\"process-")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("no process section\n{dom}"))
            .to_string();
        let rows = table_rows(&dom, &format!("summary-{pid}"));
        let want = vec![
            site.site.clone(),
            site.objects.to_string(),
            site.bytes.to_string(),
        ];
        assert!(rows.contains(&want), "{rows:?}, want {want:?}");
        // Largest first again once the self-check is done.
        assert_eq!(rows[0], want, "{rows:?}");
        assert!(dom.contains(&format!(
            "<span id=\"bytes-{pid}\">{}</span>",
            rows.iter().map(|r| r[2].parse::<u64>().unwrap()).sum::<u64>()
        )));
        // The call tree: the site, then each path's callers with that path's figures.
        let node = |name: &str, objects: u64, bytes: u64| {
            format!("{name} <span class=\"fig\">{objects} objects, {bytes} bytes</span>")
        };
        assert!(
            dom.contains(&format!(
                "<details class=\"node\"><summary>{}</summary>",
                node(&site.site, site.objects, site.bytes)
            )),
            "{dom}"
        );
        for (stack, objects, bytes) in paths_stacks() {
            for f in &stack[1..] {
                assert!(dom.contains(&node(f, objects, bytes)), "{f}\n{dom}");
            }
        }
        // The flame graph, inline.
        assert!(dom.contains("<svg"), "{dom}");
        for (stack, _, bytes) in paths_stacks() {
            let title = format!(
                "<title>{} ({},{:03} bytes, ",
                stack[1],
                bytes / 1000,
                bytes % 1000
            );
            assert!(dom.contains(&title), "{title}\n{dom}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn html_page_of_a_leak_check_snapshot_shows_the_leak_kinds() {
    if !ebpf_available("html_page_of_a_leak_check_snapshot_shows_the_leak_kinds") {
        return;
    }
    let dir = scratch("html-leaks");
    let (snap, page) = (dir.join("leaks.muppy"), dir.join("leaks.html"));
    let bin = workload("leak_small");
    // Two blocks of 4242 bytes, the first lost when the second replaces it in g_keep, the
    // second when `drop` clears it: both definitely lost at the check at exit.
    let run = trace(
        &[
            "leaks",
            "--save",
            snap.to_str().unwrap(),
            "--",
            bin.to_str().unwrap(),
        ],
        "alloc\nalloc\ndrop\nexit\n",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let run = trace(
        &[
            "summary",
            snap.to_str().unwrap(),
            "--format",
            "html",
            "-o",
            page.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let (dom, log) = chromium_dom(&page, &dir);
    assert!(
        !log.contains("CONSOLE") && !log.contains("Uncaught"),
        "{log}"
    );
    assert!(dom.contains("data-selfcheck=\"ok\""), "{dom}");
    let pid = dom
        .split("data-pid=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a process section")
        .to_string();
    let kinds = table_rows(&dom, &format!("leak-kinds-{pid}"));
    let row = |k: &str, o: u64, b: u64| vec![k.to_string(), o.to_string(), b.to_string()];
    // In report order, not sorted by the page's own check.
    assert_eq!(
        kinds,
        vec![
            row("definitely lost", 2, 2 * 4242),
            row("indirectly lost", 0, 0),
            row("possibly lost", 0, 0),
            row("still reachable", 0, 0),
        ],
        "{dom}"
    );
    // One loss record, at the allocating line.
    let records = table_rows(&dom, &format!("leaks-{pid}"));
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0][1].starts_with("small_alloc (leak_small.c:"),
        "{records:?}"
    );
    assert_eq!(records[0][0], "definitely lost", "{records:?}");
    assert_eq!(records[0][2..], ["2".to_string(), "8484".to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn html_page_of_several_processes_has_their_table_and_a_section_each() {
    if !ebpf_available("html_page_of_several_processes_has_their_table_and_a_section_each") {
        return;
    }
    let dir = scratch("html-procs");
    let page = dir.join("procs.html");
    // forks.c: the parent, a forked child, and a child that execs allocators.
    let (forks, exec) = (workload("forks"), workload("allocators"));
    let run = trace(
        &[
            "--format",
            "html",
            "-o",
            page.to_str().unwrap(),
            "--",
            forks.to_str().unwrap(),
            exec.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let (dom, log) = chromium_dom(&page, &dir);
    assert!(
        !log.contains("CONSOLE") && !log.contains("Uncaught"),
        "{log}"
    );
    assert!(dom.contains("data-selfcheck=\"ok\""), "{dom}");
    let procs = table_rows(&dom, "processes");
    assert_eq!(procs.len(), 3, "{procs:?}");
    let mut comms: Vec<&str> = procs.iter().map(|r| r[1].as_str()).collect();
    comms.sort_unstable();
    assert_eq!(comms, ["allocators", "forks", "forks"], "{procs:?}");
    let mut total = 0;
    for r in &procs {
        assert_eq!(r[2], "exited with code 0", "{procs:?}");
        let pid = &r[0];
        // Its section, whose summary adds up to its row.
        assert!(dom.contains(&format!("data-pid=\"{pid}\"")), "{pid}\n{dom}");
        let bytes: u64 = table_rows(&dom, &format!("summary-{pid}"))
            .iter()
            .map(|row| row[2].parse::<u64>().unwrap())
            .sum();
        assert_eq!(bytes.to_string(), r[4], "{pid}: {procs:?}");
        total += bytes;
    }
    assert!(
        dom.contains(&format!("<span id=\"bytes-all\">{total}</span>")),
        "{dom}"
    );
    // The ledger's sites, in their processes' tables.
    let forks_sites = muppy_tests::expected_rows(&ledger("forks"));
    let found = forks_sites.iter().all(|(site, (objects, bytes))| {
        procs.iter().any(|r| {
            table_rows(&dom, &format!("summary-{}", r[0])).contains(&vec![
                site.clone(),
                objects.to_string(),
                bytes.to_string(),
            ])
        })
    });
    assert!(found, "{forks_sites:?}\n{dom}");
    let _ = std::fs::remove_dir_all(&dir);
}
