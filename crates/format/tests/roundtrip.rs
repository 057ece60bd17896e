//! Round trips over real kernel logs and every record kind, in both formats.

use std::io::Write;

use mmio_trace_format::*;

mod common;
use common::{to_binary, to_text};

const E1000: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/e1000-probe.mmiotrace"
);

fn read_all(bytes: Vec<u8>) -> Vec<Event> {
    AnyReader::new(std::io::Cursor::new(bytes))
        .expect("open")
        .collect::<Result<Vec<_>, _>>()
        .expect("parse")
}

#[test]
fn real_e1000_log_round_trips_byte_exactly_through_text_and_binary() {
    let original = std::fs::read(E1000).unwrap();
    let events = read_all(original.clone());
    assert_eq!(events.len(), 13117, "one event per line in this log");
    assert_eq!(to_text(&events), original);
    let bin = to_binary(&events);
    assert_eq!(read_all(bin.clone()), events);
    assert_eq!(to_text(&read_all(bin.clone())), original);
    assert!(
        original.len() >= 3 * bin.len(),
        "binary {} bytes is not 3x smaller than text {}",
        bin.len(),
        original.len()
    );
}

#[test]
fn compressed_logs_are_read_transparently() {
    let original = std::fs::read(E1000).unwrap();
    let expect = read_all(original.clone());

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&original).unwrap();
    assert_eq!(read_all(gz.finish().unwrap()), expect);

    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&original).unwrap();
    assert_eq!(read_all(xz.finish().unwrap()), expect);

    let zst = zstd::encode_all(&original[..], 1).unwrap();
    assert_eq!(read_all(zst), expect);

    let bin = to_binary(&expect);
    let zst = zstd::encode_all(&bin[..], 1).unwrap();
    assert_eq!(read_all(zst), expect);
}

#[test]
fn marker_text_with_embedded_newlines_is_one_event_and_round_trips() {
    let log = b"VERSION 20070824\nMARK 1.000000 first line\nsecond line\n\nMARK 2.000000 next\nR 4 2.000001 1 0x10 0x1 0x0 0\nMARK 3.000000 last\ntail\n";
    let events = read_all(log.to_vec());
    assert_eq!(
        events,
        vec![
            Event::Version(b"20070824".to_vec()),
            Event::Mark(Mark {
                ts_ns: 1_000_000_000,
                text: b"first line\nsecond line\n".to_vec()
            }),
            Event::Mark(Mark {
                ts_ns: 2_000_000_000,
                text: b"next".to_vec()
            }),
            Event::Access(Access::new(Direction::Read, 4, 2_000_001_000, 1, 0x10, 1)),
            Event::Mark(Mark {
                ts_ns: 3_000_000_000,
                text: b"last\ntail".to_vec()
            }),
        ]
    );
    assert_eq!(to_text(&events), log);
    assert_eq!(read_all(to_binary(&events)), events);
    // Without its last newline the log was cut short, maybe inside the marker's
    // text: the marker comes first, then the error.
    let cut = &log[..log.len() - 1];
    let mut r = AnyReader::new(std::io::Cursor::new(cut.to_vec())).unwrap();
    let got: Vec<_> = r.by_ref().take(4).collect::<Result<_, _>>().unwrap();
    assert_eq!(got, events[..4]);
    assert_eq!(
        r.next_event().unwrap(),
        Some(Event::Mark(Mark {
            ts_ns: 3_000_000_000,
            text: b"last".to_vec()
        }))
    );
    assert_eq!(
        r.next_event().unwrap_err().to_string(),
        "line 8, column 5: expected a newline ending the line, found the end of the log (cut short?)"
    );
}

