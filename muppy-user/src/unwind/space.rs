//! One process's code as unwinding sees it: its executable file mappings, each with its
//! file's rules and load bias, the kernel's `[uprobes]` page, and the framehop unwinder and
//! rule cache built from them.

use std::{collections::HashSet, ops::Range, sync::Arc};

use framehop::{
    Unwinder as _,
    x86_64::{CacheX86_64, UnwinderX86_64},
};

use super::file::{CfiFile, Files};
use crate::places::{Mapping, parse_mappings};

/// Pages of code outside every file (JIT code) remembered per process: each costs one `/proc`
/// read when first seen, not one per stack.
const UNKNOWN_PAGES: usize = 4096;

/// One executable file mapping.
pub(super) struct Mapped {
    pub(super) range: Range<u64>,
    offset: u64,
    inode: u64,
    /// The file and the mapping's load bias, where the file has unwind rules.
    pub(super) cfi: Option<(Arc<CfiFile>, u64)>,
}

/// A process's code (see the module docs).
pub(super) struct Space {
    /// Sorted by start, disjoint.
    pub(super) mapped: Vec<Mapped>,
    uprobes: Vec<Range<u64>>,
    pub(super) unwinder: UnwinderX86_64<Arc<[u8]>>,
    /// The rules framehop looked up, for this unwinder only: framehop tags cached rules with a
    /// 16-bit generation shared by all unwinders, which wraps; a cache that only ever served
    /// one unwinder cannot mistake another's rule for its own.
    pub(super) cache: CacheX86_64,
    /// Pages of addresses found in no mapping at the last reading of the maps: reading them
    /// again for those would find nothing new, while a library loaded since (the program's
    /// own libraries, loaded after the first reading at exec) is read at its first address.
    unknown: HashSet<u64>,
    /// The maps text last read, until [`super::Unwinders::take_maps`] hands it on.
    pub(super) fresh: Option<String>,
}

impl Space {
    /// Nothing known yet.
    pub(super) fn new() -> Space {
        Space {
            mapped: Vec::new(),
            uprobes: Vec::new(),
            unwinder: UnwinderX86_64::new(),
            cache: CacheX86_64::new(),
            unknown: HashSet::new(),
            fresh: None,
        }
    }

    /// Reads `pid`'s maps now; if they cannot be read (the process is gone), what was known
    /// is kept.
    pub(super) fn read(&mut self, pid: u32, files: &mut Files) {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            self.load(pid, &text, files);
            self.fresh = Some(text);
        }
        self.unknown.clear();
    }

    /// Whether the maps may be read again for `addr`, found in none: not if its page was
    /// already unknown at the last reading.
    pub(super) fn may_reread(&self, addr: u64) -> bool {
        !self.unknown.contains(&(addr >> 12))
    }

    /// `addr` is in no mapping, even after a reading: remembered so as not to read again for
    /// its page.
    pub(super) fn still_unknown(&mut self, addr: u64) {
        if self.unknown.len() < UNKNOWN_PAGES {
            self.unknown.insert(addr >> 12);
        }
    }

    /// Takes in a `/proc/PID/maps` text: new mappings replace those they overlap, others are
    /// kept (a library closed since may still be in the stacks not yet read). The unwinder is
    /// rebuilt if anything changed.
    pub(super) fn load(&mut self, pid: u32, text: &str, files: &mut Files) {
        let mut changed = false;
        for m in parse_mappings(text) {
            if m.name == "[uprobes]" {
                if !self.uprobes.contains(&m.range()) {
                    self.uprobes.push(m.range());
                }
                continue;
            }
            if !m.executable || !m.is_file() {
                continue;
            }
            let known = self
                .mapped
                .iter()
                .any(|k| k.range == m.range() && k.offset == m.offset && k.inode == m.inode);
            if !known {
                self.add(pid, &m, files);
                changed = true;
            }
        }
        if changed {
            self.rebuild();
        }
    }

    fn add(&mut self, pid: u32, m: &Mapping, files: &mut Files) {
        self.mapped
            .retain(|k| k.range.end <= m.start || k.range.start >= m.end);
        let cfi = files.open(pid, m).and_then(|f| {
            let bias = f.bias(m.start, m.offset)?;
            // framehop addresses code by its offset from the bias in 32 bits.
            let fits = u32::try_from((m.end - 1).checked_sub(bias)?).is_ok();
            (f.has_cfi() && fits).then_some((f, bias))
        });
        let at = self.mapped.partition_point(|k| k.range.start < m.start);
        self.mapped.insert(
            at,
            Mapped {
                range: m.range(),
                offset: m.offset,
                inode: m.inode,
                cfi,
            },
        );
    }

    /// A new unwinder (and so a new cache) over the mappings with rules.
    fn rebuild(&mut self) {
        let mut unwinder = UnwinderX86_64::new();
        for m in &self.mapped {
            if let Some((file, bias)) = &m.cfi {
                unwinder.add_module(file.module(m.range.clone(), *bias));
            }
        }
        self.unwinder = unwinder;
        self.cache = CacheX86_64::new();
    }

    /// The executable file mapping holding `addr`.
    pub(super) fn find(&self, addr: u64) -> Option<&Mapped> {
        let i = self.mapped.partition_point(|m| m.range.start <= addr);
        self.mapped[..i].last().filter(|m| addr < m.range.end)
    }

    /// Whether `addr` is in the kernel's uretprobe trampoline page.
    pub(super) fn in_uprobes(&self, addr: u64) -> bool {
        self.uprobes.iter().any(|r| r.contains(&addr))
    }
}
