//! `muppy-trace daemon`: a session that runs until SIGTERM, whose state clients query over
//! HTTP/1.1 on a Unix socket (and scrapers on an optional TCP port).
//!
//! The session runs on the calling thread as for the CLI, into a [`sink::DaemonSink`] that
//! copies the traced heaps into the [`store`] at each tick (a process whose table did not
//! change keeps its copy). Each connection gets a thread of its own, which reads the store
//! and answers with the CLI's own printers ([`api`]); checks (leaks, referrers) are handed to
//! the session at its next tick. The socket is root's alone (0600 in a 0700 directory, and
//! the peer's uid checked), unless `--group` lets a group in.

use std::{
    io,
    net::{SocketAddr, TcpListener},
    os::{
        fd::AsRawFd as _,
        unix::{
            fs::{DirBuilderExt as _, PermissionsExt as _},
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

pub mod api;
pub mod http;
pub mod log;
pub mod metrics;
pub mod sink;
pub mod store;

use api::Via;
use store::Shared;

/// The socket's default path.
pub const DEFAULT_SOCKET: &str = "/run/muppy/muppy.sock";
/// Connections served at once; more are answered 503 at once.
const MAX_CONNECTIONS: usize = 256;
/// How long writing an answer may take.
const WRITE_DEADLINE: Duration = Duration::from_secs(30);

/// Why the daemon could not serve.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The socket's directory or file could not be made.
    #[error("socket {path}: {what}: {source}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("socket {0}: another daemon is serving on it (stop it first, or give --socket PATH)")]
    InUse(PathBuf),
    /// The TCP port could not be bound.
    #[error("--listen {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Who may use the socket besides root: the members of this group.
#[derive(Clone, Copy, Debug)]
pub struct Group {
    /// Its gid.
    pub gid: u32,
}

/// Where the daemon serves.
#[derive(Debug)]
pub struct Listeners {
    unix: UnixListener,
    path: PathBuf,
    tcp: Option<TcpListener>,
    group: Option<Group>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Listeners {
    /// Binds the socket at `path` (its directory made 0700, or 0750 for `group`; the socket
    /// 0600, or 0660 for `group`) and, if given, the TCP address.
    pub fn bind(
        path: &Path,
        group: Option<Group>,
        listen: Option<SocketAddr>,
    ) -> Result<Self, DaemonError> {
        let err = |what: &'static str| {
            move |source| DaemonError::Socket {
                path: path.to_path_buf(),
                what,
                source,
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(if group.is_some() { 0o750 } else { 0o700 })
                .create(dir)
                .map_err(err("creating its directory"))?;
            if let Some(g) = group {
                chown(dir, g.gid).map_err(err("giving its directory to the group"))?;
            }
        }
        if path.exists() {
            // A socket no one answers on is left from a daemon that died: replace it.
            if UnixStream::connect(path).is_ok() {
                return Err(DaemonError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(err("removing the stale socket"))?;
        }
        // Made with no permissions at all, so that no one connects before they are set.
        // SAFETY: umask only sets this process's file mode mask.
        let old = unsafe { libc::umask(0o777) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let unix = bound.map_err(err("binding"))?;
        let mut listeners = Listeners {
            unix,
            path: path.to_path_buf(),
            tcp: None,
            group,
        };
        if let Some(g) = group {
            chown(path, g.gid).map_err(err("giving it to the group"))?;
        }
        let mode = if group.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(err("setting its mode"))?;
        listeners.tcp = listen
            .map(|addr| {
                TcpListener::bind(addr).map_err(|source| DaemonError::Listen { addr, source })
            })
            .transpose()?;
        Ok(listeners)
    }

    /// The TCP address bound, if any (the port, when 0 was asked).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|t| t.local_addr().ok())
    }

    /// Serves requests from `shared` on threads of their own, until the process exits.
    pub fn serve(&self, shared: &Shared) -> io::Result<()> {
        let busy = Arc::new(AtomicUsize::new(0));
        let unix = self.unix.try_clone()?;
        let (s, b, group) = (shared.clone(), Arc::clone(&busy), self.group);
        std::thread::Builder::new()
            .name("muppy-api".into())
            .spawn(move || {
                for conn in unix.incoming().flatten() {
                    let allowed = peer_allowed(&conn, group);
                    spawn_connection(conn, &s, &b, Via::Socket, allowed);
                }
            })?;
        if let Some(tcp) = &self.tcp {
            let tcp = tcp.try_clone()?;
            let (s, b) = (shared.clone(), busy);
            std::thread::Builder::new()
                .name("muppy-scrape".into())
                .spawn(move || {
                    for conn in tcp.incoming().flatten() {
                        spawn_connection(conn, &s, &b, Via::Tcp, Ok(()));
                    }
                })?;
        }
        Ok(())
    }
}

fn chown(path: &Path, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(0), Some(gid))
}

/// A connection's stream, whichever listener it came from.
trait Conn: io::Read + io::Write + Send + 'static {
    fn deadlines(&self) -> io::Result<()>;
}

impl Conn for UnixStream {
    fn deadlines(&self) -> io::Result<()> {
        self.set_read_timeout(Some(http::HEAD_DEADLINE))?;
        self.set_write_timeout(Some(WRITE_DEADLINE))
    }
}

impl Conn for std::net::TcpStream {
    fn deadlines(&self) -> io::Result<()> {
        self.set_read_timeout(Some(http::HEAD_DEADLINE))?;
        self.set_write_timeout(Some(WRITE_DEADLINE))
    }
}

/// Whether the socket's peer may use it: root, or a member of `group`; else why not.
fn peer_allowed(conn: &UnixStream, group: Option<Group>) -> Result<(), String> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).unwrap_or(0);
    // SAFETY: SO_PEERCRED writes one ucred into the struct given, of the length given.
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if r != 0 {
        return Err("the peer's credentials could not be read".into());
    }
    if cred.uid == 0 {
        return Ok(());
    }
    if let Some(g) = group
        && (cred.gid == g.gid || in_group(cred.pid, g.gid))
    {
        return Ok(());
    }
    Err(format!(
        "uid {} may not query the daemon: only root{}",
        cred.uid,
        if group.is_some() {
            " and the daemon's --group"
        } else {
            " (start the daemon with --group G to let a group in)"
        }
    ))
}

/// Whether process `pid` has `gid` among its supplementary groups.
fn in_group(pid: i32, gid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
    })
}

