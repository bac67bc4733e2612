//! What the live actors of one aggregate type share, and what ties each actor to its routing
//! table.
//!
//! [`TypeShared`] is the part of an aggregate type's [host](crate::host) that its actors read:
//! the store, the type's options, the limits a command is checked against, the counters. A
//! [`Slot`] is one actor's entry in the routing table (queued commands, generation, whether it
//! has stopped), and [`Routing`] is how an actor leaves the table: the host implements it, and
//! the actor holds it as a trait object, so the actor does not name the host that starts it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::aggregate::AggregateOptions;
use crate::store::EventStore;

/// The limits one command is checked against.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) command_bytes_max: usize,
    pub(crate) events_per_command_max: usize,
    pub(crate) event_bytes_max: usize,
    pub(crate) mailbox_capacity: usize,
    pub(crate) retry_after: Duration,
    pub(crate) queue_time_max: Duration,
}

/// Counters shared by the runtime and its actors.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) live: AtomicUsize,
    pub(crate) activations: AtomicU64,
    pub(crate) passivations: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) rehydrations: AtomicU64,
    pub(crate) rehydration_micros: AtomicU64,
}

impl Counters {
    pub(crate) fn record_rehydration(&self, took: Duration) {
        self.rehydrations.fetch_add(1, Ordering::Relaxed);
        self.rehydration_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// What the actors of one type share.
pub(crate) struct TypeShared {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) options: AggregateOptions,
    pub(crate) limits: Limits,
    pub(crate) rehydrations: Arc<tokio::sync::Semaphore>,
    pub(crate) counters: Arc<Counters>,
    /// Interned event type names, so envelopes share one allocation per type name.
    event_types: Mutex<std::collections::HashMap<&'static str, Arc<str>>>,
}

impl TypeShared {
    pub(crate) fn new(
        store: Arc<dyn EventStore>,
        options: AggregateOptions,
        limits: Limits,
        rehydrations: Arc<tokio::sync::Semaphore>,
        counters: Arc<Counters>,
    ) -> TypeShared {
        TypeShared {
            store,
            options,
            limits,
            rehydrations,
            counters,
            event_types: Mutex::default(),
        }
    }

    pub(crate) fn event_type_name(&self, name: &'static str) -> Arc<str> {
        self.event_types
            .lock()
            .entry(name)
            .or_insert_with(|| Arc::from(name))
            .clone()
    }
}

/// Per-actor routing state.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Commands sent to the actor and not yet taken by it.
    pub(crate) queued: AtomicUsize,
    /// Distinguishes this actor from a later one for the same id.
    pub(crate) generation: u64,
    /// Set once the actor has stopped; its successor waits for it (see [`Host::route`](crate::host)).
    stopped: AtomicBool,
    on_stop: tokio::sync::Notify,
}

impl Slot {
    pub(crate) fn new(generation: u64) -> Slot {
        Slot {
            queued: AtomicUsize::new(0),
            generation,
            stopped: AtomicBool::new(false),
            on_stop: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn has_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Marks the actor owning this slot stopped and wakes whoever waits for that.
    pub(crate) fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::Release);
        self.on_stop.notify_waiters();
    }

    /// Resolves once the actor owning this slot has stopped.
    pub(crate) async fn stopped(&self) {
        loop {
            let notified = self.on_stop.notified();
            if self.has_stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// How an actor leaves its routing table (implemented by the [host](crate::host)).
pub(crate) trait Routing: Send + Sync {
    /// Removes `id` from the table if it still maps to the actor owning `slot` (which is about
    /// to stop).
    fn forget(&self, id: &str, slot: &Arc<Slot>);

    /// Called by an actor when it has stopped: marks its slot, and wakes its successor, if one
    /// is waiting.
    fn stopped(&self, id: &str, slot: &Arc<Slot>);
}
