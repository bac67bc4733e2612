//! The PostgreSQL backend: the log ([`PgStore`]) and the read side's state ([`PgState`]) in one
//! PostgreSQL database, so that several nodes can share them.
//!
//! # Positions: dense, in commit order, without the sequence-gap hole
//! A `bigserial` position is handed out at insert time but becomes visible at commit, so a
//! reader that saw position 101 committed may never see 100, committed later: the classic hole
//! of event stores on PostgreSQL (Marten, Eventuous, Axon and others fight it with gap
//! detection and timeouts). Here positions come from one row, `annals_head`, updated by every
//! commit that writes events, *after* its version checks and just before its inserts; the row
//! lock is held until the commit. So commits that write events are serialized through their
//! commit, positions are given out in commit order, and a rolled-back transaction gives its
//! positions back (the next one takes the same numbers). A reader that sees position `p` sees
//! every position below it, with a plain `position > checkpoint` query: positions stay dense
//! `u64`s, and the API (`Last-Event-ID`, `min_position`, `/v1/events?after=`) is the same as
//! on sled.
//!
//! The cost is one commit at a time across all nodes for the part of the transaction after
//! the head update (the event inserts and the commit's WAL flush). Group commit is what makes
//! it cheap: each node writes its concurrent commands in one transaction per batch, so the
//! serialized section is taken once per batch, not per command. The alternative studied —
//! transaction ids (`xid8`) and `pg_snapshot_xmin` — lets writers overlap but makes positions
//! `(xid, n)` pairs, stalls every reader behind any long writing transaction in the cluster,
//! and can invert two events of one stream written by overlapping batches.
//!
//! # Appends: group commit with the checks in the database
//! [`EventStore::append`] queues the request (bounded: [`PgOptions::queue_capacity`], then
//! [`StoreError::Overloaded`]); one writer task per node takes up to
//! [`PgOptions::batch_appends_max`] queued appends and commits them in one transaction:
//! 1. lock the rows of the batch's streams (`SELECT … FOR UPDATE`, in key order, so two nodes
//!    never deadlock on them) and read the command ids already used;
//! 2. decide each append in queue order against those versions and ids (an append may build on
//!    an earlier one of the same batch): accepted, or refused with
//!    [`AppendError::Conflict`]/[`AppendError::CommandIdUsed`];
//! 3. write the new stream versions, take the positions (`annals_head`), insert the events and
//!    the command outcomes, and commit with `synchronous_commit = on` (set on every session):
//!    the commit returns once the WAL is flushed, and only then are the appends acknowledged.
//!
//! A stream created by two nodes at once has no row to lock; the unique key on (stream,
//! version) makes the later transaction fail, and the writer redoes the whole batch, which then
//! sees the other node's commit and refuses the conflicting append. The same holds for a
//! command id used on two nodes at once. A batch whose commit fails for another reason is
//! answered with the error ([`StoreError::Io`]): a failure before the commit wrote nothing,
//! one *during* the commit has an unknown outcome, and the aggregate actor that sent it stops
//! and reloads from the database on its next command.
//!
//! # Reads
//! The [`EventStore`] and [`StateStore`](crate::store::StateStore) traits are synchronous: a call runs its query on the
//! backend's own Tokio runtime (a pool of [`PgOptions::pool_size`] connections) and blocks the
//! calling thread until it answers, as a sled read blocks on the disk.
//!
//! # Head and health
//! The head position and [`EventStore::watch_head`] follow this node's commits at once, and
//! other nodes' commits through a poll of `annals_head` every [`PgOptions::poll_interval`].
//! A poll that fails makes [`EventStore::health`] report the database unreachable (the
//! service's `/readyz` answers 503) until one succeeds again.

pub mod lease;
mod schema;
mod state;
mod writer;

pub use self::schema::SCHEMA_VERSION;
pub use self::state::PgState;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_postgres::Row;

use crate::envelope::{CommitMeta, EncodedPayload, RecordedEvent};
use crate::store::{
    AppendError, AppendRequest, AppendTicket, EventStore, Fingerprint, HeadWatch, JournalStats,
    Snapshot, StoreError, StoreHealth, StoredOutcome, Stores,
};
use crate::types::{CommandId, Position, StreamId, Timestamp, Version};

/// Options of the PostgreSQL backend.
#[derive(Clone)]
#[non_exhaustive]
pub struct PgOptions {
    /// The connection URL (`postgres://user:password@host:port/database`, or the key=value
    /// form). `synchronous_commit` is set `on` for every session whatever the URL says.
    pub url: String,
    /// The schema that holds Annals' tables (created if missing); several stores can share one
    /// database under different schemas.
    pub schema: String,
    /// Connections in the pool (reads, the read side's commits, and the writer's one).
    pub pool_size: NonZeroUsize,
    /// Most appends waiting for the writer; beyond it, appends are refused with
    /// [`StoreError::Overloaded`].
    pub queue_capacity: NonZeroUsize,
    /// Most appends committed in one transaction.
    pub batch_appends_max: NonZeroUsize,
    /// How long to wait for a connection (and to establish one) before a call fails.
    pub connect_timeout: Duration,
    /// How often the head is read from the database, to see other nodes' commits.
    pub poll_interval: Duration,
    /// This node's name among the nodes sharing the database (shown as the owner of the
    /// subscribers it runs). Default: the host name and the process id.
    pub node_id: String,
    /// How long a node that stops answering (paused, cut off) keeps the subscribers it owns:
    /// the database ends its lease session once it has been silent this long, and another
    /// node takes them over. The node renews it four times per period.
    pub lease_timeout: Duration,
    /// Hooks for tests: hold the writer's next transaction open before its commit.
    pub hooks: Arc<PgHooks>,
    /// Told about every batch the writer commits (for metrics); `None`: nobody is.
    pub batch_observer: Option<crate::store::BatchObserver>,
}

