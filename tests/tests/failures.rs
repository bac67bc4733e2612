//! Partial failures the runtime must survive without losing, inventing or stopping more than it
//! has to: a damaged record, a panicked journal thread, a lost tail of the database, a full
//! disk, a sustained overload, a store that fails reads for a while, a deadline that can never
//! be sent, and read-side state that a crash left ahead of the log.
//!
//! Each test drives a real sled store in a temporary directory through the public API (the
//! store's own, or the runtime's); failures are injected with [`Faults`], or by damaging the
//! files of a closed store, as an operator or a disk could. Every test was written against the
//! behaviour before the fix and fails there: the journal failing as a whole on one damaged
//! record, a green health after a panic, a quiet rollback of acknowledged data, a subscriber
//! stopped for good by one failed read, deadlines stuck behind one bad record, a snapshot or a
//! projection of events the log no longer has.

use std::num::NonZeroUsize;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::envelope::{CommitMeta, EncodedPayload};
use annals::store::sled::{Faults, SledOptions, SledStore};
use annals::store::state::{DEADLINES, DEADLINES_FAILED};
use annals::store::{
    AppendError, AppendKind, AppendRequest, CommandKey, EventStore, Fingerprint, PendingEvent,
    Snapshot, StateStore, StoreError, StoreHealth,
};
use annals::{
    Action, Aggregate, CommandId, DomainEvent, ExecuteError, ExecuteOptions, HandleFuture,
    HandlerError, Overload, Position, ProcessManager, Projection, RecordedEvent, Runtime,
    RuntimeOptions, StreamId, Subscriber, SubscriberOptions, SubscriberStatus, Timestamp, Version,
    View, ViewError, ViewSet,
};
use annals_domain::bank::{Account, AccountCommand, AccountEvent};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use uuid::Uuid;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("not zero")
}

fn temp_dir() -> TempDir {
    TempDir::new().expect("a temporary directory can be created")
}

fn open_store(dir: &Path) -> SledStore {
    SledStore::open(SledOptions::new(dir)).expect("the store opens")
}

fn runtime_on(store: &SledStore) -> Runtime {
    let rt = Runtime::with_stores(
        store.clone().into_stores(),
        RuntimeOptions::new("unused").with_arbiters(nz(2)),
    )
    .expect("the runtime starts");
    rt.register::<Account>().expect("Account registers");
    rt
}

fn open_runtime(dir: &Path) -> Runtime {
    let rt = Runtime::open(RuntimeOptions::new(dir).with_arbiters(nz(2))).expect("opens");
    rt.register::<Account>().expect("Account registers");
    rt
}

async fn deposit(rt: &Runtime, id: &str, amount: u64) {
    match rt
        .execute::<Account>(id, AccountCommand::Deposit { amount })
        .await
    {
        Ok(Ok(_)) => {}
        other => panic!("a deposit of {amount} on {id} must commit, got {other:?}"),
    }
}

fn with_id(id: &str) -> ExecuteOptions {
    ExecuteOptions::default().with_command_id(CommandId::new(id).expect("a valid command id"))
}

/// Waits (bounded) until `done` holds.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done()
}

/// Opens a closed store with plain sled (waiting, bounded, while sled releases the lock of the
/// last close on one of its threads).
fn raw_db(dir: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let config = annals::store::sled::sled_config(dir).expect("the store's configuration");
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other.expect("sled opens the closed store"),
        }
    }
}

/// The raw key/value pairs of the closed store's log tree.
fn raw_log_entries(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = raw_db(dir);
    let log = db.open_tree("log").expect("the log tree opens");
    log.iter()
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<Vec<_>, _>>()
        .expect("the raw log reads")
}

fn event_append(stream: &StreamId, expected: Version, command: Option<&str>) -> AppendRequest {
    let mut meta = CommitMeta {
        recorded_at: Timestamp::now(),
        ..CommitMeta::default()
    };
    let command = command.map(|id| {
        let id = CommandId::new(id).expect("a valid command id");
        meta.command_id = Some(id.clone());
        CommandKey {
            id,
            fingerprint: Fingerprint::of(stream, b"the command"),
        }
    });
    AppendRequest {
        stream: stream.clone(),
        expected,
        meta,
        command,
        kind: AppendKind::Events(vec![PendingEvent {
            event_id: Uuid::new_v4(),
            event_type: Arc::from("Happened"),
            schema_version: 1,
            payload: EncodedPayload(b"payload".to_vec()),
        }]),
    }
}

