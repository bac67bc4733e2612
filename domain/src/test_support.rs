//! Helpers for the unit tests of this crate: checking the serialized shape of commands, events
//! and states without a JSON dependency.
//!
//! The HTTP API exposes commands and events as JSON with exact names. Those names come from the
//! serde attributes (`#[serde(tag = "type")]`, field names), which every self-describing format
//! writes the same way, so the shape is checked on the `ciborium::Value` tree: a map from the
//! same keys to the same values as the JSON object.

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
