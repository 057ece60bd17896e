//! Running system calls inside a stopped tracee.
//!
//! The thread's registers are saved, pointed at a `syscall` instruction of the process (one
//! in the vDSO, found once; else any executable mapping; else two bytes written over the
//! current RIP and put back after) with the call's number and arguments, single-stepped
//! over it, and restored.
//!
//! The syscall restart fixup: a thread stopped while blocked in a system call is stopped on
//! its way out of the call, inside the kernel's signal handling, with RAX holding one of the
//! internal `-ERESTART*` codes and ORIG_RAX the call's number. After that stop, the kernel
//! turns such a RAX back into a restart (RIP moved back to the `syscall` instruction, RAX
//! the number again, or `restart_syscall` for `-ERESTART_RESTARTBLOCK`, which keeps
//! nanosleep's deadline) if ORIG_RAX names a call. So the injected step runs with ORIG_RAX
//! = -1 (no restart logic fires for it), and restoring all registers afterwards puts the
//! original `-ERESTART*` state back, which the kernel then restarts on resume exactly as it
//! would have: the program sees neither `EINTR` nor errno 516.
//!
//! Stops at a syscall's entry (a syscall-entry stop, a seccomp stop) are special: resuming
//! there runs the call named by the registers, so the injection cannot return to that point
//! directly. The thread is put back one instruction, at its `syscall`, and run to the same
//! entry stop again. Event stops inside a system call (clone, fork, exec) first run to
//! the call's exit, where the kernel has stored the call's result.

use crate::mem::Mem;
use crate::stop::{wait_tid, Event, SigInfo, Stop};
use crate::sys::{self, SYSCALL_INFO_ENTRY};
use crate::thread::{singlestep, syscall};
use crate::{Error, Pid, Result};

/// `si_code` of a SIGSYS raised by a seccomp filter's `SECCOMP_RET_TRAP`.
const SYS_SECCOMP: i32 = 1;
/// Offset of `rseq_cs` in `struct rseq` (after `cpu_id_start` and `cpu_id`).
const RSEQ_CS_OFFSET: u64 = 8;
/// `si_code` of a tgkill-sent signal (the kernel refuses to forge it from another process).
const SI_TKILL: i32 = -6;
const EV_STOP: i32 = 128;
const EV_SECCOMP: i32 = 7;
const EV_EXIT: i32 = 6;
/// `PTRACE_EVENTMSG_SYSCALL_ENTRY`/`_EXIT`: the event message of a syscall stop (5.3+).
const SYSCALL_MSG_ENTRY: u64 = 1;
const SYSCALL_MSG_EXIT: u64 = 2;

/// A signal that reached a thread while the engine ran a system call in it. It was put back
/// into the kernel's queue for the thread (`rt_tgsigqueueinfo`, or `tgkill` where the
/// kernel forbids forging the siginfo), so the thread gets it when next resumed: a
/// signal-delivery-stop the tracer passes on as usual.
#[derive(Clone, Copy, Debug)]
pub struct RequeuedSignal {
    /// The thread it was for.
    pub tid: Pid,
    /// The signal.
    pub signal: i32,
    /// Its siginfo as it first arrived.
    pub info: Option<SigInfo>,
    /// True if it was queued again with the same siginfo; false if only the signal number
    /// survived (sent with `tgkill`: `si_code` SI_TKILL, `si_pid` the recorder).
    pub exact: bool,
}

/// Signals that reached a thread while the engine ran something in it, to re-queue.
pub(crate) type Caught = Vec<(i32, Option<SigInfo>)>;

/// The kind of stop an injection starts from, as far as restoring it matters.
pub(crate) enum Origin {
    /// Any stop that resuming with the saved registers reproduces (interrupt, group,
    /// syscall-exit, after-event-at-exit).
    Plain,
    /// Signal-delivery-stop: the siginfo must be put back too.
    Signal(libc::siginfo_t),
    /// Syscall-entry stop (PTRACE_SYSCALL).
    Entry,
    /// PTRACE_EVENT_SECCOMP (at the syscall's entry).
    Seccomp,
    /// An event stop inside a system call (clone/fork/vfork/exec): run to its exit first.
    InSyscall,
}

