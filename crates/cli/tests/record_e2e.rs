//! End-to-end tests of `mmio-trace record` through the built binary: small C programs
//! (tests/programs/) map a regular file declared a device and make known accesses; the
//! trace must hold exactly those accesses (direction, width, offset, value, order).
//! Needs a C compiler (`cc`).

use std::path::Path;
use std::process::Command;

use mmio_trace_format::{Direction, Event};

mod common;
use common::*;

/// What tests/programs/regs.c saw of its device, traced or not.
#[track_caller]
fn assert_regs_output(out: &std::process::Output) {
    assert_exit(out, 7);
    let s = stdout(out);
    assert!(
        s.starts_with("id=00001000 b=5a h=1234 q=1122334455667788 zx=ca sx=ffffffca"),
        "{s}"
    );
    assert!(s.contains("s2=00001405"), "{s}");
}

/// The accesses of tests/programs/regs.c, with or without those of its `add dword
/// [rbx+0x1000], 5` (a read-modify-write, whose values only the alias path knows).
fn regs_accesses(with_rmw: bool) -> Vec<(char, u8, u64, u64)> {
    let mut v = vec![
        ('R', 4, 0x0, 0x1000),
        ('W', 4, 0x4, 0xdeadbeef),
        ('W', 1, 0x8, 0x5a),
        ('W', 2, 0xa, 0x1234),
        ('W', 8, 0x10, 0x1122334455667788),
        ('R', 1, 0x8, 0x5a),
        ('R', 2, 0xa, 0x1234),
        ('R', 8, 0x10, 0x1122334455667788),
        ('W', 4, 0x20, 0xcafef00d),
        ('R', 1, 0x23, 0xca),
        ('R', 1, 0x23, 0xca),
    ];
    if with_rmw {
        v.extend([('R', 4, 0x1000, 0x1400), ('W', 4, 0x1000, 0x1405)]);
    }
    v.extend([
        // One 16-byte access each; the kernel text format writes 8-byte halves.
        ('W', 8, 0x30, u64::MAX),
        ('W', 8, 0x38, u64::MAX),
        ('R', 8, 0x30, u64::MAX),
        ('R', 8, 0x38, u64::MAX),
        ('R', 4, 0x1000, 0x1405),
    ]);
    v
}

#[test]
fn instruction_forms_are_traced_exactly_and_exit_status_passes_through() {
    let t = Fixture::new("forms", "regs", 8192);
    // (record_ool.rs runs the same program with out-of-line execution.)
    let (out, ev) = t.record_env(&[NO_OOL], &[], &[]);
    assert_regs_output(&out);
    assert!(matches!(&ev[0], Event::Version(v) if v == b"20070824"));
    // Exactly one mapping traced (the private and anonymous ones are not), then unmapped.
    let maps: Vec<_> = ev.iter().filter(|e| matches!(e, Event::Map(_))).collect();
    assert_eq!(maps.len(), 1);
    let Event::Map(m) = maps[0] else {
        unreachable!()
    };
    assert_eq!((m.phys, m.len), (0, 0x2000));
    assert!(matches!(ev.last(), Some(Event::Unmap(u)) if u.id == m.id));
    assert_eq!(accesses(&ev), regs_accesses(true));
    assert_device_after(&t.dev, &writes_of(&regs_accesses(true)));
    // The crc32 with a memory operand is not emulated: single-stepped, logged UNKNOWN.
    assert_eq!(unknowns(&ev), [(4, [0xf2, 0x0f, 0x38])]);
    // Every access carries the program's thread id and a program counter.
    for e in &ev {
        if let Event::Access(a) = e {
            assert_eq!(a.pid, out_pid(&ev));
            assert_ne!(a.pc, 0);
        }
    }
}

#[test]
fn without_the_alias_mapping_every_access_is_single_stepped() {
    // What a driver that refuses a second mapping of its device gets (`--no-alias`):
    // the program runs the same; plain and SSE loads and stores keep their values (taken
    // from the registers); read-modify-write accesses, whose values a step cannot know
    // without re-reading the device, are logged UNKNOWN with their opcode.
    let t = Fixture::new("noalias", "regs", 8192);
    let (out, ev) = t.record_with(&["--no-alias"], &[]);
    assert_regs_output(&out);
    let dev = t.dev.to_str().unwrap();
    assert_eq!(
        mark_texts(&ev),
        [format!(
            "map 1 {dev} offset 0x0 length 0x2000 (no alias mapping: every access single-stepped)"
        )]
    );
    assert_eq!(accesses(&ev), regs_accesses(false));
    // The stepped read-modify-write still happened, natively.
    assert_device_after(&t.dev, &writes_of(&regs_accesses(true)));
    assert_eq!(
        unknowns(&ev),
        [
            (0x1000, [0x83, 0x83, 0x00]), // add dword [rbx+0x1000], 5
            (0x4, [0xf2, 0x0f, 0x38]),    // crc32 (not emulated either way)
        ]
    );
}

