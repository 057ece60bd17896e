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

pub mod agent;
pub mod attach;
#[doc(hidden)]
pub mod bench;
mod decode;
pub mod demo;
pub mod handoff;
mod inject;
pub mod locate;
pub mod marks;
mod output;
pub mod pci;
pub mod remote;
pub mod route;
mod selftrace;
mod signals;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mmio_trace_format::{Event, Format, KERNEL_VERSION};
use mmio_trace_ring::{Consumer, Layout};
use mmio_trace_tracer::rules;

pub use attach::{attach, AttachOptions, AttachRoute};
pub use decode::{Patching, RefusedSite, UnmatchedFile};
pub use output::{create_private, TRACE_FILE_MODE};
pub use selftrace::SelfRecorder;

/// Rings (traced threads at once, all processes) in a recording. A thread that finds
/// every ring taken waits for one (nothing is lost; the recorder says so). Rings cost
/// memory only once written, and the recorder scans only those ever claimed.
pub const DEFAULT_RINGS: u32 = 8192;
/// Records per ring of the first [`DEFAULT_BIG_RINGS`] rings (32 bytes each: 512 KiB per
/// ring, its pages touched only as they are written).
pub const DEFAULT_CAPACITY: u32 = 16384;
/// Rings with [`DEFAULT_CAPACITY`] records: the first threads to trap, usually the few
/// busy ones.
pub const DEFAULT_BIG_RINGS: u32 = 64;
/// Records per ring of the other rings (64 KiB each): a thousand threads cost tens of MiB.
pub const DEFAULT_SMALL_CAPACITY: u32 = 2048;
/// Environment variable that sets the number of rings (a decimal number, at least 1)
/// instead of [`DEFAULT_RINGS`]: for programs with more threads and processes alive at
/// once (rings cost memory only when written).
pub const ENV_RINGS: &str = "MMIO_TRACE_RINGS";
/// The most rings [`ENV_RINGS`] may ask for (4 GiB of address space in every traced
/// process, though only written pages cost memory).
pub const MAX_RINGS: u32 = 65536;

