//! Per-thread state without libc TLS: a fixed table keyed by the thread pointer.
//!
//! `thread_local!` is not usable in a signal handler (first access may allocate, and glibc
//! may reallocate the DTV); a gettid system call per fault costs ~70 ns. The thread pointer
//! (`%fs:0`) is one load, so it is the key. A thread reuses a slot when glibc reuses a
//! stack/TCB; [`thread_started`] resets the slot then. [`thread_exiting`] frees the slot (a
//! tombstone: lookups probe past it, inserts reuse it) and the thread's alternate signal
//! stack.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mmio_trace_ring::Producer;

use crate::sys;

/// Slots in the table (threads traced at once).
/// (Far more than rings by default: a thread without a slot has no ring, and its events
/// are counted lost.) The table is all zeros until used, so it costs no file space and no
/// memory beyond the pages threads touch.
pub const MAX_THREADS: usize = 16384;
/// `ring` of a slot without one (the field holds the ring's index + 1, so that an unused
/// slot is all zeros).
const NO_RING: u32 = 0;
const _: () = assert!(MAX_THREADS.is_power_of_two());
/// `key` of a never-used slot (ends a probe).
const EMPTY_KEY: u64 = 0;
/// `key` of a freed slot (probes go on past it; inserts reuse it). No thread pointer is 1.
const TOMBSTONE: u64 = 1;
/// Size of the alternate signal stack a traced thread gets (as `signals::setup_altstack`,
/// which then finds it present and keeps it).
const ALTSTACK_SIZE: usize = 256 << 10;

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
    /// The vector register an SSE/AVX move reads from or writes to (its number).
    pub vec: Option<u8>,
    /// That move's bytes (little-endian words): known before a store, after a load.
    pub wide: [u64; 8],
    pub pc: u64,
    pub opcode: u64,
    pub saved_mask: u64,
    /// The other threads could not be paused (no task directory descriptor).
    pub unpaused: bool,
}

/// One thread's slot.
pub struct ThreadSlot {
    key: AtomicU64,
    tid: AtomicU32,
    ring: AtomicU32,
    /// The alternate signal stack mapped for this thread (0: none of ours).
    altstack: AtomicU64,
    pub(crate) step: UnsafeCell<StepState>,
    /// The thread's out-of-line frames.
    pub(crate) ool: crate::ool::OolFrames,
}

// SAFETY: `step` is only touched by the thread owning the slot (from its signal handlers);
// the other fields are atomics.
unsafe impl Sync for ThreadSlot {}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: ThreadSlot = ThreadSlot {
    key: AtomicU64::new(0),
    tid: AtomicU32::new(0),
    ring: AtomicU32::new(NO_RING),
    altstack: AtomicU64::new(0),
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
        vec: None,
        wide: [0; 8],
        pc: 0,
        opcode: 0,
        saved_mask: 0,
        unpaused: false,
    }),
    ool: crate::ool::OolFrames::EMPTY,
};

static SLOTS: [ThreadSlot; MAX_THREADS] = [EMPTY; MAX_THREADS];

#[inline]
fn hash(key: u64) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - MAX_THREADS.trailing_zeros())) as usize
        & (MAX_THREADS - 1)
}

/// The calling thread's slot without creating it.
#[inline]
fn lookup(key: u64) -> Option<&'static ThreadSlot> {
    let mut i = hash(key);
    for _ in 0..MAX_THREADS {
        let s = &SLOTS[i];
        let k = s.key.load(Ordering::Acquire);
        if k == key {
            return Some(s);
        }
        if k == EMPTY_KEY {
            return None;
        }
        i = (i + 1) & (MAX_THREADS - 1);
    }
    None
}

