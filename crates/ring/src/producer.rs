//! The traced-process side: claim a ring, publish events. Signal-safe, allocation-free.

use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use crate::record::{Kind, Record, MAX_MARK};
use crate::{state, sys, Clock, Header, RingCtl, BUSY, IDLE, MAGIC, RECORD_SIZE, VERSION};

/// This process's read end of the recorder's liveness pipe (-1: none).
static RECORDER_FD: AtomicI32 = AtomicI32::new(-1);

/// Sets this process's read end of the recorder's liveness pipe ([`crate::ENV_LIVE_FD`]).
pub fn set_recorder_fd(fd: i32) {
    RECORDER_FD.store(fd, Ordering::Relaxed);
}

/// This process's read end of the recorder's liveness pipe, if any (to keep the program
/// from closing it).
pub fn recorder_fd() -> Option<i32> {
    let fd = RECORDER_FD.load(Ordering::Relaxed);
    (fd >= 0).then_some(fd)
}

/// A view of the shared memory as mapped in this process.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Shm {
    base: *mut u8,
    len: usize,
}

// SAFETY: all shared state behind `base` is accessed through atomics or through the SPSC
// protocol (one producer per ring); the pointer itself is immutable.
unsafe impl Send for Shm {}
// SAFETY: as above.
unsafe impl Sync for Shm {}

/// Why a producer stopped waiting for room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// The recorder is gone or has closed the recording: nothing will drain the ring.
    RecorderGone,
    /// The event has more records than the ring holds: it can never be published.
    TooLarge,
    /// The first record's word 3 is zero (a data record, not an event's first record):
    /// it could never be committed.
    NotAnEvent,
}

impl Shm {
    /// Wraps a mapping of the shared memory after checking its header.
    ///
    /// # Safety
    /// `base..base+len` must be a live shared mapping of a memfd initialised by
    /// [`crate::Consumer::create`], and stay mapped while the returned value or any
    /// [`Producer`] made from it is used.
    pub unsafe fn from_raw(base: *mut u8, len: usize) -> Option<Shm> {
        if len < crate::HEADER_SIZE {
            return None;
        }
        let shm = Shm { base, len };
        let h = shm.header();
        if h.magic != MAGIC || h.version != VERSION || h.record_size as usize != RECORD_SIZE {
            return None;
        }
        let layout = h.layout();
        if !layout.is_valid() || layout.total_size() > len {
            return None;
        }
        Some(shm)
    }

    /// Wraps a mapping [`Shm::from_raw`] accepted before, without checking it again (the
    /// fault path rebuilds its view on every event).
    ///
    /// # Safety
    /// `base` and `len` must be those of a value [`Shm::from_raw`] returned, and the
    /// mapping must still be live.
    #[inline]
    pub unsafe fn from_checked(base: *mut u8, len: usize) -> Shm {
        Shm { base, len }
    }

    /// The base address.
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// The mapping length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (a valid mapping holds at least the header).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The header.
    pub fn header(&self) -> &Header {
        // SAFETY: `from_raw`'s contract: the mapping holds an initialised header.
        unsafe { &*(self.base as *const Header) }
    }

    /// The recording's clock.
    pub fn clock(&self) -> Clock {
        self.header().clock()
    }

    /// The recording's clock now (events are stamped with it).
    #[inline]
    pub fn now(&self) -> u64 {
        self.clock().now()
    }

    /// The control block of ring `i` (< nrings).
    pub fn ctl(&self, i: usize) -> &RingCtl {
        debug_assert!(i < self.header().nrings as usize);
        // SAFETY: within the mapping (checked against total_size in from_raw), aligned.
        unsafe { &*(self.base.add(crate::ctl_offset(i)) as *const RingCtl) }
    }

    pub(crate) fn data(&self, i: usize) -> *mut Record {
        let off = self.header().layout().ring_offset(i as u32);
        // SAFETY: within the mapping (checked in from_raw).
        unsafe { self.base.add(off) as *mut Record }
    }

    /// Records in ring `i`.
    #[inline]
    pub fn capacity(&self, i: usize) -> u64 {
        self.header().layout().capacity_of(i as u32) as u64
    }

