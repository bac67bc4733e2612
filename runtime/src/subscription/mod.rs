//! Subscriptions: committed events reach every subscriber, in position order, at least once.
//!
//! # How events reach a subscriber
//! The log *is* the buffer. A subscriber is an actix actor with a checkpoint (the last position
//! it has fully processed, persisted in the [`StateStore`](crate::store::StateStore)). It reads the global log from its
//! checkpoint in pages, handles each event, and at the end of each page commits, in **one
//! atomic commit**, its checkpoint with everything the page changed (view records, process
//! states, deadlines, parked events: see `page.rs`); when it reaches the
//! head it waits on the store's head watch, which the journal updates after every acknowledged
//! batch. Catching up after a restart and following live writes are the same loop, so there is
//! no switch-over at which an event could be missed or delivered twice, and a slow subscriber
//! costs the journal nothing: it simply reads further behind, with memory bounded by one page.
//! A just-written batch is still in the store's cache, so a live subscriber reads it from memory.
//!
//! A subscriber that reads only some aggregate types
//! ([`SubscriberOptions::aggregate_types`]) waits at the head on the store's watch of those
//! types instead ([`EventStore::watch_types`](crate::store::EventStore::watch_types)): a batch
//! of other types does not wake it (on a busy service of many aggregate types, most batches
//! would wake it for nothing). It still reads every position in order, passing over the other
//! types' events without calling its handler, so nothing is skipped; while only other types
//! are written, it catches its checkpoint up with the head every [`FOLLOW_INTERVAL`].
//!
//! A page that stores nothing (events a projection does not index, or a subscriber whose
//! effects are outside the store) moves the checkpoint in memory only; the checkpoint is
//! committed with the next page that stores something, otherwise with the first page that ends
//! 50 ms after the last commit, and when the subscriber has been idle at the head for 50 ms or
//! stops. At the head, where a page is the batch or two
//! acknowledged since the last, this saves one state-store commit per batch per subscriber.
//!
//! # Delivery and failure
//! Delivery is at least once: a crash after handling events but before their page was
//! committed delivers them again — with none of their stored effects, which were in the same
//! commit (and a crash may deliver again about 50 ms, plus a page, of events whose pages stored
//! nothing). Per-aggregate order (indeed global order) is preserved. A handler
//! error is retried with exponential backoff up to [`SubscriberOptions::retries`]; then, per
//! [`FailurePolicy`], the event is **parked** (a persisted dead letter, see
//! [`Runtime::parked`](crate::Runtime::parked) and
//! [`Runtime::retry_parked`](crate::Runtime::retry_parked)) and the subscriber goes on, or the
//! subscriber **stops** and reports [`SubscriberStatus::Failed`]. A failing subscriber never
//! stops the others: each runs on its own.
//!
//! # Layout
//! | file | holds |
//! |---|---|
//! | `subscriber` | the [`Subscriber`] trait, options, status, progress, handler and retry errors |
//! | `page` | a page's held writes, committed with its checkpoint |
//! | `reader` | one log reader for all subscribers: each stretch of the log read and decoded once, shared |
//! | `worker` | the subscriber actor: the page loop, retries, parking, stalls |
//! | `registry` | the subscribers of one runtime: registration, rebuilds, waits, parked events, the deadline timer |
//! | [`projection`] | projections and their views |
//! | [`process`] | process managers (sagas) and their deadlines |
//!
//! Dependencies point down this table's reverse: `registry` starts workers, projections and
//! process managers; they use `page` and `subscriber`, which use nothing here. A process
//! manager sends its commands through a `CommandSink` (a small trait object) the runtime
//! gives the registry, so nothing in this folder names the [`Runtime`](crate::Runtime).

mod page;
pub mod process;
pub mod projection;
mod reader;
pub(crate) mod registry;
mod subscriber;
mod worker;

pub use self::registry::{
    SubscribeError, WaitError, DEADLINE_TICK, GENERATION_POLL, NAME_LEN_MAX, OLD_GENERATION_GRACE,
    PARKED_LISTED_MAX,
};
pub use self::subscriber::{
    FailurePolicy, FlushFuture, HandleFuture, HandlerError, Interrupted, RetryError, Subscriber,
    SubscriberInfo, SubscriberOptions, SubscriberStatus, FOLLOW_INTERVAL, STALL_PAUSE_MAX,
};
pub use self::worker::CLAIM_INTERVAL;
