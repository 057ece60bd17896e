//! The tracer thread of `record --pid`: seizes every thread of the process, traces its
//! device mappings through the ptrace route's [`Session`] (fault emulation from outside,
//! `mmap` family, events into the shared rings), and detaches.
//!
//! No seccomp filter is installed (a filter can never be removed, and with its
//! supervisor gone its traced calls fail with `ENOSYS`): every thread runs under
//! `PTRACE_SYSCALL`, so each of its system calls stops it twice (entry and exit), and the
//! recorder acts on `mmap`, `munmap`, `mremap` and `mprotect` only.
//!
//! Detaching leaves the process as it was:
//! 1. every thread is interrupted and brought to an interrupt stop: a fault already
//!    taken is completed (emulated and logged) on the way, a signal that arrived meanwhile
//!    is delivered as the program asked (its handler runs after the detach), a finished
//!    `mmap`-family call updates the region table;
//! 2. a SIGSEGV still queued for a thread (a fault whose signal had not been dequeued when
//!    the interrupt stopped it) is taken and completed, so none is left pending;
//! 3. every region gets the program's protection back, by an `mprotect` run inside a
//!    thread; a thread interrupted inside a blocking call is first put back at its
//!    `syscall` instruction (what the kernel does itself when no handler runs), so the
//!    call is restarted, never failed with `EINTR`;
//! 4. the aliases in the recorder are unmapped, the rings retired, and each thread
//!    detached.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use mmio_trace_ptrace as pt;
use mmio_trace_ring::Shm;
use mmio_trace_tracer::rules::Rules;

use super::{maps, Ended, Started, Target};
use crate::remote::{Mapping, Session, Signal};
use crate::{Error, Exit};

/// Set when the recording is to end; the tracer checks it whenever `waitpid` returns.
static STOP: AtomicBool = AtomicBool::new(false);

/// Asks the tracer thread to detach.
pub(super) fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// What the tracer thread needs.
pub(super) struct Setup {
    pub target: Target,
    pub rules: Rules,
    pub shm: Shm,
}

// SAFETY: `Shm` is a view of the recorder's shared memory, which lives (in the
// `Consumer`) until after the tracer thread has been joined.
unsafe impl Send for Setup {}

/// `PTRACE_O_*`: threads, forks (a child inherits the PROT_NONE pages and would die of
/// them without us) and execs are followed. No `EXITKILL`: the process must outlive us.
fn options() -> pt::Options {
    pt::Options::TRACECLONE
        | pt::Options::TRACEFORK
        | pt::Options::TRACEVFORK
        | pt::Options::TRACEEXEC
        | pt::Options::TRACESYSGOOD
}

const SYS_MMAP: u64 = 9;
const SYS_MPROTECT: u64 = 10;
const SYS_MUNMAP: u64 = 11;
const SYS_MREMAP: u64 = 25;
const SYS_RESTART_SYSCALL: u64 = 219;

/// `PTRACE_GET_SYSCALL_INFO` and its `op` values.
const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
const OP_ENTRY: u8 = 1;
const OP_EXIT: u8 = 2;

/// The syscall stop thread `tid` is in: (op, number at entry).
fn syscall_info(tid: i32) -> io::Result<(u8, u64)> {
    let mut buf = [0u64; 11];
    // SAFETY: the kernel writes at most `size_of_val(&buf)` bytes into `buf`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_SYSCALL_INFO,
            tid,
            std::mem::size_of_val(&buf),
            buf.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(((buf[0] & 0xff) as u8, buf[3]))
}

fn getsiginfo(tid: i32) -> io::Result<libc::siginfo_t> {
    // SAFETY: plain data, filled by the kernel.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes one siginfo_t.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, tid, 0, &mut si) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(si)
}

