//! The in-process MMIO tracing engine.
//!
//! Device mappings are made `PROT_NONE`; every access faults into [`signals`]'s SIGSEGV
//! handler, which finds the region ([`regions`], lock-free), decodes the instruction,
//! completes it through an always-accessible alias mapping of the same memory (module `emu`),
//! publishes the event into the thread's shared-memory ring and advances RIP. The page
//! never opens, so other threads keep running and stay traced. Instructions the emulator
//! cannot do take the step fallback (module `step`).
//!
//! The fault path allocates nothing, takes no lock a signal could re-enter, makes raw
//! system calls only ([`sys`]) and keeps per-thread state in a fixed table keyed by the
//! thread pointer ([`threads`]) instead of libc TLS.
//!
//! Three ways in:
//! * the preload library calls `init_from_env` in its constructor and the `after_*` /
//!   `before_*` hooks from its interposed `mmap`, `munmap`, `mprotect`, `mremap`;
//! * the injected agent (`crates/agent`, this crate built without its default `std`
//!   feature: `no_std` + `alloc`, no libc function called) calls [`init_from_vars`] with the
//!   settings the recorder hands it and the same hooks;
//! * a Rust program traces its own mappings with [`init`] and [`trace_region`] (the
//!   `mmio-trace-record` crate's self-recording API does both and drains the rings).
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

// Without the `std` feature the crate is `core` + `alloc` and calls no libc function (the
// freestanding agent links it); `std` adds the environment, the replay model, VFIO and
// the dynamic loader's lookups.
extern crate alloc;

pub mod attached;
mod ctx;
mod emit;
mod emu;
mod env;
pub mod exe_kind;
mod guard;
pub mod handoff;
pub mod heap;
#[cfg(feature = "std")]
pub mod model;
#[cfg(not(feature = "std"))]
#[path = "model_none.rs"]
mod model;
mod objects;
mod ool;
mod patch;
mod paths;
pub mod regions;
pub mod rules;
pub mod signals;
pub mod site;
mod step;
mod stop;
pub mod sync;
pub mod sys;
pub mod syscall_sites;
pub mod sysemu;
pub mod thread;
pub mod threads;
pub mod uaccess;
pub mod unmatched;
#[cfg(feature = "std")]
pub mod vfio;
#[cfg(not(feature = "std"))]
#[path = "vfio_none.rs"]
mod vfio;

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};

use mmio_trace_ring::Shm;
/// The environment variables naming the recorder's descriptors in a traced process.
pub use mmio_trace_ring::{ENV_FD, ENV_LIVE_FD};

/// The value of a setting in handed-over `NAME=VALUE` strings (see [`init_from_vars`]).
pub use env::lookup as setting;
pub use regions::Region;
pub use rules::Rules;

static SHM_BASE: AtomicUsize = AtomicUsize::new(0);
static SHM_LEN: AtomicUsize = AtomicUsize::new(0);
static PID: AtomicU32 = AtomicU32::new(0);
static ACTIVE: AtomicBool = AtomicBool::new(false);
static RULES: sync::Once<Rules> = sync::Once::new();
/// The recorder's memfd number in this process (-1: none or self-tracing).
static SHM_FD: AtomicI32 = AtomicI32::new(-1);

const PAGE: u64 = 4096;

/// The shared memory, once initialised.
#[inline]
pub fn shm() -> Option<Shm> {
    let base = SHM_BASE.load(Ordering::Acquire);
    if base == 0 {
        return None;
    }
    // SAFETY: set in `init` from a validated mapping that is never unmapped.
    Some(unsafe { Shm::from_checked(base as *mut u8, SHM_LEN.load(Ordering::Relaxed)) })
}

/// This process's id (cached; refreshed after fork).
#[inline]
pub fn pid() -> u32 {
    PID.load(Ordering::Relaxed)
}

/// Whether tracing is initialised in this process.
#[inline]
pub fn is_active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// Starts tracing in this process: events go to `shm`, device mappings are recognised by
/// `rules`. Installs the signal handlers. Call once.
pub fn init(shm: Shm, rules: Rules) {
    SHM_LEN.store(shm.len(), Ordering::Relaxed);
    SHM_BASE.store(shm.base() as usize, Ordering::Release);
    PID.store(sys::getpid(), Ordering::Relaxed);
    sys::init_cpu_features();
    let _ = RULES.set(rules);
    shm.header().attached.fetch_add(1, Ordering::Relaxed);
    // Warm the clock (vDSO lookup) before any fault.
    let _ = sys::now_ns();
    arm_fork_canary();
    regions::init_limits();
    paths::init_from_env();
    if let Some(r) = RULES.get() {
        patch::configure(r);
    }
    model::init_from_env();
    objects::init();
    step::open_task_dir();
    signals::install();
    // The calling (main) thread's block, published in the TLS slot (preload mode).
    threads::thread_started();
    ACTIVE.store(true, Ordering::Release);
}

/// Setting: the process's `AT_SYSINFO_EHDR` (the vDSO's address; decimal or `0x` hex),
/// for a tracer that cannot read its own auxiliary vector (an injected agent in a process
/// whose `/proc/self/auxv` it may not open: file capabilities make it root's). The preload
/// library never needs it (libc's `getauxval`).
pub const ENV_AT_SYSINFO_EHDR: &str = "MMIO_TRACE_AT_SYSINFO_EHDR";
/// Setting: the process's `AT_HWCAP2` (as [`ENV_AT_SYSINFO_EHDR`]).
pub const ENV_AT_HWCAP2: &str = "MMIO_TRACE_AT_HWCAP2";

/// How [`start_from_settings`] ended.
enum Start {
    /// Tracing runs.
    Started,
    /// No recorder named in the settings: not traced, by design.
    Off,
    /// The recorder's shared memory could not be reached (its size when mapping it
    /// failed, else 0): the program runs untraced.
    Unreachable(usize),
    /// The recorder is gone already.
    Gone,
}

