//! `libmmio_trace_preload.so`: the library `mmio-trace record` injects with `LD_PRELOAD`.
//!
//! A thin shim: it interposes the libc functions through which a program maps device
//! memory and handles signals, and forwards to `mmio-trace-tracer`:
//!
//! | symbol | why |
//! |---|---|
//! | `mmap`, `mmap64` | trace new device mappings (after the real call) |
//! | `munmap`, `mremap`, `mprotect` | keep traced regions right when the program changes them |
//! | `mlock`, `mlock2`, `munlock`, `madvise` | locking and populating (`MADV_POPULATE_READ/WRITE`) traced pages succeed as natively (the kernel cannot populate the tracer's `PROT_NONE` pages) |
//! | `sigaction`, `signal` | the tracer owns SIGSEGV/SIGTRAP; the program's handlers are chained; other handlers' `sa_mask` never blocks the tracer's signals |
//! | `sigprocmask`, `pthread_sigmask` | the tracer's signals stay deliverable (a blocked SIGSEGV on a traced access would kill the program) |
//! | `sigsuspend`, `ppoll`, `pselect`, `epoll_pwait`, `epoll_pwait2` | the same for the mask they install while waiting (a handler run then may touch the device) |
//! | `sigaltstack` | the program's alternate stack is recorded and reported, the tracer's (large) one stays |
//! | `timer_create`, `mq_notify` | `SIGEV_THREAD` callbacks run in glibc threads with every signal blocked: unblock the tracer's first |
//! | `fork` (and `pthread_atfork` handlers) | the child gets fresh per-thread state and rings, also after `daemon(3)` |
//! | `pthread_create`, `pthread_exit` | per-thread alternate signal stack; ring retired at thread end (from a pthread-key destructor: also on cancellation and after other destructors) |
//! | `pthread_setcanceltype` | a thread cancellable at any instruction takes the trap path for every access (hot-site trampolines stop serving it) |
//! | `ioctl` | which PCI device a VFIO device fd is (`VFIO_GROUP_GET_DEVICE_FD`), for MAP's physical address; an `_IOC` argument in device memory |
//! | `close`, `close_range`, `closefrom` | the program may not close the tracer's descriptors (the recorder's memfd and liveness pipe, the task directory): programs that close every descriptor before `exec` would otherwise run the new image untraced |
//! | `dup2`, `dup3` | a program that reuses one of those numbers gets it: the tracer's descriptor moves first, and the environment names its new number |
//! | `execve`, `execle`, `execvpe`, `execveat`, `fexecve`, `posix_spawn`, `posix_spawnp` | an explicit environment keeps our `LD_PRELOAD` (prepended to the program's) and the recorder's variables |
//! | `execv`, `execvp`, `execl`, `execlp`, `system`, `popen`, `pclose` (`exec.rs`) | the same for `environ`, which the program may have emptied; exec notes name images that never attach |
//! | `read`, `write`, `pread`, `pwrite`, `readv`, `writev`, `preadv`, `pwritev`, `preadv2`, `pwritev2`, `send*`, `recv*`, `getrandom`, `getentropy`, `stat` family, `statx`, `pipe`, `pipe2`, `socketpair`, `readlink(at)`, `getcwd`, `uname`, `poll`, `wait*`, `fread`/`fwrite`, `clock_gettime`, `syscall` (`sysbuf.rs`) | a buffer in device memory is handed to the kernel through the alias, and the kernel's access logged |
//! | `_exit`, `_Exit` (and an `atexit` handler) | the last counts of shared file mappings no device rule matched, for the recorder's warning when nothing was traced |
//! | `mmio_trace_mark` | C API: insert a `MARK` |
//!
//! Real functions are resolved eagerly with `dlsym(RTLD_NEXT)` in the constructor (lazy
//! resolution inside `mmap` can deadlock: `dlsym` may allocate, and allocators call
//! `mmap`); before that, the memory functions go straight to the kernel.
//!
//! **No unwinding across FFI**: every exported function is `extern "C"`, so since Rust
//! 1.81 a panic reaching its boundary aborts the process instead of unwinding into C;
//! the code on these paths is written not to panic (no indexing that can fail, no
//! `unwrap`), and the fault path itself allocates nothing. (Cargo cannot set
//! `panic = "abort"` for one package of a workspace; the `extern "C"` boundary gives the
//! same guarantee for this library.)
#![deny(unsafe_op_in_unsafe_fn)]
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use libc::{off_t, size_t};
use mmio_trace_tracer::{self as tracer, signals, sys};

mod mappings;
mod objects;
mod rawsys;
mod replay;

static INITIALISED: AtomicBool = AtomicBool::new(false);

macro_rules! reals {
    ($($name:ident),* $(,)?) => {
        #[allow(non_upper_case_globals)]
        mod real {
            use std::sync::atomic::AtomicUsize;
            $(pub static $name: AtomicUsize = AtomicUsize::new(0);)*
        }
        pub(crate) fn resolve_all() {
            $(resolve(&real::$name, concat!(stringify!($name), "\0"));)*
        }
    };
}

reals!(
    mmap,
    mmap64,
    sigaction,
    sigprocmask,
    pthread_sigmask,
    signal,
    fork,
    close,
    close_range,
    dup2,
    dup3,
    execve,
    pthread_create,
    pthread_exit,
    pthread_setcanceltype,
    _exit,
    _Exit,
    ioctl,
    sigaltstack,
    timer_create,
    mq_notify,
    execvpe,
    execveat,
    fexecve,
    posix_spawn,
    posix_spawnp,
    sigsuspend,
    ppoll,
    __ppoll_chk,
    pselect,
    epoll_pwait,
    epoll_pwait2,
    open,
    open64,
    openat,
    openat64,
    __open_2,
    __open64_2,
    __openat_2,
    __openat64_2
);

fn resolve(slot: &AtomicUsize, name: &str) -> usize {
    // SAFETY: NUL-terminated name; RTLD_NEXT finds the next definition after ours.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) } as usize;
    slot.store(p, Ordering::Release);
    p
}

/// The real function (resolved in the constructor; resolved now if called earlier).
fn real(slot: &AtomicUsize, name: &str) -> usize {
    match slot.load(Ordering::Acquire) {
        0 => resolve(slot, name),
        p => p,
    }
}

