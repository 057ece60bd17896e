//! `mmio-trace mark`: thin glue over `mmio_trace_record::marks`.

use std::process::ExitCode;

/// Insert a marker into the running recording(s), from another shell.
///
/// Reaches every `mmio-trace record` running on this machine and a running
/// `mmio-trace kernel record` (through the kernel's trace_marker).
/// The MARK line is timed when the recorder receives it. Programs can also mark from
/// inside: the preload library exports `void mmio_trace_mark(const char *text)`.
#[derive(clap::Args)]
pub struct MarkArgs {
    /// Only the recording of this `mmio-trace record` process (default: every running one).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,

    /// The marker text (several words are joined with spaces).
    #[arg(required = true, value_name = "TEXT")]
    text: Vec<String>,
}

/// Runs `mark`.
pub fn run(args: MarkArgs) -> anyhow::Result<ExitCode> {
    let text = args.text.join(" ");
    let mut n = mmio_trace_record::marks::send_mark(text.as_bytes(), args.pid)?;
    // A `mmio-trace kernel record` in progress takes markers through tracefs.
    if args.pid.is_none() {
        if let Some(tracefs) = mmio_trace_kernel::active_recording() {
            mmio_trace_kernel::mark(&tracefs, &text)?;
            n += 1;
        }
    }
    if n == 0 {
        anyhow::bail!("no running `mmio-trace record` or `mmio-trace kernel record` found");
    }
    Ok(ExitCode::SUCCESS)
}
