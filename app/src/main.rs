//! The `annals` binary: the CLI of the Annals service.
//!
//! Today it has the administrative `verify` subcommand, which opens a store directory, runs
//! recovery and the integrity check, and prints what it found; `serve` and `load` come with
//! their issues. Arguments are parsed by hand until the service brings its configuration layer.

use std::process::ExitCode;

use annals::store::sled::{IntegrityCheck, SledOptions, SledStore};
use annals::store::EventStore;

const USAGE: &str = "usage: annals verify --data-dir DIR [--full]
  verify    open the store in DIR, recover it and check its integrity (structure of the whole
            log; --full also decodes every record), then print the report
  --version print the version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("annals: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("--version") => {
            println!("annals {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some("verify") => verify(&args[1..]),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n{USAGE}")),
        None => Err(format!("missing command\n{USAGE}")),
    }
}

fn verify(args: &[String]) -> Result<(), String> {
    let mut data_dir = None;
    let mut check = IntegrityCheck::Structure;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--data-dir" => {
                data_dir = Some(rest.next().ok_or("--data-dir needs a directory")?.clone());
            }
            "--full" => check = IntegrityCheck::Full,
            other => return Err(format!("verify: unknown argument {other:?}\n{USAGE}")),
        }
    }
    let dir = data_dir.ok_or_else(|| format!("verify: --data-dir is required\n{USAGE}"))?;
    if !std::path::Path::new(&dir).join("conf").is_file() {
        // Opening would create an empty store; verifying must change nothing.
        return Err(format!("verify: {dir:?} holds no Annals store"));
    }
    let store = SledStore::open(SledOptions::new(&dir).with_integrity_check(check))
        .map_err(|e| format!("verify: {e}"))?;
    let report = store.recovery_report().clone();
    println!(
        "store {dir}: ok ({check:?} check)\n  head position   {}\n  commits checked {}\n  events checked  {}\n  re-derived      {}\n  removed         {} unacknowledged segments\n  took            {:?}",
        report.head_position,
        report.records_checked,
        report.events_checked,
        report.records_reindexed,
        report.records_removed,
        report.duration,
    );
    store.shutdown().map_err(|e| format!("verify: {e}"))
}
