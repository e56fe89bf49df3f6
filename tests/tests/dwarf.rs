//! Full call stacks without frame pointers, and stacks that last a long run (issue 13).
//!
//! `--unwind dwarf` copies the stack at each allocation and unwinds the copy with the modules'
//! `.eh_frame`; `--unwind auto` (the default) does so for callers in code without frame
//! pointers. Each stack travels in its allocation's own record, so none is lost however many
//! distinct ones a run makes. A stack that stops short ends with a marker saying why.
//!
//! - `nofp_paths` (paths.c built -O2 -fomit-frame-pointer): both paths whole, with dwarf and
//!   auto; the frame-pointer walk does not get to main (so the workload lacks them).
//! - Debian's python3.11 (no frame pointers), attached by pid: 1000 `bytes` objects of a known
//!   size, their stack through the interpreter's loop to its entry point.
//! - `many_paths`: 131,072 distinct transient stacks, then a leak whose stack is whole, with fp
//!   and dwarf.
//! - `unwind_cases`: a thread's small stack walked to its end, a recursion deeper than the
//!   copy, a signal handler's stack cut at the signal frame.

use std::{process::Command, process::Stdio, sync::OnceLock};

use muppy_tests::{
    Proc, Run, Tracing, ebpf_available, expected_rows, ledger, marked_frame, paths_stacks, send,
    state, trace, workload,
};
use serde_json::Value;

/// What a stack that stops short shows as its last element (`StackState::marker`).
const MARKERS: [&str; 6] = [
    "[stack deeper than the copy]",
    "[frame limit reached]",
    "[signal frame]",
    "[uprobes trampoline]",
    "[no unwind info]",
    "[stack lost]",
];

/// A row's stack, innermost first.
fn frames(row: &Value) -> Vec<String> {
    row["stack"]
        .as_array()
        .unwrap_or_else(|| panic!("no stack in {row}"))
        .iter()
        .map(|f| f.as_str().expect("frame name").to_string())
        .collect()
}

/// The function of a frame's name: `f (file:line)`, `f+0x1a (module)` → `f`.
fn function(frame: &str) -> &str {
    let name = frame.split(" (").next().unwrap_or(frame);
    name.split('+').next().unwrap_or(name)
}

/// `muppy-trace ARGS --group-by stack --format json -- BIN`, which must exit 0 with no stack
/// and no event lost; the run and its summary.
fn stacks_of(bin: &str, args: &[&str]) -> (Run, Value) {
    let bin = workload(bin);
    let mut all = args.to_vec();
    all.extend([
        "--group-by",
        "stack",
        "--format",
        "json",
        "--",
        bin.to_str().expect("path"),
    ]);
    let run = trace(&all, "");
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    assert_eq!(s["group_by"], "stack", "{run}");
    assert_eq!(s["lost_stacks"], 0, "{run}");
    assert_eq!(s["lost_events"], 0, "{run}");
    (run, s)
}

/// The rows whose site is in `function`.
fn rows_at<'a>(s: &'a Value, function: &str) -> Vec<&'a Value> {
    s["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| {
            r["site"]
                .as_str()
                .is_some_and(|f| self::function(f) == function)
        })
        .collect()
}

/// The one row of `function`'s site, which must have `objects` blocks of `bytes` in all.
fn one_row<'a>(run: &Run, s: &'a Value, function: &str, objects: u64, bytes: u64) -> &'a Value {
    let rows = rows_at(s, function);
    assert_eq!(rows.len(), 1, "one stack for {function}\n{run}");
    let row = rows[0];
    assert_eq!(
        (row["objects"].as_u64(), row["bytes"].as_u64()),
        (Some(objects), Some(bytes)),
        "{function}\n{run}"
    );
    row
}

