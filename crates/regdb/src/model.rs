//! The one internal model every importer produces: a tree of blocks (arrays and
//! stripes) holding registers at offsets, each register's value typed as a plain
//! number, an enum or a set of bit fields.
//!
//! Variants (envytools' per-chipset definitions) are kept in the model as
//! conditions on items rather than resolved at import time, because the chipset is
//! usually only learnt from the log itself (the first read of `PMC.ID`).

use std::fmt::Write as _;
use std::sync::Arc;

/// A register database: one address space of registers and how to bind it to a log.
#[derive(Clone, Debug)]
pub struct Database {
    /// A short name for messages (the device, the rnndb domain, the SVD device).
    pub name: String,
    /// Where it was read from, for messages.
    pub source: String,
    /// The address space; offsets are relative to the binding's base address.
    pub root: Block,
    /// Variant dimensions (rnndb enums used as varsets); empty for other formats.
    pub varsets: Vec<Varset>,
    /// PCI devices this database describes, for automatic binding.
    pub pci: Vec<PciId>,
    /// The PCI resource (BAR) the registers live in.
    pub bar: u8,
    /// Offsets are physical addresses (SVD peripherals carry their base address).
    pub absolute: bool,
    /// Learn the `chipset` variant from the first read of offset 0, as demmio does
    /// with NVIDIA's `PMC.ID`.
    pub nv_chipset_detect: bool,
}

/// A PCI id a database applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciId {
    /// Vendor id.
    pub vendor: u16,
    /// Device id; `None` matches every device of the vendor.
    pub device: Option<u16>,
}

/// One dimension of variants: an ordered list of names (e.g. NVIDIA chipsets).
#[derive(Clone, Debug)]
pub struct Varset {
    /// The enum's name, e.g. `chipset`.
    pub name: String,
    /// The variants in database order; ranges like `NV10:G80` refer to this order.
    pub variants: Vec<Variant>,
}

/// One variant of a [`Varset`].
#[derive(Clone, Debug)]
pub struct Variant {
    /// Its name, e.g. `NV50`.
    pub name: String,
    /// Its numeric value where the database gives one (NVIDIA chipset id).
    pub value: Option<u64>,
}

/// Which variant of each varset is selected; an unselected varset matches every item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Variants(pub Vec<Option<usize>>);

impl Variants {
    /// Whether an item with condition `cond` exists under this selection.
    #[inline]
    pub fn matches(&self, cond: &Cond) -> bool {
        match cond {
            None => true,
            Some(c) => c
                .iter()
                .all(|vc| match self.0.get(vc.varset).copied().flatten() {
                    Some(sel) => vc.allowed.get(sel).copied().unwrap_or(false),
                    None => true,
                }),
        }
    }
}

/// The variants an item exists in, per varset; `None` means always.
pub type Cond = Option<Arc<[VarCond]>>;

/// The allowed variants of one varset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarCond {
    /// Index into [`Database::varsets`].
    pub varset: usize,
    /// One flag per variant of the varset.
    pub allowed: Box<[bool]>,
}

/// How a block's address range repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Reserves `length` elements of `stride` bytes: an address inside an element
    /// that no register covers is still named, as `BLOCK[i]+0x..`.
    Array,
    /// Only says that its items repeat every `stride` bytes (rnndb `<stripe>`);
    /// claims nothing by itself. Also the anonymous container for variants.
    Stripe,
}

/// A group of registers, possibly repeated.
#[derive(Clone, Debug)]
pub struct Block {
    /// Prefix of the names inside (`PFIFO` in `PFIFO.CHAN[0x3].STATE`); `None` for
    /// anonymous stripes and arrays, whose indices go onto the registers' names.
    pub name: Option<String>,
    /// Array or stripe.
    pub kind: BlockKind,
    /// Offset of element 0 in the parent.
    pub offset: u64,
    /// Distance between elements.
    pub stride: u64,
    /// Number of elements; 0 when unknown (unbounded).
    pub length: u64,
    /// Registers and nested blocks, in database order: the first match wins.
    pub items: Vec<Item>,
    /// Variants it exists in.
    pub cond: Cond,
    /// One past the highest byte the items of one element reach (set by
    /// [`Block::finish`]); lets lookups skip blocks and stripe elements quickly.
    pub extent: u64,
}

