//! The mmio-trace recorder.
//!
//! [`record`] runs a program with the preload library injected (found next to the
//! executable, see [`locate`]) and a shared-memory channel ([`mmio_trace_ring`]) inherited
//! by every process it starts, drains the per-thread rings while the program runs, merges
//! them by timestamp and writes the trace with `mmio_trace_format::AnyWriter`. It becomes
//! the child subreaper, so it waits for every descendant (forked children outliving the
//! program included), then drains what is left: accesses completed by a process that was
//! SIGKILLed are in the shared memory and reach the file.
//!
//! [`SelfRecorder`] is the same for a Rust program tracing regions of its own process
//! (with `mmio_trace_tracer::trace_region`).
#![warn(missing_docs)]

#[doc(hidden)]
pub mod bench;
mod decode;
pub mod demo;
pub mod locate;
pub mod marks;
pub mod pci;
mod selftrace;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mmio_trace_format::{AnyWriter, Event, Format, KERNEL_VERSION};
use mmio_trace_ring::Consumer;
use mmio_trace_tracer::rules;

pub use selftrace::SelfRecorder;

/// Rings (traced threads at once, all processes) in a recording.
pub const DEFAULT_RINGS: u32 = 256;
/// Records per ring (32 bytes each: 512 KiB per ring, touched only when used).
pub const DEFAULT_CAPACITY: u32 = 16384;

/// What to record and where.
#[derive(Clone, Debug)]
pub struct Options {
    /// Output file; `None` writes to standard output.
    pub output: Option<PathBuf>,
    /// Output format.
    pub format: Format,
    /// Extra device globs (`--device`).
    pub devices: Vec<String>,
    /// Drop the default device rules.
    pub no_default_devices: bool,
    /// Traced offset ranges (`--range`), as given.
    pub ranges: Vec<String>,
    /// Untraced offset ranges (`--bypass`), as given.
    pub bypass: Vec<String>,
    /// Map no device a second time: every access single-stepped (`--no-alias`).
    pub no_alias: bool,
    /// Show the status line on stderr when it is a terminal.
    pub status: bool,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// Rings in the shared memory.
    pub rings: u32,
    /// Records per ring (power of two).
    pub capacity: u32,
}

impl Options {
    /// Options for recording `command` into `output` as kernel text, default rules.
    pub fn new(command: Vec<OsString>, output: Option<PathBuf>) -> Options {
        Options {
            output,
            format: Format::Text,
            devices: Vec::new(),
            no_default_devices: false,
            ranges: Vec::new(),
            bypass: Vec::new(),
            no_alias: false,
            status: true,
            command,
            rings: DEFAULT_RINGS,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

/// How the program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl Exit {
    /// The status `mmio-trace record` exits with: the program's, or 128+N for signal N.
    pub fn code(self) -> u8 {
        match self {
            Exit::Code(c) => c as u8,
            Exit::Signal(s) => (128 + s) as u8,
        }
    }
}

/// What a recording produced.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// How the program ended.
    pub exit: Exit,
    /// Events written (accesses, maps, marks...).
    pub events: u64,
    /// Accesses completed by the single-step fallback.
    pub slow_steps: u64,
    /// Steps made with the other threads running (the tracer could not list them).
    pub unpaused_steps: u64,
    /// Events lost (0 unless a process had no ring, or the recorder stopped early).
    pub lost: u64,
    /// Processes that attached to the recording.
    pub processes: u64,
}

/// Why recording failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No program given.
    #[error("no program to record")]
    NoCommand,
    /// The preload library is missing.
    #[error("cannot find {} next to the mmio-trace executable (build the whole workspace: `cargo build`)", locate::LIB_NAME)]
    NoPreload,
    /// A `--range`/`--bypass` value did not parse.
    #[error(
        "bad range {0:?}: expected START-END or START+LEN (decimal or 0x hex), comma separated"
    )]
    BadRange(String),
    /// Shared memory could not be set up.
    #[error("cannot create the shared-memory channel: {0}")]
    Shm(io::Error),
    /// The program could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// The output could not be written.
    #[error("cannot write the trace: {0}")]
    Output(io::Error),
}

