//! Which store an administrative command works on, and opening it: the sled database in a data
//! directory, or a PostgreSQL schema.
//!
//! The store comes from the same configuration `annals serve` reads — `--config FILE`, the
//! `ANNALS_*` environment, `--set SECTION.KEY=VALUE` — with `--data-dir DIR` for
//! `store.data_dir`, as before. The sled backend (the default) needs the directory named
//! explicitly (`--data-dir`, or `store.data_dir` from a file, a variable or `--set`): the
//! commands do not fall back on `./data`. With `store.backend = "postgres"` they work on
//! `store.postgres_schema` in the database at `store.postgres_url`, and `--data-dir` is a
//! usage error.
//!
//! # PostgreSQL
//! Opening a PostgreSQL store creates its schema and tables when they are missing, so
//! `verify`, `export` and `stats` first look for the schema's `annals_schema` table (the table
//! in which the store records its layout version) and refuse a schema without one, as they
//! refuse a directory without a store: a misspelt schema name is reported, not created. A
//! schema written by a newer build is refused by the store itself, untouched.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annals::store::postgres::redacted_url;
use annals::store::sled::{IntegrityCheck, SledOptions, SledStore};
use annals::store::{EventStore, PgOptions, PgStore, StateStore, StoreError};
use annals_config::flags::UsageError;
use annals_config::{Config, Origin, StoreBackend};

use super::{damaged, usage};
use crate::cli::ConfigArgs;

/// Where the store of `annals verify`, `export`, `import` and `stats` is: the flags of
/// [`ConfigArgs`], shared by the four commands, with their help worded for a store.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(
    mut_arg("data_dir", |arg| arg.help(
        "The data directory of the sled store (`store.data_dir`; the store of `annals serve \
         --data-dir`)"
    )),
    mut_arg("config", |arg| arg.help(
        "A TOML configuration file, as `annals serve --config` reads it (its `[store]` \
         section names the store)"
    )),
    mut_arg("set", |arg| arg.help(
        "Sets a configuration key, such as `--set store.backend=postgres --set \
         store.postgres_url=postgres://USER:PASSWORD@HOST/DATABASE`; repeatable, applied last"
    )),
)]
pub struct StoreArgs {
    /// `--config`, `--data-dir`, `--set`.
    #[command(flatten)]
    pub config: ConfigArgs,
}

impl StoreArgs {
    /// The store these flags name, through the configuration (file, environment, flags).
    pub(super) fn target(&self) -> Result<Target, UsageError> {
        let config = self.config.load(Vec::new())?;
        Target::of(&config, self.config.data_dir.is_some())
    }
}

/// The store a command works on.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// The sled store in this data directory.
    Sled(PathBuf),
    /// A PostgreSQL schema.
    Postgres(PgOptions),
}

impl Target {
    /// The store `config` names; `data_dir_flag`: whether `--data-dir` was given.
    fn of(config: &Config, data_dir_flag: bool) -> Result<Target, UsageError> {
        match config.store.backend {
            StoreBackend::Postgres if data_dir_flag => Err(UsageError(format!(
                "--data-dir names a sled store, but store.backend is \"postgres\" (from {}): \
                 drop --data-dir to use {}, or set store.backend=sled",
                config.origin("store.backend"),
                describe_pg(&config.store.pg_options())
            ))),
            StoreBackend::Postgres => Ok(Target::Postgres(config.store.pg_options())),
            _ if *config.origin("store.data_dir") == Origin::Default => Err(UsageError(
                "name the data directory: --data-dir DIR (or store.data_dir in --config, \
                 ANNALS_STORE_DATA_DIR or --set store.data_dir=DIR); for PostgreSQL, \
                 --set store.backend=postgres --set store.postgres_url=…"
                    .to_owned(),
            )),
            _ => Ok(Target::Sled(config.store.data_dir.clone())),
        }
    }

