//! `read_batch` gives exactly what `next_event` gives: the same events, and the same
//! error at the same place, on intact and damaged logs of both formats, whatever the
//! batch size and whatever the reused `Vec` held before.

use mmio_trace_format::*;

const E1000: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/e1000-probe.mmiotrace"
);

type Outcome = (Vec<Event>, Option<String>);

fn by_event(data: &[u8], lenient: bool) -> Outcome {
    let Ok(mut r) = AnyReader::new(std::io::Cursor::new(data.to_vec())) else {
        return (Vec::new(), Some("open".into()));
    };
    r.set_lenient(lenient);
    let mut events = Vec::new();
    loop {
        match r.next_event() {
            Ok(Some(e)) => events.push(e),
            Ok(None) => return (events, None),
            Err(e) => return (events, Some(e.to_string())),
        }
    }
}

fn by_batch(data: &[u8], lenient: bool, max: usize, out: &mut Vec<Event>) -> Outcome {
    let Ok(mut r) = AnyReader::new(std::io::Cursor::new(data.to_vec())) else {
        return (Vec::new(), Some("open".into()));
    };
    r.set_lenient(lenient);
    let mut events = Vec::new();
    loop {
        match r.read_batch(out, max) {
            Ok(0) => return (events, None),
            Ok(n) => {
                assert_eq!(n, out.len());
                events.extend(out.iter().cloned());
            }
            Err(e) => {
                events.extend(out.iter().cloned());
                return (events, Some(e.to_string()));
            }
        }
    }
}

/// The e1000 log's start with user-space additions: thread ids, program counters
/// (some of 16 digits), several maps, wide accesses, markers with continuation lines.
fn varied_events() -> Vec<Event> {
    let text = std::fs::read(E1000).unwrap();
    let mut events: Vec<Event> = TextReader::new(&text[..])
        .take(700)
        .collect::<Result<_, _>>()
        .unwrap();
    for (i, ev) in events.iter_mut().enumerate() {
        if let Event::Access(a) = ev {
            match i % 11 {
                1 => a.pid = 4242,
                2 => a.pc = 0xffff_ffff_c0a3_1f2e,
                3 => a.pc = 0x5555_dead_beef + i as u64,
                4 => a.map_id = 2,
                5 => {
                    let bytes: Vec<u8> = (0..16).map(|b| (b * i) as u8).collect();
                    let mut w = Access::from_bytes(a.dir, a.ts_ns, a.map_id, a.phys, &bytes);
                    w.pid = 7;
                    *a = w;
                }
                6 => a.ts_ns += 123,
                _ => {}
            }
        }
        if i % 97 == 0 {
            *ev = Event::Mark(Mark {
                ts_ns: ev.ts_ns().unwrap_or(0),
                text: b"two\nlines".to_vec(),
            });
        }
    }
    events
}

fn logs() -> Vec<Vec<u8>> {
    let events = varied_events();
    let mut text = TextWriter::new(Vec::new());
    let mut bin = BinaryWriter::new(Vec::new()).unwrap();
    for e in &events {
        text.write_event(e).unwrap();
        bin.write_event(e).unwrap();
    }
    vec![text.into_inner().unwrap(), bin.into_inner().unwrap()]
}

fn check(data: &[u8], stale: &[Event]) {
    for lenient in [false, true] {
        let expect = by_event(data, lenient);
        for max in [1, 5, 256] {
            let mut out = stale.to_vec();
            assert_eq!(by_batch(data, lenient, max, &mut out), expect, "max {max}");
        }
    }
}

#[test]
fn read_batch_matches_next_event_on_intact_logs() {
    let stale = varied_events();
    for log in logs() {
        let (events, err) = by_event(&log, false);
        assert_eq!(err, None);
        assert!(events.len() >= 700);
        check(&log, &stale[..300]);
    }
}

#[test]
fn read_batch_matches_next_event_on_damaged_logs() {
    let stale = varied_events();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"0123456789abcdefxRW .-\n\r\x00\x80\xff";
    for log in logs() {
        for _ in 0..300 {
            let mut bad = log.clone();
            for _ in 0..1 + rand() % 3 {
                let i = 300 + (rand() as usize) % (bad.len() - 300);
                bad[i] = match rand() % 3 {
                    0 => alphabet[(rand() as usize) % alphabet.len()],
                    1 => bad[i] ^ (1 << (rand() % 8)),
                    _ => rand() as u8,
                };
            }
            if rand() % 4 == 0 {
                let cut = 300 + (rand() as usize) % (bad.len() - 300);
                bad.truncate(cut);
            }
            check(&bad, &stale[..(rand() % 300) as usize]);
        }
    }
}
