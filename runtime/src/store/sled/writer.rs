//! The journal's two threads: the writer (checks, positions, one log insert per commit) and
//! the flusher (derived index entries, one fsync per batch, acknowledgements). See the
//! [parent module](super) for the design and its measurements.

use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use lru::LruCache;

use super::keys;
use super::record::{CommandRecord, CommitRecord, IndexEntry};
use super::{indexed_head, io, lookup_command, validate_kind, Durability, Faults, Shared, Trees};
use crate::store::{
    AppendError, AppendKind, AppendReply, AppendRequest, CommandKey, CommitReceipt, Fingerprint,
    StoreError,
};
use crate::types::{CommandId, Position, StreamId, Version};

/// The meta key of the index watermark: every index and command entry derived from log
/// records at or below this position is durable.
pub(crate) const WATERMARK_KEY: &[u8] = b"indexed_through";

/// A message to the writer.
pub(crate) enum Job {
    /// Append, and resolve the reply when acknowledged or refused.
    Append(Box<Prepared>, AppendReply),
    /// Drain the queue, flush, and stop.
    Stop,
}

/// An append encoded on the caller's thread, so the writer only checks and inserts.
pub(crate) struct Prepared {
    stream: StreamId,
    stream_key: Vec<u8>,
    expected: Version,
    command: Option<CommandKey>,
    body: Body,
}

enum Body {
    /// An encoded [`CommitRecord`] of `count` events.
    Commit { bytes: Vec<u8>, count: u32 },
    /// An encoded [`CommandRecord`] (rejection or no-event outcome).
    Outcome { bytes: Vec<u8> },
}

impl Prepared {
    pub(crate) fn new(request: AppendRequest) -> Result<Prepared, AppendError> {
        validate_kind(&request)?;
        let fingerprint = request.command.as_ref().map(|c| c.fingerprint);
        let body = match &request.kind {
            AppendKind::Events(events) => {
                let record = CommitRecord::new(
                    &request.stream,
                    request.expected.next(),
                    &request.meta,
                    fingerprint,
                    events,
                );
                let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
                Body::Commit { bytes: record.encode().map_err(StoreError::from)?, count }
            }
            AppendKind::Rejection(rejection) => {
                let record = CommandRecord::Rejected {
                    aggregate_type: request.stream.aggregate_type().to_string(),
                    aggregate_id: request.stream.aggregate_id().to_string(),
                    fingerprint: fingerprint.map(|f| f.0.to_vec()).unwrap_or_default(),
                    version: request.expected.0,
                    rejection: rejection.clone(),
                };
                Body::Outcome { bytes: record.encode().map_err(StoreError::from)? }
            }
            AppendKind::NoEvents => {
                let record = CommandRecord::NoEvents {
                    aggregate_type: request.stream.aggregate_type().to_string(),
                    aggregate_id: request.stream.aggregate_id().to_string(),
                    fingerprint: fingerprint.map(|f| f.0.to_vec()).unwrap_or_default(),
                    version: request.expected.0,
                };
                Body::Outcome { bytes: record.encode().map_err(StoreError::from)? }
            }
        };
        Ok(Prepared {
            stream_key: keys::stream_key(&request.stream),
            stream: request.stream,
            expected: request.expected,
            command: request.command,
            body,
        })
    }
}

/// What the writer hands the flusher for one batch.
struct Stage {
    index: Vec<(Vec<u8>, [u8; 12])>,
    commands: Vec<(CommandId, Vec<u8>)>,
    replies: Vec<(AppendReply, CommitReceipt)>,
    /// Last position written so far (this batch included).
    end: Position,
    events: u64,
}

pub(crate) struct Start {
    pub(crate) trees: Trees,
    pub(crate) shared: Arc<Shared>,
    pub(crate) next_position: Position,
    pub(crate) durability: Durability,
    pub(crate) batch_appends_max: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) head_cache_capacity: NonZeroUsize,
    pub(crate) faults: Arc<Faults>,
}

/// Starts the writer and the flusher; returns the job queue and both threads.
pub(crate) fn start(s: Start) -> Result<(Sender<Job>, Vec<JoinHandle<()>>), StoreError> {
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(s.queue_capacity);
    // One stage in the channel plus one being flushed: the writer runs at most two batches
    // ahead of the last fsync, which is what bounds the head cache (see `SledOptions`).
    let (stage_tx, stage_rx) = crossbeam_channel::bounded(1);
    let writer = Writer {
        trees: s.trees.clone(),
        shared: s.shared.clone(),
        next: s.next_position,
        heads: LruCache::new(s.head_cache_capacity),
        recent_commands: LruCache::new(s.head_cache_capacity),
        batch_appends_max: s.batch_appends_max,
        faults: s.faults.clone(),
    };
    let flusher = Flusher {
        trees: s.trees,
        shared: s.shared,
        durability: s.durability,
        faults: s.faults,
        unflushed_end: None,
        flushed_end: None,
        last_flush: Instant::now(),
    };
    let spawn_err = |e: std::io::Error| StoreError::Io { op: "starting the journal", reason: e.to_string() };
    let w = std::thread::Builder::new()
        .name("annals-journal-writer".into())
        .spawn(move || writer.run(&jobs_rx, &stage_tx))
        .map_err(spawn_err)?;
    let f = std::thread::Builder::new()
        .name("annals-journal-flusher".into())
        .spawn(move || flusher.run(&stage_rx))
        .map_err(spawn_err)?;
    Ok((jobs_tx, vec![w, f]))
}

