//! The region registry: which virtual ranges are traced, read without locks.
//!
//! A fixed array of slots, each guarded by its own sequence counter (a seqlock): the fault
//! handler copies a slot and retries if a writer changed it meanwhile, so lookups never
//! block and never allocate. Writers (mmap/munmap/mprotect/mremap hooks, normal context
//! only) serialise on one spin lock, with asynchronous signals blocked while they hold it:
//! a program handler interrupting a writer on the same thread would otherwise spin for
//! ever on the half-written slot (a lookup) or on the lock (its own `mmap`). Updates are
//! rare; lookups are on every fault.

use std::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// How many regions can be traced at once.
pub const MAX_REGIONS: usize = 1024;

/// One traced range, as the fault handler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First traced byte (page-aligned).
    pub start: u64,
    /// Length in bytes (page multiple).
    pub len: u64,
    /// Address of the always-accessible alias of the same memory (0 when there is none:
    /// every access then takes the step path).
    pub alias: u64,
    /// Physical address (or file offset) of `start`.
    pub phys: u64,
    /// Mapping id, as logged in `MAP`.
    pub map_id: u64,
    /// The protection the program asked for (`PROT_*`); accesses it forbids are delivered
    /// to the program as faults.
    pub prot: i32,
    /// `phys - file offset` (wrapping), the same for every piece of a mapping: the file
    /// offset of an address, for the device rules' `--range`/`--bypass`.
    pub phys_minus_off: u64,
}

impl Region {
    /// Whether `addr` lies in the region.
    #[inline]
    pub fn contains(&self, addr: u64) -> bool {
        addr.wrapping_sub(self.start) < self.len
    }

    /// The alias address of `addr` (which must be inside).
    #[inline]
    pub fn alias_of(&self, addr: u64) -> u64 {
        self.alias + (addr - self.start)
    }

    /// The physical address of `addr` (which must be inside).
    #[inline]
    pub fn phys_of(&self, addr: u64) -> u64 {
        self.phys + (addr - self.start)
    }

    /// The file offset of `addr` (which must be inside).
    #[inline]
    pub fn off_of(&self, addr: u64) -> u64 {
        self.phys_of(addr).wrapping_sub(self.phys_minus_off)
    }
}

struct Slot {
    seq: AtomicU32,
    start: AtomicU64,
    len: AtomicU64,
    alias: AtomicU64,
    phys: AtomicU64,
    map_id: AtomicU64,
    prot: AtomicI32,
    phys_minus_off: AtomicU64,
}

impl Slot {
    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY: Slot = Slot {
        seq: AtomicU32::new(0),
        start: AtomicU64::new(0),
        len: AtomicU64::new(0),
        alias: AtomicU64::new(0),
        phys: AtomicU64::new(0),
        map_id: AtomicU64::new(0),
        prot: AtomicI32::new(0),
        phys_minus_off: AtomicU64::new(0),
    };

    fn read(&self) -> Option<Region> {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 != 0 {
                std::hint::spin_loop();
                continue;
            }
            let r = Region {
                start: self.start.load(Ordering::Relaxed),
                len: self.len.load(Ordering::Relaxed),
                alias: self.alias.load(Ordering::Relaxed),
                phys: self.phys.load(Ordering::Relaxed),
                map_id: self.map_id.load(Ordering::Relaxed),
                prot: self.prot.load(Ordering::Relaxed),
                phys_minus_off: self.phys_minus_off.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return (r.len != 0).then_some(r);
            }
        }
    }

    /// Writer side; the registry lock is held.
    fn write(&self, r: Option<Region>) {
        let r = r.unwrap_or(Region {
            start: 0,
            len: 0,
            alias: 0,
            phys: 0,
            map_id: 0,
            prot: 0,
            phys_minus_off: 0,
        });
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.start.store(r.start, Ordering::Relaxed);
        self.len.store(r.len, Ordering::Relaxed);
        self.alias.store(r.alias, Ordering::Relaxed);
        self.phys.store(r.phys, Ordering::Relaxed);
        self.map_id.store(r.map_id, Ordering::Relaxed);
        self.prot.store(r.prot, Ordering::Relaxed);
        self.phys_minus_off
            .store(r.phys_minus_off, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }
}

