//! The embedding API: [`Runtime`] opens a store, runs the actor system, routes commands to
//! aggregate actors, answers reads, and shuts down gracefully.

use std::any::Any;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actix_rt::{ArbiterHandle, System};
use parking_lot::{Mutex, RwLock};

use crate::actor::{self, Execute, Payload, Reply};
use crate::aggregate::{Aggregate, AggregateOptions};
pub use crate::command::{Answered, ExecuteOptions, ExecuteResult, Executed};
use crate::envelope::{Envelope, RecordedEvent};
use crate::error::{ExecuteError, Overload, RuntimeError};
use crate::host::Host;
pub use crate::host::Placement;
use crate::shared::{Counters, Limits, Routing, TypeShared};
use crate::store::{
    EventStore, JournalStats, ParkedEvent, SledOptions, StateStore, StoreError, StoreHealth,
    StoreOptions, Stores,
};
use crate::subscription::process::{CommandSink, Outgoing, ProcessManager};
use crate::subscription::projection::{Projection, View, ViewError, ViewSet};
use crate::subscription::registry::Registry;
use crate::subscription::{
    RetryError, SubscribeError, Subscriber, SubscriberInfo, SubscriberOptions, WaitError,
};
use crate::types::{Position, StreamId, Version};

/// Runtime options. Every queue and cache has a bound here.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RuntimeOptions {
    /// The store [`Runtime::open`] opens: the embedded sled store by default, or PostgreSQL.
    pub store: StoreOptions,
    /// Arbiter threads that run the aggregate actors (default: one per core).
    pub arbiters: NonZeroUsize,
    /// Shards of each routing table.
    pub shards: NonZeroUsize,
    /// Most live actors per aggregate type; beyond it the least recently used is evicted.
    pub live_actors_max: NonZeroUsize,
    /// Most commands queued for one aggregate; beyond it commands are refused as
    /// [`Overload::Mailbox`].
    pub mailbox_capacity: NonZeroUsize,
    /// Most rehydrations running at once; further activations wait for a permit.
    pub rehydrations_max: NonZeroUsize,
    /// Most events one command may produce.
    pub events_per_command_max: NonZeroUsize,
    /// Most bytes of one encoded event.
    pub event_bytes_max: NonZeroUsize,
    /// Most bytes of one encoded command.
    pub command_bytes_max: NonZeroUsize,
    /// The pause suggested to callers refused as overloaded.
    pub retry_after: Duration,
    /// The longest a command may wait in its aggregate's mailbox (after the aggregate is
    /// rehydrated) before it starts; a command that waited longer is refused with
    /// [`Overload::QueueTime`] without being executed. Under a sustained overload this sheds
    /// the excess early, so the commands that are served keep a bounded latency instead of
    /// every command waiting longer. Commands of process managers and deadlines are exempt.
    pub queue_time_max: Duration,
    /// How long [`Runtime::shutdown`] waits for commands in flight.
    pub drain_timeout: Duration,
    /// Which thread a newly activated aggregate actor runs on (default
    /// [`Placement::Arbiters`]).
    pub placement: Placement,
}

/// Default live actors per type: about 150 MB at the measured per-actor footprint.
pub const LIVE_ACTORS_MAX_DEFAULT: usize = 100_000;
/// Default mailbox capacity (actix's own default is 16).
pub const MAILBOX_CAPACITY_DEFAULT: usize = 16;
/// Default concurrent rehydrations.
pub const REHYDRATIONS_MAX_DEFAULT: usize = 64;
/// Default events per command.
pub const EVENTS_PER_COMMAND_MAX_DEFAULT: usize = 100;
/// Default bytes per event: 64 KiB.
pub const EVENT_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Default bytes per command: 64 KiB.
pub const COMMAND_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Default queue-time budget: above the wait a burst of commands to one aggregate causes
/// (a full mailbox of 16 commands, each a group commit), well below a client's timeout.
pub const QUEUE_TIME_MAX_DEFAULT: Duration = Duration::from_millis(200);

