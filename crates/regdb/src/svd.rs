//! Importer for CMSIS-SVD, through the rust-embedded `svd-parser`.
//!
//! `derivedFrom` and `dim` arrays are expanded by the parser, so every peripheral,
//! register and field arrives as a plain item; clusters arrive flattened as
//! `CLUSTER_REG`. Peripherals keep their physical base addresses, so an SVD
//! database names physical addresses directly (a trace of `/dev/mem` or a UIO
//! mapping of an SoC) without any binding.

use std::sync::Arc;

use svd_parser::svd;

use crate::error::Error;
use crate::model::*;

/// Parses an SVD file's text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Database, Error> {
    let config = svd_parser::Config::default()
        .expand(true)
        .expand_properties(true)
        .validate_level(svd::ValidateLevel::Disabled);
    let device = svd_parser::parse_with_config(text, &config).map_err(|e| {
        // svd-parser reports positions as "at ROW:COL" inside its context chain.
        let msg = e
            .chain()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(": ");
        Error::at(file, row_in(&msg), msg)
    })?;
    let dev_size = device.default_register_properties.size.unwrap_or(32);
    let mut root = Block::root();
    for p in &device.peripherals {
        let psize = p.default_register_properties.size.unwrap_or(dev_size);
        let mut items = Vec::new();
        for r in p.all_registers() {
            let bits = r.properties.size.unwrap_or(psize);
            if !matches!(bits, 8 | 16 | 32 | 64) {
                return Err(Error::at(
                    file,
                    None,
                    format!(
                        "{}.{}: register size {bits} is not 8, 16, 32 or 64 bits",
                        p.name, r.name
                    ),
                ));
            }
            let mut fields = Vec::new();
            for f in r.fields() {
                let (low, high) = (f.bit_range.lsb(), f.bit_range.msb());
                if high >= bits {
                    return Err(Error::at(
                        file,
                        None,
                        format!(
                            "{}.{}.{}: bits {high}:{low} are outside the {bits}-bit register",
                            p.name, r.name, f.name
                        ),
                    ));
                }
                let mut vals: Vec<EnumValue> = Vec::new();
                for ev in &f.enumerated_values {
                    for v in &ev.values {
                        if let Some(value) = v.value {
                            if !vals.iter().any(|x| x.value == value) {
                                vals.push(EnumValue {
                                    name: v.name.clone(),
                                    value,
                                    cond: None,
                                });
                            }
                        }
                    }
                }
                let kind = if !vals.is_empty() {
                    TypeKind::Enum(vals.into())
                } else if high == low {
                    TypeKind::Bool
                } else {
                    TypeKind::Hex
                };
                fields.push(Field {
                    name: f.name.clone(),
                    low,
                    high,
                    ty: Type::plain(kind),
                    cond: None,
                });
            }
            let access = match r.properties.access {
                Some(svd::Access::ReadOnly) => Access::ReadOnly,
                Some(svd::Access::WriteOnly | svd::Access::WriteOnce) => Access::WriteOnly,
                _ => Access::ReadWrite,
            };
            let ty = if fields.is_empty() {
                Type::plain(TypeKind::Hex)
            } else {
                fields.sort_by_key(|f| f.low);
                Type::plain(TypeKind::Bitset(fields.into()))
            };
            items.push(Item::Register(Arc::new(Register {
                name: r.name.clone(),
                offset: u64::from(r.address_offset),
                width: bits / 8,
                length: 1,
                stride: u64::from(bits / 8),
                access,
                ty,
                cond: None,
                doc: r.description.clone(),
            })));
        }
        let mut blk = Block {
            name: Some(p.name.clone()),
            kind: BlockKind::Array,
            offset: p.base_address,
            stride: 0,
            length: 1,
            items,
            cond: None,
            extent: 0,
        };
        blk.finish();
        let blocks_end = p
            .address_block
            .iter()
            .flatten()
            .map(|b| u64::from(b.offset) + u64::from(b.size))
            .max()
            .unwrap_or(0);
        blk.stride = blk.extent.max(blocks_end).max(1);
        root.items.push(Item::Block(blk));
    }
    root.finish();
    Ok(Database {
        name: device.name.clone(),
        source: file.to_string(),
        root,
        varsets: Vec::new(),
        pci: Vec::new(),
        bar: 0,
        absolute: true,
        nv_chipset_detect: false,
    })
}

/// The first `ROW:COL` after an " at " in a message.
fn row_in(msg: &str) -> Option<u32> {
    msg.match_indices(" at ").find_map(|(i, _)| {
        let rest = &msg[i + 4..];
        let (row, tail) = rest.split_once(':')?;
        tail.starts_with(|c: char| c.is_ascii_digit())
            .then(|| row.trim().parse().ok())
            .flatten()
    })
}
