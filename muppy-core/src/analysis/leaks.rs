//! The leak check proper: which live blocks a copy of the target's memory still reaches, and
//! how ([`classify`]); who points at a block ([`referrers`], [`referrer_tree`]).
//!
//! The semantics are Valgrind memcheck's (`memcheck/mc_leakcheck.c`) with
//! `--leak-check-heuristics=none`:
//!
//! - A *word* is an aligned 8-byte little-endian value (aligned by its absolute address). It
//!   points to a block when it lies in `[addr, addr + max(size, 1))` (`find_chunk_for`: a
//!   zero-size block counts as one byte); at `addr` it is a *start* pointer, else *interior*.
//! - Roots are register values and root memory ranges; the bytes of a range that lie inside a
//!   block's extent are not roots (a block is reached only through marking).
//! - Marking (`lc_push_without_clique_if_a_chunk_ptr`): from a root or a reachable block a start
//!   pointer makes a block reachable and an interior pointer makes it at most possibly lost;
//!   from a possibly lost block any pointer makes it at most possibly lost.
//! - Cliques (`MC_(detect_memory_leaks)`, `lc_push_with_clique_if_a_chunk_ptr`): each block
//!   still unreached, in address order, leads a clique and is definitely lost; every unreached
//!   block it reaches (start or interior pointers alike) is indirectly lost in its clique, and
//!   an earlier leader it reaches joins it with its whole clique.
//!
//! Nothing here recurses: a million-node list is walked with a queue or a stack.
//!
//! On a large heap nearly every load misses the cache, so the work goes in batches: a few
//! hundred blocks' lines are asked for before any is read, and each candidate word (one in
//! the blocks' span) is looked up in a pipeline that asks for the granule table, the block
//! extents and the block's state of words further on while it reads those of the current one.

use std::collections::{HashSet, VecDeque};
use std::ops::Range;

use crate::model::{Image, LeakKind};

/// A live block as the check sees it: `[addr, addr + max(size, 1))`. A zero-size block counts
/// as one byte, as in Valgrind, so that a pointer to it reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Its first address.
    pub addr: u64,
    /// The bytes requested (the words scanned are those of `[addr, addr + size)`).
    pub size: u64,
}

impl Extent {
    /// The end of the addresses that point into it: `addr + max(size, 1)`.
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.size.max(1))
    }
}

/// What a root is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RootSource {
    /// Memory to scan; parts the image lacks and bytes inside block extents are skipped.
    Range(Range<u64>),
    /// A value held outside memory (a register).
    Word(u64),
}

/// A root: memory or a value that the program can use without going through a block.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Root {
    /// What to scan.
    pub source: RootSource,
    /// The caller's name for it (an index into its own table of places); not interpreted here.
    pub place: u32,
}

/// What [`classify`] and [`referrers`] work on.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The target's memory, copied while it was stopped.
    pub image: &'a Image,
    /// The live blocks, sorted by address, their extents not overlapping.
    pub blocks: &'a [Extent],
    /// The roots, scanned in this order.
    pub roots: &'a [Root],
    /// Indices of blocks taken as roots themselves (the dynamic loader's blocks, as
    /// LeakSanitizer does): reachable, and scanned as reachable blocks are.
    pub pinned: &'a [u32],
    /// Sorted addresses inside blocks that only the allocator's own pointers point at (glibc's
    /// next chunk header, where a block's last bytes overlap it): a word equal to one of them
    /// points at no block. Empty for none.
    pub allocator_words: &'a [u64],
}

/// How a block was first reached in its final state: the link to its retention parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    /// Not reached from any root (definitely or indirectly lost).
    Unreached,
    /// A pinned block ([`Input::pinned`]).
    Pinned,
    /// A root's word.
    Root {
        /// The root's index in [`Input::roots`].
        root: u32,
        /// The address of the pointing word (0 for a register).
        at: u64,
    },
    /// A word in another block.
    Block {
        /// The block's index in [`Input::blocks`].
        block: u32,
        /// The address of the pointing word.
        at: u64,
    },
}

/// What [`classify`] found, one entry per block in every vector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    /// Each block's kind.
    pub kind: Vec<LeakKind>,
    /// For an indirectly lost block, the index of the definitely lost block leading its
    /// clique; `u32::MAX` for every other block.
    pub leader: Vec<u32>,
    /// For a definitely lost block, the bytes (sizes requested) of the blocks in its clique,
    /// Valgrind's "indirect" part of the loss record; 0 for every other block.
    pub indirect_bytes: Vec<u64>,
    /// For a reachable or possibly lost block, its retention parent; following them gives a
    /// short path from a root (shortest in start pointers for a reachable block, as marking
    /// goes breadth first). [`Via::Unreached`] for a lost block.
    pub via: Vec<Via>,
    /// Bytes read: the aligned words of the root ranges (registers not counted) and of every
    /// block, each block read once.
    pub scanned_bytes: u64,
}

/// Not reached (yet); after the clique pass, a clique leader.
const UNREACHED: u8 = 0;
/// Reached, but only through an interior pointer somewhere on the way.
const POSSIBLE: u8 = 1;
/// Reached through start pointers only.
const REACHABLE: u8 = 2;
/// In the clique of a definitely lost block.
const INDIRECT: u8 = 3;

/// A block index as the verdicts store it.
fn ix(i: usize) -> u32 {
    u32::try_from(i).expect("fewer than 2^32 - 1 blocks")
}

/// A block index as a slice index.
fn us(i: u32) -> usize {
    usize::try_from(i).expect("a 32-bit index fits a usize")
}

/// Calls `f(address, word)` for each aligned word held whole by `bytes`, which start at `base`.
#[inline(always)]
fn for_words(base: u64, bytes: &[u8], mut f: impl FnMut(u64, u64)) {
    let skip = usize::try_from(base.wrapping_neg() & 7).unwrap_or(0);
    let Some(body) = bytes.get(skip..) else {
        return;
    };
    let mut at = base.wrapping_add(skip as u64);
    for c in body.chunks_exact(8) {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        f(at, w);
        at = at.wrapping_add(8);
    }
}

/// Calls `f(address, word)` for each aligned word of `block`'s `[addr, addr + size)` the image
/// holds; returns the bytes read.
#[inline]
fn scan_block(image: &Image, block: Extent, mut f: impl FnMut(u64, u64)) -> u64 {
    if block.size < 8 {
        return 0;
    }
    let range = block.addr..block.addr.saturating_add(block.size);
    if let Some(bytes) = image.get(range.clone()) {
        for_words(block.addr, bytes, &mut f);
        return words_bytes(block.addr, bytes.len());
    }
    let mut read = 0;
    for (at, bytes) in image.parts(range) {
        for_words(at, bytes, &mut f);
        read += words_bytes(at, bytes.len());
    }
    read
}

/// The bytes of the whole aligned words in `len` bytes from `base`.
fn words_bytes(base: u64, len: usize) -> u64 {
    let skip = base.wrapping_neg() & 7;
    (len as u64).saturating_sub(skip) & !7
}

/// Calls `f(address, bytes)` for each piece of `range` the image holds outside every block's
/// extent, in address order; returns the bytes of the whole aligned words in them.
fn scan_root_range<'i>(
    image: &'i Image,
    blocks: &[Extent],
    range: Range<u64>,
    mut f: impl FnMut(u64, &'i [u8]),
) -> u64 {
    let mut read = 0;
    for (base, bytes) in image.parts(range) {
        let hi = base + bytes.len() as u64;
        let mut gap = |lo: u64, end: u64| {
            if lo < end {
                let from = usize::try_from(lo - base).unwrap_or(usize::MAX);
                let to = usize::try_from(end - base).unwrap_or(usize::MAX);
                let part = &bytes[from..to];
                f(lo, part);
                read += words_bytes(lo, part.len());
            }
        };
        // The first block that ends after `base`; extents are sorted, so their ends are too.
        let mut j = blocks.partition_point(|b| b.end() <= base);
        let mut cursor = base;
        while cursor < hi {
            match blocks.get(j) {
                Some(b) if b.addr < hi => {
                    gap(cursor, b.addr.max(cursor));
                    cursor = cursor.max(b.end());
                    j += 1;
                }
                _ => {
                    gap(cursor, hi);
                    cursor = hi;
                }
            }
        }
    }
    read
}

/// log2 of the granule [`Index`]'s table has an entry for.
const SHIFT: u32 = 8;
/// Empty granules a region may span before the next block starts a new region.
const GAP_GRANULES: u64 = 1 << (18 - SHIFT);

/// A run of granules holding blocks, with few empty ones.
#[derive(Clone, Copy, Debug)]
struct Region {
    /// Its first address (granule-aligned).
    lo: u64,
    /// Past its last address.
    hi: u64,
    /// Where its granules start in [`Index::table`].
    off: usize,
}

