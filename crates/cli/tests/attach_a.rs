//! End-to-end tests of `mmio-trace record --pid PID`: attaching to a running program,
//! tracing its existing and new device mappings, and detaching so that it finishes as if
//! nobody had been there (tests/programs/a_*.c check that themselves).

#[path = "common/attach.rs"]
mod attach;
mod common;

/// `record --pid` goes by its default route (ptrace) in these tests.
const ROUTE: &[&str] = &[];

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use attach::*;
use common::*;
use mmio_trace_format::{Direction, Event};

/// Attach for a second in the middle of the loop, detach: the program finishes with
/// correct results and exit 0; the log holds the attach MARK, the MAP of the mapping it
/// already had, exactly consecutive iterations, and the detach MARK.
#[test]
fn attach_mid_loop_then_detach_leaves_the_program_correct() {
    let t = fixture("mid_loop", "a_loop");
    let target = Target::start(&t.exe, &t.dir, &[os(&t.dev), os(&t.dir), "1000".as_ref()]);
    let pid = target.pid;
    let out = attach_run(pid, &log(&t, 1), &[&t.dev], &["--duration", "1"]);
    assert_exit(&out, 0);
    let ev = read_log(&log(&t, 1));
    let marks = mark_texts(&ev);
    assert!(
        marks
            .iter()
            .any(|m| m == &format!("mmio-trace: attached to {pid} (1 thread, 1 device mapping)")),
        "{marks:?}"
    );
    assert_eq!(
        marks.last().map(String::as_str),
        Some("mmio-trace: detached"),
        "{marks:?}"
    );
    assert_eq!(count_maps(&ev), 1);
    let (first, last) = assert_consecutive_iterations(&accesses_of_tid(&ev, pid as u32));
    assert!(last > first, "{first}..{last}");
    // Every access lies between the two MARKs.
    let pos = |f: &dyn Fn(&Event) -> bool| ev.iter().position(f).unwrap();
    let at = pos(&|e| matches!(e, Event::Mark(m) if m.text.starts_with(b"mmio-trace: attached")));
    let map = pos(&|e| matches!(e, Event::Map(_)));
    let first_access = pos(&|e| matches!(e, Event::Access(_)));
    assert!(at < map && map < first_access);
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    assert_eq!(loop_result(&done, "errors"), 0);
    assert!(
        loop_result(&done, "last") as u64 > last,
        "the program ran on after the detach"
    );
}

/// Three attach/detach cycles in a row on one program: each log holds consecutive
/// iterations, each window after the one before; the program ends correct.
#[test]
fn three_attach_detach_cycles_in_a_row() {
    let t = fixture("cycles", "a_loop");
    let target = Target::start(&t.exe, &t.dir, &[os(&t.dev), os(&t.dir), "1000".as_ref()]);
    let mut prev = None;
    for n in 1..=3 {
        let out = attach_run(target.pid, &log(&t, n), &[&t.dev], &["--duration", "0.5"]);
        assert_exit(&out, 0);
        let ev = read_log(&log(&t, n));
        assert_eq!(count_maps(&ev), 1, "cycle {n}");
        let (first, last) = assert_consecutive_iterations(&accesses_of_tid(&ev, target.pid as u32));
        if let Some(p) = prev {
            assert!(
                first > p,
                "cycle {n} starts at {first}, the one before ended at {p}"
            );
        }
        prev = Some(last);
    }
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    assert_eq!(loop_result(&done, "errors"), 0);
}

