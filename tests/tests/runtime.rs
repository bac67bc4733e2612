//! Black-box tests of the runtime's behaviour, bad input and limits.
//!
//! Every test opens a real sled store in its own `TempDir` through the public embedding API
//! ([`Runtime`]), drives it with commands, and checks each outcome against what the store's log
//! holds afterwards — usually again after `shutdown()` and a reopen of the same directory.
//!
//! Besides the reference [`Account`] aggregate, the file defines two small aggregates:
//! - `Bulk`, whose command makes events of chosen sizes (or none, or a rejection), to reach the
//!   per-command limits and to exercise multi-event commits;
//! - `Gated`, whose `decide` waits for a gate the test opens, to hold commands in flight while
//!   `shutdown()` runs.
//!
//! Typed errors are compared with `matches!`, never by message; the one exception checks that a
//! corruption report names the damaged position.

use std::collections::BTreeMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::codec;
use annals::envelope::TRACE_ID_LEN_MAX;
use annals::store::sled::{Durability, Faults, IntegrityCheck, SledOptions, SledStore};
use annals::store::{EventStore, Snapshot, StoreError, StoreHealth};
use annals::types::AGGREGATE_ID_LEN_MAX;
use annals::{
    Aggregate, AggregateOptions, CommandId, DomainEvent, ExecuteError, ExecuteOptions, Executed,
    Limit, Overload, Placement, Position, RecordedEvent, Runtime, RuntimeError, RuntimeOptions,
    StreamId, Timestamp, Version,
};
use annals_domain::bank::{Account, AccountCommand, AccountEvent, AccountRejection};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Test aggregates
// ---------------------------------------------------------------------------------------------

/// Counts the events and payload bytes it was given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Bulk {
    events: usize,
    bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum BulkCommand {
    /// One `Made` event per entry of `sizes`, carrying that many bytes of text. `pad` only makes
    /// the command itself bigger.
    Make { sizes: Vec<usize>, pad: String },
    /// Always rejected.
    Refuse,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum BulkEvent {
    Made { text: String },
}

impl DomainEvent for BulkEvent {
    fn event_type(&self) -> &'static str {
        "Made"
    }
}

/// The rejection of the test aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum TestRejection {
    Refused,
}

impl std::fmt::Display for TestRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl std::error::Error for TestRejection {}

impl Aggregate for Bulk {
    const TYPE: &'static str = "Bulk";
    type Command = BulkCommand;
    type Event = BulkEvent;
    type Rejection = TestRejection;

    fn decide(&self, command: &BulkCommand) -> Result<Vec<BulkEvent>, TestRejection> {
        match command {
            BulkCommand::Make { sizes, .. } => Ok(sizes
                .iter()
                .map(|&n| BulkEvent::Made {
                    text: "x".repeat(n),
                })
                .collect()),
            BulkCommand::Refuse => Err(TestRejection::Refused),
        }
    }

    fn apply(&mut self, event: &BulkEvent) {
        let BulkEvent::Made { text } = event;
        self.events += 1;
        self.bytes += text.len();
    }
}

fn make(sizes: &[usize]) -> BulkCommand {
    BulkCommand::Make {
        sizes: sizes.to_vec(),
        pad: String::new(),
    }
}

/// Open while `Gated::decide` may return; only `graceful_shutdown_completes_commands_in_flight`
/// uses `Gated`, so no other test can see this flag.
static GATE_OPEN: AtomicBool = AtomicBool::new(false);
/// How many `Gated` commands have entered `decide`.
static GATED_DECIDING: AtomicUsize = AtomicUsize::new(0);
/// A bound on the gate wait, so a broken test fails instead of hanging.
const GATE_WAIT_MAX: Duration = Duration::from_secs(20);

