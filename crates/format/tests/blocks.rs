//! Binary format v2: access blocks. Exact events across block boundaries and around
//! every other kind of record, the exact bytes of a block, flushes in the middle of a
//! block, version 1 logs still read, and every kind of damaged block is an error that
//! delivers none of the block's accesses, the same through `next_event` and
//! `read_batch`.

use std::cell::RefCell;
use std::io::{Cursor, Write};
use std::rc::Rc;

use mmio_trace_format::*;

const E1000_TEXT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/e1000-probe.mmiotrace"
);
/// The e1000 log converted to binary by the version 1 writer
/// (`mmio-trace convert --to binary`, before access blocks existed).
const E1000_V1: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/e1000-probe.v1.mmtb"
);

type Outcome = (Vec<Event>, Option<ParseError>);

fn parse_error(e: Error) -> ParseError {
    e.as_parse()
        .cloned()
        .unwrap_or_else(|| panic!("not a parse error: {e}"))
}

fn by_event(data: &[u8]) -> Outcome {
    let mut r = BinaryReader::new(Cursor::new(data.to_vec())).unwrap();
    let mut events = Vec::new();
    loop {
        match r.next_event() {
            Ok(Some(e)) => events.push(e),
            Ok(None) => return (events, None),
            Err(e) => return (events, Some(parse_error(e))),
        }
    }
}

fn by_batch(data: &[u8], max: usize, out: &mut Vec<Event>) -> Outcome {
    let mut r = BinaryReader::new(Cursor::new(data.to_vec())).unwrap();
    let mut events = Vec::new();
    loop {
        match r.read_batch(out, max) {
            Ok(0) => return (events, None),
            Ok(n) => {
                assert_eq!(n, out.len());
                assert!(n <= max);
                events.extend(out.iter().cloned());
            }
            Err(e) => {
                events.extend(out.iter().cloned());
                return (events, Some(parse_error(e)));
            }
        }
    }
}

/// What `next_event` gives, checked to be what `read_batch` gives for several batch
/// sizes (smaller and larger than a block) and reused `Vec`s holding other events.
fn read_both(data: &[u8]) -> Outcome {
    let expect = by_event(data);
    let stale = [
        Event::LostEvents(1),
        Event::Access(Access::from_bytes(Direction::Write, 1, 2, 3, &[7; 32])),
        Event::Access(Access::new(Direction::Read, 4, 1, 2, 3, 4)),
    ];
    for max in [1, 2, 7, 254, 255, 256, 257, 1000] {
        for held in [0, 1, 3] {
            let mut out = stale[..held].to_vec();
            assert_eq!(by_batch(data, max, &mut out), expect, "max {max}");
        }
    }
    expect
}

fn write(events: &[Event]) -> Vec<u8> {
    let mut w = BinaryWriter::new(Vec::new()).unwrap();
    for e in events {
        w.write_event(e).unwrap();
    }
    w.into_inner().unwrap()
}

fn header() -> Vec<u8> {
    write(&[])
}

/// The records after the header: (tag, access count for blocks, offset of the tag);
/// only for logs without stand-alone access records (those carry no length).
fn records(log: &[u8]) -> Vec<(u8, usize, usize)> {
    // Magic, version, schema length, schema (whose length differs by version).
    let mut pos = 14 + u32::from_le_bytes(log[10..14].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    while pos < log.len() {
        let (tag, at) = (log[pos], pos);
        assert!(tag >= 0x80, "access record at {pos}");
        pos += 1;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = log[pos];
            pos += 1;
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        // Access blocks: 0x89, and 0x8a with context bytes.
        let count = if matches!(tag, 0x89 | 0x8a) {
            log[pos] as usize
        } else {
            0
        };
        out.push((tag, count, at));
        pos += len;
    }
    assert_eq!(pos, log.len());
    out
}

/// `n` accesses of 4 bytes with varied times, addresses and values; every 7th a write
/// of 1 byte, every 11th of 8 bytes, every 13th of 2.
fn accesses(n: usize, seed: u64) -> Vec<Event> {
    let mut x = seed | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let width = match i {
                _ if i % 7 == 0 => 1,
                _ if i % 11 == 0 => 8,
                _ if i % 13 == 0 => 2,
                _ => 4,
            };
            let dir = if x & 1 == 0 {
                Direction::Read
            } else {
                Direction::Write
            };
            let value = if width == 8 {
                x
            } else {
                x & ((1 << (8 * width)) - 1)
            };
            // Microsecond and nanosecond steps, some backwards.
            let ts = 1_000_000 + i as u64 * 1000 + (x >> 60) * 7 * (i as u64 % 3);
            let a = Access::new(dir, width, ts, 1, 0xfe00_0000 + (x >> 40 & 0xfffc), value);
            Event::Access(a)
        })
        .collect()
}

