//! `mmio-trace mark` (being built: issue "record").

use std::process::ExitCode;

/// Arguments of `mmio-trace mark`.
#[derive(clap::Args)]
pub struct MarkArgs {}

/// Runs the subcommand.
pub fn run(_args: MarkArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mmio-trace mark` is not available in this build yet")
}
