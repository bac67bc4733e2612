//! Snapshots and temporal queries on the domain's aggregates.
//!
//! - A snapshot written with another state schema version is ignored: the aggregate replays
//!   fully, with no error, whether the old snapshot would decode or not. (The Order state
//!   gained a currency with `OrderCreated` version 2, so its snapshots moved to schema
//!   version 2.)
//! - `Runtime::state_at` every version and `Runtime::state_as_of` every event's instant equal
//!   the fold of the events up to there, with snapshots every few events present — so a query
//!   answered from a later snapshot would show.

mod common;

use std::fmt::Debug;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use annals::store::Snapshot;
use annals::{Aggregate, AggregateState, Runtime, StreamId, Timestamp, Version};
use annals_domain::customer::{Customer, CustomerCommand};
use annals_domain::order::{
    Order, OrderCommand, OrderRejection, OrderStatus, ORDER_SNAPSHOT_SCHEMA_VERSION,
};
use common::{append_raw, approve, corpus_bytes, execute, pending, Harness, POLL};
use futures::executor::block_on;
use serde::Serialize;

/// Most events any stream here holds.
const STREAM_EVENTS_MAX: usize = 1_000;
/// The longest a test waits for a snapshot, which the actor saves after replying.
const SNAPSHOT_WAIT_MAX: Duration = Duration::from_secs(10);

fn every(n: u64) -> Option<NonZeroU64> {
    NonZeroU64::new(n)
}

fn stream<A: Aggregate>(id: &str) -> StreamId {
    StreamId::new(A::TYPE, id).expect("a valid stream id")
}

/// Waits until `id` has a snapshot at `version` or later; returns the latest.
fn wait_for_snapshot<A: Aggregate>(runtime: &Runtime, id: &str, version: Version) -> Snapshot {
    let started = Instant::now();
    loop {
        let latest = runtime
            .store()
            .load_snapshot(&stream::<A>(id), Version(u64::MAX))
            .expect("reads snapshots");
        match latest {
            Some(snapshot) if snapshot.version >= version => return snapshot,
            _ => {
                assert!(
                    started.elapsed() < SNAPSHOT_WAIT_MAX,
                    "no snapshot of {id} at {version} after {SNAPSHOT_WAIT_MAX:?}: {latest:?}"
                );
                std::thread::sleep(POLL);
            }
        }
    }
}

/// The state of `id`, which must exist.
fn state<A: Aggregate>(runtime: &Runtime, id: &str) -> AggregateState<A> {
    runtime
        .state::<A>(id)
        .expect("reads the state")
        .unwrap_or_else(|| panic!("{id} exists"))
}

/// The state of `id` as the fold of its whole history, without snapshots.
fn fold<A: Aggregate>(runtime: &Runtime, id: &str) -> AggregateState<A> {
    let history = runtime
        .events::<A>(id, Version(1), STREAM_EVENTS_MAX)
        .expect("reads the history");
    let mut state = A::default();
    for event in &history {
        state.apply(&event.payload);
    }
    let version = history.last().map_or(Version(0), |e| e.version);
    AggregateState { version, state }
}

/// An order shipped in dollars: three events.
fn ship_an_order(runtime: &Runtime, id: &str) {
    let create = OrderCommand::CreateOrder {
        customer_id: "c-1".into(),
        total: 4_200,
        currency: Some("USD".into()),
    };
    execute::<Order>(runtime, id, create);
    execute::<Order>(runtime, id, approve("c-1", 4_200));
    execute::<Order>(runtime, id, OrderCommand::ShipOrder);
}

/// The brief's case: orders snapshotted by a build whose state schema was version 1, reopened
/// by this one (version 2): the same state, no error, and new snapshots at version 2.
#[test]
fn snapshots_of_the_previous_state_schema_are_ignored_after_an_upgrade() {
    let harness = Harness::empty();
    let old_options = Order::options()
        .with_snapshot_schema_version(1)
        .with_snapshot_every(every(1));
    harness
        .runtime
        .register_with::<Order>(old_options)
        .expect("registers");
    ship_an_order(&harness.runtime, "o-1");
    let snapshot = wait_for_snapshot::<Order>(&harness.runtime, "o-1", Version(3));
    assert_eq!(snapshot.schema_version, 1);
    let before = state::<Order>(&harness.runtime, "o-1");

    let harness = Harness::open(harness.close());
    let runtime = &harness.runtime;
    let new_options = Order::options().with_snapshot_every(every(1));
    assert_eq!(new_options.snapshot_schema_version, 2);
    runtime
        .register_with::<Order>(new_options)
        .expect("registers");
    let after = state::<Order>(runtime, "o-1");
    assert_eq!(after, before);
    assert_eq!(after, fold::<Order>(runtime, "o-1"));
    for version in 1..=3 {
        let at = runtime
            .state_at::<Order>("o-1", Some(Version(version)))
            .expect("reads")
            .expect("exists");
        assert_eq!(at.version, Version(version));
    }
    // The actor rehydrates by replay too, and decides on the right state.
    let refused = block_on(runtime.execute::<Order>("o-1", OrderCommand::CancelOrder))
        .expect("no technical failure");
    assert_eq!(
        refused.map(|_| ()),
        Err(OrderRejection::NotCancellable {
            status: OrderStatus::Shipped
        })
    );
    // New snapshots are written at the current schema version.
    ship_an_order(runtime, "o-2");
    let snapshot = wait_for_snapshot::<Order>(runtime, "o-2", Version(3));
    assert_eq!(snapshot.schema_version, ORDER_SNAPSHOT_SCHEMA_VERSION);
    harness.shutdown();
}

