//! `mmio-trace record`: thin glue over `mmio-trace-record`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mmio_trace_format::Format;

/// Output formats of `record`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum RecordFormat {
    /// The Linux kernel mmiotrace text format (what demmio reads).
    #[default]
    Text,
    /// mmio-trace's compact binary format (nanosecond times, accesses up to 64 bytes).
    Binary,
}

/// Trace a program's device-memory accesses.
///
/// Runs PROGRAM with mmio-trace's preload library injected. Every shared mapping the
/// program makes of a device (by default: /dev/mem, sysfs PCI resourceN files, /dev/uio*,
/// VFIO device fds, /dev/dri/*, /dev/nvidia*, /dev/accel/*) is traced: each access is
/// completed by emulation through a second mapping of the device, and logged with time,
/// width, address, value, instruction pointer and thread id. Threads, fork and exec are
/// followed; no event is ever dropped. Exits with PROGRAM's exit status, or 128+N if it
/// died of signal N.
///
/// Example: mmio-trace record -o nic.log -- ./my-driver --probe
#[derive(clap::Args)]
pub struct RecordArgs {
    /// Where to write the trace; `-` is standard output.
    #[arg(short, long, value_name = "FILE", default_value = "mmiotrace.log")]
    output: PathBuf,

    /// Trace format.
    #[arg(long, value_enum, default_value_t)]
    format: RecordFormat,

    /// Also treat files matching GLOB as devices (repeatable). Matched against the
    /// canonical path (symlinks resolved; `*` also matches `/`). A regular file may be
    /// declared a device: that is how to try mmio-trace without hardware.
    #[arg(long = "device", value_name = "GLOB")]
    devices: Vec<String>,

    /// Do not use the default device rules (only --device ones).
    #[arg(long)]
    no_default_devices: bool,

    /// Trace only these offsets of each device mapping (file offsets; START-END or
    /// START+LEN, decimal or 0x hex; comma separated or repeated). Other pages run
    /// natively, untraced.
    #[arg(long = "range", value_name = "RANGES")]
    ranges: Vec<String>,

    /// Never trace these offsets (e.g. a VRAM aperture that would trap too often); same
    /// syntax as --range.
    #[arg(long = "bypass", value_name = "RANGES")]
    bypass: Vec<String>,

    /// Map no device a second time: the tracer then single-steps every access instead
    /// of completing it through its own mapping (much slower; for drivers that track or
    /// refuse extra mappings of their device, and to see what such a driver gets)
    #[arg(long)]
    no_alias: bool,

    /// No status line on stderr.
    #[arg(short, long)]
    quiet: bool,

    /// The program to run, and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM"
    )]
    command: Vec<OsString>,
}

/// Runs `record`.
pub fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let output = (args.output.as_os_str() != "-").then(|| args.output.clone());
    let mut opts = mmio_trace_record::Options::new(args.command, output);
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
    let quiet = args.quiet;
    let out = mmio_trace_record::record(&opts).context("mmio-trace record")?;
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
    if out.slow_steps > 0 && !quiet {
        eprintln!(
            "mmio-trace: {} accesses were single-stepped (instructions the emulator does not \
             know; logged as UNKNOWN where the value could not be known)",
            out.slow_steps
        );
    }
    Ok(ExitCode::from(out.exit.code()))
}
