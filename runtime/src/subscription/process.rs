//! Process managers (sagas): react to events of some aggregates by sending commands to others,
//! with persisted state per process instance and durable deadlines.
//!
//! # Never a step twice
//! A process manager runs as a [subscriber](crate::subscription), so an event can be delivered
//! again after a crash. Three things make redelivery harmless:
//! 1. the state of each process instance is stored with the position of the last event applied
//!    to it, and an event at or below that position is not reacted to again;
//! 2. the commands a reaction produces are stored *with* the new state (an outbox) before any
//!    is sent, and sent again on redelivery until they are all acknowledged;
//! 3. each command's id is derived from the triggering event's id and the command's index in
//!    the reaction (`pm:{name}:{event id}:{index}`), so the aggregate's command-id record
//!    returns the first outcome instead of executing a command twice.
//!
//! # Deadlines
//! An [`Action::schedule`] is stored in the `deadlines` space of the [`StateStore`] (with the
//! page that scheduled it, atomically with the instance's state) under its derived command id,
//! and sent once due, by a timer on the runtime's arbiter; a deadline survives restarts and fires
//! after one (late, if it fell due while the service was down). Each tick sends at most
//! [`DEADLINES_PER_TICK`] due deadlines, oldest first, so a backlog (after downtime) is worked
//! off in bounded steps. A deadline whose command fails for a reason that may pass (a full
//! queue, a store error) is put back with a pause that doubles with each attempt, up to
//! [`DEADLINE_RETRY_PAUSE_MAX`]; one that cannot ever be sent (a record that does not decode, an
//! aggregate type that is not registered, an id or command the runtime refuses) is moved to
//! the `deadlines-failed` space, kept for inspection, and the others go on. A business
//! rejection is an outcome, not a failure: the deadline is done.
//!
//! A deadline that is no longer needed — the step it guards was decided — is cancelled: after
//! each reaction the runtime asks [`ProcessManager::cancels_deadlines`], and if the answer is
//! yes, removes every deadline the instance scheduled before. The removal goes through the
//! outbox like a command (done at the end of the page, committed with the page's state, redone
//! after a crash), so a cancelled deadline never fires once its page is committed; one that fell
//! due first has fired, which a process must tolerate anyway (the command is refused, or
//! changes nothing). A due deadline whose command failed and was put back for a retry is not
//! cancelled (it is stored under its new due time). An instance remembers the keys of its
//! deadlines that are not due yet, at most [`DEADLINES_TRACKED_MAX`] (the latest due).
//!
//! # Instances that end
//! After each reaction the runtime also asks [`ProcessManager::is_complete`]; once it says yes
//! and the instance's outbox is delivered, the instance's record — state, outbox, deadline keys
//! — is replaced, in the same page commit, by a *tombstone*: a few bytes holding the position
//! of the last event applied. The tombstone is what keeps "never a step twice" true: an event
//! at or below it is not reacted to, however it comes back (a page whose checkpoint was moved
//! back after an interrupted command, a parked event retried later). An event of the instance
//! *after* it starts a new instance from `State::default()`, which a manager should treat as
//! "nothing known" (and may declare complete at once). Deadlines the instance did not cancel
//! stay scheduled and fire.
//!

use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::codec::{self, CodecError};
use crate::command::ExecuteOptions;
use crate::envelope::RecordedEvent;
use crate::error::ExecuteError;
use crate::store::state::{DEADLINES, DEADLINES_FAILED};
use crate::store::{Changes, Lease, StateStore, StoreError};
use crate::types::Position;

use super::page::PageWrites;
use super::projection::{View, ViewError, ViewSet};
use super::subscriber::{
    is_transient, FlushFuture, HandleFuture, HandlerError, Interrupted, Subscriber,
};

/// Attempts to send one command before its event is reported failed (then retried or parked
/// per the subscriber's policy).
const DELIVERY_ATTEMPTS: u32 = 3;
/// The first pause between attempts; it doubles.
const DELIVERY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(10);
use crate::types::{CommandId, Timestamp};

