//! Recovery and integrity checking when the sled store is opened.
//!
//! # What a crash can leave behind
//! The writer inserts log records in position order; the flusher inserts the derived entries
//! (stream index, command ids) of a batch, fsyncs, and only then acknowledges. An fsync makes
//! every earlier insert durable. So after a crash:
//! - every acknowledged commit is in the log, with its index and command entries;
//! - commits of the batches in flight may be present or absent, each one whole (one insert);
//! - if a record in flight is missing while a later one is present (a "hole"), every record
//!   after the hole was written after an insert that was never fsynced, so none of them was
//!   acknowledged: recovery removes them, keeping positions gap-free;
//! - derived entries of the batches in flight may be missing (recovery re-derives them from
//!   the log after the watermark) or may point at records that were lost ("dangling"). Readers
//!   verify every index and command entry against the log record it names and skip a mismatch,
//!   so a dangling entry is never believed; the next commit at that key overwrites it.
//!
//! The **watermark** (`meta/indexed_through`) is written only after the fsync that made the
//! derived entries up to it durable, so recovery only re-derives the log after it.
//!
//! # The integrity check
//! [`IntegrityCheck::Full`] (the default) reads the whole log: positions contiguous from 1,
//! every record decodable, versions contiguous per stream (this needs one map entry per stream
//! while it runs). [`IntegrityCheck::Tail`] checks only the log after the watermark, for very
//! large stores where opening must be fast. A violation below the watermark is corruption and
//! is reported as [`StoreError::Corrupt`], changing nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::keys;
use super::record::{CommandRecord, CommitRecord, IndexEntry};
use super::writer::WATERMARK_KEY;
use super::{indexed_head, io, Trees};
use crate::store::StoreError;
use crate::types::{Position, Version};

/// The on-disk layout version this build writes and reads.
pub(crate) const LAYOUT_VERSION: u8 = 1;
const LAYOUT_KEY: &[u8] = b"layout";

/// How much of the log to check on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntegrityCheck {
    /// The whole log.
    #[default]
    Full,
    /// Only the log after the durable index watermark.
    Tail,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The position of the last event after recovery.
    pub head_position: Position,
    /// Log records (commits) checked.
    pub records_checked: u64,
    /// Events checked.
    pub events_checked: u64,
    /// Records after the watermark whose index entries were re-derived.
    pub records_reindexed: u64,
    /// Unacknowledged records removed because an earlier record in flight was lost.
    pub records_removed: u64,
    /// How long recovery took.
    pub duration: Duration,
}

/// Checks and repairs the store; see the [module docs](self).
pub(crate) fn recover(trees: &Trees, check: IntegrityCheck) -> Result<RecoveryReport, StoreError> {
    let started = Instant::now();
    check_layout(trees)?;
    let watermark = match trees.meta.get(WATERMARK_KEY).map_err(io("reading the watermark"))? {
        Some(bytes) => Position(keys::read_u64(&bytes, "index watermark")?),
        None => Position(0),
    };
    let mut report = RecoveryReport::default();
    let scan_from = match check {
        IntegrityCheck::Full => Position(1),
        IntegrityCheck::Tail => watermark.next(),
    };
    if check == IntegrityCheck::Tail && watermark > Position(0) {
        check_record_ends_at(trees, watermark)?;
    }
    let mut heads: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut expected = scan_from;
    let mut hole_at: Option<Position> = None;
    for item in trees.log.range(keys::position_key(scan_from)..) {
        let (key, value) = item.map_err(io("reading the log"))?;
        let position = Position(keys::read_u64(&key, "log key")?);
        if position != expected {
            if position < expected || expected <= watermark {
                return Err(StoreError::Corrupt {
                    what: "the log".into(),
                    reason: format!(
                        "expected a record at position {expected}, found one at {position} \
                         (durable watermark {watermark})"
                    ),
                });
            }
            hole_at = Some(position);
            break;
        }
        let record = CommitRecord::decode(position, &value)?;
        let stream = record.stream().map_err(|e| super::record::corrupt_at(position, &e.to_string()))?;
        let stream_key = keys::stream_key(&stream);
        let previous = match check {
            IntegrityCheck::Full => heads.get(&stream_key).copied().unwrap_or(0),
            IntegrityCheck::Tail => tail_previous_version(trees, &stream, &record, position)?,
        };
        if record.first_version != previous + 1 {
            return Err(StoreError::Corrupt {
                what: format!("stream {stream}"),
                reason: format!(
                    "the commit at position {position} starts at version {}, but the stream is at {previous}",
                    record.first_version
                ),
            });
        }
        let count = record.event_count();
        if check == IntegrityCheck::Full {
            heads.insert(stream_key.clone(), previous + count);
        }
        if position > watermark {
            reindex(trees, stream_key, &record, position)?;
            report.records_reindexed += 1;
        }
        report.records_checked += 1;
        report.events_checked += count;
        expected = position.advance(count);
    }
    if let Some(hole) = hole_at {
        report.records_removed = remove_from(trees, hole)?;
        tracing::warn!(
            missing = %expected, removed = report.records_removed,
            "removed unacknowledged log records written after a record the crash lost"
        );
    }
    report.head_position = Position(expected.0 - 1);
    if report.head_position != watermark || report.records_removed > 0 {
        trees
            .meta
            .insert(WATERMARK_KEY, &report.head_position.0.to_be_bytes())
            .map_err(io("writing the watermark"))?;
        trees.db.flush().map_err(io("flushing recovery"))?;
    }
    report.duration = started.elapsed();
    tracing::info!(?report, "store recovered");
    Ok(report)
}

