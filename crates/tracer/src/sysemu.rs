//! System-call virtualisation for a program that has no preload library: a seccomp filter
//! routes the calls the tracer must see into a SIGSYS handler, which makes them itself.
//!
//! The injected core (static, Go and set-uid programs) cannot interpose libc: the
//! program's `mmap`, `munmap`, `mremap`, `mprotect`, `pkey_mprotect`, `mlock`,
//! `munlock`, `madvise`, `rt_sigaction`, `rt_sigprocmask`, `execve` and `execveat` are
//! raw system calls. The filter
//! ([`filter`]) answers them with `SECCOMP_RET_TRAP`: the kernel does not run the call and
//! raises SIGSYS instead, with the registers of the call in the frame and the instruction
//! pointer already past the `syscall` instruction. The handler makes the call from the
//! core's own code, which the filter lets through by instruction pointer, with the same
//! hooks the preload library's wrappers use, and puts the result (or `-errno`) in the
//! frame's RAX; `rt_sigreturn` resumes the program after its `syscall` with that result.
//!
//! What is virtualised, and why:
//! * `rt_sigaction` of the signals the tracer owns (`signals::is_reserved`, SIGSYS
//!   included once the filter is on): the program's action is recorded, the tracer's
//!   handler stays, and the program's handler is called by the tracer as in the preload
//!   route. Of any other signal: made as asked, but the handler's `sa_mask` never blocks
//!   the tracer's signals or SIGSYS (the kernel kills a process whose synchronous SIGSEGV
//!   or seccomp SIGSYS is blocked: a handler installed with `sigfillset` that touches the
//!   device, or makes a trapped call, would die); the program reads its own mask back.
//!   Every `rt_sigaction` is trapped, queries too, so that what it reads back is always
//!   its own.
//! * `rt_sigprocmask` with a new set: the call acts on the frame's saved mask, which
//!   `rt_sigreturn` installs (a change of the live mask would be undone there). The
//!   tracer's signals and SIGSYS are never blocked for real (a device access, or a trapped
//!   call, with them blocked would be fatal); the program believes them blocked (a
//!   per-thread mask, reported back in `oldset` and honoured when a fault of the
//!   program's own is delivered: with SIGSEGV believed blocked, it dies of it, as
//!   natively). A query (`set` NULL, `oldset` not) is trapped too, so that it reads
//!   those virtual bits back; only a call with neither runs untouched.
//! * `sigaltstack` is not routed: the program's stack is the kernel's, and the tracer's
//!   handlers run on it. Virtualising it (keeping the tracer's stack, as the preload
//!   route does) is unsafe here: a program that disables its stack and unmaps it (Rust's
//!   std does, at every thread's exit) would still have the kernel deliver signals onto
//!   the freed memory, and a change made from a handler running on the alternate stack is
//!   refused at `rt_sigreturn` anyway (the kernel installs the frame's `uc_stack` only off
//!   that stack). Go's signal handler also needs the kernel to name the stack it runs on.
//!   So the fault path must fit the program's signal stacks (Go's are 32 KiB).
//! * `execve`/`execveat`: the exec hook (the agent asks the recorder to take over) runs
//!   first, then the exec is made from the core with the program's own signal mask; on
//!   failure the hook hears the error and the program gets `-errno`.
//!
//! * System calls handed a buffer (`read`, `write`, ..., see [`filter_buffers`]): from the
//!   first device region on, one more filter per region traps those aimed at it, and
//!   `buffer_call` hands the kernel the alias, as the preload library's wrappers do, so
//!   that they do not fail with `EFAULT` on the closed pages. They run with the program's
//!   signal mask: they may block.
//!
//! Not routed: i386 (`int 0x80`) and x32 calls (the emulator is x86-64 only),
//! `remap_file_pages`, `shmat` (System V shared memory is never a device), `mlockall`,
//! and `clone`/`fork`/`vfork` (a handler cannot make a `CLONE_VM` clone for the program;
//! the tracer's fork canary finds forks it did not see). `pkey_mprotect` of traced pages
//! is kept virtual as `mprotect` is (the key is not applied to them).
//!
//! Before [`install`], no thread may have SIGSYS blocked: the kernel kills a thread whose
//! trapped call raises a blocked SIGSYS (a thread inside glibc's `pthread_create`, which
//! blocks every signal around `clone`, is one). The injector, which stops every thread,
//! must unblock SIGSYS in each (`PTRACE_SETSIGMASK`). Handlers the program installed
//! before have the tracer's signals taken out of their `sa_mask` at [`install`].
//!
//! The signal path allocates nothing, takes no lock and makes raw system calls only.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::ctx::{gregs, uc_mask, HANDLER_MASK, OURS};
use crate::sys::{self, KSigaction};
use crate::{guard, signals, threads};

/// `SECCOMP_RET_DATA` of the filter's traps: a SIGSYS whose `si_errno` differs came from
/// another filter (the program's own) and is the program's.
pub const FILTER_DATA: u32 = 0x6d74; // "mt"

const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SYS_SECCOMP: i32 = 1;

const NR_MMAP: u32 = 9;
const NR_MPROTECT: u32 = 10;
const NR_MUNMAP: u32 = 11;
const NR_RT_SIGACTION: u32 = 13;
const NR_RT_SIGPROCMASK: u32 = 14;
const NR_MREMAP: u32 = 25;
const NR_EXECVE: u32 = 59;
const NR_EXECVEAT: u32 = 322;
const NR_MADVISE: u32 = 28;
const NR_MLOCK: u32 = 149;
const NR_MUNLOCK: u32 = 150;
const NR_MLOCK2: u32 = 325;
const NR_PKEY_MPROTECT: u32 = 329;
const NR_SIGALTSTACK: u32 = 131;
const NR_SECCOMP: usize = 317;
const NR_PRCTL: usize = 157;

const MAP_ANONYMOUS: u32 = 0x20;
const MAP_FIXED: u32 = 0x10;

/// `struct seccomp_data` offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_IP: u32 = 8;
const fn off_arg(i: u32) -> u32 {
    16 + 8 * i
}

/// The most instruction sites [`filter_sites`] takes.
pub const MAX_SITES: usize = 512;

/// The longest program [`filter`] or [`filter_sites`] writes.
pub const FILTER_MAX: usize =
    96 + MAX_SITES + 4 * MAX_SITE_GROUPS + 2 * (MAX_SITES / CHUNK + MAX_SITE_GROUPS);

/// Distinct upper halves of the sites' addresses [`filter_sites`] handles.
const MAX_SITE_GROUPS: usize = 8;
/// Sites compared per run of jumps (a BPF conditional jump reaches 255 instructions).
const CHUNK: usize = 200;

/// SIGSYS's bit in a 64-bit mask.
const SYS_BIT: u64 = 1 << (libc::SIGSYS - 1);
/// Signals the kernel never blocks (`rt_sigprocmask` drops them silently).
const UNBLOCKABLE: u64 = (1 << (libc::SIGKILL - 1)) | (1 << (libc::SIGSTOP - 1));

static ON: AtomicBool = AtomicBool::new(false);
/// The core's range `[lo, hi)` when [`install`] put the whole filter in (not the
/// preload route's sites filter): 0, 0 otherwise.
static CORE_LO: AtomicU64 = AtomicU64::new(0);
static CORE_HI: AtomicU64 = AtomicU64::new(0);
/// How many buffer filters this image stacked ([`region_added`]); a fork child inherits
/// both the filters and the count.
static BUFFERS: AtomicUsize = AtomicUsize::new(0);
/// Device regions given a buffer filter each; the next gets one for every region.
pub const MAX_BUFFER_FILTERS: usize = 16;
/// Whether [`filter`] routes `sigaltstack` (see [`set_virtual_altstack`]).
static VIRTUAL_ALTSTACK: AtomicBool = AtomicBool::new(false);

/// Makes the filter route the program's `sigaltstack` calls that set a stack, so that the
/// tracer's own (large) stack stays every thread's real one and the program's is virtual,
/// as under the preload library (see `sigaltstack` below). For a process in which no thread
/// has a stack of the program's yet (the injected core, started at the exec stop): a
/// thread whose real stack is the program's own when the filter comes keeps it, and a
/// change it makes from a handler running on it could not be made for real (the kernel
/// refuses it, live and at `rt_sigreturn`). Call before [`install`].
pub fn set_virtual_altstack(on: bool) {
    VIRTUAL_ALTSTACK.store(on, Ordering::Relaxed);
}
static EXEC_HOOK: AtomicUsize = AtomicUsize::new(0);

/// One `execve`/`execveat` the program makes, as it passed it (raw pointers into its
/// memory, not checked).
#[derive(Clone, Copy, Debug)]
pub struct ExecCall {
    /// 59 (`execve`) or 322 (`execveat`).
    pub nr: u32,
    /// `execveat`'s directory descriptor (`AT_FDCWD` for `execve`).
    pub dirfd: i32,
    /// The NUL-terminated path.
    pub path: *const u8,
    /// The NULL-terminated argument vector.
    pub argv: *const *const u8,
    /// The NULL-terminated environment.
    pub envp: *const *const u8,
    /// `execveat`'s flags (0 for `execve`).
    pub flags: i32,
}

