//! Every selected live block, Pympler's `muppy.get_objects`.

use std::time::Duration;

use crate::model::{Filter, Heap, TraceId};

/// One live block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// Address.
    pub addr: u64,
    /// Bytes requested.
    pub size: u64,
    /// Time since it was allocated.
    pub age: Duration,
    /// The allocating thread.
    pub tid: u32,
    /// Index into the heap's traces.
    pub trace: TraceId,
}

/// The selected blocks, largest first, then oldest first, then by address.
pub fn objects(heap: &Heap, filter: &Filter) -> Vec<Object> {
    let mut v = Vec::new();
    heap.select(filter, &mut |addr, b, _| {
        v.push(Object {
            addr,
            size: b.size,
            age: heap.age(b),
            tid: b.tid,
            trace: b.trace,
        });
    });
    v.sort_by(|a, b| {
        b.size
            .cmp(&a.size)
            .then(b.age.cmp(&a.age))
            .then(a.addr.cmp(&b.addr))
    });
    v
}