/// Attach to a program with 6 threads (main and 5 workers, each with its own register)
/// and detach: every thread's accesses are consecutive, none of them saw EINTR or a
/// short sleep.
#[test]
fn attach_to_many_threads_and_detach() {
    let t = fixture("threads", "a_loop");
    let target = Target::start(
        &t.exe,
        &t.dir,
        &[os(&t.dev), os(&t.dir), "2000".as_ref(), "5".as_ref()],
    );
    let out = attach_run(target.pid, &log(&t, 1), &[&t.dev], &["--duration", "1"]);
    assert_exit(&out, 0);
    let ev = read_log(&log(&t, 1));
    let marks = mark_texts(&ev);
    let want = format!(
        "mmio-trace: attached to {} (6 threads, 1 device mapping)",
        target.pid
    );
    assert!(marks.contains(&want), "{marks:?}");
    assert_consecutive_iterations(&accesses_of_tid(&ev, target.pid as u32));
    // Each worker: W32 then R32 of the same value at its own register, values counting up.
    let tids: std::collections::BTreeSet<u32> = accesses_by_pid(&ev).iter().map(|a| a.0).collect();
    assert_eq!(tids.len(), 6, "{tids:?}");
    for tid in tids.into_iter().filter(|&x| x != target.pid as u32) {
        let a = accesses_of_tid(&ev, tid);
        let reg = a[0].2;
        assert!((0x100..0x100 + 5 * 0x20).contains(&reg), "{a:?}");
        let k = usize::from(a[0].0 == 'R');
        let v0 = a[k].3;
        for (j, acc) in a[k..].iter().enumerate() {
            let i = v0 + (j / 2) as u64;
            let dir = if j % 2 == 0 { 'W' } else { 'R' };
            assert_eq!(*acc, (dir, 4, reg, i), "thread {tid} access {j}");
        }
    }
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    assert_eq!(loop_result(&done, "errors"), 0);
}

/// A thread blocked in each of nanosleep, epoll_wait, read and a futex wait while the
/// recorder attaches and detaches: after their wake-up each call returned exactly what
/// it should (no EINTR, the bytes written, the full sleep).
#[test]
fn blocked_threads_see_no_eintr_after_attach_and_detach() {
    let t = fixture("blocked", "a_blocked");
    let target = Target::start(&t.exe, &t.dir, &[os(&t.dev), os(&t.dir)]);
    // Several cycles: whether the detach's stop lands at a syscall stop of the epoll
    // thread (where the kernel drops the pending interrupt) is a matter of timing.
    for n in 1..=6 {
        let out = attach_run(target.pid, &log(&t, n), &[&t.dev], &["--duration", "0.3"]);
        assert_exit(&out, 0);
        let ev = read_log(&log(&t, n));
        let want = format!(
            "mmio-trace: attached to {} (5 threads, 1 device mapping)",
            target.pid
        );
        assert!(mark_texts(&ev).contains(&want), "{:?}", mark_texts(&ev));
        let a = accesses_of_tid(&ev, target.pid as u32);
        assert!(a.len() >= 2, "{a:?}");
        let k = usize::from(a[0].0 == 'R');
        for (j, acc) in a[k..].iter().enumerate() {
            let i = a[k].3 + (j / 2) as u64;
            assert_eq!(
                *acc,
                (if j % 2 == 0 { 'W' } else { 'R' }, 4, 0x10, i),
                "access {j}"
            );
        }
    }
    let done = target.finish(&t.dir, "release");
    assert_exit(&done, 0);
    let s = stdout(&done);
    assert!(
        s.contains("epoll 1 read 1 futex 1 errors 0"),
        "{s}; {}",
        stderr(&done)
    );
}

/// The program ends while attached: `record --pid` exits with its status, and the log
/// holds every iteration up to its last one.
#[test]
fn program_exiting_while_attached_gives_its_status_and_a_complete_log() {
    let t = fixture("exits", "a_loop");
    let target = Target::start(
        &t.exe,
        &t.dir,
        &[
            os(&t.dev),
            os(&t.dir),
            "1000".as_ref(),
            "0".as_ref(),
            "3".as_ref(),
            "1".as_ref(),
        ],
    );
    let pid = target.pid;
    let rec = Recorder::start(pid, &log(&t, 1), &[&t.dev], &[]);
    std::thread::sleep(Duration::from_millis(300));
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 3);
    let (status, said) = rec.wait();
    assert_eq!(status, Some(3), "{said}");
    assert!(
        said.contains(&format!("mmio-trace: process {pid} exited with status 3")),
        "{said}"
    );
    let ev = read_log(&log(&t, 1));
    let (_, last) = assert_consecutive_iterations(&accesses_of_tid(&ev, pid as u32));
    assert_eq!(last as i64, loop_result(&done, "last"));
    let marks = mark_texts(&ev);
    assert_eq!(
        marks.last().map(String::as_str),
        Some(format!("mmio-trace: process {pid} exited with status 3").as_str())
    );
}