/// How the recorder reaches the program's device accesses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Route {
    /// The preload library in the program (dynamic programs; the fast route).
    #[default]
    Preload,
    /// No code in the program: the recorder traces it with ptrace and a seccomp filter
    /// for the mmap family, and completes each access from outside (static, Go,
    /// raw-syscall programs; several times slower per access).
    Ptrace,
    /// The tracer's core, built without libc, put into the program by ptrace at its exec;
    /// then the program runs untraced by ptrace, at the preload route's cost per access
    /// (static, Go, set-uid programs).
    Inject,
}

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
    /// Patch no hot instruction site: every access traps (`--no-patch`).
    pub no_patch: bool,
    /// Show the status line on stderr when it is a terminal.
    pub status: bool,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// Rings in the shared memory.
    pub rings: u32,
    /// Records per ring of the first `big_rings` rings (power of two).
    pub capacity: u32,
    /// Rings (from the first) with `capacity` records.
    pub big_rings: u32,
    /// Records per ring of the others (power of two).
    pub small_capacity: u32,
    /// More environment variables for the program (`replay` names its model there;
    /// descriptors they name must be inheritable).
    pub env: Vec<(OsString, OsString)>,
    /// The route (`--route`); `None` picks it per program ([`route::choose`]).
    pub route: Option<Route>,
    /// With the automatic route: hand a preload-traced process over to the ptrace route
    /// when it execs a program only that route reaches (`replay`, whose model lives in
    /// the preload library, does not).
    pub hand_off: bool,
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
            no_patch: false,
            status: true,
            command,
            rings: DEFAULT_RINGS,
            capacity: DEFAULT_CAPACITY,
            big_rings: DEFAULT_BIG_RINGS,
            small_capacity: DEFAULT_SMALL_CAPACITY,
            env: Vec::new(),
            route: None,
            hand_off: true,
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
#[derive(Clone, Debug)]
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
    /// Device mappings traced (`MAP` events).
    pub maps: u64,
    /// Files the program mapped shared that no device rule matched (not traced), in the
    /// order first mapped; at most 64.
    pub unmatched: Vec<UnmatchedFile>,
    /// How many more such files there were.
    pub unmatched_more: u64,
    /// What hot-site patching did.
    pub patching: Patching,
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
    /// [`ENV_RINGS`] is not a number of rings.
    #[error("bad {ENV_RINGS}={0:?}: expected a number of rings from 1 to {MAX_RINGS}")]
    BadRings(String),
    /// `MMIO_TRACE_CLOCK` names no clock, or one this machine cannot use.
    #[error("{0}")]
    BadClock(String),
    /// A `--range`/`--bypass` value did not parse.
    #[error(
        "bad range {0:?}: expected START-END or START+LEN (decimal or 0x hex), comma separated"
    )]
    BadRange(String),
    /// A `--range`/`--bypass` value has a range whose end is before its start, or whose
    /// length runs past the end of the address space.
    #[error("bad range {0:?}: {1}")]
    EmptyRange(String, String),
    /// `record --pid`: the process cannot be attached to (nothing was written; the
    /// reason says what to change).
    #[error("cannot attach to process {pid}: {reason}")]
    Attach {
        /// The process id given.
        pid: i32,
        /// Why, and what to change.
        reason: String,
    },
    /// Shared memory could not be set up.
    #[error("cannot create the shared-memory channel: {0}")]
    Shm(io::Error),
    /// The program could not be started (nothing was recorded, no file touched).
    #[error("cannot run {program}: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        error: io::Error,
    },
    /// The output could not be opened (the program was not started).
    #[error("cannot write the trace to {path}: {error}")]
    Open {
        /// The output file, or "standard output".
        path: String,
        /// Why.
        error: io::Error,
    },
    /// Writing the trace failed while the program ran. The program ran to its end all
    /// the same; the file holds the first `written` bytes of the trace, which end on a
    /// record boundary (a pipe whose reader left got what it read).
    #[error("cannot write the trace to {path}: {error}")]
    Incomplete {
        /// The output file, or "standard output".
        path: String,
        /// Why.
        error: io::Error,
        /// How the program ended, and what was recorded (boxed: an error stays small).
        outcome: Box<Outcome>,
        /// Bytes of the trace written: whole records in a regular file; to a pipe or a
        /// device, every byte that went, the last record possibly cut.
        written: u64,
    },
}

impl Error {
    /// The underlying I/O error, for callers that print the chain themselves.
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            Error::Shm(e) => Some(e),
            Error::Spawn { error, .. }
            | Error::Open { error, .. }
            | Error::Incomplete { error, .. } => Some(error),
            _ => None,
        }
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

/// Whether `path` (an existing file) is one of the devices `globs` declares, as the
/// tracer would match it: a trace written there would empty the device file.
pub fn is_declared_device(path: &std::path::Path, globs: &[String]) -> bool {
    let Ok(canon) = std::fs::canonicalize(path) else {
        return false;
    };
    let canon = canon.to_string_lossy();
    device_globs(globs)
        .iter()
        .any(|g| rules::glob_match(g.as_bytes(), canon.as_bytes()))
}

/// Checks a `--range`/`--bypass` value (`START-END` or `START+LEN`, comma separated).
pub fn check_ranges(s: &str) -> Result<String, Error> {
    if rules::parse_ranges(s).is_some() {
        return Ok(s.to_string());
    }
    // Numbers that parse in the wrong order or too far deserve a message of their own.
    for part in s.split(',').map(str::trim) {
        let nums = |a: &str, b: &str| Some((rules::parse_num(a)?, rules::parse_num(b)?));
        if let Some((a, b)) = part.split_once('-').and_then(|(a, b)| nums(a, b)) {
            if b < a {
                let why = format!("its end {b:#x} is before its start {a:#x} in {part:?}");
                return Err(Error::EmptyRange(s.to_string(), why));
            }
        }
        if let Some((a, n)) = part.split_once('+').and_then(|(a, b)| nums(a, b)) {
            if a.checked_add(n).is_none() {
                let why = format!("{part:?} runs past the end of the address space");
                return Err(Error::EmptyRange(s.to_string(), why));
            }
        }
    }
    Err(Error::BadRange(s.to_string()))
}

