//! The event store on sled 0.34: a single-writer journal with group commit.
//!
//! # Write path
//! [`SledStore::append`] encodes the commit record on the caller's thread and queues it on a
//! bounded channel (full: [`StoreError::Overloaded`]; disk below its minimum:
//! [`StoreError::DiskFull`]). Two threads form a pipeline:
//!
//! 1. the **writer** takes every queued append (up to `batch_appends_max` appends or
//!    `batch_bytes_max` bytes), checks each expected version against the stream head and each
//!    command id against the ids already used, assigns gap-free positions, links each commit to
//!    its stream's previous commit, and writes the batch as **segments** of commit records
//!    (see `segment.rs`), usually one, one sled `insert` each: a segment is kept below the size
//!    at which sled would write it to a blob file (`segment_bytes_max`);
//! 2. the **flusher** takes every batch written since its last sync, inserts their few derived
//!    entries (command ids; a skip entry every 64 versions of a stream; the group's batch
//!    number), then **syncs once for the whole group** — a real `fdatasync`/`fsync` of every
//!    file and directory sled wrote to, not sled's `flush` alone (see `disk.rs`) — records the
//!    group as durable in the acknowledgement record, and only then publishes the new head position and acknowledges
//!    every append of the group. While it syncs, the writer goes on writing the batches that
//!    arrive (at most 8 ahead), so a slow sync makes the next group bigger, not later (group
//!    commit).
//!
//! Why so few inserts per batch: on this machine a sled `insert` costs about 5 µs of CPU
//! whatever its size, while a sync costs hundreds of µs. With one insert per commit and one per
//! index entry, the two inserts alone cap durable throughput near 60k commits/s on two cores
//! (measured with plain inserts and a shared flush); sled's `Batch` and multi-tree transactions
//! are worse (a process-wide lock and a log write each: about 11k/s). So nothing is written per
//! commit except the commit's bytes inside a segment: a stream is read by walking the `prev`
//! chain back from its head, stream heads live in memory and are checkpointed to the `heads`
//! tree every `heads_checkpoint_interval` (one insert per *changed stream*, not per commit,
//! spread over the syncs that follow in chunks of 128 streams or twice the sync's appends, so
//! that a sync under load does not wait behind thousands of inserts; when idle, at shutdown,
//! or when the table of changed heads reaches its bound, they are written at once), and
//! recovery re-derives everything after the last durable checkpoint from the log.
//!
//! # Durability modes
//! - [`Durability::Durable`] (default): nothing is acknowledged before the sync that covers it.
//!   A crash of the process or of the machine (a power cut) loses nothing acknowledged.
//! - [`Durability::Relaxed`]: appends are acknowledged once written to sled's in-memory log,
//!   and the flusher syncs every `flush_interval`. **A crash (of the process or the machine)
//!   can lose the acknowledged appends of the last `flush_interval`** — always a whole suffix of
//!   the log, never a commit in part, never a version gap — and command-id records with them.
//!   What the read side built from the lost events is not trusted afterwards: a snapshot taken
//!   of a lost version is ignored, a projection that saw lost events is rebuilt, and other
//!   subscribers go on from the new head (see `Runtime::project`).
//!
//! sled's own background flusher is switched off (`flush_every_ms(None)`): the journal decides
//! when data is durable, and counts every sync.
//!
//! # Failure
//! A failed insert or sync acknowledges nothing of its batch or any later one, switches the
//! store to a failed state ([`StoreHealth::Failed`]) in which every append is refused with
//! [`StoreError::Failed`], and is never retried: after a failed fsync the kernel may have dropped
//! the dirty pages, so a retry that succeeds proves nothing. A journal thread that panics fails
//! the store the same way. Opening the store again recovers. A read that fails while the writer
//! checks an append (a damaged stream head or command record) refuses that append only
//! ([`AppendError::Unchecked`]).
//!
//! # Recovery and integrity
//! On open, recovery (`recovery.rs`) checks the log (contiguous positions, decodable records,
//! contiguous versions per stream), refuses a log that ends before what the acknowledgement
//! record says was acknowledged ([`StoreError::AcknowledgedDataLost`]), removes an
//! unacknowledged tail cut by the crash, and re-derives the index entries after the last
//! durable index watermark. See that module for the details.

mod body;
mod disk;
mod keys;
mod record;
mod recovery;
mod segment;
mod state;
mod writer;

pub use self::state::{SledState, COMPACTION_INTERVAL, PENDING_BYTES_MAX};

use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use self::record::{fingerprint_from, CommandRecord, EventBuilder, HeadEntry, SnapshotRecord};
use self::segment::{Locator, RecordHeader, Segment};
use super::{
    AppendError, AppendRequest, AppendTicket, EventRef, EventStore, HeadWatch, JournalStats,
    Snapshot, StoreError, StoreHealth, StoredOutcome,
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
    /// Most bytes of commit records per batch (one segment); a batch closes once it has more.
    pub batch_bytes_max: NonZeroUsize,
    /// How often a checkpoint of the stream heads that changed begins (it is spread over the
    /// syncs that follow, a few milliseconds under load). Recovery re-derives the heads of the
    /// log written since the last checkpoint completed, so this, plus that spread, bounds its
    /// work.
    pub heads_checkpoint_interval: Duration,
    /// Most appends waiting in the journal queue; beyond it, appends are refused with
    /// [`StoreError::Overloaded`].
    pub queue_capacity: NonZeroUsize,
    /// Stream heads the writer caches, and the most changed heads kept in memory before a
    /// checkpoint is forced.
    pub head_cache_capacity: NonZeroUsize,
    /// sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// How much of the log to check on open.
    pub integrity_check: IntegrityCheck,
    /// Free bytes the disk holding the store must keep: below it, appends are refused with
    /// [`StoreError::DiskFull`] (the store stays healthy and takes appends again once space is
    /// freed), so the journal does not run into a full disk mid-batch — which would fail it,
    /// and leave it failed until it is opened again. Measured at most every
    /// [`DISK_CHECK_INTERVAL`]. 0 turns the check off.
    pub disk_free_bytes_min: u64,
    /// Fault injection for tests: makes the next insert or fsync fail.
    pub faults: Arc<Faults>,
    /// Told about every batch the journal acknowledges (for metrics); `None`: nobody is.
    pub batch_observer: Option<crate::store::BatchObserver>,
}

/// Default batch bound: about 10 ms of inserts at the measured ~5 µs per insert.
pub const BATCH_APPENDS_MAX_DEFAULT: usize = 2048;
/// Default batch byte bound: 4 MiB per segment.
pub const BATCH_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;
/// Default heads checkpoint interval.
pub const HEADS_CHECKPOINT_INTERVAL_DEFAULT: Duration = Duration::from_millis(200);
/// Default journal queue bound.
pub const QUEUE_CAPACITY_DEFAULT: usize = 16_384;
/// Default head cache size.
pub const HEAD_CACHE_CAPACITY_DEFAULT: usize = 65_536;
/// Default sled cache: 256 MiB.
pub const CACHE_CAPACITY_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// Default free space to keep: room for sled to finish the segments it has started and for the
/// read side to keep writing while appends are refused.
pub const DISK_FREE_BYTES_MIN_DEFAULT: u64 = 16 * 1024 * 1024;
/// How often free disk space is measured (at most): a `statvfs`, made by the caller of
/// [`EventStore::append`] when the last measure is older than this.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_millis(100);