/// SIGINT, SIGTERM and SIGHUP to `record --pid` detach (not passed on): the recorder
/// exits 0, the program runs on and ends correct.
#[test]
fn sigint_sigterm_sighup_to_the_recorder_detach() {
    let t = fixture("signals", "a_loop");
    let target = Target::start(&t.exe, &t.dir, &[os(&t.dev), os(&t.dir), "1000".as_ref()]);
    for (n, sig) in [(1, libc::SIGINT), (2, libc::SIGTERM), (3, libc::SIGHUP)] {
        let rec = Recorder::start(target.pid, &log(&t, n), &[&t.dev], &[]);
        std::thread::sleep(Duration::from_millis(200));
        rec.signal(sig);
        let (status, said) = rec.wait();
        assert_eq!(status, Some(0), "signal {sig}: {said}");
        assert!(said.contains("mmio-trace: detached"), "{said}");
        let ev = read_log(&log(&t, n));
        assert_eq!(
            mark_texts(&ev).last().map(String::as_str),
            Some("mmio-trace: detached")
        );
        assert_consecutive_iterations(&accesses_of_tid(&ev, target.pid as u32));
    }
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    assert_eq!(loop_result(&done, "errors"), 0);
    assert_eq!(loop_result(&done, "usr1"), 0);
}

/// A signal sent to the program while it is attached reaches it once.
#[test]
fn a_signal_sent_while_attached_reaches_the_program_once() {
    let t = fixture("usr1", "a_loop");
    let target = Target::start(&t.exe, &t.dir, &[os(&t.dev), os(&t.dir), "1000".as_ref()]);
    let rec = Recorder::start(target.pid, &log(&t, 1), &[&t.dev], &[]);
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: plain kill of our own child.
    assert_eq!(unsafe { libc::kill(target.pid, libc::SIGUSR1) }, 0);
    std::thread::sleep(Duration::from_millis(200));
    rec.signal(libc::SIGTERM);
    let (status, said) = rec.wait();
    assert_eq!(status, Some(0), "{said}");
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    assert_eq!(loop_result(&done, "usr1"), 1);
    assert_eq!(loop_result(&done, "errors"), 0);
}

/// A device the program maps while attached is traced from that mapping on: its MAP,
/// its accesses, its UNMAP, in order with the old mapping's.
#[test]
fn a_device_mapped_while_attached_is_traced() {
    let t = fixture("newdev", "a_newdev");
    let dev2 = t.dir.join("dev2.bin");
    std::fs::write(&dev2, vec![0u8; 4096]).unwrap();
    let target = Target::start(&t.exe, &t.dir, &[os(&t.dev), os(&dev2), os(&t.dir)]);
    let rec = Recorder::start(target.pid, &log(&t, 1), &[&t.dev, &dev2], &[]);
    std::fs::write(t.dir.join("go"), b"").unwrap();
    let t0 = Instant::now();
    while !t.dir.join("done").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the program never finished its accesses"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    rec.signal(libc::SIGTERM);
    let (status, said) = rec.wait();
    assert_eq!(status, Some(0), "{said}");
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    let ev = read_log(&log(&t, 1));
    let maps: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Map(m) => Some(m.id),
            _ => None,
        })
        .collect();
    assert_eq!(maps.len(), 2, "{maps:?}");
    let seq: Vec<String> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Map(m) => Some(format!(
                "MAP {}",
                if m.id == maps[0] { "dev" } else { "dev2" }
            )),
            Event::Unmap(u) => Some(format!(
                "UNMAP {}",
                if u.id == maps[0] { "dev" } else { "dev2" }
            )),
            Event::Kernel(k) => Some(format!(
                "KERNEL {} {} {} {:#x} {}",
                if k.dir == Direction::Read { 'R' } else { 'W' },
                k.len,
                if k.map_id == maps[0] { "dev" } else { "dev2" },
                k.phys,
                String::from_utf8_lossy(&k.call)
            )),
            Event::Access(a) => Some(format!(
                "{} {} {} {:#x} {:#x}",
                if a.map_id == maps[0] { "dev" } else { "dev2" },
                if a.dir == Direction::Read { 'R' } else { 'W' },
                a.width,
                a.phys,
                a.value
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        seq,
        [
            "MAP dev",
            "MAP dev2",
            "dev2 W 4 0x40 0xfeed",
            "dev2 R 4 0x40 0xfeed",
            "dev2 W 2 0x44 0xbeef",
            "KERNEL R 4 dev2 0x40 pwrite64",
            "KERNEL W 2 dev2 0x48 pread64",
            "UNMAP dev2",
            "dev W 4 0x10 0x5a5a",
        ]
    );
    // The kernel's reads and writes of device memory happened: the file got the device's
    // bytes, the device the file's.
    assert_eq!(
        std::fs::read(t.dir.join("out.bin")).unwrap(),
        [0xed, 0xfe, 0, 0]
    );
    assert_device_bytes(&dev2, 0x48, &[0xed, 0xfe]);
}

