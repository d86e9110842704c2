//! A depth-first walk of a guest tree (or one filesystem): every path once, in the order
//! `fls -r` lists them (a directory, then its subtree, each directory in on-disk order).
//! Damage in one directory is recorded and the walk goes on, so it does not hide the rest.

use crate::fs::{path, Attr, FileType, Filesystem, Orphans, Timestamp};
use std::collections::HashSet;

/// Directory depth the walk follows: deeper than any real tree (PATH_MAX allows ~2048 levels
/// of one-letter names); bounds the work on a looping, damaged directory graph.
pub const MAX_DEPTH: usize = 4096;

/// Levels below a removed directory that the walk follows into removed directories (fls
/// recurses into a removed directory whose inode is free and whose blocks still read); their
/// records may be stale or point anywhere, so the descent is kept short.
pub const MAX_REMOVED_DEPTH: usize = 64;

/// Records listed from removed directories in one walk, at most: stale blocks can hold
/// anything, and a walk must end in time on any image.
pub const MAX_REMOVED_ENTRIES: usize = 1 << 20;

/// One path of the tree.
pub struct Visit<'a> {
    /// Guest-absolute path ("/etc/passwd").
    pub path: &'a [u8],
    /// The type the directory entry records (fls's first mode letter).
    pub entry_kind: FileType,
    pub attr: &'a Attr,
    /// Set for a removed entry still readable in its directory (see `Deleted`), and for
    /// an orphan (`$OrphanFiles/OrphanFile-N`).
    pub deleted: Option<Deleted>,
    /// fls's virtual `$OrphanFiles` directory itself (type "V", no metadata).
    pub orphan_dir: bool,
}

/// What a removed entry's line needs beyond a live one's.
#[derive(Clone, Copy, Debug)]
pub struct Deleted {
    /// The inode is in use again, so `attr` is another file's: fls's "(deleted-realloc)".
    pub reallocated: bool,
    /// The type the record itself names; None when it names none (fls prints "-").
    pub entry_kind: Option<FileType>,
    /// Whether `attr` was read from the inode (false: it could not be, all zero).
    pub meta_read: bool,
    /// No name reaches the inode: listed under `$OrphanFiles` as fls does.
    pub orphan: bool,
}

struct Pending {
    ino: u64,
    path: Vec<u8>,
    kind: FileType,
    depth: usize,
    /// A removed entry: listed, and descended into only when it is a removed directory
    /// whose inode is free (see `MAX_REMOVED_DEPTH`).
    deleted: Option<(bool, Option<FileType>, bool)>,
    /// For a removed entry: how many removed directories up it lies (0: in a live one).
    removed_depth: usize,
    /// An orphan itself (`$OrphanFiles/OrphanFile-N`), not a record below one.
    orphan: bool,
}

/// Walks `fs` from its root, calling `visit` for every path but the root itself; returns what
/// could not be read ("PATH: error"), one line each.
pub fn walk(fs: &dyn Filesystem, visit: &mut dyn FnMut(&Visit)) -> Vec<String> {
    walk_with(fs, false, visit)
}

/// `walk`, with `deleted` also every removed entry the filesystem can still read
/// (`Filesystem::deleted_entries`) after the live entries of its directory, and after the
/// whole tree, for each filesystem that can tell (`Filesystem::orphans`), fls's
/// `MOUNTPOINT/$OrphanFiles` directory with the inodes that are free, were used and that
/// no name (live or removed) the walk met reaches: `$OrphanFiles/OrphanFile-N`, an orphan
/// directory followed by what its blocks still hold (see `Walker::orphan_list`).
pub fn walk_with(fs: &dyn Filesystem, deleted: bool, visit: &mut dyn FnMut(&Visit)) -> Vec<String> {
    let mut w = Walker {
        fs,
        with_deleted: deleted,
        errors: Vec::new(),
        named: HashSet::new(),
        roots: Vec::new(),
        entered: HashSet::new(),
        removed_listed: 0,
        visit,
    };
    let mut stack = Vec::new();
    if deleted {
        w.note_orphans(fs.root_ino(), b"");
    }
    w.push_children(fs.root_ino(), b"", 0, &mut stack);
    w.drain(&mut stack);
    // Every name the tree holds is known now: which candidates no name reaches.
    let roots = std::mem::take(&mut w.roots);
    let lists: Vec<Vec<u64>> = roots.iter().map(|(_, o)| w.orphan_list(o)).collect();
    for ((mountpoint, o), list) in roots.iter().zip(lists) {
        w.visit_orphans(mountpoint, o, &list, &mut stack);
    }
    w.errors
}

