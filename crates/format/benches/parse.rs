//! Parse throughput of the text and binary readers on three generated logs (the real
//! e1000 probe replayed, random registers and values, and a user-space recording with
//! a PC and a thread id on every line), against a plain `memchr` line split over the
//! same in-memory bytes, measured in the same run.
//!
//! Each reader is measured through both public APIs: `next_event` (one owned event per
//! call) and `read_batch` (up to 256 events per call into a reused `Vec<Event>`, the
//! fastest way to read). The targets are checked on `read_batch`. Both read through
//! `std::io::Read` (a `Cursor` over the bytes), as a file would be read.
//!
//! `cargo bench -p mmio-trace-format` (size: `MMIO_TRACE_BENCH_MB`, default 1024).

use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;

use mmio_trace_format::*;

/// The next state of a xorshift64 generator: cheap, reproducible pseudo-random logs.
fn xorshift(x: &mut u64) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
}

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
        xorshift(&mut x);
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

/// A log as `mmio-trace record` writes it: a PC and a thread id on every access, a few
/// threads, 1- to 8-byte accesses (8-byte values and a BAR above 4 GiB make lines of
/// 64 bytes and more), nanosecond-precise times rounded to microseconds.
fn generate_user(target: usize) -> Vec<u8> {
    let mut w = TextWriter::new(Vec::with_capacity(target + 4096));
    w.write_event(&Event::Version(KERNEL_VERSION.as_bytes().to_vec()))
        .unwrap();
    let mut x: u64 = 0x2545f4914f6cdd1d;
    let mut ts = 1_000_000_000u64;
    let mut n = 0u64;
    loop {
        xorshift(&mut x);
        ts += 300 + (x & 0xffff);
        let width = [4u8, 4, 4, 8, 1, 2, 4, 8][(x >> 20) as usize & 7];
        let value = match (x >> 24) & 3 {
            0 => x >> 56,
            _ if width == 8 => x.rotate_left(17),
            _ => (x >> 8) & (u64::MAX >> (64 - 8 * width as u32)),
        };
        let phys = if x & 0x100_0000_0000 != 0 {
            0x38_0000_0000 + ((x >> 30) & 0x1fffc)
        } else {
            0xfea0_0000 + ((x >> 30) & 0xffc)
        };
        let dir = if x & 0x10000 != 0 {
            Direction::Write
        } else {
            Direction::Read
        };
        let mut a = Access::new(dir, width, ts, 1 + (x >> 62) as i64, phys, value);
        a.pc = 0x55b5_14b6_8000 + ((x >> 40) & 0x3f) * 7;
        a.pid = [29029, 29030, 29031, 1234567][(x >> 50) as usize & 3];
        w.write_event(&Event::Access(a)).unwrap();
        n += 1;
        if n % 65536 == 0 && w.flush().is_ok() && n * 56 >= target as u64 {
            break;
        }
    }
    w.into_inner().unwrap()
}

/// The real e1000 probe log's accesses replayed with advancing time until the log is
/// `target` bytes: the register, value and timing patterns of a real driver.
fn replay_e1000(target: usize) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/e1000-probe.mmiotrace"
    );
    let events: Vec<Event> = TextReader::new(std::fs::File::open(path).unwrap())
        .collect::<Result<_, _>>()
        .unwrap();
    let first = events.iter().find_map(Event::ts_ns).unwrap();
    let last = events.iter().filter_map(Event::ts_ns).max().unwrap();
    let mut w = TextWriter::new(Vec::with_capacity(target + (1 << 20)));
    let mut offset = 0u64;
    let mut written = 0usize;
    let mut round = 0;
    while written < target {
        for ev in &events {
            let mut ev = ev.clone();
            match &mut ev {
                Event::Access(a) => a.ts_ns += offset,
                Event::Map(m) => m.ts_ns += offset,
                Event::Unmap(u) => u.ts_ns += offset,
                Event::Mark(m) => m.ts_ns += offset,
                _ if round > 0 => continue,
                _ => {}
            }
            w.write_event(&ev).unwrap();
        }
        round += 1;
        offset += last - first + 1_000_000;
        written += 522_016;
    }
    w.into_inner().unwrap()
}