/// Where [`Process::inject_syscall`] runs the call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyscallSite {
    /// A `syscall` instruction found in the process (the vDSO first, then other executable
    /// mappings), remembered until exec; if there is none, as [`SyscallSite::PatchRip`].
    #[default]
    Auto,
    /// The bytes `0f 05` at this address (forgotten at exec; checked before each use, and
    /// replaced by [`SyscallSite::Auto`] once they are gone, e.g. unmapped).
    At(u64),
    /// `0f 05` written over the thread's current instruction for the call, then the
    /// program's bytes put back. Other threads of the process must be stopped meanwhile, or
    /// one could run the patched bytes.
    PatchRip,
}

/// Injection state of one traced process: the `/proc/PID/mem` handle, the address of a
/// `syscall` instruction, and the signals re-queued during injections.
#[derive(Debug)]
pub struct Process {
    pid: Pid,
    mem: Mem,
    syscall_insn: Option<u64>,
    site: SyscallSite,
    requeued: Vec<RequeuedSignal>,
    /// An `int3` the process can return to from [`Process::call`] (a loaded image's trap
    /// page, or a page made for it); forgotten at exec.
    trap: Option<u64>,
}

impl Process {
    /// State for process `pid` (all its threads must be traced by the calling thread).
    pub fn new(pid: Pid) -> Process {
        Process {
            pid,
            mem: Mem::new(pid),
            syscall_insn: None,
            site: SyscallSite::Auto,
            requeued: Vec::new(),
            trap: None,
        }
    }

    /// The process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The process's memory.
    pub fn mem(&mut self) -> &mut Mem {
        &mut self.mem
    }

    /// Forgets what the old program's layout gave (the `syscall` instruction, the open
    /// `/proc/PID/mem`): call it at [`Event::Exec`].
    pub fn exec_happened(&mut self) {
        self.syscall_insn = None;
        self.trap = None;
        if let SyscallSite::At(_) = self.site {
            self.site = SyscallSite::Auto;
        }
        self.mem.reopen();
    }

    /// Chooses where injected calls run (default [`SyscallSite::Auto`]).
    pub fn set_syscall_site(&mut self, site: SyscallSite) {
        self.site = site;
    }

    /// The signals re-queued by injections since the last call (see [`RequeuedSignal`]).
    pub fn take_requeued(&mut self) -> Vec<RequeuedSignal> {
        std::mem::take(&mut self.requeued)
    }

    /// Runs system call `nr` with `args` in thread `tid`, which must be in a ptrace stop of
    /// any kind (not exited), and returns its raw result (`-errno` on failure). Registers
    /// (general and vector) are as before afterwards, so the program never notices;
    /// a system call the thread was blocked in continues as if never interrupted.
    ///
    /// Afterwards the thread is stopped in a SIGTRAP signal-delivery-stop (resume it with
    /// any restart request and signal 0), except: from a signal-delivery-stop it is again in
    /// one with the original siginfo (resume with that signal to deliver it exactly); from a
    /// syscall-entry stop (seized with TRACESYSGOOD) or a seccomp stop it is again in that
    /// same stop. A thread that was in a group-stop is no longer in it (PTRACE_LISTEN is
    /// refused until it stops again).
    ///
    /// Signals that arrive meanwhile are not lost: they are re-queued (see
    /// [`Process::take_requeued`]).
    pub fn inject_syscall(&mut self, tid: Pid, nr: i64, args: [u64; 6]) -> Result<i64> {
        let (origin, mut caught) = self.begin(tid)?;
        let rseq = self.rseq_save(tid);
        let saved = sys::getregs(tid)?;
        let (site, patched) = self.site_for(saved.rip)?;
        let mut r = saved;
        r.rax = nr as u64;
        // No restart logic may fire for the injected call.
        r.orig_rax = u64::MAX;
        r.rip = site;
        r.rdi = args[0];
        r.rsi = args[1];
        r.rdx = args[2];
        r.r10 = args[3];
        r.r8 = args[4];
        r.r9 = args[5];
        let result = sys::setregs(tid, &r).and_then(|()| self.step_over(tid, site, &mut caught));
        if let Some(old) = patched {
            // The program's own bytes back, even if the step failed.
            let put_back = self.mem.write(site, &old);
            if result.is_ok() {
                put_back?;
            }
        }
        self.rseq_restore(rseq);
        let value = match result {
            Ok(v) => v,
            Err(e @ Error::Gone { .. }) => return Err(e),
            Err(e) => {
                // Leave the thread as close to how it was as possible, signals included.
                let _ = sys::setregs(tid, &saved);
                if let Origin::Signal(si) = origin {
                    let _ = sys::setsiginfo(tid, &si);
                }
                self.requeue(tid, caught);
                return Err(e);
            }
        };
        self.back_to_origin(tid, &origin, &saved, caught)?;
        Ok(value)
    }

