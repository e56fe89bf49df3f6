//! One mapped file's call frame information, read once and shared by every process that maps
//! it: the `.eh_frame` bytes and search table framehop steps with, and what the walk must know
//! of a return address in the file: whether framehop can follow its rule exactly, and whether
//! it is a signal-return trampoline.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs::File,
    ops::Range,
    os::unix::fs::{FileExt as _, MetadataExt as _},
    path::Path,
    sync::{Arc, Mutex},
};

use framehop::{ExplicitModuleSectionInfo, Module};
use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection as _, X86_64,
};
use object::{Object as _, ObjectSection as _, ObjectSegment as _, ReadCache, SegmentFlags, elf};

use crate::places::Mapping;

/// `mov $15, %rax; syscall` (`rt_sigreturn`): glibc's and musl's `__restore_rt`, where a
/// signal handler returns to.
const SIGRETURN: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];

/// The page size the loader maps files with, and code is read by.
const PAGE: u64 = 4096;

/// How many files no process maps any more are kept parsed, for the next process of the same
/// program (`--all`, a build's many compilers).
const UNUSED_KEPT: usize = 16;

/// What the walk needs to know of a return address, cached by file and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Site {
    /// What the rule of its call lets the walk do.
    pub(super) verdict: Verdict,
    /// The address is a signal-return trampoline's first instruction.
    pub(super) sigreturn: bool,
}

/// What a code address's unwind rule lets the walk do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The rule is one framehop turns into its cached form as it stands: the caller's frame
    /// follows exactly.
    Step,
    /// The rule says there is no caller (the return address is undefined: `_start`, a
    /// thread's start).
    Outermost,
    /// No rule covers the address, or framehop would not follow it exactly (see
    /// [`CfiFile::verdict`]).
    NoCfi,
}

/// The code pages of a file read so far (by link-time address / [`PAGE`]), and the
/// signal-return trampolines in them (link-time addresses).
#[derive(Default)]
struct Scan {
    pages: HashSet<u64>,
    sigreturns: Vec<u64>,
}

/// A section's bytes and link-time addresses.
struct Section {
    data: Arc<[u8]>,
    range: Range<u64>,
}

/// A file's call frame information and what the walk needs besides.
pub(super) struct CfiFile {
    /// Never reused, so that what is cached by file stays true when files come and go.
    pub(super) id: u32,
    /// Kept open to read code bytes from (signal trampolines).
    file: File,
    /// The code pages read so far, and the trampolines found in them.
    scan: Mutex<Scan>,
    eh_frame: Option<Section>,
    eh_frame_hdr: Option<Section>,
    text: Option<Range<u64>>,
    got: Option<Range<u64>>,
    /// The executable `PT_LOAD`s as (file offset, file size, link-time address).
    pub(super) code: Vec<(u64, u64, u64)>,
}

