//! envytools rnndb: the real `nv_mmio.xml` (vendored under tests/data/rnndb) on a
//! small log of an NVIDIA G84 card.

use std::path::{Path, PathBuf};

use mmio_trace_format::{AnyReader, Event};
use mmio_trace_regdb::{load, Selector, Session};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(p)
}

fn run(variant: Option<&str>) -> Vec<(u64, String, String)> {
    let db = load(&data("rnndb/nv_mmio.xml")).expect("nv_mmio.xml loads");
    let mut s = Session::new(vec![(db, Selector::Auto)]).unwrap();
    if let Some(v) = variant {
        s.set_variant(v).unwrap();
    }
    let mut r = AnyReader::open(&data("nv-g84.mmiotrace")).unwrap();
    let mut out = Vec::new();
    while let Some(ev) = r.next_event().unwrap() {
        s.observe(&ev);
        if let Event::Access(a) = &ev {
            // BAR2 (the RAMIN aperture at 0xfa000000) is not BAR0: not named.
            match s.register_name(a) {
                Some(name) => out.push((a.phys - 0xfd000000, name, s.describe(a).unwrap())),
                None => assert_eq!(a.phys, 0xfa000000),
            }
        }
    }
    out
}

fn described(v: &[(u64, String, String)]) -> Vec<&str> {
    v.iter().map(|a| a.2.as_str()).collect()
}

#[test]
fn chipset_detected_from_pmc_id_selects_g84_definitions() {
    let got = run(None);
    assert_eq!(
        described(&got),
        [
            "PMC.ID = STEPPING = 0xa2 | DEVICE_ID = 0x3 | CHIPSET = G84 | FOUNDRY = TSMC",
            "PMC.ENABLE = UNK0 | PVPE | PMEDIA | PFIFO | PGRAPH | PCIPHER | PBSP | PTIMER | PVP2 \
             | PFB | PGRAPH_CHSW | PMPEG_CHSW | UNUSED2_CHSW | PVP2_CHSW | PCIPHER_CHSW \
             | PBSP_CHSW | UNK27 | UNK28 | PDISPLAY | UNK31 | 0x200c2eec",
            "PMC.ENABLE = UNK0 | PFIFO | PGRAPH",
            "PMC.INTR_HOST = PFIFO | PGRAPH | PDISPLAY",
            "PMC.INTR_EN_HOST = HARDWARE",
            "PTIMER.TIME_LOW = 0x12345678",
            "PTIMER.TIME_HIGH = 0x12",
            "PMC.ENABLE+0x2 = 0",
            // NEW_ID exists from G94 on: on a G84 the PMC array slot has no register.
            "PMC+0xa00",
            "PFIFO+0x0",
            // Nothing in NV_MMIO covers 0xf0004: the offset in hex.
            "0xf0004",
            "PFIFO.CHAN_TABLE[0x3] = RAMFC_ADDR = 0x1234500 | RAMFC_TARGET = VRAM | UNK26 = 0 | ENABLE",
            "USER_DMA[0x3].DMA_PUT = 0x1000",
            "USER_DMA[0x3].DMA_PUT+0x2 = 0",
        ]
    );
    let names: Vec<&str> = got.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(names[0], "PMC.ID");
    assert_eq!(names[1], "PMC.ENABLE");
    assert_eq!(names[11], "PFIFO.CHAN_TABLE[0x3]");
}

#[test]
fn forced_variant_changes_register_layouts() {
    // NV4's PMC.ID has another layout (and no field for the low byte).
    let nv4 = run(Some("NV4"));
    assert_eq!(
        nv4[0].2,
        "PMC.ID = ARCHITECTURE = 0 | REV_MINOR = 0x3 | REV_MAJOR = 0x4 | ALWAYS0 = 0x8 | FOUNDRY = SGS | 0xa2"
    );
    // G94 and later have PMC.NEW_ID at 0xa00.
    let g94 = run(Some("G94"));
    assert_eq!(
        g94[8].2,
        "PMC.NEW_ID = DEVICE_ID = 0x1 | BOOT_2 = 0 | STEPPING = 0 | CHIPSET = G84"
    );
    // A chipset id in hex selects by value, as demmio's -a does.
    assert_eq!(run(Some("0x94"))[8].1, "PMC.NEW_ID");
    assert_eq!(run(Some("0x84"))[8].1, "PMC+0xa00");
    // Variant names are matched case-insensitively, as demmio's -a does.
    assert_eq!(run(Some("g94"))[8].1, "PMC.NEW_ID");
}

#[test]
fn unknown_variant_is_an_error_naming_the_database() {
    let db = load(&data("rnndb/nv_mmio.xml")).unwrap();
    let mut s = Session::new(vec![(db, Selector::Auto)]).unwrap();
    let e = s.set_variant("NV999").unwrap_err().to_string();
    assert!(e.contains("nv_mmio.xml: unknown variant \"NV999\""), "{e}");
}
