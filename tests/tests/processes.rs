//! Several processes: children followed through fork and exec (each with its own table and,
//! after exec, its own allocator), short-lived commands, and targets in a container.

use std::collections::BTreeMap;

use muppy_tests::{
    Run, ebpf_available, expected_rows, ledger, ledger_rows, rows_in, trace, workload,
};
use serde_json::Value;

/// The key of a process line's summary in [`report`]'s map.
fn key(process: &Value) -> (u64, String) {
    (
        process["pid"].as_u64().unwrap(),
        process["comm"].as_str().unwrap().to_string(),
    )
}

/// The ledger rows of `source` for the sites in `functions`.
fn expected_for(source: &str, functions: &[&str]) -> BTreeMap<String, (u64, u64)> {
    let l: Vec<_> = ledger(source)
        .into_iter()
        .filter(|e| functions.contains(&e.function.as_str()))
        .collect();
    expected_rows(&l)
}

/// Runs `cmd` under muppy-trace with `flags` and JSON output; it must exit 0.
fn launched(flags: &[&str], cmd: &[&str]) -> Run {
    let mut args = flags.to_vec();
    args.extend(["--format", "json", "--"]);
    args.extend_from_slice(cmd);
    let run = trace(&args, "");
    assert_eq!(run.code, Some(0), "{run}");
    run
}

/// The `process` lines and the per-process `summary` lines of a multi-process JSON report,
/// the summaries by the (pid, comm) of their process image (an exec makes a second image
/// under one pid).
fn report(run: &Run) -> (Vec<Value>, BTreeMap<(u64, String), Value>) {
    let lines = run.json();
    let last = lines.last().unwrap_or_else(|| panic!("no output\n{run}"));
    assert_eq!(last["type"], "processes", "{run}");
    assert_eq!(last["lost_events"], 0, "{run}");
    let procs: Vec<Value> = lines
        .iter()
        .filter(|l| l["type"] == "process")
        .cloned()
        .collect();
    let sums = lines
        .iter()
        .filter(|l| l["type"] == "summary")
        .map(|l| {
            let key = (
                l["pid"].as_u64().unwrap(),
                l["comm"].as_str().unwrap().to_string(),
            );
            (key, l.clone())
        })
        .collect();
    (procs, sums)
}

#[test]
fn children_get_their_own_tables_through_fork_and_exec() {
    if !ebpf_available("children_get_their_own_tables_through_fork_and_exec") {
        return;
    }
    let (forks, exec) = (workload("forks"), workload("allocators_tcmalloc"));
    let run = launched(&[], &[forks.to_str().unwrap(), exec.to_str().unwrap()]);
    let (procs, sums) = report(&run);
    assert_eq!(procs.len(), 3, "{run}");
    let root = procs
        .iter()
        .find(|p| p["parent"].is_null())
        .unwrap_or_else(|| panic!("no root\n{run}"));
    let root_pid = root["pid"].as_u64().unwrap();
    let by_comm =
        |comm: &str| -> Vec<&Value> { procs.iter().filter(|p| p["comm"] == comm).collect() };
    let child = *by_comm("forks")
        .iter()
        .find(|p| p["parent"] == root_pid)
        .unwrap_or_else(|| panic!("no forked child\n{run}"));
    let execd = by_comm("allocators_tcma")[0];
    assert_eq!(execd["parent"], root_pid, "{run}");
    for p in [root, child, execd] {
        assert_eq!(p["state"], "exited with code 0", "{run}");
    }
    // The parent: its own blocks. The child: its own, not the parent's copies, and the free of
    // an inherited block counted as unknown.
    let s = &sums[&(root_pid, "forks".to_string())];
    assert_eq!(
        rows_in(s, &["f_parent", "f_child"]),
        expected_for("forks", &["f_parent"]),
        "{run}"
    );
    assert_eq!(s["unknown_frees"], 0, "{run}");
    let s = &sums[&key(child)];
    assert_eq!(
        rows_in(s, &["f_parent", "f_child"]),
        expected_for("forks", &["f_child"]),
        "{run}"
    );
    assert_eq!(s["unknown_frees"], 1, "{run}");
    // The exec'd program, re-resolved to the allocator it links: its exact ledger.
    assert!(
        execd["probed"].as_str().unwrap().contains("(tcmalloc)"),
        "{run}"
    );
    let s = &sums[&key(execd)];
    assert_eq!(
        ledger_rows(s, "allocators"),
        expected_rows(&ledger("allocators")),
        "{run}"
    );
    assert_eq!(s["unknown_frees"], 0, "{run}");
    assert_eq!(s["comm"], "allocators_tcma", "{run}");
}

