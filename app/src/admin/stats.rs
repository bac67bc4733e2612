//! `annals stats`: counts, sizes and heads of a store, as text or JSON (`--json`).
//!
//! Events and streams per aggregate type come from one scan of the log (a stream is counted at
//! its version 1), page by page, so the command reads the whole log but holds one page and one
//! counter per aggregate type. Snapshots, command-id records and the entries of every sled tree
//! are counted by iterating the trees (sled keeps no counts). Subscribers are those with a
//! stored checkpoint, by the name it is stored under: a projection's is per generation
//! (`customer-summaries@0`; a rebuild starts the next one). The directory's size is measured
//! before the store is opened.
//!
//! Nothing is written beyond what opening the store writes: recovery after an unclean
//! shutdown, which the output reports (`recovery`).
//!
//! On PostgreSQL (`store.backend = "postgres"`) the counts that come from the log and the
//! checkpoints are the same; the directory, its size, the trees, snapshots, command-id records
//! and recovery are sled's and are left out (absent from the JSON), and `database` names the
//! schema and the URL without its password.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use annals::store::sled::{IntegrityCheck, SledStore};
use annals::Timestamp;
use serde::Serialize;

use super::store::{self, Store, Target};
use super::StatsArgs;

/// Deepest directory level the disk-size walk descends to (sled uses two).
const DIRECTORY_DEPTH_MAX: usize = 8;

/// Everything `stats` reports; `--json` prints it as is.
#[derive(Debug, Serialize)]
struct Stats {
    /// `"sled"` or `"postgres"`.
    backend: &'static str,
    /// The data directory (sled).
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<String>,
    /// The schema and the URL without its password (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    /// Bytes of every file under the directory (sled).
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_bytes: Option<u64>,
    head_position: u64,
    events: u64,
    first_recorded_at: Option<String>,
    last_recorded_at: Option<String>,
    /// Per aggregate type, by name.
    aggregates: Vec<AggregateStats>,
    subscribers: Vec<SubscriberStats>,
    /// What only the sled store has.
    #[serde(flatten)]
    sled: Option<SledStats>,
}

/// The counts of the sled store's trees, and its recovery.
#[derive(Debug, Serialize)]
struct SledStats {
    snapshots: usize,
    command_ids: usize,
    trees: Vec<TreeStats>,
    recovery: RecoveryStats,
}

#[derive(Debug, Default, Serialize)]
struct AggregateStats {
    aggregate: String,
    streams: u64,
    events: u64,
    /// The stream with the most events, and its version (its head).
    longest_stream: String,
    longest_stream_version: u64,
}

#[derive(Debug, Serialize)]
struct SubscriberStats {
    name: String,
    checkpoint: u64,
    /// Events between its checkpoint and the head.
    behind_head: u64,
    parked: usize,
}

#[derive(Debug, Serialize)]
struct TreeStats {
    name: String,
    entries: usize,
    /// Whether the journal owns the tree (otherwise: a read model or process-manager state).
    journal: bool,
}

#[derive(Debug, Serialize)]
struct RecoveryStats {
    /// Whether opening changed the store.
    changed_the_store: bool,
    commits_reindexed: u64,
    segments_removed: u64,
    summary: String,
}

pub(super) fn run(args: &StatsArgs) -> anyhow::Result<ExitCode> {
    let target = args.store.target()?;
    store::require_store(&target)?;
    let disk_bytes = match &target {
        Target::Sled(dir) => Some(directory_bytes(dir, 0)?),
        Target::Postgres(_) => None,
    };
    let store = store::open(&target, IntegrityCheck::Structure)?;
    let stats = store::close(&store, collect(&store, disk_bytes))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print(&stats);
    }
    Ok(ExitCode::SUCCESS)
}

fn collect(store: &Store, disk_bytes: Option<u64>) -> anyhow::Result<Stats> {
    let place = store.place();
    let mut aggregates: BTreeMap<String, AggregateStats> = BTreeMap::new();
    let mut first_recorded_at: Option<Timestamp> = None;
    let mut last_recorded_at: Option<Timestamp> = None;
    let events = super::scan_log(store, |event| {
        let ty = event.stream.aggregate_type();
        if !aggregates.contains_key(ty) {
            aggregates.insert(ty.to_string(), AggregateStats::default());
        }
        if let Some(a) = aggregates.get_mut(ty) {
            a.events += 1;
            if event.version.0 == 1 {
                a.streams += 1;
            }
            if event.version.0 > a.longest_stream_version {
                a.longest_stream_version = event.version.0;
                a.longest_stream = event.stream.aggregate_id().to_string();
            }
        }
        first_recorded_at.get_or_insert(event.meta.recorded_at);
        last_recorded_at = Some(event.meta.recorded_at);
        Ok(())
    })?;
    let head = store.log().head_position();
    let mut subscribers = Vec::new();
    for name in super::subscriber_names(store)? {
        let checkpoint = store
            .state()
            .load_checkpoint(&name)
            .map_err(|e| super::read_error(place, e))?;
        let parked = store
            .state()
            .parked(&name, annals::subscription::PARKED_LISTED_MAX)
            .map_err(|e| super::read_error(place, e))?
            .len();
        subscribers.push(SubscriberStats {
            behind_head: head.0.saturating_sub(checkpoint.0),
            checkpoint: checkpoint.0,
            name,
            parked,
        });
    }
    let sled = store.sled().map(collect_sled).transpose()?;
    let (data_dir, database) = match sled {
        Some(_) => (Some(place.to_owned()), None),
        None => (None, Some(place.to_owned())),
    };
    Ok(Stats {
        backend: store.backend_name(),
        data_dir,
        database,
        disk_bytes,
        head_position: head.0,
        events,
        first_recorded_at: first_recorded_at.map(crate::wire::time::format),
        last_recorded_at: last_recorded_at.map(crate::wire::time::format),
        aggregates: aggregates
            .into_iter()
            .map(|(aggregate, a)| AggregateStats { aggregate, ..a })
            .collect(),
        subscribers,
        sled,
    })
}

