//! The Annals service as a library (package `annals-app`): the HTTP API ([`http`]), the server
//! around it ([`server`]), the administrative commands on a store ([`admin`]) and the
//! load-test harness ([`load`]) behind the `annals` binary, and the JSON forms they share
//! ([`wire`]). Tests and other programs start the
//! same server in-process with [`server::Server::start`].

use std::process::ExitCode;

pub mod admin;
pub mod http;
pub mod load;
pub mod server;
pub mod wire;

/// A mistake of the caller (bad arguments, bad configuration): the binary exits with code 2
/// instead of 1, which it keeps for failures found at run time (damage, lost writes).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error returned by a subcommand: 2 for a [`UsageError`] anywhere in its
/// chain, 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.chain().any(|cause| cause.is::<UsageError>()) {
        2
    } else {
        1
    }
}

/// Success as an exit code, for subcommands that have nothing else to say.
pub fn success() -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
