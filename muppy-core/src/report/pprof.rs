//! pprof heap profiles (`--format pprof`): gzipped profile.proto, shaped as Go writes heap
//! profiles, so that `go tool pprof` (and anything else that reads Go's heap profiles) reads
//! them.
//!
//! The sample types are Go's: `alloc_objects/count`, `alloc_space/bytes` (everything each
//! call path allocated since tracing began, freed or not, a realloc's new block included),
//! `inuse_objects/count` and `inuse_space/bytes`. The first two are written only where the
//! heap knows them (a live process's; a snapshot keeps only what was live) and no filter
//! limits blocks by size, age or kind (which those figures cannot be limited by). The default
//! type is `inuse_space`, or `alloc_space` for [`PprofPrinter::allocs`] (Go's `allocs`
//! profile).
//!
//! One sample per call path, its locations leaf first; one location per distinct frame, in the
//! mapping of the file its address falls in (with the file's build id) where the heap knows
//! its modules; each location has one line naming the function (as tables name it) and, where
//! debug info has them, the source file and line. A stack that is not whole (lost, or cut
//! short) ends in a pseudo-frame saying so, as tables mark it. With `--sample-bytes` the
//! figures are the same estimates the tables and JSON show (each call path's weighted sums,
//! rounded), and the period is the sampling gap, as Go writes sampled heaps already scaled.
//!
//! A leak check grouped by stack is a profile too: one sample per loss record, labelled with
//! its kind.

use std::{collections::HashMap, io};

use flate2::{Compression, write::GzEncoder};
use prost::Message;

use super::{Facts, Print, ProcView, ReportError, View, ViewOptions};
use crate::{
    analysis::{Diff, GroupBy, Key, LeakReport, RefReport, aggregate},
    model::{Frame, Heap, Identity, ModuleFile},
};