    /// Claims a free ring for thread `tid` of process `pid`, the lowest-numbered one (so
    /// that the rings in use stay below the high-water mark the recorder scans); `None`
    /// when all are taken.
    pub fn claim(&self, pid: u32, tid: u32) -> Option<Producer> {
        let n = self.header().nrings as usize;
        for i in 0..n {
            let c = self.ctl(i);
            if c.state.load(Ordering::Relaxed) == state::FREE
                && c.state
                    .compare_exchange(
                        state::FREE,
                        state::CLAIMING,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                c.pid.store(pid, Ordering::Relaxed);
                c.tid.store(tid, Ordering::Relaxed);
                c.pending.store(IDLE, Ordering::Relaxed);
                // Before the ring can hold an event: a consumer that has not seen the new
                // mark yet read its clock before this, so before any of its timestamps.
                self.header().hwm.fetch_max(i as u32 + 1, Ordering::SeqCst);
                c.state.store(state::OWNED, Ordering::Release);
                // SAFETY: claimed just above by the caller's thread.
                return Some(unsafe { Producer::from_index(*self, i as u32) });
            }
        }
        None
    }

    /// As [`Shm::claim`], but when every ring is taken waits (up to `timeout_ns`;
    /// `u64::MAX`: while the recorder lives) for the recorder to free one: rings of ended
    /// threads are freed once drained. Waiting keeps the no-loss promise when a program
    /// has more live threads than rings. `None`: the time ran out, or the recorder is gone.
    pub fn claim_wait(&self, pid: u32, tid: u32, timeout_ns: u64) -> Option<Producer> {
        let deadline = sys::monotonic_ns_syscall().saturating_add(timeout_ns);
        loop {
            if let Some(p) = self.claim(pid, tid) {
                return Some(p);
            }
            if self.header().closed.load(Ordering::Relaxed) != 0
                || sys::monotonic_ns_syscall() >= deadline
                || self.recorder_gone()
            {
                return None;
            }
            sys::sleep_ns(1_000_000);
        }
    }

    /// Whether the recorder process has ended (then marks the recording closed, so that
    /// every producer of every traced process stops waiting for room at once: the program
    /// runs on, untraced, its accesses still performed).
    pub fn recorder_gone(&self) -> bool {
        let h = self.header();
        if h.closed.load(Ordering::Relaxed) != 0 {
            return true;
        }
        // The pipe, not the pid: a pid can be reused by another process once the recorder
        // is reaped, and names another process (or none) in another pid namespace. Only a
        // process without the pipe (an in-process consumer, or a program that got rid of
        // the descriptor behind our back) falls back to the pid.
        let gone = match sys::hung_up(RECORDER_FD.load(Ordering::Relaxed)) {
            Some(gone) => gone,
            None => !sys::process_alive(h.recorder_pid),
        };
        if !gone {
            return false;
        }
        h.closed.store(1, Ordering::SeqCst);
        true
    }

    /// As [`Shm::recorder_gone`], told by the liveness pipe only (or the `closed` flag): no
    /// pid fallback, which may name another process in another pid namespace. For checks
    /// made while nothing waits (stopping tracing on a wrong guess would lose events).
    pub fn recorder_hung_up(&self) -> bool {
        let h = self.header();
        if h.closed.load(Ordering::Relaxed) != 0 {
            return true;
        }
        if sys::hung_up(RECORDER_FD.load(Ordering::Relaxed)) != Some(true) {
            return false;
        }
        h.closed.store(1, Ordering::SeqCst);
        true
    }

    /// Hands out a mapping id unique across all traced processes.
    pub fn next_map_id(&self) -> u64 {
        self.header().next_map_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The producer handle of one claimed ring: a few plain values, `#[repr(C)]` so that a
/// per-thread block can embed it and generated code can read it at fixed offsets
/// ([`Producer::OFFSET_CTL`], [`Producer::OFFSET_DATA`], [`Producer::OFFSET_MASK`]).
/// Everything a writer changes lives in the shared memory (the ring's [`RingCtl`]: the
/// reservation counter, `pending`, the cached tail), so copies of a handle, and handles
/// rebuilt with [`Producer::from_index`], are interchangeable.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Producer {
    /// The ring's control block.
    ctl: *const RingCtl,
    /// The ring's first record.
    data: *mut Record,
    /// Records in the ring, less one (a power of two, less one).
    mask: u64,
    shm: Shm,
    index: u32,
    /// [`Clock`] as `u32`.
    clock: u32,
}

// SAFETY: `ctl` and `data` point into the shared mapping (see `Shm`); only the owning
// thread (and its signal handlers) write through them.
unsafe impl Send for Producer {}

/// An event begun with [`Producer::begin`]: its timestamp, and whether this writer is the
/// outermost one of its ring (which ends the busy state when it finishes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "an event begun must be finished (or ended) so that the ring is idle again"]
pub struct Open {
    /// The event's timestamp in the recording's clock ([`crate::Header::clock`]).
    pub ts: u64,
    outer: bool,
}

impl Open {
    /// Whether this event was begun while no other event of its ring was being written.
    pub fn is_outer(&self) -> bool {
        self.outer
    }
}

/// Adds `n` to `*word` and returns its old value, in one unlocked `xadd`: a same-thread
/// signal handler runs wholly before or after it, and no other thread writes the word, so
/// no `lock` prefix (and its cost) is needed.
#[inline(always)]
fn reserve(word: &AtomicU64, n: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let mut v = n;
        // SAFETY: `word` is a valid, aligned u64 (an atomic) in the shared mapping.
        unsafe {
            core::arch::asm!(
                "xadd qword ptr [{p}], {v}",
                p = in(reg) word.as_ptr(),
                v = inout(reg) v,
                options(nostack),
            )
        };
        v
    }
    #[cfg(not(target_arch = "x86_64"))]
    word.fetch_add(n, Ordering::Relaxed)
}