fn check_layout(trees: &Trees) -> Result<(), StoreError> {
    match trees.meta.get(LAYOUT_KEY).map_err(io("reading the layout version"))? {
        Some(v) if v.as_ref() == [LAYOUT_VERSION] => Ok(()),
        Some(v) => Err(StoreError::Corrupt {
            what: "the database layout".into(),
            reason: format!("layout version {:?}, this build reads {LAYOUT_VERSION}", v.as_ref()),
        }),
        None if trees.log.is_empty() => {
            trees.meta.insert(LAYOUT_KEY, &[LAYOUT_VERSION]).map_err(io("writing the layout version"))?;
            Ok(())
        }
        None => Err(StoreError::Corrupt {
            what: "the database layout".into(),
            reason: "the log has records but no layout version".into(),
        }),
    }
}

/// In tail mode, the watermark must be the end of a record (batches end on commit boundaries).
fn check_record_ends_at(trees: &Trees, watermark: Position) -> Result<(), StoreError> {
    let last = trees
        .log
        .range(..=keys::position_key(watermark))
        .next_back()
        .transpose()
        .map_err(io("reading the log"))?;
    let ok = match last {
        Some((key, value)) => {
            let position = Position(keys::read_u64(&key, "log key")?);
            let record = CommitRecord::decode(position, &value)?;
            position.advance(record.event_count() - 1) == watermark
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            what: "the log".into(),
            reason: format!("no record ends at the durable watermark {watermark}"),
        })
    }
}

/// In tail mode, the stream's version before `record`, from the index (which may already hold
/// this record's own entry, written before the crash).
fn tail_previous_version(
    trees: &Trees,
    stream: &crate::types::StreamId,
    record: &CommitRecord,
    position: Position,
) -> Result<u64, StoreError> {
    let own_key = keys::stream_version_key(stream, Version(record.first_version));
    if let Some(v) = trees.streams.get(&own_key).map_err(io("reading the stream index"))? {
        if IndexEntry::decode(&v)?.position == position {
            return Ok(record.first_version - 1);
        }
    }
    Ok(indexed_head(trees, stream, None)?.0)
}

fn reindex(trees: &Trees, stream_key: Vec<u8>, record: &CommitRecord, position: Position) -> Result<(), StoreError> {
    let mut key = stream_key;
    key.extend_from_slice(&record.first_version.to_be_bytes());
    let count = u32::try_from(record.event_count())
        .map_err(|_| super::record::corrupt_at(position, "more than 2^32 events in one commit"))?;
    trees
        .streams
        .insert(key, &IndexEntry { position, count }.encode()[..])
        .map_err(io("re-deriving the stream index"))?;
    if let Some(id) = &record.command_id {
        let bytes = CommandRecord::Committed { position: position.0 }.encode()?;
        trees.commands.insert(id.as_bytes(), bytes).map_err(io("re-deriving command ids"))?;
    }
    Ok(())
}

fn remove_from(trees: &Trees, from: Position) -> Result<u64, StoreError> {
    let keys: Vec<sled::IVec> = trees
        .log
        .range(keys::position_key(from)..)
        .keys()
        .collect::<Result<_, _>>()
        .map_err(io("reading the log tail"))?;
    for key in &keys {
        trees.log.remove(key).map_err(io("removing an unacknowledged record"))?;
    }
    Ok(keys.len() as u64)
}
