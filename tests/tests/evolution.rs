//! Schema evolution and temporal queries: events written with an older schema version are
//! upcast on every read path (replay, history, dedupe, subscribers); a state can be asked for
//! as of a version or an instant, never from a later snapshot.

use std::num::NonZeroU64;
use std::sync::Arc;

use annals::envelope::EncodedPayload;
use annals::store::{AppendKind, AppendRequest, EventStore, PendingEvent};
use annals::{
    Aggregate, AggregateOptions, CommitMeta, DomainEvent, Runtime, RuntimeOptions, StreamId,
    Timestamp, Upcast, UpcastError, Version,
};
use serde::{Deserialize, Serialize};

/// A ledger whose events changed shape twice.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Ledger {
    currency: String,
    total: u64,
    entries: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum LedgerCommand {
    Add { amount: u64, currency: String },
}

/// Current events. `Added` is at version 2 (version 1 had no currency); `Adjusted` version 1
/// recorded two amounts in one event and now is two `Added`; `Audited` version 1 is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum LedgerEvent {
    Added { amount: u64, currency: String },
}

impl DomainEvent for LedgerEvent {
    fn event_type(&self) -> &'static str {
        "Added"
    }

    fn current_schema_version(event_type: &str) -> u16 {
        // `Adjusted` and `Audited` are gone: their version 1 is older than "current".
        match event_type {
            "Added" | "Adjusted" | "Audited" => 2,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Ledger {
    const TYPE: &'static str = "Ledger";
    type Command = LedgerCommand;
    type Event = LedgerEvent;
    type Rejection = Never;

    fn decide(&self, command: &LedgerCommand) -> Result<Vec<LedgerEvent>, Never> {
        let LedgerCommand::Add { amount, currency } = command;
        Ok(vec![LedgerEvent::Added {
            amount: *amount,
            currency: currency.clone(),
        }])
    }

    fn apply(&mut self, event: &LedgerEvent) {
        let LedgerEvent::Added { amount, currency } = event;
        self.total += amount;
        self.entries += 1;
        self.currency.clone_from(currency);
    }

    fn options() -> AggregateOptions {
        AggregateOptions::default().with_snapshot_every(NonZeroU64::new(4))
    }

    fn upcast(mut old: Upcast) -> Result<Vec<Upcast>, UpcastError> {
        let invalid = |old: &Upcast, reason: &str| UpcastError::Invalid {
            event_type: old.event_type.clone(),
            schema_version: old.schema_version,
            reason: reason.into(),
        };
        match (old.event_type.as_str(), old.schema_version) {
            ("Added", 1) => {
                old.set_field("currency", ciborium::Value::Text("EUR".into()));
                old.schema_version = 2;
                Ok(vec![old])
            }
            ("Adjusted", 1) => {
                let amount = |name: &str| -> Result<u64, UpcastError> {
                    old.field(name)
                        .and_then(ciborium::Value::as_integer)
                        .and_then(|i| u64::try_from(i).ok())
                        .ok_or_else(|| invalid(&old, "missing amount"))
                };
                let added = |amount: u64| Upcast {
                    event_type: "Added".into(),
                    schema_version: 2,
                    payload: ciborium::Value::Map(vec![
                        ("type".into(), "Added".into()),
                        ("amount".into(), amount.into()),
                        ("currency".into(), "EUR".into()),
                    ]),
                };
                Ok(vec![added(amount("first")?), added(amount("second")?)])
            }
            ("Audited", 1) => Ok(vec![]),
            _ => Err(UpcastError::NoUpcaster {
                event_type: old.event_type,
                schema_version: old.schema_version,
            }),
        }
    }
}

/// The payloads of the old versions, as they were written.
#[derive(Serialize)]
#[serde(tag = "type")]
enum OldEvent {
    Added { amount: u64 },
    Adjusted { first: u64, second: u64 },
    Audited { by: String },
}

fn old(event_type: &str, event: &OldEvent) -> PendingEvent {
    let mut payload = Vec::new();
    ciborium::into_writer(event, &mut payload).expect("encodes");
    PendingEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: Arc::from(event_type),
        schema_version: 1,
        payload: EncodedPayload(payload),
    }
}

fn append_old(
    store: &Arc<dyn EventStore>,
    id: &str,
    expected: u64,
    events: Vec<PendingEvent>,
    at: u64,
) {
    let request = AppendRequest {
        stream: StreamId::new("Ledger", id).expect("valid"),
        expected: Version(expected),
        meta: CommitMeta {
            recorded_at: Timestamp(at),
            ..CommitMeta::default()
        },
        command: None,
        kind: AppendKind::Events(events),
    };
    futures::executor::block_on(store.append(request)).expect("appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_events_are_upcast_on_every_read_path() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = Runtime::open(RuntimeOptions::new(dir.path())).expect("opens");
    runtime.register::<Ledger>().expect("registers");
    let store = runtime.store().clone();
    // Version 1 events, written as an older build would have.
    append_old(
        &store,
        "l-1",
        0,
        vec![old("Added", &OldEvent::Added { amount: 5 })],
        1_000,
    );
    append_old(
        &store,
        "l-1",
        1,
        vec![
            old(
                "Adjusted",
                &OldEvent::Adjusted {
                    first: 1,
                    second: 2,
                },
            ),
            old("Audited", &OldEvent::Audited { by: "x".into() }),
        ],
        2_000,
    );

    let history = runtime
        .events::<Ledger>("l-1", Version(1), 100)
        .expect("history");
    let amounts: Vec<(u64, u64, &str, u16)> = history
        .iter()
        .map(|e| {
            let LedgerEvent::Added { amount, currency } = &e.payload;
            (e.version.0, *amount, currency.as_str(), e.schema_version)
        })
        .collect();
    // One old event became two (sharing the stored version), one became none.
    assert_eq!(
        amounts,
        vec![(1, 5, "EUR", 2), (2, 1, "EUR", 2), (2, 2, "EUR", 2)]
    );

    let state = runtime
        .state::<Ledger>("l-1")
        .expect("state")
        .expect("exists");
    assert_eq!(
        (state.version, state.state.total, state.state.entries),
        (Version(3), 8, 3)
    );

    // The aggregate replays old events too, and new events are written at version 2.
    let executed = runtime
        .execute::<Ledger>(
            "l-1",
            LedgerCommand::Add {
                amount: 10,
                currency: "USD".into(),
            },
        )
        .await
        .expect("runs")
        .expect("accepted");
    assert_eq!(executed.version, Version(4));
    assert_eq!(executed.events[0].schema_version, 2);
    let state = runtime
        .state::<Ledger>("l-1")
        .expect("state")
        .expect("exists");
    assert_eq!(
        (state.state.total, state.state.currency.as_str()),
        (18, "USD")
    );

    // Subscribers read envelopes and upcast them the same way.
    let all = runtime.read_all(annals::Position(1), 100).expect("log");
    let upcast: usize = all
        .iter()
        .map(|r| r.upcast::<Ledger>().expect("upcasts").len())
        .sum();
    // Three old stored events became three current ones (one split, one dropped), plus one new.
    assert_eq!(upcast, 4);
    runtime.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_type_without_an_upcaster_is_a_typed_error() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = Runtime::open(RuntimeOptions::new(dir.path())).expect("opens");
    runtime.register::<Ledger>().expect("registers");
    let mut unknown = old("Added", &OldEvent::Added { amount: 5 });
    unknown.event_type = Arc::from("Vanished");
    append_old(runtime.store(), "l-2", 0, vec![unknown], 1_000);
    let err = runtime
        .events::<Ledger>("l-2", Version(1), 10)
        .expect_err("no upcaster");
    assert!(matches!(err, annals::ExecuteError::Codec(_)), "{err:?}");
    assert!(err.to_string().contains("Vanished"), "{err}");
    runtime.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_as_of_a_version_or_an_instant_never_uses_a_later_snapshot() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = Runtime::open(RuntimeOptions::new(dir.path())).expect("opens");
    runtime.register::<Ledger>().expect("registers");
    let mut times = Vec::new();
    for amount in 1..=10u64 {
        let executed = runtime
            .execute::<Ledger>(
                "l-3",
                LedgerCommand::Add {
                    amount,
                    currency: "EUR".into(),
                },
            )
            .await
            .expect("runs")
            .expect("accepted");
        times.push(executed.events[0].meta.recorded_at);
        // Snapshots every 4 events exist at versions 4 and 8 by now.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    for version in 1..=10u64 {
        let expected: u64 = (1..=version).sum();
        let at = runtime
            .state_at::<Ledger>("l-3", Some(Version(version)))
            .expect("state")
            .expect("exists");
        assert_eq!((at.version, at.state.total), (Version(version), expected));
        let by_time = runtime
            .state_as_of::<Ledger>("l-3", times[usize::try_from(version - 1).expect("small")])
            .expect("state")
            .expect("exists");
        assert_eq!(
            (by_time.version, by_time.state.total),
            (Version(version), expected)
        );
    }
    let before = Timestamp(times[0].0 - 1);
    assert!(runtime
        .state_as_of::<Ledger>("l-3", before)
        .expect("state")
        .is_none());
    let later = runtime
        .state_as_of::<Ledger>("l-3", Timestamp(u64::MAX))
        .expect("state")
        .expect("exists");
    assert_eq!(later.version, Version(10));
    runtime.shutdown().await.expect("shutdown");
}

/// Replay decodes current events from the bytes the store lends and hands old ones to the
/// upcaster through envelopes; a stream mixing both across many replay pages (1,024 events)
/// folds to the same state as the sum of its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_mixing_old_and_new_events_replays_across_pages() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = Runtime::open(RuntimeOptions::new(dir.path())).expect("opens");
    runtime.register::<Ledger>().expect("registers");
    let store = runtime.store().clone();
    let new = |amount: u64| {
        let mut payload = Vec::new();
        let event = LedgerEvent::Added {
            amount,
            currency: "USD".into(),
        };
        ciborium::into_writer(&event, &mut payload).expect("encodes");
        PendingEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: Arc::from("Added"),
            schema_version: 2,
            payload: EncodedPayload(payload),
        }
    };
    // Runs of new events, old events alone, and old events within a commit of new ones, in
    // commits of 50, over 6,000 versions.
    let (mut version, mut total, mut entries) = (0u64, 0u64, 0u64);
    for commit in 0..120u64 {
        let events: Vec<PendingEvent> = (0..50u64)
            .map(|i| {
                let v = commit * 50 + i + 1;
                let old_event = (1_200..1_300).contains(&v) || v % 997 == 0 || v > 5_900;
                let amount = v % 7 + 1;
                total += amount;
                entries += 1;
                if old_event {
                    old("Added", &OldEvent::Added { amount })
                } else {
                    new(amount)
                }
            })
            .collect();
        append_old(&store, "long", version, events, 1_000 + commit);
        version += 50;
    }
    let state = runtime
        .state::<Ledger>("long")
        .expect("state")
        .expect("exists");
    assert_eq!(
        (state.version, state.state.total, state.state.entries),
        (Version(6_000), total, entries)
    );
    runtime.shutdown().await.expect("shutdown");
}
