//! Snapshots: a heap saved to a file (`--save`) and read back for offline views
//! (`muppy-trace summary FILE`, `muppy-trace diff A B`), as heaptrack separates recording from
//! analysis.
//!
//! The file is self-contained (call paths are stored symbolized, so it reads anywhere without
//! the target's binaries) and compact: LEB128 integers, strings stored once, blocks sorted by
//! address with address deltas. Layout:
//!
//! ```text
//! "MUPPYSNP" | version: u32 LE | payload length: u64 LE | payload | CRC-32 of payload: u32 LE
//! payload: pid, now_ns, saved_unix_secs, the five counters, sample_bytes, age_resolution_ns,
//!          label,
//!          strings (count, then length + UTF-8 each),
//!          frames (count, then: addr, module, offset, function, function_offset, file, line,
//!                  inlined; module, function and file are a string's index + 1, line is
//!                  line + 1, 0 for none),
//!          traces (count, then: state, frame count, frame indices),
//!          blocks (count, then: address delta, size, age_ns, tid, trace),
//!          verdicts (per block in the same order: 0 for none, else 1 + kind × 2 + confirmed,
//!                    kinds numbered definitely, indirectly, possibly lost, reachable; then,
//!                    for a definitely lost block, its indirect bytes),
//!          the check (0 for none, else 1, then check, two_checks, pause_us, scanned_bytes,
//!                     unaccounted_root_bytes, loader_blocks, threads),
//!          modules (count, then: path, build id (empty for none), start, limit, offset;
//!                   strings stored inline; since version 6)
//! ```
//!
//! Trace states: 0 off, 1 lost, 2 walked, 3-7 cut (copy, depth, signal, trampoline, no CFI;
//! since version 5). Version 5 had no modules. Version 3 had no verdicts and no check. Version 2 stored each frame as its name (a string) and each trace's function; version 1
//! was version 2 without the age resolution. Both still read: their names are parsed back into
//! frames ([`Frame::from_name`]).
//!
//! Snapshots hold another process's addresses and symbols: they are written readable by their
//! owner only (0600), as core dumps are.

use std::{
    collections::HashMap,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use crate::model::{
    Allocated, Block, Blocks, CheckFacts, Counters, Cut, Frame, Heap, LeakKind, ModuleFile,
    StackState, Trace, Verdict,
};

const MAGIC: &[u8; 8] = b"MUPPYSNP";
/// The snapshot format version this muppy writes. It reads this one and versions 1 to 5
/// (version 5 had no modules; version 4 had no cut stacks; version 3 had no leak verdicts; 1 and 2 stored frames as names; version 1 had no age
/// resolution, its ages were exact).
pub const VERSION: u32 = 6;
const HEADER: usize = 8 + 4 + 8;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start like a snapshot.
    #[error("{path}: not a muppy snapshot (save one with --save FILE)")]
    NotSnapshot {
        /// The file.
        path: PathBuf,
    },
    /// Written by another version of the format.
    #[error("{path}: snapshot format version {found}; this muppy reads versions 1 to {VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// The file ends before its stated length.
    #[error("{path}: truncated snapshot ({have} of {want} bytes)")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes present.
        have: usize,
        /// Bytes the header promises.
        want: usize,
    },
    /// The contents do not check out.
    #[error("{path}: corrupt snapshot ({why})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: &'static str,
    },
}

/// A heap read from a snapshot file.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The traced process.
    pub pid: u32,
    /// `CLOCK_MONOTONIC` nanoseconds when it was taken; ages are measured from here.
    pub now_ns: u64,
    /// Wall-clock seconds since the epoch when it was saved.
    pub saved_unix_secs: u64,
    /// Trust counters at that moment.
    pub counters: Counters,
    /// Non-zero: the blocks are a sample (see [`Heap::sample_bytes`]).
    pub sample_bytes: u64,
    /// What was traced (the command, or `pid N`).
    pub label: String,
    /// Call paths.
    pub traces: Vec<Trace>,
    /// Live blocks, sorted by address.
    pub blocks: Vec<(u64, Block)>,
    /// The leak check whose verdicts the blocks carry (`leaks --save`), if one was made.
    pub check: Option<CheckFacts>,
    /// The process's executable file mappings (none before version 6).
    pub modules: Vec<ModuleFile>,
    /// What each trace allocated since tracing began ([`Heap::allocated`]): kept in memory,
    /// not saved (a file holds what was live).
    pub allocated: Vec<Allocated>,
}

