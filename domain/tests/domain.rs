//! In-process tests of the reference domain: a real [`Runtime`] in a temporary directory, the
//! domain wired in with [`register`], driven by commands. They check what the saga promises
//! (no order stays pending, no customer's reservations exceed its limit, credit is held exactly
//! by approved and shipped orders) and that every read model equals a model computed from the
//! log, before and after a rebuild from scratch.
//!
//! No async runtime is needed: the runtime's methods are executor-agnostic, so the tests drive
//! them with `futures::executor::block_on`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{
    Aggregate, ExecuteError, HandlerError, Position, Projection, RecordedEvent, Runtime,
    RuntimeOptions, SubscriberOptions, Timestamp, ViewSet,
};
use annals_domain::customer::{Customer, CustomerCommand, CustomerEvent};
use annals_domain::order::{Order, OrderCommand, OrderEvent, OrderRejection, OrderStatus};
use annals_domain::saga::{self, OrderCreditSaga};
use annals_domain::views::{
    self, CustomerSummaries, CustomerSummary, OrderCounts, OrderListEntry, ValuableCustomer,
    ValuableCustomers,
};
use annals_domain::{register, DomainOptions};
use futures::executor::block_on;
use futures::future::join_all;

/// The subscribers `register` starts.
const SUBSCRIBERS: [&str; 3] = [
    saga::ORDER_CREDIT_SAGA,
    views::CUSTOMER_SUMMARIES,
    views::VALUABLE_CUSTOMERS,
];
/// The longest any test waits for the saga and the projections to settle.
const SETTLE_MAX: Duration = Duration::from_secs(20);
/// How often settling is checked.
const POLL: Duration = Duration::from_millis(10);
/// Commands sent at once by the bulk steps: enough to batch commits, far below any limit.
const CONCURRENCY: usize = 64;
/// Reads of the log and of order lists in these tests: more than they ever hold.
const PAGE: usize = 10_000;

/// A runtime in a temporary directory, removed when dropped.
struct Harness {
    runtime: Runtime,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A runtime with the whole domain registered.
    fn with_domain(options: &DomainOptions) -> Harness {
        let harness = Harness::empty();
        register(&harness.runtime, options).expect("the domain registers");
        harness
    }

    /// A runtime with nothing registered.
    fn empty() -> Harness {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let runtime = Runtime::open(RuntimeOptions::new(dir.path().join("annals"))).expect("opens");
        Harness { runtime, _dir: dir }
    }

    /// Waits until the log's head stops moving and every subscriber has reached it, which
    /// means the saga has no command left to send (except deadlines not yet due).
    fn settle(&self) {
        let started = Instant::now();
        let mut last = None;
        loop {
            let head = self.runtime.head_position();
            let infos = self.runtime.subscribers();
            let caught_up = infos.iter().all(|i| i.checkpoint >= head);
            if caught_up && last == Some(head) {
                return;
            }
            last = caught_up.then_some(head);
            assert!(
                started.elapsed() < SETTLE_MAX,
                "not settled after {SETTLE_MAX:?}: head {head}, {infos:#?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Every event of the log, in position order.
    fn log(&self) -> Vec<RecordedEvent> {
        let mut events = Vec::new();
        loop {
            let from = events
                .last()
                .map_or(Position(1), |e: &RecordedEvent| e.position.next());
            let page = self.runtime.read_all(from, PAGE).expect("reads the log");
            if page.is_empty() {
                return events;
            }
            events.extend(page);
        }
    }

    fn order(&self, id: &str) -> Order {
        self.runtime
            .state::<Order>(id)
            .expect("reads the order")
            .unwrap_or_else(|| panic!("order {id} exists"))
            .state
    }

    fn customer(&self, id: &str) -> Customer {
        self.runtime
            .state::<Customer>(id)
            .expect("reads the customer")
            .unwrap_or_else(|| panic!("customer {id} exists"))
            .state
    }

    fn shutdown(self) {
        block_on(self.runtime.shutdown()).expect("shuts down");
    }
}

/// Executes `command` and expects it to be accepted.
fn execute<A: Aggregate>(runtime: &Runtime, id: &str, command: A::Command)
where
    A::Rejection: std::fmt::Debug,
{
    block_on(runtime.execute::<A>(id, command))
        .expect("no technical failure")
        .unwrap_or_else(|rejection| panic!("{} {id}: rejected: {rejection:?}", A::TYPE));
}

/// Sends `commands` to orders, `CONCURRENCY` at a time; returns each outcome.
fn execute_orders(
    runtime: &Runtime,
    commands: Vec<(String, OrderCommand)>,
) -> Vec<(String, Result<(), OrderRejection>)> {
    let mut outcomes = Vec::new();
    let mut commands = commands.into_iter().peekable();
    while commands.peek().is_some() {
        let chunk: Vec<_> = commands.by_ref().take(CONCURRENCY).collect();
        let sent = chunk.into_iter().map(|(id, command)| async move {
            let outcome = runtime.execute::<Order>(&id, command).await;
            (id, outcome)
        });
        for (id, outcome) in block_on(join_all(sent)) {
            let outcome: Result<_, ExecuteError> = outcome;
            let outcome = outcome.unwrap_or_else(|e| panic!("order {id}: {e}"));
            outcomes.push((id, outcome.map(|_| ())));
        }
    }
    outcomes
}

/// A small deterministic generator (SplitMix64), so that a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// An index below `len`.
    fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(len).expect("fits")).expect("fits")
    }
}

