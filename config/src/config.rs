//! [`Config`] and its sections: the typed, bounded values of the second stage, their
//! built-in defaults (taken from the runtime's options, so they cannot drift from it), how they
//! serialize for [`Config::render`], and how they map onto the runtime's options.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use annals::store::postgres::PgOptions;
use annals::store::sled::{Durability, IntegrityCheck, SledOptions};
use annals::store::StoreOptions;
use annals::{Placement, RuntimeOptions};
use serde::{Serialize, Serializer};

use crate::origin::Origin;
use crate::secret::DatabaseUrl;
use crate::token::{Scopes, Token};

/// The documented default file, `config/annals.toml`: every key with its default, its unit and
/// what it does. It loads to exactly [`Config::default()`] (tested).
pub const DEFAULT_FILE: &str = include_str!("../annals.toml");

/// The default address: loopback only, so a fresh install is not reachable from the network.
pub const ADDR_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// The default data directory, relative to the working directory.
pub const DATA_DIR_DEFAULT: &str = "./data";
/// The default fsync interval in relaxed durability: the most acknowledged writes a crash can
/// lose, in time.
pub const RELAXED_FLUSH_INTERVAL_DEFAULT: Duration = Duration::from_millis(10);
/// The default free-space floor: below 100 MiB the service reports itself unready rather than
/// fail writes with a full disk.
pub const DISK_FREE_BYTES_MIN_DEFAULT: u64 = 100 * 1024 * 1024;

/// The effective configuration: every value typed and within its bounds.
///
/// `Debug`, [`render`](Config::render) and `Serialize` all redact secrets. Equality compares
/// the values only, not where they came from. A configuration built in code (tests start from
/// `Config::default()` and set fields) is not validated: the bounds apply to what is loaded.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Config {
    /// The HTTP server.
    pub server: ServerConfig,
    /// The event store.
    pub store: StoreConfig,
    /// The aggregate runtime.
    pub runtime: RuntimeConfig,
    /// The reference domain.
    pub domain: DomainConfig,
    /// Authentication of API requests.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
    /// Where each value that is not a built-in default came from (for [`render`](Config::render)).
    #[serde(skip)]
    origins: Origins,
}

impl Config {
    /// Where the value of `key` (`"server.addr"`) came from: [`Origin::Default`] for a key no
    /// source set (or one this configuration does not have).
    pub fn origin(&self, key: &str) -> &Origin {
        self.origins.0.get(key).unwrap_or(&Origin::Default)
    }

    /// Records that the value of `key` came from `origin` (the last call for a key wins).
    pub(crate) fn set_origin(&mut self, key: &'static str, origin: Origin) {
        self.origins.0.insert(key, origin);
    }

    /// The runtime options: the `[store]` and `[runtime]` sections mapped onto
    /// [`RuntimeOptions`] and the backend's options ([`Config::store_options`]). Options this
    /// configuration does not expose keep the runtime's defaults.
    pub fn runtime_options(&self) -> RuntimeOptions {
        let runtime = &self.runtime;
        let mut options = RuntimeOptions::with_store(self.store_options());
        options.arbiters = runtime.arbiters;
        options.live_actors_max = runtime.live_actors_max;
        options.mailbox_capacity = runtime.mailbox_capacity;
        options.rehydrations_max = runtime.rehydrations_max;
        options.events_per_command_max = runtime.events_per_command_max;
        options.event_bytes_max = runtime.event_bytes_max;
        options.command_bytes_max = runtime.command_bytes_max;
        options.retry_after = runtime.retry_after;
        options.queue_time_max = runtime.queue_time_max;
        options.drain_timeout = runtime.drain_timeout;
        // The sled store's reads are local, so an actor may run on the HTTP worker that
        // activated it; PostgreSQL's are network round trips, which would hold up a worker.
        options.placement = match self.store.backend {
            StoreBackend::Sled => Placement::Caller,
            StoreBackend::Postgres => Placement::Arbiters,
        };
        options
    }

