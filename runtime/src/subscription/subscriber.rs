//! What a subscriber is, to the code that writes one: the [`Subscriber`] trait, its options,
//! status and progress, and the errors a handler or a retry reports. How events reach it is in
//! the [folder's docs](super).

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::envelope::RecordedEvent;
use crate::store::StoreError;
use crate::types::Position;

/// A handler failure: any error, with its message kept for the parked list and the status.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The future of one [`Subscriber::handle`] call.
pub type HandleFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + 'a>>;

/// The future of one [`Subscriber::flush`] call: the events whose effects failed, if any.
pub type FlushFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), Vec<(Position, HandlerError)>>> + 'a>>;

/// Something that consumes the global log in position order.
///
/// Delivery is at least once, so `handle` must tolerate an event it has seen before (the
/// [views](crate::projection::View) of projections do this by storing each record's position).
pub trait Subscriber: Send + 'static {
    /// Handles one event. An error is retried, then handled per the [`FailurePolicy`].
    fn handle<'a>(&'a mut self, event: &'a RecordedEvent) -> HandleFuture<'a>;

    /// Completes the effects `handle` deferred for the page just handled (a process manager
    /// sends its commands here, concurrently); called before the checkpoint moves past the
    /// page. Failures name their events: each is then handled per the [`FailurePolicy`]
    /// (an [`Interrupted`] one moves the checkpoint back before it instead). The default does
    /// nothing.
    fn flush(&mut self) -> FlushFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// What a subscriber does with an event its handler keeps failing on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Park it (persisted, inspectable, retryable) and go on with the next event.
    #[default]
    Park,
    /// Stop the subscriber and report it failed.
    Stop,
}

/// Options of one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberOptions {
    /// Events read per page: bounds the subscriber's memory (about 1 MiB at the default); the
    /// checkpoint is saved, and a projection's held view writes are written, once per page —
    /// so a larger page writes a record touched by several of its events once (catch-up of a
    /// projection over 1M events: about 220k events/s with 512-event pages, 415k with 4,096).
    pub page_events: NonZeroUsize,
    /// Retries of a failing event before the [`FailurePolicy`] applies.
    pub retries: u32,
    /// The first retry's pause; each later one doubles it.
    pub backoff: Duration,
    /// What to do with an event that keeps failing.
    pub on_failure: FailurePolicy,
    /// The aggregate types whose events the subscriber reads (`None`: all). Events of other
    /// types are passed over without a call to the handler, and their batches do not wake the
    /// subscriber: it is woken by a batch that holds one of these types at once, and otherwise
    /// catches its checkpoint up with the head every [`FOLLOW_INTERVAL`] while the log grows
    /// (so lag, read-your-writes waits and a restart's catch-up stay short). See
    /// [`EventStore::watch_types`](crate::store::EventStore::watch_types).
    pub aggregate_types: Option<Arc<[String]>>,
}

/// How often a subscriber with [`SubscriberOptions::aggregate_types`] that nothing of its types
/// woke catches its checkpoint up with a head that moved: a wait for a position
/// ([`Runtime::wait_for`](crate::Runtime::wait_for)) of another type's event is answered within
/// about this.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(20);

impl Default for SubscriberOptions {
    fn default() -> Self {
        SubscriberOptions {
            page_events: NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
            retries: 3,
            backoff: Duration::from_millis(10),
            on_failure: FailurePolicy::Park,
            aggregate_types: None,
        }
    }
}

impl SubscriberOptions {
    /// Sets the failure policy.
    #[must_use]
    pub fn with_failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }

    /// Sets the retries and the first backoff.
    #[must_use]
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// Sets the page size.
    #[must_use]
    pub fn with_page_events(mut self, page_events: NonZeroUsize) -> Self {
        self.page_events = page_events;
        self
    }

    /// Reads only the events of these aggregate types (see
    /// [`aggregate_types`](SubscriberOptions::aggregate_types)).
    #[must_use]
    pub fn with_aggregate_types<T: Into<String>>(
        mut self,
        aggregate_types: impl IntoIterator<Item = T>,
    ) -> Self {
        self.aggregate_types = Some(aggregate_types.into_iter().map(Into::into).collect());
        self
    }

    /// Whether the subscriber reads events of `aggregate_type`.
    pub(crate) fn reads(&self, aggregate_type: &str) -> bool {
        self.aggregate_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == aggregate_type))
    }
}

/// What a subscriber is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriberStatus {
    /// Reading the log behind the head.
    CatchingUp,
    /// At the head, handling events as they are committed.
    Live,
    /// A projection's replacement being built beside the live one.
    Rebuilding,
    /// Stopped on request.
    Stopped,
    /// Waiting while another node that shares the store runs it; takes over when that node
    /// stops or goes silent (see [`Lease`](crate::store::Lease)).
    Standby,
    /// Waiting to try again after a store error that may pass (a failed read, a full queue):
    /// the reason. It resumes by itself from its checkpoint, with growing pauses (up to
    /// [`STALL_PAUSE_MAX`]).
    Retrying(String),
    /// Stopped after an event kept failing (policy [`FailurePolicy::Stop`]) or a store error
    /// that will not pass by itself (damaged data). Restarting the runtime, or rebuilding a
    /// projection, starts it again.
    Failed(String),
}

/// The longest pause of a subscriber between attempts after a store error.
pub const STALL_PAUSE_MAX: Duration = Duration::from_secs(30);

/// Whether a store error may pass by itself (so the subscriber waits and tries again) rather
/// than mean damaged data (so it stops and reports failure).
pub(crate) fn is_transient(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Io { .. }
            | StoreError::Overloaded { .. }
            | StoreError::Failed { .. }
            | StoreError::Closed
    )
}

/// A subscriber's progress, for lag monitoring.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberInfo {
    /// The subscriber's name.
    pub name: String,
    /// The last position it has processed.
    pub checkpoint: Position,
    /// The log's head.
    pub head: Position,
    /// Events behind the head.
    pub lag_events: u64,
    /// Seconds since the oldest event it has not processed was recorded (0 when at the head).
    pub lag_seconds: f64,
    /// What it is doing.
    pub status: SubscriberStatus,
}

/// A handler error meaning "not a failure of this event: the runtime cannot take it right
/// now" (it is shutting down, or a queue is full). The subscriber saves its checkpoint before
/// this event, pauses and tries again from there — it neither retries to a limit nor parks.
#[derive(Debug, Clone, thiserror::Error)]
#[error("interrupted: {0}")]
pub struct Interrupted(pub String);

/// Why retrying a parked event did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError {
    /// No such subscriber.
    #[error("no subscriber named {0:?}")]
    UnknownSubscriber(String),
    /// No event is parked at that position.
    #[error("no event is parked at position {0}")]
    NotParked(Position),
    /// The handler failed again; the event stays parked.
    #[error("the handler failed again: {0}")]
    Failed(String),
    /// The subscriber is stopped.
    #[error("the subscriber is stopped")]
    Stopped,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
