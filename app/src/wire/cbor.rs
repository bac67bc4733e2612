//! CBOR values as JSON and back, generically (no knowledge of the domain's types): the one
//! mapping of the API (events of aggregate types the server does not serve), the export and the
//! import (every payload and rejection).
//!
//! A payload is CBOR ([`annals::codec`]); it is written as the JSON value that reads most
//! naturally, and [`from_json`] turns that JSON back into the *same* CBOR value, so that an
//! export of an import is the export it came from, byte for byte. CBOR has more than JSON, so
//! the few CBOR values without a JSON counterpart are written as an object with one key that
//! starts with `$` (a **marker**):
//!
//! | CBOR                                   | JSON                                         |
//! |----------------------------------------|----------------------------------------------|
//! | integer within `i64` or `u64`          | number                                       |
//! | integer beyond them (to ±2^64)         | `{"$int": "-18446744073709551616"}`          |
//! | float                                  | number (`1.0`, `-2.5e-8`)                    |
//! | NaN, ±infinity, or a float JSON parsers would not read back exactly | `{"$float": "NaN"}`, `{"$float": "inf"}`, `{"$float": "1.2345678901234567e-300"}` |
//! | text, bool, null, array                | string, bool, null, array                    |
//! | byte string                            | `{"$bytes": "<lower-case hex>"}`             |
//! | tag                                    | `{"$tag": [number, value]}`                  |
//! | map whose keys are distinct text not starting with `$` | object, in the map's order |
//! | any other map                          | `{"$map": [[key, value], ...]}`              |
//!
//! So every JSON object whose only key starts with `$` is a marker, and an object with a
//! `$`-key among others is refused on import. Serde-derived types (the domain's events) use
//! only text-keyed maps, text, integers and null, so their payloads are plain JSON.
//!
//! Floats: the export writes a float as a JSON number only when serde_json reads that number
//! back as the same float, bit for bit, and as a `$float` string (parsed exactly) otherwise, so
//! exports always round-trip. A float in JSON written by something else is read by serde_json's
//! default parser, which for some 16- and 17-digit numbers is one unit in the last place off;
//! serde_json's `float_roundtrip` feature would make it exact.

use std::collections::HashSet;

use annals::codec::Value;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// Most entries of a map checked for duplicate keys by pairwise comparison; larger maps use a
/// hash set.
const SMALL_MAP_ENTRIES: usize = 16;

/// A CBOR value written as JSON (see the [module docs](self)).
#[derive(Debug, Clone, Copy)]
pub struct Json<'a>(pub &'a Value);

impl JsonSchema for Json<'_> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CborJson".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A CBOR value as JSON. Integers, floats, text, booleans, null, arrays \
                and maps with distinct text keys are their JSON counterparts; what JSON lacks \
                is an object with one key starting with `$`: `{\"$bytes\": \"<hex>\"}`, \
                `{\"$int\": \"<decimal>\"}` beyond 64 bits, `{\"$float\": \"NaN\"}` \
                (also `inf`, `-inf`, or a number JSON parsers would not read back exactly), \
                `{\"$tag\": [tag, value]}`, and `{\"$map\": [[key, value], ...]}` for any \
                other map.",
        })
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Integer(int) => {
                let n = i128::from(*int);
                if let Ok(n) = u64::try_from(n) {
                    s.serialize_u64(n)
                } else if let Ok(n) = i64::try_from(n) {
                    s.serialize_i64(n)
                } else {
                    marker(s, "$int", &n.to_string())
                }
            }
            Value::Float(f) => match float_text(*f) {
                None => s.serialize_f64(*f),
                Some(text) => marker(s, "$float", &text),
            },
            Value::Text(text) => s.serialize_str(text),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Null => s.serialize_unit(),
            Value::Bytes(bytes) => marker(s, "$bytes", &hex(bytes)),
            Value::Tag(tag, inner) => marker(s, "$tag", &(tag, Json(inner))),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Json(item))?;
                }
                seq.end()
            }
            Value::Map(entries) if is_plain_object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(&Json(key), &Json(value))?;
                }
                map.end()
            }
            Value::Map(entries) => marker(s, "$map", &Pairs(entries)),
            other => Err(S::Error::custom(format!(
                "a CBOR value this build cannot write as JSON: {other:?}"
            ))),
        }
    }
}