/// The state of one walk.
struct Walker<'a, 'v> {
    fs: &'a dyn Filesystem,
    with_deleted: bool,
    errors: Vec<String>,
    /// Every inode a name reaches (with `with_deleted` only).
    named: HashSet<u64>,
    /// Each filesystem root met, with its orphan candidates.
    roots: Vec<(Vec<u8>, Orphans)>,
    /// Removed directories entered (a loop of stale records ends here).
    entered: HashSet<u64>,
    /// Records listed from removed directories (see `MAX_REMOVED_ENTRIES`).
    removed_listed: usize,
    visit: &'v mut dyn FnMut(&Visit),
}

impl Walker<'_, '_> {
    /// Visits what is on `stack` and everything below it, depth first.
    fn drain(&mut self, stack: &mut Vec<Pending>) {
        while let Some(p) = stack.pop() {
            if self.with_deleted {
                self.named.insert(p.ino);
            }
            if let Some((reallocated, entry_kind, stale)) = p.deleted {
                let dir = visit_deleted(self.fs, &p, (reallocated, entry_kind, stale), self.visit);
                // fls enters a removed name that names (or may name) a directory, when the
                // inode is a directory and free too.
                let named_dir = matches!(entry_kind, None | Some(FileType::Directory));
                if dir
                    && named_dir
                    && !reallocated
                    && p.removed_depth < MAX_REMOVED_DEPTH
                    && self.entered.insert(p.ino)
                {
                    self.push_removed_children(&p, stack);
                }
                continue;
            }
            let attr = match self.fs.getattr(p.ino) {
                Ok(a) => a,
                Err(e) => {
                    self.errors
                        .push(format!("{}: {e}", String::from_utf8_lossy(&p.path)));
                    continue;
                }
            };
            (self.visit)(&Visit {
                path: &p.path,
                entry_kind: p.kind,
                attr: &attr,
                deleted: None,
                orphan_dir: false,
            });
            if attr.kind == FileType::Directory {
                if self.with_deleted {
                    self.note_orphans(attr.ino, &p.path);
                }
                // Depths stay below MAX_DEPTH (this check), so the steps cannot saturate.
                if p.depth.saturating_add(1) >= MAX_DEPTH {
                    self.errors.push(format!(
                        "{}: deeper than {MAX_DEPTH} directories, not followed",
                        String::from_utf8_lossy(&p.path)
                    ));
                } else {
                    self.push_children(attr.ino, &p.path, p.depth.saturating_add(1), stack);
                }
            }
        }
    }

    /// Records the orphan candidates of the filesystem whose root `dir` is, if it is one.
    fn note_orphans(&mut self, dir: u64, path: &[u8]) {
        match self.fs.orphans(dir, &mut self.errors) {
            Ok(Some(o)) => self.roots.push((path.to_vec(), o)),
            Ok(None) => {}
            Err(e) => self.errors.push(format!(
                "{}/ (orphan inodes): {e}",
                String::from_utf8_lossy(path)
            )),
        }
    }

    /// The orphans listed at the top of `$OrphanFiles`, in number order, chosen as The Sleuth
    /// Kit chooses them (tsk_fs_dir_find_orphans): each candidate no name reaches, except
    /// those reached below an orphan directory (`mark_below`), which are listed there.
    fn orphan_list(&self, o: &Orphans) -> Vec<u64> {
        let mut below = HashSet::new();
        let mut list = Vec::new();
        for &ino in &o.inodes {
            if self.named.contains(&ino) || below.contains(&ino) {
                continue;
            }
            list.push(ino);
            if self
                .fs
                .removed_getattr(ino)
                .is_ok_and(|a| a.kind == FileType::Directory)
            {
                self.mark_below(ino, &mut below);
            }
        }
        list.retain(|i| !below.contains(i));
        list
    }

