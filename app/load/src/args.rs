//! The command line of `annals load` in two stages (after ripgrep): the raw arguments
//! ([`LoadArgs`], parsed by clap) and the validated [`Plan`] the harness runs. Every mistake is a
//! [`UsageError`] naming the flag, so the binary exits with code 2 before sending anything.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use annals::store::sled::Durability;
use annals::store::StoreOptions;
use annals_config::flags::{set_flags, UsageError};
use annals_config::{Config, Origin, Sources, StoreBackend};

use crate::workload::WorkloadKind;

/// The run length when neither `--duration` nor `--commands` is given.
pub(crate) const DURATION_DEFAULT: Duration = Duration::from_secs(10);
/// The longest run: a typo such as `--duration 10h` should not hold a machine for days.
const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// Most aggregates: ids and per-aggregate state of the verifier stay within memory.
const AGGREGATES_MAX: u64 = 100_000_000;
/// Most closed-loop clients, and most outstanding open-loop requests: each costs a task (and a
/// connection over HTTP).
const CLIENTS_MAX: usize = 1_000_000;
/// Most client threads.
const THREADS_MAX: usize = 256;
/// The highest rate accepted, in commands per second.
const RATE_MAX: f64 = 100_000_000.0;
/// The largest Zipf exponent accepted; beyond a few, nearly every command hits one aggregate.
const SKEW_MAX: f64 = 100.0;
/// Default bound on outstanding open-loop requests (over HTTP each holds a connection, and
/// file descriptors are often limited to 1024).
const MAX_OUTSTANDING_DEFAULT: usize = 1024;
/// Default number of closed-loop clients.
const CONCURRENCY_DEFAULT: usize = 64;
/// Flush interval of `--durability relaxed`, as in the runtime benchmark.
pub(crate) const RELAXED_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Arguments of `annals load`: drive a workload against an in-process runtime or a running
/// `annals serve`, then report throughput and latency (and, with `--verify`, check that nothing
/// acknowledged was lost or duplicated).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// `inproc` (a runtime in this process) or the base URL of a running `annals serve`, such
    /// as `http://127.0.0.1:8080`; traffic goes only to that address.
    #[arg(long, default_value = "inproc", value_name = "inproc|http://HOST:PORT")]
    pub(crate) target: String,
    /// The workload.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Bank)]
    pub(crate) workload: WorkloadKind,
    /// Number of aggregates: accounts for `bank`, customers for `orders`.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub(crate) aggregates: u64,
    /// Zipf exponent of the choice of aggregate per command (hot keys); 0 gives each client
    /// its own aggregates in turn.
    #[arg(long, default_value_t = 0.0, value_name = "S")]
    pub(crate) skew: f64,
    /// Closed loop: this many clients, each awaiting its reply before sending again (default
    /// 64).
    #[arg(long, value_name = "N", conflicts_with = "rate")]
    pub(crate) concurrency: Option<usize>,
    /// Open loop: start this many commands (sessions, for `orders`) per second, whatever the
    /// replies; latency counts from the intended send time.
    #[arg(long, value_name = "PER_SECOND")]
    pub(crate) rate: Option<f64>,
    /// Open loop: most requests outstanding at once; an arrival beyond it is not sent and is
    /// counted as unsent.
    #[arg(long, value_name = "N", requires = "rate")]
    pub(crate) max_outstanding: Option<usize>,
    /// Stop starting commands after this long (`500ms`, `10s`, `2m`; a bare number is
    /// seconds). Default 10s when `--commands` is not given either.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Stop after starting this many commands (sessions, for `orders`).
    #[arg(long, value_name = "N")]
    pub(crate) commands: Option<u64>,
    /// Give up on one request after this long (counted as failed: timeout); also the longest
    /// wait for a starting server to become ready.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// `orders`: how long to wait for the saga to decide an order (and, with `--verify`, for
    /// the saga and the read models to settle after the run).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) saga_timeout: Duration,
    /// In-process, sled: `durable` (acknowledge after the fsync) or `relaxed` (fsync every
    /// 50 ms).
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) durability: Option<DurabilityArg>,
    /// In-process, sled: open the runtime in this directory instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// In-process: a TOML configuration file, as `annals serve --config` reads it (its
    /// `[store]` and `[runtime]` sections apply; the flags of `load` win over it).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// In-process: sets a configuration key, such as `--set store.backend=postgres --set
    /// store.postgres_url=postgres://USER:PASSWORD@HOST/DATABASE`; repeatable, applied last.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// In-process: the aggregates' mailbox capacity (the runtime's default otherwise).
    #[arg(long, value_name = "N")]
    pub(crate) mailbox_capacity: Option<usize>,
    /// Client threads (default 1 in-process, up to 4 over HTTP); clients and rate are split
    /// among them.
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<usize>,
    /// Seed of the Zipf choices, so that runs repeat.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(crate) seed: u64,
    /// Prefix of every aggregate id (default: random per run, so that runs against one server
    /// do not meet each other's aggregates). Letters, digits, `-`, `_` and `.`.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) id_prefix: Option<String>,
    /// After the run, check that every acknowledged command's events are in the log exactly
    /// once, versions are contiguous, and (`orders`) every order was decided and the read
    /// models agree with the log. Exit 1 if not.
    #[arg(long)]
    pub(crate) verify: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DurabilityArg {
    /// Acknowledge after the fsync that covers the command.
    Durable,
    /// Acknowledge after the write; fsync every 50 ms.
    Relaxed,
}

