//! `ferry diff`: what changed between two views of a guest (an overlay and its backing chain,
//! or two images of the same guest), path by path, as virt-diff reports it.
//!
//! Both trees are walked for metadata only. A path whose size, mtime and ctime are equal on
//! both sides is taken as unchanged without reading it: every write path (the kernel's and
//! ferry's) moves ctime when it changes data, mode, owner, links or xattrs, and ctime cannot
//! be set from user space. Where those differ, the contents, link target and xattrs are
//! compared to say what changed; `Options::content` compares the bytes of every file pair
//! instead, for images touched by something that does not keep ctime honest.
//!
//! `diff_changed` gives the same answer for an overlay over its backing, given the inodes the
//! overlay may have changed (`guest::changed::changed_inodes`): it stats only those, reads
//! the entries of both versions only of changed directories, and otherwise only lists
//! directories (one side) to find the paths, so that its work follows the edit.

use super::walk::{walk, MAX_DEPTH};
use crate::bytes::{upto, wide};
use crate::fs::{path, Attr, DirEntry, Error, FileType, Filesystem};
use std::collections::{BTreeMap, HashSet};

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

/// `diff` of two versions of one tree that differ at most in the inodes `changed` (tree inode
/// numbers, the same on both sides): the same changes, found without visiting the rest.
///
/// Why it is the same. A directory not in `changed` has the same entries on both sides, and
/// an inode not in `changed` the same attributes, so a path reached from the root through
/// such directories names the same inode on both sides, and when that inode is not in
/// `changed` `compare` finds nothing (it only reads contents when size or times differ, and
/// `Options::content`, which reads every file, is `diff`'s alone). Every other path goes
/// through a changed directory, whose two entry lists are compared by name, or ends at a
/// changed inode, which is compared as `diff` compares it; a subtree present on one side
/// only is listed whole. The changes are then paired into renames in the order `diff` makes
/// them (removed and modified by path, then added by path), so ambiguous pairs (hard links)
/// come out alike.
pub fn diff_changed(
    old: &dyn Filesystem,
    new: &dyn Filesystem,
    changed: &HashSet<u64>,
    opts: Options,
) -> (Vec<Change>, Vec<String>) {
    let mut w = Pruned {
        old,
        new,
        changed,
        opts,
        changes: Vec::new(),
        errors: Vec::new(),
        tasks: Vec::new(),
    };
    w.tasks.push(Task::Pair {
        path: Vec::new(),
        old: old.root_ino(),
        new: new.root_ino(),
        depth: 0,
    });
    while let Some(t) = w.tasks.pop() {
        match t {
            Task::Pair {
                path,
                old,
                new,
                depth,
            } => w.pair(&path, old, new, depth),
            Task::Only {
                path,
                new,
                ino,
                depth,
            } => w.only(&path, new, ino, depth),
        }
    }
    let Pruned {
        mut changes,
        mut errors,
        ..
    } = w;
    changes.sort_by(|x, y| (x.kind == Kind::Added, &x.path).cmp(&(y.kind == Kind::Added, &y.path)));
    pair_renames(old, new, opts, &mut changes, &mut errors);
    changes.sort_by(|x, y| x.path.cmp(&y.path));
    (changes, errors)
}

/// A directory still to visit in `diff_changed`; `depth` counts as `walk`'s does (the root's
/// entries are at 0).
enum Task {
    /// The directory at `path`, inode `old` on the old side and `new` on the new.
    Pair {
        path: Vec<u8>,
        old: u64,
        new: u64,
        depth: usize,
    },
    /// A directory on one side only (`new`: the new side): its whole subtree was added or
    /// removed.
    Only {
        path: Vec<u8>,
        new: bool,
        ino: u64,
        depth: usize,
    },
}

struct Pruned<'a> {
    old: &'a dyn Filesystem,
    new: &'a dyn Filesystem,
    changed: &'a HashSet<u64>,
    opts: Options,
    changes: Vec<Change>,
    errors: Vec<String>,
    tasks: Vec<Task>,
}