/// profile.proto's messages, written by hand (field numbers as the format defines them): only
/// what a heap profile needs.
pub mod proto {
    /// A profile: samples and the tables they point into.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        /// What each sample value is.
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        /// The samples.
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        /// Mapped files.
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        /// Code addresses.
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        /// Functions.
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        /// Every string, by index; index 0 is "".
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        /// When the profile was taken (ns since the epoch); 0: not known.
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        /// What the period counts.
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        /// The sampling period.
        #[prost(int64, tag = "12")]
        pub period: i64,
        /// Free-form notes (string indices).
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        /// The sample type shown by default (a string index).
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    /// A type and a unit, as string indices.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        /// `inuse_space`.
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        /// `bytes`.
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    /// Values at one call path.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Location ids, leaf first.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        /// One value per sample type.
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        /// Labels.
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    /// A label: a key with a string or a number.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// The key (string index).
        #[prost(int64, tag = "1")]
        pub key: i64,
        /// A string value (string index), or 0.
        #[prost(int64, tag = "2")]
        pub str: i64,
        /// A number value.
        #[prost(int64, tag = "3")]
        pub num: i64,
        /// The number's unit (string index), or 0.
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    /// A mapped file.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        /// Its id (from 1).
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// First address.
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        /// One past the last address.
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        /// The file offset of `memory_start`.
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        /// The file's path (string index).
        #[prost(int64, tag = "5")]
        pub filename: i64,
        /// Its build id (string index).
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        /// The locations in it name their functions.
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        /// They name source files.
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        /// They name source lines.
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        /// They name inlined functions.
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    /// A code address.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        /// Its id (from 1).
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// Its mapping's id, or 0 for none.
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        /// The address.
        #[prost(uint64, tag = "3")]
        pub address: u64,
        /// What runs there, innermost inlined function first.
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    /// A function at a source line.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        /// The function's id.
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        /// The line, or 0.
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    /// A function.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        /// Its id (from 1).
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// Its name (string index).
        #[prost(int64, tag = "2")]
        pub name: i64,
        /// Its name as the file stores it (string index).
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        /// Its source file (string index).
        #[prost(int64, tag = "4")]
        pub filename: i64,
        /// The line it starts at, or 0.
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// A profile being built: each string, mapping, function and location stored once.
#[derive(Default)]
struct Builder {
    profile: proto::Profile,
    strings: HashMap<String, i64>,
    mappings: HashMap<ModuleFile, u64>,
    functions: HashMap<(String, Option<String>), u64>,
    /// By mapping and frame (the same address in two processes may be two things).
    locations: HashMap<(u64, Frame), u64>,
    markers: HashMap<&'static str, u64>,
    /// Samples carry `alloc_objects` and `alloc_space` first.
    allocs: bool,
}

impl Builder {
    /// A profile with `alloc_*` sample types if `allocs`, its default `alloc_space` if
    /// `default_alloc` (else `inuse_space`).
    fn new(sample_bytes: u64, allocs: bool, default_alloc: bool) -> Self {
        let mut b = Builder {
            allocs,
            ..Builder::default()
        };
        b.string("");
        let (count, bytes) = (b.string("count"), b.string("bytes"));
        let mut types = Vec::new();
        if allocs {
            types.extend([("alloc_objects", count), ("alloc_space", bytes)]);
        }
        types.extend([("inuse_objects", count), ("inuse_space", bytes)]);
        for (name, unit) in types {
            let r#type = b.string(name);
            b.profile
                .sample_type
                .push(proto::ValueType { r#type, unit });
        }
        let default = if allocs && default_alloc {
            "alloc_space"
        } else {
            "inuse_space"
        };
        b.profile.default_sample_type = b.string(default);
        let space = b.string("space");
        b.profile.period_type = Some(proto::ValueType {
            r#type: space,
            unit: bytes,
        });
        b.profile.period = i64::try_from(sample_bytes.max(1)).unwrap_or(i64::MAX);
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn mapping(&mut self, m: &ModuleFile) -> u64 {
        if let Some(&id) = self.mappings.get(m) {
            return id;
        }
        let id = self.profile.mapping.len() as u64 + 1;
        let filename = self.string(&m.path);
        let build_id = m.build_id.as_deref().map_or(0, |b| self.string(b));
        self.profile.mapping.push(proto::Mapping {
            id,
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename,
            build_id,
            // Every location carries its names already: pprof must not symbolize again.
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        });
        self.mappings.insert(m.clone(), id);
        id
    }

    /// The function `name`, shown as `shown` (`system_name` keeps `name`).
    fn function(&mut self, name: String, shown: Option<String>, file: Option<String>) -> u64 {
        let key = (name, file);
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let system_name = self.string(&key.0);
        let name = shown.map_or(system_name, |s| self.string(&s));
        let filename = key.1.as_deref().map_or(0, |f| self.string(f));
        self.profile.function.push(proto::Function {
            id,
            name,
            system_name,
            filename,
            start_line: 0,
        });
        self.functions.insert(key, id);
        id
    }

    fn location(&mut self, frame: &Frame, modules: &[ModuleFile]) -> u64 {
        let module = modules
            .iter()
            .find(|m| m.start <= frame.addr && frame.addr < m.limit && frame.addr != 0);
        let mapping_id = module.map_or(0, |m| self.mapping(m));
        if let Some(&id) = self.locations.get(&(mapping_id, frame.clone())) {
            return id;
        }
        // The function as tables name it: a frame no symbol names keeps its whole name, so
        // that unknown code is never merged with other unknown code. pprof drops a name's
        // parenthesized tail (C++ parameters), so such a frame is shown without parentheses.
        let shown = match (&frame.function, &frame.module) {
            (Some(_), _) => None,
            (None, Some(m)) => Some(format!("[unknown] {m}+{:#x}", frame.offset)),
            (None, None) => Some(format!("[unknown] {:#x}", frame.addr)),
        };
        let function_id = self.function(frame.function_name(), shown, frame.file.clone());
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(proto::Location {
            id,
            mapping_id,
            address: frame.addr,
            line: vec![proto::Line {
                function_id,
                line: frame.line.map_or(0, i64::from),
            }],
        });
        self.locations.insert((mapping_id, frame.clone()), id);
        id
    }

    /// A pseudo-frame saying why a stack ends where it does.
    fn marker(&mut self, text: &'static str) -> u64 {
        if let Some(&id) = self.markers.get(text) {
            return id;
        }
        let function_id = self.function(text.to_string(), None, None);
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(proto::Location {
            id,
            mapping_id: 0,
            address: 0,
            line: vec![proto::Line {
                function_id,
                line: 0,
            }],
        });
        self.markers.insert(text, id);
        id
    }

    /// Adds the blocks of `heap` that `opts` selects, one sample per call path; labelled
    /// with the process when `who` is given. With `alloc_*` types, a call path that
    /// allocated but holds nothing live is a sample too.
    fn add_heap(&mut self, heap: &Heap, opts: &ViewOptions, who: Option<&Identity>) {
        let labels = who.map(|id| self.labels(id)).unwrap_or_default();
        let tallies = aggregate::per_trace(heap, &opts.filter);
        let passes = opts.filter.traces(heap.traces);
        for (i, (tally, trace)) in tallies.iter().zip(heap.traces).enumerate() {
            let allocated = match heap.allocated.get(i) {
                Some(a) if self.allocs && passes[i] => a.figures(heap.sample_bytes),
                _ => (0, 0),
            };
            if tally.is_empty() && allocated == (0, 0) {
                continue;
            }
            // The same figures the tables and JSON show for this call path.
            let inuse = tally.rounded();
            let mut values = Vec::with_capacity(4);
            if self.allocs {
                values.extend([allocated.0, allocated.1]);
            }
            values.extend([inuse.0, inuse.1]);
            let frames = trace.frames.iter().map(|f| &**f);
            let end = trace.state.marker();
            self.sample(frames, end, heap.modules, &values, labels.clone());
        }
    }

    /// Adds a sample at `frames` (innermost first), ended by the marker `end` where the
    /// stack is not whole.
    fn sample<'f>(
        &mut self,
        frames: impl Iterator<Item = &'f Frame>,
        end: Option<&'static str>,
        modules: &[ModuleFile],
        values: &[u64],
        label: Vec<proto::Label>,
    ) {
        let mut location_id: Vec<u64> = frames.map(|f| self.location(f, modules)).collect();
        location_id.extend(end.map(|m| self.marker(m)));
        let value = values
            .iter()
            .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
            .collect();
        self.profile.sample.push(proto::Sample {
            location_id,
            value,
            label,
        });
    }

    /// Adds a leak check's loss records, one sample each, labelled with their kind.
    fn add_leaks(&mut self, r: &LeakReport) {
        for row in &r.rows {
            let Key::Stack { frames, end } = &row.key else {
                continue;
            };
            let label = vec![proto::Label {
                key: self.string("kind"),
                str: self.string(row.kind.key()),
                ..proto::Label::default()
            }];
            self.sample(frames.iter(), *end, &[], &[row.objects, row.bytes], label);
        }
    }

    fn labels(&mut self, id: &Identity) -> Vec<proto::Label> {
        let mut labels = vec![proto::Label {
            key: self.string("pid"),
            num: i64::from(id.pid),
            ..proto::Label::default()
        }];
        if !id.comm.is_empty() {
            labels.push(proto::Label {
                key: self.string("comm"),
                str: self.string(&id.comm),
                ..proto::Label::default()
            });
        }
        labels
    }

    /// The profile, gzipped.
    fn finish(self) -> io::Result<Vec<u8>> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        io::Write::write_all(&mut gz, &self.profile.encode_to_vec())?;
        gz.finish()
    }
}

/// Writes `--format pprof` reports: one profile per output, written at the final report.
/// Processes that end before it (`--all`) are kept in it, labelled with their pid and command.
pub struct PprofPrinter<W> {
    opts: ViewOptions,
    out: W,
    /// Processes that ended before the final report (`--all`).
    ended: Option<Builder>,
    /// The profile has been written: a file holds one.
    written: bool,
    /// `alloc_space` is the default sample type (Go's `allocs` profile).
    default_alloc: bool,
}

impl<W: io::Write> PprofPrinter<W> {
    /// A printer writing into `out`.
    pub fn new(opts: ViewOptions, out: W) -> Self {
        PprofPrinter {
            opts,
            out,
            ended: None,
            written: false,
            default_alloc: false,
        }
    }