impl Snapshot {
    /// Copies `heap` (every block, unfiltered) into a snapshot.
    pub fn of(heap: &Heap, label: &str) -> Self {
        let mut blocks = Vec::new();
        heap.blocks.for_each_block(&mut |a, b| blocks.push((a, *b)));
        blocks.sort_unstable_by_key(|(a, _)| *a);
        Snapshot {
            pid: heap.pid,
            now_ns: heap.now_ns,
            saved_unix_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            counters: heap.counters,
            sample_bytes: heap.sample_bytes,
            label: label.to_string(),
            traces: heap.traces.to_vec(),
            blocks,
            check: None,
            modules: heap.modules.to_vec(),
            allocated: heap.allocated.to_vec(),
        }
    }

    /// The snapshot as a heap for the views.
    pub fn heap(&self) -> Heap<'_> {
        Heap {
            pid: self.pid,
            blocks: self,
            traces: &self.traces,
            now_ns: self.now_ns,
            counters: self.counters,
            sample_bytes: self.sample_bytes,
            modules: &self.modules,
            allocated: &self.allocated,
        }
    }

    /// The numbers the payload starts with, in order (version 1 ended them before the last).
    fn header_numbers(&self) -> [u64; 10] {
        let c = &self.counters;
        [
            u64::from(self.pid),
            self.now_ns,
            self.saved_unix_secs,
            c.lost_events,
            c.unknown_frees,
            c.libc_unknown_frees,
            c.lost_stacks,
            c.events,
            self.sample_bytes,
            c.age_resolution_ns,
        ]
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        for v in self.header_numbers() {
            put(&mut p, v);
        }
        put_str(&mut p, &self.label);
        let mut strings = Interner::default();
        let mut frames = Interner::default();
        let traces: Vec<(u64, Vec<u64>)> = self
            .traces
            .iter()
            .map(|t| {
                (
                    stack_state_code(t.state),
                    t.frames.iter().map(|f| frames.index(f)).collect(),
                )
            })
            .collect();
        let frames: Vec<[u64; 8]> = frames
            .items
            .iter()
            .map(|f| {
                let mut opt = |s: &Option<String>| s.as_ref().map_or(0, |s| strings.index(s) + 1);
                [
                    f.addr,
                    opt(&f.module),
                    f.offset,
                    opt(&f.function),
                    f.function_offset,
                    opt(&f.file),
                    f.line.map_or(0, |l| u64::from(l) + 1),
                    u64::from(f.inlined),
                ]
            })
            .collect();
        put(&mut p, strings.items.len() as u64);
        for s in &strings.items {
            put_str(&mut p, s);
        }
        put(&mut p, frames.len() as u64);
        for f in &frames {
            f.iter().for_each(|v| put(&mut p, *v));
        }
        put(&mut p, traces.len() as u64);
        for (state, frames) in &traces {
            put(&mut p, *state);
            put(&mut p, frames.len() as u64);
            frames.iter().for_each(|f| put(&mut p, *f));
        }
        self.put_blocks(&mut p);
        for (_, b) in &self.blocks {
            match b.leak {
                None => put(&mut p, 0),
                Some(v) => {
                    put(&mut p, 1 + (v.kind as u64) * 2 + u64::from(v.confirmed));
                    if v.kind == LeakKind::DefinitelyLost {
                        put(&mut p, v.indirect_bytes);
                    }
                }
            }
        }
        match &self.check {
            None => put(&mut p, 0),
            Some(c) => {
                put(&mut p, 1);
                for v in [
                    u64::from(c.check),
                    u64::from(c.two_checks),
                    u64::try_from(c.pause.as_micros()).unwrap_or(u64::MAX),
                    c.scanned_bytes,
                    c.unaccounted_root_bytes,
                    c.loader_blocks,
                    u64::from(c.threads),
                ] {
                    put(&mut p, v);
                }
            }
        }
        put(&mut p, self.modules.len() as u64);
        for m in &self.modules {
            put_str(&mut p, &m.path);
            put_str(&mut p, m.build_id.as_deref().unwrap_or(""));
            for v in [m.start, m.limit, m.offset] {
                put(&mut p, v);
            }
        }
        wrap(VERSION, &p)
    }

    /// The blocks, as every version stores them: count, then per block its address's delta
    /// from the one before, size, age, thread and trace.
    fn put_blocks(&self, p: &mut Vec<u8>) {
        put(p, self.blocks.len() as u64);
        let mut prev = 0;
        for (addr, b) in &self.blocks {
            put(p, addr - prev);
            prev = *addr;
            put(p, b.size);
            put(p, self.now_ns.saturating_sub(b.ts_ns));
            put(p, u64::from(b.tid));
            put(p, u64::from(b.trace));
        }
    }

    /// Writes the snapshot to `path`, readable by its owner only (a file that exists
    /// already keeps its mode, as with any rewrite).
    pub fn save(&self, path: &Path) -> Result<(), SnapshotError> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(&self.encode()))
            .map_err(|source| SnapshotError::Io {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Reads a snapshot from `path`.
    pub fn load(path: &Path) -> Result<Self, SnapshotError> {
        let bytes = std::fs::read(path).map_err(|source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::decode(&bytes, path)
    }

    /// Parses a snapshot's bytes; `path` is for messages.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self, SnapshotError> {
        let path = || path.to_path_buf();
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::NotSnapshot { path: path() });
        }
        let truncated = |want: usize| SnapshotError::Truncated {
            path: path(),
            have: bytes.len(),
            want,
        };
        let header = bytes.get(..HEADER).ok_or_else(|| truncated(HEADER))?;
        let found = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if !(1..=VERSION).contains(&found) {
            return Err(SnapshotError::Version {
                path: path(),
                found,
            });
        }
        let len = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
        let want = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(HEADER + 4))
            .ok_or_else(|| truncated(usize::MAX))?;
        if bytes.len() < want {
            return Err(truncated(want));
        }
        let corrupt = |why| SnapshotError::Corrupt { path: path(), why };
        if bytes.len() > want {
            return Err(corrupt("bytes after the end"));
        }
        let payload = &bytes[HEADER..want - 4];
        let crc = u32::from_le_bytes(bytes[want - 4..].try_into().expect("4 bytes"));
        if crc32fast::hash(payload) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        parse(payload, found).map_err(corrupt)
    }
}

