//! A small reader of BPF Type Format (BTF) data: enough to ask which types,
//! functions and tracepoints a kernel has (`/sys/kernel/btf/vmlinux`, for the
//! loader's feature probes) and what layout a compiled object gives the ABI
//! structs (its `.BTF` section, for the test that holds `abi.rs` to the C
//! header). Format: `Documentation/bpf/btf.rst` of the kernel.

use std::collections::HashMap;

/// BTF type kinds used here (`BTF_KIND_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `BTF_KIND_INT`.
    Int,
    /// `BTF_KIND_PTR`.
    Ptr,
    /// `BTF_KIND_ARRAY`.
    Array,
    /// `BTF_KIND_STRUCT`.
    Struct,
    /// `BTF_KIND_UNION`.
    Union,
    /// `BTF_KIND_ENUM` and `BTF_KIND_ENUM64`.
    Enum,
    /// `BTF_KIND_TYPEDEF`.
    Typedef,
    /// `BTF_KIND_FUNC`.
    Func,
    /// `BTF_KIND_FUNC_PROTO`.
    FuncProto,
    /// Any other kind (modifiers, variables, sections, tags, floats, forward declarations).
    Other,
}

/// One member of a struct or union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member name ("" for an anonymous member).
    pub name: String,
    /// Type id of the member.
    pub type_id: u32,
    /// Offset from the start of the struct, in bits.
    pub bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    kind: Kind,
    name: u32,
    /// Size (int, struct, union, enum) or referenced type id (ptr, typedef, func, modifiers).
    size_or_type: u32,
    /// Members (struct, union), or parameter type ids (func proto) with bit_offset 0.
    members: Vec<Member>,
    /// Element type and count (array).
    array: Option<(u32, u32)>,
}

/// Why BTF data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// Not BTF, or cut short.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Parsed BTF: types by id and an index by (name, kind).
#[derive(Debug, Clone)]
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<(String, Kind), u32>,
}

const BTF_MAGIC: u16 = 0xeb9f;

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file("/sys/kernel/btf/vmlinux")
    }

    /// BTF from a raw BTF file (e.g. `/sys/kernel/btf/vmlinux`).
    pub fn from_file(path: &str) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses raw little-endian BTF (the content of a `.BTF` section).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            return Err(BtfError::Malformed("no little-endian BTF magic"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_raw = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        // Type id 0 is void.
        let mut types = vec![Type {
            kind: Kind::Other,
            name: 0,
            size_or_type: 0,
            members: Vec::new(),
            array: None,
        }];
        let mut off = 0;
        while off < types_raw.len() {
            let name = u32_at(types_raw, off)?;
            let info = u32_at(types_raw, off + 4)?;
            let size_or_type = u32_at(types_raw, off + 8)?;
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            let raw_kind = (info >> 24) & 0x1f;
            let mut t = Type {
                kind: Kind::Other,
                name,
                size_or_type,
                members: Vec::new(),
                array: None,
            };
            match raw_kind {
                1 => {
                    t.kind = Kind::Int;
                    off += 4;
                }
                2 => t.kind = Kind::Ptr,
                3 => {
                    t.kind = Kind::Array;
                    t.array = Some((u32_at(types_raw, off)?, u32_at(types_raw, off + 8)?));
                    off += 12;
                }
                4 | 5 => {
                    t.kind = if raw_kind == 4 {
                        Kind::Struct
                    } else {
                        Kind::Union
                    };
                    for _ in 0..vlen {
                        let offset = u32_at(types_raw, off + 8)?;
                        t.members.push(Member {
                            name: name_at(&strings, u32_at(types_raw, off)?),
                            type_id: u32_at(types_raw, off + 4)?,
                            bit_offset: if kflag { offset & 0x00ff_ffff } else { offset },
                        });
                        off += 12;
                    }
                }
                6 => {
                    t.kind = Kind::Enum;
                    off += 8 * vlen;
                }
                19 => {
                    t.kind = Kind::Enum;
                    off += 12 * vlen;
                }
                8 => t.kind = Kind::Typedef,
                12 => t.kind = Kind::Func,
                13 => {
                    t.kind = Kind::FuncProto;
                    for _ in 0..vlen {
                        t.members.push(Member {
                            name: name_at(&strings, u32_at(types_raw, off)?),
                            type_id: u32_at(types_raw, off + 4)?,
                            bit_offset: 0,
                        });
                        off += 8;
                    }
                }
                14 | 17 => off += 4,            // VAR, DECL_TAG
                15 => off += 12 * vlen,         // DATASEC
                7 | 9 | 10 | 11 | 16 | 18 => {} // FWD, modifiers, FLOAT, TYPE_TAG
                _ => return Err(BtfError::Malformed("unknown type kind")),
            }
            types.push(t);
        }
        if off != types_raw.len() {
            return Err(BtfError::Malformed("type section ends inside a type"));
        }
        // Only the kinds asked for (a kernel has ~100k types; the collector
        // starts faster without indexing every one).
        let mut by_name = HashMap::new();
        for (id, t) in types.iter().enumerate().skip(1) {
            if t.name != 0 && matches!(t.kind, Kind::Struct | Kind::Typedef | Kind::Func) {
                by_name
                    .entry((name_at(&strings, t.name), t.kind))
                    .or_insert(id as u32);
            }
        }
        Ok(Self {
            types,
            strings,
            by_name,
        })
    }

    /// Id of the first type called `name` of `kind` (struct, typedef or function).
    pub fn find(&self, name: &str, kind: Kind) -> Option<u32> {
        self.by_name.get(&(name.to_string(), kind)).copied()
    }

    /// Whether a type called `name` of `kind` (struct, typedef or function) exists.
    pub fn has(&self, name: &str, kind: Kind) -> bool {
        self.find(name, kind).is_some()
    }

    /// Whether the kernel has the BTF-enabled tracepoint `name`
    /// (`tp_btf/<name>`: a `btf_trace_<name>` typedef).
    pub fn has_btf_tracepoint(&self, name: &str) -> bool {
        self.has(&format!("btf_trace_{name}"), Kind::Typedef)
    }

    /// Arguments of the BTF-enabled tracepoint `name`, without the leading
    /// context pointer every `btf_trace_*` prototype has: None if absent.
    pub fn btf_tracepoint_args(&self, name: &str) -> Option<usize> {
        let id = self.find(&format!("btf_trace_{name}"), Kind::Typedef)?;
        let proto = self.resolve(id, &[Kind::Typedef, Kind::Ptr])?;
        let t = self.types.get(proto as usize)?;
        (t.kind == Kind::FuncProto).then(|| t.members.len().saturating_sub(1))
    }

    /// Number of parameters of the kernel function `name`: None if the
    /// function is not in BTF (absent, inlined everywhere, or a module's).
    pub fn func_params(&self, name: &str) -> Option<usize> {
        let id = self.find(name, Kind::Func)?;
        let proto = self.types.get(id as usize)?.size_or_type;
        let t = self.types.get(proto as usize)?;
        (t.kind == Kind::FuncProto).then_some(t.members.len())
    }

    /// Size in bytes and members of the struct `name`.
    pub fn struct_layout(&self, name: &str) -> Option<(u32, &[Member])> {
        let t = self.types.get(self.find(name, Kind::Struct)? as usize)?;
        Some((t.size_or_type, &t.members))
    }

    /// Size in bytes of type `id` (through typedefs and modifiers; arrays multiplied out).
    pub fn size_of(&self, id: u32) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        match t.kind {
            Kind::Int | Kind::Struct | Kind::Union | Kind::Enum => Some(t.size_or_type),
            Kind::Ptr => Some(8),
            Kind::Array => {
                let (elem, n) = t.array?;
                self.size_of(elem)?.checked_mul(n)
            }
            Kind::Typedef | Kind::Other => self.size_of(t.size_or_type),
            Kind::Func | Kind::FuncProto => None,
        }
    }

    /// Name of type `id` ("" if anonymous or unknown).
    pub fn name_of(&self, id: u32) -> String {
        self.types
            .get(id as usize)
            .map(|t| name_at(&self.strings, t.name))
            .unwrap_or_default()
    }

    /// Follows `id` through the given kinds (and unnamed modifiers) to the first other type.
    fn resolve(&self, mut id: u32, through: &[Kind]) -> Option<u32> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            if through.contains(&t.kind) || t.kind == Kind::Other && t.members.is_empty() {
                if t.size_or_type == 0 {
                    return None;
                }
                id = t.size_or_type;
            } else {
                return Some(id);
            }
        }
        None
    }
}

