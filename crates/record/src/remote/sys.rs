//! What the ptrace route needs beyond the engine (`mmio_trace_ptrace`): the program's
//! memory through `process_vm_readv`/`writev`, which honour its protections (an emulated
//! store to read-only memory must fail as the instruction would), and a thread's process.

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

/// The thread-group id of `tid` (`Tgid:` of `/proc/TID/status`).
pub(crate) fn tgid_of(tid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}
