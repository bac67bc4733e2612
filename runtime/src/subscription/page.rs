//! The writes of one page of a subscriber (view records, process instances, deadlines, parked
//! events), held in memory and committed in one atomic [`StateStore`](crate::store::StateStore)
//! commit with the subscriber's checkpoint when the page ends.

use std::ops::Bound;

use crate::store::{Changes, ParkedEvent, StoreError};

/// The writes of one page of a subscriber, held in memory and committed with its checkpoint
/// when the page ends (see the [projection docs](super::projection)). Bounded by what one page's events touch.
#[derive(Debug, Default)]
pub(crate) struct PageWrites {
    changes: parking_lot::Mutex<Changes>,
}

impl PageWrites {
    /// What the page did to `key` of `space`, if anything (`Some(None)`: deleted it).
    pub(crate) fn get(&self, space: &str, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.changes
            .lock()
            .get(space, key)
            .map(|value| value.map(<[u8]>::to_vec))
    }

    /// The page's changes to keys of `space` within the bounds, in key order.
    pub(crate) fn range(
        &self,
        space: &str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.changes
            .lock()
            .range(space, from, to)
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect()
    }

    /// Holds a write.
    pub(crate) fn put(&self, space: &str, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.changes.lock().put(space, key, value);
    }

    /// Holds a deletion.
    pub(crate) fn delete(&self, space: &str, key: impl Into<Vec<u8>>) {
        self.changes.lock().delete(space, key);
    }

    /// Takes the page's changes, leaving nothing held.
    pub(crate) fn take(&self) -> Changes {
        std::mem::take(&mut *self.changes.lock())
    }

    /// Holds a parked event of subscriber `name`.
    pub(crate) fn park(&self, name: &str, parked: &ParkedEvent) -> Result<(), StoreError> {
        self.changes.lock().park(name, parked)
    }
}
