//! Markers from other shells: each recorder listens on a Unix datagram socket in a
//! per-user directory; `mmio-trace mark TEXT` sends the text to every live recorder.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// The directory of the recorders' marker sockets: `$XDG_RUNTIME_DIR/mmio-trace`, else
/// `/tmp/mmio-trace-$UID`.
pub fn socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("mmio-trace"),
        // SAFETY: getuid cannot fail.
        _ => PathBuf::from(format!("/tmp/mmio-trace-{}", unsafe { libc::getuid() })),
    }
}

/// A recorder's marker socket (removed on drop).
pub struct MarkSocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl MarkSocket {
    /// Binds `<dir>/<pid>.sock`.
    pub fn bind() -> io::Result<MarkSocket> {
        let dir = socket_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path)?;
        sock.set_nonblocking(true)?;
        Ok(MarkSocket { sock, path })
    }

    /// The next marker text received, if any.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 8192];
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
            Err(_) => None,
        }
    }
}

impl Drop for MarkSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends `text` to the recorder with pid `pid`, or to every live recorder of this user.
/// Returns how many received it.
pub fn send_mark(text: &[u8], pid: Option<u32>) -> io::Result<usize> {
    let dir = socket_dir();
    let sock = UnixDatagram::unbound()?;
    let mut sent = 0;
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(p) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".sock"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid.is_some_and(|want| want != p) {
            continue;
        }
        match sock.send_to(text, e.path()) {
            Ok(_) => sent += 1,
            // A recorder that died without cleaning up.
            Err(_) => {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(sent)
}