/// Defines interposed functions whose body is a shared one (`= body`), called with the
/// real function of the interposed name and the caller's arguments.
macro_rules! with_real {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $body:ident;
    )*) => {$(
        $(#[$doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: the caller's arguments, passed on to a body with the same contract.
            unsafe { $body(&real::$name, concat!(stringify!($name), "\0"), $($arg),*) }
        }
    )*};
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    resolve_all();
    exec::resolve_all();
    sysbuf::resolve_all();
    objects::resolve_all();
    ENV.get_or_init(saved_env);
    tls::register();
    if traced_by_recorder() || tracer::handoff::core_present() {
        // The recorder's ptrace route traces this process already, or the inject route
        // put its core in at the exec (it was handed over at an exec, or started so, and
        // inherited LD_PRELOAD): a second tracer inside it would make its device pages
        // fault twice. Stay dormant: every wrapper passes through.
        return;
    }
    if tracer::init_from_env() {
        // Opened again from the recorder's paths (the inherited ones were closed on the
        // way): images this one execs with `environ` are to find the new numbers.
        for (name, fd, var) in [
            (tracer::ENV_FD, tracer::shm_fd(), &SHM_FD_VAR),
            (tracer::ENV_LIVE_FD, tracer::live_fd(), &LIVE_FD_VAR),
        ] {
            let listed = std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<c_int>().ok());
            if let Some(fd) = fd.filter(|&fd| Some(fd) != listed) {
                renumber_environ(name, fd, var);
            }
        }
        create_end_key();
        INITIALISED.store(true, Ordering::Release);
        rawsys::install();
        exec::attach();
        // Forks made inside libc (daemon(3), system(3)...) do not go through our `fork`;
        // the atfork handlers run for every fork made with libc's fork.
        // SAFETY: plain function pointers that stay valid (this library is never unloaded).
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
        // Registered before the program's own: runs after them, to count their mappings.
        // SAFETY: a plain function pointer that stays valid.
        unsafe { libc::atexit(at_exit) };
    }
}

/// Whether the recorder named in the environment traces this process by ptrace.
fn traced_by_recorder() -> bool {
    std::env::var(tracer::handoff::ENV_RECORDER_PID)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(tracer::handoff::traced_by_recorder)
}

extern "C" fn at_exit() {
    tracer::before_exit();
    // The last counts of shared file mappings no device rule matched.
    tracer::unmatched::flush();
}

extern "C" fn fork_prepare() {
    tracer::fork_prepare();
}

extern "C" fn fork_parent() {
    tracer::fork_parent();
}

extern "C" fn fork_child() {
    tracer::fork_child();
}

fn set_errno(e: c_int) {
    // SAFETY: libc's thread errno location.
    unsafe { *libc::__errno_location() = e };
}

fn ret_ptr(r: isize) -> *mut c_void {
    if r < 0 && r > -4096 {
        set_errno(-r as c_int);
        libc::MAP_FAILED
    } else {
        r as *mut c_void
    }
}

type MmapFn = unsafe extern "C" fn(*mut c_void, size_t, c_int, c_int, c_int, off_t) -> *mut c_void;

#[allow(clippy::too_many_arguments)]
unsafe fn do_mmap(
    slot: &AtomicUsize,
    name: &str,
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    let p = if INITIALISED.load(Ordering::Acquire) {
        real(slot, name)
    } else {
        0
    };
    let r = if p == 0 {
        // SAFETY: the caller's arguments, straight to the kernel.
        ret_ptr(unsafe { sys::mmap(addr as usize, len, prot, flags, fd, off) })
    } else {
        // SAFETY: libc's mmap with the caller's arguments.
        unsafe { std::mem::transmute::<usize, MmapFn>(p)(addr, len, prot, flags, fd, off) }
    };
    if r != libc::MAP_FAILED {
        tracer::after_mmap(r as u64, len as u64, prot, flags, fd, off, 0);
    }
    r
}

with_real! {
    /// Interposed `mmap`.
    fn mmap(
        addr: *mut c_void,
        len: size_t,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: off_t,
    ) -> *mut c_void = do_mmap;

    /// Interposed `mmap64` (the same function on x86-64).
    fn mmap64(
        addr: *mut c_void,
        len: size_t,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: off_t,
    ) -> *mut c_void = do_mmap;
}

/// Interposed `munmap`.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: size_t) -> c_int {
    // What the kernel refuses (EINVAL) changes nothing: the traced pages stay traced.
    if addr as usize % 4096 == 0 && len != 0 {
        tracer::before_munmap(addr as u64, len as u64, 0);
    }
    // SAFETY: the caller's arguments, straight to the kernel (munmap is a plain syscall).
    let r = unsafe { sys::munmap(addr as usize, len) };
    if r < 0 {
        set_errno(-r as c_int);
        return -1;
    }
    0
}

/// Interposed `mprotect`: traced regions keep their pages closed; the program's protection
/// is enforced by the fault path instead (the kernel still checks the call first).
#[no_mangle]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: size_t, prot: c_int) -> c_int {
    let r = match tracer::mprotect(addr as u64, len as u64, prot) {
        Some(r) => r,
        // SAFETY: the caller's arguments.
        None => unsafe { sys::mprotect(addr as usize, len, prot) },
    };
    if r < 0 {
        set_errno(-r as c_int);
        return -1;
    }
    0
}

/// Interposed `mremap` (variadic in C: the fifth argument is read only with MREMAP_FIXED;
/// on x86-64 a fixed fifth integer parameter receives it).
#[no_mangle]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_len: size_t,
    new_len: size_t,
    flags: c_int,
    new_addr: *mut c_void,
) -> *mut c_void {
    // SAFETY: the caller's arguments.
    let r = unsafe { sys::mremap(old as usize, old_len, new_len, flags, new_addr as usize) };
    if r >= 0 {
        tracer::after_mremap(old as u64, old_len as u64, r as u64, new_len as u64, 0);
    }
    ret_ptr(r)
}

type SigactionFn =
    unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;

/// The signals the tracer must always receive; a bit `k` in [`STRIPPED`] stands for the
/// `k`-th.
const OURS: [c_int; 3] = [libc::SIGSEGV, libc::SIGTRAP, signals::PAUSE_SIGNAL];

/// Which of the tracer's signals each program handler's `sa_mask` asked to block (removed
/// before the kernel sees it, reported back to the program).
static STRIPPED: [AtomicU64; 65] = [const { AtomicU64::new(0) }; 65];

