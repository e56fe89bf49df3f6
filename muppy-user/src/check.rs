//! Leak checks and referrer searches on a live process: what is copied while its threads are
//! stopped, the roots made of it, and the answers turned into reports.
//!
//! The caller stops every thread ([`crate::target::Tracer::freeze`]), applies every event the
//! probes have sent (so the table equals memory), calls [`capture`], and lets the threads go:
//! the pause is the copy. Everything after works on the copy.
//!
//! Roots, as Valgrind takes them (see `muppy_core::model::leak`): every register of every
//! thread; each thread's stack from its stack pointer (less the 128-byte red zone) to the end
//! of its mapping; every other readable, writable mapping (every ELF's data and bss, TLS,
//! anonymous memory, the heap) except live blocks, which are reached only by marking, and
//! except memory freed while traced ([`crate::freed`]). Heap memory that is in no live block
//! and was not freed while traced was allocated before tracing began (or is the allocator's
//! own): it is scanned as roots, and counted (`unaccounted_root_bytes`). Blocks the dynamic
//! loader allocated (DTV, dynamic TLS) are taken as reachable, as LeakSanitizer does; Valgrind
//! reports the DTV of each thread as possibly lost (its pointer is into the block).

use std::{collections::HashSet, fs, ops::Range, time::Duration};

use muppy_core::{
    analysis::{
        RefTree, Referrer, Step,
        leaks::{self, Extent, Input, RefEdge, RefNode, Root, RootSource, Verdicts, Via},
    },
    model::{Block, CheckFacts, Frame, Image, LeakKind, Place, Segment, Verdict},
};

use crate::{
    places::{self, Mapping, Places, parse_mappings},
    probe::{LibPlan, is_loader},
    process::Process,
    target::{
        FrozenThread, TargetError,
        memory::{self, Buffers},
    },
};

/// Readable and writable: where pointers that keep blocks alive can be. Not the kernel's
/// pages, nor device memory (reading it can have effects), except /dev/zero, plain memory.
fn is_root_memory(m: &Mapping) -> bool {
    m.readable
        && m.writable
        && !matches!(m.name.as_str(), "[vvar]" | "[vvar_vclock]" | "[vsyscall]")
        && (!m.name.starts_with("/dev/") || m.name.starts_with("/dev/zero"))
}

/// What was copied while every thread was stopped.
pub struct Capture {
    /// The process.
    pub pid: u32,
    /// Its threads and their registers.
    pub threads: Vec<FrozenThread>,
    /// Its mappings.
    pub maps: Vec<Mapping>,
    /// Its root memory and heap, copied.
    pub image: Image,
}

/// `pid`'s mappings, and the ranges a check copies: its root memory, less the pages of its
/// private anonymous memory that were never written (see [`memory::present`]).
fn mappings(pid: u32) -> Result<(Vec<Mapping>, Vec<Range<u64>>), TargetError> {
    let text = fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|_| TargetError::NoSuchProcess { pid })?;
    let maps = parse_mappings(&text);
    let ranges = maps
        .iter()
        .filter(|m| is_root_memory(m))
        .flat_map(|m| {
            // Shared memory may hold pages this process has not mapped yet: read it whole.
            if m.is_file() || m.shared {
                vec![m.range()]
            } else {
                memory::present(pid, m.range())
            }
        })
        .collect();
    Ok((maps, ranges))
}

/// Buffers for the copy of `pid`'s memory, made before it is stopped (faulting pages in is
/// most of the time a copy takes): its mappings change little meanwhile.
pub fn prepare(pid: u32) -> Result<Buffers, TargetError> {
    Ok(Buffers::prepare(&mappings(pid)?.1))
}

