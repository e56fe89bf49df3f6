//! Naming the places a leak check's root words lie in: a global of a loaded file (by symbol
//! and section), a frame of a thread's stack, a thread's TLS, an anonymous mapping.
//!
//! [`Places::new`] gathers what naming needs once per check, from the target's mappings, its
//! frozen threads and the copy of its memory; [`Places::name`] then names any root word
//! without touching the target. What each place is and how it is found:
//!
//! - **Global**: a word in a mapping of an ELF file, or in the anonymous mapping right after a
//!   file's last mapping up to the end of its last `PT_LOAD` (the `.bss` tail). The file's load
//!   bias comes from its lowest mapping and the `PT_LOAD` that mapping holds; the section is the
//!   allocated section covering the link-time address, the symbol the data symbol covering it
//!   (from `.symtab`, else the separate debug file's found by build id, and `.dynsym`).
//! - **Tls**: `[tp - static TLS, tp + 0x900)` around a thread's thread pointer (x86_64's
//!   `fs_base`), within the mapping holding it: glibc's static TLS below, `struct pthread` above
//!   (for threads other than the main one both sit at the top of the thread's stack mapping).
//!   The static TLS is estimated from the mapped files' `PT_TLS` segments plus glibc's surplus.
//! - **Stack**: a word in `[sp - 128, end)` of the mapping holding a thread's `sp`, in the frame
//!   of the function unwinding finds it in. The stack is unwound in the copy, by each frame's
//!   call frame information (`.eh_frame`, as debuggers do: exact frame extents, and code built
//!   without frame pointers, as distributions' libc is, unwinds), else by the frame-pointer
//!   chain. A frame spans `[its sp, its canonical frame address)`; see [`Places::stack_ranges`].
//! - Anything else: an anonymous mapping, or the mapping's name (`[heap]`, a non-ELF file).
//!
//! A symbol covering the word wins over TLS (glibc's loader may put the main thread's TLS just
//! past its own `.bss`), TLS over the stack, the stack over a global without a symbol.

use std::{
    collections::HashMap,
    fs::File,
    ops::Range,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use muppy_core::model::{Frame, Image, Place};
use object::{
    Endianness, Object as _, ObjectSection as _, ObjectSymbol, ReadCache, SectionFlags, SymbolKind,
    elf,
    read::elf::{ElfFile64, ProgramHeader as _},
};

mod unwind;

use crate::{
    symbols::{self, Modules, SiteNamer},
    target::{FrozenThread, Registers},
};

/// The bytes below `sp` a leaf function may use without moving `sp` (the x86_64 ABI's red
/// zone); aarch64 has none.
#[cfg(target_arch = "x86_64")]
pub const RED_ZONE: u64 = 128;
/// The bytes below `sp` a leaf function may use without moving `sp` (the x86_64 ABI's red
/// zone); aarch64 has none.
#[cfg(not(target_arch = "x86_64"))]
pub const RED_ZONE: u64 = 0;

/// What glibc puts above the thread pointer on x86_64: `struct pthread` (0x900 bytes at most
/// in the glibc releases of 2020-2025, `rseq` area included).
const TCB_SIZE: u64 = 0x900;

/// glibc's static TLS surplus (for `dlopen`ed libraries' initial-exec TLS): 1664 bytes by
/// default since 2.32 (`_dl_tls_static_surplus_init` with `rtld.nns` 4), and before.
const TLS_SURPLUS: u64 = 1664;

/// How many frames of one thread are unwound at most.
const MAX_FRAMES: usize = 4096;

/// One line of `/proc/PID/maps`, whatever it maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `r`.
    pub readable: bool,
    /// `w`.
    pub writable: bool,
    /// `x`.
    pub executable: bool,
    /// `s` (shared) rather than `p` (private, copy-on-write).
    pub shared: bool,
    /// The file offset `start` maps (0 for anonymous memory).
    pub offset: u64,
    /// The file's inode (0 for anonymous memory).
    pub inode: u64,
    /// The file's path (absolute), a pseudo name (`[heap]`, `[stack]`, `[anon:NAME]`), or
    /// empty for anonymous memory. A deleted file's path is given without ` (deleted)`.
    pub name: String,
    /// The file was deleted (or replaced) since it was mapped.
    pub deleted: bool,
}

impl Mapping {
    /// The addresses it covers.
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }

    /// Whether it maps a file (its name is a path).
    pub fn is_file(&self) -> bool {
        self.name.starts_with('/')
    }

    /// Whether it is anonymous memory with no name at all.
    pub fn is_anonymous(&self) -> bool {
        self.name.is_empty()
    }

    /// The name as `/proc/PID/maps` shows it.
    pub fn shown_name(&self) -> String {
        if self.deleted {
            format!("{} (deleted)", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// Parses every line of a `/proc/PID/maps` text (lines that do not parse are skipped), in the
/// text's (address) order.
pub fn parse_mappings(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_mapping).collect()
}

fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut field = || {
        let s = rest.trim_start();
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        rest = &s[end..];
        Some(&s[..end]).filter(|f| !f.is_empty())
    };
    let (start, end) = field()?.split_once('-')?;
    let perms = field()?.as_bytes();
    let offset = field()?;
    let _dev = field()?;
    let inode = field()?;
    // The path is the rest of the line, spaces included.
    let path = rest.trim();
    let (name, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) if p.starts_with('/') => (p, true),
        _ => (path, false),
    };
    let flag = |i: usize, c: u8| perms.get(i) == Some(&c);
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: flag(0, b'r'),
        writable: flag(1, b'w'),
        executable: flag(2, b'x'),
        shared: flag(3, b's'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        inode: inode.parse().ok()?,
        name: name.to_string(),
        deleted,
    })
}

