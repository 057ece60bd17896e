//! Writing events into the calling thread's ring.

use core::sync::atomic::Ordering;

use mmio_trace_ring::{Kind, Open, Producer, Record};

use crate::{ctx, sys, threads};

// The ring's protocol lets a same-thread signal handler (a program handler whose device
// access faults, a nested fault) interrupt a writer at any instruction and write its own
// events (see the ring crate's notes): the fault path blocks nothing for the ring.

/// Async signals blocked while an event is written from normal context (MAP, UNMAP,
/// MARK, the kernel's accesses for a system call). Not for the ring's sake: a program
/// handler that interrupted the writer and left with `siglongjmp` would abandon a
/// reserved, never committed event, behind which the recorder would wait for good (and
/// the thread's first claim of a ring is not reentrant). Two system calls per event, at
/// the rate of `mmap` calls; the fault path already runs with these signals blocked.
struct NormalContext(u64);

impl NormalContext {
    fn enter() -> Self {
        let g = NormalContext(ctx::block_async());
        // It may be the first thing a child of a raw fork does.
        crate::check_fork();
        g
    }
}

impl Drop for NormalContext {
    fn drop(&mut self) {
        ctx::restore_mask(self.0);
    }
}

/// The recording's clock now (what events are stamped with): the TSC, or
/// `CLOCK_MONOTONIC` through the vDSO; never libc.
#[inline]
pub(crate) fn now() -> u64 {
    match crate::shm() {
        Some(shm) => shm.now(),
        None => sys::now_ns(),
    }
}

/// An event being written: the ring is marked busy and the timestamp taken.
pub(crate) struct Pending {
    p: Option<(Producer, Open)>,
    /// The event's timestamp (the recording's clock).
    pub ts: u64,
}

impl Drop for Pending {
    /// An event dropped unpublished (a path that returned early) still ends the busy
    /// state: left busy, the ring would hold the merge back for the rest of the recording
    /// (later events of the thread would count themselves nested and leave it so).
    fn drop(&mut self) {
        if let Some((p, open)) = self.p.take() {
            p.end(open);
        }
    }
}

/// Starts an event on the calling thread's ring (call before the access it records).
#[inline]
pub(crate) fn begin() -> Pending {
    let p = threads::current().and_then(|s| s.producer());
    let (p, ts) = match p {
        Some(p) => {
            let open = p.begin();
            (Some((p, open)), open.ts)
        }
        None => (None, now()),
    };
    // Is the recorder still there? (At most every few ms; the fault path then stops
    // tracing if it is gone.)
    let ns = crate::shm().map_or(ts, |s| s.header().approx_ns(ts));
    crate::stop::note_time(ns);
    Pending { p, ts }
}

