//! Finding the target's allocator, and loading and attaching muppy's eBPF probes to it.
//!
//! The probes go on the allocator the target actually uses (glibc, an allocator linked in or
//! preloaded such as jemalloc, tcmalloc or mimalloc, or the executable itself when it is
//! static) and on the C++ operators, resolved through `/proc/PID/root` so that a target in
//! another mount namespace resolves too. Uprobes fire by address: functions that share
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
    programs::{RawTracePoint, UProbe, uprobe::UProbeAttachPoint, uprobe::UProbeScope},
};
use muppy_common::{
    AllocFn, Drop, FREE_CALLERS_ALWAYS, INTERVALS, cookie,
    names::{GlobalName, global, map, program, tracepoint},
};
use object::{Object, ObjectSection, ObjectSymbol};

/// The probes, compiled by the build script from `muppy-ebpf`.
static PROBES_ELF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/muppy"));

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

/// The C++ operators muppy probes, by mangled name. Every `new` takes the size first and every
/// `delete` the block first, so one [`AllocFn`] each covers all forms.
const CXX_OPERATORS: [(&str, AllocFn); 20] = [
    ("_Znwm", AllocFn::New),
    ("_Znam", AllocFn::New),
    ("_ZnwmRKSt9nothrow_t", AllocFn::New),
    ("_ZnamRKSt9nothrow_t", AllocFn::New),
    ("_ZnwmSt11align_val_t", AllocFn::New),
    ("_ZnamSt11align_val_t", AllocFn::New),
    ("_ZnwmSt11align_val_tRKSt9nothrow_t", AllocFn::New),
    ("_ZnamSt11align_val_tRKSt9nothrow_t", AllocFn::New),
    ("_ZdlPv", AllocFn::Delete),
    ("_ZdaPv", AllocFn::Delete),
    ("_ZdlPvm", AllocFn::Delete),
    ("_ZdaPvm", AllocFn::Delete),
    ("_ZdlPvRKSt9nothrow_t", AllocFn::Delete),
    ("_ZdaPvRKSt9nothrow_t", AllocFn::Delete),
    ("_ZdlPvSt11align_val_t", AllocFn::Delete),
    ("_ZdaPvSt11align_val_t", AllocFn::Delete),
    ("_ZdlPvmSt11align_val_t", AllocFn::Delete),
    ("_ZdaPvmSt11align_val_t", AllocFn::Delete),
    ("_ZdlPvSt11align_val_tRKSt9nothrow_t", AllocFn::Delete),
    ("_ZdaPvSt11align_val_tRKSt9nothrow_t", AllocFn::Delete),
];

/// The C allocator functions: all but the C++ operators, in [`AllocFn::ALL`] order.
fn c_functions() -> impl Iterator<Item = AllocFn> {
    AllocFn::ALL
        .into_iter()
        .filter(|f| !matches!(f, AllocFn::New | AllocFn::Delete))
}

/// Functions glibc enters as a thread's teardown begins, before it frees the thread's malloc
/// caches: the exported `__call_tls_dtors` of libc.so.6, or in a static binary (which links
/// that only when it uses thread-local destructors) `__malloc_arena_thread_freeres`. From
/// there until the thread exits, frees read their caller (see `FREE_CALLERS` in muppy-ebpf).
const TEARDOWN_MARKERS: [&str; 2] = ["__call_tls_dtors", "__malloc_arena_thread_freeres"];

/// Symbol prefixes of allocators that live beside the C library's instead of replacing it
/// (jemalloc built with `--with-jemalloc-prefix=je_`).
const PREFIXES: [&str; 1] = ["je_"];

/// A readable name for a probed symbol: C names as they are, C++ operators demangled
/// (`operator new[](size_t, nothrow_t)`).
pub fn pretty_symbol(symbol: &str) -> String {
    let (op, rest) = match symbol.get(..4) {
        Some("_Znw") => ("operator new", &symbol[4..]),
        Some("_Zna") => ("operator new[]", &symbol[4..]),
        Some("_Zdl") => ("operator delete", &symbol[4..]),
        Some("_Zda") => ("operator delete[]", &symbol[4..]),
        _ => return symbol.to_string(),
    };
    let mut args = Vec::new();
    let mut r = rest;
    while !r.is_empty() {
        let (arg, len) = [
            ("size_t", "m"),
            ("void*", "Pv"),
            ("align_val_t", "St11align_val_t"),
            ("nothrow_t", "RKSt9nothrow_t"),
        ]
        .into_iter()
        .find(|(_, code)| r.starts_with(code))
        .map_or(("?", r.len()), |(a, code)| (a, code.len()));
        args.push(arg);
        r = &r[len..];
    }
    format!("{op}({})", args.join(", "))
}

