//! Black-box tests of `annals-config`: the defaults and the documented default file, the
//! precedence of the layers, every bound, every kind of error message (asserted on its text:
//! the key and the source must be named), `render` round-tripping through `load`, secrets
//! never printed, and the PostgreSQL backend's keys down to a runtime opened on the local
//! PostgreSQL (`ANNALS_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use annals::store::sled::{self as sled, Durability};
use annals_config::{
    Config, ConfigError, DatabaseUrl, DurabilityMode, ErrorKind, Flag, IntegrityCheck, LogFormat,
    Origin, Scope, Scopes, Sources, StoreBackend, Token,
};

const TOKEN_A: &str = "tok-AAAAAAAAAAAAAAAAAAAA";
const TOKEN_B: &str = "tok-BBBBBBBBBBBBBBBBBBBB";

fn default_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("annals.toml")
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// `server.workers = 0`: one per core less one, at least one.
fn workers_default() -> NonZeroUsize {
    nz(cores().saturating_sub(1).max(1))
}

/// `runtime.arbiters = 0`: one per two cores, at least one.
fn arbiters_default() -> NonZeroUsize {
    nz((cores() / 2).max(1))
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("test values are not zero")
}

fn env(vars: &[(&str, &str)]) -> Sources {
    Sources {
        env: vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        ..Sources::default()
    }
}

fn set(key: &str, value: &str) -> Flag {
    Flag::new(key, value, "--set")
}

fn flags(flags: &[(&str, &str)]) -> Sources {
    Sources {
        flags: flags.iter().map(|(key, value)| set(key, value)).collect(),
        ..Sources::default()
    }
}

/// A configuration file in a temporary directory.
struct TempFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn file(text: &str) -> TempFile {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("annals.toml");
    std::fs::write(&path, text).expect("the file is written");
    TempFile { _dir: dir, path }
}

fn from_file(file: &TempFile) -> Sources {
    Sources {
        file: Some(file.path.clone()),
        ..Sources::default()
    }
}

fn load(sources: &Sources) -> Config {
    Config::load(sources).unwrap_or_else(|e| panic!("the configuration loads: {e}"))
}

fn load_err(sources: &Sources) -> ConfigError {
    match Config::load(sources) {
        Ok(config) => panic!("expected an error, loaded {config:?}"),
        Err(error) => error,
    }
}

/// The `section.key` names of a TOML document, sections being tables.
fn keys_of(table: &toml::Table) -> BTreeSet<String> {
    table
        .iter()
        .flat_map(|(section, items)| {
            let items = items
                .as_table()
                .expect("every top-level entry is a section");
            items.keys().map(move |key| format!("{section}.{key}"))
        })
        .collect()
}

fn parse(text: &str) -> toml::Table {
    toml::from_str(text).unwrap_or_else(|e| panic!("valid TOML: {e}\n{text}"))
}

/// The value of `section.key` in a rendered configuration.
fn rendered(config: &Config, key: &str) -> toml::Value {
    let (section, name) = key.split_once('.').expect("section.key");
    parse(&config.render())[section][name].clone()
}

// ---------------------------------------------------------------------------------------------
// Defaults and the documented default file

#[test]
fn defaults_are_the_documented_values() {
    let config = load(&Sources::default());
    assert_eq!(config, Config::default());

    let server = &config.server;
    assert_eq!(
        server.addr,
        "127.0.0.1:8080".parse::<SocketAddr>().expect("an address")
    );
    assert_eq!(server.workers, workers_default());
    assert_eq!(server.body_bytes_max.get(), 65_536);
    assert_eq!(server.page_size_default.get(), 100);
    assert_eq!(server.page_size_max.get(), 1000);
    assert_eq!(server.wait_max, Duration::from_millis(5000));
    assert_eq!(server.shutdown_timeout, Duration::from_millis(30_000));
    assert_eq!(server.sse_connections_max.get(), 256);
    assert_eq!(server.sse_keepalive, Duration::from_millis(15_000));
    assert_eq!(server.connections_max.get(), 25_000);
    assert_eq!(server.request_timeout, Duration::from_millis(5000));
    assert_eq!(server.in_flight_max.get(), 10_000);
    assert_eq!(server.body_read_timeout, Duration::from_millis(10_000));
    assert_eq!(server.request_deadline, Duration::from_millis(30_000));
    assert_eq!(server.sse_connections_per_client_max.get(), 16);
    assert_eq!(server.rebuilds_max.get(), 2);
    assert_eq!(server.reads_in_flight_max.get(), 64);

    let store = &config.store;
    assert_eq!(store.backend, StoreBackend::Sled);
    assert_eq!(store.data_dir, PathBuf::from("./data"));
    assert_eq!(store.durability, DurabilityMode::Durable);
    assert_eq!(store.relaxed_flush_interval, Duration::from_millis(10));
    assert_eq!(store.integrity_check, IntegrityCheck::Structure);
    assert_eq!(
        store.batch_appends_max.get(),
        sled::BATCH_APPENDS_MAX_DEFAULT
    );
    assert_eq!(store.queue_capacity.get(), sled::QUEUE_CAPACITY_DEFAULT);
    assert_eq!(
        store.cache_capacity_bytes,
        sled::CACHE_CAPACITY_BYTES_DEFAULT
    );
    assert_eq!(store.disk_free_bytes_min, 104_857_600);
    assert_eq!(store.postgres_url, None);
    assert_eq!(
        store.postgres_schema,
        annals::store::postgres::SCHEMA_DEFAULT
    );
    assert_eq!(store.postgres_schema, "annals");
    assert_eq!(
        store.postgres_pool_size.get(),
        annals::store::postgres::POOL_SIZE_DEFAULT
    );
    assert_eq!(store.postgres_pool_size.get(), 8);

    let runtime = &config.runtime;
    assert_eq!(runtime.arbiters, arbiters_default());
    assert_eq!(
        runtime.live_actors_max.get(),
        annals::runtime::LIVE_ACTORS_MAX_DEFAULT
    );
    assert_eq!(
        runtime.mailbox_capacity.get(),
        annals::runtime::MAILBOX_CAPACITY_DEFAULT
    );
    assert_eq!(
        runtime.rehydrations_max.get(),
        annals::runtime::REHYDRATIONS_MAX_DEFAULT
    );
    assert_eq!(
        runtime.events_per_command_max.get(),
        annals::runtime::EVENTS_PER_COMMAND_MAX_DEFAULT
    );
    assert_eq!(
        runtime.event_bytes_max.get(),
        annals::runtime::EVENT_BYTES_MAX_DEFAULT
    );
    assert_eq!(
        runtime.command_bytes_max.get(),
        annals::runtime::COMMAND_BYTES_MAX_DEFAULT
    );
    assert_eq!(runtime.retry_after, Duration::from_millis(100));
    assert_eq!(runtime.drain_timeout, Duration::from_millis(10_000));

    assert_eq!(
        config.domain.decision_timeout,
        Duration::from_millis(30_000)
    );
    assert!(config.auth.tokens.is_empty());
    assert!(!config.auth.enabled());
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
}

