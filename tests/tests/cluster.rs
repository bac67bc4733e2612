//! Several real `annals serve` processes on one PostgreSQL database (schema of its own on the
//! test server; see [`PgSchema`]): what a deployment of several nodes promises.
//!
//! - **A node killed mid-load** (`kill -9`): three nodes, a client sending orders to all three
//!   in turn on purpose (so that nodes hold the same aggregates, and optimistic concurrency in
//!   the database is what keeps them right), one node killed while orders flow; commands it
//!   did not answer are sent again, with the same idempotency key, to another node. Then: every
//!   acknowledged command's events are in the log exactly once at the positions its reply named,
//!   no order was created twice, versions are contiguous, both survivors read the same log,
//!   every order is decided by the saga, the customer summaries agree with the log, and the
//!   projections and the saga run on the survivors.
//! - **A paused owner** (`SIGSTOP` past its lease): the other node takes the saga and the
//!   projections over and decides new orders; when the paused node wakes up, its next commit of
//!   any of them is refused by the fence and it stands by — no order is decided twice.
//!
//! `ANNALS_CLUSTER_ORDERS` sets how many orders the first test sends (default 90).

// The HTTP tests' shared helpers; this file uses a few of them.
#[allow(dead_code)]
mod http_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use annals_tests::{PgSchema, ServeProcess};
use awc::http::Method;
use serde_json::{json, Value};

use http_support::{Api, Body};

/// Starts a node on `schema` named `node`, with a short lease so that takeovers are quick.
fn start_node(schema: &PgSchema, node: &str, dir: &Path) -> ServeProcess {
    let options = &schema.options;
    ServeProcess::start(
        dir,
        &[
            "--set",
            "store.backend=postgres",
            "--set",
            &format!("store.postgres_url={}", options.url),
            "--set",
            &format!("store.postgres_schema={}", options.schema),
            "--set",
            &format!("store.postgres_node_id={node}"),
            "--set",
            "store.postgres_lease_timeout_ms=2000",
            "--set",
            "store.postgres_pool_size=4",
        ],
        &[],
    )
}