// ---------------------------------------------------------------------------------------------
// The read models, computed from the log by brute force
// ---------------------------------------------------------------------------------------------

/// The domain's state as a plain fold over the log, independent of the projections' code.
#[derive(Debug, Default)]
struct LogModel {
    /// Customer id → (name, credit limit, created at).
    customers: BTreeMap<String, (String, u64, Timestamp)>,
    /// Customer id → credit reserved by open reservations.
    reserved: BTreeMap<String, u64>,
    /// Order id → its list entry as of the end of the log.
    orders: BTreeMap<String, OrderListEntry>,
}

impl LogModel {
    fn from_log(events: &[RecordedEvent]) -> LogModel {
        let mut model = LogModel::default();
        for event in events {
            let id = event.stream.aggregate_id();
            let at = event.meta.recorded_at;
            match event.stream.aggregate_type() {
                Customer::TYPE => {
                    for decoded in event.upcast::<Customer>().expect("decodes") {
                        model.apply_customer(id, decoded.payload, at);
                    }
                }
                Order::TYPE => {
                    for decoded in event.upcast::<Order>().expect("decodes") {
                        model.apply_order(id, &decoded.payload, at);
                    }
                }
                other => panic!("unexpected aggregate type {other}"),
            }
        }
        model
    }

    fn apply_customer(&mut self, id: &str, event: CustomerEvent, at: Timestamp) {
        let reserved = self.reserved.entry(id.to_string()).or_default();
        match event {
            CustomerEvent::CustomerCreated { name, credit_limit } => {
                self.customers
                    .insert(id.to_string(), (name, credit_limit, at));
            }
            CustomerEvent::CreditReserved { amount, .. } => *reserved += amount,
            CustomerEvent::CreditReleased { amount, .. } => *reserved -= amount,
            CustomerEvent::CreditLimitExceeded { .. } => {}
        }
    }

    fn apply_order(&mut self, id: &str, event: &OrderEvent, at: Timestamp) {
        if let OrderEvent::OrderCreated { customer_id, total } = event {
            let entry = OrderListEntry {
                order_id: id.to_string(),
                customer_id: customer_id.clone(),
                total: *total,
                status: OrderStatus::Pending,
                created_at: at,
            };
            self.orders.insert(id.to_string(), entry);
        }
        self.orders.get_mut(id).expect("created first").status = event.status_after();
    }

    fn orders_of<'a>(&'a self, customer_id: &'a str) -> impl Iterator<Item = &'a OrderListEntry> {
        self.orders
            .values()
            .filter(move |o| o.customer_id == customer_id)
    }

    fn summaries(&self) -> Vec<CustomerSummary> {
        self.customers
            .iter()
            .map(|(id, (name, credit_limit, created_at))| {
                let mut orders = OrderCounts::default();
                let mut total_shipped = 0;
                for order in self.orders_of(id) {
                    orders.add(order.status);
                    if order.status == OrderStatus::Shipped {
                        total_shipped += order.total;
                    }
                }
                CustomerSummary {
                    customer_id: id.clone(),
                    name: name.clone(),
                    credit_limit: *credit_limit,
                    available_credit: credit_limit - self.reserved.get(id).copied().unwrap_or(0),
                    created_at: *created_at,
                    orders,
                    total_shipped,
                }
            })
            .collect()
    }

