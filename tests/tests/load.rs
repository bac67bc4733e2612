//! Black-box tests of `annals load`: the real binary, run as a child process for a second or
//! two, in-process and against an `annals serve` child process, with `--verify` and a JSON
//! report whose fields and arithmetic are checked: `sent = acknowledged + rejected + failed`,
//! percentiles in order, the journal's counts against the acknowledgements, the saga's
//! decisions against its orders, and the verifier's counts against the run's.
//!
//! Every child process has a deadline ([`RUN_DEADLINE`]), so a harness that does not stop by
//! itself fails the test instead of hanging the suite. One test stops the server (SIGSTOP) in
//! the middle of a run and checks that the run still ends, with timeouts counted.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use annals_tests::{annals_binary, ServeProcess};
use serde_json::Value;

/// The longest a single `annals load` may take in these tests (debug build, busy machine).
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// What a run of `annals load` left behind.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// The `--json` report, if one was written.
    report: Option<Value>,
    took: Duration,
}

impl Run {
    /// The report of a run that must have succeeded.
    fn succeeded(&self) -> &Value {
        assert!(
            self.status.success(),
            "annals load failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self.report
            .as_ref()
            .expect("a successful run writes its JSON report")
    }
}

/// Runs `annals load ARGS --quiet --json FILE` with a deadline.
fn load(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let started = Instant::now();
    let mut child = Command::new(annals_binary())
        .arg("load")
        .args(args)
        .arg("--quiet")
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("annals load starts");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for annals load") {
            break status;
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "annals load {args:?} did not stop within {RUN_DEADLINE:?}; stderr: {}",
                read(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let report = std::fs::read(&json)
        .ok()
        .map(|bytes| serde_json::from_slice(&bytes).expect("the report is JSON"));
    Run {
        status,
        stdout: read(&out),
        stderr: read(&err),
        report,
        took: started.elapsed(),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A whole number field (`a.b` for nested ones).
fn num(report: &Value, path: &str) -> u64 {
    path.split('.')
        .try_fold(report, |v, k| v.get(k))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("the report has no whole number `{path}`: {report:#}"))
}

fn float(report: &Value, path: &str) -> f64 {
    path.split('.')
        .try_fold(report, |v, k| v.get(k))
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("the report has no number `{path}`: {report:#}"))
}

/// Checks what every report must satisfy, and returns it.
fn consistent(report: &Value) -> &Value {
    for field in [
        "report_version",
        "target",
        "workload",
        "durability",
        "shape",
        "concurrency",
        "rate",
        "max_outstanding",
        "aggregates",
        "skew",
        "threads",
        "id_prefix",
        "duration_limit_s",
        "commands_limit",
        "elapsed_s",
        "sent",
        "acknowledged",
        "rejected",
        "failed",
        "failed_by_kind",
        "failure_examples",
        "unsent",
        "throughput_per_s",
        "latency_us",
        "journal",
        "setup",
        "saga",
        "verify",
    ] {
        assert!(report.get(field).is_some(), "no `{field}` in {report:#}");
    }
    assert_eq!(num(report, "report_version"), 1);
    let sent = num(report, "sent");
    let answered = num(report, "acknowledged") + num(report, "rejected");
    assert_eq!(
        answered + num(report, "failed"),
        sent,
        "sent = acknowledged + rejected + failed: {report:#}"
    );
    let by_kind: u64 = report["failed_by_kind"]
        .as_object()
        .expect("failed_by_kind is an object")
        .values()
        .map(|v| v.as_u64().expect("counts"))
        .sum();
    assert_eq!(by_kind, num(report, "failed"), "{report:#}");
    assert!(num(report, "acknowledged") > 0, "{report:#}");
    let latency: Vec<u64> = ["p50", "p90", "p99", "p99_9", "max"]
        .iter()
        .map(|p| num(report, &format!("latency_us.{p}")))
        .collect();
    assert!(
        latency.windows(2).all(|w| w[0] <= w[1]) && latency[0] > 0,
        "percentiles in order: {latency:?}"
    );
    assert!(num(report, "latency_us.count") >= answered);
    let elapsed = float(report, "elapsed_s");
    let throughput = float(report, "throughput_per_s");
    assert!(elapsed > 0.0);
    assert!(
        (throughput * elapsed - answered as f64).abs() < 1.0,
        "throughput = answered / elapsed: {report:#}"
    );
    report
}

/// Checks the `verify` object of a verified run.
fn verified(report: &Value) {
    let verify = &report["verify"];
    assert_eq!(verify["ok"], true, "{verify:#}");
    assert_eq!(num(verify, "problems_total"), 0);
    assert!(num(verify, "log_events") >= num(verify, "events"));
    assert!(num(verify, "streams") > 0);
}

#[test]
fn bank_closed_loop_in_process_verifies() {
    let run = load(&[
        "--workload",
        "bank",
        "--aggregates",
        "40",
        "--concurrency",
        "40",
        "--commands",
        "1200",
        "--verify",
    ]);
    let report = consistent(run.succeeded());
    verified(report);
    assert_eq!(report["shape"], "closed");
    assert_eq!(report["durability"], "durable");
    assert_eq!(num(report, "concurrency"), 40);
    // A closed loop bounded by commands sends exactly that many (bank: one per session).
    assert_eq!(num(report, "sent"), 1200);
    assert_eq!(num(report, "failed"), 0, "{report:#}");
    // Every client's third command withdraws more than two deposits hold at first.
    assert!(num(report, "rejected") > 0);
    // In-process, every acknowledged deposit or withdrawal is one event, fsynced.
    assert_eq!(num(report, "journal.events"), num(report, "acknowledged"));
    assert!(num(report, "journal.fsyncs") > 0);
    assert!(float(report, "journal.events_per_fsync") >= 1.0);
    assert_eq!(num(report, "verify.commands"), num(report, "acknowledged"));
    assert_eq!(num(report, "verify.events"), num(report, "acknowledged"));
    assert_eq!(num(report, "verify.streams"), 40);
    assert!(report["saga"].is_null());
    assert!(run.stdout.contains("acknowledged") && run.stdout.contains("p99.9"));
}

#[test]
fn bank_open_loop_with_skew_relaxed_verifies() {
    let run = load(&[
        "--workload",
        "bank",
        "--aggregates",
        "100",
        "--skew",
        "1.1",
        "--rate",
        "600",
        "--duration",
        "1s",
        "--durability",
        "relaxed",
        "--mailbox-capacity",
        "64",
        "--verify",
    ]);
    let report = consistent(run.succeeded());
    verified(report);
    assert_eq!(report["shape"], "open");
    assert_eq!(report["durability"], "relaxed");
    assert!(report["concurrency"].is_null());
    // 600 arrivals are due in one second, each sent or, past the outstanding bound, unsent;
    // a scheduler running late sends them late rather than dropping them.
    let arrivals = num(report, "sent") + num(report, "unsent");
    assert!(
        (599..=601).contains(&arrivals),
        "{arrivals} arrivals: {report:#}"
    );
    assert_eq!(num(report, "verify.commands"), num(report, "acknowledged"));
    // Zipf over 100 accounts: the hottest ones take most commands, so fewer streams than
    // commands are touched.
    assert!(num(report, "verify.streams") < num(report, "acknowledged"));
}

#[test]
fn orders_closed_loop_with_skew_verifies_saga_and_views() {
    let run = load(&[
        "--workload",
        "orders",
        "--aggregates",
        "12",
        "--skew",
        "0.8",
        "--concurrency",
        "8",
        "--duration",
        "1500ms",
        "--verify",
    ]);
    let report = consistent(run.succeeded());
    verified(report);
    assert_eq!(report["workload"], "orders");
    assert_eq!(num(report, "setup.commands"), 12);
    let saga = &report["saga"];
    let orders = num(saga, "orders");
    assert!(orders > 0, "{saga:#}");
    assert_eq!(num(saga, "undecided"), 0, "{saga:#}");
    assert_eq!(num(saga, "approved") + num(saga, "rejected"), orders);
    assert!(num(saga, "shipped") + num(saga, "cancelled") <= num(saga, "approved"));
    assert_eq!(num(saga, "latency_us.count"), orders);
    // Each session sends CreateOrder and, for some approved orders, one follow-up.
    assert_eq!(
        num(report, "sent"),
        orders
            + num(saga, "shipped")
            + num(saga, "cancelled")
            + num(report, "rejected")
            + num(report, "failed")
    );
    assert_eq!(num(report, "verify.orders"), orders);
    assert_eq!(num(report, "verify.customers"), 12);
    // Setup's CreateCustomer commands are verified too.
    assert_eq!(
        num(report, "verify.commands"),
        num(report, "acknowledged") + 12
    );
}

#[test]
fn orders_open_loop_in_process_verifies() {
    let run = load(&[
        "--workload",
        "orders",
        "--aggregates",
        "5",
        "--rate",
        "150",
        "--commands",
        "120",
        "--verify",
    ]);
    let report = consistent(run.succeeded());
    verified(report);
    assert_eq!(report["shape"], "open");
    assert_eq!(num(report, "commands_limit"), 120);
    let saga = &report["saga"];
    assert_eq!(
        num(saga, "orders") + num(report, "unsent"),
        120,
        "every arrival created an order or was counted unsent: {report:#}"
    );
    assert_eq!(num(saga, "undecided"), 0);
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    for (args, says) in [
        (&["--aggregates", "0"][..], "--aggregates"),
        (&["--skew=-2"], "--skew"),
        (&["--target", "https://127.0.0.1:1"], "https"),
        (&["--target", "ftp://x"], "--target"),
        (&["--rate", "10", "--concurrency", "2"], "--concurrency"),
        (&["--duration", "3 fortnights"], "--duration"),
        (&["--workload", "chess"], "chess"),
        (
            &["--target", "http://127.0.0.1:1", "--data-dir", "/tmp"],
            "--data-dir",
        ),
        (&["--json", "/no/such/dir/report.json"], "--json"),
        (&["--commands", "0"], "--commands"),
    ] {
        let run = load(args);
        assert_eq!(
            run.status.code(),
            Some(2),
            "{args:?} exits 2; stderr: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(says),
            "{args:?}: the message names {says:?}: {}",
            run.stderr
        );
        assert!(run.report.is_none(), "{args:?} writes no report");
    }
}

#[test]
fn an_unreachable_server_is_an_error_not_a_hang() {
    let run = load(&["--target", "http://127.0.0.1:9", "--commands", "10"]);
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("not ready"), "{}", run.stderr);
    assert!(run.took < Duration::from_secs(20), "took {:?}", run.took);
}

#[test]
fn bank_and_orders_over_http_verify() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = ServeProcess::start(data.path(), &[], &[]);
    let bank = load(&[
        "--target",
        &server.url,
        "--workload",
        "bank",
        "--aggregates",
        "20",
        "--concurrency",
        "20",
        "--commands",
        "400",
        "--verify",
    ]);
    let report = consistent(bank.succeeded());
    verified(report);
    assert_eq!(report["target"], server.url.as_str());
    assert!(report["durability"].is_null() && report["journal"].is_null());
    assert_eq!(num(report, "sent"), 400);
    assert_eq!(num(report, "verify.commands"), num(report, "acknowledged"));

