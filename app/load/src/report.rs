//! The report of a run: one [`Report`] value, printed as a table on stdout and written as JSON
//! with `--json FILE`. The JSON field names are part of the interface (scripts and the charts
//! read them); the [module docs](super) list them. Add fields, never rename them; a change of
//! meaning bumps [`REPORT_VERSION`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::verify::Verification;

/// The version of the report's JSON shape.
pub(crate) const REPORT_VERSION: u32 = 1;

/// Latencies are recorded in microseconds, from 1 µs to an hour (longer ones are clamped): the
/// per-request timeout is at most a day, but an hour already says "stalled".
pub(crate) const LATENCY_US_MAX: u64 = 3_600_000_000;

/// A new latency histogram (3 significant digits).
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
        .expect("constant bounds that hdrhistogram accepts: low >= 1, high >= 2 * low, sigfig <= 5")
}

/// Records `latency` in `histogram` (in µs, clamped to its range).
pub(crate) fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, LATENCY_US_MAX);
    histogram.saturating_record(micros);
}

/// A latency distribution in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Latency {
    /// Number of values.
    pub(crate) count: u64,
    /// Arithmetic mean.
    pub(crate) mean: f64,
    /// Median.
    pub(crate) p50: u64,
    /// 90th percentile.
    pub(crate) p90: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// 99.9th percentile.
    pub(crate) p99_9: u64,
    /// Largest value.
    pub(crate) max: u64,
}

impl Latency {
    /// The summary of `histogram` (all zeros when it is empty).
    pub(crate) fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            count: histogram.len(),
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p99_9: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }

    fn render(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3} ms  (mean {:.3} ms, {} values)",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p99_9),
            ms(self.max),
            self.mean / 1000.0,
            self.count
        )
    }
}

/// The journal's work during the run (in-process only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Journal {
    /// fsyncs.
    pub(crate) fsyncs: u64,
    /// Events committed during the run (the saga's commands' included).
    pub(crate) events: u64,
    /// Appends acknowledged.
    pub(crate) appends: u64,
    /// Batches written.
    pub(crate) batches: u64,
    /// `events / fsyncs` (0 without fsyncs).
    pub(crate) events_per_fsync: f64,
}

/// What happened before the measured run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Setup {
    /// Commands sent to prepare (`orders`: one `CreateCustomer` per customer).
    pub(crate) commands: u64,
    /// How long it took, in seconds.
    pub(crate) elapsed_s: f64,
}

/// The saga's decisions on the run's orders (`orders` only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Saga {
    /// Orders whose `CreateOrder` was acknowledged.
    pub(crate) orders: u64,
    /// Orders the saga approved.
    pub(crate) approved: u64,
    /// Orders the saga rejected.
    pub(crate) rejected: u64,
    /// Orders without a decision within `--saga-timeout`.
    pub(crate) undecided: u64,
    /// Approved orders shipped (`ShipOrder` acknowledged).
    pub(crate) shipped: u64,
    /// Approved orders cancelled (`CancelOrder` acknowledged).
    pub(crate) cancelled: u64,
    /// From the `CreateOrder` acknowledgement to the decision seen in the log.
    pub(crate) latency_us: Latency,
}

/// The report of one run. Field meanings are documented in the [module docs](super).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Report {
    /// [`REPORT_VERSION`].
    pub(crate) report_version: u32,
    /// `inproc` or the server's base URL.
    pub(crate) target: String,
    /// `bank` or `orders`.
    pub(crate) workload: &'static str,
    /// In-process: the store's backend, `sled` or `postgres`; `null` over HTTP.
    pub(crate) store: Option<&'static str>,
    /// In-process: `durable` or `relaxed`; `null` over HTTP.
    pub(crate) durability: Option<&'static str>,
    /// `closed` or `open`.
    pub(crate) shape: &'static str,
    /// Closed loop: the number of clients.
    pub(crate) concurrency: Option<usize>,
    /// Open loop: the intended rate per second.
    pub(crate) rate: Option<f64>,
    /// Open loop: the bound on outstanding sessions.
    pub(crate) max_outstanding: Option<usize>,
    /// Number of aggregates.
    pub(crate) aggregates: u64,
    /// Zipf exponent.
    pub(crate) skew: f64,
    /// Client threads.
    pub(crate) threads: usize,
    /// Prefix of the run's aggregate ids.
    pub(crate) id_prefix: String,
    /// `--duration` in seconds, if given (or the default).
    pub(crate) duration_limit_s: Option<f64>,
    /// `--commands`, if given.
    pub(crate) commands_limit: Option<u64>,
    /// From the first command to the last answer, in seconds.
    pub(crate) elapsed_s: f64,
    /// Commands sent.
    pub(crate) sent: u64,
    /// Commands committed.
    pub(crate) acknowledged: u64,
    /// Commands refused for a business reason.
    pub(crate) rejected: u64,
    /// Commands failed (sum of `failed_by_kind`).
    pub(crate) failed: u64,
    /// Failed commands by kind.
    pub(crate) failed_by_kind: BTreeMap<&'static str, u64>,
    /// One message per failure kind.
    pub(crate) failure_examples: BTreeMap<&'static str, String>,
    /// Open loop: arrivals not sent because `max_outstanding` sessions were outstanding.
    pub(crate) unsent: u64,
    /// `(acknowledged + rejected) / elapsed_s`.
    pub(crate) throughput_per_s: f64,
    /// Latency of answered and timed-out commands, in microseconds.
    pub(crate) latency_us: Latency,
    /// In-process: the journal's work during the run; `null` over HTTP.
    pub(crate) journal: Option<Journal>,
    /// Preparation before the run.
    pub(crate) setup: Setup,
    /// `orders`: the saga's decisions; `null` for `bank`.
    pub(crate) saga: Option<Saga>,
    /// With `--verify`: the checks and what they found; `null` otherwise.
    pub(crate) verify: Option<Verification>,
}

