//! Writing program text while other threads run it.
//!
//! Text is written through `/proc/self/mem` (the kernel writes through its own mapping of
//! the page, so the page's protection never changes and no other thread can see a
//! writable code page), or, where that is refused (`proc_mem.force_override=never`, an
//! LSM), by making the page read-write-execute for the write and restoring its protection.
//! Instructions are replaced with the kernel's int3-first protocol (`text_poke_bp`), each
//! step followed by `membarrier(PRIVATE_EXPEDITED_SYNC_CORE)` so that every thread
//! refetches the instruction stream before the next step: a thread that reaches the site
//! in the middle of a change executes the old instruction, the int3 (which the fault path
//! sends to the trampoline) or the new one, never a mix.
//!
//! Everything here runs in the patcher thread (it allocates and reads `/proc`), never in
//! a signal handler. Protection changes use the tracer's raw system calls, which the
//! preload library's `mprotect` hook never sees.

// The patcher (patch/mod.rs) calls these; on a branch without it only tests do, and
// this allow can go once both are merged.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::sync::{Mutex, Once};

use crate::sys;

const SYS_PROCESS_VM_READV: usize = 310;
const SYS_MEMBARRIER: usize = 324;
const MEMBARRIER_CMD_QUERY: usize = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: usize = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: usize = 1 << 6;

const PAGE: u64 = 4096;

/// The lowest descriptor number `/proc/self/mem` is moved to: programs close, reuse and
/// `dup2` over low numbers; one that closed ours and reopened something at the same
/// number would otherwise have its file written at offsets that are code addresses.
const MEM_FD_MIN: i32 = 900;

/// How program text is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `pwrite` on `/proc/self/mem`.
    ProcMem,
    /// `mprotect` the page read-write-execute, store, restore the page's protection.
    Mprotect,
}

static INIT: Once<Result<Route, &'static str>> = Once::new();
/// The route `poke` uses now: 0 none, 1 `/proc/self/mem`, 2 `mprotect`. It can change
/// after `init`: a forked child that cannot reopen `/proc/self/mem` falls back to
/// `mprotect`.
static ROUTE: AtomicU8 = AtomicU8::new(0);
/// `/proc/self/mem`, and what identifies it: the process that opened it (an inherited
/// descriptor writes into the parent, whose memory it was opened on) and its inode (a
/// program that closed our descriptor and opened another file at that number).
static MEM_FD: AtomicI32 = AtomicI32::new(-1);
static MEM_PID: AtomicU32 = AtomicU32::new(0);
static MEM_DEV: AtomicU64 = AtomicU64::new(0);
static MEM_INO: AtomicU64 = AtomicU64::new(0);
/// Serialises reopening and the mprotect route's protection changes (the patcher thread
/// normally is the only writer; tests and a forked child are not).
static WRITE_LOCK: Mutex<()> = Mutex::new(());

/// One-time set-up: registers this process for `membarrier(PRIVATE_EXPEDITED_SYNC_CORE)`,
/// opens `/proc/self/mem` (at a descriptor number >= 900, close-on-exec) and proves that a
/// write works by writing an identical byte of one of our own functions back; falls back
/// to the `mprotect` route when that write is refused. `Err(reason)` when membarrier
/// SYNC_CORE is unavailable or neither route can write (the caller then traces trap-only
/// and names the reason once). Idempotent: later calls return the first result.
pub(crate) fn init() -> Result<Route, &'static str> {
    *INIT.get_or_init(|| {
        // SAFETY: QUERY takes no pointers.
        let q = unsafe { sys::syscall6(SYS_MEMBARRIER, MEMBARRIER_CMD_QUERY, 0, 0, 0, 0, 0) };
        if q == -(libc::ENOSYS as isize) {
            return Err("the kernel has no membarrier (Linux >= 4.16 needed)");
        }
        if q < 0 {
            return Err("membarrier is refused (a seccomp filter?)");
        }
        if (q as usize) & MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE == 0 {
            return Err("membarrier SYNC_CORE is not available (Linux >= 4.16 needed)");
        }
        if !register() {
            return Err("membarrier SYNC_CORE registration was refused");
        }
        let probe = probe_addr();
        let mut byte = [0u8; 1];
        if read(probe, &mut byte) != 1 {
            return Err("cannot read our own code");
        }
        if open_mem() {
            if pwrite_mem(probe, &byte) == Ok(()) {
                ROUTE.store(1, Ordering::Release);
                return Ok(Route::ProcMem);
            }
            // Readable but not writable (proc_mem.force_override, an LSM): no use keeping it.
            let fd = MEM_FD.swap(-1, Ordering::AcqRel);
            sys::close(fd);
        }
        if mprotect_write(probe, &byte) == Ok(()) {
            ROUTE.store(2, Ordering::Release);
            return Ok(Route::Mprotect);
        }
        Err("neither /proc/self/mem nor mprotect can write program text")
    })
}

/// A byte of our own code the set-up writes back unchanged to prove that writing works.
#[inline(never)]
fn probe_addr() -> u64 {
    probe_addr as *const () as usize as u64
}

fn register() -> bool {
    // SAFETY: a registration takes no pointers.
    let r = unsafe {
        sys::syscall6(
            SYS_MEMBARRIER,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
            0,
            0,
            0,
            0,
            0,
        )
    };
    r == 0
}

/// The descriptor `/proc/self/mem` is open on (-1: none), for the preload library's
/// `close`/`close_range` hooks to spare.
pub(crate) fn mem_fd() -> i32 {
    MEM_FD.load(Ordering::Acquire)
}

