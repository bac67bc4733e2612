//! Projections: read models kept up to date from the log, with an exactly-once effect.
//!
//! A [`Projection`] is a [subscriber](crate::subscription) whose handler updates
//! [`View`]s: typed key-value tables that live in the runtime's own sled database.
//!
//! # Exactly once, without transactions
//! Delivery is at least once, and sled 0.34's `Batch` and transactions would take a
//! process-wide lock that slows the journal. Instead, every view record stores, next to its
//! value, the position of the last event applied to it; [`View::update`] applies an event to a
//! record only if the event's position is newer, as one plain `insert`. Replaying events after
//! a crash (the checkpoint is saved per page, after the records) therefore changes nothing that
//! was already applied, and the view converges to exactly the state a rebuild from scratch
//! gives. Deleting a record keeps a tombstone with its position for the same reason.
//!
//! Within one page of events, a subscriber's view writes are held in memory and written once
//! per record when the page ends, before the checkpoint is saved (see `WriteBuffer`); queries
//! see a page's effects once it is complete, which is also when [`Runtime::wait_for`](crate::Runtime::wait_for) reports it.
//!
//! # Rebuild without downtime
//! Views belong to a *generation* of their projection. [`Runtime::rebuild`](crate::Runtime::rebuild)
//! builds generation `g + 1` beside the live generation `g`, from position 0, while queries keep
//! reading generation `g`; once the new one has caught up with the head, the runtime makes it the
//! active generation (durably), stops the old subscriber and, after a grace period for queries
//! still reading it ([`OLD_GENERATION_GRACE`](crate::subscribe::OLD_GENERATION_GRACE)), drops
//! the old generation's trees.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, CodecError};
use crate::envelope::RecordedEvent;
use crate::store::StoreError;
use crate::subscription::HandlerError;
use crate::types::Position;

/// Format byte of view records.
const VIEW_FORMAT: u8 = 1;
const TOMBSTONE: u8 = 0;
const PRESENT: u8 = 1;

/// A projection: turns events into view updates. It is built by a factory from the
/// [`ViewSet`] of one generation, so that a rebuild gets fresh views.
pub trait Projection: Send + 'static {
    /// Handles one event, updating views with [`View::update`] at `event.position`.
    fn handle(&mut self, event: &RecordedEvent) -> Result<(), HandlerError>;
}

/// Why a view operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// The storage engine failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A stored record is damaged.
    #[error("view {view}: damaged record: {reason}")]
    Corrupt {
        /// The view.
        view: String,
        /// What is wrong.
        reason: String,
    },
}

/// The views of one generation of one projection.
#[derive(Debug, Clone)]
pub struct ViewSet {
    db: sled::Db,
    prefix: Arc<str>,
    /// Set for the views a subscriber writes: their writes wait here until the page ends.
    buffer: Option<Arc<WriteBuffer>>,
}

impl ViewSet {
    /// Views read and written directly (queries).
    pub(crate) fn new(db: sled::Db, projection: &str, generation: u64) -> ViewSet {
        ViewSet {
            db,
            prefix: Arc::from(format!("view/{projection}/{generation}/")),
            buffer: None,
        }
    }

    /// Views whose writes are held in `buffer` until the subscriber's page ends.
    pub(crate) fn buffered(
        db: sled::Db,
        projection: &str,
        generation: u64,
        buffer: Arc<WriteBuffer>,
    ) -> ViewSet {
        ViewSet {
            buffer: Some(buffer),
            ..ViewSet::new(db, projection, generation)
        }
    }

    /// The same views, their writes held in `buffer`.
    pub(crate) fn with_buffer(&self, buffer: Arc<WriteBuffer>) -> ViewSet {
        ViewSet {
            buffer: Some(buffer),
            ..self.clone()
        }
    }

    /// The buffer of these views' writes, if they are a subscriber's.
    pub(crate) fn buffer(&self) -> Option<&Arc<WriteBuffer>> {
        self.buffer.as_ref()
    }

    /// The view named `name` (created on first use).
    pub fn view<V>(&self, name: &str) -> Result<View<V>, ViewError> {
        let tree_name = format!("{}{name}", self.prefix);
        let tree = self
            .db
            .open_tree(tree_name.as_bytes())
            .map_err(|e| StoreError::Io {
                op: "opening a view",
                reason: e.to_string(),
            })?;
        Ok(View {
            tree,
            name: Arc::from(tree_name),
            buffer: self.buffer.clone(),
            _value: PhantomData,
        })
    }

