//! The storage boundary: everything the runtime keeps durably goes through two traits.
//!
//! - [`EventStore`], the **log**: appends with version checks and command-id outcomes, stream
//!   and global reads, heads, snapshots, durability and the order of acknowledgements.
//! - [`StateStore`], the **read side's state**: subscriber checkpoints, parked events,
//!   projection views and generations, process-manager instances and outboxes, deadlines —
//!   committed in atomic change sets (see [`state`]).
//!
//! A backend implements both over one storage engine ([`Stores`] carries the pair to
//! [`Runtime::with_stores`](crate::Runtime::with_stores)); the runtime outside `store/` names
//! neither sled nor any other engine. The sled backend ([`sled::SledStore`] with its
//! [`sled::SledState`]) is the default; a PostgreSQL backend for deployments beyond one machine
//! implements the same traits. Every implementation must pass the store contract suite in
//! `tests/` (package `annals-tests`), which covers both traits.
//!
//! The store knows no aggregate or event types: payloads, rejections and snapshot states arrive
//! already encoded. It owns what must be decided in one place: version checks, position
//! assignment, command-id records, durability and the order of acknowledgements.

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sled;
pub mod state;

#[cfg(feature = "postgres")]
pub use self::postgres::{PgOptions, PgStore};
pub use self::sled::{Durability, SledOptions};
pub use self::state::{Changes, Lease, MemoryState, Owner, StateStore};

use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

use crate::codec::CodecError;
use crate::envelope::{CommitMeta, EncodedPayload, RecordedEvent};
use crate::types::{CommandId, Position, StreamId, Timestamp, Version};

/// One event waiting to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// The event id the envelope will carry.
    pub event_id: Uuid,
    /// The event type name.
    pub event_type: Arc<str>,
    /// The schema version the payload was written with.
    pub schema_version: u16,
    /// The encoded payload.
    pub payload: EncodedPayload,
}

/// A 128-bit hash of a command (aggregate type, id and encoded command), stored with the
/// command id so that a reused id with a *different* command is told apart from a retry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// The fingerprint of an encoded command sent to `stream`.
    pub fn of(stream: &StreamId, encoded_command: &[u8]) -> Fingerprint {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for part in [
            stream.aggregate_type().as_bytes(),
            stream.aggregate_id().as_bytes(),
        ] {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.update(encoded_command);
        Fingerprint(hasher.digest128().to_be_bytes())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The command id and fingerprint of a command whose outcome must be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandKey {
    /// The client's command id.
    pub id: CommandId,
    /// The fingerprint of the command.
    pub fingerprint: Fingerprint,
}

/// What an append writes.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendKind {
    /// Events, all committed atomically or none. Must not be empty.
    Events(Vec<PendingEvent>),
    /// A business rejection (encoded) of a command that carried a command id: recorded so a
    /// retry returns it. Writes no event.
    Rejection(Vec<u8>),
    /// A command with a command id that was accepted but produced no events.
    NoEvents,
}

/// One append: the outcome of one command.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    /// The stream appended to.
    pub stream: StreamId,
    /// The version the stream must be at; the first event gets `expected + 1`.
    pub expected: Version,
    /// Commit metadata (time, command id, correlation, causation).
    pub meta: CommitMeta,
    /// Present when the command carried a command id (required for the non-event kinds).
    pub command: Option<CommandKey>,
    /// What to write.
    pub kind: AppendKind,
}

/// What a successful append committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitReceipt {
    /// The stream's version after the append (unchanged for the non-event kinds).
    pub version: Version,
    /// Position of the first event (`None` when no event was written).
    pub first_position: Option<Position>,
    /// Number of events written.
    pub event_count: u32,
}

impl CommitReceipt {
    /// Position of the last event written, if any.
    pub fn last_position(&self) -> Option<Position> {
        self.first_position
            .map(|p| p.advance(u64::from(self.event_count).saturating_sub(1)))
    }
}

