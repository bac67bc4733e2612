//! Annals against its Rust peers on the same bank workload, side by side, from one run.
//!
//! ```text
//! cargo run --release --manifest-path tests/compare/Cargo.toml -- \
//!     [--aggregates 1000] [--commands 100] [--only annals,cqrs-es,eventsourced]
//! ```
//!
//! (`-- --help` lists the other options: warm-up, client threads, PostgreSQL connections and
//! target.) This crate is its own cargo workspace, excluded from the root one, so the default
//! build and CI never compile the peers; see `README.md` beside it.
//!
//! # What runs
//! The workload of the runtime core benchmark (`tests/benches/bank.rs`): `--aggregates` bank
//! accounts, one client task per account sending `--commands` commands, each awaiting its
//! reply before the next (closed loop); the commands go deposit 100, deposit 100, withdraw 250,
//! repeated, so some withdrawals are refused for insufficient funds. Every system decides with
//! the same code, the reference domain's `annals_domain::bank::Account` (`decide`/`apply`),
//! wrapped in each framework's aggregate trait, so they all refuse the same commands; the run
//! checks that the rejection counts agree and that each store holds exactly the accepted events.
//!
//! - **annals durable**: in process, sled in a temporary directory, a reply only after the
//!   fsync of the group commit that holds its event.
//! - **annals relaxed**: the same, a reply after the write, an fsync every 50 ms (a crash can
//!   lose the last 50 ms of acknowledged commands; not durable, shown for scale).
//! - **annals postgres**: in process, on Annals's PostgreSQL backend (schema
//!   `annals_compare_pg` of the peers' database), a reply after the `COMMIT` of the batch
//!   transaction (group commit) holding its event.
//! - **cqrs-es** 0.5.0 + postgres-es 0.5.0 (sqlx 0.8): a reply after the transaction's
//!   `COMMIT`.
//! - **eventsourced** 0.27.1 + eventsourced-postgres 0.14.2 (tokio-postgres + bb8): a reply
//!   after the autocommitted `INSERT`.
//!
//! The PostgreSQL server is used as configured: the run prints its `fsync` and
//! `synchronous_commit` settings and marks the peers' rows durable only if both are on, and
//! annals postgres's if `fsync` is (its backend sets `synchronous_commit = on` per session).
//!
//! # How it measures
//! All clients (and the PostgreSQL peers' own tasks) run on one tokio multi-thread runtime.
//! Annals's actors and journal run on its own threads, as they do in production. Before each
//! system's timed window, an untimed warm-up runs 10 commands on each of `--warmup` other
//! aggregates (connections opened, statements prepared, threads started). Before each
//! PostgreSQL-backed system's window the server is checkpointed. A window runs from the first send to
//! the last reply; latency per command goes to an HDR histogram (µs, 3 significant digits).
//! The setup outside the window: opening Annals, the connection pools, and spawning
//! eventsourced's entities (which Annals does on demand, inside its window).

mod args;
mod peers;
mod pg;
mod report;
mod workload;

use std::ops::Range;
use std::process::ExitCode;
use std::sync::Arc;

use annals::store::sled::Durability;
use annals::store::PgOptions;
use anyhow::{bail, Context as _};

use crate::args::{Args, WARMUP_COMMANDS};
use crate::peers::annals::{AnnalsPeer, RELAXED_FLUSH_INTERVAL};
use crate::peers::cqrs::{self as cqrs, CqrsPeer};
use crate::peers::eventsourced::{self as es, EventsourcedPeer};
use crate::report::Row;
use crate::workload::{drive, Peer};

