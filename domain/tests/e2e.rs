//! The end-to-end test of the reference domain at the size issue 4 names: 1,000 customers and
//! 10,000 orders with random totals, some cancelled (racing the saga, and after approval) and
//! some shipped, through the real saga and projections in one process.
//!
//! Once the saga has settled (bounded polling), every order is Approved, Rejected, Shipped or
//! Cancelled — none pending — and rejected for the saga's reasons; no customer's reservations
//! exceed its limit, and its credit is held exactly by its approved and shipped orders; every
//! read model equals the one computed by brute force from the log, and equals itself rebuilt
//! from scratch by the runtime; the valuable-customers query matches a brute-force evaluation.
//!
//! `ANNALS_E2E_ORDERS` sets the number of orders (customers: a tenth of it). Each phase's
//! time is printed (`--nocapture` shows it).

mod common;

use std::time::{Duration, Instant};

use annals::Timestamp;
use annals_domain::views;
use annals_domain::DomainOptions;
use common::{check_read_models, check_settled, rebuild, run_workload, Harness, LogModel};

/// Orders by default: the size.
const ORDERS_DEFAULT: usize = 10_000;
/// Fewest orders `ANNALS_E2E_ORDERS` may ask for: the checks need every status to occur.
const ORDERS_MIN: usize = 300;
/// Customers per order.
const ORDERS_PER_CUSTOMER: usize = 10;
/// How long the saga or a rebuild may take to settle at full size. In a debug build on 2 cores
/// the saga settles within a few seconds of the last command; this only bounds a hang.
const SETTLE_MAX: Duration = Duration::from_secs(180);
/// Customers' creation instants the valuable-customers query is checked after (each query
/// costs up to 2,041 view seeks, so not all 1,000).
const QUERY_INSTANTS: usize = 25;

fn orders() -> usize {
    match std::env::var("ANNALS_E2E_ORDERS") {
        Ok(orders) => {
            let orders: usize = orders
                .parse()
                .expect("ANNALS_E2E_ORDERS is a number of orders");
            assert!(
                orders >= ORDERS_MIN,
                "ANNALS_E2E_ORDERS: at least {ORDERS_MIN}"
            );
            orders
        }
        Err(_) => ORDERS_DEFAULT,
    }
}

#[test]
fn ten_thousand_orders_settle_and_every_read_model_matches_the_log() {
    let orders = orders();
    let customers = orders / ORDERS_PER_CUSTOMER;
    let started = Instant::now();
    let phase = |name: &str, since: Instant| {
        eprintln!(
            "e2e {orders} orders: {name} in {:.1?} ({:.1?} in all)",
            since.elapsed(),
            started.elapsed()
        );
        Instant::now()
    };
    // Decided in time whatever the machine's speed: a deadline rejection would make the
    // outcome depend on timing (the deadline itself is tested in `domain.rs`).
    let options = DomainOptions::default().with_decision_timeout(Duration::from_secs(3_600));
    let mut harness = Harness::with_domain(&options);
    harness.settle_max = SETTLE_MAX;

    let limits = run_workload(&harness, customers, orders, 4);
    let at = phase("workload sent and settled", started);
    let log = harness.log();
    let model = LogModel::from_log(&log);
    let statuses = check_settled(&harness, &model, &limits, orders);
    let at = phase(&format!("{} events checked: {statuses:?}", log.len()), at);

    let valuable = model.valuable(Timestamp(0), 0).len();
    assert!(
        valuable > model.valuable(Timestamp(0), 15_000).len() && valuable > customers / 10,
        "the valuable-customers query has something to find and to filter out"
    );
    let live = check_read_models(&harness, &model, QUERY_INSTANTS);
    let at = phase("live read models checked", at);
    rebuild(&harness, views::CUSTOMER_SUMMARIES);
    rebuild(&harness, views::VALUABLE_CUSTOMERS);
    let at = phase("read models rebuilt", at);
    let rebuilt = check_read_models(&harness, &model, QUERY_INSTANTS);
    assert_eq!(live, rebuilt, "the rebuilt read models equal the live ones");
    phase("rebuilt read models checked", at);
    harness.shutdown();
}