/// The allocator a file is, from its name, for messages.
fn allocator_name(path: &Path, executable: bool) -> String {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let kind = if executable {
        "linked into the executable"
    } else if is_libc(&name) {
        "glibc"
    } else if name.contains("jemalloc") {
        "jemalloc"
    } else if name.contains("tcmalloc") {
        "tcmalloc"
    } else if name.contains("mimalloc") {
        "mimalloc"
    } else if name.starts_with("libstdc++") {
        "libstdc++"
    } else {
        return name;
    };
    format!("{name} ({kind})")
}

/// The files of a process (or of a program about to run) in which an allocator can live, in
/// the dynamic linker's symbol search order: the executable, then preloaded libraries, then
/// the rest. Paths are openable from here (through `/proc/PID/root` for a running process).
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    /// The executable.
    pub exe: PathBuf,
    /// Its libraries, in search order.
    pub libs: Vec<PathBuf>,
}

fn is_libc(name: &str) -> bool {
    let name = name.rsplit('/').next().unwrap_or(name);
    name == "libc.so.6" || (name.starts_with("libc-") && name.ends_with(".so"))
}

/// Whether a file is the dynamic loader (`ld-linux-x86-64.so.2` and kin).
pub fn is_loader(name: &str) -> bool {
    let name = name.rsplit('/').next().unwrap_or(name);
    name.starts_with("ld-linux") || name.starts_with("ld.so") || name.starts_with("ld64.so")
}

/// The candidate files of a running process, from its mappings. The search order the loader
/// used is not in `/proc`; what it gives is enough: `LD_PRELOAD`ed libraries first, libc last.
pub fn candidates_of_pid(pid: u32) -> Result<Candidates, ProbeError> {
    let maps_path = format!("/proc/{pid}/maps");
    let text = fs::read_to_string(&maps_path).map_err(|source| ProbeError::Read {
        path: maps_path,
        source,
    })?;
    let preload: Vec<String> = loader_env(pid)
        .iter()
        .filter(|(k, _)| k == "LD_PRELOAD")
        .flat_map(|(_, v)| {
            v.split([' ', ':'])
                .filter(|s| !s.is_empty())
                .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let exe_seen = fs::read_link(format!("/proc/{pid}/exe")).ok();
    let mut seen: Vec<String> = Vec::new();
    for e in crate::symbols::parse_maps(&text) {
        if !seen.contains(&e.path) {
            seen.push(e.path);
        }
    }
    let rank = |p: &String| {
        let name = p.rsplit('/').next().unwrap_or(p);
        if preload.iter().any(|n| n == name) {
            0
        } else if is_libc(p) {
            2
        } else {
            1
        }
    };
    let exe_path = exe_seen.map(|p| p.display().to_string());
    let mut libs: Vec<&String> = seen
        .iter()
        .filter(|p| Some(*p) != exe_path.as_ref() && !is_loader(p))
        .collect();
    libs.sort_by_key(|p| rank(p));
    Ok(Candidates {
        exe: exe_path.map_or_else(
            || PathBuf::from(format!("/proc/{pid}/exe")),
            |p| openable(pid, &p),
        ),
        libs: libs.into_iter().map(|p| openable(pid, p)).collect(),
    })
}

/// The variables of process `pid`'s environment that steer its dynamic loader
/// (`LD_PRELOAD`, `LD_LIBRARY_PATH`); none if it cannot be read.
pub fn loader_env(pid: u32) -> Vec<(String, String)> {
    fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            matches!(k, "LD_PRELOAD" | "LD_LIBRARY_PATH").then(|| (k.into(), v.into()))
        })
        .collect()
}

