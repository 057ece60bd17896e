//! `mmio-trace kernel record`: the Linux kernel's own mmiotrace, in one command.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use mmio_trace_kernel::Options;

/// Trace kernel drivers with the kernel's own mmiotrace tracer.
#[derive(clap::Args)]
pub struct KernelArgs {
    #[command(subcommand)]
    command: KernelCommand,
}

#[derive(clap::Subcommand)]
enum KernelCommand {
    /// Record a kernel driver's MMIO while COMMAND runs (e.g. `insmod e1000.ko`).
    ///
    /// Needs root and a kernel with CONFIG_MMIOTRACE (Debian and Ubuntu kernels have
    /// it). The kernel tracer sees only mappings made while it is on, so load the
    /// driver under it. It takes every CPU but one offline while it runs; mmio-trace
    /// always puts back the previous tracer, buffer size and online CPUs, also on
    /// Ctrl-C. Lost events are reported with the buffer size to use next time.
    /// Add markers from another shell with `mmio-trace mark TEXT`.
    Record(KernelRecordArgs),
}

#[derive(clap::Args)]
struct KernelRecordArgs {
    /// Where to write the log (the kernel's text format, header included).
    #[arg(short, long, default_value = "kernel.mmiotrace")]
    output: PathBuf,

    /// Per-CPU trace buffer size in KiB.
    #[arg(long, value_name = "N", default_value_t = mmio_trace_kernel::DEFAULT_BUFFER_KB)]
    buffer_kb: u64,

    /// A marker to write before COMMAND starts (repeatable; control characters are
    /// written `\xHH`, as every marker).
    #[arg(long, value_name = "TEXT")]
    mark: Vec<String>,

    /// The command to run while tracing; without one, records until Ctrl-C.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Runs `kernel ...`.
pub fn run(args: KernelArgs) -> anyhow::Result<ExitCode> {
    let KernelCommand::Record(a) = args.command;
    let mut opts = Options::new(a.output.clone(), a.command);
    opts.buffer_kb = Some(a.buffer_kb);
    // The kernel logs marker text as it is: escaped and cut as `mmio-trace mark` does.
    opts.marks = a
        .mark
        .iter()
        .map(|m| {
            let escaped = mmio_trace_record::marks::kernel_marker(m.as_bytes());
            String::from_utf8_lossy(&escaped).into_owned()
        })
        .collect();
    let out = mmio_trace_kernel::record(&opts)?;
    for w in &out.restore_warnings {
        eprintln!("mmio-trace: warning: {w}");
    }
    eprintln!(
        "mmio-trace: wrote {} ({} bytes, {} accesses){}",
        a.output.display(),
        out.bytes,
        out.accesses,
        if out.interrupted { ", interrupted" } else { "" }
    );
    if out.lost > 0 {
        eprintln!(
            "mmio-trace: LOST {} EVENTS: the kernel's trace buffer overflowed; run again with --buffer-kb {}",
            out.lost,
            out.buffer_kb.saturating_mul(2).max(out.buffer_kb + 1)
        );
    }
    Ok(match out.status {
        Some(s) => crate::exit_code_of(s),
        None if out.interrupted => ExitCode::from(130),
        None => ExitCode::SUCCESS,
    })
}