/// Where a process manager's commands go: the runtime, behind this small interface so that
/// process managers (and the registry that starts them) do not name it. Implemented by the
/// runtime's weak handle, which answers [`ExecuteError::ShuttingDown`] once the runtime is gone.
pub(crate) trait CommandSink: Send + Sync {
    /// Sends `outgoing`'s command; if the aggregate rejects it and the action has a fallback
    /// ([`Action::or_else`]), sends that, with the command id `{command id}/r` (so that a
    /// redelivery sends it once too). A business rejection is an outcome, not an error.
    fn dispatch<'a>(
        &'a self,
        outgoing: &'a Outgoing,
    ) -> futures::future::LocalBoxFuture<'a, Result<(), ExecuteError>>;

    /// A handle that keeps the runtime alive while it is held (`None` once it is gone): the
    /// deadline timer holds one for each tick, so a tick never runs on after the runtime
    /// stopped its store.
    fn keep_alive(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>>;
}

/// A process manager. See the [module docs](self).
pub trait ProcessManager: Send + 'static {
    /// The state of one process instance.
    type State: Serialize + DeserializeOwned + Default + Send;

    /// The process instance `event` belongs to (for example the order id), or `None` to ignore
    /// the event.
    fn instance(&self, event: &RecordedEvent) -> Option<String>;

    /// Reacts to an event: updates the instance's state and returns the commands to send now or
    /// later. Must be deterministic (it may run again for the same event after a crash, before
    /// its result was stored).
    fn react(
        &self,
        state: &mut Self::State,
        event: &RecordedEvent,
    ) -> Result<Vec<Action>, HandlerError>;

    /// Whether the instance's deadlines are no longer needed in `state` (for example, the
    /// decision they wait for was taken): asked after each reaction; when `true`, every deadline
    /// the instance scheduled before is cancelled (see the [module docs](self)). By default,
    /// deadlines always fire.
    fn cancels_deadlines(&self, state: &Self::State) -> bool {
        let _ = state;
        false
    }

    /// Whether the process is over in `state`: nothing that can still happen would make it
    /// act. Asked after each reaction; when `true`, the instance's record is removed once its
    /// outbox is delivered (see the [module docs](self)). An event for the instance after that
    /// starts a new one from `State::default()`. By default, instances are kept forever.
    fn is_complete(&self, state: &Self::State) -> bool {
        let _ = state;
        false
    }
}

/// A command a process manager sends, now or at a deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// The target aggregate type.
    pub aggregate_type: String,
    /// The target aggregate id.
    pub aggregate_id: String,
    /// The encoded command.
    #[serde(with = "serde_bytes")]
    pub command: Vec<u8>,
    /// When to send it (`None`: now).
    pub at: Option<Timestamp>,
    /// What to send instead if the aggregate rejects this command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rejection: Option<Box<Action>>,
}

impl Action {
    /// Sends `command` to aggregate `id` of type `A`.
    pub fn command<A: Aggregate>(
        id: impl Into<String>,
        command: &A::Command,
    ) -> Result<Action, CodecError> {
        Ok(Action {
            aggregate_type: A::TYPE.to_string(),
            aggregate_id: id.into(),
            command: codec::encode_plain("command", command)?,
            at: None,
            on_rejection: None,
        })
    }

    /// If the aggregate rejects this command (a business rejection, for example "unknown
    /// customer"), send `fallback` instead. Fallbacks can be chained.
    #[must_use]
    pub fn or_else(mut self, fallback: Action) -> Action {
        self.on_rejection = Some(Box::new(fallback));
        self
    }

    /// Sends `command` to aggregate `id` of type `A` once `at` has passed.
    pub fn schedule<A: Aggregate>(
        at: Timestamp,
        id: impl Into<String>,
        command: &A::Command,
    ) -> Result<Action, CodecError> {
        let mut action = Action::command::<A>(id, command)?;
        action.at = Some(at);
        Ok(action)
    }
}

/// One process instance as stored: its state, the position of the last event applied, the
/// actions of that event not yet acknowledged, and the keys of the deadlines it scheduled that
/// are not cancelled yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Instance {
    #[serde(with = "serde_bytes")]
    state: Vec<u8>,
    outbox: Vec<Outgoing>,
    /// Records written before deadlines could be cancelled have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deadlines: Vec<serde_bytes::ByteBuf>,
    /// The process is over ([`ProcessManager::is_complete`]): the record goes once the outbox
    /// is empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    complete: bool,
}

impl Instance {
    /// Whether nothing is left to do for it: complete, with its outbox delivered.
    fn is_done(&self) -> bool {
        self.complete && self.outbox.is_empty()
    }
}

