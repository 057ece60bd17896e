//! End-to-end tests of the tracer's signal hygiene under `mmio-trace record`: program
//! handlers with full masks, the program's own SIGSEGV handler, SIGEV_THREAD callbacks,
//! children started with signals blocked, nested signals during normal-context events,
//! the step fallback's pause protocol, forks and execs that bypass the usual interposers,
//! partial mprotect / duplicate views, and the program's alternate signal stack.
//! Programs: tests/programs/sig_*.c. Needs a C compiler (`cc`).

use mmio_trace_format::Event;

mod common;
use common::*;

#[test]
fn sig_handler_with_a_full_sa_mask_may_touch_the_device() {
    let t = Fixture::new("maskfull", "sig_maskfull", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "handler read 0x1002\n");
    assert_eq!(accesses(&ev), vec![('R', 4, 8, 0x1002)]);
    assert_device_after(&t.dev, &[]);
}

#[test]
fn sig_programs_sigsegv_handler_may_touch_the_device_and_its_own_faults_stay_fatal() {
    let t = Fixture::new("segvdev", "sig_segvdev", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 7);
    assert_eq!(stdout(&out), "handler wrote reset reg\n");
    assert_eq!(accesses(&ev), vec![('W', 4, 4, 0xdead)]);
    assert_device_after(&t.dev, &[(4, 0xdead, 4)]);
    // A real fault inside the handler (SIGSEGV blocked there): killed, as the kernel does.
    let (out, ev) = t.record(&["nested"]);
    assert_exit(&out, 128 + 11);
    assert_eq!(stdout(&out), "");
    assert_eq!(accesses(&ev), vec![('W', 4, 4, 0xdead)]);
    assert_device_after(&t.dev, &[(4, 0xdead, 4)]);
}

#[test]
fn sig_sigev_thread_timer_callbacks_may_touch_the_device() {
    let t = Fixture::new("sigevthr", "sig_sigevthr", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "5\n");
    let want: Vec<_> = (0..5).map(|n| ('W', 4, 0x10, n)).collect();
    assert_eq!(accesses(&ev), want);
    assert_device_after(&t.dev, &[(0x10, 4, 4)]);
}

#[test]
fn sig_mq_notify_thread_callbacks_may_touch_the_device() {
    let t = Fixture::new("mqnotify", "sig_mqnotify", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "notified\n");
    assert_eq!(accesses(&ev), vec![('W', 4, 0x30, 0x51)]);
    assert_device_after(&t.dev, &[(0x30, 0x51, 4)]);
}

#[test]
fn sig_posix_spawn_child_with_every_signal_blocked_is_traced() {
    let t = Fixture::new("spawnmask", "sig_spawnmask", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "child read 0x1000\nchild status 0\n");
    assert_eq!(accesses(&ev), vec![('R', 4, 0, 0x1000)]);
    assert_device_after(&t.dev, &[]);
}

#[test]
fn sig_markers_and_handler_accesses_on_one_thread_lose_nothing() {
    const N: usize = 20_000;
    let t = Fixture::new("markalarm", "sig_markalarm", 4096);
    let (out, ev) = t.record(&[&N.to_string()]);
    assert_exit(&out, 0);
    let ticks: u64 = stdout(&out).trim().parse().unwrap();
    assert_none_lost(&ev);
    let marks = ev
        .iter()
        .filter(|e| matches!(e, Event::Mark(m) if m.text == b"m"))
        .count();
    assert_eq!(marks, N);
    let want: Vec<_> = (0..ticks).map(|n| ('W', 4, 0x20, n)).collect();
    assert_eq!(accesses(&ev), want);
    let last: Vec<_> = ticks
        .checked_sub(1)
        .map(|v| (0x20, v, 4))
        .into_iter()
        .collect();
    assert_device_after(&t.dev, &last);
}