impl Producer {
    /// Byte offset of the control block pointer (`*const RingCtl`).
    pub const OFFSET_CTL: usize = core::mem::offset_of!(Producer, ctl);
    /// Byte offset of the first record's pointer (`*mut Record`).
    pub const OFFSET_DATA: usize = core::mem::offset_of!(Producer, data);
    /// Byte offset of the capacity mask (`u64`: records in the ring, less one).
    pub const OFFSET_MASK: usize = core::mem::offset_of!(Producer, mask);

    /// Rebuilds a handle for ring `index` (e.g. from a per-thread slot).
    ///
    /// # Safety
    /// The ring must have been claimed by this thread and `shm` must be valid.
    pub unsafe fn from_index(shm: Shm, index: u32) -> Producer {
        Producer {
            ctl: shm.ctl(index as usize) as *const RingCtl,
            data: shm.data(index as usize),
            mask: shm.capacity(index as usize) - 1,
            shm,
            index,
            clock: shm.header().clock,
        }
    }

    /// The ring index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// What generated code needs to write into this ring without the handle: the control
    /// block's address (reservation counter `head`, cached tail), the first record's
    /// address and the capacity mask.
    pub fn raw_parts(&self) -> (*const RingCtl, *mut Record, u64) {
        (self.ctl, self.data, self.mask)
    }

    fn ctl(&self) -> &RingCtl {
        // SAFETY: points into the live shared mapping (`from_index`'s contract).
        unsafe { &*self.ctl }
    }

    /// The recording's clock now (what [`Producer::begin`] stamps with).
    #[inline]
    pub fn now(&self) -> u64 {
        if self.clock == Clock::Tsc as u32 {
            crate::clock::rdtsc()
        } else {
            crate::clock::monotonic_ns()
        }
    }

    /// Begins an event: marks the ring busy (unless a writer this one interrupted already
    /// did), takes the timestamp, and tells the consumer. Then publish with
    /// [`Producer::finish`] (or end with [`Producer::end`]).
    #[inline]
    pub fn begin(&self) -> Open {
        self.begin_with(|| self.now())
    }

    /// As [`Producer::begin`], with the timestamp `now` returns (read after the ring is
    /// marked busy; it must be in the recording's clock).
    #[inline]
    pub fn begin_with(&self, now: impl FnOnce() -> u64) -> Open {
        let c = self.ctl();
        // Only this thread and its handlers write `pending`, and a handler restores what
        // it found before the interrupted code runs again: the value read here stays true
        // until this writer changes it, even if a handler runs in between.
        let outer = c.pending.load(Ordering::Relaxed) == IDLE;
        if outer {
            // Sequentially consistent (a locked store): visible to the consumer before the
            // clock is read below.
            c.pending.store(BUSY, Ordering::SeqCst);
        }
        let ts = now();
        if outer {
            c.pending.store(ts, Ordering::Release);
        }
        Open { ts, outer }
    }

    /// Publishes the event begun as `open` (1..=capacity records; none: nothing) and, for
    /// the outermost writer, ends the busy state. As [`Producer::push`] otherwise.
    #[inline]
    pub fn finish(&self, open: Open, recs: &[Record]) -> Result<(), WaitError> {
        let r = self.push(recs);
        self.end(open);
        r
    }

    /// Ends the event begun as `open` without publishing anything.
    #[inline]
    pub fn end(&self, open: Open) {
        if open.outer {
            self.ctl().pending.store(IDLE, Ordering::Release);
        }
    }

