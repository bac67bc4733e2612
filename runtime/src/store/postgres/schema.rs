//! The PostgreSQL schema: its tables, and the versioned migrations that create them.
//!
//! The database records its schema version in `annals_schema`. Opening a store takes a
//! transaction-scoped advisory lock (so nodes starting together migrate once), creates the
//! schema if the database has none, applies the migrations after its version, and refuses a
//! database whose version is newer than this build knows ([`StoreError::Incompatible`]): an
//! older binary must never write into a layout it does not understand.
//!
//! # Tables
//! - `annals_head`: one row, the last position given out. Taking the next positions updates
//!   it, so its row lock is held from that update to the commit: commits that write events are
//!   serialized *through the commit*, and positions are dense and in commit order. A reader
//!   that sees position `p` therefore sees every position below it (see the
//!   [backend's docs](super)).
//! - `annals_streams`: each stream's version, locked (`FOR UPDATE`) by the append that checks it.
//! - `annals_events`: one row per event, keyed by position, unique by (stream, version).
//! - `annals_commands`: each command id's outcome (committed, rejected, no events).
//! - `annals_snapshots`: snapshots by (stream, version).
//! - `annals_state` and `annals_spaces`: the read side's keyed records by space, and the
//!   names of the spaces that hold any.
//! - `annals_owners`: which node owns each subscriber, and its fencing epoch (see
//!   [`Lease`](crate::store::Lease)).

use tokio_postgres::Transaction;

use crate::store::StoreError;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// Advisory lock key under which a node migrates (any constant no other code uses).
const MIGRATION_LOCK: i64 = 0x616e_6e61_6c73_0001;

/// The statements of each migration, in order: `MIGRATIONS[i]` brings version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[r"
CREATE TABLE annals_head (
    id        int    PRIMARY KEY CHECK (id = 1),
    position  bigint NOT NULL
);
INSERT INTO annals_head (id, position) VALUES (1, 0);

CREATE TABLE annals_streams (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    version        bigint NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

CREATE TABLE annals_events (
    position       bigint  PRIMARY KEY,
    aggregate_type text    NOT NULL,
    aggregate_id   text    NOT NULL,
    version        bigint  NOT NULL,
    event_id       uuid    NOT NULL,
    event_type     text    NOT NULL,
    schema_version int     NOT NULL,
    payload        bytea   NOT NULL,
    recorded_at    bigint  NOT NULL,
    command_id     text,
    correlation_id text,
    causation_id   text,
    UNIQUE (aggregate_type, aggregate_id, version)
);

CREATE TABLE annals_commands (
    command_id     text     PRIMARY KEY,
    fingerprint    bytea    NOT NULL,
    outcome        smallint NOT NULL,
    aggregate_type text     NOT NULL,
    aggregate_id   text     NOT NULL,
    version        bigint   NOT NULL,
    first_position bigint,
    event_count    int      NOT NULL,
    rejection      bytea
);

CREATE TABLE annals_snapshots (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    version        bigint NOT NULL,
    schema_version bigint NOT NULL,
    taken_at       bigint NOT NULL,
    state          bytea  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, version)
);

CREATE TABLE annals_state (
    space text  NOT NULL,
    key   bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (space, key)
);

CREATE TABLE annals_spaces (
    space text PRIMARY KEY
);

CREATE TABLE annals_owners (
    name       text   PRIMARY KEY,
    node       text   NOT NULL,
    epoch      bigint NOT NULL,
    renewed_at bigint NOT NULL
);
"];

/// Brings the schema the session's `search_path` names to [`SCHEMA_VERSION`], or refuses a
/// newer one. Runs in `tx`, which the caller commits.
pub(super) async fn migrate(tx: &Transaction<'_>, schema: &str) -> Result<(), StoreError> {
    let sql = |op: &'static str| move |e: tokio_postgres::Error| super::db_error(op, &e);
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(sql("waiting for the migration lock"))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         CREATE TABLE IF NOT EXISTS \"{schema}\".annals_schema (version int NOT NULL);"
    ))
    .await
    .map_err(sql("creating the schema"))?;
    let found: Option<i32> = tx
        .query_opt("SELECT max(version) FROM annals_schema", &[])
        .await
        .map_err(sql("reading the schema version"))?
        .and_then(|row| row.try_get::<_, Option<i32>>(0).ok().flatten());
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::Incompatible {
            reason: format!(
                "the database schema \"{schema}\" is at version {found}, newer than this build \
                 knows (version {SCHEMA_VERSION}); run a newer annals, or point it at another \
                 schema"
            ),
        });
    }
    let start = usize::try_from(found).unwrap_or(0);
    for (i, statements) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.batch_execute(statements)
            .await
            .map_err(sql("migrating the schema"))?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("DELETE FROM annals_schema", &[])
            .await
            .map_err(sql("recording the schema version"))?;
        tx.execute(
            "INSERT INTO annals_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(sql("recording the schema version"))?;
        tracing::info!(schema, version, "migrated the PostgreSQL schema");
    }
    Ok(())
}

/// Whether `schema` is a name the backend accepts: lower-case letters, digits and `_`, not
/// starting with a digit, at most 63 bytes (PostgreSQL's limit), so that it needs no quoting
/// rules beyond the double quotes it is written in.
pub(super) fn valid_schema_name(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["public", "annals", "annals_t_0a1b", "_x"] {
            assert!(valid_schema_name(good), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "Public",
            "a-b",
            "a\"b",
            "a;drop",
            &"x".repeat(64),
        ] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
    }
}