impl RuntimeOptions {
    /// Defaults for a store at `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> RuntimeOptions {
        RuntimeOptions::with_store(SledOptions::new(path))
    }

    /// Defaults around the given store options ([`SledOptions`], or [`PgOptions`] with the
    /// `postgres` feature).
    ///
    /// [`PgOptions`]: crate::store::PgOptions
    pub fn with_store(store: impl Into<StoreOptions>) -> RuntimeOptions {
        let store = store.into();
        let cores = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        RuntimeOptions {
            store,
            arbiters: cores,
            shards: nz(64),
            live_actors_max: nz(LIVE_ACTORS_MAX_DEFAULT),
            mailbox_capacity: nz(MAILBOX_CAPACITY_DEFAULT),
            rehydrations_max: nz(REHYDRATIONS_MAX_DEFAULT),
            events_per_command_max: nz(EVENTS_PER_COMMAND_MAX_DEFAULT),
            event_bytes_max: nz(EVENT_BYTES_MAX_DEFAULT),
            command_bytes_max: nz(COMMAND_BYTES_MAX_DEFAULT),
            retry_after: Duration::from_millis(100),
            queue_time_max: QUEUE_TIME_MAX_DEFAULT,
            drain_timeout: Duration::from_secs(10),
            placement: Placement::Arbiters,
        }
    }

    /// Sets the live-actor cap.
    #[must_use]
    pub fn with_live_actors_max(mut self, max: NonZeroUsize) -> Self {
        self.live_actors_max = max;
        self
    }

    /// Sets the mailbox capacity.
    #[must_use]
    pub fn with_mailbox_capacity(mut self, capacity: NonZeroUsize) -> Self {
        self.mailbox_capacity = capacity;
        self
    }

    /// Sets where aggregate actors run ([`Placement`]).
    #[must_use]
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Sets the number of arbiter threads.
    #[must_use]
    pub fn with_arbiters(mut self, arbiters: NonZeroUsize) -> Self {
        self.arbiters = arbiters;
        self
    }

    /// Sets the limits checked per command.
    #[must_use]
    pub fn with_command_limits(
        mut self,
        command_bytes_max: NonZeroUsize,
        events_per_command_max: NonZeroUsize,
        event_bytes_max: NonZeroUsize,
    ) -> Self {
        self.command_bytes_max = command_bytes_max;
        self.events_per_command_max = events_per_command_max;
        self.event_bytes_max = event_bytes_max;
        self
    }

    /// Sets the number of concurrent rehydrations.
    #[must_use]
    pub fn with_rehydrations_max(mut self, max: NonZeroUsize) -> Self {
        self.rehydrations_max = max;
        self
    }
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// How many times a command is routed again after reaching an actor that was stopping.
const ROUTE_ATTEMPTS_MAX: usize = 8;

/// Counters of the runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeStats {
    /// Live aggregate actors.
    pub live_actors: usize,
    /// Actors activated since start.
    pub activations: u64,
    /// Actors passivated after their idle timeout.
    pub passivations: u64,
    /// Actors evicted by the live-actor cap.
    pub evictions: u64,
    /// Rehydrations completed.
    pub rehydrations: u64,
    /// Total time spent rehydrating, in microseconds.
    pub rehydration_micros: u64,
    /// The journal's counters.
    pub journal: JournalStats,
}

/// The state of an aggregate at a version.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateState<A> {
    /// The version the state reflects.
    pub version: Version,
    /// The state.
    pub state: A,
}

pub(crate) trait AnyHost: Send + Sync {
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    fn passivate_all(&self);
    fn release_callers(&self) -> Vec<Arc<crate::shared::Slot>>;
    /// Executes an encoded command (from a process manager); a business rejection is an
    /// outcome, not an error.
    fn dispatch(
        &self,
        runtime: Runtime,
        id: String,
        command: Vec<u8>,
        options: ExecuteOptions,
    ) -> futures::future::LocalBoxFuture<'static, Result<Dispatched, ExecuteError>>;
}

/// What became of a process manager's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dispatched {
    /// It ran (or had run: a retry returned the stored outcome).
    Executed,
    /// The aggregate refused it; the rejection's message.
    Rejected(String),
}