fn lost() {
    if let Some(shm) = crate::shm() {
        shm.header().lost.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts `n` events that could not be written (the recorder says so in the log).
pub(crate) fn lost_events(n: u64) {
    if let Some(shm) = crate::shm() {
        shm.header().lost.fetch_add(n, Ordering::Relaxed);
    }
}

impl Pending {
    fn push(mut self, recs: &[Record]) {
        match self.p.take() {
            Some((p, open)) => {
                if p.finish(open, recs).is_err() {
                    lost();
                }
            }
            None => lost(),
        }
    }

    /// Publishes an access of `bytes.len()` bytes (1..=64) at `addr`.
    #[inline]
    pub fn access(self, write: bool, addr: u64, map_id: u64, bytes: &[u8], pc: u64) {
        let width = bytes.len().min(64);
        let w1 = Record::access_word(addr, map_id);
        if width <= 8 {
            let mut v = [0u8; 8];
            v[..width].copy_from_slice(&bytes[..width]);
            let kind = if write { Kind::Write } else { Kind::Read };
            let r = Record::new(self.ts, w1, u64::from_le_bytes(v), pc, width as u8, kind);
            self.push(&[r]);
        } else {
            let kind = if write {
                Kind::WriteWide
            } else {
                Kind::ReadWide
            };
            let mut recs = [Record::default(); 3];
            recs[0] = Record::new(self.ts, w1, 0, pc, width as u8, kind);
            let mut n = 1;
            for c in bytes[..width].chunks(32) {
                recs[n] = Record::data(c);
                n += 1;
            }
            self.push(&recs[..n]);
        }
    }

    /// Publishes an access whose value is a register-sized integer.
    #[inline]
    pub fn access_value(self, write: bool, addr: u64, map_id: u64, width: u8, value: u64, pc: u64) {
        let b = value.to_le_bytes();
        self.access(write, addr, map_id, &b[..(width as usize).clamp(1, 8)], pc);
    }

    /// Publishes a run of `count` elements of one string instruction as one
    /// [`Kind::Str`] event: `first` (and `second`) are word 1 of the first element's
    /// access of each stream ([`Record::access_word`]), `flags` the `Record::STR_*`
    /// flags, `values` the elements' values (`width` bytes each, at most
    /// [`mmio_trace_ring::MAX_STR_VALUES`]; with `STR_SAME` the one value).
    #[allow(clippy::too_many_arguments)]
    pub fn string(
        self,
        first: u64,
        second: Option<u64>,
        width: u8,
        count: u32,
        mut flags: u64,
        values: &[u8],
        pc: u64,
    ) {
        const MAX: usize = mmio_trace_ring::MAX_STR_VALUES;
        let values = &values[..values.len().min(MAX)];
        if second.is_some() {
            flags |= Record::STR_SECOND;
        }
        let w2 = u64::from(count) | flags << 32;
        let mut recs = [Record::default(); 2 + MAX / 32];
        recs[0] = Record::new(self.ts, first, w2, pc, width, Kind::Str);
        let mut n = 1;
        if let Some(s) = second {
            recs[1] = Record([s, 0, 0, 0]);
            n = 2;
        }
        for c in values.chunks(32) {
            recs[n] = Record::data(c);
            n += 1;
        }
        self.push(&recs[..n]);
    }

    /// Ends the event without publishing anything (the access it was for faulted and did
    /// not happen): the ring is idle again, so the merge does not wait for it.
    pub fn cancel(mut self) {
        if let Some((p, open)) = self.p.take() {
            p.end(open);
        }
    }

    /// Publishes an `UNKNOWN` (an access whose direction or value could not be known).
    pub fn unknown(self, addr: u64, map_id: u64, opcode: u64, pc: u64) {
        let r = Record::new(
            self.ts,
            Record::access_word(addr, map_id),
            opcode,
            pc,
            0,
            Kind::Unknown,
        );
        self.push(&[r]);
    }
}

/// Publishes a `MAP` of `len` bytes at `virt` with physical address `phys`.
pub fn map(virt: u64, len: u64, phys: u64, map_id: u64, pc: u64) {
    let _blocked = NormalContext::enter();
    let e = begin();
    let ts = e.ts;
    e.push(&[
        Record::new(ts, virt, len, pc, 0, Kind::Map),
        Record([phys, map_id, 0, 0]),
    ]);
}

/// Publishes an `UNMAP` of mapping `map_id`.
pub fn unmap(map_id: u64, pc: u64) {
    let _blocked = NormalContext::enter();
    let e = begin();
    let ts = e.ts;
    e.push(&[Record::new(ts, 0, map_id, pc, 0, Kind::Unmap)]);
}

/// Publishes a `MARK` with `text` from the calling thread.
pub fn mark(text: &[u8]) {
    let _blocked = NormalContext::enter();
    let mut e = begin();
    let ts = e.ts;
    match e.p.take() {
        Some((p, open)) => {
            let r = p.push_mark(ts, text);
            p.end(open);
            if r.is_err() {
                lost();
            }
        }
        None => lost(),
    }
}

/// Publishes a one-record event from normal context (or a program's signal handler: it
/// takes no stack to speak of), timed now.
pub(crate) fn publish_one(mut first: Record) {
    let _blocked = NormalContext::enter();
    let e = begin();
    first.0[0] = e.ts;
    e.push(&[first]);
}

/// Publishes one event from normal context: `first` (its timestamp replaced by `ts`, or
/// by the time now) and `data` in data records after it (at most 4096 bytes).
pub(crate) fn publish(ts: Option<u64>, mut first: Record, data: &[u8]) {
    const MAX: usize = 4096;
    let _blocked = NormalContext::enter();
    let e = begin();
    first.0[0] = ts.unwrap_or(e.ts);
    let mut recs = [Record::default(); 1 + MAX / 32];
    recs[0] = first;
    let mut n = 1;
    for c in data[..data.len().min(MAX)].chunks(32) {
        recs[n] = Record::data(c);
        n += 1;
    }
    e.push(&recs[..n]);
}

/// Publishes a note for the recorder (`first`, timed now, and up to 512 bytes of `data`)
/// from normal context, never waiting for a ring: a thread that holds none borrows a free
/// one for the note and gives it up again (threads that never touch the device hold no
/// ring), and with every ring in use the note is dropped (it only feeds a warning).
pub(crate) fn note(mut first: Record, data: &[u8]) {
    const MAX: usize = 512;
    let _blocked = NormalContext::enter();
    let Some(s) = threads::current() else { return };
    let Some((p, borrowed)) = s.producer_nowait() else {
        return;
    };
    let open = p.begin();
    first.0[0] = open.ts;
    let mut recs = [Record::default(); 1 + MAX / 32];
    recs[0] = first;
    let mut n = 1;
    for c in data[..data.len().min(MAX)].chunks(32) {
        recs[n] = Record::data(c);
        n += 1;
    }
    if p.finish(open, &recs[..n]).is_err() {
        lost();
    }
    if borrowed {
        threads::retire_ring();
    }
}
