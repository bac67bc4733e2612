//! The on-disk records of the sled store and their encodings.
//!
//! | tree        | key                            | value                                         |
//! |-------------|--------------------------------|-----------------------------------------------|
//! | `log`       | first position of a batch      | a [segment](super::segment) of commit records |
//! | `heads`     | stream key                     | [`HeadEntry`]: version and last commit        |
//! | `skips`     | stream key + version (k × 64)  | position of the commit holding that version   |
//! | `commands`  | command id (UTF-8)             | [`CommandRecord`]                             |
//! | `snapshots` | stream key + version           | [`SnapshotRecord`]                            |
//! | `meta`      | name                           | layout version, derived-data watermark        |
//!
//! The **segment is the unit of atomicity**: all commits of one group-commit batch are one sled
//! `insert`, so after a crash a batch is entirely present or entirely absent. Everything else
//! except snapshots and rejection records is derived from the log: `heads` is written lazily
//! (a checkpoint every `heads_checkpoint_interval`, from an in-memory table of the heads that
//! changed), `skips` lets a reader start a walk near any version, and committed `commands`
//! entries find a command's commit; recovery re-derives all of them for the log after the
//! watermark.
//!
//! A commit record is the binary header of [`segment`](super::segment) (stream, versions, chain
//! link) and a body holding the commit's metadata and events. Records of format 2, written
//! now, have the compact binary body of [`body`](super::body), read in place; records of
//! format 1, written by earlier builds, have a CBOR [`CommitRecord`] (serde, short field
//! names) and are still read — a store written by an earlier build opens, reads and takes
//! appends, and then holds both. [`decode_commit`] reads either; [`EventBuilder`] turns the
//! commits of one read into envelopes, sharing event type names and the stream among them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::body::{self, CommitView, EventView};
pub(crate) use super::body::{CommitRecord, EventRecord};
use super::keys;
use super::segment::{
    corrupt_at, Locator, RecordHeader, RECORD_FIXED_LEN, RECORD_FORMAT, RECORD_FORMAT_CBOR,
};
use crate::codec::{self, CodecError};
use crate::envelope::{CommitMeta, EncodedPayload, RecordedEvent};
use crate::store::{Fingerprint, PendingEvent, Snapshot, StoreError};
use crate::types::{CommandId, Position, StreamId, Timestamp, Version};

/// Format byte of command records.
pub(crate) const COMMAND_FORMAT: u8 = 1;
/// Format byte of snapshot records.
pub(crate) const SNAPSHOT_FORMAT: u8 = 1;

impl CommitRecord {
    /// Builds the record of an append.
    pub(crate) fn new(
        meta: &CommitMeta,
        fingerprint: Option<Fingerprint>,
        events: &[PendingEvent],
    ) -> CommitRecord {
        CommitRecord {
            recorded_at: meta.recorded_at.0,
            command_id: meta.command_id.as_ref().map(|c| c.as_str().to_string()),
            fingerprint: fingerprint.map(|f| f.0),
            correlation_id: meta.correlation_id.as_deref().map(str::to_string),
            causation_id: meta.causation_id.as_deref().map(str::to_string),
            events: events
                .iter()
                .map(|e| EventRecord {
                    event_id: e.event_id,
                    event_type: e.event_type.to_string(),
                    schema_version: e.schema_version,
                    payload: e.payload.clone(),
                })
                .collect(),
        }
    }

    /// Encodes the record of a commit to `stream` in format 2 (see [`body`](super::body))
    /// behind a header that holds only the format byte so far: the writer fills in the rest
    /// once it knows the stream's previous commit.
    pub(crate) fn encode(&self, stream: &StreamId) -> Result<Vec<u8>, CodecError> {
        let key_len = keys::stream_key_len(stream);
        let mut out = Vec::with_capacity(RECORD_FIXED_LEN + key_len + body::len(self));
        Self::encode_header_and_key(&mut out, RECORD_FORMAT, stream);
        body::write(self, &mut out)?;
        Ok(out)
    }

