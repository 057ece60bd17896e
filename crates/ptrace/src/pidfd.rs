//! Process descriptors, and duplicating another process's file descriptor.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::{Error, Pid, Result};

/// A duplicate of file descriptor `fd` of process `pid` (`pidfd_open` + `pidfd_getfd`, Linux
/// 5.6). It refers to the same open file (same offset, same driver state), which is what an
/// alias mapping of a device must be made from. Needs the same permission as attaching with
/// ptrace.
pub fn pidfd_getfd(pid: Pid, fd: i32) -> Result<OwnedFd> {
    let pidfd = pidfd_open(pid)?;
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_getfd takes integers and returns a new descriptor or -1.
    let nfd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if nfd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => Error::Unsupported {
                what: "pidfd_getfd",
                need: "Linux 5.6 or later; or open the device path again",
                source: e,
            },
            Some(libc::EBADF) => Error::Os { what: format!("process {pid} has no file descriptor {fd}"), source: e },
            Some(libc::EPERM) => Error::Os {
                what: format!("pidfd_getfd({pid}, {fd}) not permitted (needs ptrace attach rights over the process)"),
                source: e,
            },
            _ => Error::Os { what: format!("pidfd_getfd({pid}, {fd})"), source: e },
        });
    }
    // SAFETY: a descriptor the kernel just gave us and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(nfd as i32) })
}

/// A descriptor for process `pid` (`pidfd_open`, Linux 5.3): readable once it has ended.
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a new descriptor or -1.
    let pfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pfd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => Error::Unsupported {
                what: "pidfd_open",
                need: "Linux 5.3 or later; duplicating a process's file descriptor needs pidfd_getfd (5.6)",
                source: e,
            },
            Some(libc::ESRCH) => Error::Attach(crate::AttachError::NoSuchProcess { pid }),
            _ => Error::Os { what: format!("pidfd_open({pid})"), source: e },
        });
    }
    // SAFETY: `pfd` is a descriptor the kernel just gave us and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(pfd as i32) })
}
