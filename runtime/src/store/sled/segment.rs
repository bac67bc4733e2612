//! Segments: the unit the writer inserts into the `log` tree, one per group-commit batch.
//!
//! A segment holds the commit records of one batch, in position order, behind a small offset
//! table so that one record can be found and decoded without decoding its neighbours:
//!
//! ```text
//! segment = [format: u8 = 1][n: u32]
//!           n × [relative position: u32][offset: u32][length: u32]
//!           record bytes …
//! record  = [format: u8 = 2][prev segment: u64][prev commit: u64][first version: u64]
//!           [count: u32][stream key length: u16][stream key][body]
//! ```
//!
//! `prev` locates the previous commit of the same stream (segment key and commit position; all
//! zero for the stream's first commit): every stream is a backward chain through the log,
//! which readers walk, so no per-commit index entry has to be written (see the parent module
//! for why that matters). A [`Locator`] names the segment as well as the commit so that a
//! reader fetches it with a point `get` — sled range lookups copy whole leaf nodes. The binary
//! header lets a walk, and the recovery scan, follow chains without decoding the body. All
//! integers of segments and headers big-endian.
//!
//! The record's format byte names its body's encoding: format 2 (written now) is the compact
//! binary body of [`body`](super::body); format 1, written by earlier builds, has the same
//! header and a CBOR [`CommitRecord`](super::record::CommitRecord) as its body, and is still
//! read, so a store may hold records of both formats. A reader meets any other format byte as
//! a [`StoreError::Corrupt`] naming it. Segments are validated lazily: opening one checks its header and table size,
//! each record access checks its own bounds.

use sled::IVec;

use crate::store::StoreError;
use crate::types::{Position, Version};

/// Format byte of segments.
pub(crate) const SEGMENT_FORMAT: u8 = 1;
/// Format byte of the records this build writes: the binary header below and a binary body
/// (see [`body`](super::body)).
pub(crate) const RECORD_FORMAT: u8 = 2;
/// Format byte of records with a CBOR body ([`CommitRecord`](super::record::CommitRecord)),
/// which builds before format 2 wrote; still read.
pub(crate) const RECORD_FORMAT_CBOR: u8 = 1;
/// Bytes of a record's fixed header, before the stream key.
pub(crate) const RECORD_FIXED_LEN: usize = 1 + 8 + 8 + 8 + 4 + 2;
const SEGMENT_HEADER_LEN: usize = 1 + 4;
const ENTRY_LEN: usize = 12;

/// Where a commit is: the key of its segment and its first position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Locator {
    pub(crate) segment: Position,
    pub(crate) commit: Position,
}

impl Locator {
    /// "No commit" (the `prev` of a stream's first commit).
    pub(crate) const NONE: Locator = Locator {
        segment: Position(0),
        commit: Position(0),
    };

    pub(crate) fn is_none(self) -> bool {
        self.commit == Position(0)
    }

    pub(crate) fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.segment.0.to_be_bytes());
        out[8..].copy_from_slice(&self.commit.0.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8], what: &str) -> Result<Locator, StoreError> {
        if bytes.len() < 16 {
            return Err(StoreError::Corrupt {
                what: what.to_string(),
                reason: "locator shorter than 16 bytes".into(),
            });
        }
        Ok(Locator {
            segment: Position(be_u64(&bytes[..8])),
            commit: Position(be_u64(&bytes[8..16])),
        })
    }
}

/// The fixed header of a commit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    /// The stream's previous commit ([`Locator::NONE`]: none).
    pub(crate) prev: Locator,
    pub(crate) first_version: Version,
    pub(crate) count: u32,
}

impl RecordHeader {
    pub(crate) fn last_version(&self) -> Version {
        self.first_version
            .advance(u64::from(self.count).saturating_sub(1))
    }

    /// Writes the header into the first bytes of `record` (which the encoder reserved), after
    /// the format byte the encoder wrote.
    pub(crate) fn write_into(&self, record: &mut [u8]) {
        record[1..17].copy_from_slice(&self.prev.encode());
        record[17..25].copy_from_slice(&self.first_version.0.to_be_bytes());
        record[25..29].copy_from_slice(&self.count.to_be_bytes());
    }

