//! Running a [`Plan`]: the setup, the client threads with their closed or open loops, the saga
//! watcher, the progress bar, and the [`Report`] at the end.
//!
//! # Threads
//! The caller's thread runs an actix system with the setup, the saga watcher, the progress bar
//! and, after the run, the verifier. `--threads` client threads each run their own actix system
//! and their own [`Client`] (an HTTP client is not `Send`), with their share of the clients
//! (closed loop) or of the rate and the outstanding bound (open loop). Counters shared across
//! threads are atomics; histograms, failures and acknowledgements are kept per thread and
//! merged at the end.
//!
//! # Sessions
//! A *session* is one unit of work: for `bank`, one command; for `orders`, a `CreateOrder`,
//! the wait for the saga's decision and, for some approved orders, a `ShipOrder` or
//! `CancelOrder`. `--commands` and `--rate` count sessions. Every command of a session counts
//! as sent, with its own latency.
//!
//! # Latency
//! Closed loop: from just before the command is sent. Open loop: from the session's
//! **intended** start (`start + n / rate`), not from when it was actually sent, so a stall
//! that delays sending shows up in the latency (coordinated omission corrected); a follow-up
//! command of an `orders` session counts from when the decision was seen. Answered commands
//! and timed-out ones (at the time they were given up) are recorded; other failures, which are
//! often fast, are only counted.
//!
//! # Failures
//! A failed command is not retried: a retry would be a second command. A closed-loop client
//! pauses after a failure before its next session — the target's `Retry-After` (at most
//! [`PAUSE_MAX`]) when overloaded, [`FAILURE_PAUSE`] otherwise (none after a timeout, which
//! already waited) — so a refusing target is not hammered in a tight loop.
//!
//! # Stopping
//! No session starts after `--duration` or once `--commands` sessions have started (or after
//! Ctrl-C; a second Ctrl-C exits at once, without a report). Then the driver waits for the
//! sessions in progress, each of whose requests is bounded by `--timeout` and whose saga wait
//! is bounded by `--saga-timeout`, so a run always ends, even when the target stops answering.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::Runtime;
use annals_config::StoreBackend;
use futures::channel::oneshot;
use futures::StreamExt;
use hdrhistogram::Histogram;

use crate::args::{Plan, Shape};
use crate::progress::{Goal, Progress, Snapshot, TICK};
use crate::report::{self, Journal, Latency, Report, Saga, Setup, REPORT_VERSION};
use crate::saga::{self, Awaited, Board};
use crate::target::{Client, Connect, FailKind, Failure, Failures, Outcome};
use crate::verify::{self, AckRecord};
use crate::workload::{self, Picker, Request, WorkloadKind};

/// Pause of a closed-loop client after a failure other than a timeout or an overload with a
/// retry hint.
pub(crate) const FAILURE_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause after a failure, whatever `Retry-After` says: the run has a deadline.
pub(crate) const PAUSE_MAX: Duration = Duration::from_secs(1);
/// Customers created at once during the setup of `orders`.
const SETUP_CONCURRENCY: usize = 64;
/// Open loop: the scheduler yields to the sessions after this many arrivals in a row that
/// were already due (it is behind), so that sessions still progress.
const ARRIVALS_PER_YIELD: u64 = 64;

/// Counters shared by all threads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Sessions taken from the budget (started, or counted unsent).
    taken: AtomicU64,
    /// Commands sent.
    sent: AtomicU64,
    /// Commands acknowledged.
    acknowledged: AtomicU64,
    /// Commands rejected.
    rejected: AtomicU64,
    /// Commands failed.
    failed: AtomicU64,
    /// Open-loop arrivals not sent.
    unsent: AtomicU64,
    /// Start no more sessions (Ctrl-C).
    stop: AtomicBool,
}

impl Counters {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            started: Self::get(&self.taken),
            answered: Self::get(&self.acknowledged) + Self::get(&self.rejected),
            failed: Self::get(&self.failed),
        }
    }
}

