//! The JSON forms of the routes that need more than [`crate::wire`]: envelopes rendered for a
//! reply (typed for the aggregate types served, through the lossless CBOR mapping for others)
//! and RFC 3339 query parameters, whose errors are problems.

use annals::codec::Value as Cbor;
use annals::{Envelope as Event, RecordedEvent, Timestamp};
use serde::Serialize;
use serde_json::Value;

use super::problem::Problem;
use crate::wire::{cbor, time, Envelope};

/// Parses an RFC 3339 time (any offset) for query parameter `name`.
pub fn parse_rfc3339(name: &str, text: &str) -> Result<Timestamp, Problem> {
    time::parse(text).map_err(|why| {
        Problem::bad_request(format!(
            "query parameter {name}: {why}; send a time such as 2026-11-27T16:00:00Z"
        ))
        .with("parameter", name)
    })
}

/// A decoded envelope as the API shows it.
pub fn typed_envelope<E: Serialize>(event: &Event<E>) -> Result<Value, Problem> {
    serde_json::to_value(Envelope::typed(event))
        .map_err(|e| Problem::internal(format!("cannot render event as JSON: {e}")))
}

/// A still-encoded envelope, its payload converted from CBOR by the lossless mapping.
///
/// A payload that is not CBOR at all (damaged on disk) is shown as its bytes
/// (`{"$bytes": "…"}`), so that one damaged event does not hide the log around it.
pub fn raw_envelope(event: &RecordedEvent) -> Result<Value, Problem> {
    let payload: Cbor = annals::codec::decode_plain(&event.payload.0).unwrap_or_else(|e| {
        tracing::warn!(position = %event.position, error = %e, "an event's payload is not CBOR; shown as its bytes");
        Cbor::Bytes(event.payload.0.clone())
    });
    serde_json::to_value(Envelope::of(event, cbor::Json(&payload))).map_err(|e| {
        Problem::internal(format!(
            "cannot render the event at position {} as JSON: {e}",
            event.position
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_rfc3339() {
        let at = Timestamp(1_795_000_000_123_456);
        assert_eq!(parse_rfc3339("as_of", &time::format(at)).ok(), Some(at));
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
}
