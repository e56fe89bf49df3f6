//! The API's endpoints: a request in, a response out, every answer made by the CLI's own
//! printers from the images of the last tick. Parameters are checked before anything is
//! looked up, and a bad one gets a 4xx naming it.

use std::{
    sync::{Arc, mpsc},
    time::Duration,
};

use muppy_core::{
    analysis::{self, GroupBy},
    model::Filter,
    report::{self, Facts, Format, Print, TracerUsage, View, ViewOptions},
    snapshot::Snapshot,
};
use regex::RegexBuilder;
use serde::Serialize;

use super::{
    http::{JSON, Method, Request, Response, TEXT},
    metrics,
    store::{
        CHECKS_QUEUED, CheckAnswer, Checkable, Image, MARKS_KEPT, MARKS_PER_PROCESS, PendingCheck,
        Shared,
    },
};
use crate::session::{self, CheckSpec};

/// The longest `site` regular expression taken, in bytes.
const MAX_REGEX: usize = 1024;
/// What a compiled `site` expression may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// How long a check may wait for the session and run.
const CHECK_WAIT: Duration = Duration::from_secs(120);
/// How long a request may wait for a copy of a heap (made at the next tick).
const HEAP_WAIT: Duration = Duration::from_secs(30);
/// The most rows a table may be asked for.
const MAX_TOP: usize = 1_000_000;

/// Who asks: the Unix socket's peers may use everything; a TCP port serves scrapers only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The Unix socket, peer checked.
    Socket,
    /// `--listen`: `/metrics` and `/debug/pprof/*`.
    Tcp,
}

/// Answers one request.
pub fn answer(req: &Request, shared: &Shared, via: Via) -> Response {
    match route(req, shared, via) {
        Ok(r) => r,
        Err(e) => Response::error(e.0, e.1),
    }
}

/// A 4xx or 5xx: status and reason.
struct Fail(u16, String);

fn bad(why: impl Into<String>) -> Fail {
    Fail(400, why.into())
}

type Answer = Result<Response, Fail>;

fn route(req: &Request, shared: &Shared, via: Via) -> Answer {
    let scraper = matches!(
        req.path.as_str(),
        "/metrics" | "/debug/pprof/heap" | "/debug/pprof/allocs"
    );
    if via == Via::Tcp && !scraper {
        return Err(Fail(
            403,
            format!(
                "{} is served on the daemon's Unix socket only; this port serves /metrics and /debug/pprof/heap and allocs",
                req.path
            ),
        ));
    }
    let post = req.method == Method::Post;
    if post && req.path != "/snapshot" {
        return Err(Fail(
            405,
            format!(
                "{} takes GET; POST is for taking a snapshot: POST /snapshot?pid=N&name=NAME",
                req.path
            ),
        ));
    }
    match req.path.as_str() {
        "/" => {
            known(req, &[])?;
            Ok(Response::ok(TEXT, INDEX.as_bytes().to_vec()))
        }
        "/processes" => processes(req, shared),
        "/summary" => view(req, shared, View::Summary),
        "/objects" => view(req, shared, View::Objects),
        "/diff" => diff(req, shared),
        "/snapshot" if post => take_snapshot(req, shared),
        "/snapshot" => get_snapshot(req, shared),
        "/leaks" => leaks(req, shared),
        "/referrers" => referrers(req, shared),
        "/metrics" => {
            known(req, &[])?;
            Ok(Response::ok(
                metrics::CONTENT_TYPE,
                metrics::render(&metrics::Figures::of(&shared.lock())).into_bytes(),
            ))
        }
        // Go serves one profile at both; scrapers (Alloy, Parca) ask for allocs by default.
        // Its sample types say what it holds: inuse_* only, since muppy keeps the live blocks,
        // not a count of every allocation since the start.
        "/debug/pprof/heap" | "/debug/pprof/allocs" => pprof(req, shared),
        p => Err(Fail(
            404,
            format!("no endpoint {p}; GET / lists the endpoints"),
        )),
    }
}

const INDEX: &str = "muppy daemon endpoints (parameters in the query string):
GET  /processes                         traced processes, live and recently ended
GET  /summary?pid=N                     live objects and bytes per site
GET  /objects?pid=N                     every live block
GET  /diff?pid=N&since=NAME             the change since a snapshot
POST /snapshot?pid=N&name=NAME          take a snapshot
GET  /snapshot?pid=N[&name=NAME]        a snapshot file (muppy-trace summary FILE)
GET  /leaks?pid=N                       a leak check (every block recorded: --sample-bytes 0 or --pid)
GET  /referrers?pid=N&addr=0x...        who points at a block (likewise)
GET  /metrics                           Prometheus text format
GET  /debug/pprof/heap?pid=N            Go's heap profile (go tool pprof): alloc_objects, alloc_space
                                        (since tracing began), inuse_objects, inuse_space