/// Copies what a check needs of the frozen process `pid` (`threads` from the freeze), into
/// `buffers` where they fit.
pub fn capture(
    pid: u32,
    threads: Vec<FrozenThread>,
    buffers: &mut Buffers,
) -> Result<Capture, TargetError> {
    let (maps, ranges) = mappings(pid)?;
    let image = Image::new(
        memory::read_into(pid, &ranges, buffers)?
            .into_iter()
            .map(|m| Segment {
                start: m.range.start,
                bytes: m.bytes,
            })
            .collect(),
    );
    Ok(Capture {
        pid,
        threads,
        maps,
        image,
    })
}

/// What a root is, to name what it holds.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// A register of a thread.
    Register { tid: u32, reg: &'static str },
    /// Memory: heap memory muppy holds no block for, or other memory.
    Memory { unaccounted: bool },
}

/// A capture made ready to classify: the blocks in address order, the roots, and the names.
pub struct Scan<'a> {
    capture: &'a Capture,
    /// The live blocks, by address.
    pub blocks: Vec<(u64, Block)>,
    extents: Vec<Extent>,
    roots: Vec<Root>,
    origins: Vec<Origin>,
    pinned: Vec<u32>,
    /// Addresses inside blocks that only the allocator points at (see [`glibc_headers`]).
    headers: Vec<u64>,
    places: Places,
    /// Heap bytes muppy holds no block for, scanned as roots.
    pub unaccounted_root_bytes: u64,
    traces: Vec<Frame>,
}

impl<'a> Scan<'a> {
    /// The blocks of `p` and the roots of `capture`.
    pub fn new(capture: &'a Capture, p: &mut Process) -> Self {
        let mut blocks: Vec<(u64, Block)> = p.table.blocks().collect();
        blocks.sort_unstable_by_key(|(a, _)| *a);
        let extents: Vec<Extent> = blocks
            .iter()
            .map(|&(addr, b)| Extent { addr, size: b.size })
            .collect();
        let sites: Vec<Frame> = p.traces.iter().map(|t| t.site().clone()).collect();
        let glibc = p
            .plan
            .as_ref()
            .and_then(|plan| plan.libs.first())
            .is_some_and(LibPlan::is_glibc);
        let headers = if glibc {
            glibc_headers(&blocks)
        } else {
            Vec::new()
        };
        let pinned: Vec<u32> = blocks
            .iter()
            .enumerate()
            .filter(|(_, (_, b))| {
                sites
                    .get(b.trace as usize)
                    .and_then(|f| f.module.as_deref())
                    .is_some_and(is_loader)
            })
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect();
        let places = {
            let (modules, namer) = p.naming();
            Places::new(
                capture.pid,
                &capture.maps,
                &capture.threads,
                &capture.image,
                modules,
                namer,
            )
        };
        let mut roots = Vec::new();
        let mut origins = Vec::new();
        for t in &capture.threads {
            for (reg, value) in places::registers(&t.regs) {
                roots.push(Root {
                    source: RootSource::Word(value),
                    place: u32::try_from(origins.len()).unwrap_or(u32::MAX),
                });
                origins.push(Origin::Register { tid: t.tid, reg });
            }
        }
        let freed = p.table.freed();
        let holds_blocks = |r: &Range<u64>| {
            let first = extents.partition_point(|e| e.addr < r.start);
            extents.get(first).is_some_and(|e| e.addr < r.end)
        };
        let is_heap = |m: &Mapping| {
            let r = m.range();
            m.name == "[heap]"
                || holds_blocks(&r)
                || freed.is_some_and(|f| f.within(r).next().is_some())
        };
        // Each thread's stack from its stack pointer; the rest of its mapping is dead. (A
        // stack inside heap memory, a coroutine's, is scanned with that memory, whole.)
        let mut stack_maps = HashSet::new();
        for (_, range) in places.stack_ranges() {
            if let Some(i) = capture
                .maps
                .iter()
                .position(|m| m.range().contains(&range.start))
                && !is_heap(&capture.maps[i])
            {
                stack_maps.insert(i);
            }
            let origin = u32::try_from(origins.len()).unwrap_or(u32::MAX);
            origins.push(Origin::Memory { unaccounted: false });
            roots.push(Root {
                source: RootSource::Range(range),
                place: origin,
            });
        }
        let mut unaccounted_root_bytes = 0;
        let memory = u32::try_from(origins.len()).unwrap_or(u32::MAX);
        origins.push(Origin::Memory { unaccounted: false });
        let heap_memory = memory + 1;
        origins.push(Origin::Memory { unaccounted: true });
        for (i, m) in capture.maps.iter().enumerate() {
            if !is_root_memory(m) || stack_maps.contains(&i) {
                continue;
            }
            let r = m.range();
            let heap = is_heap(m);
            // The mapping less the memory freed while traced.
            let mut at = r.start;
            let mut pieces = Vec::new();
            if let Some(f) = freed {
                for hole in f.within(r.clone()) {
                    if hole.start > at {
                        pieces.push(at..hole.start);
                    }
                    at = hole.end;
                }
            }
            if at < r.end {
                pieces.push(at..r.end);
            }
            for piece in pieces {
                if heap {
                    // What was copied of it (pages never written were not), less blocks.
                    for (at, bytes) in capture.image.parts(piece.clone()) {
                        let part = at..at + bytes.len() as u64;
                        unaccounted_root_bytes +=
                            (part.end - part.start) - block_bytes(&extents, &part);
                    }
                }
                roots.push(Root {
                    source: RootSource::Range(piece),
                    place: if heap { heap_memory } else { memory },
                });
            }
        }
        Scan {
            capture,
            blocks,
            extents,
            roots,
            origins,
            pinned,
            headers,
            places,
            unaccounted_root_bytes,
            traces: sites,
        }
    }

