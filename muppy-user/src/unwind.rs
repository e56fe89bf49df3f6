//! Call paths from copied stacks. At a sampled allocator's return the probe copies the user
//! stack (the bytes from the caller's `rsp` up) with `rip`, `rsp` and `rbp`; [`Unwinders`]
//! walks that copy by the call frame information (`.eh_frame`) of the process's files, with
//! framehop, as debuggers do, so code built without frame pointers (Debian's python3, libc)
//! unwinds whole; the bytes can then be dropped.
//!
//! A path holds exactly the frames the rules lead to. Where framehop has no exact rule it
//! walks the frame-pointer chain without saying so, a guess: each frame's rule is checked
//! first (by the same lookup, cached per file and address), and a frame without an exact one
//! ends the path. Every path that stops short says why ([`Cut`]): the copy ends, the frame
//! limit, a signal handler's return into the kernel, the kernel's uretprobe trampoline, or
//! code without rules (no file, no `.eh_frame`, a rule framehop would not follow exactly).
//!
//! The modules are the process's executable file mappings, read from `/proc/PID/maps` when
//! tracing starts ([`Unwinders::watch`]), and again when an address falls in none: a library
//! opened since (a page of addresses still in none after a reading, JIT code, is remembered
//! and not read again for). Mappings read later replace those they overlap and
//! keep the others, so stacks queued before a library was closed still unwind; after an
//! `exec`, [`Unwinders::forget`] and watch the process anew. Each file is parsed once for all
//! the processes that map it.
//!
//! [`frame_pointers`] tells from a file's rules whether its code keeps frame pointers (so
//! that the kernel's frame-pointer walk would do).

#[cfg(target_arch = "x86_64")]
use std::collections::HashMap;
use std::{path::Path, time::Instant};

#[cfg(target_arch = "x86_64")]
use framehop::{Error as WalkError, FrameAddress, Unwinder as _, x86_64::UnwindRegsX86_64};
use gimli::{CallFrameInstruction, CieOrFde, EhFrame, LittleEndian, UnwindSection as _};
use muppy_core::model::{Cut, StackState};
use object::{Object as _, ObjectSection as _};

#[cfg(target_arch = "x86_64")]
mod file;
#[cfg(target_arch = "x86_64")]
mod space;

#[cfg(target_arch = "x86_64")]
use file::{CfiFile, Files, Site, Verdict};
#[cfg(target_arch = "x86_64")]
use space::Space;

/// The registers the probe captured at the allocator's return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    /// The return address into the allocator's caller: the allocation site.
    pub ip: u64,
    /// The caller's stack pointer (the return address popped).
    pub sp: u64,
    /// The caller's `rbp`.
    pub bp: u64,
}

/// A call path: return addresses, innermost first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unwound {
    /// `addrs[0]` is `Regs::ip`, the allocation site, always kept; the others are the return
    /// addresses of the frames above, as found on the stack (naming subtracts 1 itself).
    pub addrs: Vec<u64>,
    /// [`StackState::Walked`] or [`StackState::Cut`].
    pub state: StackState,
}

/// What unwinding has cost so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindStats {
    /// Stacks unwound.
    pub stacks: u64,
    /// Frames produced, the sites included.
    pub frames: u64,
    /// Time spent in [`Unwinders::unwind`], in nanoseconds.
    pub ns: u64,
    /// Readings (or attempts) of a `/proc/PID/maps`.
    pub maps_reads: u64,
}

/// The number of slots of the return address cache (a power of two; framehop's own rule
/// cache has 509).
#[cfg(target_arch = "x86_64")]
const SITE_SLOTS: usize = 4096;

/// A cached [`Site`]: by the file's id (0: empty) and the link-time address.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct SiteSlot {
    file: u32,
    svma: u64,
    site: Site,
}

