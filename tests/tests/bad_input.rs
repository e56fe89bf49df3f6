//! Bad input: a one-line error on stderr and a non-zero exit, never a panic.

use muppy_tests::{Run, ebpf_available, trace, workload};

fn assert_one_line_error(run: &Run, needle: &str) {
    assert_eq!(run.code, Some(2), "{run}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run}");
    assert!(lines[0].starts_with("muppy-trace: "), "{run}");
    assert!(lines[0].contains(needle), "wanted {needle:?}\n{run}");
    assert!(!run.stderr.contains("panicked"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
}

#[test]
fn bad_flags() {
    // Flag errors come before anything needs root.
    assert_one_line_error(
        &trace(&["--top", "many", "--pid", "1"], ""),
        "invalid value 'many'",
    );
    assert_one_line_error(&trace(&["--bogus"], ""), "unexpected argument '--bogus'");
    assert_one_line_error(
        &trace(&["--pid", "1", "--", "ls"], ""),
        "cannot be used with",
    );
    assert_one_line_error(&trace(&["--duration=-3", "--pid", "1"], ""), "--duration");
    assert_one_line_error(
        &trace(&["--ring-mb", "3", "--pid", "1"], ""),
        "power of two",
    );
    assert_one_line_error(
        &trace(&["--stack-bytes", "5000", "--pid", "1"], ""),
        "--stack-bytes takes 4K, 8K, 16K or 32K, not 5000",
    );
    assert_one_line_error(
        &trace(&["--unwind", "lbr", "--pid", "1"], ""),
        "invalid value 'lbr'",
    );
}

#[test]
fn nothing_to_trace() {
    if !ebpf_available("nothing_to_trace") {
        return;
    }
    assert_one_line_error(&trace(&[], ""), "say what to trace");
}

#[test]
fn missing_pid() {
    if !ebpf_available("missing_pid") {
        return;
    }
    assert_one_line_error(
        &trace(&["--pid", "999999999"], ""),
        "no process with pid 999999999",
    );
}

#[test]
fn kernel_thread() {
    if !ebpf_available("kernel_thread") {
        return;
    }
    // pid 2 is kthreadd on Linux.
    assert_one_line_error(&trace(&["--pid", "2"], ""), "pid 2 is a kernel thread");
}

#[test]
fn missing_command() {
    if !ebpf_available("missing_command") {
        return;
    }
    assert_one_line_error(
        &trace(&["--", "no-such-command-muppy"], ""),
        "command not found",
    );
}

#[test]
fn stripped_static_binary_has_no_allocator_to_probe() {
    if !ebpf_available("stripped_static_binary_has_no_allocator_to_probe") {
        return;
    }
    // With its symbol table, a static binary is traced (tests/allocators.rs); stripped, its
    // malloc cannot be found.
    let bin = workload("static_hello_stripped");
    assert_one_line_error(
        &trace(&["--", bin.to_str().unwrap()], ""),
        "static_hello_stripped (statically linked) defines no malloc: nothing to probe; is it stripped?",
    );
}

#[test]
fn without_root_says_to_use_sudo() {
    // As root, drop to nobody for this one run (setpriv, from util-linux); without root, the
    // plain run is already the case. The binary is copied where nobody may run it.
    let dir = muppy_tests::scratch("noroot");
    let bin = dir.join("muppy-trace");
    std::fs::copy(muppy_tests::muppy_trace(), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    for p in [&dir, &bin] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        std::process::Command::new(&bin)
    };
    let run = Run::from_output(cmd.args(["--", "true"]).output().expect("run muppy-trace"));
    let _ = std::fs::remove_dir_all(&dir);
    assert_one_line_error(&run, "eBPF probes need root: run it with sudo");
}

/// `leaks` and `refs` refuse what they cannot check with one line, leaving it untouched: a
/// kernel thread, a zombie, a pid that does not exist, flags that do not apply.
#[test]
fn leak_checks_refuse_what_they_cannot_check() {
    if !ebpf_available("leak_checks_refuse_what_they_cannot_check") {
        return;
    }
    for sub in ["leaks", "refs"] {
        let at = |args: &[&str]| -> Vec<String> {
            let mut v = vec![sub.to_string()];
            if sub == "refs" {
                v.extend(["--addr".to_string(), "0x1000".to_string()]);
            }
            v.extend(args.iter().map(|a| (*a).to_string()));
            v
        };
        let run = |args: &[&str]| {
            let a = at(args);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            trace(&a, "")
        };
        assert_one_line_error(&run(&["--pid", "2"]), "pid 2 is a kernel thread");
        assert_one_line_error(
            &run(&["--pid", "999999999"]),
            "no process with pid 999999999",
        );
        assert_one_line_error(&run(&["--all"]), "one process");
        assert_one_line_error(
            &run(&["--sample-bytes", "64K", "--pid", "1"]),
            "needs every block",
        );
        // A zombie: a child that has exited and that its parent does not reap.
        let mut parent = std::process::Command::new("sh")
            .args(["-c", "true & exec sleep 30"])
            .spawn()
            .expect("sh");
        let zombie = (0..200)
            .find_map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                let kids =
                    std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", parent.id()))
                        .ok()?;
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok())
                    .find(|k| {
                        std::fs::read_to_string(format!("/proc/{k}/stat"))
                            .is_ok_and(|s| s.contains(") Z "))
                    })
            })
            .expect("the unreaped child becomes a zombie");
        let pid = zombie.to_string();
        assert_one_line_error(&run(&["--pid", &pid]), "is a zombie");
        let _ = parent.kill();
        let _ = parent.wait();
    }
    assert_one_line_error(
        &trace(&["summary", "/dev/null", "--kind", "definitely_lost"], ""),
        "not a muppy snapshot",
    );
}

#[test]
fn program_formats_refuse_a_terminal_and_intervals() {
    // A pseudo-terminal on stdout (util-linux's script): a profile, an SVG or a page would be
    // noise there. The refusal comes before the snapshot is read.
    for format in ["pprof", "flamegraph", "html"] {
        let cmd = format!(
            "{} summary /nonexistent.muppy --format {format}",
            muppy_tests::muppy_trace().display()
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .expect("script");
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(
            lines[0].trim_end(),
            format!(
                "muppy-trace: --format {format} is not for a terminal: write it to a file with -o FILE, or pipe it"
            ),
        );
        assert!(!out.status.success(), "{text}");
    }
    // Piped, it gets as far as the missing file.
    assert_one_line_error(
        &trace(&["summary", "/nonexistent.muppy", "--format", "pprof"], ""),
        "/nonexistent.muppy",
    );
    // A run that fails before the report is written leaves no empty -o file behind.
    let out = muppy_tests::scratch("program_formats_refuse").join("p.pb.gz");
    let out_arg = out.to_str().unwrap();
    assert_one_line_error(
        &trace(
            &[
                "summary",
                "/nonexistent.muppy",
                "--format",
                "pprof",
                "-o",
                out_arg,
            ],
            "",
        ),
        "/nonexistent.muppy",
    );
    assert!(!out.exists(), "{} was left behind", out.display());
    assert_one_line_error(
        &trace(&["--format", "html", "--interval", "1", "--pid", "1"], ""),
        "--interval prints diffs as tables or JSON; --format html writes one report at the end",
    );
    assert_one_line_error(
        &trace(
            &[
                "summary",
                "/dev/null",
                "--format",
                "folded",
                "-o",
                "/nonexistent-dir/f",
            ],
            "",
        ),
        "-o: cannot create /nonexistent-dir/f",
    );
}
