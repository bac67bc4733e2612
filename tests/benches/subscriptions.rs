//! The subscriptions benchmark (not timed tests; it prints figures), against a real sled store
//! in a temp directory, durable (one fsync per batch) throughout:
//!
//! - `catchup`: 1,000 accounts × 1,000 deposits are written (1,000,000 events, 1,000 concurrent
//!   clients), then a projection (a `View<u64>` balance per account, updated with
//!   `View::update`) is registered and timed until `Runtime::wait_for(name, head)` succeeds:
//!   events/s of catch-up. The same for a `Subscriber` that does nothing (the engine's own cost:
//!   reading the log, decoding envelopes, saving checkpoints). Target: ≥ 300,000 events/s.
//! - `lag`: the durable bank workload (1,000 accounts × 100 commands, one client per account
//!   awaiting each reply) with one subscriber registered. The subscriber notes, per position,
//!   when it handled the event and the event's `recorded_at`; the clients note when each
//!   position's reply reached them. The histograms are built afterwards (the same figures as
//!   recording in the handler, with a handler that only does two atomic stores):
//!   - lag from `recorded_at`: taken when the command is decided, so it includes the wait for
//!     the batch, its write and its fsync — no subscriber can see an event before that;
//!   - lag from the client's acknowledgement: what a reader who got the reply waits for;
//!   - for comparison, `recorded_at` to acknowledgement: the durable commit itself.
//!
//!   Target: p99 ≤ 5 ms.
//! - `overhead`: the same bank workload with nothing registered, then (fresh directory) with
//!   three `View`-based projections and one process manager (which sends a bonus deposit to a
//!   separate account for 1% of the events) running: the clients' commands/s of both (the
//!   bonus commands come on top), and the ratio of the medians. Target: ≥ 80%.
//!
//! Each measurement runs several rounds (default 3; `overhead` alternates its two runs) and
//! prints every round and the median. The figures move with anything else the machine runs.
//!
//! `cargo bench -p annals-tests --bench subscriptions -- [catchup|lag|overhead|all] [rounds]`

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{
    Action, Aggregate, HandleFuture, HandlerError, ProcessManager, Projection, RecordedEvent,
    Runtime, RuntimeOptions, Subscriber, SubscriberOptions, Timestamp, View, ViewSet,
};
use annals_domain::bank::{Account, AccountCommand, AccountEvent};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Accounts of every workload.
const ACCOUNTS: usize = 1000;
/// Deposits per account written before the catch-up measurement: 1,000,000 events in all.
const CATCHUP_DEPOSITS: usize = 1000;
/// Commands per account of the bank workload (as in `benches/bank.rs`).
const BANK_COMMANDS: usize = 100;
/// How long a wait for a subscriber may take before the benchmark gives up.
const WAIT_MAX: Duration = Duration::from_secs(600);
/// The process manager reacts to events whose position is a multiple of this (1%).
const BONUS_EVERY: u64 = 100;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args.first().map_or("all", String::as_str).to_string();
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    if mode == "catchup" || mode == "all" {
        rt.block_on(catchup(rounds));
    }
    if mode == "lag" || mode == "all" {
        rt.block_on(lag(rounds));
    }
    if mode == "overhead" || mode == "all" {
        rt.block_on(overhead(rounds));
    }
}

// ---------------------------------------------------------------------------------------------
// Subscribers, projections and the process manager under test
// ---------------------------------------------------------------------------------------------

/// Does nothing: what is left is the engine's cost.
struct Noop;

impl Subscriber for Noop {
    fn handle<'a>(&'a mut self, _event: &'a RecordedEvent) -> HandleFuture<'a> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A per-account `View<u64>`, folded from the account's events.
struct PerAccount {
    view: View<u64>,
    fold: fn(u64, &AccountEvent, &RecordedEvent) -> u64,
}

impl Projection for PerAccount {
    fn handle(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.stream.aggregate_type() != Account::TYPE {
            return Ok(());
        }
        let payload = event.decode::<AccountEvent>()?.payload;
        let fold = self.fold;
        self.view.update(
            event.stream.aggregate_id().as_bytes(),
            event.position,
            |current| Some(fold(current.unwrap_or(0), &payload, event)),
        )?;
        Ok(())
    }
}

fn balance(current: u64, event: &AccountEvent, _: &RecordedEvent) -> u64 {
    match *event {
        AccountEvent::Deposited { amount } => current.saturating_add(amount),
        AccountEvent::Withdrawn { amount } => current.saturating_sub(amount),
    }
}

fn movements(current: u64, _: &AccountEvent, _: &RecordedEvent) -> u64 {
    current + 1
}

fn last_active(_: u64, _: &AccountEvent, event: &RecordedEvent) -> u64 {
    event.meta.recorded_at.as_micros()
}

/// Registers a [`PerAccount`] projection named `name`.
fn project(runtime: &Runtime, name: &str, fold: fn(u64, &AccountEvent, &RecordedEvent) -> u64) {
    runtime
        .project(
            name,
            SubscriberOptions::default(),
            move |views: &ViewSet| {
                Ok(PerAccount {
                    view: views.view("by-account")?,
                    fold,
                })
            },
        )
        .expect("register a projection");
}

/// Sends a bonus deposit to `bonus-{account}` for the deposits at every [`BONUS_EVERY`]th
/// position (1% of events), keeping a deposit count per account as its state.
struct Bonus;

#[derive(Debug, Default, Serialize, Deserialize)]
struct BonusState {
    deposits: u64,
}

impl ProcessManager for Bonus {
    type State = BonusState;

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        let id = event.stream.aggregate_id();
        (event.stream.aggregate_type() == Account::TYPE
            && &*event.event_type == "Deposited"
            && id.starts_with("acct-"))
        .then(|| id.to_string())
    }

