//! The raw `ptrace(2)` call and the few requests that pass pointers; all `unsafe` of the
//! crate's ptrace use lives here.

use std::io;

use crate::{Error, Pid, Result};

/// Request numbers libc does not export for every target, as in `<linux/ptrace.h>`.
pub const PTRACE_GETREGSET: libc::c_uint = 0x4204;
pub const PTRACE_SETREGSET: libc::c_uint = 0x4205;
pub const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
pub const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
pub const NT_PRFPREG: libc::c_int = 2;
pub const NT_X86_XSTATE: libc::c_int = 0x202;

/// `ptrace(req, tid, addr, data)` for requests whose `addr`/`data` are plain integers.
pub fn ptrace_int(
    op: &'static str,
    req: libc::c_uint,
    tid: Pid,
    addr: u64,
    data: u64,
) -> Result<i64> {
    // SAFETY: the requests passed here (SEIZE, INTERRUPT, CONT, SYSCALL, SINGLESTEP, LISTEN,
    // DETACH, SETOPTIONS) take integers, not pointers: the kernel dereferences nothing.
    let r = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        return Err(Error::Ptrace {
            op,
            tid,
            source: io::Error::last_os_error(),
        });
    }
    Ok(r)
}

/// `ptrace(req, tid, addr, &mut T)` for requests that read or write one `T` (GETREGS,
/// SETREGS, GETSIGINFO, SETSIGINFO, GETEVENTMSG, GET_SYSCALL_INFO with `addr` = size).
///
/// # Safety
/// `req` must be a request whose `data` points to exactly one `T` (or to `addr` bytes for
/// GET_SYSCALL_INFO, `addr` <= size of `T`) and whose layout matches the kernel's.
pub unsafe fn ptrace_ptr<T>(
    op: &'static str,
    req: libc::c_uint,
    tid: Pid,
    addr: u64,
    data: &mut T,
) -> Result<i64> {
    // SAFETY: the caller's contract: `data` is a valid, exclusively borrowed T of the layout
    // the request reads or writes.
    let r = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut T as *mut libc::c_void,
        )
    };
    if r == -1 {
        return Err(Error::Ptrace {
            op,
            tid,
            source: io::Error::last_os_error(),
        });
    }
    Ok(r)
}

/// PTRACE_GETREGSET / SETREGSET of note type `nt` over `buf`; returns the byte count the
/// kernel used (it shortens the iovec on GET).
pub fn regset(set: bool, tid: Pid, nt: libc::c_int, buf: &mut [u8]) -> Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let (op, req) = if set {
        ("SETREGSET", PTRACE_SETREGSET)
    } else {
        ("GETREGSET", PTRACE_GETREGSET)
    };
    // SAFETY: the iovec describes `buf`, which stays borrowed for the call; the kernel writes
    // at most `iov_len` bytes into it (GET) or reads them (SET).
    let r = unsafe {
        libc::ptrace(
            req,
            tid,
            nt as usize as *mut libc::c_void,
            &mut iov as *mut libc::iovec as *mut libc::c_void,
        )
    };
    if r == -1 {
        return Err(Error::Ptrace {
            op,
            tid,
            source: io::Error::last_os_error(),
        });
    }
    Ok(iov.iov_len)
}

/// `user_regs_struct` of a stopped thread.
pub fn getregs(tid: Pid) -> Result<libc::user_regs_struct> {
    // SAFETY: all-zero is a valid user_regs_struct (plain integers).
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: GETREGS writes one user_regs_struct.
    unsafe { ptrace_ptr("GETREGS", libc::PTRACE_GETREGS, tid, 0, &mut r)? };
    Ok(r)
}

/// Sets `user_regs_struct` of a stopped thread.
pub fn setregs(tid: Pid, regs: &libc::user_regs_struct) -> Result<()> {
    let mut r = *regs;
    // SAFETY: SETREGS reads one user_regs_struct.
    unsafe { ptrace_ptr("SETREGS", libc::PTRACE_SETREGS, tid, 0, &mut r)? };
    Ok(())
}