// ---------------------------------------------------------------------------------------------
// The journal
// ---------------------------------------------------------------------------------------------

/// A damaged command record refuses the commands that need it, with the damage named, and
/// nothing else: the journal stays ready, other appends — to the same stream too — commit, and
/// the refusal repeats after a restart instead of failing the journal again each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_command_record_refuses_only_the_commands_that_need_it() {
    let dir = temp_dir();
    let stream = StreamId::new("Thing", "t-1").expect("valid");
    {
        let store = open_store(dir.path());
        store
            .append(event_append(&stream, Version(0), Some("k-1")))
            .await
            .expect("the first append commits");
        store.shutdown().expect("shuts down");
    }
    {
        let db = raw_db(dir.path());
        let commands = db.open_tree("commands").expect("the commands tree opens");
        commands
            .insert("k-1", &[1u8, 0xff, 0x00, 0x13][..])
            .expect("the damage is written");
        db.flush().expect("flushed");
    }
    for _restart in 0..2 {
        let store = open_store(dir.path());
        // The journal's own check meets the damaged record: that append alone is refused.
        let head = store.stream_head(&stream).expect("reads");
        let refused = store.append(event_append(&stream, head, Some("k-1"))).await;
        assert!(
            matches!(
                &refused,
                Err(AppendError::Unchecked {
                    error: StoreError::Corrupt { .. } | StoreError::Codec(_),
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(store.health(), StoreHealth::Ready);
        store
            .append(event_append(
                &stream,
                head,
                Some(&format!("k-{}", head.0 + 1)),
            ))
            .await
            .expect("another command on the same stream commits");
        store
            .append(event_append(&stream, head.next(), None))
            .await
            .expect("a command without an id commits");
        assert_eq!(store.health(), StoreHealth::Ready);

        // Through the runtime: the retry of the damaged id is refused; the aggregate and the
        // journal go on.
        let rt = runtime_on(&store);
        let retry = rt
            .execute_with::<Account>("a-1", AccountCommand::Deposit { amount: 5 }, with_id("k-1"))
            .await;
        assert!(
            matches!(retry, Err(ExecuteError::Store(_))),
            "a retry of the damaged id is refused: {retry:?}"
        );
        deposit(&rt, "a-1", 7).await;
        assert_eq!(rt.health(), StoreHealth::Ready);
        rt.shutdown().await.expect("a clean shutdown");
    }
}

/// A panicked journal thread acknowledges nothing more: the store says it failed (so readiness
/// goes red) and refuses every later append, instead of looking healthy while nothing commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_journal_thread_fails_the_store() {
    let dir = temp_dir();
    let faults = Arc::new(Faults::default());
    let store = SledStore::open(SledOptions::new(dir.path()).with_faults(faults.clone()))
        .expect("the store opens");
    let rt = runtime_on(&store);
    deposit(&rt, "a-1", 1).await;
    faults.panic_next_batch();
    let lost = rt
        .execute::<Account>("a-1", AccountCommand::Deposit { amount: 2 })
        .await;
    assert!(
        lost.is_err(),
        "the command of the panicked batch is not acknowledged: {lost:?}"
    );
    // The failure is recorded as the thread unwinds, which may end just after the command's
    // reply was dropped.
    assert!(
        wait_until(Duration::from_secs(10), || rt.health()
            != StoreHealth::Ready)
        .await,
        "the store must not stay ready"
    );
    match rt.health() {
        StoreHealth::Failed(reason) => assert!(reason.contains("panicked"), "{reason}"),
        other => panic!("the store must report the panic, got {other:?}"),
    }
    let later = rt
        .execute::<Account>("a-2", AccountCommand::Deposit { amount: 3 })
        .await;
    assert!(
        matches!(later, Err(ExecuteError::Store(StoreError::Failed { .. }))),
        "{later:?}"
    );
    drop(rt);
    drop(store);
    // Nothing acknowledged was lost: the first deposit is there after a restart.
    let rt = open_runtime(dir.path());
    let state = rt.state::<Account>("a-1").expect("reads").expect("exists");
    assert_eq!(state.state.balance, 1);
    rt.shutdown().await.expect("a clean shutdown");
}

/// The files of a data directory, by name (sled's log, its configuration, snapshots, blobs).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creates");
    for entry in std::fs::read_dir(from).expect("lists") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copies");
        }
    }
}

