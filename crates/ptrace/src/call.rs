//! Calling a function inside a stopped tracee.
//!
//! The thread's general registers and its whole XSAVE state are saved; RIP is set to the
//! function, RDI, RSI, RDX, RCX, R8, R9 to the arguments (SysV ABI, integers only), RAX to 0
//! (no vector arguments, for variadic callees), DF cleared, and RSP to a 16-byte-aligned
//! address below the red zone (128 bytes) of the thread's stack, or below the top of a stack
//! the caller gives, minus the 8-byte return address stored there. The return address is an
//! `int3`: a loaded image's [`Image::trap`](crate::Image::trap), or one page (read+execute,
//! anonymous) made for it in the process the first time. The thread is continued until the
//! SIGTRAP at that address; RAX is the result; then everything is put back exactly as for
//! [`Process::inject_syscall`] (the syscall restart fixup, the stop the thread was in,
//! signals that came meanwhile re-queued).

use std::time::{Duration, Instant};

use crate::inject::Caught;
use crate::stop::{wait, wait_tid, Event, Stop};
use crate::sys::{self, NT_PRFPREG, NT_X86_XSTATE};
use crate::thread::{cont, interrupt};
use crate::{Error, Pid, Process, Result};

/// Bytes below RSP that a function may use without moving RSP (SysV x86-64 ABI).
const RED_ZONE: u64 = 128;
const EFLAGS_TF: u64 = 0x100;
const EFLAGS_DF: u64 = 0x400;

/// How [`Process::call_with`] runs the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallOptions {
    /// Top (highest address, exclusive) of a stack to run the function on, e.g. from
    /// [`Process::alloc_scratch`]: for a thread whose own stack is small or unknown (a Go
    /// goroutine's). `None`: below the red zone of the thread's current stack.
    pub stack: Option<u64>,
    /// Address of an `int3` to use as the return address. `None`: the trap of the image
    /// loaded last, else a page made for it.
    pub return_to: Option<u64>,
    /// How long the function may run (`None`: no limit, and the wait for it blocks instead
    /// of polling). On expiry the thread is interrupted, put back as it was, and
    /// [`Error::CallTimeout`] returned.
    pub timeout: Option<Duration>,
}

impl Default for CallOptions {
    /// Own stack, automatic trap, 10 s limit.
    fn default() -> Self {
        CallOptions {
            stack: None,
            return_to: None,
            timeout: Some(Duration::from_secs(10)),
        }
    }
}

/// The vector/FPU state of a thread, as the kernel gave it.
struct Fpu {
    nt: libc::c_int,
    buf: Vec<u8>,
}

fn save_fpu(tid: Pid) -> Result<Fpu> {
    let mut buf = vec![0u8; crate::regs::xsave_max()];
    match sys::regset(false, tid, NT_X86_XSTATE, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            return Ok(Fpu {
                nt: NT_X86_XSTATE,
                buf,
            });
        }
        Err(e)
            if matches!(
                e.errno(),
                Some(libc::EINVAL) | Some(libc::ENODEV) | Some(libc::EIO)
            ) => {}
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; 512];
    let n = sys::regset(false, tid, NT_PRFPREG, &mut buf)?;
    buf.truncate(n);
    Ok(Fpu {
        nt: NT_PRFPREG,
        buf,
    })
}

fn restore_fpu(tid: Pid, f: &mut Fpu) -> Result<()> {
    sys::regset(true, tid, f.nt, &mut f.buf).map(drop)
}

impl Process {
    /// Calls the function at `addr` in thread `tid` with up to six integer `args` and
    /// returns its RAX, with [`CallOptions::default`] (the thread's own stack, a 10 s
    /// limit). See [`Process::call_with`].
    pub fn call(&mut self, tid: Pid, addr: u64, args: &[u64]) -> Result<u64> {
        self.call_with(tid, addr, args, &CallOptions::default())
    }