#[test]
fn the_default_file_loads_to_exactly_the_defaults() {
    let sources = Sources {
        file: Some(default_file()),
        ..Sources::default()
    };
    assert_eq!(load(&sources), Config::default());
    let on_disk = std::fs::read_to_string(default_file()).expect("config/annals.toml exists");
    assert_eq!(annals_config::DEFAULT_FILE, on_disk);
}

#[test]
fn the_default_file_lists_every_key_of_the_struct_and_no_other() {
    // The struct's keys, as `Serialize` derives them from its fields.
    let from_struct = keys_of(&toml::Table::try_from(Config::default()).expect("serializes"));
    let from_file = keys_of(&parse(annals_config::DEFAULT_FILE));
    let from_render = keys_of(&parse(&Config::default().render()));
    assert_eq!(
        from_file, from_struct,
        "config/annals.toml and Config have drifted"
    );
    assert_eq!(from_render, from_struct, "render and Config have drifted");
    assert_eq!(from_struct.len(), 45);
}

#[test]
fn the_default_file_documents_every_key_with_a_comment() {
    let lines: Vec<&str> = annals_config::DEFAULT_FILE.lines().collect();
    let mut keys = 0;
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        keys += 1;
        assert!(line.contains(" = "), "line {}: {line}", i + 1);
        assert!(
            i > 0 && lines[i - 1].starts_with("# "),
            "line {}: key without a comment above it: {line}",
            i + 1
        );
    }
    assert_eq!(keys, 45);
}

// ---------------------------------------------------------------------------------------------
// Precedence

#[test]
fn flags_beat_environment_beats_file_beats_defaults() {
    let f = file("[server]\nworkers = 2\nbody_bytes_max = 1000\n[log]\nlevel = \"warn\"\n");
    let all = Sources {
        file: Some(f.path.clone()),
        env: vec![
            ("ANNALS_SERVER_WORKERS".to_owned(), "3".to_owned()),
            ("ANNALS_LOG_LEVEL".to_owned(), "debug".to_owned()),
        ],
        flags: vec![set("server.workers", "4")],
    };
    let config = load(&all);
    assert_eq!(config.server.workers, nz(4), "the flag wins");
    assert_eq!(config.log.level, "debug", "the environment beats the file");
    assert_eq!(
        config.server.body_bytes_max,
        nz(1000),
        "the file beats the default"
    );
    assert_eq!(config.server.page_size_max, nz(1000), "the default stays");

    let without_flags = Sources {
        flags: Vec::new(),
        ..all.clone()
    };
    assert_eq!(load(&without_flags).server.workers, nz(3));
    assert_eq!(load(&from_file(&f)).server.workers, nz(2));
}

#[test]
fn the_last_flag_for_a_key_wins() {
    let sources = Sources {
        flags: vec![
            Flag::new("server.addr", "127.0.0.1:1", "--addr"),
            set("server.addr", "127.0.0.1:2"),
        ],
        ..Sources::default()
    };
    let config = load(&sources);
    assert_eq!(config.server.addr.port(), 2);
    assert_eq!(
        config.origin("server.addr"),
        &Origin::Flag {
            name: "--set".to_owned()
        }
    );
}

#[test]
fn origins_are_tracked_and_rendered_but_not_compared() {
    let f = file("[server]\n\nworkers = 2\n");
    let sources = Sources {
        file: Some(f.path.clone()),
        env: vec![(
            "ANNALS_STORE_DATA_DIR".to_owned(),
            "/var/lib/annals".to_owned(),
        )],
        flags: vec![Flag::new("server.addr", "0.0.0.0:9000", "--addr")],
    };
    let config = load(&sources);
    assert_eq!(config.origin("server.page_size_max"), &Origin::Default);
    assert_eq!(
        config.origin("server.workers"),
        &Origin::File {
            path: f.path.clone(),
            line: Some(3)
        }
    );
    let text = config.render();
    let path = f.path.display();
    assert!(
        text.contains(&format!("\nworkers = 2  # from {path}, line 3\n")),
        "{text}"
    );
    assert!(
        text.contains(
            "\ndata_dir = \"/var/lib/annals\"  # from environment variable ANNALS_STORE_DATA_DIR\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\naddr = \"0.0.0.0:9000\"  # from flag --addr\n"),
        "{text}"
    );
    assert!(text.contains("\npage_size_max = 1000\n"), "{text}");

    // The same values, set by a source instead of by default, make an equal configuration.
    let explicit = load(&env(&[("ANNALS_SERVER_PAGE_SIZE_MAX", "1000")]));
    assert_eq!(explicit, Config::default());
    assert!(explicit
        .render()
        .contains("page_size_max = 1000  # from environment variable"));
}

#[test]
fn unrelated_annals_variables_are_ignored() {
    let sources = env(&[
        ("ANNALS_CRASH_CYCLES", "100"),
        ("ANNALS_E2E_ORDERS", "5"),
        ("ANNALS_SERVERS", "x"),
        ("ANNALS_SERVER", "x"),
        ("ANNALS_", "x"),
        ("ANNALS_BENCH_ROUNDS", "3"),
        ("PATH", "/usr/bin"),
        ("SERVER_ADDR", "nonsense"),
    ]);
    assert_eq!(load(&sources), Config::default());
}

// ---------------------------------------------------------------------------------------------
// Every key, every bound

/// Every integer key with its bounds, as the documentation states them.
const BOUNDS: &[(&str, u64, u64)] = &[
    ("server.workers", 0, 1024),
    ("server.body_bytes_max", 1, 268_435_456),
    ("server.page_size_default", 1, 100_000),
    ("server.page_size_max", 1, 100_000),
    ("server.wait_max_ms", 0, 300_000),
    ("server.shutdown_timeout_ms", 0, 3_600_000),
    ("server.sse_connections_max", 1, 1_000_000),
    ("server.sse_keepalive_ms", 100, 3_600_000),
    ("server.connections_max", 1, 1_000_000),
    ("server.request_timeout_ms", 1, 3_600_000),
    ("server.in_flight_max", 1, 10_000_000),
    ("server.body_read_timeout_ms", 1, 3_600_000),
    ("server.request_deadline_ms", 1, 3_600_000),
    ("server.sse_connections_per_client_max", 1, 1_000_000),
    ("server.rebuilds_max", 1, 1024),
    ("server.reads_in_flight_max", 1, 100_000),
    ("store.relaxed_flush_interval_ms", 1, 60_000),
    ("store.batch_appends_max", 1, 1_000_000),
    ("store.queue_capacity", 1, 10_000_000),
    ("store.cache_capacity_bytes", 1_048_576, 1_099_511_627_776),
    ("store.disk_free_bytes_min", 0, 1_125_899_906_842_624),
    ("store.postgres_pool_size", 1, 1000),
    ("store.postgres_lease_timeout_ms", 1000, 3_600_000),
    ("runtime.arbiters", 0, 1024),
    ("runtime.live_actors_max", 1, 100_000_000),
    ("runtime.mailbox_capacity", 1, 1_000_000),
    ("runtime.rehydrations_max", 1, 100_000),
    ("runtime.events_per_command_max", 1, 1_000_000),
    ("runtime.event_bytes_max", 1, 268_435_456),
    ("runtime.command_bytes_max", 1, 268_435_456),
    ("runtime.retry_after_ms", 1, 3_600_000),
    ("runtime.queue_time_max_ms", 1, 3_600_000),
    ("runtime.drain_timeout_ms", 0, 3_600_000),
    ("domain.decision_timeout_ms", 1, 2_592_000_000),
];

