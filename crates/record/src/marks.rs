//! Markers from other shells: each recorder listens on a Unix datagram socket in a
//! per-user directory; `mmio-trace mark TEXT` sends the text to every live recorder.
//!
//! Every marker, from here or from the program (`mmio_trace_mark`), is logged on one
//! line: control characters are escaped (`mmio_trace_format::text::escape_marker`).
//! Text past [`MAX_MARK`] bytes is cut, and the marker then ends with [`cut_note`].

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
        private_dir(&dir)?;
        let path = dir.join(format!("{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path)?;
        sock.set_nonblocking(true)?;
        Ok(MarkSocket { sock, path })
    }

    /// Hands every mark waiting on the socket to `merger` as ring `ring` (the marks'
    /// own), a trailing newline dropped; returns how many.
    pub(crate) fn drain_into(&self, merger: &mut crate::decode::Merger, ring: usize) -> usize {
        let mut n = 0;
        while let Some((ts, mut text, mut full)) = self.try_recv() {
            if full == text.len() as u64 && text.ends_with(b"\n") {
                text.pop();
                full -= 1;
            }
            merger.add_mark(ring, ts, &text, full);
            n += 1;
        }
        n
    }

    /// The next marker received, if any: (`CLOCK_MONOTONIC` ns when it was sent, text
    /// of at most [`MAX_MARK`] bytes, the length of the whole text the sender had).
    pub fn try_recv(&self) -> Option<(u64, Vec<u8>, u64)> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let n = self.sock.recv(&mut buf).ok()?;
            if let Some(m) = decode(&buf[..n]) {
                return Some(m);
            }
        }
    }
}

/// Creates `dir` (mode 0700) if needed, and checks that it is this user's own and not
/// open to others: in `/tmp`, anyone could have made it first.
fn private_dir(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory of this user's that only it can write to",
                dir.display()
            ),
        ));
    }
    Ok(())
}

impl Drop for MarkSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The longest marker text kept, in bytes (before escaping): longer text is cut to its
/// first `MAX_MARK` bytes, followed by [`cut_note`].
pub use mmio_trace_ring::MAX_MARK;

/// What follows a marker cut to its first [`MAX_MARK`] bytes, `full` long.
pub fn cut_note(full: u64) -> String {
    cut_note_kept(full, MAX_MARK)
}

fn cut_note_kept(full: u64, kept: usize) -> String {
    format!(" [marker cut: {full} bytes, the first {kept} kept]")
}

/// The longest marker text written into the kernel's `trace_marker`, escaped: kernels
/// before 4.x take at most 1 KiB in one write, and print at most a page per line.
pub const KERNEL_MAX_MARK: usize = 1000;

/// `text` as `mmio-trace mark` writes it into a kernel recording, which logs it as it
/// is: escaped as `record` logs markers, and cut (with [`cut_note`]'s note) to at most
/// [`KERNEL_MAX_MARK`] bytes of escaped text.
pub fn kernel_marker(text: &[u8]) -> Vec<u8> {
    use mmio_trace_format::text::escape_marker;
    let all = escape_marker(text);
    if all.len() <= KERNEL_MAX_MARK {
        return all;
    }
    let note = cut_note_kept(text.len() as u64, text.len());
    let room = KERNEL_MAX_MARK - note.len();
    // The longest prefix whose escaped text fits (escaped length grows with the prefix).
    let (mut lo, mut hi) = (0, text.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if escape_marker(&text[..mid]).len() <= room {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut out = escape_marker(&text[..lo]);
    out.extend_from_slice(cut_note_kept(text.len() as u64, lo).as_bytes());
    out
}

/// The longest datagram a recorder reads: the tag, the time, the text, and room for
/// the length of a cut one.
const MAX_DATAGRAM: usize = 4 + 8 + 8 + MAX_MARK;

/// Datagrams of earlier versions: tag, time, text.
const TAG_V1: &[u8; 4] = b"MMT1";
const TAG: &[u8; 4] = b"MMT2";

/// A marker datagram: tag, the sender's `CLOCK_MONOTONIC` ns (the clock every traced
/// process stamps events with, so the mark lands where it was sent, not where the
/// recorder happened to read it), the whole text's length, the text cut to
/// [`MAX_MARK`] bytes.
fn encode(ts: u64, text: &[u8]) -> Vec<u8> {
    let mut v = TAG.to_vec();
    v.extend_from_slice(&ts.to_le_bytes());
    v.extend_from_slice(&(text.len() as u64).to_le_bytes());
    v.extend_from_slice(&text[..text.len().min(MAX_MARK)]);
    v
}

fn decode(b: &[u8]) -> Option<(u64, Vec<u8>, u64)> {
    if let Some(rest) = b.strip_prefix(TAG_V1) {
        let ts = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let text = rest[8..].to_vec();
        let len = text.len() as u64;
        return Some((ts, text, len));
    }
    let rest = b.strip_prefix(TAG)?;
    let ts = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let full = u64::from_le_bytes(rest.get(8..16)?.try_into().ok()?);
    let text = rest[16..].to_vec();
    Some((ts, text.clone(), full.max(text.len() as u64)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_markers_are_escaped_and_cut_to_the_kernels_limit() {
        assert_eq!(kernel_marker(b"a\nW 4 x\\x"), b"a\\x0aW 4 x\\\\x");
        // 999 plain bytes fit; 2000 do not: the first ones are kept, then the note.
        let short = vec![b'a'; KERNEL_MAX_MARK];
        assert_eq!(kernel_marker(&short), short);
        let long = vec![b'b'; 2000];
        let got = kernel_marker(&long);
        let kept = got.iter().take_while(|&&c| c == b'b').count();
        assert!(got.len() <= KERNEL_MAX_MARK && kept > 950, "{}", got.len());
        let note = format!(" [marker cut: 2000 bytes, the first {kept} kept]");
        assert_eq!(&got[kept..], note.as_bytes());
        // Escapes count with their four bytes, and are never split.
        let got = kernel_marker(&[b'\n'; 600]);
        let kept = got.chunks(4).take_while(|c| c == b"\\x0a").count();
        assert!(got.len() <= KERNEL_MAX_MARK && kept > 230, "{}", got.len());
        let note = format!(" [marker cut: 600 bytes, the first {kept} kept]");
        assert_eq!(&got[kept * 4..], note.as_bytes());
    }

    #[test]
    fn datagrams_carry_the_whole_length_of_a_cut_marker() {
        let text = vec![b'c'; MAX_MARK + 10];
        let (ts, got, full) = decode(&encode(7, &text)).unwrap();
        assert_eq!((ts, got.len(), full), (7, MAX_MARK, MAX_MARK as u64 + 10));
        // An earlier version's datagram.
        let mut v1 = b"MMT1".to_vec();
        v1.extend_from_slice(&9u64.to_le_bytes());
        v1.extend_from_slice(b"hi");
        assert_eq!(decode(&v1), Some((9, b"hi".to_vec(), 2)));
    }
}
