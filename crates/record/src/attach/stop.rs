//! Stopping a `record --pid` recording: SIGINT, SIGTERM and SIGHUP to the recorder ask
//! the tracer to detach (they do not end the recorder, so that the process is always
//! left as it was and the log finished); the tracer thread, blocked in `waitpid`, is
//! woken by a signal of its own (SIGURG, ignored by default, so a stray one is harmless).

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the handlers.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The signals that end the recording.
const ENDING: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
/// The signal that wakes the tracer thread out of `waitpid`.
pub(super) const KICK: libc::c_int = libc::SIGURG;

extern "C" fn on_ending(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

extern "C" fn on_kick(_: libc::c_int) {}

/// The handlers of one attach; dropping it puts the previous dispositions back.
pub(super) struct Stop {
    saved: Vec<(libc::c_int, libc::sigaction)>,
}

impl Stop {
    /// Installs the handlers, without `SA_RESTART`, so that a blocked `waitpid` returns.
    pub fn install() -> Stop {
        REQUESTED.store(false, Ordering::SeqCst);
        let mut saved = Vec::new();
        let handlers: [(libc::c_int, extern "C" fn(libc::c_int)); 4] = [
            (ENDING[0], on_ending),
            (ENDING[1], on_ending),
            (ENDING[2], on_ending),
            (KICK, on_kick),
        ];
        for (sig, h) in handlers {
            // SAFETY: plain sigaction calls with zeroed, then filled, structures; the
            // handlers only store to an atomic (async-signal-safe).
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                    continue;
                }
                // A signal ignored when the recorder started (nohup) stays ignored.
                if sig != KICK && old.sa_sigaction == libc::SIG_IGN {
                    continue;
                }
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = h as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) == 0 {
                    saved.push((sig, old));
                }
            }
        }
        Stop { saved }
    }

    /// Whether a signal asked the recording to end.
    pub fn requested(&self) -> bool {
        REQUESTED.load(Ordering::SeqCst)
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        for (sig, old) in &self.saved {
            // SAFETY: restoring a disposition sigaction returned before.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
    }
}

/// The kernel thread id of a spawned thread (0 if not known yet).
pub(super) fn thread_id<T>(h: &std::thread::JoinHandle<T>) -> libc::pthread_t {
    use std::os::unix::thread::JoinHandleExt;
    h.as_pthread_t()
}

/// Wakes the tracer thread out of a blocking call.
pub(super) fn kick(thread: libc::pthread_t) {
    // SAFETY: the thread is joinable (not yet joined), so its pthread_t is valid.
    unsafe { libc::pthread_kill(thread, KICK) };
}