/// An entry of a block.
#[derive(Clone, Debug)]
pub enum Item {
    /// A register (or a register array).
    Register(Arc<Register>),
    /// A nested block.
    Block(Block),
}

/// Who may access a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Access {
    /// Read and write.
    #[default]
    ReadWrite,
    /// Read only.
    ReadOnly,
    /// Write only.
    WriteOnly,
}

/// A register, or an array of `length` registers `stride` bytes apart.
#[derive(Clone, Debug)]
pub struct Register {
    /// Its name.
    pub name: String,
    /// Offset in the parent block.
    pub offset: u64,
    /// Width in bytes.
    pub width: u32,
    /// Number of copies (1 for a plain register, 0 for unknown).
    pub length: u64,
    /// Distance between copies (the width when not given).
    pub stride: u64,
    /// Access rights.
    pub access: Access,
    /// How its value reads.
    pub ty: Type,
    /// Variants it exists in.
    pub cond: Cond,
    /// One-line description.
    pub doc: Option<String>,
}

/// How to print a value.
#[derive(Clone, Debug)]
pub struct Type {
    /// The kind of value.
    pub kind: TypeKind,
    /// The stored value is the real one shifted right by this many bits.
    pub shr: u32,
    /// Added to the (shifted) value before printing.
    pub add: u64,
}

impl Type {
    /// A plain type without shift.
    pub fn plain(kind: TypeKind) -> Type {
        Type {
            kind,
            shr: 0,
            add: 0,
        }
    }
}

/// The kinds of values.
#[derive(Clone, Debug)]
pub enum TypeKind {
    /// Hexadecimal number.
    Hex,
    /// Unsigned decimal.
    Uint,
    /// Signed decimal (two's complement in the field's width).
    Int,
    /// `TRUE`/`FALSE`; as a field, only its name is printed when set.
    Bool,
    /// IEEE float of the field's width (16, 32 or 64 bits).
    Float,
    /// Fixed point with `radix` fraction bits.
    Fixed {
        /// Number of fraction bits.
        radix: u32,
        /// Two's complement.
        signed: bool,
    },
    /// One of named values.
    Enum(Arc<[EnumValue]>),
    /// Bit fields.
    Bitset(Arc<[Field]>),
}

/// A named value of an enum.
#[derive(Clone, Debug)]
pub struct EnumValue {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: u64,
    /// Variants it exists in.
    pub cond: Cond,
}

/// A bit field of a register.
#[derive(Clone, Debug)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// Lowest bit.
    pub low: u32,
    /// Highest bit (inclusive).
    pub high: u32,
    /// How its value reads.
    pub ty: Type,
    /// Variants it exists in.
    pub cond: Cond,
}

impl Field {
    /// The mask of its bits in the register.
    pub fn mask(&self) -> u64 {
        let top = if self.high >= 63 {
            u64::MAX
        } else {
            (1u64 << (self.high + 1)) - 1
        };
        top & !((1u64 << self.low) - 1)
    }

    /// Its width in bits.
    pub fn width(&self) -> u32 {
        self.high - self.low + 1
    }
}

/// The register (or array slot) an address falls in.
#[derive(Clone, Debug)]
pub struct Hit {
    /// Full name with indices and, for a mid-register address, `+0x..`.
    pub name: Arc<str>,
    /// The register, if the address is in one (an array slot without a register
    /// has none).
    pub register: Option<Arc<Register>>,
    /// Byte offset of the address inside the register.
    pub within: u64,
}

impl Block {
    /// An empty top-level array block.
    pub fn root() -> Block {
        Block {
            name: None,
            kind: BlockKind::Stripe,
            offset: 0,
            stride: 0,
            length: 1,
            items: Vec::new(),
            cond: None,
            extent: 0,
        }
    }