/// Interposed `sigaction`: SIGSEGV, SIGTRAP and the tracer's pause signal are virtualised.
/// Other handlers get `sa_mask` without those (a handler installed with `sigfillset` that
/// touches the device would otherwise be killed by the kernel); the program sees its own
/// mask in `old`.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    // SAFETY: the caller's pointers.
    if unsafe { signals::app_sigaction(sig, act, old) } {
        return 0;
    }
    let p = real(&real::sigaction, "sigaction\0");
    // SAFETY: libc's sigaction.
    let f = unsafe { std::mem::transmute::<usize, SigactionFn>(p) };
    let Some(slot) = STRIPPED.get(sig as usize) else {
        // SAFETY: the caller's arguments (libc reports EINVAL).
        return unsafe { f(sig, act, old) };
    };
    if !INITIALISED.load(Ordering::Acquire) {
        // SAFETY: the caller's arguments.
        return unsafe { f(sig, act, old) };
    }
    let mut mine: Option<libc::sigaction> = None;
    let mut stripped = 0u64;
    if !act.is_null() {
        // SAFETY: the caller's valid sigaction.
        let mut a = unsafe { *act };
        for (k, sig) in OURS.into_iter().enumerate() {
            // SAFETY: a valid sigset.
            if unsafe { libc::sigismember(&a.sa_mask, sig) } == 1 {
                stripped |= 1 << k;
                // SAFETY: as above.
                unsafe { libc::sigdelset(&mut a.sa_mask, sig) };
            }
        }
        mine = Some(a);
    }
    let before = slot.load(Ordering::Relaxed);
    let ap = mine.as_ref().map_or(act, |a| a as *const libc::sigaction);
    // SAFETY: libc's sigaction with valid pointers.
    let rc = unsafe { f(sig, ap, old) };
    if rc == 0 {
        if !old.is_null() {
            for (k, sig) in OURS.into_iter().enumerate() {
                if before & (1 << k) != 0 {
                    // SAFETY: the caller's sigaction, just filled in.
                    unsafe { libc::sigaddset(&mut (*old).sa_mask, sig) };
                }
            }
        }
        if mine.is_some() {
            slot.store(stripped, Ordering::Relaxed);
        }
    }
    rc
}

type SigaltstackFn = unsafe extern "C" fn(*const libc::stack_t, *mut libc::stack_t) -> c_int;

/// Interposed `sigaltstack`: virtualised (see `signals::app_sigaltstack`); the tracer's
/// handler must not run on a small program stack.
#[no_mangle]
pub unsafe extern "C" fn sigaltstack(ss: *const libc::stack_t, old: *mut libc::stack_t) -> c_int {
    // SAFETY: the caller's pointers.
    match unsafe { signals::app_sigaltstack(ss, old) } {
        Some(0) => 0,
        Some(e) => {
            set_errno(-e);
            -1
        }
        None => {
            let p = real(&real::sigaltstack, "sigaltstack\0");
            // SAFETY: libc's sigaltstack with the caller's arguments.
            unsafe { std::mem::transmute::<usize, SigaltstackFn>(p)(ss, old) }
        }
    }
}

/// `struct sigevent` as glibc lays it out for `SIGEV_THREAD` (64 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct SigEvent {
    value: usize,
    signo: c_int,
    notify: c_int,
    function: usize,
    attributes: usize,
    pad: [u64; 4],
}

const SIGEV_THREAD: c_int = 2;

/// A `SIGEV_THREAD` callback and its argument, for [`sigev_thread`].
struct SigevCall {
    function: extern "C" fn(usize),
    value: usize,
}

/// Runs a `SIGEV_THREAD` callback in glibc's notification thread, which has every signal
/// blocked: the tracer's are unblocked first (a device access would be fatal otherwise).
/// glibc starts a fresh thread for each notification (its own `pthread_create`, not ours),
/// often on a reused stack: the thread gets the start and end hooks our `pthread_create`
/// trampoline would have run, or it would write into the ring of the previous thread that
/// had the same thread pointer (its tid gone, the recorder may have freed it).
extern "C" fn sigev_thread(call: usize) {
    signals::thread_start();
    let armed = arm_end_hook();
    // SAFETY: a leaked `SigevCall` made by `with_sigev_thread`, never freed.
    let c = unsafe { &*(call as *const SigevCall) };
    (c.function)(c.value);
    if !armed {
        end_hooks();
    }
}

/// `sev` with a `SIGEV_THREAD` callback wrapped by [`sigev_thread`]. The wrapper's 16
/// bytes are never freed (the notification may still be running when the timer or queue
/// goes away).
unsafe fn with_sigev_thread(sev: *const c_void) -> Option<SigEvent> {
    if sev.is_null() || !INITIALISED.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: the caller's struct sigevent (64 bytes).
    let mut e = unsafe { *(sev as *const SigEvent) };
    if e.notify != SIGEV_THREAD || e.function == 0 {
        return None;
    }
    let call = Box::new(SigevCall {
        // SAFETY: the program's notification function, `void (*)(union sigval)`.
        function: unsafe { std::mem::transmute::<usize, extern "C" fn(usize)>(e.function) },
        value: e.value,
    });
    e.value = Box::into_raw(call) as usize;
    e.function = sigev_thread as *const () as usize;
    Some(e)
}

/// Interposed `timer_create`: see `sigev_thread` (the wrapper of its callbacks).
#[no_mangle]
pub unsafe extern "C" fn timer_create(
    clock: libc::clockid_t,
    sev: *mut c_void,
    timer: *mut c_void,
) -> c_int {
    let Some(p) = real_or_enosys(&real::timer_create, "timer_create\0") else {
        return -1;
    };
    // SAFETY: the caller's sigevent.
    let mine = unsafe { with_sigev_thread(sev) };
    let sp = mine.as_ref().map_or(sev as *const c_void, |e| {
        e as *const SigEvent as *const c_void
    });
    // SAFETY: libc's timer_create with the caller's arguments (or a copy of its sigevent).
    unsafe {
        std::mem::transmute::<
            usize,
            unsafe extern "C" fn(libc::clockid_t, *const c_void, *mut c_void) -> c_int,
        >(p)(clock, sp, timer)
    }
}

/// Interposed `mq_notify`: see `sigev_thread` (the wrapper of its callbacks).
#[no_mangle]
pub unsafe extern "C" fn mq_notify(mq: c_int, sev: *const c_void) -> c_int {
    let Some(p) = real_or_enosys(&real::mq_notify, "mq_notify\0") else {
        return -1;
    };
    // SAFETY: the caller's sigevent.
    let mine = unsafe { with_sigev_thread(sev) };
    let sp = mine
        .as_ref()
        .map_or(sev, |e| e as *const SigEvent as *const c_void);
    // SAFETY: libc's mq_notify with the caller's arguments (or a copy of its sigevent).
    unsafe {
        std::mem::transmute::<usize, unsafe extern "C" fn(c_int, *const c_void) -> c_int>(p)(mq, sp)
    }
}

type SignalFn = unsafe extern "C" fn(c_int, libc::sighandler_t) -> libc::sighandler_t;

/// Interposed `signal` (glibc semantics: `SA_RESTART`, handler stays installed).
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    if signals::is_reserved(sig) && INITIALISED.load(Ordering::Acquire) {
        // SAFETY: zeroed sigaction is valid.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = handler;
        act.sa_flags = libc::SA_RESTART;
        // SAFETY: as above.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers.
        unsafe { signals::app_sigaction(sig, &act, &mut old) };
        return old.sa_sigaction;
    }
    let p = real(&real::signal, "signal\0");
    // SAFETY: libc's signal.
    unsafe { std::mem::transmute::<usize, SignalFn>(p)(sig, handler) }
}

type SigmaskFn = unsafe extern "C" fn(c_int, *const libc::sigset_t, *mut libc::sigset_t) -> c_int;

