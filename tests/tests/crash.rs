//! Crash tests of the journal and of the subscribers: `kill -9` the runtime at random moments,
//! reopen the store, and check that every acknowledged command survived exactly once — and,
//! with a projection and process managers running, that after a restart each read model equals
//! its rebuild from the log, no process-manager step was applied twice or lost, and deadlines
//! still fire.
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
//! # Projection and process managers (the subscribers test)
//! The third test runs the durable cycles with the subscribers of [`register_subscribers`]
//! registered in the child after its clients start: in half the cycles 0–60 ms before the kill
//! (so that they catch up on a backlog in full pages and are killed in the middle of one), in
//! the others 0–150 ms after the start (killed in live work):
//! - the projection `accounts` keeps, in [`View`]s, each account's balance and movement count
//!   and one record of totals that every event updates;
//! - the process manager `mirror` reacts to each deposit on a client account whose id ends in
//!   `7`: the account's n-th such deposit sends a deposit of n (the process state) to
//!   `mirror-<account>` and, if the deposit was larger than [`ECHO_ABOVE`], a second command
//!   (index 1) depositing the same amount to `echo-<account>`;
//! - the process manager `deadline` reacts to each deposit on a client account whose id ends in
//!   `3`: the n-th schedules a deposit of n to `deadline-<account>`, due 100–300 ms after the
//!   trigger was recorded.
//!
//! Only the clients' accounts trigger anything, so the work is finite once the child is dead.
//! After each kill the parent runs the store checks above. Every other cycle (never the last)
//! it stops there, leaving the subscribers' unfinished work to the next child, whose
//! subscribers then catch up in full pages while its clients write, and are killed doing so.
//! Otherwise the parent starts a [`Runtime`] on the same store, registers the same
//! subscribers, and polls (bounded) until every subscriber has processed the whole log, no
//! expected command can still come (all are applied, or only deadlines long past due are
//! missing), and the log has not grown for three deadline ticks. Then, from a model computed
//! from scratch over the whole log (`read_all`):
//! - every view equals the model: same keys, same values;
//! - every command a trigger calls for — id `pm:{manager}:{trigger event id}:{index}` — is on
//!   exactly one event: on the planned account, with the planned amount (so the process state
//!   advanced exactly once per trigger), with the trigger's event id as causation id, and for a
//!   deadline recorded no earlier than it was due; no other event carries a process manager's
//!   command id, and no target account has two events with one causation id;
//! - `wait_for` of every subscriber returns at once for the head; no subscriber failed or parked
//!   an event; no deadline is left scheduled (white-box: the state store's `deadlines` space).
//!
//! Then it shuts the runtime down cleanly before the next child starts.
//!
//! A fourth test runs the same cycles with process managers that answer
//! [`Interrupted`] ("not now") to one trigger in four the first time they see it, so that
//! pages are often cut short between handling events and sending their commands.
//!
//! This is a *process* crash: the kernel keeps what the process had handed to it, so the test
//! exercises the order of acknowledgements against sled's user-space log buffers (written only
//! by `flush`) and the recovery code. It cannot simulate power loss.
//!
//! # Environment
//! - `ANNALS_CRASH_CYCLES`: kill cycles of the durable test (default 5, for CI).
//! - `ANNALS_CRASH_RELAXED_CYCLES`: kill cycles of the relaxed test (default 3).
//! - `ANNALS_CRASH_PM_CYCLES`: kill cycles of each subscribers test (default 5).
//! - `ANNALS_CRASH_SEED`: seed of the kill delays and of the clients' choices (default: from
//!   the clock). Printed, but timing makes a run only roughly repeatable.
//! - Set by the parent for the child only: `ANNALS_CRASH_CHILD` (database directory),
//!   `ANNALS_CRASH_ACKS` (acknowledgement file), `ANNALS_CRASH_MODE`
//!   (`durable`/`relaxed`/`subscribers`/`subscribers-interrupting`), `ANNALS_CRASH_CYCLE`,
//!   `ANNALS_CRASH_KILL_MS` (when the parent will kill it, in ms after `opened`; unset for a
//!   kill during startup).
//!
//! Run by hand, with the figures printed:
//! `ANNALS_CRASH_CYCLES=100 cargo test -p annals-tests --test crash -- --nocapture`, or
//! `ANNALS_CRASH_PM_CYCLES=30 cargo test -p annals-tests --test crash process -- --nocapture`
//! for the two subscribers tests alone.
//! On failure the test keeps its directory (database, acknowledgement files, child output)
//! under the target directory and names it in the panic message.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::ops::Bound;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use annals::codec;
use annals::store::sled::{Durability, SledOptions, SledStore};
use annals::store::{EventStore, StateStore, StoredOutcome};
use annals::subscription::DEADLINE_TICK;
use annals::{Action, HandlerError, Interrupted, ProcessManager, Projection, SubscribeError};
use annals::{CommandId, ExecuteOptions, Executed, Position, RecordedEvent, Runtime};
use annals::{RuntimeOptions, StreamId, Timestamp, Version};
use annals::{SubscriberOptions, SubscriberStatus, View, ViewError, ViewSet};
use annals_domain::bank::{Account, AccountCommand, AccountEvent, AccountRejection};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const ENV_CHILD: &str = "ANNALS_CRASH_CHILD";
const ENV_ACKS: &str = "ANNALS_CRASH_ACKS";
const ENV_MODE: &str = "ANNALS_CRASH_MODE";
const ENV_CYCLE: &str = "ANNALS_CRASH_CYCLE";
const ENV_SEED: &str = "ANNALS_CRASH_SEED";
const ENV_CYCLES: &str = "ANNALS_CRASH_CYCLES";
const ENV_RELAXED_CYCLES: &str = "ANNALS_CRASH_RELAXED_CYCLES";
const ENV_SUBSCRIBER_CYCLES: &str = "ANNALS_CRASH_PM_CYCLES";
const ENV_POWER_CYCLES: &str = "ANNALS_POWER_CUT_CYCLES";
const ENV_TORN_CYCLES: &str = "ANNALS_POWER_CUT_TORN_CYCLES";
const ENV_KILL_MS: &str = "ANNALS_CRASH_KILL_MS";

/// The name libtest gives the child test, for `--exact`.
const CHILD_TEST_NAME: &str = "crash_child";

