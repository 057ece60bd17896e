//! Hot-site patching: an instruction that has trapped often is rewritten to jump to
//! generated code (a trampoline) that makes the same access on the alias and writes the
//! same event the trap path would, so repeat accesses cost nanoseconds, not a trap.
//!
//! Pieces: `pun` plans the jump that replaces an instruction's own bytes (E9Patch's
//! instruction punning: no other instruction boundary moves), `arena` finds memory for a
//! trampoline where that jump can reach, `text` writes program text with the int3-first
//! protocol, `flags` says whether the flags are live after a site, `gen` generates the
//! trampolines, and this module decides what to patch and keeps the fault path's view of
//! patched sites.
//!
//! Who does what:
//! - The fault path counts traps per site (the site cache) and, when a site reaches the
//!   threshold, writes its address into a pipe ([`note_trap`]); it never patches.
//! - A patcher thread (started from normal context at the first traced mapping, blocking
//!   every signal) reads the pipe, generates and installs trampolines, and tells the
//!   recorder what it patched or why not (a `Patch` note, never logged).
//! - A trampoline whose address is in no slot runs the original instruction, copied after
//!   its frame teardown; a fault there is handled as a fault of the site itself
//!   ([`site_of_copy`]: the program, the log and the emulator see the site's address), and
//!   tells the patcher which range the site now touches, for a free slot.
//! - A `SIGTRAP` at a site whose first byte is being rewritten (the int3 of the protocol)
//!   goes to its trampoline, correct in every state ([`on_trap`]).
//! - Region writers (munmap, mremap, mprotect of a traced range) first turn the slots
//!   covering it off and wait until no thread is inside a trampoline ([`disable`]), so no
//!   trampoline can use an alias after it is unmapped or log an access after its UNMAP.
//!
//! Entries and trampolines are never freed (a thread may be preempted inside one); a fork
//! child inherits both as private copies of memory and starts its own patcher thread.

pub(crate) mod arena;
pub(crate) mod flags;
pub(crate) mod gen;
pub(crate) mod pun;
pub(crate) mod text;

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use iced_x86::{Decoder, DecoderOptions};
use mmio_trace_ring::{Clock, Kind, Record};

use crate::ctx::gregs;
use crate::regions::Region;
use crate::{emit, site, sys, threads};
use gen::{Slot, NO_SLOT, SLOTS};

/// Sites that can be patched in one process.
const MAX: usize = 1024;

/// One patched (or being patched) site. `repr(C)`: its trampoline reads `bounds` right
/// after `slots`.
#[repr(C)]
struct Entry {
    /// The site's address (0: unused).
    rip: AtomicU64,
    /// The trampoline: `[tramp, end)`.
    tramp: AtomicU64,
    end: AtomicU64,
    /// Where the site's jump lands when that is not the trampoline: a 5-byte stub jumping
    /// to it (a punned jump's window is narrow; 0: none).
    stub: AtomicU64,
    /// Offsets in the trampoline (see `gen::Tramp`).
    miss: AtomicU32,
    guard_lo: AtomicU32,
    guard_hi: AtomicU32,
    wait: AtomicU32,
    original: AtomicU32,
    records: AtomicU32,
    /// The access width, and whether it reads (1) and writes (2) memory.
    width: AtomicU32,
    dirs: AtomicU32,
    /// 1 while a request for a slot (a fault of the copy: an address in no slot) is with
    /// the patcher.
    asked: AtomicU64,
    /// The instruction's length, and where the bytes its jump reads end (past the
    /// instruction when the jump is punned: those bytes must never change).
    len: AtomicU32,
    dep_end: AtomicU64,
    /// The instruction's bytes and its jump's (`len` of each), to tell whether the text is
    /// still this code (a library unloaded and another loaded in its place).
    orig: [AtomicU64; 2],
    jump: [AtomicU64; 2],
    slots: [Slot; SLOTS],
    /// A range holding every slot ever filled (`start`, `len` = its span): an address
    /// outside it misses at once. Only widened; a stale one only costs a trap.
    bounds: Slot,
    /// The trampoline's rseq critical section (the kernel reads it).
    cs: gen::RseqCs,
    /// Offsets of the reserved-but-uncommitted span and of the rseq abort handler, and
    /// whether the frame keeps the flags.
    acc_lo: AtomicU32,
    acc_hi: AtomicU32,
    abort: AtomicU32,
    flags_live: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const NO_ENTRY: Entry = Entry {
    rip: AtomicU64::new(0),
    tramp: AtomicU64::new(0),
    end: AtomicU64::new(0),
    stub: AtomicU64::new(0),
    miss: AtomicU32::new(0),
    guard_lo: AtomicU32::new(0),
    guard_hi: AtomicU32::new(0),
    wait: AtomicU32::new(0),
    original: AtomicU32::new(0),
    records: AtomicU32::new(0),
    width: AtomicU32::new(0),
    dirs: AtomicU32::new(0),
    asked: AtomicU64::new(0),
    len: AtomicU32::new(0),
    dep_end: AtomicU64::new(0),
    orig: [AtomicU64::new(0), AtomicU64::new(0)],
    jump: [AtomicU64::new(0), AtomicU64::new(0)],
    slots: [NO_SLOT, NO_SLOT, NO_SLOT, NO_SLOT],
    bounds: NO_SLOT,
    cs: gen::NO_CS,
    acc_lo: AtomicU32::new(0),
    acc_hi: AtomicU32::new(0),
    abort: AtomicU32::new(0),
    flags_live: AtomicU32::new(0),
};

static ENTRIES: [Entry; MAX] = [NO_ENTRY; MAX];
/// Entries in use (published after each is filled).
static USED: AtomicUsize = AtomicUsize::new(0);
/// Bounds of every trampoline, for a quick "not a trampoline" on the fault path.
static LO: AtomicU64 = AtomicU64::new(u64::MAX);
static HI: AtomicU64 = AtomicU64::new(0);

/// Traps after which a site is patched; 0: patching off.
static AFTER: AtomicU64 = AtomicU64::new(0);
/// Unpatch/re-patch cycles per patched site (`MMIO_TRACE_PATCH_CHURN`, for tests).
static CHURN: AtomicU64 = AtomicU64::new(0);
/// The pipe to the patcher thread (write end; -1: none yet).
static PIPE_W: AtomicI32 = AtomicI32::new(-1);
/// The process whose patcher thread runs (0: none).
static STARTED: AtomicU32 = AtomicU32::new(0);

/// Environment variable: unpatch and re-patch each patched site this many times (tests).
pub const ENV_CHURN: &str = "MMIO_TRACE_PATCH_CHURN";

/// Statuses of a `Patch` note's word 2 (low byte).
const NOTE_PATCHED: u64 = 0;
const NOTE_REFUSED: u64 = 1;
const NOTE_OFF: u64 = 2;

/// Reads the configuration (tracer start).
pub(crate) fn configure(rules: &crate::rules::Rules) {
    let off = rules.no_patch || rules.no_alias || !crate::paths::emulate();
    AFTER.store(if off { 0 } else { rules.patch_after }, Ordering::Relaxed);
    let churn = crate::env::var(ENV_CHURN)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    CHURN.store(churn, Ordering::Relaxed);
}

fn enabled() -> bool {
    AFTER.load(Ordering::Relaxed) != 0
}

// ---- The fault path's side (signal context: no allocation, no locks) ----

fn entries() -> &'static [Entry] {
    &ENTRIES[..USED.load(Ordering::Acquire).min(MAX)]
}

