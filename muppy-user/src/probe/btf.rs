//! The little the probes need from the kernel's BTF (`/sys/kernel/btf/vmlinux`): where fields
//! of its structures lie ([`KernelLayout`]) and the ids of the kfuncs they call. The probes
//! have no CO-RE relocations, so the offsets go in as a global; the kfunc ids are written into
//! the calls before load ([`patch_kfunc_calls`]).

use std::collections::HashMap;

use muppy_common::{KernelLayout, kfunc};

/// The kernel's BTF.
const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// What was wrong with the BTF or the probes' object.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF could not be read.
    #[error("reading {VMLINUX}")]
    Read(#[source] std::io::Error),
    /// It is not BTF, or is cut short.
    #[error("{VMLINUX} is not BTF as muppy reads it ({what})")]
    Malformed {
        /// What did not parse.
        what: &'static str,
    },
    /// A structure or field is not where the probes expect one.
    #[error("the kernel has no {what}")]
    Missing {
        /// The structure and field, or the function.
        what: String,
    },
}

fn malformed(what: &'static str) -> BtfError {
    BtfError::Malformed { what }
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_TYPE_TAG: u32 = 18;

/// One type: what the readers below look at.
#[derive(Debug, Default)]
struct Type {
    kind: u32,
    name: u32,
    /// The size (structs), or the type referred to (typedefs, qualifiers).
    size_or_type: u32,
    /// Structs and unions: (name, type, offset in bits).
    members: Vec<(u32, u32, u32)>,
}

/// A parsed BTF: its types (index = id) and strings.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Named structs, unions and functions by (kind, name).
    by_name: HashMap<(u32, String), u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| malformed("cut short"))
}