/// Test hooks of the writer, after the sled backend's fault injection: a test arms a gate and
/// the writer's next transaction that writes events stops just before `COMMIT` — its positions
/// taken, its rows inserted — until the test lets it commit or roll back. This is how the
/// ordering tests hold a transaction open through the real append path.
#[derive(Debug, Default)]
pub struct PgHooks {
    gate: Mutex<Option<GateInner>>,
}

#[derive(Debug)]
struct GateInner {
    held: tokio::sync::oneshot::Sender<()>,
    verdict: tokio::sync::oneshot::Receiver<bool>,
}

/// The test's side of an armed gate (see [`PgHooks::hold_next_commit`]).
#[derive(Debug)]
pub struct CommitGate {
    held: Option<tokio::sync::oneshot::Receiver<()>>,
    verdict: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl PgHooks {
    /// Arms the gate: the writer's next transaction that writes events waits before its
    /// commit until the returned gate says what to do.
    pub fn hold_next_commit(&self) -> CommitGate {
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let (verdict_tx, verdict_rx) = tokio::sync::oneshot::channel();
        *self.gate.lock() = Some(GateInner {
            held: held_tx,
            verdict: verdict_rx,
        });
        CommitGate {
            held: Some(held_rx),
            verdict: Some(verdict_tx),
        }
    }

    /// The armed gate, taken by the writer.
    fn take(&self) -> Option<GateInner> {
        self.gate.lock().take()
    }
}

impl CommitGate {
    /// Blocks until the writer's transaction is waiting at the gate (it holds the head row).
    pub fn wait_until_held(&mut self) {
        if let Some(held) = self.held.take() {
            let _ = futures::executor::block_on(held);
        }
    }

    /// Lets the held transaction commit.
    pub fn commit(mut self) {
        if let Some(verdict) = self.verdict.take() {
            let _ = verdict.send(true);
        }
    }

    /// Makes the held transaction roll back: its appends are refused, nothing of it is written.
    pub fn roll_back(mut self) {
        if let Some(verdict) = self.verdict.take() {
            let _ = verdict.send(false);
        }
    }
}

impl Drop for CommitGate {
    fn drop(&mut self) {
        // A gate dropped without a verdict lets the transaction commit.
        if let Some(verdict) = self.verdict.take() {
            let _ = verdict.send(true);
        }
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show where it points, not what it holds.
        f.debug_struct("PgOptions")
            .field("url", &redacted_url(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("queue_capacity", &self.queue_capacity)
            .field("batch_appends_max", &self.batch_appends_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("node_id", &self.node_id)
            .field("lease_timeout", &self.lease_timeout)
            .finish_non_exhaustive()
    }
}

/// Default schema.
pub const SCHEMA_DEFAULT: &str = "annals";
/// Default pool size.
pub const POOL_SIZE_DEFAULT: usize = 8;
/// Default queue bound.
pub const QUEUE_CAPACITY_DEFAULT: usize = 16_384;
/// Default batch bound.
pub const BATCH_APPENDS_MAX_DEFAULT: usize = 2048;
/// Default connection timeout.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default head poll interval.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(50);
/// Default lease timeout.
pub const LEASE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// `{host name}-{process id}`.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string());
    format!("{host}-{}", std::process::id())
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

impl PgOptions {
    /// Defaults for the database at `url`.
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            schema: SCHEMA_DEFAULT.to_string(),
            pool_size: nonzero(POOL_SIZE_DEFAULT),
            queue_capacity: nonzero(QUEUE_CAPACITY_DEFAULT),
            batch_appends_max: nonzero(BATCH_APPENDS_MAX_DEFAULT),
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            poll_interval: POLL_INTERVAL_DEFAULT,
            node_id: default_node_id(),
            lease_timeout: LEASE_TIMEOUT_DEFAULT,
            hooks: Arc::default(),
            batch_observer: None,
        }
    }

    /// Sets the observer told about every committed batch (see
    /// [`BatchObserver`](crate::store::BatchObserver)).
    #[must_use]
    pub fn with_batch_observer(mut self, observer: crate::store::BatchObserver) -> PgOptions {
        self.batch_observer = Some(observer);
        self
    }

    /// Sets the schema.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> PgOptions {
        self.schema = schema.into();
        self
    }

    /// Sets the node id.
    #[must_use]
    pub fn with_node_id(mut self, node_id: impl Into<String>) -> PgOptions {
        self.node_id = node_id.into();
        self
    }

    /// Sets the lease timeout.
    #[must_use]
    pub fn with_lease_timeout(mut self, timeout: Duration) -> PgOptions {
        self.lease_timeout = timeout;
        self
    }

    /// Sets the pool size.
    #[must_use]
    pub fn with_pool_size(mut self, size: NonZeroUsize) -> PgOptions {
        self.pool_size = size;
        self
    }

