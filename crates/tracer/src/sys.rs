//! The tracer's own system calls: raw `syscall` instructions, never libc.
//!
//! In the preload library, libc's `mmap`, `mprotect`, `sigaction`... resolve to our own
//! interposed symbols; raw calls cannot re-enter them, need no `dlsym`, and are
//! async-signal-safe. Every function returns the kernel's result: `>= 0` or `-errno`.
#![allow(clippy::missing_safety_doc)]

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use mmio_trace_ring::sys::{auxval, sleep_ns, syscall6};

const SYS_READ: usize = 0;
const SYS_LSEEK: usize = 8;
const SYS_CLOSE: usize = 3;
const SYS_MMAP: usize = 9;
const SYS_MPROTECT: usize = 10;
const SYS_MUNMAP: usize = 11;
const SYS_RT_SIGACTION: usize = 13;
const SYS_RT_SIGPROCMASK: usize = 14;
const SYS_MREMAP: usize = 25;
const SYS_SCHED_YIELD: usize = 24;
const SYS_GETPID: usize = 39;
const SYS_SIGALTSTACK: usize = 131;
const SYS_GETTID: usize = 186;
const SYS_GETDENTS64: usize = 217;
const SYS_TGKILL: usize = 234;
const SYS_OPENAT: usize = 257;
const SYS_READLINKAT: usize = 267;
const SYS_PREAD64: usize = 17;
const SYS_FSTAT: usize = 5;
const SYS_PWRITE64: usize = 18;
const SYS_FCNTL: usize = 72;
const SYS_PIPE2: usize = 293;
const SYS_PRCTL: usize = 157;
const SYS_SET_TID_ADDRESS: usize = 218;

/// `AT_FDCWD`.
pub const AT_FDCWD: isize = -100;

