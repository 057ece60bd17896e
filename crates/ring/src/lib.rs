//! Shared-memory event transport between traced processes and the mmio-trace recorder.
//!
//! One memfd, created by the recorder and inherited by every traced process (by fd number,
//! through the environment variable [`ENV_FD`]), holds a [`Header`], an array of ring
//! control blocks and the ring data. Every traced thread claims one ring for itself, so
//! each ring has exactly one producer (the thread, usually inside its SIGSEGV handler) and
//! one consumer (the recorder): single-producer single-consumer, lock-free, no allocation.
//!
//! Records are fixed-size: 32 bytes ([`Record`]), so that generated code (hot-site
//! trampolines, see the design notes) can write them with four stores. An event is one
//! record or a short run of records (an access wider than 8 bytes, a `MAP`, a `MARK` with
//! text).
//!
//! **Reentrant publishing, no signal blocking** (protocol version 3). The writers of a
//! ring are one thread *and the signal handlers that interrupt it*, nested to any depth.
//! An event is published in three steps, each safe to interrupt at any instruction:
//! 1. *reserve*: one unlocked `xadd` on the ring's `head` (a single instruction, so a
//!    same-thread handler runs wholly before or after it; no other thread writes the
//!    word) hands the event its own slots; a handler that interrupts later reserves the
//!    slots after them, so nothing is shared between nested writers;
//! 2. *fill*: the records, except word 3 of the event's first record;
//! 3. *commit*: word 3 of the first record (kind, width and pc: never zero for a first
//!    record), stored last with release.
//!
//! The consumer reads each ring from its tail in reservation order and stops at the first
//! event whose word 3 is still zero; having read an event it zeroes word 3 of each of its
//! slots before handing the slots back (its `tail` store), so a zero word 3 always means
//! "not yet committed". An interrupted writer whose reservation precedes a handler's
//! keeps the consumer from reading past it until it commits: it is neither skipped nor
//! read half-written, and the handler's events wait behind it.
//!
//! The producer keeps a copy of the consumer's tail in its own cache line
//! ([`RingCtl::tail_cache`]) and reads the consumer's line only when that copy says the
//! ring may be full (any older copy is a safe lower bound, so nested writers may store
//! theirs in any order).
//!
//! **Nothing is ever dropped**: a producer whose ring is full waits (spins briefly, then
//! sleeps on a futex in the shared memory) until the recorder has made room. It stops
//! waiting only when the recorder process no longer exists. It reserves before it waits,
//! so a handler that interrupts a waiting writer waits behind it; the consumer can always
//! drain up to the oldest open reservation, so this ends as long as the events of one
//! thread's nested writers fit the ring together (a ring holds 2048 or more records; the
//! largest event is 129).
//!
//! A writer that never resumes (a program handler that interrupted it and left with
//! `siglongjmp`) leaves its reservation open for good: that ring's later events are never
//! read, and once it fills its thread waits for ever; and, if it was the outermost writer,
//! its `pending` time holds the watermark back until the end (the log stays complete,
//! the recorder buffers it). Writers that can run where a program handler may interrupt
//! them therefore keep the window between reservation and commit to a few instructions.
//!
//! **Many rings, little memory** ([`Layout`]): the memfd reserves room for far more rings
//! than real programs have threads (8192 by default), but tmpfs pages cost memory only once
//! written. The first rings are large (for the few busy threads a driver has); the rest
//! are small, so a thousand threads cost tens of MiB, not half a GiB. Rings are claimed
//! lowest index first and the header keeps a high-water mark ([`Header::hwm`]): the
//! recorder scans only the rings ever claimed, so its cost per poll follows the number of
//! threads, not the limit.
//!
//! **One clock** ([`clock`]): every writer stamps with the recording's clock
//! ([`Header::clock`]): the invariant TSC where the CPU has one, else `CLOCK_MONOTONIC`.
//! The consumer hands records out with their timestamps in `CLOCK_MONOTONIC` ns.
//!
//! **Merging by time**: each ring publishes the timestamp of the outermost event its
//! writers are inside right now ([`RingCtl`] `pending`). Before taking an event's
//! timestamp an outermost writer marks its ring busy; a nested writer (a handler that
//! interrupted one) finds the ring already busy and leaves the word alone: the outer
//! event's timestamp, or busy, bounds every timestamp the nested one can take. The
//! consumer reads its clock first and the rings' pending words after it, which gives it a
//! watermark: no event can be published later with a timestamp below it. Within a ring,
//! events come out in reservation order; a handler that interrupted a writer between its
//! timestamp and its reservation publishes first with a later time, so the consumer makes
//! each ring's times non-decreasing by raising such an event's time to the one before it
//! (by at most the handler's duration). See [`Consumer::poll`].
//!
//! The producer side (`Producer`) makes raw system calls only (futex, kill), so it is safe
//! in a signal handler and needs no libc. The consumer side (`Consumer`) is ordinary code.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

