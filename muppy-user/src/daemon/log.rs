//! The daemon's log (`--log FILE`): JSON Lines, the CLI's own `--format json` lines. Each
//! record is a `{"type":"record"}` line followed by the `diff` lines of the processes that
//! changed since the last record; an `exited` line as each process ends; at the stop, the
//! final state of every process (`process` and `summary` lines, then `processes`); with
//! `--check-every`, each scheduled leak check's `leaks` line.
//!
//! The file is created 0600 (it names other processes' functions and sizes). When it reaches
//! `max_bytes` it is renamed FILE.1 (FILE.1 to FILE.2, and so on up to `keep`) and a new one
//! started; SIGHUP reopens it, for logrotate.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use muppy_core::{
    analysis::Diff,
    model::Identity,
    report::{Facts, Format, Print, ProcView, ViewOptions, json::JsonPrinter},
};
use serde::Serialize;

use super::store::unix_ms;

/// Set by SIGHUP; the sink reopens the log at its next tick.
static REOPEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sighup(_: libc::c_int) {
    REOPEN.store(true, Ordering::SeqCst);
}

/// Takes SIGHUP as "reopen the log" from now on.
pub fn reopen_on_sighup() -> io::Result<()> {
    // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
    let old = unsafe { libc::signal(libc::SIGHUP, on_sighup as *const () as libc::sighandler_t) };
    if old == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a SIGHUP came since the last call.
pub fn take_reopen() -> bool {
    REOPEN.swap(false, Ordering::SeqCst)
}

/// Why the log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be opened, written or rotated.
    #[error("log {path}: {what}: {source}")]
    Io {
        /// The log.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// `{"type":"record"}`: a record's first line.
#[derive(Serialize)]
struct RecordLine {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Wall-clock milliseconds since the epoch.
    unix_ms: u64,
    /// Processes whose diff follows.
    changed: usize,
}

/// `{"type":"stop"}`: the last line the daemon writes.
#[derive(Serialize)]
struct StopLine {
    #[serde(rename = "type")]
    kind: &'static str,
    unix_ms: u64,
}

/// The log.
pub struct Log {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    size: u64,
    /// Rotate at this size.
    max_bytes: u64,
    /// Rotated files kept.
    keep: u32,
}

impl Log {
    /// Opens (appends to) `path`.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> Result<Self, LogError> {
        let file = open(path)?;
        let size = file.metadata().map_or(0, |m| m.len());
        Ok(Log {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            keep,
        })
    }

    fn err(&self, what: &'static str) -> impl FnOnce(io::Error) -> LogError + '_ {
        move |source| LogError::Io {
            path: self.path.clone(),
            what,
            source,
        }
    }

    /// Opens the file at its path again (after SIGHUP: logrotate moved it).
    pub fn reopen(&mut self) -> Result<(), LogError> {
        self.file = open(&self.path)?;
        self.size = self.file.metadata().map_or(0, |m| m.len());
        Ok(())
    }

    /// Writes `lines` (whole lines) at once, rotating first if they would pass the size.
    fn write(&mut self, lines: &[u8]) -> Result<(), LogError> {
        if lines.is_empty() {
            return Ok(());
        }
        if self.size > 0 && self.size + lines.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(lines).map_err(self.err("writing"))?;
        self.size += lines.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            std::fs::remove_file(&self.path).map_err(self.err("removing the full file"))?;
        } else {
            for n in (1..self.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1)).map_err(self.err("rotating"))?;
                }
            }
            std::fs::rename(&self.path, numbered(1)).map_err(self.err("rotating"))?;
        }
        self.reopen()
    }

    /// A record: the diffs of the processes that changed.
    pub fn diffs(&mut self, diffs: &[(Diff, Identity)]) -> Result<(), LogError> {
        let mut buf = line(&RecordLine {
            kind: "record",
            unix_ms: unix_ms(),
            changed: diffs.len(),
        });
        {
            let mut p = printer(&mut buf);
            for (d, id) in diffs {
                let _ = p.diff(d, Some(id));
            }
        }
        self.write(&buf)
    }

    /// A process that ended: what it left live.
    pub fn ended(&mut self, p: &ProcView) -> Result<(), LogError> {
        let mut buf = Vec::new();
        let _ = printer(&mut buf).ended(p);
        self.write(&buf)
    }

    /// A scheduled leak check's report.
    pub fn leaks(&mut self, r: &muppy_core::analysis::LeakReport) -> Result<(), LogError> {
        let mut buf = Vec::new();
        let _ = printer(&mut buf).leaks(r);
        self.write(&buf)
    }

    /// The stop: every process's final state, then a `stop` line.
    pub fn last(&mut self, procs: &[ProcView], facts: &Facts) -> Result<(), LogError> {
        let mut buf = Vec::new();
        let _ = printer(&mut buf).processes(procs, facts);
        buf.extend(line(&StopLine {
            kind: "stop",
            unix_ms: unix_ms(),
        }));
        self.write(&buf)?;
        self.file.sync_all().map_err(self.err("syncing"))
    }
}

fn open(path: &Path) -> Result<File, LogError> {
    use std::os::unix::fs::DirBuilderExt as _;
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| LogError::Io {
                path: path.to_path_buf(),
                what: "creating its directory",
                source,
            })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| LogError::Io {
            path: path.to_path_buf(),
            what: "opening",
            source,
        })
}

fn line(v: &impl Serialize) -> Vec<u8> {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    b
}

fn printer(buf: &mut Vec<u8>) -> JsonPrinter<&mut Vec<u8>> {
    JsonPrinter::new(
        ViewOptions {
            format: Format::Json,
            ..ViewOptions::default()
        },
        buf,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_at_its_size_and_keeps_its_files() {
        let dir = std::env::temp_dir().join(format!("muppy-log-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.jsonl");
        let mut log = Log::open(&path, 100, 2).unwrap();
        for _ in 0..10 {
            log.write(&[b'x'; 59]).unwrap();
        }
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 59);
        assert!(dir.join("d.jsonl.1").exists() && dir.join("d.jsonl.2").exists());
        assert!(!dir.join("d.jsonl.3").exists());
        // Moved away, then reopened: a new file.
        std::fs::rename(&path, dir.join("moved")).unwrap();
        log.reopen().unwrap();
        log.write(b"y\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"y\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
