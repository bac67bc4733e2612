//! The sources a configuration is loaded from: [`Sources`], [`Flag`] and [`environment`].

use std::fmt;
use std::path::PathBuf;

use crate::error::{ConfigError, ErrorKind};
use crate::origin::Origin;

/// What [`Config::load`](crate::Config::load) reads, lowest precedence first after the
/// built-in defaults.
///
/// `Debug` shows the names of the variables and the keys of the flags, never their values:
/// the environment holds other programs' secrets too.
#[derive(Clone, Default)]
pub struct Sources {
    /// The TOML file (`--config PATH`); `None` reads no file.
    pub file: Option<PathBuf>,
    /// The process environment (pass [`environment()`] or `std::env::vars()`). Only
    /// variables named `ANNALS_{SECTION}_…` for a known section are read; any other is
    /// ignored, so test knobs such as `ANNALS_CRASH_CYCLES` can live beside them.
    pub env: Vec<(String, String)>,
    /// Command-line overrides, applied last, in order (a later flag for a key wins).
    pub flags: Vec<Flag>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("file", &self.file)
            .field(
                "env",
                &self.env.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .field("flags", &self.flags)
            .finish()
    }
}

/// The process's `ANNALS_*` variables, for [`Sources::env`].
///
/// Unlike `std::env::vars()`, this does not panic when some unrelated variable is not UTF-8;
/// an `ANNALS_*` variable that is not UTF-8 is converted lossily, so its value then fails
/// validation with a message instead of vanishing.
pub fn environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.to_string_lossy().into_owned();
            name.starts_with("ANNALS_")
                .then(|| (name, value.to_string_lossy().into_owned()))
        })
        .collect()
}

/// One command-line override of one key.
#[derive(Clone, PartialEq, Eq)]
pub struct Flag {
    /// The key, `section.key` (`"server.addr"`).
    pub key: String,
    /// The value as typed; lists (`auth.tokens`) are comma-separated.
    pub value: String,
    /// The flag as the user wrote it, for messages: `"--addr"`, or `"--set"` for the generic
    /// `--set section.key=value`.
    pub name: String,
}

impl Flag {
    /// A flag setting `key` to `value`, named `name` in messages.
    pub fn new(key: impl Into<String>, value: impl Into<String>, name: impl Into<String>) -> Flag {
        Flag {
            key: key.into(),
            value: value.into(),
            name: name.into(),
        }
    }

    /// Parses the argument of `--set`: `section.key=value` (the value may contain `=`). The
    /// key is checked later, by [`Config::load`](crate::Config::load).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidValue`] if there is no `=` or nothing before it.
    pub fn parse_set(argument: &str) -> Result<Flag, ConfigError> {
        match argument.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok(Flag::new(key.trim(), value, "--set"))
            }
            _ => Err(ConfigError::new(
                ErrorKind::InvalidValue,
                None,
                Some(Origin::Flag {
                    name: "--set".to_owned(),
                }),
                format!(
                    "flag --set takes section.key=value (such as --set server.workers=4), \
                     not {argument:?}"
                ),
            )),
        }
    }
}

impl fmt::Debug for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A flag may carry a token (`--set auth.tokens=…`) or a database password
        // (`--set store.postgres_url=…`).
        let url;
        let value: &dyn fmt::Debug = if self.key.starts_with("auth.") {
            &"<redacted>"
        } else if self.key == "store.postgres_url" {
            url = annals::store::postgres::redacted_url(&self.value);
            &url
        } else {
            &self.value
        };
        f.debug_struct("Flag")
            .field("key", &self.key)
            .field("value", value)
            .field("name", &self.name)
            .finish()
    }
}