    /// Adds to `below` the inodes the records of the orphan directory `dir` name, depth first
    /// through the free directories among them, as fls's de-duplicating walk does: it stops
    /// at the first record whose inode is in use, or that it met before (a stale directory
    /// is not trusted past that point; orphans after it stay listed at the top as well).
    /// Bounded by `MAX_REMOVED_DEPTH` and `MAX_REMOVED_ENTRIES`.
    fn mark_below(&self, dir: u64, below: &mut HashSet<u64>) {
        let mut budget = MAX_REMOVED_ENTRIES;
        let Ok(first) = self.fs.removed_dir_entries(dir) else {
            return;
        };
        let mut levels = vec![first.into_iter()];
        while let Some(level) = levels.last_mut() {
            let Some(d) = level.next() else {
                levels.pop();
                continue;
            };
            if d.ino == 0 {
                continue;
            }
            if d.reallocated || !below.insert(d.ino) {
                return;
            }
            let Some(left) = budget.checked_sub(1) else {
                return;
            };
            budget = left;
            let named_dir = matches!(d.kind, None | Some(FileType::Directory));
            if named_dir
                && levels.len() < MAX_REMOVED_DEPTH
                && self
                    .fs
                    .removed_getattr(d.ino)
                    .is_ok_and(|a| a.kind == FileType::Directory)
            {
                if let Ok(next) = self.fs.removed_dir_entries(d.ino) {
                    levels.push(next.into_iter());
                }
            }
        }
    }

    /// fls's `$OrphanFiles` under `mountpoint`, then each orphan in `list` by the name it
    /// carries itself (`Orphans::names`) or as `OrphanFile-N`, its metadata read from the inode as for a removed entry, and an orphan
    /// directory's records below it as fls lists them (see `drain`).
    fn visit_orphans(
        &mut self,
        mountpoint: &[u8],
        o: &Orphans,
        list: &[u64],
        stack: &mut Vec<Pending>,
    ) {
        let dir = [mountpoint, b"/$OrphanFiles"].concat();
        let mut attr = zero_attr(o.dir_ino, FileType::Directory);
        attr.nlink = 1;
        (self.visit)(&Visit {
            path: &dir,
            entry_kind: FileType::Directory,
            attr: &attr,
            deleted: None,
            orphan_dir: true,
        });
        for &ino in list.iter().rev() {
            let name = match o.names.get(&ino) {
                Some(n) => n.clone(),
                None => {
                    let local = crate::guest::tree::local_ino(ino);
                    format!("OrphanFile-{local}").into_bytes()
                }
            };
            stack.push(Pending {
                ino,
                path: child_path(&dir, &name),
                kind: FileType::RegularFile,
                depth: 0,
                deleted: Some((false, None, false)),
                removed_depth: 0,
                orphan: true,
            });
        }
        self.drain(stack);
    }

    /// Pushes the records of the removed directory `p` (see
    /// `Filesystem::removed_dir_entries`) as removed entries below it, in order, while fewer
    /// than `MAX_REMOVED_ENTRIES` have been.
    fn push_removed_children(&mut self, p: &Pending, stack: &mut Vec<Pending>) {
        let entries = match self.fs.removed_dir_entries(p.ino) {
            Ok(e) => e,
            Err(e) => {
                self.errors.push(format!(
                    "{} (removed directory): {e}",
                    String::from_utf8_lossy(&p.path)
                ));
                return;
            }
        };
        let start = stack.len();
        let mut seen: HashSet<(u64, Vec<u8>)> = HashSet::new();
        for d in entries {
            if self.removed_listed >= MAX_REMOVED_ENTRIES {
                self.errors.push(format!(
                    "{}: more than {MAX_REMOVED_ENTRIES} records in removed directories, the \
                     rest not listed",
                    String::from_utf8_lossy(&p.path)
                ));
                break;
            }
            if !seen.insert((d.ino, d.name.clone())) {
                continue;
            }
            // Below MAX_REMOVED_ENTRIES (checked above): no saturation.
            self.removed_listed = self.removed_listed.saturating_add(1);
            stack.push(Pending {
                ino: d.ino,
                path: child_path(&p.path, &d.name),
                kind: d.kind.unwrap_or(FileType::RegularFile),
                // Both bounded by the walk's depth limits.
                depth: p.depth.saturating_add(1),
                deleted: Some((d.reallocated, d.kind, d.stale)),
                removed_depth: p.removed_depth.saturating_add(1),
                orphan: false,
            });
        }
        stack[start..].reverse();
    }

