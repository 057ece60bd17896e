//! End-to-end tests of the region registry and the aliases' lifetime under
//! `mmio-trace record`: thousands of device mappings, what reaches the device after the
//! program reshapes a mapping (holes, moves, growth, splits), aliases leaving with their
//! pages, memory locking of traced pages, code run from a device page.
//! Programs: tests/programs/regions_*.c. Needs `cc`.

use std::process::{Command, Output};

use mmio_trace_format::Event;

mod common;
use common::*;

/// Runs the fixture's program natively on a fresh copy of the device; returns its output
/// and the device's final bytes.
fn native(t: &Fixture, args: &[&str]) -> (Output, Vec<u8>) {
    let dev = t.dir.join("native.bin");
    std::fs::copy(&t.dev, &dev).unwrap();
    let out = Command::new(&t.exe).arg(&dev).args(args).output().unwrap();
    (out, std::fs::read(&dev).unwrap())
}

/// Runs the fixture's program with `args` natively, then under `record` (on the fixture's
/// device): both print `want`, the recording exits 0. Returns the native run's device
/// bytes, the recorder's output and the events.
#[track_caller]
fn record_printing(t: &Fixture, args: &[&str], want: &str) -> (Vec<u8>, Output, Vec<Event>) {
    let (nout, ndev) = native(t, args);
    assert_eq!(stdout(&nout), want, "native run: {}", stderr(&nout));
    let (out, ev) = t.record(args);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), want);
    (ndev, out, ev)
}

/// The device's initial bytes (see [`device`]) with 32-bit `writes` (offset, value)
/// applied in order.
fn expected_device(len: usize, writes: &[(u64, u32)]) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len / 4)
        .flat_map(|k| (0x1000 + k as u32).to_le_bytes())
        .collect();
    for &(off, val) in writes {
        v[off as usize..off as usize + 4].copy_from_slice(&val.to_le_bytes());
    }
    v
}

fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

fn no_alias_marks(events: &[Event]) -> usize {
    mark_texts(events)
        .iter()
        .filter(|m| m.contains("no alias mapping"))
        .count()
}

/// `regions_many DEV N STRIDE PAGES INTERLEAVE` recorded: every access is logged, in
/// order, with its value; every mapping has its MAP and UNMAP; the device ends as
/// natively.
#[track_caller]
fn assert_many(name: &str, n: u64, stride: u64, interleave: bool) -> Vec<Event> {
    const PAGES: u64 = 16;
    let t = Fixture::new(name, "regions_many", (PAGES * 4096) as usize);
    let args = [
        n.to_string(),
        stride.to_string(),
        PAGES.to_string(),
        (interleave as u8).to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ndev, out, ev) = record_printing(&t, &args, &format!("ok {n}\n"));
    assert!(
        !stderr(&out).contains("region table is full"),
        "{}",
        stderr(&out)
    );
    let written: Vec<u64> = (0..n).step_by(stride as usize).collect();
    let mut want: Vec<(char, u8, u64, u64)> = written
        .iter()
        .map(|&k| ('W', 4, (k % PAGES) * 4096 + 8, k))
        .collect();
    let mut last = [0u64; PAGES as usize];
    for &k in &written {
        last[(k % PAGES) as usize] = k;
    }
    want.extend(
        written
            .iter()
            .map(|&k| ('R', 4, (k % PAGES) * 4096 + 8, last[(k % PAGES) as usize])),
    );
    assert_eq!(accesses(&ev), want);
    assert_eq!(count(&ev, |e| matches!(e, Event::Map(_))), n as usize);
    assert_eq!(count(&ev, |e| matches!(e, Event::Unmap(_))), n as usize);
    assert_eq!(unknowns(&ev), []);
    assert_none_lost(&ev);
    assert_eq!(
        std::fs::read(&t.dev).unwrap(),
        ndev,
        "device contents differ from native"
    );
    ev
}

#[test]
fn regions_3000_mappings_are_all_traced_exactly() {
    let ev = assert_many("many3000", 3000, 1, false);
    // 3000 touched mappings are well within the alias budget: no access single-stepped.
    assert_eq!(no_alias_marks(&ev), 0);
}

