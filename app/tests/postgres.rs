//! The service on PostgreSQL, end to end: `annals serve` (in-process, over HTTP: commands,
//! `/readyz`, the pool's gauges in `/metrics`), `annals load --target inproc`, and the
//! administrative commands `verify`, `stats`, `export` and `import` run as the real binary,
//! each choosing the backend with `--set store.backend=postgres --set store.postgres_url=…`.
//! The mistakes a user can make — no URL, a wrong URL, a schema that holds no store, one
//! written by a newer build, `--data-dir` with PostgreSQL — end in one line and an exit code,
//! never a panic.
//!
//! The server is the local PostgreSQL at `ANNALS_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test works in schemas of its own, named
//! after a UUID and dropped at the end. A server that cannot be reached fails the tests with
//! the reason: they never skip silently.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use annals::store::PgOptions;
use annals_app::server::Server;
use annals_config::{Config, Flag, Sources, StoreBackend};
use serde_json::{json, Value};

/// The longest a child `annals` may run.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// The URL of the test server.
fn pg_url() -> String {
    std::env::var("ANNALS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema of its own for one test, dropped when it goes out of scope (passed or not).
struct Schema {
    name: String,
}

impl Schema {
    fn fresh() -> Schema {
        Schema {
            name: format!("annals_t_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The `--set` arguments that put a command on this schema.
    fn set_args(&self) -> Vec<String> {
        [
            "store.backend=postgres".to_owned(),
            format!("store.postgres_url={}", pg_url()),
            format!("store.postgres_schema={}", self.name),
            // Tests run in parallel: stay well within the server's connection limit.
            "store.postgres_pool_size=3".to_owned(),
        ]
        .into_iter()
        .flat_map(|setting| ["--set".to_owned(), setting])
        .collect()
    }

    /// A configuration on this schema, serving on any free port of 127.0.0.1.
    fn config(&self) -> Config {
        let flags = self
            .set_args()
            .chunks(2)
            .filter_map(|pair| {
                pair.get(1)
                    .and_then(|setting| Flag::parse_set(setting).ok())
            })
            .chain([
                Flag::new("server.addr", "127.0.0.1:0", "--addr"),
                Flag::new("server.workers", "2", "--set"),
                Flag::new("runtime.arbiters", "2", "--set"),
            ])
            .collect();
        let sources = Sources {
            flags,
            ..Sources::default()
        };
        Config::load(&sources).unwrap_or_else(|e| panic!("the configuration loads: {e}"))
    }

    /// Whether the schema exists in the database.
    fn exists(&self) -> bool {
        let rows = sql(&format!(
            "SELECT 1 FROM pg_namespace WHERE nspname = '{}'",
            self.name
        ));
        !rows.is_empty()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let options = PgOptions::new(pg_url()).with_schema(self.name.clone());
        if let Err(e) = annals::store::postgres::drop_schema(&options) {
            eprintln!("could not drop the test schema {}: {e}", self.name);
        }
    }
}

/// Runs `statement` on the test server; the rows' first columns as text.
fn sql(statement: &str) -> Vec<String> {
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("an executor");
    executor.block_on(async {
        let (client, connection) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to the test PostgreSQL (set ANNALS_TEST_PG_URL, or start \
                     the server): {e}"
                )
            });
        let connection = tokio::spawn(connection);
        let rows = client
            .simple_query(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        drop(client);
        let _ = connection.await;
        rows.into_iter()
            .filter_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some(row.get(0).unwrap_or_default().to_owned())
                }
                _ => None,
            })
            .collect()
    })
}

