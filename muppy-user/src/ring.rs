//! Reading events from the probes' ring buffer.
//!
//! The ring is read through its own memory mapping, as the kernel lays it out for
//! `BPF_MAP_TYPE_RINGBUF`: a writable page holding the consumer position, then a read-only
//! page holding the producer position, then the data pages mapped twice in a row (so a record
//! that wraps is contiguous). Each record starts with an 8-byte header: its length, with a
//! busy bit while the producer is still writing it and a discard bit for a record given up.
//!
//! The consumer position is published every [`PUBLISH_EVERY`] records, not after each one:
//! the probes read it on every reserve, and a cache line written by the reader at every
//! record would bounce between the reader's CPU and each traced thread's.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use aya::maps::MapData;
use muppy_common::{
    AllocFn, EVENT_SIZE, EXIT_MAP_CUT, EXIT_MAPPING_SIZE, EventKind, ExitMapping, FREE_EVENT_SIZE,
    FreeEvent, MAP_EVENT_SIZE, MapEvent, ProcEvent, STACK_COPY, STACK_COPY_SIZE, STACK_FRAMES,
    STACK_FULL, STACK_LOST, STACK_PAGE, StackCopy,
};

use crate::{
    clock::Ticks,
    event::{Alloc, Change, Event, ExitMap, Free, HeapChange, MapChange},
    stacks::StackDecoder,
    table::StackRef,
};

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: u64 = 8;
/// Records consumed between two publications of the consumer position.
const PUBLISH_EVERY: usize = 512;

/// Decodes one ring record, a [`muppy_common::Event`] (with the stack its flags say follows
/// it), a [`FreeEvent`] or [`ProcEvent`] (the same length, told apart by kind) or a
/// [`MapEvent`] (told apart from the others by length), into what it means; `None` if it is
/// none of them. `ns` turns the probes' timestamps (non-zero ones) into `CLOCK_MONOTONIC` ns;
/// `stacks` interns the stacks. The only place the wire records are read.
pub fn decode(bytes: &[u8], ns: impl Fn(u64) -> u64, stacks: &mut StackDecoder) -> Option<Event> {
    let ts = |t: u64| if t != 0 { ns(t) } else { 0 };
    if bytes.len() == MAP_EVENT_SIZE {
        // SAFETY: the length is checked; MapEvent is plain integers.
        let m = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<MapEvent>()) };
        let ts_ns = ts(m.ts_ns);
        let change = match EventKind::from_u32(m.kind)? {
            EventKind::Mmap => MapChange::Mmap {
                addr: m.addr,
                len: m.len,
                caller: m.caller,
                ts_ns,
            },
            EventKind::Munmap => MapChange::Munmap {
                addr: m.addr,
                len: m.len,
                ts_ns,
            },
            EventKind::Mremap => MapChange::Mremap {
                old_addr: m.old_addr,
                old_len: m.old_len,
                addr: m.addr,
                len: m.len,
                ts_ns,
            },
            _ => return None,
        };
        return Some(Event::Change {
            pid: m.pid,
            change: Change::Map(change),
        });
    }
    if bytes.len() == EXIT_MAPPING_SIZE {
        // SAFETY: the length is checked; ExitMapping is plain integers and bytes.
        let m = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ExitMapping>()) };
        return Some(Event::ExitMapping {
            pid: m.pid,
            mapping: exit_map(&m),
        });
    }
    if bytes.len() >= EVENT_SIZE {
        // SAFETY: the length is checked, Event is plain integers, and the read tolerates any
        // alignment.
        let e = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<muppy_common::Event>()) };
        let block = Alloc {
            addr: e.addr,
            size: e.size,
            tid: e.tid,
            caller: e.caller,
            ts_ns: ts(e.ts_ns),
            stack: StackRef::Off,
        };
        let with_stack = |mut block: Alloc, stacks: &mut StackDecoder| {
            block.stack = stack_ref(&e, &bytes[EVENT_SIZE..], stacks);
            block
        };
        let change = match EventKind::from_u32(e.kind)? {
            EventKind::Alloc => HeapChange::Alloc(with_stack(block, stacks)),
            EventKind::Realloc => HeapChange::Realloc {
                old: e.old_addr,
                new: with_stack(block, stacks),
            },
            // Sent at a realloc's return (realloc(p, 0)), or by sampling for the old block of
            // a realloc.
            EventKind::Free => HeapChange::Free(Free {
                addr: e.addr,
                caller: e.caller,
                by_realloc: matches!(
                    AllocFn::from_u32(e.func),
                    Some(AllocFn::Realloc | AllocFn::Reallocarray)
                ),
                ts_ns: block.ts_ns,
            }),
            _ => return None,
        };
        return Some(Event::Change {
            pid: e.pid,
            change: Change::Heap(change),
        });
    }
    if bytes.len() < FREE_EVENT_SIZE {
        return None;
    }
    // SAFETY: as above, for the shorter struct.
    let f = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FreeEvent>()) };
    match EventKind::from_u32(f.kind)? {
        EventKind::Free => Some(Event::Change {
            pid: f.pid,
            change: Change::Heap(HeapChange::Free(Free {
                addr: f.addr,
                caller: f.caller,
                by_realloc: false,
                ts_ns: 0,
            })),
        }),
        kind @ (EventKind::Exec | EventKind::Exit) => {
            // SAFETY: ProcEvent has FreeEvent's length (asserted in muppy-common).
            let p = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ProcEvent>()) };
            let end = p.comm.iter().position(|&b| b == 0).unwrap_or(p.comm.len());
            let comm = String::from_utf8_lossy(&p.comm[..end]).into_owned();
            // Its mappings are gone or replaced: unwinding must read them again.
            stacks.forget(p.pid);
            Some(if kind == EventKind::Exec {
                Event::Exec { pid: p.pid, comm }
            } else {
                Event::Exit { pid: p.pid, comm }
            })
        }
        _ => None,
    }
}