fn mark(ts_ns: u64, text: &str) -> Event {
    Event::Mark(Mark {
        ts_ns,
        text: text.as_bytes().to_vec(),
    })
}

#[test]
fn version_1_log_still_reads_to_the_events_of_the_text_log() {
    let text = std::fs::read(E1000_TEXT).unwrap();
    let expect: Vec<Event> = TextReader::new(&text[..])
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(expect.len(), 13117);
    let v1 = std::fs::read(E1000_V1).unwrap();
    assert_eq!(v1[8..10], [1, 0], "the fixture is a version 1 log");
    let r = BinaryReader::new(Cursor::new(v1.clone())).unwrap();
    assert_eq!(r.version(), 1);
    assert!(r.schema().starts_with("mmio-trace binary log v1."));
    assert_eq!(read_both(&v1), (expect.clone(), None));

    // Rewritten by this version: the same events in blocks, within 1% of the size.
    let v2 = write(&expect);
    assert_eq!(v2[8..10], [3, 0]);
    assert_eq!(read_both(&v2), (expect, None));
    let schema1 = u32::from_le_bytes(v1[10..14].try_into().unwrap()) as usize;
    let (body1, body2) = (
        v1.len() - 14 - schema1,
        v2.len() - 14 - binary::SCHEMA.len(),
    );
    assert!(
        body2 * 100 <= body1 * 101,
        "v2 {body2} bytes, v1 about {body1}"
    );
}

#[test]
fn block_bytes_are_count_tags_sizes_then_fields() {
    let events = vec![
        Event::Access(Access::new(Direction::Read, 4, 1000, 0, 0x10, 5)),
        Event::Access(Access::new(Direction::Write, 1, 2000, 0, 0x14, 0xff)),
    ];
    let log = write(&events);
    let hdr = header().len();
    #[rustfmt::skip]
    let block = [
        0x89, 11, // tag, payload length
        2, // accesses
        0x12, 0x18, // R width 4, W width 1
        0x24, 0x24, // 1-byte time, address and value each
        0x05, 0x20, 0x05, // +1 us, +0x10, 5
        0x05, 0x08, 0xff, // +1 us, +4, 0xff
    ];
    assert_eq!(log[hdr..], block);
    assert_eq!(read_both(&log), (events, None));
}

#[test]
fn blocks_split_at_255_accesses_and_deltas_run_across_them() {
    for (n, counts) in [
        (1, vec![1]),
        (254, vec![254]),
        (255, vec![255]),
        (256, vec![255, 1]),
        (257, vec![255, 2]),
        (511, vec![255, 255, 1]),
    ] {
        let mut events = vec![mark(1, "start")];
        events.extend(accesses(n, n as u64));
        let log = write(&events);
        let blocks: Vec<usize> = records(&log)
            .iter()
            .filter(|r| matches!(r.0, 0x89 | 0x8a))
            .map(|r| r.1)
            .collect();
        assert_eq!(blocks, counts, "{n} accesses");
        assert_eq!(read_both(&log), (events, None), "{n} accesses");
    }
}