/// Finds the block a word points into: a range check over all blocks, the region holding the
/// word, then a table giving for each 256-byte granule the first block that ends after its
/// start, so that only the few blocks of one granule (one or two cache lines of extents) are
/// searched. The table takes 4 bytes per 256 bytes of the blocks' span, regions apart.
struct Index<'a> {
    blocks: &'a [Extent],
    /// [`Input::allocator_words`].
    allocator_words: &'a [u64],
    /// The first block's address.
    lo: u64,
    /// The last block's end minus `lo`.
    span: u64,
    regions: Vec<Region>,
    /// Per granule of each region, then one past its last granule: the first block that ends
    /// after the granule's start.
    table: Vec<u32>,
}

/// The first address of granule `g`, or `u64::MAX` past the address space.
fn granule_start(g: u64) -> u64 {
    g.saturating_mul(1 << SHIFT)
}

impl<'a> Index<'a> {
    fn new(blocks: &'a [Extent], allocator_words: &'a [u64]) -> Self {
        debug_assert!(
            blocks.windows(2).all(|w| w[0].end() <= w[1].addr),
            "blocks must be sorted by address and not overlap"
        );
        let n = blocks.len();
        let mut regions = Vec::new();
        let mut table = Vec::new();
        let mut i = 0;
        while i < n {
            let first = blocks[i].addr >> SHIFT;
            let mut last = (blocks[i].end() - 1) >> SHIFT;
            let mut j = i + 1;
            while j < n && blocks[j].addr >> SHIFT <= last.saturating_add(GAP_GRANULES) {
                last = last.max((blocks[j].end() - 1) >> SHIFT);
                j += 1;
            }
            regions.push(Region {
                lo: granule_start(first),
                hi: granule_start(last + 1),
                off: table.len(),
            });
            let mut k = i;
            for g in first..=last + 1 {
                let start = granule_start(g);
                while k < j && blocks[k].end() <= start {
                    k += 1;
                }
                table.push(ix(k));
            }
            i = j;
        }
        // Candidates carry their slot as a u32 while being resolved.
        assert!(table.len() < MISS as usize, "granule table too large");
        let (lo, span) = match (blocks.first(), blocks.last()) {
            (Some(f), Some(l)) => (f.addr, l.end() - f.addr),
            _ => (0, 0),
        };
        Self {
            blocks,
            allocator_words,
            lo,
            span,
            regions,
            table,
        }
    }

    /// The slot of [`Index::table`] for the granule holding `ptr`, if a region holds it.
    #[inline(always)]
    fn slot(&self, ptr: u64) -> Option<usize> {
        if ptr.wrapping_sub(self.lo) >= self.span {
            return None;
        }
        let r = if self.regions.len() == 1 {
            self.regions[0]
        } else {
            self.regions[self.regions.partition_point(|r| r.lo <= ptr) - 1]
        };
        if ptr >= r.hi {
            return None;
        }
        Some(r.off + usize::try_from((ptr - r.lo) >> SHIFT).ok()?)
    }

    /// The block `ptr` points into, given its granule's slot: one that starts in the granule
    /// or the one reaching into it from below.
    #[inline(always)]
    fn search(&self, slot: usize, ptr: u64) -> Option<u32> {
        let a = us(self.table[slot]);
        let b = (us(self.table[slot + 1]) + 1).min(self.blocks.len());
        let k = self.blocks[a..b].partition_point(|e| e.addr <= ptr);
        if k == 0 {
            return None;
        }
        let i = a + k - 1;
        let e = self.blocks[i];
        (ptr < e.end() && !is_allocator_word(self.allocator_words, e, ptr)).then(|| ix(i))
    }

    /// The block `ptr` points into.
    #[cfg(test)]
    fn find(&self, ptr: u64) -> Option<u32> {
        self.search(self.slot(ptr)?, ptr)
    }
}

/// Whether `ptr`, inside `e`, is one of the allocator's own words (an interior pointer only).
#[inline(always)]
fn is_allocator_word(words: &[u64], e: Extent, ptr: u64) -> bool {
    ptr != e.addr && !words.is_empty() && words.binary_search(&ptr).is_ok()
}

/// No block (a candidate's `hit`).
const MISS: u32 = u32::MAX;

/// A word within the blocks' span, with where it was found.
#[derive(Clone, Copy, Debug)]
struct Cand {
    /// Its value.
    word: u64,
    /// Its address (0 for a register).
    at: u64,
    /// The block or root holding it.
    src: u32,
    /// The block it points into, or [`MISS`]; the granule's slot while being resolved.
    hit: u32,
}

/// Asks the CPU to bring `s[i]`'s cache line in, without waiting for it.
#[inline(always)]
fn touch<T>(s: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = s.get(i) {
        // SAFETY: a prefetch reads nothing the program sees and cannot fault; SSE is part
        // of x86_64.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                std::ptr::from_ref(x).cast(),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, i);
}

/// Bytes of a root range scanned between two checks for a full batch (a multiple of 8).
const ROOT_PIECE: usize = 1 << 16;
/// Blocks scanned per batch.
const CHUNK: usize = 256;
/// Candidates resolved per batch at most (a chunk of large blocks is resolved in parts).
const FLUSH: usize = 1024;

/// How many candidates ahead of the one being worked on each stage of [`resolve`] runs.
const AHEAD: usize = 16;

/// Sets each candidate's `hit`, and asks for the line of `state` it will read.
///
/// On a scattered heap every load of a lookup misses the cache: the granule table, the block
/// extents, the block's state. So the lookup runs as a pipeline: the table slot of candidate
/// `j` is asked for while the extents of candidate `j - AHEAD` and the state of candidate
/// `j - 2 AHEAD` are, so that many misses are in flight at once instead of one after
/// another, and each line is read soon after it arrives.
fn resolve(index: &Index, state: &[u8], cands: &mut [Cand]) {
    let n = cands.len();
    let ahead = AHEAD.min(n);
    for j in 0..n + 2 * ahead {
        if let Some(c) = cands.get_mut(j) {
            c.hit = match index.slot(c.word) {
                Some(s) => {
                    touch(&index.table, s);
                    ix(s)
                }
                None => MISS,
            };
        }
        if let Some(c) = j.checked_sub(ahead).and_then(|k| cands.get(k))
            && c.hit != MISS
        {
            let g = us(c.hit);
            touch(index.blocks, us(index.table[g]));
            touch(index.blocks, us(index.table[g + 1]));
        }
        if let Some(c) = j.checked_sub(2 * ahead).and_then(|k| cands.get_mut(k))
            && c.hit != MISS
        {
            c.hit = index.search(us(c.hit), c.word).unwrap_or(MISS);
            if c.hit != MISS {
                touch(state, us(c.hit));
            }
        }
    }
}

/// A block to scan, with its extent.
type Item = (u32, Extent);

/// `out` = `ids` with their extents, all of which are asked for before any is read.
fn items(blocks: &[Extent], ids: &[u32], out: &mut Vec<Item>) {
    for &b in ids {
        touch(blocks, us(b));
    }
    out.clear();
    out.extend(ids.iter().map(|&b| (b, blocks[us(b)])));
}

/// Scans blocks and roots in batches, handing their candidates to a consumer in the order
/// they were read; the consumer [`resolve`]s them.
struct Gather<'i> {
    image: &'i Image,
    index: &'i Index<'i>,
    /// Per block of the chunk: its bytes, when one segment holds them all.
    spans: Vec<Option<&'i [u8]>>,
    cands: Vec<Cand>,
}

impl<'i> Gather<'i> {
    fn new(image: &'i Image, index: &'i Index<'i>) -> Self {
        Self {
            image,
            index,
            spans: Vec::with_capacity(CHUNK),
            cands: Vec::with_capacity(FLUSH + 1024),
        }
    }

    /// Takes word `w` at `at` in `src`.
    #[inline(always)]
    fn push(&mut self, at: u64, w: u64, src: u32) {
        if w.wrapping_sub(self.index.lo) < self.index.span {
            self.cands.push(Cand {
                word: w,
                at,
                src,
                hit: MISS,
            });
        }
    }

    /// Takes the aligned words of `bytes`, at `base`, in `src`.
    #[inline(always)]
    fn push_words(&mut self, base: u64, bytes: &[u8], src: u32) {
        let (lo, span, cands) = (self.index.lo, self.index.span, &mut self.cands);
        for_words(base, bytes, |at, word| {
            if word.wrapping_sub(lo) < span {
                cands.push(Cand {
                    word,
                    at,
                    src,
                    hit: MISS,
                });
            }
        });
    }

    /// Hands over the candidates taken so far.
    fn flush(&mut self, consume: &mut impl FnMut(&mut [Cand])) {
        if !self.cands.is_empty() {
            consume(&mut self.cands);
            self.cands.clear();
        }
    }

    /// Hands over the candidates taken when full.
    #[inline]
    fn maybe_flush(&mut self, consume: &mut impl FnMut(&mut [Cand])) {
        if self.cands.len() >= FLUSH {
            self.flush(consume);
        }
    }