/// Errors: no such process, the recorder itself, a process already traced (attach twice
/// at once): exit 2 and the reason; no trace file written.
#[test]
fn processes_that_cannot_be_attached_to_are_refused_with_status_2() {
    let dir = scratch("attach_errors");
    let log = dir.join("t.log");
    let bin = env!("CARGO_BIN_EXE_mmio-trace");
    let out = Command::new(bin)
        .args(["record", "--pid", "4194305", "-o"])
        .arg(&log)
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert_eq!(
        stderr(&out),
        "mmio-trace: cannot attach to process 4194305: no such process\n"
    );
    assert!(!log.exists());
    // The recorder's own pid: the shell execs it under its own pid.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec '{bin}' record --pid $$ -o '{}'",
            log.display()
        ))
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(
        stderr(&out)
            .ends_with(": that is this recorder itself (give the pid of the program to trace)\n"),
        "{}",
        stderr(&out)
    );
    assert!(!log.exists());
    // Already traced: a second recorder while the first is attached.
    let t = fixture("attach_twice", "a_loop");
    let target = Target::start(&t.exe, &t.dir, &[os(&t.dev), os(&t.dir), "1000".as_ref()]);
    let rec = Recorder::start(target.pid, &t.dir.join("first.log"), &[&t.dev], &[]);
    let second = attach_run(target.pid, &log, &[&t.dev], &[]);
    assert_exit(&second, 2);
    let first_pid = rec.pid();
    assert_eq!(
        stderr(&second),
        format!(
            "mmio-trace: cannot attach to process {}: it is already traced by process \
             {first_pid} (mmio-trace); a process can have one tracer at a time (a debugger, \
             strace, another `mmio-trace record --pid`): detach that one first\n",
            target.pid
        )
    );
    assert!(!log.exists());
    rec.signal(libc::SIGTERM);
    let (status, said) = rec.wait();
    assert_eq!(status, Some(0), "{said}");
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
}

/// Busy threads (no sleep between accesses: faults are in flight whenever the recorder
/// detaches, some with their SIGSEGV queued behind the interrupt's stop), eight cycles:
/// the program never gets a SIGSEGV of ours, every thread's accesses are consecutive.
#[test]
fn busy_threads_survive_many_attach_detach_cycles() {
    let t = fixture("busy", "a_loop");
    let target = Target::start(
        &t.exe,
        &t.dir,
        &[os(&t.dev), os(&t.dir), "0".as_ref(), "7".as_ref()],
    );
    for n in 1..=8 {
        let out = attach_run(target.pid, &log(&t, n), &[&t.dev], &["--duration", "0.3"]);
        assert_exit(&out, 0);
        let ev = read_log(&log(&t, n));
        assert_consecutive_iterations(&accesses_of_tid(&ev, target.pid as u32));
        let tids: std::collections::BTreeSet<u32> =
            accesses_by_pid(&ev).iter().map(|a| a.0).collect();
        for tid in tids.into_iter().filter(|&x| x != target.pid as u32) {
            let a = accesses_of_tid(&ev, tid);
            let k = usize::from(a[0].0 == 'R');
            for (j, acc) in a[k..].iter().enumerate() {
                let i = a[k].3 + (j / 2) as u64;
                let dir = if j % 2 == 0 { 'W' } else { 'R' };
                assert_eq!(
                    *acc,
                    (dir, 4, a[0].2, i & 0xffff_ffff),
                    "cycle {n} thread {tid} access {j}"
                );
            }
        }
    }
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    assert_eq!(loop_result(&done, "errors"), 0);
}