/// A copy of `set` without the tracer's signals, when it would block them.
unsafe fn without_ours(
    how: c_int,
    set: *const libc::sigset_t,
    buf: &mut libc::sigset_t,
) -> *const libc::sigset_t {
    if set.is_null() || how == libc::SIG_UNBLOCK || !INITIALISED.load(Ordering::Acquire) {
        return set;
    }
    // SAFETY: the caller's valid sigset.
    unsafe {
        *buf = *set;
        for sig in OURS {
            libc::sigdelset(buf, sig);
        }
        // Raw calls routed to the tracer (`rawsys`) trap as SIGSYS: blocked, the kernel
        // would kill the program instead.
        if tracer::sysemu::active() {
            libc::sigdelset(buf, libc::SIGSYS);
        }
    }
    buf
}

/// Calls the real mask function in `slot` (`sigprocmask` or `pthread_sigmask`) with
/// the tracer's signals taken out of `set`.
///
/// # Safety
/// The caller's arguments, as for `sigprocmask`.
unsafe fn mask_without_ours(
    slot: &AtomicUsize,
    name: &str,
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    // SAFETY: zeroed sigset_t is valid.
    let mut buf: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the caller's pointers.
    let set = unsafe { without_ours(how, set, &mut buf) };
    let p = real(slot, name);
    // SAFETY: libc's function of that signature.
    unsafe { std::mem::transmute::<usize, SigmaskFn>(p)(how, set, old) }
}

with_real! {
    /// Interposed `sigprocmask`: never blocks the tracer's signals.
    fn sigprocmask(
        how: c_int,
        set: *const libc::sigset_t,
        old: *mut libc::sigset_t,
    ) -> c_int = mask_without_ours;

    /// Interposed `pthread_sigmask`: never blocks the tracer's signals.
    fn pthread_sigmask(
        how: c_int,
        set: *const libc::sigset_t,
        old: *mut libc::sigset_t,
    ) -> c_int = mask_without_ours;
}

/// The function in `slot`, or `None` (errno `ENOSYS`) if this libc lacks it.
fn real_or_enosys(slot: &AtomicUsize, name: &str) -> Option<usize> {
    let p = real(slot, name);
    if p == 0 {
        set_errno(libc::ENOSYS);
        return None;
    }
    Some(p)
}

/// Defines interposed functions that wait with a signal mask: the mask the caller names
/// (`waits with <parameter>`) loses the tracer's signals before the real function (this
/// libc's, `ENOSYS` where it has none) installs it. No allocation, no panic: these run
/// in programs' event loops and signal paths.
macro_rules! mask_waiting {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) waits with $mask:ident;
    )*) => {$(
        $(#[$doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
            // SAFETY: zeroed sigset_t is valid.
            let mut buf: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: the caller's pointer.
            let $mask = unsafe { without_ours(libc::SIG_SETMASK, $mask, &mut buf) };
            let Some(p) = real_or_enosys(&real::$name, concat!(stringify!($name), "\0")) else {
                return -1;
            };
            // SAFETY: libc's function of this name, whose C signature the parameters
            // spell, with the caller's arguments.
            unsafe {
                std::mem::transmute::<usize, unsafe extern "C" fn($($ty),*) -> c_int>(p)($($arg),*)
            }
        }
    )*};
}

mask_waiting! {
    /// Interposed `sigsuspend`: the mask it waits with never blocks the tracer's signals
    /// (a handler run during the wait may touch the device).
    fn sigsuspend(mask: *const libc::sigset_t) waits with mask;

    /// Interposed `ppoll`: as [`sigsuspend`] for the mask it waits with.
    fn ppoll(
        fds: *mut libc::pollfd,
        nfds: libc::nfds_t,
        timeout: *const libc::timespec,
        mask: *const libc::sigset_t,
    ) waits with mask;

    /// Interposed `__ppoll_chk` (`ppoll` under `_FORTIFY_SOURCE`): as [`ppoll`].
    fn __ppoll_chk(
        fds: *mut libc::pollfd,
        nfds: libc::nfds_t,
        timeout: *const libc::timespec,
        mask: *const libc::sigset_t,
        fdslen: size_t,
    ) waits with mask;

    /// Interposed `pselect`: as [`sigsuspend`] for the mask it waits with.
    fn pselect(
        nfds: c_int,
        r: *mut libc::fd_set,
        w: *mut libc::fd_set,
        e: *mut libc::fd_set,
        timeout: *const libc::timespec,
        mask: *const libc::sigset_t,
    ) waits with mask;

    /// Interposed `epoll_pwait`: as [`sigsuspend`] for the mask it waits with.
    fn epoll_pwait(
        epfd: c_int,
        events: *mut libc::epoll_event,
        maxevents: c_int,
        timeout: c_int,
        mask: *const libc::sigset_t,
    ) waits with mask;

    /// Interposed `epoll_pwait2`: as [`sigsuspend`] for the mask it waits with.
    fn epoll_pwait2(
        epfd: c_int,
        events: *mut libc::epoll_event,
        maxevents: c_int,
        timeout: *const libc::timespec,
        mask: *const libc::sigset_t,
    ) waits with mask;
}

/// Interposed `fork`: the child starts with fresh per-thread state (its own rings).
#[no_mangle]
pub unsafe extern "C" fn fork() -> libc::pid_t {
    let p = real(&real::fork, "fork\0");
    // SAFETY: libc's fork.
    let pid = unsafe { std::mem::transmute::<usize, unsafe extern "C" fn() -> libc::pid_t>(p)() };
    if pid == 0 {
        tracer::after_fork_child();
        tracer::after_fork_child_started();
    }
    pid
}

/// Interposed `close`: the recorder's shared-memory fd stays open (programs that close
/// every descriptor at start-up would otherwise cut the channel for their children), and
/// so do the tracer's `/proc/self/task` descriptor (the step's pause scan needs it) and
/// the read end of the recorder's liveness pipe (waiting producers poll it).
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if fd >= 0 && (tracer_fds().contains(&fd) || tracer::regions::is_alias_fd(fd)) {
        return 0;
    }
    let p = real(&real::close, "close\0");
    // SAFETY: libc's close.
    unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(c_int) -> c_int>(p)(fd) }
}

/// The tracer's descriptors in this process (-1 where it has none).
fn tracer_fds() -> [c_int; 6] {
    let p = tracer::patch_fds();
    [
        tracer::shm_fd().unwrap_or(-1),
        tracer::task_fd().unwrap_or(-1),
        tracer::live_fd().unwrap_or(-1),
        p[0],
        p[1],
        p[2],
    ]
}

