//! `--inject FILE`: fault-injection rules (TOML) for `replay` and `record`.
//!
//! ```toml
//! seed = 7                  # for `probability` (default 0)
//!
//! [[rule]]
//! offset = 0x108            # the register: its offset within the mapping
//! width = 4                 # only accesses of this width (default: any)
//! file = "*/dev.regs"       # only mappings of files matching this glob (default: any)
//! set_bits = 0x4            # or value / clear_bits / flip_bits: what a read returns
//! from_read = 2             # from the register's Nth read on (default 1)
//! probability = 0.5         # each such read with this probability (default 1)
//! delay_us = 100            # delay every access of the register
//! sigbus_at = 5             # SIGBUS right after the Nth access (the device is gone)
//! ```

use std::path::Path;

use anyhow::Context as _;
use mmio_trace_replay::image::{InjectOp, InjectRule, MAX_RULES};
use serde::Deserialize;

use crate::input::BadInput;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    #[serde(default)]
    seed: u64,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    offset: u64,
    width: Option<u8>,
    file: Option<String>,
    value: Option<u64>,
    set_bits: Option<u64>,
    clear_bits: Option<u64>,
    flip_bits: Option<u64>,
    from_read: Option<u64>,
    probability: Option<f64>,
    delay_us: Option<u64>,
    sigbus_at: Option<u64>,
}

/// The rules of `path` and their seed. Malformed or meaningless rules are bad input.
pub fn load(path: &Path) -> anyhow::Result<(Vec<InjectRule>, u64)> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("--inject {name}: {e}")))
        .context("cannot read the injection rules")?;
    let def: FileDef =
        toml::from_str(&text).map_err(|e| BadInput(format!("--inject {name}: {e}")))?;
    let bad = |i: usize, m: &str| -> anyhow::Error {
        BadInput(format!("--inject {name}: rule {}: {m}", i + 1)).into()
    };
    if def.rules.is_empty() {
        return Err(BadInput(format!("--inject {name}: no [[rule]]")).into());
    }
    if def.rules.len() > MAX_RULES {
        return Err(BadInput(format!("--inject {name}: more than {MAX_RULES} rules")).into());
    }
    let mut out = Vec::new();
    for (i, r) in def.rules.into_iter().enumerate() {
        let ops = [
            r.value.map(InjectOp::Value),
            r.set_bits.map(InjectOp::Set),
            r.clear_bits.map(InjectOp::Clear),
            r.flip_bits.map(InjectOp::Flip),
        ];
        let mut given = ops.into_iter().flatten();
        let op = given.next().unwrap_or(InjectOp::None);
        if given.next().is_some() {
            return Err(bad(i, "give one of value, set_bits, clear_bits, flip_bits"));
        }
        if let Some(w) = r.width {
            if !matches!(w, 1 | 2 | 4 | 8 | 16 | 32 | 64) {
                return Err(bad(i, "width is 1, 2, 4, 8, 16, 32 or 64 bytes"));
            }
        }
        let p = r.probability.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&p) {
            return Err(bad(i, "probability is between 0 and 1"));
        }
        if r.from_read == Some(0) || r.sigbus_at == Some(0) {
            return Err(bad(i, "from_read and sigbus_at count from 1"));
        }
        if op == InjectOp::None && r.delay_us.is_none() && r.sigbus_at.is_none() {
            return Err(bad(
                i,
                "it does nothing: give value, set_bits, clear_bits, flip_bits, delay_us or sigbus_at",
            ));
        }
        if r.file.as_deref() == Some("") {
            return Err(bad(i, "an empty file glob names no file"));
        }
        out.push(InjectRule {
            file: r.file.map(String::into_bytes),
            rel: r.offset,
            width: r.width.unwrap_or(0),
            op,
            from_read: r.from_read.unwrap_or(1),
            probability: p,
            delay_ns: r.delay_us.unwrap_or(0).saturating_mul(1000),
            sigbus_at: r.sigbus_at.unwrap_or(0),
        });
    }
    Ok((out, def.seed))
}
