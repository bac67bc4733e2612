//! Projections: read models kept up to date from the log, with an exactly-once effect.
//!
//! A [`Projection`] is a [subscriber](crate::subscription) whose handler updates
//! [`View`]s: typed key-value tables kept in the runtime's [`StateStore`].
//!
//! # Exactly once
//! Views live in the runtime's [`StateStore`], one space per view and generation. A
//! projection's writes during a page of events are held in memory (see `PageWrites`) and
//! committed, with the subscriber's checkpoint, as **one atomic commit** when the page ends: a
//! crash keeps the page whole or redoes it whole from the checkpoint. A record touched by many
//! events of a page is written once, and the handler's own reads (and scans) see its writes.
//! Every record also stores the position of the last event applied to it, and
//! [`View::update`] skips an event it has already seen, so a redelivery that reaches a record
//! again changes nothing either; deleting a record keeps a tombstone with its position for the
//! same reason. Queries see a page's effects once it is committed, which is also when
//! [`Runtime::wait_for`](crate::Runtime::wait_for) reports it.
//!
//! # Rebuild without downtime
//! Views belong to a *generation* of their projection. [`Runtime::rebuild`](crate::Runtime::rebuild)
//! builds generation `g + 1` beside the live generation `g`, from position 0, while queries keep
//! reading generation `g`; once the new one has caught up with the head, the runtime makes it the
//! active generation (durably), stops the old subscriber and, after a grace period for queries
//! still reading it ([`OLD_GENERATION_GRACE`](crate::subscription::OLD_GENERATION_GRACE)), drops
//! the old generation's spaces.

use std::marker::PhantomData;
use std::ops::Bound;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::page::PageWrites;
use super::subscriber::HandlerError;
use crate::codec::{self, CodecError};
use crate::envelope::RecordedEvent;
use crate::store::state::{merge_range, prefix_end, SPACE_LEN_MAX};
use crate::store::{Changes, StateStore, StoreError};
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
    state: Arc<dyn StateStore>,
    prefix: Arc<str>,
    /// Set for the views a subscriber writes: their writes wait here until the page ends.
    buffer: Option<Arc<PageWrites>>,
}

impl ViewSet {
    /// Views read and written directly (queries).
    pub(crate) fn new(state: Arc<dyn StateStore>, projection: &str, generation: u64) -> ViewSet {
        ViewSet {
            state,
            prefix: Arc::from(format!("view/{projection}/{generation}/")),
            buffer: None,
        }
    }

    /// The same views, their writes held in `buffer` until the subscriber's page ends.
    pub(crate) fn with_buffer(&self, buffer: Arc<PageWrites>) -> ViewSet {
        ViewSet {
            buffer: Some(buffer),
            ..self.clone()
        }
    }

    /// The view named `name`.
    pub fn view<V>(&self, name: &str) -> Result<View<V>, ViewError> {
        let space = format!("{}{name}", self.prefix);
        if space.len() > SPACE_LEN_MAX {
            return Err(ViewError::Corrupt {
                view: space,
                reason: format!(
                    "the view's name makes a space name longer than {SPACE_LEN_MAX} bytes"
                ),
            });
        }
        Ok(View {
            state: self.state.clone(),
            space: Arc::from(space),
            buffer: self.buffer.clone(),
            _value: PhantomData,
        })
    }

    /// Drops every view of this generation.
    pub(crate) fn drop_all(&self) -> Result<(), ViewError> {
        for space in self.state.spaces(&self.prefix)? {
            self.state.drop_space(&space)?;
        }
        Ok(())
    }
}

/// Drops the views of every generation of `projection` below `generation`: what a swap left
/// behind when the runtime stopped before its grace period ended.
pub(crate) fn drop_generations_below(
    state: &dyn StateStore,
    projection: &str,
    generation: u64,
) -> Result<(), ViewError> {
    let prefix = format!("view/{projection}/");
    for space in state.spaces(&prefix)? {
        let old = space[prefix.len()..]
            .split('/')
            .next()
            .and_then(|g| g.parse::<u64>().ok())
            .is_some_and(|g| g < generation);
        if old {
            state.drop_space(&space)?;
        }
    }
    Ok(())
}

