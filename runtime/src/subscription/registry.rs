//! The subscribers of one runtime: registering subscribers, projections and process managers,
//! and what can be asked of them — lag, read-your-writes waits, parked events, rebuilds — plus
//! the deadline timer of the process managers. The [`Registry`] owns its bookkeeping and what it
//! needs to start subscribers (the stores, the arbiters, a [`CommandSink`] for process managers'
//! commands); [`Runtime`](crate::Runtime)'s public methods delegate to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::{Actor, Addr};
use actix_rt::ArbiterHandle;
use futures::channel::oneshot;
use parking_lot::Mutex;

use crate::envelope::RecordedEvent;
use crate::store::state::GENERATIONS;
use crate::store::{Changes, EventStore, Lease, ParkedEvent, StateStore, StoreError, Stores};
use crate::types::Position;

use super::page::PageWrites;
use super::process::{fire_due, CommandSink, ProcessManager, ProcessSubscriber, DEADLINE_LEASE};
use super::projection::{drop_generations_below, Projection, View, ViewError, ViewSet};
use super::reader::LogReader;
use super::subscriber::{
    HandleFuture, RetryError, Subscriber, SubscriberInfo, SubscriberOptions, SubscriberStatus,
};
use super::worker::{is_parked, RetryParked, Stop, SubscriberActor, SubscriberShared};

/// Longest subscriber, projection or process manager name, in bytes.
pub const NAME_LEN_MAX: usize = 64;

/// How often due deadlines are looked for.
pub const DEADLINE_TICK: Duration = Duration::from_millis(100);

/// How often a node looks for projection generations another node swapped in.
pub const GENERATION_POLL: Duration = Duration::from_millis(250);

/// How long the views of a projection's previous generation stay after a rebuild is swapped
/// in, so that queries that resolved the old generation just before the swap can finish.
pub const OLD_GENERATION_GRACE: Duration = Duration::from_secs(30);

/// Most parked events listed per subscriber.
pub const PARKED_LISTED_MAX: usize = 10_000;

/// Why a subscriber, projection or process manager could not be registered or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The name is taken.
    #[error("a subscriber named {0:?} already exists")]
    AlreadyExists(String),
    /// The name is empty, too long, contains `@`, `#` or `/`, or a character ids may not
    /// have ([`is_id_char`](crate::types::is_id_char)).
    #[error("invalid subscriber name {0:?}: 1 to {NAME_LEN_MAX} bytes of visible characters, without '@', '#' or '/'")]
    InvalidName(String),
    /// No such subscriber or projection.
    #[error("no subscriber or projection named {0:?}")]
    Unknown(String),
    /// The projection is already being rebuilt.
    #[error("projection {0:?} is already being rebuilt")]
    AlreadyRebuilding(String),
    /// A view failed.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a read-your-writes wait ended without reaching its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// No such subscriber or projection.
    #[error("no subscriber or projection named {0:?}")]
    Unknown(String),
    /// The bound passed first.
    #[error("{name} reached position {reached}, not {wanted}, within {waited:?}")]
    Timeout {
        /// The subscriber.
        name: String,
        /// The position waited for.
        wanted: Position,
        /// The position it had reached.
        reached: Position,
        /// How long the wait lasted.
        waited: Duration,
    },
    /// The subscriber is stopped or failed and will not get there.
    #[error("{name} is {status:?} at position {reached}")]
    NotRunning {
        /// The subscriber.
        name: String,
        /// Its status.
        status: SubscriberStatus,
        /// The position it had reached.
        reached: Position,
    },
}

/// The subscribers of one runtime.
pub(crate) struct Registry {
    log: Arc<dyn EventStore>,
    state: Arc<dyn StateStore>,
    arbiters: Arc<[ArbiterHandle]>,
    /// Where process managers' commands (and due deadlines) go.
    sink: Arc<dyn CommandSink>,
    /// The log reader the subscribers share.
    reader: Arc<LogReader>,
    /// This registry, for the tasks it spawns (a rebuild's monitor, the deadline timer), which
    /// must not keep it alive.
    me: Weak<Registry>,
    subscribers: Mutex<HashMap<String, Entry>>,
    /// Bumped whenever a rebuilt projection is swapped in, so waits can follow the name.
    swaps: tokio::sync::watch::Sender<u64>,
    projections: Mutex<HashMap<String, ProjectionEntry>>,
    deadline_timer: AtomicBool,
    /// Whether the watch for rebuilds swapped in by other nodes runs.
    generation_watch: AtomicBool,
    next_arbiter: AtomicUsize,
}

