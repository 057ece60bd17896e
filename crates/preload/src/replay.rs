//! `open` under replay: a device file the trace maps is stood in for by a memfd of the
//! trace's size ([`tracer::model::open_stand_in`]), whether this machine has it or not
//! (the trace was made elsewhere, a sysfs BAR of a card that is not here): the driver
//! under test runs without its hardware, and a device or file that is there is never
//! written. Outside replay, and for every other path, the calls are libc's own.

use std::ffi::{c_char, c_int, c_uint, CStr};
use std::os::unix::ffi::OsStrExt;

use crate::{real, set_errno, tracer};

type OpenFn = unsafe extern "C" fn(*const c_char, c_int, c_uint) -> c_int;
type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, c_uint) -> c_int;

/// The stand-in's descriptor for an open of `path` (absolute, or relative to `dirfd`:
/// the working directory for `AT_FDCWD`), when there is one.
///
/// # Safety
/// `path` is NUL-terminated.
unsafe fn stand_in(dirfd: c_int, path: *const c_char, flags: c_int) -> Option<c_int> {
    if flags & libc::O_CREAT != 0 || !tracer::model::active() || path.is_null() {
        return None;
    }
    // SAFETY: the caller's NUL-terminated path.
    let p = unsafe { CStr::from_ptr(path) }.to_bytes();
    let mut abs = if p.first() == Some(&b'/') {
        p.to_vec()
    } else {
        let dir = if dirfd == libc::AT_FDCWD {
            std::env::current_dir().ok()?
        } else {
            std::fs::read_link(format!("/proc/self/fd/{dirfd}")).ok()?
        };
        let mut a = dir.into_os_string().into_encoded_bytes();
        a.push(b'/');
        a.extend_from_slice(p.strip_prefix(b"./").unwrap_or(p));
        a
    };
    // The device rules see canonical paths (as at `mmap`), where the file is there.
    let os = std::ffi::OsStr::from_bytes(&abs);
    if let Ok(c) = std::fs::canonicalize(os) {
        abs = c.into_os_string().into_encoded_bytes();
    }
    tracer::model::open_stand_in(&abs, flags)
}

macro_rules! opens {
    ($($name:ident),*) => {$(
        /// Interposed (see the module).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
            let f = real(&real::$name, concat!(stringify!($name), "\0"));
            if f == 0 {
                set_errno(libc::ENOSYS);
                return -1;
            }
            // SAFETY: libc's function of this name with the caller's arguments (the
            // variadic mode travels in the third integer register either way).
            // SAFETY: the caller's path.
            if let Some(fd) = unsafe { stand_in(libc::AT_FDCWD, path, flags) } {
                return fd;
            }
            unsafe { std::mem::transmute::<usize, OpenFn>(f)(path, flags, mode) }
        }
    )*};
}

macro_rules! openats {
    ($($name:ident),*) => {$(
        /// Interposed (see the module).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            flags: c_int,
            mode: c_uint,
        ) -> c_int {
            let f = real(&real::$name, concat!(stringify!($name), "\0"));
            if f == 0 {
                set_errno(libc::ENOSYS);
                return -1;
            }
            // SAFETY: as for `open`.
            // SAFETY: the caller's path.
            if let Some(fd) = unsafe { stand_in(dirfd, path, flags) } {
                return fd;
            }
            unsafe { std::mem::transmute::<usize, OpenatFn>(f)(dirfd, path, flags, mode) }
        }
    )*};
}

opens!(open, open64, __open_2, __open64_2);
openats!(openat, openat64, __openat_2, __openat64_2);
