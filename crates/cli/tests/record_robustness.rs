//! Robustness of `mmio-trace record` (review findings): locked read-modify-writes stay
//! atomic against other threads' plain stores, gs-relative device accesses, map ids that
//! wrap their low 16 bits, many short-lived threads (thread slots, alternate stacks), and a
//! recorder killed while the program runs on. C programs: tests/programs/rob_*.c.
//! Needs a C compiler (`cc`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mmio_trace_format::{Direction, Event};

mod common;
use common::*;

/// As [`Fixture::record`]; every program here must succeed.
fn record_ok(t: &Fixture, args: &[&str]) -> (Output, Vec<Event>) {
    let (out, ev) = t.record(args);
    assert_exit(&out, 0);
    (out, ev)
}

fn lost_marks(events: &[Event]) -> Vec<String> {
    mark_texts(events)
        .into_iter()
        .filter(|t| t.contains("Lost"))
        .collect()
}

#[test]
fn a_failed_lock_cmpxchg_never_undoes_another_threads_store() {
    let t = Fixture::new("cas", "rob_cas", 4096);
    let (out, ev) = record_ok(&t, &["100000"]);
    assert_eq!(stdout(&out), "stores 100000 lost 0\n");
    assert!(lost_marks(&ev).is_empty());
    // Per thread: the main thread's stores and read-backs exactly; the other thread's
    // failed cmpxchgs each the read of the current value and its write-back.
    let mut by_tid: std::collections::BTreeMap<u32, Vec<(char, u64)>> = Default::default();
    for e in &ev {
        if let Event::Access(a) = e {
            assert_eq!((a.width, a.phys), (4, 0));
            let dir = if a.dir == Direction::Read { 'R' } else { 'W' };
            by_tid.entry(a.pid).or_default().push((dir, a.value));
        }
    }
    assert_eq!(by_tid.len(), 2);
    let want: Vec<(char, u64)> = (1..=100_000u64)
        .flat_map(|i| [('W', i), ('R', i)])
        .collect();
    let (main, other): (Vec<_>, Vec<_>) = by_tid
        .into_values()
        .partition(|v| v.len() == want.len() && *v == want);
    assert_eq!(
        main.len(),
        1,
        "the main thread's accesses are exactly W i, R i"
    );
    let cas = &other[0];
    assert!(!cas.is_empty() && cas.len() % 2 == 0);
    for p in cas.chunks(2) {
        assert_eq!((p[0].0, p[1].0), ('R', 'W'));
        assert_eq!(p[0].1, p[1].1, "a failed cmpxchg writes back what it read");
    }
    // No write-back undid the main thread's last store.
    assert_device_after(&t.dev, &[(0, 100_000, 4)]);
}

#[test]
fn locked_read_modify_writes_are_traced_exactly() {
    let t = Fixture::new("locked", "rob_locked", 4096);
    let (out, ev) = record_ok(&t, &[]);
    assert_eq!(
        stdout(&out),
        "cmpxchg-fail eax=0x1000\ncmpxchg-ok eax=0x1001\nxchg old=0x1002\nxadd old=0x1003\n\
         or=0xf1004 bts=0x80001005 inc=0x100700001007 c8b=0xcc000000bb\n"
    );
    assert_eq!(
        accesses(&ev),
        vec![
            // lock cmpxchg, failing: the old value is read and written back.
            ('R', 4, 0x0, 0x1000),
            ('W', 4, 0x0, 0x1000),
            ('R', 4, 0x4, 0x1001),
            ('W', 4, 0x4, 0x77),
            ('R', 4, 0x8, 0x1002),
            ('W', 4, 0x8, 0x99),
            ('R', 4, 0xc, 0x1003),
            ('W', 4, 0xc, 0x1013),
            ('R', 4, 0x10, 0x1004),
            ('W', 4, 0x10, 0xf1004),
            ('R', 4, 0x14, 0x1005),
            ('W', 4, 0x14, 0x8000_1005),
            ('R', 8, 0x18, 0x1007_0000_1006),
            ('W', 8, 0x18, 0x1007_0000_1007),
            ('R', 8, 0x20, 0x1009_0000_1008),
            ('W', 8, 0x20, 0xcc_0000_00bb),
            ('R', 8, 0x18, 0x1007_0000_1007),
            ('R', 8, 0x20, 0xcc_0000_00bb),
            ('R', 4, 0x10, 0xf1004),
            ('R', 4, 0x14, 0x8000_1005),
        ]
    );
    assert_device_after(&t.dev, &writes_of(&accesses(&ev)));
}

