//! The store contract suite: what every [`EventStore`] backend must do, written once and run
//! against each backend.
//!
//! The runtime only talks to the store through the `EventStore` trait, so a backend that passes
//! this suite can replace another without the runtime noticing. Each contract is a plain
//! function in [`contract`] that takes a `&mut dyn Backend`: a fresh, empty store that can be
//! closed and opened again on the same data. The [`store_contract!`] macro turns the whole list
//! of contracts into one `#[test]` per contract for one backend; today it is instantiated for
//! [`SledStore`] on a real sled database in a temporary directory, in three configurations
//! (defaults; relaxed durability; one append per batch with a heads checkpoint per batch), since
//! none of them may change what the store promises, and for [`PgStore`] on the test PostgreSQL
//! server, each test in a schema of its own.
//!
//! # Plugging in a new backend (for example PostgreSQL)
//! 1. Write a type that implements [`Backend`]: `fresh()` gives every test its own empty store
//!    (for PostgreSQL: a new schema or database named after a UUID, dropped in `Drop`), `store()`
//!    returns it, and `reopen()` closes it as a stopping service would (`shutdown`, then drop
//!    the connection pool) and connects again to the same schema.
//! 2. Add one line: `store_contract!(postgres: PgBackend::fresh());`, as the PostgreSQL
//!    backend does. A backend that needs a server fails its tests when the server cannot be
//!    reached (never skips them): `.ci/run` starts the server first.
//!
//! A contract added to [`contract`] must also be listed in the macro; one that is not becomes
//! dead code, which `cargo clippy -- -D warnings` refuses, so none can be forgotten.
//!
//! Errors are compared by their typed variants with `matches!`, never by their messages.

use std::num::NonZeroUsize;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use annals::envelope::EncodedPayload;
use annals::store::sled::{Durability, SledOptions, SledStore};
use annals::store::PgStore;
use annals::store::{
    AppendError, AppendKind, AppendRequest, CommandKey, CommitReceipt, EventRef, EventStore,
    Fingerprint, PendingEvent, Snapshot, StoreError, StoreHealth, StoredOutcome,
};
use annals::{CommandId, CommitMeta, Position, RecordedEvent, StreamId, Timestamp, Version};
use annals_tests::PgSchema;
use futures::executor::block_on;
use tempfile::TempDir;
use uuid::Uuid;

/// A store under test, as the contract sees it.
trait Backend {
    /// The store under test.
    fn store(&self) -> &dyn EventStore;

    /// Closes the store as a stopping service does (`shutdown`, then drop) and opens a new one
    /// on the same data.
    fn reopen(&mut self);
}

/// The sled backend: a real sled database in a temporary directory, removed on drop, opened
/// with the options a configuration chooses.
struct SledBackend {
    // Field order matters: the store must be dropped (closing the database) before the
    // directory is removed.
    store: Option<SledStore>,
    /// The options it was opened with (their path is the directory), to reopen it alike.
    options: SledOptions,
    /// Held only so that the directory is removed when the backend is dropped.
    _dir: TempDir,
}

impl SledBackend {
    /// The default options: durable group commit.
    fn fresh() -> SledBackend {
        SledBackend::with(|options| options)
    }

    /// Relaxed durability: appends are acknowledged before their fsync. Only crashes may tell
    /// it apart from the default, so every contract holds for it as well.
    fn relaxed() -> SledBackend {
        SledBackend::with(|options| {
            options.with_durability(Durability::Relaxed {
                flush_interval: Duration::from_millis(5),
            })
        })
    }

    /// One append per batch and a heads checkpoint after every batch: the other end of the
    /// batching and checkpointing choices from the defaults.
    fn unbatched() -> SledBackend {
        SledBackend::with(|options| {
            options
                .with_batch_appends_max(NonZeroUsize::MIN)
                .with_heads_checkpoint_interval(Duration::ZERO)
        })
    }

    fn with(configure: impl FnOnce(SledOptions) -> SledOptions) -> SledBackend {
        let dir = tempfile::tempdir().expect("a temporary directory for the database");
        let options = configure(SledOptions::new(dir.path()));
        let store = SledStore::open(options.clone()).expect("open a new sled store");
        SledBackend {
            store: Some(store),
            options,
            _dir: dir,
        }
    }
}

impl Backend for SledBackend {
    fn store(&self) -> &dyn EventStore {
        self.store
            .as_ref()
            .expect("the store is open between reopens")
    }

    fn reopen(&mut self) {
        let store = self
            .store
            .take()
            .expect("the store is open between reopens");
        store.shutdown().expect("shut the store down cleanly");
        drop(store);
        let store = SledStore::open(self.options.clone()).expect("reopen the sled store");
        self.store = Some(store);
    }
}

/// Instantiates every contract in [`contract`] as a `#[test]` for one backend:
/// `store_contract!(module_name: expression giving a fresh backend);`.
macro_rules! store_contract {
    ($backend:ident: $fresh:expr) => {
        mod $backend {
            use super::*;

            store_contract!(@each $fresh;
                read_stream_returns_every_event_in_version_order,
                read_stream_from_a_lower_bound,
                read_stream_to_an_upper_bound,
                read_stream_with_a_count_limit,
                read_stream_between_lower_and_upper_bounds,
                read_stream_from_equal_to_to_returns_one_event,
                read_stream_limit_one_returns_one_event,
                read_stream_limit_zero_returns_nothing,
                read_stream_from_after_to_returns_nothing,
                visit_stream_lends_what_read_stream_returns_until_told_to_stop,
                a_long_stream_reads_correctly_at_every_bound,
                streams_do_not_leak_into_each_other,
                an_unknown_stream_is_empty_at_version_zero,
                a_multi_event_append_is_one_atomic_commit,
                readers_never_see_part_of_a_commit,
                an_expected_version_conflict_writes_nothing,
                concurrent_appends_at_the_same_version_commit_once,
                a_duplicate_command_id_returns_the_first_outcome,
                a_command_id_is_used_once_within_one_batch,
                a_rejection_outcome_is_recorded_without_events,
                a_no_event_outcome_is_recorded_without_events,
                an_empty_or_malformed_append_is_invalid,
                snapshots_of_an_unknown_stream_are_none,
                load_snapshot_returns_the_latest_at_or_below,
                save_snapshot_replaces_the_one_at_the_same_version,
                a_large_snapshot_round_trips_and_survives_reopen,
                read_all_pages_by_position_across_streams,
                appends_from_many_threads_get_gap_free_positions,
                head_position_and_stream_head_follow_the_receipts,
                a_type_watch_covers_every_acknowledged_event_of_its_types,
                stream_ids_list_a_types_streams_by_prefix_shortest_first,
                reads_after_reopen_return_the_same_data,
                shutdown_refuses_new_appends_and_is_idempotent,
            );
        }
    };
    (@each $fresh:expr; $($test:ident),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                let mut backend = $fresh;
                contract::$test(&mut backend);
            }
        )+
    };
}

store_contract!(sled_store: SledBackend::fresh());
store_contract!(sled_relaxed: SledBackend::relaxed());
store_contract!(sled_unbatched: SledBackend::unbatched());
store_contract!(postgres: PgBackend::fresh());