#[test]
fn without_follow_forks_only_the_command_is_traced() {
    if !ebpf_available("without_follow_forks_only_the_command_is_traced") {
        return;
    }
    let (forks, exec) = (workload("forks"), workload("allocators"));
    let run = launched(
        &["--follow-forks=false"],
        &[forks.to_str().unwrap(), exec.to_str().unwrap()],
    );
    let s = run.summary();
    assert_eq!(
        rows_in(&s, &["f_parent", "f_child", "a_malloc"]),
        expected_for("forks", &["f_parent"]),
        "{run}"
    );
    assert_eq!(s["comm"], "forks", "{run}");
}

#[test]
fn a_command_that_lives_50_ms_is_traced_and_named_after_it_exits() {
    if !ebpf_available("a_command_that_lives_50_ms_is_traced_and_named_after_it_exits") {
        return;
    }
    let bin = workload("short");
    let run = launched(&[], &[bin.to_str().unwrap()]);
    let s = run.summary();
    // One site is in a library the program loads with dlopen as it ends: named only if its
    // mappings were read while the process was held on its way out.
    let mut want = expected_rows(&ledger("short"));
    want.extend(expected_rows(&ledger("lib/plugin")));
    assert_eq!(rows_in(&s, &["s_main", "s_plugin"]), want, "{run}");
    assert_eq!(s["lost_events"], 0, "{run}");
}

/// A chroot-like root holding copies of `bins` and of the libraries they load (so their libc
/// is another file than the host's), with an empty /proc for `unshare --mount-proc`.
fn container_root(test: &str, bins: &[&str]) -> std::path::PathBuf {
    let root = muppy_tests::scratch(test).join("root");
    std::fs::create_dir_all(root.join("proc")).unwrap();
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for b in bins {
        let bin = workload(b);
        std::fs::copy(&bin, root.join(b)).unwrap();
        let out = std::process::Command::new("ldd")
            .arg(&bin)
            .output()
            .unwrap();
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let path = l
                .split("=>")
                .last()
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap_or("");
            if path.starts_with('/') {
                files.push(path.into());
            }
        }
    }
    for f in files {
        let to = root.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
    root
}

#[test]
fn a_command_in_its_own_pid_and_mount_namespace_is_traced_through_exec() {
    if !ebpf_available("a_command_in_its_own_pid_and_mount_namespace_is_traced_through_exec") {
        return;
    }
    let root = container_root("ns-launch", &["allocators"]);
    let run = launched(
        &[],
        &[
            "unshare",
            "--fork",
            "--pid",
            "--mount-proc",
            &format!("--root={}", root.display()),
            "/allocators",
        ],
    );
    let (procs, sums) = report(&run);
    let inner = procs
        .iter()
        .find(|p| p["comm"] == "allocators")
        .unwrap_or_else(|| panic!("no allocators process\n{run}"));
    // Seen from the host, and as pid 1 from inside.
    assert_eq!(inner["ns_pid"], 1, "{run}");
    let s = &sums[&key(inner)];
    assert_eq!(s["ns_pid"], 1, "{run}");
    // Exact: the probes are on the container's copy of libc, found through its root.
    assert_eq!(
        ledger_rows(s, "allocators"),
        expected_rows(&ledger("allocators")),
        "{run}"
    );
}

#[test]
fn a_running_process_in_a_container_is_attached_by_its_host_pid() {
    if !ebpf_available("a_running_process_in_a_container_is_attached_by_its_host_pid") {
        return;
    }
    use std::io::Write as _;
    let root = container_root("ns-attach", &["attach"]);
    let mut unshare = std::process::Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc"])
        .arg(format!("--root={}", root.display()))
        .arg("/attach")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = muppy_tests::Lines::new(unshare.stderr.take().unwrap());
    err.wait_for("ready", 60);
    // The workload is unshare's child: pid 1 inside, some other pid here.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id())).unwrap();
    let pid = children.split_whitespace().next().unwrap().to_string();
    let mut tracer = muppy_tests::spawn_trace(&["--format", "json", "--pid", &pid]);
    let tracer_err = muppy_tests::Lines::new(tracer.stderr.take().unwrap());
    let said = tracer_err.wait_for("tracing pid", 60);
    assert!(
        said.last()
            .unwrap()
            .contains(&format!("tracing pid {pid} (1 in its namespace)")),
        "{said:?}"
    );
    unshare.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(unshare.wait().unwrap().success());
    let run = Run::from_output(tracer.wait_with_output().unwrap());
    let s: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(s["ns_pid"], 1, "{run}");
    assert_eq!(
        s["pid"]
            .as_str()
            .map_or(s["pid"].to_string(), str::to_string),
        pid,
        "{run}"
    );
    assert_eq!(
        muppy_tests::rows(&s),
        expected_rows(&ledger("attach")),
        "{run}"
    );
    assert_eq!(s["unknown_frees"], 50, "{run}");
}

