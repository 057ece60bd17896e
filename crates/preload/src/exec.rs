//! Exec paths that take the process environment (`environ`): `execv`, `execvp`, `execl`,
//! `execlp`, `system`, `popen`. glibc's versions call its internal `execve`/`posix_spawn`,
//! not ours, with `environ` as it is: after `unsetenv("LD_PRELOAD")`, `clearenv()` or
//! `environ = NULL` the new image would run untraced. These go through our `execve`,
//! `execvpe` and `posix_spawn` instead, which put our variables back.
//!
//! And the exec notes: before an exec (after a spawn) the recorder is told which image
//! is to attach; one that never does (statically linked, set-uid...) is named in a
//! warning.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use mmio_trace_tracer::{exe_kind, handoff, sys, uaccess};

use super::{environ, real as real_of, resolve, set_errno, INITIALISED};

reals!(pclose, popen, system);

/// `MMIO_TRACE_EXECED=1`, for the saved variables every patched environment gets.
pub(crate) fn execed_var() -> Option<std::ffi::CString> {
    std::ffi::CString::new(format!("{}=1", uaccess::ENV_EXECED)).ok()
}

/// In the constructor, once tracing is on: an image exec'd by a traced process says it
/// attached.
pub(crate) fn attach() {
    if std::env::var_os(uaccess::ENV_EXECED).is_some() {
        uaccess::attached();
    }
}

/// The exec note of one exec call: written when made, withdrawn when dropped (the exec
/// returned: it failed). No allocation (this may run in a `vfork` child).
///
/// Before the note, the program to be run is judged ([`tracer::exe_kind`]): one the
/// library cannot follow (static, Go, set-uid...) is handed over to the recorder, which
/// then traces this thread by ptrace and takes over the new image at its exec. A handed
/// over exec writes no note (the new image never attaches, and need not); if it fails,
/// the recorder is told to let the thread go.
pub(crate) enum ExecNote {
    /// Nothing written (tracing off, or no path).
    None,
    /// The note is written.
    Noted,
    /// The recorder traces thread `tid` by ptrace.
    HandedOff(u32),
}

impl ExecNote {
    /// Notes an exec of `path`; `search`: `path` is a file name looked up in `PATH` when
    /// it has no `/` (`execvpe`).
    ///
    /// # Safety
    /// `path` is null or a C string.
    pub(crate) unsafe fn new(path: *const c_char, search: bool) -> ExecNote {
        if path.is_null() || !INITIALISED.load(Ordering::Acquire) {
            return ExecNote::None;
        }
        // A path the program cannot have meant (a bad pointer): the exec fails with
        // EFAULT, as natively.
        if uaccess::cstr_len(path.cast(), PATH_ARG_MAX).is_none() {
            return ExecNote::None;
        }
        // SAFETY: the caller's C string, readable to its NUL (just checked).
        let p = unsafe { CStr::from_ptr(path) }.to_bytes();
        let mut buf = [0u8; exe_kind::PATH_MAX + 1];
        let file = if search {
            search_path(p, &mut buf)
        } else {
            Some(p)
        };
        if let Some(note) = file.and_then(hand_off_path) {
            return note;
        }
        uaccess::exec_note(sys::getpid(), None, p);
        ExecNote::Noted
    }

    /// Notes an `execveat(dirfd, path, ..., flags)`: `path`, or with `AT_EMPTY_PATH` and
    /// an empty path the file `dirfd` is.
    ///
    /// # Safety
    /// `path` is null or a C string.
    pub(crate) unsafe fn at(dirfd: c_int, path: *const c_char, flags: c_int) -> ExecNote {
        if !path.is_null()
            && INITIALISED.load(Ordering::Acquire)
            && uaccess::cstr_len(path.cast(), PATH_ARG_MAX).is_none()
        {
            return ExecNote::None;
        }
        // SAFETY: the caller's C string.
        if !path.is_null() && flags & libc::AT_EMPTY_PATH != 0 && unsafe { *path } == 0 {
            return ExecNote::fd(dirfd);
        }
        // SAFETY: the caller's C string.
        if !path.is_null() && unsafe { *path } != b'/' as c_char && dirfd != libc::AT_FDCWD {
            // Relative to a directory descriptor: judged through /proc/self/fd/N/PATH.
            let mut buf = [0u8; exe_kind::PATH_MAX + 1];
            // SAFETY: as above.
            let p = unsafe { CStr::from_ptr(path) }.to_bytes();
            if let Some(note) = fd_relative(dirfd, p, &mut buf).and_then(hand_off_path) {
                return note;
            }
            if INITIALISED.load(Ordering::Acquire) {
                uaccess::exec_note(sys::getpid(), None, p);
                return ExecNote::Noted;
            }
            return ExecNote::None;
        }
        // SAFETY: as above.
        unsafe { ExecNote::new(path, false) }
    }

