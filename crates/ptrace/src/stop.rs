//! `waitpid` and the decoding of its status into a [`Stop`].

use std::fmt;
use std::io;

use crate::sys;
use crate::{Error, Pid, Result};

/// Event numbers of `<linux/ptrace.h>` (status >> 16 of an event stop).
const EV_FORK: i32 = 1;
const EV_VFORK: i32 = 2;
const EV_CLONE: i32 = 3;
const EV_EXEC: i32 = 4;
const EV_VFORK_DONE: i32 = 5;
const EV_EXIT: i32 = 6;
const EV_SECCOMP: i32 = 7;
const EV_STOP: i32 = 128;

/// The signal information of a signal-delivery-stop (`PTRACE_GETSIGINFO`), kept whole so it
/// can be given back to the kernel (a re-delivered signal keeps its fault address, sender,
/// value).
#[derive(Clone, Copy)]
pub struct SigInfo {
    raw: libc::siginfo_t,
}

impl SigInfo {
    /// Wraps a kernel siginfo.
    pub fn from_raw(raw: libc::siginfo_t) -> Self {
        SigInfo { raw }
    }
    /// The kernel's siginfo.
    pub fn raw(&self) -> &libc::siginfo_t {
        &self.raw
    }
    /// Signal number.
    pub fn signo(&self) -> i32 {
        self.raw.si_signo
    }
    /// `si_code`: > 0 sent by the kernel (e.g. `SEGV_MAPERR`), <= 0 sent by a process
    /// (`SI_USER` 0, `SI_QUEUE` -1, `SI_TKILL` -6).
    pub fn code(&self) -> i32 {
        self.raw.si_code
    }
    /// `si_errno`.
    pub fn errno(&self) -> i32 {
        self.raw.si_errno
    }
    /// True for a fault the kernel raised for the instruction at RIP (SIGSEGV, SIGBUS,
    /// SIGILL, SIGFPE with a positive `si_code`): suppressing it and resuming re-executes the
    /// instruction, which faults again.
    pub fn is_synchronous_fault(&self) -> bool {
        matches!(
            self.signo(),
            libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
        ) && self.code() > 0
    }
    /// The faulting address of SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGTRAP (`si_addr`);
    /// `None` for other signals.
    pub fn fault_addr(&self) -> Option<u64> {
        match self.signo() {
            libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP => {
                // SAFETY: for these signals the kernel filled the `_sigfault` member.
                Some(unsafe { self.raw.si_addr() } as u64)
            }
            _ => None,
        }
    }
    /// The sender's pid for signals sent by a process (`si_code` <= 0) and for SIGCHLD.
    pub fn sender_pid(&self) -> Option<Pid> {
        if self.code() <= 0 || self.signo() == libc::SIGCHLD {
            // SAFETY: kill/tgkill/sigqueue and SIGCHLD fill the `_kill`/`_sigchld` member,
            // whose first field is the pid.
            Some(unsafe { self.raw.si_pid() })
        } else {
            None
        }
    }
}

impl fmt::Debug for SigInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SigInfo");
        d.field("signo", &self.signo()).field("code", &self.code());
        if let Some(a) = self.fault_addr() {
            d.field("addr", &format_args!("{a:#x}"));
        }
        if let Some(p) = self.sender_pid() {
            d.field("pid", &p);
        }
        d.finish()
    }
}

/// A ptrace event stop (`PTRACE_EVENT_*`), with its event message decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `clone` made a thread (or process); it is attached and will report its own first
    /// stop ([`Stop::Interrupt`]).
    Clone {
        /// The new task's id.
        new: Pid,
    },
    /// `fork` made a process (attached, see [`Event::Clone`]).
    Fork {
        /// The child's pid.
        new: Pid,
    },
    /// `vfork` made a process (attached, see [`Event::Clone`]).
    Vfork {
        /// The child's pid.
        new: Pid,
    },
    /// The parent of a `vfork` is about to continue.
    VforkDone {
        /// The child's pid.
        child: Pid,
    },
    /// `execve` succeeded; the thread now runs the new program with the process's pid as
    /// its tid. Caches of memory layout must be dropped.
    Exec {
        /// The thread id that called `execve` (differs from the pid when a non-leader
        /// thread exec'd).
        former_tid: Pid,
    },
    /// The thread is about to exit (registers still readable).
    Exit {
        /// Its wait status (as `waitpid` would report it).
        status: i32,
    },
    /// A seccomp filter returned `SECCOMP_RET_TRACE`; the thread is at the system call's
    /// entry.
    Seccomp {
        /// The filter's `SECCOMP_RET_DATA` (low 16 bits of its return value).
        data: u16,
    },
}