    fn input(&self) -> Input<'_> {
        Input {
            image: &self.capture.image,
            blocks: &self.extents,
            roots: &self.roots,
            pinned: &self.pinned,
            allocator_words: &self.headers,
        }
    }

    /// How many blocks the dynamic loader allocated.
    pub fn loader_blocks(&self) -> u64 {
        self.pinned.len() as u64
    }

    /// Classifies every block.
    pub fn classify(&self) -> Verdicts {
        leaks::classify(&self.input())
    }

    /// Where the root word at `at` (of root `root`) is.
    fn place(&self, root: u32, at: u64) -> Place {
        match self.origins.get(root as usize) {
            Some(Origin::Register { tid, reg }) => Place::Register {
                tid: *tid,
                reg: (*reg).to_string(),
            },
            Some(Origin::Memory { unaccounted: true }) => Place::Unaccounted { addr: at },
            _ => self.places.name(at),
        }
    }

    fn site(&self, block: usize) -> Frame {
        self.blocks
            .get(block)
            .and_then(|(_, b)| self.traces.get(b.trace as usize))
            .cloned()
            .unwrap_or_default()
    }

    /// The steps from block `i` to its root: the blocks holding it, then the root.
    pub fn retention(&self, v: &Verdicts, i: u32) -> Vec<Step> {
        leaks::retention_path(v, i)
            .into_iter()
            .filter_map(|via| match via {
                Via::Block { block, at } => {
                    let (addr, b) = self.blocks[block as usize];
                    Some(Step::Block {
                        addr,
                        size: b.size,
                        site: self.site(block as usize),
                        at,
                    })
                }
                Via::Root { root, at } => Some(Step::Root {
                    place: self.place(root, at),
                    at,
                }),
                Via::Pinned => None,
                Via::Unreached => None,
            })
            .collect()
    }

    /// The index of the block at `addr`: `Ok` where one starts there, `Err` with the block
    /// it falls inside (if any).
    pub fn block_at(&self, addr: u64) -> Result<usize, Option<(u64, Block)>> {
        let i = self.blocks.partition_point(|(a, _)| *a <= addr);
        match i.checked_sub(1).map(|j| (j, self.blocks[j])) {
            Some((j, (a, _))) if a == addr => Ok(j),
            Some((_, (a, b))) if addr < a + b.size.max(1) => Err(Some((a, b))),
            _ => Err(None),
        }
    }

    /// The referrer trees of blocks `selected`, grown together (one pass over the copy per
    /// level, however many trees).
    pub fn referrers(&self, selected: &[usize], maxdepth: usize, max_roots: usize) -> Vec<RefTree> {
        let blocks: Vec<u32> = selected
            .iter()
            .map(|&i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        leaks::referrer_trees(&self.input(), &blocks, maxdepth, max_roots)
            .iter()
            .map(|n| self.ref_tree(n))
            .collect()
    }

    fn ref_tree(&self, n: &RefNode) -> RefTree {
        let (addr, b) = self.blocks[n.block as usize];
        let referrers = n
            .referrers
            .iter()
            .map(|e| match e {
                RefEdge::Root { root, at, interior } => Referrer::Root {
                    place: self.place(*root, *at),
                    at: *at,
                    interior: *interior,
                },
                RefEdge::Block { node, at, interior } => Referrer::Block {
                    at: *at,
                    interior: *interior,
                    tree: self.ref_tree(node),
                },
                RefEdge::Seen {
                    block,
                    at,
                    interior,
                } => Referrer::Seen {
                    addr: self.blocks[*block as usize].0,
                    at: *at,
                    interior: *interior,
                },
            })
            .collect();
        RefTree {
            addr,
            size: b.size,
            site: self.site(n.block as usize),
            referrers,
            cut_depth: matches!(n.cut, Some(leaks::Cut::Depth)),
            more_roots: match n.cut {
                Some(leaks::Cut::MaxRoots { more }) => more,
                _ => 0,
            },
        }
    }
}

