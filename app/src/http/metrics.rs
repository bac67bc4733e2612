//! Prometheus metrics (text exposition format 0.0.4) through the `metrics` facade and its
//! Prometheus exporter (`metrics-exporter-prometheus`), with a recorder of the server's own —
//! not the process-wide one — so that several servers in one process (the tests) keep apart.
//!
//! The command path takes no lock: every series it touches (commands by aggregate type,
//! command type and outcome; the latency histogram per aggregate type; responses by status
//! class) is registered once, when the server starts, into a table that is read-only
//! afterwards; a count is an atomic add, and so is a latency sample. The journal's batch sizes and commit times arrive once per batch from the
//! journal's thread ([`Metrics::batch_observer`]).
//!
//! The histograms are the one part not kept by the exporter: its histograms queue every sample
//! in a lock-free list that a thread must drain every few seconds (or memory grows with the
//! samples), and with that drain every 2 s the HTTP benchmark's p99 went from 17–24 ms to
//! 28–73 ms (three runs each, same minutes, `app/bench/http.sh`). A [`FixedHistogram`] is a
//! fixed array of atomic bucket counts: an observation is two atomic adds and a bucket search
//! over a dozen bounds, nothing allocates, nothing needs draining; they are rendered in the
//! same exposition format after the exporter's text.
//!
//! Label values are bounded: aggregate types are the registered ones, command types only the
//! variants the aggregate knows (anything else counts as `invalid`), outcomes a fixed set,
//! subscribers the registered ones. The journal's and the runtime's counters, the subscribers'
//! lag and, on PostgreSQL, the connection pool's gauges are read when `/metrics` is scraped, so
//! they cost nothing per command.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use annals::store::{BatchCommitted, BatchObserver, PgStore};
use annals::Runtime;
use metrics::{Counter, Gauge, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::aggregates::Aggregates;

/// Upper bounds of the command latency histogram, in seconds.
const LATENCY_BUCKETS_S: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the journal's commit-time histogram, in seconds.
const COMMIT_BUCKETS_S: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 1.0,
];

/// Upper bounds of the journal's batch-size histogram, in appends.
const BATCH_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];

const COMMANDS: &str = "annals_commands_total";
const COMMAND_DURATION: &str = "annals_command_duration_seconds";
const RESPONSES: &str = "annals_http_responses_total";
const BATCH_APPENDS: &str = "annals_journal_batch_appends";
const COMMIT_SECONDS: &str = "annals_journal_commit_seconds";

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
    const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::Rejected,
        Outcome::Conflict,
        Outcome::Overloaded,
        Outcome::Invalid,
        Outcome::Error,
    ];

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

/// The series of one aggregate type.
#[derive(Debug)]
struct AggregateSeries {
    /// By command type (and `invalid`), one counter per [`Outcome`] in `Outcome::ALL` order.
    commands: HashMap<&'static str, [Counter; 6]>,
    latency: FixedHistogram,
}

/// The service's metrics: handles registered once, rendered on demand.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    by_aggregate: HashMap<&'static str, AggregateSeries>,
    responses: [Counter; 5],
    batch_appends: Arc<FixedHistogram>,
    commit: Arc<FixedHistogram>,
    /// Recent totals of the command latency buckets, for [`Metrics::recent_latency`]: at most
    /// one per [`WINDOW_STEP`], the last [`WINDOW_SNAPSHOTS`]. Locked only by that call.
    window: parking_lot::Mutex<std::collections::VecDeque<(std::time::Instant, Vec<u64>)>>,
}

/// The window [`Metrics::recent_latency`] reports over.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(10);
/// At most one snapshot of the latency buckets per this.
const WINDOW_STEP: Duration = Duration::from_secs(1);
/// Snapshots kept (twice the window's worth, so a caller every few seconds finds one).
const WINDOW_SNAPSHOTS: usize = 20;

/// Commands counted and their latency quantiles, as [`Metrics::recent_latency`] reports them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecentLatency {
    /// Commands counted since the server started (every outcome).
    pub commands_total: u64,
    /// Median command latency over about the last [`LATENCY_WINDOW`], in milliseconds
    /// (interpolated within its histogram bucket); `None` without a command in the window.
    pub p50_ms: Option<f64>,
    /// The 99th percentile, likewise.
    pub p99_ms: Option<f64>,
}

