//! The few raw Linux x86-64 system calls the producer side needs.
//!
//! Raw `syscall` instructions, not libc: they are async-signal-safe, never re-enter
//! symbols an LD_PRELOAD library interposes, and need no libc at all (the fault-path core
//! must be loadable without one, see the design notes).
#![allow(clippy::missing_safety_doc)]

use core::arch::asm;

/// `futex(2)` operation numbers.
pub const FUTEX_WAIT: usize = 0;
/// Wakes waiters.
pub const FUTEX_WAKE: usize = 1;

/// A raw system call with up to six arguments; returns the kernel's value (negative errno).
///
/// # Safety
/// The caller must pass arguments valid for system call `nr`.
#[inline]
pub unsafe fn syscall6(
    nr: usize,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
    f: usize,
) -> isize {
    let ret: isize;
    // SAFETY: the x86-64 Linux system call convention; rcx and r11 are clobbered by
    // `syscall`; memory effects are the caller's contract.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d, in("r8") e, in("r9") f,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// `futex(addr, FUTEX_WAIT, expected, {0, timeout_ns})`, shared (not private): the word
/// lives in memory shared between processes.
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32, timeout_ns: u64) -> isize {
    let ts = [
        (timeout_ns / 1_000_000_000) as i64,
        (timeout_ns % 1_000_000_000) as i64,
    ];
    // SAFETY: `word` is a valid u32; `ts` a valid timespec for the call's duration.
    unsafe {
        syscall6(
            202,
            word.as_ptr() as usize,
            FUTEX_WAIT,
            expected as usize,
            ts.as_ptr() as usize,
            0,
            0,
        )
    }
}

/// Wakes every waiter on `word` (shared futex).
pub fn futex_wake(word: &core::sync::atomic::AtomicU32) -> isize {
    // SAFETY: `word` is a valid u32.
    unsafe {
        syscall6(
            202,
            word.as_ptr() as usize,
            FUTEX_WAKE,
            i32::MAX as usize,
            0,
            0,
            0,
        )
    }
}

/// Whether process `pid` exists (`kill(pid, 0)` does not fail with ESRCH).
pub fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { syscall6(62, pid as usize, 0, 0, 0, 0, 0) };
    r != -3
}

