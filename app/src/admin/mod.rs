//! Administrative commands on a data directory: `annals verify`, `annals export`,
//! `annals import` and `annals stats`.
//!
//! The data directory is the sled database of the embedded store, the directory `annals serve
//! --data-dir DIR` runs on. Each command opens it with [`SledStore::open`] — the store, not a
//! [`Runtime`](annals::Runtime): no aggregate, projection or process manager runs, so nothing
//! but the store's own recovery writes to it — and needs it to itself: while `annals serve`
//! runs on the directory, sled's lock refuses a second process (exit 2).
//!
//! # Opening is recovery
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
//! | `data` | the payload, CBOR converted to JSON generically (see `json.rs`) |
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
//! `annals import` reads those lines from stdin into an empty (or new) data directory and keeps
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
//! 0 success; 1 a failure found at run time (damage, a bad input line, a failed write); 2 a
//! mistake in the invocation (bad arguments, a directory without a store, a store in use, a
//! non-empty import target).

mod export;
mod import;
mod json;
mod outcome;
mod stats;
mod time;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use annals::store::sled::{IntegrityCheck, SledOptions, SledStore};
use annals::store::state::CHECKPOINTS;
use annals::store::{EventStore, StateStore, StoreError};
use annals::{Position, RecordedEvent};

use crate::UsageError;

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

Exit status: 0 no damage found; 1 damage found (the message names the record); 2 bad usage, no
store in the directory, or the store is in use.";

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
events (rebuilt from the log after an import).";

const IMPORT_HELP: &str = "\
The target must not exist, be empty, or hold an Annals store without any record. Every field is
kept (event ids, versions, positions, times, command and trace ids, command outcomes).
Consecutive lines of one stream with the same recorded_at, command and trace ids become one
atomic commit.

Each line is checked (JSON, fields, positions contiguous from 1, versions contiguous per stream,
times not going back within a stream, command ids used once, outcome lines after the events in
command-id order); the first bad line stops the import with its line number, and what came
before it stays imported (the message says up to which position and line). Command outcomes
(refused commands, or commands without events) are restored, so their retries are answered as
before. Snapshots, read models and checkpoints are rebuilt when the service starts.

Exit status: 0 imported; 1 a bad line or a failed write; 2 bad usage or a non-empty target.";

const STATS_HELP: &str = "\
Counts events and streams per aggregate type (one scan of the log), snapshots, command-id
records and the entries of every tree (read models included), shows each subscriber's
checkpoint, lag and parked events, and the directory's size on disk. Nothing is written but
what opening the store writes (recovery after an unclean shutdown, reported).";

/// Arguments of `annals verify`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = VERIFY_HELP)]
pub struct VerifyArgs {
    /// The data directory (the store of `annals serve --data-dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Also decode every record and event payload, not only the log's structure.
    #[arg(long)]
    pub full: bool,
}

/// Arguments of `annals export`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXPORT_HELP)]
pub struct ExportArgs {
    /// The data directory to export (it is opened, never changed beyond recovery).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Arguments of `annals import`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = IMPORT_HELP)]
pub struct ImportArgs {
    /// The data directory to create: missing, empty, or an Annals store without records.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Arguments of `annals stats`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = STATS_HELP)]
pub struct StatsArgs {
    /// The data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `annals verify`: opens the store in `--data-dir` (running its recovery), checks its
/// integrity, and prints a report. Exits 1 naming the damaged record when it finds damage.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    verify::run(args)
}

/// `annals export`: writes the global log to stdout as JSON lines (see the
/// [module docs](self) for the format and what it leaves out), reading it page by page.
pub fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    export::run(args)
}

/// `annals import`: reads the JSON lines of `export` from stdin into an empty data directory
/// (see the [module docs](self)).
pub fn import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    import::run(args)
}

/// `annals stats`: counts, sizes and heads of a data directory, as text or JSON.
pub fn stats(args: &StatsArgs) -> anyhow::Result<ExitCode> {
    stats::run(args)
}