/// An action with its derived command id and the trace ids of its triggering event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Outgoing {
    /// The position of the triggering event: an event delivers (and clears) only its own
    /// entries, so one parked event's stuck command never holds back a later event's.
    pub(crate) trigger: u64,
    pub(crate) command_id: String,
    pub(crate) causation_id: String,
    pub(crate) correlation_id: Option<String>,
    pub(crate) action: Action,
    /// Failed attempts to send it (deadlines only; see the module docs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) attempts: u32,
    /// Deadline keys to remove before `action` is sent. A cancellation alone has an empty
    /// `action` ([`Action::none`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) cancels: Vec<serde_bytes::ByteBuf>,
}

impl Action {
    /// No command: the action of an outbox entry that only cancels deadlines.
    fn none() -> Action {
        Action {
            aggregate_type: String::new(),
            aggregate_id: String::new(),
            command: Vec::new(),
            at: None,
            on_rejection: None,
        }
    }

    fn is_none(&self) -> bool {
        self.aggregate_type.is_empty()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The lease whose owner fires the deadlines, among nodes sharing a store.
pub(crate) const DEADLINE_LEASE: &str = "annals:deadline-timer";

/// Most due deadlines sent per tick of the deadline timer.
pub const DEADLINES_PER_TICK: usize = 256;
/// The first pause before a deadline whose command failed is tried again; it doubles.
pub const DEADLINE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest pause between attempts of a failing deadline.
pub const DEADLINE_RETRY_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(300);

/// The subscriber that runs a process manager.
pub(crate) struct ProcessSubscriber<P: ProcessManager> {
    /// Commands of the current page, in event order, with their instance: sent by `flush`.
    queued: Vec<(String, Outgoing)>,
    /// The page's writes (instance records, deadlines), committed with its checkpoint.
    writes: Arc<PageWrites>,
    name: Arc<str>,
    manager: P,
    instances: View<Instance>,
    sink: Arc<dyn CommandSink>,
}

impl<P: ProcessManager> ProcessSubscriber<P> {
    /// `views` must write into `writes`.
    pub(crate) fn new(
        name: &str,
        manager: P,
        views: &ViewSet,
        writes: Arc<PageWrites>,
        sink: Arc<dyn CommandSink>,
    ) -> Result<Self, ViewError> {
        Ok(ProcessSubscriber {
            queued: Vec::new(),
            writes,
            name: Arc::from(name),
            manager,
            instances: views.view("instances")?,
            sink,
        })
    }

    async fn handle_event(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let Some(instance_id) = self.manager.instance(event) else {
            return Ok(());
        };
        let key = instance_id.as_bytes();
        let mut reacted: Option<Instance> = None;
        let result = self.instances.try_update(key, event.position, |current| {
            let current = current.unwrap_or_default();
            let mut state: P::State = if current.state.is_empty() {
                P::State::default()
            } else {
                codec::decode_plain(&current.state).map_err(|e| Box::new(e) as HandlerError)?
            };
            let actions = self.manager.react(&mut state, event)?;
            // Commands of an earlier event that were never acknowledged (its handling failed
            // and it was parked) stay in the outbox until that event is retried.
            let mut outbox = current.outbox;
            let mut deadlines = current.deadlines;
            let cancel = self.manager.cancels_deadlines(&state);
            let complete = self.manager.is_complete(&state);
            let state = codec::encode_plain("process state", &state)
                .map_err(|e| Box::new(e) as HandlerError)?;
            let outgoing = |command_id: String, action: Action| Outgoing {
                trigger: event.position.0,
                command_id,
                causation_id: event.event_id.to_string(),
                correlation_id: Some(correlation_of(event, &instance_id)),
                action,
                attempts: 0,
                cancels: Vec::new(),
            };
            for (i, action) in actions.into_iter().enumerate() {
                let command_id = format!("pm:{}:{}:{i}", self.name, event.event_id);
                if let Some(at) = action.at {
                    deadlines.push(deadline_key(at, &command_id).into());
                }
                outbox.push(outgoing(command_id, action));
            }
            track_pending(&mut deadlines, Timestamp::now());
            if cancel && !deadlines.is_empty() {
                let command_id = format!("pm:{}:{}:cancel", self.name, event.event_id);
                let mut cancellation = outgoing(command_id, Action::none());
                cancellation.cancels = std::mem::take(&mut deadlines);
                outbox.push(cancellation);
            }
            let next = Instance {
                state,
                outbox,
                deadlines,
                complete,
            };
            reacted = Some(next.clone());
            // Over, and nothing to send: only a tombstone with the event's position stays.
            Ok::<_, HandlerError>((!next.is_done()).then_some(next))
        })?;
        // A failed reaction wrote nothing: the event is retried or parked, and reacts again.
        result?;
        let instance = match reacted {
            Some(instance) => instance,
            // Already applied before a crash: send whatever its outbox still holds.
            None => self.instances.get(key)?.unwrap_or_default(),
        };
        if instance.is_done() {
            return Ok(());
        }
        // Sent at the end of the page (see `flush`), concurrently across instances.
        self.queued.extend(
            instance
                .outbox
                .into_iter()
                .filter(|o| o.trigger == event.position.0)
                .map(|o| (instance_id.clone(), o)),
        );
        Ok(())
    }

    /// Sends the commands queued by the page's events: each instance's in order, different
    /// instances concurrently (each command waits for its durable commit, so one at a time
    /// would cap a saga at one commit latency per step). A sent command leaves its instance's
    /// outbox. A command that keeps failing stops its instance's queue; the triggers of the
    /// commands left are reported, and stay in the outbox for a redelivery or a retry.
    ///
    /// The instance records (state, and the outbox less what was sent) are committed with the
    /// page, after this: a crash before redoes the page, and the command ids make the resend
    /// harmless.
    async fn flush_queued(&mut self) -> Result<(), Vec<(Position, HandlerError)>> {
        let failed = self.send_queued().await;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }

    async fn send_queued(&mut self) -> Vec<(Position, HandlerError)> {
        if self.queued.is_empty() {
            return Vec::new();
        }
        let mut by_instance: Vec<(String, Vec<Outgoing>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (instance, outgoing) in self.queued.drain(..) {
            let i = *index.entry(instance.clone()).or_insert_with(|| {
                by_instance.push((instance, Vec::new()));
                by_instance.len() - 1
            });
            by_instance[i].1.push(outgoing);
        }
        let this = &*self;
        let sequences = by_instance.into_iter().map(|(instance, queue)| async move {
            let mut failed = Vec::new();
            let mut sent = 0;
            for (i, outgoing) in queue.iter().enumerate() {
                if let Err(error) = this.deliver_retrying(outgoing).await {
                    failed.push((Position(outgoing.trigger), error));
                    failed.extend(queue[i + 1..].iter().map(|o| {
                        let blocked: HandlerError = format!(
                            "blocked behind the failed command of the event at position {}",
                            outgoing.trigger
                        )
                        .into();
                        (Position(o.trigger), blocked)
                    }));
                    break;
                }
                sent = i + 1;
            }
            // One write per instance per page: the sent commands leave the outbox.
            if sent > 0 {
                let done: std::collections::HashSet<&str> = queue[..sent]
                    .iter()
                    .map(|o| o.command_id.as_str())
                    .collect();
                let cleared = this.instances.replace(instance.as_bytes(), |mut stored| {
                    stored
                        .outbox
                        .retain(|o| !done.contains(o.command_id.as_str()));
                    // A complete process whose last commands are delivered leaves a tombstone.
                    (!stored.is_done()).then_some(stored)
                });
                if let Err(e) = cleared {
                    failed.push((Position(queue[0].trigger), Box::new(e) as HandlerError));
                }
            }
            failed
        });
        futures::future::join_all(sequences)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Sends one command, retrying a few times on failures that may pass.
    async fn deliver_retrying(&self, outgoing: &Outgoing) -> Result<(), HandlerError> {
        let mut pause = DELIVERY_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.deliver(outgoing).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is::<Interrupted>() || attempt >= DELIVERY_ATTEMPTS => return Err(e),
                Err(e) => {
                    tracing::debug!(command_id = %outgoing.command_id, error = %e, attempt, "retrying a command");
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                    attempt += 1;
                }
            }
        }
    }

    async fn deliver(&self, outgoing: &Outgoing) -> Result<(), HandlerError> {
        // Deadline changes are committed with the page.
        for key in &outgoing.cancels {
            self.writes.delete(DEADLINES, key.as_slice());
        }
        if outgoing.action.is_none() {
            return Ok(());
        }
        if let Some(at) = outgoing.action.at {
            let bytes = codec::encode_versioned(1, "deadline", outgoing)?;
            self.writes
                .put(DEADLINES, deadline_key(at, &outgoing.command_id), bytes);
            return Ok(());
        }
        self.sink.dispatch(outgoing).await.map_err(|e| match e {
            // Not this event's fault: pause and try again, never park.
            ExecuteError::ShuttingDown | ExecuteError::Overloaded { .. } => {
                Box::new(Interrupted(e.to_string())) as HandlerError
            }
            e => Box::new(e) as HandlerError,
        })
    }
}

impl<P: ProcessManager> Subscriber for ProcessSubscriber<P> {
    fn handle<'a>(&'a mut self, event: &'a RecordedEvent) -> HandleFuture<'a> {
        Box::pin(self.handle_event(event))
    }

    fn flush(&mut self) -> FlushFuture<'_> {
        Box::pin(self.flush_queued())
    }
}

/// The correlation id of the commands a reaction sends: the triggering event's own, else the
/// process instance id (the business transaction), else — for an instance id too long to be a
/// trace id — the triggering event's id.
fn correlation_of(event: &RecordedEvent, instance_id: &str) -> String {
    match event.meta.correlation_id.as_deref() {
        Some(correlation) => correlation.to_string(),
        None if instance_id.len() <= crate::envelope::TRACE_ID_LEN_MAX => instance_id.to_string(),
        None => event.event_id.to_string(),
    }
}

/// Most deadline keys an instance keeps for a later cancellation.
pub const DEADLINES_TRACKED_MAX: usize = 1024;

/// Keeps, of an instance's deadline keys, those not yet due at `now` — a due one has fired, or
/// was put back under a new key for a retry, so cancelling it could do nothing — and of those at
/// most [`DEADLINES_TRACKED_MAX`], the latest due: a process that schedules many deadlines and
/// never cancels them does not grow its record without bound.
fn track_pending(deadlines: &mut Vec<serde_bytes::ByteBuf>, now: Timestamp) {
    let due = |key: &[u8]| {
        key.get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_be_bytes)
    };
    deadlines.retain(|key| due(key) > now.0);
    if deadlines.len() > DEADLINES_TRACKED_MAX {
        deadlines.sort_unstable_by_key(|key| due(key));
        let excess = deadlines.len() - DEADLINES_TRACKED_MAX;
        deadlines.drain(..excess);
    }
}