/// Durable cycles by default: 3–5 s in a debug build on 2 cores (measured; the whole file,
/// subscribers tests included, takes about 15 s).
const CYCLES_DEFAULT: usize = 5;
/// Relaxed cycles by default: enough to see a lost suffix, cheap.
const RELAXED_CYCLES_DEFAULT: usize = 3;
/// Subscriber cycles by default: about 0.8 s each in a debug build on 2 cores (measured), as each
/// also waits for the restarted subscribers to finish their work.
const SUBSCRIBER_CYCLES_DEFAULT: usize = 5;
/// Power-cut cycles by default (each also cuts and remounts the filesystem twice).
const POWER_CYCLES_DEFAULT: usize = 5;
/// Torn power-cut cycles by default.
const TORN_CYCLES_DEFAULT: usize = 3;
/// The chance that a page written since its file's last fsync still reaches the disk at a torn
/// cut: writeback in arbitrary order, cut short.
const TORN_PAGE_CHANCE: f64 = 0.5;
/// The projection of big records the child runs in the power-cut modes.
const LEDGER: &str = "ledger";
/// Bytes of one ledger record: a sled leaf holding a few of them is larger than a quarter of
/// sled's segment, so sled writes it to a blob file of its own, which must be synced too.
const LEDGER_RECORD_BYTES: usize = 160 * 1024;
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
    let kill_ms = env_u64(ENV_KILL_MS);
    run_child(
        Path::new(&dir),
        Path::new(&acks),
        mode,
        cycle,
        seed,
        kill_ms,
    );
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

#[test]
fn projections_and_process_managers_recover_exactly_once_across_kill_9() {
    let cycles = env_cycles(ENV_SUBSCRIBER_CYCLES, SUBSCRIBER_CYCLES_DEFAULT);
    let mode = Mode::Subscribers(Reactions::Plain);
    let s = run_cycles(mode, cycles);
    print_subscribers_summary(mode, &s);
    assert!(
        s.subscribers.mirror_commands > 0 && s.subscribers.deadlines > 0,
        "no process-manager trigger in {cycles} cycles: the test checked nothing"
    );
}

/// Regression test: the same cycles, with process managers that answer [`Interrupted`] ("not
/// now") the first time they see one trigger in [`INTERRUPT_ONE_IN`]. Before dd1c57b, an
/// interruption saved the checkpoint past the page's earlier events before `flush` had sent
/// their commands, and a kill before the next page's flush lost those steps (every run lost
/// some at its first or second full check).
#[test]
fn process_manager_interrupted_mid_page_loses_no_step_across_kill_9() {
    let cycles = env_cycles(ENV_SUBSCRIBER_CYCLES, SUBSCRIBER_CYCLES_DEFAULT);
    let mode = Mode::Subscribers(Reactions::Interrupting);
    let s = run_cycles(mode, cycles);
    print_subscribers_summary(mode, &s);
    assert!(
        s.subscribers.mirror_commands > 0 && s.subscribers.deadlines > 0,
        "no process-manager trigger in {cycles} cycles: the test checked nothing"
    );
}

/// The durable cycles with the database on `cutfs`, a filesystem that forgets whatever was not
/// synced: the parent freezes the filesystem and kills the child at the same instant (a power
/// cut), keeps only what was fsynced, remounts that, and checks every acknowledgement. This is
/// the test a kill -9 cannot be: the page cache survives a process crash, not a power cut.
#[test]
fn durable_journal_keeps_every_acknowledged_command_across_power_cuts() {
    let cycles = env_cycles(ENV_POWER_CYCLES, POWER_CYCLES_DEFAULT);
    // With CI's few cycles, every cut can land just after a sync, when nothing is unsynced
    // (seen once in CI: 5 cuts, 0 pages dropped). Such a run checked acknowledgements but not
    // a lost write, so another run follows, up to POWER_CUT_RUNS_MAX, each checking everything
    // again; only if none of them dropped anything does the test fail.
    for run in 1..=POWER_CUT_RUNS_MAX {
        let s = run_cycles(Mode::PowerCut(Cut::Strict), cycles);
        print_power_summary(Mode::PowerCut(Cut::Strict), &s);
        if s.committed > 0 && s.power.pages_dropped > 0 {
            return;
        }
        println!("crash (power-cut): run {run} dropped nothing unsynced; running again");
    }
    panic!(
        "no acknowledged commit, or nothing unsynced to drop, in {POWER_CUT_RUNS_MAX} runs of \
         {cycles} cycles: the test checked nothing"
    );
}

/// Most runs of the strict power-cut cycles before a run that cut nothing unsynced fails the
/// test (see `durable_journal_keeps_every_acknowledged_command_across_power_cuts`).
const POWER_CUT_RUNS_MAX: u32 = 4;

/// The same with torn cuts: each page written since its file's last fsync survives or not, at
/// random — writeback in arbitrary order, stopped by the cut.
#[test]
fn durable_journal_keeps_every_acknowledged_command_across_torn_power_cuts() {
    let cycles = env_cycles(ENV_TORN_CYCLES, TORN_CYCLES_DEFAULT);
    let s = run_cycles(Mode::PowerCut(Cut::Torn), cycles);
    print_power_summary(Mode::PowerCut(Cut::Torn), &s);
    assert!(
        s.committed > 0,
        "the child acknowledged no commit in {cycles} cycles: no progress"
    );
}

fn print_power_summary(mode: Mode, s: &Summary) {
    let p = &s.power;
    println!(
        "crash ({}): {} cycles in {:.1?} (child {:.1?}, checks {:.1?}); {} acks checked ({} \
         committed, {} rejected; {} ack checks over all cycles), all present; {} events in the \
         log; {} cuts dropped {} unsynced pages, {} files and {} directory entries (and \
         restored {}); {} database trees read in full after the last cut; the child had opened \
         the runtime in {} of {} cycles; recovery removed {} records and re-derived {} commits; \
         seed {}",
        mode.name(),
        s.cycles,
        s.elapsed,
        s.child_time,
        s.check_time,
        s.committed + s.rejected,
        s.committed,
        s.rejected,
        s.ack_checks,
        s.events,
        p.cuts,
        p.pages_dropped,
        p.files_lost,
        p.entries_dropped,
        p.entries_restored,
        p.trees_read,
        s.cycles_opened,
        s.cycles,
        s.records_removed,
        s.records_reindexed,
        s.seed,
    );
}

fn print_subscribers_summary(mode: Mode, s: &Summary) {
    let f = &s.subscribers;
    println!(
        "crash ({}): {} cycles in {:.1?} (child {:.1?}, checks {:.1?}, of which waiting for the \
         subscribers {:.1?}, longest {:.1?}); {} events in the log; {} acks checked; {} cycles \
         left the subscribers' work to the next child; after the other restarts the \
         subscribers had {} events to catch up or redeliver, among them {} events the \
         projection had applied and {} triggers whose commands the process managers had sent \
         before the kill; views equal to a rebuild: {} records in the last cycle; {} mirror \
         triggers -> {} mirror commands, {} deadlines, each applied exactly once ({} command \
         checks over all cycles); applied by the restarted runtime: {} mirror commands and {} \
         deadlines ({} of them overdue at the restart, firing late); seed {}",
        mode.name(),
        s.cycles,
        s.elapsed,
        s.child_time,
        s.check_time,
        f.wait_time,
        f.wait_max,
        s.events,
        s.committed + s.rejected,
        f.cycles_left_work,
        f.backlog_events,
        f.projection_redelivered,
        f.steps_redelivered,
        f.view_records,
        f.mirror_triggers,
        f.mirror_commands,
        f.deadlines,
        f.command_checks,
        f.mirror_after_restart,
        f.deadlines_after_restart,
        f.deadlines_overdue,
        s.seed,
    );
}

