//! Subscriptions, projections and process managers, end to end, with two small aggregates
//! defined right here: bank accounts, and the reward points their large deposits earn.
//!
//! It shows:
//! 1. a **projection** keeping a `View` (balance per account) in the runtime's own database,
//!    and a **read-your-writes** query: the command's [`Executed::position`] is passed to
//!    [`Runtime::wait_for`] before reading the view;
//! 2. a **process manager** reacting to one aggregate's events (a deposit of at least 30.00)
//!    by commanding another (grant reward points), with a **deadline** (the points expire);
//! 3. a plain **subscriber** (a mailer) whose handler keeps failing for one event: the event is
//!    **parked**, the cause is fixed, and [`Runtime::retry_parked`] handles it again;
//! 4. the **lag and status table** of [`Runtime::subscribers`];
//! 5. a **rebuild** of the projection from position 0 beside the live one, while queries keep
//!    being answered from the live generation, then the swap;
//! 6. a graceful shutdown.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p annals --example subscriptions
//! ```
//!
//! The file is self-contained: copy it into a crate that depends on `annals`, `actix-rt`,
//! `futures`, `serde` (with `derive`), `thiserror` and `tempfile`.

use std::cell::Cell;
use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::{
    Action, Aggregate, DomainEvent, FailurePolicy, HandleFuture, HandlerError, ProcessManager,
    Projection, RecordedEvent, Runtime, RuntimeOptions, Subscriber, SubscriberInfo,
    SubscriberOptions, Timestamp, Version, View, ViewSet,
};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// The aggregates
// ---------------------------------------------------------------------------------------------