    /// Notes an exec of the file open as `fd` (`fexecve`): named by its path.
    pub(crate) fn fd(fd: c_int) -> ExecNote {
        if !INITIALISED.load(Ordering::Acquire) {
            return ExecNote::None;
        }
        if let Some(note) = hand_off(exe_kind::classify_fd(fd)) {
            return note;
        }
        let mut buf = [0u8; 512];
        let name = mmio_trace_tracer::rules::fd_path(fd, &mut buf).unwrap_or(b"(fexecve)");
        uaccess::exec_note(sys::getpid(), None, name);
        ExecNote::Noted
    }
}

impl Drop for ExecNote {
    fn drop(&mut self) {
        match *self {
            ExecNote::None => {}
            ExecNote::Noted => uaccess::exec_failed(),
            ExecNote::HandedOff(tid) => {
                if let Some(sock) = handoff_socket() {
                    handoff::ask(sock, handoff::Request::Release(tid));
                }
            }
        }
    }
}

/// The longest exec path read (the kernel's own limit is `PATH_MAX`; a longer one fails).
const PATH_ARG_MAX: usize = 1 << 16;

/// The recorder's hand-off socket, from the variables saved at start-up (the program
/// may have cleared its environment since).
fn handoff_socket() -> Option<&'static [u8]> {
    let key = handoff::ENV_HANDOFF.as_bytes();
    super::ENV.get()?.iter().find_map(|v| {
        let v = v.as_bytes().strip_prefix(key)?.strip_prefix(b"=")?;
        (!v.is_empty()).then_some(v)
    })
}

/// Asks the recorder to trace this thread by ptrace when `exe` needs that route; the
/// exec's note when it does.
fn hand_off(exe: exe_kind::Exe) -> Option<ExecNote> {
    exe.needs_ptrace()?;
    hand_off_now()
}

/// As [`hand_off`], for the program at `path` (no NUL), which must be a file we may
/// execute (an exec bound to fail hands nothing over).
fn hand_off_path(path: &[u8]) -> Option<ExecNote> {
    let mut buf = [0u8; exe_kind::PATH_MAX + 1];
    if path.len() > exe_kind::PATH_MAX {
        return None;
    }
    buf[..path.len()].copy_from_slice(path);
    buf[path.len()] = 0;
    if !is_executable_file(&buf[..=path.len()]) {
        return None;
    }
    hand_off(exe_kind::classify(path))
}

/// Asks the recorder to trace this thread by ptrace now.
fn hand_off_now() -> Option<ExecNote> {
    let sock = handoff_socket()?;
    let tid = sys::gettid();
    if handoff::ask(sock, handoff::Request::Seize(tid)) != Some(handoff::SEIZED) {
        return None;
    }
    uaccess::exec_handed_off();
    Some(ExecNote::HandedOff(tid))
}