    /// The store the `[store]` section describes: [`SledOptions`] for `backend = "sled"`,
    /// [`PgOptions`] for `backend = "postgres"`. The keys of the other backend are ignored;
    /// `queue_capacity` and `batch_appends_max` apply to both.
    pub fn store_options(&self) -> StoreOptions {
        match self.store.backend {
            StoreBackend::Sled => StoreOptions::from(self.store.sled_options()),
            StoreBackend::Postgres => StoreOptions::from(self.store.pg_options()),
        }
    }
}

/// Where each value came from, by key. Not part of a configuration's identity: two
/// configurations with the same values are equal however they were set.
#[derive(Clone, Default)]
struct Origins(BTreeMap<&'static str, Origin>);

impl PartialEq for Origins {
    fn eq(&self, _: &Origins) -> bool {
        true
    }
}

impl fmt::Debug for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(key, origin)| (key, origin.to_string())))
            .finish()
    }
}

/// `[server]`: the HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerConfig {
    /// The address to listen on (`addr`; a host name is resolved once, at load).
    pub addr: SocketAddr,
    /// HTTP worker threads (`workers`; 0 in a file means one per core less one, at least one,
    /// resolved here: the journal's threads take about a core at full load).
    pub workers: NonZeroUsize,
    /// Most bytes of one request body (`body_bytes_max`); beyond it, 413.
    pub body_bytes_max: NonZeroUsize,
    /// Entries in a page when the request names no `limit` (`page_size_default`).
    pub page_size_default: NonZeroUsize,
    /// Most entries in one page (`page_size_max`); a larger `limit` is clamped or refused.
    pub page_size_max: NonZeroUsize,
    /// Longest read-your-writes wait for `min_position` (`wait_max_ms`).
    #[serde(rename = "wait_max_ms", serialize_with = "millis")]
    pub wait_max: Duration,
    /// How long a graceful shutdown waits for requests in flight (`shutdown_timeout_ms`).
    #[serde(rename = "shutdown_timeout_ms", serialize_with = "millis")]
    pub shutdown_timeout: Duration,
    /// Most live-feed (SSE) connections at once (`sse_connections_max`); beyond it, 503.
    pub sse_connections_max: NonZeroUsize,
    /// Interval of keep-alive comments on an idle live feed (`sse_keepalive_ms`).
    #[serde(rename = "sse_keepalive_ms", serialize_with = "millis")]
    pub sse_keepalive: Duration,
    /// Most open connections (`connections_max`); further ones wait in the accept queue.
    pub connections_max: NonZeroUsize,
    /// Longest time to receive a request (`request_timeout_ms`).
    #[serde(rename = "request_timeout_ms", serialize_with = "millis")]
    pub request_timeout: Duration,
    /// Most HTTP commands in flight at once (`in_flight_max`); beyond it, 503.
    pub in_flight_max: NonZeroUsize,
    /// Longest time to receive a command's body once its head is in
    /// (`body_read_timeout_ms`); beyond it, 408 and the connection is closed.
    #[serde(rename = "body_read_timeout_ms", serialize_with = "millis")]
    pub body_read_timeout: Duration,
    /// Longest time to handle a request once it is received (`request_deadline_ms`); beyond
    /// it, 503 with `Retry-After` (for a command: its outcome is unknown).
    #[serde(rename = "request_deadline_ms", serialize_with = "millis")]
    pub request_deadline: Duration,
    /// Most live feeds of one client address at once (`sse_connections_per_client_max`);
    /// beyond it, 429.
    pub sse_connections_per_client_max: NonZeroUsize,
    /// Most projection rebuilds running at once (`rebuilds_max`), including those a parked
    /// retry starts; beyond it, 503.
    pub rebuilds_max: NonZeroUsize,
    /// Most store reads running at once on the blocking pool (`reads_in_flight_max`); beyond
    /// it, 503.
    pub reads_in_flight_max: NonZeroUsize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            addr: ADDR_DEFAULT,
            workers: workers_default(),
            body_bytes_max: nonzero(64 * 1024),
            page_size_default: nonzero(100),
            page_size_max: nonzero(1000),
            wait_max: Duration::from_millis(5000),
            shutdown_timeout: Duration::from_millis(30_000),
            sse_connections_max: nonzero(256),
            sse_keepalive: Duration::from_millis(15_000),
            connections_max: nonzero(25_000),
            request_timeout: Duration::from_millis(5000),
            in_flight_max: nonzero(10_000),
            body_read_timeout: Duration::from_millis(10_000),
            request_deadline: Duration::from_millis(30_000),
            sse_connections_per_client_max: nonzero(16),
            rebuilds_max: nonzero(2),
            reads_in_flight_max: nonzero(64),
        }
    }
}