impl SledOptions {
    /// Opens the store at these options' path: the log and its state store.
    pub fn open(&self) -> Result<crate::store::Stores, StoreError> {
        Ok(SledStore::open(self.clone())?.into_stores())
    }

    /// Defaults for a database at `path`: durable, structural integrity check.
    pub fn new(path: impl Into<PathBuf>) -> SledOptions {
        SledOptions {
            path: path.into(),
            durability: Durability::Durable,
            batch_appends_max: nonzero(BATCH_APPENDS_MAX_DEFAULT),
            batch_bytes_max: nonzero(BATCH_BYTES_MAX_DEFAULT),
            heads_checkpoint_interval: HEADS_CHECKPOINT_INTERVAL_DEFAULT,
            queue_capacity: nonzero(QUEUE_CAPACITY_DEFAULT),
            head_cache_capacity: nonzero(HEAD_CACHE_CAPACITY_DEFAULT),
            cache_capacity_bytes: CACHE_CAPACITY_BYTES_DEFAULT,
            integrity_check: IntegrityCheck::Structure,
            disk_free_bytes_min: DISK_FREE_BYTES_MIN_DEFAULT,
            faults: Arc::new(Faults::default()),
            batch_observer: None,
        }
    }

    /// Sets the observer told about every batch (see [`BatchObserver`](crate::store::BatchObserver)).
    pub fn with_batch_observer(mut self, observer: crate::store::BatchObserver) -> Self {
        self.batch_observer = Some(observer);
        self
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

    /// Sets the heads checkpoint interval.
    #[must_use]
    pub fn with_heads_checkpoint_interval(mut self, interval: Duration) -> Self {
        self.heads_checkpoint_interval = interval;
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

    /// Sets the free disk space to keep (0: no check).
    #[must_use]
    pub fn with_disk_free_bytes_min(mut self, bytes: u64) -> Self {
        self.disk_free_bytes_min = bytes;
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
    panic_next_batch: AtomicBool,
    failing_reads: std::sync::atomic::AtomicU32,
}

impl Faults {
    /// The journal's writer thread panics at its next batch (a bug, as far as the store can
    /// tell): the store must report itself failed.
    pub fn panic_next_batch(&self) {
        self.panic_next_batch.store(true, Ordering::SeqCst);
    }

    /// The next `n` reads of the global log (`read_all`) fail with an I/O error, as a disk
    /// with a passing problem would.
    pub fn fail_next_reads(&self, n: u32) {
        self.failing_reads.store(n, Ordering::SeqCst);
    }

    pub(crate) fn take_panic(&self) -> bool {
        self.panic_next_batch.load(Ordering::Relaxed)
            && self.panic_next_batch.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn take_read(&self) -> bool {
        self.failing_reads
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// The next log insert fails.
    pub fn fail_next_insert(&self) {
        self.fail_next_insert.store(true, Ordering::SeqCst);
    }

    /// The next fsync fails.
    pub fn fail_next_fsync(&self) {
        self.fail_next_fsync.store(true, Ordering::SeqCst);
    }

    pub(crate) fn take_insert(&self) -> bool {
        self.fail_next_insert.load(Ordering::Relaxed)
            && self.fail_next_insert.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn take_fsync(&self) -> bool {
        self.fail_next_fsync.load(Ordering::Relaxed)
            && self.fail_next_fsync.swap(false, Ordering::SeqCst)
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
    /// Position of the last event inserted into the log (acknowledged or not).
    written: AtomicU64,
    /// Heads changed since the last checkpoint (see the module docs).
    dirty_heads: Mutex<writer::DirtyHeads>,
    /// First positions of the segments written recently, oldest first (see `read_all`).
    recent_segments: Mutex<std::collections::VecDeque<Position>>,
    /// Publishes the acknowledged head to subscribers.
    head: tokio::sync::watch::Sender<Position>,
    /// Publishes it to subscribers of some aggregate types ([`EventStore::watch_types`]).
    types: crate::store::TypeWatches,
    /// Command ids whose rejection or no-event outcome is written but not yet acknowledged:
    /// readers must not return such an outcome before its fsync.
    pending_outcomes: Mutex<std::collections::HashSet<CommandId>>,
    state: AtomicU8,
    failure: Mutex<Option<Arc<str>>>,
    appends: AtomicU64,
    events: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    batch_appends_max: AtomicU64,
    batch_observer: Option<crate::store::BatchObserver>,
    /// The database's files: every sync goes through here (see `disk.rs`).
    disk: Mutex<disk::Disk>,
    faults: Arc<Faults>,
    space: DiskSpace,
}

/// The free space of the disk holding the store, measured at most every
/// [`DISK_CHECK_INTERVAL`] by whoever appends (see [`SledOptions::disk_free_bytes_min`]).
#[derive(Debug)]
struct DiskSpace {
    path: PathBuf,
    min_bytes: u64,
    epoch: std::time::Instant,
    /// Microseconds after `epoch` of the last measure.
    measured_at: AtomicU64,
    free_bytes: AtomicU64,
}

impl DiskSpace {
    fn new(path: &Path, min_bytes: u64) -> DiskSpace {
        let space = DiskSpace {
            path: path.to_path_buf(),
            min_bytes,
            epoch: std::time::Instant::now(),
            measured_at: AtomicU64::new(0),
            free_bytes: AtomicU64::new(u64::MAX),
        };
        space.measure();
        space
    }

    fn measure(&self) {
        // A failed measure keeps the last one: the journal's own writes will tell if the disk
        // really is gone.
        if let Ok(stats) = rustix::fs::statvfs(&self.path) {
            let free = stats.f_bavail.saturating_mul(stats.f_frsize);
            self.free_bytes.store(free, Ordering::Relaxed);
        }
    }

    /// The refusal of an append if the disk is below its minimum.
    fn refusal(&self) -> Option<StoreError> {
        if self.min_bytes == 0 {
            return None;
        }
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let last = self.measured_at.load(Ordering::Relaxed);
        let interval = u64::try_from(DISK_CHECK_INTERVAL.as_micros()).unwrap_or(u64::MAX);
        let due = now.saturating_sub(last) >= interval;
        if due
            && self
                .measured_at
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.measure();
        }
        let free_bytes = self.free_bytes.load(Ordering::Relaxed);
        (free_bytes < self.min_bytes).then_some(StoreError::DiskFull {
            free_bytes,
            min_bytes: self.min_bytes,
        })
    }
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
        let reason = self
            .failure
            .lock()
            .clone()
            .unwrap_or_else(|| Arc::from("unknown failure"));
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
    pub(crate) heads: sled::Tree,
    pub(crate) skips: sled::Tree,
    pub(crate) commands: sled::Tree,
    pub(crate) snapshots: sled::Tree,
    pub(crate) meta: sled::Tree,
}

pub(crate) fn io(op: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| match e {
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            what: "the database files".into(),
            reason: describe(&e),
        },
        _ => StoreError::Io {
            op,
            reason: describe(&e),
        },
    }
}

/// sled's error in words: its own text for corruption is `Read corrupted data at file offset
/// Some(Inline(4242)) backtrace ()`.
pub(crate) fn describe(error: &sled::Error) -> String {
    match error {
        sled::Error::Corruption {
            at: Some(sled::DiskPtr::Inline(offset)),
            ..
        } => format!(
            "the record at byte {offset} of the database file 'db' fails its checksum: the file \
             is damaged there; restore the data directory from a backup"
        ),
        sled::Error::Corruption {
            at: Some(sled::DiskPtr::Blob(offset, blob)),
            ..
        } => format!(
            "the blob file 'blobs/{blob}' (named by the record at byte {offset} of 'db') fails \
             its checksum: it is damaged or was cut short; restore the data directory from a \
             backup"
        ),
        sled::Error::Corruption { at: None, .. } => {
            "the database files are damaged (the storage engine found data that fails its \
             checks); restore the data directory from a backup"
                .into()
        }
        sled::Error::Io(e) => format!("I/O error: {e}"),
        sled::Error::Unsupported(why) => why.clone(),
        sled::Error::ReportableBug(why) => format!("internal error of the storage engine: {why}"),
        other => other.to_string(),
    }
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
    state: Arc<SledState>,
}

impl SledStore {
    /// Opens (or creates) the store at `options.path`, recovers what the last crash left
    /// half-done, checks integrity, and starts the journal threads.
    #[allow(clippy::needless_pass_by_value)] // options are a value the store is built from
    pub fn open(options: SledOptions) -> Result<SledStore, StoreError> {
        let segment_size = sled_segment_size(&options.path)?;
        let db = open_db(&options, segment_size)?;
        let trees = Trees {
            log: db.open_tree("log").map_err(io("opening tree log"))?,
            heads: db.open_tree("heads").map_err(io("opening tree heads"))?,
            skips: db.open_tree("skips").map_err(io("opening tree skips"))?,
            commands: db
                .open_tree("commands")
                .map_err(io("opening tree commands"))?,
            snapshots: db
                .open_tree("snapshots")
                .map_err(io("opening tree snapshots"))?,
            meta: db.open_tree("meta").map_err(io("opening tree meta"))?,
            db,
        };
        let mut disk = disk::Disk::open(&options.path)?;
        let report =
            recovery::recover(&trees, options.integrity_check, &mut disk, &options.faults)?;
        let shared = Arc::new(Shared {
            visible: AtomicU64::new(report.head_position.0),
            written: AtomicU64::new(report.head_position.0),
            dirty_heads: Mutex::new(writer::DirtyHeads::new()),
            pending_outcomes: Mutex::new(std::collections::HashSet::new()),
            head: tokio::sync::watch::Sender::new(report.head_position),
            types: crate::store::TypeWatches::default(),
            recent_segments: Mutex::new(std::collections::VecDeque::new()),
            state: AtomicU8::new(STATE_READY),
            failure: Mutex::new(None),
            appends: AtomicU64::new(0),
            events: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            batch_appends_max: AtomicU64::new(0),
            batch_observer: options.batch_observer.clone(),
            disk: Mutex::new(disk),
            faults: options.faults.clone(),
            space: DiskSpace::new(&options.path, options.disk_free_bytes_min),
        });
        let state = Arc::new(SledState::open(&trees.db)?);
        let (jobs, threads) = writer::start(writer::Start {
            trees: trees.clone(),
            shared: shared.clone(),
            next_position: report.head_position.next(),
            next_batch: report.batch + 1,
            durability: options.durability,
            batch_appends_max: options.batch_appends_max.get(),
            batch_bytes_max: options.batch_bytes_max.get(),
            segment_bytes_max: segment_bytes_max(segment_size),
            heads_checkpoint_interval: options.heads_checkpoint_interval,
            queue_capacity: options.queue_capacity.get(),
            head_cache_capacity: options.head_cache_capacity,
        })?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                trees,
                shared,
                jobs,
                queue_capacity: options.queue_capacity.get(),
                threads: Mutex::new(threads),
                recovery: report,
                state,
            }),
        })
    }

    /// The read side's state store, in the same database (its commits become durable with the
    /// journal's syncs).
    pub fn state(&self) -> Arc<SledState> {
        self.inner.state.clone()
    }

    /// The log and the state store, for [`Runtime::with_stores`](crate::Runtime::with_stores).
    /// [`SledOptions::open`] opens them in one step.
    pub fn into_stores(self) -> crate::store::Stores {
        crate::store::Stores {
            state: self.inner.state.clone(),
            log: Arc::new(self),
        }
    }

    /// The sled database, for inspection tools (`annals stats`, `verify`). Never write to the
    /// journal's own trees, nor to the state store's (write through [`SledStore::state`]).
    pub fn database(&self) -> &sled::Db {
        &self.inner.trees.db
    }

    /// What recovery found and did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The stored outcomes of commands that wrote no event — rejections and accepted commands
    /// without events — in command-id order, from the first id after `after`, at most `limit`.
    ///
    /// The log cannot re-derive these (a committed command's outcome is its commit, found
    /// through the log), so an export must carry them beside the events. Outcomes written but
    /// not yet acknowledged are left out.
    pub fn outcomes_without_events(
        &self,
        after: Option<&CommandId>,
        limit: usize,
    ) -> Result<Vec<(CommandId, StoredOutcome)>, StoreError> {
        let commands = &self.inner.trees.commands;
        let range = match after {
            Some(id) => commands.range::<&[u8], _>((
                std::ops::Bound::Excluded(id.as_str().as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => commands.iter(),
        };
        let mut out = Vec::new();
        for item in range {
            if out.len() >= limit {
                break;
            }
            let (key, bytes) = item.map_err(io("reading command ids"))?;
            let record = CommandRecord::decode(&bytes)?;
            if matches!(record, CommandRecord::Committed { .. }) {
                continue;
            }
            let id = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| CommandId::stored(k).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    what: "command ids".into(),
                    reason: format!("a key of {} bytes is not a command id", key.len()),
                })?;
            if self.inner.shared.pending_outcomes.lock().contains(&id) {
                continue;
            }
            if let Some(outcome) = lookup_command(&self.inner.trees, &id, Some(self.visible()))? {
                out.push((id, outcome));
            }
        }
        Ok(out)
    }

    /// Restores a rejection or no-event outcome read from an export (`annals import`), with
    /// the version it was recorded at. Refused if the command id is already used. It is
    /// written beside the journal, not through it: only for a store that nothing else writes
    /// to, and durable once [`EventStore::shutdown`] (or a later append) has synced.
    pub fn restore_outcome(
        &self,
        id: &CommandId,
        outcome: &StoredOutcome,
    ) -> Result<(), AppendError> {
        let record = match outcome {
            StoredOutcome::Committed { .. } => {
                return Err(AppendError::Invalid {
                    stream: StreamId::stored("-", id.as_str()).map_err(|e| {
                        StoreError::Corrupt {
                            what: "command id".into(),
                            reason: e.to_string(),
                        }
                    })?,
                    reason: "a committed outcome is restored by importing its events",
                })
            }
            StoredOutcome::Rejected {
                stream,
                fingerprint,
                version,
                rejection,
            } => CommandRecord::Rejected {
                aggregate_type: stream.aggregate_type().to_string(),
                aggregate_id: stream.aggregate_id().to_string(),
                fingerprint: fingerprint.0.to_vec(),
                version: version.0,
                rejection: rejection.clone(),
            },
            StoredOutcome::NoEvents {
                stream,
                fingerprint,
                version,
            } => CommandRecord::NoEvents {
                aggregate_type: stream.aggregate_type().to_string(),
                aggregate_id: stream.aggregate_id().to_string(),
                fingerprint: fingerprint.0.to_vec(),
                version: version.0,
            },
        };
        if let Some(used) = lookup_command(&self.inner.trees, id, None)? {
            return Err(AppendError::CommandIdUsed {
                id: id.clone(),
                same_command: used.fingerprint() == outcome.fingerprint(),
            });
        }
        let bytes = record.encode().map_err(StoreError::from)?;
        self.inner
            .trees
            .commands
            .insert(id.as_str().as_bytes(), bytes)
            .map_err(io("restoring a command outcome"))?;
        Ok(())
    }

    fn visible(&self) -> Position {
        Position(self.inner.shared.visible.load(Ordering::Acquire))
    }

    /// The first positions of the recent segments from the one holding `from` on, if `from`
    /// is recent enough to be found that way.
    fn recent_segments_from(&self, from: Position) -> Option<Vec<Position>> {
        let recent = self.inner.shared.recent_segments.lock();
        if recent.front().is_none_or(|&first| first > from) {
            return None;
        }
        let i = recent
            .partition_point(|&first| first <= from)
            .saturating_sub(1);
        Some(recent.range(i..).copied().collect())
    }

    /// The commits of `stream` holding versions `from..=to` (at most `limit` of them), found by
    /// walking back from the commit holding the last one (through a skip entry, or from the
    /// head) to the one holding the first; `None` if there is nothing to read.
    fn walk(
        &self,
        stream: &StreamId,
        stream_key: &[u8],
        from: Version,
        to: Option<Version>,
        limit: usize,
    ) -> Result<Option<Walk>, StoreError> {
        let from = from.max(Version(1));
        let trees = &self.inner.trees;
        let visible = self.visible();
        let Some(head) = visible_head(trees, &self.inner.shared, stream_key, visible)? else {
            return Ok(None);
        };
        let to = to.unwrap_or(head.version).min(head.version);
        if limit == 0 || from > to {
            return Ok(None);
        }
        let end = to.min(from.advance(limit as u64 - 1));
        let mut commit = if end == head.version {
            head.at
        } else {
            self.skip_to(stream, stream_key, end, head)?
        };
        let mut segments = ChainSegments::new(&trees.log);
        let mut commits: Vec<(Segment, usize)> = Vec::new();
        loop {
            let (segment, i) = segments.find(commit)?;
            let (position, bytes) = segment.record(i)?;
            let (header, _, _) = RecordHeader::read(position, bytes)?;
            commits.push((segment, i));
            if header.first_version <= from || header.prev.is_none() {
                break;
            }
            commit = header.prev;
        }
        Ok(Some(Walk { commits, from, end }))
    }

    /// The commit to start a backward walk from to reach version `end`: the commit named by the
    /// first skip entry at or after `end`, if it checks out, otherwise the head.
    fn skip_to(
        &self,
        stream: &StreamId,
        stream_key: &[u8],
        end: Version,
        head: HeadEntry,
    ) -> Result<Locator, StoreError> {
        let trees = &self.inner.trees;
        let low = keys::stream_version_key(stream, end);
        let high = keys::stream_version_key(stream, head.version);
        let Some((key, value)) = trees
            .skips
            .range(low..=high)
            .next()
            .transpose()
            .map_err(io("reading skips"))?
        else {
            return Ok(head.at);
        };
        let version = keys::version_suffix(&key, "skip key")?;
        let at = Locator::decode(&value, "skip entry")?;
        // A crash can leave a skip entry whose commit was lost; its position may since hold
        // another commit. Trust it only if it holds `version` of this stream.
        if at.commit > head.at.commit || !key.starts_with(stream_key) {
            return Ok(head.at);
        }
        let Some((segment, i)) = locate(trees, at)? else {
            return Ok(head.at);
        };
        let (position, bytes) = segment.record(i)?;
        let (header, of, _) = RecordHeader::read(position, bytes)?;
        if of == stream_key && header.first_version <= version && version <= header.last_version() {
            Ok(at)
        } else {
            Ok(head.at)
        }
    }
}

/// How long `open` waits for the directory lock. sled releases its lock when the last handle to
/// the database drops, which can happen on one of its background threads just after a close,
/// so a reopen in the same process may briefly find it held.
const LOCK_WAIT: Duration = Duration::from_millis(1000);

fn open_db(options: &SledOptions, segment_size: usize) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match try_open_db(options, segment_size) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

fn try_open_db(options: &SledOptions, segment_size: usize) -> Result<sled::Db, StoreError> {
    let path = options.path.as_path();
    let result = sled::Config::new()
        .path(path)
        .cache_capacity(options.cache_capacity_bytes)
        .segment_size(segment_size)
        .flush_every_ms(None)
        .open();
    result.map_err(|e| match &e {
        sled::Error::Io(ioe) if ioe.to_string().contains("could not acquire lock") => {
            StoreError::Locked {
                path: path.display().to_string(),
            }
        }
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            what: format!("the database at {}", path.display()),
            reason: describe(&e),
        },
        _ => StoreError::Io {
            op: "opening the database",
            reason: describe(&e),
        },
    })
}

/// sled's segment size for a new database: 2 MiB (sled's default is 512 KiB). sled writes a
/// message larger than a quarter of its segment size to a blob file of its own, and a log
/// tree node holds up to 17 segments of ours; the larger sled segment keeps the journal's own
/// writes out of blob files with segments of a useful size (see [`segment_bytes_max`]). A
/// database keeps the segment size it was created with (sled refuses another).
pub(crate) const SLED_SEGMENT_SIZE_NEW: usize = 2 * 1024 * 1024;

/// The sled configuration the store opens the database at `dir` with (its segment size, no
/// background flusher), for tools and tests that must open it with plain sled — sled refuses
/// a configuration that differs from the one the database was created with. Writes made
/// through it are not synced as the store syncs them (see [`EventStore::sync`]).
pub fn sled_config(dir: &Path) -> Result<sled::Config, StoreError> {
    Ok(sled::Config::new()
        .path(dir)
        .segment_size(sled_segment_size(dir)?)
        .flush_every_ms(None))
}

/// The segment size of the sled database at `dir`: the one its `conf` file names, or
/// [`SLED_SEGMENT_SIZE_NEW`] for a new database.
fn sled_segment_size(dir: &Path) -> Result<usize, StoreError> {
    let conf = match std::fs::read(dir.join("conf")) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SLED_SEGMENT_SIZE_NEW),
        Err(e) => {
            return Err(StoreError::Io {
                op: "reading the database configuration",
                reason: e.to_string(),
            })
        }
    };
    // `conf` is `key: value` lines followed by a checksum; sled checks it when it opens.
    let size = String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|line| line.strip_prefix("segment_size: "))
        .and_then(|value| value.trim().parse::<usize>().ok());
    Ok(size.unwrap_or(SLED_SEGMENT_SIZE_NEW))
}

