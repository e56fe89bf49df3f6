//! Builds the C workloads with gcc and the flags in `workloads/cflags` (shared with xtask's demo
//! and bench): debug info for line numbers, frame pointers for stacks, and -fno-builtin so the
//! compiler cannot remove a malloc/free pair the ledger counts.
use std::{env, path::PathBuf, process::Command};

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
    let cc = env::var("CC").unwrap_or_else(|_| "gcc".into());
    for entry in std::fs::read_dir(&dir).expect("workloads dir") {
        let src = entry.expect("dir entry").path();
        if src.extension().is_none_or(|e| e != "c") {
            continue;
        }
        let name = src
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        let mut cmd = Command::new(&cc);
        cmd.args(&cflags).arg("-o").arg(out.join(&name)).arg(&src);
        if name.starts_with("static_") {
            cmd.arg("-static");
        }
        let status = cmd.status().unwrap_or_else(|e| panic!("running {cc}: {e}"));
        assert!(status.success(), "{cc} failed on {}", src.display());
    }
    println!("cargo:rustc-env=MUPPY_WORKLOADS={}", out.display());
}