    /// Computes [`Block::extent`] for this block and every block inside; importers
    /// call it once the tree is complete.
    pub fn finish(&mut self) {
        let mut ext = 0u64;
        for item in &mut self.items {
            let end = match item {
                Item::Register(r) => span_end(r.offset, r.stride, r.length, r.width as u64),
                Item::Block(b) => {
                    b.finish();
                    span_end(b.offset, b.stride, b.length, b.extent)
                }
            };
            ext = ext.max(end);
        }
        self.extent = ext;
    }

    /// The registers of the tree, depth first, with their absolute offsets of
    /// element 0 (for listing and tests).
    pub fn registers(&self) -> Vec<(u64, Arc<Register>)> {
        let mut out = Vec::new();
        fn walk(b: &Block, base: u64, out: &mut Vec<(u64, Arc<Register>)>) {
            for item in &b.items {
                match item {
                    Item::Register(r) => out.push((base + r.offset, r.clone())),
                    Item::Block(c) => walk(c, base + c.offset, out),
                }
            }
        }
        walk(self, 0, &mut out);
        out
    }
}

fn span_end(offset: u64, stride: u64, length: u64, size: u64) -> u64 {
    if length == 0 {
        return u64::MAX;
    }
    offset
        .saturating_add(stride.saturating_mul(length - 1))
        .saturating_add(size)
}

/// Appends `[0x..]`, demmio's index notation.
fn push_idx(name: &mut String, idx: u64) {
    let _ = write!(name, "[{idx:#x}]");
}

impl Database {
    /// The register at `offset` of the address space under the selected variants,
    /// named the way envytools' demmio names it: `ARRAY[0x3].REG`, `REG+0x2`, or
    /// `ARRAY[0x1]+0x10` inside an array element that has no register there.
    pub fn lookup(&self, offset: u64, vars: &Variants) -> Option<Hit> {
        trymatch(&self.root.items, offset, vars, &[])
    }

    /// The index of the varset called `name`.
    pub fn varset(&self, name: &str) -> Option<usize> {
        self.varsets.iter().position(|v| v.name == name)
    }

    /// Selects the variant called `name` (case-insensitive, as demmio's `-a`) in
    /// the first varset that has it.
    pub fn select_variant(&self, vars: &mut Variants, name: &str) -> bool {
        for (i, vs) in self.varsets.iter().enumerate() {
            if let Some(j) = vs
                .variants
                .iter()
                .position(|v| v.name.eq_ignore_ascii_case(name))
            {
                if vars.0.len() < self.varsets.len() {
                    vars.0.resize(self.varsets.len(), None);
                }
                vars.0[i] = Some(j);
                return true;
            }
        }
        false
    }
}

