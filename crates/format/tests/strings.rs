//! String records (binary tag 0x8c): one string instruction's run of accesses written as
//! one record, read back as exactly the per-element accesses it stands for (by
//! `next_event` and by `read_batch` of any size), written as the kernel's per-element
//! lines by the text writer, skipped by readers that do not know the tag, refused when
//! damaged.

use std::io::Cursor;

use mmio_trace_format::*;

fn access(dir: Direction, width: u8, ts: u64, id: i64, phys: u64, value: u64) -> Event {
    let mut a = Access::new(dir, width, ts, id, phys, value);
    a.pc = 0x401000;
    a.pid = 77;
    Event::Access(a)
}

/// A `REP STOSQ` of 4096 elements of one value.
fn stosq() -> StringAccesses {
    StringAccesses {
        ts_ns: 2_000,
        pid: 77,
        pc: 0x401234,
        width: 8,
        count: 4096,
        down: false,
        first: Stream {
            dir: Direction::Write,
            map_id: 1,
            phys: 0x1000,
        },
        second: None,
        values: 0x1122_3344_5566_7788u64.to_le_bytes().to_vec(),
        same: true,
    }
}

/// A descending `REP MOVSW` of 5 elements between two mappings.
fn movsw() -> StringAccesses {
    StringAccesses {
        ts_ns: 3_500,
        pid: 78,
        pc: 0x401300,
        width: 2,
        count: 5,
        down: true,
        first: Stream {
            dir: Direction::Read,
            map_id: 1,
            phys: 0x208,
        },
        second: Some(Stream {
            dir: Direction::Write,
            map_id: 2,
            phys: 0x9008,
        }),
        values: (0..10).collect(),
        same: false,
    }
}

/// A `REP LODSB` of 3 elements.
fn lodsb() -> StringAccesses {
    StringAccesses {
        ts_ns: 4_000,
        pid: 77,
        pc: 0x401400,
        width: 1,
        count: 3,
        down: false,
        first: Stream {
            dir: Direction::Read,
            map_id: 1,
            phys: 0x30,
        },
        second: None,
        values: vec![0xa, 0xb, 0xc],
        same: false,
    }
}

enum Item {
    Ev(Event),
    Str(StringAccesses),
}

fn items() -> Vec<Item> {
    let map = Event::Map(Map {
        ts_ns: 1_000,
        id: 1,
        phys: 0,
        virt: 0x7f00_0000_0000,
        len: 0x10000,
        pc: 0x401000,
        pid: 77,
    });
    vec![
        Item::Ev(map),
        Item::Ev(access(Direction::Read, 4, 1_500, 1, 0x40, 0x1010)),
        Item::Str(stosq()),
        Item::Ev(access(Direction::Write, 4, 2_500, 1, 0x44, 0x1011)),
        Item::Str(movsw()),
        Item::Str(lodsb()),
        Item::Ev(access(Direction::Read, 8, 4_500, 1, 0x48, 7)),
    ]
}

/// What every reader must give back: the string runs expanded, in order.
fn expanded() -> Vec<Event> {
    let mut v = vec![];
    for it in items() {
        match it {
            Item::Ev(e) => v.push(e),
            Item::Str(s) => v.extend(s.accesses().map(Event::Access)),
        }
    }
    v
}

fn write(format: Format) -> Vec<u8> {
    let mut w = AnyWriter::new(Vec::new(), format).unwrap();
    for it in items() {
        match it {
            Item::Ev(e) => w.write_event(&e).unwrap(),
            Item::Str(s) => w.write_strings(&s).unwrap(),
        }
    }
    match w {
        AnyWriter::Binary(b) => b.into_inner().unwrap(),
        AnyWriter::Text(t) => t.into_inner().unwrap(),
    }
}

fn read_all(bytes: &[u8]) -> Vec<Event> {
    let r = BinaryReader::new(Cursor::new(bytes.to_vec())).unwrap();
    r.map(|e| e.unwrap()).collect()
}

fn read_batches(bytes: &[u8], max: usize) -> Vec<Event> {
    let mut r = BinaryReader::new(Cursor::new(bytes.to_vec())).unwrap();
    let mut out = vec![];
    let mut all = vec![];
    loop {
        let n = r.read_batch(&mut out, max).unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= max);
        all.extend(out.iter().cloned());
    }
    all
}

#[test]
fn expansion_is_element_by_element() {
    let got: Vec<_> = movsw()
        .accesses()
        .map(|a| (a.dir, a.map_id, a.phys, a.value))
        .collect();
    use Direction::{Read as R, Write as W};
    assert_eq!(
        got,
        vec![
            (R, 1, 0x208, 0x0100),
            (W, 2, 0x9008, 0x0100),
            (R, 1, 0x206, 0x0302),
            (W, 2, 0x9006, 0x0302),
            (R, 1, 0x204, 0x0504),
            (W, 2, 0x9004, 0x0504),
            (R, 1, 0x202, 0x0706),
            (W, 2, 0x9002, 0x0706),
            (R, 1, 0x200, 0x0908),
            (W, 2, 0x9000, 0x0908),
        ]
    );
    assert_eq!(stosq().accesses().count(), 4096);
    assert!(stosq()
        .accesses()
        .enumerate()
        .all(|(k, a)| a.phys == 0x1000 + 8 * k as u64 && a.value == 0x1122_3344_5566_7788));
}

#[test]
fn binary_reads_back_the_accesses_by_event_and_by_batch() {
    let bin = write(Format::Binary);
    let want = expanded();
    assert_eq!(want.len(), 1 + 1 + 4096 + 1 + 10 + 3 + 1);
    assert_eq!(read_all(&bin), want);
    for max in [1, 2, 7, 255, 256, 4096, 10_000] {
        assert_eq!(read_batches(&bin, max), want, "read_batch max {max}");
    }
}