/// Interposed `close_range`: closes (or marks close-on-exec) the range around the
/// tracer's descriptors, as `close` spares them. Programs and spawn helpers call
/// `close_range(3, ~0U, 0)` before `exec`; without this the image they exec would not
/// find the recorder's memfd and would run untraced.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let Some(p) = real_or_enosys(&real::close_range, "close_range\0") else {
        return -1;
    };
    // SAFETY: libc's close_range.
    let f = unsafe {
        std::mem::transmute::<usize, unsafe extern "C" fn(c_uint, c_uint, c_int) -> c_int>(p)
    };
    if first > last {
        // SAFETY: as above; the kernel reports the bad range.
        return unsafe { f(first, last, flags) };
    }
    // The tracer's descriptors and its alias descriptors (one per device file the
    // program mapped).
    let mut ours = [-1; 6 + tracer::regions::MAX_ALIAS_FDS];
    ours[..6].copy_from_slice(&tracer_fds());
    let n = 6 + tracer::regions::alias_fds(&mut ours[6..]);
    let ours = &mut ours[..n];
    ours.sort_unstable();
    let mut lo = first as u64;
    for &fd in ours.iter() {
        if fd < 0 || (fd as u64) < lo || fd as u64 > last as u64 {
            continue;
        }
        if fd as u64 > lo {
            // SAFETY: as above, on the part of the range below `fd`.
            let r = unsafe { f(lo as c_uint, fd as c_uint - 1, flags) };
            if r != 0 {
                return r;
            }
        }
        lo = fd as u64 + 1;
    }
    if lo <= last as u64 {
        // SAFETY: as above, on the rest of the range.
        return unsafe { f(lo as c_uint, last, flags) };
    }
    0
}

/// Interposed `closefrom`: `close_range(lowfd, ~0U, 0)` through the hook above (which
/// spares the tracer's descriptors); where the kernel has no `close_range`, one `close`
/// at a time up to the descriptor limit.
#[no_mangle]
pub unsafe extern "C" fn closefrom(lowfd: c_int) {
    let low = lowfd.max(0);
    // SAFETY: our own hook, with a valid range.
    if unsafe { close_range(low as c_uint, c_uint::MAX, 0) } == 0 {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out pointer.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 20) as c_int
    } else {
        1 << 16
    };
    for fd in low..max {
        // SAFETY: our own hook.
        unsafe { close(fd) };
    }
}

/// Moves the tracer's descriptor numbered `fd`, if it is one, to another number: the
/// program is about to make `fd` something else (`dup2`/`dup3` onto it). The old number
/// is left to the program's call, which replaces it atomically. Not in a `vfork` child,
/// which shares the parent's memory (recording the new number would mislead the parent)
/// but not its descriptor table.
fn evacuate(fd: c_int) {
    if fd >= 0 && tracer::owns_state() {
        tracer::regions::evacuate_alias_fd(fd);
        tracer::patch_evacuate(fd);
    }
    if fd < 0 || !tracer_fds().contains(&fd) || !tracer::owns_state() {
        return;
    }
    let moved = |cloexec: bool| {
        let cmd = if cloexec {
            libc::F_DUPFD_CLOEXEC
        } else {
            libc::F_DUPFD
        };
        // High numbers first: programs that lay out descriptors use the low ones.
        [200, 3].into_iter().find_map(|min| {
            // SAFETY: duplicating a descriptor of ours.
            let n = unsafe { libc::fcntl(fd, cmd, min) };
            (n >= 0).then_some(n)
        })
    };
    if tracer::shm_fd() == Some(fd) {
        // Inherited across exec, like the original; its new number goes in the
        // environment.
        if let Some(n) = moved(false) {
            tracer::set_shm_fd(n);
            renumber_environ(tracer::ENV_FD, n, &SHM_FD_VAR);
        }
    }
    if tracer::task_fd() == Some(fd) {
        if let Some(n) = moved(true) {
            tracer::set_task_fd(n);
        }
    }
    if tracer::live_fd() == Some(fd) {
        if let Some(n) = moved(false) {
            tracer::set_live_fd(n);
            renumber_environ(tracer::ENV_LIVE_FD, n, &LIVE_FD_VAR);
        }
    }
}

/// `MMIO_TRACE_SHM_FD=n` and `MMIO_TRACE_LIVE_FD=n` for the process environment once
/// their descriptors have moved: static, as `environ` entries must outlive every use.
static SHM_FD_VAR: [AtomicU8; 48] = [const { AtomicU8::new(0) }; 48];
static LIVE_FD_VAR: [AtomicU8; 48] = [const { AtomicU8::new(0) }; 48];

extern "C" {
    static mut environ: *mut *mut c_char;
}

/// Points the process environment's `name=` entry at `name=fd` (built in `var`), so that
/// images exec'd with `environ` by calls we do not interpose (`execv`, `execl`,
/// `system`, ... call libc's internal `execve`) find the moved descriptor. Replacing
/// the entry's pointer is what `putenv` does; a concurrent `getenv` sees the old entry
/// or the new one.
fn renumber_environ(name: &str, fd: c_int, var: &'static [AtomicU8; 48]) {
    let mut buf = [0u8; 48];
    fd_var(&mut buf, name.as_bytes(), fd);
    for (v, b) in var.iter().zip(buf) {
        v.store(b, Ordering::Relaxed);
    }
    std::sync::atomic::fence(Ordering::Release);
    let entry = var[0].as_ptr() as *mut c_char;
    // SAFETY: libc's environment: a NULL-terminated array of C strings (or null).
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let e = CStr::from_ptr(*p).to_bytes();
            if e.len() > name.len() && e.starts_with(name.as_bytes()) && e[name.len()] == b'=' {
                *p = entry;
            }
            p = p.add(1);
        }
    }
}

/// Interposed `dup2`: a target that is one of the tracer's descriptors is moved first.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old != new {
        evacuate(new);
    }
    let p = real(&real::dup2, "dup2\0");
    // SAFETY: libc's dup2.
    unsafe {
        std::mem::transmute::<usize, unsafe extern "C" fn(c_int, c_int) -> c_int>(p)(old, new)
    }
}

/// Interposed `dup3`: as `dup2`.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if old != new {
        evacuate(new);
    }
    let p = real(&real::dup3, "dup3\0");
    // SAFETY: libc's dup3.
    unsafe {
        std::mem::transmute::<usize, unsafe extern "C" fn(c_int, c_int, c_int) -> c_int>(p)(
            old, new, flags,
        )
    }
}

/// `NAME=value` strings of the variables a traced image needs, captured at start-up.
static ENV: std::sync::OnceLock<Vec<std::ffi::CString>> = std::sync::OnceLock::new();

fn saved_env() -> Vec<std::ffi::CString> {
    std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            k == "LD_PRELOAD" || k.starts_with("MMIO_TRACE_")
        })
        .filter_map(|(k, v)| {
            let mut s = k.into_encoded_bytes();
            s.push(b'=');
            s.extend_from_slice(v.as_encoded_bytes());
            std::ffi::CString::new(s).ok()
        })
        .filter(|v| {
            !v.as_bytes()
                .starts_with(tracer::uaccess::ENV_EXECED.as_bytes())
        })
        .chain(exec::execed_var())
        .collect()
}

type ExecveFn =
    unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;