#[test]
fn every_event_kind_survives_binary_including_wide_accesses_and_thread_ids() {
    let bytes: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    let mut wide = Access::from_bytes(Direction::Write, 7_123_456_789, 3, 0xfe00_0000, &bytes);
    wide.pc = 0x5555_5555_1234;
    wide.pid = 4242;
    let mut odd = Access::new(Direction::Read, 3, 7_123_456_790, 3, 0xfe00_0040, 0xabcdef);
    odd.pid = 4243;
    let events = vec![
        Event::Version(b"20070824".to_vec()),
        Event::PciDev(Box::new(PciDev {
            bus: 1,
            devfn: 0,
            vendor: 0x10de,
            device: 0x1b80,
            irq: 16,
            starts: [0xf6000000, 0xe000000c, 0, 0xf000000c, 0, 0xe001, 0],
            sizes: [0x1000000, 0x10000000, 0, 0x2000000, 0, 0x80, 0],
            driver: Some(b"nvidia".to_vec()),
        })),
        Event::PciDev(Box::new(PciDev {
            bus: 0,
            devfn: 0,
            vendor: 0x8086,
            device: 0x3e30,
            irq: 0,
            starts: [0; 7],
            sizes: [0; 7],
            driver: None,
        })),
        Event::Map(Map {
            ts_ns: 5,
            id: 7,
            phys: 1,
            virt: 2,
            len: 3,
            pc: 4,
            pid: 5,
        }),
        Event::Access(wide.clone()),
        Event::Access(odd),
        Event::Access(Access::new(Direction::Read, 8, 1, -1, u64::MAX, u64::MAX)),
        Event::Unknown(Unknown {
            ts_ns: 9,
            map_id: 7,
            phys: 8,
            opcode: [0xf3, 0x48, 0xa5],
            pc: 1,
            pid: 2,
        }),
        Event::Mark(Mark {
            ts_ns: 10,
            text: vec![0xff, b'\n', 0],
        }),
        Event::LostEvents(12),
        Event::CpuLost {
            cpu: 1,
            count: Some(0),
        },
        Event::CpuLost {
            cpu: 2,
            count: None,
        },
        Event::Unmap(Unmap {
            ts_ns: 11,
            id: -1,
            pc: 0,
            pid: 0,
        }),
        Event::Verbatim(b"# tracer: mmiotrace".to_vec()),
    ];
    assert_eq!(read_all(to_binary(&events)), events);
}

#[test]
fn strict_reader_names_line_and_column_and_lenient_reader_counts_skips() {
    let log = b"VERSION 20070824\nR 4 1.000000 1 0x10 0x1 0x0 0\nR 4 1.000000 1 0x10 0xZZ 0x0 0\nW 4 1.000001 1 0x10 0x2 0x0 0\n".to_vec();
    let mut r = AnyReader::new(std::io::Cursor::new(log.clone())).unwrap();
    let err = r.by_ref().find_map(|e| e.err()).unwrap();
    let p = err.as_parse().unwrap();
    assert_eq!((p.line, p.column), (3, 23));
    assert!(p.expected.starts_with("value"), "{p}");

    let mut r = AnyReader::new(std::io::Cursor::new(log)).unwrap();
    r.set_lenient(true);
    let events: Vec<_> = r.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(r.skipped(), 1);
    assert_eq!(r.first_error().unwrap().line, 3);
}

#[test]
fn truncated_or_damaged_binary_is_an_error_not_a_panic() {
    let events = read_all(std::fs::read(E1000).unwrap());
    let bin = to_binary(&events[..200]);
    for cut in [15, 100, bin.len() - 1] {
        let res: Result<Vec<_>, _> =
            AnyReader::new(std::io::Cursor::new(bin[..cut].to_vec())).and_then(|r| r.collect());
        assert!(res.is_err(), "cut at {cut} must be reported");
    }
    let mut bad = bin.clone();
    let hdr = 14 + binary::SCHEMA.len();
    bad[hdr] = 0x00;
    let res: Result<Vec<_>, _> = AnyReader::new(std::io::Cursor::new(bad)).unwrap().collect();
    let e = res.unwrap_err();
    assert!(e.to_string().contains("record tag"), "{e}");
}
