//! Times the leak classifier on a synthetic heap.
//!
//! `cargo run --release -p muppy-core --example leak_bench -- [BLOCKS] [random|local|list]`
//!
//! - `random` (default): lists, binary trees, lost cliques and blocks reached only through
//!   interior pointers, their nodes scattered over the heap (every link a cache miss), words
//!   that are not pointers filled with small integers and random values; the whole heap is
//!   also a root range (memory muppy holds no block for), so the headers between blocks are
//!   scanned as roots.
//! - `local`: the same graph with nodes in allocation order.
//! - `list`: one list of BLOCKS 16-byte nodes whose head was dropped.
//! - `words`: BLOCKS 32-byte blocks and 1 GiB of globals, one word in 16 pointing at a
//!   random block (start or interior), the rest small integers and random values.
//!
//! Prints one JSON line: `{"blocks":N,"classify_ms":..,"scanned_bytes":..,...}`.

use std::time::Instant;

use muppy_core::analysis::leaks::{Extent, Input, Root, RootSource, classify};
use muppy_core::model::{Image, LeakKind, Segment};

/// The heap's first address.
const HEAP: u64 = 0x5555_0000_0000;
/// The globals' first address.
const DATA: u64 = 0x5554_0000_0000;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).expect("below a usize")
    }
}

/// The heap under construction.
struct Heap {
    bytes: Vec<u8>,
    blocks: Vec<Extent>,
}

impl Heap {
    fn put(&mut self, at: u64, value: u64) {
        let i = usize::try_from(at - HEAP).expect("in the heap");
        self.bytes[i..i + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Stores `to + off` in word `word` of block `from`, if the block has that word.
    fn link(&mut self, from: usize, word: u64, to: usize, off: u64) -> bool {
        let f = self.blocks[from];
        if (word + 1) * 8 > f.size {
            return false;
        }
        let v = self.blocks[to].addr + off.min(self.blocks[to].size.saturating_sub(1));
        self.put(f.addr + word * 8, v);
        true
    }
}

fn alloc_all(n: usize, rng: &mut Rng, sizes: impl Fn(&mut Rng) -> u64) -> Heap {
    let mut blocks = Vec::with_capacity(n);
    let mut at = 0u64;
    for _ in 0..n {
        let size = sizes(rng);
        at += 16; // malloc's header
        blocks.push(Extent {
            addr: HEAP + at,
            size,
        });
        at += size.max(1).next_multiple_of(16);
    }
    let mut bytes = vec![0u8; usize::try_from(at).expect("fits memory")];
    // Headers: the chunk size with its flag bits, as glibc writes them.
    for b in &blocks {
        let h = usize::try_from(b.addr - HEAP - 8).expect("fits memory");
        let v = (b.size.max(1).next_multiple_of(16) + 16) | 1;
        bytes[h..h + 8].copy_from_slice(&v.to_le_bytes());
    }
    Heap { bytes, blocks }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse().expect("BLOCKS is a number"))
        .unwrap_or(10_000_000);
    let mode = args.next().unwrap_or_else(|| "random".into());
    let mut rng = Rng(0x5eed);
    let t0 = Instant::now();
    let (heap, globals) = match mode.as_str() {
        "list" => {
            let mut h = alloc_all(n, &mut rng, |_| 16);
            for i in 1..n {
                h.link(i - 1, 0, i, 0);
            }
            (h, Vec::new())
        }
        "random" | "local" => graph(n, &mut rng, mode == "random"),
        "words" => {
            let h = alloc_all(n, &mut rng, |_| 32);
            let mut g = vec![0u64; 1 << 27];
            for w in &mut g {
                *w = match rng.below(16) {
                    0 => h.blocks[rng.index(n)].addr + 8 * rng.below(2),
                    1..4 => rng.next(),
                    _ => rng.below(1 << 20),
                };
            }
            (h, g)
        }
        other => panic!("unknown mode {other}: random, local, list or words"),
    };
    let mut data = Vec::with_capacity(globals.len() * 8);
    for g in &globals {
        data.extend_from_slice(&g.to_le_bytes());
    }
    let data_len = data.len() as u64;
    let heap_len = heap.bytes.len() as u64;
    let image = Image::new(vec![
        Segment {
            start: DATA,
            bytes: data,
        },
        Segment {
            start: HEAP,
            bytes: heap.bytes,
        },
    ]);
    let roots = [
        Root {
            source: RootSource::Range(DATA..DATA + data_len),
            place: 0,
        },
        Root {
            source: RootSource::Range(HEAP..HEAP + heap_len),
            place: 1,
        },
        Root {
            source: RootSource::Word(0x1234),
            place: 2,
        },
    ];
    let build_ms = t0.elapsed().as_secs_f64() * 1e3;
    let input = Input {
        image: &image,
        blocks: &heap.blocks,
        roots: &roots,
        pinned: &[],
        allocator_words: &[],
    };
    let (t, cpu) = (Instant::now(), cpu_ms());
    let v = classify(&input);
    let classify_ms = t.elapsed().as_secs_f64() * 1e3;
    let cpu = cpu_ms() - cpu;
    let mut count = [0u64; 4];
    for k in &v.kind {
        count[LeakKind::ALL.iter().position(|x| x == k).expect("a kind")] += 1;
    }
    println!(
        "{{\"blocks\":{n},\"classify_ms\":{classify_ms:.1},\"classify_cpu_ms\":{cpu},\"scanned_bytes\":{},\"mode\":\"{mode}\",\"image_bytes\":{},\"build_ms\":{build_ms:.0},\"definitely_lost\":{},\"indirectly_lost\":{},\"possibly_lost\":{},\"reachable\":{}}}",
        v.scanned_bytes,
        image.len(),
        count[0],
        count[1],
        count[2],
        count[3]
    );
}

/// The process's CPU time (user and system) in ms, from /proc (10 ms steps); 0 elsewhere. On a
/// shared machine it tells the time the work took from the time it waited for a CPU.
fn cpu_ms() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<u64>() * 10
}