/// Starts tracing if the settings ([`env`]: the environment, or the strings handed to
/// [`init_from_vars`]) name the recorder's shared memory.
fn start_from_settings() -> Start {
    use mmio_trace_ring::{ENV_LIVE_PATH, ENV_SHM_PATH};
    if !env::is_set(ENV_FD) {
        return Start::Off;
    }
    if let Some(v) = env::var(ENV_AT_SYSINFO_EHDR).and_then(|v| rules::parse_num(&v)) {
        mmio_trace_ring::clock::init_with_vdso(v as usize);
    }
    if let Some(v) = env::var(ENV_AT_HWCAP2).and_then(|v| rules::parse_num(&v)) {
        sys::set_hwcap2(v);
    }
    // The inherited descriptor first (its header's magic tells whether it still is the
    // memfd); the recorder's own through /proc only when that fails, so that a child in
    // another pid namespace, whose /proc names other processes, keeps working as before.
    let mut shm = env_fd(ENV_FD).and_then(|fd| map_shm(fd).map(|m| (fd, m)));
    let reopened = shm.is_none();
    if reopened {
        shm = open_path(ENV_SHM_PATH, libc::O_RDWR).and_then(|fd| match map_shm(fd) {
            Some(m) => Some((fd, m)),
            None => {
                sys::close(fd);
                None
            }
        });
    }
    let Some((fd, shm)) = shm else {
        return Start::Unreachable(SHM_MAP_FAILED.load(Ordering::Relaxed));
    };
    SHM_FD.store(fd, Ordering::Relaxed);
    // The recorder's liveness pipe: producers that must wait for room poll it. Cut with
    // the memfd, or no longer a pipe: opened again too.
    let live = env_fd(ENV_LIVE_FD).filter(|&fd| !reopened && is_fifo(fd));
    if let Some(live) = live.or_else(|| open_path(ENV_LIVE_PATH, libc::O_RDONLY | libc::O_NONBLOCK))
    {
        mmio_trace_ring::set_recorder_fd(live);
    }
    if stop::gone_at_start(&shm) {
        return Start::Gone;
    }
    init(shm, Rules::from_env());
    Start::Started
}

/// Starts tracing if the recorder's shared memory is in the environment (the preload
/// library's constructor). Returns whether tracing is on.
#[cfg(feature = "std")]
pub fn init_from_env() -> bool {
    use std::io::Write as _;
    match start_from_settings() {
        Start::Started => true,
        Start::Off | Start::Gone => false,
        Start::Unreachable(size) => {
            // Data loss must not be silent: this image's accesses are not in the log. (Not
            // `eprintln!`, which panics when stderr is closed: this runs in a constructor.)
            let why = if size > 0 {
                format!(
                    " (mapping its {} MiB failed: is the address space limited, ulimit -v? MMIO_TRACE_RINGS sets fewer rings)",
                    size.div_ceil(1 << 20)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                std::io::stderr(),
                "mmio-trace: process {} ({}) cannot reach the recorder's shared memory and runs untraced{why}",
                sys::getpid(),
                std::env::args().next().unwrap_or_default()
            );
            false
        }
    }
}

/// Why [`init_from_vars`] did not start tracing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The strings name no recorder ([`ENV_FD`] is not among them).
    NoRecorder,
    /// The recorder's shared memory could not be reached (neither the descriptor nor the
    /// path the strings name maps it); `map_failed`: its size when mapping it failed (an
    /// address-space limit), else 0.
    Unreachable {
        /// Bytes that could not be mapped (0: the shared memory was not found).
        map_failed: usize,
    },
    /// The recorder has ended already.
    RecorderGone,
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            InitError::NoRecorder => write!(f, "no recorder named ({ENV_FD} not set)"),
            InitError::Unreachable { map_failed: 0 } => {
                write!(f, "cannot reach the recorder's shared memory")
            }
            InitError::Unreachable { map_failed } => write!(
                f,
                "cannot map the recorder's shared memory ({} MiB): is the address space limited?",
                map_failed.div_ceil(1 << 20)
            ),
            InitError::RecorderGone => write!(f, "the recorder has ended"),
        }
    }
}

/// Starts tracing with settings handed over as `NAME=VALUE` strings (NUL-separated; the
/// same names and values the recorder puts in a preloaded program's environment), which
/// from now on are the tracer's only source of settings: the injected agent's way in,
/// which must not read (or need) the program's environment. Installs the signal handlers.
/// Normal context; allocates. Call once.
pub fn init_from_vars(vars: &[u8]) -> Result<(), InitError> {
    env::set_vars(vars);
    match start_from_settings() {
        Start::Started => Ok(()),
        Start::Off => Err(InitError::NoRecorder),
        Start::Unreachable(map_failed) => Err(InitError::Unreachable { map_failed }),
        Start::Gone => Err(InitError::RecorderGone),
    }
}

/// The descriptor number in setting `var`.
fn env_fd(var: &str) -> Option<i32> {
    env::var(var)
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|&fd| fd >= 0)
}

/// `fstat` of `fd`, a number that may not be open.
fn fstat(fd: i32) -> Option<libc::stat> {
    sys::fstat(fd)
}

/// Whether `fd` is open and a pipe.
fn is_fifo(fd: i32) -> bool {
    fstat(fd).is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
}

/// Opens the path in setting `var` (one of the recorder's descriptors,
/// `/proc/<pid>/fd/<n>`) with `flags`, at a number from 200 up, out of the program's
/// way.
fn open_path(var: &str, flags: libc::c_int) -> Option<i32> {
    let path = env::var_bytes(var).and_then(|p| alloc::ffi::CString::new(p).ok())?;
    let n = sys::open(&path, flags);
    if n < 0 {
        return None;
    }
    let n = n as i32;
    // Duplicating the descriptor just opened.
    let high = sys::fcntl(n, libc::F_DUPFD, 200);
    if high < 0 {
        return Some(n);
    }
    sys::close(n);
    Some(high as i32)
}

/// Maps the recorder's shared memory from `fd`, if it is that (its header's magic).
/// The size of the recorder's shared memory when mapping it failed (0: it did not).
static SHM_MAP_FAILED: AtomicUsize = AtomicUsize::new(0);