/// The header events every trace starts with: `VERSION` and this machine's `PCIDEV`s.
pub fn header_events() -> Vec<Event> {
    let mut v = vec![Event::Version(KERNEL_VERSION.as_bytes().to_vec())];
    v.extend(pci::machine_pcidevs());
    v
}

/// Records `opts.command`; returns when it and every process it started have ended.
///
/// The output is opened before the program starts but emptied (or created, mode 0600)
/// only once it has started: a program that cannot be run leaves an earlier trace
/// untouched. With no output file, the program's standard output goes to standard error,
/// so that it does not mix with the trace. A write that fails does not stop the
/// recording: the program runs to its end, its rings are drained and discarded, and
/// [`Error::Incomplete`] says how it ended and how much of the trace was written.
pub fn record(opts: &Options) -> Result<Outcome, Error> {
    let (program, args) = opts.command.split_first().ok_or(Error::NoCommand)?;
    for r in opts.ranges.iter().chain(&opts.bypass) {
        check_ranges(r)?;
    }
    let rings = match std::env::var_os(ENV_RINGS) {
        None => opts.rings,
        Some(v) => v
            .to_str()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|n| (1..=MAX_RINGS).contains(n))
            .ok_or_else(|| Error::BadRings(v.to_string_lossy().into_owned()))?,
    };
    // One clock for every event: the TSC where it is invariant, else CLOCK_MONOTONIC.
    let clock = mmio_trace_ring::Clock::choose().map_err(Error::BadClock)?;
    let mut choice = route::choose(program, opts.route);
    if choice.unreadable {
        eprintln!(
            "mmio-trace: note: {}; the preload route is used (a static, Go or set-uid program would not be traced: --route ptrace traces it)",
            choice.reason
        );
    }
    if choice.privileged && !may_trace_privileged() {
        eprintln!(
            "mmio-trace: warning: {} is a {}: traced by ptrace from a recorder without CAP_SYS_PTRACE, it runs without those privileges (run the recorder as root to keep them)",
            program.to_string_lossy(),
            choice.reason
        );
    }
    if opts.route == Some(Route::Preload) {
        if let Some(why) = route::foreign_loader(program) {
            eprintln!(
                "mmio-trace: warning: {} is a {}: its loader cannot load the preload library (built against glibc) and will not start it (--route inject traces it)",
                program.to_string_lossy(),
                why.text()
            );
        }
    }
    let lib = match choice.route {
        Route::Preload => Some(locate::preload_library().ok_or(Error::NoPreload)?),
        Route::Ptrace | Route::Inject => None,
    };
    let out_name = |p: &Option<PathBuf>| match p {
        Some(p) => p.display().to_string(),
        None => "standard output".to_string(),
    };
    let pending = output::Pending::open(opts.output.as_deref()).map_err(|error| Error::Open {
        path: out_name(&opts.output),
        error,
    })?;
    // Signals that arrive from now on are the program's (see `signals`); a file-size
    // limit fails a write instead of killing the recorder. (Not before the output is
    // open: ^C must still end a recorder that waits for the reader of a FIFO.)
    let forwarder = signals::Forwarder::install();
    let layout = Layout {
        rings,
        capacity: opts.capacity,
        big_rings: opts.big_rings.min(rings),
        small_capacity: opts.small_capacity,
    };
    let mut consumer = match Consumer::with_clock(layout, clock) {
        Ok(c) => c,
        Err(e) => {
            pending.abandon();
            return Err(Error::Shm(e));
        }
    };

    // Become the subreaper first, so that orphaned grandchildren are ours to wait for.
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // A process that carries the injected core, and a process of the preload route about
    // to exec a program the preload library cannot reach, ask to be seized before the
    // exec (see `handoff`): the new image gets a core before its first instruction.
    // The core's settings name the hand-off socket: they are set once it exists.
    let params = std::sync::Arc::new(std::sync::OnceLock::<inject::Params>::new());
    let injected = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let serve = match choice.route {
        // Not when the preload route is forced: nothing leaves it then.
        Route::Preload => opts.route.is_none() && opts.hand_off,
        Route::Inject => true,
        Route::Ptrace => false,
    };
    let handoff = if serve {
        let (params, injected) = (params.clone(), injected.clone());
        match handoff::Listener::serve(move |req, _peer| {
            inject_hand_over(req, params.get(), &injected)
        }) {
            Ok(l) => Some(l),
            // Without it the inject route could not follow an exec (the preload route
            // goes on: its execs of static programs are then not traced, and said so).
            Err(error) if choice.route == Route::Inject => {
                pending.abandon();
                return Err(Error::Spawn {
                    program: program.to_string_lossy().into_owned(),
                    error,
                });
            }
            Err(_) => None,
        }
    } else {
        None
    };
    if handoff.is_some() {
        let vars = recorder_vars(opts, &consumer, handoff.as_ref())
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let _ = params.set(inject::Params(vars));
    }
    let mut supervisor = None;
    let child_pid = match lib {
        Some(lib) => {
            let child = match spawn_preloaded(opts, &consumer, lib, program, args, handoff.as_ref())
            {
                Ok(c) => c,
                Err(e) => {
                    pending.abandon();
                    return Err(e);
                }
            };
            child.id() as i32
        }
        None if choice.route == Route::Inject => {
            let spawned = start_for(opts, program, args).and_then(|start| {
                match inject::spawn(start, params.get().expect("set above")) {
                    Ok(pid) => Ok(Some(pid)),
                    Err(inject::SpawnError::Exec(error)) => Err(Error::Spawn {
                        program: program.to_string_lossy().into_owned(),
                        error,
                    }),
                    // The program never ran: it is started again under the ptrace route.
                    Err(inject::SpawnError::Core(e)) => {
                        eprintln!(
                            "mmio-trace: warning: {e}; the ptrace route traces it instead (the same events, several times slower per access)"
                        );
                        Ok(None)
                    }
                }
            });
            match spawned {
                Ok(Some(pid)) => pid,
                Ok(None) => match spawn_ptrace(opts, &consumer, program, args) {
                    Ok(s) => {
                        choice.route = Route::Ptrace;
                        choice.reason.push_str("; the core could not be put in");
                        let pid = s.pid;
                        supervisor = Some(s);
                        pid
                    }
                    Err(e) => {
                        pending.abandon();
                        return Err(e);
                    }
                },
                Err(e) => {
                    pending.abandon();
                    return Err(e);
                }
            }
        }
        None => match spawn_ptrace(opts, &consumer, program, args) {
            Ok(s) => {
                let pid = s.pid;
                supervisor = Some(s);
                pid
            }
            Err(e) => {
                pending.abandon();
                return Err(e);
            }
        },
    };
    // From here on the program runs whatever happens to the output: a failure to write
    // is remembered and the rings are drained all the same.
    let mut out = output::Trace::start(pending, opts.format);
    for e in header_events() {
        out.write(decode::Out::Event(e));
    }

    let marks = marks::MarkSocket::bind().ok();
    let nrings = rings as usize;
    let mut merger = decode::Merger::new(nrings + 1, consumer.header().start_ns);
    // The route is named unless it is the usual one: the preload route a dynamic
    // program gets by default (such a trace stays as it always was).
    if opts.route.is_some() || choice.route != Route::Preload {
        let route_mark = choice.mark();
        merger.add_mark(
            nrings,
            consumer.header().start_ns,
            route_mark.as_bytes(),
            route_mark.len() as u64,
        );
    }
    let mut status = (opts.status && io::stderr().is_terminal()).then(Status::new);
    let mut exit = None;
    let mut idle = Duration::from_micros(100);
    let mut said_rings_full = false;
    loop {
        let mut got = 0usize;
        let wm = consumer.poll(|d| {
            got += d.records.len();
            merger.add(d)
        });
        if let Some(m) = &marks {
            got += m.drain_into(&mut merger, nrings);
        }
        if !said_rings_full && consumer.header().ring_waits.load(Ordering::Relaxed) != 0 {
            // Nothing is lost (a thread without a ring waits for one), but the program is
            // slowed: say so, here and in the log.
            said_rings_full = true;
            let text = format!(
                "mmio-trace: all {rings} rings are in use; traced threads wait for a free one (no event is lost, the program is slowed; {ENV_RINGS} sets more)"
            );
            eprintln!("{text}");
            merger.add_mark(
                nrings,
                mmio_trace_ring::monotonic_ns(),
                text.as_bytes(),
                text.len() as u64,
            );
        }
        merger.emit_out(Some(wm), |o| out.write(o));
        // Reap every child of this thread that ended (orphans come to the subreaper);
        // stop when none is left and no supervisor thread has a tracee.
        let mut all_gone = false;
        loop {
            // Exits only, looked at before they are taken: a child of ours that was
            // handed over to the ptrace route has a tracer in this very process, so its
            // ptrace stops show here too (as CLD_TRAPPED): those are its supervisor
            // thread's to take.
            // SAFETY: a zeroed siginfo is valid; plain waitid.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let r = unsafe {
                libc::waitid(
                    libc::P_ALL,
                    0,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT | libc::__WNOTHREAD,
                )
            };
            if r < 0 {
                all_gone = io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD);
                break;
            }
            // SAFETY: waitid filled a SIGCHLD siginfo (or left it zeroed: no child ready).
            let pid = unsafe { info.si_pid() };
            if pid == 0 || info.si_code == libc::CLD_TRAPPED {
                break;
            }
            let mut st = 0;
            // SAFETY: plain waitpid of a child that has ended.
            if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG | libc::__WNOTHREAD) } != pid {
                break;
            }
            if pid == child_pid {
                exit = Some(if libc::WIFSIGNALED(st) {
                    Exit::Signal(libc::WTERMSIG(st))
                } else {
                    Exit::Code(libc::WEXITSTATUS(st))
                });
            }
        }
        if let Some(s) = &supervisor {
            // Under the ptrace route the program is the supervisor thread's child (this
            // thread reaps only orphans handed to the subreaper).
            exit = s.exit();
            all_gone &= s.done();
            if all_gone {
                drop(supervisor.take());
            }
        }
        if let Some(s) = &mut status {
            s.tick(
                merger.emitted,
                out.bytes(),
                consumer.header().attached.load(Ordering::Relaxed),
                false,
            );
        }
        if all_gone {
            break;
        }
        forwarder.forward(exit.is_none().then_some(child_pid));
        // Back off while the program is quiet, so untraced code does not share its CPUs
        // with an eager recorder. Rings hold 16384 events (2048 beyond the first 64, still
        // 6 ms of back-to-back traps): a program that starts trapping fills one only if the
        // recorder sleeps through all of them, and 5 ms is less.
        if got == 0 {
            std::thread::sleep(idle);
            idle = (idle * 2).min(Duration::from_millis(5));
        } else {
            idle = Duration::from_micros(100);
        }
    }
    // No more hand-overs; the supervisor threads of those made have seen their last
    // tracee go (they wrote their last events).
    drop(handoff);
    for t in std::mem::take(&mut *injected.lock().unwrap_or_else(|e| e.into_inner())) {
        let _ = t.join();
    }
    // The program itself, handed over for an exec that failed, may have ended while its
    // inject thread still traced it: that thread took its status.
    if exit.is_none() {
        exit = inject::reaped(child_pid);
    }
    // Every process is gone: nothing can be in flight any more.
    consumer.poll(|d| merger.add(d));
    merger.emit_out(None, |o| out.write(o));
    let h = consumer.header();
    let lost = h.lost.load(Ordering::Relaxed);
    if lost > 0 {
        out.write(decode::Out::Event(Event::LostEvents(lost)));
    }
    let write_err = out.finish();
    drop(forwarder);
    let unmatched = merger.unmatched();
    let outcome = Outcome {
        exit: exit.unwrap_or(Exit::Code(0)),
        events: merger.emitted,
        slow_steps: h.slow_steps.load(Ordering::Relaxed),
        unpaused_steps: h.unpaused_steps.load(Ordering::Relaxed),
        lost,
        processes: h.attached.load(Ordering::Relaxed),
        maps: out.maps,
        unmatched: unmatched.0,
        unmatched_more: unmatched.1,
        patching: merger.patching(),
    };
    if let Some(s) = &mut status {
        s.tick(merger.emitted, out.bytes(), outcome.processes, true);
    }
    match write_err {
        None => Ok(outcome),
        Some(error) => Err(Error::Incomplete {
            path: out_name(&opts.output),
            error,
            outcome: Box::new(outcome),
            written: out.bytes(),
        }),
    }
}

