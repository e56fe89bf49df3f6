//! What a leak check works on and finds: a copy of the target's memory ([`Image`]), the roots
//! it scans, named by [`Place`], and each block's [`LeakKind`].
//!
//! The kinds are Valgrind memcheck's (`mc_leakcheck.c`): a block is *reachable* through a
//! chain of start pointers from a root, *possibly lost* when every chain to it passes through
//! an interior pointer, *definitely lost* when no chain from a root reaches it and it leads
//! its clique, and *indirectly lost* when only lost blocks reach it.

use std::ops::Range;

use super::Frame;

/// Valgrind's four leak kinds, in the order reports list them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// No pointer from a root or a reachable block reaches it; it leads its clique.
    DefinitelyLost,
    /// Reached only from definitely lost blocks.
    IndirectlyLost,
    /// Reached, but only through an interior pointer somewhere on the way.
    PossiblyLost,
    /// Reached from a root through start pointers only.
    Reachable,
}

impl LeakKind {
    /// Every kind, in report order.
    pub const ALL: [LeakKind; 4] = [
        LeakKind::DefinitelyLost,
        LeakKind::IndirectlyLost,
        LeakKind::PossiblyLost,
        LeakKind::Reachable,
    ];

    /// The name JSON and `--kind` use (`definitely_lost`...).
    pub fn key(self) -> &'static str {
        match self {
            LeakKind::DefinitelyLost => "definitely_lost",
            LeakKind::IndirectlyLost => "indirectly_lost",
            LeakKind::PossiblyLost => "possibly_lost",
            LeakKind::Reachable => "reachable",
        }
    }

    /// The words tables use, as Valgrind writes them.
    pub fn words(self) -> &'static str {
        match self {
            LeakKind::DefinitelyLost => "definitely lost",
            LeakKind::IndirectlyLost => "indirectly lost",
            LeakKind::PossiblyLost => "possibly lost",
            LeakKind::Reachable => "still reachable",
        }
    }

    /// The kind a `--kind` value names.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.key() == s)
    }
}

/// What one leak check found one block to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Its kind.
    pub kind: LeakKind,
    /// For a definitely lost block (a clique's leader), the bytes of the blocks only it
    /// reaches (Valgrind's "indirect" part of a loss record); 0 otherwise.
    pub indirect_bytes: u64,
    /// A lost block (definitely or indirectly) that was lost at the check before too. With
    /// periodic checks a block is reported lost only once two checks in a row found it so (a
    /// pointer in flight, held nowhere at one instant, makes no report); with one check,
    /// every verdict is confirmed.
    pub confirmed: bool,
}

/// What a leak check did, as reports show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckFacts {
    /// Which check of the session this is, from 1.
    pub check: u32,
    /// Lost blocks must be lost at two checks in a row to be reported (periodic checks).
    pub two_checks: bool,
    /// How long the target was stopped.
    pub pause: std::time::Duration,
    /// How long the whole check took: the pause, then classifying the copy (not saved in
    /// snapshots).
    pub took: std::time::Duration,
    /// Bytes scanned for pointers: roots and blocks.
    pub scanned_bytes: u64,
    /// Heap memory muppy holds no block for (blocks allocated before tracing began, allocator
    /// metadata), scanned as roots: it can hide a leak, never make one.
    pub unaccounted_root_bytes: u64,
    /// Blocks the dynamic loader allocated, taken as reachable (as LeakSanitizer does).
    pub loader_blocks: u64,
    /// Threads stopped.
    pub threads: u32,
}

/// A piece of the target's memory, copied while every thread was stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Its first address.
    pub start: u64,
    /// Its bytes (zeros where a page could not be read: a zero word points at nothing).
    pub bytes: Vec<u8>,
}

impl Segment {
    /// The addresses it covers.
    pub fn range(&self) -> Range<u64> {
        self.start..self.start + self.bytes.len() as u64
    }
}

/// The target's memory as copied: segments in address order, none overlapping.
#[derive(Clone, Debug, Default)]
pub struct Image {
    segments: Vec<Segment>,
}

impl Image {
    /// An image of `segments`, sorted here; overlapping segments are a caller's bug and are
    /// cut so that the earlier one wins.
    pub fn new(mut segments: Vec<Segment>) -> Self {
        segments.sort_by_key(|s| s.start);
        let mut out: Vec<Segment> = Vec::with_capacity(segments.len());
        for mut s in segments {
            if let Some(last) = out.last() {
                let end = last.range().end;
                if s.start < end {
                    let cut = usize::try_from(end - s.start)
                        .unwrap_or(usize::MAX)
                        .min(s.bytes.len());
                    s.bytes.drain(..cut);
                    s.start = end;
                }
            }
            if !s.bytes.is_empty() {
                out.push(s);
            }
        }
        Self { segments: out }
    }

