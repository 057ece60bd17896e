//! `mmio-trace mark`: thin glue over `mmio_trace_record::marks`.

use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;

/// Insert a marker into the running recording(s), from another shell.
///
/// Reaches every `mmio-trace record` running on this machine and a running
/// `mmio-trace kernel record` (through the kernel's trace_marker).
/// The MARK line is timed when the recorder receives it. Programs can also mark from
/// inside: the preload library exports `void mmio_trace_mark(const char *text)`.
///
/// A marker is always one line: control characters (a newline, a tab, an escape...)
/// are logged as `\xHH`, and a backslash before `x` or another backslash is doubled.
/// Other bytes are kept as given (the text need not be UTF-8).
/// Text longer than 4096 bytes (1000 escaped bytes for a kernel recording) is cut and
/// ends with ` [marker cut: N bytes, the first M kept]`.
#[derive(clap::Args)]
pub struct MarkArgs {
    /// Only the recording of this `mmio-trace record` process (default: every running one).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,

    /// The marker text (several words are joined with spaces).
    #[arg(required = true, value_name = "TEXT")]
    text: Vec<std::ffi::OsString>,
}

/// Runs `mark`.
pub fn run(args: MarkArgs) -> anyhow::Result<ExitCode> {
    // Bytes, not UTF-8: a marker may carry any bytes (they are escaped as the log
    // needs), as the preload library's `mmio_trace_mark` takes them.
    let text = args.text.join(std::ffi::OsStr::new(" ")).into_vec();
    let mut n = mmio_trace_record::marks::send_mark(&text, args.pid)?;
    // A `mmio-trace kernel record` in progress takes markers through tracefs.
    if args.pid.is_none() {
        if let Some(tracefs) = mmio_trace_kernel::active_recording() {
            // The kernel logs the text as it is: escape it as `record` does.
            let escaped = mmio_trace_record::marks::kernel_marker(&text);
            mmio_trace_kernel::mark(&tracefs, &String::from_utf8_lossy(&escaped))?;
            n += 1;
        }
    }
    if n == 0 {
        if let Some(pid) = args.pid {
            anyhow::bail!("no running `mmio-trace record` with pid {pid} found");
        }
        anyhow::bail!("no running `mmio-trace record` or `mmio-trace kernel record` found");
    }
    Ok(ExitCode::SUCCESS)
}