/// Called in the SIGSYS handler around an exec the program makes: with `None` just
/// before it (the agent asks the recorder to take the thread over), and with
/// `Some(-errno)` when the exec failed (the program goes on, and gets that error). Before
/// the exec, a negative return is the `-errno` the program gets instead of the exec (the
/// recorder would not take the thread over: the new image would inherit the filter
/// without a core); the return after a failure is ignored. Signal context: no
/// allocation, no locks, raw system calls only.
pub type ExecHook = fn(call: &ExecCall, failed: Option<isize>) -> isize;

/// Why [`install`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallError {
    /// The exempt range is empty (`lo >= hi`).
    Range,
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed with this errno (`EINVAL`: a kernel
    /// without seccomp filters or without TSYNC; `EACCES`: no `CAP_SYS_ADMIN` and
    /// `no_new_privs` could not be set; `EFAULT`, `ENOMEM`).
    Seccomp(i32),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed with this errno.
    NoNewPrivs(i32),
    /// Thread `tid` could not be given the filter (`SECCOMP_FILTER_FLAG_TSYNC`: it has a
    /// filter of its own that this process's other threads lack): nothing was installed.
    Tsync(u32),
}

impl core::fmt::Display for InstallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InstallError::Range => write!(f, "the core's code range is empty"),
            InstallError::Seccomp(e) => write!(f, "seccomp filter refused (errno {e})"),
            InstallError::NoNewPrivs(e) => write!(f, "cannot set no_new_privs (errno {e})"),
            InstallError::Tsync(t) => write!(
                f,
                "thread {t} cannot take the filter (it has a seccomp filter of its own)"
            ),
        }
    }
}

/// Whether the filter and handler are on in this process.
pub fn active() -> bool {
    ON.load(Ordering::Acquire)
}

/// The signals the program may never block for real: the tracer's, and SIGSYS once the
/// filter is on (a trapped call with SIGSYS blocked kills the program).
pub(crate) fn never_blocked() -> u64 {
    if active() {
        OURS | SYS_BIT
    } else {
        OURS
    }
}

/// Records that the program had `mask`'s signals blocked in the calling thread before the
/// tracer unblocked those it needs (an image exec'd with SIGSEGV or SIGSYS blocked): the
/// thread believes them blocked still (its queries read them back, and a fault of its
/// own with SIGSEGV blocked kills it, as natively). Call after [`install`] or
/// [`install_handler`].
pub fn believe_blocked(mask: u64) {
    let mask = mask & never_blocked();
    if mask != 0 {
        if let Some(t) = threads::current() {
            t.sysemu_blocked.fetch_or(mask, Ordering::Relaxed);
            // At an exec stop the thread has no TCB yet: its block changes key when libc
            // sets its FS base, and the new one must start with these.
            if sys::fs_base() == 0 {
                threads::set_pending_blocked(
                    sys::gettid(),
                    t.sysemu_blocked.load(Ordering::Relaxed),
                );
            }
        }
    }
}

/// Sets (or clears, with `None`) the exec hook.
pub fn set_exec_hook(hook: Option<ExecHook>) {
    EXEC_HOOK.store(hook.map_or(0, |h| h as usize), Ordering::Release);
}

/// Turns system-call virtualisation on for the whole process: installs the SIGSYS
/// handler ([`install_handler`]), then the filter exempting the core's code `[lo, hi)`
/// on every thread (`SECCOMP_FILTER_FLAG_TSYNC`). `no_new_privs` is set only when the
/// kernel refuses the filter without it (no `CAP_SYS_ADMIN`). Call after
/// [`crate::init`], with the process's other threads stopped (a thread running the
/// program's code between the two steps could make a call the handler is not ready for).
///
/// A filter cannot be removed: the process and every child it forks or execs keeps it,
/// and the core must be at `[lo, hi)` in each image (or every routed call of that image
/// traps into a handler that is not there, and kills it).
pub fn install(lo: u64, hi: u64, exec: Option<ExecHook>) -> Result<(), InstallError> {
    if lo >= hi {
        return Err(InstallError::Range);
    }
    set_exec_hook(exec);
    install_handler();
    let mut code = [libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    }; FILTER_MAX];
    let n = filter(lo, hi, &mut code);
    set_filter(&mut code, n).inspect_err(|_| ON.store(false, Ordering::Release))?;
    CORE_LO.store(lo, Ordering::Relaxed);
    CORE_HI.store(hi, Ordering::Release);
    Ok(())
}

/// Device region `[start, start + len)` was registered. With the whole filter on (the
/// injected core): stacks a buffer filter for it ([`filter_buffers`]; the first one also
/// traps the vector calls), so that the system calls handed a buffer there reach device
/// memory through its alias ([`buffer_call`]) instead of failing with `EFAULT` on its
/// closed pages, as the preload library's wrappers do. Such a call costs a trap (about 3
/// µs); calls aimed elsewhere cost each filter a few instructions. Past
/// [`MAX_BUFFER_FILTERS`] regions, one last filter traps those calls wherever they point.
/// If the kernel refuses a filter (a thread with a filter of its own, which `TSYNC`
/// cannot join), says so: such calls then fail with `EFAULT` on device memory.
pub(crate) fn region_added(start: u64, len: u64) {
    let hi = CORE_HI.load(Ordering::Acquire);
    if hi == 0 || !active() {
        return;
    }
    let k = BUFFERS.fetch_add(1, Ordering::AcqRel);
    if k > MAX_BUFFER_FILTERS {
        return;
    }
    let range = (k < MAX_BUFFER_FILTERS).then(|| {
        (
            start.saturating_sub(BUFFER_SLACK),
            start.saturating_add(len),
        )
    });
    let lo = CORE_LO.load(Ordering::Relaxed);
    let mut code = [libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    }; FILTER_MAX];
    let n = filter_buffers(lo, hi, range, k == 0, &mut code);
    if let Err(e) = set_filter(&mut code, n) {
        let mut t = crate::MarkText::<200>::empty();
        t.put(b"cannot add the seccomp filter for system calls on device memory (");
        match e {
            InstallError::Tsync(tid) => {
                t.put(b"thread ");
                t.num(u64::from(tid), false);
                t.put(b" has a filter of its own");
            }
            InstallError::Seccomp(errno) | InstallError::NoNewPrivs(errno) => {
                t.put(b"errno ");
                t.num(errno as u64, false);
            }
            InstallError::Range => t.put(b"no range"),
        }
        t.put(b"): such calls fail with EFAULT");
        crate::mark(t.text());
    }
}

/// Installs the filter program `code[..n]` on every thread (setting `no_new_privs` only
/// when the kernel asks for it).
fn set_filter(code: &mut [libc::sock_filter; FILTER_MAX], n: usize) -> Result<(), InstallError> {
    let prog = libc::sock_fprog {
        len: n as u16,
        filter: code.as_mut_ptr(),
    };
    let set = || {
        // SAFETY: a valid program that lives across the call.
        unsafe {
            sys::syscall6(
                NR_SECCOMP,
                1, // SECCOMP_SET_MODE_FILTER
                1, // SECCOMP_FILTER_FLAG_TSYNC
                &prog as *const libc::sock_fprog as usize,
                0,
                0,
                0,
            )
        }
    };
    let mut r = set();
    if r == -(libc::EACCES as isize) {
        // SAFETY: a flag of our own process.
        let e = unsafe {
            sys::syscall6(NR_PRCTL, 38 /* PR_SET_NO_NEW_PRIVS */, 1, 0, 0, 0, 0)
        };
        if e < 0 {
            return Err(InstallError::NoNewPrivs(-e as i32));
        }
        r = set();
    }
    if r != 0 {
        return Err(if r > 0 {
            InstallError::Tsync(r as u32)
        } else {
            InstallError::Seccomp(-r as i32)
        });
    }
    Ok(())
}

/// Turns system-call virtualisation on for the calls made from the `syscall`
/// instructions ending at `sites` only ([`filter_sites`]): the preload route's, for a
/// program with inline system calls. Installs the SIGSYS handler, then the filter on
/// every thread. What `install` says of `no_new_privs` and of a filter that cannot be
/// removed holds: a later image with a `syscall` instruction at one of those addresses
/// needs the handler before it runs it (the preload library installs it at its start).
pub fn install_sites(sites: &[u64]) -> Result<(), InstallError> {
    let mut code = [libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    }; FILTER_MAX];
    let n = filter_sites(sites, &mut code).ok_or(InstallError::Range)?;
    set_exec_hook(None);
    install_handler();
    // On failure virtualisation is off again.
    set_filter(&mut code, n).inspect_err(|_| ON.store(false, Ordering::Release))
}