/// The entry whose trampoline holds `addr`.
#[inline]
fn tramp_of(addr: u64) -> Option<&'static Entry> {
    if addr < LO.load(Ordering::Relaxed) || addr >= HI.load(Ordering::Relaxed) {
        return None;
    }
    entries().iter().find(|e| {
        let t = e.tramp.load(Ordering::Relaxed);
        t <= addr && addr < e.end.load(Ordering::Relaxed)
    })
}

/// Entries by site address: open addressing, index + 1 (0: free). Every trap asks it, so
/// it must not cost a scan of all entries.
static INDEX: [AtomicU32; 2 * MAX] = [const { AtomicU32::new(0) }; 2 * MAX];

#[inline]
fn home(rip: u64) -> usize {
    (rip.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 53) as usize & (2 * MAX - 1)
}

/// Files entry `idx` under `rip` (patcher only: one writer).
fn index_insert(rip: u64, idx: usize) {
    let mut i = home(rip);
    while INDEX[i].load(Ordering::Relaxed) != 0 {
        i = (i + 1) & (2 * MAX - 1);
    }
    INDEX[i].store(idx as u32 + 1, Ordering::Release);
}

/// The entry of the site at `rip`.
#[inline]
fn entry_of(rip: u64) -> Option<&'static Entry> {
    if USED.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut i = home(rip);
    loop {
        let v = INDEX[i].load(Ordering::Acquire) as usize;
        if v == 0 {
            return None;
        }
        let e = &ENTRIES[v - 1];
        if e.rip.load(Ordering::Relaxed) == rip {
            return Some(e);
        }
        i = (i + 1) & (2 * MAX - 1);
    }
}

/// When `rip` is a trampoline's copy of its site's instruction (an address in no slot
/// faulted there), the site's address: the fault is handled as the site's.
#[inline]
pub(crate) fn site_of_copy(rip: u64) -> Option<u64> {
    let e = tramp_of(rip)?;
    let site = e.rip.load(Ordering::Relaxed);
    (site != 0
        && rip == e.tramp.load(Ordering::Relaxed) + u64::from(e.original.load(Ordering::Relaxed)))
    .then_some(site)
}

/// The copy of the patched site `rip`'s instruction in its trampoline (where the step path
/// runs it: the site itself now holds a jump).
pub(crate) fn copy_of_site(rip: u64) -> Option<u64> {
    let e = entry_of(rip)?;
    Some(e.tramp.load(Ordering::Relaxed) + u64::from(e.original.load(Ordering::Relaxed)))
}

/// The original bytes of the patched site `rip` (its instruction's length of them).
pub(crate) fn original_of(rip: u64) -> Option<([u8; 16], usize)> {
    let e = entry_of(rip)?;
    let len = e.len.load(Ordering::Relaxed) as usize;
    (len > 0).then(|| (load16(&e.orig), len))
}

/// A trap at `rip`, its `hits`-th: a site that just got hot is handed to the patcher; a
/// patched site trapping (its copy faulted: an address in no slot) asks it for a slot for
/// `addr`'s range, at exponentially spaced counts.
#[inline]
pub(crate) fn note_trap(rip: u64, addr: u64, hits: u64) {
    let after = AFTER.load(Ordering::Relaxed);
    if after == 0 {
        return;
    }
    if let Some(e) = entry_of(rip) {
        // One request at a time per site: the patcher clears the flag when it has served
        // it (a site touching many mappings in turn asks again at its next miss).
        if e.asked.swap(1, Ordering::AcqRel) == 0 {
            notify(rip, addr);
        }
        return;
    }
    // Exactly at the threshold, and again now and then should the message have been lost
    // (a full pipe) or the site refused for a reason that may pass.
    if hits == after || (hits > after && hits % 65536 == 0) {
        notify(rip, 0);
    }
}