// The producer side, the clock and the layout are `core` + `alloc` (the freestanding agent
// links them); the consumer (the recorder's side) needs std.
extern crate alloc;

pub mod clock;
#[cfg(feature = "std")]
mod consumer;
mod producer;
mod record;
pub mod sys;

use core::sync::atomic::{AtomicU32, AtomicU64};

pub use clock::monotonic_ns;
pub use clock::{Clock, ENV_CLOCK};
#[cfg(feature = "std")]
pub use consumer::{Consumer, Drained};
pub use producer::{recorder_fd, set_recorder_fd, Open, Producer, Shm, WaitError};

/// What a per-thread block embeds to reach its ring from generated code: [`Producer`]
/// (`#[repr(C)]`; offsets [`Producer::OFFSET_CTL`], [`Producer::OFFSET_DATA`],
/// [`Producer::OFFSET_MASK`]). The cached tail and the reservation counter live in the
/// ring's control block ([`RingCtl::tail_cache`], [`RingCtl::head`]), shared by every copy.
pub type ProducerState = Producer;
pub use record::{Kind, Record, MAX_MARK, MAX_STR_VALUES, RECORD_SIZE};

/// How the shared memory is divided into rings: `big_rings` rings of `capacity` records,
/// then `rings - big_rings` rings of `small_capacity` records (powers of two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Rings in all: traced threads at once, all processes together.
    pub rings: u32,
    /// Records per ring of the first `big_rings` rings.
    pub capacity: u32,
    /// How many rings (from index 0) have `capacity` records.
    pub big_rings: u32,
    /// Records per ring of the others.
    pub small_capacity: u32,
}

impl Layout {
    /// `rings` rings of `capacity` records each.
    pub const fn uniform(rings: u32, capacity: u32) -> Layout {
        Layout {
            rings,
            capacity,
            big_rings: rings,
            small_capacity: capacity,
        }
    }

    /// Whether the layout can be used: at least one ring, capacities powers of two, and
    /// a total size that fits the address space.
    pub fn is_valid(&self) -> bool {
        self.rings > 0
            && self.big_rings <= self.rings
            && self.capacity.is_power_of_two()
            && self.small_capacity.is_power_of_two()
            && self.checked_total_size().is_some()
    }

    /// Records in ring `i`.
    #[inline]
    pub const fn capacity_of(&self, i: u32) -> u32 {
        if i < self.big_rings {
            self.capacity
        } else {
            self.small_capacity
        }
    }

    /// Byte offset of the ring data area (after the header and the control blocks).
    pub const fn data_area(&self) -> usize {
        data_offset(self.rings as usize)
    }

    /// Byte offset of ring `i`'s records.
    #[inline]
    pub const fn ring_offset(&self, i: u32) -> usize {
        let big = if i < self.big_rings {
            i
        } else {
            self.big_rings
        } as usize;
        let small = if i > self.big_rings {
            (i - self.big_rings) as usize
        } else {
            0
        };
        self.data_area()
            + big * self.capacity as usize * RECORD_SIZE
            + small * self.small_capacity as usize * RECORD_SIZE
    }

