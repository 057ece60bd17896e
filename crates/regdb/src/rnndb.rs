//! Importer for envytools' rnndb ("rules-ng-ng") XML, the database behind
//! demmio and Mesa's freedreno headers.
//!
//! Follows envytools' `rnn.c` and `rnndec.c`: top-level `<enum>`, `<bitset>`,
//! `<group>`, `<domain>` and `<spectype>` may appear anywhere and merge by name;
//! `<import>` pulls in a file once, looked up from the database root (the folder of
//! the file given), then from the importing file's folder, then `RNN_PATH`;
//! `variants` ranges (`NV10:G80`, `G80-`, `-NV40`) index the varset enum in file
//! order and narrow the parent's variants. Variants stay conditions in the model and
//! are chosen when the log is read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use crate::error::{parse_num, Error};
use crate::model::*;

#[derive(Clone, Debug)]
struct Loc {
    file: Rc<str>,
    line: u32,
}

impl Loc {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::at(&*self.file, Some(self.line), msg)
    }
}

#[derive(Clone, Default, Debug)]
struct VarAttrs {
    prefix: Option<String>,
    varset: Option<String>,
    variants: Option<String>,
}

#[derive(Clone, Debug)]
struct RawValue {
    name: String,
    value: Option<u64>,
    va: VarAttrs,
    loc: Loc,
}

#[derive(Clone, Debug)]
struct RawField {
    name: String,
    low: u32,
    high: u32,
    va: VarAttrs,
    ti: RawType,
    loc: Loc,
}

#[derive(Clone, Default, Debug)]
struct RawType {
    name: Option<String>,
    shr: u32,
    add: u64,
    radix: Option<u32>,
    fields: Vec<RawField>,
    values: Vec<RawValue>,
}

#[derive(Debug)]
struct RawEnum {
    name: String,
    inline: bool,
    va: VarAttrs,
    values: Vec<RawValue>,
    loc: Loc,
}

#[derive(Debug)]
struct RawBitset {
    name: String,
    inline: bool,
    va: VarAttrs,
    fields: Vec<RawField>,
    loc: Loc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ElemKind {
    Reg { bits: u32, access: Access },
    Array,
    Stripe,
    UseGroup,
}

#[derive(Clone, Debug)]
struct RawElem {
    kind: ElemKind,
    name: Option<String>,
    offset: u64,
    length: u64,
    stride: u64,
    va: VarAttrs,
    ti: RawType,
    children: Vec<RawElem>,
    loc: Loc,
}

#[derive(Debug)]
struct RawDomain {
    name: String,
    width: u32,
    size: Option<u64>,
    va: VarAttrs,
    elems: Vec<RawElem>,
    /// Where it was first declared: the top file's domains are the default.
    top_file: bool,
}

#[derive(Default)]
struct Raw {
    root_dir: PathBuf,
    files: Vec<PathBuf>,
    top: Option<PathBuf>,
    enums: Vec<RawEnum>,
    bitsets: Vec<RawBitset>,
    groups: HashMap<String, Vec<RawElem>>,
    domains: Vec<RawDomain>,
    spectypes: HashMap<String, RawType>,
}

/// Reads the rnndb file at `path` and every file it imports; the result describes
/// the domain `domain`, or by default `NV_MMIO` if defined, else the first domain of
/// the file given.
pub fn load(path: &Path, domain: Option<&str>) -> Result<Database, Error> {
    let mut raw = Raw {
        root_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        ..Raw::default()
    };
    raw.parse_file(path, None)?;
    let file = path.display().to_string();
    let dom_idx = match domain {
        Some(d) => raw
            .domains
            .iter()
            .position(|x| x.name == d)
            .ok_or_else(|| Error::at(&file, None, format!("no domain {d:?} in the database")))?,
        None => raw
            .domains
            .iter()
            .position(|x| x.name == "NV_MMIO")
            .or_else(|| raw.domains.iter().position(|x| x.top_file))
            .or(if raw.domains.is_empty() {
                None
            } else {
                Some(0)
            })
            .ok_or_else(|| Error::at(&file, None, "the database defines no <domain>"))?,
    };
    let mut prep = Prep {
        raw: &raw,
        varsets: Vec::new(),
        varset_of_enum: HashMap::new(),
        enum_cache: HashMap::new(),
        bitset_cache: HashMap::new(),
        depth: 0,
    };
    let dom = &raw.domains[dom_idx];
    let dloc = Loc {
        file: file.as_str().into(),
        line: 0,
    };
    let vi = prep.varinfo(&dom.va, &Vi::default(), &dloc)?;
    let scale = (dom.width / 8).max(1) as u64;
    let mut root = Block::root();
    if !vi.dead {
        for e in &dom.elems {
            if let Some(item) = prep.elem(e, &vi, dom.width, scale)? {
                root.items.push(item);
            }
        }
    }
    root.finish();
    if let Some(size) = dom.size {
        root.extent = size.saturating_mul(scale);
    }
    let nv = dom.name == "NV_MMIO";
    Ok(Database {
        name: dom.name.clone(),
        source: file,
        root,
        varsets: prep.varsets,
        pci: if nv {
            vec![PciId {
                vendor: 0x10de,
                device: None,
            }]
        } else {
            Vec::new()
        },
        bar: 0,
        absolute: false,
        nv_chipset_detect: nv,
    })
}

fn line_of(doc: &roxmltree::Document, node: roxmltree::Node) -> u32 {
    doc.text_pos_at(node.range().start).row
}

impl Raw {
    fn resolve(&self, name: &str, from: &Path) -> Option<PathBuf> {
        let mut cands = vec![self.root_dir.join(name)];
        if let Some(d) = from.parent() {
            cands.push(d.join(name));
        }
        if let Ok(p) = std::env::var("RNN_PATH") {
            cands.extend(
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(|d| Path::new(d).join(name)),
            );
        }
        cands.into_iter().find(|c| c.is_file())
    }

