//! Crash tests of the journal: `kill -9` the runtime at random moments, reopen the store, and
//! check that every acknowledged command survived exactly once.
//!
//! # Method (after sled's own crash tests)
//! The test binary re-executes itself. [`crash_child`] is a test that returns at once unless
//! `ANNALS_CRASH_CHILD` names a database directory; then it is the **child**: it opens a
//! [`Runtime`] there, registers [`Account`], and runs [`CLIENTS`] concurrent clients that send
//! deposits and withdrawals to [`ACCOUNTS`] accounts, each command with a unique command id.
//! After every acknowledgement — committed (`Ok(Ok(_))`) or rejected (`Ok(Err(_))`) — the client
//! appends one line to an acknowledgement file (opened in append mode, one `write_all` of the
//! whole line, so only the very last line can be torn; the parent ignores an unterminated last
//! line). A line records the command id, the account, the outcome and, for a commit, the
//! version, the first and last position and the event ids (for a rejection, the rejection: the
//! runtime's reply to a rejected command carries no version).
//!
//! The **parent** runs cycles on one directory, so the data accumulates: spawn the child, wait
//! until it has opened the runtime (its first line, `opened`), sleep a random 50–400 ms, send
//! SIGKILL (`Child::kill`), wait for it; one cycle in eight kills instead at a random moment of
//! the child's startup, while it is recovering. Then reopen the store with [`SledStore::open`]
//! (recovery and the full integrity check) and check:
//! - the global log (`read_all`, paged) has positions 1, 2, … without gaps up to
//!   `head_position`, versions contiguous from 1 in every stream, no event id twice, and no
//!   withdrawal larger than the balance it was decided on;
//! - the per-stream reads agree with the log (`stream_head` and paged `read_stream` of every
//!   account: the stream heads and chains that recovery re-derives);
//! - every acknowledged commit is in the log exactly once: at the acknowledged positions and
//!   versions, with the acknowledged event ids, and its command id on no other event;
//! - `command_outcome` returns the acknowledged outcome for every acknowledged command id
//!   (the same events, or `Rejected` with the same rejection, decided at a version whose
//!   balance is the one the rejection reports).
//!
//! Acknowledgements of earlier cycles are checked again after every later kill.
//!
//! In [`Durability::Relaxed`] mode the contract is weaker, and the relaxed test checks exactly
//! that: the recovered log is a gap-free prefix of what the child wrote (no version gap, no
//! partial commit, every acknowledged commit at or below the recovered head present exactly),
//! while acknowledged commands of the last flush interval may be missing — whole, and with
//! their command-id records.
//!
//! This is a *process* crash: the kernel keeps what the process had handed to it, so the test
//! exercises the order of acknowledgements against sled's user-space log buffers (written only
//! by `flush`) and the recovery code. It cannot simulate power loss.
//!
//! # Environment
//! - `ANNALS_CRASH_CYCLES`: kill cycles of the durable test (default 5, for CI).
//! - `ANNALS_CRASH_RELAXED_CYCLES`: kill cycles of the relaxed test (default 3).
//! - `ANNALS_CRASH_SEED`: seed of the kill delays and of the clients' choices (default: from
//!   the clock). Printed, but timing makes a run only roughly repeatable.
//! - Set by the parent for the child only: `ANNALS_CRASH_CHILD` (database directory),
//!   `ANNALS_CRASH_ACKS` (acknowledgement file), `ANNALS_CRASH_MODE` (`durable`/`relaxed`),
//!   `ANNALS_CRASH_CYCLE`.
//!
//! Run by hand, with the figures printed:
//! `ANNALS_CRASH_CYCLES=100 cargo test -p annals-tests --test crash -- --nocapture`.
//! On failure the test keeps its directory (database, acknowledgement files, child output)
//! under the target directory and names it in the panic message.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use annals::codec;
use annals::store::sled::{Durability, SledOptions, SledStore};
use annals::store::{EventStore, StoredOutcome};
use annals::{CommandId, ExecuteOptions, Executed, Position, RecordedEvent, Runtime};
use annals::{RuntimeOptions, StreamId, Version};
use annals_domain::bank::{Account, AccountCommand, AccountEvent, AccountRejection};
use uuid::Uuid;

const ENV_CHILD: &str = "ANNALS_CRASH_CHILD";
const ENV_ACKS: &str = "ANNALS_CRASH_ACKS";
const ENV_MODE: &str = "ANNALS_CRASH_MODE";
const ENV_CYCLE: &str = "ANNALS_CRASH_CYCLE";
const ENV_SEED: &str = "ANNALS_CRASH_SEED";
const ENV_CYCLES: &str = "ANNALS_CRASH_CYCLES";
const ENV_RELAXED_CYCLES: &str = "ANNALS_CRASH_RELAXED_CYCLES";