    /// Go's `allocs` profile: the same samples, `alloc_space` the default type where the
    /// heap has it.
    #[must_use]
    pub fn allocs(mut self) -> Self {
        self.default_alloc = true;
        self
    }

    /// The ended processes' profile, or a new one for heaps like `heap` (none: a profile of
    /// no heap): with `alloc_*` types where the heap knows them and the filter does not limit
    /// blocks.
    fn ended_or_new(&mut self, heap: Option<&Heap>) -> Builder {
        self.ended.take().unwrap_or_else(|| {
            let allocs =
                heap.is_some_and(|h| !h.allocated.is_empty()) && !self.opts.filter.limits_blocks();
            Builder::new(
                heap.map_or(0, |h| h.sample_bytes),
                allocs,
                self.default_alloc,
            )
        })
    }

    fn unsupported(&self, what: &'static str, hint: &'static str) -> ReportError {
        ReportError::Unsupported {
            format: self.opts.format.name(),
            what,
            hint,
        }
    }

    /// The profile under construction ([`PprofPrinter::ended_or_new`]).
    fn builder(&mut self, heap: Option<&Heap>) -> Result<Builder, ReportError> {
        if self.written {
            return Err(self.unsupported(
                "a second report",
                "a profile holds one heap; write each report to its own file",
            ));
        }
        if matches!(self.opts.view, View::Tree { addr: Some(_), .. }) {
            return Err(self.unsupported(
                "the tree of one block",
                "a profile holds the call paths of every selected block; drop --addr",
            ));
        }
        Ok(self.ended_or_new(heap))
    }

