//! The hand-off of a process from the preload route to the ptrace route, at an exec.
//!
//! A process traced by the preload library that is about to exec a program the library
//! cannot follow (statically linked, Go, set-uid...: see [`crate::exe_kind`]) asks the
//! recorder to trace it by ptrace first: it connects to the recorder's hand-off socket
//! (an abstract `SOCK_SEQPACKET` Unix socket named by [`ENV_HANDOFF`]: reachable by the
//! program's processes whatever user they run as; the recorder checks that the sender
//! descends from it), sends a [`Request`] and waits,
//! at most [`ACK_TIMEOUT_S`] seconds, for the one-byte answer. [`SEIZED`] means that the
//! recorder now traces the calling thread and will take over the new image at its exec;
//! anything else (or no answer) leaves the exec to run untraced, as before, and the
//! recorder names it in its "never attached" warning.
//!
//! A process the recorder traces by ptrace may still carry `LD_PRELOAD` (a preload-traced
//! shell handed over at its exec of a static program, which then execs a dynamic one):
//! the library must then stay dormant, the recorder sees every access already. It asks
//! [`traced_by_recorder`].
//!
//! Everything here allocates nothing and calls the kernel directly: the exec may be made
//! in a `vfork` child.

use crate::sys::{self, syscall6};

/// The environment variable naming the recorder's hand-off socket (a path).
pub const ENV_HANDOFF: &str = "MMIO_TRACE_HANDOFF";
/// The environment variable holding the recorder's process id.
pub const ENV_RECORDER_PID: &str = "MMIO_TRACE_RECORDER_PID";
/// How long a process waits for the recorder's answer before it execs anyway.
pub const ACK_TIMEOUT_S: i64 = 10;
/// The answer: the thread is traced; exec.
pub const SEIZED: u8 = 1;
/// The answer: the recorder will not trace it (the exec runs untraced).
pub const REFUSED: u8 = 0;

/// What a process asks of the recorder: 8 bytes, `op` then `tid`, little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Trace thread `tid` (of the sender) by ptrace: it is about to exec.
    Seize(u32),
    /// Thread `tid`'s exec failed: let it go (it stays under the preload library).
    Release(u32),
}

impl Request {
    /// The request as sent.
    pub fn encode(self) -> [u8; 8] {
        let (op, tid) = match self {
            Request::Seize(t) => (1u32, t),
            Request::Release(t) => (2u32, t),
        };
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&op.to_le_bytes());
        b[4..].copy_from_slice(&tid.to_le_bytes());
        b
    }

    /// A request received; `None` when malformed.
    pub fn decode(b: &[u8]) -> Option<Request> {
        let b: &[u8; 8] = b.try_into().ok()?;
        let op = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let tid = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        match op {
            1 => Some(Request::Seize(tid)),
            2 => Some(Request::Release(tid)),
            _ => None,
        }
    }
}

const SYS_SOCKET: usize = 41;
const SYS_CONNECT: usize = 42;
const SYS_SENDTO: usize = 44;
const SYS_RECVFROM: usize = 45;
const SYS_SETSOCKOPT: usize = 54;
const SYS_ACCESS: usize = 21;
const AF_UNIX: usize = 1;
const SOCK_SEQPACKET: usize = 5;
const SOCK_CLOEXEC: usize = 0o2000000;
const SOL_SOCKET: usize = 1;
const SO_RCVTIMEO: usize = 20;
const MSG_NOSIGNAL: usize = 0x4000;
const EINTR: isize = 4;

