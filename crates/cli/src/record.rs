//! `mmio-trace record`: thin glue over `mmio-trace-record`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::io;

use mmio_trace_format::Format;
use mmio_trace_record::Error;

/// Output formats of `record`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum RecordFormat {
    /// The Linux kernel mmiotrace text format (what demmio reads).
    #[default]
    Text,
    /// mmio-trace's compact binary format (nanosecond times, accesses up to 64 bytes).
    Binary,
}

/// `--route`.
#[derive(Clone, Copy, Default, clap::ValueEnum)]
enum RouteArg {
    /// Per program: preload for dynamic glibc programs, inject for static, Go, musl,
    /// set-uid, set-gid and file-capability ones (the default).
    #[default]
    Auto,
    /// The preload library.
    Preload,
    /// ptrace and a seccomp filter, nothing in the program.
    Ptrace,
    /// The tracer's core put into the program at its exec (no preload library, no
    /// ptrace once it runs; a seccomp filter tells the core of the program's mmaps).
    Inject,
}

/// Trace a program's device-memory accesses.
///
/// Runs PROGRAM with mmio-trace's preload library injected. Every shared mapping the
/// program makes of a device (by default: /dev/mem, sysfs PCI resourceN files, /dev/uio*,
/// VFIO device fds, /dev/dri/*, /dev/nvidia*, /dev/accel/*) is traced: each access is
/// completed by emulation through a second mapping of the device, and logged with time,
/// width, address, value, instruction pointer and thread id. Threads, fork and exec are
/// followed; no event is ever dropped.
///
/// Example: mmio-trace record -o nic.log -- ./my-driver --probe
#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct RecordArgs {
    /// Where to write the trace; `-` is standard output (the program's own standard
    /// output then goes to standard error).
    #[arg(short, long, value_name = "FILE", default_value = "mmiotrace.log")]
    output: PathBuf,

    /// Trace format.
    #[arg(long, value_enum, default_value_t)]
    format: RecordFormat,

    /// Also treat files matching GLOB as devices (repeatable). Matched against the
    /// canonical path (symlinks resolved; `*` also matches `/`). A regular file may be
    /// declared a device: that is how to try mmio-trace without hardware.
    #[arg(long = "device", value_name = "GLOB", value_parser = parse_device)]
    devices: Vec<String>,

    /// Do not use the default device rules (only --device ones).
    #[arg(long)]
    no_default_devices: bool,

    /// Trace only these offsets of each device mapping (file offsets; START-END or
    /// START+LEN, decimal or 0x hex; comma separated or repeated). Other pages run
    /// natively, untraced.
    #[arg(long = "range", value_name = "RANGES", value_parser = parse_ranges)]
    ranges: Vec<String>,

    /// Never trace these offsets (e.g. a VRAM aperture that would trap too often); same
    /// syntax as --range.
    #[arg(long = "bypass", value_name = "RANGES", value_parser = parse_ranges)]
    bypass: Vec<String>,

    /// Map no device a second time: the tracer then single-steps every access instead
    /// of completing it through its own mapping (much slower; for drivers that track or
    /// refuse extra mappings of their device, and to see what such a driver gets)
    #[arg(long)]
    no_alias: bool,

    /// Patch no hot instruction: every traced access traps into the tracer (~2-3 us
    /// each). By default an instruction that has trapped a few times is rewritten to jump
    /// to generated code that makes the same access and logs the same event in tens of
    /// nanoseconds; use this to compare, or when a program checksums its own code
    #[arg(long)]
    no_patch: bool,

    /// Fault injection: rules (TOML) per register that change what reads return (a
    /// value always, from the Nth read, or with a probability from a seed; bits set,
    /// cleared or flipped), delay accesses, or raise SIGBUS at the Nth access (the
    /// device gone); each injection is a MARK in the trace, before the access it
    /// changed. The file: `seed = N` and `[[rule]]` tables with `offset` (within the
    /// mapping; required), `width`, `file` (a glob), one of `value`, `set_bits`,
    /// `clear_bits`, `flip_bits`, and `from_read`, `probability`, `delay_us`,
    /// `sigbus_at`. Also `replay --inject`.
    #[arg(long, value_name = "FILE")]
    inject: Option<PathBuf>,

    /// How to reach the program's accesses. `auto` (the default) picks per program:
    /// `inject` for statically linked, Go, set-uid, set-gid and file-capability programs
    /// (which LD_PRELOAD cannot reach) and dynamic programs whose loader is not glibc's
    /// (musl: it cannot load the library), `preload` for the others; a traced program that
    /// execs such a program is handed over there (the new image gets the tracer before its
    /// first instruction). Unless the route is the automatic preload one, the trace's
    /// first MARK names the route and why. `preload` injects mmio-trace's library into the
    /// program (dynamic programs; ~3-5 us per traced access; the program's own inline
    /// `syscall` instructions, found at its start, are routed to the library by a seccomp
    /// filter on those instructions only). `inject` puts the same
    /// tracer, built without libc, into the program by ptrace at its exec and lets it go:
    /// same cost per access, no ptrace while it runs; a seccomp filter hands the program's
    /// mmap, munmap, mremap, mprotect, rt_sigaction, rt_sigprocmask and exec calls to the
    /// tracer (raw system calls included; works for dynamic programs too). `ptrace` puts
    /// no code in it: the recorder traces it with ptrace and a seccomp filter on mmap,
    /// munmap, mremap and mprotect, and completes each access from outside (several times
    /// slower per access; if the recorder is killed, so is the program). `inject` and
    /// `ptrace` need the right to ptrace one's own children (see
    /// /proc/sys/kernel/yama/ptrace_scope) and seccomp; a program the tracer cannot be put
    /// into is started again under `ptrace`, with a warning
    #[arg(long, value_enum, default_value_t)]
    route: RouteArg,

    /// No status line on stderr.
    #[arg(short, long)]
    quiet: bool,

    /// Attach to the running process PID (all its threads, and the children it forks
    /// meanwhile) instead of starting a program: trace the device mappings it holds and
    /// makes, until --duration ends, the recorder gets SIGINT (^C), SIGTERM or SIGHUP, or
    /// the process ends; then detach, leaving it running as before. Needs the right to
    /// ptrace it (same user and Yama ptrace_scope 0, or CAP_SYS_PTRACE). By default
    /// (`--route ptrace`) every traced access and system call stops the process (tens of
    /// microseconds each) and every new device mapping is seen as it is made; with
    /// `--route inject` the tracer's core is put into the process, which then runs on its
    /// own at the preload route's cost per access, and device mappings it makes meanwhile
    /// are found in /proc/PID/maps every 10 ms (MMIO_TRACE_ATTACH_POLL_MS): accesses
    /// before that are not traced; forked children are not followed
    #[arg(long, value_name = "PID", conflicts_with_all = ["command", "inject"])]
    pid: Option<i32>,

    /// With --pid: detach after SECONDS (a decimal number, e.g. 1.5)
    #[arg(long, value_name = "SECONDS", requires = "pid", value_parser = parse_duration)]
    duration: Option<std::time::Duration>,

    /// The program to run, and its arguments (`--` before it is needed only when the
    /// program's name starts with `-`; options of the recorder go before it).
    #[arg(
        required_unless_present = "pid",
        trailing_var_arg = true,
        value_name = "PROGRAM"
    )]
    command: Vec<OsString>,
}

