//! Every configuration key: its section, its name, and how a raw value becomes a typed,
//! bounded one. The bounds live here, next to the parser that enforces them, and every error
//! states the bound it enforces.
//!
//! The bounds are generous — they catch unit mistakes (seconds typed as milliseconds, a
//! missing `_000`) and values that would exhaust memory or threads, not tuning choices.

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use annals::store::sled::IntegrityCheck;

use crate::config::{
    arbiters_default, workers_default, Config, DurabilityMode, LogFormat, StoreBackend,
};
use crate::error::{ConfigError, ErrorKind, Problem};
use crate::origin::Origin;
use crate::secret::{is_redacted_url, DatabaseUrl, REDACTED};
use crate::token::{self, Token};

/// The sections, in the order the file and [`Config::render`] list them.
pub(crate) const SECTIONS: &[&str] = &["server", "store", "runtime", "domain", "auth", "log"];

/// A value as read (by `raw.rs`), before validation: what [`Key::apply`] parses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    /// From the file, typed by TOML.
    Toml(toml::Value),
    /// From an environment variable or a flag: a string parsed according to the key.
    Text(String),
}

/// One key of the configuration.
#[derive(Debug)]
pub(crate) struct Key {
    /// Its section (`server`).
    pub(crate) section: &'static str,
    /// Its name within the section (`addr`).
    pub(crate) name: &'static str,
    /// `section.name`.
    pub(crate) full: &'static str,
    /// Validates a raw value and stores it in the configuration.
    pub(crate) apply: fn(&mut Config, &Raw) -> Result<(), Problem>,
}

impl Key {
    /// The environment variable that sets this key: `ANNALS_SERVER_ADDR`.
    pub(crate) fn env_var(&self) -> String {
        format!(
            "ANNALS_{}_{}",
            self.section.to_ascii_uppercase(),
            self.name.to_ascii_uppercase()
        )
    }
}

/// A [`Key`] whose `apply` stores `parse(raw, args…)` in a field of the configuration:
/// `key!(server.addr => server.addr = socket_addr())`.
macro_rules! key {
    ($section:ident . $name:ident => $($field:ident).+ = $parse:ident($($arg:expr),*)) => {
        Key {
            section: stringify!($section),
            name: stringify!($name),
            full: concat!(stringify!($section), ".", stringify!($name)),
            apply: |config, raw| {
                config.$($field).+ = $parse(raw $(, $arg)*)?;
                Ok(())
            },
        }
    };
}

/// Threads: more than this is a typo, not a machine.
const THREADS_MAX: u64 = 1024;
/// Bytes of one request body, event or command: 256 MiB, far beyond any sane message, still
/// within what one buffer may hold.
const MESSAGE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Entries of one page.
const PAGE_SIZE_MAX: u64 = 100_000;
/// Open connections (each costs a file descriptor and buffers).
const CONNECTIONS_MAX: u64 = 1_000_000;
/// One hour, the longest timeout or pause that is not a unit mistake.
const HOUR_MS: u64 = 60 * 60 * 1000;
/// Thirty days: the longest an order may wait for a decision.
const MONTH_MS: u64 = 30 * 24 * HOUR_MS;
const MIB: u64 = 1024 * 1024;
/// Most tokens, and the length bounds of one (RFC 6750 sets no maximum; 4 KiB is about what
/// servers accept in one header).
const TOKENS_MAX: usize = 1024;
pub(crate) const TOKEN_CHARS_MIN: usize = 16;
const TOKEN_CHARS_MAX: usize = 4096;
const LOG_LEVEL_CHARS_MAX: usize = 4096;
/// Longest PostgreSQL URL: far beyond any real one, short enough to stay one line of a log.
const POSTGRES_URL_CHARS_MAX: usize = 4096;
/// Most PostgreSQL connections of one node: a server's default `max_connections` is 100, so
/// more than this is a typo, not a pool.
const POSTGRES_POOL_SIZE_MAX: u64 = 1000;
/// PostgreSQL's identifier limit (`NAMEDATALEN - 1`), in bytes.
const POSTGRES_SCHEMA_BYTES_MAX: usize = 63;