impl<A: Aggregate> AnyHost for Host<A> {
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn passivate_all(&self) {
        Host::passivate_all(self);
    }

    fn release_callers(&self) -> Vec<Arc<crate::shared::Slot>> {
        Host::release_callers(self)
    }

    fn dispatch(
        &self,
        runtime: Runtime,
        id: String,
        command: Vec<u8>,
        options: ExecuteOptions,
    ) -> futures::future::LocalBoxFuture<'static, Result<Dispatched, ExecuteError>> {
        Box::pin(async move {
            let command: A::Command = crate::codec::decode_plain(&command)?;
            match runtime.execute_with::<A>(&id, command, options).await? {
                Ok(_) => Ok(Dispatched::Executed),
                Err(rejection) => Ok(Dispatched::Rejected(rejection.to_string())),
            }
        })
    }
}

/// A handle to a runtime that does not keep it alive (held by its own subscribers).
#[derive(Clone, Debug)]
pub(crate) struct WeakRuntime(std::sync::Weak<Inner>);

impl WeakRuntime {
    pub(crate) fn upgrade(&self) -> Option<Runtime> {
        self.0.upgrade().map(|inner| Runtime { inner })
    }
}

impl CommandSink for WeakRuntime {
    fn keep_alive(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        self.0
            .upgrade()
            .map(|inner| inner as Arc<dyn std::any::Any + Send + Sync>)
    }

    fn dispatch<'a>(
        &'a self,
        outgoing: &'a Outgoing,
    ) -> futures::future::LocalBoxFuture<'a, Result<(), ExecuteError>> {
        Box::pin(async move {
            let runtime = self.upgrade().ok_or(ExecuteError::ShuttingDown)?;

            let mut command_id = outgoing.command_id.clone();
            let mut action = &outgoing.action;
            loop {
                let host = runtime
                    .any_host(&action.aggregate_type)
                    .ok_or_else(|| ExecuteError::Unregistered(action.aggregate_type.clone()))?;
                let options = outgoing.options_with_command_id(&command_id)?;
                let dispatched = host
                    .dispatch(
                        runtime.clone(),
                        action.aggregate_id.clone(),
                        action.command.clone(),
                        options,
                    )
                    .await?;
                match (dispatched, &action.on_rejection) {
                    (Dispatched::Rejected(rejection), Some(fallback)) => {
                        tracing::debug!(%command_id, %rejection, "a process manager's command was rejected; sending its fallback");
                        command_id.push_str("/r");
                        action = fallback;
                    }
                    (Dispatched::Rejected(rejection), None) => {
                        tracing::info!(%command_id, %rejection, "a process manager's command was rejected");
                        return Ok(());
                    }
                    (Dispatched::Executed, _) => return Ok(()),
                }
            }
        })
    }
}

/// The Annals runtime. Cheap to clone; clones share everything. See the [crate docs](crate).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn EventStore>,
    /// The read side's state: checkpoints, views, process instances, deadlines.
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) subscriptions: Arc<Registry>,
    pub(crate) options: RuntimeOptions,
    hosts: RwLock<HashMap<&'static str, Arc<dyn AnyHost>>>,
    pub(crate) arbiters: Arc<[ArbiterHandle]>,
    system: Mutex<Option<(System, JoinHandle<()>)>>,
    rehydrations: Arc<tokio::sync::Semaphore>,
    counters: Arc<Counters>,
    accepting: AtomicBool,
    in_flight: AtomicUsize,
    drained: tokio::sync::Notify,
}

impl Runtime {
    /// Opens the store `options.store` chooses (the embedded sled store by default, recovering
    /// it) and starts the actors' threads.
    pub fn open(options: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        let stores = options.store.open()?;
        Runtime::with_stores(stores, options)
    }

