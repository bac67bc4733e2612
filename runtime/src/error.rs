//! The runtime's error type for technical failures of a command.
//!
//! Business rejections are *not* errors: [`Runtime::execute`](crate::Runtime::execute) returns
//! `Result<Result<Executed, Rejection>, ExecuteError>`, so `?` carries only what the caller did
//! not decide (after sled's and eventsourced's nested-result practice).

use std::time::Duration;

use crate::codec::CodecError;
use crate::store::StoreError;
use crate::types::{CommandId, InvalidId, StreamId, Version};

/// A limit that a command exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// Encoded size of the command, in bytes.
    CommandBytes,
    /// Number of events one command produced.
    EventsPerCommand,
    /// Encoded size of one event, in bytes.
    EventBytes,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::CommandBytes => "bytes per command",
            Limit::EventsPerCommand => "events per command",
            Limit::EventBytes => "bytes per event",
        })
    }
}

/// What is overloaded, for [`ExecuteError::Overloaded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overload {
    /// The aggregate's mailbox is full (too many commands queued for one aggregate).
    Mailbox,
    /// The journal's queue is full.
    Journal,
    /// The command waited longer than
    /// [`RuntimeOptions::queue_time_max`](crate::RuntimeOptions::queue_time_max) before its
    /// aggregate could start it: the runtime is taking more than it can serve, and sheds load
    /// early rather than let every command wait longer.
    QueueTime,
}

impl std::fmt::Display for Overload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overload::Mailbox => "too many commands are queued for this aggregate",
            Overload::Journal => "the journal's queue is full",
            Overload::QueueTime => {
                "commands wait longer than the queue-time budget: the runtime is overloaded"
            }
        })
    }
}

/// Why a command was not executed (or why its outcome is unknown).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError {
    /// The aggregate type was never registered with the runtime.
    #[error("aggregate type {0:?} is not registered")]
    Unregistered(String),
    /// The aggregate id, command id or a trace id is invalid.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// A queue is full, or commands wait too long. Nothing was executed; retry after
    /// `retry_after`.
    #[error("cannot execute on {stream}: {what}; nothing was executed, retry later")]
    Overloaded {
        /// The aggregate addressed.
        stream: StreamId,
        /// Which queue.
        what: Overload,
        /// A suggested pause before retrying.
        retry_after: Duration,
    },
    /// The caller's expected version does not match. Nothing was executed.
    #[error("cannot execute on {stream}: expected version {expected}, stream is at {current}")]
    Conflict {
        /// The aggregate addressed.
        stream: StreamId,
        /// The version the caller expected.
        expected: Version,
        /// The stream's current version.
        current: Version,
    },
    /// The command id was already used for a different command. Nothing was executed.
    #[error("command id {0} was already used for a different command")]
    CommandIdReused(CommandId),
    /// Another command with the same command id is being executed right now (by another
    /// instance of the aggregate); retry to receive its outcome.
    #[error("command id {0} is being executed concurrently; retry to receive its outcome")]
    CommandInProgress(CommandId),
    /// The command exceeds a configured limit. Nothing was executed.
    #[error("cannot execute on {stream}: {actual} {what} exceeds the limit of {limit}")]
    LimitExceeded {
        /// The aggregate addressed.
        stream: StreamId,
        /// Which limit.
        what: Limit,
        /// The limit.
        limit: usize,
        /// The actual value.
        actual: usize,
    },
    /// The aggregate stopped while executing the command: it may or may not have been
    /// committed. Retry with the same command id to learn the outcome safely.
    #[error("the outcome of the command on {0} is unknown (the aggregate stopped while executing it); retry with the same command id")]
    OutcomeUnknown(StreamId),
    /// The runtime is shutting down and accepts no commands.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The command, an event, a rejection or a snapshot could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] std::sync::Arc<CodecError>),
}

impl From<CodecError> for ExecuteError {
    fn from(e: CodecError) -> Self {
        ExecuteError::Codec(std::sync::Arc::new(e))
    }
}

/// Why the runtime could not be opened or an administrative call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The store could not be opened or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The aggregate type is already registered.
    #[error("aggregate type {0:?} is already registered")]
    AlreadyRegistered(&'static str),
    /// The aggregate type name is invalid.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// The actor system could not be started or stopped.
    #[error("actor system: {0}")]
    System(String),
    /// A read failed to decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
}