/// The name libtest gives the child test, for `--exact`.
const CHILD_TEST_NAME: &str = "crash_child";

/// Durable cycles by default: 3–5 s in a debug build on 2 cores (measured; the whole file
/// takes under 10 s).
const CYCLES_DEFAULT: usize = 5;
/// Relaxed cycles by default: enough to see a lost suffix, cheap.
const RELAXED_CYCLES_DEFAULT: usize = 3;
/// Refuse absurd cycle counts rather than run for days.
const CYCLES_MAX: usize = 100_000;

/// Concurrent clients in the child: enough to fill group-commit batches.
const CLIENTS: u64 = 32;
/// Accounts the clients share: few enough that clients often hit the same aggregate, so
/// commits of one stream are in flight together.
const ACCOUNTS: u64 = 200;
/// The child stops on its own after this long of load, in case the parent died without
/// killing it. The parent kills after at most `KILL_DELAY_MS_MAX`, so reaching it is a failure.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
/// Kill delay after the child has opened the runtime (recovery done, clients starting): the
/// low end lands while the clients ramp up, the high end in full load.
const KILL_DELAY_MS_MIN: u64 = 50;
const KILL_DELAY_MS_MAX: u64 = 400;
/// One cycle in this many kills the child at a random moment of its startup instead (before
/// it has opened the runtime): a crash during recovery must be recoverable too.
const EARLY_KILL_ONE_IN: u64 = 8;
/// The startup time assumed for early kills until one has been measured.
const STARTUP_GUESS: Duration = Duration::from_millis(100);
/// How long the parent waits for the child to open the runtime. Opening runs the full
/// integrity check, which grows with the log; far beyond this something is wrong.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the parent looks whether the child has opened the runtime.
const STARTUP_POLL: Duration = Duration::from_millis(2);
/// The relaxed mode's fsync interval.
const RELAXED_FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Page size of the parent's reads.
const PAGE: usize = 1024;
/// Problems listed in a failure message (all are counted).
const PROBLEMS_SHOWN_MAX: usize = 30;
/// Child error lines printed to its stderr (later ones are not printed).
const CHILD_ERRORS_SHOWN_MAX: u32 = 20;

/// The parents run one at a time, so each child has the machine's cores to itself and the
/// kill delays mean the same thing in both tests.
static SERIAL: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------------
// The tests

/// The child: does nothing unless the parent set `ANNALS_CRASH_CHILD`. See the module docs.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(ENV_CHILD) else {
        return;
    };
    let acks = std::env::var_os(ENV_ACKS).expect("the parent sets ANNALS_CRASH_ACKS");
    let mode = std::env::var(ENV_MODE).ok().and_then(|m| Mode::parse(&m));
    let mode = mode.expect("the parent sets ANNALS_CRASH_MODE to durable or relaxed");
    let cycle = env_u64(ENV_CYCLE).expect("the parent sets ANNALS_CRASH_CYCLE");
    let seed = env_u64(ENV_SEED).expect("the parent sets ANNALS_CRASH_SEED");
    run_child(Path::new(&dir), Path::new(&acks), mode, cycle, seed);
}

#[test]
fn durable_journal_keeps_every_acknowledged_command_across_kill_9() {
    let cycles = env_cycles(ENV_CYCLES, CYCLES_DEFAULT);
    let s = run_cycles(Mode::Durable, cycles);
    println!(
        "crash (durable): {} cycles in {:.1?} (child {:.1?}, checks {:.1?}); {} acks checked \
         ({} committed, {} rejected; {} ack checks over all cycles); {} events in the log; \
         the child had opened the runtime in {} of {} cycles (longest startup {:.1?}); recovery \
         removed {} unacknowledged records and re-derived {} commits; {} torn last lines; seed {}",
        s.cycles,
        s.elapsed,
        s.child_time,
        s.check_time,
        s.committed + s.rejected,
        s.committed,
        s.rejected,
        s.ack_checks,
        s.events,
        s.cycles_opened,
        s.cycles,
        s.startup_max,
        s.records_removed,
        s.records_reindexed,
        s.torn_lines,
        s.seed,
    );
    assert!(
        s.committed > 0,
        "the child acknowledged no commit in {cycles} cycles: no progress"
    );
}

