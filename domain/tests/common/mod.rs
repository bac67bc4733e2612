//! Helpers shared by the domain's integration tests (`domain.rs`, `e2e.rs`, `corpus.rs`,
//! `temporal.rs`): a runtime in a temporary directory, bulk command sending, a deterministic
//! random generator, the read models recomputed from the log by brute force, and the workload
//! of the end-to-end tests.
//!
//! Each test binary compiles this module and uses part of it, hence the `dead_code` allowance
//! below: an unused helper in one binary is used by another.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::envelope::EncodedPayload;
use annals::store::{AppendKind, AppendRequest, PendingEvent};
use annals::{
    Aggregate, CommitMeta, ExecuteError, Position, RecordedEvent, Runtime, RuntimeOptions,
    StreamId, Timestamp, Version,
};
use annals_domain::customer::{Customer, CustomerCommand, CustomerEvent};
use annals_domain::order::{
    CreditReservation, Order, OrderCommand, OrderEvent, OrderRejection, OrderStatus,
};
use annals_domain::saga;
use annals_domain::views::{
    self, CustomerSummaries, CustomerSummary, OrderCounts, OrderListEntry, ValuableCustomer,
    ValuableCustomers,
};
use annals_domain::{register, DomainOptions};
use futures::executor::block_on;
use futures::future::join_all;

/// The subscribers `register` starts.
pub(crate) const SUBSCRIBERS: [&str; 3] = [
    saga::ORDER_CREDIT_SAGA,
    views::CUSTOMER_SUMMARIES,
    views::VALUABLE_CUSTOMERS,
];
/// The longest a small test waits for the saga and the projections to settle.
pub(crate) const SETTLE_MAX: Duration = Duration::from_secs(20);
/// How often settling is checked.
pub(crate) const POLL: Duration = Duration::from_millis(10);
/// Commands sent at once by the bulk steps: enough to batch commits, far below any limit.
pub(crate) const CONCURRENCY: usize = 64;
/// Events per page when reading the log.
pub(crate) const PAGE: usize = 10_000;
/// Most orders one customer's order list is read with: more than any test gives a customer.
pub(crate) const ORDERS_PER_CUSTOMER_MAX: usize = 10_000;

/// A runtime in a temporary directory, removed when dropped.
pub(crate) struct Harness {
    pub(crate) runtime: Runtime,
    dir: tempfile::TempDir,
    /// How long [`Harness::settle`] waits at most.
    pub(crate) settle_max: Duration,
}

impl Harness {
    /// A runtime with the whole domain registered.
    pub(crate) fn with_domain(options: &DomainOptions) -> Harness {
        let harness = Harness::empty();
        register(&harness.runtime, options).expect("the domain registers");
        harness
    }

    /// A runtime with nothing registered.
    pub(crate) fn empty() -> Harness {
        Harness::open(tempfile::tempdir().expect("a temporary directory"))
    }

    /// A runtime with nothing registered over the store in `dir` (new or left by
    /// [`Harness::close`]).
    pub(crate) fn open(dir: tempfile::TempDir) -> Harness {
        let runtime = Runtime::open(RuntimeOptions::new(dir.path().join("annals"))).expect("opens");
        Harness {
            runtime,
            dir,
            settle_max: SETTLE_MAX,
        }
    }

    /// Shuts the runtime down and returns its directory, to [`Harness::open`] it again.
    pub(crate) fn close(self) -> tempfile::TempDir {
        block_on(self.runtime.shutdown()).expect("shuts down");
        drop(self.runtime);
        self.dir
    }

    /// Waits (at most `settle_max`) until the log's head stops moving and every subscriber has
    /// reached it, which means the saga has no command left to send (except deadlines not yet
    /// due).
    pub(crate) fn settle(&self) {
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
                started.elapsed() < self.settle_max,
                "not settled after {:?}: head {head}, {infos:#?}",
                self.settle_max
            );
            std::thread::sleep(POLL);
        }
    }

    /// Every event of the log, in position order.
    pub(crate) fn log(&self) -> Vec<RecordedEvent> {
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

    pub(crate) fn order(&self, id: &str) -> Order {
        self.runtime
            .state::<Order>(id)
            .expect("reads the order")
            .unwrap_or_else(|| panic!("order {id} exists"))
            .state
    }

    pub(crate) fn customer(&self, id: &str) -> Customer {
        self.runtime
            .state::<Customer>(id)
            .expect("reads the customer")
            .unwrap_or_else(|| panic!("customer {id} exists"))
            .state
    }

    pub(crate) fn shutdown(self) {
        block_on(self.runtime.shutdown()).expect("shuts down");
    }
}