/// The recorded outcome of a command that carried a command id.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredOutcome {
    /// The command committed these events.
    Committed {
        /// Its fingerprint.
        fingerprint: Fingerprint,
        /// The committed events, in order.
        events: Vec<RecordedEvent>,
    },
    /// The command was rejected; the encoded rejection.
    Rejected {
        /// The stream the command was sent to.
        stream: StreamId,
        /// Its fingerprint.
        fingerprint: Fingerprint,
        /// The stream's version when it was rejected.
        version: Version,
        /// The encoded rejection.
        rejection: Vec<u8>,
    },
    /// The command was accepted and produced no events.
    NoEvents {
        /// The stream the command was sent to.
        stream: StreamId,
        /// Its fingerprint.
        fingerprint: Fingerprint,
        /// The stream's version at that time.
        version: Version,
    },
}

impl StoredOutcome {
    /// The fingerprint of the command that produced this outcome.
    pub fn fingerprint(&self) -> Fingerprint {
        match self {
            StoredOutcome::Committed { fingerprint, .. }
            | StoredOutcome::Rejected { fingerprint, .. }
            | StoredOutcome::NoEvents { fingerprint, .. } => *fingerprint,
        }
    }
}

/// A stored snapshot of one aggregate's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream version the state reflects.
    pub version: Version,
    /// The schema version of the encoded state.
    pub schema_version: u32,
    /// When it was taken: never before the event at its version was recorded. A snapshot
    /// whose event was recorded later is of a tail the log lost (relaxed mode) and is ignored.
    pub taken_at: Timestamp,
    /// The encoded state.
    pub state: Vec<u8>,
}

/// One batch the journal made durable (or, in relaxed mode, wrote), as told to a
/// [`BatchObserver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchCommitted {
    /// The appends the batch acknowledged.
    pub appends: u64,
    /// The events it committed.
    pub events: u64,
    /// From the moment the journal started writing the batch to its acknowledgement: the
    /// write, the sync (sled; on PostgreSQL the transaction) and any wait for the sync that
    /// covers it.
    pub commit: std::time::Duration,
}

impl BatchCommitted {
    /// A batch of `appends` appends and `events` events, committed in `commit`.
    pub fn new(appends: u64, events: u64, commit: std::time::Duration) -> BatchCommitted {
        BatchCommitted {
            appends,
            events,
            commit,
        }
    }
}

/// Called by the journal once per batch, on its own thread, after the batch's appends are
/// acknowledged: for histograms of batch sizes and commit times (the service's `/metrics`).
/// It runs once per batch, not per command, and must return quickly (record and return).
#[derive(Clone)]
pub struct BatchObserver(std::sync::Arc<dyn Fn(&BatchCommitted) + Send + Sync>);

impl BatchObserver {
    /// An observer calling `observe` for every batch.
    pub fn new(observe: impl Fn(&BatchCommitted) + Send + Sync + 'static) -> BatchObserver {
        BatchObserver(std::sync::Arc::new(observe))
    }

    /// Tells the observer about `batch`.
    pub fn observe(&self, batch: &BatchCommitted) {
        (self.0)(batch);
    }
}

impl fmt::Debug for BatchObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BatchObserver")
    }
}

/// Counters of the journal, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Appends acknowledged (any kind).
    pub appends: u64,
    /// Events committed.
    pub events: u64,
    /// Batches written.
    pub batches: u64,
    /// `fsync`s (sled `flush`) completed.
    pub fsyncs: u64,
    /// The largest batch written, in appends.
    pub batch_appends_max: u64,
}