fn notify(rip: u64, addr: u64) {
    let fd = PIPE_W.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let msg = [rip, addr];
    // One write of 16 bytes: atomic on a pipe; a full pipe drops it (non-blocking).
    PENDING.fetch_add(1, Ordering::AcqRel);
    if sys::write(fd, msg.as_ptr() as *const u8, 16) != 16 {
        PENDING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When a `SIGTRAP` is the patching protocol's int3 at byte 0 of a site: the site's
/// trampoline (where the thread is to go on).
///
/// # Safety
/// Signal-handler context; `info`/`uc` are the kernel's.
pub(crate) unsafe fn int3_target(info: *mut libc::siginfo_t, uc: *mut libc::c_void) -> Option<u64> {
    if USED.load(Ordering::Relaxed) == 0 {
        return None;
    }
    // SAFETY: the kernel passes valid info.
    if unsafe { (*info).si_code } != 0x80 {
        return None;
    }
    // SAFETY: handler context.
    let at = (unsafe { gregs(uc) }[libc::REG_RIP as usize] as u64).wrapping_sub(1);
    entry_of(at).map(|e| e.tramp.load(Ordering::Relaxed))
}

/// Whether `rip` is the first instruction of a trampoline or of a stub leading to one.
pub(crate) fn is_entry(rip: u64) -> bool {
    entries()
        .iter()
        .any(|e| e.tramp.load(Ordering::Relaxed) == rip || e.stub.load(Ordering::Relaxed) == rip)
}

/// `SIGTRAP` from a trampoline or a site being rewritten. `true`: handled.
///
/// # Safety
/// Signal-handler context; `info`/`uc` are the kernel's.
pub(crate) unsafe fn on_trap(info: *mut libc::siginfo_t, uc: *mut libc::c_void) -> bool {
    if USED.load(Ordering::Relaxed) == 0 {
        return false;
    }
    // SAFETY: the kernel passes valid info.
    let code = unsafe { (*info).si_code };
    if code != 0x80 {
        // Not an int3 (SI_KERNEL).
        return false;
    }
    // SAFETY: handler context.
    let g = unsafe { gregs(uc) };
    let at = (g[libc::REG_RIP as usize] as u64).wrapping_sub(1);
    if let Some(e) = entry_of(at) {
        // The protocol's int3 at byte 0 of a site: its trampoline does the instruction.
        g[libc::REG_RIP as usize] = e.tramp.load(Ordering::Relaxed) as i64;
        return true;
    }
    if let Some(e) = tramp_of(at) {
        let t = e.tramp.load(Ordering::Relaxed);
        if at + 1 == t + u64::from(e.wait.load(Ordering::Relaxed)) {
            // The ring looked full after the reservation: wait for room as the producer
            // does, then the trampoline fills the records.
            let end =
                g[libc::REG_RDX as usize] as u64 + u64::from(e.records.load(Ordering::Relaxed));
            if let Some(p) = threads::current().and_then(|b| b.producer()) {
                let _ = p.wait_for_room(end);
            }
            return true;
        }
    }
    false
}

/// A fault inside a trampoline. `true`: handled (the caller returns):
/// - a `SIGSEGV` at one of its loads of the thread's block (a thread pointer that is not a
///   libc TCB: the slot there is someone else's memory): the trampoline gives up and runs
///   the original instruction;
/// - a fault of its own access (the alias of a device that went away: SIGBUS), at the
///   access or at the rseq abort handler the kernel moved it to: the trampoline is undone
///   — its reservation becomes a void note, the ring idle again if it was the outermost
///   writer, the thread's depth lowered, the program's registers back — and the thread
///   goes on at the trampoline's copy of the instruction, which faults on the program's
///   own page: the trap path then makes the access and hands the program its fault at
///   its own instruction and address.
///
/// # Safety
/// Signal-handler context; `info`/`uc` are the kernel's.
pub(crate) unsafe fn on_fault(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) -> bool {
    // SAFETY: handler context.
    let g = unsafe { gregs(uc) };
    let rip = g[libc::REG_RIP as usize] as u64;
    let Some(e) = tramp_of(rip) else {
        return false;
    };
    let t = e.tramp.load(Ordering::Relaxed);
    let off = (rip - t) as u32;
    if sig == libc::SIGSEGV
        && off >= e.guard_lo.load(Ordering::Relaxed)
        && off < e.guard_hi.load(Ordering::Relaxed)
    {
        g[libc::REG_RIP as usize] = (t + u64::from(e.miss.load(Ordering::Relaxed))) as i64;
        return true;
    }
    // SAFETY: the kernel passes valid info.
    if unsafe { (*info).si_code } <= 0 {
        return false;
    }
    let abort = e.abort.load(Ordering::Relaxed);
    let in_access =
        off >= e.acc_lo.load(Ordering::Relaxed) && off < e.acc_hi.load(Ordering::Relaxed);
    if !(in_access || (abort != 0 && off == abort)) {
        return false;
    }
    let block = g[libc::REG_R10 as usize] as u64;
    let ctl = g[libc::REG_RCX as usize] as u64;
    let head = g[libc::REG_RDX as usize] as u64;
    let records = u64::from(e.records.load(Ordering::Relaxed));
    let rs = block + threads::OFF_RING_STATE as u64;
    // SAFETY: r10 and rcx hold the thread's block and ring control block at every point
    // of the span (the trampoline set them before it); the slot was reserved by it.
    unsafe {
        let data = ((rs + 8) as *const u64).read();
        let mask = ((rs + 16) as *const u64).read();
        let rec = (data + ((head & mask) << 5)) as *mut u64;
        rec.write_volatile(0);
        rec.add(1).write_volatile(0);
        rec.add(2)
            .write_volatile(gen::VOID_STATUS | ((records - 1) * 32) << 8);
        AtomicU64::from_ptr(rec.add(3)).store((Kind::Patch as u64) << 56, Ordering::Release);
        if gen::frame_outer(g) {
            AtomicU64::from_ptr((ctl + 8) as *mut u64).store(u64::MAX, Ordering::Release);
        }
        AtomicU64::from_ptr((block + threads::OFF_INSIDE as u64) as *mut u64)
            .fetch_sub(1, Ordering::Relaxed);
        gen::unframe(g, e.flags_live.load(Ordering::Relaxed) != 0);
    }
    g[libc::REG_RIP as usize] = (t + u64::from(e.original.load(Ordering::Relaxed))) as i64;
    true
}

// ---- Region writers (normal context) ----

/// Who holds the slot writers' lock (a tid; 0: free). Region writers hold it from turning
/// slots off until the region table and the aliases have changed, and the patcher while it
/// fills a slot, so that no slot is filled from a region about to go.
static SLOT_LOCK: AtomicU32 = AtomicU32::new(0);

/// The slot writers' lock, held until dropped (normal context). A thread that holds it
/// already (a signal handler unmapping inside an unmapping) goes on without waiting.
pub(crate) struct SlotGuard {
    held: bool,
    /// Whether every thread was seen out of the trampolines after the slots went off.
    pub quiet: bool,
}

impl SlotGuard {
    fn lock() -> SlotGuard {
        let me = sys::gettid();
        if SLOT_LOCK.load(Ordering::Acquire) == me {
            return SlotGuard {
                held: false,
                quiet: true,
            };
        }
        let mut spins = 0u32;
        while SLOT_LOCK
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 100 {
                core::hint::spin_loop();
            } else {
                sys::sched_yield();
            }
        }
        SlotGuard {
            held: true,
            quiet: true,
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if self.held {
            SLOT_LOCK.store(0, Ordering::Release);
        }
    }
}

/// Turns off every slot covering part of `[start, start+len)` and waits until no thread is
/// inside a trampoline (so none still uses an alias of the range). Called before a traced
/// range is unmapped, moved or has its protection changed; the returned guard is to be
/// held until the region table and the aliases are changed. `quiet == false`: some thread
/// stayed inside past the deadline (its owner keeps the alias mapped).
pub(crate) fn disable(start: u64, len: u64) -> SlotGuard {
    if USED.load(Ordering::Acquire) == 0 {
        return SlotGuard {
            held: false,
            quiet: true,
        };
    }
    let mut g = SlotGuard::lock();
    let end = start.saturating_add(len);
    let mut any = false;
    for e in entries() {
        for s in &e.slots {
            let l = s.len.load(Ordering::Relaxed);
            let a = s.start.load(Ordering::Relaxed);
            if l != 0 && a < end && start < a + l {
                s.len.store(0, Ordering::SeqCst);
                any = true;
            }
        }
    }
    g.quiet = !any || quiesce();
    g
}

/// Waits until every thread that was inside a trampoline has been seen outside (at most
/// ~100 ms). The depths are plain stores on the trampolines' side; `membarrier` here
/// orders them against the slot stores made before (an asymmetric fence): after it, a
/// thread either shows it is inside or will see the slots off when it next enters. A
/// depth, not a parity: a signal handler may run a trampoline inside another.
fn quiesce() -> bool {
    text::sync_cores();
    let me = threads::existing().map(|b| &b.inside as *const AtomicU64);
    let deadline = sys::now_ns() + 100_000_000;
    for c in threads::inside_counters() {
        if Some(c as *const AtomicU64) == me {
            continue;
        }
        let mut spins = 0u32;
        while c.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 1000 {
                core::hint::spin_loop();
                continue;
            }
            if sys::now_ns() > deadline {
                return false;
            }
            sys::sched_yield();
        }
    }
    true
}

// ---- The patcher thread ----

/// Starts the patcher thread of this process unless it runs (normal context: the first
/// traced mapping, and the first in a fork child).
pub(crate) fn ensure_started() {
    // Generated code finds its thread's block through a TLS slot (the preload library
    // registers its own before tracing) or by probing the block table itself (the agent
    // injected at exec asks for that); without either nothing can be patched, so no
    // patcher (an agent injected into a running process).
    if !enabled() || (threads::tls_slot_offset().is_none() && !threads::table_lookup()) {
        return;
    }
    let pid = crate::pid();
    if STARTED.load(Ordering::Acquire) == pid {
        return;
    }
    if STARTED.swap(pid, Ordering::AcqRel) == pid {
        return;
    }
    let mut fds = [0i32; 2];
    if sys::pipe2(&mut fds, libc::O_CLOEXEC | libc::O_NONBLOCK) != 0 {
        return;
    }
    // High descriptor numbers: programs close, reuse and dup2 over low ones.
    let hi = |fd: i32| {
        let n = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, 910);
        if n >= 0 {
            sys::close(fd);
            n as i32
        } else {
            fd
        }
    };
    let (r, w) = (hi(fds[0]), hi(fds[1]));
    // The read end blocks (the patcher sleeps in read).
    sys::fcntl(r, libc::F_SETFL, 0);
    let old = PIPE_W.swap(w, Ordering::AcqRel);
    if old >= 0 {
        // A fork child's inherited pipe: the parent's patcher reads it.
        sys::close(old);
    }
    PATCHER_FDS.store(r, Ordering::Relaxed);
    // Every signal blocked in the new thread (it inherits the mask it is created with):
    // the program's signals must never run on it.
    let mut all = 0u64;
    let full = !0u64;
    sys::sigprocmask(libc::SIG_BLOCK, Some(&full), Some(&mut all));
    let spawned = crate::thread::spawn("mmio-trace-patch", 256 << 10, patcher);
    sys::sigprocmask(libc::SIG_SETMASK, Some(&all), None);
    if !spawned {
        PIPE_W.store(-1, Ordering::Relaxed);
        sys::close(w);
        sys::close(r);
    }
}

