//! SQLite under power cuts: a program known to sync correctly keeps every committed row, and
//! the same program told not to sync loses them, which shows the cuts really drop bytes.
//!
//! SQLite is driven through Python's `sqlite3` module in child processes (Python 3.11 and
//! SQLite 3.40 on the build machine), so that the writer can be killed mid-transaction. A
//! writer prints each id after its `COMMIT` returned; the test freezes the filesystem at a
//! random moment, kills the writer, cuts, remounts, and reads the rows back.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use annals_cutfs::Options;
use rand::Rng as _;

use crate::support::{cut, cycles, Bench};

/// Creates the table (durably: `synchronous=EXTRA`), then, unless `setup` is the mode, inserts
/// rows one committed transaction each and prints each id once its COMMIT returned.
const WRITER: &str = r#"
import random, sqlite3, sys
path, journal, sync = sys.argv[1], sys.argv[2], sys.argv[3]
con = sqlite3.connect(path, isolation_level=None)
con.execute(f"PRAGMA journal_mode={journal}").fetchall()
if sync == "setup":
    con.execute("PRAGMA synchronous=EXTRA")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    sys.exit(0)
con.execute(f"PRAGMA synchronous={sync}")
next_id = (con.execute("SELECT max(id) FROM t").fetchone()[0] or 0) + 1
rng = random.Random(next_id)
print("ready", flush=True)
while True:
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO t VALUES (?, randomblob(?))", (next_id, rng.randrange(10, 6000)))
    con.execute("COMMIT")
    print(next_id, flush=True)
    next_id += 1
"#;

/// Prints `integrity_check`'s verdict, then the ids in the table.
const READER: &str = r#"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
rows = con.execute("PRAGMA integrity_check").fetchall()
print(rows[0][0] if len(rows) == 1 else repr(rows))
print(" ".join(str(r[0]) for r in con.execute("SELECT id FROM t ORDER BY id")))
"#;

/// What one kill/cut cycle saw.
#[derive(Debug, Default)]
struct Cycle {
    /// Ids whose COMMIT returned before the cut.
    acknowledged: BTreeSet<u64>,
    /// Ids in the table after the cut and a remount.
    present: BTreeSet<u64>,
}

impl Cycle {
    fn lost(&self) -> usize {
        self.acknowledged.difference(&self.present).count()
    }
}

/// Runs `cycles()` cycles of: mount, check, write with `journal`/`sync` until a random
/// moment, freeze, kill, cut. Returns what each cycle acknowledged and what survived it.
fn run(journal: &str, sync: &str) -> Vec<Cycle> {
    run_with(journal, sync, &Options::default())
}

fn run_with(journal: &str, sync: &str, options: &Options) -> Vec<Cycle> {
    let bench = Bench::with(options);
    let fs = bench.mount();
    let db = fs.mountpoint().join("test.db");
    python(WRITER, &db, &[journal, "setup"]);
    cut(fs);
    let mut rng = rand::thread_rng();
    let mut cycles_seen: Vec<Cycle> = Vec::new();
    let mut before = read(&bench);
    for _ in 0..cycles() {
        let fs = bench.mount();
        let mut writer = Command::new("python3")
            .args(["-c", WRITER])
            .arg(&db)
            .args([journal, sync])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let stdout = writer.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let ready = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the writer starts");
        assert_eq!(ready, "ready");
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..400)));
        // The power cut: the writer stops mid-flight, nothing syncs after that instant.
        fs.freeze_and_kill(writer.id()).expect("freeze and kill");
        writer.wait().expect("reap the writer");
        reader.join().expect("reader thread");
        let acknowledged: BTreeSet<u64> = lines
            .try_iter()
            .map(|line| line.parse().expect("an id per line"))
            .collect();
        cut(fs);
        let present = read(&bench);
        // A row that survived one cut survives the next (nothing the writer does deletes).
        assert!(
            present.is_superset(&before) || sync == "OFF",
            "rows of earlier cycles vanished: {:?}",
            before.difference(&present).collect::<Vec<_>>()
        );
        eprintln!(
            "{journal}/{sync}: {} acknowledged, {} lost",
            acknowledged.len(),
            acknowledged.difference(&present).count()
        );
        before = present.clone();
        cycles_seen.push(Cycle {
            acknowledged,
            present,
        });
    }
    cycles_seen
}

