//! Command-line arguments: parsed by hand (no argument-parsing dependency to build for a
//! benchmark), every value checked, and a clear message for anything wrong.

use std::num::NonZeroUsize;
use std::str::FromStr;

use crate::pg::PgTarget;

/// The usage text printed by `--help` and after a bad argument.
pub(crate) const USAGE: &str = "\
usage: cargo run --release --manifest-path tests/compare/Cargo.toml -- [OPTIONS]

The bank workload (deposits and withdrawals with insufficient-funds rejections; one client per
aggregate, each awaiting its reply) on Annals and on its PostgreSQL-backed Rust peers.

options:
  --aggregates N        aggregates, one client each                        [default: 1000]
  --commands N          commands per aggregate                             [default: 100]
  --only LIST           comma-separated: annals (all three rows), annals-durable,
                        annals-relaxed, annals-postgres, cqrs-es, eventsourced
                                                 [default: annals,cqrs-es,eventsourced]
  --warmup N            aggregates of an untimed warm-up of 10 commands each, run on other
                        aggregates before each system's timed window (0: none)   [default: 100]
  --client-threads N    worker threads of the tokio runtime the clients and peers run on
                                                                   [default: number of cores]
  --pg-connections N    PostgreSQL connections per system: the pool size of annals postgres
                        and of cqrs-es's sqlx pool; for eventsourced, rounded up to whole
                        pools of 10 (its fixed pool size)  [default: 10, the peers' default]
  --pg-host HOST        [default: 127.0.0.1]
  --pg-port PORT        [default: 5432]
  --pg-user USER        [default: postgres]
  --pg-password PASS    [default: empty, for trust authentication]
  --pg-db NAME          [default: test]; the schemas annals_compare (the peers) and
                        annals_compare_pg (annals postgres) in it are dropped and created
                        again on every run
  -h, --help            this text";

/// Which systems to run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Selection {
    pub(crate) annals_durable: bool,
    pub(crate) annals_relaxed: bool,
    pub(crate) annals_postgres: bool,
    pub(crate) cqrs_es: bool,
    pub(crate) eventsourced: bool,
}

impl Selection {
    /// Whether any system needs PostgreSQL.
    pub(crate) fn needs_postgres(self) -> bool {
        self.annals_postgres || self.cqrs_es || self.eventsourced
    }
}

impl FromStr for Selection {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        let mut s = Selection::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "annals" => {
                    s.annals_durable = true;
                    s.annals_relaxed = true;
                    s.annals_postgres = true;
                }
                "annals-durable" => s.annals_durable = true,
                "annals-relaxed" => s.annals_relaxed = true,
                "annals-postgres" => s.annals_postgres = true,
                "cqrs-es" => s.cqrs_es = true,
                "eventsourced" => s.eventsourced = true,
                other => {
                    return Err(format!(
                        "--only: unknown system {other:?}; expected annals, annals-durable, \
                         annals-relaxed, annals-postgres, cqrs-es or eventsourced"
                    ))
                }
            }
        }
        if !(s.annals_durable
            || s.annals_relaxed
            || s.annals_postgres
            || s.cqrs_es
            || s.eventsourced)
        {
            return Err("--only: name at least one system".to_string());
        }
        Ok(s)
    }
}

/// The validated arguments.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) aggregates: NonZeroUsize,
    pub(crate) commands: NonZeroUsize,
    pub(crate) only: Selection,
    pub(crate) warmup_aggregates: usize,
    pub(crate) client_threads: NonZeroUsize,
    pub(crate) pg_connections: NonZeroUsize,
    pub(crate) pg: PgTarget,
}

/// Commands per warm-up aggregate.
pub(crate) const WARMUP_COMMANDS: usize = 10;

/// `Ok(None)`: help was asked for.
pub(crate) fn parse(raw: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let cores = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    let mut args = Args {
        aggregates: NonZeroUsize::new(1000).expect("1000 is not zero"),
        commands: NonZeroUsize::new(100).expect("100 is not zero"),
        only: "annals,cqrs-es,eventsourced".parse()?,
        warmup_aggregates: 100,
        client_threads: cores,
        pg_connections: NonZeroUsize::new(10).expect("10 is not zero"),
        pg: PgTarget {
            host: "127.0.0.1".to_string(),
            port: 5432,
            user: "postgres".to_string(),
            password: String::new(),
            dbname: "test".to_string(),
        },
    };
    let mut raw = raw.into_iter();
    while let Some(flag) = raw.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (flag, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| raw.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--aggregates" => args.aggregates = number(&flag, &value()?)?,
            "--commands" => args.commands = number(&flag, &value()?)?,
            "--only" => args.only = value()?.parse()?,
            "--warmup" => {
                let v = value()?;
                args.warmup_aggregates = v
                    .parse()
                    .map_err(|_| format!("--warmup: {v:?} is not a whole number"))?;
            }
            "--client-threads" => args.client_threads = number(&flag, &value()?)?,
            "--pg-connections" => args.pg_connections = number(&flag, &value()?)?,
            "--pg-host" => args.pg.host = value()?,
            "--pg-port" => {
                let v = value()?;
                args.pg.port = v
                    .parse()
                    .map_err(|_| format!("--pg-port: {v:?} is not a port number"))?;
            }
            "--pg-user" => args.pg.user = value()?,
            "--pg-password" => args.pg.password = value()?,
            "--pg-db" => args.pg.dbname = value()?,
            // `cargo bench`-style harness flags, if someone passes them through.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.pg_connections.get() > 1000 {
        return Err("--pg-connections: at most 1000".to_string());
    }
    Ok(Some(args))
}

fn number(flag: &str, v: &str) -> Result<NonZeroUsize, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a whole number above zero"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(args: &[&str]) -> Result<Option<Args>, String> {
        parse(args.iter().map(|a| (*a).to_string()))
    }

    #[test]
    fn defaults_are_the_issue_workload() {
        let args = parse_all(&[]).expect("valid").expect("not help");
        assert_eq!(args.aggregates.get(), 1000);
        assert_eq!(args.commands.get(), 100);
        assert!(args.only.annals_durable && args.only.annals_relaxed);
        assert!(args.only.annals_postgres);
        assert!(args.only.cqrs_es && args.only.eventsourced);
        assert!(args.only.needs_postgres());
    }

    #[test]
    fn only_selects_and_rejects_unknown_names() {
        let args = parse_all(&["--only", "annals-durable,eventsourced", "--commands=5"])
            .expect("valid")
            .expect("not help");
        assert!(args.only.annals_durable && !args.only.annals_relaxed);
        assert!(!args.only.cqrs_es && args.only.eventsourced);
        assert_eq!(args.commands.get(), 5);
        assert!(parse_all(&["--only", "axon"]).is_err());
        let sled_only = parse_all(&["--only", "annals-durable,annals-relaxed"])
            .expect("valid")
            .expect("not help");
        assert!(!sled_only.only.annals_postgres && !sled_only.only.needs_postgres());
        let pg = parse_all(&["--only", "annals-postgres"])
            .expect("valid")
            .expect("not help");
        assert!(pg.only.annals_postgres && !pg.only.annals_durable && !pg.only.annals_relaxed);
        assert!(pg.only.needs_postgres());
        assert!(parse_all(&["--aggregates", "0"]).is_err());
        assert!(parse_all(&["--commands"]).is_err());
    }
}
