//! The test's side: [`CutFs`] starts a `cutfs` process, waits for its mount, and drives it over
//! its standard input and output (see the protocol in `daemon.rs`).

use std::io::{self, BufRead as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::CutReport;

/// How long a mount may take to answer, and a command to be answered. Generous: two cores are
/// shared with builds; a healthy daemon answers in milliseconds.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a dropped [`CutFs`] waits for its process before killing it.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most mounts stacked on one mount point that [`unmount_lazily`] removes.
const STACKED_MOUNTS_MAX: usize = 16;

/// The inode number the FUSE root always has: how a stat tells the mount is there.
const FUSE_ROOT_INO: u64 = 1;

/// How to mount.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Bytes of file data the filesystem holds at most; `None` for no limit (ENOSPC never).
    pub capacity_bytes: Option<u64>,
    /// Torn mode: at a cut, each page (and size change, and changed directory) not yet synced
    /// still reaches the disk with this probability. `None`: strict mode, only what was synced.
    pub torn: Option<f64>,
    /// The seed of torn mode's choices; `None` picks one (printed on stderr at mount).
    pub torn_seed: Option<u64>,
    /// The `cutfs` binary; `None` uses [`crate::cutfs_binary`]. A test of this package can
    /// pass `env!("CARGO_BIN_EXE_cutfs")`.
    pub binary: Option<PathBuf>,
}

/// A mounted cutfs: its process, its mount point and its image.
#[derive(Debug)]
pub struct CutFs {
    /// `None` once cut or unmounted.
    child: Option<Child>,
    control: Mutex<Control>,
    mountpoint: PathBuf,
    image: PathBuf,
}

/// The two ends of the conversation with the process.
#[derive(Debug)]
struct Control {
    stdin: ChildStdin,
    /// Lines from its standard output, read by a thread so that waits can time out.
    lines: Receiver<String>,
}

impl Control {
    /// Sends `command` and returns the answer line.
    fn ask(&mut self, command: &str) -> io::Result<String> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        self.answer()
    }

    fn answer(&mut self) -> io::Result<String> {
        match self.lines.recv_timeout(ANSWER_TIMEOUT) {
            Ok(line) => match line.strip_prefix("error ") {
                Some(message) => Err(io::Error::other(format!("cutfs: {message}"))),
                None => Ok(line),
            },
            Err(RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("cutfs did not answer within {ANSWER_TIMEOUT:?}"),
            )),
            Err(RecvTimeoutError::Disconnected) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the cutfs process exited without answering",
            )),
        }
    }
}

