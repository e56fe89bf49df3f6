//! Loading the probes into the kernel, attaching them, and the maps user space reads and writes.

use std::{num::NonZeroU32, path::Path, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray},
    programs::{RawTracePoint, UProbe, uprobe::UProbeAttachPoint, uprobe::UProbeScope},
};
use muppy_common::{
    AllocFn, CodeRanges, Drop, FREE_CALLERS_ALWAYS, KernelLayout, MapsSeen, StackMode, cookie,
    names::{GlobalName, global, map, program, tracepoint},
};

use super::{ExitPoint, ProbeError, ProbePlan, sampling::fill_sampling_maps};

/// The probes, compiled by the build script from `muppy-ebpf`.
static PROBES_ELF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/muppy"));

/// The probes' object, 8-byte aligned (as the ELF parser wants it) and writable.
struct Object(Vec<u64>);

impl Object {
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the words' memory viewed as bytes, no longer than it (PROBES_ELF's length
        // rounded up to whole words).
        unsafe {
            std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), PROBES_ELF.len())
        }
    }
}

/// The probes' object for the running kernel, with where its structures keep what the probes
/// read of an exiting process's mappings: the kfunc calls that walk those are written in from
/// the kernel's BTF. Where that cannot be done (no BTF, no such kfuncs), the layout says so
/// (`ok` 0) and the probes walk nothing; they still load, since the unpatched calls are then
/// never reached and the verifier skips what is never reached.
fn kernel_object() -> (Object, KernelLayout) {
    let mut obj = Object(vec![0; PROBES_ELF.len().div_ceil(8)]);
    obj.bytes().copy_from_slice(PROBES_ELF);
    let layout = super::btf::Btf::kernel().and_then(|btf| {
        let layout = btf.layout()?;
        let patched = super::btf::patch_kfunc_calls(obj.bytes(), &btf)?;
        Ok(if patched > 0 {
            layout
        } else {
            KernelLayout::default()
        })
    });
    (obj, layout.unwrap_or_default())
}

/// Adds `pid` to (`on`) or removes it from the hash set of pids `map`.
fn set_pid(ebpf: &mut Ebpf, map: &str, pid: u32, on: bool) {
    set_entry(ebpf, map, pid, on.then_some(&1u8));
}

/// Sets (`Some`) or removes process `pid`'s entry in the hash map `map`.
fn set_entry<V: aya::Pod>(ebpf: &mut Ebpf, map: &str, pid: u32, value: Option<&V>) {
    let Some(map) = ebpf.map_mut(map) else {
        return;
    };
    let Ok(mut entries) = aya::maps::HashMap::<_, u32, V>::try_from(map) else {
        return;
    };
    let _ = match value {
        Some(v) => entries.insert(pid, v, 0),
        None => entries.remove(&pid),
    };
}

/// Which processes attached probes fire in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One process (the kernel filters).
    One(NonZeroU32),
    /// Every process (`--all`).
    All,
    /// Every process the probes are told to follow ([`Probes::follow_pid`]): the kernel places
    /// these probes once, not at every fork.
    Followed,
}

/// Sets a global of [`muppy_common::names::global`] with a value of its own type.
trait SetGlobal<'a> {
    fn typed_global<T: aya::Pod>(&mut self, global: GlobalName<T>, value: &'a T) -> &mut Self;
}

impl<'a> SetGlobal<'a> for EbpfLoader<'a> {
    fn typed_global<T: aya::Pod>(&mut self, global: GlobalName<T>, value: &'a T) -> &mut Self {
        self.override_global(global.name, value, true)
    }
}