/// Unwinds the stacks of traced processes: each one's modules, the parsed files they share,
/// and the caches that make a stack cost a microsecond or so.
pub struct Unwinders {
    #[cfg_attr(
        not(target_arch = "x86_64"),
        expect(dead_code, reason = "no unwinding off x86_64")
    )]
    max_frames: usize,
    stats: UnwindStats,
    #[cfg(target_arch = "x86_64")]
    spaces: HashMap<u32, Space>,
    #[cfg(target_arch = "x86_64")]
    files: Files,
    /// What each return address's file says of it, by file and link-time address (true in
    /// every process that maps the file), direct-mapped.
    #[cfg(target_arch = "x86_64")]
    sites: Box<[SiteSlot]>,
    /// gimli's row evaluation state, kept for its allocations.
    #[cfg(target_arch = "x86_64")]
    ctx: Box<gimli::UnwindContext<usize>>,
}

impl Unwinders {
    /// Unwinders whose paths have at most `max_frames` addresses (the site included).
    pub fn new(max_frames: usize) -> Self {
        Self {
            max_frames,
            stats: UnwindStats::default(),
            #[cfg(target_arch = "x86_64")]
            spaces: HashMap::new(),
            #[cfg(target_arch = "x86_64")]
            files: Files::default(),
            #[cfg(target_arch = "x86_64")]
            sites: vec![
                SiteSlot {
                    file: 0,
                    svma: 0,
                    site: Site {
                        verdict: Verdict::NoCfi,
                        sigreturn: false,
                    },
                };
                SITE_SLOTS
            ]
            .into_boxed_slice(),
            #[cfg(target_arch = "x86_64")]
            ctx: Box::new(gimli::UnwindContext::new()),
        }
    }

    /// Counters for the bench and verbose output.
    pub fn stats(&self) -> UnwindStats {
        self.stats
    }

    /// The call path of `pid`'s allocation whose registers are `regs`; `stack` holds the
    /// process's bytes at `[regs.sp, regs.sp + stack.len())`.
    pub fn unwind(&mut self, pid: u32, regs: Regs, stack: &[u8]) -> Unwound {
        let started = Instant::now();
        let mut addrs = Vec::with_capacity(self.max_frames.clamp(1, 32));
        addrs.push(regs.ip);
        let state = self.walk(pid, regs, stack, &mut addrs);
        self.stats.stacks += 1;
        self.stats.frames += addrs.len() as u64;
        self.stats.ns += u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Unwound { addrs, state }
    }
}

#[cfg(target_arch = "x86_64")]
impl Unwinders {
    /// Reads `pid`'s mappings now: called when tracing of a process starts, so that one that
    /// exits before its stacks are read still unwinds.
    pub fn watch(&mut self, pid: u32) {
        let space = self.spaces.entry(pid).or_insert_with(Space::new);
        read_maps(space, pid, &mut self.files, &mut self.stats);
    }

    /// The maps read since the last call, by process: the ring thread reads a process's
    /// mappings as soon as its first stack arrives, which may be before the session does and
    /// before the process execs again; the session names sites from them.
    pub fn take_maps(&mut self) -> Vec<(u32, String)> {
        self.spaces
            .iter_mut()
            .filter_map(|(&pid, s)| Some((pid, s.fresh.take()?)))
            .collect()
    }

    /// The process ended: its modules are dropped, and the files no other process maps (but
    /// the few last ones, for the next process of the same program).
    pub fn forget(&mut self, pid: u32) {
        if self.spaces.remove(&pid).is_some() {
            self.files.sweep();
        }
    }