/// What every thread of a run shares.
#[derive(Debug)]
struct Shared {
    plan: Plan,
    counters: Counters,
    board: Board,
    /// The next order number (`orders`).
    order_seq: AtomicU64,
    /// The start of the measured run.
    started: Instant,
    /// No session starts after this.
    deadline: Option<Instant>,
}

impl Shared {
    /// Takes one session starting now from the budget, unless the run is over.
    fn take(&self) -> bool {
        self.take_at(Instant::now())
    }

    /// Takes one session meant to start `at` from the budget, unless the run is over by then.
    /// The open loop passes the intended start, so that a scheduler running late still starts
    /// (late, with that lateness in their latency) every session due before the deadline.
    fn take_at(&self, at: Instant) -> bool {
        if self.counters.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| at >= d) {
            return false;
        }
        let taken = self.counters.taken.fetch_add(1, Ordering::Relaxed);
        match self.plan.commands {
            Some(max) if taken >= max => {
                // Undo, so that `taken` ends at the budget.
                self.counters.taken.fetch_sub(1, Ordering::Relaxed);
                false
            }
            _ => true,
        }
    }

    /// Time left until the deadline (`None`: no deadline).
    fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// The orders of one thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct OrderTally {
    created: u64,
    approved: u64,
    rejected: u64,
    undecided: u64,
    shipped: u64,
    cancelled: u64,
}

/// What one thread measured.
#[derive(Debug)]
pub(crate) struct Tally {
    latency: Histogram<u64>,
    saga: Histogram<u64>,
    failures: Failures,
    acks: Vec<AckRecord>,
    orders: OrderTally,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: report::histogram(),
            saga: report::histogram(),
            failures: Failures::default(),
            acks: Vec::new(),
            orders: OrderTally::default(),
        }
    }

    fn merge(&mut self, other: Tally) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.saga.add(&other.saga);
        self.failures.merge(other.failures);
        self.acks.extend(other.acks);
        let (a, b) = (&mut self.orders, other.orders);
        a.created += b.created;
        a.approved += b.approved;
        a.rejected += b.rejected;
        a.undecided += b.undecided;
        a.shipped += b.shipped;
        a.cancelled += b.cancelled;
    }
}

/// How a command ended, for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Acked,
    Rejected,
    /// Failed; the pause a closed-loop client takes before its next session.
    Failed(Option<Duration>),
}

impl Answer {
    fn pause(self) -> Option<Duration> {
        match self {
            Answer::Failed(pause) => pause,
            Answer::Acked | Answer::Rejected => None,
        }
    }
}

/// The pause after a failure.
fn pause_after(failure: &Failure) -> Option<Duration> {
    match failure.kind {
        FailKind::Timeout => None,
        FailKind::Overloaded => Some(failure.retry_after.unwrap_or(FAILURE_PAUSE).min(PAUSE_MAX)),
        _ => Some(FAILURE_PAUSE),
    }
}

/// One client thread's state, shared by its tasks.
#[derive(Debug)]
struct Worker {
    shared: Arc<Shared>,
    client: Client,
    tally: RefCell<Tally>,
}

impl Worker {
    /// Sends one command and records what became of it.
    async fn send(&self, request: Request, intended: Instant) -> Answer {
        let counters = &self.shared.counters;
        Counters::bump(&counters.sent);
        let outcome = self.client.send(&request, self.shared.plan.timeout).await;
        let latency = intended.elapsed();
        let mut tally = self.tally.borrow_mut();
        match outcome {
            Outcome::Acked(ack) => {
                Counters::bump(&counters.acknowledged);
                report::record(&mut tally.latency, latency);
                if self.shared.plan.verify {
                    tally.acks.push(AckRecord {
                        kind: request.command.kind(),
                        command: request.command.name(),
                        id: request.id,
                        ack,
                    });
                }
                Answer::Acked
            }
            Outcome::Rejected(_) => {
                Counters::bump(&counters.rejected);
                report::record(&mut tally.latency, latency);
                Answer::Rejected
            }
            Outcome::Failed(failure) => {
                Counters::bump(&counters.failed);
                if failure.kind == FailKind::Timeout {
                    report::record(&mut tally.latency, latency);
                }
                tally.failures.add(&failure);
                Answer::Failed(pause_after(&failure))
            }
        }
    }