    /// Opens the store: the log and its state store.
    pub fn open(&self) -> Result<Stores, StoreError> {
        Ok(PgStore::open(self.clone())?.into_stores())
    }
}

/// Removes the schema `options` names, with every table in it: all the data of that store.
/// For tests and for tearing down a store on purpose; refuses the `public` schema.
pub fn drop_schema(options: &PgOptions) -> Result<(), StoreError> {
    if options.schema == "public" {
        return Err(StoreError::Config {
            reason: "refusing to drop the schema \"public\"".to_string(),
        });
    }
    let pg = Pg::connect(options)?;
    let schema_name = options.schema.clone();
    pg.block({
        let pg = pg.clone();
        async move {
            let client = pg.client().await?;
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema_name}\" CASCADE"))
                .await
                .map_err(|e| db_error("dropping a schema", &e))
        }
    })
}

/// The URL with any password replaced, for messages and logs.
pub fn redacted_url(url: &str) -> String {
    // postgres://user:password@host/…: hide what is between the first ':' after the scheme
    // and the '@'.
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let scheme = &url[..url.len() - rest.len()];
        if let Some(at) = rest.find('@') {
            let (user_info, host) = rest.split_at(at);
            if let Some(colon) = user_info.find(':') {
                return format!("{scheme}{}:***{host}", &user_info[..colon]);
            }
        }
        return url.to_string();
    }
    // key=value form: hide the value of `password=`.
    url.split_whitespace()
        .map(|part| {
            if part.starts_with("password=") {
                "password=***"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A database error as a [`StoreError`]: the operation and PostgreSQL's own message (with its
/// detail, when there is one).
pub(crate) fn db_error(op: &'static str, e: &tokio_postgres::Error) -> StoreError {
    let reason = match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    };
    StoreError::Io { op, reason }
}

fn pool_error(e: &deadpool_postgres::PoolError) -> StoreError {
    let reason = match e {
        deadpool_postgres::PoolError::Backend(e) => {
            return db_error("connecting to PostgreSQL", e);
        }
        deadpool_postgres::PoolError::Timeout(_) => {
            "no connection became free in time (all in use, or the database does not answer)"
                .to_string()
        }
        other => other.to_string(),
    };
    StoreError::Io {
        op: "connecting to PostgreSQL",
        reason,
    }
}

/// What the log, the state store and the writer share: the runtime their queries run on, and
/// the connection pool.
pub(crate) struct Pg {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    pool: deadpool_postgres::Pool,
    /// The sessions' configuration, for connections outside the pool (the lease session).
    config: tokio_postgres::Config,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl Pg {
    fn connect(options: &PgOptions) -> Result<Arc<Pg>, StoreError> {
        if !schema::valid_schema_name(&options.schema) {
            return Err(StoreError::Config {
                reason: format!(
                    "invalid PostgreSQL schema name {:?}: use lower-case letters, digits and '_', \
                     not starting with a digit, at most 63 bytes",
                    options.schema
                ),
            });
        }
        let mut config: tokio_postgres::Config =
            options.url.parse().map_err(|e| StoreError::Config {
                reason: format!("invalid PostgreSQL URL {}: {e}", redacted_url(&options.url)),
            })?;
        // A node that stops in the middle of a transaction (paused, cut off) must not hold
        // its row locks — the head row, a subscriber's owner row — longer than its lease: the
        // server ends such a transaction after the lease timeout, and the others go on.
        let idle_ms = options.lease_timeout.as_millis().max(1);
        config.options(format!(
            "-c synchronous_commit=on -c search_path={} -c idle_in_transaction_session_timeout={idle_ms}",
            options.schema
        ));
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("annals");
        }
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(options.pool_size.get())
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| StoreError::Config {
                reason: format!("cannot build the PostgreSQL connection pool: {e}"),
            })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("annals-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io {
                op: "starting the PostgreSQL backend's threads",
                reason: e.to_string(),
            })?;
        Ok(Arc::new(Pg {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            pool,
            config,
        }))
    }

    /// Runs `work` on the backend's runtime and waits for it on this thread. Must not be
    /// called from the backend's own runtime (nothing in it does).
    ///
    /// The answer comes back through a plain channel, not by polling the task's `JoinHandle`:
    /// a caller on an actor's thread runs inside that thread's Tokio runtime, and a
    /// `JoinHandle` polled there draws on the actor task's cooperative budget. Once an actor
    /// has made enough calls in one poll (a projection's page of reads), the handle answers
    /// "not yet" and defers its wake-up to that runtime's scheduler, which never runs again
    /// while this thread waits: the call would hang for good.
    pub(crate) fn block<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = answer.send(work.await);
        });
        answered.recv().map_err(|_| StoreError::Io {
            op: "running a database call",
            reason: "the call ended without an answer (the backend is shutting down)".to_string(),
        })?
    }

    /// A connection from the pool.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| pool_error(&e))
    }

    /// Connections open and in use, for metrics.
    pub(crate) fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.pool.close();
        // Dropping a runtime waits for its tasks, which must not happen on a thread that
        // drives async code (an actor's): let them end in the background.
        if let Some(runtime) = self.runtime.lock().take() {
            runtime.shutdown_background();
        }
    }
}

/// The PostgreSQL log. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pg: Arc<Pg>,
    jobs: tokio::sync::mpsc::Sender<writer::Job>,
    shared: Arc<Shared>,
    options: PgOptions,
    state: Arc<PgState>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Committed batches' transaction times (see [`PgStore::commit_times`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitTimes {
    /// Batches committed.
    pub batches: u64,
    /// Their transaction times, summed.
    pub total: Duration,
    /// The longest.
    pub max: Duration,
}