/// Flags that keep the keys bounded by each other out of the way of the bound under test.
fn roomy() -> Vec<Flag> {
    vec![
        set("server.page_size_default", "1"),
        set("server.page_size_max", "100000"),
        set("server.sse_connections_max", "1"),
        set("server.connections_max", "1000000"),
        set("server.wait_max_ms", "0"),
        set("server.request_deadline_ms", "3600000"),
    ]
}

fn with_roomy(key: &str, value: &str) -> Sources {
    let mut flags = roomy();
    flags.push(set(key, value));
    Sources {
        flags,
        ..Sources::default()
    }
}

#[test]
fn the_bounds_table_covers_every_integer_key() {
    let defaults = parse(&Config::default().render());
    let integer_keys: BTreeSet<String> = keys_of(&defaults)
        .into_iter()
        .filter(|key| rendered(&Config::default(), key).is_integer())
        .collect();
    let bounded: BTreeSet<String> = BOUNDS.iter().map(|(key, ..)| (*key).to_owned()).collect();
    assert_eq!(bounded, integer_keys);
}

#[test]
fn every_bound_is_enforced_and_stated() {
    for &(key, min, max) in BOUNDS {
        for value in [min, max] {
            let config = Config::load(&with_roomy(key, &value.to_string()))
                .unwrap_or_else(|e| panic!("{key} = {value} is within bounds: {e}"));
            let expected = if value == 0 && key == "server.workers" {
                i64::try_from(workers_default().get()).expect("few cores")
            } else if value == 0 && key == "runtime.arbiters" {
                i64::try_from(arbiters_default().get()).expect("few cores")
            } else {
                i64::try_from(value).expect("bounds fit TOML")
            };
            assert_eq!(
                rendered(&config, key),
                toml::Value::Integer(expected),
                "{key} = {value} is applied"
            );
        }
        let mut outside = vec![max + 1, 1 << 62];
        if min > 0 {
            outside.push(min - 1);
        }
        for value in outside {
            let error = load_err(&with_roomy(key, &value.to_string()));
            assert_eq!(
                error.kind(),
                ErrorKind::OutOfRange,
                "{key} = {value}: {error}"
            );
            assert_eq!(error.key(), Some(key));
            let message = error.to_string();
            assert!(
                message.starts_with(&format!(
                    "{key}: {value} is out of range: must be from {min} to {max} "
                )),
                "{message}"
            );
            assert!(message.ends_with("(from flag --set)"), "{message}");
        }
        let error = load_err(&with_roomy(key, "-1"));
        assert_eq!(error.kind(), ErrorKind::OutOfRange, "{key} = -1: {error}");
    }
}

#[test]
fn units_are_stated_in_range_errors() {
    let message = |key: &str, value: &str| load_err(&flags(&[(key, value)])).to_string();
    assert!(message("server.wait_max_ms", "300001").contains("to 300000 milliseconds"));
    assert!(message("server.body_bytes_max", "0").contains("to 268435456 bytes"));
    assert!(
        message("server.workers", "2000").contains("to 1024 threads (0: one per core less one)")
    );
    assert!(message("runtime.mailbox_capacity", "0").contains("to 1000000 commands"));
}

#[test]
fn every_other_key_can_be_set() {
    let config = load(&env(&[
        ("ANNALS_SERVER_ADDR", "[::1]:0"),
        ("ANNALS_STORE_DATA_DIR", "/srv/annals data"),
        ("ANNALS_STORE_DURABILITY", "relaxed"),
        ("ANNALS_STORE_INTEGRITY_CHECK", "full"),
        ("ANNALS_AUTH_TOKENS", &format!("{TOKEN_A}, {TOKEN_B},")),
        ("ANNALS_LOG_FORMAT", "json"),
        (
            "ANNALS_LOG_LEVEL",
            "info,annals=debug,actix_web::middleware=warn",
        ),
    ]));
    assert_eq!(
        config.server.addr,
        "[::1]:0".parse::<SocketAddr>().expect("an address")
    );
    assert_eq!(config.store.data_dir, PathBuf::from("/srv/annals data"));
    assert_eq!(config.store.durability, DurabilityMode::Relaxed);
    assert_eq!(config.store.integrity_check, IntegrityCheck::Full);
    assert_eq!(
        config.auth.tokens,
        [Token::new(TOKEN_A), Token::new(TOKEN_B)]
    );
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(
        config.log.level,
        "info,annals=debug,actix_web::middleware=warn"
    );
    assert_eq!(
        load(&flags(&[("store.integrity_check", "tail")]))
            .store
            .integrity_check,
        IntegrityCheck::Tail
    );

    let f = file(&format!("[auth]\ntokens = [\"{TOKEN_A}\"]\n"));
    assert_eq!(load(&from_file(&f)).auth.tokens, [Token::new(TOKEN_A)]);
    assert!(load(&env(&[("ANNALS_AUTH_TOKENS", "")]))
        .auth
        .tokens
        .is_empty());
}

#[test]
fn a_host_name_is_resolved() {
    let config = load(&flags(&[("server.addr", "localhost:8080")]));
    assert!(
        config.server.addr.ip().is_loopback(),
        "{}",
        config.server.addr
    );
    assert_eq!(config.server.addr.port(), 8080);
}

#[test]
fn auth_accepts_exactly_its_tokens() {
    let config = load(&env(&[(
        "ANNALS_AUTH_TOKENS",
        &format!("{TOKEN_A},{TOKEN_B}"),
    )]));
    assert!(config.auth.enabled());
    assert!(config.auth.accepts(TOKEN_A));
    assert!(config.auth.accepts(TOKEN_B));
    assert!(!config.auth.accepts("tok-CCCCCCCCCCCCCCCCCCCC"));
    assert!(!config.auth.accepts(""));
}

