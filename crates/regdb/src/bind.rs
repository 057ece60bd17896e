//! Binding databases to the address ranges of a log, and naming its accesses.
//!
//! A log says where device memory is in two ways: `PCIDEV` header lines give each
//! device's BARs, and `MAP` lines give each traced mapping's physical range. A
//! database describes offsets inside one BAR (or, for SVD, physical addresses), so
//! binding means choosing, for each access, the database whose range it falls in
//! and the base address its offset is counted from.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;

use mmio_trace_format::{Access, Direction, Event, PciDev};

use crate::error::{parse_num, Error};
use crate::model::{Database, Hit, PciId, Variants};
use crate::native::parse_pci;
use crate::nvidia;

/// Which part of a log a database describes (`--db FILE@SELECTOR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Decide from the log: the database's PCI ids against the `PCIDEV` header,
    /// SVD's physical addresses, or the log's only mapping.
    Auto,
    /// The mapping with this id (decimal, as in `MAP` lines).
    Map(i64),
    /// The device with this PCI id (`VENDOR:DEVICE` in hex); the database's BAR.
    Pci(PciId),
    /// Registers counted from this physical address (`0x...`).
    Phys(u64),
}

impl std::str::FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Selector, String> {
        let s = s.trim();
        if s.contains(':') {
            return parse_pci(s)
                .map(Selector::Pci)
                .ok_or_else(|| format!("bad PCI id {s:?}: expected VENDOR:DEVICE in hex"));
        }
        if s.starts_with("0x") || s.starts_with("0X") {
            return parse_num(s)
                .map(Selector::Phys)
                .ok_or_else(|| format!("bad physical address {s:?}"));
        }
        s.parse::<i64>().map(Selector::Map).map_err(|_| {
            format!(
                "bad selector {s:?}: expected a map id (decimal), a PCI id \
                 (VENDOR:DEVICE) or a physical base address (0x...)"
            )
        })
    }
}

/// Splits `FILE@SELECTOR` (the selector is optional; a file name that itself
/// contains `@` can be given as `FILE@auto`).
pub fn split_spec(spec: &str) -> Result<(&str, Selector), String> {
    match spec.rsplit_once('@') {
        Some((file, "auto")) => Ok((file, Selector::Auto)),
        Some((file, sel)) => Ok((file, sel.parse()?)),
        None => Ok((spec, Selector::Auto)),
    }
}

struct Bound {
    db: Database,
    sel: Selector,
    vars: Variants,
    /// The variant came from the user and must not be replaced by detection.
    forced: bool,
    cache: RefCell<HashMap<u64, Option<Hit>>>,
}

/// Names the accesses of one log from a set of databases.
///
/// Feed every event to [`Session::observe`] in log order; then ask
/// [`Session::register_name`] or [`Session::describe`] about the accesses.
pub struct Session {
    bound: Vec<Bound>,
    pcidevs: Vec<PciDev>,
    maps: HashMap<i64, u64>,
    /// Distinct physical bases of the mappings seen; "the only mapping" means one.
    map_bases: Vec<u64>,
}

/// Lookups cached per database before the cache is dropped (a log touching
/// millions of distinct addresses, e.g. a framebuffer, must not grow without bound).
const CACHE_CAP: usize = 1 << 20;

impl Session {
    /// Binds `dbs`. Several databases need selectors unless each finds its device
    /// by PCI id or is an SVD of physical addresses.
    pub fn new(dbs: Vec<(Database, Selector)>) -> Result<Session, Error> {
        if dbs.len() > 1 {
            for (db, sel) in &dbs {
                if *sel == Selector::Auto && db.pci.is_empty() && !db.absolute {
                    return Err(Error::at(
                        db.source.clone(),
                        None,
                        "several databases given: say which mapping this one describes \
                         with FILE@MAP_ID, FILE@VENDOR:DEVICE or FILE@0xPHYS_BASE",
                    ));
                }
            }
        }
        let bound = dbs
            .into_iter()
            .map(|(db, sel)| Bound {
                vars: Variants(vec![None; db.varsets.len()]),
                db,
                sel,
                forced: false,
                cache: RefCell::new(HashMap::new()),
            })
            .collect();
        Ok(Session {
            bound,
            pcidevs: Vec::new(),
            maps: HashMap::new(),
            map_bases: Vec::new(),
        })
    }