impl Report {
    /// The table printed on stdout.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let shape = match (self.concurrency, self.rate) {
            (Some(clients), _) => format!("closed loop, {clients} clients"),
            (None, Some(rate)) => format!(
                "open loop, {rate} per second, at most {} outstanding",
                self.max_outstanding.unwrap_or(0)
            ),
            (None, None) => self.shape.to_string(),
        };
        let target = match (self.store, self.durability) {
            (Some(store), Some(durability)) if store != "sled" => {
                format!("{} ({store}, {durability})", self.target)
            }
            (_, Some(durability)) => format!("{} ({durability})", self.target),
            _ => self.target.clone(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "annals load: {} on {target}, {shape}, {} aggregates, skew {}, {} client thread{}",
            self.workload,
            self.aggregates,
            self.skew,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        );
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "  {name:<14} {value}");
        };
        row("elapsed", format!("{:.2} s", self.elapsed_s));
        if self.setup.commands > 0 {
            row(
                "setup",
                format!(
                    "{} commands in {:.2} s (not measured)",
                    self.setup.commands, self.setup.elapsed_s
                ),
            );
        }
        row("sent", self.sent.to_string());
        row("acknowledged", self.acknowledged.to_string());
        row("rejected", format!("{} (business)", self.rejected));
        let kinds = self
            .failed_by_kind
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        row(
            "failed",
            if kinds.is_empty() {
                self.failed.to_string()
            } else {
                format!("{} ({kinds})", self.failed)
            },
        );
        if self.rate.is_some() {
            row(
                "unsent",
                format!("{} (outstanding bound reached)", self.unsent),
            );
        }
        row(
            "throughput",
            format!("{:.0} commands/s", self.throughput_per_s),
        );
        row("latency", self.latency_us.render());
        if let Some(journal) = &self.journal {
            row(
                "fsyncs",
                format!(
                    "{} ({:.1} events per fsync, {} events, {} batches)",
                    journal.fsyncs, journal.events_per_fsync, journal.events, journal.batches
                ),
            );
        }
        if let Some(saga) = &self.saga {
            row(
                "orders",
                format!(
                    "{} created: {} approved ({} shipped, {} cancelled), {} rejected, {} undecided",
                    saga.orders,
                    saga.approved,
                    saga.shipped,
                    saga.cancelled,
                    saga.rejected,
                    saga.undecided
                ),
            );
            row("saga latency", saga.latency_us.render());
        }
        if let Some(verify) = &self.verify {
            row("verify", verify.summary());
        }
        for (kind, example) in &self.failure_examples {
            let _ = writeln!(out, "  first {kind} failure: {example}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_summarize_a_histogram() {
        let mut h = histogram();
        for ms in 1..=1000u64 {
            record(&mut h, Duration::from_micros(ms * 1000));
        }
        let latency = Latency::of(&h);
        assert_eq!(latency.count, 1000);
        assert!((499_000..=501_000).contains(&latency.p50), "{latency:?}");
        assert!(latency.p99 <= latency.p99_9 && latency.p99_9 <= latency.max);
        assert_eq!(Latency::of(&histogram()), Latency::default());
    }

    #[test]
    fn huge_latencies_are_clamped() {
        let mut h = histogram();
        record(&mut h, Duration::from_secs(100_000));
        record(&mut h, Duration::ZERO);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= LATENCY_US_MAX - LATENCY_US_MAX / 500);
    }
}