/// Where the commands go.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TargetSpec {
    /// A runtime in this process.
    Inproc {
        /// The configuration of `--config` and `--set` (defaults without them): the store and
        /// the runtime, under the flags below.
        config: Box<Config>,
        /// The sled store's data directory (`None`: a temporary one). `None` on PostgreSQL.
        data_dir: Option<PathBuf>,
        /// The sled store's durability (PostgreSQL: always durable, `synchronous_commit`).
        durability: Durability,
        /// The mailbox capacity, if not the configuration's.
        mailbox_capacity: Option<NonZeroUsize>,
    },
    /// A running server.
    Http {
        /// `http://host:port`, without a trailing slash.
        base: String,
    },
}

impl TargetSpec {
    /// How the report names the target.
    pub(crate) fn name(&self) -> String {
        match self {
            TargetSpec::Inproc { .. } => "inproc".into(),
            TargetSpec::Http { base } => base.clone(),
        }
    }

    /// In-process: the store's backend, as `store.backend` writes it; `None` over HTTP.
    pub(crate) fn backend(&self) -> Option<StoreBackend> {
        match self {
            TargetSpec::Inproc { config, .. } => Some(config.store.backend),
            TargetSpec::Http { .. } => None,
        }
    }

    /// In-process: `durable` or `relaxed` (PostgreSQL is durable); `None` over HTTP.
    pub(crate) fn durability_name(&self) -> Option<&'static str> {
        match self {
            TargetSpec::Inproc { config, .. } if config.store.backend != StoreBackend::Sled => {
                Some("durable")
            }
            TargetSpec::Inproc {
                durability: Durability::Relaxed { .. },
                ..
            } => Some("relaxed"),
            TargetSpec::Inproc { .. } => Some("durable"),
            TargetSpec::Http { .. } => None,
        }
    }

    /// In-process: the store to open, `dir` standing for the data directory when none was
    /// named (a temporary one). `None` over HTTP.
    pub(crate) fn store_options(&self, dir: &std::path::Path) -> Option<StoreOptions> {
        let TargetSpec::Inproc {
            config,
            data_dir,
            durability,
            ..
        } = self
        else {
            return None;
        };
        if config.store.backend != StoreBackend::Sled {
            return Some(config.store_options());
        }
        let mut sled = config.store.sled_options();
        sled.path = data_dir.clone().unwrap_or_else(|| dir.to_path_buf());
        sled.durability = *durability;
        Some(StoreOptions::from(sled))
    }
}

/// The load shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Shape {
    /// `clients` clients, each awaiting its reply.
    Closed {
        /// Number of clients.
        clients: usize,
    },
    /// Arrivals at a fixed rate.
    Open {
        /// Commands (sessions) per second.
        rate: f64,
        /// Most outstanding sessions.
        max_outstanding: usize,
    },
}

