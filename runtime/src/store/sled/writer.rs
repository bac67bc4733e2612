//! The journal's two threads: the **writer** (checks, positions, the batch's segments — one
//! insert each, usually one per batch) and the **flusher** (derived entries, one sync for every
//! batch written while the previous sync ran, with its acknowledgement record,
//! acknowledgements, and the lazy checkpoint of stream heads).
//! See the [parent module](super) for the design and its measurements.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use lru::LruCache;

use super::disk::Acknowledged;
use super::keys;
use super::record::{CommandRecord, CommitRecord, HeadEntry};
use super::segment::{Locator, RecordHeader, SegmentBuilder};
use super::{
    head_at_or_below, io, lookup_command, lookup_head, Durability, Shared, Trees, SKIP_EVERY,
    SKIP_STEP,
};
use crate::store::{
    AppendError, AppendKind, AppendReply, AppendRequest, CommandKey, CommitReceipt, Fingerprint,
    StoreError,
};
use crate::types::{CommandId, Position, StreamId, Version};

/// The meta key of the watermark: every derived entry (heads, skips, command ids) of the log
/// at or below this position is durable.
pub(crate) const WATERMARK_KEY: &[u8] = b"derived_through";
/// The meta key of the number of the last batch written: inserted with every batch, so that a
/// batch the acknowledgement record names can be told present or lost (see `disk.rs`) even when
/// it holds no event (only rejection outcomes).
pub(crate) const BATCH_KEY: &[u8] = b"batch";

/// A message to the writer.
pub(crate) enum Job {
    /// Append, and resolve the reply when acknowledged or refused.
    Append(Box<Prepared>, AppendReply),
    /// Drain the queue, flush, and stop.
    Stop,
}

/// An append encoded on the caller's thread, so the writer only checks and copies bytes.
pub(crate) struct Prepared {
    stream: StreamId,
    stream_key: Vec<u8>,
    expected: Version,
    command: Option<CommandKey>,
    body: Body,
}

enum Body {
    /// An encoded commit record of `count` events, with room for its header.
    Commit { bytes: Vec<u8>, count: u32 },
    /// An encoded [`CommandRecord`] (rejection or no-event outcome).
    Outcome { bytes: Vec<u8> },
}