fn out_pid(ev: &[Event]) -> u32 {
    ev.iter()
        .find_map(|e| {
            if let Event::Map(m) = e {
                Some(m.pid)
            } else {
                None
            }
        })
        .unwrap()
}

#[test]
fn threads_hammering_their_registers_lose_nothing_and_keep_order() {
    const N: u64 = 100_000;
    let t = Fixture::new("threads", "threads", 4096);
    let (out, ev) = t.record(&["2", &N.to_string()]);
    assert_exit(&out, 0);
    let mut next = [0u64; 2];
    let mut tids = [0u32; 2];
    let mut reads = 0;
    for e in &ev {
        let Event::Access(a) = e else { continue };
        let t = (a.phys / 8) as usize;
        assert!(t < 2 && a.phys % 8 == 0 && a.width == 4);
        if tids[t] == 0 {
            tids[t] = a.pid;
        }
        assert_eq!(a.pid, tids[t], "register {t} written by one thread");
        match a.dir {
            Direction::Write => {
                assert_eq!(a.value, next[t], "register {t}: lost or reordered write");
                next[t] += 1;
            }
            Direction::Read => {
                assert_eq!(a.value, N - 1);
                reads += 1;
            }
        }
    }
    assert_eq!(next, [N, N]);
    assert_eq!(reads, 2);
    assert_ne!(tids[0], tids[1]);
    assert_device_after(&t.dev, &[(0, N - 1, 4), (8, N - 1, 4)]);
    assert_time_ordered(&ev);
}

#[test]
fn sigkill_mid_run_loses_no_completed_access() {
    let t = Fixture::new("kill", "killme", 4096);
    let (out, ev) = t.record(&["5000"]);
    assert_eq!(out.status.code(), Some(128 + 9));
    let acc = accesses(&ev);
    assert_eq!(acc.len(), 5000);
    for (i, a) in acc.iter().enumerate() {
        assert_eq!(*a, ('W', 4, 0x40, i as u64));
    }
    assert_device_after(&t.dev, &[(0x40, 4999, 4)]);
}

#[test]
fn programs_own_sigsegv_handler_works_and_fatal_faults_stay_fatal() {
    let t = Fixture::new("segv", "segv", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "recovered=2\n");
    assert_eq!(accesses(&ev), vec![('W', 4, 4, 0x11), ('W', 4, 4, 0x22)]);
    assert_device_after(&t.dev, &[(4, 0x22, 4)]);

    let (out, ev) = t.record(&["crash"]);
    assert_eq!(
        out.status.code(),
        Some(128 + 11),
        "dies of SIGSEGV as without the tracer"
    );
    assert_eq!(accesses(&ev), vec![('W', 4, 0, 1)]);
    assert_device_after(&t.dev, &[(4, 0x22, 4), (0, 1, 4)]);
}

#[test]
fn fork_and_exec_are_traced_into_the_same_log() {
    let t = Fixture::new("forkexec", "forkexec", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    let writes = writes_with_pid(&ev);
    let values: Vec<u64> = writes.iter().map(|w| w.0).collect();
    assert_eq!(values, vec![1, 2, 3, 4]);
    assert_device_after(&t.dev, &[(0x10, 4, 4)]);
    let (parent, child, exec) = (writes[0].1, writes[1].1, writes[2].1);
    assert_eq!(writes[3].1, parent);
    assert_ne!(parent, child);
    assert_eq!(child, exec, "exec keeps the process (and thread) id");
    // The exec'd image made its own mapping: two MAPs at least (parent, new image).
    assert!(count_maps(&ev) >= 2);
}

#[test]
fn ordinary_files_are_not_devices_by_default() {
    let t = Fixture::new("nodev", "regs", 8192);
    let log = trace_log(&t.dir);
    let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["record", "-q", "-o"])
        .arg(&log)
        .arg("--")
        .arg(&t.exe)
        .arg(&t.dev)
        .output()
        .unwrap();
    assert_exit(&out, 7);
    for e in read_log(&log) {
        assert!(
            matches!(e, Event::Version(_) | Event::PciDev(_)),
            "unexpected {e:?}"
        );
    }
    // Untraced, the program's writes reach the device as they do traced.
    assert_device_after(&t.dev, &writes_of(&regs_accesses(true)));
}

