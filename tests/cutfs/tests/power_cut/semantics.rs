//! The durability rules through the kernel: each rule in both directions, so that a filesystem
//! that kept everything (or nothing) would fail here.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;

use annals_cutfs::Options;

use crate::support::{cut, sync_dir, Bench};

#[test]
fn data_without_fsync_is_gone_and_with_fsync_it_stays() {
    let bench = Bench::new();
    let fs = bench.mount();
    let root = fs.mountpoint().to_path_buf();
    let mut synced = File::create(root.join("synced")).expect("create");
    synced.write_all(b"kept").expect("write");
    synced.sync_all().expect("fsync");
    let mut unsynced = File::create(root.join("unsynced")).expect("create");
    unsynced.write_all(b"lost").expect("write");
    // close(2) is no sync: the bytes of "unsynced" are in current state only.
    drop(unsynced);
    sync_dir(&root);
    // Written after the last fsync: gone at the cut, but visible until then.
    synced.write_all(b" and more").expect("write");
    assert_eq!(
        fs::read(root.join("synced")).expect("read"),
        b"kept and more"
    );
    drop(synced);
    let report = cut(fs);
    assert_eq!(report.files, 2);
    assert_eq!(report.files_reverted, 2);

    let fs = bench.mount();
    let root = fs.mountpoint();
    assert_eq!(fs::read(root.join("synced")).expect("read"), b"kept");
    assert_eq!(
        fs::read(root.join("unsynced")).expect("read"),
        b"",
        "the name was synced"
    );
}

#[test]
fn fdatasync_is_a_sync_too() {
    let bench = Bench::new();
    let fs = bench.mount();
    let root = fs.mountpoint().to_path_buf();
    let mut file = File::create(root.join("f")).expect("create");
    sync_dir(&root);
    file.write_all(b"data").expect("write");
    file.sync_data().expect("fdatasync");
    drop(file);
    cut(fs);
    let fs = bench.mount();
    assert_eq!(fs::read(fs.mountpoint().join("f")).expect("read"), b"data");
}

#[test]
fn a_new_file_needs_its_directory_fsynced() {
    let bench = Bench::new();
    let fs = bench.mount();
    let root = fs.mountpoint().to_path_buf();
    fs::create_dir(root.join("d")).expect("mkdir");
    sync_dir(&root);
    // "named" first, with the directory fsync; then "orphan", with its own fsync only.
    for name in ["named", "orphan"] {
        let mut file = File::create(root.join("d").join(name)).expect("create");
        file.write_all(name.as_bytes()).expect("write");
        file.sync_all().expect("fsync");
        if name == "named" {
            sync_dir(&root.join("d"));
        }
    }
    let report = cut(fs);
    assert_eq!(report.files_lost, 1);
    let fs = bench.mount();
    let d = fs.mountpoint().join("d");
    assert!(
        !d.join("orphan").exists(),
        "fsynced, but its directory was not"
    );
    assert_eq!(fs::read(d.join("named")).expect("read"), b"named");
}

#[test]
fn rename_and_unlink_without_a_directory_fsync_are_undone() {
    let bench = Bench::new();
    let fs = bench.mount();
    let root = fs.mountpoint().to_path_buf();
    for name in ["a", "b", "c"] {
        let mut file = File::create(root.join(name)).expect("create");
        file.write_all(name.as_bytes()).expect("write");
        file.sync_all().expect("fsync");
    }
    sync_dir(&root);
    fs::rename(root.join("a"), root.join("a2")).expect("rename");
    // The classic atomic replace, without the directory fsync: undone.
    fs::rename(root.join("b"), root.join("c")).expect("rename over c");
    fs::remove_file(root.join("c")).expect("unlink");
    assert!(!root.join("a").exists() && !root.join("c").exists());
    let report = cut(fs);
    assert_eq!(report.entries_restored, 3, "a, b and c are back");

    let fs = bench.mount();
    let root = fs.mountpoint().to_path_buf();
    for name in ["a", "b", "c"] {
        assert_eq!(fs::read(root.join(name)).expect("read"), name.as_bytes());
    }
    assert!(!root.join("a2").exists());
    // The same with the directory fsync: kept.
    fs::rename(root.join("a"), root.join("a2")).expect("rename");
    fs::rename(root.join("b"), root.join("c")).expect("rename over c");
    sync_dir(&root);
    cut(fs);
    let fs = bench.mount();
    let root = fs.mountpoint();
    let mut names: Vec<_> = fs::read_dir(root)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(names, ["a2", "c"]);
    assert_eq!(fs::read(root.join("c")).expect("read"), b"b");
}

#[test]
fn truncation_sparse_writes_and_the_unsynced_tail() {
    let bench = Bench::new();
    let fs = bench.mount();
    let root = fs.mountpoint().to_path_buf();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(root.join("f"))
        .expect("open");
    sync_dir(&root);
    file.write_all(&[7u8; 10_000]).expect("write");
    file.sync_all().expect("fsync");
    file.set_len(5_000).expect("truncate");
    file.write_all_at(b"end", 20_000).expect("sparse write");
    // Before the cut, reads see the current state: the shrink, the hole and the tail.
    let mut now = Vec::new();
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.read_to_end(&mut now).expect("read");
    assert_eq!(now.len(), 20_003);
    assert!(now[..5_000].iter().all(|&b| b == 7));
    assert!(now[5_000..20_000].iter().all(|&b| b == 0));
    assert_eq!(&now[20_000..], b"end");
    drop(file);
    cut(fs);

    let fs = bench.mount();
    let path = fs.mountpoint().join("f");
    assert_eq!(fs::read(&path).expect("read"), vec![7u8; 10_000]);
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(3).expect("truncate");
    file.sync_all().expect("fsync");
    file.set_len(8_000).expect("extend, unsynced");
    drop(file);
    cut(fs);
    let fs = bench.mount();
    assert_eq!(fs::read(fs.mountpoint().join("f")).expect("read"), [7u8; 3]);
}

