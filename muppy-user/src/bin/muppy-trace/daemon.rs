//! `muppy-trace daemon` (flags → the daemon's configuration → its session) and `muppy-trace
//! query`, its client.

use std::{io::Write as _, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use muppy::{
    daemon::{
        self, Group, Listeners, http,
        log::Log,
        sink::DaemonSink,
        store::{Checkable, Shared},
    },
    session::{self, Mode},
};

use crate::{TraceArgs, options, parse_addr, parse_size, seconds, terminal_width};

/// `muppy-trace daemon`'s own options.
#[derive(Debug, Args)]
#[command(next_help_heading = "Daemon options")]
pub struct DaemonArgs {
    /// Serve the API on this Unix socket (made 0600, root's; its directory 0700).
    #[arg(long, value_name = "PATH", default_value = daemon::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Let the members of this group (a name or a gid) use the socket too (0660).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Also serve /metrics and /debug/pprof/heap on this TCP address, for scrapers. Whoever can
    /// connect reads them: keep it on 127.0.0.1 unless a firewall guards the port.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Append a record of what changed to this JSON Lines file (made 0600) every --log-every
    /// seconds, an `exited` line as each process ends, and the final state at the stop.
    /// SIGHUP reopens it (for logrotate).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Seconds between the log's records.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    log_every: f64,
    /// Start a new log file when it would pass this size (K, M, G), keeping the last as
    /// FILE.1, FILE.2...
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64M")]
    log_max_bytes: u64,
    /// Rotated log files kept.
    #[arg(long, value_name = "N", default_value_t = 5)]
    log_keep: u32,
    /// With --pid: check the process for leaks every SECS seconds, the report going to the
    /// log (`{"type":"leaks"}`).
    #[arg(long, value_name = "SECS", requires = "log")]
    check_every: Option<f64>,
}

/// Runs the daemon until SIGTERM (or, with --pid, until the process ends).
pub fn run(t: &TraceArgs, d: &DaemonArgs) -> anyhow::Result<u8> {
    if !t.command.is_empty() {
        bail!("the daemon traces running processes: give --pid PID or --all, not a command");
    }
    if t.save.is_some() {
        bail!("the daemon's snapshots are taken through its API (POST /snapshot), not --save");
    }
    if t.pid.is_empty() && !t.all {
        bail!(
            "say what the daemon traces: --all (every process, or those --comm or --cgroup select) or --pid PID (one or several)"
        );
    }
    if t.follow_forks.is_some() {
        bail!("--follow-forks does not apply to the daemon");
    }
    if d.log_max_bytes < 4096 {
        bail!("--log-max-bytes takes 4K or more");
    }
    let log_every = seconds(Some(d.log_every), "--log-every")?.unwrap_or(Duration::from_secs(60));
    let mut opts = options(t)?;
    // The tick: the table is drained and the heaps clients asked for are copied (summaries
    // of the processes that changed are made once a second).
    opts.interval.get_or_insert(Duration::from_millis(250));
    // Checks when clients ask: they need every block (`options` samples --all unless told;
    // processes given by pid have every block recorded).
    let checkable = match t.pid[..] {
        _ if opts.probe.sample_bytes > 0 => Checkable::Sampled,
        [pid] => Checkable::One(pid),
        _ => Checkable::All,
    };
    opts.on_request = checkable != Checkable::Sampled;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("eBPF probes need root: run the daemon as root (its systemd unit does)");
    }
    let check_every = seconds(d.check_every, "--check-every")?;
    if check_every.is_some() && !matches!(checkable, Checkable::One(_)) {
        bail!("--check-every checks one process for leaks: give --pid PID, without --sample-bytes");
    }
    let group = d.group.as_deref().map(group_of).transpose()?;
    let listeners = Listeners::bind(&d.socket, group, d.listen)?;
    let log = d
        .log
        .as_deref()
        .map(|p| Log::open(p, d.log_max_bytes, d.log_keep))
        .transpose()?;
    if log.is_some() {
        daemon::log::reopen_on_sighup().context("installing the SIGHUP handler")?;
    }
    // Several pids are traced as --all is, the rest refused in the kernel.
    let mode = match t.pid[..] {
        [pid] => Mode::Attach { pid, follow: false },
        _ => Mode::System,
    };
    let shared = Shared::default();
    {
        let mut st = shared.lock();
        st.checkable = checkable;
    }
    listeners
        .serve(&shared)
        .context("starting the API's threads")?;
    let mut notes = format!("serving on {}", d.socket.display());
    if let Some(addr) = listeners.tcp_addr() {
        notes.push_str(&format!(" and http://{addr}/metrics"));
    }
    eprintln!("muppy-trace: {notes}");
    let mut sink = DaemonSink::new(
        shared,
        opts.label.clone(),
        log,
        log_every,
        Box::new(|n| eprintln!("muppy-trace: {n}")),
    );
    if let Some(every) = check_every {
        sink.check_every(every);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(session::run(mode, &opts, &mut sink))?;
    drop(listeners);
    eprintln!("muppy-trace: daemon stopped");
    Ok(0)
}

/// A group given by name or gid.
fn group_of(g: &str) -> anyhow::Result<Group> {
    if let Ok(gid) = g.parse() {
        return Ok(Group { gid });
    }
    let groups = std::fs::read_to_string("/etc/group").context("reading /etc/group")?;
    groups
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(g)).then(|| f.nth(1)?.parse().ok())?
        })
        .map(|gid| Group { gid })
        .with_context(|| format!("--group {g}: no such group"))
}

