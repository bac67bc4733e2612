//! The body of a commit record in record format 2: a compact binary encoding written and read
//! by hand, without serde.
//!
//! Format 1 bodies are CBOR maps with short field names (see [`CommitRecord`]); decoding them
//! was a third of the time of a stream's replay (a map per commit and per event, a field name
//! per value, a `String` and a `Vec` per event). A format 2 body is read in place: a decoded
//! [`CommitView`] and its [`EventView`]s borrow their strings and payloads from the record's
//! bytes, so a reader copies only what it keeps.
//!
//! All integers little-endian. `opt(x)` is a presence byte (0: absent, 1: present, anything
//! else is an error) followed by `x` when present; `str16` is a length (`u16`) and that many
//! bytes of UTF-8; `bytes32` a length (`u32`) and that many bytes.
//!
//! | field            | encoding                | notes                                       |
//! |------------------|-------------------------|---------------------------------------------|
//! | `recorded_at`    | `u64`                   | ms since the Unix epoch                     |
//! | `command_id`     | `opt(str16)`            |                                             |
//! | `fingerprint`    | `opt([u8; 16])`         | present when `command_id` is                |
//! | `correlation_id` | `opt(str16)`            |                                             |
//! | `causation_id`   | `opt(str16)`            |                                             |
//! | events           | `count` × event         | `count` is in the record's header           |
//! | event: `id`      | `[u8; 16]`              | UUID bytes                                  |
//! | event: `type`    | `str16`                 |                                             |
//! | event: `schema`  | `u16`                   | the event's schema version                  |
//! | event: `payload` | `bytes32`               | the event, plain CBOR                       |
//!
//! The body ends with its last event: trailing bytes, a length that runs past the end, a
//! presence byte other than 0 or 1, or text that is not UTF-8 are [`CodecError::Decode`]
//! errors, never a panic and never a guess.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::CodecError;
use crate::envelope::EncodedPayload;

const WHAT: &str = "commit record";

/// One commit: the events of one command with their shared metadata (the body of a record;
/// the stream, versions and chain link are in the record's binary header). Encoded as CBOR in
/// format 1 records — field names are short because they are repeated in every record — and
/// by hand in format 2 (see [`body`](super::body)).
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

/// A format 2 commit body, decoded in place. Its events are read by
/// [`CommitView::for_each_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommitView<'a> {
    pub(crate) recorded_at: u64,
    pub(crate) command_id: Option<&'a str>,
    pub(crate) fingerprint: Option<[u8; 16]>,
    pub(crate) correlation_id: Option<&'a str>,
    pub(crate) causation_id: Option<&'a str>,
    /// The encoded events, `count` of them.
    events: &'a [u8],
    count: u32,
}

/// One event of a commit, borrowed from the record's bytes (or from a decoded format 1
/// [`CommitRecord`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventView<'a> {
    pub(crate) event_id: Uuid,
    pub(crate) event_type: &'a str,
    pub(crate) schema_version: u16,
    pub(crate) payload: &'a [u8],
}