/// Executes `command` and expects it to be accepted; returns the committed events.
pub(crate) fn execute<A: Aggregate>(
    runtime: &Runtime,
    id: &str,
    command: A::Command,
) -> Vec<annals::Envelope<A::Event>>
where
    A::Rejection: std::fmt::Debug,
{
    block_on(runtime.execute::<A>(id, command))
        .expect("no technical failure")
        .unwrap_or_else(|rejection| panic!("{} {id}: rejected: {rejection:?}", A::TYPE))
        .events
}

/// `ApproveOrder` on the evidence of a reservation of `amount` by `customer_id`, as the saga
/// sends it (for tests that decide orders by hand, without the saga).
pub(crate) fn approve(customer_id: &str, amount: u64) -> OrderCommand {
    OrderCommand::ApproveOrder {
        reservation: Some(CreditReservation {
            customer_id: customer_id.to_string(),
            amount,
            customer_version: 2,
        }),
    }
}

/// Sends `commands` to orders, `CONCURRENCY` at a time; returns each outcome.
pub(crate) fn execute_orders(
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
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `low..=high`.
    pub(crate) fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// An index below `len`.
    pub(crate) fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(len).expect("fits")).expect("fits")
    }
}

// ---------------------------------------------------------------------------------------------
// The read models, computed from the log by brute force
// ---------------------------------------------------------------------------------------------

/// The domain's state as a plain fold over the log, independent of the projections' code.
#[derive(Debug, Default)]
pub(crate) struct LogModel {
    /// Customer id → (name, credit limit, created at).
    pub(crate) customers: BTreeMap<String, (String, u64, String, Timestamp)>,
    /// Customer id → credit reserved by open reservations.
    pub(crate) reserved: BTreeMap<String, u64>,
    /// Order id → its list entry as of the end of the log.
    pub(crate) orders: BTreeMap<String, OrderListEntry>,
    /// Customer id → ids of its orders, in order id order (an index over `orders`, so that
    /// the brute-force queries stay linear at 10,000 orders).
    by_customer: BTreeMap<String, Vec<String>>,
}

impl LogModel {
    pub(crate) fn from_log(events: &[RecordedEvent]) -> LogModel {
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
        for (order_id, entry) in &model.orders {
            model
                .by_customer
                .entry(entry.customer_id.clone())
                .or_default()
                .push(order_id.clone());
        }
        model
    }

    fn apply_customer(&mut self, id: &str, event: CustomerEvent, at: Timestamp) {
        let reserved = self.reserved.entry(id.to_string()).or_default();
        match event {
            CustomerEvent::CustomerCreated {
                name,
                credit_limit,
                currency,
            } => {
                self.customers
                    .insert(id.to_string(), (name, credit_limit, currency, at));
            }
            CustomerEvent::CreditReserved { amount, .. } => *reserved += amount,
            CustomerEvent::CreditReleased { amount, .. } => *reserved -= amount,
            CustomerEvent::CreditLimitExceeded { .. }
            | CustomerEvent::CreditCurrencyMismatch { .. } => {}
        }
    }

    fn apply_order(&mut self, id: &str, event: &OrderEvent, at: Timestamp) {
        if let OrderEvent::OrderCreated {
            customer_id,
            total,
            currency,
        } = event
        {
            let entry = OrderListEntry {
                order_id: id.to_string(),
                customer_id: customer_id.clone(),
                total: *total,
                currency: currency.clone(),
                status: OrderStatus::Pending,
                created_at: at,
            };
            self.orders.insert(id.to_string(), entry);
        }
        self.orders.get_mut(id).expect("created first").status = event.status_after();
    }

