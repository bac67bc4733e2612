//! The PostgreSQL backend with several writers: the global order under concurrent commits of
//! several nodes (stores opened on one schema), on the test server (see
//! [`annals_tests::PgSchema`]; a server that cannot be reached fails these tests).
//!
//! - The ordering hole, deterministically: node A's transaction is held open at its commit
//!   (through the writer's real path, with [`annals::store::postgres::PgHooks`]) while node B
//!   appends; B's append must not be acknowledged, and no reader on either node may see
//!   anything, until A commits — then both, in commit order. If A rolls back instead, B's
//!   append goes through and takes the position A gave back: no gap, no stall.
//! - Concurrent writers on three nodes, racing for the same streams and command ids: one dense,
//!   gap-free order that every node reads the same, every acknowledged event in it once, versions
//!   contiguous, and a reader following the log while it is written never skips an event.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use annals::envelope::EncodedPayload;
use annals::store::{
    AppendError, AppendKind, AppendRequest, CommandKey, CommitReceipt, EventStore, Fingerprint,
    PendingEvent, PgStore,
};
use annals::{CommandId, CommitMeta, Position, RecordedEvent, StreamId, Timestamp, Version};
use annals_tests::PgSchema;
use futures::executor::block_on;
use uuid::Uuid;

fn stream(id: &str) -> StreamId {
    StreamId::new("Ledger", id).expect("a valid stream id")
}

fn request(stream: &StreamId, expected: Version, label: &str) -> AppendRequest {
    AppendRequest {
        stream: stream.clone(),
        expected,
        meta: CommitMeta {
            recorded_at: Timestamp::now(),
            ..CommitMeta::default()
        },
        command: None,
        kind: AppendKind::Events(vec![PendingEvent {
            event_id: Uuid::new_v4(),
            event_type: Arc::from("Entered"),
            schema_version: 1,
            payload: EncodedPayload(label.as_bytes().to_vec()),
        }]),
    }
}

fn with_command(mut request: AppendRequest, id: &str) -> AppendRequest {
    let id = CommandId::new(id).expect("a valid command id");
    request.meta.command_id = Some(id.clone());
    request.command = Some(CommandKey {
        fingerprint: Fingerprint::of(&request.stream, id.as_str().as_bytes()),
        id,
    });
    request
}

fn labels(events: &[RecordedEvent]) -> Vec<(u64, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.position.0,
                String::from_utf8_lossy(&e.payload.0).into_owned(),
            )
        })
        .collect()
}

/// Appends on a thread of its own; the receiver gets the outcome when it is acknowledged.
fn append_in_background(
    store: &PgStore,
    request: AppendRequest,
) -> mpsc::Receiver<Result<CommitReceipt, AppendError>> {
    let ticket = store.append(request);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(block_on(ticket));
    });
    rx
}

/// How long the tests watch for something that must *not* happen (an acknowledgement or an
/// event seen too early). Waiting longer can only make them stricter, never flaky.
const WATCH: Duration = Duration::from_millis(400);

fn held_transaction_case(roll_back: bool) {
    let schema = PgSchema::fresh();
    let node_a = schema.open();
    let node_b = schema.open();
    let mut gate = node_a.options().hooks.hold_next_commit();
    let first = append_in_background(&node_a, request(&stream("x"), Version(0), "A:x1"));
    gate.wait_until_held();

    let second = append_in_background(&node_b, request(&stream("y"), Version(0), "B:y1"));
    assert!(
        second.recv_timeout(WATCH).is_err(),
        "B's append was acknowledged while A's earlier transaction was still open"
    );
    for (name, node) in [("A", &node_a), ("B", &node_b)] {
        let seen = node.read_all(Position(1), 10).expect("read the log");
        assert!(
            seen.is_empty(),
            "node {name} read {:?} while A's transaction was open",
            labels(&seen)
        );
    }

    let expected: Vec<(u64, String)> = if roll_back {
        gate.roll_back();
        let refused = first.recv().expect("A's append is answered");
        assert!(
            refused.is_err(),
            "a rolled-back append must not be acknowledged: {refused:?}"
        );
        vec![(1, "B:y1".to_string())]
    } else {
        gate.commit();
        let receipt = first
            .recv()
            .expect("A's append is answered")
            .expect("A's append commits");
        assert_eq!(receipt.first_position, Some(Position(1)));
        vec![(1, "A:x1".to_string()), (2, "B:y1".to_string())]
    };
    let receipt = second
        .recv()
        .expect("B's append is answered")
        .expect("B's append commits once A's transaction ended");
    assert_eq!(
        receipt.first_position,
        Some(Position(expected.len() as u64)),
        "B's event comes right after A's (or takes the position A gave back)"
    );
    for (name, node) in [("A", &node_a), ("B", &node_b)] {
        let seen = node.read_all(Position(1), 10).expect("read the log");
        assert_eq!(
            labels(&seen),
            expected,
            "node {name} reads the log in commit order"
        );
    }
    for node in [node_a, node_b] {
        node.shutdown().expect("a clean shutdown");
    }
}