impl Prepared {
    pub(crate) fn new(request: AppendRequest) -> Result<Prepared, AppendError> {
        crate::store::validate_append(&request)?;
        let fingerprint = request.command.as_ref().map(|c| c.fingerprint);
        let outcome = |record: CommandRecord| -> Result<Body, AppendError> {
            Ok(Body::Outcome {
                bytes: record.encode().map_err(StoreError::from)?,
            })
        };
        let body = match &request.kind {
            AppendKind::Events(events) => {
                let record = CommitRecord::new(&request.meta, fingerprint, events);
                let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
                Body::Commit {
                    bytes: record.encode(&request.stream).map_err(StoreError::from)?,
                    count,
                }
            }
            AppendKind::Rejection(rejection) => outcome(CommandRecord::Rejected {
                aggregate_type: request.stream.aggregate_type().to_string(),
                aggregate_id: request.stream.aggregate_id().to_string(),
                fingerprint: fingerprint.map(|f| f.0.to_vec()).unwrap_or_default(),
                version: request.expected.0,
                rejection: rejection.clone(),
            })?,
            AppendKind::NoEvents => outcome(CommandRecord::NoEvents {
                aggregate_type: request.stream.aggregate_type().to_string(),
                aggregate_id: request.stream.aggregate_id().to_string(),
                fingerprint: fingerprint.map(|f| f.0.to_vec()).unwrap_or_default(),
                version: request.expected.0,
            })?,
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
    /// Derived entries to insert before the fsync: (tree, key, value).
    derived: Vec<(Derived, Vec<u8>, Vec<u8>)>,
    replies: Vec<(AppendReply, CommitReceipt)>,
    /// Command ids of the rejection and no-event outcomes in this batch.
    outcome_ids: Vec<CommandId>,
    /// Last position written so far (this batch included).
    end: Position,
    events: u64,
    /// The aggregate types of the batch's events, each once (for the type watches).
    types: Vec<String>,
    /// When the writer started writing it (for [`BatchObserver`](crate::store::BatchObserver)).
    started: Instant,
}

#[derive(Clone, Copy)]
enum Derived {
    Command,
    Skip,
}

/// Most written batches queued for the flusher. While one sync runs (≈ 0.2–0.5 ms on a VM
/// disk), the writer goes on writing the batches that arrive; the next sync covers all of them
/// (group commit at the flusher too), so a slow sync makes the next one bigger, not later.
/// Beyond this the writer waits, and the jobs queue behind it applies backpressure.
const STAGES_QUEUED_MAX: usize = 8;

pub(crate) struct Start {
    pub(crate) trees: Trees,
    pub(crate) shared: Arc<Shared>,
    pub(crate) next_position: Position,
    pub(crate) next_batch: u64,
    pub(crate) durability: Durability,
    pub(crate) batch_appends_max: usize,
    pub(crate) batch_bytes_max: usize,
    pub(crate) segment_bytes_max: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) head_cache_capacity: NonZeroUsize,
    pub(crate) heads_checkpoint_interval: Duration,
}

/// Starts the writer and the flusher; returns the job queue and both threads.
pub(crate) fn start(s: Start) -> Result<(Sender<Job>, Vec<JoinHandle<()>>), StoreError> {
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(s.queue_capacity);
    // The writer runs at most STAGES_QUEUED_MAX batches ahead of the sync in progress; the
    // flusher takes all that queued during a sync into the next one.
    let (stage_tx, stage_rx) = crossbeam_channel::bounded(STAGES_QUEUED_MAX);
    let writer = Writer {
        trees: s.trees.clone(),
        shared: s.shared.clone(),
        next: s.next_position,
        heads: LruCache::new(s.head_cache_capacity),
        recent_commands: LruCache::new(s.head_cache_capacity),
        batch_appends_max: s.batch_appends_max,
        batch_bytes_max: s.batch_bytes_max,
        segment_bytes_max: s.segment_bytes_max,
    };
    let flusher = Flusher {
        trees: s.trees,
        shared: s.shared,
        durability: s.durability,
        checkpoint_interval: s.heads_checkpoint_interval,
        dirty_max: s.head_cache_capacity.get(),
        next_batch: s.next_batch,
        durable_end: Position(s.next_position.0 - 1),
        unflushed_end: None,
        heads_pending: None,
        watermark_due: None,
        last_fsync: Instant::now(),
        last_checkpoint: Instant::now(),
        pass: None,
    };
    let spawn_err = |e: std::io::Error| StoreError::Io {
        op: "starting the journal",
        reason: e.to_string(),
    };
    let w = std::thread::Builder::new()
        .name("annals-writer".into())
        .spawn(move || {
            let _watch = PanicWatch(writer.shared.clone(), "writer");
            writer.run(&jobs_rx, &stage_tx);
        })
        .map_err(spawn_err)?;
    let f = std::thread::Builder::new()
        .name("annals-flusher".into())
        .spawn(move || {
            let _watch = PanicWatch(flusher.shared.clone(), "flusher");
            flusher.run(&stage_rx);
        })
        .map_err(spawn_err)?;
    Ok((jobs_tx, vec![w, f]))
}

/// Fails the journal if its thread unwinds: a panicked writer or flusher acknowledges nothing
/// more, so the store must say so (health, refused appends) instead of looking ready.
struct PanicWatch(Arc<Shared>, &'static str);

impl Drop for PanicWatch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0
                .fail(format!("the journal's {} thread panicked", self.1));
        }
    }
}

struct Writer {
    trees: Trees,
    shared: Arc<Shared>,
    /// The position the next event gets.
    next: Position,
    /// Stream key → head, for the streams written recently.
    heads: LruCache<Vec<u8>, HeadEntry>,
    /// Command ids used recently (all of those in flight) → fingerprint.
    recent_commands: LruCache<CommandId, Fingerprint>,
    batch_appends_max: usize,
    batch_bytes_max: usize,
    /// Most bytes of commit records in one segment (one sled insert): see
    /// [`segment_bytes_max`](super::segment_bytes_max).
    segment_bytes_max: usize,
}

