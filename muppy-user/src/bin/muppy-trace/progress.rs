//! A progress bar on stderr for long work (reading a big snapshot, a leak check of a big heap),
//! drawn only when stderr is a terminal, and only once the work has lasted long enough to be
//! worth one: piped or quick, nothing is written.

use std::{
    io::{Read, Write as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use muppy_core::snapshot::Snapshot;

/// Work shorter than this draws nothing.
const QUIET: Duration = Duration::from_millis(300);
/// At most this often a redraw.
const EVERY: Duration = Duration::from_millis(100);
const WIDTH: u64 = 30;

/// One bar: `what [#####.....] 45% 120/260 MiB`.
pub struct Bar {
    what: String,
    unit: Unit,
    started: Instant,
    drawn: Option<Instant>,
    tty: bool,
}

/// What the counts are.
#[derive(Clone, Copy)]
pub enum Unit {
    /// Bytes, shown in MiB.
    Bytes,
    /// Steps of a named sequence.
    Steps,
}

impl Bar {
    /// A bar for `what`; it draws only if stderr is a terminal.
    pub fn new(what: impl Into<String>, unit: Unit) -> Self {
        Bar {
            what: what.into(),
            unit,
            started: Instant::now(),
            drawn: None,
            // SAFETY: isatty only looks at the descriptor.
            tty: unsafe { libc::isatty(libc::STDERR_FILENO) } == 1,
        }
    }

    /// Renames the work in progress (a check's next stage).
    pub fn stage(&mut self, what: impl Into<String>) {
        self.what = what.into();
    }

    /// `done` of `total` are done.
    pub fn set(&mut self, done: u64, total: u64) {
        if !self.tty || self.started.elapsed() < QUIET {
            return;
        }
        if self.drawn.is_some_and(|d| d.elapsed() < EVERY) && done < total {
            return;
        }
        self.drawn = Some(Instant::now());
        let line = render(&self.what, self.unit, done, total);
        let mut err = std::io::stderr().lock();
        // A bar that cannot be drawn is no reason to stop the work.
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    /// The work is over: the bar's line is cleared, so that what follows starts clean.
    pub fn finish(&mut self) {
        if self.drawn.take().is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

fn render(what: &str, unit: Unit, done: u64, total: u64) -> String {
    let done = done.min(total);
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    let counts = match unit {
        Unit::Bytes => format!("{} / {} MiB", mib(done), mib(total)),
        Unit::Steps => format!("{done}/{total}"),
    };
    format!("{what} [{bar}] {percent:>3}% {counts}")
}

fn mib(bytes: u64) -> String {
    format!("{}.{}", bytes >> 20, ((bytes & 0xf_ffff) * 10) >> 20)
}

/// Reads a snapshot, with a bar while its bytes are read and then parsed.
pub fn load_snapshot(path: &Path) -> anyhow::Result<Snapshot> {
    let mut file =
        std::fs::File::open(path).map_err(|source| muppy_core::snapshot::SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bar = Bar::new(format!("reading {}", path.display()), Unit::Bytes);
    let mut bytes = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut chunk)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        bar.set(bytes.len() as u64, total.max(bytes.len() as u64));
    }
    bar.stage(format!("parsing {}", path.display()));
    bar.set(bytes.len() as u64, bytes.len() as u64);
    let snap = Snapshot::decode(&bytes, path)?;
    bar.finish();
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_say_how_far() {
        assert_eq!(
            render("reading a.muppy", Unit::Bytes, 3 << 19, 3 << 20),
            "reading a.muppy [###############...............]  50% 1.5 / 3.0 MiB"
        );
        assert_eq!(
            render("leak check: classifying", Unit::Steps, 2, 4),
            "leak check: classifying [###############...............]  50% 2/4"
        );
        // Nothing to do is all done, never a division by zero.
        assert!(render("x", Unit::Steps, 0, 0).contains("100% 0/0"));
    }
}