/// The Order state as schema version 1 serialized it (no currency).
#[derive(Serialize)]
struct OrderStateV1 {
    status: Option<OrderStatus>,
    customer_id: String,
    total: u64,
}

/// A snapshot of another schema version is skipped *because of its version*: even one that
/// decodes into a plausible (wrong) state is not read, while the same state at the current
/// version is (the control that shows snapshots are read at all).
#[test]
fn a_snapshot_of_another_schema_version_is_never_read() {
    let harness = Harness::empty();
    let runtime = &harness.runtime;
    // No snapshots but the ones written by hand below.
    let options = Order::options().with_snapshot_every(None);
    runtime.register_with::<Order>(options).expect("registers");
    ship_an_order(runtime, "o-1");
    let replayed = fold::<Order>(runtime, "o-1");
    assert_eq!(state::<Order>(runtime, "o-1"), replayed);

    let wrong = Order {
        status: Some(OrderStatus::Cancelled),
        total: 1,
        ..replayed.state.clone()
    };
    let old_shape = OrderStateV1 {
        status: Some(OrderStatus::Pending),
        customer_id: "c-9".into(),
        total: 1,
    };
    let snapshot = |schema_version: u32, state: Vec<u8>| Snapshot {
        version: Version(3),
        schema_version,
        taken_at: Timestamp::now(),
        state,
    };
    for stale in [
        snapshot(1, encode(&wrong)),
        snapshot(1, encode(&old_shape)),
        snapshot(ORDER_SNAPSHOT_SCHEMA_VERSION + 1, encode(&wrong)),
    ] {
        let schema_version = stale.schema_version;
        runtime
            .store()
            .save_snapshot(&stream::<Order>("o-1"), &stale)
            .expect("saves");
        assert_eq!(
            state::<Order>(runtime, "o-1"),
            replayed,
            "schema {schema_version}"
        );
        let at = runtime
            .state_at::<Order>("o-1", Some(Version(3)))
            .expect("reads")
            .expect("exists");
        assert_eq!(at, replayed, "schema {schema_version}");
    }
    // The control: the same wrong state at the current schema version is read.
    let current = snapshot(ORDER_SNAPSHOT_SCHEMA_VERSION, encode(&wrong));
    runtime
        .store()
        .save_snapshot(&stream::<Order>("o-1"), &current)
        .expect("saves");
    assert_eq!(state::<Order>(runtime, "o-1").state, wrong);
    harness.shutdown();
}

/// `state` encoded as the runtime encodes snapshot states.
fn encode<T: Serialize>(state: &T) -> Vec<u8> {
    annals::codec::encode_plain("snapshot", state).expect("encodes")
}

/// Checks `state_at` every version (and beyond the head) and `state_as_of` every event's
/// instant (and just before it) against the fold of the events up to there. Returns the
/// number of events.
fn check_temporal<A>(runtime: &Runtime, id: &str) -> usize
where
    A: Aggregate + Clone + PartialEq + Debug,
{
    let history = runtime
        .events::<A>(id, Version(1), STREAM_EVENTS_MAX)
        .expect("reads the history");
    // folded[v]: the state after version v.
    let mut folded = vec![A::default()];
    for (i, event) in history.iter().enumerate() {
        let version = u64::try_from(i + 1).expect("fits");
        assert_eq!(
            event.version,
            Version(version),
            "one event per version here"
        );
        let mut next = folded[i].clone();
        next.apply(&event.payload);
        folded.push(next);
    }
    let expect = |version: Version| AggregateState {
        version,
        state: folded[usize::try_from(version.0).expect("fits")].clone(),
    };
    let head = Version(u64::try_from(history.len()).expect("fits"));
    for version in 1..=head.0 {
        let at = runtime
            .state_at::<A>(id, Some(Version(version)))
            .expect("reads")
            .expect("exists");
        assert_eq!(at, expect(Version(version)), "{id} at version {version}");
    }
    let beyond = runtime
        .state_at::<A>(id, Some(Version(head.0 + 10)))
        .expect("reads");
    assert_eq!(beyond, Some(expect(head)), "{id} beyond its head");

    // Several events can share an instant (one command's events, or a coarse clock): as of an
    // instant is as of the last event recorded at or before it.
    let last_at_or_before = |at: Timestamp| {
        history
            .iter()
            .filter(|e| e.meta.recorded_at <= at)
            .map(|e| e.version)
            .max()
    };
    for event in &history {
        let at = event.meta.recorded_at;
        for instant in [at, Timestamp(at.0 - 1)] {
            let as_of = runtime.state_as_of::<A>(id, instant).expect("reads");
            assert_eq!(
                as_of,
                last_at_or_before(instant).map(expect),
                "{id} as of {instant:?}"
            );
        }
    }
    assert_eq!(
        runtime
            .state_as_of::<A>(id, Timestamp(u64::MAX))
            .expect("reads"),
        Some(expect(head))
    );
    history.len()
}

