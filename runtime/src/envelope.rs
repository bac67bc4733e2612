//! Event envelopes: an event plus the metadata DESIGN.md promises with it.
//!
//! [`Envelope<E>`] carries a typed payload; [`RecordedEvent`] is the same envelope with the
//! payload still encoded, as the store returns it (the store knows no event types).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{self, CodecError};
use crate::types::{CommandId, Position, StreamId, Timestamp, Version};

/// Metadata shared by all events of one commit (one command).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitMeta {
    /// When the command was decided (wall clock).
    pub recorded_at: Timestamp,
    /// The command id the command carried, if any.
    pub command_id: Option<CommandId>,
    /// The id of the business transaction this command belongs to (propagated by sagas).
    pub correlation_id: Option<Arc<str>>,
    /// The id of the message (command or event) that caused this command.
    pub causation_id: Option<Arc<str>>,
}

/// Longest correlation or causation id, in bytes.
pub const TRACE_ID_LEN_MAX: usize = 128;

/// An event with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<E> {
    /// Unique id of this event.
    pub event_id: Uuid,
    /// The stream (aggregate type and id) the event belongs to.
    pub stream: StreamId,
    /// The event's version within its stream.
    pub version: Version,
    /// The event's position in the global log.
    pub position: Position,
    /// The event's type name.
    pub event_type: Arc<str>,
    /// The schema version the event was written with.
    pub schema_version: u16,
    /// Commit-level metadata.
    pub meta: Arc<CommitMeta>,
    /// The event itself.
    pub payload: E,
}

/// An envelope whose payload is still CBOR-encoded.
pub type RecordedEvent = Envelope<EncodedPayload>;

/// An encoded event payload (CBOR), shared without copying.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EncodedPayload(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl std::fmt::Debug for EncodedPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncodedPayload({} bytes)", self.0.len())
    }
}

impl RecordedEvent {
    /// Decodes the payload into the event type `E`.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<Envelope<E>, CodecError> {
        let payload = codec::decode_plain(&self.payload.0)?;
        Ok(self.with_payload(payload))
    }

    fn with_payload<E>(&self, payload: E) -> Envelope<E> {
        Envelope {
            event_id: self.event_id,
            stream: self.stream.clone(),
            version: self.version,
            position: self.position,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            meta: self.meta.clone(),
            payload,
        }
    }
}
