//! The free-space edge: multi-record events into a ring with exactly enough room, one slot
//! too few, or more records than the ring holds; and rings of a tiered layout.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mmio_trace_ring::{Consumer, Kind, Layout, Producer, Record, WaitError};

const CAP: u32 = 8;

fn rec(i: u64) -> Record {
    Record::new(i, Record::access_word(0x1000, 1), i, 0, 4, Kind::Write)
}

/// A 64-byte write (one record and two data records), its bytes `seed..seed+64`.
fn wide64(ts: u64, seed: u8) -> [Record; 3] {
    let bytes: Vec<u8> = (0..64).map(|k| seed.wrapping_add(k)).collect();
    [
        Record::new(
            ts,
            Record::access_word(0x2000, 1),
            0,
            0,
            64,
            Kind::WriteWide,
        ),
        Record::data(&bytes[..32]),
        Record::data(&bytes[32..]),
    ]
}

/// Every record the consumer hands out in one poll.
fn poll_all(c: &mut Consumer) -> Vec<Record> {
    let mut got = Vec::new();
    c.poll(|d| got.extend_from_slice(d.records));
    got
}

/// Fills ring 0 of `c` with `n` single-record events (values 0..n).
fn fill(p: &Producer, n: u64) {
    for i in 0..n {
        p.push(&[rec(i)]).unwrap();
    }
}

/// Publishes `event` from another thread into a ring holding `CAP - 1` unconsumed records
/// (one free slot): the producer must wait (counted in `full_waits`) without writing a
/// thing, and the event must arrive whole, after the old records, once the consumer has
/// made room.
fn one_slot_too_few(event: Vec<Record>) {
    assert!(event.len() >= 2);
    let mut c = Consumer::create(1, CAP).unwrap();
    let shm = c.shm();
    let p = shm.claim(1, 1).unwrap();
    fill(&p, CAP as u64 - 1);
    let ev = event.clone();
    let producer = std::thread::spawn(move || p.push(&ev));
    // The producer found too little room (and so wrote nothing), or published anyway.
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.header().full_waits.load(Ordering::SeqCst) == 0 && !producer.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the producer neither waited nor finished"
        );
        std::thread::yield_now();
    }
    assert_eq!(
        c.header().full_waits.load(Ordering::SeqCst),
        1,
        "a {}-record event was published into a ring with one free slot",
        event.len()
    );
    // It reserved its slots (so the head counts them), but committed nothing.
    assert_eq!(
        shm.ctl(0).head.load(Ordering::SeqCst),
        CAP as u64 - 1 + event.len() as u64
    );
    // The old records, intact and alone (the event needs the room this poll makes).
    let first = poll_all(&mut c);
    assert_eq!(first, (0..CAP as u64 - 1).map(rec).collect::<Vec<_>>());
    // Now the event, whole and in one piece.
    let mut rest = Vec::new();
    while rest.len() < event.len() {
        assert!(Instant::now() < deadline, "the event never arrived");
        rest.extend(poll_all(&mut c));
    }
    assert_eq!(producer.join().unwrap(), Ok(()));
    rest.extend(poll_all(&mut c));
    assert_eq!(rest, event);
    assert_eq!(rest[0].extra(), event.len() - 1);
}

#[test]
fn a_two_record_event_waits_for_a_ring_with_one_free_slot() {
    // A MAP: one record and one data record.
    one_slot_too_few(vec![
        Record::new(100, 0x7000_0000, 0x1000, 0, 0, Kind::Map),
        Record([0xfe00_0000, 7, 0, 0]),
    ]);
}

#[test]
fn a_64_byte_access_waits_for_a_ring_with_one_free_slot() {
    one_slot_too_few(wide64(100, 0x40).to_vec());
}

#[test]
fn a_long_mark_waits_for_a_ring_with_too_little_room() {
    // 200 bytes of text: one record and seven data records, into a ring of 8 holding 7.
    let text: Vec<u8> = (0..200u32).map(|k| b'a' + (k % 26) as u8).collect();
    let mut c = Consumer::create(1, 16).unwrap();
    let p = c.shm().claim(1, 1).unwrap();
    // Timed after the records it will follow (a ring's times come out non-decreasing).
    p.push_mark(100, &text).unwrap();
    let got = poll_all(&mut c);
    drop(c);
    let mut event = vec![got[0]];
    event.extend_from_slice(&got[1..]);
    assert_eq!(event.len(), 8);
    one_slot_too_few(event);
}

/// Publishes `recs` from another thread and checks that it went in without waiting for
/// room (a producer that waits is released by closing the recording, then the test fails).
fn push_without_waiting(c: &Consumer, p: Producer, recs: &[Record]) {
    let recs = recs.to_vec();
    let waits = c.header().full_waits.load(Ordering::SeqCst);
    let producer = std::thread::spawn(move || p.push(&recs));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !producer.is_finished() {
        if c.header().full_waits.load(Ordering::SeqCst) != waits || Instant::now() > deadline {
            c.close();
            let _ = producer.join();
            panic!("the producer waited for room it had");
        }
        std::thread::yield_now();
    }
    assert_eq!(producer.join().unwrap(), Ok(()));
}