/// The patcher's read end (for the preload library's close hooks to spare).
static PATCHER_FDS: AtomicI32 = AtomicI32::new(-1);

/// The program is about to `dup2` over `fd`: a patcher pipe end there moves to another
/// number first (a notification must never land in the program's file).
pub(crate) fn evacuate(fd: i32) {
    for slot in [&PIPE_W, &PATCHER_FDS] {
        if fd >= 0 && slot.load(Ordering::Acquire) == fd {
            // Duplicating a descriptor of ours.
            let n = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, 910);
            if n >= 0 {
                slot.store(n as i32, Ordering::Release);
            }
        }
    }
}

/// Descriptors the patcher owns (the program must not close them; -1: none).
pub(crate) fn fds() -> [i32; 3] {
    [
        PIPE_W.load(Ordering::Relaxed),
        PATCHER_FDS.load(Ordering::Relaxed),
        text::mem_fd(),
    ]
}

/// The patcher's decisions (its own state: only it touches it).
struct Patcher {
    env: Option<gen::Env>,
    refused: BTreeSet<u64>,
}

fn patcher() {
    let mut p = Patcher {
        env: None,
        refused: Default::default(),
    };
    match setup() {
        Ok(env) => p.env = Some(env),
        Err(why) => {
            // Said once per process; every access then traps.
            note(0, NOTE_OFF, why);
            AFTER.store(0, Ordering::Relaxed);
            return;
        }
    }
    let mut buf = [0u8; 16];
    loop {
        // Its number again each time: `evacuate` may have moved it.
        let fd = PATCHER_FDS.load(Ordering::Acquire);
        let n = sys::read(fd, &mut buf);
        if n != 16 {
            if n == -(libc::EINTR as isize) {
                continue;
            }
            return;
        }
        let rip = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
        let addr = u64::from_le_bytes(buf[8..].try_into().unwrap_or_default());
        // Not while a fork copies the process (a child must not inherit a lock or a half
        // written text from this thread, which it will not have).
        while BUSY
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            sys::sleep_ns(100 * 1000);
        }
        if addr == 0 {
            p.patch(rip);
        } else {
            p.add_slot(rip, addr);
        }
        BUSY.store(0, Ordering::Release);
        PENDING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// 1 while the patcher handles a request, 2 while a fork holds it off.
static BUSY: AtomicU32 = AtomicU32::new(0);
/// Requests written into the pipe and not yet handled.
static PENDING: AtomicU64 = AtomicU64::new(0);

/// Before `fork` (`pthread_atfork` prepare): waits for the patcher's current request to
/// end and holds the next one off until [`fork_done`].
pub(crate) fn fork_prepare() {
    if STARTED.load(Ordering::Relaxed) != crate::pid() {
        return;
    }
    let deadline = sys::now_ns() + 1_000_000_000;
    while BUSY
        .compare_exchange(0, 2, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        if sys::now_ns() > deadline {
            return;
        }
        sys::sleep_ns(100 * 1000);
    }
}

/// After `fork`, in the parent and in the child.
pub(crate) fn fork_done() {
    let _ = BUSY.compare_exchange(2, 0, Ordering::AcqRel, Ordering::Relaxed);
}

/// At exit (normal context): gives the patcher up to 200 ms to handle what it was asked,
/// so that its reports (sites patched, or why not) reach the recorder.
pub fn drain() {
    if STARTED.load(Ordering::Relaxed) != crate::pid() {
        return;
    }
    let deadline = sys::now_ns() + 200_000_000;
    while PENDING.load(Ordering::Acquire) > 0 && sys::now_ns() < deadline {
        sys::sleep_ns(1_000_000);
    }
}

/// What trampolines need of this process, or why there can be none.
fn setup() -> Result<gen::Env, &'static str> {
    let block = match threads::tls_slot_offset() {
        Some(off) => gen::BlockAt::Tls(off),
        None if threads::table_lookup() => gen::BlockAt::Table(threads::table_base()),
        None => return Err("no per-thread slot for generated code"),
    };
    // A trampoline in the child of a fork that ran no hook of ours (on the inject route
    // none does; under the preload, a raw `syscall(SYS_fork)`) would find its parent's
    // block, and write into its parent's ring: it checks the canary first. The table
    // probe needs it; the TLS slot does without where the kernel has none (the preload's
    // fork hooks re-key the blocks).
    let fork_canary = match (crate::fork_canary(), block) {
        (0, gen::BlockAt::Table(_)) => {
            return Err("the kernel cannot mark fork children (MADV_WIPEONFORK)")
        }
        (c, _) => c,
    };
    if !sys::fsgsbase() {
        return Err("the kernel does not allow rdfsbase (FSGSBASE)");
    }
    let shm = crate::shm().ok_or("no recording")?;
    if shm.clock() != Clock::Tsc {
        return Err("the recording's clock is not the TSC");
    }
    text::init()?;
    let rs = threads::OFF_RING_STATE as i64;
    Ok(gen::Env {
        rseq: rseq_offset(),
        block,
        off_ring_ctl: rs,
        off_ring_data: rs + 8,
        off_ring_mask: rs + 16,
        off_inside: threads::OFF_INSIDE as i64,
        off_key: threads::OFF_KEY as i64,
        off_own_stack: threads::OFF_OWN_STACK as i64,
        off_tid: threads::OFF_TID as i64,
        off_tid_word: threads::OFF_TID_WORD as i64,
        closed: &shm.header().closed as *const AtomicU32 as u64,
        fork_canary,
    })
}