/// Why an append was not committed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The stream is not at the expected version; nothing was written.
    #[error("cannot append to {stream}: expected version {expected}, stream is at {actual}")]
    Conflict {
        /// The stream.
        stream: StreamId,
        /// The version the append expected.
        expected: Version,
        /// The stream's actual version.
        actual: Version,
    },
    /// The command id has already been used, by this command (`same_command`: a retry) or by a
    /// different one; nothing was written.
    #[error("command id {id} was already used{}", if *same_command { "" } else { " for a different command" })]
    CommandIdUsed {
        /// The command id.
        id: CommandId,
        /// Whether the earlier command had the same fingerprint.
        same_command: bool,
    },
    /// The request itself is malformed (for example an empty event list).
    #[error("invalid append to {stream}: {reason}")]
    Invalid {
        /// The stream.
        stream: StreamId,
        /// What is wrong.
        reason: &'static str,
    },
    /// The journal could not read what it checks this append against (the stream's head, or
    /// the record of its command id): a damaged record or a failed read. Nothing was written,
    /// and the journal goes on with other appends.
    #[error("cannot check the append to {stream}: {error}; nothing was written")]
    Unchecked {
        /// The stream.
        stream: StreamId,
        /// Why the check could not be made.
        error: StoreError,
    },
    /// The store failed; see [`StoreError`].
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A technical failure of the store.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the database directory.
    #[error("cannot open the store at {path}: the directory is locked by another process")]
    Locked {
        /// The directory.
        path: String,
    },
    /// An I/O error from the storage engine.
    #[error("storage I/O failed while {op}: {reason}")]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The engine's message.
        reason: String,
    },
    /// A stored record is damaged or violates an invariant. Nothing was changed.
    #[error("the store is corrupt: {what}: {reason}")]
    Corrupt {
        /// Which record or invariant.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The journal failed earlier (a write or fsync failed) and accepts no more writes. The
    /// outcome of appends in flight at that moment is unknown; restart to recover.
    #[error("the journal has failed and accepts no writes ({reason}); appends in flight have an unknown outcome; restart to recover")]
    Failed {
        /// The original failure.
        reason: Arc<str>,
    },
    /// The journal's queue is full; retry after a short pause.
    #[error("the journal queue is full ({capacity} appends waiting); retry later")]
    Overloaded {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The store has been shut down.
    #[error("the store is shut down")]
    Closed,
    /// The disk holding the store has less free space than the configured minimum: appends
    /// are refused (nothing was written) until space is freed, so that the journal never runs
    /// into a full disk in the middle of a batch. The store stays healthy; retry later.
    #[error(
        "the disk holding the store has {free_bytes} bytes free, below the minimum of \
         {min_bytes}: nothing was written; retry once space is freed"
    )]
    DiskFull {
        /// Free bytes when last measured.
        free_bytes: u64,
        /// The configured minimum.
        min_bytes: u64,
    },
    /// The log ends before what the journal recorded, durably, as acknowledged: acknowledged
    /// data was lost (a damaged or lost tail of the database files). The store refuses to open
    /// rather than roll back quietly; nothing was changed.
    #[error(
        "the store lost acknowledged data: its journal recorded batch {acknowledged_batch} \
         (through position {acknowledged_position}) as durable, but the log ends at batch \
         {found_batch} (position {found_position}){}; restore the data directory from a \
         backup, or, to accept the loss and go on from what is left, remove the file \
         'acknowledged' from it and open again",
        lost_positions(*found_position, *acknowledged_position)
    )]
    AcknowledgedDataLost {
        /// The last batch the journal recorded as durable.
        acknowledged_batch: u64,
        /// The last position the journal recorded as durable.
        acknowledged_position: Position,
        /// The last batch found in the log.
        found_batch: u64,
        /// The last position found in the log.
        found_position: Position,
    },
    /// A value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] Arc<CodecError>),
    /// The store's configuration cannot work (a malformed database URL, an invalid schema
    /// name); nothing was opened.
    #[error("invalid store configuration: {reason}")]
    Config {
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// The commit was fenced by a subscriber's lease whose epoch is no longer current: another
    /// process took the subscriber over (see [`Lease`]). Nothing was written.
    #[error("subscriber {name} is owned by another node now (this node's epoch {epoch} is past); nothing was written")]
    Fenced {
        /// The subscriber.
        name: String,
        /// The epoch the commit carried.
        epoch: u64,
    },
    /// The stored data was written by a newer build, in a layout this one does not know; it is
    /// left untouched.
    #[error("incompatible store: {reason}")]
    Incompatible {
        /// What was found.
        reason: String,
    },
}

fn lost_positions(found: Position, acknowledged: Position) -> String {
    if acknowledged > found {
        format!(": positions {} to {acknowledged} are missing", found.next())
    } else {
        String::new()
    }
}

impl From<CodecError> for StoreError {
    fn from(e: CodecError) -> Self {
        StoreError::Codec(Arc::new(e))
    }
}

/// The health of a store, for readiness checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Accepting writes.
    Ready,
    /// Failed; the reason.
    Failed(Arc<str>),
    /// Shut down.
    Closed,
}

/// A watch of the position of the last acknowledged event.
pub type HeadWatch = tokio::sync::watch::Receiver<Position>;

