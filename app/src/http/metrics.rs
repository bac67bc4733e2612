//! Prometheus metrics (text exposition format 0.0.4), kept with atomics and rendered on demand.
//!
//! Label values are bounded: aggregate types are the registered ones, command types only the
//! variants the aggregate knows (anything else counts as `invalid`), outcomes a fixed set.
//! The journal's and the runtime's counters, the subscribers' lag and, on PostgreSQL, the
//! connection pool's gauges are read when `/metrics` is scraped, so they cost nothing per
//! command.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use annals::store::PgStore;
use annals::Runtime;
use parking_lot::Mutex;

/// Upper bounds of the command latency histogram, in seconds.
const LATENCY_BUCKETS_S: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What became of a command, the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Executed (or its stored outcome returned).
    Ok,
    /// Refused by the aggregate for a business reason.
    Rejected,
    /// Expected version mismatch.
    Conflict,
    /// Refused at a limit (429/503).
    Overloaded,
    /// Malformed (4xx other than the above).
    Invalid,
    /// The server's fault (5xx other than overload).
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Conflict => "conflict",
            Outcome::Overloaded => "overloaded",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|&bound| seconds <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// The service's own metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    commands: Mutex<BTreeMap<(&'static str, &'static str, Outcome), u64>>,
    latency: Mutex<BTreeMap<&'static str, Arc<Histogram>>>,
    responses: [AtomicU64; 5],
}

impl Metrics {
    /// Counts a command of `aggregate` (type name) and `command` (variant name, or `invalid`)
    /// that ended with `outcome` after `took`.
    pub fn command(
        &self,
        aggregate: &'static str,
        command: &'static str,
        outcome: Outcome,
        took: Duration,
    ) {
        *self
            .commands
            .lock()
            .entry((aggregate, command, outcome))
            .or_default() += 1;
        self.histogram(aggregate).observe(took);
    }

    fn histogram(&self, aggregate: &'static str) -> Arc<Histogram> {
        // One histogram per aggregate type; observing happens outside the lock.
        Arc::clone(self.latency.lock().entry(aggregate).or_default())
    }