#[test]
fn markers_from_the_program_and_from_another_shell() {
    let t = Fixture::new("marks", "marks", 4096);
    let (ready, go) = (t.dir.join("ready"), t.dir.join("go"));
    let mut rec = t.spawn_until(&ready, &[os(&ready), os(&go)]);
    // `mmio-trace mark` finds the recorder by its pid.
    let pid = rec.id().to_string();
    let mut sent = false;
    for _ in 0..500 {
        let st = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
            .args(["mark", "--pid", &pid, "from", "another", "shell"])
            .output()
            .unwrap();
        if st.status.success() {
            sent = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(sent, "mmio-trace mark never reached the recorder");
    std::fs::write(&go, b"").unwrap();
    assert_eq!(rec.wait().unwrap().code(), Some(0));
    let mut seq = Vec::new();
    for e in read_log(&trace_log(&t.dir)) {
        match e {
            Event::Access(a) => seq.push(format!("W{}", a.value)),
            // (Not the loaded objects' markers, logged before the first MAP.)
            Event::Mark(m) if !m.text.starts_with(b"object pid ") => {
                seq.push(String::from_utf8(m.text).unwrap())
            }
            _ => {}
        }
    }
    // The recorder's own marker names the device's file right after it was mapped.
    let dev = t.dev.to_str().unwrap();
    assert_eq!(seq[0], format!("map 1 {dev} offset 0x0 length 0x1000"));
    // The program's own marker sits exactly between its writes; the external one is timed
    // when `mmio-trace mark` sent it: after the program said it was ready, before it was
    // told to go on.
    assert_eq!(&seq[1..4], ["W1", "between one and two", "W2"]);
    assert!(seq[4..] == ["from another shell", "W3"], "{seq:?}");
    assert_device_after(&t.dev, &[(0, 3, 4)]);
}

#[test]
fn demo_runs_the_example_driver_under_record() {
    let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .arg("demo")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rw: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("R ") || l.starts_with("W ") || l.starts_with("MARK "))
        // (Not the loaded objects' markers, logged before the first MAP.)
        .filter(|l| l.split(' ').nth(2) != Some("object"))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            if f[0] == "MARK" && f[2] == "map" {
                // The device file is in a fresh temporary directory.
                assert!(f[4].ends_with("/dma-engine.regs"), "{l}");
                format!("MARK map {} DEV {}", f[3], f[5..].join(" "))
            } else if f[0] == "MARK" {
                format!("MARK {}", f[2..].join(" "))
            } else {
                format!("{} {} {} {}", f[0], f[1], f[4], f[5])
            }
        })
        .collect();
    assert_eq!(
        rw,
        [
            "MARK map 1 DEV offset 0x0 length 0x1000",
            "MARK probe",
            "R 4 0x0 0x31414d44",
            "R 4 0x4 0x10002",
            "MARK reset",
            "W 4 0x10 0x1",
            "R 4 0x14 0x5",
            "MARK dma: copy 4 KiB from 0x100000000 to 0x200000000",
            "W 8 0x20 0x100000000",
            "W 8 0x28 0x200000000",
            "W 4 0x30 0x1000",
            "W 4 0x10 0x6",
            "W 4 0x34 0x1",
            "R 4 0x14 0x5",
            "R 4 0x40 0x1",
            "W 4 0x40 0x1",
            "MARK done",
        ]
    );
    // Each access also shows its register from the built-in demo database.
    let names: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("R ") || l.starts_with("W "))
        .map(|l| l[58..].trim())
        .collect();
    assert_eq!(
        names,
        [
            "ID = DMA1",
            "VERSION = MINOR = 2 | MAJOR = 1",
            "CTRL = RESET",
            "STATUS = READY | DONE",
            "SRC = 0x100000000",
            "DST = 0x200000000",
            "LEN = 4096",
            "CTRL = ENABLE | IRQ_EN",
            "DOORBELL = START",
            "STATUS = READY | DONE",
            "IRQ_STATUS = DONE",
            "IRQ_STATUS = DONE",
        ]
    );
}

