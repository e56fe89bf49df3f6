use std::{
    arch::asm,
    hint::black_box,
    process::{Child, Command, Stdio},
    sync::Mutex,
};

use object::{ObjectSymbol as _, SymbolKind};

use super::*;
use crate::places::parse_mappings;

/// The most of its own stack a test copies, as a generous probe would.
const COPY: u64 = 64 << 10;

/// Registers and a copy of the stack above them, as the probe takes them.
struct Capture {
    regs: Regs,
    stack: Vec<u8>,
}

/// Captures the registers at this point of the caller (`ip` lies inside the caller, as the
/// return address of a call would) and copies the stack from its `sp` up to [`COPY`] bytes or
/// the end of the stack mapping.
#[inline(always)]
fn capture() -> Capture {
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: reads three registers, touches no memory.
    unsafe {
        asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            ip = out(reg) ip,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    let maps = parse_mappings(&std::fs::read_to_string("/proc/self/maps").unwrap());
    let top = maps.iter().find(|m| m.range().contains(&sp)).unwrap().end;
    let len = usize::try_from((top - sp).min(COPY)).unwrap();
    // SAFETY: `[sp, top)` is this thread's stack, mapped and readable; the frames above this
    // one are not written while they are copied.
    let stack = unsafe { std::slice::from_raw_parts(sp as *const u8, len) }.to_vec();
    Capture {
        regs: Regs { ip, sp, bp },
        stack,
    }
}

#[inline(never)]
fn selftest_level_1(n: u64) -> Capture {
    let c = selftest_level_2(black_box(n + 1));
    black_box(n);
    c
}

#[inline(never)]
fn selftest_level_2(n: u64) -> Capture {
    let c = selftest_level_3(black_box(n + 1));
    black_box(n);
    c
}

#[inline(never)]
fn selftest_level_3(n: u64) -> Capture {
    let c = selftest_level_4(black_box(n + 1));
    black_box(n);
    c
}

#[inline(never)]
fn selftest_level_4(n: u64) -> Capture {
    let c = capture();
    black_box(n);
    c
}

/// The addresses of the functions `names` (by a part of their symbol's name) in this
/// process, from the test binary's symbol table and `first`'s address.
fn function_ranges(names: &[&str], first: u64) -> Vec<std::ops::Range<u64>> {
    let data = std::fs::read("/proc/self/exe").unwrap();
    let elf = object::File::parse(&*data).unwrap();
    let symbol = |name: &str| {
        let found: Vec<_> = elf
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.name().is_ok_and(|n| n.contains(name)))
            .map(|s| (s.address(), s.size()))
            .collect();
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        found[0]
    };
    let bias = first - symbol(names[0]).0;
    names
        .iter()
        .map(|n| {
            let (addr, size) = symbol(n);
            addr + bias..addr + bias + size
        })
        .collect()
}

/// The chain's stack, and the four functions' ranges, innermost first.
fn chain() -> (Capture, Vec<std::ops::Range<u64>>) {
    let c = selftest_level_1(black_box(1));
    let ranges = function_ranges(
        &[
            "selftest_level_4",
            "selftest_level_3",
            "selftest_level_2",
            "selftest_level_1",
        ],
        selftest_level_4 as *const () as u64,
    );
    (c, ranges)
}

/// The offset in the copy of the first word equal to `value`.
fn word_at(stack: &[u8], value: u64) -> usize {
    stack
        .chunks_exact(8)
        .position(|w| u64::from_ne_bytes(w.try_into().unwrap()) == value)
        .unwrap()
        * 8
}

fn write_word(stack: &mut [u8], at: usize, value: u64) {
    stack[at..at + 8].copy_from_slice(&value.to_ne_bytes());
}

#[test]
fn walks_own_stack_whole() {
    let (c, ranges) = chain();
    let mut u = Unwinders::new(128);
    let out = u.unwind(std::process::id(), c.regs, &c.stack);
    assert_eq!(out.state, StackState::Walked, "{out:x?}");
    assert_eq!(out.addrs[0], c.regs.ip);
    assert!(ranges[0].contains(&out.addrs[0]), "{out:x?} {ranges:x?}");
    for (i, r) in ranges.iter().enumerate().skip(1) {
        // A return address follows its call, so it may be one past the function's last byte.
        assert!(
            r.start < out.addrs[i] && out.addrs[i] <= r.end,
            "frame {i}: {out:x?} {ranges:x?}"
        );
    }
    // Then the test harness and the thread's start, down to `clone3`.
    assert!(out.addrs.len() > 8, "{out:x?}");

    let runs = 2000;
    let before = u.stats();
    for _ in 0..runs {
        assert_eq!(u.unwind(std::process::id(), c.regs, &c.stack), out);
    }
    let after = u.stats();
    assert_eq!(after.stacks - before.stacks, runs);
    assert_eq!(after.frames - before.frames, runs * out.addrs.len() as u64);
}