/// A typed key-value table of a projection, each record carrying the position of the last
/// event applied to it. Cheap to clone; readers and the projection share it.
#[derive(Debug)]
pub struct View<V> {
    state: Arc<dyn StateStore>,
    space: Arc<str>,
    buffer: Option<Arc<PageWrites>>,
    _value: PhantomData<fn() -> V>,
}

impl<V> Clone for View<V> {
    fn clone(&self) -> Self {
        View {
            state: self.state.clone(),
            space: self.space.clone(),
            buffer: self.buffer.clone(),
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
            view: self.space.to_string(),
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
        let held = self.buffer.as_ref().and_then(|b| b.get(&self.space, key));
        let bytes = match held {
            Some(held) => held,
            None => self.state.get(&self.space, key)?,
        };
        bytes.map(|bytes| self.decode(&bytes)).transpose()
    }

    fn write(&self, key: &[u8], bytes: Vec<u8>) -> Result<(), ViewError> {
        match &self.buffer {
            Some(buffer) => buffer.put(&self.space, key, bytes),
            None => {
                let mut changes = Changes::default();
                changes.put(&self.space, key, bytes);
                self.state.commit(changes)?;
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

    /// Rewrites the value at `key` keeping its position (no-op if absent); `f` returning
    /// `None` leaves a tombstone at that position, as [`View::update`] does.
    pub(crate) fn replace(
        &self,
        key: &[u8],
        f: impl FnOnce(V) -> Option<V>,
    ) -> Result<(), ViewError> {
        let Some(stored) = self.read(key)? else {
            return Ok(());
        };
        if let Some(value) = stored.value {
            let next = f(value);
            self.write(key, Self::encode(stored.position, next.as_ref())?)?;
        }
        Ok(())
    }

    /// The records whose keys start with `prefix`, in key order (tombstones skipped), read
    /// from the store a page at a time. In a projection's handler it sees the page's own
    /// writes.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, V), ViewError>> + '_ {
        Scan {
            view: self,
            from: Some(prefix.to_vec()),
            after: None,
            end: prefix_end(prefix),
            page: std::collections::VecDeque::new(),
            done: false,
        }
    }

    /// Every record, in key order.
    pub fn iter(&self) -> impl Iterator<Item = Result<(Vec<u8>, V), ViewError>> + '_ {
        self.scan_prefix(&[])
    }
}

/// Records of a view read from the store per [`SCAN_PAGE`], merged with the page's own writes.
struct Scan<'a, V> {
    view: &'a View<V>,
    /// The first key (inclusive) of the first page.
    from: Option<Vec<u8>>,
    /// The last key returned by the page before (the next page starts after it).
    after: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    page: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

/// Records read from the store per page of a scan.
const SCAN_PAGE: usize = 256;

impl<V: Serialize + DeserializeOwned> Scan<'_, V> {
    fn refill(&mut self) -> Result<(), ViewError> {
        let view = self.view;
        let lower = match (&self.after, &self.from) {
            (Some(after), _) => Bound::Excluded(after.as_slice()),
            (None, Some(from)) => Bound::Included(from.as_slice()),
            (None, None) => Bound::Unbounded,
        };
        let upper = self
            .end
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Excluded);
        let base = view.state.range(&view.space, lower, upper, SCAN_PAGE)?;
        // A full page may stop before the end: the held writes count only up to its last key.
        let cut = (base.len() == SCAN_PAGE)
            .then(|| base.last().map(|(k, _)| k.clone()))
            .flatten();
        let held: Vec<(Vec<u8>, Option<Vec<u8>>)> = match &view.buffer {
            Some(buffer) => buffer
                .range(&view.space, lower, upper)
                .into_iter()
                .filter(|(k, _)| cut.as_ref().is_none_or(|cut| k <= cut))
                .collect(),
            None => Vec::new(),
        };
        let merged = merge_range(held, base.into_iter().map(Ok::<_, ViewError>), usize::MAX)?;
        match cut {
            Some(cut) => self.after = Some(cut),
            None => self.done = true,
        }
        self.page.extend(merged);
        Ok(())
    }
}

impl<V: Serialize + DeserializeOwned> Iterator for Scan<'_, V> {
    type Item = Result<(Vec<u8>, V), ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((key, bytes)) = self.page.pop_front() {
                match self.view.decode(&bytes) {
                    Ok(Stored { value: Some(v), .. }) => return Some(Ok((key, v))),
                    Ok(Stored { value: None, .. }) => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.refill() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}
