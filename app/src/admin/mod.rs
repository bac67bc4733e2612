//! Administrative commands on a store: `annals verify`, `annals export`, `annals import` and
//! `annals stats`.
//!
//! The store is the one `annals serve` runs on, named the same way (`store.rs`): by default
//! the sled database of the embedded store in a data directory (`--data-dir DIR`), or with
//! `--set store.backend=postgres --set store.postgres_url=…` (or `--config FILE`, or the
//! `ANNALS_STORE_*` variables) a PostgreSQL schema. Each command opens the store itself — not
//! a [`Runtime`](annals::Runtime): no aggregate, projection or process manager runs, so
//! nothing but the store's own recovery writes to it. A sled directory must be the command's
//! alone: while `annals serve` runs on it, sled's lock refuses a second process (exit 2). A
//! PostgreSQL schema has no such lock: `export`, `verify` and `stats` read what is committed
//! when they start (the head is fixed when the store opens), and `import` refuses a schema
//! that holds any event.
//!
//! # What is sled-only
//! - the recovery report and the integrity check run on open (PostgreSQL's transactions leave
//!   nothing to recover; `verify` checks the log through the store's API instead: positions
//!   dense from 1 to the head, with `--full` every payload and every event's command-id record);
//! - `verify --full`'s reading of every command-id record, and `stats`' counts of snapshots,
//!   command-id records, trees and bytes on disk (the PostgreSQL store offers no listing of
//!   them; `stats` leaves them out);
//! - `export`'s command outcomes without events (listed by the sled store only: an export of
//!   a PostgreSQL store has the events alone, and says so on stderr).
//!
//! `import` into PostgreSQL restores the outcome lines through ordinary appends of the outcome
//! (`AppendKind::Rejection` or `NoEvents` with the command's id and fingerprint), which record
//! it at its stream's current version: a retry gets the same rejection, and an accepted
//! command without events is answered with the stream's version after the import rather than
//! the one it had (the summary counts such outcomes).
//!
//! # Opening is recovery (sled)
//! Opening a store runs its recovery and integrity check (see [`annals::store::sled`]): after
//! an unclean shutdown it re-derives the index entries (stream heads, command ids, skips)
//! of the log written after the last durable watermark and removes unacknowledged segments a
//! crash left after a lost one — what `annals serve` would do on start. `verify` and `stats`
//! say when it did. A store it finds damaged is left exactly as it was. None of the commands
//! except `import` ever creates a store: a directory without one is refused (exit 2).
//!
//! # The export format (JSON lines)
//! `annals export` writes two kinds of lines: first the global log in position order, one
//! event per line, then the stored outcomes of the commands that carried a command id and
//! committed no event, one per line, in command-id order.
//!
//! ## Event lines
//! Each is a JSON object with these fields in this order (no `kind`: the shape of every line
//! before outcome lines existed, so older exports import unchanged):
//!
//! | field | value |
//! |---|---|
//! | `event_id` | the event's UUID |
//! | `aggregate`, `id` | the aggregate type name as stored (`Order`) and the aggregate id |
//! | `version`, `position` | the event's version in its stream and position in the log |
//! | `type`, `schema_version` | the event type name and the schema version it was written with |
//! | `recorded_at` | when its command was decided: RFC 3339 in UTC with microseconds |
//! | `command_id` | the command id its command carried, or `null` |
//! | `command_fingerprint` | only with a command id: the command's fingerprint (32 hex digits) |
//! | `correlation_id`, `causation_id` | the trace ids, or `null` |
//! | `data` | the payload, CBOR converted to JSON generically (see [`crate::wire::cbor`]) |
//!
//! `command_fingerprint` goes beyond the HTTP envelope on purpose: the store tells a retried
//! command from a different one with the same command id by this hash of the command, so
//! without it an imported store would answer the retry of an imported command — and a process
//! manager redelivering its steps after the import — with "command id already used" instead
//! of the original outcome.
//!
//! ## Outcome lines
//! A command with a command id (HTTP `Idempotency-Key`, or a process manager's derived id) that
//! its aggregate refused, or accepted without producing an event, leaves a record that is not
//! in the log; a retry with the same id returns that outcome instead of running again. Its line
//! is a JSON object with these fields in this order:
//!
//! | field | value |
//! |---|---|
//! | `kind` | `"outcome"` |
//! | `command_id` | the command id |
//! | `aggregate`, `id` | the aggregate the command was sent to (an id is one command across all aggregates: the fingerprint covers the aggregate) |
//! | `version` | the aggregate's version when the outcome was recorded |
//! | `command_fingerprint` | the command's fingerprint (32 hex digits) |
//! | `outcome` | `"rejected"` or `"no_events"` |
//! | `rejection` | only when rejected: the aggregate's rejection, CBOR converted to JSON as `data` is (`{"type":"AlreadyExists"}`) |
//! | `rejection_cbor` | instead of `rejection` when converting the stored bytes to JSON and back would not give them exactly (not CBOR, or CBOR this build encodes differently): the bytes in hex |
//!
//! For example (one line):
//!
//! ```text
//! {"kind":"outcome","command_id":"again","aggregate":"Customer","id":"c-1","version":1,
//!  "command_fingerprint":"5f0c…","outcome":"rejected","rejection":{"type":"AlreadyExists"}}
//! ```
//!
//! The import restores each outcome byte for byte, so a retry of a refused command is refused
//! again after an import, and the same id on another aggregate is still a different command.
//!
//! # What an export does not carry
//! - **snapshots** — caches; aggregates rehydrate from the events and snapshots are taken again;
//! - **read models, process-manager state and outboxes, deadlines, subscriber checkpoints and
//!   parked events** — subscribers start from position 0 on the imported store and rebuild
//!   them; process managers redeliver their steps, whose derived command ids return the stored
//!   outcome of every step, committed or not;
//! - **commit boundaries**, as such: the import rebuilds them (see below).
//!
//! # Import
//! `annals import` reads those lines from stdin into an empty (or new) store and keeps
//! every field: event ids, versions, positions, times, command and trace ids, command outcomes.
//! Outcome lines follow every event line, in command-id order; each must name a version its
//! stream reached and a command id no imported commit uses. Consecutive lines
//! of one stream with the same `recorded_at`, command id, fingerprint and trace ids and
//! contiguous versions form one commit, appended atomically (one
//! [`AppendRequest`](annals::store::AppendRequest)). Two commits that share all of that (no
//! command id, the same microsecond) become one, which changes nothing a reader can see. Every
//! line is checked first; the first bad one stops the import, names its line number, and the
//! commits before it stay imported: the error says up to which position. Nothing is ever half
//! imported: a commit is whole or absent.
//!
//! # Exit codes
//! 0 success; 1 a failure found at run time (damage, a bad input line, a failed write, a
//! database that cannot be reached or holds a newer layout); 2 a mistake in the invocation
//! (bad arguments or configuration, a directory or schema without a store, a store in use, a
//! non-empty import target).

