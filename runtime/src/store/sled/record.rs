//! The on-disk records of the sled store and their encodings.
//!
//! | tree        | key                          | value                                      |
//! |-------------|------------------------------|--------------------------------------------|
//! | `log`       | first position (u64 BE)      | [`CommitRecord`]: one whole commit         |
//! | `streams`   | stream key + first version   | [`IndexEntry`]: position and event count   |
//! | `commands`  | command id (UTF-8)           | [`CommandRecord`]                          |
//! | `snapshots` | stream key + version         | [`SnapshotRecord`]                         |
//! | `meta`      | name                         | format version, index watermark            |
//!
//! The **log record is the unit of atomicity**: one commit (all events of one command, its
//! metadata and its command id) is one sled `insert`, so it is either entirely present or
//! entirely absent after a crash. `streams` and the committed entries of `commands` are derived
//! from the log; recovery re-derives them for the tail the last crash may have cut off.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{self, CodecError};
use crate::envelope::{CommitMeta, EncodedPayload, RecordedEvent};
use crate::store::{Fingerprint, PendingEvent, Snapshot, StoreError};
use crate::types::{CommandId, Position, StreamId, Timestamp, Version};

/// Format byte of log records.
pub(crate) const COMMIT_FORMAT: u8 = 1;
/// Format byte of command records.
pub(crate) const COMMAND_FORMAT: u8 = 1;
/// Format byte of snapshot records.
pub(crate) const SNAPSHOT_FORMAT: u8 = 1;

/// One commit: the events of one command with their shared metadata. Field names are short
/// because they are repeated in every record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CommitRecord {
    #[serde(rename = "t")]
    pub(crate) aggregate_type: String,
    #[serde(rename = "i")]
    pub(crate) aggregate_id: String,
    /// Version of the first event.
    #[serde(rename = "v")]
    pub(crate) first_version: u64,
    #[serde(rename = "at")]
    pub(crate) recorded_at: u64,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub(crate) command_id: Option<String>,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none", with = "opt_fingerprint")]
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

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 16]>, D::Error> {
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
        stream: &StreamId,
        first_version: Version,
        meta: &CommitMeta,
        fingerprint: Option<Fingerprint>,
        events: &[PendingEvent],
    ) -> CommitRecord {
        CommitRecord {
            aggregate_type: stream.aggregate_type().to_string(),
            aggregate_id: stream.aggregate_id().to_string(),
            first_version: first_version.0,
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

    pub(crate) fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode_versioned(COMMIT_FORMAT, "commit record", self)
    }

    /// Decodes and checks the record's own invariants (at least one event, valid ids).
    pub(crate) fn decode(position: Position, bytes: &[u8]) -> Result<CommitRecord, StoreError> {
        let record: CommitRecord = codec::decode_versioned(COMMIT_FORMAT, "commit record", bytes)
            .map_err(|e| corrupt_at(position, &e.to_string()))?;
        if record.events.is_empty() {
            return Err(corrupt_at(position, "commit record holds no events"));
        }
        if record.first_version == 0 {
            return Err(corrupt_at(position, "first version is 0"));
        }
        record.stream().map_err(|e| corrupt_at(position, &e.to_string()))?;
        Ok(record)
    }

    pub(crate) fn stream(&self) -> Result<StreamId, crate::types::InvalidId> {
        StreamId::new(self.aggregate_type.as_str(), self.aggregate_id.as_str())
    }

    pub(crate) fn event_count(&self) -> u64 {
        self.events.len() as u64
    }

    pub(crate) fn last_version(&self) -> Version {
        Version(self.first_version + self.event_count() - 1)
    }

    pub(crate) fn meta(&self) -> Result<CommitMeta, StoreError> {
        Ok(CommitMeta {
            recorded_at: Timestamp(self.recorded_at),
            command_id: match &self.command_id {
                Some(c) => Some(CommandId::new(c.as_str()).map_err(|e| StoreError::Corrupt {
                    what: "commit record".into(),
                    reason: e.to_string(),
                })?),
                None => None,
            },
            correlation_id: self.correlation_id.as_deref().map(Arc::from),
            causation_id: self.causation_id.as_deref().map(Arc::from),
        })
    }

    /// The record's events as envelopes, given the record's first position.
    pub(crate) fn into_events(self, first_position: Position) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream = self.stream().map_err(|e| corrupt_at(first_position, &e.to_string()))?;
        let meta = Arc::new(self.meta()?);
        let first_version = Version(self.first_version);
        Ok(self
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| RecordedEvent {
                event_id: e.event_id,
                stream: stream.clone(),
                version: first_version.advance(i as u64),
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
    StoreError::Corrupt { what: format!("log record at position {position}"), reason: reason.to_string() }
}

/// A `streams` entry: where one commit of the stream is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) position: Position,
    pub(crate) count: u32,
}

impl IndexEntry {
    pub(crate) fn encode(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.position.0.to_be_bytes());
        out[8..].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<IndexEntry, StoreError> {
        let arr: [u8; 12] = bytes.try_into().map_err(|_| StoreError::Corrupt {
            what: "stream index entry".into(),
            reason: format!("{} bytes, expected 12", bytes.len()),
        })?;
        let mut pos = [0u8; 8];
        pos.copy_from_slice(&arr[..8]);
        let mut count = [0u8; 4];
        count.copy_from_slice(&arr[8..]);
        Ok(IndexEntry { position: Position(u64::from_be_bytes(pos)), count: u32::from_be_bytes(count) })
    }
}

/// A `commands` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum CommandRecord {
    /// The command committed the log record at this position (which holds the fingerprint).
    Committed { position: u64 },
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
    bytes.try_into().map(Fingerprint).map_err(|_| StoreError::Corrupt {
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
        Ok(Snapshot { version, schema_version: r.schema_version, taken_at: Timestamp(r.taken_at), state: r.state })
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
        let record = CommitRecord::new(&stream, Version(5), &meta, Some(Fingerprint([9; 16])), &events);
        let bytes = record.encode().expect("encodes");
        let back = CommitRecord::decode(Position(10), &bytes).expect("decodes");
        assert_eq!(back, record);
        let recorded = back.into_events(Position(10)).expect("valid");
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