/// Installs the SIGSYS handler only (an image whose inherited filter already exempts the
/// core at the same range). An action the program had for SIGSYS becomes its virtual one.
pub fn install_handler() {
    let act = KSigaction {
        handler: on_sigsys as *const () as usize,
        // SA_NODEFER: a program SIGSYS handler we call may make a trapped call; with
        // SIGSYS blocked the kernel would kill the program instead of trapping.
        flags: SA_SIGINFO | SA_ONSTACK | SA_NODEFER | SA_RESTART,
        restorer: 0,
        mask: HANDLER_MASK & !SYS_BIT,
    };
    let mut old = KSigaction::default();
    sys::sigaction(libc::SIGSYS, Some(&act), Some(&mut old));
    if old.handler != on_sigsys as *const () as usize && !active() {
        signals::set_app_action(libc::SIGSYS, &old);
    }
    ON.store(true, Ordering::Release);
    sys::never_block(SYS_BIT);
    strip_installed_handlers();
    // The calling thread must not die of its first trapped call if it had SIGSYS blocked
    // (an image exec'd with every signal blocked): unblocked for real, blocked for the
    // program.
    let mut was = 0u64;
    sys::sigprocmask(libc::SIG_UNBLOCK, Some(&SYS_BIT), Some(&mut was));
    if was & SYS_BIT != 0 {
        if let Some(t) = threads::current() {
            t.sysemu_blocked.fetch_or(SYS_BIT, Ordering::Relaxed);
        }
    }
}

const SA_SIGINFO: u64 = 4;
const SA_ONSTACK: u64 = 0x0800_0000;
const SA_RESTART: u64 = 0x1000_0000;
const SA_NODEFER: u64 = 0x4000_0000;

/// A BPF program under construction, with forward jumps to labels (no allocation).
struct Asm<'a> {
    out: &'a mut [libc::sock_filter; FILTER_MAX],
    /// Per instruction, the labels its `jt`/`jf` name (`NONE`: none, `LIT`: the literal
    /// offset written).
    fix: [(u8, u8); FILTER_MAX],
    /// Per instruction, the label an unconditional jump (`JA`, 32-bit offset) names.
    far: [u8; FILTER_MAX],
    n: usize,
    at: [usize; LABELS],
}

const NONE: u8 = u8::MAX;
/// A jump offset given literally (not a label).
const LIT: u8 = u8::MAX - 1;
const LABELS: usize = 40;
// Labels.
const ALLOW: u8 = 0;
const TRAP: u8 = 1;
const NOT_CORE: u8 = 2;
const IP_LO_OK: u8 = 3;
const IP_LO_LOW: u8 = 4;
const IP_HI_LOW: u8 = 5;
const MMAP: u8 = 6;
const NEXT: u8 = 7;
const SIGALTSTACK: u8 = 8;
const SIGPROCMASK: u8 = 9;
const MEM: u8 = 10;
const ARG_LO_OK: u8 = 11;
const ARG_LO_LOW: u8 = 12;
const ARG_HI_LOW: u8 = 13;
const MADVISE: u8 = 14;
/// The buffer filter's range test of argument `i` (`BUF_ARG + i`, `i` < 5), and the
/// scratch labels of those tests (from `BUF_ARG + 5`, three each).
const BUF_ARG: u8 = 16;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

impl<'a> Asm<'a> {
    fn new(out: &'a mut [libc::sock_filter; FILTER_MAX]) -> Self {
        Asm {
            out,
            fix: [(NONE, NONE); FILTER_MAX],
            far: [NONE; FILTER_MAX],
            n: 0,
            at: [0; LABELS],
        }
    }
    /// What every whole-process filter starts with: i386 and x32 calls and the core's own
    /// (from `[lo, hi)`) are allowed; the rest goes on at label `NOT_CORE`.
    fn preamble(&mut self, lo: u64, hi: u64) {
        self.ld(OFF_ARCH);
        self.op(JEQ, AUDIT_ARCH_X86_64, NEXT, ALLOW);
        self.ld(OFF_NR);
        self.op(JSET, X32_SYSCALL_BIT, ALLOW, NEXT);
        self.in_range(
            OFF_IP,
            lo,
            hi,
            ALLOW,
            NOT_CORE,
            [IP_LO_OK, IP_LO_LOW, IP_HI_LOW],
        );
        self.label(NOT_CORE);
    }
    fn op(&mut self, code: u16, k: u32, jt: u8, jf: u8) {
        self.out[self.n] = libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        self.fix[self.n] = (jt, jf);
        self.n += 1;
    }
    fn ld(&mut self, off: u32) {
        self.op(LD_W_ABS, off, NONE, NONE);
    }
    /// A conditional jump with literal offsets.
    fn op_lit(&mut self, code: u16, k: u32, jt: u8, jf: u8) {
        self.op(code, k, LIT, LIT);
        self.out[self.n - 1].jt = jt;
        self.out[self.n - 1].jf = jf;
    }
    /// An unconditional jump to label `l` (any distance forward).
    fn ja(&mut self, l: u8) {
        self.op(JA, 0, NONE, NONE);
        self.far[self.n - 1] = l;
    }
    fn ret(&mut self, k: u32) {
        self.op(RET_K, k, NONE, NONE);
    }
    fn label(&mut self, l: u8) {
        self.at[l as usize] = self.n;
    }
    /// Jumps to `yes` when the 64-bit word at `off` lies in `[lo, hi)`, else to `no`
    /// (the high halves first, the low ones where the high ones are equal); `tmp`: three
    /// labels of its own.
    fn in_range(&mut self, off: u32, lo: u64, hi: u64, yes: u8, no: u8, tmp: [u8; 3]) {
        let (lo_hi, lo_lo) = ((lo >> 32) as u32, lo as u32);
        let (hi_hi, hi_lo) = ((hi >> 32) as u32, hi as u32);
        let [lo_ok, lo_low, hi_low] = tmp;
        // >= lo
        self.ld(off + 4);
        self.op(JGT, lo_hi, lo_ok, NEXT);
        self.op(JEQ, lo_hi, lo_low, no);
        self.label(lo_low);
        self.ld(off);
        self.op(JGE, lo_lo, lo_ok, no);
        // < hi
        self.label(lo_ok);
        self.ld(off + 4);
        self.op(JGT, hi_hi, no, NEXT);
        self.op(JEQ, hi_hi, hi_low, yes);
        self.label(hi_low);
        self.ld(off);
        self.op(JGE, hi_lo, no, yes);
    }
    /// Resolves the jumps; `NEXT` is the following instruction.
    fn finish(self) -> usize {
        for i in 0..self.n {
            let (t, f) = self.fix[i];
            // Every label lies after its jumps (BPF jumps only forward), within 255.
            let rel = |l: u8, lit: u8| -> u8 {
                if l == LIT {
                    lit
                } else if l == NONE || l == NEXT {
                    0
                } else {
                    (self.at[l as usize] - i - 1) as u8
                }
            };
            self.out[i].jt = rel(t, self.out[i].jt);
            self.out[i].jf = rel(f, self.out[i].jf);
            let l = self.far[i];
            if l != NONE {
                self.out[i].k = (self.at[l as usize] - i - 1) as u32;
            }
        }
        self.n
    }
}

/// Writes the filter program into `out` and returns its length: x86-64 calls from outside
/// `[lo, hi)` that the tracer must see return `SECCOMP_RET_TRAP | FILTER_DATA`; every other
/// call, the core's own, i386 and x32 calls are allowed.
///
/// Trapped: `mmap` of a file, or anonymous with `MAP_FIXED` (it may replace a traced
/// mapping, as a `munmap` does), `munmap`, `mremap`, `mprotect`, `pkey_mprotect`,
/// `mlock`, `mlock2`, `munlock`, `madvise` with `MADV_POPULATE_READ`/`WRITE` (the kernel
/// cannot lock or populate the pages the tracer keeps closed) — each unless its address
/// (the first argument) lies in `[lo, hi)`, which only the injector maps, from outside —,
/// `execve`, `execveat`, `rt_sigaction`, `rt_sigprocmask` with a new or an old set.
pub fn filter(lo: u64, hi: u64, out: &mut [libc::sock_filter; FILTER_MAX]) -> usize {
    let mut a = Asm::new(out);
    a.preamble(lo, hi);
    body(a, lo, hi, true)
}

