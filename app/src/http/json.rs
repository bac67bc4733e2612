//! JSON shapes shared by the routes: envelopes, RFC 3339 times, and a generic CBOR → JSON
//! conversion for payloads of aggregate types the server does not know.

use annals::codec::Value as Cbor;
use annals::{Envelope, RecordedEvent, Timestamp};
use serde::Serialize;
use serde_json::{json, Map, Number, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::problem::Problem;

/// `at` as RFC 3339 in UTC with microseconds (`2026-11-27T16:00:00.123456Z`).
pub fn rfc3339(at: Timestamp) -> String {
    let nanos = i128::from(at.as_micros()) * 1_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{}us", at.as_micros()))
}

/// Parses an RFC 3339 time (any offset) for query parameter `name`.
pub fn parse_rfc3339(name: &str, text: &str) -> Result<Timestamp, Problem> {
    let bad = |why: String| {
        Problem::bad_request(format!(
            "query parameter {name}: {text:?} is not an RFC 3339 time such as \
             2026-11-27T16:00:00Z ({why})"
        ))
        .with("parameter", name)
    };
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| bad(e.to_string()))?;
    let micros = at.unix_timestamp_nanos() / 1_000;
    if micros < 0 {
        return Err(bad("before 1970".into()));
    }
    u64::try_from(micros)
        .map(Timestamp)
        .map_err(|_| bad("too far in the future".into()))
}

/// An envelope as the API shows it. `data` is the payload's JSON.
pub fn envelope<E>(event: &Envelope<E>, data: &Value) -> Value {
    json!({
        "event_id": event.event_id.to_string(),
        "aggregate": event.stream.aggregate_type(),
        "id": event.stream.aggregate_id(),
        "version": event.version.0,
        "position": event.position.0,
        "type": &*event.event_type,
        "schema_version": event.schema_version,
        "recorded_at": rfc3339(event.meta.recorded_at),
        "command_id": event.meta.command_id.as_ref().map(ToString::to_string),
        "correlation_id": event.meta.correlation_id.as_deref(),
        "causation_id": event.meta.causation_id.as_deref(),
        "data": data,
    })
}

/// An envelope as the API shows it, serialized straight to bytes without building a JSON tree
/// first: the command path renders one per event of every reply. Same members as [`envelope`].
#[derive(Debug, Serialize)]
pub struct EnvelopeJson<'a, D> {
    event_id: uuid::Uuid,
    aggregate: &'a str,
    id: &'a str,
    version: u64,
    position: u64,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema_version: u16,
    recorded_at: String,
    command_id: Option<&'a str>,
    correlation_id: Option<&'a str>,
    causation_id: Option<&'a str>,
    data: &'a D,
}

impl<'a, E: Serialize> EnvelopeJson<'a, E> {
    /// The envelope of `event`, its payload as `data`.
    pub fn new(event: &'a Envelope<E>) -> EnvelopeJson<'a, E> {
        EnvelopeJson {
            event_id: event.event_id,
            aggregate: event.stream.aggregate_type(),
            id: event.stream.aggregate_id(),
            version: event.version.0,
            position: event.position.0,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            recorded_at: rfc3339(event.meta.recorded_at),
            command_id: event
                .meta
                .command_id
                .as_ref()
                .map(annals::CommandId::as_str),
            correlation_id: event.meta.correlation_id.as_deref(),
            causation_id: event.meta.causation_id.as_deref(),
            data: &event.payload,
        }
    }
}

/// A decoded envelope as the API shows it.
pub fn typed_envelope<E: Serialize>(event: &Envelope<E>) -> Result<Value, Problem> {
    let data = serde_json::to_value(&event.payload)
        .map_err(|e| Problem::internal(format!("cannot render event as JSON: {e}")))?;
    Ok(envelope(event, &data))
}

/// A still-encoded envelope, its payload converted generically from CBOR.
pub fn raw_envelope(event: &RecordedEvent) -> Result<Value, Problem> {
    let payload: Cbor = annals::codec::decode_plain(&event.payload.0).map_err(|e| {
        Problem::internal(format!(
            "cannot decode the payload at position {}: {e}",
            event.position
        ))
    })?;
    Ok(envelope(event, &cbor_to_json(payload)))
}

/// Converts a CBOR value to JSON: byte strings become arrays of numbers, non-string map keys
/// their JSON text, tags their content, and non-finite floats `null` (JSON has none of these).
pub fn cbor_to_json(value: Cbor) -> Value {
    match value {
        Cbor::Integer(i) => {
            let i = i128::from(i);
            u64::try_from(i)
                .map(Value::from)
                .or_else(|_| i64::try_from(i).map(Value::from))
                .unwrap_or_else(|_| Value::String(i.to_string()))
        }
        Cbor::Bytes(bytes) => Value::Array(bytes.into_iter().map(Value::from).collect()),
        Cbor::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Cbor::Text(text) => Value::String(text),
        Cbor::Bool(b) => Value::Bool(b),
        Cbor::Null => Value::Null,
        Cbor::Tag(_, inner) => cbor_to_json(*inner),
        Cbor::Array(items) => Value::Array(items.into_iter().map(cbor_to_json).collect()),
        Cbor::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key = match key {
                    Cbor::Text(text) => text,
                    other => cbor_to_json(other).to_string(),
                };
                map.insert(key, cbor_to_json(value));
            }
            Value::Object(map)
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_rfc3339() {
        let at = Timestamp(1_795_000_000_123_456);
        let text = rfc3339(at);
        assert!(text.ends_with('Z'), "{text}");
        assert_eq!(parse_rfc3339("as_of", &text).ok(), Some(at));
        let offset = parse_rfc3339("as_of", "2026-11-27T17:00:00+01:00").ok();
        let utc = parse_rfc3339("as_of", "2026-11-27T16:00:00Z").ok();
        assert_eq!(offset, utc);
    }

    #[test]
    fn bad_times_name_the_parameter() {
        let error = parse_rfc3339("as_of", "yesterday").err().map(|p| p.body());
        let body = error.unwrap_or_default();
        assert_eq!(body["status"], 400);
        assert_eq!(body["parameter"], "as_of");
        assert!(parse_rfc3339("as_of", "1960-01-01T00:00:00Z").is_err());
    }

    #[test]
    fn cbor_converts_to_json() {
        let value = Cbor::Map(vec![
            (Cbor::Text("a".into()), Cbor::Integer(5.into())),
            (Cbor::Integer(1.into()), Cbor::Bytes(vec![1, 2])),
            (Cbor::Text("f".into()), Cbor::Float(f64::NAN)),
        ]);
        assert_eq!(cbor_to_json(value), json!({"a": 5, "1": [1, 2], "f": null}));
    }
}
