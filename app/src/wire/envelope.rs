//! The event envelope on the wire: an event with its metadata, as the API answers it (command
//! replies, histories, the global log, the live feed) and as `annals export` writes it and
//! `annals import` reads it. One struct, generic in its payload (`data`): a domain event the
//! server serves (serialized by serde), or a CBOR payload through the lossless mapping of
//! [`super::cbor`].

use std::borrow::Cow;

use annals::CommandId;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::time::Rfc3339;

/// A committed event with its metadata. Field order is the wire's (the export's lines are
/// compared byte for byte).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Envelope")]
#[schemars(
    description = "A committed event with its metadata. Events of the aggregate types \
    the server serves are upcast to their current schema; others are converted generically from \
    their stored CBOR."
)]
pub struct Envelope<'a, D> {
    /// The event's unique id.
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub event_id: uuid::Uuid,
    /// The aggregate type (`Customer`).
    pub aggregate: Cow<'a, str>,
    /// The aggregate id.
    pub id: Cow<'a, str>,
    /// The event's number within its stream, from 1.
    #[schemars(range(min = 1))]
    pub version: u64,
    /// The event's number in the global log, from 1.
    #[schemars(range(min = 1))]
    pub position: u64,
    /// The event type (`data.type` for the served aggregates).
    #[serde(rename = "type")]
    pub event_type: Cow<'a, str>,
    /// The event type's schema version.
    pub schema_version: u16,
    /// When the event was committed.
    #[serde(deserialize_with = "recorded_at")]
    pub recorded_at: Rfc3339,
    /// The command id (`Idempotency-Key`) of the command that recorded it.
    #[serde(deserialize_with = "present")]
    pub command_id: Option<Cow<'a, str>>,
    /// The export only: the fingerprint (32 hex digits) of the command that recorded it, so
    /// that a retry of that command on an imported store is answered as a retry. May be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub command_fingerprint: Option<Cow<'a, str>>,
    /// The correlation id of the command (`X-Correlation-Id`).
    #[serde(deserialize_with = "present")]
    pub correlation_id: Option<Cow<'a, str>>,
    /// The causation id of the command (`X-Causation-Id`).
    #[serde(deserialize_with = "present")]
    pub causation_id: Option<Cow<'a, str>>,
    /// The event's payload.
    pub data: D,
}

/// A member that must be present but may be `null` (serde lets a plain `Option` be missing).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'static, str>>, D::Error> {
    Option::<String>::deserialize(d).map(|s| s.map(Cow::Owned))
}

/// `recorded_at`, its error naming it (serde's do not name the member).
fn recorded_at<'de, D: Deserializer<'de>>(d: D) -> Result<Rfc3339, D::Error> {
    let text = Cow::<'de, str>::deserialize(d)?;
    super::time::parse(&text)
        .map(Rfc3339)
        .map_err(|e| serde::de::Error::custom(format!("recorded_at: {e}")))
}

impl<'a, D> Envelope<'a, D> {
    /// The envelope of `event`, with `data` as its payload.
    pub fn of<P>(event: &'a annals::Envelope<P>, data: D) -> Envelope<'a, D> {
        let meta = &event.meta;
        Envelope {
            event_id: event.event_id,
            aggregate: Cow::Borrowed(event.stream.aggregate_type()),
            id: Cow::Borrowed(event.stream.aggregate_id()),
            version: event.version.0,
            position: event.position.0,
            event_type: Cow::Borrowed(&event.event_type),
            schema_version: event.schema_version,
            recorded_at: Rfc3339(meta.recorded_at),
            command_id: meta
                .command_id
                .as_ref()
                .map(|id| Cow::Borrowed(CommandId::as_str(id))),
            command_fingerprint: None,
            correlation_id: meta.correlation_id.as_deref().map(Cow::Borrowed),
            causation_id: meta.causation_id.as_deref().map(Cow::Borrowed),
            data,
        }
    }
}

impl<'a, E> Envelope<'a, &'a E> {
    /// The envelope of a decoded event, its payload as `data`.
    pub fn typed(event: &'a annals::Envelope<E>) -> Envelope<'a, &'a E> {
        Envelope::of(event, &event.payload)
    }
}
