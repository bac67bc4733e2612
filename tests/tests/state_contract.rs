//! The state store contract suite: what every [`StateStore`] backend must do — the read side's
//! checkpoints, parked events, views, process-manager state and deadlines all rest on it.
//!
//! Like the event store's suite (`store_contract.rs`), each contract is a plain function in
//! [`contract`] taking a `&mut dyn Backend`, and [`state_contract!`] turns the list into one
//! `#[test]` per contract for one backend. A new backend adds one line, as PostgreSQL's does:
//! `state_contract!(postgres_state: PgBackend::fresh());`.
//!
//! Instantiated for the sled state store (the default backend) and for [`MemoryState`] (the
//! read side of a runtime over a log without one; it is not durable, so for it "reopen" keeps
//! the same instance). Crash consistency of the sled backend under `kill -9` is checked by
//! [`sled_crash`]: a child process commits numbered change sets spanning several spaces and is
//! killed at a random moment; every commit the reopened store shows must be whole, and they must
//! be a prefix of the child's commits.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use annals::store::sled::{SledOptions, SledStore};
use annals::store::state::{prefix_end, DEADLINES, PARKED};
use annals::store::{Changes, EventStore, MemoryState, ParkedEvent, PgStore, StateStore};
use annals::{Position, Timestamp};
use annals_tests::PgSchema;
use tempfile::TempDir;

/// A state store under test.
trait Backend {
    /// The store under test.
    fn state(&self) -> Arc<dyn StateStore>;

    /// Closes the store as a stopping service does and opens it again on the same data. The
    /// caller drops the handles [`Backend::state`] gave first (they hold the database open).
    fn reopen(&mut self);
}

/// The sled backend: a real database in a temporary directory.
struct SledBackend {
    store: Option<SledStore>,
    dir: TempDir,
}

impl SledBackend {
    fn fresh() -> SledBackend {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SledStore::open(SledOptions::new(dir.path())).expect("open a new store");
        SledBackend {
            store: Some(store),
            dir,
        }
    }
}

impl Backend for SledBackend {
    fn state(&self) -> Arc<dyn StateStore> {
        self.store.as_ref().expect("open between reopens").state()
    }

    fn reopen(&mut self) {
        let store = self.store.take().expect("open between reopens");
        store.shutdown().expect("shut down cleanly");
        drop(store);
        self.store = Some(SledStore::open(SledOptions::new(self.dir.path())).expect("reopen"));
    }
}

/// The in-memory state store.
struct MemoryBackend(Arc<MemoryState>);

impl MemoryBackend {
    fn fresh() -> MemoryBackend {
        MemoryBackend(MemoryState::new())
    }
}

impl Backend for MemoryBackend {
    fn state(&self) -> Arc<dyn StateStore> {
        self.0.clone()
    }

    fn reopen(&mut self) {}
}