/// A validated run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Where the commands go.
    pub(crate) target: TargetSpec,
    /// The workload.
    pub(crate) workload: WorkloadKind,
    /// Number of aggregates (at least 1).
    pub(crate) aggregates: u64,
    /// Zipf exponent (finite, at least 0).
    pub(crate) skew: f64,
    /// The load shape.
    pub(crate) shape: Shape,
    /// Stop starting commands after this long.
    pub(crate) duration: Option<Duration>,
    /// Stop after starting this many commands.
    pub(crate) commands: Option<u64>,
    /// Bound of one request.
    pub(crate) timeout: Duration,
    /// Bound of the wait for a saga decision, and of the settling before verification.
    pub(crate) saga_timeout: Duration,
    /// Client threads.
    pub(crate) threads: usize,
    /// Seed of the Zipf choices.
    pub(crate) seed: u64,
    /// Prefix of aggregate ids.
    pub(crate) id_prefix: String,
    /// Verify after the run.
    pub(crate) verify: bool,
    /// Where to write the JSON report.
    pub(crate) json: Option<PathBuf>,
    /// Hide the progress bar.
    pub(crate) quiet: bool,
}

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

impl LoadArgs {
    /// Validates the arguments into a plan.
    pub(crate) fn plan(&self) -> Result<Plan, UsageError> {
        let target = self.target_spec()?;
        if !(1..=AGGREGATES_MAX).contains(&self.aggregates) {
            return Err(usage(format!(
                "--aggregates must be from 1 to {AGGREGATES_MAX}, not {}",
                self.aggregates
            )));
        }
        if !self.skew.is_finite() || !(0.0..=SKEW_MAX).contains(&self.skew) {
            return Err(usage(format!(
                "--skew must be a number from 0 to {SKEW_MAX}, not {}",
                self.skew
            )));
        }
        let shape = self.shape()?;
        if self
            .duration
            .is_some_and(|d| d.is_zero() || d > DURATION_MAX)
        {
            return Err(usage(format!(
                "--duration must be more than 0 and at most {}h",
                DURATION_MAX.as_secs() / 3600
            )));
        }
        if self.commands == Some(0) {
            return Err(usage("--commands must be at least 1"));
        }
        for (flag, value) in [
            ("--timeout", self.timeout),
            ("--saga-timeout", self.saga_timeout),
        ] {
            if value.is_zero() || value > DURATION_MAX {
                return Err(usage(format!(
                    "{flag} must be more than 0 and at most {}h",
                    DURATION_MAX.as_secs() / 3600
                )));
            }
        }
        let default_threads = match target {
            TargetSpec::Inproc { .. } => 1,
            TargetSpec::Http { .. } => std::thread::available_parallelism()
                .map_or(1, NonZeroUsize::get)
                .min(4),
        };
        let threads = self.threads.unwrap_or(default_threads);
        if !(1..=THREADS_MAX).contains(&threads) {
            return Err(usage(format!(
                "--threads must be from 1 to {THREADS_MAX}, not {threads}"
            )));
        }
        let id_prefix = match &self.id_prefix {
            Some(prefix) => {
                let valid = !prefix.is_empty()
                    && prefix.len() <= 64
                    && prefix
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !valid {
                    return Err(usage(format!(
                        "--id-prefix must be 1 to 64 letters, digits, '-', '_' or '.', not {prefix:?}"
                    )));
                }
                prefix.clone()
            }
            None => {
                let run = uuid::Uuid::new_v4().simple().to_string();
                format!("ld{}-", &run[..8])
            }
        };
        if let Some(path) = &self.json {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            if parent.is_some_and(|p| !p.is_dir()) || path.is_dir() {
                return Err(usage(format!(
                    "--json {}: not a file in an existing directory",
                    path.display()
                )));
            }
        }
        let duration = match (self.duration, self.commands) {
            (None, None) => Some(DURATION_DEFAULT),
            (duration, _) => duration,
        };
        Ok(Plan {
            target,
            workload: self.workload,
            aggregates: self.aggregates,
            skew: self.skew,
            shape,
            duration,
            commands: self.commands,
            timeout: self.timeout,
            saga_timeout: self.saga_timeout,
            threads,
            seed: self.seed,
            id_prefix,
            verify: self.verify,
            json: self.json.clone(),
            quiet: self.quiet,
        })
    }

