//! The transport under load and after the recorder's death: more threads and processes
//! alive at once than the old fixed 256 rings, threads waiting for a ring when every ring
//! is taken, and a program that runs on untraced when the recorder is killed.

mod common;

use std::collections::BTreeMap;

use common::*;
use mmio_trace_format::Event;

/// Per thread (or process) id, its accesses (R/W, width, offset, value) in log order.
fn by_thread(events: &[Event]) -> BTreeMap<u32, Vec<(char, u8, u64, u64)>> {
    let mut m: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for (tid, dir, width, off, value) in accesses_by_pid(events) {
        m.entry(tid).or_default().push((dir, width, off, value));
    }
    m
}

/// Asserts that `n` threads (or processes) each logged exactly what ring_threads.c and
/// ring_procs.c make unit `t` do: `t*1000 + 0..=k` written to offset `4t`, the last one
/// read back; every unit under its own id.
#[track_caller]
fn assert_every_unit_logged(events: &[Event], n: u64, k: u64) {
    assert_none_lost(events);
    let m = by_thread(events);
    assert_eq!(m.len() as u64, n, "distinct thread ids in the log");
    let mut seen = vec![false; n as usize];
    for (tid, acc) in &m {
        let t = acc[0].2 / 4;
        assert!(
            t < n && !seen[t as usize],
            "thread {tid}: unit {t} twice or out of range"
        );
        seen[t as usize] = true;
        let mut want: Vec<_> = (0..=k).map(|i| ('W', 4, 4 * t, t * 1000 + i)).collect();
        want.push(('R', 4, 4 * t, t * 1000 + k));
        assert_eq!(acc, &want, "thread {tid} (unit {t})");
    }
}

#[test]
fn a_thousand_threads_alive_at_once_lose_nothing() {
    let t = Fixture::new("ring-threads", "ring_threads", 4096);
    let (out, ev) = t.record(&["1000", "3"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "threads 1000 done\n");
    assert_every_unit_logged(&ev, 1000, 3);
    assert!(
        !stderr(&out).contains("rings are in use"),
        "{}",
        stderr(&out)
    );
    assert_time_ordered(&ev);
}

#[test]
fn five_thousand_threads_of_one_process_with_more_rings_lose_nothing() {
    // Beyond the default ring count and beyond the tracer's old per-process thread table.
    let t = Fixture::new("ring-threads-5k", "ring_threads", 20480);
    let out = record_cmd(&t.dir, &t.dev, &[])
        .env("MMIO_TRACE_RINGS", "6000")
        .args([os(&t.exe), os(&t.dev), "5000".as_ref(), "2".as_ref()])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "threads 5000 done\n");
    assert_every_unit_logged(&read_log(&trace_log(&t.dir)), 5000, 2);
}

#[test]
fn six_hundred_processes_alive_at_once_lose_nothing() {
    let t = Fixture::new("ring-procs", "ring_procs", 4096);
    let (out, ev) = t.record(&["600", "2"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "processes 600 done\n");
    assert_every_unit_logged(&ev, 600, 2);
    // Each child's accesses under its own process id.
    let pids: std::collections::BTreeSet<u32> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => Some(a.pid),
            _ => None,
        })
        .collect();
    assert_eq!(pids.len(), 600);
}

