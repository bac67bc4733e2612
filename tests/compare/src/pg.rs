//! The PostgreSQL side: where the server is, what it promises about durability, and the
//! benchmark's own schema, dropped and created again on every run so runs repeat.
//!
//! Everything the peers write lives in the schema [`SCHEMA`] of the target database, and what
//! Annals's PostgreSQL backend writes in [`ANNALS_SCHEMA`]; nothing else in that database is
//! touched, and no server setting is changed.

use std::fmt;

use anyhow::Context as _;
use sqlx::postgres::PgConnectOptions;
use tokio_postgres::{Client, NoTls};

/// The schema that holds every table of the peers.
pub(crate) const SCHEMA: &str = "annals_compare";

/// The schema of the "annals postgres" row: Annals's backend creates and migrates its tables in
/// it (a name of lower-case letters, digits and `_`, as the backend requires).
pub(crate) const ANNALS_SCHEMA: &str = "annals_compare_pg";

/// Annals's event table, in [`ANNALS_SCHEMA`].
pub(crate) const ANNALS_EVENTS_TABLE: &str = "annals_compare_pg.annals_events";

/// The server and database the peers use.
#[derive(Debug, Clone)]
pub(crate) struct PgTarget {
    /// Host name or address.
    pub(crate) host: String,
    /// TCP port.
    pub(crate) port: u16,
    /// Role to connect as.
    pub(crate) user: String,
    /// Its password; empty for trust authentication.
    pub(crate) password: String,
    /// Database.
    pub(crate) dbname: String,
}

impl PgTarget {
    /// The same target for sqlx (cqrs-es), without TLS.
    pub(crate) fn sqlx_options(&self) -> PgConnectOptions {
        let options = PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(&self.dbname)
            .ssl_mode(sqlx::postgres::PgSslMode::Disable);
        if self.password.is_empty() {
            options
        } else {
            options.password(&self.password)
        }
    }

    /// The same target as a connection string for Annals's backend (`PgOptions::new`), in the
    /// key=value form, every value quoted, so that no character of a password needs encoding.
    pub(crate) fn annals_url(&self) -> String {
        fn quoted(value: &str) -> String {
            format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
        }
        let mut url = format!(
            "host={} port={} user={} dbname={}",
            quoted(&self.host),
            self.port,
            quoted(&self.user),
            quoted(&self.dbname)
        );
        if !self.password.is_empty() {
            url.push_str(" password=");
            url.push_str(&quoted(&self.password));
        }
        url
    }

    /// An administrative connection (tokio-postgres), driven on the current runtime.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname);
        if !self.password.is_empty() {
            config.password(&self.password);
        }
        let (client, connection) = config.connect(NoTls).await.with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {}:{} (database {}, user {})",
                self.host, self.port, self.dbname, self.user
            )
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("PostgreSQL admin connection ended: {e}");
            }
        });
        Ok(client)
    }
}

/// The server settings that decide whether a committed transaction survives a crash.
#[derive(Debug, Clone)]
pub(crate) struct Durability {
    pub(crate) server_version: String,
    pub(crate) fsync: String,
    pub(crate) synchronous_commit: String,
    pub(crate) wal_sync_method: String,
    pub(crate) full_page_writes: String,
    pub(crate) commit_delay: String,
    pub(crate) data_directory: Option<String>,
}

impl Durability {
    /// Reads the settings (`data_directory` needs a superuser or `pg_read_all_settings`).
    pub(crate) async fn read(client: &Client) -> anyhow::Result<Self> {
        let show = |name: &'static str| async move {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .with_context(|| format!("cannot read the server setting {name}"))?;
            anyhow::Ok(row.get::<_, String>(0))
        };
        Ok(Durability {
            server_version: show("server_version").await?,
            fsync: show("fsync").await?,
            synchronous_commit: show("synchronous_commit").await?,
            wal_sync_method: show("wal_sync_method").await?,
            full_page_writes: show("full_page_writes").await?,
            commit_delay: show("commit_delay").await?,
            data_directory: show("data_directory").await.ok(),
        })
    }

    /// Whether a commit is acknowledged only after its WAL is on disk.
    pub(crate) fn is_durable(&self) -> bool {
        self.fsync == "on" && matches!(self.synchronous_commit.as_str(), "on" | "remote_apply")
    }

    /// The same for Annals's backend, which sets `synchronous_commit = on` on each of its
    /// sessions whatever the server's default: only `fsync` decides.
    pub(crate) fn fsync_is_on(&self) -> bool {
        self.fsync == "on"
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PostgreSQL {}: fsync={} synchronous_commit={} wal_sync_method={} \
             full_page_writes={} commit_delay={}",
            self.server_version,
            self.fsync,
            self.synchronous_commit,
            self.wal_sync_method,
            self.full_page_writes,
            self.commit_delay,
        )?;
        if let Some(dir) = &self.data_directory {
            write!(f, " data_directory={dir}")?;
        }
        Ok(())
    }
}

/// Drops the benchmark's schemas with everything in them and creates the peers' again, empty;
/// Annals's backend creates its own ([`ANNALS_SCHEMA`]) when it opens.
pub(crate) async fn reset_schema(client: &Client) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}; \
             DROP SCHEMA IF EXISTS {ANNALS_SCHEMA} CASCADE;"
        ))
        .await
        .with_context(|| format!("cannot drop and create the schemas {SCHEMA}, {ANNALS_SCHEMA}"))
}

/// Rows in `table` (schema-qualified).
pub(crate) async fn count(client: &Client, table: &str) -> anyhow::Result<u64> {
    let row = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .with_context(|| format!("cannot count the rows of {table}"))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// WAL syncs (fsync/fdatasync calls) the server has done since its statistics were reset
/// (`pg_stat_wal`, PostgreSQL 14 and later; `None` before). Server-wide: anybody else's
/// commits in the same window are counted too.
pub(crate) async fn wal_syncs(client: &Client) -> Option<u64> {
    let row = client
        .query_one("SELECT wal_sync FROM pg_stat_wal", &[])
        .await
        .ok()?;
    u64::try_from(row.get::<_, i64>(0)).ok()
}

/// Writes every dirty buffer out now, so that no peer's timed window pays for the previous
/// peer's checkpoint, and each starts with the same full-page-write cost. Needs a superuser
/// (or `pg_checkpoint`); without one the run goes on and says so.
pub(crate) async fn checkpoint(client: &Client) -> bool {
    client.batch_execute("CHECKPOINT").await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annals_url_parses_back_to_the_same_target() {
        let target = PgTarget {
            host: "127.0.0.1".to_string(),
            port: 5433,
            user: "o'neil".to_string(),
            password: r"p@ss w\rd'".to_string(),
            dbname: "test".to_string(),
        };
        let config: tokio_postgres::Config = target.annals_url().parse().expect("parses");
        assert_eq!(config.get_user(), Some("o'neil"));
        assert_eq!(config.get_password(), Some(&br"p@ss w\rd'"[..]));
        assert_eq!(config.get_dbname(), Some("test"));
        assert_eq!(config.get_ports(), &[5433]);
        let trust = PgTarget {
            password: String::new(),
            ..target
        };
        let config: tokio_postgres::Config = trust.annals_url().parse().expect("parses");
        assert_eq!(config.get_password(), None);
    }
}