/// The largest segment of commit records the writer puts in one insert, for a sled database
/// with segments of `sled_segment_size` bytes: sled writes a message of more than a quarter of
/// a segment to a blob file, and a leaf node of the log tree — written whole when sled
/// consolidates or splits it — holds up to 17 of our segments, so 17 of them with their keys
/// must stay below that quarter (a twentieth leaves room for the node's own encoding). A batch
/// with more bytes is written as several segments; a single commit record larger than this is a
/// segment of its own (and then a blob, which [`SledStore::sync`] syncs like everything else).
pub(crate) fn segment_bytes_max(sled_segment_size: usize) -> usize {
    (sled_segment_size / 4 / 20).max(1024)
}

/// A skip entry is written for every version that is a multiple of this: a reader starts its
/// walk back at most this many versions past where it needs to.
pub(crate) const SKIP_EVERY: u64 = 64;
/// [`SKIP_EVERY`] as a step for iterators.
pub(crate) const SKIP_STEP: usize = 64;

/// The segment holding the commit at `at`, and the record's index in it (`None` if there is
/// no such commit: a dangling locator).
pub(crate) fn locate(trees: &Trees, at: Locator) -> Result<Option<(Segment, usize)>, StoreError> {
    let Some(bytes) = trees
        .log
        .get(keys::position_key(at.segment))
        .map_err(io("reading the log"))?
    else {
        return Ok(None);
    };
    let segment = Segment::parse(at.segment, bytes)?;
    Ok(segment.find_start(at.commit).map(|i| (segment, i)))
}