/// What a thread reported to `waitpid`.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// It exited with this status (its `exit` code).
    Exited(i32),
    /// A signal killed it.
    Killed {
        /// The signal.
        signal: i32,
        /// A core dump was written.
        core: bool,
    },
    /// Signal-delivery-stop: the signal is about to be delivered. Resume with it (the `sig`
    /// of [`cont`](crate::cont)) to deliver it, with 0 to suppress it.
    Signal {
        /// The signal.
        signal: i32,
        /// Its siginfo (`None` if the kernel would not give it, e.g. the thread died).
        info: Option<SigInfo>,
    },
    /// Group-stop: the process was stopped by this stop signal (`SIGSTOP`, `SIGTSTP`,
    /// `SIGTTIN`, `SIGTTOU`). Resume with [`listen`](crate::listen) to keep it stopped while
    /// still seeing events, or restart it.
    Group {
        /// The stop signal.
        signal: i32,
    },
    /// The stop [`interrupt`](crate::interrupt) asked for, or the first stop of a thread
    /// attached automatically (TRACECLONE/FORK/VFORK).
    Interrupt,
    /// A ptrace event stop.
    Event(Event),
    /// Syscall-entry or syscall-exit stop (after [`syscall`](crate::syscall)); with
    /// [`Options::TRACESYSGOOD`](crate::Options::TRACESYSGOOD) the status says so, without it
    /// the siginfo and event message do. [`syscall_stop`] tells entry from exit.
    Syscall,
}

impl Stop {
    /// True if the thread no longer exists.
    pub fn is_gone(&self) -> bool {
        matches!(self, Stop::Exited(_) | Stop::Killed { .. })
    }
}

/// Waits for a state change of `who` (a thread id, or -1 for any tracee or child of the
/// calling thread), `__WALL` (threads and processes alike) and `__WNOTHREAD` (only the
/// calling thread's tracees and children: several tracer threads of one process do not
/// take each other's stops). With `nohang`, returns `None` at once if nothing is pending.
/// Retries on `EINTR`.
pub fn wait(who: Pid, nohang: bool) -> Result<Option<(Pid, Stop)>> {
    let flags = libc::__WALL | libc::__WNOTHREAD | if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int through a valid pointer.
        let r = unsafe { libc::waitpid(who, &mut status, flags) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(Error::Wait { who, source: e });
        }
        if r == 0 {
            return Ok(None);
        }
        return Ok(Some((r, decode(r, status))));
    }
}

/// Waits (blocking) for the next stop of thread `tid`.
pub fn wait_tid(tid: Pid) -> Result<Stop> {
    match wait(tid, false)? {
        Some((_, s)) => Ok(s),
        // Cannot happen without WNOHANG; reported rather than assumed.
        None => Err(Error::Wait {
            who: tid,
            source: io::Error::from_raw_os_error(libc::EAGAIN),
        }),
    }
}

