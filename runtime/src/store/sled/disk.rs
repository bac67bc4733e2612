//! What "durable" means for a sled 0.34 directory, done in one place: [`Disk::sync`].
//!
//! # Why `Db::flush` is not enough
//! sled 0.34's `flush()` writes its log buffers with `pwrite` and `sync_file_range` (Linux,
//! `pagecache/iobuf.rs`). `sync_file_range` starts and waits for the write-back of those pages,
//! but it neither flushes the device's volatile write cache nor commits the file's metadata —
//! and the log file grows, so its size is metadata that must be committed for the bytes to be
//! found after a power cut. sled's only `sync_all` of the log file is in its background flusher,
//! which the store switches off (the journal decides when data is durable). Besides the log
//! file, sled writes:
//! - **blobs**: any message larger than a quarter of its segment size (a big value, or a tree
//!   node consolidated with big values) goes to a file of its own under `blobs/`, written and
//!   never synced, in a directory never synced;
//! - **snapshots** (`snap.*`): synced, then renamed into place and their predecessors unlinked
//!   — without syncing the directory, so the rename and the unlinks can be undone by a crash;
//! - **`conf`**: written once when the database is created, never synced.
//!
//! A power cut (or a kernel crash) keeps only what was fsynced; a `kill -9` keeps everything the
//! kernel already had, which is why only a test that drops unsynced bytes can see any of this.
//!
//! # What `sync` does
//! 1. `Db::flush`: every log message written so far reaches the file (in the page cache);
//! 2. every blob file not synced before is `fdatasync`ed, and if the set of blob files changed
//!    the `blobs/` directory is `fsync`ed (new entries persist, removed ones stay removed);
//! 3. if the set of entries of the data directory changed (a snapshot renamed into place, an old
//!    one removed), the directory is `fsync`ed;
//! 4. the log file `db` is `fdatasync`ed: its data, and its size.
//!
//! Blobs come before the log file so that a log message that survives a cut never names a blob
//! that did not (sled treats a missing blob as a message that was never written, but a torn one
//! as the end of its log). When a store is opened, `conf`, `blobs/`, the data directory and
//! its parent are synced too, so a store created just before a cut is found again.
//!
//! # The acknowledgement record: silent loss becomes a loud error
//! sled's recovery reads its log until the first message that fails its checksum and treats that
//! as the end: a damaged or lost tail would silently drop batches that were acknowledged. So the
//! journal keeps its own record of what it acknowledged, in the file `acknowledged` beside sled's:
//! after each sync that makes batches durable, and before any of them is acknowledged, it writes
//! the number of the last batch and the last log position made durable, and `fdatasync`s the
//! file. (The same batch number is written into sled with each batch, so a lost batch without
//! events — rejection outcomes — is noticed too.) On open, a store whose log ends before what
//! the record says was acknowledged is refused with [`StoreError::AcknowledgedDataLost`],
//! naming the range, instead of quietly rolling back.
//!
//! The record has two 4 KiB slots written alternately, each with a checksum, so a cut in the
//! middle of a write leaves the previous record intact; the file never changes size after it is
//! created, so its `fdatasync` commits no metadata.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::io as sled_io;
use super::Faults;
use crate::store::StoreError;
use crate::types::Position;

/// The name of the acknowledgement record in the data directory.
pub(crate) const ACKNOWLEDGED_FILE: &str = "acknowledged";
/// Bytes of one slot of the record (a page: a torn write damages at most this slot).
const SLOT_LEN: u64 = 4096;
/// `[magic: 8][batch: u64][position: u64][checksum: u64]`, big-endian.
const RECORD_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"ANNALSA1";

/// What the journal acknowledged, as recorded in [`ACKNOWLEDGED_FILE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Acknowledged {
    /// The number of the last batch made durable (batches are numbered from 1 per store).
    pub(crate) batch: u64,
    /// The last position made durable.
    pub(crate) position: Position,
}

/// The files of one open database, and what has been synced of them.
#[derive(Debug)]
pub(crate) struct Disk {
    dir: PathBuf,
    /// sled's log file, opened a second time: fsync acts on the file, whichever descriptor.
    log_file: File,
    ack_file: File,
    /// The next slot of the acknowledgement record to write (0 or 1).
    ack_slot: u64,
    acknowledged: Acknowledged,
    /// Blob files known to be synced (with their directory entries), and their length when
    /// they were: sled writes a blob once, from the front, so one that grew since is synced again.
    synced_blobs: HashMap<OsString, u64>,
    /// The entries of the data directory when it was last synced.
    synced_entries: Vec<OsString>,
}