/// glibc's `__rseq_offset` when it registered rseq for its threads (`__rseq_size` > 0).
///
/// Without std (no dynamic loader to ask): none, so generated code does without rseq.
#[cfg(not(feature = "std"))]
fn rseq_offset() -> Option<i64> {
    None
}

/// glibc's `__rseq_offset` when it registered rseq for its threads (`__rseq_size` > 0).
#[cfg(feature = "std")]
fn rseq_offset() -> Option<i64> {
    if crate::env::is_set("MMIO_TRACE_NO_RSEQ") {
        return None;
    }
    // SAFETY: dlsym with NUL-terminated names; the symbols, when present, are glibc's
    // read-only variables of these types.
    unsafe {
        let size = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) as *const u32;
        let off = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()) as *const isize;
        if size.is_null() || off.is_null() || *size == 0 {
            return None;
        }
        Some(*off as i64)
    }
}

/// Tells the recorder about site `rip` (never logged: for its summary).
fn note(rip: u64, status: u64, why: &str) {
    let why = &why.as_bytes()[..why.len().min(512)];
    let w2 = status | (why.len() as u64) << 8;
    let r = Record::new(0, rip, w2, rip, 0, Kind::Patch);
    emit::note(r, why);
}

impl Patcher {
    fn refuse(&mut self, rip: u64, why: &str) {
        if self.refused.insert(rip) {
            note(rip, NOTE_REFUSED, why);
        }
    }