/// `[due: u64 micros][command id]`: due deadlines are a prefix range.
pub(crate) fn deadline_key(at: Timestamp, command_id: &str) -> Vec<u8> {
    let mut key = at.0.to_be_bytes().to_vec();
    key.extend_from_slice(command_id.as_bytes());
    key
}

/// A deadline a process manager has set and that has not fired yet
/// ([`Runtime::pending_deadlines`](crate::Runtime::pending_deadlines)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDeadline {
    /// When it is due.
    pub due: Timestamp,
    /// The command id the command will carry.
    pub command_id: String,
    /// The event that set it (its id): the causation id the command will carry.
    pub causation_id: String,
    /// The correlation id the command will carry.
    pub correlation_id: Option<String>,
    /// The position of the event that set it.
    pub trigger: Position,
    /// The target aggregate type.
    pub aggregate_type: String,
    /// The target aggregate id.
    pub aggregate_id: String,
    /// The command, encoded (CBOR).
    pub command: Vec<u8>,
}

/// The deadlines not fired yet, soonest first, at most `limit`; records that do not decode are
/// passed over (the timer moves them aside when they are due).
pub(crate) fn pending_deadlines(
    state: &dyn StateStore,
    limit: usize,
) -> Result<Vec<PendingDeadline>, StoreError> {
    let records = state.range(
        DEADLINES,
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
        limit,
    )?;
    Ok(records
        .into_iter()
        .filter_map(|(key, bytes)| {
            let outgoing: Outgoing = codec::decode_versioned(1, "deadline", &bytes).ok()?;
            let due = key.get(..8)?.try_into().ok().map(u64::from_be_bytes)?;
            (!outgoing.action.is_none()).then_some(PendingDeadline {
                due: Timestamp(due),
                command_id: outgoing.command_id,
                causation_id: outgoing.causation_id,
                correlation_id: outgoing.correlation_id,
                trigger: Position(outgoing.trigger),
                aggregate_type: outgoing.action.aggregate_type,
                aggregate_id: outgoing.action.aggregate_id,
                command: outgoing.action.command,
            })
        })
        .collect())
}

