//! Memory a program maps itself: anonymous `mmap` made outside any allocator call, by address,
//! split by partial `munmap`, moved and resized by `mremap`, each region kept with the site
//! that mapped it. A category of its own, apart from heap blocks (an allocator's own mappings
//! are its heap blocks already).

use std::collections::{BTreeMap, HashMap};

pub use muppy_core::model::MapRow;
use muppy_core::{analysis::aggregate::largest_first, model::Frame};

use crate::event::MapChange;

/// Mappings are whole pages: the kernel rounds lengths up.
const PAGE: u64 = 4096;

fn pages(len: u64) -> u64 {
    len.div_ceil(PAGE).saturating_mul(PAGE)
}

/// One mapped range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    len: u64,
    /// Index into [`Regions::sites`].
    site: u32,
}

/// A process's own anonymous mappings.
#[derive(Debug, Default)]
pub struct Regions {
    map: BTreeMap<u64, Region>,
    /// Return addresses that mapped, in order of first use.
    sites: Vec<u64>,
    site_ids: HashMap<u64, u32>,
}

impl Regions {
    /// Applies a mapping change.
    pub fn apply(&mut self, change: &MapChange) {
        match *change {
            MapChange::Mmap {
                addr, len, caller, ..
            } => {
                let site = self.site(caller);
                self.insert(addr, pages(len), site);
            }
            MapChange::Munmap { addr, len, .. } => {
                self.remove(addr, pages(len));
            }
            MapChange::Mremap {
                old_addr,
                old_len,
                addr,
                len,
                ..
            } => {
                // A region the program mapped keeps its site where it moves; one it did not
                // map (an allocator's, or older than the trace) stays out.
                if let Some(site) = self.site_at(old_addr) {
                    self.remove(old_addr, pages(old_len));
                    self.insert(addr, pages(len), site);
                }
            }
        }
    }

    fn site(&mut self, caller: u64) -> u32 {
        let next = u32::try_from(self.sites.len()).unwrap_or(u32::MAX);
        *self.site_ids.entry(caller).or_insert_with(|| {
            self.sites.push(caller);
            next
        })
    }

    fn site_at(&self, addr: u64) -> Option<u32> {
        let (&start, r) = self.map.range(..=addr).next_back()?;
        (addr < start + r.len).then_some(r.site)
    }

    fn insert(&mut self, addr: u64, len: u64, site: u32) {
        // A fixed mapping replaces whatever was there.
        self.remove(addr, len);
        if len > 0 {
            self.map.insert(addr, Region { len, site });
        }
    }

    /// Unmaps `[addr, addr + len)`: regions inside go, regions across its ends are cut.
    fn remove(&mut self, addr: u64, len: u64) {
        let end = addr.saturating_add(len);
        let mut cut: Vec<u64> = Vec::new();
        if let Some((&start, r)) = self.map.range(..addr).next_back()
            && start + r.len > addr
        {
            cut.push(start);
        }
        cut.extend(self.map.range(addr..end).map(|(&s, _)| s));
        for start in cut {
            let Some(r) = self.map.remove(&start) else {
                continue;
            };
            if start < addr {
                self.map.insert(
                    start,
                    Region {
                        len: addr - start,
                        ..r
                    },
                );
            }
            if start + r.len > end {
                self.map.insert(
                    end,
                    Region {
                        len: start + r.len - end,
                        ..r
                    },
                );
            }
        }
    }

    /// The return addresses that mapped, indexed by site number.
    pub fn sites(&self) -> &[u64] {
        &self.sites
    }

    /// Ranges and bytes per site, with `frame` giving each site's frame (by its index in
    /// [`Regions::sites`]), or leaving it out with `None`; sites of one name are one row;
    /// largest first.
    pub fn rows(&self, frame: impl Fn(usize) -> Option<Frame>) -> Vec<MapRow> {
        let mut per: HashMap<u32, (u64, u64)> = HashMap::new();
        for r in self.map.values() {
            let e = per.entry(r.site).or_default();
            e.0 += 1;
            e.1 += r.len;
        }
        let mut merged: HashMap<String, (Frame, u64, u64)> = HashMap::new();
        for (site, (n, bytes)) in per {
            let Some(frame) = frame(site as usize) else {
                continue;
            };
            let e = merged
                .entry(frame.name().to_string())
                .or_insert((frame, 0, 0));
            e.1 += n;
            e.2 += bytes;
        }
        let mut rows: Vec<(String, MapRow)> = merged
            .into_iter()
            .map(|(name, (site, regions, bytes))| {
                let row = MapRow {
                    site,
                    regions,
                    bytes,
                };
                (name, row)
            })
            .collect();
        largest_first(&mut rows, |(name, r)| (r.bytes.into(), 0, name.as_str()));
        rows.into_iter().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum EventKind {
        Mmap,
        Munmap,
        Mremap,
    }

    fn ev(kind: EventKind, addr: u64, len: u64, old: u64, old_len: u64, caller: u64) -> MapChange {
        match kind {
            EventKind::Mmap => MapChange::Mmap {
                addr,
                len,
                caller,
                ts_ns: 0,
            },
            EventKind::Munmap => MapChange::Munmap {
                addr,
                len,
                ts_ns: 0,
            },
            EventKind::Mremap => MapChange::Mremap {
                old_addr: old,
                old_len,
                addr,
                len,
                ts_ns: 0,
            },
        }
    }

    fn rows(r: &Regions) -> Vec<(String, u64, u64)> {
        r.rows(|i| Some(Frame::unknown(r.sites()[i])))
            .into_iter()
            .map(|m| (m.site.name().to_string(), m.regions, m.bytes))
            .collect()
    }

    #[test]
    fn maps_split_move_and_go() {
        let mut r = Regions::default();
        r.apply(&ev(EventKind::Mmap, 0x10000, 4 * PAGE, 0, 0, 0xa));
        r.apply(&ev(EventKind::Mmap, 0x40000, 100, 0, 0, 0xb));
        assert_eq!(
            rows(&r),
            vec![
                ("[unknown] (0xa)".into(), 1, 4 * PAGE),
                ("[unknown] (0xb)".into(), 1, PAGE)
            ]
        );
        // The middle two pages go: two ranges of one page each stay.
        r.apply(&ev(EventKind::Munmap, 0x11000, 2 * PAGE, 0, 0, 0));
        assert_eq!(rows(&r)[0], ("[unknown] (0xa)".into(), 2, 2 * PAGE));
        // Moved and grown: the site stays.
        r.apply(&ev(EventKind::Mremap, 0x90000, 8 * PAGE, 0x40000, PAGE, 0));
        assert_eq!(rows(&r)[0], ("[unknown] (0xb)".into(), 1, 8 * PAGE));
        // Unknown ranges are left alone; whole ranges go.
        r.apply(&ev(EventKind::Mremap, 0xf0000, PAGE, 0xe0000, PAGE, 0));
        r.apply(&ev(EventKind::Munmap, 0x0, 0x100000, 0, 0, 0));
        assert!(rows(&r).is_empty());
    }
}