    /// Counts an HTTP response by status class.
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text: these metrics plus the runtime's, the journal's and the
    /// subscribers' (when the runtime is open), and the PostgreSQL pool's (when `postgres`, the
    /// store under the runtime, is given).
    pub fn render(&self, runtime: Option<&Runtime>, postgres: Option<&PgStore>) -> String {
        let mut out = String::with_capacity(4096);
        self.render_commands(&mut out);
        self.render_latency(&mut out);
        header(
            &mut out,
            "annals_http_responses_total",
            "counter",
            "HTTP responses by status class.",
        );
        for (i, counter) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "annals_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                counter.load(Ordering::Relaxed)
            );
        }
        if let Some(runtime) = runtime {
            render_runtime(&mut out, runtime);
        }
        if let Some(postgres) = postgres {
            render_postgres(&mut out, postgres);
        }
        out
    }

    fn render_commands(&self, out: &mut String) {
        header(
            out,
            "annals_commands_total",
            "counter",
            "Commands by aggregate type, command type and outcome.",
        );
        for ((aggregate, command, outcome), count) in self.commands.lock().iter() {
            let _ = writeln!(
                out,
                "annals_commands_total{{aggregate=\"{aggregate}\",command=\"{command}\",outcome=\"{}\"}} {count}",
                outcome.label()
            );
        }
    }

    fn render_latency(&self, out: &mut String) {
        header(
            out,
            "annals_command_duration_seconds",
            "histogram",
            "Time from a command's request to its reply.",
        );
        for (aggregate, histogram) in self.latency.lock().iter() {
            let mut cumulative = 0;
            for (bound, bucket) in LATENCY_BUCKETS_S.iter().zip(&histogram.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "annals_command_duration_seconds_bucket{{aggregate=\"{aggregate}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = histogram.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "annals_command_duration_seconds_bucket{{aggregate=\"{aggregate}\",le=\"+Inf\"}} {count}"
            );
            #[allow(clippy::cast_precision_loss)] // a sum of microseconds shown as seconds
            let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "annals_command_duration_seconds_sum{{aggregate=\"{aggregate}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "annals_command_duration_seconds_count{{aggregate=\"{aggregate}\"}} {count}"
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn render_postgres(out: &mut String, store: &PgStore) {
    let (open, free, waiting) = store.pool_status();
    gauge(
        out,
        "annals_postgres_connections_open",
        "gauge",
        "Connections the PostgreSQL pool holds open (at most store.postgres_pool_size).",
        open,
    );
    gauge(
        out,
        "annals_postgres_connections_free",
        "gauge",
        "Open PostgreSQL connections not in use.",
        free,
    );
    gauge(
        out,
        "annals_postgres_connections_waiting",
        "gauge",
        "Calls waiting for a PostgreSQL connection: above 0 for long, the pool is too small \
         or the database too slow.",
        waiting,
    );
    gauge(
        out,
        "annals_postgres_batch_retries_total",
        "counter",
        "Batches redone because another node committed to the same stream or command id first.",
        store.batch_retries(),
    );
    let times = store.commit_times();
    header(
        out,
        "annals_postgres_commit_seconds",
        "summary",
        "Transaction time of each committed batch, from its first statement to its COMMIT \
         returning (the WAL flush included).",
    );
    let _ = writeln!(
        out,
        "annals_postgres_commit_seconds_sum {}",
        times.total.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "annals_postgres_commit_seconds_count {}",
        times.batches
    );
    gauge(
        out,
        "annals_postgres_commit_seconds_max",
        "gauge",
        "The longest batch transaction since the node started.",
        times.max.as_secs_f64(),
    );
    let (owned, claims) = store.ownership();
    gauge(
        out,
        "annals_postgres_subscribers_owned",
        "gauge",
        "Projections, process managers and the deadline timer this node runs now (the others \
         stand by).",
        owned,
    );
    gauge(
        out,
        "annals_postgres_ownership_claims_total",
        "counter",
        "Times this node took ownership of a subscriber (at start, and in each takeover).",
        claims,
    );
}

fn render_runtime(out: &mut String, runtime: &Runtime) {
    let stats = runtime.stats();
    let j = stats.journal;
    gauge(
        out,
        "annals_journal_appends_total",
        "counter",
        "Appends acknowledged by the journal (one per command).",
        j.appends,
    );
    gauge(
        out,
        "annals_journal_events_total",
        "counter",
        "Events committed.",
        j.events,
    );
    gauge(
        out,
        "annals_journal_batches_total",
        "counter",
        "Group-commit batches written; appends_total / batches_total is the mean batch size.",
        j.batches,
    );
    gauge(
        out,
        "annals_journal_fsyncs_total",
        "counter",
        "fsyncs completed.",
        j.fsyncs,
    );
    gauge(
        out,
        "annals_journal_batch_appends_max",
        "gauge",
        "The largest batch written, in appends.",
        j.batch_appends_max,
    );
    gauge(
        out,
        "annals_journal_head_position",
        "gauge",
        "Position of the last acknowledged event.",
        runtime.head_position().0,
    );
    gauge(
        out,
        "annals_live_actors",
        "gauge",
        "Live aggregate actors.",
        stats.live_actors,
    );
    gauge(
        out,
        "annals_activations_total",
        "counter",
        "Aggregate actors activated.",
        stats.activations,
    );
    gauge(
        out,
        "annals_passivations_total",
        "counter",
        "Aggregate actors passivated after their idle timeout.",
        stats.passivations,
    );
    gauge(
        out,
        "annals_evictions_total",
        "counter",
        "Aggregate actors evicted by the live-actor cap.",
        stats.evictions,
    );
    gauge(
        out,
        "annals_rehydrations_total",
        "counter",
        "Rehydrations completed.",
        stats.rehydrations,
    );
    #[allow(clippy::cast_precision_loss)] // microseconds shown as seconds
    let rehydration_s = stats.rehydration_micros as f64 / 1e6;
    gauge(
        out,
        "annals_rehydration_seconds_total",
        "counter",
        "Time spent rehydrating.",
        rehydration_s,
    );
    let subscribers = runtime.subscribers();
    header(
        out,
        "annals_subscriber_lag_events",
        "gauge",
        "Events between a subscriber's checkpoint and the head.",
    );
    for s in &subscribers {
        let _ = writeln!(
            out,
            "annals_subscriber_lag_events{{subscriber=\"{}\"}} {}",
            s.name, s.lag_events
        );
    }
    header(
        out,
        "annals_subscriber_lag_seconds",
        "gauge",
        "Age of the oldest event a subscriber has not processed.",
    );
    for s in &subscribers {
        let _ = writeln!(
            out,
            "annals_subscriber_lag_seconds{{subscriber=\"{}\"}} {}",
            s.name, s.lag_seconds
        );
    }
    header(
        out,
        "annals_subscriber_checkpoint_position",
        "gauge",
        "A subscriber's checkpoint.",
    );
    for s in &subscribers {
        let _ = writeln!(
            out,
            "annals_subscriber_checkpoint_position{{subscriber=\"{}\"}} {}",
            s.name, s.checkpoint.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.command(
            "Order",
            "CreateOrder",
            Outcome::Ok,
            Duration::from_micros(300),
        );
        m.command(
            "Order",
            "CreateOrder",
            Outcome::Ok,
            Duration::from_millis(3),
        );
        m.command(
            "Order",
            "invalid",
            Outcome::Invalid,
            Duration::from_secs(60),
        );
        let text = m.render(None, None);
        assert!(text.contains(
            "annals_commands_total{aggregate=\"Order\",command=\"CreateOrder\",outcome=\"ok\"} 2"
        ));
        assert!(text.contains(
            "annals_command_duration_seconds_bucket{aggregate=\"Order\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "annals_command_duration_seconds_bucket{aggregate=\"Order\",le=\"0.005\"} 2"
        ));
        assert!(text
            .contains("annals_command_duration_seconds_bucket{aggregate=\"Order\",le=\"+Inf\"} 3"));
        assert!(text.contains("annals_command_duration_seconds_count{aggregate=\"Order\"} 3"));
    }
}
