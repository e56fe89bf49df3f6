//! Finding the target's allocator, and loading and attaching muppy's eBPF probes to it.
//!
//! The probes go on the libc the target actually maps, resolved through `/proc/PID/root` so a
//! target in another mount namespace resolves too. Uprobes fire by address: functions that share
//! an address (Debian's `aligned_alloc` and `memalign`) get one probe, named for all of them.

use std::{
    fs,
    num::NonZeroU32,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, StackTraceMap},
    programs::{UProbe, uprobe::UProbeAttachPoint, uprobe::UProbeScope},
};
use muppy_common::{
    AllocFn, COUNTDOWN_MAP, DROP_KINDS, DROPS_MAP, Drop, INFLIGHT_MAP, INTERVALS, INTERVALS_MAP,
    RING_MAP, SAMPLED_MAP, SLOTS_MAP, STACKS_MAP, cookie,
};
use object::{Object, ObjectSection, ObjectSymbol};

/// The probes, compiled by the build script from `muppy-ebpf`.
static PROBES_ELF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/muppy"));

/// What went wrong finding, loading or attaching probes.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The target maps no libc.
    #[error(
        "process {pid} maps no libc (statically linked, or another allocator); nothing to probe"
    )]
    NoLibcInProcess {
        /// The target.
        pid: u32,
    },
    /// The program to launch links no libc.
    #[error("{program} does not link libc dynamically (statically linked?); nothing to probe")]
    NoLibcInProgram {
        /// The program.
        program: String,
    },
    /// Reading a file failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The library is not an ELF file object can parse.
    #[error("cannot parse {path} as ELF: {reason}")]
    Elf {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// malloc itself is missing: nothing can be traced.
    #[error("{path} has no malloc symbol; is it really the allocator?")]
    NoMalloc {
        /// The library.
        path: String,
    },
    /// The kernel refused to load the programs.
    #[error("loading the eBPF probes failed (muppy-trace needs root, or CAP_BPF and CAP_PERFMON)")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program or map is missing from the embedded object (a build problem).
    #[error("the embedded eBPF object has no {0}")]
    Missing(&'static str),
    /// A program failed to load or attach.
    #[error("attaching {what} to {path} failed")]
    Attach {
        /// Which probe.
        what: String,
        /// The library.
        path: String,
        /// Why.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map could not be opened.
    #[error("opening map {name} failed")]
    Map {
        /// Which map.
        name: &'static str,
        /// Why.
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// The libc a process has mapped, as a path this process can open (through `/proc/PID/root`).
pub fn libc_of_pid(pid: u32) -> Result<PathBuf, ProbeError> {
    let maps_path = format!("/proc/{pid}/maps");
    let text = fs::read_to_string(&maps_path).map_err(|source| ProbeError::Read {
        path: maps_path,
        source,
    })?;
    let seen = crate::symbols::parse_maps(&text)
        .into_iter()
        .map(|e| e.path)
        .find(|p| is_libc(p))
        .ok_or(ProbeError::NoLibcInProcess { pid })?;
    Ok(Path::new(&format!("/proc/{pid}/root")).join(seen.trim_start_matches('/')))
}

fn is_libc(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "libc.so.6" || (name.starts_with("libc-") && name.ends_with(".so"))
}

/// The libc `program` will load, as its own dynamic loader resolves it (`ld.so --list`, which
/// maps the libraries without running the program).
pub fn libc_of_program(program: &Path) -> Result<PathBuf, ProbeError> {
    let shown = program.display().to_string();
    let data = fs::read(program).map_err(|source| ProbeError::Read {
        path: shown.clone(),
        source,
    })?;
    let file = object::File::parse(&*data).map_err(|e| ProbeError::Elf {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let interp = file
        .section_by_name(".interp")
        .and_then(|s| s.data().ok())
        .map(|d| {
            String::from_utf8_lossy(d)
                .trim_end_matches('\0')
                .to_string()
        })
        .ok_or_else(|| ProbeError::NoLibcInProgram {
            program: shown.clone(),
        })?;
    let out = Command::new(&interp)
        .arg("--list")
        .arg(program)
        .output()
        .map_err(|source| ProbeError::Read {
            path: interp.clone(),
            source,
        })?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("=>").map(|(_, r)| r.trim()))
        .filter_map(|r| r.split_whitespace().next())
        .find(|p| is_libc(p))
        .map(PathBuf::from)
        .ok_or(ProbeError::NoLibcInProgram { program: shown })
}

/// One probe location: a file offset and the functions that live there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePoint {
    /// Functions at this address (more than one where symbols alias).
    pub funcs: Vec<AllocFn>,
    /// File offset of the functions' entry.
    pub entry: u64,
    /// File offset of the probed instruction (see [`crate::placement`]).
    pub offset: u64,
    /// How far above the stack pointer the return address sits there.
    pub ret_addr_sp_offset: u8,
    /// Why the probe sits there.
    pub reason: String,
}

impl ProbePoint {
    /// `aligned_alloc=memalign` style name.
    pub fn name(&self) -> String {
        self.funcs
            .iter()
            .map(|f| f.symbol())
            .collect::<Vec<_>>()
            .join("=")
    }
}

/// Where to probe in one library, and what it lacks.
#[derive(Clone, Debug)]
pub struct ProbePlan {
    /// The library, as this process opens it.
    pub path: PathBuf,
    /// One entry per distinct address.
    pub points: Vec<ProbePoint>,
    /// Optional functions the library does not export.
    pub missing: Vec<AllocFn>,
}

/// Resolves each allocator entry point in `lib` to a file offset.
pub fn plan(lib: &Path) -> Result<ProbePlan, ProbeError> {
    let shown = lib.display().to_string();
    let data = fs::read(lib).map_err(|source| ProbeError::Read {
        path: shown.clone(),
        source,
    })?;
    let file = object::File::parse(&*data).map_err(|e| ProbeError::Elf {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let mut points: Vec<ProbePoint> = Vec::new();
    let mut missing = Vec::new();
    let code: Vec<(u64, &[u8])> = file
        .sections()
        .filter(|s| s.kind() == object::SectionKind::Text)
        .filter_map(|s| Some((s.address(), s.data().ok()?)))
        .collect();
    let read = |addr: u64| -> Option<&[u8]> {
        code.iter().find_map(|(start, data)| {
            let off = usize::try_from(addr.checked_sub(*start)?).ok()?;
            data.get(off..).filter(|d| !d.is_empty())
        })
    };
    for func in AllocFn::ALL {
        let sym = file.dynamic_symbols().find(|s| {
            s.is_definition()
                && s.kind() == object::SymbolKind::Text
                && s.name() == Ok(func.symbol())
        });
        let Some((addr, entry)) =
            sym.and_then(|s| Some((s.address(), file_offset(&file, s.address())?)))
        else {
            missing.push(func);
            continue;
        };
        match points.iter_mut().find(|p| p.entry == entry) {
            Some(p) => p.funcs.push(func),
            None => {
                let at = crate::placement::place(&read, addr);
                points.push(ProbePoint {
                    funcs: vec![func],
                    entry,
                    offset: entry + at.skip,
                    ret_addr_sp_offset: at.ret_addr_sp_offset,
                    reason: at.reason,
                });
            }
        }
    }
    if missing.contains(&AllocFn::Malloc) {
        return Err(ProbeError::NoMalloc { path: shown });
    }
    Ok(ProbePlan {
        path: lib.to_path_buf(),
        points,
        missing,
    })
}

fn file_offset(file: &object::File<'_>, addr: u64) -> Option<u64> {
    file.sections().find_map(|s| {
        let (off, _) = s.file_range()?;
        (s.address() <= addr && addr < s.address() + s.size()).then(|| addr - s.address() + off)
    })
}

/// Loaded probes: the programs, attached to one process, and the maps user space reads.
pub struct Probes {
    ebpf: Ebpf,
    drops: PerCpuArray<MapData, u64>,
    /// Attach the empty programs instead (the benchmark's floor).
    empty: bool,
    ring_bytes: u32,
}

/// Sizes for the probes' maps.
#[derive(Clone, Copy, Debug)]
pub struct ProbeConfig {
    /// Ring buffer bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Threads that can be inside an allocator call at once in the fallback map.
    pub max_inflight: u32,
    /// Per-thread in-flight slots, a power of two (thread ids modulo this; 64 bytes each in the
    /// kernel). Threads whose ids collide while both are inside an allocator use the fallback
    /// map.
    pub slots: u32,
    /// Distinct user stacks the stack map can hold; 0 turns stack collection off.
    pub stacks: u32,
    /// Attach empty programs at the same points, recording nothing: the cost of the traps
    /// alone, for the benchmark.
    pub empty: bool,
    /// Sample allocations byte-weighted with this mean gap in bytes; 0 records every one.
    pub sample_bytes: u64,
    /// Sampled blocks that can be live at once (the kernel's set of them).
    pub max_sampled: u32,
}

/// The sampling gaps: [`INTERVALS`] quantiles of the exponential distribution with mean
/// `mean` bytes (at the midpoints of equal-probability slices), scaled so that their mean is
/// exactly `mean`. A uniformly random entry is then an exponential gap, which makes the
/// samples a Poisson process over the bytes allocated.
pub fn sampling_gaps(mean: u64) -> Vec<u64> {
    let n = f64::from(INTERVALS);
    let raw: Vec<f64> = (0..INTERVALS)
        .map(|i| -(1.0 - (f64::from(i) + 0.5) / n).ln())
        .collect();
    let scale = mean as f64 * n / raw.iter().sum::<f64>();
    raw.iter()
        .map(|q| {
            // At most ln(2n) ≈ 9 times the mean: far inside u64.
            #[expect(clippy::cast_possible_truncation, reason = "bounded above")]
            let gap = (q * scale).round() as u64;
            gap.max(1)
        })
        .collect()
}

/// Writes the sampling gaps and each CPU's first countdown.
fn fill_sampling_maps(ebpf: &mut Ebpf, sample_bytes: u64, cpus: usize) -> Result<(), ProbeError> {
    let mut gaps: Array<_, u64> = ebpf
        .map_mut(INTERVALS_MAP)
        .ok_or(ProbeError::Missing(INTERVALS_MAP))?
        .try_into()
        .map_err(|e| map_err(INTERVALS_MAP, e))?;
    let all = sampling_gaps(sample_bytes);
    for (i, gap) in (0u32..).zip(&all) {
        gaps.set(i, *gap, 0)
            .map_err(|e| map_err(INTERVALS_MAP, e))?;
    }
    // Each CPU starts a random gap away from its first sample, not at zero (which would sample
    // every CPU's first allocation whatever its size).
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos().into())
        | 1;
    let starts: Vec<i64> = (0..cpus)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let gap = all[usize::try_from(seed % u64::from(INTERVALS)).unwrap_or(0)];
            i64::try_from(gap).unwrap_or(i64::MAX)
        })
        .collect();
    let mut countdown: PerCpuArray<_, i64> = ebpf
        .map_mut(COUNTDOWN_MAP)
        .ok_or(ProbeError::Missing(COUNTDOWN_MAP))?
        .try_into()
        .map_err(|e| map_err(COUNTDOWN_MAP, e))?;
    let values = aya::maps::PerCpuValues::try_from(starts).map_err(|e| ProbeError::Read {
        path: "per-CPU values".into(),
        source: e,
    })?;
    countdown
        .set(0, values, 0)
        .map_err(|e| map_err(COUNTDOWN_MAP, e))
}

impl Probes {
    /// Loads the programs into the kernel (not attached yet).
    pub fn load(cfg: ProbeConfig) -> Result<Self, ProbeError> {
        // SAFETY: sysconf has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // Wake the reader when the CPUs together may have filled an eighth of the ring with the
        // largest records (72 bytes and an 8-byte header).
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| ProbeError::Read {
            path: "/sys/devices/system/cpu/possible".into(),
            source: e,
        })?;
        let wakeup = (u64::from(cfg.ring_bytes) / 8 / 80 / cpus.max(1) as u64).max(1);
        let want_stacks = u32::from(cfg.stacks > 0);
        let sampling = u32::from(cfg.sample_bytes > 0);
        let mut ebpf = EbpfLoader::new()
            // The probes need no CO-RE relocation; drop the kernel's BTF (megabytes) at once.
            .btf(None)
            .map_max_entries(RING_MAP, cfg.ring_bytes)
            .map_max_entries(INFLIGHT_MAP, cfg.max_inflight)
            .map_max_entries(SLOTS_MAP, cfg.slots.max(1))
            .override_global("SLOT_MASK", &(cfg.slots.max(1) - 1), true)
            .map_max_entries(STACKS_MAP, cfg.stacks.max(1))
            .override_global("PAGE_SIZE", &page, true)
            .override_global("WAKEUP_EVERY", &wakeup, true)
            .override_global("WANT_STACKS", &want_stacks, true)
            .override_global("SAMPLING", &sampling, true)
            .map_max_entries(SAMPLED_MAP, if sampling != 0 { cfg.max_sampled } else { 1 })
            .load(PROBES_ELF)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;
        for name in [
            "alloc_enter",
            "alloc_exit",
            "free_enter",
            "noop_enter",
            "noop_exit",
        ] {
            let prog: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or(ProbeError::Missing("a probe program"))?
                .try_into()
                .map_err(|e| attach_err(name, Path::new("-"), e))?;
            prog.load()
                .map_err(|e| attach_err(name, Path::new("-"), e))?;
        }
        if cfg.sample_bytes > 0 {
            fill_sampling_maps(&mut ebpf, cfg.sample_bytes, cpus)?;
        }
        let drops = ebpf
            .take_map(DROPS_MAP)
            .ok_or(ProbeError::Missing(DROPS_MAP))?;
        let drops = PerCpuArray::try_from(drops).map_err(|e| map_err(DROPS_MAP, e))?;
        Ok(Self {
            ebpf,
            drops,
            empty: cfg.empty,
            ring_bytes: cfg.ring_bytes,
        })
    }

    /// Attaches every point of `plan`, firing only in process `pid`. Return probes go first, so
    /// an entry that is seen always has its return seen too.
    pub fn attach(&mut self, plan: &ProbePlan, pid: u32) -> Result<(), ProbeError> {
        let scope = match NonZeroU32::new(pid) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        for point in &plan.points {
            let func = point.funcs[0];
            let name = point.name();
            let cookie = cookie(func, point.ret_addr_sp_offset);
            let (enter, exit) = if self.empty {
                ("noop_enter", "noop_exit")
            } else if func == AllocFn::Free {
                ("free_enter", "")
            } else {
                ("alloc_enter", "alloc_exit")
            };
            // free has no return probe; the floor measurement mirrors that.
            if func != AllocFn::Free {
                self.attach_one(exit, &name, plan, point.offset, 0, scope)?;
            }
            self.attach_one(enter, &name, plan, point.offset, cookie, scope)?;
        }
        Ok(())
    }

    fn attach_one(
        &mut self,
        prog: &'static str,
        name: &str,
        plan: &ProbePlan,
        offset: u64,
        cookie: u64,
        scope: UProbeScope,
    ) -> Result<(), ProbeError> {
        let what = format!("{prog} ({name})");
        let p: &mut UProbe = self
            .ebpf
            .program_mut(prog)
            .ok_or(ProbeError::Missing("a probe program"))?
            .try_into()
            .map_err(|e| attach_err(&what, &plan.path, e))?;
        let point = UProbeAttachPoint {
            location: offset.into(),
            cookie: Some(cookie),
        };
        p.attach(point, &plan.path, scope)
            .map_err(|e| attach_err(&what, &plan.path, e))?;
        Ok(())
    }

    /// Takes the ring buffer the probes write events into, mapped for reading.
    pub fn take_ring(&mut self) -> Result<crate::ring::Ring, ProbeError> {
        let map = self
            .ebpf
            .take_map(RING_MAP)
            .ok_or(ProbeError::Missing(RING_MAP))?;
        let aya::maps::Map::RingBuf(data) = map else {
            return Err(ProbeError::Missing(RING_MAP));
        };
        crate::ring::Ring::new(data, self.ring_bytes).map_err(|source| ProbeError::Read {
            path: "the ring buffer's memory".into(),
            source,
        })
    }

    /// Takes the stack map that events' stack ids index.
    pub fn take_stacks(&mut self) -> Result<StackTraceMap<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map(STACKS_MAP)
            .ok_or(ProbeError::Missing(STACKS_MAP))?;
        StackTraceMap::try_from(map).map_err(|e| map_err(STACKS_MAP, e))
    }

    fn drops(&self, reason: u32) -> u64 {
        self.drops
            .get(&reason, 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum::<u64>())
    }

    /// Events the probes could not deliver so far, over all CPUs and reasons: each one an
    /// allocation or free missing from the table.
    pub fn lost_events(&self) -> u64 {
        (0..DROP_KINDS)
            .filter(|&i| i != Drop::StackLost as u32)
            .map(|i| self.drops(i))
            .sum()
    }

    /// Per program: (name, runs, total run time), as the kernel counts while
    /// [`aya::sys::enable_stats`] is on.
    pub fn program_stats(&self) -> Vec<(&str, u64, Duration)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some((name, info.run_count(), info.run_time()))
            })
            .filter(|(_, runs, _)| *runs > 0)
            .collect()
    }

    /// Allocations recorded without their stack because the stack map had no room.
    pub fn lost_stacks(&self) -> u64 {
        self.drops(Drop::StackLost as u32)
    }
}