    /// Reads a record's header and returns it with the stream key and the body;
    /// `position` names the record in errors.
    pub(crate) fn read(
        position: Position,
        record: &[u8],
    ) -> Result<(RecordHeader, &[u8], &[u8]), StoreError> {
        if record.len() < RECORD_FIXED_LEN {
            return Err(corrupt_at(position, "record shorter than its header"));
        }
        if record[0] != RECORD_FORMAT && record[0] != RECORD_FORMAT_CBOR {
            return Err(corrupt_at(
                position,
                &format!(
                    "unknown record format byte {} (this build reads {RECORD_FORMAT_CBOR} and \
                     {RECORD_FORMAT})",
                    record[0]
                ),
            ));
        }
        let header = RecordHeader {
            prev: Locator::decode(&record[1..17], "record header")?,
            first_version: Version(be_u64(&record[17..25])),
            count: be_u32(&record[25..29]),
        };
        if header.count == 0 || header.first_version == Version(0) {
            return Err(corrupt_at(
                position,
                "record header has no events or version 0",
            ));
        }
        if header.prev.commit >= position || header.prev.segment > header.prev.commit {
            return Err(corrupt_at(
                position,
                "record links forward to its previous commit",
            ));
        }
        let key_len = usize::from(u16::from_be_bytes([record[29], record[30]]));
        let key_end = RECORD_FIXED_LEN + key_len;
        if record.len() < key_end {
            return Err(corrupt_at(position, "record shorter than its stream key"));
        }
        Ok((
            header,
            &record[RECORD_FIXED_LEN..key_end],
            &record[key_end..],
        ))
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// Builds a segment.
#[derive(Debug, Default)]
pub(crate) struct SegmentBuilder {
    entries: Vec<(u32, u32, u32)>,
    data: Vec<u8>,
}

impl SegmentBuilder {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of record data so far.
    pub(crate) fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Adds a record whose first event is `relative` positions after the segment's first.
    pub(crate) fn push(&mut self, relative: u32, record: &[u8]) {
        // Offsets fit in u32: the writer bounds a segment's bytes far below 4 GiB.
        let offset = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
        self.entries.push((relative, offset, len));
        self.data.extend_from_slice(record);
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            SEGMENT_HEADER_LEN + self.entries.len() * ENTRY_LEN + self.data.len(),
        );
        out.push(SEGMENT_FORMAT);
        out.extend_from_slice(
            &u32::try_from(self.entries.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for (relative, offset, len) in &self.entries {
            out.extend_from_slice(&relative.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&len.to_be_bytes());
        }
        out.extend_from_slice(&self.data);
        out
    }
}

/// A segment read from the log, checked for structural validity (not yet its records).
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    first: Position,
    bytes: IVec,
    n: usize,
}

impl Segment {
    pub(crate) fn parse(first: Position, bytes: IVec) -> Result<Segment, StoreError> {
        let what = |reason: &str| StoreError::Corrupt {
            what: format!("log segment at position {first}"),
            reason: reason.to_string(),
        };
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err(what("shorter than its header"));
        }
        if bytes[0] != SEGMENT_FORMAT {
            return Err(what(&format!(
                "unknown format byte {} (this build reads {SEGMENT_FORMAT})",
                bytes[0]
            )));
        }
        let n = be_u32(&bytes[1..5]) as usize;
        n.checked_mul(ENTRY_LEN)
            .and_then(|t| t.checked_add(SEGMENT_HEADER_LEN))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| what("offset table runs past the end"))?;
        if n == 0 {
            return Err(what("no records"));
        }
        let segment = Segment { first, bytes, n };
        Ok(segment)
    }

    fn entry(&self, i: usize) -> (u32, usize, usize) {
        let at = SEGMENT_HEADER_LEN + i * ENTRY_LEN;
        let b = &self.bytes[at..at + ENTRY_LEN];
        (
            be_u32(&b[0..4]),
            be_u32(&b[4..8]) as usize,
            be_u32(&b[8..12]) as usize,
        )
    }