fn trymatch(items: &[Item], addr: u64, vars: &Variants, indices: &[u64]) -> Option<Hit> {
    for item in items {
        match item {
            Item::Register(r) => {
                if addr < r.offset || !vars.matches(&r.cond) {
                    continue;
                }
                let rel = addr - r.offset;
                let (idx, within) = match rel.checked_div(r.stride) {
                    Some(idx) => (idx, rel % r.stride),
                    None => (0, rel),
                };
                if within >= r.width as u64 || (r.length != 0 && idx >= r.length) {
                    continue;
                }
                let mut name = r.name.clone();
                for &i in indices {
                    push_idx(&mut name, i);
                }
                if r.length != 1 {
                    push_idx(&mut name, idx);
                }
                if within != 0 {
                    let _ = write!(name, "+{within:#x}");
                }
                return Some(Hit {
                    name: name.into(),
                    register: Some(r.clone()),
                    within,
                });
            }
            Item::Block(b) => {
                if addr < b.offset || !vars.matches(&b.cond) {
                    continue;
                }
                let rel = addr - b.offset;
                match b.kind {
                    BlockKind::Array => {
                        if b.stride == 0 {
                            continue;
                        }
                        let (idx, within) = (rel / b.stride, rel % b.stride);
                        if b.length != 0 && idx >= b.length {
                            continue;
                        }
                        let Some(bn) = &b.name else {
                            // A nameless array (rnndb has a few) indexes its registers
                            // like an anonymous stripe: `REG[i][j]`.
                            let mut nind = indices.to_vec();
                            if b.length != 1 {
                                nind.push(idx);
                            }
                            match trymatch(&b.items, within, vars, &nind) {
                                Some(h) => return Some(h),
                                None => continue,
                            }
                        };
                        let mut name = bn.clone();
                        for &i in indices {
                            push_idx(&mut name, i);
                        }
                        if b.length != 1 {
                            push_idx(&mut name, idx);
                        }
                        if let Some(h) = trymatch(&b.items, within, vars, &[]) {
                            name.push('.');
                            name.push_str(&h.name);
                            return Some(Hit {
                                name: name.into(),
                                ..h
                            });
                        }
                        let _ = write!(name, "+{within:#x}");
                        return Some(Hit {
                            name: name.into(),
                            register: None,
                            within,
                        });
                    }
                    BlockKind::Stripe => {
                        // Elements whose items can reach `addr`: an item may lie
                        // beyond the stride, so several elements are candidates;
                        // the lowest index wins, as in demmio.
                        let (first, last) = match rel.checked_div(b.stride) {
                            None => (0, 0),
                            Some(last) => {
                                let first = if rel >= b.extent {
                                    (rel - b.extent) / b.stride + 1
                                } else {
                                    0
                                };
                                let last = if b.length == 0 {
                                    last
                                } else {
                                    last.min(b.length - 1)
                                };
                                (first, last)
                            }
                        };
                        let mut idx = first;
                        while idx <= last {
                            let within = rel - b.stride * idx;
                            if within < b.extent {
                                let mut nind;
                                let sub_indices: &[u64] = if b.name.is_none() {
                                    nind = indices.to_vec();
                                    if b.length != 1 {
                                        nind.push(idx);
                                    }
                                    &nind
                                } else {
                                    &[]
                                };
                                if let Some(h) = trymatch(&b.items, within, vars, sub_indices) {
                                    let Some(bn) = &b.name else { return Some(h) };
                                    let mut name = bn.clone();
                                    for &i in indices {
                                        push_idx(&mut name, i);
                                    }
                                    if b.length != 1 {
                                        push_idx(&mut name, idx);
                                    }
                                    name.push('.');
                                    name.push_str(&h.name);
                                    return Some(Hit {
                                        name: name.into(),
                                        ..h
                                    });
                                }
                            }
                            idx += 1;
                        }
                    }
                }
            }
        }
    }
    None
}

