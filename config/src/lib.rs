//! Typed, validated configuration of the Annals service (package `annals-config`).
//!
//! Four layers, each overriding the one before:
//!
//! 1. the built-in defaults ([`Config::default`]; the runtime's come from
//!    [`annals::RuntimeOptions`], [`SledOptions`](annals::store::sled::SledOptions) and
//!    [`PgOptions`](annals::store::postgres::PgOptions), so they cannot drift from it);
//! 2. a TOML file (`--config PATH`); `config/annals.toml` documents every key with its default
//!    and unit, and a test checks that it loads to exactly the defaults;
//! 3. environment variables `ANNALS_{SECTION}_{KEY}`, e.g. `ANNALS_SERVER_ADDR`;
//! 4. command-line flags ([`Flag`]), in order.
//!
//! Loading is two-stage, after ripgrep: the layers are read into a raw configuration — every
//! setting with the [`Origin`] it came from — and then each setting is validated into a typed,
//! bounded value (`NonZeroUsize`, [`Duration`](std::time::Duration),
//! [`SocketAddr`](std::net::SocketAddr), enums). Every setting of every layer is validated,
//! even one that a later layer overrides: a wrong value is a mistake to fix wherever it is.
//! Any mistake is a [`ConfigError`] that names the key, the source and what is wrong, and
//! suggests the right key for a misspelt one:
//!
//! ```
//! use annals_config::{Config, Flag, Sources};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sources = Sources {
//!     env: vec![("ANNALS_SERVER_WORKERS".into(), "4".into())],
//!     flags: vec![Flag::new("server.addr", "127.0.0.1:9000", "--addr")],
//!     ..Sources::default()
//! };
//! let config = Config::load(&sources)?;
//! assert_eq!(config.server.workers.get(), 4);
//! assert!(config.render().contains("addr = \"127.0.0.1:9000\"  # from flag --addr"));
//!
//! let sources = Sources {
//!     env: vec![("ANNALS_STORE_DURABILITY".into(), "fast".into())],
//!     ..Sources::default()
//! };
//! let error = Config::load(&sources).expect_err("fast is no durability mode");
//! assert_eq!(
//!     error.to_string(),
//!     "store.durability: \"fast\" is not one of \"durable\", \"relaxed\" \
//!      (from environment variable ANNALS_STORE_DURABILITY)"
//! );
//! assert_eq!(error.key(), Some("store.durability"));
//! # Ok(())
//! # }
//! ```
//!
//! Why not serde's `deny_unknown_fields` on a raw struct: its error can name neither the source
//! (file, variable or flag) nor the key the user meant, and it stops at the file — the
//! environment and the flags are strings that need the same checks. So the file is read as a
//! TOML table and walked against the key table in `keys.rs`, which is also where each key's
//! bounds live.
//!
//! # Layout
//! Each module uses only modules of the layers above it; nothing uses this file but the
//! crate's users, so the modules form no circle:
//!
//! 1. `origin` ([`Origin`]: where a value came from) and `secret` ([`Secret`]: a string that
//!    never prints; [`DatabaseUrl`]: a URL that never prints its password) — leaves;
//! 2. `error` ([`ConfigError`], [`ErrorKind`]; uses `origin`) and `token` ([`Token`],
//!    [`Scope`], [`Scopes`]: bearer tokens and what each may do; uses `secret`);
//! 3. `source` ([`Sources`], [`Flag`], [`environment`]; uses `error`, `origin`) and `config`
//!    ([`Config`] and its sections, the defaults, [`Config::runtime_options`],
//!    [`Config::store_options`]; uses `origin`, `secret`, `token`),
//!    and `flags` ([`flags::set_flags`], [`flags::UsageError`]: what the binary's command lines
//!    share; uses `source`);
//! 4. `keys` (every key: its section, its name, the raw value it reads and how that is parsed
//!    and bounded, and the checks between keys; uses `config`, `error`, `origin`, `secret`,
//!    `token`);
//! 5. `raw` (the first stage: the file, the environment and the flags read into raw
//!    settings; uses `error`, `keys`, `origin`, `source`) and `render` ([`Config::render`]:
//!    the effective configuration as TOML; uses `config`, `keys`, `origin`);
//! 6. this file: the public face (every public item is re-exported here and has this one
//!    path) and [`Config::load`], the two stages joined (uses `raw`, `keys`, `render`).

mod config;
mod error;
pub mod flags;
mod keys;
mod origin;
mod raw;
mod render;
mod secret;
mod source;
mod token;

pub use annals::store::sled::IntegrityCheck;

pub use crate::config::{
    AuthConfig, Config, DomainConfig, DurabilityMode, LogConfig, LogFormat, RuntimeConfig,
    ServerConfig, StoreBackend, StoreConfig, ADDR_DEFAULT, DATA_DIR_DEFAULT, DEFAULT_FILE,
    DISK_FREE_BYTES_MIN_DEFAULT, RELAXED_FLUSH_INTERVAL_DEFAULT,
};
pub use crate::error::{ConfigError, ErrorKind};
pub use crate::origin::Origin;
pub use crate::secret::{DatabaseUrl, Secret};
pub use crate::source::{environment, Flag, Sources};
pub use crate::token::{Scope, Scopes, Token};

/// The two stages joined: the only place that knows both the raw settings and the typed
/// configuration, so that neither module needs the other.
impl Config {
    /// Loads the configuration: built-in defaults < `sources.file` < `sources.env` <
    /// `sources.flags`, every value validated.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key, the source and what is wrong: a missing or unreadable
    /// file, a TOML syntax error (with its line), an unknown section or key (with a suggestion),
    /// a value of the wrong type, out of its bounds or not one of the allowed words, or two
    /// values that contradict each other (`server.page_size_max` below
    /// `server.page_size_default`).
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let raw = raw::RawConfig::read(sources)?;
        Config::validate(raw)
    }

    /// Validates the raw settings, in layer order, onto the defaults.
    fn validate(raw: raw::RawConfig) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for setting in raw.settings {
            (setting.key.apply)(&mut config, &setting.value).map_err(|problem| {
                ConfigError::value(setting.key.full, &setting.origin, problem)
            })?;
            config.set_origin(setting.key.full, setting.origin);
        }
        keys::check_relations(&config)?;
        Ok(config)
    }

    /// The effective configuration as TOML, secrets redacted, with a comment on each value
    /// that a file, a variable or a flag set. Loading it again gives the same configuration,
    /// except that redacted tokens must be put back.
    pub fn render(&self) -> String {
        render::render(self)
    }
}