    /// Encodes the record in format 1, with a CBOR body, as builds before format 2 wrote it:
    /// kept to test that stores of such records still open, read and take appends.
    #[cfg(test)]
    pub(crate) fn encode_format_1(&self, stream: &StreamId) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        Self::encode_header_and_key(&mut out, RECORD_FORMAT_CBOR, stream);
        ciborium::into_writer(self, &mut out).map_err(|e| CodecError::Encode {
            what: "commit record",
            reason: e.to_string(),
        })?;
        Ok(out)
    }

    fn encode_header_and_key(out: &mut Vec<u8>, format: u8, stream: &StreamId) {
        out.push(format);
        out.resize(RECORD_FIXED_LEN - 2, 0);
        // Stream keys are at most 1 + 64 + 2 + 256 bytes (StreamId's limits).
        let key_len = keys::stream_key_len(stream);
        out.extend_from_slice(&u16::try_from(key_len).unwrap_or(u16::MAX).to_be_bytes());
        keys::push_stream_key(out, stream);
    }

    /// Decodes a record of either format into an owned record: its header, its stream and its
    /// body. Readers of many records use [`decode_commit`], which copies less.
    pub(crate) fn decode(
        position: Position,
        bytes: &[u8],
    ) -> Result<(RecordHeader, StreamId, CommitRecord), StoreError> {
        let (header, key, commit) = decode_commit(position, bytes)?;
        let stream = keys::parse_stream_key(key).map_err(|reason| corrupt_at(position, &reason))?;
        let record = match commit {
            Commit::Cbor(record) => record,
            Commit::Binary(view) => view
                .to_record()
                .map_err(|e| corrupt_at(position, &e.to_string()))?,
        };
        Ok((header, stream, record))
    }
}

/// A decoded commit body: format 1 decoded into an owned record, format 2 read in place.
#[derive(Debug)]
pub(crate) enum Commit<'a> {
    Cbor(CommitRecord),
    Binary(CommitView<'a>),
}

/// Decodes a record of either format: its header, its stream key and its body. The body is
/// checked against the header's event count.
pub(crate) fn decode_commit(
    position: Position,
    bytes: &[u8],
) -> Result<(RecordHeader, &[u8], Commit<'_>), StoreError> {
    let (header, key, body) = RecordHeader::read(position, bytes)?;
    let cannot = |e: &dyn std::fmt::Display| {
        corrupt_at(position, &format!("cannot decode commit record: {e}"))
    };
    // `RecordHeader::read` accepted the format byte, so `bytes` is not empty.
    let commit = if bytes[0] == RECORD_FORMAT_CBOR {
        let record: CommitRecord = crate::codec::from_slice(body).map_err(|e| cannot(&e))?;
        if record.events.len() != header.count as usize {
            return Err(corrupt_at(
                position,
                "commit record disagrees with its header",
            ));
        }
        Commit::Cbor(record)
    } else {
        Commit::Binary(CommitView::parse(body, header.count).map_err(|e| cannot(&e))?)
    };
    Ok((header, key, commit))
}

impl Commit<'_> {
    pub(crate) fn command_id(&self) -> Option<&str> {
        match self {
            Commit::Cbor(r) => r.command_id.as_deref(),
            Commit::Binary(v) => v.command_id,
        }
    }

    pub(crate) fn fingerprint(&self) -> Option<[u8; 16]> {
        match self {
            Commit::Cbor(r) => r.fingerprint,
            Commit::Binary(v) => v.fingerprint,
        }
    }

    pub(crate) fn meta(&self) -> Result<CommitMeta, StoreError> {
        let (recorded_at, command_id, correlation_id, causation_id) = match self {
            Commit::Cbor(r) => (
                r.recorded_at,
                r.command_id.as_deref(),
                r.correlation_id.as_deref(),
                r.causation_id.as_deref(),
            ),
            Commit::Binary(v) => (
                v.recorded_at,
                v.command_id,
                v.correlation_id,
                v.causation_id,
            ),
        };
        Ok(CommitMeta {
            recorded_at: Timestamp(recorded_at),
            command_id: command_id
                .map(|c| {
                    CommandId::stored(c).map_err(|e| StoreError::Corrupt {
                        what: "commit record".into(),
                        reason: e.to_string(),
                    })
                })
                .transpose()?,
            correlation_id: correlation_id.map(Arc::from),
            causation_id: causation_id.map(Arc::from),
        })
    }

    /// Calls `f` with each event of the commit, in order.
    pub(crate) fn for_each_event(
        &self,
        position: Position,
        mut f: impl FnMut(EventView<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match self {
            Commit::Cbor(r) => r.events.iter().try_for_each(|e| {
                f(EventView {
                    event_id: e.event_id,
                    event_type: &e.event_type,
                    schema_version: e.schema_version,
                    payload: &e.payload.0,
                })
            }),
            Commit::Binary(v) => v
                .for_each_event(|e| f(e).map_err(Decoded::Store))
                .map_err(|e| match e {
                    Decoded::Codec(e) => {
                        corrupt_at(position, &format!("cannot decode commit record: {e}"))
                    }
                    Decoded::Store(e) => e,
                }),
        }
    }
}

