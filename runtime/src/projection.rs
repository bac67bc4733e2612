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
//! # Rebuild without downtime
//! Views belong to a *generation* of their projection. [`Runtime::rebuild`](crate::Runtime::rebuild)
//! builds generation `g + 1` beside the live generation `g`, from position 0, while queries keep
//! reading generation `g`; once the new one has caught up with the head, the runtime makes it the
//! active generation (durably), stops the old subscriber and drops the old generation's trees.

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
}

impl ViewSet {
    pub(crate) fn new(db: sled::Db, projection: &str, generation: u64) -> ViewSet {
        ViewSet {
            db,
            prefix: Arc::from(format!("view/{projection}/{generation}/")),
        }
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

/// A typed key-value table of a projection, each record carrying the position of the last
/// event applied to it. Cheap to clone; readers and the projection share it.
#[derive(Debug)]
pub struct View<V> {
    tree: sled::Tree,
    name: Arc<str>,
    _value: PhantomData<fn() -> V>,
}

impl<V> Clone for View<V> {
    fn clone(&self) -> Self {
        View {
            tree: self.tree.clone(),
            name: self.name.clone(),
            _value: PhantomData,
        }
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

    /// The value at `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<V>, ViewError> {
        match self.tree.get(key).map_err(io("reading a view"))? {
            Some(bytes) => Ok(self.decode(&bytes)?.value),
            None => Ok(None),
        }
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
        let current = match self.tree.get(key).map_err(io("reading a view"))? {
            Some(bytes) => self.decode(&bytes)?,
            None => Stored {
                position: Position(0),
                value: None,
            },
        };
        if current.position >= position {
            return Ok(Ok(false));
        }
        let next = match f(current.value) {
            Ok(next) => next,
            Err(e) => return Ok(Err(e)),
        };
        self.tree
            .insert(key, Self::encode(position, next.as_ref())?)
            .map_err(io("writing a view"))?;
        Ok(Ok(true))
    }

    /// Rewrites the value at `key` keeping its position (no-op if absent).
    pub(crate) fn replace(&self, key: &[u8], f: impl FnOnce(V) -> V) -> Result<(), ViewError> {
        let Some(bytes) = self.tree.get(key).map_err(io("reading a view"))? else {
            return Ok(());
        };
        let stored = self.decode(&bytes)?;
        if let Some(value) = stored.value {
            let next = f(value);
            self.tree
                .insert(key, Self::encode(stored.position, Some(&next))?)
                .map_err(io("writing a view"))?;
        }
        Ok(())
    }

    /// The records whose keys start with `prefix`, in key order (tombstones skipped).
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, V), ViewError>> + '_ {
        self.tree.scan_prefix(prefix).filter_map(move |item| {
            let (key, bytes) = match item {
                Ok(kv) => kv,
                Err(e) => return Some(Err(io("scanning a view")(e))),
            };
            match self.decode(&bytes) {
                Ok(Stored { value: Some(v), .. }) => Some(Ok((key.to_vec(), v))),
                Ok(Stored { value: None, .. }) => None,
                Err(e) => Some(Err(e)),
            }
        })
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