/// One batch being assembled: its segments (first position, records), in position order.
struct Batch {
    segments: Vec<(Position, SegmentBuilder)>,
    bytes: usize,
    heads: Vec<(Vec<u8>, HeadEntry)>,
    stage: Stage,
}

impl Batch {
    /// The segment a record of `len` bytes at `position` goes into: the last one, or a new one
    /// starting at `position` if the last is full.
    fn segment_for(
        &mut self,
        position: Position,
        len: usize,
        segment_bytes_max: usize,
    ) -> (Position, &mut SegmentBuilder) {
        let full = self
            .segments
            .last()
            .is_none_or(|(_, s)| !s.is_empty() && s.data_len() + len > segment_bytes_max);
        if full {
            self.segments.push((position, SegmentBuilder::default()));
        }
        self.bytes += len;
        let (first, segment) = self
            .segments
            .last_mut()
            .expect("a segment was just pushed if there was none");
        (*first, segment)
    }
}

impl Writer {
    fn run(mut self, jobs: &Receiver<Job>, stages: &Sender<Stage>) {
        let mut stopping = false;
        loop {
            let first = if stopping {
                jobs.try_recv().ok()
            } else {
                jobs.recv().ok()
            };
            let Some(first) = first else { break };
            assert!(
                !self.shared.faults.take_panic(),
                "injected panic in the journal's writer (Faults::panic_next_batch)"
            );
            let mut batch = Batch {
                segments: Vec::new(),
                bytes: 0,
                heads: Vec::new(),
                stage: Stage {
                    derived: Vec::new(),
                    replies: Vec::new(),
                    outcome_ids: Vec::new(),
                    end: Position(0),
                    events: 0,
                    types: Vec::new(),
                    started: Instant::now(),
                },
            };
            let mut taken = 0usize;
            let mut job = Some(first);
            while let Some(j) = job.take() {
                match j {
                    Job::Stop => stopping = true,
                    Job::Append(prepared, reply) => {
                        taken += 1;
                        self.write(*prepared, reply, &mut batch);
                    }
                }
                if taken < self.batch_appends_max && batch.bytes < self.batch_bytes_max {
                    job = jobs.try_recv().ok();
                }
            }
            let Batch {
                segments,
                heads,
                mut stage,
                ..
            } = batch;
            for (first, segment) in segments {
                if self.shared.is_failed() {
                    break;
                }
                if let Err(e) = self.insert_segment(first, segment) {
                    self.shared.fail(e.to_string());
                }
            }
            if self.shared.is_failed() {
                for (reply, _) in stage.replies.drain(..) {
                    let _ = reply.send(Err(self.shared.failed_error().into()));
                }
                continue;
            }
            // Order matters: the segments first (a head in the table must name a commit that
            // readers can find), then the heads, and only then `written`. The flusher reads
            // `written` before its fsync and its checkpoint then claims, through the watermark,
            // every head of the log up to there: it must find all of them in the table.
            if !heads.is_empty() {
                self.shared.dirty_heads.lock().extend(heads);
            }
            self.shared
                .written
                .store(self.next.0 - 1, Ordering::Release);
            if stage.replies.is_empty() {
                continue;
            }
            stage.end = Position(self.next.0 - 1);
            if stages.send(stage).is_err() {
                break;
            }
        }
    }

    /// Inserts one segment of the batch and makes it findable by tail reads.
    fn insert_segment(
        &mut self,
        first: Position,
        segment: SegmentBuilder,
    ) -> Result<(), StoreError> {
        if self.shared.faults.take_insert() {
            return Err(StoreError::Io {
                op: "writing the log",
                reason: "injected fault".into(),
            });
        }
        self.trees
            .log
            .insert(keys::position_key(first), segment.finish())
            .map_err(io("writing the log"))?;
        let mut recent = self.shared.recent_segments.lock();
        if recent.len() >= super::RECENT_SEGMENTS_MAX {
            recent.pop_front();
        }
        recent.push_back(first);
        Ok(())
    }