/// The PostgreSQL backend: a store in a schema of its own on the test server, dropped after
/// the test. A server that cannot be reached fails the test (see [`PgSchema`]).
struct PgBackend {
    // Field order matters: the store shuts down before its schema is dropped.
    store: Option<PgStore>,
    schema: PgSchema,
}

impl PgBackend {
    fn fresh() -> PgBackend {
        let schema = PgSchema::fresh();
        PgBackend {
            store: Some(schema.open()),
            schema,
        }
    }
}

impl Backend for PgBackend {
    fn store(&self) -> &dyn EventStore {
        self.store
            .as_ref()
            .expect("the store is open between reopens")
    }

    fn reopen(&mut self) {
        let store = self
            .store
            .take()
            .expect("the store is open between reopens");
        store.shutdown().expect("a clean shutdown");
        drop(store);
        self.store = Some(self.schema.open());
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            let _ = store.shutdown();
        }
    }
}

/// Tests of the sled backend alone, outside the generic contract.
mod sled_regressions {
    use super::*;

    /// The sled store's type watches are selective: an acknowledgement of other types moves
    /// the head but not the watch, so a subscriber of those types is not woken by it; one of
    /// its types moves it to the head.
    #[test]
    fn a_type_watch_does_not_move_for_other_types() {
        let backend = SledBackend::fresh();
        let store = backend.store();
        let mut watch = store.watch_types(&["Contract".to_string()]);
        let noise = StreamId::new("Noise", "n").expect("a valid stream id");
        commit(store, &noise, Version(0), 3);
        commit(store, &noise, Version(3), 1);
        assert_eq!(store.head_position(), Position(4));
        assert!(
            !watch
                .has_changed()
                .expect("the store holds the watch's sender"),
            "appends of another type moved the watch to {}",
            *watch.borrow()
        );
        assert_eq!(*watch.borrow_and_update(), Position(0));
        let (receipt, _) = commit(store, &stream("watched"), Version(0), 2);
        assert!(watch
            .has_changed()
            .expect("the store holds the watch's sender"));
        assert_eq!(*watch.borrow_and_update(), Position(6));
        assert_eq!(receipt.last_position(), Some(Position(6)));
        commit(store, &noise, Version(4), 1);
        assert!(!watch
            .has_changed()
            .expect("the store holds the watch's sender"));
        // Appends go on once nobody holds the watch (the store drops it at the next one).
        drop(watch);
        commit(store, &stream("watched"), Version(2), 1);
        assert_eq!(store.head_position(), Position(8));
    }

    /// Open-append-shutdown-drop cycles on one directory, each reopening at once, with no
    /// retry: a service restarted in-process (or a test that reopens) must not find the
    /// directory still locked by the database it has just closed.
    #[test]
    fn reopen_right_after_shutdown_finds_the_directory_unlocked() {
        const CYCLES: u64 = 300;
        let dir = tempfile::tempdir().expect("a temporary directory for the database");
        let s = stream("relock");
        for cycle in 0..CYCLES {
            let store = SledStore::open(SledOptions::new(dir.path())).unwrap_or_else(|e| {
                panic!("cycle {cycle}: reopening right after shutdown failed: {e:?}")
            });
            commit(&store, &s, Version(cycle), 1);
            store.shutdown().expect("shut the store down cleanly");
            drop(store);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the contracts.
// ---------------------------------------------------------------------------------------------

fn stream(id: &str) -> StreamId {
    StreamId::new("Contract", id).expect("a valid stream id")
}

fn command_id(id: &str) -> CommandId {
    CommandId::new(id).expect("a valid command id")
}

/// `count` events for `stream`, each with a unique payload that names the stream, so that a
/// misplaced event is visible in the assertion message.
fn pending(stream: &StreamId, count: usize) -> Vec<PendingEvent> {
    (0..count)
        .map(|i| PendingEvent {
            event_id: Uuid::new_v4(),
            event_type: Arc::from(if i % 2 == 0 {
                "Happened"
            } else {
                "AlsoHappened"
            }),
            schema_version: 1 + u16::try_from(i % 3).expect("i % 3 fits u16"),
            payload: EncodedPayload(format!("{stream}#{}", Uuid::new_v4()).into_bytes()),
        })
        .collect()
}

fn request(stream: &StreamId, expected: Version, events: Vec<PendingEvent>) -> AppendRequest {
    AppendRequest {
        stream: stream.clone(),
        expected,
        meta: CommitMeta {
            recorded_at: Timestamp::now(),
            ..CommitMeta::default()
        },
        command: None,
        kind: AppendKind::Events(events),
    }
}

/// Gives `request` a command id (in both the key and the metadata, as the runtime does).
fn with_command(mut request: AppendRequest, id: &CommandId, fp: Fingerprint) -> AppendRequest {
    request.meta.command_id = Some(id.clone());
    request.command = Some(CommandKey {
        id: id.clone(),
        fingerprint: fp,
    });
    request
}

/// An append of a non-event outcome (`Rejection` or `NoEvents`) for a command with an id.
fn outcome_request(
    stream: &StreamId,
    expected: Version,
    id: &CommandId,
    fp: Fingerprint,
    kind: AppendKind,
) -> AppendRequest {
    let mut request = request(stream, expected, Vec::new());
    request.kind = kind;
    with_command(request, id, fp)
}

fn fingerprint(stream: &StreamId, command: &str) -> Fingerprint {
    Fingerprint::of(stream, command.as_bytes())
}

fn append(store: &dyn EventStore, request: AppendRequest) -> Result<CommitReceipt, AppendError> {
    block_on(store.append(request))
}

/// Appends `count` new events to `stream` at `expected`, which must succeed.
fn commit(
    store: &dyn EventStore,
    stream: &StreamId,
    expected: Version,
    count: usize,
) -> (CommitReceipt, Vec<PendingEvent>) {
    let events = pending(stream, count);
    let receipt = append(store, request(stream, expected, events.clone()))
        .unwrap_or_else(|e| panic!("append of {count} events to {stream} failed: {e:?}"));
    (receipt, events)
}

/// Appends commits of the given sizes to `stream` (from version 0), each followed by one
/// event on a noise stream so that the stream's positions are not simply its versions.
/// Returns every event appended to `stream`, in version order.
fn seed(store: &dyn EventStore, stream: &StreamId, sizes: &[usize]) -> Vec<PendingEvent> {
    let noise = StreamId::new("Noise", stream.aggregate_id()).expect("a valid stream id");
    let mut all = Vec::new();
    let mut noise_version = store.stream_head(&noise).expect("read the noise head");
    for &size in sizes {
        let head = Version(all.len() as u64);
        let (_, events) = commit(store, stream, head, size);
        all.extend(events);
        commit(store, &noise, noise_version, 1);
        noise_version = noise_version.next();
    }
    all
}

/// The seed every read test uses: versions 1 | 2-3 | 4-6 | 7-10 (commit boundaries), so the
/// bounds below fall both on and inside commits.
const SEED_COMMITS: [usize; 4] = [1, 2, 3, 4];

fn read(
    store: &dyn EventStore,
    stream: &StreamId,
    from: u64,
    to: Option<u64>,
    limit: usize,
) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, Version(from), to.map(Version), limit)
        .unwrap_or_else(|e| panic!("read_stream({stream}, {from}, {to:?}, {limit}) failed: {e:?}"))
}

fn read_all(store: &dyn EventStore, from: u64, limit: usize) -> Vec<RecordedEvent> {
    store
        .read_all(Position(from), limit)
        .unwrap_or_else(|e| panic!("read_all({from}, {limit}) failed: {e:?}"))
}

/// Asserts that `read` holds exactly the events of `stream` with `versions`, as appended.
fn assert_events(
    read: &[RecordedEvent],
    stream: &StreamId,
    appended: &[PendingEvent],
    versions: RangeInclusive<u64>,
) {
    let got: Vec<u64> = read.iter().map(|e| e.version.0).collect();
    let want: Vec<u64> = versions.collect();
    assert_eq!(got, want, "versions read from {stream}");
    for event in read {
        let index = usize::try_from(event.version.0 - 1).expect("a small version");
        let original = &appended[index];
        assert_eq!(event.stream, *stream, "stream of version {}", event.version);
        assert_eq!(
            event.event_id, original.event_id,
            "event id of version {}",
            event.version
        );
        assert_eq!(
            event.event_type, original.event_type,
            "type of version {}",
            event.version
        );
        assert_eq!(event.schema_version, original.schema_version);
        assert_eq!(
            event.payload, original.payload,
            "payload of version {}",
            event.version
        );
    }
    for pair in read.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "positions increase with versions"
        );
    }
}