struct Writer {
    trees: Trees,
    shared: Arc<Shared>,
    /// The position the next event gets.
    next: Position,
    /// Stream key → head, for every stream written recently (all of those in flight).
    heads: LruCache<Vec<u8>, Version>,
    /// Command ids used recently (all of those in flight) → fingerprint.
    recent_commands: LruCache<CommandId, Fingerprint>,
    batch_appends_max: usize,
    faults: Arc<Faults>,
}

impl Writer {
    fn run(mut self, jobs: &Receiver<Job>, stages: &Sender<Stage>) {
        let mut stopping = false;
        loop {
            let first = if stopping {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            } else {
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            let mut stage = Stage {
                index: Vec::new(),
                commands: Vec::new(),
                replies: Vec::new(),
                end: Position(self.next.0 - 1),
                events: 0,
            };
            let mut taken = 0usize;
            let mut job = Some(first);
            while let Some(j) = job.take() {
                match j {
                    Job::Stop => stopping = true,
                    Job::Append(prepared, reply) => {
                        taken += 1;
                        self.write(*prepared, reply, &mut stage);
                    }
                }
                if taken < self.batch_appends_max {
                    job = jobs.try_recv().ok();
                }
            }
            if self.shared.is_failed() {
                for (reply, _) in stage.replies.drain(..) {
                    let _ = reply.send(Err(self.shared.failed_error().into()));
                }
            }
            if stage.replies.is_empty() {
                continue;
            }
            stage.end = Position(self.next.0 - 1);
            if stages.send(stage).is_err() {
                break;
            }
        }
    }

    fn write(&mut self, p: Prepared, reply: AppendReply, stage: &mut Stage) {
        if self.shared.is_failed() {
            let _ = reply.send(Err(self.shared.failed_error().into()));
            return;
        }
        match self.check(&p) {
            Ok(Ok(head)) => self.insert(p, head, reply, stage),
            Ok(Err(refusal)) => {
                let _ = reply.send(Err(refusal));
            }
            Err(e) => {
                self.shared.fail(format!("reading the journal's own state failed: {e}"));
                let _ = reply.send(Err(self.shared.failed_error().into()));
            }
        }
    }

    /// The stream head if the append may go ahead, or why not. The outer error is fatal.
    fn check(&mut self, p: &Prepared) -> Result<Result<Version, AppendError>, StoreError> {
        let head = match self.heads.get(&p.stream_key) {
            Some(head) => *head,
            None => indexed_head(&self.trees, &p.stream, None)?,
        };
        if head != p.expected {
            self.heads.put(p.stream_key.clone(), head);
            return Ok(Err(AppendError::Conflict {
                stream: p.stream.clone(),
                expected: p.expected,
                actual: head,
            }));
        }
        if let Some(command) = &p.command {
            let used = match self.recent_commands.get(&command.id) {
                Some(fingerprint) => Some(*fingerprint),
                None => lookup_command(&self.trees, &command.id, None)?.map(|o| o.fingerprint()),
            };
            if let Some(fingerprint) = used {
                return Ok(Err(AppendError::CommandIdUsed {
                    id: command.id.clone(),
                    same_command: fingerprint == command.fingerprint,
                }));
            }
        }
        Ok(Ok(head))
    }

    fn insert(&mut self, p: Prepared, head: Version, reply: AppendReply, stage: &mut Stage) {
        let receipt = match p.body {
            Body::Commit { bytes, count } => {
                let position = self.next;
                let inserted = if self.faults.take_insert() {
                    Err(StoreError::Io { op: "writing the log", reason: "injected fault".into() })
                } else {
                    self.trees
                        .log
                        .insert(keys::position_key(position), bytes)
                        .map(|_| ())
                        .map_err(io("writing the log"))
                };
                if let Err(e) = inserted {
                    self.shared.fail(e.to_string());
                    let _ = reply.send(Err(self.shared.failed_error().into()));
                    return;
                }
                let mut index_key = p.stream_key.clone();
                index_key.extend_from_slice(&head.next().0.to_be_bytes());
                stage.index.push((index_key, IndexEntry { position, count }.encode()));
                if let Some(command) = &p.command {
                    match (CommandRecord::Committed { position: position.0 }).encode() {
                        Ok(bytes) => stage.commands.push((command.id.clone(), bytes)),
                        Err(e) => self.shared.fail(e.to_string()),
                    }
                }
                self.next = position.advance(u64::from(count));
                stage.events += u64::from(count);
                let version = head.advance(u64::from(count));
                self.heads.put(p.stream_key, version);
                CommitReceipt { version, first_position: Some(position), event_count: count }
            }
            Body::Outcome { bytes } => {
                if let Some(command) = &p.command {
                    stage.commands.push((command.id.clone(), bytes));
                }
                CommitReceipt { version: head, first_position: None, event_count: 0 }
            }
        };
        if let Some(command) = p.command {
            self.recent_commands.put(command.id, command.fingerprint);
        }
        stage.replies.push((reply, receipt));
    }
}

struct Flusher {
    trees: Trees,
    shared: Arc<Shared>,
    durability: Durability,
    faults: Arc<Faults>,
    /// End of the last batch indexed but not yet fsynced (relaxed mode).
    unflushed_end: Option<Position>,
    /// End of the last batch known durable, whose watermark is not yet written.
    flushed_end: Option<Position>,
    last_flush: Instant,
}

impl Flusher {
    fn run(mut self, stages: &Receiver<Stage>) {
        loop {
            let stage = match self.durability {
                Durability::Durable => match stages.recv() {
                    Ok(stage) => stage,
                    Err(_) => break,
                },
                Durability::Relaxed { flush_interval } => {
                    let wait = flush_interval.saturating_sub(self.last_flush.elapsed());
                    match stages.recv_timeout(wait.max(Duration::from_millis(1))) {
                        Ok(stage) => stage,
                        Err(RecvTimeoutError::Timeout) => {
                            self.flush_if_due(flush_interval);
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            self.process(stage);
        }
        // Shutdown: make everything durable and record the final watermark so the next open
        // has no tail to re-derive.
        if !self.shared.is_failed() {
            if let Some(end) = self.unflushed_end.take() {
                if self.fsync().is_ok() {
                    self.flushed_end = Some(end);
                }
            }
            if let Some(end) = self.flushed_end.take() {
                let _ = self.trees.meta.insert(WATERMARK_KEY, &end.0.to_be_bytes());
                let _ = self.fsync();
            }
        }
    }

    fn process(&mut self, stage: Stage) {
        if self.shared.is_failed() {
            return self.refuse(stage);
        }
        if let Err(e) = self.index(&stage) {
            self.shared.fail(e.to_string());
            return self.refuse(stage);
        }
        match self.durability {
            Durability::Durable => {
                if let Err(e) = self.fsync() {
                    self.shared.fail(e.to_string());
                    return self.refuse(stage);
                }
                self.flushed_end = Some(stage.end);
            }
            Durability::Relaxed { flush_interval } => {
                self.unflushed_end = Some(stage.end);
                self.flush_if_due(flush_interval);
            }
        }
        self.acknowledge(stage);
    }

    /// Inserts the batch's derived entries, and the watermark of the previous fsync.
    fn index(&mut self, stage: &Stage) -> Result<(), StoreError> {
        for (key, value) in &stage.index {
            self.trees.streams.insert(key.as_slice(), &value[..]).map_err(io("writing the stream index"))?;
        }
        for (id, value) in &stage.commands {
            self.trees
                .commands
                .insert(id.as_str().as_bytes(), value.as_slice())
                .map_err(io("writing command ids"))?;
        }
        // Written only after the fsync that made the entries up to it durable, so a durable
        // watermark never claims entries that a crash could have lost.
        if let Some(end) = self.flushed_end.take() {
            self.trees.meta.insert(WATERMARK_KEY, &end.0.to_be_bytes()).map_err(io("writing the watermark"))?;
        }
        Ok(())
    }

    fn fsync(&mut self) -> Result<(), StoreError> {
        if self.faults.take_fsync() {
            return Err(StoreError::Io { op: "fsync", reason: "injected fault".into() });
        }
        self.trees.db.flush().map_err(io("fsync"))?;
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.last_flush = Instant::now();
        Ok(())
    }

    fn flush_if_due(&mut self, interval: Duration) {
        if self.unflushed_end.is_none() || self.last_flush.elapsed() < interval || self.shared.is_failed() {
            return;
        }
        match self.fsync() {
            Ok(()) => self.flushed_end = self.unflushed_end.take(),
            // Acknowledged appends may be lost: refuse everything from now on.
            Err(e) => self.shared.fail(e.to_string()),
        }
    }

    fn acknowledge(&self, stage: Stage) {
        let s = &self.shared;
        s.visible.store(stage.end.0, Ordering::Release);
        let appends = stage.replies.len() as u64;
        s.appends.fetch_add(appends, Ordering::Relaxed);
        s.events.fetch_add(stage.events, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
        s.batch_appends_max.fetch_max(appends, Ordering::Relaxed);
        for (reply, receipt) in stage.replies {
            let _ = reply.send(Ok(receipt));
        }
    }

    fn refuse(&self, stage: Stage) {
        for (reply, _) in stage.replies {
            let _ = reply.send(Err(self.shared.failed_error().into()));
        }
    }
}