    /// The segments, in address order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The bytes of `range` if one segment holds all of them.
    pub fn get(&self, range: Range<u64>) -> Option<&[u8]> {
        let i = self
            .segments
            .partition_point(|s| s.start <= range.start)
            .checked_sub(1)?;
        let s = &self.segments[i];
        if range.end > s.range().end || range.start > range.end {
            return None;
        }
        let from = usize::try_from(range.start - s.start).ok()?;
        let to = usize::try_from(range.end - s.start).ok()?;
        s.bytes.get(from..to)
    }

    /// The parts of `range` the image holds, in address order, as (address, bytes).
    pub fn parts(&self, range: Range<u64>) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let first = self
            .segments
            .partition_point(|s| s.range().end <= range.start);
        self.segments[first..]
            .iter()
            .take_while(move |s| s.start < range.end)
            .filter_map(move |s| {
                let lo = range.start.max(s.start);
                let hi = range.end.min(s.range().end);
                (lo < hi).then(|| (lo, self.get(lo..hi).unwrap_or_default()))
            })
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes.len() as u64).sum()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// Where a root word (or a root range) is, named as precisely as muppy can. Printers format
/// it; [`Place::describe`] gives the table form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Place {
    /// A loaded file's writable data (`.data`, `.bss`...), at `symbol` if one covers it.
    Global {
        /// The symbol covering the address, if any.
        symbol: Option<String>,
        /// The file, by its name.
        module: String,
        /// The section holding the address (`.bss`), if the file says.
        section: Option<String>,
        /// The address's offset in that section (or in the module, without a section).
        offset: u64,
    },
    /// A thread's stack, in the frame of `frame` where muppy could tell.
    Stack {
        /// The thread.
        tid: u32,
        /// The function whose frame holds the word.
        frame: Option<Frame>,
    },
    /// A register of a stopped thread.
    Register {
        /// The thread.
        tid: u32,
        /// The register's name (`rbx`).
        reg: String,
    },
    /// A thread's thread-local storage (or its thread control block).
    Tls {
        /// The thread.
        tid: u32,
    },
    /// Heap memory muppy holds no block for: allocated before tracing began, or allocator
    /// metadata; scanned as roots so that it never makes a false "definitely lost".
    Unaccounted {
        /// The address of the word.
        addr: u64,
    },
    /// A block the dynamic loader allocated (DTV, dynamic TLS), taken as reachable as
    /// LeakSanitizer does.
    Loader {
        /// The block.
        block: u64,
    },
    /// An anonymous mapping the program made.
    Anonymous {
        /// The mapping's first address.
        mapping: u64,
        /// The address of the word.
        addr: u64,
    },
    /// Other writable memory (a shared or device-less file mapping, `[stack]` of no thread).
    Other {
        /// What /proc/PID/maps calls the mapping.
        name: String,
        /// The address of the word.
        addr: u64,
    },
}

impl Place {
    /// The table form: `global g_cache (prog .bss+0x40)`, `thread 12 register rbx`...
    pub fn describe(&self) -> String {
        match self {
            Place::Global {
                symbol,
                module,
                section,
                offset,
            } => {
                let at = match section {
                    Some(s) => format!("{module} {s}+{offset:#x}"),
                    None => format!("{module}+{offset:#x}"),
                };
                match symbol {
                    Some(sym) => format!("global {sym} ({at})"),
                    None => format!("global data ({at})"),
                }
            }
            Place::Stack { tid, frame } => match frame {
                Some(f) => format!("thread {tid} stack in {}", f.name()),
                None => format!("thread {tid} stack"),
            },
            Place::Register { tid, reg } => format!("thread {tid} register {reg}"),
            Place::Tls { tid } => format!("thread {tid} TLS"),
            Place::Unaccounted { addr } => format!("heap memory from before tracing ({addr:#x})"),
            Place::Loader { block } => format!("dynamic loader block {block:#x}"),
            Place::Anonymous { mapping, addr } => {
                format!("anonymous mapping {mapping:#x} (+{:#x})", addr - mapping)
            }
            Place::Other { name, addr } => format!("{name} ({addr:#x})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_cuts_overlaps_and_slices() {
        let img = Image::new(vec![
            Segment {
                start: 0x2000,
                bytes: vec![2; 16],
            },
            Segment {
                start: 0x1000,
                bytes: vec![1; 0x1008],
            },
        ]);
        assert_eq!(img.segments().len(), 2);
        assert_eq!(img.segments()[1].start, 0x2008);
        assert_eq!(img.get(0x1ff8..0x2008), Some(&[1u8; 16][..]));
        assert_eq!(img.get(0x2000..0x2010), None);
        let parts: Vec<_> = img
            .parts(0x1ffc..0x2010)
            .map(|(a, b)| (a, b.len()))
            .collect();
        assert_eq!(parts, vec![(0x1ffc, 12), (0x2008, 8)]);
        assert_eq!(img.len(), 0x1008 + 8);
    }

    #[test]
    fn kinds_round_trip_their_keys() {
        for k in LeakKind::ALL {
            assert_eq!(LeakKind::parse(k.key()), Some(k));
        }
        assert_eq!(LeakKind::parse("lost"), None);
    }
}
