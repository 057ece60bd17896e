//! Interposed `dlclose`: an object unloaded may leave its addresses to another one, so
//! the tracer forgets which objects it has logged and logs them again as they are met
//! (see `mmio_trace_tracer::after_dlclose`). `dlopen` is not interposed: glibc takes its
//! caller's address to choose the search path and namespace, and a wrapper would become
//! that caller; objects it loads are logged by the fault handler instead.

use std::ffi::{c_int, c_void};
use std::sync::atomic::AtomicUsize;

use mmio_trace_tracer as tracer;

static REAL_DLCLOSE: AtomicUsize = AtomicUsize::new(0);

/// Resolves the real `dlclose` (the constructor: `dlsym` may allocate).
pub(crate) fn resolve_all() {
    crate::resolve(&REAL_DLCLOSE, "dlclose\0");
}

/// Interposed `dlclose`.
#[no_mangle]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    let p = crate::real(&REAL_DLCLOSE, "dlclose\0");
    if p == 0 {
        return -1;
    }
    // SAFETY: libc's dlclose, with the caller's argument.
    let r = unsafe {
        std::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void) -> c_int>(p)(handle)
    };
    tracer::after_dlclose();
    r
}
