//! Compiles `muppy-ebpf` for the bpf target (nightly, `-Z build-std=core`, bpf-linker) and leaves
//! the object in OUT_DIR, where `src/probe.rs` embeds it.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "muppy-ebpf")
        .ok_or_else(|| anyhow!("muppy-ebpf package not found in the workspace"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // aya-build passes every line the nested cargo prints on stderr as a `cargo:warning`, so
    // its progress lines ("Compiling core", "Finished") would read as warnings; quiet, it
    // prints only diagnostics and errors.
    // SAFETY: the build script is single-threaded until build_ebpf spawns the nested cargo.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF probes failed; `cargo xtask setup` installs what they need")
}