fn map_shm(fd: i32) -> Option<Shm> {
    // A file of at least a header's page: reading a mapped page past the end of a file
    // (the program's own, put at this number) would raise SIGBUS.
    let st = fstat(fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size < 4096 {
        return None;
    }
    // Map the header first to learn the size.
    // SAFETY: a fresh shared mapping of the inherited memfd.
    let p = unsafe { sys::mmap(0, 4096, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
    if p < 0 {
        return None;
    }
    // SAFETY: the page just mapped holds the header (validated by Shm::from_raw below).
    let h = unsafe { &*(p as *const mmio_trace_ring::Header) };
    let layout = h.layout();
    let ok = h.magic == mmio_trace_ring::MAGIC && layout.is_valid();
    let size = layout.total_size();
    // SAFETY: unmapping what we mapped.
    unsafe { sys::munmap(p as usize, 4096) };
    if !ok || (st.st_size as u64) < size as u64 {
        return None;
    }
    // SAFETY: shared mapping of the whole memfd; never unmapped.
    let base = unsafe {
        sys::mmap(
            0,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if base < 0 {
        // Said in the "runs untraced" line: mostly an address-space limit (RLIMIT_AS,
        // `ulimit -v`) below the rings' size.
        SHM_MAP_FAILED.store(size, Ordering::Relaxed);
        return None;
    }
    // SAFETY: a live mapping of an initialised memfd, kept for the process's lifetime.
    unsafe { Shm::from_raw(base as *mut u8, size) }
}

/// The read end of the recorder's liveness pipe (to keep the program from closing it).
pub fn live_fd() -> Option<i32> {
    mmio_trace_ring::recorder_fd()
}

/// The tracer's `/proc/self/task` descriptor (to keep the program from closing it).
pub fn task_fd() -> Option<i32> {
    step::task_fd()
}

/// The memfd's fd number in this process (to keep the program from closing it).
pub fn shm_fd() -> Option<i32> {
    let fd = SHM_FD.load(Ordering::Relaxed);
    (fd >= 0).then_some(fd)
}

/// Whether this process's tracer state is its own: false in a `vfork` child, which shares
/// the parent's memory (and so its statics) but not its descriptor table.
pub fn owns_state() -> bool {
    PID.load(Ordering::Relaxed) == sys::getpid()
}

/// Records that the memfd now has number `fd` (the preload library moved it away from a
/// number the program is about to reuse).
pub fn set_shm_fd(fd: i32) {
    SHM_FD.store(fd, Ordering::Relaxed);
}

/// Records that the task directory now has number `fd` (moved as [`set_shm_fd`]).
pub fn set_task_fd(fd: i32) {
    step::set_task_fd(fd);
}

/// Records that the liveness pipe's read end now has number `fd` (moved as
/// [`set_shm_fd`]).
pub fn set_live_fd(fd: i32) {
    mmio_trace_ring::set_recorder_fd(fd);
}

/// `pthread_atfork` prepare handler (the preload library registers these three, so that
/// forks it does not interpose, such as `daemon(3)`'s, are covered too).
pub fn fork_prepare() {
    patch::fork_prepare();
    objects::fork_prepare();
    regions::fork_prepare();
}

/// `pthread_atfork` parent handler.
pub fn fork_parent() {
    regions::fork_release();
    objects::fork_parent();
    patch::fork_done();
}

/// At exit: the hot-site patcher's last reports reach the recorder (at most 200 ms).
pub fn before_exit() {
    if is_active() {
        patch::drain();
    }
}

/// `pthread_atfork` child handler.
pub fn fork_child() {
    regions::fork_release();
    after_fork_child();
    patch::fork_done();
    // Normal context here (not in `check_fork`, which the fault handler calls).
    objects::fork_child();
}

/// Call in the child after `fork`.
pub fn after_fork_child() {
    PID.store(sys::getpid(), Ordering::Relaxed);
    threads::after_fork_child();
    step::after_fork_child();
    // The inherited task directory lists the parent's threads (and shares the parent's
    // file offset): open our own.
    step::open_task_dir();
    emu::after_fork_child();
    regions::after_fork_child();
    site::after_fork_child();
    patch::after_fork_child();
    unmatched::after_fork_child();
    objects::after_fork_child();
    arm_fork_canary();
}

/// The address of a word the kernel zeroes in every fork child (`MADV_WIPEONFORK`); it
/// holds 1 in a process whose tracer state is its own. A zero means a fork that ran none
/// of our hooks (`_Fork`, a raw `syscall(SYS_fork)`, `clone` without `CLONE_VM`): the
/// child still holds the parent's thread slots, rings and pid. One load finds out.
static FORK_CANARY: AtomicUsize = AtomicUsize::new(0);

/// The fork canary's address (0: none): a u32 that reads 0 in the child of a fork that
/// ran none of our hooks.
pub(crate) fn fork_canary() -> u64 {
    FORK_CANARY.load(Ordering::Relaxed) as u64
}

/// Maps the canary word (once) and sets it.
fn arm_fork_canary() {
    const MADV_WIPEONFORK: usize = 18;
    const SYS_MADVISE: usize = 28;
    let mut p = FORK_CANARY.load(Ordering::Relaxed);
    if p == 0 {
        let Some(a) = sys::map_anon(PAGE as usize) else {
            return;
        };
        // SAFETY: advice on our own page.
        let r = unsafe { sys::syscall6(SYS_MADVISE, a, PAGE as usize, MADV_WIPEONFORK, 0, 0, 0) };
        if r < 0 {
            // Kernel older than 4.14: no detection.
            // SAFETY: our own page, never published.
            unsafe { sys::munmap(a, PAGE as usize) };
            return;
        }
        p = a;
        FORK_CANARY.store(p, Ordering::Relaxed);
    }
    // SAFETY: the canary page is ours, mapped for the process's lifetime.
    unsafe { &*(p as *const AtomicU32) }.store(1, Ordering::Relaxed);
}

/// Resets the tracer's per-process state if this is the child of a fork none of our hooks
/// saw (see [`FORK_CANARY`]). Allocation-free; callable from the fault handler (the child
/// of such a fork has a single thread).
#[inline]
pub(crate) fn check_fork() {
    let p = FORK_CANARY.load(Ordering::Relaxed);
    // SAFETY: the canary page is ours, mapped for the process's lifetime.
    if p != 0 && unsafe { &*(p as *const AtomicU32) }.load(Ordering::Relaxed) == 0 {
        after_fork_child();
    }
}

/// The preload library's hook after `dlclose`: another object may take the addresses of
/// the one unloaded, so every object is logged again when next met (normal context).
pub fn after_dlclose() {
    objects::forget();
    patch::after_dlclose();
}

/// Inserts a `MARK` with `text` at this point of the calling thread.
pub fn mark(text: &[u8]) {
    if is_active() {
        emit::mark(text);
    }
}

/// Why a region could not be traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceError {
    /// [`init`] was not called.
    NotInitialised,
    /// Address or length not page-aligned, or empty.
    Unaligned,
    /// No alias mapping could be made (errno), and none was given.
    NoAlias(i32),
    /// `mprotect` failed (errno).
    Protect(i32),
    /// The region table is full.
    TableFull,
    /// The range overlaps a region already traced.
    Overlap,
}

impl core::fmt::Display for TraceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TraceError::NotInitialised => write!(f, "tracing is not initialised"),
            TraceError::Unaligned => write!(f, "region must be page-aligned and non-empty"),
            TraceError::NoAlias(e) => write!(f, "cannot make an alias mapping (errno {e})"),
            TraceError::Protect(e) => write!(f, "mprotect failed (errno {e})"),
            TraceError::TableFull => write!(f, "too many traced regions"),
            TraceError::Overlap => write!(f, "the range is already traced"),
        }
    }
}

impl core::error::Error for TraceError {}

/// Traces `len` bytes at `ptr` (a page-aligned shared mapping of device memory) as
/// physical address `phys`, from now on; returns the mapping id. `alias`: an existing
/// second mapping of the same memory, or `None` to duplicate the mapping with
/// `mremap(ptr, 0, len, MREMAP_MAYMOVE)` (works for shared file and memfd mappings; for
/// PFN mappings such as most device BARs, pass a second `mmap` of the device instead).
/// `prot` is the protection the program expects to have.
///
/// # Safety
/// `ptr..ptr+len` must be a mapping owned by the caller, and no reference (`&`/`&mut`) to
/// it may be used while traced: accesses must be volatile or through raw pointers (the
/// compiler must emit a real load or store for each access).
pub unsafe fn trace_region(
    ptr: *mut u8,
    len: usize,
    phys: u64,
    alias: Option<*mut u8>,
    prot: i32,
) -> Result<u64, TraceError> {
    let shm = shm().ok_or(TraceError::NotInitialised)?;
    let (addr, len) = (ptr as u64, (len as u64 + PAGE - 1) & !(PAGE - 1));
    if addr % PAGE != 0 || len == 0 {
        return Err(TraceError::Unaligned);
    }
    let alias = match alias {
        Some(a) => a as u64,
        None => {
            // SAFETY: duplicating a mapping the caller owns into a fresh address.
            let a = unsafe { sys::mremap(addr as usize, 0, len as usize, libc::MREMAP_MAYMOVE, 0) };
            if a < 0 {
                return Err(TraceError::NoAlias(-a as i32));
            }
            a as u64
        }
    };
    let map_id = shm.next_map_id();
    let r = Region {
        start: addr,
        len,
        alias,
        phys,
        map_id,
        prot,
        phys_minus_off: 0,
        lazy: 0,
    };
    match regions::add(r) {
        Ok(()) => {}
        Err(regions::AddError::Full) => return Err(TraceError::TableFull),
        Err(regions::AddError::Overlap) => return Err(TraceError::Overlap),
    }
    emit::map(addr, len, phys, map_id, 0);
    // SAFETY: the caller owns the mapping.
    let e = unsafe { sys::mprotect(addr as usize, len as usize, libc::PROT_NONE) };
    if e < 0 {
        regions::remove_overlapping(addr, len, |_, _| {});
        return Err(TraceError::Protect(-e as i32));
    }
    Ok(map_id)
}

/// Stops tracing the region starting at `ptr`: logs `UNMAP`, restores the program's
/// protection. The alias stays mapped (a thread may still be inside the fault path with
/// it); it is reclaimed when the program unmaps the region.
pub fn untrace_region(ptr: *mut u8) {
    regions::remove_overlapping(ptr as u64, 1, |r, _| {
        emit::unmap(r.map_id, 0);
        // SAFETY: restoring the program's protection on its own mapping.
        unsafe { sys::mprotect(r.start as usize, r.len as usize, r.prot) };
    });
}

/// The preload library's hook after a successful `mmap`: traces the mapping if it is a
/// shared mapping of a device.
///
/// Normal (not signal) context; allocation-free, because `malloc` itself calls `mmap`.
pub fn after_mmap(addr: u64, len: u64, prot: i32, flags: i32, fd: i32, off: i64, pc: u64) {
    if !is_active() || len == 0 {
        return;
    }
    if stop::check_now() {
        // The recorder is gone: nothing new is traced. What this mapping replaced
        // (MAP_FIXED) is forgotten.
        regions::remove_range(addr, (len + PAGE - 1) & !(PAGE - 1), (0, 0), |_, _| {});
        return;
    }
    // A new mapping (MAP_FIXED) replaced whatever was traced there.
    before_munmap(addr, len, pc);
    if fd < 0 || flags & libc::MAP_SHARED == 0 {
        return;
    }
    let Some(rules) = RULES.get() else { return };
    let mut buf = [0u8; 512];
    let Some(path) = rules::fd_path(fd, &mut buf) else {
        return;
    };
    // Under replay, a missing device file's stand-in is traced as that file.
    let mut diverted = [0u8; model::DIVERTED_PATH_MAX];
    let path = match model::diverted_path(fd, &mut diverted) {
        Some(n) => &diverted[..n],
        None => path,
    };
    if Some(fd) == shm_fd() {
        return;
    }
    if !rules.is_device(path) {
        // For the recorder's warning when nothing was traced: which files were mapped.
        unmatched::mapped(fd, path);
        return;
    }
    let phys =
        vfio::phys_of(fd, path, off as u64).unwrap_or_else(|| rules::phys_of(path, off as u64));
    let len = (len + PAGE - 1) & !(PAGE - 1);
    let Some(shm) = shm() else { return };
    // The alias: a second mapping of the same open file and offset (drivers keep
    // per-open-file state, so the program's own file, not a reopened path), made on the
    // first access through a descriptor of the tracer's own; made now only when no such
    // descriptor can be kept.
    let lazy = if rules.no_alias {
        None
    } else {
        regions::alias_fd(fd)
    };
    let mut alias = 0u64;
    for p in [libc::PROT_READ | libc::PROT_WRITE, libc::PROT_READ, prot] {
        if p == libc::PROT_NONE || rules.no_alias || lazy.is_some() {
            continue;
        }
        let a = regions::alias_mmap(len, p, fd, off);
        if a >= 0 {
            alias = a as u64;
            break;
        }
    }
    let map_id = shm.next_map_id();
    let r = Region {
        start: addr,
        len,
        alias,
        phys,
        map_id,
        prot,
        phys_minus_off: phys.wrapping_sub(off as u64),
        lazy: lazy.unwrap_or(0),
    };
    let added = register(r, path, off as u64);
    if let Some(l) = lazy {
        regions::release_alias_fd(l);
    }
    if !added {
        if alias != 0 {
            // SAFETY: the tracer's own alias, never registered.
            unsafe { sys::munmap(alias as usize, len as usize) };
        }
        return;
    }
    objects::refresh();
    emit::map(addr, len, phys, map_id, pc);
    map_mark(map_id, path, off as u64, len, alias != 0 || lazy.is_some());
    model::on_map(map_id, phys, path, off as u64);
    protect_traced_pages(rules, addr, len, off as u64);
    patch::ensure_started();
}

/// Descriptors of the hot-site patcher (its pipe, `/proc/self/mem`), which the program
/// must not close (-1: none).
pub fn patch_fds() -> [i32; 3] {
    patch::fds()
}

/// The program is about to make `fd` another file (`dup2`/`dup3`): a hot-site patcher
/// descriptor there moves to another number first.
pub fn patch_evacuate(fd: i32) {
    patch::evacuate(fd);
}

/// After `fork` in the child (normal context, after [`after_fork_child`]): the child's
/// own hot-site patcher, when it inherited traced mappings.
pub fn after_fork_child_started() {
    if regions::maybe_overlaps(0, u64::MAX) {
        patch::ensure_started();
    }
}

/// Whether the device rules name `path`.
pub(crate) fn rules_match(path: &[u8]) -> bool {
    RULES.get().is_some_and(|r| r.is_device(path))
}

/// Whether the device rules name `path` (the replay model's stand-ins).
#[cfg(feature = "std")]
pub(crate) fn rules_is_device(path: &[u8]) -> bool {
    rules_match(path)
}

/// Whether `fd` is one of the tracer's own descriptors.
pub(crate) fn owns_fd(fd: i32) -> bool {
    Some(fd) == shm_fd()
        || Some(fd) == live_fd()
        || Some(fd) == task_fd()
        || regions::is_alias_fd(fd)
        || patch_fds().contains(&fd)
}

/// Gives back what tracing held in an attached process the recorder leaves (tracing has
/// stopped, no thread runs in the tracer, each thread's block was given up): the aliases,
/// the shared memory and the descriptors. The tracer stays inactive.
pub(crate) fn release_all() {
    ACTIVE.store(false, Ordering::SeqCst);
    regions::release_all();
    regions::free_tables();
    let canary = FORK_CANARY.swap(0, Ordering::SeqCst);
    if canary != 0 {
        // SAFETY: the canary page, ours; `check_fork` reads nothing once it is 0.
        unsafe { sys::munmap(canary, PAGE as usize) };
    }
    let mut fds = [0i32; regions::MAX_ALIAS_FDS];
    let n = regions::alias_fds(&mut fds);
    for &fd in &fds[..n] {
        sys::close(fd);
    }
    let base = SHM_BASE.swap(0, Ordering::SeqCst);
    if base != 0 {
        // SAFETY: the tracer's own mapping of the shared memory; nothing uses it now.
        unsafe { sys::munmap(base, SHM_LEN.load(Ordering::Relaxed)) };
    }
    for fd in [shm_fd(), live_fd(), task_fd()].into_iter().flatten() {
        sys::close(fd);
    }
    SHM_FD.store(-1, Ordering::Relaxed);
}

/// Registers `r` (a mapping of `path` at offset `off`); when the table is full, says so
/// on stderr (once) and in the log (each time): the mapping is not traced.
fn register(r: Region, path: &[u8], off: u64) -> bool {
    let (start, len) = (r.start, r.len);
    match regions::add(r) {
        Ok(()) => {
            sysemu::region_added(start, len);
            true
        }
        Err(e) => {
            static TOLD: AtomicBool = AtomicBool::new(false);
            if e == regions::AddError::Full && !TOLD.swap(true, Ordering::Relaxed) {
                let msg = b"mmio-trace: the region table is full (or out of memory): further device mappings are not traced (see the MARKs in the log)\n";
                sys::write_all(2, msg);
            }
            let mut t = MarkText::new();
            t.put(b"NOT TRACED: mapping of ");
            t.put(path);
            t.put(b" offset ");
            t.num(off, true);
            t.put(b" length ");
            t.num(r.len, true);
            t.put(b" at ");
            t.num(r.start, true);
            t.put(match e {
                regions::AddError::Full => b": the region table is full (",
                regions::AddError::Overlap => b": overlaps a traced region (",
            });
            t.num(regions::count() as u64, false);
            t.put(b" regions traced)");
            emit::mark(t.text());
            false
        }
    }
}

/// Logs that mapping `map_id`'s pages `[start, start+len)` have no alias (the kernel's
/// `errno`): their accesses are single-stepped. Signal context: allocation-free.
pub(crate) fn no_alias_mark(map_id: u64, start: u64, len: u64, errno: i32) {
    let mut t = MarkText::new();
    t.put(b"map ");
    t.num(map_id, false);
    t.put(b": no alias mapping for ");
    t.num(start, true);
    t.put(b" length ");
    t.num(len, true);
    t.put(b" (errno ");
    t.num(errno as u64, false);
    t.put(b"): its accesses are single-stepped");
    emit::mark(t.text());
}

/// An instruction fetch from a traced page the program mapped executable: the page opens
/// with the program's protection and stays untraced (a `MARK` says so), since code cannot
/// run from a page that traps every access, nor from the alias (another address). Other
/// pages stay traced. `false`: not executable, the program's fault. Signal context.
pub(crate) fn exec_fault(r: &Region, addr: u64, rip: u64) -> bool {
    if r.prot & libc::PROT_EXEC == 0 {
        return false;
    }
    let page = addr & !(PAGE - 1);
    // SAFETY: a page of the program's own mapping, given the protection it asked for.
    if unsafe { sys::mprotect(page as usize, PAGE as usize, r.prot) } < 0 {
        return false;
    }
    let mut t = MarkText::new();
    t.put(b"map ");
    t.num(r.map_id, false);
    t.put(b": code executed at ");
    t.num(rip, true);
    t.put(b": page ");
    t.num(page, true);
    t.put(b" (phys ");
    t.num(r.phys_of(page), true);
    t.put(b") is no longer traced");
    emit::mark(t.text());
    true
}

/// Logs a `MARK` naming the file a new mapping maps, which its `MAP` line cannot say:
/// `map ID PATH offset 0xOFF length 0xLEN`, and whether accesses go through an alias
/// mapping or are all single-stepped (the driver refused a second mapping).
fn map_mark(map_id: u64, path: &[u8], off: u64, len: u64, alias: bool) {
    let mut t = MarkText::new();
    t.put(b"map ");
    t.num(map_id, false);
    t.put(b" ");
    t.put(path);
    t.put(b" offset ");
    t.num(off, true);
    t.put(b" length ");
    t.num(len, true);
    if !alias {
        t.put(b" (no alias mapping: every access single-stepped)");
    }
    emit::mark(t.text());
}

/// Logs `map ID continues map FROM`: an `mremap` moved, grew or duplicated mapping
/// `from` as mapping `id` (the same file).
fn continues_mark(id: u64, from: u64) {
    let mut t = MarkText::new();
    t.put(b"map ");
    t.num(id, false);
    t.put(b" continues map ");
    t.num(from, false);
    emit::mark(t.text());
    model::on_continue(id, from);
}

/// A marker's text, formatted without allocation (the hooks that log them run where
/// `malloc` may not be called).
/// `N`: the most bytes it holds (longer text is cut).
pub(crate) struct MarkText<const N: usize = 768> {
    b: [u8; N],
    n: usize,
}

impl MarkText {
    fn new() -> Self {
        Self::empty()
    }
}

impl<const N: usize> MarkText<N> {
    pub(crate) fn empty() -> Self {
        MarkText { b: [0; N], n: 0 }
    }

    pub(crate) fn text(&self) -> &[u8] {
        &self.b[..self.n]
    }

    /// Appends `s`, cut at the buffer's end.
    pub(crate) fn put(&mut self, s: &[u8]) {
        let k = s.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + k].copy_from_slice(&s[..k]);
        self.n += k;
    }

    /// Appends `v` in decimal, or in `0x` hex.
    pub(crate) fn num(&mut self, v: u64, hex: bool) {
        if hex {
            self.put(b"0x");
        }
        let mut d = [0u8; 64];
        self.put(sys::digits(v, if hex { 16 } else { 10 }, &mut d));
    }
}