#[test]
fn short_copy_keeps_innermost_frames() {
    let (c, _) = chain();
    let full = Unwinders::new(128).unwind(std::process::id(), c.regs, &c.stack);
    // Up to, not including, the slot of the return address into selftest_level_1.
    let cut = word_at(&c.stack, full.addrs[3]);
    let out = Unwinders::new(128).unwind(std::process::id(), c.regs, &c.stack[..cut]);
    assert_eq!(out.addrs, full.addrs[..3]);
    assert_eq!(out.state, StackState::Cut(Cut::Copy));
    // Even the first frame's return address may be out of the copy: the site is kept.
    let out = Unwinders::new(128).unwind(std::process::id(), c.regs, &[]);
    assert_eq!(out.addrs, [c.regs.ip]);
    assert_eq!(out.state, StackState::Cut(Cut::Copy));
}

#[test]
fn frame_limit_cuts() {
    let (c, _) = chain();
    let full = Unwinders::new(128).unwind(std::process::id(), c.regs, &c.stack);
    let out = Unwinders::new(3).unwind(std::process::id(), c.regs, &c.stack);
    assert_eq!(out.addrs, full.addrs[..3]);
    assert_eq!(out.state, StackState::Cut(Cut::Depth));
    let exact = full.addrs.len();
    let out = Unwinders::new(exact).unwind(std::process::id(), c.regs, &c.stack);
    assert_eq!(out, full, "a limit the path just fits in does not cut it");
}

#[test]
fn uprobes_trampoline_ends_the_path() {
    let (mut c, _) = chain();
    let pid = std::process::id();
    let full = Unwinders::new(128).unwind(pid, c.regs, &c.stack);
    // The kernel's trampoline in place of the return address into selftest_level_2, as a
    // uretprobe on selftest_level_3 would leave it.
    let trampoline = 0x7fff_ff00_0000;
    let at = word_at(&c.stack, full.addrs[2]);
    write_word(&mut c.stack, at, trampoline);
    let mut u = Unwinders::new(128);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap()
        + &format!(
            "{trampoline:x}-{:x} r-xp 00000000 00:00 0 [uprobes]\n",
            trampoline + 0x1000
        );
    let Unwinders { spaces, files, .. } = &mut u;
    spaces
        .entry(pid)
        .or_insert_with(Space::new)
        .load(pid, &maps, files);
    let out = u.unwind(pid, c.regs, &c.stack);
    assert_eq!(out.addrs, full.addrs[..2]);
    assert_eq!(out.state, StackState::Cut(Cut::Trampoline));
    assert_eq!(
        u.stats().maps_reads,
        0,
        "a known [uprobes] needs no reading"
    );
}

#[test]
fn code_outside_files_ends_the_path() {
    let (mut c, _) = chain();
    let pid = std::process::id();
    let full = Unwinders::new(128).unwind(pid, c.regs, &c.stack);
    let at = word_at(&c.stack, full.addrs[2]);
    write_word(&mut c.stack, at, 0x1000);
    let mut u = Unwinders::new(128);
    let out = u.unwind(pid, c.regs, &c.stack);
    // The return address is true (an exact rule found it), the frame it leads to has no rules.
    assert_eq!(out.addrs, [&full.addrs[..2], &[0x1000]].concat());
    assert_eq!(out.state, StackState::Cut(Cut::NoCfi));
    assert_eq!(
        u.stats().maps_reads,
        1,
        "the first sight of the process only"
    );
    assert_eq!(u.unwind(pid, c.regs, &c.stack), out);
    assert_eq!(
        u.stats().maps_reads,
        2,
        "read again for the unknown address"
    );
    assert_eq!(u.unwind(pid, c.regs, &c.stack), out);
    assert_eq!(
        u.stats().maps_reads,
        2,
        "not again for a page still unknown after a reading"
    );
}

/// What the signal handler captured.
static IN_HANDLER: Mutex<Option<Capture>> = Mutex::new(None);

#[inline(never)]
extern "C" fn on_signal(_: libc::c_int) {
    let c = capture();
    *IN_HANDLER.lock().unwrap() = Some(c);
}

#[test]
fn signal_frame_ends_the_path() {
    // SAFETY: installs a handler for SIGUSR2, which nothing else in the tests uses; raise()
    // runs it on this thread at once, outside any allocator call.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        assert_eq!(
            libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()),
            0
        );
        assert_eq!(libc::raise(libc::SIGUSR2), 0);
    }
    let c = IN_HANDLER.lock().unwrap().take().unwrap();
    let out = Unwinders::new(128).unwind(std::process::id(), c.regs, &c.stack);
    assert_eq!(out.state, StackState::Cut(Cut::Signal), "{out:x?}");
    assert_eq!(out.addrs, [c.regs.ip], "the handler's caller is the kernel");
}