/// A token written `TOKEN:SCOPE+SCOPE` has those scopes, one without scopes has all three, the
/// same from the file, the environment and `--set`; `annals config` shows the scopes, never
/// the token.
#[test]
fn tokens_carry_scopes_from_every_source() {
    let read = Scopes::of(&[Scope::Read]);
    let read_commands = Scopes::of(&[Scope::Read, Scope::Commands]);
    let expected = [
        Token::scoped(TOKEN_A, read),
        Token::scoped(TOKEN_B, read_commands),
        Token::new("tok-CCCCCCCCCCCCCCCCCCCC"),
    ];
    let written = [
        format!("{TOKEN_A}:read"),
        format!("{TOKEN_B}:read+commands"),
        "tok-CCCCCCCCCCCCCCCCCCCC".to_owned(),
    ];
    let f = file(&format!("[auth]\ntokens = {written:?}\n"));
    let from_env = env(&[("ANNALS_AUTH_TOKENS", &written.join(","))]);
    let from_flag = flags(&[("auth.tokens", &written.join(", "))]);
    for sources in [from_file(&f), from_env, from_flag] {
        let config = load(&sources);
        assert_eq!(config.auth.tokens, expected, "{sources:?}");
        assert_eq!(config.auth.scopes_of(TOKEN_A), Some(read));
        assert_eq!(config.auth.scopes_of(TOKEN_B), Some(read_commands));
        assert_eq!(
            config.auth.scopes_of("tok-CCCCCCCCCCCCCCCCCCCC"),
            Some(Scopes::ALL),
            "a token without scopes has them all"
        );
        assert_eq!(config.auth.scopes_of("tok-DDDDDDDDDDDDDDDDDDDD"), None);
        let text = config.render();
        assert!(
            text.contains(
                "tokens = [\"<redacted>:read\", \"<redacted>:read+commands\", \"<redacted>\"]"
            ),
            "{text}"
        );
        assert!(!text.contains(TOKEN_A) && !text.contains(TOKEN_B), "{text}");
    }
    let admin = load(&flags(&[("auth.tokens", &format!("{TOKEN_A}:admin"))]));
    assert_eq!(
        admin.auth.scopes_of(TOKEN_A),
        Some(Scopes::of(&[Scope::Admin]))
    );

    // An unknown or missing scope is refused without echoing what was written.
    for bad in [
        format!("{TOKEN_A}:write"),
        format!("{TOKEN_A}:"),
        format!("{TOKEN_A}:read+"),
    ] {
        let error = load_err(&env(&[("ANNALS_AUTH_TOKENS", &bad)]));
        assert_eq!(error.kind(), ErrorKind::InvalidValue, "{error}");
        assert_eq!(error.key(), Some("auth.tokens"));
        let message = error.to_string();
        assert!(
            message.starts_with(
                "auth.tokens: token 1 of 1 has a scope that is not one of read, commands, admin"
            ),
            "{message}"
        );
        assert!(!message.contains(TOKEN_A), "{message}");
        assert!(
            message.ends_with("(from environment variable ANNALS_AUTH_TOKENS)"),
            "{message}"
        );
    }
    // The token part is checked as before.
    let error = load_err(&flags(&[("auth.tokens", "short:read")]));
    assert!(
        error
            .to_string()
            .starts_with("auth.tokens: token 1 of 1 is 5 characters long"),
        "{error}"
    );
}

#[test]
fn runtime_options_carry_the_store_and_runtime_sections() {
    let config = load(&flags(&[
        ("store.data_dir", "/tmp/annals-x"),
        ("store.durability", "relaxed"),
        ("store.relaxed_flush_interval_ms", "25"),
        ("store.integrity_check", "tail"),
        ("store.batch_appends_max", "7"),
        ("store.queue_capacity", "77"),
        ("store.cache_capacity_bytes", "2097152"),
        ("runtime.arbiters", "3"),
        ("runtime.live_actors_max", "11"),
        ("runtime.mailbox_capacity", "12"),
        ("runtime.rehydrations_max", "13"),
        ("runtime.events_per_command_max", "14"),
        ("runtime.event_bytes_max", "15"),
        ("runtime.command_bytes_max", "16"),
        ("runtime.retry_after_ms", "17"),
        ("runtime.queue_time_max_ms", "19"),
        ("runtime.drain_timeout_ms", "18"),
    ]));
    let options = config.runtime_options();
    let store = options.store.sled().expect("sled is the default backend");
    assert!(options.store.postgres().is_none());
    assert_eq!(store.path, PathBuf::from("/tmp/annals-x"));
    assert_eq!(
        store.durability,
        Durability::Relaxed {
            flush_interval: Duration::from_millis(25)
        }
    );
    assert_eq!(store.integrity_check, IntegrityCheck::Tail);
    assert_eq!(store.batch_appends_max, nz(7));
    assert_eq!(store.queue_capacity, nz(77));
    assert_eq!(store.cache_capacity_bytes, 2_097_152);
    assert_eq!(options.arbiters, nz(3));
    assert_eq!(options.live_actors_max, nz(11));
    assert_eq!(options.mailbox_capacity, nz(12));
    assert_eq!(options.rehydrations_max, nz(13));
    assert_eq!(options.events_per_command_max, nz(14));
    assert_eq!(options.event_bytes_max, nz(15));
    assert_eq!(options.command_bytes_max, nz(16));
    assert_eq!(options.retry_after, Duration::from_millis(17));
    assert_eq!(options.queue_time_max, Duration::from_millis(19));
    assert_eq!(options.drain_timeout, Duration::from_millis(18));

    let defaults = Config::default().runtime_options();
    let runtime = annals::RuntimeOptions::new("./data");
    let (store, runtime_store) = (
        defaults.store.sled().expect("sled by default"),
        runtime.store.sled().expect("sled"),
    );
    assert_eq!(store.durability, Durability::Durable);
    assert_eq!(store.path, runtime_store.path);
    assert_eq!(defaults.mailbox_capacity, runtime.mailbox_capacity);
    assert_eq!(defaults.shards, runtime.shards);
    assert_eq!(defaults.retry_after, runtime.retry_after);
}

// ---------------------------------------------------------------------------------------------
// render

#[test]
fn render_round_trips_through_load() {
    let config = load(&flags(&[
        ("server.addr", "0.0.0.0:9001"),
        ("server.workers", "3"),
        ("server.wait_max_ms", "0"),
        ("store.data_dir", "/tmp/a \"quoted\" dir\\"),
        ("store.durability", "relaxed"),
        ("store.integrity_check", "full"),
        ("store.disk_free_bytes_min", "0"),
        ("runtime.arbiters", "0"),
        ("domain.decision_timeout_ms", "2592000000"),
        ("log.format", "json"),
        ("log.level", "warn,annals=trace"),
    ]));
    let f = file(&config.render());
    assert_eq!(load(&from_file(&f)), config);

    let f = file(&Config::default().render());
    assert_eq!(load(&from_file(&f)), Config::default());
}

#[test]
fn secrets_are_never_printed() {
    let sources = env(&[("ANNALS_AUTH_TOKENS", &format!("{TOKEN_A},{TOKEN_B}"))]);
    let config = load(&sources);
    let text = config.render();
    let debug = format!("{config:?} {sources:?}");
    let serialized = toml::to_string(&config).expect("serializes");
    for output in [&text, &debug, &serialized] {
        assert!(
            !output.contains(TOKEN_A) && !output.contains(TOKEN_B),
            "{output}"
        );
    }
    assert!(
        text.contains(
            "tokens = [\"<redacted>\", \"<redacted>\"]  \
             # from environment variable ANNALS_AUTH_TOKENS"
        ),
        "{text}"
    );
    let flag = Flag::new("auth.tokens", TOKEN_A, "--set");
    assert!(!format!("{flag:?}").contains(TOKEN_A));

    // Reloading the rendered file says what to do with the placeholders.
    let error = load_err(&from_file(&file(&text)));
    assert_eq!(error.key(), Some("auth.tokens"));
    assert!(
        error.to_string().starts_with(
            "auth.tokens: token 1 of 2 is the placeholder <redacted> that `annals config` prints"
        ),
        "{error}"
    );
}

