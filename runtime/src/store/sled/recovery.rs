//! Recovery and integrity checking when the sled store is opened.
//!
//! # What a crash can leave behind
//! The writer inserts a batch's segments in position order; the flusher inserts the derived
//! entries of a batch (command ids, skips, the batch number), syncs (`disk.rs`), records the
//! batch in the acknowledgement record, and only then acknowledges. A sync makes every earlier
//! insert durable. So after a crash — of the process, or of the machine:
//! - every acknowledged commit is in the log, with its command-id and skip entries;
//! - segments of the batches in flight may be present or absent, each one whole;
//! - if a segment in flight is missing while a later one is present (a "hole"), every segment
//!   after the hole was written after an insert that was never fsynced, so none of it was
//!   acknowledged: recovery removes them, keeping positions gap-free;
//! - stream heads are checkpointed lazily, so the `heads` tree may lag the log; recovery
//!   re-derives the heads (and command ids and skips) of the log after the watermark;
//! - command-id and skip entries of lost batches may remain ("dangling"). Readers verify every
//!   such entry against the commit it names and ignore a mismatch, so a dangling entry is never
//!   believed; the next commit with that key overwrites it.
//!
//! The **watermark** (`meta/derived_through`) is written only after the fsync that made the
//! derived entries up to it durable, so recovery only re-derives the log after it.
//!
//! # Lost acknowledged data
//! A log can also end *before* what was acknowledged: sled's own recovery stops at the first
//! message that fails its checksum, so a damaged byte in the middle of its file, or a disk that
//! lost writes it had confirmed, would quietly drop every later batch. Before it changes
//! anything, recovery compares the log's last position and the last batch number found in sled
//! with the acknowledgement record (`disk.rs`), and refuses to open a store that lost what the
//! record says was acknowledged ([`StoreError::AcknowledgedDataLost`], naming the positions).
//!
//! # The integrity check
//! [`IntegrityCheck::Structure`] (the default) reads the whole log: positions contiguous from
//! 1, every segment and record header well-formed, each commit linked to its stream's previous
//! commit with contiguous versions, and the checkpointed heads consistent with the log (this
//! needs one map entry per stream while it runs); it decodes the record bodies of the tail after
//! the watermark. [`IntegrityCheck::Full`] also decodes every record's body.
//! [`IntegrityCheck::Tail`] checks only the log after the watermark, for very large stores
//! where opening must be fast. A violation is reported as
//! [`StoreError::Corrupt`], and recovery changes nothing when it finds one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::disk::Disk;
use super::keys;
use super::record::{CommandRecord, CommitRecord, HeadEntry};
use super::segment::{corrupt_at, Locator, RecordHeader, Segment};
use super::writer::{BATCH_KEY, WATERMARK_KEY};
use super::{io, locate, Faults, Trees, SKIP_EVERY, SKIP_STEP};
use crate::store::StoreError;
use crate::types::{Position, Version};

/// The on-disk layout version this build writes and reads.
pub(crate) const LAYOUT_VERSION: u8 = 1;
const LAYOUT_KEY: &[u8] = b"layout";

/// How much of the log to check on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntegrityCheck {
    /// The whole log, decoding every commit record's body.
    Full,
    /// The whole log's structure — segments, record headers, positions, every stream's chain
    /// and versions, checkpointed heads — decoding the record bodies of the tail only. Bodies are
    /// still checked on every read.
    #[default]
    Structure,
    /// Only the log after the watermark.
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
    /// Commits after the watermark whose derived entries were re-derived.
    pub records_reindexed: u64,
    /// Unacknowledged segments removed because an earlier segment in flight was lost.
    pub records_removed: u64,
    /// The number of the last batch the journal wrote (batches are numbered from 1).
    pub batch: u64,
    /// How long recovery took.
    pub duration: Duration,
}

/// One stream's state during the scan.
struct Scanned {
    head: HeadEntry,
    /// The head as of the watermark (its latest commit at or below it).
    at_watermark: Option<HeadEntry>,
}

