//! `mmio-trace`: record and analyse memory-mapped I/O accesses.
//!
//! The binary is glue: every subcommand lives in its own module and the real work is
//! done by the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyse;
mod analyze;
mod convert;
mod demo;
mod diff;
mod export;
mod export_parquet;
mod export_perfetto;
mod export_vcd;
mod fold;
mod inject;
mod input;
mod kernel;
mod mark;
mod record;
mod regnames;
mod replay;
mod show;
mod stats;
mod style;
mod symbols;

/// Record every access a program makes to memory-mapped device registers, and read,
/// filter and summarise traces in the Linux kernel's mmiotrace format.
///
/// Logs are byte-compatible with the kernel's mmiotrace text format (`VERSION
/// 20070824`), so envytools' demmio reads ours and every command here reads kernel
/// logs. gzip, xz and zstd compressed logs are read transparently, and so is
/// mmio-trace's compact binary format.
///
/// Exit status of show, stats, convert and export: 0 when the log was read (with --lenient,
/// also when damage was skipped or ended it: reported on standard error); 2 for a
/// damaged or malformed log without --lenient (after what came before the damage
/// was shown or converted) and for bad arguments; 1 when the machine failed (a file
/// that cannot be opened or written).
#[derive(Parser)]
#[command(
    name = "mmio-trace",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// `about` (the line in the list), not a doc comment: a doc comment here would replace
// the long help that each command's own doc comment gives its `--help`.
enum Command {
    #[command(about = "Trace a program's device-memory accesses (no kernel patch, no rebuild)")]
    Record(record::RecordArgs),
    #[command(about = "Insert a marker into the running recording(s) from another shell")]
    Mark(mark::MarkArgs),
    #[command(about = "Run the built-in example driver on a simulated device, under `record`")]
    Demo(demo::DemoArgs),
    #[command(about = "List the events of a log, readable and filtered")]
    Show(show::ShowArgs),
    #[command(about = "Summarise a log: per address, per map, hottest registers, losses")]
    Stats(stats::StatsArgs),
    #[command(
        about = "Convert a log between the kernel text format and the compact binary format"
    )]
    Convert(convert::ConvertArgs),
    #[command(about = "Tell a log's story per map: init sequence, polling loops, hot registers")]
    Analyze(analyze::AnalyzeArgs),
    #[command(about = "Compare two logs of one device, loops folded, like diff -u")]
    Diff(diff::DiffArgs),
    #[command(
        about = "Export a log for Perfetto (timeline), VCD viewers (waveform) or Parquet (SQL)"
    )]
    Export(export::ExportArgs),
    #[command(about = "Run a program against a recorded trace instead of its device")]
    Replay(replay::ReplayArgs),
    #[command(
        about = "Trace kernel drivers with the kernel's own mmiotrace (root, CONFIG_MMIOTRACE)"
    )]
    Kernel(kernel::KernelArgs),
}

/// Exit status for bad input (malformed log, bad arguments), as grep and clap use.
pub const EXIT_BAD_INPUT: u8 = 2;

/// The exit code that reports how a child ended: its status, or 128+N for signal N.
pub fn exit_code_of(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c as u8),
        (None, Some(sig)) => ExitCode::from(128u8.wrapping_add(sig as u8)),
        _ => ExitCode::FAILURE,
    }
}

/// The line `main` prints for an error: `mmio-trace: ` and its chain of causes joined
/// by `: `, each said once. A context or error whose text already includes its
/// source's (an `io::Error` wrapped by a library that prints it) would otherwise
/// print it twice, and a context that already names the program (`mmio-trace
/// record`) gets no second `mmio-trace: `.
pub fn error_message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    if msg.starts_with("mmio-trace ") || msg.starts_with("mmio-trace:") {
        msg
    } else {
        format!("mmio-trace: {msg}")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(a) => record::run(a),
        Command::Mark(a) => mark::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Show(a) => show::run(a),
        Command::Stats(a) => stats::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Export(a) => export::run(a),
        Command::Kernel(a) => kernel::run(a),
        Command::Analyze(a) => analyze::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Replay(a) => replay::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`mmio-trace show | head`) is not an error.
            let broken_pipe = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", error_message(&e));
            let bad_input = e.chain().any(|c| {
                c.downcast_ref::<input::BadInput>().is_some()
                    || c.downcast_ref::<mmio_trace_format::Error>()
                        .is_some_and(|f| f.as_parse().is_some())
            });
            ExitCode::from(if bad_input { EXIT_BAD_INPUT } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::error_message;

    /// An error that prints its source in its own text, as some libraries' do.
    #[derive(Debug)]
    struct Loud(std::io::Error);

    impl std::fmt::Display for Loud {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    impl std::error::Error for Loud {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_said_once_and_the_program_named_once() {
        let io = || std::io::Error::from_raw_os_error(21);
        let e = anyhow::Error::new(Loud(io())).context("reading /tmp");
        assert_eq!(
            error_message(&e),
            "mmio-trace: reading /tmp: Is a directory (os error 21)"
        );
        let e = anyhow::Error::new(io())
            .context("cannot write the trace")
            .context("mmio-trace record");
        assert_eq!(
            error_message(&e),
            "mmio-trace record: cannot write the trace: Is a directory (os error 21)"
        );
        let e = anyhow::Error::new(io()).context("cannot create out.log");
        assert_eq!(
            error_message(&e),
            "mmio-trace: cannot create out.log: Is a directory (os error 21)"
        );
    }
}
