//! [`Origin`]: where a value came from, which errors and `annals config` name. A leaf of its
//! own because both sides use it: a [`ConfigError`](crate::ConfigError) holds one, and
//! [`Flag::parse_set`](crate::Flag::parse_set) makes an error that names one.

use std::fmt;
use std::path::PathBuf;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The configuration file.
    File {
        /// Its path, as given.
        path: PathBuf,
        /// The line of the value (1-based), when known.
        line: Option<usize>,
    },
    /// An environment variable.
    Env {
        /// Its name (`ANNALS_SERVER_ADDR`).
        var: String,
    },
    /// A command-line flag.
    Flag {
        /// The flag as written (`--addr`, `--set`).
        name: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{}, line {line}", path.display()),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::Env { var } => write!(f, "environment variable {var}"),
            Origin::Flag { name } => write!(f, "flag {name}"),
        }
    }
}