/// Writes a filter that traps only calls made from the `syscall` instructions ending
/// at `sites` (the instruction pointer a filter sees: the address after the
/// instruction): the preload route's, for the raw system calls a program makes with
/// inline `syscall` instructions, which no interposed libc function sees. From those
/// sites it traps what [`filter`] traps, but `execve`/`execveat`; every other call, from
/// anywhere else, is allowed. `None`: too many sites (more than [`MAX_SITES`], or more
/// than 8 distinct upper address halves).
pub fn filter_sites(sites: &[u64], out: &mut [libc::sock_filter; FILTER_MAX]) -> Option<usize> {
    if sites.is_empty() || sites.len() > MAX_SITES {
        return None;
    }
    let mut a = Asm::new(out);
    // (Local verdicts: the sites' tests may put the common ones out of a short jump's
    // reach.)
    a.ld(OFF_ARCH);
    a.op_lit(JEQ, AUDIT_ARCH_X86_64, 1, 0);
    a.ret(SECCOMP_RET_ALLOW);
    a.ld(OFF_NR);
    a.op_lit(JSET, X32_SYSCALL_BIT, 0, 1);
    a.ret(SECCOMP_RET_ALLOW);
    let mut his = [0u32; MAX_SITE_GROUPS];
    let mut groups = 0;
    for &s in sites {
        let h = (s >> 32) as u32;
        if !his[..groups].contains(&h) {
            if groups == MAX_SITE_GROUPS {
                return None;
            }
            his[groups] = h;
            groups += 1;
        }
    }
    for &h in &his[..groups] {
        // ld hi; jeq h → the group, else over it.
        a.ld(OFF_IP + 4);
        a.op_lit(JEQ, h, 1, 0);
        let skip = a.n;
        a.op(JA, 0, NONE, NONE);
        a.ld(OFF_IP);
        let lows = sites.iter().filter(|&&s| (s >> 32) as u32 == h);
        let mut chunk = [0u32; CHUNK];
        let mut m = 0;
        let flush = |a: &mut Asm<'_>, chunk: &[u32]| {
            // A hit jumps past the rest and the miss jump to the hit jump.
            for (i, &lo) in chunk.iter().enumerate() {
                a.op_lit(JEQ, lo, (chunk.len() - i) as u8, 0);
            }
            a.op_lit(JA, 0, 0, 0);
            a.out[a.n - 1].k = 1;
            a.ja(NOT_CORE);
        };
        for &s in lows {
            chunk[m] = s as u32;
            m += 1;
            if m == CHUNK {
                flush(&mut a, &chunk[..m]);
                m = 0;
            }
        }
        if m > 0 {
            flush(&mut a, &chunk[..m]);
        }
        a.out[skip].k = (a.n - skip - 1) as u32;
    }
    // No site: allowed.
    a.ret(SECCOMP_RET_ALLOW);
    a.label(NOT_CORE);
    Some(body(a, 0, 0, false))
}

/// The part of [`filter`] after the instruction pointer was judged (label `NOT_CORE`):
/// the calls that trap; a memory call at an address in `[lo, hi)` does not. `exec`:
/// `execve`/`execveat` trap too.
fn body(mut a: Asm<'_>, lo: u64, hi: u64, exec: bool) -> usize {
    a.ld(OFF_NR);
    a.op(JEQ, NR_MMAP, MMAP, NEXT);
    for nr in [
        NR_MUNMAP,
        NR_MREMAP,
        NR_MPROTECT,
        NR_PKEY_MPROTECT,
        NR_MLOCK,
        NR_MLOCK2,
        NR_MUNLOCK,
    ] {
        a.op(JEQ, nr, MEM, NEXT);
    }
    a.op(JEQ, NR_MADVISE, MADVISE, NEXT);
    if exec {
        for nr in [NR_EXECVE, NR_EXECVEAT] {
            a.op(JEQ, nr, TRAP, NEXT);
        }
    }
    a.op(JEQ, NR_RT_SIGACTION, TRAP, NEXT);
    a.op(JEQ, NR_RT_SIGPROCMASK, SIGPROCMASK, NEXT);
    if VIRTUAL_ALTSTACK.load(Ordering::Relaxed) {
        a.op(JEQ, NR_SIGALTSTACK, SIGALTSTACK, NEXT);
    }
    a.ret(SECCOMP_RET_ALLOW);
    // (BPF jumps only forward: every test lies before the two verdicts.)
    // mmap: anonymous memory is never a device, and is allowed unless it replaces what
    // was mapped (MAP_FIXED: a traced region there must go).
    a.label(MMAP);
    a.ld(off_arg(3));
    a.op(JSET, MAP_ANONYMOUS, NEXT, MEM);
    a.op(JSET, MAP_FIXED, MEM, ALLOW);
    // madvise: only the populating advice (the kernel cannot populate the traced pages).
    a.label(MADVISE);
    a.ld(off_arg(2));
    a.op(JEQ, crate::MADV_POPULATE_READ as u32, MEM, NEXT);
    a.op(JEQ, crate::MADV_POPULATE_WRITE as u32, MEM, ALLOW);
    // A memory call at an address in the core's range is the injector's (loading or
    // unloading the core from outside it: at an exec, the inherited filter is there
    // before the core is).
    a.label(MEM);
    a.in_range(
        off_arg(0),
        lo,
        hi,
        ALLOW,
        TRAP,
        [ARG_LO_OK, ARG_LO_LOW, ARG_HI_LOW],
    );
    // sigaltstack with a new stack (a query reads the real one: see `sigaltstack`).
    a.label(SIGALTSTACK);
    a.ld(off_arg(0));
    a.op(JEQ, 0, NEXT, TRAP);
    a.ld(off_arg(0) + 4);
    a.op(JEQ, 0, ALLOW, TRAP);
    // A new set or an old-set pointer other than NULL (either half): a query too, so
    // that it reads the thread's virtual mask back.
    a.label(SIGPROCMASK);
    a.ld(off_arg(1));
    a.op(JEQ, 0, NEXT, TRAP);
    a.ld(off_arg(1) + 4);
    a.op(JEQ, 0, NEXT, TRAP);
    a.ld(off_arg(2));
    a.op(JEQ, 0, NEXT, TRAP);
    a.ld(off_arg(2) + 4);
    a.op(JEQ, 0, ALLOW, TRAP);
    a.label(ALLOW);
    a.ret(SECCOMP_RET_ALLOW);
    a.label(TRAP);
    a.ret(SECCOMP_RET_TRAP | FILTER_DATA);
    a.finish()
}

/// The calls [`filter_buffers`] traps, with the argument that points at their buffer:
/// `read`, `write`, `pread64`, `pwrite64`, `sendto`, `recvfrom`, `stat`, `fstat`,
/// `lstat`, `readlink` (1), `ioctl`, `newfstatat`, `readlinkat` (2), `statx` (4),
/// `getrandom`, `pipe`, `pipe2`, `getcwd`, `uname` (0), `socketpair` (3).
pub const BUFFER_CALLS: [(u32, u8); 20] = [
    (0, 1),
    (1, 1),
    (17, 1),
    (18, 1),
    (44, 1),
    (45, 1),
    (4, 1),
    (5, 1),
    (6, 1),
    (89, 1),
    (NR_IOCTL, 2),
    (262, 2),
    (267, 2),
    (332, 4),
    (318, 0),
    (22, 0),
    (293, 0),
    (79, 0),
    (63, 0),
    (53, 3),
];
/// The vector calls, whose buffers a filter cannot see (an `iovec` array, or one in a
/// `msghdr`): `readv`, `writev`, `preadv`, `pwritev`, `preadv2`, `pwritev2`, `sendmsg`,
/// `recvmsg`.
pub const VECTOR_CALLS: [u32; 8] = [19, 20, 295, 296, 327, 328, 46, 47];
const NR_IOCTL: u32 = 16;

/// Every call handed a buffer that [`buffer_shape`] describes: [`BUFFER_CALLS`]'s, then
/// [`VECTOR_CALLS`].
pub const BUFFER_SYSCALLS: [u32; BUFFER_CALLS.len() + VECTOR_CALLS.len()] = {
    let mut all = [0u32; BUFFER_CALLS.len() + VECTOR_CALLS.len()];
    let mut i = 0;
    while i < BUFFER_CALLS.len() {
        all[i] = BUFFER_CALLS[i].0;
        i += 1;
    }
    while i < all.len() {
        all[i] = VECTOR_CALLS[i - BUFFER_CALLS.len()];
        i += 1;
    }
    all
};

/// How far below a device region a buffer may start and still be trapped: one page (a
/// structure across the page boundary just below the region). No more: the mapping just
/// below a device mapping is often a thread's stack (mappings are placed top-down), and
/// every call of that thread on a buffer in that reach would pay a trap. A buffer that
/// starts further below and runs into the region is not seen (`EFAULT`, as before).
const BUFFER_SLACK: u64 = 4096;