/// Sends the deadlines that are due, at most [`DEADLINES_PER_TICK`], oldest first; returns how
/// many were sent. What became of each (sent, put back for a retry, moved to the failed ones)
/// is committed once for the tick. See the [module docs](self) for what happens to one that
/// fails.
pub(crate) async fn fire_due(
    state: &dyn StateStore,
    sink: &dyn CommandSink,
    lease: &Lease,
) -> Result<usize, HandlerError> {
    let now = Timestamp::now();
    let end = deadline_key(Timestamp(now.0.saturating_add(1)), "");
    let due = state.range(
        DEADLINES,
        std::ops::Bound::Unbounded,
        std::ops::Bound::Excluded(&end),
        DEADLINES_PER_TICK,
    )?;
    let mut sent = 0;
    let mut changes = Changes::default();
    for (key, bytes) in due {
        let mut outgoing: Outgoing = match codec::decode_versioned(1, "deadline", &bytes) {
            Ok(outgoing) => outgoing,
            Err(e) => {
                tracing::error!(key = ?key, error = %e, "a deadline record does not decode; moved to deadlines-failed");
                changes.put(DEADLINES_FAILED, key.clone(), bytes);
                changes.delete(DEADLINES, key);
                continue;
            }
        };
        match sink.dispatch(&outgoing).await {
            Ok(()) => {
                changes.delete(DEADLINES, key);
                sent += 1;
            }
            Err(e) if deadline_error_passes(&e) => {
                outgoing.attempts = outgoing.attempts.saturating_add(1);
                let pause = DEADLINE_RETRY_PAUSE
                    .saturating_mul(1u32 << outgoing.attempts.min(16))
                    .min(DEADLINE_RETRY_PAUSE_MAX);
                let micros = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
                let retry_at = Timestamp(Timestamp::now().0.saturating_add(micros));
                tracing::warn!(command_id = %outgoing.command_id, error = %e, attempts = outgoing.attempts, ?pause, "a due deadline could not be sent; trying again later");
                let retry = codec::encode_versioned(1, "deadline", &outgoing)?;
                changes.delete(DEADLINES, key);
                changes.put(
                    DEADLINES,
                    deadline_key(retry_at, &outgoing.command_id),
                    retry,
                );
            }
            Err(e) => {
                tracing::error!(command_id = %outgoing.command_id, error = %e, "a deadline's command can never be sent; moved to deadlines-failed");
                changes.put(DEADLINES_FAILED, key.clone(), bytes);
                changes.delete(DEADLINES, key);
            }
        }
    }
    // A crash before this sends the tick's deadlines again: their command ids make that
    // harmless. So does a takeover by another node, which this commit's fence then refuses.
    changes.fence(DEADLINE_LEASE, lease);
    state.commit(changes)?;
    Ok(sent)
}

