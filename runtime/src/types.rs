//! Identity and ordering newtypes shared by every layer: [`Version`] (per stream), [`Position`]
//! (global log), [`StreamId`], [`CommandId`] and [`Timestamp`].
//!
//! `Version` and `Position` are distinct types on purpose: mixing a stream's version with the
//! global position is the classic event-sourcing bug, and the compiler now refuses it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// An event's 1-based number within its stream; `Version(0)` means "no events yet".
///
/// Versions of one stream are contiguous: the journal refuses any append whose first version is
/// not the stream's head plus one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    /// The version of a stream that has no events.
    pub const INITIAL: Version = Version(0);

    /// The version `n` events later. Saturates instead of overflowing (a stream cannot hold
    /// 2^64 events; the journal rejects anything close long before).
    #[must_use]
    pub fn advance(self, n: u64) -> Version {
        Version(self.0.saturating_add(n))
    }

    /// The next version.
    #[must_use]
    pub fn next(self) -> Version {
        self.advance(1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An event's 1-based number in the global log across all streams; `Position(0)` means "before
/// the first event". Strictly increasing in commit order, without gaps.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// The position before the first event of the log.
    pub const START: Position = Position(0);

    /// The position `n` events later (saturating).
    #[must_use]
    pub fn advance(self, n: u64) -> Position {
        Position(self.0.saturating_add(n))
    }

    /// The next position.
    #[must_use]
    pub fn next(self) -> Position {
        self.advance(1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Longest aggregate type name, in bytes. Type names are part of every storage key, so they are
/// short by design; the limit keeps the key encoding to one length byte.
pub const AGGREGATE_TYPE_LEN_MAX: usize = 64;

/// Longest aggregate id, in bytes. Ids come from users (HTTP paths), so they are bounded.
pub const AGGREGATE_ID_LEN_MAX: usize = 256;

/// Longest command id (HTTP `Idempotency-Key`), in bytes.
pub const COMMAND_ID_LEN_MAX: usize = 128;

/// The identity of one stream: the aggregate type and the aggregate id.
///
/// Cheap to clone (both parts are reference counted), because it travels with every command,
/// append and envelope.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    aggregate_type: Arc<str>,
    aggregate_id: Arc<str>,
}

impl StreamId {
    /// A stream id, checked: both parts non-empty, within their length limits, and made of
    /// visible characters only (see [`check_id`]).
    pub fn new(
        aggregate_type: impl Into<Arc<str>>,
        aggregate_id: impl Into<Arc<str>>,
    ) -> Result<StreamId, InvalidId> {
        let aggregate_type = aggregate_type.into();
        let aggregate_id = aggregate_id.into();
        check_id("aggregate type", &aggregate_type, AGGREGATE_TYPE_LEN_MAX)?;
        check_id("aggregate id", &aggregate_id, AGGREGATE_ID_LEN_MAX)?;
        Ok(StreamId {
            aggregate_type,
            aggregate_id,
        })
    }

    /// A stream id read back from storage: only the lengths are checked, so that data written
    /// by a build with looser id rules can still be read.
    pub(crate) fn stored(
        aggregate_type: impl Into<Arc<str>>,
        aggregate_id: impl Into<Arc<str>>,
    ) -> Result<StreamId, InvalidId> {
        let aggregate_type = aggregate_type.into();
        let aggregate_id = aggregate_id.into();
        check_len("aggregate type", &aggregate_type, AGGREGATE_TYPE_LEN_MAX)?;
        check_len("aggregate id", &aggregate_id, AGGREGATE_ID_LEN_MAX)?;
        Ok(StreamId {
            aggregate_type,
            aggregate_id,
        })
    }

    /// The aggregate type name, as registered (`"Order"`).
    pub fn aggregate_type(&self) -> &str {
        &self.aggregate_type
    }

    /// The aggregate id (`"o-17"`).
    pub fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.aggregate_type, self.aggregate_id)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({self})")
    }
}

/// A client-chosen id for one command (HTTP `Idempotency-Key`). The journal stores the outcome
/// of every command that carries one; a retry with the same id returns that outcome.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommandId(Arc<str>);

impl CommandId {
    /// A command id, checked: non-empty, at most [`COMMAND_ID_LEN_MAX`] bytes, visible
    /// characters only (see [`check_id`]).
    pub fn new(id: impl Into<Arc<str>>) -> Result<CommandId, InvalidId> {
        let id = id.into();
        check_id("command id", &id, COMMAND_ID_LEN_MAX)?;
        Ok(CommandId(id))
    }

    /// A command id read back from storage: only the length is checked.
    pub(crate) fn stored(id: impl Into<Arc<str>>) -> Result<CommandId, InvalidId> {
        let id = id.into();
        check_len("command id", &id, COMMAND_ID_LEN_MAX)?;
        Ok(CommandId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CommandId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        CommandId::new(value)
    }
}

impl From<CommandId> for String {
    fn from(value: CommandId) -> String {
        value.0.to_string()
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandId({:?})", &*self.0)
    }
}

/// An id that is empty, too long, or has a character ids may not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidId {
    /// Which kind of id.
    pub what: &'static str,
    /// Why it was refused.
    pub reason: String,
}

/// Whether `c` may appear in an id: a visible ASCII character (`!` to `~`), or a non-ASCII
/// letter or digit (`Müller`, `注文-1`).
///
/// Everything else is refused: control characters (CR and LF would forge log lines), spaces
/// and other whitespace, invisible format characters (zero-width spaces, bidirectional
/// overrides that make an id display as another), and U+FFFD, the replacement character a
/// lossy decoder leaves where bytes were not UTF-8 (so `a%FFb` and `a%FEb` cannot name one
/// aggregate).
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_graphic() || (!c.is_ascii() && c.is_alphanumeric())
}

