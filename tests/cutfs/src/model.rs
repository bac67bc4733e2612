//! The in-memory filesystem with two states per file and directory: what a program sees now
//! (*current*) and what would be on the platter after a power cut (*durable*).
//!
//! Everything the FUSE adapter does goes through [`Model`], which knows nothing of FUSE, so the
//! rules of durability are tested here without a mount. Only `fsync` of a file moves its data
//! and size to durable state; only `fsync` of a directory moves its entries. A cut
//! ([`Model::cut`]) keeps the durable state of what is reachable from the root through durable
//! entries, and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::Errno;
use rand::Rng;

/// Bytes per page: the unit of copy-on-write sharing between current and durable data, and of
/// torn writeback. The kernel's page size, so a page cache writeback maps onto whole pages.
pub(crate) const PAGE_SIZE: usize = 4096;

/// `PAGE_SIZE` as a file offset.
const PAGE_BYTES: u64 = PAGE_SIZE as u64;

/// The inode number of the root directory (FUSE's fixed `FUSE_ROOT_ID`).
pub(crate) const ROOT: u64 = 1;

/// The longest file name accepted, as on ext4.
pub(crate) const NAME_MAX: usize = 255;

/// Total bytes reported by `statfs` when there is no capacity: 1 TiB, more than any test writes.
const UNLIMITED_BYTES: u64 = 1 << 40;

/// One page of file data, shared between current and durable state until one of them writes.
pub(crate) type Page = Arc<[u8; PAGE_SIZE]>;

/// The contents of a file in one state: its pages (absent pages read as zeros) and its size.
///
/// Invariant: no page lies wholly at or past `size`, and the bytes of the last page past `size`
/// are zero, so extending the file shows zeros.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Data {
    /// Page index -> page.
    pub(crate) pages: BTreeMap<u64, Page>,
    /// Length in bytes.
    pub(crate) size: u64,
}

impl Data {
    /// Restores the invariant after pages and size were chosen independently (torn mode, or an
    /// image written by hand): drops pages past the end and zeroes the tail of the last one.
    pub(crate) fn normalize(&mut self) {
        let first_gone = self.size.div_ceil(PAGE_BYTES);
        drop(self.pages.split_off(&first_gone));
        let tail = offset_in_page(self.size);
        if tail != 0 {
            if let Some(page) = self.pages.get_mut(&(self.size / PAGE_BYTES)) {
                if page[tail..].iter().any(|&b| b != 0) {
                    Arc::make_mut(page)[tail..].fill(0);
                }
            }
        }
    }

    /// Bytes `[offset, offset + len)` clipped to the size.
    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let end = self.size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; to_usize(end - offset)];
        for (&index, page) in self
            .pages
            .range(offset / PAGE_BYTES..end.div_ceil(PAGE_BYTES))
        {
            let page_start = index * PAGE_BYTES;
            let from = page_start.max(offset);
            let to = (page_start + PAGE_BYTES).min(end);
            out[to_usize(from - offset)..to_usize(to - offset)]
                .copy_from_slice(&page[to_usize(from - page_start)..to_usize(to - page_start)]);
        }
        out
    }

    /// Writes `bytes` at `offset`, extending the size; returns the pages it touched.
    fn write(&mut self, offset: u64, bytes: &[u8], touched: &mut BTreeSet<u64>) {
        let end = offset + bytes.len() as u64;
        let mut at = offset;
        while at < end {
            let index = at / PAGE_BYTES;
            let in_page = offset_in_page(at);
            let n = (PAGE_SIZE - in_page).min(to_usize(end - at));
            let page = self
                .pages
                .entry(index)
                .or_insert_with(|| Arc::new([0u8; PAGE_SIZE]));
            let from = to_usize(at - offset);
            // Copy-on-write: a page still shared with the durable state is copied here, once.
            Arc::make_mut(page)[in_page..in_page + n].copy_from_slice(&bytes[from..from + n]);
            touched.insert(index);
            at += n as u64;
        }
        self.size = self.size.max(end);
    }

    /// Sets the size; a shrink drops whole pages and zeroes the tail of the last one.
    fn set_size(&mut self, size: u64, touched: &mut BTreeSet<u64>) {
        if size < self.size {
            let first_gone = size.div_ceil(PAGE_BYTES);
            touched.extend(self.pages.range(first_gone..).map(|(&index, _)| index));
            drop(self.pages.split_off(&first_gone));
            let tail = offset_in_page(size);
            if tail != 0 {
                if let Some(page) = self.pages.get_mut(&(size / PAGE_BYTES)) {
                    Arc::make_mut(page)[tail..].fill(0);
                    touched.insert(size / PAGE_BYTES);
                }
            }
        }
        self.size = size;
    }

    /// Pages actually stored (holes excluded), for `st_blocks`.
    fn stored_pages(&self) -> u64 {
        self.pages.len() as u64
    }
}