/// Counts bytes written, for the status line.
struct Counting<W> {
    inner: W,
    bytes: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes.set(self.bytes.get() + n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Device globs as the tracer matches them: a literal path (no `*?[`) that exists is
/// canonicalised, because the tracer sees canonical paths (`/proc/self/fd/N`).
pub fn device_globs(globs: &[String]) -> Vec<String> {
    globs
        .iter()
        .map(|g| {
            if g.contains(['*', '?', '[']) {
                return g.clone();
            }
            std::fs::canonicalize(g)
                .map_or_else(|_| g.clone(), |p| p.to_string_lossy().into_owned())
        })
        .collect()
}

/// The header events every trace starts with: `VERSION` and this machine's `PCIDEV`s.
pub fn header_events() -> Vec<Event> {
    let mut v = vec![Event::Version(KERNEL_VERSION.as_bytes().to_vec())];
    v.extend(pci::machine_pcidevs());
    v
}

/// A termination signal the recorder received, to pass on to the program (0: none).
static FORWARD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    FORWARD.store(sig, Ordering::SeqCst);
}

/// Records `opts.command`; returns when it and every process it started have ended.
pub fn record(opts: &Options) -> Result<Outcome, Error> {
    let (program, args) = opts.command.split_first().ok_or(Error::NoCommand)?;
    for r in opts.ranges.iter().chain(&opts.bypass) {
        rules::parse_ranges(r).ok_or_else(|| Error::BadRange(r.clone()))?;
    }
    let lib = locate::preload_library().ok_or(Error::NoPreload)?;
    let out: Box<dyn Write> = match &opts.output {
        Some(p) => Box::new(std::fs::File::create(p).map_err(Error::Output)?),
        None => Box::new(io::stdout().lock()),
    };
    let mut consumer = Consumer::create(opts.rings, opts.capacity).map_err(Error::Shm)?;
    let bytes = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let counting = Counting {
        inner: out,
        bytes: bytes.clone(),
    };
    let mut writer = AnyWriter::new(counting, opts.format).map_err(Error::Output)?;
    for e in header_events() {
        writer.write_event(&e).map_err(Error::Output)?;
    }

    let mut preload = lib.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let mut cmd = Command::new(program);
    // The recorder's own descriptors by path too, for images whose inherited ones were
    // closed on the way.
    let proc_fd = |fd: i32| format!("/proc/{}/fd/{fd}", std::process::id());
    cmd.args(args)
        .env("LD_PRELOAD", preload)
        .env(mmio_trace_ring::ENV_FD, consumer.fd().to_string())
        .env(mmio_trace_ring::ENV_LIVE_FD, consumer.live_fd().to_string())
        .env(mmio_trace_ring::ENV_SHM_PATH, proc_fd(consumer.fd()))
        .env(mmio_trace_ring::ENV_LIVE_PATH, proc_fd(consumer.live_fd()))
        .env(rules::ENV_DEVICES, device_globs(&opts.devices).join("\n"))
        .env(
            rules::ENV_NO_DEFAULTS,
            if opts.no_default_devices { "1" } else { "0" },
        )
        .env(rules::ENV_RANGES, opts.ranges.join(","))
        .env(rules::ENV_BYPASS, opts.bypass.join(","))
        .env(rules::ENV_NO_ALIAS, if opts.no_alias { "1" } else { "0" });
    // SAFETY: pre_exec runs async-signal-safe calls only (signal disposition reset).
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    // Become the subreaper first, so that orphaned grandchildren are ours to wait for.
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let child = cmd.spawn().map_err(|source| Error::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    let child_pid = child.id() as i32;
    // Ctrl-C goes to the program (same process group); the recorder stays to drain.
    // SAFETY: plain signal disposition changes.
    let old_int = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    // SAFETY: as above.
    let old_quit = unsafe { libc::signal(libc::SIGQUIT, libc::SIG_IGN) };
    // SIGTERM/SIGHUP to the recorder (e.g. from `timeout`) are passed on to the program;
    // the recorder keeps draining until it has ended, so the file stays complete.
    FORWARD.store(0, Ordering::SeqCst);
    let on_term = forward_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores into an atomic.
    let old_term = unsafe { libc::signal(libc::SIGTERM, on_term) };
    // SAFETY: as above.
    let old_hup = unsafe { libc::signal(libc::SIGHUP, on_term) };

    let marks = marks::MarkSocket::bind().ok();
    let nrings = opts.rings as usize;
    let mut merger = decode::Merger::new(nrings + 1, consumer.header().start_ns);
    let mut status = (opts.status && io::stderr().is_terminal()).then(Status::new);
    let mut exit = None;
    let mut idle = Duration::from_micros(100);
    let mut write_err = None;
    let mut write = |writer: &mut AnyWriter<_>, e: Event| {
        if write_err.is_none() {
            if let Err(err) = writer.write_event(&e) {
                write_err = Some(err);
            }
        }
    };
    loop {
        let mut got = 0usize;
        let wm = consumer.poll(|d| {
            got += d.records.len();
            merger.add(d)
        });
        if let Some(m) = &marks {
            while let Some((ts, text)) = m.try_recv() {
                let text = text.strip_suffix(b"\n").unwrap_or(&text).to_vec();
                merger.add_mark(nrings, ts, &text);
                got += 1;
            }
        }
        merger.emit(Some(wm), |e| write(&mut writer, e));
        // Reap every descendant that ended; stop when none is left.
        let all_gone;
        loop {
            let mut st = 0;
            // SAFETY: plain waitpid.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid > 0 {
                if pid == child_pid {
                    exit = Some(if libc::WIFSIGNALED(st) {
                        Exit::Signal(libc::WTERMSIG(st))
                    } else {
                        Exit::Code(libc::WEXITSTATUS(st))
                    });
                }
                continue;
            }
            all_gone = pid < 0;
            break;
        }
        if let Some(s) = &mut status {
            s.tick(
                merger.emitted,
                bytes.get(),
                consumer.header().attached.load(Ordering::Relaxed),
                false,
            );
        }
        if all_gone {
            break;
        }
        let sig = FORWARD.swap(0, Ordering::SeqCst);
        if sig != 0 && exit.is_none() {
            // SAFETY: plain kill of our own child.
            unsafe { libc::kill(child_pid, sig) };
        }
        // Back off while the program is quiet, so untraced code does not share its CPUs
        // with an eager recorder. Rings hold 16384 events: a program that starts trapping
        // fills one only if the recorder sleeps through all of them, and 5 ms is far less.
        if got == 0 {
            std::thread::sleep(idle);
            idle = (idle * 2).min(Duration::from_millis(5));
        } else {
            idle = Duration::from_micros(100);
        }
    }
    // Every process is gone: nothing can be in flight any more.
    consumer.poll(|d| merger.add(d));
    merger.emit(None, |e| write(&mut writer, e));
    let h = consumer.header();
    let lost = h.lost.load(Ordering::Relaxed);
    if lost > 0 {
        write(&mut writer, Event::LostEvents(lost));
    }
    if let Some(e) = write_err {
        return Err(Error::Output(e));
    }
    writer.flush().map_err(Error::Output)?;
    if let Some(s) = &mut status {
        s.tick(
            merger.emitted,
            bytes.get(),
            h.attached.load(Ordering::Relaxed),
            true,
        );
    }
    // SAFETY: restoring the dispositions saved above.
    unsafe {
        libc::signal(libc::SIGINT, old_int);
        libc::signal(libc::SIGQUIT, old_quit);
        libc::signal(libc::SIGTERM, old_term);
        libc::signal(libc::SIGHUP, old_hup);
    }
    Ok(Outcome {
        exit: exit.unwrap_or(Exit::Code(0)),
        events: merger.emitted,
        slow_steps: h.slow_steps.load(Ordering::Relaxed),
        unpaused_steps: h.unpaused_steps.load(Ordering::Relaxed),
        lost,
        processes: h.attached.load(Ordering::Relaxed),
    })
}

/// The status line: events, events/s, bytes, processes; redrawn at most 4 times a second.
struct Status {
    start: Instant,
    last: Instant,
    last_events: u64,
}

impl Status {
    fn new() -> Status {
        let now = Instant::now();
        Status {
            start: now,
            last: now,
            last_events: 0,
        }
    }

    fn tick(&mut self, events: u64, bytes: u64, processes: u64, done: bool) {
        let now = Instant::now();
        let dt = now.duration_since(self.last);
        if !done && dt < Duration::from_millis(250) {
            return;
        }
        let rate = if done {
            events as f64 / now.duration_since(self.start).as_secs_f64().max(1e-9)
        } else {
            (events - self.last_events) as f64 / dt.as_secs_f64().max(1e-9)
        };
        self.last = now;
        self.last_events = events;
        let mut e = io::stderr().lock();
        let _ = write!(e, "\r\x1b[Kmmio-trace: {events} events, {rate:.0} events/s, {bytes} bytes, {processes} processes");
        if done {
            let _ = writeln!(e);
        }
    }
}
