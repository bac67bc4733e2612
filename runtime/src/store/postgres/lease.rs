//! Which node runs each subscriber: session advisory locks on a dedicated connection, and a
//! fencing epoch per subscriber in `annals_owners` (see [`Lease`]).
//!
//! - **Claim**: `pg_try_advisory_lock(key of the name)` on this node's *lease session*, a
//!   connection outside the pool. Advisory locks take no transaction id, so holding them
//!   never holds back anything else. If the lock is taken, the node bumps the subscriber's
//!   epoch in `annals_owners` and gets a [`Lease`] with it.
//! - **Fence**: every page commit of the owner checks, in its transaction, that the epoch is
//!   still its own (`UPDATE annals_owners … WHERE epoch = $mine`); if another node has bumped
//!   it, the commit is refused ([`StoreError::Fenced`]) and writes nothing.
//! - **Loss**: a node killed (`kill -9`) closes its socket, and PostgreSQL ends the session
//!   and frees its locks at once. A node that stops answering but keeps its socket (paused
//!   with `SIGSTOP`, a frozen VM) stops renewing: the session has
//!   `idle_session_timeout` = [`PgOptions::lease_timeout`](super::PgOptions::lease_timeout),
//!   renewed by a `SELECT 1` four times per period, so the server ends it after that long in
//!   silence. Another node's next claim (every subscriber on standby retries about once a
//!   second) then takes the lock and bumps the epoch, and when the paused node wakes up, its
//!   next commit hits the fence. A node whose lease session ends marks every lease it held
//!   invalid; its subscribers stop and claim again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{db_error, Pg};
use crate::store::{Lease, Owner, StoreError};
use crate::types::Timestamp;