/// Whether this process has `CAP_SYS_PTRACE` (bit 19 of `CapEff`): a program it traces
/// keeps the set-uid/set-gid/file-capability privileges it gains at exec.
fn may_trace_privileged() -> bool {
    has_capability("self", 19)
}

/// Whether `/proc/PROC/status` (`PROC`: a pid, a tid or `self`) lists capability `bit`
/// in `CapEff`; `false` when it cannot be read.
pub(crate) fn has_capability(proc_: &str, bit: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{proc_}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|c| c & (1 << bit) != 0)
}

/// The recorder's answer to a hand-off request of a process that carries the injected
/// core: thread `tid` is about to exec; it is seized, and its new image gets a core.
fn inject_hand_over(
    req: mmio_trace_tracer::handoff::Request,
    params: Option<&inject::Params>,
    injected: &std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
) -> u8 {
    use mmio_trace_tracer::handoff::{Request, REFUSED, SEIZED};
    let Some(params) = params else { return REFUSED };
    match req {
        Request::Seize(tid) => match inject::adopt(tid as i32, params.clone()) {
            Ok(t) => {
                injected.lock().unwrap_or_else(|e| e.into_inner()).push(t);
                SEIZED
            }
            Err(e) => {
                eprintln!(
                    "mmio-trace: warning: cannot seize thread {tid} before its exec ({e}): the exec is refused"
                );
                REFUSED
            }
        },
        Request::Release(tid) => {
            inject::release(tid as i32);
            REFUSED
        }
    }
}