    fn checked_total_size(&self) -> Option<usize> {
        let big = (self.big_rings as usize)
            .checked_mul(self.capacity as usize)?
            .checked_mul(RECORD_SIZE)?;
        let small = ((self.rings - self.big_rings.min(self.rings)) as usize)
            .checked_mul(self.small_capacity as usize)?
            .checked_mul(RECORD_SIZE)?;
        self.data_area().checked_add(big)?.checked_add(small)
    }

    /// Total size of the shared memory (0 for an invalid layout).
    pub fn total_size(&self) -> usize {
        self.checked_total_size().unwrap_or(0)
    }
}

/// Environment variable holding the memfd's file descriptor number in traced processes.
pub const ENV_FD: &str = "MMIO_TRACE_SHM_FD";

/// Environment variable holding the read end of the recorder's liveness pipe in traced
/// processes: the recorder holds the only write end for its lifetime, so a hang-up on
/// the read end means the recorder is gone (whatever its pid now names).
pub const ENV_LIVE_FD: &str = "MMIO_TRACE_LIVE_FD";

/// Environment variable holding a path that opens the recorder's memfd: its own
/// descriptor, `/proc/<recorder pid>/fd/<n>`. An image whose inherited [`ENV_FD`] was
/// closed or replaced on its way (a `posix_spawn` file action, a `vfork` child's `dup2`,
/// a raw `close_range` system call: nothing a preloaded library can intercept) opens
/// the memfd again there instead of running untraced.
pub const ENV_SHM_PATH: &str = "MMIO_TRACE_SHM_PATH";

/// The same as [`ENV_SHM_PATH`] for the read end of the liveness pipe ([`ENV_LIVE_FD`]).
pub const ENV_LIVE_PATH: &str = "MMIO_TRACE_LIVE_PATH";

/// `Header::magic`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MMTRING1");

/// Layout version; producer and consumer must agree exactly. 3: reservation by `xadd`
/// with a commit word per event, a producer-side copy of the tail, one clock.
pub const VERSION: u32 = 3;

/// Ring states (`RingCtl::state`).
pub mod state {
    /// Not owned by any thread; can be claimed.
    pub const FREE: u32 = 0;
    /// Being claimed (owner fields not yet valid).
    pub const CLAIMING: u32 = 1;
    /// Owned by a live thread (as far as the producer side knows).
    pub const OWNED: u32 = 2;
    /// Its thread is gone; the consumer frees it once drained.
    pub const RETIRED: u32 = 3;
}

/// `RingCtl::pending` when the producer is not inside an event.
pub const IDLE: u64 = u64::MAX;
/// `RingCtl::pending` between "busy" and the event's timestamp being known.
pub const BUSY: u64 = u64::MAX - 1;

/// The first page of the shared memory.
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`VERSION`].
    pub version: u32,
    /// Number of rings.
    pub nrings: u32,
    /// Records per ring of the first [`Header::big_rings`] rings (a power of two).
    pub capacity: u32,
    /// [`RECORD_SIZE`], for checking.
    pub record_size: u32,
    /// `CLOCK_MONOTONIC` (ns) when the recording started; the log's time zero.
    pub start_ns: u64,
    /// The clock events are stamped with ([`Clock`] as `u32`).
    pub clock: u32,
    /// [`Header::clock`]'s reading paired with [`Header::start_ns`] (equal to it for
    /// `CLOCK_MONOTONIC`).
    pub start_clock: u64,
    /// Clock units to ns as a 32.32 fixed-point factor, measured at start (`1 << 32` for
    /// `CLOCK_MONOTONIC`): for rough durations on the producer side. The consumer converts
    /// event times through pairs it takes as it goes ([`clock::TscMap`]).
    pub clock_mult: u64,
    /// The recorder's pid (informational; liveness is told by the pipe of
    /// [`ENV_LIVE_FD`], and by this pid only in a process that has no such pipe).
    pub recorder_pid: u32,
    /// Set by the recorder when it stops draining (producers then stop logging).
    pub closed: AtomicU32,
    /// Next mapping id to hand out; shared by all traced processes so ids are unique.
    pub next_map_id: AtomicU64,
    /// Accesses completed by single-stepping (the slow fallback), all processes.
    pub slow_steps: AtomicU64,
    /// Processes that attached (constructors run), all time.
    pub attached: AtomicU64,
    /// Times a producer found its ring full and had to wait.
    pub full_waits: AtomicU64,
    /// Events producers could not publish (no ring could be claimed, or the recorder
    /// closed the recording); the recorder reports them as a `Lost N events` mark.
    pub lost: AtomicU64,
    /// Steps made without pausing the other threads (`/proc/self/task` could not be
    /// opened): their accesses during such a step may be missing; the stepped access
    /// itself is logged as `UNKNOWN`.
    pub unpaused_steps: AtomicU64,
    /// How many rings (from index 0) have [`Header::capacity`] records.
    pub big_rings: u32,
    /// Records per ring of the other rings (a power of two).
    pub small_capacity: u32,
    /// Rings ever claimed: one more than the highest index a producer claimed. Rings are
    /// claimed lowest index first, so the recorder scans `0..hwm` only.
    pub hwm: AtomicU32,
    /// Threads that found every ring taken and waited for one (the recorder says so).
    pub ring_waits: AtomicU64,
}

