//! Reading a target's memory from outside, in large pieces, with `process_vm_readv`.
//!
//! Needs no ptrace stop, only the right to trace the process (root here); to read a
//! consistent image, freeze the process first ([`super::Tracer::freeze`]). Holes (unmapped
//! pages, `PROT_NONE` guards, `[vvar]`, device mappings) are reported, never an error.

use std::{collections::HashMap, ops::Range};

use nix::errno::Errno;

use super::TargetError;

/// The biggest piece one `process_vm_readv` asks for: 1 MiB reads run at ≈6 GB/s warm (see
/// the research notes), and a fault costs at most one piece's retry.
const PIECE: u64 = 1 << 20;
const PAGE: u64 = 4096;
/// Ranges from this size up are read by two threads.
const PARALLEL: usize = 64 << 20;

/// What was read of one requested range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memory {
    /// The range asked for.
    pub range: Range<u64>,
    /// Its bytes: `range.end - range.start` of them, zero where `unreadable`.
    pub bytes: Vec<u8>,
    /// The parts that could not be read, in address order, page-aligned inside `range`.
    pub unreadable: Vec<Range<u64>>,
}

impl Memory {
    /// The bytes at `addr..addr + len`, if all of them lie in the range and were read.
    pub fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let end = addr.checked_add(u64::try_from(len).ok()?)?;
        if addr < self.range.start || end > self.range.end {
            return None;
        }
        if self
            .unreadable
            .iter()
            .any(|h| h.start < end && addr < h.end)
        {
            return None;
        }
        let at = usize::try_from(addr - self.range.start).ok()?;
        self.bytes.get(at..at + len)
    }

    /// How many bytes were read.
    pub fn readable_len(&self) -> u64 {
        let holes: u64 = self.unreadable.iter().map(|h| h.end - h.start).sum();
        (self.range.end - self.range.start) - holes
    }
}

/// The parts of `range` (page-aligned, in `pid`'s private anonymous memory) whose pages exist:
/// in memory or swapped out, as `/proc/PID/pagemap` tells. A page of private anonymous memory
/// that does not exist was never written: it reads as zeros and holds no pointer, so a copy
/// can leave it out (a thread's 8 MiB stack mostly, or memory reserved and never used). Where
/// the page map cannot be read, the whole range.
pub fn present(pid: u32, range: Range<u64>) -> Vec<Range<u64>> {
    use std::os::unix::fs::FileExt as _;
    let whole = || vec![range.clone()];
    let Ok(map) = std::fs::File::open(format!("/proc/{pid}/pagemap")) else {
        return whole();
    };
    let mut runs: Vec<Range<u64>> = Vec::new();
    // 64 KiB of entries at a time: 32 MiB of memory.
    let mut entries = vec![0u8; 64 << 10];
    let mut page = range.start / PAGE;
    let end = range.end.div_ceil(PAGE);
    while page < end {
        let n = usize::try_from(end - page)
            .unwrap_or(usize::MAX)
            .min(entries.len() / 8);
        let buf = &mut entries[..n * 8];
        if map.read_exact_at(buf, page * 8).is_err() {
            return whole();
        }
        for (i, e) in buf.chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes(e.try_into().unwrap_or_default());
            // Bit 63: present; bit 62: swapped.
            if e >> 62 == 0 {
                continue;
            }
            let at = (page + i as u64) * PAGE;
            match runs.last_mut() {
                Some(r) if r.end == at => r.end = at + PAGE,
                _ => runs.push(at..at + PAGE),
            }
        }
        page += n as u64;
    }
    runs
}

/// Zeroed buffers made ready before a read, their pages already in place, by the start of the
/// range each is for. Faulting a fresh page in costs ≈2-4 µs here, 0.5-1 s a GiB: made ready
/// before a freeze, the pause is the copy alone.
#[derive(Debug, Default)]
pub struct Buffers(HashMap<u64, Vec<u8>>);

impl Buffers {
    /// Buffers for `ranges`, their pages populated. A range too large to hold is left out
    /// (the read fails on it as it would without).
    pub fn prepare(ranges: &[Range<u64>]) -> Self {
        Buffers(
            ranges
                .iter()
                .filter_map(|r| {
                    let mut b = zeroed(usize::try_from(r.end.checked_sub(r.start)?).ok()?)?;
                    populate(&mut b);
                    Some((r.start, b))
                })
                .collect(),
        )
    }

