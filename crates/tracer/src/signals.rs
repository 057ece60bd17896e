//! Signal handlers and signal hygiene.
//!
//! The tracer owns SIGSEGV (the fault path), SIGTRAP (the end of a single step) and
//! [`PAUSE_SIGNAL`] (other threads waiting out a single step), and sees SIGBUS, SIGFPE and
//! SIGILL first (a fault of a single-stepped instruction ends the step before the
//! program's handler runs). What the program asks for
//! these signals is kept in [`app_sigaction`]'s table; every fault that is not the
//! tracer's is handed to the program's handler as the kernel would have, or, under the
//! default action, re-raised so the program dies of the same signal.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::ctx::HANDLER_MASK;
use crate::ctx::{gregs, uc_mask};
pub use crate::ctx::{OURS, PAUSE_SIGNAL};
use crate::sys::{self, KSigaction};
use crate::{emu, guard, ool, patch, regions, site, step, stop, threads};

const SA_SIGINFO: u64 = 4;
const SA_ONSTACK: u64 = 0x0800_0000;
const SA_RESTART: u64 = 0x1000_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;
const SIG_DFL: usize = 0;
const SIG_IGN: usize = 1;
const SEGV_ACCERR: i32 = 2;
/// The program's own action for one signal (as it passed it to `sigaction`).
struct AppAction {
    handler: AtomicUsize,
    flags: AtomicU64,
    mask: AtomicU64,
    /// `sa_restorer` (kept to be reported back: the tracer calls handlers itself).
    restorer: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const NO_ACTION: AppAction = AppAction {
    handler: AtomicUsize::new(SIG_DFL),
    flags: AtomicU64::new(0),
    mask: AtomicU64::new(0),
    restorer: AtomicUsize::new(0),
};
static APP: [AppAction; 65] = [NO_ACTION; 65];

/// Unblocks [`OURS`] in the calling thread (raw system call: no libc, async-signal-safe).
/// For threads and images that start with signals blocked (a `posix_spawn` child with
/// `POSIX_SPAWN_SETSIGMASK`, glibc's `SIGEV_THREAD` threads).
pub fn unblock_ours() {
    sys::sigprocmask(libc::SIG_UNBLOCK, Some(&OURS), None);
}

/// Which of [`OURS`] the program believes blocked for code running at stack pointer
/// `rsp`: those of a program handler we called, if `rsp` is below its frame on the
/// thread's current alternate signal stack. Program handlers we call run on that stack
/// (our handlers are `SA_ONSTACK`), so code interrupted anywhere else is not inside one:
/// a handler left with `siglongjmp` leaves a stale entry, and the thread's own stack may
/// lie just below that stale frame, so "below the frame" alone is not enough.
fn believed_blocked(rsp: u64) -> u64 {
    let Some(b) = threads::existing() else {
        return 0;
    };
    // Blocked with a virtualised `rt_sigprocmask` (see `sysemu`): believed everywhere.
    let outside = b.sysemu_blocked.load(Ordering::Relaxed);
    let t = &b.sig;
    let frame = t.frame.load(Ordering::Relaxed);
    if frame == 0 {
        return outside;
    }
    // SAFETY: zeroed stack_t is valid as an out value.
    let mut cur: libc::stack_t = unsafe { core::mem::zeroed() };
    let on_alt =
        if sys::sigaltstack(None, Some(&mut cur)) == 0 && cur.ss_flags & libc::SS_DISABLE == 0 {
            let lo = cur.ss_sp as u64;
            let hi = lo.wrapping_add(cur.ss_size as u64);
            lo <= rsp && rsp < frame && frame <= hi
        } else {
            // No alternate stack (it could not be mapped): handlers ran on the thread's own
            // stack; only the distance bound is left.
            rsp < frame && frame - rsp < (8 << 20)
        };
    if on_alt {
        t.blocked.load(Ordering::Relaxed) | outside
    } else {
        outside
    }
}

/// Whether the tracer owns `sig` (the program's actions for it are virtualised): SIGSYS
/// too once system-call virtualisation (`sysemu`) is on.
pub fn is_reserved(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSEGV | libc::SIGTRAP | PAUSE_SIGNAL | libc::SIGBUS | libc::SIGFPE | libc::SIGILL
    ) || (sig == libc::SIGSYS && crate::sysemu::active())
}

