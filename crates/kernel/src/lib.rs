//! Drive the Linux kernel's own mmiotrace tracer (for kernel drivers) through tracefs.
//!
//! The kernel tracer is powerful but awkward: it offlines every CPU but one, its ring
//! buffer overflows silently unless someone reads `trace_pipe` in time, and the
//! `VERSION`/`PCIDEV` header only comes through `trace_pipe`. [`record`] makes it one
//! call: check the kernel, size the buffer, enable the tracer, stream `trace_pipe` to
//! a file while a command runs, insert markers, and always put the previous tracer,
//! buffer size and online CPUs back, even when interrupted.

#![warn(missing_docs)]

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a kernel recording's pid is published, so that `mmio-trace mark` from
/// another shell finds the tracefs of the recording in progress.
pub const ACTIVE_FILE: &str = "/run/mmio-trace-kernel.active";

/// Why a kernel recording could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Not running as root.
    #[error("the kernel tracer is controlled through tracefs, which only root may write: run as root (e.g. with sudo)")]
    NotRoot,
    /// No tracefs found or mountable.
    #[error("tracefs is not available at /sys/kernel/tracing or /sys/kernel/debug/tracing and could not be mounted ({0}); try: mount -t tracefs nodev /sys/kernel/tracing")]
    NoTracefs(String),
    /// The kernel was built without CONFIG_MMIOTRACE.
    #[error("this kernel has no mmiotrace tracer (available: {0}); it needs CONFIG_MMIOTRACE=y (Debian and Ubuntu kernels have it)")]
    NoMmiotrace(String),
    /// Lockdown refuses the tracer.
    #[error("kernel lockdown ({0}) forbids mmiotrace (\"unsafe mmio\"); boot without lockdown (e.g. with Secure Boot off) to trace kernel drivers")]
    Lockdown(String),
    /// Another tracer is active.
    #[error("another tracer ({0}) is active in {1}; stop it first (echo nop > current_tracer) so that it is not disturbed")]
    Busy(String, PathBuf),
    /// A tracefs or sysfs file could not be used.
    #[error("{path}: {err}")]
    File {
        /// The file.
        path: PathBuf,
        /// What happened.
        err: io::Error,
    },
    /// The command could not be started.
    #[error("cannot run {0}: {1}")]
    Spawn(String, io::Error),
    /// The output could not be written.
    #[error("writing {0}: {1}")]
    Output(PathBuf, io::Error),
}

fn ferr(path: &Path) -> impl FnOnce(io::Error) -> KernelError + '_ {
    move |err| KernelError::File {
        path: path.to_path_buf(),
        err,
    }
}

/// What to record and where.
#[derive(Clone, Debug)]
pub struct Options {
    /// The trace file to write (the kernel's text format, as `trace_pipe` emits it).
    pub output: PathBuf,
    /// Per-CPU ring buffer size in KiB; `None` keeps a generous default.
    pub buffer_kb: Option<u64>,
    /// Markers written before the command starts.
    pub marks: Vec<String>,
    /// The command to run while tracing (e.g. `insmod e1000.ko`).
    pub command: Vec<OsString>,
    /// The tracefs directory; `None` finds (or mounts) the usual one.
    pub tracefs: Option<PathBuf>,
    /// The sysfs CPU directory (`/sys/devices/system/cpu`), for restoring CPUs.
    pub cpu_dir: PathBuf,
    /// Skip the root check (tests with a fake tracefs).
    pub skip_root_check: bool,
    /// Where to publish the recording for `mmio-trace mark` (`None`: nowhere).
    pub active_file: Option<PathBuf>,
}

impl Options {
    /// Options with defaults for everything but the output and the command.
    pub fn new(output: PathBuf, command: Vec<OsString>) -> Self {
        Options {
            output,
            buffer_kb: None,
            marks: Vec::new(),
            command,
            tracefs: None,
            cpu_dir: PathBuf::from("/sys/devices/system/cpu"),
            skip_root_check: false,
            active_file: Some(PathBuf::from(ACTIVE_FILE)),
        }
    }
}

/// The default per-CPU buffer: large enough for a driver probe (the e1000 probe is
/// about 13,000 records, ~1 MB), small enough for a 1 GiB machine.
pub const DEFAULT_BUFFER_KB: u64 = 16384;

/// What a recording produced.
#[derive(Debug)]
pub struct Outcome {
    /// How the command ended (`None` when interrupted before it ended).
    pub status: Option<ExitStatus>,
    /// Whether Ctrl-C or SIGTERM stopped the recording.
    pub interrupted: bool,
    /// Bytes written to the output.
    pub bytes: u64,
    /// Accesses (R/W lines) in the output.
    pub accesses: u64,
    /// Events the kernel reported lost (`Lost N events.` and ftrace CPU losses).
    pub lost: u64,
    /// The per-CPU buffer size used, KiB.
    pub buffer_kb: u64,
    /// Problems met while restoring the previous state (none is the normal case).
    pub restore_warnings: Vec<String>,
}

