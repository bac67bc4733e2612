//! `annals verify`: the integrity check of a data directory.
//!
//! Ported from the first hand-written `annals` binary, which only opened the store and printed
//! its recovery report. Opening still does the heart of it (the store's recovery checks the
//! log's structure, or every record with `--full`, and names a damaged record); on top of it
//! this checks what the store's open does not read:
//! - with `--full`, every event payload decodes — as the reference domain's event types for
//!   the aggregates the binary serves (through their upcasters, so old schema versions count),
//!   as CBOR otherwise — and every command-id record decodes;
//! - always, every subscriber's checkpoint and parked events decode, and no checkpoint is beyond
//!   the log's head (such a subscriber would skip the events written next).
//!
//! On PostgreSQL no recovery runs on open and the store checks nothing itself, so the log is
//! scanned: positions must run from 1 to the head without a gap, and with `--full` every
//! payload must decode and every event that carries a command id must be named by that id's
//! record (its commit's events), which the database writes in the same transaction.
//!
//! The first damage found stops the check and is the error (exit 1).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use annals::codec::Value;
use annals::store::sled::{IntegrityCheck, RecoveryReport, SledStore};
use annals::store::{EventStore, StoredOutcome};
use annals::{Aggregate, CommandId, Position, RecordedEvent};
use annals_domain::bank::Account;
use annals_domain::customer::Customer;
use annals_domain::order::Order;

use super::store::{self, Store};
use super::VerifyArgs;

/// What the check found on a store without damage.
struct Report {
    /// What opening changed (sled).
    recovery: Option<RecoveryReport>,
    /// Events scanned by this check (PostgreSQL: every event, whose positions it checked).
    events_scanned: Option<u64>,
    /// Events whose payload was decoded (`--full`).
    events_decoded: Option<u64>,
    /// Command-id records read, and how many of them are dangling (`--full`).
    command_records: Option<(u64, u64)>,
    /// Each subscriber's name, checkpoint and parked events.
    subscribers: Vec<(String, Position, usize)>,
}

pub(super) fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let target = args.store.target()?;
    store::require_store(&target)?;
    let started = Instant::now();
    let check = if args.full {
        IntegrityCheck::Full
    } else {
        IntegrityCheck::Structure
    };
    let store = store::open(&target, check)?;
    let report = store::close(&store, check_store(&store, args.full))?;
    print(&store, args.full, &report, started.elapsed());
    Ok(ExitCode::SUCCESS)
}

fn check_store(store: &Store, full: bool) -> anyhow::Result<Report> {
    let Some(sled) = store.sled() else {
        return check_postgres(store, full);
    };
    let place = store.place();
    let events_decoded = if full {
        Some(super::scan_log(store, |event| {
            decode(event).map_err(|reason| {
                super::damaged(
                    place,
                    &format!(
                        "the event at position {} ({} version {}, {} schema {}, id {}) does not \
                         decode: {reason}",
                        event.position,
                        event.stream,
                        event.version,
                        event.event_type,
                        event.schema_version,
                        event.event_id
                    ),
                )
            })
        })?)
    } else {
        None
    };
    let command_records = if full {
        Some(check_command_records(sled, place)?)
    } else {
        None
    };
    Ok(Report {
        recovery: Some(sled.recovery_report().clone()),
        events_scanned: None,
        events_decoded,
        command_records,
        subscribers: check_subscribers(store)?,
    })
}

/// The check of a PostgreSQL store: the log scanned for gaps, and with `full` every payload
/// decoded and every command-id record of an event checked to name it.
fn check_postgres(store: &Store, full: bool) -> anyhow::Result<Report> {
    let place = store.place();
    // The record of the last command id looked up, and whether it named the event's commit.
    let mut last: Option<(CommandId, StoredOutcome)> = None;
    let events = super::scan_log(store, |event| {
        if !full {
            return Ok(());
        }
        let describe = || {
            format!(
                "the event at position {} ({} version {}, {} schema {}, id {})",
                event.position,
                event.stream,
                event.version,
                event.event_type,
                event.schema_version,
                event.event_id
            )
        };
        decode(event).map_err(|reason| {
            super::damaged(place, &format!("{} does not decode: {reason}", describe()))
        })?;
        let Some(id) = &event.meta.command_id else {
            return Ok(());
        };
        if last.as_ref().is_none_or(|(last, _)| last != id) {
            let outcome = store
                .log()
                .command_outcome(id)
                .map_err(|e| super::read_error(place, e))?;
            last = outcome.map(|outcome| (id.clone(), outcome));
        }
        match &last {
            Some((_, StoredOutcome::Committed { events, .. }))
                if events.iter().any(|e| e.event_id == event.event_id) =>
            {
                Ok(())
            }
            _ => Err(super::damaged(
                place,
                &format!(
                    "{} carries command id {:?}, whose record does not name it",
                    describe(),
                    id.as_str()
                ),
            )),
        }
    })?;
    Ok(Report {
        recovery: None,
        events_scanned: Some(events),
        events_decoded: full.then_some(events),
        command_records: None,
        subscribers: check_subscribers(store)?,
    })
}