    /// Starts a runtime over already open stores (`options.store` is ignored): a backend's log
    /// and state store, or a log with [`Stores::with_memory_state`].
    pub fn with_stores(stores: Stores, options: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        let (system, arbiters, thread) = start_system(options.arbiters.get())?;
        let arbiters: Arc<[ArbiterHandle]> = arbiters.into();
        Ok(Runtime {
            inner: Arc::new_cyclic(|inner| Inner {
                subscriptions: Registry::new(
                    stores.clone(),
                    arbiters.clone(),
                    Arc::new(WeakRuntime(inner.clone())),
                ),
                store: stores.log,
                state: stores.state,
                rehydrations: Arc::new(tokio::sync::Semaphore::new(options.rehydrations_max.get())),
                options,
                hosts: RwLock::new(HashMap::new()),
                arbiters,
                system: Mutex::new(Some((system, thread))),
                counters: Arc::new(Counters::default()),
                accepting: AtomicBool::new(true),
                in_flight: AtomicUsize::new(0),
                drained: tokio::sync::Notify::new(),
            }),
        })
    }

    /// The stores this runtime runs on.
    pub fn stores(&self) -> Stores {
        Stores {
            log: self.inner.store.clone(),
            state: self.inner.state.clone(),
        }
    }

    /// Registers an aggregate type with its own [`Aggregate::options`].
    pub fn register<A: Aggregate>(&self) -> Result<(), RuntimeError> {
        self.register_with::<A>(A::options())
    }

    /// Registers an aggregate type with explicit options.
    pub fn register_with<A: Aggregate>(
        &self,
        options: AggregateOptions,
    ) -> Result<(), RuntimeError> {
        StreamId::new(A::TYPE, "x")?;
        let mut hosts = self.inner.hosts.write();
        if hosts.contains_key(A::TYPE) {
            return Err(RuntimeError::AlreadyRegistered(A::TYPE));
        }
        let o = &self.inner.options;
        let shared = TypeShared::new(
            self.inner.store.clone(),
            options,
            Limits {
                command_bytes_max: o.command_bytes_max.get(),
                events_per_command_max: o.events_per_command_max.get(),
                event_bytes_max: o.event_bytes_max.get(),
                mailbox_capacity: o.mailbox_capacity.get(),
                retry_after: o.retry_after,
                queue_time_max: o.queue_time_max,
            },
            self.inner.rehydrations.clone(),
            self.inner.counters.clone(),
        );
        let host: Host<A> = Host::new(
            o.shards,
            o.live_actors_max,
            self.inner.arbiters.clone(),
            o.placement,
            shared,
        );
        hosts.insert(A::TYPE, Arc::new(host));
        Ok(())
    }

    fn any_host(&self, aggregate_type: &str) -> Option<Arc<dyn AnyHost>> {
        self.inner.hosts.read().get(aggregate_type).cloned()
    }

    fn host<A: Aggregate>(&self) -> Result<Arc<Host<A>>, ExecuteError> {
        let host = self
            .inner
            .hosts
            .read()
            .get(A::TYPE)
            .cloned()
            .ok_or_else(|| ExecuteError::Unregistered(A::TYPE.to_string()))?;
        host.as_any()
            .downcast::<Host<A>>()
            .map_err(|_| ExecuteError::Unregistered(A::TYPE.to_string()))
    }

    /// Executes a command on aggregate `id`.
    pub async fn execute<A: Aggregate>(&self, id: &str, command: A::Command) -> ExecuteResult<A> {
        self.execute_with::<A>(id, command, ExecuteOptions::default())
            .await
    }

    /// Executes a command with options (command id, expected version, trace ids).
    pub async fn execute_with<A: Aggregate>(
        &self,
        id: &str,
        command: A::Command,
        options: ExecuteOptions,
    ) -> ExecuteResult<A> {
        self.execute_answered::<A>(id, command, options)
            .await
            .map(|answered| answered.result)
    }

