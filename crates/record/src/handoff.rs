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

/// Serves the listening socket and every connection made to it, one request at a time:
/// a connection may stay open for many requests (a core keeps one from its start, for
/// when `socket()` can no longer be made), shared by the threads and forked processes of
/// its owner; each request's sender is told by the credentials it carries (or by the
/// connection's peer).
fn serve<H: FnMut(Request, Peer) -> u8>(listen: i32, mut handler: H) {
    let mut conns: Vec<OwnedFd> = Vec::new();
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listen)
            .chain(conns.iter().map(|c| c.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is valid for its length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        let mut gone = Vec::new();
        for (k, p) in fds.iter().enumerate().skip(1) {
            if p.revents == 0 {
                continue;
            }
            if !one(&conns[k - 1], &mut handler) {
                gone.push(k - 1);
            }
        }
        for k in gone.into_iter().rev() {
            conns.swap_remove(k);
        }
        let l = fds[0].revents;
        if l & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            // Shut down: no more requests.
            return;
        }
        if l & libc::POLLIN != 0 {
            // SAFETY: a listening socket; no address wanted.
            let c = unsafe {
                libc::accept4(
                    listen,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                )
            };
            if c >= 0 {
                let one: libc::c_int = 1;
                // SAFETY: accept's new descriptor, owned here; an int option. (The
                // credentials each request carries are delivered only to a socket that
                // asks for them.)
                unsafe {
                    libc::setsockopt(
                        c,
                        libc::SOL_SOCKET,
                        libc::SO_PASSCRED,
                        (&one as *const libc::c_int).cast(),
                        4,
                    );
                    conns.push(OwnedFd::from_raw_fd(c));
                }
            } else {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR | libc::ECONNABORTED) => {}
                    Some(libc::EMFILE | libc::ENFILE) => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    // Shut down (EINVAL) or broken: no more requests.
                    _ => return,
                }
            }
        }
    }
}

/// Serves what connection `conn` has to read: a request is answered (8 bytes: the
/// answer, then the thread it is for); `false` when the peer closed it (or it broke).
fn one<H: FnMut(Request, Peer) -> u8>(conn: &OwnedFd, handler: &mut H) -> bool {
    let fd = conn.as_raw_fd();
    let mut buf = [0u8; 16];
    // Room for one SCM_CREDENTIALS message.
    let mut ctl = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: plain data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&ctl);
    // SAFETY: `msg` names live buffers of the lengths given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n == 0 {
        return false;
    }
    if n < 0 {
        return matches!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::EAGAIN | libc::EINTR)
        );
    }
    // The sender: its credentials, else the connection's peer (a connection made for
    // this one request).
    // SAFETY: walking the control messages the kernel wrote into `msg`.
    let mut cred: Option<libc::ucred> = unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        let mut found = None;
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                found = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(c) as *const libc::ucred
                ));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        // (pid 0: the request was sent before the connection asked for credentials.)
        found.filter(|c: &libc::ucred| c.pid > 0)
    };
    if cred.is_none() {
        // SAFETY: a local ucred of the length given.
        unsafe {
            let mut c: libc::ucred = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::ucred>() as u32;
            if libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut c as *mut libc::ucred).cast(),
                &mut len,
            ) == 0
            {
                cred = Some(c);
            }
        }
    }
    let Some(req) = Request::decode(&buf[..n as usize]) else {
        // SAFETY: one byte from a local.
        unsafe { libc::send(fd, (&REFUSED as *const u8).cast(), 1, libc::MSG_NOSIGNAL) };
        return true;
    };
    let answer = match cred {
        Some(c) => {
            let peer = Peer {
                pid: c.pid as u32,
                uid: c.uid,
            };
            let tid = match req {
                Request::Seize(t) | Request::Release(t) => t,
            };
            if descends_from_us(peer.pid) && thread_of(peer.pid, tid) {
                handler(req, peer)
            } else {
                REFUSED
            }
        }
        None => REFUSED,
    };
    let out = mmio_trace_tracer::handoff::reply(answer, req);
    // SAFETY: 8 bytes from a local.
    unsafe { libc::send(fd, out.as_ptr().cast(), out.len(), libc::MSG_NOSIGNAL) };
    true
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

    /// A kept connection: found again by number, shared by threads asking at once (each
    /// gets the answer to its own request) and by a forked child (its requests are its
    /// own: the credentials they carry name it, not the connection's maker).
    #[test]
    fn a_kept_connection_serves_threads_and_forked_children() {
        use mmio_trace_tracer::handoff::{ask_on, connect, find_connection};
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        // The answer says which thread asked: SEIZED for even tids, REFUSED for odd.
        let l = Listener::serve(move |r, p| {
            s.lock().unwrap().push((r, p.pid));
            match r {
                Request::Seize(t) | Request::Release(t) => (t % 2 == 0) as u8,
            }
        })
        .unwrap();
        let name = l.env_value();
        let path = name.as_bytes();
        let fd = connect(path).expect("a connection");
        assert!(fd >= 200, "{fd}");
        assert_eq!(find_connection(path), Some(fd));
        assert_eq!(find_connection(b"@another-name"), None);
        let me = std::process::id();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let p = name.clone();
                std::thread::spawn(move || {
                    let tid = mmio_trace_tracer::sys::gettid();
                    (0..20)
                        .map(|_| ask_on(fd, p.as_bytes(), Request::Seize(tid)))
                        .all(|a| a == Some((tid % 2 == 0) as u8))
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap(), "a thread got another's answer");
        }
        // SAFETY: the child only asks on the inherited connection and exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let tid = mmio_trace_tracer::sys::gettid();
            let a = ask_on(fd, path, Request::Release(tid));
            // SAFETY: ends the child.
            unsafe {
                libc::_exit(if a == Some((tid % 2 == 0) as u8) {
                    0
                } else {
                    1
                })
            };
        }
        let mut st = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(child, &mut st, 0) };
        assert_eq!(st, 0, "the child's answer");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 8 * 20 + 1);
        assert!(seen[..160].iter().all(|&(_, p)| p == me));
        assert_eq!(seen[160], (Request::Release(child as u32), child as u32));
        mmio_trace_tracer::sys::close(fd);
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