GET  /debug/pprof/allocs?pid=N          the same profile, alloc_space its default, as Go serves it
View parameters: format=json|table, group_by=site|function|stack|size, top=N, site=REGEX,
min_size=BYTES, max_size=BYTES, older_than=SECS.
";

/// Refuses parameters the endpoint does not take.
fn known(req: &Request, names: &[&str]) -> Result<(), Fail> {
    for (k, _) in &req.query {
        if !names.contains(&k.as_str()) {
            let takes = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            return Err(bad(format!(
                "{} does not take parameter {k:?} (it takes: {takes})",
                req.path
            )));
        }
    }
    Ok(())
}

fn number<T: std::str::FromStr>(req: &Request, name: &str) -> Result<Option<T>, Fail> {
    req.param(name)
        .map(|v| {
            v.parse()
                .map_err(|_| bad(format!("{name}={v:?} is not a number")))
        })
        .transpose()
}

/// The `pid` parameter.
fn pid(req: &Request) -> Result<u32, Fail> {
    number(req, "pid")?.ok_or_else(|| bad("give the process: pid=N"))
}

fn not_traced(pid: u32) -> Fail {
    Fail(
        404,
        format!("pid {pid} is not traced by the daemon (GET /processes lists them)"),
    )
}

fn no_heap() -> Fail {
    Fail(503, "the heap's copy was not made: ask again".into())
}

/// The image of the `pid` parameter, as of its last change.
fn image(req: &Request, shared: &Shared) -> Result<Image, Fail> {
    let pid = pid(req)?;
    shared
        .lock()
        .image(pid)
        .cloned()
        .ok_or_else(|| not_traced(pid))
}

/// The image of the `pid` parameter with its heap: a live process's copied at the next tick
/// (unless its table did not change since the last copy), an ended one's as it ended.
fn with_heap(req: &Request, shared: &Shared) -> Result<Image, Fail> {
    let pid = pid(req)?;
    // An ended image as it is; a live one is waited for.
    let ended = {
        let st = shared.lock();
        if st.live.contains_key(&pid) {
            None
        } else {
            Some(st.image(pid).cloned().ok_or_else(|| not_traced(pid))?)
        }
    };
    let img = match ended {
        Some(img) => img,
        None => shared.with_heap(pid, HEAP_WAIT).ok_or_else(|| {
            Fail(
                503,
                format!(
                    "pid {pid}'s heap was not copied in time (it ended, or the daemon is stopping): ask again"
                ),
            )
        })?,
    };
    if img.snap.is_none() {
        return Err(Fail(
            410,
            format!(
                "pid {pid} ended and its heap was too large to keep: its summary is in /processes and in the log"
            ),
        ));
    }
    Ok(img)
}

const VIEW_PARAMS: [&str; 9] = [
    "pid",
    "width",
    "format",
    "group_by",
    "top",
    "site",
    "min_size",
    "max_size",
    "older_than",
];

/// The view options the parameters give.
fn view_options(req: &Request, view: View) -> Result<ViewOptions, Fail> {
    let format = match req.param("format").unwrap_or("json") {
        "json" => Format::Json,
        "table" => Format::Table,
        f => return Err(bad(format!("format={f:?}: json or table"))),
    };
    let group_by = match req.param("group_by") {
        None => GroupBy::Site,
        Some(g) => GroupBy::named(g)
            .ok_or_else(|| bad(format!("group_by={g:?}: site, function, stack or size")))?,
    };
    let top = number::<usize>(req, "top")?.unwrap_or(15);
    if top == 0 || top > MAX_TOP {
        return Err(bad(format!("top={top}: from 1 to {MAX_TOP}")));
    }
    let site = match req.param("site") {
        Some(s) if s.len() > MAX_REGEX => {
            return Err(bad(format!("site: longer than {MAX_REGEX} bytes")));
        }
        Some(s) => Some(
            RegexBuilder::new(s)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    let why = e.to_string();
                    bad(format!(
                        "site: not a regular expression: {}",
                        why.lines().last().unwrap_or_default().trim()
                    ))
                })?,
        ),
        None => None,
    };
    let older_than = match number::<f64>(req, "older_than")? {
        Some(s) if s.is_finite() && s >= 0.0 => Duration::try_from_secs_f64(s).ok(),
        Some(s) => return Err(bad(format!("older_than={s}: seconds, 0 or more"))),
        None => None,
    };
    Ok(ViewOptions {
        view,
        group_by,
        filter: Filter {
            site,
            min_size: number(req, "min_size")?,
            max_size: number(req, "max_size")?,
            older_than,
            kind: None,
        },
        top,
        format,
        top_procs: 0,
        // The client's terminal, if it has one.
        width: number::<usize>(req, "width")?.filter(|&w| w > 0),
        full_names: false,
        output: None,
    })
}