/// Checks and repairs the store; see the [module docs](self). Nothing is written before the
/// log has been found complete: a structural error, or a log that ends before what the
/// acknowledgement record of `disk` says was acknowledged, changes nothing.
pub(crate) fn recover(
    trees: &Trees,
    check: IntegrityCheck,
    disk: &mut Disk,
    faults: &Faults,
) -> Result<RecoveryReport, StoreError> {
    let started = Instant::now();
    check_layout(trees)?;
    let watermark = match trees
        .meta
        .get(WATERMARK_KEY)
        .map_err(io("reading the watermark"))?
    {
        Some(bytes) => Position(keys::read_u64(&bytes, "watermark")?),
        None => Position(0),
    };
    let mut report = RecoveryReport::default();
    let scan_from = match check {
        IntegrityCheck::Full | IntegrityCheck::Structure => Position(1),
        IntegrityCheck::Tail => watermark.next(),
    };
    if check == IntegrityCheck::Tail && watermark > Position(0) {
        check_segment_ends_at(trees, watermark)?;
    }
    let mut streams: HashMap<Vec<u8>, Scanned> = HashMap::new();
    let mut derived: Vec<(bool, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut expected = scan_from;
    let mut hole_at: Option<Position> = None;
    for item in trees.log.range(keys::position_key(scan_from)..) {
        let (key, bytes) = item.map_err(io("reading the log"))?;
        let first = Position(keys::read_u64(&key, "log key")?);
        if first != expected {
            if first < expected || expected <= watermark {
                return Err(StoreError::Corrupt {
                    what: "the log".into(),
                    reason: format!(
                        "expected a segment at position {expected}, found one at {first} \
                         (durable watermark {watermark})"
                    ),
                });
            }
            hole_at = Some(first);
            break;
        }
        let segment = Segment::parse(first, bytes)?;
        for i in 0..segment.len() {
            let (position, bytes) = segment.record(i)?;
            if position != expected {
                return Err(corrupt_at(
                    position,
                    &format!("expected a commit at position {expected}"),
                ));
            }
            let (header, stream_key, _) = RecordHeader::read(position, bytes)?;
            // The record body is decoded where it is needed (the tail, for its command id) or
            // asked for (a full check).
            let record = if check == IntegrityCheck::Full || position > watermark {
                Some(CommitRecord::decode(position, bytes)?.2)
            } else {
                None
            };
            let previous = match (check, streams.get(stream_key)) {
                (_, Some(s)) => Some(s.head),
                (IntegrityCheck::Tail, None) => previous_by_chain(trees, &header)?,
                (_, None) => None,
            };
            check_link(stream_key, position, &header, previous)?;
            let at = Locator {
                segment: first,
                commit: position,
            };
            let head = HeadEntry {
                version: header.last_version(),
                at,
                count: header.count,
            };
            match streams.get_mut(stream_key) {
                Some(scanned) => scanned.head = head,
                None => {
                    streams.insert(
                        stream_key.to_vec(),
                        Scanned {
                            head,
                            at_watermark: None,
                        },
                    );
                }
            }
            if position <= watermark {
                if let Some(scanned) = streams.get_mut(stream_key) {
                    scanned.at_watermark = Some(head);
                }
            } else if let Some(record) = &record {
                derive(stream_key, &header, record, at, &mut derived)?;
                report.records_reindexed += 1;
            }
            report.records_checked += 1;
            report.events_checked += u64::from(header.count);
            expected = position.advance(u64::from(header.count));
        }
    }
    if check != IntegrityCheck::Tail {
        check_heads(trees, &streams)?;
    }
    let head = Position(expected.0 - 1);
    report.batch = match trees
        .meta
        .get(BATCH_KEY)
        .map_err(io("reading the batch number"))?
    {
        Some(bytes) => keys::read_u64(&bytes, "batch number")?,
        None => 0,
    };
    let acknowledged = disk.acknowledged();
    if acknowledged.position > head || acknowledged.batch > report.batch {
        return Err(StoreError::AcknowledgedDataLost {
            acknowledged_batch: acknowledged.batch,
            acknowledged_position: acknowledged.position,
            found_batch: report.batch,
            found_position: head,
        });
    }
    if let Some(hole) = hole_at {
        report.records_removed = remove_from(trees, hole)?;
        tracing::warn!(
            missing = %expected, removed_segments = report.records_removed,
            "removed unacknowledged log segments written after a segment the crash lost"
        );
    }
    report.head_position = head;
    let mut changed = report.records_removed > 0;
    for (is_command, key, value) in derived {
        let tree = if is_command {
            &trees.commands
        } else {
            &trees.skips
        };
        tree.insert(key, value).map_err(io("re-deriving entries"))?;
        changed = true;
    }
    for (key, scanned) in &streams {
        if scanned.head.at.commit > watermark {
            trees
                .heads
                .insert(key.as_slice(), &scanned.head.encode()[..])
                .map_err(io("re-deriving heads"))?;
            changed = true;
        }
    }
    if changed || report.head_position != watermark {
        disk.sync(&trees.db, faults)?;
        trees
            .meta
            .insert(WATERMARK_KEY, &report.head_position.0.to_be_bytes())
            .map_err(io("writing the watermark"))?;
        disk.sync(&trees.db, faults)?;
    }
    report.duration = started.elapsed();
    tracing::info!(?report, "store recovered");
    Ok(report)
}

/// The stream's head before `header`'s commit, from the commit its `prev` names.
fn previous_by_chain(
    trees: &Trees,
    header: &RecordHeader,
) -> Result<Option<HeadEntry>, StoreError> {
    if header.prev.is_none() {
        return Ok(None);
    }
    let Some((segment, i)) = locate(trees, header.prev)? else {
        return Err(corrupt_at(
            header.prev.commit,
            "a later commit links to this position, where no commit starts",
        ));
    };
    let (position, bytes) = segment.record(i)?;
    let (prev, _, _) = RecordHeader::read(position, bytes)?;
    Ok(Some(HeadEntry {
        version: prev.last_version(),
        at: header.prev,
        count: prev.count,
    }))
}

/// A commit must link to its stream's previous commit and continue its versions.
fn check_link(
    stream_key: &[u8],
    position: Position,
    header: &RecordHeader,
    previous: Option<HeadEntry>,
) -> Result<(), StoreError> {
    let (prev, version) = previous.map_or((Locator::NONE, Version(0)), |h| (h.at, h.version));
    if header.prev != prev || header.first_version != version.next() {
        let stream =
            keys::parse_stream_key(stream_key).map_or_else(|e| format!("<{e}>"), |s| s.to_string());
        return Err(StoreError::Corrupt {
            what: format!("stream {stream}"),
            reason: format!(
                "the commit at position {position} starts at version {} after the commit at {}, \
                 but the stream is at version {version} after the commit at {}",
                header.first_version, header.prev.commit, prev.commit
            ),
        });
    }
    Ok(())
}

/// The derived entries of one commit: its command id and its skips.
fn derive(
    stream_key: &[u8],
    header: &RecordHeader,
    record: &CommitRecord,
    at: Locator,
    out: &mut Vec<(bool, Vec<u8>, Vec<u8>)>,
) -> Result<(), StoreError> {
    if let Some(id) = &record.command_id {
        let bytes = CommandRecord::Committed {
            segment: at.segment.0,
            position: at.commit.0,
        }
        .encode()?;
        out.push((true, id.as_bytes().to_vec(), bytes));
    }
    let first_skip = header.first_version.0.div_ceil(SKIP_EVERY) * SKIP_EVERY;
    for skip in (first_skip..=header.last_version().0).step_by(SKIP_STEP) {
        out.push((
            false,
            [stream_key, &skip.to_be_bytes()].concat(),
            at.encode().to_vec(),
        ));
    }
    Ok(())
}

/// Every checkpointed head must be consistent with the log: not older than the stream's head
/// at the watermark, not newer than its head, and present for every stream at the watermark.
fn check_heads(trees: &Trees, streams: &HashMap<Vec<u8>, Scanned>) -> Result<(), StoreError> {
    let mut present = 0usize;
    for item in trees.heads.iter() {
        let (key, value) = item.map_err(io("reading stream heads"))?;
        let head = HeadEntry::decode(&value)?;
        let bad = |reason: String| StoreError::Corrupt {
            what: "the stream heads".into(),
            reason,
        };
        let Some(scanned) = streams.get(key.as_ref()) else {
            return Err(bad(format!(
                "a head (commit {}) names a stream with no commit in the log",
                head.at.commit
            )));
        };
        let floor = scanned.at_watermark.map_or(Position(0), |h| h.at.commit);
        let exact = [Some(scanned.head), scanned.at_watermark].contains(&Some(head));
        let commit = head.at.commit;
        if commit > scanned.head.at.commit
            || commit < floor
            || (!exact && (commit == floor || commit == scanned.head.at.commit))
        {
            return Err(bad(format!(
                "the checkpointed head (version {}, commit {}) disagrees with the log (version {}, commit {})",
                head.version, head.at.commit, scanned.head.version, scanned.head.at.commit
            )));
        }
        if scanned.at_watermark.is_some() {
            present += 1;
        }
    }
    let expected = streams
        .values()
        .filter(|s| s.at_watermark.is_some())
        .count();
    if present != expected {
        return Err(StoreError::Corrupt {
            what: "the stream heads".into(),
            reason: format!(
                "{} streams have commits below the watermark but no checkpointed head",
                expected - present.min(expected)
            ),
        });
    }
    Ok(())
}

fn check_layout(trees: &Trees) -> Result<(), StoreError> {
    match trees
        .meta
        .get(LAYOUT_KEY)
        .map_err(io("reading the layout version"))?
    {
        Some(v) if v.as_ref() == [LAYOUT_VERSION] => Ok(()),
        Some(v) => Err(StoreError::Corrupt {
            what: "the database layout".into(),
            reason: format!(
                "layout version {:?}, this build reads {LAYOUT_VERSION}",
                v.as_ref()
            ),
        }),
        None if trees.log.is_empty() => {
            trees
                .meta
                .insert(LAYOUT_KEY, &[LAYOUT_VERSION])
                .map_err(io("writing the layout version"))?;
            Ok(())
        }
        None => Err(StoreError::Corrupt {
            what: "the database layout".into(),
            reason: "the log has records but no layout version".into(),
        }),
    }
}

/// In tail mode, the watermark must be the end of a segment (it is set at batch boundaries).
fn check_segment_ends_at(trees: &Trees, watermark: Position) -> Result<(), StoreError> {
    let last = trees
        .log
        .range(..=keys::position_key(watermark))
        .next_back()
        .transpose()
        .map_err(io("reading the log"))?;
    let ok = match last {
        Some((key, bytes)) => {
            let segment = Segment::parse(Position(keys::read_u64(&key, "log key")?), bytes)?;
            let (position, record) = segment.record(segment.len() - 1)?;
            let (header, _, _) = RecordHeader::read(position, record)?;
            position.advance(u64::from(header.count) - 1) == watermark
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            what: "the log".into(),
            reason: format!("no segment ends at the durable watermark {watermark}"),
        })
    }
}

fn remove_from(trees: &Trees, from: Position) -> Result<u64, StoreError> {
    let keys: Vec<sled::IVec> = trees
        .log
        .range(keys::position_key(from)..)
        .keys()
        .collect::<Result<_, _>>()
        .map_err(io("reading the log tail"))?;
    for key in &keys {
        trees
            .log
            .remove(key)
            .map_err(io("removing an unacknowledged segment"))?;
    }
    Ok(keys.len() as u64)
}
