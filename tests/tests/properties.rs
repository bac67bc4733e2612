//! Property tests of the runtime (proptest) on a real sled store in a temporary directory,
//! driving the bank [`Account`] aggregate through the public [`Runtime`] API.
//!
//! - **Snapshot + tail replay equals full replay**: the state the runtime rebuilds from its
//!   latest snapshot and the events after it, and the state as of every earlier version, equal a
//!   plain fold of [`Account::apply`] over the stream's events; so does the state an actor
//!   rehydrates after a restart.
//! - **The runtime acts like a map of accounts, even across restarts**: random commands on a few
//!   accounts, with graceful restarts at random points, give the outcomes of an in-memory model
//!   that calls `decide` then `apply` directly; at the end every account, the global log and the
//!   per-stream versions match the model. The same holds while actors are evicted (a live-actor
//!   cap of one or two) and passivated (idle timeouts of milliseconds), and when commands on
//!   different accounts run concurrently.
//! - **Command ids survive restarts**: re-sending an earlier command with its command id returns
//!   the first outcome (`deduplicated`) and writes nothing, before and after restarts; the same
//!   id with another command, or on another account, is refused.
//!
//! Each case opens real runtimes and fsyncs every command, so the case counts are small
//! ([`CASES`]): the file runs in seconds in a debug build.

use std::collections::HashMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use annals::codec::decode_plain;
use annals::{
    Aggregate, AggregateOptions, AggregateState, CommandId, ExecuteError, ExecuteOptions,
    ExecuteResult, Executed, Position, Runtime, RuntimeOptions, StreamId, Version,
};
use annals_domain::bank::{Account, AccountCommand, AccountEvent, AccountRejection};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use tempfile::TempDir;

/// Cases per property: each case opens one or more runtimes on a fresh sled database. Set
/// `PROPTEST_CASES` to explore more (`PROPTEST_CASES=1000 cargo test --test properties`).
const CASES: u32 = 32;

/// Accounts the model-based properties spread their commands over: few enough that most
/// commands hit an account with history (and a snapshot), more than one so streams interleave.
const ACCOUNTS: usize = 3;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(CASES),
        // A failing case restarts runtimes many times; bound the time spent shrinking it.
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

fn account_id(n: usize) -> String {
    format!("acct-{n}")
}

/// Deposits and withdrawals of small amounts (zero included: a rejection), and now and then a
/// deposit of `u64::MAX`, which makes later deposits overflow (another rejection).
fn command() -> impl Strategy<Value = AccountCommand> {
    prop_oneof![
        8 => (0u64..=50).prop_map(|amount| AccountCommand::Deposit { amount }),
        6 => (0u64..=80).prop_map(|amount| AccountCommand::Withdraw { amount }),
        1 => Just(AccountCommand::Deposit { amount: u64::MAX }),
    ]
}

/// How a runtime is configured in a case. The defaults are those of `RuntimeOptions::new` and
/// `AggregateOptions::default`, except the snapshot cadence, which every property varies.
#[derive(Debug, Clone)]
struct Tuning {
    /// Snapshot every this many events.
    snapshot_every: u64,
    /// Most live actors per type (`None`: the default); 1 evicts an actor at every switch.
    live_actors_max: Option<usize>,
    /// Idle timeout of an actor in milliseconds (`None`: the default, two minutes).
    idle_timeout_ms: Option<u64>,
}

impl Tuning {
    fn snapshot_every(snapshot_every: u64) -> Tuning {
        Tuning {
            snapshot_every,
            live_actors_max: None,
            idle_timeout_ms: None,
        }
    }

    fn runtime_options(&self, dir: &TempDir) -> RuntimeOptions {
        let options = RuntimeOptions::new(dir.path());
        match self.live_actors_max.and_then(NonZeroUsize::new) {
            Some(max) => options.with_live_actors_max(max),
            None => options,
        }
    }

    fn aggregate_options(&self) -> AggregateOptions {
        let options =
            AggregateOptions::default().with_snapshot_every(NonZeroU64::new(self.snapshot_every));
        match self.idle_timeout_ms {
            Some(ms) => options.with_idle_timeout(Duration::from_millis(ms)),
            None => options,
        }
    }
}