/// The calling thread's slot, created on first use; `None` if the table is full.
///
/// Only the thread itself inserts its key, so a key is never in two slots: the probe goes
/// past tombstones to the key or to an empty slot (key absent), and the insert then takes
/// the first tombstone on the way (or that empty slot).
#[inline]
pub fn current() -> Option<&'static ThreadSlot> {
    let key = sys::thread_pointer();
    if let Some(s) = lookup(key) {
        return Some(s);
    }
    'retry: for _ in 0..4 {
        let mut i = hash(key);
        for _ in 0..MAX_THREADS {
            let s = &SLOTS[i];
            let k = s.key.load(Ordering::Acquire);
            if k == EMPTY_KEY || k == TOMBSTONE {
                if s.key
                    .compare_exchange(k, key, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // Another thread took it: probe again.
                    continue 'retry;
                }
                s.tid.store(sys::gettid(), Ordering::Relaxed);
                s.ring.store(NO_RING, Ordering::Relaxed);
                s.altstack.store(0, Ordering::Relaxed);
                // SAFETY: the slot is now this thread's; its previous owner has exited.
                unsafe { (*s.step.get()).active = false };
                s.ool.reset();
                return Some(s);
            }
            i = (i + 1) & (MAX_THREADS - 1);
        }
        return None;
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
            return Some(unsafe { Producer::from_index(shm, r - 1) });
        }
        let p = match shm.claim(crate::pid(), self.tid()) {
            Some(p) => p,
            None => {
                // Every ring is held by a live thread: wait for one to be freed, as long as
                // the recorder lives (an event is never dropped for want of a ring). The
                // recorder says so on stderr and in the log: the program is slowed.
                shm.header().ring_waits.fetch_add(1, Ordering::Relaxed);
                shm.claim_wait(crate::pid(), self.tid(), u64::MAX)?
            }
        };
        self.ring.store(p.index() + 1, Ordering::Relaxed);
        Some(p)
    }

    /// This thread's ring without waiting for one: the ring it holds (`false`), or a free
    /// one claimed now (`true`: the caller gives it up again with [`retire_ring`]), or
    /// `None` when every ring is in use.
    pub(crate) fn producer_nowait(&self) -> Option<(Producer, bool)> {
        let shm = crate::shm()?;
        let r = self.ring.load(Ordering::Relaxed);
        if r != NO_RING {
            // SAFETY: the ring was claimed by this thread (slot owner).
            return Some((unsafe { Producer::from_index(shm, r - 1) }, false));
        }
        let p = shm.claim(crate::pid(), self.tid())?;
        self.ring.store(p.index() + 1, Ordering::Relaxed);
        Some((p, true))
    }

    fn retire(&self) {
        let r = self.ring.swap(NO_RING, Ordering::Relaxed);
        if r != NO_RING {
            if let Some(shm) = crate::shm() {
                // SAFETY: claimed by this slot's thread, which no longer uses it.
                unsafe { Producer::from_index(shm, r - 1) }.retire();
            }
        }
    }
}

/// Call at the start of every new thread: resets a reused slot. The ring of the slot's
/// previous thread is not touched: it was retired when that thread ended, or the recorder
/// frees it once it sees the thread gone (it may already belong to another thread).
pub fn thread_started() {
    if let Some(s) = current() {
        let stale = s.altstack.swap(0, Ordering::Relaxed);
        if stale != 0 {
            // A reused slot whose previous thread never ran its end hook (its TCB is
            // reused, so it has exited): its alternate stack is nobody's now. A new thread
            // starts without one (clone clears it); checked all the same.
            // SAFETY: zeroed stack_t is valid as an out value.
            let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
            sys::sigaltstack(None, Some(&mut cur));
            if cur.ss_sp as u64 != stale || cur.ss_flags & libc::SS_DISABLE != 0 {
                // SAFETY: the tracer's own mapping, not in use by any thread.
                unsafe { sys::munmap(stale as usize, ALTSTACK_SIZE) };
            }
        }
        s.ring.store(NO_RING, Ordering::Relaxed);
        s.tid.store(sys::gettid(), Ordering::Relaxed);
        s.altstack.store(map_altstack(), Ordering::Relaxed);
        s.ool.reset();
    }
}

