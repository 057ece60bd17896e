//! The inject route: the tracer's own fault-path core, built without libc into a
//! freestanding blob ([`crate::agent::BLOB`]), is put into the program by ptrace at its
//! exec stop, initialised there, and the program is let go: from then on it is not
//! ptraced, its device faults are handled in process at the preload route's cost, and a
//! seccomp filter the core installs (exempting its own code) hands the program's
//! `mmap`/`munmap`/`mremap`/`mprotect`/`rt_sigaction`/`rt_sigprocmask`/`execve` to the
//! core as `SIGSYS`. At an exec the core asks the recorder (the hand-off socket) to seize
//! the thread first; the recorder puts a fresh core into the new image, at the same
//! address (the inherited filter exempts that range), before its first instruction.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mmio_trace_ptrace::{self as pt, Event, Options, Stop};

use mmio_trace_tracer::exe_kind;

use crate::agent;
use crate::remote::supervisor::Start;
use crate::remote::sys::tgid_of;
use crate::Exit;

/// Where the core goes in every process of a recording (the same address everywhere:
/// see [`mmio_trace_tracer::handoff::CORE_BASE`]).
pub(crate) const BASE: u64 = mmio_trace_tracer::handoff::CORE_BASE;

/// Ptrace options while the core goes in: exec stops, and the program dies with a
/// recorder that dies half-way (it could not run with a filter and no core).
const OPTIONS: Options = Options(Options::TRACEEXEC.0 | Options::EXITKILL.0);

/// For a thread handed over before an exec: also its clones, forks and vforks (a
/// `posix_spawn` child execs the program; the spawner is let go at once).
const FOLLOW: Options =
    Options(OPTIONS.0 | Options::TRACECLONE.0 | Options::TRACEFORK.0 | Options::TRACEVFORK.0);

/// The variable that tells the core whether to install the filter (`1`) or that an
/// inherited one already exempts it (`0`).
pub(crate) const VAR_FILTER: &str = "MMIO_TRACE_AGENT_FILTER";

/// The core's parameters: `NAME=VALUE` strings, each NUL-terminated (the variables the
/// preload route puts in the environment), without [`VAR_FILTER`] (added per process).
#[derive(Clone, Debug, Default)]
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    fn encode(&self, filter: bool) -> Vec<u8> {
        self.encode_with(VAR_FILTER, if filter { "1" } else { "0" })
    }

    /// The strings, and `name=value` last.
    pub(crate) fn encode_with(&self, name: &str, value: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in self
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([(name, value)])
        {
            b.extend_from_slice(k.as_bytes());
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b
    }
}

/// Why the core could not be put into a process.
fn inject_err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!(
        "cannot put the tracer into the program ({what}): {e}"
    ))
}

/// Loads the core into thread `tid` (stopped: an exec stop or a seize stop) of process
/// `pid` at [`BASE`] and initialises it. `filter`: install the seccomp filter (no
/// inherited one exempts the core yet).
pub(crate) fn inject(pid: i32, tid: i32, params: &Params, filter: bool) -> io::Result<()> {
    let mut proc = pt::Process::new(pid);
    unname_preload(pid, proc.mem());
    let image = match core_image() {
        Ok((blob, Some(file))) => proc.load_blob_mapped(tid, blob, file),
        Ok((blob, None)) => proc.load_blob(tid, blob, &pt::LoadOptions { base: Some(BASE) }),
        Err(e) => Err(e),
    }
    .map_err(|e| inject_err("loading", e))?;
    let init = image
        .sym(agent::INIT)
        .ok_or_else(|| inject_err("loading", format!("no {} in the core", agent::INIT)))?;
    let area = image
        .sym(agent::PARAMS)
        .ok_or_else(|| inject_err("loading", format!("no {} in the core", agent::PARAMS)))?;
    let mut bytes = params.encode(filter);
    // The new image's vDSO and CPU features: a process with file capabilities cannot
    // open its own /proc/self/auxv (root's), the core would go without.
    for (k, v) in auxv(pid) {
        bytes.extend_from_slice(format!("{k}={v:#x}").as_bytes());
        bytes.push(0);
    }
    if bytes.len() > agent::PARAMS_LEN {
        return Err(inject_err("parameters", "too long"));
    }
    proc.mem()
        .write(area, &bytes)
        .map_err(|e| inject_err("parameters", e))?;
    let r = proc
        .call(tid, init, &[area, bytes.len() as u64])
        .map_err(|e| inject_err("its start", e))? as i64;
    if r < 0 {
        return Err(inject_err(
            "its start",
            io::Error::from_raw_os_error(-r as i32),
        ));
    }
    Ok(())
}