    /// Scans the aligned words of `chunk`'s blocks (`[addr, addr + size)`), in order, and
    /// hands every candidate to `consume`; returns the bytes read.
    fn blocks(&mut self, chunk: &[Item], mut consume: impl FnMut(&mut [Cand])) -> u64 {
        self.spans.clear();
        for &(_, e) in chunk {
            let bytes = if e.size < 8 {
                Some(&[][..])
            } else {
                self.image.get(e.addr..e.addr.saturating_add(e.size))
            };
            if let Some(bytes) = bytes {
                for line in (0..bytes.len().min(256)).step_by(64) {
                    touch(bytes, line);
                }
            }
            self.spans.push(bytes);
        }
        let mut read = 0;
        for (k, &(b, e)) in chunk.iter().enumerate() {
            if let Some(bytes) = self.spans[k] {
                self.push_words(e.addr, bytes, b);
                read += words_bytes(e.addr, bytes.len());
            } else {
                let image = self.image;
                for (base, bytes) in image.parts(e.addr..e.addr.saturating_add(e.size)) {
                    self.push_words(base, bytes, b);
                    read += words_bytes(base, bytes.len());
                }
            }
            self.maybe_flush(&mut consume);
        }
        self.flush(&mut consume);
        read
    }

    /// Scans the roots, in order, and hands every candidate to `consume` (a candidate's
    /// `src` is the root's index); returns the bytes read.
    fn roots(&mut self, roots: &[Root], mut consume: impl FnMut(&mut [Cand])) -> u64 {
        let mut read = 0;
        let (image, blocks) = (self.image, self.index.blocks);
        for (r, root) in roots.iter().enumerate() {
            let src = ix(r);
            match &root.source {
                RootSource::Word(w) => self.push(0, *w, src),
                RootSource::Range(range) => {
                    read += scan_root_range(image, blocks, range.clone(), |mut at, mut bytes| {
                        // In pieces cut at aligned addresses, so that the candidates of a
                        // large range are handed over before they take much memory.
                        while !bytes.is_empty() {
                            let skew = usize::try_from(at & 7).unwrap_or(0);
                            let (piece, rest) =
                                bytes.split_at((ROOT_PIECE - skew).min(bytes.len()));
                            self.push_words(at, piece, src);
                            self.maybe_flush(&mut consume);
                            at += piece.len() as u64;
                            bytes = rest;
                        }
                    });
                }
            }
            self.maybe_flush(&mut consume);
        }
        self.flush(&mut consume);
        read
    }
}

/// The marking pass's state.
struct Marks {
    state: Vec<u8>,
    via: Vec<Via>,
    /// Blocks made reachable and not scanned yet, in the order reached (breadth first), with
    /// their extents, read while their line was in cache.
    reach: VecDeque<Item>,
    /// Blocks made possibly lost, in the order reached; scanned once no reachable block is
    /// left to scan (none can then become reachable).
    possible: Vec<u32>,
    /// The `via` entries a batch sets, written once their lines have been asked for.
    links: Vec<(u32, Via)>,
}

impl Marks {
    /// Candidates from roots (`roots`) or blocks, from a definite source (a root or a
    /// reachable block) or not. `lc_push_without_clique_if_a_chunk_ptr`: Unreached →
    /// Possible, Unreached → Reachable, Possible → Reachable; a block raised is (re)queued.
    fn offer(&mut self, index: &Index, cands: &mut [Cand], definite: bool, roots: bool) {
        resolve(index, &self.state, cands);
        let blocks = index.blocks;
        for c in &*cands {
            if c.hit == MISS {
                continue;
            }
            let i = us(c.hit);
            let st = self.state[i];
            if st == REACHABLE {
                continue;
            }
            let from = if roots {
                Via::Root {
                    root: c.src,
                    at: c.at,
                }
            } else {
                Via::Block {
                    block: c.src,
                    at: c.at,
                }
            };
            if definite && c.word == blocks[i].addr {
                self.state[i] = REACHABLE;
                self.reach.push_back((c.hit, blocks[i]));
            } else if st == UNREACHED {
                self.state[i] = POSSIBLE;
                self.possible.push(c.hit);
            } else {
                continue;
            }
            touch(&self.via, i);
            self.links.push((c.hit, from));
        }
        for &(i, from) in &self.links {
            self.via[us(i)] = from;
        }
        self.links.clear();
    }
}

/// Classifies every block of `input` as Valgrind memcheck's leak check does with
/// `--leak-check-heuristics=none`.
///
/// Marking is breadth first, reachable blocks before possibly lost ones, so each block is read
/// once: Valgrind rescans a block raised from possibly lost to reachable, which gives the same
/// kinds. The clique pass then takes the blocks still unreached in address order, as
/// `MC_(detect_memory_leaks)` does.
pub fn classify(input: &Input) -> Verdicts {
    let blocks = input.blocks;
    let n = blocks.len();
    assert!(
        u32::try_from(n).is_ok_and(|n| n < u32::MAX),
        "too many blocks"
    );
    let index = Index::new(blocks, input.allocator_words);
    let mut g = Gather::new(input.image, &index);
    let mut m = Marks {
        state: vec![UNREACHED; n],
        via: vec![Via::Unreached; n],
        reach: VecDeque::new(),
        possible: Vec::new(),
        links: Vec::new(),
    };

    for &p in input.pinned {
        let i = us(p);
        debug_assert!(i < n, "pinned block {p} out of range");
        if i < n && m.state[i] != REACHABLE {
            m.state[i] = REACHABLE;
            m.via[i] = Via::Pinned;
            m.reach.push_back((p, blocks[i]));
        }
    }
    let mut scanned = g.roots(input.roots, |c| m.offer(&index, c, true, true));
    let mut chunk = Vec::with_capacity(CHUNK);
    while !m.reach.is_empty() {
        chunk.clear();
        chunk.extend(m.reach.drain(..m.reach.len().min(CHUNK)));
        scanned += g.blocks(&chunk, |c| m.offer(&index, c, true, false));
    }
    let mut ids = Vec::with_capacity(CHUNK);
    let mut head = 0;
    while head < m.possible.len() {
        let end = m.possible.len().min(head + CHUNK);
        // A block raised since is scanned as reachable already; none is raised from now on.
        ids.clear();
        ids.extend(
            m.possible[head..end]
                .iter()
                .filter(|&&b| m.state[us(b)] != REACHABLE),
        );
        head = end;
        items(blocks, &ids, &mut chunk);
        scanned += g.blocks(&chunk, |c| m.offer(&index, c, false, false));
    }
    let Marks { mut state, via, .. } = m;

    // Cliques. A leader stays UNREACHED so that a later leader reaching it takes it and its
    // clique over (its indirect bytes move to the new leader); a walk coming back to its own
    // leader ignores it (`lc_push_with_clique_if_a_chunk_ptr`: `ch_no != clique`). Which
    // blocks join a clique does not depend on the order they are walked in.
    let mut leader = vec![u32::MAX; n];
    let mut indirect = vec![0u64; n];
    let mut stack: Vec<Item> = Vec::new();
    for i in 0..n {
        if state[i] != UNREACHED {
            continue;
        }
        let lead = ix(i);
        stack.push((lead, blocks[i]));
        while !stack.is_empty() {
            chunk.clear();
            chunk.extend(stack.drain(stack.len().saturating_sub(CHUNK)..));
            scanned += g.blocks(&chunk, |cands| {
                resolve(&index, &state, cands);
                for c in &*cands {
                    let ci = us(c.hit);
                    if c.hit == MISS || state[ci] != UNREACHED || c.hit == lead {
                        continue;
                    }
                    // Valgrind adds `szB`, the size requested: a zero-size block adds nothing.
                    let add = blocks[ci].size.saturating_add(indirect[ci]);
                    indirect[i] = indirect[i].saturating_add(add);
                    indirect[ci] = 0;
                    state[ci] = INDIRECT;
                    leader[ci] = lead;
                    // An unreached block below `i` is an earlier leader: everything it
                    // reaches is in its clique already, so Valgrind's rescan of it finds
                    // nothing new.
                    if ci > i {
                        stack.push((c.hit, blocks[ci]));
                    }
                }
            });
        }
    }

    // A leader taken over points at a later leader, so resolving from the top down makes
    // every taken-over leader's entry final before the blocks of its old clique read it.
    let is_lead = |state: &[u8], l: u32| state[us(l)] == UNREACHED;
    for i in (0..n).rev() {
        let l = leader[i];
        if l != u32::MAX && us(l) > i && !is_lead(&state, l) {
            leader[i] = leader[us(l)];
        }
    }
    for i in 0..n {
        let l = leader[i];
        if l != u32::MAX && us(l) < i && !is_lead(&state, l) {
            leader[i] = leader[us(l)];
        }
    }
    let kind = state
        .iter()
        .map(|&s| match s {
            REACHABLE => LeakKind::Reachable,
            POSSIBLE => LeakKind::PossiblyLost,
            INDIRECT => LeakKind::IndirectlyLost,
            _ => LeakKind::DefinitelyLost,
        })
        .collect();
    Verdicts {
        kind,
        leader,
        indirect_bytes: indirect,
        via,
        scanned_bytes: scanned,
    }
}