#[test]
fn a_later_commit_waits_for_an_open_earlier_one_and_both_are_read_in_commit_order() {
    held_transaction_case(false);
}

#[test]
fn a_rolled_back_transaction_leaves_no_gap_and_stalls_nothing() {
    held_transaction_case(true);
}

#[test]
fn a_command_id_used_on_two_nodes_at_once_commits_once() {
    let schema = PgSchema::fresh();
    let nodes = [schema.open(), schema.open()];
    for round in 0..20 {
        let s = stream(&format!("dup-{round}"));
        let id = format!("cmd-{round}");
        let tickets: Vec<_> = nodes
            .iter()
            .map(|node| node.append(with_command(request(&s, Version(0), "dup"), &id)))
            .collect();
        let outcomes: Vec<_> = tickets.into_iter().map(block_on).collect();
        let committed = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(committed, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes.iter().any(|o| matches!(
                o,
                Err(AppendError::Conflict { .. } | AppendError::CommandIdUsed { .. })
            )),
            "round {round}: the other is refused: {outcomes:?}"
        );
        let events = nodes[1]
            .read_stream(&s, Version(1), None, 10)
            .expect("read the stream");
        assert_eq!(events.len(), 1, "round {round}: one event, not two");
    }
    for node in nodes {
        node.shutdown().expect("a clean shutdown");
    }
}