/// The preload library's file name, as `LD_PRELOAD` names it.
const PRELOAD_LIB: &[u8] = b"libmmio_trace_preload.so";

/// At the exec stop of an image whose loader is not glibc's (musl's...): the preload
/// library an `LD_PRELOAD` inherited from a preload-route parent names cannot be loaded
/// there (it is built against glibc), and the loader would refuse to start the program.
/// Its entries are blanked in the new image's environment, one `:` per byte (an empty
/// element, which every loader skips); the rest of the variable is the program's.
fn unname_preload(pid: i32, mem: &mut pt::Mem) {
    let Some((start, end)) = env_area(pid) else {
        return;
    };
    let mut env = vec![0u8; (end.saturating_sub(start) as usize).min(16 << 20)];
    // The image is judged (its headers read) only when the environment names the
    // library: most images on this route were never given it.
    if mem.read(start, &mut env).is_err() || !blank_preload(&mut env) {
        return;
    }
    let exe = format!("/proc/{pid}/exe");
    if matches!(
        exe_kind::classify(exe.as_bytes()).needs_ptrace(),
        Some(exe_kind::Why::Musl | exe_kind::Why::OtherLoader)
    ) {
        let _ = mem.write(start, &env);
    }
}

/// `[env_start, env_end)` of process `pid` (fields 50 and 51 of `/proc/PID/stat`).
fn env_area(pid: i32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields from the third on follow the command name's closing parenthesis.
    let mut f = stat.rsplit_once(')')?.1.split_whitespace().skip(50 - 3);
    let start = f.next()?.parse().ok()?;
    let end = f.next()?.parse().ok()?;
    (start < end).then_some((start, end))
}

/// Blanks the preload library's elements of the `LD_PRELOAD` entries in `env` (NUL-
/// separated `NAME=value` strings); whether it changed anything.
fn blank_preload(env: &mut [u8]) -> bool {
    const KEY: &[u8] = b"LD_PRELOAD=";
    let mut changed = false;
    let mut at = 0;
    while at < env.len() {
        let end = env[at..]
            .iter()
            .position(|&c| c == 0)
            .map_or(env.len(), |n| at + n);
        if env[at..end].starts_with(KEY) {
            let mut e = at + KEY.len();
            while e < end {
                let stop = env[e..end]
                    .iter()
                    .position(|&c| c == b':' || c == b' ')
                    .map_or(end, |n| e + n);
                let item = &env[e..stop];
                let base = item.rsplit(|&c| c == b'/').next().unwrap_or(item);
                if base == PRELOAD_LIB {
                    env[e..stop].fill(b':');
                    changed = true;
                }
                e = stop + 1;
            }
        }
        at = end + 1;
    }
    changed
}

/// The core, parsed once, and its memory image relocated for [`BASE`] in a file that
/// every process of the recording maps (`None` when the file cannot be made: each load
/// then writes the contents).
fn core_image() -> Result<&'static (pt::Blob, Option<pt::ImageFile>), pt::Error> {
    static IMAGE: std::sync::OnceLock<Result<(pt::Blob, Option<pt::ImageFile>), String>> =
        std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let blob = pt::Blob::parse(agent::BLOB).map_err(|e| e.to_string())?;
            let file = blob.image_file(BASE).ok();
            Ok((blob, file))
        })
        .as_ref()
        .map_err(|e| pt::Error::Image { why: e.clone() })
}