#[test]
fn regions_40000_mappings_behave_as_natively_and_every_access_is_traced() {
    // Natively 40,000 VMAs; an alias made for each at mmap time would need 80,000, past
    // vm.max_map_count (65,530 by default): mmap failed with ENOMEM under the tracer.
    // Aliases are made on first access, within a budget; past it, accesses are
    // single-stepped, still logged with their values.
    let ev = assert_many("many40000", 40_000, 1, false);
    // The budget: a quarter of vm.max_map_count (65,530 by default), so reached here
    // unless the machine raised the limit a lot.
    let max: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530);
    if max / 4 < 40_000 {
        assert!(
            no_alias_marks(&ev) > 0,
            "the alias budget was never reached"
        );
    }
}

#[test]
fn regions_40000_mappings_made_and_touched_one_by_one_leave_the_program_its_mmaps() {
    // Each mapping touched as soon as it is made: the aliases compete with the program's
    // own mmaps for address-space entries, and must leave it enough.
    assert_many("many40000i", 40_000, 1, true);
}

#[test]
fn regions_untouched_mappings_cost_no_alias() {
    let ev = assert_many("many40000s", 40_000, 100, false);
    assert_eq!(no_alias_marks(&ev), 0);
}

#[test]
fn regions_device_contents_after_holes_moves_growth_and_splits() {
    const P: u64 = 4096;
    let t = Fixture::new("content", "regions_content", 8 * P as usize);
    let (ndev, _, ev) = record_printing(&t, &[], "ok\n");
    // (device offset, value) of every write, in program order.
    let writes: Vec<(u64, u32)> = vec![
        (2 * P + 0x70, 0x72),
        (0x70, 0x70),
        (5 * P + 0x04, 0x90),
        (P + 0x10, 0xa1),
        (3 * P + 0x10, 0xb3),
        (5 * P + 0x10, 0xb5),
        (3 * P + 0x20, 0xc3),
        (5 * P + 0x20, 0xc5),
        (4 * P + 0x20, 0xc4),
        (3 * P + 0x30, 0xd3),
        (4 * P + 0x30, 0xd4),
        (5 * P + 0x30, 0xd5),
        (7 * P + 0x40, 0xe7),
        (6 * P + 0x40, 0xe6),
        (3 * P + 0x40, 0xe3),
        (7 * P + 0x50, 0xf7),
        (6 * P + 0x50, 0xf6),
        (0x60, 0xa0),
    ];
    let want = expected_device(8 * P as usize, &writes);
    assert_eq!(ndev, want, "the native run itself");
    // The device first: the log could be right while the bytes went elsewhere.
    let dev = std::fs::read(&t.dev).unwrap();
    for (k, (a, b)) in dev.chunks(4).zip(want.chunks(4)).enumerate() {
        assert_eq!(a, b, "device word at offset {:#x}", k * 4);
    }
    let mut log: Vec<(char, u8, u64, u64)> = writes
        .iter()
        .map(|&(o, v)| ('W', 4, o, u64::from(v)))
        .collect();
    // The reads, where the program makes them.
    log.insert(8, ('R', 4, 4 * P + 0x20, 0x1000 + (4 * P + 0x20) / 4));
    log.push(('R', 4, 4 * P + 0x30, 0xd4));
    log.push(('R', 4, 0x60, 0xa0));
    assert_eq!(accesses(&ev), log);
    assert_none_lost(&ev);
}

#[test]
fn regions_aliases_leave_with_their_pages_and_untouched_mappings_have_none() {
    let t = Fixture::new("aliases", "regions_aliases", 8 * 4096);
    let (nout, _) = native(&t, &[]);
    assert_eq!(
        stdout(&nout),
        "mapped 8\ntouched 8\nhole 7\nshrunk 5\nfixed 4\nmoved 4\nuntouched 8\nunmapped 0\nfds 0\n",
        "native run: {}",
        stderr(&nout)
    );
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    // The device pages mapped in the traced process: the program's, plus one alias page
    // for each of its pages in a mapping it has touched (made on the first access,
    // never for the mapping it leaves untouched); none once all is unmapped, and the
    // tracer's descriptor of the device closed with the last one.
    assert_eq!(
        stdout(&out),
        "mapped 8\ntouched 16\nhole 14\nshrunk 10\nfixed 8\nmoved 8\nuntouched 12\nunmapped 0\nfds 0\n"
    );
    assert_eq!(
        accesses(&ev),
        [('W', 4, 0, 1), ('W', 4, 5 * 4096, 2)],
        "the page moved by mremap keeps its device offset"
    );
}