/// A child forked while attached inherits the closed pages: it is traced (its accesses
/// under its own pid), and detached with its pages given back, so its access after the
/// detach runs natively.
#[test]
fn a_child_forked_while_attached_is_traced_and_detached() {
    let t = fixture("fork", "a_fork");
    let target = Target::start(&t.exe, &t.dir, &[os(&t.dev), os(&t.dir)]);
    let pid = target.pid as u32;
    let rec = Recorder::start(target.pid, &log(&t, 1), &[&t.dev], &[]);
    std::fs::write(t.dir.join("go"), b"").unwrap();
    let t0 = Instant::now();
    while !t.dir.join("child").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the child never made its accesses"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let child: u32 = std::fs::read_to_string(t.dir.join("child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    rec.signal(libc::SIGTERM);
    let (status, said) = rec.wait();
    assert_eq!(status, Some(0), "{said}");
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    let ev = read_log(&log(&t, 1));
    let mut got = accesses_by_pid(&ev);
    got.sort_by_key(|a| a.0 != pid);
    assert_eq!(
        got,
        [
            (pid, 'W', 4, 0x10, 1),
            (child, 'W', 4, 0x30, 0x77),
            (child, 'R', 4, 0x30, 0x77),
        ]
    );
    // The child's write after the detach reached the device natively.
    assert_device_words(&t.dev, &[(0x30, 0x77), (0x34, 0x88)]);
}

/// The program killed while attached: `record --pid` exits 128+9 and says so.
#[test]
fn program_killed_while_attached_gives_128_plus_the_signal() {
    let t = fixture("killed", "a_loop");
    let target = Target::start(&t.exe, &t.dir, &[os(&t.dev), os(&t.dir), "1000".as_ref()]);
    let pid = target.pid;
    let rec = Recorder::start(pid, &log(&t, 1), &[&t.dev], &[]);
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: plain kill of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let (status, said) = rec.wait();
    assert_eq!(status, Some(128 + 9), "{said}");
    let ev = read_log(&log(&t, 1));
    assert_eq!(
        mark_texts(&ev).last().map(String::as_str),
        Some(format!("mmio-trace: process {pid} was killed by signal 9").as_str())
    );
    assert_consecutive_iterations(&accesses_of_tid(&ev, pid as u32));
}

