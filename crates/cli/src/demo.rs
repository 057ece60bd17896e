//! `mmio-trace demo` (being built: issue "record").

use std::process::ExitCode;

/// Arguments of `mmio-trace demo`.
#[derive(clap::Args)]
pub struct DemoArgs {}

/// Runs the subcommand.
pub fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mmio-trace demo` is not available in this build yet")
}