/// What the store, the writer and the head poller share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) head: tokio::sync::watch::Sender<Position>,
    pub(crate) closed: AtomicBool,
    /// Why the database cannot be reached, when the last poll failed.
    pub(crate) unreachable: Mutex<Option<Arc<str>>>,
    pub(crate) appends: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) batch_appends_max: AtomicU64,
    /// Batches redone after another node's concurrent commit broke a unique key.
    pub(crate) retries: AtomicU64,
    /// Committed batches' transaction times (begin to commit returned), in microseconds: sum
    /// and largest.
    pub(crate) commit_micros_total: AtomicU64,
    pub(crate) commit_micros_max: AtomicU64,
    pub(crate) batch_observer: Option<crate::store::BatchObserver>,
}

impl Shared {
    /// Raises the head to `position` (never lowers it).
    pub(crate) fn advance_head(&self, position: Position) {
        self.head.send_if_modified(|head| {
            let moved = position > *head;
            if moved {
                *head = position;
            }
            moved
        });
    }
}

impl PgStore {
    /// Connects, migrates the schema, and starts the writer and the head poller.
    pub fn open(options: PgOptions) -> Result<PgStore, StoreError> {
        let pg = Pg::connect(&options)?;
        let schema_name = options.schema.clone();
        let head = pg.block({
            let pg = pg.clone();
            async move {
                let mut client = pg.client().await?;
                let tx = client
                    .transaction()
                    .await
                    .map_err(|e| db_error("starting the migration", &e))?;
                schema::migrate(&tx, &schema_name).await?;
                tx.commit()
                    .await
                    .map_err(|e| db_error("committing the migration", &e))?;
                read_head(&client).await
            }
        })?;
        let shared = Arc::new(Shared {
            head: tokio::sync::watch::Sender::new(head),
            closed: AtomicBool::new(false),
            unreachable: Mutex::new(None),
            appends: AtomicU64::new(0),
            events: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_appends_max: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            commit_micros_total: AtomicU64::new(0),
            commit_micros_max: AtomicU64::new(0),
            batch_observer: options.batch_observer.clone(),
        });
        let (jobs, queue) = tokio::sync::mpsc::channel(options.queue_capacity.get());
        let writer = pg.handle.spawn(writer::run(
            pg.clone(),
            shared.clone(),
            queue,
            options.batch_appends_max.get(),
            options.hooks.clone(),
        ));
        let poller = pg
            .handle
            .spawn(poll_head(pg.clone(), shared.clone(), options.poll_interval));
        let state = Arc::new(PgState::new(
            pg.clone(),
            lease::Leases::new(
                pg.clone(),
                &options.node_id,
                &options.schema,
                options.lease_timeout,
            ),
        ));
        tracing::info!(url = %redacted_url(&options.url), schema = %options.schema, head = %head, "opened the PostgreSQL store");
        Ok(PgStore {
            inner: Arc::new(Inner {
                pg,
                jobs,
                shared,
                options,
                state,
                writer: Mutex::new(Some(writer)),
                poller: Mutex::new(Some(poller)),
            }),
        })
    }

    /// The read side's state store, in the same database.
    pub fn state(&self) -> Arc<PgState> {
        self.inner.state.clone()
    }

    /// The log and its state store, as a runtime runs on them.
    pub fn into_stores(self) -> Stores {
        let state = self.state();
        Stores {
            log: Arc::new(self),
            state,
        }
    }

    /// The options it was opened with.
    pub fn options(&self) -> &PgOptions {
        &self.inner.options
    }