/// How many distinct snapshots of `id` exist at or below its head.
fn snapshots<A: Aggregate>(runtime: &Runtime, id: &str, head: usize) -> usize {
    let mut versions = std::collections::BTreeSet::new();
    for version in 1..=u64::try_from(head).expect("fits") {
        if let Some(snapshot) = runtime
            .store()
            .load_snapshot(&stream::<A>(id), Version(version))
            .expect("reads")
        {
            assert!(snapshot.version <= Version(version));
            versions.insert(snapshot.version);
        }
    }
    versions.len()
}

/// A customer with 51 events, snapshotted every 3 events, and orders through each of their
/// lives (an order has at most three events) snapshotted after every event — one of them
/// created by an older build (`OrderCreated` version 1, upcast on every read).
#[test]
fn state_at_and_as_of_equal_the_fold_of_the_events_with_snapshots_present() {
    const RESERVATIONS: usize = 20;
    let harness = Harness::empty();
    let runtime = &harness.runtime;
    let customer_options = Customer::options().with_snapshot_every(every(3));
    runtime
        .register_with::<Customer>(customer_options)
        .expect("registers");
    let order_options = Order::options().with_snapshot_every(every(1));
    runtime
        .register_with::<Order>(order_options)
        .expect("registers");

    // The customer: reservations that fit, one that does not, releases of every other one.
    let create = CustomerCommand::CreateCustomer {
        name: "Ada".into(),
        credit_limit: 100_000,
        currency: None,
    };
    execute::<Customer>(runtime, "c-1", create);
    for i in 0..RESERVATIONS {
        let order_id = format!("o-{i}");
        let amount = 1_000 + 100 * u64::try_from(i).expect("fits");
        let reserve = |order_id: &str, amount| CustomerCommand::ReserveCredit {
            order_id: order_id.to_string(),
            amount,
            currency: None,
        };
        execute::<Customer>(runtime, "c-1", reserve(&order_id, amount));
        // Beyond the limit: `CreditLimitExceeded` (another order: one that holds credit
        // already is not asked again).
        execute::<Customer>(runtime, "c-1", reserve(&format!("x-{i}"), 1_000_000));
        if i % 2 == 0 {
            let release = CustomerCommand::ReleaseCredit {
                order_id: order_id.clone(),
            };
            execute::<Customer>(runtime, "c-1", release);
        }
    }
    let head = 1 + 2 * RESERVATIONS + RESERVATIONS / 2;
    let head_version = Version(u64::try_from(head).expect("fits"));
    wait_for_snapshot::<Customer>(runtime, "c-1", Version(head_version.0 - 2));
    assert!(snapshots::<Customer>(runtime, "c-1", head) >= head / 3);
    assert_eq!(check_temporal::<Customer>(runtime, "c-1"), head);

    // Orders through every life, and one created by an older build.
    let create = |total| OrderCommand::CreateOrder {
        customer_id: "c-1".into(),
        total,
        currency: Some("SEK".into()),
    };
    let lives: [&[OrderCommand]; 4] = [
        &[approve("c-1", 100), OrderCommand::ShipOrder],
        &[approve("c-1", 100), OrderCommand::CancelOrder],
        &[OrderCommand::RejectOrder {
            reason: "no".into(),
        }],
        &[OrderCommand::CancelOrder],
    ];
    for (i, life) in lives.iter().enumerate() {
        let id = format!("o-{i}");
        execute::<Order>(runtime, &id, create(100));
        for command in *life {
            execute::<Order>(runtime, &id, command.clone());
        }
    }
    let old = pending(
        "OrderCreated",
        1,
        corpus_bytes("Order/OrderCreated.v1.cbor"),
    );
    append_raw(
        runtime,
        stream::<Order>("o-old"),
        Version(0),
        vec![old],
        Timestamp::now(),
    );
    // The corpus's version 1 order: customer c-ada, 4,000.
    execute::<Order>(runtime, "o-old", approve("c-ada", 4_000));
    execute::<Order>(runtime, "o-old", OrderCommand::ShipOrder);
    assert_eq!(state::<Order>(runtime, "o-old").state.currency, "EUR");

    let ids = (0..lives.len())
        .map(|i| format!("o-{i}"))
        .chain(["o-old".to_string()]);
    for id in ids {
        let head = fold::<Order>(runtime, &id).version;
        wait_for_snapshot::<Order>(runtime, &id, head);
        let events = check_temporal::<Order>(runtime, &id);
        // A snapshot after every event the runtime decided (not the one appended by hand).
        let decided = if id == "o-old" { events - 1 } else { events };
        assert_eq!(snapshots::<Order>(runtime, &id, events), decided, "{id}");
    }
    harness.shutdown();
}
