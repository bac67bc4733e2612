//! The read side's state on sled: one write per commit, compaction into keyed trees on a thread
//! of its own.
//!
//! # Layout
//! Each space of the [`StateStore`] is a sled tree of the same name (`checkpoints`, `parked`,
//! `deadlines`, `view/{projection}/{generation}/{view}`, …), so stores written before this
//! layout read as they are. A commit does **not** write its records into those trees: it
//! writes the whole encoded [`Changes`] set as one record of the `state-wal` tree, keyed by a
//! sequence number, and puts its records in an in-memory *overlay* that reads consult first.
//! A **compactor** thread then takes everything in the overlay at once, writes the latest value
//! of each key into its tree (a key written by many commits is written once), removes the
//! compacted `state-wal` records, and drops what it wrote from the overlay.
//!
//! Why: a sled insert costs ~5 µs of CPU whatever its size, and the read side of the orders
//! workload wrote one per view record, process instance, deadline and checkpoint, all on the
//! subscribers' thread (`Tree::insert` was 17% of the busiest thread's samples, issue 11). Now a
//! subscriber's page costs it one insert, atomically, and the keyed writes move to the
//! compactor, on the other core, fewer of them the further it lags. sled's `Batch` would also
//! have been atomic but takes a process-wide lock that stalls the journal (about 11k batches/s
//! measured, see the [journal's docs](super)).
//!
//! # Crash consistency
//! A commit is one sled insert, so a crash keeps it whole or loses it whole; sled keeps a
//! prefix of its log, so lost commits are a suffix. On open, every `state-wal` record left is
//! applied to the trees in sequence order and removed before anything is read: a compaction
//! cut short is redone (applying a record twice writes the same final values). Commits become
//! durable with the journal's next sync, which covers the whole database.
//!
//! # Bounds
//! The overlay holds at most [`PENDING_BYTES_MAX`] bytes; a commit that finds it fuller waits
//! for the compactor (backpressure on the subscriber that commits, never on the journal). A
//! failed compaction fails the state store: later commits are refused with the reason, reads go
//! on, and reopening the store redoes the compaction from `state-wal`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

use super::io;
use crate::store::state::{merge_range, Changes, Records, StateStore, SPACE_LEN_MAX};
use crate::store::StoreError;

/// The tree of commits not yet compacted.
pub(crate) const WAL_TREE: &str = "state-wal";

/// Most bytes of commits waiting in the overlay before `commit` waits for the compactor.
pub const PENDING_BYTES_MAX: usize = 64 << 20;

/// How long commits gather in the overlay before the compactor writes them (unless it is half
/// full): a record that several commits change within it is written once.
pub const COMPACTION_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Trees of the journal and of sled itself, which no space may name.
const RESERVED: &[&str] = &[
    "log",
    "heads",
    "skips",
    "commands",
    "snapshots",
    "meta",
    WAL_TREE,
    "__sled__default",
];

/// The sled state store: one change record per commit in a write-ahead tree, compacted into a
/// tree per space on its own thread (see [`SledStore`](super::SledStore)).
#[derive(Debug)]
pub struct SledState {
    shared: Arc<Shared>,
    compactor: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    db: sled::Db,
    wal: sled::Tree,
    trees: RwLock<HashMap<String, sled::Tree>>,
    pending: Mutex<Pending>,
    /// The compactor waits here for commits.
    work: Condvar,
    /// Committers wait here for room in the overlay.
    room: Condvar,
    /// One compaction at a time (the compactor's, or one asked for by `drop_space`).
    compaction: Mutex<()>,
    closing: AtomicBool,
}

#[derive(Debug, Default)]
struct Pending {
    /// The sequence number of the next commit.
    next_seq: u64,
    /// The first commit whose `state-wal` record is still there.
    first_uncompacted: u64,
    /// Per space and key, the latest value not yet compacted and the commit that set it.
    overlay: HashMap<String, Overlay>,
    bytes: usize,
    /// Why compaction failed, if it did: commits are refused from then on.
    failed: Option<Arc<str>>,
}