/// A regular file: current and durable contents, and the pages written since the last fsync.
#[derive(Clone, Debug, Default)]
pub(crate) struct FileNode {
    pub(crate) current: Data,
    pub(crate) durable: Data,
    /// Pages of `current` that differ from `durable` (written, or dropped by a truncation).
    pub(crate) dirty: BTreeSet<u64>,
}

impl FileNode {
    /// fsync/fdatasync: the current contents and size become durable. Copies only the pages
    /// written since the last sync (and shares them: no byte is copied).
    fn sync(&mut self) {
        for index in std::mem::take(&mut self.dirty) {
            match self.current.pages.get(&index) {
                Some(page) => self.durable.pages.insert(index, Arc::clone(page)),
                None => self.durable.pages.remove(&index),
            };
        }
        self.durable.size = self.current.size;
    }

    /// Whether anything would be lost at a cut.
    #[cfg(test)]
    fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || self.current.size != self.durable.size
    }
}

/// A directory: current and durable entries.
#[derive(Clone, Debug, Default)]
pub(crate) struct DirNode {
    pub(crate) current: BTreeMap<OsString, u64>,
    pub(crate) durable: BTreeMap<OsString, u64>,
    /// The directory that holds it now (itself for the root), for `..` and rename loops.
    pub(crate) parent: u64,
}

/// What an inode is.
#[derive(Clone, Debug)]
pub(crate) enum Body {
    File(FileNode),
    Dir(DirNode),
}

/// An inode: its body, its attributes (not subject to durability: modes and times are kept as
/// they are at the cut) and the references that keep it alive.
#[derive(Clone, Debug)]
pub(crate) struct Inode {
    pub(crate) body: Body,
    /// Permission bits (the low 12 bits of `st_mode`).
    pub(crate) perm: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime: SystemTime,
    pub(crate) mtime: SystemTime,
    pub(crate) ctime: SystemTime,
    /// Current directory entries naming it.
    links_current: u32,
    /// Durable directory entries naming it: an unlinked file lives on while one remains,
    /// because a cut may bring the name back.
    links_durable: u32,
    /// Open file handles: an unlinked open file lives on until closed.
    open: u32,
}

impl Inode {
    /// A new inode with no references yet, its times now.
    pub(crate) fn new(body: Body, perm: u16, uid: u32, gid: u32) -> Inode {
        let now = SystemTime::now();
        Inode {
            body,
            perm,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            links_current: 0,
            links_durable: 0,
            open: 0,
        }
    }

    fn file(&self) -> Result<&FileNode, Errno> {
        match &self.body {
            Body::File(file) => Ok(file),
            Body::Dir(_) => Err(Errno::EISDIR),
        }
    }

    fn file_mut(&mut self) -> Result<&mut FileNode, Errno> {
        match &mut self.body {
            Body::File(file) => Ok(file),
            Body::Dir(_) => Err(Errno::EISDIR),
        }
    }

    fn dir(&self) -> Result<&DirNode, Errno> {
        match &self.body {
            Body::Dir(dir) => Ok(dir),
            Body::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self) -> Result<&mut DirNode, Errno> {
        match &mut self.body {
            Body::Dir(dir) => Ok(dir),
            Body::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }
}

/// The attributes the FUSE adapter reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attr {
    pub(crate) ino: u64,
    pub(crate) is_dir: bool,
    pub(crate) size: u64,
    /// 512-byte blocks stored (holes excluded).
    pub(crate) blocks: u64,
    pub(crate) perm: u16,
    pub(crate) nlink: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime: SystemTime,
    pub(crate) mtime: SystemTime,
    pub(crate) ctime: SystemTime,
}

/// Attribute changes asked by `setattr`; `None` leaves a field alone.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SetAttr {
    pub(crate) perm: Option<u16>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) size: Option<u64>,
    pub(crate) atime: Option<SystemTime>,
    pub(crate) mtime: Option<SystemTime>,
}