impl Metrics {
    /// The metrics of a server serving `aggregates`.
    pub fn new(aggregates: &Aggregates) -> Metrics {
        let recorder = recorder();
        let handle = recorder.handle();
        describe(&recorder);
        let by_aggregate = aggregates
            .iter()
            .map(|api| {
                let aggregate = api.type_name();
                let commands = api
                    .command_types()
                    .iter()
                    .copied()
                    .chain(["invalid"])
                    .map(|command| {
                        let counters = Outcome::ALL.map(|outcome| {
                            counter(
                                &recorder,
                                COMMANDS,
                                vec![
                                    Label::from_static_parts("aggregate", aggregate),
                                    Label::from_static_parts("command", command),
                                    Label::from_static_parts("outcome", outcome.label()),
                                ],
                            )
                        });
                        (command, counters)
                    })
                    .collect();
                let latency = FixedHistogram::new(&LATENCY_BUCKETS_S, NANOS);
                (aggregate, AggregateSeries { commands, latency })
            })
            .collect();
        let responses = ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
            counter(
                &recorder,
                RESPONSES,
                vec![Label::from_static_parts("class", class)],
            )
        });
        let batch_appends = Arc::new(FixedHistogram::new(&BATCH_BUCKETS, 1.0));
        let commit = Arc::new(FixedHistogram::new(&COMMIT_BUCKETS_S, NANOS));
        Metrics {
            inner: Arc::new(Inner {
                recorder,
                handle,
                by_aggregate,
                responses,
                batch_appends,
                commit,
                window: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            }),
        }
    }

    /// Counts a command of `aggregate` (type name) and `command` (variant name, or `invalid`)
    /// that ended with `outcome` after `took`. Lock-free.
    pub fn command(
        &self,
        aggregate: &'static str,
        command: &'static str,
        outcome: Outcome,
        took: Duration,
    ) {
        let Some(series) = self.inner.by_aggregate.get(aggregate) else {
            return;
        };
        let counters = series
            .commands
            .get(command)
            .or_else(|| series.commands.get("invalid"));
        if let Some(counters) = counters {
            let index = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
            counters[index].increment(1);
        }
        series.latency.observe(took.as_secs_f64());
    }

    /// Counts an HTTP response by status class.
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.inner.responses[class].increment(1);
    }

    /// Commands counted since start, and the median and 99th percentile of their latency over
    /// about the last [`LATENCY_WINDOW`] (from the difference between the histogram now and
    /// as it was then; all of it until the server has run that long).
    pub fn recent_latency(&self) -> RecentLatency {
        let mut now: Vec<u64> = vec![0; LATENCY_BUCKETS_S.len() + 1];
        for series in self.inner.by_aggregate.values() {
            for (total, count) in now.iter_mut().zip(series.latency.counts.iter()) {
                *total += count.load(Ordering::Relaxed);
            }
        }
        let at = std::time::Instant::now();
        let since = {
            let mut window = self.inner.window.lock();
            let since = window
                .iter()
                .rev()
                .find(|(taken, _)| at.duration_since(*taken) >= LATENCY_WINDOW)
                .or_else(|| window.front())
                .map(|(_, counts)| counts.clone());
            if window
                .back()
                .is_none_or(|(taken, _)| at.duration_since(*taken) >= WINDOW_STEP)
            {
                if window.len() >= WINDOW_SNAPSHOTS {
                    window.pop_front();
                }
                window.push_back((at, now.clone()));
            }
            since
        };
        let recent: Vec<u64> = match &since {
            Some(then) => now
                .iter()
                .zip(then)
                .map(|(n, t)| n.saturating_sub(*t))
                .collect(),
            None => now.clone(),
        };
        RecentLatency {
            commands_total: now.iter().sum(),
            p50_ms: quantile(&LATENCY_BUCKETS_S, &recent, 0.5).map(|s| s * 1e3),
            p99_ms: quantile(&LATENCY_BUCKETS_S, &recent, 0.99).map(|s| s * 1e3),
        }
    }

    /// Records the journal's batches (sizes and commit times) into these metrics: set on the
    /// store's options when the runtime is opened.
    pub fn batch_observer(&self) -> BatchObserver {
        let batch_appends = Arc::clone(&self.inner.batch_appends);
        let commit = Arc::clone(&self.inner.commit);
        BatchObserver::new(move |batch: &BatchCommitted| {
            #[allow(clippy::cast_precision_loss)] // a batch is at most a few thousand appends
            batch_appends.observe(batch.appends as f64);
            commit.observe(batch.commit.as_secs_f64());
        })
    }

    /// The exposition text: these metrics plus the runtime's, the journal's and the
    /// subscribers' (when the runtime is open), and the PostgreSQL pool's (when `postgres`, the
    /// store under the runtime, is given).
    pub fn render(&self, runtime: Option<&Runtime>, postgres: Option<&PgStore>) -> String {
        let scrape = Scrape {
            recorder: &self.inner.recorder,
        };
        if let Some(runtime) = runtime {
            scrape.runtime(runtime);
        }
        if let Some(postgres) = postgres {
            scrape.postgres(postgres);
        }
        let mut text = self.inner.handle.render();
        self.render_histograms(&mut text);
        text
    }

    fn render_histograms(&self, out: &mut String) {
        let inner = &self.inner;
        let mut by_aggregate: Vec<_> = inner.by_aggregate.iter().collect();
        by_aggregate.sort_by_key(|(aggregate, _)| **aggregate);
        describe_histogram(out, COMMAND_DURATION, COMMAND_DURATION_HELP);
        for (aggregate, series) in by_aggregate {
            series
                .latency
                .render(out, COMMAND_DURATION, &format!("aggregate=\"{aggregate}\""));
        }
        describe_histogram(out, BATCH_APPENDS, BATCH_APPENDS_HELP);
        inner.batch_appends.render(out, BATCH_APPENDS, "");
        describe_histogram(out, COMMIT_SECONDS, COMMIT_SECONDS_HELP);
        inner.commit.render(out, COMMIT_SECONDS, "");
    }
}

fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new().build_recorder()
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

fn counter(recorder: &PrometheusRecorder, name: &'static str, labels: Vec<Label>) -> Counter {
    recorder.register_counter(&Key::from_parts(name, labels), &metadata())
}

/// Every series' HELP text.
fn describe(recorder: &PrometheusRecorder) {
    let text = |name: &'static str, help: &'static str| {
        (KeyName::from_const_str(name), SharedString::const_str(help))
    };
    for (name, help) in [
        text(
            COMMANDS,
            "Commands by aggregate type, command type and outcome.",
        ),
        text(RESPONSES, "HTTP responses by status class."),
        text(
            "annals_journal_appends_total",
            "Appends acknowledged by the journal (one per command).",
        ),
        text("annals_journal_events_total", "Events committed."),
        text(
            "annals_journal_batches_total",
            "Group-commit batches written; appends_total / batches_total is the mean batch size.",
        ),
        text("annals_journal_fsyncs_total", "fsyncs completed."),
        text("annals_activations_total", "Aggregate actors activated."),
        text(
            "annals_passivations_total",
            "Aggregate actors passivated after their idle timeout.",
        ),
        text(
            "annals_evictions_total",
            "Aggregate actors evicted by the live-actor cap.",
        ),
        text("annals_rehydrations_total", "Rehydrations completed."),
        text(
            "annals_postgres_batch_retries_total",
            "Batches redone because another node committed to the same stream or command id \
             first.",
        ),
        text(
            "annals_postgres_ownership_claims_total",
            "Times this node took ownership of a subscriber (at start, and in each takeover).",
        ),
    ] {
        recorder.describe_counter(name, None, help);
    }
    for (name, help) in [
        text(
            "annals_journal_batch_appends_max",
            "The largest batch written, in appends.",
        ),
        text(
            "annals_journal_head_position",
            "Position of the last acknowledged event.",
        ),
        text("annals_live_actors", "Live aggregate actors."),
        text(
            "annals_rehydration_seconds_total",
            "Time spent rehydrating (a counter, in seconds).",
        ),
        text(
            "annals_subscriber_lag_events",
            "Events between a subscriber's checkpoint and the head.",
        ),
        text(
            "annals_subscriber_lag_seconds",
            "Age of the oldest event a subscriber has not processed.",
        ),
        text(
            "annals_subscriber_checkpoint_position",
            "A subscriber's checkpoint.",
        ),
        text(
            "annals_postgres_connections_open",
            "Connections the PostgreSQL pool holds open (at most store.postgres_pool_size).",
        ),
        text(
            "annals_postgres_connections_free",
            "Open PostgreSQL connections not in use.",
        ),
        text(
            "annals_postgres_connections_waiting",
            "Calls waiting for a PostgreSQL connection: above 0 for long, the pool is too small \
             or the database too slow.",
        ),
        text(
            "annals_postgres_commit_seconds_sum",
            "Transaction time of the committed batches, summed, from each one's first statement \
             to its COMMIT returning (the WAL flush included).",
        ),
        text(
            "annals_postgres_commit_seconds_count",
            "Batches committed (the count of annals_postgres_commit_seconds_sum).",
        ),
        text(
            "annals_postgres_commit_seconds_max",
            "The longest batch transaction since the node started.",
        ),
        text(
            "annals_postgres_subscribers_owned",
            "Projections, process managers and the deadline timer this node runs now (the \
             others stand by).",
        ),
    ] {
        recorder.describe_gauge(name, None, help);
    }
}