#[derive(Clone)]
struct Entry {
    shared: Arc<SubscriberShared>,
    addr: Addr<SubscriberActor>,
}

impl Entry {
    fn is_running(&self) -> bool {
        self.addr.connected()
            && !matches!(
                *self.shared.status.lock(),
                SubscriberStatus::Stopped | SubscriberStatus::Failed(_)
            )
    }
}

type Factory = Arc<dyn Fn(&ViewSet) -> Result<Box<dyn Projection>, ViewError> + Send + Sync>;

struct ProjectionEntry {
    factory: Factory,
    generation: u64,
    options: SubscriberOptions,
    rebuilding: bool,
}

/// Runs a projection as a subscriber; its view writes wait in the page's writes until the
/// page is committed (by the subscriber, with its checkpoint).
struct ProjectionSubscriber {
    projection: Box<dyn Projection>,
}

impl Subscriber for ProjectionSubscriber {
    fn handle<'a>(&'a mut self, event: &'a RecordedEvent) -> HandleFuture<'a> {
        let result = self.projection.handle(event);
        Box::pin(async move { result })
    }
}

/// The key beside a subscriber's checkpoint where stores written before page commits were
/// atomic kept the last position a projection wrote view records for. Read (and reset) only to
/// tell whether such a projection is ahead of the log.
fn written_key(storage_name: &str) -> String {
    format!("{storage_name}/written")
}

fn check_name(name: &str) -> Result<(), SubscribeError> {
    if name.is_empty()
        || name.len() > NAME_LEN_MAX
        || name.contains(['@', '#', '/'])
        || !name.chars().all(crate::types::is_id_char)
    {
        return Err(SubscribeError::InvalidName(name.to_string()));
    }
    Ok(())
}

impl Registry {
    pub(crate) fn new(
        stores: Stores,
        arbiters: Arc<[ArbiterHandle]>,
        sink: Arc<dyn CommandSink>,
    ) -> Arc<Registry> {
        Arc::new_cyclic(|me| Registry {
            reader: Arc::new(LogReader::new(stores.log.clone())),
            log: stores.log,
            state: stores.state,
            arbiters,
            sink,
            me: me.clone(),
            subscribers: Mutex::default(),
            swaps: tokio::sync::watch::Sender::default(),
            projections: Mutex::default(),
            deadline_timer: AtomicBool::new(false),
            generation_watch: AtomicBool::new(false),
            next_arbiter: AtomicUsize::new(0),
        })
    }

    fn arbiter(&self) -> Option<&ArbiterHandle> {
        self.arbiters.first()
    }

    /// A name that is valid and not taken.
    fn check_free(&self, name: &str) -> Result<(), SubscribeError> {
        check_name(name)?;
        if self.entry(name).is_some_and(|e| e.is_running()) {
            return Err(SubscribeError::AlreadyExists(name.to_string()));
        }
        Ok(())
    }

    fn entry(&self, name: &str) -> Option<Entry> {
        self.subscribers.lock().get(name).cloned()
    }

    /// Starts a subscriber actor whose checkpoint is stored under `storage_name`, committing
    /// `writes` with it at the end of each page.
    fn start_subscriber(
        &self,
        storage_name: &str,
        subscriber: Box<dyn Subscriber>,
        writes: Arc<PageWrites>,
        options: SubscriberOptions,
        status: SubscriberStatus,
    ) -> Result<Entry, SubscribeError> {
        let mut checkpoint = self.state.load_checkpoint(storage_name)?;
        // Fresh: on a store other nodes write to, they may have moved both on since this node
        // last looked.
        let head = self.log.fresh_head()?;
        if checkpoint > head {
            // The log lost a tail this subscriber had seen (a crash in relaxed mode): go on
            // from the head, so that the events given the lost positions are not skipped.
            // (Projections rebuild instead; see `rebuild_if_ahead`.)
            tracing::warn!(subscriber = storage_name, %checkpoint, %head, "the checkpoint is beyond the log's head (the log lost a tail in a crash); going on from the head");
            checkpoint = head;
            self.state.save_checkpoint(storage_name, checkpoint)?;
        }
        let types = options
            .aggregate_types
            .as_deref()
            .map(|types| self.log.watch_types(types));
        let shared = Arc::new(SubscriberShared::new(
            Arc::from(storage_name),
            checkpoint,
            status,
            types,
        ));
        let actor = SubscriberActor::new(
            subscriber,
            &Stores {
                log: self.log.clone(),
                state: self.state.clone(),
            },
            self.reader.clone(),
            writes,
            shared.clone(),
            options,
        );
        let arbiters = &self.arbiters;
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % arbiters.len();
        let addr = SubscriberActor::start_in_arbiter(&arbiters[i], move |_| actor);
        Ok(Entry { shared, addr })
    }