/// Cycles of the concurrent-writers test: `ANNALS_PG_WRITES` appends per writer (default 150).
fn writes_per_writer() -> usize {
    std::env::var("ANNALS_PG_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

#[test]
fn concurrent_writers_on_three_nodes_give_one_gap_free_order_that_no_reader_skips() {
    const STREAMS: usize = 8;
    const WRITERS_PER_NODE: usize = 2;
    let writes = writes_per_writer();
    let schema = PgSchema::fresh();
    let nodes: Vec<PgStore> = (0..3).map(|_| schema.open()).collect();

    // A reader that follows the log from node 2 while it is written, as a subscriber does.
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let node = nodes[2].clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            loop {
                let finished = done.load(Ordering::Acquire);
                let from = Position(seen.last().map_or(0, |e| e.position.0) + 1);
                let page = node.read_all(from, 100).expect("follow the log");
                let empty = page.is_empty();
                seen.extend(page);
                if finished && empty {
                    return seen;
                }
                if empty {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })
    };

    let writers: Vec<_> = nodes
        .iter()
        .enumerate()
        .flat_map(|(n, node)| (0..WRITERS_PER_NODE).map(move |w| (n, w, node.clone())))
        .map(|(n, w, node)| {
            std::thread::spawn(move || {
                let mut acked: Vec<(String, u64, u64, String)> = Vec::new();
                let mut conflicts = 0u32;
                for i in 0..writes {
                    let s = stream(&format!("s{}", (i * 7 + n * 3 + w) % STREAMS));
                    let label = format!("n{n}w{w}#{i}");
                    // Retry on conflicts as an actor would: read the head again, decide again.
                    loop {
                        let head = node.stream_head(&s).expect("read a stream head");
                        match block_on(node.append(request(&s, head, &label))) {
                            Ok(receipt) => {
                                let position = receipt.first_position.expect("a position").0;
                                acked.push((
                                    s.aggregate_id().to_string(),
                                    receipt.version.0,
                                    position,
                                    label,
                                ));
                                break;
                            }
                            Err(AppendError::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("{label}: {e}"),
                        }
                    }
                }
                (acked, conflicts)
            })
        })
        .collect();
    let mut acked = Vec::new();
    let mut conflicts = 0;
    for writer in writers {
        let (a, c) = writer.join().expect("a writer thread");
        acked.extend(a);
        conflicts += c;
    }
    done.store(true, Ordering::Release);
    let followed = follower.join().expect("the follower thread");

    let total = acked.len();
    assert_eq!(total, writes * WRITERS_PER_NODE * 3);
    let logs: Vec<Vec<RecordedEvent>> = nodes
        .iter()
        .map(|node| {
            node.read_all(Position(1), total + 10)
                .expect("read the log")
        })
        .collect();
    for (i, log) in logs.iter().enumerate() {
        assert_eq!(
            labels(log),
            labels(&logs[0]),
            "node {i} reads the same log as node 0"
        );
    }
    let log = &logs[0];
    assert_eq!(
        log.len(),
        total,
        "every acknowledged event once, nothing else"
    );
    for (i, event) in log.iter().enumerate() {
        assert_eq!(event.position.0, i as u64 + 1, "positions are dense");
    }
    assert_eq!(
        labels(&followed),
        labels(log),
        "the reader that followed the log while it was written saw all of it, in order"
    );
    let by_label: HashMap<String, &RecordedEvent> = log
        .iter()
        .map(|e| (String::from_utf8_lossy(&e.payload.0).into_owned(), e))
        .collect();
    let mut labels_seen = HashSet::new();
    for (stream_id, version, position, label) in &acked {
        let event = by_label
            .get(label)
            .unwrap_or_else(|| panic!("acknowledged {label} is missing from the log"));
        assert_eq!(
            event.position.0, *position,
            "{label}: the receipt's position"
        );
        assert_eq!(event.version.0, *version, "{label}: the receipt's version");
        assert_eq!(event.stream.aggregate_id(), stream_id);
        assert!(labels_seen.insert(label.clone()));
    }
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in log {
        versions
            .entry(event.stream.aggregate_id().to_string())
            .or_default()
            .push(event.version.0);
    }
    for (s, versions) in &versions {
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(
            versions, &expected,
            "stream {s}: versions contiguous, in log order"
        );
        let head = nodes[0]
            .stream_head(&stream(s))
            .expect("read a stream head");
        assert_eq!(head.0, versions.len() as u64);
    }
    eprintln!("{total} appends from 6 writers on 3 nodes, {conflicts} conflicts retried");
    for node in nodes {
        node.shutdown().expect("a clean shutdown");
    }
}

// ---------------------------------------------------------------------------------------------
// Ownership of subscribers among nodes
// ---------------------------------------------------------------------------------------------

/// Ends node `node`'s lease session from the server's side, as PostgreSQL does when the node
/// goes silent past its lease (or its connection dies).
fn terminate_lease_session(store: &PgStore, node: &str) {
    let name = annals::store::postgres::lease::lease_session_name(node);
    let url = store.options().url.clone();
    let killed = std::process::Command::new("psql")
        .args([
            url.as_str(),
            "-tAc",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = '{name}'"
            ),
        ])
        .output()
        .expect("psql runs");
    assert!(
        String::from_utf8_lossy(&killed.stdout).trim() == "1",
        "one lease session of {node} was ended: {:?}",
        killed
    );
}

#[test]
fn one_node_owns_a_subscriber_and_a_fenced_out_owner_writes_nothing() {
    use annals::store::{Changes, StateStore, StoreError};
    let schema = PgSchema::fresh();
    // Node names of this test only: tests run in parallel on one server.
    let (name_a, name_b) = (
        format!("a-{}", schema.options.schema),
        format!("b-{}", schema.options.schema),
    );
    let node_a = PgStore::open(schema.options.clone().with_node_id(&name_a)).expect("open a");
    let node_b = PgStore::open(schema.options.clone().with_node_id(&name_b)).expect("open b");
    let (state_a, state_b) = (node_a.state(), node_b.state());

    let lease_a = state_a
        .claim("orders-view")
        .expect("claim")
        .expect("the first claim is granted");
    assert!(
        state_b.claim("orders-view").expect("claim").is_none(),
        "a second node cannot take what the first holds"
    );
    let mut page = Changes::default();
    page.put("view", b"k".to_vec(), b"from a".to_vec());
    page.fence("orders-view", &lease_a);
    state_a.commit(page).expect("the owner commits");

    // Node A goes silent: the server ends its lease session; B takes over with a new epoch.
    terminate_lease_session(&node_a, &name_a);
    // The server frees the session's locks as its backend exits, just after the signal.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let lease_b = loop {
        if let Some(lease) = state_b.claim("orders-view").expect("claim") {
            break lease;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock is free once A's session ended"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(lease_b.epoch > lease_a.epoch, "a takeover bumps the epoch");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lease_a.is_valid() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!lease_a.is_valid(), "A learns that its lease session ended");
    let owners = state_b.owners().expect("owners");
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].node, name_b);

    // A wakes up and commits a page with its old lease: refused, nothing written.
    let mut late = Changes::default();
    late.put("view", b"k".to_vec(), b"from a, too late".to_vec());
    late.fence("orders-view", &lease_a);
    let refused = state_a.commit(late);
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "a fenced-out owner's commit must be refused: {refused:?}"
    );
    assert_eq!(
        state_b.get("view", b"k").expect("read"),
        Some(b"from a".to_vec()),
        "nothing of the refused page was written"
    );
    let mut page = Changes::default();
    page.put("view", b"k".to_vec(), b"from b".to_vec());
    page.fence("orders-view", &lease_b);
    state_b.commit(page).expect("the new owner commits");
    for node in [node_a, node_b] {
        node.shutdown().expect("a clean shutdown");
    }
}