fn attach_err(what: &str, path: &Path, e: aya::programs::ProgramError) -> ProbeError {
    ProbeError::Attach {
        what: what.to_string(),
        path: path.display().to_string(),
        source: Box::new(e),
    }
}

fn map_err(name: &'static str, e: aya::maps::MapError) -> ProbeError {
    ProbeError::Map {
        name,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_gaps_average_the_mean_and_look_exponential() {
        let gaps = sampling_gaps(1024);
        assert_eq!(gaps.len(), INTERVALS as usize);
        let mean = gaps.iter().sum::<u64>() as f64 / gaps.len() as f64;
        assert!((mean - 1024.0).abs() < 1.0, "{mean}");
        // Exponential: about 63% of gaps are below the mean, the median is ln 2 of it.
        let below = gaps.iter().filter(|&&g| g < 1024).count() as f64 / gaps.len() as f64;
        assert!((below - 0.632).abs() < 0.01, "{below}");
        assert!((gaps[gaps.len() / 2] as f64 / 1024.0 - 0.693).abs() < 0.01);
    }

    #[test]
    fn recognises_libc_paths() {
        assert!(is_libc("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_libc("/lib/libc-2.31.so"));
        assert!(!is_libc("/usr/lib/libcrypt.so.1"));
        assert!(!is_libc("/usr/lib/libc++.so.1"));
    }

    #[test]
    fn plans_this_machines_libc_with_aliases_merged() {
        let lib = libc_of_pid(std::process::id()).expect("the test process maps libc");
        let plan = plan(&lib).unwrap();
        let all: Vec<AllocFn> = plan.points.iter().flat_map(|p| p.funcs.clone()).collect();
        assert!(all.contains(&AllocFn::Malloc) && all.contains(&AllocFn::Free));
        // Every function is either probed once or reported missing.
        assert_eq!(all.len() + plan.missing.len(), AllocFn::ALL.len());
        let mut offsets: Vec<u64> = plan.points.iter().map(|p| p.offset).collect();
        offsets.dedup();
        assert_eq!(offsets.len(), plan.points.len());
    }
}
