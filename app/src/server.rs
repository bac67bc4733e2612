//! The HTTP server. (Being written.)

use std::process::ExitCode;

/// Arguments of `annals serve` and `annals config`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// `annals serve`.
pub fn serve(_: &ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
/// `annals config`.
pub fn print_config(_: &ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