/// Sends `req` to the recorder's socket at `path` (no NUL; `@NAME` is the abstract
/// socket NAME) and returns its answer:
/// `Some(SEIZED)`, `Some(REFUSED)`, or `None` when it cannot be reached or does not
/// answer within [`ACK_TIMEOUT_S`] seconds.
pub fn ask(path: &[u8], req: Request) -> Option<u8> {
    let (addr, len) = sockaddr(path)?;
    // SAFETY: plain socket call.
    let fd = unsafe {
        syscall6(
            SYS_SOCKET,
            AF_UNIX,
            SOCK_SEQPACKET | SOCK_CLOEXEC,
            0,
            0,
            0,
            0,
        )
    };
    if fd < 0 {
        return None;
    }
    let fd = fd as i32;
    let answer = (|| {
        let tv = libc::timeval {
            tv_sec: ACK_TIMEOUT_S,
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval for the length given.
        unsafe {
            syscall6(
                SYS_SETSOCKOPT,
                fd as usize,
                SOL_SOCKET,
                SO_RCVTIMEO,
                &tv as *const _ as usize,
                core::mem::size_of::<libc::timeval>(),
                0,
            )
        };
        // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
        let r = unsafe {
            syscall6(
                SYS_CONNECT,
                fd as usize,
                &addr as *const _ as usize,
                len,
                0,
                0,
                0,
            )
        };
        if r < 0 {
            return None;
        }
        if !send(fd, req) {
            return None;
        }
        let mut b = [0u8; 1];
        loop {
            // SAFETY: `b` is valid for one byte; no address.
            let r = unsafe {
                syscall6(
                    SYS_RECVFROM,
                    fd as usize,
                    b.as_mut_ptr() as usize,
                    1,
                    0,
                    0,
                    0,
                )
            };
            match r {
                1 => return Some(b[0]),
                // A signal handler ran: ask again (the timeout restarts, still bounded
                // by the signals the program gets).
                r if r == -EINTR => continue,
                _ => return None,
            }
        }
    })();
    sys::close(fd);
    answer
}

/// Sends `req` on connection `fd`; whether all of it went.
fn send(fd: i32, req: Request) -> bool {
    let msg = req.encode();
    // SAFETY: `msg` is valid for its length; no address.
    let r = unsafe {
        syscall6(
            SYS_SENDTO,
            fd as usize,
            msg.as_ptr() as usize,
            msg.len(),
            MSG_NOSIGNAL,
            0,
            0,
        )
    };
    r == msg.len() as isize
}

/// The answer to `req` as the recorder sends it: 8 bytes, the answer byte (a reader of
/// one byte, as [`ask`], gets just that) then the thread the request named.
pub fn reply(answer: u8, req: Request) -> [u8; 8] {
    let tid = match req {
        Request::Seize(t) | Request::Release(t) => t,
    };
    let mut b = [0u8; 8];
    b[0] = answer;
    b[4..].copy_from_slice(&tid.to_le_bytes());
    b
}

const SYS_FCNTL: usize = 72;
const SYS_POLL: usize = 7;
const SYS_GETPEERNAME: usize = 52;
const SO_PASSCRED: usize = 16;
const MSG_PEEK: usize = 2;
const MSG_DONTWAIT: usize = 0x40;
/// The lowest number a kept connection is moved to, out of the program's way.
const KEPT_FD_MIN: usize = 200;
/// How many numbers from [`KEPT_FD_MIN`] up [`find_connection`] looks at.
const KEPT_FD_SPAN: i32 = 64;

/// `path` as a socket address and its length: `@NAME` is the abstract name NAME (a
/// leading NUL, and the length says where it ends).
fn sockaddr(path: &[u8]) -> Option<(libc::sockaddr_un, usize)> {
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    if path.is_empty() || path.len() >= addr.sun_path.len() {
        return None;
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &s) in addr.sun_path.iter_mut().zip(path) {
        *d = s as libc::c_char;
    }
    let abstract_name = path[0] == b'@';
    if abstract_name {
        addr.sun_path[0] = 0;
    }
    let len = core::mem::size_of::<libc::sa_family_t>() + path.len() + !abstract_name as usize;
    Some((addr, len))
}

/// A connection to the recorder's socket at `path` that the process keeps for later
/// requests ([`ask_on`]), made now (at the core's start, before the program could have
/// forbidden itself `socket()` or used up its descriptors): numbered from 200 up, kept
/// across exec (the next image's core finds it: [`find_connection`]), and sending its
/// credentials with each request, so that the recorder knows which process of those
/// sharing it (forks inherit it) asks.
pub fn connect(path: &[u8]) -> Option<i32> {
    let (addr, len) = sockaddr(path)?;
    // SAFETY: plain socket call.
    let fd = unsafe { syscall6(SYS_SOCKET, AF_UNIX, SOCK_SEQPACKET, 0, 0, 0, 0) };
    if fd < 0 {
        return None;
    }
    let fd = fd as i32;
    let one: i32 = 1;
    // SAFETY: an int option; `addr` is valid for `len` bytes.
    let ok = unsafe {
        syscall6(
            SYS_SETSOCKOPT,
            fd as usize,
            SOL_SOCKET,
            SO_PASSCRED,
            &one as *const i32 as usize,
            4,
            0,
        ) == 0
            && syscall6(
                SYS_CONNECT,
                fd as usize,
                &addr as *const _ as usize,
                len,
                0,
                0,
                0,
            ) == 0
    };
    if !ok {
        sys::close(fd);
        return None;
    }
    // SAFETY: F_DUPFD of our own descriptor (the copy is not close-on-exec).
    let high = unsafe {
        syscall6(
            SYS_FCNTL,
            fd as usize,
            libc::F_DUPFD as usize,
            KEPT_FD_MIN,
            0,
            0,
            0,
        )
    };
    sys::close(fd);
    (high >= 0).then_some(high as i32)
}

/// Whether `fd` is a connection to the recorder's socket at `path` (its peer's name).
fn connected_to(fd: i32, path: &[u8]) -> bool {
    let Some((want, len)) = sockaddr(path) else {
        return false;
    };
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut got: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    let mut got_len = core::mem::size_of::<libc::sockaddr_un>() as u32;
    // SAFETY: `got` is valid for `got_len` bytes.
    let r = unsafe {
        syscall6(
            SYS_GETPEERNAME,
            fd as usize,
            &mut got as *mut _ as usize,
            &mut got_len as *mut u32 as usize,
            0,
            0,
            0,
        )
    };
    if r != 0 || got_len as usize != len {
        return false;
    }
    let n = len - core::mem::size_of::<libc::sa_family_t>();
    got.sun_family == want.sun_family && got.sun_path[..n] == want.sun_path[..n]
}

/// A connection kept by an earlier image of this process ([`connect`]), if one is open.
pub fn find_connection(path: &[u8]) -> Option<i32> {
    (KEPT_FD_MIN as i32..KEPT_FD_MIN as i32 + KEPT_FD_SPAN).find(|&fd| connected_to(fd, path))
}

/// Sends `req` on kept connection `fd` (to the recorder's socket at `path`) and returns
/// the recorder's answer to it, as [`ask`] does. Other threads and processes share the
/// connection: each answer names its thread, and a thread takes only its own (it looks
/// at the next answer first, and leaves another thread's for it). `None` when `fd` is
/// not that connection any more (the program closed it), or on no answer in time.
pub fn ask_on(fd: i32, path: &[u8], req: Request) -> Option<u8> {
    if !connected_to(fd, path) {
        return None;
    }
    if !send(fd, req) {
        return None;
    }
    let want = reply(0, req);
    let deadline = sys::now_ns().saturating_add(ACK_TIMEOUT_S as u64 * 1_000_000_000);
    loop {
        let now = sys::now_ns();
        if now >= deadline {
            return None;
        }
        // struct pollfd { fd; short events = POLLIN; short revents }
        let mut pfd = [0u8; 8];
        pfd[..4].copy_from_slice(&fd.to_ne_bytes());
        pfd[4..6].copy_from_slice(&1i16.to_ne_bytes());
        let ms = ((deadline - now) / 1_000_000).clamp(1, 50);
        // SAFETY: one pollfd on the stack.
        let r = unsafe { syscall6(SYS_POLL, pfd.as_mut_ptr() as usize, 1, ms as usize, 0, 0, 0) };
        if r < 0 && r != -EINTR {
            return None;
        }
        let mut b = [0u8; 8];
        // SAFETY: `b` is valid for its length; no address.
        let n = unsafe {
            syscall6(
                SYS_RECVFROM,
                fd as usize,
                b.as_mut_ptr() as usize,
                8,
                MSG_PEEK | MSG_DONTWAIT,
                0,
                0,
            )
        };
        if n == 0 {
            // The recorder closed it.
            return None;
        }
        if n == 8 && b[4..] == want[4..] {
            // Ours: taken off the connection.
            // SAFETY: as above.
            unsafe {
                syscall6(
                    SYS_RECVFROM,
                    fd as usize,
                    b.as_mut_ptr() as usize,
                    8,
                    MSG_DONTWAIT,
                    0,
                    0,
                )
            };
            return Some(b[0]);
        }
        if n == 8 {
            // Another thread's answer at the head: give it a moment to take it.
            sys::sched_yield();
        }
    }
}

/// Where the inject route puts the tracer's core in every process of a recording: one
/// address for all, so that the seccomp filter installed once (and inherited over fork
/// and exec) exempts it in every image. Far below the kernel's mmap area (top-down from
/// below the stack), between non-PIE executables with their heaps (low addresses) and the
/// random bases of PIE executables (from `0x5555_5555_4000`), and away from the Go
/// runtime's arena hints (`0x00c0_0000_0000 + k << 40`).
pub const CORE_BASE: u64 = 0x2aa0_0000_0000;

/// Whether the inject route's core is in this process (a mapping at [`CORE_BASE`]): a
/// preload library then stays dormant.
pub fn core_present() -> bool {
    const SYS_MSYNC: usize = 26;
    const MS_ASYNC: usize = 1;
    // msync fails with ENOMEM on an address nothing maps.
    // SAFETY: msync only looks at the mapping (MS_ASYNC on anonymous memory does nothing).
    unsafe { syscall6(SYS_MSYNC, CORE_BASE as usize, 4096, MS_ASYNC, 0, 0, 0) == 0 }
}

/// Whether the calling process is traced by ptrace by the recorder whose pid is
/// `recorder` (its supervisor is one of its threads): `/proc/self/status` names the
/// tracer thread, which must be a task of `recorder`.
pub fn traced_by_recorder(recorder: u32) -> bool {
    let tracer = tracer_pid();
    if tracer == 0 || recorder == 0 {
        return false;
    }
    let mut path = [0u8; 64];
    let mut n = 0;
    let mut put = |s: &[u8]| {
        path[n..n + s.len()].copy_from_slice(s);
        n += s.len();
    };
    let mut digits = [0u8; 64];
    put(b"/proc/");
    put(sys::digits(recorder as u64, 10, &mut digits));
    put(b"/task/");
    put(sys::digits(tracer as u64, 10, &mut digits));
    put(b"\0");
    // SAFETY: a NUL-terminated path.
    unsafe { syscall6(SYS_ACCESS, path.as_ptr() as usize, 0, 0, 0, 0, 0) == 0 }
}

/// The `TracerPid` of `/proc/self/status` (0: not traced, or unknown).
pub fn tracer_pid() -> u32 {
    let fd = sys::open_read(b"/proc/self/status\0");
    if fd < 0 {
        return 0;
    }
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        let r = sys::read(fd as i32, &mut buf[len..]);
        if r <= 0 {
            break;
        }
        len += r as usize;
    }
    sys::close(fd as i32);
    parse_tracer_pid(&buf[..len])
}

