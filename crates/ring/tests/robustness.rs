//! The producer when things go wrong: an event larger than the ring, a recorder that died
//! without closing the recording (killed: a zombie, then gone).

use std::sync::atomic::Ordering;

use mmio_trace_ring::{set_recorder_fd, sys, Consumer, Header, Kind, Record, WaitError};

fn rec(i: u64) -> Record {
    Record::new(i, Record::access_word(0x1000, 1), i, 0, 4, Kind::Write)
}

#[test]
fn an_event_larger_than_the_ring_is_an_error_not_a_silent_drop() {
    let mut c = Consumer::create(1, 4).unwrap();
    let p = c.shm().claim(1, 1).unwrap();
    let recs = [rec(1), rec(2), rec(3), rec(4), rec(5)];
    assert_eq!(p.push(&recs), Err(WaitError::TooLarge));
    assert_eq!(p.push(&recs[..4]), Ok(()));
    let mut n = 0;
    c.poll(|d| n += d.records.len());
    assert_eq!(n, 4);
}

#[test]
fn process_alive_sees_zombies_as_dead() {
    assert!(sys::process_alive(std::process::id()));
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    // Not reaped yet: a zombie once it has exited.
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false)
    {
        std::thread::yield_now();
    }
    assert!(sys::process_exists(pid));
    assert!(!sys::process_alive(pid));
    child.wait().unwrap();
    assert!(!sys::process_alive(pid));
}

/// Points the header's recorder pid at `pid` (a test stands in for a recorder).
fn set_recorder_pid(c: &Consumer, pid: u32) {
    let off = std::mem::offset_of!(Header, recorder_pid);
    // SAFETY: inside the header of a live mapping; no producer reads it concurrently.
    unsafe { (c.shm().base().add(off) as *mut u32).write_volatile(pid) };
}

/// The liveness pipe a producer polls is process-wide: tests that set it run one at a time.
static PIPE_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A reaped child's pid: names no live process (or, after reuse, a different one).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_killed_recorder_closes_the_recording_for_every_producer() {
    let _one = PIPE_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Consumer::create(2, 4).unwrap();
    // This process stands in for a traced one: it polls the consumer's liveness pipe.
    set_recorder_fd(c.live_fd());
    let a = c.shm().claim(1, 1).unwrap();
    let b = c.shm().claim(1, 2).unwrap();
    for i in 0..4 {
        a.push(&[rec(i)]).unwrap();
        b.push(&[rec(i)]).unwrap();
    }
    assert_eq!(c.header().closed.load(Ordering::Relaxed), 0);
    // The recorder dies: its write end of the pipe closes.
    c.hang_up();
    // Full ring, recorder gone: the first producer notices and closes the recording...
    assert_eq!(a.push(&[rec(9)]), Err(WaitError::RecorderGone));
    assert_eq!(c.header().closed.load(Ordering::Relaxed), 1);
    // ... so every other one fails fast too, and claiming gives up at once.
    assert_eq!(b.push(&[rec(9)]), Err(WaitError::RecorderGone));
    assert!(c.shm().claim_wait(1, 3, 60_000_000_000).is_none());
}

#[test]
fn a_live_recorder_is_told_by_its_pipe_not_its_pid() {
    // The header's pid names no live process (as after pid reuse, or seen from another
    // pid namespace), but the write end is held: the recorder lives.
    let _one = PIPE_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let c = Consumer::create(1, 4).unwrap();
    set_recorder_pid(&c, dead_pid());
    let fd = c.live_fd();
    assert_eq!(sys::hung_up(fd), Some(false));
    set_recorder_fd(fd);
    assert!(!c.shm().recorder_gone());
    assert_eq!(c.header().closed.load(Ordering::Relaxed), 0);
}

#[test]
fn the_idle_check_trusts_the_pipe_only() {
    let _one = PIPE_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    // No pipe and a pid that names nobody (as from another pid namespace): a waiting
    // producer takes the recorder for gone, the idle check (which would stop tracing)
    // does not guess.
    let c = Consumer::create(1, 4).unwrap();
    set_recorder_pid(&c, dead_pid());
    set_recorder_fd(-1);
    assert!(!c.shm().recorder_hung_up());
    assert_eq!(c.header().closed.load(Ordering::Relaxed), 0);
    assert!(c.shm().recorder_gone());
    // With the pipe: a hang-up is told, and closes the recording for everyone.
    let mut c = Consumer::create(1, 4).unwrap();
    set_recorder_fd(c.live_fd());
    assert!(!c.shm().recorder_hung_up());
    c.hang_up();
    assert!(c.shm().recorder_hung_up());
    assert_eq!(c.header().closed.load(Ordering::Relaxed), 1);
}