/// Space figures for `statfs`, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Space {
    pub(crate) total_bytes: u64,
    pub(crate) free_bytes: u64,
    pub(crate) inodes: u64,
}

/// What a cut threw away and what it kept, counted against the current state before the cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CutReport {
    /// Regular files in the image.
    pub files: u64,
    /// Directories in the image, the root included.
    pub directories: u64,
    /// Bytes of file data in the image (sum of the file sizes).
    pub bytes: u64,
    /// Files that had a current name and are not in the image (created without a directory
    /// fsync, or renamed without one into a place that was never synced).
    pub files_lost: u64,
    /// Files in the image whose contents or size differ from what a program last saw.
    pub files_reverted: u64,
    /// Pages written since their file's last fsync that the cut discarded.
    pub pages_dropped: u64,
    /// Current directory entries that were not durable (new or changed names) and are gone.
    pub entries_dropped: u64,
    /// Durable directory entries that were removed or replaced without a directory fsync, and
    /// are back.
    pub entries_restored: u64,
}

/// The filesystem: every inode, and the knobs that apply to all of them.
#[derive(Clone, Debug)]
pub(crate) struct Model {
    /// Ordered so that a torn cut with a given seed is reproducible.
    pub(crate) inodes: BTreeMap<u64, Inode>,
    /// Never reused within a mount, so an inode number the kernel still remembers cannot name
    /// a different file.
    pub(crate) next_ino: u64,
    /// The most bytes of file data (current sizes of live files) there may be.
    pub(crate) capacity_bytes: Option<u64>,
    /// After a freeze every operation fails with EIO.
    pub(crate) frozen: bool,
}

impl Model {
    /// An empty filesystem: a root directory owned by `uid`/`gid`.
    pub(crate) fn new(capacity_bytes: Option<u64>, uid: u32, gid: u32) -> Model {
        let mut root = Inode::new(
            Body::Dir(DirNode {
                parent: ROOT,
                ..DirNode::default()
            }),
            0o755,
            uid,
            gid,
        );
        // The root has a name nobody can remove or forget.
        root.links_current = 1;
        root.links_durable = 1;
        Model {
            inodes: BTreeMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            capacity_bytes,
            frozen: false,
        }
    }

