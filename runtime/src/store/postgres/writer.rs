//! The PostgreSQL writer: one task per node that commits queued appends in one transaction per
//! batch (group commit), with the version and command-id checks made in the database (see the
//! [backend's docs](super)).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::{db_error, to_i64, to_u64, Pg, PgHooks, Shared};
use crate::store::{
    AppendError, AppendKind, AppendReply, AppendRequest, CommitReceipt, Fingerprint, StoreError,
};
use crate::types::{Position, Version};

/// `annals_commands.outcome` of a command that committed events.
pub(super) const OUTCOME_COMMITTED: i16 = 0;
/// … of a rejected command.
pub(super) const OUTCOME_REJECTED: i16 = 1;
/// … of an accepted command that produced no events.
pub(super) const OUTCOME_NO_EVENTS: i16 = 2;

/// Times a batch is redone after a concurrent commit of another node broke a unique key (or
/// PostgreSQL broke a deadlock) before its appends are refused.
const BATCH_ATTEMPTS: u32 = 8;

/// A message to the writer.
pub(super) enum Job {
    Append(AppendRequest, AppendReply),
    /// Commit what was queued before, then stop.
    Shutdown(futures::channel::oneshot::Sender<()>),
}

/// Takes batches from `queue` and commits each in one transaction, until told to stop.
pub(super) async fn run(
    pg: Arc<Pg>,
    shared: Arc<Shared>,
    mut queue: tokio::sync::mpsc::Receiver<Job>,
    batch_max: usize,
    hooks: Arc<PgHooks>,
) {
    let mut batch: Vec<(AppendRequest, AppendReply)> = Vec::with_capacity(batch_max);
    loop {
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut stop = None;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Append(request, reply) => batch.push((request, reply)),
                Job::Shutdown(done) => {
                    stop = Some(done);
                    break;
                }
            }
            if batch.len() >= batch_max {
                break;
            }
            next = queue.try_recv().ok();
        }
        if !batch.is_empty() {
            commit(&pg, &shared, &hooks, &mut batch).await;
        }
        if let Some(done) = stop {
            let _ = done.send(());
            return;
        }
    }
}

/// Commits one batch and answers every append in it.
async fn commit(
    pg: &Pg,
    shared: &Shared,
    hooks: &PgHooks,
    batch: &mut Vec<(AppendRequest, AppendReply)>,
) {
    let requests: Vec<&AppendRequest> = batch.iter().map(|(r, _)| r).collect();
    let started = std::time::Instant::now();
    let mut attempt = 1;
    let outcome = loop {
        match try_commit(pg, hooks, &requests).await {
            Err(Failure::Retry(e)) if attempt < BATCH_ATTEMPTS => {
                shared.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(attempt, error = %e, "redoing a batch after a concurrent commit");
                // A short pause that grows, so that two nodes racing for the same keys part.
                tokio::time::sleep(Duration::from_millis(u64::from(attempt))).await;
                attempt += 1;
            }
            Err(Failure::Retry(e)) => {
                break Err(db_error("committing a batch (redone too often)", &e));
            }
            Err(Failure::Store(e)) => break Err(e),
            Ok(outcome) => break Ok(outcome),
        }
    };
    match outcome {
        Ok((answers, last)) => {
            let events: u64 = answers
                .iter()
                .filter_map(|a| a.as_ref().ok())
                .map(|r| u64::from(r.event_count))
                .sum();
            let took = started.elapsed();
            if let Some(observer) = &shared.batch_observer {
                observer.observe(&crate::store::BatchCommitted {
                    appends: batch.len() as u64,
                    events,
                    commit: took,
                });
            }
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            shared
                .commit_micros_total
                .fetch_add(micros, Ordering::Relaxed);
            shared
                .commit_micros_max
                .fetch_max(micros, Ordering::Relaxed);
            shared.batches.fetch_add(1, Ordering::Relaxed);
            shared
                .appends
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            shared.events.fetch_add(events, Ordering::Relaxed);
            shared
                .batch_appends_max
                .fetch_max(batch.len() as u64, Ordering::Relaxed);
            if let Some(last) = last {
                shared.advance_head(last);
            }
            for ((_, reply), answer) in batch.drain(..).zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, appends = batch.len(), "a batch was not committed");
            for (request, reply) in batch.drain(..) {
                let _ = reply.send(Err(refusal(&request, &e)));
            }
        }
    }
}