#[test]
fn two_cuts_in_a_row_and_a_remount_without_a_cut() {
    let bench = Bench::new();
    let fs = bench.mount();
    let root = fs.mountpoint().to_path_buf();
    let mut file = File::create(root.join("f")).expect("create");
    file.write_all(b"one").expect("write");
    file.sync_all().expect("fsync");
    sync_dir(&root);
    drop(file);
    cut(fs);
    let fs = bench.mount();
    fs::write(fs.mountpoint().join("f"), b"two, unsynced").expect("write");
    cut(fs);
    let fs = bench.mount();
    assert_eq!(fs::read(fs.mountpoint().join("f")).expect("read"), b"one");
    let report = cut(fs);
    assert_eq!(
        report.files_reverted, 0,
        "nothing changed since the last cut"
    );
    // Unmounting without a cut leaves the image as it was.
    let fs = bench.mount();
    fs::write(fs.mountpoint().join("f"), b"three").expect("write");
    File::open(fs.mountpoint().join("f"))
        .expect("open")
        .sync_all()
        .expect("fsync");
    fs.unmount().expect("unmount");
    let fs = bench.mount();
    assert_eq!(fs::read(fs.mountpoint().join("f")).expect("read"), b"one");
}

#[test]
fn capacity_gives_enospc_and_statfs_counts_it() {
    const CAPACITY: u64 = 1 << 20;
    let bench = Bench::with(&Options {
        capacity_bytes: Some(CAPACITY),
        ..Options::default()
    });
    let fs = bench.mount();
    let root = fs.mountpoint().to_path_buf();
    let free = |path: &std::path::Path| {
        let stat = nix::sys::statvfs::statvfs(path).expect("statvfs");
        (
            stat.blocks() * stat.fragment_size(),
            stat.blocks_available() * stat.fragment_size(),
        )
    };
    assert_eq!(free(&root), (CAPACITY, CAPACITY));
    let mut file = File::create(root.join("big")).expect("create");
    file.write_all(&vec![1u8; 768 << 10])
        .expect("write 768 KiB");
    assert_eq!(free(&root), (CAPACITY, 256 << 10));
    let err = file
        .write_all(&vec![1u8; 512 << 10])
        .expect_err("past the capacity");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(file);
    fs::remove_file(root.join("big")).expect("unlink");
    assert_eq!(
        free(&root).1,
        CAPACITY,
        "an unlinked, closed file frees its space"
    );
    fs::write(root.join("fits"), vec![1u8; 1 << 20]).expect("exactly the capacity");
}

#[test]
fn freeze_makes_fsync_fail_with_eio() {
    let bench = Bench::new();
    let fs = bench.mount();
    let root = fs.mountpoint().to_path_buf();
    let mut file = File::create(root.join("f")).expect("create");
    sync_dir(&root);
    file.write_all(b"before").expect("write");
    fs.freeze().expect("freeze");
    let err = file.sync_all().expect_err("fsync after the freeze");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let err = file
        .write_all(b"after")
        .expect_err("write after the freeze");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(file);
    cut(fs);
    let fs = bench.mount();
    assert_eq!(fs::read(fs.mountpoint().join("f")).expect("read"), b"");
}

#[test]
fn flock_and_fcntl_locks_exclude_other_openers() {
    let bench = Bench::new();
    let fs = bench.mount();
    let path = fs.mountpoint().join("db");
    // flock, as sled takes it: two open file descriptions conflict, even in one process.
    let first = File::create(&path).expect("create");
    first.try_lock().expect("first flock");
    let second = File::open(&path).expect("open");
    assert!(
        second.try_lock().is_err(),
        "a second LOCK_EX|LOCK_NB must fail"
    );
    drop(first);
    second.try_lock().expect("free once the holder closed");
    // fcntl (POSIX) locks, as SQLite takes them, between two processes.
    let script = r#"
import fcntl, os, subprocess, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
other = "import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\ntry:\n fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n print('taken')\nexcept OSError:\n print('refused')"
print(subprocess.run([sys.executable, "-c", other, sys.argv[1]], capture_output=True, text=True).stdout.strip())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3 runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "refused",
        "{out:?}"
    );
}

#[test]
fn a_stale_mount_is_removed_before_mounting() {
    let bench = Bench::new();
    let fs = bench.mount();
    let pid = fs.pid().expect("running");
    // A crashed run: the filesystem process dies and its mount is left dead behind it.
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    std::mem::forget(fs);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fs::metadata(bench.mountpoint()).is_ok() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let err = fs::metadata(bench.mountpoint()).expect_err("a dead FUSE mount");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    let fs = bench.mount();
    assert!(fs::read_dir(fs.mountpoint())
        .expect("readdir")
        .next()
        .is_none());
}

/// What a test of another package (which has no `CARGO_BIN_EXE_cutfs`) uses to find the binary.
#[test]
fn cutfs_binary_is_found_beside_the_test_executable() {
    assert_eq!(
        annals_cutfs::cutfs_binary(),
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_cutfs"))
    );
}