/// A database whose log lost acknowledged batches (here: sled's files put back as they were
/// before the last five commands, as a disk that lost a tail would leave them) is refused
/// loudly, naming the missing positions, and left as it is — not opened as a quiet rollback.
/// Removing the acknowledgement record is the documented way to accept the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tail_of_acknowledged_batches_is_refused_not_rolled_back() {
    let dir = temp_dir();
    let before = temp_dir();
    {
        let rt = open_runtime(dir.path());
        for amount in 1..=5 {
            deposit(&rt, "a-1", amount).await;
        }
        rt.shutdown().await.expect("a clean shutdown");
    }
    copy_dir(dir.path(), before.path());
    {
        let rt = open_runtime(dir.path());
        for amount in 6..=10 {
            deposit(&rt, "a-1", amount).await;
        }
        assert_eq!(rt.head_position(), Position(10));
        rt.shutdown().await.expect("a clean shutdown");
    }
    // sled's files lose their tail; the acknowledgement record remembers it.
    for entry in std::fs::read_dir(dir.path()).expect("lists") {
        let entry = entry.expect("an entry");
        if entry.file_name() != "acknowledged" {
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("removes");
            } else {
                std::fs::remove_file(&path).expect("removes");
            }
        }
    }
    for entry in std::fs::read_dir(before.path()).expect("lists") {
        let entry = entry.expect("an entry");
        if entry.file_name() != "acknowledged" {
            let target = dir.path().join(entry.file_name());
            if entry.path().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).expect("copies");
            }
        }
    }
    let log_before = raw_log_entries(dir.path());
    assert_eq!(log_before.len(), 5, "one segment per command");
    for _attempt in 0..2 {
        match SledStore::open(SledOptions::new(dir.path())) {
            Err(
                e @ StoreError::AcknowledgedDataLost {
                    acknowledged_position,
                    found_position,
                    ..
                },
            ) => {
                assert_eq!(acknowledged_position, Position(10));
                assert_eq!(found_position, Position(5));
                let message = e.to_string();
                assert!(message.contains("positions 6 to 10"), "{message}");
            }
            other => panic!("a lost acknowledged tail must be refused, got {other:?}"),
        }
        assert!(
            raw_log_entries(dir.path()) == log_before,
            "a refused open changes nothing"
        );
    }
    std::fs::remove_file(dir.path().join("acknowledged")).expect("removes the record");
    let rt = open_runtime(dir.path());
    assert_eq!(rt.head_position(), Position(5));
    deposit(&rt, "a-1", 100).await;
    assert_eq!(rt.head_position(), Position(6));
    rt.shutdown().await.expect("a clean shutdown");
    drop(rt);
    // From then on the record tracks the store again.
    let store = open_store(dir.path());
    assert_eq!(store.head_position(), Position(6));
    store.shutdown().expect("shuts down");
}

/// Below the configured free disk space, appends are refused with a typed error before
/// anything is written, and the store stays healthy; with room again, they commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_refused_while_the_disk_is_below_its_minimum() {
    let dir = temp_dir();
    {
        let rt = Runtime::open(
            RuntimeOptions::with_store(
                SledOptions::new(dir.path()).with_disk_free_bytes_min(u64::MAX),
            )
            .with_arbiters(nz(2)),
        )
        .expect("opens");
        rt.register::<Account>().expect("registers");
        for _ in 0..3 {
            let refused = rt
                .execute::<Account>("a-1", AccountCommand::Deposit { amount: 1 })
                .await;
            assert!(
                matches!(
                    refused,
                    Err(ExecuteError::Store(StoreError::DiskFull { min_bytes, .. })) if min_bytes == u64::MAX
                ),
                "{refused:?}"
            );
        }
        assert_eq!(rt.health(), StoreHealth::Ready);
        assert_eq!(rt.head_position(), Position(0));
        rt.shutdown().await.expect("a clean shutdown");
    }
    let rt = open_runtime(dir.path());
    assert_eq!(rt.head_position(), Position(0), "nothing was written");
    deposit(&rt, "a-1", 1).await;
    rt.shutdown().await.expect("a clean shutdown");
}

// ---------------------------------------------------------------------------------------------
// Overload
// ---------------------------------------------------------------------------------------------