#[test]
fn token_errors_name_the_token_but_never_show_it() {
    let short = "abc123";
    let spaced = "has spaces in it, 0123456789";
    let error = load_err(&env(&[(
        "ANNALS_AUTH_TOKENS",
        &format!("{TOKEN_A},{short}"),
    )]));
    assert_eq!(
        error.to_string(),
        "auth.tokens: token 2 of 2 is 6 characters long: must be from 16 to 4096 characters \
         (from environment variable ANNALS_AUTH_TOKENS)"
    );
    let f = file(&format!("[auth]\ntokens = [{spaced:?}]\n"));
    let error = load_err(&from_file(&f));
    assert_eq!(error.kind(), ErrorKind::InvalidValue);
    let message = error.to_string();
    assert!(
        message.starts_with("auth.tokens: token 1 of 1 has a character"),
        "{message}"
    );
    assert!(
        message.ends_with(&format!("(from {}, line 2)", f.path.display())),
        "{message}"
    );
    assert!(!message.contains("spaces"), "{message}");

    let error = load_err(&from_file(&file(
        "[auth]\ntokens = \"one-token-only-please\"\n",
    )));
    assert_eq!(error.kind(), ErrorKind::WrongType);
    assert!(error
        .to_string()
        .starts_with("auth.tokens: expected an array of strings, found a string"));
    assert!(!error.to_string().contains("one-token"));

    let error = load_err(&from_file(&file(
        "[auth]\ntokens = [\"0123456789abcdefgh\", 7]\n",
    )));
    assert!(error.to_string().starts_with(
        "auth.tokens: expected an array of strings, found an array holding an integer"
    ));
}

// ---------------------------------------------------------------------------------------------
// Error messages: each names the key and the source

#[test]
fn a_bad_word_from_the_environment() {
    let error = load_err(&env(&[("ANNALS_STORE_DURABILITY", "fast")]));
    assert_eq!(
        error.to_string(),
        "store.durability: \"fast\" is not one of \"durable\", \"relaxed\" \
         (from environment variable ANNALS_STORE_DURABILITY)"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidValue);
    assert_eq!(error.key(), Some("store.durability"));
    assert_eq!(
        error.origin(),
        Some(&Origin::Env {
            var: "ANNALS_STORE_DURABILITY".to_owned()
        })
    );

    let error = load_err(&flags(&[("store.integrity_check", "quick")]));
    assert_eq!(
        error.to_string(),
        "store.integrity_check: \"quick\" is not one of \"structure\", \"full\", \"tail\" \
         (from flag --set)"
    );
    let error = load_err(&flags(&[("log.format", "JSON")]));
    assert_eq!(
        error.to_string(),
        "log.format: \"JSON\" is not one of \"text\", \"json\" (from flag --set)"
    );
}

#[test]
fn a_missing_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("nowhere.toml");
    let error = load_err(&Sources {
        file: Some(path.clone()),
        ..Sources::default()
    });
    assert_eq!(
        error.to_string(),
        format!("configuration file {} does not exist", path.display())
    );
    assert_eq!(error.kind(), ErrorKind::FileMissing);

    let error = load_err(&Sources {
        file: Some(dir.path().to_owned()),
        ..Sources::default()
    });
    assert_eq!(error.kind(), ErrorKind::FileUnreadable);
    assert!(
        error.to_string().starts_with(&format!(
            "cannot read configuration file {}: ",
            dir.path().display()
        )),
        "{error}"
    );
}

#[test]
fn a_syntax_error_names_the_line() {
    let f = file("[server]\nworkers = 4\naddr = \"127.0.0.1:80\n");
    let error = load_err(&from_file(&f));
    assert_eq!(error.kind(), ErrorKind::Syntax);
    let message = error.to_string();
    let prefix = format!(
        "cannot parse configuration file {}, line 3, column ",
        f.path.display()
    );
    assert!(message.starts_with(&prefix), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");

    let f = file("[server]\nworkers = 4\nworkers = 5\n");
    let message = load_err(&from_file(&f)).to_string();
    assert!(message.contains(", line 3, column "), "{message}");
    assert!(message.contains("duplicate key"), "{message}");
}

#[test]
fn an_unknown_key_in_the_file_gets_a_suggestion() {
    let f = file("[server]\nworkers = 4\nadress = \"127.0.0.1:80\"\n");
    let error = load_err(&from_file(&f));
    assert_eq!(
        error.to_string(),
        format!(
            "unknown key server.adress in {}, line 3 (did you mean server.addr?)",
            f.path.display()
        )
    );
    assert_eq!(error.kind(), ErrorKind::UnknownKey);
    assert_eq!(error.key(), Some("server.adress"));

    // A key in the wrong section points to the right one.
    let f = file("[server]\ndata_dir = \"/x\"\n");
    assert_eq!(
        load_err(&from_file(&f)).to_string(),
        format!(
            "unknown key server.data_dir in {}, line 2 (did you mean store.data_dir?)",
            f.path.display()
        )
    );

    // No suggestion when nothing is close.
    let f = file("[log]\nzzz = 1\n");
    assert_eq!(
        load_err(&from_file(&f)).to_string(),
        format!("unknown key log.zzz in {}, line 2", f.path.display())
    );

    // The first mistake in the file is the one reported.
    let f = file("[store]\nzeta = 1\n[auth]\nalpha = 2\n");
    assert_eq!(load_err(&from_file(&f)).key(), Some("store.zeta"));
    let f = file("[store]\nzeta = 1\n[aaa]\n");
    assert_eq!(load_err(&from_file(&f)).key(), Some("store.zeta"));
    let f = file("[zzz]\n[auth]\nalpha = 1\n");
    assert_eq!(load_err(&from_file(&f)).key(), Some("zzz"));
}

#[test]
fn a_key_outside_any_section() {
    let f = file("addr = \"127.0.0.1:80\"\n[server]\nworkers = 1\n");
    let error = load_err(&from_file(&f));
    assert_eq!(
        error.to_string(),
        format!(
            "unknown key addr in {}, line 1 (did you mean server.addr?)",
            f.path.display()
        )
    );
    assert_eq!(error.kind(), ErrorKind::UnknownKey);
}

#[test]
fn an_unknown_section_gets_a_suggestion() {
    let f = file("# comment\n[sever]\naddr = \"127.0.0.1:80\"\n");
    let error = load_err(&from_file(&f));
    assert_eq!(error.kind(), ErrorKind::UnknownSection);
    assert_eq!(error.key(), Some("sever"));
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("unknown section [sever] in {}", f.path.display())),
        "{message}"
    );
    assert!(message.ends_with(" (did you mean [server]?)"), "{message}");

    let f = file("server = 8080\n");
    let error = load_err(&from_file(&f));
    assert_eq!(error.kind(), ErrorKind::WrongType);
    assert_eq!(
        error.to_string(),
        format!(
            "server: expected a section [server], found an integer (from {}, line 1)",
            f.path.display()
        )
    );
}

