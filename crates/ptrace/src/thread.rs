//! Attaching to threads and resuming them.

use std::collections::BTreeMap;
use std::ops::BitOr;

use crate::stop::{wait_tid, Event, Stop};
use crate::sys::ptrace_int;
use crate::{attach, Error, Pid, Result};

/// `PTRACE_O_*` options for [`seize`] (combine with `|`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Options(pub u32);

impl Options {
    /// No option.
    pub const NONE: Options = Options(0);
    /// Syscall stops report `SIGTRAP | 0x80` (decoded as [`Stop::Syscall`]).
    pub const TRACESYSGOOD: Options = Options(libc::PTRACE_O_TRACESYSGOOD as u32);
    /// Attach new children made by `fork`.
    pub const TRACEFORK: Options = Options(libc::PTRACE_O_TRACEFORK as u32);
    /// Attach new children made by `vfork`.
    pub const TRACEVFORK: Options = Options(libc::PTRACE_O_TRACEVFORK as u32);
    /// Attach new threads (and `clone` children).
    pub const TRACECLONE: Options = Options(libc::PTRACE_O_TRACECLONE as u32);
    /// Stop at a successful `execve` ([`Event::Exec`]).
    pub const TRACEEXEC: Options = Options(libc::PTRACE_O_TRACEEXEC as u32);
    /// Stop when the parent of a vfork continues.
    pub const TRACEVFORKDONE: Options = Options(libc::PTRACE_O_TRACEVFORKDONE as u32);
    /// Stop before a thread exits ([`Event::Exit`]).
    pub const TRACEEXIT: Options = Options(libc::PTRACE_O_TRACEEXIT as u32);
    /// Stop on `SECCOMP_RET_TRACE` ([`Event::Seccomp`]).
    pub const TRACESECCOMP: Options = Options(libc::PTRACE_O_TRACESECCOMP as u32);
    /// Kill the tracee if the tracer exits (for programs the recorder started; never for
    /// `--pid`).
    pub const EXITKILL: Options = Options(libc::PTRACE_O_EXITKILL as u32);

