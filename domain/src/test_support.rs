//! Helpers for the unit tests of this crate: checking the serialized shape of commands, events
//! and states, that commands refuse unknown JSON fields, and that they survive the CBOR a
//! process manager stores them in.
//!
//! The HTTP API exposes commands and events as JSON with exact names. Those names come from the
//! serde attributes (`#[serde(tag = "type")]`, field names), which every self-describing format
//! writes the same way, so the shape is checked on the `ciborium::Value` tree: a map from the
//! same keys to the same values as the JSON object. Unknown fields are a matter of the JSON
//! decoder's messages, so those checks use `serde_json` itself.

use ciborium::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// `value` as a self-describing tree.
pub(crate) fn to_value<T: Serialize>(value: &T) -> Value {
    Value::serialized(value).expect("test values serialize")
}

/// A text value.
pub(crate) fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// The `"type"` tag of a serialized enum.
pub(crate) fn tag(value: &Value) -> String {
    let Value::Map(entries) = value else {
        panic!("expected a map, got {value:?}");
    };
    entries
        .iter()
        .find(|(k, _)| *k == text("type"))
        .and_then(|(_, v)| v.as_text())
        .expect("a \"type\" tag")
        .to_string()
}

/// Checks that `value` serializes to exactly the object `expected` (keys in this order) and
/// that the object deserializes back to `value`, the way a JSON request body is read.
#[track_caller]
pub(crate) fn assert_shape<T>(value: &T, expected: &[(&str, Value)])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let object = Value::Map(expected.iter().map(|(k, v)| (text(k), v.clone())).collect());
    assert_eq!(to_value(value), object, "serialized shape of {value:?}");
    let back: T = object.deserialized().expect("the object deserializes");
    assert_eq!(&back, value, "deserialized from its object");
}

/// Checks that the JSON `text` decodes to `expected`, as a request body is read.
#[track_caller]
pub(crate) fn assert_json_decodes<T>(text: &str, expected: &T)
where
    T: DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let decoded: T = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{text} decodes as a {}: {e}", std::any::type_name::<T>()));
    assert_eq!(&decoded, expected, "{text}");
}

/// Checks that the JSON `text` is refused because of its unknown field `field`, and that the
/// error names it (a typo must not be dropped silently).
#[track_caller]
pub(crate) fn assert_unknown_field_refused<T>(text: &str, field: &str)
where
    T: DeserializeOwned + std::fmt::Debug,
{
    match serde_json::from_str::<T>(text) {
        Ok(decoded) => panic!("{text} must be refused, but decoded as {decoded:?}"),
        Err(e) => assert!(
            e.to_string().contains(&format!("unknown field `{field}`")),
            "{text}: the error names the field {field}: {e}"
        ),
    }
}

/// Checks that `value` decodes from the plain CBOR the runtime stores it as (a process
/// manager's outbox and deadlines hold commands so) back to itself.
#[track_caller]
pub(crate) fn assert_cbor_round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = annals::codec::encode_plain("command", value).expect("encodes");
    let back: T = annals::codec::decode_plain(&bytes)
        .unwrap_or_else(|e| panic!("{value:?} decodes from its own CBOR: {e}"));
    assert_eq!(&back, value);
}
