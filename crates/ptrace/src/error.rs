//! The crate's error type.

use std::io;

use crate::{AttachError, Pid, Stop};

/// Result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and (in the message) what to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A ptrace request failed.
    #[error("ptrace({op}) on thread {tid} failed: {source}{}", ptrace_hint(source))]
    Ptrace {
        /// The request, e.g. `GETREGS`.
        op: &'static str,
        /// The thread.
        tid: Pid,
        /// The kernel's error.
        source: io::Error,
    },
    /// Attaching is not permitted or not possible; the message says what to change.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// `waitpid` failed.
    #[error("waitpid({who}) failed: {source}{}", wait_hint(source))]
    Wait {
        /// The pid waited for (-1: any).
        who: Pid,
        /// The kernel's error.
        source: io::Error,
    },
    /// Reading or writing the memory of another process failed.
    #[error("cannot {op} {len} bytes at {addr:#x} in process {pid}: {source} (is the range mapped{}?)", if *op == "write" { " and the process still alive" } else { "" })]
    Memory {
        /// `read` or `write`.
        op: &'static str,
        /// The process.
        pid: Pid,
        /// The start address.
        addr: u64,
        /// The length.
        len: usize,
        /// The kernel's error.
        source: io::Error,
    },
    /// A `/proc` file could not be read.
    #[error("cannot read {path}: {source}")]
    Proc {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The thread exited or was killed while the engine was using it.
    #[error("thread {tid} ended while being {during} ({stop:?})")]
    Gone {
        /// The thread.
        tid: Pid,
        /// What the engine was doing.
        during: &'static str,
        /// How it ended (boxed: a stop carries a whole siginfo).
        stop: Box<Stop>,
    },
    /// The thread is in a stop where the operation is impossible.
    #[error("thread {tid}: cannot {what} in this stop: {why}")]
    BadStop {
        /// The thread.
        tid: Pid,
        /// The operation.
        what: &'static str,
        /// Why not.
        why: String,
    },
    /// A system call run inside the tracee returned an error.
    #[error("{name} inside process {pid} failed: {}", io::Error::from_raw_os_error(*errno))]
    Remote {
        /// The call (`mmap`, `mprotect`...).
        name: &'static str,
        /// The process.
        pid: Pid,
        /// The errno it returned.
        errno: i32,
    },
    /// The running kernel lacks a needed facility.
    #[error("{what} is not supported by this kernel: {source} ({need})")]
    Unsupported {
        /// The facility.
        what: &'static str,
        /// What is needed instead.
        need: &'static str,
        /// The kernel's error.
        source: io::Error,
    },
    /// An ELF blob cannot be loaded ([`crate::Blob::parse`], [`crate::Process::load_image`]).
    #[error("cannot load the ELF blob: {why}")]
    Image {
        /// What is wrong with it, and what to change.
        why: String,
    },
    /// A function called with [`crate::Process::call`] faulted; the thread's registers were
    /// restored.
    #[error("the function called in thread {tid} faulted: signal {signal} at address {addr:#x}, instruction {rip:#x}")]
    CallFault {
        /// The thread.
        tid: Pid,
        /// SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGTRAP.
        signal: i32,
        /// The faulting address (`si_addr`).
        addr: u64,
        /// The instruction pointer at the fault.
        rip: u64,
    },
    /// A function called with [`crate::Process::call`] did not return in time; the thread
    /// was interrupted and its registers restored (what the function did so far stays done).
    #[error("the function called in thread {tid} did not return within {after:?} (stopped at instruction {rip:#x})")]
    CallTimeout {
        /// The thread.
        tid: Pid,
        /// The time limit.
        after: std::time::Duration,
        /// Where the thread was when interrupted.
        rip: u64,
    },
    /// A request the engine cannot carry out as asked (e.g. too many call arguments).
    #[error("{0}")]
    Invalid(String),
    /// Another failure of a system call made by the engine itself.
    #[error("{what}: {source}")]
    Os {
        /// What the engine was doing.
        what: String,
        /// The error.
        source: io::Error,
    },
}

fn ptrace_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ESRCH) => {
            " (the thread is gone, not traced by this thread, or not in a ptrace stop)"
        }
        Some(libc::EPERM) => " (not permitted: see check_attach for the reason)",
        Some(libc::EIO) | Some(libc::EINVAL) => " (request not valid in this stop)",
        _ => "",
    }
}

fn wait_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ECHILD) => " (no such traced thread or child of this thread)",
        _ => "",
    }
}

impl Error {
    /// The OS error number behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Ptrace { source, .. }
            | Error::Wait { source, .. }
            | Error::Memory { source, .. }
            | Error::Proc { source, .. }
            | Error::Unsupported { source, .. }
            | Error::Os { source, .. } => source.raw_os_error(),
            Error::Remote { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}
