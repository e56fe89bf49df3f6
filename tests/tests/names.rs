//! Long names in tables (issue 16): `--width` fits a table in that many columns, shortening
//! names where they say least but keeping each row's module or file:line; `--full-names`,
//! JSON and piped output (no `--width`) keep them whole; `--demangle=no` shows symbols as the
//! files store them.
//!
//! On two programs: deep_names.cc (three allocation sites with templated names thousands of
//! characters long, and a ledger), and the toolchain's own rustc compiling a small crate, whose
//! sites are in librustc_driver (Rust) and libLLVM (C++).

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use muppy_tests::{Expected, Run, ebpf_available, ledger, rows, scratch, trace, workload};
use serde_json::Value;

/// The shortening mark a printer puts where it cut a name.
const ELLIPSIS: char = '…';

/// Runs muppy-trace with `args` on `-- CMD...`; asserts it exited 0.
fn traced(args: &[&str], cmd: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.push("--");
    all.extend(cmd);
    let run = trace(&all, "");
    assert_eq!(run.code, Some(0), "{run}");
    run
}

/// deep_names traced with `args`.
fn deep(args: &[&str]) -> Run {
    let bin = workload("deep_names");
    traced(args, &[bin.to_str().expect("path")])
}

/// Asserts that no line of stdout is wider than `width` characters.
fn fits(run: &Run, width: usize) {
    for line in run.stdout.lines() {
        assert!(
            line.chars().count() <= width,
            "a line of {} characters, over {width}:\n{line}\n{run}",
            line.chars().count()
        );
    }
}

/// `(file:line)` of a ledger entry: how its row ends.
fn place(e: &Expected) -> String {
    let at = e.site.rfind(" (").expect("ledger site");
    e.site[at + 1..].to_string()
}

/// A summary row: its full site name, objects and bytes.
type Row = (String, u64, u64);

/// The summary rows of deep_names's ledger sites, found by their file:line: per entry, its
/// row (None where no row is there).
fn ledger_sites(summary: &Value) -> Vec<(Expected, Option<Row>)> {
    let rows = rows(summary);
    ledger("deep_names")
        .into_iter()
        .map(|e| {
            let at = place(&e);
            let found: Vec<_> = rows
                .iter()
                .filter(|(site, _)| site.ends_with(&at))
                .collect();
            assert!(found.len() <= 1, "several rows at {at}: {found:?}");
            let row = found
                .first()
                .map(|(site, (objects, bytes))| ((*site).clone(), *objects, *bytes));
            (e, row)
        })
        .collect()
}

/// deep_names's live ledger sites, whole, as JSON names them.
fn deep_full_names() -> Vec<String> {
    let run = deep(&["--format", "json"]);
    ledger_sites(&run.summary())
        .into_iter()
        .filter(|(e, _)| e.objects > 0)
        .map(|(e, row)| {
            row.unwrap_or_else(|| panic!("no row for {}\n{run}", e.site))
                .0
        })
        .collect()
}

#[test]
fn deep_names_counts_are_exact_and_json_names_are_whole() {
    if !ebpf_available("deep_names_counts_are_exact_and_json_names_are_whole") {
        return;
    }
    // --width does not touch JSON.
    let run = deep(&["--format", "json", "--width", "80"]);
    let summary = run.summary();
    for (e, row) in ledger_sites(&summary) {
        if e.objects == 0 {
            assert!(
                row.is_none(),
                "{} should have no live row: {row:?}\n{run}",
                e.site
            );
            continue;
        }
        let (site, objects, bytes) =
            row.unwrap_or_else(|| panic!("no row at {}\n{run}", place(&e)));
        assert_eq!((objects, bytes), (e.objects, e.bytes), "{site}\n{run}");
        assert!(site.contains(&e.function), "{site} is not {}", e.function);
        assert!(
            site.contains("muppy_workload") || site.starts_with("void make_nodes<"),
            "{site}"
        );
        assert!(site.len() > 1000 && site.contains('<'), "not whole: {site}");
        assert!(!site.contains(ELLIPSIS), "shortened in JSON: {site}");
    }
}

#[test]
fn deep_names_fit_80_columns_and_keep_their_lines() {
    if !ebpf_available("deep_names_fit_80_columns_and_keep_their_lines") {
        return;
    }
    let run = deep(&["--width", "80"]);
    fits(&run, 80);
    for e in ledger("deep_names").iter().filter(|e| e.objects > 0) {
        let at = place(e);
        assert!(
            run.stdout.lines().any(|l| l.contains(&at)),
            "no row keeps {at}\n{run}"
        );
    }
    assert!(run.stdout.contains(ELLIPSIS), "nothing shortened\n{run}");
}