/// `AT_SYSINFO_EHDR` and `AT_HWCAP2` of process `pid`, as the core's settings name them.
pub(crate) fn auxv(pid: i32) -> Vec<(&'static str, u64)> {
    const AT_HWCAP2: u64 = 26;
    const AT_SYSINFO_EHDR: u64 = 33;
    let Ok(b) = std::fs::read(format!("/proc/{pid}/auxv")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in b.chunks_exact(16) {
        let k = u64::from_ne_bytes(e[..8].try_into().expect("8 bytes"));
        let v = u64::from_ne_bytes(e[8..].try_into().expect("8 bytes"));
        match k {
            AT_SYSINFO_EHDR => out.push((mmio_trace_tracer::ENV_AT_SYSINFO_EHDR, v)),
            AT_HWCAP2 => out.push((mmio_trace_tracer::ENV_AT_HWCAP2, v)),
            _ => {}
        }
    }
    out
}

/// Whether process `pid` carries the core already (a mapping starts at [`BASE`]): its
/// filter, inherited by what it execs, exempts that range.
pub(crate) fn has_core(pid: i32) -> bool {
    let want = format!("{BASE:x}-");
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .is_ok_and(|m| m.lines().any(|l| l.starts_with(&want)))
}

/// The child between fork and exec: async-signal-safe calls only. Stops itself (to be
/// seized), execs; a failed exec is reported as its errno on `report`.
fn child(
    start: &Start,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    report: i32,
) -> ! {
    // SAFETY: plain system calls on our own process and descriptors; every pointer is to
    // data built before the fork and alive in this copy of the address space.
    unsafe {
        if let Some(fd) = &start.stdout {
            libc::dup2(fd.as_raw_fd(), 1);
        }
        // The signal mask stays the recorder's own, as the program would inherit it run
        // directly (the core keeps the tracer's signals unblocked and the program's view
        // of them).
        libc::kill(libc::getpid(), libc::SIGSTOP);
        libc::execve(start.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        let e = *libc::__errno_location();
        libc::write(report, e.to_le_bytes().as_ptr().cast(), 4);
        libc::_exit(127);
    }
}

/// Why [`spawn`] failed.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// The program could not be run (its exec failed, or it died first).
    Exec(io::Error),
    /// It was exec'd, but the core could not be put in (it was killed before its first
    /// instruction: it can be started again another way).
    Core(io::Error),
}

/// Starts the program with the core in it: forks (from the calling thread, whose
/// children the recorder's main loop reaps), seizes the child before its exec, puts the
/// core into the new image at its exec stop, and lets it go. Returns its pid.
pub(crate) fn spawn(start: Start, params: &Params) -> Result<i32, SpawnError> {
    use SpawnError::{Core, Exec};
    let mut fds = [0i32; 2];
    // SAFETY: plain pipe2 into a local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Exec(io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors we own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut argv: Vec<*const libc::c_char> = start.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = start.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: fork; the child runs `child` only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Exec(io::Error::last_os_error()));
    }
    if pid == 0 {
        child(&start, &argv, &envp, wr.as_raw_fd());
    }
    drop(wr);
    let kill = |pid: i32| {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut st = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut st, libc::__WALL) };
    };
    let mut st = 0;
    // SAFETY: plain waitpid for our own child (not yet traced: WUNTRACED sees its stop).
    let r = unsafe { libc::waitpid(pid, &mut st, libc::WUNTRACED) };
    if r != pid || !libc::WIFSTOPPED(st) {
        return Err(Exec(io::Error::other(
            "the program ended before it could start",
        )));
    }
    if let Err(e) = pt::seize(pid, OPTIONS) {
        kill(pid);
        return Err(Exec(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("cannot trace the program with ptrace to put the tracer in: {e}"),
        )));
    }
    // SAFETY: our own child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    loop {
        match pt::wait_tid(pid) {
            Ok(Stop::Event(Event::Exec { .. })) => break,
            Ok(Stop::Exited(_)) | Ok(Stop::Killed { .. }) | Err(_) => {
                let mut b = [0u8; 4];
                // SAFETY: reading into a local buffer.
                let n = unsafe { libc::read(rd.as_raw_fd(), b.as_mut_ptr().cast(), 4) };
                // SAFETY: reaping our own child (already a zombie).
                unsafe { libc::waitpid(pid, &mut st, libc::__WALL | libc::WNOHANG) };
                return Err(Exec(if n == 4 {
                    io::Error::from_raw_os_error(i32::from_le_bytes(b))
                } else {
                    io::Error::other("the program ended before it could start")
                }));
            }
            // The SIGCONT, or a stop signal: passed on (the stop is lost: the program is
            // not running yet).
            Ok(Stop::Signal { signal, .. }) => {
                let sig = if signal == libc::SIGCONT || signal == libc::SIGSTOP {
                    0
                } else {
                    signal
                };
                let _ = pt::cont(pid, sig);
            }
            Ok(_) => {
                let _ = pt::cont(pid, 0);
            }
        }
    }
    if let Err(e) = inject(pid, pid, params, true) {
        kill(pid);
        return Err(Core(e));
    }
    if let Err(e) = pt::detach(pid, 0) {
        kill(pid);
        return Err(Core(inject_err("letting it go", e)));
    }
    Ok(pid)
}