/// Every general-purpose register of a stopped thread by name, to scan as roots and to name
/// them: on x86_64 the 16 GPRs, `rip`, `fs_base` and `gs_base`; on aarch64 `x0`..`x30`, `sp`
/// and `pc`.
pub fn registers(regs: &Registers) -> Vec<(&'static str, u64)> {
    #[cfg(target_arch = "x86_64")]
    {
        let r = &regs.0;
        vec![
            ("rax", r.rax),
            ("rbx", r.rbx),
            ("rcx", r.rcx),
            ("rdx", r.rdx),
            ("rsi", r.rsi),
            ("rdi", r.rdi),
            ("rbp", r.rbp),
            ("rsp", r.rsp),
            ("r8", r.r8),
            ("r9", r.r9),
            ("r10", r.r10),
            ("r11", r.r11),
            ("r12", r.r12),
            ("r13", r.r13),
            ("r14", r.r14),
            ("r15", r.r15),
            ("rip", r.rip),
            ("fs_base", r.fs_base),
            ("gs_base", r.gs_base),
        ]
    }
    #[cfg(target_arch = "aarch64")]
    {
        const X: [&str; 31] = [
            "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13",
            "x14", "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25",
            "x26", "x27", "x28", "x29", "x30",
        ];
        let r = &regs.0;
        let mut out: Vec<(&'static str, u64)> = X.iter().copied().zip(r.regs).collect();
        out.push(("sp", r.sp));
        out.push(("pc", r.pc));
        out
    }
}

/// The frame pointer: `rbp`, `x29`.
fn frame_pointer(regs: &Registers) -> u64 {
    #[cfg(target_arch = "x86_64")]
    return regs.0.rbp;
    #[cfg(target_arch = "aarch64")]
    return regs.0.regs[29];
}

/// The link register (aarch64's `x30`), which holds the innermost frame's return address until
/// the function saves it; x86_64 has none.
fn link_register(regs: &Registers) -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        let _ = regs;
        None
    }
    #[cfg(target_arch = "aarch64")]
    return Some(regs.0.regs[30]);
}

/// The thread pointer, where the registers hold it: `fs_base` on x86_64. aarch64's
/// `tpidr_el0` is not in `user_regs_struct` (it takes `PTRACE_GETREGSET` `NT_ARM_TLS`).
fn thread_pointer(regs: &Registers) -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    return Some(regs.0.fs_base).filter(|&tp| tp != 0);
    #[cfg(target_arch = "aarch64")]
    {
        let _ = regs;
        None
    }
}

/// What names the root words of one frozen process; see the module docs.
#[derive(Debug)]
pub struct Places {
    /// Every mapping, in address order.
    mappings: Vec<Mapping>,
    /// Each distinct mapped ELF file, opened.
    files: Vec<ElfData>,
    /// Each load of a file: (file, module name, load bias).
    loads: Vec<Loaded>,
    /// The addresses each load covers, in address order, none overlapping.
    regions: Vec<(Range<u64>, usize)>,
    /// Each thread's stack and TLS.
    threads: Vec<Thread>,
    /// The static TLS size the estimate came to.
    static_tls: u64,
}

/// One load of an ELF file.
#[derive(Debug)]
struct Loaded {
    file: usize,
    module: String,
    /// What the file's link-time addresses are moved by.
    bias: u64,
}

/// What [`Places`] knows of one thread.
#[derive(Debug)]
struct Thread {
    tid: u32,
    /// The live part of its stack: `[sp - RED_ZONE, end of sp's mapping)`.
    stack: Option<Range<u64>>,
    /// The mapping holding `sp`.
    stack_mapping: Option<Range<u64>>,
    /// Its TLS and thread control block, as estimated.
    tls: Option<Range<u64>>,
    /// The frames unwinding found, innermost first (in address order), with their functions.
    frames: Vec<(Range<u64>, Frame)>,
}

impl Thread {
    fn frame(&self, addr: u64) -> Option<Frame> {
        let i = self.frames.partition_point(|(r, _)| r.start <= addr);
        let (r, f) = self.frames.get(i.checked_sub(1)?)?;
        r.contains(&addr).then(|| f.clone())
    }
}

impl Places {
    /// Gathers what naming needs, once per check: `maps` the target's mappings (see
    /// [`parse_mappings`]), `threads` its frozen threads, `image` the copy of its memory (stacks
    /// are unwound in it), `modules` its code mappings and `namer` to name
    /// the functions of frames. Files are read through `/proc/PID/map_files`, else under
    /// `/proc/PID/root`; each ELF file is opened once, its program headers read now, its
    /// sections and symbols at the first word named in it.
    pub fn new(
        pid: u32,
        maps: &[Mapping],
        threads: &[FrozenThread],
        image: &Image,
        modules: &Modules,
        namer: &mut SiteNamer,
    ) -> Self {
        let mut mappings = maps.to_vec();
        mappings.sort_by_key(|m| m.start);
        let mut places = Places {
            mappings,
            files: Vec::new(),
            loads: Vec::new(),
            regions: Vec::new(),
            threads: Vec::new(),
            static_tls: 0,
        };
        places.find_loads(pid);
        let tls: u64 = places.files.iter().map(|f| f.tls).sum();
        places.static_tls = tls + TLS_SURPLUS;
        places.threads = threads
            .iter()
            .map(|t| places.thread(t, image, modules, namer))
            .collect();
        places
    }

