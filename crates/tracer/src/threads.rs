//! Per-thread state without libc TLS: one `#[repr(C)]` [`ThreadBlock`] per thread, in a
//! fixed table keyed by the thread's FS base.
//!
//! `thread_local!` is not usable in a signal handler (first access may allocate, and glibc
//! may reallocate the DTV). The FS base is defined for every thread (`rdfsbase`, a few
//! cycles, where the kernel enables FSGSBASE; `arch_prctl` otherwise), unlike the value at
//! `%fs:0`, which is a TCB self-pointer only in libc threads (a thread that set its FS base
//! itself, as Go does, may read 0 there). It is not unique, though:
//! - a raw `clone` without `CLONE_SETTLS` shares its parent's FS base while both run;
//! - a thread that ended without the end hooks (raw `SYS_exit`) leaves its block behind,
//!   and the next thread given the same TCB finds it.
//!
//! So a block found by key is the caller's only if it proves to be: the caller's stack
//! pointer lies on the block's alternate signal stack (the fault path runs there; a
//! thread's alternate stack is its own, the kernel clears it in a new thread), or,
//! failing that, the block's tid is the caller's (`gettid`, ~70 ns: normal-context hooks,
//! a thread without an alternate stack). A block whose thread is gone (`tgkill(tid, 0)`
//! says `ESRCH`) is taken over; one whose thread lives (a shared FS base) is passed over
//! and the caller gets a block of its own under the same key. [`thread_started`] (the
//! `pthread_create` hook) takes over a reused TCB's block at once, and [`thread_exiting`]
//! frees the block (a tombstone: lookups probe past it, inserts reuse it) and the thread's
//! alternate signal stack.
//!
//! Generated code that probes the table itself (the injected core's trampolines) cannot
//! afford `gettid`: it takes a block only while the stack pointer lies in the owner's
//! stack and the owner's `clear_child_tid` word still holds the owner's tid (see
//! `ThreadBlock::tid_word`), since a new thread may inherit a dead one's TCB and stack.
//!
//! In preload mode the block's address is also published in an initial-exec TLS slot
//! (see [`set_tls_publisher`]) for generated code, which reads it with one `%fs`-relative
//! load.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use mmio_trace_ring::Producer;

use crate::sys;

/// Blocks in the table (threads traced at once).
/// (Far more than rings by default: a thread without a block has no ring, and its events
/// are counted lost.) The table is all zeros until used, so it costs no file space and no
/// memory beyond the pages threads touch.
pub const MAX_THREADS: usize = 16384;
/// `ring` of a block without one (the field holds the ring's index + 1, so that an unused
/// block is all zeros).
const NO_RING: u32 = 0;
const _: () = assert!(MAX_THREADS.is_power_of_two());
/// `key` of a never-used block (ends a probe).
const EMPTY_KEY: u64 = 0;
/// `key` of a freed block (probes go on past it; inserts reuse it).
const TOMBSTONE: u64 = 1;
/// Set in every live key: an FS base is a user address (below 2^47; the kernel refuses
/// others), so a key is never 0 (a free block) or 1 (a freed one), even for an FS base of 0.
pub const KEY_BIT: u64 = 1 << 63;
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
    /// gregs index + size of the destination register of a read (size 0: none; with
    /// `dir` 1 and no `vec`, the value is then read after the step from the ordinary
    /// memory at `value`: a `MOVS` from the device to ordinary memory).
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

const NO_STEP: StepState = StepState {
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
};

/// Signal state the program believes in but the kernel must not see (see `signals`):
/// which of the tracer's signals a program handler runs with "blocked", and the program's
/// own alternate stack.
#[repr(C)]
pub struct SigState {
    /// Stack address of the innermost program handler running with some of the tracer's
    /// signals believed blocked (0: none).
    pub frame: AtomicU64,
    /// Those signals (bit n-1: signal n).
    pub blocked: AtomicU64,
    /// The program's `sigaltstack` (`ss_flags` as it set them; size 0: none, disabled).
    pub ss_sp: AtomicU64,
    /// Its size (0: none).
    pub ss_size: AtomicU64,
    /// Its flags (`SS_AUTODISARM`).
    pub ss_flags: AtomicU32,
}

impl SigState {
    fn reset(&self) {
        self.frame.store(0, Ordering::Relaxed);
        self.blocked.store(0, Ordering::Relaxed);
        self.ss_sp.store(0, Ordering::Relaxed);
        self.ss_size.store(0, Ordering::Relaxed);
        self.ss_flags.store(0, Ordering::Relaxed);
    }