/// Writes a buffer filter into `out` and returns its length: of the x86-64 calls from
/// outside `[lo, hi)`, those of [`BUFFER_CALLS`] whose buffer argument lies in
/// `range` (`None`: wherever it lies), and with `vectors` every one of
/// [`VECTOR_CALLS`], return `SECCOMP_RET_TRAP | FILTER_DATA`; every other call is
/// allowed. (A filter cannot follow a pointer, nor learn of device memory mapped after it:
/// one is stacked per device region, each trapping the calls aimed at it; the vector
/// calls trap whatever they point at. `buffer_call` makes a call as it was where its
/// buffers turn out to be ordinary memory.)
pub fn filter_buffers(
    lo: u64,
    hi: u64,
    range: Option<(u64, u64)>,
    vectors: bool,
    out: &mut [libc::sock_filter; FILTER_MAX],
) -> usize {
    let mut a = Asm::new(out);
    a.preamble(lo, hi);
    a.ld(OFF_NR);
    if vectors {
        for nr in VECTOR_CALLS {
            a.op(JEQ, nr, TRAP, NEXT);
        }
    }
    for (nr, arg) in BUFFER_CALLS {
        let to = if range.is_some() { BUF_ARG + arg } else { TRAP };
        a.op(JEQ, nr, to, NEXT);
    }
    a.ret(SECCOMP_RET_ALLOW);
    if let Some((rlo, rhi)) = range {
        // (Labels from BUF_ARG + 5 on are the range tests' scratch ones.)
        let mut tmp = BUF_ARG + 5;
        for arg in 0..5u8 {
            a.label(BUF_ARG + arg);
            if BUFFER_CALLS.iter().any(|&(_, x)| x == arg) {
                a.in_range(
                    off_arg(u32::from(arg)),
                    rlo,
                    rhi,
                    TRAP,
                    ALLOW,
                    [tmp, tmp + 1, tmp + 2],
                );
                tmp += 3;
            }
        }
    }
    a.label(ALLOW);
    a.ret(SECCOMP_RET_ALLOW);
    a.label(TRAP);
    a.ret(SECCOMP_RET_TRAP | FILTER_DATA);
    a.finish()
}

/// The frame's argument registers of the trapped call.
fn args(g: &crate::ctx::Gregs) -> [u64; 6] {
    [
        g[libc::REG_RDI as usize] as u64,
        g[libc::REG_RSI as usize] as u64,
        g[libc::REG_RDX as usize] as u64,
        g[libc::REG_R10 as usize] as u64,
        g[libc::REG_R8 as usize] as u64,
        g[libc::REG_R9 as usize] as u64,
    ]
}

const EFAULT: isize = -(libc::EFAULT as isize);
const EINVAL: isize = -(libc::EINVAL as isize);

/// Reads `buf.len()` (a multiple of 8) bytes of the program's memory at `addr`; `false`
/// where the kernel would have said `EFAULT`.
fn read_user(addr: u64, buf: &mut [u8]) -> bool {
    for (k, c) in buf.chunks_mut(8).enumerate() {
        // SAFETY: a guarded load: a fault comes back as an error.
        if unsafe { guard::read(addr.wrapping_add(8 * k as u64), c) }.is_err() {
            return false;
        }
    }
    true
}

/// Writes `data` (a multiple of 8 bytes) to the program's memory at `addr`; `false` where
/// the kernel would have said `EFAULT`.
fn write_user(addr: u64, data: &[u8]) -> bool {
    for (k, c) in data.chunks(8).enumerate() {
        // SAFETY: a guarded store into memory the program handed the call for its answer.
        if unsafe { guard::write(addr.wrapping_add(8 * k as u64), c) }.is_err() {
            return false;
        }
    }
    true
}

extern "C" fn on_sigsys(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo: si_errno at 4, si_code at 8; for SIGSYS the call's
    // number at 24 (`_sigsys._syscall`).
    let (data, code, nr) = unsafe {
        let p = info as *const u8;
        (
            *(p.add(4) as *const i32),
            *(p.add(8) as *const i32),
            *(p.add(24) as *const i32),
        )
    };
    if code != SYS_SECCOMP || data as u32 != FILTER_DATA {
        // Another filter's trap, or a SIGSYS sent by someone: the program's.
        // SAFETY: handler context with the kernel's info.
        unsafe { signals::deliver(sig, info, uc) };
        return;
    }
    crate::check_fork();
    // SAFETY: handler context.
    let g = unsafe { gregs(uc) };
    let a = args(g);
    let rc = match nr as u32 {
        NR_MMAP => mmap(a),
        NR_MUNMAP => {
            if a[0] % 4096 == 0 && a[1] != 0 {
                crate::before_munmap(a[0], a[1], 0);
            }
            // SAFETY: the program's own call.
            unsafe { sys::munmap(a[0] as usize, a[1] as usize) }
        }
        NR_MREMAP => {
            // SAFETY: the program's own call.
            let r = unsafe {
                sys::mremap(
                    a[0] as usize,
                    a[1] as usize,
                    a[2] as usize,
                    a[3] as i32,
                    a[4] as usize,
                )
            };
            if r >= 0 {
                crate::after_mremap(a[0], a[1], r as u64, a[2], 0);
            }
            r
        }
        NR_MPROTECT => crate::mprotect(a[0], a[1], a[2] as i32).unwrap_or_else(|| {
            // SAFETY: the program's own call.
            unsafe { sys::mprotect(a[0] as usize, a[1] as usize, a[2] as i32) }
        }),
        NR_PKEY_MPROTECT => crate::mprotect(a[0], a[1], a[2] as i32).unwrap_or_else(|| {
            // SAFETY: the program's own call.
            unsafe { plain(nr, a) }
        }),
        NR_MLOCK | NR_MLOCK2 => {
            let flags = if nr as u32 == NR_MLOCK {
                0
            } else {
                a[2] as i32
            };
            // SAFETY: the program's own call.
            crate::mlock(a[0], a[1], flags).unwrap_or_else(|| unsafe { plain(nr, a) })
        }
        NR_MUNLOCK => {
            // SAFETY: the program's own call.
            let r = unsafe { plain(nr, a) };
            if r == 0 {
                crate::after_munlock(a[0], a[1]);
            }
            r
        }
        NR_MADVISE => crate::madvise_populate(a[0], a[1], a[2] as i32).unwrap_or_else(|| {
            // SAFETY: the program's own call.
            unsafe { plain(nr, a) }
        }),
        NR_RT_SIGACTION => rt_sigaction(a),
        // SAFETY: handler context.
        NR_RT_SIGPROCMASK => unsafe { rt_sigprocmask(a, uc) },
        // SAFETY: handler context.
        NR_SIGALTSTACK => unsafe { sigaltstack(a, uc) },
        // SAFETY: handler context.
        NR_EXECVE | NR_EXECVEAT => unsafe { exec(nr as u32, a, uc) },
        // SAFETY: handler context.
        n if BUFFER_SYSCALLS.contains(&n) => unsafe { buffer_call(n, a, uc) },
        // A call this filter does not trap (a newer filter of ours?): made as asked.
        // SAFETY: the program's own call, with its arguments.
        _ => unsafe { plain(nr, a) },
    };
    g[libc::REG_RAX as usize] = rc as i64;
}

/// `sigaltstack` with a new stack. Where the thread's real stack is the tracer's (or it
/// has none: it gets the tracer's, see `signals::keep_altstack`), the call is virtual, as
/// the preload library's (`signals::app_sigaltstack`): the program's stack is recorded
/// and reported, the tracer's stays the real one, because the fault path needs more than
/// a program's small stack (Rust's std gives every thread 8 KiB and a guard page, and a
/// device access from such a thread overflowed it). Where the real stack is the
/// program's own (it set it before the filter was there), the call acts on the frame's
/// `uc_stack`, which is what `rt_sigreturn` installs (a change of the live setting would
/// be undone there; a program that disables its stack and unmaps it, as Rust's std does
/// at a thread's exit, must really lose it). Queries are not trapped: they read the real
/// stack, which is what a handler running on it (Go's `adjustSignalStack`) must see.
/// Pointers are read and written guarded (`EFAULT` as natively).
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
unsafe fn sigaltstack(a: [u64; 6], uc: *mut libc::c_void) -> isize {
    const SIZE: usize = core::mem::size_of::<libc::stack_t>();
    // SAFETY: stack_t is plain data; zeroed is valid.
    let (mut new, mut old): (libc::stack_t, libc::stack_t) =
        unsafe { (core::mem::zeroed(), core::mem::zeroed()) };
    // SAFETY: stack_t is plain data: any bytes are a value.
    let new_bytes =
        unsafe { core::slice::from_raw_parts_mut(&mut new as *mut libc::stack_t as *mut u8, SIZE) };
    if a[0] != 0 && !read_user(a[0], new_bytes) {
        return EFAULT;
    }
    let ss = if a[0] != 0 {
        &new as *const libc::stack_t
    } else {
        core::ptr::null()
    };
    let oldp = if a[1] != 0 {
        &mut old as *mut libc::stack_t
    } else {
        core::ptr::null_mut()
    };
    let ours = signals::own_altstack();
    // SAFETY: the kernel's ucontext of this handler.
    let (frame, rsp) = unsafe {
        let u = &mut *(uc as *mut libc::ucontext_t);
        let rsp = u.uc_mcontext.gregs[libc::REG_RSP as usize] as u64;
        (&mut u.uc_stack, rsp)
    };
    let virtual_ = frame.ss_flags & libc::SS_DISABLE != 0
        || ours.is_some_and(|(p, _)| frame.ss_sp as u64 == p);
    let r = if virtual_ {
        // SAFETY: both pointers are to our locals (or null).
        match unsafe { signals::app_sigaltstack(ss, oldp) } {
            Some(r) => {
                // SAFETY: handler context.
                unsafe { signals::keep_altstack(uc) };
                r
            }
            // The tracer is not active: the frame is the truth.
            // SAFETY: our locals (or null).
            None => unsafe { frame_sigaltstack(frame, rsp, ss, oldp) },
        }
    } else {
        // SAFETY: our locals (or null).
        unsafe { frame_sigaltstack(frame, rsp, ss, oldp) }
    };
    if r == 0 && a[1] != 0 {
        // SAFETY: stack_t is plain data.
        let bytes =
            unsafe { core::slice::from_raw_parts(&old as *const libc::stack_t as *const u8, SIZE) };
        if !write_user(a[1], bytes) {
            return EFAULT;
        }
    }
    r as isize
}