fn getregs(tid: i32) -> io::Result<libc::user_regs_struct> {
    // SAFETY: plain data, filled by the kernel.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes one user_regs_struct.
    if unsafe { libc::ptrace(libc::PTRACE_GETREGS, tid, 0, &mut r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

fn setregs(tid: i32, r: &libc::user_regs_struct) -> io::Result<()> {
    // SAFETY: the kernel reads one user_regs_struct.
    if unsafe { libc::ptrace(libc::PTRACE_SETREGS, tid, 0, r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A SIGSEGV queued for thread `tid` (its private queue) and not yet dequeued: its
/// siginfo (`PTRACE_PEEKSIGINFO`).
fn queued_sigsegv(tid: i32) -> Option<libc::siginfo_t> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
    // SAFETY: plain data.
    let mut si: [libc::siginfo_t; 16] = unsafe { std::mem::zeroed() };
    let args = PeekArgs {
        off: 0,
        flags: 0,
        nr: 16,
    };
    // SAFETY: the kernel writes at most `nr` siginfos into `si`.
    let n = unsafe { libc::ptrace(PTRACE_PEEKSIGINFO, tid, &args, si.as_mut_ptr()) };
    (0..n.max(0) as usize)
        .map(|k| si[k])
        .find(|s| s.si_signo == libc::SIGSEGV)
}

/// The thread group of `tid` (`/proc/TID/status`).
fn tgid_of(tid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A thread stopped inside a blocking system call (`-ERESTART*` in RAX, the call in
/// ORIG_RAX) is put back at its `syscall` instruction with the call (or
/// `restart_syscall`, which keeps a sleep's deadline) in RAX and ORIG_RAX cleared: what
/// the kernel does itself when it resumes such a thread with no handler to run. Calls
/// injected into it then leave it restarting its call, not failing it with `EINTR` (or
/// the internal errno 516).
fn restart_fixup(tid: i32) -> io::Result<()> {
    let mut r = getregs(tid)?;
    let ret = r.rax as i64;
    if (r.orig_rax as i64) < 0 || !(-516..=-512).contains(&ret) || ret == -515 {
        return Ok(());
    }
    r.rax = if ret == -516 {
        SYS_RESTART_SYSCALL
    } else {
        r.orig_rax
    };
    r.rip -= 2;
    r.orig_rax = u64::MAX;
    setregs(tid, &r)
}

/// A thread held at a syscall stop while detaching is put back before its call where
/// the call has not happened, or was broken off by our stop: at an entry stop always
/// (the call is made after the detach); at an exit stop when it returns a restart code
/// (`-ERESTART*`, what the kernel would restart) or `EINTR` from a call that fails so at
/// any stop ([`pt::EINTR_ON_ANY_WAKEUP`]). RIP goes back to the `syscall` instruction, RAX
/// gets the call (`restart_syscall` for `-ERESTART_RESTARTBLOCK`, which keeps a sleep's
/// deadline) and ORIG_RAX -1, so that no restart logic of the kernel's runs again. A call
/// that completed stays completed.
fn rewind_call(tid: i32, entry: bool) -> io::Result<()> {
    let mut r = getregs(tid)?;
    let ret = r.rax as i64;
    let nr = r.orig_rax;
    if (nr as i64) < 0 {
        return Ok(());
    }
    let restart = (-516..=-512).contains(&ret) && ret != -515;
    let eintr = ret == -(libc::EINTR as i64) && pt::EINTR_ON_ANY_WAKEUP.contains(&(nr as i64));
    if !(entry || restart || eintr) {
        return Ok(());
    }
    r.rax = if !entry && ret == -516 {
        SYS_RESTART_SYSCALL
    } else {
        nr
    };
    r.rip -= 2;
    r.orig_rax = u64::MAX;
    setregs(tid, &r)
}

/// How a thread is stopped, during attach and detach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    /// An interrupt stop (or a new thread's first stop).
    Interrupt,
    /// A group-stop (the process is stopped by a stop signal): resumed with LISTEN.
    Group,
    /// A signal-delivery-stop, to leave delivering this signal (0: suppressed, the
    /// access it was for completed).
    Signal(i32),
}

/// The traced threads: thread → process.
struct Threads {
    of: BTreeMap<i32, i32>,
    /// Threads whose syscall-entry stop the session accepted: their exit matters.
    in_call: BTreeSet<i32>,
    /// New tasks whose first stop came before their creator's event (they wait).
    early: BTreeSet<i32>,
}

/// Attaches, traces until asked to stop or the process ends, detaches.
pub(super) fn run(setup: Setup, started: Sender<Started>) -> Ended {
    STOP.store(false, Ordering::SeqCst);
    let t0 = Instant::now();
    let pid = setup.target.pid;
    let fail = |reason: String| Started::Failed(Error::Attach { pid, reason });
    if let Err(e) = pt::check_attach(pid) {
        let _ = started.send(fail(e.to_string()));
        return ended(None, Vec::new());
    }
    let stops = match pt::seize_all(pid, options()) {
        Ok(s) => s,
        Err(e) => {
            let _ = started.send(fail(e.to_string()));
            return ended(None, Vec::new());
        }
    };
    let ts_ns = mmio_trace_ring::monotonic_ns();
    let mut s = Session::new(setup.shm, setup.rules.clone());
    let mut th = Threads {
        of: BTreeMap::new(),
        in_call: BTreeSet::new(),
        early: BTreeSet::new(),
    };
    // Each thread's stop: how to resume it.
    let mut held: BTreeMap<i32, (Held, i32)> = BTreeMap::new();
    for (tid, stop) in &stops {
        let p = if *tid == pid {
            pid
        } else {
            tgid_of(*tid).unwrap_or(*tid)
        };
        th.of.insert(*tid, p);
        s.add_thread(p, *tid);
        let h = match stop {
            pt::Stop::Group { .. } => (Held::Group, 0),
            pt::Stop::Signal { signal, .. } => (Held::Interrupt, *signal),
            _ => (Held::Interrupt, 0),
        };
        held.insert(*tid, h);
    }
    let threads = th.of.values().filter(|&&p| p == pid).count();
    // The device mappings of every process held (the target, and children it forked
    // while being seized, which share its mappings).
    let mut notes = Vec::new();
    let mut nmaps = 0;
    let procs: BTreeSet<i32> = th.of.values().copied().collect();
    for &p in &procs {
        let Some(tid) = injection_thread(&th, &held, p) else {
            continue;
        };
        if let Err(e) = restart_fixup(tid) {
            notes.push(format!("mmio-trace: process {p}: {e}"));
            continue;
        }
        let found = match maps::find(p, &setup.rules) {
            Ok(f) => f,
            Err(e) => {
                notes.push(format!("mmio-trace: cannot read /proc/{p}/maps: {e}"));
                continue;
            }
        };
        let fds = maps::program_fds(p);
        let injected = !found.is_empty();
        for d in found {
            let m = Mapping {
                addr: d.start,
                len: d.len,
                prot: d.prot,
                off: d.offset,
                fd: maps::own_fd(&fds, &d),
                path: d.path.clone(),
            };
            match s.add_mapping(tid, &m) {
                Ok(_) => nmaps += usize::from(p == pid),
                Err(e) => notes.push(format!(
                    "mmio-trace: warning: mapping {:#x}-{:#x} of {} not traced: {e}",
                    d.start,
                    d.start + d.len,
                    String::from_utf8_lossy(&d.path)
                )),
            }
        }
        if injected {
            match held.get(&tid).copied() {
                // The injected calls ended its group-stop: stopped again, it reports a
                // stop that LISTEN accepts (the process stays stopped).
                Some((Held::Group, _)) => regroup(tid),
                // The injection ran from its signal stop, which drops the signal: it is
                // sent again.
                Some((Held::Interrupt, sig)) if sig != 0 => {
                    // SAFETY: plain tgkill of a thread of the traced process.
                    unsafe { libc::syscall(libc::SYS_tgkill, p, tid, sig) };
                    held.insert(tid, (Held::Interrupt, 0));
                }
                _ => {}
            }
        }
    }
    for (&tid, &(h, sig)) in &held {
        let _ = match h {
            Held::Group => pt::listen(tid),
            Held::Interrupt | Held::Signal(_) => pt::syscall(tid, sig),
        };
    }
    let _ = started.send(Started::Attached {
        ts_ns,
        took: t0.elapsed(),
        pid,
        threads,
        maps: nmaps,
        notes,
    });
    let exit = trace(&mut s, &mut th, pid);
    let t1 = Instant::now();
    let mut notes = Vec::new();
    if !th.of.is_empty() {
        if let Err(e) = detach_all(&mut s, &mut th) {
            notes.push(format!("mmio-trace: warning: while detaching: {e}"));
        }
    }
    let mut e = ended(exit, notes);
    e.took = exit.is_none().then(|| t1.elapsed());
    e
}

fn ended(exit: Option<Exit>, notes: Vec<String>) -> Ended {
    Ended {
        exit,
        ts_ns: mmio_trace_ring::monotonic_ns(),
        notes,
        took: None,
    }
}

/// Brings thread `tid` of a stopped process (SIGSTOP), taken out of its group-stop by
/// injected calls, back to a stop that reports the group's stop signal (the kernel does
/// so for a seized thread of a stopped process), where LISTEN keeps it stopped.
fn regroup(tid: i32) {
    if pt::interrupt(tid).is_err() || pt::cont(tid, 0).is_err() {
        return;
    }
    loop {
        let mut st = 0;
        // SAFETY: plain waitpid into a local.
        let r = unsafe { libc::waitpid(tid, &mut st, libc::__WALL) };
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if r <= 0 || !libc::WIFSTOPPED(st) || st >> 16 == libc::PTRACE_EVENT_STOP {
            return;
        }
        // Anything else on the way (a signal): let it go on.
        let sig = if st >> 16 == 0 && libc::WSTOPSIG(st) != libc::SIGTRAP | 0x80 {
            libc::WSTOPSIG(st)
        } else {
            0
        };
        if pt::cont(tid, sig).is_err() {
            return;
        }
    }
}

/// A thread of process `p` to run system calls in: one in an interrupt stop (not a
/// group-stop, which the call would end).
fn injection_thread(th: &Threads, held: &BTreeMap<i32, (Held, i32)>, p: i32) -> Option<i32> {
    let mine = || th.of.iter().filter(move |(_, &q)| q == p).map(|(&t, _)| t);
    mine()
        .find(|t| held.get(t) == Some(&(Held::Interrupt, 0)))
        .or_else(|| mine().find(|t| matches!(held.get(t), Some((Held::Interrupt, _)))))
        .or_else(|| mine().next())
}

/// One `waitpid(-1, __WALL)`; `None` when interrupted (EINTR: a stop request) or when
/// nothing is traced any more.
fn wait_any(s: &mut Session) -> Option<(i32, i32)> {
    if let Some(d) = s.take_deferred() {
        return Some(d);
    }
    let mut st = 0;
    // SAFETY: plain waitpid into a local.
    let r = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
    (r > 0).then_some((r, st))
}

/// Traces until the process `pid` ends (its exit) or a stop is requested (`None`).
fn trace(s: &mut Session, th: &mut Threads, pid: i32) -> Option<Exit> {
    loop {
        if STOP.load(Ordering::SeqCst) {
            return None;
        }
        let Some((tid, st)) = wait_any(s) else {
            if th.of.is_empty() {
                return None;
            }
            continue;
        };
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            gone(s, th, tid);
            if tid == pid {
                return Some(if libc::WIFSIGNALED(st) {
                    Exit::Signal(libc::WTERMSIG(st))
                } else {
                    Exit::Code(libc::WEXITSTATUS(st))
                });
            }
            continue;
        }
        if !libc::WIFSTOPPED(st) {
            continue;
        }
        let _ = handle(s, th, tid, st, false);
    }
}

fn gone(s: &mut Session, th: &mut Threads, tid: i32) {
    s.thread_gone(tid);
    th.of.remove(&tid);
    th.in_call.remove(&tid);
}

/// What a stop handled during detach left the thread in.
enum After {
    /// Resumed (a new stop will come).
    Resumed,
    /// Held in an interrupt or group stop.
    Held(Held),
}

/// Handles one stop of `tid` (status `st`). Tracing: the thread is resumed. Detaching:
/// interrupt and group stops are held, everything else is resumed towards the interrupt
/// still pending.
fn handle(
    s: &mut Session,
    th: &mut Threads,
    tid: i32,
    st: i32,
    detaching: bool,
) -> io::Result<After> {
    let sig = libc::WSTOPSIG(st);
    let event = st >> 16;
    // Resume: PTRACE_SYSCALL while tracing (to see the mmap family), CONT while detaching.
    let resume = |tid: i32, sig: i32| -> io::Result<After> {
        let r = if detaching {
            pt::cont(tid, sig)
        } else {
            pt::syscall(tid, sig)
        };
        r.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(After::Resumed)
    };
    match event {
        libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
            let msg = {
                let mut m: libc::c_ulong = 0;
                // SAFETY: the kernel writes one unsigned long.
                unsafe { libc::ptrace(libc::PTRACE_GETEVENTMSG, tid, 0, &mut m) };
                m as i32
            };
            if let Some(&parent) = th.of.get(&tid) {
                let thread =
                    event == libc::PTRACE_EVENT_CLONE && tgid_of(msg).is_some_and(|g| g == parent);
                if thread {
                    s.add_thread(parent, msg);
                    th.of.insert(msg, parent);
                } else {
                    s.fork(parent, msg);
                    th.of.insert(msg, msg);
                }
                if th.early.remove(&msg) {
                    // Its first stop came first: it was waiting for this.
                    let _ = resume(msg, 0);
                }
            }
            resume(tid, 0)
        }
        libc::PTRACE_EVENT_EXEC => {
            let mut former: libc::c_ulong = 0;
            // SAFETY: the kernel writes one unsigned long.
            unsafe { libc::ptrace(libc::PTRACE_GETEVENTMSG, tid, 0, &mut former) };
            if former as i32 != tid {
                gone(s, th, former as i32);
            }
            s.exec(tid);
            th.of.insert(tid, tid);
            resume(tid, 0)
        }
        libc::PTRACE_EVENT_STOP => {
            if !th.of.contains_key(&tid) {
                // A new task whose creator's event has not come yet: it waits for it.
                th.early.insert(tid);
                return Ok(After::Held(Held::Interrupt));
            }
            let group = matches!(
                sig,
                libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
            );
            if detaching {
                return Ok(After::Held(if group {
                    Held::Group
                } else {
                    Held::Interrupt
                }));
            }
            if group {
                pt::listen(tid).map_err(|e| io::Error::other(e.to_string()))?;
                Ok(After::Resumed)
            } else {
                resume(tid, 0)
            }
        }
        0 if sig == libc::SIGTRAP | 0x80 => {
            let (op, nr) = syscall_info(tid)?;
            if detaching {
                // A syscall stop takes the place of the interrupt's stop (the kernel
                // clears a pending interrupt at any trap): the thread is held here, put
                // back before its call (a call the session was watching is made again
                // after the detach, untraced).
                if op == OP_ENTRY || op == OP_EXIT {
                    th.in_call.remove(&tid);
                    rewind_call(tid, op == OP_ENTRY)?;
                }
                return Ok(After::Held(Held::Interrupt));
            }
            if op == OP_ENTRY && matches!(nr, SYS_MMAP | SYS_MUNMAP | SYS_MREMAP | SYS_MPROTECT) {
                let regs = getregs(tid)?;
                if s.syscall_entry(tid, &regs) {
                    th.in_call.insert(tid);
                }
            } else if op == OP_EXIT && th.in_call.remove(&tid) {
                let regs = getregs(tid)?;
                s.syscall_exit(tid, &regs);
            }
            resume(tid, 0)
        }
        0 => {
            // Even a signal the program ignores stops a traced thread and breaks off an
            // epoll wait: it must restart unless a handler runs.
            let _ = pt::restart_interrupted_call(tid);
            let si = getsiginfo(tid)?;
            match s.on_signal(tid, &si) {
                Signal::Handled => resume(tid, 0),
                Signal::Deliver(n) => resume(tid, n),
            }
        }
        _ => resume(tid, 0),
    }
}

/// Brings every thread not yet in `held` to an interrupt (or group) stop, and adds it
/// there (a thread already held is stopped: interrupting it again would stop it only
/// once resumed).
fn hold_all(s: &mut Session, th: &mut Threads, held: &mut BTreeMap<i32, Held>) {
    for &tid in th.of.keys() {
        if !held.contains_key(&tid) {
            let _ = pt::interrupt(tid);
        }
    }
    let mut tries = 0u32;
    while held.len() < th.of.len() {
        let Some((tid, st)) = wait_any(s) else {
            tries += 1;
            if tries > 1000 {
                break;
            }
            continue;
        };
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            gone(s, th, tid);
            held.remove(&tid);
            continue;
        }
        if !libc::WIFSTOPPED(st) {
            continue;
        }
        let known = th.of.contains_key(&tid);
        match handle(s, th, tid, st, true) {
            Ok(After::Held(h)) if known => {
                held.insert(tid, h);
            }
            Ok(After::Held(_)) => {}
            Ok(After::Resumed) => {
                // A thread new since the interrupts went out needs its own.
                if !held.contains_key(&tid) {
                    let _ = pt::interrupt(tid);
                }
            }
            Err(_) => {
                // A thread we can no longer drive: count it as held so detach tries it.
                held.insert(tid, Held::Interrupt);
            }
        }
        for &t in th.of.keys() {
            if !held.contains_key(&t) && th.early.contains(&t) {
                held.insert(t, Held::Interrupt);
            }
        }
    }
}

/// Waits for thread `tid`, just resumed with a SIGSEGV queued, to stop for it, and
/// completes the access; how the thread is then held (`None`: it is gone).
fn take_fault(s: &mut Session, th: &mut Threads, tid: i32) -> Option<Held> {
    loop {
        let mut st = 0;
        // SAFETY: plain waitpid into a local.
        let r = unsafe { libc::waitpid(tid, &mut st, libc::__WALL) };
        if r < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            gone(s, th, tid);
            return None;
        }
        if libc::WIFSTOPPED(st) && st >> 16 == 0 && libc::WSTOPSIG(st) != libc::SIGTRAP | 0x80 {
            let si = getsiginfo(tid).ok()?;
            return Some(match s.on_signal(tid, &si) {
                Signal::Handled => Held::Signal(0),
                Signal::Deliver(n) => Held::Signal(n),
            });
        }
        // Another stop first (an event): handled as while detaching, then on to the
        // signal.
        match handle(s, th, tid, st, true) {
            Ok(After::Held(h)) => {
                if pt::cont(tid, 0).is_err() {
                    return Some(h);
                }
            }
            Ok(After::Resumed) => {}
            Err(_) => return Some(Held::Interrupt),
        }
    }
}

/// Detaches from every traced thread, leaving each process as it was (see the module
/// documentation).
fn detach_all(s: &mut Session, th: &mut Threads) -> io::Result<()> {
    let mut held = BTreeMap::new();
    hold_all(s, th, &mut held);
    // A SIGSEGV queued but not yet taken (the interrupt's stop comes before the signal's):
    // the thread is let go without a new interrupt, so the next thing it does is stop
    // for that signal; the access is completed there and the thread stays in that
    // signal-delivery-stop, detached later with the signal suppressed (or, if it was not
    // ours after all, delivered).
    let queued: Vec<i32> = held
        .iter()
        .filter(|(_, &h)| h == Held::Interrupt)
        .map(|(&t, _)| t)
        .filter(|&t| queued_sigsegv(t).is_some())
        .collect();
    for tid in queued {
        held.remove(&tid);
        if pt::cont(tid, 0).is_err() {
            continue;
        }
        if let Some(h) = take_fault(s, th, tid) {
            held.insert(tid, h);
        }
    }
    // A call that fails with EINTR at any stop (epoll waits...) is made to restart
    // (seize_all did the same at attach).
    for (&tid, &h) in &held {
        if h == Held::Interrupt {
            let _ = pt::restart_interrupted_call(tid);
        }
    }
    let mut err = None;
    let procs: BTreeSet<i32> = th.of.values().copied().collect();
    for p in procs {
        let hh: BTreeMap<i32, (Held, i32)> = held.iter().map(|(&t, &h)| (t, (h, 0))).collect();
        let Some(tid) = injection_thread(th, &hh, p) else {
            continue;
        };
        let r = restart_fixup(tid).and_then(|()| s.restore(tid));
        if let Err(e) = r {
            err.get_or_insert(e);
        }
    }
    for &tid in th.of.keys() {
        let sig = match held.get(&tid) {
            Some(Held::Signal(n)) => *n,
            _ => 0,
        };
        let _ = pt::detach(tid, sig);
    }
    let tids: Vec<i32> = th.of.keys().copied().collect();
    for tid in tids {
        s.thread_gone(tid);
    }
    th.of.clear();
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
