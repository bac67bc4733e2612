//! A subscriber at work: the actor that reads the log page by page from its checkpoint, hands
//! each event to its [`Subscriber`], applies the failure policy, and commits the page's writes
//! with the checkpoint (see the [folder's docs](super)).

use std::sync::Arc;
use std::time::Duration;

use actix::fut::{self, ActorFutureExt, WrapFuture};
use actix::{
    Actor, ActorContext, AsyncContext, AtomicResponse, Context, Handler, Message, SpawnHandle,
};
use futures::channel::oneshot;
use parking_lot::Mutex;

use super::page::PageWrites;
use super::reader::LogReader;
use super::subscriber::{
    is_transient, FailurePolicy, HandlerError, Interrupted, RetryError, Subscriber, SubscriberInfo,
    SubscriberOptions, SubscriberStatus, FOLLOW_INTERVAL, STALL_PAUSE_MAX,
};
use crate::envelope::RecordedEvent;
use crate::store::{Changes, EventStore, HeadWatch, Lease, ParkedEvent, StateStore, StoreError};
use crate::types::{Position, Timestamp};

/// State shared between a subscriber actor and the runtime.
#[derive(Debug)]
pub(crate) struct SubscriberShared {
    pub(crate) name: Arc<str>,
    pub(crate) status: Mutex<SubscriberStatus>,
    pub(crate) checkpoint: tokio::sync::watch::Sender<Position>,
    /// For a subscriber of some aggregate types only, the store's watch of them
    /// ([`EventStore::watch_types`]).
    pub(crate) types: Option<HeadWatch>,
}

impl SubscriberShared {
    pub(crate) fn new(
        name: Arc<str>,
        checkpoint: Position,
        status: SubscriberStatus,
        types: Option<HeadWatch>,
    ) -> SubscriberShared {
        SubscriberShared {
            name,
            status: Mutex::new(status),
            checkpoint: tokio::sync::watch::Sender::new(checkpoint),
            types,
        }
    }

    fn set_status(&self, status: SubscriberStatus) {
        let mut current = self.status.lock();
        // A rebuilding subscriber stays "rebuilding" until it is swapped in.
        let keep = *current == SubscriberStatus::Rebuilding
            && matches!(
                status,
                SubscriberStatus::Live
                    | SubscriberStatus::CatchingUp
                    | SubscriberStatus::Retrying(_)
            );
        if !keep {
            *current = status;
        }
    }

    /// Whether the subscriber has handled everything up to `position` that it reads: its
    /// checkpoint is there, or — for a subscriber of some aggregate types — the head is there
    /// and no event of its types lies beyond its checkpoint (its checkpoint follows such a head
    /// within [`FOLLOW_INTERVAL`] only).
    pub(crate) fn has_read(&self, position: Position, store: &dyn EventStore) -> bool {
        let checkpoint = *self.checkpoint.borrow();
        checkpoint >= position || self.nothing_beyond(checkpoint, position, store)
    }

    /// For a subscriber of some aggregate types: whether the head is at `position` or beyond
    /// and no event of its types lies beyond `checkpoint`. The head first, then the watch of
    /// the types: the watch moves before the head does ([`EventStore::watch_types`]).
    fn nothing_beyond(
        &self,
        checkpoint: Position,
        position: Position,
        store: &dyn EventStore,
    ) -> bool {
        self.types.as_ref().is_some_and(|types| {
            let head = store.head_position();
            head >= position && *types.borrow() <= checkpoint
        })
    }

    /// Progress against the store's head. A subscriber of some aggregate types has no lag when
    /// no event of its types lies beyond its checkpoint, however far the head has moved on
    /// with others (its checkpoint follows within [`FOLLOW_INTERVAL`]).
    pub(crate) fn info(&self, store: &dyn EventStore) -> SubscriberInfo {
        let checkpoint = *self.checkpoint.borrow();
        let head = store.head_position();
        let nothing_to_read = self.nothing_beyond(checkpoint, head, store);
        let lag_events = if nothing_to_read {
            0
        } else {
            head.0.saturating_sub(checkpoint.0)
        };
        let lag_seconds = if lag_events == 0 {
            0.0
        } else {
            store
                .read_all(checkpoint.next(), 1)
                .ok()
                .and_then(|events| events.first().map(|e| e.meta.recorded_at))
                .map_or(0.0, |at| {
                    Timestamp::now().0.saturating_sub(at.0) as f64 / 1e6
                })
        };
        SubscriberInfo {
            name: self.name.to_string(),
            checkpoint,
            head,
            lag_events,
            lag_seconds,
            status: self.status.lock().clone(),
        }
    }
}

