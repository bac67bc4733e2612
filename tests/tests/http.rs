//! Black-box tests of `annals serve`'s HTTP API: a real server on 127.0.0.1 port 0, a real
//! HTTP client, assertions on statuses, bodies and headers.
//!
//! Most tests start the server in-process ([`TestServer`], one data directory each, so they
//! run in parallel); the restart, graceful-shutdown and configuration tests run the `annals`
//! binary as a child process ([`ServeProcess`]), because they need a real process to signal
//! and restart.
//!
//! | area | what is checked |
//! |---|---|
//! | the domain | customers, orders, the saga's three outcomes, shipping, cancelling (credit released), the three views with `min_position`, temporal state by version and time, correlation and causation ids |
//! | history and the log | paging of `/v1/{aggregate}/{id}/events` and `/v1/events`, every envelope member |
//! | idempotency and concurrency | `Idempotency-Key` replays (`Idempotent-Replayed`), reuse for another command, `If-Match` conflicts and `ETag`s |
//! | errors | every 4xx the API documents, each an `application/problem+json` body |
//! | limits | 413 over `server.body_bytes_max` and `runtime.command_bytes_max`, 429/503 with `Retry-After` at the mailbox, in-flight and journal-queue limits (refused commands did not happen), the live-feed limit, the live-actor cap |
//! | live feed | events as committed, resumption with `Last-Event-ID` and `?after=` without gap or duplicate, concurrent writers |
//! | projections | status and lag, rebuild without downtime, parked events |
//! | operations | `/livez`, `/readyz` (and a full disk), `/metrics`, request ids, bearer tokens, JSON logs |
//! | process | restart on the same data directory, SIGTERM with commands in flight, configuration errors, `annals config` |
//!
//! The child-process tests run `target/<profile>/annals`; `annals_tests::annals_binary` builds
//! it only when it is missing, so build it (`cargo build -p annals-app`) after changing the app.

mod http_support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use annals_config::Token;
use annals_tests::{annals_binary, ServeProcess};
use awc::http::Method;
use bytes::Bytes;
use serde_json::{json, Value};

use http_support::{nz, Api, Body, Deadline, Next, Reply, TestServer, ADMIN_TOKEN};

/// The members of every envelope the API shows.
const ENVELOPE_FIELDS: [&str; 12] = [
    "event_id",
    "aggregate",
    "id",
    "version",
    "position",
    "type",
    "schema_version",
    "recorded_at",
    "command_id",
    "correlation_id",
    "causation_id",
    "data",
];

fn create_customer(name: &str, credit_limit: u64) -> Value {
    json!({"type": "CreateCustomer", "name": name, "credit_limit": credit_limit})
}

/// `ReserveCredit`: a process-only command (the saga's), so the client needs the `admin` scope
/// ([`TestServer::start_admin`]).
fn reserve(order_id: &str, amount: u64) -> Value {
    json!({"type": "ReserveCredit", "order_id": order_id, "amount": amount})
}

fn u64_of(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{what} is a number: {value}"))
}

/// The events of a command reply (or a page).
fn events_of(body: &Value) -> Vec<Value> {
    body["events"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("the body has an events array: {body}"))
}

/// Asserts that `event` is an envelope as the API documents it.
fn assert_envelope(event: &Value, aggregate: &str, id: &str) {
    let members: BTreeSet<&str> = event
        .as_object()
        .unwrap_or_else(|| panic!("an envelope is an object: {event}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        members,
        ENVELOPE_FIELDS.into_iter().collect::<BTreeSet<_>>(),
        "{event}"
    );
    let event_id = event["event_id"].as_str().unwrap_or_default();
    let groups: Vec<usize> = event_id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "event_id is a UUID: {event}");
    assert!(
        event_id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
        "event_id is a UUID: {event}"
    );
    assert_eq!(event["aggregate"], json!(aggregate), "{event}");
    assert_eq!(event["id"], json!(id), "{event}");
    assert!(u64_of(&event["version"], "version") >= 1, "{event}");
    assert!(u64_of(&event["position"], "position") >= 1, "{event}");
    assert!(
        u64_of(&event["schema_version"], "schema_version") >= 1,
        "{event}"
    );
    let recorded_at = event["recorded_at"].as_str().unwrap_or_default();
    assert!(
        recorded_at.len() >= 20 && recorded_at.ends_with('Z') && recorded_at.as_bytes()[10] == b'T',
        "recorded_at is RFC 3339 in UTC: {event}"
    );
    assert_eq!(event["data"]["type"], event["type"], "{event}");
    for trace in ["command_id", "correlation_id", "causation_id"] {
        assert!(
            event[trace].is_null() || event[trace].is_string(),
            "{trace} is a string or null: {event}"
        );
    }
}

/// Asserts that `events` are versions 1, 2, … of one stream, each event id once.
fn assert_contiguous(events: &[Value], what: &str) {
    let versions: Vec<u64> = events
        .iter()
        .map(|e| u64_of(&e["version"], "version"))
        .collect();
    let count = u64::try_from(versions.len()).expect("a count fits in u64");
    let expected: Vec<u64> = (1..=count).collect();
    assert_eq!(versions, expected, "{what}: versions are contiguous from 1");
    let ids: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), events.len(), "{what}: no event id twice");
}

/// Whether a command reply is the replay of a stored outcome (`Idempotent-Replayed: true`);
/// the header is absent otherwise.
fn replayed(reply: &Reply) -> bool {
    match reply.header("idempotent-replayed") {
        None => false,
        Some("true") => true,
        Some(other) => panic!("{}: Idempotent-Replayed: {other:?}", reply.what),
    }
}

// ---------------------------------------------------------------------------------------------
// The domain
// ---------------------------------------------------------------------------------------------

/// Customers, orders, the saga's three outcomes, shipping, cancelling with the credit
/// released, the three views with `min_position` (read-your-writes), and temporal state.
#[actix_rt::test]
async fn customers_orders_and_the_saga_through_http() {
    let server = TestServer::start(|_| {}).await;
    let api = &server.api;

    // A customer: the reply, its ETag, and the view at once with min_position.
    let reply = api
        .command("customers", "c-1", &create_customer("Ada", 150_000))
        .await;
    assert_eq!(reply.header("etag"), Some("\"1\""));
    assert!(!replayed(&reply), "a first execution is no replay");
    let created = reply.ok();
    assert_eq!(created["id"], "c-1");
    assert_eq!(created["version"], 1);
    let events = events_of(&created);
    assert_eq!(events.len(), 1, "{created}");
    assert_envelope(&events[0], "Customer", "c-1");
    assert_eq!(events[0]["type"], "CustomerCreated");
    assert_eq!(events[0]["version"], 1);
    assert_eq!(events[0]["data"]["name"], "Ada");
    assert_eq!(events[0]["data"]["credit_limit"], 150_000);
    assert_eq!(events[0]["data"]["currency"], "EUR", "the default currency");
    assert_eq!(events[0]["schema_version"], 2);
    assert_eq!(created["position"], events[0]["position"]);
    let position = u64_of(&created["position"], "position");

    let summary = api
        .get(&format!("/v1/views/customers/c-1?min_position={position}"))
        .await
        .ok();
    assert_eq!(
        summary,
        json!({
            "customer_id": "c-1",
            "name": "Ada",
            "credit_limit": 150_000,
            "currency": "EUR",
            "available_credit": 150_000,
            "created_at": events[0]["recorded_at"],
            "orders": {"pending": 0, "approved": 0, "rejected": 0, "shipped": 0, "cancelled": 0},
            "total_shipped": 0,
        })
    );
    let state = api.get("/v1/customers/c-1").await;
    assert_eq!(state.header("etag"), Some("\"1\""));
    assert_eq!(
        state.ok(),
        json!({"id": "c-1", "version": 1, "state": {
            "created": true, "name": "Ada", "credit_limit": 150_000, "currency": "EUR",
            "reservations": {}
        }})
    );

    // Four orders: within the limit, over it, for a customer that does not exist, and in
    // another currency than the customer's credit.
    let reply = api
        .command(
            "orders",
            "o-1",
            &json!({"type": "CreateOrder", "customer_id": "c-1", "total": 5000}),
        )
        .await;
    assert_eq!(reply.header("etag"), Some("\"1\""));
    let order = reply.ok();
    let order_events = events_of(&order);
    assert_eq!(order_events.len(), 1);
    assert_envelope(&order_events[0], "Order", "o-1");
    assert_eq!(order_events[0]["type"], "OrderCreated");
    assert_eq!(order_events[0]["schema_version"], 2);
    assert_eq!(
        order_events[0]["data"],
        json!({"type": "OrderCreated", "customer_id": "c-1", "total": 5000, "currency": "EUR"})
    );
    let o2 = api.create_order("o-2", "c-1", 200_000).await;
    api.create_order("o-3", "c-ghost", 100).await;
    let o4 = api
        .command(
            "orders",
            "o-usd",
            &json!({"type": "CreateOrder", "customer_id": "c-1", "total": 100, "currency": "USD"}),
        )
        .await
        .ok();

    let approved = api.order_in("o-1", "Approved").await;
    assert_eq!(approved["version"], 2);
    assert_eq!(
        approved["state"],
        json!({"status": "Approved", "customer_id": "c-1", "total": 5000, "currency": "EUR"})
    );
    let over_limit = api.order_in("o-2", "Rejected").await;
    assert_eq!(
        over_limit["state"]["rejection_reason"],
        "credit limit exceeded"
    );
    let unknown = api.order_in("o-3", "Rejected").await;
    assert_eq!(unknown["state"]["rejection_reason"], "unknown customer");
    let in_usd = api.order_in("o-usd", "Rejected").await;
    assert_eq!(in_usd["state"]["rejection_reason"], "currency mismatch");

    // The customer's side of the saga.
    let customer_events = api.history("customers", "c-1", 100).await;
    assert_contiguous(&customer_events, "c-1");
    let types: BTreeSet<&str> = customer_events
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types,
        BTreeSet::from([
            "CustomerCreated",
            "CreditReserved",
            "CreditLimitExceeded",
            "CreditCurrencyMismatch"
        ])
    );
    let exceeded = customer_events
        .iter()
        .find(|e| e["type"] == "CreditLimitExceeded")
        .expect("the over-limit order was refused by the customer");
    assert_eq!(exceeded["data"]["order_id"], "o-2");
    assert_eq!(exceeded["data"]["amount"], 200_000);
    assert_eq!(exceeded["data"]["available"], 145_000);
    let state = api.get("/v1/customers/c-1").await.ok();
    assert_eq!(state["state"]["reservations"], json!({"o-1": 5000}));

    // Shipping: the reply, then the views at the reply's position at once.
    let reply = api
        .command("orders", "o-1", &json!({"type": "ShipOrder"}))
        .await;
    assert_eq!(reply.header("etag"), Some("\"3\""));
    let shipped = reply.ok();
    assert_eq!(shipped["version"], 3);
    assert_eq!(events_of(&shipped)[0]["type"], "OrderShipped");
    let ship_position = u64_of(&shipped["position"], "position");
    let summary = api
        .get(&format!(
            "/v1/views/customers/c-1?min_position={ship_position}"
        ))
        .await
        .ok();
    assert_eq!(
        summary["orders"],
        json!({"pending": 0, "approved": 0, "rejected": 2, "shipped": 1, "cancelled": 0})
    );
    assert_eq!(summary["available_credit"], 145_000);
    assert_eq!(summary["total_shipped"], 5000);
    let created_at = summary["created_at"].clone();
    let created_at = created_at.as_str().expect("created_at is a string");

    let orders = api
        .get(&format!(
            "/v1/views/customers/c-1/orders?min_position={ship_position}"
        ))
        .await
        .ok();
    assert_eq!(
        orders,
        json!({"customer_id": "c-1", "orders": [
            {
                "order_id": "o-1", "customer_id": "c-1", "total": 5000, "currency": "EUR",
                "status": "Shipped", "created_at": order_events[0]["recorded_at"],
            },
            {
                "order_id": "o-2", "customer_id": "c-1", "total": 200_000, "currency": "EUR",
                "status": "Rejected", "created_at": events_of(&o2)[0]["recorded_at"],
            },
            {
                "order_id": "o-usd", "customer_id": "c-1", "total": 100, "currency": "USD",
                "status": "Rejected", "created_at": events_of(&o4)[0]["recorded_at"],
            },
        ]})
    );

    // The valuable-customers view: inclusive total, strictly-after creation time.
    let valuable = |created_after: &str, min_total: u64| {
        format!(
            "/v1/views/valuable-customers?created_after={}&min_order_total={min_total}\
             &min_position={ship_position}",
            created_after.replace('+', "%2B")
        )
    };
    let found = api.get(&valuable("2000-01-01T00:00:00Z", 5000)).await.ok();
    assert_eq!(
        found,
        json!({"customers": [{
            "customer_id": "c-1", "name": "Ada", "created_at": created_at, "max_shipped_total": 5000
        }], "next_after": null})
    );
    let found = api
        .get(&valuable("2000-01-01T00:00:00+02:00", 5001))
        .await
        .ok();
    assert_eq!(
        found,
        json!({"customers": [], "next_after": null}),
        "no shipped order of 5001 or more"
    );
    let found = api.get(&valuable(created_at, 1)).await.ok();
    assert_eq!(
        found,
        json!({"customers": [], "next_after": null}),
        "created_after is exclusive"
    );

    // Cancelling an approved order releases its credit.
    api.create_order("o-4", "c-1", 20_000).await;
    api.order_in("o-4", "Approved").await;
    let cancelled = api
        .command("orders", "o-4", &json!({"type": "CancelOrder"}))
        .await
        .ok();
    assert_eq!(cancelled["version"], 3);
    assert_eq!(events_of(&cancelled)[0]["type"], "OrderCancelled");
    let deadline = Deadline::new("the credit of o-4 to be released");
    let released = loop {
        let events = api.history("customers", "c-1", 100).await;
        if let Some(event) = events
            .iter()
            .find(|e| e["type"] == "CreditReleased" && e["data"]["order_id"] == "o-4")
        {
            assert_eq!(event["data"]["amount"], 20_000);
            break u64_of(&event["position"], "position");
        }
        deadline.pause(&format!("{events:?}")).await;
    };
    let summary = api
        .get(&format!("/v1/views/customers/c-1?min_position={released}"))
        .await
        .ok();
    assert_eq!(summary["available_credit"], 145_000);
    assert_eq!(
        summary["orders"],
        json!({"pending": 0, "approved": 0, "rejected": 2, "shipped": 1, "cancelled": 1})
    );
    let state = api.get("/v1/customers/c-1").await.ok();
    assert_eq!(state["state"]["reservations"], json!({"o-1": 5000}));

    // Business rejections are 422 problems naming the rejection.
    let again = api
        .command("orders", "o-4", &json!({"type": "CancelOrder"}))
        .await
        .problem_of(422, "rejected");
    assert_eq!(
        again["rejection"],
        json!({"type": "NotCancellable", "status": "Cancelled"})
    );
    let ship_rejected = api
        .command("orders", "o-2", &json!({"type": "ShipOrder"}))
        .await
        .problem_of(422, "rejected");
    assert_eq!(
        ship_rejected["rejection"],
        json!({"type": "NotApproved", "status": "Rejected"})
    );
    api.get("/v1/views/customers/c-ghost").await.problem(404);

    // Temporal state of o-1: by version and by time.
    let history = api.history("orders", "o-1", 100).await;
    assert_contiguous(&history, "o-1");
    let types: Vec<&str> = history.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["OrderCreated", "OrderApproved", "OrderShipped"]);
    let at_v1 = api.get("/v1/orders/o-1?version=1").await;
    assert_eq!(at_v1.header("etag"), Some("\"1\""));
    let at_v1 = at_v1.ok();
    assert_eq!(at_v1["version"], 1);
    assert_eq!(at_v1["state"]["status"], "Pending");
    let at_v2 = api.get("/v1/orders/o-1?version=2").await.ok();
    assert_eq!(at_v2["state"]["status"], "Approved");
    for (index, status) in [(0, "Pending"), (1, "Approved"), (2, "Shipped")] {
        let at = history[index]["recorded_at"].as_str().expect("recorded_at");
        let path = format!("/v1/orders/o-1?as_of={at}");
        let state = api.get(&path).await.ok();
        assert_eq!(
            state["version"], history[index]["version"],
            "{path}: {state}"
        );
        assert_eq!(state["state"]["status"], status, "{path}: {state}");
    }
    let future = api
        .get("/v1/orders/o-1?as_of=2999-01-01T00:00:00Z")
        .await
        .ok();
    assert_eq!(future["version"], 3);
    api.get("/v1/orders/o-1?as_of=2000-01-01T00:00:00Z")
        .await
        .problem(404);
    server.stop().await;
}