    /// Connections of the pool: (open, free, waiting for one), for metrics.
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let status = self.inner.pg.pool_status();
        (status.size, status.available, status.waiting)
    }

    /// Batches redone because another node's concurrent commit took a stream version or a
    /// command id first.
    pub fn batch_retries(&self) -> u64 {
        self.inner.shared.retries.load(Ordering::Relaxed)
    }

    /// The committed batches' transaction times since the store opened, for metrics: how many
    /// (the journal's batch count), their sum and the longest.
    pub fn commit_times(&self) -> CommitTimes {
        let shared = &self.inner.shared;
        CommitTimes {
            batches: shared.batches.load(Ordering::Relaxed),
            total: Duration::from_micros(shared.commit_micros_total.load(Ordering::Relaxed)),
            max: Duration::from_micros(shared.commit_micros_max.load(Ordering::Relaxed)),
        }
    }

    /// The stored outcomes of commands that wrote no event — rejections and accepted commands
    /// without events — in command-id order (bytes, as on sled), from the first id after
    /// `after`, at most `limit`: what an export carries beside the events.
    pub fn outcomes_without_events(
        &self,
        after: Option<&CommandId>,
        limit: usize,
    ) -> Result<Vec<(CommandId, StoredOutcome)>, StoreError> {
        let after = after.map(|id| id.as_str().to_string());
        let limit = limit_param(limit);
        self.query(move |client| async move {
            let rows = client
                .query(
                    &prepared(
                        &client,
                        "SELECT command_id, fingerprint, outcome, aggregate_type, aggregate_id, \
                                version, rejection \
                         FROM annals_commands \
                         WHERE outcome <> 0 \
                           AND ($1::text IS NULL OR command_id COLLATE \"C\" > $1::text COLLATE \"C\") \
                         ORDER BY command_id COLLATE \"C\" LIMIT $2",
                    )
                    .await?,
                    &[&after, &limit],
                )
                .await
                .map_err(|e| db_error("listing command outcomes", &e))?;
            rows.iter()
                .map(|row| {
                    let id: String = get(row, 0, "annals_commands.command_id")?;
                    let command_id =
                        CommandId::new(id.as_str()).map_err(|e| StoreError::Corrupt {
                            what: format!("command id {id:?}"),
                            reason: e.to_string(),
                        })?;
                    let outcome = outcome_without_events(row, &id)?;
                    Ok((command_id, outcome))
                })
                .collect()
        })
    }

    /// Restores a rejection or no-event outcome read from an export (`annals import`), with
    /// the version it was recorded at; refused if the command id is already used.
    pub fn restore_outcome(
        &self,
        id: &CommandId,
        outcome: &StoredOutcome,
    ) -> Result<(), AppendError> {
        let (kind, stream, fingerprint, version, rejection) = match outcome {
            StoredOutcome::Committed { .. } => {
                return Err(AppendError::Store(StoreError::Config {
                    reason: "a committed outcome is restored by importing its events".into(),
                }))
            }
            StoredOutcome::Rejected {
                stream,
                fingerprint,
                version,
                rejection,
            } => (
                writer::OUTCOME_REJECTED,
                stream,
                fingerprint,
                version,
                Some(rejection.clone()),
            ),
            StoredOutcome::NoEvents {
                stream,
                fingerprint,
                version,
            } => (
                writer::OUTCOME_NO_EVENTS,
                stream,
                fingerprint,
                version,
                None,
            ),
        };
        if let Some(used) = self.command_outcome(id)? {
            return Err(AppendError::CommandIdUsed {
                id: id.clone(),
                same_command: used.fingerprint() == outcome.fingerprint(),
            });
        }
        let (command_id, aggregate_type, aggregate_id) = (
            id.as_str().to_string(),
            stream.aggregate_type().to_string(),
            stream.aggregate_id().to_string(),
        );
        let fingerprint = fingerprint.0.to_vec();
        let version = to_i64(version.0)?;
        self.query(move |client| async move {
            client
                .execute(
                    "INSERT INTO annals_commands (command_id, fingerprint, outcome, \
                       aggregate_type, aggregate_id, version, first_position, event_count, \
                       rejection) \
                     VALUES ($1, $2, $3, $4, $5, $6, NULL, 0, $7)",
                    &[
                        &command_id,
                        &fingerprint,
                        &kind,
                        &aggregate_type,
                        &aggregate_id,
                        &version,
                        &rejection,
                    ],
                )
                .await
                .map_err(|e| db_error("restoring a command outcome", &e))?;
            Ok(())
        })?;
        Ok(())
    }

    /// Subscribers this node owns now, and how many times it took ownership since it opened.
    pub fn ownership(&self) -> (usize, u64) {
        self.inner.state.ownership()
    }

    fn query<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send,
    {
        if self.inner.shared.closed.load(Ordering::Acquire) && self.inner.pg.pool.is_closed() {
            return Err(StoreError::Closed);
        }
        let pg = self.inner.pg.clone();
        self.inner.pg.block(async move {
            let client = pg.client().await?;
            work(client).await
        })
    }
}

/// A statement prepared once per connection (the pool keeps a cache per connection): a read
/// then costs one round trip, not two (prepare, then execute).
pub(crate) async fn prepared(
    client: &deadpool_postgres::Object,
    sql: &str,
) -> Result<tokio_postgres::Statement, StoreError> {
    client
        .prepare_cached(sql)
        .await
        .map_err(|e| db_error("preparing a query", &e))
}

async fn read_head(client: &deadpool_postgres::Object) -> Result<Position, StoreError> {
    let row = client
        .query_one(
            &prepared(client, "SELECT position FROM annals_head WHERE id = 1").await?,
            &[],
        )
        .await
        .map_err(|e| db_error("reading the head position", &e))?;
    Ok(Position(to_u64(get(&row, 0, "annals_head.position")?)?))
}

/// Reads the head every `interval`, for other nodes' commits, and records whether the
/// database answers.
async fn poll_head(pg: Arc<Pg>, shared: Arc<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let polled = async {
            let client = pg.client().await?;
            read_head(&client).await
        };
        match tokio::time::timeout(interval.max(Duration::from_secs(1)) * 5, polled).await {
            Ok(Ok(head)) => {
                shared.advance_head(head);
                if shared.unreachable.lock().take().is_some() {
                    tracing::info!("the PostgreSQL database answers again");
                }
            }
            Ok(Err(e)) => note_unreachable(&shared, &e.to_string()),
            Err(_) => note_unreachable(&shared, "the database did not answer in time"),
        }
    }
}

fn note_unreachable(shared: &Shared, reason: &str) {
    let mut unreachable = shared.unreachable.lock();
    if unreachable.is_none() {
        tracing::warn!(reason, "the PostgreSQL database cannot be reached");
    }
    *unreachable = Some(Arc::from(reason));
}

/// A column, typed, or a [`StoreError::Corrupt`] naming it (never a panic).
pub(crate) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
    what: &str,
) -> Result<T, StoreError> {
    row.try_get(index).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn to_u64(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        what: "a stored number".to_string(),
        reason: format!("{value} is negative"),
    })
}

pub(crate) fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Io {
        op: "encoding a number for PostgreSQL",
        reason: format!("{value} is beyond PostgreSQL's bigint"),
    })
}

