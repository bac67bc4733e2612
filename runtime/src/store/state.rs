//! The read side's durable state: [`StateStore`], a keyed store of named *spaces* that holds
//! everything the runtime keeps beside the event log — subscriber checkpoints, parked events,
//! projection views and generations, process-manager instances and their outboxes, deadlines.
//!
//! # The contract
//! - **Atomic commits.** [`StateStore::commit`] applies a whole [`Changes`] set — puts and
//!   deletes across any spaces — or nothing, also across a crash of the process or the
//!   machine. A subscriber's page (its view records, process states, deadline changes, parked
//!   events *and* its checkpoint) is one commit, so after a crash the read side is exactly as
//!   it was after some page, never half of one: "exactly once in effect" needs no per-record
//!   bookkeeping to survive a torn page.
//! - **Read your commits.** Once `commit` returns, every reader on every thread sees it.
//! - **Order.** Commits are applied in the order their `commit` calls returned; a later commit's
//!   value of a key wins.
//! - **Durability follows the log.** A commit is not synced by itself: it is durable once the
//!   event store's next sync completes (every durable append, or [`EventStore::sync`]). A crash
//!   may lose the last commits, always a whole suffix of them; what they recorded is redone from
//!   the log, because each commit carries the checkpoint of the events it reflects.
//!   (A backend whose commits are durable at once, such as a database transaction, keeps this
//!   contract trivially.)
//! - **Bounded.** A backend bounds what it holds in memory for commits not yet in their final
//!   place, and makes `commit` wait when it is full (backpressure), never grow without bound.
//!
//! Spaces are flat names chosen by the runtime (`checkpoints`, `view/{projection}/{generation}/{view}`,
//! …; see the constants below); keys and values are bytes, ordered by bytes.
//!
//! [`EventStore::sync`]: crate::store::EventStore::sync

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::store::{ParkedEvent, StoreError};
use crate::types::Position;

/// Subscriber checkpoints: name → the last position processed (`u64`, big-endian).
pub const CHECKPOINTS: &str = "checkpoints";
/// Parked events: `[name length: u8][name][position: u64]` → the encoded [`ParkedEvent`].
pub const PARKED: &str = "parked";
/// Each projection's active generation: name → `u64`, big-endian.
pub const GENERATIONS: &str = "projection-generations";
/// Scheduled deadlines: `[due: u64 micros][command id]` → the encoded outgoing command.
pub const DEADLINES: &str = "deadlines";
/// Deadlines that can never be sent, kept for inspection.
pub const DEADLINES_FAILED: &str = "deadlines-failed";

/// Records as read: key and value.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// The records of one space, by key.
type Space = BTreeMap<Vec<u8>, Vec<u8>>;

/// The longest space name, in bytes.
pub const SPACE_LEN_MAX: usize = 512;

