//! In-process tests of the reference domain: a real [`Runtime`] in a temporary directory, the
//! domain wired in with [`register`], driven by commands. They check what the saga promises
//! (no order stays pending, no customer's reservations exceed its limit, credit is held exactly
//! by approved and shipped orders) and that every read model equals a model computed from the
//! log, before and after a rebuild from scratch. The same checks at full size (1,000 customers,
//! 10,000 orders) are in `e2e.rs`; the helpers are in `common/`.
//!
//! No async runtime is needed: the runtime's methods are executor-agnostic, so the tests drive
//! them with `futures::executor::block_on`.
//!
//! [`Runtime`]: annals::Runtime
//! [`register`]: annals_domain::register

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{
    Aggregate, HandlerError, Position, Projection, RecordedEvent, SubscriberOptions, Timestamp,
    ViewSet,
};
use annals_domain::customer::{Customer, CustomerCommand};
use annals_domain::order::{Order, OrderCommand, OrderStatus};
use annals_domain::saga::{self, OrderCreditSaga};
use annals_domain::views::{self, CustomerSummaries, OrderCounts, ValuableCustomers};
use annals_domain::DomainOptions;
use common::{
    check_read_models, check_settled, execute, rebuild, run_workload, Harness, LogModel, POLL,
    SETTLE_MAX,
};

/// 50 customers and 300 orders (see [`run_workload`]): every order ends decided, credit is
/// held exactly by approved and shipped orders, and the read models equal the log's.
#[test]
fn the_saga_settles_every_order_and_the_read_models_match_the_log() {
    const ORDERS: usize = 300;
    let harness = Harness::with_domain(&DomainOptions::default());
    let limits = run_workload(&harness, 50, ORDERS, 2024);
    let model = LogModel::from_log(&harness.log());
    check_settled(&harness, &model, &limits, ORDERS);

    // The read models equal the log's — live, then rebuilt from scratch.
    let valuable = model.valuable(Timestamp(0), 0).len();
    assert!(
        valuable > model.valuable(Timestamp(0), 15_000).len() && valuable > 10,
        "the valuable-customers query has something to find and to filter out"
    );
    // Every seventh customer's creation time: the query starts in every kind of key block.
    let live = check_read_models(&harness, &model, 50 / 7);
    rebuild(&harness, views::CUSTOMER_SUMMARIES);
    rebuild(&harness, views::VALUABLE_CUSTOMERS);
    let rebuilt = check_read_models(&harness, &model, 50 / 7);
    assert_eq!(live, rebuilt);
    harness.shutdown();
}

#[test]
fn an_order_of_an_unknown_customer_is_rejected() {
    let harness = Harness::with_domain(&DomainOptions::default());
    let create = OrderCommand::CreateOrder {
        customer_id: "nobody".into(),
        total: 100,
        currency: None,
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
        currency: None,
    };
    execute::<Customer>(runtime, "c-1", create);
    let order = |total| OrderCommand::CreateOrder {
        customer_id: "c-1".into(),
        total,
        currency: None,
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
        currency: None,
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
        currency: None,
    };
    execute::<Customer>(runtime, "c-1", create);
    let order = OrderCommand::CreateOrder {
        customer_id: "c-1".into(),
        total: 6_000,
        currency: None,
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
    check_read_models(&harness, &LogModel::from_log(&harness.log()), 3);
    harness.shutdown();
}
