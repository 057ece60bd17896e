//! Register names for `show --db` and `stats --db` (being built: issue "register databases").

use mmio_trace_format::{Access, Event};

/// Register-database options shared by `show` and `stats`.
#[derive(clap::Args, Default, Clone)]
pub struct DbArgs {}

/// Names accesses from the loaded databases.
pub struct Names {}

impl DbArgs {
    /// Loads the databases named on the command line; `None` when there are none.
    pub fn load(&self) -> anyhow::Result<Option<Names>> {
        Ok(None)
    }
}

impl Names {
    /// Sees every event of the log, in order, before any access that follows it is
    /// described (PCIDEV and MAP lines bind databases to addresses).
    pub fn observe(&mut self, _ev: &Event) {}

    /// The register an access touches, e.g. `PFIFO.CHAN[0x3].STATE` or `EECD+0x2`.
    pub fn register_name(&self, _a: &Access) -> Option<String> {
        None
    }

    /// The register name and the access's value decoded into fields, e.g.
    /// `EECD = SK | CS | DI`.
    pub fn describe(&self, _a: &Access) -> Option<String> {
        None
    }
}
