//! `muppy-trace browse` driven in a real terminal: tmux, 80x24, keys sent with `send-keys`,
//! the screen read with `capture-pane`. The rows must be the workloads' ledgers.

use std::process::Command;

use muppy_core::report::text::{format_size, format_size_change};
use muppy_tests::{
    ebpf_available, expected_rows, ledger, muppy_trace, poll, scratch, start_workload, state,
    trace, workload,
};

/// A tmux server of its own (`-L`), one 80x24 window running a plain shell; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Self {
        let t = Tmux {
            socket: format!("muppy-{name}-{}", std::process::id()),
        };
        let shell =
            "env -i PATH=/usr/bin:/bin TERM=xterm-256color PS1='$ ' bash --norc --noprofile";
        t.run(&["new-session", "-d", "-x", "80", "-y", "24", shell]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running tmux");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `line` into the shell and presses Enter.
    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-l", line]);
        self.run(&["send-keys", "Enter"]);
    }

    /// Presses keys (tmux names: `Enter`, `Down`, `Escape`, or literal text).
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.run(&["send-keys", k]);
        }
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    /// The screen once `done` holds for it (at most `secs`); panics with the screen if never.
    fn wait(&self, secs: u64, what: &str, done: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        if poll(secs, || {
            last = self.screen();
            done(&last)
        }) {
            return last;
        }
        panic!("the screen never showed {what}:\n{last}");
    }

    /// The pid of the shell's child (the command it runs now).
    fn child_pid(&self) -> u32 {
        let shell = self.run(&["display-message", "-p", "#{pane_pid}"]);
        let shell = shell.trim();
        let children =
            std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
        children.split_whitespace().next().unwrap().parse().unwrap()
    }

    fn alternate_screen(&self) -> bool {
        self.run(&["display-message", "-p", "#{alternate_on}"])
            .trim()
            == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The rows of a summary screen: (site, objects, size) as shown, selection marker cut.
fn rows(screen: &str) -> Vec<(String, String, String)> {
    growth(screen)
        .into_iter()
        .map(|(a, b, c, _)| (a, b, c))
        .collect()
}

/// The rows of a summary screen with their growth since the start.
fn growth(screen: &str) -> Vec<(String, String, String, String)> {
    screen
        .lines()
        .skip(3)
        .take_while(|l| !l.starts_with("live bytes"))
        .filter(|l| l.len() > 2 && l.contains(" ("))
        .map(|l| {
            let l = &l[2..];
            // `site (file:line)   objects   size unit   +start`.
            let close = l.find(')').expect("a site");
            let rest: Vec<&str> = l[close + 1..].split_whitespace().collect();
            (
                l[..=close].to_string(),
                rest[0].to_string(),
                format!("{} {}", rest[1], rest[2]),
                rest[3..].join(" "),
            )
        })
        .collect()
}

/// The ledger's rows as the browser shows them.
fn ledger_rows(name: &str) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = expected_rows(&ledger(name))
        .into_iter()
        .map(|(site, (o, b))| {
            let size = format_size(b)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            (site, o.to_string(), size)
        })
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<(String, String, String)>) -> Vec<(String, String, String)> {
    v.sort();
    v
}

