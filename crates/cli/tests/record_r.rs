//! One clock for every event (issue 14, ring protocol v3): `MMIO_TRACE_CLOCK=tsc|monotonic`
//! records the same stream; the log's times are `CLOCK_MONOTONIC` ns whichever clock the
//! events were stamped with (checked against `clock_gettime` readings the program takes
//! around each access); markers from `mmio-trace mark` (stamped with `CLOCK_MONOTONIC`)
//! interleave exactly with the events around them; and a timer handler that reads the
//! device while the program inserts markers from normal context (nothing blocks signals
//! for the ring any more) loses nothing.

mod common;

use common::*;
use mmio_trace_format::Event;

const N: usize = 6;

/// The program's `(before, after)` `CLOCK_MONOTONIC` readings around each write.
fn brackets(out: &std::process::Output) -> Vec<(u64, u64)> {
    stdout(out)
        .lines()
        .map(|l| {
            let mut w = l.split(' ').map(|v| v.parse::<u64>().unwrap());
            (w.next().unwrap(), w.next().unwrap())
        })
        .collect()
}

fn record_with_clock(clock: &str) {
    let t = Fixture::new(&format!("r_clock_{clock}"), "r_clock", 4096);
    let out = record_cmd(&t.dir, &t.dev, &[])
        .env("MMIO_TRACE_CLOCK", clock)
        .arg(&t.exe)
        .arg(&t.dev)
        .arg(N.to_string())
        .arg(env!("CARGO_BIN_EXE_mmio-trace"))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let ev = read_log(&trace_log(&t.dir));
    assert_none_lost(&ev);
    assert_time_ordered(&ev);
    let ticks: u64 = stderr(&out)
        .lines()
        .find_map(|l| l.strip_prefix("ticks "))
        .expect("the program says how many timer reads it made")
        .trim()
        .parse()
        .unwrap();
    // Every write, each followed by its `mmio-trace mark` marker and then the 2000
    // program markers; every timer read, none lost.
    let mut seen = Vec::new();
    let mut reads = 0u64;
    let mut write_ts = Vec::new();
    for e in &ev {
        match e {
            Event::Access(a) if a.dir == mmio_trace_format::Direction::Write => {
                seen.push(format!("W{}", a.value));
                write_ts.push(a.ts_ns);
            }
            Event::Access(_) => reads += 1,
            Event::Mark(m) if m.text == b"m" && seen.last().map(String::as_str) == Some("m") => {}
            Event::Mark(m) if m.text == b"m" => seen.push("m".into()),
            // (The recorder's own notes, such as the mapped file, are not the program's.)
            Event::Mark(m) if m.text.starts_with(b"w") => {
                seen.push(String::from_utf8_lossy(&m.text).into_owned())
            }
            _ => {}
        }
    }
    let want: Vec<String> = (0..N)
        .flat_map(|i| [format!("W{i}"), format!("w{i}"), "m".into()])
        .collect();
    assert_eq!(seen, want, "clock {clock}");
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::Mark(m) if m.text == b"m"))
            .count(),
        N * 2000
    );
    assert_eq!(reads, ticks, "every timer read, once");
    assert!(ticks > 0, "the timer never fired");
    // The log's times are CLOCK_MONOTONIC: the distance between two writes lies within
    // what the program's own readings allow (the text log has microseconds: 1 us slack).
    let b = brackets(&out);
    assert_eq!(b.len(), N);
    for i in 0..N {
        for j in i + 1..N {
            let d = write_ts[j] - write_ts[i];
            let (lo, hi) = (b[j].0 - b[i].1, b[j].1 - b[i].0);
            assert!(
                d + 1_000 >= lo && d <= hi + 1_000,
                "clock {clock}: writes {i} and {j} are {d} ns apart in the log, but {lo}..{hi} ns by clock_gettime"
            );
        }
    }
}

#[test]
fn r_tsc_clock_gives_monotonic_ns_and_markers_interleave() {
    assert!(
        invariant_tsc(),
        "this CPU has no invariant TSC (CPUID 0x80000007 EDX bit 8): MMIO_TRACE_CLOCK=tsc cannot be tested here"
    );
    record_with_clock("tsc");
}

#[test]
fn r_monotonic_clock_gives_the_same_stream() {
    record_with_clock("monotonic");
}

#[test]
fn r_the_clock_name_is_read_without_regard_to_case_or_spaces() {
    let t = Fixture::new("r_clock_case", "r_clock", 4096);
    let out = record_cmd(&t.dir, &t.dev, &[])
        .env("MMIO_TRACE_CLOCK", " Monotonic ")
        .arg(&t.exe)
        .arg(&t.dev)
        .arg("1")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let ev = read_log(&trace_log(&t.dir));
    assert_eq!(accesses(&ev)[0], ('W', 4, 0x10, 0));
}

#[test]
fn r_an_unknown_clock_is_refused_before_the_program_runs() {
    let t = Fixture::new("r_clock_bad", "r_clock", 4096);
    let out = record_cmd(&t.dir, &t.dev, &[])
        .env("MMIO_TRACE_CLOCK", "hpet")
        .arg(&t.exe)
        .arg(&t.dev)
        .arg("1")
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("MMIO_TRACE_CLOCK=\"hpet\": expected \"tsc\" or \"monotonic\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "", "the program must not run");
}

/// CPUID 0x80000007 EDX bit 8: the TSC is invariant.
fn invariant_tsc() -> bool {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU; the highest extended leaf is checked first.
    unsafe {
        use std::arch::x86_64::__cpuid;
        __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0
    }
}