/// History paging with `from`/`limit`/`next_from`, every envelope member (command id,
/// correlation and causation ids from headers), and the global log paged with
/// `after`/`limit`/`next_after` up to `head`.
#[actix_rt::test]
async fn history_and_global_log_are_paged_with_full_envelopes() {
    let server = TestServer::start_admin(|_| {}).await;
    let api = &server.api;
    let mut replied = Vec::new();
    let created = api
        .command_with(
            "customers",
            "c-1",
            &create_customer("Ada", 1_000_000),
            &[
                ("Idempotency-Key", "create-c-1"),
                ("X-Correlation-Id", "corr-1"),
                ("X-Causation-Id", "cause-1"),
            ],
        )
        .await
        .ok();
    replied.extend(events_of(&created));
    for i in 1..=4 {
        let reply = api
            .command("customers", "c-1", &reserve(&format!("r-{i}"), 1000))
            .await
            .ok();
        assert_eq!(reply["version"], i + 1);
        replied.extend(events_of(&reply));
    }
    let first = &replied[0];
    assert_eq!(first["command_id"], "create-c-1");
    assert_eq!(first["correlation_id"], "corr-1");
    assert_eq!(first["causation_id"], "cause-1");
    for event in &replied {
        assert_envelope(event, "Customer", "c-1");
        let current = if event["type"] == "CustomerCreated" {
            2
        } else {
            1
        };
        assert_eq!(event["schema_version"], current, "{event}");
    }

    // Pages of two: versions 1-2, 3-4, 5.
    let page = api.get("/v1/customers/c-1/events?limit=2").await.ok();
    assert_eq!(page["id"], "c-1");
    assert_eq!(events_of(&page), replied[0..2]);
    assert_eq!(page["next_from"], 3);
    let page = api
        .get("/v1/customers/c-1/events?from=3&limit=2")
        .await
        .ok();
    assert_eq!(events_of(&page), replied[2..4]);
    assert_eq!(page["next_from"], 5);
    let page = api
        .get("/v1/customers/c-1/events?from=5&limit=2")
        .await
        .ok();
    assert_eq!(events_of(&page), replied[4..5]);
    assert_eq!(
        page["next_from"],
        Value::Null,
        "the last page has no next_from"
    );
    let page = api.get("/v1/customers/c-1/events?from=6").await.ok();
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["next_from"], Value::Null);
    let page = api.get("/v1/customers/c-1/events").await.ok();
    assert_eq!(events_of(&page), replied, "the default page holds them all");
    let page = api.get("/v1/customers/nobody/events").await.ok();
    assert_eq!(
        page["events"],
        json!([]),
        "a stream without events has an empty history"
    );

    // The global log: only c-1 wrote (no order, so no saga), so it is the same five events.
    let (log, head) = api.global_log(2).await;
    assert_eq!(head, 5);
    assert_eq!(log, replied);
    let positions: Vec<u64> = log
        .iter()
        .map(|e| u64_of(&e["position"], "position"))
        .collect();
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    let page = api.get("/v1/events?after=3&limit=1").await.ok();
    assert_eq!(events_of(&page), replied[3..4]);
    assert_eq!(page["next_after"], 4);
    assert_eq!(page["head"], 5);
    let page = api.get("/v1/events?after=5").await.ok();
    assert_eq!(page, json!({"events": [], "next_after": 5, "head": 5}));
    let page = api.get("/v1/events").await.ok();
    assert_eq!(events_of(&page), replied);
    assert_eq!(page["next_after"], 5);
    server.stop().await;
}