    fn copy_from(&self, o: &SigState) {
        for (a, b) in [
            (&self.frame, &o.frame),
            (&self.blocked, &o.blocked),
            (&self.ss_sp, &o.ss_sp),
            (&self.ss_size, &o.ss_size),
        ] {
            a.store(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.ss_flags
            .store(o.ss_flags.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// The thread's ring, where generated code finds it without the ring crate: set when the
/// thread claims its ring, all 0 while it has none. The reservation counter and the cached
/// tail live in the ring's control block (shared by every handle; see the ring crate).
#[repr(C)]
pub struct RingState {
    /// The ring's control block (`RingCtl`): its address.
    pub ctl: AtomicU64,
    /// The ring's first record: its address.
    pub data: AtomicU64,
    /// Records in the ring, less one.
    pub mask: AtomicU64,
    /// Reserved (0).
    pub reserved: AtomicU64,
}

impl RingState {
    fn set(&self, p: Option<&Producer>) {
        let (ctl, data, mask) = p.map_or((0, 0, 0), |p| {
            let (c, d, m) = p.raw_parts();
            (c as u64, d as u64, m)
        });
        // Generated code reads `ctl` last-written-first: a non-zero `ctl` means the others
        // are set.
        self.ctl.store(0, Ordering::Release);
        self.data.store(data, Ordering::Relaxed);
        self.mask.store(mask, Ordering::Relaxed);
        self.ctl.store(ctl, Ordering::Release);
    }
}

/// One thread's block. `#[repr(C)]` with the offsets below fixed, so that generated code
/// (the patching issue's trampolines) can read it; fields are only appended.
#[repr(C)]
pub struct ThreadBlock {
    /// The thread's FS base with [`KEY_BIT`] set ([`EMPTY_KEY`], [`TOMBSTONE`] otherwise).
    key: AtomicU64,
    /// The owning thread's id (0 while a block is being claimed).
    tid: AtomicU32,
    /// The thread's ring: its index + 1 ([`NO_RING`]: none yet).
    ring: AtomicU32,
    /// The ring producer's state (reserved, see [`RingState`]).
    pub ring_state: RingState,
    /// The alternate signal stack mapped for this thread by the tracer (0: none of ours).
    altstack: AtomicU64,
    /// The thread's (kernel) alternate signal stack, `[lo, hi)`: the tracer's handlers run
    /// there, so a stack pointer in it proves the caller owns the block (0, 0: unknown).
    stack_lo: AtomicU64,
    stack_hi: AtomicU64,
    /// What the program believes of its signal mask and alternate stack.
    pub sig: SigState,
    pub(crate) step: UnsafeCell<StepState>,
    /// The thread's out-of-line frames.
    pub(crate) ool: crate::ool::OolFrames,
    /// How many trampolines the thread is inside (a signal handler may nest one): raised
    /// on entry, lowered on exit (see `patch::quiesce`).
    pub(crate) inside: AtomicU64,
    /// The owning thread's stack, `[own_lo, own_hi)` (0, 0: unknown): a trampoline serves
    /// only a thread whose stack pointer lies there, which proves the block is its own
    /// even where another thread reads the same TLS slot (a raw `clone` sharing its
    /// parent's thread pointer).
    own_lo: AtomicU64,
    own_hi: AtomicU64,
    /// How many of the step path's pause handlers the thread is inside, and the newest
    /// generation it acknowledged (see `step::paused`).
    pub(crate) pause_depth: AtomicU32,
    pub(crate) pause_acked: AtomicU32,
    /// Which of the signals the program may never block for real it believes blocked
    /// outside its handlers (`sysemu`'s virtual `rt_sigprocmask`).
    pub(crate) sysemu_blocked: AtomicU64,
    /// How many times the fault path looked for the owner's stack bounds in
    /// `/proc/self/maps` (see [`learn_own_stack`]).
    own_tried: AtomicU32,
    /// Attached processes only (`attached`): how many handlers of the tracer the thread
    /// is inside (counted in `attached`'s total too), and the kernel's signal frame of the
    /// outermost one: a program handler called from one of ours may leave it with
    /// `siglongjmp`, and code running above that frame proves it did.
    pub(crate) handler_depth: AtomicU32,
    pub(crate) handler_frame: AtomicU64,
    /// Table lookup only (see [`learn_own_stack`]): the address of a u32 that holds the
    /// owner's tid while it lives and that the kernel zeroes when it ends (its
    /// `clear_child_tid`: libc's own word, or `ThreadBlock::exit_word`); 0: none known.
    /// A trampoline serves the block only while that word holds the block's tid: a thread
    /// that inherits a dead owner's TCB and stack (libc's stack cache) passes every other
    /// check, and on the inject route no end hook frees the block first.
    tid_word: AtomicU64,
    /// The owner's `clear_child_tid`, when the thread had none of its own (a raw clone, a
    /// Go thread).
    exit_word: AtomicU32,
}

/// The name the rest of the tracer used before the block: one thread's state.
pub type ThreadSlot = ThreadBlock;

/// Offset of [`ThreadBlock`]'s key (FS base | [`KEY_BIT`], u64).
pub const OFF_KEY: usize = 0;
/// Offset of the tid (u32).
pub const OFF_TID: usize = 8;
/// Offset of the ring index + 1 (u32).
pub const OFF_RING: usize = 12;
/// Offset of [`ThreadBlock::ring_state`].
pub const OFF_RING_STATE: usize = 16;
/// Offset of the tracer-mapped alternate stack (u64).
pub const OFF_ALTSTACK: usize = 48;
/// Offset of the alternate signal stack's bounds (two u64).
pub const OFF_STACK: usize = 56;
/// Offset of [`ThreadBlock::sig`].
pub const OFF_SIG: usize = 72;
/// Offset of the step state (private layout).
pub const OFF_STEP: usize = 112;
/// Offset of the trampoline depth (u64; nonzero while the thread is inside one).
pub const OFF_INSIDE: usize = core::mem::offset_of!(ThreadBlock, inside);
/// Offsets of the owner's stack bounds (two u64: `[lo, hi)`, 0 when unknown).
pub const OFF_OWN_STACK: usize = core::mem::offset_of!(ThreadBlock, own_lo);
const _: () = assert!(core::mem::offset_of!(ThreadBlock, own_hi) == OFF_OWN_STACK + 8);
/// Offset of the owner's tid word's address (u64, see `ThreadBlock::tid_word`).
pub const OFF_TID_WORD: usize = core::mem::offset_of!(ThreadBlock, tid_word);

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(ThreadBlock, key) == OFF_KEY);
    assert!(offset_of!(ThreadBlock, tid) == OFF_TID);
    assert!(offset_of!(ThreadBlock, ring) == OFF_RING);
    assert!(offset_of!(ThreadBlock, ring_state) == OFF_RING_STATE);
    assert!(offset_of!(ThreadBlock, altstack) == OFF_ALTSTACK);
    assert!(offset_of!(ThreadBlock, stack_lo) == OFF_STACK);
    assert!(offset_of!(ThreadBlock, stack_hi) == OFF_STACK + 8);
    assert!(offset_of!(ThreadBlock, sig) == OFF_SIG);
    assert!(offset_of!(ThreadBlock, step) == OFF_STEP);
};

// SAFETY: `step` is only touched by the thread owning the block (from its signal
// handlers); the other fields are atomics.
unsafe impl Sync for ThreadBlock {}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: ThreadBlock = ThreadBlock {
    key: AtomicU64::new(EMPTY_KEY),
    tid: AtomicU32::new(0),
    ring: AtomicU32::new(NO_RING),
    ring_state: RingState {
        ctl: AtomicU64::new(0),
        data: AtomicU64::new(0),
        mask: AtomicU64::new(0),
        reserved: AtomicU64::new(0),
    },
    altstack: AtomicU64::new(0),
    stack_lo: AtomicU64::new(0),
    stack_hi: AtomicU64::new(0),
    sig: SigState {
        frame: AtomicU64::new(0),
        blocked: AtomicU64::new(0),
        ss_sp: AtomicU64::new(0),
        ss_size: AtomicU64::new(0),
        ss_flags: AtomicU32::new(0),
    },
    step: UnsafeCell::new(NO_STEP),
    ool: crate::ool::OolFrames::EMPTY,
    inside: AtomicU64::new(0),
    own_lo: AtomicU64::new(0),
    own_hi: AtomicU64::new(0),
    pause_depth: AtomicU32::new(0),
    pause_acked: AtomicU32::new(0),
    sysemu_blocked: AtomicU64::new(0),
    own_tried: AtomicU32::new(0),
    handler_depth: AtomicU32::new(0),
    handler_frame: AtomicU64::new(0),
    tid_word: AtomicU64::new(0),
    exit_word: AtomicU32::new(0),
};

static BLOCKS: [ThreadBlock; MAX_THREADS] = [EMPTY; MAX_THREADS];

// What generated code that probes the table itself (`patch::gen::BlockAt::Table`) relies
// on: block `i` lies at `table_base() + i * BLOCK_SIZE`, and a key's first slot is
// `(key * HASH_MUL) >> HASH_SHIFT` (see `hash`), the next ones following modulo
// `MAX_THREADS`.
/// Bytes from one block of the table to the next.
pub(crate) const BLOCK_SIZE: usize = core::mem::size_of::<ThreadBlock>();
/// The multiplier of the table's multiply-shift hash.
pub(crate) const HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;
/// Its shift: the product's top `log2(MAX_THREADS)` bits are the slot.
pub(crate) const HASH_SHIFT: u32 = 64 - MAX_THREADS.trailing_zeros();
const _: () =
    assert!(core::mem::size_of::<[ThreadBlock; MAX_THREADS]>() == BLOCK_SIZE * MAX_THREADS);
const _: () = assert!(BLOCK_SIZE * MAX_THREADS <= i32::MAX as usize);
const _: () = assert!(OFF_KEY == 0 && EMPTY_KEY == 0);

/// The table's address (for generated code that probes it).
pub(crate) fn table_base() -> u64 {
    BLOCKS.as_ptr() as u64
}

/// Every block's trampoline counter (owned or not), for waiting out trampolines.
pub(crate) fn inside_counters() -> impl Iterator<Item = &'static AtomicU64> {
    BLOCKS.iter().map(|b| &b.inside)
}

/// Whether any thread is inside an out-of-line slot (see [`crate::attached::busy`]; the
/// threads are stopped).
pub(crate) fn any_ool_busy() -> bool {
    BLOCKS.iter().any(|b| b.ool.any_busy())
}

/// Whether any thread is in the middle of a single step (the threads are stopped).
pub(crate) fn any_step() -> bool {
    // SAFETY: read while every thread is stopped (the recorder's detach): no thread
    // writes its step state meanwhile.
    BLOCKS.iter().any(|b| unsafe { (*b.step.get()).active })
}

/// Where the preload library publishes a block's address for generated code: a function
/// that stores its argument in the calling thread's initial-exec TLS slot (0: none).
static TLS_PUBLISH: AtomicUsize = AtomicUsize::new(0);
/// That slot's offset from the thread pointer (valid when [`TLS_PUBLISH`] is set).
static TLS_OFFSET: AtomicI64 = AtomicI64::new(0);

/// Registers the initial-exec TLS slot that holds each thread's block address: `publish`
/// stores its argument in the calling thread's slot, which lies at `offset` from the
/// thread pointer (`%fs:offset`). The preload library calls this at start.
///
/// The slot is written only in threads libc made (the main thread at start, threads from
/// `pthread_create`, through their start hook), whose FS base is a libc TCB with static
/// TLS below it: elsewhere `%fs:offset` is not a TLS slot but the thread's own memory. Readers must treat 0 as "no block" and must not rely on the slot in threads
/// that set their FS base themselves, nor in a raw `clone` child sharing its parent's TCB
/// (the slot there is the parent's).
pub fn set_tls_publisher(publish: extern "C" fn(*const ThreadBlock), offset: i64) {
    TLS_OFFSET.store(offset, Ordering::Relaxed);
    TLS_PUBLISH.store(publish as usize, Ordering::Release);
}

/// The offset from the thread pointer of the TLS slot holding the thread's block address
/// (`mov rax, fs:[offset]`), when the preload library registered one.
pub fn tls_slot_offset() -> Option<i64> {
    (TLS_PUBLISH.load(Ordering::Acquire) != 0).then(|| TLS_OFFSET.load(Ordering::Relaxed))
}

/// Publishes `b` (or null) in the calling thread's TLS slot, if it has a libc TCB.
fn publish(b: *const ThreadBlock, fs: u64) {
    let f = TLS_PUBLISH.load(Ordering::Acquire);
    if f != 0 && fs != 0 && sys::fs_is_tcb(fs) {
        // SAFETY: registered by `set_tls_publisher` with this signature.
        let f: extern "C" fn(*const ThreadBlock) = unsafe { core::mem::transmute(f) };
        f(b);
    }
}

#[inline]
pub(crate) const fn hash(key: u64) -> usize {
    (key.wrapping_mul(HASH_MUL) >> HASH_SHIFT) as usize & (MAX_THREADS - 1)
}

/// The calling thread's key.
#[inline]
fn my_key() -> u64 {
    sys::fs_base() | KEY_BIT
}

/// The calling thread's stack pointer (near enough: an address in this frame).
#[inline(always)]
fn stack_pointer() -> u64 {
    let sp: u64;
    // SAFETY: reads rsp.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

/// The caller's tid, asked of the kernel at most once per lookup.
struct Tid(u32);

impl Tid {
    #[inline]
    fn get(&mut self) -> u32 {
        if self.0 == 0 {
            self.0 = sys::gettid();
        }
        self.0
    }
}

impl ThreadBlock {
    /// Whether the calling thread (stack pointer `sp`) owns this block, whose key is its.
    #[inline]
    fn is_mine(&self, sp: u64, tid: &mut Tid) -> bool {
        let lo = self.stack_lo.load(Ordering::Relaxed);
        if lo != 0 && sp.wrapping_sub(lo) < self.stack_hi.load(Ordering::Relaxed) - lo {
            return true;
        }
        let t = self.tid.load(Ordering::Acquire);
        t != 0 && t == tid.get()
    }

    /// Whether the block's thread has ended (its block can be taken over).
    fn owner_gone(&self) -> bool {
        let t = self.tid.load(Ordering::Acquire);
        const ESRCH: isize = 3;
        t != 0 && sys::tgkill(crate::pid(), t, 0) == -ESRCH
    }
}

/// The calling thread's block without creating it.
#[inline]
fn lookup(key: u64, tid: &mut Tid) -> Option<&'static ThreadBlock> {
    let sp = stack_pointer();
    let mut i = hash(key);
    for _ in 0..MAX_THREADS {
        let s = &BLOCKS[i];
        let k = s.key.load(Ordering::Acquire);
        if k == key && s.is_mine(sp, tid) {
            return Some(s);
        }
        if k == EMPTY_KEY {
            return None;
        }
        i = (i + 1) & (MAX_THREADS - 1);
    }
    None
}

/// Makes `s` (claimed: its key is ours, its tid ours) the calling thread's: a fresh ring
/// state, step state and believed signal state; an alternate signal stack (the previous
/// owner's, if it was the tracer's and is not ours, is unmapped). `hooked`: a thread libc
/// made (a start hook), whose TLS slot is published.
fn adopt(s: &'static ThreadBlock, key: u64, hooked: bool) {
    crate::attached::forget_handlers(s);
    s.pause_depth.store(0, Ordering::Relaxed);
    s.own_lo.store(0, Ordering::Relaxed);
    s.own_hi.store(0, Ordering::Relaxed);
    s.tid_word.store(0, Ordering::Relaxed);
    s.stack_lo.store(0, Ordering::Relaxed);
    s.stack_hi.store(0, Ordering::Relaxed);
    s.ring.store(NO_RING, Ordering::Relaxed);
    s.ring_state.set(None);
    s.sig.reset();
    s.sysemu_blocked.store(
        pending_blocked(s.tid.load(Ordering::Relaxed), key),
        Ordering::Relaxed,
    );
    s.own_tried.store(0, Ordering::Relaxed);
    // SAFETY: the block is now this thread's; its previous owner has exited.
    unsafe { (*s.step.get()).active = false };
    s.ool.reset();
    let stale = s.altstack.swap(0, Ordering::Relaxed);
    // SAFETY: zeroed stack_t is valid as an out value.
    let mut cur: libc::stack_t = unsafe { core::mem::zeroed() };
    sys::sigaltstack(None, Some(&mut cur));
    let has = cur.ss_flags & libc::SS_DISABLE == 0;
    if stale != 0 && (!has || cur.ss_sp as u64 != stale) {
        // A previous owner's stack (it never ran its end hook): nobody's now.
        // SAFETY: the tracer's own mapping, not in use by any thread.
        unsafe { sys::munmap(stale as usize, ALTSTACK_SIZE) };
    }
    if has && cur.ss_size >= ALTSTACK_SIZE {
        s.altstack.store(
            if cur.ss_sp as u64 == stale { stale } else { 0 },
            Ordering::Relaxed,
        );
        set_stack(s, cur.ss_sp as u64, cur.ss_size as u64);
    } else {
        let p = map_altstack();
        s.altstack.store(p, Ordering::Relaxed);
        if p != 0 {
            set_stack(s, p, ALTSTACK_SIZE as u64);
            if has && crate::attached::is_attached() {
                // The program's own (small) stack, put back when the recorder leaves
                // (`thread_exiting`). Nothing routes `sigaltstack` in an attached process,
                // so these fields are free there.
                s.sig.ss_sp.store(cur.ss_sp as u64, Ordering::Relaxed);
                s.sig.ss_size.store(cur.ss_size as u64, Ordering::Relaxed);
                s.sig.ss_flags.store(
                    (cur.ss_flags & crate::signals::SS_AUTODISARM) as u32,
                    Ordering::Relaxed,
                );
            }
        }
    }
    if hooked {
        publish(s, key & !KEY_BIT);
    }
}

/// A thread's believed-blocked signals recorded before its FS base was set (an image's
/// first thread at its exec stop, where the core starts before libc gives the thread its
/// TCB): its block under the new key starts with them.
static PENDING_BLOCKED: AtomicU64 = AtomicU64::new(0);
static PENDING_TID: AtomicU32 = AtomicU32::new(0);

/// Remembers `mask` as thread `tid`'s believed-blocked signals until it adopts a block
/// under a real FS base (see `sysemu::believe_blocked`).
pub(crate) fn set_pending_blocked(tid: u32, mask: u64) {
    PENDING_BLOCKED.store(mask, Ordering::Relaxed);
    PENDING_TID.store(tid, Ordering::Release);
}

fn pending_blocked(tid: u32, key: u64) -> u64 {
    if tid == 0 || PENDING_TID.load(Ordering::Acquire) != tid {
        return 0;
    }
    let m = PENDING_BLOCKED.load(Ordering::Relaxed);
    if key & !KEY_BIT != 0 {
        PENDING_TID.store(0, Ordering::Relaxed);
    }
    m
}

fn set_stack(s: &ThreadBlock, lo: u64, size: u64) {
    s.stack_hi.store(lo + size, Ordering::Relaxed);
    s.stack_lo.store(lo, Ordering::Relaxed);
}

/// Claims a block for `key` and the calling thread: a dead thread's block under the same
/// key, else the first tombstone or empty block on the probe. `force`: a block under the
/// key whose thread is not the caller is taken over without asking whether it lives (a
/// new thread from `pthread_create`, or the main thread at start: its TCB is its own, and
/// its TLS slot is published).
fn claim(key: u64, tid: &mut Tid, force: bool) -> Option<&'static ThreadBlock> {
    let me = tid.get();
    'retry: for _ in 0..4 {
        let mut i = hash(key);
        let mut free: Option<(&'static ThreadBlock, u64)> = None;
        for _ in 0..MAX_THREADS {
            let s = &BLOCKS[i];
            let k = s.key.load(Ordering::Acquire);
            if k == key {
                let t = s.tid.load(Ordering::Acquire);
                if t == me {
                    if force {
                        publish(s, key & !KEY_BIT);
                    }
                    return Some(s);
                }
                if t != 0
                    && (force || s.owner_gone())
                    && s.tid
                        .compare_exchange(t, me, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    adopt(s, key, force);
                    return Some(s);
                }
            } else if (k == EMPTY_KEY || k == TOMBSTONE) && free.is_none() {
                free = Some((s, k));
            }
            if k == EMPTY_KEY {
                break;
            }
            i = (i + 1) & (MAX_THREADS - 1);
        }
        let (s, k) = free?;
        // tid 0 until the key is ours: a thread sharing the key passes over it meanwhile.
        s.tid.store(0, Ordering::Release);
        if s.key
            .compare_exchange(k, key, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another thread took it: probe again.
            continue 'retry;
        }
        s.tid.store(me, Ordering::Release);
        adopt(s, key, force);
        return Some(s);
    }
    None
}

/// The calling thread's block, created on first use; `None` if the table is full.
#[inline]
pub fn current() -> Option<&'static ThreadBlock> {
    let key = my_key();
    let mut tid = Tid(0);
    lookup(key, &mut tid).or_else(|| claim(key, &mut tid, false))
}

