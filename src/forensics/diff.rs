//! `ferry diff`: what changed between two views of a guest (an overlay and its backing chain,
//! or two images of the same guest), path by path, as virt-diff reports it.
//!
//! Both trees are walked for metadata only. A path whose size, mtime and ctime are equal on
//! both sides is taken as unchanged without reading it: every write path (the kernel's and
//! ferry's) moves ctime when it changes data, mode, owner, links or xattrs, and ctime cannot
//! be set from user space. Where those differ, the contents, link target and xattrs are
//! compared to say what changed; `Options::content` compares the bytes of every file pair
//! instead, for images touched by something that does not keep ctime honest.

use super::walk::walk;
use crate::fs::{Attr, FileType, Filesystem, FsError};
use std::collections::BTreeMap;

/// Bytes compared per read.
const CHUNK: usize = 1 << 20;

/// What to compare.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Compare the bytes of every regular file present on both sides, whatever its times.
    pub content: bool,
    /// Report atime changes too (off: reading a file is not a change).
    pub atime: bool,
}

/// How a path changed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Added,
    Removed,
    Modified,
    /// Present under another name before (the same inode, the other name gone).
    Renamed,
}

/// One changed path.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Change {
    #[serde(serialize_with = "lossy")]
    pub path: Vec<u8>,
    pub kind: Kind,
    /// For a rename, the old path.
    #[serde(serialize_with = "lossy_opt", skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<u8>>,
    /// What differs for a modified (or renamed and modified) path: "type", "content",
    /// "size", "target", "mode", "owner", "rdev", "xattrs", "mtime", "ctime", "atime",
    /// "nlink".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what: Vec<&'static str>,
    #[serde(skip)]
    pub old: Option<Attr>,
    #[serde(skip)]
    pub new: Option<Attr>,
}

fn lossy<S: serde::Serializer>(p: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(p))
}

fn lossy_opt<S: serde::Serializer>(p: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => lossy(p, s),
        None => s.serialize_none(),
    }
}

/// The changes from `old` to `new`, sorted by path, and what could not be read ("PATH:
/// error" lines; an unreadable part of one tree does not hide the rest).
pub fn diff(
    old: &dyn Filesystem,
    new: &dyn Filesystem,
    opts: Options,
) -> (Vec<Change>, Vec<String>) {
    let mut errors = Vec::new();
    let a = index(old, "old", &mut errors);
    let b = index(new, "new", &mut errors);
    let mut changes = Vec::new();
    for (path, oa) in &a {
        match b.get(path) {
            Some(na) => {
                let what = compare(old, new, oa, na, opts, path, &mut errors);
                if !what.is_empty() {
                    changes.push(Change {
                        path: path.clone(),
                        kind: Kind::Modified,
                        from: None,
                        what,
                        old: Some(oa.clone()),
                        new: Some(na.clone()),
                    });
                }
            }
            None => changes.push(Change {
                path: path.clone(),
                kind: Kind::Removed,
                from: None,
                what: Vec::new(),
                old: Some(oa.clone()),
                new: None,
            }),
        }
    }
    for (path, na) in &b {
        if !a.contains_key(path) {
            changes.push(Change {
                path: path.clone(),
                kind: Kind::Added,
                from: None,
                what: Vec::new(),
                old: None,
                new: Some(na.clone()),
            });
        }
    }
    pair_renames(old, new, opts, &mut changes, &mut errors);
    changes.sort_by(|x, y| x.path.cmp(&y.path));
    (changes, errors)
}

/// Every path of `fs` with its attributes.
fn index(fs: &dyn Filesystem, side: &str, errors: &mut Vec<String>) -> BTreeMap<Vec<u8>, Attr> {
    let mut map = BTreeMap::new();
    let errs = walk(fs, &mut |v| {
        map.insert(v.path.to_vec(), v.attr.clone());
    });
    errors.extend(errs.into_iter().map(|e| format!("{side}: {e}")));
    map
}