/// An aggregate whose `decide` takes a while, so commands queue behind each other.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Slow {
    done: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Work;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Worked;

impl DomainEvent for Worked {
    fn event_type(&self) -> &'static str {
        "Worked"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("never")]
struct Never;

/// How long one `Slow` command takes to decide.
const SLOW_DECIDE: Duration = Duration::from_millis(30);

impl Aggregate for Slow {
    const TYPE: &'static str = "Slow";
    type Command = Work;
    type Event = Worked;
    type Rejection = Never;

    fn decide(&self, _: &Work) -> Result<Vec<Worked>, Never> {
        std::thread::sleep(SLOW_DECIDE);
        Ok(vec![Worked])
    }

    fn apply(&mut self, _: &Worked) {
        self.done += 1;
    }
}

/// Under more load than an aggregate can serve, commands that waited longer than the
/// queue-time budget are refused early (typed, with a retry hint) without being executed,
/// instead of every command waiting longer and longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_waited_past_the_queue_time_budget_are_shed_unexecuted() {
    let dir = temp_dir();
    let mut options = RuntimeOptions::new(dir.path()).with_arbiters(nz(2));
    options.queue_time_max = Duration::from_millis(100);
    let rt = Runtime::open(options).expect("opens");
    rt.register::<Slow>().expect("registers");
    // 12 commands at once to one aggregate: each takes 30 ms, so the last ones wait well over
    // the 100 ms budget (the mailbox holds 16).
    let results = futures::future::join_all((0..12).map(|_| rt.execute::<Slow>("s-1", Work))).await;
    let executed = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let shed = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(ExecuteError::Overloaded {
                    what: Overload::QueueTime,
                    retry_after,
                    ..
                }) if !retry_after.is_zero()
            )
        })
        .count();
    assert_eq!(executed + shed, 12, "{results:?}");
    assert!(shed >= 1, "some commands must be shed: {results:?}");
    assert!(executed >= 1, "the first commands are served: {results:?}");
    let state = rt.state::<Slow>("s-1").expect("reads").expect("exists");
    assert_eq!(
        state.state.done,
        u64::try_from(executed).expect("fits"),
        "a shed command was not executed"
    );
    rt.shutdown().await.expect("a clean shutdown");
}

// ---------------------------------------------------------------------------------------------
// The read side
// ---------------------------------------------------------------------------------------------

/// Records the positions it sees.
struct Recorder(Arc<Mutex<Vec<Position>>>);

impl Subscriber for Recorder {
    fn handle<'a>(&'a mut self, event: &'a RecordedEvent) -> HandleFuture<'a> {
        self.0.lock().expect("not poisoned").push(event.position);
        Box::pin(async { Ok(()) })
    }
}

/// A store that fails reads for a while makes a subscriber wait and try again — it reports
/// `Retrying`, never `Failed` — and then it catches up with every event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_waits_out_failing_reads_and_catches_up() {
    let dir = temp_dir();
    let faults = Arc::new(Faults::default());
    let store = SledStore::open(SledOptions::new(dir.path()).with_faults(faults.clone()))
        .expect("the store opens");
    let rt = runtime_on(&store);
    for amount in 1..=5 {
        deposit(&rt, "a-1", amount).await;
    }
    faults.fail_next_reads(6);
    let seen = Arc::new(Mutex::new(Vec::new()));
    rt.subscribe(
        "recorder",
        Recorder(seen.clone()),
        SubscriberOptions::default(),
    )
    .expect("subscribes");
    let mut saw_retrying = false;
    let caught_up = wait_until(Duration::from_secs(30), || {
        let info = rt.subscriber("recorder").expect("registered");
        assert!(
            !matches!(info.status, SubscriberStatus::Failed(_)),
            "a passing store error must not fail the subscriber: {info:?}"
        );
        saw_retrying |= matches!(info.status, SubscriberStatus::Retrying(_));
        info.checkpoint == Position(5) && info.status == SubscriberStatus::Live
    })
    .await;
    assert!(caught_up, "{:?}", rt.subscriber("recorder"));
    assert!(saw_retrying, "the retries are visible in the status");
    deposit(&rt, "a-1", 6).await;
    assert!(
        wait_until(Duration::from_secs(10), || seen
            .lock()
            .expect("not poisoned")
            .len()
            == 6)
        .await
    );
    assert_eq!(
        *seen.lock().expect("not poisoned"),
        (1..=6).map(Position).collect::<Vec<_>>()
    );
    rt.shutdown().await.expect("a clean shutdown");
}

