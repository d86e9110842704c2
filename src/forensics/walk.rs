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
    deleted: Option<(bool, Option<FileType>)>,
    /// For a removed entry: how many removed directories up it lies (0: in a live one).
    removed_depth: usize,
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
/// no name (live or removed) the walk met reaches: `$OrphanFiles/OrphanFile-N`.
pub fn walk_with(fs: &dyn Filesystem, deleted: bool, visit: &mut dyn FnMut(&Visit)) -> Vec<String> {
    let mut errors = Vec::new();
    let mut stack = Vec::new();
    // Every inode a name reaches, and each filesystem root met with its orphan candidates.
    let mut named: HashSet<u64> = HashSet::new();
    let mut roots: Vec<(Vec<u8>, Orphans)> = Vec::new();
    // Removed directories entered (a loop of stale records ends here), and records listed
    // from them.
    let mut entered: HashSet<u64> = HashSet::new();
    let mut removed_listed = 0usize;
    if deleted {
        note_orphans(fs, fs.root_ino(), b"", &mut roots, &mut errors);
    }
    push_children(fs, fs.root_ino(), b"", 0, deleted, &mut stack, &mut errors);
    while let Some(p) = stack.pop() {
        if deleted {
            named.insert(p.ino);
        }
        if let Some((reallocated, entry_kind)) = p.deleted {
            let dir = visit_deleted(fs, &p, reallocated, entry_kind, false, visit);
            if dir && !reallocated && p.removed_depth < MAX_REMOVED_DEPTH && entered.insert(p.ino) {
                push_removed_children(fs, &p, &mut removed_listed, &mut stack, &mut errors);
            }
            continue;
        }
        let attr = match fs.getattr(p.ino) {
            Ok(a) => a,
            Err(e) => {
                errors.push(format!("{}: {e}", String::from_utf8_lossy(&p.path)));
                continue;
            }
        };
        visit(&Visit {
            path: &p.path,
            entry_kind: p.kind,
            attr: &attr,
            deleted: None,
            orphan_dir: false,
        });
        if attr.kind == FileType::Directory {
            if deleted {
                note_orphans(fs, attr.ino, &p.path, &mut roots, &mut errors);
            }
            if p.depth + 1 >= MAX_DEPTH {
                errors.push(format!(
                    "{}: deeper than {MAX_DEPTH} directories, not followed",
                    String::from_utf8_lossy(&p.path)
                ));
            } else {
                push_children(
                    fs,
                    attr.ino,
                    &p.path,
                    p.depth + 1,
                    deleted,
                    &mut stack,
                    &mut errors,
                );
            }
        }
    }
    for (mountpoint, o) in roots {
        visit_orphans(fs, &mountpoint, &o, &named, visit);
    }
    errors
}

/// Records the orphan candidates of the filesystem whose root `dir` is, if it is one.
fn note_orphans(
    fs: &dyn Filesystem,
    dir: u64,
    path: &[u8],
    roots: &mut Vec<(Vec<u8>, Orphans)>,
    errors: &mut Vec<String>,
) {
    match fs.orphans(dir, errors) {
        Ok(Some(o)) => roots.push((path.to_vec(), o)),
        Ok(None) => {}
        Err(e) => errors.push(format!(
            "{}/ (orphan inodes): {e}",
            String::from_utf8_lossy(path)
        )),
    }
}