    fn patch(&mut self, rip: u64) {
        if entry_of(rip).is_some() || self.refused.contains(&rip) {
            return;
        }
        if let Err(why) = self.try_patch(rip) {
            self.refuse(rip, why);
        }
    }

    fn try_patch(&mut self, rip: u64) -> Result<(), &'static str> {
        self.try_patch_at(rip, 0)
    }

    /// As `try_patch`, `depth` sites deep in unpatching the sites whose jumps read this
    /// one's bytes.
    fn try_patch_at(&mut self, rip: u64, depth: u32) -> Result<(), &'static str> {
        let env = self.env.ok_or("patching is off")?;
        // (A read racing a fault that writes the site's cache is retried.)
        let d = (0..1000)
            .find_map(|_| {
                let d = site::snapshot(rip);
                if d.is_none() {
                    sys::sched_yield();
                }
                d
            })
            .ok_or("not in the site table")?;
        let len = usize::from(d.len);
        if len == 0 {
            return Err("undecodable instruction");
        }
        let bytes = &d.bytes[..len];
        let ins = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE).decode();
        gen::supported(&ins)?;
        let r = d.region.ok_or("no region")?;
        if r.alias == 0 {
            return Err("no alias mapping");
        }
        text::patchable(rip, len, if len < 5 { 4 } else { 0 })?;
        // A punned jump of a patched site reads bytes after its instruction: that site is
        // unpatched while this one is, then punned again over the new bytes.
        let end = rip + len as u64;
        if depth == 0 && depended_on(rip, len) {
            // Those sites first (and the ones that read theirs), deepest first; then
            // this one; then theirs again, punned over the bytes that are there now.
            let mut undone = Vec::new();
            if !unpatch_dependents(rip, len, &mut undone, 0) {
                for e in undone.iter().rev() {
                    repun(e);
                }
                return Err("its bytes are part of another patched site's jump");
            }
            let r = self.try_patch_at(rip, depth + 1);
            for e in undone.iter().rev() {
                repun(e);
            }
            return r;
        }
        let mut after = [0u8; 8];
        let got = text::read(rip + len as u64, &mut after);
        if len < 5 && got < 4 {
            return Err("no readable bytes after a short instruction");
        }
        let flags_live = flags::live_after(rip + len as u64);
        let idx = USED.load(Ordering::Relaxed);
        if idx >= MAX {
            return Err("too many patched sites");
        }
        let e = &ENTRIES[idx];
        let spec = gen::Site {
            rip,
            bytes,
            ins,
            flags_live,
            slots: e.slots.as_ptr() as u64,
            cs: &e.cs as *const gen::RseqCs as u64,
        };
        let size = gen::generate(&spec, &env, rip)?.code.len();
        let plans = pun::plans(rip, len, &after[..got]);
        let mut chosen = None;
        // The trampoline itself where the jump lands, when that is a wide window (a
        // narrow one is shared with neighbouring sites' windows: stubs only there)...
        for plan in &plans {
            if plan.hi - plan.lo < 1 << 20 {
                continue;
            }
            let Some(at) = arena::reserve(plan.lo, plan.hi, size) else {
                continue;
            };
            let t = gen::generate(&spec, &env, at)?;
            if t.code.len() != size || arena::fill(at, &t.code).is_err() {
                continue;
            }
            let Some(jump) = pun::encode(plan, rip, len, &after[..got], at) else {
                continue;
            };
            let dep_end = (rip + u64::from(plan.prefixes) + 5).max(end);
            chosen = Some((
                at,
                t,
                Reach {
                    jump,
                    stub: 0,
                    dep_end,
                },
            ));
            break;
        }
        // ...or near the site, with a 5-byte stub where the jump lands (punned windows are
        // a few hundred bytes, or one address: adjacent sites' windows overlap).
        if chosen.is_none() {
            let near = arena::reserve(rip.saturating_sub(1 << 30), rip + (1 << 30), size);
            if let Some(at) = near {
                let t = gen::generate(&spec, &env, at)?;
                if t.code.len() == size && arena::fill(at, &t.code).is_ok() {
                    if let Some(r) = reach(rip, len, &after[..got], &plans, at) {
                        chosen = Some((at, t, r));
                    }
                }
            }
        }
        let (at, t, reach) = chosen.ok_or("no room for a trampoline within the jump's reach")?;
        // Before anything can reach the trampoline.
        e.cs.start_ip.store(at + t.cs.0 as u64, Ordering::Relaxed);
        e.cs.post_commit_offset
            .store(t.cs.1 as u64, Ordering::Relaxed);
        e.cs.abort_ip.store(at + t.cs.2 as u64, Ordering::Release);
        e.acc_lo.store(t.access.0 as u32, Ordering::Relaxed);
        e.acc_hi.store(t.access.1 as u32, Ordering::Relaxed);
        e.abort.store(t.cs.2 as u32, Ordering::Relaxed);
        e.flags_live.store(u32::from(flags_live), Ordering::Relaxed);
        let (jump, dep_end) = (reach.jump, reach.dep_end);
        e.stub.store(reach.stub, Ordering::Relaxed);
        e.len.store(len as u32, Ordering::Relaxed);
        e.dep_end.store(dep_end, Ordering::Relaxed);
        store16(&e.orig, bytes);
        store16(&e.jump, &jump[..len]);
        e.tramp.store(at, Ordering::Relaxed);
        e.end.store(at + size as u64, Ordering::Relaxed);
        e.miss.store(t.miss as u32, Ordering::Relaxed);
        e.guard_lo.store(t.guard.0 as u32, Ordering::Relaxed);
        e.guard_hi.store(t.guard.1 as u32, Ordering::Relaxed);
        e.wait.store(t.wait as u32, Ordering::Relaxed);
        e.original.store(t.original as u32, Ordering::Relaxed);
        e.records.store(t.records as u32, Ordering::Relaxed);
        let width = ins.memory_size().size() as u32;
        e.width.store(width, Ordering::Relaxed);
        let info = iced_x86::InstructionInfoFactory::new()
            .info(&ins)
            .used_memory()
            .to_vec();
        let mut dirs = 0;
        for m in info {
            use iced_x86::OpAccess as A;
            match m.access() {
                A::Read | A::CondRead => dirs |= 1,
                A::Write | A::CondWrite => dirs |= 2,
                A::ReadWrite | A::ReadCondWrite => dirs |= 3,
                _ => {}
            }
        }
        e.dirs.store(dirs, Ordering::Relaxed);
        fill_slot(e, &r);
        e.rip.store(rip, Ordering::Release);
        LO.fetch_min(at, Ordering::Relaxed);
        HI.fetch_max(at + size as u64, Ordering::Relaxed);
        USED.store(idx + 1, Ordering::Release);
        index_insert(rip, idx);
        // From here a SIGTRAP at the site goes to the trampoline, and the fault path
        // decodes the saved bytes, never the live ones.
        site::set_patched(rip, true);
        let jump = &jump[..len];
        if let Err(errno) = text::replace(rip, bytes, jump) {
            site::set_patched(rip, false);
            return Err(if errno == libc::EAGAIN {
                "the program changed its code there"
            } else {
                "writing the program's text failed"
            });
        }
        note(rip, NOTE_PATCHED, "");
        let churn = CHURN.load(Ordering::Relaxed);
        for k in 0..churn {
            // A site whose bytes another site's jump reads must stay as it is.
            if depended_on(rip, len) {
                break;
            }
            // Unpatch and re-patch while the program runs through the site.
            let pause = 20 + (k * 7919 % 200);
            sys::sleep_ns(pause * 1000);
            if text::replace(rip, jump, bytes).is_err() {
                break;
            }
            sys::sleep_ns(pause / 2 * 1000);
            if text::replace(rip, bytes, jump).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// A patched site touched `addr` outside its slots: a free slot for its region.
    fn add_slot(&mut self, rip: u64, addr: u64) {
        let Some(e) = entry_of(rip) else { return };
        e.asked.store(0, Ordering::Release);
        let mut failed = None;
        let Some(r) = crate::regions::find_aliasing(addr, &mut failed) else {
            return;
        };
        if r.alias == 0 {
            return;
        }
        fill_slot(e, &r);
    }
}