    /// Classifies the stop of `tid` and, for an event stop inside a system call, first runs
    /// the thread to the call's exit (where the kernel has stored its result). Returns the
    /// origin to restore and the signals caught meanwhile.
    pub(crate) fn begin(&mut self, tid: Pid) -> Result<(Origin, Caught)> {
        let mut origin = self.origin(tid)?;
        let mut caught = Vec::new();
        if let Origin::InSyscall = origin {
            syscall(tid, 0)?;
            self.wait_syscall_stop(tid, &mut caught)?;
            origin = Origin::Plain;
        }
        Ok((origin, caught))
    }

    /// Puts thread `tid` back as it was at `origin` with registers `saved` (see
    /// [`Process::inject_syscall`] for the stop it is left in) and re-queues `caught`.
    pub(crate) fn back_to_origin(
        &mut self,
        tid: Pid,
        origin: &Origin,
        saved: &libc::user_regs_struct,
        mut caught: Vec<(i32, Option<SigInfo>)>,
    ) -> Result<()> {
        let saved = *saved;
        match *origin {
            Origin::Plain | Origin::InSyscall => sys::setregs(tid, &saved)?,
            Origin::Signal(ref si) => {
                sys::setregs(tid, &saved)?;
                sys::setsiginfo(tid, si)?;
            }
            Origin::Entry | Origin::Seccomp => {
                // Back onto the `syscall` instruction with the call's number, then run to
                // the entry stop again.
                let mut back = saved;
                back.rip = saved.rip.wrapping_sub(2);
                back.rax = saved.orig_rax;
                sys::setregs(tid, &back)?;
                syscall(tid, 0)?;
                self.wait_syscall_stop(tid, &mut caught)?;
                if let Origin::Seccomp = origin {
                    syscall(tid, 0)?;
                    self.wait_seccomp_stop(tid, &mut caught)?;
                }
            }
        }
        self.requeue(tid, caught);
        Ok(())
    }

    /// Where injected calls run now (see [`Process::set_syscall_site`]).
    pub fn syscall_site(&self) -> SyscallSite {
        self.site
    }

    /// The armed rseq critical section of `tid`, if any: the address of its `struct rseq`'s
    /// `rseq_cs` field and the value there. Running anything in a thread stopped inside a
    /// section returns it to user space outside the section, where the kernel clears
    /// `rseq_cs` (`rseq_ip_fixup`): put back afterwards, the section is aborted on resume
    /// as it would have been.
    pub(crate) fn rseq_save(&mut self, tid: Pid) -> Option<(u64, u64)> {
        let c = sys::rseq_configuration(tid).ok()?;
        if c.rseq_abi_pointer == 0 {
            return None;
        }
        let at = c.rseq_abi_pointer.checked_add(RSEQ_CS_OFFSET)?;
        let mut b = [0u8; 8];
        self.mem.read(at, &mut b).ok()?;
        let v = u64::from_le_bytes(b);
        (v != 0).then_some((at, v))
    }

    /// Puts back what [`Process::rseq_save`] found.
    pub(crate) fn rseq_restore(&mut self, saved: Option<(u64, u64)>) {
        if let Some((at, v)) = saved {
            // Best effort: the area is the thread's own writable memory.
            let _ = self.mem.write(at, &v.to_le_bytes());
        }
    }

    pub(crate) fn trap(&self) -> Option<u64> {
        self.trap
    }

    pub(crate) fn set_trap(&mut self, t: Option<u64>) {
        self.trap = t;
    }