/// The recorder's answer to a hand-off request of a process that carries the core (or
/// of a preload-traced one, with the inject route taking over): seizes thread `tid`,
/// and from a thread of its own puts a core into the image it execs, then lets it go.
/// Returns once `tid` is seized (the caller answers `SEIZED`).
pub(crate) fn adopt(tid: i32, params: Params) -> io::Result<std::thread::JoinHandle<()>> {
    let (tx, rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let thread = std::thread::Builder::new()
        .name("mmio-trace-inject".into())
        .spawn(move || {
            let pid = tgid_of(tid).unwrap_or(tid);
            let filter = !has_core(pid);
            // After a failed exec the thread may still be held by the inject thread
            // that is letting it go (it polls for the release): an exec made again at
            // once waits for that detach (2 s at most) rather than being refused. A
            // foreign tracer is answered at once; a refusal with no tracer at all (a
            // security module) only after those 2 s.
            let mut waited = 0;
            while let Err(e) = pt::seize(tid, FOLLOW) {
                if !(being_released(tid) || held_by_us(tid)) || waited >= 2000 {
                    let _ = tx.send(Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        e.to_string(),
                    )));
                    return;
                }
                waited += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            // Listed before the answer: the exec may fail and its release come at once.
            let released = Arc::new(AtomicBool::new(false));
            RELEASED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((tid, released.clone()));
            let _ = tx.send(Ok(()));
            follow_exec(tid, pid, &params, filter, released);
        })?;
    match rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(io::Error::other("the inject thread ended"))
        }
    }
}

/// How the processes ended that an inject thread reaped: one seized for its exec that
/// ended instead (the exec failed and it exited before it was let go). The kernel gives
/// a traced child's status to its tracer's wait, and the recorder's main loop, the
/// program's parent, then never sees it: it asks here ([`reaped`]).
static REAPED: std::sync::Mutex<Vec<(i32, Exit)>> = std::sync::Mutex::new(Vec::new());

/// How process `pid` ended, if an inject thread reaped it.
pub(crate) fn reaped(pid: i32) -> Option<Exit> {
    REAPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(p, _)| *p == pid)
        .map(|&(_, e)| e)
}

/// Threads seized for an exec, by tid: set when the exec failed and the process asked
/// for the thread back ([`release`]).
static RELEASED: std::sync::Mutex<Vec<(i32, Arc<AtomicBool>)>> = std::sync::Mutex::new(Vec::new());

/// A hand-off `Release` request: thread `tid`'s exec failed; its inject thread lets it go.
/// (The one not released yet: an earlier one may still be letting it go.)
pub(crate) fn release(tid: i32) {
    let l = RELEASED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, f)) = l
        .iter()
        .find(|(t, f)| *t == tid && !f.load(Ordering::Acquire))
    {
        f.store(true, Ordering::Release);
    }
}

/// Whether thread `tid` is traced by a thread of this recorder, one that is gone, or
/// no longer traced at all (a failed seize then only raced an inject thread's detach).
fn held_by_us(tid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return false;
    };
    let tracer = status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse::<i32>().ok());
    match tracer {
        Some(0) => true,
        Some(t) => tgid_of(t).is_none_or(|g| g == std::process::id() as i32),
        None => false,
    }
}

/// Whether an inject thread is letting thread `tid` go (its exec failed).
fn being_released(tid: i32) -> bool {
    RELEASED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|(t, f)| *t == tid && f.load(Ordering::Acquire))
}

