//! The traced-process side: claim a ring, publish events. Signal-safe, allocation-free.

use std::sync::atomic::{fence, AtomicI32, Ordering};

use crate::record::{Kind, Record, MAX_MARK};
use crate::{state, sys, Header, RingCtl, BUSY, IDLE, MAGIC, RECORD_SIZE, VERSION};

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

/// The producer handle of one claimed ring (a few plain values: cheap to keep in a
/// fixed per-thread slot and to use from generated code).
#[derive(Clone, Copy, Debug)]
pub struct Producer {
    shm: Shm,
    index: u32,
    /// The ring's size in records, and its first record (what each push needs, computed
    /// once from the layout).
    cap: u32,
    data: *mut Record,
}

// SAFETY: `data` points into the shared mapping (see `Shm`); only the owning thread writes
// through it (SPSC).
unsafe impl Send for Producer {}

impl Producer {
    /// Rebuilds a handle for ring `index` (e.g. from a per-thread slot).
    ///
    /// # Safety
    /// The ring must have been claimed by this thread and `shm` must be valid.
    pub unsafe fn from_index(shm: Shm, index: u32) -> Producer {
        Producer {
            shm,
            index,
            cap: shm.capacity(index as usize) as u32,
            data: shm.data(index as usize),
        }
    }

    /// The ring index.
    pub fn index(&self) -> u32 {
        self.index
    }

    fn ctl(&self) -> &RingCtl {
        self.shm.ctl(self.index as usize)
    }

    /// Marks the ring busy: call before reading the clock for an event, then
    /// [`Producer::stamp`] with the timestamp, then publish with [`Producer::push`].
    #[inline]
    pub fn begin(&self) {
        self.ctl().pending.store(BUSY, Ordering::SeqCst);
    }

    /// Tells the consumer the timestamp of the event being written.
    #[inline]
    pub fn stamp(&self, ts: u64) {
        self.ctl().pending.store(ts, Ordering::SeqCst);
    }

    /// Publishes one event (1..=capacity records) and ends the busy state; waits while the
    /// ring has less free room than the event needs (an event is published whole or not
    /// at all). On error nothing was published (the recorder is gone, or the event is
    /// larger than the ring): the caller counts it as lost.
    #[inline]
    pub fn push(&self, recs: &[Record]) -> Result<(), WaitError> {
        let r = self.write(recs);
        self.ctl().pending.store(IDLE, Ordering::Release);
        r
    }

    fn write(&self, recs: &[Record]) -> Result<(), WaitError> {
        let h = self.shm.header();
        let cap = self.cap as u64;
        let c = self.ctl();
        let head = c.head.load(Ordering::Relaxed);
        let need = recs.len() as u64;
        if need > cap {
            return Err(WaitError::TooLarge);
        }
        let mut spins = 0u32;
        loop {
            let seq = c.tail_seq.load(Ordering::Acquire);
            let tail = c.tail.load(Ordering::Acquire);
            if head + need - tail <= cap {
                break;
            }
            if h.closed.load(Ordering::Relaxed) != 0 {
                return Err(WaitError::RecorderGone);
            }
            spins += 1;
            if spins == 1 {
                h.full_waits.fetch_add(1, Ordering::Relaxed);
            }
            if spins < 64 {
                std::hint::spin_loop();
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
        let data = self.data;
        for (k, r) in recs.iter().enumerate() {
            let slot = (head + k as u64) & (cap - 1);
            // SAFETY: slot < capacity; the slot is free (head - tail < cap) and only this
            // producer writes it until the head store below publishes it.
            unsafe { data.add(slot as usize).write_volatile(*r) };
        }
        fence(Ordering::Release);
        c.head.store(head + need, Ordering::Release);
        Ok(())
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
