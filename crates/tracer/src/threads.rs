//! Per-thread state without libc TLS: a fixed table keyed by the thread pointer.
//!
//! `thread_local!` is not usable in a signal handler (first access may allocate, and glibc
//! may reallocate the DTV); a gettid system call per fault costs ~70 ns. The thread pointer
//! (`%fs:0`) is one load, so it is the key. A thread reuses a slot when glibc reuses a
//! stack/TCB; [`thread_started`] resets the slot then.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mmio_trace_ring::Producer;

use crate::sys;

/// Slots in the table (threads traced at once).
pub const MAX_THREADS: usize = 4096;
const NO_RING: u32 = u32::MAX;

/// What the step fallback remembers between the SIGSEGV and the SIGTRAP.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StepState {
    pub active: bool,
    /// Pages opened for the step.
    pub page: u64,
    pub pages_len: u64,
    /// The access being stepped.
    pub addr: u64,
    pub phys: u64,
    pub map_id: u64,
    pub width: u8,
    /// 1 read, 2 write, 0 unknown direction/value.
    pub dir: u8,
    pub value: u64,
    /// gregs index + size of the destination register of a read (size 0: none).
    pub dest: (usize, u8, bool),
    pub pc: u64,
    pub opcode: u64,
    pub saved_mask: u64,
}

/// One thread's slot.
pub struct ThreadSlot {
    key: AtomicU64,
    tid: AtomicU32,
    ring: AtomicU32,
    pub(crate) step: UnsafeCell<StepState>,
}

// SAFETY: `step` is only touched by the thread owning the slot (from its signal handlers);
// the other fields are atomics.
unsafe impl Sync for ThreadSlot {}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: ThreadSlot = ThreadSlot {
    key: AtomicU64::new(0),
    tid: AtomicU32::new(0),
    ring: AtomicU32::new(NO_RING),
    step: UnsafeCell::new(StepState {
        active: false,
        page: 0,
        pages_len: 0,
        addr: 0,
        phys: 0,
        map_id: 0,
        width: 0,
        dir: 0,
        value: 0,
        dest: (0, 0, false),
        pc: 0,
        opcode: 0,
        saved_mask: 0,
    }),
};

static SLOTS: [ThreadSlot; MAX_THREADS] = [EMPTY; MAX_THREADS];

#[inline]
fn hash(key: u64) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize & (MAX_THREADS - 1)
}

/// The calling thread's slot, created on first use; `None` if the table is full.
#[inline]
pub fn current() -> Option<&'static ThreadSlot> {
    let key = sys::thread_pointer();
    let mut i = hash(key);
    for _ in 0..MAX_THREADS {
        let s = &SLOTS[i];
        let k = s.key.load(Ordering::Acquire);
        if k == key {
            return Some(s);
        }
        if k == 0
            && s.key
                .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            s.tid.store(sys::gettid(), Ordering::Relaxed);
            s.ring.store(NO_RING, Ordering::Relaxed);
            return Some(s);
        }
        if s.key.load(Ordering::Acquire) == key {
            return Some(s);
        }
        i = (i + 1) & (MAX_THREADS - 1);
    }
    None
}

impl ThreadSlot {
    /// The thread id.
    pub fn tid(&self) -> u32 {
        self.tid.load(Ordering::Relaxed)
    }

    /// This thread's ring, claimed on first use.
    #[inline]
    pub fn producer(&self) -> Option<Producer> {
        let shm = crate::shm()?;
        let r = self.ring.load(Ordering::Relaxed);
        if r != NO_RING {
            // SAFETY: the ring was claimed by this thread (slot owner).
            return Some(unsafe { Producer::from_index(shm, r) });
        }
        // Waits for a ring if all are taken (never drops silently); gives up after 2 s.
        let p = shm.claim_wait(crate::pid(), self.tid(), 2_000_000_000)?;
        self.ring.store(p.index(), Ordering::Relaxed);
        Some(p)
    }

    fn retire(&self) {
        let r = self.ring.swap(NO_RING, Ordering::Relaxed);
        if r != NO_RING {
            if let Some(shm) = crate::shm() {
                // SAFETY: claimed by this slot's thread, which no longer uses it.
                unsafe { Producer::from_index(shm, r) }.retire();
            }
        }
    }
}

/// Call at the start of every new thread: resets a reused slot. The ring of the slot's
/// previous thread is not touched: it was retired when that thread ended, or the recorder
/// frees it once it sees the thread gone (it may already belong to another thread).
pub fn thread_started() {
    if let Some(s) = current() {
        s.ring.store(NO_RING, Ordering::Relaxed);
        s.tid.store(sys::gettid(), Ordering::Relaxed);
    }
}

/// Call when a thread ends: its ring can be reused once drained.
pub fn thread_exiting() {
    if let Some(s) = current() {
        s.retire();
    }
}

/// Call in the child after `fork`: the parent's threads (and rings) are not ours.
pub fn after_fork_child() {
    for s in SLOTS.iter() {
        s.key.store(0, Ordering::Relaxed);
        s.ring.store(NO_RING, Ordering::Relaxed);
        // SAFETY: only this (single) thread exists in the child.
        unsafe { (*s.step.get()).active = false };
    }
}