#[test]
fn an_event_that_fills_the_ring_exactly_goes_in_without_waiting() {
    let mut c = Consumer::create(1, CAP).unwrap();
    let p = c.shm().claim(1, 1).unwrap();
    // CAP - 3 records, then a three-record event: exactly full.
    fill(&p, CAP as u64 - 3);
    let ev = wide64(50, 1);
    push_without_waiting(&c, p, &ev);
    assert_eq!(c.shm().ctl(0).head.load(Ordering::SeqCst), CAP as u64);
    let got = poll_all(&mut c);
    let mut want: Vec<Record> = (0..CAP as u64 - 3).map(rec).collect();
    want.extend_from_slice(&ev);
    assert_eq!(got, want);
    // Across the wrap: an event of exactly the ring's size into the empty ring.
    let whole: Vec<Record> = (0..CAP as u64).map(|i| rec(100 + i)).collect();
    push_without_waiting(&c, p, &whole);
    assert_eq!(poll_all(&mut c), whole);
}

#[test]
fn an_event_larger_than_its_ring_is_an_error_and_publishes_nothing() {
    // Two big rings of 16 and small rings of 4: the ring's own size decides.
    let layout = Layout {
        rings: 3,
        capacity: 16,
        big_rings: 2,
        small_capacity: 4,
    };
    let mut c = Consumer::with_layout(layout).unwrap();
    let shm = c.shm();
    let big = shm.claim(1, 1).unwrap();
    let _big2 = shm.claim(1, 2).unwrap();
    let small = shm.claim(1, 3).unwrap();
    assert_eq!((small.index(), shm.capacity(2)), (2, 4));
    let five: Vec<Record> = (0..5).map(rec).collect();
    assert_eq!(small.push(&five), Err(WaitError::TooLarge));
    assert_eq!(small.push(&five[..4]), Ok(()));
    assert_eq!(big.push(&five), Ok(()));
    let mut by_ring = [0usize; 3];
    c.poll(|d| by_ring[d.ring as usize] += d.records.len());
    assert_eq!(by_ring, [5, 0, 4]);
}

#[test]
fn tiered_rings_do_not_overlap_and_the_recorder_scans_only_claimed_ones() {
    let layout = Layout {
        rings: 4096,
        capacity: 64,
        big_rings: 4,
        small_capacity: 8,
    };
    let mut c = Consumer::with_layout(layout).unwrap();
    let shm = c.shm();
    assert_eq!(c.rings_in_use(), 0);
    // 1000 threads' rings, each filled to capacity with its own values. (Their thread id
    // is this process's, which lives: the recorder frees rings of threads that are gone.)
    let me = std::process::id();
    let ps: Vec<Producer> = (0..1000).map(|t| shm.claim(10 + t, me).unwrap()).collect();
    assert_eq!(c.rings_in_use(), 1000);
    for (t, p) in ps.iter().enumerate() {
        assert_eq!(p.index() as usize, t, "rings are claimed lowest first");
        let cap = shm.capacity(t);
        assert_eq!(cap, if t < 4 { 64 } else { 8 });
        for i in 0..cap {
            p.push(&[rec((t as u64) << 32 | i)]).unwrap();
        }
    }
    let mut seen = vec![0u64; 1000];
    c.poll(|d| {
        let t = d.ring as usize;
        assert_eq!(d.pid, 10 + t as u32);
        for r in d.records {
            assert_eq!(r.value(), (t as u64) << 32 | seen[t], "ring {t}");
            seen[t] += 1;
        }
    });
    for (t, n) in seen.iter().enumerate() {
        assert_eq!(*n, shm.capacity(t), "ring {t}");
    }
    // A freed ring is claimed again before any ring above the mark.
    ps[500].retire();
    c.poll(|_| {});
    assert_eq!(shm.claim(2, me).unwrap().index(), 500);
    assert_eq!(c.rings_in_use(), 1000);
    assert_eq!(c.header().full_waits.load(Ordering::SeqCst), 0);
}

#[test]
fn invalid_layouts_are_errors_not_panics() {
    for l in [
        Layout::uniform(0, 8),
        Layout::uniform(1, 6),
        Layout {
            rings: 2,
            capacity: 8,
            big_rings: 3,
            small_capacity: 8,
        },
        Layout {
            rings: 2,
            capacity: 8,
            big_rings: 1,
            small_capacity: 0,
        },
        Layout::uniform(u32::MAX, 1 << 31),
    ] {
        let e = Consumer::with_layout(l).err().expect("an error");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{l:?}");
    }
}
