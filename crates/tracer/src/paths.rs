//! Which ways of completing a faulting access the fault path may take, for tests.
//!
//! The fault path tries, in order: the emulator (through the alias), out-of-line execution
//! on a bounce buffer, and the single step. `MMIO_TRACE_PATH` forces a later path for every
//! access so that tests can compare the event streams of all three on the same program:
//! `emulate` (the default order), `ool` (skip the emulator) or `step` (skip both); and
//! `no-ool` skips only out-of-line execution (the emulator, then the step path: for tests
//! of the step path that need the emulator for everything else). An access the forced
//! path cannot complete still falls back to the next one. Read once at start; the fault
//! path reads only an atomic.

use core::sync::atomic::{AtomicU8, Ordering};

/// The environment variable that forces a path.
pub const ENV_PATH: &str = "MMIO_TRACE_PATH";

/// The first path tried: 0 emulate, 1 out of line, 2 step; 3: emulate, then step.
static FIRST: AtomicU8 = AtomicU8::new(0);

/// Reads [`ENV_PATH`]; an unknown value is reported once and ignored.
pub(crate) fn init_from_env() {
    let Some(v) = crate::env::var_bytes(ENV_PATH) else {
        return;
    };
    let first = match &v[..] {
        b"" | b"emulate" => 0,
        b"ool" => 1,
        b"step" => 2,
        b"no-ool" => 3,
        _ => {
            // Not `eprintln!`: this can run in a constructor with stderr closed (and
            // there is no std in the agent).
            let msg = alloc::format!(
                "mmio-trace: {ENV_PATH}={:?} is not one of emulate, ool, step, no-ool; ignored\n",
                alloc::string::String::from_utf8_lossy(&v)
            );
            crate::sys::write_all(2, msg.as_bytes());
            0
        }
    };
    FIRST.store(first, Ordering::Relaxed);
}

/// Whether the emulator may complete accesses.
#[inline]
pub(crate) fn emulate() -> bool {
    matches!(FIRST.load(Ordering::Relaxed), 0 | 3)
}

/// Whether out-of-line execution may complete accesses.
#[inline]
pub(crate) fn out_of_line() -> bool {
    FIRST.load(Ordering::Relaxed) <= 1
}