fn protect_traced_pages(rules: &Rules, addr: u64, len: u64, off: u64) {
    if rules.ranges.is_empty() && rules.bypass.is_empty() {
        // SAFETY: the program's fresh device mapping.
        unsafe { sys::mprotect(addr as usize, len as usize, libc::PROT_NONE) };
        return;
    }
    let mut p = 0;
    while p < len {
        if rules.traced(off + p, PAGE) {
            // SAFETY: a page of the program's device mapping.
            unsafe { sys::mprotect((addr + p) as usize, PAGE as usize, libc::PROT_NONE) };
        }
        p += PAGE;
    }
}

/// The preload library's hook before `munmap`: logs `UNMAP` for traced regions in the
/// range and forgets them, and unmaps the aliases of the pages that go.
///
/// A region only partly unmapped keeps being traced in what remains (no `UNMAP`: the
/// kernel format has no partial unmap).
pub fn before_munmap(addr: u64, len: u64, pc: u64) {
    if !is_active() || !regions::maybe_overlaps(addr, len) {
        return;
    }
    let len = (len + PAGE - 1) & !(PAGE - 1);
    regions::remove_range(addr, len, (0, 0), |r, last| {
        // A region split by `mprotect` or a partial `munmap` ends with its last piece.
        if last {
            emit::unmap(r.map_id, pc);
        }
    });
}

