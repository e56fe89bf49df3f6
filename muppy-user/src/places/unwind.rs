//! One unwinding step of a frozen thread's stack, read in the copied memory: by the call frame
//! information (`.eh_frame`) of the code the frame is in, as debuggers do, else by the frame
//! pointer. [`super::Places`] chains the steps to know whose frame each stack word is in.

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, NativeEndian, Register, RegisterRule,
    UnwindContext, UnwindSection as _,
};
use object::{Endianness, Object as _, ObjectSection as _, ReadRef, read::elf::ElfFile64};

/// The stack pointer, the frame pointer and the return address's column, by DWARF number.
#[cfg(target_arch = "x86_64")]
const SP: Register = gimli::X86_64::RSP;
#[cfg(target_arch = "x86_64")]
const FP: Register = gimli::X86_64::RBP;
#[cfg(target_arch = "x86_64")]
const RA: Register = gimli::X86_64::RA;
#[cfg(target_arch = "aarch64")]
const SP: Register = gimli::AArch64::SP;
#[cfg(target_arch = "aarch64")]
const FP: Register = gimli::AArch64::X29;
#[cfg(target_arch = "aarch64")]
const RA: Register = gimli::AArch64::X30;

/// What unwinding knows of a frame: its code address, stack pointer, frame pointer, and (in
/// the innermost frame only) the link register.
#[derive(Clone, Copy, Debug)]
pub(super) struct Regs {
    pub pc: u64,
    pub sp: u64,
    pub fp: u64,
    pub lr: Option<u64>,
}

/// What one step finds: the frame's canonical frame address (the caller's stack pointer: the
/// frame spans `[sp, cfa)`), the return address into the caller (`None` in the outermost
/// frame, or where it cannot be told), and the caller's frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Step {
    pub cfa: u64,
    pub ret: Option<u64>,
    pub fp: u64,
}

/// A file's call frame information: `.eh_frame`, its `.eh_frame_hdr` search table if any, at
/// their link-time addresses.
#[derive(Debug)]
pub(super) struct Cfi {
    eh_frame: Vec<u8>,
    eh_frame_addr: u64,
    hdr: Option<(Vec<u8>, u64)>,
    text_addr: u64,
}

/// The unwinding state kept between steps.
pub(super) type Context = UnwindContext<usize>;

impl Cfi {
    /// Reads `elf`'s `.eh_frame` (and `.eh_frame_hdr`); `None` without one.
    pub(super) fn read<'data, R: ReadRef<'data>>(
        elf: &ElfFile64<'data, Endianness, R>,
    ) -> Option<Cfi> {
        let section = |name: &str| {
            let s = elf.section_by_name(name)?;
            Some((s.data().ok()?.to_vec(), s.address()))
        };
        let (eh_frame, eh_frame_addr) = section(".eh_frame")?;
        Some(Cfi {
            eh_frame,
            eh_frame_addr,
            hdr: section(".eh_frame_hdr"),
            text_addr: elf.section_by_name(".text").map_or(0, |s| s.address()),
        })
    }

    /// One step from the frame whose code is at the link-time address `vaddr` (for a frame
    /// below the innermost, one byte before its return address: the call), with `regs` its
    /// registers and `word` reading the copy. `None` where the file has no rule for the
    /// address, or one that is not a register plus an offset (signal trampolines, PLT).
    pub(super) fn step(
        &self,
        ctx: &mut Context,
        vaddr: u64,
        regs: &Regs,
        word: impl Fn(u64) -> Option<u64>,
    ) -> Option<Step> {
        let eh = EhFrame::new(&self.eh_frame, NativeEndian);
        let mut bases = BaseAddresses::default()
            .set_eh_frame(self.eh_frame_addr)
            .set_text(self.text_addr);
        if let Some((_, addr)) = &self.hdr {
            bases = bases.set_eh_frame_hdr(*addr);
        }
        let hdr = self
            .hdr
            .as_ref()
            .and_then(|(data, _)| EhFrameHdr::new(data, NativeEndian).parse(&bases, 8).ok());
        let row = match hdr.as_ref().and_then(|h| h.table()) {
            Some(table) => table
                .unwind_info_for_address(&eh, &bases, ctx, vaddr, EhFrame::cie_from_offset)
                .ok()?,
            None => eh
                .unwind_info_for_address(&bases, ctx, vaddr, EhFrame::cie_from_offset)
                .ok()?,
        };
        let cfa = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => {
                let base = match *register {
                    r if r == SP => regs.sp,
                    r if r == FP => regs.fp,
                    _ => return None,
                };
                base.checked_add_signed(*offset)?
            }
            CfaRule::Expression(_) => return None,
        };
        let saved = |rule: Option<RegisterRule<usize>>, value: Option<u64>| match rule {
            Some(RegisterRule::Offset(n)) => Some(word(cfa.checked_add_signed(n)?)),
            Some(RegisterRule::ValOffset(n)) => Some(cfa.checked_add_signed(n)),
            Some(RegisterRule::Undefined) => Some(None),
            None | Some(RegisterRule::SameValue) => Some(value),
            Some(_) => None,
        };
        let ret = saved(row.register(RA), regs.lr)?;
        let fp = saved(row.register(FP), Some(regs.fp))?.unwrap_or(0);
        Some(Step { cfa, ret, fp })
    }
}

/// One step by the frame pointer, for code without call frame information: the frame record
/// `[fp]` = the caller's frame pointer, `[fp + 8]` = the return address, and the frame ends
/// above it (`cfa = fp + 16`, exact where the record tops the frame, as on x86_64).
pub(super) fn fp_step(regs: &Regs, word: impl Fn(u64) -> Option<u64>) -> Option<Step> {
    let fp = regs.fp;
    if fp < regs.sp || !fp.is_multiple_of(8) {
        return None;
    }
    Some(Step {
        cfa: fp.checked_add(16)?,
        ret: Some(word(fp + 8)?),
        fp: word(fp)?,
    })
}
