//! Register databases for mmio-trace: name every access of a log.
//!
//! Three formats import into one model ([`model`]): a block tree of registers at
//! offsets, with widths, access rights, bit fields and enums, arrays and strides.
//!
//! * envytools rnndb XML ([`rnndb`]), with per-chipset variants;
//! * CMSIS-SVD ([`svd`]), with `derivedFrom` and arrays expanded;
//! * a native TOML format ([`native`]) for describing a device by hand.
//!
//! [`Session`] binds databases to a log's mappings (by PCI id, map id or physical
//! base) and names and decodes each access the way envytools' demmio does:
//! `PFIFO.CHAN[0x3].STATE`, `EECD+0x2`, `STATUS = FD | LU | SPEED = 1000MBS`.
//!
//! This crate has no `unsafe` code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bind;
pub mod builtin;
pub mod error;
pub mod model;
pub mod native;
pub mod nvidia;
pub mod rnndb;
pub mod svd;

use std::path::Path;

pub use bind::{split_spec, Selector, Session};
pub use error::Error;
pub use model::{Database, Hit, Variants};

/// The formats a database file can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The native TOML format.
    Toml,
    /// envytools rnndb XML (`<database>` root).
    Rnndb,
    /// CMSIS-SVD XML (`<device>` root).
    Svd,
}

/// Tells the format of a database from its extension and, for XML, its root tag.
pub fn detect(path: &Path, text: &str) -> Result<Kind, Error> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext == "toml" {
        return Ok(Kind::Toml);
    }
    if ext == "svd" {
        return Ok(Kind::Svd);
    }
    // The first element after the XML declaration and comments.
    let mut rest = text;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        if rest.starts_with('?') || rest.starts_with('!') {
            continue;
        }
        let tag: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':' || *c == '-')
            .collect();
        return match tag.as_str() {
            "database" => Ok(Kind::Rnndb),
            "device" => Ok(Kind::Svd),
            t => Err(Error::at(
                path.display().to_string(),
                Some(error::line_of(text, text.len() - rest.len())),
                format!("unknown database format: root element <{t}> (expected rnndb <database> or SVD <device>)"),
            )),
        };
    }
    if ext == "xml" {
        return Err(Error::at(
            path.display().to_string(),
            None,
            "no XML element found",
        ));
    }
    Err(Error::at(
        path.display().to_string(),
        None,
        "unknown database format: expected .toml, .svd or rnndb .xml",
    ))
}

/// Loads a database file of any supported format.
pub fn load(path: &Path) -> Result<Database, Error> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::at(&file, None, format!("cannot read: {e}")))?;
    match detect(path, &text)? {
        Kind::Toml => native::parse(&text, &file),
        Kind::Rnndb => rnndb::load(path, None),
        Kind::Svd => svd::parse(&text, &file),
    }
}
