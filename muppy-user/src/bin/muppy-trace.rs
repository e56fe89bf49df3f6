//! `muppy-trace`: trace a running process (`--pid N`) or a command (`-- CMD ARGS...`) and print
//! what it leaves allocated, per allocation site.
//!
//! Exit codes: 0 when tracing a pid went well; in launch mode, the command's own exit code
//! (128 + signal if a signal killed it); 2 for any error, with a one-line message on stderr.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use muppy::{
    probe::ProbeConfig,
    trace::{self, Format, Mode, Options},
};

/// Trace heap allocations of an unmodified process and summarize what stays live, per site.
#[derive(Debug, Parser)]
#[command(name = "muppy-trace", version, help_expected = true)]
#[command(
    after_help = "Examples:\n  sudo muppy-trace --pid 1234 --interval 5\n  sudo muppy-trace --format json -- ./my-program arg"
)]
struct Cli {
    /// Trace this running process.
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pid: Option<u32>,

    /// Stop after SECS seconds.
    #[arg(short, long, value_name = "SECS")]
    duration: Option<f64>,

    /// Print a diff of the live summary every SECS seconds.
    #[arg(short, long, value_name = "SECS")]
    interval: Option<f64>,

    /// Table rows to show (JSON always has every row).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 15)]
    top: usize,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,

    /// Ring buffer size in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = 4)]
    ring_mb: u32,

    /// Say where each probe went.
    #[arg(short, long)]
    verbose: bool,

    /// The command to start and trace from its first allocation.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutputFormat {
    /// Pympler-style tables.
    Table,
    /// JSON Lines: diffs, then one summary.
    Json,
}

fn seconds(v: Option<f64>, flag: &str) -> anyhow::Result<Option<Duration>> {
    v.map(|s| {
        Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero())
            .with_context(|| format!("{flag} takes a positive number of seconds, not {s}"))
    })
    .transpose()
}

fn options(cli: &Cli) -> anyhow::Result<Options> {
    if !cli.ring_mb.is_power_of_two() || cli.ring_mb > 1024 {
        bail!(
            "--ring-mb takes a power of two up to 1024, not {}",
            cli.ring_mb
        );
    }
    Ok(Options {
        interval: seconds(cli.interval, "--interval")?,
        duration: seconds(cli.duration, "--duration")?,
        top: cli.top,
        format: match cli.format {
            OutputFormat::Table => Format::Table,
            OutputFormat::Json => Format::Json,
        },
        verbose: cli.verbose,
        probe: ProbeConfig {
            ring_bytes: cli.ring_mb << 20,
            max_inflight: 16384,
        },
    })
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let opts = options(&cli)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("eBPF probes need root: run it with sudo");
    }
    // Fork the command before any thread exists; the runtime comes after.
    let mode = match (cli.pid, cli.command.is_empty()) {
        (Some(pid), true) => Mode::Attach(pid),
        (None, false) => trace::prepare_launch(&cli.command)?,
        _ => bail!("say what to trace: --pid PID, or -- CMD ARGS... (see --help)"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = rt.block_on(trace::run(mode, &opts))?;
    Ok(outcome
        .exit
        .map_or(0, |e| u8::try_from(e.shell_code() & 0xff).unwrap_or(255)))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "muppy-trace: {}; see --help",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("muppy-trace: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pid_and_command_conflict() {
        assert!(Cli::try_parse_from(["muppy-trace", "--pid", "1", "--", "ls"]).is_err());
        let cli = Cli::try_parse_from(["muppy-trace", "--", "ls", "-l"]).unwrap();
        assert_eq!(cli.command, vec!["ls", "-l"]);
    }

    #[test]
    fn bad_durations_are_rejected() {
        assert!(seconds(Some(-1.0), "--duration").is_err());
        assert!(seconds(Some(0.0), "--interval").is_err());
        assert_eq!(
            seconds(Some(1.5), "--duration").unwrap(),
            Some(Duration::from_millis(1500))
        );
    }
}
