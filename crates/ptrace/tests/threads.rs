//! Seizing whole processes, stopping and resuming threads, detaching: the program keeps
//! computing correct results and exits with its own status.

mod common;

use std::time::Instant;

use common::{wait_blocked, Helper};
use mmio_trace_ptrace::{
    cont, detach, interrupt, seize_all, threads_of, wait_tid, Options, Process, Regs, Stop,
    SyscallSite,
};

#[test]
fn seize_all_stops_every_thread_and_detach_leaves_it_running() {
    let mut h = Helper::start("e_spin", &["6"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let tids = threads_of(pid).unwrap();
    assert_eq!(tids.len(), 6);
    let stops = seize_all(pid, Options::TRACECLONE | Options::TRACESYSGOOD).unwrap();
    assert_eq!(stops.iter().map(|s| s.0).collect::<Vec<_>>(), tids);
    for (t, s) in &stops {
        assert!(matches!(s, Stop::Interrupt), "{t}: {s:?}");
        // Stopped: the kernel says so ("t (tracing stop)").
        let st = std::fs::read_to_string(format!("/proc/{pid}/task/{t}/stat")).unwrap();
        assert_eq!(
            st.rsplit(')').next().unwrap().split_whitespace().next(),
            Some("t"),
            "{t}"
        );
    }
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0\n"), "{status}");
    h.write_stdin(b"x");
    assert_eq!(h.line(), "rounds=OK mismatches=0");
    assert_eq!(h.exit_code(), 7);
}

#[test]
fn a_hundred_injections_into_a_busy_loop_change_nothing() {
    let mut h = Helper::start("e_spin", &["3"]);
    let pid = h.pid();
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let spinner = *threads_of(pid)
        .unwrap()
        .iter()
        .find(|&&t| t != pid)
        .unwrap();
    // Let the spinner run between injections, so they land at many points of its loop.
    let mut p = Process::new(pid);
    cont(spinner, 0).unwrap();
    for i in 0..100 {
        interrupt(spinner).unwrap();
        let s = wait_tid(spinner).unwrap();
        assert!(matches!(s, Stop::Interrupt), "{s:?}");
        let r = if i % 2 == 0 {
            p.inject_syscall(spinner, libc::SYS_gettid, [0; 6]).unwrap()
        } else {
            p.inject_syscall(spinner, libc::SYS_getppid, [0; 6])
                .unwrap()
        };
        let want = if i % 2 == 0 {
            spinner as i64
        } else {
            std::process::id() as i64
        };
        assert_eq!(r, want, "injection {i}");
        cont(spinner, 0).unwrap();
    }
    interrupt(spinner).unwrap();
    wait_tid(spinner).unwrap();
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"x");
    assert_eq!(h.line(), "rounds=OK mismatches=0");
    assert_eq!(h.exit_code(), 7);
}

#[test]
fn injections_that_patch_the_current_instruction_leave_the_loop_intact() {
    let mut h = Helper::start("e_spin", &["3"]);
    let pid = h.pid();
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let spinner = *threads_of(pid)
        .unwrap()
        .iter()
        .find(|&&t| t != pid)
        .unwrap();
    let mut p = Process::new(pid);
    p.set_syscall_site(SyscallSite::PatchRip);
    cont(spinner, 0).unwrap();
    for i in 0..50 {
        interrupt(spinner).unwrap();
        assert!(matches!(wait_tid(spinner).unwrap(), Stop::Interrupt));
        let rip = Regs::read(spinner).unwrap().user().rip;
        let mut before = [0u8; 2];
        p.mem().read(rip, &mut before).unwrap();
        assert_eq!(
            p.inject_syscall(spinner, libc::SYS_gettid, [0; 6]).unwrap(),
            spinner as i64,
            "{i}"
        );
        let mut after = [0u8; 2];
        p.mem().read(rip, &mut after).unwrap();
        assert_eq!(before, after, "{i}");
        assert_eq!(Regs::read(spinner).unwrap().user().rip, rip);
        cont(spinner, 0).unwrap();
    }
    interrupt(spinner).unwrap();
    wait_tid(spinner).unwrap();
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"x");
    assert_eq!(h.line(), "rounds=OK mismatches=0");
    assert_eq!(h.exit_code(), 7);
}