impl Pruned<'_> {
    fn side(&self, new: bool) -> &dyn Filesystem {
        if new {
            self.new
        } else {
            self.old
        }
    }

    /// The entries of `dir` on one side; an unreadable directory is an error line, as in
    /// `walk`, and lists nothing.
    fn list(&mut self, new: bool, dir: u64, path: &[u8]) -> Vec<DirEntry> {
        path::list(self.side(new), dir).unwrap_or_else(|e| {
            let side = if new { "new" } else { "old" };
            self.errors
                .push(format!("{side}: {}/: {e}", String::from_utf8_lossy(path)));
            Vec::new()
        })
    }

    /// The attributes of `ino` on one side, or an error line (the path then counts as absent
    /// on that side, as in `walk`).
    fn stat(&mut self, new: bool, ino: u64, path: &[u8]) -> Option<Attr> {
        match self.side(new).getattr(ino) {
            Ok(a) => Some(a),
            Err(e) => {
                let side = if new { "new" } else { "old" };
                self.errors
                    .push(format!("{side}: {}: {e}", String::from_utf8_lossy(path)));
                None
            }
        }
    }

    /// Queues the directory `path` below one at `depth`, unless that is too deep (`walk`'s
    /// limit, with its message, on each side that has it).
    fn descend(&mut self, path: &[u8], depth: usize, t: Task) {
        if depth.saturating_add(1) >= MAX_DEPTH {
            let sides: &[&str] = match &t {
                Task::Pair { .. } => &["old", "new"],
                Task::Only { new: true, .. } => &["new"],
                Task::Only { new: false, .. } => &["old"],
            };
            for side in sides {
                self.errors.push(format!(
                    "{side}: {}: deeper than {MAX_DEPTH} directories, not followed",
                    String::from_utf8_lossy(path)
                ));
            }
            return;
        }
        self.tasks.push(t);
    }

    fn pair(&mut self, path: &[u8], old: u64, new: u64, depth: usize) {
        if old == new && !self.changed.contains(&old) {
            for e in self.list(true, new, path) {
                let p = child(path, &e.name);
                self.entry(p, Some(e.clone()), Some(e), depth);
            }
            return;
        }
        let a = self.list(false, old, path);
        let b = self.list(true, new, path);
        let mut by_name: BTreeMap<Vec<u8>, (Option<DirEntry>, Option<DirEntry>)> = BTreeMap::new();
        for e in a {
            let name = e.name.clone();
            by_name.entry(name).or_default().0 = Some(e);
        }
        for e in b {
            let name = e.name.clone();
            by_name.entry(name).or_default().1 = Some(e);
        }
        for (name, (x, y)) in by_name {
            self.entry(child(path, &name), x, y, depth);
        }
    }

    /// One name of a directory visited at `depth`, as each side has it.
    fn entry(&mut self, path: Vec<u8>, x: Option<DirEntry>, y: Option<DirEntry>, depth: usize) {
        if let (Some(a), Some(b)) = (&x, &y) {
            if a.ino == b.ino && !self.changed.contains(&a.ino) {
                if b.kind == FileType::Directory {
                    let t = Task::Pair {
                        path: path.clone(),
                        old: a.ino,
                        new: b.ino,
                        depth: depth.saturating_add(1),
                    };
                    self.descend(&path, depth, t);
                }
                return;
            }
        }
        let oa = x.and_then(|a| self.stat(false, a.ino, &path));
        let na = y.and_then(|b| self.stat(true, b.ino, &path));
        let dir = |a: &Option<Attr>| a.as_ref().is_some_and(|a| a.kind == FileType::Directory);
        match (&oa, &na) {
            (Some(a), Some(b)) => {
                let what = compare(self.old, self.new, a, b, self.opts, &path, &mut self.errors);
                if !what.is_empty() {
                    self.changes.push(Change {
                        path: path.clone(),
                        kind: Kind::Modified,
                        from: None,
                        what,
                        old: oa.clone(),
                        new: na.clone(),
                    });
                }
            }
            (Some(_), None) => self.push_one(&path, false, oa.clone()),
            (None, Some(_)) => self.push_one(&path, true, na.clone()),
            (None, None) => {}
        }
        match (dir(&oa), dir(&na)) {
            (true, true) => {
                let (o, n) = (oa.map_or(0, |a| a.ino), na.map_or(0, |a| a.ino));
                let t = Task::Pair {
                    path: path.clone(),
                    old: o,
                    new: n,
                    depth: depth.saturating_add(1),
                };
                self.descend(&path, depth, t);
            }
            (true, false) => self.queue_only(&path, false, oa.map_or(0, |a| a.ino), depth),
            (false, true) => self.queue_only(&path, true, na.map_or(0, |a| a.ino), depth),
            (false, false) => {}
        }
    }

    fn queue_only(&mut self, path: &[u8], new: bool, ino: u64, depth: usize) {
        let t = Task::Only {
            path: path.to_vec(),
            new,
            ino,
            depth: depth.saturating_add(1),
        };
        self.descend(path, depth, t);
    }

    /// A path on one side only: added (`new`) or removed.
    fn push_one(&mut self, path: &[u8], new: bool, attr: Option<Attr>) {
        let (kind, old, new_attr) = if new {
            (Kind::Added, None, attr)
        } else {
            (Kind::Removed, attr, None)
        };
        self.changes.push(Change {
            path: path.to_vec(),
            kind,
            from: None,
            what: Vec::new(),
            old,
            new: new_attr,
        });
    }

    /// Every path under a directory that one side alone has.
    fn only(&mut self, path: &[u8], new: bool, dir: u64, depth: usize) {
        for e in self.list(new, dir, path) {
            let p = child(path, &e.name);
            let Some(a) = self.stat(new, e.ino, &p) else {
                continue;
            };
            let is_dir = a.kind == FileType::Directory;
            let ino = a.ino;
            self.push_one(&p, new, Some(a));
            if is_dir {
                self.queue_only(&p, new, ino, depth);
            }
        }
    }
}

