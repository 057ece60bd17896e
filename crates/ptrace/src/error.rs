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
