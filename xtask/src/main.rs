//! `cargo xtask`: muppy's developer tasks.
//!
//! - `setup`: installs what building the eBPF probes needs (nightly rust-src; bpf-linker built
//!   against the nightly's own LLVM), plus the C toolchain pieces the tests use. Idempotent.
//! - `build`: setup, then `target/release/muppy-trace`.
//! - `test`: build, then every test (`MUPPY_REQUIRE_EBPF=1` makes eBPF tests fail, not skip,
//!   without root).
//! - `demo`: build, then trace the bundled leaking demo with periodic diffs, save its live set,
//!   and draw who allocated the leak from the saved snapshot.
//! - `bench`: build, then the benchmarks of `bench.rs` (overhead against the floor and other
//!   tools, throughput, memory, idle CPU, analysis, stacks, leak checks); `--leaks-only` and
//!   `--stacks-only` run one section.
//! - `install [--prefix DIR]`: build, then install the binary, its man page and its bash, zsh
//!   and fish completions under DIR (default /usr/local). Idempotent.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod bench;
mod bench_daemon;
mod bench_leaks;
mod bench_stacks;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build needs (idempotent).
    Setup,
    /// Build target/release/muppy-trace.
    Build,
    /// Build, then run all tests.
    Test,
    /// Build, then trace the bundled leaking demo.
    Demo,
    /// Build, then benchmark overhead, throughput, memory, idle CPU and analysis.
    Bench {
        /// Print one final JSON line with every figure.
        #[arg(long)]
        json: bool,
        /// Runs of each configuration (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Live blocks held for the tracer-memory measurement.
        #[arg(long, default_value_t = 10_000_000)]
        live: u64,
        /// Only the leak checks' figures.
        #[arg(long)]
        leaks_only: bool,
        /// Only the stacks' figures (issue 13): the ways of taking stacks on the loop, the
        /// reader's unwinding, a burst.
        #[arg(long, conflicts_with = "leaks_only")]
        stacks_only: bool,
        /// Only the daemon's figures (issue 15): system-wide on a busy machine for a minute,
        /// and its API under load.
        #[arg(long, conflicts_with_all = ["leaks_only", "stacks_only"])]
        daemon_only: bool,
    },
    /// Build, then install muppy-trace, its man page and its shell completions.
    Install {
        /// Where: bin/, share/man/man1/, and each shell's completion folder under it.
        #[arg(long, value_name = "DIR", default_value = "/usr/local")]
        prefix: PathBuf,
    },
}

fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const BPF_LINKER_VERSION: &str = "0.13.0";

fn setup() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let have_linker = output(Command::new("bpf-linker").arg("--version"))
        .is_ok_and(|v| v.contains(BPF_LINKER_VERSION));
    if !have_linker {
        // Link bpf-linker against the nightly's own libLLVM: it must match the LLVM that emits
        // the bitcode, and the distribution has no such LLVM.
        let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
        let lib = Path::new(sysroot.trim()).join("lib");
        let llvm = std::fs::read_dir(&lib)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("libLLVM-") && n.ends_with(".so"))
            .with_context(|| format!("no libLLVM-*.so in {}", lib.display()))?;
        let name = llvm.trim_start_matches("lib").trim_end_matches(".so");
        let major = name
            .trim_start_matches("LLVM-")
            .split(['-', '.'])
            .next()
            .unwrap_or_default();
        let lib = lib.display();
        run(Command::new("cargo")
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
            ])
            .args(["--features", &format!("llvm-{major},no-llvm-linking")])
            .env(
                "RUSTFLAGS",
                format!("-L native={lib} -l dylib={name} -C link-arg=-Wl,-rpath,{lib}"),
            ))?;
    }
    // The tests build C and C++ workloads, some static (libc.a comes with libc6-dev), some
    // linked against other allocators, and run one in a namespace (unshare, util-linux). The
    // leak check's tests take Valgrind's memcheck (driven through vgdb) as their oracle, and
    // check that a target strace holds is refused. The man page is rendered by man (man-db),
    // and each completion script checked by its shell. The stack tests attach to Debian's own
    // python3.11, built without frame pointers. The views' tests read muppy's pprof profiles with
    // Go's own pprof (golang-go), load its HTML reports in headless Chromium, and drive its
    // terminal browser in tmux. The daemon's /metrics is checked by Prometheus' own promtool
    // (prometheus), and its unit file by systemd-analyze (systemd).
    let libs = "/usr/lib/x86_64-linux-gnu";
    let missing = which("gcc").is_none()
        || which("g++").is_none()
        || which("unshare").is_none()
        || which("valgrind").is_none()
        || which("vgdb").is_none()
        || which("strace").is_none()
        || which("man").is_none()
        || which("zsh").is_none()
        || which("fish").is_none()
        || which("go").is_none()
        || which("chromium").is_none()
        || which("tmux").is_none()
        || which("promtool").is_none()
        || which("systemd-analyze").is_none()
        || !Path::new("/usr/bin/python3.11").exists()
        || [
            "libc.a",
            "libjemalloc.so.2",
            "libtcmalloc_minimal.so.4",
            "libmimalloc.so.2",
        ]
        .iter()
        .any(|f| !Path::new(libs).join(f).exists());
    if missing {
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get").args([
            "install",
            "-y",
            "gcc",
            "g++",
            "libc6-dev",
            "util-linux",
            "libjemalloc2",
            "libtcmalloc-minimal4",
            "libmimalloc2.0",
            "valgrind",
            "strace",
            "man-db",
            "zsh",
            "fish",
            "python3.11",
            "golang-go",
            "chromium",
            "tmux",
            "prometheus",
            "systemd",
        ]))?;
    }
    Ok(())
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.exists())
}

