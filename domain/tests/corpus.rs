//! The old-events corpus: one event of every type of the domain at every schema version it was
//! ever written with, kept as the exact CBOR payload a build of that time stored, with the
//! current events each must become. Stored events are never rewritten, so every one of these
//! must decode and upcast for as long as the domain exists.
//!
//! `tests/corpus/manifest.json` lists the files (`{aggregate}/{event_type}.v{version}.cbor`),
//! the build that wrote each, and the expected current events as JSON (the HTTP API's shape).
//! The tests here check that
//! - every file upcasts, as a recorded event, to exactly its expected current events, and the
//!   files at the current version are byte for byte what this build writes (a change of an
//!   event's shape without a new schema version fails here);
//! - the corpus has every event type at every version from 1 to the current one;
//! - the files appended through the store's raw API are read back by every read path (history,
//!   state), and an order created before currencies existed goes through the saga;
//! - an event from a newer build is a typed error, not a misread.
//!
//! `generate_corpus` (ignored) is the generator; `tests/corpus/README.md` says when and how to
//! run it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annals::codec::{self, CodecError};
use annals::envelope::EncodedPayload;
use annals::{
    Aggregate, CommitMeta, DomainEvent, Envelope, Position, RecordedEvent, Runtime, StreamId,
    Timestamp, Version,
};
use annals_domain::customer::{Customer, CustomerCommand, CustomerEvent};
use annals_domain::order::{Order, OrderCommand, OrderEvent, OrderStatus};
use annals_domain::{views, DomainOptions};
use common::{append_raw, corpus_bytes, corpus_dir, execute, pending, Harness, LogModel};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The manifest's file name in the corpus directory.
const MANIFEST: &str = "manifest.json";

/// The event types of the Customer aggregate. Keep in step with [`CustomerEvent`]:
/// [`listed_customer_event`] stops compiling when a variant is added.
const CUSTOMER_EVENT_TYPES: [&str; 4] = [
    "CustomerCreated",
    "CreditReserved",
    "CreditLimitExceeded",
    "CreditReleased",
];

/// The event types of the Order aggregate (see [`listed_order_event`]).
const ORDER_EVENT_TYPES: [&str; 5] = [
    "OrderCreated",
    "OrderApproved",
    "OrderRejected",
    "OrderShipped",
    "OrderCancelled",
];

/// Exhaustive on purpose, with no wildcard: a new variant of [`CustomerEvent`] fails to
/// compile here — add its name to [`CUSTOMER_EVENT_TYPES`] and run the generator.
fn listed_customer_event(event: &CustomerEvent) -> bool {
    match event {
        CustomerEvent::CustomerCreated { .. }
        | CustomerEvent::CreditReserved { .. }
        | CustomerEvent::CreditLimitExceeded { .. }
        | CustomerEvent::CreditReleased { .. } => {
            CUSTOMER_EVENT_TYPES.contains(&event.event_type())
        }
    }
}

/// Exhaustive on purpose: a new variant of [`OrderEvent`] fails to compile here — add its
/// name to [`ORDER_EVENT_TYPES`] and run the generator.
fn listed_order_event(event: &OrderEvent) -> bool {
    match event {
        OrderEvent::OrderCreated { .. }
        | OrderEvent::OrderApproved
        | OrderEvent::OrderRejected { .. }
        | OrderEvent::OrderShipped
        | OrderEvent::OrderCancelled => ORDER_EVENT_TYPES.contains(&event.event_type()),
    }
}

/// `tests/corpus/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    /// What the corpus is, for people who open the file.
    about: Vec<String>,
    /// One entry per file, in file name order.
    events: Vec<Entry>,
}

/// One stored event of the corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// The payload file, relative to the corpus directory.
    file: String,
    /// The aggregate type of the stream it was stored in.
    aggregate: String,
    /// The event type its envelope names.
    event_type: String,
    /// The schema version its envelope names.
    schema_version: u16,
    /// The build that wrote it.
    written_by: String,
    /// The current events it must upcast to, as JSON, in order (an old event can become
    /// several, or none). Written by the generator for a new file; edited by hand, and
    /// reviewed, when a later schema change alters what an old event becomes.
    expected: Vec<serde_json::Value>,
}

/// The file of an event type at a schema version.
fn file_name(aggregate: &str, event_type: &str, schema_version: u16) -> String {
    format!("{aggregate}/{event_type}.v{schema_version}.cbor")
}