/// The preload library's `mlock` (`flags` 0) and `mlock2`. Returns `None` when no traced
/// region is involved (the caller makes the plain call); otherwise the raw result (0 or
/// `-errno`).
///
/// The kernel's `mlock` populates the range, which fails (`ENOMEM`) on the traced pages
/// the tracer keeps `PROT_NONE`, where natively it succeeds. So after that failure, the
/// range is locked with `MLOCK_ONFAULT` (which does not populate: it fails only where
/// natively it would, on unmapped pages or the lock limit), the untraced parts are
/// locked again to populate them as asked, and the traced pages' aliases are locked (the
/// same pages, kept resident: what the program asked for).
pub fn mlock(addr: u64, len: u64, flags: i32) -> Option<isize> {
    const SYS_MLOCK: usize = 149;
    const SYS_MLOCK2: usize = 325;
    const MLOCK_ONFAULT: usize = 1;
    if !is_active() || !regions::maybe_overlaps(addr, len) {
        return None;
    }
    if !regions::any_overlapping(addr, len.max(1)) {
        return None;
    }
    let lock = |a: u64, l: u64, f: usize| {
        // SAFETY: locking pages of the program's (or the tracer's own) mappings.
        unsafe {
            if f == 0 {
                sys::syscall6(SYS_MLOCK, a as usize, l as usize, 0, 0, 0, 0)
            } else {
                sys::syscall6(SYS_MLOCK2, a as usize, l as usize, f, 0, 0, 0)
            }
        }
    };
    let rc = lock(addr, len, flags as usize);
    if rc != -(libc::ENOMEM as isize) || flags as usize & MLOCK_ONFAULT != 0 {
        return Some(rc);
    }
    let rc = lock(addr, len, MLOCK_ONFAULT);
    if rc < 0 {
        // Unmapped pages in the range (the native error), or no mlock2 (kernel < 4.4).
        return Some(if rc == -(libc::ENOSYS as isize) {
            -(libc::ENOMEM as isize)
        } else {
            rc
        });
    }
    let start = addr & !(PAGE - 1);
    let end = (addr + len + PAGE - 1) & !(PAGE - 1);
    let mut at = start;
    regions::overlapping(start, end - start, |r| {
        let (lo, hi) = (r.start.max(start), r.end().min(end));
        if at < lo {
            lock(at, lo - at, flags as usize);
        }
        if r.alias != 0 {
            lock(r.alias_of(lo), hi - lo, flags as usize);
        }
        at = hi;
    });
    if at < end {
        lock(at, end - at, flags as usize);
    }
    Some(0)
}

