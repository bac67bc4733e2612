//! The aggregate actor: one actix actor per live aggregate instance.
//!
//! Life of an actor:
//! 1. **Activation** ([`Host::route`](crate::host)): started on an arbiter on the first command
//!    for its id. In `started` it rehydrates — latest snapshot, then the events after it —
//!    holding one of the runtime's rehydration permits, inside `ctx.wait`, so no command runs
//!    before the state is complete.
//! 2. **Commands** run one at a time: the handler returns an [`AtomicResponse`], which blocks
//!    the mailbox until the command is finished (decide → append → *durable* → apply → reply).
//!    Commands never interleave, so a decision always sees the state of every earlier command.
//! 3. **Snapshots** are taken every `snapshot_every` events, after the reply.
//! 4. **Passivation**: after `idle_timeout` without commands, or when evicted by the live-actor
//!    cap, the actor leaves the routing table and stops. A command that reaches a stopping actor
//!    was never started; it comes back to the caller, who routes it again.
//!
//! A store failure during an append stops the actor without acknowledging: it is not known
//! whether the events were persisted, so the state is rebuilt from the store on next use.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::{self, ActorFutureExt, WrapFuture};
use actix::{
    Actor, ActorContext, AsyncContext, AtomicResponse, Context, Handler, Message, ResponseActFuture,
};
use futures::channel::oneshot;
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::codec::{self};
use crate::command::{ExecuteOptions, ExecuteResult, Executed};
use crate::envelope::{CommitMeta, EncodedPayload, Envelope};
use crate::error::{ExecuteError, Limit, Overload};
use crate::shared::{Routing, Slot, TypeShared};
use crate::store::{
    AppendError, AppendKind, AppendRequest, CommandKey, CommitReceipt, Fingerprint, PendingEvent,
    Snapshot, StoreError, StoredOutcome,
};
use crate::types::{StreamId, Timestamp, Version};

/// Events read per page while rehydrating or catching up: bounds the memory of one read.
const REPLAY_PAGE_EVENTS: usize = 1024;

/// How often to retry after the journal reports that this actor's state is stale (another
/// instance of the same aggregate wrote in between, during an eviction race).
const STALE_RETRIES_MAX: u32 = 3;

/// A command for an actor. If the message is dropped before the actor starts it (the actor
/// stopped), `Drop` hands the command back to the caller, who routes it again.
pub(crate) struct Execute<A: Aggregate> {
    pub(crate) payload: Option<Payload<A>>,
}

pub(crate) struct Payload<A: Aggregate> {
    pub(crate) command: A::Command,
    pub(crate) options: ExecuteOptions,
    pub(crate) reply: oneshot::Sender<Reply<A>>,
    /// When the command entered the mailbox: its queue time is measured from here (or from
    /// the end of the aggregate's rehydration, if later).
    pub(crate) enqueued: Instant,
    /// Whether a command that waited too long is refused ([`Overload::QueueTime`]); the
    /// runtime's own commands (process managers, deadlines) are not, since their senders are
    /// bounded already and a refusal only makes them send again.
    pub(crate) sheddable: bool,
}

/// The actor's answer to an [`Execute`].
pub(crate) enum Reply<A: Aggregate> {
    /// The command ran (or was refused before running) with this result; `true` if the result
    /// is the stored outcome of an earlier execution with the same command id.
    Done(ExecuteResult<A>, bool),
    /// The actor stopped before starting the command: route it again.
    NotStarted(A::Command, ExecuteOptions),
}

impl<A: Aggregate> Message for Execute<A> {
    type Result = ();
}

impl<A: Aggregate> Drop for Execute<A> {
    fn drop(&mut self) {
        if let Some(p) = self.payload.take() {
            let _ = p.reply.send(Reply::NotStarted(p.command, p.options));
        }
    }
}

/// Tells an actor to stop (eviction or runtime shutdown). It first finishes the commands
/// queued before this message.
pub(crate) struct Passivate;

impl Message for Passivate {
    type Result = ();
}

