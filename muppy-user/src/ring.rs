//! Reading events from the probes' ring buffer.

use aya::maps::{MapData, RingBuf};
use muppy_common::{EVENT_SIZE, Event};

/// Decodes one ring record; `None` if it is too short to be an [`Event`].
pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < EVENT_SIZE {
        return None;
    }
    // SAFETY: the length is checked, Event is plain integers, and the read tolerates any
    // alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// Hands every event waiting in `ring` to `sink`, in ring order; returns how many.
pub fn drain(ring: &mut RingBuf<MapData>, mut sink: impl FnMut(&Event)) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        if let Some(ev) = decode(&item) {
            sink(&ev);
            n += 1;
        }
    }
    n
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
            entry_ns: 9,
            ts_ns: 10,
            stack: 11,
            flags: 12,
        };
        // SAFETY: viewing a plain-integer struct as bytes.
        let raw = unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), EVENT_SIZE) };
        let mut buf = vec![0u8; 1];
        buf.extend_from_slice(raw);
        assert_eq!(decode(&buf[1..]), Some(ev));
        assert_eq!(decode(&buf[1..EVENT_SIZE]), None);
    }
}