/// The part of a subscriber that runs inside its actor's futures.
struct Worker {
    subscriber: Box<dyn Subscriber>,
    store: Arc<dyn EventStore>,
    /// The log, read through the reader all subscribers share.
    reader: Arc<LogReader>,
    state: Arc<dyn StateStore>,
    /// The page's stored effects, committed with the checkpoint.
    writes: Arc<PageWrites>,
    shared: Arc<SubscriberShared>,
    options: SubscriberOptions,
    /// The position handled up to (committed at the end of the page).
    checkpoint: Position,
    /// The checkpoint last committed.
    committed: Position,
    /// Store errors in a row (0 once a page goes through): the pause before the next attempt
    /// doubles with each.
    stalls: u32,
    /// This node's ownership of the subscriber (see [`Lease`]): claimed before the first page,
    /// and again after it is lost.
    lease: Option<Lease>,
    /// When this node last tried to claim the subscriber (on standby).
    claimed_at: Option<std::time::Instant>,
    /// When the checkpoint was last committed: a page without stored effects commits it only
    /// once [`CHECKPOINT_DEFER`] has passed since (see [`Worker::save`]).
    committed_at: std::time::Instant,
}

/// How long the checkpoint may go uncommitted while the pages handled store nothing.
///
/// A page whose events store nothing (a projection of other aggregate types, a process manager
/// that starts no instance) need not commit its checkpoint at once: handling those events again
/// after a crash stores nothing either, and delivery is at least once anyway. Committing it
/// at most this often saves one state-store commit per page: at the head, where a page is the
/// batch or two written since the last one, that is one commit per journal batch per
/// subscriber. The checkpoint this node publishes (lag, read-your-writes waits on this node)
/// moves at once; what other nodes read (standby, waits there) trails by at most this, and by
/// nothing once the subscriber is idle at the head (the deferred checkpoint is committed then).
pub(crate) const CHECKPOINT_DEFER: Duration = Duration::from_millis(50);

/// How often a subscriber that another node owns tries to take it over.
pub const CLAIM_INTERVAL: Duration = Duration::from_secs(1);

/// How often a subscriber on standby reads the owner's checkpoint, so that read-your-writes
/// waits (and lag) on this node follow the owner's progress.
const STANDBY_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
enum Pumped {
    More,
    AtHead,
    /// A handler said the event cannot be handled *now* (see [`Interrupted`]): pump again
    /// after this pause, from the checkpoint.
    Interrupted(Duration),
    Failed,
}

impl Worker {
    /// Makes sure this node owns the subscriber before it pumps: `Some` if it does not (it
    /// waits, and tries again).
    fn own(&mut self) -> Option<Pumped> {
        if self.lease.as_ref().is_some_and(Lease::is_valid) {
            return None;
        }
        if self
            .claimed_at
            .is_some_and(|at| at.elapsed() < CLAIM_INTERVAL)
        {
            return Some(self.follow_owner());
        }
        self.claimed_at = Some(std::time::Instant::now());
        match self.state.claim(&self.shared.name) {
            Ok(Some(lease)) => {
                // A previous owner may have moved the checkpoint on: go on from where it is.
                let checkpoint = match self.state.load_checkpoint(&self.shared.name) {
                    Ok(checkpoint) => checkpoint,
                    Err(e) => {
                        let _ = self.state.release(&self.shared.name);
                        return Some(self.stall(&format!("cannot read the checkpoint: {e}")));
                    }
                };
                drop(self.writes.take());
                self.checkpoint = checkpoint;
                self.committed = checkpoint;
                self.shared.checkpoint.send_replace(checkpoint);
                self.lease = Some(lease);
                None
            }
            Ok(None) => {
                self.shared.set_status(SubscriberStatus::Standby);
                Some(self.follow_owner())
            }
            Err(e) if is_transient(&e) => {
                Some(self.stall(&format!("cannot claim the subscriber: {e}")))
            }
            Err(e) => Some(self.fail(&format!("cannot claim the subscriber: {e}"))),
        }
    }