#[test]
fn other_records_wide_accesses_and_state_changes_close_or_enter_blocks() {
    let mut events = vec![
        Event::Version(b"20070824".to_vec()),
        Event::Map(Map {
            ts_ns: 5,
            id: 1,
            phys: 0xfe00_0000,
            virt: 0x7f00_0000_0000,
            len: 0x1_0000,
            pc: 0,
            pid: 0,
        }),
    ];
    let mut acc = accesses(900, 99).into_iter();
    let mut next = |events: &mut Vec<Event>, k: usize| events.extend(acc.by_ref().take(k));
    next(&mut events, 10);
    events.push(mark(2_000_000, "a marker"));
    next(&mut events, 300);
    for width in [16usize, 32, 64] {
        let bytes: Vec<u8> = (0..width as u8).map(|b| b.wrapping_mul(31)).collect();
        events.push(Event::Access(Access::from_bytes(
            Direction::Write,
            3_000_000 + width as u64,
            1,
            0xfe00_1000,
            &bytes,
        )));
        next(&mut events, 3);
    }
    // A width that is no power of two takes a stand-alone record too.
    events.push(Event::Access(Access::new(
        Direction::Read,
        3,
        3_100_000,
        1,
        0xfe00_0003,
        0xabcdef,
    )));
    next(&mut events, 100);
    events.push(Event::Map(Map {
        ts_ns: 3_200_000,
        id: 2,
        phys: 0xfd00_0000,
        virt: 0x7f00_1000_0000,
        len: 0x1000,
        pc: 1,
        pid: 2,
    }));
    next(&mut events, 400);
    events.push(Event::LostEvents(3));
    events.push(Event::Unmap(Unmap {
        ts_ns: 9_000_000,
        id: 2,
        pc: 0,
        pid: 0,
    }));
    // Map id, pc and pid changing inside blocks: their varints, extreme values
    // included.
    for (i, ev) in events.iter_mut().enumerate() {
        if let Event::Access(a) = ev {
            if a.wide.is_some() {
                continue;
            }
            match i % 9 {
                1 => a.map_id = 2,
                2 => a.map_id = -1,
                3 => a.pc = 0x5555_dead_beef + i as u64,
                4 => a.pid = 4242,
                5 => (a.pc, a.pid) = (u64::MAX, u32::MAX),
                6 => (a.map_id, a.pc, a.pid) = (i64::MIN, 0, 1),
                _ => {}
            }
        }
    }
    let log = write(&events);
    assert_eq!(read_both(&log), (events, None));
}

/// A `Write` whose bytes stay readable while a writer owns it.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn flush_writes_out_the_open_block_and_later_accesses_continue_the_deltas() {
    let events = accesses(700, 7);
    let out = Shared::default();
    let mut w = BinaryWriter::new(out.clone()).unwrap();
    for e in &events[..100] {
        w.write_event(e).unwrap();
    }
    w.flush().unwrap();
    // Everything written so far is on "disk", complete.
    assert_eq!(read_both(&out.0.borrow()), (events[..100].to_vec(), None));
    for e in &events[100..400] {
        w.write_event(e).unwrap();
    }
    w.flush().unwrap();
    w.flush().unwrap();
    assert_eq!(read_both(&out.0.borrow()), (events[..400].to_vec(), None));
    for e in &events[400..] {
        w.write_event(e).unwrap();
    }
    w.into_inner().unwrap();
    let log = out.0.borrow().clone();
    let counts: Vec<usize> = records(&log).iter().map(|r| r.1).collect();
    assert_eq!(counts, [100, 255, 45, 255, 45]);
    assert_eq!(read_both(&log), (events, None));
}

/// A log of a marker and then `block` (raw bytes from its tag on): the marker's
/// event, and the block's offset in the log.
fn with_block(block: &[u8]) -> (Vec<u8>, Event, usize) {
    let m = mark(5, "m");
    let mut log = write(std::slice::from_ref(&m));
    let at = log.len();
    log.extend_from_slice(block);
    (log, m, at)
}