/// Mounts, checks integrity, returns the ids, cuts (reading may roll back a hot journal).
fn read(bench: &Bench) -> BTreeSet<u64> {
    let fs = bench.mount();
    let out = python(READER, &fs.mountpoint().join("test.db"), &[]);
    cut(fs);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("ok"), "integrity_check: {out}");
    lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(|id| id.parse().expect("an id"))
        .collect()
}

fn python(script: &str, db: &Path, args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(db)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn totals(cycles: &[Cycle]) -> (usize, usize) {
    let acknowledged = cycles.iter().map(|c| c.acknowledged.len()).sum();
    let lost = cycles.iter().map(Cycle::lost).sum();
    (acknowledged, lost)
}

#[test]
fn sqlite_delete_journal_synchronous_extra_keeps_every_committed_row() {
    let cycles = run("DELETE", "EXTRA");
    let (acknowledged, lost) = totals(&cycles);
    eprintln!("SQLite DELETE/EXTRA: {acknowledged} acknowledged rows, {lost} lost");
    assert!(acknowledged > 0, "the writer committed nothing");
    assert_eq!(lost, 0, "{cycles:?}");
}

#[test]
fn sqlite_wal_synchronous_full_keeps_every_committed_row() {
    let cycles = run("WAL", "FULL");
    let (acknowledged, lost) = totals(&cycles);
    eprintln!("SQLite WAL/FULL: {acknowledged} acknowledged rows, {lost} lost");
    assert!(acknowledged > 0, "the writer committed nothing");
    assert_eq!(lost, 0, "{cycles:?}");
}

/// SQLite documents that in DELETE mode `synchronous=FULL` does not sync the directory after
/// unlinking the journal, its commit point: a power cut right after COMMIT can bring the
/// journal back and roll back that last transaction ("EXTRA provides additional durability if
/// the commit is followed closely by a power loss"). cutfs shows exactly that: at most the last
/// acknowledged transaction of a cycle is lost, never an earlier one.
#[test]
fn sqlite_delete_journal_synchronous_full_loses_at_most_the_last_commit() {
    let cycles = run("DELETE", "FULL");
    let (acknowledged, lost) = totals(&cycles);
    eprintln!("SQLite DELETE/FULL: {acknowledged} acknowledged rows, {lost} lost");
    assert!(acknowledged > 0, "the writer committed nothing");
    for cycle in &cycles {
        let lost: Vec<_> = cycle.acknowledged.difference(&cycle.present).collect();
        assert!(
            lost.is_empty() || lost == [cycle.acknowledged.last().expect("some")],
            "more than the last commit lost: {lost:?}"
        );
    }
}

/// The negative control: with `synchronous=OFF` SQLite never fsyncs, so in strict mode every
/// row a cycle acknowledged is lost. If this passed with rows kept, the cuts would prove nothing.
#[test]
fn sqlite_synchronous_off_loses_committed_rows() {
    let cycles = run("DELETE", "OFF");
    let (acknowledged, lost) = totals(&cycles);
    eprintln!("SQLite DELETE/OFF: {acknowledged} acknowledged rows, {lost} lost");
    assert!(acknowledged > 0, "the writer committed nothing");
    for cycle in &cycles {
        assert_eq!(cycle.lost(), cycle.acknowledged.len(), "{cycle:?}");
    }
}

/// Torn mode: at each cut, unsynced pages, sizes and directories reach the disk at random. A
/// program that syncs correctly keeps every committed row here too, and its database stays
/// consistent whatever subset of its unsynced writes survived.
fn torn(journal: &str, sync: &str) {
    let options = Options {
        torn: Some(0.5),
        ..Options::default()
    };
    let cycles = run_with(journal, sync, &options);
    let (acknowledged, lost) = totals(&cycles);
    eprintln!("SQLite {journal}/{sync} torn: {acknowledged} acknowledged rows, {lost} lost");
    assert!(acknowledged > 0, "the writer committed nothing");
    assert_eq!(lost, 0, "{cycles:?}");
}

#[test]
fn sqlite_wal_synchronous_full_survives_torn_cuts() {
    torn("WAL", "FULL");
}

#[test]
fn sqlite_delete_journal_synchronous_extra_survives_torn_cuts() {
    torn("DELETE", "EXTRA");
}
