//! The native TOML format: the README's example, the shipped edu database, and
//! binding rules.

use std::path::{Path, PathBuf};

use mmio_trace_format::{Access, Direction, Event, Map};
use mmio_trace_regdb::{load, native, split_spec, Selector, Session, Variants};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

#[test]
fn readme_example_parses_and_names_arrays_blocks_and_fields() {
    let readme = std::fs::read_to_string(repo("registers/README.md")).unwrap();
    let start = readme.find("```toml\n").expect("a TOML example") + 8;
    let len = readme[start..].find("```").unwrap();
    let db = native::parse(&readme[start..start + len], "README.md").unwrap();
    let v = Variants::default();
    let name = |off: u64| db.lookup(off, &v).map(|h| h.name.to_string());
    assert_eq!(name(0x20).as_deref(), Some("STATUS"));
    assert_eq!(name(0x22).as_deref(), Some("STATUS+0x2"));
    assert_eq!(name(0x84).as_deref(), Some("DMA_SRC+0x4"));
    assert_eq!(name(0x53fc).as_deref(), Some("MTA[0x7f]"));
    assert_eq!(name(0x5404).as_deref(), Some("RAH[0x0]"));
    assert_eq!(name(0x5408).as_deref(), Some("RAL[0x1]"));
    assert_eq!(name(0x1108).as_deref(), Some("QUEUE[0x1].TAIL"));
    assert_eq!(name(0x1110).as_deref(), Some("QUEUE[0x1]+0x10"));
    assert_eq!(name(0x1400), None);
    let status = db.lookup(0x20, &v).unwrap().register.unwrap();
    assert_eq!(
        status.decode_access(0, 4, 0x0123_0503, &v),
        "COMPUTING | MODE = ON | COUNT = 5 | LIMIT = 4656"
    );
    // A byte access decodes the fields it covers whole.
    assert_eq!(status.decode_access(1, 1, 0x05, &v), "COUNT = 5");
}

fn acc(dir: Direction, width: u8, phys: u64, value: u64) -> Event {
    Event::Access(Access::new(dir, width, 0, 1, phys, value))
}

fn map(id: i64, phys: u64) -> Event {
    Event::Map(Map {
        ts_ns: 0,
        id,
        phys,
        virt: 0x7f00_0000_0000,
        len: 0x1000,
        pc: 0,
        pid: 0,
    })
}

/// What a user-space recording of the edu test program looks like: a MAP of
/// BAR0 from sysfs `resource0`, no PCIDEV header.
fn edu_events() -> Vec<Event> {
    use Direction::*;
    let b = 0xfea00000;
    vec![
        map(1, b),
        acc(Read, 4, b, 0x010000ed),
        acc(Write, 4, b + 0x4, 0x12345678),
        acc(Write, 4, b + 0x8, 5),
        acc(Read, 4, b + 0x20, 0x1),
        acc(Read, 4, b + 0x8, 120),
        acc(Write, 4, b + 0x84, 0x1),
        acc(Write, 8, b + 0x90, 0x1000),
        acc(Write, 8, b + 0x98, 0x7),
        acc(Read, 4, b + 0x24, 0x101),
        acc(Write, 4, b + 0x64, 0x100),
        acc(Read, 4, b + 0x40, 0),
    ]
}

fn describe_all(s: &mut Session, evs: &[Event]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for ev in evs {
        s.observe(ev);
        if let Event::Access(a) = ev {
            out.push(s.describe(a));
        }
    }
    out
}

