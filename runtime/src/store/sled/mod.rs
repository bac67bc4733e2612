//! The event store on sled 0.34: a single-writer journal with group commit.
//!
//! # Write path
//! [`SledStore::append`] encodes the commit record on the caller's thread and queues it on a
//! bounded channel (full: [`StoreError::Overloaded`]). Two threads form a pipeline:
//!
//! 1. the **writer** takes every queued append (up to `batch_appends_max`), checks each expected
//!    version against the stream head and each command id against the ids already used,
//!    assigns gap-free positions, and `insert`s each commit as **one** log record — one sled
//!    `insert` per command on the hot path, because sled's `Batch` and multi-tree transactions
//!    take a process-wide lock and force their own log write (measured: about 11k durable
//!    commits/s with them, about 100k/s with plain inserts and a shared flush);
//! 2. the **flusher** inserts the derived index entries of that batch (stream index, command
//!    ids), then calls `Db::flush` — the fsync — **once for the whole batch**, and only then
//!    publishes the new head and acknowledges every append of the batch. While it fsyncs, the
//!    writer already inserts the next batch, so batches grow with load (group commit).
//!
//! # Durability modes
//! - [`Durability::Durable`] (default): nothing is acknowledged before the fsync that covers it.
//!   A crash loses nothing acknowledged.
//! - [`Durability::Relaxed`]: appends are acknowledged once written to sled's in-memory log,
//!   and the flusher fsyncs every `flush_interval`. **A crash (of the process or the machine)
//!   can lose the acknowledged appends of the last `flush_interval`** — always a whole suffix of
//!   the log, never a commit in part, never a version gap — and command-id records with them.
//!   Snapshots taken in that window are ignored on recovery because they are ahead of the log.
//!
//! sled's own background flusher is switched off (`flush_every_ms(None)`): the journal decides
//! when data is durable, and counts every fsync.
//!
//! # Failure
//! A failed insert or fsync acknowledges nothing of its batch or any later one, switches the
//! store to a failed state ([`StoreHealth::Failed`]) in which every append is refused with
//! [`StoreError::Failed`], and is never retried: after a failed fsync the kernel may have dropped
//! the dirty pages, so a retry that succeeds proves nothing. Restarting recovers.
//!
//! # Recovery and integrity
//! On open, [`recovery`] checks the log (contiguous positions, decodable records, contiguous
//! versions per stream), removes an unacknowledged tail cut by the crash, and re-derives the
//! index entries after the last durable index watermark. See that module for the details.

mod keys;
mod record;
mod recovery;
mod writer;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use self::record::{fingerprint_from, CommandRecord, CommitRecord, IndexEntry, SnapshotRecord};
use super::{
    AppendError, AppendKind, AppendRequest, AppendTicket, EventStore, JournalStats, Snapshot,
    StoreError, StoreHealth, StoredOutcome,
};
use crate::envelope::RecordedEvent;
use crate::types::{CommandId, Position, StreamId, Version};

pub use self::recovery::{IntegrityCheck, RecoveryReport};

/// When an append is acknowledged relative to its fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge only after the fsync that covers the append (group commit).
    Durable,
    /// Acknowledge after the write; fsync every `flush_interval`. A crash can lose the
    /// acknowledged appends of the last interval (see the [module docs](self)).
    Relaxed {
        /// How often to fsync.
        flush_interval: Duration,
    },
}

/// Options of the sled store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SledOptions {
    /// The database directory (created if missing).
    pub path: PathBuf,
    /// When appends are acknowledged.
    pub durability: Durability,
    /// Most appends written per batch (per fsync). Bounds the latency one batch adds.
    pub batch_appends_max: NonZeroUsize,
    /// Most appends waiting in the journal queue; beyond it, appends are refused with
    /// [`StoreError::Overloaded`].
    pub queue_capacity: NonZeroUsize,
    /// Stream heads the writer keeps in memory. Must be at least four batches' worth so that
    /// every stream written by a batch still in the pipeline is cached.
    pub head_cache_capacity: NonZeroUsize,
    /// sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// How much of the log to check on open.
    pub integrity_check: IntegrityCheck,
    /// Fault injection for tests: makes the next insert or fsync fail.
    pub faults: Arc<Faults>,
}