    /// Runs one session on aggregate `index`; `seq` numbers the client's sessions. Returns the
    /// pause a closed-loop client takes before the next one.
    async fn session(&self, index: u64, seq: u64, intended: Instant) -> Option<Duration> {
        let prefix = self.shared.plan.id_prefix.as_str();
        match self.shared.plan.workload {
            WorkloadKind::Bank => {
                let request = Request {
                    id: workload::account_id(prefix, index),
                    command: workload::bank_command(seq),
                };
                self.send(request, intended).await.pause()
            }
            WorkloadKind::Orders => self.order_session(index, intended).await,
        }
    }

    /// Creates an order for customer `index`, waits for the saga's decision, and ships or
    /// cancels some approved orders.
    async fn order_session(&self, index: u64, intended: Instant) -> Option<Duration> {
        let shared = &*self.shared;
        let prefix = shared.plan.id_prefix.as_str();
        let n = shared.order_seq.fetch_add(1, Ordering::Relaxed);
        let order = workload::order_id(prefix, n);
        let create = Request {
            id: order.clone(),
            command: workload::create_order(n, workload::customer_id(prefix, index)),
        };
        let answer = self.send(create, intended).await;
        if answer != Answer::Acked {
            return answer.pause();
        }
        let acked_at = Instant::now();
        self.tally.borrow_mut().orders.created += 1;
        let decision = match shared.board.wait(&order) {
            Awaited::Ready(decision) => Some(decision),
            Awaited::Pending(rx) => tokio::time::timeout(shared.plan.saga_timeout, rx)
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some(decision) = decision else {
            shared.board.forget(&order);
            self.tally.borrow_mut().orders.undecided += 1;
            return None;
        };
        {
            let mut tally = self.tally.borrow_mut();
            let waited = decision.observed_at.saturating_duration_since(acked_at);
            report::record(&mut tally.saga, waited);
            if decision.approved {
                tally.orders.approved += 1;
            } else {
                tally.orders.rejected += 1;
                return None;
            }
        }
        let command = workload::follow_up(n)?;
        let shipping = command.name() == "ShipOrder";
        let answer = self
            .send(Request { id: order, command }, Instant::now())
            .await;
        if answer == Answer::Acked {
            let mut tally = self.tally.borrow_mut();
            if shipping {
                tally.orders.shipped += 1;
            } else {
                tally.orders.cancelled += 1;
            }
        }
        answer.pause()
    }
}

/// What one client thread runs.
#[derive(Debug, Clone)]
enum Job {
    /// These closed-loop clients (global numbers) out of `clients`.
    Closed { mine: Vec<u64>, clients: u64 },
    /// Thread `thread` of `threads` of an open loop, with its share of the rate and of the
    /// outstanding bound.
    Open {
        thread: u64,
        threads: u64,
        rate: f64,
        max_outstanding: usize,
    },
}

/// `n` split over `parts`: the share of part `i`.
fn share(n: usize, parts: usize, i: usize) -> usize {
    n / parts + usize::from(i < n % parts)
}

/// The jobs of the client threads, and the number of threads (never more than there are
/// clients, or outstanding requests, to share).
fn jobs(plan: &Plan) -> Vec<Job> {
    match plan.shape {
        Shape::Closed { clients } => {
            let threads = plan.threads.min(clients).max(1);
            (0..threads)
                .map(|t| Job::Closed {
                    mine: (0..clients as u64)
                        .filter(|c| *c % threads as u64 == t as u64)
                        .collect(),
                    clients: clients as u64,
                })
                .collect()
        }
        Shape::Open {
            rate,
            max_outstanding,
        } => {
            let threads = plan.threads.min(max_outstanding).max(1);
            (0..threads)
                .map(|t| Job::Open {
                    thread: t as u64,
                    threads: threads as u64,
                    rate: rate / threads as f64,
                    max_outstanding: share(max_outstanding, threads, t),
                })
                .collect()
        }
    }
}

/// How many connections a thread's HTTP client may open: one per concurrent request.
fn connections(job: &Job) -> usize {
    match job {
        Job::Closed { mine, .. } => mine.len(),
        Job::Open {
            max_outstanding, ..
        } => *max_outstanding,
    }
}

/// Starts a client thread; its tally arrives on the receiver when it is done.
fn spawn_thread(
    number: usize,
    shared: Arc<Shared>,
    connect: Connect,
    job: Job,
) -> std::io::Result<oneshot::Receiver<Tally>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("annals-load-{number}"))
        .spawn(move || {
            let system = actix_rt::System::new();
            let tally = system.block_on(async move {
                let worker = Rc::new(Worker {
                    client: Client::connect(&connect),
                    shared,
                    tally: RefCell::new(Tally::new()),
                });
                match job {
                    Job::Closed { mine, clients } => closed_loop(&worker, mine, clients).await,
                    Job::Open {
                        thread,
                        threads,
                        rate,
                        max_outstanding,
                    } => open_loop(&worker, thread, threads, rate, max_outstanding).await,
                }
                worker.tally.replace(Tally::new())
            });
            // The receiver is only gone if the run was abandoned.
            let _ = tx.send(tally);
        })?;
    Ok(rx)
}