impl Type {
    /// Decodes `value` (the register's or field's raw bits, `width` bits wide) the
    /// way envytools' rnndec does: enums by name, bit fields as
    /// `A | B = 0x3 | C = NAME`, set bits no field covers as a trailing hex mask.
    /// `top` leaves the outermost bit set without braces.
    pub fn decode(&self, value: u64, width: u32, vars: &Variants, top: bool, out: &mut String) {
        let mut value = value;
        if self.shr != 0 {
            value = value.checked_shl(self.shr).unwrap_or(0);
        }
        value = value.wrapping_add(self.add);
        match &self.kind {
            TypeKind::Enum(vals) => {
                match vals
                    .iter()
                    .find(|v| v.value == value && vars.matches(&v.cond))
                {
                    Some(v) => out.push_str(&v.name),
                    None => push_hex(out, value),
                }
            }
            TypeKind::Bitset(fields) => {
                if !top {
                    out.push_str("{ ");
                }
                let start = out.len();
                let mut mask = 0u64;
                for f in fields.iter() {
                    if !vars.matches(&f.cond) {
                        continue;
                    }
                    let fm = f.mask();
                    mask |= fm;
                    let sval = (value & fm) >> f.low;
                    if matches!(f.ty.kind, TypeKind::Bool) && f.ty.shr == 0 && f.ty.add == 0 {
                        if sval == 0 {
                            continue;
                        }
                        if sval == 1 {
                            if out.len() > start {
                                out.push_str(" | ");
                            }
                            out.push_str(&f.name);
                            continue;
                        }
                    }
                    if out.len() > start {
                        out.push_str(" | ");
                    }
                    out.push_str(&f.name);
                    out.push_str(" = ");
                    f.ty.decode(sval, f.width(), vars, false, out);
                }
                let rest = value & !mask;
                if rest != 0 {
                    if out.len() > start {
                        out.push_str(" | ");
                    }
                    let _ = write!(out, "{rest:#x}");
                }
                if out.len() == start {
                    out.push('0');
                }
                if !top {
                    out.push_str(" }");
                }
            }
            TypeKind::Hex => push_hex(out, value),
            TypeKind::Uint => {
                let _ = write!(out, "{value}");
            }
            TypeKind::Int => {
                if width > 0 && width < 64 && value & (1u64 << (width - 1)) != 0 {
                    let _ = write!(out, "-{}", (1u64 << width) - value);
                } else {
                    let _ = write!(out, "{}", value as i64);
                }
            }
            TypeKind::Bool => match value {
                0 => out.push_str("FALSE"),
                1 => out.push_str("TRUE"),
                _ => {
                    let _ = write!(out, "{value:#x}");
                }
            },
            TypeKind::Float => match width {
                64 => {
                    let _ = write!(out, "{:.6}", f64::from_bits(value));
                }
                32 => {
                    let _ = write!(out, "{:.6}", f32::from_bits(value as u32));
                }
                16 => {
                    let _ = write!(out, "{:.6}", half_to_f32(value as u16));
                }
                _ => {
                    let _ = write!(out, "{value:#x}");
                }
            },
            TypeKind::Fixed { radix, signed } => {
                let scale = (1u64 << (*radix).min(63)) as f64;
                if *signed && width > 0 && width < 64 && value & (1u64 << (width - 1)) != 0 {
                    let mag = (1u64 << width) - value;
                    let _ = write!(out, "-{:.6}", mag as f64 / scale);
                } else {
                    let _ = write!(out, "{:.6}", value as f64 / scale);
                }
            }
        }
    }
}

/// Hex as rnndec prints it: C's `%#x`, which writes zero as plain `0`.
fn push_hex(out: &mut String, value: u64) {
    if value == 0 {
        out.push('0');
    } else {
        let _ = write!(out, "{value:#x}");
    }
}

fn half_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

impl Register {
    /// Decodes an access of `bytes` bytes at byte `within` of this register that
    /// carried `value`. A partial access decodes only the fields it covers whole.
    pub fn decode_access(&self, within: u64, bytes: u32, value: u64, vars: &Variants) -> String {
        let mut out = String::new();
        let reg_bits = self.width * 8;
        if within == 0 && bytes >= self.width {
            let v = if reg_bits >= 64 {
                value
            } else {
                value & ((1u64 << reg_bits) - 1)
            };
            self.ty.decode(v, reg_bits, vars, true, &mut out);
            return out;
        }
        let lo = (within * 8) as u32;
        let hi = (lo + bytes * 8).min(reg_bits);
        if lo >= 64 {
            push_hex(&mut out, value);
            return out;
        }
        let shifted = value.checked_shl(lo).unwrap_or(0);
        let covered = |f: &Field| f.low >= lo && f.high < hi;
        match &self.ty.kind {
            TypeKind::Bitset(fields) if self.ty.shr == 0 && self.ty.add == 0 => {
                let part: Vec<Field> = fields.iter().filter(|f| covered(f)).cloned().collect();
                let mask = if hi >= 64 { u64::MAX } else { (1u64 << hi) - 1 } & !((1u64 << lo) - 1);
                let t = Type::plain(TypeKind::Bitset(part.into()));
                t.decode(shifted & mask, reg_bits, vars, true, &mut out);
            }
            _ => {
                push_hex(&mut out, value);
            }
        }
        out
    }
}
