//! Register names for `show --db` and `stats --db`: command-line glue over
//! `mmio-trace-regdb`, which does the loading, binding, lookup and decoding.

use std::path::Path;

use mmio_trace_format::{Access, Event};
use mmio_trace_regdb::{split_spec, Session};

use crate::input::BadInput;

/// Register-database options shared by `show` and `stats`.
#[derive(clap::Args, Default, Clone)]
pub struct DbArgs {
    /// Name accesses from a register database: envytools rnndb XML (e.g. rnndb's
    /// `nv_mmio.xml`), CMSIS-SVD (`.svd`) or mmio-trace TOML (see `registers/`).
    /// With one database it binds itself: to the PCI device it names (by the
    /// log's PCIDEV header), to SVD's physical addresses, or to the log's only
    /// mapping. `FILE@SELECTOR` says where it applies: a map id (`@2`), a PCI id
    /// (`@8086:100e`, its BAR) or a physical base address (`@0xfeb40000`).
    /// Repeatable, one database per device.
    #[arg(long = "db", value_name = "FILE[@SELECTOR]")]
    pub db: Vec<String>,

    /// The variant to decode rnndb databases for: an NVIDIA chipset name such as
    /// `NV50`, `G84` or `GF100`, or its id in hex (`0xa3`), instead of detecting
    /// it from the first read of PMC.ID (BAR0 offset 0) as envytools' demmio does.
    #[arg(long, value_name = "NAME", requires = "db")]
    pub variant: Option<String>,
}

/// Names accesses from the loaded databases.
pub struct Names {
    session: Session,
    /// The `--db` arguments, in order, for messages.
    specs: Vec<String>,
}

impl DbArgs {
    /// Loads the databases named on the command line; `None` when there are none.
    /// A missing or malformed database is bad input (exit status 2).
    pub fn load(&self) -> anyhow::Result<Option<Names>> {
        if self.db.is_empty() {
            return Ok(None);
        }
        let bad = |e: String| anyhow::Error::new(BadInput(e));
        let mut dbs = Vec::new();
        for spec in &self.db {
            let (file, sel) = split_spec(spec).map_err(|e| bad(format!("--db {spec}: {e}")))?;
            let db = mmio_trace_regdb::load(Path::new(file)).map_err(|e| bad(e.to_string()))?;
            dbs.push((db, sel));
        }
        let mut session = Session::new(dbs).map_err(|e| bad(e.to_string()))?;
        if let Some(v) = &self.variant {
            session.set_variant(v).map_err(|e| bad(e.to_string()))?;
        }
        Ok(Some(Names {
            session,
            specs: self.db.clone(),
        }))
    }
}

impl Names {
    /// Names for the simulated device of `mmio-trace demo` (its database is built in).
    pub fn demo() -> anyhow::Result<Names> {
        let db = mmio_trace_regdb::builtin::demo();
        let session = Session::new(vec![(db, mmio_trace_regdb::Selector::Auto)])?;
        Ok(Names {
            session,
            specs: vec!["(built in)".into()],
        })
    }

    /// Sees every event of the log, in order, before any access that follows it is
    /// described (PCIDEV and MAP lines bind databases to addresses).
    pub fn observe(&mut self, ev: &Event) {
        self.session.observe(ev);
    }

    /// Warns on standard error, once per database, about each database the log gave
    /// nothing to name (a `--db FILE@9` for a log without map 9), naming what the
    /// log has instead. Called after the whole log was observed.
    pub fn report_unbound(&self) {
        for (i, why) in self.session.unbound() {
            eprintln!("mmio-trace: warning: --db {}: {why}", self.specs[i]);
        }
    }

    /// The register an access touches, e.g. `PFIFO.CHAN[0x3].STATE` or `EECD+0x2`.
    pub fn register_name(&self, a: &Access) -> Option<String> {
        self.session.register_name(a)
    }

    /// The register name and the access's value decoded into fields, e.g.
    /// `EECD = SK | CS | DI`.
    pub fn describe(&self, a: &Access) -> Option<String> {
        self.session.describe(a)
    }
}