/// Fresh private anonymous read-write memory of `len` bytes for the tracer's own tables
/// and stacks (zeroed), anywhere the kernel likes; `None` when it cannot be had.
pub fn map_anon(len: usize) -> Option<usize> {
    // SAFETY: a new mapping at an address the kernel picks touches no existing memory.
    let p = unsafe {
        mmap(
            0,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    (p >= 0).then_some(p as usize)
}

/// Raw `mmap`; returns the address or `-errno`.
pub unsafe fn mmap(addr: usize, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> isize {
    // SAFETY: caller's contract.
    unsafe {
        syscall6(
            SYS_MMAP,
            addr,
            len,
            prot as usize,
            flags as usize,
            fd as isize as usize,
            off as usize,
        )
    }
}

/// Raw `munmap`.
pub unsafe fn munmap(addr: usize, len: usize) -> isize {
    // SAFETY: caller's contract.
    unsafe { syscall6(SYS_MUNMAP, addr, len, 0, 0, 0, 0) }
}

/// Raw `mprotect`.
pub unsafe fn mprotect(addr: usize, len: usize, prot: i32) -> isize {
    // SAFETY: caller's contract.
    unsafe { syscall6(SYS_MPROTECT, addr, len, prot as usize, 0, 0, 0) }
}

/// Raw `mremap`.
pub unsafe fn mremap(
    old: usize,
    old_len: usize,
    new_len: usize,
    flags: i32,
    new_addr: usize,
) -> isize {
    // SAFETY: caller's contract.
    unsafe {
        syscall6(
            SYS_MREMAP,
            old,
            old_len,
            new_len,
            flags as usize,
            new_addr,
            0,
        )
    }
}

/// The calling thread's id.
pub fn gettid() -> u32 {
    // SAFETY: no arguments.
    unsafe { syscall6(SYS_GETTID, 0, 0, 0, 0, 0, 0) as u32 }
}

/// The address the kernel zeroes (and futex-wakes) when the calling thread ends (its
/// `clear_child_tid`: glibc's `struct pthread` tid field; 0: none), from
/// `PR_GET_TID_ADDRESS`; `None` where the kernel has no such query (built without
/// `CONFIG_CHECKPOINT_RESTORE`).
pub fn tid_address() -> Option<u64> {
    const PR_GET_TID_ADDRESS: usize = 40;
    let mut a = 0u64;
    // SAFETY: the kernel writes one pointer-sized word to `a`.
    let r = unsafe {
        syscall6(
            SYS_PRCTL,
            PR_GET_TID_ADDRESS,
            &mut a as *mut u64 as usize,
            0,
            0,
            0,
            0,
        )
    };
    (r == 0).then_some(a)
}

/// Makes `word` the calling thread's `clear_child_tid`: the kernel writes 0 there (and
/// futex-wakes it) when the thread ends.
///
/// # Safety
/// `word` must stay a u32 nobody else relies on for as long as the thread lives (or
/// until replaced): the kernel writes it at the thread's end.
pub unsafe fn set_tid_address(word: u64) {
    // SAFETY: the caller's contract.
    unsafe { syscall6(SYS_SET_TID_ADDRESS, word as usize, 0, 0, 0, 0, 0) };
}

/// The process id.
pub fn getpid() -> u32 {
    // SAFETY: no arguments.
    unsafe { syscall6(SYS_GETPID, 0, 0, 0, 0, 0, 0) as u32 }
}

/// Sends `sig` to thread `tid` of process `pid`.
pub fn tgkill(pid: u32, tid: u32, sig: i32) -> isize {
    // SAFETY: plain values.
    unsafe {
        syscall6(
            SYS_TGKILL,
            pid as usize,
            tid as usize,
            sig as usize,
            0,
            0,
            0,
        )
    }
}

/// Yields the CPU.
pub fn sched_yield() {
    // SAFETY: no arguments.
    unsafe { syscall6(SYS_SCHED_YIELD, 0, 0, 0, 0, 0, 0) };
}

/// Opens NUL-terminated `path` read-only (close-on-exec).
pub fn open_read(path: &[u8]) -> isize {
    debug_assert_eq!(path.last(), Some(&0));
    // SAFETY: NUL-terminated path; O_RDONLY|O_CLOEXEC|O_DIRECTORY not forced.
    unsafe {
        syscall6(
            SYS_OPENAT,
            AT_FDCWD as usize,
            path.as_ptr() as usize,
            0o2000000,
            0,
            0,
            0,
        )
    }
}

/// Opens NUL-terminated directory `path`.
pub fn open_dir(path: &[u8]) -> isize {
    // SAFETY: NUL-terminated path; O_RDONLY|O_DIRECTORY|O_CLOEXEC.
    unsafe {
        syscall6(
            SYS_OPENAT,
            AT_FDCWD as usize,
            path.as_ptr() as usize,
            0o2000000 | 0o200000,
            0,
            0,
            0,
        )
    }
}

/// Reads into `buf`.
pub fn read(fd: i32, buf: &mut [u8]) -> isize {
    // SAFETY: buf is valid for its length.
    unsafe {
        syscall6(
            SYS_READ,
            fd as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
            0,
            0,
            0,
        )
    }
}

/// Reads into `buf` at offset `off`.
pub fn pread(fd: i32, buf: &mut [u8], off: u64) -> isize {
    // SAFETY: buf is valid for its length.
    unsafe {
        syscall6(
            SYS_PREAD64,
            fd as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
            off as usize,
            0,
            0,
        )
    }
}

/// `write(fd, buf, len)` (raw: async-signal-safe). Returns the count or `-errno`.
pub fn write(fd: i32, buf: *const u8, len: usize) -> isize {
    const SYS_WRITE: usize = 1;
    // SAFETY: the caller passes `len` readable bytes at `buf`.
    unsafe { syscall6(SYS_WRITE, fd as usize, buf as usize, len, 0, 0, 0) }
}

/// Closes `fd`.
pub fn close(fd: i32) -> isize {
    // SAFETY: plain value.
    unsafe { syscall6(SYS_CLOSE, fd as usize, 0, 0, 0, 0, 0) }
}

/// `lseek(fd, 0, SEEK_SET)`: rewinds a directory descriptor for a fresh scan.
pub fn rewind(fd: i32) -> isize {
    // SAFETY: plain syscall on a descriptor; no memory passed.
    unsafe { syscall6(SYS_LSEEK, fd as usize, 0, 0, 0, 0, 0) }
}

/// `getdents64` into `buf`.
pub fn getdents64(fd: i32, buf: &mut [u8]) -> isize {
    // SAFETY: buf is valid for its length.
    unsafe {
        syscall6(
            SYS_GETDENTS64,
            fd as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
            0,
            0,
            0,
        )
    }
}

/// `readlink` of NUL-terminated `path` into `buf`; returns the length.
pub fn readlink(path: &[u8], buf: &mut [u8]) -> isize {
    // SAFETY: NUL-terminated path, valid buffer.
    unsafe {
        syscall6(
            SYS_READLINKAT,
            AT_FDCWD as usize,
            path.as_ptr() as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
            0,
            0,
        )
    }
}

/// The kernel's `struct sigaction` (x86-64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KSigaction {
    /// Handler address, or 0 (SIG_DFL) / 1 (SIG_IGN).
    pub handler: usize,
    /// SA_* flags.
    pub flags: u64,
    /// Restorer (called on handler return).
    pub restorer: usize,
    /// Blocked signals during the handler (bit n-1 = signal n).
    pub mask: u64,
}

/// `SA_RESTORER`.
pub const SA_RESTORER: u64 = 0x0400_0000;

global_asm!(
    ".pushsection .text.mmio_trace_restorer,\"ax\",@progbits",
    ".p2align 4",
    ".globl mmio_trace_sigreturn",
    ".hidden mmio_trace_sigreturn",
    "mmio_trace_sigreturn:",
    "mov eax, 15",
    "syscall",
    "ud2",
    ".popsection",
);

extern "C" {
    fn mmio_trace_sigreturn();
}

/// `rt_sigaction(sig, act, NULL)` with `act` exactly as given: its own `SA_RESTORER` and
/// restorer (or none), for an action that must outlive the tracer's code (the program's
/// own, put back when the recorder leaves an attached process and unmaps the tracer).
pub fn sigaction_exact(sig: i32, act: &KSigaction) -> isize {
    // SAFETY: a valid pointer; sigsetsize 8.
    unsafe {
        syscall6(
            SYS_RT_SIGACTION,
            sig as usize,
            act as *const KSigaction as usize,
            0,
            8,
            0,
            0,
        )
    }
}

/// Installs `act` for `sig` with the kernel directly (our restorer), returning the old one.
pub fn sigaction(sig: i32, act: Option<&KSigaction>, old: Option<&mut KSigaction>) -> isize {
    let mut a = act.copied().unwrap_or_default();
    a.flags |= SA_RESTORER;
    a.restorer = mmio_trace_sigreturn as *const () as usize;
    let ap = if act.is_some() {
        &a as *const KSigaction as usize
    } else {
        0
    };
    let op = old.map_or(0, |o| o as *mut KSigaction as usize);
    // SAFETY: valid pointers or null; sigsetsize 8.
    unsafe { syscall6(SYS_RT_SIGACTION, sig as usize, ap, op, 8, 0, 0) }
}

/// Signals the tracer's own masks never block (SIGSYS once `sysemu` is on: a call the
/// filter traps, made with SIGSYS blocked, kills the process; libc's, e.g. in a thread
/// spawn made with every signal blocked, are trapped too).
static NEVER_BLOCK: AtomicU64 = AtomicU64::new(0);

/// Makes [`sigprocmask`] leave `mask` unblocked from now on.
pub(crate) fn never_block(mask: u64) {
    NEVER_BLOCK.fetch_or(mask, Ordering::Relaxed);
}

/// `rt_sigprocmask(how, set, old)` with 64-bit masks. Never blocks SIGSYS once system-call
/// virtualisation is on (`sysemu`).
pub fn sigprocmask(how: i32, set: Option<&u64>, old: Option<&mut u64>) -> isize {
    let keep = NEVER_BLOCK.load(Ordering::Relaxed);
    let stripped = set.map(|s| *s & !keep);
    let set = if how == libc::SIG_UNBLOCK || keep == 0 {
        set
    } else {
        stripped.as_ref()
    };
    let sp = set.map_or(0, |s| s as *const u64 as usize);
    let op = old.map_or(0, |o| o as *mut u64 as usize);
    // SAFETY: valid pointers or null.
    unsafe { syscall6(SYS_RT_SIGPROCMASK, how as usize, sp, op, 8, 0, 0) }
}

/// `sigaltstack(ss, old)`.
pub fn sigaltstack(ss: Option<&libc::stack_t>, old: Option<&mut libc::stack_t>) -> isize {
    let sp = ss.map_or(0, |s| s as *const libc::stack_t as usize);
    let op = old.map_or(0, |o| o as *mut libc::stack_t as usize);
    // SAFETY: valid pointers or null.
    unsafe { syscall6(SYS_SIGALTSTACK, sp, op, 0, 0, 0, 0) }
}

/// `CLOCK_MONOTONIC` in nanoseconds, for durations and deadlines (events are stamped with
/// the recording's clock: `emit::now`).
///
/// Calls the vDSO's `clock_gettime` directly (looked up once; tens of ns instead of a
/// system call's ~70+ ns), not libc's wrapper: async-signal-safe and libc-free.
#[inline]
pub fn now_ns() -> u64 {
    mmio_trace_ring::clock::monotonic_ns()
}

/// The calling thread's thread pointer (`%fs:0`, the TCB self-pointer the x86-64 TLS ABI
/// requires): a per-thread key readable without a system call or libc TLS.
#[inline]
pub fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: reading fs:0 is defined by the x86-64 ELF TLS ABI for every thread.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

/// Whether `rdfsbase` may be used (the kernel enabled CR4.FSGSBASE: the `fsgsbase` bit,
/// bit 1, of `AT_HWCAP2`). Set once by [`init_cpu_features`]; read on the fault path
/// instead of asking the CPU or the kernel per access.
static FSGSBASE: AtomicBool = AtomicBool::new(false);

/// `AT_HWCAP2` as handed over by whoever loaded the tracer (+1; 0: not handed over).
static HWCAP2_GIVEN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Uses `hwcap2` as the auxiliary vector's `AT_HWCAP2` (for a tracer that cannot read its
/// own: an injected agent in a process whose `/proc/self/auxv` it may not open). Call
/// before [`init_cpu_features`].
pub fn set_hwcap2(hwcap2: u64) {
    HWCAP2_GIVEN.store(hwcap2.wrapping_add(1), Ordering::Relaxed);
}

/// Caches the CPU features the fault path needs (called at tracer start, before any
/// handler is installed). Reading the auxiliary vector is never done on the fault path.
pub fn init_cpu_features() {
    const AT_HWCAP2: u64 = 26;
    const HWCAP2_FSGSBASE: u64 = 1 << 1;
    let hw2 = match HWCAP2_GIVEN.load(Ordering::Relaxed) {
        0 => auxval(AT_HWCAP2).unwrap_or(0),
        given => given.wrapping_sub(1),
    };
    FSGSBASE.store(hw2 & HWCAP2_FSGSBASE != 0, Ordering::Relaxed);
}

/// Which wide vector accesses the CPU and the kernel allow (what std's
/// `is_x86_feature_detected!("avx")` / `("avx512f")` say, without std).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorFeatures {
    /// AVX: the CPU has it and the kernel saves the YMM state (XCR0 bits 1 and 2).
    pub avx: bool,
    /// AVX-512F: the CPU has it and the kernel saves the opmask and ZMM state (XCR0
    /// bits 1, 2, 5, 6 and 7).
    pub avx512f: bool,
}

/// Reads [`VectorFeatures`] from CPUID and XCR0 (normal context; a few hundred cycles).
pub fn cpu_vector_features() -> VectorFeatures {
    use core::arch::x86_64::__cpuid_count;
    // SAFETY (this and the CPUID below): CPUID exists on every x86-64 CPU; leaf 0 gives
    // the highest basic leaf, checked before leaf 7 is asked.
    #[allow(unused_unsafe)]
    let (max, l1) = unsafe { (__cpuid_count(0, 0).eax, __cpuid_count(1, 0)) };
    const OSXSAVE: u32 = 1 << 27;
    const AVX: u32 = 1 << 28;
    if l1.ecx & OSXSAVE == 0 {
        // XGETBV would fault; the OS saves no extended state.
        return VectorFeatures {
            avx: false,
            avx512f: false,
        };
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 (XCR0) is allowed at CPL 3 when CR4.OSXSAVE is set,
    // which CPUID.1:ECX.OSXSAVE reports; it only reads into edx:eax.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _hi,
            options(nomem, nostack, preserves_flags))
    };
    let ymm = lo & 0b110 == 0b110;
    let zmm = lo & 0b1110_0110 == 0b1110_0110;
    #[allow(unused_unsafe)]
    // SAFETY: see above.
    let avx512f_cpu = max >= 7 && unsafe { __cpuid_count(7, 0) }.ebx & (1 << 16) != 0;
    VectorFeatures {
        avx: l1.ecx & AVX != 0 && ymm,
        avx512f: avx512f_cpu && zmm,
    }
}