    /// Selects variant `name` (e.g. an NVIDIA chipset `NV50`, `GF100`) in every
    /// database that has variants, instead of detecting it from the log.
    pub fn set_variant(&mut self, name: &str) -> Result<(), Error> {
        let mut any = false;
        for b in &mut self.bound {
            if b.db.varsets.is_empty() {
                continue;
            }
            if !b.db.select_variant(&mut b.vars, name) {
                let known: Vec<&str> =
                    b.db.varsets
                        .iter()
                        .flat_map(|v| v.variants.iter().map(|x| x.name.as_str()))
                        .take(200)
                        .collect();
                return Err(Error::at(
                    b.db.source.clone(),
                    None,
                    format!("unknown variant {name:?}; known: {}", known.join(" ")),
                ));
            }
            b.forced = true;
            b.cache.borrow_mut().clear();
            any = true;
        }
        if !any {
            return Err(Error::at(
                "--variant",
                None,
                format!("variant {name:?} given, but no database has variants"),
            ));
        }
        Ok(())
    }

    /// The databases, in the order given.
    pub fn databases(&self) -> impl Iterator<Item = &Database> {
        self.bound.iter().map(|b| &b.db)
    }

    /// The variants selected so far in database `i` (detected or forced), as names.
    pub fn selected_variants(&self, i: usize) -> Vec<String> {
        let b = &self.bound[i];
        b.vars
            .0
            .iter()
            .enumerate()
            .filter_map(|(vs, sel)| sel.map(|s| b.db.varsets[vs].variants[s].name.clone()))
            .collect()
    }

    /// Learns from one event: PCI devices, mappings, and the NVIDIA chipset from
    /// the first read of `PMC.ID` (BAR0 offset 0), as demmio does.
    pub fn observe(&mut self, ev: &Event) {
        match ev {
            Event::PciDev(p) => self.pcidevs.push((**p).clone()),
            Event::Map(m) => {
                self.maps.insert(m.id, m.phys);
                if !self.map_bases.contains(&m.phys) {
                    self.map_bases.push(m.phys);
                }
            }
            Event::Access(a) if a.dir == Direction::Read => {
                let Some((i, 0)) = self.locate(a) else { return };
                let b = &mut self.bound[i];
                if !b.db.nv_chipset_detect || b.forced || b.vars.0.iter().any(Option::is_some) {
                    return;
                }
                let Some(chip) = nvidia::chipset_from_pmc_id(a.value() as u32) else {
                    return;
                };
                let ok = match chip {
                    nvidia::Chipset::Id(id) => select_by_value(&b.db, &mut b.vars, id),
                    nvidia::Chipset::Name(n) => b.db.select_variant(&mut b.vars, n),
                };
                if ok {
                    b.cache.borrow_mut().clear();
                }
            }
            _ => {}
        }
    }

    /// The database an access falls in and its offset there.
    pub fn locate(&self, a: &Access) -> Option<(usize, u64)> {
        for (i, b) in self.bound.iter().enumerate() {
            if let Some(off) = self.offset_in(b, a) {
                return Some((i, off));
            }
        }
        None
    }

    fn pci_base(&self, id: Option<PciId>, ids: &[PciId], bar: u8, phys: u64) -> Option<u64> {
        let want = |p: &PciDev| {
            let m = |id: &PciId| id.vendor == p.vendor && id.device.is_none_or(|d| d == p.device);
            match id {
                Some(id) => m(&id),
                None => ids.iter().any(m),
            }
        };
        self.pcidevs
            .iter()
            .filter(|p| want(p))
            .find(|p| p.resource_of(phys) == Some(bar as usize))
            .map(|p| p.base(bar as usize))
    }

