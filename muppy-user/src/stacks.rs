//! Call paths of allocations, owned by user space: the probes send each stack in its event's
//! record (the frame-pointer walk's return addresses, or a copy of the stack that
//! [`crate::unwind`] unwinds), the ring thread turns it into a [`CallPath`] and interns it in
//! the [`StackStore`], and the event carries only the path's id. Nothing in the kernel keeps
//! stacks, so none is ever evicted or mis-attributed however long the run.
//!
//! A path belongs to one process image (its addresses mean something in that address space
//! only): it is interned per image, and when the session is done with an image that ended it
//! releases the image's paths ([`StackStore::release`]), whose ids are then reused. A
//! system-wide session that sees thousands of short processes keeps only the live ones' paths.

use std::{
    collections::HashMap,
    hash::{Hash as _, Hasher as _},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use muppy_common::{CodeRanges, MAX_CODE_RANGES};
use muppy_core::model::{Cut, StackState};

use crate::{
    table::{AddrHasher, FastHash, StackRef, TraceKey},
    unwind::{FramePointers, Regs, Unwinders, frame_pointers},
};

/// A process image: its pid, and how many times that pid exec'd or ended before.
type Image = (u32, u32);

/// What a released id holds until it is reused: no path (an event never names it).
static RELEASED: std::sync::LazyLock<Arc<CallPath>> = std::sync::LazyLock::new(|| {
    Arc::new(CallPath {
        addrs: Vec::new(),
        state: StackState::Lost,
    })
});

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
    /// Paths interned and not released.
    live: AtomicUsize,
    notices: Mutex<Vec<Notice>>,
    /// Ids of paths the session is done with, for the ring thread to reuse.
    released: Mutex<Vec<u32>>,
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

    /// Distinct call paths held (interned and not released).
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The session is done with these paths (their image ended and was reported): their ids
    /// may be reused. No event still to be applied can name them, since the ring thread
    /// interns an image's paths apart from any later image's of the same pid.
    pub fn release(&self, ids: impl IntoIterator<Item = u32>) {
        self.released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(ids);
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
    /// Ids by a hash of their image and path (several where hashes collide), and the paths
    /// with their images and hashes, kept here too so that a path seen before costs a hash
    /// and a compare, no lock and no allocation.
    ids: HashMap<u64, Vec<u32>, FastHash>,
    paths: Vec<(Arc<CallPath>, Image, u64)>,
    /// Ids released, to reuse.
    free: Vec<u32>,
    /// Per pid, its image's number: a pid's exec or exit starts a new one.
    images: HashMap<u32, u32, FastHash>,
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
            free: Vec::new(),
            images: HashMap::default(),
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
        let released = std::mem::take(
            &mut *self
                .store
                .released
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for id in released {
            self.recycle(id);
        }
    }

    /// Forgets path `id` and keeps the id for another.
    fn recycle(&mut self, id: u32) {
        let Some((path, _, hash)) = self.paths.get_mut(id as usize) else {
            return;
        };
        if path.addrs.is_empty() {
            return; // released already
        }
        *path = Arc::clone(&RELEASED);
        if let Some(ids) = self.ids.get_mut(hash) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.ids.remove(hash);
            }
        }
        if let Some(slot) = self
            .store
            .paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(id as usize)
        {
            *slot = Arc::clone(&RELEASED);
        }
        self.store.live.fetch_sub(1, Ordering::Relaxed);
        self.free.push(id);
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

    /// Process `pid` exec'd or ended: its mappings are gone or replaced, and its next paths
    /// are another image's.
    pub fn forget(&mut self, pid: u32) {
        self.unwinders.forget(pid);
        let n = self.images.entry(pid).or_default();
        *n = n.wrapping_add(1);
    }

    fn image(&self, pid: u32) -> Image {
        (pid, self.images.get(&pid).copied().unwrap_or(0))
    }

    /// The frame-pointer walk's return addresses `ips` of an allocation by `caller` (the
    /// walk's first address, which it starts at the return probe's instruction pointer);
    /// `full` if the walk filled its record and may have gone on.
    pub fn frames(
        &mut self,
        pid: u32,
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
        let id = self.intern(pid, &addrs, state);
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
        self.intern(pid, &addrs, u.state)
    }

    fn intern(&mut self, pid: u32, addrs: &[u64], state: StackState) -> StackRef {
        let image = self.image(pid);
        let mut h = AddrHasher::default();
        image.hash(&mut h);
        addrs.hash(&mut h);
        state.hash(&mut h);
        let hash = h.finish();
        let same = |&id: &u32| {
            let (p, i, _) = &self.paths[id as usize];
            *i == image && p.addrs == addrs && p.state == state
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
        let mut shared = self
            .store
            .paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let id = match self.free.pop() {
            Some(id) => {
                self.paths[id as usize] = (Arc::clone(&path), image, hash);
                shared[id as usize] = path;
                id
            }
            None => {
                let id = u32::try_from(self.paths.len()).unwrap_or(u32::MAX);
                self.paths.push((Arc::clone(&path), image, hash));
                shared.push(path);
                id
            }
        };
        drop(shared);
        self.store.live.fetch_add(1, Ordering::Relaxed);
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
                .filter(|p| !p.addrs.is_empty())
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
        let a = d.frames(1, 0x10, [0x10, 0x20, 0x30], false);
        // The same path again, as the walk gives it or without its first address.
        assert_eq!(d.frames(1, 0x10, [0x10, 0x20, 0x30], false), a);
        assert_eq!(d.frames(1, 0x10, [0x20, 0x30], false), a);
        let key = |stack| TraceKey {
            caller: 0x10,
            stack,
        };
        let p = r.path(&key(a));
        assert_eq!(
            (p.addrs, p.state),
            (vec![0x10, 0x20, 0x30], StackState::Walked)
        );
        let full = d.frames(1, 0x10, [0x10, 0x20, 0x30], true);
        assert_ne!(full, a);
        assert_eq!(r.path(&key(full)).state, StackState::Cut(Cut::Depth));
        assert_eq!(store.len(), 2);
        let lost = r.path(&key(StackRef::Lost));
        assert_eq!((lost.addrs, lost.state), (vec![0x10], StackState::Lost));
        assert_eq!(r.path(&key(StackRef::Id(99))).state, StackState::Lost);
    }

    #[test]
    fn paths_are_per_image_and_released_ids_are_reused() {
        let store = Arc::new(StackStore::default());
        let mut d = StackDecoder::new(Arc::clone(&store));
        let r = StackReader::new(Arc::clone(&store));
        let a = d.frames(7, 0x10, [0x10, 0x20], false);
        // Another process, or the same pid after an exec, has a path of its own.
        let b = d.frames(8, 0x10, [0x10, 0x20], false);
        assert_ne!(a, b);
        d.forget(7);
        let a2 = d.frames(7, 0x10, [0x10, 0x20], false);
        assert_ne!(a, a2);
        assert_eq!(store.len(), 3);
        let StackRef::Id(old) = a else {
            panic!("not interned")
        };
        store.release([old]);
        d.heed();
        assert_eq!(store.len(), 2);
        let key = TraceKey {
            caller: 0x10,
            stack: a,
        };
        assert_eq!(r.path(&key).state, StackState::Lost);
        // The id is reused for the next new path, which reads back whole.
        let c = d.frames(9, 0x30, [0x30, 0x40], false);
        assert_eq!(c, a);
        let key = TraceKey {
            caller: 0x30,
            stack: c,
        };
        assert_eq!(r.path(&key).addrs, [0x30, 0x40]);
        // The live image's path is untouched.
        assert_eq!(d.frames(7, 0x10, [0x10, 0x20], false), a2);
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn a_deep_walk_keeps_the_innermost_frames() {
        let store = Arc::new(StackStore::default());
        let mut d = StackDecoder::new(Arc::clone(&store));
        let StackRef::Id(id) = d.frames(1, 1, 1..=200, false) else {
            panic!("not interned");
        };
        let p = store.get(id).unwrap();
        assert_eq!(p.addrs.len(), MAX_FRAMES);
        assert_eq!(p.addrs[..3], [1, 2, 3]);
        assert_eq!(p.state, StackState::Cut(Cut::Depth));
    }
}