/// An event a subscriber gave up on, kept so it can be inspected and retried.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParkedEvent {
    /// The event's position in the global log.
    pub position: Position,
    /// The last error the handler returned.
    pub reason: String,
    /// How many times the handler was tried.
    pub attempts: u32,
    /// When it was parked.
    pub parked_at: Timestamp,
}

/// Longest subscriber name, in bytes (it is part of storage keys).
pub const SUBSCRIBER_NAME_LEN_MAX: usize = 128;

/// A future that resolves when an append is acknowledged (durable, in the default mode) or
/// refused.
#[derive(Debug)]
pub struct AppendTicket(TicketInner);

#[derive(Debug)]
enum TicketInner {
    Ready(Option<Result<CommitReceipt, AppendError>>),
    Waiting(futures::channel::oneshot::Receiver<Result<CommitReceipt, AppendError>>),
}

/// The sending half of an [`AppendTicket`], for store implementations.
pub type AppendReply = futures::channel::oneshot::Sender<Result<CommitReceipt, AppendError>>;

impl AppendTicket {
    /// A ticket resolved at once (a refusal found before queueing).
    pub fn ready(result: Result<CommitReceipt, AppendError>) -> AppendTicket {
        AppendTicket(TicketInner::Ready(Some(result)))
    }

    /// A pending ticket and the sender that resolves it.
    pub fn pending() -> (AppendReply, AppendTicket) {
        let (tx, rx) = futures::channel::oneshot::channel();
        (tx, AppendTicket(TicketInner::Waiting(rx)))
    }
}

impl std::future::Future for AppendTicket {
    type Output = Result<CommitReceipt, AppendError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut self.0 {
            TicketInner::Ready(result) => std::task::Poll::Ready(
                result
                    .take()
                    .unwrap_or(Err(AppendError::Store(StoreError::Closed))),
            ),
            TicketInner::Waiting(rx) => std::pin::Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(AppendError::Store(StoreError::Closed)))),
        }
    }
}

/// A stored event lent by [`EventStore::visit_stream`]: what replaying it needs, borrowed from
/// the store's own bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// The event's version within its stream.
    pub version: Version,
    /// The event's type name.
    pub event_type: &'a str,
    /// The schema version the event was written with.
    pub schema_version: u16,
    /// The encoded payload (CBOR).
    pub payload: &'a [u8],
}