/// The lease session and the leases taken on it.
#[derive(Debug)]
pub(crate) struct Leases {
    pg: Arc<Pg>,
    node: String,
    /// The store's schema, part of every lock key.
    schema: String,
    timeout: Duration,
    session: tokio::sync::Mutex<Option<Session>>,
    held: parking_lot::Mutex<HashMap<String, Lease>>,
    /// Claims granted since the store opened.
    claims: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Session {
    client: Arc<tokio_postgres::Client>,
    /// Cleared when the session ends; shared by the leases taken on it.
    valid: Arc<AtomicBool>,
}

/// The `application_name` of node `node`'s lease session (truncated by PostgreSQL to 63
/// bytes).
pub fn lease_session_name(node: &str) -> String {
    format!("annals-lease:{node}")
}

/// The advisory lock key of subscriber `name` of the store in `schema`. Advisory locks are
/// per database, not per schema: stores in two schemas of one database must not share keys.
fn lock_key(schema: &str, name: &str) -> i64 {
    let hash = xxhash_rust::xxh3::xxh3_64(format!("annals-lease:{schema}:{name}").as_bytes());
    i64::from_be_bytes(hash.to_be_bytes())
}

impl Leases {
    pub(crate) fn new(pg: Arc<Pg>, node: &str, schema: &str, timeout: Duration) -> Leases {
        Leases {
            pg,
            node: node.to_string(),
            schema: schema.to_string(),
            timeout,
            session: tokio::sync::Mutex::new(None),
            held: parking_lot::Mutex::new(HashMap::new()),
            claims: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Opens the lease session: its own connection, ended by the server after `timeout` of
    /// silence, renewed by a heartbeat.
    async fn connect(&self) -> Result<Session, StoreError> {
        let mut config = self.pg.config.clone();
        // Named after the node, so that an operator (or a test) can find it.
        config.application_name(lease_session_name(&self.node));
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| db_error("opening the lease session", &e))?;
        let valid = Arc::new(AtomicBool::new(true));
        tokio::spawn({
            let valid = valid.clone();
            async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "the lease session with PostgreSQL ended");
                }
                valid.store(false, Ordering::Release);
            }
        });
        let millis = self.timeout.as_millis().max(1);
        client
            .batch_execute(&format!("SET idle_session_timeout = {millis}"))
            .await
            .map_err(|e| db_error("setting up the lease session", &e))?;
        let client = Arc::new(client);
        tokio::spawn({
            let (client, valid) = (client.clone(), valid.clone());
            let beat = self.timeout / 4;
            async move {
                loop {
                    tokio::time::sleep(beat).await;
                    if !valid.load(Ordering::Acquire) {
                        return;
                    }
                    if client.simple_query("SELECT 1").await.is_err() {
                        valid.store(false, Ordering::Release);
                        return;
                    }
                }
            }
        });
        Ok(Session { client, valid })
    }

    /// See [`StateStore::claim`](crate::store::StateStore::claim).
    pub(crate) async fn claim(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let mut session = self.session.lock().await;
        let alive = session
            .as_ref()
            .is_some_and(|s| s.valid.load(Ordering::Acquire) && !s.client.is_closed());
        if !alive {
            // The locks of a session that ended are gone; so are the leases taken on it.
            self.held.lock().clear();
            *session = Some(self.connect().await?);
        }
        let Some(current) = session.as_ref() else {
            return Err(StoreError::Closed);
        };
        let already = self.held.lock().contains_key(name);
        if !already {
            let row = current
                .client
                .query_one(
                    "SELECT pg_try_advisory_lock($1)",
                    &[&lock_key(&self.schema, name)],
                )
                .await
                .map_err(|e| db_error("claiming a subscriber", &e))?;
            let locked: bool = super::get(&row, 0, "pg_try_advisory_lock")?;
            if !locked {
                return Ok(None);
            }
        }
        let now = super::to_i64(Timestamp::now().0)?;
        let client = self.pg.client().await?;
        let row = client
            .query_one(
                "INSERT INTO annals_owners (name, node, epoch, renewed_at) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (name) DO UPDATE \
                   SET node = EXCLUDED.node, epoch = annals_owners.epoch + 1, \
                       renewed_at = EXCLUDED.renewed_at \
                 RETURNING epoch",
                &[&name, &self.node, &now],
            )
            .await
            .map_err(|e| db_error("taking a subscriber's epoch", &e))?;
        let epoch = super::to_u64(super::get(&row, 0, "annals_owners.epoch")?)?;
        let lease = Lease::new(epoch, current.valid.clone());
        self.held.lock().insert(name.to_string(), lease.clone());
        self.claims.fetch_add(1, Ordering::Relaxed);
        tracing::info!(subscriber = name, node = %self.node, epoch, "this node owns the subscriber now");
        Ok(Some(lease))
    }

    /// Leases held now (those of a session that ended count until the next claim notices),
    /// and claims granted since the store opened.
    pub(crate) fn ownership(&self) -> (usize, u64) {
        let held = self
            .held
            .lock()
            .values()
            .filter(|lease| lease.is_valid())
            .count();
        (held, self.claims.load(Ordering::Relaxed))
    }

    /// See [`StateStore::release`](crate::store::StateStore::release).
    pub(crate) async fn release(&self, name: &str) -> Result<(), StoreError> {
        if self.held.lock().remove(name).is_none() {
            return Ok(());
        }
        let session = self.session.lock().await;
        if let Some(current) = session.as_ref() {
            if current.valid.load(Ordering::Acquire) {
                current
                    .client
                    .query_one(
                        "SELECT pg_advisory_unlock($1)",
                        &[&lock_key(&self.schema, name)],
                    )
                    .await
                    .map_err(|e| db_error("releasing a subscriber", &e))?;
            }
        }
        drop(session);
        // Released, not deleted: the epoch must keep growing, or a fenced-out owner of an
        // earlier epoch could match a new one.
        let client = self.pg.client().await?;
        client
            .execute(
                "UPDATE annals_owners SET node = '' WHERE name = $1 AND node = $2",
                &[&name, &self.node],
            )
            .await
            .map_err(|e| db_error("releasing a subscriber", &e))?;
        Ok(())
    }

    /// Ends the lease session: every lock it held is released.
    pub(crate) async fn close(&self) {
        self.held.lock().clear();
        if let Some(session) = self.session.lock().await.take() {
            // The heartbeat holds the connection until its next beat: free the locks now.
            let _ = session
                .client
                .simple_query("SELECT pg_advisory_unlock_all()")
                .await;
            session.valid.store(false, Ordering::Release);
        }
    }

    /// See [`StateStore::owners`](crate::store::StateStore::owners).
    pub(crate) async fn owners(&self) -> Result<Vec<Owner>, StoreError> {
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT name, node, epoch, renewed_at FROM annals_owners WHERE node <> '' \
                 ORDER BY name",
                &[],
            )
            .await
            .map_err(|e| db_error("reading the subscribers' owners", &e))?;
        rows.iter()
            .map(|row| {
                Ok(Owner {
                    name: super::get(row, 0, "annals_owners.name")?,
                    node: super::get(row, 1, "annals_owners.node")?,
                    epoch: super::to_u64(super::get(row, 2, "annals_owners.epoch")?)?,
                    renewed_at: Timestamp(super::to_u64(super::get(
                        row,
                        3,
                        "annals_owners.renewed_at",
                    )?)?),
                })
            })
            .collect()
    }
}