    /// The orders of `customer_id`, in order id order.
    pub(crate) fn orders_of<'a>(
        &'a self,
        customer_id: &str,
    ) -> impl Iterator<Item = &'a OrderListEntry> + 'a {
        self.by_customer
            .get(customer_id)
            .into_iter()
            .flatten()
            .map(|id| &self.orders[id])
    }

    pub(crate) fn summaries(&self) -> Vec<CustomerSummary> {
        self.customers
            .iter()
            .map(|(id, (name, credit_limit, currency, created_at))| {
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
                    currency: currency.clone(),
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
    pub(crate) fn valuable(&self, after: Timestamp, above: u64) -> Vec<ValuableCustomer> {
        let mut found: Vec<ValuableCustomer> = self
            .customers
            .iter()
            .filter(|(_, (_, _, _, created_at))| *created_at > after)
            .filter_map(|(id, (name, _, _, created_at))| {
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

    /// Every customer id the read models know: created ones and those orders name.
    pub(crate) fn customer_ids(&self) -> BTreeSet<&str> {
        self.by_customer
            .keys()
            .chain(self.customers.keys())
            .map(String::as_str)
            .collect()
    }

    /// The instants the valuable-customers query is checked after: before everyone, after
    /// everyone, and about `creations` customers' creation times spread over the log.
    pub(crate) fn instants(&self, creations: usize) -> Vec<Timestamp> {
        let mut created: Vec<Timestamp> = self.customers.values().map(|c| c.3).collect();
        created.sort();
        let step = (created.len() / creations.max(1)).max(1);
        let mut instants = vec![Timestamp(0), Timestamp(u64::MAX)];
        instants.extend(created.iter().step_by(step).copied());
        instants
    }
}

/// The totals the valuable-customers query is checked above (orders' totals are 1 to 20,000).
pub(crate) const VALUABLE_ABOVE: [u64; 7] = [0, 1_000, 5_000, 10_000, 15_000, 19_999, 20_000];

/// Everything the read models answer, read through the query API.
#[derive(Debug, PartialEq)]
pub(crate) struct ReadModels {
    /// Every customer summary.
    pub(crate) summaries: Vec<CustomerSummary>,
    /// Customer id → its order list.
    pub(crate) order_lists: BTreeMap<String, Vec<OrderListEntry>>,
    /// (created after, total above) → the valuable customers.
    pub(crate) valuable: BTreeMap<(Timestamp, u64), Vec<ValuableCustomer>>,
}

impl ReadModels {
    /// Reads the read models for the customers and the query parameters `model` names.
    pub(crate) fn read(runtime: &Runtime, model: &LogModel, creations: usize) -> ReadModels {
        let summaries = CustomerSummaries::open(runtime)
            .expect("opens the views")
            .all()
            .expect("reads");
        let order_lists = model
            .customer_ids()
            .into_iter()
            .map(|id| {
                let listed =
                    views::customer_orders(runtime, id, ORDERS_PER_CUSTOMER_MAX).expect("reads");
                (id.to_string(), listed)
            })
            .collect();
        let mut valuable = BTreeMap::new();
        for after in model.instants(creations) {
            for above in VALUABLE_ABOVE {
                let found =
                    views::recent_valuable_customers(runtime, after, above, PAGE).expect("queries");
                valuable.insert((after, above), found);
            }
        }
        ReadModels {
            summaries,
            order_lists,
            valuable,
        }
    }
}

/// Checks every read model against the model computed from the log, querying the
/// valuable customers after about `creations` customers' creation times; returns what was read.
pub(crate) fn check_read_models(
    harness: &Harness,
    model: &LogModel,
    creations: usize,
) -> ReadModels {
    let runtime = &harness.runtime;
    let read = ReadModels::read(runtime, model, creations);
    let expected = model.summaries();
    assert_eq!(read.summaries, expected, "customer summaries");
    for summary in expected.iter().step_by(expected.len().div_ceil(50).max(1)) {
        let one = views::customer_summary(runtime, &summary.customer_id).expect("reads");
        assert_eq!(one.as_ref(), Some(summary), "one summary");
    }
    for (customer_id, listed) in &read.order_lists {
        let expected: Vec<OrderListEntry> = model.orders_of(customer_id).cloned().collect();
        assert_eq!(listed, &expected, "orders of {customer_id}");
    }
    for ((after, above), found) in &read.valuable {
        let expected = model.valuable(*after, *above);
        assert_eq!(
            found, &expected,
            "valuable customers after {after:?} above {above}"
        );
    }
    if let Some(after) = model.instants(1).get(2) {
        let expected = model.valuable(*after, 0);
        let first = views::recent_valuable_customers(runtime, *after, 0, 3).expect("queries");
        assert_eq!(first, expected[..expected.len().min(3)], "limited to 3");
    }
    check_valuable_pages(runtime, model);
    read
}

/// Following `next` through pages of a small limit and a smaller read budget finds exactly
/// what one unbounded query finds, and no page reads more than its budget.
fn check_valuable_pages(runtime: &Runtime, model: &LogModel) {
    let valuable = ValuableCustomers::open(runtime).expect("opens the views");
    for (after, above) in [(Timestamp(0), 0), (Timestamp(0), 15_000)] {
        let expected = model.valuable(after, above);
        let (limit, budget) = (4, 3);
        let mut found = Vec::new();
        let mut cursor = None;
        for _ in 0..=model.customer_ids().len() {
            let page = valuable
                .page(after, above, cursor.as_ref(), limit, budget)
                .expect("queries");
            assert!(page.customers.len() <= budget.min(limit), "a page's budget");
            found.extend(page.customers);
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        assert!(cursor.is_none(), "paging ends");
        assert_eq!(found, expected, "paged valuable customers above {above}");
    }
}

/// Rebuilds `projection` from position 0 beside the live one and waits (at most
/// `settle_max`) for the swap.
pub(crate) fn rebuild(harness: &Harness, projection: &str) {
    harness.runtime.rebuild(projection).expect("rebuild starts");
    let started = Instant::now();
    while harness
        .runtime
        .subscriber(&format!("{projection}#rebuild"))
        .is_some()
    {
        assert!(
            started.elapsed() < harness.settle_max,
            "{projection} not rebuilt"
        );
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// The end-to-end workload
// ---------------------------------------------------------------------------------------------

/// Customer id → credit limit.
pub(crate) type Limits = BTreeMap<String, u64>;

pub(crate) fn customer_id(c: usize) -> String {
    format!("c-{c:02}")
}

pub(crate) fn order_id(o: usize) -> String {
    format!("o-{o:03}")
}

/// The workload of the end-to-end tests: `customers` customers (every tenth without credit),
/// `orders` orders with random totals of 1 to 20,000 (every thirtieth for a customer that
/// does not exist), every seventh cancelled right after its creation — racing the saga — and,
/// once the saga has settled, half of the approved orders shipped and a fifth cancelled.
/// Returns each customer's credit limit.
pub(crate) fn run_workload(
    harness: &Harness,
    customers: usize,
    orders: usize,
    seed: u64,
) -> Limits {
    let runtime = &harness.runtime;
    let mut rng = Rng(seed);
    let mut limits = BTreeMap::new();
    for c in 0..customers {
        let id = customer_id(c);
        let credit_limit = if c % 10 == 0 {
            0
        } else {
            rng.between(5_000, 60_000)
        };
        let name = format!("Customer {c}");
        execute::<Customer>(
            runtime,
            &id,
            CustomerCommand::CreateCustomer {
                name,
                credit_limit,
                currency: None,
            },
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
            customer_id(rng.index(customers))
        };
        let total = rng.between(1, 20_000);
        let create = OrderCommand::CreateOrder {
            customer_id,
            total,
            currency: None,
        };
        creates.push((id.clone(), create));
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

/// Checks what the saga promises once it has settled after [`run_workload`]: no order is left
/// pending and every rejection reason is the saga's (none timed out); every customer's reservations are within its limit and
/// held exactly by its approved and shipped orders; nothing was parked. Returns the orders
/// counted by status.
pub(crate) fn check_settled(
    harness: &Harness,
    model: &LogModel,
    limits: &Limits,
    orders: usize,
) -> BTreeMap<OrderStatus, usize> {
    let mut statuses = BTreeMap::new();
    for id in (0..orders).map(order_id) {
        let order = harness.order(&id);
        let status = order.status.expect("created");
        assert_ne!(status, OrderStatus::Pending, "{id} is stuck pending");
        assert_eq!(
            Some(status),
            model.orders.get(&id).map(|o| o.status),
            "{id}"
        );
        if status == OrderStatus::Rejected {
            let expected = if order.customer_id.starts_with("missing-") {
                saga::REASON_UNKNOWN_CUSTOMER
            } else {
                saga::REASON_CREDIT_LIMIT_EXCEEDED
            };
            assert_eq!(order.rejection_reason.as_deref(), Some(expected), "{id}");
        }
        *statuses.entry(status).or_insert(0) += 1;
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

    for (id, limit) in limits {
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

    for name in SUBSCRIBERS {
        assert_eq!(
            harness.runtime.parked(name).expect("reads").len(),
            0,
            "{name}"
        );
    }
    statuses
}

// ---------------------------------------------------------------------------------------------
// Events written as an older build wrote them
// ---------------------------------------------------------------------------------------------

/// The directory of the old-events corpus (see `corpus/README.md`).
pub(crate) fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The payload bytes of corpus file `file` (relative to [`corpus_dir`]).
pub(crate) fn corpus_bytes(file: &str) -> Vec<u8> {
    let path = corpus_dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A stored event as an older build would have handed it to the store.
pub(crate) fn pending(event_type: &str, schema_version: u16, payload: Vec<u8>) -> PendingEvent {
    PendingEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: Arc::from(event_type),
        schema_version,
        payload: EncodedPayload(payload),
    }
}

/// Appends `events` to `stream` through the store's raw API (no aggregate decides them),
/// recorded at `at`, the stream being at version `expected`.
pub(crate) fn append_raw(
    runtime: &Runtime,
    stream: StreamId,
    expected: Version,
    events: Vec<PendingEvent>,
    at: Timestamp,
) {
    let request = AppendRequest {
        stream,
        expected,
        meta: CommitMeta {
            recorded_at: at,
            ..CommitMeta::default()
        },
        command: None,
        kind: AppendKind::Events(events),
    };
    block_on(runtime.store().append(request)).expect("appended");
}