#[test]
fn a_value_of_the_wrong_type_in_the_file() {
    let f = file("[server]\naddr = \"127.0.0.1:80\"\nworkers = \"4\"\n");
    let error = load_err(&from_file(&f));
    assert_eq!(
        error.to_string(),
        format!(
            "server.workers: expected an integer, found a string (from {}, line 3)",
            f.path.display()
        )
    );
    assert_eq!(error.kind(), ErrorKind::WrongType);

    // Dotted keys and inline tables are found on their lines too.
    let f = file("# dotted\n\nserver.workers = \"4\"\n");
    assert_eq!(
        load_err(&from_file(&f)).origin(),
        Some(&Origin::File {
            path: f.path.clone(),
            line: Some(3)
        })
    );
    let f = file("\nserver = { workers = \"4\" }\n");
    assert!(load_err(&from_file(&f)).to_string().ends_with(", line 2)"));

    let f = file("[store]\ndata_dir = 5\n");
    assert_eq!(
        load_err(&from_file(&f)).to_string(),
        format!(
            "store.data_dir: expected a string, found an integer (from {}, line 2)",
            f.path.display()
        )
    );
    let f = file("[server]\nwait_max_ms = 1.5\n");
    assert!(load_err(&from_file(&f))
        .to_string()
        .starts_with("server.wait_max_ms: expected an integer, found a float"));
}

#[test]
fn an_unknown_variable_in_a_section_gets_a_suggestion() {
    let error = load_err(&env(&[("ANNALS_SERVER_ADRESS", "127.0.0.1:80")]));
    assert_eq!(
        error.to_string(),
        "unknown key server.adress in environment variable ANNALS_SERVER_ADRESS \
         (did you mean ANNALS_SERVER_ADDR?)"
    );
    assert_eq!(error.kind(), ErrorKind::UnknownKey);

    // The key part must be upper case, as documented.
    let error = load_err(&env(&[("ANNALS_SERVER_addr", "127.0.0.1:80")]));
    assert_eq!(
        error.to_string(),
        "unknown key server.addr in environment variable ANNALS_SERVER_addr \
         (did you mean ANNALS_SERVER_ADDR?)"
    );
    let error = load_err(&env(&[("ANNALS_DOMAIN_ORDERS", "5")]));
    assert_eq!(
        error.to_string(),
        "unknown key domain.orders in environment variable ANNALS_DOMAIN_ORDERS"
    );
}

#[test]
fn an_unknown_flag_key_gets_a_suggestion() {
    let error = load_err(&flags(&[("server.adress", "x")]));
    assert_eq!(
        error.to_string(),
        "unknown key server.adress in flag --set (did you mean server.addr?)"
    );
    let error = load_err(&flags(&[("workers", "4")]));
    assert_eq!(
        error.to_string(),
        "unknown key workers in flag --set (did you mean server.workers?)"
    );
    let error = load_err(&flags(&[("sever.workers", "4")]));
    assert_eq!(
        error.to_string(),
        "unknown key sever.workers in flag --set (did you mean server.workers?)"
    );
}

#[test]
fn a_value_that_does_not_parse() {
    let error = load_err(&flags(&[("server.workers", "four")]));
    assert_eq!(
        error.to_string(),
        "server.workers: \"four\" is not an integer (from flag --set)"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidValue);

    let error = load_err(&env(&[("ANNALS_SERVER_WAIT_MAX_MS", "5s")]));
    assert_eq!(
        error.to_string(),
        "server.wait_max_ms: \"5s\" is not an integer \
         (from environment variable ANNALS_SERVER_WAIT_MAX_MS)"
    );

    let error = load_err(&Sources {
        flags: vec![Flag::new("server.addr", "nonsense", "--addr")],
        ..Sources::default()
    });
    let message = error.to_string();
    assert!(
        message.starts_with("server.addr: \"nonsense\" is not an address of the form HOST:PORT ("),
        "{message}"
    );
    assert!(message.ends_with(" (from flag --addr)"), "{message}");

    let error = load_err(&Sources {
        flags: vec![Flag::new("store.data_dir", "", "--data-dir")],
        ..Sources::default()
    });
    assert_eq!(
        error.to_string(),
        "store.data_dir: must name a directory, not be empty (from flag --data-dir)"
    );
}

#[test]
fn a_bad_log_level() {
    let error = load_err(&env(&[("ANNALS_LOG_LEVEL", "info; rm -rf")]));
    assert_eq!(
        error.to_string(),
        "log.level: \"info; rm -rf\" contains ';': a directive uses only A-Z a-z 0-9 _ = , : . - \
         (from environment variable ANNALS_LOG_LEVEL)"
    );
    let error = load_err(&flags(&[("log.level", "")]));
    assert!(
        error
            .to_string()
            .starts_with("log.level: must not be empty"),
        "{error}"
    );
}

#[test]
fn values_that_contradict_each_other() {
    let error = load_err(&flags(&[("server.page_size_max", "50")]));
    assert_eq!(
        error.to_string(),
        "server.page_size_max = 50 (from flag --set) is less than \
         server.page_size_default = 100 (from built-in default)"
    );
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert_eq!(error.key(), Some("server.page_size_max"));

    // The key blamed is the one a source set.
    let error = load_err(&env(&[("ANNALS_SERVER_CONNECTIONS_MAX", "100")]));
    assert_eq!(
        error.to_string(),
        "server.sse_connections_max = 256 (from built-in default) is more than \
         server.connections_max = 100 (from environment variable ANNALS_SERVER_CONNECTIONS_MAX)"
    );
    assert_eq!(error.key(), Some("server.connections_max"));

    // Equal is fine.
    load(&flags(&[
        ("server.page_size_max", "100"),
        ("server.connections_max", "256"),
    ]));

    // A read-your-writes wait must end before the request's deadline.
    let error = load_err(&flags(&[("server.request_deadline_ms", "5000")]));
    assert_eq!(
        error.to_string(),
        "server.wait_max_ms = 5000 (from built-in default) is not less than \
         server.request_deadline_ms = 5000 (from flag --set)"
    );
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert_eq!(error.key(), Some("server.request_deadline_ms"));
    load(&flags(&[("server.request_deadline_ms", "5001")]));
}

#[test]
fn an_overridden_bad_value_is_still_an_error() {
    // A mistake in the file is reported even when a flag overrides the key: it is a mistake
    // wherever it is, and it would bite the next run without the flag.
    let f = file("[server]\nworkers = -3\n");
    let sources = Sources {
        file: Some(f.path.clone()),
        flags: vec![set("server.workers", "4")],
        ..Sources::default()
    };
    let error = load_err(&sources);
    assert_eq!(
        error.to_string(),
        format!(
            "server.workers: -3 is out of range: must be from 0 to 1024 threads (0: one per core less one) \
             (from {}, line 2)",
            f.path.display()
        )
    );
}