#[test]
fn edu_database_binds_to_the_only_mapping_and_decodes() {
    let db = load(&repo("registers/edu.toml")).unwrap();
    let mut s = Session::new(vec![(db, Selector::Auto)]).unwrap();
    let got = describe_all(&mut s, &edu_events());
    let got: Vec<&str> = got.iter().map(|d| d.as_deref().unwrap()).collect();
    assert_eq!(
        got,
        [
            "ID = MAGIC = 0xed | MINOR = 0 | MAJOR = 1",
            "LIVENESS = 0x12345678",
            "FACTORIAL = 5",
            "STATUS = COMPUTING",
            "FACTORIAL = 120",
            "DMA_SRC+0x4 = 0x1",
            "DMA_COUNT = 4096",
            "DMA_CMD = START | DIR = DEV_TO_RAM | IRQ",
            "IRQ_STATUS = FACTORIAL | DMA",
            "IRQ_ACK = 0x100",
            "0x40",
        ]
    );
}

#[test]
fn two_mappings_of_different_devices_need_a_selector() {
    let db = load(&repo("registers/edu.toml")).unwrap();
    let mut evs = edu_events();
    evs.insert(1, map(2, 0xfeb40000));
    let mut s = Session::new(vec![(db.clone(), Selector::Auto)]).unwrap();
    assert!(describe_all(&mut s, &evs).iter().all(Option::is_none));
    let mut s = Session::new(vec![(db, Selector::Map(1))]).unwrap();
    assert_eq!(
        describe_all(&mut s, &evs)[0].as_deref(),
        Some("ID = MAGIC = 0xed | MINOR = 0 | MAJOR = 1")
    );
}

#[test]
fn several_databases_without_ids_or_selectors_are_refused() {
    let text = "[[register]]\nname = \"A\"\noffset = 0\n";
    let a = native::parse(text, "a.toml").unwrap();
    let b = native::parse(text, "b.toml").unwrap();
    let e = Session::new(vec![
        (a.clone(), Selector::Auto),
        (b.clone(), Selector::Auto),
    ])
    .err()
    .unwrap();
    assert!(
        e.to_string().starts_with("a.toml: several databases given"),
        "{e}"
    );
    assert!(Session::new(vec![(a, Selector::Map(1)), (b, Selector::Map(2))]).is_ok());
}

#[test]
fn selectors_parse_map_ids_pci_ids_and_addresses() {
    assert_eq!(split_spec("x.toml").unwrap(), ("x.toml", Selector::Auto));
    assert_eq!(
        split_spec("x.toml@3").unwrap(),
        ("x.toml", Selector::Map(3))
    );
    assert_eq!(
        split_spec("x.toml@0xfeb40000").unwrap(),
        ("x.toml", Selector::Phys(0xfeb40000))
    );
    let Selector::Pci(id) = split_spec("x.toml@8086:100e").unwrap().1 else {
        panic!("not a PCI selector")
    };
    assert_eq!((id.vendor, id.device), (0x8086, Some(0x100e)));
    assert_eq!(
        split_spec("a@b.toml@auto").unwrap(),
        ("a@b.toml", Selector::Auto)
    );
    assert!(split_spec("x.toml@zz")
        .unwrap_err()
        .starts_with("bad selector \"zz\""));
}

#[test]
fn demo_database_names_the_demo_drivers_accesses() {
    let mut s = Session::new(vec![(mmio_trace_regdb::builtin::demo(), Selector::Auto)]).unwrap();
    let mut r = mmio_trace_format::AnyReader::open(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/demo.mmiotrace"),
    )
    .unwrap();
    let mut got = Vec::new();
    while let Some(ev) = r.next_event().unwrap() {
        s.observe(&ev);
        if let Event::Access(a) = &ev {
            got.push(s.describe(a).unwrap());
        }
    }
    assert_eq!(
        got,
        [
            "ID = DMA1",
            "VERSION = MINOR = 2 | MAJOR = 1",
            "CTRL = RESET",
            "STATUS = READY | DONE",
            "SRC = 0x100000000",
            "DST = 0x200000000",
            "LEN = 4096",
            "CTRL = ENABLE | IRQ_EN",
            "DOORBELL = START",
            "STATUS = READY | DONE",
            "IRQ_STATUS = DONE",
            "IRQ_STATUS = DONE",
        ]
    );
}
