//! `record --pid PID`: attach to a running process and all its threads, trace its device
//! mappings for a while, and detach leaving it as it was.
//!
//! Two threads: the *tracer* (`session.rs`) seizes the process with ptrace, finds its
//! device mappings ([`maps`]), protects them, completes each faulting access from outside
//! and writes the events into the shared rings, exactly as the ptrace route does for a
//! program the recorder started; the calling thread drains, merges and writes the log as
//! `record` does. No seccomp filter is ever installed into an attached process (a filter
//! cannot be removed, and without its supervisor it breaks the program): new device
//! mappings are seen at `PTRACE_SYSCALL` stops of the `mmap` family.
//!
//! The recording stops at the end of `--duration`, on SIGINT, SIGTERM, SIGHUP (or any
//! other signal that would end the recorder) to the recorder, when the trace can no
//! longer be written, or when the process ends. Then the tracer detaches (`session.rs`
//! says how, and what it leaves as it was).

mod core;
pub mod maps;
mod preflight;
mod session;
mod stop;

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mmio_trace_format::{Event, Format};
use mmio_trace_ring::{Consumer, Layout};
use mmio_trace_tracer::rules::{self, Rules};

use crate::{decode, marks, output, Error, Exit, Outcome};

pub use preflight::{preflight, Target};

/// How `record --pid` reaches the process's accesses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachRoute {
    /// The recorder traces every thread with ptrace and completes each access from
    /// outside; new mappings are seen at the `mmap` family's system-call stops.
    #[default]
    Ptrace,
    /// The tracer's core is put into the process, which then runs without ptrace; new
    /// device mappings are found in `/proc/PID/maps` every few milliseconds.
    Inject,
}

/// What `record --pid` attaches to and how it records.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// How to reach the process's accesses.
    pub route: AttachRoute,
    /// The process (a thread id names its process).
    pub pid: i32,
    /// Detach after this long (`None`: at a signal or the process's end).
    pub duration: Option<Duration>,
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
    /// Show the status line on stderr when it is a terminal, and say on stderr when the
    /// recorder attached and detached.
    pub status: bool,
}

impl AttachOptions {
    /// Attach to `pid` until a signal or its end, kernel text into `output`, default rules.
    pub fn new(pid: i32, output: Option<PathBuf>) -> AttachOptions {
        AttachOptions {
            route: AttachRoute::Ptrace,
            pid,
            duration: None,
            output,
            format: Format::Text,
            devices: Vec::new(),
            no_default_devices: false,
            ranges: Vec::new(),
            bypass: Vec::new(),
            no_alias: false,
            status: true,
        }
    }

    fn rules(&self) -> Rules {
        let mut r = Rules::new(&crate::device_globs(&self.devices), self.no_default_devices);
        r.ranges = rules::parse_ranges(&self.ranges.join(",")).unwrap_or_default();
        r.bypass = rules::parse_ranges(&self.bypass.join(",")).unwrap_or_default();
        r.no_alias = self.no_alias;
        r.no_patch = true;
        r
    }
}

/// What the tracer thread tells the recorder once it has attached, or why it could not.
enum Started {
    Attached {
        /// `CLOCK_MONOTONIC` ns when every thread was stopped (the attach MARK's time).
        ts_ns: u64,
        /// From the first ptrace call to every thread running traced again.
        took: Duration,
        /// The process (its thread group id).
        pid: i32,
        threads: usize,
        maps: usize,
        /// What to say in the log and on stderr beyond the attach line (mappings without
        /// an alias, ...).
        notes: Vec<String>,
    },
    Failed(Error),
}

/// How the tracer thread ended.
struct Ended {
    /// The process's exit, if it ended while attached.
    exit: Option<Exit>,
    /// `CLOCK_MONOTONIC` ns of the detach (or of the process's end).
    ts_ns: u64,
    /// What to say in the log and on stderr (errors met while detaching, ...).
    notes: Vec<String>,
    /// From the stop request to the last thread detached (`None`: the process ended).
    took: Option<Duration>,
}

