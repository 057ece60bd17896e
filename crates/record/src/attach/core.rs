//! `record --pid --route inject`: the tracer's own fault-path core (the blob of the inject
//! route) is put into the running process by ptrace, started there, and the process is
//! let go: its device accesses are then completed in process, at the preload route's
//! cost, with no ptrace stop. No seccomp filter goes in (one could never be removed): the
//! core finds the process's device mappings in `/proc/self/maps`, at start and every few
//! milliseconds (`tracer::attached`), so an access to a mapping made since the last
//! look is not traced.
//!
//! The recording's shared memory reaches the process over a Unix socket (`SCM_RIGHTS`,
//! the calls injected), so it works whoever owns the process; failing that (another
//! network namespace), the core opens the recorder's descriptors by their `/proc` path.
//!
//! Leaving: every thread is seized again; the core stops tracing (each traced page gets
//! the program's protection back); the threads run a moment at a time until none is
//! inside the core (a handler, an out-of-line slot, a single step, a queued fault, the
//! helper thread; a handler a program handler left with `siglongjmp` no longer counts);
//! then each thread gives its block back (and gets its own alternate stack back), the
//! program's signal actions are put back, the core's memory (aliases, shared memory,
//! descriptors, heap, tables, the helper's stack, then its image) is unmapped, and the
//! threads are let go: nothing of it is left. A core that cannot be made quiet within
//! 2 s (a thread held in a program handler the core called) stays in the process,
//! inactive, with the program's signal actions back.
//!
//! Every remote call and injected system call runs with SIGTRAP unblocked in its thread
//! ([`trap_open`]), and only once no thread has a fault queued.
//!
//! The process's end is seen through its pidfd; its exit status comes from the kernel's
//! process connector when the recorder may listen to it (root), else from
//! `/proc/PID/stat` while the process is a zombie (its parent may reap it first).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use mmio_trace_ptrace as pt;

use super::{session, Ended, Started, Target};
use crate::inject::{Params, BASE};
use crate::{agent, Error, Exit};

/// What the tracer thread needs.
pub(super) struct Setup {
    pub target: Target,
    /// The core's settings (rules, the recorder's paths), without the descriptors.
    pub params: Params,
    /// The recording's memfd and the read end of its liveness pipe.
    pub fds: [RawFd; 2],
    /// How many device mappings the process holds now (for the attach MARK).
    pub maps: usize,
    /// How often the core looks for new device mappings (ms; 0: never).
    pub poll_ms: u64,
}

const SYS_CLOSE: i64 = 3;
const SYS_SOCKET: i64 = 41;
const SYS_CONNECT: i64 = 42;
const SYS_RECVMSG: i64 = 47;
const SYS_FCNTL: i64 = 72;

/// How a seized thread is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An interrupt stop (or an injected call's stop): calls may run in it.
    Interrupt,
    /// A group-stop (the process is stopped): left alone, detached as it is.
    Group,
}

/// The seized threads of the process.
struct Threads {
    pid: i32,
    held: BTreeMap<i32, Kind>,
}