    /// The buffer for `range`: the one made for its start, grown or cut to its length, or a
    /// new one.
    fn take(&mut self, range: &Range<u64>, len: usize) -> Option<Vec<u8>> {
        match self.0.remove(&range.start) {
            Some(mut b) => {
                b.resize(len, 0);
                Some(b)
            }
            None => zeroed(len),
        }
    }
}

/// Faults in every page of `b` now, writable: the whole pages inside it in one call where the
/// kernel can (Linux 5.14); the rest, and everything on an older kernel, a write per page.
/// (Asking for 2 MiB pages made it slower here: the kernel compacts memory to find them.)
fn populate(b: &mut [u8]) {
    let start = b.as_mut_ptr() as usize;
    let end = start + b.len();
    let (inner, inner_end) = (start.next_multiple_of(4096), end & !4095);
    let mut done = 0..0;
    if inner < inner_end {
        // SAFETY: advice on whole pages of memory we own; it changes no byte (the pages are
        // zero either way), and failure leaves the default.
        unsafe {
            let len = inner_end - inner;
            if libc::madvise(inner as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) == 0 {
                done = inner - start..inner_end - start;
            }
        }
    }
    for i in (0..b.len())
        .step_by(4096)
        .chain([b.len().saturating_sub(1)])
    {
        if !done.contains(&i) {
            // SAFETY: `i` is inside `b`; volatile, so that the write is not left out.
            unsafe { std::ptr::write_volatile(b.as_mut_ptr().add(i), 0) };
        }
    }
}

/// Reads each of `ranges` from `pid`'s memory. A range that reaches past the address space,
/// or is larger than this process can hold, is an error; unreadable pages inside a range are
/// listed in [`Memory::unreadable`] and left as zeros.
pub fn read(pid: u32, ranges: &[Range<u64>]) -> Result<Vec<Memory>, TargetError> {
    read_into(pid, ranges, &mut Buffers::default())
}

/// [`read`], into `buffers` made ready beforehand where they fit.
pub fn read_into(
    pid: u32,
    ranges: &[Range<u64>],
    buffers: &mut Buffers,
) -> Result<Vec<Memory>, TargetError> {
    let target = i32::try_from(pid).map_err(|_| TargetError::NoSuchProcess { pid })?;
    ranges
        .iter()
        .map(|r| read_range(target, pid, r.clone(), buffers))
        .collect()
}

fn read_range(
    target: i32,
    pid: u32,
    range: Range<u64>,
    buffers: &mut Buffers,
) -> Result<Memory, TargetError> {
    let len = range
        .end
        .checked_sub(range.start)
        .and_then(|l| usize::try_from(l).ok())
        .ok_or(TargetError::BadRange {
            start: range.start,
            end: range.end,
        })?;
    let mut bytes = buffers.take(&range, len).ok_or(TargetError::BadRange {
        start: range.start,
        end: range.end,
    })?;
    // A large range is read by two threads, half each: the copy is the target's pause, and
    // one thread does not use all the memory bandwidth there is.
    let parts = if len >= PARALLEL { 2 } else { 1 };
    let half = (len / parts).next_multiple_of(1 << 20).min(len);
    let (first, second) = bytes.split_at_mut(half);
    let mid = range.start + half as u64;
    let (a, b) = std::thread::scope(|s| {
        let b = (!second.is_empty()).then(|| s.spawn(|| read_part(target, pid, second, mid)));
        let a = read_part(target, pid, first, range.start);
        (a, b.map(|h| h.join().unwrap_or(Ok(Vec::new()))))
    });
    let mut unreadable = a?;
    if let Some(b) = b {
        for h in b? {
            match unreadable.last_mut() {
                Some(last) if last.end == h.start => last.end = h.end,
                _ => unreadable.push(h),
            }
        }
    }
    Ok(Memory {
        range,
        bytes,
        unreadable,
    })
}