/// The state of an aggregate loaded from the store.
pub(crate) struct Loaded<A> {
    pub(crate) state: A,
    pub(crate) version: Version,
    pub(crate) snapshot_version: Version,
    /// When the event at `version` was recorded (`Timestamp(0)` for a new stream).
    pub(crate) last_recorded_at: Timestamp,
}

/// Rebuilds an aggregate up to `up_to` (or its head): the latest snapshot at or below that
/// version whose schema is current, then replay of the events after it.
pub(crate) fn load<A: Aggregate>(
    store: &dyn crate::store::EventStore,
    stream: &StreamId,
    snapshot_schema_version: u32,
    up_to: Option<Version>,
) -> Result<Loaded<A>, ExecuteError> {
    let head = store.stream_head(stream)?;
    let target = up_to.map_or(head, |v| v.min(head));
    let mut loaded = Loaded {
        state: A::default(),
        version: Version(0),
        snapshot_version: Version(0),
        last_recorded_at: Timestamp(0),
    };
    if target == Version(0) {
        return Ok(loaded);
    }
    if let Some(snapshot) = store.load_snapshot(stream, target)? {
        if snapshot.schema_version != snapshot_schema_version {
            tracing::debug!(%stream, found = snapshot.schema_version, "ignoring a snapshot of another schema version");
        } else if recorded_at(store, stream, snapshot.version)? > snapshot.taken_at {
            // Taken of an event that is no longer in the log: a crash in relaxed mode lost the
            // stream's tail after the snapshot was taken, and the version was written again.
            tracing::warn!(%stream, version = %snapshot.version, "ignoring a snapshot taken before its version was last written (the log lost a tail it had seen)");
        } else {
            match codec::decode_plain::<A>(&snapshot.state) {
                Ok(state) => {
                    loaded.state = state;
                    loaded.version = snapshot.version;
                    loaded.snapshot_version = snapshot.version;
                }
                Err(e) => tracing::warn!(%stream, error = %e, "ignoring an undecodable snapshot"),
            }
        }
    }
    replay(
        store,
        stream,
        &mut loaded.state,
        &mut loaded.version,
        target,
    )?;
    loaded.last_recorded_at = recorded_at(store, stream, loaded.version)?;
    Ok(loaded)
}

/// When the event at `version` of `stream` was recorded (`Timestamp(0)` for version 0).
pub(crate) fn recorded_at(
    store: &dyn crate::store::EventStore,
    stream: &StreamId,
    version: Version,
) -> Result<Timestamp, ExecuteError> {
    if version == Version(0) {
        return Ok(Timestamp(0));
    }
    Ok(store
        .read_stream(stream, version, Some(version), 1)?
        .first()
        .map_or(Timestamp(0), |e| e.meta.recorded_at))
}