/// A block of `tags`, `sizes` and `data` with a correct length.
fn block(tags: &[u8], sizes: &[u8], data: &[u8]) -> Vec<u8> {
    let len = 1 + tags.len() + sizes.len() + data.len();
    assert!(len < 128);
    let mut b = vec![0x89, len as u8, tags.len() as u8];
    b.extend_from_slice(tags);
    b.extend_from_slice(sizes);
    b.extend_from_slice(data);
    b
}

/// Reads `block` after a marker: the marker and an error at record `line` (the marker
/// is record 1), `offset` bytes into the block, expecting `expected`.
fn damaged(block: &[u8], line: u64, offset: usize, expected: &str) {
    let (log, m, at) = with_block(block);
    let (events, err) = read_both(&log);
    assert_eq!(events, [m], "none of a damaged block's accesses");
    let err = err.expect("an error");
    assert!(err.binary);
    assert_eq!(
        (err.line, err.column, err.expected.as_str()),
        (line, (at + offset) as u64, expected),
        "{err}"
    );
}

#[test]
fn a_good_block_after_a_marker_reads() {
    let good = block(&[0x12, 0x18], &[0x24, 0x24], &[5, 0x20, 5, 5, 8, 0xff]);
    let (log, m, _) = with_block(&good);
    let a = Access::new(Direction::Read, 4, 1000, 0, 0x10, 5);
    let b = Access::new(Direction::Write, 1, 2000, 0, 0x14, 0xff);
    let expect = vec![m, Event::Access(a), Event::Access(b)];
    assert_eq!(read_both(&log), (expect, None));
}

#[test]
fn damaged_blocks_are_errors_and_deliver_none_of_their_accesses() {
    let sizes = [0x24, 0x24];
    let data = [5, 0x20, 5, 5, 8, 0xff];
    // No accesses.
    damaged(&[0x89, 1, 0], 2, 2, "an access count of 1..=255");
    damaged(&[0x89, 0], 2, 2, "an access count of 1..=255");
    // Too short for the tags and sizes it announces.
    damaged(
        &[0x89, 4, 2, 0x12, 0x18, 0x24],
        2,
        0,
        "a block length that holds its accesses' tags and size bytes",
    );
    // Longer than any block can be.
    damaged(
        &[0x89, 0xca, 0x6f], // 14282
        2,
        0,
        "an access block of at most 14281 bytes",
    );
    // Cut short by the end of the file.
    let good = block(&[0x12, 0x18], &sizes, &data);
    damaged(
        &good[..good.len() - 1],
        2,
        0,
        "the rest of a record (file truncated?)",
    );
    // A tag that is no narrow access: wide, odd width, another record, reserved.
    for tag in [0x14, 0x17, 0x85, 0x05] {
        let b = block(&[0x12, tag], &sizes, &data);
        damaged(&b, 3, 4, "an access tag of width 1, 2, 4 or 8 in a block");
    }
    // Data one byte longer than the fields: the offset of the extra byte.
    let mut extra = data.to_vec();
    extra.push(0);
    damaged(
        &block(&[0x12, 0x18], &sizes, &extra),
        3,
        2 + 5 + 6,
        "the end of the block's data after its accesses' fields",
    );
    // Data one byte short: the second access's fields run past the end.
    damaged(
        &block(&[0x12, 0x18], &sizes, &data[..5]),
        3,
        2 + 5 + 3,
        "an access's fields inside its block",
    );
    // A microsecond delta whose nanoseconds overflow 64 bits (8-byte time field).
    let mut big = vec![0xff; 8];
    big.extend_from_slice(&[0x20, 5]);
    damaged(
        &block(&[0x12], &[0x27], &big),
        2,
        2 + 3,
        "a time delta that fits in 64 bits",
    );
    // A map-id varint of 11 bytes, one of 10 bytes that overflows 64 bits (the same
    // error: the 10th byte may only be 0 or 1), one cut by the end of the block.
    let mut long = vec![5, 0x20, 5];
    long.extend_from_slice(&[0x80; 10]);
    long.push(0);
    damaged(
        &block(&[0x12, 0x32], &sizes, &[&data[..3], &long[..]].concat()),
        3,
        2 + 5 + 3 + 3,
        "a varint that fits in 64 bits",
    );
    let mut wide = vec![5, 0x20, 5];
    wide.extend_from_slice(&[0xff; 9]);
    wide.push(0x02);
    damaged(
        &block(&[0x32], &[0x24], &wide),
        2,
        2 + 3 + 3,
        "a varint that fits in 64 bits",
    );
    damaged(
        &block(&[0x32], &[0x24], &[5, 0x20, 5, 0x80]),
        2,
        2 + 3 + 3,
        "a varint, not the end of the record",
    );
    // A pid of 2^32.
    damaged(
        &block(
            &[0x12, 0x58],
            &sizes,
            &[5, 0x20, 5, 5, 8, 0xff, 0, 0x80, 0x80, 0x80, 0x80, 0x10],
        ),
        3,
        2 + 5 + 6 + 1,
        "a pid that fits in 32 bits",
    );
}