/// An event store. See the [module docs](self).
///
/// All methods are callable from any thread. `append` never blocks: it queues and returns a
/// ticket. The read methods block on the storage engine (for sled, mostly a cache lookup).
///
/// **Visibility**: reads return only acknowledged events; an event that is written but not yet
/// acknowledged (fsync in progress) is invisible.
pub trait EventStore: Send + Sync + fmt::Debug + 'static {
    /// Queues an append. The ticket resolves once the append is durable (or refused).
    fn append(&self, request: AppendRequest) -> AppendTicket;

    /// Events of `stream` with versions in `from..=to` (`to = None`: up to the head), at most
    /// `limit` of them, in version order.
    fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        to: Option<Version>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Events of the global log with positions `>= from`, at most `limit`, in position order.
    fn read_all(&self, from: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Lends the events [`EventStore::read_stream`] would return to `visit`, one at a time and
    /// in version order, until `visit` breaks; returns how many `visit` took (not counting the
    /// one it broke on). The path of replay: a
    /// backend can lend its stored bytes instead of copying each event into an envelope. The
    /// default implementation lends from `read_stream`.
    fn visit_stream(
        &self,
        stream: &StreamId,
        from: Version,
        to: Option<Version>,
        limit: usize,
        visit: &mut dyn FnMut(EventRef<'_>) -> std::ops::ControlFlow<()>,
    ) -> Result<usize, StoreError> {
        let mut lent = 0;
        for event in self.read_stream(stream, from, to, limit)? {
            let flow = visit(EventRef {
                version: event.version,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                payload: &event.payload.0,
            });
            if flow.is_break() {
                break;
            }
            lent += 1;
        }
        Ok(lent)
    }

    /// The version of the last acknowledged event of `stream` (`Version(0)` if none).
    fn stream_head(&self, stream: &StreamId) -> Result<Version, StoreError>;

    /// The position of the last acknowledged event (`Position(0)` if none).
    fn head_position(&self) -> Position;

    /// The head as the storage engine has it now: for a store that other processes write to
    /// (PostgreSQL), [`EventStore::head_position`] follows their commits with a delay, and this
    /// asks. The default is [`EventStore::head_position`].
    fn fresh_head(&self) -> Result<Position, StoreError> {
        Ok(self.head_position())
    }

    /// The recorded outcome of the command with this id, if any.
    fn command_outcome(&self, id: &CommandId) -> Result<Option<StoredOutcome>, StoreError>;

    /// Stores a snapshot, replacing one at the same version. Not fsynced on its own: a snapshot
    /// is a cache, and one lost in a crash is simply taken again.
    fn save_snapshot(&self, stream: &StreamId, snapshot: &Snapshot) -> Result<(), StoreError>;

    /// The latest snapshot of `stream` at or below `at_or_below`.
    fn load_snapshot(
        &self,
        stream: &StreamId,
        at_or_below: Version,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// Counters.
    fn stats(&self) -> JournalStats;

    /// Whether the store accepts writes.
    fn health(&self) -> StoreHealth;

    /// The ids of the streams of `aggregate_type` that have an acknowledged event and start
    /// with `prefix`, at most `limit` of them: shortest first, ids of one length in byte order
    /// (so `o-4` comes before `o-40`). For browsing (the console's search), bounded by `limit`.
    fn stream_ids(
        &self,
        aggregate_type: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// Stops accepting appends, acknowledges (or refuses) everything queued, and makes
    /// everything durable. Idempotent.
    fn shutdown(&self) -> Result<(), StoreError>;

    /// Makes everything written so far durable (an fsync of whatever holds it, not a flush
    /// to the operating system), for writes beside the journal that must survive a power cut
    /// on their own. Appends need no call: they are durable when acknowledged.
    fn sync(&self) -> Result<(), StoreError>;

    /// A watch of [`EventStore::head_position`]: it changes after every acknowledged batch.
    /// Subscribers wait on it instead of polling.
    fn watch_head(&self) -> HeadWatch;

    /// A watch that moves only with acknowledgements that hold an event of one of
    /// `aggregate_types`, each time to the head as of that acknowledgement, and never back.
    /// It moves *before* [`EventStore::head_position`] passes such an event: whoever reads the
    /// head and then this watch sees every event of those types at or below that head at or
    /// below the watch's value. (So its value may be ahead of the head for a moment, and a
    /// new watch may start ahead of it, at the last position written.) A subscriber that reads
    /// only those types waits on it, and is not woken by the batches of every other type.
    ///
    /// The default is [`EventStore::watch_head`], which moves with every acknowledgement: as
    /// correct for a store whose head watch moves no later than its `head_position` (the
    /// PostgreSQL store's is the same value), only less selective.
    fn watch_types(&self, aggregate_types: &[String]) -> HeadWatch {
        let _ = aggregate_types;
        self.watch_head()
    }
}

/// The watches of [`EventStore::watch_types`], for a store to keep: [`TypeWatches::moved`]
/// with every acknowledgement, before the head moves.
#[derive(Debug, Default)]
pub(crate) struct TypeWatches {
    /// Taken by [`TypeWatches::moved`] once per acknowledged group (uncontended but for a
    /// registration), so that a watch registered while a group is acknowledged either is
    /// moved by it or starts beyond it.
    watches: parking_lot::Mutex<Vec<TypeWatch>>,
}

/// The aggregate types of one watch, and its sender.
type TypeWatch = (Box<[String]>, tokio::sync::watch::Sender<Position>);

impl TypeWatches {
    /// A new watch of `aggregate_types`, starting at `written()` (read under the lock
    /// [`TypeWatches::moved`] takes: the last position written, which covers every group whose
    /// move came before this registration).
    pub(crate) fn watch(
        &self,
        aggregate_types: &[String],
        written: impl FnOnce() -> Position,
    ) -> HeadWatch {
        let mut watches = self.watches.lock();
        let (tx, rx) = tokio::sync::watch::channel(written());
        watches.push((aggregate_types.into(), tx));
        rx
    }

    /// Events were acknowledged up to `head`, of the aggregate types for which `acknowledged`
    /// is true: moves every watch of one of them to `head`, and forgets the watches nobody
    /// holds any more.
    pub(crate) fn moved(&self, acknowledged: impl Fn(&str) -> bool, head: Position) {
        let mut watches = self.watches.lock();
        if watches.is_empty() {
            return;
        }
        watches.retain(|(_, tx)| !tx.is_closed());
        for (types, tx) in watches.iter() {
            if types.iter().any(|t| acknowledged(t)) {
                tx.send_if_modified(|at| {
                    let forward = head > *at;
                    *at = (*at).max(head);
                    forward
                });
            }
        }
    }
}

/// Checks what any backend refuses before queueing an append: an empty event list, too many
/// events, an outcome without a command id, a command key that disagrees with the metadata.
pub(crate) fn validate_append(request: &AppendRequest) -> Result<(), AppendError> {
    let invalid = |reason| {
        Err(AppendError::Invalid {
            stream: request.stream.clone(),
            reason,
        })
    };
    match &request.kind {
        AppendKind::Events(events) if events.is_empty() => {
            invalid("an append needs at least one event")
        }
        AppendKind::Events(events) if u32::try_from(events.len()).is_err() => {
            invalid("too many events")
        }
        AppendKind::Rejection(_) | AppendKind::NoEvents if request.command.is_none() => {
            invalid("only a command with a command id records an outcome without events")
        }
        _ if request.command.is_some() != request.meta.command_id.is_some() => {
            invalid("command key and metadata command id disagree")
        }
        _ => Ok(()),
    }
}

/// Which backend a runtime opens, and its options: what [`Runtime::open`](crate::Runtime::open)
/// and the service's configuration choose between.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreOptions {
    /// The embedded sled store (the default).
    Sled(SledOptions),
    /// A PostgreSQL database, which several nodes can share.
    #[cfg(feature = "postgres")]
    Postgres(PgOptions),
}

impl StoreOptions {
    /// Opens the chosen backend: its log and its state store.
    pub fn open(&self) -> Result<Stores, StoreError> {
        match self {
            StoreOptions::Sled(options) => options.open(),
            #[cfg(feature = "postgres")]
            StoreOptions::Postgres(options) => options.open(),
        }
    }

    /// Sets the observer told about every batch the journal commits, whichever the backend.
    #[must_use]
    pub fn with_batch_observer(self, observer: BatchObserver) -> StoreOptions {
        match self {
            StoreOptions::Sled(options) => {
                StoreOptions::Sled(options.with_batch_observer(observer))
            }
            #[cfg(feature = "postgres")]
            StoreOptions::Postgres(options) => {
                StoreOptions::Postgres(options.with_batch_observer(observer))
            }
        }
    }

    /// The sled options, when sled is the backend.
    pub fn sled(&self) -> Option<&SledOptions> {
        match self {
            StoreOptions::Sled(options) => Some(options),
            #[cfg(feature = "postgres")]
            StoreOptions::Postgres(_) => None,
        }
    }

    /// The PostgreSQL options, when PostgreSQL is the backend.
    #[cfg(feature = "postgres")]
    pub fn postgres(&self) -> Option<&PgOptions> {
        match self {
            StoreOptions::Postgres(options) => Some(options),
            StoreOptions::Sled(_) => None,
        }
    }
}

impl From<SledOptions> for StoreOptions {
    fn from(options: SledOptions) -> Self {
        StoreOptions::Sled(options)
    }
}

#[cfg(feature = "postgres")]
impl From<PgOptions> for StoreOptions {
    fn from(options: PgOptions) -> Self {
        StoreOptions::Postgres(options)
    }
}

/// The two halves of a backend, as a runtime runs on them: the log and the read side's state,
/// over the same storage engine (so that the log's syncs cover the state's commits).
#[derive(Debug, Clone)]
pub struct Stores {
    /// The event log.
    pub log: Arc<dyn EventStore>,
    /// The read side's state.
    pub state: Arc<dyn StateStore>,
}

impl Stores {
    /// A log with a read side kept in memory ([`MemoryState`]): checkpoints and views start
    /// empty at every start, so the read side is rebuilt from the log each time.
    pub fn with_memory_state(log: Arc<dyn EventStore>) -> Stores {
        Stores {
            log,
            state: MemoryState::new(),
        }
    }
}