#[test]
fn browse_a_snapshot_filter_trees_and_quit() {
    if !ebpf_available("browse_a_snapshot_filter_trees_and_quit") {
        return;
    }
    let dir = scratch("browse_snapshot");
    let file = dir.join("ages.muppy");
    let ages = workload("ages");
    let run = trace(
        &[
            "--save",
            file.to_str().unwrap(),
            "--",
            ages.to_str().unwrap(),
            "10",
        ],
        "",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let t = Tmux::new("snapshot");
    let cmd = format!(
        "{} browse {}; echo browse exited $?",
        muppy_trace().display(),
        file.display()
    );
    t.type_line(&cmd);
    let want = ledger_rows("ages");
    let s = t.wait(10, "the ledger's rows", |s| sorted(rows(s)) == want);
    assert!(t.alternate_screen(), "{s}");
    assert!(s.contains("[1 summary]"), "{s}");
    assert!(
        s.contains("q quit  1-7/Tab views  Up/Down/j/k move  Enter/Right open  Left close"),
        "{s}"
    );
    // A bad regex: one line on the status line, the rows untouched.
    t.keys(&["/", "(", "Enter"]);
    let s = t.wait(5, "the regex message", |s| {
        s.contains("not a regular expression: error: unclosed group")
    });
    assert_eq!(sorted(rows(&s)), want, "{s}");
    // A good one narrows the rows to young's two sites.
    t.keys(&["/", "young", "Enter"]);
    let young: Vec<_> = want
        .iter()
        .filter(|r| r.0.starts_with("young"))
        .cloned()
        .collect();
    assert_eq!(young.len(), 2);
    t.wait(5, "young's rows only", |s| sorted(rows(s)) == young);
    // The top-down tree: main expands to old and young.
    t.keys(&["Escape", "2"]);
    let s = t.wait(5, "the top-down tree", |s| s.contains("[2 top-down]"));
    let root = s
        .lines()
        .position(|l| l.starts_with("> + "))
        .unwrap_or_else(|| panic!("a closed root selected:\n{s}"));
    t.keys(&["Enter"]);
    let s = t.wait(5, "the root opened", |s| {
        s.lines().nth(root).is_some_and(|l| l.starts_with("> - "))
    });
    // Below it, main, called twice: at young's call its two sites, at old's call old's.
    t.keys(&["Down", "Enter"]);
    let s2 = t.wait(5, "young's sites below main", |s| {
        s.contains("young (ages.c:17)") && s.contains("young (ages.c:18)")
    });
    assert!(!s2.contains("old (ages.c:13)"), "{s}\n{s2}");
    t.keys(&["Down", "Down", "Down", "Enter"]);
    t.wait(5, "old's site below main", |s| {
        s.contains("old (ages.c:13)")
    });
    t.keys(&["q"]);
    let s = t.wait(10, "the shell again", |s| s.contains("browse exited 0"));
    assert!(!t.alternate_screen(), "{s}");
    assert!(
        s.contains(&cmd[..40]),
        "the command line is on the main screen:\n{s}"
    );
}

#[test]
fn browse_a_command_live() {
    if !ebpf_available("browse_a_command_live") {
        return;
    }
    let t = Tmux::new("live");
    let ages = workload("ages");
    t.type_line(&format!(
        "TMPDIR={} {} browse -- {} 10; echo browse exited $?",
        scratch("browse_live").display(),
        muppy_trace().display(),
        ages.display()
    ));
    let want = ledger_rows("ages");
    let old: Vec<_> = want
        .iter()
        .filter(|r| r.0.starts_with("old"))
        .cloned()
        .collect();
    // ages keeps only its old blocks for 2 s: a tick (each second) shows them alone, then
    // the young ones join.
    let s = t.wait(20, "old's row alone", |s| sorted(rows(s)) == old);
    assert!(s.contains("muppy browse: "), "{s}");
    let s = t.wait(20, "every row of the ledger", |s| sorted(rows(s)) == want);
    // The first heap held no young block: their growth since the start is all of them.
    for (site, _, size, grown) in growth(&s) {
        if site.starts_with("young") {
            assert_eq!(grown, format!("+{size}"), "{s}");
        }
    }
    t.wait(20, "the end of the command", |s| {
        s.contains("ended: exited with code 0")
    });
    t.keys(&["q"]);
    let s = t.wait(10, "the shell again", |s| s.contains("browse exited 0"));
    assert!(s.contains("the command's output is in "), "{s}");
    assert!(!t.alternate_screen(), "{s}");
}

#[test]
fn browse_a_pid_and_quit_leaves_it_running() {
    if !ebpf_available("browse_a_pid_and_quit_leaves_it_running") {
        return;
    }
    let mut target = start_workload("attach", &[]);
    let pid = target.pid();
    // Waiting for its line on stdin.
    assert!(poll(10, || state(pid) == Some('S')), "attach never waited");
    let t = Tmux::new("pid");
    t.type_line(&format!(
        "{} browse --pid {pid}; echo browse exited $?",
        muppy_trace().display()
    ));
    t.wait(30, "the first heap", |s| {
        s.contains(&format!("(pid {pid}): "))
    });
    t.keys(&["q"]);
    t.wait(30, "the shell again", |s| s.contains("browse exited 0"));
    assert!(!t.alternate_screen());
    // Left as it was found: not stopped, not traced, and it goes on when told.
    assert_eq!(state(pid), Some('S'));
    let mut stdin = target.stdin();
    muppy_tests::send(&mut stdin, "go");
    assert!(target.wait(10).success());
}

/// The refs view of a live process (Pympler's InteractiveBrowser): the browser asks, the
/// tracer stops the process and reads its memory, and the block's referrer is the global array
/// that holds it (phases.c's `grow`); a leak check asked for finds every block reachable; the
/// process is left running as it was found.
#[test]
fn browse_a_pid_walks_a_blocks_referrers() {
    if !ebpf_available("browse_a_pid_walks_a_blocks_referrers") {
        return;
    }
    let mut target = start_workload("phases", &[]);
    let pid = target.pid();
    assert!(poll(10, || state(pid) == Some('S')), "phases never waited");
    let t = Tmux::new("refs");
    t.type_line(&format!(
        "{} browse --pid {pid}; echo browse exited $?",
        muppy_trace().display()
    ));
    t.wait(30, "the first heap", |s| {
        s.contains(&format!("(pid {pid}): "))
    });
    let mut stdin = target.stdin();
    // Phase 1: ten blocks of 100 bytes at phase_grow, each held by grow[i].
    muppy_tests::send(&mut stdin, "go");
    t.wait(30, "phase_grow's row", |s| {
        rows(s)
            .iter()
            .any(|(site, n, _)| site.starts_with("phase_grow") && n == "10")
    });
    // Its objects, then the first one's referrers.
    t.keys(&["Enter"]);
    t.wait(10, "the objects view", |s| s.contains("100 B"));
    t.keys(&["Enter"]);
    let screen = t.wait(30, "the global that holds it", |s| {
        s.contains("global grow (")
    });
    assert!(screen.contains("referrers:"), "{screen}");
    assert!(!screen.contains("searching"), "{screen}");
    // A leak check now: every block is held by `grow`, so still reachable, all ten.
    t.keys(&["c"]);
    t.wait(30, "the check's verdicts", |s| {
        s.lines().any(|l| {
            // The selected row starts with `>`.
            let cells: Vec<&str> = l.split_whitespace().filter(|c| *c != ">").collect();
            cells.starts_with(&["still", "reachable", "phase_grow"])
                && cells.ends_with(&["10", "1000", "B"])
        })
    });
    t.keys(&["q"]);
    t.wait(30, "the shell again", |s| s.contains("browse exited 0"));
    assert!(!t.alternate_screen());
    // Left as it was found: not stopped, not traced, and it goes on when told.
    assert_eq!(state(pid), Some('S'));
    muppy_tests::send(&mut stdin, "go");
    muppy_tests::send(&mut stdin, "go");
    assert!(target.wait(10).success());
}

#[test]
fn browse_refuses_all_and_a_pipe() {
    let one_line = |args: &[&str], want: &str| {
        let run = trace(args, "");
        assert_eq!(run.code, Some(2), "{run}");
        assert_eq!(run.stderr.trim(), want, "{run}");
    };
    one_line(
        &["browse", "--all"],
        "muppy-trace: browse follows one process: give --pid PID or -- CMD, not --all",
    );
    // Nothing is traced or read when there is no terminal to show it on.
    one_line(
        &["browse", "/nonexistent.muppy"],
        "muppy-trace: browse needs a terminal: run it in one (ssh -t for a remote one)",
    );
}

/// The leaks view of a snapshot saved by `leaks --save`: leak_small's block, allocated then
/// dropped, is definitely lost (its source says so); Enter shows it, Enter again its verdict;
/// Ctrl-C quits as q does.
#[test]
fn browse_leak_verdicts_and_ctrl_c() {
    if !ebpf_available("browse_leak_verdicts_and_ctrl_c") {
        return;
    }
    let dir = scratch("browse_leaks");
    let file = dir.join("small.muppy");
    let small = workload("leak_small");
    let run = trace(
        &[
            "leaks",
            "--save",
            file.to_str().unwrap(),
            "--",
            small.to_str().unwrap(),
        ],
        "alloc\ndrop\nexit\n",
    );
    assert_eq!(run.code, Some(0), "{run}");
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/leak_small.c"),
    )
    .unwrap();
    let line = 1 + src
        .lines()
        .position(|l| l.contains("leak: site=small_alloc"))
        .unwrap();
    let site = format!("small_alloc (leak_small.c:{line})");
    let size = format_size(4242).trim().to_string();
    let t = Tmux::new("leaks");
    t.type_line(&format!(
        "{} browse {}; echo browse exited $?",
        muppy_trace().display(),
        file.display()
    ));
    t.wait(10, "the summary", |s| s.contains("[1 summary]"));
    t.keys(&["6"]);
    let s = t.wait(5, "the leaks view", |s| s.contains("[6 leaks]"));
    let row = format!("> definitely lost {site}");
    let line = s
        .lines()
        .find(|l| l.starts_with(&row))
        .unwrap_or_else(|| panic!("no {row:?}:\n{s}"));
    let figures: Vec<&str> = line[row.len()..].split_whitespace().collect();
    assert_eq!(figures.join(" "), format!("1 {size}"), "{s}");
    assert_eq!(
        s.lines()
            .filter(|l| l.contains(" lost ") || l.contains("reachable"))
            .count(),
        1,
        "{s}"
    );
    t.keys(&["Enter"]);
    let s = t.wait(5, "its block", |s| s.contains("[5 objects]"));
    assert_eq!(s.lines().filter(|l| l.contains(&site)).count(), 1, "{s}");
    t.keys(&["Enter"]);
    t.wait(5, "its verdict", |s| {
        s.contains("[7 refs]") && s.contains("verdict: definitely lost")
    });
    t.keys(&["C-c"]);
    let s = t.wait(10, "the shell again", |s| s.contains("browse exited 0"));
    assert!(!t.alternate_screen(), "{s}");
    // SIGTERM leaves as q does, the terminal restored.
    t.type_line(&format!(
        "{} browse {}; echo browse ended $?",
        muppy_trace().display(),
        file.display()
    ));
    t.wait(10, "the summary", |s| s.contains("[1 summary]"));
    muppy_tests::signal(t.child_pid(), libc::SIGTERM);
    let s = t.wait(10, "the shell again", |s| s.contains("browse ended 0"));
    assert!(!t.alternate_screen(), "{s}");
    // The shell's terminal is back in cooked mode: a typed line echoes and runs.
    t.type_line("echo cooked again");
    t.wait(10, "a command run", |s| s.contains("\ncooked again"));
}

