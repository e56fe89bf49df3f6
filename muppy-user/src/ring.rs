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
    EVENT_SIZE, Event, EventKind, FREE_EVENT_SIZE, FreeEvent, MAP_EVENT_SIZE, MapEvent,
};

use crate::clock::Ticks;

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: u64 = 8;
/// Records consumed between two publications of the consumer position.
const PUBLISH_EVERY: usize = 512;

/// Decodes one ring record, an [`Event`], a [`FreeEvent`] or a [`MapEvent`] (told apart by
/// length; the short form also carries process exec and exit); `None` if it is none of them.
pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() == MAP_EVENT_SIZE {
        // SAFETY: the length is checked; MapEvent is plain integers.
        let m = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<MapEvent>()) };
        return Some(Event {
            kind: m.kind,
            pid: m.pid,
            tid: m.tid,
            addr: m.addr,
            old_addr: m.old_addr,
            size: m.len,
            caller: m.caller,
            old_len: m.old_len,
            ts_ns: m.ts_ns,
            stack: muppy_common::NO_STACK,
            ..Event::default()
        });
    }
    if bytes.len() >= EVENT_SIZE {
        // SAFETY: the length is checked, Event is plain integers, and the read tolerates any
        // alignment.
        return Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) });
    }
    if bytes.len() < FREE_EVENT_SIZE {
        return None;
    }
    // SAFETY: as above, for the shorter struct.
    let f = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FreeEvent>()) };
    match EventKind::from_u32(f.kind)? {
        EventKind::Free => Some(Event {
            kind: f.kind,
            func: muppy_common::AllocFn::Free as u32,
            pid: f.pid,
            addr: f.addr,
            caller: f.caller,
            stack: muppy_common::NO_STACK,
            ..Event::default()
        }),
        // A ProcEvent: its name's bytes travel in addr and caller.
        EventKind::Exec | EventKind::Exit => Some(Event {
            kind: f.kind,
            pid: f.pid,
            addr: f.addr,
            caller: f.caller,
            stack: muppy_common::NO_STACK,
            ..Event::default()
        }),
        _ => None,
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

    /// Hands every committed event to `sink`, in ring order; returns how many.
    pub fn drain(&mut self, mut sink: impl FnMut(&Event)) -> usize {
        let data = self
            .producer
            .addr
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(self.page);
        let mut cons = self.consumer_pos().load(Ordering::Relaxed);
        let mut prod = self.producer_pos().load(Ordering::Acquire);
        let mut n = 0;
        let mut unpublished = 0;
        loop {
            if cons >= prod {
                prod = self.producer_pos().load(Ordering::Acquire);
                if cons >= prod {
                    break;
                }
            }
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
                if let Some(mut ev) = decode(bytes) {
                    if let Some(t) = &self.ticks
                        && ev.ts_ns != 0
                    {
                        ev.ts_ns = t.ns(ev.ts_ns);
                    }
                    sink(&ev);
                    n += 1;
                }
            }
            cons += (u64::from(len) + HEADER + 7) & !7;
            unpublished += 1;
            if unpublished == PUBLISH_EVERY {
                self.consumer_pos().store(cons, Ordering::Release);
                unpublished = 0;
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

    #[test]
    fn decodes_unaligned_records_and_rejects_short_ones() {
        let ev = Event {
            kind: 1,
            func: 2,
            pid: 3,
            tid: 4,
            addr: 5,
            old_addr: 6,
            size: 7,
            caller: 8,
            old_len: 9,
            ts_ns: 10,
            stack: 11,
            flags: 12,
        };
        // SAFETY: viewing a plain-integer struct as bytes.
        let raw = unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), EVENT_SIZE) };
        let mut buf = vec![0u8; 1];
        buf.extend_from_slice(raw);
        assert_eq!(decode(&buf[1..]), Some(ev));
        assert_eq!(decode(&buf[1..FREE_EVENT_SIZE]), None);
        let free = FreeEvent {
            kind: EventKind::Free as u32,
            pid: 3,
            addr: 0x10,
            caller: 0x20,
        };
        // SAFETY: as above.
        let raw =
            unsafe { std::slice::from_raw_parts((&raw const free).cast::<u8>(), FREE_EVENT_SIZE) };
        let ev = decode(raw).unwrap();
        assert_eq!((ev.kind, ev.pid, ev.addr, ev.caller), (2, 3, 0x10, 0x20));
    }
}