impl Header {
    /// The clock events are stamped with.
    pub fn clock(&self) -> Clock {
        Clock::from_u32(self.clock).unwrap_or(Clock::Monotonic)
    }

    /// Roughly how many ns `ticks` of [`Header::clock`] last (the rate measured at start).
    #[inline]
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ((ticks as u128 * self.clock_mult as u128) >> 32).min(u64::MAX as u128) as u64
    }

    /// Roughly `CLOCK_MONOTONIC` ns at clock reading `t` (the rate measured at start; the
    /// consumer's conversion is exact).
    #[inline]
    pub fn approx_ns(&self, t: u64) -> u64 {
        self.start_ns
            .saturating_add(self.ticks_to_ns(t.saturating_sub(self.start_clock)))
    }

    /// The ring layout this header describes.
    pub fn layout(&self) -> Layout {
        Layout {
            rings: self.nrings,
            capacity: self.capacity,
            big_rings: self.big_rings,
            small_capacity: self.small_capacity,
        }
    }
}

/// Per-ring control block (two cache lines: producer-written, consumer-written).
#[repr(C, align(64))]
pub struct RingCtl {
    /// Records ever reserved (the ring's writers, by an unlocked `xadd`; a reserved event
    /// is published when its first record's word 3 is stored).
    pub head: AtomicU64,
    /// Timestamp of the outermost event being written, or [`IDLE`]/[`BUSY`].
    pub pending: AtomicU64,
    /// Owning thread id.
    pub tid: AtomicU32,
    /// Owning process id.
    pub pid: AtomicU32,
    /// One of [`state`].
    pub state: AtomicU32,
    /// Nonzero while the producer sleeps on `tail_seq`.
    pub waiters: AtomicU32,
    /// The producer's copy of `tail` (a lower bound of it): read instead of the
    /// consumer's cache line until it says the ring may be full.
    pub tail_cache: AtomicU64,
    _pad0: [u8; 24],
    /// Records ever consumed (consumer; release).
    pub tail: AtomicU64,
    /// Futex word bumped by the consumer whenever it advances `tail`.
    pub tail_seq: AtomicU32,
    _pad1: [u8; 52],
}

const _: () = assert!(core::mem::size_of::<RingCtl>() == 128);

/// Size of the header area (one page).
pub const HEADER_SIZE: usize = 4096;

/// Byte offset of ring `i`'s control block.
pub const fn ctl_offset(i: usize) -> usize {
    HEADER_SIZE + i * core::mem::size_of::<RingCtl>()
}

/// Byte offset of the ring data area for `nrings` rings.
pub const fn data_offset(nrings: usize) -> usize {
    let end = ctl_offset(nrings);
    (end + 4095) & !4095
}

/// Total size of the shared memory for `nrings` rings of `capacity` records each.
pub const fn total_size(nrings: usize, capacity: usize) -> usize {
    data_offset(nrings) + nrings * capacity * RECORD_SIZE
}