// ---------------------------------------------------------------------------------------------
// The child

/// `kill_ms`: when the parent will kill the child (ms after `opened`), if it said.
fn run_child(
    dir: &Path,
    acks_path: &Path,
    mode: Mode,
    cycle: u64,
    seed: u64,
    kill_ms: Option<u64>,
) {
    let store = SledOptions::new(dir).with_durability(mode.durability());
    let runtime =
        Runtime::open(RuntimeOptions::with_store(store)).expect("child: open the runtime");
    runtime
        .register::<Account>()
        .expect("child: register Account");
    if let Mode::PowerCut(_) = mode {
        runtime
            .project(LEDGER, SubscriberOptions::default(), |views| {
                Ok(Ledger {
                    records: views.view("records")?,
                })
            })
            .expect("child: register the ledger");
    }
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
        if let Mode::Subscribers(reactions) = mode {
            let delay_ms = subscribers_delay_ms(Rng::new(seed ^ cycle), kill_ms);
            let runtime = runtime.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                if let Err(e) = register_subscribers(&runtime, reactions) {
                    // A panic would end only this task; exiting fails the cycle in the parent.
                    eprintln!("child: cannot register the subscribers: {e}");
                    std::process::exit(1);
                }
            });
        }
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
// The subscribers of the third test: one projection, two process managers

/// The projection: balance and movements per account, totals over the whole log.
const PROJECTION: &str = "accounts";
const VIEW_BALANCE: &str = "balance";
const VIEW_MOVEMENTS: &str = "movements";
const VIEW_TOTALS: &str = "totals";
/// The totals view's one record: every event updates it, so it is the record that sees the
/// most redeliveries.
const TOTALS_KEY: &str = "all";
/// The process managers; their commands have ids `pm:{name}:{event id}:{index}`.
const MIRROR_PM: &str = "mirror";
const DEADLINE_PM: &str = "deadline";
/// Only events of the clients' accounts trigger a process manager, so the managers' own
/// commands trigger nothing and the parent can wait until all work is done.
const CLIENT_ACCOUNT_PREFIX: &str = "acct-";
/// Targets of the process managers' commands: `{prefix}{client account}`.
const MIRROR_PREFIX: &str = "mirror-";
const ECHO_PREFIX: &str = "echo-";
const DEADLINE_PREFIX: &str = "deadline-";
/// A mirrored deposit larger than this also sends a second command (index 1), to the echo
/// account, so reactions with more than one command are covered.
const ECHO_ABOVE: u64 = 50;
/// A deadline is due 100–300 ms after its triggering deposit was recorded, the delay taken
/// from the amount (1–100): a reaction run again after a crash schedules the same time.
const DEADLINE_DELAY_MS_MIN: u64 = 100;
const DEADLINE_DELAY_MS_SPAN: u64 = 200;

/// What makes a process manager react: a deposit on a client account whose id ends in `7`
/// (mirror) or in `3` (deadline); a tenth of the accounts each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Trigger {
    Mirror,
    Deadline,
}

impl Trigger {
    fn of(event: &RecordedEvent) -> Option<Trigger> {
        let account = event.stream.aggregate_id();
        if !account.starts_with(CLIENT_ACCOUNT_PREFIX) || &*event.event_type != "Deposited" {
            return None;
        }
        match account.as_bytes().last() {
            Some(b'7') => Some(Trigger::Mirror),
            Some(b'3') => Some(Trigger::Deadline),
            _ => None,
        }
    }

    fn manager(self) -> &'static str {
        match self {
            Trigger::Mirror => MIRROR_PM,
            Trigger::Deadline => DEADLINE_PM,
        }
    }
}

/// A deposit a process manager sends for a trigger, now (`at: None`) or at a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Planned {
    target: String,
    amount: u64,
    at: Option<Timestamp>,
}

/// The deposits sent for the `ordinal`-th trigger (from 1) of one client account, a deposit of
/// `amount`. The process managers and the parent's model both use it. The mirror deposit's
/// amount is the ordinal — the process state — so a state change applied twice (or lost)
/// shows in every later mirror deposit of that account.
fn plan(trigger: Trigger, event: &RecordedEvent, amount: u64, ordinal: u64) -> Vec<Planned> {
    let account = event.stream.aggregate_id();
    match trigger {
        Trigger::Mirror => {
            let mut planned = vec![Planned {
                target: format!("{MIRROR_PREFIX}{account}"),
                amount: ordinal,
                at: None,
            }];
            if amount > ECHO_ABOVE {
                planned.push(Planned {
                    target: format!("{ECHO_PREFIX}{account}"),
                    amount,
                    at: None,
                });
            }
            planned
        }
        Trigger::Deadline => {
            let delay_ms =
                DEADLINE_DELAY_MS_MIN + amount.saturating_mul(2).min(DEADLINE_DELAY_MS_SPAN);
            let at = Timestamp(event.meta.recorded_at.0.saturating_add(delay_ms * 1000));
            vec![Planned {
                target: format!("{DEADLINE_PREFIX}{account}"),
                amount: ordinal,
                at: Some(at),
            }]
        }
    }
}

/// How the process managers react.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reactions {
    /// Always at once.
    Plain,
    /// The first time they see one trigger in [`INTERRUPT_ONE_IN`] they answer
    /// [`Interrupted`] ("not now": the subscriber pauses and delivers it again), writing
    /// nothing, as the runtime allows of a failed reaction.
    Interrupting,
}

/// See [`Reactions::Interrupting`]: often enough that most pages of a catching-up process
/// manager are cut short.
const INTERRUPT_ONE_IN: u128 = 4;

/// Both process managers: one instance per client account, whose state counts its triggers.
struct Reactor {
    trigger: Trigger,
    /// With [`Reactions::Interrupting`]: the triggers already answered with `Interrupted`.
    interrupted: Option<Mutex<HashSet<Uuid>>>,
}

impl Reactor {
    fn new(trigger: Trigger, reactions: Reactions) -> Reactor {
        Reactor {
            trigger,
            interrupted: (reactions == Reactions::Interrupting).then(Mutex::default),
        }
    }