/// The core's settings for an attached process (the descriptors are added once they are
/// in the process): the rules, and the recorder's descriptors by path for a core that
/// cannot be handed them.
fn core_params(opts: &AttachOptions) -> crate::inject::Params {
    let me = std::process::id();
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    let mut v = vec![
        (
            rules::ENV_DEVICES,
            crate::device_globs(&opts.devices).join("\n"),
        ),
        (rules::ENV_NO_DEFAULTS, flag(opts.no_default_devices)),
        (rules::ENV_RANGES, opts.ranges.join(",")),
        (rules::ENV_BYPASS, opts.bypass.join(",")),
        (rules::ENV_NO_ALIAS, flag(opts.no_alias)),
        (rules::ENV_NO_PATCH, flag(true)),
        (mmio_trace_tracer::handoff::ENV_RECORDER_PID, me.to_string()),
    ];
    v.push((
        mmio_trace_tracer::attached::ENV_POLL_MS,
        poll_ms().to_string(),
    ));
    crate::inject::Params(v.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// How often the core looks for new device mappings, in ms: `MMIO_TRACE_ATTACH_POLL_MS`
/// in the recorder's environment, else the core's default.
fn poll_ms() -> u64 {
    std::env::var(mmio_trace_tracer::attached::ENV_POLL_MS)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(mmio_trace_tracer::attached::DEFAULT_POLL_MS)
}

impl Ended {
    /// Ended now (its timestamp), with `exit` and `notes`, no detach time.
    fn now(exit: Option<Exit>, notes: Vec<String>) -> Ended {
        Ended {
            exit,
            ts_ns: mmio_trace_ring::monotonic_ns(),
            notes,
            took: None,
        }
    }
}

/// `1.234 ms`.
fn millis(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Attaches to `opts.pid`, records until the duration ends, the recorder gets SIGINT,
/// SIGTERM or SIGHUP, or the process ends; detaches. The outcome's exit is `Code(0)` when
/// the recorder detached, the process's own when it ended while attached.
///
/// Nothing is written (and an existing output file is left as it was) when the process
/// cannot be attached to ([`Error::Attach`]).
pub fn attach(opts: &AttachOptions) -> Result<Outcome, Error> {
    for r in opts.ranges.iter().chain(&opts.bypass) {
        crate::check_ranges(r)?;
    }
    let target = preflight(opts.pid)?;
    let clock = mmio_trace_ring::Clock::choose().map_err(Error::BadClock)?;
    let out_name = |p: &Option<PathBuf>| match p {
        Some(p) => p.display().to_string(),
        None => "standard output".to_string(),
    };
    let pending = output::Pending::open(opts.output.as_deref()).map_err(|error| Error::Open {
        path: out_name(&opts.output),
        error,
    })?;
    let layout = Layout {
        rings: crate::DEFAULT_RINGS,
        capacity: crate::DEFAULT_CAPACITY,
        big_rings: crate::DEFAULT_BIG_RINGS,
        small_capacity: crate::DEFAULT_SMALL_CAPACITY,
    };
    let mut consumer = match Consumer::with_clock(layout, clock) {
        Ok(c) => c,
        Err(e) => {
            pending.abandon();
            return Err(Error::Shm(e));
        }
    };
    let stop = stop::Stop::install();
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let (tx, rx) = mpsc::channel();
    session::clear_stop();
    let run: Box<dyn FnOnce() -> Ended + Send> = match opts.route {
        AttachRoute::Ptrace => {
            let setup = session::Setup {
                target: target.clone(),
                rules: opts.rules(),
                shm: consumer.shm(),
            };
            Box::new(move || session::run(setup, tx))
        }
        AttachRoute::Inject => {
            let mut params = core_params(opts);
            let path = |fd: i32| format!("/proc/{}/fd/{fd}", std::process::id());
            params
                .0
                .push((mmio_trace_ring::ENV_SHM_PATH.into(), path(consumer.fd())));
            params.0.push((
                mmio_trace_ring::ENV_LIVE_PATH.into(),
                path(consumer.live_fd()),
            ));
            let setup = core::Setup {
                target: target.clone(),
                params,
                poll_ms: poll_ms(),
                fds: [consumer.fd(), consumer.live_fd()],
                maps: maps::find(target.pid, &opts.rules()).map_or(0, |m| m.len()),
            };
            Box::new(move || core::run(setup, tx))
        }
    };
    let tracer = std::thread::Builder::new()
        .name("mmio-trace-attach".into())
        .spawn(run)
        .map_err(|e| Error::Attach {
            pid: target.pid,
            reason: format!("cannot start the tracer thread: {e}"),
        })?;
    let tracer_tid = stop::thread_id(&tracer);
    let (ts_attach, attach_took, threads, nmaps, notes) = match rx.recv() {
        Ok(Started::Attached {
            ts_ns,
            took,
            pid,
            threads,
            maps,
            notes,
        }) => {
            debug_assert_eq!(pid, target.pid);
            (ts_ns, took, threads, maps, notes)
        }
        Ok(Started::Failed(e)) => {
            let _ = tracer.join();
            pending.abandon();
            return Err(e);
        }
        Err(_) => {
            let _ = tracer.join();
            pending.abandon();
            return Err(Error::Attach {
                pid: target.pid,
                reason: "the tracer thread ended before attaching".into(),
            });
        }
    };
    let mut out = output::Trace::start(pending, opts.format);
    for e in crate::header_events() {
        out.write(decode::Out::Event(e));
    }
    let nrings = layout.rings as usize;
    let mut merger = decode::Merger::new(nrings + 1, consumer.header().start_ns);
    let say = |merger: &mut decode::Merger, ts: u64, text: &str| {
        merger.add_mark(nrings, ts, text.as_bytes(), text.len() as u64);
    };
    let attached = format!(
        "mmio-trace: attached to {} ({threads} {}, {nmaps} device {})",
        target.pid,
        if threads == 1 { "thread" } else { "threads" },
        if nmaps == 1 { "mapping" } else { "mappings" }
    );
    say(&mut merger, ts_attach, &attached);
    if opts.status {
        eprintln!("{attached} in {}", millis(attach_took));
    }
    for n in &notes {
        say(&mut merger, ts_attach, n);
        eprintln!("{n}");
    }
    let marks = marks::MarkSocket::bind().ok();
    let mut status = (opts.status && io::stderr().is_terminal()).then(crate::Status::new);
    let mut idle = Duration::from_micros(100);
    let mut stopping = false;
    loop {
        let mut got = 0usize;
        let wm = consumer.poll(|d| {
            got += d.records.len();
            merger.add(d)
        });
        if let Some(m) = &marks {
            got += m.drain_into(&mut merger, nrings);
        }
        merger.emit_out(Some(wm), |o| out.write(o));
        if let Some(s) = &mut status {
            s.tick(merger.emitted, out.bytes(), 1, false);
        }
        if tracer.is_finished() {
            break;
        }
        let expired = deadline.is_some_and(|d| Instant::now() >= d);
        // A trace that can no longer be written is not worth slowing the process for.
        if expired || stop.requested() || out.failed() {
            // Asked again every round until the tracer has seen it: the signal may land
            // between its check and its wait.
            stopping = true;
            session::request_stop();
            stop::kick(tracer_tid);
        }
        if got == 0 {
            let mut nap = idle;
            if let Some(d) = deadline.filter(|_| !stopping) {
                nap = nap.min(d.saturating_duration_since(Instant::now()));
            }
            std::thread::sleep(nap);
            idle = (idle * 2).min(Duration::from_millis(5));
        } else {
            idle = Duration::from_micros(100);
        }
    }
    let ended = tracer.join().unwrap_or_else(|_| Ended {
        exit: None,
        ts_ns: mmio_trace_ring::monotonic_ns(),
        notes: vec![
            "mmio-trace: the tracer thread panicked; the process may be left stopped".into(),
        ],
        took: None,
    });
    // The process is detached or gone: nothing more can be written by the tracer.
    consumer.poll(|d| merger.add(d));
    for n in &ended.notes {
        say(&mut merger, ended.ts_ns, n);
        eprintln!("{n}");
    }
    let last = match ended.exit {
        None => "mmio-trace: detached".to_string(),
        Some(Exit::Code(c)) => format!("mmio-trace: process {} exited with status {c}", target.pid),
        Some(Exit::Signal(s)) => format!(
            "mmio-trace: process {} was killed by signal {s}",
            target.pid
        ),
    };
    say(&mut merger, ended.ts_ns, &last);
    if opts.status {
        match ended.took {
            Some(t) => eprintln!("{last} in {}", millis(t)),
            None => eprintln!("{last}"),
        }
    }
    merger.emit_out(None, |o| out.write(o));
    let h = consumer.header();
    let lost = h.lost.load(Ordering::Relaxed);
    if lost > 0 {
        out.write(decode::Out::Event(Event::LostEvents(lost)));
    }
    let write_err = out.finish();
    drop(stop);
    let unmatched = merger.unmatched();
    let outcome = Outcome {
        exit: ended.exit.unwrap_or(Exit::Code(0)),
        events: merger.emitted,
        slow_steps: h.slow_steps.load(Ordering::Relaxed),
        unpaused_steps: 0,
        lost,
        processes: 1,
        maps: out.maps,
        unmatched: unmatched.0,
        unmatched_more: unmatched.1,
        patching: merger.patching(),
    };
    if let Some(s) = &mut status {
        s.tick(merger.emitted, out.bytes(), 1, true);
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
