//! The command types shared by the runtime and its actors: how a command is asked for
//! ([`ExecuteOptions`]) and what it gives back ([`Executed`], [`Answered`], [`ExecuteResult`]).
//! A leaf module: it depends on nothing of the runtime but its value types.

use std::sync::Arc;

use crate::aggregate::Aggregate;
use crate::envelope::Envelope;
use crate::error::ExecuteError;
use crate::types::{CommandId, Position, StreamId, Version};

/// The result of executing a command: technical failure outside, business rejection inside.
pub type ExecuteResult<A> =
    Result<Result<Executed<<A as Aggregate>::Event>, <A as Aggregate>::Rejection>, ExecuteError>;

/// A command's result, and whether it is the stored outcome of an earlier execution with the
/// same command id (then nothing ran now): see [`Runtime::execute_answered`](crate::Runtime::execute_answered).
#[derive(Debug)]
pub struct Answered<A: Aggregate> {
    /// The committed events, or the business rejection.
    pub result: Result<Executed<A::Event>, A::Rejection>,
    /// `true` if this is the stored outcome of an earlier execution (a retry), rejection
    /// included; for committed events also in [`Executed::deduplicated`].
    pub replayed: bool,
}

/// A command that was executed (or whose earlier execution was found by its command id).
#[derive(Debug, Clone, PartialEq)]
pub struct Executed<E> {
    /// The aggregate.
    pub stream: StreamId,
    /// The aggregate's version after the command.
    pub version: Version,
    /// The global position of the command's last event (`None` if it produced none). Pass it
    /// to read-model queries to read your own writes.
    pub position: Option<Position>,
    /// The committed events.
    pub events: Vec<Envelope<E>>,
    /// `true` if this is the stored outcome of an earlier execution with the same command id.
    pub deduplicated: bool,
}

impl<E> Executed<E> {
    pub(crate) fn nothing(stream: StreamId, version: Version) -> Executed<E> {
        Executed {
            stream,
            version,
            position: None,
            events: Vec::new(),
            deduplicated: false,
        }
    }
}

/// Per-command options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecuteOptions {
    /// Makes the command idempotent: its outcome is stored, and a retry with the same id
    /// returns it without executing again.
    pub command_id: Option<CommandId>,
    /// Execute only if the aggregate is at this version (`Version(0)`: does not exist yet).
    pub expected_version: Option<Version>,
    /// Correlation id recorded with the events.
    pub correlation_id: Option<Arc<str>>,
    /// Causation id recorded with the events.
    pub causation_id: Option<Arc<str>>,
    /// Sent by the runtime itself (a process manager or a deadline): never shed for queue time.
    pub(crate) internal: bool,
}

impl ExecuteOptions {
    /// Sets the command id.
    #[must_use]
    pub fn with_command_id(mut self, id: CommandId) -> Self {
        self.command_id = Some(id);
        self
    }

    /// Sets the expected version.
    #[must_use]
    pub fn with_expected_version(mut self, version: Version) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn with_causation_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.causation_id = Some(id.into());
        self
    }
}
