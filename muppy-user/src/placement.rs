//! Where in an allocator function to put its probe.
//!
//! A uprobe costs a trap per hit, and the instruction under the breakpoint decides which: the
//! kernel emulates `push reg` and relative branches (≈0.7 µs), and single-steps anything else
//! out of line (≈9 µs). glibc's `free` starts with `test %rdi,%rdi; je` and `memalign` with a
//! RIP-relative `cmpb`, both single-stepped. So the probe goes to the first emulated
//! instruction, past a prefix that is proven not to matter:
//!
//! - instructions that write nothing but flags (`test`, `cmp`): arguments, stack pointer and
//!   return address are as at the entry, so the probe reads the same call;
//! - conditional branches whose taken path returns at once, writing no memory and calling
//!   nothing (free(NULL)'s early return): calls that leave that way change no heap block.
//!
//! Anything else stops the walk and the probe stays at the entry (+0). The decoding is
//! iced-x86's, not a table of byte patterns.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Formatter as _, GasFormatter, Instruction,
    InstructionInfoFactory, OpAccess,
};

/// Where a probe goes in one function, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Bytes from the function's entry to the probed instruction.
    pub skip: u64,
    /// How far above the stack pointer the return address sits at the probed instruction
    /// (always 0: nothing skipped pushes).
    pub ret_addr_sp_offset: u8,
    /// Why, in words, for `--verbose`.
    pub reason: String,
}

/// Code bytes from an address to the end of its section; `None` outside the code.
pub type ReadCode<'a> = dyn Fn(u64) -> Option<&'a [u8]> + 'a;

/// How many instructions of prefix are considered, and of a branch's taken path.
const MAX_PREFIX: usize = 6;
const MAX_TAKEN_PATH: usize = 4;

fn decode_at(read: &ReadCode<'_>, ip: u64) -> Option<Instruction> {
    let bytes = read(ip)?;
    let mut d = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
    let i = d.decode();
    (!i.is_invalid()).then_some(i)
}

fn text(i: &Instruction) -> String {
    let mut out = String::new();
    GasFormatter::new().format(i, &mut out);
    out
}

/// Whether the kernel emulates `i` when a uprobe sits on it, instead of single-stepping it.
fn emulated(i: &Instruction) -> bool {
    i.code() == Code::Push_r64 || i.is_jcc_short_or_near() || i.is_jmp_short_or_near()
}

fn writes(a: OpAccess) -> bool {
    matches!(
        a,
        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    )
}

/// Whether `i` falls through and changes nothing but the flags.
fn flags_only(info: &mut InstructionInfoFactory, i: &Instruction) -> bool {
    if i.flow_control() != FlowControl::Next {
        return false;
    }
    let info = info.info(i);
    !info.used_registers().iter().any(|r| writes(r.access()))
        && !info.used_memory().iter().any(|m| writes(m.access()))
}

/// Whether the taken path of the conditional branch `i` returns within a few instructions,
/// writing nothing but flags on the way (so it can neither allocate nor free).
fn taken_path_returns(
    info: &mut InstructionInfoFactory,
    read: &ReadCode<'_>,
    i: &Instruction,
) -> bool {
    if !i.is_jcc_short_or_near() {
        return false;
    }
    let mut ip = i.near_branch_target();
    for _ in 0..MAX_TAKEN_PATH {
        let Some(t) = decode_at(read, ip) else {
            return false;
        };
        if t.code() == Code::Retnq {
            return true;
        }
        if !flags_only(info, &t) {
            return false;
        }
        ip = t.next_ip();
    }
    false
}