/// Default batch bound: about 10 ms of inserts at the measured ~5 µs per insert.
pub const BATCH_APPENDS_MAX_DEFAULT: usize = 2048;
/// Default journal queue bound.
pub const QUEUE_CAPACITY_DEFAULT: usize = 16_384;
/// Default head cache size.
pub const HEAD_CACHE_CAPACITY_DEFAULT: usize = 65_536;
/// Default sled cache: 256 MiB.
pub const CACHE_CAPACITY_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

impl SledOptions {
    /// Defaults for a database at `path`: durable, full integrity check.
    pub fn new(path: impl Into<PathBuf>) -> SledOptions {
        SledOptions {
            path: path.into(),
            durability: Durability::Durable,
            batch_appends_max: nonzero(BATCH_APPENDS_MAX_DEFAULT),
            queue_capacity: nonzero(QUEUE_CAPACITY_DEFAULT),
            head_cache_capacity: nonzero(HEAD_CACHE_CAPACITY_DEFAULT),
            cache_capacity_bytes: CACHE_CAPACITY_BYTES_DEFAULT,
            integrity_check: IntegrityCheck::Full,
            faults: Arc::new(Faults::default()),
        }
    }

    /// Sets the durability mode.
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the batch bound.
    #[must_use]
    pub fn with_batch_appends_max(mut self, max: NonZeroUsize) -> Self {
        self.batch_appends_max = max;
        self
    }

