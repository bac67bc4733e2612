//! A full disk under load, on a small file system the test mounts (tmpfs, so this test runs as
//! root, as CI does): an `annals serve` child process keeps taking commands while a filler file
//! eats the free space, then the space is freed.
//!
//! Two ways the disk fills, one test each:
//! - **below the minimum** (`store.disk_free_bytes_min` set): commands are refused with 507 and
//!   `Retry-After` before anything is written, `/readyz` says why, the journal stays healthy, and
//!   commands succeed again as soon as the filler is removed;
//! - **to the last byte** (the minimum at 0, so a write of the journal itself meets `ENOSPC`):
//!   the journal fails (503, `/readyz` says so), and once the filler is removed the service
//!   reopens its store by itself — same process, no manual repair.
//!
//! In both, nothing acknowledged is lost (every 200's events are in the log at the positions
//! its reply named), the process stays up, SIGTERM then exits 0, and `annals verify` passes.

// The HTTP tests' shared helpers; this file uses a few of them.
#[allow(dead_code)]
mod http_support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use annals_tests::{annals_binary, ServeProcess};
use serde_json::{json, Value};

use http_support::{Api, Reply};

/// Size of the test's file system: room for the store and a few of sled's segments.
const FS_BYTES: u64 = 64 * 1024 * 1024;
/// The minimum free space of the first test.
const MIN_FREE_BYTES: u64 = 16 * 1024 * 1024;
/// How long each phase may take before the test gives up (bounded waits, not timings).
const PHASE_LIMIT: Duration = Duration::from_secs(60);

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().expect("a mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={FS_BYTES}"),
                "annals-disk-full",
            ])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} ({status}): this test needs root, as CI has",
            dir.path().display()
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free_bytes(&self) -> u64 {
        annals_app::http::ops::disk_free_bytes(self.path()).expect("statvfs")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the disk with a file until fewer than `leave` bytes are free (or it is full).
fn fill(disk: &SmallDisk, leave: u64) -> PathBuf {
    let path = disk.path().join("filler");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("the filler opens");
    let chunk = vec![0xAAu8; 256 * 1024];
    while disk.free_bytes() >= leave.max(1) {
        if file.write_all(&chunk).is_err() {
            break; // full: ENOSPC
        }
    }
    let _ = file.sync_all();
    path
}

/// What the clients got: acknowledged commands (their replies) and refusals by status.
#[derive(Default)]
struct Tally {
    acked: Vec<Value>,
    refused: BTreeMap<u16, usize>,
}

/// Sends `count` deposits (distinct idempotency keys), recording every answer; each refusal
/// must be a problem with `Retry-After`, never a 500.
async fn load(api: &Api, tally: &mut Tally, round: &str, count: usize) {
    for i in 0..count {
        let account = format!("a-{}", i % 20);
        let key = format!("{round}-{i}");
        let reply = api
            .command_with(
                "accounts",
                &account,
                &json!({"type": "Deposit", "amount": 1}),
                &[("Idempotency-Key", &key)],
            )
            .await;
        record(tally, &reply);
    }
}

fn record(tally: &mut Tally, reply: &Reply) {
    if reply.status == 200 {
        tally.acked.push(reply.ok());
        return;
    }
    assert!(
        matches!(reply.status, 503 | 507),
        "a full disk is a 503 or 507, got {}: {}",
        reply.status,
        reply.text()
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json"),
        "{}",
        reply.text()
    );
    assert!(reply.header("retry-after").is_some(), "{}", reply.text());
    *tally.refused.entry(reply.status).or_default() += 1;
}

/// Every acknowledged command's events are in the global log, at the positions and with the
/// event ids its reply named.
async fn check_acked(api: &Api, tally: &Tally) {
    let mut log = BTreeMap::new();
    let mut after = 0u64;
    loop {
        let page = api
            .get(&format!("/v1/events?after={after}&limit=1000"))
            .await
            .ok();
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            break;
        }
        for event in events {
            let position = event["position"].as_u64().expect("a position");
            after = position;
            log.insert(position, event["event_id"].clone());
        }
    }
    for reply in &tally.acked {
        for event in reply["events"].as_array().expect("events") {
            let position = event["position"].as_u64().expect("a position");
            assert_eq!(
                log.get(&position),
                Some(&event["event_id"]),
                "acknowledged event at position {position} is in the log"
            );
        }
    }
}