/// Before a `posix_spawn` of `path` (`search`: `posix_spawnp`): a program only the ptrace
/// route reaches cannot be handed over at its exec (libc's child runs none of our code),
/// so this thread is, before the spawn: the recorder then follows the child it makes and
/// traces the program from its exec. This thread stays traced by ptrace afterwards (its
/// own accesses still go through this library, its signals through the recorder).
/// Returns whether it was handed over (the child then needs no exec note).
///
/// # Safety
/// `path` is null or a C string.
pub(crate) unsafe fn spawn_hand_off(path: *const c_char, search: bool) -> bool {
    if path.is_null()
        || !INITIALISED.load(Ordering::Acquire)
        || uaccess::cstr_len(path.cast(), PATH_ARG_MAX).is_none()
    {
        return false;
    }
    // SAFETY: the caller's C string, readable to its NUL (just checked).
    let p = unsafe { CStr::from_ptr(path) }.to_bytes();
    let mut buf = [0u8; exe_kind::PATH_MAX + 1];
    let file = if search {
        search_path(p, &mut buf)
    } else {
        Some(p)
    };
    let Some(file) = file else {
        return false;
    };
    let mut z = [0u8; exe_kind::PATH_MAX + 1];
    if file.len() > exe_kind::PATH_MAX {
        return false;
    }
    z[..file.len()].copy_from_slice(file);
    z[file.len()] = 0;
    if !is_executable_file(&z[..=file.len()]) || exe_kind::classify(file).needs_ptrace().is_none() {
        return false;
    }
    let Some(sock) = handoff_socket() else {
        return false;
    };
    handoff::ask(sock, handoff::Request::Seize(sys::gettid())) == Some(handoff::SEIZED)
}

/// `execvp`'s search for `file` in `PATH` (unset: glibc's default list), into `buf`:
/// the first executable regular file; `file` itself when it has a `/`.
fn search_path<'a>(file: &'a [u8], buf: &'a mut [u8; exe_kind::PATH_MAX + 1]) -> Option<&'a [u8]> {
    if file.contains(&b'/') {
        return Some(file);
    }
    if file.is_empty() {
        return None;
    }
    // SAFETY: getenv reads `environ` without allocating.
    let path = unsafe { libc::getenv(c"PATH".as_ptr()) };
    let path: &[u8] = if path.is_null() {
        b"/bin:/usr/bin"
    } else {
        // SAFETY: a C string from the environment.
        unsafe { CStr::from_ptr(path) }.to_bytes()
    };
    for dir in path.split(|&c| c == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let n = dir.len() + 1 + file.len();
        if n > exe_kind::PATH_MAX {
            continue;
        }
        buf[..dir.len()].copy_from_slice(dir);
        buf[dir.len()] = b'/';
        buf[dir.len() + 1..n].copy_from_slice(file);
        buf[n] = 0;
        if is_executable_file(&buf[..=n]) {
            return Some(&buf[..n]);
        }
    }
    None
}

/// `path` relative to directory descriptor `dirfd`, as `/proc/self/fd/N/path`.
fn fd_relative<'a>(
    dirfd: c_int,
    path: &[u8],
    buf: &'a mut [u8; exe_kind::PATH_MAX + 1],
) -> Option<&'a [u8]> {
    let mut digits = [0u8; 64];
    let d = sys::digits(dirfd.max(0) as u64, 10, &mut digits);
    let parts: [&[u8]; 4] = [b"/proc/self/fd/", d, b"/", path];
    let mut n = 0;
    for p in parts {
        if n + p.len() > exe_kind::PATH_MAX {
            return None;
        }
        buf[n..n + p.len()].copy_from_slice(p);
        n += p.len();
    }
    Some(&buf[..n])
}

/// Whether NUL-terminated `path` is a regular file we may execute.
fn is_executable_file(path: &[u8]) -> bool {
    // SAFETY: a zeroed stat is valid; NUL-terminated path; the kernel fills `st`.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        sys::syscall6(
            libc::SYS_newfstatat as usize,
            libc::AT_FDCWD as usize,
            path.as_ptr() as usize,
            &mut st as *mut _ as usize,
            0,
            0,
            0,
        ) == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
            && sys::syscall6(
                libc::SYS_access as usize,
                path.as_ptr() as usize,
                libc::X_OK as usize,
                0,
                0,
                0,
                0,
            ) == 0
    }
}

/// After a `posix_spawn` that returned `r`: notes the child's exec of `path`, timed
/// `since` (before the spawn: the child may have attached already).
///
/// # Safety
/// `pid` is null or the caller's pid pointer; `path` null or a C string.
pub(crate) unsafe fn spawned(r: c_int, pid: *const libc::pid_t, since: u64, path: *const c_char) {
    if r != 0 || pid.is_null() || path.is_null() || !INITIALISED.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: the caller's pointers.
    let (pid, p) = unsafe { (*pid, CStr::from_ptr(path).to_bytes()) };
    uaccess::exec_note(pid as u32, Some(since), p);
}