#[test]
fn set_flags_parse_key_equals_value() {
    let flag = Flag::parse_set("server.workers=4").expect("valid");
    assert_eq!(flag, Flag::new("server.workers", "4", "--set"));
    let flag = Flag::parse_set("log.level=info,annals=debug").expect("valid");
    assert_eq!(flag.value, "info,annals=debug");
    let error = Flag::parse_set("server.workers").expect_err("no value");
    assert_eq!(
        error.to_string(),
        "flag --set takes section.key=value (such as --set server.workers=4), \
         not \"server.workers\""
    );
    assert!(Flag::parse_set("=4").is_err());
}

// ---------------------------------------------------------------------------------------------
// The store backend: sled (the default) or PostgreSQL

const PG_URL_WITH_PASSWORD: &str = "postgres://annals:hunter2-s3cr3t@db.internal:5432/events";
const PG_URL_REDACTED: &str = "postgres://annals:***@db.internal:5432/events";

#[test]
fn the_postgres_backend_takes_its_keys_and_the_shared_queue_keys() {
    let config = load(&flags(&[
        ("store.backend", "postgres"),
        ("store.postgres_url", PG_URL_WITH_PASSWORD),
        ("store.postgres_schema", "annals_blue"),
        ("store.postgres_pool_size", "16"),
        ("store.queue_capacity", "99"),
        ("store.batch_appends_max", "9"),
        // Ignored with PostgreSQL, accepted all the same.
        ("store.durability", "relaxed"),
    ]));
    assert_eq!(config.store.backend, StoreBackend::Postgres);
    assert_eq!(
        config.store.postgres_url,
        Some(DatabaseUrl::new(PG_URL_WITH_PASSWORD))
    );
    let options = config.runtime_options();
    assert!(options.store.sled().is_none());
    let pg = options.store.postgres().expect("the PostgreSQL backend");
    assert_eq!(pg.url, PG_URL_WITH_PASSWORD);
    assert_eq!(pg.schema, "annals_blue");
    assert_eq!(pg.pool_size, nz(16));
    assert_eq!(pg.queue_capacity, nz(99));
    assert_eq!(pg.batch_appends_max, nz(9));
    // What the configuration does not expose keeps the runtime's defaults.
    let defaults = annals::store::PgOptions::new("");
    assert_eq!(pg.lease_timeout, defaults.lease_timeout);
    assert_eq!(
        pg.node_id, defaults.node_id,
        "the host name and the process id"
    );
    let named = load(&flags(&[
        ("store.backend", "postgres"),
        ("store.postgres_url", PG_URL_WITH_PASSWORD),
        ("store.postgres_node_id", "node-2"),
        ("store.postgres_lease_timeout_ms", "2500"),
    ]));
    let named = named.store.pg_options();
    assert_eq!(named.node_id, "node-2");
    assert_eq!(named.lease_timeout, std::time::Duration::from_millis(2500));
    for bad in ["a b", "x\"y", &"n".repeat(65)] {
        let error = load_err(&flags(&[("store.postgres_node_id", bad)]));
        assert_eq!(error.key(), Some("store.postgres_node_id"), "{bad}");
    }
    let error = load_err(&flags(&[("store.postgres_lease_timeout_ms", "10")]));
    assert_eq!(error.key(), Some("store.postgres_lease_timeout_ms"));
    assert_eq!(pg.connect_timeout, defaults.connect_timeout);
    assert_eq!(pg.poll_interval, defaults.poll_interval);

    // The same from the environment and from the file.
    let from_env = load(&env(&[
        ("ANNALS_STORE_BACKEND", "postgres"),
        ("ANNALS_STORE_POSTGRES_URL", PG_URL_WITH_PASSWORD),
        ("ANNALS_STORE_POSTGRES_SCHEMA", "annals_blue"),
        ("ANNALS_STORE_POSTGRES_POOL_SIZE", "16"),
    ]));
    assert_eq!(from_env.store.pg_options().url, PG_URL_WITH_PASSWORD);
    assert_eq!(from_env.store.postgres_pool_size, nz(16));
    let f = file(&format!(
        "[store]\nbackend = \"postgres\"\npostgres_url = \"{PG_URL_WITH_PASSWORD}\"\n\
         postgres_schema = \"annals_blue\"\npostgres_pool_size = 16\n"
    ));
    let from_file = load(&from_file(&f));
    assert_eq!(from_file, from_env);
    assert_eq!(
        from_file.origin("store.postgres_url"),
        &Origin::File {
            path: f.path.clone(),
            line: Some(3)
        }
    );
}

#[test]
fn the_sled_backend_ignores_a_postgres_url() {
    let config = load(&flags(&[("store.postgres_url", PG_URL_WITH_PASSWORD)]));
    assert_eq!(config.store.backend, StoreBackend::Sled);
    let options = config.store_options();
    assert!(options.postgres().is_none());
    assert_eq!(
        options.sled().expect("sled").path,
        PathBuf::from(annals_config::DATA_DIR_DEFAULT)
    );
    // An empty URL is no URL.
    let config = load(&env(&[("ANNALS_STORE_POSTGRES_URL", "  ")]));
    assert_eq!(config.store.postgres_url, None);
}

#[test]
fn postgres_without_a_url_names_both_keys() {
    let error = load_err(&flags(&[("store.backend", "postgres")]));
    assert_eq!(error.kind(), ErrorKind::Missing);
    assert_eq!(error.key(), Some("store.backend"));
    assert_eq!(
        error.origin(),
        Some(&Origin::Flag {
            name: "--set".to_owned()
        })
    );
    assert_eq!(
        error.to_string(),
        "store.backend = \"postgres\" (from flag --set) needs store.postgres_url, which is not \
         set: give the database's URL, such as postgres://USER:PASSWORD@HOST:5432/DATABASE (in \
         the file, ANNALS_STORE_POSTGRES_URL or --set store.postgres_url=…)"
    );

    let error = load_err(&env(&[
        ("ANNALS_STORE_BACKEND", "postgres"),
        ("ANNALS_STORE_POSTGRES_URL", ""),
    ]));
    assert!(
        error
            .to_string()
            .starts_with("store.backend = \"postgres\" (from environment variable ANNALS_STORE_BACKEND) needs store.postgres_url"),
        "{error}"
    );

    let error = load_err(&flags(&[("store.backend", "mysql")]));
    assert_eq!(
        error.to_string(),
        "store.backend: \"mysql\" is not one of \"sled\", \"postgres\" (from flag --set)"
    );
}

#[test]
fn a_bad_schema_name_is_refused_at_load_with_the_rule() {
    let rule = "is not a usable schema name: use 1 to 63 lower-case letters, digits and '_', \
                not starting with a digit (from flag --set)";
    let too_long = "x".repeat(64);
    for bad in [
        "",
        "Annals",
        "1annals",
        "annals-blue",
        "a\"b",
        "a;drop",
        &too_long,
    ] {
        let error = load_err(&flags(&[("store.postgres_schema", bad)]));
        assert_eq!(error.kind(), ErrorKind::InvalidValue, "{bad}: {error}");
        assert_eq!(error.key(), Some("store.postgres_schema"));
        assert_eq!(
            error.to_string(),
            format!("store.postgres_schema: {bad:?} {rule}"),
        );
    }
    let error = load_err(&flags(&[("store.postgres_schema", "pg_annals")]));
    assert_eq!(
        error.to_string(),
        "store.postgres_schema: \"pg_annals\" is not a usable schema name: names starting with \
         pg_ are reserved by PostgreSQL (from flag --set)"
    );
    // Checked whatever the backend: it is a mistake wherever it is.
    for good in ["annals", "_x", "annals_t_0a1b", &"x".repeat(63)] {
        let config = load(&flags(&[("store.postgres_schema", good)]));
        assert_eq!(config.store.postgres_schema, good);
    }
}