fn parse_tracer_pid(status: &[u8]) -> u32 {
    const KEY: &[u8] = b"\nTracerPid:";
    let Some(at) = status.windows(KEY.len()).position(|w| w == KEY) else {
        return 0;
    };
    status[at + KEY.len()..]
        .iter()
        .skip_while(|&&c| c == b' ' || c == b'\t')
        .take_while(|c| c.is_ascii_digit())
        .fold(0u32, |v, &c| {
            v.saturating_mul(10).saturating_add((c - b'0') as u32)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [Request::Seize(7), Request::Release(u32::MAX)] {
            assert_eq!(Request::decode(&r.encode()), Some(r));
        }
        assert_eq!(Request::decode(&[3, 0, 0, 0, 1, 0, 0, 0]), None);
        assert_eq!(Request::decode(&[1, 0, 0, 0]), None);
    }

    #[test]
    fn tracer_pid_lines() {
        assert_eq!(parse_tracer_pid(b"Name:\tx\nTracerPid:\t4321\nUid:"), 4321);
        assert_eq!(parse_tracer_pid(b"Name:\tx\nTracerPid:\t0\n"), 0);
        assert_eq!(parse_tracer_pid(b"Name:\tx\n"), 0);
        // This test process is not traced (unless run under a debugger).
        if tracer_pid() == 0 {
            assert!(!traced_by_recorder(std::process::id()));
        }
    }

    #[test]
    fn nobody_listening_is_no_answer() {
        assert_eq!(ask(b"/nonexistent/handoff.sock", Request::Seize(1)), None);
        assert_eq!(ask(b"", Request::Seize(1)), None);
    }
}
