//! Black-box tests of the administrative commands on a data directory — `annals verify`,
//! `annals export`, `annals import`, `annals stats` — running the real binary as a child
//! process.
//!
//! The data directory is filled once per test binary by a real [`Runtime`] with the reference
//! domain registered: customers, orders through the saga (approved, rejected for the credit
//! limit and for an unknown customer, shipped, cancelled after approval so the saga releases
//! its credit), commands with command ids, a correlation id, and commands with command ids
//! that committed no event: refused ones (one whose retry would succeed later) and one accepted
//! without events. Each test works on its own copy of that directory (sled's lock allows one
//! process per directory). The damage tests overwrite records with plain sled, as `runtime.rs`
//! does.

use std::collections::BTreeMap;
use std::io::Write;
use std::num::NonZeroUsize;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use annals::{CommandId, ExecuteError, ExecuteOptions, Position, Runtime, RuntimeOptions, Version};
use annals_domain::customer::{Customer, CustomerCommand, CustomerRejection};
use annals_domain::order::{Order, OrderCommand, OrderRejection, OrderStatus};
use annals_domain::views::{self, CustomerSummary};
use annals_domain::{register, saga, DomainOptions};
use futures::executor::block_on;
use tempfile::TempDir;

const CUSTOMERS: [&str; 3] = ["c-1", "c-2", "c-3"];
const ORDERS: [&str; 5] = ["o-1", "o-2", "o-3", "o-4", "o-5"];
/// The subscribers `register` starts.
const SUBSCRIBERS: [&str; 3] = [
    saga::ORDER_CREDIT_SAGA,
    views::CUSTOMER_SUMMARIES,
    views::VALUABLE_CUSTOMERS,
];
/// The longest the saga and the projections may take to settle.
const SETTLE_MAX: Duration = Duration::from_secs(60);
/// The command id of c-1's creation, retried after an import.
const CREATE_C1: &str = "create-c-1";
/// The command id of a second creation of c-1, refused (`AlreadyExists`).
const CREATE_C1_AGAIN: &str = "again";
/// The command id of a cancellation of o-6 sent before o-6 existed, refused (`UnknownOrder`):
/// once o-6 exists, running it again would succeed.
const CANCEL_O6: &str = "cancel-o-6";
/// The command id of a reservation c-1 already held, accepted without events.
const RESERVE_O1_AGAIN: &str = "reserve-o-1-again";

/// What the domain looks like: every aggregate's version and state, and the summaries view.
#[derive(Debug, Clone, PartialEq)]
struct World {
    customers: Vec<(Version, Customer)>,
    orders: Vec<(Version, Order)>,
    summaries: Vec<Option<CustomerSummary>>,
    head: Position,
}

/// The data directory every test copies, its world and its export.
struct Fixture {
    dir: TempDir,
    world: World,
    /// The position c-1's creation was committed at.
    c1_created_at: Position,
    export: Vec<u8>,
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("not zero")
}

fn open_runtime(dir: &Path) -> Runtime {
    let runtime =
        Runtime::open(RuntimeOptions::new(dir).with_arbiters(nz(2))).expect("the runtime opens");
    // Decided in time whatever the machine's speed; the deadline is not under test here.
    let options = DomainOptions::default().with_decision_timeout(Duration::from_secs(3_600));
    register(&runtime, &options).expect("the domain registers");
    runtime
}

