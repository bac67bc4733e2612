//! sled 0.34.7 on cutfs: it runs (flock, pwrite, set_len, recovery), and its `flush()` alone
//! is not durable, because it is `pwrite` plus `sync_file_range`, which never asks the
//! filesystem to sync; the same writes followed by an fsync of sled's files are.
//!
//! sled runs in a child process (this test binary again, in the role named by `ROLE_ENV`), so
//! that it can be killed at the cut while the filesystem lives on.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{cut, sync_dir, Bench};

/// Selects the child role: `flush` (insert, `flush()`), `fsync` (the same, then fsync of
/// sled's files and directories after each flush) or `read` (print the keys).
const ROLE_ENV: &str = "CUTFS_SLED_ROLE";

/// The sled directory for the child.
const DIR_ENV: &str = "CUTFS_SLED_DIR";

/// Keys the writer inserts, each acknowledged after its flush.
const KEYS: u64 = 50;

/// The child process: does nothing as an ordinary test.
#[test]
fn sled_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("the sled directory"));
    // libtest has written "test sled_store::sled_child ... " without a newline.
    println!();
    // No periodic flusher: its fsync would make the outcome depend on timing.
    let db = sled::Config::new()
        .path(&dir)
        .flush_every_ms(None)
        .open()
        .expect("sled opens on cutfs");
    if role == "read" {
        println!("keys {}", db.len());
        return;
    }
    // The directory entries of sled's files are made durable in both roles, so that the only
    // difference between them is the fsync of the data.
    sync_tree(&dir);
    for key in 0..KEYS {
        db.insert(key.to_be_bytes(), vec![7u8; 200])
            .expect("insert");
        db.flush().expect("flush");
        if role == "fsync" {
            sync_tree(&dir);
        }
        println!("ack {key}");
    }
    println!("done");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// fsync of every file and directory under `dir`, and of `dir`.
fn sync_tree(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("readdir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sync_tree(&path);
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .expect("fsync");
        }
    }
    sync_dir(dir);
}

/// Runs this binary as the sled child in `role`.
fn child(role: &str, dir: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--exact",
            "sled_store::sled_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped());
    command
}

/// Writes in `role` until done, cuts, and returns (keys acknowledged, keys after the cut).
fn write_cut_read(role: &str) -> (u64, u64) {
    let bench = Bench::new();
    let fs = bench.mount();
    let dir = fs.mountpoint().join("sled");
    std::fs::create_dir(&dir).expect("mkdir");
    sync_dir(fs.mountpoint());
    let mut writer = child(role, &dir).spawn().expect("child starts");
    let stdout = writer.stdout.take().expect("piped");
    let mut acknowledged = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("read");
        if line.starts_with("ack ") {
            acknowledged += 1;
        }
        if line == "done" {
            break;
        }
    }
    fs.freeze_and_kill(writer.id()).expect("freeze and kill");
    writer.wait().expect("reap");
    cut(fs);

    let fs = bench.mount();
    let out = child("read", &dir).output().expect("reader runs");
    assert!(out.status.success(), "sled reader: {out:?}");
    let out = String::from_utf8_lossy(&out.stdout);
    let keys = out
        .lines()
        .find_map(|line| line.strip_prefix("keys "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no key count in {out}"));
    drop(fs);
    (acknowledged, keys)
}

#[test]
fn sled_flush_alone_loses_acknowledged_writes() {
    let (acknowledged, kept) = write_cut_read("flush");
    eprintln!("sled flush(): {acknowledged} acknowledged, {kept} kept");
    assert_eq!(acknowledged, KEYS);
    assert!(kept < acknowledged, "flush() without fsync kept everything");
}

#[test]
fn sled_flush_with_fsync_keeps_acknowledged_writes() {
    let (acknowledged, kept) = write_cut_read("fsync");
    eprintln!("sled flush() + fsync: {acknowledged} acknowledged, {kept} kept");
    assert_eq!(acknowledged, KEYS);
    assert_eq!(kept, acknowledged);
}
