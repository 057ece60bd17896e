//! The trace file: opened before the program starts without touching what was there,
//! emptied only once the program runs, created private, and cut back to the last
//! whole record when a write fails.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Mode of the trace files `record` creates: traces can hold what a driver wrote to its
/// device (keys, frame contents), so they are readable by their owner only.
pub const TRACE_FILE_MODE: u32 = 0o600;

/// Opens `path` for writing a trace, creating it with [`TRACE_FILE_MODE`] if it does not
/// exist (and truncating an existing one): for traces written by other means than
/// `record` (the demo, `kernel record`, [`crate::SelfRecorder`]).
pub fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(TRACE_FILE_MODE)
        .open(path)
}

/// The trace's destination, opened but not yet emptied.
pub(crate) struct Pending {
    file: File,
    /// The file did not exist: remove it if the program cannot be started.
    created: Option<PathBuf>,
    /// A regular file: cut back on a failed write.
    regular: bool,
    /// Standard output, which the shell has opened (and emptied, or not, for `>>`).
    stdout: bool,
    /// Opened with `O_APPEND` (`>>`): writes go to the end, whatever the offset says.
    append: bool,
}

impl Pending {
    /// `path`, or standard output for `None`. An existing file keeps its contents (and
    /// mode) until [`Pending::start`]; a new one is created empty with mode 0600.
    pub fn open(path: Option<&Path>) -> io::Result<Pending> {
        let (file, created) = match path {
            None => {
                // A duplicate, written directly: `Stdout` would flush at every newline,
                // in the middle of a record.
                // SAFETY: F_DUPFD_CLOEXEC on fd 1 returns a new descriptor or -1.
                let fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `fd` was just returned to us and is owned by nobody else.
                let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                (file, None)
            }
            Some(p) => {
                let existing = OpenOptions::new().write(true).open(p);
                match existing {
                    Ok(f) => (f, None),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        let f = OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(TRACE_FILE_MODE)
                            .open(p)?;
                        (f, Some(p.to_path_buf()))
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        let regular = meta.file_type().is_file();
        // SAFETY: F_GETFL on a descriptor we own.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        let append = flags >= 0 && flags & libc::O_APPEND != 0;
        Ok(Pending {
            file,
            created,
            regular,
            stdout: path.is_none(),
            append,
        })
    }

    /// The program could not be started: leave no file behind that was not there.
    pub fn abandon(self) {
        if let Some(p) = &self.created {
            let _ = std::fs::remove_file(p);
        }
    }

    /// The program runs: empties an existing file, returns the writer.
    pub fn start(self) -> io::Result<Sink> {
        if self.regular && self.created.is_none() && !self.stdout {
            self.file.set_len(0)?;
        }
        Ok(Sink {
            file: self.file,
            regular: self.regular,
            append: self.append,
            bytes: Rc::new(Cell::new(0)),
        })
    }
}

/// The trace writer's output. The format writers hand it whole records at a time
/// (`write_all` of their buffer), so a chunk that fails part-way is cut off again: the
/// file ends on a record boundary whatever the error.
pub(crate) struct Sink {
    file: File,
    regular: bool,
    append: bool,
    /// Bytes written (shared with the status line): whole records in a regular file; to a
    /// pipe or device, also the part of a record that went before a write failed.
    pub bytes: Rc<Cell<u64>>,
}

impl Sink {
    fn cut_back(&mut self, to: u64) -> io::Result<()> {
        // SAFETY: ftruncate on a descriptor we own.
        if unsafe { libc::ftruncate(self.file.as_raw_fd(), to as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.file.seek(SeekFrom::Start(to)).map(|_| ())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        let start = match (self.regular, self.append) {
            (false, _) => None,
            (true, false) => Some(self.file.stream_position()?),
            (true, true) => Some(self.file.metadata()?.len()),
        };
        let mut sent = 0u64;
        while !buf.is_empty() {
            let e = match self.file.write(buf) {
                Ok(0) => io::Error::from(io::ErrorKind::WriteZero),
                Ok(n) => {
                    buf = &buf[n..];
                    sent += n as u64;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            // What went into a pipe or device cannot be taken back: it was written (the
            // count says so); a regular file's partial record is cut off again.
            if start.is_none() {
                self.bytes.set(self.bytes.get() + sent);
            }
            return Err(self.failed(start, e));
        }
        self.bytes.set(self.bytes.get() + sent);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Sink {
    /// A chunk failed: remove what of it was written (regular files; a pipe cannot take
    /// bytes back, and its reader is gone anyway).
    fn failed(&mut self, start: Option<u64>, e: io::Error) -> io::Error {
        if let Some(at) = start {
            if let Err(t) = self.cut_back(at) {
                return io::Error::new(
                    e.kind(),
                    format!("{e}; cutting the partial record off failed too: {t}"),
                );
            }
        }
        e
    }
}

/// The trace being written, shared by `record` and `record --pid`: the format writer on
/// the sink, the first write error (after which nothing more is written, but the rings are
/// still drained), the bytes written and the `MAP` events counted.
pub(crate) struct Trace {
    writer: Option<mmio_trace_format::AnyWriter<Sink>>,
    err: Option<io::Error>,
    bytes: Option<Rc<Cell<u64>>>,
    /// `MAP` events written (or that would have been).
    pub maps: u64,
}

impl Trace {
    /// Empties or creates the output and starts the writer; a failure is remembered as
    /// the trace's error (the recording goes on).
    pub fn start(pending: Pending, format: mmio_trace_format::Format) -> Trace {
        let mut t = Trace {
            writer: None,
            err: None,
            bytes: None,
            maps: 0,
        };
        match pending.start() {
            Ok(sink) => {
                t.bytes = Some(sink.bytes.clone());
                match mmio_trace_format::AnyWriter::new(sink, format) {
                    Ok(w) => t.writer = Some(w),
                    Err(e) => t.err = Some(e),
                }
            }
            Err(e) => t.err = Some(e),
        }
        t
    }

    /// Writes one output of the merger (nothing once a write failed).
    pub fn write(&mut self, o: crate::decode::Out) {
        if let crate::decode::Out::Event(mmio_trace_format::Event::Map(_)) = o {
            self.maps += 1;
        }
        if self.err.is_some() {
            return;
        }
        let r = self.writer.as_mut().map(|w| match &o {
            crate::decode::Out::Event(e) => w.write_event(e),
            crate::decode::Out::Strings(s) => w.write_strings(s),
        });
        if let Some(Err(e)) = r {
            self.err = Some(e);
        }
    }

    /// Whether a write failed.
    pub fn failed(&self) -> bool {
        self.err.is_some()
    }

    /// Bytes of the trace written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.as_ref().map_or(0, |b| b.get())
    }

    /// Flushes the writer; returns the first error of the whole trace, if any.
    pub fn finish(&mut self) -> Option<io::Error> {
        if self.err.is_none() {
            if let Some(w) = &mut self.writer {
                if let Err(e) = w.flush() {
                    self.err = Some(e);
                }
            }
        }
        self.err.take()
    }
}