/// Decodes a payload as the domain's event type of its aggregate, or as CBOR.
fn decode(event: &RecordedEvent) -> Result<(), String> {
    let decoded = match event.stream.aggregate_type() {
        t if t == Customer::TYPE => event.upcast::<Customer>().map(drop),
        t if t == Order::TYPE => event.upcast::<Order>().map(drop),
        t if t == Account::TYPE => event.upcast::<Account>().map(drop),
        _ => annals::codec::decode_plain::<Value>(&event.payload.0).map(drop),
    };
    decoded.map_err(|e| e.to_string())
}

/// Reads every command-id record through the store, which decodes it and, for a committed
/// command, checks the commit it names. A record whose commit was lost in a crash (dangling)
/// is ignored by readers by design: counted, not damage.
fn check_command_records(store: &SledStore, place: &str) -> anyhow::Result<(u64, u64)> {
    let tree = store.database().open_tree("commands")?;
    let (mut checked, mut dangling) = (0u64, 0u64);
    for key in tree.iter().keys() {
        let key = key?;
        let id = std::str::from_utf8(&key)
            .ok()
            .and_then(|id| CommandId::new(id).ok())
            .ok_or_else(|| {
                super::damaged(
                    place,
                    &format!("a command-id record has a key that is no command id: {key:?}"),
                )
            })?;
        match store.command_outcome(&id) {
            Ok(Some(_)) => {}
            Ok(None) => dangling += 1,
            Err(e) => {
                return Err(super::damaged(
                    place,
                    &format!("the command-id record {:?}: {e}", id.as_str()),
                ))
            }
        }
        checked += 1;
    }
    Ok((checked, dangling))
}

fn check_subscribers(store: &Store) -> anyhow::Result<Vec<(String, Position, usize)>> {
    let head = store.log().head_position();
    let mut out = Vec::new();
    for name in super::subscriber_names(store)? {
        let bad =
            |what: String| super::damaged(store.place(), &format!("subscriber {name:?}: {what}"));
        let checkpoint = store
            .state()
            .load_checkpoint(&name)
            .map_err(|e| bad(format!("its checkpoint: {e}")))?;
        if checkpoint > head {
            return Err(bad(format!(
                "its checkpoint (position {checkpoint}) is beyond the head of the log \
                 (position {head}): it would skip the events written next; rebuild it"
            )));
        }
        let parked = store
            .state()
            .parked(&name, annals::subscription::PARKED_LISTED_MAX)
            .map_err(|e| bad(format!("its parked events: {e}")))?;
        out.push((name, checkpoint, parked.len()));
    }
    Ok(out)
}

fn print(store: &Store, full: bool, report: &Report, took: Duration) {
    let check = if full {
        "full check: every record and payload decoded"
    } else {
        "structure check; --full also decodes every record and payload"
    };
    println!("{}: no damage found ({check})", store.place());
    match &report.recovery {
        Some(r) => {
            println!("  head position    {}", r.head_position);
            println!("  commits checked  {}", r.records_checked);
            println!("  events checked   {}", r.events_checked);
        }
        None => {
            println!("  head position    {}", store.log().head_position());
            let events = report.events_scanned.unwrap_or(0);
            println!("  events checked   {events} (positions dense from 1 to the head)");
        }
    }
    if let Some(events) = report.events_decoded {
        println!(
            "  events decoded   {events} (Customer, Order and Account events as their types, \
             others as CBOR)"
        );
    }
    if let Some((checked, dangling)) = report.command_records {
        println!(
            "  command ids      {checked} records read ({dangling} dangling: their commit was \
             lost in a crash before it was acknowledged; readers ignore them)"
        );
    }
    if report.subscribers.is_empty() {
        println!("  subscribers      none with a checkpoint");
    }
    for (i, (name, checkpoint, parked)) in report.subscribers.iter().enumerate() {
        let label = if i == 0 { "subscribers" } else { "" };
        println!("  {label:<16} {name} at position {checkpoint}, {parked} parked");
    }
    match &report.recovery {
        Some(r) => println!("  recovery         {}", describe_recovery(r)),
        None => println!("  recovery         none (PostgreSQL: nothing to recover)"),
    }
    println!("  took             {took:.2?}");
}

/// What opening the store changed, in words.
pub(super) fn describe_recovery(r: &RecoveryReport) -> String {
    match (r.records_reindexed, r.records_removed) {
        (0, 0) => "nothing to re-derive or remove".into(),
        (reindexed, 0) => format!(
            "opening re-derived the index entries of {reindexed} commits written after the last \
             durable watermark (the store was not shut down cleanly)"
        ),
        (reindexed, removed) => format!(
            "opening re-derived the index entries of {reindexed} commits and removed {removed} \
             unacknowledged log segments a crash left behind"
        ),
    }
}
