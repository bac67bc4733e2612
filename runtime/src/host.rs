//! The routing table of one aggregate type: aggregate id → live actor, sharded.
//!
//! Routing is on the path of every command, so it is not an actor (a single mailbox would
//! serialize all commands of the type). It is `shards` independent mutex-protected LRU maps,
//! chosen by a hash of the id; a lookup holds one shard's lock for a hash-map probe.
//!
//! **Live-actor cap**: the cap is split over the shards (never more shards than the cap), their
//! caps adding up to `live_actors_max` exactly. Adding an actor to a full shard evicts the
//! shard's least recently used actor: it is removed from the map and
//! sent [`Passivate`], which it handles after the commands already in its mailbox.
//!
//! **Mailbox bound**: actix's `try_send` lets every distinct sender put one message beyond the
//! mailbox capacity, so the bound is enforced here instead, with a per-actor counter of queued
//! commands ([`Slot::queued`](crate::shared::Slot)); a command beyond `mailbox_capacity` is refused as
//! [`Overload::Mailbox`](crate::Overload::Mailbox).
//!
//! Actors are spread round-robin over the runtime's arbiters (one thread each, one per core),
//! or, with [`Placement::Caller`], started on the arbiter of the caller that activates them.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::{Actor, Addr};
use actix_rt::ArbiterHandle;
use lru::LruCache;
use parking_lot::Mutex;

use crate::actor::{AggregateActor, Passivate};
use crate::aggregate::Aggregate;
use crate::shared::{Routing, Slot, TypeShared};
use crate::types::StreamId;

/// Which thread a newly activated aggregate actor runs on.
///
/// A command reaches its aggregate's actor through the actor's mailbox: from a caller on
/// another thread, that is a hand-off there and another back with the reply. An actor on the
/// caller's own thread costs neither: about 8% of the CPU time of a command over HTTP
/// (`app/bench/cpu.sh`: 54 → 50 µs per command) and 15% more commands/s in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Placement {
    /// Round-robin over the runtime's own arbiters ([`RuntimeOptions::arbiters`](crate::RuntimeOptions::arbiters)).
    #[default]
    Arbiters,
    /// On the thread of the caller that activates it, when that caller runs on an actix
    /// arbiter (an actix-web worker, an actor); round-robin over the runtime's arbiters
    /// otherwise. The actor stays there until it is passivated: later commands from other
    /// threads reach it with a hand-off as usual. Its rehydration runs on that arbiter's
    /// blocking pool, not on the caller's thread; what an actor reads from the store while it
    /// handles a command (the outcome of an `Idempotency-Key`, a snapshot it saves, the events
    /// it missed when its append found the stream moved on) stays on the thread, so this suits
    /// stores whose reads are local (the embedded sled store), not one across a network
    /// (PostgreSQL), where that read would hold up the caller's thread.
    ///
    /// Before the caller's threads stop (an HTTP server shutting down), call
    /// [`Runtime::release_callers`](crate::Runtime::release_callers): their actors finish
    /// what they have queued and move to the runtime's arbiters. And never wait for a command
    /// by blocking an arbiter thread (`futures::executor::block_on` inside an actix worker):
    /// the actor that would answer may be on that very thread.
    Caller,
}

/// One shard of a routing table.
struct Shard<A: Aggregate> {
    live: LruCache<Arc<str>, Entry<A>>,
    /// Actors that left `live` (evicted or passivated) and have not stopped yet. A new actor for
    /// the same id waits for its predecessor to stop before it rehydrates, so two instances of
    /// one aggregate never decide concurrently (the journal's version check would refuse the
    /// second one's append anyway; waiting avoids the retries). Entries leave when their actor
    /// stops, so this holds at most the actors stopping at a time.
    stopping: std::collections::HashMap<Arc<str>, Arc<Slot>>,
}

struct Entry<A: Aggregate> {
    addr: Addr<AggregateActor<A>>,
    slot: Arc<Slot>,
    /// Started on a caller's thread ([`Placement::Caller`]).
    on_caller: bool,
}