    fn parse_file(&mut self, path: &Path, from: Option<&Loc>) -> Result<(), Error> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if self.files.contains(&key) {
            return Ok(());
        }
        self.files.push(key);
        if self.top.is_none() {
            self.top = Some(path.to_path_buf());
        }
        let fname: Rc<str> = path.display().to_string().into();
        let text = std::fs::read_to_string(path).map_err(|e| match from {
            Some(l) => l.err(format!("cannot read imported file {}: {e}", path.display())),
            None => Error::at(&*fname, None, format!("cannot read: {e}")),
        })?;
        let doc = roxmltree::Document::parse(&text).map_err(|e| {
            Error::at(
                &*fname,
                Some(e.pos().row),
                format!("not well-formed XML: {e}"),
            )
        })?;
        let root = doc.root_element();
        let loc = |n: roxmltree::Node| Loc {
            file: fname.clone(),
            line: line_of(&doc, n),
        };
        if root.tag_name().name() != "database" {
            return Err(loc(root).err(format!(
                "top-level tag is <{}>, expected <database>",
                root.tag_name().name()
            )));
        }
        let top_file = self.top.as_deref() == Some(path);
        let cx = FileCx {
            doc: &doc,
            fname: fname.clone(),
            path,
            top_file,
        };
        self.children(&cx, root, "database", |_, _| Ok(false))
    }