    /// How messages name the store: the directory, or the schema and the URL without its
    /// password.
    pub(super) fn place(&self) -> String {
        match self {
            Target::Sled(dir) => dir.display().to_string(),
            Target::Postgres(options) => describe_pg(options),
        }
    }
}

fn describe_pg(options: &PgOptions) -> String {
    format!(
        "PostgreSQL schema {} at {}",
        options.schema,
        redacted_url(&options.url)
    )
}

/// An open store of either backend, and how messages name it.
#[derive(Debug)]
pub(super) struct Store {
    backend: Backend,
    place: String,
}

#[derive(Debug)]
enum Backend {
    Sled(SledStore),
    Postgres(PgStore),
}

impl Store {
    /// The log.
    pub(super) fn log(&self) -> &dyn EventStore {
        match &self.backend {
            Backend::Sled(store) => store,
            Backend::Postgres(store) => store,
        }
    }

    /// The read side's state.
    pub(super) fn state(&self) -> Arc<dyn StateStore> {
        match &self.backend {
            Backend::Sled(store) => store.state(),
            Backend::Postgres(store) => store.state(),
        }
    }

    /// The stored outcomes of commands that wrote no event, in command-id order, after
    /// `after`, at most `limit` (what an export writes beside the events).
    pub(super) fn outcomes_without_events(
        &self,
        after: Option<&annals::CommandId>,
        limit: usize,
    ) -> Result<Vec<(annals::CommandId, annals::store::StoredOutcome)>, annals::store::StoreError>
    {
        match &self.backend {
            Backend::Sled(store) => store.outcomes_without_events(after, limit),
            Backend::Postgres(store) => store.outcomes_without_events(after, limit),
        }
    }

    /// Restores a rejection or no-event outcome from an export, at the version it was recorded
    /// at.
    pub(super) fn restore_outcome(
        &self,
        id: &annals::CommandId,
        outcome: &annals::store::StoredOutcome,
    ) -> Result<(), annals::store::AppendError> {
        match &self.backend {
            Backend::Sled(store) => store.restore_outcome(id, outcome),
            Backend::Postgres(store) => store.restore_outcome(id, outcome),
        }
    }

    /// The sled store, for what only sled has (its trees, its recovery report).
    pub(super) fn sled(&self) -> Option<&SledStore> {
        match &self.backend {
            Backend::Sled(store) => Some(store),
            Backend::Postgres(_) => None,
        }
    }

    /// The directory, or the PostgreSQL schema and URL (password hidden).
    pub(super) fn place(&self) -> &str {
        &self.place
    }

    /// What to do to start again from an empty store: remove the directory, or drop the
    /// schema.
    pub(super) fn how_to_empty(&self) -> String {
        match &self.backend {
            Backend::Sled(_) => format!("remove {}", self.place),
            Backend::Postgres(store) => format!(
                "drop the schema (DROP SCHEMA \"{}\" CASCADE)",
                store.options().schema
            ),
        }
    }

    /// The backend's name, as `store.backend` writes it.
    pub(super) fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sled(_) => StoreBackend::Sled.name(),
            Backend::Postgres(_) => StoreBackend::Postgres.name(),
        }
    }
}

/// Whether the target holds a store, checked before anything opens it (opening would create
/// one): a directory with a sled database, a schema with Annals' tables. Refused (exit 2)
/// otherwise, naming what is missing.
pub(super) fn require_store(target: &Target) -> anyhow::Result<()> {
    match target {
        Target::Sled(dir) => require_sled_store(dir),
        Target::Postgres(options) => {
            if postgres_holds_store(options)? {
                Ok(())
            } else {
                Err(usage(format!(
                    "{} holds no Annals store (no table {}.annals_schema); nothing was created",
                    describe_pg(options),
                    options.schema
                )))
            }
        }
    }
}