impl Blocks for Snapshot {
    fn for_each_block(&self, f: &mut dyn FnMut(u64, &Block)) {
        for (a, b) in &self.blocks {
            f(*a, b);
        }
    }

    fn block(&self, addr: u64) -> Option<Block> {
        let i = self.blocks.binary_search_by_key(&addr, |(a, _)| *a).ok()?;
        Some(self.blocks[i].1)
    }
}

/// Items stored once, by index in order of first use.
struct Interner<T> {
    items: Vec<T>,
    index: HashMap<T, u64>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: Clone + Eq + std::hash::Hash> Interner<T> {
    fn index(&mut self, item: &T) -> u64 {
        if let Some(&i) = self.index.get(item) {
            return i;
        }
        let i = self.items.len() as u64;
        self.items.push(item.clone());
        self.index.insert(item.clone(), i);
        i
    }
}

/// A payload framed as a file: magic, version, length, payload, checksum.
fn wrap(version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads the payload; every count is checked against the bytes left, so a corrupt count
/// cannot ask for a huge allocation.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u64(&mut self) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.rest.split_first().ok_or("ends inside a number")?;
            self.rest = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("number too long")
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        u32::try_from(self.u64()?).map_err(|_| "number out of range")
    }

    /// A count of items that take at least `min_bytes` each.
    fn count(&mut self, min_bytes: usize) -> Result<usize, &'static str> {
        let n = usize::try_from(self.u64()?).map_err(|_| "count out of range")?;
        if n.saturating_mul(min_bytes) > self.rest.len() {
            return Err("count larger than the file");
        }
        Ok(n)
    }

    fn str(&mut self) -> Result<&'a str, &'static str> {
        let n = self.count(1)?;
        let (s, rest) = self.rest.split_at(n);
        self.rest = rest;
        std::str::from_utf8(s).map_err(|_| "string is not UTF-8")
    }
}

