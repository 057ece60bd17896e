//! When the recorder is gone: stop tracing, so that the program runs on at full speed.
//!
//! A recorder that died (SIGKILL, a crash) drains nothing any more; trapping on every
//! device access would only slow the program down. So once this process learns it (the
//! header's `closed` flag, set by whichever process noticed first, or a hang-up on the
//! liveness pipe, polled at most every [`CHECK_EVERY_NS`] from the event path and the
//! `mmap` hook), every traced region gets the program's own protection back, with raw
//! `mprotect` calls that are safe in the fault handler, and one line on stderr says so.
//!
//! The region table is left as it is: a thread that faulted on a page just before it was
//! opened finds its region there, sees that tracing has stopped, opens the region's pages
//! (again; `mprotect` is idempotent) and retries the instruction, which then runs natively.
//! Aliases stay mapped (address space only; a thread may still be emulating through one).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::regions::{self, Region};
use crate::sys;

/// How often (at most) the liveness pipe is polled while events are being written.
const CHECK_EVERY_NS: u64 = 2_000_000;

/// 0: tracing; 1: stopping (one thread restores the pages); 2: stopped.
static STATE: AtomicU32 = AtomicU32::new(0);
/// When the pipe may be polled next (`CLOCK_MONOTONIC` ns).
static NEXT_CHECK: AtomicU64 = AtomicU64::new(0);

/// Whether tracing has stopped (or is stopping) in this process.
#[inline]
pub(crate) fn stopped() -> bool {
    STATE.load(Ordering::SeqCst) != 0
}

/// Whether the recording is closed: the recorder is gone, or stopped draining. One load.
#[inline]
fn closed() -> bool {
    crate::shm().is_some_and(|s| s.header().closed.load(Ordering::Relaxed) != 0)
}

/// Notes the time `now` (an event's timestamp): at most every [`CHECK_EVERY_NS`], polls
/// the recorder's liveness pipe (a gone recorder marks the recording closed for every
/// process). Cheap otherwise: one load and a compare. Without the pipe (the program got
/// rid of it) the process learns it from the `closed` flag another process set, or when
/// its ring fills.
#[inline]
pub(crate) fn note_time(now: u64) {
    if now < NEXT_CHECK.load(Ordering::Relaxed) {
        return;
    }
    NEXT_CHECK.store(now.saturating_add(CHECK_EVERY_NS), Ordering::Relaxed);
    if let Some(shm) = crate::shm() {
        shm.recorder_hung_up();
    }
}

/// Stops tracing if the recording is closed; returns whether tracing has stopped.
/// Signal-safe (raw system calls, no allocation, no lock).
pub(crate) fn stop_if_closed() -> bool {
    if stopped() {
        return true;
    }
    if !closed() {
        return false;
    }
    stop_tracing();
    true
}

/// From the `mmap` hook: checks the recorder (rate-limited) and stops tracing if it is
/// gone; returns whether tracing has stopped (the new mapping is then not traced).
pub(crate) fn check_now() -> bool {
    if stopped() {
        return true;
    }
    note_time(sys::now_ns());
    stop_if_closed()
}

/// Gives every traced region the program's protection back, once per process, and says
/// so on stderr.
fn stop_tracing() {
    if STATE
        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    regions::overlapping(0, u64::MAX, |r| open(&r));
    STATE.store(2, Ordering::SeqCst);
    say_gone(crate::shm());
}

/// Stops tracing as when the recorder is gone, without a word on stderr: the recorder
/// is leaving an attached process ([`crate::attached::detach_begin`]).
pub(crate) fn stop_quietly() {
    if STATE
        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        regions::overlapping(0, u64::MAX, |r| open(&r));
        STATE.store(2, Ordering::SeqCst);
    }
}

/// At start-up (an image executed after the recorder died): whether the recorder is gone;
/// then says so, and the process runs untraced.
pub(crate) fn gone_at_start(shm: &mmio_trace_ring::Shm) -> bool {
    if !shm.recorder_hung_up() {
        return false;
    }
    STATE.store(2, Ordering::SeqCst);
    say_gone(Some(*shm));
    true
}

fn say_gone(shm: Option<mmio_trace_ring::Shm>) {
    let pid = shm.map_or(0, |s| s.header().recorder_pid as u64);
    say(&[
        b"mmio-trace: the recorder is gone (pid ",
        digits(pid, &mut [0; 64]),
        b"); tracing stopped, the program runs on untraced\n",
    ]);
}

/// Gives region `r`'s pages the program's protection.
fn open(r: &Region) {
    // SAFETY: the program's own device mapping, given the protection it asked for.
    unsafe { sys::mprotect(r.start as usize, r.len as usize, r.prot) };
}

/// The fault path, after tracing stopped, for a fault at a traced address that the
/// program's protection allows: opens the region's pages (a thread that faulted before
/// they were opened, or a page a single step closed again) so that the instruction,
/// retried, runs natively.
pub(crate) fn reopen(r: &Region) {
    open(r);
}

/// After a single step closed `len` bytes at `page` again: if tracing stopped meanwhile,
/// opens them (the regions' own protection).
pub(crate) fn after_close(page: u64, len: u64) {
    if stopped() {
        regions::overlapping(page, len, |r| open(&r));
    }
}

fn digits(v: u64, buf: &mut [u8; 64]) -> &[u8] {
    sys::digits(v, 10, buf)
}

/// Writes the concatenation of `parts` to stderr in one `write` (raw system call: signal
/// handler context; a closed stderr is ignored). Not into a pipe nobody reads any more
/// (stderr may have been a pipe to the recorder): that would raise SIGPIPE, whose
/// default action kills the program.
fn say(parts: &[&[u8]]) {
    const POLLOUT: i16 = 0x4;
    const POLLERR: i16 = 0x8;
    const POLLHUP: i16 = 0x10;
    const POLLNVAL: i16 = 0x20;
    // struct pollfd { int fd = 2; short events = POLLOUT; short revents; }
    let mut pfd = [0u8; 8];
    pfd[..4].copy_from_slice(&2i32.to_ne_bytes());
    pfd[4..6].copy_from_slice(&POLLOUT.to_ne_bytes());
    // SAFETY: poll(&pfd, 1, 0) on one pollfd; returns at once.
    let r = unsafe { sys::syscall6(7, pfd.as_mut_ptr() as usize, 1, 0, 0, 0, 0) };
    let revents = i16::from_ne_bytes([pfd[6], pfd[7]]);
    if r < 0 || revents & (POLLERR | POLLHUP | POLLNVAL) != 0 {
        return;
    }
    let mut buf = [0u8; 256];
    let mut n = 0;
    for p in parts {
        let k = p.len().min(buf.len() - n);
        buf[n..n + k].copy_from_slice(&p[..k]);
        n += k;
    }
    // SAFETY: write(2, buf, n) from a local buffer.
    unsafe { sys::syscall6(1, 2, buf.as_ptr() as usize, n, 0, 0, 0) };
}