    fn insert_entry(&self, name: &str, entry: Entry) -> Result<(), SubscribeError> {
        let mut subscribers = self.subscribers.lock();
        // A stopped or failed subscriber's name can be taken again.
        if subscribers.get(name).is_some_and(Entry::is_running) {
            entry.addr.do_send(Stop);
            return Err(SubscribeError::AlreadyExists(name.to_string()));
        }
        subscribers.insert(name.to_string(), entry);
        Ok(())
    }

    /// See [`Runtime::subscribe`](crate::Runtime::subscribe).
    pub(crate) fn subscribe(
        &self,
        name: &str,
        subscriber: impl Subscriber,
        options: SubscriberOptions,
    ) -> Result<(), SubscribeError> {
        self.check_free(name)?;
        let entry = self.start_subscriber(
            name,
            Box::new(subscriber),
            Arc::new(PageWrites::default()),
            options,
            SubscriberStatus::CatchingUp,
        )?;
        self.insert_entry(name, entry)
    }

    /// See [`Runtime::project`](crate::Runtime::project).
    pub(crate) fn project<P, F>(
        &self,
        name: &str,
        options: SubscriberOptions,
        factory: F,
    ) -> Result<(), SubscribeError>
    where
        P: Projection,
        F: Fn(&ViewSet) -> Result<P, ViewError> + Send + Sync + 'static,
    {
        let state = self.state.clone();
        self.check_free(name)?;
        let generation = active_generation(&*state, name)?;
        drop_generations_below(&*state, name, generation)?;
        let factory: Factory =
            Arc::new(move |views| Ok(Box::new(factory(views)?) as Box<dyn Projection>));
        let storage = format!("{name}@{generation}");
        let views = ViewSet::new(state, name, generation);
        self.rebuild_if_ahead(name, &storage, &views)?;
        let writes = Arc::new(PageWrites::default());
        let projection = factory(&views.with_buffer(writes.clone()))?;
        let entry = self.start_subscriber(
            &storage,
            Box::new(ProjectionSubscriber { projection }),
            writes,
            options.clone(),
            SubscriberStatus::CatchingUp,
        )?;
        self.insert_entry(name, entry)?;
        self.projections.lock().insert(
            name.to_string(),
            ProjectionEntry {
                factory,
                generation,
                options,
                rebuilding: false,
            },
        );
        self.start_generation_watch();
        Ok(())
    }

    /// Starts (once) the watch that follows rebuilds other nodes sharing the store swap in.
    fn start_generation_watch(&self) {
        if self.generation_watch.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = self.me.clone();
        let start = move || {
            actix_rt::spawn(async move {
                loop {
                    tokio::time::sleep(GENERATION_POLL).await;
                    let Some(registry) = weak.upgrade() else {
                        return;
                    };
                    let Some(_alive) = registry.sink.keep_alive() else {
                        return;
                    };
                    registry.follow_generations();
                }
            });
        };
        if let Some(arbiter) = self.arbiter() {
            arbiter.spawn_fn(start);
        }
    }