/// Entries of a patched environment (more are dropped).
const ENV_MAX: usize = 2048;

/// A patched environment, built on the caller's stack: no allocation (exec may run in a
/// `vfork` child, where `malloc` is off limits).
struct EnvPatch {
    ptrs: [*const c_char; ENV_MAX],
    /// `LD_PRELOAD=ours:theirs`, when the program set its own.
    preload: [u8; 4096],
    /// `MMIO_TRACE_SHM_FD=n` and `MMIO_TRACE_LIVE_FD=n` with the numbers the descriptors
    /// have now (they move when the program reuses theirs: see `evacuate`).
    fds: [[u8; 48]; 2],
}

impl EnvPatch {
    fn new() -> Self {
        EnvPatch {
            ptrs: [std::ptr::null(); ENV_MAX],
            preload: [0; 4096],
            fds: [[0; 48]; 2],
        }
    }
}

/// The key (`NAME=`) of an environment entry.
/// `NAME=fd` as a C string in `buf`, without allocating.
fn fd_var(buf: &mut [u8; 48], name: &[u8], fd: c_int) -> *const c_char {
    let mut digits = [0u8; 64];
    let d = tracer::sys::digits(fd.unsigned_abs() as u64, 10, &mut digits);
    buf[..name.len()].copy_from_slice(name);
    buf[name.len()] = b'=';
    buf[name.len() + 1..name.len() + 1 + d.len()].copy_from_slice(d);
    buf[name.len() + 1 + d.len()] = 0;
    buf.as_ptr() as *const c_char
}

fn env_key(e: &[u8]) -> &[u8] {
    e.iter().position(|&c| c == b'=').map_or(e, |p| &e[..=p])
}

/// `envp` with the variables a traced image needs: the recorder's `MMIO_TRACE_*` replace
/// the program's, and our library is prepended to the program's own `LD_PRELOAD` (kept
/// as is when it already lists ours). Returns `envp` itself when tracing is off.
///
/// # Safety
/// `envp` must be null or a NULL-terminated array of C strings.
unsafe fn patch_env(envp: *const *const c_char, out: &mut EnvPatch) -> *const *const c_char {
    let ours = match ENV.get() {
        Some(v) if INITIALISED.load(Ordering::Acquire) => v,
        _ => return envp,
    };
    // An environment that cannot be read whole (a bad pointer): passed on as it is, for
    // the exec to fail with EFAULT, as natively.
    if !tracer::uaccess::strings_readable(envp.cast(), 8 << 20) {
        return envp;
    }
    // The kernel runs a NULL environment as an empty one: so do we, plus our variables.
    static EMPTY: [usize; 1] = [0];
    let envp = if envp.is_null() {
        EMPTY.as_ptr() as *const *const c_char
    } else {
        envp
    };
    const PRELOAD: &[u8] = b"LD_PRELOAD=";
    // Our library: the first element of the LD_PRELOAD the recorder gave us.
    let our_lib = ours
        .iter()
        .map(|o| o.as_bytes())
        .find(|o| o.starts_with(PRELOAD))
        .map(|o| {
            let v = &o[PRELOAD.len()..];
            let n = v
                .iter()
                .position(|&c| c == b':' || c == b' ')
                .unwrap_or(v.len());
            &v[..n]
        })
        .filter(|l| !l.is_empty());
    let mut preload_done = false;
    let mut n = 0;
    let mut i = 0;
    loop {
        // SAFETY: envp is a NULL-terminated array.
        let e = unsafe { *envp.add(i) };
        if e.is_null() {
            break;
        }
        i += 1;
        // SAFETY: each entry is a C string.
        let bytes = unsafe { CStr::from_ptr(e) }.to_bytes();
        let mut entry = e;
        if let (Some(lib), Some(theirs)) = (our_lib, bytes.strip_prefix(PRELOAD)) {
            if preload_done {
                continue;
            }
            preload_done = true;
            let listed = theirs.split(|&c| c == b':' || c == b' ').any(|x| x == lib);
            let len = PRELOAD.len() + lib.len() + 1 + theirs.len();
            if !listed && len < out.preload.len() {
                let b = &mut out.preload;
                b[..PRELOAD.len()].copy_from_slice(PRELOAD);
                b[PRELOAD.len()..PRELOAD.len() + lib.len()].copy_from_slice(lib);
                b[PRELOAD.len() + lib.len()] = b':';
                b[PRELOAD.len() + lib.len() + 1..len].copy_from_slice(theirs);
                b[len] = 0;
                entry = b.as_ptr() as *const c_char;
            } else if !listed {
                // Too long to extend: ours alone (added below).
                preload_done = false;
                continue;
            }
        } else if ours
            .iter()
            .any(|o| !o.as_bytes().starts_with(PRELOAD) && bytes.starts_with(env_key(o.as_bytes())))
        {
            continue;
        }
        if n < ENV_MAX - ours.len() - 1 {
            out.ptrs[n] = entry;
            n += 1;
        }
    }
    // The descriptors' numbers now (they may have moved since start-up).
    let moved = [
        (tracer::ENV_FD, tracer::shm_fd().unwrap_or(-1)),
        (tracer::ENV_LIVE_FD, tracer::live_fd().unwrap_or(-1)),
    ];
    for o in ours {
        if preload_done && o.as_bytes().starts_with(PRELOAD) {
            continue;
        }
        let key = env_key(o.as_bytes());
        let mut entry = o.as_ptr();
        for (slot, (name, fd)) in moved.into_iter().enumerate() {
            if key.strip_suffix(b"=") == Some(name.as_bytes()) && fd >= 0 {
                entry = fd_var(&mut out.fds[slot], name.as_bytes(), fd);
            }
        }
        if n < ENV_MAX - 1 {
            out.ptrs[n] = entry;
            n += 1;
        }
    }
    out.ptrs.as_ptr()
}

/// Calls the real `execve` or `execvpe` (resolved from `slot`) with our variables added
/// to the environment. No allocation (this may run in a `vfork` child).
///
/// # Safety
/// The caller's arguments, as for `execve`.
unsafe fn exec_patched(
    slot: &AtomicUsize,
    name: &str,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let p = real(slot, name);
    let mut env = EnvPatch::new();
    // SAFETY: the caller's path, a C string (or null: the call fails); `execvpe` looks
    // a name without `/` up in PATH.
    let _note = unsafe { exec::ExecNote::new(path, name.starts_with("execvpe")) };
    // SAFETY: the caller's environment; then libc's function with the patched one, whose
    // strings outlive the call.
    unsafe { std::mem::transmute::<usize, ExecveFn>(p)(path, argv, patch_env(envp, &mut env)) }
}

