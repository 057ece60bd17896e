//! The shipped e1000 database against the real kernel log of the e1000 driver's probe.

use std::path::Path;

use mmio_trace_format::{AnyReader, Event};
use mmio_trace_regdb::{load, Selector, Session};

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

/// Runs the log through a session and returns (offset, name, description) for every
/// access.
fn describe_log(sel: Selector) -> Vec<(u64, String, String)> {
    let db = load(&repo("registers/e1000.toml")).expect("e1000.toml loads");
    let mut s = Session::new(vec![(db, sel)]).unwrap();
    let mut r = AnyReader::open(&repo("tests/data/e1000-probe.mmiotrace")).unwrap();
    let mut out = Vec::new();
    while let Some(ev) = r.next_event().unwrap() {
        s.observe(&ev);
        if let Event::Access(a) = &ev {
            let name = s
                .register_name(a)
                .expect("every access is in the e1000 BAR");
            let desc = s.describe(a).unwrap();
            out.push((a.phys - 0xfeb40000, name, desc));
        }
    }
    out
}

#[test]
fn every_status_and_eecd_access_is_named_with_its_fields() {
    let all = describe_log(Selector::Auto);
    let status: Vec<_> = all.iter().filter(|a| a.0 == 0x8).collect();
    let eecd: Vec<_> = all.iter().filter(|a| a.0 == 0x10).collect();
    assert_eq!(status.len(), 4992);
    assert_eq!(eecd.len(), 1611 + 5040);
    for (_, name, desc) in &status {
        assert_eq!(name, "STATUS");
        // QEMU's STATUS also sets bit 19 (GIO master enable of later parts) and bit
        // 31, which the 8254x manual leaves reserved: they show as a residue.
        assert_eq!(
            desc,
            "STATUS = FD | LU | FUNC_ID = 0 | SPEED = 1000MBS | ASDV = 1000MBS | MTXCKOK | PCIXSPD = 50_66MHZ | 0x80080000"
        );
    }
    for (_, name, desc) in &eecd {
        assert_eq!(name, "EECD");
        assert!(desc.starts_with("EECD = "), "{desc}");
        assert!(desc.contains("EE_PRES"), "{desc}");
    }
    let texts: std::collections::BTreeSet<&str> = eecd.iter().map(|e| e.2.as_str()).collect();
    for want in [
        "EECD = DO | FWE = 0 | EE_GNT | EE_PRES",
        "EECD = DO | FWE = 0 | EE_REQ | EE_GNT | EE_PRES",
        "EECD = CS | DO | FWE = 0 | EE_REQ | EE_GNT | EE_PRES",
        "EECD = CS | DI | FWE = 0 | EE_REQ | EE_GNT | EE_PRES",
        "EECD = SK | CS | DI | FWE = 0 | EE_REQ | EE_GNT | EE_PRES",
    ] {
        assert!(texts.contains(want), "missing {want:?} in {texts:?}");
    }
}

#[test]
fn arrays_and_interleaved_arrays_get_indices() {
    let all = describe_log(Selector::Auto);
    let name_at = |off: u64| {
        all.iter()
            .find(|a| a.0 == off)
            .map(|a| a.1.clone())
            .unwrap()
    };
    assert_eq!(name_at(0x5200), "MTA[0x0]");
    assert_eq!(name_at(0x53fc), "MTA[0x7f]");
    assert_eq!(name_at(0x5400), "RAL[0x0]");
    assert_eq!(name_at(0x5404), "RAH[0x0]");
    assert_eq!(name_at(0x5438), "RAL[0x7]");
    assert_eq!(name_at(0x5600), "VFTA[0x0]");
    assert_eq!(name_at(0x3818), "TDT");
    assert_eq!(name_at(0x40f4), "BPTC");
}

#[test]
fn decodes_interrupt_masks_and_control_registers() {
    let all = describe_log(Selector::Auto);
    let descs: std::collections::BTreeSet<&str> = all.iter().map(|a| a.2.as_str()).collect();
    for want in [
        "IMC = TXDW | TXQE | LSC | RXSEQ | RXDMT0 | RXO | RXT0 | MDAC | RXCFG | PHYINT | GPI_SDP6 | GPI_SDP7 | TXD_LOW | SRPD | 0xfffe0920",
        "RCTL = EN | LBM = NONE | RDMTS = HALF | MO = 0 | BAM | BSIZE = 2048",
        "TCTL = EN | PSP | CT = 15 | COLD = 63 | RTLC",
        "MDIC = DATA = 0x7949 | REGADD = 1 | PHYADD = 1 | OP = READ | R",
        "RAH[0x0] = RAH = 0x5634 | ASEL = DEST | AV",
        "FCRTL = RTL = 44224 | XONE",
        "TIPG = IPGT = 8 | IPGR1 = 8 | IPGR2 = 6",
    ] {
        assert!(descs.contains(want), "missing {want:?}");
    }
}

#[test]
fn binding_by_map_id_pci_id_and_physical_base_agree() {
    let auto = describe_log(Selector::Auto);
    let by_map = describe_log(Selector::Map(1));
    let by_pci = describe_log("8086:100e".parse().unwrap());
    let by_phys = describe_log("0xfeb40000".parse().unwrap());
    assert_eq!(auto, by_map);
    assert_eq!(auto, by_pci);
    assert_eq!(auto, by_phys);
}