/// What `record --help` ends with: files, signals, exit statuses.
const AFTER_HELP: &str = "\
The trace file is created readable by its owner only (mode 0600: a trace holds what the
program wrote to its device); an existing file keeps its mode and is emptied only once
PROGRAM has started. Signals sent to the recorder (TERM, HUP, INT, QUIT, USR1, USR2, ALRM,
WINCH, CONT, TSTP, real-time ones...) are passed on to PROGRAM, and the log is finished
after it ends; what a terminal sends (^C, ^\\, ^Z, a resize) reaches PROGRAM directly,
once. Markers are logged on one line (control characters as \\xHH); longer than 4096
bytes, they are cut with a note.

Exit status: PROGRAM's, or 128+N if it died of signal N;
  127  PROGRAM was not found, 126  it could not be run (no trace written, an earlier one
       is left as it was); 127 also when the interpreter of its #! line is missing (a
       script without a #! line is run with /bin/sh, as shells and env run it);
  125  the trace could not be written: the output could not be opened, or a write failed
       (PROGRAM then runs to its end all the same, the file ends on a whole record, and
       the message gives PROGRAM's own status);
    2  bad usage;  1  another failure of the recorder.

With --pid: 0 once detached (the process runs on as before), or the process's own status
(128+N for signal N) if it ended while attached; 2 when it cannot be attached to (no such
process, the recorder itself, already traced, not permitted: the message says what to
change; no trace written); 125 as above (a failed write also detaches). SIGINT, SIGTERM,
SIGHUP, and every other signal that would end the recorder (QUIT, USR1, USR2, ALRM...),
detach; they are not passed on. A recorder killed by SIGKILL leaves the process's device
pages closed: it dies at its next access.";

/// The exit status of `record` when the trace could not be written (whether or not the
/// program ran): distinct from 126/127 (the program could not be started) and 128+N (it
/// died of signal N), as `timeout` and `env` use 125 for their own failures.
pub const EXIT_TRACE_FAILED: u8 = 125;
/// The program was not found (as shells report it).
pub const EXIT_NOT_FOUND: u8 = 127;
/// The program was found but could not be run (as shells report it).
pub const EXIT_CANNOT_RUN: u8 = 126;

/// An empty `--device` (an unset shell variable, say) would match nothing, silently.
fn parse_device(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("an empty GLOB names no device file".to_string());
    }
    Ok(s.to_string())
}

