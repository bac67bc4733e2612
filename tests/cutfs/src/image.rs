//! The image: the durable state of a cut filesystem as one file on the real disk, from which
//! the next mount starts.
//!
//! A flat little-endian format with a checksum, written the way this crate asks programs to
//! write: to a temporary file, fsynced, renamed over the image, and the directory fsynced.
//!
//! ```text
//! magic "CUTFSIM1" | next_ino u64 | inode count u64 | inodes... | xxh3-64 of all before
//! inode: ino u64 | kind u8 (1 file, 2 dir) | perm u16 | uid u32 | gid u32
//!   file: size u64 | page count u64 | (index u64, 4096 bytes)...
//!   dir:  parent u64 | entry count u64 | (name length u32, name bytes, ino u64)...
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::Path;
use std::sync::Arc;

use crate::model::{Body, Data, DirNode, FileNode, Inode, Model, PAGE_SIZE, ROOT};

/// Identifies the format (and its version).
const MAGIC: &[u8; 8] = b"CUTFSIM1";

/// Inode kinds in the image.
const KIND_FILE: u8 = 1;
const KIND_DIR: u8 = 2;

/// Encodes the durable state of `model` (its current state is ignored).
pub(crate) fn encode(model: &Model) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 << 16);
    out.extend_from_slice(MAGIC);
    put_u64(&mut out, model.next_ino);
    put_u64(&mut out, model.inodes.len() as u64);
    for (&ino, inode) in &model.inodes {
        put_u64(&mut out, ino);
        out.push(match inode.body {
            Body::File(_) => KIND_FILE,
            Body::Dir(_) => KIND_DIR,
        });
        out.extend_from_slice(&inode.perm.to_le_bytes());
        out.extend_from_slice(&inode.uid.to_le_bytes());
        out.extend_from_slice(&inode.gid.to_le_bytes());
        match &inode.body {
            Body::File(file) => {
                put_u64(&mut out, file.durable.size);
                put_u64(&mut out, file.durable.pages.len() as u64);
                for (&index, page) in &file.durable.pages {
                    put_u64(&mut out, index);
                    out.extend_from_slice(&page[..]);
                }
            }
            Body::Dir(dir) => {
                put_u64(&mut out, dir.parent);
                put_u64(&mut out, dir.durable.len() as u64);
                for (name, &child) in &dir.durable {
                    let name = name.as_bytes();
                    let len = u32::try_from(name.len()).expect("names are at most NAME_MAX");
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(name);
                    put_u64(&mut out, child);
                }
            }
        }
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    put_u64(&mut out, sum);
    out
}

/// Decodes an image into a model whose current state is its durable state.
pub(crate) fn decode(bytes: &[u8], capacity_bytes: Option<u64>) -> io::Result<Model> {
    let Some((body, sum)) = bytes.split_last_chunk::<8>() else {
        return Err(invalid("shorter than its checksum"));
    };
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(*sum) {
        return Err(invalid("checksum mismatch"));
    }
    let mut r = Reader { bytes: body };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(invalid("not a cutfs image (bad magic)"));
    }
    let next_ino = r.u64()?;
    let count = r.u64()?;
    let mut model = Model::new(capacity_bytes, 0, 0);
    model.inodes.clear();
    model.next_ino = next_ino;
    for _ in 0..count {
        let ino = r.u64()?;
        let kind = r.take(1)?[0];
        let perm = u16::from_le_bytes(r.array()?);
        let uid = u32::from_le_bytes(r.array()?);
        let gid = u32::from_le_bytes(r.array()?);
        let body = match kind {
            KIND_FILE => {
                let size = r.u64()?;
                let pages = r.u64()?;
                let mut data = Data {
                    pages: BTreeMap::new(),
                    size,
                };
                for _ in 0..pages {
                    let index = r.u64()?;
                    let page: [u8; PAGE_SIZE] = r.array()?;
                    data.pages.insert(index, Arc::new(page));
                }
                data.normalize();
                Body::File(FileNode {
                    current: data.clone(),
                    durable: data,
                    ..FileNode::default()
                })
            }
            KIND_DIR => {
                let parent = r.u64()?;
                let entries = r.u64()?;
                let mut names = BTreeMap::new();
                for _ in 0..entries {
                    let len = u32::from_le_bytes(r.array()?);
                    let name = r.take(usize::try_from(len).map_err(|_| invalid("name length"))?)?;
                    names.insert(OsString::from_vec(name.to_vec()), r.u64()?);
                }
                Body::Dir(DirNode {
                    current: names.clone(),
                    durable: names,
                    parent,
                })
            }
            other => return Err(invalid(&format!("unknown inode kind {other}"))),
        };
        if ino >= next_ino {
            return Err(invalid(&format!(
                "inode {ino} not below next_ino {next_ino}"
            )));
        }
        model.inodes.insert(ino, Inode::new(body, perm, uid, gid));
    }
    if !r.bytes.is_empty() {
        return Err(invalid("trailing bytes"));
    }
    if !matches!(model.inodes.get(&ROOT).map(|i| &i.body), Some(Body::Dir(_))) {
        return Err(invalid("no root directory"));
    }
    for inode in model.inodes.values() {
        if let Body::Dir(dir) = &inode.body {
            if let Some(missing) = dir.durable.values().find(|c| !model.inodes.contains_key(c)) {
                return Err(invalid(&format!("entry names missing inode {missing}")));
            }
        }
    }
    model.relink();
    Ok(model)
}

/// Writes the durable state of `model` to `path` atomically and durably: a temporary file
/// beside it, fsynced, renamed over `path`, then the directory fsynced.
pub(crate) fn save(model: &Model, path: &Path) -> io::Result<()> {
    let bytes = encode(model);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Reads the image at `path`, or `None` when there is none.
pub(crate) fn load(path: &Path, capacity_bytes: Option<u64>) -> io::Result<Option<Model>> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes, capacity_bytes)
            .map(Some)
            .map_err(|e| io::Error::new(e.kind(), format!("image {}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad image: {what}"))
}

/// A cursor over the image bytes that fails instead of reading past the end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(invalid("truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}