    /// Publishes one event (1..=capacity records; its first record's word 3 nonzero, as
    /// every [`Record::new`] is) without touching the busy state: reserve, fill, commit
    /// (see the crate notes). Waits while the ring has less free room than the event
    /// needs: an event is published whole or not at all. On error nothing was published
    /// (the recorder is gone, the event is larger than the ring, or it is not an event):
    /// the caller counts it as lost. An event pushed without [`Producer::begin`] has no
    /// place in the merge by time (tests; events whose time is known to be past the
    /// watermark).
    #[inline]
    pub fn push(&self, recs: &[Record]) -> Result<(), WaitError> {
        let Some(first) = recs.first() else {
            return Ok(());
        };
        let n = recs.len() as u64;
        if n > self.mask + 1 {
            return Err(WaitError::TooLarge);
        }
        if first.0[3] == 0 {
            return Err(WaitError::NotAnEvent);
        }
        let c = self.ctl();
        let head = reserve(&c.head, n);
        if head + n - c.tail_cache.load(Ordering::Relaxed) > self.mask + 1 {
            self.wait_room(head + n)?;
        }
        let data = self.data;
        let at = |k: u64| {
            // SAFETY: masked into the ring; these slots were reserved above for this writer
            // alone and are free (the room check), and the consumer reads none of them
            // until the commit below.
            unsafe { data.add(((head + k) & self.mask) as usize) }
        };
        let slot0 = at(0) as *mut u64;
        // SAFETY: words 0..3 of the first slot, reserved for this writer (see `at`).
        unsafe {
            slot0.write_volatile(first.0[0]);
            slot0.add(1).write_volatile(first.0[1]);
            slot0.add(2).write_volatile(first.0[2]);
        }
        for (k, r) in recs.iter().enumerate().skip(1) {
            // SAFETY: as above.
            unsafe { at(k as u64).write_volatile(*r) };
        }
        // SAFETY: word 3 of the first slot: aligned, reserved (see `at`); the commit.
        unsafe { AtomicU64::from_ptr(slot0.add(3)) }.store(first.0[3], Ordering::Release);
        Ok(())
    }

    /// Waits until the ring has room up to record `end` (exclusive): for generated code
    /// that reserved records itself (by the same `xadd`) and found the ring full. As
    /// [`Producer::push`]'s wait: an error means the recorder is gone.
    pub fn wait_for_room(&self, end: u64) -> Result<(), WaitError> {
        if end - self.ctl().tail_cache.load(Ordering::Relaxed) <= self.mask + 1 {
            return Ok(());
        }
        self.wait_room(end)
    }

    /// Waits until the ring has room up to record `end` (exclusive), refreshing the
    /// cached tail.
    #[cold]
    fn wait_room(&self, end: u64) -> Result<(), WaitError> {
        let h = self.shm.header();
        let c = self.ctl();
        let cap = self.mask + 1;
        let mut spins = 0u32;
        loop {
            let seq = c.tail_seq.load(Ordering::Acquire);
            let tail = c.tail.load(Ordering::Acquire);
            c.tail_cache.store(tail, Ordering::Relaxed);
            if end - tail <= cap {
                return Ok(());
            }
            if h.closed.load(Ordering::Relaxed) != 0 {
                return Err(WaitError::RecorderGone);
            }
            spins += 1;
            if spins == 1 {
                h.full_waits.fetch_add(1, Ordering::Relaxed);
            }
            if spins < 64 {
                core::hint::spin_loop();
                continue;
            }
            // Before each sleep (at most every 10 ms while the ring stays full): is the
            // recorder still there? A killed one never sets `closed`; set it for it.
            if self.shm.recorder_gone() {
                return Err(WaitError::RecorderGone);
            }
            c.waiters.store(1, Ordering::SeqCst);
            // Re-check after announcing ourselves, so a consumer that advanced the tail
            // meanwhile either sees the waiter flag or we see its new tail_seq.
            if c.tail_seq.load(Ordering::SeqCst) == seq {
                sys::futex_wait(&c.tail_seq, seq, 10_000_000);
            }
        }
    }

    /// Publishes a marker with `text` at time `ts`. Text past [`MAX_MARK`] bytes is not
    /// carried, but the length field keeps the whole text's length, so that the consumer
    /// can say the marker was cut.
    pub fn push_mark(&self, ts: u64, text: &[u8]) -> Result<(), WaitError> {
        let full = text.len() as u64;
        let text = &text[..text.len().min(MAX_MARK)];
        let mut recs = [Record::default(); 1 + MAX_MARK / 32];
        recs[0] = Record::new(ts, 0, full, 0, 0, Kind::Mark);
        let mut n = 1;
        for chunk in text.chunks(32) {
            recs[n] = Record::data(chunk);
            n += 1;
        }
        self.push(&recs[..n])
    }

    /// Marks the ring's thread as gone; the consumer frees the ring once drained.
    pub fn retire(&self) {
        self.ctl().state.store(state::RETIRED, Ordering::Release);
    }
}