/// `MADV_POPULATE_READ`: see [`madvise_populate`].
pub const MADV_POPULATE_READ: i32 = 22;
/// `MADV_POPULATE_WRITE`: see [`madvise_populate`].
pub const MADV_POPULATE_WRITE: i32 = 23;

/// The preload library's `madvise` for [`MADV_POPULATE_READ`] and [`MADV_POPULATE_WRITE`].
/// Returns `None` when no traced region is involved (the caller makes the plain call);
/// otherwise the result (0 or `-errno`).
///
/// The kernel cannot populate the traced pages the tracer keeps `PROT_NONE` (`EINVAL`,
/// where natively the call succeeds). So the range is populated in address order, piece
/// by piece, stopping at the first error as the kernel does: the untraced parts with the
/// plain call (its answer for unmapped holes, say), the traced pages through their alias
/// (the same pages: the kernel's answer for the device, a `VM_PFNMAP` BAR's `EINVAL` or a
/// truncated file's `EFAULT`), after checking the program's own protection allows the
/// access (`EINVAL` natively otherwise). A traced piece without its alias yet is left to
/// its first access.
pub fn madvise_populate(addr: u64, len: u64, advice: i32) -> Option<isize> {
    const SYS_MADVISE: usize = 28;
    if (advice != MADV_POPULATE_READ && advice != MADV_POPULATE_WRITE)
        || addr & (PAGE - 1) != 0
        || len == 0
        || !is_active()
        || !regions::maybe_overlaps(addr, len)
    {
        return None;
    }
    let end = addr.checked_add(len)?.checked_add(PAGE - 1)? & !(PAGE - 1);
    if !regions::any_overlapping(addr, end - addr) {
        return None;
    }
    let adv = |a: u64, l: u64| {
        // SAFETY: advice on pages of the program's (or the tracer's own alias) mappings;
        // populating changes no contents.
        unsafe {
            sys::syscall6(
                SYS_MADVISE,
                a as usize,
                l as usize,
                advice as usize,
                0,
                0,
                0,
            )
        }
    };
    let need = if advice == MADV_POPULATE_WRITE {
        libc::PROT_WRITE
    } else {
        libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC
    };
    let mut at = addr;
    let mut rc = 0;
    regions::overlapping(addr, end - addr, |r| {
        if rc < 0 {
            return;
        }
        let (lo, hi) = (r.start.max(addr), r.end().min(end));
        if at < lo {
            rc = adv(at, lo - at);
            if rc < 0 {
                return;
            }
        }
        if r.prot & need == 0 {
            rc = -(libc::EINVAL as isize);
            return;
        }
        if r.alias != 0 {
            rc = adv(r.alias_of(lo), hi - lo);
        }
        at = hi;
    });
    if rc == 0 && at < end {
        rc = adv(at, end - at);
    }
    Some(rc.min(0))
}