/// Applies the events of `stream` after `version` up to `target`, checking contiguity.
///
/// Events at their current schema version are decoded straight from the bytes the store lends
/// ([`EventStore::visit_stream`](crate::store::EventStore::visit_stream)), with no envelope.
/// An event the lent path cannot take — written with an older schema version (it needs the
/// upcaster and its envelope) or not decodable (the error must name it) — stops it; the rest
/// of that page is read as envelopes ([`RecordedEvent::upcast_each`](crate::RecordedEvent)),
/// then the lent path is tried again. Each time it stops, the envelope path takes twice as many
/// pages before the next try, so a stream of old events costs at most a few wasted page walks.
pub(crate) fn replay<A: Aggregate>(
    store: &dyn crate::store::EventStore,
    stream: &StreamId,
    state: &mut A,
    version: &mut Version,
    target: Version,
) -> Result<(), ExecuteError> {
    let (mut envelope_pages, mut envelope_pages_next) = (0u32, 1u32);
    while *version < target {
        if envelope_pages == 0 {
            let mut stopped = false;
            let lent = store.visit_stream(
                stream,
                version.next(),
                Some(target),
                REPLAY_PAGE_EVENTS,
                &mut |e| {
                    if e.version != version.next()
                        || e.schema_version != A::Event::current_schema_version(e.event_type)
                    {
                        stopped = true;
                        return ControlFlow::Break(());
                    }
                    match codec::decode_plain::<A::Event>(e.payload) {
                        Ok(event) => {
                            state.apply(&event);
                            *version = e.version;
                            ControlFlow::Continue(())
                        }
                        Err(_) => {
                            stopped = true;
                            ControlFlow::Break(())
                        }
                    }
                },
            )?;
            if stopped {
                envelope_pages = envelope_pages_next;
                envelope_pages_next = envelope_pages_next.saturating_mul(2);
            } else if lent == 0 {
                break;
            }
            continue;
        }
        envelope_pages -= 1;
        let page = store.read_stream(stream, version.next(), Some(target), REPLAY_PAGE_EVENTS)?;
        if page.is_empty() {
            break;
        }
        for recorded in page {
            if recorded.version != version.next() {
                return Err(StoreError::Corrupt {
                    what: format!("stream {stream}"),
                    reason: format!(
                        "read version {} after version {}",
                        recorded.version, version
                    ),
                }
                .into());
            }
            recorded.upcast_each::<A>(|event| state.apply(event))?;
            *version = recorded.version;
        }
    }
    if *version != target {
        return Err(StoreError::Corrupt {
            what: format!("stream {stream}"),
            reason: format!("its head is version {target} but only {version} events could be read"),
        }
        .into());
    }
    Ok(())
}

/// One live aggregate instance.
pub(crate) struct AggregateActor<A: Aggregate> {
    stream: StreamId,
    shared: Arc<TypeShared>,
    routing: Arc<dyn Routing>,
    slot: Arc<Slot>,
    state: A,
    version: Version,
    snapshot_version: Version,
    /// `Err` if rehydration failed: every queued command gets the error, then the actor stops.
    ready: Result<(), ExecuteError>,
    last_active: Instant,
    /// When rehydration finished: commands queued before wait for it, not for a queue.
    ready_since: Instant,
    /// When the stream's last event was recorded.
    last_recorded_at: Timestamp,
    /// The previous instance of this aggregate, if it is still stopping: rehydration waits for
    /// it, so that this instance starts from everything the previous one committed.
    predecessor: Option<Arc<Slot>>,
    /// Whether it runs on a caller's thread ([`Placement::Caller`](crate::Placement::Caller)):
    /// then it rehydrates on the blocking pool, not holding up the caller's other work.
    on_caller: bool,
}

impl<A: Aggregate> AggregateActor<A> {
    pub(crate) fn new(
        stream: StreamId,
        shared: Arc<TypeShared>,
        routing: Arc<dyn Routing>,
        slot: Arc<Slot>,
        predecessor: Option<Arc<Slot>>,
        on_caller: bool,
    ) -> Self {
        AggregateActor {
            stream,
            shared,
            routing,
            slot,
            state: A::default(),
            version: Version(0),
            snapshot_version: Version(0),
            ready: Ok(()),
            last_active: Instant::now(),
            ready_since: Instant::now(),
            last_recorded_at: Timestamp(0),
            predecessor,
            on_caller,
        }
    }

    /// Leaves the routing table (if still this instance's entry) and stops.
    fn passivate(&mut self, ctx: &mut Context<Self>) {
        self.routing.forget(self.stream.aggregate_id(), &self.slot);
        ctx.stop();
    }

    fn reply(reply: oneshot::Sender<Reply<A>>, result: ExecuteResult<A>) {
        let _ = reply.send(Reply::Done(result, false));
    }

    /// Replies with the stored outcome of an earlier execution.
    fn reply_replayed(reply: oneshot::Sender<Reply<A>>, result: ExecuteResult<A>) {
        let _ = reply.send(Reply::Done(result, true));
    }

