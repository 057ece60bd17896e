//! `libmmio_trace_preload.so`: the library `mmio-trace record` injects with `LD_PRELOAD`.
//!
//! A thin shim: it interposes the libc functions through which a program maps device
//! memory and handles signals, and forwards to `mmio-trace-tracer`:
//!
//! | symbol | why |
//! |---|---|
//! | `mmap`, `mmap64` | trace new device mappings (after the real call) |
//! | `munmap`, `mremap`, `mprotect` | keep traced regions right when the program changes them |
//! | `sigaction`, `signal` | the tracer owns SIGSEGV/SIGTRAP; the program's handlers are chained |
//! | `sigprocmask`, `pthread_sigmask` | the tracer's signals stay deliverable (a blocked SIGSEGV on a traced access would kill the program) |
//! | `fork` | the child gets fresh per-thread state and rings |
//! | `pthread_create`, `pthread_exit` | per-thread alternate signal stack; ring retired at thread end |
//! | `ioctl` | which PCI device a VFIO device fd is (`VFIO_GROUP_GET_DEVICE_FD`), for MAP's physical address |
//! | `close` | the program may not close the recorder's shared-memory fd |
//! | `execve` | the new image keeps `LD_PRELOAD` and the recorder's variables |
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

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use libc::{off_t, size_t};
use mmio_trace_tracer::{self as tracer, signals, sys};

static INITIALISED: AtomicBool = AtomicBool::new(false);
/// The recorder's shared-memory fd (-1: none), cached so `close` stays allocation-free.
static SHM_FD: AtomicI32 = AtomicI32::new(-1);

macro_rules! reals {
    ($($name:ident),* $(,)?) => {
        #[allow(non_upper_case_globals)]
        mod real {
            use std::sync::atomic::AtomicUsize;
            $(pub static $name: AtomicUsize = AtomicUsize::new(0);)*
        }
        fn resolve_all() {
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
    execve,
    pthread_create,
    pthread_exit,
    ioctl
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

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    resolve_all();
    ENV.get_or_init(saved_env);
    if tracer::init_from_env() {
        SHM_FD.store(tracer::shm_fd().unwrap_or(-1), Ordering::Relaxed);
        INITIALISED.store(true, Ordering::Release);
    }
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

/// Interposed `mmap`.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    // SAFETY: forwarding the caller's arguments.
    unsafe { do_mmap(&real::mmap, "mmap\0", addr, len, prot, flags, fd, off) }
}

/// Interposed `mmap64` (the same function on x86-64).
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    // SAFETY: forwarding the caller's arguments.
    unsafe { do_mmap(&real::mmap64, "mmap64\0", addr, len, prot, flags, fd, off) }
}

/// Interposed `munmap`.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: size_t) -> c_int {
    tracer::before_munmap(addr as u64, len as u64, 0);
    // SAFETY: the caller's arguments, straight to the kernel (munmap is a plain syscall).
    let r = unsafe { sys::munmap(addr as usize, len) };
    if r < 0 {
        set_errno(-r as c_int);
        return -1;
    }
    0
}

/// Interposed `mprotect`: traced regions keep their pages closed; the program's protection
/// is enforced by the fault path instead.
#[no_mangle]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: size_t, prot: c_int) -> c_int {
    if let Some(rc) = tracer::mprotect(addr as u64, len as u64, prot) {
        return rc;
    }
    // SAFETY: the caller's arguments.
    let r = unsafe { sys::mprotect(addr as usize, len, prot) };
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

/// Interposed `sigaction`: SIGSEGV, SIGTRAP and the tracer's pause signal are virtualised.
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
    // SAFETY: libc's sigaction with the caller's arguments.
    unsafe { std::mem::transmute::<usize, SigactionFn>(p)(sig, act, old) }
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
        for sig in [libc::SIGSEGV, libc::SIGTRAP, signals::PAUSE_SIGNAL] {
            libc::sigdelset(buf, sig);
        }
    }
    buf
}

/// Interposed `sigprocmask`: never blocks the tracer's signals.
#[no_mangle]
pub unsafe extern "C" fn sigprocmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    // SAFETY: zeroed sigset_t is valid.
    let mut buf: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the caller's pointers.
    let set = unsafe { without_ours(how, set, &mut buf) };
    let p = real(&real::sigprocmask, "sigprocmask\0");
    // SAFETY: libc's sigprocmask.
    unsafe { std::mem::transmute::<usize, SigmaskFn>(p)(how, set, old) }
}