/// Runs the `annals` binary with `args` (and `stdin`), without the caller's `ANNALS_*`
/// variables, and waits for it (killed at [`CHILD_DEADLINE`]).
fn annals(args: &[String], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_annals"));
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ANNALS_") {
            command.env_remove(name);
        }
    }
    let mut child = command.spawn().expect("the annals binary starts");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).expect("stdin is written");
    }
    let started = Instant::now();
    while child
        .try_wait()
        .expect("the child can be waited for")
        .is_none()
    {
        if started.elapsed() > CHILD_DEADLINE {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the output is read")
}

fn args(words: &[&str], schema: &Schema) -> Vec<String> {
    words
        .iter()
        .map(|w| (*w).to_owned())
        .chain(schema.set_args())
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_exit(output: &Output, code: i32, needles: &[&str]) {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {stderr}",
        text(&output.stdout)
    );
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    if code != 0 {
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
}

#[actix_rt::test]
async fn serve_runs_on_postgres_with_readiness_and_pool_gauges() {
    let schema = Schema::fresh();
    let config = schema.config();
    assert_eq!(config.store.backend, StoreBackend::Postgres);
    let server = Server::start_ready(config)
        .await
        .unwrap_or_else(|e| panic!("the server starts on PostgreSQL: {e:#}"));
    let client = awc::Client::default();
    let url = server.url();

    let mut reply = client
        .post(format!("{url}/v1/customers/c-1/commands"))
        .send_json(&json!({"type": "CreateCustomer", "name": "Ada", "credit_limit": 100}))
        .await
        .expect("an answer");
    let body: Value = reply.json().await.expect("JSON");
    assert_eq!(reply.status(), 200, "{body}");

    let mut ready = client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .expect("an answer");
    let body: Value = ready.json().await.expect("JSON");
    assert_eq!(ready.status(), 200, "{body}");
    assert_eq!(
        body["disk_free_bytes"],
        Value::Null,
        "no data directory: {body}"
    );
    assert!(body["head_position"].as_u64() >= Some(1), "{body}");

    let mut metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("an answer");
    let text = String::from_utf8_lossy(&metrics.body().await.expect("a body")).into_owned();
    for gauge in [
        "annals_postgres_connections_open ",
        "annals_postgres_connections_free ",
        "annals_postgres_connections_waiting ",
        "annals_postgres_batch_retries_total ",
        "annals_postgres_commit_seconds_sum ",
        "annals_postgres_commit_seconds_max ",
        "annals_postgres_ownership_claims_total ",
    ] {
        assert!(text.contains(gauge), "{gauge} missing:\n{text}");
    }
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} has a value:\n{text}"))
    };
    assert!(
        value("annals_postgres_commit_seconds_count ") >= 1.0,
        "the command's batch was timed:\n{text}"
    );
    assert!(
        value("annals_postgres_subscribers_owned ") >= 1.0,
        "the only node owns the read side:\n{text}"
    );
    server.stop().await.expect("the server stops");

    // The command went to the database: a second server on the schema sees it.
    let server = Server::start_ready(schema.config())
        .await
        .expect("the server starts again");
    let mut state = client
        .get(format!("{}/v1/customers/c-1", server.url()))
        .send()
        .await
        .expect("an answer");
    let body: Value = state.json().await.expect("JSON");
    assert_eq!(state.status(), 200, "{body}");
    server.stop().await.expect("the server stops");
}

#[test]
fn load_then_verify_stats_export_and_import_run_on_postgres() {
    let source = Schema::fresh();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let report_path = dir.path().join("report.json");
    let report_arg = report_path.display().to_string();
    let output = annals(
        &args(
            &[
                "load",
                "--workload",
                "bank",
                "--aggregates",
                "8",
                "--concurrency",
                "4",
                "--commands",
                "120",
                "--verify",
                "--quiet",
                "--json",
                &report_arg,
            ],
            &source,
        ),
        None,
    );
    assert_exit(&output, 0, &[]);
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("the report is written"))
            .expect("a JSON report");
    assert_eq!(report["store"], "postgres", "{report}");
    assert_eq!(report["durability"], "durable", "{report}");
    assert_eq!(report["verify"]["ok"], true, "{report}");
    assert!(report["acknowledged"].as_u64() > Some(0), "{report}");
    assert!(text(&output.stdout).contains("inproc (postgres, durable)"));

    let output = annals(&args(&["verify", "--full"], &source), None);
    assert_exit(&output, 0, &[]);
    let stdout = text(&output.stdout);
    assert!(
        stdout.starts_with(&format!("PostgreSQL schema {} at ", source.name)),
        "{stdout}"
    );
    assert!(stdout.contains("no damage found"), "{stdout}");

    let output = annals(&args(&["stats", "--json"], &source), None);
    assert_exit(&output, 0, &[]);
    let stats: Value = serde_json::from_slice(&output.stdout).expect("JSON stats");
    assert_eq!(stats["backend"], "postgres");
    assert!(stats.get("data_dir").is_none(), "{stats}");
    let events = stats["events"].as_u64().expect("a count");
    assert!(events > 0);
    assert_eq!(stats["head_position"].as_u64(), Some(events));
    assert_eq!(stats["aggregates"][0]["aggregate"], "Account", "{stats}");

    let output = annals(&args(&["export"], &source), None);
    assert_exit(&output, 0, &["command outcomes without events"]);
    let export = output.stdout;
    let lines: Vec<&[u8]> = export
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let outcome_lines = lines
        .iter()
        .filter(|l| text(l).contains("\"kind\":\"outcome\""))
        .count() as u64;
    assert_eq!(
        lines.len() as u64 - outcome_lines,
        events,
        "one line per event, then the outcomes"
    );

    // Into another schema, and out again: the same lines.
    let copy = Schema::fresh();
    let output = annals(&args(&["import"], &copy), Some(&export));
    assert_exit(&output, 0, &[]);
    assert!(
        text(&output.stdout).contains(&format!("imported {events} events")),
        "{}",
        text(&output.stdout)
    );
    let output = annals(&args(&["export"], &copy), None);
    assert_exit(&output, 0, &[]);
    assert!(output.stdout == export, "the copy exports the same lines");

    // A schema with events is no import target.
    let output = annals(&args(&["import"], &copy), Some(&export));
    assert_exit(&output, 2, &["already holds an Annals store"]);
}