fn usize_of(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn kernel() -> Result<Self, BtfError> {
        Self::parse(&std::fs::read(VMLINUX).map_err(BtfError::Read)?)
    }

    /// Parses BTF bytes (little-endian, as on the hosts muppy runs on).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.get(..2) != Some(&[0x9f, 0xeb]) {
            return Err(malformed("magic"));
        }
        let hdr = usize_of(u32_at(data, 4)?);
        let (type_off, type_len) = (u32_at(data, 8)?, u32_at(data, 12)?);
        let (str_off, str_len) = (u32_at(data, 16)?, u32_at(data, 20)?);
        let section = |off: u32, len: u32| {
            let start = hdr.checked_add(usize_of(off))?;
            data.get(start..start.checked_add(usize_of(len))?)
        };
        let tdata = section(type_off, type_len).ok_or_else(|| malformed("type section"))?;
        let strings = section(str_off, str_len)
            .ok_or_else(|| malformed("string section"))?
            .to_vec();
        let mut types = vec![Type::default()]; // id 0 is void
        let mut at = 0;
        while at < tdata.len() {
            let name = u32_at(tdata, at)?;
            let info = u32_at(tdata, at + 4)?;
            let size_or_type = u32_at(tdata, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = usize_of(info & 0xffff);
            let kflag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4,     // int, var, decl tag
                3 => 12,              // array
                6 | 13 => 8 * vlen,   // enum, func proto
                15 | 19 => 12 * vlen, // datasec, enum64
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + 12 * i;
                        let off = u32_at(tdata, m + 8)?;
                        // With kflag, the low 24 bits are the offset, the rest a bitfield size.
                        let bits = if kflag { off & 0x00ff_ffff } else { off };
                        members.push((u32_at(tdata, m)?, u32_at(tdata, m + 4)?, bits));
                    }
                    12 * vlen
                }
                _ => 0,
            };
            at += extra;
            types.push(Type {
                kind,
                name,
                size_or_type,
                members,
            });
        }
        let mut btf = Btf {
            types,
            strings,
            by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if matches!(t.kind, KIND_STRUCT | KIND_UNION | KIND_FUNC) && t.name != 0 {
                let name = btf.string(t.name).to_string();
                let id = u32::try_from(id).map_err(|_| malformed("too many types"))?;
                btf.by_name.entry((t.kind, name)).or_insert(id);
            }
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> &str {
        let rest = self.strings.get(usize_of(off)..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    /// The type `id` refers to through typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(usize_of(id))?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// The byte offset of `path` (`f_path.dentry`: fields within fields, looking through
    /// anonymous structs and unions) in struct `name`.
    pub fn offset(&self, name: &str, path: &str) -> Result<u64, BtfError> {
        let missing = || BtfError::Missing {
            what: format!("{name}.{path}"),
        };
        let id = *self
            .by_name
            .get(&(KIND_STRUCT, name.to_string()))
            .ok_or_else(missing)?;
        let mut ty = self.resolve(id).ok_or_else(missing)?;
        let mut bits = 0u64;
        for field in path.split('.') {
            let (off, member) = self.member(ty, field, 0).ok_or_else(missing)?;
            bits += off;
            ty = self.resolve(member).ok_or_else(missing)?;
        }
        if !bits.is_multiple_of(8) {
            return Err(missing());
        }
        Ok(bits / 8)
    }

    /// Field `field` of struct or union `ty`: its offset in bits and its type.
    fn member(&self, ty: &Type, field: &str, depth: u32) -> Option<(u64, u32)> {
        if depth > 8 || !matches!(ty.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for &(name, member, bits) in &ty.members {
            if name != 0 {
                if self.string(name) == field {
                    return Some((u64::from(bits), member));
                }
            } else if let Some(inner) = self.resolve(member)
                && let Some((off, t)) = self.member(inner, field, depth + 1)
            {
                return Some((u64::from(bits) + off, t));
            }
        }
        None
    }

    /// The id of function `name` (a kfunc).
    pub fn func(&self, name: &str) -> Result<u32, BtfError> {
        self.by_name
            .get(&(KIND_FUNC, name.to_string()))
            .copied()
            .ok_or_else(|| BtfError::Missing {
                what: format!("function {name}"),
            })
    }

    /// Where the fields [`KernelLayout`] names are in this kernel.
    pub fn layout(&self) -> Result<KernelLayout, BtfError> {
        Ok(KernelLayout {
            ok: 1,
            vma_start: self.offset("vm_area_struct", "vm_start")?,
            vma_end: self.offset("vm_area_struct", "vm_end")?,
            vma_flags: self.offset("vm_area_struct", "vm_flags")?,
            vma_pgoff: self.offset("vm_area_struct", "vm_pgoff")?,
            vma_file: self.offset("vm_area_struct", "vm_file")?,
            file_mnt: self.offset("file", "f_path.mnt")?,
            file_dentry: self.offset("file", "f_path.dentry")?,
            file_inode: self.offset("file", "f_inode")?,
            inode_ino: self.offset("inode", "i_ino")?,
            inode_sb: self.offset("inode", "i_sb")?,
            sb_dev: self.offset("super_block", "s_dev")?,
            dentry_parent: self.offset("dentry", "d_parent")?,
            dentry_name: self.offset("dentry", "d_name.name")?,
            mount_mnt: self.offset("mount", "mnt")?,
            mount_parent: self.offset("mount", "mnt_parent")?,
            mount_mountpoint: self.offset("mount", "mnt_mountpoint")?,
            vfsmount_root: self.offset("vfsmount", "mnt_root")?,
        })
    }
}

/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `src_reg` of a kfunc call (`BPF_PSEUDO_KFUNC_CALL`).
const PSEUDO_KFUNC_CALL: u8 = 2;

/// Turns the probes' placeholder calls ([`kfunc`]) in the executable sections of the ELF
/// object `elf` into calls of the kfuncs, by their ids in `btf`. Returns how many were
/// turned; none if the object does not parse.
pub fn patch_kfunc_calls(elf: &mut [u8], btf: &Btf) -> Result<usize, BtfError> {
    use object::{Object as _, ObjectSection as _, SectionFlags};
    let ids: Vec<(i32, u32)> = kfunc::ALL
        .iter()
        .map(|&(placeholder, name)| Ok((placeholder, btf.func(name)?)))
        .collect::<Result<_, BtfError>>()?;
    let ranges: Vec<(usize, usize)> = match object::File::parse(&*elf) {
        Ok(obj) => obj
            .sections()
            .filter(|s| {
                matches!(s.flags(), SectionFlags::Elf { sh_flags }
                    if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0)
            })
            .filter_map(|s| {
                let (off, len) = s.file_range()?;
                Some((usize::try_from(off).ok()?, usize::try_from(len).ok()?))
            })
            .collect(),
        Err(_) => return Ok(0),
    };
    let mut patched = 0;
    for (off, len) in ranges {
        let Some(code) = elf.get_mut(off..off.saturating_add(len)) else {
            continue;
        };
        for ins in code.chunks_exact_mut(8) {
            let imm = i32::from_le_bytes([ins[4], ins[5], ins[6], ins[7]]);
            // A helper call (src_reg 0) to a placeholder: no real helper has its number.
            if ins[0] != CALL || ins[1] != 0 {
                continue;
            }
            if let Some(&(_, id)) = ids.iter().find(|(p, _)| *p == imm) {
                ins[1] = PSEUDO_KFUNC_CALL << 4;
                ins[4..8].copy_from_slice(&id.to_le_bytes());
                patched += 1;
            }
        }
    }
    Ok(patched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_fields_and_kfuncs_of_the_running_kernel() {
        let Ok(btf) = Btf::kernel() else {
            eprintln!("skipping: no kernel BTF");
            return;
        };
        let l = btf.layout().unwrap();
        // vm_start and vm_end open the struct, one after the other.
        assert_eq!((l.vma_start, l.vma_end), (0, 8));
        assert_eq!(l.file_dentry, l.file_mnt + 8);
        assert!(btf.func("bpf_iter_task_vma_new").is_ok());
        assert!(btf.offset("vm_area_struct", "no_such_field").is_err());
    }
}
