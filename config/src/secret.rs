//! [`Secret`]: a string (an API token) that `Debug`, `Display` and `Serialize` never reveal,
//! so it cannot leak into logs, `annals config` or error messages by accident; and
//! [`DatabaseUrl`]: a connection URL that shows where it points but never its password.

use std::fmt;

use annals::store::postgres::redacted_url;
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

/// A PostgreSQL connection URL (`postgres://user:password@host:port/database`, or the
/// key=value form). `Debug`, `Display` and `Serialize` show it with the password replaced by
/// `***` (the runtime's [`redacted_url`]), so `annals config` still says which database is
/// used; read the real one with [`expose`](DatabaseUrl::expose) only to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }

    /// The URL itself, password included.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> String {
        redacted_url(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// Whether `url` is what [`DatabaseUrl::redacted`] makes of a URL with a password: a rendered
/// configuration loaded again, whose password must be put back.
pub(crate) fn is_redacted_url(url: &str) -> bool {
    url.contains(":***@") || url.split_whitespace().any(|part| part == "password=***")
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

    #[test]
    fn a_database_url_never_prints_its_password() {
        let url = DatabaseUrl::new("postgres://annals:s3cr3t@db.internal:5432/events");
        let shown = "postgres://annals:***@db.internal:5432/events";
        assert_eq!(url.to_string(), shown);
        assert_eq!(format!("{url:?}"), format!("{shown:?}"));
        assert_eq!(
            toml::Value::try_from(&url).expect("a string serializes"),
            toml::Value::String(shown.to_owned())
        );
        assert_eq!(
            url.expose(),
            "postgres://annals:s3cr3t@db.internal:5432/events"
        );
        assert!(is_redacted_url(shown));
        assert!(!is_redacted_url(url.expose()));

        let keyed = DatabaseUrl::new("host=db user=annals password=s3cr3t dbname=events");
        assert_eq!(
            keyed.to_string(),
            "host=db user=annals password=*** dbname=events"
        );
        assert!(is_redacted_url(&keyed.to_string()));

        let plain = DatabaseUrl::new("postgres://postgres@127.0.0.1:5432/test");
        assert_eq!(plain.to_string(), plain.expose());
    }
}