/// The preload library's hook after a successful `munlock`: the aliases of the traced
/// pages in the range are unlocked too.
pub fn after_munlock(addr: u64, len: u64) {
    const SYS_MUNLOCK: usize = 150;
    if !is_active() || !regions::maybe_overlaps(addr, len) {
        return;
    }
    let end = addr.saturating_add(len);
    regions::overlapping(addr, len, |r| {
        if r.alias != 0 {
            let (lo, hi) = (r.start.max(addr & !(PAGE - 1)), r.end().min(end));
            // SAFETY: unlocking the tracer's own alias pages.
            unsafe {
                sys::syscall6(
                    SYS_MUNLOCK,
                    r.alias_of(lo) as usize,
                    (hi - lo) as usize,
                    0,
                    0,
                    0,
                    0,
                )
            };
        }
    });
}

/// The preload library's `mprotect`. Returns `None` when no traced region is involved
/// (the caller makes the plain call); otherwise the raw result (0 or `-errno`).
///
/// The real `mprotect` runs first, so the kernel decides what the program may ask for
/// (misaligned range, `PROT_WRITE` on a read-only file, unmapped pages...) and its error
/// is the program's. On success the traced pages are closed again (those the device
/// rules' `--range`/`--bypass` leave untraced keep what the program asked for) and the
/// protection is remembered for the fault path to enforce. Between the two calls a
/// traced page is briefly open: another thread's access to it in that window is not
/// logged.
pub fn mprotect(addr: u64, len: u64, prot: i32) -> Option<isize> {
    // The quick test first: programs (and allocators) call mprotect on ordinary memory
    // far more often.
    if !is_active() || !regions::maybe_overlaps(addr, len) {
        return None;
    }
    if !regions::any_overlapping(addr, len.max(1)) {
        return None;
    }
    // SAFETY: the program's own call, with its arguments.
    let rc = unsafe { sys::mprotect(addr as usize, len as usize, prot) };
    if rc < 0 {
        return Some(rc);
    }
    if stop::stopped() {
        // Tracing stopped (the recorder is gone): the pages keep what the program asked
        // for; the table remembers it for faults still in flight.
        regions::set_prot(addr, (len + PAGE - 1) & !(PAGE - 1), prot);
        return Some(0);
    }
    // The kernel accepted it: `addr` is aligned; it rounded the length up.
    let len = (len + PAGE - 1) & !(PAGE - 1);
    let rules = RULES
        .get()
        .filter(|r| !r.ranges.is_empty() || !r.bypass.is_empty());
    let end = addr + len;
    regions::overlapping(addr, len, |r| {
        let (lo, hi) = (r.start.max(addr), (r.start + r.len).min(end));
        match rules {
            None => {
                // SAFETY: traced pages of the program's mapping (closed, as before the call).
                unsafe { sys::mprotect(lo as usize, (hi - lo) as usize, libc::PROT_NONE) };
            }
            Some(rules) => {
                let mut p = lo;
                while p < hi {
                    if rules.traced(r.off_of(p), PAGE) {
                        // SAFETY: a traced page of the program's mapping.
                        unsafe { sys::mprotect(p as usize, PAGE as usize, libc::PROT_NONE) };
                    }
                    p += PAGE;
                }
            }
        }
    });
    regions::set_prot(addr, len, prot);
    Some(0)
}

/// `mremap(old, 0, new_len, MREMAP_MAYMOVE)`: a second view of the same pages at `new`.
/// The original stays traced; the view is traced as a mapping of its own, with an alias of
/// its own (the original's may go away first).
fn after_mremap_dup(old: u64, new: u64, new_len: u64, pc: u64) {
    let Some(r) = regions::find(old) else { return };
    let Some(shm) = shm() else { return };
    let new_len = (new_len + PAGE - 1) & !(PAGE - 1);
    let mut alias = 0;
    if r.alias != 0 {
        // SAFETY: duplicating the tracer's own shared alias mapping into a fresh address.
        let a = unsafe {
            sys::mremap(
                r.alias_of(old) as usize,
                0,
                new_len as usize,
                libc::MREMAP_MAYMOVE,
                0,
            )
        };
        alias = if a < 0 { 0 } else { a as u64 };
    }
    let map_id = shm.next_map_id();
    let nr = Region {
        start: new,
        len: new_len,
        alias,
        phys: r.phys_of(old),
        map_id,
        prot: r.prot,
        phys_minus_off: r.phys_minus_off,
        lazy: r.lazy,
    };
    if register(nr, b"(mremap)", r.off_of(old)) {
        emit::map(new, new_len, nr.phys, map_id, pc);
        continues_mark(map_id, r.map_id);
        // The view inherited PROT_NONE from the original's closed pages; keep it closed.
        // SAFETY: the program's new mapping.
        unsafe { sys::mprotect(new as usize, new_len as usize, libc::PROT_NONE) };
    }
}

/// Pieces (regions of the table) one `mremap` moves per batch, and most distinct mapping
/// ids it moves traced (more are left untraced at their new place, with a `MARK`).
const MREMAP_PIECES: usize = 16;