/// Tunings that make actors come and go: a live-actor cap of one or two (eviction at almost
/// every command), and idle timeouts of a few milliseconds (passivation between commands).
fn churn() -> impl Strategy<Value = Tuning> {
    (
        1u64..=8,
        prop_oneof![Just(None), (1usize..=2).prop_map(Some)],
        prop_oneof![Just(None), (1u64..=20).prop_map(Some)],
    )
        .prop_map(
            |(snapshot_every, live_actors_max, idle_timeout_ms)| Tuning {
                snapshot_every,
                live_actors_max,
                idle_timeout_ms,
            },
        )
}

/// One runtime on one temporary directory, restartable; commands are awaited on a private
/// tokio runtime (`Runtime::shutdown` needs tokio's timer).
struct Node {
    // Dropped in this order: the runtime (closing the database) before the directory.
    runtime: Option<Runtime>,
    tokio: tokio::runtime::Runtime,
    dir: TempDir,
    tuning: Tuning,
}

impl Node {
    fn open(tuning: Tuning) -> Node {
        let dir = tempfile::tempdir().expect("a temporary directory for the database");
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime to await commands on");
        let runtime = Some(start(&dir, &tuning));
        Node {
            runtime,
            tokio,
            dir,
            tuning,
        }
    }

    fn runtime(&self) -> &Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime is running between restarts")
    }

    fn execute(
        &self,
        id: &str,
        command: AccountCommand,
        command_id: Option<&CommandId>,
    ) -> ExecuteResult<Account> {
        let mut options = ExecuteOptions::default();
        if let Some(command_id) = command_id {
            options = options.with_command_id(command_id.clone());
        }
        self.tokio
            .block_on(self.runtime().execute_with::<Account>(id, command, options))
    }

    /// Shuts the runtime down gracefully and opens a new one on the same directory.
    fn restart(&mut self) {
        let runtime = self
            .runtime
            .take()
            .expect("the runtime is running between restarts");
        self.tokio
            .block_on(runtime.shutdown())
            .expect("a graceful shutdown");
        drop(runtime);
        self.runtime = Some(start(&self.dir, &self.tuning));
    }

    fn state(&self, id: &str) -> Option<AggregateState<Account>> {
        self.runtime()
            .state::<Account>(id)
            .expect("read the current state")
    }

    fn events(&self, id: &str) -> Vec<AccountEvent> {
        let events = self
            .runtime()
            .events::<Account>(id, Version(1), usize::MAX)
            .expect("read the stream");
        events.into_iter().map(|e| e.payload).collect()
    }
}

/// Opens a runtime on `dir` with `Account` registered. A restart opens it right after the
/// previous runtime was shut down and dropped, with no retry: the runtime itself must cope with
/// sled releasing its directory lock a moment late (see `store_contract`'s
/// `sled_regressions::reopen_right_after_shutdown_finds_the_directory_unlocked`).
fn start(dir: &TempDir, tuning: &Tuning) -> Runtime {
    let runtime = Runtime::open(tuning.runtime_options(dir)).expect("open the runtime");
    runtime
        .register_with::<Account>(tuning.aggregate_options())
        .expect("register Account");
    runtime
}

fn command_id(n: usize) -> CommandId {
    CommandId::new(format!("cmd-{n}")).expect("a valid command id")
}

/// The states after each prefix of `events`: `states[v]` is the state at version `v`.
fn fold_prefixes(events: &[AccountEvent]) -> Vec<Account> {
    let mut states = vec![Account::default()];
    let mut state = Account::default();
    for event in events {
        state.apply(event);
        states.push(state.clone());
    }
    states
}

/// What the runtime should say about one account: its state and version.
#[derive(Debug, Clone, Default, PartialEq)]
struct ModelAccount {
    state: Account,
    version: Version,
}

/// The model: accounts in a map, `decide` then `apply` called directly, and the global log as
/// the list of events in the order they were decided.
#[derive(Debug, Default)]
struct Model {
    accounts: HashMap<String, ModelAccount>,
    log: Vec<(String, Version, AccountEvent)>,
}

impl Model {
    fn execute(
        &mut self,
        id: &str,
        command: &AccountCommand,
    ) -> Result<Vec<AccountEvent>, AccountRejection> {
        let account = self.accounts.entry(id.to_string()).or_default();
        let events = account.state.decide(command)?;
        for event in &events {
            account.state.apply(event);
            account.version = account.version.next();
            self.log
                .push((id.to_string(), account.version, event.clone()));
        }
        Ok(events)
    }