fn spawn_connection<C: Conn>(
    mut conn: C,
    shared: &Shared,
    busy: &Arc<AtomicUsize>,
    via: Via,
    allowed: Result<(), String>,
) {
    if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        busy.fetch_sub(1, Ordering::SeqCst);
        let _ = conn.deadlines();
        let _ = http::Response::error(503, "too many connections at once: try again")
            .write_to(&mut conn, false);
        return;
    }
    let (shared, busy2) = (shared.clone(), Arc::clone(busy));
    let spawned = std::thread::Builder::new()
        .name("muppy-conn".into())
        .spawn(move || {
            serve_one(conn, &shared, via, allowed);
            busy2.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        busy.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve_one<C: Conn>(mut conn: C, shared: &Shared, via: Via, allowed: Result<(), String>) {
    if conn.deadlines().is_err() {
        return;
    }
    let (resp, head_only) = match (allowed, http::read_request(&mut conn)) {
        (Err(why), _) => (http::Response::error(403, why), false),
        (Ok(()), Err(e)) => (http::Response::error(e.status(), e), false),
        (Ok(()), Ok(req)) => (
            api::answer(&req, shared, via),
            req.method == http::Method::Head,
        ),
    };
    let _ = resp.write_to(&mut conn, head_only);
}

/// Tells systemd (`Type=notify`) the daemon is ready: the probes are attached.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let _ = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| sock.send_to_addr(b"READY=1", &a))
        }
        None => sock.send_to(b"READY=1", &path),
    };
}

/// A client's request to the daemon at `socket`: `GET path` (or POST), and its answer.
pub fn query(socket: &Path, method: &str, path: &str) -> io::Result<http::Answer> {
    use std::io::Write as _;
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(Duration::from_secs(300)))?;
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: muppy\r\nConnection: close\r\n\r\n"
    )?;
    http::read_answer(&mut conn)
}