impl CfiFile {
    /// Reads what unwinding needs of an ELF file (its headers and unwind sections, not the
    /// rest: a binary with its debug info may be large); a file that is not ELF, or has no
    /// `.eh_frame`, has no rules.
    pub(super) fn read(id: u32, file: File) -> CfiFile {
        let cache = ReadCache::new(file);
        let sections = |elf: &object::File<'_, &ReadCache<File>>| {
            let range = |name: &str| {
                let s = elf.section_by_name(name)?;
                Some(s.address()..s.address().checked_add(s.size())?)
            };
            let section = |name: &str| {
                let s = elf.section_by_name(name)?;
                Some(Section {
                    data: Arc::from(s.data().ok()?),
                    range: range(name)?,
                })
            };
            let code = elf
                .segments()
                .filter(|seg| {
                    matches!(seg.flags(), SegmentFlags::Elf { p_flags } if p_flags & elf::PF_X != 0)
                })
                .map(|seg| {
                    let (offset, size) = seg.file_range();
                    (offset, size, seg.address())
                })
                .collect();
            (
                section(".eh_frame"),
                section(".eh_frame_hdr"),
                range(".text"),
                range(".got"),
                code,
            )
        };
        let parts = object::File::parse(&cache).ok().map(|elf| sections(&elf));
        let (eh_frame, eh_frame_hdr, text, got, code) =
            parts.unwrap_or((None, None, None, None, Vec::new()));
        CfiFile {
            id,
            file: cache.into_inner(),
            scan: Mutex::default(),
            eh_frame,
            eh_frame_hdr,
            text,
            got,
            code,
        }
    }

    /// Whether the file has unwind rules framehop can search: `.eh_frame` and its
    /// `.eh_frame_hdr` table (which linkers write for every executable and library; without
    /// it framehop indexes the FDEs itself, and where that fails, walks frame pointers).
    pub(super) fn has_cfi(&self) -> bool {
        self.eh_frame.is_some() && self.eh_frame_hdr.is_some()
    }

    /// The load bias of an executable mapping at `start` of the file offset `offset`: mapped
    /// address − link-time address. `None` if no executable `PT_LOAD` holds that offset.
    pub(super) fn bias(&self, start: u64, offset: u64) -> Option<u64> {
        let &(off, _, vaddr) = self
            .code
            .iter()
            .find(|&&(off, size, _)| off & !(PAGE - 1) <= offset && offset < off + size)?;
        // The mapping starts at the page holding the segment's start, as the loader maps it.
        start
            .checked_add(off)?
            .checked_sub(offset)?
            .checked_sub(vaddr)
    }

    /// framehop's module for a mapping of the file at `range` with load bias `bias`; the
    /// section bytes are shared, not copied.
    pub(super) fn module(&self, range: Range<u64>, bias: u64) -> Module<Arc<[u8]>> {
        let svma = |s: &Option<Section>| s.as_ref().map(|s| s.range.clone());
        let data = |s: &Option<Section>| s.as_ref().map(|s| Arc::clone(&s.data));
        Module::new(
            String::new(),
            range,
            bias,
            ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma: self.text.clone(),
                got_svma: self.got.clone(),
                eh_frame_svma: svma(&self.eh_frame),
                eh_frame: data(&self.eh_frame),
                eh_frame_hdr_svma: svma(&self.eh_frame_hdr),
                eh_frame_hdr: data(&self.eh_frame_hdr),
                ..Default::default()
            },
        )
    }

    /// What the walk needs of the return address at the link-time address `svma`: the rule
    /// of its call (at `svma - 1`), and whether it is a signal-return trampoline's start.
    pub(super) fn site(&self, svma: u64, ctx: &mut UnwindContext<usize>) -> Site {
        Site {
            verdict: svma
                .checked_sub(1)
                .map_or(Verdict::NoCfi, |call| self.verdict(call, ctx)),
            sigreturn: self.is_sigreturn(svma),
        }
    }

    /// Whether the code at the link-time address `svma` is `rt_sigreturn` ([`SIGRETURN`]):
    /// where a signal handler returns to, the kernel's signal frame above it. The file's code
    /// is read a page at a time, the first time an address in the page is asked about (a
    /// whole program's code would be read for a few return addresses).
    fn is_sigreturn(&self, svma: u64) -> bool {
        let page = svma / PAGE;
        let mut scan = self.scan.lock().unwrap_or_else(|e| e.into_inner());
        if scan.pages.insert(page) {
            // The page and the start of the next, for a sequence across the two.
            let want = page * PAGE..(page * PAGE).saturating_add(PAGE + SIGRETURN.len() as u64 - 1);
            for &(offset, size, vaddr) in &self.code {
                let start = want.start.max(vaddr);
                let end = want.end.min(vaddr.saturating_add(size));
                let Some(len) = end.checked_sub(start).and_then(|l| usize::try_from(l).ok()) else {
                    continue;
                };
                let mut code = vec![0; len];
                if self
                    .file
                    .read_exact_at(&mut code, offset + (start - vaddr))
                    .is_err()
                {
                    continue;
                }
                let found = code
                    .windows(SIGRETURN.len())
                    .enumerate()
                    .filter(|(_, w)| *w == SIGRETURN)
                    .map(|(i, _)| start + i as u64);
                for at in found {
                    if at / PAGE == page && !scan.sigreturns.contains(&at) {
                        scan.sigreturns.push(at);
                    }
                }
            }
        }
        scan.sigreturns.contains(&svma)
    }

    /// What the rule at the link-time address `svma` lets the walk do, found as framehop
    /// finds it (by the `.eh_frame_hdr` search table).
    ///
    /// framehop follows any rule it cannot turn into its cached form by evaluating it, and
    /// when that fails, or no rule covers the address, it walks the frame-pointer chain
    /// instead, without saying so; it even caches that guess for the address. So only the
    /// rules it turns into cached forms as they stand are let through: the return address at
    /// `CFA - 8` (or undefined: the outermost frame), and the CFA at `rsp + 8n` (`rbp` saved
    /// at a multiple of 8 from `rsp`, or not saved) or at `rbp + 16` with `rbp` saved at
    /// `CFA - 16`. That is every rule of compiled code at a call; what is left out (a CFA
    /// computed by an expression, as in PLT stubs and functions that realign the stack, or
    /// `rbp` plus another offset) ends the walk as [`Verdict::NoCfi`].
    pub(super) fn verdict(&self, svma: u64, ctx: &mut UnwindContext<usize>) -> Verdict {
        let Some(eh) = &self.eh_frame else {
            return Verdict::NoCfi;
        };
        let mut frame = EhFrame::new(&eh.data[..], LittleEndian);
        frame.set_address_size(8);
        let mut bases = BaseAddresses::default().set_eh_frame(eh.range.start);
        if let Some(t) = &self.text {
            bases = bases.set_text(t.start);
        }
        if let Some(g) = &self.got {
            bases = bases.set_got(g.start);
        }
        let Some(hdr) = &self.eh_frame_hdr else {
            return Verdict::NoCfi;
        };
        bases = bases.set_eh_frame_hdr(hdr.range.start);
        let Some(parsed) = EhFrameHdr::new(&hdr.data[..], LittleEndian)
            .parse(&bases, 8)
            .ok()
        else {
            return Verdict::NoCfi;
        };
        let Some(table) = parsed.table() else {
            return Verdict::NoCfi;
        };
        let row =
            table.unwind_info_for_address(&frame, &bases, ctx, svma, EhFrame::cie_from_offset);
        let Ok(row) = row else {
            return Verdict::NoCfi;
        };
        match row.register(X86_64::RA) {
            Some(RegisterRule::Undefined) => return Verdict::Outermost,
            Some(RegisterRule::Offset(-8)) => {}
            // No rule at all: framehop takes it for the outermost frame; unknown, rather.
            _ => return Verdict::NoCfi,
        }
        let bp = row.register(X86_64::RBP);
        let exact = match *row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RSP => {
                let sp_fits = offset >= 8 && offset % 8 == 0 && u16::try_from(offset / 8).is_ok();
                sp_fits
                    && match bp {
                        None | Some(RegisterRule::Undefined | RegisterRule::SameValue) => true,
                        Some(RegisterRule::Offset(n)) => offset
                            .checked_add(n)
                            .is_some_and(|at| at % 8 == 0 && i16::try_from(at / 8).is_ok()),
                        _ => false,
                    }
            }
            CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RBP => {
                offset == 16 && bp == Some(RegisterRule::Offset(-16))
            }
            _ => false,
        };
        if exact { Verdict::Step } else { Verdict::NoCfi }
    }
}