/// `[store]`: the event store — the embedded sled database (the default) or PostgreSQL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreConfig {
    /// Which store to use (`backend`).
    pub backend: StoreBackend,
    /// The database directory, created if missing (`data_dir`).
    #[serde(serialize_with = "path")]
    pub data_dir: PathBuf,
    /// When appends are acknowledged (`durability`).
    pub durability: DurabilityMode,
    /// How often relaxed durability fsyncs (`relaxed_flush_interval_ms`); unused when durable.
    #[serde(rename = "relaxed_flush_interval_ms", serialize_with = "millis")]
    pub relaxed_flush_interval: Duration,
    /// How much of the log is checked on open (`integrity_check`).
    #[serde(serialize_with = "integrity_check")]
    pub integrity_check: IntegrityCheck,
    /// Most appends per journal batch, that is per fsync (`batch_appends_max`).
    pub batch_appends_max: NonZeroUsize,
    /// Most appends waiting for the journal (`queue_capacity`); beyond it, overload.
    pub queue_capacity: NonZeroUsize,
    /// sled's page cache (`cache_capacity_bytes`).
    pub cache_capacity_bytes: u64,
    /// Free disk space below which the service reports itself unready and refuses commands
    /// with 507 until space is freed (`disk_free_bytes_min`; 0 disables the check).
    pub disk_free_bytes_min: u64,
    /// The PostgreSQL database (`postgres_url`; an empty string in the file: none). Needed
    /// with `backend = "postgres"`, ignored otherwise.
    #[serde(serialize_with = "optional_url")]
    pub postgres_url: Option<DatabaseUrl>,
    /// The PostgreSQL schema holding Annals' tables, created if missing (`postgres_schema`).
    pub postgres_schema: String,
    /// Connections to PostgreSQL (`postgres_pool_size`).
    pub postgres_pool_size: NonZeroUsize,
    /// This node's name among the nodes sharing the database (`postgres_node_id`; empty: the
    /// host name and the process id).
    pub postgres_node_id: String,
    /// How long a silent node keeps the subscribers it owns before another takes them over
    /// (`postgres_lease_timeout_ms`).
    #[serde(rename = "postgres_lease_timeout_ms", serialize_with = "millis")]
    pub postgres_lease_timeout: Duration,
}

impl StoreConfig {
    /// The sled store's options (whatever the backend).
    pub fn sled_options(&self) -> SledOptions {
        let mut sled = SledOptions::new(self.data_dir.clone());
        sled.durability = self.sled_durability();
        sled.integrity_check = self.integrity_check;
        sled.batch_appends_max = self.batch_appends_max;
        sled.queue_capacity = self.queue_capacity;
        sled.cache_capacity_bytes = self.cache_capacity_bytes;
        sled.disk_free_bytes_min = self.disk_free_bytes_min;
        sled
    }

    /// The PostgreSQL store's options (whatever the backend; an empty URL when none is set,
    /// which a loaded configuration with `backend = "postgres"` never has).
    pub fn pg_options(&self) -> PgOptions {
        let url = self
            .postgres_url
            .as_ref()
            .map_or(String::new(), |url| url.expose().to_owned());
        let mut pg = PgOptions::new(url)
            .with_schema(self.postgres_schema.clone())
            .with_pool_size(self.postgres_pool_size);
        pg.batch_appends_max = self.batch_appends_max;
        pg.queue_capacity = self.queue_capacity;
        pg.lease_timeout = self.postgres_lease_timeout;
        if !self.postgres_node_id.is_empty() {
            pg.node_id.clone_from(&self.postgres_node_id);
        }
        pg
    }