/// Opens `/proc/self/mem` for this process (closing a previous descriptor first).
fn open_mem() -> bool {
    let old = MEM_FD.swap(-1, Ordering::AcqRel);
    if old >= 0 {
        sys::close(old);
    }
    let fd = sys::open(c"/proc/self/mem", libc::O_RDWR | libc::O_CLOEXEC);
    if fd < 0 {
        return false;
    }
    let fd = fd as i32;
    let high = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, MEM_FD_MIN as usize);
    // A descriptor limit at or below 900: keep the low number.
    let fd = if high >= 0 {
        sys::close(fd);
        high as i32
    } else {
        fd
    };
    let Some(st) = sys::fstat(fd) else {
        sys::close(fd);
        return false;
    };
    MEM_DEV.store(st.st_dev, Ordering::Relaxed);
    MEM_INO.store(st.st_ino, Ordering::Relaxed);
    MEM_PID.store(sys::getpid(), Ordering::Relaxed);
    MEM_FD.store(fd, Ordering::Release);
    true
}

/// Whether `MEM_FD` is this process's `/proc/self/mem`.
fn mem_fd_valid() -> bool {
    let fd = MEM_FD.load(Ordering::Acquire);
    if fd < 0 || MEM_PID.load(Ordering::Relaxed) != sys::getpid() {
        return false;
    }
    sys::fstat(fd).is_some_and(|st| {
        st.st_dev == MEM_DEV.load(Ordering::Relaxed) && st.st_ino == MEM_INO.load(Ordering::Relaxed)
    })
}

fn pwrite_mem(addr: u64, bytes: &[u8]) -> Result<(), i32> {
    let fd = MEM_FD.load(Ordering::Acquire);
    let n = sys::pwrite(fd, bytes, addr);
    if n == bytes.len() as isize {
        Ok(())
    } else if n < 0 {
        Err(-n as i32)
    } else {
        Err(libc::EIO)
    }
}

/// All threads of the process serialise their instruction streams
/// (`membarrier(PRIVATE_EXPEDITED_SYNC_CORE)`). Requires a successful [`init`]. A forked
/// child (whose registration the kernel may not carry over) registers again on first use.
pub(crate) fn sync_cores() {
    try_sync_cores();
}

/// [`sync_cores`], returning the kernel's answer (0 or `-errno`).
fn try_sync_cores() -> isize {
    let mut r = 0;
    for _ in 0..2 {
        r = membarrier_sync();
        if r == 0 || r != -(libc::EPERM as isize) || !register() {
            break;
        }
    }
    r
}

fn membarrier_sync() -> isize {
    // SAFETY: the command takes no pointers.
    unsafe {
        sys::syscall6(
            SYS_MEMBARRIER,
            MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
            0,
            0,
            0,
            0,
            0,
        )
    }
}

/// Writes `bytes` at `addr` (program text or a trampoline page, typically read-execute
/// only) through the route [`init`] chose. `Err(errno)`: `ENOSYS` before a successful
/// `init`, else what the write returned.
pub(crate) fn poke(addr: u64, bytes: &[u8]) -> Result<(), i32> {
    if bytes.is_empty() {
        return Ok(());
    }
    write(route()?, addr, bytes)
}

/// The route to write with now, after making sure a `/proc/self/mem` descriptor is this
/// process's (checked once per `poke` or `replace`: 0.6 µs).
fn route() -> Result<u8, i32> {
    match ROUTE.load(Ordering::Acquire) {
        1 => {
            if !mem_fd_valid() {
                let _g = WRITE_LOCK.lock();
                if !mem_fd_valid() && !open_mem() {
                    // A forked child that cannot open its own /proc/self/mem.
                    ROUTE.store(2, Ordering::Release);
                    return Ok(2);
                }
            }
            Ok(1)
        }
        2 => Ok(2),
        _ => Err(libc::ENOSYS),
    }
}

fn write(route: u8, addr: u64, bytes: &[u8]) -> Result<(), i32> {
    if route == 1 {
        pwrite_mem(addr, bytes)
    } else {
        mprotect_write(addr, bytes)
    }
}

/// The mprotect route: each page the write touches is made read-write-execute, written,
/// and given back the protection `/proc/self/maps` shows for it.
fn mprotect_write(addr: u64, bytes: &[u8]) -> Result<(), i32> {
    let end = addr.checked_add(bytes.len() as u64).ok_or(libc::EFAULT)?;
    let _g = WRITE_LOCK.lock();
    let maps = maps();
    let mut page = addr & !(PAGE - 1);
    while page < end {
        let m = maps
            .iter()
            .find(|m| m.start <= page && page < m.end)
            .ok_or(libc::EFAULT)?;
        let prot = m.prot();
        let lo = addr.max(page);
        let hi = end.min(page + PAGE);
        // SAFETY: the page is mapped (it is in maps); only its protection changes, and it
        // keeps execute permission so threads running it are unaffected.
        let r = unsafe {
            sys::mprotect(
                page as usize,
                PAGE as usize,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            )
        };
        if r < 0 {
            return Err(-r as i32);
        }
        let src = &bytes[(lo - addr) as usize..(hi - addr) as usize];
        // SAFETY: [lo, hi) lies in the page just made writable; volatile so the stores are
        // not merged with or moved across the protection changes.
        unsafe {
            for (i, b) in src.iter().enumerate() {
                core::ptr::write_volatile((lo as *mut u8).add(i), *b);
            }
        }
        // SAFETY: as above, giving the page its protection back.
        let r = unsafe { sys::mprotect(page as usize, PAGE as usize, prot) };
        if r < 0 {
            return Err(-r as i32);
        }
        page += PAGE;
    }
    Ok(())
}

