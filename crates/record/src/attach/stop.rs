//! Stopping a `record --pid` recording: SIGINT, SIGTERM and SIGHUP to the recorder, and
//! every other signal whose default action would end it (QUIT, USR1, USR2, ALRM,
//! VTALRM, PROF, XCPU, PWR), ask the tracer to detach instead: a recorder that died
//! attached would leave the process with its device pages closed, to die at its next
//! access. PIPE and XFSZ are ignored (a write then fails with `EPIPE`/`EFBIG`, and the
//! recording detaches). The tracer thread, blocked in `waitpid`, is woken by a signal of
//! its own (SIGURG, ignored by default, so a stray one is harmless).

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the handlers.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The signals that end the recording.
const ENDING: [libc::c_int; 11] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGXCPU,
    libc::SIGPWR,
];
/// Signals ignored while attached: their failures come back as errors of the write.
const IGNORED: [libc::c_int; 2] = [libc::SIGPIPE, libc::SIGXFSZ];
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
        let mut handlers: Vec<(libc::c_int, libc::sighandler_t)> = ENDING
            .iter()
            .map(|&s| {
                (
                    s,
                    on_ending as extern "C" fn(libc::c_int) as libc::sighandler_t,
                )
            })
            .collect();
        handlers.push((
            KICK,
            on_kick as extern "C" fn(libc::c_int) as libc::sighandler_t,
        ));
        handlers.extend(IGNORED.iter().map(|&s| (s, libc::SIG_IGN)));
        for (sig, h) in handlers {
            // SAFETY: plain sigaction calls with zeroed, then filled, structures; the
            // handlers only store to an atomic (async-signal-safe).
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                    continue;
                }
                // A signal ignored when the recorder started (nohup) stays ignored.
                if ENDING.contains(&sig) && old.sa_sigaction == libc::SIG_IGN {
                    continue;
                }
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = h;
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