    /// The durability mode as the store takes it.
    pub fn sled_durability(&self) -> Durability {
        match self.durability {
            DurabilityMode::Durable => Durability::Durable,
            DurabilityMode::Relaxed => Durability::Relaxed {
                flush_interval: self.relaxed_flush_interval,
            },
        }
    }
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        let sled = SledOptions::new(DATA_DIR_DEFAULT);
        let (durability, relaxed_flush_interval) = match sled.durability {
            Durability::Durable => (DurabilityMode::Durable, RELAXED_FLUSH_INTERVAL_DEFAULT),
            Durability::Relaxed { flush_interval } => (DurabilityMode::Relaxed, flush_interval),
        };
        let pg = PgOptions::new("");
        StoreConfig {
            backend: StoreBackend::Sled,
            data_dir: sled.path,
            durability,
            relaxed_flush_interval,
            integrity_check: sled.integrity_check,
            batch_appends_max: sled.batch_appends_max,
            queue_capacity: sled.queue_capacity,
            cache_capacity_bytes: sled.cache_capacity_bytes,
            disk_free_bytes_min: DISK_FREE_BYTES_MIN_DEFAULT,
            postgres_url: None,
            postgres_schema: pg.schema,
            postgres_pool_size: pg.pool_size,
            postgres_node_id: String::new(),
            postgres_lease_timeout: pg.lease_timeout,
        }
    }
}

/// Which store the service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// The embedded sled database in `data_dir`: one process on one machine.
    Sled,
    /// A PostgreSQL database (`postgres_url`, `postgres_schema`), which several nodes can
    /// share.
    Postgres,
}

impl StoreBackend {
    /// The word the file uses.
    pub fn name(self) -> &'static str {
        match self {
            StoreBackend::Sled => "sled",
            StoreBackend::Postgres => "postgres",
        }
    }
}

/// When appends are acknowledged (see [`Durability`] for the guarantees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// After the fsync that covers them: a crash loses nothing acknowledged.
    Durable,
    /// After the write; fsync every `relaxed_flush_interval_ms`. A crash can lose the
    /// acknowledged appends of the last interval.
    Relaxed,
}

/// `[runtime]`: the aggregate runtime's threads, caches and limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeConfig {
    /// Arbiter threads running aggregate actors and subscribers (`arbiters`; 0 in a file means
    /// one per two cores, at least one). On the sled store, an actor activated by a caller on an actix arbiter
    /// (an HTTP request) runs on that caller's thread instead ([`Placement::Caller`]).
    pub arbiters: NonZeroUsize,
    /// Most live actors per aggregate type (`live_actors_max`); the least recently used goes.
    pub live_actors_max: NonZeroUsize,
    /// Most commands queued for one aggregate (`mailbox_capacity`); beyond it, 429.
    pub mailbox_capacity: NonZeroUsize,
    /// Most rehydrations at once (`rehydrations_max`); further activations wait.
    pub rehydrations_max: NonZeroUsize,
    /// Most events one command may produce (`events_per_command_max`).
    pub events_per_command_max: NonZeroUsize,
    /// Most bytes of one encoded event (`event_bytes_max`).
    pub event_bytes_max: NonZeroUsize,
    /// Most bytes of one encoded command (`command_bytes_max`).
    pub command_bytes_max: NonZeroUsize,
    /// The pause suggested to overloaded callers (`retry_after_ms`; HTTP `Retry-After`).
    #[serde(rename = "retry_after_ms", serialize_with = "millis")]
    pub retry_after: Duration,
    /// The longest a command may wait for its aggregate before it is refused unexecuted
    /// (`queue_time_max_ms`; HTTP 503): load is shed early under overload.
    #[serde(rename = "queue_time_max_ms", serialize_with = "millis")]
    pub queue_time_max: Duration,
    /// How long shutdown waits for commands in flight (`drain_timeout_ms`).
    #[serde(rename = "drain_timeout_ms", serialize_with = "millis")]
    pub drain_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        let options = RuntimeOptions::with_store(SledOptions::new(DATA_DIR_DEFAULT));
        RuntimeConfig {
            arbiters: arbiters_default(),
            live_actors_max: options.live_actors_max,
            mailbox_capacity: options.mailbox_capacity,
            rehydrations_max: options.rehydrations_max,
            events_per_command_max: options.events_per_command_max,
            event_bytes_max: options.event_bytes_max,
            command_bytes_max: options.command_bytes_max,
            retry_after: options.retry_after,
            queue_time_max: options.queue_time_max,
            drain_timeout: options.drain_timeout,
        }
    }
}