#[test]
fn a_string_record_is_compact() {
    let mut one = BinaryWriter::new(Vec::new()).unwrap();
    let header = one.into_inner().unwrap().len();
    let mut w = BinaryWriter::new(Vec::new()).unwrap();
    w.write_strings(&stosq()).unwrap();
    let size = w.into_inner().unwrap().len() - header;
    // tag, length, ts (2), pid, pc (4), width, flags, count (2), id, phys (2), value (8).
    assert_eq!(size, 1 + 1 + 2 + 1 + 4 + 1 + 1 + 2 + 1 + 2 + 8);
    // The same accesses one by one: at least 2 bytes each (a tag and a size byte).
    let mut w = BinaryWriter::new(Vec::new()).unwrap();
    for a in stosq().accesses() {
        w.write_event(&Event::Access(a)).unwrap();
    }
    let per_element = w.into_inner().unwrap().len() - header;
    assert!(per_element >= 2 * 4096, "{per_element}");
    one = BinaryWriter::new(Vec::new()).unwrap();
    one.write_strings(&movsw()).unwrap();
    let size = one.into_inner().unwrap().len() - header;
    // 10 value bytes and a second stream: still one record.
    assert!(size < 40, "{size}");
}

#[test]
fn text_writer_writes_the_kernel_lines() {
    let text = write(Format::Text);
    let mut w = TextWriter::new(Vec::new());
    for e in expanded() {
        w.write_event(&e).unwrap();
    }
    assert_eq!(
        String::from_utf8(text.clone()).unwrap(),
        String::from_utf8(w.into_inner().unwrap()).unwrap()
    );
    let s = String::from_utf8(text).unwrap();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(
        lines[2],
        "W 8 0.000002 1 0x1000 0x1122334455667788 0x401234 77"
    );
    assert_eq!(
        lines[4097],
        "W 8 0.000002 1 0x8ff8 0x1122334455667788 0x401234 77"
    );
    assert_eq!(lines[4099], "R 2 0.000004 1 0x208 0x100 0x401300 78");
    assert_eq!(lines[4100], "W 2 0.000004 2 0x9008 0x100 0x401300 78");
    // Text read back and written as binary: the same accesses, element by element.
    let mut r = TextReader::new(Cursor::new(s.clone().into_bytes()));
    let mut bw = BinaryWriter::new(Vec::new()).unwrap();
    while let Some(e) = r.next_event().unwrap() {
        bw.write_event(&e).unwrap();
    }
    let bin = bw.into_inner().unwrap();
    let mut t = TextWriter::new(Vec::new());
    for e in read_all(&bin) {
        t.write_event(&e).unwrap();
    }
    assert_eq!(String::from_utf8(t.into_inner().unwrap()).unwrap(), s);
}

/// Offset of the first string record (tag 0x8c after the 0x8b KERNEL of the schema
/// text) in a log written by `write`.
fn first_string_record(bin: &[u8]) -> usize {
    let mut r = BinaryReader::new(Cursor::new(bin.to_vec())).unwrap();
    let header = 14 + r.schema().len();
    let _ = r.next_event();
    // MAP record: tag, length, payload; then the access's block: tag, length, payload.
    let mut at = header;
    for _ in 0..2 {
        at += 1;
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let b = bin[at];
            at += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        at += len;
    }
    assert_eq!(bin[at], 0x8c);
    at
}

#[test]
fn readers_that_do_not_know_the_record_skip_it() {
    let mut bin = write(Format::Binary);
    let at = first_string_record(&bin);
    // As a reader that predates the tag sees it: a record of an unknown kind.
    bin[at] = 0xfe;
    let mut r = BinaryReader::new(Cursor::new(bin)).unwrap();
    let mut got = vec![];
    while let Some(e) = r.next_event().unwrap() {
        got.push(e);
    }
    let mut want = expanded();
    want.drain(2..2 + 4096);
    assert_eq!(got, want);
    assert_eq!(r.unknown_records(), (1, Some(0xfe)));
}

#[test]
fn damaged_string_records_are_errors() {
    let bin = write(Format::Binary);
    let at = first_string_record(&bin);
    // Payload: ts (2 bytes: 2000), pid, pc (4), then width.
    let width_at = at + 2 + 2 + 1 + 4;
    assert_eq!(bin[width_at], 8);
    for (off, byte, what) in [
        (width_at, 3, "width"),
        (width_at + 1, 0x40, "string flags"),
        (width_at + 1, 0, "value bytes"),
    ] {
        let mut b = bin.clone();
        b[off] = byte;
        let r = BinaryReader::new(Cursor::new(b.clone())).unwrap();
        let err = r
            .map(|e| e.map(|_| ()))
            .find_map(|e| e.err())
            .unwrap_or_else(|| panic!("{what}: no error"));
        assert!(err.to_string().contains(what), "{what}: {err}");
        // Lenient reading skips the damaged record (its length is intact).
        let mut r = BinaryReader::new(Cursor::new(b)).unwrap();
        r.set_lenient(true);
        let n = r.inspect(|e| assert!(e.is_ok(), "{what}: {e:?}")).count();
        assert_eq!(n, expanded().len() - 4096, "{what}");
    }
}

#[test]
fn invalid_runs_are_refused_by_the_writer() {
    let mut s = stosq();
    s.same = false;
    let mut w = BinaryWriter::new(Vec::new()).unwrap();
    let e = w.write_strings(&s).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    s = stosq();
    s.count = 0;
    assert!(w.write_strings(&s).is_err());
}