    /// Sets the queue bound.
    #[must_use]
    pub fn with_queue_capacity(mut self, capacity: NonZeroUsize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Sets the integrity check done on open.
    #[must_use]
    pub fn with_integrity_check(mut self, check: IntegrityCheck) -> Self {
        self.integrity_check = check;
        self
    }

    /// Shares a fault injector (tests).
    #[must_use]
    pub fn with_faults(mut self, faults: Arc<Faults>) -> Self {
        self.faults = faults;
        self
    }
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// Fault injection, after sled's own practice: tests arm a fault and the next I/O of that kind
/// fails as if the disk had failed.
#[derive(Debug, Default)]
pub struct Faults {
    fail_next_insert: AtomicBool,
    fail_next_fsync: AtomicBool,
}

impl Faults {
    /// The next log insert fails.
    pub fn fail_next_insert(&self) {
        self.fail_next_insert.store(true, Ordering::SeqCst);
    }

    /// The next fsync fails.
    pub fn fail_next_fsync(&self) {
        self.fail_next_fsync.store(true, Ordering::SeqCst);
    }

    pub(crate) fn take_insert(&self) -> bool {
        self.fail_next_insert.load(Ordering::Relaxed) && self.fail_next_insert.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn take_fsync(&self) -> bool {
        self.fail_next_fsync.load(Ordering::Relaxed) && self.fail_next_fsync.swap(false, Ordering::SeqCst)
    }
}

const STATE_READY: u8 = 0;
const STATE_FAILED: u8 = 1;
const STATE_CLOSED: u8 = 2;

/// State shared by the store handle and its threads.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Position of the last acknowledged event: reads show nothing beyond it.
    visible: AtomicU64,
    state: AtomicU8,
    failure: Mutex<Option<Arc<str>>>,
    appends: AtomicU64,
    events: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    batch_appends_max: AtomicU64,
}

impl Shared {
    pub(crate) fn fail(&self, reason: String) {
        let mut failure = self.failure.lock();
        if failure.is_none() {
            tracing::error!(%reason, "journal failed; refusing all writes until restart");
            *failure = Some(Arc::from(reason));
        }
        self.state.store(STATE_FAILED, Ordering::SeqCst);
    }

    pub(crate) fn failed_error(&self) -> StoreError {
        let reason = self.failure.lock().clone().unwrap_or_else(|| Arc::from("unknown failure"));
        StoreError::Failed { reason }
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.state.load(Ordering::Acquire) == STATE_FAILED
    }
}

/// The trees of one database.
#[derive(Debug, Clone)]
pub(crate) struct Trees {
    pub(crate) db: sled::Db,
    pub(crate) log: sled::Tree,
    pub(crate) streams: sled::Tree,
    pub(crate) commands: sled::Tree,
    pub(crate) snapshots: sled::Tree,
    pub(crate) meta: sled::Tree,
}

pub(crate) fn io(op: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| StoreError::Io { op, reason: e.to_string() }
}

/// The sled event store. Cheap to clone; all clones share one database and one journal.
#[derive(Debug, Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    trees: Trees,
    shared: Arc<Shared>,
    jobs: crossbeam_channel::Sender<writer::Job>,
    queue_capacity: usize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    recovery: RecoveryReport,
}

impl SledStore {
    /// Opens (or creates) the store at `options.path`, recovers what the last crash left
    /// half-done, checks integrity, and starts the journal threads.
    pub fn open(options: SledOptions) -> Result<SledStore, StoreError> {
        if options.head_cache_capacity.get() < options.batch_appends_max.get().saturating_mul(4) {
            return Err(StoreError::Io {
                op: "validating options",
                reason: format!(
                    "head_cache_capacity ({}) must be at least 4 × batch_appends_max ({})",
                    options.head_cache_capacity, options.batch_appends_max
                ),
            });
        }
        let db = open_db(&options.path, options.cache_capacity_bytes)?;
        let trees = Trees {
            log: db.open_tree("log").map_err(io("opening tree log"))?,
            streams: db.open_tree("streams").map_err(io("opening tree streams"))?,
            commands: db.open_tree("commands").map_err(io("opening tree commands"))?,
            snapshots: db.open_tree("snapshots").map_err(io("opening tree snapshots"))?,
            meta: db.open_tree("meta").map_err(io("opening tree meta"))?,
            db,
        };
        let report = recovery::recover(&trees, options.integrity_check)?;
        let shared = Arc::new(Shared {
            visible: AtomicU64::new(report.head_position.0),
            state: AtomicU8::new(STATE_READY),
            failure: Mutex::new(None),
            appends: AtomicU64::new(0),
            events: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            batch_appends_max: AtomicU64::new(0),
        });
        let (jobs, threads) = writer::start(writer::Start {
            trees: trees.clone(),
            shared: shared.clone(),
            next_position: report.head_position.next(),
            durability: options.durability,
            batch_appends_max: options.batch_appends_max.get(),
            queue_capacity: options.queue_capacity.get(),
            head_cache_capacity: options.head_cache_capacity,
            faults: options.faults.clone(),
        })?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                trees,
                shared,
                jobs,
                queue_capacity: options.queue_capacity.get(),
                threads: Mutex::new(threads),
                recovery: report,
            }),
        })
    }

    /// What recovery found and did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    fn visible(&self) -> Position {
        Position(self.inner.shared.visible.load(Ordering::Acquire))
    }

    fn read_record(&self, position: Position) -> Result<Option<CommitRecord>, StoreError> {
        let bytes = self
            .inner
            .trees
            .log
            .get(keys::position_key(position))
            .map_err(io("reading the log"))?;
        bytes.map(|b| CommitRecord::decode(position, &b)).transpose()
    }
}

fn open_db(path: &Path, cache_capacity_bytes: u64) -> Result<sled::Db, StoreError> {
    let result = sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity_bytes)
        .flush_every_ms(None)
        .open();
    result.map_err(|e| match &e {
        sled::Error::Io(ioe) if ioe.to_string().contains("could not acquire lock") => {
            StoreError::Locked { path: path.display().to_string() }
        }
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            what: format!("sled database at {}", path.display()),
            reason: e.to_string(),
        },
        _ => StoreError::Io { op: "opening the database", reason: e.to_string() },
    })
}

