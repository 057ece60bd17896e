//! Interposed memory-locking and populating calls: `mlock`, `mlock2`, `munlock`,
//! `madvise`.
//!
//! The kernel's `mlock` and `madvise(MADV_POPULATE_READ/WRITE)` populate the range, which
//! fails on the traced pages the tracer keeps `PROT_NONE`; the tracer redoes them so that
//! they succeed as natively (see `mmio_trace_tracer::mlock` and
//! `mmio_trace_tracer::madvise_populate`). Raw `syscall(SYS_mlock, ...)` calls are not
//! seen.

use std::ffi::{c_int, c_uint, c_void};

use libc::size_t;
use mmio_trace_tracer as tracer;

use crate::set_errno;

/// The raw `mlock2`/`mlock` of the caller's arguments (no traced region involved).
fn plain(addr: *const c_void, len: size_t, flags: c_uint) -> isize {
    const SYS_MLOCK: usize = 149;
    const SYS_MLOCK2: usize = 325;
    // SAFETY: the caller's arguments, straight to the kernel.
    unsafe {
        if flags == 0 {
            tracer::sys::syscall6(SYS_MLOCK, addr as usize, len, 0, 0, 0, 0)
        } else {
            tracer::sys::syscall6(SYS_MLOCK2, addr as usize, len, flags as usize, 0, 0, 0)
        }
    }
}

fn lock(addr: *const c_void, len: size_t, flags: c_uint) -> c_int {
    let r = tracer::mlock(addr as u64, len as u64, flags as i32)
        .unwrap_or_else(|| plain(addr, len, flags));
    if r < 0 {
        set_errno(-r as c_int);
        return -1;
    }
    0
}

/// Interposed `mlock`.
#[no_mangle]
pub unsafe extern "C" fn mlock(addr: *const c_void, len: size_t) -> c_int {
    lock(addr, len, 0)
}

/// Interposed `mlock2`.
#[no_mangle]
pub unsafe extern "C" fn mlock2(addr: *const c_void, len: size_t, flags: c_uint) -> c_int {
    lock(addr, len, flags)
}

/// Interposed `munlock`: the aliases of traced pages are unlocked with them.
#[no_mangle]
pub unsafe extern "C" fn munlock(addr: *const c_void, len: size_t) -> c_int {
    const SYS_MUNLOCK: usize = 150;
    // SAFETY: the caller's arguments, straight to the kernel.
    let r = unsafe { tracer::sys::syscall6(SYS_MUNLOCK, addr as usize, len, 0, 0, 0, 0) };
    if r < 0 {
        set_errno(-r as c_int);
        return -1;
    }
    tracer::after_munlock(addr as u64, len as u64);
    0
}

/// Interposed `madvise`: populating traced pages succeeds as natively.
#[no_mangle]
pub unsafe extern "C" fn madvise(addr: *mut c_void, len: size_t, advice: c_int) -> c_int {
    const SYS_MADVISE: usize = 28;
    let r = tracer::madvise_populate(addr as u64, len as u64, advice).unwrap_or_else(|| {
        // SAFETY: the caller's arguments, straight to the kernel.
        unsafe { tracer::sys::syscall6(SYS_MADVISE, addr as usize, len, advice as usize, 0, 0, 0) }
    });
    if r < 0 {
        set_errno(-r as c_int);
        return -1;
    }
    0
}