/// Every key, in the order the file and [`Config::render`] list them.
#[rustfmt::skip]
pub(crate) static KEYS: &[Key] = &[
    key!(server.addr => server.addr = socket_addr()),
    key!(server.workers => server.workers = threads("0: one per core less one", workers_default)),
    key!(server.body_bytes_max => server.body_bytes_max = count(MESSAGE_BYTES_MAX, "bytes")),
    key!(server.page_size_default => server.page_size_default = count(PAGE_SIZE_MAX, "entries")),
    key!(server.page_size_max => server.page_size_max = count(PAGE_SIZE_MAX, "entries")),
    key!(server.wait_max_ms => server.wait_max = millis(0, 5 * 60 * 1000)),
    key!(server.shutdown_timeout_ms => server.shutdown_timeout = millis(0, HOUR_MS)),
    key!(server.sse_connections_max =>
        server.sse_connections_max = count(CONNECTIONS_MAX, "connections")),
    key!(server.sse_keepalive_ms => server.sse_keepalive = millis(100, HOUR_MS)),
    key!(server.connections_max => server.connections_max = count(CONNECTIONS_MAX, "connections")),
    key!(server.request_timeout_ms => server.request_timeout = millis(1, HOUR_MS)),
    key!(server.in_flight_max => server.in_flight_max = count(10_000_000, "commands")),
    key!(server.body_read_timeout_ms => server.body_read_timeout = millis(1, HOUR_MS)),
    key!(server.request_deadline_ms => server.request_deadline = millis(1, HOUR_MS)),
    key!(server.sse_connections_per_client_max =>
        server.sse_connections_per_client_max = count(CONNECTIONS_MAX, "connections")),
    key!(server.rebuilds_max => server.rebuilds_max = count(1024, "rebuilds")),
    key!(server.reads_in_flight_max => server.reads_in_flight_max = count(100_000, "reads")),

    key!(store.backend => store.backend = choice(&[
        ("sled", StoreBackend::Sled),
        ("postgres", StoreBackend::Postgres),
    ])),
    key!(store.data_dir => store.data_dir = data_dir()),
    key!(store.durability => store.durability = choice(&[
        ("durable", DurabilityMode::Durable),
        ("relaxed", DurabilityMode::Relaxed),
    ])),
    key!(store.relaxed_flush_interval_ms => store.relaxed_flush_interval = millis(1, 60_000)),
    key!(store.integrity_check => store.integrity_check = choice(&[
        ("structure", IntegrityCheck::Structure),
        ("full", IntegrityCheck::Full),
        ("tail", IntegrityCheck::Tail),
    ])),
    key!(store.batch_appends_max => store.batch_appends_max = count(1_000_000, "appends")),
    key!(store.queue_capacity => store.queue_capacity = count(10_000_000, "appends")),
    key!(store.cache_capacity_bytes =>
        store.cache_capacity_bytes = bounded(MIB, 1024 * 1024 * MIB, "bytes")),
    key!(store.disk_free_bytes_min =>
        store.disk_free_bytes_min = bounded(0, 1024 * 1024 * 1024 * MIB, "bytes")),
    key!(store.postgres_url => store.postgres_url = postgres_url()),
    key!(store.postgres_schema => store.postgres_schema = postgres_schema()),
    key!(store.postgres_pool_size =>
        store.postgres_pool_size = count(POSTGRES_POOL_SIZE_MAX, "connections")),
    key!(store.postgres_node_id => store.postgres_node_id = node_id()),
    key!(store.postgres_lease_timeout_ms =>
        store.postgres_lease_timeout = millis(1000, HOUR_MS)),

    key!(runtime.arbiters =>
        runtime.arbiters = threads("0: one per two cores", arbiters_default)),
    key!(runtime.live_actors_max => runtime.live_actors_max = count(100_000_000, "actors")),
    key!(runtime.mailbox_capacity => runtime.mailbox_capacity = count(1_000_000, "commands")),
    key!(runtime.rehydrations_max =>
        runtime.rehydrations_max = count(100_000, "rehydrations")),
    key!(runtime.events_per_command_max =>
        runtime.events_per_command_max = count(1_000_000, "events")),
    key!(runtime.event_bytes_max => runtime.event_bytes_max = count(MESSAGE_BYTES_MAX, "bytes")),
    key!(runtime.command_bytes_max =>
        runtime.command_bytes_max = count(MESSAGE_BYTES_MAX, "bytes")),
    key!(runtime.retry_after_ms => runtime.retry_after = millis(1, HOUR_MS)),
    key!(runtime.queue_time_max_ms => runtime.queue_time_max = millis(1, HOUR_MS)),
    key!(runtime.drain_timeout_ms => runtime.drain_timeout = millis(0, HOUR_MS)),

    key!(domain.decision_timeout_ms => domain.decision_timeout = millis(1, MONTH_MS)),

    key!(auth.tokens => auth.tokens = tokens()),

    key!(log.format => log.format = choice(&[
        ("text", LogFormat::Text),
        ("json", LogFormat::Json),
    ])),
    key!(log.level => log.level = log_level()),
];