#[test]
fn a_block_damaged_after_good_ones_keeps_the_good_ones() {
    let events = accesses(600, 3);
    let log = write(&events);
    let recs = records(&log);
    assert_eq!(recs.iter().map(|r| r.1).collect::<Vec<_>>(), [255, 255, 90]);
    // The third block's last data byte removed, its length adjusted.
    let third = recs[2].2;
    let payload = &log[third + 3..log.len() - 1];
    assert!(
        (128..16384).contains(&(payload.len() + 1)),
        "a 2-byte length"
    );
    let mut bad = log[..third].to_vec();
    bad.extend_from_slice(&[0x89, payload.len() as u8 | 0x80, (payload.len() >> 7) as u8]);
    bad.extend_from_slice(payload);
    let (got, err) = read_both(&bad);
    assert_eq!(got, events[..510]);
    let err = err.unwrap();
    assert_eq!(err.expected, "an access's fields inside its block");
    assert_eq!(err.line, 600);
}

fn with_context(mut a: Access, pc: u64, pid: u32) -> Event {
    a.pc = pc;
    a.pid = pid;
    Event::Access(a)
}

#[test]
fn context_block_bytes_size_map_pc_and_pid_by_context_bytes() {
    let events = vec![
        with_context(Access::new(Direction::Read, 4, 1000, 1, 0x10, 5), 0x400, 7),
        with_context(
            Access::new(Direction::Write, 1, 2000, 1, 0x14, 0xff),
            0x404,
            7,
        ),
    ];
    let log = write(&events);
    let hdr = header().len();
    #[rustfmt::skip]
    let block = [
        0x8a, 18, // tag, payload length
        2, // accesses
        0x72, 0x58, // R width 4 with M and C, W width 1 with C
        0x24, 0x24, // 1-byte time, address and value each
        0x51, // map delta 1 byte, pc delta 2 bytes, pid 1 byte
        0x08, // pc delta 1 byte (map and pid unchanged)
        0x05, 0x20, 0x05, 0x02, 0x00, 0x08, 0x07, // +1 us, +0x10, 5; map +1, pc +0x400, pid 7
        0x05, 0x08, 0xff, 0x08, // +1 us, +4, 0xff; pc +4
    ];
    assert_eq!(log[hdr..], block);
    assert_eq!(read_both(&log), (events, None));
}

