//! Parse throughput of the text and binary readers on a generated log, against a
//! plain `memchr` line split over the same bytes, measured in the same run.
//!
//! `cargo bench -p mmio-trace-format` (size: `MMIO_TRACE_BENCH_MB`, default 1024).

use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;

use mmio_trace_format::*;

/// A log shaped like a driver's: mostly 4-byte reads and writes over a few hundred
/// registers of one BAR, a status register polled, microsecond timestamps.
fn generate(target: usize) -> Vec<u8> {
    let mut w = TextWriter::new(Vec::with_capacity(target + 4096));
    w.write_event(&Event::Version(KERNEL_VERSION.as_bytes().to_vec()))
        .unwrap();
    w.write_event(&Event::Map(Map {
        ts_ns: 1_000_000_000,
        id: 1,
        phys: 0xfeb40000,
        virt: 0xffffc90001800000,
        len: 0x20000,
        pc: 0,
        pid: 0,
    }))
    .unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut ts = 1_000_000_000u64;
    let mut n = 0u64;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ts += 1000 * (1 + (x & 63));
        let reg = if x & 3 == 0 { 0x8 } else { (x >> 8) & 0x1fffc };
        let dir = if x & 0x10000 != 0 {
            Direction::Write
        } else {
            Direction::Read
        };
        let value = if x & 0x20000 != 0 {
            x >> 32
        } else {
            (x >> 40) & 0xff
        };
        let ev = Event::Access(Access::new(dir, 4, ts, 1, 0xfeb40000 + reg, value));
        w.write_event(&ev).unwrap();
        n += 1;
        if n % 4096 == 0 {
            w.write_event(&Event::Mark(Mark {
                ts_ns: ts,
                text: b"bench marker".to_vec(),
            }))
            .unwrap();
            if w.flush().is_ok() && n % 65536 == 0 {
                // TextWriter has no length accessor; estimate from the line count.
                if n * 45 >= target as u64 {
                    break;
                }
            }
        }
    }
    w.into_inner().unwrap()
}

fn best_of<F: FnMut() -> u64>(runs: usize, mut f: F) -> (f64, u64) {
    let mut best = f64::MAX;
    let mut out = 0;
    for _ in 0..runs {
        let t = Instant::now();
        out = black_box(f());
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, out)
}

fn main() {
    let mb: usize = std::env::var("MMIO_TRACE_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    eprintln!("generating a {mb} MB text log...");
    let text = generate(mb << 20);
    let gb = text.len() as f64 / 1e9;

    let (t_split, lines) = best_of(3, || {
        let mut pos = 0;
        let mut lines = 0u64;
        while let Some(i) = memchr::memchr(b'\n', &text[pos..]) {
            lines += 1;
            pos += i + 1;
        }
        lines
    });

    let (t_text, events) = best_of(3, || {
        let mut r = TextReader::new(Cursor::new(&text[..]));
        let mut n = 0u64;
        while let Some(ev) = r.next_event().unwrap() {
            black_box(&ev);
            n += 1;
        }
        n
    });
    assert_eq!(events, lines, "one event per line in the generated log");

    let mut bw = BinaryWriter::new(Vec::with_capacity(text.len() / 3)).unwrap();
    let mut r = TextReader::new(Cursor::new(&text[..]));
    while let Some(ev) = r.next_event().unwrap() {
        bw.write_event(&ev).unwrap();
    }
    let bin = bw.into_inner().unwrap();

    let (t_bin, bevents) = best_of(3, || {
        let mut r = BinaryReader::new(Cursor::new(&bin[..])).unwrap();
        let mut n = 0u64;
        while let Some(ev) = r.next_event().unwrap() {
            black_box(&ev);
            n += 1;
        }
        n
    });
    assert_eq!(bevents, events);

    println!(
        "log: {:.3} GB text, {:.3} GB binary ({:.2}x smaller), {} events",
        gb,
        bin.len() as f64 / 1e9,
        text.len() as f64 / bin.len() as f64,
        events
    );
    println!(
        "memchr line split : {:>8.0} MB/s  {:>7.1} M lines/s",
        gb * 1e3 / t_split,
        lines as f64 / 1e6 / t_split
    );
    println!("text reader       : {:>8.0} MB/s  {:>7.1} M events/s  = {:.0}% of line split (target >= 40%)", gb * 1e3 / t_text, events as f64 / 1e6 / t_text, 100.0 * t_split / t_text);
    println!("binary reader     : {:>8.0} MB/s  {:>7.1} M events/s  = {:.1}x faster than text per event (target >= 5x; >= 1000 MB/s)", bin.len() as f64 / 1e6 / t_bin, events as f64 / 1e6 / t_bin, t_text / t_bin);
}