/// A removed path and an added one with the same inode and type are one rename: a file moved
/// keeps its inode. Hard links are not renames: the old name must be gone.
fn pair_renames(
    old: &dyn Filesystem,
    new: &dyn Filesystem,
    opts: Options,
    changes: &mut Vec<Change>,
    errors: &mut Vec<String>,
) {
    let mut removed: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, c) in changes.iter().enumerate() {
        if let (Kind::Removed, Some(a)) = (&c.kind, &c.old) {
            // An inode removed under two names (hard links) pairs with neither.
            if removed.insert(a.ino, i).is_some() {
                removed.insert(a.ino, usize::MAX);
            }
        }
    }
    let mut gone = Vec::new();
    for i in 0..changes.len() {
        let (Kind::Added, Some(na)) = (&changes[i].kind, changes[i].new.clone()) else {
            continue;
        };
        let Some(&j) = removed.get(&na.ino) else {
            continue;
        };
        if j == usize::MAX {
            continue;
        }
        let Some(oa) = changes[j].old.clone() else {
            continue;
        };
        if oa.kind != na.kind {
            continue;
        }
        removed.remove(&na.ino);
        let from = changes[j].path.clone();
        let mut what = compare(old, new, &oa, &na, opts, &changes[i].path, errors);
        // The rename itself moves ctime; that is not a change of its own.
        what.retain(|w| *w != "ctime");
        let c = &mut changes[i];
        c.kind = Kind::Renamed;
        c.from = Some(from);
        c.what = what;
        c.old = Some(oa);
        gone.push(j);
    }
    gone.sort_unstable();
    for j in gone.into_iter().rev() {
        changes.remove(j);
    }
}

/// What differs between the two versions of one path (empty: nothing).
fn compare(
    old: &dyn Filesystem,
    new: &dyn Filesystem,
    a: &Attr,
    b: &Attr,
    opts: Options,
    path: &[u8],
    errors: &mut Vec<String>,
) -> Vec<&'static str> {
    let mut what = Vec::new();
    if a.kind != b.kind {
        return vec!["type"];
    }
    let quick_same = a.size == b.size && a.mtime == b.mtime && a.ctime == b.ctime;
    let look_closer = !quick_same || (opts.content && a.kind == FileType::RegularFile);
    if a.kind != FileType::Directory {
        if a.size != b.size {
            what.push("size");
        }
        if a.mtime != b.mtime {
            what.push("mtime");
        }
    }
    if a.mode & 0o7777 != b.mode & 0o7777 {
        what.push("mode");
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        what.push("owner");
    }
    if a.rdev != b.rdev {
        what.push("rdev");
    }
    if opts.atime && a.atime != b.atime {
        what.push("atime");
    }
    if look_closer {
        let mut err = |e: FsError| {
            errors.push(format!("{}: {e}", String::from_utf8_lossy(path)));
        };
        match a.kind {
            FileType::RegularFile => match same_content(old, new, a, b) {
                Ok(false) => what.push("content"),
                Ok(true) => {}
                Err(e) => err(e),
            },
            FileType::Symlink => match (old.readlink(a.ino), new.readlink(b.ino)) {
                (Ok(x), Ok(y)) if x != y => what.push("target"),
                (Ok(_), Ok(_)) => {}
                (Err(e), _) | (_, Err(e)) => err(e),
            },
            _ => {}
        }
        match (xattrs(old, a.ino), xattrs(new, b.ino)) {
            (Ok(x), Ok(y)) if x != y => what.push("xattrs"),
            (Ok(_), Ok(_)) => {}
            (Err(e), _) | (_, Err(e)) => err(e),
        }
        if a.nlink != b.nlink && a.kind != FileType::Directory {
            what.push("nlink");
        }
        // ctime alone: something was done and undone, or a link was added elsewhere.
        if what.is_empty() && a.ctime != b.ctime && a.kind != FileType::Directory {
            what.push("ctime");
        }
    }
    what
}

fn same_content(
    old: &dyn Filesystem,
    new: &dyn Filesystem,
    a: &Attr,
    b: &Attr,
) -> crate::fs::Result<bool> {
    if a.size != b.size {
        return Ok(false);
    }
    let (mut x, mut y) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut off = 0u64;
    while off < a.size {
        // OK: at most CHUNK.
        let want = (a.size - off).min(CHUNK as u64) as usize;
        let n = read_full(old, a.ino, off, &mut x[..want])?;
        let m = read_full(new, b.ino, off, &mut y[..want])?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            break;
        }
        off += n as u64;
    }
    Ok(true)
}

/// Fills `buf` from `off` unless the file ends first; the bytes read.
fn read_full(fs: &dyn Filesystem, ino: u64, off: u64, buf: &mut [u8]) -> crate::fs::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = fs.read(ino, off + done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// The xattrs of `ino`, sorted by name.
fn xattrs(fs: &dyn Filesystem, ino: u64) -> crate::fs::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let names = match fs.listxattr(ino) {
        Ok(n) => n,
        Err(FsError::NotSupported) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        let v = fs.getxattr(ino, &name)?;
        out.insert(name, v);
    }
    Ok(out)
}
