//! TEMPORARY STUB (not committed): replaced by the helper's module.
#![allow(missing_docs)]
use muppy_core::model::{Cut, StackState};
pub struct Regs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}
pub struct Unwound {
    pub addrs: Vec<u64>,
    pub state: StackState,
}
#[derive(Clone, Copy, Debug, Default)]
pub struct UnwindStats {
    pub stacks: u64,
    pub frames: u64,
    pub ns: u64,
}
pub struct Unwinders {
    stats: UnwindStats,
}
impl Unwinders {
    pub fn new(_max_frames: usize) -> Self {
        Self {
            stats: UnwindStats::default(),
        }
    }
    pub fn unwind(&mut self, _pid: u32, regs: Regs, _stack: &[u8]) -> Unwound {
        Unwound {
            addrs: vec![regs.ip],
            state: StackState::Cut(Cut::NoCfi),
        }
    }
    pub fn watch(&mut self, _pid: u32) {}
    pub fn forget(&mut self, _pid: u32) {}
    pub fn stats(&self) -> UnwindStats {
        self.stats
    }
}
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramePointers {
    pub fdes: usize,
    pub rbp_cfa: usize,
}
impl FramePointers {
    pub fn kept(&self) -> bool {
        self.rbp_cfa * 2 >= self.fdes
    }
}
pub fn frame_pointers(_path: &std::path::Path) -> Option<FramePointers> {
    None
}