/// The variables that tell the tracer in a program where the recorder is and what to
/// trace: the preload route puts them in the environment, the inject route hands them
/// to the core.
fn recorder_vars(
    opts: &Options,
    consumer: &Consumer,
    handoff: Option<&handoff::Listener>,
) -> Vec<(&'static str, String)> {
    let proc_fd = |fd: i32| format!("/proc/{}/fd/{fd}", std::process::id());
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    let mut v = vec![
        (mmio_trace_ring::ENV_FD, consumer.fd().to_string()),
        (mmio_trace_ring::ENV_LIVE_FD, consumer.live_fd().to_string()),
        (mmio_trace_ring::ENV_SHM_PATH, proc_fd(consumer.fd())),
        (mmio_trace_ring::ENV_LIVE_PATH, proc_fd(consumer.live_fd())),
        (rules::ENV_DEVICES, device_globs(&opts.devices).join("\n")),
        (rules::ENV_NO_DEFAULTS, flag(opts.no_default_devices)),
        (rules::ENV_RANGES, opts.ranges.join(",")),
        (rules::ENV_BYPASS, opts.bypass.join(",")),
        (rules::ENV_NO_ALIAS, flag(opts.no_alias)),
        (rules::ENV_NO_PATCH, flag(opts.no_patch)),
        (
            mmio_trace_tracer::handoff::ENV_RECORDER_PID,
            std::process::id().to_string(),
        ),
    ];
    if let Some(l) = handoff {
        v.push((mmio_trace_tracer::handoff::ENV_HANDOFF, l.env_value()));
    }
    v
}

