//! eventsourced with eventsourced-postgres: the bank account as an `EventSourced` entity.
//!
//! Like Annals, eventsourced keeps each entity in memory in its own task and handles its
//! commands one at a time; unlike Annals, the entity has to be spawned by the caller before it
//! takes commands (this benchmark spawns all of them before the clock starts), and every
//! accepted command is one autocommitted `INSERT` of one event through a bb8 pool
//! (eventsourced-postgres's pool: 10 connections, checked with an empty query on every
//! checkout, the `INSERT` prepared on every call). The optimistic lock is the primary key
//! (seq_no, id). Events are JSON (`SerdeJsonBinarize`), no snapshots (`NoopSnapshotStore`):
//! an entity lives for the whole run, so a snapshot would only add writes.

use std::num::NonZeroUsize;

use annals::Aggregate as _;
use annals_domain::bank::{Account, AccountCommand, AccountEvent, AccountRejection};
use eventsourced::binarize::serde_json::SerdeJsonBinarize;
use eventsourced::snapshot_store::noop::NoopSnapshotStore;
use eventsourced::{Command, CommandEffect, EntityRef, EventSourced, EventSourcedExt as _};
use eventsourced_postgres::{PostgresEventLog, PostgresEventLogConfig};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::pg::{PgTarget, SCHEMA};
use crate::workload::{Outcome, Peer};

/// Connections in one eventsourced-postgres pool: bb8's default, which
/// `PostgresEventLog::new` does not let a caller change.
pub(crate) const POOL_CONNECTIONS: u32 = 10;

/// Commands queued per entity. One client per entity keeps at most one in flight.
const COMMAND_BUFFER: NonZeroUsize = NonZeroUsize::MIN.saturating_add(15);

/// The reference domain's `Account` as an eventsourced entity: the same `decide` and `apply`
/// as Annals runs.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct EsAccount(Account);

/// An `AccountEvent`, stored as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct EsEvent(AccountEvent);

impl EventSourced for EsAccount {
    type Id = Uuid;
    type Event = EsEvent;
    const TYPE_NAME: &'static str = "Account";

    fn handle_event(mut self, event: EsEvent) -> Self {
        self.0.apply(&event.0);
        self
    }
}

/// An `AccountCommand` for an eventsourced entity; the reply is the new balance.
#[derive(Debug)]
pub(crate) struct EsCommand(AccountCommand);

impl Command<EsAccount> for EsCommand {
    type Reply = u64;
    type Error = AccountRejection;

    fn handle_command(
        self,
        _id: &Uuid,
        state: &EsAccount,
    ) -> CommandEffect<EsAccount, u64, AccountRejection> {
        match state.0.decide(&self.0) {
            Err(rejection) => CommandEffect::reject(rejection),
            Ok(events) => {
                // eventsourced persists at most one event per command; the bank account
                // never emits more.
                let mut events = events.into_iter();
                match (events.next(), events.next()) {
                    (None, _) => CommandEffect::reply(state.0.balance),
                    (Some(event), None) => {
                        CommandEffect::emit_and_reply(EsEvent(event), |s: &EsAccount| s.0.balance)
                    }
                    (Some(_), Some(_)) => {
                        panic!("a bank command emitted two events; eventsourced stores one")
                    }
                }
            }
        }
    }
}

/// Spawned entities over one or more event-log pools.
#[derive(Debug)]
pub(crate) struct EventsourcedPeer {
    entities: Vec<EntityRef<EsAccount>>,
}

/// The uuid of aggregate number `aggregate` (the event log's id column is a `uuid`).
fn id(aggregate: usize) -> Uuid {
    Uuid::from_u128(u128::try_from(aggregate).expect("usize fits in u128") + 1)
}

impl EventsourcedPeer {
    /// Creates the events table (the crate's own `setup`), opens `pools` event logs of
    /// [`POOL_CONNECTIONS`] connections each, and spawns `aggregates` entities spread over them.
    ///
    /// The event log's queries name the table `events` unqualified, so its connections are
    /// opened with `search_path` set to the benchmark's schema; the crate's config has no
    /// field for options, so they ride after `sslmode` in the key=value string it builds.
    pub(crate) async fn open(
        target: &PgTarget,
        pools: usize,
        aggregates: usize,
    ) -> anyhow::Result<Self> {
        let config = PostgresEventLogConfig {
            host: target.host.clone(),
            port: target.port,
            user: target.user.clone(),
            // An empty value would swallow the next key=value pair when the crate formats it.
            password: if target.password.is_empty() {
                "''".to_string()
            } else {
                target.password.clone()
            },
            dbname: target.dbname.clone(),
            sslmode: format!("disable options='-c search_path={SCHEMA}'"),
            setup: true,
            ..PostgresEventLogConfig::default()
        };
        let mut logs = Vec::with_capacity(pools);
        for _ in 0..pools.max(1) {
            logs.push(PostgresEventLog::<Uuid>::new(config.clone()).await?);
        }
        let mut entities = Vec::with_capacity(aggregates);
        for aggregate in 0..aggregates {
            let log = logs[aggregate % logs.len()].clone();
            let entity = EsAccount::default()
                .entity()
                .spawn(
                    id(aggregate),
                    None,
                    COMMAND_BUFFER,
                    log,
                    NoopSnapshotStore::<Uuid>::new(),
                    SerdeJsonBinarize,
                )
                .await?;
            entities.push(entity);
        }
        Ok(EventsourcedPeer { entities })
    }
}

impl Peer for EventsourcedPeer {
    async fn execute(&self, aggregate: usize, command: AccountCommand) -> anyhow::Result<Outcome> {
        match self.entities[aggregate]
            .handle_command(EsCommand(command))
            .await?
        {
            Ok(_) => Ok(Outcome::Accepted),
            Err(_) => Ok(Outcome::Rejected),
        }
    }
}