mod export;
mod import;
mod outcome;
mod stats;
mod store;
mod verify;

use std::process::ExitCode;

use annals::store::state::CHECKPOINTS;
use annals::store::StoreError;
use annals::{Position, RecordedEvent};
use annals_config::flags::UsageError;

use self::store::Store;
pub use self::store::StoreArgs;

/// Events read from the log per page by the commands that scan it: memory stays bounded by a
/// page, whatever the log's size.
const PAGE_EVENTS: usize = 1024;

/// The journal's own trees in the sled database (see the store's `record.rs`); every other
/// tree holds read models or process-manager state, and sled keeps its default tree.
const JOURNAL_TREES: [&str; 7] = [
    "log",
    "heads",
    "skips",
    "commands",
    "snapshots",
    "meta",
    // The state store's commits not yet compacted into their trees.
    "state-wal",
];
/// The tree sled creates in every database.
const SLED_DEFAULT_TREE: &str = "__sled__default";

const VERIFY_HELP: &str = "\
Opening runs the store's recovery as `annals serve` would (after an unclean shutdown it
re-derives index entries and removes unacknowledged segments; the report says so). A damaged
store is left untouched.

Without --full the whole log's structure is checked (segments, positions, every stream's
versions and chain, stream heads) and the CBOR of the tail. --full also decodes every commit
record and every event payload (Customer, Order and Account events as their types, through the
upcasters; other types as CBOR) and every command-id record. Both check subscriber checkpoints
and parked events.

