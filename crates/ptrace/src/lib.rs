//! ptrace process control for mmio-trace's ptrace route and `record --pid`.
//!
//! Small, synchronous primitives over Linux x86-64 `ptrace(2)`:
//!
//! - threads: [`seize`], [`interrupt`], [`cont`], [`syscall`], [`singlestep`], [`listen`],
//!   [`detach`], and [`wait`], which decodes every stop into a [`Stop`]; [`threads_of`] and
//!   [`seize_all`] take a whole running process;
//! - registers: [`Regs`] (general registers plus the XSAVE area, read lazily, written back only
//!   when changed), which implements [`mmio_trace_x86::Cpu`] so the emulator runs on a stopped
//!   thread directly;
//! - memory: [`read_mem`], [`write_mem`] and the cached per-process handle [`Mem`];
//! - syscall injection: [`Process::inject_syscall`] runs one system call inside a stopped
//!   thread and leaves it exactly as it was, including a thread stopped inside a blocking call
//!   (the call resumes as if never interrupted: no `EINTR`, no errno 516), plus
//!   `remote_mmap`/`remote_mprotect`/`remote_munmap`/`remote_close`;
//! - loading and calling code: [`Process::load_image`] maps a freestanding ELF static-pie
//!   blob into a stopped process (final protections at once, never W+X, only anonymous
//!   mappings), [`Process::call`] runs one of its functions in a stopped thread and restores
//!   it as `inject_syscall` does;
//! - permissions: [`check_attach`] explains in advance why attaching would fail, with what
//!   to change, and [`seize`] maps `EPERM` to the same explanation;
//! - [`pidfd_getfd`]: a duplicate of another process's file descriptor.
//!
//! ```text
//! check_attach(pid)?;                         // Err says what to change (Yama, uid, tracer…)
//! let stops = seize_all(pid, Options::TRACECLONE | Options::TRACESYSGOOD)?;
//! let mut proc = Process::new(pid);
//! let addr = proc.remote_mmap(pid, 0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)?;
//! let mut regs = Regs::read(pid)?;            // regs.vec(3) reads YMM3 etc. (Cpu trait)
//! for (tid, _) in stops { detach(tid, 0)?; }
//! ```
//!
//! Every function works on thread ids (`tid`); a process's main thread has tid = pid. All
//! calls must come from the thread that seized the tracee (a ptrace rule); [`wait`] sees only
//! the calling thread's tracees, so several tracer threads can share a process.
//!
//! Stopping a thread breaks off a system call it is blocked in. The kernel restarts most
//! calls by itself when the thread resumes (and [`Process::inject_syscall`] keeps that
//! working); the few that return plain `EINTR` instead (`epoll_wait` and the others of
//! [`EINTR_ON_ANY_WAKEUP`]) are made to restart by [`restart_interrupted_call`], which
//! [`seize_all`] applies and a caller applies after its own [`interrupt`]. `NOTES.md` in the
//! crate has the kernel facts behind this.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod attach;
mod call;
mod error;
mod image;
mod inject;
mod mem;
mod pidfd;
mod regs;
mod stop;
mod sys;
mod thread;

pub use attach::{check_attach, diagnose, AttachError, AttachFacts};
pub use call::CallOptions;
pub use error::{Error, Result};
pub use image::{Blob, Image, ImageFile, LoadOptions, Segment};
pub use inject::{
    restart_interrupted_call, Process, RequeuedSignal, SyscallSite, EINTR_ON_ANY_WAKEUP,
};
pub use mem::{read_mem, write_mem, Mem};
pub use pidfd::{pidfd_getfd, pidfd_open};
pub use regs::Regs;
pub use stop::{
    decode, queued_signals, syscall_stop, wait, wait_tid, Event, SigInfo, Stop, SyscallStop,
};
pub use thread::{
    cont, detach, interrupt, listen, seize, seize_all, singlestep, syscall, threads_of, Options,
};

/// A process or thread id, as the kernel numbers it (`pid_t`).
pub type Pid = libc::pid_t;
