//! cqrs-es 0.5 with postgres-es: the bank account as a cqrs-es `Aggregate`.
//!
//! cqrs-es keeps no aggregate in memory: every `CqrsFramework::execute` loads the aggregate
//! from PostgreSQL (with the event store used here: all its events, `ORDER BY sequence`),
//! handles the command, and commits the new events in one transaction (`BEGIN`, one `INSERT`
//! per event, `COMMIT`). A rejected command costs the load only. The optimistic lock is the
//! table's primary key (aggregate type, id, sequence).

use annals::Aggregate as _;
use annals_domain::bank::{Account, AccountCommand, AccountEvent, AccountRejection};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, CqrsFramework};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;

use crate::pg::{PgTarget, SCHEMA};
use crate::workload::{Outcome, Peer};

/// The events table, in the benchmark's own schema.
pub(crate) const EVENTS_TABLE: &str = "annals_compare.cqrs_events";
/// The snapshots table: unused by the event store, created because postgres-es's repository
/// names one.
pub(crate) const SNAPSHOTS_TABLE: &str = "annals_compare.cqrs_snapshots";

/// The tables postgres-es expects (its `db/init.sql`), in the benchmark's schema.
pub(crate) fn ddl() -> String {
    format!(
        "CREATE TABLE {SCHEMA}.cqrs_events (
             aggregate_type text NOT NULL,
             aggregate_id text NOT NULL,
             sequence bigint CHECK (sequence >= 0) NOT NULL,
             event_type text NOT NULL,
             event_version text NOT NULL,
             payload json NOT NULL,
             metadata json NOT NULL,
             PRIMARY KEY (aggregate_type, aggregate_id, sequence));
         CREATE TABLE {SCHEMA}.cqrs_snapshots (
             aggregate_type text NOT NULL,
             aggregate_id text NOT NULL,
             last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
             current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
             payload json NOT NULL,
             PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));"
    )
}

/// The reference domain's `Account`, behind cqrs-es's trait: the same `decide` and `apply`
/// as Annals runs, so every peer takes the same decisions.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct CqrsAccount(Account);

/// An `AccountEvent` with the type and version names cqrs-es stores beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct CqrsEvent(AccountEvent);

impl cqrs_es::DomainEvent for CqrsEvent {
    fn event_type(&self) -> String {
        annals::DomainEvent::event_type(&self.0).to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl cqrs_es::Aggregate for CqrsAccount {
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = CqrsEvent;
    type Error = AccountRejection;
    type Services = ();

    async fn handle(
        &mut self,
        command: AccountCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AccountRejection> {
        for event in self.0.decide(&command)? {
            sink.write(CqrsEvent(event), self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: CqrsEvent) {
        self.0.apply(&event.0);
    }
}

/// A cqrs-es framework over a PostgreSQL pool.
pub(crate) struct CqrsPeer {
    cqrs: CqrsFramework<CqrsAccount, PersistedEventStore<PostgresEventRepository, CqrsAccount>>,
    ids: Vec<String>,
    /// The framework's pool, kept to close it: the next system must find the server's
    /// connection slots free.
    pool: sqlx::PgPool,
}

impl std::fmt::Debug for CqrsPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqrsPeer")
            .field("ids", &self.ids.len())
            .finish()
    }
}

impl CqrsPeer {
    /// Connects a pool of `connections` (all opened now, so none is opened inside the timed
    /// window) and builds the framework on the event store, with no queries and no services.
    ///
    /// The event store, not the snapshot or aggregate store: it is what `postgres_cqrs` and
    /// the README build, and in cqrs-es 0.5.0 the other two apply each new event twice to the
    /// stored aggregate (`EventSink::write` applies it to the loaded aggregate, then
    /// `update_snapshot_with_events` applies it again before serializing), so their balances
    /// drift and they take different decisions: tried here, they refused no withdrawal at all.
    pub(crate) async fn open(
        target: &PgTarget,
        connections: u32,
        aggregates: usize,
    ) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .min_connections(connections)
            .connect_with(target.sqlx_options())
            .await?;
        let repo =
            PostgresEventRepository::new(pool.clone()).with_tables(EVENTS_TABLE, SNAPSHOTS_TABLE);
        let store = PersistedEventStore::new_event_store(repo);
        Ok(CqrsPeer {
            cqrs: CqrsFramework::new(store, vec![], ()),
            ids: (0..aggregates).map(|a| format!("acct-{a}")).collect(),
            pool,
        })
    }

    /// Closes every connection of the pool.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

impl Peer for CqrsPeer {
    async fn execute(&self, aggregate: usize, command: AccountCommand) -> anyhow::Result<Outcome> {
        match self.cqrs.execute(&self.ids[aggregate], command).await {
            Ok(()) => Ok(Outcome::Accepted),
            Err(AggregateError::UserError(_)) => Ok(Outcome::Rejected),
            Err(e) => Err(anyhow::anyhow!(
                "cqrs-es could not execute the command: {e}"
            )),
        }
    }
}
