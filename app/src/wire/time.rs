//! RFC 3339 times, the one implementation the API and the export format share: a
//! [`Timestamp`] (microseconds since the Unix epoch, UTC) is written as
//! `2024-05-01T12:34:56.123456Z` and read back, through the `time` crate's calendar and parser.
//!
//! The writer always prints six fraction digits and `Z`, so the same timestamp is always the
//! same text (exports are compared byte for byte, and every `recorded_at` of the API has one
//! length). The reader takes any RFC 3339 date-time (`T` or `t`, `Z`, `z` or a `±HH:MM`
//! offset, fraction digits or none) but refuses a time before 1970, a leap second and a
//! precision finer than a microsecond that is not zero: a timestamp is never rounded silently.

use std::fmt;

use annals::Timestamp;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339 as Rfc3339Format;
use time::OffsetDateTime;

/// Nanoseconds per microsecond.
const NANOS_PER_MICRO: i128 = 1_000;

/// `timestamp` as RFC 3339 in UTC with microseconds: `1970-01-01T00:00:00.000000Z`.
pub fn format(timestamp: Timestamp) -> String {
    Rfc3339(timestamp).to_string()
}

/// Parses an RFC 3339 date-time into a [`Timestamp`]; the error says what is wrong.
pub fn parse(text: &str) -> Result<Timestamp, String> {
    let bad = |why: &str| format!("{text:?} is not an RFC 3339 date-time ({why})");
    // RFC 3339 (5.6) allows the lower-case separators; the `time` crate reads upper case only.
    let upper;
    let text_upper = if text.bytes().any(|b| b == b't' || b == b'z') {
        upper = text.to_ascii_uppercase();
        upper.as_str()
    } else {
        text
    };
    // `time` also takes a space between date and time, which RFC 3339 (5.6) does not.
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let at = OffsetDateTime::parse(text_upper, &Rfc3339Format)
        .map_err(|e| bad(&format!("{e}; expected e.g. 2024-05-01T12:34:56.000000Z")))?;
    // `time` reads a valid leap second as 59.999999999 s, which the check below refuses.
    if text.get(17..19) == Some("60") {
        return Err(bad("leap seconds cannot be represented"));
    }
    let nanos = at.unix_timestamp_nanos();
    if nanos % NANOS_PER_MICRO != 0 {
        return Err(bad("finer than a microsecond"));
    }
    u64::try_from(nanos / NANOS_PER_MICRO)
        .map(Timestamp)
        .map_err(|_| bad("before 1970-01-01T00:00:00Z"))
}

/// A [`Timestamp`] on the wire: RFC 3339 text both ways (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rfc3339(pub Timestamp);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        // u64 microseconds reach year 586,912, beyond `time`'s range (year 9999): such a
        // timestamp cannot be recorded by a clock, and is written as the number it is.
        match OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * NANOS_PER_MICRO) {
            Ok(at) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second(),
                at.microsecond()
            ),
            Err(_) => write!(f, "@{micros}us"),
        }
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Formatted straight into the output: no string is allocated per time.
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rfc3339 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        parse(&text).map(Rfc3339).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Rfc3339 {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Rfc3339".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "An RFC 3339 time, in UTC with microseconds.",
            "examples": ["2026-11-27T16:00:00.123456Z"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MICROS_PER_SECOND: u64 = 1_000_000;

    #[test]
    fn known_instants() {
        assert_eq!(format(Timestamp(0)), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T23:59:59.999999Z, a leap day.
        let leap_day = Timestamp(1_709_251_199_999_999);
        assert_eq!(format(leap_day), "2024-02-29T23:59:59.999999Z");
        assert_eq!(parse("2024-02-29T23:59:59.999999Z"), Ok(leap_day));
        assert_eq!(parse("2024-03-01T01:59:59.999999+02:00"), Ok(leap_day));
        assert_eq!(parse("2024-02-29t18:59:59.999999000-05:00"), Ok(leap_day));
        assert_eq!(parse("1970-01-01T00:00:01Z"), Ok(Timestamp(1_000_000)));
        assert_eq!(parse("1970-01-01T00:00:00.5Z"), Ok(Timestamp(500_000)));
        assert_eq!(parse("1970-01-01T00:00:00.5z"), Ok(Timestamp(500_000)));
    }

    #[test]
    fn round_trip_over_many_days() {
        // Every 7,919 seconds (a prime) plus some microseconds, over about 80 years.
        for i in 0..320_000u64 {
            let t = Timestamp(i * 7_919 * MICROS_PER_SECOND + i % 1_000_000);
            assert_eq!(parse(&format(t)), Ok(t), "{}", format(t));
        }
    }

    #[test]
    fn serde_writes_and_reads_the_same_text() {
        let at = Rfc3339(Timestamp(1_795_000_000_123_456));
        let json = serde_json::to_string(&at).unwrap_or_default();
        assert_eq!(json, format!("\"{}\"", format(at.0)));
        assert_eq!(serde_json::from_str::<Rfc3339>(&json).ok(), Some(at));
        assert!(serde_json::from_str::<Rfc3339>("\"yesterday\"").is_err());
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:59:60Z",
            "2016-12-31T23:59:60Z",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.0000001Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:30:00+01:00",
            "2024-01-01T00:00:00+1:00",
            "2024-01-01T00:00:00Zjunk",
            "２024-01-01T00:00:00Z",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