#[test]
fn regions_memory_locking_of_traced_pages_succeeds_as_natively() {
    let t = Fixture::new("lock", "regions_lock", 4 * 4096);
    let (nout, ndev) = native(&t, &[]);
    assert_eq!(code(&nout), Some(0), "native run: {}", stderr(&nout));
    let n = stdout(&nout);
    for line in [
        "mlock 0 0",
        "mlock2 0 0",
        "mlock-part 0 0",
        "munlock 0 0",
        "read 1 2 3",
    ] {
        assert!(n.lines().any(|l| l == line), "native run: {n}");
    }
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), n, "every call answers as natively");
    assert_eq!(std::fs::read(&t.dev).unwrap(), ndev);
    let acc = accesses(&ev);
    assert_eq!(
        acc[..2],
        [('W', 4, 0x10, 1), ('W', 4, 0x1010, 2)],
        "traced after locking"
    );
    if !n.contains("mlockall skipped") {
        assert_eq!(
            acc[2..],
            [
                ('W', 4, 0x2020, 3),
                ('R', 4, 0x2020, 3),
                ('R', 4, 0x1010, 2),
                ('R', 4, 0x10, 1),
                ('R', 4, 0x10, 1)
            ]
        );
    }
}

#[test]
fn regions_code_runs_from_an_executable_device_page_and_the_other_page_stays_traced() {
    let t = Fixture::new("exec", "regions_exec", 2 * 4096);
    let (_, _, ev) = record_printing(&t, &[], "42 42 7\n");
    assert_eq!(accesses(&ev), [('W', 4, 0x1008, 7), ('R', 4, 0x1008, 7)]);
    let marks: Vec<String> = mark_texts(&ev)
        .into_iter()
        .filter(|m| m.contains("code executed"))
        .collect();
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert!(
        marks[0].ends_with("(phys 0x0) is no longer traced"),
        "{marks:?}"
    );
}

#[test]
fn regions_mremap_of_a_mapping_split_in_40_pieces_moves_them_all_traced() {
    const P: u64 = 4096;
    let t = Fixture::new("pieces", "regions_pieces", 40 * P as usize);
    let (nout, ndev) = native(&t, &[]);
    assert_eq!(code(&nout), Some(0), "native run: {}", stderr(&nout));
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), stdout(&nout));
    assert_eq!(std::fs::read(&t.dev).unwrap(), ndev);
    let want: Vec<(char, u8, u64, u64)> = (0..40u64)
        .map(|k| {
            if k % 2 == 0 {
                ('W', 4, k * P, 0x100 + k)
            } else {
                ('R', 4, k * P, 0x1000 + k * P / 4)
            }
        })
        .collect();
    assert_eq!(accesses(&ev), want);
    assert!(!mark_texts(&ev).iter().any(|m| m.contains("NOT TRACED")));
    // One mapping id before the move, one after.
    assert_eq!(count(&ev, |e| matches!(e, Event::Map(_))), 2);
}

#[test]
fn regions_the_alias_descriptor_survives_a_program_closing_and_reusing_every_number() {
    let t = Fixture::new("fds", "regions_fds", 4 * 4096);
    let (nout, _) = native(&t, &[]);
    assert_eq!(stdout(&nout), "55 fds 0\n", "native run: {}", stderr(&nout));
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "55 fds 0\n", "closed with the mapping");
    assert_eq!(accesses(&ev), [('W', 4, 0x10, 0x55), ('R', 4, 0x10, 0x55)]);
    assert_eq!(no_alias_marks(&ev), 0, "{:?}", mark_texts(&ev));
}

#[test]
fn regions_code_run_from_a_device_page_mapped_without_exec_faults_as_natively() {
    let t = Fixture::new("noexec", "regions_exec", 2 * 4096);
    let (nout, _) = native(&t, &["noexec"]);
    assert_eq!(code(&nout), Some(128 + 11), "native run");
    let (out, ev) = t.record(&["noexec"]);
    assert_exit(&out, 128 + 11);
    assert_eq!(accesses(&ev), [('W', 4, 0x1008, 7)]);
    assert!(!mark_texts(&ev).iter().any(|m| m.contains("code executed")));
}
