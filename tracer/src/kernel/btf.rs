//! A small, safe reader of kernel BTF (BPF Type Format) that resolves struct member offsets and
//! sizes in userspace.
//!
//! Why it exists: the eBPF programs are written in Rust, which gets no CO-RE relocations, so the
//! loader cannot fix up `sk->__sk_common.skc_daddr` for the running kernel. Instead the library
//! reads the running kernel's BTF (`/sys/kernel/btf/vmlinux`) here, resolves each field's byte
//! offset and hands the offsets to the programs. aya-obj parses BTF too, but does not expose its
//! type lookups.
//!
//! Scope: little-endian, self-contained ("base") BTF such as vmlinux. Split BTF (a kernel
//! module's, whose type ids and string offsets continue its base's) is not supported. Every read
//! is bounds-checked, so truncated or corrupt input gives a [`BtfError`], never a panic, and a
//! depth limit cuts cycles in corrupt type graphs instead of looping or overflowing the stack.
//!
//! Format reference: <https://docs.kernel.org/bpf/btf.html> and `include/uapi/linux/btf.h`.

use std::{
    fmt, io,
    ops::Range,
    path::{Path, PathBuf},
};

use rustc_hash::FxHashMap;

/// The BTF magic number, read little-endian from the first two bytes.
const BTF_MAGIC: u16 = 0xEB9F;
/// The only BTF format version there is.
const BTF_VERSION: u8 = 1;
/// Bytes of the header fields this reader knows (magic .. str_len). `hdr_len` may be larger when
/// a newer kernel appends fields; the sections are located relative to `hdr_len`, so that is fine.
const HEADER_LEN: usize = 24;
/// Bytes of one `struct btf_type` record (name_off, info, size/type) before its trailing data.
const TYPE_RECORD_LEN: usize = 12;
/// BTF does not record pointer sizes; the tracer runs on 64-bit kernels only.
const POINTER_SIZE: u32 = 8;
/// How many typedef/modifier hops, nested anonymous members or nested arrays are followed before
/// the input is called corrupt. Real kernels nest a handful deep; the limit only stops cycles.
const MAX_DEPTH: u32 = 64;

// Kind numbers from include/uapi/linux/btf.h.
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Everything that can go wrong reading BTF or resolving a member in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("reading BTF from {path}: {source}")]
    Io {
        /// The file that was read.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },

    /// The data does not start with the little-endian BTF magic 0xEB9F (big-endian BTF shows up
    /// here too: this reader only handles little-endian hosts).
    #[error("not little-endian BTF: magic is {0:#06x}, expected 0xeb9f")]
    BadMagic(u16),

    /// The data is truncated or internally inconsistent.
    #[error("malformed BTF: {0}")]
    Malformed(String),

    /// No complete `struct` with this name exists (a forward declaration alone does not count).
    #[error("no struct {0} in BTF")]
    NoSuchStruct(String),

    /// The struct has no member at this path (also when a path component is not a struct or
    /// union, such as an integer).
    #[error("struct {struct_name} has no member {path}")]
    NoSuchMember {
        /// The outermost struct searched.
        struct_name: String,
        /// The dot-separated member path asked for.
        path: String,
    },

    /// The member is a bitfield or does not start on a byte boundary; the programs read whole bytes.
    #[error("struct {struct_name} member {path}: {member} is a bitfield")]
    Bitfield {
        /// The outermost struct searched.
        struct_name: String,
        /// The dot-separated member path asked for.
        path: String,
        /// The path component that is the bitfield.
        member: String,
    },

    /// The path crosses a pointer: offsets are only resolved within one object.
    #[error("struct {struct_name} member {path}: {pointer} is a pointer, offsets cannot cross it")]
    ThroughPointer {
        /// The outermost struct searched.
        struct_name: String,
        /// The dot-separated member path asked for.
        path: String,
        /// The path component whose type is a pointer.
        pointer: String,
    },

    /// The member's type has no size (void, a function prototype or a forward declaration).
    #[error("struct {struct_name} member {path} has a type without a size")]
    Unsized {
        /// The outermost struct searched.
        struct_name: String,
        /// The dot-separated member path asked for.
        path: String,
    },
}

/// One parsed BTF type, reduced to what offset and size lookups need.
#[derive(Clone, Debug)]
struct Type {
    /// Offset of the type's name in the string section (0: anonymous).
    name_off: u32,
    kind: Kind,
}

/// The layout-relevant content of each BTF kind.
#[derive(Clone, Debug)]
enum Kind {
    /// Type id 0, which every BTF reserves for `void`.
    Void,
    Int {
        size: u32,
        /// Bits of the value (`BTF_INT_BITS`): fewer than `size * 8` marks an old-style bitfield.
        bits: u32,
        /// Bit offset of the value (`BTF_INT_OFFSET`): non-zero marks an old-style bitfield.
        bit_offset: u32,
    },
    Pointer,
    Array {
        element: u32,
        count: u32,
    },
    /// A struct or union.
    Composite {
        is_union: bool,
        size: u32,
        /// `kind_flag`: each member's offset packs the bitfield size in its top 8 bits.
        packed_bitfields: bool,
        /// This type's members in [`Btf::members`].
        members: Range<usize>,
    },
    /// An enum or enum64.
    Enum {
        size: u32,
    },
    Forward,
    /// typedef, const, volatile, restrict and type_tag: they name or qualify another type
    /// without changing its layout, so lookups see through them.
    Alias {
        target: u32,
    },
    Function,
    Float {
        size: u32,
    },
    DataSection {
        size: u32,
    },
    /// func_proto, var and decl_tag: they never hold members and have no size of their own.
    Other,
}

/// One `struct btf_member` of a struct or union.
#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Raw `offset`: a bit offset, or with the parent's kind_flag, bitfield size << 24 | bit offset.
    offset: u32,
}

/// A member found by name, possibly inside anonymous structs or unions.
struct FoundMember {
    /// Bits from the start of the container searched (anonymous parents included).
    bit_offset: u64,
    type_id: u32,
    is_bitfield: bool,
}