    fn target_spec(&self) -> Result<TargetSpec, UsageError> {
        let target = self.target.trim();
        if target == "inproc" {
            return self.inproc();
        }
        let Some(rest) = target.strip_prefix("http://") else {
            return Err(usage(if target.starts_with("https://") {
                format!("--target {target:?}: https is not supported; use http://HOST:PORT")
            } else {
                format!("--target must be `inproc` or http://HOST:PORT, not {target:?}")
            }));
        };
        let authority = rest.trim_end_matches('/');
        let valid_authority = !authority.is_empty()
            && !authority.contains(['/', '?', '#', '@', ' '])
            && authority.parse::<awc::http::uri::Authority>().is_ok();
        if !valid_authority {
            return Err(usage(format!(
                "--target {target:?} is not http://HOST:PORT (no path, query or user)"
            )));
        }
        for (flag, given) in [
            ("--data-dir", self.data_dir.is_some()),
            ("--durability", self.durability.is_some()),
            ("--mailbox-capacity", self.mailbox_capacity.is_some()),
            ("--config", self.config.is_some()),
            ("--set", !self.set.is_empty()),
        ] {
            if given {
                return Err(usage(format!(
                    "{flag} applies to --target inproc only; the server at {target} has its own configuration"
                )));
            }
        }
        Ok(TargetSpec::Http {
            base: format!("http://{authority}"),
        })
    }

    /// The in-process target: the configuration of `--config` and `--set` (never the
    /// environment: a load test touches only what its command line names), then the flags of
    /// `load` on top. The sled store goes in `--data-dir`, else in a `store.data_dir` the
    /// configuration sets, else in a temporary directory.
    fn inproc(&self) -> Result<TargetSpec, UsageError> {
        let mailbox_capacity = match self.mailbox_capacity {
            None => None,
            Some(n) => Some(
                NonZeroUsize::new(n)
                    .ok_or_else(|| usage("--mailbox-capacity must be at least 1"))?,
            ),
        };
        let sources = Sources {
            file: self.config.clone(),
            env: Vec::new(),
            flags: set_flags(&self.set)?,
        };
        let config = Config::load(&sources).map_err(|e| usage(format!("configuration: {e}")))?;
        if config.store.backend != StoreBackend::Sled {
            for (flag, given) in [
                ("--data-dir", self.data_dir.is_some()),
                ("--durability", self.durability.is_some()),
            ] {
                if given {
                    return Err(usage(format!(
                        "{flag} applies to the sled store; with store.backend={} the store is \
                         the schema store.postgres_schema at store.postgres_url",
                        config.store.backend.name()
                    )));
                }
            }
        }
        let data_dir = match &self.data_dir {
            Some(dir) => Some(dir.clone()),
            None if *config.origin("store.data_dir") != Origin::Default => {
                Some(config.store.data_dir.clone())
            }
            None => None,
        };
        let durability = match self.durability {
            Some(DurabilityArg::Durable) => Durability::Durable,
            Some(DurabilityArg::Relaxed) => Durability::Relaxed {
                flush_interval: RELAXED_FLUSH_INTERVAL,
            },
            None => config.store.sled_durability(),
        };
        Ok(TargetSpec::Inproc {
            config: Box::new(config),
            data_dir,
            durability,
            mailbox_capacity,
        })
    }