    /// Fails with EIO once frozen: the single check every operation passes first.
    pub(crate) fn live(&self) -> Result<(), Errno> {
        if self.frozen {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    fn inode(&self, ino: u64) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    /// The attributes of `ino`.
    pub(crate) fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        self.live()?;
        let inode = self.inode(ino)?;
        let (size, blocks, nlink) = match &inode.body {
            Body::File(file) => (
                file.current.size,
                file.current.stored_pages() * (PAGE_BYTES / 512),
                inode.links_current,
            ),
            // Directories: 2 while linked, as `.` and the parent's entry, like most filesystems.
            Body::Dir(dir) => (
                dir.current.len() as u64,
                0,
                if inode.links_current > 0 { 2 } else { 0 },
            ),
        };
        Ok(Attr {
            ino,
            is_dir: inode.is_dir(),
            size,
            blocks,
            perm: inode.perm,
            nlink,
            uid: inode.uid,
            gid: inode.gid,
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
        })
    }

    /// The current entry `name` of directory `parent`.
    pub(crate) fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, Errno> {
        self.live()?;
        let ino = *self
            .inode(parent)?
            .dir()?
            .current
            .get(name)
            .ok_or(Errno::ENOENT)?;
        self.getattr(ino)
    }

    /// Changes attributes; a size change is a truncation or extension of current data.
    pub(crate) fn setattr(&mut self, ino: u64, change: SetAttr) -> Result<Attr, Errno> {
        self.live()?;
        if let Some(size) = change.size {
            let old = self.inode(ino)?.file()?.current.size;
            self.ensure_room(ino, old, size)?;
        }
        let inode = self.inode_mut(ino)?;
        if let Some(size) = change.size {
            let file = inode.file_mut()?;
            let mut touched = std::mem::take(&mut file.dirty);
            file.current.set_size(size, &mut touched);
            file.dirty = touched;
            inode.mtime = SystemTime::now();
        }
        if let Some(perm) = change.perm {
            inode.perm = perm & 0o7777;
        }
        if let Some(uid) = change.uid {
            inode.uid = uid;
        }
        if let Some(gid) = change.gid {
            inode.gid = gid;
        }
        if let Some(atime) = change.atime {
            inode.atime = atime;
        }
        if let Some(mtime) = change.mtime {
            inode.mtime = mtime;
        }
        inode.ctime = SystemTime::now();
        self.getattr(ino)
    }

    /// Creates a regular file (`create`, `mknod`), or a directory, as a current entry only.
    pub(crate) fn make(
        &mut self,
        parent: u64,
        name: &OsStr,
        dir: bool,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<Attr, Errno> {
        self.live()?;
        check_name(name)?;
        if self.inode(parent)?.dir()?.current.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let body = if dir {
            Body::Dir(DirNode {
                parent,
                ..DirNode::default()
            })
        } else {
            Body::File(FileNode::default())
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes
            .insert(ino, Inode::new(body, perm & 0o7777, uid, gid));
        self.set_entry(parent, name, Some(ino))?;
        self.touch_dir(parent)?;
        self.getattr(ino)
    }

    /// Removes the current entry of a file (`unlink`) or an empty directory (`rmdir`).
    pub(crate) fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        self.live()?;
        let ino = *self
            .inode(parent)?
            .dir()?
            .current
            .get(name)
            .ok_or(Errno::ENOENT)?;
        let target = self.inode(ino)?;
        match (&target.body, dir) {
            (Body::Dir(_), false) => return Err(Errno::EISDIR),
            (Body::File(_), true) => return Err(Errno::ENOTDIR),
            (Body::Dir(d), true) if !d.current.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        if ino == ROOT {
            return Err(Errno::EBUSY);
        }
        self.set_entry(parent, name, None)?;
        self.touch_dir(parent)?;
        Ok(())
    }

    /// Moves a current entry, replacing a compatible target (POSIX `rename`).
    pub(crate) fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        self.live()?;
        check_name(new_name)?;
        let ino = *self
            .inode(parent)?
            .dir()?
            .current
            .get(name)
            .ok_or(Errno::ENOENT)?;
        let moving_dir = self.inode(ino)?.is_dir();
        let replaced = self
            .inode(new_parent)?
            .dir()?
            .current
            .get(new_name)
            .copied();
        if replaced == Some(ino) {
            return Ok(());
        }
        if let Some(old) = replaced {
            if no_replace {
                return Err(Errno::EEXIST);
            }
            match (&self.inode(old)?.body, moving_dir) {
                (Body::Dir(_), false) => return Err(Errno::EISDIR),
                (Body::File(_), true) => return Err(Errno::ENOTDIR),
                (Body::Dir(d), true) if !d.current.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
        }
        if moving_dir {
            // A directory may not move below itself.
            let mut at = new_parent;
            loop {
                if at == ino {
                    return Err(Errno::EINVAL);
                }
                if at == ROOT {
                    break;
                }
                at = self.inode(at)?.dir()?.parent;
            }
        }
        // The new name first: dropping the old one first could free the inode.
        self.set_entry(new_parent, new_name, Some(ino))?;
        self.set_entry(parent, name, None)?;
        if let Body::Dir(dir) = &mut self.inode_mut(ino)?.body {
            dir.parent = new_parent;
        }
        self.touch_dir(parent)?;
        self.touch_dir(new_parent)?;
        Ok(())
    }

    /// An open (`open`, or the open half of `create`): keeps an unlinked file alive.
    pub(crate) fn open(&mut self, ino: u64, truncate: bool) -> Result<(), Errno> {
        self.live()?;
        self.inode(ino)?.file()?;
        if truncate {
            self.setattr(
                ino,
                SetAttr {
                    size: Some(0),
                    ..SetAttr::default()
                },
            )?;
        }
        self.inode_mut(ino)?.open += 1;
        Ok(())
    }

    /// The last close of a handle. Works when frozen too: it only drops a reference.
    pub(crate) fn release(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.open = inode.open.saturating_sub(1);
        }
        self.collect(ino);
    }

    /// Reads current data.
    pub(crate) fn read(&self, ino: u64, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        self.live()?;
        Ok(self.inode(ino)?.file()?.current.read(offset, len))
    }

    /// Writes current data (zeros fill a gap past the end); durable data is untouched.
    pub(crate) fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<u32, Errno> {
        self.live()?;
        let end = offset.checked_add(bytes.len() as u64).ok_or(Errno::EFBIG)?;
        let old = self.inode(ino)?.file()?.current.size;
        self.ensure_room(ino, old, end.max(old))?;
        let inode = self.inode_mut(ino)?;
        let file = inode.file_mut()?;
        let mut touched = std::mem::take(&mut file.dirty);
        file.current.write(offset, bytes, &mut touched);
        file.dirty = touched;
        inode.mtime = SystemTime::now();
        inode.ctime = inode.mtime;
        u32::try_from(bytes.len()).map_err(|_| Errno::EINVAL)
    }

    /// `fsync`/`fdatasync` of a file: its current contents and size become durable.
    pub(crate) fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        self.live()?;
        match &mut self.inode_mut(ino)?.body {
            Body::File(file) => file.sync(),
            // The kernel sends FSYNCDIR for directories; take this path as the same thing.
            Body::Dir(_) => return self.fsyncdir(ino),
        }
        Ok(())
    }

    /// `fsync` of a directory: its current entries become durable.
    pub(crate) fn fsyncdir(&mut self, ino: u64) -> Result<(), Errno> {
        self.live()?;
        let dir = self.inode(ino)?.dir()?;
        let old = dir.durable.clone();
        let new = dir.current.clone();
        for &child in new.values() {
            self.inode_mut(child)?.links_durable += 1;
        }
        self.inode_mut(ino)?.dir_mut()?.durable = new;
        for child in old.into_values() {
            if let Some(inode) = self.inodes.get_mut(&child) {
                inode.links_durable = inode.links_durable.saturating_sub(1);
            }
            self.collect(child);
        }
        Ok(())
    }

    /// The current entries of a directory, with `.` and `..`: (inode, is a directory, name).
    pub(crate) fn readdir(&self, ino: u64) -> Result<Vec<(u64, bool, OsString)>, Errno> {
        self.live()?;
        let dir = self.inode(ino)?.dir()?;
        let mut out = vec![(ino, true, ".".into()), (dir.parent, true, "..".into())];
        for (name, &child) in &dir.current {
            out.push((child, self.inode(child)?.is_dir(), name.clone()));
        }
        Ok(out)
    }

    /// Space and inode figures for `statfs`.
    pub(crate) fn space(&self) -> Result<Space, Errno> {
        self.live()?;
        let used = self.used_bytes();
        let total_bytes = self.capacity_bytes.unwrap_or(UNLIMITED_BYTES);
        Ok(Space {
            total_bytes,
            free_bytes: total_bytes.saturating_sub(used),
            inodes: self.inodes.len() as u64,
        })
    }

    /// Bytes of file data in use: current sizes of files that have a current name or are open.
    /// Durable-only files (unlinked, not yet synced away) are not counted: a real disk would
    /// have to keep them too, but a test that fills the disk wants to count what it wrote.
    fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .filter(|inode| inode.links_current > 0 || inode.open > 0)
            .filter_map(|inode| inode.file().ok())
            .map(|file| file.current.size)
            .sum()
    }