/// The state letter of process `pid` (`/proc/PID/stat`).
fn state(pid: i32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    s[s.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

/// A program stopped by SIGSTOP when attached stays stopped through the attach and the
/// detach, makes no access meanwhile, and runs on correct after SIGCONT.
#[test]
fn a_stopped_program_stays_stopped_through_attach_and_detach() {
    let t = fixture("stopped", "a_loop");
    let target = Target::start(
        &t.exe,
        &t.dir,
        &[os(&t.dev), os(&t.dir), "1000".as_ref(), "2".as_ref()],
    );
    let pid = target.pid;
    // SAFETY: plain kill of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let t0 = Instant::now();
    while state(pid) != 'T' {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = attach_run(pid, &log(&t, 1), &[&t.dev], &["--duration", "0.5"]);
    assert_exit(&out, 0);
    let ev = read_log(&log(&t, 1));
    assert_eq!(accesses_by_pid(&ev), []);
    let want = format!("mmio-trace: attached to {pid} (3 threads, 1 device mapping)");
    assert!(mark_texts(&ev).contains(&want), "{:?}", mark_texts(&ev));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(state(pid), 'T', "the program must still be stopped");
    // SAFETY: plain kill of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    assert_eq!(loop_result(&done, "errors"), 0);
}

/// Other ways in: the trace on standard output (`-o -`), `--duration 0` (attach and
/// detach at once), a thread id for its process, and the binary format.
#[test]
fn stdout_zero_duration_thread_id_and_binary_format() {
    let t = fixture("variants", "a_loop");
    let target = Target::start(
        &t.exe,
        &t.dir,
        &[os(&t.dev), os(&t.dir), "1000".as_ref(), "1".as_ref()],
    );
    let pid = target.pid;
    let attached = format!("mmio-trace: attached to {pid} (2 threads, 1 device mapping)");
    // -o -: the log is standard output.
    let out = attach_run(pid, Path::new("-"), &[&t.dev], &["--duration", "0.3"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with("VERSION 20070824\n"), "{text}");
    assert!(text.contains(&attached), "{text}");
    assert!(text.trim_end().ends_with("mmio-trace: detached"), "{text}");
    // --duration 0: attach, then detach at once; the program goes on correct.
    let out = attach_run(pid, &log(&t, 2), &[&t.dev], &["--duration", "0"]);
    assert_exit(&out, 0);
    let marks = mark_texts(&read_log(&log(&t, 2)));
    assert!(marks.contains(&attached), "{marks:?}");
    assert_eq!(
        marks.last().map(String::as_str),
        Some("mmio-trace: detached")
    );
    // The worker's thread id names its process.
    let tid: i32 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .find(|&t| t != pid)
        .unwrap();
    let out = attach_run(
        tid,
        &log(&t, 3),
        &[&t.dev],
        &["--duration", "0.3", "--format", "binary"],
    );
    assert_exit(&out, 0);
    let ev = read_log(&log(&t, 3));
    assert!(mark_texts(&ev).contains(&attached), "{:?}", mark_texts(&ev));
    assert_consecutive_iterations(&accesses_of_tid(&ev, pid as u32));
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    assert_eq!(loop_result(&done, "errors"), 0);
}

/// Signals whose default action would kill the recorder (QUIT, USR1, ALRM) detach first:
/// a recorder dying attached would leave the program's pages closed.
#[test]
fn other_terminating_signals_detach_too() {
    let t = fixture("more_signals", "a_loop");
    let target = Target::start(&t.exe, &t.dir, &[os(&t.dev), os(&t.dir), "1000".as_ref()]);
    for (n, sig) in [(1, libc::SIGQUIT), (2, libc::SIGUSR1), (3, libc::SIGALRM)] {
        let rec = Recorder::start(target.pid, &log(&t, n), &[&t.dev], &[]);
        std::thread::sleep(Duration::from_millis(100));
        rec.signal(sig);
        let (status, said) = rec.wait();
        assert_eq!(status, Some(0), "signal {sig}: {said}");
        let ev = read_log(&log(&t, n));
        assert_eq!(
            mark_texts(&ev).last().map(String::as_str),
            Some("mmio-trace: detached")
        );
    }
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    assert_eq!(loop_result(&done, "errors"), 0);
}

/// A trace that cannot be written (a full disk: /dev/full) ends the recording: the
/// recorder detaches, says so and exits 125; the program runs on correct.
#[test]
fn a_failing_write_detaches_and_exits_125() {
    let t = fixture("full", "a_loop");
    let target = Target::start(&t.exe, &t.dir, &[os(&t.dev), os(&t.dir), "0".as_ref()]);
    let out = attach_run(target.pid, Path::new("/dev/full"), &[&t.dev], &[]);
    assert_exit(&out, 125);
    let err = stderr(&out);
    assert!(
        err.contains("mmio-trace: cannot write the trace to /dev/full: No space left on device"),
        "{err}"
    );
    assert!(err.contains("the process was detached"), "{err}");
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    assert_eq!(loop_result(&done, "errors"), 0);
}

/// Not permitted: another user's process. As root the recorder runs as user 65534
/// (setpriv, util-linux) against the test's own process; otherwise against pid 1. Exit 2,
/// the reason and what to change; the output is not touched.
#[test]
fn another_users_process_is_refused_with_what_to_change() {
    let dir = scratch("attach_perm");
    let log = dir.join("t.log");
    let bin = env!("CARGO_BIN_EXE_mmio-trace");
    // SAFETY: plain getter.
    let root = unsafe { libc::geteuid() } == 0;
    let me = std::process::id();
    let out = if root {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                bin,
                "record",
                "--pid",
            ])
            .arg(me.to_string())
            .arg("-o")
            .arg(&log)
            .output()
            .expect("setpriv (util-linux) is needed to run the recorder as another user")
    } else {
        Command::new(bin)
            .args(["record", "--pid", "1", "-o"])
            .arg(&log)
            .output()
            .unwrap()
    };
    assert_exit(&out, 2);
    let (pid, comm, uid) = if root {
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        (me, comm.trim_end().to_string(), 65534)
    } else {
        let comm = std::fs::read_to_string("/proc/1/comm").unwrap();
        // SAFETY: plain getter.
        (1, comm.trim_end().to_string(), unsafe { libc::getuid() })
    };
    assert_eq!(
        stderr(&out),
        format!(
            "mmio-trace: cannot attach to process {pid}: process {pid} ({comm}) runs as user 0 \
             and mmio-trace as user {uid}; run mmio-trace as that user, or as root \
             (CAP_SYS_PTRACE)\n"
        )
    );
    assert!(!log.exists());
}

/// A statically linked program (no loader, no preload possible) is attached to, traced
/// and detached the same way.
#[test]
fn a_static_program_is_attached_to_the_same_way() {
    let t = fixture("static", "a_loop");
    let exe = t.dir.join("a_loop_static");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/programs/a_loop.c");
    let st = Command::new("cc")
        .args(["-O1", "-static", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) is needed");
    assert!(
        st.success(),
        "linking a_loop statically (needs libc.a: libc6-dev)"
    );
    let target = Target::start(
        &exe,
        &t.dir,
        &[os(&t.dev), os(&t.dir), "1000".as_ref(), "2".as_ref()],
    );
    let out = attach_run(target.pid, &log(&t, 1), &[&t.dev], &["--duration", "0.5"]);
    assert_exit(&out, 0);
    let ev = read_log(&log(&t, 1));
    let want = format!(
        "mmio-trace: attached to {} (3 threads, 1 device mapping)",
        target.pid
    );
    assert!(mark_texts(&ev).contains(&want), "{:?}", mark_texts(&ev));
    assert_consecutive_iterations(&accesses_of_tid(&ev, target.pid as u32));
    let done = target.finish(&t.dir, "stop");
    assert_exit(&done, 0);
    assert_eq!(loop_result(&done, "errors"), 0);
}

/// A process `mmio-trace record` is already recording through its preload library is not
/// attached to a second time (the attach would take its accesses from that recording and
/// trace the tracer's own alias as a device): exit 2, nothing written, the first
/// recording complete.
#[test]
fn a_process_recorded_by_the_preload_route_is_refused_with_status_2() {
    let t = fixture("attach_preloaded", "a_loop");
    let log2 = t.dir.join("second.log");
    let mut rec = t.spawn_until(
        &t.dir.join("ready"),
        &[
            os(&t.dir),
            "1000".as_ref(),
            "0".as_ref(),
            "0".as_ref(),
            "1".as_ref(),
        ],
    );
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", rec.id())).unwrap();
    let pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let out = attach_run(pid, &log2, &[&t.dev], &[]);
    assert_exit(&out, 2);
    assert_eq!(
        stderr(&out),
        format!(
            "mmio-trace: cannot attach to process {pid}: it is already being recorded by \
             `mmio-trace record` (its preload library is loaded and attached to a \
             recording): its accesses go to that recording; a second tracer would take \
             them away from it\n"
        )
    );
    assert!(!log2.exists());
    std::fs::write(t.dir.join("stop"), b"").unwrap();
    let st = rec.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    let ev = read_log(&trace_log(&t.dir));
    let (first, last) = assert_consecutive_iterations(&accesses(&ev));
    assert_eq!(first, 0);
    assert!(last > 0);
}