    /// Groups the file mappings into loads, opens each ELF file once, and records what
    /// addresses each load covers. A load's mappings follow each other with offsets that never
    /// go back (a segment starting mid-page maps that page again); another file's mapping, a
    /// named pseudo-mapping, or an offset going back (the same file loaded again) starts a new
    /// one.
    fn find_loads(&mut self, pid: u32) {
        // (path, inode) → index in `files`, or None for a file that is no ELF file.
        let mut opened: HashMap<(String, u64), Option<usize>> = HashMap::new();
        let mut groups: Vec<Range<usize>> = Vec::new();
        let mut current: Option<usize> = None;
        for (i, m) in self.mappings.iter().enumerate() {
            if m.is_file() {
                let joins = current.is_some_and(|g| {
                    let last = &self.mappings[groups[g].end - 1];
                    last.name == m.name && last.inode == m.inode && last.offset <= m.offset
                });
                match current {
                    Some(g) if joins => groups[g].end = i + 1,
                    _ => {
                        groups.push(i..i + 1);
                        current = Some(groups.len() - 1);
                    }
                }
            } else if !m.is_anonymous() {
                current = None;
            }
        }
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        for g in groups {
            let first = &self.mappings[g.start];
            let key = (first.name.clone(), first.inode);
            let file = *opened.entry(key).or_insert_with(|| {
                let f = open(pid, first, &root)?;
                let data = ElfData::open(f, root.clone())?;
                self.files.push(data);
                Some(self.files.len() - 1)
            });
            let Some(file) = file else { continue };
            let data = &self.files[file];
            // The bias from the lowest mapping and the segment it maps.
            let Some(low) = self.mappings[g.clone()].iter().min_by_key(|m| m.offset) else {
                continue;
            };
            let len = low.end - low.start;
            let Some(seg) = data
                .segments
                .iter()
                .filter(|s| s.offset < low.offset + len && low.offset < s.offset + s.filesz)
                .min_by_key(|s| s.offset)
            else {
                continue;
            };
            let bias = low
                .start
                .wrapping_sub(low.offset)
                .wrapping_add(seg.offset)
                .wrapping_sub(seg.vaddr);
            let load = self.loads.len();
            for m in &self.mappings[g.clone()] {
                self.regions.push((m.range(), load));
            }
            // The .bss tail: the anonymous mapping right after, up to the last segment's end.
            let last = &self.mappings[g.end - 1];
            let top = data
                .segments
                .iter()
                .map(|s| bias.wrapping_add(s.vaddr).wrapping_add(s.memsz))
                .max()
                .unwrap_or(0);
            if let Some(next) = self.mappings.get(g.end)
                && next.is_anonymous()
                && next.start == last.end
                && top > next.start
            {
                self.regions.push((next.start..top.min(next.end), load));
            }
            self.loads.push(Loaded {
                file,
                module: module_name(&first.name).to_string(),
                bias,
            });
        }
        self.regions.sort_by_key(|(r, _)| r.start);
    }

    fn thread(
        &self,
        t: &FrozenThread,
        image: &Image,
        modules: &Modules,
        namer: &mut SiteNamer,
    ) -> Thread {
        let sp = t.regs.sp();
        let stack_mapping = self.mapping(sp).map(Mapping::range);
        let stack = stack_mapping
            .as_ref()
            .map(|m| sp.saturating_sub(RED_ZONE).max(m.start)..m.end);
        let tls = thread_pointer(&t.regs).and_then(|tp| {
            let m = self.mapping(tp)?;
            Some(
                tp.saturating_sub(self.static_tls).max(m.start)
                    ..tp.saturating_add(TCB_SIZE).min(m.end),
            )
        });
        let frames = match &stack {
            Some(s) => self.walk(&t.regs, s.clone(), image, modules, namer),
            None => Vec::new(),
        };
        Thread {
            tid: t.tid,
            stack,
            stack_mapping,
            tls,
            frames,
        }
    }

    /// Unwinds a thread's stack through `stack` in the copy, innermost frame first: each step
    /// by the call frame information of the file the frame's code is in, else by the frame
    /// pointer ([`unwind::fp_step`]). The innermost frame spans `[stack.start, its cfa)` and
    /// is the function's at `pc`; each next one spans up to its own canonical frame address
    /// and is the function's of the return address into it. Stops where a step finds nothing,
    /// a frame's end is not 8-aligned, goes back down or leaves `stack`, or a return address
    /// is in no executable mapping.
    fn walk(
        &self,
        regs: &Registers,
        stack: Range<u64>,
        image: &Image,
        modules: &Modules,
        namer: &mut SiteNamer,
    ) -> Vec<(Range<u64>, Frame)> {
        let read = |a: u64| word(image, a);
        let mut ctx = unwind::Context::new();
        let mut at = unwind::Regs {
            pc: regs.pc(),
            sp: regs.sp(),
            fp: frame_pointer(regs),
            lr: link_register(regs),
        };
        let mut frames = Vec::new();
        let mut lo = stack.start;
        for depth in 0..MAX_FRAMES {
            // Below the innermost frame the code address is a return address, just past the
            // call: the call, and the rule that holds there, is one byte back.
            let lookup = if depth == 0 {
                at.pc
            } else {
                at.pc.wrapping_sub(1)
            };
            let step = self
                .cfi_step(&mut ctx, lookup, &at, read)
                .or_else(|| unwind::fp_step(&at, read));
            let Some(step) = step else { break };
            let progress = step.cfa > at.sp || (depth == 0 && step.cfa == at.sp);
            if !progress || !step.cfa.is_multiple_of(8) || step.cfa > stack.end {
                break;
            }
            let frame = if depth == 0 {
                frame_at_pc(namer, modules, at.pc)
            } else {
                namer.outer_frame(modules, at.pc).clone()
            };
            if lo < step.cfa {
                frames.push((lo..step.cfa, frame));
                lo = step.cfa;
            }
            let Some(ret) = step
                .ret
                .filter(|&r| self.mapping(r).is_some_and(|m| m.executable))
            else {
                break;
            };
            at = unwind::Regs {
                pc: ret,
                sp: step.cfa,
                fp: step.fp,
                lr: None,
            };
        }
        frames
    }