    /// The SQL of the classic query, evaluated over the model: customers created after
    /// `after` with a shipped order whose total exceeds `above`, by creation time.
    fn valuable(&self, after: Timestamp, above: u64) -> Vec<ValuableCustomer> {
        let mut found: Vec<ValuableCustomer> = self
            .customers
            .iter()
            .filter(|(_, (_, _, created_at))| *created_at > after)
            .filter_map(|(id, (name, _, created_at))| {
                let shipped: Vec<u64> = self
                    .orders_of(id)
                    .filter(|o| o.status == OrderStatus::Shipped)
                    .map(|o| o.total)
                    .collect();
                shipped
                    .iter()
                    .any(|total| *total > above)
                    .then(|| ValuableCustomer {
                        customer_id: id.clone(),
                        name: name.clone(),
                        created_at: *created_at,
                        max_shipped_total: shipped.iter().copied().max().unwrap_or(0),
                    })
            })
            .collect();
        found.sort_by(|a, b| (a.created_at, &a.customer_id).cmp(&(b.created_at, &b.customer_id)));
        found
    }
}

/// Checks every read model against the model computed from the log.
fn check_read_models(harness: &Harness, model: &LogModel) {
    let runtime = &harness.runtime;
    let summaries = CustomerSummaries::open(runtime).expect("opens the views");
    assert_eq!(
        summaries.all().expect("reads"),
        model.summaries(),
        "customer summaries"
    );
    for expected in model.summaries() {
        let summary = views::customer_summary(runtime, &expected.customer_id).expect("reads");
        assert_eq!(summary.as_ref(), Some(&expected));
    }
    let customer_ids: BTreeSet<&str> = model
        .orders
        .values()
        .map(|o| o.customer_id.as_str())
        .chain(model.customers.keys().map(String::as_str))
        .collect();
    for customer_id in customer_ids {
        let expected: Vec<OrderListEntry> = model.orders_of(customer_id).cloned().collect();
        let listed = views::customer_orders(runtime, customer_id, PAGE).expect("reads");
        assert_eq!(listed, expected, "orders of {customer_id}");
    }
    // Instants: before everyone, at several customers' creation, after everyone.
    let mut created: Vec<Timestamp> = model.customers.values().map(|c| c.2).collect();
    created.sort();
    let mut instants = vec![Timestamp(0), Timestamp(u64::MAX)];
    instants.extend(created.iter().step_by(7).copied());
    for after in instants {
        for above in [0, 1_000, 5_000, 10_000, 15_000, 19_999, 20_000] {
            let expected = model.valuable(after, above);
            let found =
                views::recent_valuable_customers(runtime, after, above, PAGE).expect("queries");
            assert_eq!(
                found, expected,
                "valuable customers after {after:?} above {above}"
            );
            let first = views::recent_valuable_customers(runtime, after, above, 3).expect("ok");
            assert_eq!(first, expected[..expected.len().min(3)], "limited to 3");
        }
    }
}