fn collect_sled(store: &SledStore) -> anyhow::Result<SledStats> {
    let mut trees = Vec::new();
    for name in store.database().tree_names() {
        let name = String::from_utf8_lossy(&name).into_owned();
        if name == super::SLED_DEFAULT_TREE {
            continue;
        }
        trees.push(TreeStats {
            entries: super::tree_len(store, &name)?,
            journal: super::JOURNAL_TREES.contains(&name.as_str()),
            name,
        });
    }
    trees.sort_by(|a, b| (!a.journal, &a.name).cmp(&(!b.journal, &b.name)));
    let recovery = store.recovery_report();
    Ok(SledStats {
        snapshots: super::tree_len(store, "snapshots")?,
        command_ids: super::tree_len(store, "commands")?,
        trees,
        recovery: RecoveryStats {
            changed_the_store: recovery.records_reindexed > 0 || recovery.records_removed > 0,
            commits_reindexed: recovery.records_reindexed,
            segments_removed: recovery.records_removed,
            summary: super::verify::describe_recovery(recovery),
        },
    })
}

/// Bytes of the files under `dir` (symbolic links not followed).
fn directory_bytes(dir: &Path, depth: usize) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.path().symlink_metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    if depth < DIRECTORY_DEPTH_MAX {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.symlink_metadata()?.is_dir() {
                total += directory_bytes(&path, depth + 1)?;
            }
        }
    }
    Ok(total)
}

fn print(s: &Stats) {
    if let Some(dir) = &s.data_dir {
        println!("data directory   {dir}");
    }
    if let Some(database) = &s.database {
        println!("database         {database}");
    }
    if let Some(bytes) = s.disk_bytes {
        println!("disk size        {} ({bytes} bytes)", human_bytes(bytes));
    }
    println!("head position    {}", s.head_position);
    match (&s.first_recorded_at, &s.last_recorded_at) {
        (Some(first), Some(last)) => {
            println!("events           {}, recorded {first} to {last}", s.events);
        }
        _ => println!("events           {}", s.events),
    }
    if s.aggregates.is_empty() {
        println!("aggregates       none");
    } else {
        let width = s
            .aggregates
            .iter()
            .map(|a| a.aggregate.len())
            .max()
            .unwrap_or(0);
        println!(
            "aggregates       {:<width$}  {:>10}  {:>12}  longest stream",
            "type", "streams", "events"
        );
        for a in &s.aggregates {
            println!(
                "                 {:<width$}  {:>10}  {:>12}  {} (version {})",
                a.aggregate, a.streams, a.events, a.longest_stream, a.longest_stream_version
            );
        }
    }
    if let Some(sled) = &s.sled {
        println!("snapshots        {}", sled.snapshots);
        println!("command ids      {} records", sled.command_ids);
    }
    if s.subscribers.is_empty() {
        println!("subscribers      none with a checkpoint");
    } else {
        let width = s
            .subscribers
            .iter()
            .map(|x| x.name.len())
            .max()
            .unwrap_or(0);
        println!(
            "subscribers      {:<width$}  {:>12}  {:>12}  parked",
            "name", "checkpoint", "behind head"
        );
        for x in &s.subscribers {
            println!(
                "                 {:<width$}  {:>12}  {:>12}  {}",
                x.name, x.checkpoint, x.behind_head, x.parked
            );
        }
    }
    let Some(sled) = &s.sled else {
        return;
    };
    let list = |journal: bool| {
        sled.trees
            .iter()
            .filter(|t| t.journal == journal)
            .map(|t| format!("{} {}", t.name, t.entries))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("journal trees    {} (entries)", list(true));
    let others = list(false);
    println!(
        "other trees      {}",
        if others.is_empty() { "none" } else { &others }
    );
    println!("recovery         {}", sled.recovery.summary);
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