/// The commits a read of one stream decodes, newest first, and the versions it returns.
struct Walk {
    commits: Vec<(Segment, usize)>,
    from: Version,
    end: Version,
}

/// Decodes record `i` of `segment`, a commit on the chain of `stream`.
fn commit_of<'s>(
    stream: &StreamId,
    stream_key: &[u8],
    segment: &'s Segment,
    i: usize,
) -> Result<(Position, RecordHeader, record::Commit<'s>), StoreError> {
    let (position, bytes) = segment.record(i)?;
    let (header, of, commit) = record::decode_commit(position, bytes)?;
    if of != stream_key {
        let of = keys::parse_stream_key(of).map_or_else(
            |_| "an unreadable stream key".to_string(),
            |s| s.to_string(),
        );
        return Err(segment::corrupt_at(
            position,
            &format!("the chain of {stream} leads to a commit of {of}"),
        ));
    }
    Ok((position, header, commit))
}

fn missing_commit(at: Locator) -> StoreError {
    segment::corrupt_at(at.commit, "a stream's chain points at a missing commit")
}

/// How far back, in positions, a walk along a stream's chain looks for the previous commit's
/// segment by stepping a sled iterator rather than with a point `get`. Every segment holds at
/// least one position, so the iterator steps over at most this many other segments.
const CHAIN_SCAN_GAP_MAX: u64 = 16;