/// How a failed batch is answered: [`AppendError::Unchecked`] when nothing can have been
/// written (the actor's state is still right), [`AppendError::Store`] when the commit itself
/// failed and its outcome is unknown (the actor stops and reloads).
fn refusal(request: &AppendRequest, error: &StoreError) -> AppendError {
    match error {
        StoreError::Io { op, .. } if *op == COMMIT_OP => AppendError::Store(error.clone()),
        _ => AppendError::Unchecked {
            stream: request.stream.clone(),
            error: error.clone(),
        },
    }
}

const COMMIT_OP: &str = "committing a batch (its outcome is unknown)";

enum Failure {
    /// Another transaction took a key first (or a deadlock was broken): redo the batch.
    Retry(tokio_postgres::Error),
    Store(StoreError),
}

impl Failure {
    fn of(op: &'static str) -> impl Fn(tokio_postgres::Error) -> Failure {
        move |e| {
            let retry = e.code().is_some_and(|code| {
                *code == SqlState::UNIQUE_VIOLATION
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE
            });
            if retry {
                Failure::Retry(e)
            } else {
                Failure::Store(db_error(op, &e))
            }
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// The columns of the events a batch inserts.
#[derive(Default)]
struct EventRows {
    position: Vec<i64>,
    aggregate_type: Vec<String>,
    aggregate_id: Vec<String>,
    version: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<String>,
    schema_version: Vec<i32>,
    payload: Vec<Vec<u8>>,
    recorded_at: Vec<i64>,
    command_id: Vec<Option<String>>,
    correlation_id: Vec<Option<String>>,
    causation_id: Vec<Option<String>>,
}

/// The columns of the command outcomes a batch inserts.
#[derive(Default)]
struct CommandRows {
    command_id: Vec<String>,
    fingerprint: Vec<Vec<u8>>,
    outcome: Vec<i16>,
    aggregate_type: Vec<String>,
    aggregate_id: Vec<String>,
    version: Vec<i64>,
    first_position: Vec<Option<i64>>,
    event_count: Vec<i32>,
    rejection: Vec<Option<Vec<u8>>>,
}

type Answers = Vec<Result<CommitReceipt, AppendError>>;

/// One attempt at committing `requests`: the answers, in order, and the last position
/// written.
async fn try_commit(
    pg: &Pg,
    hooks: &PgHooks,
    requests: &[&AppendRequest],
) -> Result<(Answers, Option<Position>), Failure> {
    let mut client = pg.client().await?;
    let tx = client
        .transaction()
        .await
        .map_err(Failure::of("starting a transaction"))?;

    // 1. Lock the batch's streams, in key order, and read their versions and the command ids
    //    already used.
    let mut keys: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.stream.aggregate_type(), r.stream.aggregate_id()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let (types, ids): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    let lock = tx
        .prepare_cached(
            "SELECT s.aggregate_type, s.aggregate_id, s.version \
             FROM annals_streams s \
             JOIN unnest($1::text[], $2::text[]) AS w(t, i) \
               ON s.aggregate_type = w.t AND s.aggregate_id = w.i \
             ORDER BY s.aggregate_type, s.aggregate_id FOR UPDATE OF s",
        )
        .await
        .map_err(Failure::of("preparing the stream lock"))?;
    let rows = tx
        .query(&lock, &[&types, &ids])
        .await
        .map_err(Failure::of("locking the batch's streams"))?;
    let mut versions: HashMap<(String, String), u64> = HashMap::with_capacity(rows.len());
    for row in &rows {
        versions.insert(
            (
                super::get(row, 0, "annals_streams.aggregate_type")?,
                super::get(row, 1, "annals_streams.aggregate_id")?,
            ),
            to_u64(super::get(row, 2, "annals_streams.version")?)?,
        );
    }
    let command_ids: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.command.as_ref().map(|c| c.id.as_str()))
        .collect();
    let mut used: HashMap<String, Fingerprint> = HashMap::new();
    if !command_ids.is_empty() {
        let rows = tx
            .query(
                "SELECT command_id, fingerprint FROM annals_commands \
                 WHERE command_id = ANY($1::text[])",
                &[&command_ids],
            )
            .await
            .map_err(Failure::of("reading the batch's command ids"))?;
        for row in &rows {
            let id: String = super::get(row, 0, "annals_commands.command_id")?;
            let bytes: &[u8] = super::get(row, 1, "annals_commands.fingerprint")?;
            let fingerprint = Fingerprint(bytes.try_into().map_err(|_| StoreError::Corrupt {
                what: format!("the fingerprint of command {id}"),
                reason: "not 16 bytes".to_string(),
            })?);
            used.insert(id, fingerprint);
        }
    }

    // 2. Decide each append in order.
    struct Accepted {
        index: usize,
        from: Version,
        count: u32,
    }
    let mut answers: Answers = Vec::with_capacity(requests.len());
    let mut accepted: Vec<Accepted> = Vec::new();
    let mut changed: HashMap<(String, String), u64> = HashMap::new();
    let mut event_total: u64 = 0;
    for (index, request) in requests.iter().enumerate() {
        let key = (
            request.stream.aggregate_type().to_string(),
            request.stream.aggregate_id().to_string(),
        );
        let version = Version(versions.get(&key).copied().unwrap_or(0));
        if version != request.expected {
            answers.push(Err(AppendError::Conflict {
                stream: request.stream.clone(),
                expected: request.expected,
                actual: version,
            }));
            continue;
        }
        if let Some(command) = &request.command {
            if let Some(fingerprint) = used.get(command.id.as_str()) {
                answers.push(Err(AppendError::CommandIdUsed {
                    id: command.id.clone(),
                    same_command: *fingerprint == command.fingerprint,
                }));
                continue;
            }
            used.insert(command.id.as_str().to_string(), command.fingerprint);
        }
        let count = match &request.kind {
            AppendKind::Events(events) => u32::try_from(events.len()).unwrap_or(u32::MAX),
            AppendKind::Rejection(_) | AppendKind::NoEvents => 0,
        };
        if count > 0 {
            let new_version = version.0 + u64::from(count);
            versions.insert(key.clone(), new_version);
            changed.insert(key, new_version);
            event_total += u64::from(count);
        }
        accepted.push(Accepted {
            index,
            from: version,
            count,
        });
        // Filled in once positions are known.
        answers.push(Ok(CommitReceipt {
            version,
            first_position: None,
            event_count: 0,
        }));
    }
    if accepted.is_empty() {
        // Nothing to write: the refusals stand as read.
        tx.rollback()
            .await
            .map_err(Failure::of("ending a read-only transaction"))?;
        return Ok((answers, None));
    }

    // 3. New stream versions, then positions (the head row's lock is held from here to the
    //    commit), events and command outcomes.
    if !changed.is_empty() {
        let mut changed: Vec<((String, String), u64)> = changed.into_iter().collect();
        changed.sort_unstable();
        let mut types = Vec::with_capacity(changed.len());
        let mut ids = Vec::with_capacity(changed.len());
        let mut new_versions = Vec::with_capacity(changed.len());
        for ((t, i), v) in changed {
            types.push(t);
            ids.push(i);
            new_versions.push(to_i64(v)?);
        }
        let upsert = tx
            .prepare_cached(
                "INSERT INTO annals_streams (aggregate_type, aggregate_id, version) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) \
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET version = EXCLUDED.version",
            )
            .await
            .map_err(Failure::of("preparing the stream update"))?;
        tx.execute(&upsert, &[&types, &ids, &new_versions])
            .await
            .map_err(Failure::of("updating the streams' versions"))?;
    }
    let mut next = 0u64;
    if event_total > 0 {
        let row = tx
            .query_one(
                "UPDATE annals_head SET position = position + $1 WHERE id = 1 RETURNING position",
                &[&to_i64(event_total)?],
            )
            .await
            .map_err(Failure::of("taking the batch's positions"))?;
        let end = to_u64(super::get(&row, 0, "annals_head.position")?)?;
        next = end + 1 - event_total;
    }
    let mut events = EventRows::default();
    let mut commands = CommandRows::default();
    for a in &accepted {
        let request = requests[a.index];
        let first_position = (a.count > 0).then_some(Position(next));
        let (stream_type, stream_id) = (
            request.stream.aggregate_type().to_string(),
            request.stream.aggregate_id().to_string(),
        );
        if let AppendKind::Events(pending) = &request.kind {
            let meta = &request.meta;
            for (i, event) in pending.iter().enumerate() {
                events.position.push(to_i64(next)?);
                events.aggregate_type.push(stream_type.clone());
                events.aggregate_id.push(stream_id.clone());
                events.version.push(to_i64(a.from.0 + i as u64 + 1)?);
                events.event_id.push(event.event_id);
                events.event_type.push(event.event_type.to_string());
                events.schema_version.push(i32::from(event.schema_version));
                events.payload.push(event.payload.0.clone());
                events.recorded_at.push(to_i64(meta.recorded_at.0)?);
                events
                    .command_id
                    .push(meta.command_id.as_ref().map(|c| c.as_str().to_string()));
                events
                    .correlation_id
                    .push(meta.correlation_id.as_deref().map(str::to_string));
                events
                    .causation_id
                    .push(meta.causation_id.as_deref().map(str::to_string));
                next += 1;
            }
        }
        if let Some(command) = &request.command {
            let (outcome, rejection) = match &request.kind {
                AppendKind::Events(_) => (OUTCOME_COMMITTED, None),
                AppendKind::Rejection(bytes) => (OUTCOME_REJECTED, Some(bytes.clone())),
                AppendKind::NoEvents => (OUTCOME_NO_EVENTS, None),
            };
            commands.command_id.push(command.id.as_str().to_string());
            commands.fingerprint.push(command.fingerprint.0.to_vec());
            commands.outcome.push(outcome);
            commands.aggregate_type.push(stream_type);
            commands.aggregate_id.push(stream_id);
            commands.version.push(to_i64(a.from.0)?);
            commands
                .first_position
                .push(first_position.map(|p| to_i64(p.0)).transpose()?);
            commands
                .event_count
                .push(i32::try_from(a.count).unwrap_or(i32::MAX));
            commands.rejection.push(rejection);
        }
        answers[a.index] = Ok(CommitReceipt {
            version: Version(a.from.0 + u64::from(a.count)),
            first_position,
            event_count: a.count,
        });
    }
    let insert_events = async {
        if events.position.is_empty() {
            return Ok(0);
        }
        let statement = tx
            .prepare_cached(
                "INSERT INTO annals_events (position, aggregate_type, aggregate_id, version, \
                   event_id, event_type, schema_version, payload, recorded_at, command_id, \
                   correlation_id, causation_id) \
                 SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[], \
                   $5::uuid[], $6::text[], $7::int4[], $8::bytea[], $9::int8[], $10::text[], \
                   $11::text[], $12::text[])",
            )
            .await?;
        tx.execute(
            &statement,
            &[
                &events.position,
                &events.aggregate_type,
                &events.aggregate_id,
                &events.version,
                &events.event_id,
                &events.event_type,
                &events.schema_version,
                &events.payload,
                &events.recorded_at,
                &events.command_id,
                &events.correlation_id,
                &events.causation_id,
            ],
        )
        .await
    };
    let insert_commands = async {
        if commands.command_id.is_empty() {
            return Ok(0);
        }
        let statement = tx
            .prepare_cached(
                "INSERT INTO annals_commands (command_id, fingerprint, outcome, aggregate_type, \
                   aggregate_id, version, first_position, event_count, rejection) \
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::int2[], $4::text[], \
                   $5::text[], $6::int8[], $7::int8[], $8::int4[], $9::bytea[])",
            )
            .await?;
        tx.execute(
            &statement,
            &[
                &commands.command_id,
                &commands.fingerprint,
                &commands.outcome,
                &commands.aggregate_type,
                &commands.aggregate_id,
                &commands.version,
                &commands.first_position,
                &commands.event_count,
                &commands.rejection,
            ],
        )
        .await
    };
    // Sent together: the connection pipelines them.
    futures::try_join!(insert_events, insert_commands)
        .map_err(Failure::of("inserting the batch"))?;
    if event_total > 0 {
        if let Some(gate) = hooks.take() {
            let _ = gate.held.send(());
            if gate.verdict.await == Ok(false) {
                tx.rollback()
                    .await
                    .map_err(Failure::of("rolling back at a test's request"))?;
                return Err(Failure::Store(StoreError::Io {
                    op: "committing a batch",
                    reason: "rolled back at a test's request".to_string(),
                }));
            }
        }
    }
    match tx.commit().await {
        Ok(()) => {}
        Err(e) if e.code().is_some() => return Err(Failure::of(COMMIT_OP)(e)),
        // The connection broke during the commit: it may or may not have happened.
        Err(e) => return Err(Failure::Store(db_error(COMMIT_OP, &e))),
    }
    let last = (event_total > 0).then(|| Position(next - 1));
    Ok((answers, last))
}