    /// On standby: takes the owner's committed checkpoint as this node's view of the
    /// subscriber's progress, and waits a little.
    fn follow_owner(&mut self) -> Pumped {
        if let Ok(checkpoint) = self.state.load_checkpoint(&self.shared.name) {
            self.checkpoint = checkpoint;
            self.committed = checkpoint;
            self.shared.checkpoint.send_if_modified(|current| {
                let moved = *current != checkpoint;
                *current = checkpoint;
                moved
            });
        }
        Pumped::Interrupted(STANDBY_POLL)
    }

    /// Processes one page of the log.
    async fn pump(&mut self) -> Pumped {
        if let Some(pumped) = self.own() {
            return pumped;
        }
        let head = self.store.head_position();
        if self.checkpoint >= head {
            self.shared.set_status(SubscriberStatus::Live);
            return Pumped::AtHead;
        }
        let page = self.options.page_events.get();
        let events = match self.reader.read(self.checkpoint.next(), page) {
            Ok(events) => events,
            Err(e) if is_transient(&e) => return self.stall(&format!("cannot read the log: {e}")),
            Err(e) => return self.fail(&format!("cannot read the log: {e}")),
        };
        for event in events.iter() {
            if !self.options.reads(event.stream.aggregate_type()) {
                self.checkpoint = event.position;
                continue;
            }
            let handled = self.handle_with_retries(event).await;
            if let Err((error, _)) = &handled {
                if error.downcast_ref::<Interrupted>().is_some() {
                    tracing::debug!(subscriber = %self.shared.name, position = %event.position, %error, "pausing");
                    // The page's earlier events are complete only once their deferred effects
                    // are: settle them before the checkpoint moves past them.
                    if let Some(pumped) = self.settle().await {
                        return pumped;
                    }
                    if let Err(pumped) = self.save() {
                        return pumped;
                    }
                    return Pumped::Interrupted(
                        self.options.backoff.max(Duration::from_millis(10)),
                    );
                }
            }
            if let Err((error, attempts)) = handled {
                match self.options.on_failure {
                    FailurePolicy::Park => {
                        tracing::warn!(subscriber = %self.shared.name, position = %event.position, %error, "parking an event");
                        let parked = ParkedEvent {
                            position: event.position,
                            reason: error.to_string(),
                            attempts,
                            parked_at: Timestamp::now(),
                        };
                        if let Err(e) = self.writes.park(&self.shared.name, &parked) {
                            // Not parked, so not passed either: settle what came before it and
                            // come back to it from the checkpoint.
                            if let Some(pumped) = self.settle().await {
                                return pumped;
                            }
                            if let Err(pumped) = self.save() {
                                return pumped;
                            }
                            return self
                                .fail(&format!("cannot park event {}: {e}", event.position));
                        }
                    }
                    FailurePolicy::Stop => {
                        if let Some(pumped) = self.settle().await {
                            return pumped;
                        }
                        if let Err(pumped) = self.save() {
                            return pumped;
                        }
                        return self.fail(&format!(
                            "event {} failed {attempts} times: {error}",
                            event.position
                        ));
                    }
                }
            }
            self.checkpoint = event.position;
        }
        if let Some(pumped) = self.settle().await {
            return pumped;
        }
        if let Err(pumped) = self.save() {
            return pumped;
        }
        self.stalls = 0;
        if self.checkpoint >= head {
            self.shared.set_status(SubscriberStatus::Live);
        } else {
            self.shared.set_status(SubscriberStatus::CatchingUp);
        }
        Pumped::More
    }