    /// Follows the rules from `regs` up, pushing each caller's return address to `addrs`;
    /// how the walk ended.
    fn walk(&mut self, pid: u32, regs: Regs, stack: &[u8], addrs: &mut Vec<u64>) -> StackState {
        let Self {
            max_frames,
            stats,
            spaces,
            files,
            sites,
            ctx,
        } = self;
        // At most one reading of the maps per stack (the first sight of a process is one).
        let mut may_reread = true;
        let space = spaces.entry(pid).or_insert_with(|| {
            let mut s = Space::new();
            read_maps(&mut s, pid, files, stats);
            may_reread = false;
            s
        });
        let mut known = |space: &mut Space, addr: u64| {
            if space.find(addr).is_none()
                && !space.in_uprobes(addr)
                && may_reread
                && space.may_reread(addr)
            {
                may_reread = false;
                read_maps(space, pid, files, stats);
                if space.find(addr).is_none() {
                    space.still_unknown(addr);
                }
            }
        };
        let copy_end = regs.sp.saturating_add(stack.len() as u64);
        let mut read = |addr: u64| -> Result<u64, ()> {
            let at = usize::try_from(addr.checked_sub(regs.sp).ok_or(())?).map_err(|_| ())?;
            let word = stack.get(at..at.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_ne_bytes(word.try_into().map_err(|_| ())?))
        };
        let mut uregs = UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp);
        // The return address of the frame to unwind: the site first.
        let mut at = regs.ip;
        let mut site_frame = true;
        loop {
            known(space, at);
            if space.in_uprobes(at) {
                return StackState::Cut(Cut::Trampoline);
            }
            let site = space
                .find(at)
                .and_then(|m| m.cfi.as_ref())
                .and_then(|(file, bias)| {
                    let svma = at.checked_sub(*bias)?;
                    Some(cached_site(sites, ctx, file, svma))
                });
            if !std::mem::take(&mut site_frame) {
                if site.is_some_and(|s| s.sigreturn) {
                    return StackState::Cut(Cut::Signal);
                }
                if addrs.len() >= *max_frames {
                    return StackState::Cut(Cut::Depth);
                }
                // Kept even where its own frame cannot be unwound: an exact rule found it.
                addrs.push(at);
            }
            // The frame's rule is its call's (`at - 1`): a call may be the last instruction of
            // its function, so `at` may lie in the next one.
            match site.map(|s| s.verdict) {
                Some(Verdict::Step) => {}
                Some(Verdict::Outermost) => return StackState::Walked,
                Some(Verdict::NoCfi) | None => return StackState::Cut(Cut::NoCfi),
            }
            let Some(frame) = FrameAddress::from_return_address(at) else {
                return StackState::Cut(Cut::NoCfi);
            };
            let sp = uregs.sp();
            let next = space
                .unwinder
                .unwind_frame(frame, &mut uregs, &mut space.cache, &mut read);
            at = match next {
                Ok(Some(ret)) => ret,
                // A return address of 0 (with an exact rule, `rbp` 0 for a frame-pointer
                // rule): the stack's conventional end.
                Ok(None) => return StackState::Walked,
                Err(WalkError::CouldNotReadStack(a))
                    if a >= regs.sp && a.saturating_add(8) > copy_end =>
                {
                    return StackState::Cut(Cut::Copy);
                }
                // Every rule let through reads the stack only, above `sp`, and moves `sp`
                // up: any other error (a read below the copy, an overflow, no progress)
                // means the stack is not what the rules describe. Not guessed past.
                Err(_) => return StackState::Cut(Cut::NoCfi),
            };
            // Never loop: each caller's frame lies above its callee's.
            if uregs.sp() <= sp {
                return StackState::Cut(Cut::NoCfi);
            }
        }
    }
}

/// Reads `pid`'s maps into `space` now, counted; files no longer mapped are let go.
#[cfg(target_arch = "x86_64")]
fn read_maps(space: &mut Space, pid: u32, files: &mut Files, stats: &mut UnwindStats) {
    space.read(pid, files);
    stats.maps_reads += 1;
    files.sweep();
}

