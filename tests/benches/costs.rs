//! Costs of the runtime core other than throughput (not timed tests): rehydration time per
//! 1,000 events, cold activation with a snapshot, memory per idle live actor, and reopen time
//! (recovery with the full integrity check) per million events.
//!
//! `cargo bench -p annals-tests --bench costs -- [rehydrate|activate|memory|reopen|all]`

use std::alloc::System;
use std::num::{NonZeroU64, NonZeroUsize};
use std::time::{Duration, Instant};

use annals::store::sled::{IntegrityCheck, SledOptions, SledStore};
use annals::{AggregateOptions, Runtime, RuntimeOptions};
use annals_domain::bank::{Account, AccountCommand};
use hdrhistogram::Histogram;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

/// Counts heap bytes (the `stats_alloc` crate wraps the system allocator; the workspace
/// forbids `unsafe`, so the counting allocator comes from a crate).
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn live_bytes() -> i128 {
    let s = ALLOCATOR.stats();
    s.bytes_allocated as i128 - s.bytes_deallocated as i128 + s.bytes_reallocated as i128
}

fn main() {
    let which = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_else(|| "all".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    if which == "rehydrate" || which == "all" {
        rt.block_on(rehydrate());
    }
    if which == "activate" || which == "all" {
        rt.block_on(activate());
    }
    if which == "memory" || which == "all" {
        rt.block_on(memory());
    }
    if which == "reopen" || which == "all" {
        rt.block_on(reopen());
    }
}

fn open(dir: &std::path::Path, snapshot_every: Option<u64>) -> Runtime {
    let options = RuntimeOptions::new(dir)
        .with_live_actors_max(NonZeroUsize::new(1_000_000).expect("nonzero"));
    let runtime = Runtime::open(options).expect("open");
    runtime
        .register_with::<Account>(
            AggregateOptions::default()
                .with_snapshot_every(snapshot_every.and_then(NonZeroU64::new)),
        )
        .expect("register");
    runtime
}

/// Writes `commands` deposits to each of `accounts` accounts, `accounts` clients at a time.
async fn fill(runtime: &Runtime, accounts: usize, commands: usize) {
    let mut tasks = Vec::new();
    for a in 0..accounts {
        let runtime = runtime.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..commands {
                let r = runtime
                    .execute::<Account>(&format!("acct-{a}"), AccountCommand::Deposit { amount: 1 })
                    .await;
                assert!(matches!(r, Ok(Ok(_))), "fill failed: {r:?}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

/// Full replay (no snapshot) of one stream of 10,000 events, 20 times.
async fn rehydrate() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = open(dir.path(), None);
    fill(&runtime, 1, 10_000).await;
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let rounds: usize = std::env::var("ANNALS_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    for _ in 0..rounds {
        let t = Instant::now();
        let state = runtime
            .state::<Account>("acct-0")
            .expect("state")
            .expect("exists");
        h.record(micros(t.elapsed())).expect("record");
        assert_eq!(state.version.0, 10_000);
    }
    let stream = annals::StreamId::new("Account", "acct-0").expect("stream");
    let mut raw = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..rounds {
        let t = Instant::now();
        let events = runtime
            .read_stream(&stream, annals::Version(1), None, 20_000)
            .expect("read");
        raw.record(micros(t.elapsed())).expect("record");
        assert_eq!(events.len(), 10_000);
    }
    println!(
        "rehydrate: reading the 10,000 encoded events (store only): median {} µs = {:.0} µs per 1,000 events",
        raw.value_at_quantile(0.5),
        raw.value_at_quantile(0.5) as f64 / 10.0
    );
    println!(
        "rehydrate: full replay of 10,000 events: median {} µs = {:.0} µs per 1,000 events (min {} µs)",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.5) as f64 / 10.0,
        h.min()
    );
    runtime.shutdown().await.expect("shutdown");
}

/// 1,000 aggregates of 150 events with a snapshot every 100; after a restart, load each
/// (snapshot + 50 events), then activate each actor with a command.
async fn activate() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = open(dir.path(), Some(100));
    fill(&runtime, 1000, 150).await;
    runtime.shutdown().await.expect("shutdown");
    drop(runtime);
    let runtime = open(dir.path(), Some(100));
    let mut load = Histogram::<u64>::new(3).expect("histogram");
    for a in 0..1000 {
        let t = Instant::now();
        let state = runtime
            .state::<Account>(&format!("acct-{a}"))
            .expect("state")
            .expect("exists");
        load.record(micros(t.elapsed())).expect("record");
        assert_eq!(state.version.0, 150);
    }
    let before = runtime.stats();
    let mut first = Histogram::<u64>::new(3).expect("histogram");
    for a in 0..1000 {
        let t = Instant::now();
        // A rejected command activates the actor without writing: activation + rehydration +
        // decide, no fsync.
        let r = runtime
            .execute::<Account>(
                &format!("acct-{a}"),
                AccountCommand::Withdraw { amount: 1_000_000 },
            )
            .await;
        first.record(micros(t.elapsed())).expect("record");
        assert!(matches!(r, Ok(Err(_))), "{r:?}");
    }
    let after = runtime.stats();
    let rehydrations = after.rehydrations - before.rehydrations;
    println!(
        "activate: load with snapshot (snapshot at 100 + 50 events): p50 {} µs p99 {} µs; first command on a cold actor (activation + rehydration + decide): p50 {} µs p99 {} µs; mean rehydration inside the actor {:.0} µs",
        load.value_at_quantile(0.5),
        load.value_at_quantile(0.99),
        first.value_at_quantile(0.5),
        first.value_at_quantile(0.99),
        (after.rehydration_micros - before.rehydration_micros) as f64 / rehydrations.max(1) as f64,
    );
    runtime.shutdown().await.expect("shutdown");
}

/// Heap bytes per idle live actor: 20,000 actors activated by a rejected command each.
async fn memory() {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().expect("dir");
    let runtime = open(dir.path(), Some(100));
    fill(&runtime, N, 1).await;
    runtime.shutdown().await.expect("shutdown");
    drop(runtime);
    let runtime = open(dir.path(), Some(100));
    // Warm sled's cache so that the measurement counts actors, not cached pages.
    for a in 0..N {
        runtime
            .state::<Account>(&format!("acct-{a}"))
            .expect("state");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = live_bytes();
    for a in 0..N {
        let r = runtime
            .execute::<Account>(
                &format!("acct-{a}"),
                AccountCommand::Withdraw { amount: 1_000_000 },
            )
            .await;
        assert!(matches!(r, Ok(Err(_))), "{r:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = live_bytes();
    let stats = runtime.stats();
    println!(
        "memory: {} live actors, {:.0} bytes of heap per idle live actor (routing entry, actor, mailbox, context, state)",
        stats.live_actors,
        (after - before) as f64 / stats.live_actors.max(1) as f64
    );
    runtime.shutdown().await.expect("shutdown");
}

/// Reopen (recovery + full integrity check) of a store with 1,000,000 events.
async fn reopen() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = open(dir.path(), Some(100));
    let t = Instant::now();
    fill(&runtime, 1000, 1000).await;
    let fill_took = t.elapsed();
    runtime.shutdown().await.expect("shutdown");
    drop(runtime);
    for check in [
        IntegrityCheck::Structure,
        IntegrityCheck::Full,
        IntegrityCheck::Tail,
    ] {
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        for _ in 0..5 {
            let t = Instant::now();
            let store = SledStore::open(SledOptions::new(dir.path()).with_integrity_check(check))
                .expect("reopen");
            h.record(micros(t.elapsed())).expect("record");
            let report = store.recovery_report().clone();
            if check != IntegrityCheck::Tail {
                assert_eq!(report.events_checked, 1_000_000);
            }
            drop(store);
        }
        println!(
            "reopen: 1,000,000 events (written in {:.1?}), {check:?} check: median {} ms, min {} ms",
            fill_took,
            h.value_at_quantile(0.5) / 1000,
            h.min() / 1000
        );
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}
