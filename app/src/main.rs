//! The `annals` binary: the HTTP service (`serve`), its effective configuration (`config`), the
//! administrative commands on a store — a data directory, or a PostgreSQL schema — (`verify`,
//! `export`, `import`, `stats`) and the load-test harness (`load`). Each subcommand lives in a
//! library (`annals_app`, or `annals_load` for `load`); this file only parses the command line
//! and turns results into exit codes (0 success, 1 failure found, 2 bad usage or
//! configuration).

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the runtime allocates many short-lived buffers
/// across threads (envelopes, encoded records, futures), and glibc's malloc spent about a fifth
/// of the `orders` workload's CPU in `_int_malloc` and `malloc_consolidate` (perf, issue 11).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Annals: an actor-based aggregate runtime for event-sourced services.
#[derive(Debug, Parser)]
#[command(name = "annals", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service on the configured store (embedded sled by default, or PostgreSQL).
    Serve(annals_app::server::ServeArgs),
    /// Print the effective configuration (defaults < file < environment < flags), secrets
    /// redacted.
    Config(annals_app::server::ServeArgs),
    /// Open a store (a data directory, or a PostgreSQL schema), recover it and check its
    /// integrity.
    Verify(annals_app::admin::VerifyArgs),
    /// Write the global log of a store to stdout as JSON lines.
    Export(annals_app::admin::ExportArgs),
    /// Read JSON lines written by `export` into an empty store.
    Import(annals_app::admin::ImportArgs),
    /// Print counts, sizes and heads of a store.
    Stats(annals_app::admin::StatsArgs),
    /// Measure throughput and latency in-process or against a running server.
    // Boxed: its many flags would make every command as large as it.
    Load(Box<annals_load::LoadArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => annals_app::server::serve(&args),
        Command::Config(args) => annals_app::server::print_config(&args),
        Command::Verify(args) => annals_app::admin::verify(&args),
        Command::Export(args) => annals_app::admin::export(&args),
        Command::Import(args) => annals_app::admin::import(&args),
        Command::Stats(args) => annals_app::admin::stats(&args),
        Command::Load(args) => annals_load::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("annals: {error:#}");
            ExitCode::from(annals_app::exit_code(&error))
        }
    }
}
