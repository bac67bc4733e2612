//! The Annals service as a library (package `annals-app`): the HTTP API ([`http`]), the server
//! around it ([`server`]) and the administrative commands on a store ([`admin`]) behind the
//! `annals` binary, the JSON forms they share ([`wire`]), and the flags that name a
//! configuration ([`cli`]). Tests and other programs start the same server in-process with
//! [`server::Server::start`]. The binary's `load` subcommand is the load-test harness of the
//! package `annals-load` (`app/load/`), which does not depend on this crate.

use std::process::ExitCode;

use annals_config::flags::UsageError;

pub mod admin;
pub mod causation;
pub mod cli;
pub mod http;
pub mod server;
pub mod wire;

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
