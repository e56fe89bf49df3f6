//! Where to probe in a target's files: which file serves `malloc` (and its prefixed and C++
//! neighbours), and at which instruction each function's probe goes.

use std::{
    fs,
    path::{Path, PathBuf},
};

use muppy_common::AllocFn;
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::{Candidates, ProbeError, discover::is_libc};

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

/// The C library's `_exit`, which `exit()` calls once the atexit handlers and destructors have
/// run, with every thread still alive: where the leak check at a command's exit holds it (see
/// [`ProbePlan::exit`]).
const EXIT_SYMBOL: &str = "_exit";

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
    /// Where the image enters `_exit`, if a file of it defines that: the leak check at exit
    /// holds the process there. Not probed with the rest.
    pub exit: Option<ExitPoint>,
}

/// The entry of a process image's `_exit`: glibc's (even where another allocator serves
/// `malloc`), or a static executable's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitPoint {
    /// The file, as this process opens it.
    pub path: PathBuf,
    /// File offset of `_exit`'s entry.
    pub offset: u64,
}

impl LibPlan {
    /// Whether it is glibc (its malloc's chunk layout is known: see `check::glibc_headers`).
    pub fn is_glibc(&self) -> bool {
        self.path
            .file_name()
            .is_some_and(|n| super::discover::is_libc(&n.to_string_lossy()))
    }
}

impl ProbePlan {
    /// The plan without the points `keep` refuses (already probed), by (device, inode,
    /// offset) of the probed instruction. A file that can no longer be reached (its process,
    /// through whose `/proc/PID/root` it was found, has ended) is left out: it cannot be
    /// probed, and if it is a file probed already, it must not be probed twice.
    pub fn only(&self, mut keep: impl FnMut((u64, u64, u64)) -> bool) -> ProbePlan {
        use std::os::unix::fs::MetadataExt as _;
        let libs = self
            .libs
            .iter()
            .filter_map(|l| {
                let file = fs::metadata(&l.path).map(|m| (m.dev(), m.ino())).ok()?;
                Some(LibPlan {
                    points: l
                        .points
                        .iter()
                        .filter(|p| keep((file.0, file.1, p.offset)))
                        .cloned()
                        .collect(),
                    teardown: l.teardown.filter(|&t| keep((file.0, file.1, t))),
                    ..l.clone()
                })
            })
            .filter(|l| !l.points.is_empty() || l.teardown.is_some())
            .collect();
        ProbePlan {
            libs,
            exit: self.exit.clone(),
        }
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
                    || n == EXIT_SYMBOL
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

    /// Its `_exit`, if it defines one.
    fn exit_point(&self) -> Option<ExitPoint> {
        let addr = *self.symbols.get(EXIT_SYMBOL)?;
        let file = object::File::parse(&*self.data).ok()?;
        Some(ExitPoint {
            path: self.path.clone(),
            offset: file_offset(&file, addr)?,
        })
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
    // libc's `exit` calls its own `_exit` directly, whatever else defines one: libc's first,
    // else the first file that has it (a static executable).
    let exit = files
        .iter()
        .filter(|d| is_libc(&names(d)))
        .chain(&files)
        .find_map(Defined::exit_point);
    Ok(ProbePlan { libs, exit })
}

fn file_offset(file: &object::File<'_>, addr: u64) -> Option<u64> {
    file.sections().find_map(|s| {
        let (off, _) = s.file_range()?;
        (s.address() <= addr && addr < s.address() + s.size()).then(|| addr - s.address() + off)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::candidates_of_pid;

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
        // The leak check at exit holds the process at libc's `_exit`.
        let exit = plan.exit.as_ref().expect("libc defines _exit");
        assert_eq!(exit.path, heap.path);
        assert!(exit.offset > 0);
        assert!(matches!(
            super::plan(&c, Some("no-such-allocator")),
            Err(ProbeError::NoSuchAllocator { .. })
        ));
    }
}