/// The parsed files, by (device, inode): those some process maps, and the few last released.
#[derive(Default)]
pub(super) struct Files {
    by_key: HashMap<(u64, u64), Arc<CfiFile>>,
    /// Files no process maps any more, oldest first.
    unused: VecDeque<(u64, u64)>,
    /// The last file id given.
    last_id: u32,
}

impl Files {
    /// The file of `pid`'s mapping `m`, parsed once for all processes: opened through
    /// `/proc/PID/map_files` (the very file mapped, even deleted or in another mount
    /// namespace), else by its path under the process's root or as it is. A file found by
    /// path must have the inode the mapping has (it may have been replaced since). `None` if
    /// it cannot be opened or read.
    pub(super) fn open(&mut self, pid: u32, m: &Mapping) -> Option<Arc<CfiFile>> {
        let by_path = |p: &Path| {
            File::open(p)
                .ok()
                .filter(|f| f.metadata().is_ok_and(|md| md.ino() == m.inode))
        };
        let file = File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
            .ok()
            .or_else(|| {
                by_path(
                    &Path::new(&format!("/proc/{pid}/root")).join(m.name.trim_start_matches('/')),
                )
            })
            .or_else(|| by_path(Path::new(&m.name)))?;
        let md = file.metadata().ok()?;
        let key = (md.dev(), md.ino());
        if let Some(f) = self.by_key.get(&key) {
            return Some(Arc::clone(f));
        }
        self.last_id += 1;
        let parsed = Arc::new(CfiFile::read(self.last_id, file));
        self.by_key.insert(key, Arc::clone(&parsed));
        Some(parsed)
    }

    /// Drops the files no process maps, but for the [`UNUSED_KEPT`] last released.
    pub(super) fn sweep(&mut self) {
        let by_key = &self.by_key;
        self.unused
            .retain(|k| by_key.get(k).is_some_and(|f| Arc::strong_count(f) == 1));
        for (key, f) in by_key {
            if Arc::strong_count(f) == 1 && !self.unused.contains(key) {
                self.unused.push_back(*key);
            }
        }
        while self.unused.len() > UNUSED_KEPT {
            if let Some(key) = self.unused.pop_front() {
                self.by_key.remove(&key);
            }
        }
    }

    /// How many files are parsed and kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }
}