/// The links from `block` up to its root: `block`'s own [`Via`], then its parent's, and so on,
/// ending with a [`Via::Root`] or [`Via::Pinned`] (or the single [`Via::Unreached`] of a lost
/// block).
pub fn retention_path(v: &Verdicts, block: u32) -> Vec<Via> {
    let mut out = Vec::new();
    let mut b = us(block);
    while let Some(&via) = v.via.get(b) {
        out.push(via);
        match via {
            // The bound only guards against verdicts not made by `classify`.
            Via::Block { block, .. } if out.len() <= v.via.len() => b = us(block),
            _ => break,
        }
    }
    out
}

/// Where a pointing word is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum From {
    /// In a root, by its index in [`Input::roots`].
    Root(u32),
    /// In a block, by its index in [`Input::blocks`].
    Block(u32),
}

/// A word pointing into a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Referrer {
    /// Where the word is.
    pub from: From,
    /// The word's address (0 for a register).
    pub at: u64,
    /// Whether it points past the block's first byte.
    pub interior: bool,
}

/// Pympler's refbrowser for blocks: for each of `targets`, every word pointing into it (start
/// or interior) in the roots and in every block, in that order, leaving out a block's pointers
/// into itself. One pass over all roots and all blocks.
pub fn referrers(input: &Input, targets: &[u32]) -> Vec<Vec<Referrer>> {
    let blocks = input.blocks;
    let mut uniq: Vec<u32> = targets.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    let ext: Vec<Extent> = uniq.iter().map(|&t| blocks[us(t)]).collect();
    let (lo, span) = match (ext.first(), ext.last()) {
        (Some(f), Some(l)) => (f.addr, l.end() - f.addr),
        _ => (0, 0),
    };
    let find = |w: u64| -> Option<usize> {
        if w.wrapping_sub(lo) >= span {
            return None;
        }
        let k = ext.partition_point(|e| e.addr <= w).checked_sub(1)?;
        (w < ext[k].end() && !is_allocator_word(input.allocator_words, ext[k], w)).then_some(k)
    };
    let mut found: Vec<Vec<Referrer>> = vec![Vec::new(); uniq.len()];
    for (r, root) in input.roots.iter().enumerate() {
        let from = From::Root(ix(r));
        match &root.source {
            RootSource::Word(w) => {
                if let Some(k) = find(*w) {
                    found[k].push(Referrer {
                        from,
                        at: 0,
                        interior: *w != ext[k].addr,
                    });
                }
            }
            RootSource::Range(range) => {
                scan_root_range(input.image, blocks, range.clone(), |base, bytes| {
                    for_words(base, bytes, |at, w| {
                        if let Some(k) = find(w) {
                            found[k].push(Referrer {
                                from,
                                at,
                                interior: w != ext[k].addr,
                            });
                        }
                    });
                });
            }
        }
    }
    for (i, &e) in blocks.iter().enumerate() {
        let b = ix(i);
        scan_block(input.image, e, |at, w| {
            if let Some(k) = find(w)
                && uniq[k] != b
            {
                found[k].push(Referrer {
                    from: From::Block(b),
                    at,
                    interior: w != ext[k].addr,
                });
            }
        });
    }
    targets
        .iter()
        .map(|t| found[uniq.binary_search(t).unwrap_or(0)].clone())
        .collect()
}

/// A block in a [`referrer_tree`] and what points at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefNode {
    /// The block's index in [`Input::blocks`].
    pub block: u32,
    /// Its referrers, roots first, then blocks in address order.
    pub referrers: Vec<RefEdge>,
    /// Why some referrers are not shown, if any are not.
    pub cut: Option<Cut>,
}

/// One referrer of a [`RefNode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefEdge {
    /// A root's word.
    Root {
        /// The root's index in [`Input::roots`].
        root: u32,
        /// The word's address (0 for a register).
        at: u64,
        /// Whether it points past the block's first byte.
        interior: bool,
    },
    /// A word in another block, with that block's own referrers.
    Block {
        /// The referring block.
        node: RefNode,
        /// The word's address.
        at: u64,
        /// Whether it points past the block's first byte.
        interior: bool,
    },
    /// A word in a block already shown higher in the tree (or earlier at the same depth):
    /// not expanded again, which ends cycles.
    Seen {
        /// The referring block.
        block: u32,
        /// The word's address.
        at: u64,
        /// Whether it points past the block's first byte.
        interior: bool,
    },
}

/// Why a node's referrers are not all shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cut {
    /// The node is at the tree's maximum depth and has referrers.
    Depth,
    /// The node has more than `max_roots` referrers; `more` of them are left out.
    MaxRoots {
        /// How many are left out.
        more: usize,
    },
}

/// An edge while the tree is flat.
enum FlatEdge {
    Root {
        root: u32,
        at: u64,
        interior: bool,
    },
    Node {
        node: usize,
        at: u64,
        interior: bool,
    },
    Seen {
        block: u32,
        at: u64,
        interior: bool,
    },
}

/// A node while the tree is flat.
struct FlatNode {
    block: u32,
    edges: Vec<FlatEdge>,
    cut: Option<Cut>,
}

/// Pympler's `RefBrowser` for a block: its referrers, theirs, and so on up to `maxdepth`
/// levels, at most `max_roots` referrers per node. Built level by level with one
/// [`referrers`] pass per level over the level's blocks (one more to tell whether the deepest
/// have referrers), so it costs `O(maxdepth × memory)`; the tree nests `maxdepth` deep at most.
pub fn referrer_tree(input: &Input, block: u32, maxdepth: usize, max_roots: usize) -> RefNode {
    referrer_trees(input, &[block], maxdepth, max_roots)
        .pop()
        .expect("one tree per block")
}

/// [`referrer_tree`] for each of `blocks`, grown together: each level is one [`referrers`]
/// pass over every tree's blocks of that level, so many trees cost what one does.
pub fn referrer_trees(
    input: &Input,
    blocks: &[u32],
    maxdepth: usize,
    max_roots: usize,
) -> Vec<RefNode> {
    /// One tree while it grows.
    struct Growing {
        nodes: Vec<FlatNode>,
        shown: HashSet<u32>,
        frontier: Vec<usize>,
    }
    let mut trees: Vec<Growing> = blocks
        .iter()
        .map(|&block| Growing {
            nodes: vec![FlatNode {
                block,
                edges: Vec::new(),
                cut: None,
            }],
            shown: HashSet::from([block]),
            frontier: vec![0],
        })
        .collect();
    for depth in 0..=maxdepth {
        let targets: Vec<u32> = trees
            .iter()
            .flat_map(|t| t.frontier.iter().map(|&f| t.nodes[f].block))
            .collect();
        if targets.is_empty() {
            break;
        }
        let mut refs = referrers(input, &targets).into_iter();
        for t in &mut trees {
            let mut next = Vec::new();
            for f in std::mem::take(&mut t.frontier) {
                let rs = refs.next().unwrap_or_default();
                if rs.is_empty() {
                    continue;
                }
                if depth == maxdepth {
                    t.nodes[f].cut = Some(Cut::Depth);
                    continue;
                }
                let keep = rs.len().min(max_roots);
                if keep < rs.len() {
                    t.nodes[f].cut = Some(Cut::MaxRoots {
                        more: rs.len() - keep,
                    });
                }
                for r in &rs[..keep] {
                    let (at, interior) = (r.at, r.interior);
                    let edge = match r.from {
                        From::Root(root) => FlatEdge::Root { root, at, interior },
                        From::Block(b) if t.shown.insert(b) => {
                            t.nodes.push(FlatNode {
                                block: b,
                                edges: Vec::new(),
                                cut: None,
                            });
                            next.push(t.nodes.len() - 1);
                            FlatEdge::Node {
                                node: t.nodes.len() - 1,
                                at,
                                interior,
                            }
                        }
                        From::Block(b) => FlatEdge::Seen {
                            block: b,
                            at,
                            interior,
                        },
                    };
                    t.nodes[f].edges.push(edge);
                }
            }
            t.frontier = next;
        }
    }
    trees.into_iter().map(|t| nest(t.nodes)).collect()
}