    /// A store error that may pass: report it, and pump again from the checkpoint after a
    /// pause that doubles with each error in a row, up to [`STALL_PAUSE_MAX`].
    fn stall(&mut self, reason: &str) -> Pumped {
        self.stalls = self.stalls.saturating_add(1);
        let pause = self
            .options
            .backoff
            .max(Duration::from_millis(10))
            .saturating_mul(1u32 << self.stalls.min(16))
            .min(STALL_PAUSE_MAX);
        tracing::warn!(subscriber = %self.shared.name, reason, attempts = self.stalls, ?pause, "subscriber waiting after a store error");
        self.shared
            .set_status(SubscriberStatus::Retrying(reason.to_string()));
        Pumped::Interrupted(pause)
    }

    /// Completes the deferred effects of the events handled so far ([`Subscriber::flush`]);
    /// `Some` ends the page early.
    async fn settle(&mut self) -> Option<Pumped> {
        match self.subscriber.flush().await {
            Ok(()) => None,
            Err(failures) => self.flush_failed(failures),
        }
    }

    /// Applies the failure policy to effects that `flush` could not complete. `Some` ends the
    /// page early.
    fn flush_failed(&mut self, failures: Vec<(Position, HandlerError)>) -> Option<Pumped> {
        let first = failures.iter().map(|(p, _)| *p).min()?;
        if failures.iter().any(|(_, e)| e.is::<Interrupted>()) {
            // Resume before the first failed event: its handling is redone, and what was
            // already applied is skipped by the subscriber itself.
            self.checkpoint = Position(first.0.saturating_sub(1)).min(self.checkpoint);
            if let Err(pumped) = self.save() {
                return Some(pumped);
            }
            return Some(Pumped::Interrupted(
                self.options.backoff.max(Duration::from_millis(10)),
            ));
        }
        match self.options.on_failure {
            FailurePolicy::Park => {
                let mut parked_positions = std::collections::BTreeSet::new();
                for (position, error) in failures {
                    if !parked_positions.insert(position) {
                        continue;
                    }
                    tracing::warn!(subscriber = %self.shared.name, %position, %error, "parking an event");
                    let parked = ParkedEvent {
                        position,
                        reason: error.to_string(),
                        attempts: 1,
                        parked_at: Timestamp::now(),
                    };
                    if let Err(e) = self.writes.park(&self.shared.name, &parked) {
                        return Some(self.fail(&format!("cannot park event {position}: {e}")));
                    }
                }
                None
            }
            FailurePolicy::Stop => {
                let reason = failures
                    .first()
                    .map(|(_, e)| e.to_string())
                    .unwrap_or_default();
                self.checkpoint = Position(first.0.saturating_sub(1)).min(self.checkpoint);
                if let Err(pumped) = self.save() {
                    return Some(pumped);
                }
                Some(self.fail(&format!("event {first} failed: {reason}")))
            }
        }
    }