/// The key `section.name`, if there is one.
pub(crate) fn find(section: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter()
        .find(|key| key.section == section && key.name == name)
}

/// The key the user probably meant by `name` in `section` (`None`: a top-level key): the same
/// name in another section, else the most similar name in the same section, or for a
/// misspelt section the most similar `section.name`.
pub(crate) fn suggest_key(section: Option<&str>, name: &str) -> Option<&'static Key> {
    if let Some(key) = KEYS
        .iter()
        .find(|key| key.name == name && Some(key.section) != section)
    {
        return Some(key);
    }
    match section {
        Some(section) if SECTIONS.contains(&section) => closest(
            KEYS.iter().filter(|key| key.section == section),
            name,
            |key| key.name,
        ),
        Some(section) => closest(KEYS.iter(), &format!("{section}.{name}"), |key| key.full),
        None => closest(KEYS.iter(), name, |key| key.name),
    }
}

/// The section the user probably meant.
pub(crate) fn suggest_section(section: &str) -> Option<&'static str> {
    closest(SECTIONS.iter().copied(), section, |s| s)
}

/// The candidate most similar to `written`, if any is similar enough to be worth suggesting.
fn closest<T>(
    candidates: impl Iterator<Item = T>,
    written: &str,
    name: impl Fn(&T) -> &str,
) -> Option<T> {
    // Jaro-Winkler favours a shared start ("adress" → "addr" scores 0.8); 0.7 is clap's
    // threshold for its own "did you mean".
    const SIMILAR_ENOUGH: f64 = 0.7;
    candidates
        .map(|candidate| {
            let score = strsim::jaro_winkler(written, name(&candidate));
            (score, candidate)
        })
        .filter(|(score, _)| *score > SIMILAR_ENOUGH)
        .max_by(|(a, _), (b, _)| a.total_cmp(b))
        .map(|(_, candidate)| candidate)
}

/// Checks the values that bound each other.
pub(crate) fn check_relations(config: &Config) -> Result<(), ConfigError> {
    let server = &config.server;
    if server.page_size_max < server.page_size_default {
        return Err(conflict(
            config,
            ("server.page_size_max", server.page_size_max.get()),
            "is less than",
            ("server.page_size_default", server.page_size_default.get()),
        ));
    }
    if server.sse_connections_max > server.connections_max {
        return Err(conflict(
            config,
            (
                "server.sse_connections_max",
                server.sse_connections_max.get(),
            ),
            "is more than",
            ("server.connections_max", server.connections_max.get()),
        ));
    }
    // A read-your-writes wait longer than the request deadline would always be cut short.
    if server.wait_max >= server.request_deadline {
        return Err(conflict(
            config,
            ("server.wait_max_ms", millis_of(server.wait_max)),
            "is not less than",
            (
                "server.request_deadline_ms",
                millis_of(server.request_deadline),
            ),
        ));
    }
    // The sled-only keys are ignored with PostgreSQL, and the postgres_* keys with sled: a
    // configuration can name both stores and switch with `backend` alone.
    let store = &config.store;
    if store.backend == StoreBackend::Postgres && store.postgres_url.is_none() {
        let origin = config.origin("store.backend");
        return Err(ConfigError::new(
            ErrorKind::Missing,
            Some("store.backend".to_owned()),
            Some(origin.clone()),
            format!(
                "store.backend = \"postgres\" (from {origin}) needs store.postgres_url, which is \
                 not set: give the database's URL, such as \
                 postgres://USER:PASSWORD@HOST:5432/DATABASE (in the file, \
                 ANNALS_STORE_POSTGRES_URL or --set store.postgres_url=…)"
            ),
        ));
    }
    Ok(())
}

/// A duration in whole milliseconds, saturated, for messages.
fn millis_of(duration: Duration) -> usize {
    usize::try_from(duration.as_millis()).unwrap_or(usize::MAX)
}

