//! Unit tests of the durability rules and the image, without a mount.

use super::*;
use rand::SeedableRng as _;

fn fs() -> Model {
    Model::new(None, 0, 0)
}

fn file(m: &mut Model, parent: u64, name: &str) -> u64 {
    let ino = m
        .make(parent, name.as_ref(), false, 0o644, 0, 0)
        .expect("create")
        .ino;
    m.open(ino, false).expect("open");
    ino
}

fn dir(m: &mut Model, parent: u64, name: &str) -> u64 {
    m.make(parent, name.as_ref(), true, 0o755, 0, 0)
        .expect("mkdir")
        .ino
}

fn strict(m: &Model) -> (Model, CutReport) {
    m.cut::<rand::rngs::StdRng>(None)
}

/// The contents of `path` (names from the root) after a cut, `None` if it is gone.
fn contents(m: &Model, path: &[&str]) -> Option<Vec<u8>> {
    let mut ino = ROOT;
    for name in path {
        ino = m.lookup(ino, name.as_ref()).ok()?.ino;
    }
    let size = m.getattr(ino).ok()?.size;
    m.read(ino, 0, usize::try_from(size).ok()?).ok()
}

#[test]
fn unsynced_data_is_gone_and_synced_data_stays() {
    let mut m = fs();
    let f = file(&mut m, ROOT, "f");
    m.fsyncdir(ROOT).expect("fsyncdir");
    m.write(f, 0, b"synced").expect("write");
    m.fsync(f).expect("fsync");
    m.write(f, 6, b" and not").expect("write");
    assert_eq!(
        contents(&m, &["f"]).as_deref(),
        Some(&b"synced and not"[..])
    );
    let (after, report) = strict(&m);
    assert_eq!(contents(&after, &["f"]).as_deref(), Some(&b"synced"[..]));
    assert_eq!(report.files_reverted, 1);
    assert!(after.is_all_durable());
}

#[test]
fn a_new_file_needs_its_directory_synced() {
    let mut m = fs();
    let f = file(&mut m, ROOT, "f");
    m.write(f, 0, b"data").expect("write");
    m.fsync(f).expect("fsync");
    let (after, report) = strict(&m);
    assert_eq!(contents(&after, &["f"]), None);
    assert_eq!(report.files_lost, 1);
    m.fsyncdir(ROOT).expect("fsyncdir");
    let (after, _) = strict(&m);
    assert_eq!(contents(&after, &["f"]).as_deref(), Some(&b"data"[..]));
}

#[test]
fn renames_and_unlinks_are_undone_without_a_directory_fsync() {
    let mut m = fs();
    let f = file(&mut m, ROOT, "old");
    m.write(f, 0, b"v1").expect("write");
    m.fsync(f).expect("fsync");
    m.fsyncdir(ROOT).expect("fsyncdir");
    m.rename(ROOT, "old".as_ref(), ROOT, "new".as_ref(), false)
        .expect("rename");
    let (after, _) = strict(&m);
    assert_eq!(contents(&after, &["old"]).as_deref(), Some(&b"v1"[..]));
    assert_eq!(contents(&after, &["new"]), None);

    m.fsyncdir(ROOT).expect("fsyncdir");
    m.remove(ROOT, "new".as_ref(), false).expect("unlink");
    m.release(f);
    let (after, report) = strict(&m);
    assert_eq!(contents(&after, &["new"]).as_deref(), Some(&b"v1"[..]));
    assert_eq!(report.entries_restored, 1);

    m.fsyncdir(ROOT).expect("fsyncdir");
    let (after, _) = strict(&m);
    assert_eq!(contents(&after, &["new"]), None);
    assert!(
        !m.inodes.contains_key(&f),
        "the inode is freed once nothing names it"
    );
}