#[test]
fn context_blocks_carry_every_pc_pid_and_map_change() {
    let pids = [0, 0xff, 0x100, 0xffff, 0x1_0000, u32::MAX, 1, 1];
    let pcs = [
        0,
        u64::MAX,
        0x7f00_0000_0000,
        1 << 63,
        0x55b5_14b6_8013,
        2,
        1,
        1,
    ];
    let maps = [1, i64::MIN, i64::MAX, -1, 0, 5, 5, 6];
    let mut events = Vec::new();
    for i in 0..600 {
        let a = Access::new(
            if i % 3 == 0 {
                Direction::Write
            } else {
                Direction::Read
            },
            [1, 2, 4, 8][i % 4],
            1000 * i as u64 + (i as u64 % 5),
            maps[(i % 8) ^ (i / 8 % 8)],
            0xfea0_0000 + 4 * (i as u64 % 97),
            (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (8 * (8 - [1, 2, 4, 8][i % 4])),
        );
        events.push(with_context(a, pcs[i / 3 % 8], pids[i % 7 % 8]));
    }
    let log = write(&events);
    let kinds: Vec<(u8, usize)> = records(&log).iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(kinds, [(0x8a, 255), (0x8a, 255), (0x8a, 90)]);
    assert_eq!(read_both(&log), (events, None));
}

#[test]
fn context_blocks_across_the_readers_buffer_refills() {
    // About 1.3 MB: blocks straddle the readers' 256 KiB reads, and `next_event` and
    // `read_batch` meet them at different points.
    let events: Vec<Event> = (0..120_000u64)
        .map(|i| {
            with_context(
                Access::new(
                    Direction::Read,
                    4,
                    1000 * i,
                    1,
                    0xfea0_0000 + 4 * (i % 1000),
                    i,
                ),
                0x55b5_14b6_8000 + 7 * (i % 61),
                29029 + (i % 3) as u32,
            )
        })
        .collect();
    let log = write(&events);
    assert!(log.len() > 1 << 20, "{}", log.len());
    let (got, err) = read_both(&log);
    assert_eq!(err, None);
    assert_eq!(got.len(), events.len());
    if let Some(i) = (0..got.len()).find(|&i| got[i] != events[i]) {
        panic!("event {i}: {:?}, written {:?}", got[i], events[i]);
    }
}

#[test]
fn version_2_log_with_varint_blocks_still_reads() {
    // A VERSION line and 599 accesses of a user-space recording (pc and thread change
    // on nearly every one), written by version 2, whose blocks carry those changes as
    // varints.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
    let text = std::fs::read(format!("{dir}user-snippet.mmiotrace")).unwrap();
    let expect: Vec<Event> = TextReader::new(&text[..])
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(expect.len(), 600);
    let v2 = std::fs::read(format!("{dir}user-snippet.v2.mmtb")).unwrap();
    assert_eq!(v2[8..10], [2, 0], "the fixture is a version 2 log");
    let kinds: Vec<(u8, usize)> = records(&v2).iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(kinds, [(0x80, 0), (0x89, 255), (0x89, 255), (0x89, 89)]);
    assert_eq!(read_both(&v2), (expect.clone(), None));
    // This version writes them as context blocks, smaller.
    let v3 = write(&expect);
    let kinds: Vec<(u8, usize)> = records(&v3).iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(kinds, [(0x80, 0), (0x8a, 255), (0x8a, 255), (0x8a, 89)]);
    // The records, without the header (whose schema text grows with every record kind).
    let body = |l: &[u8]| l.len() - 14 - u32::from_le_bytes(l[10..14].try_into().unwrap()) as usize;
    assert!(body(&v3) < body(&v2), "{} {}", body(&v3), body(&v2));
    assert_eq!(read_both(&v3), (expect, None));
}

#[test]
fn damaged_context_blocks_are_errors() {
    // One access with M and C, but no room for its context byte.
    damaged(
        &[0x8a, 3, 1, 0x72, 0x24],
        2,
        5,
        "a block length that holds its accesses' context bytes",
    );
    // Its context byte asks for 4 bytes of fields; 2 are there.
    damaged(
        &[0x8a, 9, 1, 0x72, 0x24, 0x51, 0x05, 0x20, 0x05, 0x02, 0x00],
        2,
        9,
        "an access's context fields inside its block",
    );
}