/// `len` zero bytes, or `None` if they cannot be had. Large ones come from fresh pages the
/// kernel zeroes as they are first written, not by a pass over them.
fn zeroed(len: usize) -> Option<Vec<u8>> {
    if len == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u8>(len).ok()?;
    // SAFETY: the layout has a non-zero size; a null return is checked.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` was allocated by the global allocator with this layout (u8, capacity
    // `len`), and all `len` bytes are initialized (zero).
    Some(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Reads `buf.len()` bytes at `base` into `buf`, 1 MiB at a time; returns the page-aligned
/// parts that could not be read, in address order (left as zeros).
fn read_part(
    target: i32,
    pid: u32,
    buf: &mut [u8],
    base: u64,
) -> Result<Vec<Range<u64>>, TargetError> {
    let end = base + buf.len() as u64;
    let mut unreadable: Vec<Range<u64>> = Vec::new();
    let mut at = base;
    while at < end {
        let piece_end = end.min((at / PIECE + 1) * PIECE);
        let n = read_some(target, pid, at, buf, base, piece_end)?;
        at += n;
        if at < piece_end {
            // A fault at `at`: that page cannot be read. Skip to the next page.
            let hole_end = end.min((at / PAGE + 1) * PAGE);
            match unreadable.last_mut() {
                Some(h) if h.end == at => h.end = hole_end,
                _ => unreadable.push(at..hole_end),
            }
            at = hole_end;
        }
    }
    Ok(unreadable)
}

/// Reads from `at` up to `end` (one piece) into `buf` (which starts at `base`); returns how
/// many bytes were read before the first fault (0 when the first page faults).
fn read_some(
    target: i32,
    pid: u32,
    at: u64,
    buf: &mut [u8],
    base: u64,
    end: u64,
) -> Result<u64, TargetError> {
    let from = usize::try_from(at - base).unwrap_or(usize::MAX);
    let to = usize::try_from(end - base).unwrap_or(usize::MAX);
    let Some(local) = buf.get_mut(from..to) else {
        return Ok(0);
    };
    let local_iov = libc::iovec {
        iov_base: local.as_mut_ptr().cast(),
        iov_len: local.len(),
    };
    let remote_iov = libc::iovec {
        iov_base: usize::try_from(at).unwrap_or(usize::MAX) as *mut libc::c_void,
        iov_len: local.len(),
    };
    loop {
        // SAFETY: one local iovec over `local`, which we borrow mutably for the call; the
        // remote one is only an address in the target, checked by the kernel.
        let n = unsafe {
            libc::process_vm_readv(target, &raw const local_iov, 1, &raw const remote_iov, 1, 0)
        };
        let r = if n < 0 { Err(Errno::last()) } else { Ok(n) };
        match r {
            // The kernel stops at the first page it cannot read and says how far it got.
            Ok(n) => return Ok(u64::try_from(n).unwrap_or(0)),
            Err(Errno::EFAULT | Errno::EIO) => return Ok(0),
            Err(Errno::EINTR) => {}
            Err(Errno::ESRCH) => return Err(TargetError::NoSuchProcess { pid }),
            Err(errno) => {
                return Err(TargetError::Sys {
                    call: "process_vm_readv",
                    errno,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_reports_holes() {
        // SAFETY: a fresh private anonymous mapping of three pages, unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                3 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: writing inside the mapping, then making its middle page unreadable.
        unsafe {
            std::ptr::write_bytes(base.cast::<u8>(), 0xab, 3 * 4096);
            assert_eq!(
                libc::mprotect(base.byte_add(4096), 4096, libc::PROT_NONE),
                0
            );
        }
        let start = base as u64;
        let wanted = std::iter::once(start + 10..start + 3 * 4096 - 10).collect::<Vec<_>>();
        let r = read(std::process::id(), &wanted);
        // SAFETY: unmapping what was mapped above.
        unsafe { libc::munmap(base, 3 * 4096) };
        let m = &r.unwrap()[0];
        assert_eq!(m.unreadable, vec![start + 4096..start + 2 * 4096]);
        assert_eq!(m.get(start + 10, 4), Some(&[0xab; 4][..]));
        assert_eq!(m.get(start + 2 * 4096, 4), Some(&[0xab; 4][..]));
        assert_eq!(m.get(start + 4096 + 8, 4), None);
        assert_eq!(m.readable_len(), 3 * 4096 - 20 - 4096);
    }

    #[test]
    fn a_backwards_range_is_an_error() {
        let (start, end) = (10, 5);
        assert!(matches!(
            read(std::process::id(), std::slice::from_ref(&(start..end))),
            Err(TargetError::BadRange { .. })
        ));
    }
}