    /// Runs one command; the future resolves when it has been replied to.
    fn run(
        &mut self,
        command: A::Command,
        options: ExecuteOptions,
        reply: oneshot::Sender<Reply<A>>,
        attempt: u32,
    ) -> ResponseActFuture<Self, ()> {
        let step = match self.prepare(&command, &options) {
            Ok(step) => step,
            Err(e) => {
                Self::reply(reply, Err(e));
                return Box::pin(fut::ready(()));
            }
        };
        match step {
            Step::Done(result) => {
                Self::reply(reply, result);
                Box::pin(fut::ready(()))
            }
            Step::Replayed(result) => {
                Self::reply_replayed(reply, result);
                Box::pin(fut::ready(()))
            }
            Step::Append(request, pending) => {
                let ticket = self.shared.store.append(request);
                Box::pin(ticket.into_actor(self).then(move |result, act, ctx| {
                    act.finish(result, pending, command, options, reply, attempt, ctx)
                }))
            }
        }
    }

    /// Everything before the append: dedupe, expected version, decide, limits, encoding.
    fn prepare(
        &mut self,
        command: &A::Command,
        options: &ExecuteOptions,
    ) -> Result<Step<A>, ExecuteError> {
        self.ready.clone()?;
        let limits = &self.shared.limits;
        let encoded = codec::encode_plain("command", command)?;
        if encoded.len() > limits.command_bytes_max {
            return Err(ExecuteError::LimitExceeded {
                stream: self.stream.clone(),
                what: Limit::CommandBytes,
                limit: limits.command_bytes_max,
                actual: encoded.len(),
            });
        }
        let command_key = options.command_id.as_ref().map(|id| CommandKey {
            id: id.clone(),
            fingerprint: Fingerprint::of(&self.stream, &encoded),
        });
        if let Some(key) = &command_key {
            if let Some(outcome) = self.shared.store.command_outcome(&key.id)? {
                if outcome.fingerprint() != key.fingerprint {
                    return Err(ExecuteError::CommandIdReused(key.id.clone()));
                }
                return Ok(Step::Replayed(self.replay_outcome(outcome)));
            }
        }
        if let Some(expected) = options.expected_version {
            if expected != self.version {
                return Err(ExecuteError::Conflict {
                    stream: self.stream.clone(),
                    expected,
                    current: self.version,
                });
            }
        }
        let meta = CommitMeta {
            // Never before the stream's last event, even if the wall clock stepped back:
            // temporal queries rely on a stream's times never decreasing.
            recorded_at: Timestamp::now().max(self.last_recorded_at),
            command_id: options.command_id.clone(),
            correlation_id: options.correlation_id.clone(),
            causation_id: options.causation_id.clone(),
        };
        let request = |kind| AppendRequest {
            stream: self.stream.clone(),
            expected: self.version,
            meta: meta.clone(),
            command: command_key.clone(),
            kind,
        };
        let events = match self.state.decide(command) {
            Ok(events) => events,
            Err(rejection) if command_key.is_some() => {
                let encoded = codec::encode_plain("rejection", &rejection)?;
                return Ok(Step::Append(
                    request(AppendKind::Rejection(encoded)),
                    Pending::Rejection(rejection),
                ));
            }
            Err(rejection) => return Ok(Step::Done(Ok(Err(rejection)))),
        };
        if events.is_empty() {
            if command_key.is_some() {
                return Ok(Step::Append(
                    request(AppendKind::NoEvents),
                    Pending::NoEvents,
                ));
            }
            return Ok(Step::Done(Ok(Ok(Executed::nothing(
                self.stream.clone(),
                self.version,
            )))));
        }
        if events.len() > limits.events_per_command_max {
            return Err(ExecuteError::LimitExceeded {
                stream: self.stream.clone(),
                what: Limit::EventsPerCommand,
                limit: limits.events_per_command_max,
                actual: events.len(),
            });
        }
        let mut pending = Vec::with_capacity(events.len());
        for event in &events {
            let payload = codec::encode_plain("event", event)?;
            if payload.len() > limits.event_bytes_max {
                return Err(ExecuteError::LimitExceeded {
                    stream: self.stream.clone(),
                    what: Limit::EventBytes,
                    limit: limits.event_bytes_max,
                    actual: payload.len(),
                });
            }
            pending.push(PendingEvent {
                event_id: Uuid::new_v4(),
                event_type: self.shared.event_type_name(event.event_type()),
                schema_version: event.schema_version(),
                payload: EncodedPayload(payload),
            });
        }
        let ids: Vec<(Uuid, Arc<str>, u16)> = pending
            .iter()
            .map(|p| (p.event_id, p.event_type.clone(), p.schema_version))
            .collect();
        Ok(Step::Append(
            request(AppendKind::Events(pending)),
            Pending::Events {
                events,
                ids,
                meta: Arc::new(meta.clone()),
            },
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        result: Result<CommitReceipt, AppendError>,
        pending: Pending<A>,
        command: A::Command,
        options: ExecuteOptions,
        reply: oneshot::Sender<Reply<A>>,
        attempt: u32,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, ()> {
        let done: ExecuteResult<A> = match result {
            Ok(receipt) => self.commit(receipt, pending),
            Err(AppendError::Conflict { actual, .. }) if attempt < STALE_RETRIES_MAX => {
                // Another instance of this aggregate (an eviction race) wrote since we loaded. Its
                // commit may still be on its way to disk: pause briefly, catch up with what is
                // acknowledged, and decide again.
                tracing::debug!(stream = %self.stream, ours = %self.version, %actual, "stale aggregate state; catching up");
                let pause = Duration::from_millis(u64::from(attempt) + 1);
                return Box::pin(tokio::time::sleep(pause).into_actor(self).then(
                    move |(), act, ctx| {
                        let (store, stream) = (act.shared.store.clone(), act.stream.clone());
                        let caught_up = store
                            .stream_head(&stream)
                            .map_err(ExecuteError::from)
                            .and_then(|head| {
                                replay(&*store, &stream, &mut act.state, &mut act.version, head)?;
                                act.last_recorded_at = recorded_at(&*store, &stream, act.version)?;
                                Ok(())
                            });
                        match caught_up {
                            Ok(()) => act.run(command, options, reply, attempt + 1),
                            Err(e) => {
                                act.fail(ctx, e.clone());
                                Self::reply(reply, Err(e));
                                Box::pin(fut::ready(()))
                            }
                        }
                    },
                ));
            }
            Err(AppendError::Conflict { actual, .. }) => Err(ExecuteError::Conflict {
                stream: self.stream.clone(),
                expected: options.expected_version.unwrap_or(self.version),
                current: actual,
            }),
            Err(AppendError::CommandIdUsed {
                id,
                same_command: false,
            }) => Err(ExecuteError::CommandIdReused(id)),
            Err(AppendError::CommandIdUsed {
                id,
                same_command: true,
            }) => match self.shared.store.command_outcome(&id) {
                Ok(Some(outcome)) => {
                    Self::reply_replayed(reply, self.replay_outcome(outcome));
                    return Box::pin(fut::ready(()));
                }
                Ok(None) => Err(ExecuteError::CommandInProgress(id)),
                Err(e) => Err(e.into()),
            },
            Err(AppendError::Store(StoreError::Overloaded { .. })) => {
                Err(ExecuteError::Overloaded {
                    stream: self.stream.clone(),
                    what: Overload::Journal,
                    retry_after: self.shared.limits.retry_after,
                })
            }
            // Refused before anything was written: this aggregate's state is still right.
            Err(
                AppendError::Unchecked { error, .. }
                | AppendError::Store(error @ StoreError::DiskFull { .. }),
            ) => Err(ExecuteError::Store(error)),
            Err(AppendError::Store(e)) => {
                // Not known whether the events were persisted: stop, rebuild on next use.
                let e = ExecuteError::Store(e);
                self.fail(ctx, e.clone());
                Err(e)
            }
            Err(e) => Err(ExecuteError::Store(StoreError::Io {
                op: "appending",
                reason: e.to_string(),
            })),
        };
        Self::reply(reply, done);
        self.maybe_snapshot();
        Box::pin(fut::ready(()))
    }

    /// Applies an acknowledged append and builds its reply.
    fn commit(&mut self, receipt: CommitReceipt, pending: Pending<A>) -> ExecuteResult<A> {
        match pending {
            Pending::Events { events, ids, meta } => {
                let first_version = self.version.next();
                let first_position = receipt.first_position.unwrap_or_default();
                let mut envelopes = Vec::with_capacity(events.len());
                for (i, (event, (event_id, event_type, schema_version))) in
                    events.into_iter().zip(ids).enumerate()
                {
                    self.state.apply(&event);
                    envelopes.push(Envelope {
                        event_id,
                        stream: self.stream.clone(),
                        version: first_version.advance(i as u64),
                        position: first_position.advance(i as u64),
                        event_type,
                        schema_version,
                        meta: meta.clone(),
                        payload: event,
                    });
                }
                debug_assert_eq!(
                    receipt.version,
                    self.version.advance(envelopes.len() as u64)
                );
                self.version = receipt.version;
                self.last_recorded_at = meta.recorded_at;
                Ok(Ok(Executed {
                    stream: self.stream.clone(),
                    version: self.version,
                    position: receipt.last_position(),
                    events: envelopes,
                    deduplicated: false,
                }))
            }
            Pending::Rejection(rejection) => Ok(Err(rejection)),
            Pending::NoEvents => Ok(Ok(Executed::nothing(self.stream.clone(), self.version))),
        }
    }

    /// The stored outcome of an earlier execution of the same command.
    fn replay_outcome(&self, outcome: StoredOutcome) -> ExecuteResult<A> {
        match outcome {
            StoredOutcome::Committed { events, .. } => {
                let mut envelopes = Vec::with_capacity(events.len());
                for recorded in &events {
                    envelopes.extend(recorded.upcast::<A>()?);
                }
                let last = envelopes.last();
                Ok(Ok(Executed {
                    stream: self.stream.clone(),
                    version: last.map_or(self.version, |e| e.version),
                    position: last.map(|e| e.position),
                    events: envelopes,
                    deduplicated: true,
                }))
            }
            StoredOutcome::Rejected { rejection, .. } => Ok(Err(codec::decode_plain(&rejection)?)),
            StoredOutcome::NoEvents { version, .. } => {
                let mut executed = Executed::nothing(self.stream.clone(), version);
                executed.deduplicated = true;
                Ok(Ok(executed))
            }
        }
    }

    fn fail(&mut self, ctx: &mut Context<Self>, error: ExecuteError) {
        tracing::warn!(stream = %self.stream, %error, "aggregate stopped after a store failure");
        self.ready = Err(error);
        self.passivate(ctx);
    }

    fn maybe_snapshot(&mut self) {
        let options = &self.shared.options;
        let Some(every) = options.snapshot_every else {
            return;
        };
        if self.version.0.saturating_sub(self.snapshot_version.0) < every.get() {
            return;
        }
        let state = match codec::encode_plain("snapshot", &self.state) {
            Ok(state) => state,
            Err(e) => {
                return tracing::warn!(stream = %self.stream, error = %e, "cannot encode a snapshot")
            }
        };
        let snapshot = Snapshot {
            version: self.version,
            schema_version: options.snapshot_schema_version,
            // Never before its event was recorded, whatever the clock did: a snapshot taken
            // earlier than the event at its version is one of a lost tail (see `load`).
            taken_at: Timestamp::now().max(self.last_recorded_at),
            state,
        };
        match self.shared.store.save_snapshot(&self.stream, &snapshot) {
            Ok(()) => self.snapshot_version = self.version,
            Err(e) => tracing::warn!(stream = %self.stream, error = %e, "cannot save a snapshot"),
        }
    }
}

enum Step<A: Aggregate> {
    Done(ExecuteResult<A>),
    /// The stored outcome of an earlier execution with the same command id.
    Replayed(ExecuteResult<A>),
    Append(AppendRequest, Pending<A>),
}

enum Pending<A: Aggregate> {
    Events {
        events: Vec<A::Event>,
        ids: Vec<(Uuid, Arc<str>, u16)>,
        meta: Arc<CommitMeta>,
    },
    Rejection(A::Rejection),
    NoEvents,
}

impl<A: Aggregate> Actor for AggregateActor<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let shared = self.shared.clone();
        let stream = self.stream.clone();
        let predecessor = self.predecessor.take();
        let on_caller = self.on_caller;
        let load = async move {
            if let Some(predecessor) = predecessor {
                predecessor.stopped().await;
            }
            // The permit bounds concurrent rehydrations; commands queue in the (bounded)
            // mailbox meanwhile.
            let _permit = shared.rehydrations.clone().acquire_owned().await;
            let started = Instant::now();
            let snapshot_schema_version = shared.options.snapshot_schema_version;
            let loaded = if on_caller {
                let store = shared.store.clone();
                let stream = stream.clone();
                actix_rt::task::spawn_blocking(move || {
                    load::<A>(&*store, &stream, snapshot_schema_version, None)
                })
                .await
                .unwrap_or_else(|e| {
                    // The blocking pool is shutting down, or the read panicked: the next
                    // command activates the aggregate again.
                    Err(ExecuteError::Store(StoreError::Io {
                        op: "rehydrating an aggregate",
                        reason: e.to_string(),
                    }))
                })
            } else {
                load::<A>(&*shared.store, &stream, snapshot_schema_version, None)
            };
            shared.counters.record_rehydration(started.elapsed());
            loaded
        };
        ctx.wait(load.into_actor(self).map(|loaded, act, _ctx| match loaded {
            Ok(l) => {
                act.ready_since = Instant::now();
                act.state = l.state;
                act.version = l.version;
                act.snapshot_version = l.snapshot_version;
                act.last_recorded_at = l.last_recorded_at;
            }
            Err(e) => {
                tracing::warn!(stream = %act.stream, error = %e, "rehydration failed");
                act.ready = Err(e);
            }
        }));
        let idle = self.shared.options.idle_timeout;
        let period = (idle / 4).clamp(Duration::from_millis(5), Duration::from_secs(5));
        ctx.run_interval(period, move |act, ctx| {
            if act.last_active.elapsed() >= idle {
                act.shared
                    .counters
                    .passivations
                    .fetch_add(1, Ordering::Relaxed);
                act.passivate(ctx);
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.shared.counters.live.fetch_sub(1, Ordering::Relaxed);
        self.routing.stopped(self.stream.aggregate_id(), &self.slot);
    }
}

impl<A: Aggregate> Handler<Execute<A>> for AggregateActor<A> {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, mut msg: Execute<A>, ctx: &mut Context<Self>) -> Self::Result {
        self.slot.queued.fetch_sub(1, Ordering::AcqRel);
        let Some(payload) = msg.payload.take() else {
            return AtomicResponse::new(Box::pin(fut::ready(())));
        };
        self.last_active = Instant::now();
        let limits = &self.shared.limits;
        let queued = self
            .last_active
            .saturating_duration_since(payload.enqueued.max(self.ready_since));
        if payload.sheddable && queued > limits.queue_time_max {
            Self::reply(
                payload.reply,
                Err(ExecuteError::Overloaded {
                    stream: self.stream.clone(),
                    what: Overload::QueueTime,
                    retry_after: limits.retry_after,
                }),
            );
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        if let Err(e) = &self.ready {
            // Rehydration failed: answer every queued command, then stop so the next command
            // tries again from the store.
            Self::reply(payload.reply, Err(e.clone()));
            self.passivate(ctx);
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        AtomicResponse::new(self.run(payload.command, payload.options, payload.reply, 0))
    }
}

impl<A: Aggregate> Handler<Passivate> for AggregateActor<A> {
    type Result = ();

    fn handle(&mut self, _msg: Passivate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
