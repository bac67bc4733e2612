//! The outcome lines of the export format: the stored outcome of a command that carried a
//! command id and committed no event — refused by its aggregate, or accepted without events —
//! written by `annals export` and restored by `annals import` (the format is in the
//! [parent module](super)).
//!
//! Such an outcome is not in the log (a committed command's outcome is its commit, which the
//! event lines carry), so without these lines a retry of a refused idempotent command would run
//! again on an imported store, and could succeed. This module owns the line's shape both ways.
//!
//! The rejection is the aggregate's encoded rejection (CBOR). It is written as JSON, through
//! the lossless mapping of [`crate::wire::cbor`], when encoding that JSON's value again gives the stored
//! bytes exactly (so `"rejection":{"type":"AlreadyExists"}` can be read and grepped), and
//! otherwise — bytes that are not CBOR, or CBOR written in a form this build would encode
//! differently, such as an indefinite-length map — as `rejection_cbor`, the bytes in hex. Either
//! way the import restores the very bytes that were stored.

use annals::codec::Value;
use annals::store::{Fingerprint, StoredOutcome};
use annals::{CommandId, StreamId, Version};
use serde::{Deserialize, Serialize};

use crate::wire::cbor::{from_json, to_hex, unhex, Json};

/// The `kind` of an outcome line. Event lines have no `kind` (the format before outcome lines
/// existed), so that an export written by an older build imports as it did.
pub(super) const KIND: &str = "outcome";

/// An outcome line as written. Field order is the format's.
#[derive(Serialize)]
struct Written<'a> {
    kind: &'static str,
    command_id: &'a str,
    aggregate: &'a str,
    id: &'a str,
    version: u64,
    command_fingerprint: String,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejection: Option<Json<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejection_cbor: Option<String>,
}

/// What became of the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    /// Refused by its aggregate: the line carries the rejection.
    Rejected,
    /// Accepted, and it produced no event.
    NoEvents,
}

/// Writes the outcome line of command `id` (without its newline). A committed outcome has no
/// outcome line (its events carry it): asking for one is a bug of the caller, refused.
pub(super) fn write(
    out: &mut impl std::io::Write,
    id: &CommandId,
    outcome: &StoredOutcome,
) -> Result<(), serde_json::Error> {
    let (stream, fingerprint, version, kind, rejection) = match outcome {
        StoredOutcome::Rejected {
            stream,
            fingerprint,
            version,
            rejection,
        } => (
            stream,
            fingerprint,
            version,
            Outcome::Rejected,
            Some(rejection),
        ),
        StoredOutcome::NoEvents {
            stream,
            fingerprint,
            version,
        } => (stream, fingerprint, version, Outcome::NoEvents, None),
        StoredOutcome::Committed { .. } => {
            return Err(serde::ser::Error::custom(format!(
                "command id {:?} committed events: its outcome is exported with them, not as an \
                 outcome line",
                id.as_str()
            )))
        }
    };
    let value = rejection.and_then(|bytes| as_json_value(bytes));
    let line = Written {
        kind: KIND,
        command_id: id.as_str(),
        aggregate: stream.aggregate_type(),
        id: stream.aggregate_id(),
        version: version.0,
        command_fingerprint: to_hex(&fingerprint.0),
        outcome: kind,
        rejection: value.as_ref().map(Json),
        rejection_cbor: match (rejection, &value) {
            (Some(bytes), None) => Some(to_hex(bytes)),
            _ => None,
        },
    };
    serde_json::to_writer(out, &line)
}

/// The CBOR value of `bytes`, if encoding it again gives exactly `bytes` (else the line carries
/// the bytes themselves).
fn as_json_value(bytes: &[u8]) -> Option<Value> {
    let value: Value = annals::codec::decode_plain(bytes).ok()?;
    let again = annals::codec::encode_plain("rejection", &value).ok()?;
    (again == bytes).then_some(value)
}

/// Whether `text` is an outcome line (else an event line). Only lines that mention a `"kind"`
/// key are parsed for it, so event lines cost one byte search; a `kind` other than
/// [`KIND`] is refused, naming it.
pub(super) fn is_outcome(text: &[u8]) -> Result<bool, String> {
    const KEY: &[u8] = b"\"kind\"";
    if !text.windows(KEY.len()).any(|w| w == KEY) {
        return Ok(false);
    }
    /// The line's `kind`, every other field skipped.
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        kind: Option<String>,
    }
    // A line that is not JSON is reported by the parser of its kind, with its column.
    let Ok(probe) = serde_json::from_slice::<Probe>(text) else {
        return Ok(false);
    };
    match probe.kind.as_deref() {
        None => Ok(false),
        Some(KIND) => Ok(true),
        Some(other) => Err(format!(
            "unknown line kind {other:?}: a line is an event (no kind) or a command outcome \
             (\"kind\":\"{KIND}\")"
        )),
    }
}