/// The pending changes of one space: key → (commit, value or `None` for a deletion).
type Overlay = BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)>;

fn entry_bytes(key: &[u8], value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + 48
}

impl SledState {
    /// Opens the state store in `db`: applies the commits a crash left uncompacted, then starts
    /// the compactor.
    pub(crate) fn open(db: &sled::Db) -> Result<SledState, StoreError> {
        let wal = db
            .open_tree(WAL_TREE)
            .map_err(io("opening the read side's change log"))?;
        let shared = Arc::new(Shared {
            db: db.clone(),
            wal,
            trees: RwLock::new(HashMap::new()),
            pending: Mutex::new(Pending::default()),
            work: Condvar::new(),
            room: Condvar::new(),
            compaction: Mutex::new(()),
            closing: AtomicBool::new(false),
        });
        let next_seq = shared.replay()?;
        {
            let mut pending = shared.pending.lock();
            pending.next_seq = next_seq;
            pending.first_uncompacted = next_seq;
        }
        let worker = shared.clone();
        let compactor = std::thread::Builder::new()
            .name("annals-state-compactor".into())
            .spawn(move || worker.run())
            .map_err(|e| StoreError::Io {
                op: "starting the read side's compactor",
                reason: e.to_string(),
            })?;
        Ok(SledState {
            shared,
            compactor: Mutex::new(Some(compactor)),
        })
    }

    /// Compacts what is pending and stops the compactor (at shutdown). Idempotent.
    pub(crate) fn close(&self) -> Result<(), StoreError> {
        {
            // Under the lock the compactor checks `closing` under before it waits: set and
            // notified outside it, the wake-up could fall between its check and its wait, and
            // it would wait for good (seen: a test hung in `close`).
            let _pending = self.shared.pending.lock();
            self.shared.closing.store(true, Ordering::SeqCst);
            self.shared.work.notify_all();
        }
        if let Some(thread) = self.compactor.lock().take() {
            if thread.join().is_err() {
                return Err(StoreError::Io {
                    op: "stopping the read side's compactor",
                    reason: "the compactor thread panicked".into(),
                });
            }
        }
        match self.shared.pending.lock().failed.clone() {
            Some(reason) => Err(StoreError::Failed { reason }),
            None => Ok(()),
        }
    }
}

impl Drop for SledState {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Shared {
    /// Applies and removes every `state-wal` record, in order; the next sequence number.
    fn replay(&self) -> Result<u64, StoreError> {
        let mut next = 0;
        let mut applied = Vec::new();
        for item in self.wal.iter() {
            let (key, bytes) = item.map_err(io("reading the read side's change log"))?;
            let seq = <[u8; 8]>::try_from(key.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: format!("{WAL_TREE} key {key:?}"),
                    reason: "not 8 bytes".into(),
                })?;
            let changes = Changes::decode(&bytes).map_err(|e| StoreError::Corrupt {
                what: format!("{WAL_TREE} record {seq}"),
                reason: format!("{e}; the read side can be rebuilt from the log by removing the tree's records (or the projection's checkpoints)"),
            })?;
            for (space, key, value) in changes.iter() {
                self.write(space, key, value)?;
            }
            applied.push(key);
            next = seq + 1;
        }
        for key in applied {
            self.wal
                .remove(key)
                .map_err(io("clearing the read side's change log"))?;
        }
        if next > 0 {
            tracing::info!(
                commits = next,
                "applied the read side's uncompacted commits"
            );
        }
        Ok(next)
    }

    fn tree(&self, space: &str) -> Result<sled::Tree, StoreError> {
        if let Some(tree) = self.trees.read().get(space) {
            return Ok(tree.clone());
        }
        check_space(space)?;
        let tree = self
            .db
            .open_tree(space.as_bytes())
            .map_err(io("opening a read-side tree"))?;
        self.trees.write().insert(space.to_string(), tree.clone());
        Ok(tree)
    }

