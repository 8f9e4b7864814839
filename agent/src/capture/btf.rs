//! Field offsets of kernel structures, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the eBPF programs that walk kernel memory: the only thing
//! CO-RE relocations would give them, done once in user space.
//!
//! The reader understands just enough of the BPF Type Format: the type section's records (to
//! skip each one), structs and unions with their members (anonymous ones searched through), and
//! the string section.

use std::path::Path;

/// Why offsets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not BTF this reader understands.
    #[error("not BTF: {0}")]
    Format(&'static str),
    /// A struct or one of its fields is not there.
    #[error("no field {field} in struct {ty}")]
    Missing {
        /// The struct.
        ty: String,
        /// The field.
        field: String,
    },
}

const MAGIC: u16 = 0xeb9f;

// Kinds (`info >> 24 & 0x1f`).
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// One type record: where it starts and what it is.
#[derive(Clone, Copy)]
struct Type {
    kind: u32,
    name_off: u32,
    vlen: u32,
    kflag: bool,
    /// Offset of the record's kind-specific data.
    data: usize,
}

/// A parsed BTF blob.
pub struct Btf {
    bytes: Vec<u8>,
    /// Start of the string section.
    strings: usize,
    strings_len: usize,
    /// Indexed by type id (id 0 is `void`, not stored).
    types: Vec<Type>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Btf {
    /// The running kernel's BTF.
    ///
    /// # Errors
    /// When it cannot be read or parsed.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    /// The BTF in `path`.
    ///
    /// # Errors
    /// When it cannot be read or parsed.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(bytes)
    }

    /// Parses little-endian BTF.
    ///
    /// # Errors
    /// [`BtfError::Format`] when the bytes are not BTF.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, BtfError> {
        let bad = BtfError::Format;
        let magic = bytes.get(0..2).ok_or(bad("too short"))?;
        if u16::from_le_bytes([magic[0], magic[1]]) != MAGIC {
            return Err(bad("wrong magic (or big-endian)"));
        }
        let hdr_len = u32_at(&bytes, 4).ok_or(bad("short header"))? as usize;
        let field = |i: usize| u32_at(&bytes, 8 + 4 * i).map(|v| v as usize);
        let (type_off, type_len, str_off, str_len) = (
            field(0).ok_or(bad("short header"))?,
            field(1).ok_or(bad("short header"))?,
            field(2).ok_or(bad("short header"))?,
            field(3).ok_or(bad("short header"))?,
        );
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strings = hdr_len + str_off;
        if types_end > bytes.len() || strings + str_len > bytes.len() {
            return Err(bad("sections past the end"));
        }
        let mut types = Vec::new();
        let mut at = types_start;
        while at < types_end {
            let name_off = u32_at(&bytes, at).ok_or(bad("truncated type"))?;
            let info = u32_at(&bytes, at + 4).ok_or(bad("truncated type"))?;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let data = at + 12;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
                2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(bad("unknown type kind")),
            };
            types.push(Type {
                kind,
                name_off,
                vlen,
                kflag: info >> 31 == 1,
                data,
            });
            at = data + extra;
        }
        Ok(Self {
            bytes,
            strings,
            strings_len: str_len,
            types,
        })
    }

    fn name(&self, off: u32) -> &str {
        let start = self.strings + off as usize;
        let end = self.strings + self.strings_len;
        let Some(s) = self.bytes.get(start..end) else {
            return "";
        };
        let len = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..len]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        id.checked_sub(1).and_then(|i| self.types.get(i as usize))
    }

    /// The byte offset of `field` in `struct ty`, looked for through anonymous struct and union
    /// members too.
    ///
    /// # Errors
    /// [`BtfError::Missing`] when there is no such struct or field.
    pub fn field_offset(&self, ty: &str, field: &str) -> Result<u64, BtfError> {
        let missing = || BtfError::Missing {
            ty: ty.to_owned(),
            field: field.to_owned(),
        };
        let id = (1..=u32::try_from(self.types.len()).unwrap_or(u32::MAX))
            .find(|&id| {
                self.ty(id).is_some_and(|t| {
                    t.kind == KIND_STRUCT && t.vlen > 0 && self.name(t.name_off) == ty
                })
            })
            .ok_or_else(missing)?;
        self.find_member(id, field, 0)
            .map(|bits| bits / 8)
            .ok_or_else(missing)
    }

    /// The bit offset of member `field` of the struct or union `id`, plus `base`.
    fn find_member(&self, id: u32, field: &str, base: u64) -> Option<u64> {
        let t = *self.ty(id)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for i in 0..t.vlen as usize {
            let m = t.data + 12 * i;
            let name_off = u32_at(&self.bytes, m)?;
            let member_type = u32_at(&self.bytes, m + 4)?;
            let raw = u32_at(&self.bytes, m + 8)?;
            // With kflag the low 24 bits are the offset and the high 8 a bitfield size.
            let offset = base + u64::from(if t.kflag { raw & 0x00ff_ffff } else { raw });
            let name = self.name(name_off);
            if name == field {
                return Some(offset);
            }
            if name.is_empty()
                && let Some(found) =
                    self.find_member(self.skip_modifiers(member_type), field, offset)
            {
                return Some(found);
            }
        }
        None
    }

    /// Follows typedefs, `const`, `volatile` and the like to the type they name.
    fn skip_modifiers(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.ty(id) {
                // TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG: `size_or_type` is the type.
                Some(t) if matches!(t.kind, 8..=11 | 18) => {
                    id = u32_at(&self.bytes, t.data - 4).unwrap_or(0);
                }
                _ => break,
            }
        }
        id
    }
}

