//! The tracer's per-thread block (issue 14): found by the thread's FS base, never by the
//! value at `%fs:0`, and proven the caller's own, so that threads whose FS base is not a
//! libc TCB, raw `clone`s sharing or reusing a thread pointer, and fork children each log
//! through a ring of their own (the log's pid column is the tid that claimed the ring);
//! and the block as generated code would find it through the preload library's TLS slot.
//! Programs: tests/programs/blk_*.c. Needs `cc`.

mod common;
use common::*;

/// The tids a program printed on its first line.
fn tids(out: &std::process::Output) -> Vec<u32> {
    let s = stdout(out);
    let first = s.lines().next().unwrap_or_default().to_string();
    first
        .split_whitespace()
        .map(|t| t.parse().unwrap_or_else(|_| panic!("stdout: {s}")))
        .collect()
}

/// K write-then-read pairs of `tag | j` at `off` by thread `tid`.
fn pairs(tid: u32, off: u64, tag: u64, k: u64) -> Vec<(u32, char, u8, u64, u64)> {
    (0..k)
        .flat_map(|j| [(tid, 'W', 4, off, tag | j), (tid, 'R', 4, off, tag | j)])
        .collect()
}

/// The accesses thread `tid` made, in log order.
fn of(ev: &[mmio_trace_format::Event], tid: u32) -> Vec<(u32, char, u8, u64, u64)> {
    accesses_by_pid(ev)
        .into_iter()
        .filter(|a| a.0 == tid)
        .collect()
}

#[test]
fn blk_threads_whose_fs_base_is_not_a_tcb_each_log_through_their_own_ring() {
    // Four threads trap at once with FS bases that are no libc TCB: 0 itself, and pages
    // whose first word (what `%fs:0` reads) is 0 for all three.
    let t = Fixture::new("blk_fsbase", "blk_fsbase", 4096);
    let k = 3000;
    let (out, ev) = t.record(&["4", &k.to_string()]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).ends_with("bad 0\n"),
        "stdout: {}",
        stdout(&out)
    );
    let tids = tids(&out);
    assert_eq!(tids.len(), 4);
    for (i, &tid) in tids.iter().enumerate() {
        let tag = ((i as u64) + 1) << 24;
        assert_eq!(
            of(&ev, tid),
            pairs(tid, 0x40 * i as u64, tag, k),
            "thread {i}"
        );
    }
    assert_eq!(accesses(&ev).len(), 4 * 2 * k as usize);
    assert_none_lost(&ev);
}

#[test]
fn blk_a_reused_thread_pointer_gets_a_fresh_block_and_ring() {
    // Thread A (raw clone with its own TCB-like area) ends with a raw SYS_exit, which runs
    // no hook of the tracer; thread B then gets the same FS base. B's events are B's, not
    // logged as A's, and the bytes around the area are untouched (no TLS slot written
    // into a TCB that libc did not make).
    let t = Fixture::new("blk_reuse_seq", "blk_reuse", 4096);
    let k = 2000;
    let (out, ev) = t.record(&["seq", &k.to_string()]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).ends_with("bad 0\n"),
        "stdout: {}",
        stdout(&out)
    );
    let tids = tids(&out);
    assert_eq!(of(&ev, tids[0]), pairs(tids[0], 0x100, 0x1000_0000, k));
    assert_eq!(of(&ev, tids[1]), pairs(tids[1], 0x200, 0x2000_0000, k));
    assert_eq!(accesses(&ev).len(), 2 * 2 * k as usize);
    assert_none_lost(&ev);
}

#[test]
fn blk_two_live_threads_with_one_fs_base_each_have_their_own_ring() {
    let t = Fixture::new("blk_reuse_share", "blk_reuse", 4096);
    let k = 3000;
    let (out, ev) = t.record(&["share", &k.to_string()]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).ends_with("bad 0\n"),
        "stdout: {}",
        stdout(&out)
    );
    let tids = tids(&out);
    assert_eq!(of(&ev, tids[0]), pairs(tids[0], 0x100, 0x1000_0000, k));
    assert_eq!(of(&ev, tids[1]), pairs(tids[1], 0x200, 0x2000_0000, k));
    assert_eq!(accesses(&ev).len(), 2 * 2 * k as usize);
    assert_none_lost(&ev);
}