impl<'a> CommitView<'a> {
    /// Reads the commit-level fields of a body that holds `count` events; the events are read
    /// (and checked) by [`CommitView::for_each_event`].
    pub(crate) fn parse(body: &'a [u8], count: u32) -> Result<CommitView<'a>, CodecError> {
        let mut r = Reader { bytes: body };
        let recorded_at = r.u64("recorded_at")?;
        let command_id = r.opt("command id", |r| r.str16("command id"))?;
        let fingerprint = r.opt("fingerprint", |r| r.array::<16>("fingerprint"))?;
        let correlation_id = r.opt("correlation id", |r| r.str16("correlation id"))?;
        let causation_id = r.opt("causation id", |r| r.str16("causation id"))?;
        Ok(CommitView {
            recorded_at,
            command_id,
            fingerprint,
            correlation_id,
            causation_id,
            events: r.bytes,
            count,
        })
    }

    /// Calls `f` with each event in order, then checks that the body ends with the last one.
    pub(crate) fn for_each_event<E>(
        &self,
        mut f: impl FnMut(EventView<'a>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CodecError>,
    {
        let mut r = Reader { bytes: self.events };
        for _ in 0..self.count {
            f(r.event()?)?;
        }
        if !r.bytes.is_empty() {
            return Err(decode_error(format!(
                "{} bytes after the last of its {} events",
                r.bytes.len(),
                self.count
            ))
            .into());
        }
        Ok(())
    }

    /// The body as an owned [`CommitRecord`].
    pub(crate) fn to_record(self) -> Result<CommitRecord, CodecError> {
        let mut events = Vec::with_capacity(usize::try_from(self.count).unwrap_or(0).min(1024));
        self.for_each_event(|e| {
            events.push(EventRecord {
                event_id: e.event_id,
                event_type: e.event_type.to_string(),
                schema_version: e.schema_version,
                payload: crate::envelope::EncodedPayload(e.payload.to_vec()),
            });
            Ok::<(), CodecError>(())
        })?;
        Ok(CommitRecord {
            recorded_at: self.recorded_at,
            command_id: self.command_id.map(str::to_string),
            fingerprint: self.fingerprint,
            correlation_id: self.correlation_id.map(str::to_string),
            causation_id: self.causation_id.map(str::to_string),
            events,
        })
    }
}

/// Appends the format 2 body of `record` to `out`. Fails only for a string longer than
/// `u16::MAX` bytes or a payload longer than `u32::MAX` bytes (the runtime's limits are far
/// below both; the check keeps a length from being truncated into a corrupt record).
pub(crate) fn write(record: &CommitRecord, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.extend_from_slice(&record.recorded_at.to_le_bytes());
    write_opt_str(out, "command id", record.command_id.as_deref())?;
    match &record.fingerprint {
        Some(f) => {
            out.push(1);
            out.extend_from_slice(f);
        }
        None => out.push(0),
    }
    write_opt_str(out, "correlation id", record.correlation_id.as_deref())?;
    write_opt_str(out, "causation id", record.causation_id.as_deref())?;
    for e in &record.events {
        out.extend_from_slice(e.event_id.as_bytes());
        write_str(out, "event type", &e.event_type)?;
        out.extend_from_slice(&e.schema_version.to_le_bytes());
        let len = u32::try_from(e.payload.0.len()).map_err(|_| too_long("payload"))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&e.payload.0);
    }
    Ok(())
}

/// Bytes [`write`] appends for `record`.
pub(crate) fn len(record: &CommitRecord) -> usize {
    let opt = |s: &Option<String>| 1 + s.as_ref().map_or(0, |s| 2 + s.len());
    8 + opt(&record.command_id)
        + 1
        + record.fingerprint.map_or(0, |f| f.len())
        + opt(&record.correlation_id)
        + opt(&record.causation_id)
        + record
            .events
            .iter()
            .map(|e| 16 + 2 + e.event_type.len() + 2 + 4 + e.payload.0.len())
            .sum::<usize>()
}

fn write_opt_str(out: &mut Vec<u8>, what: &'static str, s: Option<&str>) -> Result<(), CodecError> {
    match s {
        Some(s) => {
            out.push(1);
            write_str(out, what, s)
        }
        None => {
            out.push(0);
            Ok(())
        }
    }
}

fn write_str(out: &mut Vec<u8>, what: &'static str, s: &str) -> Result<(), CodecError> {
    let len = u16::try_from(s.len()).map_err(|_| too_long(what))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn too_long(what: &str) -> CodecError {
    CodecError::Encode {
        what: WHAT,
        reason: format!("the {what} is too long for the record format"),
    }
}

fn decode_error(reason: String) -> CodecError {
    CodecError::Decode { what: WHAT, reason }
}

/// A cursor over the bytes of a body; every read checks its bounds.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(decode_error(format!(
                "truncated in its {field} ({n} bytes needed, {} left)",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    fn u16(&mut self, field: &str) -> Result<u16, CodecError> {
        self.array(field).map(u16::from_le_bytes)
    }

    fn u32(&mut self, field: &str) -> Result<u32, CodecError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &str) -> Result<u64, CodecError> {
        self.array(field).map(u64::from_le_bytes)
    }

    fn str16(&mut self, field: &str) -> Result<&'a str, CodecError> {
        let len = usize::from(self.u16(field)?);
        std::str::from_utf8(self.take(len, field)?)
            .map_err(|_| decode_error(format!("its {field} is not UTF-8")))
    }