    /// Adopts every projection generation that another node swapped in (its rebuild caught
    /// up): this node's subscriber of the old generation stops (so no node runs it any more)
    /// and one of the new generation starts — on standby, as the rebuilding node owns it — and
    /// queries read the new generation. The rebuilding node drops the old views after
    /// [`OLD_GENERATION_GRACE`]. On a store only one process opens, the stored generation is
    /// always this node's own, and this does nothing.
    fn follow_generations(&self) {
        let current: Vec<(String, u64)> = self
            .projections
            .lock()
            .iter()
            .filter(|(_, p)| !p.rebuilding)
            .map(|(name, p)| (name.clone(), p.generation))
            .collect();
        for (name, generation) in current {
            let stored = match active_generation(&*self.state, &name) {
                Ok(stored) => stored,
                Err(e) => {
                    tracing::debug!(projection = %name, error = %e, "cannot read the active generation");
                    continue;
                }
            };
            if stored <= generation {
                continue;
            }
            if let Err(e) = self.adopt_generation(&name, stored) {
                tracing::warn!(projection = %name, generation = stored, error = %e, "cannot follow the generation another node swapped in; trying again");
            }
        }
    }

    fn adopt_generation(&self, name: &str, generation: u64) -> Result<(), SubscribeError> {
        let Some((factory, options)) = self
            .projections
            .lock()
            .get(name)
            .map(|p| (p.factory.clone(), p.options.clone()))
        else {
            return Ok(());
        };
        let views = ViewSet::new(self.state.clone(), name, generation);
        let writes = Arc::new(PageWrites::default());
        let projection = factory(&views.with_buffer(writes.clone()))?;
        let entry = self.start_subscriber(
            &format!("{name}@{generation}"),
            Box::new(ProjectionSubscriber { projection }),
            writes,
            options,
            SubscriberStatus::CatchingUp,
        )?;
        let old = self.subscribers.lock().insert(name.to_string(), entry);
        if let Some(p) = self.projections.lock().get_mut(name) {
            p.generation = generation;
        }
        self.swaps.send_modify(|n| *n += 1);
        if let Some(old) = old {
            old.addr.do_send(Stop);
        }
        tracing::info!(
            projection = name,
            generation,
            "following the rebuilt projection another node swapped in"
        );
        Ok(())
    }

    /// A projection whose checkpoint or written records are beyond the log's head has seen
    /// events the log no longer has: a crash in a backend's relaxed durability mode lost the
    /// acknowledged tail, and positions after
    /// the head will be given to other events. Its records cannot be taken back one by one, so
    /// its views are dropped and it starts again from the beginning of the log.
    fn rebuild_if_ahead(
        &self,
        name: &str,
        storage: &str,
        views: &ViewSet,
    ) -> Result<(), SubscribeError> {
        let state = &self.state;
        let head = self.log.fresh_head()?;
        let checkpoint = state.load_checkpoint(storage)?;
        let written = state.load_checkpoint(&written_key(storage))?;
        if checkpoint.max(written) <= head {
            return Ok(());
        }
        tracing::warn!(
            projection = name, %checkpoint, %written, %head,
            "the projection has seen events beyond the log's head (the log lost a tail in a crash); rebuilding it from the start"
        );
        views.drop_all()?;
        let mut changes = Changes::default();
        changes.save_checkpoint(&written_key(storage), Position(0));
        changes.save_checkpoint(storage, Position(0));
        state.commit(changes)?;
        Ok(())
    }

    /// See [`Runtime::view`](crate::Runtime::view).
    pub(crate) fn view<V>(&self, projection: &str, view: &str) -> Result<View<V>, SubscribeError> {
        let generation = self
            .projections
            .lock()
            .get(projection)
            .map(|p| p.generation)
            .ok_or_else(|| SubscribeError::Unknown(projection.to_string()))?;
        Ok(ViewSet::new(self.state.clone(), projection, generation).view(view)?)
    }

