//! `annals load`: the load-test harness (package `annals-load`). It drives a workload against a
//! runtime in this process or a running `annals serve`, reports throughput and latency, and with
//! `--verify` checks that nothing acknowledged was lost or duplicated.
//!
//! The `annals` binary parses [`LoadArgs`] as its `load` subcommand and calls [`run`]. The
//! harness is a crate of its own so that the service (`annals-app`) does not carry its client
//! dependencies (awc, hdrhistogram, indicatif, rand) and the harness does not depend on the
//! service: it talks to a server over HTTP only, and opens an in-process runtime with the
//! runtime crate and the reference domain directly. What it shares with the service's command
//! line — `--config` and `--set` read into a configuration, and
//! [`UsageError`](annals_config::flags::UsageError) for exit code 2 — comes from
//! `annals-config`.
//!
//! ```text
//! annals load [--target inproc|http://HOST:PORT] [--workload bank|orders]
//!             [--aggregates N] [--skew S]
//!             [--concurrency N | --rate PER_SECOND [--max-outstanding N]]
//!             [--duration 10s] [--commands N] [--timeout 10s] [--saga-timeout 30s]
//!             [--durability durable|relaxed] [--data-dir DIR] [--mailbox-capacity N]
//!             [--config FILE] [--set SECTION.KEY=VALUE]…
//!             [--threads N] [--seed N] [--id-prefix PREFIX]
//!             [--verify] [--json FILE] [--quiet]
//! ```
//!
//! For example, the runtime benchmark's workload (1,000 accounts, one client each):
//! `annals load --workload bank --aggregates 1000 --concurrency 1000 --commands 100000`.
//!
//! # Targets
//! - `--target inproc` (the default) opens a [`Runtime`] in a temporary
//!   directory (or `--data-dir`), in `--durability durable` (the default: acknowledged after
//!   the fsync) or `relaxed` (fsync every 50 ms) mode, registers what the workload needs (the
//!   bank account; or the reference domain with its saga and projections) and shuts it down
//!   gracefully at the end. `--config FILE` and `--set SECTION.KEY=VALUE` configure the store
//!   and the runtime as they do for `annals serve` (the environment is not read: a load test
//!   touches only what its command line names), under the flags of `load`; with
//!   `--set store.backend=postgres --set store.postgres_url=postgres://…` the runtime runs on
//!   the PostgreSQL schema `store.postgres_schema` (`annals` by default), which keeps its
//!   events after the run as a `--data-dir` does.
//! - `--target http://HOST:PORT` sends every request to that address and nowhere else; it
//!   first checks `GET /readyz`. The `http` module lists the routes used.
//!
//! # Workloads
//! - `bank`: each session is one command on an account: two deposits of 100, then a withdrawal
//!   of 250 (refused while the balance is short: the business rejections), as in the runtime
//!   benchmark.
//! - `orders`: the customers (`--aggregates`, credit limit 2,000,000 each) are created first
//!   (the *setup*, not measured). Each session creates an order for a customer, waits for the
//!   saga to approve or reject it (seen in the global log), then ships half of the approved
//!   orders and cancels a quarter (the saga then releases their credit).
//!
//! `--skew 0` gives each client its own aggregates in turn (with as many clients as aggregates,
//! one aggregate per client, without contention); `--skew S > 0` draws each command's
//! aggregate from a Zipf distribution with exponent `S` (hot keys; seeded by `--seed`).
//! Aggregate ids start with `--id-prefix` (random per run by default), so runs against one
//! server do not meet each other's aggregates.
//!
//! # Load shapes, bounds, latency
//! Detailed in the `driver` module: closed loop (`--concurrency`, default 64) or open loop
//! (`--rate`, latency from the intended send time, at most `--max-outstanding` sessions at
//! once, default 1,024, the rest counted as unsent); `--duration` and `--commands` (sessions)
//! bound the run, 10 s if neither is given; every request is bounded by `--timeout`.
//!
//! # Exit codes
//! 0 when the run completed (and verified, with `--verify`); 1 when verification found a
//! problem (listed on stderr and in the JSON), when no command at all was answered, or when
//! the target could not be used; 2 for bad arguments.
//!
//! # The report
//! A table on stdout and, with `--json FILE`, the same as one JSON object. Field names are
//! stable (new fields may be added; a change of meaning bumps `report_version`):
//!
//! | field | meaning |
//! |---|---|
//! | `report_version` | 1 |
//! | `target` | `"inproc"` or the server's base URL |
//! | `workload` | `"bank"` or `"orders"` |
//! | `store` | `"sled"` or `"postgres"` in-process; `null` over HTTP |
//! | `durability` | `"durable"` or `"relaxed"` in-process (PostgreSQL: `"durable"`); `null` over HTTP |
//! | `shape` | `"closed"` or `"open"` |
//! | `concurrency` | closed loop: clients; else `null` |
//! | `rate`, `max_outstanding` | open loop: sessions per second, outstanding bound; else `null` |
//! | `aggregates`, `skew`, `threads`, `id_prefix` | as run (`threads`: client threads used) |
//! | `duration_limit_s`, `commands_limit` | the bounds of the run (`null` if not set) |
//! | `elapsed_s` | from the first session to the last answer, in seconds |
//! | `sent` | commands sent (setup excluded) |
//! | `acknowledged` | commands committed |
//! | `rejected` | commands refused for a business reason |
//! | `failed` | commands failed: `sent == acknowledged + rejected + failed` |
//! | `failed_by_kind` | failures by kind: `timeout`, `overloaded`, `conflict`, `connect`, `client_error`, `server_error`, `shutting_down`, `outcome_unknown`, `store`, `protocol`, `other` |
//! | `failure_examples` | the first message of each failure kind |
//! | `unsent` | open loop: arrivals not sent because `max_outstanding` sessions were outstanding |
//! | `throughput_per_s` | `(acknowledged + rejected) / elapsed_s` |
//! | `latency_us` | `{count, mean, p50, p90, p99, p99_9, max}` in µs, of answered and timed-out commands (HDR histogram, 3 significant digits) |
//! | `journal` | in-process: `{fsyncs, events, appends, batches, events_per_fsync}` during the run (including the saga's commands); `null` over HTTP |
//! | `setup` | `{commands, elapsed_s}` of the preparation (`orders`: creating the customers) |
//! | `saga` | `orders`: `{orders, approved, rejected, undecided, shipped, cancelled, latency_us}`, the latency from the `CreateOrder` acknowledgement to the decision seen in the log; `null` for `bank` |
//! | `verify` | with `--verify`: `{ok, log_events, commands, events, streams, orders, customers, problems_total, problems}` (the `verify` module lists the checks); else `null` |

