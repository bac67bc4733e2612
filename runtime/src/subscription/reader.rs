//! One log reader for all subscribers: each stretch of the global log is read from the store and
//! decoded once, and the decoded events are shared (by reference count) with every subscriber
//! that reads it; each subscriber keeps its own checkpoint, lag and failure policy.
//!
//! The log is cut into *chunks* of [`CHUNK_EVENTS`] positions (chunk `k` holds positions
//! `k·C + 1 ..= (k+1)·C`). A chunk is filled in *segments*, in position order: the first reader
//! that needs positions the chunk does not hold yet reads them from the store — up to the end of
//! the chunk or the log's head, whichever comes first — and appends them as one immutable
//! segment; later readers (the other subscribers, a moment later) find them there. So live
//! subscribers that follow the head share each acknowledged batch, and subscribers catching up
//! together share whole chunks. Only acknowledged events are held (a read never goes past the
//! head it saw), and acknowledged events never change, so a cached segment is never stale.
//!
//! **Bound**: at most [`CHUNKS_CACHED`] chunks are held, least recently used evicted: 16,384
//! events, as many as four subscriber pages of the default size (the page size bounds a
//! subscriber's memory in events the same way; with events of a few hundred bytes this is a few
//! MiB). A page handed to a subscriber holds its segments until the page is done, so what is
//! alive at a time is the cache plus, per subscriber, the segments its current page touches
//! (at most its page and the rest of the chunks that page spans). A subscriber too far behind
//! for the cache reads its chunks again from the store (and caches them for those behind it). The lock over the table is held only to find or insert a
//! chunk; a chunk's own lock is held while it is being extended (a store read, no await),
//! so two subscribers never read the same positions from the store at the same time.

use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::envelope::RecordedEvent;
use crate::store::{EventStore, StoreError};
use crate::types::Position;

/// Positions per chunk.
pub(crate) const CHUNK_EVENTS: u64 = 1024;
/// Chunks held at most.
pub(crate) const CHUNKS_CACHED: usize = 16;

/// The filled part of one chunk: segments of events in position order, covering the chunk's
/// positions below `filled` (positions need not be dense: a gap is simply not there).
struct Chunk {
    filled: u64,
    segments: Vec<Arc<[RecordedEvent]>>,
}

/// Events read for one subscriber page: slices of shared segments, in position order.
#[derive(Default)]
pub(crate) struct LogPage {
    parts: Vec<(Arc<[RecordedEvent]>, Range<usize>)>,
}

impl LogPage {
    /// The page's events, in position order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &RecordedEvent> {
        self.parts
            .iter()
            .flat_map(|(segment, range)| &segment[range.clone()])
    }

    /// How many events the page holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.parts.iter().map(|(_, range)| range.len()).sum()
    }
}

/// The shared reader. See the [module docs](self).
pub(crate) struct LogReader {
    log: Arc<dyn EventStore>,
    chunks: Mutex<LruCache<u64, Arc<Mutex<Chunk>>>>,
    /// Most events one store read brings into a chunk ([`CHUNK_EVENTS`]; less in tests, to
    /// take the path of a store that answers short).
    fill_max: usize,
}

impl LogReader {
    pub(crate) fn new(log: Arc<dyn EventStore>) -> LogReader {
        let capacity = NonZeroUsize::new(CHUNKS_CACHED).unwrap_or(NonZeroUsize::MIN);
        LogReader {
            log,
            chunks: Mutex::new(LruCache::new(capacity)),
            fill_max: usize::try_from(CHUNK_EVENTS).unwrap_or(usize::MAX),
        }
    }