fn content_type(opts: &ViewOptions) -> &'static str {
    if opts.format == Format::Json {
        JSON
    } else {
        TEXT
    }
}

/// The tracer's own use of the machine, now.
fn facts() -> Facts {
    Facts {
        exit: None,
        tracer: TracerUsage {
            peak_rss_kb: session::status_kb("VmHWM:"),
            rss_kb: session::status_kb("VmRSS:"),
            cpu_ms: session::cpu_ms(),
        },
    }
}

/// Runs `f` with a printer into a buffer, and answers with what it wrote.
fn printed(
    opts: ViewOptions,
    as_of_ms: u64,
    f: impl FnOnce(&mut dyn Print) -> Result<(), report::ReportError>,
) -> Answer {
    let ct = content_type(&opts);
    let mut buf = Vec::new();
    {
        let mut p = report::printer(opts, &mut buf);
        f(p.as_mut()).map_err(|e| Fail(400, e.to_string()))?;
    }
    let mut r = Response::ok(ct, buf);
    r.headers.push(("X-Muppy-As-Of-Ms", as_of_ms.to_string()));
    Ok(r)
}

fn view(req: &Request, shared: &Shared, view: View) -> Answer {
    known(req, &VIEW_PARAMS)?;
    let opts = view_options(req, view)?;
    let img = with_heap(req, shared)?;
    let pv = img.view().ok_or_else(no_heap)?;
    printed(opts, img.as_of_ms, |p| p.view(&pv, &facts()))
}

fn mark_name(req: &Request, param: &str) -> Result<Option<String>, Fail> {
    match req.param(param) {
        None => Ok(None),
        Some(n)
            if !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            Ok(Some(n.to_string()))
        }
        Some(n) => Err(bad(format!(
            "{param}={n:?}: a name of 1 to 64 letters, digits, '.', '_' or '-'"
        ))),
    }
}

fn mark(shared: &Shared, pid: u32, name: &str) -> Result<Arc<Snapshot>, Fail> {
    shared
        .lock()
        .marks
        .get(&pid)
        .and_then(|m| m.get(name))
        .cloned()
        .ok_or_else(|| {
            Fail(
                404,
                format!(
                    "pid {pid} has no snapshot named {name:?}: take one with POST /snapshot?pid={pid}&name={name}"
                ),
            )
        })
}

fn diff(req: &Request, shared: &Shared) -> Answer {
    let mut params = VIEW_PARAMS.to_vec();
    params.push("since");
    known(req, &params)?;
    let opts = view_options(req, View::Summary)?;
    let pid = pid(req)?;
    let since = mark_name(req, "since")?.ok_or_else(|| {
        bad(format!(
            "give the snapshot to compare with: since=NAME (take one with POST /snapshot?pid={pid}&name=NAME)"
        ))
    })?;
    let old = mark(shared, pid, &since)?;
    let img = with_heap(req, shared)?;
    let now = img.snap.as_ref().ok_or_else(no_heap)?;
    let summary = |s: &Snapshot| analysis::summarize(&s.heap(), &opts.filter, opts.group_by);
    let d = analysis::diff(&summary(&old), &summary(now));
    printed(opts.clone(), img.as_of_ms, |p| p.diff(&d, None))
}

#[derive(Serialize)]
struct SnapshotLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    pid: u32,
    name: &'a str,
    blocks: usize,
    as_of_ms: u64,
}

