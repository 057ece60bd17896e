//! Memory of another process.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::{Error, Pid, Result};

/// Reads exactly `buf.len()` bytes at `addr` of process `pid` (`process_vm_readv`; falls
/// back to `/proc/PID/mem`, which also reads pages the process cannot read itself, e.g.
/// `PROT_NONE` ones). Fails if any byte is unreadable.
pub fn read_mem(pid: Pid, addr: u64, buf: &mut [u8]) -> Result<()> {
    if buf.is_empty() || vm_readv(pid, addr, buf).is_ok() {
        return Ok(());
    }
    let f = open_mem(pid, false).map_err(|source| mem_err("read", pid, addr, buf.len(), source))?;
    pread_all(&f, addr, buf).map_err(|source| mem_err("read", pid, addr, buf.len(), source))
}

/// Writes `data` at `addr` of process `pid` through `/proc/PID/mem` (which, like a
/// debugger's poke, also writes read-only and `PROT_NONE` pages, e.g. code).
pub fn write_mem(pid: Pid, addr: u64, data: &[u8]) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let f =
        open_mem(pid, true).map_err(|source| mem_err("write", pid, addr, data.len(), source))?;
    pwrite_all(&f, addr, data).map_err(|source| mem_err("write", pid, addr, data.len(), source))
}

/// A process's memory with its `/proc/PID/mem` file kept open (opening it costs a path walk
/// and a permission check). After the process execs, the open file addresses the old
/// program's memory and fails; a failed access is retried once with the file opened again,
/// and [`Mem::reopen`] drops it at once.
#[derive(Debug)]
pub struct Mem {
    pid: Pid,
    file: Option<File>,
}

impl Mem {
    /// A handle for process `pid`; the file is opened on first use.
    pub fn new(pid: Pid) -> Mem {
        Mem { pid, file: None }
    }

    /// The process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Forgets the open file (after an exec); the next access reopens it.
    pub fn reopen(&mut self) {
        self.file = None;
    }

    fn file(&mut self) -> io::Result<&File> {
        if self.file.is_none() {
            self.file = Some(open_mem(self.pid, true)?);
        }
        Ok(self.file.as_ref().expect("just set"))
    }

    /// Reads exactly `buf.len()` bytes at `addr` (see [`read_mem`]).
    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() || vm_readv(self.pid, addr, buf).is_ok() {
            return Ok(());
        }
        let (pid, len) = (self.pid, buf.len());
        let mut r = self.file().and_then(|f| pread_all(f, addr, buf));
        if r.is_err() {
            // The open file may address the memory of the program the process ran before
            // an exec: once more with a fresh one.
            self.file = None;
            r = self.file().and_then(|f| pread_all(f, addr, buf));
        }
        r.map_err(|source| mem_err("read", pid, addr, len, source))
    }

    /// Writes `data` at `addr` (see [`write_mem`]).
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let (pid, len) = (self.pid, data.len());
        let mut r = self.file().and_then(|f| pwrite_all(f, addr, data));
        if r.is_err() {
            // As in `read`: perhaps the file of the program before an exec.
            self.file = None;
            r = self.file().and_then(|f| pwrite_all(f, addr, data));
        }
        r.map_err(|source| mem_err("write", pid, addr, len, source))
    }
}

fn mem_err(op: &'static str, pid: Pid, addr: u64, len: usize, source: io::Error) -> Error {
    Error::Memory {
        op,
        pid,
        addr,
        len,
        source,
    }
}

fn open_mem(pid: Pid, write: bool) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(format!("/proc/{pid}/mem"))
}

/// Offsets above i64::MAX (kernel addresses) cannot be passed to pread; the kernel would
/// refuse them anyway.
fn offset(addr: u64) -> io::Result<u64> {
    if addr > i64::MAX as u64 {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(addr)
}

fn pread_all(f: &File, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], offset(addr + done as u64)?)?;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        done += n;
    }
    Ok(())
}

fn pwrite_all(f: &File, addr: u64, data: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        let n = f.write_at(&data[done..], offset(addr + done as u64)?)?;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        done += n;
    }
    Ok(())
}

/// One `process_vm_readv`; Ok only if every byte was read.
fn vm_readv(pid: Pid, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, exclusively borrowed for the call; the kernel only
    // reads the other process's memory and writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != buf.len() {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(())
}