    fn opt<T>(
        &mut self,
        field: &str,
        read: impl FnOnce(&mut Self) -> Result<T, CodecError>,
    ) -> Result<Option<T>, CodecError> {
        match self.take(1, field)?[0] {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(decode_error(format!(
                "presence byte {other} of its {field} (0 or 1 expected)"
            ))),
        }
    }

    fn event(&mut self) -> Result<EventView<'a>, CodecError> {
        let event_id = Uuid::from_bytes(self.array("event id")?);
        let event_type = self.str16("event type")?;
        let schema_version = self.u16("schema version")?;
        let len = self.u32("payload length")?;
        let payload = self.take(
            usize::try_from(len).map_err(|_| decode_error("payload length".into()))?,
            "payload",
        )?;
        Ok(EventView {
            event_id,
            event_type,
            schema_version,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EncodedPayload;
    use proptest::prelude::*;

    fn sample(events: usize, ids: bool) -> CommitRecord {
        CommitRecord {
            recorded_at: 1_700_000_000_123,
            command_id: ids.then(|| "cmd-1".to_string()),
            fingerprint: ids.then_some([7; 16]),
            correlation_id: ids.then(|| "corr-é".to_string()),
            causation_id: None,
            events: (0..events)
                .map(|i| EventRecord {
                    event_id: Uuid::from_u128(u128::try_from(i).expect("small") + 1),
                    event_type: format!("Type{i}"),
                    schema_version: 3,
                    payload: EncodedPayload(vec![0xa0; i * 3]),
                })
                .collect(),
        }
    }

    fn encoded(record: &CommitRecord) -> Vec<u8> {
        let mut out = Vec::new();
        write(record, &mut out).expect("encodes");
        assert_eq!(out.len(), len(record), "len() predicts the encoding");
        out
    }

    fn decode(body: &[u8], count: u32) -> Result<CommitRecord, CodecError> {
        CommitView::parse(body, count)?.to_record()
    }

    #[test]
    fn round_trip() {
        for record in [sample(1, false), sample(3, true), sample(0, true)] {
            let count = u32::try_from(record.events.len()).expect("small");
            assert_eq!(decode(&encoded(&record), count).expect("decodes"), record);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let record = sample(3, true);
        let bytes = encoded(&record);
        for end in 0..bytes.len() {
            let err = decode(&bytes[..end], 3).expect_err("truncated");
            assert!(matches!(err, CodecError::Decode { .. }), "{err}");
        }
    }

    #[test]
    fn trailing_bytes_and_a_wrong_count_are_errors() {
        let mut bytes = encoded(&sample(2, false));
        assert!(decode(&bytes, 1).is_err(), "one event too few");
        assert!(decode(&bytes, 3).is_err(), "one event too many");
        bytes.push(0);
        assert!(decode(&bytes, 2).is_err(), "a trailing byte");
    }

    #[test]
    fn a_bad_presence_byte_or_bad_utf8_is_an_error() {
        let mut bytes = encoded(&sample(1, true));
        bytes[8] = 2; // the command id's presence byte
        let err = decode(&bytes, 1).expect_err("bad presence");
        assert!(err.to_string().contains("presence byte 2"), "{err}");
        let mut bytes = encoded(&sample(1, true));
        bytes[11] = 0xff; // the command id's first byte
        let err = decode(&bytes, 1).expect_err("bad UTF-8");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    proptest! {
        #[test]
        fn garbled_bytes_never_panic(
            seed_events in 0usize..4,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            count in 0u32..6,
        ) {
            let mut bytes = encoded(&sample(seed_events, true));
            for (at, byte) in flips {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] = byte;
                }
            }
            let _ = decode(&bytes, count);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            count in 0u32..1_000_000,
        ) {
            let _ = decode(&bytes, count);
        }
    }
}