fn usage(message: String) -> anyhow::Error {
    anyhow::Error::new(UsageError(message))
}

/// Whether `dir` holds a sled database: the files sled writes when it creates one. A sled
/// database that is not an Annals store passes too (opening it would add the store's empty
/// trees); telling the two apart would need sled itself before the store opens the directory.
fn holds_database(dir: &Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

/// Refuses (exit 2) a `dir` that is missing, not a directory or without a store, before
/// anything opens it: opening would create a store there.
fn require_store(dir: &Path) -> anyhow::Result<()> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(usage(format!("{shown}: no such directory")))
        }
        Err(e) => Err(usage(format!("{shown}: {e}"))),
        Ok(meta) if !meta.is_dir() => Err(usage(format!("{shown} is not a directory"))),
        Ok(_) if !holds_database(dir) => Err(usage(format!(
            "{shown} holds no Annals store (no sled database: its files conf and db are \
             missing); nothing was created"
        ))),
        Ok(_) => Ok(()),
    }
}

/// Opens the store in `dir`, running recovery and the integrity `check`. A store locked by
/// another process is a usage error; damage is an error naming the record (exit 1).
fn open_store(dir: &Path, check: IntegrityCheck) -> anyhow::Result<SledStore> {
    SledStore::open(SledOptions::new(dir).with_integrity_check(check)).map_err(|e| match e {
        StoreError::Locked { .. } => usage(format!(
            "{} is in use by another process (a running `annals serve`?): stop it first, \
             or use the HTTP API",
            dir.display()
        )),
        e @ StoreError::Corrupt { .. } => damaged(dir, &e),
        e => anyhow::Error::new(e).context(format!("cannot open the store in {}", dir.display())),
    })
}

/// The error for damage found in the store in `dir`.
fn damaged(dir: &Path, what: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{} is damaged: {what}", dir.display())
}

/// Shuts the store down (flushing it) whatever `result` is; an error of `result` wins over
/// one of the shutdown.
fn close<T>(store: &SledStore, dir: &Path, result: anyhow::Result<T>) -> anyhow::Result<T> {
    let closed = store.shutdown();
    let value = result?;
    closed.map_err(|e| {
        anyhow::Error::new(e).context(format!("cannot close the store in {}", dir.display()))
    })?;
    Ok(value)
}

/// Calls `each` on every event of the log up to its head, in position order, reading a page
/// at a time; checks that positions run from 1 without a gap. Returns the number of events.
fn scan_log(
    store: &SledStore,
    dir: &Path,
    mut each: impl FnMut(&RecordedEvent) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let head = store.head_position();
    let mut next = Position(1);
    while next <= head {
        let page = store
            .read_all(next, PAGE_EVENTS)
            .map_err(|e| read_error(dir, e))?;
        if page.is_empty() {
            return Err(damaged(
                dir,
                &format!("the log ends before position {next} (head {head})"),
            ));
        }
        for event in &page {
            if event.position != next {
                return Err(damaged(
                    dir,
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
fn read_error(dir: &Path, error: StoreError) -> anyhow::Error {
    match error {
        e @ (StoreError::Corrupt { .. } | StoreError::Codec(_)) => damaged(dir, &e),
        e => anyhow::Error::new(e).context(format!("cannot read the store in {}", dir.display())),
    }
}

/// The names of the subscribers with a stored checkpoint.
fn subscriber_names(store: &SledStore, dir: &Path) -> anyhow::Result<Vec<String>> {
    let state = store.state();
    let mut names = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let from = after
            .as_deref()
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let page = state
            .range(CHECKPOINTS, from, std::ops::Bound::Unbounded, 1024)
            .map_err(|e| read_error(dir, e))?;
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
                        dir,
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
fn tree_len(store: &SledStore, name: &str) -> anyhow::Result<usize> {
    Ok(store.database().open_tree(name)?.len())
}
