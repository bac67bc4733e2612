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

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys;
use super::segment::{Locator, RecordHeader, RECORD_FIXED_LEN};
use crate::codec::{self, CodecError};
use crate::envelope::{CommitMeta, EncodedPayload, RecordedEvent};
use crate::store::{Fingerprint, PendingEvent, Snapshot, StoreError};
use crate::types::{CommandId, Position, StreamId, Timestamp, Version};

/// Format byte of command records.
pub(crate) const COMMAND_FORMAT: u8 = 1;
/// Format byte of snapshot records.
pub(crate) const SNAPSHOT_FORMAT: u8 = 1;

/// One commit: the events of one command with their shared metadata (the CBOR part of a
/// record; the stream, versions and chain link are in the record's binary header). Field names
/// are short because they are repeated in every record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CommitRecord {
    #[serde(rename = "at")]
    pub(crate) recorded_at: u64,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub(crate) command_id: Option<String>,
    #[serde(
        rename = "f",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_fingerprint"
    )]
    pub(crate) fingerprint: Option<[u8; 16]>,
    #[serde(rename = "co", default, skip_serializing_if = "Option::is_none")]
    pub(crate) correlation_id: Option<String>,
    #[serde(rename = "ca", default, skip_serializing_if = "Option::is_none")]
    pub(crate) causation_id: Option<String>,
    #[serde(rename = "e")]
    pub(crate) events: Vec<EventRecord>,
}

/// One event inside a [`CommitRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EventRecord {
    #[serde(rename = "id")]
    pub(crate) event_id: Uuid,
    #[serde(rename = "t")]
    pub(crate) event_type: String,
    #[serde(rename = "s")]
    pub(crate) schema_version: u16,
    #[serde(rename = "p")]
    pub(crate) payload: EncodedPayload,
}

mod opt_fingerprint {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<[u8; 16]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => serde_bytes::serialize(&bytes[..], s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 16]>, D::Error> {
        let bytes: Option<serde_bytes::ByteBuf> = Option::deserialize(d)?;
        match bytes {
            None => Ok(None),
            Some(b) => b
                .into_vec()
                .try_into()
                .map(Some)
                .map_err(|_| serde::de::Error::custom("fingerprint is not 16 bytes")),
        }
    }
}

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

    /// Encodes the record of a commit to `stream` behind a zeroed header, which the writer
    /// fills in once it knows the stream's previous commit.
    pub(crate) fn encode(&self, stream: &StreamId) -> Result<Vec<u8>, CodecError> {
        let key = keys::stream_key(stream);
        let mut out = Vec::with_capacity(RECORD_FIXED_LEN + key.len() + 96);
        out.resize(RECORD_FIXED_LEN - 2, 0);
        // Stream keys are at most 1 + 64 + 2 + 256 bytes (StreamId's limits).
        out.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&key);
        ciborium::into_writer(self, &mut out).map_err(|e| CodecError::Encode {
            what: "commit record",
            reason: e.to_string(),
        })?;
        Ok(out)
    }

    /// Decodes a record: its header, its stream and its body.
    pub(crate) fn decode(
        position: Position,
        bytes: &[u8],
    ) -> Result<(RecordHeader, StreamId, CommitRecord), StoreError> {
        let (header, key, body) = RecordHeader::read(position, bytes)?;
        let stream = keys::parse_stream_key(key).map_err(|reason| corrupt_at(position, &reason))?;
        let record: CommitRecord = crate::codec::from_slice(body)
            .map_err(|e| corrupt_at(position, &format!("cannot decode commit record: {e}")))?;
        if record.events.len() != header.count as usize {
            return Err(corrupt_at(
                position,
                "commit record disagrees with its header",
            ));
        }
        Ok((header, stream, record))
    }

    pub(crate) fn meta(&self) -> Result<CommitMeta, StoreError> {
        Ok(CommitMeta {
            recorded_at: Timestamp(self.recorded_at),
            command_id: match &self.command_id {
                Some(c) => {
                    Some(
                        CommandId::stored(c.as_str()).map_err(|e| StoreError::Corrupt {
                            what: "commit record".into(),
                            reason: e.to_string(),
                        })?,
                    )
                }
                None => None,
            },
            correlation_id: self.correlation_id.as_deref().map(Arc::from),
            causation_id: self.causation_id.as_deref().map(Arc::from),
        })
    }

    /// The record's events as envelopes.
    pub(crate) fn into_events(
        self,
        stream: &StreamId,
        header: &RecordHeader,
        first_position: Position,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let meta = Arc::new(self.meta()?);
        Ok(self
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| RecordedEvent {
                event_id: e.event_id,
                stream: stream.clone(),
                version: header.first_version.advance(i as u64),
                position: first_position.advance(i as u64),
                event_type: Arc::from(e.event_type),
                schema_version: e.schema_version,
                meta: meta.clone(),
                payload: e.payload,
            })
            .collect())
    }
}

pub(crate) fn corrupt_at(position: Position, reason: &str) -> StoreError {
    StoreError::Corrupt {
        what: format!("log record at position {position}"),
        reason: reason.to_string(),
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

    #[test]
    fn commit_record_round_trip() {
        let stream = StreamId::new("Account", "a-1").expect("valid");
        let meta = CommitMeta {
            recorded_at: Timestamp(42),
            command_id: Some(CommandId::new("k").expect("valid")),
            correlation_id: Some(Arc::from("corr")),
            causation_id: None,
        };
        let events = vec![PendingEvent {
            event_id: Uuid::new_v4(),
            event_type: Arc::from("Deposited"),
            schema_version: 2,
            payload: EncodedPayload(vec![1, 2, 3]),
        }];
        let record = CommitRecord::new(&meta, Some(Fingerprint([9; 16])), &events);
        let mut bytes = record.encode(&stream).expect("encodes");
        let prev = Locator {
            segment: Position(2),
            commit: Position(3),
        };
        let header = RecordHeader {
            prev,
            first_version: Version(5),
            count: 1,
        };
        header.write_into(&mut bytes);
        let (read, read_stream, back) =
            CommitRecord::decode(Position(10), &bytes).expect("decodes");
        assert_eq!((read, &read_stream), (header, &stream));
        assert_eq!(back, record);
        let recorded = back
            .into_events(&stream, &header, Position(10))
            .expect("valid");
        assert_eq!(recorded[0].version, Version(5));
        assert_eq!(recorded[0].position, Position(10));
        assert_eq!(*recorded[0].meta, meta);
    }

    #[test]
    fn corrupt_bytes_are_an_error_not_a_panic() {
        for bytes in [&[][..], &[1][..], &[1, 0xff, 0x00][..], &[9, 1, 2][..]] {
            assert!(CommitRecord::decode(Position(1), bytes).is_err());
        }
    }
}
