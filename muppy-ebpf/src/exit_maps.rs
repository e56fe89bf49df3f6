//! System-wide tracing: an exiting process's executable file mappings, for user space to name
//! its sites with when it could not read `/proc/PID/maps` itself (a process that lives a few
//! milliseconds is gone before it can).
//!
//! `sched_process_exit` runs before the exiting thread lets go of its memory map (a 2025 kernel
//! change moved it there, checked on 6.18; where it still runs after, the map is gone and the
//! iterator finds nothing), and `sched_prepare_exec` before an exec replaces it. The
//! kernel's VMA iterator (kfuncs, 6.7+) walks the map; aya does not link kfunc calls, so the
//! probes call placeholders (`muppy_common::kfunc`) that user space turns into the kfunc calls
//! before load.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::helpers::{
    bpf_get_current_task_btf, bpf_probe_read_kernel, generated::bpf_probe_read_kernel_str,
};
use muppy_common::{
    Drop, EXIT_MAP_CUT, EXIT_MAP_DEPTH, EXIT_MAP_NAME, ExitMapping, KernelLayout, kfunc,
    mapping_sum,
};

use crate::{
    emit::{count_drop, submit},
    maps::{EVENTS, EXECS, KERNEL_LAYOUT, MAPS_SEEN, PAGE_SIZE},
};

/// `VM_EXEC`.
const VM_EXEC: u64 = 0x4;

/// How many times [`walk`] tries to create the VMA iterator (see there): a bound on the wait
/// for the memory map's lock, far above the 8 tries it took at most when measured.
const ITER_TRIES: usize = 1024;

/// Process `tgid`'s main thread is exiting (or its program is about to be replaced): sends
/// its executable file mappings, unless user space has seen them all for this image (its
/// [`MAPS_SEEN`] entry is this image's and sums as the memory map does).
#[inline(always)]
pub fn on_exit(tgid: u32) {
    let layout = KERNEL_LAYOUT.load();
    if layout.ok == 0 {
        return;
    }
    // SAFETY: lookups by value; the entries are copied at once.
    let (seen, image) = unsafe {
        (
            MAPS_SEEN.get(&tgid).copied(),
            EXECS.get(&tgid).copied().unwrap_or(0),
        )
    };
    if let Some(seen) = seen
        && seen.image == image
        && walk(&layout, tgid, false) == seen.sum
    {
        return;
    }
    walk(&layout, tgid, true);
}

/// A process exec'd: what user space read of its maps was the old program's.
#[inline(always)]
pub fn on_exec(tgid: u32) {
    let _ = MAPS_SEEN.remove(&tgid);
}

/// Reads a word of kernel memory.
#[inline(always)]
fn read(addr: u64) -> Option<u64> {
    // SAFETY: the helper checks the address; a bad one fails.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.ok()
}

/// Walks the current task's memory map: the [`mapping_sum`] of its executable file mappings,
/// each sent as an [`ExitMapping`] if `send`.
#[inline(always)]
fn walk(l: &KernelLayout, tgid: u32, send: bool) -> u64 {
    let mut it = MaybeUninit::<u64>::uninit();
    let it = it.as_mut_ptr();
    let page = PAGE_SIZE.load();
    let mut sum = 0;
    // SAFETY: the iterator lives on this stack from its creation to its destruction; the task
    // is the current one.
    unsafe {
        // A failed creation leaves an iterator that yields nothing (and is destroyed all the
        // same). It fails with EBUSY when the map's lock is not free at once (the kfunc only
        // tries it): under `--all`, at about one exit in 600, which then sent no mapping and
        // left a short process's sites unnamed. It was free again within 8 tries each time
        // that was measured (the second try mostly); more cost nothing while it is free.
        let task = bpf_get_current_task_btf().cast();
        let mut tries = 1;
        while iter_new(it, task) != 0 && tries < ITER_TRIES {
            iter_destroy(it);
            tries += 1;
        }
        loop {
            let vma = iter_next(it);
            if vma == 0 {
                break;
            }
            let (Some(flags), Some(file)) = (read(vma + l.vma_flags), read(vma + l.vma_file))
            else {
                continue;
            };
            if flags & VM_EXEC == 0 || file == 0 {
                continue;
            }
            let (Some(start), Some(end), Some(pgoff)) = (
                read(vma + l.vma_start),
                read(vma + l.vma_end),
                read(vma + l.vma_pgoff),
            ) else {
                continue;
            };
            let offset = pgoff.wrapping_mul(page);
            sum = mapping_sum(sum, start, end, offset);
            if send {
                send_mapping(l, tgid, start, end, offset, file);
            }
        }
        iter_destroy(it);
    }
    sum
}

/// Sends one mapping of `file` (a `struct file *`): its range, the file's device and inode,
/// and the names on its path.
#[inline(always)]
fn send_mapping(l: &KernelLayout, tgid: u32, start: u64, end: u64, offset: u64, file: u64) {
    let Some(mut entry) = EVENTS.reserve::<ExitMapping>(0) else {
        count_drop(Drop::RingFull);
        return;
    };
    let rec = entry.as_mut_ptr();
    let inode = read(file + l.file_inode).unwrap_or(0);
    let ino = read(inode + l.inode_ino).unwrap_or(0);
    let dev = read(inode + l.inode_sb)
        .and_then(|sb| read(sb + l.sb_dev))
        .unwrap_or(0);
    // SAFETY: writes into the reserved record.
    unsafe {
        (*rec).pid = tgid;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "s_dev is a 32-bit dev_t; the word read holds the next field above it"
        )]
        {
            (*rec).dev = dev as u32;
        }
        (*rec).start = start;
        (*rec).end = end;
        (*rec).offset = offset;
        (*rec).ino = ino;
        (*rec).reserved = 0;
        (*rec).depth = path_names(l, file, core::ptr::addr_of_mut!((*rec).names).cast());
    }
    submit(entry);
}