/// Polls `/readyz` (bounded) until it is 503 naming a check that contains `check`.
async fn readyz_says(api: &Api, check: &str) -> Value {
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        let reply = api.get("/readyz").await;
        if reply.status == 503 {
            let problem = reply.json();
            let found = problem["checks"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c.as_str().is_some_and(|c| c.contains(check)))
            });
            if found {
                return problem;
            }
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never said {check:?}: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends deposits (bounded) until one is refused.
async fn until_refused(api: &Api, tally: &mut Tally) {
    let deadline = Instant::now() + PHASE_LIMIT;
    for i in 0.. {
        let reply = api
            .command_with(
                "accounts",
                "a-probe",
                &json!({"type": "Deposit", "amount": 1}),
                &[("Idempotency-Key", &format!("probe-{i}"))],
            )
            .await;
        let refused = reply.status != 200;
        record(tally, &reply);
        if refused {
            return;
        }
        assert!(Instant::now() < deadline, "commands were never refused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends deposits (bounded) until one is acknowledged again.
async fn until_acked(api: &Api, tally: &mut Tally, round: &str) {
    let deadline = Instant::now() + PHASE_LIMIT;
    for i in 0.. {
        let reply = api
            .command_with(
                "accounts",
                "a-recovered",
                &json!({"type": "Deposit", "amount": 1}),
                &[("Idempotency-Key", &format!("{round}-{i}"))],
            )
            .await;
        let ok = reply.status == 200;
        record(tally, &reply);
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "commands never succeeded again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM exits 0, and `annals verify` finds no damage.
fn stop_and_verify(process: ServeProcess, data_dir: &Path) {
    let status = process.terminate();
    assert!(status.success(), "SIGTERM exits 0, not {status}");
    let verify = Command::new(annals_binary())
        .args(["verify", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("annals verify runs");
    assert!(
        verify.status.success(),
        "annals verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[actix_rt::test]
async fn below_the_minimum_commands_are_507_until_space_is_freed() {
    let disk = SmallDisk::mount();
    let data_dir = disk.path().join("data");
    let min = MIN_FREE_BYTES.to_string();
    let process = ServeProcess::start(
        &data_dir,
        &["--set", &format!("store.disk_free_bytes_min={min}")],
        &[],
    );
    let pid = process.pid();
    let api = Api::new(&process.url);
    api.ready().await;
    let mut tally = Tally::default();
    load(&api, &mut tally, "before", 200).await;
    assert_eq!(tally.acked.len(), 200, "{:?}", tally.refused);

    let filler = fill(&disk, MIN_FREE_BYTES / 2);
    readyz_says(&api, "disk free below store.disk_free_bytes_min").await;
    // The store measures free space at most every 100 ms: commands refused from then on.
    until_refused(&api, &mut tally).await;
    load(&api, &mut tally, "full", 50).await;
    assert_eq!(
        tally.refused.get(&507).copied(),
        Some(51),
        "below the minimum every command is 507: {:?}",
        tally.refused
    );
    assert_eq!(api.get("/livez").await.status, 200);
    assert_eq!(api.get("/v1/accounts/a-1").await.status, 200, "reads go on");

    std::fs::remove_file(&filler).expect("the filler is removed");
    until_acked(&api, &mut tally, "after").await;
    assert_eq!(api.get("/readyz").await.status, 200);
    load(&api, &mut tally, "later", 50).await;
    check_acked(&api, &tally).await;
    assert_eq!(process.pid(), pid, "the same process throughout");
    println!(
        "disk full (below the minimum): {} acknowledged, refused {:?}",
        tally.acked.len(),
        tally.refused
    );
    stop_and_verify(process, &data_dir);
}

#[actix_rt::test]
async fn a_disk_full_to_the_last_byte_fails_the_journal_and_the_service_reopens_it() {
    let disk = SmallDisk::mount();
    let data_dir = disk.path().join("data");
    let process = ServeProcess::start(&data_dir, &["--set", "store.disk_free_bytes_min=0"], &[]);
    let pid = process.pid();
    let api = Api::new(&process.url);
    api.ready().await;
    let mut tally = Tally::default();
    load(&api, &mut tally, "before", 200).await;

    // Fill to the last byte while commands keep coming: the journal's writes meet ENOSPC.
    let filler = fill(&disk, 0);
    let deadline = Instant::now() + PHASE_LIMIT;
    let mut round = 0;
    while api.get("/readyz").await.status == 200 {
        assert!(
            Instant::now() < deadline,
            "the journal never met the full disk"
        );
        load(&api, &mut tally, &format!("full-{round}"), 20).await;
        round += 1;
    }
    readyz_says(&api, "journal failed").await;
    let refused_before = tally.refused.values().sum::<usize>();
    load(&api, &mut tally, "failed", 10).await;
    assert_eq!(
        tally.refused.values().sum::<usize>(),
        refused_before + 10,
        "a failed journal refuses every command"
    );
    assert_eq!(api.get("/livez").await.status, 200, "the process stays up");

    std::fs::remove_file(&filler).expect("the filler is removed");
    until_acked(&api, &mut tally, "after").await;
    assert_eq!(api.get("/readyz").await.status, 200);
    load(&api, &mut tally, "later", 50).await;
    check_acked(&api, &tally).await;
    assert_eq!(process.pid(), pid, "recovered without a restart");
    assert!(
        process
            .log()
            .iter()
            .any(|line| line.contains("store reopened")),
        "the log says the store was reopened"
    );
    println!(
        "disk full (to the last byte): {} acknowledged, refused {:?}",
        tally.acked.len(),
        tally.refused
    );
    stop_and_verify(process, &data_dir);
}