/// Closed loop: each client runs sessions back to back.
async fn closed_loop(worker: &Rc<Worker>, mine: Vec<u64>, clients: u64) {
    let tasks: Vec<_> = mine
        .into_iter()
        .map(|client| actix_rt::spawn(client_loop(worker.clone(), client, clients)))
        .collect();
    for task in tasks {
        // A panicking session is a bug; its client stops, the others finish the run.
        let _ = task.await;
    }
}

async fn client_loop(worker: Rc<Worker>, client: u64, clients: u64) {
    let plan = &worker.shared.plan;
    let mut picker = Picker::new(client, clients, plan.aggregates, plan.skew, plan.seed);
    let mut seq = 0u64;
    while worker.shared.take() {
        let index = picker.next_index();
        let pause = worker.session(index, seq, Instant::now()).await;
        seq += 1;
        if let Some(pause) = pause {
            let pause = worker
                .shared
                .remaining()
                .map_or(pause, |left| pause.min(left));
            tokio::time::sleep(pause).await;
        }
    }
}

/// Open loop: sessions start at `rate` per second whatever the answers, at most
/// `max_outstanding` at once; an arrival beyond the bound is counted unsent.
async fn open_loop(
    worker: &Rc<Worker>,
    thread: u64,
    threads: u64,
    rate: f64,
    max_outstanding: usize,
) {
    let shared = &*worker.shared;
    let plan = &shared.plan;
    let mut picker = Picker::new(thread, threads, plan.aggregates, plan.skew, plan.seed);
    let outstanding = Rc::new(Cell::new(0usize));
    let idle = Rc::new(tokio::sync::Notify::new());
    let interval = 1.0 / rate;
    // The threads' arrivals interleave instead of coming in bursts of `threads`.
    let epoch = shared.started
        + Duration::try_from_secs_f64(interval * thread as f64 / threads as f64)
            .unwrap_or_default();
    let mut seq = 0u64;
    // The offset of an arrival only fails to convert beyond any run's length.
    while let Ok(offset) = Duration::try_from_secs_f64(interval * seq as f64) {
        let intended = epoch + offset;
        if intended > Instant::now() {
            tokio::time::sleep_until(tokio::time::Instant::from_std(intended)).await;
        } else if seq.is_multiple_of(ARRIVALS_PER_YIELD) {
            tokio::task::yield_now().await;
        }
        if !shared.take_at(intended) {
            break;
        }
        let index = picker.next_index();
        if outstanding.get() >= max_outstanding {
            Counters::bump(&shared.counters.unsent);
        } else {
            outstanding.set(outstanding.get() + 1);
            let (worker, outstanding, idle) = (worker.clone(), outstanding.clone(), idle.clone());
            actix_rt::spawn(async move {
                worker.session(index, seq, intended).await;
                outstanding.set(outstanding.get() - 1);
                if outstanding.get() == 0 {
                    idle.notify_one();
                }
            });
        }
        seq += 1;
    }
    while outstanding.get() > 0 {
        idle.notified().await;
    }
}