/// A rejection or no-event outcome from a row of `command_id, fingerprint, outcome,
/// aggregate_type, aggregate_id, version, rejection`.
fn outcome_without_events(row: &Row, id: &str) -> Result<StoredOutcome, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        what: format!("the outcome of command {id}"),
        reason,
    };
    let fingerprint = fingerprint_of(row, id)?;
    let stream = StreamId::stored(
        get::<String>(row, 3, "annals_commands.aggregate_type")?,
        get::<String>(row, 4, "annals_commands.aggregate_id")?,
    )
    .map_err(|e| corrupt(e.to_string()))?;
    let version = Version(to_u64(get(row, 5, "annals_commands.version")?)?);
    match get::<i16>(row, 2, "annals_commands.outcome")? {
        writer::OUTCOME_REJECTED => Ok(StoredOutcome::Rejected {
            stream,
            fingerprint,
            version,
            rejection: get::<Option<Vec<u8>>>(row, 6, "annals_commands.rejection")?
                .unwrap_or_default(),
        }),
        writer::OUTCOME_NO_EVENTS => Ok(StoredOutcome::NoEvents {
            stream,
            fingerprint,
            version,
        }),
        other => Err(corrupt(format!("unexpected outcome kind {other}"))),
    }
}

/// The fingerprint in column 1 of a row of `annals_commands`.
fn fingerprint_of(row: &Row, id: &str) -> Result<Fingerprint, StoreError> {
    let bytes: &[u8] = get(row, 1, "annals_commands.fingerprint")?;
    bytes
        .try_into()
        .map(Fingerprint)
        .map_err(|_| StoreError::Corrupt {
            what: format!("the outcome of command {id}"),
            reason: "the fingerprint is not 16 bytes".to_string(),
        })
}

/// The columns of an event, in the order [`event_from_row`] reads them.
const EVENT_COLUMNS: &str = "position, aggregate_type, aggregate_id, version, event_id, \
     event_type, schema_version, payload, recorded_at, command_id, correlation_id, causation_id";

/// Builds events from rows, sharing one metadata value between consecutive rows of one commit.
fn events_from_rows(rows: &[Row]) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut out: Vec<RecordedEvent> = Vec::with_capacity(rows.len());
    for row in rows {
        let mut event = event_from_row(row)?;
        if let Some(previous) = out.last() {
            if previous.meta == event.meta {
                event.meta = previous.meta.clone();
            }
        }
        out.push(event);
    }
    Ok(out)
}