    /// Classifies the current stop of `tid` from its siginfo (every ptrace stop of a seized
    /// thread has one; its code says which kind it is).
    pub(crate) fn origin(&self, tid: Pid) -> Result<Origin> {
        let si = match sys::getsiginfo(tid) {
            Ok(si) => si,
            // Group-stop of a thread attached with PTRACE_ATTACH.
            Err(e) if e.errno() == Some(libc::EINVAL) => return Ok(Origin::Plain),
            Err(e) => return Err(e),
        };
        if si.si_signo != libc::SIGTRAP {
            return Ok(Origin::Signal(si));
        }
        let code = si.si_code;
        if code == libc::SIGTRAP | 0x80 {
            let info = sys::syscall_info(tid)?;
            return Ok(if info.op == SYSCALL_INFO_ENTRY {
                Origin::Entry
            } else {
                Origin::Plain
            });
        }
        if code == libc::SIGTRAP {
            // A syscall stop of a thread seized without TRACESYSGOOD (x86 sends no real
            // SIGTRAP with this code): the event message says entry (1) or exit (2).
            return Ok(match sys::geteventmsg(tid)? {
                SYSCALL_MSG_ENTRY => Origin::Entry,
                SYSCALL_MSG_EXIT => Origin::Plain,
                _ => Origin::Signal(si),
            });
        }
        if code & 0xff == libc::SIGTRAP && code >> 8 != 0 {
            return match code >> 8 {
                EV_STOP => Ok(Origin::Plain),
                EV_SECCOMP => Ok(Origin::Seccomp),
                EV_EXIT => Err(Error::BadStop {
                    tid,
                    what: "run a system call",
                    why: "the thread is exiting (PTRACE_EVENT_EXIT)".into(),
                }),
                _ => Ok(Origin::InSyscall),
            };
        }
        Ok(Origin::Signal(si))
    }

    /// Where to run the call: the cached `syscall` instruction, a newly found one, or the
    /// current RIP overwritten (returning the bytes to put back).
    fn site_for(&mut self, rip: u64) -> Result<(u64, Option<[u8; 2]>)> {
        if let SyscallSite::At(a) = self.site {
            // Checked each time (one read): e.g. the image that held it was unmapped.
            let mut b = [0u8; 2];
            if self.mem.read(a, &mut b).is_ok() && b == [0x0f, 0x05] {
                return Ok((a, None));
            }
            self.site = SyscallSite::Auto;
        }
        match self.site {
            SyscallSite::PatchRip => {}
            // (`At` only when its bytes were just found gone: now Auto.)
            SyscallSite::At(_) | SyscallSite::Auto => {
                if let Some(a) = self.syscall_insn {
                    // Checked each time (one process_vm_readv): after an exec nobody told
                    // us about, or an unmapped library, the address may hold anything.
                    let mut b = [0u8; 2];
                    if self.mem.read(a, &mut b).is_ok() && b == [0x0f, 0x05] {
                        return Ok((a, None));
                    }
                    self.syscall_insn = None;
                }
                if let Some(a) = find_syscall_insn(self.pid, &mut self.mem) {
                    self.syscall_insn = Some(a);
                    return Ok((a, None));
                }
            }
        }
        let mut old = [0u8; 2];
        self.mem.read(rip, &mut old)?;
        self.mem.write(rip, &[0x0f, 0x05])?;
        Ok((rip, Some(old)))
    }

    /// Single-steps `tid` (registers already set) until the instruction at `site` has run;
    /// returns RAX.
    fn step_over(
        &mut self,
        tid: Pid,
        site: u64,
        caught: &mut Vec<(i32, Option<SigInfo>)>,
    ) -> Result<i64> {
        // A resume from a syscall-entry or seccomp stop first finishes the skipped call and
        // reports the step there, before `site` ran: step again then. Bounded so that a
        // thread that never gets there is reported, not waited for forever.
        for _ in 0..64 {
            singlestep(tid, 0)?;
            let stop = wait_tid(tid)?;
            match stop {
                Stop::Exited(_) | Stop::Killed { .. } | Stop::Event(Event::Exit { .. }) => {
                    return Err(Error::Gone {
                        tid,
                        during: "stepped over an injected system call",
                        stop: Box::new(stop),
                    });
                }
                Stop::Signal {
                    signal: libc::SIGTRAP,
                    info,
                } if info.is_none_or(|i| i.code() > 0) => {
                    let now = sys::getregs(tid)?;
                    if now.rip == site.wrapping_add(2) {
                        return Ok(now.rax as i64);
                    }
                    if now.rip != site {
                        return Err(Error::BadStop {
                            tid,
                            what: "run a system call",
                            why: format!(
                                "the step over the syscall at {site:#x} ended at {:#x}",
                                now.rip
                            ),
                        });
                    }
                }
                Stop::Signal { signal, info } => {
                    if info.is_some_and(|i| i.is_synchronous_fault()) {
                        return Err(Error::BadStop {
                            tid,
                            what: "run a system call",
                            why: format!("signal {signal} at the injected syscall ({info:?})"),
                        });
                    }
                    // The process's seccomp filter trapped the injected call itself: the
                    // program must not get that SIGSYS (it made no such call).
                    if signal == libc::SIGSYS && info.is_some_and(|i| i.code() == SYS_SECCOMP) {
                        return Err(Error::BadStop {
                            tid,
                            what: "run a system call",
                            why: format!(
                                "the process's seccomp filter trapped it (SIGSYS) at {site:#x}: run it from an address the filter exempts (SyscallSite::At, e.g. a loaded image's syscall)"
                            ),
                        });
                    }
                    caught.push((signal, info));
                }
                // Seccomp stop of the injected call (the program's filter traces it), group
                // stop, interrupt, syscall stops: step on.
                _ => {}
            }
        }
        Err(Error::BadStop {
            tid,
            what: "run a system call",
            why: "the thread never reached the syscall instruction".into(),
        })
    }