/// Gives the calling (new) thread an alternate signal stack of [`ALTSTACK_SIZE`] unless it
/// has one as large; returns its address if this function mapped it (0 otherwise).
fn map_altstack() -> u64 {
    // SAFETY: zeroed stack_t is valid as an out value.
    let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
    sys::sigaltstack(None, Some(&mut cur));
    if cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_size >= ALTSTACK_SIZE {
        return 0;
    }
    let Some(p) = sys::map_anon(ALTSTACK_SIZE) else {
        return 0;
    };
    let ss = libc::stack_t {
        ss_sp: p as *mut libc::c_void,
        ss_flags: 0,
        ss_size: ALTSTACK_SIZE,
    };
    if sys::sigaltstack(Some(&ss), None) != 0 {
        // SAFETY: just mapped, never used.
        unsafe { sys::munmap(p, ALTSTACK_SIZE) };
        return 0;
    }
    p as u64
}

/// Unmaps the alternate stack [`map_altstack`] gave this thread, if it is still the
/// thread's alternate stack and the thread is not running on it.
fn unmap_altstack(p: u64) {
    // SAFETY: zeroed stack_t is valid as an out value.
    let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
    sys::sigaltstack(None, Some(&mut cur));
    if cur.ss_sp as u64 != p || cur.ss_flags & (libc::SS_ONSTACK | libc::SS_DISABLE) != 0 {
        return;
    }
    let off = libc::stack_t {
        ss_sp: std::ptr::null_mut(),
        ss_flags: libc::SS_DISABLE,
        ss_size: 0,
    };
    if sys::sigaltstack(Some(&off), None) == 0 {
        // SAFETY: our mapping, no longer the thread's signal stack and not in use.
        unsafe { sys::munmap(p as usize, ALTSTACK_SIZE) };
    }
}

/// Whether the calling thread holds a slot (it started, or touched the device, since its
/// last [`thread_exiting`]).
pub fn has_slot() -> bool {
    lookup(sys::thread_pointer()).is_some()
}

/// Gives up the calling thread's ring (it claims a fresh one on its next event): before
/// an exec, whose new image will not use it, and after an exec'd image's attach note, so
/// that processes that never touch the device hold no ring.
pub(crate) fn retire_ring() {
    if let Some(s) = lookup(sys::thread_pointer()) {
        // A program handler's access must not find the ring half given up.
        let old = crate::signals::block_async();
        s.retire();
        crate::signals::restore_mask(old);
    }
}

/// Call when a thread ends: its ring can be reused once drained, its alternate signal stack
/// is unmapped and its slot freed (a signal after this runs on the thread's own stack; an
/// access after this takes a fresh slot).
pub fn thread_exiting() {
    let Some(s) = lookup(sys::thread_pointer()) else {
        return;
    };
    s.retire();
    let stack = s.altstack.swap(0, Ordering::Relaxed);
    if stack != 0 {
        unmap_altstack(stack);
    }
    // SAFETY: only this thread touches its step state.
    unsafe { (*s.step.get()).active = false };
    s.ool.release();
    s.key.store(TOMBSTONE, Ordering::Release);
}

/// Call in the child after `fork`: the parent's threads (and rings) are not ours.
pub fn after_fork_child() {
    // The forking thread's alternate stack was copied into the child: still ours to free.
    let mine = lookup(sys::thread_pointer()).map_or(0, |s| s.altstack.load(Ordering::Relaxed));
    for s in SLOTS.iter() {
        // Slots never used are left unwritten: their pages (most of the table) stay the
        // shared zero page instead of costing each child its own copy.
        if s.key.load(Ordering::Relaxed) == EMPTY_KEY
            && s.ring.load(Ordering::Relaxed) == NO_RING
            && s.altstack.load(Ordering::Relaxed) == 0
        {
            continue;
        }
        s.key.store(EMPTY_KEY, Ordering::Relaxed);
        s.ring.store(NO_RING, Ordering::Relaxed);
        s.altstack.store(0, Ordering::Relaxed);
        // SAFETY: only this (single) thread exists in the child.
        unsafe { (*s.step.get()).active = false };
    }
    if mine != 0 {
        if let Some(s) = current() {
            s.altstack.store(mine, Ordering::Relaxed);
        }
    }
}
