//! The aggregate model: what a user implements to define an aggregate type.
//!
//! An aggregate is a plain Rust type with two steps, after Commanded's `execute`/`apply`:
//! - [`Aggregate::decide`] is pure: given the current state and a command, it returns the events
//!   to record, or a typed business [`Aggregate::Rejection`]. It performs no I/O; data a command
//!   needs from elsewhere is read before dispatch and carried in the command.
//! - [`Aggregate::apply`] folds one committed event into the state and cannot fail: an event is a
//!   fact that already happened, so refusing it would make the stream unreadable.
//!
//! The runtime calls `decide`, makes the events durable, then calls `apply` for each of them.
//! Replaying a stream is `apply` over its events, from [`Default`] or from a snapshot.

use std::fmt::Debug;
use std::num::NonZeroU64;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// An aggregate type. See the [module docs](self) for the contract.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Unpin + 'static {
    /// The type name, part of every stream key (`"Order"`). Never change it once data exists.
    const TYPE: &'static str;

    /// The commands this aggregate accepts. Serialized (CBOR) to fingerprint commands that carry
    /// a command id, so that a reused id with a different command is detected.
    type Command: Serialize + DeserializeOwned + Debug + Send + 'static;

    /// The events this aggregate records.
    type Event: DomainEvent;

    /// Why a command was refused for business reasons. It is a value, not a failure: it is
    /// returned as `Ok(Err(rejection))` and stored for commands that carry a command id, so a
    /// retry returns the same rejection.
    type Rejection: std::error::Error
        + Serialize
        + DeserializeOwned
        + Clone
        + PartialEq
        + Send
        + Sync
        + 'static;

    /// Decides what a command means in the current state: the events to record (possibly none)
    /// or a rejection. Must be pure and deterministic.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Rejection>;

    /// Folds one committed event into the state. Must not fail and must not panic.
    fn apply(&mut self, event: &Self::Event);

    /// Per-type options: snapshot cadence and schema, idle timeout.
    fn options() -> AggregateOptions {
        AggregateOptions::default()
    }
}

/// An event type: serializable, and able to name itself for the envelope.
pub trait DomainEvent:
    Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static
{
    /// The event's type name as recorded in its envelope (`"OrderCreated"`).
    fn event_type(&self) -> &'static str;

    /// The schema version of this event type as written now. Bump it when the event's shape
    /// changes, and register an upcaster for the older versions.
    fn schema_version(&self) -> u16 {
        1
    }
}

/// Per-aggregate-type options. Built with [`AggregateOptions::default`] and the `with_*`
/// methods, so new options never break existing code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AggregateOptions {
    /// Write a snapshot every this many events (`None`: never). Snapshots bound rehydration
    /// time; they are written after the reply, off the command path.
    pub snapshot_every: Option<NonZeroU64>,
    /// The schema version of the serialized state. Bump it whenever the state type changes
    /// shape: snapshots with another version are ignored and the aggregate replays fully.
    pub snapshot_schema_version: u32,
    /// A live actor with no command for this long stops (passivates) and frees its memory.
    pub idle_timeout: Duration,
}

/// Default snapshot cadence: rehydration replays at most this many events after a snapshot.
pub const SNAPSHOT_EVERY_DEFAULT: u64 = 100;

/// Default idle timeout of an aggregate actor.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);

impl Default for AggregateOptions {
    fn default() -> Self {
        AggregateOptions {
            snapshot_every: NonZeroU64::new(SNAPSHOT_EVERY_DEFAULT),
            snapshot_schema_version: 1,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
        }
    }
}

impl AggregateOptions {
    /// Sets the snapshot cadence (`None`: never snapshot).
    #[must_use]
    pub fn with_snapshot_every(mut self, every: Option<NonZeroU64>) -> Self {
        self.snapshot_every = every;
        self
    }

    /// Sets the snapshot schema version.
    #[must_use]
    pub fn with_snapshot_schema_version(mut self, version: u32) -> Self {
        self.snapshot_schema_version = version;
        self
    }

    /// Sets the idle timeout.
    #[must_use]
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }
}