fn assert_nothing_written(store: &dyn EventStore, head: Position, stream: &StreamId, at: Version) {
    assert_eq!(store.head_position(), head, "the global head must not move");
    assert_eq!(
        store.stream_head(stream).expect("stream head"),
        at,
        "head of {stream}"
    );
    assert_eq!(read(store, stream, 1, None, usize::MAX).len() as u64, at.0);
    assert!(
        read_all(store, head.0 + 1, usize::MAX).is_empty(),
        "nothing after the head"
    );
}

fn snapshot(version: u64, state: &[u8]) -> Snapshot {
    Snapshot {
        version: Version(version),
        schema_version: 1,
        taken_at: Timestamp::now(),
        state: state.to_vec(),
    }
}

fn load_snapshot(store: &dyn EventStore, stream: &StreamId, at_or_below: u64) -> Option<Snapshot> {
    store
        .load_snapshot(stream, Version(at_or_below))
        .unwrap_or_else(|e| panic!("load_snapshot({stream}, {at_or_below}) failed: {e:?}"))
}

fn outcome(store: &dyn EventStore, id: &CommandId) -> Option<StoredOutcome> {
    store
        .command_outcome(id)
        .unwrap_or_else(|e| panic!("command_outcome({id}) failed: {e:?}"))
}

/// Every event of the global log: positions gap-free from 1 to the head, versions of every
/// stream contiguous from 1.
fn assert_log_is_gap_free(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let log = read_all(store, 1, usize::MAX);
    let positions: Vec<u64> = log.iter().map(|e| e.position.0).collect();
    let want: Vec<u64> = (1..=store.head_position().0).collect();
    assert_eq!(
        positions, want,
        "the global log is gap-free from 1 to the head"
    );
    let mut heads = std::collections::HashMap::<StreamId, Version>::new();
    for event in &log {
        let head = heads.entry(event.stream.clone()).or_default();
        assert_eq!(
            event.version,
            head.next(),
            "versions of {} are contiguous",
            event.stream
        );
        *head = event.version;
    }
    for (stream, head) in heads {
        assert_eq!(
            store.stream_head(&stream).expect("stream head"),
            head,
            "head of {stream}"
        );
    }
    log
}

/// The whole global log read in pages of `page` events, each page starting where the last
/// one ended.
fn read_all_in_pages(store: &dyn EventStore, page: usize) -> Vec<RecordedEvent> {
    let head = store.head_position();
    let mut paged = Vec::new();
    let mut from = Position(1);
    for _ in 0..=head.0 {
        let events = read_all(store, from.0, page);
        if events.is_empty() {
            break;
        }
        assert!(events.len() <= page, "a page holds at most the limit");
        assert_eq!(events[0].position, from, "a page starts at its lower bound");
        from = events[events.len() - 1].position.next();
        paged.extend(events);
    }
    assert_eq!(from, head.next(), "paging reaches the head");
    paged
}

// ---------------------------------------------------------------------------------------------
// The contracts.
// ---------------------------------------------------------------------------------------------

mod contract {
    use super::*;

    pub(super) fn read_stream_returns_every_event_in_version_order(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("replay-all");
        let appended = seed(store, &s, &SEED_COMMITS);
        let all = read(store, &s, 1, None, usize::MAX);
        assert_events(&all, &s, &appended, 1..=10);
        // Version 0 is below every event, and an upper bound beyond the head stops at the head.
        assert_eq!(read(store, &s, 0, None, usize::MAX), all, "from version 0");
        assert_eq!(read(store, &s, 1, Some(10), usize::MAX), all, "to the head");
        assert_eq!(
            read(store, &s, 1, Some(u64::MAX), usize::MAX),
            all,
            "to beyond the head"
        );
        assert_eq!(
            read(store, &s, 1, None, 10),
            all,
            "limit equal to the count"
        );
        // Events of one commit share its metadata.
        assert_eq!(
            all[3].meta, all[5].meta,
            "versions 4 and 6 were committed together"
        );
    }