/// For glibc's malloc: the address of the header of the chunk after each block, where it lies
/// inside the block (sorted). A chunk of n bytes serves requests up to n - 8: the last 8 bytes
/// are the next chunk's `prev_size` field, lent while the block is in use. So when a request
/// uses them, glibc's own pointers to the next chunk (the arena's top chunk, a bin's list)
/// point into the block's last bytes. They are the allocator's, not the program's, and must not
/// keep the block "possibly" alive: Valgrind's allocator keeps no such pointers in the client's
/// memory. A chunk is the request plus 8, rounded up to 16, at least 32 bytes, its header 16
/// bytes before the block.
pub fn glibc_headers(blocks: &[(u64, Block)]) -> Vec<u64> {
    blocks
        .iter()
        .filter_map(|&(addr, b)| {
            let chunk = (b.size.checked_add(8 + 15)? & !15).max(32);
            let next = chunk - 16;
            (next < b.size).then(|| addr + next)
        })
        .collect()
}

/// Bytes of blocks inside `r` (blocks are sorted and disjoint).
fn block_bytes(extents: &[Extent], r: &Range<u64>) -> u64 {
    let first = extents.partition_point(|e| e.addr + e.size.max(1) <= r.start);
    extents[first..]
        .iter()
        .take_while(|e| e.addr < r.end)
        .map(|e| (e.addr + e.size.max(1)).min(r.end) - e.addr.max(r.start))
        .sum()
}

/// What a process's earlier checks found lost, for the two-checks rule: blocks by address and
/// allocation time (an address reused since is another block).
#[derive(Debug, Default)]
pub struct LostBefore(HashSet<(u64, u64)>);

/// Gives each block of `scan` its verdict from `v`. With `two_checks`, a lost block is
/// confirmed only if `before` had it lost too; `before` becomes this check's lost blocks.
pub fn verdicts(
    scan: &Scan,
    v: &Verdicts,
    two_checks: bool,
    before: &mut LostBefore,
) -> Vec<(u64, Block)> {
    let mut lost_now = HashSet::new();
    let blocks = scan
        .blocks
        .iter()
        .enumerate()
        .map(|(i, &(addr, b))| {
            let kind = v.kind[i];
            let lost = matches!(kind, LeakKind::DefinitelyLost | LeakKind::IndirectlyLost);
            if lost {
                lost_now.insert((addr, b.ts_ns));
            }
            let confirmed = !two_checks || before.0.contains(&(addr, b.ts_ns));
            (
                addr,
                Block {
                    leak: Some(Verdict {
                        kind,
                        indirect_bytes: v.indirect_bytes[i],
                        confirmed: !lost || confirmed,
                    }),
                    ..b
                },
            )
        })
        .collect();
    before.0 = lost_now;
    blocks
}

