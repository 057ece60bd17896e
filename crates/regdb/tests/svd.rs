//! CMSIS-SVD: Nordic's real nrf51.svd (vendored with its licence) on a small log.

use std::path::{Path, PathBuf};

use mmio_trace_format::{AnyReader, Event};
use mmio_trace_regdb::{load, Selector, Session};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(p)
}

fn run() -> Vec<(String, String)> {
    let db = load(&data("svd/nrf51.svd")).expect("nrf51.svd loads");
    let mut s = Session::new(vec![(db, Selector::Auto)]).unwrap();
    let mut r = AnyReader::open(&data("nrf51.mmiotrace")).unwrap();
    let mut out = Vec::new();
    while let Some(ev) = r.next_event().unwrap() {
        s.observe(&ev);
        if let Event::Access(a) = &ev {
            out.push((s.register_name(a).unwrap(), s.describe(a).unwrap()));
        }
    }
    out
}

#[test]
fn names_registers_of_derived_peripherals_and_expanded_arrays() {
    let got = run();
    let names: Vec<&str> = got.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(
        names,
        [
            // TIMER1 is `derivedFrom="TIMER0"`: it has TIMER0's registers at its own base.
            "TIMER1.MODE",
            "TIMER1.BITMODE",
            // `CC[%s]` (dim 4) expanded by svd-parser.
            "TIMER1.CC2",
            "TIMER1.TASKS_START",
            "RADIO.DAB2",
            "GPIO.PIN_CNF3",
            "GPIO.OUTSET",
            // Inside GPIO's address block, but no register there.
            "GPIO+0xffc",
        ]
    );
}

#[test]
fn decodes_fields_and_enumerated_values() {
    let got = run();
    assert_eq!(got[0].1, "TIMER1.MODE = MODE = Timer");
    assert_eq!(got[1].1, "TIMER1.BITMODE = BITMODE = 32Bit");
    assert_eq!(got[2].1, "TIMER1.CC2 = 0x1000");
    assert_eq!(
        got[5].1,
        "GPIO.PIN_CNF3 = DIR = Output | INPUT = Disconnect | PULL = Disabled | DRIVE = S0S1 | SENSE = Disabled"
    );
    assert!(
        got[6]
            .1
            .contains("| PIN3 = Low | PIN4 = High | PIN5 = Low |"),
        "{}",
        got[6].1
    );
}
