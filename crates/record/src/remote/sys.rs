//! The few ptrace and process-memory calls the ptrace route makes, as thin wrappers over
//! `libc` (errors as `io::Error`).

use std::io;

/// `PTRACE_GET_SYSCALL_INFO` (Linux 5.3): whether a syscall stop is the entry or the exit.
const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
/// `ptrace_syscall_info.op` values.
pub(crate) const SYSCALL_INFO_ENTRY: u8 = 1;
pub(crate) const SYSCALL_INFO_EXIT: u8 = 2;
/// `NT_X86_XSTATE`: the XSAVE area (standard format) as a register set.
const NT_X86_XSTATE: libc::c_int = 0x202;

/// Registers of a stopped tracee.
pub(crate) type Regs = libc::user_regs_struct;

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// One `ptrace(req, tid, addr, data)` call.
fn ptrace(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: every caller passes `addr`/`data` as the request defines them (pointers to
    // live buffers of the size the request writes, or plain numbers).
    check(unsafe { libc::ptrace(req, tid, addr, data) })
}

/// `PTRACE_SEIZE` with `options`.
pub(crate) fn seize(pid: i32, options: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_SEIZE, pid, 0, options as usize).map(drop)
}

/// Resumes a stopped tracee, delivering `sig` (0: none).
pub(crate) fn cont(tid: i32, sig: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_CONT, tid, 0, sig as usize).map(drop)
}

/// Resumes to the next system call entry or exit (or seccomp stop).
pub(crate) fn syscall(tid: i32, sig: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_SYSCALL, tid, 0, sig as usize).map(drop)
}

/// Runs one instruction.
pub(crate) fn singlestep(tid: i32, sig: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_SINGLESTEP, tid, 0, sig as usize).map(drop)
}

/// Leaves a tracee in group-stop, but reports what would end it (job control works).
pub(crate) fn listen(tid: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_LISTEN, tid, 0, 0).map(drop)
}

/// Stops a running tracee (an event stop follows).
pub(crate) fn interrupt(tid: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// The message of the last ptrace event (a new tid, a former tid at exec).
pub(crate) fn event_msg(tid: i32) -> io::Result<u64> {
    let mut v: libc::c_ulong = 0;
    ptrace(
        libc::PTRACE_GETEVENTMSG,
        tid,
        0,
        &mut v as *mut libc::c_ulong as usize,
    )?;
    Ok(v)
}

/// The signal of a signal-delivery-stop.
pub(crate) fn siginfo(tid: i32) -> io::Result<libc::siginfo_t> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    ptrace(
        libc::PTRACE_GETSIGINFO,
        tid,
        0,
        &mut si as *mut libc::siginfo_t as usize,
    )?;
    Ok(si)
}

/// Replaces the signal of a signal-delivery-stop.
pub(crate) fn set_siginfo(tid: i32, si: &libc::siginfo_t) -> io::Result<()> {
    ptrace(
        libc::PTRACE_SETSIGINFO,
        tid,
        0,
        si as *const libc::siginfo_t as usize,
    )
    .map(drop)
}

/// The general-purpose registers.
pub(crate) fn get_regs(tid: i32) -> io::Result<Regs> {
    // SAFETY: plain data.
    let mut r: Regs = unsafe { std::mem::zeroed() };
    ptrace(libc::PTRACE_GETREGS, tid, 0, &mut r as *mut Regs as usize)?;
    Ok(r)
}

/// Sets the general-purpose registers.
pub(crate) fn set_regs(tid: i32, r: &Regs) -> io::Result<()> {
    ptrace(libc::PTRACE_SETREGS, tid, 0, r as *const Regs as usize).map(drop)
}

/// Reads the XSAVE area into `buf`; returns its size.
pub(crate) fn get_xstate(tid: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    ptrace(
        libc::PTRACE_GETREGSET,
        tid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut libc::iovec as usize,
    )?;
    Ok(iov.iov_len)
}

/// Writes the XSAVE area back.
pub(crate) fn set_xstate(tid: i32, buf: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    ptrace(
        libc::PTRACE_SETREGSET,
        tid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut libc::iovec as usize,
    )
    .map(drop)
}

/// What kind of system call stop the tracee is in (`SYSCALL_INFO_*`), 0 if none.
pub(crate) fn syscall_op(tid: i32) -> io::Result<u8> {
    let mut buf = [0u8; 88];
    ptrace(
        PTRACE_GET_SYSCALL_INFO,
        tid,
        buf.len(),
        buf.as_mut_ptr() as usize,
    )?;
    Ok(buf[0])
}

/// Reads `buf.len()` bytes at `addr` of process `pid`; returns how many could be read.
pub(crate) fn read_mem(pid: i32, addr: u64, buf: &mut [u8]) -> usize {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    n.max(0) as usize
}

/// Writes `data` at `addr` of process `pid`; whether all of it was written.
pub(crate) fn write_mem(pid: i32, addr: u64, data: &[u8]) -> bool {
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: reads `data` only; the remote side is checked by the kernel.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    n == data.len() as isize
}

/// `waitpid(pid, flags | __WALL)`, retried on EINTR: (pid, status).
pub(crate) fn wait(pid: i32, flags: i32) -> io::Result<(i32, i32)> {
    loop {
        let mut st = 0;
        // SAFETY: plain waitpid.
        let r = unsafe { libc::waitpid(pid, &mut st, flags | libc::__WALL) };
        if r >= 0 {
            return Ok((r, st));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A descriptor of process `pid` (`pidfd_open`).
pub(crate) fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system call.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// A duplicate of descriptor `fd` of the process `pidfd` refers to (`pidfd_getfd`).
pub(crate) fn pidfd_getfd(pidfd: i32, fd: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system call.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own (close-on-exec, as pidfd_getfd makes it).
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(r as i32) })
}

/// `tgkill(tgid, tid, sig)`.
pub(crate) fn tgkill(tgid: i32, tid: i32, sig: i32) {
    // SAFETY: plain system call.
    unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) };
}

/// The thread-group id of `tid` (`Tgid:` of `/proc/TID/status`).
pub(crate) fn tgid_of(tid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}