/// What the setup prepared.
#[derive(Debug, Default)]
struct Prepared {
    /// The setup's acknowledged commands (kept with `--verify`).
    acks: Vec<AckRecord>,
    /// Commands sent.
    commands: u64,
    /// The highest position the setup's commands wrote.
    position: u64,
    /// How long it took.
    elapsed: Duration,
}

/// `orders`: creates the customers (a customer that already exists, from an earlier run with
/// the same `--id-prefix`, is fine).
async fn setup(client: &Client, plan: &Plan) -> anyhow::Result<Prepared> {
    let mut prepared = Prepared::default();
    if plan.workload != WorkloadKind::Orders {
        return Ok(prepared);
    }
    let started = Instant::now();
    let mut results = futures::stream::iter(0..plan.aggregates)
        .map(|index| async move {
            let request = Request {
                id: workload::customer_id(&plan.id_prefix, index),
                command: workload::create_customer(index),
            };
            let outcome = client.send(&request, plan.timeout).await;
            (request, outcome)
        })
        .buffer_unordered(SETUP_CONCURRENCY);
    while let Some((request, outcome)) = results.next().await {
        prepared.commands += 1;
        match outcome {
            Outcome::Acked(ack) => {
                let last = ack.events.last().map_or(0, |e| e.position);
                prepared.position = prepared.position.max(last);
                if plan.verify {
                    prepared.acks.push(AckRecord {
                        kind: request.command.kind(),
                        command: request.command.name(),
                        id: request.id,
                        ack,
                    });
                }
            }
            Outcome::Rejected(rejection) if rejection.to_ascii_lowercase().contains("already") => {}
            Outcome::Rejected(rejection) => {
                anyhow::bail!("setup: customer {} was refused: {rejection}", request.id)
            }
            Outcome::Failed(failure) => anyhow::bail!(
                "setup: cannot create customer {}: {} ({})",
                request.id,
                failure.detail,
                failure.kind.name()
            ),
        }
    }
    prepared.elapsed = started.elapsed();
    Ok(prepared)
}

/// How the main thread's client connects: enough connections for the setup, the watcher and
/// the verifier.
fn main_connect(connect: &Connect) -> Connect {
    match connect {
        Connect::Inproc(runtime) => Connect::Inproc(runtime.clone()),
        Connect::Http { base, timeout, .. } => Connect::Http {
            base: base.clone(),
            connections: SETUP_CONCURRENCY + 2,
            timeout: *timeout,
        },
    }
}