impl ThreadBlock {
    /// The thread id.
    pub fn tid(&self) -> u32 {
        self.tid.load(Ordering::Relaxed)
    }

    /// The FS base the block is keyed by.
    pub fn fs_base(&self) -> u64 {
        self.key.load(Ordering::Relaxed) & !KEY_BIT
    }

    /// This thread's ring, claimed on first use.
    #[inline]
    pub fn producer(&self) -> Option<Producer> {
        let shm = crate::shm()?;
        let r = self.ring.load(Ordering::Relaxed);
        if r != NO_RING {
            // SAFETY: the ring was claimed by this thread (block owner).
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
        self.ring_state.set(Some(&p));
        Some(p)
    }

    /// This thread's ring without waiting for one: the ring it holds (`false`), or a free
    /// one claimed now (`true`: the caller gives it up again with [`retire_ring`]), or
    /// `None` when every ring is in use.
    pub(crate) fn producer_nowait(&self) -> Option<(Producer, bool)> {
        let shm = crate::shm()?;
        let r = self.ring.load(Ordering::Relaxed);
        if r != NO_RING {
            // SAFETY: the ring was claimed by this thread (block owner).
            return Some((unsafe { Producer::from_index(shm, r - 1) }, false));
        }
        let p = shm.claim(crate::pid(), self.tid())?;
        self.ring.store(p.index() + 1, Ordering::Relaxed);
        self.ring_state.set(Some(&p));
        Some((p, true))
    }

    fn retire(&self) {
        let r = self.ring.swap(NO_RING, Ordering::Relaxed);
        self.ring_state.set(None);
        if r != NO_RING {
            if let Some(shm) = crate::shm() {
                // SAFETY: claimed by this block's thread, which no longer uses it.
                unsafe { Producer::from_index(shm, r - 1) }.retire();
            }
        }
    }
}

/// Call at the start of every new thread: takes over a reused TCB's block. The ring of
/// the block's previous thread is not touched: it was retired when that thread ended, or
/// the recorder frees it once it sees the thread gone (it may already belong to another
/// thread).
pub fn thread_started() {
    let mut tid = Tid(0);
    if let Some(b) = claim(my_key(), &mut tid, true) {
        let (lo, hi) = own_stack();
        b.own_lo.store(lo, Ordering::Relaxed);
        b.own_hi.store(hi, Ordering::Relaxed);
    }
}

/// The calling thread may be cancelled at any instruction (`PTHREAD_CANCEL_ASYNCHRONOUS`)
/// or not any more: trampolines stop (or start again) serving it, since a cancellation
/// between a trampoline's access and its event would lose the event (the trap path holds
/// cancellation off with its signal mask). Normal context.
pub fn set_async_cancel(on: bool) {
    let mut tid = Tid(0);
    let Some(b) = claim(my_key(), &mut tid, false) else {
        return;
    };
    let (lo, hi) = if on { (0, 0) } else { own_stack() };
    b.own_hi.store(hi, Ordering::Relaxed);
    b.own_lo.store(lo, Ordering::Relaxed);
}

/// Whether generated code may find blocks by probing the table itself (no TLS slot).
static TABLE_LOOKUP: AtomicU32 = AtomicU32::new(0);

/// Lets generated code find the calling thread's block by probing the table itself
/// (FS base, hash, a few slots, the owner's stack) instead of reading a TLS slot: for a
/// core with no TLS slot of its own (the agent injected at exec). The fault path then
/// learns each thread's stack bounds from `/proc/self/maps` at its first trap
/// (`learn_own_stack`). Not for a core that will be removed from a running process:
/// patched text would outlive it.
pub fn enable_table_lookup() {
    TABLE_LOOKUP.store(1, Ordering::Release);
}

/// Whether [`enable_table_lookup`] was called.
pub fn table_lookup() -> bool {
    TABLE_LOOKUP.load(Ordering::Acquire) != 0
}

/// How many times the fault path looks for a thread's stack bounds (see
/// [`learn_own_stack`]).
const OWN_TRIES: u32 = 4;

/// Signal context (a trap at a traced address, stack pointer `sp`): with table lookup on,
/// gives the calling thread's block the bounds of its stack (at most [`OWN_TRIES`] looks
/// per owner, until found), where they prove the block is its own (a trampoline serves a
/// thread only while its stack pointer lies there): the mapping holding `sp` when it is
/// the main thread's `[stack]`, or, when it also holds the thread's FS base, its part on
/// `sp`'s side of the FS base (a libc thread's stack, whose TCB lies at its top; a Go
/// thread whose `m` and goroutine stacks share the heap). A sibling sharing the FS base
/// (a raw `clone` without `CLONE_SETTLS`) runs on another mapping unless its stack was
/// carved from this one (the same limit as `pthread_getattr_np`'s bounds on the preload
/// route). Any other thread keeps no bounds and stays on the trap path.
pub(crate) fn learn_own_stack(sp: u64) {
    if !table_lookup() {
        return;
    }
    let Some(b) = existing() else {
        return;
    };
    // A few looks per owner: a first trap may come from a signal handler on an
    // alternate stack (no bounds there), a later one from the thread's own code.
    let tried = b.own_tried.load(Ordering::Relaxed);
    if tried >= OWN_TRIES || b.own_hi.load(Ordering::Relaxed) != 0 {
        return;
    }
    b.own_tried.store(tried + 1, Ordering::Relaxed);
    if !learn_tid_word(b) {
        return;
    }
    if let Some((lo, hi)) = stack_mapping(sp, b.fs_base()) {
        // Trampolines compare with `lo` first and `hi` second: `hi` still 0 fails them.
        b.own_lo.store(lo, Ordering::Relaxed);
        b.own_hi.store(hi, Ordering::Release);
    }
}

/// Gives `b` (the calling thread's) its `ThreadBlock::tid_word`: the thread's
/// `clear_child_tid` when it holds the thread's tid (a libc thread's), or, where the thread
/// has none, the block's own `exit_word`, made its `clear_child_tid` now (only where table
/// lookup is on: a core that never leaves the process, so the kernel's write at the
/// thread's end always lands in the block). `false`: none can be had (a kernel without
/// `PR_GET_TID_ADDRESS`, a word that does not hold the tid): trampolines pass the thread
/// over.
fn learn_tid_word(b: &ThreadBlock) -> bool {
    if b.tid_word.load(Ordering::Relaxed) != 0 {
        return true;
    }
    let tid = b.tid();
    let word = match sys::tid_address() {
        Some(0) => {
            b.exit_word.store(tid, Ordering::Relaxed);
            let w = &b.exit_word as *const AtomicU32 as u64;
            // SAFETY: the block's own word, in the table, which lives as long as the
            // process (see above); nothing else uses it.
            unsafe { sys::set_tid_address(w) };
            w
        }
        Some(a) => {
            let mut v = [0u8; 4];
            // SAFETY: a guarded load (the program chose the address).
            if unsafe { crate::guard::read(a, &mut v) }.is_err() || u32::from_ne_bytes(v) != tid {
                return false;
            }
            a
        }
        None => return false,
    };
    b.tid_word.store(word, Ordering::Relaxed);
    true
}

/// The mapping of `/proc/self/maps` that holds `sp`, when it is `[stack]` or also holds
/// `fs` (see [`learn_own_stack`]). Signal context: a fixed buffer on the stack, raw calls.
fn stack_mapping(sp: u64, fs: u64) -> Option<(u64, u64)> {
    let fd = sys::open_read(b"/proc/self/maps\0");
    if fd < 0 {
        return None;
    }
    let fd = fd as i32;
    let mut buf = [0u8; 1024];
    let mut have = 0usize;
    let mut found = None;
    'read: loop {
        let n = sys::read(fd, &mut buf[have..]);
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n <= 0 {
            break;
        }
        have += n as usize;
        let mut start = 0;
        while let Some(nl) = buf[start..have].iter().position(|&c| c == b'\n') {
            let line = &buf[start..start + nl];
            start += nl + 1;
            if let Some((lo, hi)) = maps_range(line) {
                if sp >= lo && sp < hi {
                    found = if line.ends_with(b" [stack]") {
                        Some((lo, hi))
                    } else {
                        own_side(sp, fs, lo, hi)
                    };
                    break 'read;
                }
            }
        }
        if start == 0 && have == buf.len() {
            // A line longer than the buffer (a long path): its range is in its start.
            if let Some((lo, hi)) = maps_range(&buf[..have]) {
                if sp >= lo && sp < hi {
                    found = own_side(sp, fs, lo, hi);
                    break;
                }
            }
            // Skip to the line's end.
            loop {
                let n = sys::read(fd, &mut buf[..1]);
                if n <= 0 {
                    break 'read;
                }
                if buf[0] == b'\n' {
                    break;
                }
            }
            have = 0;
            continue;
        }
        buf.copy_within(start..have, 0);
        have -= start;
    }
    sys::close(fd);
    found
}