/// The program's action for `sig` (kernel layout; `SIG_DFL` when it set none).
pub(crate) fn app_action(sig: i32) -> KSigaction {
    let a = &APP[sig as usize & 63];
    KSigaction {
        handler: a.handler.load(Ordering::Acquire),
        flags: a.flags.load(Ordering::Relaxed),
        restorer: a.restorer.load(Ordering::Relaxed),
        mask: a.mask.load(Ordering::Relaxed),
    }
}

/// Records `act` (kernel layout) as the program's action for `sig`.
pub(crate) fn set_app_action(sig: i32, act: &KSigaction) {
    let a = &APP[sig as usize & 63];
    a.mask.store(act.mask, Ordering::Relaxed);
    a.flags.store(act.flags, Ordering::Relaxed);
    a.restorer.store(act.restorer, Ordering::Relaxed);
    a.handler.store(act.handler, Ordering::Release);
}

/// Synchronous faults the tracer does not use itself but must see first: one raised by
/// a stepped instruction has to end the step (close the pages, release the paused
/// threads, free the step lock) before the program's handler runs, which may never return
/// (`siglongjmp`).
fn is_other_fault(sig: i32) -> bool {
    matches!(sig, libc::SIGBUS | libc::SIGFPE | libc::SIGILL)
}

