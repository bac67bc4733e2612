//! Helpers shared by the power-cut tests: a mount in a temporary directory, directory fsync,
//! and the number of kill/cut cycles.

use std::fs::File;
use std::path::{Path, PathBuf};

use annals_cutfs::{CutFs, CutReport, Options};

/// Cycles of the kill/cut loops: `ANNALS_CUTFS_CYCLES`, or a small default for CI.
pub(crate) fn cycles() -> usize {
    std::env::var("ANNALS_CUTFS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// A temporary directory holding a mount point and an image.
#[derive(Debug)]
pub(crate) struct Bench {
    /// Removed at the end of the test (after the mount is gone: fields drop in order).
    pub(crate) dir: tempfile::TempDir,
    pub(crate) options: Options,
}

impl Bench {
    pub(crate) fn new() -> Bench {
        Bench::with(&Options::default())
    }

    pub(crate) fn with(options: &Options) -> Bench {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = Options {
            binary: Some(env!("CARGO_BIN_EXE_cutfs").into()),
            ..options.clone()
        };
        Bench { dir, options }
    }

    pub(crate) fn mountpoint(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    pub(crate) fn image(&self) -> PathBuf {
        self.dir.path().join("image")
    }

    /// Mounts from the image (empty the first time). Fails the test loudly when FUSE cannot
    /// mount: these tests must not pass by skipping.
    pub(crate) fn mount(&self) -> CutFs {
        CutFs::mount(&self.mountpoint(), &self.image(), &self.options).unwrap_or_else(|e| {
            panic!("cannot mount cutfs (is /dev/fuse there, are we root?): {e}")
        })
    }
}

/// `fsync` of a directory: what makes its entries durable.
pub(crate) fn sync_dir(path: &Path) {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .unwrap_or_else(|e| panic!("fsync of directory {}: {e}", path.display()));
}

/// Cuts and prints the report, so a failing test shows what the cut did.
pub(crate) fn cut(fs: CutFs) -> CutReport {
    let report = fs.cut().expect("cut");
    eprintln!("cut: {report}");
    report
}
