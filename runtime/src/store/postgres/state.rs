//! The read side's state on PostgreSQL: one table of keyed records by space, one transaction
//! per [`Changes`] set.
//!
//! A commit is a transaction (`synchronous_commit = on`), so it is atomic and durable when
//! [`StateStore::commit`] returns — stronger than the contract asks (durable with the log's
//! next sync). Its deletions and upserts each go in one statement over arrays, in key order (the
//! order a [`Changes`] set iterates in), so two commits that share keys lock them in the same
//! order; a deadlock PostgreSQL breaks anyway, or a unique key taken by a concurrent commit,
//! redoes the transaction. Nothing is held in memory between commits, so there is nothing to
//! bound but the commit itself (its builder's page).
//!
//! A commit fenced by a subscriber's lease ([`Changes::fence`]) first renews the owner row
//! *if* its epoch is still the commit's; if another node took the subscriber over, nothing is
//! written and the commit fails with [`StoreError::Fenced`] (see [`super::lease`]).

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::lease::Leases;
use super::{db_error, prepared, Pg};
use crate::store::state::{Changes, Records, StateStore, SPACE_LEN_MAX};
use crate::store::{Lease, Owner, StoreError};

/// Attempts at a commit that PostgreSQL aborted for a deadlock or a concurrent insert.
const COMMIT_ATTEMPTS: u32 = 8;

/// The PostgreSQL state store: one table of keyed records by space, one transaction per commit
/// (see the [backend's docs](super)).
#[derive(Debug)]
pub struct PgState {
    pg: Arc<Pg>,
    /// Spaces known to be recorded in `annals_spaces`: their commits skip that insert.
    known_spaces: RwLock<HashSet<String>>,
    /// Which subscribers this node owns.
    leases: Arc<Leases>,
}

impl PgState {
    pub(super) fn new(pg: Arc<Pg>, leases: Leases) -> PgState {
        PgState {
            pg,
            known_spaces: RwLock::new(HashSet::new()),
            leases: Arc::new(leases),
        }
    }

    /// Subscribers this node owns now, and how many times it took ownership.
    pub(super) fn ownership(&self) -> (usize, u64) {
        self.leases.ownership()
    }

    /// Ends this node's lease session: the subscribers it owned are free for other nodes.
    pub(super) fn close_leases(&self) {
        let leases = self.leases.clone();
        let _ = self.pg.block(async move {
            leases.close().await;
            Ok(())
        });
    }

    fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send,
    {
        let pg = self.pg.clone();
        self.pg.block(async move {
            let client = pg.client().await?;
            work(client).await
        })
    }
}

fn check_space(space: &str) -> Result<(), StoreError> {
    if space.is_empty() || space.len() > SPACE_LEN_MAX {
        return Err(StoreError::Io {
            op: "naming a read-side space",
            reason: format!(
                "a space name must have 1 to {SPACE_LEN_MAX} bytes, not {}",
                space.len()
            ),
        });
    }
    Ok(())
}

/// The columns of one commit.
#[derive(Default)]
struct Rows {
    put_spaces: Vec<String>,
    put_keys: Vec<Vec<u8>>,
    put_values: Vec<Vec<u8>>,
    delete_spaces: Vec<String>,
    delete_keys: Vec<Vec<u8>>,
    new_spaces: Vec<String>,
    /// The subscriber and epoch the commit is fenced by.
    fence: Option<(String, i64)>,
}

impl StateStore for PgState {
    fn get(&self, space: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (space, key) = (space.to_string(), key.to_vec());
        self.run(move |client| async move {
            let row = client
                .query_opt(
                    &prepared(
                        &client,
                        "SELECT value FROM annals_state WHERE space = $1 AND key = $2",
                    )
                    .await?,
                    &[&space, &key],
                )
                .await
                .map_err(|e| db_error("reading the read side", &e))?;
            row.map(|row| super::get(&row, 0, "annals_state.value"))
                .transpose()
        })
    }