fn read_trim(path: &Path) -> Result<String, KernelError> {
    Ok(fs::read_to_string(path)
        .map_err(ferr(path))?
        .trim()
        .to_string())
}

fn write_file(path: &Path, value: &str) -> Result<(), KernelError> {
    // tracefs control files want one write of the whole value.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(ferr(path))?;
    f.write_all(value.as_bytes()).map_err(ferr(path))
}

/// Finds the tracefs directory, mounting tracefs if it is not mounted yet.
pub fn find_tracefs() -> Result<PathBuf, KernelError> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("current_tracer").exists() {
            return Ok(PathBuf::from(dir));
        }
    }
    let target = Path::new("/sys/kernel/tracing");
    let status = Command::new("mount")
        .args(["-t", "tracefs", "nodev"])
        .arg(target)
        .status();
    match status {
        Ok(s) if s.success() && target.join("current_tracer").exists() => Ok(target.to_path_buf()),
        Ok(s) => Err(KernelError::NoTracefs(format!("mount exited with {s}"))),
        Err(e) => Err(KernelError::NoTracefs(e.to_string())),
    }
}

/// The bracketed choice of a tracefs/securityfs selector file (`a [b] c` -> `b`).
fn selected(s: &str) -> Option<&str> {
    let start = s.find('[')?;
    let end = s[start..].find(']')? + start;
    Some(&s[start + 1..end])
}

/// Parses a CPU list such as `0-3,5`.
pub fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<u32>().ok()),
        }
    }
    out
}

/// Writes a marker into a running kernel recording (`trace_marker`).
pub fn mark(tracefs: &Path, text: &str) -> Result<(), KernelError> {
    let path = tracefs.join("trace_marker");
    let mut f = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(ferr(&path))?;
    f.write_all(text.as_bytes()).map_err(ferr(&path))
}

/// The tracefs of a kernel recording in progress, if one is running.
pub fn active_recording() -> Option<PathBuf> {
    let s = fs::read_to_string(ACTIVE_FILE).ok()?;
    let (pid, dir) = s.trim_end().split_once(' ')?;
    let pid: i32 = pid.parse().ok()?;
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    alive.then(|| PathBuf::from(dir))
}

/// Previous state, restored whatever happens.
struct Saved {
    tracefs: PathBuf,
    tracer: String,
    buffer_kb: Option<String>,
    cpus_online: Vec<u32>,
    cpu_dir: PathBuf,
    enabled: bool,
    active_file: Option<PathBuf>,
}

impl Saved {
    fn restore(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.enabled {
            // Disabling mmiotrace brings its offlined CPUs back; the checks below
            // catch any it missed.
            if let Err(e) = write_file(&self.tracefs.join("current_tracer"), &self.tracer) {
                warnings.push(format!("could not restore tracer {}: {e}", self.tracer));
            }
            self.enabled = false;
        }
        if let Some(kb) = self.buffer_kb.take() {
            if let Err(e) = write_file(&self.tracefs.join("buffer_size_kb"), &kb) {
                warnings.push(format!("could not restore buffer_size_kb {kb}: {e}"));
            }
        }
        for cpu in &self.cpus_online {
            let online = self.cpu_dir.join(format!("cpu{cpu}/online"));
            match fs::read_to_string(&online) {
                Ok(v) if v.trim() == "0" => {
                    if let Err(e) = write_file(&online, "1") {
                        warnings.push(format!("could not bring CPU {cpu} back online: {e}"));
                    }
                }
                _ => {}
            }
        }
        if let Some(f) = self.active_file.take() {
            let _ = fs::remove_file(f);
        }
        warnings
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        for w in self.restore() {
            eprintln!("mmio-trace: {w}");
        }
    }
}