/// A process manager that schedules, for each deposit, a deposit of 1 to `echo-{account}`
/// due at once.
struct Echo;

impl ProcessManager for Echo {
    type State = ();

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        (!event.stream.aggregate_id().starts_with("echo-"))
            .then(|| event.stream.aggregate_id().to_string())
    }

    fn react(&self, _: &mut (), event: &RecordedEvent) -> Result<Vec<Action>, HandlerError> {
        let target = format!("echo-{}", event.stream.aggregate_id());
        Ok(vec![Action::schedule::<Account>(
            event.meta.recorded_at,
            target,
            &AccountCommand::Deposit { amount: 1 },
        )?])
    }
}

/// One deadline record that does not decode is set aside (kept in `deadlines-failed`) and
/// every other deadline still fires; before, the first bad record stopped every later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_deadline_is_set_aside_and_the_others_fire() {
    let dir = temp_dir();
    let store = open_store(dir.path());
    let db = store.database().clone();
    let deadlines = db.open_tree("deadlines").expect("opens");
    // Due long ago, so it sorts before every real deadline.
    let mut bad_key = 1u64.to_be_bytes().to_vec();
    bad_key.extend_from_slice(b"pm:garbage:0");
    deadlines
        .insert(&bad_key, &[1u8, 0xde, 0xad][..])
        .expect("inserted");
    let rt = runtime_on(&store);
    rt.process_manager("echo", Echo, SubscriberOptions::default())
        .expect("registers");
    for (i, id) in ["a-1", "a-2", "a-3"].into_iter().enumerate() {
        deposit(&rt, id, 10 + u64::try_from(i).expect("small")).await;
    }
    let fired = wait_until(Duration::from_secs(20), || {
        ["a-1", "a-2", "a-3"].iter().all(|id| {
            rt.state::<Account>(&format!("echo-{id}"))
                .ok()
                .flatten()
                .is_some_and(|s| s.state.balance == 1)
        })
    })
    .await;
    assert!(fired, "every good deadline fires");
    // Through the state store: its latest commits may not be compacted into the trees yet.
    // What a tick did with its deadlines is committed after it has sent them all, so the
    // last good deadline can have fired before the tick that sets the bad one aside commits.
    let state = rt.state_store();
    let set_aside = wait_until(Duration::from_secs(20), || {
        state
            .get(DEADLINES_FAILED, &bad_key)
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    assert!(set_aside, "the bad record is set aside");
    assert_eq!(
        state.get(DEADLINES_FAILED, &bad_key).expect("reads"),
        Some(vec![1u8, 0xde, 0xad]),
        "the bad record is kept, byte for byte"
    );
    assert!(
        state.get(DEADLINES, &bad_key).expect("reads").is_none(),
        "and no longer scheduled"
    );
    rt.shutdown().await.expect("a clean shutdown");
}

/// A process manager whose deadlines target an aggregate type nobody registered: its commands
/// can never be sent, so they are set aside instead of being retried every tick forever.
struct Misdirected;

impl ProcessManager for Misdirected {
    type State = ();

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream.aggregate_id().to_string())
    }

    fn react(&self, _: &mut (), event: &RecordedEvent) -> Result<Vec<Action>, HandlerError> {
        Ok(vec![Action::schedule::<Slow>(
            event.meta.recorded_at,
            "nobody",
            &Work,
        )?])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_can_never_be_sent_is_set_aside() {
    let dir = temp_dir();
    let store = open_store(dir.path());
    let rt = runtime_on(&store);
    rt.process_manager("misdirected", Misdirected, SubscriberOptions::default())
        .expect("registers");
    deposit(&rt, "a-1", 1).await;
    let state = rt.state_store().clone();
    let count = |space: &str| {
        state
            .range(space, Bound::Unbounded, Bound::Unbounded, 100)
            .expect("reads")
            .len()
    };
    assert!(
        wait_until(Duration::from_secs(20), || count(DEADLINES_FAILED) == 1
            && count(DEADLINES) == 0)
        .await,
        "failed: {}, scheduled: {}",
        count(DEADLINES_FAILED),
        count(DEADLINES)
    );
    rt.shutdown().await.expect("a clean shutdown");
}

/// A snapshot taken before the event at its version was recorded is of a timeline the log no
/// longer has (a crash in relaxed mode lost the tail after it was taken, and the versions
/// were written again): it is ignored, and the state is the fold of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_lost_tail_is_ignored() {
    let dir = temp_dir();
    let rt = open_runtime(dir.path());
    for amount in [1, 2, 3] {
        deposit(&rt, "a-1", amount).await;
    }
    rt.shutdown().await.expect("a clean shutdown");
    drop(rt);
    let rt = open_runtime(dir.path());
    let stream = StreamId::new(Account::TYPE, "a-1").expect("valid");
    let stale = Account {
        balance: 1_000_000,
        movements: 3,
    };
    rt.store()
        .save_snapshot(
            &stream,
            &Snapshot {
                version: Version(3),
                schema_version: Account::options().snapshot_schema_version,
                taken_at: Timestamp(1),
                state: annals::codec::encode_plain("snapshot", &stale).expect("encodes"),
            },
        )
        .expect("saved");
    let state = rt.state::<Account>("a-1").expect("reads").expect("exists");
    assert_eq!(
        state.state.balance, 6,
        "the fold of the log, not the stale snapshot"
    );
    // The aggregate's actor rehydrates (its first command) the same way.
    deposit(&rt, "a-1", 4).await;
    let state = rt.state::<Account>("a-1").expect("reads").expect("exists");
    assert_eq!(state.state.balance, 10);
    rt.shutdown().await.expect("a clean shutdown");
}