    /// [`Runtime::execute_with`], saying also whether the result is the stored outcome of an
    /// earlier execution with the same command id — for a rejection too, which carries no
    /// flag of its own (an HTTP API marks such a reply as replayed).
    pub async fn execute_answered<A: Aggregate>(
        &self,
        id: &str,
        command: A::Command,
        options: ExecuteOptions,
    ) -> Result<Answered<A>, ExecuteError> {
        let _guard = self.enter()?;
        let host = self.host::<A>()?;
        for (what, id) in [
            ("correlation id", &options.correlation_id),
            ("causation id", &options.causation_id),
        ] {
            if let Some(id) = id {
                if id.is_empty() || id.len() > crate::envelope::TRACE_ID_LEN_MAX {
                    return Err(crate::types::InvalidId {
                        what,
                        reason: format!(
                            "{} bytes, must be 1 to {}",
                            id.len(),
                            crate::envelope::TRACE_ID_LEN_MAX
                        ),
                    }
                    .into());
                }
            }
        }
        let capacity = self.inner.options.mailbox_capacity.get();
        let (mut command, mut options) = (command, options);
        for _ in 0..ROUTE_ATTEMPTS_MAX {
            let route = host.route(id)?;
            if route.slot.queued.fetch_add(1, Ordering::AcqRel) >= capacity {
                route.slot.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(self.overloaded::<A>(id, Overload::Mailbox));
            }
            let (tx, rx) = futures::channel::oneshot::channel();
            let message = Execute {
                payload: Some(Payload {
                    command,
                    sheddable: !options.internal,
                    options,
                    reply: tx,
                    enqueued: std::time::Instant::now(),
                }),
            };
            if let Err(e) = route.addr.try_send(message) {
                route.slot.queued.fetch_sub(1, Ordering::AcqRel);
                let full = matches!(e, actix::prelude::SendError::Full(_));
                let mut message = e.into_inner();
                let payload = message.payload.take().ok_or(ExecuteError::ShuttingDown)?;
                if full {
                    return Err(self.overloaded::<A>(id, Overload::Mailbox));
                }
                host.forget(id, &route.slot);
                (command, options) = (payload.command, payload.options);
                continue;
            }
            match rx.await {
                Ok(Reply::Done(result, replayed)) => {
                    return result.map(|result| Answered { result, replayed })
                }
                Ok(Reply::NotStarted(c, o)) => {
                    host.forget(id, &route.slot);
                    (command, options) = (c, o);
                }
                Err(_) => return Err(ExecuteError::OutcomeUnknown(StreamId::new(A::TYPE, id)?)),
            }
        }
        Err(self.overloaded::<A>(id, Overload::Mailbox))
    }

    fn overloaded<A: Aggregate>(&self, id: &str, what: Overload) -> ExecuteError {
        match StreamId::new(A::TYPE, id) {
            Ok(stream) => ExecuteError::Overloaded {
                stream,
                what,
                retry_after: self.inner.options.retry_after,
            },
            Err(e) => e.into(),
        }
    }