/// The siginfo of the thread's current stop.
pub fn getsiginfo(tid: Pid) -> Result<libc::siginfo_t> {
    // SAFETY: all-zero is a valid siginfo_t (integers and a padding array).
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: GETSIGINFO writes one siginfo_t.
    unsafe { ptrace_ptr("GETSIGINFO", libc::PTRACE_GETSIGINFO, tid, 0, &mut si)? };
    Ok(si)
}

/// Replaces the siginfo of the thread's current stop.
pub fn setsiginfo(tid: Pid, si: &libc::siginfo_t) -> Result<()> {
    let mut si = *si;
    // SAFETY: SETSIGINFO reads one siginfo_t.
    unsafe { ptrace_ptr("SETSIGINFO", libc::PTRACE_SETSIGINFO, tid, 0, &mut si)? };
    Ok(())
}

/// PTRACE_GETEVENTMSG.
pub fn geteventmsg(tid: Pid) -> Result<u64> {
    let mut m: libc::c_ulong = 0;
    // SAFETY: GETEVENTMSG writes one unsigned long.
    unsafe { ptrace_ptr("GETEVENTMSG", libc::PTRACE_GETEVENTMSG, tid, 0, &mut m)? };
    Ok(m as u64)
}

/// `struct ptrace_syscall_info` up to the entry/exit/seccomp union (kernel ABI, 5.3+).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SyscallInfo {
    pub op: u8,
    pub pad: [u8; 3],
    pub arch: u32,
    pub instruction_pointer: u64,
    pub stack_pointer: u64,
    /// entry: nr, args[6]; exit: rval, is_error; seccomp: nr, args[6], ret_data.
    pub data: [u64; 8],
}

pub const SYSCALL_INFO_ENTRY: u8 = 1;

/// PTRACE_GET_SYSCALL_INFO.
pub fn syscall_info(tid: Pid) -> Result<SyscallInfo> {
    let mut i = SyscallInfo::default();
    let size = std::mem::size_of::<SyscallInfo>() as u64;
    // SAFETY: the kernel writes at most `size` bytes, the size of `i`.
    unsafe {
        ptrace_ptr(
            "GET_SYSCALL_INFO",
            PTRACE_GET_SYSCALL_INFO,
            tid,
            size,
            &mut i,
        )?
    };
    Ok(i)
}

/// `struct ptrace_rseq_configuration` (kernel ABI, 5.13+).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct RseqConfiguration {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

/// PTRACE_GET_RSEQ_CONFIGURATION: where the thread's registered `struct rseq` is (pointer
/// 0: none registered).
pub fn rseq_configuration(tid: Pid) -> Result<RseqConfiguration> {
    let mut c = RseqConfiguration::default();
    let size = std::mem::size_of::<RseqConfiguration>() as u64;
    // SAFETY: the kernel writes at most `size` bytes, the size of `c`.
    unsafe {
        ptrace_ptr(
            "GET_RSEQ_CONFIGURATION",
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            size,
            &mut c,
        )?
    };
    Ok(c)
}

/// `tgkill(tgid, tid, sig)`.
pub fn tgkill(tgid: Pid, tid: Pid, sig: i32) -> io::Result<()> {
    // SAFETY: tgkill takes integers only.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `rt_tgsigqueueinfo(tgid, tid, sig, info)`: queues a signal with the given siginfo (the
/// kernel allows this only for negative `si_code`s other than SI_TKILL).
pub fn tgsigqueueinfo(tgid: Pid, tid: Pid, si: &libc::siginfo_t) -> io::Result<()> {
    let mut si = *si;
    // SAFETY: the kernel reads one siginfo_t from the pointer, valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            tgid,
            tid,
            si.si_signo,
            &mut si as *mut libc::siginfo_t,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