#[test]
fn relaxed_journal_loses_at_most_a_whole_suffix_across_kill_9() {
    let cycles = env_cycles(ENV_RELAXED_CYCLES, RELAXED_CYCLES_DEFAULT);
    let s = run_cycles(Mode::Relaxed, cycles);
    println!(
        "crash (relaxed, flush every {:?}): {} cycles in {:.1?}; {} acks kept and checked \
         ({} committed, {} rejected); acknowledged but lost: {} commits, {} rejections; {} events \
         in the log; recovery removed {} records; seed {}",
        RELAXED_FLUSH_INTERVAL,
        s.cycles,
        s.elapsed,
        s.committed + s.rejected,
        s.committed,
        s.rejected,
        s.lost_commits,
        s.lost_rejections,
        s.events,
        s.records_removed,
        s.seed,
    );
    assert!(
        s.committed > 0,
        "the child acknowledged no commit in {cycles} cycles: no progress"
    );
}

// ---------------------------------------------------------------------------------------------
// The child

fn run_child(dir: &Path, acks_path: &Path, mode: Mode, cycle: u64, seed: u64) {
    let store = SledOptions::new(dir).with_durability(mode.durability());
    let runtime =
        Runtime::open(RuntimeOptions::with_store(store)).expect("child: open the runtime");
    runtime
        .register::<Account>()
        .expect("child: register Account");
    let acks = OpenOptions::new()
        .create(true)
        .append(true)
        .open(acks_path)
        .expect("child: open the acknowledgement file");
    let acks = Arc::new(acks);
    append_line(&acks, "opened\n");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("child: start tokio");
    let deadline = Instant::now() + CHILD_LIFETIME;
    tokio.block_on(async {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let rng = Rng::new(seed ^ cycle.wrapping_mul(0x9E37_79B9) ^ (client << 32));
                let ctx = ClientCtx {
                    runtime: runtime.clone(),
                    acks: acks.clone(),
                    cycle,
                    client,
                };
                tokio::spawn(run_client(ctx, rng, deadline))
            })
            .collect();
        for client in clients {
            client.await.expect("child: a client task panicked");
        }
    });
    // Reached only if nobody killed the child: the parent fails the cycle when it sees this.
    eprintln!("child: lifetime of {CHILD_LIFETIME:?} over without being killed");
}

struct ClientCtx {
    runtime: Runtime,
    acks: Arc<File>,
    cycle: u64,
    client: u64,
}

async fn run_client(ctx: ClientCtx, mut rng: Rng, deadline: Instant) {
    let mut errors = 0u32;
    let mut seq = 0u64;
    // Bounded by the deadline; in practice the parent kills the child long before.
    while Instant::now() < deadline {
        seq += 1;
        let account = format!("acct-{}", rng.below(ACCOUNTS));
        // One withdrawal in three, often larger than the balance: rejections are common.
        let command = if rng.below(3) == 0 {
            AccountCommand::Withdraw {
                amount: 1 + rng.below(300),
            }
        } else {
            AccountCommand::Deposit {
                amount: 1 + rng.below(100),
            }
        };
        let command_id = format!("c{}-t{}-{seq}", ctx.cycle, ctx.client);
        let id = CommandId::new(command_id.clone()).expect("a short command id is valid");
        let options = ExecuteOptions::default().with_command_id(id);
        let line = match ctx
            .runtime
            .execute_with::<Account>(&account, command, options)
            .await
        {
            Ok(Ok(executed)) => committed_line(&command_id, &account, &executed),
            Ok(Err(rejection)) => rejected_line(&command_id, &account, &rejection),
            Err(e) => {
                errors += 1;
                if errors <= CHILD_ERRORS_SHOWN_MAX {
                    eprintln!(
                        "child: client {} command {command_id} failed: {e}",
                        ctx.client
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        append_line(&ctx.acks, &line);
    }
}

/// One `write_all` of a whole line on a file opened in append mode: a kill tears at most the
/// line being written, which is then the file's last.
fn append_line(file: &File, line: &str) {
    let mut file = file;
    file.write_all(line.as_bytes())
        .expect("child: append an acknowledgement");
    file.flush().expect("child: flush the acknowledgement file");
}

/// `committed <command id> <account> <version> <first position> <last position> <id,id,…>`
/// (`deduplicated …` instead if the runtime said so, which unique command ids never cause).
fn committed_line(command_id: &str, account: &str, executed: &Executed<AccountEvent>) -> String {
    let kind = if executed.deduplicated {
        "deduplicated"
    } else {
        "committed"
    };
    let first = executed.events.first().map_or(0, |e| e.position.0);
    let last = executed.events.last().map_or(0, |e| e.position.0);
    let mut ids = String::new();
    for (i, event) in executed.events.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        write!(ids, "{sep}{}", event.event_id).expect("writing to a String cannot fail");
    }
    if ids.is_empty() {
        ids.push('-');
    }
    format!(
        "{kind} {command_id} {account} {} {first} {last} {ids}\n",
        executed.version.0
    )
}

/// `rejected <command id> <account> insufficient <balance> <requested>` (or `zero`,
/// `overflow`).
fn rejected_line(command_id: &str, account: &str, rejection: &AccountRejection) -> String {
    let why = match rejection {
        AccountRejection::InsufficientFunds { balance, requested } => {
            format!("insufficient {balance} {requested}")
        }
        AccountRejection::ZeroAmount => "zero".to_string(),
        AccountRejection::Overflow => "overflow".to_string(),
    };
    format!("rejected {command_id} {account} {why}\n")
}

// ---------------------------------------------------------------------------------------------
// The parent

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Durable,
    Relaxed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Durable => "durable",
            Mode::Relaxed => "relaxed",
        }
    }

    fn parse(name: &str) -> Option<Mode> {
        [Mode::Durable, Mode::Relaxed]
            .into_iter()
            .find(|m| m.name() == name)
    }

    fn durability(self) -> Durability {
        match self {
            Mode::Durable => Durability::Durable,
            Mode::Relaxed => Durability::Relaxed {
                flush_interval: RELAXED_FLUSH_INTERVAL,
            },
        }
    }
}