/// The read side's durable state. See the [module docs](self) for the guarantees every
/// implementation gives; the store contract suite in `tests/` checks them.
pub trait StateStore: Send + Sync + fmt::Debug + 'static {
    /// The value at `key` in `space`, reflecting every commit that has returned.
    fn get(&self, space: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// The records of `space` with keys within the bounds, in key order, at most `limit`.
    fn range(
        &self,
        space: &str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Records, StoreError>;

    /// Applies every change of `changes` atomically (see the [module docs](self)).
    fn commit(&self, changes: Changes) -> Result<(), StoreError>;

    /// The names of the spaces that start with `prefix` and hold (or held) records.
    fn spaces(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Removes a whole space. Not atomic with commits: the caller makes sure nothing writes to
    /// it any more (a retired projection generation).
    fn drop_space(&self, space: &str) -> Result<(), StoreError>;

    /// The checkpoint saved for subscriber `name` (position 0 if none).
    fn load_checkpoint(&self, name: &str) -> Result<Position, StoreError> {
        match self.get(CHECKPOINTS, name.as_bytes())? {
            Some(bytes) => Ok(Position(read_u64(&bytes, "checkpoint")?)),
            None => Ok(Position(0)),
        }
    }

    /// Saves the checkpoint of subscriber `name` on its own (subscribers save theirs with their
    /// page's changes, see [`Changes::save_checkpoint`]).
    fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let mut changes = Changes::default();
        changes.save_checkpoint(name, position);
        self.commit(changes)
    }

    /// The events subscriber `name` parked, in position order, at most `limit`.
    fn parked(&self, name: &str, limit: usize) -> Result<Vec<ParkedEvent>, StoreError> {
        let prefix = parked_prefix(name);
        let end = prefix_end(&prefix);
        let records = self.range(
            PARKED,
            Bound::Included(&prefix),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
            limit,
        )?;
        records
            .iter()
            .map(|(_, bytes)| Ok(crate::codec::decode_versioned(1, "parked event", bytes)?))
            .collect()
    }

    /// Tries to make this process the owner of the subscriber stored under `name`, among the
    /// processes that share this store (see [`Lease`]): `Ok(Some(lease))` when it is, and
    /// `Ok(None)` when another process holds it. Every commit of the owner's pages then
    /// carries the lease's fence ([`Changes::fence`]). A store that only one process can open
    /// (sled, memory) grants every claim at once, with a lease that never ends.
    fn claim(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let _ = name;
        Ok(Some(Lease::sole()))
    }

    /// Gives up ownership of `name` (a subscriber that stopped), so another process can take
    /// it at once.
    fn release(&self, name: &str) -> Result<(), StoreError> {
        let _ = name;
        Ok(())
    }

    /// Which process owns each subscriber, for operators: empty for a store only one process
    /// can open.
    fn owners(&self) -> Result<Vec<Owner>, StoreError> {
        Ok(Vec::new())
    }

    /// Removes a parked event; `false` if it was not parked.
    fn unpark(&self, name: &str, position: Position) -> Result<bool, StoreError> {
        let key = parked_key(name, position);
        if self.get(PARKED, &key)?.is_none() {
            return Ok(false);
        }
        let mut changes = Changes::default();
        changes.delete(PARKED, key);
        self.commit(changes)?;
        Ok(true)
    }
}

/// Ownership of a subscriber by one process among those that share a store: granted by
/// [`StateStore::claim`], with a *fencing epoch* that grows with every new owner.
///
/// Only the owner pumps the subscriber, and each of its page commits carries the epoch
/// ([`Changes::fence`]); a store shared by several processes refuses a commit whose epoch is
/// no longer the current one ([`StoreError::Fenced`]). So a process that lost ownership without
/// noticing — paused past its lease, cut off from the database — cannot write once another has
/// taken over: its page is refused whole, and the new owner redoes it from the checkpoint.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The fencing epoch.
    pub epoch: u64,
    /// Cleared when the store knows the lease is gone (its session with the database ended).
    valid: Arc<std::sync::atomic::AtomicBool>,
}

impl Lease {
    /// A lease of a store only one process can open: epoch 0, never ends.
    pub fn sole() -> Lease {
        Lease::new(0, Arc::new(std::sync::atomic::AtomicBool::new(true)))
    }

    /// A lease with `epoch` that holds while `valid` is set.
    pub fn new(epoch: u64, valid: Arc<std::sync::atomic::AtomicBool>) -> Lease {
        Lease { epoch, valid }
    }

    /// Whether the store still knows it as held. A lease that is no longer valid must be
    /// claimed again before the next page; one that is valid may still be fenced out (the
    /// commit says so).
    pub fn is_valid(&self) -> bool {
        self.valid.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Who owns a subscriber (see [`StateStore::owners`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The subscriber's storage name.
    pub name: String,
    /// The owning node's id.
    pub node: String,
    /// The current fencing epoch.
    pub epoch: u64,
    /// When the owner last committed a page or claimed it.
    pub renewed_at: crate::types::Timestamp,
}

/// A set of changes committed together: the last put or delete of each key wins. Cheap to
/// build; bounded by what its builder puts in (a subscriber's page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    spaces: BTreeMap<String, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    bytes: usize,
    /// The subscriber and epoch the commit is fenced by (see [`Lease`]).
    fence: Option<(String, u64)>,
}

impl Changes {
    /// Sets `key` of `space` to `value`.
    pub fn put(&mut self, space: &str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let key = key.into();
        let value = value.into();
        self.bytes += space.len() + key.len() + value.len() + 16;
        self.space_mut(space).insert(key, Some(value));
    }

    /// Deletes `key` of `space`.
    pub fn delete(&mut self, space: &str, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.bytes += space.len() + key.len() + 16;
        self.space_mut(space).insert(key, None);
    }

    fn space_mut(&mut self, space: &str) -> &mut BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        if !self.spaces.contains_key(space) {
            self.spaces.insert(space.to_string(), BTreeMap::new());
        }
        self.spaces
            .get_mut(space)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Makes the commit of these changes conditional on `lease` still being the current owner
    /// of subscriber `name` (see [`Lease`]).
    pub fn fence(&mut self, name: &str, lease: &Lease) {
        self.fence = Some((name.to_string(), lease.epoch));
    }

    /// The fence set by [`Changes::fence`]: the subscriber and the epoch.
    pub fn fenced_by(&self) -> Option<(&str, u64)> {
        self.fence
            .as_ref()
            .map(|(name, epoch)| (name.as_str(), *epoch))
    }

    /// Saves subscriber `name`'s checkpoint with these changes.
    pub fn save_checkpoint(&mut self, name: &str, position: Position) {
        self.put(CHECKPOINTS, name.as_bytes(), position.0.to_be_bytes());
    }

    /// Parks an event of subscriber `name` with these changes.
    pub fn park(&mut self, name: &str, parked: &ParkedEvent) -> Result<(), StoreError> {
        let bytes = crate::codec::encode_versioned(1, "parked event", parked)?;
        self.put(PARKED, parked_key(name, parked.position), bytes);
        Ok(())
    }

    /// Removes a parked event of subscriber `name` with these changes.
    pub fn unpark(&mut self, name: &str, position: Position) {
        self.delete(PARKED, parked_key(name, position));
    }

    /// What these changes do to `key` of `space`: `None` if nothing, `Some(None)` if they delete
    /// it, `Some(Some(value))` if they set it.
    pub fn get(&self, space: &str, key: &[u8]) -> Option<Option<&[u8]>> {
        self.spaces
            .get(space)?
            .get(key)
            .map(|value| value.as_deref())
    }

    /// The changes to keys of `space` within the bounds, in key order.
    pub fn range<'a>(
        &'a self,
        space: &str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let bounds = (from.map(<[u8]>::to_vec), to.map(<[u8]>::to_vec));
        self.spaces.get(space).into_iter().flat_map(move |records| {
            records
                .range::<Vec<u8>, _>((bounds.0.clone(), bounds.1.clone()))
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
        })
    }

    /// Every change: space, key, and the new value (`None`: deleted).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8], Option<&[u8]>)> {
        self.spaces.iter().flat_map(|(space, records)| {
            records
                .iter()
                .map(move |(k, v)| (space.as_str(), k.as_slice(), v.as_deref()))
        })
    }