fn orders_to_send() -> usize {
    std::env::var("ANNALS_CLUSTER_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(90)
}

/// Sends a command with an idempotency key to the first node of `order` that answers with
/// anything but "unavailable"; the reply of the node that took it.
async fn send_to_any(
    apis: &[Api],
    alive: &[bool],
    order: &[usize],
    path: &str,
    key: &str,
    command: &Value,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for &i in order {
            if !alive[i] {
                continue;
            }
            let reply = apis[i]
                .try_send(
                    Method::POST,
                    path,
                    &[("idempotency-key", key)],
                    Some(Body::json(command)),
                )
                .await;
            match reply {
                Ok(reply) if reply.status == 200 || reply.status == 201 => return reply.json(),
                // Not this node's fault or the command's: another node, or a later try.
                Ok(reply) if reply.status == 503 || reply.status == 429 => {}
                Ok(reply) => panic!(
                    "{path} ({key}) on node {i}: {} {}",
                    reply.status,
                    reply.text()
                ),
                Err(_) => {}
            }
        }
        assert!(Instant::now() < deadline, "no node took {path} ({key})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `check` holds, for at most `within`.
async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "waited {within:?} for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Places five orders of customer `c-1` named `{prefix}-{i}` on node `node`, and waits until the
/// saga has approved each (read on the same node).
async fn place_five_orders(apis: &[Api], node: usize, prefix: &str, what: &str) {
    let alive = vec![true; apis.len()];
    for i in 0..5 {
        let id = format!("{prefix}-{i}");
        let command = json!({"type": "CreateOrder", "customer_id": "c-1", "total": 100});
        send_to_any(
            apis,
            &alive,
            &[node],
            &format!("/v1/orders/{id}/commands"),
            &id,
            &command,
        )
        .await;
    }
    for i in 0..5 {
        let id = format!("{prefix}-{i}");
        eventually(what, Duration::from_secs(60), async || {
            (order_status(&apis[node], &id).await? == "Approved").then_some(())
        })
        .await;
    }
}

async fn order_status(api: &Api, id: &str) -> Option<String> {
    let reply = api
        .try_send(Method::GET, &format!("/v1/orders/{id}"), &[], None)
        .await
        .ok()?;
    if reply.status != 200 {
        return None;
    }
    reply.json()["state"]["status"].as_str().map(str::to_string)
}

/// The log as every node reads it: the same, dense, with unique event ids and contiguous
/// versions per stream. Returns it.
///
/// The saga may still be writing when an order reads as approved (it settles the customer's
/// credit after the approval), and a node learns of another's commits within its poll
/// interval: so the nodes are read again until they agree twice in a row, for at most a
/// minute; then they must agree.
async fn check_log(apis: &[&Api]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut agreed: Option<u64> = None;
    let log = loop {
        let (log, head) = apis[0].global_log(500).await;
        let mut same = true;
        for api in &apis[1..] {
            let (other, other_head) = api.global_log(500).await;
            if Instant::now() >= deadline {
                assert_eq!(other_head, head, "every node reads the same head");
                assert_eq!(other, log, "every node reads the same log");
            }
            same &= other_head == head && other == log;
        }
        if same && agreed == Some(head) {
            break log;
        }
        agreed = same.then_some(head);
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut ids = HashSet::new();
    let mut versions: HashMap<(String, String), u64> = HashMap::new();
    for (i, event) in log.iter().enumerate() {
        assert_eq!(
            event["position"].as_u64(),
            Some(i as u64 + 1),
            "positions are dense"
        );
        let id = event["event_id"].as_str().expect("an event id").to_string();
        assert!(ids.insert(id.clone()), "event {id} is in the log twice");
        let stream = (
            event["aggregate"].as_str().unwrap_or_default().to_string(),
            event["id"].as_str().unwrap_or_default().to_string(),
        );
        let version = versions.entry(stream.clone()).or_insert(0);
        *version += 1;
        assert_eq!(
            event["version"].as_u64(),
            Some(*version),
            "stream {stream:?}: versions contiguous in log order"
        );
    }
    log
}

/// Per order: (customer, total, decisions seen).
fn orders_in(log: &[Value]) -> BTreeMap<String, (String, u64, Vec<String>)> {
    let mut orders: BTreeMap<String, (String, u64, Vec<String>)> = BTreeMap::new();
    for event in log.iter().filter(|e| e["aggregate"] == "Order") {
        let id = event["id"].as_str().unwrap_or_default().to_string();
        match event["type"].as_str().unwrap_or_default() {
            "OrderCreated" => {
                let previous = orders.insert(
                    id.clone(),
                    (
                        event["data"]["customer_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        event["data"]["total"].as_u64().unwrap_or_default(),
                        Vec::new(),
                    ),
                );
                assert!(previous.is_none(), "order {id} was created twice");
            }
            decision @ ("OrderApproved" | "OrderRejected") => {
                orders
                    .get_mut(&id)
                    .unwrap_or_else(|| panic!("{decision} of unknown order {id}"))
                    .2
                    .push(decision.to_string());
            }
            _ => {}
        }
    }
    orders
}

/// Each customer's summary, read once the projection has reached the log's head, agrees with
/// what the log says.
async fn check_summaries(api: &Api, log: &[Value], limits: &BTreeMap<String, u64>) {
    let head = log.len();
    let orders = orders_in(log);
    for (customer, limit) in limits {
        let mut approved = 0;
        let mut rejected = 0;
        let mut held = 0;
        for (cust, total, decisions) in orders.values() {
            if cust != customer {
                continue;
            }
            match decisions.first().map(String::as_str) {
                Some("OrderApproved") => {
                    approved += 1;
                    held += total;
                }
                Some("OrderRejected") => rejected += 1,
                _ => {}
            }
        }
        let summary = api
            .get(&format!(
                "/v1/views/customers/{customer}?min_position={head}"
            ))
            .await
            .ok();
        assert_eq!(
            summary["orders"]["approved"],
            json!(approved),
            "{customer}: {summary}"
        );
        assert_eq!(
            summary["orders"]["rejected"],
            json!(rejected),
            "{customer}: {summary}"
        );
        assert_eq!(
            summary["orders"]["pending"],
            json!(0),
            "{customer}: {summary}"
        );
        assert_eq!(
            summary["available_credit"],
            json!(limit - held),
            "{customer}: {summary}"
        );
    }
}

/// `GET /v1/projections` of `api`: name → (status, owner).
async fn owners(api: &Api) -> BTreeMap<String, (String, Option<String>)> {
    subscribers(api)
        .await
        .into_iter()
        .map(|(name, (status, owner, _))| (name, (status, owner)))
        .collect()
}

/// `GET /v1/projections` of `api`: name → (status, owner, events behind the head).
async fn subscribers(api: &Api) -> BTreeMap<String, (String, Option<String>, u64)> {
    let body = api.get("/v1/projections").await.ok();
    body["subscribers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                (
                    s["status"].as_str().unwrap_or_default().to_string(),
                    s["owner"].as_str().map(str::to_string),
                    s["lag_events"].as_u64().unwrap_or(u64::MAX),
                ),
            )
        })
        .collect()
}

#[actix_rt::test]
async fn three_nodes_with_one_killed_mid_load_lose_nothing_and_converge() {
    let schema = PgSchema::fresh();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("a temporary directory"))
        .collect();
    let mut nodes: Vec<Option<ServeProcess>> = (0..3)
        .map(|i| Some(start_node(&schema, &format!("node-{i}"), dirs[i].path())))
        .collect();
    let apis: Vec<Api> = nodes
        .iter()
        .map(|n| Api::new(&n.as_ref().expect("started").url))
        .collect();
    for api in &apis {
        api.ready().await;
    }
    let mut alive = [true; 3];

    // Customers, some with room for few orders (so that the saga also rejects).
    let mut limits = BTreeMap::new();
    for c in 0..6 {
        let id = format!("c-{c}");
        let limit = if c % 3 == 0 { 3_000 } else { 1_000_000 };
        let command = json!({"type": "CreateCustomer", "name": format!("Customer {c}"), "credit_limit": limit});
        send_to_any(
            &apis,
            &alive,
            &[c % 3],
            &format!("/v1/customers/{id}/commands"),
            &format!("create-{id}"),
            &command,
        )
        .await;
        limits.insert(id, limit);
    }

    let total = orders_to_send();
    let mut acked: Vec<(String, Value)> = Vec::new();
    for chunk_start in (0..total).step_by(6) {
        if chunk_start >= total / 3 && alive[0] {
            // Mid-load: the first node started, likely the owner of the read side, dies.
            nodes[0].take().expect("node 0 runs").kill();
            alive[0] = false;
        }
        let sends = (chunk_start..(chunk_start + 6).min(total)).map(|i| {
            let id = format!("o-{i}");
            let command = json!({"type": "CreateOrder", "customer_id": format!("c-{}", i % 6), "total": 1_000 + (i as u64 % 7) * 100});
            // Round-robin on purpose, starting at a different node each time.
            let order: Vec<usize> = (0..3).map(|k| (i + k) % 3).collect();
            let (apis, alive) = (&apis, alive);
            async move {
                let reply = send_to_any(apis, &alive, &order, &format!("/v1/orders/{id}/commands"), &format!("create-{id}"), &command).await;
                (id, reply)
            }
        });
        acked.extend(futures::future::join_all(sends).await);
    }

    let survivors: Vec<&Api> = vec![&apis[1], &apis[2]];
    // Every order is decided by the saga, now run by a survivor.
    for (id, _) in &acked {
        eventually(
            &format!("order {id} to be decided"),
            Duration::from_secs(60),
            async || {
                let status = order_status(survivors[0], id).await?;
                (status == "Approved" || status == "Rejected").then_some(())
            },
        )
        .await;
    }
    let log = check_log(&survivors).await;
    let at: HashMap<&str, u64> = log
        .iter()
        .map(|e| {
            (
                e["event_id"].as_str().unwrap_or_default(),
                e["position"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    for (id, reply) in &acked {
        let events = reply["events"].as_array().cloned().unwrap_or_default();
        assert!(
            !events.is_empty(),
            "order {id}'s reply names its events: {reply}"
        );
        for event in events {
            let event_id = event["event_id"].as_str().expect("an event id");
            assert_eq!(
                at.get(event_id).copied(),
                event["position"].as_u64(),
                "order {id}: acknowledged event {event_id} is in the log at the position its reply named"
            );
        }
    }
    let orders = orders_in(&log);
    assert_eq!(orders.len(), total, "every order created once");
    for (id, (_, _, decisions)) in &orders {
        assert_eq!(
            decisions.len(),
            1,
            "order {id} decided exactly once: {decisions:?}"
        );
    }
    // The read side runs on the survivors, and both say so.
    let table = eventually(
        "the read side to run on the survivors and reach the head",
        Duration::from_secs(60),
        async || {
            let mut settled = true;
            let mut table = BTreeMap::new();
            for api in &survivors {
                table = subscribers(api).await;
                settled &= !table.is_empty()
                    && table.values().all(|(status, owner, lag)| {
                        owner
                            .as_deref()
                            .is_some_and(|o| o == "node-1" || o == "node-2")
                            && (status == "live" || status == "standby")
                            && *lag == 0
                    });
            }
            settled.then_some(table)
        },
    )
    .await;
    check_summaries(survivors[0], &log, &limits).await;
    eprintln!(
        "{} orders on 3 nodes, node-0 killed; owners after: {table:?}",
        acked.len()
    );
    for node in nodes.into_iter().flatten() {
        node.terminate();
    }
}

#[actix_rt::test]
async fn a_paused_owner_is_fenced_out_and_decides_nothing_twice() {
    let schema = PgSchema::fresh();
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("a temporary directory"))
        .collect();
    // Node 0 starts first and so takes the read side.
    let first = start_node(&schema, "node-0", dirs[0].path());
    let first_api = Api::new(&first.url);
    first_api.ready().await;
    let second = start_node(&schema, "node-1", dirs[1].path());
    let second_api = Api::new(&second.url);
    second_api.ready().await;
    let apis = [first_api, second_api];
    let alive = [true, true];

    let command = json!({"type": "CreateCustomer", "name": "Ada", "credit_limit": 1_000_000});
    send_to_any(
        &apis,
        &alive,
        &[1],
        "/v1/customers/c-1/commands",
        "create-c-1",
        &command,
    )
    .await;
    place_five_orders(&apis, 1, "a", "the first orders to be decided").await;
    let before = eventually(
        "node 0 to own the saga",
        Duration::from_secs(60),
        async || {
            let table = owners(&apis[1]).await;
            table
                .values()
                .all(|(_, owner)| owner.as_deref() == Some("node-0"))
                .then_some(table)
        },
    )
    .await;
    // Pause the owner past its lease: node 1 takes everything over.
    let pid = first.pid().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status();
    assert!(stopped.is_ok_and(|s| s.success()), "SIGSTOP sent");
    let after = eventually(
        "node 1 to take the read side over",
        Duration::from_secs(60),
        async || {
            let table = owners(&apis[1]).await;
            table
                .values()
                .all(|(status, owner)| owner.as_deref() == Some("node-1") && status == "live")
                .then_some(table)
        },
    )
    .await;
    place_five_orders(
        &apis,
        1,
        "b",
        "orders placed during the pause to be decided",
    )
    .await;

    // Wake the old owner: its next commits hit the fence; it stands by.
    let resumed = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    assert!(resumed.is_ok_and(|s| s.success()), "SIGCONT sent");
    let woke = eventually(
        "the woken node to stand by",
        Duration::from_secs(60),
        async || {
            let table = owners(&apis[0]).await;
            (!table.is_empty() && table.values().all(|(status, _)| status == "standby"))
                .then_some(table)
        },
    )
    .await;
    place_five_orders(
        &apis,
        0,
        "c",
        "orders placed after the wake-up to be decided",
    )
    .await;
    let log = check_log(&[&apis[0], &apis[1]]).await;
    let orders = orders_in(&log);
    assert_eq!(orders.len(), 15);
    for (id, (_, _, decisions)) in &orders {
        assert_eq!(
            decisions,
            &vec!["OrderApproved".to_string()],
            "order {id} decided once"
        );
    }
    let reservations = log
        .iter()
        .filter(|e| e["aggregate"] == "Customer" && e["type"] == "CreditReserved")
        .count();
    assert_eq!(reservations, 15, "credit reserved once per order");
    let limits = BTreeMap::from([("c-1".to_string(), 1_000_000)]);
    check_summaries(&apis[0], &log, &limits).await;
    eprintln!("owners before {before:?}, during the pause {after:?}, after waking {woke:?}");
    first.terminate();
    second.terminate();
}