    /// A step by the call frame information of the file mapped at `addr`.
    fn cfi_step(
        &self,
        ctx: &mut unwind::Context,
        addr: u64,
        at: &unwind::Regs,
        read: impl Fn(u64) -> Option<u64>,
    ) -> Option<unwind::Step> {
        let load = &self.loads[self.region(addr)?];
        let cfi = self.files[load.file].cfi()?;
        cfi.step(ctx, addr.wrapping_sub(load.bias), at, read)
    }

    /// The load whose region holds `addr`.
    fn region(&self, addr: u64) -> Option<usize> {
        let i = self.regions.partition_point(|(r, _)| r.start <= addr);
        let (r, load) = self.regions.get(i.checked_sub(1)?)?;
        r.contains(&addr).then_some(*load)
    }

    /// The mapping holding `addr`.
    fn mapping(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        let m = self.mappings.get(i.checked_sub(1)?)?;
        (addr < m.end).then_some(m)
    }

    /// The thread stack ranges to scan as roots: per thread, `[sp - RED_ZONE, end of the
    /// mapping holding sp)`, with its thread id (a thread whose `sp` is in no mapping has
    /// none). For threads other than the main one the range ends with their TLS and thread
    /// control block, which [`Places::name`] names `Tls`.
    pub fn stack_ranges(&self) -> Vec<(u32, Range<u64>)> {
        self.threads
            .iter()
            .filter_map(|t| Some((t.tid, t.stack.clone()?)))
            .collect()
    }

    /// The dead part of each thread's stack mapping, below its [`Places::stack_ranges`]: a scan
    /// of the writable mappings skips these, as stale words there keep nothing alive.
    pub fn dead_stack_ranges(&self) -> Vec<(u32, Range<u64>)> {
        self.threads
            .iter()
            .filter_map(|t| {
                let (m, s) = (t.stack_mapping.as_ref()?, t.stack.as_ref()?);
                (m.start < s.start).then_some((t.tid, m.start..s.start))
            })
            .collect()
    }

    /// The static TLS size assumed below each thread pointer: the mapped files' `PT_TLS`
    /// segments, aligned, plus glibc's surplus.
    pub fn static_tls_size(&self) -> u64 {
        self.static_tls
    }

    /// Names the memory word at `addr`: a root word, not inside a live heap block (the caller
    /// names heap words muppy holds no block for, and loader blocks, itself). See the module
    /// docs for the order places are tried in.
    pub fn name(&self, addr: u64) -> Place {
        let global = self.global(addr);
        if let Some(
            g @ Place::Global {
                symbol: Some(_), ..
            },
        ) = global
        {
            return g;
        }
        if let Some(t) = self
            .threads
            .iter()
            .find(|t| t.tls.as_ref().is_some_and(|r| r.contains(&addr)))
        {
            return Place::Tls { tid: t.tid };
        }
        // Threads whose sp share a mapping: the word is the innermost one's.
        if let Some(t) = self
            .threads
            .iter()
            .filter(|t| t.stack.as_ref().is_some_and(|r| r.contains(&addr)))
            .max_by_key(|t| t.stack.as_ref().map_or(0, |r| r.start))
        {
            return Place::Stack {
                tid: t.tid,
                frame: t.frame(addr),
            };
        }
        if let Some(g) = global {
            return g;
        }
        match self.mapping(addr) {
            Some(m) if m.is_anonymous() => Place::Anonymous {
                mapping: m.start,
                addr,
            },
            Some(m) => Place::Other {
                name: m.shown_name(),
                addr,
            },
            None => Place::Other {
                name: "[unmapped]".to_string(),
                addr,
            },
        }
    }

    /// The global holding `addr`, if a load of an ELF file covers it.
    fn global(&self, addr: u64) -> Option<Place> {
        let load = &self.loads[self.region(addr)?];
        let names = self.files[load.file].names();
        let vaddr = addr.wrapping_sub(load.bias);
        let section = names.section(vaddr);
        Some(Place::Global {
            symbol: names.symbol(vaddr).map(|s| shown_symbol(&s.name)),
            module: load.module.clone(),
            offset: section.map_or(vaddr, |(r, _)| vaddr - r.start),
            section: section.map(|(_, name)| name.clone()),
        })
    }
}