#[test]
fn full_names_and_piped_output_print_names_whole() {
    if !ebpf_available("full_names_and_piped_output_print_names_whole") {
        return;
    }
    let names = deep_full_names();
    // --full-names wins over --width; without --width a pipe has no width.
    for args in [&["--width", "80", "--full-names"][..], &[]] {
        let run = deep(args);
        for name in &names {
            assert!(
                run.stdout.contains(name.as_str()),
                "{args:?}: not whole: {name}\n{run}"
            );
        }
        assert!(!run.stdout.contains(ELLIPSIS), "{args:?}: shortened\n{run}");
    }
}

/// `muppy-trace ARGS` run on a terminal `cols` wide (a pseudo-terminal, from util-linux's
/// `script`), with `env` added: what it printed, lines without their `\r`.
fn on_terminal(cols: u32, env: &[(&str, &str)], args: &[&str]) -> String {
    let bin = muppy_tests::muppy_trace();
    let cmd = format!("stty cols {cols}; {} {}", bin.display(), args.join(" "));
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env_remove("COLUMNS")
        .envs(env.iter().copied())
        .output()
        .expect("run script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(out.status.success(), "{cmd}: {}\n{text}", out.status);
    text
}

#[test]
fn a_terminal_gets_its_width_or_columns() {
    if !ebpf_available("a_terminal_gets_its_width_or_columns") {
        return;
    }
    let dir = scratch("terminal_width");
    let snap = dir.join("deep.muppy");
    let snap_s = snap.display().to_string();
    deep(&["--save", &snap_s]);
    let widest = |text: &str| text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    let summary = ["summary", snap_s.as_str()];
    // The terminal's size.
    let text = on_terminal(70, &[], &summary);
    assert!(widest(&text) <= 70 && text.contains(ELLIPSIS), "{text}");
    // $COLUMNS over it; --width over both; --width 0, no limit.
    let text = on_terminal(70, &[("COLUMNS", "100")], &summary);
    assert!((71..=100).contains(&widest(&text)), "{text}");
    let text = on_terminal(
        70,
        &[("COLUMNS", "100")],
        &["summary", &snap_s, "--width", "90"],
    );
    assert!((71..=90).contains(&widest(&text)), "{text}");
    let text = on_terminal(70, &[], &["summary", &snap_s, "--width", "0"]);
    assert!(widest(&text) > 1000 && !text.contains(ELLIPSIS), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn demangle_no_shows_the_symbols() {
    if !ebpf_available("demangle_no_shows_the_symbols") {
        return;
    }
    let run = deep(&["--demangle=no", "--format", "json"]);
    for (e, row) in ledger_sites(&run.summary()) {
        if e.objects == 0 {
            continue;
        }
        let (site, objects, bytes) =
            row.unwrap_or_else(|| panic!("no row at {}\n{run}", place(&e)));
        assert_eq!((objects, bytes), (e.objects, e.bytes), "{site}\n{run}");
        assert!(site.starts_with("_Z"), "not a symbol: {site}");
        assert!(site.contains(&e.function), "{site} is not {}", e.function);
        assert!(
            !site.contains(' ') || site.find(' ') == site.rfind(" ("),
            "{site}"
        );
    }
    let table = deep(&["--demangle=no"]);
    assert!(table.stdout.contains("_ZN14muppy_workload"), "{table}");
    // A snapshot keeps the names it was saved with: asking otherwise is an error.
    let out = trace(&["summary", "/nonexistent.muppy", "--demangle=no"], "");
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stderr.contains("--demangle=no applies when tracing"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// rustc: Rust and LLVM's C++ in one process.

/// The toolchain's real rustc (not rustup's proxy): `$RUSTC`'s, or PATH's, sysroot's
/// `bin/rustc`.
fn real_rustc() -> PathBuf {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("run rustc --print sysroot");
    assert!(out.status.success(), "rustc --print sysroot failed");
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let real = PathBuf::from(sysroot).join("bin/rustc");
    assert!(real.exists(), "{} does not exist", real.display());
    real
}

/// A small crate with generics and a map, for rustc to compile with optimizations (so that
/// LLVM works): (rustc's arguments, the scratch folder to remove).
fn small_crate(test: &str) -> (Vec<String>, PathBuf) {
    let dir = scratch(test);
    let src = dir.join("lib.rs");
    std::fs::write(
        &src,
        r#"
use std::collections::{BTreeMap, HashMap};

pub struct Index<K, V> { by_key: HashMap<K, Vec<V>>, order: BTreeMap<usize, K> }

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Index<K, V> {
    pub fn new() -> Self { Index { by_key: HashMap::new(), order: BTreeMap::new() } }
    pub fn add(&mut self, k: K, v: V) {
        let n = self.order.len();
        self.order.entry(n).or_insert_with(|| k.clone());
        self.by_key.entry(k).or_default().push(v);
    }
    pub fn all(&self) -> Vec<V> { self.by_key.values().flatten().cloned().collect() }
}

pub fn words(text: &str) -> Index<String, usize> {
    let mut ix = Index::new();
    for (i, w) in text.split_whitespace().enumerate() { ix.add(w.to_lowercase(), i); }
    ix
}

pub fn total<T: Copy + Into<u64>>(xs: &[T]) -> u64 { xs.iter().map(|&x| x.into()).sum() }
"#,
    )
    .expect("write lib.rs");
    let args = vec![
        real_rustc().display().to_string(),
        "--edition".into(),
        "2021".into(),
        "-O".into(),
        "--crate-type".into(),
        "lib".into(),
        src.display().to_string(),
        "-o".into(),
        dir.join("libsmall.rlib").display().to_string(),
    ];
    (args, dir)
}

/// rustc traced with `args` compiling the small crate. Without stacks: rustc makes more
/// distinct call stacks than the map holds, and the sites are what the tests look at.
fn rustc_traced(test: &str, args: &[&str]) -> Run {
    let (cmd, dir) = small_crate(test);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let mut args = args.to_vec();
    args.push("--no-stacks");
    let run = traced(&args, &cmd);
    let _ = std::fs::remove_dir_all(dir);
    run
}

/// The module a full site name ends with, as a table must keep it: the file:line, or the
/// module file's name up to its first `.` or `-` (`libLLVM`, `librustc_driver`, `libc`).
fn module_of(site: &str) -> String {
    let inner = site
        .strip_suffix(')')
        .and_then(|s| s.rsplit_once(" ("))
        .map_or(site, |(_, inner)| inner);
    if let Some((_, line)) = inner.rsplit_once(':')
        && line.parse::<u32>().is_ok()
    {
        return inner.to_string();
    }
    let module = inner.split('+').next().unwrap_or(inner);
    module
        .split(['.', '-'])
        .next()
        .unwrap_or(module)
        .to_string()
}

/// The rows of the first table in a text report (between its `===` rule and its closing
/// lines), in order.
fn table_rows(text: &str) -> Vec<&str> {
    text.lines()
        .skip_while(|l| !l.starts_with('='))
        .skip(1)
        .take_while(|l| !l.starts_with("total:") && !l.starts_with("(top "))
        .collect()
}

#[test]
fn rustc_fits_80_columns_keeping_every_rows_module() {
    if !ebpf_available("rustc_fits_80_columns_keeping_every_rows_module") {
        return;
    }
    let dir = scratch("rustc_fits_80");
    let snap = dir.join("rustc.muppy");
    let snap_s = snap.display().to_string();
    let run = rustc_traced("rustc_fits_80_run", &["--width", "80", "--save", &snap_s]);
    fits(&run, 80);
    // The same rows, whole, from the snapshot of this very run.
    let json = trace(&["summary", &snap_s, "--format", "json"], "");
    assert_eq!(json.code, Some(0), "{json}");
    let summary = json.summary();
    let full: Vec<&str> = summary["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["site"].as_str().expect("site"))
        .collect();
    let shown = table_rows(&run.stdout);
    assert!(!shown.is_empty(), "no table\n{run}");
    assert!(
        full.iter().any(|s| s.contains("libLLVM")),
        "no LLVM site: {full:#?}"
    );
    for (i, row) in shown.iter().enumerate() {
        let module = module_of(full[i]);
        assert!(
            row.contains(&module),
            "row {i} lost its module {module:?}:\n{row}\nwhole: {}\n{run}",
            full[i]
        );
    }
    // The snapshot, offline, at another width.
    let offline = trace(&["summary", &snap_s, "--width", "100"], "");
    assert_eq!(offline.code, Some(0), "{offline}");
    fits(&offline, 100);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rustc_fits_120_columns() {
    if !ebpf_available("rustc_fits_120_columns") {
        return;
    }
    let run = rustc_traced("rustc_fits_120", &["--width", "120"]);
    fits(&run, 120);
    assert!(run.stdout.contains("libLLVM"), "{run}");
}

#[test]
fn rustc_json_names_are_whole() {
    if !ebpf_available("rustc_json_names_are_whole") {
        return;
    }
    let run = rustc_traced("rustc_json", &["--format", "json", "--width", "80"]);
    let summary = run.summary();
    let sites: BTreeMap<String, (u64, u64)> = rows(&summary);
    assert!(
        sites
            .keys()
            .any(|s| s.chars().count() > 120 && s.contains('<')),
        "no long templated name: {:#?}",
        sites.keys().collect::<Vec<_>>()
    );
    assert!(
        !sites.keys().any(|s| s.contains(ELLIPSIS)),
        "a name shortened in JSON"
    );
}