const COMMAND_DURATION_HELP: &str = "Time from a command's request to its reply.";
const BATCH_APPENDS_HELP: &str = "Appends per group-commit batch the journal acknowledged.";
const COMMIT_SECONDS_HELP: &str = "Time from the journal starting to write a batch to its \
    acknowledgement (the sync, or the PostgreSQL transaction, included).";

/// Sums of observations in seconds are kept in nanoseconds.
const NANOS: f64 = 1e9;

/// The `q` quantile of a histogram with these upper `bounds` and `counts` (one per bound, then
/// the count above the last): interpolated linearly within the bucket that holds it (from the
/// bound below, 0 for the first); the last bound for the bucket above it. `None` if empty.
fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^53
    let rank = (q * total as f64).max(1.0);
    let mut below = 0u64;
    for (i, count) in counts.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let (below_f, count_f) = (below as f64, *count as f64);
        if *count > 0 && below_f + count_f >= rank {
            let Some(upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            return Some(lower + (upper - lower) * ((rank - below_f) / count_f));
        }
        below += count;
    }
    bounds.last().copied()
}

fn describe_histogram(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
}

/// A histogram over fixed bucket bounds, lock-free: an observation is a bucket search and two
/// atomic adds (its bucket and the sum; the count is the buckets' total).
#[derive(Debug)]
pub struct FixedHistogram {
    bounds: &'static [f64],
    /// One count per bound, then the count above the last bound.
    counts: Box<[AtomicU64]>,
    /// The sum of the observations, in units of `1 / scale`.
    sum: AtomicU64,
    scale: f64,
}

impl FixedHistogram {
    /// A histogram with these upper bounds (ascending), whose sum is kept in units of
    /// `1 / scale` (`1e9` for seconds: nanoseconds).
    pub fn new(bounds: &'static [f64], scale: f64) -> FixedHistogram {
        FixedHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Counts `value` in the first bucket whose bound is at least `value`.
    pub fn observe(&self, value: f64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        // a non-negative value times the scale, saturating as `as` does
        let units = (value * self.scale).max(0.0) as u64;
        self.sum.fetch_add(units, Ordering::Relaxed);
    }

    /// Writes the histogram's series (`_bucket` cumulative with `le`, `_sum`, `_count`) with
    /// `labels` (`key="value",…`, or empty) before `le`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let total = cumulative
            + self
                .counts
                .last()
                .map_or(0, |above| above.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        #[allow(clippy::cast_precision_loss)] // a sum far below 2^53 units
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        let braces = |labels: &str| {
            if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {total}", braces(labels));
    }
}

/// The values read at scrape time, set into the recorder before it renders.
struct Scrape<'a> {
    recorder: &'a PrometheusRecorder,
}

impl Scrape<'_> {
    fn counter(&self, name: &'static str, value: u64) {
        self.recorder
            .register_counter(&Key::from_static_name(name), &metadata())
            .absolute(value);
    }

    fn gauge(&self, name: &'static str, value: f64) {
        self.gauge_labeled(name, Vec::new(), value);
    }

    fn gauge_labeled(&self, name: &'static str, labels: Vec<Label>, value: f64) {
        let gauge: Gauge = self
            .recorder
            .register_gauge(&Key::from_parts(name, labels), &metadata());
        gauge.set(value);
    }

    #[allow(clippy::cast_precision_loss)] // counts and positions far below 2^53
    fn runtime(&self, runtime: &Runtime) {
        let stats = runtime.stats();
        let j = stats.journal;
        self.counter("annals_journal_appends_total", j.appends);
        self.counter("annals_journal_events_total", j.events);
        self.counter("annals_journal_batches_total", j.batches);
        self.counter("annals_journal_fsyncs_total", j.fsyncs);
        self.gauge(
            "annals_journal_batch_appends_max",
            j.batch_appends_max as f64,
        );
        self.gauge(
            "annals_journal_head_position",
            runtime.head_position().0 as f64,
        );
        self.gauge("annals_live_actors", stats.live_actors as f64);
        self.counter("annals_activations_total", stats.activations);
        self.counter("annals_passivations_total", stats.passivations);
        self.counter("annals_evictions_total", stats.evictions);
        self.counter("annals_rehydrations_total", stats.rehydrations);
        self.gauge(
            "annals_rehydration_seconds_total",
            stats.rehydration_micros as f64 / 1e6,
        );
        for s in runtime.subscribers() {
            let label = || vec![Label::new("subscriber", s.name.to_string())];
            self.gauge_labeled("annals_subscriber_lag_events", label(), s.lag_events as f64);
            self.gauge_labeled("annals_subscriber_lag_seconds", label(), s.lag_seconds);
            self.gauge_labeled(
                "annals_subscriber_checkpoint_position",
                label(),
                s.checkpoint.0 as f64,
            );
        }
    }