fn take_snapshot(req: &Request, shared: &Shared) -> Answer {
    known(req, &["pid", "name"])?;
    let name = mark_name(req, "name")?.ok_or_else(|| bad("give the snapshot a name=NAME"))?;
    let pid = pid(req)?;
    if !shared.lock().live.contains_key(&pid) {
        let ended = shared.lock().image(pid).is_some();
        return Err(if ended {
            Fail(409, format!("pid {pid} has ended: its heap is final"))
        } else {
            not_traced(pid)
        });
    }
    let img = with_heap(req, shared)?;
    let snap = img.snap.clone().ok_or_else(no_heap)?;
    {
        let mut st = shared.lock();
        let held = st.marks_held();
        let marks = st.marks.entry(pid).or_default();
        if !marks.contains_key(&name) && (marks.len() >= MARKS_PER_PROCESS || held >= MARKS_KEPT) {
            return Err(Fail(
                409,
                format!(
                    "the daemon keeps {MARKS_PER_PROCESS} snapshots per process and {MARKS_KEPT} in all: reuse a name"
                ),
            ));
        }
        marks.insert(name.clone(), Arc::clone(&snap));
    }
    let mut body = serde_json::to_vec(&SnapshotLine {
        kind: "snapshot",
        pid,
        name: &name,
        blocks: snap.blocks.len(),
        as_of_ms: img.as_of_ms,
    })
    .unwrap_or_default();
    body.push(b'\n');
    Ok(Response::ok(JSON, body))
}

fn get_snapshot(req: &Request, shared: &Shared) -> Answer {
    known(req, &["pid", "name"])?;
    let snap = match mark_name(req, "name")? {
        Some(n) => mark(shared, pid(req)?, &n)?,
        None => with_heap(req, shared)?.snap.ok_or_else(no_heap)?,
    };
    Ok(Response::ok("application/octet-stream", snap.encode()))
}

/// Queues a check for the session and waits for its answer.
fn check(req: &Request, shared: &Shared, spec: CheckSpec) -> Result<(CheckAnswer, u64), Fail> {
    let img = image(req, shared)?;
    let pid = img.id.pid;
    let (tx, rx) = mpsc::channel();
    {
        let mut st = shared.lock();
        match st.checkable {
            Checkable::All => {}
            Checkable::One(p) if p == pid => {}
            Checkable::One(p) => {
                return Err(Fail(
                    409,
                    format!("pid {pid} cannot be checked: this daemon traces pid {p} alone"),
                ));
            }
            Checkable::Sampled => {
                return Err(Fail(
                    409,
                    format!(
                        "pid {pid} cannot be checked: a leak check needs every block, and this daemon samples (start it with --sample-bytes 0)"
                    ),
                ));
            }
        }
        if !st.live.contains_key(&pid) {
            return Err(Fail(
                409,
                format!("pid {pid} has ended: its memory is gone"),
            ));
        }
        if st.checks.len() >= CHECKS_QUEUED {
            return Err(Fail(
                503,
                "checks are queued already: ask again when they are done".into(),
            ));
        }
        st.checks.push_back(PendingCheck {
            pid,
            spec,
            reply: tx,
        });
    }
    match rx.recv_timeout(CHECK_WAIT) {
        Ok(CheckAnswer::Failed(why)) => Err(Fail(409, why)),
        Ok(a) => Ok((a, img.as_of_ms)),
        Err(_) => Err(Fail(
            504,
            "the check was not made in time (the session is busy or stopping)".into(),
        )),
    }
}

fn leaks(req: &Request, shared: &Shared) -> Answer {
    let mut params = VIEW_PARAMS.to_vec();
    params.push("retention");
    known(req, &params)?;
    let opts = view_options(req, View::Summary)?;
    let spec = CheckSpec::Leaks {
        filter: opts.filter.clone(),
        group_by: opts.group_by,
        retention: req.param("retention").is_some_and(|v| v != "0"),
    };
    match check(req, shared, spec)? {
        (CheckAnswer::Leaks(r), as_of) => printed(opts, as_of, |p| p.leaks(&r)),
        _ => Err(Fail(409, "the check gave no leak report".into())),
    }
}

fn referrers(req: &Request, shared: &Shared) -> Answer {
    known(
        req,
        &[
            "pid",
            "format",
            "width",
            "addr",
            "site",
            "maxdepth",
            "max_roots",
            "top",
        ],
    )?;
    let opts = view_options(req, View::Summary)?;
    let addr = req
        .param("addr")
        .map(|a| {
            let hex = a.strip_prefix("0x").unwrap_or(a);
            u64::from_str_radix(hex, 16).map_err(|_| bad(format!("addr={a:?}: an address, 0x...")))
        })
        .transpose()?;
    if addr.is_some() == opts.filter.site.is_some() {
        return Err(bad("give addr=0x... or site=REGEX, one of them"));
    }
    let maxdepth = number::<usize>(req, "maxdepth")?.unwrap_or(4).min(64);
    let max_roots = number::<usize>(req, "max_roots")?.unwrap_or(20).min(1000);
    let spec = CheckSpec::Refs {
        addr,
        site: opts.filter.site.clone(),
        maxdepth,
        max_roots,
        top: opts.top.min(100),
    };
    match check(req, shared, spec)? {
        (CheckAnswer::Referrers(rs), as_of) => {
            printed(opts, as_of, |p| rs.iter().try_for_each(|r| p.referrers(r)))
        }
        _ => Err(Fail(409, "the search gave no referrers".into())),
    }
}

