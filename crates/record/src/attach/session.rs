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
//!    thread (the engine's injection leaves a call the thread was blocked in to restart,
//!    never failed with `EINTR`); a thread held at the exit of a call our stop broke off
//!    is put back before the call;
//! 4. the aliases in the recorder are unmapped, the rings retired, and each thread
//!    detached.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use mmio_trace_ptrace as pt;
use mmio_trace_ring::Shm;
use mmio_trace_tracer::rules::Rules;

use super::{maps, Ended, Started, Target};
use crate::remote::sys::tgid_of;
use crate::remote::{Mapping, Session, Signal, BUFFER_SYSCALLS};
use crate::{Error, Exit};

/// Set when the recording is to end; the tracer checks it whenever `waitpid` returns.
static STOP: AtomicBool = AtomicBool::new(false);

/// Asks the tracer thread to detach.
pub(super) fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for (cleared when a tracer thread starts).
pub(super) fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Clears the stop request (a tracer thread starts).
pub(super) fn clear_stop() {
    STOP.store(false, Ordering::SeqCst);
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
/// siginfo.
fn queued_sigsegv(tid: i32) -> Option<pt::SigInfo> {
    pt::queued_signals(tid)
        .into_iter()
        .find(|s| s.signo() == libc::SIGSEGV)
}

/// A thread held at a syscall-exit stop while detaching, whose call our stop broke off,
/// is put back before the call: when the call returns a restart code (`-ERESTART*`,
/// what the kernel would restart) or `EINTR` from a call that fails so at any stop
/// ([`pt::EINTR_ON_ANY_WAKEUP`]). RIP goes back to the `syscall` instruction, RAX gets
/// the call (`restart_syscall` for `-ERESTART_RESTARTBLOCK`, which keeps a sleep's
/// deadline) and ORIG_RAX -1, so that no restart logic of the kernel's runs again. A call
/// that completed stays completed.
fn rewind_call(tid: i32) -> io::Result<()> {
    let mut r = getregs(tid)?;
    let ret = r.rax as i64;
    let nr = r.orig_rax;
    if (nr as i64) < 0 {
        return Ok(());
    }
    let restart = (-516..=-512).contains(&ret) && ret != -515;
    let eintr = ret == -(libc::EINTR as i64) && pt::EINTR_ON_ANY_WAKEUP.contains(&(nr as i64));
    if !(restart || eintr) {
        return Ok(());
    }
    r.rax = if ret == -516 { SYS_RESTART_SYSCALL } else { nr };
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
    /// Stops taken from the kernel and not handled yet (see [`wait_any`]).
    queue: VecDeque<(i32, pt::Stop)>,
}

/// Attaches, traces until asked to stop or the process ends, detaches.
pub(super) fn run(setup: Setup, started: Sender<Started>) -> Ended {
    STOP.store(false, Ordering::SeqCst);
    let t0 = Instant::now();
    let pid = setup.target.pid;
    let fail = |reason: String| Started::Failed(Error::Attach { pid, reason });
    if let Err(e) = pt::check_attach(pid) {
        let _ = started.send(fail(e.to_string()));
        return Ended::now(None, Vec::new());
    }
    let stops = match pt::seize_all(pid, options()) {
        Ok(s) => s,
        Err(e) => {
            let _ = started.send(fail(e.to_string()));
            return Ended::now(None, Vec::new());
        }
    };
    let ts_ns = mmio_trace_ring::monotonic_ns();
    let mut s = Session::new(setup.shm, setup.rules.clone());
    let mut th = Threads {
        of: BTreeMap::new(),
        in_call: BTreeSet::new(),
        early: BTreeSet::new(),
        queue: VecDeque::new(),
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
    let mut e = Ended::now(exit, notes);
    e.took = exit.is_none().then(|| t1.elapsed());
    e
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
        let r = unsafe { libc::waitpid(tid, &mut st, libc::__WALL | libc::__WNOTHREAD) };
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

/// One `waitpid(who)` of the tracer's own tracees (`__WNOTHREAD`: other tracer threads of
/// the recorder keep theirs), decoded; `None` when interrupted (EINTR: a stop request)
/// or when nothing is traced any more.
fn wait_raw(who: i32) -> Option<(i32, pt::Stop)> {
    let mut st = 0;
    // SAFETY: plain waitpid into a local.
    let r = unsafe { libc::waitpid(who, &mut st, libc::__WALL | libc::__WNOTHREAD) };
    (r > 0).then(|| (r, pt::decode(r, st)))
}

/// The next stop: one the session took while waiting for another thread first, else
/// the oldest of those the kernel had when last asked. The kernel reports a tracer's
/// stopped tracees in the order of its list (newest first), so taking one at a time
/// would serve busy new threads and starve the old ones (the main thread); a round takes
/// every stop pending at once and handles them in turn.
fn wait_any(s: &mut Session, th: &mut Threads) -> Option<(i32, pt::Stop)> {
    if let Some(d) = s.take_deferred() {
        return Some(d);
    }
    if let Some(q) = th.queue.pop_front() {
        return Some(q);
    }
    let first = wait_raw(-1)?;
    loop {
        let mut st = 0;
        // SAFETY: plain waitpid into a local.
        let r = unsafe {
            libc::waitpid(
                -1,
                &mut st,
                libc::__WALL | libc::__WNOTHREAD | libc::WNOHANG,
            )
        };
        if r <= 0 {
            break;
        }
        th.queue.push_back((r, pt::decode(r, st)));
    }
    Some(first)
}

/// How a thread that is gone ended, as `record` reports a program's end.
fn exit_of(stop: &pt::Stop) -> Option<Exit> {
    match *stop {
        pt::Stop::Exited(c) => Some(Exit::Code(c)),
        pt::Stop::Killed { signal, .. } => Some(Exit::Signal(signal)),
        _ => None,
    }
}

/// Traces until the process `pid` ends (its exit) or a stop is requested (`None`).
fn trace(s: &mut Session, th: &mut Threads, pid: i32) -> Option<Exit> {
    loop {
        if STOP.load(Ordering::SeqCst) {
            return None;
        }
        let Some((tid, stop)) = wait_any(s, th) else {
            if th.of.is_empty() {
                return None;
            }
            continue;
        };
        if let Some(e) = exit_of(&stop) {
            gone(s, th, tid);
            if tid == pid {
                return Some(e);
            }
            continue;
        }
        let _ = handle(s, th, tid, stop, false);
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

fn os_err(e: pt::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Handles one stop of `tid`. Tracing: the thread is resumed (`PTRACE_SYSCALL`, to see
/// the mmap family). Detaching: interrupt, group and syscall stops are held, everything
/// else is resumed (`PTRACE_CONT`) with a new interrupt to come.
fn handle(
    s: &mut Session,
    th: &mut Threads,
    tid: i32,
    stop: pt::Stop,
    detaching: bool,
) -> io::Result<After> {
    let resume = |tid: i32, sig: i32| -> io::Result<After> {
        let r = if detaching {
            pt::cont(tid, sig)
        } else {
            pt::syscall(tid, sig)
        };
        r.map_err(os_err)?;
        Ok(After::Resumed)
    };
    match stop {
        pt::Stop::Event(
            pt::Event::Clone { new } | pt::Event::Fork { new } | pt::Event::Vfork { new },
        ) => {
            if let Some(&parent) = th.of.get(&tid) {
                let thread = matches!(stop, pt::Stop::Event(pt::Event::Clone { .. }))
                    && tgid_of(new).is_some_and(|g| g == parent);
                if thread {
                    s.add_thread(parent, new);
                    th.of.insert(new, parent);
                } else {
                    s.fork(parent, new);
                    th.of.insert(new, new);
                }
                if th.early.remove(&new) {
                    // Its first stop came first: it was waiting for this.
                    let _ = resume(new, 0);
                }
            }
            resume(tid, 0)
        }
        pt::Stop::Event(pt::Event::Exec { former_tid }) => {
            if former_tid != tid {
                gone(s, th, former_tid);
            }
            s.exec(tid);
            th.of.insert(tid, tid);
            resume(tid, 0)
        }
        pt::Stop::Interrupt | pt::Stop::Group { .. } => {
            if !th.of.contains_key(&tid) {
                // A new task whose creator's event has not come yet: it waits for it.
                th.early.insert(tid);
                return Ok(After::Held(Held::Interrupt));
            }
            let group = matches!(stop, pt::Stop::Group { .. });
            if detaching {
                return Ok(After::Held(if group {
                    Held::Group
                } else {
                    Held::Interrupt
                }));
            }
            if group {
                pt::listen(tid).map_err(os_err)?;
                Ok(After::Resumed)
            } else {
                resume(tid, 0)
            }
        }
        pt::Stop::Syscall => {
            let call = pt::syscall_stop(tid).map_err(os_err)?;
            let exit = matches!(call, pt::SyscallStop::Exit { .. });
            if detaching {
                // A syscall stop takes the place of the interrupt's stop (the kernel
                // clears a pending interrupt at any trap): the thread is held here. At an
                // entry the call runs after the detach (untraced, if the session was
                // watching it); at an exit, a watched call updates the region table, and
                // a call our stop broke off is put back before its `syscall`.
                if exit && th.in_call.remove(&tid) {
                    s.syscall_exit(tid, &getregs(tid)?);
                }
                th.in_call.remove(&tid);
                if exit {
                    rewind_call(tid)?;
                }
                return Ok(After::Held(Held::Interrupt));
            }
            let watched =
                |nr: i64| matches!(nr as u64, SYS_MMAP | SYS_MUNMAP | SYS_MREMAP | SYS_MPROTECT);
            let buffer = |nr: i64| BUFFER_SYSCALLS.contains(&(nr as u32));
            if matches!(call, pt::SyscallStop::Entry { nr, .. } if watched(nr)) {
                let regs = getregs(tid)?;
                if s.syscall_entry(tid, &regs) {
                    th.in_call.insert(tid);
                }
            } else if matches!(call, pt::SyscallStop::Entry { nr, .. } if buffer(nr)) {
                // A buffer in traced pages would fail the call with EFAULT: the session
                // opens them for it, runs it to its exit (where the thread then is) and
                // logs the kernel's accesses, as the preload route does.
                let regs = getregs(tid)?;
                let _ = s.buffer_call(tid, &regs);
            } else if exit && th.in_call.remove(&tid) {
                let regs = getregs(tid)?;
                s.syscall_exit(tid, &regs);
            }
            resume(tid, 0)
        }
        pt::Stop::Signal { signal, info } => {
            // Even a signal the program ignores stops a traced thread and breaks off an
            // epoll wait: it must restart unless a handler runs.
            let _ = pt::restart_interrupted_call(tid);
            let Some(si) = info else {
                return resume(tid, signal);
            };
            match s.on_signal(tid, si.raw()) {
                Signal::Handled => resume(tid, 0),
                Signal::Deliver(n) => resume(tid, n),
            }
        }
        pt::Stop::Event(_) => resume(tid, 0),
        pt::Stop::Exited(_) | pt::Stop::Killed { .. } => Ok(After::Resumed),
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
        let Some((tid, stop)) = wait_any(s, th) else {
            tries += 1;
            if tries > 1000 {
                break;
            }
            continue;
        };
        if stop.is_gone() {
            gone(s, th, tid);
            held.remove(&tid);
            continue;
        }
        let known = th.of.contains_key(&tid);
        match handle(s, th, tid, stop, true) {
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
        let queued = th.queue.iter().position(|q| q.0 == tid);
        let next = match queued {
            Some(k) => th.queue.remove(k),
            None => wait_raw(tid),
        };
        let Some((_, stop)) = next else {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        };
        if stop.is_gone() {
            gone(s, th, tid);
            return None;
        }
        if let pt::Stop::Signal { signal, info } = stop {
            return Some(match info.map(|si| s.on_signal(tid, si.raw())) {
                Some(Signal::Handled) => Held::Signal(0),
                Some(Signal::Deliver(n)) => Held::Signal(n),
                None => Held::Signal(signal),
            });
        }
        // Another stop first (an event): handled as while detaching, then on to the
        // signal.
        match handle(s, th, tid, stop, true) {
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
        let r = s.restore(tid);
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