    /// Runs `tid` (already resumed with PTRACE_SYSCALL) to its next syscall stop.
    pub(crate) fn wait_syscall_stop(
        &mut self,
        tid: Pid,
        caught: &mut Vec<(i32, Option<SigInfo>)>,
    ) -> Result<()> {
        loop {
            let stop = wait_tid(tid)?;
            match stop {
                Stop::Syscall => return Ok(()),
                // Without TRACESYSGOOD a syscall stop is a SIGTRAP whose code is SIGTRAP.
                Stop::Signal {
                    signal: libc::SIGTRAP,
                    info: Some(i),
                } if i.code() == libc::SIGTRAP => return Ok(()),
                Stop::Exited(_) | Stop::Killed { .. } | Stop::Event(Event::Exit { .. }) => {
                    return Err(Error::Gone {
                        tid,
                        during: "run to a system call stop",
                        stop: Box::new(stop),
                    });
                }
                Stop::Signal { signal, info } => caught.push((signal, info)),
                _ => {}
            }
            syscall(tid, 0)?;
        }
    }

    /// Runs `tid` (already resumed) to its seccomp stop.
    fn wait_seccomp_stop(
        &mut self,
        tid: Pid,
        caught: &mut Vec<(i32, Option<SigInfo>)>,
    ) -> Result<()> {
        loop {
            let stop = wait_tid(tid)?;
            match stop {
                Stop::Event(Event::Seccomp { .. }) => return Ok(()),
                Stop::Exited(_) | Stop::Killed { .. } | Stop::Event(Event::Exit { .. }) => {
                    return Err(Error::Gone {
                        tid,
                        during: "run to the seccomp stop again",
                        stop: Box::new(stop),
                    });
                }
                Stop::Syscall => {
                    return Err(Error::BadStop {
                        tid,
                        what: "return to the seccomp stop",
                        why: "the filter did not trace the call a second time; it ran".into(),
                    })
                }
                Stop::Signal { signal, info } => caught.push((signal, info)),
                _ => {}
            }
            syscall(tid, 0)?;
        }
    }

    pub(crate) fn requeue(&mut self, tid: Pid, caught: Vec<(i32, Option<SigInfo>)>) {
        for (signal, info) in caught {
            let exact = match info {
                Some(i) if i.code() < 0 && i.code() != SI_TKILL => {
                    sys::tgsigqueueinfo(self.pid, tid, i.raw()).is_ok()
                }
                _ => false,
            };
            if !exact {
                let _ = sys::tgkill(self.pid, tid, signal);
            }
            self.requeued.push(RequeuedSignal {
                tid,
                signal,
                info,
                exact,
            });
        }
    }

    /// `mmap` inside the process; returns the address.
    #[allow(clippy::too_many_arguments)]
    pub fn remote_mmap(
        &mut self,
        tid: Pid,
        addr: u64,
        len: u64,
        prot: i32,
        flags: i32,
        fd: i32,
        offset: u64,
    ) -> Result<u64> {
        let r = self.inject_syscall(
            tid,
            libc::SYS_mmap,
            [
                addr,
                len,
                prot as u64,
                flags as u64,
                fd as i64 as u64,
                offset,
            ],
        )?;
        self.check("mmap", r).map(|v| v as u64)
    }

    /// `mprotect` inside the process.
    pub fn remote_mprotect(&mut self, tid: Pid, addr: u64, len: u64, prot: i32) -> Result<()> {
        let r = self.inject_syscall(tid, libc::SYS_mprotect, [addr, len, prot as u64, 0, 0, 0])?;
        self.check("mprotect", r).map(drop)
    }

