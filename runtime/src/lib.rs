//! # Annals: an actor-based aggregate runtime for event-sourced services
//!
//! Aggregates are plain Rust types ([`Aggregate`]): a pure `decide` step that turns a command
//! into events or a typed business rejection, and an infallible `apply` step that folds an
//! event into the state. Annals runs each aggregate instance as an [actix] actor that
//! rehydrates from a snapshot and the events after it, handles its commands one at a time, and
//! appends their events to a **journal** on [sled] that makes them durable — one fsync per
//! batch of commands from all actors (group commit) — before anyone is told they happened.
//!
//! ```
//! use annals::{Aggregate, DomainEvent, Runtime, RuntimeOptions};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Counter { value: u64 }
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! enum CounterCommand { Add(u64) }
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! enum CounterEvent { Added(u64) }
//!
//! impl DomainEvent for CounterEvent {
//!     fn event_type(&self) -> &'static str { "Added" }
//! }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
//! #[error("adding zero changes nothing")]
//! struct NothingToAdd;
//!
//! impl Aggregate for Counter {
//!     const TYPE: &'static str = "Counter";
//!     type Command = CounterCommand;
//!     type Event = CounterEvent;
//!     type Rejection = NothingToAdd;
//!
//!     fn decide(&self, command: &CounterCommand) -> Result<Vec<CounterEvent>, NothingToAdd> {
//!         match *command {
//!             CounterCommand::Add(0) => Err(NothingToAdd),
//!             CounterCommand::Add(n) => Ok(vec![CounterEvent::Added(n)]),
//!         }
//!     }
//!
//!     fn apply(&mut self, event: &CounterEvent) {
//!         let CounterEvent::Added(n) = event;
//!         self.value += n;
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let runtime = Runtime::open(RuntimeOptions::new(dir.path()))?;
//! runtime.register::<Counter>()?;
//! futures::executor::block_on(async {
//!     // Outer `?`: technical failure. Inner result: committed events or a business rejection.
//!     let executed = runtime.execute::<Counter>("c-1", CounterCommand::Add(5)).await??;
//!     assert_eq!(executed.version.0, 1);
//!     let rejected = runtime.execute::<Counter>("c-1", CounterCommand::Add(0)).await?;
//!     assert_eq!(rejected.unwrap_err(), NothingToAdd);
//!     let state = runtime.state::<Counter>("c-1")?.expect("it exists");
//!     assert_eq!(state.state.value, 5);
//!     runtime.shutdown().await?;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! # Layout
//! | module | what it holds |
//! |---|---|
//! | [`aggregate`] | the [`Aggregate`] and [`DomainEvent`] traits, per-type [`AggregateOptions`] |
//! | [`runtime`] | the embedding API: [`Runtime`], [`RuntimeOptions`] — the one entry point |
//! | [`command`] | what a command is sent with and answered with: [`ExecuteOptions`], [`Executed`], [`Answered`] |
//! | `actor`, `host`, `shared` (private) | the aggregate actor, the sharded routing table, and what an aggregate type's actors share with it |
//! | [`store`] | the storage boundary: the [`EventStore`](store::EventStore) log and the [`StateStore`](store::StateStore) read-side state; their sled implementation (the default; nothing else names sled) and, with the `postgres` feature (on by default), the PostgreSQL one that several nodes share ([`store::postgres`]) |
//! | [`subscription`] | subscribers: the [`Subscriber`] trait, the actors that read the log from a checkpoint and commit each page atomically with it, and the registry behind the runtime's subscriber methods (lag, read-your-writes, parked events, rebuilds) |
//! | [`projection`] (in `subscription/`) | read models: [`View`]s with per-record positions, rebuilt beside the live one |
//! | [`process`] (in `subscription/`) | process managers (sagas): state and outbox per instance, deadlines |
//! | [`envelope`] | [`Envelope`]: an event with its metadata |
//! | [`types`] | [`Version`], [`Position`], [`StreamId`], [`CommandId`], [`Timestamp`] |
//! | [`codec`] | CBOR with a format byte, for everything on disk |
//! | [`error`] | [`ExecuteError`] and [`RuntimeError`] |
//! | `testkit` (feature `testkit`) | given/when/then tests for aggregates |
//! | [`design`] | the design and the promises of the whole system: how the pieces fit and why |
//!
//! No source file imports another through a circle (`runtime/tests/module_graph.rs` checks it):
//! the leaves are `types`, `codec`, `aggregate`, `envelope`, `command`; the store sits on them;
//! actors and subscribers on the store; [`Runtime`] on top. A process manager sends commands
//! through a small trait object the runtime hands to the subscriber registry, not through a
//! reference back to [`Runtime`].
//!
//! # Guarantees
//! - **Durability.** In the default [`Durability::Durable`](store::Durability) mode an
//!   acknowledged command's events were fsynced before the reply — a real `fdatasync`/`fsync`
//!   of every file and directory that holds them, not sled's `flush` alone. A crash of the
//!   process or a power cut loses nothing acknowledged, duplicates nothing and leaves no version
//!   gap (checked by kill -9 crash tests, and by power-cut tests on a filesystem that forgets
//!   whatever was not synced). A store whose files lost acknowledged data (a damaged or lost
//!   tail) refuses to open, naming what is missing, instead of rolling back quietly. The
//!   explicit `Relaxed` mode acknowledges before the fsync; see [`store::sled`] for exactly
//!   what a crash can lose in that mode.
//! - **Atomicity.** All events of one command are committed together or not at all.
//! - **Order.** Per aggregate, commands run one at a time (the actor handles a command in an
//!   actix `AtomicResponse`, which blocks its mailbox until the command is replied to);
//!   versions are contiguous from 1; global positions are strictly increasing without gaps.
//! - **Optimistic concurrency.** [`ExecuteOptions::expected_version`] makes a command
//!   conditional; the journal also checks every append against the stream head, so even two
//!   instances of one aggregate (during an eviction) can never interleave their events.
//! - **Idempotency.** A command with a [`CommandId`] has its outcome — events, rejection, or
//!   nothing — stored with it; a retry returns that outcome without running again, after
//!   restarts too; the same id with a different command is [`ExecuteError::CommandIdReused`].
//! - **Bounded resources.** Every queue and cache has a limit ([`RuntimeOptions`],
//!   [`store::SledOptions`]); at a limit a command gets a typed error
//!   ([`ExecuteError::Overloaded`] with a retry-after hint, [`ExecuteError::LimitExceeded`])
//!   or, for live actors, the least recently used one is evicted. A command that waited longer
//!   than [`RuntimeOptions::queue_time_max`] for its aggregate is refused unexecuted (load is
//!   shed early under overload), and appends are refused with
//!   [`StoreError::DiskFull`](store::StoreError::DiskFull) while the disk is below its
//!   configured minimum — the store stays healthy and takes appends again once space is freed.
//! - **Failure.** A failed write or fsync acknowledges nothing of its batch and puts the store
//!   in a failed state ([`store::StoreHealth::Failed`]) that refuses every later write; it is
//!   never retried and then acknowledged. Restarting recovers.
//! - **Bad bytes.** A damaged record, an unknown format byte or a locked directory is a typed
//!   error ([`store::StoreError`]), never a panic, and opening a damaged store changes nothing.
//!
//! - **Subscribers see every committed event**, in position order, at least once: each reads
//!   the log from its persisted checkpoint and follows the head; a slow one lags without
//!   slowing the journal. **Projections** apply each event to each view record at most once
//!   (records carry positions), so after any crash a view equals a rebuild from scratch; a
//!   projection is **rebuilt** beside the live one and swapped in without downtime. **Process
//!   managers** never apply a step twice: state and outbox are stored per instance, and each
//!   command's id derives from the triggering event. A command's reply carries its position, and
//!   [`Runtime::wait_for`] waits (bounded) until a subscriber has reached it.
//! - **Several nodes** (the PostgreSQL backend): any node takes any command (the version check
//!   is in the database; a stale actor reloads and decides again); positions stay dense and in
//!   commit order across nodes; each subscriber runs on one node at a time, claimed with a
//!   [`Lease`](store::Lease) whose fencing epoch every page commit carries, so an owner that
//!   lost its lease without knowing cannot write. See [`store::postgres`].
//!
//! # Threads
//! [`Runtime::open`] starts its own actix system: one arbiter thread per core for the actors
//! and two journal threads (writer and flusher). Its async methods are executor-agnostic: call
//! them from tokio, actix, or `futures::executor::block_on`. With [`Placement::Caller`], an
//! aggregate activated from an actix arbiter (an actix-web worker) runs on that thread instead
//! (then never block such a thread waiting for a command: see [`Placement::Caller`]).

pub mod aggregate;
pub mod codec;
pub mod command;
#[doc = include_str!("../DESIGN.md")]
pub mod design {}
pub mod envelope;
pub mod error;
pub mod runtime;
pub mod store;
pub mod subscription;
pub mod types;

mod actor;
mod host;
mod shared;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use aggregate::{Aggregate, AggregateOptions, DomainEvent, Upcast, UpcastError};
pub use command::{Answered, ExecuteOptions, ExecuteResult, Executed};
pub use envelope::{CommitMeta, Envelope, RecordedEvent};
pub use error::{ExecuteError, Limit, Overload, RuntimeError};
pub use runtime::{AggregateState, Placement, Runtime, RuntimeOptions, RuntimeStats};
pub use subscription::process::{Action, ProcessManager};
pub use subscription::projection::{Projection, View, ViewError, ViewSet};
pub use subscription::{
    process, projection, FailurePolicy, FlushFuture, HandleFuture, HandlerError, Interrupted,
    RetryError, SubscribeError, Subscriber, SubscriberInfo, SubscriberOptions, SubscriberStatus,
    WaitError,
};
pub use types::{CommandId, Position, StreamId, Timestamp, Version};