with_real! {
    /// Interposed `execve`: an environment passed explicitly keeps our variables, so the new
    /// image is traced too. No allocation (this may run in a `vfork` child).
    fn execve(
        path: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int = exec_patched;

    /// Interposed `execvpe` (glibc's calls its internal `execve`, not ours).
    fn execvpe(
        file: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int = exec_patched;
}

/// Interposed `execveat`.
#[no_mangle]
pub unsafe extern "C" fn execveat(
    dirfd: c_int,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    flags: c_int,
) -> c_int {
    type F = unsafe extern "C" fn(
        c_int,
        *const c_char,
        *const *const c_char,
        *const *const c_char,
        c_int,
    ) -> c_int;
    let Some(p) = real_or_enosys(&real::execveat, "execveat\0") else {
        return -1;
    };
    let mut env = EnvPatch::new();
    // SAFETY: the caller's path, a C string (or null: the call fails); an empty one with
    // `AT_EMPTY_PATH` names the file `dirfd` is.
    let _note = unsafe { exec::ExecNote::at(dirfd, path, flags) };
    // SAFETY: as in `execve`.
    unsafe {
        std::mem::transmute::<usize, F>(p)(dirfd, path, argv, patch_env(envp, &mut env), flags)
    }
}

/// Interposed `fexecve`.
#[no_mangle]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    type F = unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char) -> c_int;
    let p = real(&real::fexecve, "fexecve\0");
    let mut env = EnvPatch::new();
    let _note = exec::ExecNote::fd(fd);
    // SAFETY: as in `execve`.
    unsafe { std::mem::transmute::<usize, F>(p)(fd, argv, patch_env(envp, &mut env)) }
}

type PosixSpawnFn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const c_char,
    *const c_void,
    *const c_void,
    *const *const c_char,
    *const *const c_char,
) -> c_int;

/// Calls the real `posix_spawn` or `posix_spawnp` (`real` resolved from `slot`) with our
/// library added to the child's environment.
///
/// # Safety
/// The caller's arguments, as for `posix_spawn`.
// posix_spawn's own six arguments plus which real function to call.
#[allow(clippy::too_many_arguments)]
unsafe fn spawn_patched(
    slot: &AtomicUsize,
    name: &str,
    pid: *mut libc::pid_t,
    path: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let p = real(slot, name);
    let mut env = EnvPatch::new();
    // SAFETY: the caller's path, a C string (or null).
    let handed = unsafe { exec::spawn_hand_off(path, name.starts_with("posix_spawnp")) };
    let since = tracer::uaccess::now();
    // SAFETY: as in `execve`.
    let r = unsafe {
        std::mem::transmute::<usize, PosixSpawnFn>(p)(
            pid,
            path,
            actions,
            attr,
            argv,
            patch_env(envp, &mut env),
        )
    };
    if !handed {
        // SAFETY: the caller's pid pointer (may be null) and path.
        unsafe { exec::spawned(r, pid, since, path) };
    }
    r
}

with_real! {
    /// Interposed `posix_spawn` (glibc's child calls its internal `execve`, not ours).
    fn posix_spawn(
        pid: *mut libc::pid_t,
        path: *const c_char,
        actions: *const c_void,
        attr: *const c_void,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int = spawn_patched;

    /// Interposed `posix_spawnp`.
    fn posix_spawnp(
        pid: *mut libc::pid_t,
        file: *const c_char,
        actions: *const c_void,
        attr: *const c_void,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int = spawn_patched;
}

/// Arguments `execle` can take under the tracer (more: `E2BIG`).
const EXECLE_MAX: usize = 61;

/// Interposed `execle(path, arg0, ..., NULL, envp)`, variadic in C. Stable Rust cannot
/// define a variadic function, so this one has a fixed number of integer parameters: in
/// the x86-64 SysV ABI variadic and fixed integer arguments are passed alike (registers,
/// then the caller's stack), so parameter k is argument k when the caller passed that
/// many; those past the caller's (after envp) read its stack frame and are ignored. At most
/// 61 arguments (`EXECLE_MAX`) before the NULL.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn execle(
    path: *const c_char,
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
    a7: usize,
    a8: usize,
    a9: usize,
    a10: usize,
    a11: usize,
    a12: usize,
    a13: usize,
    a14: usize,
    a15: usize,
    a16: usize,
    a17: usize,
    a18: usize,
    a19: usize,
    a20: usize,
    a21: usize,
    a22: usize,
    a23: usize,
    a24: usize,
    a25: usize,
    a26: usize,
    a27: usize,
    a28: usize,
    a29: usize,
    a30: usize,
    a31: usize,
    a32: usize,
    a33: usize,
    a34: usize,
    a35: usize,
    a36: usize,
    a37: usize,
    a38: usize,
    a39: usize,
    a40: usize,
    a41: usize,
    a42: usize,
    a43: usize,
    a44: usize,
    a45: usize,
    a46: usize,
    a47: usize,
    a48: usize,
    a49: usize,
    a50: usize,
    a51: usize,
    a52: usize,
    a53: usize,
    a54: usize,
    a55: usize,
    a56: usize,
    a57: usize,
    a58: usize,
    a59: usize,
    a60: usize,
    a61: usize,
    a62: usize,
) -> c_int {
    let args: [usize; 63] = [
        a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19,
        a20, a21, a22, a23, a24, a25, a26, a27, a28, a29, a30, a31, a32, a33, a34, a35, a36, a37,
        a38, a39, a40, a41, a42, a43, a44, a45, a46, a47, a48, a49, a50, a51, a52, a53, a54, a55,
        a56, a57, a58, a59, a60, a61, a62,
    ];
    let Some(end) = args
        .iter()
        .position(|&a| a == 0)
        .filter(|&e| e <= EXECLE_MAX)
    else {
        set_errno(libc::E2BIG);
        return -1;
    };
    let Some(&envp) = args.get(end + 1) else {
        set_errno(libc::E2BIG);
        return -1;
    };
    let mut argv = [std::ptr::null::<c_char>(); EXECLE_MAX + 1];
    for (d, &a) in argv.iter_mut().zip(&args[..end]) {
        *d = a as *const c_char;
    }
    // SAFETY: the caller's path, NULL-terminated argument list and environment.
    unsafe { execve(path, argv.as_ptr(), envp as *const *const c_char) }
}

struct Start {
    f: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
}

extern "C" fn thread_trampoline(p: *mut c_void) -> *mut c_void {
    // SAFETY: made by Box::into_raw in pthread_create below.
    let Start { f, arg } = *unsafe { Box::from_raw(p as *mut Start) };
    signals::thread_start();
    let armed = arm_end_hook();
    // Nothing to drop in this frame across the call: a cancelled thread unwinds through it.
    let r = f(arg);
    if !armed {
        end_hooks();
    }
    r
}

/// The pthread key whose destructor runs the thread end hooks (`u32::MAX`: none).
static END_KEY: AtomicU32 = AtomicU32::new(u32::MAX);

/// Creates [`END_KEY`] (constructor).
fn create_end_key() {
    let mut k: libc::pthread_key_t = 0;
    // SAFETY: a valid out pointer; the destructor stays valid (never unloaded).
    if unsafe { libc::pthread_key_create(&mut k, Some(end_hook_dtor)) } == 0 {
        END_KEY.store(k, Ordering::Release);
    }
}

/// Makes the calling thread run the end hooks from [`END_KEY`]'s destructor: destructors
/// run however the thread ends (return, `pthread_exit`, cancellation) and after those of
/// keys made earlier, so a device access in another destructor is covered too (see
/// [`end_hook_dtor`]). `false`: the caller runs them itself.
fn arm_end_hook() -> bool {
    let k = END_KEY.load(Ordering::Acquire);
    // SAFETY: a key of ours; any non-null value arms the destructor.
    k != u32::MAX && unsafe { libc::pthread_setspecific(k, std::ptr::dangling::<c_void>()) } == 0
}

/// The thread end hooks: ring retired, alternate stack unmapped, slots freed.
fn end_hooks() {
    tracer::threads::thread_exiting();
}

/// [`END_KEY`]'s destructor. A device access in a destructor run after this one takes a
/// fresh slot and ring; re-arming makes glibc run another round of destructors (at most
/// `PTHREAD_DESTRUCTOR_ITERATIONS`), which frees them again. A round that finds no slot
/// stops re-arming.
extern "C" fn end_hook_dtor(_: *mut c_void) {
    let had = tracer::threads::has_slot();
    end_hooks();
    if had {
        arm_end_hook();
    }
}

type PthreadCreateFn = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    extern "C" fn(*mut c_void) -> *mut c_void,
    *mut c_void,
) -> c_int;