#[test]
fn programs_own_mprotect_still_holds_and_mremap_keeps_tracing() {
    let t = Fixture::new("mprot", "mprot", 16384);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    // The write to the page made read-only faulted for the program and never reached
    // the device; after mremap (moved and grown) the mapping is traced under a new id.
    assert_eq!(stdout(&out), "v=1 denied=1 w=1800\n");
    assert_eq!(
        accesses(&ev),
        vec![
            ('W', 4, 0, 1),
            ('R', 4, 0, 1),
            ('W', 4, 0, 2),
            ('W', 4, 0x10, 3),
            ('R', 4, 0x2000, 0x1800)
        ]
    );
    let kinds: Vec<&str> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Map(_) => Some("MAP"),
            Event::Unmap(_) => Some("UNMAP"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["MAP", "UNMAP", "MAP"]);
    // The denied write (0xbad) is not there; the one through the moved mapping is. (The
    // file is 16 KiB: the grown mapping's pages beyond 8 KiB are the file's own.)
    assert_device_after(&t.dev, &[(0, 2, 4), (0x10, 3, 4)]);
    // The markers name the device's file for the first id, and the second as its sequel.
    let dev = t.dev.to_str().unwrap();
    assert_eq!(
        mark_texts(&ev),
        [
            format!("map 1 {dev} offset 0x0 length 0x2000"),
            "map 2 continues map 1".into()
        ]
    );
}

#[test]
fn range_and_bypass_limit_tracing_within_a_mapping() {
    let t = Fixture::new("ranges", "pages", 12288);
    let (out, ev) = t.record_with(&["--bypass", "0x1000+0x1000"], &[]);
    assert_exit(&out, 0);
    assert_eq!(
        accesses(&ev),
        vec![('W', 4, 0, 0xa0), ('W', 4, 0x2000, 0xa2)]
    );
    // The bypassed page is written too, untraced.
    let all = [(0, 0xa0, 4), (0x1000, 0xa1, 4), (0x2000, 0xa2, 4)];
    assert_device_after(&t.dev, &all);
    let (out, ev) = t.record_with(&["--range", "0x1000-0x2000"], &[]);
    assert_exit(&out, 0);
    assert_eq!(
        accesses(&ev),
        vec![('W', 4, 0x1000, 0xa1), ('R', 4, 0x1000, 0xa1)]
    );
    assert_device_after(&t.dev, &all);
}

#[test]
fn posix_spawn_and_vfork_children_are_traced() {
    let t = Fixture::new("spawn", "spawn", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(values(&ev), vec![1, 2, 3, 2, 4]);
    assert_device_after(&t.dev, &[(8, 4, 4)]);
}

#[test]
fn step_fallback_pauses_other_threads_and_loses_nothing() {
    assert_steps_lose_no_writes("stepthreads", "stepthreads", 200, 20_000);
}

#[test]
fn more_threads_than_rings_over_time_lose_nothing() {
    let t = Fixture::new("churn", "churn", 4096);
    // 40 batches of 20 threads: 800 threads, more than the 256 rings.
    let (out, ev) = t.record(&["40"]);
    assert_exit(&out, 0);
    let mut v = values(&ev);
    v.sort_unstable();
    assert_eq!(v, (0..800).collect::<Vec<u64>>());
    assert_none_lost(&ev);
    // Thread k wrote k to word k % 1024: each of the 800 words its own value.
    let w: Vec<_> = (0..800).map(|k| (4 * k, k, 4)).collect();
    assert_device_after(&t.dev, &w);
}

#[test]
fn asynchronous_signal_handlers_touching_the_device_are_traced_in_order() {
    const N: u64 = 50_000;
    let t = Fixture::new("alarm", "alarm", 4096);
    let (out, ev) = t.record(&[&N.to_string()]);
    assert_exit(&out, 0);
    let ticks: u64 = stdout(&out).trim().parse().unwrap();
    let acc = accesses(&ev);
    let main: Vec<u64> = acc.iter().filter(|a| a.2 == 0).map(|a| a.3).collect();
    let handler: Vec<u64> = acc.iter().filter(|a| a.2 == 0x20).map(|a| a.3).collect();
    assert_eq!(main, (0..N).collect::<Vec<_>>());
    assert_eq!(handler, (0..ticks).collect::<Vec<_>>());
    assert_time_ordered(&ev);
    let mut w = vec![(0, N - 1, 4)];
    if ticks > 0 {
        w.push((0x20, ticks - 1, 4));
    }
    assert_device_after(&t.dev, &w);
}

#[test]
fn device_matching_follows_the_descriptor_through_dup() {
    let t = Fixture::new("dup", "dup", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(
        accesses(&ev),
        vec![('W', 4, 0, 0x100), ('W', 4, 4, 0x101), ('W', 4, 8, 0x102)]
    );
    assert_eq!(count_maps(&ev), 3);
    assert_device_after(&t.dev, &writes_of(&accesses(&ev)));
}

#[test]
fn binary_format_keeps_wide_accesses_whole() {
    let t = Fixture::new("binary", "regs", 8192);
    let (out, ev) = t.record_with(&["--format", "binary"], &[]);
    assert_exit(&out, 7);
    let wide: Vec<(Direction, u8, u64)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) if a.width > 8 => Some((a.dir, a.width, a.phys)),
            _ => None,
        })
        .collect();
    assert_eq!(
        wide,
        vec![(Direction::Write, 16, 0x30), (Direction::Read, 16, 0x30)]
    );
    let Some(Event::Access(a)) = ev
        .iter()
        .find(|e| matches!(e, Event::Access(a) if a.width == 16))
    else {
        unreachable!()
    };
    assert_eq!(a.wide.as_deref().map(|w| &w[..16]), Some(&[0xff; 16][..]));
    assert_device_after(&t.dev, &writes_of(&regs_accesses(true)));
}

