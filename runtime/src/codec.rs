//! CBOR encoding for everything Annals writes to disk.
//!
//! Every top-level stored value starts with one **format byte** naming its layout, followed by
//! the CBOR body (ciborium). A reader that meets a format byte it does not know reports
//! [`CodecError::UnknownFormat`] instead of guessing, so a newer database opened by an older
//! binary fails loudly and changes nothing. Event payloads nested inside a record are plain CBOR
//! (their evolution is handled by the event's schema version, not by the format byte).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A generic CBOR value, as upcasters see old payloads ([`Upcast`](crate::Upcast)): re-exported
/// so that an upcaster needs no direct dependency on the exact ciborium version.
pub use ciborium::Value;

/// Encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        reason: String,
    },
    /// The bytes are not valid CBOR for the expected type.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The record starts with a format byte this version of Annals does not know.
    #[error("cannot decode {what}: unknown format byte {found} (this build reads format {known})")]
    UnknownFormat {
        /// What was being decoded.
        what: &'static str,
        /// The format byte found.
        found: u8,
        /// The format byte this build writes and reads.
        known: u8,
    },
    /// The record is empty: it has not even a format byte.
    #[error("cannot decode {what}: empty record")]
    Empty {
        /// What was being decoded.
        what: &'static str,
    },
}

/// Bytes of the scratch buffer ciborium decodes short strings and byte strings into. ciborium's
/// `from_reader` zeroes a 4 KiB buffer on every call, which showed up in profiles of replay;
/// longer strings are decoded into their own allocation either way.
const SCRATCH_LEN: usize = 256;

/// Decodes CBOR from a byte slice with a small scratch buffer (nesting limited to 256 levels,
/// so hostile input cannot overflow the stack).
pub(crate) fn from_slice<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, ciborium::de::Error<std::io::Error>> {
    let mut scratch = [0u8; SCRATCH_LEN];
    ciborium::de::from_reader_with_buffer(bytes, &mut scratch)
}

/// Encodes `value` as `[format][CBOR]`.
pub fn encode_versioned<T: Serialize>(
    format: u8,
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(128);
    out.push(format);
    ciborium::into_writer(value, &mut out).map_err(|e| CodecError::Encode {
        what,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Decodes `[format][CBOR]`, checking the format byte.
pub fn decode_versioned<T: DeserializeOwned>(
    format: u8,
    what: &'static str,
    bytes: &[u8],
) -> Result<T, CodecError> {
    let (&found, body) = bytes.split_first().ok_or(CodecError::Empty { what })?;
    if found != format {
        return Err(CodecError::UnknownFormat {
            what,
            found,
            known: format,
        });
    }
    from_slice(body).map_err(|e| CodecError::Decode {
        what,
        reason: e.to_string(),
    })
}

/// Encodes a nested value (an event payload, a command, a snapshot state) as plain CBOR.
pub fn encode_plain<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    ciborium::into_writer(value, &mut out).map_err(|e| CodecError::Encode {
        what,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Decodes a nested plain-CBOR value.
pub fn decode_plain<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    from_slice(bytes).map_err(|e| CodecError::Decode {
        what: "payload",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        amount: u64,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        tags: Vec<Option<i32>>,
    }

    proptest! {
        #[test]
        fn versioned_round_trip(name in ".{0,40}", amount: u64,
                                blob in proptest::collection::vec(any::<u8>(), 0..300),
                                tags in proptest::collection::vec(any::<Option<i32>>(), 0..10)) {
            let value = Sample { name, amount, blob, tags };
            let bytes = encode_versioned(7, "sample", &value).expect("encodes");
            prop_assert_eq!(bytes[0], 7);
            let back: Sample = decode_versioned(7, "sample", &bytes).expect("decodes");
            prop_assert_eq!(back, value);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_versioned::<Sample>(1, "sample", &bytes);
        }
    }

    #[test]
    fn unknown_format_is_reported() {
        let bytes = encode_versioned(2, "sample", &1u32).expect("encodes");
        let err = decode_versioned::<u32>(1, "sample", &bytes).expect_err("format 2 is unknown");
        assert!(
            matches!(
                err,
                CodecError::UnknownFormat {
                    found: 2,
                    known: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            decode_versioned::<u32>(1, "x", &[]),
            Err(CodecError::Empty { .. })
        ));
    }
}