/// `--baseline`: ages with 25 old blocks against ages with 10 (100 B each, its source says):
/// old's row grew by 15 blocks' bytes, young's by nothing.
#[test]
fn browse_against_a_baseline() {
    if !ebpf_available("browse_against_a_baseline") {
        return;
    }
    let dir = scratch("browse_baseline");
    let ages = workload("ages");
    let save = |name: &str, count: &str| {
        let file = dir.join(name);
        let run = trace(
            &[
                "--save",
                file.to_str().unwrap(),
                "--",
                ages.to_str().unwrap(),
                count,
            ],
            "",
        );
        assert_eq!(run.code, Some(0), "{run}");
        file
    };
    let (a, b) = (save("a.muppy", "10"), save("b.muppy", "25"));
    let t = Tmux::new("baseline");
    t.type_line(&format!(
        "{} browse {} --baseline {}; echo browse exited $?",
        muppy_trace().display(),
        b.display(),
        a.display()
    ));
    let s = t.wait(10, "the vs base column", |s| s.contains("vs base"));
    let tight = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut want: Vec<(String, String, String, String)> = ledger_rows("ages")
        .into_iter()
        .map(|(site, o, size)| {
            if site.starts_with("old") {
                let grown = tight(format_size_change(1500));
                (
                    site,
                    "25".into(),
                    tight(format_size(2500)),
                    format!("0 B {grown}"),
                )
            } else {
                (site, o, size, "0 B 0 B".into())
            }
        })
        .collect();
    want.sort();
    let mut got = growth(&s);
    got.sort();
    assert_eq!(got, want, "{s}");
    t.keys(&["q"]);
    t.wait(10, "the shell again", |s| s.contains("browse exited 0"));
}