/// Whether `rdfsbase` may be used (generated code reads the FS base with it).
pub fn fsgsbase() -> bool {
    FSGSBASE.load(Ordering::Relaxed)
}

/// The calling thread's FS base: the per-thread key of the tracer's thread blocks.
///
/// Unlike the value at `%fs:0` (the TCB self-pointer of a libc thread), it is defined for
/// every thread, including those whose FS base is not a libc TCB (Go's `&m.tls[1]`, a
/// buffer set with `arch_prctl(ARCH_SET_FS)`): there `%fs:0` may read 0 or anything.
/// `rdfsbase` (a few cycles) when the kernel allows it, else `arch_prctl(ARCH_GET_FS)`.
#[inline]
pub fn fs_base() -> u64 {
    if FSGSBASE.load(Ordering::Relaxed) {
        let base: u64;
        // SAFETY: CR4.FSGSBASE is enabled (checked at start through AT_HWCAP2), so the
        // instruction is allowed at CPL 3; it only reads the FS base into a register.
        unsafe {
            core::arch::asm!("rdfsbase {}", out(reg) base, options(nostack, nomem, preserves_flags))
        };
        base
    } else {
        fs_base_syscall()
    }
}

/// [`fs_base`] through `arch_prctl(ARCH_GET_FS)` (a CPU or kernel without FSGSBASE).
#[inline(never)]
pub fn fs_base_syscall() -> u64 {
    const SYS_ARCH_PRCTL: usize = 158;
    const ARCH_GET_FS: usize = 0x1003;
    let mut base = 0u64;
    // SAFETY: the kernel writes 8 bytes to the valid out pointer.
    unsafe {
        syscall6(
            SYS_ARCH_PRCTL,
            ARCH_GET_FS,
            &mut base as *mut u64 as usize,
            0,
            0,
            0,
            0,
        )
    };
    base
}