fn main() -> ExitCode {
    // Errors only: the peers log why an entity stopped (eventsourced ends an entity whose
    // persist failed, and its caller sees only "cannot receive command handler result").
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_writer(std::io::stderr)
        .init();
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Aggregates `0..warmup` take the warm-up; the timed ones follow.
fn ranges(args: &Args) -> (Range<usize>, Range<usize>) {
    let warmup = 0..args.warmup_aggregates;
    (
        warmup.clone(),
        warmup.end..warmup.end + args.aggregates.get(),
    )
}

fn run(args: &Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.get())
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    println!(
        "bank workload: {} aggregates × {} commands, one client per aggregate (closed loop); \
         warm-up {} aggregates × {WARMUP_COMMANDS} commands, untimed",
        args.aggregates, args.commands, args.warmup_aggregates
    );
    println!(
        "machine: {} cores, load average {}; clients on one tokio runtime of {} worker threads",
        std::thread::available_parallelism().map_or(1, usize::from),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".to_string()),
        args.client_threads
    );

    let admin = if args.only.needs_postgres() {
        let admin = rt.block_on(args.pg.connect())?;
        let durability = rt.block_on(pg::Durability::read(&admin))?;
        println!("{durability}");
        rt.block_on(pg::reset_schema(&admin))?;
        rt.block_on(admin.batch_execute(&cqrs::ddl()))
            .context("cannot create cqrs-es's tables")?;
        Some((admin, durability))
    } else {
        None
    };

    // A system that fails (a peer's entity stopping, say) loses its row, not the others'.
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut record = |system: &str, result: anyhow::Result<Row>| match result {
        Ok(row) => rows.push(row),
        Err(e) => {
            eprintln!("{system}: FAILED: {e:#}");
            failures.push(format!("{system}: FAILED: {e:#}"));
        }
    };
    if args.only.annals_durable {
        record("annals durable", run_annals(&rt, args, Durability::Durable));
    }
    if args.only.annals_relaxed {
        let relaxed = Durability::Relaxed {
            flush_interval: RELAXED_FLUSH_INTERVAL,
        };
        record("annals relaxed", run_annals(&rt, args, relaxed));
    }
    if let Some((admin, durability)) = &admin {
        if args.only.annals_postgres {
            record(
                "annals postgres",
                run_annals_postgres(&rt, args, admin, durability.fsync_is_on()),
            );
        }
        let pg_durable = durability.is_durable();
        if args.only.cqrs_es {
            record("cqrs-es", run_cqrs(&rt, args, admin, pg_durable));
        }
        if args.only.eventsourced {
            record(
                "eventsourced",
                run_eventsourced(&rt, args, admin, pg_durable),
            );
        }
    }

    println!();
    print!("{}", report::table(&rows));
    for failure in &failures {
        println!("{failure}");
    }
    check_same_decisions(&rows)?;
    if !failures.is_empty() {
        bail!(
            "{} system(s) failed; their rows are missing",
            failures.len()
        );
    }
    Ok(())
}

/// Every system ran the same commands through the same `decide`: the same number must have
/// been refused. A difference means an aggregate is not equivalent, and the table is void.
fn check_same_decisions(rows: &[Row]) -> anyhow::Result<()> {
    if let Some(first) = rows.first() {
        for r in rows {
            if r.measured.rejected != first.measured.rejected {
                bail!(
                    "{} refused {} commands but {} refused {}: the aggregates are not equivalent",
                    r.peer,
                    r.measured.rejected,
                    first.peer,
                    first.measured.rejected
                );
            }
        }
    }
    Ok(())
}

fn run_annals(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    durability: Durability,
) -> anyhow::Result<Row> {
    let durable = matches!(durability, Durability::Durable);
    let (_, timed) = ranges(args);
    let peer = Arc::new(AnnalsPeer::open(durability, timed.end)?);
    let name = if durable {
        "annals durable"
    } else {
        "annals relaxed"
    };
    if let Some(path) = peer.path() {
        println!("{name}: sled in {}", path.display());
    }
    let (_, measured, events_per_fsync) = measure_annals(rt, args, &peer, name, None)?;
    Ok(Row {
        peer: name.to_string(),
        acknowledged: if durable {
            "fsync (group commit)".to_string()
        } else {
            format!(
                "write; fsync every {} ms",
                RELAXED_FLUSH_INTERVAL.as_millis()
            )
        },
        durable,
        is_peer: false,
        measured,
        events_per_fsync: Some(events_per_fsync),
    })
}

/// Annals on its PostgreSQL backend, in the schema [`pg::ANNALS_SCHEMA`] of the peers'
/// database (dropped by `pg::reset_schema`, created by the backend when it opens).
fn run_annals_postgres(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    admin: &tokio_postgres::Client,
    pg_durable: bool,
) -> anyhow::Result<Row> {
    let (_, timed) = ranges(args);
    let options = PgOptions::new(args.pg.annals_url())
        .with_schema(pg::ANNALS_SCHEMA)
        .with_pool_size(args.pg_connections);
    let name = "annals postgres";
    // Opened here, on the main thread: the backend's set-up blocks on its own runtime.
    let peer = Arc::new(AnnalsPeer::open_postgres(options, timed.end)?);
    println!(
        "{name}: schema {} in database {} at {}:{}, pool of {} connections",
        pg::ANNALS_SCHEMA,
        args.pg.dbname,
        args.pg.host,
        args.pg.port,
        args.pg_connections
    );
    let (expected, measured, events_per_fsync) =
        measure_annals(rt, args, &peer, name, Some(admin))?;
    // The journal's counters said it; the table must say it too.
    let stored = rt.block_on(pg::count(admin, pg::ANNALS_EVENTS_TABLE))?;
    if stored != expected {
        bail!(
            "{name} stored {stored} events in {}, but {expected} commands were accepted",
            pg::ANNALS_EVENTS_TABLE
        );
    }
    Ok(Row {
        peer: name.to_string(),
        acknowledged: pg_acknowledged(pg_durable, "batch COMMIT"),
        durable: pg_durable,
        is_peer: false,
        measured,
        events_per_fsync: Some(events_per_fsync),
    })
}