    /// The tree of `space` if it exists: reads never create one (a read-only tool must leave
    /// the database as it found it).
    fn existing_tree(&self, space: &str) -> Result<Option<sled::Tree>, StoreError> {
        if let Some(tree) = self.trees.read().get(space) {
            return Ok(Some(tree.clone()));
        }
        let exists = self
            .db
            .tree_names()
            .iter()
            .any(|name| name.as_ref() == space.as_bytes());
        if exists {
            self.tree(space).map(Some)
        } else {
            Ok(None)
        }
    }

    fn write(&self, space: &str, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        let tree = self.tree(space)?;
        match value {
            Some(value) => tree.insert(key, value).map(drop),
            None => tree.remove(key).map(drop),
        }
        .map_err(io("writing the read side"))
    }

    /// The compactor's loop: compact whatever is pending, wait for more, until closed (then
    /// compact what is left).
    fn run(&self) {
        loop {
            {
                let mut pending = self.pending.lock();
                while pending.overlay.is_empty()
                    && pending.failed.is_none()
                    && !self.closing.load(Ordering::SeqCst)
                {
                    self.work.wait(&mut pending);
                }
                if pending.failed.is_some()
                    || (pending.overlay.is_empty() && self.closing.load(Ordering::SeqCst))
                {
                    return;
                }
                // Let commits gather, so that a record several of them change is written once:
                // until the interval has passed, the overlay is half full, or the store closes.
                let until = std::time::Instant::now() + COMPACTION_INTERVAL;
                while pending.bytes < PENDING_BYTES_MAX / 2
                    && pending.failed.is_none()
                    && !self.closing.load(Ordering::SeqCst)
                {
                    if self.work.wait_until(&mut pending, until).timed_out() {
                        break;
                    }
                }
            }
            if let Err(e) = self.compact() {
                tracing::error!(error = %e, "compacting the read side failed; read-side commits are refused until the store is reopened");
                self.pending.lock().failed = Some(Arc::from(e.to_string()));
                self.room.notify_all();
                return;
            }
        }
    }

    /// Writes every pending value to its tree, then forgets the commits it covered.
    fn compact(&self) -> Result<(), StoreError> {
        let _one = self.compaction.lock();
        let (entries, first, upto) = {
            let pending = self.pending.lock();
            if pending.overlay.is_empty() {
                return Ok(());
            }
            let entries: Vec<(String, Vec<u8>, Option<Vec<u8>>)> = pending
                .overlay
                .iter()
                .flat_map(|(space, records)| {
                    records
                        .iter()
                        .map(|(k, (_, v))| (space.clone(), k.clone(), v.clone()))
                })
                .collect();
            (entries, pending.first_uncompacted, pending.next_seq)
        };
        for (space, key, value) in &entries {
            self.write(space, key, value.as_deref())?;
        }
        for seq in first..upto {
            self.wal
                .remove(seq.to_be_bytes())
                .map_err(io("clearing the read side's change log"))?;
        }
        let mut pending = self.pending.lock();
        pending.first_uncompacted = upto;
        let mut freed = 0;
        pending.overlay.retain(|_, records| {
            records.retain(|key, (seq, value)| {
                let keep = *seq >= upto;
                if !keep {
                    freed += entry_bytes(key, value.as_deref());
                }
                keep
            });
            !records.is_empty()
        });
        pending.bytes = pending.bytes.saturating_sub(freed);
        drop(pending);
        self.room.notify_all();
        Ok(())
    }
}

fn check_space(space: &str) -> Result<(), StoreError> {
    if space.is_empty() || space.len() > SPACE_LEN_MAX || RESERVED.contains(&space) {
        return Err(StoreError::Corrupt {
            what: format!("read-side space {space:?}"),
            reason: "empty, too long, or the name of a journal tree".into(),
        });
    }
    Ok(())
}