/// A path the kernel printed for a file of process `pid` (in its maps or exe link), made
/// openable from here. The kernel prints paths from *our* root where it can: a file of a
/// process chroot'ed below our root prints as the full path here; one in another mount
/// namespace prints as that namespace sees it, and is reached through `/proc/PID/root`.
pub fn openable(pid: u32, seen: &str) -> PathBuf {
    let inside = Path::new(&format!("/proc/{pid}/root")).join(seen.trim_start_matches('/'));
    if inside.exists() || !Path::new(seen).exists() {
        inside
    } else {
        PathBuf::from(seen)
    }
}

/// The path a file of process `pid` has inside its own root, from the path the kernel
/// printed for it (see [`openable`]).
pub fn inner_path(pid: u32, seen: &Path) -> PathBuf {
    let root = fs::read_link(format!("/proc/{pid}/root")).unwrap_or_else(|_| PathBuf::from("/"));
    match seen.strip_prefix(&root) {
        Ok(rest) if root != Path::new("/") => Path::new("/").join(rest),
        _ => seen.to_path_buf(),
    }
}

/// The candidate files of `program` as its own dynamic loader resolves them (`ld.so --list`,
/// which maps the libraries without running the program), with this process's environment
/// (`LD_PRELOAD` included, which the program will inherit). A static program has no loader
/// and only itself.
pub fn candidates_of_program(program: &Path) -> Result<Candidates, ProbeError> {
    // A script runs its interpreter (`#!/bin/sh`), which is what loads an allocator first.
    let runs = script_interpreter(program).unwrap_or_else(|| program.to_path_buf());
    candidates_in_root(&runs, Path::new("/"), &[])
}

/// The interpreter a `#!` script names, if `program` is one.
pub fn script_interpreter(program: &Path) -> Option<PathBuf> {
    use std::io::Read as _;
    let mut head = [0u8; 256];
    let n = fs::File::open(program).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let interp = String::from_utf8_lossy(line)
        .split_whitespace()
        .next()?
        .to_string();
    Some(PathBuf::from(interp))
}

/// As [`candidates_of_program`] for a program seen under another root (a process's
/// `/proc/PID/root`), run there with `env` (`LD_PRELOAD`, `LD_LIBRARY_PATH`) set.
pub fn candidates_in_root(
    program: &Path,
    root: &Path,
    env: &[(String, String)],
) -> Result<Candidates, ProbeError> {
    let on_host = if root == Path::new("/") {
        program.to_path_buf()
    } else {
        root.join(program.strip_prefix("/").unwrap_or(program))
    };
    let shown = on_host.display().to_string();
    let data = fs::read(&on_host).map_err(|source| ProbeError::Read {
        path: shown.clone(),
        source,
    })?;
    let file = object::File::parse(&*data).map_err(|e| ProbeError::Elf {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let Some(interp) = file
        .section_by_name(".interp")
        .and_then(|s| s.data().ok())
        .map(|d| {
            String::from_utf8_lossy(d)
                .trim_end_matches('\0')
                .to_string()
        })
    else {
        return Ok(Candidates {
            exe: on_host,
            libs: Vec::new(),
        });
    };
    let mut cmd = Command::new(&interp);
    cmd.arg("--list").arg(program);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if root != Path::new("/") {
        let root_c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).map_err(|_| {
            ProbeError::Elf {
                path: shown.clone(),
                reason: "NUL in path".into(),
            }
        })?;
        // SAFETY: chroot and chdir are async-signal-safe; the CString outlives the child's exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::chroot(root_c.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().map_err(|source| ProbeError::Read {
        path: interp.clone(),
        source,
    })?;
    let libs = String::from_utf8_lossy(&out.stdout)
        .lines()
        // `name => /path (0x...)`, or `/path (0x...)` for a library named by its path.
        .filter_map(|l| {
            l.split_once("=>")
                .map_or(l, |(_, r)| r)
                .split_whitespace()
                .next()
        })
        .filter(|p| p.starts_with('/') && !is_loader(p))
        .map(|p| root.join(p.trim_start_matches('/')))
        .collect();
    Ok(Candidates { exe: on_host, libs })
}

/// One probe location: a file offset and the functions that live there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePoint {
    /// Functions at this address (more than one where symbols alias); the first decides
    /// how the probe reads its arguments.
    pub funcs: Vec<AllocFn>,
    /// The symbols at this address.
    pub symbols: Vec<String>,
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
        self.symbols
            .iter()
            .map(|s| pretty_symbol(s))
            .collect::<Vec<_>>()
            .join("=")
    }
}