#[test]
fn a_missing_schema_is_refused_and_not_created() {
    let missing = Schema::fresh();
    for command in ["verify", "export", "stats"] {
        let output = annals(&args(&[command], &missing), None);
        assert_exit(
            &output,
            2,
            &["holds no Annals store", "nothing was created"],
        );
    }
    assert!(!missing.exists(), "the schema was created");
}

#[test]
fn configuration_mistakes_are_one_line_and_exit_2() {
    let schema = Schema::fresh();
    let set = |setting: &str| vec!["--set".to_owned(), setting.to_owned()];

    let no_url = [vec!["verify".to_owned()], set("store.backend=postgres")].concat();
    assert_exit(
        &annals(&no_url, None),
        2,
        &["store.backend = \"postgres\"", "needs store.postgres_url"],
    );

    let with_dir = args(&["stats", "--data-dir", "/tmp"], &schema);
    assert_exit(
        &annals(&with_dir, None),
        2,
        &["--data-dir names a sled store"],
    );

    let bad_schema = [
        vec!["verify".to_owned()],
        set("store.backend=postgres"),
        set(&format!("store.postgres_url={}", pg_url())),
        set("store.postgres_schema=Bad-Name"),
    ]
    .concat();
    assert_exit(
        &annals(&bad_schema, None),
        2,
        &["store.postgres_schema: \"Bad-Name\" is not a usable schema name"],
    );

    // The sled backend still wants its directory named.
    let no_dir = vec!["verify".to_owned()];
    assert_exit(&annals(&no_dir, None), 2, &["name the data directory"]);

    let load = [
        vec![
            "load".to_owned(),
            "--commands".to_owned(),
            "1".to_owned(),
            "--durability".to_owned(),
            "relaxed".to_owned(),
        ],
        schema.set_args(),
    ]
    .concat();
    assert_exit(
        &annals(&load, None),
        2,
        &["--durability applies to the sled store"],
    );
    assert!(!schema.exists(), "nothing was opened");
}

#[test]
fn an_unreachable_database_is_one_line_and_exit_1() {
    let refused = [
        "--set",
        "store.backend=postgres",
        "--set",
        // Nothing listens on port 1.
        "store.postgres_url=postgres://annals:hunter2@127.0.0.1:1/none",
    ];
    for command in [&["verify"][..], &["stats"], &["load", "--commands", "1"]] {
        let words: Vec<String> = command
            .iter()
            .chain(refused.iter())
            .map(|w| (*w).to_owned())
            .collect();
        let output = annals(&words, None);
        assert_exit(&output, 1, &["127.0.0.1:1"]);
        let stderr = text(&output.stderr);
        assert!(!stderr.contains("hunter2"), "{stderr}");
        assert!(stderr.contains("annals:***@"), "{stderr}");
    }
}

#[test]
fn a_schema_of_a_newer_build_is_refused_untouched() {
    let schema = Schema::fresh();
    // A store on the schema, then a layout version this build does not know.
    let output = annals(
        &args(
            &[
                "load",
                "--commands",
                "5",
                "--aggregates",
                "2",
                "--concurrency",
                "2",
                "--quiet",
            ],
            &schema,
        ),
        None,
    );
    assert_exit(&output, 0, &[]);
    sql(&format!(
        "INSERT INTO \"{}\".annals_schema (version) VALUES (999)",
        schema.name
    ));

    let output = annals(&args(&["verify"], &schema), None);
    assert_exit(&output, 1, &["incompatible store", "newer than this build"]);

    // `annals serve` opens the store in the background and exits 1 once it cannot; its log
    // goes to stderr too, and the last line is the error.
    let serve = args(&["serve", "--addr", "127.0.0.1:0"], &schema);
    let output = annals(&serve, None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("annals: cannot open the store (PostgreSQL schema ")
            && last.contains("newer than this build"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let versions = sql(&format!(
        "SELECT max(version)::text FROM \"{}\".annals_schema",
        schema.name
    ));
    assert_eq!(versions, ["999"], "left untouched");
}