/// Whether a deadline whose command failed with `error` may succeed later.
fn deadline_error_passes(error: &ExecuteError) -> bool {
    match error {
        ExecuteError::Store(e) => is_transient(e),
        ExecuteError::Unregistered(_)
        | ExecuteError::InvalidId(_)
        | ExecuteError::LimitExceeded { .. }
        | ExecuteError::Codec(_)
        | ExecuteError::CommandIdReused(_) => false,
        _ => true,
    }
}

impl Outgoing {
    pub(crate) fn options_with_command_id(
        &self,
        command_id: &str,
    ) -> Result<ExecuteOptions, ExecuteError> {
        let mut options = ExecuteOptions::default()
            .with_command_id(CommandId::new(command_id)?)
            .with_causation_id(self.causation_id.as_str());
        options.internal = true;
        if let Some(correlation) = &self.correlation_id {
            options = options.with_correlation_id(correlation.as_str());
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(dues: &[u64]) -> Vec<serde_bytes::ByteBuf> {
        dues.iter()
            .map(|&due| deadline_key(Timestamp(due), &format!("pm:x:{due}")).into())
            .collect()
    }

    #[test]
    fn only_deadlines_not_yet_due_are_tracked_and_at_most_the_limit() {
        let mut tracked = keys(&[5, 10, 11, 30]);
        track_pending(&mut tracked, Timestamp(10));
        assert_eq!(
            tracked,
            keys(&[11, 30]),
            "due ones have fired: nothing to cancel"
        );

        let many: Vec<u64> = (0..DEADLINES_TRACKED_MAX as u64 + 10)
            .rev()
            .map(|i| 100 + i)
            .collect();
        let mut tracked = keys(&many);
        track_pending(&mut tracked, Timestamp(0));
        assert_eq!(tracked.len(), DEADLINES_TRACKED_MAX);
        let latest: Vec<u64> = (10..DEADLINES_TRACKED_MAX as u64 + 10)
            .map(|i| 100 + i)
            .collect();
        assert_eq!(tracked, keys(&latest), "the latest due are kept");
    }
}