    /// Up to `limit` acknowledged events from position `from` on (fewer at the head), like
    /// [`EventStore::read_all`], shared with every other reader of the same positions.
    pub(crate) fn read(&self, from: Position, limit: usize) -> Result<LogPage, StoreError> {
        let head = self.log.head_position().0;
        let mut position = from.0.max(1);
        let mut left = limit;
        let mut page = LogPage::default();
        while position <= head && left > 0 {
            let index = (position - 1) / CHUNK_EVENTS;
            let chunk_first = index * CHUNK_EVENTS + 1;
            let chunk_last = (chunk_first + CHUNK_EVENTS - 1).min(head);
            let chunk = self
                .chunks
                .lock()
                .get_or_insert(index, || {
                    Arc::new(Mutex::new(Chunk {
                        filled: chunk_first,
                        segments: Vec::new(),
                    }))
                })
                .clone();
            let mut chunk = chunk.lock();
            if chunk.filled <= chunk_last {
                // Read what the chunk lacks, up to its end or the head: the readers behind
                // this one will want the rest of it too.
                let missing = usize::try_from(chunk_last + 1 - chunk.filled).unwrap_or(usize::MAX);
                let n = missing.min(self.fill_max);
                let mut events = self.log.read_all(Position(chunk.filled), n)?;
                let complete = events.len() >= missing
                    || events.last().is_some_and(|e| e.position.0 >= chunk_last);
                events.retain(|e| e.position.0 <= chunk_last);
                // All missing positions came back (or the last one): the chunk is covered up to
                // `chunk_last`. A shorter answer covers only up to its last event — the store
                // may have gaps, or have answered short — and the rest is read again next time
                // rather than taken for empty.
                let covered = match events.last() {
                    _ if complete => chunk_last,
                    Some(last) => last.position.0,
                    None => chunk.filled - 1,
                };
                if !events.is_empty() {
                    chunk.segments.push(events.into());
                }
                chunk.filled = chunk.filled.max(covered + 1);
            }
            for segment in &chunk.segments {
                if left == 0 {
                    break;
                }
                let start = segment.partition_point(|e| e.position.0 < position);
                let stop = segment
                    .partition_point(|e| e.position.0 <= chunk_last)
                    .min(start.saturating_add(left));
                if start < stop {
                    left -= stop - start;
                    position = segment[stop - 1].position.0 + 1;
                    page.parts.push((segment.clone(), start..stop));
                }
            }
            if chunk.filled <= chunk_last {
                // Not covered to the head: the page ends here, never past what was read.
                break;
            }
            if left > 0 {
                position = position.max(chunk_last + 1);
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{CommitMeta, EncodedPayload};
    use crate::store::{AppendKind, AppendRequest, PendingEvent, SledOptions};
    use crate::types::{StreamId, Timestamp, Version};

    /// A real sled store in a temporary directory with `commits` commits of `per_commit`
    /// events each, spread over a few streams.
    fn store_with(commits: u64, per_commit: u64) -> (tempfile::TempDir, Arc<dyn EventStore>) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SledOptions::new(dir.path())
            .open()
            .expect("the store opens")
            .log;
        let mut versions = [0u64; 3];
        for i in 0..commits {
            let s = usize::try_from(i % 3).expect("small");
            let stream = StreamId::new("Reader", format!("s-{s}").as_str()).expect("a valid id");
            let events = (0..per_commit)
                .map(|_| PendingEvent {
                    event_id: uuid::Uuid::new_v4(),
                    event_type: Arc::from("Happened"),
                    schema_version: 1,
                    payload: EncodedPayload(vec![0xf6]),
                })
                .collect();
            let request = AppendRequest {
                stream,
                expected: Version(versions[s]),
                meta: CommitMeta {
                    recorded_at: Timestamp::now(),
                    ..CommitMeta::default()
                },
                command: None,
                kind: AppendKind::Events(events),
            };
            futures::executor::block_on(store.append(request)).expect("the append commits");
            versions[s] += per_commit;
        }
        (dir, store)
    }

    fn positions(page: &LogPage) -> Vec<u64> {
        page.iter().map(|e| e.position.0).collect()
    }

    #[test]
    fn pages_of_any_size_from_any_position_are_the_logs_own_events() {
        let (_dir, store) = store_with(700, 4);
        let head = store.head_position().0;
        assert_eq!(head, 2800);
        let reader = LogReader::new(store.clone());
        for (from, limit) in [
            (1, 1),
            (1, 4096),
            (5, 1030),
            (1020, 10),
            (1024, 1),
            (2790, 100),
        ] {
            let page = reader
                .read(Position(from), limit)
                .expect("the read succeeds");
            let expected: Vec<u64> = (from..=head).take(limit).collect();
            assert_eq!(positions(&page), expected, "from {from}, limit {limit}");
            assert_eq!(page.len(), expected.len());
            let direct = store
                .read_all(Position(from), limit)
                .expect("a direct read");
            let shared: Vec<&RecordedEvent> = page.iter().collect();
            assert!(
                direct.iter().zip(shared).all(|(a, b)| a == b),
                "the shared events equal a direct read"
            );
        }
        assert!(reader
            .read(Position(head + 1), 10)
            .expect("at the head")
            .iter()
            .next()
            .is_none());
    }

    #[test]
    fn a_short_store_answer_ends_the_page_where_it_ends_and_nothing_is_skipped() {
        let (_dir, store) = store_with(300, 4);
        let head = store.head_position().0;
        let mut reader = LogReader::new(store);
        // Every store read brings at most 7 events: each page stops where its read stopped,
        // and the next read goes on from there.
        reader.fill_max = 7;
        for page_events in [1usize, 5, 100, 4096] {
            let mut next = 1;
            while next <= head {
                let page = reader.read(Position(next), page_events).expect("the read");
                let got = positions(&page);
                assert!(!got.is_empty(), "progress from {next}");
                assert_eq!(got, (next..next + got.len() as u64).collect::<Vec<_>>());
                assert!(got.len() <= page_events);
                next += got.len() as u64;
            }
            assert_eq!(next, head + 1);
        }
    }

    #[test]
    fn readers_at_different_paces_share_segments_and_the_cache_stays_bounded() {
        let (_dir, store) = store_with(2000, 20);
        let head = store.head_position().0;
        let reader = LogReader::new(store);
        // Two readers walk the whole log with different page sizes: each sees every position
        // once, in order.
        for page_events in [97usize, 4096] {
            let mut next = 1;
            while next <= head {
                let page = reader.read(Position(next), page_events).expect("the read");
                let got = positions(&page);
                assert!(!got.is_empty());
                assert_eq!(got, (next..next + got.len() as u64).collect::<Vec<_>>());
                next += got.len() as u64;
            }
        }
        // The second walk found the last chunks the first one read: the same allocations.
        let a = reader.read(Position(head), 1).expect("the read");
        let b = reader.read(Position(head), 1).expect("the read");
        let (sa, sb) = (&a.parts[0].0, &b.parts[0].0);
        assert!(Arc::ptr_eq(sa, sb), "one segment, shared");
        assert!(reader.chunks.lock().len() <= CHUNKS_CACHED);
    }
}
