//! `record --route ptrace`: a recorder thread starts the program under ptrace and a
//! seccomp filter, and owns every process it becomes (clone, fork, vfork and exec are
//! followed): it takes all their stops and exits (`waitpid(-1, __WALL | __WNOTHREAD)`:
//! ptrace stops are the tracer thread's alone), so the recorder's main loop reaps only
//! its own children (`__WNOTHREAD` too: orphans handed to the subreaper); it reads how the
//! program ended, and whether every descendant is gone, from [`Supervisor`].

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mmio_trace_ring::Shm;
use mmio_trace_tracer::rules::Rules;

use mmio_trace_ptrace::{self as pt, Event, Options, Regs, Stop};

use super::{sys, Session, Signal};
use crate::Exit;

/// What the supervisor thread tells the recorder's main loop.
#[derive(Default)]
pub(crate) struct Shared {
    /// How the program (the first process) ended.
    pub exit: Mutex<Option<Exit>>,
    /// Every traced process is gone (and reaped).
    pub done: AtomicBool,
}

/// The supervisor of a program started under the ptrace route.
pub(crate) struct Supervisor {
    /// The program's pid.
    pub pid: i32,
    /// Its state, as the supervisor thread publishes it.
    pub shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    /// How the program ended, once it has.
    pub fn exit(&self) -> Option<Exit> {
        *self.shared.exit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether every traced process has ended.
    pub fn done(&self) -> bool {
        self.shared.done.load(Ordering::Acquire)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What to run: the resolved program path, its arguments and environment, and where its
/// standard output goes (`None`: inherited).
pub(crate) struct Start {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub stdout: Option<OwnedFd>,
}

/// `PTRACE_O_*` options of every traced process. `EXITKILL`: if the recorder is killed,
/// so is the program (it could not run on: its device pages trap into a tracer that is
/// gone, and its filter's `SECCOMP_RET_TRACE` calls would fail with `ENOSYS`).
pub(crate) const OPTIONS: Options = Options(
    Options::TRACECLONE.0
        | Options::TRACEFORK.0
        | Options::TRACEVFORK.0
        | Options::TRACEEXEC.0
        | Options::TRACESECCOMP.0
        | Options::TRACESYSGOOD.0
        | Options::EXITKILL.0,
);

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_DATA` of the stops for 32-bit (`int 0x80`) calls of the mmap family.
const DATA_I386: u32 = 1;
/// `SECCOMP_RET_DATA` of the stops for calls handed a buffer.
const DATA_BUFFER: u32 = 2;

/// A filter's list of x86-64 calls that stop with `data`: `nr == k` tests, then ALLOW,
/// then `TRACE | data`.
fn section(nrs: &[u32], data: u32) -> Vec<libc::sock_filter> {
    let mut v: Vec<libc::sock_filter> = nrs
        .iter()
        .enumerate()
        .map(|(i, &k)| libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            // To the TRACE after the ALLOW that follows the last test.
            jt: (nrs.len() - i) as u8,
            jf: 0,
            k,
        })
        .collect();
    v.push(ret(SECCOMP_RET_ALLOW));
    v.push(ret(SECCOMP_RET_TRACE | data));
    v
}

fn ld(off: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: off,
    }
}

fn ret(k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The seccomp filter every traced program starts with: `SECCOMP_RET_TRACE` for `mmap`,
/// `mprotect`, `munmap`, `mremap` of the x86-64 ABI (data 0); the same calls of the i386
/// ABI (`int 0x80`: `mmap`, `mmap2`, `munmap`, `mremap`, `mprotect`) stop with data
/// [`DATA_I386`], for the supervisor to say they are not traced (the emulator is x86-64
/// only); the x32 ABI and everything else is allowed. The calls handed buffers get their
/// own filter ([`buffer_filter`]) once a process has a device mapping.
pub(crate) fn filter() -> Vec<libc::sock_filter> {
    let mmap64 = section(&super::TRAPPED_SYSCALLS, 0);
    let i386 = section(&[90, 192, 91, 163, 125], DATA_I386);
    let mut v = vec![
        ld(4),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            // Not x86-64: past `ld nr`, the x32 test and the x86-64 list.
            jf: (2 + mmap64.len()) as u8,
            k: AUDIT_ARCH_X86_64,
        },
        ld(0),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
            // x32: the list's ALLOW.
            jt: (mmap64.len() - 2) as u8,
            jf: 0,
            k: 0x4000_0000,
        },
    ];
    v.extend_from_slice(&mmap64);
    v.push(ld(0));
    v.extend_from_slice(&i386);
    v
}

/// The filter a process gets with its first device mapping (stacked on [`filter`]: seccomp
/// runs both): `SECCOMP_RET_TRACE` with data [`DATA_BUFFER`] for the x86-64 calls of
/// [`super::BUFFER_SYSCALLS`], whose buffers may lie in device memory. Processes that map
/// no device never stop for them.
pub(crate) fn buffer_filter() -> Vec<libc::sock_filter> {
    let bufs = section(&super::BUFFER_SYSCALLS, DATA_BUFFER);
    let mut v = vec![
        ld(4),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            // Not x86-64: to the list's ALLOW.
            jf: (2 + bufs.len() - 2) as u8,
            k: AUDIT_ARCH_X86_64,
        },
        ld(0),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
            jt: (bufs.len() - 2) as u8,
            jf: 0,
            k: 0x4000_0000,
        },
    ];
    v.extend_from_slice(&bufs);
    v
}

/// `CAP_SYS_ADMIN`'s bit in `CapEff`.
const CAP_SYS_ADMIN: u32 = 21;

/// Whether the recorder has `CAP_SYS_ADMIN`.
fn has_sys_admin() -> bool {
    crate::has_capability("self", CAP_SYS_ADMIN)
}

/// Starts the program under the supervisor thread; returns once it has exec'd (or could
/// not: the error of its `execve`, or of installing the filter).
pub(crate) fn start(start: Start, shm: Shm, rules: Rules) -> io::Result<Supervisor> {
    let (tx, rx) = std::sync::mpsc::channel::<io::Result<i32>>();
    let shared = Arc::new(Shared::default());
    let sh = shared.clone();
    let thread = std::thread::Builder::new()
        .name("mmio-trace-ptrace".into())
        .spawn(move || supervise(start, shm, rules, tx, sh))?;
    let pid = match rx.recv() {
        Ok(Ok(pid)) => pid,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            return Err(io::Error::other("the ptrace supervisor ended"));
        }
    };
    Ok(Supervisor {
        pid,
        shared,
        thread: Some(thread),
    })
}

/// The child between fork and exec: async-signal-safe calls only. Reports a failure as
/// (stage, errno) on `report` and exits.
fn child(
    start: &Start,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    prog: &libc::sock_fprog,
    report: i32,
    nnp: bool,
) -> ! {
    let fail = |stage: u8| -> ! {
        let e = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let mut b = [stage, 0, 0, 0, 0];
        b[1..].copy_from_slice(&e.to_le_bytes());
        // SAFETY: writing a local buffer to our pipe, then leaving.
        unsafe {
            libc::write(report, b.as_ptr().cast(), b.len());
            libc::_exit(if stage == 0 { 127 } else { 126 });
        }
    };
    // SAFETY: plain system calls on our own process and descriptors; every pointer is to
    // data built before the fork and alive in this copy of the address space.
    unsafe {
        if let Some(fd) = &start.stdout {
            use std::os::fd::AsRawFd;
            libc::dup2(fd.as_raw_fd(), 1);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // The filter needs no_new_privs unless we have CAP_SYS_ADMIN. It takes nothing
        // from a ptraced program: the kernel already grants no set-uid, set-gid or file
        // capabilities at the exec of a program traced by an unprivileged tracer (and a
        // tracer with CAP_SYS_ADMIN skips it, so set-uid programs keep working as root).
        if nnp && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(1);
        }
        // Wait here until the supervisor has seized us: the filter's RET_TRACE calls
        // must find their tracer.
        libc::kill(libc::getpid(), libc::SIGSTOP);
        if libc::syscall(libc::SYS_seccomp, 1 /* SET_MODE_FILTER */, 0, prog) != 0 {
            fail(1);
        }
        libc::execve(start.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    fail(0)
}

/// Ends the supervision whatever happens: a supervisor thread that panicked (a bug)
/// leaves the program killed (`EXITKILL`, its tracer gone) and says so, and the recorder
/// finishes the log instead of waiting for ever.
struct Ending(Arc<Shared>);

impl Drop for Ending {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("mmio-trace: the ptrace supervisor failed; the program was killed");
            let mut e = self.0.exit.lock().unwrap_or_else(|e| e.into_inner());
            e.get_or_insert(Exit::Signal(libc::SIGKILL));
        }
        self.0.done.store(true, Ordering::Release);
    }
}

fn supervise(
    start: Start,
    shm: Shm,
    rules: Rules,
    tx: std::sync::mpsc::Sender<io::Result<i32>>,
    shared: Arc<Shared>,
) {
    let _ending = Ending(shared.clone());
    let mut fds = [0i32; 2];
    // SAFETY: plain pipe2 into a local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        let _ = tx.send(Err(io::Error::last_os_error()));
        shared.done.store(true, Ordering::Release);
        return;
    }
    // SAFETY: fresh descriptors we own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let code = filter();
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr() as *mut libc::sock_filter,
    };
    let nnp = !has_sys_admin();
    // Built before the fork: the child of a threaded process must not allocate.
    let mut argv: Vec<*const libc::c_char> = start.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = start.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: fork; the child runs `child` only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let _ = tx.send(Err(io::Error::last_os_error()));
        shared.done.store(true, Ordering::Release);
        return;
    }
    if pid == 0 {
        use std::os::fd::AsRawFd;
        child(&start, &argv, &envp, &prog, wr.as_raw_fd(), nnp);
    }
    drop(wr);
    fn failed(tx: &std::sync::mpsc::Sender<io::Result<i32>>, rd: &OwnedFd) {
        use std::os::fd::AsRawFd;
        let mut b = [0u8; 5];
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(rd.as_raw_fd(), b.as_mut_ptr().cast(), 5) };
        let e = if n == 5 {
            let errno = i32::from_le_bytes([b[1], b[2], b[3], b[4]]);
            let e = io::Error::from_raw_os_error(errno);
            if b[0] == 1 {
                io::Error::new(
                    e.kind(),
                    format!("cannot install the seccomp filter of the ptrace route: {e}"),
                )
            } else {
                e
            }
        } else {
            io::Error::other("the program ended before it could start")
        };
        let _ = tx.send(Err(e));
    }
    // The child stops itself before installing its filter.
    let mut st = 0;
    // SAFETY: plain waitpid for our own child (not yet traced: WUNTRACED sees its stop).
    let r = unsafe { libc::waitpid(pid, &mut st, libc::WUNTRACED | libc::__WNOTHREAD) };
    match r {
        _ if r == pid && libc::WIFSTOPPED(st) => {}
        _ => {
            failed(&tx, &rd);
            shared.done.store(true, Ordering::Release);
            return;
        }
    }
    if let Err(e) = pt::seize(pid, OPTIONS) {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = pt::wait(pid, false);
        let msg = format!("cannot trace the program with ptrace: {e}");
        let _ = tx.send(Err(io::Error::new(io::ErrorKind::PermissionDenied, msg)));
        shared.done.store(true, Ordering::Release);
        return;
    }
    // SAFETY: our own child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    drop(argv);
    drop(envp);
    drop(start);
    let mut s = Session::new(shm, rules);
    s.set_buffer_filter(buffer_filter());
    s.add_thread(pid, pid);
    run_loop(
        &mut s,
        pid,
        &shared,
        Some(Box::new(move |r: Result<i32, ()>| match r {
            Ok(pid) => {
                let _ = tx.send(Ok(pid));
            }
            Err(()) => failed(&tx, &rd),
        })),
    );
}

/// Called once the first process has exec'd (`Ok(pid)`), or has ended before it could
/// (`Err`).
pub(crate) type Started = Box<dyn FnOnce(Result<i32, ()>)>;

/// The supervisor's loop: takes every stop and exit of this thread's tracees (`pid` the
/// first process, already seized with [`OPTIONS`] and known to `s`) until none is left;
/// publishes `pid`'s exit status and the end in `shared`. `started`: told when `pid`
/// first execs (`None`: it runs already).
pub(crate) fn run_loop(s: &mut Session, pid: i32, shared: &Shared, mut started: Option<Started>) {
    let mut early: Vec<i32> = Vec::new();
    let mut fresh: Vec<i32> = Vec::new();
    let mut warned_i386: Vec<i32> = Vec::new();
    loop {
        let (tid, stop) = match s.take_deferred() {
            Some(d) => d,
            None => match pt::wait(-1, false) {
                Ok(Some(w)) => w,
                // ECHILD: every descendant is gone.
                _ => break,
            },
        };
        let _ = match stop {
            Stop::Exited(_) | Stop::Killed { .. } => {
                if tid == pid {
                    let e = match stop {
                        Stop::Killed { signal, .. } => Exit::Signal(signal),
                        Stop::Exited(code) => Exit::Code(code),
                        _ => Exit::Code(0),
                    };
                    if let Some(f) = started.take() {
                        // It never exec'd: the start failed.
                        f(Err(()));
                        shared.done.store(true, Ordering::Release);
                        return;
                    }
                    *shared.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
                s.thread_gone(tid);
                Ok(())
            }
            Stop::Event(Event::Seccomp { data }) => {
                seccomp_stop(s, tid, data, &mut warned_i386);
                pt::cont(tid, 0)
            }
            Stop::Event(Event::Clone { new } | Event::Fork { new } | Event::Vfork { new }) => {
                if let Some(parent) = s.pid_of(tid) {
                    let thread = matches!(stop, Stop::Event(Event::Clone { .. }))
                        && sys::tgid_of(new).is_some_and(|g| g == parent);
                    if thread {
                        s.add_thread(parent, new);
                    } else {
                        s.fork(parent, new);
                    }
                    if let Some(k) = early.iter().position(|&t| t == new) {
                        early.remove(k);
                        let _ = pt::cont(new, 0);
                    } else {
                        fresh.push(new);
                    }
                }
                pt::cont(tid, 0)
            }
            Stop::Event(Event::Exec { former_tid }) => {
                if former_tid != tid {
                    s.thread_gone(former_tid);
                }
                s.exec(tid);
                if tid == pid {
                    if let Some(f) = started.take() {
                        f(Ok(pid));
                    }
                }
                pt::cont(tid, 0)
            }
            Stop::Interrupt | Stop::Group { .. } if !s.knows(tid) => {
                // A new tracee's first stop before its parent's event: it waits for it.
                early.push(tid);
                Ok(())
            }
            Stop::Interrupt | Stop::Group { .. } if fresh.contains(&tid) => {
                fresh.retain(|&t| t != tid);
                pt::cont(tid, 0)
            }
            // Group-stop: stays stopped, job control goes on (SIGCONT ends it).
            Stop::Group { .. } => pt::listen(tid),
            Stop::Signal {
                signal,
                info: Some(info),
            } => match s.on_signal(tid, info.raw()) {
                Signal::Handled => pt::cont(tid, 0),
                Signal::Deliver(n) => {
                    // A signal the program ignores still stops a traced thread, which
                    // breaks off epoll_wait & co. with EINTR: they resume as natively.
                    let _ = pt::restart_interrupted_call(tid);
                    pt::cont(tid, if n == 0 { signal } else { n })
                }
            },
            Stop::Signal { signal, info: None } => {
                let _ = pt::restart_interrupted_call(tid);
                pt::cont(tid, signal)
            }
            Stop::Interrupt | Stop::Event(_) | Stop::Syscall => pt::cont(tid, 0),
        };
    }
    if let Some(f) = started.take() {
        f(Err(()));
    }
    shared.done.store(true, Ordering::Release);
}

/// A seccomp stop (a call of the mmap family entering): runs it to its exit and updates
/// the session.
fn seccomp_stop(s: &mut Session, tid: i32, data: u16, warned_i386: &mut Vec<i32>) {
    let Ok(regs) = Regs::read(tid) else { return };
    let regs = *regs.user();
    if u32::from(data) == DATA_I386 {
        let pid = s.pid_of(tid).unwrap_or(tid);
        if !warned_i386.contains(&pid) {
            warned_i386.push(pid);
            let text = format!(
                "mmio-trace: NOT TRACED: process {pid} makes 32-bit (int 0x80) system calls of the mmap family (call {}); device mappings made so are not traced",
                regs.orig_rax
            );
            eprintln!("{text}");
            s.mark(tid, text.as_bytes());
        }
        return;
    }
    if u32::from(data) == DATA_BUFFER {
        let _ = s.buffer_call(tid, &regs);
        return;
    }
    if !s.syscall_entry(tid, &regs) || pt::syscall(tid, 0).is_err() {
        return;
    }
    match pt::wait_tid(tid) {
        Ok(Stop::Syscall) => {
            if let Ok(regs) = Regs::read(tid) {
                s.syscall_exit(tid, regs.user());
            }
        }
        // Anything else (killed meanwhile): the main loop's.
        Ok(other) => s.deferred.push((tid, other)),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    /// Runs the filter (the instructions it uses) on a call: the filter's return value.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        let data = |off: u32| match off {
            0 => nr,
            4 => arch,
            _ => panic!("load of offset {off}"),
        };
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            let code = u32::from(i.code);
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                a = data(i.k);
            } else if code == libc::BPF_RET | libc::BPF_K {
                return i.k;
            } else if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K {
                pc += usize::from(if a == i.k { i.jt } else { i.jf });
            } else if code == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K {
                pc += usize::from(if a >= i.k { i.jt } else { i.jf });
            } else {
                panic!("instruction {code:#x}");
            }
            pc += 1;
        }
    }

    #[test]
    fn the_filters_trap_exactly_the_calls_they_name() {
        let (f, b) = (super::filter(), super::buffer_filter());
        let x86_64 = super::AUDIT_ARCH_X86_64;
        let (trace, allow) = (super::SECCOMP_RET_TRACE, super::SECCOMP_RET_ALLOW);
        for nr in 0..460u32 {
            let want = if super::super::TRAPPED_SYSCALLS.contains(&nr) {
                trace
            } else {
                allow
            };
            assert_eq!(run(&f, x86_64, nr), want, "x86-64 call {nr}");
            let want = if super::super::BUFFER_SYSCALLS.contains(&nr) {
                trace | super::DATA_BUFFER
            } else {
                allow
            };
            assert_eq!(run(&b, x86_64, nr), want, "x86-64 call {nr} (buffers)");
            // The x32 ABI: allowed, whatever the number.
            assert_eq!(run(&f, x86_64, nr | 0x4000_0000), allow, "x32 call {nr}");
            assert_eq!(run(&b, x86_64, nr | 0x4000_0000), allow, "x32 call {nr}");
            let i386 = if [90, 192, 91, 163, 125].contains(&nr) {
                trace | super::DATA_I386
            } else {
                allow
            };
            assert_eq!(run(&f, 0x4000_0003, nr), i386, "i386 call {nr}");
            assert_eq!(run(&b, 0x4000_0003, nr), allow, "i386 call {nr} (buffers)");
        }
    }
}