/// `sigaltstack(ss, old)` as the kernel answers it, on `frame` (the `uc_stack` that
/// `rt_sigreturn` installs) for a thread interrupted at `rsp`.
///
/// # Safety
/// `ss` and `old` are valid or null.
unsafe fn frame_sigaltstack(
    frame: &mut libc::stack_t,
    rsp: u64,
    ss: *const libc::stack_t,
    old: *mut libc::stack_t,
) -> i32 {
    use signals::SS_AUTODISARM;
    let enabled = frame.ss_flags & libc::SS_DISABLE == 0;
    let on = enabled && rsp.wrapping_sub(frame.ss_sp as u64) < frame.ss_size as u64;
    if !old.is_null() {
        // SAFETY: caller's contract.
        unsafe {
            *old = libc::stack_t {
                ss_sp: frame.ss_sp,
                ss_flags: if !enabled {
                    libc::SS_DISABLE
                } else if on {
                    libc::SS_ONSTACK
                } else {
                    frame.ss_flags & SS_AUTODISARM
                },
                ss_size: frame.ss_size,
            }
        };
    }
    if ss.is_null() {
        return 0;
    }
    // SAFETY: caller's contract.
    let n = unsafe { &*ss };
    if let Err(e) = signals::check_new_altstack(n, on) {
        return e;
    }
    if n.ss_flags & !SS_AUTODISARM == libc::SS_DISABLE {
        *frame = libc::stack_t {
            ss_sp: core::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
    } else {
        *frame = libc::stack_t {
            ss_sp: n.ss_sp,
            ss_flags: n.ss_flags & SS_AUTODISARM,
            ss_size: n.ss_size,
        };
    }
    0
}

/// System call `nr` with the trapped call's arguments, as the program made it.
///
/// # Safety
/// The program's own call: whatever it does to its memory is its business.
unsafe fn plain(nr: i32, a: [u64; 6]) -> isize {
    // SAFETY: caller's contract.
    unsafe {
        sys::syscall6(
            nr as usize,
            a[0] as usize,
            a[1] as usize,
            a[2] as usize,
            a[3] as usize,
            a[4] as usize,
            a[5] as usize,
        )
    }
}

fn mmap(a: [u64; 6]) -> isize {
    let (prot, flags, fd, off) = (a[2] as i32, a[3] as i32, a[4] as i32, a[5] as i64);
    // SAFETY: the program's own call.
    let r = unsafe { sys::mmap(a[0] as usize, a[1] as usize, prot, flags, fd, off) };
    if r >= 0 {
        crate::after_mmap(r as u64, a[1], prot, flags, fd, off, 0);
    }
    r
}

/// Per signal, which of [`never_blocked`] the program's handler asked to block in its
/// `sa_mask` (taken out before the kernel saw it, given back when the program reads it).
static STRIPPED: [AtomicU64; 65] = [const { AtomicU64::new(0) }; 65];

/// `rt_sigaction(sig, act, oldact, sigsetsize)`. A signal the tracer owns: the program's
/// action is recorded and reported back, the tracer's handler stays. Any other: made as
/// asked, without the tracer's signals in the handler's mask (see the module notes).
fn rt_sigaction(a: [u64; 6]) -> isize {
    let sig = a[0] as i32;
    let owned = (1..=64).contains(&sig) && (signals::is_reserved(sig) || sig == libc::SIGSYS);
    if a[3] != 8 {
        return EINVAL;
    }
    let mut new = [0u8; 32];
    if a[1] != 0 && !read_user(a[1], &mut new) {
        return EFAULT;
    }
    let word = |k: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&new[8 * k..8 * k + 8]);
        u64::from_le_bytes(w)
    };
    let act = KSigaction {
        handler: word(0) as usize,
        flags: word(1),
        restorer: word(2) as usize,
        mask: word(3) & !UNBLOCKABLE,
    };
    // A `vfork` child (posix_spawn's, Go's exec) shares our memory, not our signal
    // actions: what it sets is its own, and must not land in the program's tables.
    let vforked = !crate::owns_state();
    let old = if owned {
        let old = signals::app_action(sig);
        if a[1] != 0 && !vforked {
            signals::set_app_action(sig, &act);
        } else if a[1] != 0 && sig != libc::SIGSYS {
            // Made for real in the child (it is about to exec, and will touch no
            // device); SIGSYS stays the tracer's, for the exec to be trapped.
            let r = sigaction_as_is(sig, Some(&act), None);
            if r < 0 {
                return r;
            }
        }
        old
    } else {
        let keep = never_blocked();
        let mine = KSigaction {
            mask: act.mask & !keep,
            ..act
        };
        let mut old = KSigaction::default();
        // The program's own call, with its action less the tracer's signals.
        let r = sigaction_as_is(sig, (a[1] != 0).then_some(&mine), Some(&mut old));
        if r < 0 {
            return r;
        }
        // A valid signal (the kernel took it).
        let slot = &STRIPPED[sig as usize];
        old.mask |= slot.load(Ordering::Relaxed);
        if a[1] != 0 && !vforked {
            slot.store(act.mask & keep, Ordering::Relaxed);
        }
        old
    };
    if a[2] != 0 {
        let mut out = [0u8; 32];
        for (k, v) in [old.handler as u64, old.flags, old.restorer as u64, old.mask]
            .into_iter()
            .enumerate()
        {
            out[8 * k..8 * k + 8].copy_from_slice(&v.to_le_bytes());
        }
        if !write_user(a[2], &out) {
            return EFAULT;
        }
    }
    0
}

/// `rt_sigaction` with `act` as it is (the program's restorer, not the tracer's).
fn sigaction_as_is(sig: i32, act: Option<&KSigaction>, old: Option<&mut KSigaction>) -> isize {
    let ap = act.map_or(0, |a| a as *const KSigaction as usize);
    let op = old.map_or(0, |o| o as *mut KSigaction as usize);
    // SAFETY: valid pointers or null; sigsetsize 8.
    unsafe { sys::syscall6(NR_RT_SIGACTION as usize, sig as usize, ap, op, 8, 0, 0) }
}

/// Takes [`never_blocked`] out of the `sa_mask` of the handlers the program installed
/// before the filter (remembered, and given back when it reads them).
fn strip_installed_handlers() {
    let keep = never_blocked();
    for sig in 1..=64 {
        if signals::is_reserved(sig) || sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut old = KSigaction::default();
        if sigaction_as_is(sig, None, Some(&mut old)) < 0
            || old.handler <= 1
            || old.mask & keep == 0
        {
            continue;
        }
        let mine = KSigaction {
            mask: old.mask & !keep,
            ..old
        };
        if sigaction_as_is(sig, Some(&mine), None) == 0 {
            STRIPPED[sig as usize].fetch_or(old.mask & keep, Ordering::Relaxed);
        }
    }
}

/// `rt_sigprocmask(how, set, oldset, sigsetsize)` with a new set or a query, on the frame's saved
/// mask (what `rt_sigreturn` installs): the signals the tracer needs stay unblocked for
/// real and blocked in the thread's virtual mask.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
unsafe fn rt_sigprocmask(a: [u64; 6], uc: *mut libc::c_void) -> isize {
    if a[3] != 8 {
        return EINVAL;
    }
    let mut b = [0u8; 8];
    if a[1] != 0 && !read_user(a[1], &mut b) {
        return EFAULT;
    }
    let set = u64::from_le_bytes(b) & !UNBLOCKABLE;
    // SAFETY: handler context.
    let saved = unsafe { uc_mask(uc) };
    let keep = never_blocked();
    // Not in a `vfork` child: it runs with its parent's FS base, so a thread block of its
    // own would be keyed as its parent's (and its parent's must keep the parent's mask).
    // Its reads lack the virtual bits.
    let block = if crate::owns_state() {
        threads::current().map(|t| &t.sysemu_blocked)
    } else {
        None
    };
    let virt = block.map_or(0, |v| v.load(Ordering::Relaxed)) & keep;
    let before = (*saved & !keep) | virt;
    let after = if a[1] == 0 {
        before
    } else {
        match a[0] as i32 {
            libc::SIG_BLOCK => before | set,
            libc::SIG_UNBLOCK => before & !set,
            libc::SIG_SETMASK => set,
            _ => return EINVAL,
        }
    };
    *saved = after & !keep;
    if let Some(v) = block {
        v.store(after & keep, Ordering::Relaxed);
    }
    if a[2] != 0 && !write_user(a[2], &before.to_le_bytes()) {
        return EFAULT;
    }
    0
}