/// The segments of a walk back along one stream's chain.
///
/// A segment is fetched once for a run of the stream's commits in it (a group-commit batch
/// puts consecutive commits of a stream in one segment). A previous commit in a segment a few
/// positions back — a stream written by one client, command after command — is reached by
/// stepping a reverse sled iterator: the iterator keeps the leaf node it is in, so a step
/// costs a small part of a point `get`, which descends the tree from the root. Farther back,
/// a point `get`.
struct ChainSegments<'t> {
    log: &'t sled::Tree,
    current: Option<Segment>,
    /// A reverse iterator over the log below `current`, once the walk has used one.
    scan: Option<sled::Iter>,
}

impl<'t> ChainSegments<'t> {
    fn new(log: &'t sled::Tree) -> Self {
        ChainSegments {
            log,
            current: None,
            scan: None,
        }
    }

    /// The segment holding the commit at `at`, and the record's index in it.
    fn find(&mut self, at: Locator) -> Result<(Segment, usize), StoreError> {
        let segment = match self.current.take() {
            Some(s) if s.first() == at.segment => s,
            Some(s)
                if s.first() > at.segment && s.first().0 - at.segment.0 <= CHAIN_SCAN_GAP_MAX =>
            {
                match self.scan_back(s.first(), at.segment)? {
                    Some(found) => found,
                    None => self.get(at)?,
                }
            }
            _ => {
                self.scan = None;
                self.get(at)?
            }
        };
        let i = segment
            .find_start(at.commit)
            .ok_or_else(|| missing_commit(at))?;
        self.current = Some(segment.clone());
        Ok((segment, i))
    }

    fn get(&mut self, at: Locator) -> Result<Segment, StoreError> {
        self.scan = None;
        let bytes = self
            .log
            .get(keys::position_key(at.segment))
            .map_err(io("reading the log"))?
            .ok_or_else(|| missing_commit(at))?;
        Segment::parse(at.segment, bytes)
    }

    /// The segment at `target`, stepping back from the one at `below` (`None`: not found
    /// within [`CHAIN_SCAN_GAP_MAX`] steps).
    fn scan_back(
        &mut self,
        below: Position,
        target: Position,
    ) -> Result<Option<Segment>, StoreError> {
        let log = self.log;
        let scan = self
            .scan
            .get_or_insert_with(|| log.range(..keys::position_key(below)));
        for _ in 0..CHAIN_SCAN_GAP_MAX {
            let Some(item) = scan.next_back() else { break };
            let (key, bytes) = item.map_err(io("reading the log"))?;
            let first = Position(keys::read_u64(&key, "log key")?);
            if first == target {
                return Segment::parse(first, bytes).map(Some);
            }
            if first < target {
                break;
            }
        }
        self.scan = None;
        Ok(None)
    }
}

/// The header of the commit at `at`, which must exist.
fn header_at(trees: &Trees, at: Locator) -> Result<(Segment, usize, RecordHeader), StoreError> {
    let (segment, i) = locate(trees, at)?.ok_or_else(|| missing_commit(at))?;
    let (position, bytes) = segment.record(i)?;
    let (header, _, _) = RecordHeader::read(position, bytes)?;
    Ok((segment, i, header))
}

/// A stream's head, written or not yet acknowledged: the in-memory table of heads changed since
/// the last checkpoint, then the `heads` tree.
pub(crate) fn lookup_head(
    trees: &Trees,
    shared: &Shared,
    stream_key: &[u8],
) -> Result<Option<HeadEntry>, StoreError> {
    if let Some(head) = shared.dirty_heads.lock().get(stream_key) {
        return Ok(Some(*head));
    }
    trees
        .heads
        .get(stream_key)
        .map_err(io("reading stream heads"))?
        .map(|bytes| HeadEntry::decode(&bytes))
        .transpose()
}

/// A stream's last acknowledged head: its head, walked back past commits not yet visible.
fn visible_head(
    trees: &Trees,
    shared: &Shared,
    stream_key: &[u8],
    visible: Position,
) -> Result<Option<HeadEntry>, StoreError> {
    match lookup_head(trees, shared, stream_key)? {
        Some(head) => head_at_or_below(trees, head, visible),
        None => Ok(None),
    }
}