/// Replaces the `old.len()` (1..=15) bytes at `rip`, which hold `old`, by `new` (same
/// length) with the int3-first protocol: byte 0 = `0xCC`, sync; bytes `1..` = `new[1..]`,
/// sync; byte 0 = `new[0]`, sync (steps that change nothing are skipped; a change of byte
/// 0 alone is one atomic store). The caller has made the fault path send a SIGTRAP at
/// `rip + 1` to the trampoline first. `Err(EAGAIN)`: the text no longer holds `old` (the
/// program rewrote it); `Err(EINVAL)`: bad lengths; else the write's errno. A failed
/// middle step puts `old[0]` back; a failed last step leaves the int3, which the fault
/// path still sends to the trampoline.
pub(crate) fn replace(rip: u64, old: &[u8], new: &[u8]) -> Result<(), i32> {
    let n = old.len();
    if n == 0 || n > 15 || new.len() != n {
        return Err(libc::EINVAL);
    }
    let mut cur = [0u8; 15];
    if read(rip, &mut cur[..n]) != n || cur[..n] != *old {
        return Err(libc::EAGAIN);
    }
    if old == new {
        return Ok(());
    }
    let r = route()?;
    if old[1..] == new[1..] {
        write(r, rip, &new[..1])?;
        sync_cores();
        return Ok(());
    }
    if old[0] != 0xCC {
        write(r, rip, &[0xCC])?;
        sync_cores();
    }
    if let Err(e) = write(r, rip + 1, &new[1..]) {
        if old[0] != 0xCC && write(r, rip, &old[..1]).is_ok() {
            sync_cores();
        }
        return Err(e);
    }
    sync_cores();
    if new[0] != 0xCC {
        write(r, rip, &new[..1])?;
        sync_cores();
    }
    Ok(())
}

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug)]
pub(crate) struct Mapping {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// `rwxp`/`rwxs` as the kernel prints them.
    pub perms: [u8; 4],
    /// The file offset of `start` (0 for anonymous memory). Read only by the object walk
    /// of the no_std build (the std one asks the loader).
    #[cfg_attr(feature = "std", allow(dead_code))]
    pub offset: u64,
    /// The path or pseudo-name (`[vdso]`, `[heap]`, ...); empty for anonymous memory.
    pub name: String,
}

impl Mapping {
    /// The `PROT_*` bits of the mapping.
    pub fn prot(&self) -> i32 {
        let mut p = libc::PROT_NONE;
        if self.perms[0] == b'r' {
            p |= libc::PROT_READ;
        }
        if self.perms[1] == b'w' {
            p |= libc::PROT_WRITE;
        }
        if self.perms[2] == b'x' {
            p |= libc::PROT_EXEC;
        }
        p
    }
}

/// This process's mappings, in address order (empty when `/proc/self/maps` cannot be
/// read).
pub(crate) fn maps() -> Vec<Mapping> {
    sys::read_file(c"/proc/self/maps")
        .and_then(|b| String::from_utf8(b).ok())
        .map(|s| parse_maps(&s))
        .unwrap_or_default()
}

fn parse_maps(s: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    for line in s.lines() {
        let mut rest = line;
        let mut field = || {
            let t = rest.trim_start();
            let i = t.find(' ').unwrap_or(t.len());
            let (f, r) = t.split_at(i);
            rest = r;
            f
        };
        let range = field();
        let perms = field();
        let (off, _dev, _ino) = (field(), field(), field());
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let p = perms.as_bytes();
        if p.len() < 4 {
            continue;
        }
        out.push(Mapping {
            start,
            end,
            perms: [p[0], p[1], p[2], p[3]],
            offset: u64::from_str_radix(off, 16).unwrap_or(0),
            name: rest.trim_start().to_string(),
        });
    }
    out
}

/// Reads up to `buf.len()` bytes at `addr` without faulting: stops at the first
/// unreadable page. Returns how many bytes were read.
pub(crate) fn read(addr: u64, buf: &mut [u8]) -> usize {
    // One remote iovec per page: process_vm_readv stops at the first element it cannot
    // read whole, so a split at page boundaries gives every readable byte before a hole.
    let mut remote = [libc::iovec {
        iov_base: core::ptr::null_mut(),
        iov_len: 0,
    }; 8];
    let mut n = 0;
    let mut a = addr;
    let end = addr.saturating_add(buf.len() as u64);
    while a < end && n < remote.len() {
        let next = ((a & !(PAGE - 1)) + PAGE).min(end);
        remote[n] = libc::iovec {
            iov_base: a as *mut libc::c_void,
            iov_len: (next - a) as usize,
        };
        n += 1;
        a = next;
    }
    let total = (a - addr) as usize;
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: total,
    };
    // SAFETY: the local iovec covers `buf`; the remote ones are only read by the kernel,
    // which checks them.
    let r = unsafe {
        sys::syscall6(
            SYS_PROCESS_VM_READV,
            sys::getpid() as usize,
            &local as *const libc::iovec as usize,
            1,
            remote.as_ptr() as usize,
            n,
            0,
        )
    };
    if r >= 0 {
        return r as usize;
    }
    if r == -(libc::EFAULT as isize) {
        // Nothing readable at `addr`.
        return 0;
    }
    // process_vm_readv refused (seccomp, an old kernel).
    read_proc_mem(addr, &mut buf[..total])
}

/// `read` through `/proc/self/mem`, which would also read pages the program cannot
/// (PROT_NONE: traced device pages, whose reads can have side effects): the read stops
/// where readable mappings do.
fn read_proc_mem(addr: u64, buf: &mut [u8]) -> usize {
    let total = buf.len();
    let maps = maps();
    let mut end = addr;
    while end < addr + total as u64 {
        match maps.iter().find(|m| m.start <= end && end < m.end) {
            Some(m) if m.perms[0] == b'r' => end = m.end,
            _ => break,
        }
    }
    let total = (end.min(addr + total as u64) - addr) as usize;
    if total == 0 {
        return 0;
    }
    let fd = sys::open(c"/proc/self/mem", libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return 0;
    }
    let fd = fd as i32;
    let r = sys::pread(fd, &mut buf[..total], addr);
    sys::close(fd);
    r.max(0) as usize
}

