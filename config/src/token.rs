//! [`Token`]: a bearer token with the [`Scopes`] it grants, and how one is written in the
//! configuration.
//!
//! A token is written `TOKEN` or `TOKEN:SCOPE+SCOPE…`, in the file (`tokens = ["…"]`), in
//! `ANNALS_AUTH_TOKENS` and in `--set auth.tokens=…` alike (the last two separate tokens with
//! commas). The scopes are `read`, `commands` and `admin`; a token written without scopes has
//! all three, so plain tokens keep working. `:` and `+` after it cannot be confused with the
//! token: `:` is not a character a bearer token can carry.
//!
//! A token prints as `<redacted>` followed by its scopes (`<redacted>:read`), never itself.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::secret::{Secret, REDACTED};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `GET`/`HEAD` of aggregates, history, the global log, the live feed, projections, parked
    /// lists and views.
    Read,
    /// `POST` of commands (except the process-only ones, which need [`Scope::Admin`]).
    Commands,
    /// Projection rebuilds, parked-event retries, `/metrics`, and the commands only a process
    /// manager may send.
    Admin,
}

impl Scope {
    /// Every scope, in the order they are written.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Commands, Scope::Admin];

    /// The scope's name in the configuration and in messages (`read`).
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Commands => "commands",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Commands => 2,
            Scope::Admin => 4,
        }
    }

    /// The scope named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.name() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Scope`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope.
    pub const NONE: Scopes = Scopes(0);
    /// Every scope: what a token written without scopes has.
    pub const ALL: Scopes = Scopes(7);

    /// The set holding exactly `scopes`.
    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |bits, scope| bits | scope.bit()))
    }

    /// Whether the set holds `scope`.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The union of both sets.
    #[must_use]
    pub fn union(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    /// The scopes of the set, in [`Scope::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// `self` if `keep`, otherwise the empty set, without a branch on `keep` (for constant-time
    /// token matching).
    pub(crate) fn masked(self, keep: bool) -> Scopes {
        Scopes(self.0 & u8::from(keep).wrapping_neg())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Scope::name)).finish()
    }
}

impl fmt::Display for Scopes {
    /// `read+commands`; `none` for the empty set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Scope::name).collect();
        f.write_str(&names.join("+"))
    }
}

/// A bearer token and what it may do.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    secret: Secret,
    scopes: Scopes,
}

impl Token {
    /// A token with every scope (as a token written without scopes).
    pub fn new(secret: impl Into<String>) -> Token {
        Token::scoped(secret, Scopes::ALL)
    }

    /// A token with `scopes`.
    pub fn scoped(secret: impl Into<String>, scopes: Scopes) -> Token {
        Token {
            secret: Secret::new(secret),
            scopes,
        }
    }

    /// The secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// What the token may do.
    pub fn scopes(&self) -> Scopes {
        self.scopes
    }
}

impl From<Secret> for Token {
    fn from(secret: Secret) -> Token {
        Token {
            secret,
            scopes: Scopes::ALL,
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Token {
    /// `<redacted>`, or `<redacted>:read+commands` for a token with fewer than every scope.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)?;
        if self.scopes != Scopes::ALL {
            write!(f, ":{}", self.scopes)?;
        }
        Ok(())
    }
}

impl Serialize for Token {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Splits `TOKEN:SCOPES` into the token and its scopes (`None`: written without scopes).
/// Describes a mistake without echoing any of the text: it may be part of a secret.
pub(crate) fn split(written: &str) -> Result<(&str, Option<Scopes>), String> {
    let Some((token, scopes)) = written.split_once(':') else {
        return Ok((written, None));
    };
    let mut set = Scopes::NONE;
    for name in scopes.split('+') {
        let scope = Scope::parse(name.trim()).ok_or_else(|| {
            format!(
                "has a scope that is not one of {} (write TOKEN:SCOPE+SCOPE, such as \
                 TOKEN:read+commands)",
                Scope::ALL.map(Scope::name).join(", ")
            )
        })?;
        set = set.union(Scopes::of(&[scope]));
    }
    Ok((token, Some(set)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_written_and_read_back() {
        assert_eq!(split("abc"), Ok(("abc", None)));
        assert_eq!(
            split("abc:read+admin"),
            Ok(("abc", Some(Scopes::of(&[Scope::Read, Scope::Admin]))))
        );
        assert!(split("abc:").is_err());
        assert!(split("abc:read+writes").is_err());
        let error = split("abc:secret-looking").err().unwrap_or_default();
        assert!(!error.contains("secret-looking"), "{error}");
        assert_eq!(
            Scopes::of(&[Scope::Commands, Scope::Read]).to_string(),
            "read+commands"
        );
        assert_eq!(Scopes::ALL.iter().count(), 3);
    }

    #[test]
    fn a_token_prints_its_scopes_but_never_itself() {
        let token = Token::scoped("abcdefghijklmnop", Scopes::of(&[Scope::Read]));
        assert_eq!(token.to_string(), "<redacted>:read");
        assert_eq!(format!("{token:?}"), "<redacted>:read");
        assert_eq!(Token::new("abcdefghijklmnop").to_string(), "<redacted>");
    }

    #[test]
    fn masking_keeps_or_clears_the_whole_set() {
        let set = Scopes::of(&[Scope::Admin, Scope::Read]);
        assert_eq!(set.masked(true), set);
        assert_eq!(set.masked(false), Scopes::NONE);
    }
}