impl CutFs {
    /// Mounts at `mountpoint` (created if missing; a stale mount there is removed first),
    /// starting from `image` if it exists, else from an empty filesystem. Returns once a stat
    /// of the mount point shows the FUSE root.
    ///
    /// # Errors
    /// When the binary cannot start, the image is unreadable, or mounting fails (no
    /// `/dev/fuse`, not root and no `fusermount3`).
    pub fn mount(mountpoint: &Path, image: &Path, options: &Options) -> io::Result<CutFs> {
        unmount_lazily(mountpoint)?;
        std::fs::create_dir_all(mountpoint)?;
        let mountpoint = mountpoint.canonicalize()?;
        let image = std::path::absolute(image)?;
        if image.starts_with(&mountpoint) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the image must be outside the mount point: it outlives the mount",
            ));
        }
        let binary = options.binary.clone().unwrap_or_else(crate::cutfs_binary);
        let mut command = Command::new(&binary);
        command
            .arg("--mountpoint")
            .arg(&mountpoint)
            .arg("--image")
            .arg(&image)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(bytes) = options.capacity_bytes {
            command.arg("--capacity-bytes").arg(bytes.to_string());
        }
        if let Some(p) = options.torn {
            let seed = options.torn_seed.unwrap_or_else(rand::random);
            eprintln!(
                "cutfs: torn mode p={p} seed={seed} at {}",
                mountpoint.display()
            );
            command
                .arg("--torn")
                .arg(p.to_string())
                .arg("--seed")
                .arg(seed.to_string());
        }
        let mut child = command.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start {}: {e}", binary.display()))
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("the cutfs process has no pipes"));
        };
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("cutfs-control".into())
            .spawn(move || {
                for line in io::BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })?;
        let fs = CutFs {
            child: Some(child),
            control: Mutex::new(Control { stdin, lines }),
            mountpoint,
            image,
        };
        // On an error below, dropping `fs` stops the process and removes any mount.
        let first = fs.control().answer()?;
        if first != "mounted" {
            return Err(io::Error::other(format!("cutfs said {first:?}")));
        }
        let ino = std::fs::metadata(&fs.mountpoint)?.ino();
        if ino != FUSE_ROOT_INO {
            return Err(io::Error::other(format!(
                "{} is not the cutfs root after mounting (inode {ino})",
                fs.mountpoint.display()
            )));
        }
        Ok(fs)
    }

    /// Makes every later operation on the filesystem fail with EIO; returns once it does, so
    /// nothing can be synced after this instant. The mount stays until [`CutFs::cut`].
    ///
    /// # Errors
    /// When the process does not answer.
    pub fn freeze(&self) -> io::Result<()> {
        self.expect("freeze", "frozen").map(drop)
    }

    /// The instant of a power cut for process `pid` (the program under test): stops it with
    /// SIGSTOP and waits until each of its threads has stopped, then [freezes](CutFs::freeze),
    /// then kills it with SIGKILL. The caller still reaps it (`Child::wait`).
    ///
    /// Why not freeze and then kill: between the two, the program runs on against a failing
    /// disk, and a program that ignores one error can acknowledge work that is not durable,
    /// which a real power cut would never let it say. SQLite does exactly that: in DELETE
    /// mode with `synchronous=EXTRA` it skips the directory fsync of its commit when it cannot
    /// open the directory. Stopped first, the program says nothing after the cut; a request
    /// it had already sent completes before the freeze, as it would have reached the disk.
    /// Only `pid` is stopped, not its children.
    ///
    /// # Errors
    /// When a signal cannot be sent, the process does not stop within a minute, or the
    /// filesystem does not answer.
    pub fn freeze_and_kill(&self, pid: u32) -> io::Result<()> {
        let target = nix::unistd::Pid::from_raw(
            i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?,
        );
        nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGSTOP)?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        while !all_threads_stopped(pid)? {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("process {pid} did not stop"),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.freeze()?;
        nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL)?;
        Ok(())
    }

    /// The power cut: freezes, drops everything that was not durable, saves the durable state
    /// as the image (atomically and durably), unmounts, and waits for the process to exit.
    ///
    /// # Errors
    /// When the process does not answer or cannot save the image.
    pub fn cut(mut self) -> io::Result<CutReport> {
        let line = self.expect("cut", "cut ")?;
        let report = CutReport::parse(&line["cut ".len()..])
            .ok_or_else(|| io::Error::other(format!("cutfs answered {line:?}")))?;
        self.wait()?;
        Ok(report)
    }

    /// Unmounts without a cut and without saving: the image stays as it was.
    ///
    /// # Errors
    /// When the process does not answer.
    pub fn unmount(mut self) -> io::Result<()> {
        self.expect("quit", "quit")?;
        self.wait()
    }

    /// Where the filesystem is mounted (absolute).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The image a cut writes (absolute).
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// The process id of the `cutfs` process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `command` and checks that the answer starts with `expected`.
    fn expect(&self, command: &str, expected: &str) -> io::Result<String> {
        let line = self.control().ask(command)?;
        if line.starts_with(expected) {
            Ok(line)
        } else {
            Err(io::Error::other(format!(
                "cutfs answered {line:?} to {command:?}"
            )))
        }
    }

    /// Waits for the process to exit after a `cut` or `quit`.
    fn wait(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    return Err(io::Error::other(format!("cutfs exited with {status}")));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                unmount_lazily(&self.mountpoint)?;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "cutfs did not exit after unmounting",
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for CutFs {
    /// Best effort: asks the process to unmount and exit; kills it if it does not, then removes
    /// whatever mount is left, so no later stat of the mount point hangs or fails ENOTCONN.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = writeln!(self.control().stdin, "quit");
        let _ = self.control().stdin.flush();
        let deadline = Instant::now() + QUIT_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = unmount_lazily(&self.mountpoint) {
            eprintln!("cutfs: cannot unmount {}: {e}", self.mountpoint.display());
        }
    }
}

/// Detaches every mount at `mountpoint` (lazily: open files do not stop it), such as a dead
/// FUSE mount left by a killed `cutfs` whose stat fails with ENOTCONN. Does nothing when
/// nothing is mounted there or the path does not exist.
///
/// # Errors
/// When a mount is there and cannot be detached (not root, and no `fusermount3`).
pub fn unmount_lazily(mountpoint: &Path) -> io::Result<()> {
    // Not `canonicalize(mountpoint)`: on a dead mount it fails with ENOTCONN.
    let Some(name) = mountpoint.file_name() else {
        return Ok(());
    };
    let parent = match mountpoint.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(parent) = parent.canonicalize() else {
        return Ok(());
    };
    let target = parent.join(name);
    for _ in 0..STACKED_MOUNTS_MAX {
        if !is_mount_point(&target)? {
            return Ok(());
        }
        match nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(nix::errno::Errno::EPERM) => {
                let status = Command::new("fusermount3")
                    .args(["-u", "-z", "--"])
                    .arg(&target)
                    .status()?;
                if !status.success() {
                    return Err(io::Error::other(format!(
                        "fusermount3 -u -z {} failed: {status}",
                        target.display()
                    )));
                }
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Err(io::Error::other(format!(
        "more than {STACKED_MOUNTS_MAX} mounts at {}",
        target.display()
    )))
}

/// Whether every thread of `pid` is stopped (state `T` or `t`), or the process is gone. A
/// thread in the middle of a FUSE request stops when the request completes.
fn all_threads_stopped(pid: u32) -> io::Result<bool> {
    let tasks = match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(tasks) => tasks,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    for task in tasks {
        let stat = match std::fs::read_to_string(task?.path().join("stat")) {
            Ok(stat) => stat,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // "tid (comm) S ...": the state follows the last ')', as comm may hold one.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if !matches!(state, Some("T" | "t" | "Z" | "X")) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `/proc/self/mountinfo` lists a mount at `path` (which must be canonical).
fn is_mount_point(path: &Path) -> io::Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let wanted = escape_mount_path(path);
    // Fields: id, parent id, major:minor, root, mount point, ...
    Ok(info
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str())))
}

/// A path as mountinfo writes it: space, tab, newline and backslash in octal.
fn escape_mount_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}
