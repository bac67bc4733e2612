//! The bank workload, shared by every peer: the command mix of the runtime core benchmark
//! (`tests/benches/bank.rs`) and the closed-loop driver that measures it.
//!
//! One client task per aggregate sends that aggregate's commands one after another, each
//! awaiting its reply before the next (closed loop, so the offered load is the number of
//! aggregates). Latency is taken from the call to the reply and recorded in an HDR histogram;
//! throughput is all commands over the wall time from the first send to the last reply.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_domain::bank::AccountCommand;
use anyhow::Context as _;
use hdrhistogram::Histogram;

/// Largest latency the histograms hold: one minute, in microseconds. Anything slower is a hang,
/// and is recorded as this value (saturated) rather than lost.
const LATENCY_MAX_US: u64 = 60_000_000;

/// The `i`th command an aggregate receives (0-based): two deposits of 100, then a withdrawal
/// of 250, repeated. Exactly the mix of `tests/benches/bank.rs`, so the balance walks
/// 100, 200, (250 refused: insufficient funds), 300, 400, 150, 250, 350, 100, … and about one
/// withdrawal in three is a business rejection early on.
pub(crate) fn command(i: usize) -> AccountCommand {
    if i % 3 == 2 {
        AccountCommand::Withdraw { amount: 250 }
    } else {
        AccountCommand::Deposit { amount: 100 }
    }
}

/// What became of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Its event was stored (durably or not, as the peer promises) before the reply.
    Accepted,
    /// The aggregate refused it for a business reason (insufficient funds); nothing stored.
    Rejected,
}

/// A system under test: runs one bank command against one aggregate and waits for its reply.
///
/// `aggregate` is an index in `0..aggregates_total` given to the peer when it was opened; each
/// peer maps it to its own id type. An `Err` is a technical failure and ends the run.
pub(crate) trait Peer: Send + Sync + 'static {
    /// Executes `command` on aggregate number `aggregate`.
    fn execute(
        &self,
        aggregate: usize,
        command: AccountCommand,
    ) -> impl Future<Output = anyhow::Result<Outcome>> + Send;
}

/// What one closed-loop run measured.
#[derive(Debug)]
pub(crate) struct Measured {
    /// Commands sent (aggregates × commands).
    pub(crate) commands: u64,
    /// Commands refused by the aggregate.
    pub(crate) rejected: u64,
    /// From the first send to the last reply.
    pub(crate) elapsed: Duration,
    /// Per-command latency, microseconds.
    pub(crate) latency_us: Histogram<u64>,
}

impl Measured {
    /// Commands acknowledged with an event.
    pub(crate) fn accepted(&self) -> u64 {
        self.commands - self.rejected
    }

    /// Commands per second over the whole run.
    pub(crate) fn rate(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let commands = self.commands as f64;
        commands / self.elapsed.as_secs_f64()
    }
}

/// Runs `commands` commands on each aggregate of `aggregates`, one client task per aggregate,
/// on the current tokio runtime.
pub(crate) async fn drive<P: Peer>(
    peer: &Arc<P>,
    aggregates: Range<usize>,
    commands: usize,
) -> anyhow::Result<Measured> {
    let started = Instant::now();
    // A JoinSet aborts the clients still running if this returns early (one failed), so a
    // failed system leaves no load behind for the next one.
    let mut clients = tokio::task::JoinSet::new();
    for aggregate in aggregates {
        let peer = Arc::clone(peer);
        clients.spawn(async move { client(&*peer, aggregate, commands).await });
    }
    let mut latency_us = histogram();
    let mut rejected = 0;
    let mut sent = 0;
    while let Some(done) = clients.join_next().await {
        let (h, r) = done.context("a client task panicked")??;
        sent += h.len();
        latency_us
            .add(h)
            .context("cannot merge latency histograms")?;
        rejected += r;
    }
    Ok(Measured {
        commands: sent,
        rejected,
        elapsed: started.elapsed(),
        latency_us,
    })
}

/// One aggregate's client: its commands in order, each awaited.
async fn client<P: Peer>(
    peer: &P,
    aggregate: usize,
    commands: usize,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut latency_us = histogram();
    let mut rejected = 0;
    for i in 0..commands {
        let sent = Instant::now();
        let outcome = peer
            .execute(aggregate, command(i))
            .await
            .with_context(|| format!("command {i} on aggregate {aggregate} failed"))?;
        let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        latency_us.saturating_record(us.clamp(1, LATENCY_MAX_US));
        if outcome == Outcome::Rejected {
            rejected += 1;
        }
    }
    Ok((latency_us, rejected))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("constant histogram bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_two_deposits_then_a_withdrawal() {
        let mix: Vec<_> = (0..6).map(command).collect();
        let d = AccountCommand::Deposit { amount: 100 };
        let w = AccountCommand::Withdraw { amount: 250 };
        assert_eq!(mix, vec![d.clone(), d.clone(), w.clone(), d.clone(), d, w]);
    }
}