    pub(crate) fn first(&self) -> Position {
        self.first
    }

    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// The first position and bytes of record `i` (which must be below [`Segment::len`]).
    pub(crate) fn record(&self, i: usize) -> Result<(Position, &[u8]), StoreError> {
        let (relative, offset, len) = self.entry(i.min(self.n - 1));
        let position = self.first.advance(u64::from(relative));
        let data = SEGMENT_HEADER_LEN + self.n * ENTRY_LEN;
        let bytes = offset
            .checked_add(data)
            .and_then(|start| Some((start, start.checked_add(len)?)))
            .and_then(|(start, end)| self.bytes.get(start..end))
            .ok_or_else(|| {
                corrupt_at(
                    position,
                    &format!("record {i} runs past the end of its segment"),
                )
            })?;
        Ok((position, bytes))
    }

    /// The index of the record that starts at `position`, if any.
    pub(crate) fn find_start(&self, position: Position) -> Option<usize> {
        let relative = u32::try_from(position.0.checked_sub(self.first.0)?).ok()?;
        let (mut lo, mut hi) = (0usize, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (r, _, _) = self.entry(mid);
            match r.cmp(&relative) {
                std::cmp::Ordering::Equal => return Some(mid),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// The index of the record that contains `position` (the last starting at or before it).
    pub(crate) fn find_containing(&self, position: Position) -> usize {
        let relative = position.0.saturating_sub(self.first.0);
        let (mut lo, mut hi) = (0usize, self.n);
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if u64::from(self.entry(mid).0) <= relative {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// A damaged log record at `position`.
pub(crate) fn corrupt_at(position: Position, reason: &str) -> StoreError {
    StoreError::Corrupt {
        what: format!("log record at position {position}"),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(prev: u64, first: u64, count: u32, body: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; RECORD_FIXED_LEN];
        r[0] = RECORD_FORMAT;
        r[RECORD_FIXED_LEN - 2..].copy_from_slice(&1u16.to_be_bytes());
        r.push(b'k');
        let prev = Locator {
            segment: Position(prev.min(1)),
            commit: Position(prev),
        };
        RecordHeader {
            prev,
            first_version: Version(first),
            count,
        }
        .write_into(&mut r);
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn build_parse_find() {
        let mut b = SegmentBuilder::default();
        b.push(0, &record(0, 1, 2, b"ab"));
        b.push(2, &record(3, 5, 1, b"c"));
        b.push(3, &record(0, 1, 1, b"d"));
        let s = Segment::parse(Position(10), IVec::from(b.finish())).expect("valid");
        assert_eq!(s.len(), 3);
        assert_eq!(s.find_start(Position(12)), Some(1));
        assert_eq!(s.find_start(Position(11)), None);
        assert_eq!(s.find_containing(Position(11)), 0);
        assert_eq!(s.find_containing(Position(13)), 2);
        let (p, bytes) = s.record(1).expect("in bounds");
        assert_eq!(p, Position(12));
        let (h, key, body) = RecordHeader::read(p, bytes).expect("valid");
        assert_eq!(
            (h.prev.commit, h.first_version, h.count),
            (Position(3), Version(5), 1)
        );
        assert_eq!((key, body), (&b"k"[..], &b"c"[..]));
    }

    #[test]
    fn damaged_segments_are_errors() {
        for bytes in [
            vec![],
            vec![1],
            vec![2, 0, 0, 0, 1],
            vec![1, 0, 0, 0, 9, 0, 0],
        ] {
            assert!(Segment::parse(Position(1), IVec::from(bytes)).is_err());
        }
        let mut b = SegmentBuilder::default();
        b.push(0, &record(0, 1, 1, b"x"));
        let mut bytes = b.finish();
        let last = bytes.len() - 1;
        bytes.truncate(last - 3);
        let s = Segment::parse(Position(1), IVec::from(bytes)).expect("header is intact");
        assert!(
            s.record(0).is_err(),
            "a truncated record is reported on access"
        );
    }
}