/// An [`ExitMapping`] as user space uses it: the device numbered as `stat` does, the names
/// joined into a path.
fn exit_map(m: &ExitMapping) -> ExitMap {
    use std::os::unix::ffi::OsStrExt as _;
    let path = (m.depth & EXIT_MAP_CUT == 0).then(|| {
        let depth = usize::try_from(m.depth).unwrap_or(usize::MAX);
        let mut path = std::path::PathBuf::from("/");
        for name in m.names.iter().take(depth).rev() {
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            path.push(std::ffi::OsStr::from_bytes(&name[..end]));
        }
        path
    });
    ExitMap {
        start: m.start,
        end: m.end,
        offset: m.offset,
        // The kernel's dev_t: the major number above 20 bits of minor.
        dev: libc::makedev(m.dev >> 20, m.dev & 0xf_ffff),
        ino: m.ino,
        path,
    }
}

/// An allocation's stack, from the record's flags and what follows the event (`tail`). A
/// record shorter than its flags say is a stack lost, never a guess.
fn stack_ref(e: &muppy_common::Event, tail: &[u8], stacks: &mut StackDecoder) -> StackRef {
    let n = e.stack as usize;
    if e.flags & STACK_FRAMES != 0 {
        let Some(bytes) = tail.get(..n * 8) else {
            return StackRef::Lost;
        };
        let ips = bytes
            .chunks_exact(8)
            .map(|w| u64::from_ne_bytes(w.try_into().unwrap_or_default()));
        stacks.frames(e.pid, e.caller, ips, e.flags & STACK_FULL != 0)
    } else if e.flags & STACK_COPY != 0 {
        let Some(regs) = tail.get(..STACK_COPY_SIZE) else {
            return StackRef::Lost;
        };
        // SAFETY: the length is checked; StackCopy is plain integers.
        let regs = unsafe { std::ptr::read_unaligned(regs.as_ptr().cast::<StackCopy>()) };
        let pages = &tail[STACK_COPY_SIZE..];
        // The pages start at the one that holds the stack pointer; the copy is a page less
        // than the record holds, or ends with the last page read.
        let skip = usize::try_from(regs.sp % STACK_PAGE as u64).unwrap_or(0);
        let window = (pages.len() / STACK_PAGE).saturating_sub(1) * STACK_PAGE;
        let end = (n * STACK_PAGE).min(skip + window);
        let Some(stack) = pages.get(skip..end) else {
            return StackRef::Lost;
        };
        stacks.copy(e.pid, e.caller, regs.sp, regs.bp, stack)
    } else if e.flags & STACK_LOST != 0 {
        StackRef::Lost
    } else {
        StackRef::Off
    }
}

/// One memory mapping, unmapped on drop.
struct Mapping {
    addr: NonNull<libc::c_void>,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, offset: usize, prot: libc::c_int) -> io::Result<Self> {
        let off = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh shared mapping of the ring's fd; the kernel checks sizes and rights.
        let addr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, off) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            addr: NonNull::new(addr).ok_or(io::ErrorKind::InvalidData)?,
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.addr.as_ptr(), self.len) };
    }
}