/// Runs the plan against `connect` (with `runtime`, the in-process runtime behind it, for its
/// journal counters) and returns the report, verified if asked.
pub(crate) async fn run(
    plan: &Plan,
    connect: &Connect,
    runtime: Option<&Runtime>,
) -> anyhow::Result<Report> {
    let client = Client::connect(&main_connect(connect));
    client
        .ready(plan.timeout)
        .await
        .map_err(|e| anyhow::anyhow!("the target {} is not ready: {e}", plan.target.name()))?;
    let prepared = setup(&client, plan).await?;
    // The saga watcher starts at the head: this run's decisions all come later.
    let watch_from = client.head().await.unwrap_or(prepared.position);
    let journal_before = runtime.map(|r| r.stats().journal);

    let jobs = jobs(plan);
    let threads = jobs.len();
    let started = Instant::now();
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        counters: Counters::default(),
        board: Board::default(),
        order_seq: AtomicU64::new(0),
        started,
        deadline: plan.duration.map(|d| started + d),
    });

    let stop = Rc::new(Cell::new(false));
    let watcher = (plan.workload == WorkloadKind::Orders).then(|| {
        let (client, shared, stop) = (client.clone(), shared.clone(), stop.clone());
        actix_rt::spawn(async move {
            let prefix = workload::order_prefix(&shared.plan.id_prefix);
            saga::watch(&client, &shared.board, &prefix, watch_from, &stop).await;
        })
    });
    let ticker = {
        let (shared, stop) = (shared.clone(), stop.clone());
        let goal = match (plan.commands, plan.duration) {
            (Some(n), _) => Goal::Commands(n),
            (None, Some(d)) => Goal::Millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            (None, None) => Goal::Millis(0),
        };
        let mut progress = Progress::new(goal, plan.quiet);
        actix_rt::spawn(async move {
            while !stop.get() {
                progress.update(shared.counters.snapshot());
                tokio::time::sleep(TICK).await;
            }
            progress.finish();
        })
    };
    let interrupt = {
        let shared = shared.clone();
        actix_rt::spawn(async move {
            // The first Ctrl-C ends the run as `--duration` would (sessions in progress finish,
            // the report is printed); a second one exits at once.
            if tokio::signal::ctrl_c().await.is_ok() {
                shared.counters.stop.store(true, Ordering::Relaxed);
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("annals load: interrupted twice; no report");
                    std::process::exit(130);
                }
            }
        })
    };

    let mut receivers = Vec::with_capacity(threads);
    for (number, job) in jobs.into_iter().enumerate() {
        let connect = match connect {
            Connect::Http { base, timeout, .. } => Connect::Http {
                base: base.clone(),
                connections: connections(&job),
                timeout: *timeout,
            },
            Connect::Inproc(runtime) => Connect::Inproc(runtime.clone()),
        };
        match spawn_thread(number, shared.clone(), connect, job) {
            Ok(rx) => receivers.push(rx),
            Err(e) => {
                // Stop the threads already started; they end their sessions in progress.
                shared.counters.stop.store(true, Ordering::Relaxed);
                receivers.clear();
                stop.set(true);
                anyhow::bail!("cannot start client thread {number}: {e}");
            }
        }
    }
    let mut tally = Tally::new();
    let mut lost_threads = 0;
    for rx in receivers {
        match rx.await {
            Ok(t) => tally.merge(t),
            Err(_) => lost_threads += 1,
        }
    }
    let elapsed = started.elapsed();
    stop.set(true);
    interrupt.abort();
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    let _ = ticker.await;
    if lost_threads > 0 {
        anyhow::bail!("{lost_threads} client thread(s) panicked; the run is not reported");
    }
    let journal = journal_before.zip(runtime).map(|(before, runtime)| {
        let after = runtime.stats().journal;
        let fsyncs = after.fsyncs.saturating_sub(before.fsyncs);
        let events = after.events.saturating_sub(before.events);
        Journal {
            fsyncs,
            events,
            appends: after.appends.saturating_sub(before.appends),
            batches: after.batches.saturating_sub(before.batches),
            events_per_fsync: if fsyncs == 0 {
                0.0
            } else {
                events as f64 / fsyncs as f64
            },
        }
    });

    let mut report = build_report(plan, &shared, &tally, &prepared, threads, elapsed, journal);
    if plan.verify {
        let mut acks = prepared.acks;
        acks.append(&mut tally.acks);
        let customers: Vec<String> = if plan.workload == WorkloadKind::Orders {
            (0..plan.aggregates)
                .map(|i| workload::customer_id(&plan.id_prefix, i))
                .collect()
        } else {
            Vec::new()
        };
        let input = verify::Input {
            acks: &acks,
            prefix: &plan.id_prefix,
            orders: plan.workload == WorkloadKind::Orders,
            customers: &customers,
            settle: plan.saga_timeout,
        };
        report.verify = Some(verify::verify(&client, input).await);
    }
    Ok(report)
}

