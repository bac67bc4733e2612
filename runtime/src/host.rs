//! The routing table of one aggregate type: aggregate id → live actor, sharded.
//!
//! Routing is on the path of every command, so it is not an actor (a single mailbox would
//! serialize all commands of the type). It is `shards` independent mutex-protected LRU maps,
//! chosen by a hash of the id; a lookup holds one shard's lock for a hash-map probe.
//!
//! **Live-actor cap**: each shard holds at most `ceil(live_actors_max / shards)` actors. Adding
//! one beyond that evicts the shard's least recently used actor: it is removed from the map and
//! sent [`Passivate`], which it handles after the commands already in its mailbox.
//!
//! **Mailbox bound**: actix's `try_send` lets every distinct sender put one message beyond the
//! mailbox capacity, so the bound is enforced here instead, with a per-actor counter of queued
//! commands ([`Slot::queued`]); a command beyond `mailbox_capacity` is refused as
//! [`Overload::Mailbox`](crate::Overload::Mailbox).
//!
//! Actors are spread round-robin over the runtime's arbiters (one thread each, one per core).

use std::hash::{BuildHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_rt::ArbiterHandle;
use lru::LruCache;
use parking_lot::Mutex;

use crate::actor::{AggregateActor, Passivate};
use crate::aggregate::{Aggregate, AggregateOptions};
use crate::store::EventStore;
use crate::types::StreamId;

/// The limits one command is checked against.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) command_bytes_max: usize,
    pub(crate) events_per_command_max: usize,
    pub(crate) event_bytes_max: usize,
    pub(crate) mailbox_capacity: usize,
    pub(crate) retry_after: Duration,
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
        self.rehydration_micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
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
        TypeShared { store, options, limits, rehydrations, counters, event_types: Mutex::default() }
    }

    pub(crate) fn event_type_name(&self, name: &'static str) -> Arc<str> {
        self.event_types.lock().entry(name).or_insert_with(|| Arc::from(name)).clone()
    }
}

/// Per-actor routing state.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Commands sent to the actor and not yet taken by it.
    pub(crate) queued: AtomicUsize,
    /// Distinguishes this actor from a later one for the same id.
    pub(crate) generation: u64,
}

struct Entry<A: Aggregate> {
    addr: Addr<AggregateActor<A>>,
    slot: Arc<Slot>,
}

/// The routing table and actor factory of one aggregate type.
pub(crate) struct Host<A: Aggregate> {
    shards: Box<[Mutex<LruCache<Arc<str>, Entry<A>>>]>,
    shard_capacity: usize,
    hasher: std::collections::hash_map::RandomState,
    arbiters: Arc<[ArbiterHandle]>,
    next_arbiter: AtomicUsize,
    generation: AtomicU64,
    pub(crate) shared: TypeShared,
    type_name: Arc<str>,
}

/// A routed actor and its slot.
pub(crate) struct Route<A: Aggregate> {
    pub(crate) addr: Addr<AggregateActor<A>>,
    pub(crate) slot: Arc<Slot>,
}

impl<A: Aggregate> Host<A> {
    pub(crate) fn new(
        shards: NonZeroUsize,
        live_actors_max: NonZeroUsize,
        arbiters: Arc<[ArbiterHandle]>,
        shared: TypeShared,
    ) -> Host<A> {
        let shard_capacity = live_actors_max.get().div_ceil(shards.get()).max(1);
        Host {
            shards: (0..shards.get()).map(|_| Mutex::new(LruCache::unbounded())).collect(),
            shard_capacity,
            hasher: std::collections::hash_map::RandomState::new(),
            arbiters,
            next_arbiter: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            shared,
            type_name: Arc::from(A::TYPE),
        }
    }

    fn shard(&self, id: &str) -> &Mutex<LruCache<Arc<str>, Entry<A>>> {
        let mut h = self.hasher.build_hasher();
        id.hash(&mut h);
        let n = self.shards.len() as u64;
        // The modulo is below `shards.len()`, a usize, so the cast back cannot truncate.
        let i = usize::try_from(h.finish() % n).unwrap_or(0);
        &self.shards[i]
    }

    /// The live actor for `id`, activating one if needed.
    pub(crate) fn route(self: &Arc<Self>, id: &str) -> Result<Route<A>, crate::types::InvalidId> {
        let shard = self.shard(id);
        let mut live = shard.lock();
        if let Some(entry) = live.get(id) {
            if entry.addr.connected() {
                return Ok(Route { addr: entry.addr.clone(), slot: entry.slot.clone() });
            }
            live.pop(id);
        }
        let stream = StreamId::new(self.type_name.clone(), id)?;
        let id: Arc<str> = Arc::from(id);
        if live.len() >= self.shard_capacity {
            if let Some((_, evicted)) = live.pop_lru() {
                self.shared.counters.evictions.fetch_add(1, Ordering::Relaxed);
                // One message per evicted actor: bounded by the number of actors, so `do_send`
                // (which ignores the mailbox capacity) cannot grow a queue without limit here.
                evicted.addr.do_send(Passivate);
            }
        }
        let slot = Arc::new(Slot {
            queued: AtomicUsize::new(0),
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
        });
        let arbiter = &self.arbiters[self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len()];
        let host = self.clone();
        let actor_slot = slot.clone();
        let mailbox = self.shared.limits.mailbox_capacity;
        let addr = AggregateActor::start_in_arbiter(arbiter, move |ctx| {
            ctx.set_mailbox_capacity(mailbox);
            AggregateActor::new(stream, host, actor_slot)
        });
        self.shared.counters.activations.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.live.fetch_add(1, Ordering::Relaxed);
        live.put(id, Entry { addr: addr.clone(), slot: slot.clone() });
        Ok(Route { addr, slot })
    }

    /// Removes `id` from the table if it still maps to the actor owning `slot`.
    pub(crate) fn forget(&self, id: &str, slot: &Arc<Slot>) {
        let mut live = self.shard(id).lock();
        if live.peek(id).is_some_and(|e| e.slot.generation == slot.generation) {
            live.pop(id);
        }
    }

    /// Empties the table, telling every actor to stop after its queued commands.
    pub(crate) fn passivate_all(&self) {
        for shard in self.shards.iter() {
            let mut live = shard.lock();
            while let Some((_, entry)) = live.pop_lru() {
                entry.addr.do_send(Passivate);
            }
        }
    }
}