    fn react(
        &self,
        state: &mut BonusState,
        event: &RecordedEvent,
    ) -> Result<Vec<Action>, HandlerError> {
        state.deposits += 1;
        if !event.position.0.is_multiple_of(BONUS_EVERY) {
            return Ok(Vec::new());
        }
        let target = format!("bonus-{}", event.stream.aggregate_id());
        Ok(vec![Action::command::<Account>(
            target,
            &AccountCommand::Deposit { amount: 1 },
        )?])
    }
}

/// Notes, per position, when the subscriber handled the event and when it was recorded.
struct LagProbe {
    handled_at: Arc<[AtomicU64]>,
    recorded_at: Arc<[AtomicU64]>,
}

impl Subscriber for LagProbe {
    fn handle<'a>(&'a mut self, event: &'a RecordedEvent) -> HandleFuture<'a> {
        let now = Timestamp::now().as_micros();
        if let Ok(i) = usize::try_from(event.position.0) {
            if let (Some(handled), Some(recorded)) =
                (self.handled_at.get(i), self.recorded_at.get(i))
            {
                handled.store(now, Ordering::Relaxed);
                recorded.store(event.meta.recorded_at.as_micros(), Ordering::Relaxed);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

fn slots(n: usize) -> Arc<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

fn open(dir: &std::path::Path) -> Runtime {
    let options = RuntimeOptions::new(dir)
        .with_live_actors_max(NonZeroUsize::new(ACCOUNTS * 3).expect("nonzero"));
    let runtime = Runtime::open(options).expect("open runtime");
    runtime.register::<Account>().expect("register");
    runtime
}

/// What one run of the bank workload measured.
struct BankRun {
    commands_per_s: f64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// The bank workload of `benches/bank.rs`: `ACCOUNTS` clients, each sending `commands`
/// commands to its own account and awaiting each reply (every third a withdrawal of 250,
/// otherwise a deposit of 100). If `acked_at` is given, each client notes when the reply for
/// each position arrived.
async fn bank(runtime: &Runtime, commands: usize, acked_at: Option<Arc<[AtomicU64]>>) -> BankRun {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(ACCOUNTS);
    for a in 0..ACCOUNTS {
        let runtime = runtime.clone();
        let acked_at = acked_at.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("acct-{a}");
            let mut h = histogram();
            for i in 0..commands {
                let command = if i % 3 == 2 {
                    AccountCommand::Withdraw { amount: 250 }
                } else {
                    AccountCommand::Deposit { amount: 100 }
                };
                let t = Instant::now();
                let executed = match runtime.execute::<Account>(&id, command).await {
                    Ok(Ok(executed)) => Some(executed),
                    Ok(Err(_)) => None,
                    Err(e) => panic!("command failed: {e}"),
                };
                let now = Timestamp::now().as_micros();
                h.record(micros(t.elapsed())).expect("record");
                let position = executed.and_then(|e| e.position);
                if let (Some(acked_at), Some(position)) = (&acked_at, position) {
                    if let Some(slot) = usize::try_from(position.0)
                        .ok()
                        .and_then(|i| acked_at.get(i))
                    {
                        slot.store(now, Ordering::Relaxed);
                    }
                }
            }
            h
        }));
    }
    let mut latency = histogram();
    for t in tasks {
        latency.add(t.await.expect("client")).expect("add");
    }
    let elapsed = started.elapsed();
    BankRun {
        commands_per_s: (ACCOUNTS * commands) as f64 / elapsed.as_secs_f64(),
        elapsed,
        latency,
    }
}

/// Writes `deposits` deposits of 1 to each account, all accounts at once.
async fn fill(runtime: &Runtime, deposits: usize) {
    let mut tasks = Vec::with_capacity(ACCOUNTS);
    for a in 0..ACCOUNTS {
        let runtime = runtime.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("acct-{a}");
            for _ in 0..deposits {
                let r = runtime
                    .execute::<Account>(&id, AccountCommand::Deposit { amount: 1 })
                    .await;
                assert!(matches!(r, Ok(Ok(_))), "fill failed: {r:?}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("fill client");
    }
}

/// Waits until `name` has processed everything written so far; returns how long it took.
async fn caught_up(runtime: &Runtime, name: &str) -> Duration {
    let t = Instant::now();
    runtime
        .wait_for(name, runtime.head_position(), WAIT_MAX)
        .await
        .unwrap_or_else(|e| panic!("{name} did not catch up: {e}"));
    t.elapsed()
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

async fn catchup(rounds: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = open(dir.path());
    let t = Instant::now();
    fill(&runtime, CATCHUP_DEPOSITS).await;
    let head = runtime.head_position();
    println!(
        "catchup: wrote {} events ({ACCOUNTS} accounts x {CATCHUP_DEPOSITS} deposits) in {:.1?}",
        head.0,
        t.elapsed()
    );
    let events = head.0 as f64;
    let (mut projected, mut plain) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let name = format!("balances-{round}");
        let t = Instant::now();
        project(&runtime, &name, balance);
        runtime
            .wait_for(&name, head, WAIT_MAX)
            .await
            .unwrap_or_else(|e| panic!("{name} did not catch up: {e}"));
        let took = t.elapsed();
        // The view must hold exactly the deposits: each account got CATCHUP_DEPOSITS of 1.
        let view: View<u64> = runtime.view(&name, "by-account").expect("view");
        for a in [0, ACCOUNTS / 2, ACCOUNTS - 1] {
            let got = view.get(format!("acct-{a}").as_bytes()).expect("read");
            assert_eq!(got, Some(CATCHUP_DEPOSITS as u64), "balance of acct-{a}");
        }
        runtime.stop_subscriber(&name);
        projected.push(events / took.as_secs_f64());
        println!(
            "catchup round {round}: projection (View<u64> balance per account): {:>9.0} events/s ({:.2?})",
            events / took.as_secs_f64(),
            took
        );

        let name = format!("noop-{round}");
        let t = Instant::now();
        runtime
            .subscribe(&name, Noop, SubscriberOptions::default())
            .expect("subscribe");
        runtime
            .wait_for(&name, head, WAIT_MAX)
            .await
            .unwrap_or_else(|e| panic!("{name} did not catch up: {e}"));
        let took = t.elapsed();
        runtime.stop_subscriber(&name);
        plain.push(events / took.as_secs_f64());
        println!(
            "catchup round {round}: plain subscriber doing nothing:          {:>9.0} events/s ({:.2?})",
            events / took.as_secs_f64(),
            took
        );
    }
    let projection = median(&mut projected);
    println!(
        "catchup median of {rounds}: projection {projection:.0} events/s ({}: target >= 300,000), plain subscriber {:.0} events/s",
        verdict(projection >= 300_000.0),
        median(&mut plain),
    );
    runtime.shutdown().await.expect("shutdown");
}

async fn lag(rounds: usize) {
    let (mut decided_p99, mut acked_p99) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = open(dir.path());
        // Positions start at 1; every command writes at most one event.
        let capacity = ACCOUNTS * BANK_COMMANDS + 1;
        let probe = LagProbe {
            handled_at: slots(capacity),
            recorded_at: slots(capacity),
        };
        let (handled_at, recorded_at) = (probe.handled_at.clone(), probe.recorded_at.clone());
        let acked_at = slots(capacity);
        runtime
            .subscribe("lag", probe, SubscriberOptions::default())
            .expect("subscribe");
        let run = bank(&runtime, BANK_COMMANDS, Some(acked_at.clone())).await;
        let tail = caught_up(&runtime, "lag").await;
        let head = usize::try_from(runtime.head_position().0).expect("head fits usize");

        // From the decision (`recorded_at`) to the subscriber: includes the batch's write and
        // fsync, which no subscriber can skip (only acknowledged batches are visible).
        let mut from_decided = histogram();
        // From the client's acknowledgement to the subscriber: negative when the subscriber saw
        // the event before the reply reached its client (counted as 0, and counted apart).
        let mut from_ack = histogram();
        // From the decision to the acknowledgement: the durable commit, for comparison.
        let mut commit = histogram();
        let mut before_ack = 0u64;
        for i in 1..=head.min(capacity - 1) {
            let handled = handled_at[i].load(Ordering::Relaxed);
            let recorded = recorded_at[i].load(Ordering::Relaxed);
            let acked = acked_at[i].load(Ordering::Relaxed);
            assert!(handled > 0, "position {i} was not handled");
            from_decided
                .record(handled.saturating_sub(recorded).max(1))
                .expect("record");
            if acked > 0 {
                if handled < acked {
                    before_ack += 1;
                }
                from_ack
                    .record(handled.saturating_sub(acked).max(1))
                    .expect("record");
                commit
                    .record(acked.saturating_sub(recorded).max(1))
                    .expect("record");
            }
        }
        println!(
            "lag round {round}: bank workload {:.0} commands/s (command p99 {} µs), {head} events; subscriber caught up {:.1?} after the last reply",
            run.commands_per_s,
            run.latency.value_at_quantile(0.99),
            tail,
        );
        println!(
            "lag round {round}:   from recorded_at (decision; includes the fsync): p50 {:>5} µs  p99 {:>5} µs  max {:>6} µs",
            from_decided.value_at_quantile(0.5),
            from_decided.value_at_quantile(0.99),
            from_decided.max(),
        );
        println!(
            "lag round {round}:   from the client's ack:                          p50 {:>5} µs  p99 {:>5} µs  max {:>6} µs  ({:.1}% handled before the ack reached its client, counted as 0)",
            from_ack.value_at_quantile(0.5),
            from_ack.value_at_quantile(0.99),
            from_ack.max(),
            100.0 * before_ack as f64 / from_ack.len().max(1) as f64,
        );
        println!(
            "lag round {round}:   for comparison, recorded_at to ack (commit):    p50 {:>5} µs  p99 {:>5} µs  max {:>6} µs",
            commit.value_at_quantile(0.5),
            commit.value_at_quantile(0.99),
            commit.max(),
        );
        decided_p99.push(from_decided.value_at_quantile(0.99) as f64);
        acked_p99.push(from_ack.value_at_quantile(0.99) as f64);
        runtime.shutdown().await.expect("shutdown");
    }
    let decided = median(&mut decided_p99);
    let acked = median(&mut acked_p99);
    println!(
        "lag median of {rounds}: p99 from recorded_at {decided:.0} µs ({}: target <= 5,000 µs), p99 from ack {acked:.0} µs ({})",
        verdict(decided <= 5000.0),
        verdict(acked <= 5000.0),
    );
}

async fn overhead(rounds: usize) {
    let (mut bare, mut loaded) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Nothing registered.
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = open(dir.path());
        let run = bank(&runtime, BANK_COMMANDS, None).await;
        let journal = runtime.stats().journal;
        println!(
            "overhead round {round}: nothing registered:                 {:>9.0} commands/s  p50 {:>6} µs  p99 {:>6} µs  elapsed {:.2?}  fsyncs {}",
            run.commands_per_s,
            run.latency.value_at_quantile(0.5),
            run.latency.value_at_quantile(0.99),
            run.elapsed,
            journal.fsyncs,
        );
        bare.push(run.commands_per_s);
        runtime.shutdown().await.expect("shutdown");
        drop(runtime);
        drop(dir);

        // Three projections and a process manager.
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = open(dir.path());
        project(&runtime, "balances", balance);
        project(&runtime, "movements", movements);
        project(&runtime, "last-active", last_active);
        runtime
            .process_manager("bonus", Bonus, SubscriberOptions::default())
            .expect("register the process manager");
        let run = bank(&runtime, BANK_COMMANDS, None).await;
        let t = Instant::now();
        // The process manager's own commands move the head: wait until it stops moving.
        loop {
            let head = runtime.head_position();
            for name in ["balances", "movements", "last-active", "bonus"] {
                runtime
                    .wait_for(name, head, WAIT_MAX)
                    .await
                    .unwrap_or_else(|e| panic!("{name} did not catch up: {e}"));
            }
            if runtime.head_position() == head {
                break;
            }
        }
        let tail = t.elapsed();
        let bonuses = (0..ACCOUNTS)
            .filter_map(|a| {
                runtime
                    .state::<Account>(&format!("bonus-acct-{a}"))
                    .expect("state")
            })
            .map(|s| s.version.0)
            .sum::<u64>();
        let journal = runtime.stats().journal;
        println!(
            "overhead round {round}: 3 projections + 1 process manager: {:>9.0} commands/s  p50 {:>6} µs  p99 {:>6} µs  elapsed {:.2?}  fsyncs {}  (all caught up {:.2?} later; {bonuses} bonus commands sent)",
            run.commands_per_s,
            run.latency.value_at_quantile(0.5),
            run.latency.value_at_quantile(0.99),
            run.elapsed,
            journal.fsyncs,
            tail,
        );
        loaded.push(run.commands_per_s);
        runtime.shutdown().await.expect("shutdown");
    }
    let (bare, loaded) = (median(&mut bare), median(&mut loaded));
    let ratio = loaded / bare;
    println!(
        "overhead median of {rounds}: nothing registered {bare:.0} commands/s, with 3 projections + 1 process manager {loaded:.0} commands/s: {:.0}% ({}: target >= 80%)",
        100.0 * ratio,
        verdict(ratio >= 0.8),
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}