    /// Counts a command in flight, unless shutdown has begun. `SeqCst` on both sides (here and
    /// in `shutdown`) so that either shutdown sees this command in flight or this command sees
    /// that shutdown began — never neither.
    fn enter(&self) -> Result<InFlight<'_>, ExecuteError> {
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(&self.inner);
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(ExecuteError::ShuttingDown);
        }
        Ok(guard)
    }

    /// The current state of aggregate `id` (`None` if it has no events), rebuilt from the
    /// store: latest snapshot plus the events after it.
    pub fn state<A: Aggregate>(&self, id: &str) -> Result<Option<AggregateState<A>>, ExecuteError> {
        self.state_at::<A>(id, None)
    }

    /// The state of aggregate `id` as of `version` (`None`: the head), from the nearest snapshot
    /// at or below it plus replay — never from a later snapshot.
    pub fn state_at<A: Aggregate>(
        &self,
        id: &str,
        version: Option<Version>,
    ) -> Result<Option<AggregateState<A>>, ExecuteError> {
        let host = self.host::<A>()?;
        let stream = StreamId::new(A::TYPE, id)?;
        let loaded = actor::load::<A>(
            &*self.inner.store,
            &stream,
            host.shared.options.snapshot_schema_version,
            version,
        )?;
        Ok((loaded.version > Version(0)).then_some(AggregateState {
            version: loaded.version,
            state: loaded.state,
        }))
    }

    /// The state of aggregate `id` as of instant `at`: as of its last event recorded at or
    /// before `at` (`None` if it had none yet), from the nearest snapshot at or below that
    /// version plus replay. Events of one aggregate are recorded in non-decreasing time (its
    /// commands run one at a time), so the version is found by binary search over point reads.
    pub fn state_as_of<A: Aggregate>(
        &self,
        id: &str,
        at: crate::types::Timestamp,
    ) -> Result<Option<AggregateState<A>>, ExecuteError> {
        let stream = StreamId::new(A::TYPE, id)?;
        let store = &self.inner.store;
        let recorded_at = |v: Version| -> Result<crate::types::Timestamp, ExecuteError> {
            let event = store
                .read_stream(&stream, v, Some(v), 1)?
                .pop()
                .ok_or_else(|| {
                    ExecuteError::Store(StoreError::Corrupt {
                        what: format!("stream {stream}"),
                        reason: format!("version {v} is below the head but cannot be read"),
                    })
                })?;
            Ok(event.meta.recorded_at)
        };
        // Invariant: every version <= low was recorded at or before `at`; every one > high after.
        let (mut low, mut high) = (0u64, store.stream_head(&stream)?.0);
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            if recorded_at(Version(mid))? <= at {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        if low == 0 {
            return Ok(None);
        }
        self.state_at::<A>(id, Some(Version(low)))
    }

    /// Events of aggregate `id` from version `from`, at most `limit` stored events, decoded
    /// (and upcast: an old event may become several, or none, each with the stored version).
    pub fn events<A: Aggregate>(
        &self,
        id: &str,
        from: Version,
        limit: usize,
    ) -> Result<Vec<Envelope<A::Event>>, ExecuteError> {
        let stream = StreamId::new(A::TYPE, id)?;
        let recorded = self.inner.store.read_stream(&stream, from, None, limit)?;
        let mut events = Vec::with_capacity(recorded.len());
        for r in &recorded {
            events.extend(r.upcast::<A>()?);
        }
        Ok(events)
    }

    /// Events of a stream, still encoded (any aggregate type).
    pub fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        to: Option<Version>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.store.read_stream(stream, from, to, limit)
    }

    /// Events of the global log from position `from`, at most `limit`, still encoded.
    pub fn read_all(&self, from: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.store.read_all(from, limit)
    }

    /// The position of the last acknowledged event.
    pub fn head_position(&self) -> Position {
        self.inner.store.head_position()
    }

    /// The event log, for reads this API does not cover.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// The read side's state store (checkpoints, views, process instances, deadlines).
    pub fn state_store(&self) -> &Arc<dyn StateStore> {
        &self.inner.state
    }

    /// Whether the store accepts writes.
    pub fn health(&self) -> StoreHealth {
        self.inner.store.health()
    }

    /// Counters.
    pub fn stats(&self) -> RuntimeStats {
        let c = &self.inner.counters;
        RuntimeStats {
            live_actors: c.live.load(Ordering::Relaxed),
            activations: c.activations.load(Ordering::Relaxed),
            passivations: c.passivations.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            rehydrations: c.rehydrations.load(Ordering::Relaxed),
            rehydration_micros: c.rehydration_micros.load(Ordering::Relaxed),
            journal: self.inner.store.stats(),
        }
    }

    /// Moves the aggregate actors off the callers' threads ([`Placement::Caller`]): every
    /// actor started on a caller's thread finishes the commands it has queued and stops, and
    /// every actor started from now on runs on the runtime's arbiters. Resolves once those
    /// actors have stopped, or after `drain_timeout`. Call it before the threads that host them
    /// stop — an HTTP server's workers, before a graceful stop of the server — so that a
    /// command in flight there (from another worker, or a process manager) is answered, not cut
    /// off with its thread. Nothing to do, and resolves at once, with [`Placement::Arbiters`].
    pub async fn release_callers(&self) {
        let slots: Vec<_> = self
            .inner
            .hosts
            .read()
            .values()
            .flat_map(|host| host.release_callers())
            .collect();
        if slots.is_empty() {
            return;
        }
        let stopped = futures::future::join_all(slots.iter().map(|slot| slot.stopped()));
        if self
            .within(self.inner.options.drain_timeout, stopped)
            .await
            .is_none()
        {
            tracing::warn!(
                actors = slots.iter().filter(|s| !s.has_stopped()).count(),
                "actors on callers' threads still running after the drain timeout"
            );
        }
    }

    /// `future`'s output, or `None` if `timeout` passes first. The timer runs on one of the
    /// runtime's own arbiters, so this works under any executor (or
    /// `futures::executor::block_on`).
    async fn within<F: std::future::Future>(
        &self,
        timeout: Duration,
        future: F,
    ) -> Option<F::Output> {
        let (expired_tx, expired) = futures::channel::oneshot::channel::<()>();
        let timer_started = self.inner.arbiters.first().is_some_and(|arbiter| {
            arbiter.spawn(async move {
                tokio::time::sleep(timeout).await;
                let _ = expired_tx.send(());
            })
        });
        if !timer_started {
            return Some(future.await);
        }
        match futures::future::select(Box::pin(future), expired).await {
            futures::future::Either::Left((output, _)) => Some(output),
            futures::future::Either::Right(_) => None,
        }
    }

    /// Shuts down gracefully: stops the subscribers after their current page, refuses new
    /// commands, waits (up to `drain_timeout`) for the commands in flight, stops the actors,
    /// drains and flushes the journal, and stops the actor threads. Idempotent.
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        // Subscribers first, while commands are still accepted: a process manager in the
        // middle of a page can still send its commands.
        self.inner
            .subscriptions
            .stop_subscribers(self.inner.options.drain_timeout)
            .await;
        self.inner.accepting.store(false, Ordering::SeqCst);
        let drain = async {
            loop {
                let notified = self.inner.drained.notified();
                if self.inner.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                notified.await;
            }
        };
        let drained = self
            .within(self.inner.options.drain_timeout, drain)
            .await
            .is_some();
        if !drained {
            tracing::warn!(
                in_flight = self.inner.in_flight.load(Ordering::Acquire),
                "shutdown: commands still in flight after the drain timeout"
            );
        }
        for host in self.inner.hosts.read().values() {
            host.passivate_all();
        }
        let stored = self.inner.store.shutdown();
        self.stop_system();
        stored.map_err(RuntimeError::from)
    }

    fn stop_system(&self) {
        self.inner.stop_system();
    }
}