/// When `fs` lies in the mapping `[lo, hi)` that holds `sp`: the part of it on `sp`'s
/// side of `fs` (a libc thread's stack lies below its TCB; whatever an anonymous mapping
/// merged into the same line above the TCB is not this thread's stack).
fn own_side(sp: u64, fs: u64, lo: u64, hi: u64) -> Option<(u64, u64)> {
    if fs < lo || fs >= hi {
        None
    } else if sp < fs {
        Some((lo, fs))
    } else {
        Some((fs, hi))
    }
}

/// `lo-hi` at the start of a `/proc/self/maps` line.
fn maps_range(line: &[u8]) -> Option<(u64, u64)> {
    let hex = |s: &[u8]| -> Option<u64> {
        if s.is_empty() || s.len() > 16 {
            return None;
        }
        s.iter().try_fold(0u64, |v, &c| {
            let d = (c as char).to_digit(16)?;
            Some(v << 4 | u64::from(d))
        })
    };
    let dash = line.iter().position(|&c| c == b'-')?;
    let sp = line.iter().position(|&c| c == b' ')?;
    if sp <= dash {
        return None;
    }
    Some((hex(&line[..dash])?, hex(&line[dash + 1..sp])?))
}

/// The calling libc thread's stack, `[lo, hi)` (normal context: glibc reads
/// `/proc/self/maps` for the main thread); (0, 0) if unknown, as always without std (no
/// libc to ask).
#[cfg(not(feature = "std"))]
fn own_stack() -> (u64, u64) {
    (0, 0)
}

