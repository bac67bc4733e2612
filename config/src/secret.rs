//! [`Secret`]: a string (an API token) that `Debug`, `Display` and `Serialize` never reveal,
//! so it cannot leak into logs, `annals config` or error messages by accident.

use std::fmt;

use serde::{Serialize, Serializer};

/// What every secret prints as.
pub(crate) const REDACTED: &str = "<redacted>";

/// A secret string. Read it with [`expose`](Secret::expose) only where it is used; compare a
/// presented value with [`matches`](Secret::matches).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` equals the secret, in time that does not depend on where they
    /// differ (only on their lengths, which a token format makes public anyway).
    pub fn matches(&self, candidate: &str) -> bool {
        let secret = self.0.as_bytes();
        let candidate = candidate.as_bytes();
        if secret.len() != candidate.len() {
            return false;
        }
        let difference = secret
            .iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Keep the optimizer from turning the fold into an early-exit comparison.
        std::hint::black_box(difference) == 0
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Secret {
        Secret(secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_itself() {
        let secret = Secret::new("s3cr3t-t0ken-0123456789");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", vec![secret.clone()]), "[<redacted>]");
        assert_eq!(
            toml::Value::try_from(&secret).expect("a string serializes"),
            toml::Value::String("<redacted>".to_owned())
        );
        assert_eq!(secret.expose(), "s3cr3t-t0ken-0123456789");
    }

    #[test]
    fn matches_only_the_same_bytes() {
        let secret = Secret::new("abcdefghijklmnop");
        assert!(secret.matches("abcdefghijklmnop"));
        assert!(!secret.matches("abcdefghijklmnoq"));
        assert!(!secret.matches("Abcdefghijklmnop"));
        assert!(!secret.matches("abcdefghijklmno"));
        assert!(!secret.matches(""));
    }
}