/// fls's `$OrphanFiles` under `mountpoint`, then each candidate no name reaches as
/// `OrphanFile-N`, its metadata read from the inode as for a removed entry. An orphan that
/// is a directory is listed, not descended into.
fn visit_orphans(
    fs: &dyn Filesystem,
    mountpoint: &[u8],
    o: &Orphans,
    named: &HashSet<u64>,
    visit: &mut dyn FnMut(&Visit),
) {
    let dir = [mountpoint, b"/$OrphanFiles"].concat();
    let mut attr = zero_attr(o.dir_ino, FileType::Directory);
    attr.nlink = 1;
    visit(&Visit {
        path: &dir,
        entry_kind: FileType::Directory,
        attr: &attr,
        deleted: None,
        orphan_dir: true,
    });
    for &ino in o.inodes.iter().filter(|i| !named.contains(i)) {
        let local = crate::guest::tree::local_ino(ino);
        let p = Pending {
            ino,
            path: [&dir[..], format!("/OrphanFile-{local}").as_bytes()].concat(),
            kind: FileType::RegularFile,
            depth: 0,
            deleted: None,
            removed_depth: 0,
        };
        visit_deleted(fs, &p, false, None, true, visit);
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
/// read (number 0, or garbage) gives all-zero metadata rather than an error, since nothing
/// promised it would still be there. True when that inode was read and is a directory.
fn visit_deleted(
    fs: &dyn Filesystem,
    p: &Pending,
    reallocated: bool,
    entry_kind: Option<FileType>,
    orphan: bool,
    visit: &mut dyn FnMut(&Visit),
) -> bool {
    let read = if p.ino == 0 {
        None
    } else {
        fs.getattr(p.ino).ok()
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
            orphan,
        }),
        orphan_dir: false,
    });
    dir
}

/// Pushes the records of the removed directory `p` (see `Filesystem::removed_dir_entries`)
/// as removed entries below it, in order, while fewer than `MAX_REMOVED_ENTRIES` have been.
fn push_removed_children(
    fs: &dyn Filesystem,
    p: &Pending,
    listed: &mut usize,
    stack: &mut Vec<Pending>,
    errors: &mut Vec<String>,
) {
    let entries = match fs.removed_dir_entries(p.ino) {
        Ok(e) => e,
        Err(e) => {
            errors.push(format!(
                "{} (removed directory): {e}",
                String::from_utf8_lossy(&p.path)
            ));
            return;
        }
    };
    let start = stack.len();
    let mut seen: HashSet<(u64, Vec<u8>)> = HashSet::new();
    for d in entries {
        if *listed >= MAX_REMOVED_ENTRIES {
            errors.push(format!(
                "{}: more than {MAX_REMOVED_ENTRIES} records in removed directories, the rest \
                 not listed",
                String::from_utf8_lossy(&p.path)
            ));
            break;
        }
        if !seen.insert((d.ino, d.name.clone())) {
            continue;
        }
        *listed += 1;
        stack.push(Pending {
            ino: d.ino,
            path: child_path(&p.path, &d.name),
            kind: d.kind.unwrap_or(FileType::RegularFile),
            depth: p.depth + 1,
            deleted: Some((d.reallocated, d.kind)),
            removed_depth: p.removed_depth + 1,
        });
    }
    stack[start..].reverse();
}

/// Pushes the entries of `dir` in reverse, so that they come off the stack in order.
fn push_children(
    fs: &dyn Filesystem,
    dir: u64,
    prefix: &[u8],
    depth: usize,
    with_deleted: bool,
    stack: &mut Vec<Pending>,
    errors: &mut Vec<String>,
) {
    match path::list(fs, dir) {
        Ok(entries) => {
            let start = stack.len();
            // Removed entries after the live ones; one that names the same inode and name as
            // an entry already listed is the same file (The Sleuth Kit's tsk_fs_dir_add drops
            // such duplicates too).
            let mut seen: HashSet<(u64, Vec<u8>)> =
                entries.iter().map(|e| (e.ino, e.name.clone())).collect();
            let deleted = if with_deleted {
                fs.deleted_entries(dir).unwrap_or_else(|e| {
                    errors.push(format!(
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
                    deleted: Some((d.reallocated, d.kind)),
                    removed_depth: 0,
                });
            }
            stack[start..].reverse();
        }
        Err(e) => errors.push(format!("{}/: {e}", String::from_utf8_lossy(prefix))),
    }
}

/// `prefix/name` as bytes (guest names need not be UTF-8).
fn child_path(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(prefix.len() + 1 + name.len());
    path.extend_from_slice(prefix);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}