    /// Drops every tree of this generation.
    pub(crate) fn drop_all(&self) -> Result<(), ViewError> {
        for name in self.db.tree_names() {
            if name.starts_with(self.prefix.as_bytes()) {
                self.db.drop_tree(&name).map_err(|e| StoreError::Io {
                    op: "dropping a view",
                    reason: e.to_string(),
                })?;
            }
        }
        Ok(())
    }
}

/// Drops the trees of every generation of `projection` below `generation`: what a swap left
/// behind when the runtime stopped before its grace period ended.
pub(crate) fn drop_generations_below(
    db: &sled::Db,
    projection: &str,
    generation: u64,
) -> Result<(), ViewError> {
    let prefix = format!("view/{projection}/");
    for name in db.tree_names() {
        let Some(rest) = name.strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        let old = rest
            .split(|&b| b == b'/')
            .next()
            .and_then(|g| std::str::from_utf8(g).ok())
            .and_then(|g| g.parse::<u64>().ok())
            .is_some_and(|g| g < generation);
        if old {
            db.drop_tree(&name).map_err(|e| StoreError::Io {
                op: "dropping an old view generation",
                reason: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// A typed key-value table of a projection, each record carrying the position of the last
/// event applied to it. Cheap to clone; readers and the projection share it.
#[derive(Debug)]
pub struct View<V> {
    tree: sled::Tree,
    name: Arc<str>,
    buffer: Option<Arc<WriteBuffer>>,
    _value: PhantomData<fn() -> V>,
}

impl<V> Clone for View<V> {
    fn clone(&self) -> Self {
        View {
            tree: self.tree.clone(),
            name: self.name.clone(),
            buffer: self.buffer.clone(),
            _value: PhantomData,
        }
    }
}

/// The view writes of one page of a subscriber, held in memory and written when the page ends
/// (before its checkpoint is saved): a record touched by many events of the page is written
/// once, and the handler's own reads see its writes. A crash before the write loses only
/// writes whose events are after the saved checkpoint, so they are redone — exactly once in
/// effect, as the position guard makes every record's replay harmless. Bounded by the records
/// one page touches.
#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    pending: parking_lot::Mutex<HashMap<Arc<str>, HeldWrites>>,
}

/// The held writes of one view: its tree and record key → encoded record.
#[derive(Debug)]
struct HeldWrites {
    tree: sled::Tree,
    records: HashMap<Vec<u8>, Vec<u8>>,
}

impl WriteBuffer {
    /// Runs `f` on the held record at `key` of `view`, if there is one.
    fn with<T>(&self, view: &str, key: &[u8], f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        let pending = self.pending.lock();
        pending.get(view)?.records.get(key).map(|bytes| f(bytes))
    }

    fn put(&self, view: &Arc<str>, tree: &sled::Tree, key: &[u8], bytes: Vec<u8>) {
        let mut pending = self.pending.lock();
        let held = pending.entry(view.clone()).or_insert_with(|| HeldWrites {
            tree: tree.clone(),
            records: HashMap::new(),
        });
        held.records.insert(key.to_vec(), bytes);
    }

    /// Writes every held record.
    pub(crate) fn flush(&self) -> Result<(), ViewError> {
        let pending = std::mem::take(&mut *self.pending.lock());
        for held in pending.into_values() {
            for (key, bytes) in held.records {
                held.tree.insert(key, bytes).map_err(io("writing a view"))?;
            }
        }
        Ok(())
    }
}

/// A record as stored: the position of the last event applied, and the value (or a tombstone).
struct Stored<V> {
    position: Position,
    value: Option<V>,
}

impl<V: Serialize + DeserializeOwned> View<V> {
    fn decode(&self, bytes: &[u8]) -> Result<Stored<V>, ViewError> {
        let corrupt = |reason: &str| ViewError::Corrupt {
            view: self.name.to_string(),
            reason: reason.into(),
        };
        if bytes.len() < 10 || bytes[0] != VIEW_FORMAT {
            return Err(corrupt("unknown format or too short"));
        }
        let mut position = [0u8; 8];
        position.copy_from_slice(&bytes[1..9]);
        let value = match bytes[9] {
            TOMBSTONE => None,
            PRESENT => Some(codec::decode_plain(&bytes[10..])?),
            _ => return Err(corrupt("unknown record tag")),
        };
        Ok(Stored {
            position: Position(u64::from_be_bytes(position)),
            value,
        })
    }

    fn encode(position: Position, value: Option<&V>) -> Result<Vec<u8>, ViewError> {
        let mut out = Vec::with_capacity(64);
        out.push(VIEW_FORMAT);
        out.extend_from_slice(&position.0.to_be_bytes());
        match value {
            None => out.push(TOMBSTONE),
            Some(v) => {
                out.push(PRESENT);
                out.extend_from_slice(&codec::encode_plain("view record", v)?);
            }
        }
        Ok(out)
    }

    fn read(&self, key: &[u8]) -> Result<Option<Stored<V>>, ViewError> {
        if let Some(held) = self
            .buffer
            .as_ref()
            .and_then(|b| b.with(&self.name, key, |bytes| self.decode(bytes)))
        {
            return Ok(Some(held?));
        }
        match self.tree.get(key).map_err(io("reading a view"))? {
            Some(bytes) => Ok(Some(self.decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn write(&self, key: &[u8], bytes: Vec<u8>) -> Result<(), ViewError> {
        match &self.buffer {
            Some(buffer) => buffer.put(&self.name, &self.tree, key, bytes),
            None => {
                self.tree.insert(key, bytes).map_err(io("writing a view"))?;
            }
        }
        Ok(())
    }

    /// The value at `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<V>, ViewError> {
        Ok(self.read(key)?.and_then(|stored| stored.value))
    }

    /// Applies the event at `position` to the record at `key`: `f` gets the current value and
    /// returns the new one (`None` deletes). Skipped — returning `false` — if the record has
    /// already seen this or a later event, which makes redelivery harmless.
    pub fn update(
        &self,
        key: &[u8],
        position: Position,
        f: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Result<bool, ViewError> {
        match self.try_update(key, position, |v| Ok::<_, std::convert::Infallible>(f(v)))? {
            Ok(applied) => Ok(applied),
            Err(never) => match never {},
        }
    }

    /// Like [`View::update`], but `f` may refuse (`Err`), in which case nothing is written.
    pub fn try_update<E>(
        &self,
        key: &[u8],
        position: Position,
        f: impl FnOnce(Option<V>) -> Result<Option<V>, E>,
    ) -> Result<Result<bool, E>, ViewError> {
        let current = self.read(key)?.unwrap_or(Stored {
            position: Position(0),
            value: None,
        });
        if current.position >= position {
            return Ok(Ok(false));
        }
        let next = match f(current.value) {
            Ok(next) => next,
            Err(e) => return Ok(Err(e)),
        };
        self.write(key, Self::encode(position, next.as_ref())?)?;
        Ok(Ok(true))
    }

    /// Rewrites the value at `key` keeping its position (no-op if absent).
    pub(crate) fn replace(&self, key: &[u8], f: impl FnOnce(V) -> V) -> Result<(), ViewError> {
        let Some(stored) = self.read(key)? else {
            return Ok(());
        };
        if let Some(value) = stored.value {
            let next = f(value);
            self.write(key, Self::encode(stored.position, Some(&next))?)?;
        }
        Ok(())
    }

    /// The records whose keys start with `prefix`, in key order (tombstones skipped). In a
    /// projection's handler this first writes the page's held records, so the scan sees them.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, V), ViewError>> + '_ {
        let flushed = self.buffer.as_ref().map(|b| b.flush()).transpose().err();
        flushed
            .map(Err)
            .into_iter()
            .chain(self.tree.scan_prefix(prefix).filter_map(move |item| {
                let (key, bytes) = match item {
                    Ok(kv) => kv,
                    Err(e) => return Some(Err(io("scanning a view")(e))),
                };
                match self.decode(&bytes) {
                    Ok(Stored { value: Some(v), .. }) => Some(Ok((key.to_vec(), v))),
                    Ok(Stored { value: None, .. }) => None,
                    Err(e) => Some(Err(e)),
                }
            }))
    }

    /// Every record, in key order.
    pub fn iter(&self) -> impl Iterator<Item = Result<(Vec<u8>, V), ViewError>> + '_ {
        self.scan_prefix(&[])
    }
}

fn io(op: &'static str) -> impl Fn(sled::Error) -> ViewError {
    move |e| {
        ViewError::Store(StoreError::Io {
            op,
            reason: e.to_string(),
        })
    }
}