/// Interposed `pthread_create`: the new thread gets an alternate signal stack and a
/// clean per-thread slot before running the program's function.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    t: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    f: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> c_int {
    let p = real(&real::pthread_create, "pthread_create\0");
    // SAFETY: libc's pthread_create.
    let real_fn = unsafe { std::mem::transmute::<usize, PthreadCreateFn>(p) };
    if !INITIALISED.load(Ordering::Acquire) {
        // SAFETY: the caller's arguments.
        return unsafe { real_fn(t, attr, f, arg) };
    }
    let s = Box::into_raw(Box::new(Start { f, arg }));
    // SAFETY: the trampoline takes ownership of `s`.
    let r = unsafe { real_fn(t, attr, thread_trampoline, s as *mut c_void) };
    if r != 0 {
        // SAFETY: the thread was not created; we still own `s`.
        drop(unsafe { Box::from_raw(s) });
    }
    r
}

/// Interposed `ioctl` (variadic in C; on x86-64 the third argument arrives in a fixed
/// integer parameter whatever its type).
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: libc::c_ulong, arg: *mut c_void) -> c_int {
    let p = real(&real::ioctl, "ioctl\0");
    // SAFETY: libc's ioctl with the caller's arguments (an argument in device memory
    // handed over through its alias).
    let r = unsafe { sysbuf::ioctl(p, fd, request, arg) };
    if r >= 0
        && request == tracer::vfio::VFIO_GROUP_GET_DEVICE_FD
        && !arg.is_null()
        && INITIALISED.load(Ordering::Acquire)
    {
        // SAFETY: this request's argument is the device name, a C string.
        if let Ok(name) = unsafe { CStr::from_ptr(arg as *const c_char) }.to_str() {
            tracer::vfio::device_fd_opened(r, name);
        }
    }
    r
}

/// Interposed `pthread_setcanceltype`: a thread that may be cancelled at any instruction
/// takes the trap path for every access (its signal mask holds the cancellation off
/// while an access and its event are made; a trampoline cannot).
#[no_mangle]
pub unsafe extern "C" fn pthread_setcanceltype(kind: c_int, old: *mut c_int) -> c_int {
    // glibc's PTHREAD_CANCEL_ASYNCHRONOUS.
    const ASYNC: c_int = 1;
    let p = real(&real::pthread_setcanceltype, "pthread_setcanceltype\0");
    let hooked = INITIALISED.load(Ordering::Acquire);
    // Trampolines off before cancellation can strike anywhere; on again only after.
    if hooked && kind == ASYNC {
        tracer::threads::set_async_cancel(true);
    }
    // SAFETY: libc's pthread_setcanceltype with the caller's arguments.
    let r = unsafe {
        std::mem::transmute::<usize, unsafe extern "C" fn(c_int, *mut c_int) -> c_int>(p)(kind, old)
    };
    if hooked && r == 0 && kind != ASYNC {
        tracer::threads::set_async_cancel(false);
    }
    r
}

/// Interposed `pthread_exit`: the thread's ring is retired first.
#[no_mangle]
pub unsafe extern "C" fn pthread_exit(ret: *mut c_void) -> ! {
    let k = END_KEY.load(Ordering::Acquire);
    // SAFETY: reading a key of ours.
    let armed = k != u32::MAX && !unsafe { libc::pthread_getspecific(k) }.is_null();
    if INITIALISED.load(Ordering::Acquire) && !armed {
        // The thread's end hooks do not run from the key destructor: run them now.
        end_hooks();
    }
    let p = real(&real::pthread_exit, "pthread_exit\0");
    // SAFETY: libc's pthread_exit, which does not return.
    unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void) -> !>(p)(ret) }
}

/// Interposed `_exit`: the process ends without exit handlers; tell the recorder first
/// what the `atexit` handler would have.
#[no_mangle]
pub unsafe extern "C" fn _exit(status: c_int) -> ! {
    if INITIALISED.load(Ordering::Acquire) {
        tracer::before_exit();
        tracer::unmatched::flush();
    }
    let p = real(&real::_exit, "_exit\0");
    if p == 0 {
        // SAFETY: exit_group ends the process.
        unsafe { libc::syscall(libc::SYS_exit_group, status) };
    }
    // SAFETY: libc's _exit, which does not return.
    unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(c_int) -> !>(p)(status) }
}

/// Interposed `_Exit`: as [`_exit`].
#[no_mangle]
pub unsafe extern "C" fn _Exit(status: c_int) -> ! {
    if INITIALISED.load(Ordering::Acquire) {
        tracer::before_exit();
        tracer::unmatched::flush();
    }
    let p = real(&real::_Exit, "_Exit\0");
    if p == 0 {
        // SAFETY: exit_group ends the process.
        unsafe { libc::syscall(libc::SYS_exit_group, status) };
    }
    // SAFETY: libc's _Exit, which does not return.
    unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(c_int) -> !>(p)(status) }
}

/// C API: inserts a `MARK` line with `text` into the trace, timed now, from this thread.
#[no_mangle]
pub unsafe extern "C" fn mmio_trace_mark(text: *const c_char) {
    if text.is_null() {
        return;
    }
    // SAFETY: the caller passes a C string.
    let t = unsafe { CStr::from_ptr(text) };
    tracer::mark(t.to_bytes());
}

mod exec;
mod sysbuf;
mod tls;
