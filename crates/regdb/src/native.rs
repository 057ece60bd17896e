//! The native TOML format: the simplest way to describe a device by hand.
//!
//! ```toml
//! name = "edu"
//! pci = ["1234:11e8"]          # automatic binding by PCI id (optional)
//! bar = 0                      # the BAR the registers live in (default 0)
//! width = 32                   # default register width in bits (default 32)
//!
//! [[register]]
//! name = "STATUS"
//! offset = 0x20
//! access = "rw"                # "rw" (default), "r" or "w"
//! doc = "Status"
//! fields = [
//!   { name = "COMPUTING", bits = 0 },
//!   { name = "MODE", bits = "3:1", values = { 0 = "OFF", 1 = "ON" } },
//! ]
//!
//! [[register]]
//! name = "MTA"
//! offset = 0x5200
//! count = 128                  # an array: MTA[0x0] .. MTA[0x7f]
//! stride = 4                   # default: the register's width
//!
//! [[block]]                    # a group of registers, possibly repeated
//! name = "RX"
//! offset = 0x2800
//! count = 2
//! stride = 0x100
//! [[block.register]]
//! name = "RDBAL"
//! offset = 0
//! ```
//!
//! Field `bits` is one bit (`5`) or a `"high:low"` range as manuals print them.
//! A field's `type` is `"hex"`, `"uint"`, `"int"` or `"bool"`; one-bit fields are
//! boolean and wider ones hex unless they have `values`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{line_of, parse_num, Error};
use crate::model::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    name: Option<String>,
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    pci: Vec<Spanned<String>>,
    #[serde(default)]
    bar: u8,
    width: Option<Spanned<u32>>,
    #[serde(default)]
    absolute: bool,
    #[serde(default)]
    register: Vec<Spanned<RegDef>>,
    #[serde(default)]
    block: Vec<Spanned<BlockDef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockDef {
    name: String,
    offset: u64,
    count: Option<u64>,
    stride: Option<u64>,
    width: Option<Spanned<u32>>,
    #[allow(dead_code)]
    doc: Option<String>,
    #[serde(default)]
    register: Vec<Spanned<RegDef>>,
    #[serde(default)]
    block: Vec<Spanned<BlockDef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegDef {
    name: String,
    offset: u64,
    width: Option<u32>,
    count: Option<u64>,
    stride: Option<u64>,
    access: Option<String>,
    doc: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    shr: Option<u32>,
    values: Option<BTreeMap<String, String>>,
    #[serde(default)]
    fields: Vec<Spanned<FieldDef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldDef {
    name: String,
    bits: Bits,
    #[serde(rename = "type")]
    ty: Option<String>,
    shr: Option<u32>,
    values: Option<BTreeMap<String, String>>,
    #[allow(dead_code)]
    doc: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Bits {
    One(u32),
    Range(String),
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> Error {
        Error::at(self.file, Some(line_of(self.text, pos)), msg)
    }
}

/// Reads a database in the native TOML format; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Database, Error> {
    let def: FileDef = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        Error::at(file, line, e.message().trim_end().to_string())
    })?;
    let cx = Ctx { file, text };
    let width = match &def.width {
        Some(w) => check_width(&cx, w.span().start, *w.get_ref())?,
        None => 4,
    };
    let mut pci = Vec::new();
    for p in &def.pci {
        pci.push(parse_pci(p.get_ref()).ok_or_else(|| {
            cx.err(
                p.span().start,
                format!(
                    "bad PCI id {:?}: expected VENDOR:DEVICE in hex, e.g. 8086:100e",
                    p.get_ref()
                ),
            )
        })?);
    }
    if def.bar > 6 {
        return Err(Error::at(
            file,
            None,
            format!(
                "bar {}: PCI resources are 0 to 5 (6 is the expansion ROM)",
                def.bar
            ),
        ));
    }
    let mut root = Block::root();
    root.items = items(&cx, width, &def.register, &def.block)?;
    root.finish();
    Ok(Database {
        name: def.name.unwrap_or_else(|| stem(file)),
        source: file.to_string(),
        root,
        varsets: Vec::new(),
        pci,
        bar: def.bar,
        absolute: def.absolute,
        nv_chipset_detect: false,
    })
}

fn stem(file: &str) -> String {
    std::path::Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_string())
}

