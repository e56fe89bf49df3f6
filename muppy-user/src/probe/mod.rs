//! Finding the target's allocator, and loading and attaching muppy's eBPF probes to it.
//!
//! The probes go on the allocator the target actually uses (glibc, an allocator linked in or
//! preloaded such as jemalloc, tcmalloc or mimalloc, or the executable itself when it is
//! static) and on the C++ operators, resolved through `/proc/PID/root` so that a target in
//! another mount namespace resolves too. Uprobes fire by address: functions that share
//! an address (Debian's `aligned_alloc` and `memalign`) get one probe, named for all of them.
//!
//! In four parts, re-exported here: `discover` (the target's files that can hold its
//! allocator, in the loader's search order), `plan` (which file serves which function, and
//! where each probe goes), `sampling` (the gaps `--sample-bytes` draws from) and `loader`
//! (load, attach, and the maps user space reads and writes, by the names of
//! `muppy_common::names`).

mod btf;
mod discover;
mod loader;
mod plan;
mod sampling;

pub use discover::{
    Candidates, candidates_in_root, candidates_of_pid, candidates_of_program, inner_path,
    is_loader, loader_env, openable, script_interpreter,
};
pub use loader::{ProbeConfig, Probes, Scope};
pub use plan::{ExitPoint, LibPlan, ProbePlan, ProbePoint, plan, pretty_symbol};
pub use sampling::sampling_gaps;

/// What went wrong finding, loading or attaching probes.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No file of the target defines malloc.
    #[error("{program}{} defines no malloc: nothing to probe{}", if *static_ { " (statically linked)" } else { " and its libraries" }, if *static_ { "; is it stripped? muppy needs the symbol table of a static binary" } else { "" })]
    NoAllocator {
        /// The executable.
        program: String,
        /// It has no libraries.
        static_: bool,
    },
    /// `--allocator` named nothing the target maps.
    #[error(
        "--allocator {allocator}: no file of the target with that name defines malloc (it has: {files})"
    )]
    NoSuchAllocator {
        /// As given.
        allocator: String,
        /// The target's files.
        files: String,
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
    /// Running the program's dynamic loader to list its libraries failed.
    #[error("running {loader} --list {program} failed")]
    ListLibraries {
        /// The loader (the program's `.interp`).
        loader: String,
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A path to pass to the kernel has a NUL byte in it.
    #[error("{path} has a NUL byte in it")]
    NulInPath {
        /// The path, lossily.
        path: String,
    },
    /// A map is missing from the embedded object (a build problem; see
    /// `muppy_common::names`).
    #[error("the embedded eBPF object has no map {name}")]
    MissingMap {
        /// The map.
        name: &'static str,
    },
    /// A map of the embedded object is not of the type the loader expects (a build problem).
    #[error("the embedded eBPF object's map {name} is not a {expected}")]
    MapType {
        /// The map.
        name: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// A program is missing from the embedded object (a build problem; see
    /// `muppy_common::names`).
    #[error("the embedded eBPF object has no program {name}")]
    MissingProgram {
        /// The program.
        name: &'static str,
    },
    /// A per-CPU map's values could not be built: not one per possible CPU.
    #[error("setting map {name} on every CPU failed")]
    PerCpu {
        /// The map.
        name: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The ring buffer could not be mapped into this process's memory.
    #[error("mapping the ring buffer {name} for reading failed")]
    RingMapping {
        /// The map.
        name: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused one program.
    #[error("loading the eBPF program {name} failed")]
    LoadProgram {
        /// The program.
        name: &'static str,
        /// Why.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A program failed to attach (or, for a tracepoint program, to load).
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