/// The frame of the function at `pc`, by the function compiled there (see
/// [`SiteNamer::outer_frame`]). `pc` is an instruction, not a return address, and the namer
/// looks one byte back: it is asked for `pc + 1`, and the answer moved back.
fn frame_at_pc(namer: &mut SiteNamer, modules: &Modules, pc: u64) -> Frame {
    let mut f = namer.outer_frame(modules, pc.wrapping_add(1)).clone();
    f.addr = pc;
    f.offset = f.offset.saturating_sub(1);
    if f.function.is_some() {
        f.function_offset = f.function_offset.saturating_sub(1);
    }
    f
}

/// The word at `addr` in the copy.
fn word(image: &Image, addr: u64) -> Option<u64> {
    let b = image.get(addr..addr.checked_add(8)?)?;
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}

/// A path's file name.
fn module_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Opens the file `m` maps: through `map_files` (across mount namespaces, deleted files too),
/// else its path under the target's root.
fn open(pid: u32, m: &Mapping, root: &Path) -> Option<File> {
    File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
        .or_else(|_| File::open(root.join(m.name.trim_start_matches('/'))))
        .ok()
}

/// A `PT_LOAD` segment.
#[derive(Debug)]
struct Segment {
    vaddr: u64,
    memsz: u64,
    offset: u64,
    filesz: u64,
}

/// A mapped ELF file: its program headers, and its sections and symbols, and its call frame
/// information, once needed.
#[derive(Debug)]
struct ElfData {
    file: File,
    /// The target's root, where its debug files are.
    root: PathBuf,
    segments: Vec<Segment>,
    /// Its `PT_TLS` segments' sizes, aligned.
    tls: u64,
    names: OnceLock<Names>,
    cfi: OnceLock<Option<unwind::Cfi>>,
}

impl ElfData {
    /// Reads the program headers; `None` for a file that is no 64-bit ELF file.
    fn open(file: File, root: PathBuf) -> Option<Self> {
        let (segments, tls) = {
            let cache = ReadCache::new(&file);
            let elf = ElfFile64::<Endianness, _>::parse(&cache).ok()?;
            let e = elf.endian();
            let mut segments = Vec::new();
            let mut tls = 0u64;
            for ph in elf.elf_program_headers() {
                match ph.p_type(e) {
                    elf::PT_LOAD => segments.push(Segment {
                        vaddr: ph.p_vaddr(e),
                        memsz: ph.p_memsz(e),
                        offset: ph.p_offset(e),
                        filesz: ph.p_filesz(e),
                    }),
                    elf::PT_TLS => {
                        let align = ph.p_align(e).max(1);
                        tls = tls.saturating_add(ph.p_memsz(e).div_ceil(align) * align);
                    }
                    _ => {}
                }
            }
            (segments, tls)
        };
        Some(Self {
            file,
            root,
            segments,
            tls,
            names: OnceLock::new(),
            cfi: OnceLock::new(),
        })
    }

    fn names(&self) -> &Names {
        self.names
            .get_or_init(|| Names::read(&self.file, &self.root))
    }

    /// Its call frame information, read at the first frame unwound in it.
    fn cfi(&self) -> Option<&unwind::Cfi> {
        self.cfi
            .get_or_init(|| {
                let cache = ReadCache::new(&self.file);
                let elf = ElfFile64::<Endianness, _>::parse(&cache).ok()?;
                unwind::Cfi::read(&elf)
            })
            .as_ref()
    }
}

/// A file's allocated sections and data symbols, by link-time address.
#[derive(Debug, Default)]
struct Names {
    /// Allocated, non-TLS, non-empty sections, in address order.
    sections: Vec<(Range<u64>, String)>,
    /// Data symbols with a size, in address order.
    symbols: Vec<Symbol>,
    /// The largest symbol's size (how far back a lookup looks).
    max_size: u64,
}

/// A data symbol.
#[derive(Debug, PartialEq, Eq)]
struct Symbol {
    addr: u64,
    size: u64,
    name: String,
    global: bool,
}

impl Names {
    fn read(file: &File, root: &Path) -> Names {
        let cache = ReadCache::new(file);
        let Ok(elf) = ElfFile64::<Endianness, _>::parse(&cache) else {
            return Names::default();
        };
        let mut sections: Vec<(Range<u64>, String)> = elf
            .sections()
            .filter_map(|s| {
                let SectionFlags::Elf { sh_flags } = s.flags() else {
                    return None;
                };
                let alloc = sh_flags & u64::from(elf::SHF_ALLOC) != 0;
                let tls = sh_flags & u64::from(elf::SHF_TLS) != 0;
                if !alloc || tls || s.size() == 0 {
                    return None;
                }
                let name = s.name().ok()?;
                Some((s.address()..s.address() + s.size(), name.to_string()))
            })
            .collect();
        sections.sort_by_key(|(r, _)| r.start);
        let mut symbols = Vec::new();
        if add_data_symbols(&mut symbols, elf.symbols()) == 0 {
            // Stripped: the separate debug file's symbol table, if installed.
            if let Some(debug) = debug_file(&elf, root) {
                let cache = ReadCache::new(&debug);
                if let Ok(d) = ElfFile64::<Endianness, _>::parse(&cache) {
                    add_data_symbols(&mut symbols, d.symbols());
                }
            }
        }
        add_data_symbols(&mut symbols, elf.dynamic_symbols());
        symbols.sort_by(|a, b| (a.addr, a.size, &a.name).cmp(&(b.addr, b.size, &b.name)));
        symbols.dedup();
        let max_size = symbols.iter().map(|s| s.size).max().unwrap_or(0);
        Names {
            sections,
            symbols,
            max_size,
        }
    }