/// `execve`/`execveat`: the hook, then the exec from the core with the program's own
/// signal mask (the exec'd image inherits the mask of the thread that execs, and this
/// handler's blocks nearly everything).
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
unsafe fn exec(nr: u32, a: [u64; 6], uc: *mut libc::c_void) -> isize {
    let call = if nr == NR_EXECVE {
        ExecCall {
            nr,
            dirfd: libc::AT_FDCWD,
            path: a[0] as *const u8,
            argv: a[1] as *const *const u8,
            envp: a[2] as *const *const u8,
            flags: 0,
        }
    } else {
        ExecCall {
            nr,
            dirfd: a[0] as i32,
            path: a[1] as *const u8,
            argv: a[2] as *const *const u8,
            envp: a[3] as *const *const u8,
            flags: a[4] as i32,
        }
    };
    let hook = EXEC_HOOK.load(Ordering::Acquire);
    let hook = (hook != 0).then(|| {
        // SAFETY: stored from an `ExecHook` by `set_exec_hook`.
        unsafe { core::mem::transmute::<usize, ExecHook>(hook) }
    });
    if let Some(h) = hook {
        let r = h(&call, None);
        if r < 0 {
            return r;
        }
    }
    // The exec with the program's own signal mask (the new image starts with it).
    // SAFETY: handler context; the program's own call, with its arguments.
    let rc = unsafe { call_masked(nr, a, uc) };
    if let Some(h) = hook {
        let _ = h(&call, Some(rc));
    }
    rc
}

/// What a system call handed buffers does with them (see [`buffer_shape`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One buffer.
    One {
        /// The argument that points at it.
        arg: usize,
        /// Its length in bytes.
        len: u64,
        /// The kernel reads it.
        reads: bool,
        /// The kernel writes it (both: an `ioctl` argument).
        writes: bool,
        /// The call returns how many bytes went (else all of them, on success).
        by_result: bool,
        /// The call's vector form, for a buffer over several pieces (`readv` for `read`).
        vector: Option<u32>,
    },
    /// An `iovec` array at argument 1, its count at argument 2 (`readv`...).
    Iov {
        /// The kernel writes the buffers (else it reads them).
        writes: bool,
    },
    /// A `msghdr` at argument 1 (`sendmsg`, `recvmsg`).
    Msg {
        /// The kernel writes the buffers (else it reads them).
        writes: bool,
    },
}

/// The index in the ring's call names (`Kind::KERNEL_CALLS`) and the shape of call `nr`
/// of [`BUFFER_SYSCALLS`] with arguments `a` (`None`: another call, or an `ioctl` whose
/// request encodes no buffer). One table for the injected core (`buffer_call`) and the
/// ptrace route's supervisor.
pub fn buffer_shape(nr: u32, a: &[u64; 6]) -> Option<(u8, Shape)> {
    let one =
        |arg: usize, len: u64, writes: bool, by_result: bool, vector: Option<u32>| Shape::One {
            arg,
            len,
            reads: !writes,
            writes,
            by_result,
            vector,
        };
    // Structures and strings the kernel fills.
    let out = |arg: usize, len: u64, by_result: bool| one(arg, len, true, by_result, None);
    Some(match nr {
        0 => (0, one(1, a[2], true, true, Some(19))),
        1 => (1, one(1, a[2], false, true, Some(20))),
        17 => (2, one(1, a[2], true, true, Some(295))),
        18 => (3, one(1, a[2], false, true, Some(296))),
        19 => (4, Shape::Iov { writes: true }),
        20 => (5, Shape::Iov { writes: false }),
        295 => (6, Shape::Iov { writes: true }),
        296 => (7, Shape::Iov { writes: false }),
        327 => (8, Shape::Iov { writes: true }),
        328 => (9, Shape::Iov { writes: false }),
        44 => (11, one(1, a[2], false, true, None)),
        45 => (15, one(1, a[2], true, true, None)),
        46 => (12, Shape::Msg { writes: false }),
        47 => (16, Shape::Msg { writes: true }),
        NR_IOCTL => {
            let (dir, size) = ((a[1] >> 30) & 3, (a[1] >> 16) & 0x3fff);
            if dir == 0 || size == 0 {
                return None;
            }
            let s = Shape::One {
                arg: 2,
                len: size,
                // _IOC_WRITE (1): the program writes, the kernel reads; _IOC_READ (2).
                reads: dir & 1 != 0,
                writes: dir & 2 != 0,
                by_result: false,
                vector: None,
            };
            (19, s)
        }
        4 => (20, out(1, 144, false)),
        5 => (21, out(1, 144, false)),
        6 => (22, out(1, 144, false)),
        262 => (23, out(2, 144, false)),
        332 => (24, out(4, 256, false)),
        318 => (25, out(0, a[1], true)),
        22 => (26, out(0, 8, false)),
        293 => (27, out(0, 8, false)),
        53 => (28, out(3, 8, false)),
        89 => (33, out(1, a[2], true)),
        267 => (34, out(2, a[3], true)),
        79 => (35, out(0, a[1], true)),
        63 => (36, out(0, 390, false)),
        _ => return None,
    })
}

/// The largest structure or string over several pieces a call gets a bounce buffer for
/// (`PATH_MAX`: a `readlink` of one path); larger ones go untranslated.
const BOUNCE: usize = 4096;

/// How many of a `len`-byte buffer's bytes a call that returned `r` went through:
/// `by_result`, as many as it returns (a `read`), else all of them when it succeeded (a
/// structure it fills).
fn went(r: isize, len: u64, by_result: bool) -> u64 {
    match r {
        r if by_result && r > 0 => r as u64,
        r if !by_result && r >= 0 => len,
        _ => 0,
    }
}

/// The most `iovec`s (and pieces) a translated vector call takes; more go untranslated.
const MAX_IOV: usize = 32;

/// One `struct iovec`.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Iovec {
    base: u64,
    len: u64,
}

/// A call handed buffers ([`filter_buffers`]). A buffer in traced device memory is handed
/// to the kernel through its alias (the vector form of `read`/`write`/`pread64`/
/// `pwrite64` for one over several pieces, one `iovec` per piece), so that the kernel
/// touches the device once, as natively, and what it read or wrote is logged
/// (`Kind::Kernel` records, named by the system call, as on the ptrace route). A buffer
/// in ordinary memory, one the kernel cannot reach (a traced piece without an alias, a
/// structure over several pieces, more than [`MAX_IOV`] pieces) or one the program cannot
/// read, goes to the kernel as the program gave it (`EFAULT` where it is device memory;
/// a marker says why). A buffer the program's protection forbids the access to fails
/// with `EFAULT`, as natively. The call runs with the program's signal mask: it may block
/// (a `read` of a pipe), and a signal must break it off as it would natively.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
///
/// Out of line, and its bounce buffer and vector translation out of line again: the
/// SIGSYS handler may run on a small stack (a new Go thread's first trapped call, its
/// `sigaltstack`, comes on its 16 KiB `g0` stack, before the thread has the tracer's
/// stack), and a frame of several KiB in `on_sigsys` itself overflowed it (Go died of
/// `morestack on g0` one run in five).
#[inline(never)]
unsafe fn buffer_call(nr: u32, a: [u64; 6], uc: *mut libc::c_void) -> isize {
    use crate::uaccess::{self, Piece, Split, MAX_PIECES};
    let Some((call, shape)) = buffer_shape(nr, &a) else {
        // SAFETY: caller's contract.
        return unsafe { call_masked(nr, a, uc) };
    };
    let name = mmio_trace_ring::Kind::KERNEL_CALLS[call as usize];
    let need = |writes: bool| {
        if writes {
            libc::PROT_WRITE
        } else {
            libc::PROT_READ
        }
    };
    match shape {
        Shape::One {
            arg,
            len,
            reads,
            writes,
            by_result,
            vector,
        } => {
            let mut ps = [Piece::default(); MAX_PIECES];
            let n = match uaccess::split(a[arg], len, &mut ps) {
                Split::Untraced => {
                    // SAFETY: caller's contract.
                    return unsafe { call_masked(nr, a, uc) };
                }
                Split::TooMany => {
                    uaccess::too_many_pieces(name, a[arg], len);
                    // SAFETY: caller's contract.
                    return unsafe { call_masked(nr, a, uc) };
                }
                Split::Pieces(n) => n,
            };
            let ps = &ps[..n];
            if ps.iter().any(|p| p.traced() && p.reach == 0) {
                uaccess::unreachable(name, ps);
                // SAFETY: caller's contract.
                return unsafe { call_masked(nr, a, uc) };
            }
            if ps.iter().any(|p| {
                p.traced()
                    && ((reads && p.prot & need(false) == 0)
                        || (writes && p.prot & need(true) == 0))
            }) {
                return EFAULT;
            }
            let r = if let [p] = ps {
                let mut b = a;
                b[arg] = p.reach;
                // SAFETY: the program's call with its buffer's alias (the same memory).
                unsafe { call_masked(nr, b, uc) }
            } else if let Some(v) = vector {
                let mut iov = [Iovec::default(); MAX_PIECES];
                for (i, p) in iov.iter_mut().zip(ps) {
                    *i = Iovec {
                        base: p.reach,
                        len: p.len,
                    };
                }
                // preadv/pwritev: the offset's low and high halves (all of it in the
                // first on x86-64).
                let b = [a[0], iov.as_ptr() as u64, n as u64, a[3], 0, 0];
                // SAFETY: the program's call in its vector form over the same memory.
                unsafe { call_masked(v, b, uc) }
            } else if len as usize <= BOUNCE {
                // SAFETY: caller's contract.
                match unsafe { bounce_call(nr, a, arg, len, ps, reads, writes, by_result, uc) } {
                    Some(r) => r,
                    None => return EFAULT,
                }
            } else {
                uaccess::too_many_pieces(name, a[arg], len);
                // SAFETY: caller's contract.
                return unsafe { call_masked(nr, a, uc) };
            };
            let done = went(r, len, by_result);
            if done > 0 {
                // (Read before written back, for an ioctl argument that goes both ways.)
                if reads {
                    uaccess::record(call, false, ps, done);
                }
                if writes {
                    uaccess::record(call, true, ps, done);
                }
            }
            r
        }
        Shape::Iov { writes } | Shape::Msg { writes } => {
            let msg = matches!(shape, Shape::Msg { .. });
            // SAFETY: caller's contract.
            unsafe { vector_call(nr, a, call, msg, writes, uc) }
        }
    }
}