/// Waits until the head stops moving and every subscriber has reached it.
fn settle(runtime: &Runtime) {
    let started = Instant::now();
    let mut last = None;
    loop {
        let head = runtime.head_position();
        let infos = runtime.subscribers();
        let caught_up =
            infos.len() == SUBSCRIBERS.len() && infos.iter().all(|i| i.checkpoint >= head);
        if caught_up && last == Some(head) {
            return;
        }
        last = caught_up.then_some(head);
        assert!(
            started.elapsed() < SETTLE_MAX,
            "not settled after {SETTLE_MAX:?}: head {head}, {infos:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn with_id(id: &str) -> ExecuteOptions {
    ExecuteOptions::default().with_command_id(CommandId::new(id).expect("a valid command id"))
}

fn customer(
    runtime: &Runtime,
    id: &str,
    options: ExecuteOptions,
    name: &str,
    limit: u64,
) -> Position {
    let create = CustomerCommand::CreateCustomer {
        name: name.into(),
        credit_limit: limit,
        currency: None,
    };
    block_on(runtime.execute_with::<Customer>(id, create, options))
        .expect("no technical failure")
        .expect("the customer is created")
        .position
        .expect("an event")
}

fn order(runtime: &Runtime, id: &str, command: OrderCommand) {
    block_on(runtime.execute::<Order>(id, command))
        .expect("no technical failure")
        .expect("the order command is accepted");
}

fn create_order(customer_id: &str, total: u64, currency: Option<&str>) -> OrderCommand {
    OrderCommand::CreateOrder {
        customer_id: customer_id.into(),
        total,
        currency: currency.map(str::to_string),
    }
}

/// Fills a new store in `dir` (amounts are chosen so that no integer in a payload ends in a
/// byte that is an ASCII letter; see `verify_full_decodes_every_payload`). Returns the world
/// and the position of c-1's creation.
fn populate(dir: &Path) -> (World, Position) {
    let runtime = open_runtime(dir);
    let c1_created_at = customer(&runtime, "c-1", with_id(CREATE_C1), "Ada", 10_000);
    customer(&runtime, "c-2", ExecuteOptions::default(), "Grace", 300);
    let traced = with_id("create-c-3").with_correlation_id("import-test");
    customer(&runtime, "c-3", traced, "Émile ✓ \"quoted\"", 0);
    // Rejections with a command id: recorded, but not in the log (the export's outcome lines).
    let again = CustomerCommand::CreateCustomer {
        name: "Ada".into(),
        credit_limit: 1,
        currency: None,
    };
    let rejected =
        block_on(runtime.execute_with::<Customer>("c-1", again, with_id(CREATE_C1_AGAIN)))
            .expect("no technical failure");
    assert_eq!(
        rejected.expect_err("c-1 exists"),
        CustomerRejection::AlreadyExists
    );
    let early = OrderCommand::CancelOrder;
    let rejected = block_on(runtime.execute_with::<Order>("o-6", early, with_id(CANCEL_O6)))
        .expect("no technical failure");
    assert_eq!(
        rejected.expect_err("o-6 does not exist"),
        OrderRejection::UnknownOrder
    );

    order(&runtime, "o-1", create_order("c-1", 5_000, None));
    order(&runtime, "o-2", create_order("c-2", 500, None));
    order(&runtime, "o-3", create_order("c-1", 1_000, Some("EUR")));
    order(&runtime, "o-4", create_order("c-1", 2_000, None));
    order(&runtime, "o-5", create_order("nobody", 150, None));
    settle(&runtime);
    order(&runtime, "o-3", OrderCommand::ShipOrder);
    order(&runtime, "o-4", OrderCommand::CancelOrder);
    settle(&runtime);
    // Accepted without events: c-1 holds o-1's credit already.
    let held = CustomerCommand::ReserveCredit {
        order_id: "o-1".into(),
        amount: 5_000,
        currency: None,
    };
    let accepted =
        block_on(runtime.execute_with::<Customer>("c-1", held, with_id(RESERVE_O1_AGAIN)))
            .expect("no technical failure")
            .expect("accepted");
    assert!(accepted.events.is_empty(), "{accepted:?}");

    let world = world(&runtime);
    let status = |i: usize| world.orders[i].1.status;
    assert_eq!(
        (0..5).map(status).collect::<Vec<_>>(),
        [
            Some(OrderStatus::Approved),
            Some(OrderStatus::Rejected),
            Some(OrderStatus::Shipped),
            Some(OrderStatus::Cancelled),
            Some(OrderStatus::Rejected),
        ],
        "the workload took the paths it is meant to"
    );
    block_on(runtime.shutdown()).expect("shuts down");
    (world, c1_created_at)
}

fn world(runtime: &Runtime) -> World {
    World {
        customers: CUSTOMERS
            .iter()
            .map(|id| {
                let s = runtime
                    .state::<Customer>(id)
                    .expect("reads")
                    .expect("exists");
                (s.version, s.state)
            })
            .collect(),
        orders: ORDERS
            .iter()
            .map(|id| {
                let s = runtime.state::<Order>(id).expect("reads").expect("exists");
                (s.version, s.state)
            })
            .collect(),
        summaries: CUSTOMERS
            .iter()
            .map(|id| views::customer_summary(runtime, id).expect("reads the view"))
            .collect(),
        head: runtime.head_position(),
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (world, c1_created_at) = populate(dir.path());
        let output = annals(&["export", "--data-dir", path(dir.path())], None);
        assert_success(&output);
        Fixture {
            dir,
            world,
            c1_created_at,
            export: output.stdout,
        }
    })
}

/// A copy of the fixture's data directory, for one test to use (and damage).
fn copy_of_fixture() -> TempDir {
    let copy = tempfile::tempdir().expect("a temporary directory");
    copy_dir(fixture().dir.path(), copy.path());
    copy
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("lists the directory") {
        let entry = entry.expect("reads an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("has a type").is_dir() {
            std::fs::create_dir(&target).expect("creates a directory");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copies a file");
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Runs `annals` with `args`, feeding `stdin` (nothing if `None`).
fn annals(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(annals_tests::annals_binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the annals binary starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.unwrap_or_default().to_vec();
    // Written from a thread: the child may fill its stdout pipe before it has read all of it.
    let writer = std::thread::spawn(move || {
        // The child may stop reading early (a bad line): a broken pipe is expected then.
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().expect("the annals binary runs");
    writer.join().expect("the writer thread ends");
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "annals failed with {:?}: {}",
        output.status.code(),
        stderr(output)
    );
}

fn assert_exit(output: &Output, code: i32, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in stderr: {err}");
    }
}

/// Opens a closed store with plain sled, waiting (bounded) while the previous process's lock
/// is still being released.
fn raw_db(dir: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match annals::store::sled::sled_config(dir)
            .expect("the store's sled configuration")
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.expect("sled opens the closed store"),
        }
    }
}

type Trees = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

/// Every key and value of every tree.
fn raw_trees(dir: &Path) -> Trees {
    let db = raw_db(dir);
    let mut trees = BTreeMap::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).expect("opens a tree");
        let entries = tree
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<Vec<_>, _>>()
            .expect("reads a tree");
        trees.insert(name.to_vec(), entries);
    }
    trees
}

/// The log's segments: (first position, bytes), in position order.
fn raw_log(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    raw_trees(dir)
        .remove(b"log".as_slice())
        .expect("a log tree")
        .into_iter()
        .map(|(k, v)| {
            let key: [u8; 8] = k.as_slice().try_into().expect("log keys are 8 bytes");
            (u64::from_be_bytes(key), v)
        })
        .collect()
}

fn overwrite_log_entry(dir: &Path, first_position: u64, bytes: &[u8]) {
    let db = raw_db(dir);
    let log = db.open_tree("log").expect("the log tree");
    log.insert(first_position.to_be_bytes(), bytes)
        .expect("writes the damage");
    db.flush().expect("flushes");
}

fn lines(export: &[u8]) -> Vec<&[u8]> {
    export
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .collect()
}

/// Whether an export line is a command outcome (else an event).
fn is_outcome(line: &[u8]) -> bool {
    let value: serde_json::Value = serde_json::from_slice(line).expect("each line is JSON");
    value.get("kind").is_some_and(|kind| kind == "outcome")
}

/// The event lines of an export.
fn event_lines(export: &[u8]) -> Vec<&[u8]> {
    lines(export)
        .into_iter()
        .filter(|l| !is_outcome(l))
        .collect()
}

/// The command outcome lines of an export, parsed.
fn outcome_lines(export: &[u8]) -> Vec<serde_json::Value> {
    lines(export)
        .into_iter()
        .filter(|l| is_outcome(l))
        .map(|l| serde_json::from_slice(l).expect("JSON"))
        .collect()
}

fn join(lines: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------------

#[test]
fn verify_finds_no_damage_in_a_healthy_store_and_changes_nothing() {
    let dir = copy_of_fixture();
    let head = fixture().world.head;
    let before = raw_trees(dir.path());
    for full in [false, true] {
        let mut args = vec!["verify", "--data-dir", path(dir.path())];
        if full {
            args.push("--full");
        }
        let output = annals(&args, None);
        assert_success(&output);
        let out = stdout(&output);
        assert!(out.contains("no damage found"), "{out}");
        assert!(out.contains(&format!("head position    {head}\n")), "{out}");
        assert!(out.contains(&format!("events checked   {head}\n")), "{out}");
        assert!(out.contains("nothing to re-derive or remove"), "{out}");
        // A projection's checkpoint is stored per generation: `customer-summaries@0`.
        for name in SUBSCRIBERS {
            let at_head = format!(" at position {head}, 0 parked");
            assert!(
                out.lines()
                    .any(|l| l.contains(name) && l.ends_with(&at_head)),
                "{name}: {out}"
            );
        }
        if full {
            assert!(out.contains(&format!("events decoded   {head} ")), "{out}");
            // c-1's creation, c-3's creation, the rejection "again", and the saga's steps.
            assert!(out.contains(" records read (0 dangling"), "{out}");
        }
    }
    assert_eq!(
        raw_trees(dir.path()),
        before,
        "verifying a cleanly closed store writes nothing"
    );
}

#[test]
fn verify_refuses_a_directory_without_a_store_and_creates_nothing() {
    let parent = tempfile::tempdir().expect("a temporary directory");
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).expect("creates a directory");
    let other = parent.path().join("other");
    std::fs::create_dir(&other).expect("creates a directory");
    std::fs::write(other.join("notes.txt"), "not a store").expect("writes a file");
    let missing = parent.path().join("missing");

    for command in ["verify", "export", "stats"] {
        let output = annals(&[command, "--data-dir", path(&empty)], None);
        assert_exit(
            &output,
            2,
            &["holds no Annals store", "nothing was created"],
        );
        assert!(output.stdout.is_empty());
        let output = annals(&[command, "--data-dir", path(&other)], None);
        assert_exit(&output, 2, &["holds no Annals store"]);
        let output = annals(&[command, "--data-dir", path(&missing)], None);
        assert_exit(&output, 2, &["no such directory"]);
    }
    assert_eq!(std::fs::read_dir(&empty).expect("lists").count(), 0);
    assert_eq!(std::fs::read_dir(&other).expect("lists").count(), 1);
    assert!(!missing.exists());
}

#[test]
fn verify_names_the_damaged_log_segment_and_leaves_it_as_it_was() {
    let dir = copy_of_fixture();
    let segments = raw_log(dir.path());
    assert!(segments.len() >= 3, "the workload wrote several batches");
    let (position, _) = segments[1];
    // The format byte of a segment, then junk: its offset table runs past its end.
    overwrite_log_entry(
        dir.path(),
        position,
        &[1, 0xff, 0x00, 0x13, 0x37, 0xde, 0xad],
    );
    let damaged = raw_trees(dir.path());

    let output = annals(&["verify", "--data-dir", path(dir.path())], None);
    assert_exit(
        &output,
        1,
        &["is damaged", &format!("log segment at position {position}")],
    );
    assert!(!stdout(&output).contains("no damage found"));
    assert_eq!(raw_trees(dir.path()), damaged, "verify changed nothing");

    // The other commands refuse it the same way instead of reading past it.
    for command in ["export", "stats"] {
        let output = annals(&[command, "--data-dir", path(dir.path())], None);
        assert_exit(&output, 1, &[&format!("position {position}")]);
    }
}

/// A flipped byte in sled's log file, in a record the store needs: `verify` (like every command
/// that opens the store) says in words what is damaged — a record at a byte offset, or, where
/// sled's recovery took the damage for the end of its log, the acknowledged positions missing
/// — instead of printing sled's `Some(Inline(…)) backtrace ()` or opening a quiet rollback.
#[test]
fn verify_reports_a_flipped_byte_in_the_log_file_as_lost_data_in_words() {
    let dir = copy_of_fixture();
    let file = dir.path().join("db");
    let mut bytes = std::fs::read(&file).expect("reads the log file");
    // Every copy sled keeps of one event (its id's 16 bytes, in a message of the log or a
    // node written later): whichever sled reads, it fails its checksum.
    let lines = event_lines(&fixture().export);
    let line: serde_json::Value =
        serde_json::from_slice(lines[lines.len() / 2]).expect("an export line is JSON");
    let event_id =
        uuid::Uuid::parse_str(line["event_id"].as_str().expect("an event id")).expect("a UUID");
    let needle = event_id.as_bytes();
    let copies: Vec<usize> = (0..bytes.len().saturating_sub(16))
        .filter(|&i| &bytes[i..i + 16] == needle)
        .collect();
    assert!(!copies.is_empty(), "the event is in the log file");
    for at in &copies {
        bytes[at + 8] ^= 0xff;
    }
    std::fs::write(&file, &bytes).expect("writes the damage");
    let output = annals(&["verify", "--data-dir", path(dir.path())], None);
    assert_exit(&output, 1, &["damaged", "restore"]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        !err.contains("Some(") && !err.contains("backtrace"),
        "{err}"
    );
    // The damage stays found: a second run says the same (sled may rewrite its own bookkeeping
    // in the file when it opens it, so the bytes are not compared).
    let again = annals(&["verify", "--data-dir", path(dir.path())], None);
    assert_eq!(again.stderr, output.stderr);
}

/// An event payload damaged inside an intact commit record: the store's own checks (even the
/// full one) see a well-formed record; `verify --full` decodes the payload and names the event.
#[test]
fn verify_full_decodes_every_payload() {
    let dir = copy_of_fixture();
    let export = &fixture().export;
    let lines = event_lines(export);
    let segments = raw_log(dir.path());
    // The last bytes of a segment are the last event's payload (the last field of the last
    // record): pick a segment whose last event's data ends with a text that ends in a letter,
    // so that overwriting the last byte makes that text invalid UTF-8.
    let (first, mut bytes, last_position) = segments
        .iter()
        .enumerate()
        .map(|(i, (first, bytes))| {
            let last = segments
                .get(i + 1)
                .map_or(lines.len() as u64, |(next, _)| next - 1);
            (*first, bytes.clone(), last)
        })
        .find(|(_, _, last)| {
            let line = lines[usize::try_from(*last).expect("small") - 1];
            line.ends_with(b"\"}}") && line[line.len() - 4].is_ascii_alphabetic()
        })
        .expect("a segment ending with a text");
    let end = bytes.len() - 1;
    assert!(bytes[end].is_ascii_alphabetic());
    bytes[end] = 0xff;
    overwrite_log_entry(dir.path(), first, &bytes);

    let output = annals(&["verify", "--data-dir", path(dir.path())], None);
    assert_success(&output);
    let output = annals(&["verify", "--data-dir", path(dir.path()), "--full"], None);
    assert_exit(
        &output,
        1,
        &[
            &format!("the event at position {last_position} ("),
            "does not decode",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// export and import
// ---------------------------------------------------------------------------------------------

#[test]
fn export_writes_one_envelope_per_line_in_position_order() {
    let fixture = fixture();
    let lines = event_lines(&fixture.export);
    assert_eq!(lines.len() as u64, fixture.world.head.0);
    let all = self::lines(&fixture.export);
    assert_eq!(
        &all[..lines.len()],
        &lines[..],
        "the events come first, the command outcomes after them"
    );
    let fields = [
        "event_id",
        "aggregate",
        "id",
        "version",
        "position",
        "type",
        "schema_version",
        "recorded_at",
        "command_id",
        "correlation_id",
        "causation_id",
        "data",
    ];
    let mut fingerprints = 0;
    for (i, line) in lines.iter().enumerate() {
        let event: serde_json::Value = serde_json::from_slice(line).expect("each line is JSON");
        for field in fields {
            assert!(
                event.get(field).is_some(),
                "{field} missing in line {}",
                i + 1
            );
        }
        assert_eq!(event["position"], i as u64 + 1);
        let recorded_at = event["recorded_at"].as_str().expect("a string");
        assert!(
            recorded_at.len() == 27 && recorded_at.ends_with('Z'),
            "RFC 3339 UTC with microseconds: {recorded_at}"
        );
        let has_id = !event["command_id"].is_null();
        assert_eq!(has_id, event.get("command_fingerprint").is_some());
        fingerprints += usize::from(has_id);
        assert_eq!(
            event["type"], event["data"]["type"],
            "the domain's payloads carry their type"
        );
    }
    assert!(
        fingerprints >= 2,
        "c-1, c-3 and the saga's steps carry command ids"
    );
    let first: serde_json::Value = serde_json::from_slice(lines[0]).expect("JSON");
    assert_eq!(first["aggregate"], "Customer");
    assert_eq!(first["id"], "c-1");
    assert_eq!(first["command_id"], CREATE_C1);
    assert_eq!(first["data"]["name"], "Ada");
    assert_eq!(first["data"]["credit_limit"], 10_000);
    let c3 = lines
        .iter()
        .map(|l| serde_json::from_slice::<serde_json::Value>(l).expect("JSON"))
        .find(|e| e["id"] == "c-3")
        .expect("c-3 was created");
    assert_eq!(c3["correlation_id"], "import-test");
    assert_eq!(c3["data"]["name"], "Émile ✓ \"quoted\"");
}

#[test]
fn export_import_export_is_byte_identical_and_the_domain_sees_the_same_states() {
    let fixture = fixture();
    let parent = tempfile::tempdir().expect("a temporary directory");
    let imported = parent.path().join("imported");

    let output = annals(
        &["import", "--data-dir", path(&imported)],
        Some(&fixture.export),
    );
    assert_success(&output);
    let head = fixture.world.head;
    assert!(
        stdout(&output).contains(&format!("imported {head} events")),
        "{}",
        stdout(&output)
    );

    let output = annals(&["export", "--data-dir", path(&imported)], None);
    assert_success(&output);
    assert!(
        output.stdout == fixture.export,
        "the export of the import differs from the original export"
    );
    let output = annals(&["verify", "--data-dir", path(&imported), "--full"], None);
    assert_success(&output);

    // The domain on the imported store: the projections rebuild the views from position 0, and
    // the saga redelivers every step; each step's command id finds the imported commit (its
    // fingerprint was carried), so no event is added.
    let runtime = open_runtime(&imported);
    settle(&runtime);
    assert_eq!(world(&runtime), fixture.world);

    // A retry of an imported command returns its original outcome.
    let create = CustomerCommand::CreateCustomer {
        name: "Ada".into(),
        credit_limit: 10_000,
        currency: None,
    };
    let retried = block_on(runtime.execute_with::<Customer>("c-1", create, with_id(CREATE_C1)))
        .expect("no technical failure")
        .expect("the original outcome");
    assert!(retried.deduplicated);
    assert_eq!(retried.position, Some(fixture.c1_created_at));
    assert_eq!(runtime.head_position(), head);
    block_on(runtime.shutdown()).expect("shuts down");
}

/// The outcome lines: after the events, in command-id order, one per command with a command id
/// that committed no event, the rejection as JSON.
#[test]
fn export_writes_the_outcomes_of_refused_and_eventless_commands_after_the_events() {
    let outcomes = outcome_lines(&fixture().export);
    let ids: Vec<&str> = outcomes
        .iter()
        .map(|o| o["command_id"].as_str().expect("a command id"))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "in command-id order, each once");
    let find = |id: &str| {
        outcomes
            .iter()
            .find(|o| o["command_id"] == id)
            .unwrap_or_else(|| panic!("{id} has an outcome line: {outcomes:#?}"))
    };
    let fields = [
        "kind",
        "command_id",
        "aggregate",
        "id",
        "version",
        "command_fingerprint",
        "outcome",
    ];
    for outcome in &outcomes {
        let object = outcome.as_object().expect("an object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let rejected = outcome["outcome"] == "rejected";
        let mut expected = fields.to_vec();
        if rejected {
            expected.push("rejection");
        }
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected, "{outcome}");
        assert_eq!(
            outcome["command_fingerprint"].as_str().map(str::len),
            Some(32)
        );
    }
    let again = find(CREATE_C1_AGAIN);
    assert_eq!(
        (&again["aggregate"], &again["id"], &again["version"]),
        (&"Customer".into(), &"c-1".into(), &1.into())
    );
    assert_eq!(again["outcome"], "rejected");
    assert_eq!(
        again["rejection"],
        serde_json::json!({"type": "AlreadyExists"})
    );
    let early = find(CANCEL_O6);
    assert_eq!(
        (&early["aggregate"], &early["id"]),
        (&"Order".into(), &"o-6".into())
    );
    assert_eq!(early["version"], 0, "o-6 did not exist");
    assert_eq!(
        early["rejection"],
        serde_json::json!({"type": "UnknownOrder"})
    );
    let held = find(RESERVE_O1_AGAIN);
    assert_eq!(held["outcome"], "no_events");
    assert_eq!(
        (&held["aggregate"], &held["id"]),
        (&"Customer".into(), &"c-1".into())
    );
    // The saga's reservation for o-5, refused (no such customer), is an outcome too.
    assert!(
        outcomes.iter().any(|o| o["aggregate"] == "Customer"
            && o["id"] == "nobody"
            && o["rejection"] == serde_json::json!({"type": "UnknownCustomer"})),
        "{outcomes:#?}"
    );
}

/// The black-box finding: after export and import, a retried idempotent command that had been
/// refused ran again — and succeeded. Now its stored rejection answers the retry; the same id
/// on another aggregate is still another command; a command accepted without events is
/// answered as before.
#[test]
fn after_an_import_a_refused_idempotent_command_is_refused_again_not_executed() {
    let fixture = fixture();
    let parent = tempfile::tempdir().expect("a temporary directory");
    let imported = parent.path().join("imported");
    let output = annals(
        &["import", "--data-dir", path(&imported)],
        Some(&fixture.export),
    );
    assert_success(&output);
    let outcomes = outcome_lines(&fixture.export).len();
    assert!(
        stdout(&output).contains(&format!("and {outcomes} command outcomes")),
        "{}",
        stdout(&output)
    );

    let runtime = open_runtime(&imported);
    settle(&runtime);
    // o-6 exists now, so cancelling it would succeed: the retry must get the stored refusal.
    order(&runtime, "o-6", create_order("c-2", 100, None));
    let retried = block_on(runtime.execute_with::<Order>(
        "o-6",
        OrderCommand::CancelOrder,
        with_id(CANCEL_O6),
    ))
    .expect("no technical failure");
    assert_eq!(
        retried.expect_err("refused as before"),
        OrderRejection::UnknownOrder
    );
    assert_ne!(
        runtime
            .state::<Order>("o-6")
            .expect("reads")
            .expect("exists")
            .state
            .status,
        Some(OrderStatus::Cancelled),
        "the retry was not executed"
    );
    let again = CustomerCommand::CreateCustomer {
        name: "Ada".into(),
        credit_limit: 1,
        currency: None,
    };
    let retried =
        block_on(runtime.execute_with::<Customer>("c-1", again.clone(), with_id(CREATE_C1_AGAIN)))
            .expect("no technical failure");
    assert_eq!(
        retried.expect_err("refused as before"),
        CustomerRejection::AlreadyExists
    );
    // One namespace for all aggregates: the same id on another customer is another command.
    let elsewhere =
        block_on(runtime.execute_with::<Customer>("c-9", again, with_id(CREATE_C1_AGAIN)));
    assert!(
        matches!(&elsewhere, Err(ExecuteError::CommandIdReused(id)) if id.as_str() == CREATE_C1_AGAIN),
        "{elsewhere:?}"
    );
    assert!(runtime.state::<Customer>("c-9").expect("reads").is_none());
    let held = CustomerCommand::ReserveCredit {
        order_id: "o-1".into(),
        amount: 5_000,
        currency: None,
    };
    let retried =
        block_on(runtime.execute_with::<Customer>("c-1", held, with_id(RESERVE_O1_AGAIN)))
            .expect("no technical failure")
            .expect("accepted as before");
    assert!(
        retried.deduplicated && retried.events.is_empty(),
        "{retried:?}"
    );
    block_on(runtime.shutdown()).expect("shuts down");
}

/// An export written before outcome lines existed (events only) imports as it did, and
/// exports back to itself.
#[test]
fn an_export_without_outcome_lines_imports_as_before() {
    let events = join(&event_lines(&fixture().export));
    let parent = tempfile::tempdir().expect("a temporary directory");
    let imported = parent.path().join("imported");
    let output = annals(&["import", "--data-dir", path(&imported)], Some(&events));
    assert_success(&output);
    assert!(
        stdout(&output).contains("and 0 command outcomes"),
        "{}",
        stdout(&output)
    );
    let output = annals(&["export", "--data-dir", path(&imported)], None);
    assert_success(&output);
    assert!(output.stdout == events, "the events, and no outcome");
}

/// Input without fingerprints (not written by `annals export`) imports, but a retry of an
/// imported command can no longer be told from a different command with the same id: it is
/// refused instead of answered with the original outcome.
#[test]
fn without_fingerprints_a_retried_command_is_refused_not_repeated() {
    let fixture = fixture();
    let stripped: Vec<String> = event_lines(&fixture.export)
        .iter()
        .map(|line| {
            let mut event: serde_json::Value = serde_json::from_slice(line).expect("JSON");
            event
                .as_object_mut()
                .expect("an object")
                .remove("command_fingerprint");
            event.to_string()
        })
        .collect();
    let input = join(&stripped.iter().map(String::as_bytes).collect::<Vec<_>>());
    let parent = tempfile::tempdir().expect("a temporary directory");
    let imported = parent.path().join("imported");
    let output = annals(&["import", "--data-dir", path(&imported)], Some(&input));
    assert_success(&output);

    let runtime =
        Runtime::open(RuntimeOptions::new(&imported).with_arbiters(nz(2))).expect("opens");
    runtime.register::<Customer>().expect("registers");
    let create = CustomerCommand::CreateCustomer {
        name: "Ada".into(),
        credit_limit: 10_000,
        currency: None,
    };
    let retried = block_on(runtime.execute_with::<Customer>("c-1", create, with_id(CREATE_C1)));
    assert!(
        matches!(&retried, Err(ExecuteError::CommandIdReused(id)) if id.as_str() == CREATE_C1),
        "{retried:?}"
    );
    assert_eq!(runtime.head_position(), fixture.world.head);
    block_on(runtime.shutdown()).expect("shuts down");
}

#[test]
fn import_refuses_a_target_that_is_not_empty() {
    let fixture = fixture();
    let dir = copy_of_fixture();
    let before = raw_trees(dir.path());
    let output = annals(
        &["import", "--data-dir", path(dir.path())],
        Some(&fixture.export),
    );
    assert_exit(
        &output,
        2,
        &[&format!(
            "already holds an Annals store with {} events",
            fixture.world.head
        )],
    );
    assert_eq!(raw_trees(dir.path()), before, "nothing was written");

    let other = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(other.path().join("notes.txt"), "mine").expect("writes a file");
    let output = annals(
        &["import", "--data-dir", path(other.path())],
        Some(&fixture.export),
    );
    assert_exit(&output, 2, &["is not empty and holds no Annals store"]);
    assert_eq!(std::fs::read_dir(other.path()).expect("lists").count(), 1);

    let file = other.path().join("notes.txt");
    let output = annals(
        &["import", "--data-dir", path(&file)],
        Some(&fixture.export),
    );
    assert_exit(&output, 2, &["is not a directory"]);
}

/// Imports `input` into a new directory, expecting it to stop at `line` with exit 1; checks
/// that exactly the events the error reports were imported, and that they are the input's
/// first ones, as exported.
fn assert_import_stops(input: &[u8], line: usize, needles: &[&str]) {
    let parent = tempfile::tempdir().expect("a temporary directory");
    let target = parent.path().join("target");
    let output = annals(&["import", "--data-dir", path(&target)], Some(input));
    let mut all = vec![format!("line {line}: ")];
    all.extend(needles.iter().map(|n| n.to_string()));
    assert_exit(
        &output,
        1,
        &all.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let err = stderr(&output);

    let exported = annals(&["export", "--data-dir", path(&target)], None);
    assert_success(&exported);
    let imported = lines(&exported.stdout).len();
    let events = event_lines(&exported.stdout).len();
    let outcomes = imported - events;
    assert!(
        imported < line,
        "line {line} and what follows it are not imported"
    );
    if imported == 0 {
        assert!(err.contains("nothing was imported"), "{err}");
    } else {
        assert!(
            err.contains(&format!("imported {events} events"))
                && err.contains(&format!("positions 1 to {events}"))
                && err.contains(&format!("and {outcomes} command outcomes")),
            "the error reports the {events} events and {outcomes} outcomes imported: {err}"
        );
    }
    assert_eq!(
        lines(&exported.stdout),
        lines(input)[..imported],
        "what was imported is the input's beginning"
    );
    // Whole commits only: the imported prefix passes the full check.
    let verified = annals(&["verify", "--data-dir", path(&target), "--full"], None);
    assert_success(&verified);
}

#[test]
fn import_stops_at_a_bad_line_names_it_and_keeps_the_commits_before_it() {
    let export = &fixture().export;
    let all = lines(export);
    assert!(all.len() > 12);
    let text = |i: usize| String::from_utf8(all[i].to_vec()).expect("UTF-8");
    let with = |i: usize, line: &str| {
        let mut changed: Vec<&[u8]> = all.clone();
        changed[i] = line.as_bytes();
        join(&changed)
    };

    // Not JSON at all.
    assert_import_stops(&with(9, "{\"event_id\": nonsense"), 10, &["not valid JSON"]);
    // A missing field.
    let line = text(6);
    let data_at = line.find(",\"data\":").expect("a data field");
    let without_data = format!("{}}}", &line[..data_at]);
    assert_import_stops(&with(6, &without_data), 7, &["missing field `data`"]);
    // A gap in positions: line 5 removed.
    let mut gap = all.clone();
    gap.remove(4);
    assert_import_stops(&join(&gap), 5, &["position 6 where position 5 belongs"]);
    // Lines out of order.
    let mut swapped = all.clone();
    swapped.swap(7, 8);
    assert_import_stops(&join(&swapped), 8, &["position 9 where position 8 belongs"]);
    let mut repeated = all.clone();
    repeated.insert(8, all[6]);
    assert_import_stops(&join(&repeated), 9, &["position 7 comes after position 8"]);
    // A version gap within a stream: the first o-1 event after its creation, one version on.
    let (i, o1) = all
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                i,
                serde_json::from_slice::<serde_json::Value>(l).expect("JSON"),
            )
        })
        .find(|(_, e)| e["id"] == "o-1" && e["version"] == 2)
        .expect("o-1 has a second event");
    let skipped = text(i).replacen("\"version\":2", "\"version\":3", 1);
    assert_import_stops(
        &with(i, &skipped),
        i + 1,
        &["Order/o-1 version 3 does not follow version 1"],
    );
    // A payload marker that does not exist.
    let o1_data = o1["data"].to_string();
    let bad_data = text(i).replace(&o1_data, r#"{"$nope":1}"#);
    assert_import_stops(&with(i, &bad_data), i + 1, &["unknown marker"]);
}

#[test]
fn import_stops_at_a_bad_outcome_line_and_keeps_what_came_before_it() {
    let export = &fixture().export;
    let all = lines(export);
    let events = event_lines(export).len();
    assert!(all.len() >= events + 3, "the fixture has several outcomes");
    let text = |i: usize| String::from_utf8(all[i].to_vec()).expect("UTF-8");
    let with = |i: usize, line: &str| {
        let mut changed: Vec<&[u8]> = all.clone();
        changed[i] = line.as_bytes();
        join(&changed)
    };
    let (first, second) = (events, events + 1);

    // An event after the outcomes.
    let mut late = all.clone();
    late.push(all[events - 1]);
    assert_import_stops(
        &join(&late),
        all.len() + 1,
        &["an event after command outcome lines"],
    );
    // Outcomes out of command-id order (or one twice).
    let mut swapped = all.clone();
    swapped.swap(first, second);
    assert_import_stops(
        &join(&swapped),
        second + 1,
        &["outcome lines are in command-id order"],
    );
    let mut twice = all.clone();
    twice.insert(second, all[first]);
    assert_import_stops(&join(&twice), second + 1, &["each id once"]);
    // An outcome recorded at a version its stream never reached.
    let outcome: serde_json::Value = serde_json::from_slice(all[first]).expect("JSON");
    let version = format!("\"version\":{}", outcome["version"]);
    let beyond = text(first).replacen(&version, "\"version\":99", 1);
    assert_import_stops(
        &with(first, &beyond),
        first + 1,
        &["was recorded at version 99: an outcome follows the events of its stream"],
    );
    // A command id an imported commit uses.
    let id = format!("\"command_id\":{}", outcome["command_id"]);
    let reused = text(first).replacen(&id, &format!("\"command_id\":\"{CREATE_C1}\""), 1);
    assert_import_stops(
        &with(first, &reused),
        first + 1,
        &["is used by an imported commit"],
    );
    // A line of a kind the format does not have.
    let unknown = text(first).replacen("\"kind\":\"outcome\"", "\"kind\":\"snapshot\"", 1);
    assert_import_stops(&with(first, &unknown), first + 1, &["unknown line kind"]);
}

// ---------------------------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------------------------

#[test]
fn stats_counts_events_streams_snapshots_and_subscribers() {
    let fixture = fixture();
    let dir = copy_of_fixture();
    let events: Vec<serde_json::Value> = event_lines(&fixture.export)
        .iter()
        .map(|l| serde_json::from_slice(l).expect("JSON"))
        .collect();
    let count = |ty: &str| events.iter().filter(|e| e["aggregate"] == ty).count() as u64;
    let longest = |ty: &str| {
        events
            .iter()
            .filter(|e| e["aggregate"] == ty)
            .map(|e| e["version"].as_u64().expect("a number"))
            .max()
            .expect("events")
    };
    let head = fixture.world.head.0;

    let output = annals(&["stats", "--data-dir", path(dir.path()), "--json"], None);
    assert_success(&output);
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(stats["head_position"], head);
    assert_eq!(stats["events"], head);
    let aggregates = stats["aggregates"].as_array().expect("a list");
    assert_eq!(aggregates.len(), 2, "{aggregates:?}");
    for (a, ty, streams) in [
        (&aggregates[0], "Customer", 3),
        (&aggregates[1], "Order", 5),
    ] {
        assert_eq!(a["aggregate"], ty);
        assert_eq!(a["streams"], streams);
        assert_eq!(a["events"], count(ty));
        assert_eq!(a["longest_stream_version"], longest(ty));
    }
    let subscribers = stats["subscribers"].as_array().expect("a list");
    // A projection's checkpoint is stored per generation (`customer-summaries@0`).
    let mut names: Vec<&str> = subscribers
        .iter()
        .map(|s| s["name"].as_str().expect("a name"))
        .map(|name| name.split('@').next().unwrap_or(name))
        .collect();
    names.sort_unstable();
    let mut expected = SUBSCRIBERS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for s in subscribers {
        assert_eq!(s["checkpoint"], head);
        assert_eq!(s["behind_head"], 0);
        assert_eq!(s["parked"], 0);
    }
    assert_eq!(
        stats["snapshots"], 0,
        "no aggregate reached the snapshot interval"
    );
    assert!(stats["command_ids"].as_u64().expect("a number") >= 3);
    assert!(stats["disk_bytes"].as_u64().expect("a number") > 0);
    assert_eq!(stats["recovery"]["changed_the_store"], false);
    let trees = stats["trees"].as_array().expect("a list");
    let log = trees
        .iter()
        .find(|t| t["name"] == "log")
        .expect("the log tree");
    assert_eq!(log["journal"], true);
    assert!(
        trees
            .iter()
            .any(|t| t["journal"] == false && t["entries"].as_u64() > Some(0)),
        "the read models' trees are listed: {trees:?}"
    );
    assert_eq!(stats["first_recorded_at"], events[0]["recorded_at"]);
    assert_eq!(
        stats["last_recorded_at"],
        events[events.len() - 1]["recorded_at"]
    );

    let output = annals(&["stats", "--data-dir", path(dir.path())], None);
    assert_success(&output);
    let text = stdout(&output);
    assert!(
        text.contains(&format!("head position    {head}\n")),
        "{text}"
    );
    assert!(text.contains("Customer"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// arguments
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["verify"][..],
        &["export", "--data-dir"],
        &["import"],
        &["stats", "--data-dir", "x", "--bogus"],
        &["verify", "--data-dir", "x", "extra"],
    ] {
        let output = annals(args, None);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).is_empty());
    }
    let output = annals(&["export", "--help"], None);
    assert_success(&output);
    let help = stdout(&output);
    assert!(help.contains("Not exported: snapshots"), "{help}");
}

/// `annals verify` on a store a running process holds: refused as a usage error.
#[test]
fn a_store_in_use_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let runtime = open_runtime(dir.path());
    let output = annals(&["stats", "--data-dir", path(dir.path())], None);
    assert_exit(&output, 2, &["is in use by another process"]);
    block_on(runtime.shutdown()).expect("shuts down");
}