    #[allow(clippy::cast_precision_loss)] // counts far below 2^53
    fn postgres(&self, store: &PgStore) {
        let (open, free, waiting) = store.pool_status();
        self.gauge("annals_postgres_connections_open", open as f64);
        self.gauge("annals_postgres_connections_free", free as f64);
        self.gauge("annals_postgres_connections_waiting", waiting as f64);
        self.counter("annals_postgres_batch_retries_total", store.batch_retries());
        let times = store.commit_times();
        self.gauge(
            "annals_postgres_commit_seconds_sum",
            times.total.as_secs_f64(),
        );
        self.gauge("annals_postgres_commit_seconds_count", times.batches as f64);
        self.gauge(
            "annals_postgres_commit_seconds_max",
            times.max.as_secs_f64(),
        );
        let (owned, claims) = store.ownership();
        self.gauge("annals_postgres_subscribers_owned", owned as f64);
        self.counter("annals_postgres_ownership_claims_total", claims);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        const BOUNDS: [f64; 3] = [1.0, 2.0, 4.0];
        assert_eq!(quantile(&BOUNDS, &[0, 0, 0, 0], 0.5), None);
        // 10 in (0, 1], 10 in (1, 2]: the median is the top of the first bucket.
        assert_eq!(quantile(&BOUNDS, &[10, 10, 0, 0], 0.5), Some(1.0));
        assert_eq!(quantile(&BOUNDS, &[10, 10, 0, 0], 0.75), Some(1.5));
        // Above the last bound: the last bound.
        assert_eq!(quantile(&BOUNDS, &[0, 0, 0, 5], 0.99), Some(4.0));
        assert_eq!(quantile(&BOUNDS, &[0, 0, 4, 0], 0.25), Some(2.5));
    }

    #[test]
    fn commands_are_counted_and_timed_into_cumulative_buckets() {
        let m = Metrics::new(&Aggregates::domain());
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
        m.response(200);
        m.response(599);
        let text = m.render(None, None);
        for line in [
            "annals_commands_total{aggregate=\"Order\",command=\"CreateOrder\",outcome=\"ok\"} 2",
            "annals_commands_total{aggregate=\"Order\",command=\"invalid\",outcome=\"invalid\"} 1",
            "annals_command_duration_seconds_bucket{aggregate=\"Order\",le=\"0.0005\"} 1",
            "annals_command_duration_seconds_bucket{aggregate=\"Order\",le=\"0.005\"} 2",
            "annals_command_duration_seconds_bucket{aggregate=\"Order\",le=\"+Inf\"} 3",
            "annals_command_duration_seconds_count{aggregate=\"Order\"} 3",
            "annals_http_responses_total{class=\"2xx\"} 1",
            "annals_http_responses_total{class=\"5xx\"} 1",
            "# TYPE annals_commands_total counter",
            "# TYPE annals_command_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
        }
    }

    #[test]
    fn batches_fill_the_journal_histograms() {
        let m = Metrics::new(&Aggregates::domain());
        let observer = m.batch_observer();
        for appends in [1, 3, 3, 100] {
            observer.observe(&BatchCommitted::new(
                appends,
                appends,
                Duration::from_micros(700),
            ));
        }
        let text = m.render(None, None);
        for line in [
            "annals_journal_batch_appends_bucket{le=\"1\"} 1",
            "annals_journal_batch_appends_bucket{le=\"4\"} 3",
            "annals_journal_batch_appends_count 4",
            "annals_journal_batch_appends_sum 107",
            "annals_journal_commit_seconds_bucket{le=\"0.001\"} 4",
            "# TYPE annals_journal_commit_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
        }
    }

    #[test]
    fn a_command_type_nobody_registered_counts_as_invalid() {
        let m = Metrics::new(&Aggregates::domain());
        m.command("Order", "Nonsense", Outcome::Invalid, Duration::ZERO);
        m.command("Unknown", "CreateOrder", Outcome::Ok, Duration::ZERO);
        let text = m.render(None, None);
        assert!(text.lines().any(|l| l
            == "annals_commands_total{aggregate=\"Order\",command=\"invalid\",outcome=\"invalid\"} 1"));
        assert!(!text.contains("Nonsense") && !text.contains("Unknown"));
    }
}