/// `prefix/name` as bytes.
fn child(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    [prefix, b"/", name].concat()
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

/// A removed path and an added one with the same inode, type and birth time are one rename: a
/// file moved keeps its inode. Hard links are not renames: the old name must be gone.
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
        // A number freed and given to a new file is not a move: the new inode has its own
        // birth time (ext4 i_crtime, XFS v5 di_crtime, NTFS creation time), where the
        // filesystem keeps one.
        let reborn = matches!((oa.crtime, na.crtime), (Some(a), Some(b)) if a != b);
        if oa.kind != na.kind || reborn {
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
        let mut err = |e: Error| {
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
        let want = upto(a.size.saturating_sub(off), CHUNK); // off < a.size
        let n = read_full(old, a.ino, off, &mut x[..want])?;
        let m = read_full(new, b.ino, off, &mut y[..want])?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            break;
        }
        off = off.saturating_add(wide(n)); // n ≤ want ≤ a.size - off
    }
    Ok(true)
}

/// Fills `buf` from `off` unless the file ends first; the bytes read.
fn read_full(fs: &dyn Filesystem, ino: u64, off: u64, buf: &mut [u8]) -> crate::fs::Result<usize> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        // The caller keeps off + buf.len() within the file's size: no saturation.
        let n = fs.read(ino, off.saturating_add(wide(done)), rest)?;
        if n == 0 {
            break;
        }
        done = done.saturating_add(n); // n ≤ rest.len(): done stays ≤ buf.len()
    }
    Ok(done)
}

/// The xattrs of `ino`, sorted by name.
fn xattrs(fs: &dyn Filesystem, ino: u64) -> crate::fs::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let names = match fs.listxattr(ino) {
        Ok(n) => n,
        Err(Error::NotSupported) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        let v = fs.getxattr(ino, &name)?;
        out.insert(name, v);
    }
    Ok(out)
}