/// Whether process `pid` is alive: it exists ([`process_exists`]) and is not a zombie (a
/// killed recorder stays a zombie until its parent reaps it). Reads `/proc/PID/stat` with
/// raw system calls (no allocation); if that cannot be read, existence decides.
pub fn process_alive(pid: u32) -> bool {
    if !process_exists(pid) {
        return false;
    }
    // "/proc/" + up to 10 digits + "/stat\0"
    let mut path = [0u8; 32];
    path[..6].copy_from_slice(b"/proc/");
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut v = pid;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut k = 6;
    for i in (0..n).rev() {
        path[k] = digits[i];
        k += 1;
    }
    path[k..k + 5].copy_from_slice(b"/stat");
    // SAFETY: open(path, O_RDONLY | O_CLOEXEC) with a NUL-terminated path.
    let fd = unsafe { syscall6(2, path.as_ptr() as usize, 0o2000000, 0, 0, 0, 0) };
    if fd < 0 {
        return true;
    }
    let mut buf = [0u8; 512];
    // SAFETY: read into a local buffer of its length; then close our fd.
    let r = unsafe {
        syscall6(
            0,
            fd as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
            0,
            0,
            0,
        )
    };
    // SAFETY: closes the descriptor opened above.
    unsafe { syscall6(3, fd as usize, 0, 0, 0, 0, 0) };
    if r <= 0 {
        return true;
    }
    let buf = &buf[..r as usize];
    // "pid (comm) S ...": the state follows the last ')'.
    match buf.iter().rposition(|&c| c == b')') {
        Some(i) => !matches!(buf.get(i + 2), Some(b'Z' | b'X' | b'x')),
        None => true,
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds via the raw system call (slow path; the tracer uses
/// the vDSO through its own clock).
pub fn monotonic_ns_syscall() -> u64 {
    let mut ts = [0i64; 2];
    // SAFETY: clock_gettime(CLOCK_MONOTONIC=1, &ts).
    unsafe { syscall6(228, 1, ts.as_mut_ptr() as usize, 0, 0, 0, 0) };
    ts[0] as u64 * 1_000_000_000 + ts[1] as u64
}

/// Sleeps `ns` nanoseconds (`nanosleep`).
pub fn sleep_ns(ns: u64) {
    let ts = [(ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64];
    // SAFETY: a valid timespec; no remainder pointer.
    unsafe { syscall6(35, ts.as_ptr() as usize, 0, 0, 0, 0, 0) };
}

/// Whether the write end of the pipe whose read end is `fd` has been closed by every
/// holder (`poll` reports a hang-up): for the recorder's liveness pipe, that the recorder
/// is gone. `None` when it cannot be told (no such descriptor, or `poll` failed).
pub fn hung_up(fd: i32) -> Option<bool> {
    if fd < 0 {
        return None;
    }
    const POLLIN: i16 = 0x1;
    const POLLERR: i16 = 0x8;
    const POLLHUP: i16 = 0x10;
    const POLLNVAL: i16 = 0x20;
    // struct pollfd { int fd; short events; short revents; }
    let mut pfd = [0u8; 8];
    pfd[..4].copy_from_slice(&fd.to_ne_bytes());
    pfd[4..6].copy_from_slice(&POLLIN.to_ne_bytes());
    // SAFETY: poll(&pfd, 1, 0) on one valid pollfd; returns at once.
    let r = unsafe { syscall6(7, pfd.as_mut_ptr() as usize, 1, 0, 0, 0, 0) };
    if r < 0 {
        return None;
    }
    let revents = i16::from_ne_bytes([pfd[6], pfd[7]]);
    if revents & POLLNVAL != 0 {
        return None;
    }
    Some(revents & (POLLHUP | POLLERR) != 0)
}

/// The auxiliary-vector entry `key` (`AT_*`) the kernel gave this process, `None` when it
/// gave none.
///
/// With std, libc's `getauxval`. Without (the freestanding agent, which may run before or
/// without any libc), read from `/proc/self/auxv` with raw system calls into a stack buffer
/// (no allocation; the kernel's vector is a few dozen 16-byte pairs).
pub fn auxval(key: u64) -> Option<u64> {
    #[cfg(feature = "std")]
    {
        // SAFETY: getauxval has no preconditions.
        let v = unsafe { libc::getauxval(key as libc::c_ulong) } as u64;
        (v != 0).then_some(v)
    }
    #[cfg(not(feature = "std"))]
    {
        auxval_proc(key)
    }
}

/// [`auxval`] from `/proc/self/auxv` (also with std, for tests of the agent's way).
pub fn auxval_proc(key: u64) -> Option<u64> {
    // SAFETY: open(path, O_RDONLY | O_CLOEXEC) with a NUL-terminated path.
    let fd = unsafe {
        syscall6(
            2,
            c"/proc/self/auxv".as_ptr() as usize,
            0o2000000,
            0,
            0,
            0,
            0,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u64; 128];
    let mut got = 0usize;
    let cap = core::mem::size_of_val(&buf);
    while got < cap {
        // SAFETY: reads into the rest of a local buffer; the descriptor is ours.
        let r = unsafe {
            syscall6(
                0,
                fd as usize,
                buf.as_mut_ptr() as usize + got,
                cap - got,
                0,
                0,
                0,
            )
        };
        if r == -4 {
            continue; // EINTR
        }
        if r <= 0 {
            break;
        }
        got += r as usize;
    }
    // SAFETY: closes the descriptor opened above.
    unsafe { syscall6(3, fd as usize, 0, 0, 0, 0, 0) };
    buf[..got / 8]
        .chunks_exact(2)
        .take_while(|p| p[0] != 0) // AT_NULL ends the vector
        .find(|p| p[0] == key)
        .map(|p| p[1])
        .filter(|&v| v != 0)
}