/// Checks the kernel, records while the command runs, and restores the tracer state.
pub fn record(opts: &Options) -> Result<Outcome, KernelError> {
    // SAFETY: geteuid has no preconditions.
    if !opts.skip_root_check && unsafe { libc::geteuid() } != 0 {
        return Err(KernelError::NotRoot);
    }
    let tracefs = match &opts.tracefs {
        Some(d) => d.clone(),
        None => find_tracefs()?,
    };
    let available = read_trim(&tracefs.join("available_tracers"))?;
    if !available.split_whitespace().any(|t| t == "mmiotrace") {
        return Err(KernelError::NoMmiotrace(available));
    }
    if let Ok(l) = fs::read_to_string("/sys/kernel/security/lockdown") {
        if let Some(mode) = selected(&l) {
            if mode != "none" {
                return Err(KernelError::Lockdown(mode.to_string()));
            }
        }
    }
    let tracer = read_trim(&tracefs.join("current_tracer"))?;
    if tracer != "nop" && tracer != "mmiotrace" {
        return Err(KernelError::Busy(tracer, tracefs.join("current_tracer")));
    }
    let cpus_online = fs::read_to_string(opts.cpu_dir.join("online"))
        .map(|s| parse_cpu_list(&s))
        .unwrap_or_default();
    let mut saved = Saved {
        tracefs: tracefs.clone(),
        tracer: "nop".into(),
        buffer_kb: None,
        cpus_online,
        cpu_dir: opts.cpu_dir.clone(),
        enabled: false,
        active_file: None,
    };
    let buffer_kb = opts.buffer_kb.unwrap_or(DEFAULT_BUFFER_KB);
    let bpath = tracefs.join("buffer_size_kb");
    let old_kb = read_trim(&bpath)?;
    write_file(&bpath, &buffer_kb.to_string())?;
    saved.buffer_kb = Some(
        old_kb
            .split_whitespace()
            .next()
            .unwrap_or("1408")
            .to_string(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone()).map_err(|e| KernelError::File {
            path: PathBuf::from("<signal handler>"),
            err: e,
        })?;
    }

    write_file(&tracefs.join("current_tracer"), "mmiotrace")?;
    saved.enabled = true;
    if let Some(f) = &opts.active_file {
        if fs::write(f, format!("{} {}\n", std::process::id(), tracefs.display())).is_ok() {
            saved.active_file = Some(f.clone());
        }
    }

    // Readable by its owner only, as `record`'s traces: a trace holds what drivers wrote
    // to their devices.
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&opts.output)
        .map_err(|e| KernelError::Output(opts.output.clone(), e))?;
    let pipe_path = tracefs.join("trace_pipe");
    let mut pipe = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&pipe_path)
        .map_err(ferr(&pipe_path))?;
    for m in &opts.marks {
        mark(&tracefs, m)?;
    }

    // The reader runs on this thread; the command is waited for on another.
    let mut child = None;
    if !opts.command.is_empty() {
        let name = opts.command[0].to_string_lossy().into_owned();
        let c = Command::new(&opts.command[0])
            .args(&opts.command[1..])
            .spawn()
            .map_err(|e| KernelError::Spawn(name, e))?;
        child = Some(c);
    }
    let waiter = child.map(|mut c| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let status = c.wait();
            stop.store(true, Ordering::SeqCst);
            status.ok()
        })
    });
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let mut stop_seen: Option<Instant> = None;
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(20)),
            Ok(n) => {
                out.write_all(&buf[..n])
                    .map_err(|e| KernelError::Output(opts.output.clone(), e))?;
                bytes += n as u64;
                continue;
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(KernelError::File {
                    path: pipe_path.clone(),
                    err: e,
                })
            }
        }
        let done = stop.load(Ordering::SeqCst) || interrupted.load(Ordering::SeqCst);
        match (done, stop_seen) {
            (true, None) => {
                if let Some(w) = &waiter {
                    if w.is_finished() {
                        let _ = mark(&tracefs, "mmio-trace: command ended");
                    }
                }
                stop_seen = Some(Instant::now());
            }
            // The buffer is empty and the command has ended: the events it caused
            // are in; a short grace period catches those still being committed.
            (true, Some(t)) if t.elapsed() >= Duration::from_millis(200) => break,
            _ => {}
        }
    }
    out.flush()
        .map_err(|e| KernelError::Output(opts.output.clone(), e))?;
    // The tracer cannot be changed while trace_pipe is open (EBUSY).
    drop(pipe);
    let restore_warnings = saved.restore();
    let status = match waiter {
        Some(w) if w.is_finished() => w.join().ok().flatten(),
        _ => None,
    };
    let (accesses, lost) = count(&opts.output);
    Ok(Outcome {
        status,
        interrupted: interrupted.load(Ordering::SeqCst),
        bytes,
        accesses,
        lost,
        buffer_kb,
        restore_warnings,
    })
}

/// Accesses and reported losses in a recorded log.
fn count(path: &Path) -> (u64, u64) {
    let Ok(f) = File::open(path) else {
        return (0, 0);
    };
    let mut r = mmio_trace_format::TextReader::new(io::BufReader::new(f));
    r.set_lenient(true);
    let (mut accesses, mut lost) = (0, 0);
    while let Ok(Some(ev)) = r.next_event() {
        match ev {
            mmio_trace_format::Event::Access(_) => accesses += 1,
            mmio_trace_format::Event::LostEvents(n) => lost += n,
            mmio_trace_format::Event::CpuLost { count, .. } => lost += count.unwrap_or(1),
            _ => {}
        }
    }
    (accesses, lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_selectors_parse() {
        assert_eq!(parse_cpu_list("0-3,5\n"), vec![0, 1, 2, 3, 5]);
        assert_eq!(parse_cpu_list("0"), vec![0]);
        assert_eq!(
            selected("none [integrity] confidentiality"),
            Some("integrity")
        );
        assert_eq!(selected("[none] integrity"), Some("none"));
    }
}