    /// Calls the function at `addr` in thread `tid` (in any ptrace stop but
    /// `PTRACE_EVENT_EXIT`) with up to six integer `args` (SysV ABI) and returns RAX.
    ///
    /// The thread's registers, vector state included, are as before afterwards, and it is
    /// left in the same kind of stop as after [`Process::inject_syscall`]: a system call it
    /// was blocked in resumes as if never interrupted; signals that arrive during the call
    /// are held and re-queued ([`Process::take_requeued`]). The function runs with the
    /// thread's signal mask, on its stack below the red zone (or on `opts.stack`); other
    /// threads of the process keep whatever state they are in (stopped or running).
    ///
    /// Errors: [`Error::CallFault`] if the function faults (SIGSEGV, SIGBUS, SIGILL,
    /// SIGFPE, or a trap other than the return), [`Error::CallTimeout`] if it runs longer than
    /// `opts.timeout`; in both cases the registers are restored, and what the function did
    /// stays done; the thread is then in the signal-delivery-stop of the fault or the
    /// interrupt's stop (resume it with signal 0, as after a successful call from any stop but
    /// a signal-delivery-stop, whose siginfo is put back). [`Error::Gone`] if the thread died
    /// (nothing to restore).
    pub fn call_with(
        &mut self,
        tid: Pid,
        addr: u64,
        args: &[u64],
        opts: &CallOptions,
    ) -> Result<u64> {
        if args.len() > 6 {
            return Err(Error::Invalid(format!(
                "a remote call takes at most 6 integer arguments, not {}",
                args.len()
            )));
        }
        let trap = match (opts.return_to, self.trap()) {
            (Some(t), _) if self.is_int3(t) => t,
            (Some(t), _) => {
                return Err(Error::Invalid(format!(
                    "the return address {t:#x} given for a call does not hold an int3"
                )))
            }
            // Checked each time (one read): the page may have been unmapped behind our back.
            (None, Some(t)) if self.is_int3(t) => t,
            (None, _) => self.make_trap(tid)?,
        };
        let (origin, mut caught) = self.begin(tid)?;
        let rseq = self.rseq_save(tid);
        let saved = sys::getregs(tid)?;
        let mut fpu = match save_fpu(tid) {
            Ok(f) => f,
            Err(e) => {
                self.back_to_origin(tid, &origin, &saved, caught)?;
                return Err(e);
            }
        };
        let top = opts.stack.unwrap_or(saved.rsp.wrapping_sub(RED_ZONE));
        let sp = (top & !15).wrapping_sub(8);
        if let Err(e) = self.mem().write(sp, &trap.to_le_bytes()) {
            self.back_to_origin(tid, &origin, &saved, caught)?;
            return Err(Error::Invalid(format!(
                "cannot write the return address on the stack of thread {tid} at {sp:#x} ({e}); pass a scratch stack (CallOptions::stack)"
            )));
        }
        let mut r = saved;
        r.rip = addr;
        r.rsp = sp;
        r.rax = 0;
        // No syscall restart may happen when the thread is resumed into the function.
        r.orig_rax = u64::MAX;
        r.eflags &= !(EFLAGS_DF | EFLAGS_TF);
        let regs = [
            &mut r.rdi, &mut r.rsi, &mut r.rdx, &mut r.rcx, &mut r.r8, &mut r.r9,
        ];
        for (reg, a) in regs.into_iter().zip(args) {
            *reg = *a;
        }
        let result = sys::setregs(tid, &r)
            .and_then(|()| self.run_call(tid, trap, opts.timeout, &mut caught));
        if let Err(e @ Error::Gone { .. }) = result {
            return Err(e);
        }
        self.rseq_restore(rseq);
        let restored = restore_fpu(tid, &mut fpu)
            .and_then(|()| self.back_to_origin(tid, &origin, &saved, caught));
        let v = result?;
        restored?;
        Ok(v)
    }

