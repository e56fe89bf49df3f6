//! The man page and the shell completion scripts, generated from the clap definition that
//! makes `--help`, so that the three cannot disagree: `muppy-trace --generate man|bash|zsh|fish`
//! writes one to stdout (the flag is hidden from `--help`; `cargo xtask install` installs them).
//!
//! The page is clap_mangen's sections for the command itself (name, synopsis, description,
//! its options under the same headings as `--help`), then one part per subcommand with its
//! usage, what it does and the options only it takes (each also takes the shared ones, listed
//! once above), then what `--help` has no room for: exit status, environment, examples.

use std::{
    collections::HashSet,
    io::{self, Write},
};

use clap::{Arg, Command, CommandFactory as _, ValueEnum};
use clap_complete::Shell;
use clap_mangen::Man;
use roff::{Roff, bold, roman};

use crate::Cli;

/// What `--generate` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// The man page, muppy-trace(1), in roff.
    Man,
    /// The bash completion script.
    Bash,
    /// The zsh completion script (`_muppy-trace`).
    Zsh,
    /// The fish completion script.
    Fish,
}

/// The name the page and the scripts are for.
const BIN: &str = "muppy-trace";

/// Writes `what` to `out`, whole (a closed pipe fails the write, not the generation).
pub(crate) fn write(what: Output, out: &mut dyn Write) -> io::Result<()> {
    let cmd = Cli::command();
    let mut text = Vec::new();
    let shell = match what {
        Output::Man => {
            man(cmd, &mut text)?;
            return out.write_all(&text);
        }
        Output::Bash => Shell::Bash,
        Output::Zsh => Shell::Zsh,
        Output::Fish => Shell::Fish,
    };
    clap_complete::generate(shell, &mut without_hidden(&cmd), BIN, &mut text);
    out.write_all(&text)
}

/// `cmd` as completions should offer it: without its hidden arguments (for tests and
/// benchmarks, and `--generate` itself), which clap_complete would list with the rest.
fn without_hidden(cmd: &Command) -> Command {
    let mut shown = Command::new(cmd.get_name().to_owned())
        .args_conflicts_with_subcommands(cmd.is_args_conflicts_with_subcommands_set())
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(without_hidden),
        );
    if let Some(about) = cmd.get_about() {
        shown = shown.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        shown = shown.version(version.to_owned());
    }
    shown
}

/// Exit status, as the binary's documentation gives it.
const EXIT_STATUS: &[&str] = &[
    "0 when tracing a running process (--pid, --all) or reading a snapshot went well.",
    "When launching a command (-- CMD), the command's own exit code (128 + the signal's number when a signal ended it).",
    "2 for any error, with a one-line message on stderr.",
];

/// The environment the tables' width comes from.
const ENVIRONMENT: &str = "When stdout is a terminal and --width is not given, tables are fitted to its \
width: COLUMNS where it is set to a positive number, else the size the terminal reports. When stdout \
is a pipe or a file, names are never shortened unless --width is given.";

/// Renders the whole page into `out`.
fn man(mut cmd: Command, out: &mut Vec<u8>) -> io::Result<()> {
    cmd.build();
    let page = Man::new(cmd.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    commands(&cmd, out)?;

    let mut r = Roff::new();
    r.control("SH", ["EXIT STATUS"]);
    for (i, line) in EXIT_STATUS.iter().enumerate() {
        if i > 0 {
            r.control("PP", []);
        }
        r.text([roman(*line)]);
    }
    r.control("SH", ["ENVIRONMENT"]);
    r.control("TP", []);
    r.text([bold("COLUMNS")]);
    r.text([roman(ENVIRONMENT)]);
    if let Some(after) = cmd.get_after_help() {
        r.control("SH", ["EXAMPLES"]);
        r.control("RS", ["4"]);
        r.control("nf", []);
        let text = after.to_string();
        for line in text.lines().skip_while(|l| l.ends_with(':')) {
            r.text([roman(line.trim())]);
        }
        r.control("fi", []);
        r.control("RE", []);
    }
    r.to_writer(out)?;
    page.render_version_section(out)
}

/// The COMMANDS section: each subcommand's usage, what it does and its own options.
fn commands(cmd: &Command, out: &mut Vec<u8>) -> io::Result<()> {
    // The command's own arguments (the trace and view options, help, version) are described
    // once above; every subcommand flattens in the same ones.
    let shared: HashSet<&str> = cmd.get_arguments().map(|a| a.get_id().as_str()).collect();
    let mut r = Roff::new();
    r.control("SH", ["COMMANDS"]);
    r.text([roman(format!(
        "Without a command, {BIN} traces and prints the summary. Each command below takes \
         the options above that its usage shows (the trace options where it traces, the view \
         options always), and these of its own."
    ))]);
    r.to_writer(out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let usage = sub.clone().render_usage().to_string();
        let usage = usage.trim().trim_start_matches("Usage:").trim();
        let mut r = Roff::new();
        r.control("SS", [sub.get_name()]);
        r.text([bold(usage)]);
        r.control("PP", []);
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            r.text([roman(about.to_string())]);
        }
        r.to_writer(out)?;
        let is_own = |a: &Arg| !a.is_hide_set() && !shared.contains(a.get_id().as_str());
        if !sub.get_arguments().any(is_own) {
            continue;
        }
        // The shared arguments stay, hidden, for the own ones that name them
        // (`refs --addr` is required unless `--site` is given).
        let args = sub.get_arguments().map(|a| {
            let a = a.clone();
            if is_own(&a) { a } else { a.hide(true) }
        });
        // The name is not shown: only the options are rendered.
        let own = Command::new(BIN)
            .disable_help_flag(true)
            .disable_version_flag(true)
            .args(args);
        let mut section = Vec::new();
        Man::new(own).render_options_section(&mut section)?;
        // Its options, without the heading of a section of their own.
        let text = String::from_utf8_lossy(&section).replacen(".SH OPTIONS\n", "", 1);
        out.extend_from_slice(text.as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(what: Output) -> String {
        let mut out = Vec::new();
        write(what, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_page_has_every_subcommand_and_its_own_options() {
        let page = generated(Output::Man).replace("\\-", "-");
        for needle in [
            ".SS objects",
            ".SS refs",
            ".SS browse",
            "--baseline",
            "--max-roots",
            "--retention",
            "--width",
            "--demangle",
            "EXIT STATUS",
            "COLUMNS",
        ] {
            assert!(page.contains(needle), "no {needle:?} in\n{page}");
        }
        // Hidden options stay hidden.
        assert!(!page.contains("--generate"), "{page}");
        assert!(!page.contains("--inflight-slots"), "{page}");
    }

    #[test]
    fn every_shell_gets_a_script() {
        for (what, needle) in [
            (Output::Bash, "complete -F _muppy__trace"),
            (Output::Zsh, "#compdef muppy-trace"),
            (Output::Fish, "complete -c muppy-trace"),
        ] {
            let script = generated(what);
            assert!(script.contains(needle), "{what:?}:\n{script}");
            assert!(script.contains("refs"), "{what:?}:\n{script}");
            assert!(script.contains("demangle"), "{what:?}:\n{script}");
            assert!(!script.contains("inflight-slots"), "{what:?}:\n{script}");
            assert!(!script.contains("generate"), "{what:?}:\n{script}");
        }
    }
}