fn os(e: pt::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// One stop of any seized thread (blocking), decoded.
fn wait_any() -> Option<(i32, pt::Stop)> {
    loop {
        let mut st = 0;
        // SAFETY: plain waitpid into a local.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::__WALL | libc::__WNOTHREAD) };
        if r > 0 {
            return Some((r, pt::decode(r, st)));
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

impl Threads {
    /// Seizes every thread of `pid` and brings each to an interrupt or group stop (a
    /// signal a thread was stopped for is delivered on the way). `follow`: threads
    /// created meanwhile are seized too (not while the core goes in: its helper thread
    /// must run free).
    fn seize(pid: i32, follow: bool) -> Result<Threads, pt::Error> {
        let opts = if follow {
            pt::Options::TRACECLONE
        } else {
            pt::Options(0)
        };
        let stops = pt::seize_all(pid, opts)?;
        let mut t = Threads {
            pid,
            held: BTreeMap::new(),
        };
        let mut pending = BTreeSet::new();
        for (tid, stop) in stops {
            match stop {
                pt::Stop::Group { .. } => {
                    t.held.insert(tid, Kind::Group);
                }
                pt::Stop::Signal { signal, .. } => {
                    if pt::cont(tid, signal).is_ok() && pt::interrupt(tid).is_ok() {
                        pending.insert(tid);
                    }
                }
                _ => {
                    t.held.insert(tid, Kind::Interrupt);
                }
            }
        }
        t.gather(pending);
        Ok(t)
    }

    /// Waits for each of `pending` (resumed, with an interrupt asked for) to stop,
    /// delivering signals and following new threads on the way.
    fn gather(&mut self, mut pending: BTreeSet<i32>) {
        while !pending.is_empty() {
            let Some((tid, stop)) = wait_any() else {
                return;
            };
            if stop.is_gone() {
                pending.remove(&tid);
                self.held.remove(&tid);
                continue;
            }
            match stop {
                pt::Stop::Interrupt => {
                    pending.remove(&tid);
                    self.held.insert(tid, Kind::Interrupt);
                }
                pt::Stop::Group { .. } => {
                    pending.remove(&tid);
                    self.held.insert(tid, Kind::Group);
                }
                pt::Stop::Signal { signal, .. } => {
                    let _ = pt::cont(tid, signal);
                    let _ = pt::interrupt(tid);
                    pending.insert(tid);
                }
                pt::Stop::Event(pt::Event::Clone { new }) => {
                    // The new thread's first stop is an interrupt stop of its own.
                    if !self.held.contains_key(&new) {
                        pending.insert(new);
                    }
                    let _ = pt::cont(tid, 0);
                    let _ = pt::interrupt(tid);
                    pending.insert(tid);
                }
                _ => {
                    let _ = pt::cont(tid, 0);
                    let _ = pt::interrupt(tid);
                    pending.insert(tid);
                }
            }
        }
    }

    /// Lets every thread held in an interrupt stop run for `d`, then holds them again.
    fn run_for(&mut self, d: Duration) {
        self.run_some_for(|_| true, d);
    }

    /// As [`Threads::run_for`], for the threads `which` accepts only (the others stay
    /// held).
    fn run_some_for(&mut self, which: impl Fn(i32) -> bool, d: Duration) {
        let running: BTreeSet<i32> = self
            .held
            .iter()
            .filter(|(&t, &k)| k == Kind::Interrupt && which(t))
            .map(|(&t, _)| t)
            .filter(|&t| pt::cont(t, 0).is_ok())
            .collect();
        std::thread::sleep(d);
        for &t in &running {
            let _ = pt::interrupt(t);
        }
        self.gather(running);
    }

    /// A thread to run calls in: one in an interrupt stop, the process's main thread
    /// first.
    fn caller(&self) -> Option<i32> {
        if self.held.get(&self.pid) == Some(&Kind::Interrupt) {
            return Some(self.pid);
        }
        self.held
            .iter()
            .find(|(_, &k)| k == Kind::Interrupt)
            .map(|(&t, _)| t)
    }

    /// A thread to run calls in, as [`Threads::caller`], once no thread has a fault
    /// queued: one would be taken in the middle of a call in that thread and fail it (a
    /// program's own fault, or a step's trap, the kernel queued as the stop came), and
    /// one left for later would reach the core's handlers after the calls changed their
    /// state. Until then the threads run a moment at a time (1 s at most; then a thread
    /// with none, if any). `None`: no thread is in an interrupt stop.
    fn clear_caller(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let queued: Vec<i32> = self
                .held
                .iter()
                .filter(|(&t, &k)| k == Kind::Interrupt && fault_queued(t))
                .map(|(&t, _)| t)
                .collect();
            if queued.is_empty() {
                return self.caller();
            }
            if Instant::now() >= deadline {
                return self
                    .held
                    .iter()
                    .find(|(t, &k)| k == Kind::Interrupt && !queued.contains(t))
                    .map(|(&t, _)| t);
            }
            self.run_for(Duration::from_millis(1));
        }
    }

    /// Lets every thread go, each where it was: a call our stop broke off restarts.
    fn detach(&mut self) {
        for (&tid, &k) in &self.held {
            if k == Kind::Interrupt {
                let _ = pt::restart_interrupted_call(tid);
            }
            let _ = pt::detach(tid, 0);
        }
        self.held.clear();
    }
}

/// Whether signal `sig` is blocked in thread `tid` (`SigBlk` in its status).
fn blocks(pid: i32, tid: i32, sig: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|m| m & (1 << (sig - 1)) != 0)
}

/// A SIGSEGV, SIGTRAP, SIGBUS, SIGILL or SIGFPE queued for thread `tid` and not yet
/// taken (a fault of the core's to finish before it can go).
fn fault_queued(tid: i32) -> bool {
    pt::queued_signals(tid).iter().any(|s| {
        matches!(
            s.signo(),
            libc::SIGSEGV | libc::SIGTRAP | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
        )
    })
}

/// Hands the recorder's descriptors `fds` to the process (thread `tid` stopped): a socket
/// connected (by injected calls) to a listener of ours, `SCM_RIGHTS`, the numbers moved
/// to 200 and up, close-on-exec (an exec'd image has no core). Their numbers there.
fn send_fds(proc: &mut pt::Process, tid: i32, fds: &[RawFd]) -> io::Result<Vec<i32>> {
    let name = format!(
        "mmio-trace-attach-{}-{}",
        std::process::id(),
        mmio_trace_ring::monotonic_ns()
    );
    // SAFETY: plain socket call.
    let l = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if l < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let l = unsafe { OwnedFd::from_raw_fd(l) };
    let mut addr = vec![0u8; 2 + 1 + name.len()];
    addr[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    addr[3..].copy_from_slice(name.as_bytes());
    // SAFETY: `addr` is a sockaddr_un of its length (abstract name).
    if unsafe { libc::bind(l.as_raw_fd(), addr.as_ptr().cast(), addr.len() as u32) } != 0
        // SAFETY: plain listen.
        || unsafe { libc::listen(l.as_raw_fd(), 1) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let scratch = proc.alloc_scratch(tid, 4096).map_err(os)?;
    let result = (|| {
        let call = |proc: &mut pt::Process, nr: i64, a: [u64; 6]| -> io::Result<i64> {
            let r = proc.inject_syscall(tid, nr, a).map_err(os)?;
            if r < 0 {
                return Err(io::Error::from_raw_os_error(-r as i32));
            }
            Ok(r)
        };
        proc.mem().write(scratch, &addr).map_err(os)?;
        let s = call(
            proc,
            SYS_SOCKET,
            [
                libc::AF_UNIX as u64,
                (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64,
                0,
                0,
                0,
                0,
            ],
        )?;
        let r = (|| {
            call(
                proc,
                SYS_CONNECT,
                [s as u64, scratch, addr.len() as u64, 0, 0, 0],
            )?;
            // SAFETY: accepting on our listener (the connection is queued already).
            let c = unsafe {
                libc::accept4(
                    l.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if c < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor we own.
            let c = unsafe { OwnedFd::from_raw_fd(c) };
            send_rights(&c, fds)?;
            // In the process: msghdr at +256, iovec at +512, one byte at +768, control
            // at +1024.
            let ctl_len = 64u64;
            let mut m = Vec::new();
            for v in [0u64, 0, scratch + 512, 1, scratch + 1024, ctl_len, 0] {
                m.extend_from_slice(&v.to_ne_bytes());
            }
            proc.mem().write(scratch + 256, &m).map_err(os)?;
            let mut iov = Vec::new();
            for v in [scratch + 768, 1u64] {
                iov.extend_from_slice(&v.to_ne_bytes());
            }
            proc.mem().write(scratch + 512, &iov).map_err(os)?;
            call(
                proc,
                SYS_RECVMSG,
                [
                    s as u64,
                    scratch + 256,
                    libc::MSG_CMSG_CLOEXEC as u64,
                    0,
                    0,
                    0,
                ],
            )?;
            let mut ctl = [0u8; 64];
            proc.mem().read(scratch + 1024, &mut ctl).map_err(os)?;
            let len = u64::from_ne_bytes(ctl[..8].try_into().expect("8 bytes")) as usize;
            let n = len.saturating_sub(16) / 4;
            if n != fds.len() {
                return Err(io::Error::other("the descriptors did not arrive"));
            }
            let mut out = Vec::new();
            for k in 0..n {
                let at = 16 + 4 * k;
                let fd = i32::from_ne_bytes(ctl[at..at + 4].try_into().expect("4 bytes"));
                let high = call(
                    proc,
                    SYS_FCNTL,
                    [fd as u64, libc::F_DUPFD_CLOEXEC as u64, 200, 0, 0, 0],
                );
                match high {
                    Ok(h) => {
                        let _ = call(proc, SYS_CLOSE, [fd as u64, 0, 0, 0, 0, 0]);
                        out.push(h as i32);
                    }
                    Err(_) => out.push(fd),
                }
            }
            Ok(out)
        })();
        let _ = call(proc, SYS_CLOSE, [s as u64, 0, 0, 0, 0, 0]);
        r
    })();
    let _ = proc.remote_munmap(tid, scratch, 4096);
    result
}

/// Sends one byte with `fds` attached over `c`.
fn send_rights(c: &OwnedFd, fds: &[RawFd]) -> io::Result<()> {
    let byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((fds.len() * 4) as u32) } as usize;
    let mut ctl = vec![0u64; space.div_ceil(8)];
    // SAFETY: plain data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` has a control buffer of `space` bytes, room for one header and the
    // descriptors.
    unsafe {
        let h = libc::CMSG_FIRSTHDR(&msg);
        (*h).cmsg_level = libc::SOL_SOCKET;
        (*h).cmsg_type = libc::SCM_RIGHTS;
        (*h).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(h).cast(), fds.len());
    }
    // SAFETY: a valid msghdr over live buffers.
    if unsafe { libc::sendmsg(c.as_raw_fd(), &msg, 0) } != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether process `pid` maps anything at `addr`.
fn mapped_at(pid: i32, addr: u64) -> bool {
    let want = format!("{addr:x}-");
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .is_ok_and(|m| m.lines().any(|l| l.starts_with(&want)))
}

/// Whether process `pid` executed a new program: its memory is there (a process on its
/// way out has none left, and its end is for the pidfd to tell) and the core's image
/// at `base` is not.
fn exec_seen(pid: i32, base: u64) -> bool {
    let want = format!("{base:x}-");
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .is_ok_and(|m| !m.trim().is_empty() && !m.lines().any(|l| l.starts_with(&want)))
}

/// The core put into the process and started.
struct Core {
    image: pt::Image,
    busy: u64,
    thread_busy: u64,
    thread_detach: u64,
    release: u64,
    detach_begin: u64,
    /// The descriptors it got, in the process (closed by it at release).
    fds: Vec<i32>,
}

fn sym(image: &pt::Image, name: &str) -> io::Result<u64> {
    image
        .sym(name)
        .ok_or_else(|| io::Error::other(format!("no {name} in the core")))
}

/// The signal mask of stopped thread `tid` (`PTRACE_GETSIGMASK`).
fn sigmask(tid: i32) -> Option<u64> {
    const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
    let mut m = 0u64;
    // SAFETY: the kernel writes 8 bytes into `m`.
    let r = unsafe { libc::ptrace(PTRACE_GETSIGMASK, tid, 8usize, &mut m) };
    (r == 0).then_some(m)
}

fn set_sigmask(tid: i32, m: u64) {
    const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
    // SAFETY: the kernel reads 8 bytes from `m`.
    unsafe { libc::ptrace(PTRACE_SETSIGMASK, tid, 8usize, &m) };
}

/// Runs `f` (calls and injected system calls in thread `tid`) with SIGTRAP unblocked in
/// that thread: a call returns through an `int3`, an injection may single-step, and the
/// kernel turns a SIGTRAP it raises while the thread blocks it into the default action,
/// for the whole process: the core's SIGTRAP handler would be gone, and the next single
/// step kill the program (the helper thread blocks every signal; a handler may too).
fn trap_open<R>(tid: i32, f: impl FnOnce() -> R) -> R {
    let bit = 1u64 << (libc::SIGTRAP - 1);
    match sigmask(tid) {
        Some(m) if m & bit != 0 => {
            set_sigmask(tid, m & !bit);
            let r = f();
            set_sigmask(tid, m);
            r
        }
        _ => f(),
    }
}

/// Loads the core into the process (thread `tid` stopped), hands it the recording's
/// descriptors and settings and starts it.
fn put_in(proc: &mut pt::Process, tid: i32, setup: &Setup) -> io::Result<Core> {
    let pid = setup.target.pid;
    // Another core (one left inactive by an earlier attach that could not remove it) may
    // hold the usual address.
    let base = (!mapped_at(pid, BASE)).then_some(BASE);
    let image = proc
        .load_image(tid, agent::BLOB, &pt::LoadOptions { base })
        .map_err(|e| io::Error::other(format!("loading the core: {e}")))?;
    let fail = |proc: &mut pt::Process, e: io::Error| {
        let _ = proc.unload_image(tid, &image);
        e
    };
    let fds = send_fds(proc, tid, &setup.fds).unwrap_or_default();
    let mut vars = setup.params.clone();
    let (fd, live) = match fds[..] {
        [fd, live] => (fd, live),
        _ => (-1, -1),
    };
    vars.0
        .push((mmio_trace_ring::ENV_FD.into(), fd.to_string()));
    vars.0
        .push((mmio_trace_ring::ENV_LIVE_FD.into(), live.to_string()));
    let mut bytes = vars.encode_with(crate::inject::VAR_FILTER, "attach");
    for (k, v) in crate::inject::auxv(pid) {
        bytes.extend_from_slice(format!("{k}={v:#x}").as_bytes());
        bytes.push(0);
    }
    let names = (|| {
        Ok::<_, io::Error>((
            sym(&image, agent::INIT)?,
            sym(&image, agent::PARAMS)?,
            sym(&image, agent::BUSY)?,
            sym(&image, agent::THREAD_BUSY)?,
            sym(&image, agent::THREAD_DETACH)?,
            sym(&image, agent::RELEASE)?,
            sym(&image, agent::DETACH_BEGIN)?,
        ))
    })();
    let (init, area, busy, thread_busy, thread_detach, release, detach_begin) = match names {
        Ok(n) => n,
        Err(e) => return Err(fail(proc, e)),
    };
    if bytes.len() > agent::PARAMS_LEN {
        return Err(fail(
            proc,
            io::Error::other("the core's settings are too long"),
        ));
    }
    if let Err(e) = proc.mem().write(area, &bytes) {
        return Err(fail(proc, os(e)));
    }
    // The core's start unblocks its signals in the calling thread: the program's mask
    // is put back (the thread's faults then go as they would have).
    let mask = sigmask(tid);
    let r = proc.call(tid, init, &[area, bytes.len() as u64]);
    if let Some(m) = mask {
        set_sigmask(tid, m);
    }
    let r = match r {
        Ok(r) => r as i64,
        Err(e) => return Err(fail(proc, os(e))),
    };
    if r < 0 {
        for &fd in &fds {
            let _ = proc.remote_close(tid, fd);
        }
        let why = match -r {
            2 => "it cannot reach the recording's shared memory".to_string(),
            12 => "it cannot map the recording's shared memory".to_string(),
            e => io::Error::from_raw_os_error(e as i32).to_string(),
        };
        return Err(fail(
            proc,
            io::Error::other(format!("starting the core: {why}")),
        ));
    }
    Ok(Core {
        image,
        busy,
        thread_busy,
        thread_detach,
        release,
        detach_begin,
        fds,
    })
}

/// `exit_code` of a process that has ended and not yet been reaped (`/proc/PID/stat`
/// field 52, as `waitpid` reports it), if it can still be read.
fn exit_of(pid: i32) -> Option<Exit> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.first() != Some(&"Z") && f.first() != Some(&"X") {
        return None;
    }
    let st: i32 = f.get(52 - 3)?.parse().ok()?;
    Some(if libc::WIFSIGNALED(st) {
        Exit::Signal(libc::WTERMSIG(st))
    } else {
        Exit::Code(libc::WEXITSTATUS(st))
    })
}

/// Attaches, puts the core in, lets the process go; waits for the end of the recording
/// (a stop request, the process's end or exec); takes the core out again.
pub(super) fn run(setup: Setup, started: Sender<Started>) -> Ended {
    let t0 = Instant::now();
    let pid = setup.target.pid;
    let fail = |reason: String| Started::Failed(Error::Attach { pid, reason });
    if let Err(e) = pt::check_attach(pid) {
        let _ = started.send(fail(e.to_string()));
        return Ended::now(None, Vec::new());
    }
    let mut th = match Threads::seize(pid, false) {
        Ok(t) => t,
        Err(e) => {
            let _ = started.send(fail(e.to_string()));
            return Ended::now(None, Vec::new());
        }
    };
    let ts_ns = mmio_trace_ring::monotonic_ns();
    // A thread inside the program's own SIGSEGV handler has it blocked only until the
    // handler returns: such threads run a moment at a time (the others stay held, so
    // that none goes back into its handler meanwhile), and only one that keeps it
    // blocked for 3 s is refused.
    let blocking = |th: &Threads| {
        th.held
            .keys()
            .copied()
            .find(|&t| blocks(pid, t, libc::SIGSEGV))
    };
    let settle = Instant::now() + Duration::from_secs(3);
    while blocking(&th).is_some() && Instant::now() < settle {
        th.run_some_for(|t| blocks(pid, t, libc::SIGSEGV), Duration::from_millis(1));
    }
    if let Some(tid) = blocking(&th) {
        th.detach();
        let _ = started.send(fail(format!(
            "thread {tid} blocks SIGSEGV, so the core cannot take its device faults (the kernel would kill the process): use --route ptrace"
        )));
        return Ended::now(None, Vec::new());
    }
    let Some(caller) = th.clear_caller() else {
        th.detach();
        let _ = started.send(fail(
            "every thread is stopped (SIGSTOP): the core cannot be started; continue the process first, or use --route ptrace".into(),
        ));
        return Ended::now(None, Vec::new());
    };
    let mut proc = pt::Process::new(pid);
    let core = match trap_open(caller, || put_in(&mut proc, caller, &setup)) {
        Ok(c) => c,
        Err(e) => {
            th.detach();
            let _ = started.send(fail(format!("cannot put the tracer into the process: {e}")));
            return Ended::now(None, Vec::new());
        }
    };
    let threads = th.held.len();
    th.detach();
    let _ = started.send(Started::Attached {
        ts_ns,
        took: t0.elapsed(),
        pid,
        threads,
        maps: setup.maps,
        notes: vec![if setup.poll_ms == 0 {
            "mmio-trace: route inject (the core runs in the process; device mappings made from now on are not traced)".to_string()
        } else {
            format!(
                "mmio-trace: route inject (the core runs in the process; device mappings made from now on are found in /proc/{pid}/maps every {} ms)",
                setup.poll_ms
            )
        }],
    });
    // While the process runs on its own: its end, an exec (the new image has no core),
    // or a stop request.
    let pidfd = pt::pidfd_open(pid).ok();
    // Opened before the process can end: its exit status survives the parent's wait.
    let mut exits = exit_watch::ExitWatch::open(pid);
    let mut next_exec_check = Instant::now();
    loop {
        if session::stop_requested() {
            break;
        }
        let gone = match &pidfd {
            Some(fd) => {
                let mut p = [
                    libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: exits.as_ref().map_or(-1, |w| w.fd()),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                // SAFETY: two pollfds on the stack (a negative fd is skipped).
                let n = unsafe { libc::poll(p.as_mut_ptr(), 2, 50) };
                if n > 0 && p[1].revents != 0 {
                    if let Some(w) = &mut exits {
                        w.drain();
                    }
                }
                n > 0 && p[0].revents != 0
            }
            None => {
                std::thread::sleep(Duration::from_millis(50));
                std::fs::metadata(format!("/proc/{pid}")).is_err()
            }
        };
        if gone {
            // The kernel's own report first (its exit event comes before the process
            // becomes a zombie), then /proc while it is one.
            let told = exits.as_mut().and_then(|w| {
                w.drain();
                w.status()
            });
            let exit = told.or_else(|| exit_of(pid));
            let note = if exit.is_none() {
                vec![format!(
                    "mmio-trace: process {pid} ended (its exit status was reaped by its parent before it could be read)"
                )]
            } else {
                Vec::new()
            };
            return Ended::now(exit.or(Some(Exit::Code(0))), note);
        }
        if Instant::now() >= next_exec_check {
            next_exec_check = Instant::now() + Duration::from_millis(200);
            if exec_seen(pid, core.image.base) {
                return Ended::now(
                    None,
                    vec![format!(
                        "mmio-trace: process {pid} executed a new program: tracing ended with its old image"
                    )],
                );
            }
        }
    }
    let t1 = Instant::now();
    let mut notes = Vec::new();
    match take_out(&mut proc, pid, &core) {
        Ok(true) => {}
        Ok(false) => notes.push(format!(
            "mmio-trace: warning: the core stays in process {pid}, inactive (a thread did not leave it); its signal actions and protections are the program's again"
        )),
        Err(e) => notes.push(format!("mmio-trace: warning: while detaching: {e}")),
    }
    let mut e = Ended::now(None, notes);
    e.took = Some(t1.elapsed());
    e
}

/// Seizes the process again and takes the core out (see the module documentation).
/// `Ok(false)`: the core could not be made quiet and stays, inactive.
fn take_out(proc: &mut pt::Process, pid: i32, core: &Core) -> io::Result<bool> {
    let mut th = Threads::seize(pid, true).map_err(os)?;
    let r = take_out_held(proc, &mut th, core);
    th.detach();
    r
}

fn take_out_held(proc: &mut pt::Process, th: &mut Threads, core: &Core) -> io::Result<bool> {
    let caller = th
        .clear_caller()
        .ok_or_else(|| io::Error::other("every thread is stopped (SIGSTOP)"))?;
    trap_open(caller, || proc.call(caller, core.detach_begin, &[])).map_err(os)?;
    let inside = |tid: i32| {
        pt::Regs::read(tid).is_ok_and(|r| core.image.contains(r.user().rip)) || fault_queued(tid)
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut quiet = false;
    while let Some(caller) = th.clear_caller() {
        let mut busy = trap_open(caller, || proc.call(caller, core.busy, &[])).map_err(os)?;
        if busy & 1 != 0 {
            // Handlers of ours still counted: a program handler may have left one with
            // siglongjmp. Each thread says whether it is really inside one.
            let each: Vec<i32> = th
                .held
                .iter()
                .filter(|(&t, &k)| k == Kind::Interrupt && !fault_queued(t))
                .map(|(&t, _)| t)
                .collect();
            for tid in each {
                if let Ok(r) = pt::Regs::read(tid) {
                    let u = r.user();
                    let _ = trap_open(tid, || {
                        proc.call(tid, core.thread_busy, &[u.rip, u.rsp, u.rdx])
                    });
                }
            }
            busy = trap_open(caller, || proc.call(caller, core.busy, &[])).map_err(os)?;
        }
        let poller = (busy >> 32) as i32;
        if busy == 0 && !th.held.contains_key(&poller) && !th.held.keys().any(|&t| inside(t)) {
            quiet = true;
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        th.run_for(Duration::from_millis(1));
    }
    let Some(caller) = th.clear_caller() else {
        return Ok(false);
    };
    if !quiet {
        trap_open(caller, || proc.call(caller, core.release, &[0])).map_err(os)?;
        return Ok(false);
    }
    let each: Vec<i32> = th
        .held
        .iter()
        .filter(|(_, &k)| k == Kind::Interrupt)
        .map(|(&t, _)| t)
        .collect();
    for tid in each {
        let _ = trap_open(tid, || proc.call(tid, core.thread_detach, &[]));
    }
    trap_open(caller, || {
        proc.call(caller, core.release, &[1])?;
        proc.unload_image(caller, &core.image)
    })
    .map_err(os)?;
    let _ = &core.fds;
    Ok(true)
}

/// Exit statuses from the kernel's process connector (netlink): the recorder is no tracer
/// of the process, so its status is otherwise only readable in `/proc` while it is a
/// zombie, which its parent may reap first. Needs CAP_NET_ADMIN (root); without it
/// [`ExitWatch::open`] gives `None`.
mod exit_watch {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    use crate::Exit;

    const NETLINK_CONNECTOR: i32 = 11;
    const CN_IDX_PROC: u32 = 1;
    const CN_VAL_PROC: u32 = 1;
    const PROC_CN_MCAST_LISTEN: u32 = 1;
    const PROC_EVENT_EXIT: u32 = 0x8000_0000;
    /// nlmsghdr (16) + cn_msg (20).
    const HEADERS: usize = 36;

    pub(super) struct ExitWatch {
        fd: OwnedFd,
        pid: u32,
        /// The wait status of the newest exit of a thread of the process seen.
        last: Option<u32>,
    }

    impl ExitWatch {
        /// Subscribes to the exit events of every process, keeping those of `pid`'s
        /// threads.
        pub(super) fn open(pid: i32) -> Option<ExitWatch> {
            // SAFETY: plain socket call.
            let fd = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    NETLINK_CONNECTOR,
                )
            };
            if fd < 0 {
                return None;
            }
            // SAFETY: a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: plain data.
            let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            sa.nl_family = libc::AF_NETLINK as u16;
            sa.nl_groups = CN_IDX_PROC;
            // SAFETY: `sa` is a sockaddr_nl of its size.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                )
            };
            if r != 0 {
                return None;
            }
            let mut m = Vec::with_capacity(HEADERS + 4);
            m.extend_from_slice(&((HEADERS + 4) as u32).to_ne_bytes());
            m.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
            m.extend_from_slice(&0u16.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&std::process::id().to_ne_bytes());
            for v in [CN_IDX_PROC, CN_VAL_PROC, 0, 0] {
                m.extend_from_slice(&v.to_ne_bytes());
            }
            m.extend_from_slice(&4u16.to_ne_bytes());
            m.extend_from_slice(&0u16.to_ne_bytes());
            m.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
            // SAFETY: sending our buffer.
            let n = unsafe { libc::send(fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
            if n != m.len() as isize {
                return None;
            }
            let w = ExitWatch {
                fd,
                pid: pid as u32,
                last: None,
            };
            // Without CAP_NET_ADMIN the kernel answers the subscription with EPERM
            // (read back as an error on the socket): no events would come.
            let mut e: i32 = 0;
            let mut len = 4u32;
            // SAFETY: SO_ERROR into an int.
            let r = unsafe {
                libc::getsockopt(
                    w.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut e as *mut i32).cast(),
                    &mut len,
                )
            };
            (r == 0 && e == 0).then_some(w)
        }

        pub(super) fn fd(&self) -> RawFd {
            self.fd.as_raw_fd()
        }

        /// Reads every event queued (a full queue loses some: then the caller falls back
        /// to /proc).
        pub(super) fn drain(&mut self) {
            let mut buf = [0u8; 8192];
            loop {
                // SAFETY: receiving into our buffer.
                let n = unsafe {
                    libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if n < 0 {
                    if io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                        continue;
                    }
                    return;
                }
                if n == 0 {
                    return;
                }
                let mut at = 0usize;
                let n = n as usize;
                while at + HEADERS + 16 <= n {
                    let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4")) as usize;
                    let ev = at + HEADERS;
                    let word = |o: usize| -> Option<u32> {
                        buf.get(ev + o..ev + o + 4)
                            .map(|b| u32::from_ne_bytes(b.try_into().expect("4")))
                    };
                    // proc_event: what, cpu, timestamp (8), then the exit event's
                    // process_pid, process_tgid, exit_code.
                    if word(0) == Some(PROC_EVENT_EXIT) && word(20) == Some(self.pid) {
                        if let Some(code) = word(24) {
                            self.last = Some(code);
                        }
                    }
                    if len < 16 {
                        break;
                    }
                    at += (len + 3) & !3;
                }
            }
        }

        /// The process's exit status, if its exit was seen.
        pub(super) fn status(&self) -> Option<Exit> {
            let st = self.last? as i32;
            Some(if libc::WIFSIGNALED(st) {
                Exit::Signal(libc::WTERMSIG(st))
            } else {
                Exit::Code(libc::WEXITSTATUS(st))
            })
        }
    }
}