/// Loaded probes: the programs, attached to one process, and the maps user space reads.
pub struct Probes {
    ebpf: Ebpf,
    drops: PerCpuArray<MapData, u64>,
    /// Attach the empty programs instead (the benchmark's floor).
    empty: bool,
    ring_bytes: u32,
    /// Whether the tracepoint that ends a thread's teardown is attached.
    watching_teardowns: bool,
    /// Whether every free reads its caller (see [`Probes::read_every_free_caller`]).
    every_free_caller: bool,
    /// How the probes' tick counts become ns; `None`: they write ns.
    ticks: Option<crate::clock::Ticks>,
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
    /// How allocations' stacks are taken.
    pub stack_mode: StackMode,
    /// Pages of stack a copy carries (2, 3, 5 or 9: 4 to 32 KiB above the stack pointer).
    pub stack_pages: u32,
    /// Attach empty programs at the same points, recording nothing: the cost of the traps
    /// alone, for the benchmark.
    pub empty: bool,
    /// Sample allocations byte-weighted with this mean gap in bytes; 0 records every one.
    pub sample_bytes: u64,
    /// Sampled blocks that can be live at once (the kernel's set of them).
    pub max_sampled: u32,
    /// Trace the memory mappings of every process, not only those named (`--all`).
    pub all_mappings: bool,
    /// System-wide with a selection: the probes leave out the processes
    /// [`Probes::refuse`] names.
    pub selecting: bool,
}