    /// With [`Reactions::Interrupting`], whether to answer `Interrupted` to `event` now.
    fn interrupts(&self, event: &RecordedEvent) -> bool {
        let Some(interrupted) = &self.interrupted else {
            return false;
        };
        // v4 ids: the low bits are random.
        event.event_id.as_u128().is_multiple_of(INTERRUPT_ONE_IN)
            && interrupted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(event.event_id)
    }
}

impl ProcessManager for Reactor {
    type State = u64;

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        (Trigger::of(event) == Some(self.trigger)).then(|| event.stream.aggregate_id().to_string())
    }

    fn react(
        &self,
        triggers: &mut u64,
        event: &RecordedEvent,
    ) -> Result<Vec<Action>, HandlerError> {
        let AccountEvent::Deposited { amount } = event.decode::<AccountEvent>()?.payload else {
            return Err(format!("the trigger at {} is not a deposit", event.position).into());
        };
        if self.interrupts(event) {
            return Err(Box::new(Interrupted(format!(
                "not now: the trigger at {}",
                event.position
            ))));
        }
        *triggers += 1;
        plan(self.trigger, event, amount, *triggers)
            .into_iter()
            .map(|planned| {
                let command = AccountCommand::Deposit {
                    amount: planned.amount,
                };
                let action = match planned.at {
                    None => Action::command::<Account>(planned.target, &command),
                    Some(at) => Action::schedule::<Account>(at, planned.target, &command),
                };
                action.map_err(HandlerError::from)
            })
            .collect()
    }
}

/// The totals view's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Totals {
    events: u64,
    deposited: u64,
    withdrawn: u64,
}

impl Totals {
    fn after(self, event: &AccountEvent) -> Totals {
        let (deposited, withdrawn) = match *event {
            AccountEvent::Deposited { amount } => (amount, 0),
            AccountEvent::Withdrawn { amount } => (0, amount),
        };
        Totals {
            events: self.events + 1,
            deposited: self.deposited.saturating_add(deposited),
            withdrawn: self.withdrawn.saturating_add(withdrawn),
        }
    }
}

/// An account's balance after `event` (the log check rules out overdrawing withdrawals).
fn balance_after(balance: u64, event: &AccountEvent) -> u64 {
    match *event {
        AccountEvent::Deposited { amount } => balance.saturating_add(amount),
        AccountEvent::Withdrawn { amount } => balance.saturating_sub(amount),
    }
}

struct AccountsProjection {
    balance: View<u64>,
    movements: View<u64>,
    totals: View<Totals>,
}

impl AccountsProjection {
    fn new(views: &ViewSet) -> Result<AccountsProjection, ViewError> {
        Ok(AccountsProjection {
            balance: views.view(VIEW_BALANCE)?,
            movements: views.view(VIEW_MOVEMENTS)?,
            totals: views.view(VIEW_TOTALS)?,
        })
    }
}

impl Projection for AccountsProjection {
    fn handle(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let payload = event.decode::<AccountEvent>()?.payload;
        let key = event.stream.aggregate_id().as_bytes();
        let at = event.position;
        self.balance
            .update(key, at, |b| Some(balance_after(b.unwrap_or(0), &payload)))?;
        self.movements
            .update(key, at, |m| Some(m.unwrap_or(0) + 1))?;
        self.totals.update(TOTALS_KEY.as_bytes(), at, |t| {
            Some(t.unwrap_or_default().after(&payload))
        })?;
        Ok(())
    }
}

/// When the child registers the subscribers, in ms after its clients start. Started with the
/// clients, the projection keeps up with them (measured: 20–40 events behind at the kill), its
/// pages stay small, and a kill rarely lands between applying a page and checkpointing it. So
/// in half the cycles the child registers them shortly before the parent's kill (which the
/// parent tells it), with a backlog of hundreds of events that they read in full pages (about
/// 13 events per ms in a debug build): the kill lands mid-catch-up, and the restarted
/// subscribers get events again that they had applied. In the other half, at a random moment
/// early on, so the kill lands in live work.
fn subscribers_delay_ms(mut rng: Rng, kill_ms: Option<u64>) -> u64 {
    match kill_ms {
        Some(kill_ms) if rng.below(2) == 0 => {
            kill_ms.saturating_sub(rng.below(SUBSCRIBERS_LEAD_MS_MAX + 1))
        }
        _ => rng.below(SUBSCRIBERS_DELAY_MS_MAX + 1),
    }
}

/// See [`subscribers_delay_ms`]: how long before the kill the subscribers may start, at most.
const SUBSCRIBERS_LEAD_MS_MAX: u64 = 60;
/// See [`subscribers_delay_ms`]: the latest random start otherwise.
const SUBSCRIBERS_DELAY_MS_MAX: u64 = 150;

/// Registers the projection and the process managers, in the child and in the parent alike.
/// Returns the totals record as the projection found it, before it handled any event.
/// The power-cut modes' projection: for every event of an account whose id ends in `7`, a
/// record of [`LEDGER_RECORD_BYTES`] (sled writes leaves of such records to blob files).
struct Ledger {
    records: View<String>,
}

impl Projection for Ledger {
    fn handle(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let account = event.stream.aggregate_id();
        if !account.ends_with('7') {
            return Ok(());
        }
        let mut record = format!("{account}@{} ", event.position);
        let fill = char::from(b'a' + u8::try_from(event.position.0 % 26).unwrap_or(0));
        record.extend(std::iter::repeat_n(fill, LEDGER_RECORD_BYTES));
        self.records
            .update(account.as_bytes(), event.position, |_| Some(record))?;
        Ok(())
    }
}

fn register_subscribers(
    runtime: &Runtime,
    reactions: Reactions,
) -> Result<Option<Totals>, SubscribeError> {
    let found = Arc::new(Mutex::new(None));
    let slot = found.clone();
    // `project` builds the projection before starting it.
    runtime.project(PROJECTION, SubscriberOptions::default(), move |views| {
        let projection = AccountsProjection::new(views)?;
        let totals = projection.totals.get(TOTALS_KEY.as_bytes())?;
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = totals;
        Ok(projection)
    })?;
    for trigger in [Trigger::Mirror, Trigger::Deadline] {
        runtime.process_manager(
            trigger.manager(),
            Reactor::new(trigger, reactions),
            SubscriberOptions::default(),
        )?;
    }
    let totals = *found.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(totals)
}

// ---------------------------------------------------------------------------------------------
// The parent

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Durable,
    Relaxed,
    /// Durable, with the projection and process managers of [`register_subscribers`] running
    /// in the child and, after every kill, in the parent.
    Subscribers(Reactions),
    /// Durable, on `cutfs`: every kill is a power cut (see
    /// [`durable_journal_keeps_every_acknowledged_command_across_power_cuts`]).
    PowerCut(Cut),
}

