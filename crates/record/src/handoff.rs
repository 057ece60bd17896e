//! The recorder's end of the hand-off ([`mmio_trace_tracer::handoff`]): a process traced
//! by the preload library that is about to exec a program only the ptrace route can
//! trace asks, over an abstract Unix socket, to be traced by ptrace first.
//!
//! A thread of the recorder accepts each request, checks that it comes from a process
//! of the recording (one descended from the recorder) and that the thread it names is
//! the sender's, and passes it to the handler, which answers
//! [`SEIZED`](mmio_trace_tracer::handoff::SEIZED) once the ptrace route traces that thread.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::Duration;

use mmio_trace_tracer::handoff::{Request, REFUSED};

/// Who asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The sender's process id.
    pub pid: u32,
    /// Its user id.
    pub uid: u32,
}

/// The listening socket and the thread serving it (stopped on drop).
pub struct Listener {
    name: String,
    sock: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Binds a fresh abstract socket and serves it on a thread of its own: every valid
    /// request goes to `handler`, whose answer is sent back. Requests from processes that
    /// do not descend from this one, or that name a thread not theirs, are refused.
    pub fn serve<H>(handler: H) -> io::Result<Listener>
    where
        H: FnMut(Request, Peer) -> u8 + Send + 'static,
    {
        let mut rnd = [0u8; 8];
        // SAFETY: `rnd` is valid for its length.
        if unsafe { libc::getrandom(rnd.as_mut_ptr().cast(), rnd.len(), 0) } != rnd.len() as isize {
            return Err(io::Error::last_os_error());
        }
        let name = format!(
            "mmio-trace-handoff-{}-{:016x}",
            std::process::id(),
            u64::from_le_bytes(rnd)
        );
        // SAFETY: plain socket call; the descriptor is owned at once.
        let sock = unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        // SAFETY: a zeroed sockaddr_un is valid; the name fits (checked by the slice copy).
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, &s) in addr.sun_path[1..].iter_mut().zip(name.as_bytes()) {
            *d = s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
        // SAFETY: `addr` is valid for `len` bytes; our own descriptor.
        unsafe {
            if libc::bind(sock.as_raw_fd(), &addr as *const _ as *const _, len as u32) != 0
                || libc::listen(sock.as_raw_fd(), 64) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let fd = sock.as_raw_fd();
        let thread = std::thread::Builder::new()
            .name("mmio-trace-handoff".into())
            .spawn(move || serve(fd, handler))?;
        Ok(Listener {
            name,
            sock,
            thread: Some(thread),
        })
    }

    /// The socket's name as the environment gives it ([`ENV_HANDOFF`]'s value): `@` and
    /// the abstract name.
    ///
    /// [`ENV_HANDOFF`]: mmio_trace_tracer::handoff::ENV_HANDOFF
    pub fn env_value(&self) -> String {
        format!("@{}", self.name)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Wakes the thread's accept with an error: it ends.
        // SAFETY: our own descriptor, still open.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve<H: FnMut(Request, Peer) -> u8>(listen: i32, mut handler: H) {
    loop {
        // SAFETY: a listening socket; no address wanted.
        let c = unsafe {
            libc::accept4(
                listen,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if c < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED | libc::EMFILE | libc::ENFILE) => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                // Shut down (EINVAL) or broken: no more requests.
                _ => return,
            }
        }
        // SAFETY: accept's new descriptor, owned here.
        let conn = unsafe { OwnedFd::from_raw_fd(c) };
        let answer = one(&conn, &mut handler);
        // SAFETY: one byte from a local.
        unsafe {
            libc::send(
                conn.as_raw_fd(),
                (&answer as *const u8).cast(),
                1,
                libc::MSG_NOSIGNAL,
            )
        };
    }
}

/// Reads and checks one request; the answer.
fn one<H: FnMut(Request, Peer) -> u8>(conn: &OwnedFd, handler: &mut H) -> u8 {
    let fd = conn.as_raw_fd();
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: a valid timeval; a local buffer; a local ucred of the length given.
    let (req, cred) = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let mut buf = [0u8; 16];
        let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as u32;
        let ok = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        ) == 0;
        let req = (n > 0)
            .then(|| Request::decode(&buf[..n as usize]))
            .flatten();
        (req, ok.then_some(cred))
    };
    let (Some(req), Some(cred)) = (req, cred) else {
        return REFUSED;
    };
    let peer = Peer {
        pid: cred.pid as u32,
        uid: cred.uid,
    };
    let tid = match req {
        Request::Seize(t) | Request::Release(t) => t,
    };
    if !descends_from_us(peer.pid) || !thread_of(peer.pid, tid) {
        return REFUSED;
    }
    handler(req, peer)
}

/// Whether `tid` is a thread of process `pid`.
fn thread_of(pid: u32, tid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
}

/// Whether process `pid` is this one's descendant (its parent chain reaches us; the
/// recorder is the subreaper, so orphans stay in its tree).
fn descends_from_us(pid: u32) -> bool {
    let me = std::process::id();
    let mut p = pid;
    for _ in 0..4096 {
        if p == me {
            return true;
        }
        if p <= 1 {
            return false;
        }
        match parent_of(p) {
            Some(pp) => p = pp,
            None => return false,
        }
    }
    false
}

/// The `PPid` of process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmio_trace_tracer::handoff::{ask, SEIZED};
    use std::sync::{Arc, Mutex};

    #[test]
    fn requests_reach_the_handler_and_answers_come_back() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let l = Listener::serve(move |r, p| {
            s.lock().unwrap().push((r, p.pid));
            SEIZED
        })
        .unwrap();
        let name = l.env_value();
        let me = std::process::id();
        let tid = mmio_trace_tracer::sys::gettid();
        assert_eq!(ask(name.as_bytes(), Request::Seize(tid)), Some(SEIZED));
        assert_eq!(ask(name.as_bytes(), Request::Release(tid)), Some(SEIZED));
        // Not our thread: refused before the handler.
        assert_eq!(ask(name.as_bytes(), Request::Seize(1)), Some(REFUSED));
        assert_eq!(
            *seen.lock().unwrap(),
            [(Request::Seize(tid), me), (Request::Release(tid), me)]
        );
        drop(l);
        // Gone: no answer.
        assert_eq!(ask(name.as_bytes(), Request::Seize(tid)), None);
    }

    #[test]
    fn ancestry() {
        assert!(descends_from_us(std::process::id()));
        assert!(!descends_from_us(1));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(descends_from_us(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
