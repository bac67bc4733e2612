//! Segments: the unit the writer inserts into the `log` tree, one per group-commit batch.
//!
//! A segment holds the commit records of one batch, in position order, behind a small offset
//! table so that one record can be found and decoded without decoding its neighbours:
//!
//! ```text
//! segment = [format: u8 = 1][n: u32]
//!           n × [relative position: u32][offset: u32][length: u32]
//!           record bytes …
//! record  = [format: u8 = 1][prev: u64][first version: u64][count: u32][CBOR CommitRecord]
//! ```
//!
//! `prev` is the position of the previous commit of the same stream (0 for its first commit):
//! every stream is a backward chain through the log, which the readers walk, so no per-commit
//! index entry has to be written (see the parent module for why that matters). The fixed-size
//! record header lets a walk follow the chain without decoding CBOR. All integers big-endian.

use sled::IVec;

use super::record::corrupt_at;
use crate::store::StoreError;
use crate::types::{Position, Version};

/// Format byte of segments.
pub(crate) const SEGMENT_FORMAT: u8 = 1;
/// Format byte of records inside a segment.
pub(crate) const RECORD_FORMAT: u8 = 1;
/// Bytes of a record's fixed header.
pub(crate) const RECORD_HEADER_LEN: usize = 1 + 8 + 8 + 4;
const SEGMENT_HEADER_LEN: usize = 1 + 4;
const ENTRY_LEN: usize = 12;

/// The fixed header of a commit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    /// Position of the stream's previous commit (`Position(0)`: none).
    pub(crate) prev: Position,
    pub(crate) first_version: Version,
    pub(crate) count: u32,
}

impl RecordHeader {
    pub(crate) fn last_version(&self) -> Version {
        self.first_version.advance(u64::from(self.count).saturating_sub(1))
    }

    /// Writes the header into the first bytes of `record` (which the caller reserved).
    pub(crate) fn write_into(&self, record: &mut [u8]) {
        record[0] = RECORD_FORMAT;
        record[1..9].copy_from_slice(&self.prev.0.to_be_bytes());
        record[9..17].copy_from_slice(&self.first_version.0.to_be_bytes());
        record[17..21].copy_from_slice(&self.count.to_be_bytes());
    }

    /// Reads a record's header; `position` names the record in errors.
    pub(crate) fn read(position: Position, record: &[u8]) -> Result<RecordHeader, StoreError> {
        if record.len() < RECORD_HEADER_LEN {
            return Err(corrupt_at(position, "record shorter than its header"));
        }
        if record[0] != RECORD_FORMAT {
            return Err(corrupt_at(
                position,
                &format!("unknown record format byte {} (this build reads {RECORD_FORMAT})", record[0]),
            ));
        }
        let header = RecordHeader {
            prev: Position(be_u64(&record[1..9])),
            first_version: Version(be_u64(&record[9..17])),
            count: be_u32(&record[17..21]),
        };
        if header.count == 0 || header.first_version == Version(0) {
            return Err(corrupt_at(position, "record header has no events or version 0"));
        }
        if header.prev >= position {
            return Err(corrupt_at(position, "record points forward to its previous commit"));
        }
        Ok(header)
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
        let mut out = Vec::with_capacity(SEGMENT_HEADER_LEN + self.entries.len() * ENTRY_LEN + self.data.len());
        out.push(SEGMENT_FORMAT);
        out.extend_from_slice(&u32::try_from(self.entries.len()).unwrap_or(u32::MAX).to_be_bytes());
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
            return Err(what(&format!("unknown format byte {} (this build reads {SEGMENT_FORMAT})", bytes[0])));
        }
        let n = be_u32(&bytes[1..5]) as usize;
        let table_end = n
            .checked_mul(ENTRY_LEN)
            .and_then(|t| t.checked_add(SEGMENT_HEADER_LEN))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| what("offset table runs past the end"))?;
        if n == 0 {
            return Err(what("no records"));
        }
        let data_len = bytes.len() - table_end;
        let segment = Segment { first, bytes, n };
        let mut previous_relative = None;
        for i in 0..n {
            let (relative, offset, len) = segment.entry(i);
            if offset.checked_add(len).is_none_or(|end| end > data_len) {
                return Err(what(&format!("record {i} runs past the end")));
            }
            if i == 0 && relative != 0 {
                return Err(what("the first record does not start at the segment's position"));
            }
            if previous_relative.is_some_and(|p| relative <= p) {
                return Err(what("records are not in position order"));
            }
            previous_relative = Some(relative);
        }
        Ok(segment)
    }

    fn entry(&self, i: usize) -> (u32, usize, usize) {
        let at = SEGMENT_HEADER_LEN + i * ENTRY_LEN;
        let b = &self.bytes[at..at + ENTRY_LEN];
        (be_u32(&b[0..4]), be_u32(&b[4..8]) as usize, be_u32(&b[8..12]) as usize)
    }

    pub(crate) fn first(&self) -> Position {
        self.first
    }

    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// The first position and bytes of record `i`.
    pub(crate) fn record(&self, i: usize) -> (Position, &[u8]) {
        let (relative, offset, len) = self.entry(i);
        let data = SEGMENT_HEADER_LEN + self.n * ENTRY_LEN;
        (self.first.advance(u64::from(relative)), &self.bytes[data + offset..data + offset + len])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(prev: u64, first: u64, count: u32, body: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; RECORD_HEADER_LEN];
        RecordHeader { prev: Position(prev), first_version: Version(first), count }.write_into(&mut r);
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
        let (p, bytes) = s.record(1);
        assert_eq!(p, Position(12));
        let h = RecordHeader::read(p, bytes).expect("valid");
        assert_eq!((h.prev, h.first_version, h.count), (Position(3), Version(5), 1));
        assert_eq!(&bytes[RECORD_HEADER_LEN..], b"c");
    }

    #[test]
    fn damaged_segments_are_errors() {
        for bytes in [vec![], vec![1], vec![2, 0, 0, 0, 1], vec![1, 0, 0, 0, 9, 0, 0]] {
            assert!(Segment::parse(Position(1), IVec::from(bytes)).is_err());
        }
        let mut b = SegmentBuilder::default();
        b.push(0, &record(0, 1, 1, b"x"));
        let mut bytes = b.finish();
        let last = bytes.len() - 1;
        bytes.truncate(last - 3);
        assert!(Segment::parse(Position(1), IVec::from(bytes)).is_err());
    }
}
