//! Cost of publishing one event into a ring (begin: busy + timestamp; reserve, fill,
//! commit; end), with the consumer draining on another thread as the recorder does.
//! Both clocks. No timing asserts.
//!
//! `cargo bench -p mmio-trace-ring --bench publish`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mmio_trace_ring::{Clock, Consumer, Kind, Layout, Record};

const EVENTS: u64 = 5_000_000;

/// ns per event for `EVENTS` one-record events (`wide`: three-record 64-byte accesses).
fn run(clock: Clock, wide: bool) -> f64 {
    let mut c = Consumer::with_clock(Layout::uniform(2, 16384), clock).unwrap();
    let shm = c.shm();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let producer = std::thread::spawn(move || {
        let p = shm.claim(1, 1).unwrap();
        let data = Record::data(&[0x5a; 32]);
        let t = Instant::now();
        for i in 0..EVENTS {
            let e = p.begin();
            let w1 = Record::access_word(0x7f00_0000_1000 + (i & 0xffc), 1);
            if wide {
                let first = Record::new(e.ts, w1, 0, 0x40_1000, 64, Kind::ReadWide);
                p.finish(e, &[first, data, data]).unwrap();
            } else {
                let r = Record::new(e.ts, w1, i, 0x40_1000, 4, Kind::Write);
                p.finish(e, &[r]).unwrap();
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / EVENTS as f64;
        done2.store(true, Ordering::Release);
        ns
    });
    let mut n = 0u64;
    while !done.load(Ordering::Acquire) {
        c.poll(|d| n += d.records.len() as u64);
    }
    let ns = producer.join().unwrap();
    c.poll(|d| n += d.records.len() as u64);
    assert_eq!(n, EVENTS * if wide { 3 } else { 1 }, "every record drained");
    ns
}

/// ns per one-record event published alone: batches of 8192 into an empty ring, drained
/// between batches (untimed) on the same thread: the producer's own cost, without the
/// cache-line traffic of a consumer running beside it.
fn alone(clock: Clock) -> f64 {
    const BATCH: u64 = 8192;
    let mut c = Consumer::with_clock(Layout::uniform(1, 16384), clock).unwrap();
    let p = c.shm().claim(1, 1).unwrap();
    let mut total = std::time::Duration::ZERO;
    let mut n = 0u64;
    for round in 0..EVENTS / BATCH {
        let t = Instant::now();
        for i in 0..BATCH {
            let e = p.begin();
            let w1 = Record::access_word(0x7f00_0000_1000 + (i & 0xffc), 1);
            let r = Record::new(e.ts, w1, round, 0x40_1000, 4, Kind::Write);
            p.finish(e, &[r]).unwrap();
        }
        total += t.elapsed();
        c.poll(|d| n += d.records.len() as u64);
    }
    assert_eq!(n, EVENTS / BATCH * BATCH);
    total.as_nanos() as f64 / n as f64
}

fn main() {
    let mut clocks = vec![Clock::Monotonic];
    if mmio_trace_ring::clock::invariant_tsc() {
        clocks.insert(0, Clock::Tsc);
    }
    for &clock in &clocks {
        let mut v: Vec<f64> = (0..5).map(|_| alone(clock)).collect();
        v.sort_by(f64::total_cmp);
        println!(
            "publish {clock:?} 1-record, alone: median {:.1} ns/event (runs {:.1}..{:.1})",
            v[2], v[0], v[4]
        );
    }
    for clock in clocks {
        for wide in [false, true] {
            let mut v: Vec<f64> = (0..3).map(|_| run(clock, wide)).collect();
            v.sort_by(f64::total_cmp);
            println!(
                "publish {clock:?} {}, consumer beside: median {:.1} ns/event (runs {:.1}..{:.1})",
                if wide { "3-record" } else { "1-record" },
                v[1],
                v[0],
                v[2]
            );
        }
    }
}