    fn head(&self) -> Position {
        Position(self.log.len() as u64)
    }
}

/// Checks a fresh (not deduplicated) outcome against the model's, the model having just
/// executed the same command: its last event is the last of the global log.
fn check_outcome(
    id: &str,
    actual: &ExecuteResult<Account>,
    expected: &Result<Vec<AccountEvent>, AccountRejection>,
    model: &Model,
) -> Result<(), TestCaseError> {
    check_outcome_at(id, actual, expected, model, None)
}

/// Like [`check_outcome`], for a command that ran concurrently with others started after the
/// log's head was `round_start`: its events come after that, in an order the test cannot know.
fn check_outcome_unordered(
    id: &str,
    actual: &ExecuteResult<Account>,
    expected: &Result<Vec<AccountEvent>, AccountRejection>,
    model: &Model,
    round_start: Position,
) -> Result<(), TestCaseError> {
    check_outcome_at(id, actual, expected, model, Some(round_start))
}

fn check_outcome_at(
    id: &str,
    actual: &ExecuteResult<Account>,
    expected: &Result<Vec<AccountEvent>, AccountRejection>,
    model: &Model,
    round_start: Option<Position>,
) -> Result<(), TestCaseError> {
    let actual = match actual {
        Ok(outcome) => outcome,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "{id}: technical failure {e:?}"
            )))
        }
    };
    match (actual, expected) {
        (Ok(executed), Ok(events)) => {
            let account = &model.accounts[id];
            let payloads: Vec<&AccountEvent> = executed.events.iter().map(|e| &e.payload).collect();
            prop_assert_eq!(
                payloads,
                events.iter().collect::<Vec<_>>(),
                "events of {}",
                id
            );
            prop_assert_eq!(executed.version, account.version, "version of {}", id);
            prop_assert!(
                !executed.deduplicated,
                "a first execution is not deduplicated"
            );
            prop_assert_eq!(
                &executed.stream,
                &StreamId::new("Account", id).expect("valid")
            );
            let first = account.version.0 + 1 - executed.events.len() as u64;
            let versions: Vec<u64> = executed.events.iter().map(|e| e.version.0).collect();
            prop_assert_eq!(versions, (first..=account.version.0).collect::<Vec<_>>());
            let positions: Vec<Position> = executed.events.iter().map(|e| e.position).collect();
            prop_assert_eq!(
                executed.position,
                positions.last().copied(),
                "reply position"
            );
            for pair in positions.windows(2) {
                prop_assert_eq!(pair[1], pair[0].next(), "one commit, contiguous positions");
            }
            match (executed.position, round_start) {
                (None, _) => {}
                (Some(last), None) => prop_assert_eq!(last, model.head(), "reply position"),
                (Some(last), Some(start)) => prop_assert!(last > start, "{} after {}", last, start),
            }
        }
        (Err(rejection), Err(expected)) => prop_assert_eq!(rejection, expected),
        (actual, expected) => {
            return Err(TestCaseError::fail(format!(
                "{id}: the runtime said {actual:?}, the model {expected:?}"
            )))
        }
    }
    Ok(())
}

/// How the global log must order the model's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// In the order the model decided them (commands were sent one at a time).
    Global,
    /// In the model's order within each stream only (commands on different accounts ran
    /// concurrently).
    PerStream,
}