impl Disk {
    /// Opens the files of the database sled just opened at `dir`, syncs what sled creates
    /// without syncing (`conf`, the directories), and reads the acknowledgement record
    /// (creating it, synced, if the store has none yet).
    pub(crate) fn open(dir: &Path) -> Result<Disk, StoreError> {
        let io_err = |op: &'static str| {
            move |e: io::Error| StoreError::Io {
                op,
                reason: e.to_string(),
            }
        };
        let log_file = File::open(dir.join("db")).map_err(io_err("opening the log file"))?;
        sync_file(&dir.join("conf")).map_err(io_err("syncing the database configuration"))?;
        let ack_path = dir.join(ACKNOWLEDGED_FILE);
        let existed = ack_path.exists();
        let ack_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&ack_path)
            .map_err(io_err("opening the acknowledgement record"))?;
        let (acknowledged, ack_slot) = if existed {
            read_record(&ack_file)?
        } else {
            // A new record: both slots empty but checksummed, at the full size, synced.
            ack_file
                .set_len(2 * SLOT_LEN)
                .map_err(io_err("creating the acknowledgement record"))?;
            for slot in 0..2 {
                write_slot(&ack_file, slot, Acknowledged::default())
                    .map_err(io_err("creating the acknowledgement record"))?;
            }
            ack_file
                .sync_all()
                .map_err(io_err("creating the acknowledgement record"))?;
            (Acknowledged::default(), 0)
        };
        let blobs = dir.join("blobs");
        sync_dir(&blobs).map_err(io_err("syncing the blobs directory"))?;
        sync_dir(dir).map_err(io_err("syncing the data directory"))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(io_err("syncing the data directory's parent"))?;
        }
        // Blobs that were there before this open may never have been synced: sync them now.
        let mut synced_blobs = HashMap::new();
        for name in list(&blobs).map_err(io_err("listing blobs"))? {
            let len = sync_blob(&blobs.join(&name)).map_err(io_err("syncing a blob"))?;
            synced_blobs.insert(name, len);
        }
        let synced_entries = list(dir).map_err(io_err("listing the data directory"))?;
        Ok(Disk {
            dir: dir.to_path_buf(),
            log_file,
            ack_file,
            ack_slot,
            acknowledged,
            synced_blobs,
            synced_entries,
        })
    }

    /// What the acknowledgement record says was made durable.
    pub(crate) fn acknowledged(&self) -> Acknowledged {
        self.acknowledged
    }

    /// Makes everything sled has been given so far durable; see the [module docs](self).
    pub(crate) fn sync(&mut self, db: &sled::Db, faults: &Faults) -> Result<(), StoreError> {
        if faults.take_fsync() {
            return Err(StoreError::Io {
                op: "fsync",
                reason: "injected fault".into(),
            });
        }
        db.flush().map_err(sled_io("flushing the log"))?;
        let io_err = |op: &'static str| {
            move |e: io::Error| StoreError::Io {
                op,
                reason: e.to_string(),
            }
        };
        self.sync_blobs().map_err(io_err("syncing blobs"))?;
        let entries = list(&self.dir).map_err(io_err("listing the data directory"))?;
        if entries != self.synced_entries {
            sync_dir(&self.dir).map_err(io_err("syncing the data directory"))?;
            self.synced_entries = entries;
        }
        self.log_file
            .sync_data()
            .map_err(io_err("fsync of the log file"))?;
        Ok(())
    }

    /// Syncs the blob files that are new, or grew, since the last sync. A blob can be listed
    /// while sled is still writing it (for an insert made after the flush began); it is synced
    /// again once it has grown, which it has by the time a flushed message names it.
    fn sync_blobs(&mut self) -> io::Result<()> {
        let blobs = self.dir.join("blobs");
        let names = list(&blobs)?;
        let mut entries_changed = names.len() != self.synced_blobs.len();
        let mut synced = HashMap::with_capacity(names.len());
        for name in names {
            let path = blobs.join(&name);
            let known = self.synced_blobs.get(&name).copied();
            let len = match std::fs::metadata(&path) {
                Ok(meta) => meta.len(),
                // Removed by sled's garbage collection since the listing: nothing to keep.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if known == Some(len) {
                synced.insert(name, len);
                continue;
            }
            entries_changed |= known.is_none();
            match sync_blob(&path) {
                Ok(len) => {
                    synced.insert(name, len);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if entries_changed {
            sync_dir(&blobs)?;
        }
        self.synced_blobs = synced;
        Ok(())
    }

    /// Records, durably, that everything through `acknowledged` is durable: called after the
    /// [`Disk::sync`] that made it so, before any of it is acknowledged.
    pub(crate) fn record(&mut self, acknowledged: Acknowledged) -> Result<(), StoreError> {
        if acknowledged == self.acknowledged {
            return Ok(());
        }
        let written = write_slot(&self.ack_file, self.ack_slot, acknowledged)
            .and_then(|()| self.ack_file.sync_data());
        written.map_err(|e| StoreError::Io {
            op: "recording acknowledged batches",
            reason: e.to_string(),
        })?;
        self.ack_slot = 1 - self.ack_slot;
        self.acknowledged = acknowledged;
        Ok(())
    }
}

fn sync_file(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `fdatasync`s a blob file; returns its length as of before the sync (all of which is durable).
fn sync_blob(path: &Path) -> io::Result<u64> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    file.sync_data()?;
    Ok(len)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The entry names of `dir`, sorted (empty if it does not exist).
fn list(dir: &Path) -> io::Result<Vec<OsString>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = entries
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort_unstable();
    Ok(names)
}

fn encode(acknowledged: Acknowledged) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&acknowledged.batch.to_be_bytes());
    out[16..24].copy_from_slice(&acknowledged.position.0.to_be_bytes());
    let checksum = xxhash_rust::xxh3::xxh3_64(&out[..24]);
    out[24..].copy_from_slice(&checksum.to_be_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<Acknowledged> {
    let bytes: &[u8; RECORD_LEN] = bytes.get(..RECORD_LEN)?.try_into().ok()?;
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_be_bytes(b)
    };
    (&bytes[..8] == MAGIC && u64_at(24) == xxhash_rust::xxh3::xxh3_64(&bytes[..24])).then(|| {
        Acknowledged {
            batch: u64_at(8),
            position: Position(u64_at(16)),
        }
    })
}

fn write_slot(file: &File, slot: u64, acknowledged: Acknowledged) -> io::Result<()> {
    file.write_all_at(&encode(acknowledged), slot * SLOT_LEN)
}

/// The newer valid slot, and the slot to write next (the other one).
fn read_record(file: &File) -> Result<(Acknowledged, u64), StoreError> {
    let mut slots = [None, None];
    for (slot, out) in (0u64..).zip(slots.iter_mut()) {
        let mut bytes = [0u8; RECORD_LEN];
        *out = match file.read_exact_at(&mut bytes, slot * SLOT_LEN) {
            Ok(()) => decode(&bytes),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => None,
            Err(e) => {
                return Err(StoreError::Io {
                    op: "reading the acknowledgement record",
                    reason: e.to_string(),
                })
            }
        };
    }
    match slots {
        [Some(a), Some(b)] if b.batch > a.batch => Ok((b, 0)),
        [Some(a), _] => Ok((a, 1)),
        [None, Some(b)] => Ok((b, 0)),
        [None, None] => Err(StoreError::Corrupt {
            what: format!("the acknowledgement record ({ACKNOWLEDGED_FILE})"),
            reason: "neither of its two slots is readable, so the store cannot tell whether \
                     acknowledged data was lost; if the log is known to be complete, remove the \
                     file to skip this check once"
                .into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_rejects_damage() {
        let a = Acknowledged {
            batch: 7,
            position: Position(1234),
        };
        let mut bytes = encode(a);
        assert_eq!(decode(&bytes), Some(a));
        bytes[20] ^= 1;
        assert_eq!(decode(&bytes), None);
        assert_eq!(decode(&[0u8; RECORD_LEN]), None);
    }

    #[test]
    fn the_newer_slot_wins_and_a_torn_slot_leaves_the_other() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Io {
            op: "tempdir",
            reason: e.to_string(),
        })?;
        let path = dir.path().join(ACKNOWLEDGED_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::Io {
                op: "open",
                reason: e.to_string(),
            })?;
        let at = |batch, position| Acknowledged {
            batch,
            position: Position(position),
        };
        let put = |slot, a| {
            write_slot(&file, slot, a).map_err(|e| StoreError::Io {
                op: "write",
                reason: e.to_string(),
            })
        };
        put(0, at(1, 10))?;
        put(1, at(2, 20))?;
        assert_eq!(read_record(&file)?, (at(2, 20), 0));
        put(0, at(3, 30))?;
        assert_eq!(read_record(&file)?, (at(3, 30), 1));
        // A torn write of slot 1 leaves slot 0's record.
        file.write_all_at(&[0xFF; 8], SLOT_LEN + 8)
            .map_err(|e| StoreError::Io {
                op: "write",
                reason: e.to_string(),
            })?;
        assert_eq!(read_record(&file)?, (at(3, 30), 1));
        file.write_all_at(&[0xFF; 8], 8)
            .map_err(|e| StoreError::Io {
                op: "write",
                reason: e.to_string(),
            })?;
        assert!(matches!(
            read_record(&file),
            Err(StoreError::Corrupt { .. })
        ));
        Ok(())
    }
}