/// `[domain]`: the reference domain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainConfig {
    /// How long an order may stay pending before the saga rejects it (`decision_timeout_ms`).
    #[serde(rename = "decision_timeout_ms", serialize_with = "millis")]
    pub decision_timeout: Duration,
}

impl Default for DomainConfig {
    fn default() -> DomainConfig {
        DomainConfig {
            decision_timeout: Duration::from_millis(30_000),
        }
    }
}

/// `[auth]`: bearer-token authentication of the API (health endpoints and the API description
/// stay open).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuthConfig {
    /// The accepted tokens and their scopes (`tokens`); none means no authentication.
    pub tokens: Vec<Token>,
}

impl AuthConfig {
    /// Whether requests must carry a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The scopes of `presented`, if it is one of the tokens. Compares with every token, each
    /// in time independent of where the bytes differ, so the answer's timing does not reveal a
    /// token (nor which one matched).
    pub fn scopes_of(&self, presented: &str) -> Option<Scopes> {
        let (found, scopes) =
            self.tokens
                .iter()
                .fold((false, Scopes::NONE), |(found, scopes), token| {
                    let matched = token.secret().matches(presented);
                    (
                        found | matched,
                        scopes.union(token.scopes().masked(matched)),
                    )
                });
        found.then_some(scopes)
    }

    /// Whether `presented` is one of the tokens (whatever its scopes).
    pub fn accepts(&self, presented: &str) -> bool {
        self.scopes_of(presented).is_some()
    }
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogConfig {
    /// Line format (`format`).
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `info,annals=debug` (`level`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The number of cores, which a count of 0 stands for.
pub(crate) fn cores() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// HTTP workers when none are configured: one per core less one, at least one. The journal's
/// writer and flusher (and sled's I/O threads) take about a core at full load; with a worker
/// on every core too, they and the workers take turns on every core. On two cores, with the
/// load generator on the same machine (`app/bench/http.sh`, medians of three): one worker
/// and one arbiter 41,118 commands/s, two of each 37,393/s; the HTTP orders workload 9,167–9,429
/// against 6,661–7,416 commands/s (README, Performance).
pub(crate) fn workers_default() -> NonZeroUsize {
    NonZeroUsize::new(cores().get().saturating_sub(1)).unwrap_or(NonZeroUsize::MIN)
}

/// Arbiters when none are configured: one per two cores, at least one. On the sled store they
/// run the subscribers and the actors those activate (a request's actor runs on its HTTP
/// worker); on PostgreSQL they run every actor, whose store calls wait on the backend's own
/// threads, not on the arbiter's.
pub(crate) fn arbiters_default() -> NonZeroUsize {
    NonZeroUsize::new(cores().get() / 2).unwrap_or(NonZeroUsize::MIN)
}

/// The word the file uses for an integrity check.
pub(crate) fn integrity_check_name(check: IntegrityCheck) -> &'static str {
    match check {
        IntegrityCheck::Structure => "structure",
        IntegrityCheck::Full => "full",
        IntegrityCheck::Tail => "tail",
    }
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// Serializes a duration as whole milliseconds, as the file writes it.
fn millis<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    // TOML integers are i64: saturate rather than fail for a duration set in code.
    serializer.serialize_i64(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
}

/// Serializes a path as a string, lossily when it is not UTF-8 (the config only reads UTF-8).
fn path<S: Serializer>(path: &std::path::Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// Serializes an optional URL redacted, an absent one as the empty string the file writes.
fn optional_url<S: Serializer>(
    url: &Option<DatabaseUrl>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => url.serialize(serializer),
        None => serializer.serialize_str(""),
    }
}

fn integrity_check<S: Serializer>(
    check: &IntegrityCheck,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(integrity_check_name(*check))
}
