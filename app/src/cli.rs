//! The flags that say where a command's configuration — and so its store — comes from:
//! `--config FILE`, `--data-dir DIR` and `--set SECTION.KEY=VALUE`. They are written once,
//! here, and flattened into `annals serve` and `annals config`
//! ([`ServeArgs`](crate::server::ServeArgs)) and into the administrative commands
//! ([`StoreArgs`](crate::admin::StoreArgs), which words their help for a store).

use std::path::PathBuf;

use annals_config::flags::{set_flags, UsageError};
use annals_config::{Config, Flag, Sources};

/// `--config`, `--data-dir` and `--set`: the configuration file and the flags that override
/// it (the `ANNALS_*` environment comes between them).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// A TOML configuration file (every key is documented in config/annals.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory (store.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Sets any key, such as `--set store.durability=relaxed` or `--set
    /// store.backend=postgres --set store.postgres_url=postgres://…`; repeatable, applied last.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    /// The configuration sources: the file, the process's `ANNALS_*` environment, and the
    /// flags — `own` (the command's other flags, such as `--addr`), then `--data-dir`, then
    /// every `--set` in order, so that `--set` wins.
    ///
    /// # Errors
    /// A [`UsageError`] for a `--set` argument that is not `SECTION.KEY=VALUE`.
    pub fn sources(&self, own: Vec<Flag>) -> Result<Sources, UsageError> {
        let mut flags = own;
        if let Some(dir) = &self.data_dir {
            let dir = dir.display().to_string();
            flags.push(Flag::new("store.data_dir", dir, "--data-dir"));
        }
        flags.extend(set_flags(&self.set)?);
        let mut sources = Sources::default();
        sources.file.clone_from(&self.config);
        sources.env = annals_config::environment();
        sources.flags = flags;
        Ok(sources)
    }

    /// The validated configuration of [`sources`](ConfigArgs::sources).
    ///
    /// # Errors
    /// A [`UsageError`] for a malformed `--set` or any mistake the configuration has.
    pub fn load(&self, own: Vec<Flag>) -> Result<Config, UsageError> {
        Config::load(&self.sources(own)?).map_err(|e| UsageError(format!("configuration: {e}")))
    }
}