/// System call `nr` with arguments `a`, made with the program's signal mask (the one its
/// trapped call ran with: the frame's), so that a signal breaks off a call that blocks as
/// it would natively, or is restarted per its handler's `SA_RESTART`.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context; the call is the program's.
unsafe fn call_masked(nr: u32, a: [u64; 6], uc: *mut libc::c_void) -> isize {
    // SAFETY: handler context.
    let mask = unsafe { *uc_mask(uc) } & !never_blocked();
    let mut old = 0u64;
    sys::sigprocmask(libc::SIG_SETMASK, Some(&mask), Some(&mut old));
    // SAFETY: the caller's contract.
    let rc = unsafe { plain(nr as i32, a) };
    sys::sigprocmask(libc::SIG_SETMASK, Some(&old), None);
    rc
}

/// [`buffer_call`] for a structure or string over several pieces: through a bounce
/// buffer, filled from them first where the kernel reads it, copied out to them (as far
/// as the call went) where it writes it. `None`: a piece could not be copied (`EFAULT`).
/// Out of line: the SIGSYS handler may run on a small stack (a new Go thread's first
/// trapped call, its `sigaltstack`, comes on its 16 KiB `g0` stack, before it has the
/// tracer's), and its own frame must stay small.
///
/// # Safety
/// As [`buffer_call`].
#[allow(clippy::too_many_arguments)]
#[inline(never)]
unsafe fn bounce_call(
    nr: u32,
    a: [u64; 6],
    arg: usize,
    len: u64,
    ps: &[crate::uaccess::Piece],
    reads: bool,
    writes: bool,
    by_result: bool,
    uc: *mut libc::c_void,
) -> Option<isize> {
    let mut bounce = [0u8; BOUNCE];
    let tmp = bounce.as_mut_ptr() as u64;
    let mut at = 0u64;
    for p in ps {
        // SAFETY: ordinary memory (an alias for traced pieces), guarded.
        if reads && unsafe { guard::copy(tmp + at, p.reach, p.len as usize) }.is_err() {
            return None;
        }
        at += p.len;
    }
    let mut b = a;
    b[arg] = tmp;
    // SAFETY: the program's call with a buffer of ours of the same size.
    let r = unsafe { call_masked(nr, b, uc) };
    let went = went(r, len, by_result);
    let mut at = 0u64;
    for p in ps {
        let k = p.len.min(went.saturating_sub(at));
        if writes && k > 0 {
            // SAFETY: as above.
            if unsafe { guard::copy(p.reach, tmp + at, k as usize) }.is_err() {
                return None;
            }
        }
        at += p.len;
    }
    Some(r)
}

/// [`buffer_call`] for the vector calls (`msg`: a `msghdr`'s array): each `iovec` over
/// traced memory replaced by its pieces' aliases. Out of line, as [`bounce_call`].
///
/// # Safety
/// As [`buffer_call`].
#[inline(never)]
unsafe fn vector_call(
    nr: u32,
    a: [u64; 6],
    call: u8,
    msg: bool,
    writes: bool,
    uc: *mut libc::c_void,
) -> isize {
    use crate::uaccess::{self, Piece, Split, MAX_PIECES};
    let name = mmio_trace_ring::Kind::KERNEL_CALLS[call as usize];
    let need = if writes {
        libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // The program's array: at argument 1, or in its msghdr (msg_iov at byte 16,
    // msg_iovlen at 24).
    let (at, cnt) = if msg {
        let mut h = [0u8; 16];
        // SAFETY: a guarded load.
        if unsafe { guard::read(a[1].wrapping_add(16), &mut h) }.is_err() {
            // SAFETY: caller's contract (the kernel says EFAULT).
            return unsafe { call_masked(nr, a, uc) };
        }
        (
            u64::from_le_bytes(h[..8].try_into().unwrap_or_default()),
            u64::from_le_bytes(h[8..].try_into().unwrap_or_default()),
        )
    } else {
        (a[1], a[2])
    };
    let mut out = [Iovec::default(); MAX_IOV];
    let mut ps = [Piece::default(); MAX_IOV];
    let mut m = 0;
    let mut traced = false;
    if cnt as usize > MAX_IOV {
        // Larger arrays: not translated (EFAULT if they name device memory).
        // SAFETY: caller's contract.
        return unsafe { call_masked(nr, a, uc) };
    }
    for i in 0..cnt {
        let mut e = [0u8; 16];
        // SAFETY: a guarded load.
        if unsafe { guard::read(at.wrapping_add(16 * i), &mut e) }.is_err() {
            // SAFETY: caller's contract (the kernel says EFAULT).
            return unsafe { call_masked(nr, a, uc) };
        }
        let base = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
        let len = u64::from_le_bytes(e[8..].try_into().unwrap_or_default());
        let mut one = [Piece::default(); MAX_PIECES];
        let pieces: &[Piece] = match uaccess::split(base, len, &mut one) {
            Split::Untraced => {
                one[0] = Piece::untraced(base, len);
                &one[..1]
            }
            Split::TooMany => {
                uaccess::too_many_pieces(name, base, len);
                // SAFETY: caller's contract.
                return unsafe { call_masked(nr, a, uc) };
            }
            Split::Pieces(k) => &one[..k],
        };
        for p in pieces {
            if p.traced() {
                if p.reach == 0 {
                    uaccess::unreachable(name, pieces);
                    // SAFETY: caller's contract.
                    return unsafe { call_masked(nr, a, uc) };
                }
                if p.prot & need == 0 {
                    return EFAULT;
                }
                traced = true;
            }
            if m == MAX_IOV {
                if traced {
                    uaccess::too_many_pieces(name, base, len);
                }
                // SAFETY: caller's contract.
                return unsafe { call_masked(nr, a, uc) };
            }
            out[m] = Iovec {
                base: p.reach,
                len: p.len,
            };
            ps[m] = *p;
            m += 1;
        }
    }
    if !traced {
        // SAFETY: caller's contract.
        return unsafe { call_masked(nr, a, uc) };
    }
    let r = if msg {
        // A copy of the program's header naming our array; what the kernel
        // writes into it (name and control lengths, flags) is copied back.
        let mut h = [0u8; 56];
        // SAFETY: a guarded load.
        if unsafe { guard::read(a[1], &mut h) }.is_err() {
            // SAFETY: caller's contract.
            return unsafe { call_masked(nr, a, uc) };
        }
        h[16..24].copy_from_slice(&(out.as_ptr() as u64).to_le_bytes());
        h[24..32].copy_from_slice(&(m as u64).to_le_bytes());
        let mut b = a;
        b[1] = h.as_mut_ptr() as u64;
        // SAFETY: the program's call over the same memory.
        let r = unsafe { call_masked(nr, b, uc) };
        if writes && r >= 0 {
            for (off, len) in [(8u64, 4usize), (40, 8), (48, 4)] {
                let o = off as usize;
                // SAFETY: a guarded store into the program's header.
                let _ = unsafe { guard::write(a[1] + off, &h[o..o + len]) };
            }
        }
        r
    } else {
        let mut b = a;
        b[1] = out.as_ptr() as u64;
        b[2] = m as u64;
        // SAFETY: the program's call over the same memory.
        unsafe { call_masked(nr, b, uc) }
    };
    if r > 0 {
        uaccess::record(call, writes, &ps[..m], r as u64);
    }
    r
}
