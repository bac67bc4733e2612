//! The FUSE face of the [`Model`]: turns kernel requests into model operations and model
//! results into replies.
//!
//! Choices that decide what the kernel caches (all in favour of seeing every operation):
//! entry and attribute time-to-live 0; no `FOPEN_KEEP_CACHE` (the page cache of a file is
//! dropped at each open); no writeback cache (fuser does not ask for `FUSE_WRITEBACK_CACHE`, so
//! each `write(2)` reaches [`Filesystem::write`] before it returns); not `direct_io`, so shared
//! `mmap` works (SQLite's WAL index). fuser asks for neither `FUSE_POSIX_LOCKS` nor
//! `FUSE_FLOCK_LOCKS`, so the kernel keeps `flock` and `fcntl` locks itself, across processes.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::model::{Attr, Model, SetAttr, NAME_MAX, PAGE_SIZE};

/// Time-to-live of entries and attributes in the kernel: none, so every lookup and stat asks.
const TTL: Duration = Duration::ZERO;

/// The filesystem served to the kernel: the model behind a lock shared with the control loop.
#[derive(Debug)]
pub(crate) struct CutFsFuse {
    model: Arc<Mutex<Model>>,
}

impl CutFsFuse {
    pub(crate) fn new(model: Arc<Mutex<Model>>) -> CutFsFuse {
        CutFsFuse { model }
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        // A panic in one request leaves the model as consistent as any single operation does.
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The kernel's view of an attribute set.
fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.blocks,
        atime: attr.atime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.ctime,
        kind: if attr.is_dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: u32::try_from(PAGE_SIZE).expect("a page is small"),
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Permission bits of a mode after the umask.
fn perm(mode: u32, umask: u32) -> u16 {
    u16::try_from(mode & !umask & 0o7777).expect("masked to 12 bits")
}

/// Writes with `O_SYNC` or `O_DSYNC` are synced as they land, as the kernel promises the caller.
fn sync_on_write(flags: OpenFlags) -> bool {
    flags.0 & (libc::O_SYNC | libc::O_DSYNC) != 0
}

fn entry(reply: ReplyEntry, result: Result<Attr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for CutFsFuse {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(reply, self.model().lookup(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.model().getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            perm: mode.map(|m| perm(m, 0)),
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        match self.model().setattr(ino.0, change) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files only: no program under test makes devices, fifos or sockets here.
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let result = self.model().make(
            parent.0,
            name,
            false,
            perm(mode, umask),
            req.uid(),
            req.gid(),
        );
        entry(reply, result);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.model().make(
            parent.0,
            name,
            true,
            perm(mode, umask),
            req.uid(),
            req.gid(),
        );
        entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.model().remove(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.model().remove(parent.0, name, true));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            // RENAME_EXCHANGE and RENAME_WHITEOUT: nothing under test uses them.
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let result = self
            .model()
            .rename(parent.0, name, newparent.0, newname, no_replace);
        empty(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.model().open(ino.0, flags.0 & libc::O_TRUNC != 0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut model = self.model();
        let made = model.make(
            parent.0,
            name,
            false,
            perm(mode, umask),
            req.uid(),
            req.gid(),
        );
        match made.and_then(|attr| model.open(attr.ino, false).map(|()| attr)) {
            Ok(attr) => reply.created(
                &TTL,
                &file_attr(&attr),
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        match self.model().read(ino.0, offset, len) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut model = self.model();
        let mut result = model.write(ino.0, offset, data);
        if result.is_ok() && sync_on_write(flags) {
            result = model.fsync(ino.0).and(result);
        }
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable; it only reports EIO once frozen, like a dead disk.
        empty(reply, self.model().live());
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.model().release(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fsync and fdatasync alike: the size is part of what fdatasync must persist, and the
        // attributes that fdatasync may skip (times, mode) are not modelled.
        empty(reply, self.model().fsync(ino.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.model().getattr(ino.0) {
            Ok(attr) if attr.is_dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.model().readdir(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (child, is_dir, name)) in entries.into_iter().enumerate().skip(skip) {
            let kind = if is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            // The offset of an entry is where the next readdir resumes.
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.model().fsyncdir(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.model().space() {
            Ok(space) => {
                let block = PAGE_SIZE as u64;
                let free = space.free_bytes / block;
                reply.statfs(
                    space.total_bytes / block,
                    free,
                    free,
                    space.inodes + (1 << 20),
                    1 << 20,
                    u32::try_from(PAGE_SIZE).expect("a page is small"),
                    u32::try_from(NAME_MAX).expect("small"),
                    u32::try_from(PAGE_SIZE).expect("a page is small"),
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        // Neither sled nor SQLite (without SQLITE_FCNTL_CHUNK_SIZE) calls it; glibc's
        // posix_fallocate falls back to writing zeros on EOPNOTSUPP.
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }
}