/// Whether FS base `fs` is a libc TCB: the value at `%fs:0` (the TCB self-pointer the
/// x86-64 TLS ABI requires) is `fs` itself. Not so in a thread that set its FS base to
/// memory of its own (0 is never read through).
#[inline]
pub fn fs_is_tcb(fs: u64) -> bool {
    fs != 0 && thread_pointer() == fs
}

/// The digits of `v` in `base` (2..=16, lowercase) at the end of `buf`: number
/// formatting without allocation, for the fault path and the hooks around `malloc`.
pub fn digits(mut v: u64, base: u64, buf: &mut [u8; 64]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(v % base) as usize];
        v /= base;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// The file type bits (`st_mode & S_IFMT`) of descriptor `fd`, or 0 if unknown.
pub fn file_type(fd: i32) -> u32 {
    fstat(fd).map_or(0, |st| st.st_mode & libc::S_IFMT)
}

/// `fstat` of `fd` (a number that may not be open: `None` then).
pub fn fstat(fd: i32) -> Option<libc::stat> {
    // SAFETY: a plain struct of integers, filled by the kernel.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `struct stat`.
    let r = unsafe {
        syscall6(
            SYS_FSTAT,
            fd as usize,
            &mut st as *mut _ as usize,
            0,
            0,
            0,
            0,
        )
    };
    (r >= 0).then_some(st)
}