/// The preload library's hook after a successful `mremap` of `old`. What moved is traced
/// at its new place, piece by piece (each region of the table with its own protection and
/// alias offset), under a new mapping id per original id (`MAP`); what stayed (a part of a
/// region outside the moved range) stays traced; an original id gets `UNMAP` only when no
/// piece of it is left. Grown pages are a region of their own with an alias of their own.
pub fn after_mremap(old: u64, old_len: u64, new: u64, new_len: u64, pc: u64) {
    if !is_active() {
        return;
    }
    if stop::stopped() {
        // Tracing stopped (the recorder is gone): the pages moved with the program's
        // protection; the old place is forgotten, the new one not traced.
        regions::remove_range(old, (old_len + PAGE - 1) & !(PAGE - 1), (0, 0), |_, _| {});
        return;
    }
    if old_len == 0 {
        after_mremap_dup(old, new, new_len, pc);
        return;
    }
    let Some(shm) = shm() else { return };
    let old_len = (old_len + PAGE - 1) & !(PAGE - 1);
    let new_len = (new_len + PAGE - 1) & !(PAGE - 1);
    if !regions::maybe_overlaps(old, old_len) {
        return;
    }
    if new != old {
        // `MREMAP_FIXED` replaced whatever was at the new place.
        before_munmap(new, new_len, pc);
    }
    // The pieces of the old range that now live at `new` (clipped to the kept length) are
    // traced there, before the old place is forgotten (they do not overlap it:
    // `MREMAP_FIXED` refuses that; their pages kept the kernel protection they had), in
    // batches of MREMAP_PIECES (normal context must not allocate: `realloc` calls
    // `mremap`).
    let kept = old_len.min(new_len);
    // The piece holding the last old page (a grown tail continues it).
    let last = regions::find(old + old_len - PAGE);
    // New ids: (old id, new id, lowest start, highest end, phys at the lowest start).
    let mut ids = [(0u64, 0u64, u64::MAX, 0u64, 0u64); MREMAP_PIECES];
    let mut nids = 0;
    // Pieces of more distinct ids than MREMAP_PIECES: opened at their new place with the
    // program's protection (untraced, but usable), and said so.
    let mut dropped = 0u64;
    let mut moved = false;
    let mut cur = old;
    while new != old && cur < old + kept {
        let mut batch = [None::<Region>; MREMAP_PIECES];
        let mut nb = 0;
        let mut next = old + kept;
        regions::overlapping(cur, old + kept - cur, |r| {
            let (lo, hi) = (r.start.max(cur), r.end().min(old + kept));
            if nb == MREMAP_PIECES || lo >= hi {
                return;
            }
            batch[nb] = Some(Region {
                start: new + (lo - old),
                ..r.piece(lo, hi)
            });
            nb += 1;
            if nb == MREMAP_PIECES {
                next = hi;
            }
        });
        for p in batch.iter_mut().take(nb).flatten() {
            let k = match ids[..nids].iter().position(|e| e.0 == p.map_id) {
                Some(k) => k,
                None if nids < MREMAP_PIECES => {
                    ids[nids] = (p.map_id, shm.next_map_id(), u64::MAX, 0, 0);
                    nids += 1;
                    nids - 1
                }
                None => {
                    dropped += 1;
                    // SAFETY: the program's moved pages, given the protection it asked for.
                    unsafe { sys::mprotect(p.start as usize, p.len as usize, p.prot) };
                    continue;
                }
            };
            let e = &mut ids[k];
            if p.start < e.2 {
                e.2 = p.start;
                e.4 = p.phys;
            }
            e.3 = e.3.max(p.start + p.len);
            p.map_id = e.1;
            moved |= register(*p, b"(mremap)", p.off_of(p.start));
        }
        cur = next;
    }
    if dropped > 0 {
        let mut t = MarkText::new();
        t.put(b"NOT TRACED: mremap to ");
        t.num(new, true);
        t.put(b" moved pieces of more than 16 mappings: ");
        t.num(dropped, false);
        t.put(b" pieces are not traced at their new place");
        emit::mark(t.text());
    }
    // The old place first (the moved pages left it already; in place, only the shrunk-away
    // tail goes), so an id that moved whole is unmapped before its successor is mapped.
    let (gone, gone_len) = if new == old {
        (old + kept, old_len - kept)
    } else {
        (old, old_len)
    };
    let mut ended = [0u64; MREMAP_PIECES];
    let mut nended = 0;
    // The moved pieces keep their aliases; those of the pages left behind go.
    let keep = if new == old || !moved {
        (0, 0)
    } else {
        (old, old + kept)
    };
    regions::remove_range(gone, gone_len, keep, |r, last| {
        if last && nended < MREMAP_PIECES && !ended[..nended].contains(&r.map_id) {
            ended[nended] = r.map_id;
            nended += 1;
        }
    });
    for &id in &ended[..nended] {
        emit::unmap(id, pc);
    }
    // Grown pages continue the last piece: under its new id when it moved (its MAP
    // grows), under an id of their own when the mapping grew in place.
    let mut tail = None;
    if new_len > old_len {
        if let Some(r) = last {
            let id = match ids[..nids].iter_mut().find(|e| e.0 == r.map_id) {
                Some(e) => {
                    e.3 = new + new_len;
                    e.1
                }
                None => shm.next_map_id(),
            };
            tail = Some((
                grow_tail(&r, old + old_len, new + old_len, new_len - old_len),
                id,
            ));
        }
    }
    if let Some((mut t, id)) = tail {
        let from = t.map_id;
        t.map_id = id;
        if register(t, b"(mremap)", t.off_of(t.start)) && !ids[..nids].iter().any(|e| e.1 == id) {
            emit::map(t.start, t.len, t.phys, id, pc);
            continues_mark(id, from);
        }
        // SAFETY: the program's grown pages (they inherited the last page's protection).
        unsafe { sys::mprotect(t.start as usize, t.len as usize, libc::PROT_NONE) };
    }
    for e in &ids[..nids] {
        emit::map(e.2, e.3 - e.2, e.4, e.1, pc);
        continues_mark(e.1, e.0);
    }
}

/// The region for the pages a growing `mremap` appended at `at` (`len` bytes), continuing
/// region `r` (which held the page before them at its old place, ending at `old_end`), with
/// an alias of its own (`map_id` left for the caller).
fn grow_tail(r: &Region, old_end: u64, at: u64, len: u64) -> Region {
    let mut alias = 0;
    if r.alias != 0 {
        // A view of the alias's last page plus the grown length (the same file, going on).
        // SAFETY: duplicating the tracer's own shared alias mapping into a fresh address.
        let a = unsafe {
            sys::mremap(
                r.alias_of(old_end - PAGE) as usize,
                0,
                (PAGE + len) as usize,
                libc::MREMAP_MAYMOVE,
                0,
            )
        };
        alias = if a < 0 { 0 } else { a as u64 + PAGE };
    }
    Region {
        start: at,
        len,
        alias,
        phys: r.phys_of(old_end - PAGE) + PAGE,
        map_id: r.map_id,
        prot: r.prot,
        phys_minus_off: r.phys_minus_off,
        lazy: r.lazy,
    }
}
