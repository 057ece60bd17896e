//! Support for the recorder throughput benchmark (`benches/throughput.rs`).

use std::io::{self, Write};
use std::time::{Duration, Instant};

use mmio_trace_format::{AnyWriter, Format};
use mmio_trace_ring::{Clock, Consumer, Kind, Layout, Record};

use crate::decode::Merger;

/// Pushes `per_thread` 4-byte write events from each of `threads` producer threads (no
/// traps: straight into the rings, as the fault path does) while this thread drains,
/// merges and writes them exactly as `record` does. Returns events written and the time
/// from the first push to the last byte flushed.
pub fn pipeline_throughput<W: Write>(
    threads: u32,
    per_thread: u64,
    out: W,
    format: Format,
) -> io::Result<(u64, Duration)> {
    let layout = Layout::uniform(threads.max(1) + 1, 16384);
    let mut consumer = Consumer::with_clock(layout, Clock::detect())?;
    let shm = consumer.shm();
    let mut w = AnyWriter::new(out, format)?;
    let mut merger = Merger::new(
        consumer.header().nrings as usize,
        consumer.header().start_ns,
    );
    let start = Instant::now();
    let producers: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let p = shm.claim(1, 100 + t).expect("a free ring");
                let virt = 0x7f00_0000_0000 + (t as u64) * 0x10000;
                let id = shm.next_map_id();
                let e = p.begin();
                let ts = e.ts;
                p.finish(
                    e,
                    &[
                        Record::new(ts, virt, 0x1000, 0, 0, Kind::Map),
                        Record([0xfe00_0000, id, 0, 0]),
                    ],
                )
                .map_err(|_| ())
                .expect("recorder alive");
                // The clock is read every 256 events (as before ring v3): this measures
                // the recorder, not the producers' clock.
                let mut ts = p.now();
                for i in 0..per_thread {
                    if i % 256 == 0 {
                        ts = p.now();
                    }
                    let e = p.begin_with(|| ts);
                    let r = Record::new(
                        ts,
                        Record::access_word(virt + (i & 0xffc), id),
                        i,
                        0x40_1000,
                        4,
                        Kind::Write,
                    );
                    p.finish(e, &[r]).map_err(|_| ()).expect("recorder alive");
                }
                p.retire();
            })
        })
        .collect();
    let mut err = None;
    loop {
        let finished = producers.iter().all(|p| p.is_finished());
        let wm = consumer.poll(|d| merger.add(d));
        merger.emit(if finished { None } else { Some(wm) }, |e| {
            if err.is_none() {
                err = w.write_event(&e).err();
            }
        });
        if finished {
            break;
        }
    }
    for p in producers {
        p.join()
            .map_err(|_| io::Error::other("producer panicked"))?;
    }
    if let Some(e) = err {
        return Err(e);
    }
    w.flush()?;
    Ok((merger.emitted, start.elapsed()))
}
