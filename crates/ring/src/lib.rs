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
//! text) published together by one release store of the ring's head.
//!
//! **Nothing is ever dropped**: a producer whose ring is full waits (spins briefly, then
//! sleeps on a futex in the shared memory) until the recorder has made room. It stops
//! waiting only when the recorder process no longer exists.
//!
//! **Merging by time**: each ring publishes, besides its head, the timestamp of the event
//! its producer is writing right now ([`RingCtl`] `pending`). Before taking an event's
//! timestamp a producer marks its ring busy; the consumer reads a clock first and the
//! rings' pending words after it, which gives it a watermark: no event can be published
//! later with a timestamp below it. See [`Consumer::poll`].
//!
//! The producer side (`Producer`) makes raw system calls only (futex, kill), so it is safe
//! in a signal handler and needs no libc. The consumer side (`Consumer`) is ordinary code.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod consumer;
mod producer;
mod record;
pub mod sys;

use std::sync::atomic::{AtomicU32, AtomicU64};

pub use consumer::{monotonic_ns, Consumer, Drained};
pub use producer::{recorder_fd, set_recorder_fd, Producer, Shm, WaitError};
pub use record::{Kind, Record, MAX_MARK, RECORD_SIZE};

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

/// Layout version; producer and consumer must agree exactly.
pub const VERSION: u32 = 1;

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
    /// Records per ring (a power of two).
    pub capacity: u32,
    /// [`RECORD_SIZE`], for checking.
    pub record_size: u32,
    /// `CLOCK_MONOTONIC` (ns) when the recording started; the log's time zero.
    pub start_ns: u64,
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
}

/// Per-ring control block (two cache lines: producer-written, consumer-written).
#[repr(C, align(64))]
pub struct RingCtl {
    /// Records ever published (producer; release).
    pub head: AtomicU64,
    /// Timestamp of the event being written, or [`IDLE`]/[`BUSY`].
    pub pending: AtomicU64,
    /// Owning thread id.
    pub tid: AtomicU32,
    /// Owning process id.
    pub pid: AtomicU32,
    /// One of [`state`].
    pub state: AtomicU32,
    /// Nonzero while the producer sleeps on `tail_seq`.
    pub waiters: AtomicU32,
    _pad0: [u8; 32],
    /// Records ever consumed (consumer; release).
    pub tail: AtomicU64,
    /// Futex word bumped by the consumer whenever it advances `tail`.
    pub tail_seq: AtomicU32,
    _pad1: [u8; 52],
}

const _: () = assert!(std::mem::size_of::<RingCtl>() == 128);

/// Size of the header area (one page).
pub const HEADER_SIZE: usize = 4096;

/// Byte offset of ring `i`'s control block.
pub const fn ctl_offset(i: usize) -> usize {
    HEADER_SIZE + i * std::mem::size_of::<RingCtl>()
}

/// Byte offset of the ring data area for `nrings` rings.
pub const fn data_offset(nrings: usize) -> usize {
    let end = ctl_offset(nrings);
    (end + 4095) & !4095
}

/// Total size of the shared memory for `nrings` rings of `capacity` records.
pub const fn total_size(nrings: usize, capacity: usize) -> usize {
    data_offset(nrings) + nrings * capacity * RECORD_SIZE
}