    /// The spaces these changes touch.
    pub fn spaces(&self) -> impl Iterator<Item = &str> {
        self.spaces.keys().map(String::as_str)
    }

    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.spaces.values().all(BTreeMap::is_empty)
    }

    /// About how many bytes these changes hold (keys, values and bookkeeping).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Applies `later` on top of these changes (its values win).
    pub fn absorb(&mut self, later: Changes) {
        for (space, records) in later.spaces {
            match self.spaces.get_mut(&space) {
                Some(mine) => mine.extend(records),
                None => {
                    self.spaces.insert(space, records);
                }
            }
        }
        self.bytes += later.bytes;
    }

    /// The changes as bytes: `[count: u32]` then per change `[space length: u16][space]
    /// [key length: u32][key][tag: u8 — 0 delete, 1 put]([value length: u32][value])`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes + 4);
        let count = self.spaces.values().map(BTreeMap::len).sum::<usize>();
        out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_be_bytes());
        for (space, key, value) in self.iter() {
            // Space names are bounded by SPACE_LEN_MAX and keys and values by the runtime's
            // record limits, far below these widths.
            out.extend_from_slice(&u16::try_from(space.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(space.as_bytes());
            out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(key);
            match value {
                None => out.push(0),
                Some(value) => {
                    out.push(1);
                    out.extend_from_slice(
                        &u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes(),
                    );
                    out.extend_from_slice(value);
                }
            }
        }
        out
    }

    /// Reads changes written by [`Changes::encode`]; damaged bytes are an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Changes, StoreError> {
        let mut reader = Reader { bytes, at: 0 };
        let count = reader.u32()?;
        let mut changes = Changes::default();
        for _ in 0..count {
            let space_len = usize::from(reader.u16()?);
            let space = std::str::from_utf8(reader.take(space_len)?)
                .map_err(|_| damaged("a space name is not UTF-8"))?
                .to_string();
            let key_len = reader.u32()? as usize;
            let key = reader.take(key_len)?.to_vec();
            match reader.take(1)?[0] {
                0 => changes.delete(&space, key),
                1 => {
                    let value_len = reader.u32()? as usize;
                    let value = reader.take(value_len)?.to_vec();
                    changes.put(&space, key, value);
                }
                tag => return Err(damaged(&format!("unknown change tag {tag}"))),
            }
        }
        if reader.at != bytes.len() {
            return Err(damaged("bytes after the last change"));
        }
        Ok(changes)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| damaged("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn damaged(reason: &str) -> StoreError {
    StoreError::Corrupt {
        what: "a read-side change record".into(),
        reason: reason.into(),
    }
}

fn read_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what: what.to_string(),
        reason: format!("{} bytes, not 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// `[name length: u8][name][position: u64]`.
pub(crate) fn parked_key(name: &str, position: Position) -> Vec<u8> {
    let mut key = parked_prefix(name);
    key.extend_from_slice(&position.0.to_be_bytes());
    key
}

fn parked_prefix(name: &str) -> Vec<u8> {
    let name = name.as_bytes();
    let len = name.len().min(usize::from(u8::MAX));
    let mut key = Vec::with_capacity(1 + len + 8);
    key.push(u8::try_from(len).unwrap_or(u8::MAX));
    key.extend_from_slice(&name[..len]);
    key
}

/// The smallest key above every key that starts with `prefix` (`None`: there is none, the
/// prefix is all `0xff` or empty).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Merges pending changes (`upper`, in key order, winning on equal keys, `None` deleting) over
/// stored records (`base`, in key order), returning at most `limit` live records in key order.
/// `upper` must hold every pending change up to the last key it yields; `base` is read lazily.
pub fn merge_range<E>(
    upper: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    base: impl IntoIterator<Item = Result<(Vec<u8>, Vec<u8>), E>>,
    limit: usize,
) -> Result<Records, E> {
    let mut upper = upper.into_iter().peekable();
    let mut base = base.into_iter();
    let mut out = Vec::new();
    let mut next_base = base.next().transpose()?;
    while out.len() < limit {
        let take_upper = match (upper.peek(), &next_base) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((uk, _)), Some((bk, _))) => {
                if uk == bk {
                    next_base = base.next().transpose()?;
                    true
                } else {
                    uk < bk
                }
            }
        };
        if take_upper {
            if let Some((key, Some(value))) = upper.next() {
                out.push((key, value));
            }
        } else if let Some(record) = next_base.take() {
            out.push(record);
            next_base = base.next().transpose()?;
        }
    }
    Ok(out)
}

