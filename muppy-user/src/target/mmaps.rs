//! The executable mappings a followed process makes, as the kernel reports them when it makes
//! them, so that an image's mappings are still known after an exec has replaced them.
//!
//! One perf "dummy" software event per followed process (`perf_event_open`, no sampling),
//! with `mmap`, `mmap2` and `comm_exec` records into a small ring buffer: the kernel writes a
//! record for each executable file mapping (ld.so loading libc, `dlopen`) and one at each exec,
//! synchronously, in the order they happen. Nothing is placed in the process, nothing stops it,
//! and the event goes away with its file descriptor. The event follows the process's main
//! thread (as `/proc/PID/maps` is read for it): a library mapped from another thread is missed
//! and named as before, from `/proc` while the process runs.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::symbols::MapsEntry;

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_DUMMY: u64 = 9;
const ATTR_SIZE: u32 = 112; // PERF_ATTR_SIZE_VER5
const FLAG_MMAP: u64 = 1 << 8;
const FLAG_COMM: u64 = 1 << 9;
const FLAG_MMAP2: u64 = 1 << 23;
const FLAG_COMM_EXEC: u64 = 1 << 24;
const RECORD_LOST: u32 = 2;
const RECORD_COMM: u32 = 3;
const RECORD_MMAP2: u32 = 10;
const MISC_COMM_EXEC: u16 = 1 << 13;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PAGE: usize = 4096;
/// Data pages (a power of two): 64 KiB, several hundred mapping records between two looks.
const DATA_PAGES: usize = 16;
/// `data_head` and `data_tail` in `struct perf_event_mmap_page`.
const HEAD: usize = 1024;
const TAIL: usize = 1032;

/// The mapping records of one process.
#[derive(Debug)]
pub struct MapWatch {
    fd: OwnedFd,
    base: *mut u8,
    tail: u64,
    /// The executable mappings its current image has made since the watch began.
    current: Vec<MapsEntry>,
    /// Records were lost (the buffer was full): the image's list is incomplete.
    lost: bool,
}

// SAFETY: the mapping is owned by the watch and used by one thread at a time.
unsafe impl Send for MapWatch {}

impl MapWatch {
    /// Starts watching `pid`'s main thread; `None` when perf events are not available (then
    /// old images are named as before).
    pub fn open(pid: i32) -> Option<Self> {
        let mut attr = [0u64; ATTR_SIZE as usize / 8];
        attr[0] = u64::from(PERF_TYPE_SOFTWARE) | (u64::from(ATTR_SIZE) << 32);
        attr[1] = PERF_COUNT_SW_DUMMY;
        attr[5] = FLAG_MMAP | FLAG_MMAP2 | FLAG_COMM | FLAG_COMM_EXEC;
        // SAFETY: perf_event_open reads ATTR_SIZE bytes of the attribute we own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                pid,
                -1,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        let fd = i32::try_from(fd).ok().filter(|&f| f >= 0)?;
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: maps the event's ring (one control page and DATA_PAGES data pages), shared
        // with the kernel, for as long as the watch lives (unmapped in Drop).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                (1 + DATA_PAGES) * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        Some(Self {
            fd,
            base: base.cast(),
            tail: 0,
            current: Vec::new(),
            lost: false,
        })
    }

    /// Reads what the kernel wrote since the last look. When an exec is among it, returns the
    /// executable mappings the image before the (latest) exec made, if any were seen and none
    /// were lost.
    pub fn before_exec(&mut self) -> Option<Vec<MapsEntry>> {
        let mut old = None;
        // SAFETY: data_head is a u64 in the control page, written by the kernel; read with
        // acquire ordering before the records it covers.
        let head = unsafe {
            (*self.base.add(HEAD).cast::<std::sync::atomic::AtomicU64>())
                .load(std::sync::atomic::Ordering::Acquire)
        };
        let size = (DATA_PAGES * PAGE) as u64;
        while self.tail + 8 <= head {
            let hdr = self.copy(self.tail, 8);
            let kind = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let misc = u16::from_ne_bytes([hdr[4], hdr[5]]);
            let len = u64::from(u16::from_ne_bytes([hdr[6], hdr[7]]));
            if len < 8 || self.tail + len > head || len > size {
                break;
            }
            let rec = self.copy(self.tail + 8, usize::try_from(len - 8).unwrap_or(0));
            self.tail += len;
            match kind {
                RECORD_MMAP2 => {
                    if let Some(e) = mmap2(&rec) {
                        self.current.push(e);
                    }
                }
                RECORD_COMM if misc & MISC_COMM_EXEC != 0 => {
                    let made = std::mem::take(&mut self.current);
                    old = (!made.is_empty() && !self.lost).then_some(made);
                    self.lost = false;
                }
                RECORD_LOST => self.lost = true,
                _ => {}
            }
        }
        // SAFETY: data_tail is a u64 in the control page that we own; release ordering so the
        // kernel sees it after our reads.
        unsafe {
            (*self.base.add(TAIL).cast::<std::sync::atomic::AtomicU64>())
                .store(self.tail, std::sync::atomic::Ordering::Release);
        }
        old
    }

    /// `len` bytes of the ring at position `at`, across its end.
    fn copy(&self, at: u64, len: usize) -> Vec<u8> {
        let size = DATA_PAGES * PAGE;
        let start = usize::try_from(at % size as u64).unwrap_or(0);
        (0..len)
            .map(|i| {
                // SAFETY: an index inside the data pages, which follow the control page.
                unsafe { *self.base.add(PAGE + (start + i) % size) }
            })
            .collect()
    }
}