fn build() -> anyhow::Result<PathBuf> {
    setup()?;
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "muppy-user",
    ]))?;
    Ok(target_dir().join("release/muppy-trace"))
}

/// Where cargo builds: `$CARGO_TARGET_DIR` (relative to the workspace, where cargo runs), else
/// the workspace's `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root().join("target"), |d| root().join(d))
}

/// What `install` puts under the prefix besides the binary: (path, `muppy-trace --generate`
/// argument). The page and the scripts are generated from the binary's own clap definition.
const GENERATED: [(&str, &str); 4] = [
    ("share/man/man1/muppy-trace.1", "man"),
    ("share/bash-completion/completions/muppy-trace", "bash"),
    ("share/zsh/site-functions/_muppy-trace", "zsh"),
    ("share/fish/vendor_completions.d/muppy-trace.fish", "fish"),
];

/// Installs the built binary `bin` under `prefix`, with its man page and completions. Each
/// file is written beside its place and renamed over it, so a second install replaces the
/// first whole (a running muppy-trace keeps its old binary).
fn install(bin: &Path, prefix: &Path) -> anyhow::Result<()> {
    let place = |rel: &str, contents: &[u8], mode: u32| -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let dest = prefix.join(rel);
        let dir = dest.parent().unwrap_or(prefix);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dest.with_extension("xtask-new");
        std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, &dest).with_context(|| format!("installing {}", dest.display()))?;
        println!("installed {}", dest.display());
        Ok(())
    };
    let binary = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    place("bin/muppy-trace", &binary, 0o755)?;
    for (rel, what) in GENERATED {
        let out = Command::new(bin).args(["--generate", what]).output()?;
        if !out.status.success() {
            bail!(
                "{} --generate {what} failed: {}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        place(rel, &out.stdout, 0o644)?;
    }
    // The daemon's systemd unit, pointing at the binary just installed.
    let unit = std::fs::read_to_string(root().join("dist/muppy.service"))?;
    let bindir = std::path::absolute(prefix.join("bin"))?;
    let unit = unit.replace("@BINDIR@", &bindir.display().to_string());
    place("lib/systemd/system/muppy.service", unit.as_bytes(), 0o644)?;
    Ok(())
}

fn compile_c(src: &str, out: &str) -> anyhow::Result<PathBuf> {
    compile_c_flags(src, out, &[])
}

/// [`compile_c`], with `extra` flags after the usual ones (which they override: `-O2`,
/// `-fomit-frame-pointer`).
fn compile_c_flags(src: &str, out: &str, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let out = root().join("target").join(out);
    std::fs::create_dir_all(out.parent().unwrap_or(&root()))?;
    // The same flags as the test workloads: one definition, in tests/workloads/cflags.
    let cflags = std::fs::read_to_string(root().join("tests/workloads/cflags"))?;
    run(Command::new("gcc")
        .args(cflags.split_whitespace())
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(root().join(src)))?;
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup(),
        Task::Build => build().map(|p| println!("built {}", p.display())),
        Task::Test => {
            let bin = build()?;
            run(Command::new("cargo")
                .current_dir(root())
                .args(["test", "--release"]) // default members: muppy-ebpf builds only for bpf
                .env("MUPPY_TRACE_BIN", bin))
        }
        Task::Demo => {
            let bin = build()?;
            let demo = compile_c("demo/leaky.c", "demo/leaky")?;
            let snap = root().join("target/demo/leaky.muppy");
            let snap_s = snap.display().to_string();
            println!(
                "\n$ sudo muppy-trace --interval 1 --save {snap_s} -- {}\n",
                demo.display()
            );
            run(Command::new(&bin)
                .args(["--interval", "1", "--save", &snap_s, "--"])
                .arg(&demo))?;
            println!("\n$ muppy-trace tree {snap_s} --site new_session\n");
            run(Command::new(&bin).args(["tree", &snap_s, "--site", "new_session"]))?;
            // Live, but leaked? The sessions are held by a global cache: reachable, and why.
            println!(
                "\n$ sudo muppy-trace leaks --retention -- {}\n",
                demo.display()
            );
            run(Command::new(&bin)
                .args(["leaks", "--retention", "--"])
                .arg(&demo))
        }
        Task::Bench {
            json,
            leaks_only: true,
            ..
        } => {
            let figures = bench_leaks::bench(&build()?)?;
            if json {
                println!("{}", serde_json::json!({ "leaks": figures }));
            }
            Ok(())
        }
        Task::Bench {
            json,
            runs,
            stacks_only: true,
            ..
        } => {
            let figures = bench_stacks::bench(&build()?, runs)?;
            if json {
                println!("{}", serde_json::json!({ "stacks": figures }));
            }
            Ok(())
        }
        Task::Bench {
            json,
            daemon_only: true,
            ..
        } => {
            let figures = bench_daemon::bench(&build()?)?;
            if json {
                println!("{}", serde_json::json!({ "daemon": figures }));
            }
            Ok(())
        }
        Task::Bench {
            json, runs, live, ..
        } => bench::bench(json, runs, live),
        Task::Install { prefix } => install(&build()?, &prefix),
    }
}