    fn write(&mut self, b: Builder) -> Result<(), ReportError> {
        self.written = true;
        self.out.write_all(&b.finish()?)?;
        self.out.flush()?;
        Ok(())
    }
}

impl<W: io::Write> Print for PprofPrinter<W> {
    fn view(&mut self, p: &ProcView, _facts: &Facts) -> Result<(), ReportError> {
        let had_ended = self.ended.is_some();
        let mut b = self.builder(Some(&p.heap))?;
        let who = had_ended.then_some(&p.id);
        b.add_heap(&p.heap, &self.opts, who);
        self.write(b)
    }

    fn processes(&mut self, procs: &[ProcView], _facts: &Facts) -> Result<(), ReportError> {
        let mut b = self.builder(procs.first().map(|p| &p.heap))?;
        for p in procs {
            b.add_heap(&p.heap, &self.opts, Some(&p.id));
        }
        self.write(b)
    }

    fn ended(&mut self, p: &ProcView) -> Result<(), ReportError> {
        let mut b = self.ended_or_new(Some(&p.heap));
        b.add_heap(&p.heap, &self.opts, Some(&p.id));
        self.ended = Some(b);
        Ok(())
    }

    fn diff(&mut self, _d: &Diff, _who: Option<&Identity>) -> Result<(), ReportError> {
        Err(self.unsupported(
            "a diff",
            "write each heap as a profile (`summary FILE --format pprof -o A.pb.gz`) and compare \
             them with `go tool pprof -diff_base A.pb.gz B.pb.gz`",
        ))
    }