/// The program's view of `sigaction(sig, act, old)` for a reserved signal: records `act`
/// (handler, flags, first 64 mask bits) and returns the previous one in `old`. The
/// tracer's handler stays installed. Returns `false` for signals the tracer does not own
/// (the caller passes those to libc).
///
/// # Safety
/// `act`/`old` must be null or valid.
pub unsafe fn app_sigaction(
    sig: i32,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> bool {
    if !is_reserved(sig) || !crate::is_active() {
        return false;
    }
    let a = &APP[sig as usize];
    if !old.is_null() {
        // SAFETY: caller's contract; zeroed sigaction is valid.
        unsafe {
            let mut o: libc::sigaction = core::mem::zeroed();
            o.sa_sigaction = a.handler.load(Ordering::Relaxed);
            o.sa_flags = a.flags.load(Ordering::Relaxed) as i32;
            *(&mut o.sa_mask as *mut libc::sigset_t as *mut u64) = a.mask.load(Ordering::Relaxed);
            *old = o;
        }
    }
    if !act.is_null() {
        // SAFETY: caller's contract.
        let n = unsafe { &*act };
        // SAFETY: sigset_t is at least 8 bytes.
        let mask = unsafe { *(&n.sa_mask as *const libc::sigset_t as *const u64) };
        a.mask.store(mask, Ordering::Relaxed);
        a.flags.store(n.sa_flags as u32 as u64, Ordering::Relaxed);
        a.handler.store(n.sa_sigaction, Ordering::Release);
    }
    true
}

/// The signals the tracer handles, and its handler for each.
fn ours() -> [(i32, usize); 6] {
    [
        (libc::SIGSEGV, on_segv as *const () as usize),
        (libc::SIGTRAP, on_trap as *const () as usize),
        (PAUSE_SIGNAL, on_pause as *const () as usize),
        (libc::SIGBUS, on_other_fault as *const () as usize),
        (libc::SIGFPE, on_other_fault as *const () as usize),
        (libc::SIGILL, on_other_fault as *const () as usize),
    ]
}

/// Whether `pc` is the first instruction of one of the tracer's signal handlers (a thread
/// stopped there has its signal frame set up and the handler not yet begun).
pub(crate) fn is_handler_entry(pc: u64) -> bool {
    ours().iter().any(|&(_, h)| h as u64 == pc)
}

/// Puts the program's own action back for each signal the tracer handles (the recorder
/// leaves an attached process): with the program's own restorer (the tracer's is about
/// to be unmapped), and not over an action the program set itself since (nothing routes
/// `rt_sigaction` in an attached process: its newer action stays).
pub fn uninstall() {
    for (sig, h) in ours() {
        let mut cur = KSigaction::default();
        if sys::sigaction(sig, None, Some(&mut cur)) == 0 && cur.handler != h {
            continue;
        }
        sys::sigaction_exact(sig, &app_action(sig));
    }
}

/// An attached process (nothing routes `rt_sigaction` there): an action the program set
/// itself for one of the tracer's signals since the last look is taken as its own (the
/// one the tracer calls for faults not its own, and [`uninstall`] leaves), and the
/// tracer's handler goes back in. Faults between the two went to the program's action.
/// Normal context. The signals so taken (bit n-1: signal n).
pub fn reclaim() -> u64 {
    let mut taken = 0;
    for (sig, h) in ours() {
        let mut cur = KSigaction::default();
        if sys::sigaction(sig, None, Some(&mut cur)) != 0 || cur.handler == h {
            continue;
        }
        set_app_action(sig, &cur);
        sys::sigaction(sig, Some(&our_action(h)), None);
        taken |= 1u64 << (sig - 1);
    }
    taken
}

/// The tracer's action for its signals, handler `h`.
fn our_action(h: usize) -> KSigaction {
    KSigaction {
        handler: h,
        flags: SA_SIGINFO | SA_ONSTACK | SA_NODEFER | SA_RESTART,
        restorer: 0,
        mask: HANDLER_MASK,
    }
}

/// Installs the tracer's handlers (keeping any action already present as the program's).
pub fn install() {
    emu::warm_up();
    for (sig, h) in ours() {
        let act = our_action(h);
        let mut old = KSigaction::default();
        sys::sigaction(sig, Some(&act), Some(&mut old));
        if old.handler != SIG_DFL && old.handler != h {
            set_app_action(sig, &old);
        }
    }
    // A thread of a running process keeps its own stack (a fault gives it ours if it has
    // none: `keep_altstack`), which the recorder finds as it was when it leaves.
    if !crate::attached::is_attached() {
        setup_altstack();
    }
    unblock_ours();
}

/// Gives the calling thread an alternate signal stack, unless it has one.
pub fn setup_altstack() {
    const SIZE: usize = 256 << 10;
    // SAFETY: zeroed stack_t is valid as an out value.
    let mut cur: libc::stack_t = unsafe { core::mem::zeroed() };
    sys::sigaltstack(None, Some(&mut cur));
    if cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_size >= SIZE {
        return;
    }
    let Some(p) = sys::map_anon(SIZE) else {
        return;
    };
    let ss = libc::stack_t {
        ss_sp: p as *mut libc::c_void,
        ss_flags: 0,
        ss_size: SIZE,
    };
    sys::sigaltstack(Some(&ss), None);
}

/// `sigaltstack`'s flag that disarms the stack while a handler runs on it.
pub(crate) const SS_AUTODISARM: i32 = 1 << 31;

/// The kernel's checks of a new alternate stack `n` for a thread that is (`on`) or is not
/// running on its current one: `Err(-errno)` as `sigaltstack` would fail.
pub(crate) fn check_new_altstack(n: &libc::stack_t, on: bool) -> Result<(), i32> {
    if on {
        return Err(-libc::EPERM);
    }
    let mode = n.ss_flags & !SS_AUTODISARM;
    if mode != 0 && mode != libc::SS_DISABLE && mode != libc::SS_ONSTACK {
        return Err(-libc::EINVAL);
    }
    if mode != libc::SS_DISABLE && n.ss_size < libc::MINSIGSTKSZ {
        return Err(-libc::ENOMEM);
    }
    Ok(())
}

/// The program's view of `sigaltstack(ss, old)`: its stack is recorded and reported back,
/// but the tracer's own (large) stack stays installed, because the fault handler must
/// never run on a small program stack (the program's handlers, SA_ONSTACK or not, then run
/// on the tracer's stack too). Returns `None` when the call should go to the kernel as is
/// (tracing off, or no room to remember the stack); otherwise 0 or `-errno`.
///
/// # Safety
/// `ss`/`old` must be null or valid.
pub unsafe fn app_sigaltstack(ss: *const libc::stack_t, old: *mut libc::stack_t) -> Option<i32> {
    if !crate::is_active() {
        return None;
    }
    let t = &threads::current()?.sig;
    let sp = t.ss_sp.load(Ordering::Relaxed);
    let size = t.ss_size.load(Ordering::Relaxed);
    let marker = 0u8;
    let here = &marker as *const u8 as u64;
    let on = size != 0 && here.wrapping_sub(sp) < size;
    if !old.is_null() {
        let flags = if size == 0 {
            libc::SS_DISABLE
        } else if on {
            libc::SS_ONSTACK
        } else {
            t.ss_flags.load(Ordering::Relaxed) as i32
        };
        // SAFETY: caller's contract.
        unsafe {
            *old = libc::stack_t {
                ss_sp: sp as *mut libc::c_void,
                ss_flags: flags,
                ss_size: size as usize,
            }
        };
    }
    if !ss.is_null() {
        // SAFETY: caller's contract.
        let n = unsafe { &*ss };
        if let Err(e) = check_new_altstack(n, on) {
            return Some(e);
        }
        if n.ss_flags & !SS_AUTODISARM == libc::SS_DISABLE {
            t.ss_size.store(0, Ordering::Relaxed);
            t.ss_flags.store(0, Ordering::Relaxed);
        } else {
            t.ss_sp.store(n.ss_sp as u64, Ordering::Relaxed);
            t.ss_size.store(n.ss_size as u64, Ordering::Relaxed);
            t.ss_flags
                .store((n.ss_flags & SS_AUTODISARM) as u32, Ordering::Relaxed);
        }
    }
    Some(0)
}

/// The calling thread's alternate signal stack when the tracer made it: address, size.
pub(crate) fn own_altstack() -> Option<(u64, usize)> {
    threads::own_altstack()
}

/// A thread that had no alternate signal stack at its first traced fault (no hook saw it
/// start: any thread of a program with the injected core, a raw `clone` under the preload
/// route) is given the tracer's while its block is claimed, here, in this handler; but
/// `rt_sigreturn` puts back the stack the frame recorded (none), so the frame must name
/// the new one. Without it every later fault ran on the program's stack and proved its
/// thread with two `gettid` calls (about a third more per access on the inject route).
/// A frame that records a stack (the program's own, or the tracer's) is left alone.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
pub(crate) unsafe fn keep_altstack(uc: *mut libc::c_void) {
    // (See `own_altstack`: the block is claimed, and the stack mapped, here.)
    // SAFETY: the kernel's ucontext of this handler.
    let st = unsafe { &mut (*(uc as *mut libc::ucontext_t)).uc_stack };
    if st.ss_flags & libc::SS_DISABLE == 0 {
        return;
    }
    if let Some((p, size)) = threads::own_altstack() {
        st.ss_sp = p as *mut libc::c_void;
        st.ss_size = size;
        st.ss_flags = 0;
    }
}

extern "C" fn on_segv(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: handler context.
    let _inside = unsafe { crate::attached::Inside::enter(uc) };
    // An access the tracer made for the program faulted: it returns the fault.
    // SAFETY: handler context.
    if unsafe { guard::fixup(sig, info, uc) } {
        return;
    }
    // A trampoline's load of a foreign thread pointer's slot (it gives up), or its own
    // access (undone: the trap path takes over).
    // SAFETY: handler context with the kernel's info.
    if unsafe { patch::on_fault(sig, info, uc) } {
        return;
    }
    // The child of a fork that bypassed our hooks must not write into the parent's ring.
    crate::check_fork();
    // SAFETY: the kernel passes valid info and context to an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as u64) };
    if step::in_step() {
        // A fault while single-stepping: a second device page (open it too) or a real
        // fault of the stepped instruction (end the step and deliver it).
        // SAFETY: handler context.
        if code == SEGV_ACCERR && unsafe { step::extend(addr) } {
            return;
        }
        // SAFETY: handler context.
        if unsafe { fatal_in_step(sig, uc) } {
            return;
        }
        // SAFETY: handler context.
        unsafe { step::abort(uc) };
    } else if code == SEGV_ACCERR && crate::is_active() {
        // SAFETY: handler context.
        unsafe { keep_altstack(uc) };
        // SAFETY: handler context.
        let g = unsafe { gregs(uc) };
        // A patched site's instruction, run from its trampoline for an address in no
        // slot: handled as the site's own fault (the log, the emulator and the program
        // see the site's address; what follows the copy is the jump back to the site's
        // successor, so resuming there is the same).
        if let Some(rip) = patch::site_of_copy(g[libc::REG_RIP as usize] as u64) {
            g[libc::REG_RIP as usize] = rip as i64;
        }
        // An instruction fetch has no site: its "instruction" is the traced page itself.
        let exec = g[libc::REG_ERR as usize] & 0x10 != 0;
        let mut f = site::Fault::at(if exec {
            0
        } else {
            g[libc::REG_RIP as usize] as u64
        });
        let done = match f.region(addr) {
            Some(r) if stop::stop_if_closed() => {
                // The recorder is gone and tracing has stopped: a page closed before that
                // (or by a single step since) is opened and the access retried natively.
                // SAFETY: handler context.
                let reopen = unsafe { program_allows(&r, uc) };
                if reopen {
                    stop::reopen(&r);
                }
                reopen
            }
            // SAFETY: handler context.
            Some(r) => unsafe { handle(&r, addr, uc, &mut f) },
            None => false,
        };
        f.finish();
        if done {
            // The recorder may have been found gone while logging: open the pages now,
            // so that the next access already runs natively.
            stop::stop_if_closed();
            return;
        }
    }
    // SAFETY: handler context.
    if code > 0 && !step::in_step() && unsafe { slot_fault(sig, info, uc) } {
        return;
    }
    // SAFETY: handler context.
    unsafe { deliver(sig, info, uc) };
}

/// Whether the program's own protection of region `r` allows the faulting access (the
/// page-fault error code: an instruction fetch from a page it did not make executable,
/// or a write to a page it made read-only, is the program's fault).
///
/// # Safety
/// `uc` is the handler's context.
unsafe fn program_allows(r: &regions::Region, uc: *mut libc::c_void) -> bool {
    // SAFETY: handler context.
    let err = unsafe { gregs(uc) }[libc::REG_ERR as usize];
    if err & 0x10 != 0 {
        // An instruction fetch.
        return r.prot & libc::PROT_EXEC != 0;
    }
    let write = err & 2 != 0;
    !(r.prot == libc::PROT_NONE || (write && r.prot & libc::PROT_WRITE == 0))
}

/// The tracer's fault: emulate, or single-step. `false`: the program's own fault.
unsafe fn handle(
    r: &regions::Region,
    addr: u64,
    uc: *mut libc::c_void,
    site: &mut site::Fault,
) -> bool {
    // SAFETY: handler context.
    if !unsafe { program_allows(r, uc) } {
        return false;
    }
    // SAFETY: handler context.
    let g = unsafe { gregs(uc) };
    let rip = g[libc::REG_RIP as usize] as u64;
    if g[libc::REG_ERR as usize] & 0x10 != 0 {
        // An instruction fetch from a traced page the program may execute.
        return crate::exec_fault(r, addr, rip);
    }
    // Before the access's event: the object holding the PC, if loaded since the last MAP.
    crate::objects::note_pc(rip);
    patch::note_trap(rip, addr, site.hits);
    // Where trampolines find blocks by probing the table: the bounds that prove this
    // thread's block its own (once per thread).
    threads::learn_own_stack(g[libc::REG_RSP as usize] as u64);
    let emulated = match site.decoded() {
        // SAFETY: handler context.
        Some(d) if crate::paths::emulate() => unsafe { emu::emulate(&d, rip, uc, r) },
        _ => emu::Emulated::Refused,
    };
    let emulated = match emulated {
        // SAFETY: handler context.
        emu::Emulated::Refused if crate::paths::out_of_line() => {
            let (code, n) = site.code();
            // SAFETY: handler context.
            unsafe { ool::run(r, addr, &code[..n], rip, uc) }
        }
        e => e,
    };
    let fault = match emulated {
        emu::Emulated::Done => return true,
        emu::Emulated::Refused => None,
        emu::Emulated::Fault(f) => Some(f),
    };
    if let Some(f) = fault {
        // SAFETY: handler context.
        let mask = unsafe { *uc_mask(uc) };
        let rsp = g[libc::REG_RSP as usize] as u64;
        if !kills(f.signo, rsp, mask) {
            // SAFETY: handler context.
            unsafe { deliver_fault(f, uc) };
            return true;
        }
        // Fatal: the program must die of it as natively, with a core of its own
        // instruction, not of the tracer's access. Run the instruction natively (the step
        // path): it faults again, and the kernel, now with the default action, kills.
        sys::sigaction(f.signo, Some(&KSigaction::default()), None);
    }
    let decoded = site.instruction();
    if let Some(copy) = patch::copy_of_site(rip) {
        // The site holds a jump now: the step runs the trampoline's copy of it (followed
        // by the jump back), decoded from the same bytes.
        g[libc::REG_RIP as usize] = copy as i64;
    }
    let decoded = decoded.map(|(mut ins, b)| {
        let copy = g[libc::REG_RIP as usize] as u64;
        if copy != rip {
            ins.set_ip(copy);
        }
        (ins, b)
    });
    // SAFETY: handler context.
    if unsafe { step::begin(r, addr, decoded, uc) } {
        return true;
    }
    if let Some(f) = fault {
        // No step possible: the re-executed instruction faults on the closed page and the
        // tracer's access is then fatal (the default action is set).
        // SAFETY: handler context.
        unsafe { deliver_fault(f, uc) };
        return true;
    }
    false
}

/// Whether a fault `sig` of code running at `rsp` with signal mask `mask` kills the
/// program: the kernel forces the default action on a fault whose signal is blocked or
/// ignored (or believed blocked: inside the program's own handler for it).
fn kills(sig: i32, rsp: u64, mask: u64) -> bool {
    let bit = 1u64 << (sig - 1);
    let h = APP[sig as usize].handler.load(Ordering::Acquire);
    h == SIG_DFL || h == SIG_IGN || mask & bit != 0 || believed_blocked(rsp) & bit != 0
}

/// A fault `sig` of the instruction being stepped that kills the program (no handler,
/// or the program has the signal blocked: the step's own context mask is not the
/// program's). The step is left as it is (its pages open, the trap flag set) and the
/// default action set: the instruction re-runs natively, faults again, and the kernel
/// kills the program as natively, with a core of that instruction. `true`: so done.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
unsafe fn fatal_in_step(sig: i32, uc: *mut libc::c_void) -> bool {
    // SAFETY: handler context.
    let rsp = unsafe { gregs(uc) }[libc::REG_RSP as usize] as u64;
    if !step::program_mask().is_some_and(|m| kills(sig, rsp, m)) {
        return false;
    }
    sys::sigaction(sig, Some(&KSigaction::default()), None);
    true
}

/// Hands the program a fault of an access the tracer made for its instruction, as the
/// kernel would have raised it for the instruction itself: `si_addr` (and the context's
/// CR2) in the program's mapping, `si_code` and the page-fault error code as the kernel
/// gave them for the access, the context at the instruction with nothing of it committed.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
unsafe fn deliver_fault(f: guard::Fault, uc: *mut libc::c_void) {
    // SAFETY: a zeroed siginfo is valid; the fault layout is signo, errno, code, then
    // si_addr at offset 16 and si_addr_lsb at offset 24 (x86-64).
    let mut info: libc::siginfo_t = unsafe { core::mem::zeroed() };
    let p = &mut info as *mut libc::siginfo_t as *mut u8;
    // SAFETY: offsets inside the 128-byte siginfo (see above).
    unsafe {
        *(p as *mut i32) = f.signo;
        *(p.add(8) as *mut i32) = f.code;
        *(p.add(16) as *mut u64) = f.addr;
        *(p.add(24) as *mut u16) = f.lsb;
    }
    // SAFETY: handler context.
    let g = unsafe { gregs(uc) };
    g[libc::REG_CR2 as usize] = f.addr as i64;
    g[libc::REG_ERR as usize] = i64::from(f.err);
    // SAFETY: handler context; `info` lives across the call.
    unsafe { deliver(f.signo, &mut info, uc) };
}

extern "C" fn on_trap(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: handler context.
    let _inside = unsafe { crate::attached::Inside::enter(uc) };
    if step::in_step() {
        // The instruction being stepped became the patching protocol's int3 meanwhile: it
        // did not run. The step ends; the site's trampoline makes the access.
        // SAFETY: handler context.
        if let Some(t) = unsafe { patch::int3_target(info, uc) } {
            // SAFETY: handler context.
            unsafe {
                step::abort(uc);
                gregs(uc)[libc::REG_RIP as usize] = t as i64;
            }
            return;
        }
        // Or its jump, whole: the step trapped at the trampoline's first instruction, and
        // the access is the trampoline's to make.
        // SAFETY: handler context.
        if patch::is_entry(unsafe { gregs(uc) }[libc::REG_RIP as usize] as u64) {
            // SAFETY: handler context.
            unsafe { step::abort(uc) };
            return;
        }
        // SAFETY: handler context.
        unsafe { step::finish(uc) };
        return;
    }
    // A site being patched (its int3), or a trampoline waiting for ring room.
    // SAFETY: handler context.
    if unsafe { patch::on_trap(info, uc) } {
        return;
    }
    // SAFETY: handler context.
    unsafe { deliver(sig, info, uc) };
}

/// A fault of an instruction run out of line, raised in its slot: the program sees it at
/// its own instruction. One that kills is left to re-run in the slot with the default
/// action (re-running the original would access the device a second time). `true`: so
/// done.
///
/// # Safety
/// Signal-handler context with the kernel's `info`/`uc`.
unsafe fn slot_fault(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) -> bool {
    // SAFETY: handler context.
    let Some(i) = (unsafe { ool::slot_of(uc) }) else {
        return false;
    };
    // SAFETY: handler context.
    let (rsp, mask) = unsafe { (gregs(uc)[libc::REG_RSP as usize] as u64, *uc_mask(uc)) };
    if kills(sig, rsp, mask) {
        sys::sigaction(sig, Some(&KSigaction::default()), None);
        return true;
    }
    // SAFETY: handler context.
    unsafe {
        ool::leave_slot(i, info, uc);
        deliver(sig, info, uc);
    }
    true
}

extern "C" fn on_other_fault(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: handler context.
    let _inside = unsafe { crate::attached::Inside::enter(uc) };
    // An access the tracer made for the program faulted: it returns the fault.
    // SAFETY: handler context.
    if unsafe { guard::fixup(sig, info, uc) } {
        return;
    }
    // A trampoline's own access faulted (a device gone): undone, and the trap path takes
    // over at the instruction.
    // SAFETY: handler context with the kernel's info.
    if unsafe { patch::on_fault(sig, info, uc) } {
        return;
    }
    // SAFETY: the kernel passes valid info to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    // SAFETY: handler context.
    if code > 0 && !step::in_step() && unsafe { slot_fault(sig, info, uc) } {
        return;
    }
    if code > 0 && step::in_step() {
        // SAFETY: handler context.
        if unsafe { fatal_in_step(sig, uc) } {
            return;
        }
        // The stepped instruction faulted (e.g. a divide by a device value of 0): end the
        // step before the program's handler runs; it may leave with `siglongjmp`.
        // SAFETY: handler context.
        unsafe { step::abort(uc) };
    }
    // SAFETY: handler context.
    unsafe { deliver(sig, info, uc) };
}

extern "C" fn on_pause(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: handler context.
    let _inside = unsafe { crate::attached::Inside::enter(uc) };
    // SAFETY: handler context; si_pid/si_value are meaningful for SI_QUEUE.
    let (code, from, value) = unsafe { ((*info).si_code, (*info).si_pid(), (*info).si_value()) };
    if code == libc::SI_QUEUE && from as u32 == crate::pid() {
        // A tracer pause (tagged). One that arrives after its step ended (the thread had
        // the signal blocked past the deadline) is dropped: it is nobody else's.
        if let Some(generation) = step::pause_generation(value.sival_ptr as u64) {
            step::paused(generation);
            return;
        }
    }
    // Someone else's use of the signal.
    // SAFETY: handler context.
    unsafe { deliver(sig, info, uc) };
}

/// Hands a signal the tracer does not own to the program, as the kernel would have.
///
/// # Safety
/// Signal-handler context with the kernel's `info`/`uc`.
pub(crate) unsafe fn deliver(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let a = &APP[sig as usize];
    let mut h = a.handler.load(Ordering::Acquire);
    // SAFETY: valid info.
    let code = unsafe { (*info).si_code };
    let kernel_fault = code > 0 && sig != PAUSE_SIGNAL;
    let bit = 1u64 << (sig - 1);
    // SAFETY: handler context.
    let rsp = unsafe { gregs(uc) }[libc::REG_RSP as usize] as u64;
    let believed = believed_blocked(rsp);
    if kernel_fault && believed & bit != 0 {
        // A fault while the program believes this signal blocked (inside its own handler
        // for it): the kernel forces the default action.
        h = SIG_DFL;
    }
    match h {
        SIG_DFL | SIG_IGN => {
            if h == SIG_IGN && !kernel_fault {
                return;
            }
            // The kernel would have killed the program (a fault cannot be ignored).
            let dfl = KSigaction::default();
            sys::sigaction(sig, Some(&dfl), None);
            if kernel_fault && (sig == libc::SIGSEGV || is_other_fault(sig)) {
                // Returning re-executes the instruction, which faults again, now fatally.
                return;
            }
            sys::sigprocmask(libc::SIG_UNBLOCK, Some(&bit), None);
            sys::tgkill(crate::pid(), sys::gettid(), sig);
        }
        _ => {
            let flags = a.flags.load(Ordering::Relaxed);
            let mut block = a.mask.load(Ordering::Relaxed);
            if flags & SA_NODEFER == 0 {
                block |= bit;
            }
            if flags & SA_RESETHAND != 0 {
                a.handler.store(SIG_DFL, Ordering::Relaxed);
            }
            // The mask the kernel would have set: the interrupted code's, plus the
            // handler's sa_mask, plus the signal itself unless SA_NODEFER. The tracer's
            // own signals stay deliverable (a device access in the handler, e.g. a crash
            // handler quiescing the device, would otherwise be fatal); that the program
            // believes them blocked is remembered for the handler's own faults.
            // SAFETY: handler context.
            let want = unsafe { *uc_mask(uc) } | block;
            let never = crate::sysemu::never_blocked();
            let now_believed = (want & never) | believed;
            let mask = want & !never;
            let marker = 0u8;
            let frame = &marker as *const u8 as u64;
            let entry = if now_believed != 0 {
                threads::current().map(|b| &b.sig)
            } else {
                None
            };
            let saved = entry.map(|t| {
                let prev = (
                    t.frame.load(Ordering::Relaxed),
                    t.blocked.load(Ordering::Relaxed),
                );
                t.blocked.store(now_believed, Ordering::Relaxed);
                t.frame.store(frame, Ordering::Relaxed);
                prev
            });
            let mut old = 0u64;
            sys::sigprocmask(libc::SIG_SETMASK, Some(&mask), Some(&mut old));
            if flags & SA_SIGINFO != 0 {
                // SAFETY: the program registered this as an SA_SIGINFO handler.
                let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { core::mem::transmute(h) };
                f(sig, info, uc);
            } else {
                // SAFETY: the program registered this as a plain handler.
                let f: extern "C" fn(i32) = unsafe { core::mem::transmute(h) };
                f(sig);
            }
            sys::sigprocmask(libc::SIG_SETMASK, Some(&old), None);
            if let (Some(t), Some((f, b))) = (entry, saved) {
                t.frame.store(f, Ordering::Relaxed);
                t.blocked.store(b, Ordering::Relaxed);
            }
            // Keep `marker` (the frame address) alive across the call.
            core::hint::black_box(&marker);
        }
    }
}

/// For thread start hooks: a reused thread pointer's block (its believed mask and stack
/// too) is taken over by [`threads::thread_started`].
pub fn thread_start() {
    threads::thread_started();
    setup_altstack();
    unblock_ours();
    crate::step::wait_out_step();
}