    /// Pushes the entries of `dir` in reverse, so that they come off the stack in order.
    fn push_children(&mut self, dir: u64, prefix: &[u8], depth: usize, stack: &mut Vec<Pending>) {
        let entries = match path::list(self.fs, dir) {
            Ok(e) => e,
            Err(e) => {
                self.errors
                    .push(format!("{}/: {e}", String::from_utf8_lossy(prefix)));
                return;
            }
        };
        let start = stack.len();
        // Removed entries after the live ones; one that names the same inode and name as
        // an entry already listed is the same file (The Sleuth Kit's tsk_fs_dir_add drops
        // such duplicates too).
        let mut seen: HashSet<(u64, Vec<u8>)> =
            entries.iter().map(|e| (e.ino, e.name.clone())).collect();
        let deleted = if self.with_deleted {
            self.fs.deleted_entries(dir).unwrap_or_else(|e| {
                self.errors.push(format!(
                    "{}/ (removed entries): {e}",
                    String::from_utf8_lossy(prefix)
                ));
                Vec::new()
            })
        } else {
            Vec::new()
        };
        for e in &entries {
            stack.push(Pending {
                ino: e.ino,
                path: child_path(prefix, &e.name),
                kind: e.kind,
                depth,
                deleted: None,
                removed_depth: 0,
                orphan: false,
            });
        }
        for d in deleted {
            if !seen.insert((d.ino, d.name.clone())) {
                continue;
            }
            stack.push(Pending {
                ino: d.ino,
                path: child_path(prefix, &d.name),
                kind: d.kind.unwrap_or(FileType::RegularFile),
                depth,
                deleted: Some((d.reallocated, d.kind, d.stale)),
                removed_depth: 0,
                orphan: false,
            });
        }
        stack[start..].reverse();
    }
}

/// All-zero metadata for inode `ino`.
fn zero_attr(ino: u64, kind: FileType) -> Attr {
    let zero = Timestamp { secs: 0, nsecs: 0 };
    Attr {
        ino,
        kind,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        blocks: 0,
        nlink: 0,
        atime: zero,
        mtime: zero,
        ctime: zero,
        crtime: None,
        rdev: 0,
        blksize: 0,
    }
}

/// Visits a removed entry with its inode as it is now, as fls does; an inode that cannot be
/// read (number 0, or garbage) or that is `stale` (known to be another file's, see
/// `DeletedEntry::stale`) gives all-zero metadata rather than an error, since nothing
/// promised it would still be there. True when that inode was read and is a directory.
fn visit_deleted(
    fs: &dyn Filesystem,
    p: &Pending,
    (reallocated, entry_kind, stale): (bool, Option<FileType>, bool),
    visit: &mut dyn FnMut(&Visit),
) -> bool {
    let read = if p.ino == 0 || stale {
        None
    } else {
        fs.removed_getattr(p.ino).ok()
    };
    let meta_read = read.is_some();
    let attr = read.unwrap_or_else(|| zero_attr(p.ino, p.kind));
    let dir = meta_read && attr.kind == FileType::Directory;
    visit(&Visit {
        path: &p.path,
        entry_kind: p.kind,
        attr: &attr,
        deleted: Some(Deleted {
            reallocated,
            entry_kind,
            meta_read,
            orphan: p.orphan,
        }),
        orphan_dir: false,
    });
    dir
}

/// `prefix/name` as bytes (guest names need not be UTF-8).
fn child_path(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(prefix.len().saturating_add(name.len()).saturating_add(1));
    path.extend_from_slice(prefix);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}