/// Reads stream heads through the index, skipping entries that are not acknowledged yet and
/// entries left dangling by a crash (see [`recovery`]).
pub(crate) fn indexed_head(
    trees: &Trees,
    stream: &StreamId,
    visible: Option<Position>,
) -> Result<Version, StoreError> {
    let prefix = keys::stream_key(stream);
    for item in trees.streams.scan_prefix(&prefix).rev() {
        let (key, value) = item.map_err(io("reading the stream index"))?;
        let first = keys::version_suffix(&key, "stream index key")?;
        let entry = IndexEntry::decode(&value)?;
        let last = Position(entry.position.0 + u64::from(entry.count).saturating_sub(1));
        if visible.is_some_and(|v| last > v) {
            continue;
        }
        if entry_matches(trees, stream, first, entry)? {
            return Ok(first.advance(u64::from(entry.count).saturating_sub(1)));
        }
    }
    Ok(Version::INITIAL)
}

/// Whether an index entry points at the log record it claims (a crash can leave an entry whose
/// record was never made durable; its position may since hold another commit).
fn entry_matches(
    trees: &Trees,
    stream: &StreamId,
    first: Version,
    entry: IndexEntry,
) -> Result<bool, StoreError> {
    let Some(bytes) = trees.log.get(keys::position_key(entry.position)).map_err(io("reading the log"))? else {
        return Ok(false);
    };
    let record = CommitRecord::decode(entry.position, &bytes)?;
    Ok(record.first_version == first.0
        && record.event_count() == u64::from(entry.count)
        && record.aggregate_type == stream.aggregate_type()
        && record.aggregate_id == stream.aggregate_id())
}

