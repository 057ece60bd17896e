//! Lenient reading of logs cut at every byte: what is read is exactly the events of
//! the complete part (never a changed one), the damage is reported where it is, and
//! batches and single events agree.

use mmio_trace_format::*;

/// A user-space log of `n` accesses of every width, with a marker half way.
fn log_events(n: u64) -> Vec<Event> {
    let mut events = vec![Event::Version(b"20070824".to_vec())];
    events.push(Event::Map(Map {
        ts_ns: 1_000_000_000,
        id: 1,
        phys: 0xfeb4_0000,
        virt: 0x7f00_0000_1000,
        len: 0x2_0000,
        pc: 0x401000,
        pid: 77,
    }));
    for i in 0..n {
        let dir = if i % 3 == 0 {
            Direction::Write
        } else {
            Direction::Read
        };
        let width = [1u8, 2, 4, 8][(i % 4) as usize];
        let value =
            0x0123_4567_89ab_cdefu64.rotate_left(i as u32) & (u64::MAX >> (64 - 8 * width as u32));
        let mut a = Access::new(
            dir,
            width,
            1_000_001_000 + i * 1000,
            1,
            0xfeb4_0000 + (i % 32) * 8,
            value,
        );
        a.pc = 0x401000 + (i % 7) * 4;
        a.pid = 77 + (i % 2) as u32;
        events.push(Event::Access(a));
        if i == n / 2 {
            events.push(Event::Mark(Mark {
                ts_ns: 1_000_002_000 + n / 2 * 1000,
                text: b"half way".to_vec(),
            }));
        }
    }
    events.push(Event::Unmap(Unmap {
        ts_ns: 2_000_000_000,
        id: 1,
        pc: 0,
        pid: 77,
    }));
    events
}

/// Every event of `bytes` read leniently in batches of `max`, the stop, the skipped
/// count; and the same one event at a time, which must agree.
fn lenient(bytes: &[u8], max: usize) -> (Vec<Event>, Option<Stop>, u64) {
    let mut r = AnyReader::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    r.set_lenient(true);
    let (mut events, mut out) = (Vec::new(), Vec::new());
    while r.read_batch(&mut out, max).unwrap() > 0 {
        events.extend(out.iter().cloned());
    }
    let got = (events, r.stop().cloned(), r.skipped());
    let mut r = AnyReader::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    r.set_lenient(true);
    let one: Vec<Event> = r.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        (&one, r.stop(), r.skipped()),
        (&got.0, got.1.as_ref(), got.2)
    );
    got
}

#[test]
fn a_binary_log_cut_at_any_byte_reads_a_prefix_of_its_events_and_says_where_it_stopped() {
    // More than one access block (255 accesses each).
    let events = log_events(300);
    let mut w = BinaryWriter::new(Vec::new()).unwrap();
    for e in &events {
        w.write_event(e).unwrap();
    }
    let bytes = w.into_inner().unwrap();
    let header = 14 + schema_len(&bytes);
    let mut stops = 0;
    // From just after the magic (which makes it a binary log): cuts in the header too.
    for cut in 8..=bytes.len() {
        let part = &bytes[..cut];
        let (got, stop, skipped) = lenient(part, 64);
        assert_eq!(skipped, 0, "cut {cut}");
        assert!(got.len() <= events.len(), "cut {cut}");
        assert_eq!(got[..], events[..got.len()], "cut {cut}: not a prefix");
        // Strict reading gives the same events, then the error the stop holds.
        let mut r = AnyReader::new(std::io::Cursor::new(part.to_vec())).unwrap();
        let mut strict = Vec::new();
        let err = loop {
            match r.next_event() {
                Ok(Some(e)) => strict.push(e),
                Ok(None) => break None,
                Err(e) => break Some(e.as_parse().expect("a parse error").clone()),
            }
        };
        assert_eq!(strict, got, "cut {cut}");
        match (err, stop) {
            (None, None) => {}
            (Some(e), Some(s)) => {
                assert_eq!(s.unread_bytes, Some(cut as u64 - e.column), "cut {cut}");
                assert!(e.column <= cut as u64, "cut {cut}");
                if cut > header {
                    assert!(
                        e.column >= header as u64 && e.column < cut as u64,
                        "cut {cut}"
                    );
                }
                assert_eq!(s.error, e, "cut {cut}");
                stops += 1;
            }
            (e, s) => panic!("cut {cut}: strict {e:?}, lenient {s:?}"),
        }
        if cut == bytes.len() {
            assert_eq!(got, events);
        }
    }
    // Nearly every cut is inside a record.
    assert!(stops > (bytes.len() - 8) * 9 / 10, "{stops}");
}

/// The schema length in a binary log's header.
fn schema_len(bytes: &[u8]) -> usize {
    u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize
}

#[test]
fn a_text_log_cut_at_any_byte_reads_the_events_of_its_complete_lines() {
    // More than one batch of 100.
    let events = log_events(120);
    let mut w = TextWriter::new(Vec::new());
    for e in &events {
        w.write_event(e).unwrap();
    }
    let bytes = w.into_inner().unwrap();
    for cut in 0..=bytes.len() {
        let part = &bytes[..cut];
        let complete = part.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let want: Vec<Event> = AnyReader::new(std::io::Cursor::new(part[..complete].to_vec()))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let (got, stop, skipped) = lenient(part, 100);
        assert_eq!(got, want, "cut {cut}");
        assert_eq!(stop, None, "cut {cut}");
        assert_eq!(skipped, u64::from(complete < cut), "cut {cut}");
        assert_eq!(got[..], events[..got.len()], "cut {cut}: not a prefix");
    }
}
