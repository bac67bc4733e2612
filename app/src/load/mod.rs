//! The load-test harness. (Being written: see issue 6.)

use std::process::ExitCode;

/// Arguments of `annals load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {}

/// `annals load`.
pub fn run(_: &LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