    /// The section covering `vaddr`.
    fn section(&self, vaddr: u64) -> Option<&(Range<u64>, String)> {
        let i = self.sections.partition_point(|(r, _)| r.start <= vaddr);
        let s = self.sections.get(i.checked_sub(1)?)?;
        s.0.contains(&vaddr).then_some(s)
    }

    /// The data symbol covering `vaddr`; of several (aliases, nested), the smallest, then a
    /// global one, then the plainest name (fewest leading underscores, shortest).
    fn symbol(&self, vaddr: u64) -> Option<&Symbol> {
        let i = self.symbols.partition_point(|s| s.addr <= vaddr);
        self.symbols[..i]
            .iter()
            .rev()
            .take_while(|s| vaddr - s.addr < self.max_size)
            .filter(|s| vaddr - s.addr < s.size)
            .min_by_key(|s| {
                let underscores = s.name.len() - s.name.trim_start_matches('_').len();
                (s.size, !s.global, underscores, s.name.len(), &s.name)
            })
    }
}

/// Adds the defined data symbols (not TLS ones) with a size among `syms`; returns how many
/// symbols of any kind there were.
fn add_data_symbols<'data, S: ObjectSymbol<'data>>(
    out: &mut Vec<Symbol>,
    syms: impl Iterator<Item = S>,
) -> usize {
    let mut seen = 0;
    for s in syms {
        seen += 1;
        if !matches!(s.kind(), SymbolKind::Data | SymbolKind::Unknown)
            || !s.is_definition()
            || s.size() == 0
        {
            continue;
        }
        let Ok(name) = s.name() else { continue };
        if name.is_empty() {
            continue;
        }
        out.push(Symbol {
            addr: s.address(),
            size: s.size(),
            name: name.to_string(),
            global: s.is_global(),
        });
    }
    seen
}

/// The separate debug file of `elf` by its build id, under the target's root
/// (`/usr/lib/debug/.build-id/xx/yyyy.debug`), as [`crate::symbols`] finds it.
fn debug_file<'data, R: object::ReadRef<'data>>(
    elf: &ElfFile64<'data, Endianness, R>,
    root: &Path,
) -> Option<File> {
    let id = elf.build_id().ok()??;
    let hex = crate::symbols::hex(id);
    if hex.len() < 3 {
        return None;
    }
    let path = root.join(format!(
        "usr/lib/debug/.build-id/{}/{}.debug",
        &hex[..2],
        &hex[2..]
    ));
    File::open(path).ok()
}

/// A symbol's name as names are shown: demangled unless the process chose not to
/// ([`symbols::demangling`]).
fn shown_symbol(name: &str) -> String {
    if symbols::demangling() {
        demangle(name)
    } else {
        name.to_string()
    }
}