/// The figures a run prints.
#[derive(Debug, Default)]
struct Summary {
    seed: u64,
    cycles: usize,
    /// Cycles in which the child got as far as opening the runtime before the kill.
    cycles_opened: usize,
    /// Distinct acknowledged commands checked (present in the store at the end).
    committed: usize,
    rejected: usize,
    /// Acknowledgements checked, summed over the cycles (old ones are checked again).
    ack_checks: usize,
    /// Relaxed mode: acknowledged, then lost in the crash.
    lost_commits: usize,
    lost_rejections: usize,
    /// Events in the log after the last cycle.
    events: u64,
    records_removed: u64,
    /// Commits whose derived entries recovery re-derived.
    records_reindexed: u64,
    torn_lines: usize,
    /// The longest time the child took to open the runtime (recovery included).
    startup_max: Duration,
    elapsed: Duration,
    child_time: Duration,
    check_time: Duration,
}

fn run_cycles(mode: Mode, cycles: usize) -> Summary {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let started = Instant::now();
    let seed = env_u64(ENV_SEED).unwrap_or_else(clock_seed);
    let mut rng = Rng::new(seed);
    let root = tempfile::Builder::new()
        .prefix(&format!("annals-crash-{}-", mode.name()))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create the test directory");
    let db = root.path().join("db");
    let mut summary = Summary {
        seed,
        ..Summary::default()
    };
    // Acknowledgements known to be in the store: checked again after every later kill.
    let mut kept: Vec<Ack> = Vec::new();
    let mut startup = STARTUP_GUESS;
    for cycle in 0..cycles {
        let kill = if rng.below(EARLY_KILL_ONE_IN) == 0 {
            let startup_ms = u64::try_from(startup.as_millis()).unwrap_or(u64::MAX);
            Kill::AfterSpawn(Duration::from_millis(
                rng.below(startup_ms.saturating_add(1)),
            ))
        } else {
            Kill::AfterOpen(Duration::from_millis(
                KILL_DELAY_MS_MIN + rng.below(KILL_DELAY_MS_MAX - KILL_DELAY_MS_MIN + 1),
            ))
        };
        let child_started = Instant::now();
        let paths = ChildPaths {
            db: &db,
            acks: &root.path().join(format!("acks-{cycle}.log")),
            stderr: &root.path().join(format!("child-{cycle}.stderr")),
        };
        let run = run_and_kill_child(&paths, mode, cycle, rng.next_u64(), kill);
        summary.child_time += child_started.elapsed();
        if let Ok(Some(measured)) = run {
            startup = measured;
            summary.startup_max = summary.startup_max.max(measured);
        }
        let checked_started = Instant::now();
        let result = run.and_then(|_| {
            let file = read_acks(paths.acks)?;
            summary.cycles_opened += usize::from(file.opened);
            summary.torn_lines += usize::from(file.torn);
            check_cycle(&db, mode, &mut kept, file.acks, &mut summary)
        });
        summary.check_time += checked_started.elapsed();
        if let Err(problem) = result {
            let kept_dir = root.keep();
            panic!(
                "{} crash test, cycle {cycle} (kill {kill:?}, seed {seed}): {problem}\n\
                 test directory kept: {}",
                mode.name(),
                kept_dir.display()
            );
        }
        summary.cycles += 1;
    }
    summary.committed = kept
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Committed { .. }))
        .count();
    summary.rejected = kept.len() - summary.committed;
    summary.elapsed = started.elapsed();
    summary
}