#[test]
fn a_rename_over_a_file_is_undone_to_the_old_target() {
    let mut m = fs();
    let a = file(&mut m, ROOT, "a");
    let b = file(&mut m, ROOT, "b");
    m.write(a, 0, b"a").expect("write");
    m.write(b, 0, b"b").expect("write");
    m.fsync(a).expect("fsync");
    m.fsync(b).expect("fsync");
    m.fsyncdir(ROOT).expect("fsyncdir");
    m.rename(ROOT, "a".as_ref(), ROOT, "b".as_ref(), false)
        .expect("rename");
    assert_eq!(contents(&m, &["b"]).as_deref(), Some(&b"a"[..]));
    let (after, _) = strict(&m);
    assert_eq!(contents(&after, &["a"]).as_deref(), Some(&b"a"[..]));
    assert_eq!(contents(&after, &["b"]).as_deref(), Some(&b"b"[..]));
}

#[test]
fn a_subdirectory_needs_its_parent_and_itself_synced() {
    let mut m = fs();
    let d = dir(&mut m, ROOT, "d");
    let f = file(&mut m, d, "f");
    m.write(f, 0, b"x").expect("write");
    m.fsync(f).expect("fsync");
    m.fsyncdir(d).expect("fsyncdir d");
    assert_eq!(contents(&strict(&m).0, &["d", "f"]), None);
    m.fsyncdir(ROOT).expect("fsyncdir root");
    assert_eq!(
        contents(&strict(&m).0, &["d", "f"]).as_deref(),
        Some(&b"x"[..])
    );
}

#[test]
fn truncation_and_sparse_writes() {
    let mut m = fs();
    let f = file(&mut m, ROOT, "f");
    m.fsyncdir(ROOT).expect("fsyncdir");
    m.write(f, 0, &[7u8; 10_000]).expect("write");
    m.fsync(f).expect("fsync");
    // Shrink into the middle of a page, then grow: the gap reads as zeros.
    let shrink = SetAttr {
        size: Some(5_000),
        ..SetAttr::default()
    };
    m.setattr(f, shrink).expect("truncate");
    m.write(f, 20_000, b"end").expect("sparse write");
    let now = contents(&m, &["f"]).expect("file");
    assert_eq!(now.len(), 20_003);
    assert!(now[..5_000].iter().all(|&b| b == 7));
    assert!(now[5_000..20_000].iter().all(|&b| b == 0));
    assert_eq!(&now[20_000..], b"end");
    // Not synced: the cut brings back the 10,000 sevens.
    assert_eq!(contents(&strict(&m).0, &["f"]), Some(vec![7u8; 10_000]));
    m.fsync(f).expect("fsync");
    assert_eq!(contents(&strict(&m).0, &["f"]), Some(now));
}

#[test]
fn an_fsync_shares_pages_instead_of_copying_the_file() {
    let mut m = fs();
    let f = file(&mut m, ROOT, "f");
    m.write(f, 0, &[1u8; 64 * PAGE_SIZE]).expect("write");
    m.fsync(f).expect("fsync");
    m.write(f, 3, b"x").expect("write");
    let Body::File(node) = &m.inodes[&f].body else {
        panic!("a file");
    };
    assert_eq!(node.dirty.len(), 1, "one page written since the sync");
    let shared = node
        .current
        .pages
        .iter()
        .filter(|(i, p)| Arc::ptr_eq(p, &node.durable.pages[*i]))
        .count();
    assert_eq!(shared, 63, "every page but the written one is shared");
}

#[test]
fn capacity_gives_enospc_and_statfs_agrees() {
    let mut m = Model::new(Some(10_000), 0, 0);
    let f = file(&mut m, ROOT, "f");
    m.write(f, 0, &[1u8; 6_000]).expect("write");
    assert_eq!(m.space().expect("statfs").free_bytes, 4_000);
    let g = file(&mut m, ROOT, "g");
    assert_eq!(m.write(g, 0, &[1u8; 4_001]), Err(Errno::ENOSPC));
    m.write(g, 0, &[1u8; 4_000]).expect("fits exactly");
    assert_eq!(m.space().expect("statfs").free_bytes, 0);
    // Overwriting in place needs no room; extending by a truncate does.
    m.write(f, 0, &[2u8; 6_000]).expect("overwrite");
    let grow = SetAttr {
        size: Some(6_001),
        ..SetAttr::default()
    };
    assert_eq!(m.setattr(f, grow).map(|_| ()), Err(Errno::ENOSPC));
    // Unlinking a file that is still open keeps its space taken until the close.
    m.remove(ROOT, "g".as_ref(), false).expect("unlink");
    assert_eq!(m.space().expect("statfs").free_bytes, 0);
    m.release(g);
    assert_eq!(m.space().expect("statfs").free_bytes, 4_000);
}