static SLOTS: [Slot; MAX_REGIONS] = [Slot::EMPTY; MAX_REGIONS];
/// Slots ever used: lookups scan only these.
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// Quick reject: the lowest start and highest end ever registered.
static LO: AtomicU64 = AtomicU64::new(u64::MAX);
static HI: AtomicU64 = AtomicU64::new(0);
static LOCK: AtomicBool = AtomicBool::new(false);

/// The registry lock, held; the thread's signal mask from before it was taken.
struct Guard(u64);

fn lock() -> Guard {
    // The child of a fork none of our hooks saw (a raw `syscall(SYS_fork)`) may have
    // inherited the lock held by a parent thread that does not exist here: reset the
    // per-process state first (one load when there was no such fork).
    crate::check_fork();
    let old = crate::signals::block_async();
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
    Guard(old)
}

impl Drop for Guard {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
        crate::signals::restore_mask(self.0);
    }
}

/// The lock and the mask saved by [`fork_prepare`] (one fork at a time holds the lock).
static FORK_MASK: AtomicU64 = AtomicU64::new(0);

/// Before `fork` (a `pthread_atfork` prepare handler): takes the registry lock so that
/// the child never inherits a slot caught mid-write.
pub fn fork_prepare() {
    let g = lock();
    FORK_MASK.store(g.0, Ordering::Relaxed);
    std::mem::forget(g);
}

/// After `fork`, in the parent or in the child: releases what [`fork_prepare`] took.
pub fn fork_release() {
    LOCK.store(false, Ordering::Release);
    crate::signals::restore_mask(FORK_MASK.load(Ordering::Relaxed));
}

/// The region containing `addr`, if traced. Lock-free, allocation-free.
#[inline]
pub fn find(addr: u64) -> Option<Region> {
    if addr < LO.load(Ordering::Relaxed) || addr >= HI.load(Ordering::Relaxed) {
        return None;
    }
    let high = HIGH.load(Ordering::Acquire).min(MAX_REGIONS);
    for slot in SLOTS.iter().take(high) {
        if let Some(r) = slot.read() {
            if r.contains(addr) {
                return Some(r);
            }
        }
    }
    None
}

/// Adds a region; `false` when the table is full.
pub fn add(r: Region) -> bool {
    let _g = lock();
    add_locked(r)
}

fn add_locked(r: Region) -> bool {
    let high = HIGH.load(Ordering::Relaxed);
    let idx = SLOTS
        .iter()
        .take(high)
        .position(|s| s.read().is_none())
        .unwrap_or(high);
    if idx >= MAX_REGIONS {
        return false;
    }
    LO.fetch_min(r.start, Ordering::Relaxed);
    HI.fetch_max(r.start + r.len, Ordering::Relaxed);
    SLOTS[idx].write(Some(r));
    if idx == high {
        HIGH.store(high + 1, Ordering::Release);
    }
    true
}

/// Removes every region overlapping `[start, start+len)`, calling `f` on each (after it is
/// no longer found by lookups).
pub fn remove_overlapping(start: u64, len: u64, mut f: impl FnMut(Region)) {
    let _g = lock();
    for slot in SLOTS.iter().take(HIGH.load(Ordering::Relaxed)) {
        if let Some(r) = slot.read() {
            if r.start < start.saturating_add(len) && start < r.start + r.len {
                slot.write(None);
                f(r);
            }
        }
    }
}