    /// Loss records grouped by stack: one sample per record, labelled with its `kind`
    /// (`definitely_lost`...), so that `go tool pprof -tagfocus=kind=definitely_lost` shows
    /// one kind. Other groupings have no call path per record.
    fn leaks(&mut self, r: &LeakReport) -> Result<(), ReportError> {
        if r.group_by != GroupBy::Stack {
            return Err(self.unsupported(
                "a leak report grouped by site or function",
                "a profile needs each loss record's call path: add --group-by stack",
            ));
        }
        let mut b = self.builder(None)?;
        b.add_leaks(r);
        self.write(b)
    }

    fn referrers(&mut self, _r: &RefReport) -> Result<(), ReportError> {
        Err(self.unsupported(
            "referrers",
            "referrers are a path between blocks, not call paths; use --format table or json",
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::{
        analysis::summarize,
        model::{Allocated, Block, Counters, Cut, Filter, StackState, Trace},
    };

    fn frame(function: Option<&str>, addr: u64, line: Option<u32>) -> Frame {
        Frame {
            addr,
            module: Some("prog".into()),
            offset: addr - 0x1000,
            function: function.map(str::to_string),
            file: line.map(|_| "a.c".to_string()),
            line,
            ..Frame::default()
        }
    }

    fn traces() -> Vec<Trace> {
        vec![
            Trace::new(
                vec![
                    frame(Some("leaf"), 0x1100, Some(3)),
                    frame(Some("main"), 0x1200, Some(9)),
                ],
                StackState::Walked,
            ),
            Trace::new(
                vec![
                    frame(Some("other"), 0x1300, Some(5)),
                    frame(Some("main"), 0x1200, Some(9)),
                ],
                StackState::Cut(Cut::Depth),
            ),
            Trace::new(vec![Frame::unknown(0x9999_0000)], StackState::Lost),
            // No block: no sample.
            Trace::new(vec![frame(None, 0x1400, None)], StackState::Walked),
        ]
    }

    fn blocks() -> Vec<(u64, Block)> {
        let b = |size, trace| Block {
            size,
            ts_ns: 1,
            trace,
            tid: 1,
            leak: None,
        };
        vec![
            (0x10, b(100, 0)),
            (0x20, b(100, 0)),
            (0x30, b(4000, 1)),
            (0x40, b(7, 2)),
        ]
    }

    fn modules() -> Vec<ModuleFile> {
        vec![ModuleFile {
            path: "/usr/bin/prog".into(),
            build_id: Some("abcdef01".into()),
            start: 0x1000,
            limit: 0x2000,
            offset: 0,
        }]
    }

    fn heap<'a>(
        blocks: &'a Vec<(u64, Block)>,
        traces: &'a [Trace],
        modules: &'a [ModuleFile],
        sample_bytes: u64,
    ) -> Heap<'a> {
        Heap {
            pid: 7,
            blocks,
            traces,
            now_ns: 10,
            counters: Counters::default(),
            sample_bytes,
            modules,
            allocated: &[],
        }
    }

    fn opts() -> ViewOptions {
        ViewOptions {
            format: super::super::Format::Pprof,
            ..ViewOptions::default()
        }
    }

    fn decode(bytes: &[u8]) -> proto::Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .unwrap();
        proto::Profile::decode(raw.as_slice()).unwrap()
    }

    /// Each sample as (function names leaf first, values, labels as text).
    fn samples(p: &proto::Profile) -> Vec<(Vec<String>, Vec<i64>, Vec<String>)> {
        let s = |i: i64| p.string_table[usize::try_from(i).unwrap()].clone();
        p.sample
            .iter()
            .map(|smp| {
                let names = smp
                    .location_id
                    .iter()
                    .map(|&id| {
                        let loc = &p.location[usize::try_from(id - 1).unwrap()];
                        assert_eq!(loc.id, id);
                        let line = &loc.line[0];
                        let f = &p.function[usize::try_from(line.function_id - 1).unwrap()];
                        format!("{}:{}", s(f.name), line.line)
                    })
                    .collect();
                let labels = smp
                    .label
                    .iter()
                    .map(|l| format!("{}={}{}", s(l.key), s(l.str), l.num))
                    .collect();
                (names, smp.value.clone(), labels)
            })
            .collect()
    }

