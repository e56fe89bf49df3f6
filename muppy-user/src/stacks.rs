//! Call paths of allocations, owned by user space: the probes send each stack in its event's
//! record (the frame-pointer walk's return addresses, or a copy of the stack that
//! [`crate::unwind`] unwinds), the ring thread turns it into a [`CallPath`] and interns it in
//! the [`StackStore`], and the event carries only the path's id. Nothing in the kernel keeps
//! stacks, so none is ever evicted, reused or mis-attributed however long the run.

use std::{
    collections::HashMap,
    hash::{Hash as _, Hasher as _},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use muppy_common::{CodeRanges, MAX_CODE_RANGES};
use muppy_core::model::{Cut, StackState};

use crate::{
    table::{AddrHasher, FastHash, StackRef, TraceKey},
    unwind::{FramePointers, Regs, Unwinders, frame_pointers},
};

/// Frames a call path keeps at most; deeper ones are cut, and say so.
pub const MAX_FRAMES: usize = 128;

/// A call path as return addresses, innermost (the allocation site) first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallPath {
    /// Return addresses; `addrs[0]` is the caller of the allocator.
    pub addrs: Vec<u64>,
    /// How complete the path is.
    pub state: StackState,
}

/// Every call path the ring thread has seen, by id, and what the session tells that thread
/// about processes.
#[derive(Debug, Default)]
pub struct StackStore {
    paths: Mutex<Vec<Arc<CallPath>>>,
    notices: Mutex<Vec<Notice>>,
    /// `/proc/PID/maps` texts the unwinders read, for the session's names.
    maps: Mutex<Vec<(u32, String)>>,
    /// Stack copies unwound (the unwinders' count, published after each batch).
    pub copies: AtomicU64,
    /// Bytes of stack they held.
    pub copied_bytes: AtomicU64,
    /// Time spent unwinding them, in ns.
    pub unwind_ns: AtomicU64,
    /// Frames the unwinding produced.
    pub unwound_frames: AtomicU64,
}

/// What the session tells the ring thread's unwinders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Tracing of this process began: read its mappings now, while it is surely there.
    Watch(u32),
    /// This process ended (or exec'd): its mappings are gone.
    Forget(u32),
}

impl StackStore {
    /// The path with id `id`.
    pub fn get(&self, id: u32) -> Option<Arc<CallPath>> {
        let paths = self.paths.lock().unwrap_or_else(PoisonError::into_inner);
        paths.get(id as usize).cloned()
    }