/// The calling libc thread's stack, `[lo, hi)` (normal context: glibc reads
/// `/proc/self/maps` for the main thread); (0, 0) if unknown.
#[cfg(feature = "std")]
fn own_stack() -> (u64, u64) {
    // SAFETY: a zeroed attribute object is initialised by pthread_getattr_np before use,
    // and destroyed after.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return (0, 0);
        }
        let mut addr: *mut libc::c_void = core::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if !ok || addr.is_null() {
            return (0, 0);
        }
        (addr as u64, addr as u64 + size as u64)
    }
}

/// Gives the calling (new) thread an alternate signal stack of [`ALTSTACK_SIZE`]; returns
/// its address (0 if it could not be mapped or installed).
fn map_altstack() -> u64 {
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
/// thread's alternate stack and the thread is not running on it. Whether it did (the
/// thread has none now).
fn unmap_altstack(p: u64) -> bool {
    // SAFETY: zeroed stack_t is valid as an out value.
    let mut cur: libc::stack_t = unsafe { core::mem::zeroed() };
    sys::sigaltstack(None, Some(&mut cur));
    if cur.ss_sp as u64 != p || cur.ss_flags & (libc::SS_ONSTACK | libc::SS_DISABLE) != 0 {
        return false;
    }
    let off = libc::stack_t {
        ss_sp: core::ptr::null_mut(),
        ss_flags: libc::SS_DISABLE,
        ss_size: 0,
    };
    if sys::sigaltstack(Some(&off), None) == 0 {
        // SAFETY: our mapping, no longer the thread's signal stack and not in use.
        unsafe { sys::munmap(p as usize, ALTSTACK_SIZE) };
        return true;
    }
    false
}

/// The calling thread's alternate signal stack, when the tracer mapped it (address and
/// size), claiming the thread's block first if it has none.
pub(crate) fn own_altstack() -> Option<(u64, usize)> {
    let p = current()?.altstack.load(Ordering::Relaxed);
    (p != 0).then_some((p, ALTSTACK_SIZE))
}

/// The calling thread's block if it has one (it started, or touched the device, since its
/// last [`thread_exiting`]).
pub fn existing() -> Option<&'static ThreadBlock> {
    lookup(my_key(), &mut Tid(0))
}