/// Interposed `pthread_sigmask`: never blocks the tracer's signals.
#[no_mangle]
pub unsafe extern "C" fn pthread_sigmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    // SAFETY: zeroed sigset_t is valid.
    let mut buf: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the caller's pointers.
    let set = unsafe { without_ours(how, set, &mut buf) };
    let p = real(&real::pthread_sigmask, "pthread_sigmask\0");
    // SAFETY: libc's pthread_sigmask.
    unsafe { std::mem::transmute::<usize, SigmaskFn>(p)(how, set, old) }
}

/// Interposed `fork`: the child starts with fresh per-thread state (its own rings).
#[no_mangle]
pub unsafe extern "C" fn fork() -> libc::pid_t {
    let p = real(&real::fork, "fork\0");
    // SAFETY: libc's fork.
    let pid = unsafe { std::mem::transmute::<usize, unsafe extern "C" fn() -> libc::pid_t>(p)() };
    if pid == 0 {
        tracer::after_fork_child();
    }
    pid
}

/// Interposed `close`: the recorder's shared-memory fd stays open (programs that close
/// every descriptor at start-up would otherwise cut the channel for their children).
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if fd >= 0 && SHM_FD.load(Ordering::Relaxed) == fd {
        return 0;
    }
    let p = real(&real::close, "close\0");
    // SAFETY: libc's close.
    unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(c_int) -> c_int>(p)(fd) }
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
        .collect()
}

type ExecveFn =
    unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;

/// Interposed `execve`: an environment passed explicitly keeps our variables, so the new
/// image is traced too. No allocation (this may run in a `vfork` child).
#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let p = real(&real::execve, "execve\0");
    // SAFETY: libc's execve.
    let f = unsafe { std::mem::transmute::<usize, ExecveFn>(p) };
    let ours = match ENV.get() {
        Some(v) if INITIALISED.load(Ordering::Acquire) && !envp.is_null() => v,
        // SAFETY: the caller's arguments.
        _ => return unsafe { f(path, argv, envp) },
    };
    const MAX: usize = 2048;
    let mut env = [std::ptr::null::<c_char>(); MAX];
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
        let overridden = ours.iter().any(|o| {
            let ob = o.as_bytes();
            let k = ob.iter().position(|&c| c == b'=').map_or(ob, |p| &ob[..=p]);
            bytes.starts_with(k)
        });
        if !overridden && n < MAX - ours.len() - 1 {
            env[n] = e;
            n += 1;
        }
    }
    for o in ours {
        if n < MAX - 1 {
            env[n] = o.as_ptr();
            n += 1;
        }
    }
    // SAFETY: a NULL-terminated array of C strings that outlive the call.
    unsafe { f(path, argv, env.as_ptr()) }
}

struct Start {
    f: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
}

extern "C" fn thread_trampoline(p: *mut c_void) -> *mut c_void {
    // SAFETY: made by Box::into_raw in pthread_create below.
    let s = unsafe { Box::from_raw(p as *mut Start) };
    signals::thread_start();
    let r = (s.f)(s.arg);
    tracer::threads::thread_exiting();
    r
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

type IoctlFn = unsafe extern "C" fn(c_int, libc::c_ulong, *mut c_void) -> c_int;

/// Interposed `ioctl` (variadic in C; on x86-64 the third argument arrives in a fixed
/// integer parameter whatever its type).
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: libc::c_ulong, arg: *mut c_void) -> c_int {
    let p = real(&real::ioctl, "ioctl\0");
    // SAFETY: libc's ioctl with the caller's arguments.
    let r = unsafe { std::mem::transmute::<usize, IoctlFn>(p)(fd, request, arg) };
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

/// Interposed `pthread_exit`: the thread's ring is retired first.
#[no_mangle]
pub unsafe extern "C" fn pthread_exit(ret: *mut c_void) -> ! {
    if INITIALISED.load(Ordering::Acquire) {
        tracer::threads::thread_exiting();
    }
    let p = real(&real::pthread_exit, "pthread_exit\0");
    // SAFETY: libc's pthread_exit, which does not return.
    unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void) -> !>(p)(ret) }
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
