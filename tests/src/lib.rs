//! Support shared by the black-box tests: where the `annals` binary is, and a running
//! `annals serve` child process on a free port.

use std::path::PathBuf;
use std::process::Command;

/// The path of the `annals` binary of this build.
///
/// `cargo test --workspace` builds it beside the test executables (`target/<profile>/annals`).
/// When it is missing, or older than a source file of the crates it is built from (a
/// `cargo test -p annals-tests` after an edit), it is built with `cargo build -p annals-app`
/// first, once per test process (cargo has released its build lock by the time tests run).
pub fn annals_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> -> target/<profile>/annals
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in target/<profile>/deps");
    let binary = profile_dir.join(format!("annals{}", std::env::consts::EXE_SUFFIX));
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests package is in the workspace");
        let sources = ["app", "runtime", "domain", "config"].map(|dir| root.join(dir));
        let stale = built.is_none_or(|built| sources.iter().any(|dir| newer_than(dir, built)));
        if !stale {
            return;
        }
        let release = profile_dir
            .file_name()
            .is_some_and(|name| name == "release");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args(["build", "-p", "annals-app", "--bin", "annals"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cargo build -p annals-app failed");
    });
    binary
}

/// Whether a file under `dir` (sources and manifests; `target` skipped) changed after `time`.
fn newer_than(dir: &std::path::Path, time: std::time::SystemTime) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            return path.file_name().is_none_or(|n| n != "target") && newer_than(&path, time);
        }
        let relevant = path.extension().is_some_and(|e| e == "rs" || e == "toml");
        relevant
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified > time)
    })
}

/// An `annals serve` child process listening on a free port of 127.0.0.1.
///
/// Its log (stderr) is read by a thread that keeps every line, so a test can look for a
/// message; the address is taken from the "listening" line. Dropping it kills the process.
#[derive(Debug)]
pub struct ServeProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Starts `annals serve --addr 127.0.0.1:0 --data-dir DIR` plus `extra` arguments, with
    /// `env` added to the environment, and waits (up to 60 s) for it to listen.
    pub fn start(data_dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        use std::io::BufRead as _;
        let mut command = Command::new(annals_binary());
        command
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("ANNALS_LOG_FORMAT", "text")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("annals serve starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let kept = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("annals listening on http://") {
                    let _ = tx.send(line.clone());
                }
                kept.lock().expect("log lock").push(line);
            }
        });
        let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!(
                "annals serve did not listen: {:?}",
                log.lock().expect("log lock")
            );
        };
        let start = line.find("http://").expect("the line has the url");
        let url: String = line[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"')
            .collect();
        ServeProcess { child, url, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Sends SIGTERM and waits (up to 60 s) for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("annals serve did not stop after SIGTERM: {:?}", self.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kills the process at once (SIGKILL) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL schema of its own for one test, dropped when it goes out of scope.
///
/// The server is the one at `ANNALS_TEST_PG_URL` (default
/// `postgres://postgres@127.0.0.1:5432/test`, the machine's local PostgreSQL). A server that
/// cannot be reached fails the test with the reason: the PostgreSQL tests never skip silently
/// (`.ci/run` starts the server before the tests).
#[derive(Debug)]
pub struct PgSchema {
    /// Options naming the schema (defaults otherwise).
    pub options: annals::store::PgOptions,
}

/// The URL of the test server.
pub fn pg_test_url() -> String {
    std::env::var("ANNALS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

impl PgSchema {
    /// A new, empty schema (created by the first store opened on it), with a small pool so that
    /// tests running in parallel stay within the server's connection limit.
    pub fn fresh() -> PgSchema {
        let schema = format!("annals_t_{}", uuid::Uuid::new_v4().simple());
        let options = annals::store::PgOptions::new(pg_test_url())
            .with_schema(schema)
            .with_pool_size(std::num::NonZeroUsize::new(3).expect("3 is not zero"));
        PgSchema { options }
    }

    /// Opens a store on the schema, or fails the test saying why (PostgreSQL unreachable).
    pub fn open(&self) -> annals::store::PgStore {
        annals::store::PgStore::open(self.options.clone()).unwrap_or_else(|e| {
            panic!(
                "cannot open a PostgreSQL store at {} (set ANNALS_TEST_PG_URL, or start the \
                 server: .ci/run does): {e}",
                annals::store::postgres::redacted_url(&self.options.url)
            )
        })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Err(e) = annals::store::postgres::drop_schema(&self.options) {
            eprintln!("could not drop test schema {}: {e}", self.options.schema);
        }
    }
}