    /// See [`Runtime::rebuild`](crate::Runtime::rebuild).
    pub(crate) fn rebuild(&self, projection: &str) -> Result<(), SubscribeError> {
        let state = self.state.clone();
        let (factory, generation, options) = {
            let mut projections = self.projections.lock();
            let entry = projections
                .get_mut(projection)
                .ok_or_else(|| SubscribeError::Unknown(projection.to_string()))?;
            if entry.rebuilding {
                return Err(SubscribeError::AlreadyRebuilding(projection.to_string()));
            }
            entry.rebuilding = true;
            (
                entry.factory.clone(),
                entry.generation + 1,
                entry.options.clone(),
            )
        };
        let started = (|| {
            let views = ViewSet::new(state.clone(), projection, generation);
            // Left over by a rebuild that a crash interrupted.
            views.drop_all()?;
            let storage = format!("{projection}@{generation}");
            let mut changes = Changes::default();
            changes.save_checkpoint(&storage, Position(0));
            changes.save_checkpoint(&written_key(&storage), Position(0));
            state.commit(changes)?;
            let writes = Arc::new(PageWrites::default());
            let built = factory(&views.with_buffer(writes.clone()))?;
            let entry = self.start_subscriber(
                &storage,
                Box::new(ProjectionSubscriber { projection: built }),
                writes,
                options,
                SubscriberStatus::Rebuilding,
            )?;
            self.insert_entry(&format!("{projection}#rebuild"), entry.clone())?;
            Ok::<_, SubscribeError>(entry)
        })();
        let entry = match started {
            Ok(entry) => entry,
            Err(e) => {
                if let Some(p) = self.projections.lock().get_mut(projection) {
                    p.rebuilding = false;
                }
                return Err(e);
            }
        };
        let weak = self.me.clone();
        let store = self.log.clone();
        let name = projection.to_string();
        let monitor = async move {
            let mut checkpoint = entry.shared.checkpoint.subscribe();
            loop {
                checkpoint.borrow_and_update();
                if matches!(
                    *entry.shared.status.lock(),
                    SubscriberStatus::Failed(_) | SubscriberStatus::Stopped
                ) {
                    tracing::error!(projection = %name, "rebuild failed; the live generation stays");
                    if let Some(rt) = weak.upgrade() {
                        rt.subscribers.lock().remove(&format!("{name}#rebuild"));
                        if let Some(p) = rt.projections.lock().get_mut(&name) {
                            p.rebuilding = false;
                        }
                    }
                    return;
                }
                if entry.shared.has_read(store.head_position(), &*store) {
                    break;
                }
                if checkpoint.changed().await.is_err() {
                    return;
                }
            }
            if let Some(rt) = weak.upgrade() {
                if let Err(e) = rt.swap_in(&name, generation, entry) {
                    tracing::error!(projection = %name, error = %e, "cannot swap in the rebuilt projection");
                }
            }
        };
        let arbiter = self
            .arbiter()
            .ok_or(SubscribeError::Unknown(projection.to_string()))?;
        arbiter.spawn(monitor);
        Ok(())
    }