    /// The profile's sample types: (type, unit).
    fn types(p: &proto::Profile) -> Vec<(&str, &str)> {
        let s = |i: i64| p.string_table[usize::try_from(i).unwrap()].as_str();
        p.sample_type
            .iter()
            .map(|v| (s(v.r#type), s(v.unit)))
            .collect()
    }

    /// Where the heap knows what each call path allocated since the start, Go's four types;
    /// a path that holds nothing live is a sample too; `allocs` makes `alloc_space` the
    /// default; a size limit leaves the `alloc_*` types out (they cannot be limited so).
    #[test]
    fn allocations_since_the_start_come_first_where_the_heap_has_them() {
        let (b, t, m) = (blocks(), traces(), modules());
        let allocated: Vec<Allocated> = [(3, 100), (1, 4000), (1, 7), (5, 10)]
            .iter()
            .map(|&(n, size)| {
                let mut a = Allocated::default();
                (0..n).for_each(|_| a.add(size, 0));
                a
            })
            .collect();
        let profile = |allocs: bool, opts: ViewOptions| {
            let mut out = Vec::new();
            let mut pr = PprofPrinter::new(opts, &mut out);
            if allocs {
                pr = pr.allocs();
            }
            let heap = Heap {
                allocated: &allocated,
                ..heap(&b, &t, &m, 0)
            };
            pr.view(&ProcView::of_heap(heap), &Facts::default())
                .unwrap();
            decode(&out)
        };
        for (allocs, default) in [(false, "inuse_space"), (true, "alloc_space")] {
            let p = profile(allocs, opts());
            let s = |i: i64| p.string_table[usize::try_from(i).unwrap()].as_str();
            assert_eq!(
                types(&p),
                [
                    ("alloc_objects", "count"),
                    ("alloc_space", "bytes"),
                    ("inuse_objects", "count"),
                    ("inuse_space", "bytes")
                ]
            );
            assert_eq!(s(p.default_sample_type), default);
            let values: Vec<Vec<i64>> = samples(&p).into_iter().map(|(_, v, _)| v).collect();
            assert_eq!(
                values,
                [
                    vec![3, 300, 2, 200],
                    vec![1, 4000, 1, 4000],
                    vec![1, 7, 1, 7],
                    vec![5, 50, 0, 0]
                ]
            );
        }
        let limited = ViewOptions {
            filter: Filter {
                min_size: Some(8),
                ..Filter::default()
            },
            ..opts()
        };
        let p = profile(true, limited);
        assert_eq!(p.sample_type.len(), 2);
        let values: Vec<Vec<i64>> = samples(&p).into_iter().map(|(_, v, _)| v).collect();
        assert_eq!(values, [vec![2, 200], vec![1, 4000]]);
    }

    #[test]
    fn one_heap_is_one_sample_per_call_path_leaf_first_with_mappings() {
        let (b, t, m) = (blocks(), traces(), modules());
        let mut out = Vec::new();
        let mut pr = PprofPrinter::new(opts(), &mut out);
        pr.view(&ProcView::of_heap(heap(&b, &t, &m, 0)), &Facts::default())
            .unwrap();
        let p = decode(&out);
        let s = |i: i64| p.string_table[usize::try_from(i).unwrap()].as_str();
        assert_eq!(s(0), "");
        assert_eq!(
            types(&p),
            [("inuse_objects", "count"), ("inuse_space", "bytes")]
        );
        let period = p.period_type.as_ref().unwrap();
        assert_eq!(
            (s(period.r#type), s(period.unit), p.period),
            ("space", "bytes", 1)
        );
        assert_eq!(s(p.default_sample_type), "inuse_space");
        let leaf = |n: &str| n.to_string();
        assert_eq!(
            samples(&p),
            [
                (vec![leaf("leaf:3"), leaf("main:9")], vec![2, 200], vec![]),
                (
                    vec![
                        leaf("other:5"),
                        leaf("main:9"),
                        leaf("[frame limit reached]:0")
                    ],
                    vec![1, 4000],
                    vec![]
                ),
                (
                    vec![leaf("[unknown] 0x99990000:0"), leaf("[stack lost]:0")],
                    vec![1, 7],
                    vec![]
                ),
            ]
        );
        // `main` is one location; the frames are in the one mapping, with its build id; the
        // unknown frame and the markers are in none.
        assert_eq!(p.mapping.len(), 1);
        let map = &p.mapping[0];
        assert_eq!(
            (s(map.filename), s(map.build_id)),
            ("/usr/bin/prog", "abcdef01")
        );
        assert_eq!(
            (map.id, map.memory_start, map.memory_limit),
            (1, 0x1000, 0x2000)
        );
        let mapped: Vec<(u64, u64)> = p
            .location
            .iter()
            .map(|l| (l.address, l.mapping_id))
            .collect();
        assert_eq!(
            mapped,
            [
                (0x1100, 1),
                (0x1200, 1),
                (0x1300, 1),
                (0, 0),
                (0x9999_0000, 0),
                (0, 0)
            ]
        );
        let unknown = p
            .function
            .iter()
            .find(|f| s(f.system_name).starts_with("[unknown]"));
        assert_eq!(s(unknown.unwrap().system_name), "[unknown] (0x99990000)");
        let f = &p.function[0];
        assert_eq!(
            (s(f.name), s(f.system_name), s(f.filename)),
            ("leaf", "leaf", "a.c")
        );
    }

    /// Sampled heaps: each call path's figures are the estimates the tables and JSON show,
    /// and the period is the sampling gap.
    #[test]
    fn sampled_figures_are_the_summarys_estimates() {
        let (b, t, m) = (blocks(), traces(), modules());
        let h = heap(&b, &t, &m, 512);
        let mut out = Vec::new();
        PprofPrinter::new(opts(), &mut out)
            .view(&ProcView::of_heap(heap(&b, &t, &m, 512)), &Facts::default())
            .unwrap();
        let p = decode(&out);
        assert_eq!(p.period, 512);
        let sum = p
            .sample
            .iter()
            .fold((0, 0), |a, s| (a.0 + s.value[0], a.1 + s.value[1]));
        let (objects, bytes) =
            summarize(&h, &opts().filter, crate::analysis::GroupBy::Stack).total();
        assert_eq!(
            sum,
            (
                i64::try_from(objects).unwrap(),
                i64::try_from(bytes).unwrap()
            )
        );
        // Two 100-byte blocks at 512: each stands for 1 / (1 - e^(-100/512)) = 5.636
        // blocks; 11.27 objects and 1127.25 bytes, rounded.
        assert_eq!(p.sample[0].value, [11, 1127]);
    }

    /// Several processes, and processes that ended before (`--all`): one profile, each
    /// sample labelled with its process.
    #[test]
    fn processes_are_labelled_samples_of_one_profile() {
        let (b, t, m) = (blocks(), traces(), modules());
        let view = |pid, comm: &str| ProcView {
            id: Identity {
                pid,
                comm: comm.into(),
                ..Identity::default()
            },
            ..ProcView::of_heap(heap(&b, &t, &m, 0))
        };
        let mut out = Vec::new();
        let mut pr = PprofPrinter::new(opts(), &mut out);
        pr.ended(&view(5, "early")).unwrap();
        pr.processes(&[view(7, "a"), view(8, "")], &Facts::default())
            .unwrap();
        // A file holds one profile.
        let again = pr.processes(&[view(7, "a")], &Facts::default());
        assert!(matches!(again, Err(ReportError::Unsupported { .. })));
        drop(pr);
        let p = decode(&out);
        let labels: Vec<Vec<String>> = samples(&p).into_iter().map(|s| s.2).collect();
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let early = l(&["pid=5", "comm=early0"]);
        let a = l(&["pid=7", "comm=a0"]);
        let unnamed = l(&["pid=8"]);
        assert_eq!(
            labels,
            [
                early.clone(),
                early.clone(),
                early,
                a.clone(),
                a.clone(),
                a,
                unnamed.clone(),
                unnamed.clone(),
                unnamed
            ]
        );
        // The processes share the file's mapping, its functions and locations.
        assert_eq!((p.mapping.len(), p.location.len()), (1, 6));
    }

    #[test]
    fn reports_without_call_paths_are_refused_with_a_hint() {
        let mut out = Vec::new();
        let mut pr = PprofPrinter::new(opts(), &mut out);
        let diff = pr.diff(&Diff::default(), None).unwrap_err().to_string();
        assert!(
            diff.starts_with("--format pprof cannot show a diff; "),
            "{diff}"
        );
        assert!(diff.contains("-diff_base"), "{diff}");
        drop(pr);
        assert!(out.is_empty());
    }

    fn leak_report(group_by: GroupBy) -> LeakReport {
        use crate::{analysis::LeakRow, model::LeakKind};
        let row = |kind, frames: Vec<Frame>, end, objects, bytes| LeakRow {
            kind,
            key: Key::Stack { frames, end },
            objects,
            bytes,
            indirect_bytes: 0,
            stack: Vec::new(),
            retention: Vec::new(),
        };
        LeakReport {
            pid: 7,
            group_by,
            rows: vec![
                row(
                    LeakKind::DefinitelyLost,
                    vec![frame(Some("leaf"), 0x1100, Some(3))],
                    None,
                    3,
                    300,
                ),
                row(
                    LeakKind::Reachable,
                    vec![frame(Some("other"), 0x1300, Some(5))],
                    Some("[stack lost]"),
                    1,
                    40,
                ),
            ],
            totals: Default::default(),
            unconfirmed: Default::default(),
            facts: Default::default(),
            counters: Counters::default(),
        }
    }

    /// A leak check grouped by stack: one sample per loss record, labelled with its kind.
    #[test]
    fn loss_records_by_stack_are_samples_labelled_with_their_kind() {
        let mut out = Vec::new();
        PprofPrinter::new(opts(), &mut out)
            .leaks(&leak_report(GroupBy::Stack))
            .unwrap();
        let p = decode(&out);
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            samples(&p),
            [
                (l(&["leaf:3"]), vec![3, 300], l(&["kind=definitely_lost0"])),
                (
                    l(&["other:5", "[stack lost]:0"]),
                    vec![1, 40],
                    l(&["kind=reachable0"])
                ),
            ]
        );
        let mut out = Vec::new();
        let err = PprofPrinter::new(opts(), &mut out)
            .leaks(&leak_report(GroupBy::Site))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--group-by stack"), "{err}");
    }

    /// Processes that ended before a one-process final report stay in the profile; then
    /// every sample says whose it is.
    #[test]
    fn ended_processes_stay_in_a_final_view() {
        let (b, t, m) = (blocks(), traces(), modules());
        let view = |pid| ProcView {
            id: Identity {
                pid,
                ..Identity::default()
            },
            ..ProcView::of_heap(heap(&b, &t, &m, 0))
        };
        let mut out = Vec::new();
        let mut pr = PprofPrinter::new(opts(), &mut out);
        pr.ended(&view(5)).unwrap();
        pr.view(&view(6), &Facts::default()).unwrap();
        drop(pr);
        let labels: Vec<Vec<String>> = samples(&decode(&out)).into_iter().map(|s| s.2).collect();
        let five = vec!["pid=5".to_string()];
        let six = vec!["pid=6".to_string()];
        assert_eq!(
            labels,
            [
                five.clone(),
                five.clone(),
                five,
                six.clone(),
                six.clone(),
                six
            ]
        );
    }
}