/// Waits for seized thread `tid` to exec (then injects and detaches), to end, or to be
/// released (its exec failed: the thread is interrupted and let go). A thread that
/// makes a process instead (`posix_spawn`: libc's child execs without running any of the
/// preload library's code) is let go, and that child followed to its exec. Polls:
/// ptrace requests are this thread's alone, so a release can only be seen here.
fn follow_exec(tid: i32, pid: i32, params: &Params, filter: bool, released: Arc<AtomicBool>) {
    let _forget = Forget(tid, released.clone());
    let mut interrupted = false;
    let mut idle = std::time::Duration::from_micros(50);
    // This thread's tracees (after an exec from a non-leader thread, that thread's id
    // is the pid: stops are taken from any of them).
    let mut tracees = vec![tid];
    while !tracees.is_empty() {
        let (cur, stop) = match pt::wait(-1, true) {
            Ok(Some(x)) => x,
            Ok(None) => {
                if released.load(Ordering::Acquire) && !interrupted {
                    interrupted = pt::interrupt(tid).is_ok();
                }
                std::thread::sleep(idle);
                idle = (idle * 2).min(std::time::Duration::from_millis(2));
                continue;
            }
            Err(_) => return,
        };
        idle = std::time::Duration::from_micros(50);
        if !tracees.contains(&cur) {
            tracees.push(cur);
        }
        match stop {
            Stop::Event(Event::Exec { former_tid }) => {
                tracees.retain(|&t| t != cur && t != former_tid);
                let process = if cur == tid || former_tid == tid {
                    pid
                } else {
                    cur
                };
                // The exec'ing thread is now its process's leader.
                if let Err(e) = inject(process, cur, params, filter) {
                    if filter {
                        // No filter yet (a preload-traced process): it runs on, untraced.
                        eprintln!(
                            "mmio-trace: warning: NOT TRACED: process {process} after its exec: {e}"
                        );
                    } else {
                        eprintln!(
                            "mmio-trace: cannot trace process {process} after its exec ({e}); it is killed (its inherited filter needs the tracer)"
                        );
                        // SAFETY: plain kill of a process of the recording.
                        unsafe { libc::kill(process, libc::SIGKILL) };
                    }
                }
                let _ = pt::detach(cur, 0);
            }
            Stop::Event(Event::Clone { new } | Event::Fork { new } | Event::Vfork { new }) => {
                // The child (attached already, its first stop may still be to come) is
                // followed; the spawner goes on alone.
                tracees.retain(|&t| t != cur);
                if !tracees.contains(&new) {
                    tracees.push(new);
                }
                let _ = pt::detach(cur, 0);
            }
            s if s.is_gone() => {
                tracees.retain(|&t| t != cur);
                let exit = match s {
                    Stop::Killed { signal, .. } => Exit::Signal(signal),
                    Stop::Exited(code) => Exit::Code(code),
                    _ => continue,
                };
                REAPED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((cur, exit));
            }
            Stop::Signal { signal, .. } => {
                let _ = pt::cont(cur, signal);
            }
            Stop::Group { .. } => {
                let _ = pt::listen(cur);
            }
            Stop::Interrupt if cur == tid && released.load(Ordering::Acquire) => {
                tracees.retain(|&t| t != cur);
                let _ = pt::detach(cur, 0);
            }
            _ => {
                let _ = pt::cont(cur, 0);
            }
        }
    }
}

/// Drops a thread's entry from [`RELEASED`] when its inject thread is done with it
/// (that entry only: the thread may be seized again by then, for its next exec).
struct Forget(i32, Arc<AtomicBool>);

impl Drop for Forget {
    fn drop(&mut self) {
        RELEASED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, f)| !(*t == self.0 && Arc::ptr_eq(f, &self.1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preload_library_is_blanked_out_of_ld_preload_only() {
        let mut env = b"A=1\0LD_PRELOAD=/x/libmmio_trace_preload.so:/y/libz.so liba.so\0\
            B=libmmio_trace_preload.so\0LD_PRELOAD=libmmio_trace_preload.so\0"
            .to_vec();
        assert!(blank_preload(&mut env));
        let want = format!(
            "A=1\0LD_PRELOAD={}:/y/libz.so liba.so\0B=libmmio_trace_preload.so\0LD_PRELOAD={}\0",
            ":".repeat("/x/libmmio_trace_preload.so".len()),
            ":".repeat("libmmio_trace_preload.so".len()),
        );
        assert_eq!(String::from_utf8(env).unwrap(), want);
        let mut other = b"LD_PRELOAD=/x/libmmio_trace_preload.so.1:mylib.so\0".to_vec();
        assert!(!blank_preload(&mut other));
        // No trailing NUL (a cut read): still bounded.
        let mut cut = b"LD_PRELOAD=libmmio_trace_preload.so".to_vec();
        assert!(blank_preload(&mut cut));
        assert!(cut.ends_with(b"=::::::::::::::::::::::::"));
    }
}
