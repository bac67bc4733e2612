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
//! - an event from a newer build is a typed error, not a misread;
//! - the commands process managers store (outboxes, deadlines) as older builds encoded them
//!   (`tests/corpus/commands/`) decode, re-encode to the same bytes, and an approval stored
//!   before approvals carried a credit reservation is refused, the order then rejected by its
//!   deadline and its credit released.
//!
//! `generate_corpus` (ignored) is the generator; `tests/corpus/README.md` says when and how to
//! run it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::{Duration, Instant};

use annals::codec::{self, CodecError};
use annals::envelope::EncodedPayload;
use annals::testkit::AggregateTest;
use annals::{
    Action, Aggregate, CommitMeta, DomainEvent, Envelope, HandlerError, Position, ProcessManager,
    RecordedEvent, Runtime, StreamId, SubscriberOptions, Timestamp, Version,
};
use annals_domain::customer::{Customer, CustomerCommand, CustomerEvent};
use annals_domain::order::{Order, OrderCommand, OrderEvent, OrderRejection, OrderStatus};
use annals_domain::saga::{self, OrderCreditSaga, OrderCreditState};
use annals_domain::{views, DomainOptions};
use common::{
    append_raw, corpus_bytes, corpus_dir, execute, pending, Harness, LogModel, POLL, SETTLE_MAX,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The manifest's file name in the corpus directory.
const MANIFEST: &str = "manifest.json";

/// The event types of the Customer aggregate. Keep in step with [`CustomerEvent`]:
/// [`listed_customer_event`] stops compiling when a variant is added.
const CUSTOMER_EVENT_TYPES: [&str; 5] = [
    "CustomerCreated",
    "CreditReserved",
    "CreditLimitExceeded",
    "CreditCurrencyMismatch",
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
        | CustomerEvent::CreditCurrencyMismatch { .. }
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
/// through the upcaster, reserves the credit and approves the order, in euros, against a
/// customer created in euros; an order created now in another currency keeps it and is rejected
/// ("currency mismatch") without reserving anything; the read models match the log.
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
        currency: None,
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

    for (id, currency, status) in [
        ("o-old", "EUR", OrderStatus::Approved),
        ("o-new", "USD", OrderStatus::Rejected),
    ] {
        let order = harness.order(id);
        assert_eq!(order.status, Some(status), "{id}");
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
    assert_eq!(
        harness.order("o-new").rejection_reason.as_deref(),
        Some(saga::REASON_CURRENCY_MISMATCH)
    );
    let summary = views::customer_summary(runtime, &customer_id)
        .expect("reads")
        .expect("created");
    assert_eq!(
        (
            summary.orders.approved,
            summary.orders.rejected,
            summary.available_credit,
            summary.currency.as_str()
        ),
        (1, 1, 2 * total, "EUR")
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
// Stored commands
// ---------------------------------------------------------------------------------------------

/// `tests/corpus/commands/manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandManifest {
    /// What the corpus is, for people who open the file.
    #[allow(dead_code, reason = "read by people, not by the tests")]
    about: Vec<String>,
    /// One entry per file, in file name order.
    commands: Vec<CommandEntry>,
}

/// One stored command.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandEntry {
    /// The file, relative to `tests/corpus/commands`.
    file: String,
    /// The aggregate type the command is for.
    aggregate: String,
    /// Its JSON `type`.
    command_type: String,
    /// The build that wrote it.
    #[allow(dead_code, reason = "read by people, not by the tests")]
    written_by: String,
    /// The current command it decodes to, as JSON.
    expected: serde_json::Value,
}

fn command_manifest() -> CommandManifest {
    let path = corpus_dir().join("commands").join(MANIFEST);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bytes of stored command `file`.
fn stored_command(file: &str) -> Vec<u8> {
    corpus_bytes(&format!("commands/{file}"))
}

/// Checks that `entry` decodes, as the runtime decodes an outbox's or a deadline's command, to
/// its expected command, and re-encodes to the stored bytes.
fn check_stored_command<C>(entry: &CommandEntry, command_type: impl Fn(&C) -> &'static str)
where
    C: serde::de::DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let bytes = stored_command(&entry.file);
    let decoded: C = codec::decode_plain(&bytes)
        .unwrap_or_else(|e| panic!("{}: does not decode: {e}", entry.file));
    let expected: C = serde_json::from_value(entry.expected.clone()).unwrap_or_else(|e| {
        panic!(
            "{}: the expected command is no current command: {e}",
            entry.file
        )
    });
    assert_eq!(decoded, expected, "{}", entry.file);
    assert_eq!(command_type(&decoded), entry.command_type, "{}", entry.file);
    assert_eq!(
        codec::encode_plain("command", &decoded).expect("encodes"),
        bytes,
        "{}: re-encoded differently, so its command id's fingerprint would change and a \
         redelivery be refused as another command",
        entry.file
    );
}

#[test]
fn commands_stored_by_older_builds_decode_and_re_encode_to_the_same_bytes() {
    let manifest = command_manifest();
    for entry in &manifest.commands {
        match entry.aggregate.as_str() {
            Customer::TYPE => check_stored_command(entry, CustomerCommand::command_type),
            Order::TYPE => check_stored_command(entry, OrderCommand::command_type),
            other => panic!("{}: unknown aggregate type {other}", entry.file),
        }
    }
    // Every command the saga sends is in the corpus.
    let stored: BTreeSet<&str> = manifest
        .commands
        .iter()
        .map(|e| e.command_type.as_str())
        .collect();
    let sent: BTreeSet<&str> = annals_domain::customer::PROCESS_ONLY_COMMANDS
        .iter()
        .chain(annals_domain::order::PROCESS_ONLY_COMMANDS)
        .copied()
        .collect();
    assert_eq!(stored, sent);
}

/// An `ApproveOrder` stored before approvals carried a reservation decodes without one, and a
/// pending order refuses it with a typed rejection.
#[test]
fn an_approval_stored_before_approvals_carried_evidence_is_refused() {
    let old: OrderCommand =
        codec::decode_plain(&stored_command("Order/ApproveOrder.v1.cbor")).expect("decodes");
    assert_eq!(old, OrderCommand::ApproveOrder { reservation: None });
    let created = OrderEvent::OrderCreated {
        customer_id: "c-1".into(),
        total: 5_000,
        currency: "EUR".into(),
    };
    AggregateTest::<Order>::given(vec![created])
        .when(old)
        .then_expect_rejection(OrderRejection::NoCreditReservation);
}

/// The saga as the previous build left its work in a store: the approvals in its outbox and
/// the rejections in its deadlines are the bytes that build wrote.
struct PreviousBuildSaga {
    saga: OrderCreditSaga,
    approve: Vec<u8>,
    reject_timed_out: Vec<u8>,
}

impl ProcessManager for PreviousBuildSaga {
    type State = OrderCreditState;

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        self.saga.instance(event)
    }

    fn react(
        &self,
        state: &mut OrderCreditState,
        event: &RecordedEvent,
    ) -> Result<Vec<Action>, HandlerError> {
        let mut actions = self.saga.react(state, event)?;
        for action in &mut actions {
            if action.aggregate_type != Order::TYPE {
                continue;
            }
            match codec::decode_plain::<OrderCommand>(&action.command)? {
                OrderCommand::ApproveOrder { .. } => action.command.clone_from(&self.approve),
                OrderCommand::RejectOrder { reason }
                    if action.at.is_some() && reason == saga::REASON_TIMED_OUT =>
                {
                    action.command.clone_from(&self.reject_timed_out);
                }
                _ => {}
            }
        }
        Ok(actions)
    }
}

/// After an upgrade, the saga sends the old `ApproveOrder` its outbox holds: it decodes, the
/// order refuses it, nothing is parked, and the old deadline rejects the order; the saga then
/// releases the credit it saw reserved. The order is rejected, never approved without
/// evidence, and no credit stays held.
#[test]
fn an_approval_left_in_an_outbox_by_the_previous_build_ends_in_a_rejection_and_a_release() {
    let harness = Harness::empty();
    let runtime = &harness.runtime;
    runtime.register::<Customer>().expect("registers");
    runtime.register::<Order>().expect("registers");
    let previous = PreviousBuildSaga {
        saga: OrderCreditSaga {
            decision_timeout: Duration::from_millis(300),
        },
        approve: stored_command("Order/ApproveOrder.v1.cbor"),
        reject_timed_out: stored_command("Order/RejectOrder.v1.cbor"),
    };
    runtime
        .process_manager(
            saga::ORDER_CREDIT_SAGA,
            previous,
            SubscriberOptions::default(),
        )
        .expect("registers");
    let create = CustomerCommand::CreateCustomer {
        name: "Ada".into(),
        credit_limit: 10_000,
        currency: None,
    };
    execute::<Customer>(runtime, "c-1", create);
    let order = OrderCommand::CreateOrder {
        customer_id: "c-1".into(),
        total: 4_000,
        currency: None,
    };
    execute::<Order>(runtime, "o-1", order);

    let started = Instant::now();
    while harness.order("o-1").status == Some(OrderStatus::Pending) {
        assert!(started.elapsed() < SETTLE_MAX, "the deadline never fired");
        std::thread::sleep(POLL);
    }
    harness.settle();
    let order = harness.order("o-1");
    assert_eq!(order.status, Some(OrderStatus::Rejected));
    assert_eq!(
        order.rejection_reason.as_deref(),
        Some(saga::REASON_TIMED_OUT)
    );
    let credit_events: Vec<String> = harness
        .log()
        .iter()
        .filter(|e| e.stream.aggregate_type() == Customer::TYPE)
        .map(|e| e.event_type.to_string())
        .collect();
    assert_eq!(
        credit_events,
        ["CustomerCreated", "CreditReserved", "CreditReleased"]
    );
    assert!(harness.customer("c-1").reservations.is_empty());
    assert_eq!(
        runtime.parked(saga::ORDER_CREDIT_SAGA).expect("reads"),
        vec![],
        "a refused command is an outcome, not a failure"
    );
    harness.shutdown();
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
    // c-ada's reservation for o-1 is the second event of its stream.
    order(
        "o-1",
        json!({"type": "ApproveOrder", "reservation": {"customer_id": "c-ada", "amount": 4_000, "customer_version": 2}}),
    );
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
    // An order in another currency than the customer's credit (EUR): nothing is reserved.
    order("o-4", create(300, "USD"));
    customer(json!({"type": "ReserveCredit", "order_id": "o-4", "amount": 300, "currency": "USD"}));
    order(
        "o-4",
        json!({"type": "RejectOrder", "reason": "currency mismatch"}),
    );
}