fn event_from_row(row: &Row) -> Result<RecordedEvent, StoreError> {
    let corrupt = |what: &str, reason: String| StoreError::Corrupt {
        what: what.to_string(),
        reason,
    };
    let position = Position(to_u64(get(row, 0, "annals_events.position")?)?);
    let aggregate_type: String = get(row, 1, "annals_events.aggregate_type")?;
    let aggregate_id: String = get(row, 2, "annals_events.aggregate_id")?;
    let stream = StreamId::stored(aggregate_type, aggregate_id).map_err(|e| {
        corrupt(
            &format!("the stream of the event at {position}"),
            e.to_string(),
        )
    })?;
    let command_id: Option<String> = get(row, 9, "annals_events.command_id")?;
    let command_id = command_id.map(CommandId::new).transpose().map_err(|e| {
        corrupt(
            &format!("the command id of the event at {position}"),
            e.to_string(),
        )
    })?;
    let schema_version: i32 = get(row, 6, "annals_events.schema_version")?;
    Ok(RecordedEvent {
        event_id: get(row, 4, "annals_events.event_id")?,
        stream,
        version: Version(to_u64(get(row, 3, "annals_events.version")?)?),
        position,
        event_type: Arc::from(get::<&str>(row, 5, "annals_events.event_type")?),
        schema_version: u16::try_from(schema_version).map_err(|_| {
            corrupt(
                &format!("the schema version of the event at {position}"),
                format!("{schema_version} is out of range"),
            )
        })?,
        meta: Arc::new(CommitMeta {
            recorded_at: Timestamp(to_u64(get(row, 8, "annals_events.recorded_at")?)?),
            command_id,
            correlation_id: get::<Option<&str>>(row, 10, "annals_events.correlation_id")?
                .map(Arc::from),
            causation_id: get::<Option<&str>>(row, 11, "annals_events.causation_id")?
                .map(Arc::from),
        }),
        payload: EncodedPayload(get(row, 7, "annals_events.payload")?),
    })
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A bound of a query (a version or position to read from or up to): one beyond `bigint`
/// means "no bound", which `i64::MAX` says as well, since nothing stored is above it.
fn bound_param(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl EventStore for PgStore {
    fn append(&self, request: AppendRequest) -> AppendTicket {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return AppendTicket::ready(Err(StoreError::Closed.into()));
        }
        if let Err(e) = crate::store::validate_append(&request) {
            return AppendTicket::ready(Err(e));
        }
        let (reply, ticket) = AppendTicket::pending();
        match self
            .inner
            .jobs
            .try_send(writer::Job::Append(request, reply))
        {
            Ok(()) => ticket,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                AppendTicket::ready(Err(AppendError::Store(StoreError::Overloaded {
                    capacity: self.inner.options.queue_capacity.get(),
                })))
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
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
        if limit == 0 || to.is_some_and(|to| to < from) {
            return Ok(Vec::new());
        }
        let (aggregate_type, aggregate_id) = (
            stream.aggregate_type().to_string(),
            stream.aggregate_id().to_string(),
        );
        let from = bound_param(from.0);
        let to = to.map_or(i64::MAX, |v| bound_param(v.0));
        let limit = limit_param(limit);
        self.query(move |client| async move {
            let rows = client
                .query(
                    &prepared(
                        &client,
                        &format!(
                            "SELECT {EVENT_COLUMNS} FROM annals_events \
                         WHERE aggregate_type = $1 AND aggregate_id = $2 \
                           AND version >= $3 AND version <= $4 \
                         ORDER BY version LIMIT $5"
                        ),
                    )
                    .await?,
                    &[&aggregate_type, &aggregate_id, &from, &to, &limit],
                )
                .await
                .map_err(|e| db_error("reading a stream", &e))?;
            events_from_rows(&rows)
        })
    }

    fn read_all(&self, from: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let from = bound_param(from.0);
        let limit = limit_param(limit);
        self.query(move |client| async move {
            let rows = client
                .query(
                    &prepared(
                        &client,
                        &format!(
                            "SELECT {EVENT_COLUMNS} FROM annals_events \
                         WHERE position >= $1 ORDER BY position LIMIT $2"
                        ),
                    )
                    .await?,
                    &[&from, &limit],
                )
                .await
                .map_err(|e| db_error("reading the log", &e))?;
            events_from_rows(&rows)
        })
    }

    fn stream_head(&self, stream: &StreamId) -> Result<Version, StoreError> {
        let (aggregate_type, aggregate_id) = (
            stream.aggregate_type().to_string(),
            stream.aggregate_id().to_string(),
        );
        self.query(move |client| async move {
            let row = client
                .query_opt(
                    &prepared(
                        &client,
                        "SELECT version FROM annals_streams \
                     WHERE aggregate_type = $1 AND aggregate_id = $2",
                    )
                    .await?,
                    &[&aggregate_type, &aggregate_id],
                )
                .await
                .map_err(|e| db_error("reading a stream's head", &e))?;
            match row {
                Some(row) => Ok(Version(to_u64(get(&row, 0, "annals_streams.version")?)?)),
                None => Ok(Version(0)),
            }
        })
    }

    fn stream_ids(
        &self,
        aggregate_type: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let (aggregate_type, prefix) = (aggregate_type.to_string(), prefix.to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(move |client| async move {
            let rows = client
                .query(
                    &prepared(
                        &client,
                        "SELECT aggregate_id FROM annals_streams \
                         WHERE aggregate_type = $1 AND starts_with(aggregate_id, $2) \
                         ORDER BY octet_length(aggregate_id), aggregate_id COLLATE \"C\" \
                         LIMIT $3",
                    )
                    .await?,
                    &[&aggregate_type, &prefix, &limit],
                )
                .await
                .map_err(|e| db_error("listing streams", &e))?;
            rows.iter()
                .map(|row| get::<String>(row, 0, "annals_streams.aggregate_id"))
                .collect()
        })
    }

    fn head_position(&self) -> Position {
        *self.inner.shared.head.borrow()
    }

    fn fresh_head(&self) -> Result<Position, StoreError> {
        let head = self.query(|client| async move { read_head(&client).await })?;
        self.inner.shared.advance_head(head);
        Ok(self.head_position())
    }

    fn command_outcome(&self, id: &CommandId) -> Result<Option<StoredOutcome>, StoreError> {
        let id = id.as_str().to_string();
        self.query(move |client| async move {
            let Some(row) = client
                .query_opt(
                    &prepared(
                        &client,
                        "SELECT command_id, fingerprint, outcome, aggregate_type, aggregate_id, \
                                version, rejection, first_position, event_count \
                         FROM annals_commands WHERE command_id = $1",
                    )
                    .await?,
                    &[&id],
                )
                .await
                .map_err(|e| db_error("reading a command's outcome", &e))?
            else {
                return Ok(None);
            };
            if get::<i16>(&row, 2, "annals_commands.outcome")? != writer::OUTCOME_COMMITTED {
                return outcome_without_events(&row, &id).map(Some);
            }
            let corrupt = |reason: String| StoreError::Corrupt {
                what: format!("the outcome of command {id}"),
                reason,
            };
            let fingerprint = fingerprint_of(&row, &id)?;
            let first: Option<i64> = get(&row, 7, "annals_commands.first_position")?;
            let first = first.ok_or_else(|| corrupt("no first position".to_string()))?;
            let count: i32 = get(&row, 8, "annals_commands.event_count")?;
            let rows = client
                .query(
                    &prepared(
                        &client,
                        &format!(
                            "SELECT {EVENT_COLUMNS} FROM annals_events \
                             WHERE position >= $1 AND position < $1 + $2::int ORDER BY position"
                        ),
                    )
                    .await?,
                    &[&first, &count],
                )
                .await
                .map_err(|e| db_error("reading a command's events", &e))?;
            let events = events_from_rows(&rows)?;
            if events.len() != usize::try_from(count).unwrap_or(0) {
                return Err(corrupt(format!(
                    "{count} events recorded, {} found",
                    events.len()
                )));
            }
            Ok(Some(StoredOutcome::Committed {
                fingerprint,
                events,
            }))
        })
    }

    fn save_snapshot(&self, stream: &StreamId, snapshot: &Snapshot) -> Result<(), StoreError> {
        let (aggregate_type, aggregate_id) = (
            stream.aggregate_type().to_string(),
            stream.aggregate_id().to_string(),
        );
        let version = to_i64(snapshot.version.0)?;
        let schema_version = i64::from(snapshot.schema_version);
        let taken_at = to_i64(snapshot.taken_at.0)?;
        let state = snapshot.state.clone();
        self.query(move |client| async move {
            client
                .execute(
                    "INSERT INTO annals_snapshots \
                       (aggregate_type, aggregate_id, version, schema_version, taken_at, state) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (aggregate_type, aggregate_id, version) DO UPDATE \
                       SET schema_version = EXCLUDED.schema_version, \
                           taken_at = EXCLUDED.taken_at, state = EXCLUDED.state",
                    &[
                        &aggregate_type,
                        &aggregate_id,
                        &version,
                        &schema_version,
                        &taken_at,
                        &state,
                    ],
                )
                .await
                .map_err(|e| db_error("saving a snapshot", &e))?;
            Ok(())
        })
    }

    fn load_snapshot(
        &self,
        stream: &StreamId,
        at_or_below: Version,
    ) -> Result<Option<Snapshot>, StoreError> {
        let (aggregate_type, aggregate_id) = (
            stream.aggregate_type().to_string(),
            stream.aggregate_id().to_string(),
        );
        let at_or_below = bound_param(at_or_below.0);
        self.query(move |client| async move {
            let Some(row) = client
                .query_opt(
                    &prepared(
                        &client,
                        "SELECT version, schema_version, taken_at, state FROM annals_snapshots \
                     WHERE aggregate_type = $1 AND aggregate_id = $2 AND version <= $3 \
                     ORDER BY version DESC LIMIT 1",
                    )
                    .await?,
                    &[&aggregate_type, &aggregate_id, &at_or_below],
                )
                .await
                .map_err(|e| db_error("loading a snapshot", &e))?
            else {
                return Ok(None);
            };
            let schema_version: i64 = get(&row, 1, "annals_snapshots.schema_version")?;
            Ok(Some(Snapshot {
                version: Version(to_u64(get(&row, 0, "annals_snapshots.version")?)?),
                schema_version: u32::try_from(schema_version).map_err(|_| StoreError::Corrupt {
                    what: "a snapshot's schema version".to_string(),
                    reason: format!("{schema_version} is out of range"),
                })?,
                taken_at: Timestamp(to_u64(get(&row, 2, "annals_snapshots.taken_at")?)?),
                state: get(&row, 3, "annals_snapshots.state")?,
            }))
        })
    }

    fn stats(&self) -> JournalStats {
        let shared = &self.inner.shared;
        let batches = shared.batches.load(Ordering::Relaxed);
        JournalStats {
            appends: shared.appends.load(Ordering::Relaxed),
            events: shared.events.load(Ordering::Relaxed),
            batches,
            // Each batch is one transaction, and its commit one WAL flush.
            fsyncs: batches,
            batch_appends_max: shared.batch_appends_max.load(Ordering::Relaxed),
        }
    }

    fn health(&self) -> StoreHealth {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return StoreHealth::Closed;
        }
        match &*self.inner.shared.unreachable.lock() {
            Some(reason) => StoreHealth::Failed(Arc::from(format!(
                "the PostgreSQL database cannot be reached: {reason}"
            ))),
            None => StoreHealth::Ready,
        }
    }

    fn shutdown(&self) -> Result<(), StoreError> {
        if self.inner.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Everything queued before this is committed (or refused) before the writer ends.
        let (done, finished) = futures::channel::oneshot::channel();
        let queued = self
            .inner
            .jobs
            .try_send(writer::Job::Shutdown(done))
            .is_ok();
        if queued {
            let _ = futures::executor::block_on(finished);
        } else if let Some(writer) = self.inner.writer.lock().take() {
            // The queue is full: wait for the writer to work it off, then stop it.
            let jobs = self.inner.jobs.clone();
            let _ = self.inner.pg.block(async move {
                let (done, finished) = futures::channel::oneshot::channel();
                if jobs.send(writer::Job::Shutdown(done)).await.is_ok() {
                    let _ = finished.await;
                }
                let _ = writer.await;
                Ok(())
            });
        }
        if let Some(poller) = self.inner.poller.lock().take() {
            poller.abort();
        }
        self.inner.state.close_leases();
        self.inner.pg.pool.close();
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        // Every commit is durable when it returns (`synchronous_commit = on`): nothing is
        // written that a sync would still have to make durable.
        Ok(())
    }

    fn watch_head(&self) -> HeadWatch {
        self.inner.shared.head.subscribe()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Some(poller) = self.poller.lock().take() {
            poller.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redacted_url("postgres://annals:s3cret@db:5432/annals"),
            "postgres://annals:***@db:5432/annals"
        );
        assert_eq!(
            redacted_url("postgresql://postgres@127.0.0.1/test"),
            "postgresql://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redacted_url("host=db user=a password=s3cret dbname=x"),
            "host=db user=a password=*** dbname=x"
        );
        let options = PgOptions::new("postgres://a:s3cret@db/x");
        assert!(!format!("{options:?}").contains("s3cret"));
    }

    #[test]
    fn a_malformed_url_or_schema_is_a_configuration_error() {
        let bad_url = PgStore::open(PgOptions::new("postgres://a:b@db:notaport/x"));
        assert!(
            matches!(&bad_url, Err(StoreError::Config { reason }) if !reason.contains(":b@")),
            "{bad_url:?}"
        );
        let bad_schema =
            PgStore::open(PgOptions::new("postgres://postgres@127.0.0.1/x").with_schema("A;B"));
        assert!(
            matches!(bad_schema, Err(StoreError::Config { .. })),
            "{bad_schema:?}"
        );
    }
}
