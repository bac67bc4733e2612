//! Where the `cutfs` binary is, for tests in any package of the workspace.
//!
//! Cargo gives `CARGO_BIN_EXE_cutfs` only to this package's own integration tests, and does not
//! build a dependency's binaries for another package's tests. So the binary is looked for where
//! `cargo build` puts it, beside the test executable's directory, and built when it is missing
//! or older than this crate's sources: the same way `annals-tests` finds `annals`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// Environment variable naming the binary explicitly (skips the search and the build).
const BINARY_ENV: &str = "ANNALS_CUTFS_BIN";

/// The path of the `cutfs` binary of this build.
///
/// `$ANNALS_CUTFS_BIN` if set; otherwise `target/<profile>/cutfs` next to the running test
/// executable (`target/<profile>/deps/<test>`), which `cargo test --workspace` builds. If it is
/// missing, or older than a source of this crate (after `cargo test -p annals-tests` following
/// an edit), it is built with `cargo build -p annals-cutfs --bin cutfs` (with `--release` for a
/// release test executable) once per process: cargo has released its lock when tests run.
///
/// # Panics
/// When the test executable's path cannot be found or the build fails: a test that needs the
/// filesystem cannot go on without it.
pub fn cutfs_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(find_or_build).clone()
}

fn find_or_build() -> PathBuf {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut profile_dir = exe
        .parent()
        .expect("the test executable is in a directory")
        .to_path_buf();
    if profile_dir.file_name().is_some_and(|name| name == "deps") {
        profile_dir.pop();
    }
    let binary = profile_dir.join(format!("cutfs{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stale = built.is_none_or(|built| {
        newer_than(&crate_dir.join("src"), built)
            || newer_than_file(&crate_dir.join("Cargo.toml"), built)
    });
    if stale {
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args(["build", "-p", "annals-cutfs", "--bin", "cutfs"]);
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(
            status.success(),
            "cargo build -p annals-cutfs --bin cutfs failed"
        );
    }
    binary
}

/// Whether a `.rs` file under `dir` changed after `time`.
fn newer_than(dir: &Path, time: SystemTime) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            return newer_than(&path, time);
        }
        path.extension().is_some_and(|e| e == "rs") && newer_than_file(&path, time)
    })
}

fn newer_than_file(path: &Path, time: SystemTime) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|modified| modified > time)
}