/// The windows of an Annals runtime (warm-up, then timed), then its shutdown, and the check
/// that its journal committed exactly one event per accepted command. With `checkpoint`, the
/// PostgreSQL server is checkpointed before the timed window, as for the peers. Returns the
/// events expected in the store, the timed window and its events per fsync (from the
/// journal's counters: on PostgreSQL one per batch transaction).
fn measure_annals(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    peer: &Arc<AnnalsPeer>,
    name: &str,
    checkpoint: Option<&tokio_postgres::Client>,
) -> anyhow::Result<(u64, workload::Measured, f64)> {
    let (warmup, timed) = ranges(args);
    let windows = (|| {
        let warm = rt.block_on(drive(peer, warmup, WARMUP_COMMANDS))?;
        if let Some(admin) = checkpoint {
            if !rt.block_on(pg::checkpoint(admin)) {
                println!("{name}: CHECKPOINT refused (not a superuser); the window may hold one");
            }
        }
        let before = peer.journal();
        let measured = rt.block_on(drive(peer, timed, args.commands.get()))?;
        anyhow::Ok((warm, before, measured, peer.journal()))
    })();
    // Shut down (final flush, threads stopped) whether or not the windows succeeded.
    let shutdown = rt.block_on(peer.shutdown());
    let (warm, (events_before, fsyncs_before), measured, (events_after, fsyncs_after)) = windows?;
    shutdown?;
    let stored = events_after;
    let expected = warm.accepted() + measured.accepted();
    if stored != expected {
        bail!("{name} committed {stored} events, but {expected} commands were accepted");
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let events_per_fsync =
        (events_after - events_before) as f64 / (fsyncs_after - fsyncs_before).max(1) as f64;
    Ok((expected, measured, events_per_fsync))
}

/// The window of a PostgreSQL peer: checkpoint first, count WAL syncs around it, and check
/// afterwards that `table` holds exactly the accepted events.
fn measure_pg<P: Peer>(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    admin: &tokio_postgres::Client,
    peer: &Arc<P>,
    name: &str,
    table: &str,
) -> anyhow::Result<(workload::Measured, Option<f64>)> {
    let (warmup, timed) = ranges(args);
    let warm = rt.block_on(drive(peer, warmup, WARMUP_COMMANDS))?;
    if !rt.block_on(pg::checkpoint(admin)) {
        println!("{name}: CHECKPOINT refused (not a superuser); the window may hold one");
    }
    let syncs_before = rt.block_on(pg::wal_syncs(admin));
    let measured = rt.block_on(drive(peer, timed, args.commands.get()))?;
    let syncs_after = rt.block_on(pg::wal_syncs(admin));
    let stored = rt.block_on(pg::count(admin, table))?;
    let expected = warm.accepted() + measured.accepted();
    if stored != expected {
        bail!("{name} stored {stored} events in {table}, but {expected} commands were accepted");
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let events_per_fsync = match (syncs_before, syncs_after) {
        (Some(b), Some(a)) if a > b => Some(measured.accepted() as f64 / (a - b) as f64),
        _ => None,
    };
    Ok((measured, events_per_fsync))
}

fn pg_acknowledged(pg_durable: bool, what: &str) -> String {
    if pg_durable {
        format!("{what} (WAL fsync)")
    } else {
        format!("{what} (NOT synced: see settings)")
    }
}

fn run_cqrs(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    admin: &tokio_postgres::Client,
    pg_durable: bool,
) -> anyhow::Result<Row> {
    let (_, timed) = ranges(args);
    let connections = u32::try_from(args.pg_connections.get()).unwrap_or(u32::MAX);
    let peer = Arc::new(rt.block_on(CqrsPeer::open(&args.pg, connections, timed.end))?);
    let name = "cqrs-es 0.5.0".to_string();
    println!("{name}: postgres-es 0.5.0, sqlx pool of {connections} connections");
    let result = measure_pg(rt, args, admin, &peer, &name, cqrs::EVENTS_TABLE);
    rt.block_on(peer.close());
    let (measured, events_per_fsync) = result?;
    Ok(Row {
        peer: name,
        acknowledged: pg_acknowledged(pg_durable, "COMMIT"),
        durable: pg_durable,
        is_peer: true,
        measured,
        events_per_fsync,
    })
}

fn run_eventsourced(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    admin: &tokio_postgres::Client,
    pg_durable: bool,
) -> anyhow::Result<Row> {
    let (_, timed) = ranges(args);
    let pools = args
        .pg_connections
        .get()
        .div_ceil(es::POOL_CONNECTIONS as usize);
    let peer = Arc::new(rt.block_on(EventsourcedPeer::open(&args.pg, pools, timed.end))?);
    let name = "eventsourced 0.27.1".to_string();
    println!(
        "{name}: eventsourced-postgres 0.14.2, {pools} bb8 pool(s) of {} connections, \
         {} entities spawned before the clock",
        es::POOL_CONNECTIONS,
        timed.end
    );
    let table = format!("{}.events", pg::SCHEMA);
    let (measured, events_per_fsync) = measure_pg(rt, args, admin, &peer, &name, &table)?;
    drop(peer);
    Ok(Row {
        peer: name,
        acknowledged: pg_acknowledged(pg_durable, "INSERT"),
        durable: pg_durable,
        is_peer: true,
        measured,
        events_per_fsync,
    })
}