    /// `munmap` inside the process.
    pub fn remote_munmap(&mut self, tid: Pid, addr: u64, len: u64) -> Result<()> {
        let r = self.inject_syscall(tid, libc::SYS_munmap, [addr, len, 0, 0, 0, 0])?;
        self.check("munmap", r).map(drop)
    }

    /// `close` inside the process.
    pub fn remote_close(&mut self, tid: Pid, fd: i32) -> Result<()> {
        let r = self.inject_syscall(tid, libc::SYS_close, [fd as i64 as u64, 0, 0, 0, 0, 0])?;
        self.check("close", r).map(drop)
    }

    fn check(&self, name: &'static str, r: i64) -> Result<i64> {
        if (-4095..0).contains(&r) {
            return Err(Error::Remote {
                name,
                pid: self.pid,
                errno: -r as i32,
            });
        }
        Ok(r)
    }
}

/// System calls that fail with `EINTR` (rather than an internal restart code) whenever the
/// thread is woken for any signal-ish reason, a ptrace interrupt included: `epoll_wait`,
/// `epoll_pwait`, `epoll_pwait2`, `semop`, `semtimedop`, `rt_sigtimedwait`,
/// `io_getevents`, `io_pgetevents` (see signal(7), "Interruption of system calls ... by stop
/// signals").
pub const EINTR_ON_ANY_WAKEUP: [i64; 8] = [232, 281, 441, 65, 220, 128, 208, 333];

const ERESTARTNOHAND: u64 = (-514i64) as u64;

/// Makes a call of [`EINTR_ON_ANY_WAKEUP`] that the tracer's stop broke off resume as if
/// nothing happened. Call it at the stop [`interrupt`](crate::interrupt) caused (an
/// interrupt stop, or the syscall-exit stop that took its place under PTRACE_SYSCALL) and at
/// signal-delivery-stops (a signal the program ignores wakes a traced thread too);
/// [`seize_all`](crate::seize_all) does it for the threads it stops. (At such an exit stop
/// the kernel still has the thread's signal-pending flag set, so it goes through the
/// restart logic on resume.)
///
/// It applies only where thread `tid` is on its way out of such a call with `EINTR`
/// (ORIG_RAX names it, RAX is -EINTR, RIP follows a `syscall` instruction and equals RCX,
/// which is not so once a signal handler's frame is set up). RAX then becomes the kernel's
/// `-ERESTARTNOHAND`: on resume the kernel restarts the call if no handler runs, and
/// returns `EINTR` if a handler does, exactly the call's behaviour without a tracer. (A
/// restarted `epoll_wait` with a timeout waits its full timeout again.) Returns whether it
/// changed anything.
pub fn restart_interrupted_call(tid: Pid) -> Result<bool> {
    let mut r = sys::getregs(tid)?;
    let nr = r.orig_rax as i64;
    if !EINTR_ON_ANY_WAKEUP.contains(&nr)
        || r.rax != (-(libc::EINTR as i64)) as u64
        || r.rcx != r.rip
    {
        return Ok(false);
    }
    let mut insn = [0u8; 2];
    if crate::read_mem(tid, r.rip.wrapping_sub(2), &mut insn).is_err() || insn != [0x0f, 0x05] {
        return Ok(false);
    }
    r.rax = ERESTARTNOHAND;
    sys::setregs(tid, &r)?;
    Ok(true)
}

/// Finds the bytes `0f 05` in an executable mapping of `pid`, the vDSO first (always
/// present, never unmapped by programs). The CPU runs them as `syscall` wherever they sit,
/// even inside another instruction.
fn find_syscall_insn(pid: Pid, mem: &mut Mem) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut candidates: Vec<(u64, u64, bool)> = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if !perms.contains('x') || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        candidates.push((a, b, line.ends_with("[vdso]")));
    }
    candidates.sort_by_key(|c| !c.2);
    for (a, b, _) in candidates.into_iter().take(8) {
        // Scan at most 1 MiB of each: a `syscall` is near the start of any libc or vDSO.
        let len = (b - a).min(1 << 20) as usize;
        let mut buf = vec![0u8; len];
        if mem.read(a, &mut buf).is_err() {
            continue;
        }
        if let Some(i) = buf.windows(2).position(|w| w == [0x0f, 0x05]) {
            return Some(a + i as u64);
        }
    }
    None
}