/// When the parent kills the child.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// This long after the child has opened the runtime.
    AfterOpen(Duration),
    /// This long after spawning it, whether or not it has opened the runtime yet.
    AfterSpawn(Duration),
}

struct ChildPaths<'a> {
    db: &'a Path,
    acks: &'a Path,
    stderr: &'a Path,
}

/// Spawns the child, kills it with SIGKILL as `kill` says, and waits for it. Returns how long
/// the child took to open the runtime, when the parent waited for that.
fn run_and_kill_child(
    paths: &ChildPaths<'_>,
    mode: Mode,
    cycle: usize,
    seed: u64,
    kill: Kill,
) -> Result<Option<Duration>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test binary: {e}"))?;
    let stderr =
        File::create(paths.stderr).map_err(|e| format!("cannot create child stderr: {e}"))?;
    let spawned = Instant::now();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            CHILD_TEST_NAME,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_CHILD, paths.db)
        .env(ENV_ACKS, paths.acks)
        .env(ENV_MODE, mode.name())
        .env(ENV_CYCLE, cycle.to_string())
        .env(ENV_SEED, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot spawn the child: {e}"))?;
    let exited = |child: &mut std::process::Child| -> Result<(), String> {
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let output = std::fs::read_to_string(paths.stderr).unwrap_or_default();
                Err(format!(
                    "the child exited on its own ({status}) before the kill:\n{output}"
                ))
            }
            Err(e) => Err(format!("cannot poll the child: {e}")),
        }
    };
    let mut startup = None;
    let result = match kill {
        Kill::AfterSpawn(delay) => {
            std::thread::sleep(delay);
            exited(&mut child)
        }
        Kill::AfterOpen(delay) => {
            // The child's first line is "opened", written once the runtime is open.
            let opened = || std::fs::metadata(paths.acks).is_ok_and(|m| m.len() > 0);
            let mut waited = Ok(());
            while !opened() {
                if let Err(e) = exited(&mut child) {
                    waited = Err(e);
                    break;
                }
                if spawned.elapsed() > STARTUP_TIMEOUT {
                    waited = Err(format!(
                        "the child did not open the runtime in {STARTUP_TIMEOUT:?}"
                    ));
                    break;
                }
                std::thread::sleep(STARTUP_POLL);
            }
            if waited.is_ok() {
                startup = Some(spawned.elapsed());
                std::thread::sleep(delay);
                waited = exited(&mut child);
            }
            waited
        }
    };
    // Kill in every case: a child that outlives its test would hold the database lock.
    let killed = child
        .kill()
        .map_err(|e| format!("cannot kill the child: {e}"));
    child
        .wait()
        .map_err(|e| format!("cannot wait for the child: {e}"))?;
    result.and(killed).map(|()| startup)
}

// ---------------------------------------------------------------------------------------------
// Acknowledgement files

#[derive(Debug, Clone, PartialEq)]
struct Ack {
    command_id: String,
    account: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Committed {
        version: u64,
        first: u64,
        last: u64,
        event_ids: Vec<Uuid>,
    },
    Rejected(AccountRejection),
}

struct AckFile {
    /// The child wrote its "opened" line: it got through recovery before the kill.
    opened: bool,
    /// The last line was cut by the kill.
    torn: bool,
    acks: Vec<Ack>,
}

fn read_acks(path: &Path) -> Result<AckFile, String> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let text = String::from_utf8_lossy(&text);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // After the last '\n' comes either nothing or a line the kill cut short.
    let torn = lines.pop().is_some_and(|rest| !rest.is_empty());
    let mut file = AckFile {
        opened: false,
        torn,
        acks: Vec::with_capacity(lines.len()),
    };
    for (n, line) in lines.iter().enumerate() {
        if *line == "opened" {
            file.opened = true;
            continue;
        }
        let ack = parse_ack(line)
            .ok_or_else(|| format!("{} line {}: cannot parse {line:?}", path.display(), n + 1))?;
        file.acks.push(ack);
    }
    Ok(file)
}

