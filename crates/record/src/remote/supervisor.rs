//! `record --route ptrace`: a recorder thread starts the program under ptrace and a
//! seccomp filter, and owns every process it becomes (clone, fork, vfork and exec are
//! followed): it takes all their stops and exits (`waitpid(-1, __WALL)`), so the
//! recorder's main loop must reap nothing itself; it reads how the program ended, and
//! whether every descendant is gone, from [`Supervisor`].

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mmio_trace_ring::Shm;
use mmio_trace_tracer::rules::Rules;

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
const OPTIONS: i32 = libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_TRACESECCOMP
    | libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_EXITKILL;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_DATA` of the stops for 32-bit (`int 0x80`) calls of the mmap family.
const DATA_I386: u32 = 1;

/// The seccomp filter: `SECCOMP_RET_TRACE` for `mmap`, `mprotect`, `munmap`, `mremap` of
/// the x86-64 ABI; the same calls of the i386 ABI (`int 0x80`: `mmap`, `mmap2`, `munmap`,
/// `mremap`, `mprotect`) trap with data 1, for the supervisor to say they are not traced
/// (the emulator is x86-64 only); the x32 ABI and everything else is allowed.
fn filter() -> Vec<libc::sock_filter> {
    let st = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let j = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ld = |off: u32| st(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, off);
    let ret = |k: u32| st(libc::BPF_RET | libc::BPF_K, k);
    let [mmap, mprotect, munmap, mremap] = super::TRAPPED_SYSCALLS;
    vec![
        /* 0 */ ld(4), // arch
        /* 1 */ j(AUDIT_ARCH_X86_64, 0, 8), // else -> 10
        /* 2 */ ld(0), // nr
        /* 3 */
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
            jt: 5, // x32 -> 9
            jf: 0,
            k: 0x4000_0000,
        },
        /* 4 */ j(mmap, 3, 0),
        /* 5 */ j(mprotect, 2, 0),
        /* 6 */ j(munmap, 1, 0),
        /* 7 */ j(mremap, 0, 1),
        /* 8 */ ret(SECCOMP_RET_TRACE),
        /* 9 */ ret(SECCOMP_RET_ALLOW),
        /* 10 */ ld(0),
        /* 11 */ j(90, 4, 0),
        /* 12 */ j(192, 3, 0),
        /* 13 */ j(91, 2, 0),
        /* 14 */ j(163, 1, 0),
        /* 15 */ j(125, 0, 1),
        /* 16 */ ret(SECCOMP_RET_TRACE | DATA_I386),
        /* 17 */ ret(SECCOMP_RET_ALLOW),
    ]
}

/// Whether the recorder has `CAP_SYS_ADMIN` (bit 21 of `CapEff`).
fn has_sys_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|c| c & (1 << 21) != 0)
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

fn supervise(
    start: Start,
    shm: Shm,
    rules: Rules,
    tx: std::sync::mpsc::Sender<io::Result<i32>>,
    shared: Arc<Shared>,
) {
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
    let failed = |tx: &std::sync::mpsc::Sender<io::Result<i32>>, rd: &OwnedFd| {
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
    };
    // The child stops itself before installing its filter.
    match sys::wait(pid, libc::WUNTRACED) {
        Ok((_, st)) if libc::WIFSTOPPED(st) => {}
        _ => {
            failed(&tx, &rd);
            shared.done.store(true, Ordering::Release);
            return;
        }
    }
    if let Err(e) = sys::seize(pid, OPTIONS) {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = sys::wait(pid, 0);
        let msg = format!(
            "cannot trace the program with ptrace ({e}): see /proc/sys/kernel/yama/ptrace_scope, or run the recorder with CAP_SYS_PTRACE"
        );
        let _ = tx.send(Err(io::Error::new(e.kind(), msg)));
        shared.done.store(true, Ordering::Release);
        return;
    }
    // SAFETY: our own child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    drop(argv);
    drop(envp);
    drop(start);
    let mut s = Session::new(shm, rules);
    s.add_thread(pid, pid);
    let mut tx = Some(tx);
    let mut early: Vec<i32> = Vec::new();
    let mut fresh: Vec<i32> = Vec::new();
    let mut warned_i386: Vec<i32> = Vec::new();
    loop {
        let (tid, st) = match s.take_deferred() {
            Some(d) => d,
            None => match sys::wait(-1, 0) {
                Ok(w) => w,
                Err(_) => break, // ECHILD: every descendant is gone
            },
        };
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            if tid == pid {
                let e = if libc::WIFSIGNALED(st) {
                    Exit::Signal(libc::WTERMSIG(st))
                } else {
                    Exit::Code(libc::WEXITSTATUS(st))
                };
                if let Some(tx) = tx.take() {
                    // It never exec'd: the start failed.
                    failed(&tx, &rd);
                    shared.done.store(true, Ordering::Release);
                    return;
                }
                *shared.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
            s.thread_gone(tid);
            continue;
        }
        if !libc::WIFSTOPPED(st) {
            continue;
        }
        let sig = libc::WSTOPSIG(st);
        let event = st >> 16;
        let _ = match event {
            libc::PTRACE_EVENT_SECCOMP => {
                seccomp_stop(&mut s, tid, &mut warned_i386);
                sys::cont(tid, 0)
            }
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                if let (Ok(new), Some(parent)) = (sys::event_msg(tid), s.pid_of(tid)) {
                    let new = new as i32;
                    let thread = event == libc::PTRACE_EVENT_CLONE
                        && sys::tgid_of(new).is_some_and(|g| g == parent);
                    if thread {
                        s.add_thread(parent, new);
                    } else {
                        s.fork(parent, new);
                    }
                    if let Some(k) = early.iter().position(|&t| t == new) {
                        early.remove(k);
                        let _ = sys::cont(new, 0);
                    } else {
                        fresh.push(new);
                    }
                }
                sys::cont(tid, 0)
            }
            libc::PTRACE_EVENT_EXEC => {
                if let Ok(former) = sys::event_msg(tid) {
                    if former as i32 != tid {
                        s.thread_gone(former as i32);
                    }
                }
                s.exec(tid);
                if tid == pid {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(pid));
                    }
                }
                sys::cont(tid, 0)
            }
            libc::PTRACE_EVENT_STOP => {
                if !s.knows(tid) {
                    // A new tracee's first stop before its parent's event: it waits.
                    early.push(tid);
                    Ok(())
                } else if let Some(k) = fresh.iter().position(|&t| t == tid) {
                    fresh.remove(k);
                    sys::cont(tid, 0)
                } else if matches!(
                    sig,
                    libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                ) {
                    // Group-stop: stays stopped, job control goes on (SIGCONT ends it).
                    sys::listen(tid)
                } else {
                    sys::cont(tid, 0)
                }
            }
            _ if sig == libc::SIGTRAP | 0x80 => sys::cont(tid, 0),
            _ => match sys::siginfo(tid) {
                Ok(si) => match s.on_signal(tid, &si) {
                    Signal::Handled => sys::cont(tid, 0),
                    Signal::Deliver(n) => sys::cont(tid, n),
                },
                Err(_) => sys::cont(tid, sig),
            },
        };
    }
    if let Some(tx) = tx.take() {
        failed(&tx, &rd);
    }
    shared.done.store(true, Ordering::Release);
}

/// A seccomp stop (a call of the mmap family entering): runs it to its exit and updates
/// the session.
fn seccomp_stop(s: &mut Session, tid: i32, warned_i386: &mut Vec<i32>) {
    let Ok(regs) = sys::get_regs(tid) else { return };
    if sys::event_msg(tid).is_ok_and(|d| d == u64::from(DATA_I386)) {
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
    if !s.syscall_entry(tid, &regs) {
        return;
    }
    if sys::syscall(tid, 0).is_err() {
        return;
    }
    let Ok((_, st)) = sys::wait(tid, 0) else {
        return;
    };
    if libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == libc::SIGTRAP | 0x80 {
        if let Ok(regs) = sys::get_regs(tid) {
            s.syscall_exit(tid, &regs);
        }
    } else {
        // Anything else (killed meanwhile): the main loop's.
        s.deferred.push((tid, st));
    }
}