/// An aggregate whose `decide` blocks (its arbiter thread) until the gate opens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Gated {
    ticks: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum GatedCommand {
    Tick { n: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum GatedEvent {
    Ticked { n: u64 },
}

impl DomainEvent for GatedEvent {
    fn event_type(&self) -> &'static str {
        "Ticked"
    }
}

impl Aggregate for Gated {
    const TYPE: &'static str = "Gated";
    type Command = GatedCommand;
    type Event = GatedEvent;
    type Rejection = TestRejection;

    fn decide(&self, command: &GatedCommand) -> Result<Vec<GatedEvent>, TestRejection> {
        GATED_DECIDING.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + GATE_WAIT_MAX;
        while !GATE_OPEN.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let GatedCommand::Tick { n } = *command;
        Ok(vec![GatedEvent::Ticked { n }])
    }

    fn apply(&mut self, event: &GatedEvent) {
        let GatedEvent::Ticked { n } = *event;
        self.ticks.push(n);
    }
}

/// An aggregate with a bug: its `decide` panics on `Boom` (the trait forbids it, but user code
/// has bugs). Used to check that one bad command does not take its aggregate down for good.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Fragile {
    count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum FragileCommand {
    Add,
    Boom,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum FragileEvent {
    Added,
}

impl DomainEvent for FragileEvent {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

impl Aggregate for Fragile {
    const TYPE: &'static str = "Fragile";
    type Command = FragileCommand;
    type Event = FragileEvent;
    type Rejection = TestRejection;

    fn decide(&self, command: &FragileCommand) -> Result<Vec<FragileEvent>, TestRejection> {
        match command {
            FragileCommand::Add => Ok(vec![FragileEvent::Added]),
            FragileCommand::Boom => {
                panic!("injected panic in Fragile::decide (expected by the test)")
            }
        }
    }

    fn apply(&mut self, _event: &FragileEvent) {
        self.count += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("a test limit is not zero")
}

fn temp_dir() -> TempDir {
    TempDir::new().expect("a temporary directory can be created")
}

/// Default options on `dir`, with two arbiters (the tests run on two cores).
fn options(dir: &TempDir) -> RuntimeOptions {
    RuntimeOptions::new(dir.path()).with_arbiters(nz(2))
}

/// Opens a runtime and registers `Account` with its own options.
fn open(options: RuntimeOptions) -> Runtime {
    let rt = Runtime::open(options).expect("the runtime opens");
    rt.register::<Account>().expect("Account registers");
    rt
}

async fn close(rt: Runtime) {
    rt.shutdown()
        .await
        .expect("a graceful shutdown of a healthy runtime succeeds");
}

fn account(id: &str) -> StreamId {
    StreamId::new(Account::TYPE, id).expect("a valid stream id")
}

fn command_id(id: &str) -> ExecuteOptions {
    ExecuteOptions::default().with_command_id(CommandId::new(id).expect("a valid command id"))
}

fn deposit_command(amount: u64) -> AccountCommand {
    AccountCommand::Deposit { amount }
}

/// Deposits and expects it to be committed.
async fn deposit(rt: &Runtime, id: &str, amount: u64) -> Executed<AccountEvent> {
    match rt.execute::<Account>(id, deposit_command(amount)).await {
        Ok(Ok(executed)) => executed,
        other => panic!("a deposit of {amount} on {id} must commit, got {other:?}"),
    }
}

/// The whole global log.
fn log(rt: &Runtime) -> Vec<RecordedEvent> {
    rt.read_all(Position(1), 1_000_000).expect("the log reads")
}

/// The amounts deposited on account `id`, in log order.
fn deposits_in_log(rt: &Runtime, id: &str) -> Vec<u64> {
    let stream = account(id);
    log(rt)
        .iter()
        .filter(|e| e.stream == stream)
        .map(|e| {
            match e
                .decode::<AccountEvent>()
                .expect("an account event decodes")
                .payload
            {
                AccountEvent::Deposited { amount } => amount,
                AccountEvent::Withdrawn { amount } => panic!("unexpected withdrawal of {amount}"),
            }
        })
        .collect()
}

/// Checks the balance and version of account `id` twice: as rebuilt from the store, and as
/// the live actor sees it (a withdrawal of one more than the balance is refused and names the
/// balance the actor holds).
async fn expect_account(rt: &Runtime, id: &str, balance: u64, version: Version) {
    let stored = rt
        .state::<Account>(id)
        .expect("the state loads")
        .expect("the account exists");
    assert_eq!(
        (stored.version, stored.state.balance),
        (version, balance),
        "stored state of {id}"
    );
    let refused = rt
        .execute::<Account>(
            id,
            AccountCommand::Withdraw {
                amount: balance + 1,
            },
        )
        .await;
    match refused {
        Ok(Err(AccountRejection::InsufficientFunds { balance: seen, .. })) => {
            assert_eq!(
                seen, balance,
                "the actor of {id} decides on the wrong balance"
            );
        }
        other => panic!("an overdraft of {id} must be refused, got {other:?}"),
    }
}

/// Polls `done` every few milliseconds for at most `limit`.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn sum_to(n: u64) -> u64 {
    (1..=n).sum()
}

// ---------------------------------------------------------------------------------------------
// Execute: envelopes, rejections, expected versions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_returns_envelopes_with_their_metadata() {
    let dir = temp_dir();
    let rt = open(options(&dir));
    rt.register::<Bulk>().expect("Bulk registers");

    let before = Timestamp::now();
    let first = rt
        .execute_with::<Account>(
            "a-1",
            deposit_command(10),
            command_id("cmd-1")
                .with_correlation_id("corr-1")
                .with_causation_id("cause-1"),
        )
        .await;
    let after = Timestamp::now();
    let Ok(Ok(first)) = first else {
        panic!("the deposit commits: {first:?}")
    };
    assert_eq!(first.stream, account("a-1"));
    assert_eq!(first.version, Version(1));
    assert_eq!(first.position, Some(Position(1)));
    assert!(!first.deduplicated);
    assert_eq!(first.events.len(), 1);
    let e = &first.events[0];
    assert_eq!(e.stream, account("a-1"));
    assert_eq!((e.version, e.position), (Version(1), Position(1)));
    assert_eq!(&*e.event_type, "Deposited");
    assert_eq!(e.schema_version, 1);
    assert_eq!(e.payload, AccountEvent::Deposited { amount: 10 });
    assert_eq!(
        e.meta.command_id,
        Some(CommandId::new("cmd-1").expect("valid"))
    );
    assert_eq!(e.meta.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(e.meta.causation_id.as_deref(), Some("cause-1"));
    assert!(
        before <= e.meta.recorded_at && e.meta.recorded_at <= after,
        "recorded_at is now"
    );

    // A command of three events, after another stream's event: versions count per stream,
    // positions across the log, and `Executed.position` is the last event's.
    let bulk = rt.execute::<Bulk>("b-1", make(&[1, 2, 3])).await;
    let Ok(Ok(bulk)) = bulk else {
        panic!("the bulk command commits: {bulk:?}")
    };
    let versions: Vec<_> = bulk.events.iter().map(|e| e.version).collect();
    let positions: Vec<_> = bulk.events.iter().map(|e| e.position).collect();
    assert_eq!(versions, [Version(1), Version(2), Version(3)]);
    assert_eq!(positions, [Position(2), Position(3), Position(4)]);
    assert_eq!(bulk.version, Version(3));
    assert_eq!(bulk.position, Some(Position(4)));
    assert!(bulk.events.iter().all(|e| &*e.event_type == "Made"));
    assert!(bulk.events.iter().all(|e| e.meta.command_id.is_none()
        && e.meta.correlation_id.is_none()
        && e.meta.causation_id.is_none()));
    let ids: std::collections::HashSet<_> = bulk.events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 3, "every event has its own id");

    // A second command continues both sequences.
    let second = deposit(&rt, "a-1", 5).await;
    assert_eq!(
        (second.version, second.position),
        (Version(2), Some(Position(5)))
    );

    // What the store returns is exactly what execute returned.
    let stored = rt
        .events::<Account>("a-1", Version(1), 100)
        .expect("events read");
    let returned: Vec<_> = first.events.iter().chain(&second.events).cloned().collect();
    assert_eq!(stored, returned);
    let stored = rt
        .events::<Bulk>("b-1", Version(1), 100)
        .expect("events read");
    assert_eq!(stored, bulk.events);
    assert_eq!(rt.head_position(), Position(5));
    close(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_rejection_is_a_value_and_writes_nothing() {
    let dir = temp_dir();
    let rt = open(options(&dir));

    let refused = rt
        .execute::<Account>("r-1", AccountCommand::Withdraw { amount: 1 })
        .await;
    assert!(
        matches!(
            refused,
            Ok(Err(AccountRejection::InsufficientFunds {
                balance: 0,
                requested: 1
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(rt.head_position(), Position(0));
    assert!(rt.state::<Account>("r-1").expect("state loads").is_none());

    deposit(&rt, "r-1", 5).await;
    let refused = rt
        .execute::<Account>("r-1", AccountCommand::Withdraw { amount: 6 })
        .await;
    assert!(
        matches!(
            refused,
            Ok(Err(AccountRejection::InsufficientFunds {
                balance: 5,
                requested: 6
            }))
        ),
        "{refused:?}"
    );
    let zero = rt.execute::<Account>("r-1", deposit_command(0)).await;
    assert!(
        matches!(zero, Ok(Err(AccountRejection::ZeroAmount))),
        "{zero:?}"
    );
    let overflow = rt
        .execute::<Account>("r-1", deposit_command(u64::MAX))
        .await;
    assert!(
        matches!(overflow, Ok(Err(AccountRejection::Overflow))),
        "{overflow:?}"
    );

    assert_eq!(log(&rt).len(), 1, "only the deposit was written");
    expect_account(&rt, "r-1", 5, Version(1)).await;
    close(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_version_guards_the_stream() {
    let dir = temp_dir();
    let rt = open(options(&dir));
    let expect = |v| ExecuteOptions::default().with_expected_version(Version(v));

    // Version(0): "must not exist yet".
    let created = rt
        .execute_with::<Account>("v-1", deposit_command(1), expect(0))
        .await;
    assert!(
        matches!(&created, Ok(Ok(e)) if e.version == Version(1)),
        "{created:?}"
    );
    let again = rt
        .execute_with::<Account>("v-1", deposit_command(100), expect(0))
        .await;
    assert!(
        matches!(
            &again,
            Err(ExecuteError::Conflict { stream, expected: Version(0), current: Version(1) })
                if *stream == account("v-1")
        ),
        "{again:?}"
    );

    let next = rt
        .execute_with::<Account>("v-1", deposit_command(2), expect(1))
        .await;
    assert!(
        matches!(&next, Ok(Ok(e)) if e.version == Version(2)),
        "{next:?}"
    );
    for stale in [0, 1, 3, 7] {
        let r = rt
            .execute_with::<Account>("v-1", deposit_command(100), expect(stale))
            .await;
        assert!(
            matches!(
                r,
                Err(ExecuteError::Conflict {
                    current: Version(2),
                    ..
                })
            ),
            "expected version {stale}: {r:?}"
        );
    }
    // A matching expected version does not turn a rejection into anything else.
    let refused = rt
        .execute_with::<Account>("v-1", AccountCommand::Withdraw { amount: 100 }, expect(2))
        .await;
    assert!(
        matches!(refused, Ok(Err(AccountRejection::InsufficientFunds { .. }))),
        "{refused:?}"
    );
    // A stream that does not exist is at version 0.
    let missing = rt
        .execute_with::<Account>("v-2", deposit_command(100), expect(1))
        .await;
    assert!(
        matches!(
            missing,
            Err(ExecuteError::Conflict {
                current: Version(0),
                ..
            })
        ),
        "{missing:?}"
    );
    assert_eq!(deposits_in_log(&rt, "v-1"), [1, 2]);
    assert_eq!(log(&rt).len(), 2, "no conflicting command wrote anything");
    close(rt).await;

    // A rehydrated actor knows its version.
    let rt = open(options(&dir));
    let stale = rt
        .execute_with::<Account>("v-1", deposit_command(100), expect(1))
        .await;
    assert!(
        matches!(
            stale,
            Err(ExecuteError::Conflict {
                current: Version(2),
                ..
            })
        ),
        "{stale:?}"
    );
    let ok = rt
        .execute_with::<Account>("v-1", deposit_command(3), expect(2))
        .await;
    assert!(
        matches!(&ok, Ok(Ok(e)) if e.version == Version(3)),
        "{ok:?}"
    );
    assert_eq!(deposits_in_log(&rt, "v-1"), [1, 2, 3]);
    close(rt).await;
}

// ---------------------------------------------------------------------------------------------
// Command ids
// ---------------------------------------------------------------------------------------------

/// What the first executions of `command_ids_deduplicate_across_restarts` returned.
struct FirstOutcomes {
    deposit: Executed<AccountEvent>,
    rejection: AccountRejection,
    log_len: usize,
}

/// Retries every command of `FirstOutcomes` and a few misuses of their ids; nothing may be
/// executed again.
async fn check_retries(rt: &Runtime, first: &FirstOutcomes) {
    let head = rt.head_position();

    // A retry returns the original outcome, marked as deduplicated.
    let retry = rt
        .execute_with::<Account>("d-1", deposit_command(10), command_id("dep-1"))
        .await;
    let Ok(Ok(retry)) = retry else {
        panic!("a retry returns the original outcome: {retry:?}")
    };
    assert!(retry.deduplicated);
    assert_eq!(retry.stream, first.deposit.stream);
    assert_eq!(retry.version, first.deposit.version);
    assert_eq!(retry.position, first.deposit.position);
    assert_eq!(retry.events, first.deposit.events);

    // ... even with an expected version that no longer matches: the stream moved on since.
    let retry = rt
        .execute_with::<Account>(
            "d-1",
            deposit_command(10),
            command_id("dep-1").with_expected_version(Version(0)),
        )
        .await;
    assert!(matches!(&retry, Ok(Ok(e)) if e.deduplicated && e.events == first.deposit.events));

    // A rejection is returned again, although the command would now succeed.
    let retry = rt
        .execute_with::<Account>(
            "d-1",
            AccountCommand::Withdraw { amount: 1000 },
            command_id("wd-1"),
        )
        .await;
    assert!(
        matches!(&retry, Ok(Err(r)) if *r == first.rejection),
        "{retry:?}"
    );

    // A command without events.
    let retry = rt
        .execute_with::<Bulk>("n-1", make(&[]), command_id("none-1"))
        .await;
    assert!(
        matches!(&retry, Ok(Ok(e)) if e.deduplicated && e.events.is_empty() && e.position.is_none()),
        "{retry:?}"
    );

    // The same id with another command, on another aggregate, or on another type.
    let reused: [(&str, ExecuteResultKind); 5] = [
        (
            "dep-1",
            kind(
                rt.execute_with::<Account>("d-1", deposit_command(11), command_id("dep-1"))
                    .await,
            ),
        ),
        (
            "dep-1",
            kind(
                rt.execute_with::<Account>("d-2", deposit_command(10), command_id("dep-1"))
                    .await,
            ),
        ),
        (
            "dep-1",
            kind(
                rt.execute_with::<Bulk>("d-1", make(&[1]), command_id("dep-1"))
                    .await,
            ),
        ),
        (
            "wd-1",
            kind(
                rt.execute_with::<Account>(
                    "d-1",
                    AccountCommand::Withdraw { amount: 999 },
                    command_id("wd-1"),
                )
                .await,
            ),
        ),
        (
            "none-1",
            kind(
                rt.execute_with::<Bulk>("n-1", make(&[1]), command_id("none-1"))
                    .await,
            ),
        ),
    ];
    for (id, outcome) in reused {
        match outcome {
            ExecuteResultKind::Error(ExecuteError::CommandIdReused(used)) => {
                assert_eq!(used.as_str(), id);
            }
            other => panic!("a reused command id {id} must be refused, got {other:?}"),
        }
    }

    assert_eq!(rt.head_position(), head, "no retry or reuse wrote an event");
    assert_eq!(log(rt).len(), first.log_len);
    expect_account(rt, "d-1", 5010, Version(2)).await;
}

/// The shape of an outcome, for a table of outcomes of different aggregate types.
#[derive(Debug)]
enum ExecuteResultKind {
    Executed,
    Rejected,
    Error(ExecuteError),
}

fn kind<E, R>(r: Result<Result<E, R>, ExecuteError>) -> ExecuteResultKind {
    match r {
        Ok(Ok(_)) => ExecuteResultKind::Executed,
        Ok(Err(_)) => ExecuteResultKind::Rejected,
        Err(e) => ExecuteResultKind::Error(e),
    }
}

/// A retry of a rejected command is answered with the stored rejection and says it was
/// replayed (nothing ran now), as a retry of a committed command does — before and after a
/// restart; the first answer does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_rejection_says_it_was_replayed() {
    let dir = temp_dir();
    for restart in 0..2 {
        let rt = open(options(&dir));
        if restart == 0 {
            deposit(&rt, "r-1", 10).await;
        }
        for attempt in 0..2 {
            let answered = rt
                .execute_answered::<Account>(
                    "r-1",
                    AccountCommand::Withdraw { amount: 50 },
                    command_id("too-much"),
                )
                .await
                .expect("no technical failure");
            assert!(
                matches!(
                    answered.result,
                    Err(AccountRejection::InsufficientFunds {
                        balance: 10,
                        requested: 50
                    })
                ),
                "{answered:?}"
            );
            assert_eq!(
                answered.replayed,
                restart > 0 || attempt > 0,
                "restart {restart}, attempt {attempt}"
            );
        }
        close(rt).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_ids_deduplicate_across_restarts() {
    let dir = temp_dir();
    let rt = open(options(&dir));
    rt.register::<Bulk>().expect("Bulk registers");

    let deposit = rt
        .execute_with::<Account>("d-1", deposit_command(10), command_id("dep-1"))
        .await;
    let Ok(Ok(deposit)) = deposit else {
        panic!("the deposit commits: {deposit:?}")
    };
    assert!(!deposit.deduplicated);
    assert_eq!(
        deposit.events[0].meta.command_id,
        Some(CommandId::new("dep-1").expect("valid"))
    );

    let refused = rt
        .execute_with::<Account>(
            "d-1",
            AccountCommand::Withdraw { amount: 1000 },
            command_id("wd-1"),
        )
        .await;
    let Ok(Err(rejection)) = refused else {
        panic!("the overdraft is refused: {refused:?}")
    };
    assert_eq!(
        rejection,
        AccountRejection::InsufficientFunds {
            balance: 10,
            requested: 1000
        }
    );

    let nothing = rt
        .execute_with::<Bulk>("n-1", make(&[]), command_id("none-1"))
        .await;
    assert!(
        matches!(&nothing, Ok(Ok(e)) if !e.deduplicated && e.events.is_empty()
            && e.position.is_none() && e.version == Version(0)),
        "{nothing:?}"
    );

    // Enough money now for the refused withdrawal: its retry must still be the rejection.
    deposit_plain(&rt, "d-1", 5000).await;
    let first = FirstOutcomes {
        deposit,
        rejection,
        log_len: 2,
    };
    assert_eq!(log(&rt).len(), first.log_len);

    check_retries(&rt, &first).await;
    close(rt).await;

    let rt = open(options(&dir));
    rt.register::<Bulk>().expect("Bulk registers");
    check_retries(&rt, &first).await;
    close(rt).await;
}

async fn deposit_plain(rt: &Runtime, id: &str, amount: u64) {
    deposit(rt, id, amount).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_command_execute_it_once() {
    let dir = temp_dir();
    let rt = open(options(&dir));
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let rt = rt.clone();
            tokio::spawn(async move {
                rt.execute_with::<Account>("once", deposit_command(25), command_id("once-1"))
                    .await
            })
        })
        .collect();
    let mut fresh = Vec::new();
    let mut deduplicated = Vec::new();
    for task in futures::future::join_all(tasks).await {
        match task.expect("the task ran") {
            Ok(Ok(e)) if e.deduplicated => deduplicated.push(e),
            Ok(Ok(e)) => fresh.push(e),
            other => panic!("every copy commits or returns the stored outcome, got {other:?}"),
        }
    }
    assert_eq!(fresh.len(), 1, "exactly one copy executed");
    assert_eq!(deduplicated.len(), 11);
    for e in &deduplicated {
        assert_eq!(
            e.events, fresh[0].events,
            "every copy reports the one execution"
        );
    }
    assert_eq!(deposits_in_log(&rt, "once"), [25]);
    close(rt).await;
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_limits_refuse_and_write_nothing() {
    // Limits set exactly at the encoded size of a reference command and event, so both sides
    // of each bound are tested.
    let at_limit_command = BulkCommand::Make {
        sizes: vec![100],
        pad: "p".repeat(200),
    };
    let command_bytes_max = codec::encode_plain("command", &at_limit_command)
        .expect("encodes")
        .len();
    let event_bytes_max = codec::encode_plain(
        "event",
        &BulkEvent::Made {
            text: "x".repeat(100),
        },
    )
    .expect("encodes")
    .len();
    let events_per_command_max = 4;

    let dir = temp_dir();
    let rt = open(options(&dir).with_command_limits(
        nz(command_bytes_max),
        nz(events_per_command_max),
        nz(event_bytes_max),
    ));
    rt.register::<Bulk>().expect("Bulk registers");

    // At every limit: accepted.
    let ok = rt.execute::<Bulk>("l-1", at_limit_command).await;
    assert!(matches!(&ok, Ok(Ok(e)) if e.events.len() == 1), "{ok:?}");
    let ok = rt.execute::<Bulk>("l-1", make(&[100, 1, 100, 2])).await;
    assert!(matches!(&ok, Ok(Ok(e)) if e.events.len() == 4), "{ok:?}");
    let head = rt.head_position();

    // One byte of command over.
    let over = BulkCommand::Make {
        sizes: vec![100],
        pad: "p".repeat(201),
    };
    let r = rt.execute::<Bulk>("l-1", over.clone()).await;
    assert!(
        matches!(
            &r,
            Err(ExecuteError::LimitExceeded { what: Limit::CommandBytes, limit, actual, stream })
                if *limit == command_bytes_max && *actual == command_bytes_max + 1
                    && *stream == StreamId::new("Bulk", "l-1").expect("valid")
        ),
        "{r:?}"
    );
    // One event over.
    let r = rt.execute::<Bulk>("l-1", make(&[1; 5])).await;
    assert!(
        matches!(
            r,
            Err(ExecuteError::LimitExceeded {
                what: Limit::EventsPerCommand,
                limit: 4,
                actual: 5,
                ..
            })
        ),
        "{r:?}"
    );
    // One byte of one event over, among events within the limit: nothing of it is written.
    let r = rt.execute::<Bulk>("l-1", make(&[1, 101, 1])).await;
    assert!(
        matches!(
            &r,
            Err(ExecuteError::LimitExceeded { what: Limit::EventBytes, limit, actual, .. })
                if *limit == event_bytes_max && *actual == event_bytes_max + 1
        ),
        "{r:?}"
    );
    // With a command id: refused the same way, no outcome recorded, so a retry is refused again
    // (not deduplicated) and the id stays free.
    for _ in 0..2 {
        let r = rt
            .execute_with::<Bulk>("l-1", make(&[1; 5]), command_id("big-1"))
            .await;
        assert!(
            matches!(r, Err(ExecuteError::LimitExceeded { .. })),
            "{r:?}"
        );
    }
    let id = CommandId::new("big-1").expect("valid");
    assert!(rt.store().command_outcome(&id).expect("reads").is_none());
    let r = rt
        .execute_with::<Bulk>("l-1", make(&[1]), command_id("big-1"))
        .await;
    assert!(
        matches!(&r, Ok(Ok(e)) if !e.deduplicated),
        "the id is still free: {r:?}"
    );

    assert_eq!(
        rt.head_position(),
        head.next(),
        "only the last command wrote an event"
    );
    let state = rt.state::<Bulk>("l-1").expect("loads").expect("exists");
    assert_eq!(
        state.state,
        Bulk {
            events: 6,
            bytes: 100 + 203 + 1
        }
    );
    // The actor is still usable after refusals.
    let r = rt.execute::<Bulk>("l-1", make(&[1])).await;
    assert!(matches!(&r, Ok(Ok(e)) if e.version == Version(7)), "{r:?}");
    close(rt).await;
}

// ---------------------------------------------------------------------------------------------
// Bounded queues and actors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_bound_refuses_without_losing_or_duplicating() {
    let dir = temp_dir();
    let rt = open(options(&dir).with_mailbox_capacity(nz(1)));

    let mut committed: Vec<(u64, Version)> = Vec::new();
    let mut overloaded = 0usize;
    let mut next_amount = 1u64;
    // Rounds of concurrent commands to one aggregate, until the bound was hit (nearly always in
    // the first round); bounded so a test that cannot overload fails instead of spinning.
    for _round in 0..20 {
        let tasks: Vec<_> = (0..48)
            .map(|_| {
                let rt = rt.clone();
                let amount = next_amount;
                next_amount += 1;
                tokio::spawn(async move {
                    (
                        amount,
                        rt.execute::<Account>("hot", deposit_command(amount)).await,
                    )
                })
            })
            .collect();
        for task in futures::future::join_all(tasks).await {
            let (amount, result) = task.expect("the task ran");
            match result {
                Ok(Ok(e)) => {
                    assert_eq!(e.events.len(), 1);
                    committed.push((amount, e.version));
                }
                Err(ExecuteError::Overloaded {
                    what: Overload::Mailbox,
                    stream,
                    retry_after,
                }) => {
                    assert_eq!(stream, account("hot"));
                    assert!(retry_after > Duration::ZERO);
                    overloaded += 1;
                }
                other => panic!("a deposit is committed or refused as overloaded, got {other:?}"),
            }
        }
        if overloaded > 0 {
            break;
        }
    }
    assert!(
        overloaded > 0,
        "a mailbox of 1 with 48 concurrent commands must overflow"
    );
    assert!(!committed.is_empty());

    // Every acknowledged command is in the log exactly once, and nothing else is.
    let mut acked: Vec<u64> = committed.iter().map(|(a, _)| *a).collect();
    acked.sort_unstable();
    let mut in_log = deposits_in_log(&rt, "hot");
    in_log.sort_unstable();
    assert_eq!(in_log, acked);
    let mut versions: Vec<u64> = committed.iter().map(|(_, v)| v.0).collect();
    versions.sort_unstable();
    let n = versions.len() as u64;
    assert_eq!(
        versions,
        (1..=n).collect::<Vec<_>>(),
        "each commit got its own version"
    );
    expect_account(&rt, "hot", acked.iter().sum(), Version(n)).await;
    close(rt).await;
}

/// Deposits `rounds` times on each of `ids` (sequentially), checking each version, and returns
/// the largest `live_actors` seen.
async fn deposit_rounds(rt: &Runtime, ids: &[String], rounds: u64) -> usize {
    let mut live_max = 0;
    for round in 1..=rounds {
        for id in ids {
            let e = deposit(rt, id, round).await;
            assert_eq!(e.version, Version(round), "{id} after re-activation");
            live_max = live_max.max(rt.stats().live_actors);
        }
    }
    live_max
}

/// How many actors over the cap may still be counted live: evicted actors stop asynchronously,
/// after the command that evicted them was routed.
const LIVE_SLACK: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_actor_cap_evicts_and_keeps_state() {
    let dir = temp_dir();
    let cap = 8;
    // Four shards of two: here the per-shard caps add up to exactly the configured cap.
    let mut opts = options(&dir).with_live_actors_max(nz(cap));
    opts.shards = nz(4);
    let rt = open(opts);
    let ids: Vec<String> = (0..40).map(|i| format!("cap-{i}")).collect();

    let live_max = deposit_rounds(&rt, &ids, 3).await;
    let stats = rt.stats();
    assert!(stats.evictions > 0, "{stats:?}");
    assert!(
        stats.activations > ids.len() as u64,
        "evicted actors were activated again: {stats:?}"
    );
    assert!(
        live_max <= cap + LIVE_SLACK,
        "live actors peaked at {live_max}, cap {cap}"
    );
    for id in &ids {
        expect_account(&rt, id, 6, Version(3)).await;
    }
    assert!(rt.stats().live_actors <= cap + LIVE_SLACK);
    close(rt).await;
}

/// Regression: the cap was split as `ceil(max / shards)` per shard over 64 shards, so any cap
/// below 64 allowed about 64 live actors (fixed in d609fa9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_actor_cap_holds_with_default_shards() {
    let dir = temp_dir();
    let cap = 8;
    let rt = open(options(&dir).with_live_actors_max(nz(cap)));
    let ids: Vec<String> = (0..100).map(|i| format!("cap-{i}")).collect();

    let live_max = deposit_rounds(&rt, &ids, 1).await;
    assert!(rt.stats().evictions > 0);
    assert!(
        live_max <= cap + LIVE_SLACK,
        "with live_actors_max = {cap}, live actors peaked at {live_max}"
    );
    close(rt).await;
}

/// Regression: two instances of one aggregate overlapped after an eviction; the stale one's
/// retry replayed to a head not yet acknowledged (spurious `Corrupt`) or ran out of retries
/// (`Conflict` for a command with no expected version) (fixed in d609fa9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_under_contention_fails_no_command() {
    // One live actor for three ids with concurrent callers: actors are evicted while commands
    // are queued in their mailbox and in the journal, so two instances of one aggregate overlap.
    let dir = temp_dir();
    let mut opts = options(&dir).with_live_actors_max(nz(1));
    opts.shards = nz(1);
    let rt = open(opts);
    let ids = ["x", "y", "z"];

    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let rt = rt.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..15u64 {
                    let id = ids[usize::try_from((t + i) % 3).expect("small")];
                    let amount = t * 1000 + i + 1;
                    let r = rt.execute::<Account>(id, deposit_command(amount)).await;
                    outcomes.push((id, amount, r));
                }
                outcomes
            })
        })
        .collect();
    let mut committed: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut unexpected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for task in futures::future::join_all(tasks).await {
        for (id, amount, r) in task.expect("the task ran") {
            match r {
                Ok(Ok(_)) => committed.entry(id).or_default().push(amount),
                Err(ExecuteError::Overloaded { .. }) => {}
                other => {
                    let variant = format!("{other:?}").chars().take(24).collect::<String>();
                    unexpected
                        .entry(variant)
                        .or_default()
                        .push(format!("{id} +{amount}: {other:?}"));
                }
            }
        }
    }
    assert!(rt.stats().evictions > 0);
    // Whatever failed, nothing acknowledged is lost or doubled, and the state is right.
    for id in ids {
        let mut acked = committed.remove(id).unwrap_or_default();
        acked.sort_unstable();
        let mut in_log = deposits_in_log(&rt, id);
        in_log.sort_unstable();
        assert_eq!(
            in_log, acked,
            "every acknowledged deposit on {id} is in the log once"
        );
        let n = acked.len() as u64;
        if n > 0 {
            expect_account(&rt, id, acked.iter().sum(), Version(n)).await;
        }
    }
    let counts: Vec<_> = unexpected
        .iter()
        .map(|(k, v)| (k.as_str(), v.len()))
        .collect();
    let examples: Vec<_> = unexpected.values().map(|v| v[0].as_str()).collect();
    assert!(
        unexpected.is_empty(),
        "commands without an expected version or command id may only commit or be refused as \
         overloaded; of 120, these failed otherwise: {counts:?}, e.g. {examples:#?}"
    );
    close(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_passivate_and_come_back_with_their_state() {
    let dir = temp_dir();
    let rt = Runtime::open(options(&dir)).expect("opens");
    rt.register_with::<Account>(
        AggregateOptions::default().with_idle_timeout(Duration::from_millis(50)),
    )
    .expect("registers");
    let ids: Vec<String> = (0..5).map(|i| format!("idle-{i}")).collect();
    for id in &ids {
        deposit(&rt, id, 7).await;
    }
    let settled = wait_until(Duration::from_secs(10), || {
        let s = rt.stats();
        s.passivations >= ids.len() as u64 && s.live_actors == 0
    })
    .await;
    let stats = rt.stats();
    assert!(settled, "idle actors passivate: {stats:?}");
    assert!(stats.passivations > 0);

    for id in &ids {
        let e = deposit(&rt, id, 3).await;
        assert_eq!(e.version, Version(2));
        expect_account(&rt, id, 10, Version(2)).await;
    }
    assert!(
        rt.stats().activations >= 2 * ids.len() as u64,
        "passivated actors came back"
    );
    close(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_under_contention_with_command_ids_is_exactly_once() {
    // Callers that retry every refusal with the same command id (what a client with an
    // idempotency key does), while the live-actor cap evicts actors with queued commands: every
    // command takes effect exactly once and every caller learns its outcome.
    let dir = temp_dir();
    let mut opts = options(&dir)
        .with_live_actors_max(nz(1))
        .with_mailbox_capacity(nz(2));
    opts.shards = nz(1);
    let rt = open(opts);
    let ids = ["p", "q", "r", "s"];
    let tasks: Vec<_> = (0..6u64)
        .map(|t| {
            let rt = rt.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..10u64 {
                    let id = ids[usize::try_from((t + i) % 4).expect("small")];
                    let amount = t * 1000 + i + 1;
                    let key = format!("dep-{amount}");
                    let mut attempts = 0u32;
                    let executed = loop {
                        attempts += 1;
                        let r = rt
                            .execute_with::<Account>(id, deposit_command(amount), command_id(&key))
                            .await;
                        match r {
                            Ok(Ok(e)) => break e,
                            Err(
                                ExecuteError::Overloaded { .. }
                                | ExecuteError::CommandInProgress(_)
                                | ExecuteError::OutcomeUnknown(_),
                            ) if attempts < 2000 => {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                            other => panic!("{id} +{amount} (attempt {attempts}): {other:?}"),
                        }
                    };
                    outcomes.push((id, amount, executed));
                }
                outcomes
            })
        })
        .collect();
    let mut acked: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for task in futures::future::join_all(tasks).await {
        for (id, amount, executed) in task.expect("the task ran") {
            let [event] = executed.events.as_slice() else {
                panic!("one event per deposit: {executed:?}");
            };
            assert_eq!(event.payload, AccountEvent::Deposited { amount });
            acked.entry(id).or_default().push(amount);
        }
    }
    assert!(rt.stats().evictions > 0);
    for id in ids {
        let mut expected = acked.remove(id).unwrap_or_default();
        expected.sort_unstable();
        let mut in_log = deposits_in_log(&rt, id);
        in_log.sort_unstable();
        assert_eq!(
            in_log, expected,
            "each deposit on {id} is in the log exactly once"
        );
        expect_account(
            &rt,
            id,
            expected.iter().sum(),
            Version(expected.len() as u64),
        )
        .await;
    }
    close(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_queue_bound_refuses_without_losing_or_duplicating() {
    let dir = temp_dir();
    let store = SledOptions::new(dir.path()).with_queue_capacity(nz(1));
    let rt = open(RuntimeOptions::with_store(store).with_arbiters(nz(2)));
    let mut committed: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut overloaded = 0usize;
    for round in 0..50u64 {
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let rt = rt.clone();
                let id = format!("j-{i}");
                let amount = round * 100 + i + 1;
                tokio::spawn(async move {
                    let r = rt.execute::<Account>(&id, deposit_command(amount)).await;
                    (id, amount, r)
                })
            })
            .collect();
        for task in futures::future::join_all(tasks).await {
            let (id, amount, r) = task.expect("the task ran");
            match r {
                Ok(Ok(_)) => committed.entry(id).or_default().push(amount),
                Err(ExecuteError::Overloaded {
                    what: Overload::Journal,
                    ..
                }) => overloaded += 1,
                other => panic!("committed or refused as journal overload, got {other:?}"),
            }
        }
        if overloaded > 0 {
            break;
        }
    }
    assert!(
        overloaded > 0,
        "a journal queue of 1 with 64 concurrent appenders must overflow"
    );
    for (id, mut acked) in committed {
        acked.sort_unstable();
        let mut in_log = deposits_in_log(&rt, &id);
        in_log.sort_unstable();
        assert_eq!(in_log, acked, "{id}");
        // The actor that was refused is still usable and has the right state.
        expect_account(&rt, &id, acked.iter().sum(), Version(acked.len() as u64)).await;
    }
    close(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rehydration_permit_serves_many_concurrent_activations() {
    let dir = temp_dir();
    let ids: Vec<String> = (0..30).map(|i| format!("h-{i}")).collect();
    let rt = open(options(&dir));
    for id in &ids {
        deposit(&rt, id, 4).await;
        deposit(&rt, id, 5).await;
    }
    close(rt).await;

    let rt = open(options(&dir).with_rehydrations_max(nz(1)));
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let (rt, id) = (rt.clone(), id.clone());
            tokio::spawn(async move { rt.execute::<Account>(&id, deposit_command(1)).await })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        let r = task.expect("the task ran");
        assert!(matches!(&r, Ok(Ok(e)) if e.version == Version(3)), "{r:?}");
    }
    assert!(rt.stats().rehydrations >= ids.len() as u64);
    close(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_aggregate_fails_its_command_without_wedging_its_id() {
    let dir = temp_dir();
    let rt = open(options(&dir));
    rt.register::<Fragile>().expect("Fragile registers");
    let bounded = |what: &'static str| {
        move |_| panic!("{what} did not complete within 10 s: the aggregate is wedged")
    };
    let limit = Duration::from_secs(10);

    let r = tokio::time::timeout(limit, rt.execute::<Fragile>("f", FragileCommand::Add))
        .await
        .unwrap_or_else(bounded("the first command"));
    assert!(matches!(&r, Ok(Ok(e)) if e.version == Version(1)), "{r:?}");
    let r = tokio::time::timeout(limit, rt.execute::<Fragile>("f", FragileCommand::Boom))
        .await
        .unwrap_or_else(bounded("the panicking command"));
    assert!(
        r.is_err(),
        "a command whose decide panicked is a technical failure: {r:?}"
    );
    // The id works again, from the state in the store.
    let r = tokio::time::timeout(limit, rt.execute::<Fragile>("f", FragileCommand::Add))
        .await
        .unwrap_or_else(bounded("the command after the panic"));
    assert!(matches!(&r, Ok(Ok(e)) if e.version == Version(2)), "{r:?}");
    // And so do other aggregates.
    for id in ["g", "h", "i"] {
        let r = tokio::time::timeout(limit, rt.execute::<Fragile>(id, FragileCommand::Add))
            .await
            .unwrap_or_else(bounded("a command on another aggregate"));
        assert!(matches!(&r, Ok(Ok(_))), "{id}: {r:?}");
    }
    let _ = tokio::time::timeout(limit, rt.shutdown()).await;
}

// ---------------------------------------------------------------------------------------------
// Snapshots and temporal state
// ---------------------------------------------------------------------------------------------

fn snapshot_every_10() -> AggregateOptions {
    AggregateOptions::default().with_snapshot_every(NonZeroU64::new(10))
}

fn load_snapshot(rt: &Runtime, id: &str, at_or_below: u64) -> Option<Snapshot> {
    rt.store()
        .load_snapshot(&account(id), Version(at_or_below))
        .expect("snapshots read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_every_n_events_give_the_right_state() {
    let dir = temp_dir();
    let rt = Runtime::open(options(&dir)).expect("opens");
    rt.register_with::<Account>(snapshot_every_10())
        .expect("registers");
    for i in 1..=35 {
        deposit(&rt, "s-1", i).await;
    }
    let state = rt.state::<Account>("s-1").expect("loads").expect("exists");
    assert_eq!(state.version, Version(35));
    assert_eq!(
        state.state,
        Account {
            balance: sum_to(35),
            movements: 35
        }
    );

    let at_30 = load_snapshot(&rt, "s-1", 35).expect("a snapshot was taken at 30");
    assert_eq!((at_30.version, at_30.schema_version), (Version(30), 1));
    let decoded: Account = codec::decode_plain(&at_30.state).expect("the snapshot decodes");
    assert_eq!(
        decoded,
        Account {
            balance: sum_to(30),
            movements: 30
        }
    );
    assert_eq!(
        load_snapshot(&rt, "s-1", 29).map(|s| s.version),
        Some(Version(20))
    );
    assert_eq!(load_snapshot(&rt, "s-1", 9).map(|s| s.version), None);
    close(rt).await;

    // Rehydration after a restart starts from the snapshot and replays the tail.
    let rt = Runtime::open(options(&dir)).expect("opens");
    rt.register_with::<Account>(snapshot_every_10())
        .expect("registers");
    expect_account(&rt, "s-1", sum_to(35), Version(35)).await;
    let e = deposit(&rt, "s-1", 36).await;
    assert_eq!(e.version, Version(36));
    close(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_another_schema_version_is_ignored() {
    let dir = temp_dir();
    let rt = Runtime::open(options(&dir)).expect("opens");
    rt.register_with::<Account>(snapshot_every_10().with_snapshot_schema_version(1))
        .expect("registers");
    for i in 1..=35 {
        deposit(&rt, "s-2", i).await;
    }
    // Replace the schema-1 snapshot at version 30 with a wrong state, so that using it shows.
    let real = load_snapshot(&rt, "s-2", 35).expect("a snapshot at 30");
    assert_eq!(real.version, Version(30));
    let wrong = Account {
        balance: 1_000_000,
        movements: 1,
    };
    let poisoned = Snapshot {
        state: codec::encode_plain("snapshot", &wrong).expect("encodes"),
        ..real.clone()
    };
    rt.store()
        .save_snapshot(&account("s-2"), &poisoned)
        .expect("saves");
    // Control: a runtime of the same schema does read it.
    let seen = rt.state::<Account>("s-2").expect("loads").expect("exists");
    assert_eq!(seen.state.balance, 1_000_000 + (31..=35).sum::<u64>());
    close(rt).await;

    // Schema 2: the schema-1 snapshot is ignored, the stream is replayed in full.
    let rt = Runtime::open(options(&dir)).expect("opens");
    rt.register_with::<Account>(snapshot_every_10().with_snapshot_schema_version(2))
        .expect("registers");
    let state = rt.state::<Account>("s-2").expect("loads").expect("exists");
    assert_eq!(state.version, Version(35));
    assert_eq!(
        state.state,
        Account {
            balance: sum_to(35),
            movements: 35
        }
    );
    expect_account(&rt, "s-2", sum_to(35), Version(35)).await;
    for v in [10, 20, 30, 35] {
        let at = rt
            .state_at::<Account>("s-2", Some(Version(v)))
            .expect("loads")
            .expect("exists");
        assert_eq!(
            at.state,
            Account {
                balance: sum_to(v),
                movements: v
            },
            "at version {v}"
        );
    }
    let e = deposit(&rt, "s-2", 36).await;
    assert_eq!(e.version, Version(36));
    close(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_at_returns_each_version_never_a_later_snapshot() {
    let dir = temp_dir();
    let rt = Runtime::open(options(&dir)).expect("opens");
    rt.register_with::<Account>(snapshot_every_10())
        .expect("registers");
    for i in 1..=25 {
        deposit(&rt, "t-1", i).await;
        // Another stream in between, so positions and versions differ.
        deposit(&rt, "t-other", i).await;
    }
    assert_eq!(
        load_snapshot(&rt, "t-1", 25).map(|s| s.version),
        Some(Version(20))
    );
    assert_eq!(
        load_snapshot(&rt, "t-1", 19).map(|s| s.version),
        Some(Version(10))
    );

    assert!(rt
        .state_at::<Account>("t-1", Some(Version(0)))
        .expect("loads")
        .is_none());
    for v in 1..=25 {
        let at = rt
            .state_at::<Account>("t-1", Some(Version(v)))
            .expect("loads")
            .expect("exists");
        assert_eq!(at.version, Version(v));
        assert_eq!(
            at.state,
            Account {
                balance: sum_to(v),
                movements: v
            },
            "at version {v}"
        );
    }
    let beyond = rt
        .state_at::<Account>("t-1", Some(Version(1000)))
        .expect("loads")
        .expect("exists");
    assert_eq!(
        beyond.version,
        Version(25),
        "a version past the head is the head"
    );
    let head = rt
        .state_at::<Account>("t-1", None)
        .expect("loads")
        .expect("exists");
    assert_eq!(
        head.state,
        Account {
            balance: sum_to(25),
            movements: 25
        }
    );
    assert!(rt
        .state_at::<Account>("t-none", Some(Version(3)))
        .expect("loads")
        .is_none());
    close(rt).await;
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_types_invalid_ids_and_double_registration_are_typed_errors() {
    let dir = temp_dir();
    let rt = open(options(&dir));

    let r = rt.execute::<Bulk>("b-1", make(&[1])).await;
    assert!(
        matches!(&r, Err(ExecuteError::Unregistered(t)) if t == "Bulk"),
        "{r:?}"
    );
    assert!(matches!(
        rt.state::<Bulk>("b-1"),
        Err(ExecuteError::Unregistered(_))
    ));

    let too_long = "x".repeat(AGGREGATE_ID_LEN_MAX + 1);
    for id in ["", too_long.as_str()] {
        let r = rt.execute::<Account>(id, deposit_command(1)).await;
        assert!(
            matches!(r, Err(ExecuteError::InvalidId(_))),
            "id of {} bytes: {r:?}",
            id.len()
        );
        let r = rt.state::<Account>(id);
        assert!(
            matches!(r, Err(ExecuteError::InvalidId(_))),
            "id of {} bytes: {r:?}",
            id.len()
        );
    }
    // The longest valid id works.
    let longest = "y".repeat(AGGREGATE_ID_LEN_MAX);
    deposit(&rt, &longest, 1).await;
    assert!(CommandId::new("").is_err());
    assert!(CommandId::new("k".repeat(129)).is_err());

    let again = rt.register::<Account>();
    assert!(
        matches!(again, Err(RuntimeError::AlreadyRegistered("Account"))),
        "{again:?}"
    );
    let again = rt.register_with::<Account>(AggregateOptions::default());
    assert!(
        matches!(again, Err(RuntimeError::AlreadyRegistered("Account"))),
        "{again:?}"
    );
    // The first registration still works.
    deposit(&rt, "a-1", 1).await;

    assert_eq!(log(&rt).len(), 2, "no refused command wrote anything");
    close(rt).await;
}

/// Regression: correlation and causation ids were never checked against `TRACE_ID_LEN_MAX`, so
/// a megabyte id bypassed every size limit into the log (fixed in d609fa9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_ids_are_bounded() {
    let dir = temp_dir();
    let rt = open(options(&dir));
    let long = "c".repeat(TRACE_ID_LEN_MAX + 1);
    let huge = "c".repeat(1 << 20);
    let cases = [
        ExecuteOptions::default().with_correlation_id(long.as_str()),
        ExecuteOptions::default().with_causation_id(long.as_str()),
        ExecuteOptions::default().with_correlation_id(huge.as_str()),
        ExecuteOptions::default().with_correlation_id(""),
    ];
    for options in cases {
        let len = options
            .correlation_id
            .as_deref()
            .or(options.causation_id.as_deref())
            .map(str::len);
        let r = rt
            .execute_with::<Account>("a-1", deposit_command(1), options)
            .await;
        assert!(
            matches!(r, Err(ExecuteError::InvalidId(_))),
            "a trace id of {len:?} bytes must be refused as invalid, got {}",
            match &r {
                Ok(Ok(e)) => format!("committed at version {}", e.version),
                other => format!("{other:?}"),
            }
        );
    }
    // At the limit: accepted.
    let ok = "c".repeat(TRACE_ID_LEN_MAX);
    let r = rt
        .execute_with::<Account>(
            "a-2",
            deposit_command(1),
            ExecuteOptions::default().with_correlation_id(ok.as_str()),
        )
        .await;
    assert!(matches!(r, Ok(Ok(_))), "{r:?}");
    assert!(
        deposits_in_log(&rt, "a-1").is_empty(),
        "no refused command wrote anything"
    );
    close(rt).await;
}

// ---------------------------------------------------------------------------------------------
// The store on disk: locks and corruption
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_directory_is_reported_as_locked() {
    let dir = temp_dir();
    let first = SledStore::open(SledOptions::new(dir.path())).expect("the first open succeeds");
    let second = SledStore::open(SledOptions::new(dir.path()));
    assert!(
        matches!(second, Err(StoreError::Locked { .. })),
        "{second:?}"
    );
    let rt = Runtime::open(options(&dir));
    assert!(
        matches!(rt, Err(RuntimeError::Store(StoreError::Locked { .. }))),
        "{rt:?}"
    );

    first.shutdown().expect("shuts down");
    drop(first);
    let rt = open(options(&dir));
    deposit(&rt, "a-1", 1).await;
    close(rt).await;
}

/// Writes three commits, one command at a time (so each is its own batch and log entry), and
/// closes the store.
async fn three_commits(dir: &TempDir) {
    let rt = open(options(dir));
    for amount in 1..=3 {
        deposit(&rt, "c-1", amount).await;
    }
    close(rt).await;
}

/// Opens the closed store with plain sled. sled releases its directory lock on one of its I/O
/// threads just after the last handle drops (spacejam/sled#1234), so this waits (bounded) while
/// the lock of the previous close is still held. sled reports that only as an I/O error with
/// this message; there is no typed variant to match.
fn raw_log(dir: &TempDir) -> (sled::Db, sled::Tree) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let db = loop {
        match annals::store::sled::sled_config(dir.path())
            .expect("the store's sled configuration")
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other.expect("sled opens the closed store"),
        }
    };
    let log = db.open_tree("log").expect("the log tree opens");
    (db, log)
}

/// The raw key/value pairs of the log tree.
fn raw_log_entries(dir: &TempDir) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (db, log) = raw_log(dir);
    let entries = log
        .iter()
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<Vec<_>, _>>()
        .expect("the raw log reads");
    drop(log);
    drop(db);
    entries
}

/// Bytes that are no commit record: the format byte of the current encoding, then junk.
const GARBAGE: &[u8] = &[1, 0xff, 0x00, 0x13, 0x37, 0xde, 0xad];

/// Overwrites the log entry at the second key with [`GARBAGE`]; returns its position.
fn corrupt_second_record(dir: &TempDir) -> u64 {
    let (db, log) = raw_log(dir);
    let key = log
        .iter()
        .keys()
        .nth(1)
        .expect("a second log entry")
        .expect("reads");
    let position = u64::from_be_bytes(key.as_ref().try_into().expect("log keys are 8 bytes"));
    log.insert(&key, GARBAGE).expect("the garbage is written");
    db.flush().expect("flushes");
    drop(log);
    drop(db);
    position
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_log_record_is_reported_with_its_position_and_left_untouched() {
    let dir = temp_dir();
    three_commits(&dir).await;
    let position = corrupt_second_record(&dir);
    let damaged = raw_log_entries(&dir);

    let open_store = || SledStore::open(SledOptions::new(dir.path()));
    let first = match open_store() {
        Err(e @ StoreError::Corrupt { .. }) => e,
        other => panic!("a garbage log record is corruption, got {other:?}"),
    };
    let StoreError::Corrupt {
        what: first_what, ..
    } = &first
    else {
        unreachable!()
    };
    let message = first.to_string();
    assert!(
        message.contains(&format!("position {position}")),
        "the report names position {position}: {message}"
    );

    // Nothing was changed: the garbage and every other entry are still there, byte for byte.
    assert_eq!(raw_log_entries(&dir), damaged);
    let key = position.to_be_bytes().to_vec();
    assert!(damaged.iter().any(|(k, v)| *k == key && v == GARBAGE));

    // And opening again reports the same corruption, not a different one.
    let second = open_store();
    assert!(
        matches!(&second, Err(StoreError::Corrupt { what, .. }) if what == first_what),
        "{second:?}"
    );
    drop(second);
    let rt = Runtime::open(options(&dir));
    assert!(
        matches!(rt, Err(RuntimeError::Store(StoreError::Corrupt { .. }))),
        "{rt:?}"
    );
    assert_eq!(raw_log_entries(&dir), damaged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_found_after_a_tail_check_fails_reads_and_writes_nothing() {
    let dir = temp_dir();
    three_commits(&dir).await;
    corrupt_second_record(&dir);
    let damaged = raw_log_entries(&dir);

    // The tail check does not read the old log, so the store opens ...
    let store = SledOptions::new(dir.path()).with_integrity_check(IntegrityCheck::Tail);
    let rt = open(RuntimeOptions::with_store(store).with_arbiters(nz(2)));
    // ... but every read that meets the record reports it, and nothing is decided on it.
    let state = rt.state::<Account>("c-1");
    assert!(
        matches!(state, Err(ExecuteError::Store(StoreError::Corrupt { .. }))),
        "{state:?}"
    );
    let r = rt.execute::<Account>("c-1", deposit_command(4)).await;
    assert!(
        matches!(r, Err(ExecuteError::Store(StoreError::Corrupt { .. }))),
        "{r:?}"
    );
    let all = rt.read_all(Position(1), 100);
    assert!(matches!(all, Err(StoreError::Corrupt { .. })), "{all:?}");
    let _ = rt.shutdown().await;
    drop(rt);
    let after = raw_log_entries(&dir);
    assert!(
        after.starts_with(&damaged),
        "the damaged log is left as it was"
    );
    assert_eq!(
        after.len(),
        damaged.len(),
        "no deposit on the corrupt stream was written"
    );
}

// ---------------------------------------------------------------------------------------------
// Injected I/O failures
// ---------------------------------------------------------------------------------------------

fn faulty_options(dir: &TempDir, faults: &Arc<Faults>) -> RuntimeOptions {
    let store = SledOptions::new(dir.path()).with_faults(faults.clone());
    RuntimeOptions::with_store(store).with_arbiters(nz(2))
}

fn is_failed<T: std::fmt::Debug>(r: &Result<T, ExecuteError>) -> bool {
    matches!(r, Err(ExecuteError::Store(StoreError::Failed { .. })))
}

/// Arms one fault with `arm`, then checks that the store fails, acknowledges nothing more, and
/// recovers every acknowledged command after a restart.
async fn a_failed_write_acknowledges_nothing(arm: fn(&Faults)) {
    let dir = temp_dir();
    let faults = Arc::new(Faults::default());
    let rt = open(faulty_options(&dir, &faults));
    for (id, amount) in [("a", 1), ("b", 2), ("a", 3), ("b", 4), ("a", 5)] {
        deposit(&rt, id, amount).await;
    }
    let head = rt.head_position();
    assert_eq!(rt.health(), StoreHealth::Ready);

    arm(&faults);
    let failed = rt.execute::<Account>("a", deposit_command(100)).await;
    assert!(
        is_failed(&failed),
        "the command of the failed write: {failed:?}"
    );
    assert!(
        matches!(rt.health(), StoreHealth::Failed(_)),
        "{:?}",
        rt.health()
    );

    // Every later write is refused: same actor, another live one, a new one, with a command id.
    for (id, amount) in [("a", 200), ("b", 201), ("c", 202)] {
        let r = rt.execute::<Account>(id, deposit_command(amount)).await;
        assert!(is_failed(&r), "a write after the failure on {id}: {r:?}");
    }
    let r = rt
        .execute_with::<Account>("b", deposit_command(203), command_id("after-1"))
        .await;
    assert!(is_failed(&r), "{r:?}");
    let r = rt
        .execute_with::<Account>("b", deposit_command(203), command_id("after-1"))
        .await;
    assert!(is_failed(&r), "its retry: {r:?}");
    assert_eq!(
        rt.head_position(),
        head,
        "nothing after the failure became visible"
    );
    assert_eq!(log(&rt).len(), 5);
    let shutdown = rt.shutdown().await;
    assert!(
        matches!(
            shutdown,
            Err(RuntimeError::Store(StoreError::Failed { .. }))
        ),
        "shutdown reports the failure: {shutdown:?}"
    );
    drop(rt);

    // A restart recovers: every acknowledged deposit is there, in order; the one whose write
    // failed has an unknown outcome and may follow them; nothing refused later is there.
    let rt = open(options(&dir));
    assert_eq!(rt.health(), StoreHealth::Ready);
    let a = deposits_in_log(&rt, "a");
    assert_eq!(a[..3], [1, 3, 5], "{a:?}");
    assert!(a[3..].is_empty() || a[3..] == [100], "{a:?}");
    assert_eq!(deposits_in_log(&rt, "b"), [2, 4]);
    assert!(deposits_in_log(&rt, "c").is_empty());
    let balance_a: u64 = a.iter().sum();
    let version_a = Version(a.len() as u64);
    expect_account(&rt, "a", balance_a, version_a).await;
    expect_account(&rt, "b", 6, Version(2)).await;
    let e = deposit(&rt, "b", 7).await;
    assert_eq!(e.version, Version(3));
    let r = rt
        .execute_with::<Account>("b", deposit_command(203), command_id("after-1"))
        .await;
    assert!(
        matches!(&r, Ok(Ok(e)) if !e.deduplicated),
        "the refused id was never used: {r:?}"
    );
    close(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_acknowledges_nothing_and_a_restart_recovers() {
    a_failed_write_acknowledges_nothing(Faults::fail_next_fsync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_insert_acknowledges_nothing_and_a_restart_recovers() {
    a_failed_write_acknowledges_nothing(Faults::fail_next_insert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_fsync_failed_is_not_returned_on_retry() {
    let dir = temp_dir();
    let faults = Arc::new(Faults::default());
    let rt = open(faulty_options(&dir, &faults));
    deposit(&rt, "a", 10).await;
    faults.fail_next_fsync();
    let first = rt
        .execute_with::<Account>("a", deposit_command(5), command_id("k-1"))
        .await;
    assert!(is_failed(&first), "{first:?}");
    let retry = rt
        .execute_with::<Account>("a", deposit_command(5), command_id("k-1"))
        .await;
    assert!(
        is_failed(&retry),
        "an outcome never acknowledged is not returned: {retry:?}"
    );
    let _ = rt.shutdown().await;
}

/// Regression: a rejection's (or no-event) command record was readable before its fsync, so a
/// retry returned an outcome never acknowledged; a commit was not (fixed in d609fa9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_whose_fsync_failed_is_not_returned_on_retry() {
    let dir = temp_dir();
    let faults = Arc::new(Faults::default());
    let rt = open(faulty_options(&dir, &faults));
    rt.register::<Bulk>().expect("Bulk registers");
    deposit(&rt, "a", 10).await;

    faults.fail_next_fsync();
    let overdraft = AccountCommand::Withdraw { amount: 1000 };
    let first = rt
        .execute_with::<Account>("a", overdraft.clone(), command_id("k-2"))
        .await;
    assert!(is_failed(&first), "{first:?}");
    let retry = rt
        .execute_with::<Account>("a", overdraft, command_id("k-2"))
        .await;
    assert!(
        is_failed(&retry),
        "the rejection was never made durable, so it must not be returned as the command's \
         outcome (a commit in the same situation is not): {retry:?}"
    );
    // The same for a command that produced no events.
    let retry = rt
        .execute_with::<Bulk>("n", make(&[]), command_id("k-3"))
        .await;
    assert!(is_failed(&retry), "{retry:?}");
    let _ = rt.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown and durability modes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_completes_commands_in_flight() {
    let dir = temp_dir();
    let rt = open(options(&dir));
    rt.register::<Gated>().expect("Gated registers");
    GATE_OPEN.store(false, Ordering::SeqCst);

    let tasks: Vec<_> = (1..=6u64)
        .map(|n| {
            let rt = rt.clone();
            tokio::spawn(
                async move { (n, rt.execute::<Gated>("g", GatedCommand::Tick { n }).await) },
            )
        })
        .collect();
    // One command is being decided (and holds the others in the mailbox behind it).
    assert!(
        wait_until(Duration::from_secs(10), || GATED_DECIDING
            .load(Ordering::SeqCst)
            >= 1)
        .await,
        "a gated command starts"
    );
    let shutdown = tokio::spawn({
        let rt = rt.clone();
        async move { rt.shutdown().await }
    });
    // Wait until shutdown refuses new commands (Bulk is unregistered, so until then a probe is
    // refused as unregistered and executes nothing).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rt.execute::<Bulk>("probe", BulkCommand::Refuse).await {
            Err(ExecuteError::ShuttingDown) => break,
            Err(ExecuteError::Unregistered(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => panic!("shutdown must start refusing commands, got {other:?}"),
        }
    }
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the commands in flight"
    );

    GATE_OPEN.store(true, Ordering::SeqCst);
    let mut committed = Vec::new();
    for task in futures::future::join_all(tasks).await {
        let (n, r) = task.expect("the task ran");
        match r {
            Ok(Ok(e)) => {
                assert_eq!(e.events.len(), 1);
                committed.push(n);
            }
            Err(ExecuteError::ShuttingDown) => {}
            other => panic!(
                "a command in flight completes (or was refused before it entered), got {other:?}"
            ),
        }
    }
    shutdown
        .await
        .expect("the task ran")
        .expect("the shutdown succeeds");
    assert!(
        !committed.is_empty(),
        "the command being decided when shutdown began completed"
    );

    let after = rt.execute::<Account>("a", deposit_command(1)).await;
    assert!(
        matches!(after, Err(ExecuteError::ShuttingDown)),
        "{after:?}"
    );
    let after = rt.execute::<Gated>("g", GatedCommand::Tick { n: 99 }).await;
    assert!(
        matches!(after, Err(ExecuteError::ShuttingDown)),
        "{after:?}"
    );
    rt.shutdown().await.expect("shutdown is idempotent");
    drop(rt);

    let rt = open(options(&dir));
    rt.register::<Gated>().expect("Gated registers");
    let state = rt.state::<Gated>("g").expect("loads").expect("exists");
    let mut ticks = state.state.ticks.clone();
    ticks.sort_unstable();
    committed.sort_unstable();
    assert_eq!(
        ticks, committed,
        "exactly the acknowledged commands are in the log"
    );
    close(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_durability_acknowledges_and_keeps_everything_on_graceful_shutdown() {
    let dir = temp_dir();
    let store = SledOptions::new(dir.path()).with_durability(Durability::Relaxed {
        flush_interval: Duration::from_millis(50),
    });
    let rt = open(RuntimeOptions::with_store(store).with_arbiters(nz(2)));
    let tasks: Vec<_> = (0..4u64)
        .map(|t| {
            let rt = rt.clone();
            tokio::spawn(async move {
                for i in 1..=10 {
                    deposit(&rt, &format!("r-{t}"), i).await;
                }
            })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        task.expect("the task ran");
    }
    assert_eq!(rt.head_position(), Position(40));
    close(rt).await;

    let rt = open(options(&dir));
    assert_eq!(log(&rt).len(), 40);
    for t in 0..4 {
        let id = format!("r-{t}");
        assert_eq!(deposits_in_log(&rt, &id), (1..=10).collect::<Vec<_>>());
        expect_account(&rt, &id, sum_to(10), Version(10)).await;
    }
    close(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_runtime_without_shutdown_keeps_every_acknowledged_command() {
    let dir = temp_dir();
    let rt = open(options(&dir));
    for i in 1..=10 {
        deposit(&rt, "drop-1", i).await;
    }
    drop(rt);
    let rt = open(options(&dir));
    assert_eq!(deposits_in_log(&rt, "drop-1"), (1..=10).collect::<Vec<_>>());
    expect_account(&rt, "drop-1", sum_to(10), Version(10)).await;
    close(rt).await;
}

/// The runtime runs its own actor threads, so executing needs no particular async runtime: a
/// plain `block_on` works, and so does dropping the runtime without `shutdown()` (which alone
/// needs a tokio timer).
#[test]
fn execute_works_without_a_tokio_runtime() {
    let dir = temp_dir();
    let rt = open(options(&dir));
    for i in 1..=3 {
        let r = futures::executor::block_on(rt.execute::<Account>("plain", deposit_command(i)));
        assert!(matches!(&r, Ok(Ok(e)) if e.version == Version(i)), "{r:?}");
    }
    drop(rt);
    let rt = open(options(&dir));
    assert_eq!(deposits_in_log(&rt, "plain"), [1, 2, 3]);
    drop(rt);
}

// ---------------------------------------------------------------------------------------------
// Placement
// ---------------------------------------------------------------------------------------------

/// Which thread ran each `decide` and `apply` of [`Placed`], by the tag its command carried.
static PLACED_ON: std::sync::Mutex<Vec<(u64, &'static str, std::thread::ThreadId)>> =
    std::sync::Mutex::new(Vec::new());

/// An aggregate that notes the thread its `decide` and `apply` run on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Placed {
    tags: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum PlacedCommand {
    Note { tag: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum PlacedEvent {
    Noted { tag: u64 },
}

impl DomainEvent for PlacedEvent {
    fn event_type(&self) -> &'static str {
        "Noted"
    }
}

fn note_thread(tag: u64, step: &'static str) {
    PLACED_ON
        .lock()
        .expect("the placement log's lock is not poisoned")
        .push((tag, step, std::thread::current().id()));
}

fn threads_of(tag: u64, step: &str) -> Vec<std::thread::ThreadId> {
    PLACED_ON
        .lock()
        .expect("the placement log's lock is not poisoned")
        .iter()
        .filter(|(t, s, _)| *t == tag && *s == step)
        .map(|(_, _, thread)| *thread)
        .collect()
}

impl Aggregate for Placed {
    const TYPE: &'static str = "Placed";
    type Command = PlacedCommand;
    type Event = PlacedEvent;
    type Rejection = TestRejection;

    fn decide(&self, command: &PlacedCommand) -> Result<Vec<PlacedEvent>, TestRejection> {
        let PlacedCommand::Note { tag } = *command;
        note_thread(tag, "decide");
        Ok(vec![PlacedEvent::Noted { tag }])
    }

    fn apply(&mut self, event: &PlacedEvent) {
        let PlacedEvent::Noted { tag } = *event;
        note_thread(tag, "apply");
        self.tags.push(tag);
    }
}

fn open_placed(dir: &TempDir, placement: Placement) -> Runtime {
    let rt = Runtime::open(
        RuntimeOptions::new(dir.path())
            .with_arbiters(NonZeroUsize::new(2).expect("non-zero"))
            .with_placement(placement),
    )
    .expect("the runtime opens");
    rt.register::<Placed>().expect("Placed registers");
    rt
}

/// With [`Placement::Caller`], an aggregate activated by a caller on an actix arbiter (as an
/// HTTP worker is) runs its commands on that caller's thread, and rehydrates from the store
/// elsewhere (the blocking pool), never holding up the caller's thread with store reads; a
/// caller that is not on an arbiter gets the runtime's arbiters, as with
/// [`Placement::Arbiters`], which never uses the caller's thread; after `release_callers`,
/// neither does `Caller`.
#[test]
fn a_caller_placed_actor_runs_on_the_callers_thread_and_rehydrates_elsewhere() {
    let dir = TempDir::new().expect("a temporary directory can be created");
    // History to rehydrate: tag 1, written by a runtime that places on its own arbiters.
    actix_rt::System::new().block_on(async {
        let rt = open_placed(&dir, Placement::Arbiters);
        rt.execute::<Placed>("p-1", PlacedCommand::Note { tag: 1 })
            .await
            .expect("executes")
            .expect("accepted");
        assert!(
            !threads_of(1, "decide").contains(&std::thread::current().id()),
            "Placement::Arbiters never runs an actor on the caller's thread"
        );
        close(rt).await;
    });

    actix_rt::System::new().block_on(async {
        let caller = std::thread::current().id();
        let rt = open_placed(&dir, Placement::Caller);
        let executed = rt
            .execute::<Placed>("p-1", PlacedCommand::Note { tag: 2 })
            .await
            .expect("executes")
            .expect("accepted");
        assert_eq!(executed.version, Version(2), "rehydrated from the history");
        assert_eq!(
            threads_of(2, "decide"),
            vec![caller],
            "the command ran on the caller's thread"
        );
        assert_eq!(
            threads_of(2, "apply"),
            vec![caller],
            "its event was applied on the caller's thread"
        );
        let replayed = threads_of(1, "apply");
        assert_eq!(
            replayed.len(),
            2,
            "applied once when written, once when rehydrated"
        );
        assert!(
            !replayed.contains(&caller),
            "the rehydration did not run on the caller's thread"
        );

        // A caller off any arbiter (a plain thread): the runtime's arbiters.
        let rt2 = rt.clone();
        let plain = std::thread::spawn(move || {
            futures::executor::block_on(
                rt2.execute::<Placed>("p-2", PlacedCommand::Note { tag: 3 }),
            )
            .expect("executes")
            .expect("accepted");
            std::thread::current().id()
        })
        .join()
        .expect("the plain thread does not panic");
        assert!(
            !threads_of(3, "decide").contains(&plain),
            "a caller off any arbiter does not run the actor"
        );

        // Released (as before an HTTP server's workers stop): the actor on this thread stops,
        // and the next command runs on the runtime's arbiters, from where its predecessor left.
        rt.release_callers().await;
        let executed = rt
            .execute::<Placed>("p-1", PlacedCommand::Note { tag: 4 })
            .await
            .expect("executes")
            .expect("accepted");
        assert_eq!(
            executed.version,
            Version(3),
            "the stream goes on after the move"
        );
        assert!(
            !threads_of(4, "decide").contains(&caller),
            "after release_callers, actors run on the runtime's arbiters"
        );
        close(rt).await;
    });
}