#[test]
fn a_process_stopped_by_sigstop_stays_stopped_after_injection_and_detach() {
    let mut h = Helper::start("e_block", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    // SAFETY: kill takes integers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let state = |pid: i32| {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        st.rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let t0 = Instant::now();
    while state(pid) != "T" {
        assert!(t0.elapsed().as_secs() < 60);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    assert!(
        matches!(
            stops[..],
            [(
                _,
                Stop::Group {
                    signal: libc::SIGSTOP
                }
            )]
        ),
        "{stops:?}"
    );
    let mut p = Process::new(pid);
    let a = p
        .remote_mmap(
            pid,
            0,
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
        .unwrap();
    p.remote_munmap(pid, a, 4096).unwrap();
    detach(pid, 0).unwrap();
    // Still stopped by its SIGSTOP (give a wrongly resumed thread time to show up).
    h.write_stdin(b"early");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(state(pid), "T");
    // SAFETY: kill takes integers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert_eq!(h.line(), "ret=5 errno=0 data=early");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn seize_all_catches_threads_that_come_and_go() {
    let mut h = Helper::start("e_churn", &[]);
    let pid = h.pid();
    for round in 0..10 {
        // With and without TRACECLONE: a thread created meanwhile is caught either way.
        let opts = if round % 2 == 0 {
            Options::TRACECLONE
        } else {
            Options::NONE
        };
        let stops = seize_all(pid, opts | Options::TRACESYSGOOD).unwrap();
        // Every thread alive now is stopped (and seized): none is running.
        for t in threads_of(pid).unwrap() {
            let st =
                std::fs::read_to_string(format!("/proc/{pid}/task/{t}/stat")).unwrap_or_default();
            let s = st
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            assert!(
                stops.iter().any(|(x, _)| *x == t),
                "round {round}: thread {t} not seized ({stops:?})"
            );
            assert!(
                s == "t" || s.is_empty(),
                "round {round}: thread {t} in state {s}"
            );
        }
        for (t, s) in stops {
            assert!(!s.is_gone());
            detach(t, 0).unwrap();
        }
    }
    h.write_stdin(b"x");
    assert_eq!(h.line(), "batches=OK bad=0");
    assert_eq!(h.exit_code(), 5);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn bench_target(args: &[&str]) -> (f64, f64, f64) {
    let mut h = Helper::start("e_spin", args);
    let pid = h.pid();
    let mut attach = Vec::new();
    let mut det = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let stops = seize_all(pid, Options::TRACECLONE | Options::TRACESYSGOOD).unwrap();
        attach.push(t0.elapsed().as_secs_f64() * 1e3);
        assert_eq!(stops.len(), 16);
        let t0 = Instant::now();
        for (t, _) in stops {
            detach(t, 0).unwrap();
        }
        det.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let mut p = Process::new(pid);
    let mut inj = Vec::new();
    for _ in 0..2000 {
        let t0 = Instant::now();
        p.inject_syscall(pid, libc::SYS_getpid, [0; 6]).unwrap();
        inj.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"x");
    assert_eq!(h.line(), "rounds=OK mismatches=0");
    assert_eq!(h.exit_code(), 7);
    (median(attach), median(det), median(inj))
}

/// Figures for the report: `cargo test --release -p mmio-trace-ptrace --test threads --
/// --ignored --nocapture bench`.
#[test]
#[ignore]
fn bench_inject_and_seize_all() {
    for (what, args) in [
        ("15 spinning + main blocked", &["16"][..]),
        ("16 blocked", &["16", "idle"][..]),
    ] {
        let (a, d, i) = bench_target(args);
        println!(
            "16-thread target ({what}): seize_all {a:.3} ms, detach all {d:.3} ms (median of 20); inject_syscall(getpid) {i:.2} us (median of 2000)"
        );
    }
}