/// Events per `read_batch` call.
const BATCH: usize = 256;

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
    eprintln!("generating three {mb} MB text logs...");
    run(
        "replayed e1000 probe (real driver patterns)",
        replay_e1000(mb << 20),
    );
    run(
        "random registers and values (worst case for branch prediction)",
        generate(mb << 20),
    );
    run(
        "user-space recording (PC and thread id on every line)",
        generate_user(mb << 20),
    );
}

fn run(name: &str, text: Vec<u8>) {
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

    // Two public APIs each: `next_event` (one event per call) and `read_batch` (up
    // to 256 events per call into a reused Vec; the fastest way to read).
    let (t_text1, events) = best_of(3, || {
        let mut r = TextReader::new(Cursor::new(&text[..]));
        let mut n = 0u64;
        while let Some(ev) = r.next_event().unwrap() {
            black_box(&ev);
            n += 1;
        }
        n
    });
    assert_eq!(events, lines, "one event per line in the generated log");
    let (t_text, tevents) = best_of(3, || {
        let mut r = TextReader::new(Cursor::new(&text[..]));
        let mut batch = Vec::with_capacity(BATCH);
        let mut n = 0u64;
        while r.read_batch(&mut batch, BATCH).unwrap() > 0 {
            black_box(&batch);
            n += batch.len() as u64;
        }
        n
    });
    assert_eq!(tevents, events);

    let mut bw = BinaryWriter::new(Vec::with_capacity(text.len() / 3)).unwrap();
    let mut r = TextReader::new(Cursor::new(&text[..]));
    while let Some(ev) = r.next_event().unwrap() {
        bw.write_event(&ev).unwrap();
    }
    let bin = bw.into_inner().unwrap();

    let (t_bin1, bevents) = best_of(3, || {
        let mut r = BinaryReader::new(Cursor::new(&bin[..])).unwrap();
        let mut n = 0u64;
        while let Some(ev) = r.next_event().unwrap() {
            black_box(&ev);
            n += 1;
        }
        n
    });
    assert_eq!(bevents, events);
    let (t_bin, bevents) = best_of(3, || {
        let mut r = BinaryReader::new(Cursor::new(&bin[..])).unwrap();
        let mut batch = Vec::with_capacity(BATCH);
        let mut n = 0u64;
        while r.read_batch(&mut batch, BATCH).unwrap() > 0 {
            black_box(&batch);
            n += batch.len() as u64;
        }
        n
    });
    assert_eq!(bevents, events);

    println!("\n== {name}");
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
    let mbs = |bytes: usize, t: f64| bytes as f64 / 1e6 / t;
    let meps = |t: f64| events as f64 / 1e6 / t;
    println!(
        "text   next_event : {:>8.0} MB/s  {:>7.1} M events/s  = {:.0}% of line split",
        mbs(text.len(), t_text1),
        meps(t_text1),
        100.0 * t_split / t_text1
    );
    println!(
        "text   read_batch : {:>8.0} MB/s  {:>7.1} M events/s  = {:.0}% of line split (target >= 40%)",
        mbs(text.len(), t_text),
        meps(t_text),
        100.0 * t_split / t_text
    );
    println!(
        "binary next_event : {:>8.0} MB/s  {:>7.1} M events/s  = {:.1}x text next_event per event",
        mbs(bin.len(), t_bin1),
        meps(t_bin1),
        t_text1 / t_bin1
    );
    println!(
        "binary read_batch : {:>8.0} MB/s  {:>7.1} M events/s  = {:.1}x text read_batch per event (targets >= 1000 MB/s, >= 5x)",
        mbs(bin.len(), t_bin),
        meps(t_bin),
        t_text / t_bin
    );
}
