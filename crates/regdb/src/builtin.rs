//! Databases built into the binary, for devices mmio-trace itself provides.

use crate::model::Database;
use crate::native;

/// The text of `registers/demo.toml`: the simulated DMA engine of `mmio-trace demo`.
pub const DEMO_TOML: &str = include_str!("../../../registers/demo.toml");

/// The database of the `mmio-trace demo` device. It names no PCI id, so it binds to
/// the demo log's only mapping.
pub fn demo() -> Database {
    native::parse(DEMO_TOML, "registers/demo.toml").expect("registers/demo.toml is valid (tested)")
}