use std::process::ExitCode;

use annals::Runtime;
use anyhow::Context;

mod args;
mod driver;
mod http;
mod progress;
mod report;
mod saga;
mod target;
mod verify;
mod workload;

pub use args::LoadArgs;

use args::{Plan, TargetSpec};
use target::Connect;
use workload::WorkloadKind;

/// `annals load`: runs the load test `args` describe, prints the report (and writes it as
/// JSON if asked), and fails if verification found a problem or nothing was answered.
pub fn run(args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let plan = args.plan()?;
    let opened = open(&plan)?;
    let connect = match (&plan.target, &opened) {
        (TargetSpec::Http { base }, _) => Connect::Http {
            base: base.clone(),
            connections: 1,
            timeout: plan.timeout,
        },
        (TargetSpec::Inproc { .. }, Some(opened)) => Connect::Inproc(opened.runtime.clone()),
        (TargetSpec::Inproc { .. }, None) => anyhow::bail!("the in-process runtime is not open"),
    };
    let system = actix_rt::System::new();
    let runtime = opened.as_ref().map(|o| &o.runtime);
    let result = system.block_on(driver::run(&plan, &connect, runtime));
    drop(connect);
    if let Some(opened) = opened {
        system
            .block_on(opened.runtime.shutdown())
            .context("cannot shut the in-process runtime down")?;
    }
    let report = result?;

    print!("{}", report.render());
    if let Some(path) = &plan.json {
        let json = serde_json::to_vec_pretty(&report).context("cannot encode the report")?;
        std::fs::write(path, json)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    if let Some(verification) = &report.verify {
        if !verification.ok {
            for problem in &verification.problems {
                eprintln!("verify: {problem}");
            }
            let more = verification.problems_total - verification.problems.len() as u64;
            if more > 0 {
                eprintln!("verify: … and {more} more");
            }
            anyhow::bail!(
                "verification failed: {} problem(s); the first: {}",
                verification.problems_total,
                verification.problems.first().map_or("", String::as_str)
            );
        }
    }
    if report.sent > 0 && report.acknowledged + report.rejected == 0 {
        anyhow::bail!(
            "no command was answered ({} sent, all failed); see the failures above",
            report.sent
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The in-process runtime and the temporary directory it lives in.
#[derive(Debug)]
struct Opened {
    runtime: Runtime,
    /// Removed when dropped, after the runtime is shut down.
    _dir: Option<tempfile::TempDir>,
}

/// Opens the in-process runtime of an `inproc` plan (`None` over HTTP).
fn open(plan: &Plan) -> anyhow::Result<Option<Opened>> {
    let TargetSpec::Inproc {
        config,
        data_dir,
        mailbox_capacity,
        ..
    } = &plan.target
    else {
        return Ok(None);
    };
    // A sled store in no named directory lives in a temporary one.
    let dir = match (config.store.backend, data_dir) {
        (annals_config::StoreBackend::Sled, None) => {
            Some(tempfile::tempdir().context("cannot create a temporary directory")?)
        }
        _ => None,
    };
    let scratch = dir.as_ref().map(tempfile::TempDir::path);
    let mut options = config.runtime_options();
    options.store = plan
        .target
        .store_options(scratch.unwrap_or(std::path::Path::new("")))
        .context("no in-process store")?;
    if let Some(capacity) = mailbox_capacity {
        options = options.with_mailbox_capacity(*capacity);
    }
    let place = match (options.store.sled(), options.store.postgres()) {
        (Some(sled), _) => sled.path.display().to_string(),
        (None, Some(pg)) => format!(
            "PostgreSQL schema {} at {}",
            pg.schema,
            annals::store::postgres::redacted_url(&pg.url)
        ),
        (None, None) => "the configured store".to_owned(),
    };
    let runtime = Runtime::open(options)
        .map_err(|e| anyhow::anyhow!("cannot open a runtime in {place}: {e}"))?;
    let registered = match plan.workload {
        WorkloadKind::Bank => runtime
            .register::<annals_domain::bank::Account>()
            .map_err(anyhow::Error::from),
        WorkloadKind::Orders => {
            annals_domain::register(&runtime, &annals_domain::DomainOptions::default())
                .map_err(anyhow::Error::from)
        }
    };
    registered.context("cannot register the workload's aggregates")?;
    Ok(Some(Opened { runtime, _dir: dir }))
}