impl Inner {
    /// Stops the arbiters and the system thread. Joins them unless called on one of them (the
    /// last handle to a runtime can be dropped by one of its own tasks), which would deadlock.
    fn stop_system(&self) {
        if let Some((system, thread)) = self.system.lock().take() {
            for arbiter in self.arbiters.iter() {
                arbiter.stop();
            }
            system.stop();
            let on_own_thread = std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with("actix-rt|") || name == "annals-system");
            if !on_own_thread {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_system();
        let _ = self.store.shutdown();
    }
}

struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && !self.0.accepting.load(Ordering::SeqCst)
        {
            self.0.drained.notify_waiters();
        }
    }
}

/// Starts an actix system on its own thread with `arbiters` arbiter threads, so the runtime
/// works the same under any async executor (or none).
fn start_system(
    arbiters: usize,
) -> Result<(System, Vec<ArbiterHandle>, JoinHandle<()>), RuntimeError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("annals-system".into())
        .spawn(move || {
            let runner = System::new();
            let owned: Vec<actix_rt::Arbiter> =
                (0..arbiters).map(|_| actix_rt::Arbiter::new()).collect();
            let handles = owned
                .iter()
                .map(actix_rt::Arbiter::handle)
                .collect::<Vec<_>>();
            let _ = tx.send((System::current(), handles));
            let _ = runner.run();
            for arbiter in owned {
                arbiter.stop();
                let _ = arbiter.join();
            }
        })
        .map_err(|e| RuntimeError::System(e.to_string()))?;
    let (system, handles) = rx.recv().map_err(|e| RuntimeError::System(e.to_string()))?;
    Ok((system, handles, thread))
}

/// Subscribers, projections and process managers: see [`subscription`](crate::subscription).
impl Runtime {
    /// Starts a subscriber named `name`: it resumes from its persisted checkpoint (or the start
    /// of the log) and then follows committed events.
    pub fn subscribe(
        &self,
        name: &str,
        subscriber: impl Subscriber,
        options: SubscriberOptions,
    ) -> Result<(), SubscribeError> {
        self.inner
            .subscriptions
            .subscribe(name, subscriber, options)
    }