impl EventStore for SledStore {
    fn append(&self, request: AppendRequest) -> AppendTicket {
        let shared = &self.inner.shared;
        match shared.state.load(Ordering::Acquire) {
            STATE_FAILED => return AppendTicket::ready(Err(shared.failed_error().into())),
            STATE_CLOSED => return AppendTicket::ready(Err(StoreError::Closed.into())),
            _ => {}
        }
        let prepared = match writer::Prepared::new(request) {
            Ok(p) => p,
            Err(e) => return AppendTicket::ready(Err(e)),
        };
        let (reply, ticket) = AppendTicket::pending();
        match self.inner.jobs.try_send(writer::Job::Append(Box::new(prepared), reply)) {
            Ok(()) => ticket,
            Err(crossbeam_channel::TrySendError::Full(_)) => AppendTicket::ready(Err(
                StoreError::Overloaded { capacity: self.inner.queue_capacity }.into(),
            )),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                AppendTicket::ready(Err(StoreError::Closed.into()))
            }
        }
    }

    fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        to: Option<Version>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let from = from.max(Version(1));
        let to = to.unwrap_or(Version(u64::MAX));
        let mut out = Vec::new();
        if limit == 0 || from > to {
            return Ok(out);
        }
        let visible = self.visible();
        let trees = &self.inner.trees;
        let prefix = keys::stream_key(stream);
        // Start at the commit that contains `from`: the last entry whose first version <= from.
        let start = trees
            .streams
            .range(keys::stream_version_key(stream, Version(0))..=keys::stream_version_key(stream, from))
            .next_back()
            .transpose()
            .map_err(io("reading the stream index"))?
            .map_or_else(|| keys::stream_version_key(stream, from), |(k, _)| k.to_vec());
        for item in trees.streams.range(start..) {
            let (key, value) = item.map_err(io("reading the stream index"))?;
            if !key.starts_with(&prefix) || key.len() != prefix.len() + 8 {
                break;
            }
            let first = keys::version_suffix(&key, "stream index key")?;
            if first > to {
                break;
            }
            let entry = IndexEntry::decode(&value)?;
            if entry.position > visible {
                break;
            }
            let Some(record) = self.read_record(entry.position)? else { continue };
            if record.first_version != first.0
                || record.aggregate_type != stream.aggregate_type()
                || record.aggregate_id != stream.aggregate_id()
            {
                continue; // a dangling entry (see `entry_matches`)
            }
            for event in record.into_events(entry.position)? {
                if event.version >= from && event.version <= to && event.position <= visible {
                    out.push(event);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        check_contiguous(stream, &out)?;
        Ok(out)
    }

    fn read_all(&self, from: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let from = from.max(Position(1));
        let visible = self.visible();
        let mut out = Vec::new();
        if limit == 0 || from > visible {
            return Ok(out);
        }
        let log = &self.inner.trees.log;
        let start = log
            .range(..=keys::position_key(from))
            .next_back()
            .transpose()
            .map_err(io("reading the log"))?
            .map_or(keys::position_key(from), |(k, _)| {
                k.as_ref().try_into().unwrap_or(keys::position_key(from))
            });
        for item in log.range(start..) {
            let (key, value) = item.map_err(io("reading the log"))?;
            let position = Position(keys::read_u64(&key, "log key")?);
            if position > visible {
                break;
            }
            let record = CommitRecord::decode(position, &value)?;
            for event in record.into_events(position)? {
                if event.position >= from && event.position <= visible {
                    out.push(event);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    fn stream_head(&self, stream: &StreamId) -> Result<Version, StoreError> {
        indexed_head(&self.inner.trees, stream, Some(self.visible()))
    }

    fn head_position(&self) -> Position {
        self.visible()
    }

    fn command_outcome(&self, id: &CommandId) -> Result<Option<StoredOutcome>, StoreError> {
        lookup_command(&self.inner.trees, id, Some(self.visible()))
    }

    fn save_snapshot(&self, stream: &StreamId, snapshot: &Snapshot) -> Result<(), StoreError> {
        let bytes = SnapshotRecord::encode(snapshot)?;
        self.inner
            .trees
            .snapshots
            .insert(keys::stream_version_key(stream, snapshot.version), bytes)
            .map_err(io("writing a snapshot"))?;
        Ok(())
    }

    fn load_snapshot(
        &self,
        stream: &StreamId,
        at_or_below: Version,
    ) -> Result<Option<Snapshot>, StoreError> {
        let low = keys::stream_version_key(stream, Version(0));
        let high = keys::stream_version_key(stream, at_or_below);
        let Some((key, value)) = self
            .inner
            .trees
            .snapshots
            .range(low..=high)
            .next_back()
            .transpose()
            .map_err(io("reading snapshots"))?
        else {
            return Ok(None);
        };
        let version = keys::version_suffix(&key, "snapshot key")?;
        match SnapshotRecord::decode(version, &value) {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                // A snapshot is a cache: an unreadable one costs a full replay, not an outage.
                tracing::warn!(%stream, %version, error = %e, "ignoring an unreadable snapshot");
                Ok(None)
            }
        }
    }

    fn stats(&self) -> JournalStats {
        let s = &self.inner.shared;
        JournalStats {
            appends: s.appends.load(Ordering::Relaxed),
            events: s.events.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            batch_appends_max: s.batch_appends_max.load(Ordering::Relaxed),
        }
    }

    fn health(&self) -> StoreHealth {
        match self.inner.shared.state.load(Ordering::Acquire) {
            STATE_READY => StoreHealth::Ready,
            STATE_FAILED => match self.inner.shared.failed_error() {
                StoreError::Failed { reason } => StoreHealth::Failed(reason),
                other => StoreHealth::Failed(Arc::from(other.to_string())),
            },
            _ => StoreHealth::Closed,
        }
    }

    fn shutdown(&self) -> Result<(), StoreError> {
        let shared = &self.inner.shared;
        let _ = shared.state.compare_exchange(STATE_READY, STATE_CLOSED, Ordering::SeqCst, Ordering::SeqCst);
        // The writer drains what is queued, hands it to the flusher and both exit.
        let _ = self.inner.jobs.send(writer::Job::Stop);
        let threads = std::mem::take(&mut *self.inner.threads.lock());
        for t in threads {
            if t.join().is_err() {
                return Err(StoreError::Io { op: "stopping the journal", reason: "a journal thread panicked".into() });
            }
        }
        if shared.is_failed() {
            return Err(shared.failed_error());
        }
        self.inner.trees.db.flush().map_err(io("flushing on shutdown"))?;
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.jobs.send(writer::Job::Stop);
        for t in std::mem::take(&mut *self.threads.lock()) {
            let _ = t.join();
        }
    }
}

fn check_contiguous(stream: &StreamId, events: &[RecordedEvent]) -> Result<(), StoreError> {
    for pair in events.windows(2) {
        if pair[1].version != pair[0].version.next() {
            return Err(StoreError::Corrupt {
                what: format!("stream {stream}"),
                reason: format!("version {} follows version {}", pair[1].version, pair[0].version),
            });
        }
    }
    Ok(())
}

/// Looks up a command record; `visible` hides committed outcomes not yet acknowledged.
pub(crate) fn lookup_command(
    trees: &Trees,
    id: &CommandId,
    visible: Option<Position>,
) -> Result<Option<StoredOutcome>, StoreError> {
    let Some(bytes) = trees.commands.get(id.as_str().as_bytes()).map_err(io("reading command ids"))? else {
        return Ok(None);
    };
    let record = CommandRecord::decode(&bytes)?;
    let outcome = match record {
        CommandRecord::Committed { position } => {
            let position = Position(position);
            if visible.is_some_and(|v| position > v) {
                return Ok(None);
            }
            let Some(bytes) = trees.log.get(keys::position_key(position)).map_err(io("reading the log"))? else {
                return Ok(None); // dangling: its commit was never made durable
            };
            let commit = CommitRecord::decode(position, &bytes)?;
            if commit.command_id.as_deref() != Some(id.as_str()) {
                return Ok(None); // dangling: the position now holds another commit
            }
            let fingerprint = commit.fingerprint.map(super::Fingerprint).ok_or_else(|| {
                record::corrupt_at(position, "commit with a command id has no fingerprint")
            })?;
            StoredOutcome::Committed { fingerprint, events: commit.into_events(position)? }
        }
        CommandRecord::Rejected { aggregate_type, aggregate_id, fingerprint, version, rejection } => {
            StoredOutcome::Rejected {
                stream: stream_of(aggregate_type, aggregate_id)?,
                fingerprint: fingerprint_from(&fingerprint)?,
                version: Version(version),
                rejection,
            }
        }
        CommandRecord::NoEvents { aggregate_type, aggregate_id, fingerprint, version } => {
            StoredOutcome::NoEvents {
                stream: stream_of(aggregate_type, aggregate_id)?,
                fingerprint: fingerprint_from(&fingerprint)?,
                version: Version(version),
            }
        }
    };
    Ok(Some(outcome))
}

fn stream_of(ty: String, id: String) -> Result<StreamId, StoreError> {
    StreamId::new(ty, id)
        .map_err(|e| StoreError::Corrupt { what: "command record".into(), reason: e.to_string() })
}

/// Kind checks shared by `append` and the writer.
pub(crate) fn validate_kind(request: &AppendRequest) -> Result<(), AppendError> {
    let invalid = |reason| Err(AppendError::Invalid { stream: request.stream.clone(), reason });
    match &request.kind {
        AppendKind::Events(events) if events.is_empty() => invalid("an append needs at least one event"),
        AppendKind::Events(events) if u32::try_from(events.len()).is_err() => invalid("too many events"),
        AppendKind::Rejection(_) | AppendKind::NoEvents if request.command.is_none() => {
            invalid("only a command with a command id records an outcome without events")
        }
        _ if request.command.is_some() != request.meta.command_id.is_some() => {
            invalid("command key and metadata command id disagree")
        }
        _ => Ok(()),
    }
}