fn name_at(strings: &[u8], off: u32) -> String {
    let Some(rest) = strings.get(off as usize..) else {
        return String::new();
    };
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF from raw type records and a string table.
    fn btf(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let type_len = (types.len() * 4) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, type_len, type_len, strings.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for t in types {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.extend_from_slice(strings);
        out
    }

    const fn info(kind: u32, vlen: u32) -> u32 {
        kind << 24 | vlen
    }

    #[test]
    fn reads_structs_tracepoints_and_functions() {
        // 1: int "u32"; 2: struct "pair" { u32 a @0; u32 b @32 }; 3: ptr -> 4;
        // 4: func_proto (void *ctx, u32 x) -> int; 5: typedef "btf_trace_tp" -> 3;
        // 6: func_proto (u32 x) -> int; 7: func "kfn" -> 6.
        let strings = b"\0u32\0pair\0a\0b\0btf_trace_tp\0kfn\0ctx\0x\0";
        let types = [
            1,
            info(1, 0),
            4,
            32, //
            5,
            info(4, 2),
            8,
            10,
            1,
            0,
            12,
            1,
            32, //
            0,
            info(2, 0),
            4, //
            0,
            info(13, 2),
            1,
            31,
            3,
            35,
            1, //
            14,
            info(8, 0),
            3, //
            0,
            info(13, 1),
            1,
            35,
            1, //
            27,
            info(12, 0),
            6,
        ];
        let b = Btf::parse(&btf(&types, strings)).unwrap();
        let (size, members) = b.struct_layout("pair").unwrap();
        assert_eq!(size, 8);
        assert_eq!(members.len(), 2);
        assert_eq!((members[1].name.as_str(), members[1].bit_offset), ("b", 32));
        assert_eq!(b.size_of(members[0].type_id), Some(4));
        assert!(b.has_btf_tracepoint("tp"));
        assert!(!b.has_btf_tracepoint("other"));
        assert_eq!(b.btf_tracepoint_args("tp"), Some(1));
        assert_eq!(b.func_params("kfn"), Some(1));
        assert_eq!(b.func_params("missing"), None);
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
        let mut cut = btf(&[1, info(1, 0), 4], b"\0u32\0");
        cut.truncate(30);
        assert!(Btf::parse(&cut).is_err());
    }
}