    /// The raw option bits.
    pub fn bits(self) -> u32 {
        self.0
    }
    /// True if all of `other`'s bits are set.
    pub fn contains(self, other: Options) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Options {
    type Output = Options;
    fn bitor(self, rhs: Options) -> Options {
        Options(self.0 | rhs.0)
    }
}

/// `PTRACE_SEIZE`: attaches to thread `tid` without stopping it. `EPERM` is turned into the
/// most likely [`AttachError`](crate::AttachError) (with what to change).
pub fn seize(tid: Pid, options: Options) -> Result<()> {
    match ptrace_int("SEIZE", libc::PTRACE_SEIZE, tid, 0, options.0 as u64) {
        Err(e) if e.errno() == Some(libc::EPERM) => Err(Error::Attach(attach::explain_eperm(tid))),
        Err(e) if e.errno() == Some(libc::ESRCH) => {
            Err(Error::Attach(crate::AttachError::NoSuchProcess {
                pid: tid,
            }))
        }
        r => r.map(drop),
    }
}

/// `PTRACE_INTERRUPT`: asks a seized, running thread to stop; [`wait`](crate::wait) then
/// reports [`Stop::Interrupt`], or another stop that came first (any ptrace stop satisfies
/// the request: none follows it). Call
/// [`restart_interrupted_call`](crate::restart_interrupted_call) at that stop so that a call
/// like `epoll_wait` the thread was blocked in does not return `EINTR`.
pub fn interrupt(tid: Pid) -> Result<()> {
    ptrace_int("INTERRUPT", libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// `PTRACE_CONT`: resumes a stopped thread, delivering `sig` if it is in a
/// signal-delivery-stop (0: none).
pub fn cont(tid: Pid, sig: i32) -> Result<()> {
    ptrace_int("CONT", libc::PTRACE_CONT, tid, 0, sig as u64).map(drop)
}

/// `PTRACE_SYSCALL`: like [`cont`], stopping at the next syscall entry or exit.
pub fn syscall(tid: Pid, sig: i32) -> Result<()> {
    ptrace_int("SYSCALL", libc::PTRACE_SYSCALL, tid, 0, sig as u64).map(drop)
}

/// `PTRACE_SINGLESTEP`: like [`cont`], stopping after one instruction (a SIGTRAP
/// signal-delivery-stop).
pub fn singlestep(tid: Pid, sig: i32) -> Result<()> {
    ptrace_int("SINGLESTEP", libc::PTRACE_SINGLESTEP, tid, 0, sig as u64).map(drop)
}

/// `PTRACE_LISTEN`: leaves a thread in group-stop but lets it report further events.
pub fn listen(tid: Pid) -> Result<()> {
    ptrace_int("LISTEN", libc::PTRACE_LISTEN, tid, 0, 0).map(drop)
}

/// `PTRACE_DETACH`: lets the stopped thread go, delivering `sig` (0: none).
pub fn detach(tid: Pid, sig: i32) -> Result<()> {
    ptrace_int("DETACH", libc::PTRACE_DETACH, tid, 0, sig as u64).map(drop)
}

/// The thread ids of process `pid` (`/proc/PID/task`), in ascending order.
pub fn threads_of(pid: Pid) -> Result<Vec<Pid>> {
    let path = format!("/proc/{pid}/task");
    let dir = std::fs::read_dir(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::Attach(crate::AttachError::NoSuchProcess { pid })
        } else {
            Error::Proc {
                path: path.clone(),
                source,
            }
        }
    })?;
    let mut v: Vec<Pid> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// Seizes every thread of process `pid` with `options` and stops each one; returns each
/// thread with the stop it is now in, in ascending tid order.
///
/// The listing of `/proc/PID/task` is repeated until it shows no thread not yet seized (a
/// thread created meanwhile is attached by TRACECLONE of its creator if `options` has it, or
/// seen in the next listing). A thread's stop is normally [`Stop::Interrupt`];
/// [`Stop::Group`] if the process is stopped by a stop signal; [`Stop::Signal`] if a
/// signal reached it first (any ptrace stop satisfies the interrupt: none follows). Children made by fork/vfork while
/// seizing (with TRACEFORK/TRACEVFORK) are returned too. Threads that exit meanwhile are
/// left out. Fails if the main thread cannot be seized; on failure threads already seized
/// are detached again.
pub fn seize_all(pid: Pid, options: Options) -> Result<Vec<(Pid, Stop)>> {
    let mut seized: BTreeMap<Pid, Option<Stop>> = BTreeMap::new();
    let r = seize_all_inner(pid, options, &mut seized);
    if r.is_err() {
        for (&t, st) in &seized {
            if st.is_some() {
                let _ = detach(t, 0);
            } else {
                // Stop it first: detach works only on a stopped tracee.
                if interrupt(t).is_ok() {
                    if let Ok(s) = wait_tid(t) {
                        if !s.is_gone() {
                            let _ = detach(t, 0);
                        }
                    }
                }
            }
        }
    }
    r?;
    Ok(seized
        .into_iter()
        .filter_map(|(t, s)| Some((t, s?)))
        .collect())
}

fn seize_all_inner(
    pid: Pid,
    options: Options,
    seized: &mut BTreeMap<Pid, Option<Stop>>,
) -> Result<()> {
    // Seize what the listing shows, stop it all, and list again: a thread created after a
    // listing by a thread not yet stopped shows up in the next one (or, with TRACECLONE,
    // in its creator's clone event). Once a listing has nothing new, every thread is
    // stopped and none can be created.
    loop {
        let mut new = false;
        for t in threads_of(pid)? {
            if seized.contains_key(&t) {
                continue;
            }
            match seize(t, options) {
                Ok(()) => {}
                Err(e) if t != pid && thread_ended(pid, t) => {
                    let _ = e;
                    continue;
                }
                Err(e) => return Err(e),
            }
            new = true;
            seized.insert(t, None);
            match interrupt(t) {
                // Exiting: its wait reports the exit.
                Err(e) if e.errno() == Some(libc::ESRCH) => {}
                r => r?,
            }
        }
        if !new {
            return Ok(());
        }
        collect_stops(seized)?;
    }
}

/// PTRACE_INTERRUPT of a thread just resumed, which may be exiting (then its wait reports
/// the exit).
fn interrupt_again(t: Pid) -> Result<()> {
    match interrupt(t) {
        Err(e) if e.errno() == Some(libc::ESRCH) => Ok(()),
        r => r,
    }
}

/// True if thread `t` of `pid` is gone or exiting (a zombie).
fn thread_ended(pid: Pid, t: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/task/{t}/stat")) {
        Err(_) => true,
        Ok(st) => matches!(
            st.rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next()),
            Some("Z" | "X" | "x")
        ),
    }
}

/// Waits for one stop of every seized thread not yet stopped; new tasks announced by clone
/// events join the set.
fn collect_stops(seized: &mut BTreeMap<Pid, Option<Stop>>) -> Result<()> {
    let mut pending: Vec<Pid> = seized
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(t, _)| *t)
        .collect();
    while let Some(t) = pending.pop() {
        let stop = wait_tid(t)?;
        match stop {
            Stop::Exited(_) | Stop::Killed { .. } => {
                seized.remove(&t);
            }
            Stop::Event(Event::Clone { new } | Event::Fork { new } | Event::Vfork { new }) => {
                if let std::collections::btree_map::Entry::Vacant(v) = seized.entry(new) {
                    v.insert(None);
                    pending.push(new);
                }
                // Any ptrace stop satisfies a pending interrupt: ask again.
                cont(t, 0)?;
                interrupt_again(t)?;
                pending.push(t);
            }
            Stop::Event(
                Event::VforkDone { .. }
                | Event::Exec { .. }
                | Event::Seccomp { .. }
                | Event::Exit { .. },
            )
            | Stop::Syscall => {
                // Exec: the process changed under us but the thread is ours; seccomp and
                // syscall stops: continuing runs the call. These stops consumed the
                // interrupt: ask again.
                if let Stop::Syscall = stop {
                    crate::restart_interrupted_call(t)?;
                }
                cont(t, 0)?;
                interrupt_again(t)?;
                pending.push(t);
            }
            s => {
                if matches!(s, Stop::Interrupt | Stop::Signal { .. }) {
                    crate::restart_interrupted_call(t)?;
                }
                seized.insert(t, Some(s));
            }
        }
    }
    Ok(())
}
