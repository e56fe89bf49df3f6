//! The core stays pure: nothing it needs at run time loads eBPF, runs an async runtime or
//! wraps system calls. A dependency that pulls one in fails here, not in a client that links
//! the core (`muppy-trace summary FILE`, a browser, a daemon's client).

use std::process::Command;

#[test]
fn normal_dependencies_have_no_loader_runtime_or_syscall_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--manifest-path",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
            "--package",
            "muppy-core",
        ])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"muppy-core"), "{tree}");
    assert!(crates.contains(&"serde"), "{tree}");
    for banned in [
        "aya",
        "aya-obj",
        "tokio",
        "nix",
        "muppy-common",
        "muppy-user",
    ] {
        assert!(
            !crates.contains(&banned),
            "muppy-core depends on {banned}:\n{tree}"
        );
    }
}
