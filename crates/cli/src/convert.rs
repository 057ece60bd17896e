//! `mmio-trace convert`: text <-> binary, losslessly.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mmio_trace_format::{AnyWriter, Format};

use crate::analyse::Progress;
use crate::input::{InputArgs, LogInput};

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OutFormat {
    /// The Linux kernel mmiotrace text format (what demmio reads).
    Text,
    /// mmio-trace's compact binary format (keeps widths up to 64 bytes).
    Binary,
}

/// Convert a log between the kernel text format and the compact binary format.
///
/// The input format (and any gzip/xz/zstd compression) is detected from the content.
/// Conversions are lossless: text -> binary -> text gives back the original bytes.
#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Format to write.
    #[arg(long, value_enum)]
    to: OutFormat,

    #[command(flatten)]
    input: InputArgs,

    /// Where to write; `-` is standard output.
    #[arg(value_name = "OUT")]
    output: PathBuf,
}

/// Runs `convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let mut input = LogInput::open(&args.input)?;
    let out_name = args.output.display().to_string();
    let sink: Box<dyn Write> = if out_name == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("cannot create {out_name}"))?,
        )
    };
    let format = match args.to {
        OutFormat::Text => Format::Text,
        OutFormat::Binary => Format::Binary,
    };
    let mut w = AnyWriter::new(sink, format).with_context(|| format!("writing {out_name}"))?;
    let mut progress = Progress::new();
    let read = input.for_each_event(|ev, seen| {
        w.write_event(ev)
            .with_context(|| format!("writing {out_name}"))?;
        progress.tick(seen);
        Ok(())
    });
    if let Err(e) = read {
        // Everything before the bad input was converted: keep it (a damaged log's good
        // part is often what the user wants), then report the error.
        let _ = w.flush();
        progress.finish();
        return Err(e);
    }
    w.flush().with_context(|| format!("writing {out_name}"))?;
    progress.finish();
    input.report_skipped();
    Ok(ExitCode::SUCCESS)
}