/// An error while visiting the events of a format 2 body: the body's or the visitor's.
enum Decoded {
    Codec(CodecError),
    Store(StoreError),
}

impl From<CodecError> for Decoded {
    fn from(e: CodecError) -> Self {
        Decoded::Codec(e)
    }
}

/// Most event type names an [`EventBuilder`] keeps: a stream has a few types, a page of the
/// global log a few dozen; a name past the bound is simply allocated per event.
const EVENT_TYPES_SHARED_MAX: usize = 64;

/// Builds envelopes from decoded commits for one read, sharing one `Arc<str>` per event type
/// name (and per stream) among the events instead of allocating one per event.
#[derive(Debug, Default)]
pub(crate) struct EventBuilder {
    types: Vec<Arc<str>>,
    stream: Option<(Vec<u8>, StreamId)>,
}

impl EventBuilder {
    fn event_type(&mut self, name: &str) -> Arc<str> {
        if let Some(t) = self.types.iter().find(|t| ***t == *name) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(name);
        if self.types.len() < EVENT_TYPES_SHARED_MAX {
            self.types.push(t.clone());
        }
        t
    }

    /// The stream of `key`, parsed once for a run of commits of one stream.
    pub(crate) fn stream(
        &mut self,
        position: Position,
        key: &[u8],
    ) -> Result<StreamId, StoreError> {
        if let Some((k, stream)) = &self.stream {
            if k.as_slice() == key {
                return Ok(stream.clone());
            }
        }
        let stream = keys::parse_stream_key(key).map_err(|reason| corrupt_at(position, &reason))?;
        self.stream = Some((key.to_vec(), stream.clone()));
        Ok(stream)
    }

    /// Appends to `out` the events of the commit at `position` that `keep` selects (by version
    /// and position), as envelopes of `stream`; returns how many it appended.
    pub(crate) fn push_events(
        &mut self,
        stream: &StreamId,
        header: &RecordHeader,
        position: Position,
        commit: &Commit<'_>,
        keep: impl Fn(Version, Position) -> bool,
        out: &mut Vec<RecordedEvent>,
    ) -> Result<usize, StoreError> {
        let mut meta: Option<Arc<CommitMeta>> = None;
        let mut i = 0u64;
        let mut pushed = 0;
        commit.for_each_event(position, |e| {
            let (version, at) = (header.first_version.advance(i), position.advance(i));
            i += 1;
            if !keep(version, at) {
                return Ok(());
            }
            let meta = match &meta {
                Some(m) => m.clone(),
                None => meta.insert(Arc::new(commit.meta()?)).clone(),
            };
            out.push(RecordedEvent {
                event_id: e.event_id,
                stream: stream.clone(),
                version,
                position: at,
                event_type: self.event_type(e.event_type),
                schema_version: e.schema_version,
                meta,
                payload: EncodedPayload(e.payload.to_vec()),
            });
            pushed += 1;
            Ok(())
        })?;
        Ok(pushed)
    }
}