/// The probes' ring buffer, mapped for reading.
pub struct Ring {
    consumer: Mapping,
    producer: Mapping,
    mask: u64,
    page: usize,
    /// Turns the probes' timestamps into ns, where they write ticks.
    ticks: Option<Ticks>,
    // Last: the maps are unmapped before the fd closes.
    map: MapData,
}

// SAFETY: the mappings belong to this value alone; the positions are accessed atomically.
unsafe impl Send for Ring {}

impl Ring {
    /// Maps the ring buffer `map`, whose data area is `size` bytes (a power of two). With
    /// `ticks`, the probes stamp events with tick counts, which [`Ring::drain`] turns into ns.
    pub fn new(map: MapData, size: u32, ticks: Option<Ticks>) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::ErrorKind::InvalidData)?;
        let size = size as usize;
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, 0, libc::PROT_READ | libc::PROT_WRITE)?;
        let producer = Mapping::new(fd, page + 2 * size, page, libc::PROT_READ)?;
        Ok(Self {
            consumer,
            producer,
            mask: size as u64 - 1,
            page,
            ticks,
            map,
        })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the first word of the consumer page, 8-byte aligned, shared with the kernel.
        unsafe { AtomicU64::from_ptr(self.consumer.addr.as_ptr().cast()) }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: the first word of the producer page.
        unsafe { AtomicU64::from_ptr(self.producer.addr.as_ptr().cast()) }
    }

    /// Hands every committed event to `sink`, in ring order, its stack interned by `stacks`;
    /// returns how many.
    pub fn drain(&mut self, stacks: &mut StackDecoder, mut sink: impl FnMut(Event)) -> usize {
        let data = self
            .producer
            .addr
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(self.page);
        let mut cons = self.consumer_pos().load(Ordering::Relaxed);
        // One pass takes what was written before it began, at most a ring's worth: producers
        // as fast as the reader would keep it here for ever, its batch growing while nothing
        // reaches the session (which then never ends a sync, nor its stop).
        let prod = self.producer_pos().load(Ordering::Acquire);
        let mut n = 0;
        let mut unpublished = 0;
        let mut unpublished_bytes = 0;
        while cons < prod {
            // Below `mask`, so it fits.
            #[expect(clippy::cast_possible_truncation, reason = "masked to the ring size")]
            let off = (cons & self.mask) as usize;
            // SAFETY: `off` lies in the first copy of the data area; the header is 8-aligned.
            let header = unsafe { AtomicU32::from_ptr(data.add(off).cast()) };
            let len_flags = header.load(Ordering::Acquire);
            if len_flags & BUSY != 0 {
                break; // still being written; the next drain gets it
            }
            let len = len_flags & !(BUSY | DISCARD);
            if len_flags & DISCARD == 0 {
                // SAFETY: the record lies within the double mapping (off < size, len < size).
                let bytes = unsafe { std::slice::from_raw_parts(data.add(off + 8), len as usize) };
                let ticks = self.ticks.as_ref();
                if let Some(ev) = decode(bytes, |t| ticks.map_or(t, |k| k.ns(t)), stacks) {
                    sink(ev);
                    n += 1;
                }
            }
            let step = (u64::from(len) + HEADER + 7) & !7;
            cons += step;
            unpublished += 1;
            unpublished_bytes += step;
            // Large records (stack copies) free their room sooner: an eighth of the ring.
            if unpublished == PUBLISH_EVERY || unpublished_bytes > self.mask / 8 {
                self.consumer_pos().store(cons, Ordering::Release);
                unpublished = 0;
                unpublished_bytes = 0;
            }
        }
        self.consumer_pos().store(cons, Ordering::Release);
        n
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: viewing a plain-integer struct as bytes.
        unsafe { std::slice::from_raw_parts((&raw const *v).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_unaligned_records_and_rejects_short_ones() {
        let ev = muppy_common::Event {
            kind: EventKind::Realloc as u32,
            func: AllocFn::Realloc as u32,
            pid: 3,
            tid: 4,
            addr: 5,
            old_addr: 6,
            size: 7,
            caller: 8,
            reserved: 0,
            ts_ns: 10,
            stack: 2,
            flags: STACK_FRAMES,
        };
        let mut buf = vec![0u8; 1];
        buf.extend_from_slice(&bytes(&ev));
        for ip in [8u64, 9] {
            buf.extend_from_slice(&ip.to_ne_bytes());
        }
        let store = std::sync::Arc::new(crate::stacks::StackStore::default());
        let mut stacks = StackDecoder::new(std::sync::Arc::clone(&store));
        let new = Alloc {
            addr: 5,
            size: 7,
            tid: 4,
            caller: 8,
            ts_ns: 20,
            stack: StackRef::Id(0),
        };
        assert_eq!(
            decode(&buf[1..], |t| t * 2, &mut stacks),
            Some(Event::Change {
                pid: 3,
                change: Change::Heap(HeapChange::Realloc { old: 6, new }),
            })
        );
        let path = store.get(0).unwrap();
        assert_eq!(path.addrs, vec![8, 9]);
        // A record shorter than its flags say keeps its event, without a stack.
        let Some(Event::Change {
            change: Change::Heap(HeapChange::Realloc { new, .. }),
            ..
        }) = decode(&buf[1..buf.len() - 8], |t| t, &mut stacks)
        else {
            panic!("not a realloc");
        };
        assert_eq!(new.stack, StackRef::Lost);
        assert_eq!(decode(&buf[1..FREE_EVENT_SIZE], |t| t, &mut stacks), None);
        let free = FreeEvent {
            kind: EventKind::Free as u32,
            pid: 3,
            addr: 0x10,
            caller: 0x20,
        };
        assert_eq!(
            decode(&bytes(&free), |t| t, &mut stacks),
            Some(Event::Change {
                pid: 3,
                change: Change::Heap(HeapChange::Free(Free {
                    addr: 0x10,
                    caller: 0x20,
                    by_realloc: false,
                    ts_ns: 0,
                })),
            })
        );
    }

    #[test]
    fn a_realloc_free_is_late_and_a_process_event_carries_its_name() {
        let ev = muppy_common::Event {
            kind: EventKind::Free as u32,
            func: AllocFn::Reallocarray as u32,
            addr: 0x10,
            ts_ns: 5,
            ..muppy_common::Event::default()
        };
        let mut stacks = StackDecoder::new(std::sync::Arc::default());
        let Some(Event::Change {
            change: Change::Heap(HeapChange::Free(f)),
            ..
        }) = decode(&bytes(&ev), |t| t, &mut stacks)
        else {
            panic!("not a free");
        };
        assert!(f.by_realloc && f.addr == 0x10 && f.ts_ns == 5);
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"make");
        let exec = ProcEvent {
            kind: EventKind::Exec as u32,
            pid: 9,
            comm,
        };
        assert_eq!(
            decode(&bytes(&exec), |t| t, &mut stacks),
            Some(Event::Exec {
                pid: 9,
                comm: "make".into()
            })
        );
        let munmap = MapEvent {
            kind: EventKind::Munmap as u32,
            pid: 9,
            addr: 0x1000,
            len: 0x2000,
            ts_ns: 3,
            ..MapEvent::default()
        };
        assert_eq!(
            decode(&bytes(&munmap), |t| t + 1, &mut stacks),
            Some(Event::Change {
                pid: 9,
                change: Change::Map(MapChange::Munmap {
                    addr: 0x1000,
                    len: 0x2000,
                    ts_ns: 4,
                }),
            })
        );
    }

    #[test]
    fn an_exit_mapping_joins_its_names_into_a_path_unless_cut() {
        let mut m = ExitMapping {
            pid: 7,
            // 8:1 as the kernel numbers it.
            dev: (8 << 20) | 1,
            start: 0x1000,
            end: 0x3000,
            offset: 0x2000,
            ino: 42,
            depth: 3,
            reserved: 0,
            names: [[0; muppy_common::EXIT_MAP_NAME]; muppy_common::EXIT_MAP_DEPTH],
        };
        for (slot, name) in m.names.iter_mut().zip(["blink", "bin", "usr", "stale"]) {
            slot[..name.len()].copy_from_slice(name.as_bytes());
        }
        let mut stacks = StackDecoder::new(std::sync::Arc::default());
        let expected = ExitMap {
            start: 0x1000,
            end: 0x3000,
            offset: 0x2000,
            dev: libc::makedev(8, 1),
            ino: 42,
            path: Some("/usr/bin/blink".into()),
        };
        assert_eq!(
            decode(&bytes(&m), |t| t, &mut stacks),
            Some(Event::ExitMapping {
                pid: 7,
                mapping: expected.clone(),
            })
        );
        // Names that stop short of the root make no path.
        m.depth |= EXIT_MAP_CUT;
        assert_eq!(
            decode(&bytes(&m), |t| t, &mut stacks),
            Some(Event::ExitMapping {
                pid: 7,
                mapping: ExitMap {
                    path: None,
                    ..expected
                },
            })
        );
    }
}