/// A map's entries as `[[key, value], ...]`.
struct Pairs<'a>(&'a [(Value, Value)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (key, value) in self.0 {
            seq.serialize_element(&(Json(key), Json(value)))?;
        }
        seq.end()
    }
}

fn marker<S: Serializer, T: Serialize + ?Sized>(
    s: S,
    name: &str,
    value: &T,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry(name, value)?;
    map.end()
}

/// Whether a map can be a JSON object: distinct text keys, none starting with `$`.
fn is_plain_object(entries: &[(Value, Value)]) -> bool {
    let mut keys = Vec::with_capacity(entries.len());
    for (key, _) in entries {
        match key {
            Value::Text(text) if !text.starts_with('$') => keys.push(text.as_str()),
            _ => return false,
        }
    }
    if keys.len() <= SMALL_MAP_ENTRIES {
        keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k))
    } else {
        let mut seen = HashSet::with_capacity(keys.len());
        keys.into_iter().all(|k| seen.insert(k))
    }
}

/// The `$float` text of a float JSON cannot carry exactly, or `None` when the JSON number
/// that serde_json writes reads back as the same float (bit for bit).
fn float_text(f: f64) -> Option<String> {
    if f.is_nan() {
        return Some("NaN".into());
    }
    if f.is_infinite() {
        return Some(if f > 0.0 { "inf" } else { "-inf" }.into());
    }
    // serde_json's default float parser is fast but not always exact; a float it would read
    // back differently is written as text, which the import parses exactly.
    let written = serde_json::to_string(&f).ok()?;
    match serde_json::from_str::<f64>(&written) {
        Ok(back) if back.to_bits() == f.to_bits() => None,
        _ => Some(format!("{f:e}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Lower- or upper-case hex to bytes.
pub fn unhex(text: &str) -> Result<Vec<u8>, String> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("{:?} is not a hex digit", char::from(c))),
    };
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err("an odd number of hex digits".into());
    }
    b.chunks_exact(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Hex of bytes (lower case), for fingerprints.
pub fn to_hex(bytes: &[u8]) -> String {
    hex(bytes)
}

/// Turns a JSON value read into a CBOR [`Value`] (serde_json keeps objects in their order)
/// into the CBOR value it stands for, resolving markers. The error names the marker at fault.
pub fn from_json(value: Value) -> Result<Value, String> {
    Ok(match value {
        Value::Array(items) => {
            Value::Array(items.into_iter().map(from_json).collect::<Result<_, _>>()?)
        }
        Value::Map(entries) => match <[(Value, Value); 1]>::try_from(entries) {
            Ok([(Value::Text(key), inner)]) if key.starts_with('$') => unmark(&key, inner)?,
            Ok(one) => plain_map(Vec::from(one))?,
            Err(entries) => plain_map(entries)?,
        },
        other => other,
    })
}

/// A map that is no marker: its values converted; a `$` key among others is refused.
fn plain_map(entries: Vec<(Value, Value)>) -> Result<Value, String> {
    if let Some(key) = entries.iter().find_map(|(k, _)| match k {
        Value::Text(t) if t.starts_with('$') => Some(t.as_str()),
        _ => None,
    }) {
        return Err(format!(
            "the object has the key {key:?} among others: keys starting with $ are markers \
             (an object with that one key only)"
        ));
    }
    entries
        .into_iter()
        .map(|(k, v)| Ok((k, from_json(v)?)))
        .collect::<Result<_, String>>()
        .map(Value::Map)
}

fn unmark(key: &str, inner: Value) -> Result<Value, String> {
    let bad = |what: &str| format!("{{\"{key}\": …}} needs {what}");
    match (key, inner) {
        ("$bytes", Value::Text(hex)) => unhex(&hex)
            .map(Value::Bytes)
            .map_err(|e| format!("$bytes: {e}")),
        ("$bytes", _) => Err(bad("a string of hex digits")),
        ("$int", Value::Text(text)) => {
            let n: i128 = text
                .parse()
                .map_err(|_| format!("$int: {text:?} is not an integer"))?;
            n.try_into()
                .map(Value::Integer)
                .map_err(|_| format!("$int: {text} is beyond CBOR's integers (±2^64)"))
        }
        ("$int", _) => Err(bad("a string of decimal digits")),
        ("$float", Value::Text(text)) => match text.as_str() {
            "NaN" => Ok(Value::Float(f64::NAN)),
            "inf" => Ok(Value::Float(f64::INFINITY)),
            "-inf" => Ok(Value::Float(f64::NEG_INFINITY)),
            // std's parser is exact.
            other => other
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|_| format!("$float: {other:?} is not a number")),
        },
        ("$float", _) => Err(bad("a string (NaN, inf, -inf or a number)")),
        ("$tag", Value::Array(mut pair)) if pair.len() == 2 => {
            let inner = pair.pop().map(from_json).transpose()?;
            let tag = pair
                .pop()
                .and_then(|t| t.as_integer())
                .and_then(|t| u64::try_from(i128::from(t)).ok());
            match (tag, inner) {
                (Some(tag), Some(inner)) => Ok(Value::Tag(tag, Box::new(inner))),
                _ => Err(bad("[tag number, value]")),
            }
        }
        ("$tag", _) => Err(bad("[tag number, value]")),
        ("$map", Value::Array(pairs)) => pairs
            .into_iter()
            .map(|pair| match pair {
                Value::Array(kv) if kv.len() == 2 => {
                    let mut kv = kv.into_iter().map(from_json);
                    match (kv.next(), kv.next()) {
                        (Some(k), Some(v)) => Ok((k?, v?)),
                        _ => Err(bad("[[key, value], ...]")),
                    }
                }
                _ => Err(bad("[[key, value], ...]")),
            })
            .collect::<Result<_, _>>()
            .map(Value::Map),
        ("$map", _) => Err(bad("[[key, value], ...]")),
        (other, _) => Err(format!(
            "unknown marker {other:?} (known: $bytes, $int, $float, $tag, $map)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// CBOR → JSON text → CBOR.
    fn round_trip(value: &Value) -> (String, Value) {
        let text = serde_json::to_string(&Json(value)).expect("writes");
        let read: Value = serde_json::from_str(&text).expect("reads");
        (
            text.clone(),
            from_json(read).unwrap_or_else(|e| panic!("{text}: {e}")),
        )
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn domain_payloads_are_plain_json_in_their_order() {
        let value = Value::Map(vec![
            (text("type"), text("OrderCreated")),
            (text("total"), Value::Integer(5_000.into())),
            (text("customer_id"), text("c-1")),
            (text("note"), Value::Null),
        ]);
        let (json, back) = round_trip(&value);
        assert_eq!(
            json,
            r#"{"type":"OrderCreated","total":5000,"customer_id":"c-1","note":null}"#
        );
        assert_eq!(back, value);
    }

    #[test]
    fn every_cbor_kind_comes_back_bit_for_bit() {
        let big = Value::Integer((-(1i128 << 64)).try_into().expect("in range"));
        let value = Value::Array(vec![
            Value::Integer(u64::MAX.into()),
            Value::Integer(i64::MIN.into()),
            big,
            Value::Float(1.0),
            Value::Float(-0.0),
            Value::Float(0.1),
            Value::Float(f64::MIN_POSITIVE),
            Value::Float(5e-324),
            Value::Float(1.797_693_134_862_315_7e308),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
            Value::Bytes(vec![0, 1, 0xfe, 0xff]),
            Value::Tag(1, Box::new(Value::Integer(1_700_000_000.into()))),
            Value::Map(vec![(Value::Integer(1.into()), text("one"))]),
            Value::Map(vec![
                (text("a"), Value::Null),
                (text("a"), Value::Bool(true)),
            ]),
            Value::Map(vec![(text("$bytes"), text("not a marker"))]),
            Value::Map(vec![]),
            Value::Bool(false),
        ]);
        let (json, back) = round_trip(&value);
        let (Value::Array(sent), Value::Array(got)) = (&value, &back) else {
            panic!("arrays");
        };
        for (sent, got) in sent.iter().zip(got) {
            match (sent, got) {
                (Value::Float(a), Value::Float(b)) => {
                    assert_eq!(a.to_bits(), b.to_bits(), "{json}");
                }
                _ => assert_eq!(sent, got, "{json}"),
            }
        }
        let (_, nan) = round_trip(&Value::Float(f64::NAN));
        assert!(matches!(nan, Value::Float(f) if f.is_nan()));
        // And the JSON of the JSON is the same text.
        let (again, _) = round_trip(&back);
        assert_eq!(again, json);
    }

    #[test]
    fn bad_markers_are_named() {
        for (json, needle) in [
            (r#"{"$bytes":"abc"}"#, "odd number"),
            (r#"{"$bytes":"zz"}"#, "hex digit"),
            (r#"{"$bytes":1}"#, "$bytes"),
            (r#"{"$int":"18446744073709551616"}"#, "beyond"),
            (r#"{"$tag":[1]}"#, "$tag"),
            (r#"{"$map":[[1]]}"#, "$map"),
            (r#"{"$what":1}"#, "unknown marker"),
            (r#"{"a":1,"$bytes":"00"}"#, "among others"),
        ] {
            let read: Value = serde_json::from_str(json).expect("valid JSON");
            let err = from_json(read).expect_err(json);
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    /// Any CBOR value this build writes: integers over CBOR's whole range (±2^64), floats of
    /// every bit pattern but NaNs with a payload (the one NaN of `$float` is the canonical one),
    /// byte strings, tags, and maps with keys of any kind, repeated keys and `$` keys included.
    fn any_value() -> impl Strategy<Value = Value> {
        let integer = (-(1i128 << 64)..(1i128 << 64)).prop_filter_map("a CBOR integer", |n| {
            Value::Integer(n.try_into().ok()?).into()
        });
        let float = any::<u64>()
            .prop_map(f64::from_bits)
            .prop_map(|f| Value::Float(if f.is_nan() { f64::NAN } else { f }));
        let leaf = prop_oneof![
            integer,
            float,
            any::<i64>().prop_map(|n| Value::Integer(n.into())),
            "[a-z$]{0,4}".prop_map(Value::Text),
            any::<String>().prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..6)
                    .prop_map(Value::Map),
                proptest::collection::vec(
                    ("[a-z$]{0,3}".prop_map(Value::Text), inner.clone()),
                    0..6
                )
                .prop_map(Value::Map),
                (any::<u64>(), inner).prop_map(|(tag, v)| Value::Tag(tag, Box::new(v))),
            ]
        })
    }

    proptest! {
        /// CBOR → JSON text → CBOR gives the same CBOR bytes (so floats bit for bit), and the
        /// JSON of what came back is the same text.
        #[test]
        fn any_cbor_value_round_trips(value in any_value()) {
            let (json, back) = round_trip(&value);
            let encode = |v: &Value| annals::codec::encode_plain("value", v).expect("encodes");
            prop_assert_eq!(encode(&back), encode(&value), "{}", json);
            let (again, _) = round_trip(&back);
            prop_assert_eq!(again, json);
        }
    }

    #[test]
    fn hex_round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&to_hex(&bytes)), Ok(bytes));
        assert_eq!(unhex("ABcd"), Ok(vec![0xab, 0xcd]));
    }
}