/// Two values that contradict each other. The error's key is the first one, unless only the
/// other was set by a source: the user's value is the one to reconsider.
fn conflict(
    config: &Config,
    (key, value): (&str, usize),
    relation: &str,
    (other, other_value): (&str, usize),
) -> ConfigError {
    let (origin, other_origin) = (config.origin(key), config.origin(other));
    let message = format!(
        "{key} = {value} (from {origin}) {relation} {other} = {other_value} (from {other_origin})"
    );
    let (blamed, blamed_origin) = if *origin == Origin::Default && *other_origin != Origin::Default
    {
        (other, other_origin)
    } else {
        (key, origin)
    };
    ConfigError::new(
        ErrorKind::Conflict,
        Some(blamed.to_owned()),
        Some(blamed_origin.clone()),
        message,
    )
}

/// The TOML name of a value's type, for "expected …, found …".
pub(crate) fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn integer(raw: &Raw) -> Result<i64, Problem> {
    match raw {
        Raw::Toml(toml::Value::Integer(n)) => Ok(*n),
        Raw::Toml(other) => Err(Problem::wrong_type(format!(
            "expected an integer, found {}",
            type_name(other)
        ))),
        Raw::Text(text) => text
            .trim()
            .parse()
            .map_err(|_| Problem::invalid(format!("{text:?} is not an integer"))),
    }
}

/// An integer from `min` to `max`.
fn bounded(raw: &Raw, min: u64, max: u64, unit: &str) -> Result<u64, Problem> {
    let n = integer(raw)?;
    match u64::try_from(n) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(Problem::out_of_range(format!(
            "{n} is out of range: must be from {min} to {max} {unit}"
        ))),
    }
}

/// A count from 1 to `max`.
fn count(raw: &Raw, max: u64, unit: &str) -> Result<NonZeroUsize, Problem> {
    let n = bounded(raw, 1, max, unit)?;
    usize::try_from(n)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| Problem::out_of_range(format!("{n} {unit} do not fit this machine")))
}

/// A thread count, 0 standing for `default()` (which `zero` describes).
fn threads(raw: &Raw, zero: &str, default: fn() -> NonZeroUsize) -> Result<NonZeroUsize, Problem> {
    let n = bounded(raw, 0, THREADS_MAX, &format!("threads ({zero})"))?;
    Ok(usize::try_from(n)
        .ok()
        .and_then(NonZeroUsize::new)
        .unwrap_or_else(default))
}

/// A duration in whole milliseconds from `min` to `max`.
fn millis(raw: &Raw, min: u64, max: u64) -> Result<Duration, Problem> {
    bounded(raw, min, max, "milliseconds").map(Duration::from_millis)
}

fn text(raw: &Raw) -> Result<&str, Problem> {
    match raw {
        Raw::Toml(toml::Value::String(text)) | Raw::Text(text) => Ok(text),
        Raw::Toml(other) => Err(Problem::wrong_type(format!(
            "expected a string, found {}",
            type_name(other)
        ))),
    }
}

/// One of a few words.
fn choice<T: Copy>(raw: &Raw, options: &[(&str, T)]) -> Result<T, Problem> {
    let word = text(raw)?;
    options
        .iter()
        .find(|(name, _)| *name == word)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<String> = options
                .iter()
                .map(|(name, _)| format!("{name:?}"))
                .collect();
            Problem::invalid(format!("{word:?} is not one of {}", names.join(", ")))
        })
}

/// A list: a TOML array of strings, or a comma-separated string (environment, flags).
fn strings(raw: &Raw) -> Result<Vec<String>, Problem> {
    match raw {
        Raw::Toml(toml::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(item) => Ok(item.clone()),
                other => Err(Problem::wrong_type(format!(
                    "expected an array of strings, found an array holding {}",
                    type_name(other)
                ))),
            })
            .collect(),
        Raw::Toml(other) => Err(Problem::wrong_type(format!(
            "expected an array of strings, found {}",
            type_name(other)
        ))),
        Raw::Text(text) => Ok(text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()),
    }
}

/// `HOST:PORT`, a host name resolved now (the first address it resolves to).
fn socket_addr(raw: &Raw) -> Result<SocketAddr, Problem> {
    let text = text(raw)?.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| Problem::invalid(format!("{text:?} resolves to no address"))),
        Err(error) => Err(Problem::invalid(format!(
            "{text:?} is not an address of the form HOST:PORT ({error})"
        ))),
    }
}

fn data_dir(raw: &Raw) -> Result<PathBuf, Problem> {
    let path = text(raw)?;
    if path.trim().is_empty() {
        return Err(Problem::invalid(
            "must name a directory, not be empty".to_owned(),
        ));
    }
    Ok(PathBuf::from(path))
}