/// What `query` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// The traced processes.
    Processes,
    /// A process's live summary.
    Summary,
    /// What changed since a snapshot taken with `snapshot --name NAME` (--since NAME).
    Diff,
    /// Every live block.
    Objects,
    /// A leak check (a daemon started with --pid).
    Leaks,
    /// Who points at a block (--addr; a daemon started with --pid).
    Referrers,
    /// Take a snapshot named --name (for `diff --since NAME`); or, with -o FILE, save a
    /// snapshot file (the current heap, or the one named --name) for `muppy-trace summary`.
    Snapshot,
    /// The Prometheus metrics.
    Metrics,
    /// Go's heap profile (write it with -o FILE).
    Pprof,
}

/// `muppy-trace query`'s options.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// What to ask.
    #[arg(value_enum)]
    what: What,
    /// The daemon's socket.
    #[arg(long, value_name = "PATH", default_value = daemon::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The process.
    #[arg(short, long, value_name = "PID")]
    pid: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    format: QueryFormat,
    /// What the rows are: site, function, stack or size.
    #[arg(long, value_name = "BY")]
    group_by: Option<String>,
    /// Only blocks with a frame matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    site: Option<String>,
    /// Only blocks of at least this size.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    min_size: Option<u64>,
    /// Only blocks of at most this size.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,
    /// Table rows to show.
    #[arg(short = 'n', long, value_name = "N")]
    top: Option<usize>,
    /// `diff`: since the snapshot of this name.
    #[arg(long, value_name = "NAME")]
    since: Option<String>,
    /// `snapshot`: its name.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// `referrers`: the block at this address.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    addr: Option<u64>,
    /// Write the answer to FILE instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum QueryFormat {
    /// The CLI's tables.
    Table,
    /// The CLI's JSON Lines.
    Json,
}

/// Asks the daemon and shows its answer: 0, or 2 with its reason.
pub fn query(q: &QueryArgs) -> anyhow::Result<u8> {
    let (method, path) = request_of(q)?;
    let answer = daemon::query(&q.socket, method, &path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " (the socket is root's: use sudo, or ask for the daemon's --group)"
            }
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                " (is the daemon running? `systemctl status muppy`, or give --socket PATH)"
            }
            _ => "",
        };
        anyhow::anyhow!("{}: {e}{hint}", q.socket.display())
    })?;
    if answer.status != 200 {
        let why = String::from_utf8_lossy(&answer.body);
        bail!(
            "the daemon answered {} {}: {}",
            answer.status,
            http::reason(answer.status),
            why.trim()
        );
    }
    match &q.output {
        // Another process's addresses and names: the file is the user's alone.
        Some(f) => {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(f)
                .and_then(|mut file| file.write_all(&answer.body))
                .with_context(|| format!("-o: cannot write {}", f.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(&answer.body) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(e).context("writing to stdout");
                }
                _ => {}
            }
        }
    }
    Ok(0)
}

/// The request `q` makes: method and path with its query string.
fn request_of(q: &QueryArgs) -> anyhow::Result<(&'static str, String)> {
    let needs_pid = !matches!(q.what, What::Processes | What::Metrics);
    if needs_pid && q.pid.is_none() {
        bail!("say which process: --pid PID (`muppy-trace query processes` lists them)");
    }
    let binary = matches!(q.what, What::Pprof) || (q.what == What::Snapshot && q.output.is_some());
    if binary && q.output.is_none() {
        bail!("a profile is binary: write it with -o FILE");
    }
    let mut params: Vec<(&str, String)> = Vec::new();
    if let Some(pid) = q.pid.filter(|_| needs_pid) {
        params.push(("pid", pid.to_string()));
    }
    let views = matches!(
        q.what,
        What::Summary | What::Diff | What::Objects | What::Leaks | What::Processes
    );
    if (views || q.what == What::Referrers) && q.format == QueryFormat::Table {
        params.push(("format", "table".into()));
        if let Some(w) = terminal_width().filter(|_| q.output.is_none()) {
            params.push(("width", w.to_string()));
        }
    }
    if views {
        let opt = [
            ("group_by", q.group_by.clone()),
            ("site", q.site.clone()),
            ("min_size", q.min_size.map(|s| s.to_string())),
            ("max_size", q.max_size.map(|s| s.to_string())),
            ("top", q.top.map(|n| n.to_string())),
        ];
        params.extend(opt.into_iter().filter_map(|(k, v)| Some((k, v?))));
    }
    let (method, endpoint) = match q.what {
        What::Processes => ("GET", "/processes"),
        What::Summary => ("GET", "/summary"),
        What::Diff => {
            let since = q.since.clone().context(
                "say since when: --since NAME (take a snapshot first: `query snapshot --name NAME --pid PID`)",
            )?;
            params.push(("since", since));
            ("GET", "/diff")
        }
        What::Objects => ("GET", "/objects"),
        What::Leaks => ("GET", "/leaks"),
        What::Referrers => {
            let addr = q
                .addr
                .context("say which block: --addr 0x... (`query objects` lists them)")?;
            params.push(("addr", format!("{addr:#x}")));
            ("GET", "/referrers")
        }
        What::Snapshot => {
            if let Some(n) = &q.name {
                params.push(("name", n.clone()));
            }
            match (&q.output, &q.name) {
                (Some(_), _) => ("GET", "/snapshot"),
                (None, Some(_)) => ("POST", "/snapshot"),
                (None, None) => bail!(
                    "say what to do: --name NAME takes a snapshot in the daemon, -o FILE saves one"
                ),
            }
        }
        What::Metrics => ("GET", "/metrics"),
        What::Pprof => ("GET", "/debug/pprof/heap"),
    };
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", http::encode(v)))
        .collect();
    let path = if query.is_empty() {
        endpoint.to_string()
    } else {
        format!("{endpoint}?{}", query.join("&"))
    };
    Ok((method, path))
}
