//! Builds the C and C++ workloads with gcc/g++ and the flags in `workloads/cflags` (shared with
//! xtask's demo and bench): debug info for line numbers, frame pointers for stacks, and
//! -fno-builtin so the compiler cannot remove a malloc/free pair the ledger counts.
//!
//! Their shared C is in headers (`leakcase.h`), which are included, not built: the
//! `rerun-if-changed` on the whole folder rebuilds every workload when one changes.
//!
//! Some sources are built more than once, against other allocators or statically (see
//! `VARIANTS`); the allocators are Debian's packages, which `cargo xtask setup` installs.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// (binary, source, extra arguments): `lib:NAME` links the shared library NAME, found where
/// the compiler finds libraries; `local:NAME` links `libNAME.so` built from `workloads/lib`;
/// `dlopen:NAME` builds it too and passes its path as the macro `PLUGIN`.
const VARIANTS: &[(&str, &str, &[&str])] = &[
    ("static_hello", "static_hello.c", &["-static"]),
    (
        "static_hello_stripped",
        "static_hello.c",
        &["-static", "-s"],
    ),
    ("allocators_static", "allocators.c", &["-static"]),
    (
        "allocators_jemalloc",
        "allocators.c",
        &["lib:libjemalloc.so.2"],
    ),
    (
        "allocators_tcmalloc",
        "allocators.c",
        &["lib:libtcmalloc_minimal.so.4"],
    ),
    (
        "allocators_mimalloc",
        "allocators.c",
        &["lib:libmimalloc.so.2"],
    ),
    ("cxx_ops_jemalloc", "cxx_ops.cc", &["lib:libjemalloc.so.2"]),
    (
        "exit_hold_jemalloc",
        "exit_hold.c",
        &["lib:libjemalloc.so.2"],
    ),
    (
        "cxx_ops_tcmalloc",
        "cxx_ops.cc",
        &["lib:libtcmalloc_minimal.so.4"],
    ),
    ("je_prefixed", "je_prefixed.c", &["local:je_alloc"]),
    ("short", "short.c", &["dlopen:plugin"]),
    ("preexec", "preexec.c", &["local:preexec_lib"]),
    ("leak_cases", "leak_cases.c", &["dlopen:leak_plugin"]),
    // As distributions build: no frame pointers (later flags override cflags'), so only the
    // call frame information walks their stacks (tests/dwarf.rs). Calls stay calls.
    (
        "nofp_paths",
        "paths.c",
        &["-O2", "-fomit-frame-pointer", "-fno-optimize-sibling-calls"],
    ),
    ("unwind_cases", "unwind_cases.c", &["-fomit-frame-pointer"]),
];

fn compile(src: &Path, out: &Path, cflags: &[String], extra: &[String]) {
    let cxx = src.extension().is_some_and(|e| e == "cc");
    let cc = if cxx {
        env::var("CXX").unwrap_or_else(|_| "g++".into())
    } else {
        env::var("CC").unwrap_or_else(|_| "gcc".into())
    };
    let mut cmd = Command::new(&cc);
    cmd.args(cflags).arg("-o").arg(out).arg(src).args(extra);
    let status = cmd.status().unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(status.success(), "{cc} failed on {}", src.display());
}

/// The path of a shared library as the compiler finds it.
fn find_lib(name: &str) -> String {
    let out = Command::new("gcc")
        .arg(format!("-print-file-name={name}"))
        .output()
        .expect("running gcc");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        Path::new(&path).is_absolute(),
        "{name} is not installed: run `cargo xtask setup`, which installs the allocators the tests use"
    );
    path
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir")).join("workloads");
    println!("cargo:rerun-if-changed={}", dir.display());
    let cflags: Vec<String> = std::fs::read_to_string(dir.join("cflags"))
        .expect("workloads/cflags")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    for entry in std::fs::read_dir(&dir).expect("workloads dir") {
        let src = entry.expect("dir entry").path();
        if src.extension().is_none_or(|e| e != "c" && e != "cc") {
            continue;
        }
        let name = src
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        if VARIANTS.iter().any(|(bin, _, _)| *bin == name) {
            continue; // built below, with its own arguments
        }
        compile(&src, &out.join(&name), &cflags, &[]);
    }
    for (bin, src, extra) in VARIANTS {
        let extra: Vec<String> = extra
            .iter()
            .map(|a| {
                if let Some(lib) = a.strip_prefix("lib:") {
                    find_lib(lib)
                } else if let Some(local) = a.strip_prefix("local:") {
                    let so = out.join(format!("lib{local}.so"));
                    let lib_src = dir.join("lib").join(format!("{local}.c"));
                    compile(&lib_src, &so, &cflags, &["-shared".into(), "-fPIC".into()]);
                    format!("{} -Wl,-rpath,{}", so.display(), out.display())
                } else if let Some(plugin) = a.strip_prefix("dlopen:") {
                    let so = out.join(format!("lib{plugin}.so"));
                    let lib_src = dir.join("lib").join(format!("{plugin}.c"));
                    compile(&lib_src, &so, &cflags, &["-shared".into(), "-fPIC".into()]);
                    format!("-DPLUGIN=\"{}\"", so.display())
                } else {
                    (*a).to_string()
                }
            })
            .flat_map(|a| a.split(' ').map(str::to_string).collect::<Vec<_>>())
            .collect();
        compile(&dir.join(src), &out.join(bin), &cflags, &extra);
    }
    println!("cargo:rustc-env=MUPPY_WORKLOADS={}", out.display());
}
