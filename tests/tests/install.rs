//! The man page and the shell completions, generated from the clap definition that makes
//! `--help`, and `cargo xtask install`, which puts them in place. No root needed, once
//! `cargo xtask setup` has installed the shells and man (install builds through setup, which
//! then has nothing to do).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use muppy_tests::{muppy_trace, scratch};

/// `muppy-trace ARGS`'s stdout; panics unless it succeeds.
fn stdout_of(args: &[&str]) -> String {
    let out = Command::new(muppy_trace())
        .args(args)
        .output()
        .expect("run muppy-trace");
    assert!(
        out.status.success(),
        "muppy-trace {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The subcommands `--help` lists (not `help` itself).
fn subcommands() -> Vec<String> {
    let help = stdout_of(&["--help"]);
    let subs: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|s| *s != "help")
        .map(str::to_string)
        .collect();
    assert!(subs.len() >= 6, "no commands found in\n{help}");
    subs
}

/// The long flags a `--help` text lists (`  -p, --pid <PID>`, `      --all`).
fn long_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = match l.strip_prefix('-') {
                Some(rest) if !rest.starts_with('-') => rest.get(1..)?.strip_prefix(", ")?,
                _ => l,
            };
            let flag = l.strip_prefix("--")?;
            let name: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (!name.is_empty()).then(|| format!("--{name}"))
        })
        .collect()
}

/// The generated man page, as written (roff) and with roff's `\-` read as `-`.
fn man_page() -> (String, String) {
    let roff = stdout_of(&["--generate", "man"]);
    assert!(roff.starts_with(".ie") || roff.contains(".TH"), "{roff}");
    let plain = roff.replace("\\-", "-");
    (roff, plain)
}

/// Whether `prog` is on PATH.
fn installed(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_man_page_describes_every_flag_that_help_lists() {
    let (_, page) = man_page();
    let mut helps = vec![(String::from("(none)"), stdout_of(&["--help"]))];
    for sub in subcommands() {
        assert!(
            page.contains(&format!(".SS {sub}")),
            "no part for {sub} in\n{page}"
        );
        let help = stdout_of(&[&sub, "--help"]);
        helps.push((sub, help));
    }
    for (sub, help) in helps {
        let flags = long_flags(&help);
        assert!(
            flags.contains("--help"),
            "{sub}: no flags parsed from\n{help}"
        );
        for flag in flags {
            assert!(
                page.contains(&flag),
                "{flag} of {sub} (its --help lists it) is not in the man page:\n{page}"
            );
        }
    }
    // Its own sections, beyond what --help says.
    for section in ["EXIT STATUS", "ENVIRONMENT", "EXAMPLES", "COMMANDS"] {
        assert!(
            page.contains(&format!(".SH \"{section}\""))
                || page.contains(&format!(".SH {section}")),
            "no {section}"
        );
    }
    assert!(
        !page.contains("--generate"),
        "the hidden flag is in the page"
    );
}

#[test]
fn man_renders_the_page_without_warnings() {
    if !installed("man") {
        eprintln!("skipping man_renders_the_page_without_warnings: man is not installed");
        return;
    }
    let dir = scratch("man_renders");
    let file = dir.join("muppy-trace.1");
    std::fs::write(&file, man_page().0).expect("write the page");
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&file)
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .env("MANPAGER", "cat")
        .output()
        .expect("run man");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "man failed: {stderr}");
    assert!(stderr.trim().is_empty(), "man warned:\n{stderr}");
    assert!(text.contains("--full-names"), "{text}");
    assert!(text.contains("EXIT STATUS"), "{text}");
}

#[test]
fn each_completion_script_parses_in_its_shell_and_names_every_command() {
    let subs = subcommands();
    let dir = scratch("completions");
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["--generate", shell]);
        for sub in &subs {
            assert!(
                script.contains(sub.as_str()),
                "{shell}: no {sub} in\n{script}"
            );
        }
        if !installed(shell) {
            eprintln!("{shell} is not installed: its script is not parsed");
            continue;
        }
        let file = dir.join(format!("muppy-trace.{shell}"));
        std::fs::write(&file, &script).expect("write the script");
        let out = Command::new(shell)
            .arg("-n")
            .arg(&file)
            .output()
            .expect("run the shell");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{shell} -n rejects the script: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The workspace's root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn xtask_install_puts_the_binary_page_and_completions_under_the_prefix() {
    let prefix = scratch("install");
    let files = [
        "bin/muppy-trace",
        "share/man/man1/muppy-trace.1",
        "share/bash-completion/completions/muppy-trace",
        "share/zsh/site-functions/_muppy-trace",
        "share/fish/vendor_completions.d/muppy-trace.fish",
        "lib/systemd/system/muppy.service",
    ];
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Twice: a second install over the first is the same.
    for round in 0..2 {
        let out = Command::new(&cargo)
            .current_dir(workspace())
            .args(["xtask", "install", "--prefix"])
            .arg(&prefix)
            .output()
            .expect("run cargo xtask install");
        assert!(
            out.status.success(),
            "cargo xtask install (round {round}): {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for f in files {
            let path = prefix.join(f);
            let meta = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{} not installed: {e}", path.display()));
            assert!(meta.len() > 0, "{} is empty", path.display());
        }
    }
    let installed_bin = prefix.join(files[0]);
    let version = Command::new(&installed_bin)
        .arg("--version")
        .output()
        .expect("run the installed binary");
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("muppy-trace "));
    let page = std::fs::read_to_string(prefix.join(files[1])).expect("the page");
    assert!(page.contains(".SH COMMANDS"), "{page}");
    // The daemon's unit runs the binary installed, and systemd finds nothing wrong in it.
    let unit_path = prefix.join(files[5]);
    let unit = std::fs::read_to_string(&unit_path).expect("the unit");
    let exec = format!("ExecStart={} daemon --all", installed_bin.display());
    assert!(unit.contains(&exec), "{unit}");
    {
        assert!(
            installed("systemd-analyze"),
            "systemd-analyze is missing: `cargo xtask setup` installs systemd"
        );
        // Its Documentation= page is the one installed beside it.
        let verify = Command::new("systemd-analyze")
            .env("MANPATH", prefix.join("share/man"))
            .arg("verify")
            .arg(&unit_path)
            .output()
            .expect("run systemd-analyze");
        assert!(
            verify.status.success(),
            "systemd-analyze verify {}: {}",
            unit_path.display(),
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    let leftovers: Vec<_> = files
        .iter()
        .filter_map(|f| prefix.join(f).parent().map(Path::to_path_buf))
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().contains("xtask-new"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&prefix);
}
