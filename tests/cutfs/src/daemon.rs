//! The `cutfs` process: mounts the model, then obeys one-line commands on standard input and
//! answers each with one line on standard output.
//!
//! It runs apart from the test so that the program under test can be killed with SIGKILL while
//! the filesystem lives on, and so that no test thread ever waits on its own mount.
//!
//! Protocol (one line each way; the first line out is `mounted` or `error MESSAGE`):
//! - `freeze` -> `frozen`: every later operation fails with EIO.
//! - `cut` -> `cut KEY=VALUE...` (a [`CutReport`]): freeze, keep only the durable state, save
//!   it as the image, unmount, exit 0.
//! - `quit` (or end of input: the test died) -> `quit`: unmount without saving, exit 0.

use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use clap::Parser;
use fuser::{Config, MountOption};
use rand::SeedableRng as _;

use crate::fuse::CutFsFuse;
use crate::image;
use crate::model::Model;
use crate::CutReport;

/// Command-line arguments of `cutfs` (normally given by [`crate::CutFs::mount`]).
#[derive(Debug, Parser)]
#[command(
    name = "cutfs",
    about = "A FUSE filesystem that forgets whatever was not synced"
)]
struct Args {
    /// Where to mount (an existing directory).
    #[arg(long)]
    mountpoint: PathBuf,
    /// The durable state to start from if it exists, and where a cut saves it.
    #[arg(long)]
    image: PathBuf,
    /// Writes that would make the file data larger fail with ENOSPC.
    #[arg(long)]
    capacity_bytes: Option<u64>,
    /// Torn mode: at a cut, each unsynced page (and size change, and changed directory)
    /// survives with this probability.
    #[arg(long)]
    torn: Option<f64>,
    /// Seed of the torn mode's choices.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs the `cutfs` process until a `cut` or `quit`; returns only on errors before mounting.
#[doc(hidden)]
pub fn daemon_main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(p) = args.torn {
        anyhow::ensure!((0.0..=1.0).contains(&p), "--torn {p} is not a probability");
    }
    let result = serve(&args);
    if let Err(e) = &result {
        // The parent waits for a first line; tell it why there is no mount.
        println!("error {e:#}");
    }
    result
}

fn serve(args: &Args) -> anyhow::Result<()> {
    // Resolved before mounting: afterwards a lookup of the path would go through the mount.
    let mountpoint = args
        .mountpoint
        .canonicalize()
        .with_context(|| format!("cannot resolve mount point {}", args.mountpoint.display()))?;
    let owner = std::fs::metadata(&mountpoint)?;
    let model = match image::load(&args.image, args.capacity_bytes)? {
        Some(model) => model,
        None => Model::new(args.capacity_bytes, owner.uid(), owner.gid()),
    };
    let model = Arc::new(Mutex::new(model));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("cutfs".into()),
        MountOption::Subtype("cutfs".into()),
        MountOption::DefaultPermissions,
        MountOption::RW,
    ];
    let session = fuser::Session::new(CutFsFuse::new(Arc::clone(&model)), &mountpoint, &config)
        .with_context(|| format!("cannot mount cutfs at {}", mountpoint.display()))?;
    let _serving = std::thread::Builder::new()
        .name("cutfs-fuse".into())
        .spawn(move || session.run())?;
    reply("mounted")?;

    let mut torn_rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut model = model.lock().unwrap_or_else(PoisonError::into_inner);
        match line.trim() {
            "freeze" => {
                model.freeze();
                reply("frozen")?;
            }
            "cut" => {
                model.freeze();
                let (after, report) = model.cut(args.torn.map(|p| (p, &mut torn_rng)));
                let saved = image::save(&after, &args.image);
                unmount(&mountpoint);
                match saved {
                    Ok(()) => reply(&format!("cut {report}"))?,
                    Err(e) => {
                        reply(&format!("error cannot save {}: {e}", args.image.display()))?;
                        std::process::exit(1);
                    }
                }
                std::process::exit(0);
            }
            "quit" => {
                unmount(&mountpoint);
                reply("quit")?;
                std::process::exit(0);
            }
            other => reply(&format!("error unknown command {other:?}"))?,
        }
    }
    // End of input: the test process is gone; leave no mount behind.
    unmount(&mountpoint);
    std::process::exit(0);
}

/// One line to the parent, flushed at once: the parent is waiting for it.
fn reply(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Detaches the mount (lazily, so open files do not stop it); the process exits right after,
/// which ends the FUSE connection for anything still holding a file.
fn unmount(mountpoint: &Path) {
    if let Err(e) = crate::unmount_lazily(mountpoint) {
        eprintln!("cutfs: cannot unmount {}: {e}", mountpoint.display());
    }
}

impl std::fmt::Display for CutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "files={} directories={} bytes={} files_lost={} files_reverted={} \
             pages_dropped={} entries_dropped={} entries_restored={}",
            self.files,
            self.directories,
            self.bytes,
            self.files_lost,
            self.files_reverted,
            self.pages_dropped,
            self.entries_dropped,
            self.entries_restored
        )
    }
}

impl CutReport {
    /// Reads the `KEY=VALUE` words that [`Display`](std::fmt::Display) writes.
    pub(crate) fn parse(words: &str) -> Option<CutReport> {
        let mut report = CutReport::default();
        for word in words.split_whitespace() {
            let (key, value) = word.split_once('=')?;
            let value: u64 = value.parse().ok()?;
            let field = match key {
                "files" => &mut report.files,
                "directories" => &mut report.directories,
                "bytes" => &mut report.bytes,
                "files_lost" => &mut report.files_lost,
                "files_reverted" => &mut report.files_reverted,
                "pages_dropped" => &mut report.pages_dropped,
                "entries_dropped" => &mut report.entries_dropped,
                "entries_restored" => &mut report.entries_restored,
                _ => return None,
            };
            *field = value;
        }
        Some(report)
    }
}