/// The process environment now.
fn env_now() -> *const *const c_char {
    // SAFETY: reading libc's `environ` pointer (null or a NULL-terminated array).
    unsafe { environ as *const *const c_char }
}

/// Interposed `execv`: `execve` with the process environment, through our `execve`.
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { super::execve(path, argv, env_now()) }
}

/// Interposed `execvp`: `execvpe` with the process environment, through our `execvpe`.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { super::execvpe(file, argv, env_now()) }
}

/// Arguments `execl`/`execlp` can take under the tracer (more: `E2BIG`).
const EXECL_MAX: usize = 62;

/// Defines a variadic `NAME(path, arg0, ..., NULL)` exec function as `execle` in the
/// parent module is: fixed integer parameters read the caller's registers and stack
/// alike in the x86-64 SysV ABI; those past the caller's NULL are ignored.
macro_rules! execl_like {
    ($(#[$doc:meta])* $name:ident => $call:path) => {
        $(#[$doc])*
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $name(
            path: *const c_char,
            a0: usize, a1: usize, a2: usize, a3: usize, a4: usize, a5: usize, a6: usize,
            a7: usize, a8: usize, a9: usize, a10: usize, a11: usize, a12: usize, a13: usize,
            a14: usize, a15: usize, a16: usize, a17: usize, a18: usize, a19: usize,
            a20: usize, a21: usize, a22: usize, a23: usize, a24: usize, a25: usize,
            a26: usize, a27: usize, a28: usize, a29: usize, a30: usize, a31: usize,
            a32: usize, a33: usize, a34: usize, a35: usize, a36: usize, a37: usize,
            a38: usize, a39: usize, a40: usize, a41: usize, a42: usize, a43: usize,
            a44: usize, a45: usize, a46: usize, a47: usize, a48: usize, a49: usize,
            a50: usize, a51: usize, a52: usize, a53: usize, a54: usize, a55: usize,
            a56: usize, a57: usize, a58: usize, a59: usize, a60: usize, a61: usize,
            a62: usize,
        ) -> c_int {
            let args: [usize; 63] = [
                a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16,
                a17, a18, a19, a20, a21, a22, a23, a24, a25, a26, a27, a28, a29, a30, a31,
                a32, a33, a34, a35, a36, a37, a38, a39, a40, a41, a42, a43, a44, a45, a46,
                a47, a48, a49, a50, a51, a52, a53, a54, a55, a56, a57, a58, a59, a60, a61,
                a62,
            ];
            let Some(end) = args.iter().position(|&a| a == 0).filter(|&e| e <= EXECL_MAX)
            else {
                set_errno(libc::E2BIG);
                return -1;
            };
            let mut argv = [std::ptr::null::<c_char>(); EXECL_MAX + 1];
            for (d, &a) in argv.iter_mut().zip(&args[..end]) {
                *d = a as *const c_char;
            }
            // SAFETY: the caller's path and NULL-terminated argument list.
            unsafe { $call(path, argv.as_ptr(), env_now()) }
        }
    };
}

execl_like!(
    /// Interposed `execl(path, arg0, ..., NULL)`: our `execve` with the process
    /// environment. At most 62 arguments.
    execl => super::execve
);
execl_like!(
    /// Interposed `execlp(file, arg0, ..., NULL)`: our `execvpe` with the process
    /// environment. At most 62 arguments.
    execlp => super::execvpe
);

const SHELL: &CStr = c"/bin/sh";

/// `sigaction` of `sig` to `SIG_IGN`, the old one in `old`.
fn ignore(sig: c_int, old: &mut libc::sigaction) {
    // SAFETY: a zeroed sigaction is valid; `SIG_IGN` with an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_IGN;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, old);
    }
}

/// How many `system` calls are running (they share the ignored SIGINT/SIGQUIT), and the
/// dispositions to restore when the last ends.
static SYSTEM: Mutex<(usize, Option<(libc::sigaction, libc::sigaction)>)> = Mutex::new((0, None));

/// Interposed `system`: as glibc's (SIGINT and SIGQUIT ignored and SIGCHLD blocked in
/// the caller while the command runs; the shell gets the caller's mask and default
/// dispositions for those two unless the caller ignored them), the shell started with
/// our `posix_spawn` so that it gets our variables whatever `environ` holds.
#[no_mangle]
pub unsafe extern "C" fn system(cmd: *const c_char) -> c_int {
    if !INITIALISED.load(Ordering::Acquire) {
        let p = real_of(&real::system, "system\0");
        // SAFETY: libc's system.
        return unsafe {
            std::mem::transmute::<usize, unsafe extern "C" fn(*const c_char) -> c_int>(p)(cmd)
        };
    }
    if cmd.is_null() {
        // Whether a shell is there: run `exit 0`.
        // SAFETY: a C string.
        return (unsafe { run_shell(c"exit 0".as_ptr()) } == 0) as c_int;
    }
    // SAFETY: the caller's C string.
    unsafe { run_shell(cmd) }
}

/// Spawns `sh -c -- CMD` through our `posix_spawn` (the shell is traced), with the
/// environment as it is now; returns `posix_spawn`'s result and the child's pid.
///
/// # Safety
/// `cmd` a C string; `actions` and `attr` null or initialised.
unsafe fn spawn_shell(
    cmd: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
) -> (c_int, libc::pid_t) {
    let argv = [
        c"sh".as_ptr(),
        c"-c".as_ptr(),
        c"--".as_ptr(),
        cmd,
        std::ptr::null(),
    ];
    let mut pid: libc::pid_t = 0;
    // SAFETY: our `posix_spawn` with the caller's actions and attributes, a
    // NULL-terminated argv and the current environment.
    let r = unsafe {
        super::posix_spawn(
            &mut pid,
            SHELL.as_ptr(),
            actions,
            attr,
            argv.as_ptr(),
            env_now(),
        )
    };
    (r, pid)
}

/// `system`'s body for a non-null command.
unsafe fn run_shell(cmd: *const c_char) -> c_int {
    // SAFETY: plain libc calls on local, initialised structures; `posix_spawn` is ours.
    unsafe {
        let (intr, quit) = {
            let mut g = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
            if g.0 == 0 {
                let mut intr: libc::sigaction = std::mem::zeroed();
                let mut quit: libc::sigaction = std::mem::zeroed();
                ignore(libc::SIGINT, &mut intr);
                ignore(libc::SIGQUIT, &mut quit);
                g.1 = Some((intr, quit));
            }
            g.0 += 1;
            g.1.unwrap_or((std::mem::zeroed(), std::mem::zeroed()))
        };
        let mut chld: libc::sigset_t = std::mem::zeroed();
        let mut omask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &chld, &mut omask);
        let mut reset: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut reset);
        if intr.sa_sigaction != libc::SIG_IGN {
            libc::sigaddset(&mut reset, libc::SIGINT);
        }
        if quit.sa_sigaction != libc::SIG_IGN {
            libc::sigaddset(&mut reset, libc::SIGQUIT);
        }
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawnattr_init(&mut attr);
        libc::posix_spawnattr_setsigmask(&mut attr, &omask);
        libc::posix_spawnattr_setsigdefault(&mut attr, &reset);
        libc::posix_spawnattr_setflags(
            &mut attr,
            (libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK) as _,
        );
        let (r, pid) = spawn_shell(cmd, std::ptr::null(), &attr as *const _ as *const c_void);
        libc::posix_spawnattr_destroy(&mut attr);
        let mut status: c_int = 0;
        if r == 0 {
            loop {
                let w = libc::waitpid(pid, &mut status, 0);
                if w == pid {
                    break;
                }
                if w < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                status = -1;
                break;
            }
        } else {
            // As glibc: the shell could not run.
            status = 127 << 8;
        }
        {
            let mut g = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
            g.0 -= 1;
            if g.0 == 0 {
                if let Some((i, q)) = g.1.take() {
                    libc::sigaction(libc::SIGINT, &i, std::ptr::null_mut());
                    libc::sigaction(libc::SIGQUIT, &q, std::ptr::null_mut());
                }
            }
        }
        libc::sigprocmask(libc::SIG_SETMASK, &omask, std::ptr::null_mut());
        if r != 0 {
            set_errno(r);
        }
        status
    }
}

