//! Kernel-access markers (`MARK ts kernel read|wrote N bytes of map ID at 0xPHYS (CALL)
//! pid TID`): their own event in both formats, text <-> binary exact, only the canonical
//! text recognised, and binary record 0x8b skipped by readers that do not know it.

use std::io::Cursor;

use mmio_trace_format::*;

mod common;
use common::{to_binary, to_text};

const LOG: &str = "\
VERSION 20070824
MAP 0.000010 1 0x0 0x7f0000000000 0x1000 0x401000 77
MARK 0.000020 kernel wrote 64 bytes of map 1 at 0x40 (read) pid 77
MARK 0.000030 kernel read 4096 bytes of map -1 at 0xfedc0000 (pwritev2) pid 4294967295
MARK 0.000040 kernel read 01 bytes of map 1 at 0x40 (read) pid 77
MARK 0.000050 kernel read 1 bytes of map 1 at 0x040 (read) pid 77
MARK 0.000060 kernel read 1 bytes of map 1 at 0xA (read) pid 77
MARK 0.000070 kernel read 0 bytes of map 1 at 0x0 (read) pid 77
MARK 0.000080 kernel read 1 bytes of map 1 at 0x0 (Read) pid 77
MARK 0.000090 kernel read 1 bytes of map 1 at 0x0 (read) pid 77
continued
MARK 0.000100 kernel read 1 bytes of map -0 at 0x0 (read) pid 77
R 4 0.000110 1 0x40 0x1010 0x401234 77
";

fn text_events(s: &[u8]) -> Vec<Event> {
    let mut r = TextReader::new(Cursor::new(s.to_vec()));
    let mut v = Vec::new();
    while let Some(e) = r.next_event().unwrap() {
        v.push(e);
    }
    v
}

fn binary_events(b: &[u8]) -> Vec<Event> {
    let r = BinaryReader::new(Cursor::new(b.to_vec())).unwrap();
    r.map(|e| e.unwrap()).collect()
}

#[test]
fn canonical_kernel_lines_are_kernel_events_and_others_stay_marks() {
    let ev = text_events(LOG.as_bytes());
    assert_eq!(
        ev[2],
        Event::Kernel(KernelAccess {
            ts_ns: 20_000,
            dir: Direction::Write,
            len: 64,
            map_id: 1,
            phys: 0x40,
            call: b"read".to_vec(),
            pid: 77,
        })
    );
    assert_eq!(
        ev[3],
        Event::Kernel(KernelAccess {
            ts_ns: 30_000,
            dir: Direction::Read,
            len: 4096,
            map_id: -1,
            phys: 0xfedc0000,
            call: b"pwritev2".to_vec(),
            pid: u32::MAX,
        })
    );
    // Leading zeros, uppercase, zero bytes, a capital in the call, a continuation line,
    // "-0": plain markers.
    for e in &ev[4..11] {
        assert!(matches!(e, Event::Mark(_)), "{e:?}");
    }
    assert_eq!(ev.len(), 12);
}

#[test]
fn text_binary_text_is_byte_exact_and_binary_text_binary_too() {
    let ev = text_events(LOG.as_bytes());
    assert_eq!(to_text(&ev), LOG.as_bytes());
    let bin = to_binary(&ev);
    let back = binary_events(&bin);
    assert_eq!(back, ev);
    assert_eq!(to_text(&back), LOG.as_bytes());
    assert_eq!(to_binary(&text_events(&to_text(&back))), bin);
}

#[test]
fn binary_kernel_record_is_tag_0x8b_and_unknown_tags_are_skipped() {
    let k = Event::Kernel(KernelAccess {
        ts_ns: 5,
        dir: Direction::Read,
        len: 3,
        map_id: 2,
        phys: 0x10,
        call: b"write".to_vec(),
        pid: 9,
    });
    let head = to_binary(&[]);
    let bin = to_binary(std::slice::from_ref(&k));
    let rec = &bin[head.len()..];
    // tag, length, ts 5, id zz(2) = 4, phys 0x10, len 3, dir 0, pid 9, "write".
    assert_eq!(rec, b"\x8b\x0b\x05\x04\x10\x03\x00\x09write");
    // A reader meets an unknown record kind (0x8c is the string record now) the way an
    // older v3 reader meets 0x8b.
    let mut skipped = bin.clone();
    skipped[head.len()] = 0xfe;
    assert_eq!(binary_events(&skipped), vec![]);
    // Anything the text cannot carry is refused, not silently changed.
    let mut bad = bin.clone();
    let n = bad.len();
    bad[n - 1] = b'E';
    let mut r = BinaryReader::new(Cursor::new(bad)).unwrap();
    assert!(r.next_event().is_err());
}