    /// Distinct call paths so far.
    pub fn len(&self) -> usize {
        self.paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no path was seen yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `/proc/PID/maps` texts the ring thread read since the last call: read at a
    /// process's first stack, they may hold libraries the process had mapped then and has
    /// not since (it exec'd), which the session's names need.
    pub fn take_maps(&self) -> Vec<(u32, String)> {
        std::mem::take(&mut *self.maps.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Passes `n` to the ring thread, which acts on it before its next events.
    pub fn tell(&self, n: Notice) {
        self.notices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(n);
    }
}

/// The ring thread's side: turns the stacks in records into interned paths.
pub struct StackDecoder {
    store: Arc<StackStore>,
    /// Ids by a hash of their path (several where hashes collide), and the paths, kept here
    /// too so that a path seen before costs a hash and a compare, no lock and no allocation.
    ids: HashMap<u64, Vec<u32>, FastHash>,
    paths: Vec<Arc<CallPath>>,
    /// The path being decoded.
    scratch: Vec<u64>,
    unwinders: Unwinders,
}

impl StackDecoder {
    /// A decoder adding to `store`.
    pub fn new(store: Arc<StackStore>) -> Self {
        Self {
            store,
            ids: HashMap::default(),
            paths: Vec::new(),
            scratch: Vec::new(),
            unwinders: Unwinders::new(MAX_FRAMES),
        }
    }

    /// Acts on what the session said since the last call.
    pub fn heed(&mut self) {
        let notices = std::mem::take(
            &mut *self
                .store
                .notices
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for n in notices {
            match n {
                Notice::Watch(pid) => self.unwinders.watch(pid),
                Notice::Forget(pid) => self.unwinders.forget(pid),
            }
        }
    }

    /// Hands the session what it reads of this thread's work, after each batch of records:
    /// the maps the unwinders read (which may hold libraries a process had mapped then and has
    /// not since) and the unwinders' counters.
    pub fn publish(&mut self) {
        let read = self.unwinders.take_maps();
        let s = &self.store;
        if !read.is_empty() {
            s.maps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(read);
        }
        let st = self.unwinders.stats();
        s.copies.store(st.stacks, Ordering::Relaxed);
        s.unwind_ns.store(st.ns, Ordering::Relaxed);
        s.unwound_frames.store(st.frames, Ordering::Relaxed);
    }

    /// Process `pid` exec'd or ended: its mappings are gone or replaced.
    pub fn forget(&mut self, pid: u32) {
        self.unwinders.forget(pid);
    }

    /// The frame-pointer walk's return addresses `ips` of an allocation by `caller` (the
    /// walk's first address, which it starts at the return probe's instruction pointer);
    /// `full` if the walk filled its record and may have gone on.
    pub fn frames(
        &mut self,
        caller: u64,
        ips: impl IntoIterator<Item = u64>,
        full: bool,
    ) -> StackRef {
        let mut addrs = std::mem::take(&mut self.scratch);
        addrs.clear();
        addrs.push(caller);
        let mut ips = ips.into_iter().peekable();
        ips.next_if_eq(&caller);
        addrs.extend(ips.by_ref().take(MAX_FRAMES - 1));
        let state = if full || ips.next().is_some() {
            StackState::Cut(Cut::Depth)
        } else {
            StackState::Walked
        };
        let id = self.intern(&addrs, state);
        self.scratch = addrs;
        id
    }

    /// A copy of process `pid`'s stack at an allocation by `caller`: `stack` holds the bytes
    /// from `sp` up.
    pub fn copy(&mut self, pid: u32, caller: u64, sp: u64, bp: u64, stack: &[u8]) -> StackRef {
        let u = self
            .unwinders
            .unwind(pid, Regs { ip: caller, sp, bp }, stack);
        self.store
            .copied_bytes
            .fetch_add(stack.len() as u64, Ordering::Relaxed);
        let mut addrs = u.addrs;
        // The site is the caller the probe saw, whatever the unwinding made of it.
        match addrs.first_mut() {
            Some(first) => *first = caller,
            None => addrs.push(caller),
        }
        self.intern(&addrs, u.state)
    }

    fn intern(&mut self, addrs: &[u64], state: StackState) -> StackRef {
        let mut h = AddrHasher::default();
        addrs.hash(&mut h);
        state.hash(&mut h);
        let hash = h.finish();
        let same = |&id: &u32| {
            let p = &self.paths[id as usize];
            p.addrs == addrs && p.state == state
        };
        if let Some(&id) = self
            .ids
            .get(&hash)
            .and_then(|ids| ids.iter().find(|id| same(id)))
        {
            return StackRef::Id(id);
        }
        let path = Arc::new(CallPath {
            addrs: addrs.to_vec(),
            state,
        });
        let id = u32::try_from(self.paths.len()).unwrap_or(u32::MAX);
        self.paths.push(Arc::clone(&path));
        self.store
            .paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(path);
        self.ids.entry(hash).or_default().push(id);
        StackRef::Id(id)
    }
}

/// `--unwind auto`: which code keeps frame pointers, decided once per module from its call
/// frame information. The probes walk the frame pointers of allocations called from that code
/// and copy the stack of every other (code without frame pointers, and any module loaded
/// after the decision, which copying handles whatever it is).
#[derive(Debug, Default)]
pub struct FpCode {
    files: HashMap<String, Option<FramePointers>>,
}

impl FpCode {
    /// The executable mappings of process `pid` whose module keeps frame pointers, and the
    /// modules decided for the first time (to say under `--verbose`). `None` if the process
    /// is gone.
    pub fn of(&mut self, pid: u32) -> Option<(CodeRanges, Vec<(String, FramePointers)>)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let mut code = CodeRanges {
            n: 0,
            ranges: [[0; 2]; MAX_CODE_RANGES],
        };
        let mut decided = Vec::new();
        let mut n = 0;
        for m in crate::symbols::parse_maps(&text) {
            let fp = self.files.entry(m.path.clone()).or_insert_with(|| {
                let how = frame_pointers(&crate::probe::openable(pid, &m.path));
                if let Some(h) = &how {
                    decided.push((m.path.clone(), h.clone()));
                }
                how
            });
            // Past the cap the rest is copied: slower, never wrong.
            if fp.as_ref().is_some_and(FramePointers::kept) && n < MAX_CODE_RANGES {
                code.ranges[n] = [m.start, m.end];
                n += 1;
            }
        }
        code.n = n as u64;
        Some((code, decided))
    }
}

/// The session's side: the call path of a trace key.
#[derive(Clone, Debug, Default)]
pub struct StackReader {
    store: Arc<StackStore>,
}

impl StackReader {
    /// A reader over `store`.
    pub fn new(store: Arc<StackStore>) -> Self {
        Self { store }
    }

    /// The store it reads.
    pub fn store(&self) -> &Arc<StackStore> {
        &self.store
    }

    /// The call path of `key`: its caller, then the frames above it.
    pub fn path(&self, key: &TraceKey) -> CallPath {
        let site_only = |state| CallPath {
            addrs: vec![key.caller],
            state,
        };
        match key.stack {
            StackRef::Off => site_only(StackState::Off),
            StackRef::Lost => site_only(StackState::Lost),
            StackRef::Id(id) => self
                .store
                .get(id)
                .map_or_else(|| site_only(StackState::Lost), |p| (*p).clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_are_interned_from_their_caller_and_say_when_cut() {
        let store = Arc::new(StackStore::default());
        let mut d = StackDecoder::new(Arc::clone(&store));
        let r = StackReader::new(Arc::clone(&store));
        let a = d.frames(0x10, [0x10, 0x20, 0x30], false);
        // The same path again, as the walk gives it or without its first address.
        assert_eq!(d.frames(0x10, [0x10, 0x20, 0x30], false), a);
        assert_eq!(d.frames(0x10, [0x20, 0x30], false), a);
        let key = |stack| TraceKey {
            caller: 0x10,
            stack,
        };
        let p = r.path(&key(a));
        assert_eq!(
            (p.addrs, p.state),
            (vec![0x10, 0x20, 0x30], StackState::Walked)
        );
        let full = d.frames(0x10, [0x10, 0x20, 0x30], true);
        assert_ne!(full, a);
        assert_eq!(r.path(&key(full)).state, StackState::Cut(Cut::Depth));
        assert_eq!(store.len(), 2);
        let lost = r.path(&key(StackRef::Lost));
        assert_eq!((lost.addrs, lost.state), (vec![0x10], StackState::Lost));
        assert_eq!(r.path(&key(StackRef::Id(99))).state, StackState::Lost);
    }

    #[test]
    fn a_deep_walk_keeps_the_innermost_frames() {
        let store = Arc::new(StackStore::default());
        let mut d = StackDecoder::new(Arc::clone(&store));
        let StackRef::Id(id) = d.frames(1, 1..=200, false) else {
            panic!("not interned");
        };
        let p = store.get(id).unwrap();
        assert_eq!(p.addrs.len(), MAX_FRAMES);
        assert_eq!(p.addrs[..3], [1, 2, 3]);
        assert_eq!(p.state, StackState::Cut(Cut::Depth));
    }
}