/// A stream's head: its last version and where its last commit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadEntry {
    /// The stream's last version.
    pub(crate) version: Version,
    /// The stream's last commit.
    pub(crate) at: Locator,
    /// Events in that commit.
    pub(crate) count: u32,
}

impl HeadEntry {
    pub(crate) fn last_position(&self) -> Position {
        self.at
            .commit
            .advance(u64::from(self.count).saturating_sub(1))
    }

    pub(crate) fn encode(self) -> [u8; 28] {
        let mut out = [0u8; 28];
        out[..8].copy_from_slice(&self.version.0.to_be_bytes());
        out[8..24].copy_from_slice(&self.at.encode());
        out[24..].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<HeadEntry, StoreError> {
        if bytes.len() != 28 {
            return Err(StoreError::Corrupt {
                what: "stream head entry".into(),
                reason: format!("{} bytes, expected 28", bytes.len()),
            });
        }
        let mut count = [0u8; 4];
        count.copy_from_slice(&bytes[24..]);
        Ok(HeadEntry {
            version: Version(keys::read_u64(&bytes[..8], "stream head entry")?),
            at: Locator::decode(&bytes[8..24], "stream head entry")?,
            count: u32::from_be_bytes(count),
        })
    }
}

/// A `commands` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum CommandRecord {
    /// The command committed the commit at `position` in the segment at `segment` (the commit
    /// record holds the fingerprint).
    Committed { segment: u64, position: u64 },
    /// The command was rejected.
    Rejected {
        aggregate_type: String,
        aggregate_id: String,
        #[serde(with = "serde_bytes")]
        fingerprint: Vec<u8>,
        version: u64,
        #[serde(with = "serde_bytes")]
        rejection: Vec<u8>,
    },
    /// The command was accepted without events.
    NoEvents {
        aggregate_type: String,
        aggregate_id: String,
        #[serde(with = "serde_bytes")]
        fingerprint: Vec<u8>,
        version: u64,
    },
}

impl CommandRecord {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode_versioned(COMMAND_FORMAT, "command record", self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<CommandRecord, CodecError> {
        codec::decode_versioned(COMMAND_FORMAT, "command record", bytes)
    }
}

pub(crate) fn fingerprint_from(bytes: &[u8]) -> Result<Fingerprint, StoreError> {
    bytes
        .try_into()
        .map(Fingerprint)
        .map_err(|_| StoreError::Corrupt {
            what: "command record".into(),
            reason: format!("fingerprint is {} bytes, expected 16", bytes.len()),
        })
}

/// A `snapshots` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub(crate) schema_version: u32,
    pub(crate) taken_at: u64,
    #[serde(with = "serde_bytes")]
    pub(crate) state: Vec<u8>,
}

impl SnapshotRecord {
    pub(crate) fn encode(snapshot: &Snapshot) -> Result<Vec<u8>, CodecError> {
        let record = SnapshotRecord {
            schema_version: snapshot.schema_version,
            taken_at: snapshot.taken_at.0,
            state: snapshot.state.clone(),
        };
        codec::encode_versioned(SNAPSHOT_FORMAT, "snapshot", &record)
    }