/// Whether the instruction at `[rip, rip + len)` may be patched with a jump that may also
/// cover the `extra` bytes after it (punning reads them, never writes them): all of it in
/// one mapping that is file-backed (a path; not anonymous, `[vdso]`, `[vsyscall]`,
/// `[heap]`, `[stack]`, `memfd:` or `(deleted)`), private, readable, executable and not
/// writable. `Err` gives a short reason for the user's report: "anonymous or JIT memory",
/// "vDSO", "vsyscall page", "deleted file", "shared mapping", "writable code", "not
/// executable", "execute-only code", "instruction crosses a mapping boundary", "not
/// mapped".
pub(crate) fn patchable(rip: u64, len: usize, extra: usize) -> Result<(), &'static str> {
    check_patchable(&maps(), rip, len, extra)
}

fn check_patchable(
    maps: &[Mapping],
    rip: u64,
    len: usize,
    extra: usize,
) -> Result<(), &'static str> {
    let m = maps
        .iter()
        .find(|m| m.start <= rip && rip < m.end)
        .ok_or("not mapped")?;
    let name = m.name.as_str();
    match name {
        "[vdso]" | "[vvar]" | "[vvar_vclock]" => return Err("vDSO"),
        "[vsyscall]" => return Err("vsyscall page"),
        _ => {}
    }
    // memfd, shared anonymous memory (/dev/zero) and System V segments are anonymous
    // memory under a file name: where JITs put code they write through a second mapping.
    let anon_file = ["/memfd:", "/dev/zero", "/SYSV"]
        .iter()
        .any(|p| name.starts_with(p));
    if !name.starts_with('/') || anon_file {
        return Err("anonymous or JIT memory");
    }
    if name.ends_with(" (deleted)") {
        return Err("deleted file");
    }
    if m.perms[3] != b'p' {
        return Err("shared mapping");
    }
    if m.perms[1] == b'w' {
        return Err("writable code");
    }
    if m.perms[2] != b'x' {
        return Err("not executable");
    }
    if m.perms[0] != b'r' {
        return Err("execute-only code");
    }
    let end = rip
        .checked_add(len as u64 + extra as u64)
        .ok_or("not mapped")?;
    if end > m.end {
        return Err("instruction crosses a mapping boundary");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{arena, pun};
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Once;

    // Functions of the test binary's own text (file-backed, private, read-execute) whose
    // first instruction the tests replace: a 5-byte `mov eax, 1` (a plain jump), and a
    // 2-byte `xor eax, eax` whose following `or eax, 0xf000` supplies three of the jump's
    // displacement bytes (a punned jump, about 256 MiB below the code).
    core::arch::global_asm!(
        ".pushsection .text.mmio_trace_patch_tests,\"ax\",@progbits",
        ".p2align 6",
        ".globl mmio_trace_patch_test_five",
        ".hidden mmio_trace_patch_test_five",
        "mmio_trace_patch_test_five:",
        ".byte 0xb8, 0x01, 0x00, 0x00, 0x00", // mov eax, 1
        "ret",
        "int3",
        "int3",
        ".p2align 6",
        ".globl mmio_trace_patch_test_short",
        ".hidden mmio_trace_patch_test_short",
        "mmio_trace_patch_test_short:",
        ".byte 0x31, 0xc0",                   // xor eax, eax
        ".byte 0x0d, 0x00, 0xf0, 0x00, 0x00", // or eax, 0xf000
        "ret",
        "int3",
        ".p2align 6",
        ".globl mmio_trace_patch_test_three",
        ".hidden mmio_trace_patch_test_three",
        "mmio_trace_patch_test_three:",
        ".byte 0x83, 0xe0, 0x00",             // and eax, 0
        ".byte 0x0d, 0xf0, 0x00, 0x00, 0x00", // or eax, 0xf0
        "ret",
        "int3",
        ".popsection",
    );

    extern "C" {
        fn mmio_trace_patch_test_five() -> u32;
        fn mmio_trace_patch_test_short() -> u32;
        fn mmio_trace_patch_test_three() -> u32;
    }

    /// Sites being patched and where their int3 sends a thread, as the fault path will.
    static TRAP_SITES: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    static TRAP_STUBS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    /// How many calls met an int3 mid-change, per site.
    static TRAPS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

    extern "C" fn on_trap(_sig: i32, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a ucontext_t to an SA_SIGINFO handler.
        let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
        let rip = &mut uc.uc_mcontext.gregs[libc::REG_RIP as usize];
        for (k, (site, stub)) in TRAP_SITES.iter().zip(&TRAP_STUBS).enumerate() {
            if site.load(Ordering::Acquire) == (*rip as u64).wrapping_sub(1) {
                *rip = stub.load(Ordering::Acquire) as i64;
                TRAPS[k].fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // SAFETY: an int3 that is not ours: nothing sensible to do.
        unsafe { libc::abort() };
    }

    fn trap_to_stub(slot: usize, site: u64, stub: u64) {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            // SAFETY: an all-zero sigaction is valid; the handler is async-signal-safe.
            unsafe {
                let mut sa: libc::sigaction = core::mem::zeroed();
                sa.sa_sigaction = on_trap as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                assert_eq!(
                    libc::sigaction(libc::SIGTRAP, &sa, core::ptr::null_mut()),
                    0
                );
            }
        });
        TRAP_STUBS[slot].store(stub, Ordering::Release);
        TRAP_SITES[slot].store(site, Ordering::Release);
    }

    /// Places `stub` in arena memory a jump from `site` (a `len`-byte instruction) can
    /// reach, and returns the bytes that make the site jump there.
    fn plan_jump(site: u64, len: usize, stub: &[u8]) -> (u64, Vec<u8>) {
        let mut after = [0u8; 8];
        assert_eq!(read(site + len as u64, &mut after), 8);
        for plan in pun::plans(site, len, &after) {
            if let Some(at) = arena::reserve(plan.lo, plan.hi, stub.len()) {
                arena::fill(at, stub).unwrap();
                let bytes = pun::encode(&plan, site, len, &after, at).expect("in window");
                return (at, bytes[..len].to_vec());
            }
        }
        panic!("no room for a stub near {site:#x}");
    }

    /// Replaces the site's instruction by a jump to its stub and back, `rounds` times,
    /// while two threads call the function; every call returns the old or the new value.
    fn hammer(
        slot: usize,
        f: unsafe extern "C" fn() -> u32,
        len: usize,
        old_v: u32,
        new_v: u32,
        rounds: usize,
    ) {
        text_init();
        let site = f as *const () as usize as u64;
        let mut old = vec![0u8; len];
        assert_eq!(read(site, &mut old), len);
        let mut stub = vec![0xb8];
        stub.extend_from_slice(&new_v.to_le_bytes());
        stub.push(0xc3); // mov eax, new_v; ret
        let (stub_at, new) = plan_jump(site, len, &stub);
        trap_to_stub(slot, site, stub_at);
        let stop = AtomicBool::new(false);
        let (calls, olds, news) = std::thread::scope(|s| {
            let callers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let (mut calls, mut olds, mut news) = (0u64, 0u64, 0u64);
                        while !stop.load(Ordering::Relaxed) || calls < 2_000_000 {
                            // SAFETY: a function of ours that takes nothing.
                            let v = unsafe { f() };
                            if v == old_v {
                                olds += 1;
                            } else if v == new_v {
                                news += 1;
                            } else {
                                panic!("call returned {v:#x}");
                            }
                            calls += 1;
                        }
                        (calls, olds, news)
                    })
                })
                .collect();
            // Until some call has met the int3 (the protocol's middle state), within
            // bounds: on a loaded machine the callers may not run during the first rounds.
            let mut done = 0;
            while done < rounds || (TRAPS[slot].load(Ordering::Relaxed) == 0 && done < 100 * rounds)
            {
                replace(site, &old, &new).expect("patch");
                replace(site, &new, &old).expect("unpatch");
                done += 1;
            }
            stop.store(true, Ordering::Relaxed);
            callers.into_iter().fold((0, 0, 0), |a, h| {
                let (c, o, n) = h.join().expect("caller");
                (a.0 + c, a.1 + o, a.2 + n)
            })
        });
        let mut now = vec![0u8; len];
        assert_eq!(read(site, &mut now), len);
        assert_eq!(now, old, "the original instruction is back");
        assert!(
            calls >= 4_000_000 && olds + news == calls,
            "{calls} {olds} {news}"
        );
        assert!(olds > 0 && news > 0, "both versions ran: {olds} {news}");
        let traps = TRAPS[slot].load(Ordering::Relaxed);
        assert!(traps > 0, "no call met the int3");
        eprintln!("site {site:#x}: {calls} calls, {news} new, {traps} through the int3");
        // SAFETY: as above.
        assert_eq!(unsafe { f() }, old_v);
        replace(site, &old, &new).expect("patch");
        // SAFETY: as above.
        assert_eq!(unsafe { f() }, new_v);
        replace(site, &new, &old).expect("unpatch");
    }

    fn text_init() {
        init().expect("a route to write text");
        assert_eq!(init(), init(), "idempotent");
    }

    /// Held by the tests that use `mmio_trace_patch_test_five`: one patches it under
    /// load, another reads it and expects its original bytes.
    static FIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn replace_plain_jump_under_callers() {
        let _g = FIVE.lock().unwrap_or_else(|e| e.into_inner());
        hammer(0, mmio_trace_patch_test_five, 5, 1, 2, 1000);
    }

    #[test]
    fn replace_punned_jump_under_callers() {
        hammer(1, mmio_trace_patch_test_short, 2, 0xf000, 0x2000, 1000);
    }

    /// The mprotect route under the same load (on a 3-byte site), as on a system that
    /// refuses `/proc/self/mem` writes.
    #[test]
    fn replace_through_mprotect_under_callers() {
        text_init();
        let _g = ROUTE_TEST.lock();
        let was = ROUTE.swap(2, Ordering::AcqRel);
        let r = std::panic::catch_unwind(|| {
            hammer(3, mmio_trace_patch_test_three, 3, 0xf0, 0x3000, 100)
        });
        ROUTE.store(was, Ordering::Release);
        r.unwrap();
    }

    /// `replace` checks the text first: a site that no longer holds `old` is left alone.
    #[test]
    fn replace_refuses_changed_text() {
        let _g = FIVE.lock().unwrap_or_else(|e| e.into_inner());
        text_init();
        let site = mmio_trace_patch_test_five as *const () as usize as u64;
        let mut cur = [0u8; 5];
        read(site, &mut cur);
        let mut wrong = cur;
        wrong[2] ^= 0xff;
        assert_eq!(replace(site, &wrong, &[0x90; 5]), Err(libc::EAGAIN));
        assert_eq!(replace(site, &cur, &[0x90; 4]), Err(libc::EINVAL));
        assert_eq!(replace(site, &[], &[]), Err(libc::EINVAL));
        let mut now = [0u8; 5];
        read(site, &mut now);
        assert_eq!(now, cur);
    }

    /// Both routes write read-execute text: a byte of arena memory changes and reads back.
    #[test]
    fn both_routes_write() {
        text_init();
        let at = arena::reserve(pun::USER_MIN, pun::USER_MAX, 4).expect("room");
        assert_eq!(pwrite_mem_checked(at, &[0x11, 0x22]), Ok(()));
        // SAFETY: reserved arena memory, readable.
        assert_eq!(unsafe { *(at as *const [u8; 2]) }, [0x11, 0x22]);
        assert_eq!(mprotect_write(at + 2, &[0x33, 0x44]), Ok(()));
        // SAFETY: as above.
        assert_eq!(unsafe { *(at as *const [u8; 4]) }, [0x11, 0x22, 0x33, 0x44]);
        let m = maps()
            .into_iter()
            .find(|m| m.start <= at && at < m.end)
            .unwrap();
        assert_eq!(&m.perms, b"r-xp", "protection restored");
        assert_eq!(poke(at, &[0x55]), Ok(()));
        // SAFETY: as above.
        assert_eq!(unsafe { *(at as *const u8) }, 0x55);
    }

    /// The `/proc/self/mem` write where that route is open (a system that refuses it
    /// still tests the mprotect route above).
    fn pwrite_mem_checked(at: u64, b: &[u8]) -> Result<(), i32> {
        if init() == Ok(Route::ProcMem) {
            assert!(mem_fd() >= MEM_FD_MIN || mem_fd() >= 0);
            pwrite_mem(at, b)
        } else {
            mprotect_write(at, b)
        }
    }

    /// The descriptor is re-opened when the program closed it (or put another file at its
    /// number): a poke never writes into someone else's file.
    #[test]
    fn closed_mem_fd_is_reopened() {
        text_init();
        if init() != Ok(Route::ProcMem) {
            return;
        }
        let _g = ROUTE_TEST.lock();
        let at = arena::reserve(pun::USER_MIN, pun::USER_MAX, 1).expect("room");
        let fd = mem_fd();
        assert!(fd >= MEM_FD_MIN, "{fd}");
        // Another file at the same number.
        let f = std::fs::File::open("/proc/self/maps").unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: replacing our own descriptor, as a careless program would.
        assert_eq!(unsafe { libc::dup2(f.as_raw_fd(), fd) }, fd);
        assert_eq!(poke(at, &[0x77]), Ok(()));
        // SAFETY: arena memory.
        assert_eq!(unsafe { *(at as *const u8) }, 0x77);
        assert!(mem_fd_valid());
    }

    static ROUTE_TEST: Mutex<()> = Mutex::new(());

    const INIT_HELPER: &str = "MMIO_TRACE_PATCH_INIT_HELPER";

    /// Runs `init_helper` in a fresh copy of this test binary (`init` answers once per
    /// process) with `scenario`, and returns its output.
    fn run_init_helper(scenario: &str) -> String {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "patch::text::tests::init_helper", "--ignored"])
            .args(["--nocapture", "--test-threads=1"])
            .env(INIT_HELPER, scenario)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{scenario}: {text}");
        text
    }

    /// Where `/proc/self/mem` writes are refused, `init` takes the mprotect route and
    /// pokes work; where `mprotect` to read-write-execute is refused too, or membarrier
    /// is, `init` says why (patching is then off, and every access traps).
    #[test]
    fn init_falls_back_then_gives_up_with_a_reason() {
        let t = run_init_helper("deny-pwrite");
        assert!(
            t.contains("init: Ok(Mprotect), poke: Ok(()), read back: 0x5a"),
            "{t}"
        );
        let t = run_init_helper("deny-pwrite-and-rwx");
        assert!(
            t.contains("init: Err(\"neither /proc/self/mem nor mprotect can write program text\")"),
            "{t}"
        );
        let t = run_init_helper("deny-membarrier");
        assert!(
            t.contains("init: Err(\"membarrier is refused (a seccomp filter?)\")"),
            "{t}"
        );
        let t = run_init_helper("allow-all");
        assert!(
            t.contains("init: Ok(ProcMem), poke: Ok(()), read back: 0x5a"),
            "{t}"
        );
    }

    #[repr(C)]
    struct SockFilter {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }

    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }

    /// Makes this thread's system calls `nr` fail with EPERM (with `rwx`: only an
    /// `mprotect` asking for write and execute together, as malloc never does).
    fn seccomp_deny(rules: &[(u32, bool)]) {
        const LD_ABS: u16 = 0x20;
        const JEQ: u16 = 0x15;
        const AND: u16 = 0x54;
        const RET: u16 = 0x06;
        const ERRNO_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
        const ALLOW: u32 = 0x7fff_0000;
        let f = |code, jt, jf, k| SockFilter { code, jt, jf, k };
        let mut prog = Vec::new();
        for &(nr, rwx) in rules {
            prog.push(f(LD_ABS, 0, 0, 0)); // the call's number
            if rwx {
                prog.push(f(JEQ, 0, 4, nr));
                prog.push(f(LD_ABS, 0, 0, 32)); // args[2] (prot), low half
                prog.push(f(AND, 0, 0, (libc::PROT_WRITE | libc::PROT_EXEC) as u32));
                prog.push(f(JEQ, 0, 1, (libc::PROT_WRITE | libc::PROT_EXEC) as u32));
            } else {
                prog.push(f(JEQ, 0, 1, nr));
            }
            prog.push(f(RET, 0, 0, ERRNO_EPERM));
        }
        prog.push(f(RET, 0, 0, ALLOW));
        let fprog = SockFprog {
            len: prog.len() as u16,
            filter: prog.as_ptr(),
        };
        // SAFETY: a well-formed filter program that outlives the calls.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &fprog as *const SockFprog
                ),
                0
            );
        }
    }

    #[test]
    #[ignore]
    fn init_helper() {
        let Some(scenario) = std::env::var_os(INIT_HELPER) else {
            return;
        };
        let pwrite = libc::SYS_pwrite64 as u32;
        let mprotect = libc::SYS_mprotect as u32;
        let membarrier = libc::SYS_membarrier as u32;
        // Arena memory to poke, mapped before any filter.
        let at = sys::map_anon(4096).unwrap() as u64;
        match scenario.to_str().unwrap() {
            "deny-pwrite" => seccomp_deny(&[(pwrite, false)]),
            "deny-pwrite-and-rwx" => seccomp_deny(&[(pwrite, false), (mprotect, true)]),
            "deny-membarrier" => seccomp_deny(&[(membarrier, false)]),
            _ => {}
        }
        let r = init();
        let poked = poke(at, &[0x5a]);
        // SAFETY: our own page.
        let back = unsafe { *(at as *const u8) };
        println!("init: {r:?}, poke: {poked:?}, read back: {back:#x}");
    }

    const FORK_HELPER: &str = "MMIO_TRACE_PATCH_FORK_HELPER";

    /// A forked child's pokes write its own memory, never its parent's (the inherited
    /// `/proc/self/mem` descriptor is the parent's), and its core syncs work. Runs in a
    /// fresh single-threaded copy of this test binary: a child forked from the
    /// multi-threaded test harness could find a lock held by another test's thread.
    #[test]
    fn fork_child_writes_its_own_memory() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "patch::text::tests::fork_helper", "--ignored"])
            .args(["--nocapture", "--test-threads=1"])
            .env(FORK_HELPER, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("fork helper: parent 0x11, child wrote 0x99"),
            "{text}"
        );
    }

    #[test]
    #[ignore]
    fn fork_helper() {
        if std::env::var_os(FORK_HELPER).is_none() {
            return;
        }
        text_init();
        let at = arena::reserve(pun::USER_MIN, pun::USER_MAX, 1).expect("room");
        arena::fill(at, &[0x11]).unwrap();
        let before = mem_fd();
        // SAFETY: the child only makes system calls and touches our own statics.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // Without re-registering: does the kernel carry the registration over?
            let inherited = membarrier_sync();
            let code = if poke(at, &[0x99]).is_err() {
                2
            // SAFETY: arena memory, readable.
            } else if unsafe { *(at as *const u8) } != 0x99 {
                3
            } else if try_sync_cores() != 0 {
                4
            } else if init() == Ok(Route::ProcMem) && mem_fd_valid() != (mem_fd() >= 0) {
                5
            } else {
                0
            };
            eprintln!("fork helper child: membarrier without registering: {inherited}");
            // SAFETY: leaving the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "{status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
        // SAFETY: arena memory, readable.
        let mine = unsafe { *(at as *const u8) };
        assert_eq!(mine, 0x11, "the child wrote into its parent");
        assert_eq!(mem_fd(), before);
        println!("fork helper: parent {mine:#x}, child wrote 0x99");
    }

    #[test]
    fn patchable_accepts_own_text() {
        let f = mmio_trace_patch_test_five as *const () as usize as u64;
        assert_eq!(patchable(f, 5, 4), Ok(()));
        let m = maps()
            .into_iter()
            .find(|m| m.start <= f && f < m.end)
            .unwrap();
        assert_eq!(
            patchable(m.end - 2, 2, 4),
            Err("instruction crosses a mapping boundary")
        );
        assert_eq!(patchable(m.end - 6, 2, 4), Ok(()));
    }

    #[test]
    fn patchable_refuses_jit_vdso_shared_writable() {
        // Anonymous read-write-execute memory (a JIT's).
        // SAFETY: a fresh anonymous mapping.
        let rwx = unsafe {
            sys::mmap(
                0,
                4096,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(rwx > 0);
        assert_eq!(
            patchable(rwx as u64 + 16, 3, 4),
            Err("anonymous or JIT memory")
        );
        // Anonymous read-execute memory (a JIT that flips protections).
        // SAFETY: our own page.
        unsafe { sys::mprotect(rwx as usize, 4096, libc::PROT_READ | libc::PROT_EXEC) };
        assert_eq!(
            patchable(rwx as u64 + 16, 3, 4),
            Err("anonymous or JIT memory")
        );
        // The vDSO.
        // SAFETY: getauxval reads the auxiliary vector.
        let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
        assert!(vdso != 0);
        assert_eq!(patchable(vdso + 0x800, 2, 4), Err("vDSO"));
        // The heap.
        let b = Box::new([0u8; 64]);
        let heap = maps().into_iter().find(|m| m.name == "[heap]");
        if let Some(h) = heap {
            assert_eq!(patchable(h.start, 2, 4), Err("anonymous or JIT memory"));
        }
        drop(b);
        // File mappings, in the test binary's own directory (executable mappings allowed).
        let dir = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let path = dir.join(format!("patchable-{}.bin", std::process::id()));
        std::fs::write(&path, [0x90u8; 8192]).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).ok();
        use std::os::fd::AsRawFd;
        let map = |prot: i32, flags: i32| {
            // SAFETY: a fresh mapping of our own file.
            let p = unsafe { sys::mmap(0, 8192, prot, flags, file.as_raw_fd(), 0) };
            assert!(p > 0, "mmap {p}");
            p as u64
        };
        // Unlinked already: code a JIT writes through a second mapping, or a file replaced
        // on disk.
        let rx = libc::PROT_READ | libc::PROT_EXEC;
        assert_eq!(
            patchable(map(rx, libc::MAP_PRIVATE) + 8, 2, 4),
            Err("deleted file")
        );
        // Shared anonymous memory.
        // SAFETY: a fresh mapping.
        let sh = unsafe { sys::mmap(0, 4096, rx, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0) };
        assert!(sh > 0);
        assert_eq!(patchable(sh as u64, 2, 4), Err("anonymous or JIT memory"));
        // A memfd.
        // SAFETY: a NUL-terminated name.
        let mfd = unsafe { libc::memfd_create(c"jit".as_ptr(), 0) };
        assert!(mfd >= 0);
        // SAFETY: our own descriptor.
        assert_eq!(unsafe { libc::ftruncate(mfd, 4096) }, 0);
        // SAFETY: a fresh mapping of the memfd.
        let p = unsafe { sys::mmap(0, 4096, rx, libc::MAP_PRIVATE, mfd, 0) };
        assert!(p > 0);
        assert_eq!(patchable(p as u64, 2, 4), Err("anonymous or JIT memory"));
        sys::close(mfd);
        // A file that still has its name: shared, writable and non-executable mappings.
        std::fs::write(&path, [0x90u8; 8192]).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let map = |prot: i32, flags: i32| {
            // SAFETY: a fresh mapping of our own file.
            let p = unsafe { sys::mmap(0, 8192, prot, flags, file.as_raw_fd(), 0) };
            assert!(p > 0, "mmap {p}");
            p as u64
        };
        let private = map(rx, libc::MAP_PRIVATE);
        let shared = map(rx, libc::MAP_SHARED);
        let writable = map(rx | libc::PROT_WRITE, libc::MAP_PRIVATE);
        let readonly = map(libc::PROT_READ, libc::MAP_PRIVATE);
        assert_eq!(patchable(private + 8, 2, 4), Ok(()));
        assert_eq!(patchable(shared + 8, 2, 4), Err("shared mapping"));
        assert_eq!(patchable(writable + 8, 2, 4), Err("writable code"));
        assert_eq!(patchable(readonly + 8, 2, 4), Err("not executable"));
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn maps_lines_parse() {
        let m = parse_maps(
            "55d0c0a00000-55d0c0a01000 r-xp 00001000 fd:01 1234     /usr/bin/my prog\n\
             7ffd1000-7ffd3000 r-xp 00000000 00:00 0                  [vdso]\n\
             7f0000000000-7f0000001000 rw-s 00000000 00:05 99 /memfd:jit (deleted)\n\
             7f0000002000-7f0000003000 ---p 00000000 00:00 0\n\
             garbage\n",
        );
        assert_eq!(m.len(), 4);
        assert_eq!((m[0].start, m[0].end), (0x55d0c0a00000, 0x55d0c0a01000));
        assert_eq!(m[0].name, "/usr/bin/my prog");
        assert_eq!(m[0].prot(), libc::PROT_READ | libc::PROT_EXEC);
        assert_eq!(m[1].name, "[vdso]");
        assert_eq!(&m[2].perms, b"rw-s");
        assert_eq!(m[2].name, "/memfd:jit (deleted)");
        assert_eq!(m[3].name, "");
        assert_eq!(m[3].prot(), libc::PROT_NONE);
        assert_eq!(check_patchable(&m, 0x55d0c0a00010, 2, 4), Ok(()));
        assert_eq!(check_patchable(&m, 0x7ffd1010, 2, 4), Err("vDSO"));
        assert_eq!(
            check_patchable(&m, 0x7f0000000010, 2, 4),
            Err("anonymous or JIT memory")
        );
        assert_eq!(
            check_patchable(&m, 0x7f0000002010, 2, 4),
            Err("anonymous or JIT memory")
        );
        assert_eq!(check_patchable(&m, 0x1000, 2, 4), Err("not mapped"));
    }

    #[test]
    fn read_stops_at_unreadable_pages() {
        let p = sys::map_anon(3 * 4096).unwrap() as u64;
        // SAFETY: our own pages.
        unsafe {
            core::ptr::write_bytes(p as *mut u8, 0xab, 2 * 4096);
            // Inaccessible rather than unmapped: another test could map the hole.
            sys::mprotect(p as usize + 2 * 4096, 4096, libc::PROT_NONE);
        }
        let mut buf = [0u8; 300];
        assert_eq!(read(p + 2 * 4096 - 100, &mut buf), 100);
        assert!(buf[..100].iter().all(|&b| b == 0xab));
        assert_eq!(read(p + 2 * 4096, &mut buf), 0);
        assert_eq!(read(p + 4096 - 10, &mut buf), 300);
        // The fallback where process_vm_readv is refused, the same.
        assert_eq!(read_proc_mem(p + 2 * 4096 - 100, &mut buf), 100);
        assert_eq!(read_proc_mem(p + 2 * 4096, &mut buf), 0);
        assert_eq!(read_proc_mem(p + 4096 - 10, &mut buf), 300);
        assert!(buf.iter().all(|&b| b == 0xab));
        // SAFETY: our own pages.
        unsafe { sys::munmap(p as usize, 3 * 4096) };
    }

    fn median(mut v: Vec<u64>) -> u64 {
        v.sort_unstable();
        v[v.len() / 2]
    }

    fn time(mut f: impl FnMut()) -> u64 {
        let t = std::time::Instant::now();
        f();
        t.elapsed().as_nanos() as u64
    }

    /// Costs of the primitives (median of 1000 each):
    /// `cargo test --release -p mmio-trace-tracer patch_costs -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn patch_costs() {
        let _g = FIVE.lock().unwrap_or_else(|e| e.into_inner());
        text_init();
        println!("route: {:?}", init());
        let sync = median((0..1000).map(|_| time(sync_cores)).collect());
        let at = arena::reserve(pun::USER_MIN, pun::USER_MAX, 16).expect("room");
        let procmem = if init() == Ok(Route::ProcMem) {
            Some(median(
                (0..1000)
                    .map(|i| time(|| pwrite_mem(at, &[i as u8]).unwrap()))
                    .collect(),
            ))
        } else {
            None
        };
        let poked = median(
            (0..1000)
                .map(|i| time(|| poke(at, &[i as u8]).unwrap()))
                .collect(),
        );
        let mprot = median(
            (0..1000)
                .map(|i| time(|| mprotect_write(at, &[i as u8]).unwrap()))
                .collect(),
        );
        let site = mmio_trace_patch_test_five as *const () as usize as u64;
        let mut old = [0u8; 5];
        read(site, &mut old);
        let (_, new) = plan_jump(site, 5, &[0xb8, 2, 0, 0, 0, 0xc3]);
        trap_to_stub(2, site, 0);
        let mut flip = false;
        let rep = median(
            (0..1000)
                .map(|_| {
                    flip = !flip;
                    let (a, b) = if flip {
                        (&old[..], &new[..])
                    } else {
                        (&new[..], &old[..])
                    };
                    time(|| replace(site, a, b).unwrap())
                })
                .collect(),
        );
        if flip {
            replace(site, &new, &old).unwrap();
        }
        println!("sync_cores (membarrier SYNC_CORE): {sync} ns");
        match procmem {
            Some(n) => println!("poke 1 byte, /proc/self/mem: {n} ns"),
            None => println!("poke 1 byte, /proc/self/mem: route unavailable"),
        }
        println!("poke 1 byte through poke() (descriptor checks included): {poked} ns");
        println!("poke 1 byte, mprotect (incl. reading /proc/self/maps): {mprot} ns");
        println!("replace, 5-byte instruction (int3-first, 3 syncs): {rep} ns");
    }
}