#[test]
fn a_running_process_is_followed_into_its_exec_and_children() {
    if !ebpf_available("a_running_process_is_followed_into_its_exec_and_children") {
        return;
    }
    use std::io::Write as _;
    // A shell that waits for a line, then becomes forks (which forks, and execs allocators).
    let script = format!(
        "echo ready >&2; read line; exec {} {}",
        workload("forks").display(),
        workload("allocators").display()
    );
    let mut sh = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = muppy_tests::Lines::new(sh.stderr.take().unwrap());
    err.wait_for("ready", 60);
    let pid = sh.id().to_string();
    let mut tracer =
        muppy_tests::spawn_trace(&["--follow-forks", "--format", "json", "--pid", &pid]);
    let tracer_err = muppy_tests::Lines::new(tracer.stderr.take().unwrap());
    tracer_err.wait_for("tracing pid", 60);
    sh.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(sh.wait().unwrap().success());
    let run = Run::from_output(tracer.wait_with_output().unwrap());
    assert_eq!(run.code, Some(0), "{run}");
    let (procs, sums) = report(&run);
    let pid: u64 = pid.parse().unwrap();
    // The shell's pid is now forks: its image after exec holds the parent's blocks.
    let root = procs
        .iter()
        .find(|p| p["pid"] == pid && p["comm"] == "forks")
        .unwrap_or_else(|| panic!("no forks image\n{run}"));
    assert_eq!(root["state"], "exited with code 0", "{run}");
    let s = &sums[&key(root)];
    assert_eq!(
        rows_in(s, &["f_parent", "f_child"]),
        expected_for("forks", &["f_parent"]),
        "{run}"
    );
    let child = procs
        .iter()
        .find(|p| p["parent"] == pid && p["comm"] == "forks")
        .unwrap_or_else(|| panic!("no forked child\n{run}"));
    let s = &sums[&key(child)];
    assert_eq!(
        rows_in(s, &["f_parent", "f_child"]),
        expected_for("forks", &["f_child"]),
        "{run}"
    );
    let execd = procs
        .iter()
        .find(|p| p["parent"] == pid && p["comm"] == "allocators")
        .unwrap_or_else(|| panic!("no exec'd child\n{run}"));
    let s = &sums[&key(execd)];
    assert_eq!(
        ledger_rows(s, "allocators"),
        expected_rows(&ledger("allocators")),
        "{run}"
    );
}

#[test]
fn a_script_is_followed_through_its_interpreter_into_the_program() {
    if !ebpf_available("a_script_is_followed_through_its_interpreter_into_the_program") {
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    let script = muppy_tests::scratch("script").join("run.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec {}\n", workload("allocators").display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = launched(&[], &[script.to_str().unwrap()]);
    let (procs, sums) = report(&run);
    let prog = procs
        .iter()
        .find(|p| p["comm"] == "allocators")
        .unwrap_or_else(|| panic!("no allocators image\n{run}"));
    // The shell's image ended at its exec; the program's has its exact ledger.
    assert!(
        procs
            .iter()
            .any(|p| p["comm"] == "run.sh" && p["state"].as_str().unwrap().starts_with("exec'd")),
        "{run}"
    );
    // One pid, two images: the program's summary is found by its name too.
    let s = sums[&key(prog)].clone();
    assert_eq!(
        ledger_rows(&s, "allocators"),
        expected_rows(&ledger("allocators")),
        "{run}"
    );
}

#[test]
fn an_image_is_named_after_its_exec_removed_its_mappings() {
    if !ebpf_available("an_image_is_named_after_its_exec_removed_its_mappings") {
        return;
    }
    // env execs preexec, which loads its library, allocates from it and execs allocators at
    // once: when muppy hears of that exec, preexec's mappings are already gone.
    let (preexec, next) = (workload("preexec"), workload("allocators"));
    let run = launched(
        &[],
        &["env", preexec.to_str().unwrap(), next.to_str().unwrap()],
    );
    let (procs, sums) = report(&run);
    let image = |comm: &str| {
        sums.iter()
            .find(|((_, c), _)| c == comm)
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("no {comm} image\n{run}"))
    };
    assert!(
        procs
            .iter()
            .any(|p| p["comm"] == "preexec" && p["state"].as_str().unwrap().starts_with("exec'd")),
        "{run}"
    );
    assert_eq!(
        rows_in(image("preexec"), &["preexec_keep"]),
        expected_for("lib/preexec_lib", &["preexec_keep"]),
        "{run}"
    );
    assert_eq!(
        ledger_rows(image("allocators"), "allocators"),
        expected_rows(&ledger("allocators")),
        "{run}"
    );
    // No site of an image that exec'd is a bare address: each is in a module it had mapped
    // (env's libc rows among them).
    for comm in ["env", "preexec"] {
        let bare: Vec<String> = muppy_tests::rows(image(comm))
            .into_keys()
            .filter(|s| s.starts_with("[unknown] (0x"))
            .collect();
        assert!(bare.is_empty(), "{comm}: {bare:?}\n{run}");
    }
}