#[test]
fn a_static_program_is_reported_as_untraced() {
    let d = scratch("static");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/programs/pages.c");
    let exe = d.join("pages-static");
    let st = Command::new("cc")
        .args(["-O1", "-static", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    if !st.success() {
        eprintln!("no static libc: skipped");
        return;
    }
    // Forced onto the preload route (the automatic one traces it by ptrace).
    let dev = device(&d, 12288);
    let (out, ev) = record_with(&d, &dev, &["--route", "preload"], &[os(&exe), os(&dev)]);
    assert_eq!(out.status.code(), Some(0));
    assert!(accesses(&ev).is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never loaded the tracer"));
    assert_device_after(&dev, &[(0, 0xa0, 4), (0x1000, 0xa1, 4), (0x2000, 0xa2, 4)]);
}

#[test]
fn partial_munmap_keeps_the_rest_traced_and_map_fixed_replaces() {
    let t = Fixture::new("partial", "partial", 12288);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(
        accesses(&ev),
        vec![('W', 4, 0, 1), ('W', 4, 0x2000, 2), ('W', 4, 0x2000, 3)]
    );
    // 0x77 went to the anonymous page mapped over the first one (MAP_FIXED), not here.
    assert_device_after(&t.dev, &[(0, 1, 4), (0x2000, 3, 4)]);
}

#[test]
fn programs_own_sigtrap_handler_coexists_with_the_step_fallback() {
    let t = Fixture::new("trap", "trap", 4096);
    let (out, ev) = t.record_env(&[NO_OOL], &[], &[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "traps=3\n");
    let seq: Vec<String> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => Some(format!("W{}", a.value)),
            Event::Unknown(_) => Some("step".into()),
            _ => None,
        })
        .collect();
    assert_eq!(seq, ["W0", "step", "W1", "step", "W2", "step"]);
    assert_device_after(&t.dev, &[(0x10, 2, 4)]);
}

#[test]
fn sigterm_to_the_recorder_is_passed_to_the_program_and_the_trace_completed() {
    let t = Fixture::new("sigterm", "marks", 4096);
    let (ready, go) = (t.dir.join("ready"), t.dir.join("go"));
    let mut rec = t.spawn_until(&ready, &[os(&ready), os(&go)]);
    // The program waits for `go` forever; terminate the recorder instead.
    let st = Command::new("kill")
        .args(["-TERM", &rec.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        rec.wait().unwrap().code(),
        Some(128 + 15),
        "the program died of SIGTERM"
    );
    assert_eq!(values(&read_log(&trace_log(&t.dir))), [1, 2]);
    assert_device_after(&t.dev, &[(0, 2, 4)]);
}