/// Chooses the probe's place in the function entered at `entry`; `read(addr)` gives the code
/// bytes from `addr` on (to the end of its section), `None` outside the code.
pub fn place(read: &ReadCode<'_>, entry: u64) -> Placement {
    let mut info = InstructionInfoFactory::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut ip = entry;
    let stay = |why: String| Placement {
        skip: 0,
        ret_addr_sp_offset: 0,
        reason: why,
    };
    for _ in 0..MAX_PREFIX {
        let Some(i) = decode_at(read, ip) else {
            return stay(format!("+0: cannot decode at +{}", ip - entry));
        };
        if taken_path_returns(&mut info, read, &i) {
            skipped.push(format!(
                "`{}` (its taken path returns, touching no memory)",
                text(&i)
            ));
        } else if emulated(&i) {
            let skip = ip - entry;
            let mut reason = format!("+{skip}: `{}` is emulated", text(&i));
            if !skipped.is_empty() {
                reason.push_str(&format!("; skipped {}", skipped.join(", ")));
            }
            return Placement {
                skip,
                ret_addr_sp_offset: 0,
                reason,
            };
        } else if flags_only(&mut info, &i) {
            skipped.push(format!("`{}` (writes only flags)", text(&i)));
        } else {
            let at = if ip == entry {
                String::new()
            } else {
                format!(" at +{}", ip - entry)
            };
            return stay(format!(
                "+0 (single-stepped): `{}`{at} is neither emulated nor skippable",
                text(&i)
            ));
        }
        ip = i.next_ip();
    }
    stay(format!(
        "+0 (single-stepped): no emulated instruction in the first {MAX_PREFIX}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places a probe in `code` loaded at 0x1000.
    fn place_in(code: &[u8]) -> Placement {
        let base = 0x1000u64;
        let read = |addr: u64| -> Option<&[u8]> {
            let off = usize::try_from(addr.checked_sub(base)?).ok()?;
            code.get(off..).filter(|s| !s.is_empty())
        };
        place(&read, base)
    }

    #[test]
    fn push_at_entry_stays_at_entry() {
        // glibc malloc: push %r12; push %rbp
        let p = place_in(&[0x41, 0x54, 0x55, 0x53]);
        assert_eq!(p.skip, 0);
        assert!(p.reason.contains("push"), "{}", p.reason);
    }

    #[test]
    fn free_skips_test_and_null_return_to_the_push() {
        // glibc free: test %rdi,%rdi; je <ret>; push %rbp; ... ; <ret>: ret
        let mut code = vec![0x48, 0x85, 0xff, 0x0f, 0x84, 0x0c, 0x00, 0x00, 0x00, 0x55];
        code.extend([
            0x48, 0x83, 0xec, 0x18, 0x48, 0x89, 0x3c, 0x24, 0x90, 0x90, 0x90,
        ]);
        code.push(0xc3); // at 0x1015 = 9 + 12
        let p = place_in(&code);
        assert_eq!(p.skip, 9, "{}", p.reason);
        assert!(p.reason.contains("writes only flags"), "{}", p.reason);
        assert!(p.reason.contains("taken path returns"), "{}", p.reason);
    }

    #[test]
    fn a_branch_whose_taken_path_does_work_is_probed_itself() {
        // memalign: cmpb $0,0x10(%rip); je +0x7; jmp elsewhere; ...; sub $0x18,%rsp
        let code = [
            0x80, 0x3d, 0x10, 0x00, 0x00, 0x00, 0x00, // cmpb $0x0,0x10(%rip)
            0x74, 0x07, // je .+9
            0xe9, 0x00, 0x10, 0x00, 0x00, // jmp far away
            0x66, 0x90, // xchg %ax,%ax
            0x48, 0x83, 0xec, 0x18, // sub $0x18,%rsp (the taken path writes rsp)
            0xc3,
        ];
        let p = place_in(&code);
        assert_eq!(p.skip, 7, "{}", p.reason);
        assert!(p.reason.contains("je"), "{}", p.reason);
    }

    #[test]
    fn rip_relative_compare_is_skipped_to_the_push() {
        // valloc: cmpb $0x0,0x140e31(%rip); push %rbx
        let p = place_in(&[0x80, 0x3d, 0x31, 0x0e, 0x14, 0x00, 0x00, 0x53]);
        assert_eq!(p.skip, 7, "{}", p.reason);
    }

    #[test]
    fn a_register_write_stops_the_walk() {
        // reallocarray: mov %rsi,%rax; mul %rdx; ...
        let p = place_in(&[0x48, 0x89, 0xf0, 0x48, 0xf7, 0xe2, 0x55]);
        assert_eq!(p.skip, 0);
        assert!(p.reason.contains("single-stepped"), "{}", p.reason);
        // A write to memory stops it too: mov %rdi,(%rsp); push %rbp
        assert_eq!(place_in(&[0x48, 0x89, 0x3c, 0x24, 0x55]).skip, 0);
    }

    #[test]
    fn a_null_check_whose_path_frees_is_not_skipped() {
        // test %rdi,%rdi; je L; push %rbp; ... L: mov %rax,(%rdi); ret
        let code = [0x48, 0x85, 0xff, 0x74, 0x01, 0x55, 0x48, 0x89, 0x07, 0xc3];
        let p = place_in(&code);
        // The je is emulated, so the probe sits on it; every path passes through.
        assert_eq!(p.skip, 3, "{}", p.reason);
    }

    #[test]
    fn undecodable_or_missing_code_stays_at_entry() {
        assert_eq!(place_in(&[]).skip, 0);
        assert_eq!(place_in(&[0x0f, 0xff]).skip, 0);
    }
}