/// Parsed BTF with a name index, ready for member offset and size lookups.
pub struct Btf {
    /// Indexed by type id; entry 0 is `void`.
    types: Vec<Type>,
    /// Members of every struct and union, in file order; each composite owns a range.
    members: Vec<Member>,
    /// The string section.
    strings: Vec<u8>,
    /// Every non-empty type name to the ids carrying it, in id order.
    by_name: FxHashMap<Box<[u8]>, Vec<u32>>,
}

impl fmt::Debug for Btf {
    // The type table is far too large to print; a summary is what a log line needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.types.len())
            .field("members", &self.members.len())
            .field("string_bytes", &self.strings.len())
            .finish()
    }
}

/// Reads a little-endian u32 at `at`, or `None` past the end.
fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(*bytes.get(at..)?.first_chunk::<4>()?))
}

/// Reads a little-endian u16 at `at`, or `None` past the end.
fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(*bytes.get(at..)?.first_chunk::<2>()?))
}

/// Widens a u32 read from the file to usize (lossless on the 32- and 64-bit hosts Rust targets here).
fn usize_from(value: u32) -> Result<usize, BtfError> {
    usize::try_from(value).map_err(|_| BtfError::Malformed(format!("{value} does not fit usize")))
}

/// Returns `len` bytes at `offset` after the header, or an error naming the section.
fn section<'a>(
    bytes: &'a [u8],
    header_len: usize,
    offset: u32,
    len: u32,
    name: &str,
) -> Result<&'a [u8], BtfError> {
    let start = header_len.checked_add(usize_from(offset)?);
    let end = start.and_then(|start| start.checked_add(usize_from(len).ok()?));
    start
        .zip(end)
        .and_then(|(start, end)| bytes.get(start..end))
        .ok_or_else(|| {
            BtfError::Malformed(format!(
                "{name} section (offset {offset}, {len} bytes) runs past the end of {} bytes",
                bytes.len()
            ))
        })
}

/// Returns the NUL-terminated string at `offset` in the string section, without the NUL.
fn string_at(strings: &[u8], offset: u32) -> Option<&[u8]> {
    if offset == 0 {
        // Offset 0 is the empty name by definition; answering it directly also copes with an
        // empty string section.
        return Some(&[]);
    }
    let rest = strings.get(usize::try_from(offset).ok()?..)?;
    let end = rest.iter().position(|&byte| byte == 0)?;
    rest.get(..end)
}

