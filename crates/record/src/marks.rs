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

    /// The next marker received, if any: (`CLOCK_MONOTONIC` ns when it was sent, text).
    pub fn try_recv(&self) -> Option<(u64, Vec<u8>)> {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.sock.recv(&mut buf).ok()?;
            if let Some(m) = decode(&buf[..n]) {
                return Some(m);
            }
        }
    }
}

impl Drop for MarkSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

const TAG: &[u8; 4] = b"MMT1";

/// A marker datagram: tag, the sender's `CLOCK_MONOTONIC` ns (the clock every traced
/// process stamps events with, so the mark lands where it was sent, not where the
/// recorder happened to read it), text.
fn encode(ts: u64, text: &[u8]) -> Vec<u8> {
    let mut v = TAG.to_vec();
    v.extend_from_slice(&ts.to_le_bytes());
    v.extend_from_slice(text);
    v
}

fn decode(b: &[u8]) -> Option<(u64, Vec<u8>)> {
    let rest = b.strip_prefix(TAG)?;
    let ts = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    Some((ts, rest[8..].to_vec()))
}

/// Sends `text` to the recorder with pid `pid`, or to every live recorder of this user.
/// Returns how many received it.
pub fn send_mark(text: &[u8], pid: Option<u32>) -> io::Result<usize> {
    let dir = socket_dir();
    let sock = UnixDatagram::unbound()?;
    let msg = encode(mmio_trace_ring::monotonic_ns(), text);
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
        match sock.send_to(&msg, e.path()) {
            Ok(_) => sent += 1,
            // A recorder that died without cleaning up.
            Err(_) => {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(sent)
}