/// Opens the target's store, running its recovery and (sled) the integrity `check`. A sled
/// store locked by another process and an unusable URL or schema name are usage errors
/// (exit 2); damage is an error naming the record, and so is a database that cannot be
/// reached or holds a newer layout (exit 1).
pub(super) fn open(target: &Target, check: IntegrityCheck) -> anyhow::Result<Store> {
    let place = target.place();
    let backend = match target {
        Target::Sled(dir) => {
            let options = SledOptions::new(dir).with_integrity_check(check);
            Backend::Sled(SledStore::open(options).map_err(|e| match e {
                StoreError::Locked { .. } => usage(format!(
                    "{place} is in use by another process (a running `annals serve`?): stop it \
                     first, or use the HTTP API"
                )),
                e @ StoreError::Corrupt { .. } => damaged(&place, &e),
                e => anyhow::Error::new(e).context(format!("cannot open the store in {place}")),
            })?)
        }
        Target::Postgres(options) => {
            Backend::Postgres(PgStore::open(options.clone()).map_err(|e| match e {
                e @ StoreError::Config { .. } => usage(format!("{place}: {e}")),
                e @ StoreError::Corrupt { .. } => damaged(&place, &e),
                e => anyhow::anyhow!("cannot open the store ({place}): {}", one_line(&e)),
            })?)
        }
    };
    Ok(Store { backend, place })
}

/// Shuts the store down (flushing it) whatever `result` is; an error of `result` wins over
/// one of the shutdown.
pub(super) fn close<T>(store: &Store, result: anyhow::Result<T>) -> anyhow::Result<T> {
    let closed = store.log().shutdown();
    let value = result?;
    closed.map_err(|e| {
        anyhow::Error::new(e).context(format!("cannot close the store in {}", store.place()))
    })?;
    Ok(value)
}

/// Whether `dir` holds a sled database: the files sled writes when it creates one. A sled
/// database that is not an Annals store passes too (opening it would add the store's empty
/// trees); telling the two apart would need sled itself before the store opens the directory.
pub(super) fn holds_database(dir: &Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

/// Refuses (exit 2) a `dir` that is missing, not a directory or without a store, before
/// anything opens it: opening would create a store there.
fn require_sled_store(dir: &Path) -> anyhow::Result<()> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(usage(format!("{shown}: no such directory")))
        }
        Err(e) => Err(usage(format!("{shown}: {e}"))),
        Ok(meta) if !meta.is_dir() => Err(usage(format!("{shown} is not a directory"))),
        Ok(_) if !holds_database(dir) => Err(usage(format!(
            "{shown} holds no Annals store (no sled database: its files conf and db are \
             missing); nothing was created"
        ))),
        Ok(_) => Ok(()),
    }
}

/// Whether the schema holds the table in which the store records its layout version. One
/// connection of its own, closed before the store opens its pool.
pub(super) fn postgres_holds_store(options: &PgOptions) -> anyhow::Result<bool> {
    let shown = describe_pg(options);
    let mut config: tokio_postgres::Config = options.url.parse().map_err(|e| {
        usage(format!(
            "store.postgres_url {} is not a PostgreSQL URL: {e}",
            redacted_url(&options.url)
        ))
    })?;
    config.connect_timeout(options.connect_timeout);
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let schema = options.schema.clone();
    executor.block_on(async move {
        let cannot = |e: &tokio_postgres::Error| {
            anyhow::anyhow!("cannot read {shown}: {}", pg_error_text(e))
        };
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {shown}: {}", pg_error_text(&e)))?;
        let connection = tokio::spawn(connection);
        let found = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables \
                 WHERE schemaname = $1 AND tablename = 'annals_schema')",
                &[&schema],
            )
            .await
            .map_err(|e| cannot(&e))?
            .try_get::<_, bool>(0)
            .map_err(|e| cannot(&e))?;
        drop(client);
        let _ = connection.await;
        Ok(found)
    })
}

/// A PostgreSQL error in one line: the server's message (and detail), or the client's error
/// and its cause (a refused connection). Never the URL.
fn pg_error_text(e: &tokio_postgres::Error) -> String {
    let text = match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    };
    text.replace('\n', " ")
}

/// An error's message in one line.
pub(super) fn one_line(e: &dyn fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}