/// An export of the sled fixture — events, then the outcomes of refused and eventless commands
/// — imports into PostgreSQL and exports from there byte for byte the same: both backends list
/// outcomes in the same (command-id) order and restore them at their recorded versions.
#[test]
fn an_export_round_trips_through_postgres_with_its_outcomes() {
    let export = &fixture().export;
    assert!(
        !outcome_lines(export).is_empty(),
        "the fixture has outcome lines"
    );
    let schema = annals_tests::PgSchema::fresh();
    let set = |key: &str, value: &str| format!("{key}={value}");
    let url = set("store.postgres_url", &schema.options.url);
    let name = set("store.postgres_schema", &schema.options.schema);
    let pg = [
        "--set",
        "store.backend=postgres",
        "--set",
        url.as_str(),
        "--set",
        name.as_str(),
    ];
    let import: Vec<&str> = ["import"].iter().chain(pg.iter()).copied().collect();
    let output = annals(&import, Some(export));
    assert!(output.status.success(), "import: {}", stderr(&output));
    let export_args: Vec<&str> = ["export"].iter().chain(pg.iter()).copied().collect();
    let output = annals(&export_args, None);
    assert!(output.status.success(), "export: {}", stderr(&output));
    assert!(
        output.stdout == *export,
        "the PostgreSQL copy exports the same lines ({} outcome lines in, {} out)",
        outcome_lines(export).len(),
        outcome_lines(&output.stdout).len()
    );
}
