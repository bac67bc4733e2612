//! Embedding Annals in a Rust program, end to end, with a bank account defined right here.
//!
//! It shows:
//! 1. an aggregate: a plain type with a pure `decide` (command → events or a typed rejection)
//!    and an infallible `apply` (event → state);
//! 2. its unit tests with the given/when/then test kit (`annals::testkit`, feature `testkit`);
//! 3. the runtime: open a store in a temporary directory, register the aggregate, execute
//!    commands — accepted, rejected, retried with a command id (deduplicated), and refused for
//!    an expected-version conflict — then read the state, the account's events and the global
//!    log, and shut down gracefully.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p annals --example bank --features testkit
//! ```
//!
//! The file is self-contained: copy it into a crate that depends on `annals` (with the `testkit`
//! feature for part 2), `actix-rt`, `serde` (with `derive`), `thiserror` and `tempfile`.

use std::error::Error;

use annals::testkit::AggregateTest;
use annals::{
    Aggregate, CommandId, DomainEvent, ExecuteError, ExecuteOptions, Position, Runtime,
    RuntimeOptions, Version,
};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// 1. The aggregate
// ---------------------------------------------------------------------------------------------

/// A bank account. Money is an integer number of cents, never a float.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Account {
    balance_cents: u64,
}

/// What a client asks of an account (imperative).
#[derive(Debug, Serialize, Deserialize)]
enum AccountCommand {
    Deposit { amount_cents: u64 },
    Withdraw { amount_cents: u64 },
}

/// What happened to an account (past tense). Events are facts: `apply` cannot refuse them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount_cents: u64 },
    Withdrawn { amount_cents: u64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
    }
}

/// Why an account refused a command: a business answer, returned as a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum AccountRejection {
    #[error("the amount must be more than zero")]
    ZeroAmount,
    #[error("insufficient funds: balance {balance_cents}, requested {requested_cents}")]
    InsufficientFunds {
        balance_cents: u64,
        requested_cents: u64,
    },
    #[error("the deposit would overflow the balance")]
    Overflow,
}

impl Aggregate for Account {
    /// Part of every stream key: never rename it once data exists.
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Rejection = AccountRejection;