/// Asserts that `stack` is `want`, then the frames of its callers (at least one, at most
/// `max_after`, each in module `module` if given), none a marker: a stack walked to its
/// outermost frame.
fn assert_whole(
    run: &Run,
    stack: &[String],
    want: &[String],
    max_after: usize,
    module: Option<&str>,
) {
    assert!(
        stack.len() > want.len() && stack[..want.len()] == want[..],
        "{stack:#?} does not start with {want:#?}\n{run}"
    );
    let after = &stack[want.len()..];
    assert!(
        after.len() <= max_after && after.iter().all(|f| !MARKERS.contains(&f.as_str())),
        "after {:?}, {after:#?}: not a walk to the outermost frame\n{run}",
        want.last()
    );
    if let Some(m) = module {
        // `f+0x1a (libc.so.6)`, or `[unknown] (libc.so.6+0x1a)` without symbols.
        let tag = format!("({m}");
        assert!(
            after.iter().all(|f| f.contains(&tag)),
            "after {:?}, {after:#?}: not all in {m}\n{run}",
            want.last()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// nofp_paths

/// Both paths of nofp_paths whole, up to main and past it through libc's start-up code to
/// `_start`, with `args`.
fn assert_nofp_paths_whole(args: &[&str]) {
    let (run, s) = stacks_of("nofp_paths", args);
    let rows = s["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{run}");
    for (row, (stack, objects, bytes)) in rows.iter().zip(paths_stacks()) {
        assert_eq!(row["site"], stack[0].as_str(), "{run}");
        assert_eq!(
            (row["objects"].as_u64(), row["bytes"].as_u64()),
            (Some(objects), Some(bytes)),
            "{run}"
        );
        // Above main: __libc_start_call_main, __libc_start_main, _start.
        assert_whole(&run, &frames(row), &stack, 4, None);
    }
}

#[test]
fn dwarf_walks_code_without_frame_pointers_to_main() {
    if !ebpf_available("dwarf_walks_code_without_frame_pointers_to_main") {
        return;
    }
    assert_nofp_paths_whole(&["--unwind", "dwarf"]);
}

#[test]
fn auto_copies_stacks_for_code_without_frame_pointers() {
    if !ebpf_available("auto_copies_stacks_for_code_without_frame_pointers") {
        return;
    }
    assert_nofp_paths_whole(&[]);
}

#[test]
fn frame_pointer_walk_cannot_cross_nofp_paths() {
    if !ebpf_available("frame_pointer_walk_cannot_cross_nofp_paths") {
        return;
    }
    // What makes the two tests above mean something: this code keeps no frame pointers, so
    // walking them stops before a2, whatever it finds instead. The sites stay exact.
    let (run, s) = stacks_of("nofp_paths", &["--unwind", "fp"]);
    let rows = rows_at(&s, "make_node");
    let objects: u64 = rows.iter().filter_map(|r| r["objects"].as_u64()).sum();
    let bytes: u64 = rows.iter().filter_map(|r| r["bytes"].as_u64()).sum();
    assert_eq!((objects, bytes), (500, 27200), "{run}");
    for (stack, _, _) in paths_stacks() {
        for row in &rows {
            let got = frames(row);
            assert!(
                stack[2..].iter().all(|f| !got.contains(f)),
                "the frame-pointer walk found one of {:?}: does nofp_paths keep frame \
                 pointers?\n{run}",
                &stack[2..]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// python3.11, attached by pid

/// Debian's python3.11: built -O2 without frame pointers, its symbols exported (.dynsym).
const PYTHON: &str = "/usr/bin/python3.11";

/// Says `ready`, waits for a line, then keeps 1000 `bytes` objects of `argv[1]` bytes each
/// (computed, not a constant the compiler could fold into one shared object), says `done`,
/// and for each further line says how many it still holds.
const PY_HOLDER: &str = r#"
import sys
size = int(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
keep = [b"x" * size for _ in range(1000)]
print("done", flush=True)
for _ in sys.stdin:
    print("holding", len(keep), sum(map(len, keep)), flush=True)
"#;

#[test]
fn python_attached_by_pid_shows_the_interpreter_stack() {
    if !ebpf_available("python_attached_by_pid_shows_the_interpreter_stack") {
        return;
    }
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "{PYTHON} is missing: run `cargo xtask setup`, which installs Debian's python3.11"
    );
    let mut py = Proc::spawn(
        Command::new(PYTHON)
            .args(["-I", "-c", PY_HOLDER, "1000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
        "python3.11",
    );
    let out = py.stdout();
    let mut input = py.stdin();
    out.wait_for("ready", 60);
    let pid = py.pid().to_string();
    // --duration bounds the session; it ends once the objects are made.
    let tracing = Tracing::start(&[
        "--pid",
        &pid,
        "--group-by",
        "stack",
        "--format",
        "json",
        "--duration",
        "120",
    ]);
    send(&mut input, "go");
    out.wait_for("done", 60);
    let run = tracing.interrupt(60);
    assert_eq!(run.code, Some(0), "{run}");
    let s = run.summary();
    assert_eq!(s["lost_stacks"], 0, "{run}");
    assert_eq!(s["lost_events"], 0, "{run}");
    // b"x" * 1000: a PyBytesObject, 33 bytes of header (the last its terminating NUL) and the
    // 1000 bytes; over pymalloc's 512-byte limit, so each is one malloc of exactly 1033.
    let rows: Vec<&Value> = s["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["objects"] == 1000 && r["bytes"] == 1_033_000)
        .collect();
    assert_eq!(rows.len(), 1, "one row of 1000 blocks of 1033 bytes\n{run}");
    let stack = frames(rows[0]);
    let has = |f: &str| stack.iter().any(|x| function(x) == f);
    assert!(
        has("_PyEval_EvalFrameDefault") && (has("Py_BytesMain") || has("main")),
        "the stack does not reach the interpreter's entry: {stack:#?}\n{run}"
    );
    // Through libc's start-up code to _start, where the rules say the stack ends.
    assert!(
        stack.last().is_some_and(|f| !MARKERS.contains(&f.as_str())),
        "the stack stops short: {stack:#?}\n{run}"
    );
    // The target goes on as it was, holding its objects.
    assert!(py.running(), "python3.11 ended\n{run}");
    assert!(
        !matches!(state(py.pid()), Some('t' | 'T')),
        "python3.11 left stopped\n{run}"
    );
    send(&mut input, "still there?");
    out.wait_for("holding 1000 1000000", 30);
    py.kill();
}

// ---------------------------------------------------------------------------------------------
// many_paths

/// 131,072 distinct stacks come and go, then a leak's stack is whole, with `args`.
fn assert_leak_after_many_stacks(args: &[&str]) {
    let (run, s) = stacks_of("many_paths", args);
    let want = &ledger("many_paths")
        .into_iter()
        .find(|e| e.function == "keep_c")
        .expect("keep_c's ledger");
    let row = one_row(&run, &s, "keep_c", want.objects, want.bytes);
    let stack = [
        want.site.clone(),
        marked_frame("many_paths", "keep_b", "keep_b"),
        marked_frame("many_paths", "keep_a", "keep_a"),
        marked_frame("many_paths", "main", "main"),
    ];
    let got = frames(row);
    assert!(
        got.len() > stack.len() && got[..stack.len()] == stack[..],
        "{got:#?} does not start with {stack:#?}\n{run}"
    );
    // Nothing else of the workload's is live: the transient blocks were all freed.
    let mine: Vec<&Value> = s["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| frames(r).iter().any(|f| f.contains("many_paths.c:")))
        .collect();
    assert_eq!(mine, vec![row], "{run}");
}

#[test]
fn many_transient_stacks_then_a_leak_with_frame_pointers() {
    if !ebpf_available("many_transient_stacks_then_a_leak_with_frame_pointers") {
        return;
    }
    assert_leak_after_many_stacks(&["--unwind", "fp"]);
}

#[test]
fn many_transient_stacks_then_a_leak_with_dwarf() {
    if !ebpf_available("many_transient_stacks_then_a_leak_with_dwarf") {
        return;
    }
    // 131,072 allocations in ≈1 s, each with 8 to 12 KiB of stack: ≈1.3 GB through the
    // ring. At the default 16 MiB the reader, sharing two cores, sometimes fell behind (546
    // events and 302 stacks lost in one run of several); 64 MiB holds ≈6,000 copies, and lost
    // none in runs beside two busy loops. What is tested is that no stack is lost to a
    // table's size, not how fast one core can unwind.
    assert_leak_after_many_stacks(&["--unwind", "dwarf", "--ring-mb", "64"]);
}

// ---------------------------------------------------------------------------------------------
// unwind_cases: one traced run, checked by three tests

/// The run of unwind_cases with `--unwind dwarf`, made once for the three tests: every site of
/// its ledger has its exact blocks, each in one row (one stack).
fn unwind_cases() -> &'static (Run, Value) {
    static RUN: OnceLock<(Run, Value)> = OnceLock::new();
    RUN.get_or_init(|| {
        let (run, s) = stacks_of("unwind_cases", &["--unwind", "dwarf"]);
        for (site, (objects, bytes)) in expected_rows(&ledger("unwind_cases")) {
            one_row(&run, &s, function(&site), objects, bytes);
            assert_eq!(rows_at(&s, function(&site))[0]["site"], site, "{run}");
        }
        (run, s)
    })
}

/// The frame of `function` at the line marked `marker` in unwind_cases.c.
fn case_frame(function: &str, marker: &str) -> String {
    marked_frame("unwind_cases", function, marker)
}

/// The stack of the one row at `function`'s site.
fn case_stack(function: &str) -> Vec<String> {
    let (run, s) = unwind_cases();
    let rows = rows_at(s, function);
    assert_eq!(rows.len(), 1, "{run}");
    frames(rows[0])
}

/// The ledger's site of `function` in unwind_cases.c.
fn case_site(function: &str) -> String {
    ledger("unwind_cases")
        .into_iter()
        .find(|e| e.function == function)
        .unwrap_or_else(|| panic!("no ledger line for {function}"))
        .site
}

#[test]
fn a_small_thread_stack_is_walked_to_its_end() {
    if !ebpf_available("a_small_thread_stack_is_walked_to_its_end") {
        return;
    }
    let (run, _) = unwind_cases();
    // The thread's start function, then libc's start_thread and clone3, where the stack
    // ends: the copy stopped at the top of the 64 KiB stack without a fault.
    assert_whole(
        run,
        &case_stack("shallow_site"),
        &[
            case_site("shallow_site"),
            case_frame("small_thread", "thread_shallow"),
        ],
        2,
        Some("libc.so.6"),
    );
    assert_whole(
        run,
        &case_stack("deep_site"),
        &[
            case_site("deep_site"),
            case_frame("deep2", "deep2"),
            case_frame("deep1", "deep1"),
            case_frame("small_thread", "thread_deep"),
        ],
        2,
        Some("libc.so.6"),
    );
}

#[test]
fn a_recursion_deeper_than_the_copy_keeps_its_innermost_frames() {
    if !ebpf_available("a_recursion_deeper_than_the_copy_keeps_its_innermost_frames") {
        return;
    }
    let (run, _) = unwind_cases();
    let stack = case_stack("bottom_site");
    let recurse = case_frame("recurse", "recurse");
    assert_eq!(stack[0], case_site("bottom_site"), "{run}");
    assert_eq!(stack[1], case_frame("recurse", "recurse_bottom"), "{run}");
    let (last, middle) = stack[2..].split_last().expect("frames");
    assert_eq!(last, "[stack deeper than the copy]", "{run}");
    assert!(middle.iter().all(|f| *f == recurse), "{stack:#?}\n{run}");
    // Each frame of recurse is 272 bytes (its 256-byte pad, the return address and
    // alignment), so the 8 KiB copied, at least, hold 30 of them; 2,000 never fit, and far
    // fewer than the frame limit (128) do.
    assert!(
        (28..120).contains(&middle.len()),
        "{} frames of recurse in 8 KiB: {stack:#?}\n{run}",
        middle.len() + 1
    );
}

#[test]
fn a_signal_handler_stack_ends_at_the_signal_frame() {
    if !ebpf_available("a_signal_handler_stack_ends_at_the_signal_frame") {
        return;
    }
    let (run, _) = unwind_cases();
    assert_eq!(
        case_stack("handler_site"),
        vec![
            case_site("handler_site"),
            case_frame("on_usr1", "on_usr1"),
            "[signal frame]".to_string(),
        ],
        "{run}"
    );
}