    /// Makes a caught-up rebuild the live generation of `name`.
    fn swap_in(&self, name: &str, generation: u64, entry: Entry) -> Result<(), SubscribeError> {
        let state = self.state.clone();
        let mut changes = Changes::default();
        changes.put(GENERATIONS, name.as_bytes(), generation.to_be_bytes());
        state.commit(changes)?;
        // The pointer must be durable before the old generation's views go.
        self.log.sync()?;
        *entry.shared.status.lock() = SubscriberStatus::Live;
        let registry = self;
        let old = {
            let mut subscribers = registry.subscribers.lock();
            subscribers.remove(&format!("{name}#rebuild"));
            subscribers.insert(name.to_string(), entry)
        };
        if let Some(p) = registry.projections.lock().get_mut(name) {
            p.generation = generation;
            p.rebuilding = false;
        }
        registry.swaps.send_modify(|n| *n += 1);
        tracing::info!(
            projection = name,
            generation,
            "rebuilt projection swapped in"
        );
        if let Some(old) = old {
            old.addr.do_send(Stop);
            let old_views = ViewSet::new(state, name, generation - 1);
            let cleanup = async move {
                // Drop the old views once the old subscriber has finished its page, and
                // queries that resolved the old generation just before the swap have had
                // time to finish reading it. If the runtime stops first, registering the
                // projection again drops them.
                for _ in 0..1000 {
                    if !old.addr.connected() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(OLD_GENERATION_GRACE).await;
                if let Err(e) = old_views.drop_all() {
                    tracing::warn!(error = %e, "cannot drop an old projection generation");
                }
            };
            if let Some(arbiter) = self.arbiter() {
                arbiter.spawn(cleanup);
            }
        }
        Ok(())
    }

    /// See [`Runtime::process_manager`](crate::Runtime::process_manager).
    pub(crate) fn process_manager<P: ProcessManager>(
        &self,
        name: &str,
        manager: P,
        options: SubscriberOptions,
    ) -> Result<(), SubscribeError> {
        self.check_free(name)?;
        let writes = Arc::new(PageWrites::default());
        // '#' is not allowed in projection names, so no projection's views share this prefix.
        let views =
            ViewSet::new(self.state.clone(), &format!("#pm-{name}"), 0).with_buffer(writes.clone());
        let subscriber =
            ProcessSubscriber::new(name, manager, &views, writes.clone(), self.sink.clone())?;
        let entry = self.start_subscriber(
            name,
            Box::new(subscriber),
            writes,
            options,
            SubscriberStatus::CatchingUp,
        )?;
        self.insert_entry(name, entry)?;
        self.start_deadline_timer();
        Ok(())
    }

    fn start_deadline_timer(&self) {
        if self.deadline_timer.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = self.me.clone();
        // Built on the arbiter's thread: sending commands is not a `Send` future.
        let start = move || {
            actix_rt::spawn(async move {
                // Among nodes sharing a store, one fires the deadlines: the owner of this lease.
                let mut lease: Option<Lease> = None;
                loop {
                    tokio::time::sleep(DEADLINE_TICK).await;
                    let Some(registry) = weak.upgrade() else {
                        return;
                    };
                    let Some(_alive) = registry.sink.keep_alive() else {
                        return;
                    };
                    if !lease.as_ref().is_some_and(Lease::is_valid) {
                        lease = match registry.state.claim(DEADLINE_LEASE) {
                            Ok(lease) => lease,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot claim the deadline timer; trying again next tick");
                                None
                            }
                        };
                    }
                    let Some(held) = &lease else {
                        continue;
                    };
                    match fire_due(&*registry.state, &*registry.sink, held).await {
                        Ok(_) => {}
                        Err(e)
                            if e.downcast_ref::<StoreError>()
                                .is_some_and(|e| matches!(e, StoreError::Fenced { .. })) =>
                        {
                            tracing::info!("another node fires the deadlines now");
                            lease = None;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "firing deadlines failed; trying again next tick");
                        }
                    }
                }
            });
        };
        if let Some(arbiter) = self.arbiter() {
            arbiter.spawn_fn(start);
        }
    }

    /// See [`Runtime::is_projection`](crate::Runtime::is_projection).
    pub(crate) fn is_projection(&self, name: &str) -> bool {
        self.projections.lock().contains_key(name)
    }

    /// See [`Runtime::subscribers`](crate::Runtime::subscribers).
    pub(crate) fn subscribers(&self) -> Vec<SubscriberInfo> {
        let entries: Vec<(String, Entry)> = self
            .subscribers
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut infos: Vec<SubscriberInfo> = entries
            .into_iter()
            .map(|(name, entry)| {
                let mut info = entry.shared.info(&*self.log);
                info.name = name;
                info
            })
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    /// See [`Runtime::subscriber`](crate::Runtime::subscriber).
    pub(crate) fn subscriber(&self, name: &str) -> Option<SubscriberInfo> {
        let entry = self.entry(name)?;
        let mut info = entry.shared.info(&*self.log);
        info.name = name.to_string();
        Some(info)
    }

    /// See [`Runtime::wait_for`](crate::Runtime::wait_for).
    pub(crate) async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<Position, WaitError> {
        let mut entry = self
            .entry(name)
            .ok_or_else(|| WaitError::Unknown(name.to_string()))?;
        let mut checkpoint = entry.shared.checkpoint.subscribe();
        let mut swaps = self.swaps.subscribe();
        let started = std::time::Instant::now();
        let reached = *checkpoint.borrow();
        if entry.shared.has_read(position, &*self.log) {
            return Ok(reached.max(position));
        }
        let mut expired = self.timer(timeout);
        loop {
            // A rebuilt projection replaces its subscriber: follow the name.
            if let Some(next) = self
                .entry(name)
                .filter(|n| !Arc::ptr_eq(&n.shared, &entry.shared))
            {
                checkpoint = next.shared.checkpoint.subscribe();
                entry = next;
            }
            let reached = *checkpoint.borrow_and_update();
            if entry.shared.has_read(position, &*self.log) {
                return Ok(reached.max(position));
            }
            let status = entry.shared.status.lock().clone();
            if matches!(
                status,
                SubscriberStatus::Stopped | SubscriberStatus::Failed(_)
            ) {
                return Err(WaitError::NotRunning {
                    name: name.to_string(),
                    status,
                    reached,
                });
            }
            let advanced = {
                let changed = Box::pin(checkpoint.changed());
                let swapped = Box::pin(swaps.changed());
                let progress = futures::future::select(changed, swapped);
                matches!(
                    futures::future::select(progress, &mut expired).await,
                    futures::future::Either::Left((
                        futures::future::Either::Left((Ok(()), _))
                            | futures::future::Either::Right((Ok(()), _)),
                        _
                    ))
                )
            };
            if !advanced {
                return Err(WaitError::Timeout {
                    name: name.to_string(),
                    wanted: position,
                    reached: *checkpoint.borrow(),
                    waited: started.elapsed(),
                });
            }
        }
    }

    /// A future that resolves after `after`, timed on the runtime's own arbiter (so callers
    /// need no particular executor).
    /// The timer task ends early when the receiver is dropped, so a wait that succeeds at once
    /// leaves nothing sleeping behind it.
    fn timer(&self, after: Duration) -> oneshot::Receiver<()> {
        let (mut tx, rx) = oneshot::channel();
        if let Some(arbiter) = self.arbiter() {
            arbiter.spawn(async move {
                let sleep = Box::pin(tokio::time::sleep(after));
                let abandoned = Box::pin(tx.cancellation());
                if let futures::future::Either::Left(..) =
                    futures::future::select(sleep, abandoned).await
                {
                    let _ = tx.send(());
                }
            });
        }
        rx
    }

    /// See [`Runtime::parked`](crate::Runtime::parked).
    pub(crate) fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>, SubscribeError> {
        let entry = self
            .entry(name)
            .ok_or_else(|| SubscribeError::Unknown(name.to_string()))?;
        Ok(self.state.parked(&entry.shared.name, PARKED_LISTED_MAX)?)
    }

    /// See [`Runtime::retry_parked`](crate::Runtime::retry_parked).
    pub(crate) async fn retry_parked(
        &self,
        name: &str,
        position: Position,
    ) -> Result<(), RetryError> {
        let entry = self
            .entry(name)
            .ok_or_else(|| RetryError::UnknownSubscriber(name.to_string()))?;
        let is_projection = self.projections.lock().contains_key(name);
        if is_projection {
            let state = &self.state;
            if !is_parked(&**state, &entry.shared.name, position)? {
                return Err(RetryError::NotParked(position));
            }
            self.rebuild(name)
                .map_err(|e| RetryError::Failed(format!("cannot rebuild: {e}")))?;
            state.unpark(&entry.shared.name, position)?;
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        entry
            .addr
            .try_send(RetryParked { position, reply })
            .map_err(|_| RetryError::Stopped)?;
        answer.await.unwrap_or(Err(RetryError::Stopped))
    }

    /// See [`Runtime::stop_subscriber`](crate::Runtime::stop_subscriber).
    pub(crate) fn stop_subscriber(&self, name: &str) -> bool {
        self.entry(name).is_some_and(|e| {
            e.addr.do_send(Stop);
            true
        })
    }

    /// Stops every subscriber after its current page and waits (up to `timeout`) until they
    /// have stopped — first thing at shutdown, so that no subscriber is cut off mid-page by
    /// the runtime refusing its commands.
    pub(crate) async fn stop_subscribers(&self, timeout: Duration) {
        let entries: Vec<Entry> = self.subscribers.lock().values().cloned().collect();
        for entry in &entries {
            entry.addr.do_send(Stop);
        }
        let started = std::time::Instant::now();
        while entries.iter().any(|e| e.addr.connected()) && started.elapsed() < timeout {
            let _ = self.timer(Duration::from_millis(5)).await;
        }
    }
}

fn active_generation(state: &dyn StateStore, name: &str) -> Result<u64, SubscribeError> {
    match state.get(GENERATIONS, name.as_bytes())? {
        Some(bytes) => {
            let arr: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt {
                    what: format!("generation of projection {name}"),
                    reason: "not 8 bytes".into(),
                })?;
            Ok(u64::from_be_bytes(arr))
        }
        None => Ok(0),
    }
}
