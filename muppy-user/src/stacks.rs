//! Call paths of allocations: a [`TraceKey`] (caller plus stack-map reference) turned into the
//! list of return addresses from the caller outwards, read from the kernel's stack map.

use std::collections::HashMap;

use aya::maps::{MapData, StackTraceMap};

use muppy_core::model::StackState;

use crate::table::{StackRef, TraceKey};

/// A call path as return addresses, innermost (the allocation site) first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallPath {
    /// Return addresses; `addrs[0]` is the caller of the allocator.
    pub addrs: Vec<u64>,
    /// How complete the path is.
    pub state: StackState,
}

/// Reads stacks from the stack map, each id once. Stacks are never removed from the map, so an
/// id always names the stack it was first given to.
pub struct StackReader {
    map: Option<StackTraceMap<MapData>>,
    cache: HashMap<u32, Vec<u64>>,
}

impl StackReader {
    /// A reader over the probes' stack map (`None` when stacks are off).
    pub fn new(map: Option<StackTraceMap<MapData>>) -> Self {
        Self {
            map,
            cache: HashMap::new(),
        }
    }

    fn stored(&mut self, id: u32) -> Option<&[u64]> {
        if !self.cache.contains_key(&id) {
            let frames = self.map.as_ref()?.get(&id, 0).ok()?;
            let addrs = frames.frames().iter().map(|f| f.ip).collect();
            self.cache.insert(id, addrs);
        }
        self.cache.get(&id).map(Vec::as_slice)
    }

    /// The call path of `key`: its caller, then the frames above it.
    pub fn path(&mut self, key: &TraceKey) -> CallPath {
        let mut addrs = vec![key.caller];
        let state = match key.stack {
            StackRef::Off => StackState::Off,
            StackRef::Lost => StackState::Lost,
            StackRef::Map { id, has_caller } => match self.stored(id) {
                Some(frames) => {
                    let skip = usize::from(has_caller && !frames.is_empty());
                    addrs.extend_from_slice(&frames[skip..]);
                    StackState::Walked
                }
                None => StackState::Lost,
            },
        };
        CallPath { addrs, state }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_stacks_join_the_caller() {
        let mut r = StackReader::new(None);
        r.cache.insert(3, vec![0x20, 0x30]);
        let above = r.path(&TraceKey {
            caller: 0x10,
            stack: StackRef::Map {
                id: 3,
                has_caller: false,
            },
        });
        assert_eq!(above.addrs, vec![0x10, 0x20, 0x30]);
        let whole = r.path(&TraceKey {
            caller: 0x20,
            stack: StackRef::Map {
                id: 3,
                has_caller: true,
            },
        });
        assert_eq!(whole.addrs, vec![0x20, 0x30]);
        assert_eq!(whole.state, StackState::Walked);
        let missing = r.path(&TraceKey {
            caller: 0x10,
            stack: StackRef::Map {
                id: 9,
                has_caller: false,
            },
        });
        assert_eq!(
            (missing.addrs, missing.state),
            (vec![0x10], StackState::Lost)
        );
    }
}