    fn range(
        &self,
        space: &str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Records, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut sql = String::from("SELECT key, value FROM annals_state WHERE space = $1");
        let mut params: Vec<Vec<u8>> = Vec::new();
        for (bound, included, excluded) in [(from, ">=", ">"), (to, "<=", "<")] {
            let (op, key) = match bound {
                Bound::Included(key) => (included, key),
                Bound::Excluded(key) => (excluded, key),
                Bound::Unbounded => continue,
            };
            params.push(key.to_vec());
            sql.push_str(&format!(" AND key {op} ${}", params.len() + 1));
        }
        sql.push_str(&format!(" ORDER BY key LIMIT ${}", params.len() + 2));
        let space = space.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |client| async move {
            let mut args: Vec<&(dyn ToSql + Sync)> = vec![&space];
            args.extend(params.iter().map(|p| p as &(dyn ToSql + Sync)));
            args.push(&limit);
            let rows = client
                .query(&prepared(&client, &sql).await?, &args)
                .await
                .map_err(|e| db_error("reading the read side", &e))?;
            rows.iter()
                .map(|row| {
                    Ok((
                        super::get(row, 0, "annals_state.key")?,
                        super::get(row, 1, "annals_state.value")?,
                    ))
                })
                .collect()
        })
    }

    fn commit(&self, changes: Changes) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut rows = Rows::default();
        if let Some((name, epoch)) = changes.fenced_by() {
            rows.fence = Some((name.to_string(), super::to_i64(epoch)?));
        }
        {
            let known = self.known_spaces.read();
            for space in changes.spaces() {
                check_space(space)?;
                if !known.contains(space) {
                    rows.new_spaces.push(space.to_string());
                }
            }
        }
        for (space, key, value) in changes.iter() {
            match value {
                Some(value) => {
                    rows.put_spaces.push(space.to_string());
                    rows.put_keys.push(key.to_vec());
                    rows.put_values.push(value.to_vec());
                }
                None => {
                    rows.delete_spaces.push(space.to_string());
                    rows.delete_keys.push(key.to_vec());
                }
            }
        }
        let rows = Arc::new(rows);
        let new_spaces = rows.new_spaces.clone();
        self.run(move |mut client| async move {
            let mut attempt = 1;
            loop {
                match commit_once(&mut client, &rows).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => {
                        let (name, epoch) = rows.fence.clone().unwrap_or_default();
                        return Err(StoreError::Fenced {
                            name,
                            epoch: epoch.unsigned_abs(),
                        });
                    }
                    Err(e) if attempt < COMMIT_ATTEMPTS && retryable(&e) => {
                        tracing::debug!(attempt, error = %e, "redoing a read-side commit");
                        tokio::time::sleep(Duration::from_millis(u64::from(attempt))).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(db_error("committing the read side", &e)),
                }
            }
        })?;
        if !new_spaces.is_empty() {
            self.known_spaces.write().extend(new_spaces);
        }
        Ok(())
    }

    fn spaces(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_string();
        self.run(move |client| async move {
            let rows = client
                .query(
                    &prepared(&client,
                    "SELECT space FROM annals_spaces WHERE starts_with(space, $1) ORDER BY space"
                    ).await?,
                    &[&prefix],
                )
                .await
                .map_err(|e| db_error("listing the read side's spaces", &e))?;
            rows.iter()
                .map(|row| super::get(row, 0, "annals_spaces.space"))
                .collect()
        })
    }

    fn claim(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let (leases, name) = (self.leases.clone(), name.to_string());
        self.pg.block(async move { leases.claim(&name).await })
    }

    fn release(&self, name: &str) -> Result<(), StoreError> {
        let (leases, name) = (self.leases.clone(), name.to_string());
        self.pg.block(async move { leases.release(&name).await })
    }

    fn owners(&self) -> Result<Vec<Owner>, StoreError> {
        let leases = self.leases.clone();
        self.pg.block(async move { leases.owners().await })
    }

    fn drop_space(&self, space: &str) -> Result<(), StoreError> {
        check_space(space)?;
        self.known_spaces.write().remove(space);
        let space = space.to_string();
        self.run(move |mut client| async move {
            let tx = client
                .transaction()
                .await
                .map_err(|e| db_error("dropping a read-side space", &e))?;
            tx.execute("DELETE FROM annals_state WHERE space = $1", &[&space])
                .await
                .map_err(|e| db_error("dropping a read-side space", &e))?;
            tx.execute("DELETE FROM annals_spaces WHERE space = $1", &[&space])
                .await
                .map_err(|e| db_error("dropping a read-side space", &e))?;
            tx.commit()
                .await
                .map_err(|e| db_error("dropping a read-side space", &e))
        })
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// One attempt at a commit: `Ok(false)` if its fence refused it (nothing written).
async fn commit_once(
    client: &mut deadpool_postgres::Object,
    rows: &Rows,
) -> Result<bool, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    if let Some((name, epoch)) = &rows.fence {
        // First, so that the owner row's lock orders this commit against a takeover: one that
        // bumped the epoch before makes this match nothing.
        let now = i64::try_from(crate::types::Timestamp::now().0).unwrap_or(i64::MAX);
        let renew = tx
            .prepare_cached(
                "UPDATE annals_owners SET renewed_at = $3 WHERE name = $1 AND epoch = $2",
            )
            .await?;
        let renewed = tx.execute(&renew, &[name, epoch, &now]).await?;
        if renewed == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
    }
    if !rows.delete_keys.is_empty() {
        let statement = tx
            .prepare_cached(
                "DELETE FROM annals_state s USING unnest($1::text[], $2::bytea[]) AS d(space, key) \
                 WHERE s.space = d.space AND s.key = d.key",
            )
            .await?;
        tx.execute(&statement, &[&rows.delete_spaces, &rows.delete_keys])
            .await?;
    }
    if !rows.put_keys.is_empty() {
        let statement = tx
            .prepare_cached(
                "INSERT INTO annals_state (space, key, value) \
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[]) \
                 ON CONFLICT (space, key) DO UPDATE SET value = EXCLUDED.value",
            )
            .await?;
        tx.execute(
            &statement,
            &[&rows.put_spaces, &rows.put_keys, &rows.put_values],
        )
        .await?;
    }
    if !rows.new_spaces.is_empty() {
        tx.execute(
            "INSERT INTO annals_spaces (space) SELECT * FROM unnest($1::text[]) \
             ON CONFLICT DO NOTHING",
            &[&rows.new_spaces],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}