/// Whether the calling thread holds a block (it started, or touched the device, since its
/// last [`thread_exiting`]).
pub fn has_slot() -> bool {
    existing().is_some()
}

/// Gives up the calling thread's ring (it claims a fresh one on its next event): before
/// an exec, whose new image will not use it, and after an exec'd image's attach note, so
/// that processes that never touch the device hold no ring.
pub(crate) fn retire_ring() {
    if let Some(s) = existing() {
        // A program handler's access must not find the ring half given up.
        let old = crate::ctx::block_async();
        s.retire();
        crate::ctx::restore_mask(old);
    }
}

/// Call when a thread ends: its ring can be reused once drained, its alternate signal stack
/// is unmapped and its block freed (a signal after this runs on the thread's own stack; an
/// access after this takes a fresh block).
pub fn thread_exiting() {
    let Some(s) = existing() else {
        return;
    };
    s.retire();
    crate::attached::forget_handlers(s);
    let stack = s.altstack.swap(0, Ordering::Relaxed);
    if stack != 0 && unmap_altstack(stack) && crate::attached::is_attached() {
        // The program's own stack that ours replaced (see `adopt`).
        let size = s.sig.ss_size.load(Ordering::Relaxed);
        if size != 0 {
            let ss = libc::stack_t {
                ss_sp: s.sig.ss_sp.load(Ordering::Relaxed) as *mut libc::c_void,
                ss_flags: s.sig.ss_flags.load(Ordering::Relaxed) as i32,
                ss_size: size as usize,
            };
            sys::sigaltstack(Some(&ss), None);
        }
    }
    s.stack_lo.store(0, Ordering::Relaxed);
    s.stack_hi.store(0, Ordering::Relaxed);
    s.sig.reset();
    // SAFETY: only this thread touches its step state.
    unsafe { (*s.step.get()).active = false };
    s.ool.release();
    publish(core::ptr::null(), s.fs_base());
    s.key.store(TOMBSTONE, Ordering::Release);
}

