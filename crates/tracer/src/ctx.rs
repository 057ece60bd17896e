//! The bottom of the fault path: the interrupted context (general registers, signal
//! mask) and the signal masks the tracer works with. Imports nothing of the tracer but
//! `sys`, so every layer above may use it (see docs/DESIGN.md, "Fault path layers").

use crate::sys;

/// The real-time signal used to pause other threads during a single step.
pub const PAUSE_SIGNAL: i32 = 63;

/// Trap flag in RFLAGS.
pub(crate) const TF: i64 = 0x100;

/// Signals blocked while a tracer handler runs: every asynchronous one, so that no program
/// handler (which may touch device memory) runs in the middle of an emulation or a ring
/// write. Synchronous faults and the pause signal (a thread waiting for the step lock
/// must still answer it) stay deliverable. Program handlers we chain to get the mask the
/// kernel would have given them (see `signals::deliver`).
pub(crate) const HANDLER_MASK: u64 = !((1 << (libc::SIGSEGV - 1))
    | (1 << (libc::SIGBUS - 1))
    | (1 << (libc::SIGTRAP - 1))
    | (1 << (libc::SIGILL - 1))
    | (1 << (libc::SIGFPE - 1))
    | (1 << (PAUSE_SIGNAL - 1)));

/// The signals the tracer needs deliverable at all times, as a mask (bit n-1 = signal n).
/// A device access made while SIGSEGV is blocked would make the kernel force the default
/// action (death); a blocked SIGTRAP kills a step; a blocked pause signal stalls steps.
pub const OURS: u64 =
    (1 << (libc::SIGSEGV - 1)) | (1 << (libc::SIGTRAP - 1)) | (1 << (PAUSE_SIGNAL - 1));

/// Blocks the asynchronous signals ([`HANDLER_MASK`]) in normal context, returning the
/// previous mask for [`restore_mask`]: a program handler must not run in the middle of a
/// ring write (single producer) or a region-table update (its lookups would spin on the
/// half-written slot) on the same thread.
pub(crate) fn block_async() -> u64 {
    let mut old = 0u64;
    sys::sigprocmask(libc::SIG_BLOCK, Some(&HANDLER_MASK), Some(&mut old));
    old
}

/// Undoes [`block_async`].
pub(crate) fn restore_mask(old: u64) {
    sys::sigprocmask(libc::SIG_SETMASK, Some(&old), None);
}

pub(crate) type Gregs = [i64; 23];

/// # Safety
/// `uc` is the ucontext passed to a signal handler.
pub(crate) unsafe fn gregs<'a>(uc: *mut libc::c_void) -> &'a mut Gregs {
    // SAFETY: caller's contract: the kernel's ucontext on the handler's stack.
    unsafe { &mut (*(uc as *mut libc::ucontext_t)).uc_mcontext.gregs }
}

/// # Safety
/// As [`gregs`].
pub(crate) unsafe fn uc_mask<'a>(uc: *mut libc::c_void) -> &'a mut u64 {
    // SAFETY: caller's contract; sigset_t starts with the 64 classic signal bits.
    unsafe {
        &mut *(&mut (*(uc as *mut libc::ucontext_t)).uc_sigmask as *mut libc::sigset_t as *mut u64)
    }
}