/// Instantiates every contract in [`contract`] as a `#[test]` for one backend.
macro_rules! state_contract {
    ($backend:ident: $fresh:expr) => {
        mod $backend {
            use super::*;

            state_contract!(@each $fresh;
                nothing_is_there_before_it_is_committed,
                a_commit_is_visible_at_once_to_every_thread,
                the_last_change_of_a_key_wins,
                range_respects_bounds_order_and_limit_across_pending_and_settled_records,
                commits_survive_a_reopen,
                spaces_are_listed_by_prefix_and_dropped_whole,
                checkpoints_and_parked_events_round_trip,
                concurrent_commits_all_apply_in_one_order,
                a_large_commit_round_trips,
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

state_contract!(sled_state: SledBackend::fresh());
state_contract!(memory_state: MemoryBackend::fresh());
state_contract!(postgres_state: PgBackend::fresh());

/// The PostgreSQL backend: a store in a schema of its own on the test server, dropped after the
/// test.
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
    fn state(&self) -> Arc<dyn StateStore> {
        self.store.as_ref().expect("open between reopens").state()
    }

    fn reopen(&mut self) {
        let store = self.store.take().expect("open between reopens");
        store.shutdown().expect("shut down cleanly");
        drop(store);
        self.store = Some(self.schema.open());
    }
}

fn put(changes: &mut Changes, space: &str, key: &str, value: &str) {
    changes.put(space, key.as_bytes(), value.as_bytes());
}

fn commit(state: &dyn StateStore, f: impl FnOnce(&mut Changes)) {
    let mut changes = Changes::default();
    f(&mut changes);
    state.commit(changes).expect("the commit succeeds");
}

fn get(state: &dyn StateStore, space: &str, key: &str) -> Option<String> {
    state
        .get(space, key.as_bytes())
        .expect("the read succeeds")
        .map(|v| String::from_utf8(v).expect("UTF-8 test values"))
}

fn keys(
    state: &dyn StateStore,
    space: &str,
    from: Bound<&[u8]>,
    to: Bound<&[u8]>,
    limit: usize,
) -> Vec<String> {
    state
        .range(space, from, to, limit)
        .expect("the range read succeeds")
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).expect("UTF-8 test keys"))
        .collect()
}

mod contract {
    use super::*;

    pub(crate) fn nothing_is_there_before_it_is_committed(b: &mut dyn Backend) {
        let state = b.state();
        assert_eq!(get(&*state, "view/p/0/v", "k"), None);
        assert!(keys(
            &*state,
            "view/p/0/v",
            Bound::Unbounded,
            Bound::Unbounded,
            10
        )
        .is_empty());
        assert_eq!(state.load_checkpoint("nobody").expect("reads"), Position(0));
        assert!(state.parked("nobody", 10).expect("reads").is_empty());
        state
            .commit(Changes::default())
            .expect("an empty commit is fine");
    }

    pub(crate) fn a_commit_is_visible_at_once_to_every_thread(b: &mut dyn Backend) {
        let state = b.state();
        for i in 0..200 {
            commit(&*state, |c| {
                put(c, "a", &format!("k{i:03}"), &i.to_string());
                put(c, "b", &format!("k{i:03}"), &i.to_string());
            });
            let reader = state.clone();
            let seen = std::thread::spawn(move || {
                (
                    get(&*reader, "a", &format!("k{i:03}")),
                    get(&*reader, "b", &format!("k{i:03}")),
                )
            })
            .join()
            .expect("the reader thread");
            assert_eq!(
                seen,
                (Some(i.to_string()), Some(i.to_string())),
                "commit {i}"
            );
        }
    }

    pub(crate) fn the_last_change_of_a_key_wins(b: &mut dyn Backend) {
        let state = b.state();
        commit(&*state, |c| {
            put(c, "s", "k", "1");
            put(c, "s", "k", "2");
            put(c, "s", "gone", "x");
        });
        assert_eq!(get(&*state, "s", "k").as_deref(), Some("2"));
        commit(&*state, |c| {
            c.delete("s", b"gone".to_vec());
            put(c, "s", "k", "3");
        });
        assert_eq!(get(&*state, "s", "k").as_deref(), Some("3"));
        assert_eq!(get(&*state, "s", "gone"), None);
        // Deleting what is not there is no error.
        commit(&*state, |c| c.delete("s", b"never".to_vec()));
        drop(state);
        b.reopen();
        let state = b.state();
        assert_eq!(get(&*state, "s", "k").as_deref(), Some("3"));
        assert_eq!(get(&*state, "s", "gone"), None);
    }

    pub(crate) fn range_respects_bounds_order_and_limit_across_pending_and_settled_records(
        b: &mut dyn Backend,
    ) {
        let state = b.state();
        // Settled records (given time to reach their final place), then changes on top.
        commit(&*state, |c| {
            for i in 0..50 {
                put(c, "r", &format!("k{i:02}"), "old");
            }
            put(c, "other", "k00", "x");
        });
        std::thread::sleep(Duration::from_millis(50));
        commit(&*state, |c| {
            for i in (0..50).step_by(3) {
                c.delete("r", format!("k{i:02}").into_bytes());
            }
            put(c, "r", "k25x", "new");
            put(c, "r", "k01", "new");
        });
        let expected: Vec<String> = (0..50)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("k{i:02}"))
            .chain(std::iter::once("k25x".to_string()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        drop(state);
        for round in 0..2 {
            let state = b.state();
            let all = keys(&*state, "r", Bound::Unbounded, Bound::Unbounded, usize::MAX);
            assert_eq!(all, expected, "round {round}");
            assert_eq!(
                keys(&*state, "r", Bound::Unbounded, Bound::Unbounded, 5),
                expected[..5].to_vec()
            );
            let from = keys(
                &*state,
                "r",
                Bound::Excluded(b"k10"),
                Bound::Included(b"k20"),
                100,
            );
            let want: Vec<String> = expected
                .iter()
                .filter(|k| k.as_str() > "k10" && k.as_str() <= "k20")
                .cloned()
                .collect();
            assert_eq!(from, want);
            let prefix = b"k2";
            let end = prefix_end(prefix).expect("an end");
            let scanned = keys(
                &*state,
                "r",
                Bound::Included(prefix),
                Bound::Excluded(&end),
                100,
            );
            assert!(
                scanned.iter().all(|k| k.starts_with("k2"))
                    && scanned.contains(&"k25x".to_string())
            );
            let value = state.get("r", b"k01").expect("reads");
            assert_eq!(value.as_deref(), Some(&b"new"[..]));
            // The same after everything has settled and after a reopen.
            std::thread::sleep(Duration::from_millis(50));
            drop(state);
            b.reopen();
        }
    }

    pub(crate) fn commits_survive_a_reopen(b: &mut dyn Backend) {
        let state = b.state();
        for i in 0..100 {
            commit(&*state, |c| {
                put(c, "durable", &format!("k{i:03}"), &i.to_string());
            });
        }
        drop(state);
        b.reopen();
        let state = b.state();
        for i in 0..100 {
            assert_eq!(
                get(&*state, "durable", &format!("k{i:03}")),
                Some(i.to_string())
            );
        }
    }

    pub(crate) fn spaces_are_listed_by_prefix_and_dropped_whole(b: &mut dyn Backend) {
        let state = b.state();
        commit(&*state, |c| {
            put(c, "view/p/0/a", "k", "v");
            put(c, "view/p/0/b", "k", "v");
            put(c, "view/p/1/a", "k", "v");
            put(c, "view/q/0/a", "k", "v");
        });
        let listed = state.spaces("view/p/").expect("lists");
        assert_eq!(listed, vec!["view/p/0/a", "view/p/0/b", "view/p/1/a"]);
        state.drop_space("view/p/0/a").expect("drops");
        assert_eq!(get(&*state, "view/p/0/a", "k"), None);
        assert_eq!(get(&*state, "view/p/0/b", "k").as_deref(), Some("v"));
        drop(state);
        b.reopen();
        let state = b.state();
        assert_eq!(get(&*state, "view/p/0/a", "k"), None);
        assert_eq!(
            state.spaces("view/p/0/").expect("lists"),
            vec!["view/p/0/b"]
        );
    }

    pub(crate) fn checkpoints_and_parked_events_round_trip(b: &mut dyn Backend) {
        let state = b.state();
        let parked = |position: u64| ParkedEvent {
            position: Position(position),
            reason: format!("failed at {position}"),
            attempts: 3,
            parked_at: Timestamp(1_000 + position),
        };
        let mut changes = Changes::default();
        changes.save_checkpoint("s", Position(42));
        for p in [9, 3, 7] {
            changes.park("s", &parked(p)).expect("encodes");
        }
        changes.park("s2", &parked(5)).expect("encodes");
        state.commit(changes).expect("commits");
        assert_eq!(state.load_checkpoint("s").expect("reads"), Position(42));
        let listed = state.parked("s", 10).expect("reads");
        assert_eq!(
            listed,
            vec![parked(3), parked(7), parked(9)],
            "in position order, one subscriber only"
        );
        assert_eq!(
            state.parked("s", 2).expect("reads").len(),
            2,
            "at most the limit"
        );
        assert!(state.unpark("s", Position(7)).expect("unparks"));
        assert!(
            !state.unpark("s", Position(7)).expect("unparks"),
            "only once"
        );
        drop(state);
        b.reopen();
        let state = b.state();
        assert_eq!(
            state.parked("s", 10).expect("reads"),
            vec![parked(3), parked(9)]
        );
        assert_eq!(state.parked("s2", 10).expect("reads"), vec![parked(5)]);
        state.save_checkpoint("s", Position(43)).expect("saves");
        assert_eq!(state.load_checkpoint("s").expect("reads"), Position(43));
    }

    pub(crate) fn concurrent_commits_all_apply_in_one_order(b: &mut dyn Backend) {
        let state = b.state();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let state = state.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        commit(&*state, |c| {
                            put(c, "mine", &format!("t{t}-{i:03}"), "x");
                            put(c, "shared", "last", &format!("t{t}-{i:03}"));
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a committing thread");
        }
        let mine = keys(
            &*state,
            "mine",
            Bound::Unbounded,
            Bound::Unbounded,
            usize::MAX,
        );
        assert_eq!(mine.len(), 1000);
        let last = get(&*state, "shared", "last").expect("set");
        assert!(
            last.ends_with("-249"),
            "the last commit of some thread wins, not {last}"
        );
        drop(state);
        b.reopen();
        assert_eq!(get(&*b.state(), "shared", "last"), Some(last));
    }

    pub(crate) fn a_large_commit_round_trips(b: &mut dyn Backend) {
        let state = b.state();
        let value = "v".repeat(1024);
        commit(&*state, |c| {
            for i in 0..4000 {
                put(c, DEADLINES, &format!("k{i:05}"), &value);
            }
        });
        assert_eq!(
            keys(
                &*state,
                DEADLINES,
                Bound::Unbounded,
                Bound::Unbounded,
                usize::MAX
            )
            .len(),
            4000
        );
        drop(state);
        b.reopen();
        let state = b.state();
        let all = state
            .range(DEADLINES, Bound::Unbounded, Bound::Unbounded, usize::MAX)
            .expect("reads");
        assert_eq!(all.len(), 4000);
        assert!(all.iter().all(|(_, v)| v.as_slice() == value.as_bytes()));
        assert!(state.parked("any", 10).expect("reads").is_empty());
        assert!(state.get(PARKED, b"nothing").expect("reads").is_none());
    }
}

/// Crash consistency of the sled state store under `kill -9`.
mod sled_crash {
    use super::*;

    const ENV_CHILD: &str = "ANNALS_STATE_CRASH_CHILD";
    /// Kill cycles (`ANNALS_STATE_CRASH_CYCLES`, default 10).
    fn cycles() -> u64 {
        std::env::var("ANNALS_STATE_CRASH_CYCLES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10)
    }

    /// The child: opens the store in the directory the parent names and commits numbered
    /// change sets until it is killed. Commit `n` sets `counter/n` in space `a`, the same in
    /// space `b`, and `last` in space `c` to `n`, so a torn commit shows as a mismatch.
    #[test]
    fn child_commits_until_killed() {
        let Ok(dir) = std::env::var(ENV_CHILD) else {
            return;
        };
        let store = SledStore::open(SledOptions::new(&dir)).expect("the child opens the store");
        let state = store.state();
        let first = state.get("c", b"last").expect("reads").map_or(0, |v| {
            u64::from_be_bytes(v.try_into().expect("8 bytes")) + 1
        });
        for n in first.. {
            let mut changes = Changes::default();
            changes.put("a", n.to_be_bytes(), n.to_be_bytes());
            changes.put("b", n.to_be_bytes(), n.to_be_bytes());
            changes.put("c", b"last".to_vec(), n.to_be_bytes());
            state.commit(changes).expect("the child commits");
            if n % 64 == 0 {
                // Durable up to here, as the journal's syncs make it.
                store.sync().expect("the child syncs");
            }
        }
    }

    #[test]
    fn every_commit_is_whole_after_kill_9_and_commits_are_a_prefix() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let exe = std::env::current_exe().expect("the test binary");
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut last_seen = None;
        for cycle in 0..cycles() {
            let mut child = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "sled_crash::child_commits_until_killed",
                    "--nocapture",
                ])
                .env(ENV_CHILD, dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("the child starts");
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(150 + seed % 300));
            child.kill().expect("kill -9 the child");
            child.wait().expect("reap the child");
            let store =
                SledStore::open(SledOptions::new(dir.path())).expect("reopens after the kill");
            let state = store.state();
            let last = state
                .get("c", b"last")
                .expect("reads")
                .map(|v| u64::from_be_bytes(v.try_into().expect("8 bytes")));
            let a = state
                .range("a", Bound::Unbounded, Bound::Unbounded, usize::MAX)
                .expect("reads");
            let b = state
                .range("b", Bound::Unbounded, Bound::Unbounded, usize::MAX)
                .expect("reads");
            let count = last.map_or(0, |l| l + 1);
            assert_eq!(
                a.len() as u64,
                count,
                "cycle {cycle}: space a holds commits 0..={last:?}"
            );
            assert_eq!(a, b, "cycle {cycle}: spaces a and b hold the same commits");
            for (i, (k, v)) in a.iter().enumerate() {
                let n = (i as u64).to_be_bytes();
                assert!(
                    k.as_slice() == n && v.as_slice() == n,
                    "cycle {cycle}: commit {i} is whole"
                );
            }
            assert!(
                last >= last_seen,
                "cycle {cycle}: commits seen by an earlier reopen were lost ({last:?} < {last_seen:?})"
            );
            last_seen = last;
            store.shutdown().expect("shuts down");
        }
        assert!(
            last_seen.is_some_and(|l| l > 0),
            "the child committed something"
        );
    }
}