#[test]
fn a_bad_url_is_refused_without_echoing_it() {
    for bad in [
        "mysql://annals:hunter2-s3cr3t@db/events",
        "db.internal:5432",
        "hunter2-s3cr3t",
    ] {
        let error = load_err(&flags(&[("store.postgres_url", bad)]));
        assert_eq!(error.kind(), ErrorKind::InvalidValue, "{error}");
        assert_eq!(error.key(), Some("store.postgres_url"));
        let message = error.to_string();
        assert!(
            message.starts_with("store.postgres_url: is not a PostgreSQL connection URL"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }
    let long = format!("postgres://u@h/{}", "d".repeat(5000));
    let error = load_err(&flags(&[("store.postgres_url", &long)]));
    assert_eq!(error.kind(), ErrorKind::OutOfRange);
    load(&flags(&[(
        "store.postgres_url",
        "host=db user=annals password=hunter2 dbname=events",
    )]));
    load(&flags(&[("store.postgres_url", "postgresql://db/events")]));
}

#[test]
fn the_url_password_is_never_printed() {
    let sources = Sources {
        env: vec![(
            "ANNALS_STORE_POSTGRES_URL".to_owned(),
            PG_URL_WITH_PASSWORD.to_owned(),
        )],
        flags: vec![
            set("store.backend", "postgres"),
            set("store.postgres_url", PG_URL_WITH_PASSWORD),
        ],
        ..Sources::default()
    };
    let config = load(&sources);
    let text = config.render();
    let debug = format!("{config:?} {sources:?}");
    let serialized = toml::to_string(&config).expect("serializes");
    for output in [&text, &debug, &serialized] {
        assert!(!output.contains("hunter2"), "{output}");
    }
    assert!(
        text.contains(&format!(
            "\npostgres_url = \"{PG_URL_REDACTED}\"  # from flag --set\n"
        )),
        "{text}"
    );
    assert!(text.contains("\nbackend = \"postgres\"  # from flag --set\n"));
    assert!(text.contains("\npostgres_schema = \"annals\"\n"), "{text}");
    assert!(text.contains("\npostgres_pool_size = 8\n"), "{text}");
    assert_eq!(
        config.store.postgres_url.as_ref().map(DatabaseUrl::expose),
        Some(PG_URL_WITH_PASSWORD)
    );

    // Loading the rendered file says what to do with the placeholder.
    let error = load_err(&from_file(&file(&text)));
    assert_eq!(error.key(), Some("store.postgres_url"));
    assert!(
        error.to_string().starts_with(
            "store.postgres_url: holds the password placeholder *** that `annals config` prints"
        ),
        "{error}"
    );
    // A URL without a password has nothing to hide, and round-trips.
    let config = load(&flags(&[
        ("store.backend", "postgres"),
        (
            "store.postgres_url",
            "postgres://postgres@127.0.0.1:5432/test",
        ),
    ]));
    assert_eq!(load(&from_file(&file(&config.render()))), config);
}

/// The local PostgreSQL (`ANNALS_TEST_PG_URL`): an unreachable server fails the test with the
/// reason, never skips it.
fn pg_test_url() -> String {
    std::env::var("ANNALS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Drops the schema when the test ends, passed or not.
struct DropSchema(annals::store::PgOptions);

impl Drop for DropSchema {
    fn drop(&mut self) {
        if let Err(e) = annals::store::postgres::drop_schema(&self.0) {
            eprintln!("could not drop the test schema {}: {e}", self.0.schema);
        }
    }
}

#[test]
fn a_postgres_configuration_opens_a_working_runtime() {
    use annals::envelope::EncodedPayload;
    use annals::store::{AppendKind, AppendRequest, PendingEvent, StoreHealth};
    use annals::{CommitMeta, Position, StreamId, Timestamp, Version};

    let schema = format!("annals_t_{}", uuid::Uuid::new_v4().simple());
    let url = pg_test_url();
    let config = load(&flags(&[
        ("store.backend", "postgres"),
        ("store.postgres_url", &url),
        ("store.postgres_schema", &schema),
        ("store.postgres_pool_size", "2"),
        ("runtime.arbiters", "1"),
    ]));
    let options = config.runtime_options();
    let _drop = DropSchema(options.store.postgres().expect("postgres").clone());
    let runtime = annals::Runtime::open(options).unwrap_or_else(|e| {
        panic!(
            "cannot open a runtime on PostgreSQL at {} (set ANNALS_TEST_PG_URL, or start the \
             server): {e}",
            annals::store::postgres::redacted_url(&url)
        )
    });
    assert_eq!(runtime.health(), StoreHealth::Ready);
    assert_eq!(runtime.head_position(), Position(0));

    let stream = StreamId::new("Probe", "p-1").expect("a stream id");
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("an executor");
    let appended = executor
        .block_on(runtime.store().append(AppendRequest {
            stream: stream.clone(),
            expected: Version(0),
            meta: CommitMeta {
                recorded_at: Timestamp::now(),
                command_id: None,
                correlation_id: None,
                causation_id: None,
            },
            command: None,
            kind: AppendKind::Events(vec![PendingEvent {
                event_id: uuid::Uuid::new_v4(),
                event_type: "Probed".into(),
                schema_version: 1,
                payload: EncodedPayload(vec![0xa0]),
            }]),
        }))
        .expect("the append is acknowledged");
    assert_eq!(appended.first_position, Some(Position(1)));
    let events = runtime
        .store()
        .read_stream(&stream, Version(1), None, 10)
        .expect("the stream reads back");
    assert_eq!(events.len(), 1);
    assert_eq!(&*events[0].event_type, "Probed");
    assert_eq!(runtime.head_position(), Position(1));
    executor
        .block_on(runtime.shutdown())
        .expect("the runtime shuts down");

    // Opening again finds what was written: it went to the database, not to a directory.
    let again = annals::Runtime::open(config.runtime_options()).expect("the runtime reopens");
    assert_eq!(again.head_position(), Position(1));
    executor
        .block_on(again.shutdown())
        .expect("the runtime shuts down");
}

#[test]
fn a_wrong_postgres_url_is_a_clear_error_when_opening() {
    // Nothing listens on port 1: refused at once.
    let config = load(&flags(&[
        ("store.backend", "postgres"),
        (
            "store.postgres_url",
            "postgres://annals:hunter2@127.0.0.1:1/none",
        ),
    ]));
    let error = match annals::Runtime::open(config.runtime_options()) {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("connecting to PostgreSQL"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");
}