/// A PostgreSQL URL, or none for the empty string. Never echoed (it may hold a password):
/// an error says what is wrong with it.
fn postgres_url(raw: &Raw) -> Result<Option<DatabaseUrl>, Problem> {
    let url = text(raw)?.trim();
    if url.is_empty() {
        return Ok(None);
    }
    if is_redacted_url(url) {
        return Err(Problem::invalid(
            "holds the password placeholder *** that `annals config` prints; put the real \
             password here"
                .to_owned(),
        ));
    }
    let chars = url.chars().count();
    if chars > POSTGRES_URL_CHARS_MAX {
        return Err(Problem::out_of_range(format!(
            "is {chars} characters long: must be at most {POSTGRES_URL_CHARS_MAX} characters"
        )));
    }
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    // The other form libpq takes: `host=… user=… dbname=…`.
    let is_key_value = !url.contains("://") && url.contains('=');
    if !(is_url || is_key_value) {
        return Err(Problem::invalid(
            "is not a PostgreSQL connection URL: write postgres://USER[:PASSWORD]@HOST[:PORT]/\
             DATABASE, or key=value pairs such as \"host=HOST user=USER dbname=DATABASE\""
                .to_owned(),
        ));
    }
    Ok(Some(DatabaseUrl::new(url)))
}

/// A PostgreSQL schema name the store can use unquoted: the same rule the store applies when
/// it connects, checked here so that a mistake stops the start, not the first connection.
/// This node's name among nodes sharing a database: empty (the host name and process id), or
/// up to 64 bytes of visible ASCII without spaces or quotes.
fn node_id(raw: &Raw) -> Result<String, Problem> {
    let id = text(raw)?;
    let plain = id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '\'' && c != '"' && c != '\\');
    if !plain {
        let shown: String = id.chars().take(65).collect();
        return Err(Problem::invalid(format!(
            "{shown:?} is not a usable node id: use up to 64 visible ASCII characters without \
             spaces or quotes (empty: the host name and the process id)"
        )));
    }
    Ok(id.to_owned())
}

fn postgres_schema(raw: &Raw) -> Result<String, Problem> {
    let schema = text(raw)?;
    let plain = !schema.is_empty()
        && schema.len() <= POSTGRES_SCHEMA_BYTES_MAX
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        let shown: String = schema.chars().take(POSTGRES_SCHEMA_BYTES_MAX + 1).collect();
        return Err(Problem::invalid(format!(
            "{shown:?} is not a usable schema name: use 1 to {POSTGRES_SCHEMA_BYTES_MAX} \
             lower-case letters, digits and '_', not starting with a digit"
        )));
    }
    if schema.starts_with("pg_") {
        return Err(Problem::invalid(format!(
            "{schema:?} is not a usable schema name: names starting with pg_ are reserved by \
             PostgreSQL"
        )));
    }
    Ok(schema.to_owned())
}

/// Bearer tokens, each `TOKEN` or `TOKEN:SCOPE+SCOPE` (see `token.rs`). Never echoes one: an
/// error says which token (by number) and what is wrong.
fn tokens(raw: &Raw) -> Result<Vec<Token>, Problem> {
    let tokens = strings(raw)?;
    if tokens.len() > TOKENS_MAX {
        return Err(Problem::out_of_range(format!(
            "{} tokens is out of range: must be from 0 to {TOKENS_MAX} tokens",
            tokens.len()
        )));
    }
    let total = tokens.len();
    let numbered = |i: usize, mut problem: Problem| {
        problem.message = format!("token {} of {total} {}", i + 1, problem.message);
        problem
    };
    tokens
        .iter()
        .enumerate()
        .map(|(i, written)| {
            let (secret, scopes) =
                token::split(written).map_err(|message| numbered(i, Problem::invalid(message)))?;
            check_token(secret).map_err(|problem| numbered(i, problem))?;
            Ok(match scopes {
                Some(scopes) => Token::scoped(secret, scopes),
                None => Token::new(secret),
            })
        })
        .collect()
}