impl Probes {
    /// Loads the programs into the kernel (not attached yet).
    pub fn load(cfg: ProbeConfig) -> Result<Self, ProbeError> {
        // SAFETY: sysconf has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // Wake the reader when the CPUs together may have filled an eighth of the ring.
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| ProbeError::Read {
            path: "/sys/devices/system/cpu/possible".into(),
            source: e,
        })?;
        let wakeup = (u64::from(cfg.ring_bytes) / 8 / cpus.max(1) as u64).max(1);
        let sampling = u32::from(cfg.sample_bytes > 0);
        let ticks = crate::clock::Ticks::read();
        let (mut elf, layout) = kernel_object();
        let elf = elf.bytes();
        let mut ebpf = EbpfLoader::new()
            // The probes need no CO-RE relocation; drop the kernel's BTF (megabytes) at once.
            .btf(None)
            .map_max_entries(map::EVENTS, cfg.ring_bytes)
            .map_max_entries(map::INFLIGHT, cfg.max_inflight)
            .map_max_entries(map::SLOTS, cfg.slots.max(1))
            .typed_global(global::SLOT_MASK, &(cfg.slots.max(1) - 1))
            .typed_global(global::PAGE_SIZE, &page)
            .typed_global(global::WAKEUP_EVERY, &wakeup)
            .typed_global(global::STACK_MODE, &(cfg.stack_mode as u32))
            .typed_global(global::STACK_PAGES, &cfg.stack_pages)
            .typed_global(global::SAMPLING, &sampling)
            .typed_global(global::TRACER_TGID, &std::process::id())
            .typed_global(global::MAP_ALL, &u32::from(cfg.all_mappings))
            .typed_global(global::SELECTING, &u32::from(cfg.selecting))
            .typed_global(global::TICKS, &u32::from(ticks.is_some()))
            .typed_global(global::KERNEL_LAYOUT, &layout)
            .map_max_entries(
                map::SAMPLED,
                if sampling != 0 { cfg.max_sampled } else { 1 },
            )
            .load(elf)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;
        let entries = AllocFn::ALL.map(AllocFn::entry_program);
        // free_enter is AllocFn::Free's entry program, so it is in `entries` and not here.
        let others = program::UPROBES
            .into_iter()
            .filter(|&p| p != program::FREE_ENTER);
        for name in entries.into_iter().chain(others) {
            let prog: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram { name })?
                .try_into()
                .map_err(|e| load_err(name, e))?;
            prog.load().map_err(|e| load_err(name, e))?;
        }
        if cfg.sample_bytes > 0 {
            fill_sampling_maps(&mut ebpf, cfg.sample_bytes, cpus)?;
        }
        let drops = ebpf
            .take_map(map::DROPS)
            .ok_or(ProbeError::MissingMap { name: map::DROPS })?;
        let drops = PerCpuArray::try_from(drops).map_err(|e| map_err(map::DROPS, e))?;
        Ok(Self {
            ebpf,
            drops,
            empty: cfg.empty,
            ring_bytes: cfg.ring_bytes,
            watching_teardowns: false,
            every_free_caller: false,
            ticks,
        })
    }

    /// Attaches every point of `plan` for `target`. Return probes go first, so an entry that
    /// is seen always has its return seen too.
    /// The probes stay until the session ends (removing one costs the kernel ≈0.1 s).
    pub fn attach(&mut self, plan: &ProbePlan, target: Scope) -> Result<(), ProbeError> {
        // Calls under way as their probes are placed return without an entry: counted apart
        // from lost events until a moment after the last probe is placed.
        self.set_attach_until(u64::MAX);
        let placed = self.attach_points(plan, target);
        self.set_attach_until(crate::clock::monotonic_ns() + muppy_common::ATTACH_GRACE_NS);
        placed
    }

    /// Sets the map that tells the probes until when probes are being placed.
    fn set_attach_until(&mut self, ns: u64) {
        if let Some(map) = self.ebpf.map_mut(map::ATTACH_UNTIL)
            && let Ok(mut a) = Array::<_, u64>::try_from(map)
        {
            let _ = a.set(0, ns, 0);
        }
    }

    fn attach_points(&mut self, plan: &ProbePlan, target: Scope) -> Result<(), ProbeError> {
        let scope = match target {
            Scope::One(pid) => UProbeScope::OneProcess(pid),
            Scope::All | Scope::Followed => UProbeScope::AllProcesses,
        };
        let shared = target == Scope::Followed;
        for lib in &plan.libs {
            for point in &lib.points {
                let func = point.funcs[0];
                let name = point.name();
                let cookie = cookie(func, point.ret_addr_sp_offset);
                let (enter, exit) = match (self.empty, func == AllocFn::Free, shared) {
                    (true, _, _) => (program::NOOP_ENTER, program::NOOP_EXIT),
                    (false, true, false) => (program::FREE_ENTER, ""),
                    (false, true, true) => (program::FREE_ENTER_SHARED, ""),
                    (false, false, false) => (func.entry_program(), program::ALLOC_EXIT),
                    (false, false, true) => {
                        (program::ALLOC_ENTER_SHARED, program::ALLOC_EXIT_SHARED)
                    }
                };
                // free has no return probe; the floor measurement mirrors that.
                if func != AllocFn::Free {
                    self.attach_one(exit, &name, &lib.path, point.offset, 0, scope)?;
                }
                self.attach_one(enter, &name, &lib.path, point.offset, cookie, scope)?;
            }
            if let Some(offset) = lib.teardown.filter(|_| !self.empty) {
                // The end of teardowns first, so that none is counted without its end.
                if !self.watching_teardowns {
                    self.attach_raw(&[(program::TEARDOWN_EXIT, tracepoint::SCHED_PROCESS_EXIT)])?;
                    self.watching_teardowns = true;
                }
                self.attach_one(
                    program::THREAD_TEARDOWN,
                    "teardown",
                    &lib.path,
                    offset,
                    0,
                    scope,
                )?;
            }
        }
        Ok(())
    }

    /// How far short of the truth an age can be, in ns (0 if exact): see [`crate::clock`].
    pub fn age_resolution_ns(&self) -> u64 {
        self.ticks
            .as_ref()
            .map_or(0, crate::clock::Ticks::resolution_ns)
    }

    /// From now on every free reads its caller: an allocator without a teardown marker is
    /// probed (see [`super::LibPlan::teardown`]). Once is enough.
    pub fn read_every_free_caller(&mut self) -> Result<(), ProbeError> {
        if self.every_free_caller {
            return Ok(());
        }
        let map = self
            .ebpf
            .map_mut(map::FREE_CALLERS)
            .ok_or(ProbeError::MissingMap {
                name: map::FREE_CALLERS,
            })?;
        let mut a = Array::<_, u64>::try_from(map).map_err(|e| map_err(map::FREE_CALLERS, e))?;
        a.set(FREE_CALLERS_ALWAYS, 1, 0)
            .map_err(|e| map_err(map::FREE_CALLERS, e))?;
        self.every_free_caller = true;
        Ok(())
    }

    /// Holds process `pid` as a thread of it enters `_exit` (at `exit`, in its image): the
    /// `exit_hold` program stops that thread with a `SIGSTOP` the kernel sends
    /// (`si_code == SI_KERNEL`), which the ptrace thread following `pid` must take as the hold
    /// and resume without the signal (see [`crate::target::TreeEvent::ExitCalled`]). Only for
    /// a process so followed: with no tracer the stop would last. Until
    /// [`Probes::release_exit_hold`].
    pub fn hold_exit(&mut self, exit: &ExitPoint, pid: NonZeroU32) -> Result<(), ProbeError> {
        self.attach_one(
            program::EXIT_HOLD,
            "_exit",
            &exit.path,
            exit.offset,
            0,
            UProbeScope::OneProcess(pid),
        )?;
        self.set_exit_hold(pid.get())
    }

    /// Stops holding any process at `_exit` at once (the probe stays until the probes are
    /// removed, doing nothing): call before the session lets its tracer go.
    pub fn release_exit_hold(&mut self) -> Result<(), ProbeError> {
        self.set_exit_hold(0)
    }

    fn set_exit_hold(&mut self, pid: u32) -> Result<(), ProbeError> {
        let map = self
            .ebpf
            .map_mut(map::EXIT_HOLD)
            .ok_or(ProbeError::MissingMap {
                name: map::EXIT_HOLD,
            })?;
        let mut a = Array::<_, u32>::try_from(map).map_err(|e| map_err(map::EXIT_HOLD, e))?;
        a.set(0, pid, 0).map_err(|e| map_err(map::EXIT_HOLD, e))
    }

    fn attach_one(
        &mut self,
        prog: &'static str,
        name: &str,
        path: &Path,
        offset: u64,
        cookie: u64,
        scope: UProbeScope,
    ) -> Result<(), ProbeError> {
        let what = format!("{prog} ({name})");
        let p: &mut UProbe = self
            .ebpf
            .program_mut(prog)
            .ok_or(ProbeError::MissingProgram { name: prog })?
            .try_into()
            .map_err(|e| attach_err(&what, path, e))?;
        let point = UProbeAttachPoint {
            location: offset.into(),
            cookie: Some(cookie),
        };
        p.attach(point, path, scope)
            .map_err(|e| attach_err(&what, path, e))?;
        Ok(())
    }

    /// System-wide tracing: user space read process `pid`'s executable file mappings for one
    /// of its images, which sum to `seen.sum` ([`muppy_common::mapping_sum`]); `None`: forget
    /// the process. At its exit the probes send its mappings unless that image is exiting
    /// and they still sum so.
    pub fn maps_seen(&mut self, pid: u32, seen: Option<MapsSeen>) {
        set_entry(&mut self.ebpf, map::MAPS_SEEN, pid, seen.as_ref());
    }

    /// System-wide tracing: sends process exec and exit events (sched tracepoints), and
    /// before an exec the old program's mappings user space has not seen.
    pub fn watch_processes(&mut self) -> Result<(), ProbeError> {
        self.attach_raw(&[
            (program::PROC_EXEC, tracepoint::SCHED_PROCESS_EXEC),
            (program::PROC_EXIT, tracepoint::SCHED_PROCESS_EXIT),
        ])?;
        // Kernels before 6.10 have no such tracepoint: an image that ends by exec is then
        // named from what user space read of it, as before.
        let _ = self.attach_raw(&[(program::PROC_PREPARE_EXEC, tracepoint::SCHED_PREPARE_EXEC)]);
        Ok(())
    }

    /// Traces the memory mappings that processes make themselves (system call tracepoints):
    /// those of every process with `all`, else of the processes [`Probes::map_pid`] names.
    pub fn watch_mappings(&mut self) -> Result<(), ProbeError> {
        self.attach_raw(&[
            (program::MAP_ENTER, tracepoint::SYS_ENTER),
            (program::MAP_EXIT, tracepoint::SYS_EXIT),
        ])
    }

    /// Attaches each (program, raw tracepoint) pair.
    fn attach_raw(&mut self, pairs: &[(&'static str, &str)]) -> Result<(), ProbeError> {
        for &(name, event) in pairs {
            let prog: &mut RawTracePoint = self
                .ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram { name })?
                .try_into()
                .map_err(|e| attach_err(name, Path::new(event), e))?;
            // Loaded only when wanted: most sessions need neither --all nor --mmap.
            prog.load()
                .map_err(|e| attach_err(name, Path::new(event), e))?;
            prog.attach(event)
                .map_err(|e| attach_err(name, Path::new(event), e))?;
        }
        Ok(())
    }

    /// System-wide with a selection: leaves out process `pid`'s events while it runs the
    /// program it ran after `program` execs (`Some`; counted from the start of tracing, as the
    /// exec events come), or lets them through (`None`). A count, not a flag: a refusal told
    /// after a newer exec does not apply to the new program.
    pub fn refuse(&mut self, pid: u32, program: Option<u64>) {
        set_entry(&mut self.ebpf, map::REFUSED, pid, program.as_ref());
    }

    /// Starts (`on`) or stops following process `pid` through the probes attached with
    /// [`Scope::Followed`].
    pub fn follow_pid(&mut self, pid: u32, on: bool) {
        set_pid(&mut self.ebpf, map::FOLLOWED, pid, on);
    }

    /// Starts (`on`) or stops tracing the memory mappings of process `pid`.
    pub fn map_pid(&mut self, pid: u32, on: bool) {
        set_pid(&mut self.ebpf, map::MAP_PIDS, pid, on);
    }

    /// Takes the ring buffer the probes write events into, mapped for reading.
    pub fn take_ring(&mut self) -> Result<crate::ring::Ring, ProbeError> {
        let map = self
            .ebpf
            .take_map(map::EVENTS)
            .ok_or(ProbeError::MissingMap { name: map::EVENTS })?;
        let aya::maps::Map::RingBuf(data) = map else {
            return Err(ProbeError::MapType {
                name: map::EVENTS,
                expected: "ring buffer",
            });
        };
        crate::ring::Ring::new(data, self.ring_bytes, self.ticks).map_err(|source| {
            ProbeError::RingMapping {
                name: map::EVENTS,
                source,
            }
        })
    }

    /// Sets (`Some`) or clears the code of process `pid` that keeps frame pointers, where
    /// `--unwind auto` walks them rather than copy the stack.
    pub fn set_fp_code(&mut self, pid: u32, code: Option<&CodeRanges>) {
        set_entry(&mut self.ebpf, map::FP_CODE, pid, code);
    }

    fn drops(&self, reason: u32) -> u64 {
        self.drops
            .get(&reason, 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum::<u64>())
    }

    /// Events the probes could not deliver so far, over all CPUs and reasons: each one an
    /// allocation or free missing from the table.
    pub fn lost_events(&self) -> u64 {
        self.lost_events_by_reason().iter().map(|(_, n)| n).sum()
    }

    /// Allocator calls that were under way as their probes were placed: their blocks belong
    /// with what the process allocated before tracing began (see [`Drop::UnderWayAtAttach`]).
    pub fn under_way_at_attach(&self) -> u64 {
        self.drops(Drop::UnderWayAtAttach as u32)
    }

    /// [`Probes::lost_events`] by reason, the non-zero ones.
    pub fn lost_events_by_reason(&self) -> Vec<(Drop, u64)> {
        Drop::ALL
            .into_iter()
            .filter(|&d| d.is_lost_event())
            .map(|d| (d, self.drops(d as u32)))
            .filter(|&(_, n)| n > 0)
            .collect()
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

    /// Allocations recorded without their stack because the ring had no room for it.
    pub fn lost_stacks(&self) -> u64 {
        self.drops(Drop::StackLost as u32)
    }
}

impl std::ops::Drop for Probes {
    /// A session that ends on an error must not leave its command to be stopped at `_exit`
    /// while the probes are removed one by one.
    fn drop(&mut self) {
        let _ = self.release_exit_hold();
    }
}

fn load_err(name: &'static str, e: aya::programs::ProgramError) -> ProbeError {
    ProbeError::LoadProgram {
        name,
        source: Box::new(e),
    }
}

fn attach_err(what: &str, path: &Path, e: aya::programs::ProgramError) -> ProbeError {
    ProbeError::Attach {
        what: what.to_string(),
        path: path.display().to_string(),
        source: Box::new(e),
    }
}

pub(super) fn map_err(name: &'static str, e: aya::maps::MapError) -> ProbeError {
    ProbeError::Map {
        name,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the loader finds maps, globals and programs by are the object's, both ways:
    /// a name misspelt on either side fails here, without root, not at load time.
    #[test]
    fn the_names_table_matches_the_embedded_object() {
        use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
        let mut obj = aya_obj::Object::parse(PROBES_ELF).expect("the embedded object parses");

        let mut in_object: Vec<&str> = obj
            .maps
            .keys()
            .map(String::as_str)
            .filter(|n| !n.starts_with('.'))
            .collect();
        let mut in_table = map::ALL.to_vec();
        in_object.sort_unstable();
        in_table.sort_unstable();
        assert_eq!(in_object, in_table, "maps: the object's against names::map");

        let mut in_object: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
        let mut in_table: Vec<&str> = AllocFn::ALL
            .map(AllocFn::entry_program)
            .into_iter()
            .chain(program::UPROBES)
            .chain(program::RAW_TRACEPOINTS)
            .collect();
        in_object.sort_unstable();
        in_table.sort_unstable();
        in_table.dedup(); // free_enter is both AllocFn::Free's entry program and a UPROBE
        assert_eq!(
            in_object, in_table,
            "programs: the object's against names::program"
        );

        // Each global the loader sets exists with its type's size (what `override_global`
        // checks at load)...
        for (name, size) in global::ALL {
            let value = vec![0u8; size];
            let globals = std::collections::HashMap::from([(name, (value.as_slice(), true))]);
            obj.patch_map_data(globals)
                .unwrap_or_else(|e| panic!("global {name} ({size} bytes): {e}"));
        }
        // ...and every global of the object is one the loader sets.
        let elf = object::File::parse(PROBES_ELF).expect("the embedded object is ELF");
        let mut in_object: Vec<&str> = elf
            .symbols()
            .filter(|s| s.is_global() && s.kind() == object::SymbolKind::Data)
            .filter(|s| {
                s.section_index()
                    .and_then(|i| elf.section_by_index(i).ok())
                    .and_then(|sec| {
                        sec.name().ok().map(|n| {
                            n.starts_with(".data")
                                || n.starts_with(".bss")
                                || n.starts_with(".rodata")
                        })
                    })
                    .unwrap_or(false)
            })
            .filter_map(|s| s.name().ok())
            .collect();
        let mut in_table: Vec<&str> = global::ALL.iter().map(|(n, _)| *n).collect();
        in_object.sort_unstable();
        in_table.sort_unstable();
        assert_eq!(
            in_object, in_table,
            "globals: the object's against names::global"
        );
    }
}