    async fn handle_with_retries(
        &mut self,
        event: &RecordedEvent,
    ) -> Result<(), (HandlerError, u32)> {
        let mut pause = self.options.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.subscriber.handle(event).await {
                Ok(()) => return Ok(()),
                Err(e) if attempts > self.options.retries || e.is::<Interrupted>() => {
                    return Err((e, attempts))
                }
                Err(e) => {
                    tracing::debug!(subscriber = %self.shared.name, position = %event.position, error = %e, attempts, "retrying an event");
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                }
            }
        }
    }

    /// Commits the page: its held writes and the checkpoint, atomically. If the commit fails,
    /// nothing of the page is stored: the checkpoint goes back to the last one committed (the
    /// page is redone from there) and the subscriber pauses as after any store error.
    ///
    /// A page without stored effects only publishes its checkpoint, and leaves the commit for
    /// later ([`CHECKPOINT_DEFER`]), unless `force`.
    fn save(&mut self) -> Result<(), Pumped> {
        self.save_with(false)
    }

    /// Whether a checkpoint is published but not committed.
    fn deferred(&self) -> bool {
        self.checkpoint != self.committed
    }

    fn save_with(&mut self, force: bool) -> Result<(), Pumped> {
        let mut changes = self.writes.take();
        if changes.is_empty() {
            if self.checkpoint == self.committed {
                return Ok(());
            }
            if !force && self.committed_at.elapsed() < CHECKPOINT_DEFER {
                // Everything up to the checkpoint is handled and nothing of it is stored:
                // waits and lag on this node may go by it already.
                self.shared.checkpoint.send_replace(self.checkpoint);
                return Ok(());
            }
        }
        changes.save_checkpoint(&self.shared.name, self.checkpoint);
        if let Some(lease) = &self.lease {
            changes.fence(&self.shared.name, lease);
        }
        match self.state.commit(changes) {
            Ok(()) => {
                self.committed = self.checkpoint;
                self.committed_at = std::time::Instant::now();
                self.shared.checkpoint.send_replace(self.checkpoint);
                Ok(())
            }
            Err(StoreError::Fenced { .. }) => {
                // Another node took the subscriber over: nothing of this page was written.
                tracing::info!(subscriber = %self.shared.name, "another node owns the subscriber now; standing by");
                self.checkpoint = self.committed;
                self.lease = None;
                self.claimed_at = Some(std::time::Instant::now());
                self.shared.set_status(SubscriberStatus::Standby);
                Err(Pumped::Interrupted(STANDBY_POLL))
            }
            Err(e) => {
                self.checkpoint = self.committed;
                let reason = format!("cannot commit a page: {e}");
                Err(if is_transient(&e) {
                    self.stall(&reason)
                } else {
                    self.fail(&reason)
                })
            }
        }
    }

    fn fail(&mut self, reason: &str) -> Pumped {
        tracing::error!(subscriber = %self.shared.name, reason, "subscriber failed");
        self.shared
            .set_status(SubscriberStatus::Failed(reason.to_string()));
        Pumped::Failed
    }

    /// Handles one parked event again; unparks it on success.
    async fn retry_parked(&mut self, position: Position) -> Result<(), RetryError> {
        // Only the owner handles it (its commit is fenced by the lease), and before the
        // handler runs: claim now if this node has not tried yet — a retry can arrive right
        // after `subscribe`, before the first page has claimed the subscriber.
        if self.own().is_some() {
            return Err(not_owner());
        }
        if !is_parked(&*self.state, &self.shared.name, position)? {
            return Err(RetryError::NotParked(position));
        }
        let event = self
            .store
            .read_all(position, 1)?
            .into_iter()
            .find(|e| e.position == position)
            .ok_or(RetryError::NotParked(position))?;
        self.subscriber
            .handle(&event)
            .await
            .map_err(|e| RetryError::Failed(e.to_string()))?;
        if let Err(failures) = self.subscriber.flush().await {
            let reason = failures
                .first()
                .map(|(_, e)| e.to_string())
                .unwrap_or_default();
            // What the retry changed is not kept: the event stays parked.
            drop(self.writes.take());
            return Err(RetryError::Failed(reason));
        }
        let mut changes: Changes = self.writes.take();
        changes.unpark(&self.shared.name, position);
        match &self.lease {
            Some(lease) => changes.fence(&self.shared.name, lease),
            None => return Err(not_owner()),
        }
        self.state.commit(changes)?;
        Ok(())
    }
}

/// The answer to a retry on a node that does not own the subscriber.
fn not_owner() -> RetryError {
    RetryError::Failed("this node does not own the subscriber; retry on the node that does".into())
}

/// Whether subscriber `name` has an event parked at `position`.
pub(crate) fn is_parked(
    state: &dyn StateStore,
    name: &str,
    position: Position,
) -> Result<bool, StoreError> {
    let key = crate::store::state::parked_key(name, position);
    Ok(state.get(crate::store::state::PARKED, &key)?.is_some())
}

/// A subscriber's actor: one page per message, so control messages (stop, retry) are handled
/// between pages.
pub(crate) struct SubscriberActor {
    worker: Option<Worker>,
    head: HeadWatch,
    /// For a subscriber of some aggregate types only, the store's watch of them: the wait at
    /// the head ends at once when it moves, and otherwise once the head has moved and
    /// [`FOLLOW_INTERVAL`] has passed.
    types: Option<HeadWatch>,
    /// A `Pump` arrived while the worker was out (busy with a retry): pump once it is back.
    /// (actix may run a future queued by `notify` before a handler's `ctx.wait` takes effect.)
    pump_pending: bool,
    /// A commit of a deferred checkpoint is scheduled (see [`CHECKPOINT_DEFER`]).
    commit_scheduled: bool,
    /// The wait for the head to move ([`SubscriberActor::wait_for_head`]), if one is pending:
    /// at most one at a time, so that one head change is one pump.
    waiter: Option<SpawnHandle>,
}