/// `--duration`: seconds, decimal (`2`, `1.5`, `0.25`), optionally ending in `s`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let n = s.trim().strip_suffix('s').unwrap_or(s.trim());
    let secs: f64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (e.g. 10 or 1.5)"))?;
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?}: give a number of seconds from 0 to 1e9"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn parse_ranges(s: &str) -> Result<String, String> {
    mmio_trace_record::check_ranges(s).map_err(|e| e.to_string())
}

/// How the program ended, for messages.
fn ended(exit: mmio_trace_record::Exit) -> String {
    match exit {
        mmio_trace_record::Exit::Code(c) => format!("exited with status {c}"),
        mmio_trace_record::Exit::Signal(s) => format!("was killed by signal {s}"),
    }
}

/// execve's "Exec format error" (Linux; the CLI does not otherwise need libc).
const ENOEXEC: i32 = 8;

/// The file `program` names, found as execvp finds it (in PATH when the name has no `/`).
fn find_program(program: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The first bytes of a file (enough for a `#!` line or a binary's magic).
fn file_head(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(256);
    std::fs::File::open(path)
        .ok()?
        .take(256)
        .read_to_end(&mut head)
        .ok()?;
    Some(head)
}

/// The interpreter a script's `#!` line names, when the script itself exists but the
/// interpreter does not: execve then fails with ENOENT, which would otherwise read as if
/// the script were missing.
fn missing_interpreter(program: &OsStr) -> Option<String> {
    let head = file_head(&find_program(program)?)?;
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let interp = String::from_utf8_lossy(line);
    let interp = interp.split_whitespace().next()?.to_string();
    (!Path::new(&interp).exists()).then_some(interp)
}

/// A text file without a `#!` line (execve says ENOEXEC): shells, `env` and execvp run
/// it with /bin/sh, and so does `record`. A binary (a NUL in its first bytes, e.g. an ELF
/// for another machine) is not handed to the shell.
fn shell_script(program: &OsStr) -> Option<PathBuf> {
    let path = find_program(program)?;
    let head = file_head(&path)?;
    (!head.contains(&0) && !head.starts_with(b"#!")).then_some(path)
}

/// Runs `record`.
pub fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let output = (args.output.as_os_str() != "-").then(|| args.output.clone());
    if let Some(o) = &output {
        if mmio_trace_record::is_declared_device(o, &args.devices) {
            // The trace file is emptied when PROGRAM starts: the device it maps would
            // lose its contents under it (and the program die of SIGBUS).
            return Err(crate::input::BadInput(format!(
                "-o {}: that file is a --device: write the trace to another file",
                o.display()
            ))
            .into());
        }
    }
    if let Some(pid) = args.pid {
        return run_attach(pid, args, output);
    }
    if args.duration.is_some() {
        // (clap's `requires` is not checked beside a trailing PROGRAM.)
        return Err(crate::input::BadInput(
            "--duration needs --pid: a program started by record is recorded until it ends"
                .to_string(),
        )
        .into());
    }
    let mut opts = mmio_trace_record::Options::new(args.command, output.clone());
    opts.format = match args.format {
        RecordFormat::Text => Format::Text,
        RecordFormat::Binary => Format::Binary,
    };
    opts.devices = args.devices;
    opts.no_default_devices = args.no_default_devices;
    opts.ranges = args.ranges;
    opts.bypass = args.bypass;
    opts.no_alias = args.no_alias;
    opts.no_patch = args.no_patch;
    opts.route = match args.route {
        RouteArg::Auto => None,
        RouteArg::Preload => Some(mmio_trace_record::Route::Preload),
        RouteArg::Ptrace => Some(mmio_trace_record::Route::Ptrace),
        RouteArg::Inject => Some(mmio_trace_record::Route::Inject),
    };
    opts.status = !args.quiet;
    // Kept open until the program ended: the memfd it inherits.
    let _inject = match &args.inject {
        Some(p) => {
            let (f, env) = crate::replay::inject_env(p)?;
            opts.env = env;
            // Patched sites would make their accesses without the fault path.
            opts.no_patch = true;
            Some(f)
        }
        None => None,
    };
    let quiet = args.quiet;
    let no_alias = args.no_alias;
    let no_patch = args.no_patch || no_alias;
    let no_defaults = args.no_default_devices;
    let mut result = mmio_trace_record::record(&opts);
    if let Err(Error::Spawn { error, .. }) = &result {
        // Nothing was written yet: the program is run again, as execvp would run it.
        if error.raw_os_error() == Some(ENOEXEC) {
            if let Some(script) = shell_script(&opts.command[0]) {
                let mut command = vec![OsString::from("/bin/sh"), script.into_os_string()];
                command.extend(opts.command.drain(1..));
                opts.command = command;
                result = mmio_trace_record::record(&opts);
            }
        }
    }
    let out = match result {
        Ok(out) => out,
        Err(Error::Spawn { program, error }) => {
            let not_found = error.kind() == io::ErrorKind::NotFound;
            let missing = not_found.then(|| missing_interpreter(OsStr::new(&program)));
            let why = match missing.flatten() {
                Some(interp) => format!(
                    "its interpreter {interp} (named on its `#!` line) was not found: {error}"
                ),
                None => error.to_string(),
            };
            // An empty name would read as a missing word in the message.
            let shown = if program.is_empty() { "''" } else { &program };
            eprintln!("mmio-trace: cannot run {shown}: {why}");
            return Ok(ExitCode::from(if not_found {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_RUN
            }));
        }
        Err(e @ Error::Open { .. }) => {
            eprintln!("mmio-trace: {e}");
            return Ok(ExitCode::from(EXIT_TRACE_FAILED));
        }
        Err(Error::Incomplete {
            path,
            error,
            outcome,
            written,
        }) => {
            eprintln!("mmio-trace: cannot write the trace to {path}: {error}");
            // A pipe or device got its bytes as they went: the last record may be cut.
            let regular = output
                .as_ref()
                .and_then(|p| p.metadata().ok())
                .is_some_and(|m| m.is_file());
            let ending = match (regular, written) {
                (true, _) => ", ending on a whole record",
                (false, 0) => "",
                (false, _) => " (to a pipe or device: the last record may be cut)",
            };
            eprintln!(
                "mmio-trace: the trace is incomplete: {written} bytes written{ending}; the \
                 program ran to its end and {}",
                ended(outcome.exit)
            );
            return Ok(ExitCode::from(EXIT_TRACE_FAILED));
        }
        Err(e) => return Err(e.into()),
    };
    if out.processes == 0 {
        eprintln!(
            "mmio-trace: warning: the program never loaded the tracer (statically linked, \
             set-uid, or it cleared LD_PRELOAD); nothing was traced"
        );
    }
    if out.lost > 0 {
        eprintln!("mmio-trace: warning: {} events lost", out.lost);
    }
    if out.unpaused_steps > 0 {
        eprintln!(
            "mmio-trace: warning: {} single-steps ran with the other threads unpaused (no \
             /proc/self/task descriptor); their accesses meanwhile may be missing",
            out.unpaused_steps
        );
    }
    if let Some(line) = unmatched_warning(&out, no_defaults) {
        eprintln!("{line}");
    }
    if !no_patch && !quiet {
        for line in patching_lines(&out.patching) {
            eprintln!("{line}");
        }
    }
    if out.slow_steps > 0 && !quiet {
        let (accesses, were) = if out.slow_steps == 1 {
            ("access was", "it was")
        } else {
            ("accesses were", "they were")
        };
        if no_alias {
            eprintln!(
                "mmio-trace: {} {accesses} single-stepped (--no-alias: every access is; \
                 {were} logged as UNKNOWN where the value could not be known)",
                out.slow_steps
            );
        } else {
            eprintln!(
                "mmio-trace: {} {accesses} single-stepped (instructions the emulator does \
                 not know; logged as UNKNOWN where the value could not be known)",
                out.slow_steps
            );
        }
    }
    Ok(ExitCode::from(out.exit.code()))
}

/// The exit status of `record --pid` when the process cannot be attached to (as for bad
/// usage: nothing was traced, and what to change is said).
pub const EXIT_CANNOT_ATTACH: u8 = 2;

/// Runs `record --pid PID`.
fn run_attach(pid: i32, args: RecordArgs, output: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut opts = mmio_trace_record::AttachOptions::new(pid, output.clone());
    opts.route = match args.route {
        RouteArg::Auto | RouteArg::Ptrace => mmio_trace_record::AttachRoute::Ptrace,
        RouteArg::Inject => mmio_trace_record::AttachRoute::Inject,
        RouteArg::Preload => {
            return Err(crate::input::BadInput(
                "--route preload cannot attach to a running process (the library is loaded at a program's start): use --route ptrace (the default with --pid) or --route inject".to_string(),
            )
            .into())
        }
    };
    opts.duration = args.duration;
    opts.format = match args.format {
        RecordFormat::Text => Format::Text,
        RecordFormat::Binary => Format::Binary,
    };
    opts.devices = args.devices;
    opts.no_default_devices = args.no_default_devices;
    opts.ranges = args.ranges;
    opts.bypass = args.bypass;
    opts.no_alias = args.no_alias;
    opts.status = !args.quiet;
    let no_defaults = opts.no_default_devices;
    let out = match mmio_trace_record::attach(&opts) {
        Ok(out) => out,
        Err(e @ Error::Attach { .. }) => {
            eprintln!("mmio-trace: {e}");
            return Ok(ExitCode::from(EXIT_CANNOT_ATTACH));
        }
        Err(e @ Error::Open { .. }) => {
            eprintln!("mmio-trace: {e}");
            return Ok(ExitCode::from(EXIT_TRACE_FAILED));
        }
        Err(Error::Incomplete {
            path,
            error,
            outcome,
            written,
        }) => {
            eprintln!("mmio-trace: cannot write the trace to {path}: {error}");
            eprintln!(
                "mmio-trace: the trace is incomplete: {written} bytes written; {}",
                match outcome.exit {
                    mmio_trace_record::Exit::Code(0) => "the process was detached".to_string(),
                    e => format!("the process {}", ended(e)),
                }
            );
            return Ok(ExitCode::from(EXIT_TRACE_FAILED));
        }
        Err(e) => return Err(e.into()),
    };
    if out.lost > 0 {
        eprintln!("mmio-trace: warning: {} events lost", out.lost);
    }
    if out.maps == 0 {
        eprintln!(
            "mmio-trace: warning: no device mapping matched, nothing was traced{}",
            if no_defaults {
                ""
            } else {
                " (name the device with --device PATH or GLOB)"
            }
        );
    }
    Ok(ExitCode::from(out.exit.code()))
}

/// What to say of the files the program mapped shared that no device rule matched: when
/// nothing was traced, which they were (or that there were none); when something was,
/// only the character and block devices among them. Programs map files shared all the
/// time (caches, shared memory), so naming those would be noise; an untraced device file,
/// though, is likely the device (or one of the devices) the user meant.
/// The end-of-run account of hot-site patching: how many sites, how many accesses went
/// each way, which hot sites stayed on the trap path and why.
fn patching_lines(p: &mmio_trace_record::Patching) -> Vec<String> {
    let mut v = Vec::new();
    for why in &p.off {
        v.push(format!(
            "mmio-trace: warning: hot-site patching is off: {why}; every access traps"
        ));
    }
    if p.trampolines + p.traps > 0 {
        v.push(format!(
            "mmio-trace: patching: {} sites patched, {} accesses through trampolines, {} through traps",
            p.patched, p.trampolines, p.traps
        ));
    }
    for s in &p.refused {
        let place = s.place.clone().unwrap_or_else(|| format!("pid {}", s.pid));
        v.push(format!(
            "mmio-trace: hot site {:#x} ({place}) not patched: {} ({} traps)",
            s.pc, s.reason, s.traps
        ));
    }
    v
}

fn unmatched_warning(out: &mmio_trace_record::Outcome, no_defaults: bool) -> Option<String> {
    if out.processes > 0 && out.maps == 0 {
        return Some(format!(
            "mmio-trace: warning: no device mapping matched, nothing was traced: {}",
            if !out.unmatched.is_empty() {
                format!(
                    "the program mapped {}; name its device with --device PATH or GLOB",
                    unmatched_list(out.unmatched.iter(), out.unmatched_more)
                )
            } else if no_defaults {
                "the program mapped no file shared".to_string()
            } else {
                "the program mapped no file shared (device registers are mapped shared from \
                 a device file: /dev/mem, a sysfs PCI resource, /dev/uio*, VFIO, /dev/dri/*, \
                 /dev/nvidia*, /dev/accel/*, or one --device names)"
                    .to_string()
            }
        ));
    }
    let devices: Vec<_> = out
        .unmatched
        .iter()
        .filter(|f| f.device.is_some())
        .collect();
    (out.maps > 0 && !devices.is_empty()).then(|| {
        format!(
            "mmio-trace: note: the program also mapped {}, which no device rule matched: \
             not traced (--device PATH or GLOB traces it)",
            unmatched_list(devices.into_iter(), 0)
        )
    })
}

/// How many unmatched files a warning names.
const UNMATCHED_LISTED: usize = 8;

/// `PATH (shared, character device, 3 times), PATH (shared), and 2 other files`: the
/// first [`UNMATCHED_LISTED`] files, then how many more (`more` beyond those given).
fn unmatched_list<'a>(
    files: impl ExactSizeIterator<Item = &'a mmio_trace_record::UnmatchedFile>,
    more: u64,
) -> String {
    let others = files.len().saturating_sub(UNMATCHED_LISTED) as u64 + more;
    let mut parts: Vec<String> = files
        .take(UNMATCHED_LISTED)
        .map(|f| {
            let path = mmio_trace_format::text::escape_marker(&f.path);
            let mut s = format!("{} (shared", String::from_utf8_lossy(&path));
            match f.device {
                Some('c') => s.push_str(", character device"),
                Some('b') => s.push_str(", block device"),
                _ => {}
            }
            if f.times > 1 {
                s.push_str(&format!(", {} times", f.times));
            }
            s.push(')');
            s
        })
        .collect();
    match others {
        0 => {}
        1 => parts.push("and 1 other file".to_string()),
        n => parts.push(format!("and {n} other files")),
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmio_trace_record::UnmatchedFile;

    fn file(path: &str, times: u64, device: Option<char>) -> UnmatchedFile {
        UnmatchedFile {
            path: path.as_bytes().to_vec(),
            times,
            device,
        }
    }

    fn outcome(maps: u64, unmatched: Vec<UnmatchedFile>) -> mmio_trace_record::Outcome {
        mmio_trace_record::Outcome {
            exit: mmio_trace_record::Exit::Code(0),
            events: maps,
            slow_steps: 0,
            unpaused_steps: 0,
            lost: 0,
            processes: 1,
            maps,
            unmatched,
            unmatched_more: 0,
            patching: Default::default(),
        }
    }

    #[test]
    fn a_traced_program_is_told_only_of_untraced_device_files() {
        let files = vec![
            file("/dev/shm/cache", 5, None),
            file("/dev/fb0", 2, Some('c')),
            file("/tmp/data", 1, None),
        ];
        assert_eq!(
            unmatched_warning(&outcome(1, files.clone()), false).as_deref(),
            Some(
                "mmio-trace: note: the program also mapped /dev/fb0 (shared, character \
                 device, 2 times), which no device rule matched: not traced (--device PATH \
                 or GLOB traces it)"
            )
        );
        assert_eq!(
            unmatched_warning(&outcome(1, files[..1].to_vec()), false),
            None
        );
        assert_eq!(unmatched_warning(&outcome(1, Vec::new()), true), None);
        assert_eq!(
            unmatched_warning(&outcome(0, files), true).as_deref(),
            Some(
                "mmio-trace: warning: no device mapping matched, nothing was traced: the \
                 program mapped /dev/shm/cache (shared, 5 times), /dev/fb0 (shared, \
                 character device, 2 times), /tmp/data (shared); name its device with \
                 --device PATH or GLOB"
            )
        );
    }

    #[test]
    fn unmatched_files_are_listed_with_their_kind_and_count() {
        let files = [
            file("/dev/foo0", 3, Some('c')),
            file("/dev/sdz", 1, Some('b')),
            file("/tmp/a\nb", 1, None),
        ];
        assert_eq!(
            unmatched_list(files.iter(), 0),
            "/dev/foo0 (shared, character device, 3 times), /dev/sdz (shared, block \
             device), /tmp/a\\x0ab (shared)"
        );
        assert_eq!(
            unmatched_list(files[..1].iter(), 1),
            "/dev/foo0 (shared, character device, 3 times), and 1 other file"
        );
        let many: Vec<_> = (0..9).map(|i| file(&format!("/f{i}"), 1, None)).collect();
        assert_eq!(
            unmatched_list(many.iter(), 2),
            "/f0 (shared), /f1 (shared), /f2 (shared), /f3 (shared), /f4 (shared), \
             /f5 (shared), /f6 (shared), /f7 (shared), and 3 other files"
        );
    }
}