/// What the walk needs of the return address at `file`'s `svma`, from the cache or looked
/// up and cached.
#[cfg(target_arch = "x86_64")]
fn cached_site(
    slots: &mut [SiteSlot],
    ctx: &mut gimli::UnwindContext<usize>,
    file: &CfiFile,
    svma: u64,
) -> Site {
    let hash = (svma ^ (u64::from(file.id) << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let i = usize::try_from(hash >> 52).unwrap_or(0) & (SITE_SLOTS - 1);
    let slot = &mut slots[i];
    if slot.file == file.id && slot.svma == svma {
        return slot.site;
    }
    let site = file.site(svma, ctx);
    *slot = SiteSlot {
        file: file.id,
        svma,
        site,
    };
    site
}

/// Unwinding is implemented for x86_64 only: elsewhere every path is its site alone, cut for
/// want of rules.
#[cfg(not(target_arch = "x86_64"))]
impl Unwinders {
    /// Nothing to read.
    pub fn watch(&mut self, _pid: u32) {}

    /// Nothing to drop.
    pub fn forget(&mut self, _pid: u32) {}

    /// No maps are read here.
    pub fn take_maps(&mut self) -> Vec<(u32, String)> {
        Vec::new()
    }

    fn walk(&mut self, _: u32, _: Regs, _: &[u8], _: &mut Vec<u64>) -> StackState {
        StackState::Cut(Cut::NoCfi)
    }
}

/// How many of a file's functions keep a frame pointer (see [`frame_pointers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramePointers {
    /// The FDEs (functions, or pieces of them) in `.eh_frame`.
    pub fdes: usize,
    /// Those whose rules make the frame pointer the CFA's register.
    pub rbp_cfa: usize,
}

impl FramePointers {
    /// Whether the file's code keeps frame pointers: at least half its FDEs base the CFA on
    /// the frame pointer (functions that make no call need not set one up).
    pub fn kept(&self) -> bool {
        self.fdes > 0 && self.rbp_cfa * 2 >= self.fdes
    }
}

/// The frame pointer's DWARF register.
#[cfg(target_arch = "x86_64")]
const FP: gimli::Register = gimli::X86_64::RBP;
/// The frame pointer's DWARF register.
#[cfg(target_arch = "aarch64")]
const FP: gimli::Register = gimli::AArch64::X29;

/// Whether an ELF file's code keeps frame pointers, from its `.eh_frame`: how many FDEs make
/// the frame pointer the CFA's register (`DW_CFA_def_cfa_register rbp`, `DW_CFA_def_cfa rbp`).
/// `None` if the file cannot be read, has no `.eh_frame`, or it does not parse.
pub fn frame_pointers(path: &Path) -> Option<FramePointers> {
    let cache = object::ReadCache::new(std::fs::File::open(path).ok()?);
    let elf = object::File::parse(&cache).ok()?;
    let section = elf.section_by_name(".eh_frame")?;
    let mut eh = EhFrame::new(section.data().ok()?, LittleEndian);
    eh.set_address_size(8);
    let mut bases = gimli::BaseAddresses::default().set_eh_frame(section.address());
    // Only the functions of `.text` count: PLT stubs have CFI of their own, never on the frame
    // pointer, and outnumber the functions of a small program.
    let text = elf.section_by_name(".text")?;
    let code = text.address()..text.address() + text.size();
    bases = bases.set_text(text.address());
    let mut counts = FramePointers {
        fdes: 0,
        rbp_cfa: 0,
    };
    let mut entries = eh.entries(&bases);
    while let Some(entry) = entries.next().ok()? {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let fde = partial.parse(EhFrame::cie_from_offset).ok()?;
        if !code.contains(&fde.initial_address()) {
            continue;
        }
        counts.fdes += 1;
        let mut insns = fde.instructions(&eh, &bases);
        while let Some(insn) = insns.next().ok()? {
            let on_fp = match insn {
                CallFrameInstruction::DefCfa { register, .. }
                | CallFrameInstruction::DefCfaSf { register, .. }
                | CallFrameInstruction::DefCfaRegister { register } => register == FP,
                _ => false,
            };
            if on_fp {
                counts.rbp_cfa += 1;
                break;
            }
        }
    }
    Some(counts)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