/// Checks every account and the global log against the model.
fn check_final(node: &Node, model: &Model, order: Order) -> Result<(), TestCaseError> {
    for n in 0..ACCOUNTS {
        let id = account_id(n);
        let expected = model
            .accounts
            .get(&id)
            .filter(|a| a.version > Version(0))
            .map(|a| AggregateState {
                version: a.version,
                state: a.state.clone(),
            });
        prop_assert_eq!(node.state(&id), expected, "state of {}", id);
    }
    let runtime = node.runtime();
    prop_assert_eq!(runtime.head_position(), model.head(), "head position");
    let log = runtime
        .read_all(Position(1), usize::MAX)
        .expect("read the global log");
    let positions: Vec<u64> = log.iter().map(|e| e.position.0).collect();
    prop_assert_eq!(
        positions,
        (1..=model.head().0).collect::<Vec<_>>(),
        "gap-free positions"
    );
    let mut heads: HashMap<&str, Version> = HashMap::new();
    for event in &log {
        let head = heads.entry(event.stream.aggregate_id()).or_default();
        prop_assert_eq!(
            event.version,
            head.next(),
            "contiguous versions of {}",
            event.stream
        );
        *head = event.version;
    }
    let logged: Vec<(String, Version, AccountEvent)> = log
        .iter()
        .map(|e| {
            let decoded = e.decode::<AccountEvent>().expect("decode a logged event");
            (
                e.stream.aggregate_id().to_string(),
                e.version,
                decoded.payload,
            )
        })
        .collect();
    match order {
        Order::Global => prop_assert_eq!(&logged, &model.log, "the global log"),
        Order::PerStream => {
            for n in 0..ACCOUNTS {
                let id = account_id(n);
                let of = |log: &[(String, Version, AccountEvent)]| {
                    log.iter()
                        .filter(|(i, _, _)| *i == id)
                        .cloned()
                        .collect::<Vec<_>>()
                };
                prop_assert_eq!(of(&logged), of(&model.log), "the events of {}", id);
            }
        }
    }
    Ok(())
}

/// A command of the model-based property.
#[derive(Debug, Clone)]
enum Step {
    /// Executes `command` on account `account`, with a fresh command id if `with_id`.
    Execute {
        account: usize,
        command: AccountCommand,
        with_id: bool,
    },
    /// Shuts the runtime down and opens it again.
    Restart,
    /// Sends an earlier command that carried a command id again, with that id.
    Resend(Index),
    /// Waits this many milliseconds, so that actors with a short idle timeout passivate (and
    /// the next command may race with the passivation).
    Pause(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (0..ACCOUNTS, command(), any::<bool>())
            .prop_map(|(account, command, with_id)| Step::Execute { account, command, with_id }),
        1 => Just(Step::Restart),
        2 => any::<Index>().prop_map(Step::Resend),
    ]
}

/// Steps with pauses too, for runtimes whose actors passivate after a few milliseconds.
fn step_with_pauses() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => step(),
        1 => (0u64..=30).prop_map(Step::Pause),
    ]
}

/// An executed command that carried a command id, and what the runtime answered.
struct Sent {
    account: String,
    command: AccountCommand,
    id: CommandId,
    outcome: Result<Executed<AccountEvent>, AccountRejection>,
}

impl Sent {
    fn record(
        account: String,
        command: AccountCommand,
        id: CommandId,
        outcome: ExecuteResult<Account>,
    ) -> Sent {
        let outcome = outcome.expect("checked against the model before being recorded");
        Sent {
            account,
            command,
            id,
            outcome,
        }
    }
}

/// Re-sends `sent` and checks that the runtime returns its first outcome and writes nothing.
fn check_resend(node: &Node, sent: &Sent, model: &Model) -> Result<(), TestCaseError> {
    let again = node.execute(&sent.account, sent.command.clone(), Some(&sent.id));
    match (&again, &sent.outcome) {
        (Ok(Ok(executed)), Ok(first)) => {
            let expected = Executed {
                deduplicated: true,
                ..first.clone()
            };
            prop_assert_eq!(executed, &expected, "the stored outcome of {}", sent.id);
        }
        (Ok(Err(rejection)), Err(first)) => prop_assert_eq!(rejection, first),
        (again, first) => {
            return Err(TestCaseError::fail(format!(
                "{}: re-sent, the runtime said {again:?}; first it said {first:?}",
                sent.id
            )))
        }
    }
    prop_assert_eq!(
        node.runtime().head_position(),
        model.head(),
        "a re-send writes nothing"
    );
    Ok(())
}