/// An outcome line as read. Every field must be present, but `rejection` and `rejection_cbor`,
/// of which a rejected outcome has exactly one and a no-event outcome none.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Read {
    kind: String,
    command_id: String,
    aggregate: String,
    id: String,
    version: u64,
    command_fingerprint: String,
    outcome: Outcome,
    /// Parsed into a CBOR value directly, keeping the order of object keys.
    #[serde(default)]
    rejection: Option<Value>,
    #[serde(default)]
    rejection_cbor: Option<String>,
}

/// An outcome line, checked on its own.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Restored {
    /// The command id.
    pub(super) id: CommandId,
    /// The stream the command was sent to.
    pub(super) stream: StreamId,
    /// The stream's version when the outcome was recorded.
    pub(super) version: Version,
    /// What the store is to hold for the id.
    pub(super) outcome: StoredOutcome,
}

/// Parses and checks an outcome line. The error says what is wrong (the caller adds the line
/// number).
pub(super) fn parse(text: &[u8]) -> Result<Restored, String> {
    let line: Read = serde_json::from_slice(text).map_err(|e| {
        let message = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = message.strip_suffix(&suffix).unwrap_or(&message);
        format!(
            "not an exported command outcome (column {}): {message}",
            e.column()
        )
    })?;
    if line.kind != KIND {
        return Err(format!("kind {:?} where {KIND:?} belongs", line.kind));
    }
    let id = CommandId::new(line.command_id).map_err(|e| e.to_string())?;
    let stream = StreamId::new(line.aggregate, line.id).map_err(|e| e.to_string())?;
    let fingerprint = unhex(&line.command_fingerprint)
        .ok()
        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
        .map(Fingerprint)
        .ok_or_else(|| {
            format!(
                "command_fingerprint {:?} is not 32 hex digits",
                line.command_fingerprint
            )
        })?;
    let version = Version(line.version);
    let outcome = match (line.outcome, line.rejection, line.rejection_cbor) {
        (Outcome::NoEvents, None, None) => StoredOutcome::NoEvents {
            stream: stream.clone(),
            fingerprint,
            version,
        },
        (Outcome::NoEvents, _, _) => {
            return Err("a no_events outcome carries no rejection".into());
        }
        (Outcome::Rejected, Some(value), None) => {
            let value = from_json(value).map_err(|e| format!("rejection: {e}"))?;
            let rejection = annals::codec::encode_plain("rejection", &value)
                .map_err(|e| format!("rejection: {e}"))?;
            StoredOutcome::Rejected {
                stream: stream.clone(),
                fingerprint,
                version,
                rejection,
            }
        }
        (Outcome::Rejected, None, Some(hex)) => StoredOutcome::Rejected {
            stream: stream.clone(),
            fingerprint,
            version,
            rejection: unhex(&hex).map_err(|e| format!("rejection_cbor: {e}"))?,
        },
        (Outcome::Rejected, None, None) => {
            return Err("a rejected outcome needs its rejection or rejection_cbor".into());
        }
        (Outcome::Rejected, Some(_), Some(_)) => {
            return Err("a rejected outcome has a rejection or a rejection_cbor, not both".into());
        }
    };
    Ok(Restored {
        id,
        stream,
        version,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamId {
        StreamId::new("Customer", "c-1").expect("a valid stream id")
    }

    fn id(text: &str) -> CommandId {
        CommandId::new(text).expect("a valid command id")
    }

    fn written(id: &CommandId, outcome: &StoredOutcome) -> String {
        let mut out = Vec::new();
        write(&mut out, id, outcome).expect("writes");
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    fn rejected(rejection: Vec<u8>) -> StoredOutcome {
        StoredOutcome::Rejected {
            stream: stream(),
            fingerprint: Fingerprint([0xab; 16]),
            version: Version(3),
            rejection,
        }
    }

    /// `{"type":"AlreadyExists"}` as the domain encodes it.
    fn already_exists() -> Vec<u8> {
        let value = Value::Map(vec![(
            Value::Text("type".into()),
            Value::Text("AlreadyExists".into()),
        )]);
        annals::codec::encode_plain("rejection", &value).expect("encodes")
    }

    #[test]
    fn a_rejection_is_written_as_json_and_read_back_to_the_same_bytes() {
        let outcome = rejected(already_exists());
        let line = written(&id("again"), &outcome);
        assert_eq!(
            line,
            format!(
                r#"{{"kind":"outcome","command_id":"again","aggregate":"Customer","id":"c-1","version":3,"command_fingerprint":"{}","outcome":"rejected","rejection":{{"type":"AlreadyExists"}}}}"#,
                "ab".repeat(16)
            )
        );
        assert_eq!(is_outcome(line.as_bytes()), Ok(true));
        assert_eq!(
            parse(line.as_bytes()).expect("parses"),
            Restored {
                id: id("again"),
                stream: stream(),
                version: Version(3),
                outcome,
            }
        );
    }

    #[test]
    fn a_no_event_outcome_has_no_rejection() {
        let outcome = StoredOutcome::NoEvents {
            stream: stream(),
            fingerprint: Fingerprint([1; 16]),
            version: Version(0),
        };
        let line = written(&id("pm:x:1"), &outcome);
        assert!(line.ends_with(r#""outcome":"no_events"}"#), "{line}");
        assert_eq!(parse(line.as_bytes()).expect("parses").outcome, outcome);
    }

    /// Bytes that JSON would not give back exactly — not CBOR at all, or an indefinite-length
    /// map that this build would encode with a length — travel as hex, unchanged.
    #[test]
    fn a_rejection_json_cannot_carry_exactly_travels_as_its_bytes() {
        let indefinite = vec![0xbf, 0x61, b'a', 0x01, 0xff];
        for bytes in [vec![0xff, 0x00, 0x13], indefinite] {
            let outcome = rejected(bytes.clone());
            let line = written(&id("k"), &outcome);
            assert!(
                line.contains(&format!(r#""rejection_cbor":"{}""#, to_hex(&bytes))),
                "{line}"
            );
            assert!(!line.contains(r#""rejection":"#), "{line}");
            assert_eq!(parse(line.as_bytes()).expect("parses").outcome, outcome);
        }
    }

    #[test]
    fn a_committed_outcome_has_no_outcome_line() {
        let committed = StoredOutcome::Committed {
            fingerprint: Fingerprint([0; 16]),
            events: Vec::new(),
        };
        assert!(write(&mut Vec::new(), &id("k"), &committed).is_err());
    }

    #[test]
    fn event_lines_are_told_from_outcome_lines() {
        let event = br#"{"event_id":"x","data":{"kind":"a field of the payload"}}"#;
        assert_eq!(is_outcome(event), Ok(false));
        assert_eq!(is_outcome(br#"{"event_id":"x","data":{}}"#), Ok(false));
        assert_eq!(
            is_outcome(br#"{"kind":"outcome","#),
            Ok(false),
            "left to the parser"
        );
        let other = is_outcome(br#"{"kind":"snapshot"}"#).expect_err("unknown kind");
        assert!(other.contains("unknown line kind \"snapshot\""), "{other}");
    }

    #[test]
    fn bad_outcome_lines_say_what_is_wrong() {
        let good = written(&id("again"), &rejected(already_exists()));
        let cases = [
            (
                good.replace(r#""kind":"outcome""#, r#""kind":"event""#),
                "kind \"event\"",
            ),
            (
                good.replace(r#""command_id":"again""#, r#""command_id":"""#),
                "command id",
            ),
            (good.replace("abab", "ab"), "32 hex digits"),
            (
                good.replace(r#""outcome":"rejected""#, r#""outcome":"no_events""#),
                "carries no rejection",
            ),
            (
                good.replace(r#","rejection":{"type":"AlreadyExists"}"#, ""),
                "needs its rejection",
            ),
            (
                good.replace(r#""version":3"#, r#""version":3,"extra":1"#),
                "unknown field `extra`",
            ),
            (
                good.replace(r#""outcome":"rejected""#, r#""outcome":"maybe""#),
                "unknown variant `maybe`",
            ),
            (
                good.replace(r#"{"type":"AlreadyExists"}"#, r#"{"$nope":1}"#),
                "unknown marker",
            ),
        ];
        for (text, needle) in cases {
            let error = parse(text.as_bytes()).expect_err(&text);
            assert!(error.contains(needle), "{needle:?} not in {error:?}");
        }
    }
}
