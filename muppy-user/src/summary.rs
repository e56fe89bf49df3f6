//! Summaries (live objects and bytes per site) and diffs between two summaries: Pympler's
//! `summary.summarize` and `summary.get_diff` for native allocation sites.

use std::collections::{BTreeMap, HashMap};

/// One row of a summary: what one site holds live.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// The allocation site, named by [`crate::symbols`].
    pub site: String,
    /// Live blocks.
    pub objects: u64,
    /// Live bytes (as requested from the allocator).
    pub bytes: u64,
}

/// What was live in one process at one moment, per site, largest total first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The process.
    pub pid: u32,
    /// One row per site with live blocks, sorted by bytes, then objects (both descending), then
    /// site name.
    pub rows: Vec<Row>,
    /// Events the probes could not deliver (ring full, in-flight map full). Non-zero means the
    /// rows may be wrong by up to that many blocks.
    pub lost_events: u64,
    /// Frees, made by the program, of blocks the table did not hold (allocated before tracing
    /// began, or whose allocation event was lost).
    pub unknown_frees: u64,
    /// Frees made from inside libc itself of chunks the table did not hold: libc's own
    /// housekeeping (glibc's per-thread cache hands back chunks it split off or kept when a thread
    /// exits). They change no live figure.
    pub libc_unknown_frees: u64,
    /// Frees of chunks already freed and not allocated since; they change nothing.
    pub refrees: u64,
}

impl Summary {
    /// Builds a summary from per-site figures. Sites that share a name are merged (two return
    /// addresses in one line of code, say), and sites with nothing live are left out.
    pub fn from_sites(
        pid: u32,
        sites: impl IntoIterator<Item = (String, u64, u64)>,
        lost_events: u64,
        unknown_frees: u64,
    ) -> Self {
        let mut merged: HashMap<String, (u64, u64)> = HashMap::new();
        for (site, objects, bytes) in sites {
            if objects == 0 {
                continue;
            }
            let slot = merged.entry(site).or_default();
            slot.0 += objects;
            slot.1 += bytes;
        }
        let mut rows: Vec<Row> = merged
            .into_iter()
            .map(|(site, (objects, bytes))| Row {
                site,
                objects,
                bytes,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then(b.objects.cmp(&a.objects))
                .then_with(|| a.site.cmp(&b.site))
        });
        Summary {
            pid,
            rows,
            lost_events,
            unknown_frees,
            libc_unknown_frees: 0,
            refrees: 0,
        }
    }

    /// Live objects and bytes over all sites.
    pub fn total(&self) -> (u64, u64) {
        self.rows
            .iter()
            .fold((0, 0), |(o, b), r| (o + r.objects, b + r.bytes))
    }
}

/// One row of a diff: how a site's live figures changed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DiffRow {
    /// The allocation site.
    pub site: String,
    /// Change in live blocks.
    pub objects: i64,
    /// Change in live bytes.
    pub bytes: i64,
}

/// The change between two summaries of one process: the rows whose count or size changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// The process.
    pub pid: u32,
    /// Changed sites, largest growth in bytes first.
    pub rows: Vec<DiffRow>,
    /// Lost events in the newer summary (cumulative since tracing began).
    pub lost_events: u64,
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `new - old`, per site, leaving out sites that did not change.
pub fn diff(old: &Summary, new: &Summary) -> Diff {
    let mut acc: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for r in &new.rows {
        let slot = acc.entry(&r.site).or_default();
        slot.0 += signed(r.objects);
        slot.1 += signed(r.bytes);
    }
    for r in &old.rows {
        let slot = acc.entry(&r.site).or_default();
        slot.0 -= signed(r.objects);
        slot.1 -= signed(r.bytes);
    }
    let mut rows: Vec<DiffRow> = acc
        .into_iter()
        .filter(|(_, (o, b))| *o != 0 || *b != 0)
        .map(|(site, (objects, bytes))| DiffRow {
            site: site.to_string(),
            objects,
            bytes,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.objects.cmp(&a.objects))
            .then_with(|| a.site.cmp(&b.site))
    });
    Diff {
        pid: new.pid,
        rows,
        lost_events: new.lost_events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rows: &[(&str, u64, u64)]) -> Summary {
        Summary::from_sites(
            7,
            rows.iter().map(|(n, o, b)| (n.to_string(), *o, *b)),
            0,
            0,
        )
    }

    #[test]
    fn merges_same_named_sites_and_sorts_by_bytes() {
        let sum = s(&[("a", 1, 10), ("b", 2, 300), ("a", 3, 30), ("z", 0, 0)]);
        assert_eq!(
            sum.rows,
            vec![
                Row {
                    site: "b".into(),
                    objects: 2,
                    bytes: 300
                },
                Row {
                    site: "a".into(),
                    objects: 4,
                    bytes: 40
                },
            ]
        );
        assert_eq!(sum.total(), (6, 340));
    }

    #[test]
    fn diff_keeps_only_changed_rows_signed() {
        let old = s(&[("a", 4, 40), ("b", 2, 300), ("gone", 1, 8)]);
        let new = s(&[("a", 4, 40), ("b", 5, 750), ("new", 1, 16)]);
        let d = diff(&old, &new);
        assert_eq!(
            d.rows,
            vec![
                DiffRow {
                    site: "b".into(),
                    objects: 3,
                    bytes: 450
                },
                DiffRow {
                    site: "new".into(),
                    objects: 1,
                    bytes: 16
                },
                DiffRow {
                    site: "gone".into(),
                    objects: -1,
                    bytes: -8
                },
            ]
        );
    }

    #[test]
    fn diff_of_equal_summaries_is_empty() {
        let a = s(&[("a", 4, 40)]);
        assert!(diff(&a, &a.clone()).rows.is_empty());
    }
}