/// Serves region `r` from a free slot of `e`, if its protection allows the site's access
/// and a slot is free. A slot used before (turned off) is reused in two steps with a wait
/// between, so that no trampoline pairs an old start with a new length.
fn fill_slot(e: &Entry, r: &Region) {
    // No region writer between the check that `r` is current and the slot going live.
    let _g = SlotGuard::lock();
    let dirs = e.dirs.load(Ordering::Relaxed);
    let width = u64::from(e.width.load(Ordering::Relaxed));
    if (dirs & 1 != 0 && r.prot & libc::PROT_READ == 0)
        || (dirs & 2 != 0 && r.prot & libc::PROT_WRITE == 0)
        || r.len < width
    {
        return;
    }
    if e.slots.iter().any(|s| {
        s.len.load(Ordering::Relaxed) != 0
            && s.start.load(Ordering::Relaxed) == r.start
            && s.alias.load(Ordering::Relaxed) == r.alias
    }) {
        return;
    }
    let Some(s) = e.slots.iter().find(|s| s.len.load(Ordering::Relaxed) == 0) else {
        return;
    };
    // Still the region's alias and protection? (The lock keeps it so until the end.)
    let mut failed = None;
    match crate::regions::find_aliasing(r.start, &mut failed) {
        Some(now)
            if now.start == r.start
                && now.alias == r.alias
                && now.len == r.len
                && now.prot == r.prot => {}
        _ => return,
    }
    let reused = s.start.load(Ordering::Relaxed) != 0;
    s.start.store(r.start, Ordering::Relaxed);
    s.alias.store(r.alias, Ordering::Relaxed);
    s.mapbits
        .store((r.map_id & 0xffff) << 48, Ordering::Relaxed);
    if reused && !quiesce() {
        return;
    }
    // The bounds first (a thread that sees the slot but older bounds only traps).
    let b = &e.bounds;
    let (lo, span) = (
        b.start.load(Ordering::Relaxed),
        b.len.load(Ordering::Relaxed),
    );
    let (nlo, nhi) = if span == 0 {
        (r.start, r.start + r.len)
    } else {
        (lo.min(r.start), (lo + span).max(r.start + r.len))
    };
    b.len.store(u64::MAX, Ordering::Release);
    b.start.store(nlo, Ordering::Release);
    b.len.store(nhi - nlo, Ordering::Release);
    s.len.store(r.len - width + 1, Ordering::Release);
}

/// How a site's jump reaches its trampoline: the jump's bytes, the stub it lands on (0:
/// the trampoline itself) and the end of the bytes the jump reads.
struct Reach {
    jump: [u8; 15],
    stub: u64,
    dep_end: u64,
}