/// Records the positions it is handed, tagged with its node.
struct Recorder {
    node: &'static str,
    seen: Arc<std::sync::Mutex<Vec<(&'static str, u64)>>>,
}

impl annals::Subscriber for Recorder {
    fn handle<'a>(&'a mut self, event: &'a RecordedEvent) -> annals::HandleFuture<'a> {
        self.seen
            .lock()
            .expect("the recorder's lock is not poisoned")
            .push((self.node, event.position.0));
        Box::pin(async { Ok(()) })
    }
}

fn runtime_on(schema: &PgSchema, node: &str) -> annals::Runtime {
    let options = annals::RuntimeOptions::with_store(schema.options.clone().with_node_id(node))
        .with_arbiters(std::num::NonZeroUsize::new(2).expect("2 is not zero"));
    let rt = annals::Runtime::open(options).expect("a runtime opens on PostgreSQL");
    rt.register::<annals_domain::bank::Account>()
        .expect("Account registers");
    rt
}

async fn deposit_many(rt: &annals::Runtime, prefix: &str, n: usize) {
    for i in 0..n {
        let id = format!("{prefix}-{}", i % 5);
        match rt
            .execute::<annals_domain::bank::Account>(
                &id,
                annals_domain::bank::AccountCommand::Deposit { amount: 1 },
            )
            .await
        {
            Ok(Ok(_)) => {}
            other => panic!("a deposit on {id} must commit: {other:?}"),
        }
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two runtimes on one database register the same subscriber: one runs it, the other stands
/// by; when the first stops, the second takes over from the checkpoint the first committed.
/// Every position is handled once, in order, across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_runs_on_one_node_and_another_takes_over_when_it_stops() {
    use annals::SubscriberStatus;
    let schema = PgSchema::fresh();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let node_a = runtime_on(&schema, "node-a");
    node_a
        .subscribe(
            "audit",
            Recorder {
                node: "a",
                seen: seen.clone(),
            },
            annals::SubscriberOptions::default(),
        )
        .expect("subscribe on a");
    wait_until("node a runs the subscriber", || {
        node_a
            .subscribers()
            .iter()
            .any(|s| s.name == "audit" && s.status == SubscriberStatus::Live)
    })
    .await;
    let node_b = runtime_on(&schema, "node-b");
    node_b
        .subscribe(
            "audit",
            Recorder {
                node: "b",
                seen: seen.clone(),
            },
            annals::SubscriberOptions::default(),
        )
        .expect("subscribe on b");

    deposit_many(&node_a, "first", 40).await;
    deposit_many(&node_b, "first-b", 40).await;
    wait_until("node b stands by", || {
        node_b
            .subscribers()
            .iter()
            .any(|s| s.name == "audit" && s.status == SubscriberStatus::Standby)
    })
    .await;
    let head = node_b.head_position().0.max(node_a.head_position().0);
    wait_until("node a has handled the first writes", || {
        seen.lock().expect("lock").len() as u64 >= head
    })
    .await;
    assert!(
        seen.lock()
            .expect("lock")
            .iter()
            .all(|(node, _)| *node == "a"),
        "only the owner handles events"
    );
    let owners = node_b.stores().state.owners().expect("read the owners");
    assert!(
        owners
            .iter()
            .any(|o| o.name == "audit" && o.node == "node-a"),
        "the owners table names node a: {owners:?}"
    );

    node_a.shutdown().await.expect("node a stops cleanly");
    deposit_many(&node_b, "second", 40).await;
    let head = node_b.head_position().0;
    wait_until("node b has taken over and caught up", || {
        seen.lock().expect("lock").len() as u64 >= head
    })
    .await;
    let seen = seen.lock().expect("lock").clone();
    let positions: Vec<u64> = seen.iter().map(|(_, p)| *p).collect();
    let expected: Vec<u64> = (1..=head).collect();
    assert_eq!(
        positions, expected,
        "every position once, in order, across both nodes"
    );
    assert!(
        seen.iter().any(|(node, _)| *node == "b"),
        "node b took over"
    );
    node_b.shutdown().await.expect("node b stops cleanly");
}

/// A projection rebuilt on one node is followed by the others: once the rebuild is swapped in,
/// no node runs the old generation any more (its lease is released, never taken over), the new
/// generation has one owner, and every node reads the new generation's views, which follow new
/// events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_rebuilt_on_one_node_is_followed_by_the_others() {
    use annals_domain::customer::{Customer, CustomerCommand};
    use annals_domain::views::{CustomerSummaries, CUSTOMER_SUMMARIES};
    let schema = PgSchema::fresh();
    let options = annals_domain::DomainOptions::default();
    let node_a = runtime_on(&schema, "node-a");
    annals_domain::register(&node_a, &options).expect("the domain registers on a");
    wait_until("node a runs the summaries", || {
        node_a
            .subscribers()
            .iter()
            .any(|s| s.name == CUSTOMER_SUMMARIES && s.status == annals::SubscriberStatus::Live)
    })
    .await;
    let node_b = runtime_on(&schema, "node-b");
    annals_domain::register(&node_b, &options).expect("the domain registers on b");
    let create = |n: u64| CustomerCommand::CreateCustomer {
        name: format!("Customer {n}"),
        credit_limit: 1_000 * n,
        currency: None,
    };
    for n in 1..=5 {
        match node_a
            .execute::<Customer>(&format!("c-{n}"), create(n))
            .await
        {
            Ok(Ok(_)) => {}
            other => panic!("customer {n}: {other:?}"),
        }
    }
    node_a
        .rebuild(CUSTOMER_SUMMARIES)
        .expect("the rebuild starts");
    let owned = |rt: &annals::Runtime| -> Vec<(String, String)> {
        rt.stores()
            .state
            .owners()
            .expect("read the owners")
            .into_iter()
            .filter(|o| o.name.starts_with(CUSTOMER_SUMMARIES))
            .map(|o| (o.name, o.node))
            .collect()
    };
    wait_until("the rebuilt generation to be the only one running", || {
        owned(&node_b) == vec![(format!("{CUSTOMER_SUMMARIES}@1"), "node-a".to_string())]
    })
    .await;
    // Long enough for node b's standby of the old generation to have claimed it, had it not
    // followed the swap.
    tokio::time::sleep(annals::subscription::CLAIM_INTERVAL * 3).await;
    assert_eq!(
        owned(&node_b),
        vec![(format!("{CUSTOMER_SUMMARIES}@1"), "node-a".to_string())],
        "nobody runs the old generation after the swap"
    );
    match node_b.execute::<Customer>("c-6", create(6)).await {
        Ok(Ok(_)) => {}
        other => panic!("customer 6: {other:?}"),
    }
    let head = node_b.head_position();
    for rt in [&node_a, &node_b] {
        rt.wait_for(CUSTOMER_SUMMARIES, head, Duration::from_secs(30))
            .await
            .expect("the summaries reach the head on every node");
        let summaries = CustomerSummaries::open(rt).expect("open the summaries");
        for n in 1..=6 {
            let summary = summaries
                .summary(&format!("c-{n}"))
                .expect("read a summary")
                .unwrap_or_else(|| panic!("customer c-{n} is in the rebuilt view"));
            assert_eq!(summary.credit_limit, 1_000 * n);
        }
    }
    node_b.shutdown().await.expect("node b stops cleanly");
    node_a.shutdown().await.expect("node a stops cleanly");
}
