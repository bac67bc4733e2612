//! Event envelopes: an event plus the metadata [the design](crate::design) promises with it.
//!
//! [`Envelope<E>`] carries a typed payload; [`RecordedEvent`] is the same envelope with the
//! payload still encoded, as the store returns it (the store knows no event types).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent, Upcast};
use crate::codec::{self, CodecError};

/// Most upcasting rounds for one stored event (each moves it at least one version on).
const UPCAST_ROUNDS_MAX: usize = 32;
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

    /// Decodes the payload as an event of aggregate `A`, upcasting an event written with an
    /// older schema version first (see [`Aggregate::upcast`]): one stored event can become
    /// several, or none. Each result carries the stored event's version, position and ids, and
    /// the schema version it was brought to.
    pub fn upcast<A: Aggregate>(&self) -> Result<Vec<Envelope<A::Event>>, CodecError> {
        let named = |e| self.named(&e);
        let current = A::Event::current_schema_version(&self.event_type);
        if self.schema_version == current {
            return Ok(vec![self.decode::<A::Event>().map_err(named)?]);
        }
        let payload: ciborium::Value = codec::decode_plain(&self.payload.0).map_err(named)?;
        let mut pending = vec![Upcast {
            event_type: self.event_type.to_string(),
            schema_version: self.schema_version,
            payload,
        }];
        let mut done = Vec::new();
        // Each round moves every event at least one version on; the bound stops an upcaster
        // that loops.
        for _ in 0..UPCAST_ROUNDS_MAX {
            let mut next = Vec::new();
            for old in pending {
                if old.schema_version == A::Event::current_schema_version(&old.event_type) {
                    done.push(old);
                    continue;
                }
                let (event_type, from) = (old.event_type.clone(), old.schema_version);
                let upcast = A::upcast(old).map_err(|e| {
                    named(CodecError::Decode {
                        what: "event",
                        reason: e.to_string(),
                    })
                })?;
                if upcast
                    .iter()
                    .any(|u| u.event_type == event_type && u.schema_version <= from)
                {
                    return Err(CodecError::Decode {
                        what: "event",
                        reason: format!(
                            "the upcaster of {event_type} version {from} does not move it forward"
                        ),
                    });
                }
                next.extend(upcast);
            }
            pending = next;
            if pending.is_empty() {
                break;
            }
        }
        if !pending.is_empty() {
            return Err(CodecError::Decode {
                what: "event",
                reason: format!(
                    "{} still not at the current schema after {UPCAST_ROUNDS_MAX} upcasts",
                    self.event_type
                ),
            });
        }
        done.into_iter()
            .map(|u| {
                let event: A::Event = u.payload.deserialized().map_err(|e| CodecError::Decode {
                    what: "upcast event",
                    reason: e.to_string(),
                })?;
                let mut envelope = self.with_payload(event);
                envelope.event_type = Arc::from(u.event_type);
                envelope.schema_version = u.schema_version;
                Ok(envelope)
            })
            .collect()
    }

    /// Hands each event [`RecordedEvent::upcast`] would return to `f`, payload only: an event
    /// at its current schema version (the common case) is decoded straight from the stored
    /// bytes, with no envelope and no `Vec` around it. The path of replay.
    pub(crate) fn upcast_each<A: Aggregate>(
        &self,
        mut f: impl FnMut(&A::Event),
    ) -> Result<(), CodecError> {
        if self.schema_version == A::Event::current_schema_version(&self.event_type) {
            let event: A::Event =
                codec::decode_plain(&self.payload.0).map_err(|e| self.named(&e))?;
            f(&event);
            return Ok(());
        }
        for envelope in self.upcast::<A>()? {
            f(&envelope.payload);
        }
        Ok(())
    }

    /// `e`, naming this event.
    fn named(&self, e: &CodecError) -> CodecError {
        CodecError::Decode {
            what: "event",
            reason: format!(
                "{} (schema version {}) at position {} of {}: {e}",
                self.event_type, self.schema_version, self.position, self.stream
            ),
        }
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