    /// Registers a projection: `factory` builds it over the views of a generation (called
    /// again for each rebuild). It resumes from its checkpoint on the active generation.
    pub fn project<P, F>(
        &self,
        name: &str,
        options: SubscriberOptions,
        factory: F,
    ) -> Result<(), SubscribeError>
    where
        P: Projection,
        F: Fn(&ViewSet) -> Result<P, ViewError> + Send + Sync + 'static,
    {
        self.inner.subscriptions.project(name, options, factory)
    }

    /// The view `view` of projection `projection`, in its active generation. Ask for it per
    /// query: after a rebuild, a handle to the old generation reads a dropped space.
    pub fn view<V>(&self, projection: &str, view: &str) -> Result<View<V>, SubscribeError> {
        self.inner.subscriptions.view(projection, view)
    }

    /// Rebuilds a projection from position 0 beside the live one, then swaps it in once it has
    /// caught up; queries keep being answered from the live generation meanwhile. Returns once
    /// the rebuild has started; [`Runtime::subscribers`] shows it as `{name}#rebuild`.
    pub fn rebuild(&self, projection: &str) -> Result<(), SubscribeError> {
        self.inner.subscriptions.rebuild(projection)
    }

    /// Registers a process manager named `name`. See [`process`](mod@crate::process).
    pub fn process_manager<P: ProcessManager>(
        &self,
        name: &str,
        manager: P,
        options: SubscriberOptions,
    ) -> Result<(), SubscribeError> {
        self.inner
            .subscriptions
            .process_manager(name, manager, options)
    }

    /// Whether `name` is a registered projection (its parked retries rebuild it; see
    /// [`Runtime::retry_parked`]).
    pub fn is_projection(&self, name: &str) -> bool {
        self.inner.subscriptions.is_projection(name)
    }

    /// Progress of every subscriber, projection and process manager.
    pub fn subscribers(&self) -> Vec<SubscriberInfo> {
        self.inner.subscriptions.subscribers()
    }

    /// Progress of one subscriber.
    pub fn subscriber(&self, name: &str) -> Option<SubscriberInfo> {
        self.inner.subscriptions.subscriber(name)
    }

    /// Read-your-writes: waits until subscriber `name` has processed `position` (for example
    /// [`Executed::position`](crate::Executed::position)), for at most `timeout`; returns the
    /// position it has read up to: its checkpoint, or `position` for a subscriber of some
    /// aggregate types ([`SubscriberOptions::aggregate_types`](crate::SubscriberOptions::aggregate_types))
    /// with nothing of its types between its checkpoint and `position` (its checkpoint follows
    /// within [`FOLLOW_INTERVAL`](crate::subscription::FOLLOW_INTERVAL)).
    pub async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<Position, WaitError> {
        self.inner
            .subscriptions
            .wait_for(name, position, timeout)
            .await
    }

    /// The deadlines process managers have set that have not fired yet, soonest first, at most
    /// `limit` (a read of the state store).
    pub fn pending_deadlines(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::process::PendingDeadline>, StoreError> {
        crate::subscription::process::pending_deadlines(&*self.inner.state, limit)
    }

    /// The parked events of subscriber `name`.
    pub fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>, SubscribeError> {
        self.inner.subscriptions.parked(name)
    }

    /// Handles a parked event again, between two pages of the subscriber; on success it is
    /// removed from the parked list.
    ///
    /// For a **projection**, handling the event alone would be wrong — its view records may
    /// have moved past it since — so the projection is **rebuilt** instead (beside the live one,
    /// with the handler as it is now), and the entry leaves the parked list once the rebuild
    /// has started.
    pub async fn retry_parked(&self, name: &str, position: Position) -> Result<(), RetryError> {
        self.inner.subscriptions.retry_parked(name, position).await
    }

    /// Stops subscriber `name` after its current page; `false` if there is none.
    pub fn stop_subscriber(&self, name: &str) -> bool {
        self.inner.subscriptions.stop_subscriber(name)
    }
}
