//! [`ConfigError`]: what is wrong with the configuration, which key, and which source.
//!
//! Messages never contain a secret: a bad token is described (its length, the character class
//! it breaks), never echoed.

use std::path::Path;

use crate::origin::Origin;

/// A configuration that cannot be used. `Display` is one line naming the key, the source and
/// what is wrong, e.g. `store.durability: "fast" is not one of "durable", "relaxed" (from
/// environment variable ANNALS_STORE_DURABILITY)`; the accessors give the same facts typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    kind: ErrorKind,
    key: Option<String>,
    origin: Option<Origin>,
    message: String,
}

/// What kind of mistake a [`ConfigError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file does not exist.
    FileMissing,
    /// The file exists but cannot be read (permissions, not UTF-8, a directory).
    FileUnreadable,
    /// The file is not valid TOML.
    Syntax,
    /// The file has a section this configuration does not have.
    UnknownSection,
    /// A file key, an `ANNALS_{SECTION}_…` variable or a flag names no key.
    UnknownKey,
    /// A file value has the wrong TOML type (a string where an integer belongs).
    WrongType,
    /// A value that cannot be parsed or is not one of the allowed words.
    InvalidValue,
    /// A number outside its bounds.
    OutOfRange,
    /// Two values that contradict each other.
    Conflict,
    /// A value that another one needs is not set (`store.backend = "postgres"` without
    /// `store.postgres_url`).
    Missing,
}

impl ConfigError {
    /// The key (`section.key`) the error is about, as written by the user for an unknown key
    /// (the section alone for an unknown section); `None` for errors about the whole file.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The source of the offending value, when there is one.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// What kind of mistake this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub(crate) fn new(
        kind: ErrorKind,
        key: Option<String>,
        origin: Option<Origin>,
        message: String,
    ) -> ConfigError {
        ConfigError {
            kind,
            key,
            origin,
            message,
        }
    }

    /// A bad value of a known key.
    pub(crate) fn value(key: &str, origin: &Origin, problem: Problem) -> ConfigError {
        let Problem { kind, message } = problem;
        let message = format!("{key}: {message} (from {origin})");
        ConfigError::new(kind, Some(key.to_owned()), Some(origin.clone()), message)
    }

    /// A key that does not exist, with the one the user probably meant.
    pub(crate) fn unknown_key(
        written: &str,
        origin: Origin,
        suggestion: Option<String>,
    ) -> ConfigError {
        let message = format!(
            "unknown key {written} in {origin}{}",
            did_you_mean(suggestion)
        );
        ConfigError::new(
            ErrorKind::UnknownKey,
            Some(written.to_owned()),
            Some(origin),
            message,
        )
    }

    /// A file section that does not exist.
    pub(crate) fn unknown_section(
        section: &str,
        origin: Origin,
        suggestion: Option<String>,
    ) -> ConfigError {
        let message = format!(
            "unknown section [{section}] in {origin}{}",
            did_you_mean(suggestion.map(|s| format!("[{s}]")))
        );
        ConfigError::new(
            ErrorKind::UnknownSection,
            Some(section.to_owned()),
            Some(origin),
            message,
        )
    }

    /// The file cannot be read.
    pub(crate) fn unreadable(path: &Path, error: &std::io::Error) -> ConfigError {
        let origin = Origin::File {
            path: path.to_owned(),
            line: None,
        };
        if error.kind() == std::io::ErrorKind::NotFound {
            ConfigError::new(
                ErrorKind::FileMissing,
                None,
                Some(origin),
                format!("configuration file {} does not exist", path.display()),
            )
        } else {
            ConfigError::new(
                ErrorKind::FileUnreadable,
                None,
                Some(origin),
                format!("cannot read configuration file {}: {error}", path.display()),
            )
        }
    }

    /// The file is not TOML.
    pub(crate) fn syntax(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
        let place = error.span().map(|span| line_and_column(text, span.start));
        let origin = Origin::File {
            path: path.to_owned(),
            line: place.map(|(line, _)| line),
        };
        // toml's message may span lines ("invalid string\nexpected `\"`"): keep one line.
        let what = error
            .message()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let at = match place {
            Some((line, column)) => format!(", line {line}, column {column}"),
            None => String::new(),
        };
        ConfigError::new(
            ErrorKind::Syntax,
            None,
            Some(origin),
            format!(
                "cannot parse configuration file {}{at}: {what}",
                path.display()
            ),
        )
    }
}

/// What is wrong with one value, before the key and the source are known to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn wrong_type(message: String) -> Problem {
        Problem {
            kind: ErrorKind::WrongType,
            message,
        }
    }

    pub(crate) fn invalid(message: String) -> Problem {
        Problem {
            kind: ErrorKind::InvalidValue,
            message,
        }
    }

    pub(crate) fn out_of_range(message: String) -> Problem {
        Problem {
            kind: ErrorKind::OutOfRange,
            message,
        }
    }
}

fn did_you_mean(suggestion: Option<String>) -> String {
    suggestion
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
pub(crate) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_and_column(text, 9), (2, 3));
    }
}
