//! Administrative commands on a data directory. (Being written: see issue 5.)

use std::process::ExitCode;

/// Arguments of `annals verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {}
/// Arguments of `annals export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {}
/// Arguments of `annals import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {}
/// Arguments of `annals stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {}

/// `annals verify`.
pub fn verify(_: &VerifyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
/// `annals export`.
pub fn export(_: &ExportArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
/// `annals import`.
pub fn import(_: &ImportArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
/// `annals stats`.
pub fn stats(_: &StatsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