/// Rebuilds `projection` from position 0 beside the live one and waits for the swap.
fn rebuild(harness: &Harness, projection: &str) {
    harness.runtime.rebuild(projection).expect("rebuild starts");
    let started = Instant::now();
    while harness
        .runtime
        .subscriber(&format!("{projection}#rebuild"))
        .is_some()
    {
        assert!(started.elapsed() < SETTLE_MAX, "{projection} not rebuilt");
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The workload of the end-to-end tests: `customers` customers (every tenth without credit),
/// `orders` orders with random totals (every thirtieth for a customer that does not exist),
/// every seventh cancelled right after its creation — racing the saga — and, once the saga
/// has settled, half of the approved orders shipped and a fifth cancelled. Returns each
/// customer's credit limit.
fn run_workload(harness: &Harness, customers: usize, orders: usize, seed: u64) -> Limits {
    let runtime = &harness.runtime;
    let mut rng = Rng(seed);
    let mut limits = BTreeMap::new();
    for c in 0..customers {
        let id = format!("c-{c:02}");
        let credit_limit = if c % 10 == 0 {
            0
        } else {
            rng.between(5_000, 60_000)
        };
        let name = format!("Customer {c}");
        execute::<Customer>(
            runtime,
            &id,
            CustomerCommand::CreateCustomer { name, credit_limit },
        );
        limits.insert(id, credit_limit);
    }

    let mut creates = Vec::new();
    let mut cancels = Vec::new();
    for o in 0..orders {
        let id = order_id(o);
        let customer_id = if o % 30 == 0 {
            format!("missing-{o}")
        } else {
            format!("c-{:02}", rng.index(customers))
        };
        let total = rng.between(1, 20_000);
        creates.push((id.clone(), OrderCommand::CreateOrder { customer_id, total }));
        if o % 7 == 3 {
            cancels.push((id, OrderCommand::CancelOrder));
        }
    }
    for (id, outcome) in execute_orders(runtime, creates) {
        assert_eq!(outcome, Ok(()), "creating {id}");
    }
    for (id, outcome) in execute_orders(runtime, cancels) {
        // Cancelled while pending or approved, or too late: rejected by the credit check.
        if let Err(rejection) = outcome {
            assert_eq!(
                rejection,
                OrderRejection::NotCancellable {
                    status: OrderStatus::Rejected
                },
                "cancelling {id}"
            );
        }
    }
    harness.settle();

    let approved: Vec<String> = (0..orders)
        .map(order_id)
        .filter(|id| harness.order(id).status == Some(OrderStatus::Approved))
        .collect();
    assert!(
        approved.len() >= orders / 6,
        "enough orders approved: {}",
        approved.len()
    );
    let follow_up = approved
        .iter()
        .enumerate()
        .filter_map(|(i, id)| match i % 10 {
            0 | 2 | 4 | 6 | 8 => Some((id.clone(), OrderCommand::ShipOrder)),
            1 | 5 => Some((id.clone(), OrderCommand::CancelOrder)),
            _ => None,
        })
        .collect();
    for (id, outcome) in execute_orders(runtime, follow_up) {
        assert_eq!(outcome, Ok(()), "shipping or cancelling {id}");
    }
    harness.settle();
    limits
}

/// Customer id → credit limit.
type Limits = BTreeMap<String, u64>;

fn order_id(o: usize) -> String {
    format!("o-{o:03}")
}

/// 50 customers and 300 orders (see [`run_workload`]): every order ends decided, credit is
/// held exactly by approved and shipped orders, and the read models equal the log's.
#[test]
fn the_saga_settles_every_order_and_the_read_models_match_the_log() {
    const ORDERS: usize = 300;
    let harness = Harness::with_domain(&DomainOptions::default());
    let runtime = &harness.runtime;
    let limits = run_workload(&harness, 50, ORDERS, 2024);

    // No order is left pending, and the rejection reasons are the saga's.
    let mut statuses = BTreeMap::new();
    for id in (0..ORDERS).map(order_id) {
        let order = harness.order(&id);
        let status = order.status.expect("created");
        assert_ne!(status, OrderStatus::Pending, "{id} is stuck pending");
        if status == OrderStatus::Rejected {
            let expected = if order.customer_id.starts_with("missing-") {
                saga::REASON_UNKNOWN_CUSTOMER
            } else {
                saga::REASON_CREDIT_LIMIT_EXCEEDED
            };
            assert_eq!(order.rejection_reason.as_deref(), Some(expected), "{id}");
        }
        *statuses.entry(status).or_insert(0u32) += 1;
        statuses.entry(status).or_default();
    }
    for status in [
        OrderStatus::Approved,
        OrderStatus::Rejected,
        OrderStatus::Shipped,
        OrderStatus::Cancelled,
    ] {
        assert!(
            statuses.get(&status).is_some_and(|n| *n > 0),
            "{statuses:?}"
        );
    }

    // Credit: within every limit, and held exactly by the approved and shipped orders.
    let log = harness.log();
    let model = LogModel::from_log(&log);
    for (id, limit) in &limits {
        let customer = harness.customer(id);
        assert!(
            customer.reserved() <= *limit,
            "{id} reserved beyond its limit"
        );
        let holding: BTreeMap<String, u64> = model
            .orders_of(id)
            .filter(|o| matches!(o.status, OrderStatus::Approved | OrderStatus::Shipped))
            .map(|o| (o.order_id.clone(), o.total))
            .collect();
        assert_eq!(customer.reservations, holding, "credit held for {id}");
    }

    // Nothing was parked, and the read models equal the log's — live, then rebuilt.
    for name in SUBSCRIBERS {
        assert_eq!(runtime.parked(name).expect("reads").len(), 0, "{name}");
    }
    let valuable = model.valuable(Timestamp(0), 0).len();
    assert!(
        valuable > model.valuable(Timestamp(0), 15_000).len() && valuable > 10,
        "the valuable-customers query has something to find and to filter out"
    );
    check_read_models(&harness, &model);
    rebuild(&harness, views::CUSTOMER_SUMMARIES);
    rebuild(&harness, views::VALUABLE_CUSTOMERS);
    check_read_models(&harness, &model);
    harness.shutdown();
}

#[test]
fn an_order_of_an_unknown_customer_is_rejected() {
    let harness = Harness::with_domain(&DomainOptions::default());
    let create = OrderCommand::CreateOrder {
        customer_id: "nobody".into(),
        total: 100,
    };
    execute::<Order>(&harness.runtime, "o-1", create);
    harness.settle();
    let order = harness.order("o-1");
    assert_eq!(order.status, Some(OrderStatus::Rejected));
    assert_eq!(
        order.rejection_reason.as_deref(),
        Some(saga::REASON_UNKNOWN_CUSTOMER)
    );
    assert_eq!(
        views::customer_summary(&harness.runtime, "nobody").expect("reads"),
        None
    );
    let listed = views::customer_orders(&harness.runtime, "nobody", 10).expect("reads");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, OrderStatus::Rejected);
    harness.shutdown();
}

#[test]
fn cancelling_an_approved_order_releases_its_credit() {
    let harness = Harness::with_domain(&DomainOptions::default());
    let runtime = &harness.runtime;
    let create = CustomerCommand::CreateCustomer {
        name: "Ada".into(),
        credit_limit: 10_000,
    };
    execute::<Customer>(runtime, "c-1", create);
    let order = |total| OrderCommand::CreateOrder {
        customer_id: "c-1".into(),
        total,
    };
    let status = |id: &str| harness.order(id).status.expect("created");

    execute::<Order>(runtime, "o-1", order(6_000));
    harness.settle();
    assert_eq!(status("o-1"), OrderStatus::Approved);
    execute::<Order>(runtime, "o-2", order(6_000));
    harness.settle();
    assert_eq!(status("o-2"), OrderStatus::Rejected, "only 4000 left");

    execute::<Order>(runtime, "o-1", OrderCommand::CancelOrder);
    harness.settle();
    let summary = views::customer_summary(runtime, "c-1")
        .expect("reads")
        .expect("created");
    assert_eq!(summary.available_credit, 10_000, "released");
    assert_eq!(
        summary.orders,
        OrderCounts {
            rejected: 1,
            cancelled: 1,
            ..OrderCounts::default()
        }
    );
    execute::<Order>(runtime, "o-3", order(6_000));
    harness.settle();
    assert_eq!(
        status("o-3"),
        OrderStatus::Approved,
        "the credit is free again"
    );
    harness.shutdown();
}

/// The Customer aggregate is not registered, so the saga cannot send `ReserveCredit` at all:
/// the deadline, stored before it, still rejects the order.
#[test]
fn a_pending_order_is_rejected_by_its_deadline() {
    let harness = Harness::empty();
    let runtime = &harness.runtime;
    runtime.register::<Order>().expect("registers");
    let saga = OrderCreditSaga {
        decision_timeout: Duration::from_millis(200),
    };
    let options = SubscriberOptions::default().with_retries(0, Duration::from_millis(1));
    runtime
        .process_manager(saga::ORDER_CREDIT_SAGA, saga, options)
        .expect("registers");
    let create = OrderCommand::CreateOrder {
        customer_id: "c-1".into(),
        total: 100,
    };
    let started = Instant::now();
    execute::<Order>(runtime, "o-1", create);
    while harness.order("o-1").status == Some(OrderStatus::Pending) {
        assert!(started.elapsed() < SETTLE_MAX, "the deadline never fired");
        std::thread::sleep(POLL);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "not before the deadline"
    );
    let order = harness.order("o-1");
    assert_eq!(order.status, Some(OrderStatus::Rejected));
    assert_eq!(
        order.rejection_reason.as_deref(),
        Some(saga::REASON_TIMED_OUT)
    );
    // The order's creation, whose reservation could not be sent, is parked for an operator
    // to see (later events of the order may be too, while the reservation stays unsendable).
    let parked = runtime.parked(saga::ORDER_CREDIT_SAGA).expect("reads");
    assert!(
        parked.iter().any(|p| p.position == Position(1)),
        "{parked:?}"
    );
    harness.shutdown();
}

/// The saga starts after the order was created and cancelled, so it reserves the credit for
/// an order that is already cancelled (as when a cancellation races the credit check): the
/// late reservation is released, not approved.
#[test]
fn credit_reserved_for_an_order_cancelled_meanwhile_is_released() {
    let harness = Harness::empty();
    let runtime = &harness.runtime;
    runtime.register::<Customer>().expect("registers");
    runtime.register::<Order>().expect("registers");
    let create = CustomerCommand::CreateCustomer {
        name: "Ada".into(),
        credit_limit: 10_000,
    };
    execute::<Customer>(runtime, "c-1", create);
    let order = OrderCommand::CreateOrder {
        customer_id: "c-1".into(),
        total: 6_000,
    };
    execute::<Order>(runtime, "o-1", order);
    execute::<Order>(runtime, "o-1", OrderCommand::CancelOrder);
    runtime
        .process_manager(
            saga::ORDER_CREDIT_SAGA,
            OrderCreditSaga::default(),
            SubscriberOptions::default(),
        )
        .expect("registers");
    harness.settle();
    let credit_events: Vec<String> = harness
        .log()
        .iter()
        .filter(|e| e.stream.aggregate_type() == Customer::TYPE)
        .map(|e| e.event_type.to_string())
        .collect();
    assert_eq!(
        credit_events,
        ["CustomerCreated", "CreditReserved", "CreditReleased"]
    );
    assert!(harness.customer("c-1").reservations.is_empty());
    assert_eq!(harness.order("o-1").status, Some(OrderStatus::Cancelled));
    harness.shutdown();
}

/// A projection wrapper that handles some events twice, as a crash between a page's view
/// writes and its checkpoint would: it handles the event, then fails, so the runtime delivers
/// it again.
struct Redelivering<P> {
    inner: P,
    failed: BTreeSet<Position>,
    /// Events handled twice, across every generation of the projection.
    redelivered: Arc<AtomicUsize>,
}

impl<P: Projection> Projection for Redelivering<P> {
    fn handle(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.inner.handle(event)?;
        if event.position.0.is_multiple_of(3) && self.failed.insert(event.position) {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
            return Err("simulated crash after the view writes".into());
        }
        Ok(())
    }
}

#[test]
fn redelivered_events_change_no_read_model() {
    let harness = Harness::empty();
    let runtime = &harness.runtime;
    runtime.register::<Customer>().expect("registers");
    runtime.register::<Order>().expect("registers");
    let options = SubscriberOptions::default().with_retries(1, Duration::ZERO);
    let redelivered = Arc::new(AtomicUsize::new(0));
    let counter = redelivered.clone();
    runtime
        .project(
            views::CUSTOMER_SUMMARIES,
            options.clone(),
            move |v: &ViewSet| {
                Ok(Redelivering {
                    inner: CustomerSummaries::new(v)?,
                    failed: BTreeSet::new(),
                    redelivered: counter.clone(),
                })
            },
        )
        .expect("registers");
    let counter = redelivered.clone();
    runtime
        .project(views::VALUABLE_CUSTOMERS, options, move |v: &ViewSet| {
            Ok(Redelivering {
                inner: ValuableCustomers::new(v)?,
                failed: BTreeSet::new(),
                redelivered: counter.clone(),
            })
        })
        .expect("registers");
    let saga_options = DomainOptions::default().saga;
    runtime
        .process_manager(
            saga::ORDER_CREDIT_SAGA,
            OrderCreditSaga::default(),
            saga_options,
        )
        .expect("registers");
    run_workload(&harness, 20, 100, 7);
    let events = harness.log().len();
    assert!(
        redelivered.load(Ordering::Relaxed) >= 2 * (events / 3),
        "a third of the events were handled twice by each projection"
    );
    for name in [views::CUSTOMER_SUMMARIES, views::VALUABLE_CUSTOMERS] {
        assert_eq!(runtime.parked(name).expect("reads").len(), 0, "{name}");
    }
    check_read_models(&harness, &LogModel::from_log(&harness.log()));
    harness.shutdown();
}