/// Where to probe in one file.
#[derive(Clone, Debug)]
pub struct LibPlan {
    /// The file, as this process opens it.
    pub path: PathBuf,
    /// What it is, for messages: `libjemalloc.so.2 (jemalloc)`.
    pub what: String,
    /// One entry per distinct address.
    pub points: Vec<ProbePoint>,
    /// Allocator functions it does not define.
    pub missing: Vec<String>,
    /// The heap library: file offset of the function that marks a thread's teardown (glibc's
    /// `__call_tls_dtors`), if it has one. Without it every free reads its caller.
    pub teardown: Option<u64>,
}

/// Where to probe for one process image: the allocator that serves `malloc`, any prefixed
/// allocator beside it, and the C++ operators.
#[derive(Clone, Debug)]
pub struct ProbePlan {
    /// One entry per file.
    pub libs: Vec<LibPlan>,
}

impl ProbePlan {
    /// The plan without the points `keep` refuses (already probed), by (device, inode,
    /// offset) of the probed instruction.
    pub fn only(&self, mut keep: impl FnMut((u64, u64, u64)) -> bool) -> ProbePlan {
        use std::os::unix::fs::MetadataExt as _;
        let libs = self
            .libs
            .iter()
            .map(|l| {
                let file = fs::metadata(&l.path).map_or((0, 0), |m| (m.dev(), m.ino()));
                LibPlan {
                    points: l
                        .points
                        .iter()
                        .filter(|p| keep((file.0, file.1, p.offset)))
                        .cloned()
                        .collect(),
                    teardown: l.teardown.filter(|&t| keep((file.0, file.1, t))),
                    ..l.clone()
                }
            })
            .filter(|l| !l.points.is_empty() || l.teardown.is_some())
            .collect();
        ProbePlan { libs }
    }

    /// The file that serves `malloc`.
    pub fn heap_lib(&self) -> &Path {
        &self.libs[0].path
    }