/// Streams our `popen` opened: (FILE address, child pid, the stream's descriptor).
static POPENED: Mutex<Vec<(usize, libc::pid_t, c_int)>> = Mutex::new(Vec::new());

/// Interposed `popen`: as glibc's (`r`/`w`, `e` for close-on-exec; the child closes the
/// streams of earlier `popen`s still open), the shell started with our `posix_spawn`.
#[no_mangle]
pub unsafe extern "C" fn popen(cmd: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    type F = unsafe extern "C" fn(*const c_char, *const c_char) -> *mut libc::FILE;
    if !INITIALISED.load(Ordering::Acquire) || cmd.is_null() || mode.is_null() {
        let p = real_of(&real::popen, "popen\0");
        // SAFETY: libc's popen.
        return unsafe { std::mem::transmute::<usize, F>(p)(cmd, mode) };
    }
    // SAFETY: the caller's C string.
    let m = unsafe { CStr::from_ptr(mode) }.to_bytes();
    let read = match m.first() {
        Some(b'r') => true,
        Some(b'w') => false,
        _ => {
            set_errno(libc::EINVAL);
            return std::ptr::null_mut();
        }
    };
    let cloexec = m[1..].contains(&b'e');
    let mut fds = [0 as c_int; 2];
    // SAFETY: a valid array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return std::ptr::null_mut();
    }
    let (parent, mut child) = if read {
        (fds[0], fds[1])
    } else {
        (fds[1], fds[0])
    };
    let target = if read { 1 } else { 0 };
    // SAFETY: libc calls on local structures and our own descriptors.
    unsafe {
        if child == target {
            // dup2 onto itself would keep close-on-exec: move it first.
            let n = libc::fcntl(child, libc::F_DUPFD_CLOEXEC, 3);
            if n >= 0 {
                libc::close(child);
                child = n;
            }
        }
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut fa);
        libc::posix_spawn_file_actions_adddup2(&mut fa, child, target);
        let list = POPENED.lock().unwrap_or_else(|e| e.into_inner());
        for &(_, _, fd) in list.iter() {
            if fd != target {
                libc::posix_spawn_file_actions_addclose(&mut fa, fd);
            }
        }
        drop(list);
        let (r, pid) = spawn_shell(cmd, &fa as *const _ as *const c_void, std::ptr::null());
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::close(child);
        if r != 0 {
            libc::close(parent);
            set_errno(r);
            return std::ptr::null_mut();
        }
        if !cloexec {
            libc::fcntl(parent, libc::F_SETFD, 0);
        }
        let fp = libc::fdopen(parent, if read { c"r".as_ptr() } else { c"w".as_ptr() });
        if fp.is_null() {
            let e = *libc::__errno_location();
            libc::close(parent);
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
            set_errno(e);
            return fp;
        }
        POPENED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((fp as usize, pid, parent));
        fp
    }
}

/// Interposed `pclose`: streams of our `popen` are closed and their shell waited for;
/// others go to libc's.
#[no_mangle]
pub unsafe extern "C" fn pclose(fp: *mut libc::FILE) -> c_int {
    let mine = {
        let mut list = POPENED.lock().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .position(|e| e.0 == fp as usize)
            .map(|i| list.swap_remove(i))
    };
    let Some((_, pid, _)) = mine else {
        let p = real_of(&real::pclose, "pclose\0");
        // SAFETY: libc's pclose on a stream it made.
        return unsafe {
            std::mem::transmute::<usize, unsafe extern "C" fn(*mut libc::FILE) -> c_int>(p)(fp)
        };
    };
    // SAFETY: a stream our popen opened; the child it started.
    unsafe {
        libc::fclose(fp);
        let mut status: c_int = 0;
        loop {
            let w = libc::waitpid(pid, &mut status, 0);
            if w == pid {
                return status;
            }
            if w < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            return -1;
        }
    }
}