    // A second run on the same server: its own id prefix keeps it apart from the first.
    let orders = load(&[
        "--target",
        &server.url,
        "--workload",
        "orders",
        "--aggregates",
        "6",
        "--rate",
        "60",
        "--duration",
        "1s",
        "--skew",
        "1",
        "--verify",
    ]);
    let report = consistent(orders.succeeded());
    verified(report);
    let saga = &report["saga"];
    assert!(num(saga, "orders") > 0);
    assert_eq!(num(saga, "undecided"), 0);
    assert_eq!(num(report, "verify.customers"), 6);
    // The verifier read the whole log, the first run's events included.
    assert!(num(report, "verify.log_events") > 400);
    drop(server);
}

#[test]
fn a_run_stops_by_itself_when_the_server_stops_answering() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = ServeProcess::start(data.path(), &[], &[]);
    let pid = server.pid().to_string();
    let url = server.url.clone();
    // A first short run waits until the server has opened its store.
    consistent(load(&["--target", &url, "--commands", "20"]).succeeded());
    // Freeze the server half a second into a two-second run: connections hang unanswered.
    let freezer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let stopped = Command::new("kill").args(["-STOP", &pid]).status();
        assert!(stopped.is_ok_and(|s| s.success()), "SIGSTOP the server");
    });
    let run = load(&[
        "--target",
        &url,
        "--workload",
        "bank",
        "--aggregates",
        "10",
        "--concurrency",
        "10",
        "--duration",
        "2s",
        "--timeout",
        "500ms",
    ]);
    freezer.join().expect("the freezer thread");
    // SIGKILL ends a stopped process too.
    server.kill();
    let report = run.succeeded();
    consistent(report);
    assert!(
        num(report, "failed_by_kind.timeout") > 0,
        "requests to the frozen server time out: {report:#}"
    );
    // Two seconds of run, then at most one timeout of draining (plus start-up slack).
    assert!(run.took < Duration::from_secs(15), "took {:?}", run.took);
    assert!(float(report, "elapsed_s") < 3.5, "{report:#}");
}

#[test]
fn a_data_directory_keeps_its_log_across_runs() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().to_str().expect("a UTF-8 temp path");
    let args = [
        "--data-dir",
        dir,
        "--id-prefix",
        "same-",
        "--aggregates",
        "10",
        "--concurrency",
        "10",
        "--commands",
        "200",
        "--verify",
    ];
    let first = load(&args);
    let first = consistent(first.succeeded());
    verified(first);
    // The same accounts again: their versions go on from the first run's, and the verifier
    // reads both runs' events.
    let second = load(&args);
    let second = consistent(second.succeeded());
    verified(second);
    assert_eq!(
        num(second, "verify.log_events"),
        num(first, "acknowledged") + num(second, "acknowledged")
    );
}
