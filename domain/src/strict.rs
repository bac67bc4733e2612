//! Strict decoding of commands: what `#[serde(deny_unknown_fields)]` does not cover by itself.
//!
//! In an internally tagged enum (`#[serde(tag = "type")]`), serde checks unknown fields of the
//! variants that have fields, but reads a variant without fields (`ShipOrder`) with a visitor
//! that skips whatever else the object holds, so `{"type":"ShipOrder","force":true}` would be
//! accepted. Such a variant takes `#[serde(deserialize_with = "crate::strict::no_fields")]`,
//! which reads the rest of the object (the tag already taken out) as a struct without fields
//! that refuses unknown ones. Serialization and the JSON Schema are unchanged.

use serde::{Deserialize, Deserializer};

/// The rest of a variant without fields: nothing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// Reads a variant without fields, refusing any field (see the [module docs](self)).
pub(crate) fn no_fields<'de, D: Deserializer<'de>>(deserializer: D) -> Result<(), D::Error> {
    NoFields::deserialize(deserializer).map(|NoFields {}| ())
}