    fn trytop(&mut self, cx: &FileCx, n: roxmltree::Node) -> Result<bool, Error> {
        let loc = cx.loc(n);
        match n.tag_name().name() {
            "enum" => {
                let (name, inline, va, values) = self.typedef(cx, n, "value", Self::value)?;
                if let Some(e) = self.enums.iter_mut().find(|e| e.name == name) {
                    e.values.extend(values);
                } else {
                    self.enums.push(RawEnum {
                        name,
                        inline,
                        va,
                        values,
                        loc,
                    });
                }
            }
            "bitset" => {
                let (name, inline, va, fields) = self.typedef(cx, n, "bitfield", Self::bitfield)?;
                if let Some(b) = self.bitsets.iter_mut().find(|b| b.name == name) {
                    b.fields.extend(fields);
                } else {
                    self.bitsets.push(RawBitset {
                        name,
                        inline,
                        va,
                        fields,
                        loc,
                    });
                }
            }
            "group" => {
                let name = only_name(&loc, n, "group")?;
                let elems = self.elems(cx, n, "group")?;
                self.groups.entry(name).or_default().extend(elems);
            }
            "domain" => {
                let mut name = None;
                let mut width = 8;
                let mut size = None;
                let mut va = VarAttrs::default();
                for a in n.attributes() {
                    match a.name() {
                        "name" => name = Some(a.value().to_string()),
                        "width" => width = numattr(&loc, a.value())? as u32,
                        "size" => size = Some(numattr(&loc, a.value())?),
                        "bare" => {}
                        "prefix" => va.prefix = Some(a.value().to_string()),
                        "varset" => va.varset = Some(a.value().to_string()),
                        "variants" => va.variants = Some(a.value().to_string()),
                        x => return Err(loc.err(format!("unknown attribute {x:?} on <domain>"))),
                    }
                }
                if !matches!(width, 8 | 16 | 32 | 64) {
                    return Err(loc.err(format!("domain width {width}: must be 8, 16, 32 or 64")));
                }
                let name = name.ok_or_else(|| loc.err("<domain> without a name"))?;
                let elems = self.elems(cx, n, "domain")?;
                if let Some(d) = self.domains.iter_mut().find(|d| d.name == name) {
                    if let (Some(a), Some(b)) = (d.size, size) {
                        if a != b {
                            return Err(loc.err(format!(
                                "domain {name}: size {b:#x} differs from the size {a:#x} given before"
                            )));
                        }
                    }
                    d.size = d.size.or(size);
                    d.elems.extend(elems);
                } else {
                    self.domains.push(RawDomain {
                        name,
                        width,
                        size,
                        va,
                        elems,
                        top_file: cx.top_file,
                    });
                }
            }
            "spectype" => {
                let mut name = None;
                let mut ti = RawType::default();
                for a in n.attributes() {
                    if a.name() == "name" {
                        name = Some(a.value().to_string());
                    } else if !typeattr(&loc, &mut ti, a.name(), a.value())? {
                        return Err(
                            loc.err(format!("unknown attribute {:?} on <spectype>", a.name()))
                        );
                    }
                }
                let name = name.ok_or_else(|| loc.err("<spectype> without a name"))?;
                self.typetags(cx, n, &mut ti, "spectype")?;
                self.spectypes.insert(name, ti);
            }
            "import" => {
                let file = n
                    .attribute("file")
                    .ok_or_else(|| loc.err("<import> without a file attribute"))?;
                let p = self.resolve(file, cx.path).ok_or_else(|| {
                    loc.err(format!(
                        "imported file {file:?} not found (looked in {}, next to the importing file, and RNN_PATH)",
                        self.root_dir.display()
                    ))
                })?;
                self.parse_file(&p, Some(&loc))?;
            }
            "copyright" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Walks `n`'s elements: each goes to `take` first (`Ok(false)`: not one it takes),
    /// then may be a top-level definition (rnndb allows them at any depth) or
    /// documentation; anything else is an error naming `<what>`.
    fn children<'a, 'i>(
        &mut self,
        cx: &FileCx,
        n: roxmltree::Node<'a, 'i>,
        what: &str,
        mut take: impl FnMut(&mut Self, roxmltree::Node<'a, 'i>) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        for c in n.children().filter(|c| c.is_element()) {
            if !take(self, c)? && !self.trytop(cx, c)? && !is_doc(c) {
                return Err(cx
                    .loc(c)
                    .err(format!("unexpected <{}> in <{what}>", c.tag_name().name())));
            }
        }
        Ok(())
    }

    /// The register elements (`delem`) in `n`, a `<group>`, `<domain>`, `<array>` or
    /// `<stripe>`.
    fn elems(
        &mut self,
        cx: &FileCx,
        n: roxmltree::Node,
        what: &str,
    ) -> Result<Vec<RawElem>, Error> {
        let mut elems = Vec::new();
        self.children(cx, n, what, |db, c| {
            let e = db.delem(cx, c)?;
            let taken = e.is_some();
            elems.extend(e);
            Ok(taken)
        })?;
        Ok(elems)
    }

    /// An `<enum>` or `<bitset>` (`n`): its name, `inline`, variant attributes and its
    /// `item` elements, read by `read`.
    #[allow(clippy::type_complexity)]
    fn typedef<T>(
        &mut self,
        cx: &FileCx,
        n: roxmltree::Node,
        item: &str,
        read: fn(&mut Self, &FileCx, roxmltree::Node) -> Result<T, Error>,
    ) -> Result<(String, bool, VarAttrs, Vec<T>), Error> {
        let loc = cx.loc(n);
        let tag = n.tag_name().name();
        let mut name = None;
        let mut inline = false;
        let mut va = VarAttrs::default();
        for a in n.attributes() {
            match a.name() {
                "name" => name = Some(a.value().to_string()),
                "inline" => inline = boolattr(&loc, a.value())?,
                "bare" => {}
                "prefix" => va.prefix = Some(a.value().to_string()),
                "varset" => va.varset = Some(a.value().to_string()),
                "variants" => va.variants = Some(a.value().to_string()),
                x => return Err(loc.err(format!("unknown attribute {x:?} on <{tag}>"))),
            }
        }
        let name = name.ok_or_else(|| loc.err(format!("<{tag}> without a name")))?;
        let mut items = Vec::new();
        self.children(cx, n, tag, |db, c| {
            if c.tag_name().name() != item {
                return Ok(false);
            }
            items.push(read(db, cx, c)?);
            Ok(true)
        })?;
        Ok((name, inline, va, items))
    }

    fn typetags(
        &mut self,
        cx: &FileCx,
        n: roxmltree::Node,
        ti: &mut RawType,
        what: &str,
    ) -> Result<(), Error> {
        self.children(cx, n, what, |db, c| {
            match c.tag_name().name() {
                "value" => ti.values.push(db.value(cx, c)?),
                "bitfield" => ti.fields.push(db.bitfield(cx, c)?),
                _ => return Ok(false),
            }
            Ok(true)
        })
    }

    fn value(&mut self, cx: &FileCx, n: roxmltree::Node) -> Result<RawValue, Error> {
        let loc = cx.loc(n);
        let mut name = None;
        let mut value = None;
        let mut va = VarAttrs::default();
        for a in n.attributes() {
            match a.name() {
                "name" => name = Some(a.value().to_string()),
                "value" => value = Some(numattr(&loc, a.value())?),
                "varset" => va.varset = Some(a.value().to_string()),
                "variants" => va.variants = Some(a.value().to_string()),
                x => return Err(loc.err(format!("unknown attribute {x:?} on <value>"))),
            }
        }
        self.children(cx, n, "value", |_, _| Ok(false))?;
        Ok(RawValue {
            name: name.ok_or_else(|| loc.err("<value> without a name"))?,
            value,
            va,
            loc,
        })
    }

    fn bitfield(&mut self, cx: &FileCx, n: roxmltree::Node) -> Result<RawField, Error> {
        let loc = cx.loc(n);
        let mut name = None;
        let (mut low, mut high) = (None, None);
        let mut va = VarAttrs::default();
        let mut ti = RawType::default();
        for a in n.attributes() {
            match a.name() {
                "name" => name = Some(a.value().to_string()),
                "low" => low = Some(numattr(&loc, a.value())? as u32),
                "high" => high = Some(numattr(&loc, a.value())? as u32),
                "pos" => {
                    let p = numattr(&loc, a.value())? as u32;
                    (low, high) = (Some(p), Some(p));
                }
                "varset" => va.varset = Some(a.value().to_string()),
                "variants" => va.variants = Some(a.value().to_string()),
                x => {
                    if !typeattr(&loc, &mut ti, x, a.value())? {
                        return Err(loc.err(format!("unknown attribute {x:?} on <bitfield>")));
                    }
                }
            }
        }
        self.typetags(cx, n, &mut ti, "bitfield")?;
        let name = name.ok_or_else(|| loc.err("<bitfield> without a name"))?;
        let (Some(low), Some(high)) = (low, high) else {
            return Err(loc.err(format!("bitfield {name}: needs low and high, or pos")));
        };
        if high < low || high > 63 {
            return Err(loc.err(format!(
                "bitfield {name}: bits {high}:{low} are not a valid range"
            )));
        }
        Ok(RawField {
            name,
            low,
            high,
            va,
            ti,
            loc,
        })
    }

    fn delem(&mut self, cx: &FileCx, n: roxmltree::Node) -> Result<Option<RawElem>, Error> {
        let loc = cx.loc(n);
        let tag = n.tag_name().name();
        let kind = match tag {
            "use-group" => ElemKind::UseGroup,
            "array" => ElemKind::Array,
            "stripe" => ElemKind::Stripe,
            "reg8" | "reg16" | "reg32" | "reg64" => ElemKind::Reg {
                bits: tag[3..].parse().unwrap_or(32),
                access: Access::ReadWrite,
            },
            _ => return Ok(None),
        };
        let mut e = RawElem {
            kind,
            name: None,
            offset: 0,
            length: 1,
            stride: 0,
            va: VarAttrs::default(),
            ti: RawType::default(),
            children: Vec::new(),
            loc: loc.clone(),
        };
        for a in n.attributes() {
            let v = a.value();
            match (a.name(), kind) {
                ("name", _) => e.name = Some(v.to_string()),
                (_, ElemKind::UseGroup) => {
                    return Err(loc.err(format!("unknown attribute {:?} on <use-group>", a.name())))
                }
                ("offset", _) => e.offset = numattr(&loc, v)?,
                ("length", _) => e.length = numattr(&loc, v)?,
                ("stride", _) => e.stride = numattr(&loc, v)?,
                ("varset", _) => e.va.varset = Some(v.to_string()),
                ("variants", _) => e.va.variants = Some(v.to_string()),
                ("prefix", ElemKind::Array | ElemKind::Stripe) => e.va.prefix = Some(v.to_string()),
                ("access", ElemKind::Reg { bits, .. }) => {
                    let access = match v {
                        "r" => Access::ReadOnly,
                        "w" => Access::WriteOnly,
                        "rw" => Access::ReadWrite,
                        _ => return Err(loc.err(format!("access {v:?}: expected r, w or rw"))),
                    };
                    e.kind = ElemKind::Reg { bits, access };
                }
                (x, ElemKind::Reg { .. }) => {
                    if !typeattr(&loc, &mut e.ti, x, v)? {
                        return Err(loc.err(format!("unknown attribute {x:?} on <{tag}>")));
                    }
                }
                (x, _) => return Err(loc.err(format!("unknown attribute {x:?} on <{tag}>"))),
            }
        }
        match kind {
            ElemKind::UseGroup => {
                if e.name.is_none() {
                    return Err(loc.err("<use-group> without a name"));
                }
            }
            ElemKind::Array | ElemKind::Stripe => {
                e.children = self.elems(cx, n, tag)?;
                if kind == ElemKind::Array && e.stride == 0 {
                    return Err(loc.err(format!(
                        "array {}: stride is missing or 0",
                        e.name.as_deref().unwrap_or("")
                    )));
                }
            }
            ElemKind::Reg { .. } => {
                let mut ti = std::mem::take(&mut e.ti);
                self.typetags(cx, n, &mut ti, tag)?;
                e.ti = ti;
                if e.name.is_none() {
                    return Err(loc.err(format!("<{tag}> without a name")));
                }
            }
        }
        Ok(Some(e))
    }
}

struct FileCx<'a, 'input> {
    doc: &'a roxmltree::Document<'input>,
    fname: Rc<str>,
    path: &'a Path,
    top_file: bool,
}

impl FileCx<'_, '_> {
    fn loc(&self, n: roxmltree::Node) -> Loc {
        Loc {
            file: self.fname.clone(),
            line: line_of(self.doc, n),
        }
    }
}

fn is_doc(n: roxmltree::Node) -> bool {
    matches!(n.tag_name().name(), "doc" | "brief")
}

fn only_name(loc: &Loc, n: roxmltree::Node, tag: &str) -> Result<String, Error> {
    let mut name = None;
    for a in n.attributes() {
        match a.name() {
            "name" => name = Some(a.value().to_string()),
            x => return Err(loc.err(format!("unknown attribute {x:?} on <{tag}>"))),
        }
    }
    name.ok_or_else(|| loc.err(format!("<{tag}> without a name")))
}

fn numattr(loc: &Loc, v: &str) -> Result<u64, Error> {
    parse_num(v).ok_or_else(|| loc.err(format!("{v:?} is not a number")))
}

fn boolattr(loc: &Loc, v: &str) -> Result<bool, Error> {
    match v {
        "yes" | "1" | "true" => Ok(true),
        "no" | "0" | "false" => Ok(false),
        _ => Err(loc.err(format!("{v:?} is not yes or no"))),
    }
}

fn typeattr(loc: &Loc, ti: &mut RawType, name: &str, v: &str) -> Result<bool, Error> {
    match name {
        "shr" => ti.shr = numattr(loc, v)? as u32,
        "add" => ti.add = numattr(loc, v)?,
        "radix" => ti.radix = Some(numattr(loc, v)? as u32),
        "type" => ti.name = Some(v.to_string()),
        // Constraints for validators; they do not change how a value reads.
        "min" | "max" | "align" => {
            numattr(loc, v)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Variant state while walking the tree (envytools' `rnnvarinfo`).
#[derive(Clone, Default)]
struct Vi {
    /// The enum named by the nearest `prefix`; the default varset.
    prefenum: Option<usize>,
    varset: Option<String>,
    /// Allowed variants per enum (by index into `Raw::enums`).
    sets: Vec<(usize, Vec<bool>)>,
    dead: bool,
}

struct Prep<'a> {
    raw: &'a Raw,
    varsets: Vec<Varset>,
    varset_of_enum: HashMap<usize, usize>,
    enum_cache: HashMap<usize, Arc<[EnumValue]>>,
    bitset_cache: HashMap<usize, Arc<[Field]>>,
    depth: u32,
}

impl Prep<'_> {
    fn find_enum(&self, name: &str) -> Option<usize> {
        self.raw.enums.iter().position(|e| e.name == name)
    }

    fn varinfo(&mut self, va: &VarAttrs, parent: &Vi, loc: &Loc) -> Result<Vi, Error> {
        let mut vi = Vi {
            prefenum: parent.prefenum,
            varset: None,
            sets: parent.sets.clone(),
            dead: false,
        };
        if let Some(p) = &va.prefix {
            vi.prefenum = if p == "none" {
                None
            } else {
                Some(
                    self.find_enum(p)
                        .ok_or_else(|| loc.err(format!("prefix {p:?}: no such enum")))?,
                )
            };
        }
        vi.varset = va.varset.clone();
        if vi.prefenum.is_none() && vi.varset.is_none() {
            vi.varset = parent.varset.clone();
        }
        let mut varset = vi.prefenum;
        if let Some(vs) = &vi.varset {
            varset = Some(
                self.find_enum(vs)
                    .ok_or_else(|| loc.err(format!("varset {vs:?}: no such enum")))?,
            );
        }
        let Some(list) = &va.variants else {
            return Ok(vi);
        };
        let Some(en) = varset else {
            return Err(loc.err(format!("variants {list:?} given, but no varset is active")));
        };
        let raw_enum = &self.raw.enums[en];
        let n = raw_enum.values.len();
        let find = |name: &str| -> Result<usize, Error> {
            raw_enum
                .values
                .iter()
                .position(|v| v.name == name)
                .ok_or_else(|| {
                    loc.err(format!("variant {name:?} is not in enum {}", raw_enum.name))
                })
        };
        let mut marks = vec![false; n];
        for tok in list.split_whitespace() {
            match tok.find([':', '-']) {
                None => marks[find(tok)?] = true,
                Some(p) => {
                    let (a, b) = (&tok[..p], &tok[p + 1..]);
                    let lo = if a.is_empty() { 0 } else { find(a)? };
                    let hi = if b.is_empty() {
                        n
                    } else {
                        find(b)? + usize::from(tok.as_bytes()[p] == b'-')
                    };
                    for m in marks.iter_mut().take(hi).skip(lo) {
                        *m = true;
                    }
                }
            }
        }
        match vi.sets.iter_mut().find(|(e, _)| *e == en) {
            Some((_, allowed)) => {
                for (a, m) in allowed.iter_mut().zip(&marks) {
                    *a &= *m;
                }
            }
            None => vi.sets.push((en, marks)),
        }
        vi.dead = vi.sets.iter().any(|(_, a)| !a.iter().any(|&x| x));
        Ok(vi)
    }

    fn varset_index(&mut self, en: usize) -> usize {
        if let Some(&i) = self.varset_of_enum.get(&en) {
            return i;
        }
        let e = &self.raw.enums[en];
        self.varsets.push(Varset {
            name: e.name.clone(),
            variants: e
                .values
                .iter()
                .map(|v| Variant {
                    name: v.name.clone(),
                    value: v.value,
                })
                .collect(),
        });
        let i = self.varsets.len() - 1;
        self.varset_of_enum.insert(en, i);
        i
    }

    fn cond(&mut self, vi: &Vi) -> Cond {
        if vi.sets.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for (en, allowed) in &vi.sets {
            out.push(VarCond {
                varset: self.varset_index(*en),
                allowed: allowed.clone().into_boxed_slice(),
            });
        }
        Some(out.into())
    }

    fn elem(
        &mut self,
        e: &RawElem,
        parent: &Vi,
        dwidth: u32,
        scale: u64,
    ) -> Result<Option<Item>, Error> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(e
                .loc
                .err("groups nest more than 64 deep (a group that uses itself?)"));
        }
        let r = self.elem_inner(e, parent, dwidth, scale);
        self.depth -= 1;
        r
    }

    fn elem_inner(
        &mut self,
        e: &RawElem,
        parent: &Vi,
        dwidth: u32,
        scale: u64,
    ) -> Result<Option<Item>, Error> {
        if e.kind == ElemKind::UseGroup {
            let name = e.name.as_deref().unwrap_or("");
            let elems = self
                .raw
                .groups
                .get(name)
                .ok_or_else(|| e.loc.err(format!("group {name:?} not found")))?;
            let mut b = Block::root();
            for c in elems {
                if let Some(item) = self.elem(c, parent, dwidth, scale)? {
                    b.items.push(item);
                }
            }
            b.finish();
            return Ok(Some(Item::Block(b)));
        }
        let vi = self.varinfo(&e.va, parent, &e.loc)?;
        if vi.dead {
            return Ok(None);
        }
        let cond = self.cond(&vi);
        match e.kind {
            ElemKind::Reg { bits, access } => {
                if bits < dwidth {
                    return Err(e.loc.err(format!(
                        "register {} is {bits} bits, narrower than its {dwidth}-bit domain",
                        e.name.as_deref().unwrap_or("")
                    )));
                }
                let width = bits / 8;
                let stride = if e.stride != 0 {
                    e.stride.saturating_mul(scale)
                } else {
                    width as u64
                };
                let ty = self.typeinfo(&e.ti, &vi, bits, &e.loc)?;
                Ok(Some(Item::Register(Arc::new(Register {
                    name: e.name.clone().unwrap_or_default(),
                    offset: e.offset.saturating_mul(scale),
                    width,
                    length: e.length,
                    stride,
                    access,
                    ty,
                    cond,
                    doc: None,
                }))))
            }
            ElemKind::Array | ElemKind::Stripe => {
                let mut b = Block {
                    name: e.name.clone(),
                    kind: if e.kind == ElemKind::Array {
                        BlockKind::Array
                    } else {
                        BlockKind::Stripe
                    },
                    offset: e.offset.saturating_mul(scale),
                    stride: e.stride.saturating_mul(scale),
                    length: e.length,
                    items: Vec::new(),
                    cond,
                    extent: 0,
                };
                for c in &e.children {
                    if let Some(item) = self.elem(c, &vi, dwidth, scale)? {
                        b.items.push(item);
                    }
                }
                b.finish();
                Ok(Some(Item::Block(b)))
            }
            ElemKind::UseGroup => unreachable!("handled above"),
        }
    }

    fn typeinfo(&mut self, ti: &RawType, vi: &Vi, width: u32, loc: &Loc) -> Result<Type, Error> {
        let kind = if let Some(name) = &ti.name {
            self.named_type(name, vi, loc, ti)?
        } else if !ti.fields.is_empty() {
            TypeKind::Bitset(self.fields(&ti.fields, vi)?.into())
        } else if !ti.values.is_empty() {
            TypeKind::Enum(self.values(&ti.values, vi)?.into())
        } else if width == 1 {
            TypeKind::Bool
        } else {
            TypeKind::Hex
        };
        Ok(Type {
            kind,
            shr: ti.shr,
            add: ti.add,
        })
    }

    fn named_type(
        &mut self,
        name: &str,
        vi: &Vi,
        loc: &Loc,
        ti: &RawType,
    ) -> Result<TypeKind, Error> {
        if let Some(en) = self.find_enum(name) {
            let e = &self.raw.enums[en];
            if e.inline {
                return Ok(TypeKind::Enum(self.values(&e.values, vi)?.into()));
            }
            if let Some(c) = self.enum_cache.get(&en) {
                return Ok(TypeKind::Enum(c.clone()));
            }
            let evi = self.varinfo(&e.va, &Vi::default(), &e.loc)?;
            let vals: Arc<[EnumValue]> = self.values(&e.values, &evi)?.into();
            self.enum_cache.insert(en, vals.clone());
            return Ok(TypeKind::Enum(vals));
        }
        if let Some(bs) = self.raw.bitsets.iter().position(|b| b.name == name) {
            let b = &self.raw.bitsets[bs];
            if b.inline {
                return Ok(TypeKind::Bitset(self.fields(&b.fields, vi)?.into()));
            }
            if let Some(c) = self.bitset_cache.get(&bs) {
                return Ok(TypeKind::Bitset(c.clone()));
            }
            let bvi = self.varinfo(&b.va, &Vi::default(), &b.loc)?;
            let f: Arc<[Field]> = self.fields(&b.fields, &bvi)?.into();
            self.bitset_cache.insert(bs, f.clone());
            return Ok(TypeKind::Bitset(f));
        }
        if let Some(st) = self.raw.spectypes.get(name) {
            if self.depth > 64 {
                return Err(loc.err(format!("spectype {name} refers to itself")));
            }
            self.depth += 1;
            let t = self.typeinfo(st, vi, 32, loc);
            self.depth -= 1;
            return Ok(t?.kind);
        }
        Ok(match name {
            "hex" => TypeKind::Hex,
            "uint" => TypeKind::Uint,
            "int" => TypeKind::Int,
            "boolean" => TypeKind::Bool,
            "float" => TypeKind::Float,
            "fixed" | "ufixed" => TypeKind::Fixed {
                radix: ti.radix.unwrap_or(0),
                signed: name == "fixed",
            },
            "bitfield" => TypeKind::Bitset(self.fields(&ti.fields, vi)?.into()),
            "enum" => TypeKind::Enum(self.values(&ti.values, vi)?.into()),
            // Domain names used as types (values that are offsets in another
            // domain) print as hex here.
            _ if self.raw.domains.iter().any(|d| d.name == name) => TypeKind::Hex,
            _ => return Err(loc.err(format!("unknown type {name:?}"))),
        })
    }

    fn fields(&mut self, raw: &[RawField], vi: &Vi) -> Result<Vec<Field>, Error> {
        let mut out = Vec::with_capacity(raw.len());
        for f in raw {
            let fvi = self.varinfo(&f.va, vi, &f.loc)?;
            if fvi.dead {
                continue;
            }
            let ty = self.typeinfo(&f.ti, &fvi, f.high - f.low + 1, &f.loc)?;
            out.push(Field {
                name: f.name.clone(),
                low: f.low,
                high: f.high,
                ty,
                cond: self.cond(&fvi),
            });
        }
        Ok(out)
    }

    fn values(&mut self, raw: &[RawValue], vi: &Vi) -> Result<Vec<EnumValue>, Error> {
        let mut out = Vec::with_capacity(raw.len());
        for v in raw {
            // A value without a number names a variant only; it never decodes.
            let Some(value) = v.value else { continue };
            let vvi = self.varinfo(&v.va, vi, &v.loc)?;
            if vvi.dead {
                continue;
            }
            out.push(EnumValue {
                name: v.name.clone(),
                value,
                cond: self.cond(&vvi),
            });
        }
        Ok(out)
    }
}