/// The stream's head as of `limit`: `head`, walked back along the chain past every commit that
/// ends after `limit` (`None` if the stream has no commit that early).
pub(crate) fn head_at_or_below(
    trees: &Trees,
    head: HeadEntry,
    limit: Position,
) -> Result<Option<HeadEntry>, StoreError> {
    let mut head = Some(head);
    while let Some(h) = head {
        if h.last_position() <= limit {
            break;
        }
        let (_, _, header) = header_at(trees, h.at)?;
        head = if header.prev.is_none() {
            None
        } else {
            let (_, _, prev) = header_at(trees, header.prev)?;
            Some(HeadEntry {
                version: prev.last_version(),
                at: header.prev,
                count: prev.count,
            })
        };
    }
    Ok(head)
}

impl EventStore for SledStore {
    fn append(&self, request: AppendRequest) -> AppendTicket {
        let shared = &self.inner.shared;
        match shared.state.load(Ordering::Acquire) {
            STATE_FAILED => return AppendTicket::ready(Err(shared.failed_error().into())),
            STATE_CLOSED => return AppendTicket::ready(Err(StoreError::Closed.into())),
            _ => {}
        }
        if let Some(refusal) = shared.space.refusal() {
            return AppendTicket::ready(Err(refusal.into()));
        }
        let prepared = match writer::Prepared::new(request) {
            Ok(p) => p,
            Err(e) => return AppendTicket::ready(Err(e)),
        };
        let (reply, ticket) = AppendTicket::pending();
        match self
            .inner
            .jobs
            .try_send(writer::Job::Append(Box::new(prepared), reply))
        {
            Ok(()) => ticket,
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                AppendTicket::ready(Err(StoreError::Overloaded {
                    capacity: self.inner.queue_capacity,
                }
                .into()))
            }
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
        let stream_key = keys::stream_key(stream);
        let Some(walk) = self.walk(stream, &stream_key, from, to, limit)? else {
            return Ok(Vec::new());
        };
        let (from, end) = (walk.from, walk.end);
        let mut out = Vec::with_capacity(usize::try_from(end.0 - from.0 + 1).unwrap_or(0));
        let mut builder = EventBuilder::default();
        for (segment, i) in walk.commits.iter().rev() {
            let (position, header, commit) = commit_of(stream, &stream_key, segment, *i)?;
            builder.push_events(
                stream,
                &header,
                position,
                &commit,
                |version, _| version >= from && version <= end,
                &mut out,
            )?;
        }
        check_contiguous(stream, from, &out)?;
        Ok(out)
    }