/// Writes the names on `file`'s path into `names` ([`EXIT_MAP_DEPTH`] slots of
/// [`EXIT_MAP_NAME`] bytes), the file's own first, up through the mounts to the root of its
/// mount namespace. Returns how many, with [`EXIT_MAP_CUT`] if they stop short of the root.
///
/// One name per turn of the loop, mounts crossed within the turn: the verifier then sees one
/// state per turn, where a turn per step (name or mount) gave it one per (step, names) pair,
/// too many for it inside the VMA loop.
#[inline(always)]
fn path_names(l: &KernelLayout, file: u64, names: *mut u8) -> u32 {
    let (Some(mut dentry), Some(vfsmount)) = (read(file + l.file_dentry), read(file + l.file_mnt))
    else {
        return EXIT_MAP_CUT;
    };
    let mut mount = vfsmount.wrapping_sub(l.mount_mnt);
    for depth in 0..EXIT_MAP_DEPTH {
        match up_mounts(l, dentry, mount) {
            Up::Top => return depth as u32,
            Up::Stuck => break,
            Up::In(d, m) => (dentry, mount) = (d, m),
        }
        let Some(parent) = read(dentry + l.dentry_parent) else {
            break;
        };
        // A filesystem's root that is no mount's: no path from the namespace's root.
        if parent == dentry {
            break;
        }
        let Some(name) = read(dentry + l.dentry_name) else {
            break;
        };
        // SAFETY: slot `depth` of the record's names, below EXIT_MAP_DEPTH.
        let slot = unsafe { names.add(depth * EXIT_MAP_NAME) };
        // SAFETY: the helper writes at most EXIT_MAP_NAME bytes, NUL included.
        let n = unsafe {
            bpf_probe_read_kernel_str(
                slot.cast::<c_void>(),
                EXIT_MAP_NAME as u32,
                name as *const c_void,
            )
        };
        if n <= 0 {
            return depth as u32 | EXIT_MAP_CUT;
        }
        dentry = parent;
    }
    match up_mounts(l, dentry, mount) {
        Up::Top => EXIT_MAP_DEPTH as u32,
        _ => EXIT_MAP_DEPTH as u32 | EXIT_MAP_CUT,
    }
}

/// Where a walk up a path stands after crossing the mounts whose root it is at.
enum Up {
    /// At the root of the namespace's top mount: the path is whole.
    Top,
    /// A read failed, or more mounts are stacked here than are crossed.
    Stuck,
    /// At this dentry of this mount, not a mount's root.
    In(u64, u64),
}

/// Mounts stacked at one place that [`up_mounts`] crosses.
const STACKED_MOUNTS: usize = 4;

/// From `dentry` of `mount`: while at the mount's root, on to where it is mounted.
#[inline(always)]
fn up_mounts(l: &KernelLayout, mut dentry: u64, mut mount: u64) -> Up {
    for _ in 0..STACKED_MOUNTS {
        let Some(root) = read(mount + l.mount_mnt + l.vfsmount_root) else {
            return Up::Stuck;
        };
        if dentry != root {
            return Up::In(dentry, mount);
        }
        let Some(parent) = read(mount + l.mount_parent) else {
            return Up::Stuck;
        };
        if parent == mount {
            return Up::Top;
        }
        let Some(point) = read(mount + l.mount_mountpoint) else {
            return Up::Stuck;
        };
        (dentry, mount) = (point, parent);
    }
    Up::Stuck
}

/// `bpf_iter_task_vma_new(it, task, 0)`: an iterator over `task`'s memory map from its start.
///
/// # Safety
/// `it` is on the stack; `task` a trusted task pointer.
#[inline(always)]
unsafe fn iter_new(it: *mut u64, task: *mut c_void) -> i64 {
    let ret: i64;
    // SAFETY: the placeholder becomes the kfunc call (see the module docs); the calling
    // convention is a helper's: arguments in r1-r3, result in r0, r1-r5 clobbered.
    unsafe {
        core::arch::asm!(
            "call {f}",
            f = const kfunc::ITER_NEW,
            inlateout("r1") it => _,
            inlateout("r2") task => _,
            inlateout("r3") 0u64 => _,
            lateout("r0") ret,
            lateout("r4") _,
            lateout("r5") _,
        );
    }
    ret
}

/// `bpf_iter_task_vma_next(it)`: the next `struct vm_area_struct *`, 0 at the end.
///
/// # Safety
/// `it` was made by [`iter_new`] and not destroyed.
#[inline(always)]
unsafe fn iter_next(it: *mut u64) -> u64 {
    let ret: u64;
    // SAFETY: as in iter_new.
    unsafe {
        core::arch::asm!(
            "call {f}",
            f = const kfunc::ITER_NEXT,
            inlateout("r1") it => _,
            lateout("r0") ret,
            lateout("r2") _,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
        );
    }
    ret
}

/// `bpf_iter_task_vma_destroy(it)`.
///
/// # Safety
/// `it` was made by [`iter_new`] and not destroyed.
#[inline(always)]
unsafe fn iter_destroy(it: *mut u64) {
    // SAFETY: as in iter_new.
    unsafe {
        core::arch::asm!(
            "call {f}",
            f = const kfunc::ITER_DESTROY,
            inlateout("r1") it => _,
            lateout("r0") _,
            lateout("r2") _,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
        );
    }
}