/// Opens `path` with `flags` (`openat(AT_FDCWD, ...)`, mode 0: never creates).
pub fn open(path: &core::ffi::CStr, flags: i32) -> isize {
    // SAFETY: a NUL-terminated path; flags are plain bits.
    unsafe {
        syscall6(
            SYS_OPENAT,
            AT_FDCWD as usize,
            path.as_ptr() as usize,
            flags as usize,
            0,
            0,
            0,
        )
    }
}

/// `fcntl(fd, cmd, arg)` for commands whose argument is an integer (`F_DUPFD*`,
/// `F_SETFD`, `F_SETFL`, `F_GETFL`).
pub fn fcntl(fd: i32, cmd: i32, arg: usize) -> isize {
    // SAFETY: integer-argument commands pass no memory.
    unsafe { syscall6(SYS_FCNTL, fd as usize, cmd as usize, arg, 0, 0, 0) }
}

/// `pipe2(fds, flags)`.
pub fn pipe2(fds: &mut [i32; 2], flags: i32) -> isize {
    // SAFETY: the kernel writes two ints into the array.
    unsafe {
        syscall6(
            SYS_PIPE2,
            fds.as_mut_ptr() as usize,
            flags as usize,
            0,
            0,
            0,
            0,
        )
    }
}

/// `pwrite(fd, buf, off)`.
pub fn pwrite(fd: i32, buf: &[u8], off: u64) -> isize {
    // SAFETY: buf is valid for its length.
    unsafe {
        syscall6(
            SYS_PWRITE64,
            fd as usize,
            buf.as_ptr() as usize,
            buf.len(),
            off as usize,
            0,
            0,
        )
    }
}

