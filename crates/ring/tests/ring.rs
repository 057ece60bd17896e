//! Ring protocol tests: no loss, order, watermark soundness, wide events, ring reuse.

use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mmio_trace_ring::{monotonic_ns, Consumer, Kind, Record};

#[test]
fn single_event_round_trips() {
    let mut c = Consumer::create(4, 16).unwrap();
    let p = c.shm().claim(11, 22).unwrap();
    let e = p.begin_with(monotonic_ns);
    let ts = e.ts;
    p.finish(
        e,
        &[Record::new(
            ts,
            Record::access_word(0x7000_1234, 0x1_0003),
            0xabcd,
            0x40_1000,
            4,
            Kind::Write,
        )],
    )
    .unwrap();
    let mut got = Vec::new();
    c.poll(|d| {
        assert_eq!((d.pid, d.tid), (11, 22));
        got.extend_from_slice(d.records)
    });
    assert_eq!(got.len(), 1);
    let r = got[0];
    assert_eq!(r.kind(), Some(Kind::Write));
    assert_eq!(
        (r.addr(), r.map_low(), r.value(), r.pc(), r.width()),
        (0x7000_1234, 3, 0xabcd, 0x40_1000, 4)
    );
}

#[test]
fn mark_text_spans_data_records() {
    let mut c = Consumer::create(1, 64).unwrap();
    let p = c.shm().claim(1, 1).unwrap();
    let text = b"a marker longer than thirty-two bytes, to need two data records";
    p.push_mark(5, text).unwrap();
    let mut got = Vec::new();
    c.poll(|d| got.extend_from_slice(d.records));
    assert_eq!(got[0].kind(), Some(Kind::Mark));
    assert_eq!(got[0].extra(), 2);
    assert_eq!(got.len(), 3);
    let mut bytes = Vec::new();
    for r in &got[1..] {
        bytes.extend_from_slice(&r.bytes());
    }
    assert_eq!(&bytes[..text.len()], text);
}

#[test]
fn rings_run_out_and_are_reused_after_retire() {
    let mut c = Consumer::create(2, 16).unwrap();
    let a = c.shm().claim(1, 1).unwrap();
    let _b = c.shm().claim(1, 2).unwrap();
    assert!(c.shm().claim(1, 3).is_none());
    a.push(&[Record::new(1, 0, 0, 0, 1, Kind::Read)]).unwrap();
    a.retire();
    let mut n = 0;
    c.poll(|d| n += d.records.len());
    assert_eq!(n, 1);
    let again = c.shm().claim(1, 3).unwrap();
    assert_eq!(again.index(), a.index());
}

/// Several threads push far more records than the rings hold; the consumer merges them by
/// timestamp using the watermark. Every event arrives exactly once, per-thread order is kept,
/// and the merged output is in nondecreasing time order.
#[test]
fn many_threads_lose_nothing_and_merge_in_time_order() {
    const THREADS: u64 = 4;
    const PER: u64 = 200_000;
    let mut c = Consumer::create(8, 64).unwrap();
    let shm = c.shm();
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let p = shm.claim(1, t as u32 + 100).unwrap();
                for i in 0..PER {
                    let e = p.begin_with(monotonic_ns);
                    let ts = e.ts;
                    // Every 1000th event is a two-record wide access.
                    if i % 1000 == 0 {
                        p.finish(
                            e,
                            &[
                                Record::new(ts, t, i, 0, 32, Kind::ReadWide),
                                Record::data(&[7; 32]),
                            ],
                        )
                        .unwrap();
                    } else {
                        p.finish(e, &[Record::new(ts, t, i, 0, 4, Kind::Read)])
                            .unwrap();
                    }
                }
                p.retire();
            })
        })
        .collect();
    let mut next = [0u64; THREADS as usize];
    let mut heap = BinaryHeap::new();
    let mut merged_last = 0u64;
    let mut emitted = 0u64;
    let mut drain =
        |c: &mut Consumer, heap: &mut BinaryHeap<std::cmp::Reverse<(u64, u64)>>, all: bool| {
            let wm = c.poll(|d| {
                let mut k = 0;
                while k < d.records.len() {
                    let r = d.records[k];
                    let t = r.addr() as usize;
                    assert_eq!(r.value(), next[t], "thread {t} out of order or lost");
                    next[t] += 1;
                    heap.push(std::cmp::Reverse((r.ts(), r.value())));
                    k += 1 + r.extra();
                }
            });
            while let Some(std::cmp::Reverse((ts, _))) = heap.peek().copied() {
                if !all && ts >= wm {
                    break;
                }
                heap.pop();
                assert!(ts >= merged_last, "merged output went back in time");
                merged_last = ts;
                emitted += 1;
            }
        };
    // Let the producers fill their rings first, so the test always exercises waiting.
    std::thread::sleep(std::time::Duration::from_millis(20));
    while !done.load(Ordering::Relaxed) {
        drain(&mut c, &mut heap, false);
        if workers.iter().all(|w| w.is_finished()) {
            done.store(true, Ordering::Relaxed);
        }
    }
    for w in workers {
        w.join().unwrap();
    }
    drain(&mut c, &mut heap, true);
    assert_eq!(next, [PER; THREADS as usize]);
    assert_eq!(emitted, THREADS * PER);
    assert!(
        c.header().full_waits.load(Ordering::Relaxed) > 0,
        "test should exercise full rings"
    );
}