    pub(super) fn visit_stream_lends_what_read_stream_returns_until_told_to_stop(
        b: &mut dyn Backend,
    ) {
        let store = b.store();
        let s = stream("visit");
        seed(store, &s, &SEED_COMMITS);
        let lent = |from: u64, to: Option<u64>, limit: usize, stop_at: Option<u64>| {
            let mut seen = Vec::new();
            let count = store
                .visit_stream(
                    &s,
                    Version(from),
                    to.map(Version),
                    limit,
                    &mut |e: EventRef<'_>| {
                        if Some(e.version.0) == stop_at {
                            return std::ops::ControlFlow::Break(());
                        }
                        seen.push((
                            e.version,
                            e.event_type.to_string(),
                            e.schema_version,
                            e.payload.to_vec(),
                        ));
                        std::ops::ControlFlow::Continue(())
                    },
                )
                .expect("visits");
            assert_eq!(count, seen.len(), "the count is of the events taken");
            seen
        };
        let as_read = |from: u64, to: Option<u64>, limit: usize| -> Vec<_> {
            read(store, &s, from, to, limit)
                .into_iter()
                .map(|e| {
                    (
                        e.version,
                        e.event_type.to_string(),
                        e.schema_version,
                        e.payload.0,
                    )
                })
                .collect()
        };
        for (from, to, limit) in [
            (1, None, usize::MAX),
            (5, None, usize::MAX),
            (1, Some(6), usize::MAX),
            (5, Some(9), 3),
            (11, None, usize::MAX),
            (1, None, 0),
        ] {
            assert_eq!(
                lent(from, to, limit, None),
                as_read(from, to, limit),
                "from {from}, to {to:?}, limit {limit}"
            );
        }
        // Stopping inside a commit lends nothing more.
        assert_eq!(
            lent(1, None, usize::MAX, Some(5)),
            as_read(1, Some(4), usize::MAX)
        );
    }

    pub(super) fn read_stream_from_a_lower_bound(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("from");
        let appended = seed(store, &s, &SEED_COMMITS);
        // 5 is inside the commit 4-6; 7 starts a commit; 10 is the last event.
        assert_events(&read(store, &s, 5, None, usize::MAX), &s, &appended, 5..=10);
        assert_events(&read(store, &s, 7, None, usize::MAX), &s, &appended, 7..=10);
        assert_events(
            &read(store, &s, 10, None, usize::MAX),
            &s,
            &appended,
            10..=10,
        );
        assert!(
            read(store, &s, 11, None, usize::MAX).is_empty(),
            "from beyond the head"
        );
    }

    pub(super) fn read_stream_to_an_upper_bound(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("to");
        let appended = seed(store, &s, &SEED_COMMITS);
        assert_events(
            &read(store, &s, 1, Some(5), usize::MAX),
            &s,
            &appended,
            1..=5,
        );
        assert_events(
            &read(store, &s, 1, Some(6), usize::MAX),
            &s,
            &appended,
            1..=6,
        );
        assert_events(
            &read(store, &s, 1, Some(1), usize::MAX),
            &s,
            &appended,
            1..=1,
        );
        assert!(
            read(store, &s, 1, Some(0), usize::MAX).is_empty(),
            "to version 0"
        );
    }

    pub(super) fn read_stream_with_a_count_limit(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("limit");
        let appended = seed(store, &s, &SEED_COMMITS);
        // The limit cuts inside a commit, across a boundary, and beyond the end.
        assert_events(&read(store, &s, 1, None, 3), &s, &appended, 1..=3);
        assert_events(&read(store, &s, 1, None, 5), &s, &appended, 1..=5);
        assert_events(&read(store, &s, 5, None, 3), &s, &appended, 5..=7);
        assert_events(&read(store, &s, 8, None, 100), &s, &appended, 8..=10);
    }

    pub(super) fn read_stream_between_lower_and_upper_bounds(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("from-to");
        let appended = seed(store, &s, &SEED_COMMITS);
        assert_events(
            &read(store, &s, 3, Some(8), usize::MAX),
            &s,
            &appended,
            3..=8,
        );
        assert_events(
            &read(store, &s, 2, Some(3), usize::MAX),
            &s,
            &appended,
            2..=3,
        );
        assert_events(&read(store, &s, 5, Some(9), 2), &s, &appended, 5..=6);
    }

    pub(super) fn read_stream_from_equal_to_to_returns_one_event(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("from-eq-to");
        let appended = seed(store, &s, &SEED_COMMITS);
        for v in [1, 2, 5, 7, 10] {
            assert_events(
                &read(store, &s, v, Some(v), usize::MAX),
                &s,
                &appended,
                v..=v,
            );
        }
        assert!(
            read(store, &s, 11, Some(11), usize::MAX).is_empty(),
            "beyond the head"
        );
    }

    pub(super) fn read_stream_limit_one_returns_one_event(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("limit-one");
        let appended = seed(store, &s, &SEED_COMMITS);
        for v in [1, 3, 8, 10] {
            assert_events(&read(store, &s, v, None, 1), &s, &appended, v..=v);
        }
        assert_events(&read(store, &s, 4, Some(9), 1), &s, &appended, 4..=4);
    }

    pub(super) fn read_stream_limit_zero_returns_nothing(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("limit-zero");
        seed(store, &s, &SEED_COMMITS);
        assert!(read(store, &s, 1, None, 0).is_empty());
        assert!(read(store, &s, 5, Some(8), 0).is_empty());
        assert!(read_all(store, 1, 0).is_empty(), "read_all with limit 0");
    }

    pub(super) fn read_stream_from_after_to_returns_nothing(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("from-after-to");
        seed(store, &s, &SEED_COMMITS);
        assert!(read(store, &s, 6, Some(5), usize::MAX).is_empty());
        assert!(read(store, &s, 10, Some(1), usize::MAX).is_empty());
        assert!(read(store, &s, u64::MAX, Some(2), usize::MAX).is_empty());
    }

    pub(super) fn a_long_stream_reads_correctly_at_every_bound(b: &mut dyn Backend) {
        // Long enough for a backend to keep per-stream indexes or skip lists (the sled store
        // keeps one entry every 64 versions), with commits of uneven sizes.
        let s = stream("long");
        let sizes: Vec<usize> = (0..90).map(|i| [1, 2, 3, 5, 7, 4][i % 6]).collect();
        let appended = seed(b.store(), &s, &sizes);
        let head = appended.len() as u64;
        let check = |store: &dyn EventStore| {
            let froms = [
                0,
                1,
                2,
                63,
                64,
                65,
                100,
                127,
                128,
                129,
                200,
                head - 1,
                head,
                head + 1,
            ];
            for from in froms {
                for to in [
                    None,
                    Some(from),
                    Some(from + 1),
                    Some(64),
                    Some(129),
                    Some(head),
                ] {
                    for limit in [1, 3, 64, usize::MAX] {
                        let last = to.unwrap_or(head).min(head);
                        let first = from.max(1);
                        let events = read(store, &s, from, to, limit);
                        if first > last {
                            assert!(events.is_empty(), "{from}..={to:?} limit {limit}");
                            continue;
                        }
                        let count = (last - first + 1).min(limit as u64);
                        assert_events(&events, &s, &appended, first..=first + count - 1);
                    }
                }
            }
        };
        check(b.store());
        b.reopen();
        check(b.store());
        assert_eq!(b.store().stream_head(&s).expect("head"), Version(head));
    }

    pub(super) fn streams_do_not_leak_into_each_other(b: &mut dyn Backend) {
        let store = b.store();
        // Ids that are prefixes of each other, and the same id under another type.
        let a = stream("a");
        let ab = stream("ab");
        let other_type = StreamId::new("Contracts", "a").expect("a valid stream id");
        let (_, ev_a) = commit(store, &a, Version(0), 2);
        let (_, ev_ab) = commit(store, &ab, Version(0), 3);
        let (_, ev_other) = commit(store, &other_type, Version(0), 1);
        let (_, more_a) = commit(store, &a, Version(2), 1);
        let ev_a: Vec<PendingEvent> = ev_a.into_iter().chain(more_a).collect();
        assert_events(&read(store, &a, 1, None, usize::MAX), &a, &ev_a, 1..=3);
        assert_events(&read(store, &ab, 1, None, usize::MAX), &ab, &ev_ab, 1..=3);
        assert_events(
            &read(store, &other_type, 1, None, usize::MAX),
            &other_type,
            &ev_other,
            1..=1,
        );
        assert_eq!(store.stream_head(&a).expect("head"), Version(3));
        assert_eq!(store.stream_head(&ab).expect("head"), Version(3));
        assert_eq!(store.stream_head(&other_type).expect("head"), Version(1));
    }

    pub(super) fn an_unknown_stream_is_empty_at_version_zero(b: &mut dyn Backend) {
        let store = b.store();
        let unknown = stream("never-written");
        assert_eq!(
            store
                .stream_head(&unknown)
                .expect("head of an unknown stream"),
            Version(0)
        );
        assert!(read(store, &unknown, 1, None, usize::MAX).is_empty());
        // Still true once other streams have events.
        seed(store, &stream("written"), &[2]);
        assert_eq!(
            store
                .stream_head(&unknown)
                .expect("head of an unknown stream"),
            Version(0)
        );
        assert!(read(store, &unknown, 0, Some(100), usize::MAX).is_empty());
        assert_eq!(
            outcome(store, &command_id("never-used")),
            None,
            "an unknown command id"
        );
    }

    pub(super) fn a_multi_event_append_is_one_atomic_commit(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("atomic");
        commit(store, &stream("before"), Version(0), 2);
        let head = store.head_position();
        let stats = store.stats();
        let id = command_id("atomic-1");
        let fp = fingerprint(&s, "open with six events");
        let events = pending(&s, 6);
        let receipt = append(
            store,
            with_command(request(&s, Version(0), events.clone()), &id, fp),
        )
        .expect("a six-event append");
        assert_eq!(
            receipt,
            CommitReceipt {
                version: Version(6),
                first_position: Some(head.next()),
                event_count: 6
            }
        );
        assert_eq!(receipt.last_position(), Some(head.advance(6)));
        assert_eq!(store.head_position(), head.advance(6));
        let read = read(store, &s, 1, None, usize::MAX);
        assert_events(&read, &s, &events, 1..=6);
        let positions: Vec<u64> = read.iter().map(|e| e.position.0).collect();
        assert_eq!(
            positions,
            (head.0 + 1..=head.0 + 6).collect::<Vec<_>>(),
            "contiguous"
        );
        assert!(
            read.iter().all(|e| e.meta == read[0].meta),
            "one commit, one metadata"
        );
        assert_eq!(read[0].meta.command_id.as_ref(), Some(&id));
        assert_eq!(
            read_all(store, head.0 + 1, usize::MAX),
            read,
            "the log holds the commit whole"
        );
        let after = store.stats();
        assert_eq!(after.appends - stats.appends, 1, "one append acknowledged");
        assert_eq!(after.events - stats.events, 6, "six events committed");
        assert_eq!(
            outcome(store, &id),
            Some(StoredOutcome::Committed {
                fingerprint: fp,
                events: read
            }),
            "the command's outcome is the whole commit"
        );
    }

    pub(super) fn readers_never_see_part_of_a_commit(b: &mut dyn Backend) {
        const COMMITS: u64 = 20;
        const EVENTS_PER_COMMIT: usize = 5;
        let store = b.store();
        let s = stream("torn");
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut reads = 0u64;
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::Acquire);
                    let events = read(store, &s, 1, None, usize::MAX);
                    let log = read_all(store, 1, usize::MAX);
                    assert_eq!(events.len() % EVENTS_PER_COMMIT, 0, "a torn stream read");
                    assert_eq!(log.len() % EVENTS_PER_COMMIT, 0, "a torn log read");
                    for (i, e) in events.iter().enumerate() {
                        assert_eq!(e.version.0, i as u64 + 1, "contiguous versions");
                    }
                    reads += 1;
                    if finished {
                        return reads;
                    }
                }
            });
            for c in 0..COMMITS {
                commit(
                    store,
                    &s,
                    Version(c * EVENTS_PER_COMMIT as u64),
                    EVENTS_PER_COMMIT,
                );
            }
            done.store(true, std::sync::atomic::Ordering::Release);
            let reads = reader.join().expect("the reader saw only whole commits");
            assert!(reads > 0);
        });
        assert_eq!(store.stream_head(&s).expect("head"), Version(COMMITS * 5));
    }

    pub(super) fn an_expected_version_conflict_writes_nothing(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("conflict");
        commit(store, &s, Version(0), 3);
        let head = store.head_position();
        let id = command_id("conflict-1");
        let fp = fingerprint(&s, "deposit");
        for expected in [0, 1, 2, 4, 7] {
            let req = with_command(request(&s, Version(expected), pending(&s, 2)), &id, fp);
            let err = append(store, req).expect_err("a stale or future expected version");
            assert!(
                matches!(
                    &err,
                    AppendError::Conflict { stream, expected: e, actual: Version(3) }
                        if *stream == s && *e == Version(expected)
                ),
                "expected {expected}: {err:?}"
            );
        }
        let fresh = stream("conflict-new");
        let err = append(store, request(&fresh, Version(1), pending(&fresh, 1)))
            .expect_err("a new stream is at version 0");
        assert!(
            matches!(
                err,
                AppendError::Conflict {
                    actual: Version(0),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_nothing_written(store, head, &s, Version(3));
        assert_eq!(store.stream_head(&fresh).expect("head"), Version(0));
        assert_eq!(
            outcome(store, &id),
            None,
            "a refused append records no outcome"
        );
        // The command id was not consumed: the same command at the right version commits.
        let receipt = append(
            store,
            with_command(request(&s, Version(3), pending(&s, 2)), &id, fp),
        )
        .expect("the corrected append");
        assert_eq!(receipt.version, Version(5));
    }

    pub(super) fn concurrent_appends_at_the_same_version_commit_once(b: &mut dyn Backend) {
        const RACERS: usize = 8;
        let store = b.store();
        let s = stream("race");
        commit(store, &s, Version(0), 1);
        let tickets: Vec<_> = (0..RACERS)
            .map(|_| store.append(request(&s, Version(1), pending(&s, 2))))
            .collect();
        let results: Vec<_> = tickets.into_iter().map(block_on).collect();
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            winners, 1,
            "exactly one append at version 1 commits: {results:?}"
        );
        for r in &results {
            match r {
                Ok(receipt) => assert_eq!(receipt.version, Version(3)),
                Err(e) => assert!(
                    matches!(
                        e,
                        AppendError::Conflict {
                            expected: Version(1),
                            actual: Version(3),
                            ..
                        }
                    ),
                    "{e:?}"
                ),
            }
        }
        assert_eq!(store.stream_head(&s).expect("head"), Version(3));
        assert_log_is_gap_free(store);
    }

    pub(super) fn a_duplicate_command_id_returns_the_first_outcome(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("dedupe");
        let id = command_id("dedupe-1");
        let fp = fingerprint(&s, "deposit 5");
        let first = append(
            store,
            with_command(request(&s, Version(0), pending(&s, 2)), &id, fp),
        )
        .expect("the first execution");
        let events = read(store, &s, 1, None, usize::MAX);
        let recorded = StoredOutcome::Committed {
            fingerprint: fp,
            events,
        };
        assert_eq!(outcome(store, &id), Some(recorded.clone()));
        assert_eq!(recorded.fingerprint(), fp);
        let head = store.head_position();
        assert_eq!(first.last_position(), Some(head));

        // The same command again (a retry), at the stream's current version.
        let err = append(
            store,
            with_command(request(&s, Version(2), pending(&s, 2)), &id, fp),
        )
        .expect_err("a retry");
        assert!(
            matches!(&err, AppendError::CommandIdUsed { id: used, same_command: true } if *used == id),
            "{err:?}"
        );
        // A different command with the same id, on the same and on another stream.
        let other_fp = fingerprint(&s, "deposit 6");
        let err = append(
            store,
            with_command(request(&s, Version(2), pending(&s, 1)), &id, other_fp),
        )
        .expect_err("a different command");
        assert!(
            matches!(
                err,
                AppendError::CommandIdUsed {
                    same_command: false,
                    ..
                }
            ),
            "{err:?}"
        );
        let t = stream("dedupe-elsewhere");
        let err = append(
            store,
            with_command(
                request(&t, Version(0), pending(&t, 1)),
                &id,
                fingerprint(&t, "x"),
            ),
        )
        .expect_err("the id on another stream");
        assert!(
            matches!(
                err,
                AppendError::CommandIdUsed {
                    same_command: false,
                    ..
                }
            ),
            "{err:?}"
        );
        // A rejection outcome cannot reuse the id either.
        let req = outcome_request(&s, Version(2), &id, fp, AppendKind::Rejection(vec![1]));
        let err = append(store, req).expect_err("an outcome with a used id");
        assert!(
            matches!(
                err,
                AppendError::CommandIdUsed {
                    same_command: true,
                    ..
                }
            ),
            "{err:?}"
        );

        assert_nothing_written(store, head, &s, Version(2));
        assert_eq!(store.stream_head(&t).expect("head"), Version(0));
        assert_eq!(
            outcome(store, &id),
            Some(recorded),
            "the first outcome is kept"
        );
    }

    pub(super) fn a_command_id_is_used_once_within_one_batch(b: &mut dyn Backend) {
        const RETRIES: usize = 8;
        let store = b.store();
        let id = command_id("batch-dedupe");
        // The fingerprint is opaque to the store: the same value stands for "the same command".
        let fp = Fingerprint([7; 16]);
        let tickets: Vec<_> = (0..RETRIES)
            .map(|i| {
                let s = stream(&format!("batch-dedupe-{i}"));
                store.append(with_command(
                    request(&s, Version(0), pending(&s, 1)),
                    &id,
                    fp,
                ))
            })
            .collect();
        let results: Vec<_> = tickets.into_iter().map(block_on).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(
                    r,
                    AppendError::CommandIdUsed {
                        same_command: true,
                        ..
                    }
                ),
                "{r:?}"
            );
        }
        assert_eq!(store.head_position(), Position(1), "one event committed");
        assert!(matches!(
            outcome(store, &id),
            Some(StoredOutcome::Committed { .. })
        ));
    }

    pub(super) fn a_rejection_outcome_is_recorded_without_events(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("rejected");
        commit(store, &s, Version(0), 2);
        let head = store.head_position();
        let stats = store.stats();
        let id = command_id("rejected-1");
        let fp = fingerprint(&s, "withdraw 1000");
        let rejection = b"insufficient funds".to_vec();
        let req = outcome_request(
            &s,
            Version(2),
            &id,
            fp,
            AppendKind::Rejection(rejection.clone()),
        );
        let receipt = append(store, req).expect("a recorded rejection");
        assert_eq!(
            receipt,
            CommitReceipt {
                version: Version(2),
                first_position: None,
                event_count: 0
            }
        );
        assert_eq!(receipt.last_position(), None);
        assert_nothing_written(store, head, &s, Version(2));
        assert_eq!(store.stats().events, stats.events, "no event counted");
        assert_eq!(
            outcome(store, &id),
            Some(StoredOutcome::Rejected {
                stream: s.clone(),
                fingerprint: fp,
                version: Version(2),
                rejection,
            })
        );
        let req = outcome_request(&s, Version(2), &id, fp, AppendKind::Rejection(vec![]));
        let err = append(store, req).expect_err("a retry of the rejected command");
        assert!(
            matches!(
                err,
                AppendError::CommandIdUsed {
                    same_command: true,
                    ..
                }
            ),
            "{err:?}"
        );
        // A rejection on a stream without events leaves it without events.
        let empty = stream("rejected-empty");
        let id = command_id("rejected-2");
        let req = outcome_request(&empty, Version(0), &id, fp, AppendKind::Rejection(vec![9]));
        append(store, req).expect("a rejection on an empty stream");
        assert_nothing_written(store, head, &empty, Version(0));
        assert!(matches!(
            outcome(store, &id),
            Some(StoredOutcome::Rejected {
                version: Version(0),
                ..
            })
        ));
    }

    pub(super) fn a_no_event_outcome_is_recorded_without_events(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("no-events");
        commit(store, &s, Version(0), 4);
        let head = store.head_position();
        let id = command_id("no-events-1");
        let fp = fingerprint(&s, "deposit nothing new");
        let req = outcome_request(&s, Version(4), &id, fp, AppendKind::NoEvents);
        let receipt = append(store, req).expect("a recorded no-event outcome");
        assert_eq!(
            receipt,
            CommitReceipt {
                version: Version(4),
                first_position: None,
                event_count: 0
            }
        );
        assert_nothing_written(store, head, &s, Version(4));
        assert_eq!(
            outcome(store, &id),
            Some(StoredOutcome::NoEvents {
                stream: s.clone(),
                fingerprint: fp,
                version: Version(4)
            })
        );
        let other = fingerprint(&s, "something else");
        let req = outcome_request(&s, Version(4), &id, other, AppendKind::NoEvents);
        let err = append(store, req).expect_err("the id with a different command");
        assert!(
            matches!(
                err,
                AppendError::CommandIdUsed {
                    same_command: false,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    pub(super) fn an_empty_or_malformed_append_is_invalid(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("invalid");
        commit(store, &s, Version(0), 1);
        let head = store.head_position();
        let err = append(store, request(&s, Version(1), Vec::new())).expect_err("no events");
        assert!(
            matches!(&err, AppendError::Invalid { stream, .. } if *stream == s),
            "{err:?}"
        );
        // With a command id, the id is not consumed by the refused append.
        let id = command_id("invalid-1");
        let fp = fingerprint(&s, "empty");
        let err = append(
            store,
            with_command(request(&s, Version(1), Vec::new()), &id, fp),
        )
        .expect_err("no events, with a command id");
        assert!(matches!(err, AppendError::Invalid { .. }), "{err:?}");
        assert_eq!(outcome(store, &id), None);
        // Outcomes without events are recorded only for commands that carry an id.
        for kind in [AppendKind::Rejection(vec![1]), AppendKind::NoEvents] {
            let mut req = request(&s, Version(1), Vec::new());
            req.kind = kind;
            let err = append(store, req).expect_err("an outcome without a command id");
            assert!(matches!(err, AppendError::Invalid { .. }), "{err:?}");
        }
        assert_nothing_written(store, head, &s, Version(1));
    }

    pub(super) fn snapshots_of_an_unknown_stream_are_none(b: &mut dyn Backend) {
        let store = b.store();
        let unknown = stream("snap-unknown");
        assert_eq!(load_snapshot(store, &unknown, u64::MAX), None);
        assert_eq!(load_snapshot(store, &unknown, 0), None);
        // A stream with events but no snapshot, next to one with a snapshot.
        let s = stream("snap-none");
        commit(store, &s, Version(0), 3);
        let neighbour = stream("snap-none-2");
        commit(store, &neighbour, Version(0), 3);
        store
            .save_snapshot(&neighbour, &snapshot(2, b"n"))
            .expect("save a snapshot");
        assert_eq!(load_snapshot(store, &s, u64::MAX), None);
        assert_eq!(load_snapshot(store, &unknown, u64::MAX), None);
    }

    pub(super) fn load_snapshot_returns_the_latest_at_or_below(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("snap");
        commit(store, &s, Version(0), 10);
        // Saved out of version order: the latest is by version, not by time of saving.
        let (s3, s6, s9) = (
            snapshot(3, b"three"),
            snapshot(6, b"six"),
            snapshot(9, b"nine"),
        );
        for snap in [&s6, &s9, &s3] {
            store.save_snapshot(&s, snap).expect("save a snapshot");
        }
        // Snapshots of streams whose keys are close to this one's must not be found.
        let (prefix, other_type) = (
            stream("sna"),
            StreamId::new("Contracts", "snap").expect("a valid stream id"),
        );
        store
            .save_snapshot(&prefix, &snapshot(5, b"prefix"))
            .expect("save");
        store
            .save_snapshot(&other_type, &snapshot(8, b"other type"))
            .expect("save");
        assert_eq!(
            load_snapshot(store, &s, u64::MAX),
            Some(s9.clone()),
            "the latest"
        );
        assert_eq!(load_snapshot(store, &s, 10), Some(s9.clone()));
        assert_eq!(load_snapshot(store, &s, 9), Some(s9), "at the version");
        assert_eq!(load_snapshot(store, &s, 8), Some(s6.clone()), "below");
        assert_eq!(load_snapshot(store, &s, 7), Some(s6.clone()));
        assert_eq!(load_snapshot(store, &s, 6), Some(s6));
        assert_eq!(load_snapshot(store, &s, 5), Some(s3.clone()));
        assert_eq!(load_snapshot(store, &s, 3), Some(s3));
        assert_eq!(load_snapshot(store, &s, 2), None, "nothing at or below 2");
        assert_eq!(load_snapshot(store, &s, 0), None);
        assert_eq!(
            load_snapshot(store, &prefix, u64::MAX).map(|x| x.state),
            Some(b"prefix".to_vec())
        );
        assert_eq!(
            load_snapshot(store, &other_type, 8).map(|x| x.version),
            Some(Version(8))
        );
    }

    pub(super) fn save_snapshot_replaces_the_one_at_the_same_version(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("snap-overwrite");
        commit(store, &s, Version(0), 4);
        store
            .save_snapshot(&s, &snapshot(4, b"first"))
            .expect("save");
        let second = Snapshot {
            schema_version: 2,
            ..snapshot(4, b"second, longer than the first")
        };
        store
            .save_snapshot(&s, &second)
            .expect("save again at the same version");
        assert_eq!(load_snapshot(store, &s, 4), Some(second.clone()));
        let shorter = snapshot(4, b"3rd");
        store
            .save_snapshot(&s, &shorter)
            .expect("save a shorter state");
        assert_eq!(load_snapshot(store, &s, u64::MAX), Some(shorter));
    }

    pub(super) fn a_large_snapshot_round_trips_and_survives_reopen(b: &mut dyn Backend) {
        const STATE_BYTES: usize = 1024 * 1024;
        let s = stream("snap-large");
        // Not a repeating short pattern, so a truncated or shifted state cannot compare equal.
        let state: Vec<u8> = (0..STATE_BYTES)
            .map(|i| u8::try_from((i * 7 + i / 251) % 256).expect("a byte"))
            .collect();
        let large = snapshot(2, &state);
        {
            let store = b.store();
            commit(store, &s, Version(0), 2);
            store
                .save_snapshot(&s, &large)
                .expect("save a 1 MiB snapshot");
            assert_eq!(load_snapshot(store, &s, 2), Some(large.clone()));
        }
        b.reopen();
        assert_eq!(load_snapshot(b.store(), &s, u64::MAX), Some(large));
    }

    pub(super) fn read_all_pages_by_position_across_streams(b: &mut dyn Backend) {
        const PAGE: usize = 4;
        let store = b.store();
        let streams = [stream("log-a"), stream("log-b"), stream("log-c")];
        let mut heads = [Version(0); 3];
        for i in 0..12 {
            let (receipt, _) = commit(store, &streams[i % 3], heads[i % 3], i % 4 + 1);
            heads[i % 3] = receipt.version;
        }
        let total: u64 = (0..12u64).map(|i| i % 4 + 1).sum();
        assert_eq!(store.head_position(), Position(total));
        let log = assert_log_is_gap_free(store);

        assert_eq!(
            read_all_in_pages(store, PAGE),
            log,
            "the pages together are the log"
        );
        // Lower bounds inside commits, at 0, at the head and beyond it.
        for from in [2, 5, 11, total] {
            let page = read_all(store, from, 3);
            assert_eq!(page.first().map(|e| e.position), Some(Position(from)));
            assert_eq!(
                page,
                log[usize::try_from(from - 1).expect("small")..]
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
            );
        }
        assert_eq!(read_all(store, 0, usize::MAX), log, "from position 0");
        assert!(
            read_all(store, total + 1, usize::MAX).is_empty(),
            "beyond the head"
        );
        // The log and the stream reads agree on every envelope.
        for s in &streams {
            let from_log: Vec<_> = log.iter().filter(|e| e.stream == *s).cloned().collect();
            assert_eq!(read(store, s, 1, None, usize::MAX), from_log, "{s}");
        }
    }

    pub(super) fn appends_from_many_threads_get_gap_free_positions(b: &mut dyn Backend) {
        const THREADS: usize = 4;
        const COMMITS: usize = 25;
        let store = b.store();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                scope.spawn(move || {
                    let s = stream(&format!("thread-{t}"));
                    let mut head = Version(0);
                    for c in 0..COMMITS {
                        let (receipt, _) = commit(store, &s, head, c % 3 + 1);
                        head = receipt.version;
                    }
                });
            }
        });
        let log = assert_log_is_gap_free(store);
        let per_thread: usize = (0..COMMITS).map(|c| c % 3 + 1).sum();
        assert_eq!(log.len(), THREADS * per_thread);
        // Appends that raced were likely committed together: read across those commits.
        for page in [1, 3, 7] {
            assert_eq!(read_all_in_pages(store, page), log, "pages of {page}");
        }
        for t in 0..THREADS {
            let s = stream(&format!("thread-{t}"));
            let from_log: Vec<_> = log.iter().filter(|e| e.stream == s).cloned().collect();
            assert_eq!(read(store, &s, 1, None, usize::MAX), from_log, "{s}");
        }
    }

    pub(super) fn head_position_and_stream_head_follow_the_receipts(b: &mut dyn Backend) {
        let store = b.store();
        assert_eq!(store.head_position(), Position(0), "an empty store");
        let (a, c) = (stream("head-a"), stream("head-c"));
        let mut expected_head = Position(0);
        for (s, count) in [(&a, 2), (&c, 1), (&a, 3), (&c, 4), (&a, 1)] {
            let before = store.stream_head(s).expect("head");
            let (receipt, _) = commit(store, s, before, count);
            assert_eq!(receipt.first_position, Some(expected_head.next()));
            expected_head = expected_head.advance(count as u64);
            assert_eq!(receipt.last_position(), Some(expected_head));
            assert_eq!(receipt.version, before.advance(count as u64));
            assert_eq!(store.head_position(), expected_head);
            assert_eq!(store.stream_head(s).expect("head"), receipt.version);
        }
        assert_eq!(store.stream_head(&a).expect("head"), Version(6));
        assert_eq!(store.stream_head(&c).expect("head"), Version(5));
    }

    /// `watch_types`: once an append of a watched type is acknowledged, the head and the
    /// watch both cover it, and then the watch is not beyond the head (a subscriber that reads
    /// the head and then the watch, as `SubscriberInfo` does, misses none of its events).
    pub(super) fn a_type_watch_covers_every_acknowledged_event_of_its_types(b: &mut dyn Backend) {
        let store = b.store();
        let mut watch = store.watch_types(&["Contract".to_string(), "Other".to_string()]);
        let (ours, other) = (
            stream("type-watch"),
            StreamId::new("Other", "w").expect("id"),
        );
        let unwatched = StreamId::new("Unwatched", "w").expect("a valid stream id");
        let mut versions = std::collections::HashMap::new();
        for (i, s) in [&ours, &unwatched, &other, &unwatched, &ours]
            .into_iter()
            .enumerate()
        {
            let at = versions.entry(s.clone()).or_insert(Version(0));
            let (receipt, _) = commit(store, s, *at, i + 1);
            *at = receipt.version;
            let head = store.head_position();
            let seen = *watch.borrow_and_update();
            assert!(
                seen <= head,
                "the watch ({seen}) is beyond the head ({head})"
            );
            if s != &unwatched {
                let last = receipt.last_position().expect("events were written");
                assert!(
                    seen >= last,
                    "append {i} to {s} was acknowledged at {last}, but the watch shows {seen}"
                );
            }
        }
    }

    /// `stream_ids`: the streams of one type whose id starts with a prefix, shortest first
    /// and then in byte order, at most `limit`, the same before and after a reopen (from the
    /// sled store's checkpointed heads as from its heads in memory).
    pub(super) fn stream_ids_list_a_types_streams_by_prefix_shortest_first(b: &mut dyn Backend) {
        for id in ["o-41", "o-4", "p-1", "o-40", "o-5", "o-400"] {
            commit(b.store(), &stream(id), Version(0), 1);
        }
        let other = StreamId::new("Other", "o-42").expect("a valid stream id");
        commit(b.store(), &other, Version(0), 1);
        for pass in ["before a reopen", "after a reopen"] {
            let store = b.store();
            let ids = |prefix: &str, limit: usize| {
                store
                    .stream_ids("Contract", prefix, limit)
                    .unwrap_or_else(|e| panic!("listing {prefix:?} {pass}: {e:?}"))
            };
            assert_eq!(ids("o-4", 10), ["o-4", "o-40", "o-41", "o-400"], "{pass}");
            assert_eq!(ids("o-4", 2), ["o-4", "o-40"], "{pass}");
            assert_eq!(ids("", 4), ["o-4", "o-5", "p-1", "o-40"], "{pass}");
            assert_eq!(ids("o-40", 10), ["o-40", "o-400"], "{pass}");
            assert!(ids("q", 10).is_empty(), "{pass}");
            assert!(ids("o-4", 0).is_empty(), "{pass}");
            assert_eq!(
                store.stream_ids("Other", "o", 10).expect("listing Other"),
                ["o-42"],
                "{pass}"
            );
            assert!(store
                .stream_ids("Nobody", "", 10)
                .expect("listing")
                .is_empty());
            b.reopen();
        }
    }

    pub(super) fn reads_after_reopen_return_the_same_data(b: &mut dyn Backend) {
        let (a, c) = (stream("reopen-a"), stream("reopen-c"));
        let (committed, rejected, no_events) = (
            command_id("reopen-1"),
            command_id("reopen-2"),
            command_id("reopen-3"),
        );
        let fp = fingerprint(&a, "reopen");
        {
            let store = b.store();
            seed(store, &a, &[1, 3]);
            let req = with_command(request(&c, Version(0), pending(&c, 2)), &committed, fp);
            append(store, req).expect("a committed command");
            let req = outcome_request(
                &a,
                Version(4),
                &rejected,
                fp,
                AppendKind::Rejection(vec![4]),
            );
            append(store, req).expect("a rejected command");
            let req = outcome_request(&c, Version(2), &no_events, fp, AppendKind::NoEvents);
            append(store, req).expect("a no-event command");
            for (s, v) in [(&a, 2), (&a, 4), (&c, 1)] {
                store
                    .save_snapshot(s, &snapshot(v, format!("{s}@{v}").as_bytes()))
                    .expect("save");
            }
        }
        let capture = |store: &dyn EventStore| {
            (
                store.head_position(),
                read_all(store, 1, usize::MAX),
                [&a, &c].map(|s| store.stream_head(s).expect("head")),
                [&a, &c].map(|s| read(store, s, 1, None, usize::MAX)),
                [&committed, &rejected, &no_events].map(|id| outcome(store, id)),
                [(&a, u64::MAX), (&a, 3), (&c, u64::MAX)].map(|(s, v)| load_snapshot(store, s, v)),
            )
        };
        let before = capture(b.store());
        assert!(
            before.4.iter().all(Option::is_some),
            "every outcome was recorded"
        );
        assert!(
            before.5.iter().all(Option::is_some),
            "every snapshot was saved"
        );
        b.reopen();
        assert_eq!(capture(b.store()), before, "the same data after reopening");

        // The reopened store carries on: versions, positions and command ids.
        let store = b.store();
        let head = store.head_position();
        let (receipt, _) = commit(store, &a, Version(4), 2);
        assert_eq!(receipt.first_position, Some(head.next()));
        assert_eq!(receipt.version, Version(6));
        let err = append(store, request(&c, Version(0), pending(&c, 1))).expect_err("stale");
        assert!(
            matches!(
                err,
                AppendError::Conflict {
                    actual: Version(2),
                    ..
                }
            ),
            "{err:?}"
        );
        for id in [&committed, &rejected, &no_events] {
            let req = with_command(request(&c, Version(2), pending(&c, 1)), id, fp);
            let err = append(store, req).expect_err("a used command id, after reopening");
            assert!(
                matches!(err, AppendError::CommandIdUsed { .. }),
                "{id}: {err:?}"
            );
        }
        assert_log_is_gap_free(store);
        let after_write = capture(store);
        b.reopen();
        assert_eq!(
            capture(b.store()),
            after_write,
            "the same data after a second reopen"
        );
    }

    pub(super) fn shutdown_refuses_new_appends_and_is_idempotent(b: &mut dyn Backend) {
        let store = b.store();
        let s = stream("shutdown");
        assert_eq!(store.health(), StoreHealth::Ready);
        commit(store, &s, Version(0), 1);
        store.shutdown().expect("shut down");
        store.shutdown().expect("shut down again");
        assert_eq!(store.health(), StoreHealth::Closed);
        let err = append(store, request(&s, Version(1), pending(&s, 1))).expect_err("closed");
        assert!(
            matches!(err, AppendError::Store(StoreError::Closed)),
            "{err:?}"
        );
        b.reopen();
        assert_eq!(b.store().health(), StoreHealth::Ready);
        assert_eq!(
            b.store().stream_head(&s).expect("head"),
            Version(1),
            "nothing lost"
        );
    }
}
