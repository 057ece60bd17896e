//! Where the tracer's settings (`MMIO_TRACE_*` variables) come from: the process
//! environment (the preload library), or `NAME=VALUE` strings handed over by whoever
//! loaded the tracer ([`crate::init_from_vars`]: an injected agent, whose process
//! environment is the program's own and may not even be reachable without libc).
//!
//! Once strings were handed over, they are the only source: the environment is not asked.
//! Read at start and in normal context only (they allocate).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// The handed-over strings (`NAME=VALUE` separated by NUL bytes), leaked for the life of
/// the process; null: none handed over.
static VARS: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static VARS_LEN: AtomicUsize = AtomicUsize::new(0);

/// Makes `vars` (`NAME=VALUE` strings, each ended or separated by a NUL byte; empty
/// strings are skipped) the settings' only source. A later call replaces the strings (the
/// earlier copy stays allocated: a reader may hold it).
pub(crate) fn set_vars(vars: &[u8]) {
    let copy: &'static mut [u8] = Box::leak(vars.to_vec().into_boxed_slice());
    VARS_LEN.store(copy.len(), Ordering::Relaxed);
    VARS.store(copy.as_mut_ptr(), Ordering::Release);
}

/// The handed-over strings, if any.
fn vars() -> Option<&'static [u8]> {
    let p = VARS.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: `set_vars` leaked this buffer (never freed) and stored its length first.
    Some(unsafe { core::slice::from_raw_parts(p, VARS_LEN.load(Ordering::Relaxed)) })
}

/// The value of `name` in NUL-separated `NAME=VALUE` strings (the last one wins, as a
/// later assignment would).
pub fn lookup<'a>(vars: &'a [u8], name: &str) -> Option<&'a [u8]> {
    vars.split(|&b| b == 0).rev().find_map(|kv| {
        let eq = kv.iter().position(|&b| b == b'=')?;
        (&kv[..eq] == name.as_bytes()).then(|| &kv[eq + 1..])
    })
}

/// The raw value of setting `name`, if set.
pub(crate) fn var_bytes(name: &str) -> Option<Vec<u8>> {
    if let Some(v) = vars() {
        return lookup(v, name).map(<[u8]>::to_vec);
    }
    #[cfg(feature = "std")]
    {
        use std::os::unix::ffi::OsStringExt as _;
        std::env::var_os(name).map(|v| v.into_vec())
    }
    #[cfg(not(feature = "std"))]
    None
}

/// The value of setting `name` if set and UTF-8 (as `std::env::var(name).ok()`).
pub(crate) fn var(name: &str) -> Option<String> {
    var_bytes(name).and_then(|v| String::from_utf8(v).ok())
}

/// Whether setting `name` is set (to anything).
pub(crate) fn is_set(name: &str) -> bool {
    var_bytes(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::lookup;

    #[test]
    fn lookup_finds_exact_names_and_the_last_assignment() {
        let v = b"A=1\0AB=2\0\0B=x=y\0A=3";
        assert_eq!(lookup(v, "A"), Some(&b"3"[..]));
        assert_eq!(lookup(v, "AB"), Some(&b"2"[..]));
        assert_eq!(lookup(v, "B"), Some(&b"x=y"[..]));
        assert_eq!(lookup(v, "C"), None);
        assert_eq!(lookup(b"E=\0", "E"), Some(&b""[..]));
        assert_eq!(lookup(b"NOEQ\0", "NOEQ"), None);
    }
}