    /// Runs `tid` (registers set for the call) until it returns to `trap`.
    fn run_call(
        &mut self,
        tid: Pid,
        trap: u64,
        timeout: Option<Duration>,
        caught: &mut Caught,
    ) -> Result<u64> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut timed_out = false;
        cont(tid, 0)?;
        loop {
            let stop = match deadline {
                None => wait_tid(tid)?,
                Some(d) => match wait_until(tid, d)? {
                    Some(s) => s,
                    None => {
                        interrupt(tid)?;
                        timed_out = true;
                        wait_tid(tid)?
                    }
                },
            };
            match stop {
                Stop::Exited(_) | Stop::Killed { .. } | Stop::Event(Event::Exit { .. }) => {
                    return Err(Error::Gone {
                        tid,
                        during: "running a function called in it",
                        stop: Box::new(stop),
                    });
                }
                Stop::Signal {
                    signal: libc::SIGTRAP,
                    info,
                } if info.is_none_or(|i| i.code() > 0) => {
                    let now = sys::getregs(tid)?;
                    if now.rip == trap.wrapping_add(1) {
                        return Ok(now.rax);
                    }
                    return Err(Error::CallFault {
                        tid,
                        signal: libc::SIGTRAP,
                        addr: info.and_then(|i| i.fault_addr()).unwrap_or(now.rip),
                        rip: now.rip,
                    });
                }
                Stop::Signal {
                    signal,
                    info: Some(i),
                } if i.is_synchronous_fault() => {
                    let now = sys::getregs(tid)?;
                    return Err(Error::CallFault {
                        tid,
                        signal,
                        addr: i.fault_addr().unwrap_or(0),
                        rip: now.rip,
                    });
                }
                // Held: re-queued once the thread is back where it was.
                Stop::Signal { signal, info } => caught.push((signal, info)),
                // Interrupt, group and seccomp stops, events of calls the function makes.
                _ => {}
            }
            if timed_out {
                // Any stop consumed the interrupt: the thread is stopped now.
                return Err(Error::CallTimeout {
                    tid,
                    after: timeout.unwrap_or_default(),
                    rip: sys::getregs(tid)?.rip,
                });
            }
            cont(tid, 0)?;
        }
    }

    fn is_int3(&mut self, addr: u64) -> bool {
        let mut b = [0u8];
        self.mem().read(addr, &mut b).is_ok() && b[0] == 0xcc
    }

    /// Maps one page of `int3` (read+execute, anonymous) to return to.
    fn make_trap(&mut self, tid: Pid) -> Result<u64> {
        let a = self.remote_mmap(
            tid,
            0,
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )?;
        self.mem().write(a, &[0xcc; 16])?;
        self.set_trap(Some(a));
        Ok(a)
    }

    /// Maps `len` bytes (rounded up to pages) of zeroed, readable and writable anonymous
    /// memory in the process (an `mmap` injected into thread `tid`), e.g. a stack for
    /// [`CallOptions::stack`] (pass `addr + len`) or a block of data for a called function
    /// (write it with [`Process::mem`]).
    pub fn alloc_scratch(&mut self, tid: Pid, len: u64) -> Result<u64> {
        self.remote_mmap(
            tid,
            0,
            len.max(1),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    }
}

/// Polls for the next stop of `tid` until `deadline` (waitpid has no timeout): a short
/// yielding spin first (a called function usually returns within microseconds), then naps
/// growing to 1 ms.
fn wait_until(tid: Pid, deadline: Instant) -> Result<Option<Stop>> {
    let t0 = Instant::now();
    let mut nap = Duration::from_micros(10);
    loop {
        if let Some((_, s)) = wait(tid, true)? {
            return Ok(Some(s));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        if now - t0 < Duration::from_micros(100) {
            std::thread::yield_now();
        } else {
            std::thread::sleep(nap.min(deadline - now));
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }
}