/// Unpatches every patched site whose jump reads bytes of `[rip, rip+len)`, after the
/// sites that read theirs (recursively), pushing each in the order unpatched. `false`
/// when one could not be unpatched (the caller re-puns those it got).
fn unpatch_dependents(rip: u64, len: usize, out: &mut Vec<&'static Entry>, depth: u32) -> bool {
    if depth > 8 {
        return false;
    }
    let end = rip + len as u64;
    let deps: Vec<&'static Entry> = entries()
        .iter()
        .filter(|e| {
            let (a, l) = (
                e.rip.load(Ordering::Relaxed),
                u64::from(e.len.load(Ordering::Relaxed)),
            );
            a != 0 && a != rip && a + l < end && rip < e.dep_end.load(Ordering::Relaxed)
        })
        .collect();
    for e in deps {
        let (er, el) = (
            e.rip.load(Ordering::Relaxed),
            e.len.load(Ordering::Relaxed) as usize,
        );
        if !unpatch_dependents(er, el, out, depth + 1) {
            return false;
        }
        let (eo, ej) = (load16(&e.orig), load16(&e.jump));
        if text::replace(er, &ej[..el], &eo[..el]).is_err() {
            return false;
        }
        e.dep_end.store(er + el as u64, Ordering::Relaxed);
        out.push(e);
    }
    true
}

/// Whether another patched site's jump reads bytes of `[rip, rip+len)`.
fn depended_on(rip: u64, len: usize) -> bool {
    let end = rip + len as u64;
    entries().iter().any(|e| {
        let (a, l) = (
            e.rip.load(Ordering::Relaxed),
            u64::from(e.len.load(Ordering::Relaxed)),
        );
        a != 0 && a != rip && a + l < end && rip < e.dep_end.load(Ordering::Relaxed)
    })
}

/// A jump from the site to the trampoline at `body`: directly when a plan's window holds
/// it, else through a stub in a window that `body` is within a `jmp rel32` of.
fn reach(rip: u64, len: usize, after: &[u8], plans: &[pun::Plan], body: u64) -> Option<Reach> {
    const REL: u64 = (1 << 31) - 64;
    for plan in plans {
        let dep_end = (rip + u64::from(plan.prefixes) + 5).max(rip + len as u64);
        if plan.lo <= body && body < plan.hi {
            let jump = pun::encode(plan, rip, len, after, body)?;
            return Some(Reach {
                jump,
                stub: 0,
                dep_end,
            });
        }
        let lo = plan.lo.max(body.saturating_sub(REL));
        let hi = plan.hi.min(body.saturating_add(REL));
        if lo >= hi {
            continue;
        }
        let Some(stub) = arena::reserve(lo, hi, 5) else {
            continue;
        };
        let rel = body.wrapping_sub(stub + 5) as i64 as i32;
        let mut code = [0xe9u8, 0, 0, 0, 0];
        code[1..].copy_from_slice(&rel.to_le_bytes());
        if arena::fill(stub, &code).is_err() {
            continue;
        }
        if let Some(jump) = pun::encode(plan, rip, len, after, stub) {
            return Some(Reach {
                jump,
                stub,
                dep_end,
            });
        }
    }
    None
}

/// Patches `e`'s site again (it was unpatched so that a site its jump read could be
/// patched): a jump over the bytes that follow it now, to the same trampoline. On failure
/// the site stays unpatched (it traps, correctly).
fn repun(e: &Entry) {
    let rip = e.rip.load(Ordering::Relaxed);
    let len = e.len.load(Ordering::Relaxed) as usize;
    let mut after = [0u8; 8];
    let got = text::read(rip + len as u64, &mut after);
    if len < 5 && got < 4 {
        return;
    }
    let plans = pun::plans(rip, len, &after[..got]);
    let Some(r) = reach(
        rip,
        len,
        &after[..got],
        &plans,
        e.tramp.load(Ordering::Relaxed),
    ) else {
        return;
    };
    let orig = load16(&e.orig);
    if text::replace(rip, &orig[..len], &r.jump[..len]).is_ok() {
        store16(&e.jump, &r.jump[..len]);
        e.stub.store(r.stub, Ordering::Relaxed);
        e.dep_end.store(r.dep_end, Ordering::Relaxed);
    }
}

fn store16(w: &[AtomicU64; 2], b: &[u8]) {
    let mut v = [0u8; 16];
    v[..b.len().min(16)].copy_from_slice(&b[..b.len().min(16)]);
    w[0].store(
        u64::from_le_bytes(v[..8].try_into().unwrap_or_default()),
        Ordering::Relaxed,
    );
    w[1].store(
        u64::from_le_bytes(v[8..].try_into().unwrap_or_default()),
        Ordering::Relaxed,
    );
}

fn load16(w: &[AtomicU64; 2]) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&w[0].load(Ordering::Relaxed).to_le_bytes());
    v[8..].copy_from_slice(&w[1].load(Ordering::Relaxed).to_le_bytes());
    v
}

/// After `dlclose` (normal context): patched sites whose text no longer holds their jump
/// (nor their instruction, between an unpatch and a re-patch) were unloaded; they are
/// forgotten, so that code loaded at the same address is its own again.
pub(crate) fn after_dlclose() {
    for e in entries() {
        let rip = e.rip.load(Ordering::Relaxed);
        if rip == 0 {
            continue;
        }
        let len = e.len.load(Ordering::Relaxed) as usize;
        let mut live = [0u8; 16];
        let got = text::read(rip, &mut live[..len]);
        let (orig, jump) = (load16(&e.orig), load16(&e.jump));
        let ours = got == len
            && (live[..len] == jump[..len]
                || live[..len] == orig[..len]
                || (live[0] == 0xcc
                    && (live[1..len] == jump[1..len] || live[1..len] == orig[1..len])));
        if !ours {
            for s in &e.slots {
                s.len.store(0, Ordering::SeqCst);
            }
            e.rip.store(0, Ordering::SeqCst);
            site::set_patched(rip, false);
        }
    }
}

/// In a fork child: the parent's patcher thread is not here; the child starts its own at
/// its next traced mapping or trap.
pub(crate) fn after_fork_child() {
    STARTED.store(0, Ordering::Relaxed);
    PENDING.store(0, Ordering::Relaxed);
    BUSY.store(0, Ordering::Relaxed);
    // Held by a thread fork did not copy: nobody will release it.
    SLOT_LOCK.store(0, Ordering::Relaxed);
}