impl SubscriberActor {
    pub(crate) fn new(
        subscriber: Box<dyn Subscriber>,
        stores: &crate::store::Stores,
        reader: Arc<LogReader>,
        writes: Arc<PageWrites>,
        shared: Arc<SubscriberShared>,
        options: SubscriberOptions,
    ) -> SubscriberActor {
        let head = stores.log.watch_head();
        let types = shared.types.clone();
        let checkpoint = *shared.checkpoint.borrow();
        SubscriberActor {
            worker: Some(Worker {
                subscriber,
                store: stores.log.clone(),
                reader,
                state: stores.state.clone(),
                writes,
                shared,
                options,
                checkpoint,
                committed: checkpoint,
                stalls: 0,
                lease: None,
                claimed_at: None,
                committed_at: std::time::Instant::now(),
            }),
            head,
            types,
            pump_pending: false,
            commit_scheduled: false,
            waiter: None,
        }
    }

    /// Commits a deferred checkpoint once [`CHECKPOINT_DEFER`] has passed, if no page has
    /// done it by then: at the head with nothing more to read, nothing else would.
    fn schedule_commit(&mut self, ctx: &mut Context<Self>) {
        if self.commit_scheduled || !self.worker.as_ref().is_some_and(Worker::deferred) {
            return;
        }
        self.commit_scheduled = true;
        ctx.run_later(CHECKPOINT_DEFER, Self::commit_deferred);
    }

    fn commit_deferred(&mut self, ctx: &mut Context<Self>) {
        self.commit_scheduled = false;
        let Some(worker) = &mut self.worker else {
            // Out on a page or a retry: a page commits on its own, a retry does not, so look
            // again later.
            self.commit_scheduled = true;
            ctx.run_later(CHECKPOINT_DEFER, Self::commit_deferred);
            return;
        };
        if !worker.deferred() {
            return;
        }
        if let Err(pumped) = worker.save_with(true) {
            // The store refused: the checkpoint went back to the last one committed. Go on as
            // after a page that ended so (stall, fail, or stand by), instead of waiting for
            // the head, which may not move again.
            if let Some(waiter) = self.waiter.take() {
                ctx.cancel_future(waiter);
            }
            self.after(pumped, ctx);
        }
    }

    /// What follows a page (or a commit) that ended with `pumped`.
    fn after(&mut self, pumped: Pumped, ctx: &mut Context<Self>) {
        match pumped {
            Pumped::More => {
                ctx.notify(Pump);
            }
            Pumped::AtHead => self.wait_for_head(ctx),
            Pumped::Interrupted(pause) => {
                ctx.run_later(pause, |_, ctx| ctx.notify(Pump));
            }
            Pumped::Failed => ctx.stop(),
        }
    }

    /// Pumps again once the head moves past the checkpoint; for a subscriber of some aggregate
    /// types only, at once when an event of one of them is acknowledged, and otherwise no
    /// sooner than [`FOLLOW_INTERVAL`] from now.
    fn wait_for_head(&mut self, ctx: &mut Context<Self>) {
        self.schedule_commit(ctx);
        if let Some(waiter) = self.waiter.take() {
            ctx.cancel_future(waiter);
        }
        let Some(worker) = self.worker.as_ref() else {
            // Out on a retry: the Pump handler notes it, and it pumps once the worker is back.
            ctx.notify(Pump);
            return;
        };
        let checkpoint = worker.checkpoint;
        let visible = worker.store.head_position();
        let mut head = self.head.clone();
        let mut types = self.types.clone();
        let wake = types.as_mut().unwrap_or(&mut head);
        // The type watch moves before the head does: ahead of it, wait for the head.
        let woken = *wake.borrow_and_update() > checkpoint;
        if woken && visible > checkpoint {
            ctx.notify(Pump);
            return;
        }
        let waiter = ctx.spawn(
            async move {
                match types {
                    None => {
                        let _ = head.changed().await;
                    }
                    Some(_) if woken => head_past(&mut head, checkpoint).await,
                    Some(mut types) => {
                        let follow = async {
                            tokio::time::sleep(FOLLOW_INTERVAL).await;
                            head_past(&mut head, checkpoint).await;
                        };
                        let of_types = std::pin::pin!(types.changed());
                        let _ = futures::future::select(of_types, std::pin::pin!(follow)).await;
                    }
                }
            }
            .into_actor(self)
            .map(|(), act, ctx| {
                act.waiter = None;
                ctx.notify(Pump);
            }),
        );
        self.waiter = Some(waiter);
    }
}