/// What a power cut keeps of what was not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Nothing.
    Strict,
    /// Each page, size change and directory change at random ([`TORN_PAGE_CHANCE`]).
    Torn,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Durable => "durable",
            Mode::Relaxed => "relaxed",
            Mode::Subscribers(Reactions::Plain) => "subscribers",
            Mode::Subscribers(Reactions::Interrupting) => "subscribers-interrupting",
            Mode::PowerCut(Cut::Strict) => "power-cut",
            Mode::PowerCut(Cut::Torn) => "power-cut-torn",
        }
    }

    fn parse(name: &str) -> Option<Mode> {
        [
            Mode::Durable,
            Mode::Relaxed,
            Mode::Subscribers(Reactions::Plain),
            Mode::Subscribers(Reactions::Interrupting),
            Mode::PowerCut(Cut::Strict),
            Mode::PowerCut(Cut::Torn),
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }

    fn durability(self) -> Durability {
        match self {
            Mode::Durable | Mode::Subscribers(_) | Mode::PowerCut(_) => Durability::Durable,
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
    /// Subscribers mode only.
    subscribers: SubscriberFigures,
    /// Power-cut modes only.
    power: PowerFigures,
}

/// What the power cuts did.
#[derive(Debug, Default)]
struct PowerFigures {
    cuts: u64,
    pages_dropped: u64,
    files_lost: u64,
    entries_dropped: u64,
    entries_restored: u64,
    /// Trees of the database read in full after the last cut.
    trees_read: usize,
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
    let mut summary = Summary {
        seed,
        ..Summary::default()
    };
    // In the power-cut modes the database lives on cutfs, mounted under the test directory and
    // kept between mounts in an image file beside it; dropped (unmounted) before the directory.
    let mnt = root.path().join("mnt");
    let image = root.path().join("cutfs.image");
    let cut_options = |cycle: usize| annals_cutfs::Options {
        torn: matches!(mode, Mode::PowerCut(Cut::Torn)).then_some(TORN_PAGE_CHANCE),
        torn_seed: Some(seed ^ u64::try_from(cycle).unwrap_or(0)),
        ..annals_cutfs::Options::default()
    };
    let mount = |cycle: usize| {
        annals_cutfs::CutFs::mount(&mnt, &image, &cut_options(cycle))
            .unwrap_or_else(|e| panic!("cannot mount cutfs at {}: {e}", mnt.display()))
    };
    let mut fs = matches!(mode, Mode::PowerCut(_)).then(|| mount(0));
    let db = if fs.is_some() {
        mnt.join("db")
    } else {
        root.path().join("db")
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
        let mut run = run_and_kill_child(&paths, mode, cycle, rng.next_u64(), kill, fs.as_ref());
        if let Some(cutfs) = fs.take() {
            // The power is cut: only what was synced is there after the "reboot".
            match cutfs.cut() {
                Ok(report) => {
                    let p = &mut summary.power;
                    p.cuts += 1;
                    p.pages_dropped += report.pages_dropped;
                    p.files_lost += report.files_lost;
                    p.entries_dropped += report.entries_dropped;
                    p.entries_restored += report.entries_restored;
                }
                Err(e) => run = Err(format!("cutting the power failed: {e}")),
            }
            fs = Some(mount(cycle + 1));
        }
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
            match mode {
                Mode::Subscribers(_) if leaves_work_to_next_child(cycle, cycles) => {
                    summary.subscribers.cycles_left_work += 1;
                    check_cycle(&db, mode, &mut kept, file.acks, &mut summary)
                }
                Mode::Subscribers(reactions) => {
                    check_subscribers_cycle(&db, reactions, &mut kept, file.acks, &mut summary)
                }
                Mode::Durable | Mode::Relaxed | Mode::PowerCut(_) => {
                    check_cycle(&db, mode, &mut kept, file.acks, &mut summary)
                }
            }
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
    cutfs: Option<&annals_cutfs::CutFs>,
) -> Result<Option<Duration>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test binary: {e}"))?;
    let stderr =
        File::create(paths.stderr).map_err(|e| format!("cannot create child stderr: {e}"))?;
    let spawned = Instant::now();
    let mut command = Command::new(exe);
    if let Kill::AfterOpen(delay) = kill {
        command.env(ENV_KILL_MS, delay.as_millis().to_string());
    }
    let mut child = command
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
    // Kill in every case: a child that outlives its test would hold the database lock. On cutfs
    // the filesystem freezes at the same instant (the child stopped first, so no write or
    // fsync of it completes after the cut).
    let killed = match cutfs {
        Some(fs) => fs.freeze_and_kill(child.id()),
        None => child.kill(),
    }
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
    let store = reopen_store(db, summary)?;
    let (mut problems, _) = check_store(&store, mode, kept, new, summary);
    if let Mode::PowerCut(_) = mode {
        summary.power.trees_read = read_every_tree(&store, &mut problems);
    }
    let shutdown = store.shutdown();
    drop(store);
    problems.into_result()?;
    shutdown.map_err(|e| format!("shutting the parent's store down failed: {e}"))
}

/// Reads every tree of the database in full — views, snapshots, checkpoints, whatever sled
/// keeps — so that a page whose blob file a cut damaged is found; returns how many trees.
fn read_every_tree(store: &SledStore, problems: &mut Problems) -> usize {
    let db = store.database();
    let names = db.tree_names();
    for name in &names {
        let tree = match db.open_tree(name) {
            Ok(tree) => tree,
            Err(e) => {
                problems.add(format!(
                    "cannot open tree {:?}: {e}",
                    String::from_utf8_lossy(name)
                ));
                continue;
            }
        };
        if let Some(Err(e)) = tree.iter().find(Result::is_err) {
            problems.add(format!(
                "tree {:?} does not read: {e}",
                String::from_utf8_lossy(name)
            ));
        }
    }
    names.len()
}

/// Opens the store after a kill (recovery and the integrity check), counting what recovery did.
fn reopen_store(db: &Path, summary: &mut Summary) -> Result<SledStore, String> {
    let store = SledStore::open(SledOptions::new(db))
        .map_err(|e| format!("reopening the store after the kill failed: {e}"))?;
    let report = store.recovery_report();
    summary.records_removed += report.records_removed;
    summary.records_reindexed += report.records_reindexed;
    Ok(store)
}

/// The checks of the log and of the acknowledgements (see the module docs). Returns the
/// problems found and the log as read.
fn check_store(
    store: &SledStore,
    mode: Mode,
    kept: &mut Vec<Ack>,
    new: Vec<Ack>,
    summary: &mut Summary,
) -> (Problems, LogModel) {
    let mut problems = Problems::default();
    let log = read_log(store, &mut problems);
    check_streams(store, &log, &mut problems);
    let head = store.head_position().0;
    summary.ack_checks += kept.len() + new.len();
    for ack in kept.iter() {
        if check_ack(store, &log, ack, &mut problems) == Presence::Absent {
            problems.add(format!(
                "acknowledged in an earlier cycle, now lost: {ack:?}"
            ));
        }
    }
    for ack in new {
        match (
            check_ack(store, &log, &ack, &mut problems),
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
    (problems, log)
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
// The subscribers' checks (third test)

/// How long the parent waits for the subscribers to process the log and for every deadline
/// to fire. A cycle's backlog takes about a second in a debug build; far beyond this
/// something is stuck.
const SUBSCRIBERS_WAIT_MAX: Duration = Duration::from_secs(60);
/// How often the parent looks at the subscribers and the log.
const SUBSCRIBERS_POLL: Duration = Duration::from_millis(20);
/// How long all work must stay done before the checks: three deadline ticks, in which a
/// deadline sent twice or a stray command would show up in the log.
const SUBSCRIBERS_SETTLE: Duration = DEADLINE_TICK.saturating_mul(3);
/// How late a deadline may be sent (in µs) before the parent stops waiting for it: ten
/// deadline ticks, ample even when hundreds fell due while the child was dead and are sent one
/// after the other. Only a failing run waits this long.
const DEADLINE_GRACE_MICROS: u64 = 1_000_000;
/// The state-store space in which the runtime keeps scheduled deadlines until they are sent.
const DEADLINES_SPACE: &str = annals::store::state::DEADLINES;

/// The figures of the subscribers test.
#[derive(Debug, Default)]
struct SubscriberFigures {
    /// Cycles after which the parent left the subscribers' work to the next child.
    cycles_left_work: usize,
    /// The subscribers' lag when the parent restarted them (events to catch up on or to have
    /// redelivered), summed over the subscribers and the cycles.
    backlog_events: u64,
    /// View records compared with the rebuild, in the last cycle.
    view_records: usize,
    /// Triggers and the commands they call for, in the final log.
    mirror_triggers: u64,
    mirror_commands: usize,
    deadlines: usize,
    /// Expected commands checked, summed over the cycles.
    command_checks: usize,
    /// Commands applied by the parent's runtime, summed over the cycles.
    mirror_after_restart: usize,
    deadlines_after_restart: usize,
    /// Deadlines applied by the parent's runtime that were due before it started.
    deadlines_overdue: usize,
    /// Events the projection had applied but not checkpointed when killed, so it got them
    /// again after the restart, summed over the cycles.
    projection_redelivered: u64,
    /// Commands applied before a kill whose triggers were not checkpointed, so the process
    /// managers got the triggers again after the restart, summed over the cycles.
    steps_redelivered: usize,
    /// Time spent waiting for the subscribers to finish their work.
    wait_time: Duration,
    wait_max: Duration,
}

/// In the subscribers test, every other cycle but the last checks the store only and leaves the
/// subscribers' unfinished work to the next child: its subscribers then start with a backlog,
/// read in full pages, and the kill can land in the middle of a page of catching up (many
/// events handled but not yet checkpointed), not only in live work.
fn leaves_work_to_next_child(cycle: usize, cycles: usize) -> bool {
    cycle.is_multiple_of(2) && cycle + 1 < cycles
}

/// Where and when the parent restarted the runtime.
#[derive(Debug, Clone, Copy)]
struct Restart {
    head: Position,
    at: Timestamp,
    /// The subscribers' checkpoints as the kill left them.
    projection: Position,
    mirror: Position,
    deadline: Position,
}

impl Restart {
    fn checkpoint(&self, trigger: Trigger) -> Position {
        match trigger {
            Trigger::Mirror => self.mirror,
            Trigger::Deadline => self.deadline,
        }
    }
}

/// After a kill: the store checks of the durable test, then a runtime on the same database
/// with the same subscribers, a wait until all their work is done, and the subscriber checks
/// (see the module docs).
fn check_subscribers_cycle(
    db: &Path,
    reactions: Reactions,
    kept: &mut Vec<Ack>,
    new: Vec<Ack>,
    summary: &mut Summary,
) -> Result<(), String> {
    let store = reopen_store(db, summary)?;
    let mode = Mode::Subscribers(reactions);
    let (problems, log) = check_store(&store, mode, kept, new, summary);
    if problems.total > 0 {
        let shutdown = store.shutdown();
        drop(store);
        problems.into_result()?;
        return shutdown.map_err(|e| format!("shutting the parent's store down failed: {e}"));
    }
    let checkpoint = |name: &str| {
        store
            .state()
            .load_checkpoint(name)
            .map_err(|e| format!("cannot read the checkpoint of {name}: {e}"))
    };
    let restart = Restart {
        head: store.head_position(),
        at: Timestamp::now(),
        // A projection's checkpoint is stored per generation; this test never rebuilds.
        projection: checkpoint(&format!("{PROJECTION}@0"))?,
        mirror: checkpoint(MIRROR_PM)?,
        deadline: checkpoint(DEADLINE_PM)?,
    };
    let runtime = Runtime::with_stores(store.into_stores(), RuntimeOptions::new(db))
        .map_err(|e| format!("starting the parent's runtime failed: {e}"))?;
    let checked = check_subscribers(&runtime, reactions, &log, restart, summary);
    let shutdown = futures::executor::block_on(runtime.shutdown());
    drop(runtime);
    checked?;
    shutdown.map_err(|e| format!("shutting the parent's runtime down failed: {e}"))
}

/// `restart`: where and when the runtime restarted.
fn check_subscribers(
    runtime: &Runtime,
    reactions: Reactions,
    log: &LogModel,
    restart: Restart,
    summary: &mut Summary,
) -> Result<(), String> {
    let figures = &mut summary.subscribers;
    for checkpoint in [restart.projection, restart.mirror, restart.deadline] {
        figures.backlog_events += restart.head.0.saturating_sub(checkpoint.0);
    }
    runtime
        .register::<Account>()
        .map_err(|e| format!("the parent cannot register Account: {e}"))?;
    let totals = register_subscribers(runtime, reactions)
        .map_err(|e| format!("the parent cannot register the subscribers: {e}"))?;
    // The totals record counts the events applied, which (exactly once, as checked below) is
    // the position of the last one: beyond the checkpoint, the kill came between applying
    // events and checkpointing them, and they are delivered again now.
    figures.projection_redelivered += totals
        .map_or(0, |t| t.events)
        .saturating_sub(restart.projection.0);
    let mut problems = Problems::default();
    let mut model = SubscriberModel::default();
    for event in &log.events {
        model.add(event, &mut problems);
    }
    let waited = wait_until_done(runtime, &mut model, &mut problems)?;
    figures.wait_time += waited;
    figures.wait_max = figures.wait_max.max(waited);
    summary.events = model.read;
    // Read-your-writes after the restart: every subscriber has reached the head.
    let head = Position(model.read);
    for name in [PROJECTION, MIRROR_PM, DEADLINE_PM] {
        match futures::executor::block_on(runtime.wait_for(name, head, SUBSCRIBERS_POLL)) {
            Ok(reached) if reached >= head => {}
            other => problems.add(format!(
                "wait_for({name}, {head}) after the restart gives {other:?}"
            )),
        }
    }
    figures.view_records = check_views(runtime, &model, &mut problems);
    check_commands(&model, restart, figures, &mut problems);
    for name in [PROJECTION, MIRROR_PM, DEADLINE_PM] {
        match runtime.parked(name) {
            Ok(parked) if parked.is_empty() => {}
            Ok(parked) => problems.add(format!(
                "{name} parked {} events, whose steps are lost until retried; the first: {:?}",
                parked.len(),
                parked.first()
            )),
            Err(e) => problems.add(format!("cannot list the parked events of {name}: {e}")),
        }
    }
    // Every scheduled deadline has fired, and one left in place would be sent again every tick.
    let left = runtime
        .state_store()
        .range(
            DEADLINES_SPACE,
            Bound::Unbounded,
            Bound::Unbounded,
            usize::MAX,
        )
        .map_err(|e| format!("cannot read the deadlines: {e}"))?
        .len();
    if left > 0 {
        problems.add(format!(
            "{left} deadlines are still scheduled after every scheduled deadline was applied"
        ));
    }
    problems.into_result()
}

/// Waits (bounded) until the subscribers' work is done: every subscriber has processed the
/// whole log, no command the triggers call for can still come (all applied, or only missing
/// ones that are past hope: see [`SubscriberModel::may_still_apply`]), and the log has not
/// grown for [`SUBSCRIBERS_SETTLE`]. Returns how long that took. Missing commands are reported
/// by the checks that follow.
fn wait_until_done(
    runtime: &Runtime,
    model: &mut SubscriberModel,
    problems: &mut Problems,
) -> Result<Duration, String> {
    let started = Instant::now();
    // Since when the work has looked done, and the log's end then.
    let mut done_since: Option<(Instant, u64)> = None;
    // Bounded by SUBSCRIBERS_WAIT_MAX.
    loop {
        model.read_new(runtime, problems)?;
        let infos = runtime.subscribers();
        if let Some(failed) = infos
            .iter()
            .find(|i| matches!(i.status, SubscriberStatus::Failed(_)))
        {
            return Err(format!(
                "subscriber {} failed: {:?}",
                failed.name, failed.status
            ));
        }
        let caught_up = infos.len() == 3
            && runtime.head_position().0 == model.read
            && infos.iter().all(|i| i.checkpoint.0 >= model.read);
        if caught_up && !model.may_still_apply(Timestamp::now()) {
            match done_since {
                Some((since, read)) if read == model.read => {
                    if since.elapsed() >= SUBSCRIBERS_SETTLE {
                        return Ok(started.elapsed());
                    }
                }
                _ => done_since = Some((Instant::now(), model.read)),
            }
        } else {
            done_since = None;
        }
        if started.elapsed() > SUBSCRIBERS_WAIT_MAX {
            let sample: Vec<_> = model
                .expected
                .iter()
                .filter(|(id, _)| !model.applied.contains_key(*id))
                .take(5)
                .collect();
            return Err(format!(
                "after {SUBSCRIBERS_WAIT_MAX:?}: {} process-manager commands not applied (such \
                 as {sample:?}); log read to {}; subscribers {infos:?}",
                model.pending, model.read
            ));
        }
        std::thread::sleep(SUBSCRIBERS_POLL);
    }
}

/// What the subscribers should have made of the log, computed from scratch.
#[derive(Default)]
struct SubscriberModel {
    /// The last position read.
    read: u64,
    balances: BTreeMap<String, u64>,
    movements: BTreeMap<String, u64>,
    totals: Totals,
    /// Triggers so far per process manager and client account.
    triggers: HashMap<(Trigger, String), u64>,
    /// The commands the triggers in the log call for, by command id.
    expected: HashMap<String, Expected>,
    /// Expected commands not applied yet.
    pending: usize,
    /// The events carrying a process manager's command id, by command id.
    applied: HashMap<String, Vec<RecordedEvent>>,
    /// Positions of the events on the target accounts, per account and causation id.
    causations: HashMap<(String, String), Vec<Position>>,
}

/// A command a trigger calls for.
#[derive(Debug)]
struct Expected {
    trigger: Trigger,
    trigger_id: Uuid,
    trigger_position: Position,
    planned: Planned,
}

impl SubscriberModel {
    /// Whether a command still missing can yet be applied, once every subscriber has processed
    /// the whole log: a process manager sends its immediate commands before its checkpoint
    /// passes the trigger, so only a deadline can still come — until [`DEADLINE_GRACE_MICROS`] after
    /// it is due. Waiting for anything else would only delay the failure report.
    fn may_still_apply(&self, now: Timestamp) -> bool {
        self.pending > 0
            && self.expected.iter().any(|(command_id, expected)| {
                expected.planned.at.is_some_and(|at| {
                    at.0.saturating_add(DEADLINE_GRACE_MICROS) >= now.0
                        && !self.applied.contains_key(command_id)
                })
            })
    }

    /// Reads the log after `read`.
    fn read_new(&mut self, runtime: &Runtime, problems: &mut Problems) -> Result<(), String> {
        // Each page advances `read` or ends the loop.
        loop {
            let from = Position(self.read + 1);
            let page = runtime
                .read_all(from, PAGE)
                .map_err(|e| format!("read_all from {from} failed: {e}"))?;
            if page.is_empty() {
                return Ok(());
            }
            for event in &page {
                if event.position.0 != self.read + 1 {
                    return Err(format!(
                        "the log has position {} where {} was due",
                        event.position,
                        self.read + 1
                    ));
                }
                self.add(event, problems);
            }
        }
    }

    fn add(&mut self, event: &RecordedEvent, problems: &mut Problems) {
        self.read = event.position.0;
        let payload = match event.decode::<AccountEvent>() {
            Ok(decoded) => decoded.payload,
            Err(e) => {
                problems.add(format!("event at {} does not decode: {e}", event.position));
                return;
            }
        };
        let account = event.stream.aggregate_id();
        let balance = self.balances.entry(account.to_string()).or_default();
        *balance = balance_after(*balance, &payload);
        *self.movements.entry(account.to_string()).or_default() += 1;
        self.totals = self.totals.after(&payload);
        if let (Some(trigger), AccountEvent::Deposited { amount }) = (Trigger::of(event), &payload)
        {
            let ordinal = self
                .triggers
                .entry((trigger, account.to_string()))
                .or_default();
            *ordinal += 1;
            for (i, planned) in plan(trigger, event, *amount, *ordinal)
                .into_iter()
                .enumerate()
            {
                let command_id = format!("pm:{}:{}:{i}", trigger.manager(), event.event_id);
                self.pending += 1;
                let expected = Expected {
                    trigger,
                    trigger_id: event.event_id,
                    trigger_position: event.position,
                    planned,
                };
                self.expected.insert(command_id, expected);
            }
        }
        let command_id = event.meta.command_id.as_ref().map(CommandId::as_str);
        if let Some(command_id) = command_id.filter(|id| id.starts_with("pm:")) {
            let applied = self.applied.entry(command_id.to_string()).or_default();
            // A command is committed after its trigger, so it is expected by now.
            if applied.is_empty() && self.expected.contains_key(command_id) {
                self.pending -= 1;
            }
            applied.push(event.clone());
        }
        if [MIRROR_PREFIX, ECHO_PREFIX, DEADLINE_PREFIX]
            .iter()
            .any(|prefix| account.starts_with(prefix))
        {
            let causation = event.meta.causation_id.as_deref().unwrap_or("(none)");
            self.causations
                .entry((account.to_string(), causation.to_string()))
                .or_default()
                .push(event.position);
        }
    }
}

/// Every view of the projection equals its rebuild from the log. Returns the records compared.
fn check_views(runtime: &Runtime, model: &SubscriberModel, problems: &mut Problems) -> usize {
    // The totals record exists once there is an event.
    let totals = (model.read > 0)
        .then(|| (TOTALS_KEY.to_string(), model.totals))
        .into_iter()
        .collect();
    check_view(runtime, VIEW_BALANCE, &model.balances, problems)
        + check_view(runtime, VIEW_MOVEMENTS, &model.movements, problems)
        + check_view(runtime, VIEW_TOTALS, &totals, problems)
}

fn check_view<V>(
    runtime: &Runtime,
    name: &str,
    rebuilt: &BTreeMap<String, V>,
    problems: &mut Problems,
) -> usize
where
    V: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let view: View<V> = match runtime.view(PROJECTION, name) {
        Ok(view) => view,
        Err(e) => {
            problems.add(format!("cannot open view {name}: {e}"));
            return 0;
        }
    };
    let mut live = BTreeMap::new();
    for record in view.iter() {
        match record {
            Ok((key, value)) => {
                live.insert(String::from_utf8_lossy(&key).into_owned(), value);
            }
            Err(e) => problems.add(format!("view {name}: {e}")),
        }
    }
    let keys: BTreeSet<&String> = live.keys().chain(rebuilt.keys()).collect();
    for key in keys {
        let (found, due) = (live.get(key), rebuilt.get(key));
        if found != due {
            problems.add(format!(
                "view {name} has {found:?} for {key}, a rebuild from the log gives {due:?}"
            ));
        }
    }
    live.len()
}

/// Every command the triggers call for is applied exactly once, as planned, caused by its
/// trigger, and a deadline not before it is due; nothing else is applied.
fn check_commands(
    model: &SubscriberModel,
    restart: Restart,
    figures: &mut SubscriberFigures,
    problems: &mut Problems,
) {
    figures.mirror_triggers = model
        .triggers
        .iter()
        .filter(|((trigger, _), _)| *trigger == Trigger::Mirror)
        .map(|(_, n)| n)
        .sum();
    // Each list in log order, so the first problems listed are the earliest.
    let mut strays: Vec<_> = model
        .applied
        .iter()
        .filter(|(command_id, _)| !model.expected.contains_key(*command_id))
        .map(|(command_id, events)| {
            let positions: Vec<_> = events.iter().map(|e| e.position.0).collect();
            (positions, command_id)
        })
        .collect();
    strays.sort();
    for (positions, command_id) in strays {
        problems.add(format!(
            "{command_id} was applied at positions {positions:?}, but no trigger calls for it"
        ));
    }
    let mut caused_twice: Vec<_> = model
        .causations
        .iter()
        .filter(|(_, positions)| positions.len() > 1)
        .collect();
    caused_twice.sort_by_key(|(_, positions)| positions.first().copied());
    for ((account, causation), positions) in caused_twice {
        problems.add(format!(
            "{account} has {} events caused by {causation}, at positions {positions:?}",
            positions.len()
        ));
    }
    figures.mirror_commands = 0;
    figures.deadlines = 0;
    // In log order, so the first problems listed are the earliest.
    let mut expected: Vec<_> = model.expected.iter().collect();
    expected.sort_by_key(|(command_id, e)| (e.trigger_position, *command_id));
    for (command_id, expected) in expected {
        figures.command_checks += 1;
        match expected.trigger {
            Trigger::Mirror => figures.mirror_commands += 1,
            Trigger::Deadline => figures.deadlines += 1,
        }
        let event = match model.applied.get(command_id).map(Vec::as_slice) {
            None | Some([]) => {
                problems.add(format!("{command_id} was never applied: {expected:?}"));
                continue;
            }
            Some([event]) => event,
            Some(events) => {
                let positions: Vec<_> = events.iter().map(|e| e.position.0).collect();
                problems.add(format!(
                    "{command_id} was applied {} times, at positions {positions:?}",
                    events.len()
                ));
                continue;
            }
        };
        check_applied(command_id, expected, event, problems);
        if event.position <= restart.head
            && expected.trigger_position > restart.checkpoint(expected.trigger)
        {
            // Applied before the kill, its trigger not yet checkpointed: delivered again.
            figures.steps_redelivered += 1;
        }
        if event.position > restart.head {
            match (expected.trigger, expected.planned.at) {
                (Trigger::Mirror, _) => figures.mirror_after_restart += 1,
                (Trigger::Deadline, at) => {
                    figures.deadlines_after_restart += 1;
                    if at.is_some_and(|at| at < restart.at) {
                        figures.deadlines_overdue += 1;
                    }
                }
            }
        }
    }
}

fn check_applied(
    command_id: &str,
    expected: &Expected,
    event: &RecordedEvent,
    problems: &mut Problems,
) {
    let planned = &expected.planned;
    let payload = event.decode::<AccountEvent>().ok().map(|e| e.payload);
    let causation = event.meta.causation_id.as_deref();
    let trigger_id = expected.trigger_id.to_string();
    if event.stream != account_stream(&planned.target)
        || payload
            != Some(AccountEvent::Deposited {
                amount: planned.amount,
            })
        || causation != Some(trigger_id.as_str())
    {
        problems.add(format!(
            "{command_id}: position {} holds {} {payload:?} caused by {causation:?}; planned: a \
             deposit of {} to {} caused by {trigger_id}",
            event.position, event.stream, planned.amount, planned.target
        ));
    }
    if let Some(at) = planned.at {
        if event.meta.recorded_at < at {
            problems.add(format!(
                "{command_id}: the deadline due at {} µs fired early, at {} µs",
                at.0, event.meta.recorded_at.0
            ));
        }
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