#[test]
fn sig_mprotect_of_part_of_a_region_and_a_duplicate_view() {
    let t = Fixture::new("partial", "sig_partial", 3 * 4096);
    let (out, ev) = t.record(&["mprotect"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "write to page 0 ok: 0x5\n");
    assert_eq!(accesses(&ev), vec![('W', 4, 0, 5), ('R', 4, 0, 5)]);
    assert_device_after(&t.dev, &[(0, 5, 4)]);
    // One mapping, one UNMAP at exit... none here (the program does not unmap): no split
    // piece may log an UNMAP of its own.
    assert!(!ev.iter().any(|e| matches!(e, Event::Unmap(_))));

    // The first run wrote to the device; the second starts from the same contents.
    device(&t.dir, 3 * 4096);
    let (out, ev) = t.record(&["dup"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).ends_with(": 0x1000\noriginal: 0x1000\n"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        accesses(&ev),
        vec![('R', 4, 0, 0x1000), ('R', 4, 0, 0x1000)]
    );
    let maps: Vec<_> = ev
        .iter()
        .filter_map(|e| {
            if let Event::Map(m) = e {
                Some((m.phys, m.len))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(maps, vec![(0, 3 * 4096), (0, 3 * 4096)]);
    assert_device_after(&t.dev, &[]);
}

#[test]
fn sig_execve_prepends_to_the_programs_own_ld_preload() {
    let t = Fixture::new("envpre", "sig_envpre", 4096);
    // The program alone, without the device path the fixture would pass it.
    let (out, _) = record(&t.dir, &t.dev, &[os(&t.exe)]);
    assert_exit(&out, 0);
    let s = stdout(&out);
    let (ours, theirs) = s.trim().split_once(':').unwrap();
    assert!(ours.ends_with("libmmio_trace_preload.so"), "{s}");
    assert_eq!(theirs, "/nonexistent/libmine.so");
}

#[test]
fn sig_a_thread_blocking_signals_past_the_pause_deadline_is_not_killed() {
    let t = Fixture::new("latepause", "sig_latepause", 4096);
    let (out, ev) = t.record_env(&[NO_OOL], &[], &[]);
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("done "), "{}", stdout(&out));
    assert_eq!(count_steps_at(&ev, 0x100), 1);
}

#[test]
fn sig_daemon_child_is_traced_under_its_own_pid() {
    let t = Fixture::new("daemon", "sig_daemon", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    let s = stdout(&out);
    let pid_of = |what: &str| -> u32 {
        s.lines()
            .find_map(|l| l.strip_prefix(what))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{what} in {s}"))
    };
    let (parent, child) = (pid_of("parent "), pid_of("daemon "));
    assert_ne!(parent, child);
    assert_eq!(
        accesses_by_pid(&ev),
        vec![
            (parent, 'W', 4, 0, 1),
            (child, 'W', 4, 0, 2),
            (child, 'W', 4, 0, 3),
            (child, 'W', 4, 0, 4),
        ]
    );
    assert_device_after(&t.dev, &[(0, 4, 4)]);
}

#[test]
fn sig_children_execed_with_an_explicit_environment_are_traced() {
    let t = Fixture::new("spawnenv", "sig_spawnenv", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    let want: Vec<_> = (1..=7).map(|n| ('W', 4, 0, n)).collect();
    assert_eq!(accesses(&ev), want);
    assert_eq!(count_maps(&ev), 7);
    assert_device_after(&t.dev, &[(0, 7, 4)]);
}

#[test]
fn sig_programs_small_alternate_stack_is_not_used_by_the_tracer() {
    let t = Fixture::new("altstack", "sig_altstack", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "read 0x1002 reported 1 clobbered 0\n");
    assert_eq!(accesses(&ev), vec![('R', 4, 8, 0x1002), ('W', 4, 12, 0x77)]);
    assert_device_after(&t.dev, &[(12, 0x77, 4)]);
}

#[test]
fn sig_children_of_forks_that_bypass_the_hooks_are_traced_under_their_own_pid() {
    let t = Fixture::new("rawfork", "sig_rawfork", 4096);
    for how in ["raw", "_Fork"] {
        let (out, ev) = t.record(&[how]);
        assert_eq!(code(&out), Some(0), "{how}: stderr: {}", stderr(&out));
        let s = stdout(&out);
        let pids: Vec<u32> = s
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let [parent, child] = pids[..] else {
            panic!("{s}")
        };
        assert_eq!(
            accesses_by_pid(&ev),
            vec![
                (parent, 'W', 4, 0, 1),
                (child, 'W', 4, 0, 2),
                (child, 'W', 4, 0, 3),
                (parent, 'W', 4, 0, 4),
            ],
            "{how}"
        );
        assert_device_after(&t.dev, &[(0, 4, 4)]);
    }
}