/// Returns once `head` is past `checkpoint` (never, if the store is gone: nothing will move).
async fn head_past(head: &mut HeadWatch, checkpoint: Position) {
    while *head.borrow_and_update() <= checkpoint {
        if head.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Actor for SubscriberActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Pump);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // Another node can take the subscriber at once.
        if let Some(worker) = &mut self.worker {
            if let Some(lease) = worker.lease.as_ref().filter(|l| l.is_valid()) {
                // Only a checkpoint whose page left nothing held: a page a failure cut short
                // (its held writes not committed) must be read again.
                let held = worker.writes.take();
                if worker.deferred() && held.is_empty() {
                    // Not to read those events again after a restart.
                    let mut changes = Changes::default();
                    changes.save_checkpoint(&worker.shared.name, worker.checkpoint);
                    changes.fence(&worker.shared.name, lease);
                    if let Err(e) = worker.state.commit(changes) {
                        tracing::debug!(subscriber = %worker.shared.name, error = %e, "could not commit the checkpoint on stopping");
                    }
                }
            }
            if worker.lease.is_some() {
                if let Err(e) = worker.state.release(&worker.shared.name) {
                    tracing::debug!(subscriber = %worker.shared.name, error = %e, "could not release the subscriber");
                }
            }
        }
    }
}

/// Process the next page.
struct Pump;

impl Message for Pump {
    type Result = ();
}

impl Handler<Pump> for SubscriberActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Pump, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(mut worker) = self.worker.take() else {
            self.pump_pending = true;
            return AtomicResponse::new(Box::pin(fut::ready(())));
        };
        AtomicResponse::new(Box::pin(
            async move {
                let pumped = worker.pump().await;
                (worker, pumped)
            }
            .into_actor(self)
            .map(|(worker, pumped), act, ctx| {
                act.worker = Some(worker);
                act.pump_pending = false;
                act.after(pumped, ctx);
            }),
        ))
    }
}

/// Stop the subscriber after the current page.
pub(crate) struct Stop;

impl Message for Stop {
    type Result = ();
}

impl Handler<Stop> for SubscriberActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        if let Some(worker) = &self.worker {
            let mut status = worker.shared.status.lock();
            if !matches!(*status, SubscriberStatus::Failed(_)) {
                *status = SubscriberStatus::Stopped;
            }
        }
        ctx.stop();
    }
}

/// Retry one parked event (between pages).
pub(crate) struct RetryParked {
    pub(crate) position: Position,
    pub(crate) reply: oneshot::Sender<Result<(), RetryError>>,
}

impl Message for RetryParked {
    type Result = ();
}

impl Handler<RetryParked> for SubscriberActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: RetryParked, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(mut worker) = self.worker.take() else {
            let _ = msg.reply.send(Err(RetryError::Stopped));
            return AtomicResponse::new(Box::pin(fut::ready(())));
        };
        AtomicResponse::new(Box::pin(
            async move {
                let result = worker.retry_parked(msg.position).await;
                let _ = msg.reply.send(result);
                worker
            }
            .into_actor(self)
            .map(|worker, act, ctx| {
                act.worker = Some(worker);
                if std::mem::take(&mut act.pump_pending) {
                    ctx.notify(Pump);
                }
            }),
        ))
    }
}