    /// One line: what serves each family.
    pub fn describe(&self) -> String {
        self.libs
            .iter()
            .map(|l| {
                let fams: Vec<&str> = [
                    (AllocFn::Malloc, "malloc"),
                    (AllocFn::New, "operator new/delete"),
                ]
                .into_iter()
                .filter(|(f, _)| l.points.iter().any(|p| p.funcs.contains(f)))
                .map(|(_, n)| n)
                .collect();
                let prefixed = l
                    .points
                    .iter()
                    .flat_map(|p| &p.symbols)
                    .find_map(|s| PREFIXES.iter().find(|p| s.starts_with(*p)));
                match prefixed {
                    Some(p) => format!("{p}malloc from {}", l.what),
                    None => format!("{} from {}", fams.join(", "), l.what),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The text symbols a file defines, by name (dynamic ones, and for an executable its own
/// symbol table too: a static binary's malloc is only there).
struct Defined {
    path: PathBuf,
    data: Vec<u8>,
    symbols: std::collections::HashMap<String, u64>,
}

impl Defined {
    fn read(path: &Path, executable: bool) -> Result<Self, ProbeError> {
        let shown = path.display().to_string();
        let data = fs::read(path).map_err(|source| ProbeError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut symbols = std::collections::HashMap::new();
        {
            let file = object::File::parse(&*data).map_err(|e| ProbeError::Elf {
                path: shown,
                reason: e.to_string(),
            })?;
            let wanted = |n: &str| {
                c_functions().any(|f| {
                    n == f.symbol()
                        || PREFIXES
                            .iter()
                            .any(|p| n.strip_prefix(p) == Some(f.symbol()))
                }) || CXX_OPERATORS.iter().any(|(m, _)| *m == n)
                    || TEARDOWN_MARKERS.contains(&n)
            };
            let mut add = |s: object::Symbol<'_, '_>| {
                if s.is_definition()
                    && !s.is_local()
                    && s.kind() == object::SymbolKind::Text
                    && let Ok(n) = s.name()
                    && wanted(n)
                {
                    symbols.entry(n.to_string()).or_insert(s.address());
                }
            };
            file.dynamic_symbols().for_each(&mut add);
            if executable {
                file.symbols().for_each(&mut add);
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            data,
            symbols,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.symbols.contains_key(name)
    }

    /// File offset of the first of [`TEARDOWN_MARKERS`] this file defines.
    fn teardown_marker(&self) -> Option<u64> {
        let file = object::File::parse(&*self.data).ok()?;
        TEARDOWN_MARKERS
            .iter()
            .find_map(|m| file_offset(&file, *self.symbols.get(*m)?))
    }

    /// Plans probes on `wanted` (symbol, function) pairs this file defines.
    fn plan(&self, what: String, wanted: &[(String, AllocFn)]) -> Result<LibPlan, ProbeError> {
        let file = object::File::parse(&*self.data).map_err(|e| ProbeError::Elf {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
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
        let mut points: Vec<ProbePoint> = Vec::new();
        let mut missing = Vec::new();
        for (symbol, func) in wanted {
            let Some((addr, entry)) = self
                .symbols
                .get(symbol)
                .and_then(|&a| Some((a, file_offset(&file, a)?)))
            else {
                if *func != AllocFn::New && *func != AllocFn::Delete {
                    missing.push(symbol.clone());
                }
                continue;
            };
            match points.iter_mut().find(|p| p.entry == entry) {
                Some(p) => {
                    p.funcs.push(*func);
                    p.symbols.push(symbol.clone());
                }
                None => {
                    let at = crate::placement::place(&read, addr);
                    points.push(ProbePoint {
                        funcs: vec![*func],
                        symbols: vec![symbol.clone()],
                        entry,
                        offset: entry + at.skip,
                        ret_addr_sp_offset: at.ret_addr_sp_offset,
                        reason: at.reason,
                    });
                }
            }
        }
        // Where a free and an operator delete share an address (tcmalloc, mimalloc), free's
        // semantics apply: the same block argument, and no call inside to tell apart.
        for p in &mut points {
            p.funcs.sort();
        }
        Ok(LibPlan {
            path: self.path.clone(),
            what,
            points,
            missing,
            teardown: None,
        })
    }
}

/// Decides what to probe among `c`'s files: the first file in search order that defines
/// `malloc` serves the C functions (or the file `allocator` names: a path, or part of a file
/// name such as `jemalloc` or `libc`); files defining `je_malloc` are probed beside it; the
/// first file defining `operator new` serves the C++ operators.
pub fn plan(c: &Candidates, allocator: Option<&str>) -> Result<ProbePlan, ProbeError> {
    let mut files = vec![Defined::read(&c.exe, true)?];
    for lib in &c.libs {
        // A library that cannot be read cannot be probed either; the others still can.
        if let Ok(d) = Defined::read(lib, false) {
            files.push(d);
        }
    }
    let names = |d: &Defined| {
        d.path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    };
    let heap =
        match allocator {
            Some(a) => files
                .iter()
                .position(|d| {
                    let n = names(d);
                    (d.path.ends_with(a) || n.contains(a) || (a == "glibc" && is_libc(&n)))
                        && (d.has("malloc")
                            || PREFIXES.iter().any(|p| d.has(&format!("{p}malloc"))))
                })
                .ok_or_else(|| ProbeError::NoSuchAllocator {
                    allocator: a.to_string(),
                    files: files.iter().map(names).collect::<Vec<_>>().join(", "),
                })?,
            None => files.iter().position(|d| d.has("malloc")).ok_or_else(|| {
                ProbeError::NoAllocator {
                    program: c.exe.display().to_string(),
                    static_: c.libs.is_empty(),
                }
            })?,
        };
    let c_family = |prefix: &str| -> Vec<(String, AllocFn)> {
        c_functions()
            .map(|f| (format!("{prefix}{}", f.symbol()), f))
            .collect()
    };
    let heap_prefix = if files[heap].has("malloc") {
        ""
    } else {
        PREFIXES
            .iter()
            .find(|p| files[heap].has(&format!("{p}malloc")))
            .copied()
            .unwrap_or("")
    };
    let mut wanted: Vec<(usize, Vec<(String, AllocFn)>)> = vec![(heap, c_family(heap_prefix))];
    for (i, d) in files.iter().enumerate() {
        for p in PREFIXES {
            if (i, heap_prefix) != (heap, p) && d.has(&format!("{p}malloc")) {
                wanted.push((i, c_family(p)));
            }
        }
    }
    if let Some(i) = files.iter().position(|d| d.has("_Znwm")) {
        let ops: Vec<(String, AllocFn)> = CXX_OPERATORS
            .iter()
            .map(|(m, f)| ((*m).to_string(), *f))
            .collect();
        match wanted
            .iter_mut()
            .find(|(j, w)| *j == i && w[0].0 == "malloc")
        {
            Some((_, w)) => w.extend(ops),
            None => wanted.push((i, ops)),
        }
    }
    let mut libs = Vec::new();
    for (i, w) in wanted {
        let d = &files[i];
        libs.push(d.plan(allocator_name(&d.path, i == 0), &w)?);
    }
    libs[0].teardown = files[heap].teardown_marker();
    if libs[0]
        .points
        .iter()
        .all(|p| !p.funcs.contains(&AllocFn::Malloc))
    {
        return Err(ProbeError::NoMalloc {
            path: libs[0].path.display().to_string(),
        });
    }
    Ok(ProbePlan { libs })
}

fn file_offset(file: &object::File<'_>, addr: u64) -> Option<u64> {
    file.sections().find_map(|s| {
        let (off, _) = s.file_range()?;
        (s.address() <= addr && addr < s.address() + s.size()).then(|| addr - s.address() + off)
    })
}

/// Adds `pid` to (`on`) or removes it from the hash set of pids `map`.
fn set_pid(ebpf: &mut Ebpf, map: &str, pid: u32, on: bool) {
    let Some(map) = ebpf.map_mut(map) else {
        return;
    };
    let Ok(mut pids) = aya::maps::HashMap::<_, u32, u8>::try_from(map) else {
        return;
    };
    let _ = if on {
        pids.insert(pid, 1, 0)
    } else {
        pids.remove(&pid)
    };
}

/// Which processes attached probes fire in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Distinct user stacks the stack map can hold; 0 turns stack collection off.
    pub stacks: u32,
    /// Attach empty programs at the same points, recording nothing: the cost of the traps
    /// alone, for the benchmark.
    pub empty: bool,
    /// Sample allocations byte-weighted with this mean gap in bytes; 0 records every one.
    pub sample_bytes: u64,
    /// Sampled blocks that can be live at once (the kernel's set of them).
    pub max_sampled: u32,
    /// Trace the memory mappings of every process, not only those named (`--all`).
    pub all_mappings: bool,
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
        .map_mut(map::SAMPLE_GAPS)
        .ok_or(ProbeError::Missing(map::SAMPLE_GAPS))?
        .try_into()
        .map_err(|e| map_err(map::SAMPLE_GAPS, e))?;
    let all = sampling_gaps(sample_bytes);
    for (i, gap) in (0u32..).zip(&all) {
        gaps.set(i, *gap, 0)
            .map_err(|e| map_err(map::SAMPLE_GAPS, e))?;
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
        .map_mut(map::COUNTDOWN)
        .ok_or(ProbeError::Missing(map::COUNTDOWN))?
        .try_into()
        .map_err(|e| map_err(map::COUNTDOWN, e))?;
    let values = aya::maps::PerCpuValues::try_from(starts).map_err(|e| ProbeError::Read {
        path: "per-CPU values".into(),
        source: e,
    })?;
    countdown
        .set(0, values, 0)
        .map_err(|e| map_err(map::COUNTDOWN, e))
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
        let ticks = crate::clock::Ticks::read();
        let mut ebpf = EbpfLoader::new()
            // The probes need no CO-RE relocation; drop the kernel's BTF (megabytes) at once.
            .btf(None)
            .map_max_entries(map::EVENTS, cfg.ring_bytes)
            .map_max_entries(map::INFLIGHT, cfg.max_inflight)
            .map_max_entries(map::SLOTS, cfg.slots.max(1))
            .typed_global(global::SLOT_MASK, &(cfg.slots.max(1) - 1))
            .map_max_entries(map::STACKS, cfg.stacks.max(1))
            .typed_global(global::PAGE_SIZE, &page)
            .typed_global(global::WAKEUP_EVERY, &wakeup)
            .typed_global(global::WANT_STACKS, &want_stacks)
            .typed_global(global::SAMPLING, &sampling)
            .typed_global(global::TRACER_TGID, &std::process::id())
            .typed_global(global::MAP_ALL, &u32::from(cfg.all_mappings))
            .typed_global(global::TICKS, &u32::from(ticks.is_some()))
            .map_max_entries(
                map::SAMPLED,
                if sampling != 0 { cfg.max_sampled } else { 1 },
            )
            .load(PROBES_ELF)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;
        let entries = AllocFn::ALL.map(AllocFn::entry_program);
        // free_enter is AllocFn::Free's entry program, so it is in `entries` and not here.
        let others = program::UPROBES
            .into_iter()
            .filter(|&p| p != program::FREE_ENTER);
        for name in entries.into_iter().chain(others) {
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
            .take_map(map::DROPS)
            .ok_or(ProbeError::Missing(map::DROPS))?;
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
    /// probed (see [`LibPlan::teardown`]). Once is enough.
    pub fn read_every_free_caller(&mut self) -> Result<(), ProbeError> {
        if self.every_free_caller {
            return Ok(());
        }
        let map = self
            .ebpf
            .map_mut(map::FREE_CALLERS)
            .ok_or(ProbeError::Missing(map::FREE_CALLERS))?;
        let mut a = Array::<_, u64>::try_from(map).map_err(|e| map_err(map::FREE_CALLERS, e))?;
        a.set(FREE_CALLERS_ALWAYS, 1, 0)
            .map_err(|e| map_err(map::FREE_CALLERS, e))?;
        self.every_free_caller = true;
        Ok(())
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
            .ok_or(ProbeError::Missing("a probe program"))?
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

    /// System-wide tracing: sends process exec and exit events (sched tracepoints).
    pub fn watch_processes(&mut self) -> Result<(), ProbeError> {
        self.attach_raw(&[
            (program::PROC_EXEC, tracepoint::SCHED_PROCESS_EXEC),
            (program::PROC_EXIT, tracepoint::SCHED_PROCESS_EXIT),
        ])
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
                .ok_or(ProbeError::Missing("a tracepoint program"))?
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
            .ok_or(ProbeError::Missing(map::EVENTS))?;
        let aya::maps::Map::RingBuf(data) = map else {
            return Err(ProbeError::Missing(map::EVENTS));
        };
        crate::ring::Ring::new(data, self.ring_bytes, self.ticks).map_err(|source| {
            ProbeError::Read {
                path: "the ring buffer's memory".into(),
                source,
            }
        })
    }

    /// Takes the stack map that events' stack ids index.
    pub fn take_stacks(&mut self) -> Result<StackTraceMap<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map(map::STACKS)
            .ok_or(ProbeError::Missing(map::STACKS))?;
        StackTraceMap::try_from(map).map_err(|e| map_err(map::STACKS, e))
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

    /// [`Probes::lost_events`] by reason, the non-zero ones.
    pub fn lost_events_by_reason(&self) -> Vec<(Drop, u64)> {
        Drop::ALL
            .into_iter()
            .filter(|&d| d != Drop::StackLost)
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
    fn demangles_the_operators() {
        assert_eq!(pretty_symbol("_Znwm"), "operator new(size_t)");
        assert_eq!(
            pretty_symbol("_ZnamSt11align_val_tRKSt9nothrow_t"),
            "operator new[](size_t, align_val_t, nothrow_t)"
        );
        assert_eq!(pretty_symbol("_ZdlPvm"), "operator delete(void*, size_t)");
        assert_eq!(pretty_symbol("malloc"), "malloc");
    }

    #[test]
    fn plans_this_machines_libc_with_aliases_merged() {
        let c = candidates_of_pid(std::process::id()).expect("the test process maps libc");
        let plan = plan(&c, None).unwrap();
        let heap = &plan.libs[0];
        assert!(
            is_libc(&heap.path.display().to_string()),
            "{}",
            plan.describe()
        );
        let all: Vec<AllocFn> = heap.points.iter().flat_map(|p| p.funcs.clone()).collect();
        assert!(all.contains(&AllocFn::Malloc) && all.contains(&AllocFn::Free));
        // Every C function is either probed once or reported missing.
        let c_funcs = all
            .iter()
            .filter(|f| c_functions().any(|c| c == **f))
            .count();
        assert_eq!(c_funcs + heap.missing.len(), c_functions().count());
        let mut offsets: Vec<u64> = heap.points.iter().map(|p| p.offset).collect();
        offsets.dedup();
        assert_eq!(offsets.len(), heap.points.len());
        assert!(matches!(
            super::plan(&c, Some("no-such-allocator")),
            Err(ProbeError::NoSuchAllocator { .. })
        ));
    }

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
