//! Annals in-process, set up as the runtime core benchmark (`tests/benches/bank.rs`) sets it
//! up: the reference `Account` aggregate, the live actor cap above the number of accounts (no
//! eviction during the run), everything else default. The store is sled in a fresh temporary
//! directory ("annals durable", "annals relaxed") or Annals's PostgreSQL backend in its own
//! schema ("annals postgres").

use std::num::NonZeroUsize;
use std::time::Duration;

use annals::store::sled::{Durability, SledOptions};
use annals::store::{PgOptions, StoreOptions};
use annals::{Runtime, RuntimeOptions};
use annals_domain::bank::{Account, AccountCommand};

use crate::workload::{Outcome, Peer};

/// How often the relaxed mode fsyncs: the value `tests/benches/bank.rs` measures with.
pub(crate) const RELAXED_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// One Annals runtime and the ids of its accounts.
#[derive(Debug)]
pub(crate) struct AnnalsPeer {
    runtime: Runtime,
    ids: Vec<String>,
    /// sled's data directory, dropped (and deleted) after the runtime has shut down; `None` on
    /// PostgreSQL.
    dir: Option<tempfile::TempDir>,
}

impl AnnalsPeer {
    /// Opens a runtime on sled with `durability` in a new temporary directory, for
    /// `aggregates` accounts.
    ///
    /// The directory comes from `tempfile` (so `TMPDIR`): on this machine the same ext4 disk as
    /// PostgreSQL's data directory. A tmpfs there would make every fsync free; `main` prints
    /// the path so a reader can check.
    pub(crate) fn open(durability: Durability, aggregates: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("annals-compare-")
            .tempdir()?;
        let store = SledOptions::new(dir.path()).with_durability(durability);
        Self::start(store, aggregates, Some(dir))
    }

    /// Opens a runtime on the PostgreSQL backend `options` names, for `aggregates` accounts.
    ///
    /// Blocks until the backend has connected and migrated its schema: call it outside any
    /// async context (the backend's calls block their thread on a channel).
    pub(crate) fn open_postgres(options: PgOptions, aggregates: usize) -> anyhow::Result<Self> {
        Self::start(options, aggregates, None)
    }

    fn start(
        store: impl Into<StoreOptions>,
        aggregates: usize,
        dir: Option<tempfile::TempDir>,
    ) -> anyhow::Result<Self> {
        let live_actors_max =
            NonZeroUsize::new(aggregates.saturating_mul(2).max(1)).expect("max(1) is not zero");
        let options = RuntimeOptions::with_store(store).with_live_actors_max(live_actors_max);
        let runtime = Runtime::open(options)?;
        runtime.register::<Account>()?;
        Ok(AnnalsPeer {
            runtime,
            ids: (0..aggregates).map(|a| format!("acct-{a}")).collect(),
            dir,
        })
    }

    /// sled's data directory (`None` on PostgreSQL).
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }

    /// Events committed and fsyncs done since the runtime opened (on PostgreSQL, one "fsync"
    /// per batch transaction: its commit's WAL flush).
    pub(crate) fn journal(&self) -> (u64, u64) {
        let journal = self.runtime.stats().journal;
        (journal.events, journal.fsyncs)
    }

    /// Drains and closes the runtime (the final flush included).
    pub(crate) async fn shutdown(&self) -> anyhow::Result<()> {
        self.runtime.shutdown().await?;
        Ok(())
    }
}

impl Peer for AnnalsPeer {
    async fn execute(&self, aggregate: usize, command: AccountCommand) -> anyhow::Result<Outcome> {
        match self
            .runtime
            .execute::<Account>(&self.ids[aggregate], command)
            .await?
        {
            Ok(_) => Ok(Outcome::Accepted),
            Err(_) => Ok(Outcome::Rejected),
        }
    }
}
