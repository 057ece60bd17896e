//! Starting the tracer's own helper thread (the hot-site patcher).
//!
//! With std, `std::thread` (a libc thread, with its own TLS and TCB, which the per-thread
//! block lookup by FS base relies on). Without std there is no thread library: whoever
//! loaded the tracer registers a way to start one ([`set_spawner`]); until then no helper
//! thread starts and the callers carry on without one (the patcher: every access traps).

use core::sync::atomic::{AtomicUsize, Ordering};

/// A function that starts a thread running `entry(arg)` on a stack of at least
/// `stack_size` bytes, with every signal blocked, and returns whether it started. The
/// thread must have an FS base of its own (the tracer keys per-thread state by it) and
/// may return from `entry`, after which it exits.
pub type Spawner =
    unsafe extern "C" fn(entry: extern "C" fn(usize), arg: usize, stack_size: usize) -> bool;

/// The registered [`Spawner`] (0: none).
static SPAWNER: AtomicUsize = AtomicUsize::new(0);

/// Registers how to start a thread where std's cannot be used (the freestanding agent's
/// runtime). With std it is used instead of `std::thread` too.
pub fn set_spawner(f: Spawner) {
    SPAWNER.store(f as usize, Ordering::Release);
}

/// Registers `f` unless a spawner is registered already (a loader's default, which the
/// runtime's own [`set_spawner`], before or after, takes precedence over).
pub fn set_default_spawner(f: Spawner) {
    let _ = SPAWNER.compare_exchange(0, f as usize, Ordering::AcqRel, Ordering::Acquire);
}

/// Starts a thread named `name` (where names exist) running `f`; whether it started.
/// The caller blocks the signals the thread must not take before calling (a new thread
/// inherits the creating thread's mask).
pub(crate) fn spawn(name: &str, stack_size: usize, f: fn()) -> bool {
    let s = SPAWNER.load(Ordering::Acquire);
    if s != 0 {
        extern "C" fn trampoline(arg: usize) {
            // SAFETY: `arg` is the `fn()` passed to `spawn` below.
            let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(arg) };
            f();
        }
        // SAFETY: a non-zero SPAWNER was stored from a `Spawner` by `set_spawner`.
        let s: Spawner = unsafe { core::mem::transmute::<usize, Spawner>(s) };
        // SAFETY: the spawner's contract: it runs `trampoline(arg)` on a new thread.
        return unsafe { s(trampoline, f as usize, stack_size) };
    }
    #[cfg(feature = "std")]
    {
        std::thread::Builder::new()
            .name(name.into())
            .stack_size(stack_size)
            .spawn(f)
            .is_ok()
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = (name, stack_size);
        false
    }
}