/// The offsets the socket check of the `sys_enter` program needs, in its order:
/// `task_struct.files`, `files_struct.fdt`, `fdtable.max_fds`, `fdtable.fd`, `file.f_inode`,
/// `inode.i_mode`.
///
/// # Errors
/// When the kernel's BTF cannot be read or lacks one of them.
pub fn file_type_offsets(btf: &Btf) -> Result<[u64; 6], BtfError> {
    Ok([
        btf.field_offset("task_struct", "files")?,
        btf.field_offset("files_struct", "fdt")?,
        btf.field_offset("fdtable", "max_fds")?,
        btf.field_offset("fdtable", "fd")?,
        btf.field_offset("file", "f_inode")?,
        btf.field_offset("inode", "i_mode")?,
    ])
}

/// The offsets the `SOCKET` record of the `sys_enter` program needs, in its order:
/// `file.private_data`, `socket.sk`, then in `struct sock` `skc_family`, `skc_daddr`,
/// `skc_rcv_saddr`, `skc_dport`, `skc_num`, `skc_v6_daddr`, `skc_v6_rcv_saddr` (the IPv6 ones
/// `u64::MAX` on a kernel built without IPv6).
///
/// # Errors
/// When the kernel's BTF lacks one of the others.
pub fn socket_offsets(btf: &Btf) -> Result<[u64; 9], BtfError> {
    let common = btf.field_offset("sock", "__sk_common")?;
    let sock = |field: &str| btf.field_offset("sock_common", field).map(|o| common + o);
    let v6 = |field: &str| sock(field).unwrap_or(u64::MAX);
    Ok([
        btf.field_offset("file", "private_data")?,
        btf.field_offset("socket", "sk")?,
        sock("skc_family")?,
        sock("skc_daddr")?,
        sock("skc_rcv_saddr")?,
        sock("skc_dport")?,
        sock("skc_num")?,
        v6("skc_v6_daddr"),
        v6("skc_v6_rcv_saddr"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernels_offsets_are_found_and_plausible() {
        let btf = Btf::from_sys_fs().expect("this kernel has BTF (/sys/kernel/btf/vmlinux)");
        let offsets = file_type_offsets(&btf).expect("every field");
        // task_struct is large and `files` sits well inside it; the others are near the start.
        assert!(offsets[0] > 64 && offsets[0] < 16_384, "{offsets:?}");
        for o in &offsets[1..] {
            assert!(*o < 1024, "{offsets:?}");
        }
        // fdtable: max_fds (unsigned int) comes first, then the fd array pointer.
        assert_eq!(offsets[2], 0, "{offsets:?}");
        assert_eq!(offsets[3], 8, "{offsets:?}");
        // inode starts with i_mode (umode_t).
        assert_eq!(offsets[5], 0, "{offsets:?}");
        // struct sock starts with sock_common, whose layout has not moved in a decade: the
        // address pair, the hash, the port pair, then the family.
        let socket = socket_offsets(&btf).expect("every socket field");
        assert_eq!(socket[2..7], [16, 0, 4, 12, 14], "{socket:?}");
        assert!(socket[7] < 256 && socket[8] == socket[7] + 16, "{socket:?}");
        assert!(matches!(
            btf.field_offset("inode", "no_such_field"),
            Err(BtfError::Missing { .. })
        ));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Btf::parse(vec![1, 2, 3]).is_err());
        assert!(Btf::parse(vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
    }
}