/// A trace's state as stored (the cut reasons since version 5).
fn stack_state_code(s: StackState) -> u64 {
    match s {
        StackState::Off => 0,
        StackState::Lost => 1,
        StackState::Walked => 2,
        StackState::Cut(Cut::Copy) => 3,
        StackState::Cut(Cut::Depth) => 4,
        StackState::Cut(Cut::Signal) => 5,
        StackState::Cut(Cut::Trampoline) => 6,
        StackState::Cut(Cut::NoCfi) => 7,
    }
}

fn stack_state(v: u64) -> Result<StackState, &'static str> {
    Ok(match v {
        0 => StackState::Off,
        1 => StackState::Lost,
        2 => StackState::Walked,
        3 => StackState::Cut(Cut::Copy),
        4 => StackState::Cut(Cut::Depth),
        5 => StackState::Cut(Cut::Signal),
        6 => StackState::Cut(Cut::Trampoline),
        7 => StackState::Cut(Cut::NoCfi),
        _ => return Err("unknown stack state"),
    })
}

fn trace(frames: Vec<Frame>, state: StackState) -> Result<Trace, &'static str> {
    if frames.is_empty() {
        return Err("call path without frames");
    }
    Ok(Trace::new(frames, state))
}

fn parse(payload: &[u8], version: u32) -> Result<Snapshot, &'static str> {
    let mut r = Reader { rest: payload };
    let pid = r.u32()?;
    let now_ns = r.u64()?;
    let saved_unix_secs = r.u64()?;
    let mut counters = Counters {
        lost_events: r.u64()?,
        unknown_frees: r.u64()?,
        libc_unknown_frees: r.u64()?,
        lost_stacks: r.u64()?,
        events: r.u64()?,
        age_resolution_ns: 0,
    };
    let sample_bytes = r.u64()?;
    if version >= 2 {
        counters.age_resolution_ns = r.u64()?;
    }
    let label = r.str()?.to_string();
    let n = r.count(1)?;
    let strings: Vec<&str> = (0..n).map(|_| r.str()).collect::<Result<_, _>>()?;
    let string = |i: u64| -> Result<String, &'static str> {
        usize::try_from(i)
            .ok()
            .and_then(|i| strings.get(i))
            .map(|s| s.to_string())
            .ok_or("string index out of range")
    };
    let traces = if version >= 3 {
        let optional = |i: u64| -> Result<Option<String>, &'static str> {
            i.checked_sub(1).map(string).transpose()
        };
        let n = r.count(8)?;
        let mut frames = Vec::with_capacity(n);
        for _ in 0..n {
            frames.push(Frame {
                addr: r.u64()?,
                module: optional(r.u64()?)?,
                offset: r.u64()?,
                function: optional(r.u64()?)?,
                function_offset: r.u64()?,
                file: optional(r.u64()?)?,
                line: match r.u64()? {
                    0 => None,
                    l => Some(u32::try_from(l - 1).map_err(|_| "line out of range")?),
                },
                inlined: match r.u64()? {
                    0 => false,
                    1 => true,
                    _ => return Err("inlined is not 0 or 1"),
                },
            });
        }
        let n = r.count(2)?;
        let mut traces = Vec::with_capacity(n);
        for _ in 0..n {
            let state = stack_state(r.u64()?)?;
            let count = r.count(1)?;
            let frames = (0..count)
                .map(|_| {
                    let i = usize::try_from(r.u64()?).map_err(|_| "frame index out of range")?;
                    frames.get(i).cloned().ok_or("frame index out of range")
                })
                .collect::<Result<Vec<_>, _>>()?;
            traces.push(trace(frames, state)?);
        }
        traces
    } else {
        let n = r.count(4)?;
        let mut traces = Vec::with_capacity(n);
        for _ in 0..n {
            let state = stack_state(r.u64()?)?;
            // The site's function: derived from the frames since version 3.
            string(r.u64()?)?;
            let count = r.count(1)?;
            let frames = (0..count)
                .map(|_| Ok(Frame::from_name(&string(r.u64()?)?)))
                .collect::<Result<Vec<_>, &'static str>>()?;
            traces.push(trace(frames, state)?);
        }
        traces
    };
    let n = r.count(5)?;
    let mut blocks = Vec::with_capacity(n);
    let mut addr = 0u64;
    for i in 0..n {
        let delta = r.u64()?;
        if i > 0 && delta == 0 {
            return Err("blocks out of order");
        }
        addr = addr.checked_add(delta).ok_or("address out of range")?;
        let size = r.u64()?;
        let age = r.u64()?;
        let tid = r.u32()?;
        let trace = r.u32()?;
        if trace as usize >= traces.len() {
            return Err("trace index out of range");
        }
        blocks.push((
            addr,
            Block {
                size,
                ts_ns: now_ns.saturating_sub(age),
                trace,
                tid,
                leak: None,
            },
        ));
    }
    let mut check = None;
    if version >= 4 {
        for (_, b) in &mut blocks {
            let code = r.u64()?;
            if code == 0 {
                continue;
            }
            let kind = usize::try_from((code - 1) / 2)
                .ok()
                .and_then(|k| LeakKind::ALL.get(k).copied())
                .ok_or("unknown leak kind")?;
            let indirect_bytes = if kind == LeakKind::DefinitelyLost {
                r.u64()?
            } else {
                0
            };
            b.leak = Some(Verdict {
                kind,
                indirect_bytes,
                confirmed: (code - 1) % 2 == 1,
            });
        }
        check = match r.u64()? {
            0 => None,
            1 => Some(CheckFacts {
                check: r.u32()?,
                two_checks: match r.u64()? {
                    0 => false,
                    1 => true,
                    _ => return Err("bad check flag"),
                },
                pause: std::time::Duration::from_micros(r.u64()?),
                took: std::time::Duration::ZERO,
                scanned_bytes: r.u64()?,
                unaccounted_root_bytes: r.u64()?,
                loader_blocks: r.u64()?,
                threads: r.u32()?,
            }),
            _ => return Err("bad check marker"),
        };
    }
    let mut modules = Vec::new();
    if version >= 6 {
        let n = r.count(5)?;
        for _ in 0..n {
            let path = r.str()?.to_string();
            let build_id = Some(r.str()?.to_string()).filter(|b| !b.is_empty());
            let (start, limit, offset) = (r.u64()?, r.u64()?, r.u64()?);
            if limit < start {
                return Err("module ends before it starts");
            }
            modules.push(ModuleFile {
                path,
                build_id,
                start,
                limit,
                offset,
            });
        }
    }
    if !r.rest.is_empty() {
        return Err("bytes after the modules");
    }
    Ok(Snapshot {
        pid,
        now_ns,
        saved_unix_secs,
        counters,
        sample_bytes,
        label,
        traces,
        blocks,
        check,
        modules,
        allocated: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: &str, line: u32, addr: u64) -> Frame {
        Frame {
            addr,
            module: Some("prog".into()),
            offset: addr - 0x1000,
            function: Some(function.into()),
            function_offset: 0x1b,
            file: Some(file.into()),
            line: Some(line),
            inlined: addr % 2 == 1,
        }
    }

    fn sample() -> Snapshot {
        Snapshot {
            pid: 42,
            now_ns: 10_000_000_000,
            saved_unix_secs: 1_800_000_000,
            counters: Counters {
                lost_events: 1,
                unknown_frees: 2,
                libc_unknown_frees: 3,
                lost_stacks: 5,
                events: 6,
                age_resolution_ns: 4_000_000,
            },
            sample_bytes: 512,
            label: "./prog arg".into(),
            traces: vec![
                Trace::new(
                    vec![
                        frame("leaf", "a.c", 3, 0x1234),
                        frame("main", "a.c", 9, 0x1301),
                    ],
                    StackState::Walked,
                ),
                Trace::new(
                    vec![
                        Frame {
                            addr: 0x7f00_0000_1000,
                            module: Some("libc.so.6".into()),
                            offset: 0x9a0b1,
                            ..Frame::default()
                        },
                        Frame::unknown(0x7f12),
                    ],
                    StackState::Lost,
                ),
            ],
            blocks: vec![
                (
                    0x1000,
                    Block {
                        size: 24,
                        ts_ns: 9_000_000_000,
                        trace: 0,
                        tid: 7,
                        leak: None,
                    },
                ),
                (
                    0x7fff_0000_0000,
                    Block {
                        size: 1 << 40,
                        ts_ns: 1,
                        trace: 1,
                        tid: 8,
                        leak: Some(Verdict {
                            kind: LeakKind::DefinitelyLost,
                            indirect_bytes: 300,
                            confirmed: true,
                        }),
                    },
                ),
            ],
            check: Some(CheckFacts {
                check: 2,
                two_checks: true,
                pause: std::time::Duration::from_micros(1234),
                took: std::time::Duration::ZERO,
                scanned_bytes: 1 << 30,
                unaccounted_root_bytes: 4096,
                loader_blocks: 3,
                threads: 9,
            }),
            modules: vec![
                ModuleFile {
                    path: "/usr/bin/prog".into(),
                    build_id: Some("0123abcd".into()),
                    start: 0x1000,
                    limit: 0x2000,
                    offset: 0,
                },
                ModuleFile {
                    path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
                    build_id: None,
                    start: 0x7f00_0000_0000,
                    limit: 0x7f00_0010_0000,
                    offset: 0x28000,
                },
            ],
            allocated: Vec::new(),
        }
    }

    /// A snapshot in format version 2 (frames stored as names, each trace with its
    /// function), or version 1 (the same without the age resolution), as older muppy wrote.
    fn encode_legacy(s: &Snapshot, version: u32) -> Vec<u8> {
        let mut p = Vec::new();
        let numbers = s.header_numbers();
        let numbers = if version == 1 {
            &numbers[..9]
        } else {
            &numbers[..]
        };
        numbers.iter().for_each(|v| put(&mut p, *v));
        put_str(&mut p, &s.label);
        let mut strings = Interner::default();
        let traces: Vec<(u64, u64, Vec<u64>)> = s
            .traces
            .iter()
            .map(|t| {
                let names: Vec<u64> = t
                    .frames
                    .iter()
                    .map(|f| strings.index(&f.name().to_string()))
                    .collect();
                let function = strings.index(&t.site().function_name());
                (stack_state_code(t.state), function, names)
            })
            .collect();
        put(&mut p, strings.items.len() as u64);
        strings.items.iter().for_each(|s| put_str(&mut p, s));
        put(&mut p, traces.len() as u64);
        for (state, function, frames) in &traces {
            put(&mut p, *state);
            put(&mut p, *function);
            put(&mut p, frames.len() as u64);
            frames.iter().for_each(|f| put(&mut p, *f));
        }
        s.put_blocks(&mut p);
        wrap(version, &p)
    }

    #[test]
    fn round_trips_with_structured_frames() {
        let s = sample();
        let bytes = s.encode();
        assert_eq!(Snapshot::decode(&bytes, Path::new("f")).unwrap(), s);
        assert_eq!(s.block(0x1000).unwrap().size, 24);
        assert!(s.block(0x1001).is_none());
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_not_a_panic() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(
                Snapshot::decode(&bytes[..n], Path::new("f")).is_err(),
                "{n}"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Snapshot::decode(&b, Path::new("f")).is_err(), "{i}");
        }
    }

    /// Versions 1 and 2 stored names: they read back as frames with the same names, the
    /// same blocks and figures (version 1 without the age resolution: its ages were exact).
    #[test]
    fn reads_versions_1_and_2_whose_frames_were_names() {
        let s = sample();
        let names = |s: &Snapshot| -> Vec<Vec<String>> {
            s.traces.iter().map(|t| t.stack_names()).collect()
        };
        for version in [1, 2] {
            let old = Snapshot::decode(&encode_legacy(&s, version), Path::new("f")).unwrap();
            assert_eq!(names(&old), names(&s), "v{version}");
            let without_verdicts: Vec<(u64, Block)> = s
                .blocks
                .iter()
                .map(|&(a, b)| (a, Block { leak: None, ..b }))
                .collect();
            assert_eq!(old.blocks, without_verdicts);
            assert_eq!(old.check, None);
            assert_eq!(old.label, s.label);
            let resolution = if version == 1 { 0 } else { 4_000_000 };
            assert_eq!(
                old.counters,
                Counters {
                    age_resolution_ns: resolution,
                    ..s.counters
                }
            );
            let site = old.traces[0].site();
            assert_eq!(site.function.as_deref(), Some("leaf"));
            assert_eq!((site.file.as_deref(), site.line), (Some("a.c"), Some(3)));
            assert_eq!(old.traces[1].site().module.as_deref(), Some("libc.so.6"));
        }
    }

    /// Version 3 had no verdicts and no check: it is version 4 without its last sections.
    #[test]
    fn reads_version_3_without_verdicts() {
        let mut s = sample();
        s.check = None;
        s.modules.clear();
        for (_, b) in &mut s.blocks {
            b.leak = None;
        }
        let v6 = s.encode();
        // Without verdicts and modules, those sections are one 0 per block, one for the
        // check and one for the modules.
        let payload = &v6[HEADER..v6.len() - 4 - s.blocks.len() - 2];
        let old = Snapshot::decode(&wrap(3, payload), Path::new("f")).unwrap();
        assert_eq!(old, s);
    }

    /// Version 5 had no modules: it is version 6 without its last section.
    #[test]
    fn reads_version_5_without_modules() {
        let mut s = sample();
        s.modules.clear();
        let v6 = s.encode();
        let old = Snapshot::decode(&wrap(5, &v6[HEADER..v6.len() - 4 - 1]), Path::new("f"));
        assert_eq!(old.unwrap(), s);
        // A version 5 file with modules after its end is corrupt, not read as version 6.
        let full = sample().encode();
        let payload = &full[HEADER..full.len() - 4];
        assert!(Snapshot::decode(&wrap(5, payload), Path::new("f")).is_err());
    }

    #[test]
    fn every_stack_state_is_stored_as_itself() {
        use crate::model::Cut;
        let cuts = [
            Cut::Copy,
            Cut::Depth,
            Cut::Signal,
            Cut::Trampoline,
            Cut::NoCfi,
        ];
        let states = [StackState::Off, StackState::Lost, StackState::Walked]
            .into_iter()
            .chain(cuts.map(StackState::Cut));
        for st in states {
            assert_eq!(stack_state(stack_state_code(st)), Ok(st));
        }
        assert!(stack_state(8).is_err());
    }

    #[test]
    fn says_what_is_wrong() {
        let bytes = sample().encode();
        let msg = |b: &[u8]| {
            Snapshot::decode(b, Path::new("s.muppy"))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            msg(b"hello world"),
            "s.muppy: not a muppy snapshot (save one with --save FILE)"
        );
        let mut v7 = bytes.clone();
        v7[8] = 7;
        assert_eq!(
            msg(&v7),
            "s.muppy: snapshot format version 7; this muppy reads versions 1 to 6"
        );
        assert!(msg(&bytes[..bytes.len() - 1]).starts_with("s.muppy: truncated snapshot"));
        let mut flipped = bytes.clone();
        flipped[HEADER + 1] ^= 1;
        assert_eq!(
            msg(&flipped),
            "s.muppy: corrupt snapshot (checksum mismatch)"
        );
    }

    #[test]
    fn saved_files_are_for_their_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!("muppy-snap-{}.muppy", std::process::id()));
        let _ = std::fs::remove_file(&path);
        sample().save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let back = Snapshot::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(mode, 0o600);
        assert_eq!(back, sample());
    }
}