fn parse_ack(line: &str) -> Option<Ack> {
    let fields: Vec<&str> = line.split(' ').collect();
    let (kind, command_id, account) = (*fields.first()?, *fields.get(1)?, *fields.get(2)?);
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let outcome = match (kind, fields.len()) {
        ("committed", 7) => Outcome::Committed {
            version: number(3)?,
            first: number(4)?,
            last: number(5)?,
            event_ids: fields[6]
                .split(',')
                .map(|id| Uuid::parse_str(id).ok())
                .collect::<Option<_>>()?,
        },
        ("rejected", 6) if fields[3] == "insufficient" => {
            Outcome::Rejected(AccountRejection::InsufficientFunds {
                balance: number(4)?,
                requested: number(5)?,
            })
        }
        ("rejected", 4) if fields[3] == "zero" => Outcome::Rejected(AccountRejection::ZeroAmount),
        ("rejected", 4) if fields[3] == "overflow" => Outcome::Rejected(AccountRejection::Overflow),
        // "deduplicated" and anything else: unique command ids never deduplicate.
        _ => return None,
    };
    Some(Ack {
        command_id: command_id.to_string(),
        account: account.to_string(),
        outcome,
    })
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Problems found in one check, capped for the message.
#[derive(Default)]
struct Problems {
    shown: Vec<String>,
    total: usize,
}

impl Problems {
    fn add(&mut self, problem: String) {
        self.total += 1;
        if self.shown.len() < PROBLEMS_SHOWN_MAX {
            self.shown.push(problem);
        }
    }

    fn into_result(self) -> Result<(), String> {
        if self.total == 0 {
            return Ok(());
        }
        let mut message = format!("{} problem(s) found:", self.total);
        for p in &self.shown {
            message.push_str("\n  - ");
            message.push_str(p);
        }
        Err(message)
    }
}

/// The global log as the parent read it back.
#[derive(Default)]
struct LogModel {
    /// `events[i]` is at position `i + 1`.
    events: Vec<RecordedEvent>,
    by_event_id: HashMap<Uuid, Position>,
    /// Command id → positions of the events carrying it.
    by_command: HashMap<String, Vec<u64>>,
    streams: HashMap<String, StreamModel>,
}

#[derive(Default)]
struct StreamModel {
    /// Event ids by version (`event_ids[v - 1]`).
    event_ids: Vec<Uuid>,
    /// Balance after each version (`balances[v - 1]`).
    balances: Vec<u64>,
}

impl StreamModel {
    fn balance_at(&self, version: Version) -> Option<u64> {
        match version.0 {
            0 => Some(0),
            v => self.balances.get(usize::try_from(v - 1).ok()?).copied(),
        }
    }
}

impl LogModel {
    fn event_at(&self, position: u64) -> Option<&RecordedEvent> {
        self.events
            .get(usize::try_from(position.checked_sub(1)?).ok()?)
    }
}

fn check_cycle(
    db: &Path,
    mode: Mode,
    kept: &mut Vec<Ack>,
    new: Vec<Ack>,
    summary: &mut Summary,
) -> Result<(), String> {
    let store = SledStore::open(SledOptions::new(db))
        .map_err(|e| format!("reopening the store after the kill failed: {e}"))?;
    let report = store.recovery_report().clone();
    summary.records_removed += report.records_removed;
    summary.records_reindexed += report.records_reindexed;
    let mut problems = Problems::default();
    let log = read_log(&store, &mut problems);
    check_streams(&store, &log, &mut problems);
    let head = store.head_position().0;
    summary.ack_checks += kept.len() + new.len();
    for ack in kept.iter() {
        if check_ack(&store, &log, ack, &mut problems) == Presence::Absent {
            problems.add(format!(
                "acknowledged in an earlier cycle, now lost: {ack:?}"
            ));
        }
    }
    for ack in new {
        match (
            check_ack(&store, &log, &ack, &mut problems),
            mode,
            &ack.outcome,
        ) {
            (Presence::Present, _, _) => kept.push(ack),
            (Presence::Absent, Mode::Relaxed, Outcome::Committed { first, .. })
                if *first > head =>
            {
                summary.lost_commits += 1;
            }
            (Presence::Absent, Mode::Relaxed, Outcome::Rejected(_)) => summary.lost_rejections += 1,
            (Presence::Absent, _, _) => {
                problems.add(format!("acknowledged, lost (log head {head}): {ack:?}"));
            }
        }
    }
    summary.events = log.events.len() as u64;
    let shutdown = store.shutdown();
    drop(store);
    problems.into_result()?;
    shutdown.map_err(|e| format!("shutting the parent's store down failed: {e}"))
}

/// Reads the whole log, page by page, checking positions, versions, event ids and balances.
fn read_log(store: &SledStore, problems: &mut Problems) -> LogModel {
    let mut log = LogModel::default();
    let head = store.head_position();
    let mut next = Position(1);
    // Each page either advances `next` or ends the loop, so this stops after head / PAGE + 1.
    loop {
        let page = match store.read_all(next, PAGE) {
            Ok(page) => page,
            Err(e) => {
                problems.add(format!("read_all from {next} failed: {e}"));
                return log;
            }
        };
        if page.is_empty() {
            break;
        }
        for event in page {
            if event.position != next {
                problems.add(format!(
                    "the log has position {} where {next} was due",
                    event.position
                ));
                return log;
            }
            next = next.next();
            add_event(&mut log, event, problems);
        }
    }
    let last = Position(next.0 - 1);
    if last != head {
        problems.add(format!(
            "read_all ends at position {last}, head_position is {head}"
        ));
    }
    log
}

fn add_event(log: &mut LogModel, event: RecordedEvent, problems: &mut Problems) {
    let position = event.position;
    if let Some(earlier) = log.by_event_id.insert(event.event_id, position) {
        problems.add(format!(
            "event id {} at positions {earlier} and {position}",
            event.event_id
        ));
    }
    if event.stream.aggregate_type() != "Account" {
        problems.add(format!(
            "unexpected stream {} at position {position}",
            event.stream
        ));
    }
    let stream = log
        .streams
        .entry(event.stream.aggregate_id().to_string())
        .or_default();
    let due = Version(stream.event_ids.len() as u64 + 1);
    if event.version != due {
        problems.add(format!(
            "stream {} has version {} at position {position} where {due} was due",
            event.stream, event.version
        ));
    }
    let balance = stream.balances.last().copied().unwrap_or(0);
    let balance = match event.decode::<AccountEvent>().map(|e| e.payload) {
        Ok(AccountEvent::Deposited { amount }) => balance.saturating_add(amount),
        Ok(AccountEvent::Withdrawn { amount }) if amount <= balance => balance - amount,
        Ok(AccountEvent::Withdrawn { amount }) => {
            // A withdrawal is decided on the balance; more than the log's balance means the
            // aggregate saw events that the log no longer has.
            problems.add(format!(
                "{} withdrew {amount} at version {} (position {position}) with a logged balance \
                 of {balance}",
                event.stream, event.version
            ));
            0
        }
        Err(e) => {
            problems.add(format!("event at position {position} does not decode: {e}"));
            balance
        }
    };
    stream.event_ids.push(event.event_id);
    stream.balances.push(balance);
    if let Some(command_id) = &event.meta.command_id {
        log.by_command
            .entry(command_id.as_str().to_string())
            .or_default()
            .push(position.0);
    }
    log.events.push(event);
}

/// Stream reads (heads and chains, re-derived by recovery after a crash) must agree with the
/// log.
fn check_streams(store: &SledStore, log: &LogModel, problems: &mut Problems) {
    for (account, model) in &log.streams {
        let stream = account_stream(account);
        let in_log = Version(model.event_ids.len() as u64);
        match store.stream_head(&stream) {
            Ok(head) if head == in_log => {}
            Ok(head) => problems.add(format!(
                "stream_head({stream}) is {head}, the log has {in_log}"
            )),
            Err(e) => problems.add(format!("stream_head({stream}) failed: {e}")),
        }
        let mut read = Vec::with_capacity(model.event_ids.len());
        let mut from = Version(1);
        // Each page advances `from` or ends the loop.
        loop {
            match store.read_stream(&stream, from, None, PAGE) {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    from = page.last().map_or(from, |e| e.version.next());
                    read.extend(page.iter().map(|e| e.event_id));
                }
                Err(e) => {
                    problems.add(format!("read_stream({stream}) from {from} failed: {e}"));
                    break;
                }
            }
        }
        if read != model.event_ids {
            problems.add(format!(
                "read_stream({stream}) returns {} events that differ from the log's {}",
                read.len(),
                model.event_ids.len()
            ));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// Found as acknowledged (or found wrong, which is reported as a problem).
    Present,
    /// Not in the store at all: no event, no command record.
    Absent,
}

fn check_ack(store: &SledStore, log: &LogModel, ack: &Ack, problems: &mut Problems) -> Presence {
    let id = CommandId::new(ack.command_id.as_str()).expect("the child wrote a valid command id");
    let outcome = match store.command_outcome(&id) {
        Ok(outcome) => outcome,
        Err(e) => {
            problems.add(format!("command_outcome({id}) failed: {e}"));
            return Presence::Present;
        }
    };
    let in_log = log.by_command.get(&ack.command_id);
    match &ack.outcome {
        Outcome::Committed {
            version,
            first,
            last,
            event_ids,
        } => {
            if outcome.is_none() && in_log.is_none() && log.event_at(*first).is_none() {
                return Presence::Absent; // beyond the head: lost whole
            }
            check_commit(log, ack, (*version, *first, *last, event_ids), problems);
            match outcome {
                Some(StoredOutcome::Committed { events, .. }) => {
                    let stored: Vec<_> = events
                        .iter()
                        .map(|e| (e.event_id, e.version.0, e.position.0))
                        .collect();
                    let n = event_ids.len() as u64;
                    let acked: Vec<_> = (0u64..)
                        .zip(event_ids)
                        .map(|(i, event_id)| (*event_id, version + 1 - n + i, first + i))
                        .collect();
                    if stored != acked {
                        problems.add(format!(
                            "command_outcome({id}) has events (id, version, position) {stored:?}, \
                             acknowledged {acked:?}"
                        ));
                    }
                }
                other => problems.add(format!(
                    "command_outcome({id}) is {other:?}, acknowledged as committed: {ack:?}"
                )),
            }
            Presence::Present
        }
        Outcome::Rejected(rejection) => {
            if let Some(positions) = in_log {
                problems.add(format!(
                    "rejected {id} has events at positions {positions:?}"
                ));
            }
            let Some(outcome) = outcome else {
                return Presence::Absent;
            };
            check_rejection(log, ack, rejection, outcome, problems);
            Presence::Present
        }
    }
}

fn check_commit(
    log: &LogModel,
    ack: &Ack,
    (version, first, last, event_ids): (u64, u64, u64, &[Uuid]),
    problems: &mut Problems,
) {
    let n = event_ids.len() as u64;
    if n == 0 || last + 1 != first + n || version < n {
        problems.add(format!("malformed acknowledgement {ack:?}"));
        return;
    }
    let positions: Vec<u64> = (first..=last).collect();
    match log.by_command.get(&ack.command_id) {
        Some(found) if *found == positions => {}
        found => problems.add(format!(
            "{} acknowledged at positions {positions:?}, its command id is on events at {found:?}",
            ack.command_id
        )),
    }
    for (i, event_id) in (0u64..).zip(event_ids) {
        let (position, version) = (first + i, version + 1 - n + i);
        let Some(event) = log.event_at(position) else {
            problems.add(format!(
                "{}: position {position} is missing: {ack:?}",
                ack.command_id
            ));
            continue;
        };
        let command = event.meta.command_id.as_ref().map(CommandId::as_str);
        if event.event_id != *event_id
            || event.version.0 != version
            || event.stream.aggregate_id() != ack.account
            || command != Some(ack.command_id.as_str())
        {
            problems.add(format!(
                "position {position} holds {} v{} id {} (command {command:?}), acknowledged \
                 {} v{version} id {event_id} (command {})",
                event.stream, event.version, event.event_id, ack.account, ack.command_id
            ));
        }
    }
}

fn check_rejection(
    log: &LogModel,
    ack: &Ack,
    rejection: &AccountRejection,
    outcome: StoredOutcome,
    problems: &mut Problems,
) {
    let StoredOutcome::Rejected {
        stream,
        version,
        rejection: encoded,
        ..
    } = outcome
    else {
        problems.add(format!(
            "command_outcome is {outcome:?}, acknowledged {ack:?}"
        ));
        return;
    };
    if stream != account_stream(&ack.account) {
        problems.add(format!(
            "rejection of {} recorded for {stream}",
            ack.command_id
        ));
    }
    match codec::decode_plain::<AccountRejection>(&encoded) {
        Ok(stored) if stored == *rejection => {}
        Ok(stored) => problems.add(format!(
            "{}: stored rejection {stored:?}, acknowledged {rejection:?}",
            ack.command_id
        )),
        Err(e) => problems.add(format!(
            "{}: stored rejection does not decode: {e}",
            ack.command_id
        )),
    }
    // The rejection was decided on the state at `version`: that state must be in the log.
    let at = match log.streams.get(&ack.account) {
        Some(stream) => stream.balance_at(version),
        None => (version == Version(0)).then_some(0),
    };
    match (at, rejection) {
        (None, _) => problems.add(format!(
            "{} was rejected at {} version {version}, beyond the stream's logged head",
            ack.command_id, ack.account
        )),
        (Some(logged), AccountRejection::InsufficientFunds { balance, .. })
            if logged != *balance =>
        {
            problems.add(format!(
                "{} was rejected at {} version {version} for a balance of {balance}, the log's \
                 balance there is {logged}",
                ack.command_id, ack.account
            ));
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn account_stream(account: &str) -> StreamId {
    StreamId::new("Account", account).expect("account ids are valid stream ids")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn env_cycles(name: &str, default: usize) -> usize {
    let cycles = match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    };
    assert!(
        (1..=CYCLES_MAX).contains(&cycles),
        "{name} must be in 1..={CYCLES_MAX}"
    );
    cycles
}

fn clock_seed() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() ^ (u64::from(now.subsec_nanos()) << 20) ^ u64::from(std::process::id())
}

/// splitmix64: small, fast, and good enough to pick accounts, amounts and kill delays.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