/// Lists (45 %), binary trees (35 %), lost lists and cycles (10 %) and blocks reached through
/// interior pointers (10 %); returns the heap and the globals pointing at the structures.
fn graph(n: usize, rng: &mut Rng, scatter: bool) -> (Heap, Vec<u64>) {
    const SIZES: [u64; 8] = [16, 16, 24, 32, 32, 48, 64, 96];
    let mut h = alloc_all(n, rng, |r| SIZES[r.index(SIZES.len())]);
    // Logical node i lives in block perm[i].
    let mut perm: Vec<usize> = (0..n).collect();
    if scatter {
        for i in (1..n).rev() {
            perm.swap(i, rng.index(i + 1));
        }
    }
    // Words that are not pointers: mostly small integers, some random values, a few stale
    // addresses into the heap.
    let heap_len = h.bytes.len() as u64;
    for b in 0..n {
        let e = h.blocks[b];
        for w in 1..e.size / 8 {
            let v = match rng.below(200) {
                0 => HEAP + rng.below(heap_len),
                1..50 => rng.next(),
                _ => rng.below(1000),
            };
            h.put(e.addr + w * 8, v);
        }
    }
    let mut globals = Vec::new();
    let mut i = 0;
    while i < n {
        let kind = rng.below(100);
        let len = usize::try_from(1 + rng.below(2000))
            .expect("small")
            .min(n - i);
        let nodes = &perm[i..i + len];
        match kind {
            0..45 => {
                for w in nodes.windows(2) {
                    h.link(w[0], 0, w[1], 0);
                }
                globals.push(h.blocks[nodes[0]].addr);
            }
            45..80 => {
                for k in 1..len {
                    h.link(nodes[(k - 1) / 2], ((k - 1) % 2) as u64, nodes[k], 0);
                }
                globals.push(h.blocks[nodes[0]].addr);
            }
            80..90 => {
                // Lost: a list closed into a cycle, no root.
                for w in nodes.windows(2) {
                    h.link(w[0], 0, w[1], 8);
                }
                h.link(nodes[len - 1], 0, nodes[0], 0);
            }
            _ => {
                // Reached only through interior pointers.
                for w in nodes.windows(2) {
                    h.link(w[0], 0, w[1], 8);
                }
                globals.push(h.blocks[nodes[0]].addr + 8);
            }
        }
        i += len;
    }
    (h, globals)
}