/// A symbol's name demangled (Rust, then C++), or as it is.
fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z")
        && let Ok(sym) = cpp_demangle::Symbol::new(name)
        && let Ok(d) = sym.demangle()
    {
        return d;
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader},
        process::{Child, Command, Stdio},
    };

    #[cfg(target_arch = "x86_64")]
    use muppy_core::model::Segment;

    use super::*;

    #[test]
    fn parses_every_mapping() {
        let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 123 /usr/bin/prog
55d0c0a03000-55d0c0a04000 rw-p 00002000 fe:01 123 /usr/bin/prog
55d0c0a04000-55d0c0a05000 rw-p 00000000 00:00 0
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000001000 rw-s 00000000 00:05 77 /dev/shm/a  b (deleted)
7f0000001000-7f0000002000 rw-p 00000000 00:00 0 [anon:glibc: malloc]
";
        let m = parse_mappings(text);
        assert_eq!(m.len(), 6);
        assert_eq!(
            m[1],
            Mapping {
                start: 0x55d0c0a03000,
                end: 0x55d0c0a04000,
                readable: true,
                writable: true,
                executable: false,
                shared: false,
                offset: 0x2000,
                inode: 123,
                name: "/usr/bin/prog".into(),
                deleted: false,
            }
        );
        assert!(m[2].is_anonymous() && !m[2].is_file());
        assert_eq!(m[3].name, "[heap]");
        assert_eq!(m[4].name, "/dev/shm/a  b");
        assert!(m[4].deleted && m[4].shared && m[4].is_file());
        assert_eq!(m[4].shown_name(), "/dev/shm/a  b (deleted)");
        assert_eq!(m[5].name, "[anon:glibc: malloc]");
    }

    #[cfg(target_arch = "x86_64")]
    fn mapping(start: u64, end: u64, perms: &str, name: &str) -> Mapping {
        let p = perms.as_bytes();
        Mapping {
            start,
            end,
            readable: p[0] == b'r',
            writable: p[1] == b'w',
            executable: p[2] == b'x',
            shared: p[3] == b's',
            offset: 0,
            inode: u64::from(name.starts_with('/')),
            name: name.into(),
            deleted: false,
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn thread(tid: u32, sp: u64, fp: u64, pc: u64, tp: u64) -> FrozenThread {
        // SAFETY: user_regs_struct is integers only; all zeros is a valid value.
        let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        r.rsp = sp;
        r.rbp = fp;
        r.rip = pc;
        r.fs_base = tp;
        r.rbx = 0x1234;
        FrozenThread {
            tid,
            regs: Registers(r),
            pending_signal: None,
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn put(seg: &mut Segment, addr: u64, value: u64) {
        let at = usize::try_from(addr - seg.start).unwrap();
        seg.bytes[at..at + 8].copy_from_slice(&value.to_ne_bytes());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn names_frames_tls_stacks_and_anonymous_memory() {
        const CODE: u64 = 0x40_0000;
        const ANON: u64 = 0x1000_0000;
        const HEAP: u64 = 0x2000_0000;
        const T2: u64 = 0x7f00_0000_0000;
        const MAIN: u64 = 0x7fff_f000_0000;
        let maps = vec![
            mapping(
                CODE,
                CODE + 0x1000,
                "r-xp",
                "/nonexistent/muppy-places-prog",
            ),
            mapping(ANON, ANON + 0x1_0000, "rw-p", ""),
            mapping(HEAP, HEAP + 0x1000, "rw-p", "[heap]"),
            mapping(T2, T2 + 0x1_0000, "rw-p", ""),
            mapping(MAIN, MAIN + 0x2_1000, "rw-p", "[stack]"),
        ];
        // Main: sp S, a chain of three frames ending in a null frame pointer.
        let s = MAIN + 0x1_0000;
        let mut main = Segment {
            start: MAIN,
            bytes: vec![0; 0x2_1000],
        };
        put(&mut main, s + 0x40, s + 0x100);
        put(&mut main, s + 0x48, CODE + 0x123);
        put(&mut main, s + 0x100, s + 0x200);
        put(&mut main, s + 0x108, CODE + 0x456);
        put(&mut main, s + 0x208, CODE + 0x789);
        // Thread 2: its saved frame pointer goes down, so only the innermost frame is known;
        // its thread pointer near the top of its stack mapping, glibc-like.
        let t = T2 + 0x8000;
        let tp = T2 + 0xf000;
        let mut t2 = Segment {
            start: T2,
            bytes: vec![0; 0x1_0000],
        };
        put(&mut t2, t + 0x10, t + 0x8);
        put(&mut t2, t + 0x18, CODE + 0x10);
        let image = Image::new(vec![main, t2]);
        let threads = vec![
            thread(1, s, s + 0x40, CODE + 0x10, ANON + 0x800),
            thread(2, t, t + 0x10, CODE + 0x20, tp),
        ];
        let modules = Modules::new(std::process::id());
        let places = Places::new(
            std::process::id(),
            &maps,
            &threads,
            &image,
            &modules,
            &mut SiteNamer::new(),
        );
        assert_eq!(places.static_tls_size(), TLS_SURPLUS);
        assert_eq!(
            places.stack_ranges(),
            vec![(1, s - 128..MAIN + 0x2_1000), (2, t - 128..T2 + 0x1_0000)]
        );
        assert_eq!(
            places.dead_stack_ranges(),
            vec![(1, MAIN..s - 128), (2, T2..t - 128)]
        );
        let stack = |tid, frame: Option<u64>| Place::Stack {
            tid,
            frame: frame.map(Frame::unknown),
        };
        // Main's frames: pc's up to fp + 16, then each return address's.
        assert_eq!(places.name(s - 128), stack(1, Some(CODE + 0x10)));
        assert_eq!(places.name(s + 0x48), stack(1, Some(CODE + 0x10)));
        assert_eq!(places.name(s + 0x50), stack(1, Some(CODE + 0x123)));
        assert_eq!(places.name(s + 0x108), stack(1, Some(CODE + 0x123)));
        assert_eq!(places.name(s + 0x110), stack(1, Some(CODE + 0x456)));
        assert_eq!(places.name(s + 0x208), stack(1, Some(CODE + 0x456)));
        assert_eq!(places.name(s + 0x210), stack(1, None));
        assert_eq!(
            places.name(s - 136),
            Place::Other {
                name: "[stack]".into(),
                addr: s - 136
            }
        );
        // Thread 2: its one frame, then no frame, then its TLS.
        assert_eq!(places.name(t + 0x18), stack(2, Some(CODE + 0x20)));
        assert_eq!(places.name(t + 0x20), stack(2, None));
        assert_eq!(places.name(tp - TLS_SURPLUS - 8), stack(2, None));
        assert_eq!(places.name(tp - TLS_SURPLUS), Place::Tls { tid: 2 });
        assert_eq!(places.name(tp + TCB_SIZE - 8), Place::Tls { tid: 2 });
        assert_eq!(places.name(tp + TCB_SIZE), stack(2, None));
        assert_eq!(
            places.name(T2 + 0x100),
            Place::Anonymous {
                mapping: T2,
                addr: T2 + 0x100
            }
        );
        // Main's TLS in an anonymous mapping (as glibc's loader allocates it), clamped to it.
        assert_eq!(
            places.name(ANON + 0x800 - TLS_SURPLUS),
            Place::Tls { tid: 1 }
        );
        assert_eq!(
            places.name(ANON + 0x800 - TLS_SURPLUS - 8),
            Place::Anonymous {
                mapping: ANON,
                addr: ANON + 0x800 - TLS_SURPLUS - 8
            }
        );
        assert_eq!(
            places.name(ANON + 0x800 + TCB_SIZE),
            Place::Anonymous {
                mapping: ANON,
                addr: ANON + 0x800 + TCB_SIZE
            }
        );
        assert_eq!(
            places.name(HEAP + 8),
            Place::Other {
                name: "[heap]".into(),
                addr: HEAP + 8
            }
        );
        assert_eq!(
            places.name(0x3000_0000),
            Place::Other {
                name: "[unmapped]".into(),
                addr: 0x3000_0000
            }
        );
        let regs = registers(&threads[0].regs);
        assert_eq!(regs.len(), 19);
        assert!(regs.contains(&("rbx", 0x1234)) && regs.contains(&("rsp", s)));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn unwinds_by_call_frame_information() {
        #[inline(never)]
        fn callee() -> u64 {
            let f: fn() -> u64 = callee;
            f as usize as u64
        }
        #[inline(never)]
        fn caller() -> u64 {
            let f: fn() -> u64 = caller;
            f as usize as u64
        }
        // A thread stopped at callee's first instruction, called from caller's: at a
        // function's entry every x86_64 CFI says cfa = sp + 8, return address at [sp].
        let (pc, ret) = (callee(), caller() + 1);
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let own = parse_mappings(&text);
        let exe = &own.iter().find(|m| m.range().contains(&pc)).unwrap().name;
        let stack = 0x10_0000_0000u64;
        let mut maps: Vec<Mapping> = own.iter().filter(|m| &m.name == exe).cloned().collect();
        maps.push(mapping(stack, stack + 0x1000, "rw-p", ""));
        let mut seg = Segment {
            start: stack,
            bytes: vec![0; 0x1000],
        };
        let sp = stack + 0x800;
        put(&mut seg, sp, ret);
        put(&mut seg, sp + 8, 0x1234); // no code: the walk stops after caller's frame
        let mut modules = Modules::new(std::process::id());
        modules.refresh().unwrap();
        // A frame pointer that would mislead a frame-pointer walk.
        let places = Places::new(
            std::process::id(),
            &maps,
            &[thread(7, sp, stack + 0x900, pc, 0)],
            &Image::new(vec![seg]),
            &modules,
            &mut SiteNamer::new(),
        );
        let function = |addr| match places.name(addr) {
            Place::Stack {
                tid: 7,
                frame: Some(f),
            } => (f.function.unwrap_or_default(), f.addr, f.function_offset),
            p => panic!("{addr:#x}: {p:?}"),
        };
        let (name, addr, off) = function(sp - 128);
        assert!(name.contains("callee"), "{name}");
        assert_eq!((addr, off), (pc, 0));
        assert_eq!(function(sp).0, name);
        let (name, addr, off) = function(sp + 8);
        assert!(name.contains("caller"), "{name}");
        assert_eq!((addr, off), (ret, 1));
        assert_eq!(
            places.name(sp + 16),
            Place::Stack {
                tid: 7,
                frame: None
            }
        );
    }

    /// Kills and reaps the child when dropped.
    struct Reaped(Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn names_globals_of_real_files() {
        let dir = std::env::temp_dir().join(format!("muppy-places-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("prog.c");
        std::fs::write(
            &src,
            r#"#include <stdio.h>
int g_table[16];
int g_data[4] = {1, 2, 3, 4};
static char g_big[1 << 20];
int main(void) {
    printf("%p %p %p %p\n", (void *)&g_table[3], (void *)&g_data[1],
           (void *)&g_big[900000], (void *)stdout);
    fflush(stdout);
    getchar();
    return 0;
}
"#,
        )
        .unwrap();
        let exe = dir.join("prog");
        // cc comes with `cargo xtask setup` (gcc): a test that skipped without it could not fail.
        let built = Command::new("cc")
            .arg("-O0")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .status();
        assert!(built.as_ref().is_ok_and(|s| s.success()), "cc: {built:?}");
        let mut child = Reaped(
            Command::new(&exe)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        BufReader::new(child.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addrs: Vec<u64> = line
            .split_whitespace()
            .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).unwrap())
            .collect();
        let pid = child.0.id();
        let maps = parse_mappings(&std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap());
        let places = Places::new(
            pid,
            &maps,
            &[],
            &Image::default(),
            &Modules::new(pid),
            &mut SiteNamer::new(),
        );
        drop(child);
        let _ = std::fs::remove_dir_all(&dir);
        let global = |addr| match places.name(addr) {
            Place::Global {
                symbol,
                module,
                section,
                ..
            } => (
                symbol.unwrap_or_default(),
                module,
                section.unwrap_or_default(),
            ),
            p => panic!("{addr:#x}: {p:?}"),
        };
        let prog = |s: &str, sec: &str| (s.to_string(), "prog".to_string(), sec.to_string());
        assert_eq!(global(addrs[0]), prog("g_table", ".bss"));
        assert_eq!(global(addrs[1]), prog("g_data", ".data"));
        // Past the file's last page: the .bss tail in the anonymous mapping after it.
        assert_eq!(global(addrs[2]), prog("g_big", ".bss"));
        let Place::Global { offset, .. } = places.name(addrs[0]) else {
            unreachable!()
        };
        assert_eq!(offset % 4, 0);
        // libc's stdout, from its dynamic symbols if it is stripped.
        let (symbol, module, section) = global(addrs[3]);
        assert_eq!(symbol, "_IO_2_1_stdout_");
        assert!(module.starts_with("libc"), "{module}");
        assert_eq!(section, ".data");
        assert!(places.static_tls_size() > TLS_SURPLUS);
    }

    #[test]
    fn demangles_rust_and_cpp_names() {
        assert_eq!(
            demangle("_ZN5myapp5CACHE17h0123456789abcdefE"),
            "myapp::CACHE"
        );
        assert_eq!(demangle("_ZN2ns5tableE"), "ns::table");
        assert_eq!(demangle("g_table"), "g_table");
    }
}