    fn decide(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountRejection> {
        match *command {
            AccountCommand::Deposit { amount_cents: 0 }
            | AccountCommand::Withdraw { amount_cents: 0 } => Err(AccountRejection::ZeroAmount),
            AccountCommand::Deposit { amount_cents } => {
                self.balance_cents
                    .checked_add(amount_cents)
                    .ok_or(AccountRejection::Overflow)?;
                Ok(vec![AccountEvent::Deposited { amount_cents }])
            }
            AccountCommand::Withdraw { amount_cents } if amount_cents > self.balance_cents => {
                Err(AccountRejection::InsufficientFunds {
                    balance_cents: self.balance_cents,
                    requested_cents: amount_cents,
                })
            }
            AccountCommand::Withdraw { amount_cents } => {
                Ok(vec![AccountEvent::Withdrawn { amount_cents }])
            }
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        // `decide` refuses overflows and overdrafts, so saturation never changes a result; it
        // only keeps `apply` from panicking, as the trait requires.
        match *event {
            AccountEvent::Deposited { amount_cents } => {
                self.balance_cents = self.balance_cents.saturating_add(amount_cents);
            }
            AccountEvent::Withdrawn { amount_cents } => {
                self.balance_cents = self.balance_cents.saturating_sub(amount_cents);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Testing the aggregate: pure, synchronous, no store (these lines belong in `#[test]`s)
// ---------------------------------------------------------------------------------------------

fn test_the_aggregate() {
    AggregateTest::<Account>::given(vec![AccountEvent::Deposited { amount_cents: 100 }])
        .when(AccountCommand::Withdraw { amount_cents: 30 })
        .then_expect_events(vec![AccountEvent::Withdrawn { amount_cents: 30 }])
        .then_expect_state_eq(Account { balance_cents: 70 })
        .then_expect_deterministic();

    AggregateTest::<Account>::given_no_previous_events()
        .when(AccountCommand::Withdraw { amount_cents: 1 })
        .then_expect_rejection(AccountRejection::InsufficientFunds {
            balance_cents: 0,
            requested_cents: 1,
        });

    AggregateTest::<Account>::given(vec![AccountEvent::Deposited {
        amount_cents: u64::MAX,
    }])
    .when(AccountCommand::Deposit { amount_cents: 1 })
    .then_expect_rejection(AccountRejection::Overflow);

    println!("test kit: 3 given/when/then checks passed");
}

// ---------------------------------------------------------------------------------------------
// 3. Running it
// ---------------------------------------------------------------------------------------------

/// Most events read per page: every read in Annals is paged and bounded.
const PAGE_EVENTS_MAX: usize = 100;

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn Error>> {
    test_the_aggregate();

    // The store lives in a fresh temporary directory, removed when `dir` is dropped.
    let dir = tempfile::tempdir()?;
    let runtime = Runtime::open(RuntimeOptions::new(dir.path().join("annals")))?;
    runtime.register::<Account>()?;
    println!("\nruntime: store opened in {}", dir.path().display());

    let result = run(&runtime).await;
    // Shut down even if a step failed: drains commands in flight and flushes the journal.
    runtime.shutdown().await?;
    println!("\nruntime: shut down cleanly");
    result
}

async fn run(runtime: &Runtime) -> Result<(), Box<dyn Error>> {
    println!("\n-- commands --");

    // `execute` returns `Result<Result<Executed, Rejection>, ExecuteError>`: `?` carries only
    // technical failures; a business rejection is an ordinary value to match on.
    let executed = runtime.execute::<Account>("alice", deposit(100)).await??;
    println!(
        "alice deposits 100: accepted at version {}, global position {:?}",
        executed.version, executed.position
    );
    runtime.execute::<Account>("bob", deposit(500)).await??;
    println!("bob deposits 500: accepted");

    match runtime.execute::<Account>("alice", withdraw(250)).await? {
        Err(rejection) => println!("alice withdraws 250: rejected: {rejection}"),
        Ok(executed) => return Err(format!("the overdraft was accepted: {executed:?}").into()),
    }

    // A command id makes a command idempotent: its outcome is stored with its events, and a
    // retry (say, after a timeout) returns that outcome without withdrawing twice.
    let rent = ExecuteOptions::default().with_command_id(CommandId::new("alice-rent-june")?);
    let first = runtime
        .execute_with::<Account>("alice", withdraw(40), rent.clone())
        .await??;
    let retry = runtime
        .execute_with::<Account>("alice", withdraw(40), rent)
        .await??;
    println!(
        "alice pays 40 rent with a command id: version {}, deduplicated: {}",
        first.version, first.deduplicated
    );
    println!(
        "  retried with the same command id:   version {}, deduplicated: {}",
        retry.version, retry.deduplicated
    );
    assert!(
        retry.deduplicated && retry.events == first.events,
        "the retry returns the outcome"
    );

    // An expected version makes read-modify-write safe: this caller read alice at version 1,
    // but she has moved on since, so nothing is executed.
    let stale = ExecuteOptions::default().with_expected_version(Version(1));
    match runtime
        .execute_with::<Account>("alice", withdraw(10), stale)
        .await
    {
        Err(ExecuteError::Conflict {
            expected, current, ..
        }) => {
            println!("alice withdraws 10 expecting version {expected}: conflict, at {current}");
        }
        other => return Err(format!("expected a version conflict, got {other:?}").into()),
    }

    println!("\n-- reads --");

    // State, rebuilt from the store (latest snapshot plus the events after it), and the state
    // as of an earlier version (a temporal query).
    let Some(now) = runtime.state::<Account>("alice")? else {
        return Err("alice has no events".into());
    };
    println!(
        "alice now: {} cents at version {}",
        now.state.balance_cents, now.version
    );
    assert_eq!(
        now.state,
        Account { balance_cents: 60 },
        "the rent was paid once"
    );
    if let Some(then) = runtime.state_at::<Account>("alice", Some(Version(1)))? {
        println!("alice at version 1: {} cents", then.state.balance_cents);
    }

    println!("alice's events (her audit log):");
    for event in runtime.events::<Account>("alice", Version(1), PAGE_EVENTS_MAX)? {
        let command_id = event.meta.command_id.as_ref().map(CommandId::as_str);
        println!(
            "  version {} at position {}: {:?} (command id: {command_id:?})",
            event.version, event.position, event.payload
        );
    }

    // The global log holds every stream's events in commit order, still encoded (the store
    // knows no event types): decode each with its stream's event type.
    println!("global log (head at position {}):", runtime.head_position());
    for recorded in runtime.read_all(Position(1), PAGE_EVENTS_MAX)? {
        let event = recorded.decode::<AccountEvent>()?;
        println!(
            "  position {}: {} version {}: {:?}",
            event.position, event.stream, event.version, event.payload
        );
    }
    Ok(())
}

fn deposit(amount_cents: u64) -> AccountCommand {
    AccountCommand::Deposit { amount_cents }
}

fn withdraw(amount_cents: u64) -> AccountCommand {
    AccountCommand::Withdraw { amount_cents }
}