/// A flat tree (each child made after its parent) nested, without recursion.
fn nest(nodes: Vec<FlatNode>) -> RefNode {
    // A child is always made after its parent: build from the last node back.
    let mut built: Vec<Option<RefNode>> = Vec::with_capacity(nodes.len());
    built.resize_with(nodes.len(), || None);
    for (i, f) in nodes.into_iter().enumerate().rev() {
        let referrers = f
            .edges
            .into_iter()
            .map(|e| match e {
                FlatEdge::Root { root, at, interior } => RefEdge::Root { root, at, interior },
                FlatEdge::Node { node, at, interior } => RefEdge::Block {
                    node: built[node]
                        .take()
                        .expect("a child is built before its parent"),
                    at,
                    interior,
                },
                FlatEdge::Seen {
                    block,
                    at,
                    interior,
                } => RefEdge::Seen {
                    block,
                    at,
                    interior,
                },
            })
            .collect();
        built[i] = Some(RefNode {
            block: f.block,
            referrers,
            cut: f.cut,
        });
    }
    built[0].take().expect("the tree has its root")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Segment;

    /// Where the synthetic globals are.
    const DATA: u64 = 0x10_0000;
    /// Where the synthetic heap starts.
    const HEAP: u64 = 0x20_0000;

    /// A synthetic process: a data segment for globals and a heap of blocks with 16-byte
    /// headers, as malloc lays them out.
    struct Mem {
        data: Vec<u8>,
        heap: Vec<u8>,
        blocks: Vec<Extent>,
        roots: Vec<Root>,
        pinned: Vec<u32>,
        allocator_words: Vec<u64>,
        image: Image,
    }

    impl Mem {
        fn new() -> Self {
            Self {
                data: vec![0; 0x1000],
                heap: Vec::new(),
                blocks: Vec::new(),
                roots: Vec::new(),
                pinned: Vec::new(),
                allocator_words: Vec::new(),
                image: Image::default(),
            }
        }

        /// A block of `size` bytes; returns its index. Blocks come in address order.
        fn alloc(&mut self, size: u64) -> u32 {
            let header = self.heap.len().next_multiple_of(16) + 16;
            let addr = HEAP + header as u64;
            let len = header + usize::try_from(size.max(1).next_multiple_of(16)).unwrap();
            self.heap.resize(len, 0);
            self.blocks.push(Extent { addr, size });
            ix(self.blocks.len() - 1)
        }

        fn addr(&self, b: u32) -> u64 {
            self.blocks[us(b)].addr
        }

        /// Writes `value` at `at` (in the data segment or the heap).
        fn put(&mut self, at: u64, value: u64) {
            let (buf, base) = if at >= HEAP {
                (&mut self.heap, HEAP)
            } else {
                (&mut self.data, DATA)
            };
            let i = usize::try_from(at - base).unwrap();
            buf[i..i + 8].copy_from_slice(&value.to_le_bytes());
        }

        /// Stores a pointer to `to` (plus `off`) in global slot `slot`.
        fn global(&mut self, slot: u64, to: u32, off: u64) -> u64 {
            let at = DATA + 8 * slot;
            self.put(at, self.addr(to) + off);
            at
        }

        /// Stores a pointer to `to` (plus `off`) at word `word` of block `from`.
        fn link(&mut self, from: u32, word: u64, to: u32, off: u64) -> u64 {
            let at = self.addr(from) + 8 * word;
            self.put(at, self.addr(to) + off);
            at
        }

        /// Makes the image, with the data segment as root 0.
        fn seal(&mut self) {
            self.image = Image::new(vec![
                Segment {
                    start: DATA,
                    bytes: self.data.clone(),
                },
                Segment {
                    start: HEAP,
                    bytes: self.heap.clone(),
                },
            ]);
            self.roots.insert(
                0,
                Root {
                    source: RootSource::Range(DATA..DATA + self.data.len() as u64),
                    place: 0,
                },
            );
        }

        fn input(&self) -> Input<'_> {
            Input {
                image: &self.image,
                blocks: &self.blocks,
                roots: &self.roots,
                pinned: &self.pinned,
                allocator_words: &self.allocator_words,
            }
        }

        /// Bytes and blocks of each kind, in [`LeakKind::ALL`] order.
        fn totals(&self, v: &Verdicts) -> [(u64, u32); 4] {
            let mut t = [(0, 0); 4];
            for (b, k) in self.blocks.iter().zip(&v.kind) {
                let slot = LeakKind::ALL.iter().position(|x| x == k).unwrap();
                t[slot].0 += b.size;
                t[slot].1 += 1;
            }
            t
        }
    }

    /// The leak-cases program of next-capabilities.md §2.7 (Valgrind's leak-cases.c, with
    /// cases 10 to 13 added): block sizes encode the case.
    #[test]
    fn leak_cases_match_valgrind() {
        let mut m = Mem::new();
        let mut by_size = std::collections::HashMap::new();
        let mut mk = |m: &mut Mem, size: u64| {
            let b = m.alloc(size);
            by_size.insert(size, b);
            b
        };
        // 1: global -> A.
        let a = mk(&mut m, 1000);
        m.global(0, a, 0);
        // 2: global -> A -> B.
        let (a, b) = (mk(&mut m, 2000), mk(&mut m, 2001));
        m.global(1, a, 0);
        m.link(a, 0, b, 0);
        // 3: no pointer.
        mk(&mut m, 3000);
        // 4: lost A -> B.
        let (a, b) = (mk(&mut m, 4000), mk(&mut m, 4001));
        m.link(a, 0, b, 0);
        // 5: global -> A+8.
        let a = mk(&mut m, 5000);
        m.global(2, a, 8);
        // 6: global -> A -> B+8.
        let (a, b) = (mk(&mut m, 6000), mk(&mut m, 6001));
        m.global(3, a, 0);
        m.link(a, 0, b, 8);
        // 7: global -> A+8, A -> B.
        let (a, b) = (mk(&mut m, 7000), mk(&mut m, 7001));
        m.global(4, a, 8);
        m.link(a, 0, b, 0);
        // 8: global -> A+8, A -> B+8.
        let (a, b) = (mk(&mut m, 8000), mk(&mut m, 8001));
        m.global(5, a, 8);
        m.link(a, 0, b, 8);
        // 9: lost A -> B+8.
        let (a, b) = (mk(&mut m, 9000), mk(&mut m, 9001));
        m.link(a, 0, b, 8);
        // 10: lost cycle A <-> B.
        let (a, b) = (mk(&mut m, 10000), mk(&mut m, 10001));
        m.link(a, 0, b, 0);
        m.link(b, 0, a, 0);
        // 11: only on a second thread's stack; 12: only in a `__thread` variable. Both are
        // root ranges of their own, in memory the heap segment does not hold.
        let (s11, s12) = (mk(&mut m, 11000), mk(&mut m, 12000));
        // 13: the pointer stored XOR-ed.
        let x = mk(&mut m, 13000);
        m.global(6, x, 0);
        let at = DATA + 48;
        m.put(at, m.addr(x) ^ 0x5555_5555_5555_5555);
        m.seal();
        let (stack, tls) = (0x30_0000u64, 0x40_0000u64);
        let mut segs = m.image.segments().to_vec();
        let mut stack_bytes = vec![0u8; 64];
        stack_bytes[40..48].copy_from_slice(&m.addr(s11).to_le_bytes());
        let mut tls_bytes = vec![0u8; 32];
        tls_bytes[8..16].copy_from_slice(&m.addr(s12).to_le_bytes());
        segs.push(Segment {
            start: stack,
            bytes: stack_bytes,
        });
        segs.push(Segment {
            start: tls,
            bytes: tls_bytes,
        });
        m.image = Image::new(segs);
        m.roots.push(Root {
            source: RootSource::Range(stack..stack + 64),
            place: 1,
        });
        m.roots.push(Root {
            source: RootSource::Range(tls..tls + 32),
            place: 2,
        });

        let v = classify(&m.input());
        let kind = |size: u64| v.kind[us(by_size[&size])];
        for s in [1000, 2000, 2001, 6000, 11000, 12000] {
            assert_eq!(kind(s), LeakKind::Reachable, "{s}");
        }
        for s in [3000, 4000, 9000, 10000, 13000] {
            assert_eq!(kind(s), LeakKind::DefinitelyLost, "{s}");
        }
        for s in [4001, 9001, 10001] {
            assert_eq!(kind(s), LeakKind::IndirectlyLost, "{s}");
            assert_eq!(v.leader[us(by_size[&s])], by_size[&(s - 1)], "{s}");
        }
        for s in [5000, 6001, 7000, 7001, 8000, 8001] {
            assert_eq!(kind(s), LeakKind::PossiblyLost, "{s}");
        }
        assert_eq!(
            m.totals(&v),
            [(39_000, 5), (23_003, 3), (41_003, 6), (34_001, 6)]
        );
        let indirect = |size: u64| v.indirect_bytes[us(by_size[&size])];
        assert_eq!(
            [3000, 4000, 9000, 10000, 13000].map(indirect),
            [0, 4001, 9001, 10001, 0]
        );
        assert!(v.indirect_bytes.iter().sum::<u64>() == 23_003);
        assert_eq!(
            v.via[us(by_size[&11000])],
            Via::Root {
                root: 1,
                at: stack + 40
            }
        );
        assert_eq!(
            v.via[us(by_size[&12000])],
            Via::Root {
                root: 2,
                at: tls + 8
            }
        );
        assert_eq!(
            v.via[us(by_size[&2001])],
            Via::Block {
                block: by_size[&2000],
                at: m.addr(by_size[&2000])
            }
        );
    }

    /// Valgrind's DTV case: with the loader's block pinned, what only it points at is
    /// reachable.
    #[test]
    fn a_pinned_block_holds_the_only_pointer() {
        let mut m = Mem::new();
        let dtv = m.alloc(288);
        let tls = m.alloc(64);
        let lost = m.alloc(32);
        m.link(dtv, 1, tls, 0);
        m.pinned.push(dtv);
        m.seal();
        let v = classify(&m.input());
        assert_eq!(
            v.kind,
            [
                LeakKind::Reachable,
                LeakKind::Reachable,
                LeakKind::DefinitelyLost
            ]
        );
        assert_eq!(v.via[0], Via::Pinned);
        assert_eq!(
            v.via[1],
            Via::Block {
                block: dtv,
                at: m.addr(dtv) + 8
            }
        );
        assert_eq!(retention_path(&v, tls), [v.via[1], Via::Pinned]);
        assert_eq!(retention_path(&v, lost), [Via::Unreached]);
    }

    /// glibc's pointer to the next chunk's header, inside a block's last bytes, keeps nothing
    /// alive; a start pointer, or an interior pointer elsewhere, still does.
    #[test]
    fn allocator_words_point_at_nothing() {
        let mut m = Mem::new();
        let (a, b, c) = (m.alloc(4242), m.alloc(4242), m.alloc(4242));
        let tail = |m: &Mem, x: u32| m.addr(x) + 4240;
        m.global(0, a, 4240);
        m.global(1, b, 4240);
        m.global(2, b, 8);
        m.global(3, c, 0);
        m.global(4, c, 4240);
        m.allocator_words = vec![tail(&m, a), tail(&m, b), tail(&m, c)];
        m.seal();
        let v = classify(&m.input());
        assert_eq!(
            v.kind,
            [
                LeakKind::DefinitelyLost,
                LeakKind::PossiblyLost,
                LeakKind::Reachable
            ]
        );
        let r = referrers(&m.input(), &[0, 1, 2]);
        assert!(r[0].is_empty(), "{r:?}");
        assert_eq!(r[1].len(), 1, "{r:?}");
        assert_eq!(r[2].len(), 1, "{r:?}");
    }

    #[test]
    fn register_roots() {
        let mut m = Mem::new();
        let (a, b, c) = (m.alloc(32), m.alloc(32), m.alloc(32));
        m.seal();
        m.roots.push(Root {
            source: RootSource::Word(m.addr(a)),
            place: 7,
        });
        m.roots.push(Root {
            source: RootSource::Word(m.addr(b) + 31),
            place: 8,
        });
        m.roots.push(Root {
            source: RootSource::Word(m.addr(c) + 32),
            place: 9,
        });
        let v = classify(&m.input());
        assert_eq!(
            v.kind,
            [
                LeakKind::Reachable,
                LeakKind::PossiblyLost,
                LeakKind::DefinitelyLost
            ]
        );
        assert_eq!(v.via[0], Via::Root { root: 1, at: 0 });
        assert_eq!(v.via[1], Via::Root { root: 2, at: 0 });
        // Registers are not memory: only the globals and the three blocks are counted.
        assert_eq!(v.scanned_bytes, 0x1000 + 3 * 32);
    }

    #[test]
    fn zero_size_blocks_count_as_one_byte() {
        let mut m = Mem::new();
        let z1 = m.alloc(0);
        let z2 = m.alloc(0);
        let lead = m.alloc(16);
        let z3 = m.alloc(0);
        m.global(0, z1, 0);
        m.global(1, z2, 1); // one past the single byte: points at nothing
        m.link(lead, 0, z3, 0);
        m.seal();
        let v = classify(&m.input());
        assert_eq!(
            v.kind,
            [
                LeakKind::Reachable,
                LeakKind::DefinitelyLost,
                LeakKind::DefinitelyLost,
                LeakKind::IndirectlyLost
            ]
        );
        // Valgrind adds the size requested to the leader: a zero-size block adds nothing.
        assert_eq!(v.indirect_bytes[us(lead)], 0);
        assert_eq!(v.leader[us(z3)], lead);
    }

    #[test]
    fn a_pointer_to_the_last_byte_is_interior() {
        let mut m = Mem::new();
        let a = m.alloc(24);
        let b = m.alloc(24);
        m.global(0, a, 23);
        m.global(1, b, 24); // past the end, into the padding
        m.seal();
        let v = classify(&m.input());
        assert_eq!(v.kind, [LeakKind::PossiblyLost, LeakKind::DefinitelyLost]);
    }

    #[test]
    fn a_later_start_pointer_raises_possible_to_reachable() {
        let mut m = Mem::new();
        let x = m.alloc(16);
        let a = m.alloc(32);
        let b = m.alloc(16);
        m.global(0, a, 8); // interior first: possible
        m.global(1, x, 0);
        m.link(x, 0, a, 0); // then a start pointer from a reachable block
        m.link(a, 2, b, 0);
        m.seal();
        let v = classify(&m.input());
        assert_eq!(v.kind, [LeakKind::Reachable; 3]);
        assert_eq!(
            v.via[us(a)],
            Via::Block {
                block: x,
                at: m.addr(x)
            }
        );
        assert_eq!(
            retention_path(&v, b),
            [
                Via::Block {
                    block: a,
                    at: m.addr(a) + 16
                },
                Via::Block {
                    block: x,
                    at: m.addr(x)
                },
                Via::Root {
                    root: 0,
                    at: DATA + 8
                }
            ]
        );
        // Each block read once, though `a` was reached twice.
        assert_eq!(v.scanned_bytes, 0x1000 + 16 + 32 + 16);
    }

    #[test]
    fn a_possible_block_gives_possible_even_through_start_pointers() {
        let mut m = Mem::new();
        let a = m.alloc(16);
        let b = m.alloc(16);
        let c = m.alloc(16);
        m.global(0, a, 8);
        m.link(a, 0, b, 0);
        m.link(b, 0, c, 0);
        m.seal();
        let v = classify(&m.input());
        assert_eq!(v.kind, [LeakKind::PossiblyLost; 3]);
        assert_eq!(retention_path(&v, c).len(), 3);
    }

    #[test]
    fn a_later_leader_takes_an_earlier_clique_over() {
        let mut m = Mem::new();
        // b is below a, so it leads a clique {b, c} first; then a, reaching b, takes it over.
        let b = m.alloc(100);
        let c = m.alloc(10);
        let a = m.alloc(1000);
        m.link(b, 0, c, 0);
        m.link(a, 0, b, 8);
        m.seal();
        let v = classify(&m.input());
        assert_eq!(
            v.kind,
            [
                LeakKind::IndirectlyLost,
                LeakKind::IndirectlyLost,
                LeakKind::DefinitelyLost
            ]
        );
        assert_eq!(v.leader, [a, a, u32::MAX]);
        assert_eq!(v.indirect_bytes, [0, 0, 110]);
    }

    #[test]
    fn a_cycle_back_to_the_leader_leaves_it_definitely_lost() {
        let mut m = Mem::new();
        let a = m.alloc(16);
        let b = m.alloc(16);
        let c = m.alloc(16);
        m.link(a, 0, b, 0);
        m.link(b, 0, c, 0);
        m.link(c, 0, a, 8);
        m.seal();
        let v = classify(&m.input());
        assert_eq!(v.kind[us(a)], LeakKind::DefinitelyLost);
        assert_eq!(v.leader, [u32::MAX, a, a]);
        assert_eq!(v.indirect_bytes, [32, 0, 0]);
    }

    #[test]
    fn words_inside_blocks_are_not_roots() {
        let mut m = Mem::new();
        let a = m.alloc(16);
        let b = m.alloc(16);
        let c = m.alloc(16);
        m.link(a, 0, b, 0);
        m.seal();
        // The whole heap as a root range (unaccounted heap memory), with a word in a header
        // pointing at c.
        let hdr = m.addr(c) - 16;
        m.put(hdr, m.addr(c));
        m.seal_again();
        m.roots.push(Root {
            source: RootSource::Range(HEAP..HEAP + m.heap.len() as u64),
            place: 1,
        });
        let v = classify(&m.input());
        assert_eq!(
            v.kind,
            [
                LeakKind::DefinitelyLost,
                LeakKind::IndirectlyLost,
                LeakKind::Reachable
            ]
        );
        assert_eq!(v.via[us(c)], Via::Root { root: 1, at: hdr });
        // The heap's bytes outside blocks: three 16-byte headers and the padding... here
        // none, blocks fill their 16 bytes.
        assert_eq!(v.scanned_bytes, 0x1000 + 48 + 3 * 16);
    }

    impl Mem {
        /// Makes the image again after writes, keeping the roots.
        fn seal_again(&mut self) {
            let roots = std::mem::take(&mut self.roots);
            self.seal();
            self.roots = roots;
        }
    }

    #[test]
    fn memory_the_image_lacks_is_skipped() {
        let mut m = Mem::new();
        let a = m.alloc(64);
        let b = m.alloc(16);
        m.link(a, 7, b, 0);
        m.global(0, a, 0);
        m.seal();
        // Cut the heap segment short: a's last word (the pointer to b) is not in the image.
        let mut segs = m.image.segments().to_vec();
        let cut = usize::try_from(m.addr(a) + 48 - HEAP).unwrap();
        segs[1].bytes.truncate(cut);
        m.image = Image::new(segs);
        m.roots[0].source = RootSource::Range(0..u64::MAX);
        let v = classify(&m.input());
        assert_eq!(v.kind, [LeakKind::Reachable, LeakKind::DefinitelyLost]);
        assert_eq!(v.scanned_bytes, 0x1000 + 16 + 48);
    }

    #[test]
    fn breadth_first_gives_the_shortest_path() {
        let mut m = Mem::new();
        let a = m.alloc(16);
        let b = m.alloc(16);
        let c = m.alloc(16);
        let d = m.alloc(16);
        m.global(0, a, 0);
        m.global(1, d, 0);
        m.link(a, 0, b, 0);
        m.link(b, 0, c, 0);
        m.link(d, 0, c, 0);
        m.seal();
        let v = classify(&m.input());
        assert_eq!(retention_path(&v, c).len(), 2);
        assert_eq!(
            v.via[us(c)],
            Via::Block {
                block: d,
                at: m.addr(d)
            }
        );
    }

    /// A list of `n` 16-byte nodes, node i pointing at node i+1 (`forward`) or node i-1.
    fn list(n: u32, forward: bool) -> Mem {
        let mut m = Mem::new();
        m.heap.reserve(us(n) * 32);
        for _ in 0..n {
            m.alloc(16);
        }
        for i in 1..n {
            if forward {
                m.link(i - 1, 0, i, 0);
            } else {
                m.link(i, 0, i - 1, 0);
            }
        }
        m.seal();
        m
    }

    #[test]
    fn a_million_node_list_without_its_head() {
        let n = 1_000_000;
        let m = list(n, true);
        let v = classify(&m.input());
        assert_eq!(m.totals(&v)[..2], [(16, 1), (16 * u64::from(n - 1), n - 1)]);
        assert_eq!(v.indirect_bytes[0], 16 * u64::from(n - 1));
        assert!(v.leader[1..].iter().all(|&l| l == 0));

        // Backwards, every node leads a clique in turn and takes over the one below it.
        let m = list(n, false);
        let v = classify(&m.input());
        let last = n - 1;
        assert_eq!(v.kind[us(last)], LeakKind::DefinitelyLost);
        assert_eq!(m.totals(&v)[..2], [(16, 1), (16 * u64::from(n - 1), n - 1)]);
        assert_eq!(v.indirect_bytes[us(last)], 16 * u64::from(n - 1));
        assert!(v.leader[..us(last)].iter().all(|&l| l == last));
    }

    #[test]
    fn a_long_reachable_list_has_its_whole_path() {
        let mut m = list(200_000, true);
        m.global(0, 0, 0);
        m.seal_again();
        let v = classify(&m.input());
        assert!(v.kind.iter().all(|&k| k == LeakKind::Reachable));
        assert_eq!(retention_path(&v, 199_999).len(), 200_000);
    }

    #[test]
    fn referrers_find_start_and_interior_words_but_not_self() {
        let mut m = Mem::new();
        let a = m.alloc(32);
        let b = m.alloc(32);
        let g = m.global(3, a, 8);
        let w = m.link(b, 1, a, 0);
        m.link(a, 0, a, 0); // itself: left out
        m.link(a, 1, b, 0);
        m.seal();
        m.roots.push(Root {
            source: RootSource::Word(m.addr(a) + 31),
            place: 1,
        });
        let r = referrers(&m.input(), &[a, b, a]);
        let ra = vec![
            Referrer {
                from: From::Root(0),
                at: g,
                interior: true,
            },
            Referrer {
                from: From::Root(1),
                at: 0,
                interior: true,
            },
            Referrer {
                from: From::Block(b),
                at: w,
                interior: false,
            },
        ];
        assert_eq!(r[0], ra);
        assert_eq!(r[2], ra);
        assert_eq!(
            r[1],
            [Referrer {
                from: From::Block(a),
                at: m.addr(a) + 8,
                interior: false,
            }]
        );
    }

    #[test]
    fn referrer_tree_stops_at_cycles_depth_and_breadth() {
        let mut m = Mem::new();
        let a = m.alloc(16);
        let b = m.alloc(16);
        let c = m.alloc(16);
        let d = m.alloc(16);
        let g = m.global(0, a, 0);
        m.link(a, 0, b, 0);
        m.link(b, 0, a, 0); // a <-> b
        m.link(c, 0, b, 0);
        m.link(d, 0, c, 0);
        m.seal();
        let input = m.input();
        let t = referrer_tree(&input, b, 10, 10);
        let at = |x: u32| m.addr(x);
        let expect = RefNode {
            block: b,
            referrers: vec![
                RefEdge::Block {
                    node: RefNode {
                        block: a,
                        referrers: vec![
                            RefEdge::Root {
                                root: 0,
                                at: g,
                                interior: false,
                            },
                            RefEdge::Seen {
                                block: b,
                                at: at(b),
                                interior: false,
                            },
                        ],
                        cut: None,
                    },
                    at: at(a),
                    interior: false,
                },
                RefEdge::Block {
                    node: RefNode {
                        block: c,
                        referrers: vec![RefEdge::Block {
                            node: RefNode {
                                block: d,
                                referrers: vec![],
                                cut: None,
                            },
                            at: at(d),
                            interior: false,
                        }],
                        cut: None,
                    },
                    at: at(c),
                    interior: false,
                },
            ],
            cut: None,
        };
        assert_eq!(t, expect);

        // One level: b's referrers, theirs cut.
        let t = referrer_tree(&input, b, 1, 10);
        let cuts: Vec<_> = t
            .referrers
            .iter()
            .map(|e| match e {
                RefEdge::Block { node, .. } => (node.block, node.referrers.len(), node.cut),
                _ => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(cuts, [(a, 0, Some(Cut::Depth)), (c, 0, Some(Cut::Depth))]);
        let t = referrer_tree(&input, b, 0, 10);
        assert_eq!((t.referrers.len(), t.cut), (0, Some(Cut::Depth)));
        // d has no referrer: no cut even at depth 0.
        assert_eq!(referrer_tree(&input, d, 0, 10).cut, None);

        // One referrer per node.
        let t = referrer_tree(&input, b, 10, 1);
        assert_eq!(t.cut, Some(Cut::MaxRoots { more: 1 }));
        assert_eq!(t.referrers.len(), 1);
        let RefEdge::Block { node, .. } = &t.referrers[0] else {
            panic!("{t:?}");
        };
        assert_eq!(node.block, a);
        assert_eq!(node.cut, Some(Cut::MaxRoots { more: 1 }));
        assert!(matches!(
            node.referrers[..],
            [RefEdge::Root { root: 0, .. }]
        ));
    }

    /// Trees grown together are the trees grown one by one.
    #[test]
    fn referrer_trees_together_are_each_tree() {
        let mut m = Mem::new();
        let (a, b, c, d) = (m.alloc(16), m.alloc(16), m.alloc(16), m.alloc(16));
        m.global(0, a, 0);
        m.link(a, 0, b, 0);
        m.link(b, 0, a, 0);
        m.link(c, 0, b, 8);
        m.link(d, 0, c, 0);
        m.seal();
        let input = m.input();
        for (depth, roots) in [(0, 10), (1, 10), (3, 1), (10, 10)] {
            let blocks = [b, d, a, b, c];
            let together = referrer_trees(&input, &blocks, depth, roots);
            let apart: Vec<RefNode> = blocks
                .iter()
                .map(|&x| referrer_tree(&input, x, depth, roots))
                .collect();
            assert_eq!(together, apart, "depth {depth}, roots {roots}");
        }
    }

    #[test]
    fn the_index_handles_sparse_regions_and_big_blocks() {
        let blocks = [
            Extent {
                addr: 0x1000,
                size: 16,
            },
            Extent {
                addr: 0x1010,
                size: 0x10_0000,
            },
            Extent {
                addr: 0x7f00_0000_0000,
                size: 0,
            },
            Extent {
                addr: 0x7f00_0000_0008,
                size: 8,
            },
            Extent {
                addr: 0x7fff_0000_0000,
                size: 0x2000,
            },
        ];
        let idx = Index::new(&blocks, &[]);
        assert_eq!(idx.regions.len(), 3);
        let cases = [
            (0xfff, None),
            (0x1000, Some(0)),
            (0x100f, Some(0)),
            (0x1010, Some(1)),
            (0x8_0000, Some(1)),
            (0x10_100f, Some(1)),
            (0x10_1010, None),
            (0x7f00_0000_0000, Some(2)),
            (0x7f00_0000_0001, None),
            (0x7f00_0000_0008, Some(3)),
            (0x7f00_0000_000f, Some(3)),
            (0x7f00_0000_0010, None),
            (0x7fff_0000_1fff, Some(4)),
            (0x7fff_0000_2000, None),
            (0, None),
            (u64::MAX, None),
        ];
        for (ptr, want) in cases {
            assert_eq!(idx.find(ptr), want, "{ptr:#x}");
        }
        // Against a plain search, on every address around every block edge.
        for e in &blocks {
            for ptr in [e.addr - 1, e.addr, e.end() - 1, e.end(), e.end() + 1] {
                let want = blocks
                    .iter()
                    .position(|b| b.addr <= ptr && ptr < b.end())
                    .map(ix);
                assert_eq!(idx.find(ptr), want, "{ptr:#x}");
            }
        }
    }

    #[test]
    fn no_blocks_no_roots() {
        let image = Image::default();
        let v = classify(&Input {
            image: &image,
            blocks: &[],
            roots: &[Root {
                source: RootSource::Word(0x1234),
                place: 0,
            }],
            pinned: &[],
            allocator_words: &[],
        });
        assert_eq!(v, Verdicts::default());
        let t = referrer_tree(
            &Input {
                image: &image,
                blocks: &[Extent { addr: 8, size: 8 }],
                roots: &[],
                pinned: &[],
                allocator_words: &[],
            },
            0,
            3,
            3,
        );
        assert_eq!(t.referrers, []);
    }

    /// Valgrind's algorithm written out plainly, as `mc_leakcheck.c` runs it: one LIFO mark
    /// stack with a pending flag, a block raised from possibly lost to reachable rescanned,
    /// cliques in address order with every block the walk reaches pushed and scanned,
    /// earlier leaders included. Linear searches: for small graphs only.
    fn reference(m: &Mem) -> (Vec<LeakKind>, Vec<u32>, Vec<u64>) {
        let blocks = &m.blocks;
        let n = blocks.len();
        let find = |p: u64| blocks.iter().position(|b| b.addr <= p && p < b.end());
        let words = |lo: u64, hi: u64| -> Vec<u64> {
            let mut out = Vec::new();
            let mut a = lo.next_multiple_of(8);
            while a + 8 <= hi {
                if let Some(b) = m.image.get(a..a + 8) {
                    out.push(u64::from_le_bytes(b.try_into().unwrap()));
                }
                a += 8;
            }
            out
        };
        // Unreached 0, Possible 1, Reachable 2, Indirect 3.
        let mut state = vec![0u8; n];
        let mut pending = vec![false; n];
        let mut stack: Vec<usize> = Vec::new();
        let mut indirect = vec![0u64; n];
        let mut top = vec![u32::MAX; n];
        let push = |i: usize, pending: &mut Vec<bool>, stack: &mut Vec<usize>| {
            if !pending[i] {
                pending[i] = true;
                stack.push(i);
            }
        };
        let mark = |p: u64,
                    definite: bool,
                    state: &mut Vec<u8>,
                    pending: &mut Vec<bool>,
                    stack: &mut Vec<usize>| {
            let Some(i) = find(p) else { return };
            if state[i] == 2 {
                return;
            }
            if p == blocks[i].addr && definite {
                state[i] = 2;
                push(i, pending, stack);
            } else if state[i] == 0 {
                state[i] = 1;
                push(i, pending, stack);
            }
        };
        for &p in &m.pinned {
            state[us(p)] = 2;
            push(us(p), &mut pending, &mut stack);
        }
        for root in &m.roots {
            match &root.source {
                RootSource::Word(w) => mark(*w, true, &mut state, &mut pending, &mut stack),
                RootSource::Range(r) => {
                    let mut a = r.start.next_multiple_of(8);
                    while a + 8 <= r.end {
                        let inside = blocks.iter().any(|b| b.addr < a + 8 && a < b.end());
                        if !inside && let Some(b) = m.image.get(a..a + 8) {
                            let w = u64::from_le_bytes(b.try_into().unwrap());
                            mark(w, true, &mut state, &mut pending, &mut stack);
                        }
                        a += 8;
                    }
                }
            }
        }
        while let Some(i) = stack.pop() {
            pending[i] = false;
            let definite = state[i] != 1;
            for w in words(blocks[i].addr, blocks[i].addr + blocks[i].size) {
                mark(w, definite, &mut state, &mut pending, &mut stack);
            }
        }
        for lead in 0..n {
            if state[lead] != 0 {
                continue;
            }
            push(lead, &mut pending, &mut stack);
            while let Some(i) = stack.pop() {
                pending[i] = false;
                for w in words(blocks[i].addr, blocks[i].addr + blocks[i].size) {
                    let Some(c) = find(w) else { continue };
                    if state[c] == 0 && c != lead {
                        push(c, &mut pending, &mut stack);
                        indirect[lead] += blocks[c].size + indirect[c];
                        indirect[c] = 0;
                        state[c] = 3;
                        top[c] = ix(lead);
                    }
                }
            }
        }
        for i in 0..n {
            let mut l = top[i];
            while l != u32::MAX && state[us(l)] == 3 {
                l = top[us(l)];
            }
            top[i] = l;
        }
        let kind = state
            .iter()
            .map(|&s| LeakKind::ALL[[0, 2, 3, 1][usize::from(s)]])
            .collect();
        (kind, top, indirect)
    }

    /// Checks that `via` names, for every reached block, a real pointer from a source that
    /// could have raised it to its kind.
    fn check_via(m: &Mem, v: &Verdicts) {
        let word_at =
            |at: u64| u64::from_le_bytes(m.image.get(at..at + 8).unwrap().try_into().unwrap());
        for (i, (&k, &via)) in v.kind.iter().zip(&v.via).enumerate() {
            let e = m.blocks[i];
            let lost = matches!(k, LeakKind::DefinitelyLost | LeakKind::IndirectlyLost);
            assert_eq!(via == Via::Unreached, lost, "block {i}");
            let (w, from_kind) = match via {
                Via::Unreached | Via::Pinned => continue,
                Via::Root { root, at } => match &m.roots[us(root)].source {
                    RootSource::Word(w) => (*w, LeakKind::Reachable),
                    RootSource::Range(_) => (word_at(at), LeakKind::Reachable),
                },
                Via::Block { block, at } => {
                    let f = m.blocks[us(block)];
                    assert!(f.addr <= at && at + 8 <= f.addr + f.size, "block {i}");
                    (word_at(at), v.kind[us(block)])
                }
            };
            assert!(e.addr <= w && w < e.end(), "block {i}");
            if k == LeakKind::Reachable {
                assert_eq!((w, from_kind), (e.addr, LeakKind::Reachable), "block {i}");
            }
        }
    }

    #[test]
    fn random_graphs_match_valgrinds_algorithm() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..3000 {
            let mut m = Mem::new();
            let n = 1 + rnd(24);
            for _ in 0..n {
                let size = [0, 1, 8, 12, 16, 24, 40][usize::try_from(rnd(7)).unwrap()];
                m.alloc(size);
            }
            // A pointer at `b` plus an offset: start, interior, last byte, or one past.
            let target = |m: &Mem, b: u32, r: u64| {
                let e = m.blocks[us(b)];
                e.addr
                    + [0, 0, 0, 1, 8, e.size.saturating_sub(1), e.size.max(1)]
                        [usize::try_from(r).unwrap()]
            };
            for b in 0..ix(m.blocks.len()) {
                let e = m.blocks[us(b)];
                for w in 0..e.size / 8 {
                    if rnd(3) == 0 {
                        let (to, r) = (ix(usize::try_from(rnd(n)).unwrap()), rnd(7));
                        let v = target(&m, to, r);
                        m.put(e.addr + 8 * w, v);
                    }
                }
            }
            for slot in 0..rnd(4) {
                let (to, r) = (ix(usize::try_from(rnd(n)).unwrap()), rnd(7));
                let v = target(&m, to, r);
                m.put(DATA + 8 * slot, v);
            }
            if rnd(4) == 0 {
                m.pinned.push(ix(usize::try_from(rnd(n)).unwrap()));
            }
            m.seal();
            if rnd(3) == 0 {
                let (to, r) = (ix(usize::try_from(rnd(n)).unwrap()), rnd(7));
                let v = target(&m, to, r);
                m.roots.push(Root {
                    source: RootSource::Word(v),
                    place: 1,
                });
            }
            if rnd(4) == 0 {
                // Stale words in the heap's headers, with the whole heap as a root.
                let e = m.blocks[usize::try_from(rnd(n)).unwrap()];
                let (to, r) = (ix(usize::try_from(rnd(n)).unwrap()), rnd(7));
                let v = target(&m, to, r);
                m.put(e.addr - 16, v);
                m.seal_again();
                m.roots.push(Root {
                    source: RootSource::Range(HEAP..HEAP + m.heap.len() as u64),
                    place: 2,
                });
            }
            let v = classify(&m.input());
            let (kind, leader, indirect) = reference(&m);
            assert_eq!(v.kind, kind, "{:?}", m.blocks);
            assert_eq!(v.leader, leader);
            let lead_bytes: Vec<u64> = (0..m.blocks.len())
                .map(|i| {
                    if kind[i] == LeakKind::DefinitelyLost {
                        indirect[i]
                    } else {
                        0
                    }
                })
                .collect();
            assert_eq!(v.indirect_bytes, lead_bytes);
            check_via(&m, &v);
        }
    }
}
