//! Signals to the recorder are the program's: the recorder passes them on, as `timeout`
//! and `tini` do, and never dies of one itself, so the log is always finished.
//!
//! Once the program has ended, signals go to what it left running (the recorder's
//! children, which it waits for), so that a supervisor's TERM still ends the recording.
//!
//! A signal the terminal sends (^C, ^\, ^Z, a window resize, a hangup) goes to the whole
//! foreground process group, the program included: the recorder does not send it a
//! second time. Signals ignored when the recorder started stay ignored (the program
//! inherits that, as under `nohup`). PIPE is passed on when another process sent it;
//! the one the kernel raises for the recorder's own write into a closed pipe is not (the
//! write fails, and that is reported). Not passed on: the recorder's own faults (SEGV,
//! BUS, FPE, ILL, TRAP, ABRT, SYS), CHLD, the terminal's TTIN/TTOU, and KILL/STOP, which
//! cannot be caught.

use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

/// Signals passed on (real-time signals are added at run time).
const FORWARDED: [libc::c_int; 16] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGURG,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGXCPU,
    // Caught also so that the recorder's own file-size limit fails a write (EFBIG)
    // instead of killing it.
    libc::SIGXFSZ,
    libc::SIGPWR,
];

/// Highest signal number handled.
const NSIG: usize = 65;

/// Sent by the kernel for the terminal (`SI_KERNEL`): the whole foreground group has it.
const FROM_TERMINAL: u8 = 1;
/// Sent by a process (`kill`, `sigqueue`): meant for the recorder alone.
const SENT: u8 = 2;

#[allow(clippy::declare_interior_mutable_const)]
const NONE: AtomicU8 = AtomicU8::new(0);
/// Per signal, how it arrived since the main loop last looked.
static PENDING: [AtomicU8; NSIG] = [NONE; NSIG];
/// The recorder's pid: a signal it raised on itself (XCPU from its own limits) is not
/// the program's business.
static SELF_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if sig <= 0 || sig as usize >= NSIG || info.is_null() {
        return;
    }
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, pid) = unsafe { ((*info).si_code, (*info).si_pid()) };
    let how = if code == libc::SI_KERNEL {
        FROM_TERMINAL
    } else if code <= 0 && pid != SELF_PID.load(Ordering::Relaxed) {
        SENT
    } else {
        // Raised by the kernel for the recorder itself (its CPU limit, ...).
        return;
    };
    PENDING[sig as usize].fetch_or(how, Ordering::SeqCst);
}

/// The handlers installed for one recording; dropping it puts the previous dispositions
/// back.
pub(crate) struct Forwarder {
    saved: Vec<(libc::c_int, libc::sigaction)>,
}

impl Forwarder {
    /// Installs the handlers (before the program starts, so that nothing sent meanwhile
    /// is lost).
    pub fn install() -> Forwarder {
        // SAFETY: getpid cannot fail.
        SELF_PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
        for p in &PENDING {
            p.store(0, Ordering::Relaxed);
        }
        let mut sigs = FORWARDED.to_vec();
        sigs.push(libc::SIGPIPE);
        sigs.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
        let mut saved = Vec::new();
        for sig in sigs {
            // SAFETY: a zeroed sigaction is a valid "query" argument.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: querying the current disposition.
            if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
                continue;
            }
            // The Rust runtime ignores SIGPIPE itself (and the program gets it back at its
            // default): that says nothing of what the recorder was given.
            if old.sa_sigaction == libc::SIG_IGN && sig != libc::SIGPIPE {
                continue;
            }
            // SAFETY: as above.
            let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
            new.sa_sigaction = on_signal
                as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                as libc::sighandler_t;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            // SAFETY: the handler only stores into atomics (async-signal-safe).
            if unsafe { libc::sigaction(sig, &new, std::ptr::null_mut()) } == 0 {
                saved.push((sig, old));
            }
        }
        Forwarder { saved }
    }

    /// Passes on what arrived since the last call: to `program` while it runs (not yet
    /// reaped), else to the processes the recorder still waits for (its children: what
    /// the program left running, reparented to the recorder), so that a supervisor's
    /// TERM still ends the recording.
    pub fn forward(&self, program: Option<libc::pid_t>) {
        for (sig, p) in PENDING.iter().enumerate() {
            let how = p.swap(0, Ordering::SeqCst);
            if how == 0 {
                continue;
            }
            let sig = sig as libc::c_int;
            let targets = match program {
                Some(pid) => vec![pid],
                None => children(),
            };
            for pid in targets {
                // SAFETY: plain process-group queries.
                let same_group = unsafe { libc::getpgid(pid) == libc::getpgrp() };
                if how & SENT != 0 || !same_group {
                    // SAFETY: a signal to a child of ours, not yet reaped.
                    unsafe { libc::kill(pid, sig) };
                }
            }
            if sig == libc::SIGTSTP {
                stop_as_by_default();
            }
        }
    }
}

/// Stops the recorder as SIGTSTP's default action would have, with the program, so that
/// the shell sees the job stopped (SIGCONT wakes both); the kernel's own rules then
/// apply (a process group that no shell controls, an orphaned one, is not stopped).
fn stop_as_by_default() {
    // SAFETY: a zeroed sigaction asks for the default action; the saved one is put back.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        let mut ours: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGTSTP, &dfl, &mut ours) != 0 {
            return;
        }
        // Delivered (and acted on) before raise returns.
        libc::raise(libc::SIGTSTP);
        libc::sigaction(libc::SIGTSTP, &ours, std::ptr::null_mut());
    }
}

/// The recorder's children (`/proc/thread-self/children`; none where the kernel does not
/// list them).
fn children() -> Vec<libc::pid_t> {
    std::fs::read_to_string("/proc/thread-self/children")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Drop for Forwarder {
    /// Puts back the dispositions found by [`Forwarder::install`].
    fn drop(&mut self) {
        for (sig, old) in &self.saved {
            // SAFETY: restoring a disposition sigaction gave us.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
    }
}