/// Starts the program with the preload library and the recorder's variables.
fn spawn_preloaded(
    opts: &Options,
    consumer: &Consumer,
    lib: PathBuf,
    program: &OsString,
    args: &[OsString],
    handoff: Option<&handoff::Listener>,
) -> Result<std::process::Child, Error> {
    let mut preload = lib.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LD_PRELOAD", preload)
        .envs(recorder_vars(opts, consumer, handoff));
    cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
    if opts.output.is_none() {
        // The trace owns standard output; the program's output goes to standard error
        // (nowhere if the recorder has none).
        let err = io::stderr().as_fd().try_clone_to_owned();
        cmd.stdout(err.map_or_else(|_| std::process::Stdio::null(), Into::into));
    }
    cmd.spawn().map_err(|error| Error::Spawn {
        program: program.to_string_lossy().into_owned(),
        error,
    })
}

/// Starts the program under the ptrace route's supervisor (no preload library, no
/// variable of the recorder's in its environment).
fn spawn_ptrace(
    opts: &Options,
    consumer: &Consumer,
    program: &OsString,
    args: &[OsString],
) -> Result<remote::supervisor::Supervisor, Error> {
    let start = start_for(opts, program, args)?;
    remote::supervisor::start(start, consumer.shm(), ptrace_rules(opts)).map_err(|error| {
        Error::Spawn {
            program: program.to_string_lossy().into_owned(),
            error,
        }
    })
}