/// Balances by account, in a view.
struct Balances {
    by_account: View<u64>,
}

impl Projection for Balances {
    fn handle(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let AccountEvent::Deposited { amount } = event.decode::<AccountEvent>()?.payload else {
            return Ok(());
        };
        self.by_account.update(
            event.stream.aggregate_id().as_bytes(),
            event.position,
            |balance| Some(balance.unwrap_or(0) + amount),
        )?;
        Ok(())
    }
}

fn balances(views: &ViewSet) -> Result<Balances, ViewError> {
    Ok(Balances {
        by_account: views.view("by_account")?,
    })
}

fn balance_in_view(rt: &Runtime, id: &str) -> Option<u64> {
    rt.view::<u64>("balances", "by_account")
        .expect("the view")
        .get(id.as_bytes())
        .expect("reads")
}

/// A projection whose checkpoint, or whose written records, are beyond the log's head has seen
/// events the log lost (relaxed mode): it rebuilds from the start, so the events that get those
/// positions next are not skipped and the view equals the log. A plain subscriber goes on from
/// the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_side_ahead_of_the_log_rebuilds_or_resumes_from_the_head() {
    for key in ["balances@0", "balances@0/written"] {
        let dir = temp_dir();
        let store = open_store(dir.path());
        let rt = runtime_on(&store);
        deposit(&rt, "a-1", 5).await;
        // What a lost tail leaves behind: read-side progress past the head, and a record.
        store
            .state()
            .save_checkpoint(key, Position(1_000))
            .expect("saved");
        store
            .state()
            .save_checkpoint("recorder", Position(1_000))
            .expect("saved");
        rt.project("balances", SubscriberOptions::default(), balances)
            .expect("registers");
        let seen = Arc::new(Mutex::new(Vec::new()));
        rt.subscribe(
            "recorder",
            Recorder(seen.clone()),
            SubscriberOptions::default(),
        )
        .expect("subscribes");
        deposit(&rt, "a-1", 7).await;
        deposit(&rt, "a-2", 9).await;
        assert!(
            wait_until(Duration::from_secs(20), || balance_in_view(&rt, "a-1")
                == Some(12)
                && balance_in_view(&rt, "a-2") == Some(9))
            .await,
            "{key}: the projection rebuilt and took every event: a-1 {:?}, a-2 {:?}",
            balance_in_view(&rt, "a-1"),
            balance_in_view(&rt, "a-2")
        );
        assert!(
            wait_until(Duration::from_secs(10), || seen
                .lock()
                .expect("not poisoned")
                .len()
                == 2)
            .await
        );
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            vec![Position(2), Position(3)],
            "the subscriber goes on from the head, skipping nothing new"
        );
        rt.shutdown().await.expect("a clean shutdown");
        drop(store);
    }
}