/// Checks an id: 1 to `max` bytes, every character one [`is_id_char`] accepts.
pub fn check_id(what: &'static str, value: &str, max: usize) -> Result<(), InvalidId> {
    check_len(what, value, max)?;
    if let Some((at, c)) = value.char_indices().find(|&(_, c)| !is_id_char(c)) {
        return Err(InvalidId {
            what,
            reason: format!(
                "{} at byte {at} is not allowed: ids are visible characters (ASCII '!' to \
                 '~', or letters and digits), without spaces or control characters",
                c.escape_unicode()
            ),
        });
    }
    Ok(())
}

fn check_len(what: &'static str, value: &str, max: usize) -> Result<(), InvalidId> {
    if value.is_empty() {
        return Err(InvalidId {
            what,
            reason: "must not be empty".into(),
        });
    }
    if value.len() > max {
        return Err(InvalidId {
            what,
            reason: format!("{} bytes, at most {max} allowed", value.len()),
        });
    }
    Ok(())
}

/// Wall-clock time as microseconds since the Unix epoch (UTC). Stored with every commit as its
/// "recorded at" time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current time. A clock before 1970 reads as the epoch rather than failing.
    pub fn now() -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
    }

    /// Microseconds since the Unix epoch.
    pub fn as_micros(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_limits() {
        assert!(StreamId::new("Order", "o-1").is_ok());
        assert!(StreamId::new("", "o-1").is_err());
        assert!(StreamId::new("Order", "").is_err());
        assert!(StreamId::new("Order", "x".repeat(AGGREGATE_ID_LEN_MAX + 1)).is_err());
        assert!(StreamId::new("T".repeat(AGGREGATE_TYPE_LEN_MAX + 1), "x").is_err());
    }

    #[test]
    fn ids_are_visible_characters() {
        for good in ["o-1", "Müller", "注文-1", "a:b/c", "~!"] {
            assert!(StreamId::new("Order", good).is_ok(), "{good:?}");
            assert!(CommandId::new(good).is_ok(), "{good:?}");
        }
        for bad in [
            "a b",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\tb",
            "a\u{FFFD}b",
            "a\u{200B}b",
            "a\u{202E}b",
            "a\u{A0}b",
            "a\u{7F}b",
        ] {
            assert!(StreamId::new("Order", bad).is_err(), "{bad:?}");
            assert!(StreamId::new(bad, "x").is_err(), "{bad:?}");
            assert!(CommandId::new(bad).is_err(), "{bad:?}");
            assert!(StreamId::stored("Order", bad).is_ok(), "stored {bad:?}");
        }
    }

    #[test]
    fn command_id_limits() {
        assert!(CommandId::new("k-1").is_ok());
        assert!(CommandId::new("").is_err());
        assert!(CommandId::new("k".repeat(COMMAND_ID_LEN_MAX + 1)).is_err());
    }

    #[test]
    fn version_and_position_advance() {
        assert_eq!(Version(3).advance(2), Version(5));
        assert_eq!(Position(u64::MAX).next(), Position(u64::MAX));
    }
}