/// Call in the child after `fork`: the parent's threads (and rings) are not ours.
pub fn after_fork_child() {
    // The forking thread's alternate stack was copied into the child: still ours to free;
    // what its program believes of its signal state holds in the child too. Its block is
    // the one under its key (the child has a new tid; another block under the key would
    // be a parent's thread sharing the FS base, which fork did not copy, and comes later
    // on the probe than the forking thread's own unless it touched the device first).
    let key = my_key();
    let mut i = hash(key);
    let mut me = None;
    for _ in 0..MAX_THREADS {
        let s = &BLOCKS[i];
        let k = s.key.load(Ordering::Relaxed);
        if k == key {
            me = Some(s);
            break;
        }
        if k == EMPTY_KEY {
            break;
        }
        i = (i + 1) & (MAX_THREADS - 1);
    }
    let mine = me.map_or(0, |s| s.altstack.load(Ordering::Relaxed));
    let own = me.map_or((0, 0), |s| {
        (
            s.own_lo.load(Ordering::Relaxed),
            s.own_hi.load(Ordering::Relaxed),
        )
    });
    let sig = SigState {
        frame: AtomicU64::new(0),
        blocked: AtomicU64::new(0),
        ss_sp: AtomicU64::new(0),
        ss_size: AtomicU64::new(0),
        ss_flags: AtomicU32::new(0),
    };
    if let Some(s) = me {
        sig.copy_from(&s.sig);
    }
    for s in BLOCKS.iter() {
        // Blocks never used are left unwritten: their pages (most of the table) stay the
        // shared zero page instead of costing each child its own copy.
        if s.key.load(Ordering::Relaxed) == EMPTY_KEY
            && s.ring.load(Ordering::Relaxed) == NO_RING
            && s.altstack.load(Ordering::Relaxed) == 0
        {
            continue;
        }
        s.key.store(EMPTY_KEY, Ordering::Relaxed);
        s.tid.store(0, Ordering::Relaxed);
        s.ring.store(NO_RING, Ordering::Relaxed);
        s.ring_state.set(None);
        s.altstack.store(0, Ordering::Relaxed);
        s.stack_lo.store(0, Ordering::Relaxed);
        s.stack_hi.store(0, Ordering::Relaxed);
        s.sig.reset();
        s.inside.store(0, Ordering::Relaxed);
        // SAFETY: only this (single) thread exists in the child.
        unsafe { (*s.step.get()).active = false };
    }
    if me.is_some() {
        if let Some(s) = current() {
            if mine != 0 {
                s.altstack.store(mine, Ordering::Relaxed);
            }
            s.sig.copy_from(&sig);
            // Where trampolines probe the table they also want the owner's tid word,
            // which the new block has yet to learn (libc's fork gives the child its own
            // word, holding its tid; a raw fork leaves it none, and it gets the block's).
            if own.1 != 0 && (!table_lookup() || learn_tid_word(s)) {
                s.own_lo.store(own.0, Ordering::Relaxed);
                s.own_hi.store(own.1, Ordering::Relaxed);
            }
            // The TLS slot (copied from the parent) may name the parent's block, which
            // is another entry now.
            publish(s, s.fs_base());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_give_their_range() {
        assert_eq!(
            maps_range(b"7ffd1000-7ffd3000 rw-p 00000000 00:00 0  [stack]"),
            Some((0x7ffd_1000, 0x7ffd_3000))
        );
        assert_eq!(maps_range(b"garbage"), None);
        assert_eq!(maps_range(b"10-zz rw-p"), None);
    }

    #[test]
    fn a_thread_stack_is_the_part_of_its_mapping_below_its_tcb() {
        // A std thread: glibc put its TCB (the FS base) at the top of its stack mapping.
        sys::init_cpu_features();
        let here = 0u8;
        let sp = &here as *const u8 as u64;
        let fs = sys::fs_base();
        let (lo, hi) = stack_mapping(sp, fs).expect("the thread's stack mapping");
        assert!(lo <= sp && sp < hi, "{lo:#x} {sp:#x} {hi:#x}");
        assert_eq!(hi, fs);
        // An FS base elsewhere (a static's address) proves nothing: no bounds.
        static ELSEWHERE: u64 = 0;
        assert_eq!(stack_mapping(sp, &ELSEWHERE as *const u64 as u64), None);
        // A mapping above the FS base: the part above it.
        assert_eq!(
            own_side(0x5000, 0x4000, 0x1000, 0x9000),
            Some((0x4000, 0x9000))
        );
        assert_eq!(own_side(0x5000, 0x9000, 0x1000, 0x9000), None);
    }
}