/// A bank account. Money is an integer number of cents, never a float.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    balance_cents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum AccountCommand {
    Deposit { amount_cents: u64 },
    Withdraw { amount_cents: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
        // `decide` refuses overflows and overdrafts; saturation only keeps `apply` panic-free.
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

/// The reward points of a customer (same id as the account).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Rewards {
    points: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum RewardsCommand {
    Grant {
        points: u64,
    },
    /// Expire up to `points` (fewer if some were spent; nothing if none are left).
    Expire {
        points: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum RewardsEvent {
    Granted { points: u64 },
    Expired { points: u64 },
}

impl DomainEvent for RewardsEvent {
    fn event_type(&self) -> &'static str {
        match self {
            RewardsEvent::Granted { .. } => "Granted",
            RewardsEvent::Expired { .. } => "Expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum RewardsRejection {
    #[error("granting zero points changes nothing")]
    ZeroPoints,
}

impl Aggregate for Rewards {
    const TYPE: &'static str = "Rewards";
    type Command = RewardsCommand;
    type Event = RewardsEvent;
    type Rejection = RewardsRejection;

    fn decide(&self, command: &RewardsCommand) -> Result<Vec<RewardsEvent>, RewardsRejection> {
        match *command {
            RewardsCommand::Grant { points: 0 } => Err(RewardsRejection::ZeroPoints),
            RewardsCommand::Grant { points } => Ok(vec![RewardsEvent::Granted { points }]),
            RewardsCommand::Expire { points } => {
                let points = points.min(self.points);
                Ok(if points == 0 {
                    Vec::new()
                } else {
                    vec![RewardsEvent::Expired { points }]
                })
            }
        }
    }

    fn apply(&mut self, event: &RewardsEvent) {
        match *event {
            RewardsEvent::Granted { points } => self.points = self.points.saturating_add(points),
            RewardsEvent::Expired { points } => self.points = self.points.saturating_sub(points),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A projection: the balance of every account, in a view
// ---------------------------------------------------------------------------------------------

/// The projection's name, and the name of its one view.
const BALANCES: &str = "balances";
const BY_ACCOUNT: &str = "by-account";

/// Keeps `balances/by-account`: account id → balance in cents. The log holds every aggregate
/// type, so it skips what is not an account's event.
struct Balances {
    by_account: View<u64>,
}

impl Projection for Balances {
    fn handle(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.stream.aggregate_type() != Account::TYPE {
            return Ok(());
        }
        let change = event.decode::<AccountEvent>()?.payload;
        // `update` records the event's position with the value, so an event delivered again
        // (delivery is at least once) changes nothing.
        self.by_account.update(
            event.stream.aggregate_id().as_bytes(),
            event.position,
            |balance| {
                let balance = balance.unwrap_or(0);
                // The account refuses overdrafts and overflows, so saturation never changes a
                // result; it keeps the handler from panicking on a damaged stream.
                Some(match change {
                    AccountEvent::Deposited { amount_cents } => {
                        balance.saturating_add(amount_cents)
                    }
                    AccountEvent::Withdrawn { amount_cents } => {
                        balance.saturating_sub(amount_cents)
                    }
                })
            },
        )?;
        Ok(())
    }
}

/// Reads one balance from the projection's active generation (asked per query, so that a
/// rebuild's swap is picked up).
fn balance(runtime: &Runtime, account: &str) -> Result<Option<u64>, Box<dyn Error>> {
    let view: View<u64> = runtime.view(BALANCES, BY_ACCOUNT)?;
    Ok(view.get(account.as_bytes())?)
}

// ---------------------------------------------------------------------------------------------
// 2. A process manager: large deposits earn reward points, which expire
// ---------------------------------------------------------------------------------------------

/// Deposits of at least this many cents earn points: one per 100 cents.
const REWARDED_DEPOSIT_CENTS: u64 = 3_000;
/// How long reward points last (short, so that the example sees the deadline fire).
const POINTS_LIFETIME: Duration = Duration::from_millis(800);

/// Commands a customer's `Rewards` when their `Account` records a large deposit, and schedules
/// the points' expiry. It keeps, per customer, the points it has granted.
struct RewardsPolicy;

#[derive(Debug, Default, Serialize, Deserialize)]
struct RewardsPolicyState {
    granted_points: u64,
}

impl ProcessManager for RewardsPolicy {
    type State = RewardsPolicyState;

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        (event.stream.aggregate_type() == Account::TYPE && &*event.event_type == "Deposited")
            .then(|| event.stream.aggregate_id().to_string())
    }

    fn react(
        &self,
        state: &mut RewardsPolicyState,
        event: &RecordedEvent,
    ) -> Result<Vec<Action>, HandlerError> {
        let AccountEvent::Deposited { amount_cents } = event.decode::<AccountEvent>()?.payload
        else {
            return Ok(Vec::new());
        };
        if amount_cents < REWARDED_DEPOSIT_CENTS {
            return Ok(Vec::new());
        }
        let points = amount_cents / 100;
        state.granted_points += points;
        let customer = event.stream.aggregate_id();
        // The deadline derives from the event, not from the clock: `react` may run again for
        // the same event after a crash, and must decide the same.
        let lifetime = u64::try_from(POINTS_LIFETIME.as_micros()).unwrap_or(u64::MAX);
        let expires = Timestamp(event.meta.recorded_at.as_micros().saturating_add(lifetime));
        Ok(vec![
            Action::command::<Rewards>(customer, &RewardsCommand::Grant { points })?,
            Action::schedule::<Rewards>(expires, customer, &RewardsCommand::Expire { points })?,
        ])
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A plain subscriber: a mailer that cannot mail a customer without an address
// ---------------------------------------------------------------------------------------------

/// Customer id → e-mail address.
type AddressBook = Arc<Mutex<HashMap<String, String>>>;

/// "Sends" a receipt for every withdrawal (into `sent`, so that the example can show them).
struct Mailer {
    addresses: AddressBook,
    sent: Arc<Mutex<Vec<String>>>,
}

impl Mailer {
    fn send_receipt(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.stream.aggregate_type() != Account::TYPE {
            return Ok(());
        }
        let AccountEvent::Withdrawn { amount_cents } = event.decode::<AccountEvent>()?.payload
        else {
            return Ok(());
        };
        let customer = event.stream.aggregate_id();
        let address = self
            .addresses
            .lock()
            .map_err(|_| "the address book is poisoned")?
            .get(customer)
            .cloned()
            .ok_or_else(|| format!("no e-mail address for {customer}"))?;
        self.sent
            .lock()
            .map_err(|_| "the sent list is poisoned")?
            .push(format!(
                "to {address}: you withdrew {amount_cents} cents (position {})",
                event.position
            ));
        Ok(())
    }
}

impl Subscriber for Mailer {
    fn handle<'a>(&'a mut self, event: &'a RecordedEvent) -> HandleFuture<'a> {
        let result = self.send_receipt(event);
        Box::pin(std::future::ready(result))
    }
}

// ---------------------------------------------------------------------------------------------
// Running it
// ---------------------------------------------------------------------------------------------

/// The bound on every read-your-writes wait in this example.
const WAIT_MAX: Duration = Duration::from_secs(2);
/// Accounts and deposits per account written before the rebuild, so that it has work to do.
const BULK_ACCOUNTS: usize = 50;
const BULK_DEPOSITS: usize = 100;
/// How often the status table is sampled while the clients write.
const STATUS_SAMPLE: Duration = Duration::from_millis(10);

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let runtime = Runtime::open(RuntimeOptions::new(dir.path().join("annals")))?;
    runtime.register::<Account>()?;
    runtime.register::<Rewards>()?;
    println!("runtime: store opened in {}", dir.path().display());

    let result = run(&runtime).await;
    // Shut down even if a step failed: stops the subscribers, drains commands in flight and
    // flushes the journal.
    runtime.shutdown().await?;
    println!("\nruntime: shut down cleanly");
    result
}

async fn run(runtime: &Runtime) -> Result<(), Box<dyn Error>> {
    let addresses: AddressBook = Arc::new(Mutex::new(HashMap::from([
        ("alice".to_string(), "alice@example.com".to_string()),
        ("bob".to_string(), "bob@example.com".to_string()),
    ])));
    let sent = Arc::new(Mutex::new(Vec::new()));
    register(runtime, &addresses, &sent)?;

    read_your_writes(runtime).await?;
    process_manager(runtime).await?;
    parked(runtime, &addresses, &sent).await?;
    rebuild(runtime).await?;

    println!("\n-- at the end --");
    print_status(runtime);
    Ok(())
}

fn register(
    runtime: &Runtime,
    addresses: &AddressBook,
    sent: &Arc<Mutex<Vec<String>>>,
) -> Result<(), Box<dyn Error>> {
    println!("\n-- registering --");
    // The factory builds the projection over the views of one generation: it is called again,
    // with fresh views, for a rebuild.
    runtime.project(BALANCES, SubscriberOptions::default(), |views: &ViewSet| {
        Ok(Balances {
            by_account: views.view(BY_ACCOUNT)?,
        })
    })?;
    println!("projection {BALANCES:?}: view {BY_ACCOUNT:?} = balance per account");
    runtime.process_manager("rewards", RewardsPolicy, SubscriberOptions::default())?;
    println!(
        "process manager \"rewards\": a deposit of at least {REWARDED_DEPOSIT_CENTS} cents grants points, which expire after {POINTS_LIFETIME:?}"
    );
    // Two quick retries, then park: a mailer must not hold up every later receipt.
    let mailer = Mailer {
        addresses: addresses.clone(),
        sent: sent.clone(),
    };
    runtime.subscribe(
        "mailer",
        mailer,
        SubscriberOptions::default()
            .with_retries(2, Duration::from_millis(5))
            .with_failure_policy(FailurePolicy::Park),
    )?;
    println!("subscriber \"mailer\": a receipt per withdrawal; failing events are parked");
    Ok(())
}

async fn read_your_writes(runtime: &Runtime) -> Result<(), Box<dyn Error>> {
    println!("\n-- 1. a projection, read your writes --");
    runtime
        .execute::<Account>("bob", AccountCommand::Deposit { amount_cents: 300 })
        .await??;
    runtime
        .execute::<Account>(
            "alice",
            AccountCommand::Deposit {
                amount_cents: 2_500,
            },
        )
        .await??;
    let executed = runtime
        .execute::<Account>(
            "alice",
            AccountCommand::Withdraw {
                amount_cents: 1_000,
            },
        )
        .await??;
    let position = executed
        .position
        .ok_or("a withdrawal always records an event")?;
    println!(
        "alice deposits 2500 and withdraws 1000: the withdrawal's event is at position {position}"
    );
    // The projection updates asynchronously: a query right after the command could read the
    // balance from before it. Waiting (bounded) for the command's position closes that gap.
    let t = Instant::now();
    let reached = runtime.wait_for(BALANCES, position, WAIT_MAX).await?;
    let alice = balance(runtime, "alice")?;
    println!(
        "waited {:?} for {BALANCES:?} to reach position {position} (it is at {reached}): alice's balance is {}",
        t.elapsed(),
        cents(alice)
    );
    assert_eq!(
        alice,
        Some(1_500),
        "the view includes alice's own withdrawal"
    );
    Ok(())
}

async fn process_manager(runtime: &Runtime) -> Result<(), Box<dyn Error>> {
    println!("\n-- 2. a process manager, and a deadline --");
    let started = Instant::now();
    let executed = runtime
        .execute::<Account>(
            "bob",
            AccountCommand::Deposit {
                amount_cents: 4_200,
            },
        )
        .await??;
    let position = executed
        .position
        .ok_or("a deposit always records an event")?;
    println!("bob deposits 4200 (position {position})");
    // Once the process manager has processed the deposit, its command has been executed.
    runtime.wait_for("rewards", position, WAIT_MAX).await?;
    for event in runtime.events::<Rewards>("bob", Version(1), 10)? {
        println!(
            "rewards of bob, version {}: {:?}\n    command id {} (derived from the deposit event, so a redelivery cannot grant twice)\n    caused by event {}",
            event.version,
            event.payload,
            event.meta.command_id.as_ref().map_or("none", |id| id.as_str()),
            event.meta.causation_id.as_deref().unwrap_or("none"),
        );
    }
    let points = |runtime: &Runtime| -> Result<u64, Box<dyn Error>> {
        Ok(runtime
            .state::<Rewards>("bob")?
            .map_or(0, |state| state.state.points))
    };
    println!(
        "bob has {} points; the deadline is stored, waiting for it...",
        points(runtime)?
    );
    // Deadlines are checked every 100 ms; give it the lifetime plus a generous margin.
    let deadline = Instant::now() + POINTS_LIFETIME + Duration::from_secs(3);
    while points(runtime)? > 0 {
        if Instant::now() > deadline {
            return Err("the points did not expire".into());
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let expired = runtime
        .events::<Rewards>("bob", Version(2), 10)?
        .into_iter()
        .map(|e| format!("{:?}", e.payload))
        .collect::<Vec<_>>();
    println!(
        "{:?} after the deposit the deadline fired: {}; bob has 0 points",
        started.elapsed(),
        expired.join(", ")
    );
    Ok(())
}

async fn parked(
    runtime: &Runtime,
    addresses: &AddressBook,
    sent: &Arc<Mutex<Vec<String>>>,
) -> Result<(), Box<dyn Error>> {
    println!("\n-- 3. a parked event, and a retry --");
    runtime
        .execute::<Account>("mallory", AccountCommand::Deposit { amount_cents: 500 })
        .await??;
    let executed = runtime
        .execute::<Account>("mallory", AccountCommand::Withdraw { amount_cents: 200 })
        .await??;
    let position = executed
        .position
        .ok_or("a withdrawal always records an event")?;
    println!(
        "mallory (whose address the mailer does not know) withdraws 200 at position {position}"
    );
    // The mailer tries three times, parks the event, and goes on.
    runtime.wait_for("mailer", position, WAIT_MAX).await?;
    for p in runtime.parked("mailer")? {
        println!(
            "parked by the mailer: position {} after {} attempts: {}",
            p.position, p.attempts, p.reason
        );
    }
    addresses
        .lock()
        .map_err(|_| "the address book is poisoned")?
        .insert("mallory".into(), "mallory@example.com".into());
    println!("mallory's address is added; retrying the parked event...");
    runtime.retry_parked("mailer", position).await?;
    println!(
        "retried: parked events left: {}",
        runtime.parked("mailer")?.len()
    );
    println!("receipts sent:");
    for receipt in sent.lock().map_err(|_| "the sent list is poisoned")?.iter() {
        println!("  {receipt}");
    }
    Ok(())
}

async fn rebuild(runtime: &Runtime) -> Result<(), Box<dyn Error>> {
    println!("\n-- 4. subscribers' lag and status --");
    // Some volume, so that there is lag to see and the rebuild has work to do: clients write
    // concurrently while the table is sampled.
    let t = Instant::now();
    let writing_done = Cell::new(false);
    let clients = async {
        let clients = (0..BULK_ACCOUNTS).map(|a| async move {
            for _ in 0..BULK_DEPOSITS {
                runtime
                    .execute::<Account>(
                        &format!("customer-{a}"),
                        AccountCommand::Deposit { amount_cents: 100 },
                    )
                    .await??;
            }
            Ok::<_, Box<dyn Error>>(())
        });
        let results = futures::future::join_all(clients).await;
        writing_done.set(true);
        results.into_iter().collect::<Result<Vec<()>, _>>()
    };
    let sampler = async {
        let mut busiest: Vec<SubscriberInfo> = Vec::new();
        let lag = |infos: &[SubscriberInfo]| infos.iter().map(|i| i.lag_events).sum::<u64>();
        while !writing_done.get() {
            actix_rt::time::sleep(STATUS_SAMPLE).await;
            let infos = runtime.subscribers();
            if lag(&infos) >= lag(&busiest) {
                busiest = infos;
            }
        }
        busiest
    };
    let (written, busiest) = futures::future::join(clients, sampler).await;
    written?;
    println!(
        "{BULK_ACCOUNTS} clients wrote {} deposits in {:?}; the most lag seen meanwhile (sampled every {STATUS_SAMPLE:?}):",
        BULK_ACCOUNTS * BULK_DEPOSITS,
        t.elapsed()
    );
    print_table(&busiest);
    let head = runtime.head_position();
    for name in [BALANCES, "rewards", "mailer"] {
        runtime.wait_for(name, head, WAIT_MAX).await?;
    }
    println!("once they have caught up:");
    print_status(runtime);

    println!("\n-- 5. a rebuild while the view keeps answering --");
    let alice = balance(runtime, "alice")?;
    let t = Instant::now();
    runtime.rebuild(BALANCES)?;
    println!("rebuild of {BALANCES:?} started: a new generation is built beside the live one");
    print_status(runtime);
    let mut answered = 0u32;
    let bound = Instant::now() + Duration::from_secs(5);
    while runtime.subscriber(&format!("{BALANCES}#rebuild")).is_some() {
        if Instant::now() > bound {
            return Err("the rebuild did not finish".into());
        }
        // Answered by the live generation throughout.
        assert_eq!(
            balance(runtime, "alice")?,
            alice,
            "the live view keeps answering"
        );
        answered += 1;
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "the rebuilt generation was swapped in after {:?}; meanwhile {answered} queries were answered by the live one, alice's balance always {}",
        t.elapsed(),
        cents(alice)
    );
    let rebuilt = balance(runtime, "alice")?;
    println!(
        "the rebuilt view answers: alice's balance is {}",
        cents(rebuilt)
    );
    assert_eq!(rebuilt, alice, "a rebuild from scratch gives the same view");
    let customer = balance(runtime, "customer-0")?;
    assert_eq!(
        customer,
        Some(100 * u64::try_from(BULK_DEPOSITS)?),
        "every deposit counted once"
    );
    Ok(())
}

/// A balance as read from the view.
fn cents(balance: Option<u64>) -> String {
    balance.map_or_else(|| "unknown".into(), |cents| format!("{cents} cents"))
}

/// Prints [`Runtime::subscribers`] as a table.
fn print_status(runtime: &Runtime) {
    print_table(&runtime.subscribers());
}

/// Prints subscribers' progress as a table.
fn print_table(infos: &[SubscriberInfo]) {
    println!(
        "  {:<18} {:<12} {:>10} {:>8} {:>10} {:>9}",
        "subscriber", "status", "checkpoint", "head", "lag", "lag (s)"
    );
    for info in infos {
        println!(
            "  {:<18} {:<12} {:>10} {:>8} {:>10} {:>9.3}",
            info.name,
            format!("{:?}", info.status),
            info.checkpoint.to_string(),
            info.head.to_string(),
            info.lag_events,
            info.lag_seconds
        );
    }
}