/// The saga's commands carry the correlation id of the order's creation and name the event
/// that caused them.
#[actix_rt::test]
async fn saga_events_carry_correlation_and_causation() {
    let server = TestServer::start(|_| {}).await;
    let api = &server.api;
    api.create_customer("c-1", "Ada", 10_000).await;
    let created = api
        .command_with(
            "orders",
            "o-1",
            &json!({"type": "CreateOrder", "customer_id": "c-1", "total": 100}),
            &[("X-Correlation-Id", "checkout-42")],
        )
        .await
        .ok();
    let order_created = &events_of(&created)[0];
    assert_eq!(order_created["correlation_id"], "checkout-42");
    api.order_in("o-1", "Approved").await;
    let customer = api.history("customers", "c-1", 10).await;
    let reserved = customer
        .iter()
        .find(|e| e["type"] == "CreditReserved")
        .expect("credit was reserved");
    assert_eq!(reserved["correlation_id"], "checkout-42", "{reserved}");
    assert_eq!(
        reserved["causation_id"], order_created["event_id"],
        "{reserved}"
    );
    let order = api.history("orders", "o-1", 10).await;
    assert_eq!(order[1]["type"], "OrderApproved");
    assert_eq!(order[1]["correlation_id"], "checkout-42", "{}", order[1]);
    assert_eq!(
        order[1]["causation_id"], reserved["event_id"],
        "{}",
        order[1]
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Idempotency and concurrency
// ---------------------------------------------------------------------------------------------

/// The same `Idempotency-Key` twice gives the same reply and one set of events; the same key
/// with another command (another body, or the same body for another aggregate) is a 422; a
/// stored rejection is replayed too.
#[actix_rt::test]
async fn idempotency_key_replays_the_first_outcome() {
    let server = TestServer::start_admin(|_| {}).await;
    let api = &server.api;
    let key = [("Idempotency-Key", "create-c-1")];
    let create = create_customer("Ada", 150_000);
    let first = api.command_with("customers", "c-1", &create, &key).await;
    let second = api.command_with("customers", "c-1", &create, &key).await;
    assert_eq!(first.header("etag"), Some("\"1\""));
    assert_eq!(second.header("etag"), Some("\"1\""));
    assert!(!replayed(&first));
    assert!(replayed(&second), "the retry is marked as a replay");
    let (first, second) = (first.ok(), second.ok());
    assert_eq!(first, second, "the same reply");
    assert_eq!(api.history("customers", "c-1", 10).await, events_of(&first));

    // A retry of a guarded create is still the first outcome, not a conflict.
    let guarded = [("Idempotency-Key", "create-c-2"), ("If-Match", "\"0\"")];
    let c2 = api
        .command_with("customers", "c-2", &create, &guarded)
        .await
        .ok();
    let retry = api
        .command_with("customers", "c-2", &create, &guarded)
        .await;
    assert!(replayed(&retry));
    assert_eq!(retry.ok(), c2);

    // Reused for another command: another body, or the same body on another aggregate.
    let other = api
        .command_with("customers", "c-1", &create_customer("Grace", 1), &key)
        .await
        .problem_of(422, "idempotency-key-reused");
    assert!(
        other["detail"]
            .as_str()
            .is_some_and(|d| d.contains("create-c-1")),
        "{other}"
    );
    api.command_with("customers", "c-3", &create, &key)
        .await
        .problem_of(422, "idempotency-key-reused");
    assert_eq!(
        api.get("/v1/customers/c-3").await.status,
        404,
        "nothing was executed"
    );
    assert_eq!(api.history("customers", "c-1", 10).await.len(), 1);

    // Commands with events: one set of events however often they are retried.
    let key = [("Idempotency-Key", "reserve-o-9")];
    let first = api
        .command_with("customers", "c-1", &reserve("o-9", 700), &key)
        .await
        .ok();
    for _ in 0..3 {
        let again = api
            .command_with("customers", "c-1", &reserve("o-9", 700), &key)
            .await;
        assert_eq!(again.header("etag"), Some("\"2\""));
        assert!(replayed(&again));
        assert_eq!(again.ok(), first);
    }
    let history = api.history("customers", "c-1", 10).await;
    assert_eq!(history.len(), 2);
    assert_eq!(history[1], events_of(&first)[0]);
    assert_eq!(history[1]["command_id"], "reserve-o-9");

    // A rejection is an outcome too: the retry gets the same 422, marked as replayed.
    let key = [("Idempotency-Key", "create-c-1-again")];
    let first = api.command_with("customers", "c-1", &create, &key).await;
    assert!(!replayed(&first), "the first answer is not a replay");
    let rejected = first.problem_of(422, "rejected");
    assert_eq!(rejected["rejection"], json!({"type": "AlreadyExists"}));
    let retry = api.command_with("customers", "c-1", &create, &key).await;
    assert!(replayed(&retry), "a replayed rejection says so");
    let again = retry.problem_of(422, "rejected");
    assert_eq!(again["rejection"], rejected["rejection"]);
    server.stop().await;
}

/// `If-Match` is the expected version: "0" for a new aggregate, a mismatch is a 409 naming the
/// current version, a match executes and the `ETag` moves on.
#[actix_rt::test]
async fn if_match_guards_the_version_and_etags_follow() {
    let server = TestServer::start_admin(|_| {}).await;
    let api = &server.api;
    let create = create_customer("Ada", 150_000);
    let reply = api
        .command_with("customers", "c-1", &create, &[("If-Match", "\"0\"")])
        .await;
    assert_eq!(reply.header("etag"), Some("\"1\""));
    reply.ok();

    let conflict = api
        .command_with("customers", "c-1", &create, &[("If-Match", "\"0\"")])
        .await
        .problem_of(409, "conflict");
    assert_eq!(conflict["current_version"], 1, "{conflict}");
    assert_eq!(conflict["expected_version"], 0, "{conflict}");

    let reply = api
        .command_with(
            "customers",
            "c-1",
            &reserve("o-1", 10),
            &[("If-Match", "\"1\"")],
        )
        .await;
    assert_eq!(reply.header("etag"), Some("\"2\""));
    assert_eq!(reply.ok()["version"], 2);
    let stale = api
        .command_with(
            "customers",
            "c-1",
            &reserve("o-2", 10),
            &[("If-Match", "\"1\"")],
        )
        .await
        .problem_of(409, "conflict");
    assert_eq!(stale["current_version"], 2, "{stale}");
    let ahead = api
        .command_with(
            "customers",
            "c-1",
            &reserve("o-2", 10),
            &[("If-Match", "\"7\"")],
        )
        .await
        .problem_of(409, "conflict");
    assert_eq!(ahead["current_version"], 2, "{ahead}");

    // The ETag of a read is the If-Match of the next write; a weak tag never matches (412).
    let read = api.get("/v1/customers/c-1").await;
    let etag = read.header("etag").expect("a read has an ETag").to_owned();
    assert_eq!(etag, "\"2\"");
    let reply = api
        .command_with(
            "customers",
            "c-1",
            &reserve("o-2", 10),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(reply.header("etag"), Some("\"3\""));
    let weak = api
        .command_with(
            "customers",
            "c-1",
            &reserve("o-3", 10),
            &[("If-Match", "W/\"3\"")],
        )
        .await
        .problem_of(412, "precondition-failed");
    assert!(
        weak["detail"]
            .as_str()
            .is_some_and(|d| d.contains("weak") && d.contains("never match")),
        "{weak}"
    );
    let reply = api
        .command_with(
            "customers",
            "c-1",
            &reserve("o-3", 10),
            &[("If-Match", "\"3\"")],
        )
        .await;
    assert_eq!(reply.header("etag"), Some("\"4\""));
    assert_eq!(
        api.get("/v1/customers/c-1").await.header("etag"),
        Some("\"4\"")
    );
    assert_eq!(
        api.history("customers", "c-1", 10).await.len(),
        4,
        "conflicts wrote nothing"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One request of [`every_client_error_is_a_problem_document`] and the problem it must get.
struct Case {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Body>,
    status: u16,
    kind: &'static str,
}

impl Case {
    fn new(
        method: Method,
        path: &str,
        body: Option<Body>,
        status: u16,
        kind: &'static str,
    ) -> Case {
        Case {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body,
            status,
            kind,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }
}

/// Every 400, 404, 405, 409, 412, 415 and 422 the API documents, each a problem document.
#[actix_rt::test]
async fn every_client_error_is_a_problem_document() {
    let server = TestServer::start_admin(|c| {
        c.server.page_size_max = nz(50);
        c.server.page_size_default = nz(20);
    })
    .await;
    let api = &server.api;
    let created = api.create_customer("c-1", "Ada", 1000).await;
    let head = u64_of(&created["position"], "position");
    let json_text = |text: &str| Some(Body::raw(Some("application/json"), text.to_owned()));
    let json_value = |value: &Value| Some(Body::json(value));
    let mut cases = Vec::new();

    // 400: the command is not JSON, not a command of the aggregate, or has an invalid field.
    for text in [
        "{\"type\":",
        "",
        "[1, 2]",
        "{\"type\":\"Explode\"}",
        "{\"name\":\"Ada\",\"credit_limit\":1}",
        "{\"type\":\"CreateCustomer\",\"name\":\"Ada\",\"credit_limit\":-5}",
        "{\"type\":\"CreateCustomer\",\"name\":\"Ada\",\"credit_limit\":\"lots\"}",
        "{\"type\":\"CreateCustomer\",\"name\":\"Ada\",\"credit_limit\":1.5}",
        "{\"type\":\"CreateCustomer\",\"name\":\"Ada\"}",
        "{\"type\":\"CreateOrder\",\"customer_id\":\"c-1\",\"total\":1}",
    ] {
        let path = "/v1/customers/c-2/commands";
        cases.push(Case::new(
            Method::POST,
            path,
            json_text(text),
            400,
            "bad-request",
        ));
    }
    // 400: a header or the aggregate id.
    let reserve_one = json_value(&reserve("o", 1));
    let path = "/v1/customers/c-1/commands";
    for if_match in [
        "\"one\"",
        "\"1\", \"2\"",
        "-1",
        "\"\"",
        "0",
        "1",
        "\"+0\"",
        "\"01\"",
        "\"-1\"",
        "*",
        "W/1",
        "W/\"1\", \"2\"",
        "\"18446744073709551616\"",
    ] {
        let case = Case::new(Method::POST, path, reserve_one.clone(), 400, "bad-request");
        cases.push(case.header("If-Match", if_match));
    }
    // A weak tag never matches, nor does an empty list of tags.
    for if_match in ["W/\"1\"", ""] {
        let case = Case::new(
            Method::POST,
            path,
            reserve_one.clone(),
            412,
            "precondition-failed",
        );
        cases.push(case.header("If-Match", if_match));
    }
    // A request that is bad otherwise is a 400 before its precondition is judged.
    let case = Case::new(
        Method::POST,
        path,
        json_value(&json!({"type": "ReserveCredit"})),
        400,
        "bad-request",
    );
    cases.push(case.header("If-Match", "W/\"1\""));
    let case = Case::new(Method::POST, path, reserve_one.clone(), 400, "bad-request");
    cases.push(case.header("X-Correlation-Id", "").header("If-Match", ""));
    let case = Case::new(Method::POST, path, reserve_one.clone(), 400, "bad-request");
    cases.push(case.header("Idempotency-Key", "k".repeat(200)));
    let case = Case::new(Method::POST, path, reserve_one.clone(), 400, "bad-request");
    cases.push(case.header("X-Correlation-Id", "t".repeat(200)));
    let long_id = format!("/v1/customers/{}/commands", "x".repeat(300));
    let create = json_value(&create_customer("Ada", 1));
    cases.push(Case::new(
        Method::POST,
        &long_id,
        create.clone(),
        400,
        "bad-request",
    ));
    // 400: a query parameter or the live feed's position.
    let beyond = format!("/v1/views/customers/c-1?min_position={}", head + 1000);
    for path in [
        "/v1/events?after=abc",
        "/v1/events?colour=red",
        "/v1/events?limit=51",
        "/v1/events?limit=0",
        "/v1/events?limit=-1",
        "/v1/customers/c-1/events?limit=51",
        "/v1/customers/c-1/events?from=-1",
        "/v1/customers/c-1?version=0",
        "/v1/customers/c-1?version=1&as_of=2026-01-01T00:00:00Z",
        "/v1/customers/c-1?as_of=yesterday",
        "/v1/customers/c-1?as_of=1960-01-01T00:00:00Z",
        "/v1/views/valuable-customers?created_after=yesterday",
        "/v1/views/valuable-customers?min_order_total=lots",
        "/v1/views/valuable-customers?limit=51",
        "/v1/views/customers/c-1/orders?limit=51",
        "/v1/views/customers/c-1?limit=5",
        beyond.as_str(),
        "/v1/views/customers/c-1?min_position=x",
        "/v1/events/live?after=x",
    ] {
        cases.push(Case::new(Method::GET, path, None, 400, "bad-request"));
    }
    let live = Case::new(Method::GET, "/v1/events/live", None, 400, "bad-request");
    cases.push(live.header("Last-Event-ID", "seven"));
    let path = "/v1/projections/customer-summaries/parked/abc/retry";
    cases.push(Case::new(Method::POST, path, None, 400, "bad-request"));
    // 404: no such aggregate type, aggregate, view entry, projection or route.
    cases.push(Case::new(
        Method::POST,
        "/v1/widgets/w-1/commands",
        create.clone(),
        404,
        "not-found",
    ));
    for path in [
        "/v1/widgets/w-1",
        "/v1/widgets/w-1/events",
        "/v1/customers/nobody",
        "/v1/customers/nobody?version=1",
        "/v1/orders/nothing",
        "/v1/views/customers/nobody",
        "/v1/projections/no-such-projection/parked",
        "/nope",
        "/v2/events",
        "/v1/customers",
        "/v1/customers/c-1/events/1/more",
    ] {
        cases.push(Case::new(Method::GET, path, None, 404, "not-found"));
    }
    for path in [
        "/v1/projections/no-such-projection/rebuild",
        "/v1/projections/no-such-projection/parked/1/retry",
    ] {
        cases.push(Case::new(Method::POST, path, None, 404, "not-found"));
    }
    // 405: a known route, another method.
    for (method, path) in [
        (Method::DELETE, "/v1/customers/c-1"),
        (Method::GET, "/v1/customers/c-1/commands"),
        (Method::PUT, "/v1/customers/c-1/commands"),
        (Method::POST, "/v1/events"),
        (Method::PUT, "/livez"),
        (Method::GET, "/v1/projections/customer-summaries/rebuild"),
    ] {
        cases.push(Case::new(method, path, None, 405, "method-not-allowed"));
    }
    // 415: not JSON.
    let text = create_customer("Ada", 1).to_string();
    for content_type in [
        Some("text/plain"),
        None,
        Some("application/x-www-form-urlencoded"),
    ] {
        let body = Some(Body::raw(content_type, text.clone()));
        let path = "/v1/customers/c-2/commands";
        cases.push(Case::new(
            Method::POST,
            path,
            body,
            415,
            "unsupported-media-type",
        ));
    }
    // 422: the aggregate refuses.
    for (path, command) in [
        ("/v1/customers/c-1/commands", create_customer("Ada", 1)),
        ("/v1/customers/c-2/commands", create_customer("  ", 1)),
        ("/v1/customers/c-2/commands", reserve("o-1", 1)),
        ("/v1/customers/c-1/commands", reserve("o-1", 0)),
        (
            "/v1/orders/o-1/commands",
            json!({"type": "CreateOrder", "customer_id": "c-1", "total": 0}),
        ),
        (
            "/v1/orders/o-1/commands",
            json!({"type": "CreateOrder", "customer_id": "c-1", "total": 1, "currency": "euro"}),
        ),
        (
            "/v1/orders/o-1/commands",
            json!({"type": "CreateOrder", "customer_id": "", "total": 1}),
        ),
        ("/v1/orders/o-1/commands", json!({"type": "ShipOrder"})),
    ] {
        cases.push(Case::new(
            Method::POST,
            path,
            json_value(&command),
            422,
            "rejected",
        ));
    }

    let mut failures = Vec::new();
    for case in cases {
        let headers: Vec<(&str, &str)> =
            case.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = api
            .send(case.method.clone(), &case.path, &headers, case.body)
            .await;
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let problem = reply.problem_of(case.status, case.kind);
            if case.status == 405 {
                assert!(
                    reply.header("allow").is_some(),
                    "{}: a 405 names the allowed methods in Allow (RFC 9110, 15.5.6)",
                    reply.what
                );
            }
            if case.kind == "rejected" {
                assert!(problem["rejection"]["type"].is_string(), "{problem}");
            }
        }));
        if let Err(panic) = checked {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(message);
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Members a client can act on.
    let unknown = api
        .command("customers", "c-2", &json!({"type": "Explode"}))
        .await
        .problem(400);
    assert_eq!(
        unknown["command_types"],
        json!(["CreateCustomer", "ReserveCredit", "ReleaseCredit"]),
        "{unknown}"
    );
    let limit = api.get("/v1/events?limit=51").await.problem(400);
    assert_eq!(limit["parameter"], "limit", "{limit}");
    assert!(
        limit["detail"].as_str().is_some_and(|d| d.contains("50")),
        "{limit}"
    );
    let as_of = api
        .get("/v1/customers/c-1?as_of=yesterday")
        .await
        .problem(400);
    assert_eq!(as_of["parameter"], "as_of", "{as_of}");
    let after = api
        .get("/v1/views/valuable-customers?created_after=yesterday")
        .await
        .problem(400);
    assert_eq!(after["parameter"], "created_after", "{after}");
    let rejected = api
        .command("customers", "c-1", &create_customer("Ada", 1))
        .await
        .problem(422);
    assert_eq!(rejected["rejection"], json!({"type": "AlreadyExists"}));
    let zero = api
        .command(
            "orders",
            "o-1",
            &json!({"type": "CreateOrder", "customer_id": "c-1", "total": 0}),
        )
        .await
        .problem(422);
    assert_eq!(zero["rejection"], json!({"type": "ZeroTotal"}));

    // None of the refused commands wrote anything.
    let (log, head_now) = api.global_log(50).await;
    assert_eq!((log.len(), head_now), (1, head), "{log:?}");
    server.stop().await;
}

/// A body over `server.body_bytes_max` is a 413, declared or streamed; one under it is taken.
#[actix_rt::test]
async fn bodies_over_the_limit_are_413() {
    let server = TestServer::start(|c| c.server.body_bytes_max = nz(256)).await;
    let api = &server.api;
    let big = create_customer(&"A".repeat(1000), 1);
    let too_large = api
        .command("customers", "c-1", &big)
        .await
        .problem_of(413, "payload-too-large");
    assert_eq!(too_large["limit"], 256, "{too_large}");

    // Streamed without a Content-Length: the limit holds while reading.
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..8)
        .map(|_| Ok(Bytes::from(vec![b' '; 100])))
        .chain(std::iter::once(Ok(Bytes::from(big.to_string()))))
        .collect();
    let client = awc::Client::default();
    let mut response = client
        .post(format!("{}/v1/customers/c-1/commands", api.url))
        .insert_header(("content-type", "application/json"))
        .send_stream(futures::stream::iter(chunks))
        .await
        .expect("the server answers a streamed body");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.body().await.expect("the body of the 413");
    Reply {
        status,
        headers,
        body,
        what: "POST (streamed) /v1/customers/c-1/commands".into(),
    }
    .problem_of(413, "payload-too-large");

    assert_eq!(
        api.get("/v1/customers/c-1").await.status,
        404,
        "nothing was executed"
    );
    let small = api.create_customer("c-1", "Ada", 1).await;
    assert_eq!(small["version"], 1);
    server.stop().await;
}

/// With `auth.tokens` set, the API needs a bearer token (401 with `WWW-Authenticate`
/// otherwise); the health endpoints stay open.
#[actix_rt::test]
async fn bearer_tokens_guard_the_api_but_not_health() {
    let token = "test-token-0123456789abcdef";
    let server = TestServer::start(|c| {
        c.auth.tokens = vec![Token::new("another-token-0123456789"), Token::new(token)];
    })
    .await;
    let anonymous = &server.api;
    let wrong = anonymous.with_token("test-token-0123456789abcdeX");
    let short = anonymous.with_token("test");
    let right = anonymous.with_token(token);
    for api in [anonymous, &wrong, &short] {
        for path in [
            "/v1/events",
            "/v1/customers/c-1",
            "/v1/projections",
            "/metrics",
            "/v1/nope",
        ] {
            let reply = api.get(path).await;
            reply.problem_of(401, "unauthorized");
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"annals\""),
                "{path}"
            );
        }
        let reply = api
            .command("customers", "c-1", &create_customer("Ada", 1))
            .await;
        reply.problem_of(401, "unauthorized");
        assert!(reply.header("www-authenticate").is_some());
    }
    let lowercase = anonymous
        .get_with(
            "/v1/events",
            &[("authorization", &format!("bearer {token}"))],
        )
        .await;
    assert_eq!(
        lowercase.status,
        200,
        "the scheme is case-insensitive: {}",
        lowercase.text()
    );
    let basic = anonymous
        .get_with(
            "/v1/events",
            &[("authorization", &format!("Basic {token}"))],
        )
        .await;
    basic.problem_of(401, "unauthorized");

    for path in ["/livez", "/readyz"] {
        assert_eq!(anonymous.get(path).await.status, 200, "{path} stays open");
    }
    assert_eq!(anonymous.get("/v1/customers/c-1").await.status, 401);
    right.create_customer("c-1", "Ada", 1).await;
    assert_eq!(right.get("/v1/customers/c-1").await.ok()["version"], 1);
    let other = anonymous.with_token("another-token-0123456789");
    assert_eq!(
        other.get("/v1/events").await.ok()["head"],
        1,
        "every configured token works"
    );
    assert_eq!(right.get("/metrics").await.status, 200);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Limits under load
// ---------------------------------------------------------------------------------------------

/// With a mailbox of one, concurrent commands at one aggregate get 429 (or 503) with
/// `Retry-After`; every 200 is in the history exactly once, and nothing else is.
#[actix_rt::test]
async fn a_full_mailbox_answers_429_and_loses_nothing() {
    let server = TestServer::start_admin(|c| c.runtime.mailbox_capacity = nz(1)).await;
    let api = &server.api;
    api.create_customer("c-hot", "Hot", 1_000_000_000).await;
    let mut acknowledged: Vec<Value> = Vec::new();
    let mut overloaded = 0;
    for round in 0..5 {
        let replies = futures::future::join_all((0..24).map(|i| {
            let order = format!("o-{round}-{i}");
            async move { api.command("customers", "c-hot", &reserve(&order, 1)).await }
        }))
        .await;
        for reply in replies {
            if reply.status == 200 {
                acknowledged.push(reply.ok());
            } else {
                reply.overloaded();
                overloaded += 1;
            }
        }
        if overloaded > 0 {
            break;
        }
    }
    assert!(
        overloaded > 0,
        "no command was refused with a mailbox of one"
    );
    assert!(!acknowledged.is_empty(), "some commands went through");

    let history = api.history("customers", "c-hot", 37).await;
    assert_contiguous(&history, "c-hot");
    assert_eq!(
        history.len(),
        acknowledged.len() + 1,
        "exactly the acknowledged commands"
    );
    let by_id: BTreeMap<&str, &Value> = history
        .iter()
        .map(|e| (e["event_id"].as_str().unwrap_or_default(), e))
        .collect();
    for reply in &acknowledged {
        let event = &events_of(reply)[0];
        let stored = by_id
            .get(event["event_id"].as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("acknowledged but not stored: {event}"));
        assert_eq!(*stored, event);
        assert_eq!(reply["version"], event["version"]);
    }
    let metrics = api.get("/metrics").await.text();
    assert!(
        metrics.contains(
            "annals_commands_total{aggregate=\"Customer\",command=\"ReserveCredit\",outcome=\"overloaded\"}"
        ),
        "overloads are counted:\n{metrics}"
    );
    server.stop().await;
}

/// With `server.in_flight_max = 1`, concurrent commands get 503 with `Retry-After`, and a
/// refused command did not happen.
#[actix_rt::test]
async fn the_in_flight_limit_answers_503_and_refused_commands_did_not_happen() {
    let server = TestServer::start(|c| c.server.in_flight_max = nz(1)).await;
    let api = &server.api;
    let mut refused = Vec::new();
    let mut accepted = Vec::new();
    for round in 0..5 {
        let replies = futures::future::join_all((0..16).map(|i| {
            let id = format!("c-{round}-{i}");
            async move {
                let reply = api
                    .command("customers", &id, &create_customer("Ada", 1))
                    .await;
                (id, reply)
            }
        }))
        .await;
        for (id, reply) in replies {
            if reply.status == 200 {
                reply.ok();
                accepted.push(id);
            } else {
                let problem = reply.overloaded();
                assert_eq!(reply.status, 503, "{problem}");
                assert!(
                    problem["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("in_flight_max")),
                    "{problem}"
                );
                refused.push(id);
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    assert!(
        !refused.is_empty(),
        "no command was refused with one in flight at most"
    );
    for id in &accepted {
        assert_eq!(
            api.get(&format!("/v1/customers/{id}")).await.status,
            200,
            "{id}"
        );
    }
    for id in &refused {
        assert_eq!(
            api.get(&format!("/v1/customers/{id}")).await.status,
            404,
            "{id}"
        );
    }
    // Refusals give back nothing they did not take: one at a time, every command goes through.
    for i in 0..3 {
        let id = format!("c-after-{i}");
        let reply = api
            .try_send(
                Method::POST,
                &format!("/v1/customers/{id}/commands"),
                &[],
                Some(Body::json(&create_customer("Ada", 1))),
            )
            .await
            .unwrap_or_else(|e| panic!("a lone command after the overload gets an answer: {e}"));
        reply.ok();
    }
    server.stop().await;
}

/// With a journal queue of one append, concurrent commands on many aggregates get 503 with
/// `Retry-After` (the whole service is full, not one aggregate); a refused command did not
/// happen, an acknowledged one did.
#[actix_rt::test]
async fn a_full_journal_queue_answers_503_and_refused_commands_did_not_happen() {
    let server = TestServer::start(|c| c.store.queue_capacity = nz(1)).await;
    let api = &server.api;
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let replies = futures::future::join_all((0..32).map(|i| {
            let id = format!("c-{round}-{i}");
            async move {
                let reply = api
                    .command("customers", &id, &create_customer("Ada", 1))
                    .await;
                (id, reply)
            }
        }))
        .await;
        for (id, reply) in replies {
            if reply.status == 200 {
                reply.ok();
                accepted.push(id);
            } else {
                let problem = reply.overloaded();
                assert_eq!(
                    reply.status, 503,
                    "a full journal is the service's: {problem}"
                );
                refused.push(id);
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    assert!(
        !refused.is_empty(),
        "no command was refused with a journal queue of one"
    );
    for id in &accepted {
        assert_eq!(
            api.get(&format!("/v1/customers/{id}")).await.status,
            200,
            "{id}"
        );
    }
    for id in &refused {
        assert_eq!(
            api.get(&format!("/v1/customers/{id}")).await.status,
            404,
            "{id}"
        );
    }
    let (log, head) = api.global_log(100).await;
    assert_eq!(log.len(), accepted.len());
    assert_eq!(head, u64::try_from(accepted.len()).expect("a count fits"));
    server.stop().await;
}

/// The runtime's limits through HTTP: a command over `runtime.command_bytes_max` is a 413, an
/// event over `runtime.event_bytes_max` a 400, both naming the limit; with
/// `runtime.live_actors_max = 2`, ten aggregates are still served (by evicting actors).
#[actix_rt::test]
async fn runtime_limits_answer_with_their_status() {
    let name = "N".repeat(100);
    let server = TestServer::start(|c| c.runtime.command_bytes_max = nz(64)).await;
    let problem = server
        .api
        .command("customers", "c-1", &create_customer(&name, 1))
        .await
        .problem_of(413, "payload-too-large");
    assert_eq!(problem["limit"], 64, "{problem}");
    assert_eq!(server.api.get("/v1/customers/c-1").await.status, 404);
    server.stop().await;

    let server = TestServer::start(|c| c.runtime.event_bytes_max = nz(64)).await;
    let problem = server
        .api
        .command("customers", "c-1", &create_customer(&name, 1))
        .await
        .problem_of(400, "bad-request");
    assert_eq!(problem["limit"], 64, "{problem}");
    assert_eq!(server.api.get("/v1/customers/c-1").await.status, 404);
    server.api.create_customer("c-1", "Ada", 1).await;
    server.stop().await;

    let server = TestServer::start_admin(|c| c.runtime.live_actors_max = nz(2)).await;
    let api = &server.api;
    for round in 0..2 {
        for i in 0..10 {
            let id = format!("c-{i}");
            if round == 0 {
                api.create_customer(&id, "Ada", 100).await;
            } else {
                let reply = api.command("customers", &id, &reserve("o-1", 1)).await.ok();
                assert_eq!(reply["version"], 2, "{id} rehydrated from its events");
            }
        }
    }
    let metrics = api.get("/metrics").await.text();
    let evictions = metrics
        .lines()
        .find_map(|l| l.strip_prefix("annals_evictions_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("annals_evictions_total:\n{metrics}"));
    assert!(evictions >= 8, "the live-actor cap evicts: {evictions}");
    let live = metrics
        .lines()
        .find_map(|l| l.strip_prefix("annals_live_actors "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("annals_live_actors:\n{metrics}"));
    assert!(live <= 2 * 3, "at most the cap per aggregate type: {live}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The live feed
// ---------------------------------------------------------------------------------------------

/// Live events as they are committed (`id:` = position, `data:` = the envelope); a client that
/// reconnects with `Last-Event-ID` (or `?after=`) gets exactly what it missed, then live ones.
#[actix_rt::test]
async fn live_feed_resumes_without_gap_or_duplicate() {
    let server = TestServer::start(|_| {}).await;
    let api = &server.api;
    let mut feed = api.live("/v1/events/live", &[]).await;
    assert!(
        matches!(feed.next(Duration::from_millis(200)).await, Next::Quiet),
        "an empty log sends nothing"
    );
    assert_eq!(
        feed.retry,
        Some(1000),
        "the feed tells clients when to reconnect"
    );

    let mut written = Vec::new();
    for i in 1..=3 {
        let reply = api.create_customer(&format!("c-{i}"), "Ada", 1).await;
        written.extend(events_of(&reply));
    }
    let received = feed.events(3).await;
    for (event, expected) in received.iter().zip(&written) {
        assert_eq!(event.position(), u64_of(&expected["position"], "position"));
        assert_eq!(&event.json(), expected, "data is the envelope");
    }
    assert_eq!(
        received
            .iter()
            .map(http_support::SseEvent::position)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    drop(feed);

    // Missed while disconnected.
    for i in 4..=6 {
        let reply = api.create_customer(&format!("c-{i}"), "Ada", 1).await;
        written.extend(events_of(&reply));
    }
    let mut feed = api.live("/v1/events/live", &[("Last-Event-ID", "3")]).await;
    let resumed = feed.events(3).await;
    let positions: Vec<u64> = resumed
        .iter()
        .map(http_support::SseEvent::position)
        .collect();
    assert_eq!(positions, [4, 5, 6], "exactly the missed events");
    for (event, expected) in resumed.iter().zip(&written[3..]) {
        assert_eq!(&event.json(), expected);
    }
    let reply = api.create_customer("c-7", "Ada", 1).await;
    written.extend(events_of(&reply));
    let live = feed.event().await;
    assert_eq!(live.position(), 7);
    assert_eq!(live.json(), written[6]);
    assert!(
        matches!(feed.next(Duration::from_millis(300)).await, Next::Quiet),
        "no duplicate follows"
    );
    drop(feed);

    let mut feed = api.live("/v1/events/live?after=5", &[]).await;
    let positions: Vec<u64> = feed
        .events(2)
        .await
        .iter()
        .map(http_support::SseEvent::position)
        .collect();
    assert_eq!(positions, [6, 7]);
    assert!(matches!(
        feed.next(Duration::from_millis(200)).await,
        Next::Quiet
    ));
    drop(feed);

    let mut feed = api
        .live("/v1/events/live?after=1", &[("Last-Event-ID", "6")])
        .await;
    assert_eq!(
        feed.event().await.position(),
        7,
        "Last-Event-ID wins over after"
    );
    assert!(matches!(
        feed.next(Duration::from_millis(200)).await,
        Next::Quiet
    ));
    drop(feed);

    let mut feed = api.live("/v1/events/live?after=0", &[]).await;
    let all: Vec<Value> = feed
        .events(7)
        .await
        .iter()
        .map(http_support::SseEvent::json)
        .collect();
    assert_eq!(all, written, "after=0 replays the whole log");

    // Concurrent writers, committed in batches: the feed follows the log's order exactly.
    let replies = futures::future::join_all(
        (0..30).map(|i| async move { api.create_customer(&format!("d-{i}"), "Ada", 1).await }),
    )
    .await;
    let live: Vec<Value> = feed
        .events(30)
        .await
        .iter()
        .map(|e| {
            let event = e.json();
            assert_eq!(event["position"], e.position(), "id: is the position");
            event
        })
        .collect();
    let (log, head) = api.global_log(100).await;
    assert_eq!(head, 37);
    assert_eq!(live, log[7..], "the feed is the log, in order, without gap");
    let mut acknowledged: Vec<Value> = replies.iter().flat_map(events_of).collect();
    acknowledged.sort_by_key(|e| e["position"].as_u64());
    assert_eq!(
        acknowledged, live,
        "every acknowledged event is in the feed once"
    );
    assert!(matches!(
        feed.next(Duration::from_millis(200)).await,
        Next::Quiet
    ));
    drop(feed);
    server.stop().await;
}

/// Live feeds are bounded by `server.sse_connections_max` (503 with `Retry-After` beyond it),
/// send keep-alive comments, and end when the server stops (so stopping does not hang).
#[actix_rt::test]
async fn live_feeds_are_bounded_and_end_when_the_server_stops() {
    let server = TestServer::start(|c| {
        c.server.sse_connections_max = nz(1);
        c.server.sse_keepalive = Duration::from_millis(100);
    })
    .await;
    let api = server.api.clone();
    let mut feed = api.live("/v1/events/live", &[]).await;
    let second = api.get("/v1/events/live").await;
    second.overloaded();
    assert_eq!(second.status, 503);
    assert!(
        matches!(feed.next(Duration::from_millis(400)).await, Next::Quiet),
        "keep-alive comments are not events"
    );
    api.create_customer("c-1", "Ada", 1).await;
    assert_eq!(feed.event().await.position(), 1);

    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an open live feed does not hold up the stop ({:?})",
        started.elapsed()
    );
    assert!(
        matches!(feed.next(Duration::from_secs(5)).await, Next::End),
        "the feed ends when the server stops"
    );
}

// ---------------------------------------------------------------------------------------------
// Projections
// ---------------------------------------------------------------------------------------------

/// `GET /v1/projections` lists every subscriber with its lag; a rebuild is 202 and the view is
/// answered during it and equal after; the parked list of a healthy projection is empty, and
/// retrying a position that is not parked is a 404.
#[actix_rt::test]
async fn projections_report_lag_and_rebuild_without_downtime() {
    let server = TestServer::start(|_| {}).await;
    let api = &server.api;
    let listed = api.get("/v1/projections").await.ok();
    let names: BTreeSet<&str> = listed["subscribers"]
        .as_array()
        .expect("a list of subscribers")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for name in ["customer-summaries", "valuable-customers", "order-credit"] {
        assert!(names.contains(name), "{name} is listed: {listed}");
    }

    // Some history for the views.
    for i in 0..6 {
        api.create_customer(&format!("c-{i}"), "Ada", 100_000).await;
        api.create_order(&format!("o-{i}"), &format!("c-{i}"), 1000 + i)
            .await;
    }
    for i in 0..6 {
        api.order_in(&format!("o-{i}"), "Approved").await;
    }
    let shipped = api
        .command("orders", "o-0", &json!({"type": "ShipOrder"}))
        .await
        .ok();
    let position = u64_of(&shipped["position"], "position");
    let summary_path = format!("/v1/views/customers/c-0?min_position={position}");
    let valuable_path = format!("/v1/views/valuable-customers?min_position={position}");
    let summary = api.get(&summary_path).await.ok();
    let valuable = api.get(&valuable_path).await.ok();
    assert_eq!(summary["orders"]["shipped"], 1);
    assert_eq!(valuable["customers"].as_array().map(Vec::len), Some(1));

    // Lag: once quiet, every subscriber reaches the head.
    let deadline = Deadline::new("every subscriber to reach the head");
    loop {
        let listed = api.get("/v1/projections").await.ok();
        let subscribers = listed["subscribers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for s in &subscribers {
            for member in ["checkpoint", "head", "lag_events", "lag_seconds"] {
                assert!(s[member].is_number(), "{member} of {s}");
            }
            assert!(
                ["live", "catching_up", "rebuilding"]
                    .contains(&s["status"].as_str().unwrap_or_default()),
                "{s}"
            );
            assert_eq!(s["reason"], Value::Null, "{s}");
        }
        let caught_up = subscribers
            .iter()
            .all(|s| s["lag_events"] == 0 && s["checkpoint"] == s["head"] && s["status"] == "live");
        if caught_up && subscribers.len() >= 3 {
            break;
        }
        deadline.pause(&listed.to_string()).await;
    }

    // Rebuild: 202, the view keeps answering the same, and it is the same after the swap.
    let accepted = api
        .post_empty("/v1/projections/customer-summaries/rebuild")
        .await;
    let accepted = accepted.expect_status(202);
    assert_eq!(accepted["name"], "customer-summaries");
    assert_eq!(accepted["status"], "rebuilding");
    let deadline = Deadline::new("the rebuild of customer-summaries to finish");
    loop {
        assert_eq!(
            api.get(&summary_path).await.ok(),
            summary,
            "answered during the rebuild"
        );
        let listed = api.get("/v1/projections").await.ok();
        let rebuilding = listed["subscribers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .any(|s| s["name"] == "customer-summaries#rebuild");
        if !rebuilding {
            break;
        }
        deadline.pause(&listed.to_string()).await;
    }
    assert_eq!(
        api.get(&summary_path).await.ok(),
        summary,
        "equal after the rebuild"
    );
    let orders = api
        .get(&format!(
            "/v1/views/customers/c-0/orders?min_position={position}"
        ))
        .await
        .ok();
    assert_eq!(orders["orders"][0]["status"], "Shipped");
    let after = api.create_customer("c-late", "Late", 1).await;
    let late = api
        .get(&format!(
            "/v1/views/customers/c-late?min_position={}",
            u64_of(&after["position"], "position")
        ))
        .await
        .ok();
    assert_eq!(
        late["name"], "Late",
        "the rebuilt projection follows new events"
    );

    let accepted = api
        .post_empty("/v1/projections/valuable-customers/rebuild")
        .await;
    let again = api
        .post_empty("/v1/projections/valuable-customers/rebuild")
        .await;
    accepted.expect_status(202);
    if again.status != 202 {
        again.problem_of(409, "conflict");
    }
    let deadline = Deadline::new("the rebuild of valuable-customers to finish");
    loop {
        assert_eq!(api.get(&valuable_path).await.ok(), valuable);
        let listed = api.get("/v1/projections").await.ok();
        if !listed.to_string().contains("valuable-customers#rebuild") {
            break;
        }
        deadline.pause(&listed.to_string()).await;
    }
    assert_eq!(api.get(&valuable_path).await.ok(), valuable);

    // Parked events: none, and a position that is not parked cannot be retried.
    for name in ["customer-summaries", "valuable-customers", "order-credit"] {
        let parked = api
            .get(&format!("/v1/projections/{name}/parked"))
            .await
            .ok();
        assert_eq!(parked, json!({"name": name, "parked": []}));
        api.post_empty(&format!("/v1/projections/{name}/parked/1/retry"))
            .await
            .problem_of(404, "not-found");
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/// `/livez`, `/readyz`, `/metrics` after commands of each outcome, and request ids.
#[actix_rt::test]
async fn health_metrics_and_request_ids() {
    let server = TestServer::start_admin(|_| {}).await;
    let api = &server.api;
    assert_eq!(api.get("/livez").await.ok(), json!({"status": "live"}));
    let ready = api.get("/readyz").await.ok();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["head_position"], 0);
    assert!(ready["disk_free_bytes"].is_number(), "{ready}");

    api.create_customer("c-1", "Ada", 100).await;
    api.create_customer("c-2", "Grace", 100).await;
    api.command("customers", "c-1", &create_customer("Ada", 100))
        .await
        .problem(422);
    api.command("customers", "c-1", &json!({"type": "Explode"}))
        .await
        .problem(400);
    api.command_with(
        "customers",
        "c-1",
        &reserve("o-1", 1),
        &[("If-Match", "\"9\"")],
    )
    .await
    .problem(409);
    api.command("orders", "o-1", &json!({"type": "ShipOrder"}))
        .await
        .problem(422);
    assert_eq!(api.get("/readyz").await.ok()["head_position"], 2);

    let metrics = api.get("/metrics").await;
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = metrics.text();
    for line in [
        "annals_commands_total{aggregate=\"Customer\",command=\"CreateCustomer\",outcome=\"ok\"} 2",
        "annals_commands_total{aggregate=\"Customer\",command=\"CreateCustomer\",outcome=\"rejected\"} 1",
        "annals_commands_total{aggregate=\"Customer\",command=\"invalid\",outcome=\"invalid\"} 1",
        "annals_commands_total{aggregate=\"Customer\",command=\"ReserveCredit\",outcome=\"conflict\"} 1",
        "annals_commands_total{aggregate=\"Order\",command=\"ShipOrder\",outcome=\"rejected\"} 1",
        "annals_command_duration_seconds_count{aggregate=\"Customer\"} 5",
        "annals_journal_head_position 2",
        "# TYPE annals_commands_total counter",
        "# TYPE annals_command_duration_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "/metrics has the line {line:?}:\n{text}"
        );
    }
    for prefix in [
        "annals_journal_fsyncs_total ",
        "annals_live_actors ",
        "annals_subscriber_lag_events{subscriber=\"customer-summaries\"} ",
        "annals_subscriber_lag_seconds{subscriber=\"order-credit\"} ",
        "annals_http_responses_total{class=\"4xx\"} ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "/metrics has {prefix:?}:\n{text}"
        );
    }

    // Request ids: echoed when plain, made up otherwise, on errors too.
    let echoed = api
        .get_with("/livez", &[("X-Request-Id", "req-123.abc_1:2")])
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("req-123.abc_1:2"));
    let echoed = api
        .get_with("/v1/customers/nobody", &[("X-Request-Id", "req-404")])
        .await;
    assert_eq!(echoed.status, 404);
    assert_eq!(echoed.header("x-request-id"), Some("req-404"));
    let made_up = api.get("/livez").await;
    let made_up_id = made_up
        .header("x-request-id")
        .expect("a request id is made up");
    assert_eq!(made_up_id.len(), 36, "{made_up_id}");
    let long = "r".repeat(65);
    let replaced = api.get_with("/livez", &[("X-Request-Id", &long)]).await;
    let replaced_id = replaced.header("x-request-id").expect("a request id");
    assert_ne!(replaced_id, long, "a too-long request id is replaced");
    let replaced = api.get_with("/livez", &[("X-Request-Id", "a/b")]).await;
    assert_ne!(replaced.header("x-request-id"), Some("a/b"));
    server.stop().await;
}

/// `/readyz` is 503 with `Retry-After`, naming the failing check, when the data directory's
/// disk has less than `store.disk_free_bytes_min` free; `/livez` stays 200; commands are
/// refused with 507 and `Retry-After` before anything is written, while reads go on.
#[actix_rt::test]
async fn readyz_reports_a_full_disk() {
    let server = TestServer::start(|c| c.store.disk_free_bytes_min = u64::MAX).await;
    let api = &server.api;
    let refused = api
        .command("accounts", "a-1", &json!({"type": "Deposit", "amount": 5}))
        .await;
    assert_eq!(refused.status, 507, "{}", refused.text());
    assert!(refused.header("retry-after").is_some());
    let problem = refused.problem_of(507, "insufficient-storage");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("disk_free_bytes_min")),
        "{problem}"
    );
    assert_eq!(
        api.get("/v1/accounts/a-1").await.status,
        404,
        "nothing was written"
    );
    let reply = api.get("/readyz").await;
    let problem = reply.overloaded();
    assert_eq!(reply.status, 503);
    let checks = problem["checks"].as_array().cloned().unwrap_or_default();
    assert_eq!(checks.len(), 1, "{problem}");
    assert!(
        checks[0]
            .as_str()
            .is_some_and(|c| c.contains("disk_free_bytes_min")),
        "{problem}"
    );
    assert_eq!(api.get("/livez").await.ok(), json!({"status": "live"}));
    server.stop().await;
}

/// A field the command does not have is a 400 naming it, never silently dropped: a typo'd
/// `curency` must not create an order in the default currency.
#[actix_rt::test]
async fn a_command_with_an_unknown_field_is_400_and_does_nothing() {
    let server = TestServer::start(|_| {}).await;
    let api = &server.api;
    api.create_customer("c-1", "Ada", 100_000).await;
    let typo =
        json!({"type": "CreateOrder", "customer_id": "c-1", "total": 5000, "curency": "USD"});
    let problem = api
        .command("orders", "o-1", &typo)
        .await
        .problem_of(400, "bad-request");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("curency")),
        "{problem}"
    );
    assert_eq!(
        api.get("/v1/orders/o-1").await.status,
        404,
        "nothing was created"
    );
    let extra = json!({"type": "ShipOrder", "express": true});
    api.command("orders", "o-1", &extra)
        .await
        .problem_of(400, "bad-request");
    server.stop().await;
}

/// Read-your-writes never answers stale data: with `server.wait_max_ms = 0`, a view query at a
/// command's position is either 200 with the write in it, or 503 with `Retry-After` and the
/// position the view had reached.
#[actix_rt::test]
async fn min_position_never_answers_stale_data() {
    let server = TestServer::start(|c| c.server.wait_max = Duration::ZERO).await;
    let api = &server.api;
    let mut answers = BTreeMap::<u16, usize>::new();
    for i in 0..20 {
        let id = format!("c-{i}");
        let created = api.create_customer(&id, "Ada", 100).await;
        let position = u64_of(&created["position"], "position");
        let reply = api
            .get(&format!("/v1/views/customers/{id}?min_position={position}"))
            .await;
        *answers.entry(reply.status).or_default() += 1;
        if reply.status == 200 {
            assert_eq!(reply.ok()["name"], "Ada", "a 200 includes the write");
        } else {
            let problem = reply.overloaded();
            assert_eq!(reply.status, 503);
            let reached = u64_of(&problem["reached_position"], "reached_position");
            assert!(reached < position, "{problem}");
        }
    }
    eprintln!("answers with wait_max_ms = 0: {answers:?}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The process: restart, graceful shutdown, configuration
// ---------------------------------------------------------------------------------------------

/// The pieces of a server's data that a restart must keep.
async fn snapshot_of(api: &Api) -> Vec<Value> {
    let (log, head) = api.global_log(7).await;
    let mut parts = vec![json!(log), json!(head)];
    for path in [
        "/v1/customers/c-1".to_owned(),
        "/v1/orders/o-1".to_owned(),
        "/v1/orders/o-2".to_owned(),
        "/v1/orders/o-2?version=1".to_owned(),
        format!("/v1/views/customers/c-1?min_position={head}"),
        format!("/v1/views/customers/c-1/orders?min_position={head}"),
        format!(
            "/v1/views/valuable-customers?created_after=2000-01-01T00:00:00Z&min_position={head}"
        ),
    ] {
        parts.push(api.get(&path).await.ok());
    }
    parts.push(json!(api.history("customers", "c-1", 3).await));
    parts
}

/// Stopped with SIGTERM (exit 0) and started again on the same data directory, the server
/// has the same state, history, log and views, and still knows its idempotency keys.
#[actix_rt::test]
async fn restart_on_the_same_data_directory_keeps_everything() {
    let dir = tempfile::tempdir().expect("a data directory");
    let process = ServeProcess::start(dir.path(), &[], &[]);
    let api = Api::new(&process.url);
    api.ready().await;
    api.create_customer("c-1", "Ada", 150_000).await;
    api.create_order("o-1", "c-1", 5000).await;
    api.create_order("o-2", "c-1", 900_000).await;
    api.order_in("o-1", "Approved").await;
    api.order_in("o-2", "Rejected").await;
    let key = [("Idempotency-Key", "ship-o-1")];
    let ship = json!({"type": "ShipOrder"});
    let shipped = api.command_with("orders", "o-1", &ship, &key).await.ok();
    let before = snapshot_of(&api).await;
    let (status, _) = process_terminate(process).await;
    assert!(status.success(), "SIGTERM exits 0, not {status}");
    assert!(
        api.try_send(Method::GET, "/livez", &[], None)
            .await
            .is_err(),
        "the old process no longer answers"
    );

    let process = ServeProcess::start(dir.path(), &[], &[]);
    let api = Api::new(&process.url);
    api.ready().await;
    let after = snapshot_of(&api).await;
    assert_eq!(
        after, before,
        "state, history, log and views survive the restart"
    );
    let replay = api.command_with("orders", "o-1", &ship, &key).await;
    assert!(replayed(&replay), "idempotency keys survive the restart");
    assert_eq!(replay.ok(), shipped);
    let more = api.create_order("o-3", "c-1", 1000).await;
    let head = u64_of(&before[1], "head");
    assert_eq!(
        more["position"],
        head + 1,
        "positions continue after the restart"
    );
    api.order_in("o-3", "Approved").await;
    let (status, _) = process_terminate(process).await;
    assert!(status.success(), "SIGTERM exits 0, not {status}");
}

/// What one command sent during the shutdown test came to.
#[derive(Debug)]
enum Sent {
    /// 200: the reply.
    Acknowledged(Value),
    /// An HTTP error answer: status and body.
    Refused(u16, Value),
    /// No answer (connection refused or closed): the outcome is unknown.
    Unknown,
}

/// SIGTERM while commands are in flight: the process stops taking requests, exits 0, and
/// after a restart every command that got a 200 is stored exactly as acknowledged, and
/// nothing is half-applied.
#[actix_rt::test]
async fn sigterm_with_commands_in_flight_keeps_every_acknowledged_command() {
    const CUSTOMERS: usize = 4;
    const CLIENTS: usize = 12;
    /// Clients stop sending after this long even if the server keeps answering.
    const SENDING_MAX: Duration = Duration::from_secs(12);
    /// Requests sent this long after SIGTERM must not be executed any more.
    const STOP_GRACE: Duration = Duration::from_secs(1);
    let dir = tempfile::tempdir().expect("a data directory");
    // ReserveCredit is process-only: the clients have a token with the admin scope.
    let tokens = [("ANNALS_AUTH_TOKENS", ADMIN_TOKEN)];
    let process = ServeProcess::start(dir.path(), &[], &tokens);
    let api = Api::new(&process.url).with_token(ADMIN_TOKEN);
    api.ready().await;
    for c in 0..CUSTOMERS {
        api.create_customer(&format!("c-{c}"), "Ada", 1_000_000_000)
            .await;
    }

    // key -> (when it was sent, what came of it)
    let sent: Rc<RefCell<BTreeMap<String, (Instant, Sent)>>> = Rc::default();
    let acknowledged = Rc::new(std::cell::Cell::new(0usize));
    // When SIGTERM was sent, and how many requests sent before it were answered 200 after it.
    let signal_at: Rc<std::cell::Cell<Option<Instant>>> = Rc::default();
    let finished_in_flight = Rc::new(std::cell::Cell::new(0usize));
    let started = Instant::now();
    let clients = (0..CLIENTS).map(|client| {
        let api = api.clone();
        let sent = Rc::clone(&sent);
        let acknowledged = Rc::clone(&acknowledged);
        let signal_at = Rc::clone(&signal_at);
        let finished_in_flight = Rc::clone(&finished_in_flight);
        async move {
            for n in 0.. {
                if started.elapsed() > SENDING_MAX {
                    return;
                }
                let key = format!("k-{client}-{n}");
                let customer = format!("c-{}", client % CUSTOMERS);
                let path = format!("/v1/customers/{customer}/commands");
                let at = Instant::now();
                let result = api
                    .try_send(
                        Method::POST,
                        &path,
                        &[("Idempotency-Key", &key)],
                        Some(Body::json(&reserve(&key, 1))),
                    )
                    .await;
                let (outcome, go_on) = match result {
                    Ok(reply) if reply.status == 200 => {
                        acknowledged.set(acknowledged.get() + 1);
                        if signal_at.get().is_some_and(|signal| at < signal) {
                            finished_in_flight.set(finished_in_flight.get() + 1);
                        }
                        (Sent::Acknowledged(reply.ok()), true)
                    }
                    Ok(reply) => (Sent::Refused(reply.status, reply.json()), false),
                    Err(_) => (Sent::Unknown, false),
                };
                sent.borrow_mut().insert(key, (at, outcome));
                if !go_on {
                    return;
                }
            }
        }
    });
    let clients = futures::future::join_all(clients);
    let signal = async {
        let deadline = Deadline::new("40 acknowledged commands before SIGTERM");
        while acknowledged.get() < 40 {
            deadline.pause("").await;
        }
        let signalled = Instant::now();
        signal_at.set(Some(signalled));
        let status = actix_rt::task::spawn_blocking(move || process.terminate())
            .await
            .expect("terminate runs");
        (signalled, signalled.elapsed(), status)
    };
    let (_, (signalled, stopping, status)) = futures::future::join(clients, signal).await;
    assert!(status.success(), "SIGTERM exits 0, not {status}");

    let sent = Rc::try_unwrap(sent)
        .expect("the clients are done")
        .into_inner();
    let acked: BTreeMap<&str, &Value> = sent
        .iter()
        .filter_map(|(key, (_, s))| match s {
            Sent::Acknowledged(reply) => Some((key.as_str(), reply)),
            _ => None,
        })
        .collect();
    assert!(acked.len() >= 40, "{} acknowledged", acked.len());
    let unknown = sent
        .values()
        .filter(|(_, s)| matches!(s, Sent::Unknown))
        .count();
    eprintln!(
        "SIGTERM after {:?}: {} commands sent, {} acknowledged ({} of them sent before the \
         signal and answered after it), {unknown} without an answer; the process exited \
         {stopping:?} after the signal",
        signalled - started,
        sent.len(),
        acked.len(),
        finished_in_flight.get()
    );
    for (key, (_, outcome)) in &sent {
        if let Sent::Refused(status, body) = outcome {
            assert_eq!(
                *status, 503,
                "{key}: only unavailability while stopping: {body}"
            );
        }
    }
    let late: Vec<&str> = sent
        .iter()
        .filter(|(_, (at, s))| matches!(s, Sent::Acknowledged(_)) && *at > signalled + STOP_GRACE)
        .map(|(key, _)| key.as_str())
        .collect();

    // ReserveCredit is process-only: the clients have a token with the admin scope.
    let tokens = [("ANNALS_AUTH_TOKENS", ADMIN_TOKEN)];
    let process = ServeProcess::start(dir.path(), &[], &tokens);
    let api = Api::new(&process.url).with_token(ADMIN_TOKEN);
    api.ready().await;
    let mut stored: BTreeMap<String, Value> = BTreeMap::new();
    for c in 0..CUSTOMERS {
        let history = api.history("customers", &format!("c-{c}"), 500).await;
        assert_contiguous(&history, &format!("c-{c}"));
        assert_eq!(history[0]["type"], "CustomerCreated");
        for event in &history[1..] {
            let key = event["command_id"]
                .as_str()
                .expect("every reservation has its key");
            assert_eq!(event["data"]["order_id"], key, "{event}");
            let previous = stored.insert(key.to_owned(), event.clone());
            assert!(previous.is_none(), "{key} applied twice");
        }
    }
    for (key, reply) in &acked {
        let event = stored
            .get(*key)
            .unwrap_or_else(|| panic!("{key} was acknowledged but is not stored: {reply}"));
        assert_eq!(
            event,
            &events_of(reply)[0],
            "{key} is stored as acknowledged"
        );
    }
    for key in stored.keys() {
        match sent.get(key) {
            Some((_, Sent::Acknowledged(_) | Sent::Unknown)) => {}
            Some((_, Sent::Refused(status, body)))
                if body["type"] == "/docs#problem-outcome-unknown" =>
            {
                assert_eq!(*status, 503);
            }
            other => panic!("{key} is stored but was {other:?}"),
        }
    }
    let unknown_stored = sent
        .iter()
        .filter(|(key, (_, s))| matches!(s, Sent::Unknown) && stored.contains_key(*key))
        .count();
    eprintln!("{unknown_stored} of the commands without an answer were executed");
    let (log, head) = api.global_log(1000).await;
    let positions: Vec<u64> = log
        .iter()
        .map(|e| u64_of(&e["position"], "position"))
        .collect();
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "the log has no gap"
    );
    assert_eq!(log.len(), stored.len() + CUSTOMERS);
    let (status, _) = process_terminate(process).await;
    assert!(status.success(), "SIGTERM exits 0, not {status}");

    // Last, so that the durability checks above run whatever this says.
    assert!(
        late.is_empty(),
        "after SIGTERM the server kept executing new requests on open connections: {} \
         commands sent more than {STOP_GRACE:?} after the signal got a 200 (the process \
         took {stopping:?} to exit, {} acknowledged in all), e.g. {:?}",
        late.len(),
        acked.len(),
        late.iter().take(3).collect::<Vec<_>>()
    );
}

/// Runs the `annals` binary with `args` and `env` (no other `ANNALS_*` variable) and waits
/// for it, at most 60 s.
fn run_annals(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(annals_binary());
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ANNALS_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("annals runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child
        .try_wait()
        .expect("the child can be waited for")
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("annals {args:?} did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the output of annals")
}

/// `annals serve` with `extra` arguments on a data directory that does not exist yet.
fn serve_with(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let data_dir = data_dir.to_str().expect("a UTF-8 temporary path");
    let mut args = vec!["serve", "--addr", "127.0.0.1:0", "--data-dir", data_dir];
    args.extend_from_slice(extra);
    run_annals(&args, env)
}

/// A bad configuration value (flag or environment), an unknown key or a missing file makes
/// `annals serve` exit 2 with a message naming the key, before it listens or opens the store.
#[test]
fn configuration_errors_exit_2_before_serving() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().expect("a UTF-8 temporary path");
    let check = |args: &[&str], env: &[(&str, &str)], mentions: &[&str]| {
        let output = serve_with(&data, args, env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "annals serve {args:?} {env:?} exits 2: {stderr}"
        );
        for mention in mentions {
            assert!(
                stderr.contains(mention),
                "{args:?} {env:?}: the message names {mention:?}: {stderr}"
            );
        }
        assert!(
            !stderr.contains("listening"),
            "{args:?}: nothing listened: {stderr}"
        );
        assert!(
            !data.exists(),
            "{args:?}: the store was not opened: {stderr}"
        );
    };
    check(
        &["--set", "server.workers=abc"],
        &[],
        &["server.workers", "abc"],
    );
    let env = [("ANNALS_STORE_DURABILITY", "fast")];
    check(
        &[],
        &env,
        &["store.durability", "ANNALS_STORE_DURABILITY", "fast"],
    );
    let misspelt = ["--set", "server.adress=127.0.0.1:1"];
    check(&misspelt, &[], &["server.adress", "server.addr"]);
    check(
        &["--set", "server.body_bytes_max=0"],
        &[],
        &["server.body_bytes_max"],
    );
    check(&["--config", missing], &[], &["missing.toml"]);
}

/// `annals config` prints the effective configuration with its sources, tokens redacted.
#[test]
fn annals_config_prints_the_effective_configuration_with_secrets_redacted() {
    let token = "very-secret-token-0123456789";
    let output = run_annals(
        &[
            "config",
            "--set",
            "server.workers=3",
            "--addr",
            "127.0.0.1:9999",
        ],
        &[("ANNALS_AUTH_TOKENS", token)],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "annals config succeeds: {stderr}");
    assert!(
        !stdout.contains(token),
        "the token is not printed:\n{stdout}"
    );
    assert!(
        !stderr.contains(token),
        "the token is not logged:\n{stderr}"
    );
    assert!(
        stdout.contains("<redacted>"),
        "the token is shown redacted:\n{stdout}"
    );
    for section in [
        "[server]",
        "[store]",
        "[runtime]",
        "[domain]",
        "[auth]",
        "[log]",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim() == section),
            "{section}:\n{stdout}"
        );
    }
    let workers = stdout
        .lines()
        .find(|l| l.starts_with("workers = "))
        .unwrap_or_else(|| panic!("the workers line:\n{stdout}"));
    assert!(
        workers.starts_with("workers = 3") && workers.contains("--set"),
        "{workers}"
    );
    let addr = stdout
        .lines()
        .find(|l| l.starts_with("addr = "))
        .unwrap_or_else(|| panic!("the addr line:\n{stdout}"));
    assert!(
        addr.starts_with("addr = \"127.0.0.1:9999\"") && addr.contains("--addr"),
        "{addr}"
    );
    assert!(
        stdout.contains("ANNALS_AUTH_TOKENS"),
        "the token's source is named:\n{stdout}"
    );
}

/// With `log.format = json`, every log line is a JSON object, the start-up line names the
/// address and the data directory, and request spans carry the request id.
#[actix_rt::test]
async fn json_logs_name_the_address_and_carry_request_ids() {
    let dir = tempfile::tempdir().expect("a data directory");
    let env = [
        ("ANNALS_LOG_FORMAT", "json"),
        ("ANNALS_LOG_LEVEL", "info,annals_app=debug"),
    ];
    let process = ServeProcess::start(dir.path(), &[], &env);
    let api = Api::new(&process.url);
    api.ready().await;
    let reply = api
        .get_with("/v1/customers/nobody", &[("X-Request-Id", "req-json-1")])
        .await;
    assert_eq!(reply.status, 404);
    let deadline = Deadline::new("a log line with the request id");
    while !process.log().iter().any(|l| l.contains("req-json-1")) {
        deadline.pause(&format!("{:?}", process.log())).await;
    }
    let (status, log) = process_terminate(process).await;
    assert!(status.success(), "SIGTERM exits 0, not {status}");
    let lines: Vec<Value> = log
        .iter()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a JSON log line ({e}): {line}"))
        })
        .collect();
    let data_dir = dir.path().to_str().expect("a UTF-8 temporary path");
    assert!(
        lines.iter().any(|l| {
            let text = l.to_string();
            text.contains(&process_url_of(&log)) && text.contains(data_dir)
        }),
        "one line names the address and the data directory: {log:?}"
    );
    let request_line = lines
        .iter()
        .find(|l| l.to_string().contains("req-json-1"))
        .expect("a line of the request");
    assert!(
        request_line.to_string().contains("/v1/customers/nobody"),
        "the request's span names its path: {request_line}"
    );
}

/// Sends SIGTERM off the async thread; returns the exit status and the log.
async fn process_terminate(process: ServeProcess) -> (std::process::ExitStatus, Vec<String>) {
    actix_rt::task::spawn_blocking(move || {
        let log = process.log();
        let status = process.terminate();
        (status, log)
    })
    .await
    .expect("terminate runs")
}

/// The `http://…` address in the start-up line of a log.
fn process_url_of(log: &[String]) -> String {
    let line = log
        .iter()
        .find(|l| l.contains("annals listening on http://"))
        .expect("the start-up line");
    let start = line.find("http://").expect("an address");
    line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The web console's page and endpoints
// ---------------------------------------------------------------------------------------------

/// `/console` and its assets are served from the binary, open, with a policy that allows the
/// page's own script and style only; the overview counts what was done; the id search lists a
/// type's ids by prefix, shortest first, and refuses bad input with 400 and an unknown type
/// with 404.
#[actix_rt::test]
async fn the_console_is_served_with_its_overview_and_id_search() {
    let server = TestServer::start(|_| {}).await;
    let api = &server.api;
    for (path, media, marker) in [
        ("/console", "text/html", "/console/console.js"),
        ("/console/console.js", "text/javascript", "data-test"),
        ("/console/console.css", "text/css", "{"),
    ] {
        let reply = api.get(path).await;
        assert_eq!(reply.status, 200, "{path}");
        let content_type = reply.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with(media), "{path}: {content_type}");
        let policy = reply.header("content-security-policy").unwrap_or_default();
        assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
        assert!(reply.text().contains(marker), "{path}");
    }

    for id in ["c-1", "c-10", "c-2", "d-1"] {
        api.create_customer(id, "Ada", 1_000).await;
    }
    api.create_order("o-1", "c-1", 100).await;
    api.order_in("o-1", "Approved").await;

    let ids = |query: &'static str| async move {
        api.get(&format!("/v1/console/aggregates/customers{query}"))
            .await
            .ok()["ids"]
            .clone()
    };
    assert_eq!(ids("?prefix=c-1").await, json!(["c-1", "c-10"]));
    assert_eq!(ids("").await, json!(["c-1", "c-2", "d-1", "c-10"]));
    assert_eq!(ids("?limit=2").await, json!(["c-1", "c-2"]));
    assert_eq!(ids("?prefix=x").await, json!([]));
    let orders = api.get("/v1/console/aggregates/orders?prefix=o").await.ok();
    assert_eq!(orders["ids"], json!(["o-1"]));
    api.get("/v1/console/aggregates/customers?limit=0")
        .await
        .problem(400);
    let long = "x".repeat(257);
    api.get(&format!("/v1/console/aggregates/customers?prefix={long}"))
        .await
        .problem(400);
    api.get("/v1/console/aggregates/customers?colour=red")
        .await
        .problem(400);
    api.get("/v1/console/aggregates/planets").await.problem(404);

    let overview = api.get("/v1/console/overview").await.ok();
    // Four customers and an order over HTTP (the saga's commands are not HTTP commands).
    assert!(
        u64_of(&overview["commands_total"], "commands_total") >= 5,
        "{overview}"
    );
    let journal = &overview["journal"];
    assert_eq!(journal["health"], "ok", "{overview}");
    assert!(
        u64_of(&journal["events_total"], "events_total") >= 7,
        "{overview}"
    );
    assert!(
        u64_of(&journal["fsyncs_total"], "fsyncs_total") >= 1,
        "{overview}"
    );
    assert!(
        overview["disk_free_bytes"].as_u64().is_some_and(|b| b > 0),
        "{overview}"
    );
    let p50 = overview["command_latency_ms"]["p50"].as_f64();
    let p99 = overview["command_latency_ms"]["p99"].as_f64();
    assert!(
        p50.is_some_and(|p| p > 0.0) && p50 <= p99,
        "latency quantiles of the commands just sent: {overview}"
    );
    let names: Vec<&str> = overview["subscribers"]
        .as_array()
        .expect("subscribers")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.contains(&"order-credit"), "{names:?}");
    assert!(
        overview["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{overview}"
    );
    server.stop().await;
}

/// The chain of an order's first event: the saga's steps it caused, in log order, the same
/// from any of them; a bad id is 400, an unknown one 404.
#[actix_rt::test]
async fn an_events_chain_holds_the_sagas_steps() {
    let server = TestServer::start(|_| {}).await;
    let api = &server.api;
    api.create_customer("c-1", "Ada", 10_000).await;
    api.create_order("o-1", "c-1", 100).await;
    api.order_in("o-1", "Approved").await;
    let history = api.history("orders", "o-1", 10).await;
    let created = history[0]["event_id"]
        .as_str()
        .expect("an event id")
        .to_owned();
    let approved = history[1]["event_id"]
        .as_str()
        .expect("an event id")
        .to_owned();
    let types = |chain: &Value| -> Vec<String> {
        chain["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["aggregate"].as_str().unwrap_or(""),
                    e["type"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let expected = [
        "Order:OrderCreated",
        "Customer:CreditReserved",
        "Order:OrderApproved",
    ];
    // The index trails the log by a moment, and so does the saga's cancellation of the
    // decision deadline it set when the order was created (the order is approved).
    let deadline = Deadline::new("the chain to hold the saga's steps and no pending deadline");
    let chain = loop {
        let reply = api.get(&format!("/v1/console/chain/{created}")).await;
        if reply.status == 200
            && types(&reply.json()) == expected
            && reply.json()["deadlines"] == json!([])
        {
            break reply.json();
        }
        deadline
            .pause(&format!("last seen: {} {}", reply.status, reply.text()))
            .await;
    };
    assert_eq!(chain["truncated"], false);
    let positions: Vec<u64> = chain["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["position"].as_u64())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "log order: {positions:?}"
    );
    let from_the_end = api.get(&format!("/v1/console/chain/{approved}")).await.ok();
    assert_eq!(types(&from_the_end), expected);
    assert_eq!(from_the_end["next_after"], Value::Null);
    // Page by page: the same events.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = api
            .get(&format!(
                "/v1/console/chain/{created}?after={after}&limit=1"
            ))
            .await
            .ok();
        paged.extend(types(&page));
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(paged, expected);
    api.get(&format!("/v1/console/chain/{created}?limit=0"))
        .await
        .problem(400);
    api.get("/v1/console/chain/not-an-id").await.problem(400);
    api.get("/v1/console/chain/8f7c2a52-3c1e-4d0b-9e3e-000000000000")
        .await
        .problem(404);
    server.stop().await;
}