#[test]
fn gs_relative_device_accesses_use_the_real_gs_base() {
    let t = Fixture::new("gsrel", "rob_gsrel", 4096);
    let (out, ev) = record_ok(&t, &[]);
    assert_eq!(stdout(&out), "gs:8=0x1002 gs:12=0xabcd\n");
    assert_eq!(
        accesses(&ev),
        vec![
            ('R', 4, 0x8, 0x1002),
            ('W', 4, 0xc, 0xabcd),
            ('R', 4, 0xc, 0xabcd)
        ]
    );
    assert_device_after(&t.dev, &[(0xc, 0xabcd, 4)]);
}

#[test]
fn map_ids_wrapping_their_low_16_bits_keep_each_access_on_its_mapping() {
    let t = Fixture::new("mapids", "rob_mapids", 3 * 4096);
    let (out, ev) = record_ok(&t, &[]);
    assert_eq!(stdout(&out), "0x1001 0x1802\n");
    let maps: Vec<(i64, u64)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Map(m) => Some((m.id, m.phys)),
            _ => None,
        })
        .collect();
    assert_eq!(maps.len(), 65537);
    let (first, last) = (maps[0], maps[65536]);
    assert_eq!((first.1, last.1), (0, 0x2000));
    assert_eq!(
        first.0 as u16, last.0 as u16,
        "the ids share their low 16 bits"
    );
    let acc: Vec<(i64, u64, u64)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => Some((a.map_id, a.phys, a.value)),
            _ => None,
        })
        .collect();
    assert_eq!(acc, vec![(first.0, 0x4, 0x1001), (last.0, 0x2008, 0x1802)]);
    assert_device_after(&t.dev, &[]);
}

#[test]
fn thousands_of_short_lived_threads_reuse_thread_slots() {
    let t = Fixture::new("slots", "rob_slots", 4096);
    let (_, ev) = record_ok(&t, &["4200"]);
    assert_eq!(lost_marks(&ev), Vec::<String>::new());
    let want: Vec<_> = (0..4200).map(|i| ('W', 4, 0, i)).collect();
    assert_eq!(accesses(&ev), want);
    assert_device_after(&t.dev, &[(0, 4199, 4)]);
}

#[test]
fn ended_threads_alternate_stacks_are_unmapped() {
    let t = Fixture::new("leak", "rob_leak", 4096);
    let (out, ev) = record_ok(&t, &["1000"]);
    assert_eq!(accesses(&ev).len(), 1100);
    assert_device_after(&t.dev, &[(0, 1, 4)]);
    let s = stdout(&out);
    let grew: i64 = s
        .trim()
        .strip_prefix("grew ")
        .and_then(|v| v.strip_suffix(" kB"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{s}"));
    // Leaking a 256 KiB stack per thread would be 256,000 kB; allow glibc a new arena.
    assert!(
        grew < 80 * 1024,
        "VmSize grew by {grew} kB over 1000 threads"
    );
}

#[test]
fn the_program_runs_on_correctly_after_the_recorder_is_killed() {
    let t = Fixture::new("orphan", "rob_orphan", 4096);
    let go = t.dir.join("go");
    let n = 50_000;
    let mut rec = record_cmd(&t.dir, &t.dev, &[])
        .arg(&t.exe)
        .arg(&t.dev)
        .arg(&go)
        .arg(n.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(rec.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    let pid: i32 = ready.strip_prefix("ready ").unwrap().parse().unwrap();
    rec.kill().unwrap();
    rec.wait().unwrap();
    std::fs::write(&go, b"").unwrap();
    // The ring (16,384 records) fills soon after; then every access would wait for the
    // dead recorder. Only a generous harness timeout, no timing assertion.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(lines.next().map(|l| l.unwrap()));
    });
    let done = rx.recv_timeout(Duration::from_secs(300));
    if done.is_err() {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert_eq!(
        done.expect("the program finished its accesses"),
        Some(format!("done {n} bad 0"))
    );
    // The device holds the last value written.
    assert_device_after(&t.dev, &[(0, 0, 4), (4, n as u64, 4)]);
}