/// The facts of one check: the `check`th, which paused the target for `pause` and took
/// `took` in all.
pub fn facts(
    scan: &Scan,
    v: &Verdicts,
    check: u32,
    two_checks: bool,
    pause: Duration,
    took: Duration,
) -> CheckFacts {
    CheckFacts {
        check,
        two_checks,
        pause,
        took,
        scanned_bytes: v.scanned_bytes,
        unaccounted_root_bytes: scan.unaccounted_root_bytes,
        loader_blocks: scan.loader_blocks(),
        threads: u32::try_from(scan.capture.threads.len()).unwrap_or(u32::MAX),
    }
}

/// Retention paths by block address, for the report.
pub fn retention_by_addr<'s>(scan: &'s Scan, v: &'s Verdicts) -> impl Fn(u64) -> Vec<Step> + 's {
    move |addr| match scan.block_at(addr) {
        Ok(i) => scan.retention(v, u32::try_from(i).unwrap_or(u32::MAX)),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_memory_is_readable_writable_plain_memory() {
        let maps = parse_mappings(
            "55d0c0000000-55d0c0001000 r--p 00000000 fd:01 123 /usr/bin/prog\n\
             55d0c0003000-55d0c0004000 rw-p 00002000 fd:01 123 /usr/bin/prog\n\
             55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0 [heap]\n\
             7f0000000000-7f0000001000 rw-p 00000000 00:00 0\n\
             7ffc00000000-7ffc00002000 r--p 00000000 00:00 0 [vvar]\n\
             7ffc00010000-7ffc00011000 rw-s 00000000 00:05 9 /dev/dri/card0\n\
             7ffc00020000-7ffc00021000 rw-s 00000000 00:05 9 /dev/zero (deleted)\n",
        );
        let roots: Vec<bool> = maps.iter().map(is_root_memory).collect();
        assert_eq!(roots, vec![false, true, true, true, false, false, true]);
    }

    #[test]
    fn glibc_headers_are_where_a_block_lends_its_tail() {
        let block = |size| Block {
            size,
            ts_ns: 0,
            trace: 0,
            tid: 0,
            leak: None,
        };
        // 4242 B: a 4256-byte chunk; the next header at +4240, inside. 4248 B: 4256, at +4240.
        // 4232 B: 4240, at +4224... inside; 4224 B: 4240 and +4224, not inside. 0 and 24 B:
        // 32-byte chunks, the next header at +16, inside only the 24-byte block.
        let blocks = [
            (0x1000, block(4242)),
            (0x3000, block(4248)),
            (0x5000, block(4232)),
            (0x7000, block(4224)),
            (0x9000, block(0)),
            (0x9100, block(24)),
        ];
        assert_eq!(
            glibc_headers(&blocks),
            vec![0x1000 + 4240, 0x3000 + 4240, 0x5000 + 4224, 0x9100 + 16]
        );
    }

    #[test]
    fn block_bytes_clip_to_the_range() {
        let e = [
            Extent {
                addr: 0x100,
                size: 0x20,
            },
            Extent {
                addr: 0x200,
                size: 0,
            },
            Extent {
                addr: 0x300,
                size: 0x100,
            },
        ];
        assert_eq!(block_bytes(&e, &(0..0x1000)), 0x20 + 1 + 0x100);
        assert_eq!(block_bytes(&e, &(0x110..0x380)), 0x10 + 1 + 0x80);
    }
}