    pub(crate) fn decode(version: Version, bytes: &[u8]) -> Result<Snapshot, CodecError> {
        let r: SnapshotRecord = codec::decode_versioned(SNAPSHOT_FORMAT, "snapshot", bytes)?;
        Ok(Snapshot {
            version,
            schema_version: r.schema_version,
            taken_at: Timestamp(r.taken_at),
            state: r.state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (StreamId, CommitMeta, CommitRecord) {
        let stream = StreamId::new("Account", "a-1").expect("valid");
        let meta = CommitMeta {
            recorded_at: Timestamp(42),
            command_id: Some(CommandId::new("k").expect("valid")),
            correlation_id: Some(Arc::from("corr")),
            causation_id: None,
        };
        let events: Vec<PendingEvent> = (0..3u8)
            .map(|i| PendingEvent {
                event_id: uuid::Uuid::new_v4(),
                event_type: Arc::from(if i == 1 { "Withdrawn" } else { "Deposited" }),
                schema_version: 2,
                payload: EncodedPayload(vec![1, 2, i]),
            })
            .collect();
        let record = CommitRecord::new(&meta, Some(Fingerprint([9; 16])), &events);
        (stream, meta, record)
    }

    const HEADER: RecordHeader = RecordHeader {
        prev: Locator {
            segment: Position(2),
            commit: Position(3),
        },
        first_version: Version(5),
        count: 3,
    };

    /// The record in both formats, header filled in.
    fn both_formats(stream: &StreamId, record: &CommitRecord) -> [Vec<u8>; 2] {
        [
            record.encode(stream).expect("encodes"),
            record.encode_format_1(stream).expect("encodes"),
        ]
        .map(|mut bytes| {
            HEADER.write_into(&mut bytes);
            bytes
        })
    }

    #[test]
    fn commit_record_round_trip_in_both_formats() {
        let (stream, meta, record) = sample();
        let [binary, cbor] = both_formats(&stream, &record);
        assert_eq!((binary[0], cbor[0]), (RECORD_FORMAT, RECORD_FORMAT_CBOR));
        assert!(
            binary.len() < cbor.len(),
            "{} vs {} bytes",
            binary.len(),
            cbor.len()
        );
        for bytes in [binary, cbor] {
            let (read, read_stream, back) =
                CommitRecord::decode(Position(10), &bytes).expect("decodes");
            assert_eq!((read, &read_stream), (HEADER, &stream));
            assert_eq!(back, record);
            let mut recorded = Vec::new();
            let (_, _, commit) = decode_commit(Position(10), &bytes).expect("decodes");
            let mut builder = EventBuilder::default();
            let kept = builder
                .push_events(
                    &stream,
                    &HEADER,
                    Position(10),
                    &commit,
                    |v, _| v > Version(5),
                    &mut recorded,
                )
                .expect("valid");
            assert_eq!(kept, 2, "the first event is filtered out");
            assert_eq!(
                (recorded[0].version, recorded[0].position),
                (Version(6), Position(11))
            );
            assert_eq!(&*recorded[1].event_type, "Deposited");
            assert_eq!(recorded[1].payload, record.events[2].payload);
            assert_eq!(recorded[1].event_id, record.events[2].event_id);
            assert_eq!(*recorded[0].meta, meta);
            assert!(
                Arc::ptr_eq(&recorded[0].meta, &recorded[1].meta),
                "one meta per commit"
            );
        }
    }

    #[test]
    fn every_truncated_record_is_an_error_in_both_formats() {
        let (stream, _, record) = sample();
        for bytes in both_formats(&stream, &record) {
            for end in 0..bytes.len() {
                assert!(
                    CommitRecord::decode(Position(10), &bytes[..end]).is_err(),
                    "format {} cut at {end} of {}",
                    bytes[0],
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn corrupt_bytes_are_an_error_not_a_panic() {
        for bytes in [
            &[][..],
            &[1][..],
            &[1, 0xff, 0x00][..],
            &[9, 1, 2][..],
            &[2, 1][..],
        ] {
            assert!(CommitRecord::decode(Position(1), bytes).is_err());
        }
        let (stream, _, record) = sample();
        let mut bytes = both_formats(&stream, &record)[0].clone();
        bytes[0] = 3;
        let err = CommitRecord::decode(Position(10), &bytes).expect_err("format 3 is unknown");
        assert!(
            err.to_string().contains("unknown record format byte 3"),
            "{err}"
        );
    }

    proptest::proptest! {
        #[test]
        fn garbled_records_never_panic(
            format in 0usize..2,
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..6),
        ) {
            let (stream, _, record) = sample();
            let mut bytes = both_formats(&stream, &record)[format].clone();
            for (at, byte) in flips {
                let i = at % bytes.len();
                bytes[i] = byte;
            }
            if let Ok((header, _, commit)) = decode_commit(Position(10), &bytes) {
                let mut out = Vec::new();
                let _ = EventBuilder::default()
                    .push_events(&stream, &header, Position(10), &commit, |_, _| true, &mut out);
            }
        }
    }
}
