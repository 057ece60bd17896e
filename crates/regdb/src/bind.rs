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
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

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
    cache: RefCell<FxMap<u64, Option<Hit>>>,
}

/// FxHash (rustc's hasher): the caches are keyed by small integers from the log,
/// where SipHash's DoS resistance buys nothing and costs a third of `show --db`.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl Fx {
    #[inline]
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, x: u8) {
        self.add(u64::from(x));
    }
    fn write_u64(&mut self, x: u64) {
        self.add(x);
    }
    fn write_i64(&mut self, x: i64) {
        self.add(x as u64);
    }
    fn write_usize(&mut self, x: usize) {
        self.add(x as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

/// Where an access lands: database index and offset there, if anywhere.
type Located = Option<(usize, u64)>;

/// An access as far as naming it goes: map id, address, width and value.
type DescKey = (i64, u64, u8, u64);

/// Names the accesses of one log from a set of databases.
///
/// Feed every event to [`Session::observe`] in log order; then ask
/// [`Session::register_name`] or [`Session::describe`] about the accesses.
pub struct Session {
    bound: Vec<Bound>,
    pcidevs: Vec<PciDev>,
    maps: HashMap<i64, u64>,
    /// Every mapping seen (id, physical base, length), for [`Session::unbound`].
    map_list: Vec<(i64, u64, u64)>,
    /// Distinct physical bases of the mappings seen; "the only mapping" means one.
    map_bases: Vec<u64>,
    /// Where each (map id, address) lands: database and offset. Dropped when a
    /// PCIDEV or MAP line changes the bindings.
    located: RefCell<FxMap<(i64, u64), Located>>,
    /// Finished descriptions: logs poll the same registers with the same values
    /// over and over, so decoding each distinct access once makes `show --db`
    /// nearly as fast as `show`.
    described: RefCell<FxMap<DescKey, Rc<str>>>,
    /// Some database still waits for its chipset from `PMC.ID`.
    detect_pending: bool,
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
                cache: RefCell::new(FxMap::default()),
            })
            .collect::<Vec<_>>();
        Ok(Session {
            detect_pending: bound.iter().any(|b| b.db.nv_chipset_detect),
            bound,
            pcidevs: Vec::new(),
            maps: HashMap::new(),
            map_list: Vec::new(),
            map_bases: Vec::new(),
            located: RefCell::new(FxMap::default()),
            described: RefCell::new(FxMap::default()),
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
            // demmio's `-a` also takes a chipset id in hex (`0xa3`, GT215).
            let hex = name
                .strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            let found = b.db.select_variant(&mut b.vars, name)
                || hex.is_some_and(|v| select_by_value(&b.db, &mut b.vars, v));
            if !found {
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
        if any {
            self.described.borrow_mut().clear();
            self.detect_pending = false;
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
            Event::PciDev(p) => {
                self.pcidevs.push(PciDev::clone(p));
                self.rebind();
            }
            Event::Map(m) => {
                self.maps.insert(m.id, m.phys);
                let key = (m.id, m.phys, m.len);
                // Bounded: a log that maps and unmaps without end must not grow this.
                if self.map_list.len() < 4096 && !self.map_list.contains(&key) {
                    self.map_list.push(key);
                }
                if !self.map_bases.contains(&m.phys) {
                    self.map_bases.push(m.phys);
                }
                self.rebind();
            }
            Event::Access(a) if a.dir == Direction::Read && self.detect_pending => {
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
                    self.described.borrow_mut().clear();
                    self.detect_pending = self.bound.iter().any(|b| {
                        b.db.nv_chipset_detect && !b.forced && b.vars.0.iter().all(Option::is_none)
                    });
                }
            }
            _ => {}
        }
    }

    fn rebind(&mut self) {
        self.located.get_mut().clear();
        self.described.get_mut().clear();
    }

    /// The database an access falls in and its offset there.
    pub fn locate(&self, a: &Access) -> Option<(usize, u64)> {
        let key = (a.map_id, a.phys);
        if let Some(r) = self.located.borrow().get(&key) {
            return *r;
        }
        let r = self
            .bound
            .iter()
            .enumerate()
            .find_map(|(i, b)| self.offset_in(b, a).map(|off| (i, off)));
        let mut c = self.located.borrow_mut();
        if c.len() >= CACHE_CAP {
            c.clear();
        }
        c.insert(key, r);
        r
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
        let key = (a.map_id, a.phys, a.width, a.value());
        if let Some(d) = self.described.borrow().get(&key) {
            return Some(d.to_string());
        }
        let (i, off) = self.locate(a)?;
        let s = match self.hit(i, off) {
            None => format!("{off:#x}"),
            Some(h) => {
                let mut s = String::with_capacity(h.name.len() + 48);
                s.push_str(&h.name);
                if let Some(r) = &h.register {
                    if a.width as usize <= 8 {
                        s.push_str(" = ");
                        let vars = &self.bound[i].vars;
                        s.push_str(&r.decode_access(h.within, a.width as u32, a.value(), vars));
                    } else {
                        let _ = write!(s, " ({} bytes)", a.width);
                    }
                }
                s
            }
        };
        // Wide accesses carry more than `value()`: never cache their text.
        if a.width as usize <= 8 {
            let mut c = self.described.borrow_mut();
            if c.len() >= CACHE_CAP {
                c.clear();
            }
            c.insert(key, Rc::from(s.as_str()));
        }
        Some(s)
    }
}

impl Session {
    /// The databases that the log gives nothing to name, or names wrongly, after every
    /// event was observed, each with why in words (naming what the log has instead): a
    /// map id, PCI id or physical range the log has no mapping or device for, a
    /// database without a selector that could not tell which mapping it describes, or
    /// an NVIDIA database whose chipset was never detected. Index of the database (in
    /// the order given), and the reason.
    pub fn unbound(&self) -> Vec<(usize, String)> {
        let maps = || -> String {
            if self.map_list.is_empty() {
                return "the log has no MAP lines".into();
            }
            let list: Vec<String> = self
                .map_list
                .iter()
                .take(16)
                .map(|(id, phys, len)| format!("{id} at {phys:#x}+{len:#x}"))
                .collect();
            let more = if self.map_list.len() > 16 {
                ", ..."
            } else {
                ""
            };
            format!("its maps: {}{more}", list.join(", "))
        };
        let devices = || -> String {
            if self.pcidevs.is_empty() {
                return "the log has no PCIDEV lines".into();
            }
            let list: Vec<String> = self
                .pcidevs
                .iter()
                .take(16)
                .map(|p| format!("{:04x}:{:04x}", p.vendor, p.device))
                .collect();
            format!("its PCI devices: {}", list.join(", "))
        };
        let matches = |id: &PciId, p: &PciDev| {
            id.vendor == p.vendor && id.device.is_none_or(|d| d == p.device)
        };
        let mut out = Vec::new();
        for (i, b) in self.bound.iter().enumerate() {
            let why = match b.sel {
                Selector::Map(id) if !self.maps.contains_key(&id) => {
                    format!("the log has no map {id}; {}", maps())
                }
                Selector::Pci(id) if !self.pcidevs.iter().any(|p| matches(&id, p)) => {
                    let dev = id.device.map(|d| format!("{d:04x}")).unwrap_or("*".into());
                    format!(
                        "the log has no PCI device {:04x}:{dev}; {}",
                        id.vendor,
                        devices()
                    )
                }
                Selector::Phys(base)
                    if !self.map_list.iter().any(|&(_, phys, len)| {
                        phys < base.saturating_add(b.db.root.extent)
                            && base < phys.saturating_add(len)
                    }) =>
                {
                    format!(
                        "no mapping of the log overlaps {base:#x}..{:#x}; {}",
                        base.saturating_add(b.db.root.extent),
                        maps()
                    )
                }
                Selector::Auto
                    if !b.db.absolute
                        && !self
                            .pcidevs
                            .iter()
                            .any(|p| b.db.pci.iter().any(|id| matches(id, p)))
                        && self.map_bases.len() != 1 =>
                {
                    let which = if self.map_bases.is_empty() {
                        maps()
                    } else {
                        format!(
                            "the log maps {} different addresses, so say which map it \
                             describes with FILE@MAP_ID; {}",
                            self.map_bases.len(),
                            maps()
                        )
                    };
                    if b.db.pci.is_empty() {
                        which
                    } else {
                        format!("no device of the log has its PCI ids, and {which}")
                    }
                }
                // Bound, but named as if every chipset's registers applied.
                _ if b.db.nv_chipset_detect
                    && !b.forced
                    && b.vars.0.iter().all(Option::is_none) =>
                {
                    "the NVIDIA chipset was not detected (the log has no read of PMC.ID, \
                     BAR0 offset 0): accesses were named as if every chipset's registers \
                     applied; give the chipset with --variant NAME"
                        .to_string()
                }
                _ => continue,
            };
            out.push((i, why));
        }
        out
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