/// The report of a finished run (without verification).
fn build_report(
    plan: &Plan,
    shared: &Shared,
    tally: &Tally,
    prepared: &Prepared,
    threads: usize,
    elapsed: Duration,
    journal: Option<Journal>,
) -> Report {
    let counters = &shared.counters;
    let acknowledged = Counters::get(&counters.acknowledged);
    let rejected = Counters::get(&counters.rejected);
    let elapsed_s = elapsed.as_secs_f64();
    let (shape, concurrency, rate, max_outstanding) = match plan.shape {
        Shape::Closed { clients } => ("closed", Some(clients), None, None),
        Shape::Open {
            rate,
            max_outstanding,
        } => ("open", None, Some(rate), Some(max_outstanding)),
    };
    let orders = tally.orders;
    Report {
        report_version: REPORT_VERSION,
        target: plan.target.name(),
        workload: plan.workload.name(),
        store: plan.target.backend().map(StoreBackend::name),
        durability: plan.target.durability_name(),
        shape,
        concurrency,
        rate,
        max_outstanding,
        aggregates: plan.aggregates,
        skew: plan.skew,
        threads,
        id_prefix: plan.id_prefix.clone(),
        duration_limit_s: plan.duration.map(|d| d.as_secs_f64()),
        commands_limit: plan.commands,
        elapsed_s,
        sent: Counters::get(&counters.sent),
        acknowledged,
        rejected,
        failed: Counters::get(&counters.failed),
        failed_by_kind: tally
            .failures
            .counts
            .iter()
            .map(|(kind, n)| (kind.name(), *n))
            .collect(),
        failure_examples: tally
            .failures
            .examples
            .iter()
            .map(|(kind, example)| (kind.name(), example.clone()))
            .collect(),
        unsent: Counters::get(&counters.unsent),
        throughput_per_s: if elapsed_s > 0.0 {
            (acknowledged + rejected) as f64 / elapsed_s
        } else {
            0.0
        },
        latency_us: Latency::of(&tally.latency),
        journal,
        setup: Setup {
            commands: prepared.commands,
            elapsed_s: prepared.elapsed.as_secs_f64(),
        },
        saga: (plan.workload == WorkloadKind::Orders).then(|| Saga {
            orders: orders.created,
            approved: orders.approved,
            rejected: orders.rejected,
            undecided: orders.undecided,
            shipped: orders.shipped,
            cancelled: orders.cancelled,
            latency_us: Latency::of(&tally.saga),
        }),
        verify: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (n, parts) in [(10, 3), (1, 4), (1024, 4), (7, 7)] {
            let total: usize = (0..parts).map(|i| share(n, parts, i)).sum();
            assert_eq!(total, n);
        }
    }

    #[test]
    fn failures_pause_closed_loop_clients() {
        let overloaded = Failure {
            kind: FailKind::Overloaded,
            retry_after: Some(Duration::from_secs(30)),
            detail: String::new(),
        };
        assert_eq!(pause_after(&overloaded), Some(PAUSE_MAX));
        assert_eq!(pause_after(&Failure::new(FailKind::Timeout, "")), None);
        assert_eq!(
            pause_after(&Failure::new(FailKind::Connect, "")),
            Some(FAILURE_PAUSE)
        );
    }
}