    fn visit_stream(
        &self,
        stream: &StreamId,
        from: Version,
        to: Option<Version>,
        limit: usize,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<usize, StoreError> {
        let stream_key = keys::stream_key(stream);
        let Some(walk) = self.walk(stream, &stream_key, from, to, limit)? else {
            return Ok(0);
        };
        let (from, end) = (walk.from, walk.end);
        let mut expected = from;
        let mut stopped = false;
        for (segment, i) in walk.commits.iter().rev() {
            let (position, header, commit) = commit_of(stream, &stream_key, segment, *i)?;
            let mut version = header.first_version;
            commit.for_each_event(position, |e| {
                let this = version;
                version = version.next();
                if stopped || this < from || this > end {
                    return Ok(());
                }
                if this != expected {
                    return Err(StoreError::Corrupt {
                        what: format!("stream {stream}"),
                        reason: format!("read version {this} where version {expected} belongs"),
                    });
                }
                let flow = visit(EventRef {
                    version: this,
                    event_type: e.event_type,
                    schema_version: e.schema_version,
                    payload: e.payload,
                });
                if flow.is_break() {
                    stopped = true;
                } else {
                    expected = expected.next();
                }
                Ok(())
            })?;
            if stopped {
                break;
            }
        }
        Ok(usize::try_from(expected.0 - from.0).unwrap_or(usize::MAX))
    }

    fn read_all(&self, from: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        if self.inner.shared.faults.take_read() {
            return Err(StoreError::Io {
                op: "reading the log",
                reason: "injected fault".into(),
            });
        }
        let from = from.max(Position(1));
        let visible = self.visible();
        let mut out = Vec::new();
        if limit == 0 || from > visible {
            return Ok(out);
        }
        let mut builder = EventBuilder::default();
        // Live subscribers read the tail: find its segments by key from the writer's list of
        // recent segments (point gets). sled iterators copy whole leaf nodes, which at the rate
        // live subscribers poll the tail cost more than the reads themselves.
        if let Some(segments) = self.recent_segments_from(from) {
            for first in segments {
                if first > visible {
                    break;
                }
                let Some(bytes) = self
                    .inner
                    .trees
                    .log
                    .get(keys::position_key(first))
                    .map_err(io("reading the log"))?
                else {
                    break;
                };
                let segment = Segment::parse(first, bytes)?;
                if collect_events(&segment, from, visible, limit, &mut builder, &mut out)? {
                    return Ok(out);
                }
            }
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
            let (key, bytes) = item.map_err(io("reading the log"))?;
            let segment = Segment::parse(Position(keys::read_u64(&key, "log key")?), bytes)?;
            if segment.first() > visible {
                break;
            }
            if collect_events(&segment, from, visible, limit, &mut builder, &mut out)? {
                return Ok(out);
            }
        }
        Ok(out)
    }

    fn stream_head(&self, stream: &StreamId) -> Result<Version, StoreError> {
        let key = keys::stream_key(stream);
        Ok(
            visible_head(&self.inner.trees, &self.inner.shared, &key, self.visible())?
                .map_or(Version(0), |h| h.version),
        )
    }

    fn head_position(&self) -> Position {
        self.visible()
    }

    fn stream_ids(
        &self,
        aggregate_type: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let (trees, shared) = (&self.inner.trees, &self.inner.shared);
        let Ok(type_len) = u8::try_from(aggregate_type.len()) else {
            return Ok(Vec::new());
        };
        if limit == 0 || prefix.len() > crate::types::AGGREGATE_ID_LEN_MAX {
            return Ok(Vec::new());
        }
        let visible = self.visible();
        let mut type_key = vec![type_len];
        type_key.extend_from_slice(aggregate_type.as_bytes());
        // Heads not checkpointed yet are in memory (read first: the checkpoint writes a head to
        // the tree before it leaves the table, so what leaves after this read is in the tree
        // when it is scanned next); a stream whose only commits are not acknowledged yet is
        // not shown.
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let dirty: Vec<(Vec<u8>, HeadEntry)> = shared
            .dirty_heads
            .lock()
            .iter()
            .filter(|(key, _)| {
                key.starts_with(&type_key)
                    && key
                        .get(type_key.len() + 2..)
                        .is_some_and(|id| id.starts_with(prefix.as_bytes()))
            })
            .map(|(key, head)| (key.clone(), *head))
            .collect();
        for (key, head) in dirty {
            if head.last_position() <= visible || head_at_or_below(trees, head, visible)?.is_some()
            {
                keys.push(key);
            }
        }
        // Stream keys order by id length, then id bytes: per length, the ids that start with
        // `prefix` are one range of the checkpointed heads. Collected in key order, so the
        // first `limit` of them are the first `limit` of the answer from this tree.
        let mut from_tree = 0;
        'lengths: for len in prefix.len().max(1)..=crate::types::AGGREGATE_ID_LEN_MAX {
            let Ok(len) = u16::try_from(len) else { break };
            let mut start = type_key.clone();
            start.extend_from_slice(&len.to_be_bytes());
            start.extend_from_slice(prefix.as_bytes());
            for entry in trees.heads.scan_prefix(&start) {
                let (key, _) = entry.map_err(io("reading stream heads"))?;
                keys.push(key.to_vec());
                from_tree += 1;
                if from_tree >= limit {
                    break 'lengths;
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys.truncate(limit);
        keys.iter()
            .map(|key| {
                keys::parse_stream_key(key)
                    .map(|stream| stream.aggregate_id().to_string())
                    .map_err(|reason| StoreError::Corrupt {
                        what: "a stream key".into(),
                        reason,
                    })
            })
            .collect()
    }

    fn command_outcome(&self, id: &CommandId) -> Result<Option<StoredOutcome>, StoreError> {
        if self.inner.shared.pending_outcomes.lock().contains(id) {
            return Ok(None);
        }
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

    fn watch_head(&self) -> HeadWatch {
        self.inner.shared.head.subscribe()
    }

    fn watch_types(&self, aggregate_types: &[String]) -> HeadWatch {
        let shared = &self.inner.shared;
        shared.types.watch(aggregate_types, || {
            Position(shared.written.load(Ordering::Acquire))
        })
    }

    /// Makes everything written to the database so far durable — the journal's batches and
    /// whatever else was written beside them (read models, checkpoints, snapshots) — with a
    /// real `fsync` of every file and directory that holds it (see `disk.rs`).
    fn sync(&self) -> Result<(), StoreError> {
        let shared = &self.inner.shared;
        shared
            .disk
            .lock()
            .sync(&self.inner.trees.db, &shared.faults)
    }

    fn shutdown(&self) -> Result<(), StoreError> {
        let shared = &self.inner.shared;
        let _ = shared.state.compare_exchange(
            STATE_READY,
            STATE_CLOSED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        // The writer drains what is queued, hands it to the flusher and both exit.
        let _ = self.inner.jobs.send(writer::Job::Stop);
        let threads = std::mem::take(&mut *self.inner.threads.lock());
        for t in threads {
            if t.join().is_err() {
                return Err(StoreError::Io {
                    op: "stopping the journal",
                    reason: "a journal thread panicked".into(),
                });
            }
        }
        if shared.is_failed() {
            return Err(shared.failed_error());
        }
        self.inner.state.close()?;
        // What was written beside the journal (read models, checkpoints, snapshots) too.
        self.sync()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.state.close();
        let _ = self.jobs.send(writer::Job::Stop);
        for t in std::mem::take(&mut *self.threads.lock()) {
            let _ = t.join();
        }
    }
}

/// Appends the events of `segment` from position `from` up to `visible` to `out`; `true` once
/// `out` holds `limit` events or the segment reaches past `visible`.
fn collect_events(
    segment: &Segment,
    from: Position,
    visible: Position,
    limit: usize,
    builder: &mut EventBuilder,
    out: &mut Vec<RecordedEvent>,
) -> Result<bool, StoreError> {
    for i in segment.find_containing(from)..segment.len() {
        let (position, bytes) = segment.record(i)?;
        if position > visible {
            return Ok(true);
        }
        let (header, key, commit) = record::decode_commit(position, bytes)?;
        let stream = builder.stream(position, key)?;
        // Keep at most the `limit - out.len()` events from `from` on (they are contiguous).
        let room = limit.saturating_sub(out.len()) as u64;
        let last = Position(
            visible
                .0
                .min(from.max(position).0.saturating_add(room).saturating_sub(1)),
        );
        builder.push_events(
            &stream,
            &header,
            position,
            &commit,
            |_, at| at >= from && at <= last,
            out,
        )?;
        if out.len() >= limit {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Segments the writer inserted recently, remembered so that reads of the tail need no sled
/// iterator. Bounded: older segments are found through the log tree.
pub(crate) const RECENT_SEGMENTS_MAX: usize = 4096;

/// `[name length: u8][name][position]`: prefix-free per subscriber, ordered by position.
fn check_contiguous(
    stream: &StreamId,
    from: Version,
    events: &[RecordedEvent],
) -> Result<(), StoreError> {
    let mut expected = from;
    for event in events {
        if event.version != expected {
            return Err(StoreError::Corrupt {
                what: format!("stream {stream}"),
                reason: format!(
                    "read version {} where version {expected} belongs",
                    event.version
                ),
            });
        }
        expected = expected.next();
    }
    Ok(())
}

/// Looks up a command record; `visible` hides committed outcomes not yet acknowledged.
pub(crate) fn lookup_command(
    trees: &Trees,
    id: &CommandId,
    visible: Option<Position>,
) -> Result<Option<StoredOutcome>, StoreError> {
    let Some(bytes) = trees
        .commands
        .get(id.as_str().as_bytes())
        .map_err(io("reading command ids"))?
    else {
        return Ok(None);
    };
    let record = CommandRecord::decode(&bytes)?;
    let outcome = match record {
        CommandRecord::Committed { segment, position } => {
            let position = Position(position);
            if visible.is_some_and(|v| position > v) {
                return Ok(None);
            }
            let Some((found, i)) = locate(
                trees,
                Locator {
                    segment: Position(segment),
                    commit: position,
                },
            )?
            else {
                return Ok(None); // dangling: its commit was never made durable
            };
            let (_, bytes) = found.record(i)?;
            let (header, key, commit) = record::decode_commit(position, bytes)?;
            if commit.command_id() != Some(id.as_str()) {
                return Ok(None); // dangling: the position now holds another commit
            }
            let fingerprint = commit
                .fingerprint()
                .map(super::Fingerprint)
                .ok_or_else(|| {
                    segment::corrupt_at(position, "commit with a command id has no fingerprint")
                })?;
            let mut builder = EventBuilder::default();
            let stream = builder.stream(position, key)?;
            let mut events = Vec::with_capacity(header.count as usize);
            builder.push_events(
                &stream,
                &header,
                position,
                &commit,
                |_, _| true,
                &mut events,
            )?;
            StoredOutcome::Committed {
                fingerprint,
                events,
            }
        }
        CommandRecord::Rejected {
            aggregate_type,
            aggregate_id,
            fingerprint,
            version,
            rejection,
        } => StoredOutcome::Rejected {
            stream: stream_of(aggregate_type, aggregate_id)?,
            fingerprint: fingerprint_from(&fingerprint)?,
            version: Version(version),
            rejection,
        },
        CommandRecord::NoEvents {
            aggregate_type,
            aggregate_id,
            fingerprint,
            version,
        } => StoredOutcome::NoEvents {
            stream: stream_of(aggregate_type, aggregate_id)?,
            fingerprint: fingerprint_from(&fingerprint)?,
            version: Version(version),
        },
    };
    Ok(Some(outcome))
}

fn stream_of(ty: String, id: String) -> Result<StreamId, StoreError> {
    StreamId::stored(ty, id).map_err(|e| StoreError::Corrupt {
        what: "command record".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::record::CommitRecord;
    use super::segment::SegmentBuilder;
    use super::*;
    use crate::envelope::{CommitMeta, EncodedPayload};
    use crate::store::{AppendKind, CommandKey, Fingerprint, PendingEvent};
    use crate::types::Timestamp;

    fn open(dir: &Path) -> SledStore {
        SledStore::open(SledOptions::new(dir).with_integrity_check(IntegrityCheck::Full))
            .expect("the store opens")
    }

    /// A commit of `count` events; every third carries a command id and a correlation id.
    fn request(stream: &StreamId, expected: Version, count: usize, n: usize) -> AppendRequest {
        let command = n.is_multiple_of(3).then(|| CommandKey {
            id: CommandId::new(format!("cmd-{n}")).expect("valid"),
            fingerprint: Fingerprint([u8::try_from(n % 256).expect("small"); 16]),
        });
        AppendRequest {
            stream: stream.clone(),
            expected,
            meta: CommitMeta {
                recorded_at: Timestamp(1_000 + n as u64),
                command_id: command.as_ref().map(|c| c.id.clone()),
                correlation_id: command.as_ref().map(|_| Arc::from("corr")),
                causation_id: None,
            },
            command,
            kind: AppendKind::Events(
                (0..count)
                    .map(|i| PendingEvent {
                        event_id: uuid::Uuid::new_v4(),
                        event_type: Arc::from(if i % 2 == 0 { "Deposited" } else { "Withdrawn" }),
                        schema_version: 1,
                        payload: EncodedPayload(vec![0x18, u8::try_from(n % 200).expect("small")]),
                    })
                    .collect(),
            ),
        }
    }

    /// Appends `rounds` commits to each of `streams`, queued together so that batches hold
    /// several commits of one stream in one segment.
    fn fill(store: &SledStore, streams: &[StreamId], rounds: usize, salt: usize) {
        let mut versions: Vec<Version> = streams
            .iter()
            .map(|s| store.stream_head(s).expect("head"))
            .collect();
        let mut tickets = Vec::new();
        for round in 0..rounds {
            for (s, stream) in streams.iter().enumerate() {
                let n = salt + round * streams.len() + s;
                let count = 1 + n % 3;
                tickets.push(store.append(request(stream, versions[s], count, n)));
                versions[s] = versions[s].advance(count as u64);
            }
        }
        for ticket in tickets {
            futures::executor::block_on(ticket).expect("the append commits");
        }
    }

    /// Rewrites every record of the log in format 1, as builds before format 2 wrote them
    /// (same header, CBOR body); returns how many records it rewrote.
    fn rewrite_in_format_1(store: &SledStore) -> usize {
        let log = &store.inner.trees.log;
        let mut rewritten = 0;
        for item in log.iter() {
            let (key, bytes) = item.expect("reads");
            let first = Position(keys::read_u64(&key, "log key").expect("a log key"));
            let segment = Segment::parse(first, bytes).expect("parses");
            let mut builder = SegmentBuilder::default();
            for i in 0..segment.len() {
                let (position, bytes) = segment.record(i).expect("in bounds");
                let (header, stream, record) =
                    CommitRecord::decode(position, bytes).expect("decodes");
                let mut old = record.encode_format_1(&stream).expect("encodes");
                header.write_into(&mut old);
                let relative = u32::try_from(position.0 - first.0).expect("small");
                builder.push(relative, &old);
                rewritten += 1;
            }
            log.insert(key, builder.finish()).expect("inserted");
        }
        rewritten
    }

    fn everything(store: &SledStore, streams: &[StreamId]) -> Vec<Vec<RecordedEvent>> {
        let mut all: Vec<Vec<RecordedEvent>> = streams
            .iter()
            .map(|s| {
                store
                    .read_stream(s, Version(1), None, 100_000)
                    .expect("reads")
            })
            .collect();
        all.push(store.read_all(Position(1), 100_000).expect("reads"));
        // A range that starts and ends inside commits, and a page of the global log.
        all.push(
            store
                .read_stream(&streams[0], Version(4), Some(Version(20)), 9)
                .expect("reads"),
        );
        all.push(store.read_all(Position(5), 7).expect("reads"));
        all
    }

    #[test]
    fn a_store_of_format_1_records_opens_reads_and_takes_appends() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let streams = [
            StreamId::new("Account", "a-1").expect("valid"),
            StreamId::new("Account", "a-2").expect("valid"),
        ];
        let store = open(dir.path());
        fill(&store, &streams, 40, 0);
        let before = everything(&store, &streams);
        let outcome = store
            .command_outcome(&CommandId::new("cmd-3").expect("valid"))
            .expect("reads")
            .expect("recorded");
        assert!(rewrite_in_format_1(&store) >= 80);
        store.shutdown().expect("shuts down");
        drop(store);

        let store = open(dir.path());
        let (_, bytes) = store
            .inner
            .trees
            .log
            .first()
            .expect("reads")
            .expect("a segment");
        let segment = Segment::parse(Position(1), bytes).expect("parses");
        assert_eq!(
            segment.record(0).expect("in bounds").1[0],
            1,
            "format 1 on disk"
        );
        assert_eq!(
            everything(&store, &streams),
            before,
            "format 1 reads as it was written"
        );
        assert_eq!(
            store
                .command_outcome(&CommandId::new("cmd-3").expect("valid"))
                .expect("reads"),
            Some(outcome)
        );

        fill(&store, &streams, 10, 1_000);
        let after = everything(&store, &streams);
        for (s, stream) in streams.iter().enumerate() {
            assert_eq!(after[s][..before[s].len()], before[s][..], "{stream}");
            assert!(
                after[s].len() >= before[s].len() + 10,
                "{stream}: 10 more commits"
            );
            assert!(after[s]
                .iter()
                .enumerate()
                .all(|(i, e)| e.version == Version(i as u64 + 1)));
        }
        store.shutdown().expect("shuts down");
        drop(store);
        let store = open(dir.path());
        assert_eq!(
            everything(&store, &streams),
            after,
            "both formats after a reopen"
        );
        store.shutdown().expect("shuts down");
    }

    /// A stream's chain read back across every kind of step: commits in the same segment, a
    /// few positions back (the iterator), and farther back than the iterator looks (a point
    /// `get`), from every start and with every page size.
    #[test]
    fn a_chain_is_walked_across_near_and_far_segments() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = open(dir.path());
        let a = StreamId::new("Account", "a").expect("valid");
        let noise = StreamId::new("Account", "noise").expect("valid");
        let (mut va, mut vn) = (Version(0), Version(0));
        for n in 0..60usize {
            // 0, 1, … noise commits between two of `a`'s: gaps of up to 3 × 19 positions.
            for k in 0..n % 20 {
                let count = 1 + k % 3;
                let r = store.append(request(&noise, vn, count, 10_000 + n * 100 + k));
                futures::executor::block_on(r).expect("commits");
                vn = vn.advance(count as u64);
            }
            let count = 1 + n % 3;
            futures::executor::block_on(store.append(request(&a, va, count, n))).expect("commits");
            va = va.advance(count as u64);
        }
        let all = store
            .read_stream(&a, Version(1), None, 100_000)
            .expect("reads");
        assert_eq!(all.len() as u64, va.0);
        for from in (1..=va.0).step_by(7) {
            for limit in [1, 5, 64, 1_000] {
                let page = store
                    .read_stream(&a, Version(from), None, limit)
                    .expect("reads");
                let expected: Vec<_> = all
                    .iter()
                    .skip(usize::try_from(from - 1).expect("small"))
                    .take(limit)
                    .cloned()
                    .collect();
                assert_eq!(page, expected, "from {from}, limit {limit}");
            }
        }
        store.shutdown().expect("shuts down");
    }
}