    fn shape(&self) -> Result<Shape, UsageError> {
        let Some(rate) = self.rate else {
            let clients = self.concurrency.unwrap_or(CONCURRENCY_DEFAULT);
            if !(1..=CLIENTS_MAX).contains(&clients) {
                return Err(usage(format!(
                    "--concurrency must be from 1 to {CLIENTS_MAX}, not {clients}"
                )));
            }
            return Ok(Shape::Closed { clients });
        };
        if !rate.is_finite() || rate <= 0.0 || rate > RATE_MAX {
            return Err(usage(format!(
                "--rate must be more than 0 and at most {RATE_MAX} per second, not {rate}"
            )));
        }
        let max_outstanding = self.max_outstanding.unwrap_or(MAX_OUTSTANDING_DEFAULT);
        if !(1..=CLIENTS_MAX).contains(&max_outstanding) {
            return Err(usage(format!(
                "--max-outstanding must be from 1 to {CLIENTS_MAX}, not {max_outstanding}"
            )));
        }
        Ok(Shape::Open {
            rate,
            max_outstanding,
        })
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h` or a bare number of seconds (fractions allowed).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 10s or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadArgs,
    }

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let cli = Cli::try_parse_from(std::iter::once("load").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.args.plan().map_err(|e| e.to_string())
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_run_ten_seconds_closed_loop() -> Result<(), String> {
        let plan = plan(&[])?;
        assert_eq!(plan.duration, Some(DURATION_DEFAULT));
        assert_eq!(plan.shape, Shape::Closed { clients: 64 });
        assert_eq!(plan.threads, 1);
        assert!(plan.id_prefix.starts_with("ld"));
        Ok(())
    }

    #[test]
    fn http_targets_are_validated() -> Result<(), String> {
        let p = plan(&["--target", "http://127.0.0.1:8080/"])?;
        assert_eq!(
            p.target,
            TargetSpec::Http {
                base: "http://127.0.0.1:8080".into()
            }
        );
        for bad in ["https://x:1", "ftp://x", "http://", "http://a/b", "local"] {
            assert!(plan(&["--target", bad]).is_err(), "{bad}");
        }
        let err = plan(&["--target", "http://h:1", "--durability", "relaxed"]).err();
        assert!(err.is_some_and(|e| e.contains("--durability")));
        let err = plan(&["--target", "http://h:1", "--set", "store.backend=postgres"]).err();
        assert!(err.is_some_and(|e| e.contains("--set applies to --target inproc only")));
        Ok(())
    }

    #[test]
    fn the_store_comes_from_set_under_the_flags_of_load() -> Result<(), String> {
        let dir = std::path::Path::new("/tmp/elsewhere");
        let sled = plan(&[])?;
        assert_eq!(sled.target.backend(), Some(StoreBackend::Sled));
        assert_eq!(sled.target.durability_name(), Some("durable"));
        let options = sled.target.store_options(dir).ok_or("in-process")?;
        assert_eq!(options.sled().map(|s| s.path.clone()), Some(dir.into()));

        let relaxed = plan(&[
            "--set",
            "store.durability=relaxed",
            "--durability",
            "durable",
        ])?;
        assert_eq!(
            relaxed.target.durability_name(),
            Some("durable"),
            "--durability wins"
        );
        let relaxed = plan(&["--set", "store.durability=relaxed"])?;
        assert_eq!(relaxed.target.durability_name(), Some("relaxed"));
        let named = plan(&["--set", "store.data_dir=/tmp/named"])?;
        let options = named.target.store_options(dir).ok_or("in-process")?;
        assert_eq!(
            options.sled().map(|s| s.path.clone()),
            Some("/tmp/named".into())
        );

        let url = "postgres://annals:hunter2@db:5432/events";
        let pg = plan(&[
            "--set",
            "store.backend=postgres",
            "--set",
            &format!("store.postgres_url={url}"),
            "--set",
            "store.postgres_schema=annals_load",
        ])?;
        assert_eq!(pg.target.backend(), Some(StoreBackend::Postgres));
        assert_eq!(pg.target.durability_name(), Some("durable"));
        let options = pg.target.store_options(dir).ok_or("in-process")?;
        let postgres = options.postgres().ok_or("the PostgreSQL store")?;
        assert_eq!(
            (postgres.url.as_str(), postgres.schema.as_str()),
            (url, "annals_load")
        );
        assert!(!format!("{pg:?}").contains("hunter2"), "{pg:?}");

        let err = plan(&["--set", "store.backend=postgres"]).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.contains("needs store.postgres_url")),
            "{err:?}"
        );
        let err = plan(&[
            "--set",
            "store.backend=postgres",
            "--set",
            &format!("store.postgres_url={url}"),
            "--data-dir",
            "/tmp/x",
        ])
        .err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.contains("--data-dir applies to the sled store")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn bad_numbers_are_refused() {
        for args in [
            &["--aggregates", "0"][..],
            &["--skew", "-1"],
            &["--skew", "NaN"],
            &["--concurrency", "0"],
            &["--rate", "0"],
            &["--commands", "0"],
            &["--duration", "0s"],
            &["--rate", "10", "--concurrency", "3"],
            &["--id-prefix", "a/b"],
            &["--threads", "0"],
        ] {
            assert!(plan(args).is_err(), "{args:?}");
        }
    }
}