/// The whole content of file `path` (read with raw system calls; for `/proc` files, whose
/// size `fstat` does not give). Allocates: normal context only.
pub fn read_file(path: &core::ffi::CStr) -> Option<alloc::vec::Vec<u8>> {
    let fd = open(path, libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return None;
    }
    let fd = fd as i32;
    let mut out = alloc::vec::Vec::new();
    let mut chunk = [0u8; 4096];
    let ok = loop {
        let n = read(fd, &mut chunk);
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n < 0 {
            break false;
        }
        if n == 0 {
            break true;
        }
        out.extend_from_slice(&chunk[..n as usize]);
    };
    close(fd);
    ok.then_some(out)
}

/// Writes all of `buf` to `fd` (retrying short writes and `EINTR`); stops at the first
/// error. For messages on stderr where std's `eprintln!` (which panics when stderr is
/// closed, and is not there without std) cannot be used.
pub fn write_all(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        let n = write(fd, buf.as_ptr(), buf.len());
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n <= 0 {
            return;
        }
        buf = &buf[n as usize..];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vector_features_agree_with_std() {
        let f = super::cpu_vector_features();
        assert_eq!(f.avx, std::arch::is_x86_feature_detected!("avx"));
        assert_eq!(f.avx512f, std::arch::is_x86_feature_detected!("avx512f"));
    }

    #[test]
    fn read_file_reads_a_proc_file_whole() {
        let ours = super::read_file(c"/proc/self/maps").expect("readable");
        let std_ = std::fs::read("/proc/self/maps").unwrap();
        // The two reads may see different mappings (the allocations in between), but both
        // are whole: they end with a newline and name our own executable.
        assert_eq!(ours.last(), Some(&b'\n'));
        assert!(
            ours.len() > 4096 || std_.len() <= 4096,
            "more than one chunk read"
        );
        assert_eq!(super::read_file(c"/nonexistent/x"), None);
    }

    #[test]
    fn digits_in_decimal_and_hex() {
        let mut b = [0u8; 64];
        assert_eq!(super::digits(0, 10, &mut b), b"0");
        assert_eq!(super::digits(2147483648, 10, &mut b), b"2147483648");
        assert_eq!(super::digits(u64::MAX, 10, &mut b), b"18446744073709551615");
        assert_eq!(super::digits(0xfeb4_0008, 16, &mut b), b"feb40008");
        assert_eq!(super::digits(u64::MAX, 16, &mut b), b"ffffffffffffffff");
    }
}
