//! Key encodings of the sled trees. All integers are big-endian so that sled's byte order is
//! numeric order.
//!
//! A stream key is `[type_len: u8][type][id_len: u16][id]`: length prefixes make it
//! prefix-free, so a range over one stream's prefix never includes another stream.

use crate::store::StoreError;
use crate::types::{Position, StreamId, Version};

/// Length of an encoded stream key.
pub(crate) fn stream_key_len(stream: &StreamId) -> usize {
    1 + stream.aggregate_type().len() + 2 + stream.aggregate_id().len()
}

/// Appends the stream key of `stream` to `out`.
pub(crate) fn push_stream_key(out: &mut Vec<u8>, stream: &StreamId) {
    let ty = stream.aggregate_type().as_bytes();
    let id = stream.aggregate_id().as_bytes();
    // StreamId::new bounds both lengths (64 and 256 bytes), so the casts cannot truncate.
    out.push(u8::try_from(ty.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(ty);
    out.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(id);
}

/// Parses a stream key back into a stream id.
pub(crate) fn parse_stream_key(key: &[u8]) -> Result<StreamId, String> {
    let (&type_len, rest) = key.split_first().ok_or("empty stream key")?;
    let type_len = usize::from(type_len);
    let ty = rest
        .get(..type_len)
        .ok_or("stream key shorter than its type")?;
    let rest = &rest[type_len..];
    let id_len = rest
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or("stream key has no id length")?;
    let id = rest
        .get(2..2 + id_len)
        .filter(|_| rest.len() == 2 + id_len)
        .ok_or("stream key length mismatch")?;
    let ty = std::str::from_utf8(ty).map_err(|_| "stream key type is not UTF-8")?;
    let id = std::str::from_utf8(id).map_err(|_| "stream key id is not UTF-8")?;
    StreamId::stored(ty, id).map_err(|e| e.to_string())
}

/// The stream key alone (prefix of its index and snapshot keys).
pub(crate) fn stream_key(stream: &StreamId) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream_key_len(stream));
    push_stream_key(&mut out, stream);
    out
}

/// Stream key followed by a version: the key of index and snapshot entries.
pub(crate) fn stream_version_key(stream: &StreamId, version: Version) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream_key_len(stream) + 8);
    push_stream_key(&mut out, stream);
    out.extend_from_slice(&version.0.to_be_bytes());
    out
}

/// The key of a log record.
pub(crate) fn position_key(position: Position) -> [u8; 8] {
    position.0.to_be_bytes()
}

/// Reads a big-endian u64 from the start of `bytes`.
pub(crate) fn read_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt {
            what: what.to_string(),
            reason: "shorter than 8 bytes".into(),
        })?;
    Ok(u64::from_be_bytes(arr))
}

/// The version at the end of an index or snapshot key.
pub(crate) fn version_suffix(key: &[u8], what: &str) -> Result<Version, StoreError> {
    let start = key
        .len()
        .checked_sub(8)
        .ok_or_else(|| StoreError::Corrupt {
            what: what.to_string(),
            reason: "key shorter than 8 bytes".into(),
        })?;
    Ok(Version(read_u64(&key[start..], what)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_are_prefix_free() {
        let a = stream_key(&StreamId::new("A", "x").expect("valid"));
        let b = stream_key(&StreamId::stored("A", "x\0\0").expect("valid"));
        assert!(
            !b.starts_with(&a),
            "a longer id must not extend a shorter stream's prefix"
        );
    }

    #[test]
    fn stream_keys_parse_back() {
        let s = StreamId::new("Order", "o-1").expect("valid");
        assert_eq!(parse_stream_key(&stream_key(&s)).expect("parses"), s);
        assert!(parse_stream_key(&[5, b'a']).is_err());
        assert!(parse_stream_key(&[]).is_err());
    }

    #[test]
    fn versions_sort_numerically() {
        let s = StreamId::new("A", "x").expect("valid");
        assert!(stream_version_key(&s, Version(2)) < stream_version_key(&s, Version(256)));
        assert_eq!(
            version_suffix(&stream_version_key(&s, Version(77)), "k").expect("ok"),
            Version(77)
        );
    }
}
