//! The runtime core benchmark (not a timed test): 1,000 bank accounts × 100 commands, one
//! client per account awaiting each reply, against a real sled store in a temp directory.
//!
//! `cargo bench -p annals-tests --bench bank -- [durable|relaxed|all] [accounts] [commands]`

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::store::sled::{Durability, SledOptions};
use annals::{Runtime, RuntimeOptions};
use annals_domain::bank::{Account, AccountCommand};
use hdrhistogram::Histogram;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args.first().map_or("all", String::as_str).to_string();
    let accounts: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let commands: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    if mode == "durable" || mode == "all" {
        run("durable", Durability::Durable, accounts, commands);
    }
    if mode == "relaxed" || mode == "all" {
        run(
            "relaxed",
            Durability::Relaxed {
                flush_interval: Duration::from_millis(50),
            },
            accounts,
            commands,
        );
    }
}

fn run(name: &str, durability: Durability, accounts: usize, commands: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let options =
        RuntimeOptions::with_store(SledOptions::new(dir.path()).with_durability(durability))
            .with_live_actors_max(NonZeroUsize::new(accounts * 2).expect("nonzero"));
    let runtime = Runtime::open(options).expect("open runtime");
    runtime.register::<Account>().expect("register");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let started = Instant::now();
    let histograms = rt.block_on(async {
        let mut tasks = Vec::with_capacity(accounts);
        for a in 0..accounts {
            let runtime = runtime.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("acct-{a}");
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let mut rejected = 0u64;
                for i in 0..commands {
                    let command = if i % 3 == 2 {
                        AccountCommand::Withdraw { amount: 250 }
                    } else {
                        AccountCommand::Deposit { amount: 100 }
                    };
                    let t = Instant::now();
                    match runtime.execute::<Account>(&id, command).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => rejected += 1,
                        Err(e) => panic!("command failed: {e}"),
                    }
                    h.record(
                        u64::try_from(t.elapsed().as_micros())
                            .unwrap_or(u64::MAX)
                            .max(1),
                    )
                    .expect("record");
                }
                (h, rejected)
            }));
        }
        let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        let mut rejected = 0;
        for t in tasks {
            let (h, r) = t.await.expect("task");
            total.add(h).expect("add");
            rejected += r;
        }
        (total, rejected)
    });
    let elapsed = started.elapsed();
    let (h, rejected) = histograms;
    let total = (accounts * commands) as f64;
    let stats = runtime.stats();
    println!(
        "{name:8} {accounts}x{commands}: {:>9.0} commands/s  p50 {:>6} µs  p99 {:>6} µs  max {:>7} µs  rejected {rejected}  fsyncs {}  appends/fsync {:.1}  elapsed {:.2?}",
        total / elapsed.as_secs_f64(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max(),
        stats.journal.fsyncs,
        stats.journal.appends as f64 / stats.journal.fsyncs.max(1) as f64,
        elapsed,
    );
    rt.block_on(runtime.shutdown()).expect("shutdown");
    drop(Arc::new(()));
}
