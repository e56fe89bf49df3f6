//! Which files of a target can hold its allocator, in the dynamic loader's search order: from a
//! running process's mappings, or from a program's own loader (`ld.so --list`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use object::{Object as _, ObjectSection as _};

use super::ProbeError;

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

pub(super) fn is_libc(name: &str) -> bool {
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
            ProbeError::NulInPath {
                path: root.display().to_string(),
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
    let out = cmd.output().map_err(|source| ProbeError::ListLibraries {
        loader: interp.clone(),
        program: program.display().to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_libc_paths() {
        assert!(is_libc("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_libc("/lib/libc-2.31.so"));
        assert!(!is_libc("/usr/lib/libcrypt.so.1"));
        assert!(!is_libc("/usr/lib/libc++.so.1"));
    }
}
