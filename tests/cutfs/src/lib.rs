//! `annals-cutfs`: a FUSE filesystem that forgets whatever was not synced, so a test can cut
//! the power under a program and see what a real disk would have kept.
//!
//! A `kill -9` test cannot find a missing fsync: the page cache outlives the process, so
//! everything written is still there afterwards. Under cutfs a program writes to memory, and a
//! [`CutFs::cut`] keeps only what the program made durable, writes that to an image file, and
//! unmounts. The next [`CutFs::mount`] from the image is the machine after the reboot.
//!
//! # The model: what survives a cut
//!
//! Every file and directory has a *current* state (what programs see) and a *durable* state
//! (what is on the platter).
//!
//! - **File data and size** become durable only by `fsync(2)` or `fdatasync(2)` of that file
//!   (any descriptor of it), or by a write through a descriptor opened with `O_SYNC`/`O_DSYNC`.
//!   `close`, `write`, `sync_file_range(2)` (the kernel writes back pages without asking the
//!   filesystem to sync anything; this is how sled 0.34 "flushes") and `msync` do not.
//!   `sync(2)`/`syncfs(2)` do not either: FUSE does not pass them on (a limit, see below).
//! - **Directory entries** (create, mkdir, rename, unlink, rmdir) become durable only by
//!   `fsync` of *that directory*. This is the strict POSIX reading: a file that was fsynced but
//!   whose directory was not is gone after a cut; a rename without a directory fsync is undone;
//!   an unlink without one is undone (the file comes back with its durable contents); a file
//!   whose only durable name is gone disappears. A rename between two directories needs both
//!   synced; if only the target was, the file has both names after the cut (the old one as a
//!   hard link), if only the source, neither.
//! - **Attributes** (mode, owner, times) are not modelled: they are kept as they were.
//! - At a cut, the filesystem keeps the durable entries reachable from the root, and for each
//!   file reached its durable data.
//!
//! Data is kept in 4 KiB pages shared copy-on-write between the two states, so an fsync costs
//! the pages written since the previous one, not the file.
//!
//! **Strict mode** (the default) keeps exactly what was synced. **Torn mode**
//! ([`Options::torn`] = p) first lets each page written since its file's last fsync reach the
//! disk with probability p, independently, and each file's size change, and each changed
//! directory (all its entries at once): the kernel's writeback in arbitrary order, cut short.
//! A program that is correct in strict mode must also be correct in torn mode; torn mode finds
//! programs that trust a write to be all-or-nothing, or a size to imply its data.
//!
//! # Limits of the model
//!
//! - Strict mode never keeps unsynced state: a real disk often does (the kernel writes back
//!   within seconds), so strict mode finds missing syncs but never a program that depends on
//!   unsynced data being *lost*; torn mode covers some of that.
//! - Nothing is reordered *within* synced state, and an fsync is atomic: a page is all old or
//!   all new. Sector-level tearing inside a page is not modelled.
//! - `sync(2)` and `syncfs(2)` never reach a FUSE filesystem, so a program that relies on them
//!   looks as if it lost data here. No hard links, symlinks or special files (EPERM); no
//!   `fallocate` (EOPNOTSUPP); no extended attributes.
//! - Locks (`flock`, `fcntl`) are kept by the kernel for the mount (fuser does not negotiate
//!   lock support), so they work between processes as on a local filesystem.
//! - Shared `mmap` works (the mount is not `direct_io`), so SQLite's WAL mode with its `-shm`
//!   file runs; pages written through a mapping are durable only after an `fsync` like any.
//!
//! # Capacity
//!
//! [`Options::capacity_bytes`] bounds the bytes of file data (the current sizes of the files
//! that have a name or are open): a write or truncation that would go past it fails with
//! `ENOSPC`, and `statfs` reports the capacity as the total and what is left as free space.
//!
//! # Using it from a test
//!
//! The filesystem runs in its own process, the `cutfs` binary of this package, so that the
//! program under test can be killed while the filesystem lives on, and no test thread waits on
//! its own mount. [`cutfs_binary`] finds it from a test of any package: `$ANNALS_CUTFS_BIN` if
//! set, else `target/<profile>/cutfs` beside the test executable (which `cargo test
//! --workspace` builds), built with `cargo build -p annals-cutfs --bin cutfs` when missing or
//! older than this crate's sources (as after `cargo test -p annals-tests`). This package's own
//! tests pass `env!("CARGO_BIN_EXE_cutfs")` in [`Options::binary`]. Mounting needs root (it
//! calls `mount(2)` itself; without root fuser falls back to `fusermount3` from Debian's
//! `fuse3` package) and `/dev/fuse`.
//!
//! ```no_run
//! use annals_cutfs::{CutFs, Options};
//! use std::process::Command;
//!
//! # fn main() -> std::io::Result<()> {
//! let dir = std::env::temp_dir().join("cutfs-doc");
//! let (mountpoint, image) = (dir.join("mnt"), dir.join("image"));
//! let fs = CutFs::mount(&mountpoint, &image, &Options::default())?;
//! let mut server = Command::new("my-server").arg(fs.mountpoint()).spawn()?;
//! // ... send it work, note what it acknowledged; at a random moment:
//! fs.freeze_and_kill(server.id())?; // stop it, freeze the disk, kill it
//! server.wait()?;
//! let report = fs.cut()?; // everything not synced is gone; the image holds the rest
//! println!("cut: {report}");
//! let fs = CutFs::mount(&mountpoint, &image, &Options::default())?; // after the reboot
//! // ... restart the server on fs.mountpoint() and check every acknowledged write is there.
//! # drop(fs);
//! # Ok(())
//! # }
//! ```
//!
//! Use [`CutFs::freeze_and_kill`] rather than [`CutFs::freeze`] then a kill: between those
//! two, the program runs on against a disk that fails with EIO, and a program that ignores one
//! error may acknowledge work that is not durable, which a real power cut never lets it do
//! (SQLite does, see below). [`CutFs::freeze`] alone is for testing how a program handles a
//! failing disk. Dropping a [`CutFs`] unmounts without saving and never leaves a dead mount
//! behind; [`CutFs::mount`] also removes a stale mount left at the mount point by a crashed
//! run (detached lazily: a later stat would otherwise fail with ENOTCONN).
//!
//! # What the tests of this crate found
//!
//! - SQLite 3.40 keeps every committed row with `journal_mode=WAL` + `synchronous=FULL` and
//!   with `journal_mode=DELETE` + `synchronous=EXTRA`, in strict and torn mode. With DELETE +
//!   `FULL` it loses the last committed transaction at some cuts, as its documentation warns:
//!   the unlink of the journal (the commit point) is not followed by a directory fsync. With
//!   `synchronous=OFF` every acknowledged row is lost.
//! - SQLite's commit with `synchronous=EXTRA` skips the directory fsync when the directory
//!   cannot be opened, so after [`CutFs::freeze`] (EIO) it can still report success; hence
//!   [`CutFs::freeze_and_kill`].
//! - sled 0.34.7 runs here (flock, pwrite, `set_len`, recovery). Its `flush()` alone loses
//!   every acknowledged write at a cut: it is `pwrite` + `sync_file_range`; sled's fsyncs come
//!   from its periodic flusher thread (every 500 ms by default; off in the test), segment
//!   truncation and snapshots. An fsync of its files and directories after the flush keeps
//!   them. sled's source never fsyncs a directory (a snapshot is renamed into place without
//!   one), so the caller must sync the directories or a new database is lost whole.

mod binary;
mod daemon;
mod fuse;
mod handle;
mod image;
mod model;

pub use binary::cutfs_binary;
#[doc(hidden)]
pub use daemon::daemon_main;
pub use handle::{unmount_lazily, CutFs, Options};
pub use model::CutReport;
