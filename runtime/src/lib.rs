//! Annals runtime (docs below).
mod actor;
pub mod aggregate;
pub mod codec;
pub mod envelope;
pub mod error;
mod host;
pub mod runtime;
pub mod store;
pub mod types;

pub use aggregate::{Aggregate, AggregateOptions, DomainEvent};
pub use envelope::{CommitMeta, Envelope, RecordedEvent};
pub use error::{ExecuteError, Limit, Overload, RuntimeError};
pub use runtime::{
    AggregateState, ExecuteOptions, ExecuteResult, Executed, Runtime, RuntimeOptions, RuntimeStats,
};
pub use types::{CommandId, Position, StreamId, Timestamp, Version};
#[cfg(feature = "testkit")]
pub mod testkit;