impl Btf {
    /// Reads and parses a BTF file, e.g. `/sys/kernel/btf/vmlinux`.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes)
    }

    /// Parses BTF from memory: the header, every type record (so that type ids stay right) and
    /// the string section, then indexes type names.
    pub fn parse(bytes: &[u8]) -> Result<Btf, BtfError> {
        let truncated =
            || BtfError::Malformed(format!("header truncated at {} bytes", bytes.len()));
        let magic = read_u16(bytes, 0).ok_or_else(truncated)?;
        if magic != BTF_MAGIC {
            return Err(BtfError::BadMagic(magic));
        }
        let version = *bytes.get(2).ok_or_else(truncated)?;
        if version != BTF_VERSION {
            return Err(BtfError::Malformed(format!(
                "unsupported BTF version {version}"
            )));
        }
        // Byte 3 holds flags, none of which change the layout.
        let field = |at| read_u32(bytes, at).ok_or_else(truncated);
        let header_len = usize_from(field(4)?)?;
        if header_len < HEADER_LEN {
            return Err(BtfError::Malformed(format!(
                "header length {header_len} is below {HEADER_LEN}"
            )));
        }
        let types = section(bytes, header_len, field(8)?, field(12)?, "type")?;
        let strings = section(bytes, header_len, field(16)?, field(20)?, "string")?;

        let mut btf = Btf {
            types: vec![Type {
                name_off: 0,
                kind: Kind::Void,
            }],
            members: Vec::new(),
            strings: strings.to_vec(),
            by_name: FxHashMap::default(),
        };
        btf.parse_types(types)?;
        btf.index_names()?;
        Ok(btf)
    }

    /// Decodes every `struct btf_type` with its kind-specific trailing data.
    fn parse_types(&mut self, section: &[u8]) -> Result<(), BtfError> {
        let mut pos = 0usize;
        while pos < section.len() {
            let id = self.types.len();
            let malformed = |what: &str| BtfError::Malformed(format!("type id {id}: {what}"));
            let word = |at: usize| {
                at.checked_add(pos)
                    .and_then(|at| read_u32(section, at))
                    .ok_or_else(|| malformed("truncated"))
            };
            let name_off = word(0)?;
            let info = word(4)?;
            let size_or_type = word(8)?;
            let kind_number = (info >> 24) & 0x1f;
            let vlen = usize_from(info & 0xffff)?;
            let kind_flag = info >> 31 == 1;
            // Trailing data starts right after the 12-byte record; `extra` is its length.
            let data = TYPE_RECORD_LEN;
            let per_entry = |entry_len: usize| {
                vlen.checked_mul(entry_len)
                    .ok_or_else(|| malformed("trailing data overflows"))
            };
            let (kind, extra) = match kind_number {
                KIND_INT => {
                    let encoding = word(data)?;
                    let kind = Kind::Int {
                        size: size_or_type,
                        bits: encoding & 0xff,
                        bit_offset: (encoding >> 16) & 0xff,
                    };
                    (kind, 4)
                }
                KIND_PTR => (Kind::Pointer, 0),
                KIND_ARRAY => {
                    // struct btf_array { type, index_type, nelems }.
                    let kind = Kind::Array {
                        element: word(data)?,
                        count: word(data + 8)?,
                    };
                    (kind, 12)
                }
                KIND_STRUCT | KIND_UNION => {
                    let first = self.members.len();
                    for index in 0..vlen {
                        // struct btf_member { name_off, type, offset }.
                        let at = index
                            .checked_mul(12)
                            .and_then(|off| off.checked_add(data))
                            .ok_or_else(|| malformed("member offset overflows"))?;
                        self.members.push(Member {
                            name_off: word(at)?,
                            type_id: word(at + 4)?,
                            offset: word(at + 8)?,
                        });
                    }
                    let kind = Kind::Composite {
                        is_union: kind_number == KIND_UNION,
                        size: size_or_type,
                        packed_bitfields: kind_flag,
                        members: first..self.members.len(),
                    };
                    (kind, per_entry(12)?)
                }
                // struct btf_enum { name_off, val } per value.
                KIND_ENUM => (Kind::Enum { size: size_or_type }, per_entry(8)?),
                // struct btf_enum64 { name_off, val_lo32, val_hi32 } per value.
                KIND_ENUM64 => (Kind::Enum { size: size_or_type }, per_entry(12)?),
                KIND_FWD => (Kind::Forward, 0),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => (
                    Kind::Alias {
                        target: size_or_type,
                    },
                    0,
                ),
                KIND_FUNC => (Kind::Function, 0),
                // struct btf_param { name_off, type } per parameter.
                KIND_FUNC_PROTO => (Kind::Other, per_entry(8)?),
                // struct btf_var { linkage }.
                KIND_VAR => (Kind::Other, 4),
                // struct btf_var_secinfo { type, offset, size } per variable.
                KIND_DATASEC => (Kind::DataSection { size: size_or_type }, per_entry(12)?),
                KIND_FLOAT => (Kind::Float { size: size_or_type }, 0),
                // struct btf_decl_tag { component_idx }.
                KIND_DECL_TAG => (Kind::Other, 4),
                // An unknown kind has unknown trailing data, so no later type id could be trusted.
                other => return Err(malformed(&format!("unknown kind {other}"))),
            };
            let end = pos
                .checked_add(data)
                .and_then(|end| end.checked_add(extra))
                .filter(|&end| end <= section.len())
                .ok_or_else(|| malformed("trailing data runs past the type section"))?;
            self.types.push(Type { name_off, kind });
            pos = end;
        }
        Ok(())
    }

    /// Builds the name -> type ids index once, so every later lookup is a hash probe.
    fn index_names(&mut self) -> Result<(), BtfError> {
        let mut by_name: FxHashMap<Box<[u8]>, Vec<u32>> = FxHashMap::default();
        by_name.reserve(self.types.len());
        for (id, ty) in self.types.iter().enumerate() {
            let name = string_at(&self.strings, ty.name_off).ok_or_else(|| {
                BtfError::Malformed(format!(
                    "type id {id}: name offset {} is outside the string section",
                    ty.name_off
                ))
            })?;
            if name.is_empty() {
                continue;
            }
            let id = u32::try_from(id)
                .map_err(|_| BtfError::Malformed("more than 2^32 types".to_owned()))?;
            by_name.entry(name.into()).or_default().push(id);
        }
        self.by_name = by_name;
        Ok(())
    }

    /// The byte offset of a member from the start of `struct struct_name`. `path` is
    /// dot-separated (`"__sk_common.skc_daddr"`); members of anonymous structs and unions are
    /// found as if they were direct members, and typedefs and qualifiers are seen through. A path
    /// that crosses a pointer or ends on a bitfield is an error.
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        self.resolve(struct_name, path).map(|(offset, _)| offset)
    }

    /// The size in bytes of the member at `path` in `struct struct_name` (see
    /// [`member_offset`](Self::member_offset) for the path rules). Pointers count as 8 bytes,
    /// arrays as element size times count.
    pub fn member_size(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let (_, type_id) = self.resolve(struct_name, path)?;
        self.size_of(type_id, 0)?.ok_or_else(|| BtfError::Unsized {
            struct_name: struct_name.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        match self.type_of(self.struct_id(name)?)?.kind {
            Kind::Composite { size, .. } => Ok(size),
            _ => Err(BtfError::NoSuchStruct(name.to_owned())),
        }
    }

    /// Whether a complete `struct name` exists (a forward declaration alone does not count).
    pub fn has_struct(&self, name: &str) -> bool {
        self.struct_id(name).is_ok()
    }

    /// Whether a function named `name` exists (BTF_KIND_FUNC), i.e. whether fentry/fexit can
    /// attach to it: inlined and static-but-elided functions have no FUNC entry.
    pub fn has_function(&self, name: &str) -> bool {
        self.ids_named(name).iter().any(|&id| {
            self.type_of(id)
                .is_ok_and(|ty| matches!(ty.kind, Kind::Function))
        })
    }

    /// Type ids named `name`, in id order.
    fn ids_named(&self, name: &str) -> &[u32] {
        self.by_name.get(name.as_bytes()).map_or(&[], Vec::as_slice)
    }

    /// The type with this id, or an error for an id past the table (a dangling reference).
    fn type_of(&self, id: u32) -> Result<&Type, BtfError> {
        usize::try_from(id)
            .ok()
            .and_then(|index| self.types.get(index))
            .ok_or_else(|| BtfError::Malformed(format!("reference to missing type id {id}")))
    }

    /// The name at `offset` in the string section.
    fn name(&self, offset: u32) -> Result<&[u8], BtfError> {
        string_at(&self.strings, offset).ok_or_else(|| {
            BtfError::Malformed(format!(
                "name offset {offset} is outside the string section"
            ))
        })
    }

    /// The id of `struct name`: the first complete definition (members or a non-zero size),
    /// else the first struct of that name at all (an empty struct is still a struct).
    fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        let mut empty = None;
        for &id in self.ids_named(name) {
            if let Ok(Type {
                kind:
                    Kind::Composite {
                        is_union: false,
                        size,
                        members,
                        ..
                    },
                ..
            }) = self.type_of(id)
            {
                if *size > 0 || !members.is_empty() {
                    return Ok(id);
                }
                empty.get_or_insert(id);
            }
        }
        empty.ok_or_else(|| BtfError::NoSuchStruct(name.to_owned()))
    }

    /// Follows typedefs and qualifiers to the type they stand for.
    fn skip_aliases(&self, mut id: u32) -> Result<(u32, &Type), BtfError> {
        for _ in 0..MAX_DEPTH {
            let ty = self.type_of(id)?;
            match ty.kind {
                Kind::Alias { target } => id = target,
                _ => return Ok((id, ty)),
            }
        }
        Err(BtfError::Malformed(format!(
            "typedef/qualifier chain at type id {id} is longer than {MAX_DEPTH} (cyclic?)"
        )))
    }

    /// Walks `path` from `struct struct_name`; returns the member's byte offset and type id.
    fn resolve(&self, struct_name: &str, path: &str) -> Result<(u32, u32), BtfError> {
        let no_member = || BtfError::NoSuchMember {
            struct_name: struct_name.to_owned(),
            path: path.to_owned(),
        };
        let mut container = self.struct_id(struct_name)?;
        let mut bit_offset: u64 = 0;
        let mut member_type = None;
        // Bytes of `path` walked before the current component, to name a pointer member.
        let mut walked = 0usize;
        for component in path.split('.') {
            if let Some(previous) = member_type {
                // Step into the previous component's struct or union.
                let (id, ty) = self.skip_aliases(previous)?;
                match ty.kind {
                    Kind::Composite { .. } => container = id,
                    Kind::Pointer => {
                        // Name the path up to and including the pointer member.
                        return Err(BtfError::ThroughPointer {
                            struct_name: struct_name.to_owned(),
                            path: path.to_owned(),
                            pointer: path.get(..walked).unwrap_or(path).to_owned(),
                        });
                    }
                    _ => return Err(no_member()),
                }
            }
            // An empty component ("a..b", "") must not match an anonymous member.
            if component.is_empty() {
                return Err(no_member());
            }
            let found = self
                .find_member(container, component.as_bytes(), 0)?
                .ok_or_else(no_member)?;
            bit_offset = bit_offset
                .checked_add(found.bit_offset)
                .ok_or_else(|| BtfError::Malformed(format!("offset of {path} overflows")))?;
            if found.is_bitfield || !bit_offset.is_multiple_of(8) {
                return Err(BtfError::Bitfield {
                    struct_name: struct_name.to_owned(),
                    path: path.to_owned(),
                    member: component.to_owned(),
                });
            }
            member_type = Some(found.type_id);
            // The component plus the dot before it (none before the first).
            walked = walked
                .saturating_add(component.len())
                .saturating_add(usize::from(walked > 0));
        }
        let offset = u32::try_from(bit_offset / 8)
            .map_err(|_| BtfError::Malformed(format!("offset of {path} exceeds 4 GiB")))?;
        // `path.split` yields at least one component, so a member type was found.
        member_type.map(|id| (offset, id)).ok_or_else(no_member)
    }

    /// Finds the member `name` of the struct or union `container`, looking through anonymous
    /// struct and union members at any depth (C makes their members the parent's). Returns
    /// `None` when absent.
    fn find_member(
        &self,
        container: u32,
        name: &[u8],
        depth: u32,
    ) -> Result<Option<FoundMember>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::Malformed(format!(
                "anonymous members nested deeper than {MAX_DEPTH} under type id {container} (cyclic?)"
            )));
        }
        let Kind::Composite {
            packed_bitfields,
            members,
            ..
        } = &self.type_of(container)?.kind
        else {
            return Ok(None);
        };
        let members = self.members.get(members.clone()).unwrap_or_default();
        for member in members {
            let (bit_offset, bitfield_size) = if *packed_bitfields {
                (member.offset & 0x00ff_ffff, member.offset >> 24)
            } else {
                (member.offset, 0)
            };
            let member_name = self.name(member.name_off)?;
            if member_name.is_empty() {
                let (inner, ty) = self.skip_aliases(member.type_id)?;
                if !matches!(ty.kind, Kind::Composite { .. }) {
                    continue;
                }
                if let Some(mut found) = self.find_member(inner, name, depth + 1)? {
                    found.bit_offset = found
                        .bit_offset
                        .checked_add(u64::from(bit_offset))
                        .ok_or_else(|| BtfError::Malformed("member offset overflows".to_owned()))?;
                    return Ok(Some(found));
                }
            } else if member_name == name {
                return Ok(Some(FoundMember {
                    bit_offset: u64::from(bit_offset),
                    type_id: member.type_id,
                    is_bitfield: bitfield_size != 0 || self.is_int_bitfield(member.type_id)?,
                }));
            }
        }
        Ok(None)
    }

    /// Whether `id` is an old-style (kind_flag 0) bitfield: an int whose value is narrower than
    /// its storage or starts at a bit offset inside it.
    fn is_int_bitfield(&self, id: u32) -> Result<bool, BtfError> {
        Ok(match self.skip_aliases(id)?.1.kind {
            Kind::Int {
                size,
                bits,
                bit_offset,
            } => bit_offset != 0 || u64::from(bits) != u64::from(size) * 8,
            _ => false,
        })
    }

    /// The size in bytes of type `id`, or `None` for types without one (void, functions,
    /// forward declarations).
    fn size_of(&self, id: u32, depth: u32) -> Result<Option<u32>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::Malformed(format!(
                "arrays nested deeper than {MAX_DEPTH} at type id {id} (cyclic?)"
            )));
        }
        Ok(match self.skip_aliases(id)?.1.kind {
            Kind::Int { size, .. }
            | Kind::Composite { size, .. }
            | Kind::Enum { size }
            | Kind::Float { size }
            | Kind::DataSection { size } => Some(size),
            Kind::Pointer => Some(POINTER_SIZE),
            Kind::Array { element, count } => match self.size_of(element, depth + 1)? {
                Some(element_size) => Some(element_size.checked_mul(count).ok_or_else(|| {
                    BtfError::Malformed(format!("array type id {id} is larger than 4 GiB"))
                })?),
                None => None,
            },
            Kind::Void | Kind::Forward | Kind::Function | Kind::Other | Kind::Alias { .. } => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::OnceLock, time::Instant};

    use super::*;

    /// Builds BTF blobs type by type; each method returns the new type's id, as the kernel numbers
    /// them (from 1, in file order).
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn string(&mut self, text: &str) -> u32 {
            if text.is_empty() {
                return 0;
            }
            let offset = self.strings.len() as u32;
            self.strings.extend_from_slice(text.as_bytes());
            self.strings.push(0);
            offset
        }

        fn record(
            &mut self,
            name: &str,
            kind: u32,
            flag: bool,
            vlen: u32,
            size_or_type: u32,
            trailing: &[u32],
        ) -> u32 {
            let name_off = self.string(name);
            let info = (u32::from(flag) << 31) | (kind << 24) | vlen;
            for word in [name_off, info, size_or_type].iter().chain(trailing) {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.record(name, KIND_INT, false, 0, size, &[size * 8])
        }

        fn pointer(&mut self, target: u32) -> u32 {
            self.record("", KIND_PTR, false, 0, target, &[])
        }

        fn array(&mut self, element: u32, index: u32, count: u32) -> u32 {
            self.record("", KIND_ARRAY, false, 0, 0, &[element, index, count])
        }

        fn alias(&mut self, kind: u32, name: &str, target: u32) -> u32 {
            self.record(name, kind, false, 0, target, &[])
        }

        /// A struct or union; members are (name, type id, raw offset word).
        fn composite(
            &mut self,
            kind: u32,
            flag: bool,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut trailing = Vec::new();
            for &(member, type_id, offset) in members {
                trailing.extend([self.string(member), type_id, offset]);
            }
            self.record(name, kind, flag, members.len() as u32, size, &trailing)
        }

        fn structure(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            self.composite(KIND_STRUCT, false, name, size, members)
        }

        fn union(&mut self, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            self.composite(KIND_UNION, false, "", size, members)
        }

        fn build(&self) -> Vec<u8> {
            let mut blob = Vec::new();
            blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            blob.extend_from_slice(&[BTF_VERSION, 0]);
            let type_len = self.types.len() as u32;
            for word in [
                HEADER_LEN as u32,
                0,
                type_len,
                type_len,
                self.strings.len() as u32,
            ] {
                blob.extend_from_slice(&word.to_le_bytes());
            }
            blob.extend_from_slice(&self.types);
            blob.extend_from_slice(&self.strings);
            blob
        }
    }

    /// A miniature `sock_common`/`sock`, laid out like the kernel's: `skc_daddr` inside an
    /// anonymous struct inside an anonymous union, ports likewise at byte 12, family at 16, a
    /// typedef'd `in6_addr` pair, a `net` pointer and a bitfield.
    fn sock_blob() -> Vec<u8> {
        let mut b = Builder::new();
        let u8_t = b.int("unsigned char", 1);
        let u16_t = b.int("short unsigned int", 2);
        let u32_t = b.int("unsigned int", 4);
        let u64_t = b.int("long long unsigned int", 8);
        let be32 = b.alias(KIND_TYPEDEF, "__be32", u32_t);
        let ns_common = b.structure(
            "ns_common",
            8,
            &[("stashed", u32_t, 0), ("inum", u32_t, 32)],
        );
        let net = b.structure("net", 16, &[("passive", u32_t, 0), ("ns", ns_common, 64)]);
        let net_ptr = b.pointer(net);
        let possible_net_t = b.structure("", 8, &[("net", net_ptr, 0)]);
        let addrs = b.structure(
            "",
            8,
            &[("skc_daddr", be32, 0), ("skc_rcv_saddr", be32, 32)],
        );
        let addr_union = b.union(8, &[("skc_addrpair", u64_t, 0), ("", addrs, 0)]);
        let ports = b.structure("", 4, &[("skc_dport", u16_t, 0), ("skc_num", u16_t, 16)]);
        let port_union = b.union(4, &[("skc_portpair", u32_t, 0), ("", ports, 0)]);
        let bytes16 = b.array(u8_t, u32_t, 16);
        let in6_addr = b.structure("in6_addr", 16, &[("s6_addr", bytes16, 0)]);
        let in6_typedef = b.alias(KIND_TYPEDEF, "in6_addr_t", in6_addr);
        let const_in6 = b.alias(KIND_CONST, "", in6_typedef);
        let sock_common = b.composite(
            KIND_STRUCT,
            true,
            "sock_common",
            64,
            &[
                ("", addr_union, 0),
                ("skc_hash", u32_t, 64),
                ("", port_union, 96),
                ("skc_family", u16_t, 128),
                ("skc_state", u8_t, 144),
                // kind_flag layout: bitfield size 4 << 24 | bit offset 152.
                ("skc_reuse", u8_t, (4 << 24) | 152),
                ("skc_net", possible_net_t, 192),
                ("skc_v6_daddr", const_in6, 256),
            ],
        );
        let sock_common_t = b.alias(KIND_TYPEDEF, "sock_common_t", sock_common);
        b.structure(
            "sock",
            96,
            &[
                ("__sk_common", sock_common_t, 0),
                ("sk_protocol", u16_t, 512),
                ("sk_net_ptr", net_ptr, 576),
            ],
        );
        b.build()
    }

    fn sock_btf() -> Btf {
        Btf::parse(&sock_blob()).unwrap()
    }

    #[test]
    fn plain_struct_members_have_their_offsets_and_sizes() {
        let mut b = Builder::new();
        let u8_t = b.int("u8", 1);
        let u16_t = b.int("u16", 2);
        let u32_t = b.int("u32", 4);
        let bytes = b.array(u8_t, u32_t, 6);
        let ptr = b.pointer(u32_t);
        b.structure(
            "flow",
            24,
            &[
                ("id", u32_t, 0),
                ("port", u16_t, 32),
                ("mac", bytes, 48),
                ("next", ptr, 128),
            ],
        );
        let btf = Btf::parse(&b.build()).unwrap();
        let offset = |path| btf.member_offset("flow", path).unwrap();
        let size = |path| btf.member_size("flow", path).unwrap();
        assert_eq!((offset("id"), size("id")), (0, 4));
        assert_eq!((offset("port"), size("port")), (4, 2));
        assert_eq!((offset("mac"), size("mac")), (6, 6));
        assert_eq!((offset("next"), size("next")), (16, 8));
        assert_eq!(btf.struct_size("flow").unwrap(), 24);
        assert!(btf.has_struct("flow"));
        assert!(!btf.has_struct("u32"));
    }

    #[test]
    fn members_of_anonymous_unions_and_structs_are_found_at_any_depth() {
        let btf = sock_btf();
        let offset = |path| btf.member_offset("sock", path).unwrap();
        assert_eq!(offset("__sk_common.skc_addrpair"), 0);
        assert_eq!(offset("__sk_common.skc_daddr"), 0);
        assert_eq!(offset("__sk_common.skc_rcv_saddr"), 4);
        assert_eq!(offset("__sk_common.skc_hash"), 8);
        assert_eq!(offset("__sk_common.skc_dport"), 12);
        assert_eq!(offset("__sk_common.skc_num"), 14);
        assert_eq!(offset("__sk_common.skc_family"), 16);
        assert_eq!(offset("sk_protocol"), 64);
        assert_eq!(btf.member_size("sock", "__sk_common.skc_daddr").unwrap(), 4);
        assert_eq!(btf.member_size("sock", "__sk_common.skc_num").unwrap(), 2);
        assert_eq!(btf.member_offset("sock_common", "skc_dport").unwrap(), 12);
    }

    #[test]
    fn nested_path_follows_typedefs_and_qualifiers() {
        let btf = sock_btf();
        // __sk_common is a typedef of the struct; skc_v6_daddr is const typedef in6_addr.
        assert_eq!(
            btf.member_offset("sock", "__sk_common.skc_v6_daddr")
                .unwrap(),
            32
        );
        assert_eq!(
            btf.member_size("sock", "__sk_common.skc_v6_daddr").unwrap(),
            16
        );
        assert_eq!(
            btf.member_offset("sock", "__sk_common.skc_v6_daddr.s6_addr")
                .unwrap(),
            32
        );
        assert_eq!(btf.member_offset("net", "ns.inum").unwrap(), 12);
        assert_eq!(btf.member_size("net", "ns.inum").unwrap(), 4);
    }

    #[test]
    fn forward_declaration_beside_full_struct_uses_the_full_definition() {
        let mut b = Builder::new();
        let u32_t = b.int("u32", 4);
        b.record("sock", KIND_FWD, false, 0, 0, &[]);
        // An empty definition of the same name, as a duplicate from another compilation unit.
        b.structure("sock", 0, &[]);
        b.structure("sock", 8, &[("a", u32_t, 0), ("b", u32_t, 32)]);
        b.record("only_declared", KIND_FWD, false, 0, 0, &[]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.member_offset("sock", "b").unwrap(), 4);
        assert_eq!(btf.struct_size("sock").unwrap(), 8);
        assert!(btf.has_struct("sock"));
        assert!(!btf.has_struct("only_declared"));
        assert!(matches!(
            btf.member_offset("only_declared", "a"),
            Err(BtfError::NoSuchStruct(name)) if name == "only_declared"
        ));
    }

    #[test]
    fn bitfield_member_is_an_error_naming_it() {
        let btf = sock_btf();
        match btf.member_offset("sock", "__sk_common.skc_reuse") {
            Err(BtfError::Bitfield { member, path, .. }) => {
                assert_eq!(member, "skc_reuse");
                assert_eq!(path, "__sk_common.skc_reuse");
            }
            other => panic!("expected a bitfield error, got {other:?}"),
        }
        assert!(matches!(
            btf.member_size("sock", "__sk_common.skc_reuse"),
            Err(BtfError::Bitfield { .. })
        ));
        // The byte-aligned neighbour of the bitfield is fine.
        assert_eq!(
            btf.member_offset("sock", "__sk_common.skc_state").unwrap(),
            18
        );

        // Without kind_flag: a bit offset off a byte boundary, and the old int-encoded bitfield.
        let mut b = Builder::new();
        let u8_t = b.int("u8", 1);
        let three_bits = b.record("", KIND_INT, false, 0, 1, &[3]);
        b.structure(
            "flags",
            4,
            &[
                ("whole", u8_t, 0),
                ("odd", u8_t, 12),
                ("narrow", three_bits, 16),
            ],
        );
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.member_offset("flags", "whole").unwrap(), 0);
        assert!(
            matches!(btf.member_offset("flags", "odd"), Err(BtfError::Bitfield { member, .. }) if member == "odd")
        );
        assert!(
            matches!(btf.member_offset("flags", "narrow"), Err(BtfError::Bitfield { member, .. }) if member == "narrow")
        );
    }

    #[test]
    fn path_through_a_pointer_is_an_error() {
        let btf = sock_btf();
        // The direct pointer member is fine on its own: its offset and size are in this object.
        assert_eq!(btf.member_offset("sock", "sk_net_ptr").unwrap(), 72);
        assert_eq!(btf.member_size("sock", "sk_net_ptr").unwrap(), 8);
        match btf.member_offset("sock", "sk_net_ptr.ns.inum") {
            Err(BtfError::ThroughPointer { pointer, .. }) => assert_eq!(pointer, "sk_net_ptr"),
            other => panic!("expected a pointer error, got {other:?}"),
        }
        // possible_net_t wraps the pointer: the error names the full prefix.
        match btf.member_offset("sock", "__sk_common.skc_net.net.ns") {
            Err(BtfError::ThroughPointer { pointer, .. }) => {
                assert_eq!(pointer, "__sk_common.skc_net.net")
            }
            other => panic!("expected a pointer error, got {other:?}"),
        }
    }

    #[test]
    fn missing_struct_and_member_are_distinct_errors() {
        let btf = sock_btf();
        assert!(matches!(
            btf.member_offset("nope", "a"),
            Err(BtfError::NoSuchStruct(_))
        ));
        for path in [
            "nope",
            "__sk_common.nope",
            "",
            "__sk_common.",
            ".skc_daddr",
            "sk_protocol.x",
        ] {
            assert!(
                matches!(
                    btf.member_offset("sock", path),
                    Err(BtfError::NoSuchMember { .. })
                ),
                "{path:?}"
            );
        }
        // A typedef or union of the name is not a struct.
        assert!(matches!(
            btf.member_offset("__be32", "a"),
            Err(BtfError::NoSuchStruct(_))
        ));
    }

    #[test]
    fn every_kind_keeps_later_type_ids_right() {
        // One of every kind with trailing data before the struct: a mis-sized record would shift
        // every later id and make the struct's member types wrong.
        let mut b = Builder::new();
        let u32_t = b.int("u32", 4);
        let proto = b.record("", KIND_FUNC_PROTO, false, 2, u32_t, &[0, u32_t, 0, u32_t]);
        b.record("tcp_sendmsg", KIND_FUNC, false, 1, proto, &[]);
        let var = b.record("some_var", KIND_VAR, false, 0, u32_t, &[1]);
        b.record(".data", KIND_DATASEC, false, 1, 4, &[var, 0, 4]);
        b.record("e", KIND_ENUM, false, 2, 4, &[0, 1, 0, 2]);
        let e64 = b.record("e64", KIND_ENUM64, true, 2, 8, &[0, 1, 0, 0, 2, 0]);
        let double = b.record("double", KIND_FLOAT, false, 0, 8, &[]);
        b.record("tag", KIND_DECL_TAG, false, 0, u32_t, &[u32::MAX]);
        let tagged = b.alias(KIND_TYPE_TAG, "user", u32_t);
        let volatile = b.alias(KIND_VOLATILE, "", tagged);
        let restrict = b.alias(KIND_RESTRICT, "", volatile);
        b.structure(
            "after",
            24,
            &[("x", restrict, 0), ("wide", e64, 64), ("real", double, 128)],
        );
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.types.len() as u32, b.next_id);
        assert_eq!(btf.member_offset("after", "wide").unwrap(), 8);
        assert_eq!(btf.member_size("after", "x").unwrap(), 4);
        assert_eq!(btf.member_size("after", "wide").unwrap(), 8);
        assert_eq!(btf.member_size("after", "real").unwrap(), 8);
        assert!(btf.has_function("tcp_sendmsg"));
        assert!(!btf.has_function("some_var"));
        assert!(!btf.has_function("after"));
        assert!(!btf.has_function("missing"));
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let mut b = Builder::new();
        b.record("future", 31, false, 0, 0, &[]);
        assert!(matches!(
            Btf::parse(&b.build()),
            Err(BtfError::Malformed(_))
        ));
    }

    #[test]
    fn wrong_magic_is_an_error() {
        let mut blob = sock_blob();
        // Big-endian BTF: the magic's bytes swapped.
        blob[0] = 0xeb;
        blob[1] = 0x9f;
        assert!(matches!(Btf::parse(&blob), Err(BtfError::BadMagic(0x9feb))));
        assert!(matches!(
            Btf::parse(b"\x7fELF\x02\x01\x01"),
            Err(BtfError::BadMagic(_))
        ));
        let mut blob = sock_blob();
        blob[2] = 2;
        assert!(matches!(Btf::parse(&blob), Err(BtfError::Malformed(_))));
    }

    #[test]
    fn truncated_file_is_an_error() {
        let blob = sock_blob();
        assert!(matches!(Btf::parse(&[]), Err(BtfError::Malformed(_))));
        assert!(matches!(
            Btf::parse(&blob[..10]),
            Err(BtfError::Malformed(_))
        ));
        assert!(matches!(
            Btf::parse(&blob[..blob.len() - 1]),
            Err(BtfError::Malformed(_))
        ));
        // Type section length cut mid-record, with the header rewritten to agree.
        let mut b = Builder::new();
        b.int("u32", 4);
        b.types.truncate(b.types.len() - 2);
        assert!(matches!(
            Btf::parse(&b.build()),
            Err(BtfError::Malformed(_))
        ));
        // A missing file is an Io error naming the path.
        let path = Path::new("/nonexistent/btf");
        assert!(matches!(Btf::from_file(path), Err(BtfError::Io { path: p, .. }) if p == path));
    }

    #[test]
    fn every_truncation_of_a_valid_blob_is_an_error_without_panicking() {
        let blob = sock_blob();
        // The string section comes last and its length is in the header, so every proper prefix
        // is short of it.
        for len in 0..blob.len() {
            assert!(
                Btf::parse(&blob[..len]).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
    }

    /// Runs every lookup the sock blob supports; results do not matter, only that nothing panics.
    fn exercise(btf: &Btf) {
        for path in [
            "__sk_common.skc_daddr",
            "__sk_common.skc_dport",
            "__sk_common.skc_v6_daddr",
            "__sk_common.skc_reuse",
            "__sk_common.skc_net.net.ns",
            "sk_protocol",
            "sk_net_ptr.ns.inum",
        ] {
            let _ = btf.member_offset("sock", path);
            let _ = btf.member_size("sock", path);
        }
        let _ = btf.member_offset("net", "ns.inum");
        let _ = btf.has_struct("sock");
        let _ = btf.has_function("sock");
        let _ = format!("{btf:?}");
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let blob = sock_blob();
        for index in 0..blob.len() {
            for value in [0x00, 0x01, 0x07, 0x13, 0x1f, 0x7f, 0x80, 0xff] {
                let mut corrupt = blob.clone();
                corrupt[index] = value;
                if let Ok(btf) = Btf::parse(&corrupt) {
                    exercise(&btf);
                }
            }
        }
    }

    #[test]
    fn cyclic_types_are_errors_not_hangs() {
        let mut b = Builder::new();
        // typedef a -> typedef b -> typedef a.
        let a = b.alias(KIND_TYPEDEF, "a", 2);
        b.alias(KIND_TYPEDEF, "b", a);
        // A struct whose anonymous member is itself, and an array of itself.
        let self_id = b.next_id;
        b.structure(
            "loop",
            4,
            &[("", self_id, 0), ("cycle", a, 0), ("arr", self_id + 1, 0)],
        );
        b.array(self_id + 1, a, 2);
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(matches!(
            btf.member_offset("loop", "missing"),
            Err(BtfError::Malformed(_))
        ));
        assert!(matches!(
            btf.member_size("loop", "cycle"),
            Err(BtfError::Malformed(_))
        ));
    }

    #[test]
    fn dangling_type_reference_is_an_error() {
        let mut b = Builder::new();
        b.structure("s", 4, &[("x", 999, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(matches!(
            btf.member_size("s", "x"),
            Err(BtfError::Malformed(_))
        ));
    }

    // The tests below read the running kernel's BTF. The lib tests run on this host, whose kernel
    // (6.18) is built with CONFIG_DEBUG_INFO_BTF, so a missing or unreadable file is a failure,
    // not a skip. Only the sock_common head (daddr 0, rcv_saddr 4, dport 12, num 14, family 16)
    // has been stable for every supported kernel; other offsets are checked for consistency.

    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

    fn vmlinux() -> &'static Btf {
        static BTF: OnceLock<Btf> = OnceLock::new();
        BTF.get_or_init(|| Btf::from_file(Path::new(VMLINUX)).unwrap())
    }

    #[test]
    fn real_vmlinux_parse_time_is_printed() {
        let bytes = std::fs::read(VMLINUX).unwrap();
        let start = Instant::now();
        let btf = Btf::parse(&bytes).unwrap();
        let elapsed = start.elapsed();
        println!(
            "parsed {} bytes of {VMLINUX} ({} types, {} members) in {elapsed:?}",
            bytes.len(),
            btf.types.len() - 1,
            btf.members.len()
        );
        assert!(btf.types.len() > 10_000);
    }

    #[test]
    fn real_vmlinux_sock_common_offsets_match_the_known_layout() {
        let btf = vmlinux();
        let offset = |path| btf.member_offset("sock", path).unwrap();
        assert_eq!(offset("__sk_common.skc_daddr"), 0);
        assert_eq!(offset("__sk_common.skc_rcv_saddr"), 4);
        assert_eq!(offset("__sk_common.skc_dport"), 12);
        assert_eq!(offset("__sk_common.skc_num"), 14);
        assert_eq!(offset("__sk_common.skc_family"), 16);
        assert_eq!(btf.member_offset("sock", "__sk_common").unwrap(), 0);
        assert_eq!(btf.member_offset("sock_common", "skc_dport").unwrap(), 12);
        assert!(matches!(
            btf.member_offset("sock", "__sk_common.skc_reuse"),
            Err(BtfError::Bitfield { .. })
        ));
        assert!(matches!(
            btf.member_offset("sock", "__sk_common.skc_prot.close"),
            Err(BtfError::ThroughPointer { .. })
        ));
    }

    #[test]
    fn real_vmlinux_resolves_every_offset_the_programs_need() {
        let btf = vmlinux();
        let fields = [
            ("sock", "__sk_common.skc_daddr", 4),
            ("sock", "__sk_common.skc_rcv_saddr", 4),
            ("sock", "__sk_common.skc_dport", 2),
            ("sock", "__sk_common.skc_num", 2),
            ("sock", "__sk_common.skc_family", 2),
            ("sock", "__sk_common.skc_net", 8),
            ("sock", "__sk_common.skc_v6_daddr", 16),
            ("sock", "__sk_common.skc_v6_rcv_saddr", 16),
            ("sock", "sk_err", 4),
            ("sock", "sk_protocol", 2),
            ("net", "ns.inum", 4),
            ("tcp_sock", "srtt_us", 4),
            ("tcp_sock", "mdev_us", 4),
            ("tcp_sock", "segs_in", 4),
            ("tcp_sock", "segs_out", 4),
            ("tcp_sock", "total_retrans", 4),
            ("tcp_sock", "bytes_received", 8),
            ("tcp_sock", "bytes_acked", 8),
            ("inet_sock", "inet_sport", 2),
            ("task_struct", "tgid", 4),
        ];
        for (struct_name, path, size) in fields {
            let offset = btf.member_offset(struct_name, path).unwrap();
            let actual_size = btf.member_size(struct_name, path).unwrap();
            let struct_size = btf.struct_size(struct_name).unwrap();
            println!("{struct_name}.{path}: offset {offset}, size {actual_size}");
            assert_eq!(actual_size, size, "{struct_name}.{path}");
            assert!(
                offset + actual_size <= struct_size,
                "{struct_name}.{path} past the struct"
            );
        }
        let offset = |s, p| btf.member_offset(s, p).unwrap();
        assert_eq!(
            offset("sock", "__sk_common.skc_v6_rcv_saddr"),
            offset("sock", "__sk_common.skc_v6_daddr") + 16
        );
        // Each socket struct embeds its parent first: sock in inet_sock in ... in tcp_sock.
        assert_eq!(offset("inet_sock", "sk"), 0);
        assert_eq!(offset("inet_connection_sock", "icsk_inet"), 0);
        assert_eq!(offset("tcp_sock", "inet_conn"), 0);
        let parent = btf.struct_size("inet_connection_sock").unwrap();
        for path in [
            "srtt_us",
            "mdev_us",
            "segs_in",
            "segs_out",
            "total_retrans",
            "bytes_received",
            "bytes_acked",
        ] {
            assert!(
                offset("tcp_sock", path) >= parent,
                "tcp_sock.{path} inside its parent"
            );
        }
    }

    #[test]
    fn real_vmlinux_has_the_structs_and_functions_fentry_needs() {
        let btf = vmlinux();
        for name in [
            "sock",
            "sock_common",
            "tcp_sock",
            "inet_sock",
            "net",
            "task_struct",
        ] {
            assert!(btf.has_struct(name), "{name}");
        }
        for name in [
            "tcp_sendmsg",
            "tcp_cleanup_rbuf",
            "tcp_close",
            "udp_sendmsg",
        ] {
            assert!(btf.has_function(name), "{name}");
        }
        assert!(!btf.has_function("sock"));
        assert!(!btf.has_struct("tcp_sendmsg"));
        assert!(!btf.has_function("no_such_function_anywhere"));
    }
}