/// Runs `steps` against a runtime tuned by `tuning` and against the model, checking every
/// outcome, then the final state before and after one more restart.
fn run_model(tuning: Tuning, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut node = Node::open(tuning);
    let mut model = Model::default();
    let mut sent: Vec<Sent> = Vec::new();
    for (n, step) in steps.into_iter().enumerate() {
        match step {
            Step::Execute {
                account,
                command,
                with_id,
            } => {
                let id = account_id(account);
                let command_id = with_id.then(|| command_id(n));
                let actual = node.execute(&id, command.clone(), command_id.as_ref());
                let expected = model.execute(&id, &command);
                check_outcome(&id, &actual, &expected, &model)?;
                if let Some(command_id) = command_id {
                    sent.push(Sent::record(id, command, command_id, actual));
                }
            }
            Step::Restart => node.restart(),
            Step::Resend(index) if !sent.is_empty() => {
                check_resend(&node, &sent[index.index(sent.len())], &model)?;
            }
            Step::Resend(_) => {}
            Step::Pause(ms) => std::thread::sleep(Duration::from_millis(ms)),
        }
    }
    check_final(&node, &model, Order::Global)?;
    node.restart();
    check_final(&node, &model, Order::Global)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn snapshot_plus_tail_replay_equals_full_replay(
        every in 1u64..=5,
        commands in proptest::collection::vec((command(), any::<bool>()), 0..40),
    ) {
        let mut node = Node::open(Tuning::snapshot_every(every));
        let id = account_id(0);
        let mut model = Model::default();
        for (n, (command, with_id)) in commands.into_iter().enumerate() {
            let command_id = with_id.then(|| command_id(n));
            let actual = node.execute(&id, command.clone(), command_id.as_ref());
            let expected = model.execute(&id, &command);
            check_outcome(&id, &actual, &expected, &model)?;
        }
        // A command that is refused before any write: once it is answered, the actor has
        // finished everything before it, snapshots included.
        let probe = node.execute(&id, AccountCommand::Withdraw { amount: 0 }, None);
        prop_assert!(matches!(probe, Ok(Err(AccountRejection::ZeroAmount))), "{:?}", probe);

        let events = node.events(&id);
        let states = fold_prefixes(&events);
        let head = events.len() as u64;
        prop_assert_eq!(head, model.accounts.get(&id).map_or(0, |a| a.version.0));
        let full = (head > 0).then(|| AggregateState {
            version: Version(head),
            state: states[states.len() - 1].clone(),
        });
        prop_assert_eq!(node.state(&id), full.clone(), "current state");
        for v in 0..=head + 1 {
            let at = node.runtime().state_at::<Account>(&id, Some(Version(v))).expect("state_at");
            let clamped = v.min(head);
            let expected = (clamped > 0).then(|| AggregateState {
                version: Version(clamped),
                state: states[usize::try_from(clamped).expect("a small version")].clone(),
            });
            prop_assert_eq!(at, expected, "state as of version {}", v);
        }
        // The property must exercise snapshots: with at least `every` events there is one, and
        // it holds the fold of the events up to its version.
        let stream = StreamId::new("Account", id.as_str()).expect("a valid stream id");
        let snapshot = node
            .runtime()
            .store()
            .load_snapshot(&stream, Version(u64::MAX))
            .expect("load the latest snapshot");
        if head >= every {
            let snapshot = snapshot.ok_or_else(|| TestCaseError::fail("no snapshot was taken"))?;
            prop_assert!(snapshot.version.0 >= every && snapshot.version.0 <= head);
            let state: Account = decode_plain(&snapshot.state).expect("decode the snapshot");
            let at = usize::try_from(snapshot.version.0).expect("a small version");
            prop_assert_eq!(&state, &states[at], "the snapshot at {}", snapshot.version);
        }

        // After a restart the actor rehydrates from the snapshot and the tail: a withdrawal of
        // one more than the balance is refused with exactly the replayed balance.
        node.restart();
        prop_assert_eq!(node.state(&id), full, "current state after a restart");
        let balance = states[states.len() - 1].balance;
        if let Some(requested) = balance.checked_add(1) {
            let outcome = node.execute(&id, AccountCommand::Withdraw { amount: requested }, None);
            let expected = AccountRejection::InsufficientFunds { balance, requested };
            prop_assert!(
                matches!(&outcome, Ok(Err(r)) if *r == expected),
                "after a restart: {:?}", outcome
            );
        }
    }

    #[test]
    fn runtime_matches_the_model_across_restarts(
        every in 1u64..=8,
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        run_model(Tuning::snapshot_every(every), steps)?;
    }

    #[test]
    fn runtime_matches_the_model_while_actors_are_evicted_and_passivated(
        tuning in churn(),
        steps in proptest::collection::vec(step_with_pauses(), 1..40),
    ) {
        run_model(tuning, steps)?;
    }

    #[test]
    fn concurrent_commands_on_distinct_accounts_match_the_model(
        tuning in churn(),
        rounds in proptest::collection::vec(
            (
                proptest::collection::vec(proptest::option::of(command()), ACCOUNTS),
                proptest::bool::weighted(0.1),
            ),
            1..12,
        ),
    ) {
        let mut node = Node::open(tuning);
        let mut model = Model::default();
        for (round, (commands, restart)) in rounds.into_iter().enumerate() {
            if restart {
                node.restart();
            }
            let head = model.head();
            let sends: Vec<(String, AccountCommand, CommandId)> = commands
                .into_iter()
                .enumerate()
                .filter_map(|(account, command)| {
                    let id = CommandId::new(format!("round-{round}-{account}"))
                        .expect("a valid command id");
                    command.map(|command| (account_id(account), command, id))
                })
                .collect();
            let runtime = node.runtime();
            let outcomes = node.tokio.block_on(futures::future::join_all(sends.iter().map(
                |(account, command, id)| {
                    let options = ExecuteOptions::default().with_command_id(id.clone());
                    runtime.execute_with::<Account>(account, command.clone(), options)
                },
            )));
            for ((account, command, _), actual) in sends.iter().zip(&outcomes) {
                let expected = model.execute(account, command);
                check_outcome_unordered(account, actual, &expected, &model, head)?;
            }
            for executed in outcomes.iter().filter_map(|o| o.as_ref().ok()?.as_ref().ok()) {
                prop_assert!(executed.position <= Some(model.head()), "within the round");
            }
            prop_assert_eq!(node.runtime().head_position(), model.head(), "after round {}", round);
        }
        check_final(&node, &model, Order::PerStream)?;
        node.restart();
        check_final(&node, &model, Order::PerStream)?;
    }

    #[test]
    fn command_ids_survive_restarts(
        every in 1u64..=8,
        commands in proptest::collection::vec((0..ACCOUNTS, command()), 1..20),
        resends in proptest::collection::vec(any::<Index>(), 1..8),
        restarts in 1usize..=2,
    ) {
        let mut node = Node::open(Tuning::snapshot_every(every));
        let mut model = Model::default();
        let mut sent = Vec::new();
        for (n, (account, command)) in commands.into_iter().enumerate() {
            let id = account_id(account);
            let command_id = command_id(n);
            let actual = node.execute(&id, command.clone(), Some(&command_id));
            let expected = model.execute(&id, &command);
            check_outcome(&id, &actual, &expected, &model)?;
            sent.push(Sent::record(id, command, command_id, actual));
        }
        for _ in 0..restarts {
            node.restart();
            for index in &resends {
                check_resend(&node, &sent[index.index(sent.len())], &model)?;
            }
        }
        // The same id with a different command, or for another account, is refused.
        let first = &sent[resends[0].index(sent.len())];
        let different = match first.command {
            AccountCommand::Deposit { amount } => AccountCommand::Withdraw { amount },
            AccountCommand::Withdraw { amount } => AccountCommand::Deposit { amount },
        };
        let reused = node.execute(&first.account, different, Some(&first.id));
        prop_assert!(
            matches!(&reused, Err(ExecuteError::CommandIdReused(id)) if *id == first.id),
            "a different command with {}: {:?}", first.id, reused
        );
        let elsewhere = account_id(ACCOUNTS);
        let reused = node.execute(&elsewhere, first.command.clone(), Some(&first.id));
        prop_assert!(
            matches!(&reused, Err(ExecuteError::CommandIdReused(id)) if *id == first.id),
            "{} on another account: {:?}", first.id, reused
        );
        prop_assert_eq!(node.state(&elsewhere), None, "nothing written for another account");
        check_final(&node, &model, Order::Global)?;
        // New commands still execute after all that, on top of the recovered state.
        let id = account_id(0);
        let command = AccountCommand::Deposit { amount: 1 };
        let actual = node.execute(&id, command.clone(), Some(&command_id(usize::MAX)));
        let expected = model.execute(&id, &command);
        check_outcome(&id, &actual, &expected, &model)?;
        check_final(&node, &model, Order::Global)?;
    }
}