/// What the ptrace and inject routes exec: the program found as `execvp` finds it, its
/// arguments, the recorder's environment with `--env` applied (none of the recorder's
/// variables: the tracer in the program gets them otherwise), and its standard output.
fn start_for(
    opts: &Options,
    program: &OsString,
    args: &[OsString],
) -> Result<remote::supervisor::Start, Error> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let spawn_err = |error: io::Error| Error::Spawn {
        program: program.to_string_lossy().into_owned(),
        error,
    };
    let cstr = |b: Vec<u8>| {
        std::ffi::CString::new(b).map_err(|_| {
            spawn_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an argument or variable holds a NUL byte",
            ))
        })
    };
    let path = resolve_program(program).ok_or_else(|| {
        spawn_err(io::Error::new(
            io::ErrorKind::NotFound,
            "No such file or directory (os error 2)",
        ))
    })?;
    let mut argv = vec![cstr(program.as_bytes().to_vec())?];
    for a in args {
        argv.push(cstr(a.as_bytes().to_vec())?);
    }
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, v) in &opts.env {
        env.retain(|(o, _)| o != k);
        env.push((k.clone(), v.clone()));
    }
    let mut envp = Vec::new();
    for (k, v) in env {
        let mut b = k.into_vec();
        b.push(b'=');
        b.extend_from_slice(v.as_bytes());
        envp.push(cstr(b)?);
    }
    let stdout = if opts.output.is_none() {
        io::stderr().as_fd().try_clone_to_owned().ok()
    } else {
        None
    };
    Ok(remote::supervisor::Start {
        path: cstr(path.into_os_string().into_vec())?,
        argv,
        envp,
        stdout,
    })
}

/// The device rules of the ptrace route, from the options.
fn ptrace_rules(opts: &Options) -> rules::Rules {
    let mut rules = rules::Rules::new(&device_globs(&opts.devices), opts.no_default_devices);
    rules.ranges = opts
        .ranges
        .iter()
        .flat_map(|r| rules::parse_ranges(r).unwrap_or_default())
        .collect();
    rules.bypass = opts
        .bypass
        .iter()
        .flat_map(|r| rules::parse_ranges(r).unwrap_or_default())
        .collect();
    rules.no_alias = opts.no_alias;
    rules.no_patch = true;
    rules
}

/// The file `execvp` would run for `program`: itself if it names a path, else the first
/// executable file of that name in `PATH`.
fn resolve_program(program: &OsString) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `bytes` for people: `512 B`, `1.5 KiB`, `12.0 MiB`, `3.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The status line: events, events/s, bytes, processes; redrawn at most 4 times a second.
pub(crate) struct Status {
    start: Instant,
    last: Instant,
    last_events: u64,
}

impl Status {
    pub(crate) fn new() -> Status {
        let now = Instant::now();
        Status {
            start: now,
            last: now,
            last_events: 0,
        }
    }

    pub(crate) fn tick(&mut self, events: u64, bytes: u64, processes: u64, done: bool) {
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
        let _ = write!(
            e,
            "\r\x1b[Kmmio-trace: {} {}, {rate:.0} events/s, {}, {processes} {}",
            events,
            if events == 1 { "event" } else { "events" },
            human_bytes(bytes),
            if processes == 1 {
                "process"
            } else {
                "processes"
            },
        );
        if done {
            let _ = writeln!(e);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_line_sizes_are_for_people() {
        let h = super::human_bytes;
        assert_eq!(
            [h(0), h(1023), h(1024), h(1536), h(5 << 20), h(3 << 30)],
            ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB"]
        );
    }
}