/// Parses `VENDOR:DEVICE` (hex, `DEVICE` may be `*`).
pub(crate) fn parse_pci(s: &str) -> Option<PciId> {
    let (v, d) = s.split_once(':')?;
    let vendor = u16::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok()?;
    let device = match d.trim() {
        "*" | "" => None,
        d => Some(u16::from_str_radix(d.trim_start_matches("0x"), 16).ok()?),
    };
    Some(PciId { vendor, device })
}

fn check_width(cx: &Ctx, pos: usize, bits: u32) -> Result<u32, Error> {
    match bits {
        8 | 16 | 32 | 64 => Ok(bits / 8),
        _ => Err(cx.err(pos, format!("width {bits}: must be 8, 16, 32 or 64 bits"))),
    }
}

fn items(
    cx: &Ctx,
    width: u32,
    regs: &[Spanned<RegDef>],
    blocks: &[Spanned<BlockDef>],
) -> Result<Vec<Item>, Error> {
    let mut out = Vec::new();
    // (start, end, name, pos) of every item, to reject overlaps: in a hand-written
    // file an overlap is nearly always a typo in an offset.
    let mut spans: Vec<(u64, u64, String, usize)> = Vec::new();
    for r in regs {
        let pos = r.span().start;
        let reg = register(cx, width, r.get_ref(), pos)?;
        push_spans(
            &mut spans,
            reg.offset,
            reg.stride,
            reg.length,
            reg.width as u64,
            &reg.name,
            pos,
        );
        out.push(Item::Register(Arc::new(reg)));
    }
    for b in blocks {
        let pos = b.span().start;
        let d = b.get_ref();
        let w = match &d.width {
            Some(w) => check_width(cx, w.span().start, *w.get_ref())?,
            None => width,
        };
        let mut blk = Block {
            name: Some(d.name.clone()),
            kind: BlockKind::Array,
            offset: d.offset,
            stride: 0,
            length: d.count.unwrap_or(1),
            items: items(cx, w, &d.register, &d.block)?,
            cond: None,
            extent: 0,
        };
        blk.finish();
        if blk.length == 0 {
            return Err(cx.err(pos, format!("block {}: count must be at least 1", d.name)));
        }
        blk.stride = match d.stride {
            Some(s) if s < blk.extent => {
                return Err(cx.err(
                    pos,
                    format!(
                        "block {}: stride {s:#x} is smaller than its registers' extent {:#x}",
                        d.name, blk.extent
                    ),
                ))
            }
            Some(s) => s,
            None if blk.length > 1 => {
                return Err(cx.err(pos, format!("block {}: count > 1 needs a stride", d.name)))
            }
            None => blk.extent.max(1),
        };
        push_spans(
            &mut spans, blk.offset, blk.stride, blk.length, blk.extent, &d.name, pos,
        );
        out.push(Item::Block(blk));
    }
    spans.sort_by_key(|s| (s.0, s.1));
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 && (w[1].2 != w[0].2 || w[1].3 != w[0].3) {
            return Err(cx.err(
                w[1].3.max(w[0].3),
                format!(
                    "{} at {:#x} overlaps {} ({:#x}..{:#x})",
                    w[1].2, w[1].0, w[0].2, w[0].0, w[0].1
                ),
            ));
        }
    }
    Ok(out)
}

/// Records the byte ranges an item occupies, one per element, so that two
/// interleaved arrays (RAL/RAH every 8 bytes) do not count as overlapping.
fn push_spans(
    spans: &mut Vec<(u64, u64, String, usize)>,
    offset: u64,
    stride: u64,
    length: u64,
    size: u64,
    name: &str,
    pos: usize,
) {
    let end = |start: u64| start.saturating_add(size);
    if length > 4096 {
        let last = offset.saturating_add(stride.saturating_mul(length - 1));
        spans.push((offset, end(last), name.to_string(), pos));
        return;
    }
    for i in 0..length {
        let start = offset.saturating_add(stride.saturating_mul(i));
        spans.push((start, end(start), name.to_string(), pos));
    }
}