    /// ENOSPC when growing `ino` from `old` to `new` bytes would pass the capacity.
    fn ensure_room(&self, ino: u64, old: u64, new: u64) -> Result<(), Errno> {
        let Some(capacity) = self.capacity_bytes else {
            return Ok(());
        };
        if new <= old {
            return Ok(());
        }
        let counted = self
            .inode(ino)
            .map(|inode| inode.links_current > 0 || inode.open > 0)?;
        let used_after = self.used_bytes() + new - if counted { old } else { 0 };
        if used_after > capacity {
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    /// Freezes: every later operation fails with EIO.
    pub(crate) fn freeze(&mut self) {
        self.frozen = true;
    }

    /// The power cut: the filesystem as it would come back, and what was lost.
    ///
    /// `torn` is (probability, rng): before the cut, each page written since its file's last
    /// fsync reaches the disk with that probability, and so does each file's size change and
    /// each changed directory (all its entries at once), as if the kernel had written back
    /// some dirty state in arbitrary order. `None` is the strict model: only what was synced.
    pub(crate) fn cut<R: Rng>(&self, torn: Option<(f64, &mut R)>) -> (Model, CutReport) {
        let mut before = self.clone();
        before.frozen = false;
        let mut report = CutReport::default();
        if let Some((p, rng)) = torn {
            before.tear(p, rng);
        }
        let mut kept = BTreeMap::new();
        let mut queue = vec![ROOT];
        let mut seen_dirs = BTreeSet::from([ROOT]);
        while let Some(dir_ino) = queue.pop() {
            let Some(inode) = before.inodes.get(&dir_ino) else {
                continue;
            };
            let Ok(dir) = inode.dir() else {
                continue;
            };
            let mut entries = BTreeMap::new();
            for (name, &child) in &dir.durable {
                let Some(child_inode) = before.inodes.get(&child) else {
                    continue;
                };
                if child_inode.is_dir() {
                    // A directory reachable twice (a rename synced on one side only) keeps
                    // its first name: a directory has one parent.
                    if !seen_dirs.insert(child) {
                        continue;
                    }
                    queue.push(child);
                }
                entries.insert(name.clone(), child);
            }
            let mut survivor = inode.clone();
            survivor.body = Body::Dir(DirNode {
                current: entries.clone(),
                durable: entries,
                parent: dir.parent,
            });
            kept.insert(dir_ino, survivor);
        }
        // Files: every durable name found above, with their durable data.
        let file_names: Vec<u64> = kept
            .values()
            .filter_map(|inode| inode.dir().ok())
            .flat_map(|dir| dir.durable.values().copied())
            .collect();
        for ino in file_names {
            let Some(inode) = before.inodes.get(&ino) else {
                continue;
            };
            let Ok(file) = inode.file() else {
                continue;
            };
            if kept.contains_key(&ino) {
                continue;
            }
            let mut data = file.durable.clone();
            data.normalize();
            let mut survivor = inode.clone();
            survivor.body = Body::File(FileNode {
                current: data.clone(),
                durable: data,
                dirty: BTreeSet::new(),
            });
            kept.insert(ino, survivor);
        }
        let mut after = Model {
            inodes: kept,
            next_ino: self.next_ino,
            capacity_bytes: self.capacity_bytes,
            frozen: false,
        };
        after.relink();
        for (ino, inode) in &self.inodes {
            match &inode.body {
                Body::File(file) => {
                    // Pages still unsynced after the torn writeback (all of them when strict).
                    let dropped = match before.inodes.get(ino).map(Inode::file) {
                        Some(Ok(torn)) => torn.dirty.len(),
                        _ => file.dirty.len(),
                    } as u64;
                    match after.inodes.get(ino).map(Inode::file) {
                        Some(Ok(kept)) => {
                            report.pages_dropped += dropped;
                            if kept.current != file.current {
                                report.files_reverted += 1;
                            }
                        }
                        _ if inode.links_current > 0 => {
                            report.files_lost += 1;
                            report.pages_dropped += dropped;
                        }
                        _ => {}
                    }
                }
                Body::Dir(dir) => {
                    let durable = match after.inodes.get(ino).map(Inode::dir) {
                        Some(Ok(kept)) => &kept.durable,
                        _ => &BTreeMap::new(),
                    };
                    report.entries_dropped += dir
                        .current
                        .iter()
                        .filter(|(name, ino)| durable.get(*name) != Some(ino))
                        .count() as u64;
                    report.entries_restored += durable
                        .iter()
                        .filter(|(name, ino)| dir.current.get(*name) != Some(ino))
                        .count() as u64;
                }
            }
        }
        for inode in after.inodes.values() {
            match &inode.body {
                Body::File(file) => {
                    report.files += 1;
                    report.bytes += file.durable.size;
                }
                Body::Dir(_) => report.directories += 1,
            }
        }
        (after, report)
    }

    /// Torn writeback: some unsynced state reaches the disk, each piece with probability `p`.
    fn tear<R: Rng>(&mut self, p: f64, rng: &mut R) {
        let p = p.clamp(0.0, 1.0);
        let inos: Vec<u64> = self.inodes.keys().copied().collect();
        for ino in inos {
            let mut sync_dir = false;
            if let Some(inode) = self.inodes.get_mut(&ino) {
                match &mut inode.body {
                    Body::File(file) => {
                        let dirty = std::mem::take(&mut file.dirty);
                        for index in dirty {
                            if rng.gen_bool(p) {
                                match file.current.pages.get(&index) {
                                    Some(page) => {
                                        file.durable.pages.insert(index, Arc::clone(page))
                                    }
                                    None => file.durable.pages.remove(&index),
                                };
                            } else {
                                file.dirty.insert(index);
                            }
                        }
                        if file.current.size != file.durable.size && rng.gen_bool(p) {
                            file.durable.size = file.current.size;
                        }
                    }
                    Body::Dir(dir) => sync_dir = dir.current != dir.durable && rng.gen_bool(p),
                }
            }
            if sync_dir {
                // Cannot fail: `ino` is a directory of this unfrozen copy.
                let _ = self.fsyncdir(ino);
            }
        }
    }

    /// Recounts every inode's references from scratch (after a cut or a load).
    pub(crate) fn relink(&mut self) {
        let mut current: BTreeMap<u64, u32> = BTreeMap::new();
        let mut durable: BTreeMap<u64, u32> = BTreeMap::new();
        for inode in self.inodes.values() {
            if let Body::Dir(dir) = &inode.body {
                for &child in dir.current.values() {
                    *current.entry(child).or_default() += 1;
                }
                for &child in dir.durable.values() {
                    *durable.entry(child).or_default() += 1;
                }
            }
        }
        for (ino, inode) in &mut self.inodes {
            let root = u32::from(*ino == ROOT);
            inode.links_current = current.get(ino).copied().unwrap_or(0) + root;
            inode.links_durable = durable.get(ino).copied().unwrap_or(0) + root;
            inode.open = 0;
        }
    }

    /// Points current entry `name` of `parent` at `ino` (or removes it), keeping counts.
    fn set_entry(&mut self, parent: u64, name: &OsStr, ino: Option<u64>) -> Result<(), Errno> {
        let dir = self.inode_mut(parent)?.dir_mut()?;
        let old = match ino {
            Some(ino) => dir.current.insert(name.to_owned(), ino),
            None => dir.current.remove(name),
        };
        if let Some(ino) = ino {
            self.inode_mut(ino)?.links_current += 1;
        }
        if let Some(old) = old {
            if let Some(inode) = self.inodes.get_mut(&old) {
                inode.links_current = inode.links_current.saturating_sub(1);
            }
            self.collect(old);
        }
        Ok(())
    }

    /// Frees `ino` and what only it kept alive, once nothing names or holds it.
    fn collect(&mut self, ino: u64) {
        let mut work = vec![ino];
        while let Some(ino) = work.pop() {
            let unreferenced = self.inodes.get(&ino).is_some_and(|inode| {
                inode.links_current == 0 && inode.links_durable == 0 && inode.open == 0
            });
            if !unreferenced {
                continue;
            }
            let Some(inode) = self.inodes.remove(&ino) else {
                continue;
            };
            if let Body::Dir(dir) = inode.body {
                for child in dir.current.into_values() {
                    if let Some(c) = self.inodes.get_mut(&child) {
                        c.links_current = c.links_current.saturating_sub(1);
                        work.push(child);
                    }
                }
                for child in dir.durable.into_values() {
                    if let Some(c) = self.inodes.get_mut(&child) {
                        c.links_durable = c.links_durable.saturating_sub(1);
                        work.push(child);
                    }
                }
            }
        }
    }

    /// Updates a directory's times after its entries changed.
    fn touch_dir(&mut self, ino: u64) -> Result<(), Errno> {
        let inode = self.inode_mut(ino)?;
        inode.mtime = SystemTime::now();
        inode.ctime = inode.mtime;
        Ok(())
    }

    /// Whether anything would be lost by a cut now (for tests and the report).
    #[cfg(test)]
    fn is_all_durable(&self) -> bool {
        self.inodes.values().all(|inode| match &inode.body {
            Body::File(file) => !file.is_dirty(),
            Body::Dir(dir) => dir.current == dir.durable,
        })
    }
}

/// Rejects names the kernel should never send, and too long ones.
fn check_name(name: &OsStr) -> Result<(), Errno> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = name.as_bytes();
    if bytes.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// The position of `offset` within its page.
fn offset_in_page(offset: u64) -> usize {
    to_usize(offset % PAGE_BYTES)
}

/// A length within one read or page, which fits in `usize` on every 64-bit target.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("lengths within a read or a page fit in usize")
}

#[cfg(test)]
mod tests;