#[derive(Serialize)]
struct ProcessLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    pid: u32,
    comm: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ns_pid: Option<u32>,
    state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<u32>,
    live: bool,
    objects: u64,
    bytes: u64,
    events: u64,
    #[serde(skip_serializing_if = "is_zero")]
    sample_bytes: u64,
    as_of_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct ProcessesLine {
    #[serde(rename = "type")]
    kind: &'static str,
    live: usize,
    ended_kept: usize,
    ended_total: u64,
    lost_events: u64,
    lost_stacks: u64,
    ticks: u64,
    last_tick_ms: u64,
    stopped: bool,
}

fn processes(req: &Request, shared: &Shared) -> Answer {
    known(req, &["format", "width"])?;
    let opts = view_options(req, View::Summary)?;
    let (images, closing) = {
        let st = shared.lock();
        let images: Vec<(Image, bool)> = st
            .live
            .values()
            .map(|i| (i.clone(), true))
            .chain(st.ended.iter().rev().map(|i| (i.clone(), false)))
            .collect();
        let closing = ProcessesLine {
            kind: "processes",
            live: st.live.len(),
            ended_kept: st.ended.len(),
            ended_total: st.ended_total,
            lost_events: st.lost_events,
            lost_stacks: st.lost_stacks,
            ticks: st.ticks,
            last_tick_ms: st.last_tick_ms,
            stopped: st.stopped,
        };
        (images, closing)
    };
    if opts.format == Format::Table {
        let rows: Vec<_> = images
            .iter()
            .map(|(i, _)| {
                let (objects, bytes) = i.by_site.total();
                (i.id.clone(), i.state.clone(), objects, bytes)
            })
            .collect();
        let table = report::text::process_list(&rows, opts.top, closing.lost_events, opts.width);
        let mut r = Response::ok(TEXT, table.into_bytes());
        r.headers
            .push(("X-Muppy-As-Of-Ms", closing.last_tick_ms.to_string()));
        return Ok(r);
    }
    let mut buf = Vec::new();
    for (img, live) in &images {
        let (objects, bytes) = img.by_site.total();
        let line = ProcessLine {
            kind: "process",
            pid: img.id.pid,
            comm: &img.id.comm,
            ns_pid: img.id.ns_pid,
            state: &img.state,
            parent: img.parent,
            live: *live,
            objects,
            bytes,
            events: img.counters.events,
            sample_bytes: img.sample_bytes,
            as_of_ms: img.as_of_ms,
        };
        let _ = serde_json::to_writer(&mut buf, &line);
        buf.push(b'\n');
    }
    let _ = serde_json::to_writer(&mut buf, &closing);
    buf.push(b'\n');
    Ok(Response::ok(JSON, buf))
}

/// Go's heap profile of one process: what `go tool pprof`, Parca and Pyroscope read.
fn pprof(req: &Request, shared: &Shared) -> Answer {
    // Go's clients may add these; a heap profile is the same with them.
    known(req, &["pid", "gc", "debug"])?;
    if req.param("debug").is_some_and(|d| d != "0") {
        return Err(bad("debug=N: only the binary profile (debug=0) is written"));
    }
    let img = with_heap(req, shared)?;
    let pv = img.view().ok_or_else(no_heap)?;
    let opts = ViewOptions {
        format: Format::Pprof,
        group_by: GroupBy::Stack,
        ..ViewOptions::default()
    };
    let mut buf = Vec::new();
    let mut printer = report::pprof::PprofPrinter::new(opts, &mut buf);
    if req.path == "/debug/pprof/allocs" {
        printer = printer.allocs();
    }
    printer
        .view(&pv, &facts())
        .map_err(|e| Fail(400, e.to_string()))?;
    let mut r = Response::ok("application/octet-stream", buf);
    r.headers.push((
        "Content-Disposition",
        format!("attachment; filename=\"heap-{}.pb.gz\"", img.id.pid),
    ));
    Ok(r)
}