    /// The base of the BAR containing `phys`, from the header, if any.
    fn bar_base(&self, phys: u64) -> Option<u64> {
        self.pcidevs
            .iter()
            .find_map(|p| p.resource_of(phys).map(|r| p.base(r)))
    }

    fn offset_in(&self, b: &Bound, a: &Access) -> Option<u64> {
        let phys = a.phys;
        match b.sel {
            Selector::Map(id) => {
                if a.map_id != id {
                    return None;
                }
                let base = self
                    .bar_base(phys)
                    .or_else(|| self.maps.get(&id).copied())?;
                phys.checked_sub(base)
            }
            Selector::Pci(id) => {
                let base = self.pci_base(Some(id), &[], b.db.bar, phys)?;
                Some(phys - base)
            }
            Selector::Phys(base) => {
                let off = phys.checked_sub(base)?;
                (off < b.db.root.extent).then_some(off)
            }
            Selector::Auto => {
                if b.db.absolute {
                    return Some(phys);
                }
                if !b.db.pci.is_empty() {
                    if let Some(base) = self.pci_base(None, &b.db.pci, b.db.bar, phys) {
                        return Some(phys - base);
                    }
                    // A device the header lists, but not this address: not ours.
                    let listed = self.pcidevs.iter().any(|p| {
                        b.db.pci.iter().any(|id| {
                            id.vendor == p.vendor && id.device.is_none_or(|d| d == p.device)
                        })
                    });
                    if listed {
                        return None;
                    }
                }
                if self.map_bases.len() != 1 || !self.maps.contains_key(&a.map_id) {
                    return None;
                }
                let base = self.bar_base(phys).unwrap_or(self.map_bases[0]);
                phys.checked_sub(base)
            }
        }
    }

    fn hit(&self, i: usize, off: u64) -> Option<Hit> {
        let b = &self.bound[i];
        if let Some(h) = b.cache.borrow().get(&off) {
            return h.clone();
        }
        let h = b.db.lookup(off, &b.vars);
        let mut c = b.cache.borrow_mut();
        if c.len() >= CACHE_CAP {
            c.clear();
        }
        c.insert(off, h.clone());
        h
    }

    /// The register an access touches, e.g. `PFIFO.CHAN[0x3].STATE` or `EECD+0x2`;
    /// the offset in hex for an address in a bound range that no register covers;
    /// `None` outside every bound range.
    pub fn register_name(&self, a: &Access) -> Option<String> {
        let (i, off) = self.locate(a)?;
        Some(match self.hit(i, off) {
            Some(h) => h.name.to_string(),
            None => format!("{off:#x}"),
        })
    }

    /// The register name and the value decoded into fields and enums, e.g.
    /// `EECD = DO | EE_GNT | EE_PRES | FWE = 0`.
    pub fn describe(&self, a: &Access) -> Option<String> {
        let (i, off) = self.locate(a)?;
        let Some(h) = self.hit(i, off) else {
            return Some(format!("{off:#x}"));
        };
        let mut s = String::with_capacity(h.name.len() + 48);
        s.push_str(&h.name);
        if let Some(r) = &h.register {
            if a.width as usize <= 8 {
                s.push_str(" = ");
                let d = r.decode_access(h.within, a.width as u32, a.value(), &self.bound[i].vars);
                s.push_str(&d);
            } else {
                let _ = write!(s, " ({} bytes)", a.width);
            }
        }
        Some(s)
    }
}

fn select_by_value(db: &Database, vars: &mut Variants, id: u64) -> bool {
    let Some(vs) = db.varset("chipset") else {
        return false;
    };
    match db.varsets[vs]
        .variants
        .iter()
        .position(|v| v.value == Some(id))
    {
        Some(j) => {
            vars.0[vs] = Some(j);
            true
        }
        None => false,
    }
}
