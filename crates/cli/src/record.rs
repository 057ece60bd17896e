//! `mmio-trace record` (being built: issue "record").

use std::process::ExitCode;

/// Arguments of `mmio-trace record`.
#[derive(clap::Args)]
pub struct RecordArgs {}

/// Runs the subcommand.
pub fn run(_args: RecordArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mmio-trace record` is not available in this build yet")
}
