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

    /// Turns one stored event written with an older schema version into events of newer
    /// versions — one, several, or none (an event type that no longer exists). It is applied
    /// again to its results until every event is at the version
    /// [`DomainEvent::current_schema_version`] names, then decoded. The default knows no old
    /// versions. See [`Upcast`].
    fn upcast(old: Upcast) -> Result<Vec<Upcast>, UpcastError> {
        Err(UpcastError::NoUpcaster {
            event_type: old.event_type,
            schema_version: old.schema_version,
        })
    }
}

/// A stored event on its way to the current schema: its type, its schema version, and its
/// payload as a generic CBOR value to reshape.
#[derive(Debug, Clone, PartialEq)]
pub struct Upcast {
    /// The event type name.
    pub event_type: String,
    /// The schema version `payload` is in.
    pub schema_version: u16,
    /// The payload.
    pub payload: ciborium::Value,
}

impl Upcast {
    /// The payload's map entry named `field`, if the payload is a map.
    pub fn field(&self, field: &str) -> Option<&ciborium::Value> {
        self.payload
            .as_map()?
            .iter()
            .find(|(k, _)| k.as_text() == Some(field))
            .map(|(_, v)| v)
    }

    /// Sets (or adds) the payload's map entry named `field`; `false` if the payload is no map.
    pub fn set_field(&mut self, field: &str, value: ciborium::Value) -> bool {
        let Some(map) = self.payload.as_map_mut() else {
            return false;
        };
        match map.iter_mut().find(|(k, _)| k.as_text() == Some(field)) {
            Some((_, v)) => *v = value,
            None => map.push((ciborium::Value::Text(field.to_string()), value)),
        }
        true
    }
}

/// Why an old event could not be brought to the current schema.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum UpcastError {
    /// No upcaster knows this type at this version.
    #[error("no upcaster for {event_type} schema version {schema_version}")]
    NoUpcaster {
        /// The event type.
        event_type: String,
        /// Its schema version.
        schema_version: u16,
    },
    /// The old payload does not have the expected shape.
    #[error("cannot upcast {event_type} schema version {schema_version}: {reason}")]
    Invalid {
        /// The event type.
        event_type: String,
        /// Its schema version.
        schema_version: u16,
        /// What is wrong.
        reason: String,
    },
}

/// An event type: serializable, and able to name itself for the envelope.
pub trait DomainEvent:
    Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static
{
    /// The event's type name as recorded in its envelope (`"OrderCreated"`).
    fn event_type(&self) -> &'static str;

    /// The schema version of this event as written now: `Self::current_schema_version` of its
    /// type.
    fn schema_version(&self) -> u16 {
        Self::current_schema_version(self.event_type())
    }

    /// The schema version events of type `event_type` are written with now. Bump it when that
    /// type's shape changes, and teach [`Aggregate::upcast`] the older versions. Stored events
    /// at this version are decoded directly; older ones go through the upcaster first. For a
    /// type that no longer exists, return a version above the last one written, and let the
    /// upcaster turn its old versions into other types (or into nothing).
    fn current_schema_version(event_type: &str) -> u16
    where
        Self: Sized,
    {
        let _ = event_type;
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