impl StateStore for SledState {
    fn get(&self, space: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        {
            let pending = self.shared.pending.lock();
            if let Some((_, value)) = pending.overlay.get(space).and_then(|r| r.get(key)) {
                return Ok(value.clone());
            }
        }
        // Not pending: it is in its tree (the compactor writes there before forgetting it).
        let Some(tree) = self.shared.existing_tree(space)? else {
            return Ok(None);
        };
        Ok(tree
            .get(key)
            .map_err(io("reading the read side"))?
            .map(|v| v.to_vec()))
    }

    fn range(
        &self,
        space: &str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Records, StoreError> {
        // The pending changes first: a value the compactor moves to its tree meanwhile is then
        // seen twice (the same value), never missed.
        let upper: Vec<(Vec<u8>, Option<Vec<u8>>)> = {
            let pending = self.shared.pending.lock();
            let mut live = 0;
            pending
                .overlay
                .get(space)
                .into_iter()
                .flat_map(|records| records.range::<[u8], _>((from, to)))
                .take_while(|(_, (_, value))| {
                    let more = live < limit;
                    live += usize::from(value.is_some());
                    more
                })
                .map(|(k, (_, v))| (k.clone(), v.clone()))
                .collect()
        };
        let Some(tree) = self.shared.existing_tree(space)? else {
            return merge_range(upper, std::iter::empty::<Result<_, StoreError>>(), limit);
        };
        let base = tree.range::<&[u8], _>((from, to)).map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(io("reading the read side"))
        });
        merge_range(upper, base, limit)
    }

    fn commit(&self, changes: Changes) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        for space in changes.spaces() {
            check_space(space)?;
        }
        let encoded = changes.encode();
        let mut pending = self.shared.pending.lock();
        while pending.bytes > PENDING_BYTES_MAX && pending.failed.is_none() {
            self.shared.work.notify_one();
            self.shared.room.wait(&mut pending);
        }
        if let Some(reason) = &pending.failed {
            return Err(StoreError::Failed {
                reason: reason.clone(),
            });
        }
        // Under the lock, so that `state-wal` order, overlay order and sequence numbers agree.
        let seq = pending.next_seq;
        self.shared
            .wal
            .insert(seq.to_be_bytes(), encoded)
            .map_err(io("writing the read side"))?;
        pending.next_seq += 1;
        let mut added = 0;
        let mut freed = 0;
        for (space, key, value) in changes.iter() {
            added += entry_bytes(key, value);
            let records = match pending.overlay.get_mut(space) {
                Some(records) => records,
                None => pending.overlay.entry(space.to_string()).or_default(),
            };
            if let Some((_, old)) = records.insert(key.to_vec(), (seq, value.map(<[u8]>::to_vec))) {
                freed += entry_bytes(key, old.as_deref());
            }
        }
        pending.bytes = (pending.bytes + added).saturating_sub(freed);
        drop(pending);
        self.shared.work.notify_one();
        Ok(())
    }

    fn spaces(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self
            .shared
            .db
            .tree_names()
            .into_iter()
            .filter_map(|name| String::from_utf8(name.to_vec()).ok())
            .filter(|name| name.starts_with(prefix) && !RESERVED.contains(&name.as_str()))
            .collect();
        let pending = self.shared.pending.lock();
        names.extend(
            pending
                .overlay
                .keys()
                .filter(|name| name.starts_with(prefix))
                .cloned(),
        );
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn drop_space(&self, space: &str) -> Result<(), StoreError> {
        check_space(space)?;
        // Whatever is pending for it reaches its tree first, so that a later compaction cannot
        // bring the dropped records back.
        self.shared.compact()?;
        self.shared.trees.write().remove(space);
        self.shared
            .db
            .drop_tree(space.as_bytes())
            .map_err(io("dropping a read-side tree"))?;
        Ok(())
    }
}