fn register(cx: &Ctx, width: u32, r: &RegDef, pos: usize) -> Result<Register, Error> {
    if r.name.is_empty() {
        return Err(cx.err(pos, "register without a name"));
    }
    let width = match r.width {
        Some(w) => check_width(cx, pos, w)?,
        None => width,
    };
    let length = r.count.unwrap_or(1);
    if length == 0 {
        return Err(cx.err(
            pos,
            format!("register {}: count must be at least 1", r.name),
        ));
    }
    let stride = r.stride.unwrap_or(width as u64);
    if length > 1 && stride < width as u64 {
        return Err(cx.err(
            pos,
            format!(
                "register {}: stride {stride:#x} is smaller than its width",
                r.name
            ),
        ));
    }
    let access = match r.access.as_deref() {
        None | Some("rw") => Access::ReadWrite,
        Some("r") | Some("ro") => Access::ReadOnly,
        Some("w") | Some("wo") => Access::WriteOnly,
        Some(a) => {
            return Err(cx.err(
                pos,
                format!(
                    "register {}: access {a:?}: expected \"rw\", \"r\" or \"w\"",
                    r.name
                ),
            ))
        }
    };
    let bits = width * 8;
    let what = format!("register {}", r.name);
    let ty = if !r.fields.is_empty() {
        if r.values.is_some() {
            return Err(cx.err(pos, format!("{what}: has both fields and values")));
        }
        let mut fields = Vec::new();
        for f in &r.fields {
            fields.push(field(cx, bits, f.get_ref(), f.span().start, &r.name)?);
        }
        Type {
            kind: TypeKind::Bitset(fields.into()),
            shr: r.shr.unwrap_or(0),
            add: 0,
        }
    } else {
        value_type(
            cx,
            pos,
            &what,
            r.ty.as_deref(),
            r.values.as_ref(),
            bits,
            r.shr,
        )?
    };
    Ok(Register {
        name: r.name.clone(),
        offset: r.offset,
        width,
        length,
        stride,
        access,
        ty,
        cond: None,
        doc: r.doc.clone(),
    })
}

fn field(cx: &Ctx, reg_bits: u32, f: &FieldDef, pos: usize, reg: &str) -> Result<Field, Error> {
    let what = format!("register {reg}, field {}", f.name);
    let (high, low) = match &f.bits {
        Bits::One(b) => (*b, *b),
        Bits::Range(s) => {
            let parsed = s.split_once(':').and_then(|(h, l)| {
                Some((
                    parse_num(h)?.try_into().ok()?,
                    parse_num(l)?.try_into().ok()?,
                ))
            });
            match parsed {
                Some(hl) => hl,
                None => {
                    return Err(cx.err(
                        pos,
                        format!("{what}: bits {s:?}: expected a bit number or \"high:low\""),
                    ))
                }
            }
        }
    };
    if high < low {
        return Err(cx.err(pos, format!("{what}: bits {high}:{low}: high is below low")));
    }
    if high >= reg_bits {
        return Err(cx.err(
            pos,
            format!("{what}: bit {high} is outside the {reg_bits}-bit register"),
        ));
    }
    let width = high - low + 1;
    Ok(Field {
        name: f.name.clone(),
        low,
        high,
        ty: value_type(
            cx,
            pos,
            &what,
            f.ty.as_deref(),
            f.values.as_ref(),
            width,
            f.shr,
        )?,
        cond: None,
    })
}

fn value_type(
    cx: &Ctx,
    pos: usize,
    what: &str,
    ty: Option<&str>,
    values: Option<&BTreeMap<String, String>>,
    bits: u32,
    shr: Option<u32>,
) -> Result<Type, Error> {
    let kind = match (ty, values) {
        (None | Some("enum"), Some(vals)) => {
            let mut out = Vec::new();
            for (k, name) in vals {
                let v = parse_num(k).ok_or_else(|| {
                    cx.err(pos, format!("{what}: value key {k:?} is not a number"))
                })?;
                if bits < 64 && v >> bits != 0 {
                    return Err(cx.err(
                        pos,
                        format!("{what}: value {k} does not fit in {bits} bits"),
                    ));
                }
                out.push(EnumValue {
                    name: name.clone(),
                    value: v,
                    cond: None,
                });
            }
            out.sort_by_key(|v| v.value);
            TypeKind::Enum(out.into())
        }
        (Some(t), Some(_)) => {
            return Err(cx.err(pos, format!("{what}: type {t:?} cannot have values")))
        }
        (None, None) if bits == 1 => TypeKind::Bool,
        (None | Some("hex"), None) => TypeKind::Hex,
        (Some("uint"), None) => TypeKind::Uint,
        (Some("int"), None) => TypeKind::Int,
        (Some("bool"), None) => TypeKind::Bool,
        (Some("enum"), None) => {
            return Err(cx.err(pos, format!("{what}: type \"enum\" needs values")))
        }
        (Some(t), None) => {
            return Err(cx.err(
                pos,
                format!("{what}: unknown type {t:?}: expected hex, uint, int, bool or enum"),
            ))
        }
    };
    Ok(Type {
        kind,
        shr: shr.unwrap_or(0),
        add: 0,
    })
}