/// Stops tracing `[start, start+len)`: regions wholly inside are removed (`f` is called on
/// each, after lookups no longer find it); regions partly inside shrink or split in place,
/// so the part still mapped never stops being traced.
pub fn remove_range(start: u64, len: u64, mut f: impl FnMut(Region)) {
    let _g = lock();
    let end = start.saturating_add(len);
    for slot in SLOTS.iter().take(HIGH.load(Ordering::Relaxed)) {
        let Some(r) = slot.read() else { continue };
        let rend = r.start + r.len;
        if !(r.start < end && start < rend) {
            continue;
        }
        // `then` (lazy): the length is computed only when the piece exists.
        let left = (r.start < start).then(|| Region {
            len: start - r.start,
            ..r
        });
        let right = (rend > end).then(|| Region {
            start: end,
            len: rend - end,
            alias: if r.alias != 0 {
                r.alias + (end - r.start)
            } else {
                0
            },
            phys: r.phys + (end - r.start),
            ..r
        });
        match (left, right) {
            (None, None) => {
                slot.write(None);
                f(r);
            }
            (Some(piece), None) | (None, Some(piece)) => slot.write(Some(piece)),
            (Some(l), Some(rt)) => {
                // The right piece first, so that every still-mapped byte stays findable.
                add_locked(rt);
                slot.write(Some(l));
            }
        }
    }
}

/// Whether any traced region may overlap the range (a quick test without the lock).
pub fn maybe_overlaps(start: u64, len: u64) -> bool {
    start < HI.load(Ordering::Relaxed) && start.saturating_add(len) > LO.load(Ordering::Relaxed)
}

/// Changes the program-visible protection of `[start, start+len)` in every region it
/// overlaps; a region only partly inside is split at the range's edges, so its other
/// pages keep their protection. Returns how many regions it touched.
pub fn set_prot(start: u64, len: u64, prot: i32) -> usize {
    let _g = lock();
    let end = start.saturating_add(len);
    let mut n = 0;
    // Pieces added below land in slots past `high` or in free slots; either way they lie
    // outside the range, so revisiting them is harmless.
    for slot in SLOTS.iter().take(HIGH.load(Ordering::Relaxed)) {
        let Some(r) = slot.read() else { continue };
        let rend = r.start + r.len;
        if !(r.start < end && start < rend) {
            continue;
        }
        n += 1;
        if r.prot == prot {
            continue;
        }
        let piece = |from: u64, to: u64, prot: i32| Region {
            start: from,
            len: to - from,
            alias: if r.alias != 0 {
                r.alias + (from - r.start)
            } else {
                0
            },
            phys: r.phys + (from - r.start),
            prot,
            ..r
        };
        let (lo, hi) = (r.start.max(start), rend.min(end));
        // The outer pieces first (they briefly overlap the old slot with the same data),
        // so that every byte stays findable throughout.
        if r.start < lo && !add_locked(piece(r.start, lo, r.prot)) {
            continue;
        }
        if hi < rend && !add_locked(piece(hi, rend, r.prot)) {
            // No room for the right piece: keep the tail in this slot with the old
            // protection, rather than lose it.
            slot.write(Some(piece(lo, rend, r.prot)));
            continue;
        }
        slot.write(Some(piece(lo, hi, prot)));
    }
    n
}

/// Whether any registered region carries mapping id `map_id` (normal context).
pub fn has_map_id(map_id: u64) -> bool {
    SLOTS
        .iter()
        .take(HIGH.load(Ordering::Acquire))
        .any(|s| s.read().is_some_and(|r| r.map_id == map_id))
}

/// All regions overlapping the range (copied out; normal context).
pub fn overlapping(start: u64, len: u64, mut f: impl FnMut(Region)) {
    for slot in SLOTS.iter().take(HIGH.load(Ordering::Acquire)) {
        if let Some(r) = slot.read() {
            if r.start < start.saturating_add(len) && start < r.start + r.len {
                f(r);
            }
        }
    }
}

/// In a fork child: the registry lock may have been held by a thread that does not exist
/// there.
///
/// After a fork that ran no handler of ours (a raw `syscall(SYS_fork)`), a slot may also
/// have been caught mid-write (odd sequence): lookups would spin on it for ever. Such a slot
/// is emptied (the region being changed at that instant is not traced in the child).
pub(crate) fn after_fork_child() {
    for slot in SLOTS.iter().take(HIGH.load(Ordering::Relaxed)) {
        let s = slot.seq.load(Ordering::Relaxed);
        if s & 1 != 0 {
            slot.seq.store(s.wrapping_add(1), Ordering::Relaxed);
            slot.write(None);
        }
    }
    LOCK.store(false, Ordering::Relaxed);
}
