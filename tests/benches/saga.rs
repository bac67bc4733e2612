//! End-to-end saga throughput in-process (not a timed test): orders created per second that
//! reach a final Approved or Rejected state, durable mode, with the reference domain's saga and
//! projections running.
//!
//! `cargo bench -p annals-tests --bench saga -- [orders] [customers] [clients]`

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use annals::{Position, Runtime, RuntimeOptions};
use annals_domain::customer::{Customer, CustomerCommand};
use annals_domain::order::{Order, OrderCommand};
use annals_domain::DomainOptions;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .filter_map(|a| a.parse().ok())
        .collect();
    let orders = args.first().copied().unwrap_or(20_000);
    let customers = args.get(1).copied().unwrap_or(1_000);
    let clients = args.get(2).copied().unwrap_or(500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(run(orders, customers, clients));
}

async fn run(orders: usize, customers: usize, clients: usize) {
    let dir = tempfile::tempdir().expect("dir");
    let options = RuntimeOptions::new(dir.path())
        .with_live_actors_max(NonZeroUsize::new(orders + customers + 1000).expect("nonzero"));
    let runtime = Runtime::open(options).expect("open");
    annals_domain::register(&runtime, &DomainOptions::default()).expect("domain registers");
    for c in 0..customers {
        let command = CustomerCommand::CreateCustomer {
            name: format!("customer {c}"),
            credit_limit: 2_000_000,
            currency: None,
        };
        let created = runtime
            .execute::<Customer>(&format!("c-{c}"), command)
            .await;
        assert!(matches!(created, Ok(Ok(_))), "{created:?}");
    }
    let start_position = runtime.head_position();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..clients {
        let runtime = runtime.clone();
        tasks.push(tokio::spawn(async move {
            let mut o = t;
            while o < orders {
                // Totals from 1,000 to 100,999: some customers run out of credit (rejections).
                let total = 1_000 + (o as u64 * 7_919) % 100_000;
                let command = OrderCommand::CreateOrder {
                    customer_id: format!("c-{}", o % customers),
                    total,
                    currency: None,
                };
                let created = runtime.execute::<Order>(&format!("o-{o}"), command).await;
                assert!(matches!(created, Ok(Ok(_))), "{created:?}");
                o += clients;
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let created_in = started.elapsed();
    // Settled: one OrderApproved or OrderRejected per order in the log.
    let mut decided = 0usize;
    let mut next = start_position.next();
    let deadline = Instant::now() + Duration::from_secs(600);
    while decided < orders && Instant::now() < deadline {
        let page = runtime.read_all(next, 4096).expect("log");
        if page.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        for event in &page {
            if matches!(&*event.event_type, "OrderApproved" | "OrderRejected") {
                decided += 1;
            }
            next = Position(event.position.0 + 1);
        }
    }
    let settled_in = started.elapsed();
    let stats = runtime.stats();
    println!(
        "saga: {orders} orders over {customers} customers, {clients} clients: created in {:.2?} ({:.0}/s); all {decided} decided in {:.2?} => {:.0} orders/s end to end; {} events; fsyncs {}",
        created_in,
        orders as f64 / created_in.as_secs_f64(),
        settled_in,
        decided as f64 / settled_in.as_secs_f64(),
        runtime.head_position().0,
        stats.journal.fsyncs
    );
    for s in runtime.subscribers() {
        println!(
            "  {:24} {:?} checkpoint {} lag {}",
            s.name, s.status, s.checkpoint, s.lag_events
        );
    }
    runtime.shutdown().await.expect("shutdown");
}