    fn write(&mut self, p: Prepared, reply: AppendReply, batch: &mut Batch) {
        if self.shared.is_failed() {
            let _ = reply.send(Err(self.shared.failed_error().into()));
            return;
        }
        match self.check(&p) {
            Ok(Ok(head)) => self.add(p, head, reply, batch),
            Ok(Err(refusal)) => {
                let _ = reply.send(Err(refusal));
            }
            // A damaged stream head or command record, or a read that failed, concerns this
            // append only: it is refused with the error, and the journal goes on. Only a failed
            // write or fsync fails the journal (the outcome of what it covered is unknown).
            Err(e) => {
                tracing::warn!(stream = %p.stream, error = %e, "refusing an append: reading the journal's state for it failed");
                let _ = reply.send(Err(AppendError::Unchecked {
                    stream: p.stream,
                    error: e,
                }));
            }
        }
    }

    /// The stream head if the append may go ahead, or why not. The outer error is fatal.
    fn check(
        &mut self,
        p: &Prepared,
    ) -> Result<Result<Option<HeadEntry>, AppendError>, StoreError> {
        let head = match self.heads.get(&p.stream_key) {
            Some(head) => Some(*head),
            None => {
                let head = lookup_head(&self.trees, &self.shared, &p.stream_key)?;
                if let Some(h) = head {
                    self.heads.put(p.stream_key.clone(), h);
                }
                head
            }
        };
        let version = head.map_or(Version(0), |h| h.version);
        if version != p.expected {
            return Ok(Err(AppendError::Conflict {
                stream: p.stream.clone(),
                expected: p.expected,
                actual: version,
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

    fn add(&mut self, p: Prepared, head: Option<HeadEntry>, reply: AppendReply, batch: &mut Batch) {
        let version = head.map_or(Version(0), |h| h.version);
        let receipt = match p.body {
            Body::Commit { mut bytes, count } => {
                let position = self.next;
                let (first, segment) =
                    batch.segment_for(position, bytes.len(), self.segment_bytes_max);
                let at = Locator {
                    segment: first,
                    commit: position,
                };
                let header = RecordHeader {
                    prev: head.map_or(Locator::NONE, |h| h.at),
                    first_version: version.next(),
                    count,
                };
                header.write_into(&mut bytes);
                // Relative positions fit in u32: a batch holds far fewer than 2^32 events.
                let relative = u32::try_from(position.0 - first.0).unwrap_or(u32::MAX);
                segment.push(relative, &bytes);
                let last = header.last_version();
                let first_skip = header.first_version.0.div_ceil(SKIP_EVERY) * SKIP_EVERY;
                for skip in (first_skip..=last.0).step_by(SKIP_STEP) {
                    let key = [p.stream_key.as_slice(), &skip.to_be_bytes()].concat();
                    batch
                        .stage
                        .derived
                        .push((Derived::Skip, key, at.encode().to_vec()));
                }
                if let Some(command) = &p.command {
                    match (CommandRecord::Committed {
                        segment: at.segment.0,
                        position: position.0,
                    })
                    .encode()
                    {
                        Ok(bytes) => batch.stage.derived.push((
                            Derived::Command,
                            command.id.as_str().as_bytes().to_vec(),
                            bytes,
                        )),
                        Err(e) => self.shared.fail(e.to_string()),
                    }
                }
                let entry = HeadEntry {
                    version: last,
                    at,
                    count,
                };
                self.heads.put(p.stream_key.clone(), entry);
                batch.heads.push((p.stream_key, entry));
                self.next = position.advance(u64::from(count));
                batch.stage.events += u64::from(count);
                let aggregate_type = p.stream.aggregate_type();
                if !batch.stage.types.iter().any(|t| t == aggregate_type) {
                    batch.stage.types.push(aggregate_type.to_owned());
                }
                CommitReceipt {
                    version: last,
                    first_position: Some(position),
                    event_count: count,
                }
            }
            Body::Outcome { bytes } => {
                if let Some(command) = &p.command {
                    self.shared
                        .pending_outcomes
                        .lock()
                        .insert(command.id.clone());
                    batch.stage.outcome_ids.push(command.id.clone());
                    batch.stage.derived.push((
                        Derived::Command,
                        command.id.as_str().as_bytes().to_vec(),
                        bytes,
                    ));
                }
                CommitReceipt {
                    version,
                    first_position: None,
                    event_count: 0,
                }
            }
        };
        if let Some(command) = p.command {
            self.recent_commands.put(command.id, command.fingerprint);
        }
        batch.stage.replies.push((reply, receipt));
    }
}

struct Flusher {
    trees: Trees,
    shared: Arc<Shared>,
    durability: Durability,
    checkpoint_interval: Duration,
    dirty_max: usize,
    /// The number the next batch gets ([`BATCH_KEY`]).
    next_batch: u64,
    /// Everything at or below this position is durable.
    durable_end: Position,
    /// Relaxed mode: acknowledged but not yet fsynced through here.
    unflushed_end: Option<Position>,
    /// Heads of commits through this position are inserted, awaiting an fsync.
    heads_pending: Option<Position>,
    /// Heads through this position are durable: the watermark to write next.
    watermark_due: Option<Position>,
    last_fsync: Instant,
    last_checkpoint: Instant,
    /// The heads checkpoint under way, a chunk per group (see [`HeadsPass`]).
    pass: Option<HeadsPass>,
}

/// A heads checkpoint spread over the groups that follow it, [`CHECKPOINT_CHUNK`] streams per
/// group (or twice the group's appends, if more, so that the pass outpaces the table's growth
/// however slow the syncs), instead of all at once: thousands of heads written in one go held up the next sync
/// (and every acknowledgement waiting for it) for milliseconds every interval, which was the
/// slowest percent of command latencies. When the last stream is written, every head of a
/// commit through `through` is (the pass took every stream changed through there; each one's
/// head written is at least its head then), so the watermark can claim `through` after the
/// next sync, as with a checkpoint done at once.
struct HeadsPass {
    /// The durable end when the pass began.
    through: Position,
    /// The streams left to write.
    keys: Vec<Vec<u8>>,
}

/// Streams whose heads one group's share of a [`HeadsPass`] writes.
const CHECKPOINT_CHUNK: usize = 128;

impl Flusher {
    fn run(mut self, stages: &Receiver<Stage>) {
        loop {
            let wait = match self.durability {
                Durability::Durable => self.checkpoint_interval,
                Durability::Relaxed { flush_interval } => {
                    flush_interval.saturating_sub(self.last_fsync.elapsed())
                }
            };
            match stages.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(stage) => {
                    // Every batch written while the last sync ran goes into this one.
                    let mut group = vec![stage];
                    while group.len() <= STAGES_QUEUED_MAX {
                        match stages.try_recv() {
                            Ok(stage) => group.push(stage),
                            Err(_) => break,
                        }
                    }
                    self.process(group);
                }
                Err(RecvTimeoutError::Timeout) => self.idle(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Shutdown: make everything durable, checkpoint every head and record the watermark,
        // so the next open has no tail to re-derive.
        if !self.shared.is_failed() {
            let _ = self.fsync();
            self.checkpoint();
            let _ = self.fsync();
            if let Some(w) = self.watermark_due.take() {
                let _ = self.trees.meta.insert(WATERMARK_KEY, &w.0.to_be_bytes());
                let _ = self.fsync();
            }
        }
    }

    /// Makes a group of written batches durable with one sync (durable mode) and
    /// acknowledges them in order.
    fn process(&mut self, group: Vec<Stage>) {
        if self.shared.is_failed() {
            return self.refuse(group);
        }
        if let Err(e) = self.insert_derived(&group) {
            self.shared.fail(e.to_string());
            return self.refuse(group);
        }
        match self.durability {
            Durability::Durable => {
                if let Err(e) = self.fsync() {
                    self.shared.fail(e.to_string());
                    return self.refuse(group);
                }
            }
            Durability::Relaxed { flush_interval } => {
                self.unflushed_end = group.last().map(|stage| stage.end);
                if self.last_fsync.elapsed() >= flush_interval {
                    if let Err(e) = self.fsync() {
                        self.shared.fail(e.to_string());
                        return self.refuse(group);
                    }
                }
            }
        }
        // Each append changes at most one stream's head: a pass that takes twice as many
        // streams per group as the group appended always outpaces the table's growth.
        let appends: usize = group.iter().map(|stage| stage.replies.len()).sum();
        // The whole group is durable: the type watches move first, then what reads see (so a
        // reader of the head and then a type watch misses none of the group's events; see
        // `EventStore::watch_types`), then the replies, and the head's watch once per group,
        // after them.
        let end = group.last().map(|stage| stage.end);
        if let Some(end) = end {
            let acknowledged =
                |t: &str| group.iter().any(|stage| stage.types.iter().any(|s| s == t));
            self.shared.types.moved(acknowledged, end);
            self.shared.visible.store(end.0, Ordering::Release);
        }
        for stage in group {
            self.acknowledge(stage);
        }
        if let Some(end) = end {
            self.shared.head.send_replace(end);
        }
        if self.shared.dirty_heads.lock().len() >= self.dirty_max {
            // The table of changed heads is at its bound: empty it now.
            self.checkpoint();
        } else {
            if self.pass.is_none() && self.last_checkpoint.elapsed() >= self.checkpoint_interval {
                self.last_checkpoint = Instant::now();
                let keys = self.shared.dirty_heads.lock().keys().cloned().collect();
                self.pass = Some(HeadsPass {
                    through: self.durable_end,
                    keys,
                });
            }
            self.checkpoint_some(CHECKPOINT_CHUNK.max(appends.saturating_mul(2)));
        }
    }

    /// Writes the heads of the next `n` streams of the pass under way; when it is done, the
    /// watermark can claim its `through` after the next sync.
    fn checkpoint_some(&mut self, n: usize) {
        let Some(mut pass) = self.pass.take() else {
            return;
        };
        let durable = self.durable_end;
        let chunk = pass.keys.split_off(pass.keys.len().saturating_sub(n));
        for key in chunk {
            let Some(head) = self.shared.dirty_heads.lock().get(&key).copied() else {
                continue;
            };
            match self.write_head(&key, head, durable) {
                Ok(true) => {
                    let mut dirty = self.shared.dirty_heads.lock();
                    if dirty.get(&key) == Some(&head) {
                        dirty.remove(&key);
                    }
                }
                Ok(false) => {}
                Err(e) => return self.shared.fail(e),
            }
        }
        if pass.keys.is_empty() {
            self.heads_pending = Some(
                self.heads_pending
                    .map_or(pass.through, |p| p.max(pass.through)),
            );
        } else {
            self.pass = Some(pass);
        }
    }

    /// Writes the head of stream `key` as of `durable`, `head` being its latest: `true` if
    /// that is `head` (the stream can leave the table of changed heads).
    fn write_head(&self, key: &[u8], head: HeadEntry, durable: Position) -> Result<bool, String> {
        let durable_head = head_at_or_below(&self.trees, head, durable)
            .map_err(|e| format!("reading a stream's chain: {e}"))?;
        let Some(durable_head) = durable_head else {
            return Ok(false);
        };
        self.trees
            .heads
            .insert(key, &durable_head.encode()[..])
            .map_err(|e| format!("writing stream heads: {e}"))?;
        Ok(durable_head == head)
    }

    /// No stage for a while: fsync what relaxed mode left, checkpoint, write the watermark.
    fn idle(&mut self) {
        if self.shared.is_failed() {
            return;
        }
        if let Durability::Relaxed { flush_interval } = self.durability {
            if self.unflushed_end.is_some() && self.last_fsync.elapsed() >= flush_interval {
                if let Err(e) = self.fsync() {
                    // Acknowledged appends may be lost: refuse everything from now on.
                    return self.shared.fail(e.to_string());
                }
            }
        }
        let mut wrote = false;
        if let Some(w) = self.watermark_due.take() {
            wrote |= self
                .trees
                .meta
                .insert(WATERMARK_KEY, &w.0.to_be_bytes())
                .is_ok();
        }
        if !self.shared.dirty_heads.lock().is_empty() {
            self.checkpoint();
            wrote = true;
        }
        if wrote {
            if let Err(e) = self.fsync() {
                self.shared.fail(e.to_string());
            }
        }
    }

    /// Inserts the group's derived entries and its batch number (one per sync: the number
    /// the acknowledgement record names), and the watermark that the last fsync made due.
    fn insert_derived(&mut self, group: &[Stage]) -> Result<(), StoreError> {
        self.trees
            .meta
            .insert(BATCH_KEY, &self.next_batch.to_be_bytes())
            .map_err(io("writing the batch number"))?;
        self.next_batch += 1;
        for (tree, key, value) in group.iter().flat_map(|stage| &stage.derived) {
            let tree = match tree {
                Derived::Command => &self.trees.commands,
                Derived::Skip => &self.trees.skips,
            };
            tree.insert(key.as_slice(), value.as_slice())
                .map_err(io("writing derived entries"))?;
        }
        // Written only after the fsync that made the heads up to it durable, so a durable
        // watermark never claims entries that a crash could have lost.
        if let Some(w) = self.watermark_due.take() {
            self.trees
                .meta
                .insert(WATERMARK_KEY, &w.0.to_be_bytes())
                .map_err(io("writing the watermark"))?;
        }
        Ok(())
    }

    /// Makes everything written so far durable (`disk.rs`), then records that durably in the
    /// acknowledgement record, before anything it covers is acknowledged.
    fn fsync(&mut self) -> Result<(), StoreError> {
        // Everything inserted so far; read before the sync, which covers it.
        let covered = Position(self.shared.written.load(Ordering::Acquire));
        let covered_batch = self.next_batch - 1;
        {
            let mut disk = self.shared.disk.lock();
            disk.sync(&self.trees.db, &self.shared.faults)?;
            let recorded = disk.acknowledged();
            disk.record(Acknowledged {
                batch: covered_batch.max(recorded.batch),
                position: covered.max(recorded.position),
            })?;
        }
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.last_fsync = Instant::now();
        self.durable_end = self.durable_end.max(covered);
        self.unflushed_end = None;
        if let Some(p) = self.heads_pending.take() {
            self.watermark_due = Some(p);
        }
        Ok(())
    }

    /// Persists, for every stream in the in-memory table of changed heads, its head as of the
    /// last fsync; then the watermark can claim every head through that fsync (once the heads
    /// themselves are durable). A head whose commit is not durable yet stays in the table, and
    /// its stream's latest *durable* head (found by walking its chain) is persisted instead.
    fn checkpoint(&mut self) {
        self.last_checkpoint = Instant::now();
        // This covers every stream the pass under way has left, and more.
        self.pass = None;
        let durable = self.durable_end;
        let entries: Vec<(Vec<u8>, HeadEntry)> = self
            .shared
            .dirty_heads
            .lock()
            .iter()
            .map(|(k, h)| (k.clone(), *h))
            .collect();
        let mut persisted = Vec::with_capacity(entries.len());
        for (key, head) in entries {
            match self.write_head(&key, head, durable) {
                Ok(true) => persisted.push((key, head)),
                Ok(false) => {}
                Err(e) => return self.shared.fail(e),
            }
        }
        let mut dirty = self.shared.dirty_heads.lock();
        for (key, head) in persisted {
            if dirty.get(&key) == Some(&head) {
                dirty.remove(&key);
            }
        }
        drop(dirty);
        self.heads_pending = Some(self.heads_pending.map_or(durable, |p| p.max(durable)));
    }

    fn acknowledge(&self, stage: Stage) {
        let s = &self.shared;
        if !stage.outcome_ids.is_empty() {
            let mut pending = s.pending_outcomes.lock();
            for id in &stage.outcome_ids {
                pending.remove(id);
            }
        }
        let appends = stage.replies.len() as u64;
        s.appends.fetch_add(appends, Ordering::Relaxed);
        s.events.fetch_add(stage.events, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
        s.batch_appends_max.fetch_max(appends, Ordering::Relaxed);
        for (reply, receipt) in stage.replies {
            let _ = reply.send(Ok(receipt));
        }
        if let Some(observer) = &s.batch_observer {
            observer.observe(&crate::store::BatchCommitted {
                appends,
                events: stage.events,
                commit: stage.started.elapsed(),
            });
        }
    }

    fn refuse(&self, group: Vec<Stage>) {
        for (reply, _) in group.into_iter().flat_map(|stage| stage.replies) {
            let _ = reply.send(Err(self.shared.failed_error().into()));
        }
    }
}

/// Type of the in-memory table of heads not yet checkpointed.
pub(crate) type DirtyHeads = HashMap<Vec<u8>, HeadEntry>;