/// The routing table and actor factory of one aggregate type.
pub(crate) struct Host<A: Aggregate> {
    /// Each shard with its own cap; the caps add up to `live_actors_max` exactly.
    shards: Box<[(Mutex<Shard<A>>, usize)]>,
    hasher: std::collections::hash_map::RandomState,
    arbiters: Arc<[ArbiterHandle]>,
    placement: Placement,
    /// Set by [`Host::release_callers`]: from then on, actors start on the runtime's arbiters.
    callers_released: AtomicBool,
    next_arbiter: AtomicUsize,
    generation: AtomicU64,
    pub(crate) shared: Arc<TypeShared>,
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
        placement: Placement,
        shared: TypeShared,
    ) -> Host<A> {
        // Never more shards than actors, so that every shard can hold at least one; the cap is
        // split so that the shards' caps add up to the configured one exactly.
        let max = live_actors_max.get();
        let n = shards.get().min(max);
        let caps = (0..n).map(|i| max / n + usize::from(i < max % n));
        Host {
            shards: caps
                .map(|cap| {
                    let shard = Shard {
                        live: LruCache::unbounded(),
                        stopping: Default::default(),
                    };
                    (Mutex::new(shard), cap)
                })
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            arbiters,
            placement,
            callers_released: AtomicBool::new(false),
            next_arbiter: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            shared: Arc::new(shared),
            type_name: Arc::from(A::TYPE),
        }
    }

    fn shard(&self, id: &str) -> &(Mutex<Shard<A>>, usize) {
        let n = self.shards.len() as u64;
        // The modulo is below `shards.len()`, a usize, so the cast back cannot truncate.
        let i = usize::try_from(self.hasher.hash_one(id) % n).unwrap_or(0);
        &self.shards[i]
    }

    /// The live actor for `id`, activating one if needed.
    pub(crate) fn route(self: &Arc<Self>, id: &str) -> Result<Route<A>, crate::types::InvalidId> {
        let (shard, capacity) = self.shard(id);
        let mut shard = shard.lock();
        if let Some(entry) = shard.live.get(id) {
            if entry.addr.connected() {
                return Ok(Route {
                    addr: entry.addr.clone(),
                    slot: entry.slot.clone(),
                });
            }
            if let Some((id, entry)) = shard.live.pop_entry(id) {
                shard.stopping.insert(id, entry.slot);
            }
        }
        let stream = StreamId::new(self.type_name.clone(), id)?;
        let id: Arc<str> = Arc::from(id);
        if shard.live.len() >= *capacity {
            if let Some((evicted_id, evicted)) = shard.live.pop_lru() {
                self.shared
                    .counters
                    .evictions
                    .fetch_add(1, Ordering::Relaxed);
                // One message per evicted actor: bounded by the number of actors, so `do_send`
                // (which ignores the mailbox capacity) cannot grow a queue without limit here.
                evicted.addr.do_send(Passivate);
                shard.stopping.insert(evicted_id, evicted.slot);
            }
        }
        let predecessor = shard
            .stopping
            .get(&id)
            .filter(|s| !s.has_stopped())
            .cloned();
        let slot = Arc::new(Slot::new(self.generation.fetch_add(1, Ordering::Relaxed)));
        let caller = match self.placement {
            Placement::Caller if !self.callers_released.load(Ordering::Acquire) => {
                actix_rt::Arbiter::try_current()
            }
            _ => None,
        };
        let on_caller = caller.is_some();
        let arbiter = caller.unwrap_or_else(|| {
            let next = self.next_arbiter.fetch_add(1, Ordering::Relaxed);
            self.arbiters[next % self.arbiters.len()].clone()
        });
        let routing: Arc<dyn Routing> = self.clone();
        let shared = self.shared.clone();
        let actor_slot = slot.clone();
        let mailbox = self.shared.limits.mailbox_capacity;
        let addr = AggregateActor::start_in_arbiter(&arbiter, move |ctx| {
            ctx.set_mailbox_capacity(mailbox);
            AggregateActor::new(stream, shared, routing, actor_slot, predecessor, on_caller)
        });
        self.shared
            .counters
            .activations
            .fetch_add(1, Ordering::Relaxed);
        self.shared.counters.live.fetch_add(1, Ordering::Relaxed);
        shard.live.put(
            id,
            Entry {
                addr: addr.clone(),
                slot: slot.clone(),
                on_caller,
            },
        );
        Ok(Route { addr, slot })
    }

    /// Starts every later actor on the runtime's arbiters, and tells each actor running on a
    /// caller's thread to stop after its queued commands; returns their slots, to wait for.
    pub(crate) fn release_callers(&self) -> Vec<Arc<Slot>> {
        self.callers_released.store(true, Ordering::Release);
        let mut released = Vec::new();
        for (shard, _) in self.shards.iter() {
            let mut shard = shard.lock();
            let ids: Vec<Arc<str>> = shard
                .live
                .iter()
                .filter(|(_, entry)| entry.on_caller)
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                if let Some((id, entry)) = shard.live.pop_entry(&id) {
                    entry.addr.do_send(Passivate);
                    released.push(entry.slot.clone());
                    shard.stopping.insert(id, entry.slot);
                }
            }
        }
        released
    }

    /// Empties the table, telling every actor to stop after its queued commands.
    pub(crate) fn passivate_all(&self) {
        for (shard, _) in self.shards.iter() {
            let mut shard = shard.lock();
            while let Some((_, entry)) = shard.live.pop_lru() {
                entry.addr.do_send(Passivate);
            }
        }
    }
}

impl<A: Aggregate> Routing for Host<A> {
    fn forget(&self, id: &str, slot: &Arc<Slot>) {
        let mut shard = self.shard(id).0.lock();
        if shard
            .live
            .peek(id)
            .is_some_and(|e| e.slot.generation == slot.generation)
        {
            if let Some((id, entry)) = shard.live.pop_entry(id) {
                shard.stopping.insert(id, entry.slot);
            }
        }
    }

    fn stopped(&self, id: &str, slot: &Arc<Slot>) {
        slot.mark_stopped();
        let mut shard = self.shard(id).0.lock();
        if shard
            .stopping
            .get(id)
            .is_some_and(|s| s.generation == slot.generation)
        {
            shard.stopping.remove(id);
        }
    }
}