/// What is wrong with a token, said after "token N of M".
fn check_token(token: &str) -> Result<(), Problem> {
    if token == REDACTED {
        return Err(Problem::invalid(format!(
            "is the placeholder {REDACTED} that `annals config` prints; put the real token here"
        )));
    }
    let chars = token.chars().count();
    if !(TOKEN_CHARS_MIN..=TOKEN_CHARS_MAX).contains(&chars) {
        return Err(Problem::out_of_range(format!(
            "is {chars} characters long: must be from {TOKEN_CHARS_MIN} to {TOKEN_CHARS_MAX} \
             characters"
        )));
    }
    // RFC 6750 `b64token`: what an `Authorization: Bearer` header can carry.
    let body = token.trim_end_matches('=');
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
    if body.is_empty() || !body.chars().all(is_token_char) {
        return Err(Problem::invalid(
            "has a character a bearer token cannot carry: use A-Z a-z 0-9 - . _ ~ + / \
             (and = only at the end)"
                .to_owned(),
        ));
    }
    Ok(())
}

/// An `EnvFilter` directive, checked for the characters directives use.
fn log_level(raw: &Raw) -> Result<String, Problem> {
    let level = text(raw)?;
    if level.is_empty() {
        return Err(Problem::invalid(
            "must not be empty (a directive such as \"info\" or \"info,annals=debug\")".to_owned(),
        ));
    }
    let chars = level.chars().count();
    if chars > LOG_LEVEL_CHARS_MAX {
        return Err(Problem::out_of_range(format!(
            "is {chars} characters long: must be at most {LOG_LEVEL_CHARS_MAX} characters"
        )));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_=,:.-".contains(c);
    if let Some(bad) = level.chars().find(|c| !allowed(*c)) {
        return Err(Problem::invalid(format!(
            "{level:?} contains {bad:?}: a directive uses only A-Z a-z 0-9 _ = , : . -"
        )));
    }
    Ok(level.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_in_known_sections() {
        let mut seen = std::collections::BTreeSet::new();
        for key in KEYS {
            assert!(
                SECTIONS.contains(&key.section),
                "{} has no section",
                key.full
            );
            assert_eq!(key.full, format!("{}.{}", key.section, key.name));
            assert!(seen.insert(key.full), "{} listed twice", key.full);
        }
    }

    #[test]
    fn keys_are_grouped_by_section_in_section_order() {
        let order: Vec<usize> = KEYS
            .iter()
            .map(|key| {
                SECTIONS
                    .iter()
                    .position(|s| *s == key.section)
                    .unwrap_or(99)
            })
            .collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
    }

    #[test]
    fn suggestions() {
        let full = |key: Option<&Key>| key.map(|key| key.full);
        assert_eq!(
            full(suggest_key(Some("server"), "adress")),
            Some("server.addr")
        );
        assert_eq!(
            full(suggest_key(Some("server"), "address")),
            Some("server.addr")
        );
        assert_eq!(
            full(suggest_key(Some("server"), "data_dir")),
            Some("store.data_dir")
        );
        assert_eq!(full(suggest_key(None, "addr")), Some("server.addr"));
        assert_eq!(
            full(suggest_key(Some("store"), "cache_bytes")),
            Some("store.cache_capacity_bytes")
        );
        assert_eq!(full(suggest_key(Some("server"), "zzzzzz")), None);
        assert_eq!(suggest_section("sever"), Some("server"));
        assert_eq!(suggest_section("runtim"), Some("runtime"));
        assert_eq!(suggest_section("qqq"), None);
    }

    #[test]
    fn tokens_are_checked_without_being_echoed() {
        let raw = Raw::Text("short,good-token-0123456789,bad token with spaces".to_owned());
        let problem = tokens(&raw).expect_err("the first token is too short");
        assert_eq!(
            problem.message,
            "token 1 of 3 is 5 characters long: must be from 16 to 4096 characters"
        );
        let raw = Raw::Text("good-token-0123456789,bad token with spaces".to_owned());
        let problem = tokens(&raw).expect_err("the second token has spaces");
        assert!(
            problem.message.starts_with("token 2 of 2 has a character"),
            "{problem:?}"
        );
        assert!(!problem.message.contains("bad token"));

        let ok = tokens(&Raw::Text(
            " abcdefghijklmnop== , QRSTUVWXYZ012345~+/ ,".to_owned(),
        ))
        .expect("two good tokens");
        let exposed: Vec<&str> = ok.iter().map(|t| t.secret().expose()).collect();
        assert_eq!(exposed, ["abcdefghijklmnop==", "QRSTUVWXYZ012345~+/"]);
        assert!(tokens(&Raw::Text("================".to_owned())).is_err());
    }
}