/// A state store in memory: for runtimes over an event store without one of its own, and for
/// tests. Nothing survives the process, so a runtime using it rebuilds its read side from the
/// log at every start (checkpoints start at 0).
#[derive(Debug, Default)]
pub struct MemoryState {
    spaces: RwLock<BTreeMap<String, Space>>,
}

impl MemoryState {
    /// An empty state store.
    pub fn new() -> Arc<MemoryState> {
        Arc::new(MemoryState::default())
    }
}

impl StateStore for MemoryState {
    fn get(&self, space: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .spaces
            .read()
            .get(space)
            .and_then(|records| records.get(key).cloned()))
    }

    fn range(
        &self,
        space: &str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Records, StoreError> {
        let spaces = self.spaces.read();
        let Some(records) = spaces.get(space) else {
            return Ok(Vec::new());
        };
        Ok(records
            .range::<[u8], _>((from, to))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, changes: Changes) -> Result<(), StoreError> {
        let mut spaces = self.spaces.write();
        for (space, records) in changes.spaces {
            let target = spaces.entry(space).or_default();
            for (key, value) in records {
                match value {
                    Some(value) => {
                        target.insert(key, value);
                    }
                    None => {
                        target.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn spaces(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .spaces
            .read()
            .keys()
            .filter(|name| name.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn drop_space(&self, space: &str) -> Result<(), StoreError> {
        self.spaces.write().remove(space);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_and_damaged_bytes_are_errors() {
        let mut changes = Changes::default();
        changes.put("a", b"k1".to_vec(), b"v1".to_vec());
        changes.delete("b", b"k2".to_vec());
        changes.put("a", b"k1".to_vec(), b"v2".to_vec());
        let bytes = changes.encode();
        let decoded = Changes::decode(&bytes).expect("decodes");
        assert_eq!(decoded.get("a", b"k1"), Some(Some(&b"v2"[..])));
        assert_eq!(decoded.get("b", b"k2"), Some(None));
        for cut in 0..bytes.len() {
            assert!(Changes::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Changes::decode(&extra).is_err());
    }

    #[test]
    fn merge_range_prefers_pending_changes_and_hides_deletions() {
        let upper = vec![
            (b"b".to_vec(), None),
            (b"c".to_vec(), Some(b"new".to_vec())),
            (b"e".to_vec(), Some(b"e".to_vec())),
        ];
        let base: Vec<Result<_, ()>> = vec![
            Ok((b"a".to_vec(), b"a".to_vec())),
            Ok((b"b".to_vec(), b"b".to_vec())),
            Ok((b"c".to_vec(), b"old".to_vec())),
            Ok((b"d".to_vec(), b"d".to_vec())),
        ];
        let merged = merge_range(upper.clone(), base.clone(), 10).expect("merges");
        let keys: Vec<(&[u8], &[u8])> = merged
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(
            keys,
            vec![
                (&b"a"[..], &b"a"[..]),
                (b"c", b"new"),
                (b"d", b"d"),
                (b"e", b"e")
            ]
        );
        assert_eq!(merge_range(upper, base, 2).expect("merges").len(), 2);
    }

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