With store.backend=postgres (--set, --config or ANNALS_STORE_*): the log's positions are
checked to run from 1 to the head; --full also decodes every payload and checks every event's
command-id record; no recovery runs (PostgreSQL's transactions leave none to do).

Exit status: 0 no damage found; 1 damage found (the message names the record), or the database
cannot be reached; 2 bad usage, no store in the directory or schema, or the store is in use.";

const EXPORT_HELP: &str = "\
One JSON object per line. First the events, in position order: event_id, aggregate, id,
version, position, type, schema_version, recorded_at (RFC 3339, UTC, microseconds), command_id,
command_fingerprint (only with a command id), correlation_id, causation_id, data (the payload as
JSON; CBOR values JSON lacks are objects with one $-key: $bytes, $int, $float, $tag, $map).

Then, in command-id order, the stored outcome of every command with a command id that committed
no event (refused, or accepted without events): kind (\"outcome\"), command_id, aggregate, id,
version, command_fingerprint, outcome (\"rejected\" or \"no_events\"), and for a rejection
either rejection (as JSON) or rejection_cbor (the stored bytes in hex, when JSON would not give
them back exactly). A summary goes to stderr.

Not exported: snapshots, read models, process-manager state, subscriber checkpoints and parked
events (rebuilt from the log after an import). From PostgreSQL (store.backend=postgres), the
events only: the outcome lines need a listing of outcomes the PostgreSQL store does not offer.";

const IMPORT_HELP: &str = "\
The target directory must not exist, be empty, or hold an Annals store without any record; a
PostgreSQL schema (store.backend=postgres) must hold no event and no checkpoint. Every field is
kept (event ids, versions, positions, times, command and trace ids, command outcomes).
Consecutive lines of one stream with the same recorded_at, command and trace ids become one
atomic commit.

Each line is checked (JSON, fields, positions contiguous from 1, versions contiguous per stream,
times not going back within a stream, command ids used once, outcome lines after the events in
command-id order); the first bad line stops the import with its line number, and what came
before it stays imported (the message says up to which position and line). Command outcomes
(refused commands, or commands without events) are restored, so their retries are answered as
before (into PostgreSQL, at their stream's version after the import). Snapshots, read models
and checkpoints are rebuilt when the service starts.

Exit status: 0 imported; 1 a bad line or a failed write; 2 bad usage or a non-empty target.";

const STATS_HELP: &str = "\
Counts events and streams per aggregate type (one scan of the log), snapshots, command-id
records and the entries of every tree (read models included), shows each subscriber's
checkpoint, lag and parked events, and the directory's size on disk. Nothing is written but
what opening the store writes (recovery after an unclean shutdown, reported). With
store.backend=postgres: the events, streams and subscribers (the rest is sled's).";

/// Arguments of `annals verify`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = VERIFY_HELP)]
pub struct VerifyArgs {
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Also decode every record and event payload, not only the log's structure.
    #[arg(long)]
    pub full: bool,
}

/// Arguments of `annals export`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXPORT_HELP)]
pub struct ExportArgs {
    /// The store to export (it is opened, never changed beyond recovery).
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `annals import`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = IMPORT_HELP)]
pub struct ImportArgs {
    /// The store to fill: a data directory that is missing, empty, or an Annals store without
    /// records; or a PostgreSQL schema without events.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `annals stats`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = STATS_HELP)]
pub struct StatsArgs {
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `annals verify`: opens the store (running its recovery), checks its integrity, and prints
/// a report. Exits 1 naming the damaged record when it finds damage.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    verify::run(args)
}

/// `annals export`: writes the global log to stdout as JSON lines (see the
/// [module docs](self) for the format and what it leaves out), reading it page by page.
pub fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    export::run(args)
}

/// `annals import`: reads the JSON lines of `export` from stdin into an empty store (see the
/// [module docs](self)).
pub fn import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    import::run(args)
}

/// `annals stats`: counts, sizes and heads of a store, as text or JSON.
pub fn stats(args: &StatsArgs) -> anyhow::Result<ExitCode> {
    stats::run(args)
}

fn usage(message: String) -> anyhow::Error {
    anyhow::Error::new(UsageError(message))
}

/// The error for damage found in the store at `place` (its directory, or its schema).
fn damaged(place: &str, what: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{place} is damaged: {what}")
}

/// Calls `each` on every event of the log up to its head, in position order, reading a page
/// at a time; checks that positions run from 1 without a gap. Returns the number of events.
fn scan_log(
    store: &Store,
    mut each: impl FnMut(&RecordedEvent) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let place = store.place();
    let head = store.log().head_position();
    let mut next = Position(1);
    while next <= head {
        let page = store
            .log()
            .read_all(next, PAGE_EVENTS)
            .map_err(|e| read_error(place, e))?;
        if page.is_empty() {
            return Err(damaged(
                place,
                &format!("the log ends before position {next} (head {head})"),
            ));
        }
        for event in &page {
            if event.position != next {
                return Err(damaged(
                    place,
                    &format!(
                        "the log has position {} where position {next} belongs",
                        event.position
                    ),
                ));
            }
            each(event)?;
            next = next.next();
        }
    }
    Ok(head.0)
}

/// A failed read: damage when the store says so, an I/O error otherwise.
fn read_error(place: &str, error: StoreError) -> anyhow::Error {
    match error {
        e @ (StoreError::Corrupt { .. } | StoreError::Codec(_)) => damaged(place, &e),
        e => anyhow::Error::new(e).context(format!("cannot read the store in {place}")),
    }
}

/// The names of the subscribers with a stored checkpoint.
fn subscriber_names(store: &Store) -> anyhow::Result<Vec<String>> {
    let place = store.place();
    let state = store.state();
    let mut names = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let from = after
            .as_deref()
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let page = state
            .range(CHECKPOINTS, from, std::ops::Bound::Unbounded, 1024)
            .map_err(|e| read_error(place, e))?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (key, _) in &page {
            match std::str::from_utf8(key) {
                // `{projection}@{generation}/written`, kept by stores written before page
                // commits were atomic, names no subscriber ('/' is not allowed in names).
                Ok(name) if name.contains('/') => {}
                Ok(name) => names.push(name.to_string()),
                Err(_) => {
                    return Err(damaged(
                        place,
                        &format!("a subscriber checkpoint has a name that is not UTF-8: {key:?}"),
                    ))
                }
            }
        }
    }
    Ok(names)
}

/// "positions 1 to N" of a log of `events` events, or that it has none.
fn positions(events: u64) -> String {
    if events == 0 {
        "no events".into()
    } else {
        format!("positions 1 to {events}")
    }
}

/// Entries of the tree `name` (which must exist: opening the store made the journal's trees).
fn tree_len(store: &annals::store::sled::SledStore, name: &str) -> anyhow::Result<usize> {
    Ok(store.database().open_tree(name)?.len())
}