#[test]
fn freeze_fails_everything_with_eio() {
    let mut m = fs();
    let f = file(&mut m, ROOT, "f");
    m.freeze();
    assert_eq!(m.fsync(f), Err(Errno::EIO));
    assert_eq!(m.fsyncdir(ROOT), Err(Errno::EIO));
    assert_eq!(m.write(f, 0, b"x"), Err(Errno::EIO));
    assert_eq!(m.getattr(ROOT).map(|_| ()), Err(Errno::EIO));
    // The image of a frozen filesystem is still its durable state, and it is live again.
    let (after, _) = strict(&m);
    assert!(after.getattr(ROOT).is_ok());
}

#[test]
fn posix_errors_of_the_namespace() {
    let mut m = fs();
    let d = dir(&mut m, ROOT, "d");
    file(&mut m, d, "f");
    file(&mut m, ROOT, "g");
    assert_eq!(m.remove(ROOT, "d".as_ref(), true), Err(Errno::ENOTEMPTY));
    assert_eq!(m.remove(ROOT, "d".as_ref(), false), Err(Errno::EISDIR));
    assert_eq!(m.remove(ROOT, "g".as_ref(), true), Err(Errno::ENOTDIR));
    assert_eq!(
        m.rename(ROOT, "d".as_ref(), d, "inside".as_ref(), false),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        m.rename(ROOT, "g".as_ref(), ROOT, "d".as_ref(), false),
        Err(Errno::EISDIR)
    );
    assert_eq!(
        m.rename(d, "f".as_ref(), ROOT, "g".as_ref(), true),
        Err(Errno::EEXIST)
    );
    assert_eq!(
        m.make(ROOT, "g".as_ref(), false, 0o644, 0, 0).map(|_| ()),
        Err(Errno::EEXIST)
    );
}

#[test]
fn an_image_round_trips_the_durable_state() {
    let mut m = fs();
    let d = dir(&mut m, ROOT, "d");
    let f = file(&mut m, d, "f");
    m.write(f, 0, &[9u8; 3 * PAGE_SIZE + 17]).expect("write");
    m.fsync(f).expect("fsync");
    m.fsyncdir(d).expect("fsyncdir");
    m.fsyncdir(ROOT).expect("fsyncdir");
    m.write(f, 0, b"unsynced").expect("write");
    let (after, _) = strict(&m);
    let bytes = crate::image::encode(&after);
    let loaded = crate::image::decode(&bytes, None).expect("decode");
    assert_eq!(
        contents(&loaded, &["d", "f"]),
        Some(vec![9u8; 3 * PAGE_SIZE + 17])
    );
    assert!(loaded.is_all_durable());
    let mut corrupt = bytes.clone();
    corrupt[20] ^= 1;
    assert!(crate::image::decode(&corrupt, None).is_err());
}

#[test]
fn torn_mode_keeps_some_unsynced_pages_and_strict_keeps_none() {
    let mut m = fs();
    let f = file(&mut m, ROOT, "f");
    m.fsyncdir(ROOT).expect("fsyncdir");
    m.write(f, 0, &[0u8; 100 * PAGE_SIZE]).expect("write");
    m.fsync(f).expect("fsync");
    m.write(f, 0, &[1u8; 100 * PAGE_SIZE])
        .expect("overwrite, unsynced");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (after, report) = m.cut(Some((0.5, &mut rng)));
    let data = contents(&after, &["f"]).expect("file");
    let survived = data.chunks(PAGE_SIZE).filter(|p| p[0] == 1).count();
    assert!(
        (20..80).contains(&survived),
        "about half of 100 pages, got {survived}"
    );
    assert_eq!(report.pages_dropped, 100 - survived as u64);
    assert!(data.chunks(PAGE_SIZE).all(|p| p.iter().all(|&b| b == p[0])));
    let (strict_after, _) = strict(&m);
    assert_eq!(
        contents(&strict_after, &["f"]),
        Some(vec![0u8; 100 * PAGE_SIZE])
    );
}