impl Drop for MapWatch {
    fn drop(&mut self) {
        // SAFETY: unmapping what open mapped; the fd closes after.
        unsafe { libc::munmap(self.base.cast(), (1 + DATA_PAGES) * PAGE) };
        let _ = &self.fd;
    }
}

/// An executable file mapping from a `PERF_RECORD_MMAP2` body: pid, tid, addr, len, pgoff,
/// device and inode fields (24 bytes), prot, flags, then the file name.
fn mmap2(rec: &[u8]) -> Option<MapsEntry> {
    let u64_at = |o: usize| Some(u64::from_ne_bytes(rec.get(o..o + 8)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_ne_bytes(rec.get(o..o + 4)?.try_into().ok()?));
    let (addr, len, pgoff) = (u64_at(8)?, u64_at(16)?, u64_at(24)?);
    let prot = u32_at(56)?;
    let name = rec.get(64..)?;
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    let path = String::from_utf8_lossy(name).into_owned();
    if prot & libc::PROT_EXEC as u32 == 0 || !path.starts_with('/') {
        return None;
    }
    Some(MapsEntry {
        start: addr,
        end: addr + len,
        offset: pgoff,
        path,
        file_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_an_executable_file_mapping_as_it_is_made() {
        let tid = nix::unistd::gettid().as_raw();
        let Some(mut watch) = MapWatch::open(tid) else {
            // Without root there are no perf events to open; where eBPF tests must run, this
            // must too.
            assert!(
                std::env::var_os("MUPPY_REQUIRE_EBPF").is_none(),
                "no perf events here, and MUPPY_REQUIRE_EBPF is set"
            );
            return;
        };
        let file = std::fs::File::open("/bin/sh").expect("/bin/sh");
        // SAFETY: a private read-only executable mapping of a file we opened, unmapped below.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED);
        assert_eq!(watch.before_exec(), None, "no exec happened");
        // SAFETY: unmapping the mapping made above.
        unsafe { libc::munmap(at, 4096) };
        let seen = watch.current.iter().find(|e| e.start == at as u64);
        let seen = seen.unwrap_or_else(|| panic!("not recorded: {:?}", watch.current));
        assert_eq!(seen.end, at as u64 + 4096);
        assert_eq!(seen.offset, 0);
        assert!(
            seen.path.ends_with("sh") || seen.path.contains("/bin/"),
            "{seen:?}"
        );
    }
}