#[test]
fn blk_raw_clones_without_settls_and_their_parent_each_have_their_own_ring() {
    // Two raw clones without CLONE_SETTLS run on their parent's TCB while the parent
    // writes too: three threads, one FS base.
    let t = Fixture::new("blk_reuse_nosettls", "blk_reuse", 4096);
    let k = 3000u64;
    let (out, ev) = t.record(&["nosettls", &k.to_string()]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).ends_with("bad 0\n"),
        "stdout: {}",
        stdout(&out)
    );
    let tids = tids(&out);
    assert_eq!(of(&ev, tids[0]), pairs(tids[0], 0x100, 0x1000_0000, k));
    assert_eq!(of(&ev, tids[1]), pairs(tids[1], 0x200, 0x2000_0000, k));
    let main: Vec<_> = accesses_by_pid(&ev)
        .into_iter()
        .filter(|a| a.3 == 0x300)
        .collect();
    let pid = main.first().map_or(0, |a| a.0);
    assert!(pid != tids[0] && pid != tids[1] && pid != 0);
    assert_eq!(
        main,
        (0..k)
            .map(|j| (pid, 'W', 4, 0x300, 0x3000_0000 | j))
            .collect::<Vec<_>>()
    );
    assert_none_lost(&ev);
}

#[test]
fn blk_the_tls_slot_holds_each_threads_block() {
    // Through the exported offset, one %fs-relative load finds the calling thread's block,
    // whose key is its FS base with bit 63 set and whose tid is its own: in the main
    // thread before and after its first device access, in threads from pthread_create
    // and in a fork child.
    let t = Fixture::new("blk_tls", "blk_tls", 4096);
    let (out, _) = t.record(&["3"]);
    assert_exit(&out, 0);
    let mut want = vec!["offset below the thread pointer".to_string()];
    for who in ["main", "thread1", "thread2", "thread3", "child"] {
        want.push(format!("{who} ok"));
        want.push(format!("{who} ok"));
    }
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), want);
}

/// What blk_jit logs for `n` calls on a fresh fixture device.
fn jit_accesses(n: u64) -> Vec<(char, u8, u64, u64)> {
    (0..n)
        .map(|k| {
            let off = 0x10 * k;
            let value = 0x1122_3344_5566_7700 | k;
            match k % 4 {
                0 => ('R', 4, off, u64::from(initial_word(off))),
                1 => ('W', 8, off, value),
                2 => ('R', 1, off, u64::from(initial_word(off)) & 0xff),
                _ => ('W', 2, off, value & 0xffff),
            }
        })
        .collect()
}

#[test]
fn blk_code_rewritten_at_the_same_address_is_decoded_anew_on_every_path() {
    // The site cache keys on the instruction's address; a JIT-like buffer rewrites the
    // instruction there between device accesses (other lengths, widths and directions).
    // Every access is logged as the instruction that ran, emulated or single-stepped.
    let t = Fixture::new("blk_jit", "blk_jit", 4096);
    let n = 64;
    let want = jit_accesses(n);
    let sum: u64 = want.iter().filter(|a| a.0 == 'R').map(|a| a.3).sum();
    for path in ["emulate", "step"] {
        // A fresh device (its initial words) for each run.
        device(&t.dir, 4096);
        let mut c = record_cmd(&t.dir, &t.dev, &[]);
        c.env("MMIO_TRACE_PATH", path)
            .arg(&t.exe)
            .arg(&t.dev)
            .arg(n.to_string());
        let out = c.output().unwrap();
        assert_exit(&out, 0);
        assert_eq!(stdout(&out), format!("{sum:x}\n"), "{path}");
        let ev = read_log(&trace_log(&t.dir));
        assert_eq!(accesses(&ev), want, "{path}");
        assert_none_lost(&ev);
    }
}

#[test]
fn blk_a_site_whose_mapping_is_replaced_logs_the_new_mapping() {
    // The site's region snapshot must not outlive the mapping: the same instruction reads
    // and writes a device page mapped anew (another page of the file, same address) every
    // round.
    let t = Fixture::new("blk_remap", "blk_remap", 4 * 4096);
    let rounds = 24u64;
    let (out, ev) = t.record(&["4", &rounds.to_string()]);
    assert_exit(&out, 0);
    let mut want = Vec::new();
    let mut sum = 0u64;
    for r in 0..rounds {
        let off = (r % 4) * 4096 + 0x10;
        let old = if r < 4 {
            u64::from(initial_word(off))
        } else {
            r - 4
        };
        sum += old;
        want.push(('R', 4, off, old));
        want.push(('W', 4, off, r));
    }
    assert_eq!(stdout(&out), format!("{sum:x}\n"));
    assert_eq!(accesses(&ev), want);
    assert_eq!(count_maps(&ev), rounds as usize);
    assert_none_lost(&ev);
}