/// Decodes a `waitpid` status of `tid`, asking the kernel for the event message or siginfo
/// where the status alone does not say enough.
pub fn decode(tid: Pid, status: i32) -> Stop {
    if libc::WIFEXITED(status) {
        return Stop::Exited(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        return Stop::Killed {
            signal: libc::WTERMSIG(status),
            core: libc::WCOREDUMP(status),
        };
    }
    let sig = (status >> 8) & 0xff;
    let event = (status >> 16) & 0xffff;
    let msg = || sys::geteventmsg(tid).unwrap_or(0);
    match event {
        0 if sig == (libc::SIGTRAP | 0x80) => Stop::Syscall,
        0 => match sys::getsiginfo(tid) {
            // A syscall stop without TRACESYSGOOD: its code is plain SIGTRAP (no real SIGTRAP
            // on x86 has it) and its event message says entry (1) or exit (2).
            Ok(si)
                if si.si_signo == libc::SIGTRAP
                    && si.si_code == libc::SIGTRAP
                    && matches!(sys::geteventmsg(tid), Ok(1 | 2)) =>
            {
                Stop::Syscall
            }
            Ok(si) => Stop::Signal {
                signal: sig,
                info: Some(SigInfo::from_raw(si)),
            },
            // A group-stop of a thread attached with PTRACE_ATTACH has no siginfo (EINVAL);
            // with SEIZE group-stops come as EVENT_STOP.
            Err(e) if e.errno() == Some(libc::EINVAL) => Stop::Group { signal: sig },
            Err(_) => Stop::Signal {
                signal: sig,
                info: None,
            },
        },
        EV_STOP => match sig {
            libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => {
                Stop::Group { signal: sig }
            }
            _ => Stop::Interrupt,
        },
        EV_CLONE => Stop::Event(Event::Clone { new: msg() as Pid }),
        EV_FORK => Stop::Event(Event::Fork { new: msg() as Pid }),
        EV_VFORK => Stop::Event(Event::Vfork { new: msg() as Pid }),
        EV_VFORK_DONE => Stop::Event(Event::VforkDone {
            child: msg() as Pid,
        }),
        EV_EXEC => Stop::Event(Event::Exec {
            former_tid: msg() as Pid,
        }),
        EV_EXIT => Stop::Event(Event::Exit {
            status: msg() as i32,
        }),
        EV_SECCOMP => Stop::Event(Event::Seccomp { data: msg() as u16 }),
        _ => Stop::Signal {
            signal: sig,
            info: None,
        },
    }
}

/// Where a thread in a syscall stop or seccomp stop stands (`PTRACE_GET_SYSCALL_INFO`,
/// Linux 5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallStop {
    /// Not a syscall stop (or a syscall stop of a thread seized without
    /// [`Options::TRACESYSGOOD`](crate::Options::TRACESYSGOOD), which the kernel cannot
    /// tell apart).
    None,
    /// At a system call's entry (PTRACE_SYSCALL).
    Entry {
        /// The call's number.
        nr: i64,
        /// Its six arguments.
        args: [u64; 6],
    },
    /// At a system call's exit.
    Exit {
        /// The return value (`-errno` if `is_error`).
        rval: i64,
        /// The call failed.
        is_error: bool,
    },
    /// At a seccomp stop (a filter returned `SECCOMP_RET_TRACE`).
    Seccomp {
        /// The call's number.
        nr: i64,
        /// Its six arguments.
        args: [u64; 6],
        /// The filter's whole `SECCOMP_RET_DATA`.
        data: u32,
    },
}

/// The system call a stopped thread is entering or leaving.
pub fn syscall_stop(tid: Pid) -> Result<SyscallStop> {
    let i = sys::syscall_info(tid)?;
    let args: [u64; 6] = i.data[1..7].try_into().unwrap_or_default();
    Ok(match i.op {
        1 => SyscallStop::Entry {
            nr: i.data[0] as i64,
            args,
        },
        2 => SyscallStop::Exit {
            rval: i.data[0] as i64,
            is_error: i.data[1] as u8 != 0,
        },
        3 => SyscallStop::Seccomp {
            nr: i.data[0] as i64,
            args,
            data: i.data[7] as u32,
        },
        _ => SyscallStop::None,
    })
}

/// The signals queued for thread `tid` (stopped) and not yet taken, from its private
/// queue, oldest first (at most 16): `PTRACE_PEEKSIGINFO`. Empty when none, or when the
/// kernel refuses to say.
pub fn queued_signals(tid: Pid) -> Vec<SigInfo> {
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
    si[..n.clamp(0, 16) as usize]
        .iter()
        .map(|s| SigInfo::from_raw(*s))
        .collect()
}