#[test]
fn threads_beyond_the_rings_wait_for_one_and_say_so() {
    // 40 threads of 300 writes each, 4 rings: most threads wait for a ring to be freed.
    let t = Fixture::new("ring-wait", "threads", 4096);
    let out = record_cmd(&t.dir, &t.dev, &[])
        .env("MMIO_TRACE_RINGS", "4")
        .args([os(&t.exe), os(&t.dev)])
        .args(["40", "300"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let ev = read_log(&trace_log(&t.dir));
    assert_none_lost(&ev);
    let m = by_thread(&ev);
    assert_eq!(m.len(), 40);
    for (tid, acc) in &m {
        let off = acc[0].2;
        let mut want: Vec<_> = (0..300).map(|i| ('W', 4, off, i)).collect();
        want.push(('R', 4, off, 299));
        assert_eq!(acc, &want, "thread {tid}");
    }
    let msg = "mmio-trace: all 4 rings are in use; traced threads wait for a free one (no event is lost, the program is slowed; MMIO_TRACE_RINGS sets more)";
    assert_eq!(stderr(&out).matches(msg).count(), 1, "{}", stderr(&out));
    assert_eq!(
        mark_texts(&ev).iter().filter(|m| *m == msg).count(),
        1,
        "{:?}",
        mark_texts(&ev)
    );
}

#[test]
fn a_bad_ring_count_is_an_error() {
    let t = Fixture::new("ring-bad", "threads", 4096);
    for bad in ["0", "many", "-3", "65537", "99999999999"] {
        let out = record_cmd(&t.dir, &t.dev, &[])
            .env("MMIO_TRACE_RINGS", bad)
            .args([os(&t.exe), os(&t.dev), "1".as_ref(), "1".as_ref()])
            .output()
            .unwrap();
        // As a bad --range: the recorder's error status, the program never started.
        assert_exit(&out, 1);
        assert_eq!(
            stderr(&out),
            format!("mmio-trace: bad MMIO_TRACE_RINGS={bad:?}: expected a number of rings from 1 to 65536\n"),
        );
        assert!(!trace_log(&t.dir).exists());
    }
}

/// Records ring_gone.c with `threads` threads in each of `procs` processes, SIGKILLs the
/// recorder once every process has done its first phase, and checks that the program
/// finishes right, untraced: every process says so once on stderr, and its device pages
/// are back to the program's own protection (so its later accesses cannot trap).
fn recorder_killed_midway(name: &str, opts: &[&str], threads: u32, procs: u32) {
    let t = Fixture::new(name, "ring_gone", 4096);
    let (ready, go, result) = (t.dir.join("ready"), t.dir.join("go"), t.dir.join("result"));
    let err_path = t.dir.join("stderr");
    let mut rec = record_cmd(&t.dir, &t.dev, opts)
        .args([os(&t.exe), os(&t.dev), os(&ready), os(&go), os(&result)])
        .args([threads.to_string(), procs.to_string()])
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let recorder = rec.id();
    wait_for_file(&mut rec, &ready);
    rec.kill().unwrap();
    rec.wait().unwrap();
    std::fs::write(&go, b"").unwrap();
    // The program is nobody's child here: it tells us it ended by its result file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !result.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the program did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut lines: Vec<String> = (1..procs)
        .map(|c| std::fs::read_to_string(format!("{}.{c}", result.display())).unwrap())
        .collect();
    lines.insert(0, std::fs::read_to_string(&result).unwrap());
    for (c, l) in lines.iter().enumerate() {
        // Traced (closed pages) before, the program's own protection after.
        assert_eq!(
            l,
            &format!("proc {c}: phase1 ok ---s phase2 ok rw-s mprotect r--s rw-s remap ok rw-s\n")
        );
    }
    let err = std::fs::read_to_string(&err_path).unwrap();
    let said = format!(
        "mmio-trace: the recorder is gone (pid {recorder}); tracing stopped, the program runs on untraced\n"
    );
    assert_eq!(err.matches(&said).count(), procs as usize, "stderr: {err}");
    assert_eq!(err.lines().count(), procs as usize, "stderr: {err}");
    // The device holds each thread's last value.
    let dev = std::fs::read(&t.dev).unwrap();
    for c in 0..procs {
        for j in 0..threads {
            let off = 64 * (c * threads + j) as usize;
            let v = u32::from_le_bytes(dev[off..off + 4].try_into().unwrap());
            assert_eq!(v, c << 24 | j << 20 | 20099, "process {c} thread {j}");
        }
    }
}

#[test]
fn a_killed_recorder_stops_tracing_and_the_program_runs_on_natively() {
    recorder_killed_midway("ring-gone", &[], 1, 1);
}

#[test]
fn a_killed_recorder_stops_tracing_in_every_thread_and_process() {
    recorder_killed_midway("ring-gone-many", &[], 4, 3);
}

#[test]
fn a_killed_recorder_stops_tracing_of_single_stepped_accesses_too() {
    // No alias: every access takes the step path (pages opened, other threads paused).
    recorder_killed_midway("ring-gone-step", &["--no-alias"], 3, 2);
}

#[test]
fn a_killed_recorder_that_held_the_programs_stderr_pipe_does_not_kill_the_program() {
    // The program's stderr is a pipe whose only reader goes with the recorder: saying
    // that tracing stopped must not raise SIGPIPE (its default action kills).
    let t = Fixture::new("ring-gone-pipe", "ring_gone", 4096);
    let (ready, go, result) = (t.dir.join("ready"), t.dir.join("go"), t.dir.join("result"));
    let mut rec = record_cmd(&t.dir, &t.dev, &[])
        .args([os(&t.exe), os(&t.dev), os(&ready), os(&go), os(&result)])
        .args(["2", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&mut rec, &ready);
    rec.kill().unwrap();
    rec.wait().unwrap();
    drop(rec.stderr.take());
    std::fs::write(&go, b"").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !result.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the program did not finish (killed by SIGPIPE?)"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        std::fs::read_to_string(&result).unwrap(),
        "proc 0: phase1 ok ---s phase2 ok rw-s mprotect r--s rw-s remap ok rw-s\n"
    );
}