impl Manifest {
    fn load(dir: &Path) -> Manifest {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn save(&self, dir: &Path) {
        let mut text = serde_json::to_string_pretty(self).expect("the manifest serializes");
        text.push('\n');
        std::fs::write(dir.join(MANIFEST), text).expect("writes the manifest");
    }

    fn entry(&self, event_type: &str, schema_version: u16) -> &Entry {
        self.events
            .iter()
            .find(|e| e.event_type == event_type && e.schema_version == schema_version)
            .unwrap_or_else(|| panic!("no {event_type} version {schema_version} in the corpus"))
    }
}

/// When the hand-built envelopes were recorded (any instant will do).
const T0: Timestamp = Timestamp(1_700_000_000_000_000);

/// `entry`'s payload in an envelope, as a subscriber or a replay receives it from the store.
fn recorded(entry: &Entry, bytes: Vec<u8>) -> RecordedEvent {
    Envelope {
        event_id: uuid::Uuid::from_u128(42),
        stream: StreamId::new(entry.aggregate.as_str(), "corpus").expect("a valid stream id"),
        version: Version(3),
        position: Position(7),
        event_type: Arc::from(entry.event_type.as_str()),
        schema_version: entry.schema_version,
        meta: Arc::new(CommitMeta {
            recorded_at: T0,
            ..CommitMeta::default()
        }),
        payload: EncodedPayload(bytes),
    }
}

/// `entry`'s expected current events, decoded from the manifest's JSON.
fn expected<A: Aggregate>(entry: &Entry) -> Vec<A::Event> {
    entry
        .expected
        .iter()
        .map(|value| {
            serde_json::from_value(value.clone()).unwrap_or_else(|e| {
                panic!(
                    "{}: the expected event {value} is no current {} event: {e}",
                    entry.file,
                    A::TYPE
                )
            })
        })
        .collect()
}

/// Checks that `entry`'s file upcasts to its expected events, each at its type's current
/// schema version and carrying the stored event's identity.
fn check_upcast<A: Aggregate>(entry: &Entry)
where
    A::Event: PartialEq,
{
    let bytes = corpus_bytes(&entry.file);
    let stored = recorded(entry, bytes.clone());
    let expected = expected::<A>(entry);
    let upcast = stored
        .upcast::<A>()
        .unwrap_or_else(|e| panic!("{}: {e}", entry.file));
    let payloads: Vec<&A::Event> = upcast.iter().map(|e| &e.payload).collect();
    assert_eq!(
        payloads,
        expected.iter().collect::<Vec<_>>(),
        "{}",
        entry.file
    );
    for event in &upcast {
        assert_eq!(
            &*event.event_type,
            event.payload.event_type(),
            "{}",
            entry.file
        );
        assert_eq!(
            event.schema_version,
            A::Event::current_schema_version(&event.event_type),
            "{}: upcast to the current schema",
            entry.file
        );
        assert_eq!(
            (event.event_id, event.version, event.position, &event.meta),
            (
                stored.event_id,
                stored.version,
                stored.position,
                &stored.meta
            ),
            "{}: the stored event's identity is kept",
            entry.file
        );
    }
    if entry.schema_version == A::Event::current_schema_version(&entry.event_type) {
        let [current] = expected.as_slice() else {
            panic!("{}: a current event upcasts to itself", entry.file);
        };
        let written = codec::encode_plain("event", current).expect("encodes");
        assert_eq!(
            written, bytes,
            "{}: this build writes {} version {} differently; a change of shape needs a new \
             schema version (and an upcaster)",
            entry.file, entry.event_type, entry.schema_version
        );
    }
}

#[test]
fn every_corpus_event_upcasts_to_its_expected_current_events() {
    let manifest = Manifest::load(&corpus_dir());
    for entry in &manifest.events {
        match entry.aggregate.as_str() {
            Customer::TYPE => check_upcast::<Customer>(entry),
            Order::TYPE => check_upcast::<Order>(entry),
            other => panic!("{}: unknown aggregate type {other}", entry.file),
        }
    }
}

#[test]
fn the_corpus_has_every_event_type_at_every_schema_version() {
    let dir = corpus_dir();
    let manifest = Manifest::load(&dir);
    let mut wanted = BTreeSet::new();
    for event_type in CUSTOMER_EVENT_TYPES {
        for version in 1..=CustomerEvent::current_schema_version(event_type) {
            wanted.insert(file_name(Customer::TYPE, event_type, version));
        }
    }
    for event_type in ORDER_EVENT_TYPES {
        for version in 1..=OrderEvent::current_schema_version(event_type) {
            wanted.insert(file_name(Order::TYPE, event_type, version));
        }
    }
    let listed: BTreeSet<String> = manifest.events.iter().map(|e| e.file.clone()).collect();
    assert_eq!(listed.len(), manifest.events.len(), "each file listed once");
    assert_eq!(
        listed, wanted,
        "the corpus lists every type at every version"
    );
    for entry in &manifest.events {
        assert_eq!(
            entry.file,
            file_name(&entry.aggregate, &entry.event_type, entry.schema_version)
        );
    }
    let mut on_disk = BTreeSet::new();
    for aggregate in [Customer::TYPE, Order::TYPE] {
        for file in std::fs::read_dir(dir.join(aggregate)).expect("reads the corpus") {
            let name = file.expect("reads the corpus").file_name();
            on_disk.insert(format!("{aggregate}/{}", name.to_string_lossy()));
        }
    }
    assert_eq!(on_disk, listed, "every file on disk is in the manifest");
}

/// The generator's history records every listed event type, and nothing unlisted: with the
/// exhaustive matches above, the corpus cannot miss a type.
#[test]
fn the_generator_records_every_event_type() {
    let harness = Harness::empty();
    let runtime = &harness.runtime;
    runtime.register::<Customer>().expect("registers");
    runtime.register::<Order>().expect("registers");
    sample_history(runtime);
    let mut seen = BTreeSet::new();
    for stored in harness.log() {
        let listed = match stored.stream.aggregate_type() {
            Customer::TYPE => stored
                .upcast::<Customer>()
                .expect("decodes")
                .iter()
                .all(|e| listed_customer_event(&e.payload)),
            _ => stored
                .upcast::<Order>()
                .expect("decodes")
                .iter()
                .all(|e| listed_order_event(&e.payload)),
        };
        assert!(listed, "{} is listed", stored.event_type);
        seen.insert(stored.event_type.to_string());
    }
    let listed: BTreeSet<String> = CUSTOMER_EVENT_TYPES
        .iter()
        .chain(&ORDER_EVENT_TYPES)
        .map(|t| (*t).to_string())
        .collect();
    assert_eq!(seen, listed);
    harness.shutdown();
}

#[test]
fn corpus_events_appended_through_the_store_are_read_back_on_every_path() {
    let harness = Harness::empty();
    let runtime = &harness.runtime;
    runtime.register::<Customer>().expect("registers");
    runtime.register::<Order>().expect("registers");
    let manifest = Manifest::load(&corpus_dir());
    for (i, entry) in manifest.events.iter().enumerate() {
        let id = format!("corpus-{i}");
        let stream =
            StreamId::new(entry.aggregate.as_str(), id.as_str()).expect("a valid stream id");
        let stored = pending(
            &entry.event_type,
            entry.schema_version,
            corpus_bytes(&entry.file),
        );
        append_raw(runtime, stream, Version(0), vec![stored], T0);
        match entry.aggregate.as_str() {
            Customer::TYPE => read_back::<Customer>(runtime, &id, entry),
            Order::TYPE => read_back::<Order>(runtime, &id, entry),
            other => panic!("{}: unknown aggregate type {other}", entry.file),
        }
    }
    // The global log, as subscribers read it.
    let log = harness.log();
    assert_eq!(log.len(), manifest.events.len());
    for (stored, entry) in log.iter().zip(&manifest.events) {
        let count = match entry.aggregate.as_str() {
            Customer::TYPE => stored.upcast::<Customer>().map(|e| e.len()),
            _ => stored.upcast::<Order>().map(|e| e.len()),
        };
        assert_eq!(
            count.expect("upcasts"),
            entry.expected.len(),
            "{}",
            entry.file
        );
    }
    harness.shutdown();
}

/// Reads stream `id`, holding `entry`'s event alone, through the history and state APIs.
fn read_back<A>(runtime: &Runtime, id: &str, entry: &Entry)
where
    A: Aggregate + PartialEq + std::fmt::Debug,
    A::Event: PartialEq,
{
    let expected = expected::<A>(entry);
    let history: Vec<A::Event> = runtime
        .events::<A>(id, Version(1), 10)
        .unwrap_or_else(|e| panic!("{}: {e}", entry.file))
        .into_iter()
        .map(|e| e.payload)
        .collect();
    assert_eq!(history, expected, "{}: history", entry.file);
    let mut folded = A::default();
    for event in &expected {
        folded.apply(event);
    }
    let state = runtime
        .state::<A>(id)
        .unwrap_or_else(|e| panic!("{}: {e}", entry.file))
        .expect("one event stored");
    assert_eq!(
        (state.version, state.state),
        (Version(1), folded),
        "{}: state",
        entry.file
    );
}

/// An `OrderCreated` of version 1 (no currency) stored before the change: the saga reads it
/// through the upcaster, reserves the credit and approves the order, in euros; an order
/// created now in another currency keeps it; the read models match the log.
#[test]
fn an_order_created_before_currencies_goes_through_the_saga_in_euros() {
    let harness = Harness::with_domain(&DomainOptions::default());
    let runtime = &harness.runtime;
    let manifest = Manifest::load(&corpus_dir());
    let entry = manifest.entry("OrderCreated", 1);
    let created = expected::<Order>(entry);
    let [OrderEvent::OrderCreated {
        customer_id, total, ..
    }] = created.as_slice()
    else {
        panic!("{}: an OrderCreated", entry.file);
    };
    let (customer_id, total) = (customer_id.clone(), *total);
    let create = CustomerCommand::CreateCustomer {
        name: "Ada".into(),
        credit_limit: 3 * total,
    };
    execute::<Customer>(runtime, &customer_id, create);
    let stored = pending("OrderCreated", 1, corpus_bytes(&entry.file));
    let stream = StreamId::new(Order::TYPE, "o-old").expect("a valid stream id");
    append_raw(runtime, stream, Version(0), vec![stored], Timestamp::now());
    let create = OrderCommand::CreateOrder {
        customer_id: customer_id.clone(),
        total,
        currency: Some("USD".into()),
    };
    execute::<Order>(runtime, "o-new", create);
    harness.settle();

    for (id, currency) in [("o-old", "EUR"), ("o-new", "USD")] {
        let order = harness.order(id);
        assert_eq!(order.status, Some(OrderStatus::Approved), "{id}");
        assert_eq!(
            (
                order.customer_id.as_str(),
                order.total,
                order.currency.as_str()
            ),
            (customer_id.as_str(), total, currency),
            "{id}"
        );
    }
    let history = runtime
        .events::<Order>("o-old", Version(1), 10)
        .expect("reads");
    assert_eq!(
        (&*history[0].event_type, history[0].schema_version),
        ("OrderCreated", 2)
    );
    let summary = views::customer_summary(runtime, &customer_id)
        .expect("reads")
        .expect("created");
    assert_eq!(
        (summary.orders.approved, summary.available_credit),
        (2, total)
    );
    common::check_read_models(&harness, &LogModel::from_log(&harness.log()), 1);
    harness.shutdown();
}

/// A database written by a newer build is read by an older one after a rollback: an event at
/// a schema version this build does not know must fail loudly, not decode as something else.
#[test]
fn an_event_of_a_newer_schema_version_is_a_typed_error() {
    let manifest = Manifest::load(&corpus_dir());
    let current = OrderEvent::current_schema_version("OrderCreated");
    let entry = manifest.entry("OrderCreated", current);
    let mut newer = recorded(entry, corpus_bytes(&entry.file));
    newer.schema_version = current + 1;
    let error = newer.upcast::<Order>().expect_err("no upcaster");
    assert!(matches!(error, CodecError::Decode { .. }), "{error:?}");
    let reason = format!(
        "no upcaster for OrderCreated schema version {}",
        current + 1
    );
    assert!(error.to_string().contains(&reason), "{error}");
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

/// What the manifest says about itself.
const ABOUT: [&str; 4] = [
    "Stored events of every type and schema version, as the build named in written_by wrote them.",
    "Never edit or delete a .cbor file: stored events are never rewritten.",
    "`expected` is what the event must upcast to now; edit it by hand when a schema change alters that.",
    "Add files with: cargo test -p annals-domain --test corpus -- --ignored generate_corpus",
];

/// The generator: records one event of every type through the runtime's own write path (a
/// fixed history of commands, as JSON like the HTTP API receives them) and, for every event
/// type and schema version the corpus lacks, writes its exact stored payload and a manifest
/// entry expecting the event itself. It never touches an existing file or entry.
///
/// `ANNALS_CORPUS_DIR` writes elsewhere (to compare), `ANNALS_CORPUS_WRITTEN_BY` names the
/// build in the new entries (default: the package version).
#[test]
#[ignore = "writes tests/corpus: run by hand after a schema change (see tests/corpus/README.md)"]
fn generate_corpus() {
    let dir = std::env::var_os("ANNALS_CORPUS_DIR").map_or_else(corpus_dir, PathBuf::from);
    let written_by = std::env::var("ANNALS_CORPUS_WRITTEN_BY")
        .unwrap_or_else(|_| format!("annals-domain {}", env!("CARGO_PKG_VERSION")));
    let harness = Harness::empty();
    let runtime = &harness.runtime;
    // No saga or projections: the commands below are the whole history.
    runtime.register::<Customer>().expect("registers");
    runtime.register::<Order>().expect("registers");
    sample_history(runtime);

    let mut manifest = if dir.join(MANIFEST).exists() {
        Manifest::load(&dir)
    } else {
        Manifest {
            about: ABOUT.iter().map(|s| (*s).to_string()).collect(),
            events: Vec::new(),
        }
    };
    for stored in harness.log() {
        let aggregate = stored.stream.aggregate_type();
        let file = file_name(aggregate, &stored.event_type, stored.schema_version);
        if manifest.events.iter().any(|e| e.file == file) {
            continue;
        }
        let path = dir.join(&file);
        assert!(
            !path.exists(),
            "{} exists but is not in the manifest",
            path.display()
        );
        let expected = match aggregate {
            Customer::TYPE => as_json::<Customer>(&stored),
            Order::TYPE => as_json::<Order>(&stored),
            other => panic!("unexpected aggregate type {other}"),
        };
        std::fs::create_dir_all(path.parent().expect("in a directory")).expect("creates");
        std::fs::write(&path, &stored.payload.0).expect("writes the payload");
        println!("wrote {}", path.display());
        manifest.events.push(Entry {
            file,
            aggregate: aggregate.to_string(),
            event_type: stored.event_type.to_string(),
            schema_version: stored.schema_version,
            written_by: written_by.clone(),
            expected,
        });
    }
    manifest.events.sort_by(|a, b| a.file.cmp(&b.file));
    manifest.save(&dir);
    harness.shutdown();
}

/// A stored event as its current events, in JSON.
fn as_json<A: Aggregate>(stored: &RecordedEvent) -> Vec<serde_json::Value> {
    stored
        .upcast::<A>()
        .expect("this build reads what it wrote")
        .iter()
        .map(|e| serde_json::to_value(&e.payload).expect("serializes"))
        .collect()
}

/// A history that records every event type of both aggregates, with values that exercise the
/// encoding: a non-ASCII name, amounts beyond 32 bits, a currency other than the default.
fn sample_history(runtime: &Runtime) {
    let customer = |command: serde_json::Value| {
        let command: CustomerCommand = serde_json::from_value(command).expect("a command");
        execute::<Customer>(runtime, "c-ada", command);
    };
    let order = |id: &str, command: serde_json::Value| {
        let command: OrderCommand = serde_json::from_value(command).expect("a command");
        execute::<Order>(runtime, id, command);
    };
    let create = |total: u64, currency: &str| json!({"type": "CreateOrder", "customer_id": "c-ada", "total": total, "currency": currency});
    let reserve = |order_id: &str, amount: u64| json!({"type": "ReserveCredit", "order_id": order_id, "amount": amount});
    customer(json!({
        "type": "CreateCustomer",
        "name": "Ada Lovelace-Zoë",
        "credit_limit": 5_000_000_000u64
    }));
    order("o-1", create(4_000, "CHF"));
    customer(reserve("o-1", 4_000));
    order("o-1", json!({"type": "ApproveOrder"}));
    order("o-1", json!({"type": "ShipOrder"}));
    order("o-2", create(6_000_000_000, "EUR"));
    customer(reserve("o-2", 6_000_000_000));
    order(
        "o-2",
        json!({"type": "RejectOrder", "reason": "credit limit exceeded"}),
    );
    order("o-3", create(250, "EUR"));
    customer(reserve("o-3", 250));
    order("o-3", json!({"type": "CancelOrder"}));
    customer(json!({"type": "ReleaseCredit", "order_id": "o-3"}));
}