/// Kills and reaps the child when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `prog args` and waits until it has run its program (its exe is no longer ours) and
/// its libc's code is mapped.
fn spawn(prog: &str, args: &[&str]) -> Reaped {
    let child = Reaped(
        Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    for _ in 0..200 {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        // The loader maps libc's read-only part before its code: wait for the code.
        let libc_code = maps
            .lines()
            .any(|l| l.contains("libc.so.6") && l.split_whitespace().nth(1) == Some("r-xp"));
        if maps.contains(prog) && libc_code {
            return child;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{prog} did not start");
}

#[test]
fn files_are_shared_between_processes_and_kept_a_while() {
    let python = spawn(
        "/usr/bin/python3.11",
        &["-c", "import time; time.sleep(30)"],
    );
    let pid = python.0.id();
    let mut u = Unwinders::new(128);
    u.watch(std::process::id());
    let own = u.files.len();
    u.watch(pid);
    let space = &u.spaces[&pid];
    let exe = space.mapped.iter().find(|m| m.cfi.is_some()).unwrap();
    let (file, bias) = exe.cfi.as_ref().unwrap();
    assert_eq!(*bias, 0, "Debian's python3.11 is not position-independent");
    assert!(file.has_cfi());
    // The same libc, parsed once.
    let libc = |pid: u32| {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let m = parse_mappings(&maps)
            .into_iter()
            .find(|m| m.executable && m.name.ends_with("/libc.so.6"))
            .unwrap();
        let (file, _) = u.spaces[&pid].find(m.start).unwrap().cfi.as_ref().unwrap();
        file.id
    };
    assert_eq!(libc(pid), libc(std::process::id()));
    let both = u.files.len();
    assert!(both > own, "python3.11 itself is new");
    u.forget(pid);
    assert_eq!(u.files.len(), both, "kept for a next python");
    assert!(!u.spaces.contains_key(&pid));
}

#[test]
fn only_exact_rules_are_followed() {
    let data = std::fs::read("/usr/bin/python3.11").unwrap();
    let elf = object::File::parse(&*data).unwrap();
    let file = CfiFile::read(1, std::fs::File::open("/usr/bin/python3.11").unwrap());
    assert!(file.has_cfi());
    let mut ctx = gimli::UnwindContext::new();
    let address = |name: &str| {
        elf.dynamic_symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap()
            .address()
    };
    // A function's body: the CFA at `rsp + 8n`, the return address below it.
    assert_eq!(
        file.verdict(address("Py_Initialize") + 1, &mut ctx),
        Verdict::Step
    );
    // `_start`: the return address is undefined.
    assert_eq!(file.verdict(elf.entry() + 1, &mut ctx), Verdict::Outermost);
    // A PLT stub: the CFA is an expression, which framehop would evaluate and, failing,
    // replace by the frame-pointer chain.
    let plt = elf.section_by_name(".plt").unwrap().address();
    assert_eq!(file.verdict(plt + 0x10 + 8, &mut ctx), Verdict::NoCfi);
    // No FDE covers the ELF header.
    assert_eq!(file.verdict(0x40_0000, &mut ctx), Verdict::NoCfi);
    // Debian's python3.11 is not position-independent: the bias of its code mapping is 0.
    let (offset, _, vaddr) = file.code[0];
    assert_eq!(file.bias(vaddr & !0xfff, offset & !0xfff), Some(0));
}

#[test]
fn frame_pointers_of_builds() {
    let dir = std::env::temp_dir().join(format!("muppy-unwind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("fp.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline)) long a(long n) { char *p = malloc(n); p[0] = 1; long r = p[n / 2]; free(p); return r + n; }
__attribute__((noinline)) long b(long n) { return a(n + 1) * 3 + a(n); }
__attribute__((noinline)) long c(long n) { return b(n + 2) - b(n); }
__attribute__((noinline)) long d(long n) { return c(n) + printf("%ld\n", n); }
__attribute__((noinline)) long e(long n) { return d(n) ^ c(n + 1); }
int main(int argc, char **argv) { (void)argv; return (int)e(argc + 40); }
"#,
    )
    .unwrap();
    for (flag, kept) in [
        ("-fomit-frame-pointer", false),
        ("-fno-omit-frame-pointer", true),
    ] {
        let exe = dir.join(flag.trim_start_matches('-'));
        // cc comes with `cargo xtask setup` (gcc): a test that skipped without it could not fail.
        let built = Command::new("cc")
            .args(["-O2", flag, "-o"])
            .arg(&exe)
            .arg(&src)
            .status();
        assert!(built.as_ref().is_ok_and(|s| s.success()), "cc: {built:?}");
        let fp = frame_pointers(&exe).unwrap();
        assert_eq!(fp.kept(), kept, "{flag}: {fp:?}");
        assert!(fp.fdes >= 6, "{flag}: {fp:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let python = frame_pointers(Path::new("/usr/bin/python3.11")).unwrap();
    assert!(!python.kept(), "{python:?}");
    assert!(python.fdes > 9000, "{python:?}");
    assert_eq!(frame_pointers(Path::new("/etc/hostname")), None);
}

#[test]
fn unwinders_move_to_the_ring_thread() {
    fn send<T: Send>() {}
    send::<Unwinders>();
}
