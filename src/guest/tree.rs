//! `Tree`: the guest's filesystems composed into one namespace at their mountpoints, as the
//! guest's own kernel would stack them (`/`, then `/boot`, `/var`, `/var/log`...). It is itself
//! a [`Filesystem`], so the FUSE adapter, `ferry ls`/`cat` and inspection use it unchanged.
//!
//! Inode numbers: the inode `n` of the filesystem at index `i` is `i << 56 | n`. The root
//! filesystem has index 0, so its inode numbers are its own; the others differ in the top
//! byte, which keeps `(st_dev, st_ino)` unique under one FUSE mount (tar and du would
//! otherwise take files of two filesystems for hard links of each other).
//!
//! Crossing: a lookup that lands on a directory some filesystem is mounted on returns that
//! filesystem's root instead; `..` of a mounted root is the directory holding the mountpoint.
//! `statfs_at` answers for the filesystem an inode is on.
//!
//! Attached names: a Windows guest's other drive letters have no directory to be mounted on,
//! so [`Tree::attach`] adds a name to the root directory that the root filesystem lacks
//! (`/D:`). Its readdir cookies carry [`ADDED`]: the root filesystem's own entries come
//! first with their own cookies, then the attached names with `ADDED | n`. The filesystems
//! here hand out cookies below 2^63 (positions, hashes, byte offsets); one that did not
//! would be an error for that root, never a wrong listing.

use crate::bytes::wide;
use crate::fs::{
    path, Attr, DirEntry, Error, FileType, Filesystem, FsInfo, NewInode, RenameFlags, Result,
    SetAttr, StatFs, Timestamp,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Bits of a tree inode number that hold the filesystem's own inode number.
const SHIFT: u32 = 56;
const LOCAL: u64 = (1 << SHIFT) - 1;
/// Filesystems one tree can hold (the top byte of an inode number).
pub const MAX_FILESYSTEMS: usize = 256;
/// The readdir cookie bit of the root directory's attached names.
const ADDED: u64 = 1 << 63;

/// The inode number a tree inode has in its own filesystem (what `fls` or `stat` inside the
/// guest shows).
pub fn local_ino(ino: u64) -> u64 {
    ino & LOCAL
}

/// Each filesystem of a tree as (device, mountpoint, covered directory): see `Tree::shape`.
pub type Shape = Vec<(String, String, Option<(usize, u64)>)>;

/// One filesystem placed in the tree.
pub struct Mount {
    /// The guest's name for the device (`/dev/sda1`, `/dev/VG/LV`), for messages.
    pub device: String,
    /// Where it goes, a guest-absolute path.
    pub mountpoint: String,
    pub fs: Arc<dyn Filesystem>,
}

struct Placed {
    mount: Mount,
    /// For all but the root: the tree inode of the directory that holds the mountpoint.
    parent: u64,
}

/// Several filesystems at their mountpoints; build with [`Tree::new`] and [`Tree::mount`].
pub struct Tree {
    placed: Vec<Placed>,
    /// (filesystem index, its inode of a directory) → index of the filesystem mounted on it.
    covers: HashMap<(usize, u64), usize>,
    /// Names the tree adds to the root directory ([`Tree::attach`]) → the filesystem there.
    added: Vec<(Vec<u8>, usize)>,
}

impl Tree {
    /// A tree holding `root` at `/`.
    pub fn new(root: Mount) -> Tree {
        let root = Mount {
            mountpoint: "/".into(),
            ..root
        };
        Tree {
            placed: vec![Placed {
                mount: root,
                parent: 0,
            }],
            covers: HashMap::new(),
            added: Vec::new(),
        }
    }

    /// Mounts `m` at its mountpoint, which must be an existing directory of the tree as built
    /// so far (symlinks on the way resolve inside the guest). Mount parents before children,
    /// as the guest does (sort by path depth). A second filesystem at the same place hides
    /// the first, as with the kernel.
    pub fn mount(&mut self, m: Mount) -> Result<()> {
        if self.placed.len() >= MAX_FILESYSTEMS {
            return Err(Error::Unsupported(format!(
                "more than {MAX_FILESYSTEMS} filesystems in one tree"
            )));
        }
        let at = path::resolve(self, m.mountpoint.as_bytes(), true)?;
        if at.kind != FileType::Directory {
            return Err(Error::NotDir(at.ino));
        }
        if at.ino == self.root_ino() {
            return Err(Error::Busy);
        }
        let parent = path::resolve(self, format!("{}/..", m.mountpoint).as_bytes(), true)?;
        let (i, local) = self.split(at.ino)?;
        let idx = self.placed.len();
        self.covers.insert((i, local), idx);
        self.placed.push(Placed {
            mount: m,
            parent: parent.ino,
        });
        Ok(())
    }

    /// Places `m` at `/NAME` (its mountpoint, one component), a directory the root
    /// filesystem need not have: Windows mounts its other volumes on drive letters, not on
    /// directories of the system volume. Where the root filesystem has a directory of that
    /// name, this is [`Tree::mount`]; a file of that name is `Exists`. A second filesystem
    /// attached at the same name hides the first.
    pub fn attach(&mut self, m: Mount) -> Result<()> {
        let name = m.mountpoint.trim_start_matches('/').as_bytes().to_vec();
        if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
            return Err(Error::Invalid(format!(
                "{}: cannot attach at {:?}: not a name in /",
                m.device, m.mountpoint
            )));
        }
        match self.fs(0).lookup(self.fs(0).root_ino(), &name) {
            Ok(a) if a.kind == FileType::Directory => return self.mount(m),
            Ok(_) => return Err(Error::Exists),
            Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
        if self.placed.len() >= MAX_FILESYSTEMS {
            return Err(Error::Unsupported(format!(
                "more than {MAX_FILESYSTEMS} filesystems in one tree"
            )));
        }
        let idx = self.placed.len();
        self.placed.push(Placed {
            mount: m,
            parent: self.root_ino(),
        });
        match self.added.iter_mut().find(|(n, _)| *n == name) {
            Some(a) => a.1 = idx,
            None => self.added.push((name, idx)),
        }
        Ok(())
    }

    /// The filesystem attached at `name` in the tree directory `dir`, if any.
    fn added_at(&self, dir: u64, name: &[u8]) -> Option<usize> {
        if dir != self.root_ino() {
            return None;
        }
        self.added.iter().find(|(n, _)| n == name).map(|a| a.1)
    }

    /// The tree attributes of the root of filesystem `j`.
    fn root_of(&self, j: usize) -> Result<Attr> {
        let a = self.fs(j).getattr(self.fs(j).root_ino())?;
        self.tag(j, a)
    }

    /// How the tree is composed: for each filesystem, in tree order (its index is the top
    /// byte of its inode numbers), its device, its mountpoint, and the (filesystem index,
    /// inode) of the directory it covers (None: the root, or a name attached to the root).
    /// Two trees of equal shape present the same directories as mountpoints.
    pub fn shape(&self) -> Shape {
        self.placed
            .iter()
            .enumerate()
            .map(|(idx, p)| {
                let covered = self
                    .covers
                    .iter()
                    .find(|(_, &j)| j == idx)
                    .map(|(&at, _)| at);
                (p.mount.device.clone(), p.mount.mountpoint.clone(), covered)
            })
            .collect()
    }

    /// The tree inode of inode `local` of the filesystem at index `i` (see `shape`).
    pub fn tree_ino(i: usize, local: u64) -> Option<u64> {
        (i < MAX_FILESYSTEMS && local <= LOCAL).then_some(wide(i) << SHIFT | local)
    }

    /// The filesystems in the order they were mounted, the root first.
    pub fn mounts(&self) -> impl Iterator<Item = &Mount> {
        self.placed.iter().map(|p| &p.mount)
    }

    fn fs(&self, i: usize) -> &dyn Filesystem {
        self.placed[i].mount.fs.as_ref()
    }

    /// Tree inode → (filesystem index, its inode).
    fn split(&self, ino: u64) -> Result<(usize, u64)> {
        let i = usize::try_from(ino >> SHIFT).unwrap_or(usize::MAX);
        if i >= self.placed.len() {
            return Err(Error::NotFound);
        }
        Ok((i, ino & LOCAL))
    }

    /// (filesystem index, its inode) → tree inode.
    fn join(&self, i: usize, local: u64) -> Result<u64> {
        if local > LOCAL {
            return Err(Error::Unsupported(format!(
                "{}: inode number {local} is too large for a composed tree",
                self.placed[i].mount.device
            )));
        }
        // i < MAX_FILESYSTEMS: the index fits above the local bits.
        Ok(wide(i) << SHIFT | local)
    }

    /// What is seen at (i, local): the topmost filesystem mounted there, if any.
    fn top(&self, mut i: usize, mut local: u64) -> (usize, u64) {
        // Each step goes to a later-mounted filesystem, so this ends.
        while let Some(&j) = self.covers.get(&(i, local)) {
            i = j;
            local = self.fs(j).root_ino();
        }
        (i, local)
    }

    /// The root directory's attached names from the `n`th on.
    fn readdir_added(&self, n: u64, sink: &mut dyn FnMut(DirEntry, u64) -> bool) -> Result<()> {
        let from = usize::try_from(n).unwrap_or(usize::MAX);
        for (k, (name, j)) in (1u64..).zip(&self.added).skip(from) {
            let e = DirEntry {
                ino: self.join(*j, self.fs(*j).root_ino())?,
                name: name.clone(),
                kind: FileType::Directory,
            };
            if !sink(e, ADDED | k) {
                break;
            }
        }
        Ok(())
    }

    /// `Exists` for a new entry of the root directory named like an attached filesystem.
    fn not_added(&self, dir: u64, name: &[u8]) -> Result<()> {
        match self.added_at(dir, name) {
            Some(_) => Err(Error::Exists),
            None => Ok(()),
        }
    }

    fn is_mounted_root(&self, i: usize, local: u64) -> bool {
        i > 0 && local == self.fs(i).root_ino()
    }

    /// Attributes of (i, a) as the tree shows them: mountpoints replaced by what is on them.
    fn outward(&self, i: usize, a: Attr) -> Result<Attr> {
        if a.kind == FileType::Directory {
            let (j, local) = self.top(i, a.ino);
            if j != i {
                let root = self.fs(j).getattr(local)?;
                return self.tag(j, root);
            }
        }
        self.tag(i, a)
    }

    fn tag(&self, i: usize, mut a: Attr) -> Result<Attr> {
        a.ino = self.join(i, a.ino)?;
        Ok(a)
    }

    /// Whether `name` in directory (i, dir) has a filesystem mounted on it.
    fn covered(&self, i: usize, dir: u64, name: &[u8]) -> Result<bool> {
        if i == 0 && self.added_at(dir, name).is_some() {
            return Ok(true);
        }
        match self.fs(i).lookup(dir, name) {
            Ok(a) => Ok(a.kind == FileType::Directory && self.covers.contains_key(&(i, a.ino))),
            Err(Error::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Filesystem for Tree {
    fn root_ino(&self) -> u64 {
        self.fs(0).root_ino()
    }

    fn info(&self) -> FsInfo {
        self.fs(0).info()
    }

    fn statfs(&self) -> Result<StatFs> {
        self.fs(0).statfs()
    }

    fn statfs_at(&self, ino: u64) -> Result<StatFs> {
        let (i, _) = self.split(ino)?;
        self.fs(i).statfs()
    }

    fn getattr(&self, ino: u64) -> Result<Attr> {
        let (i, local) = self.split(ino)?;
        let a = self.fs(i).getattr(local)?;
        self.tag(i, a)
    }

    /// Each filesystem gets the hints for its own files (a listing is of one directory, so
    /// nearly always one filesystem).
    fn prefetch(&self, files: &[(u64, u64)]) {
        let mut by_fs: Vec<(usize, Vec<(u64, u64)>)> = Vec::new();
        for &(ino, len) in files {
            let Ok((i, local)) = self.split(ino) else {
                continue;
            };
            match by_fs.iter_mut().find(|(j, _)| *j == i) {
                Some((_, v)) => v.push((local, len)),
                None => by_fs.push((i, vec![(local, len)])),
            }
        }
        for (i, v) in by_fs {
            self.fs(i).prefetch(&v);
        }
    }

    fn lookup(&self, dir: u64, name: &[u8]) -> Result<Attr> {
        let (i, local) = self.split(dir)?;
        if name == b".." && self.is_mounted_root(i, local) {
            return self.getattr(self.placed[i].parent);
        }
        if let Some(j) = self.added_at(dir, name) {
            return self.root_of(j);
        }
        let a = self.fs(i).lookup(local, name)?;
        self.outward(i, a)
    }

    fn readdir(
        &self,
        dir: u64,
        cookie: u64,
        sink: &mut dyn FnMut(DirEntry, u64) -> bool,
    ) -> Result<()> {
        let (i, local) = self.split(dir)?;
        let mounted_root = self.is_mounted_root(i, local);
        let adds = dir == self.root_ino() && !self.added.is_empty();
        if adds && cookie & ADDED != 0 {
            return self.readdir_added(cookie & !ADDED, sink);
        }
        let mut failed = None;
        let mut stopped = false;
        self.fs(i).readdir(local, cookie, &mut |mut e, next| {
            if adds && next & ADDED != 0 {
                failed = Some(Error::Unsupported(format!(
                    "{}: readdir cookie {next:#x} of / collides with the names the tree adds",
                    self.placed[i].mount.device
                )));
                return false;
            }
            let ino = if e.name == b".." && mounted_root {
                Ok(self.placed[i].parent)
            } else if e.kind == FileType::Directory && e.name != b"." {
                let (j, l) = self.top(i, e.ino);
                self.join(j, l)
            } else {
                self.join(i, e.ino)
            };
            match ino {
                Ok(ino) => {
                    e.ino = ino;
                    stopped = !sink(e, next);
                    !stopped
                }
                Err(err) => {
                    failed = Some(err);
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if adds && !stopped {
            return self.readdir_added(0, sink);
        }
        Ok(())
    }

    fn deleted_entries(&self, dir: u64) -> Result<Vec<crate::fs::DeletedEntry>> {
        let (i, local) = self.split(dir)?;
        let mut out = self.fs(i).deleted_entries(local)?;
        for e in &mut out {
            e.ino = self.join(i, e.ino)?;
        }
        Ok(out)
    }

    fn removed_dir_entries(&self, dir: u64) -> Result<Vec<crate::fs::DeletedEntry>> {
        let (i, local) = self.split(dir)?;
        let mut out = self.fs(i).removed_dir_entries(local)?;
        for e in &mut out {
            e.ino = self.join(i, e.ino)?;
        }
        Ok(out)
    }

    fn orphans(&self, dir: u64, errors: &mut Vec<String>) -> Result<Option<crate::fs::Orphans>> {
        let (i, local) = self.split(dir)?;
        let Some(mut o) = self.fs(i).orphans(local, errors)? else {
            return Ok(None);
        };
        o.dir_ino = self.join(i, o.dir_ino)?;
        for ino in &mut o.inodes {
            *ino = self.join(i, *ino)?;
        }
        o.names = std::mem::take(&mut o.names)
            .into_iter()
            .map(|(ino, name)| Ok((self.join(i, ino)?, name)))
            .collect::<Result<_>>()?;
        Ok(Some(o))
    }

    fn removed_getattr(&self, ino: u64) -> Result<Attr> {
        let (i, local) = self.split(ino)?;
        let a = self.fs(i).removed_getattr(local)?;
        self.tag(i, a)
    }

    fn read(&self, ino: u64, off: u64, buf: &mut [u8]) -> Result<usize> {
        let (i, local) = self.split(ino)?;
        self.fs(i).read(local, off, buf)
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let (i, local) = self.split(ino)?;
        self.fs(i).readlink(local)
    }

    fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let (i, local) = self.split(ino)?;
        self.fs(i).listxattr(local)
    }

    fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let (i, local) = self.split(ino)?;
        self.fs(i).getxattr(local, name)
    }

    fn write(&self, ino: u64, off: u64, data: &[u8]) -> Result<usize> {
        let (i, local) = self.split(ino)?;
        self.fs(i).write(local, off, data)
    }

    fn setattr(&self, ino: u64, changes: &SetAttr) -> Result<Attr> {
        let (i, local) = self.split(ino)?;
        let a = self.fs(i).setattr(local, changes)?;
        self.tag(i, a)
    }

    fn create(&self, dir: u64, name: &[u8], new: &NewInode) -> Result<Attr> {
        self.not_added(dir, name)?;
        let (i, local) = self.split(dir)?;
        let a = self.fs(i).create(local, name, new)?;
        self.tag(i, a)
    }

    fn symlink(&self, dir: u64, name: &[u8], target: &[u8], new: &NewInode) -> Result<Attr> {
        self.not_added(dir, name)?;
        let (i, local) = self.split(dir)?;
        let a = self.fs(i).symlink(local, name, target, new)?;
        self.tag(i, a)
    }

    fn link(&self, ino: u64, dir: u64, name: &[u8]) -> Result<Attr> {
        self.not_added(dir, name)?;
        let (i, local) = self.split(ino)?;
        let (j, dir) = self.split(dir)?;
        if i != j {
            return Err(Error::CrossDevice);
        }
        let a = self.fs(i).link(local, dir, name)?;
        self.tag(i, a)
    }

    fn unlink(&self, dir: u64, name: &[u8]) -> Result<()> {
        let (i, local) = self.split(dir)?;
        self.fs(i).unlink(local, name)
    }

    fn rmdir(&self, dir: u64, name: &[u8]) -> Result<()> {
        let (i, local) = self.split(dir)?;
        if self.covered(i, local, name)? {
            return Err(Error::Busy);
        }
        self.fs(i).rmdir(local, name)
    }

    fn rename(&self, dir: u64, name: &[u8], new_dir: u64, new_name: &[u8]) -> Result<()> {
        self.rename_with(dir, name, new_dir, new_name, RenameFlags::default())
    }

    fn rename_with(
        &self,
        dir: u64,
        name: &[u8],
        new_dir: u64,
        new_name: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        let (i, from) = self.split(dir)?;
        let (j, to) = self.split(new_dir)?;
        if i != j {
            return Err(Error::CrossDevice);
        }
        if self.covered(i, from, name)? || self.covered(i, to, new_name)? {
            return Err(Error::Busy);
        }
        self.fs(i).rename_with(from, name, to, new_name, flags)
    }

    fn setxattr(&self, ino: u64, name: &[u8], value: &[u8]) -> Result<()> {
        let (i, local) = self.split(ino)?;
        self.fs(i).setxattr(local, name, value)
    }

    fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        let (i, local) = self.split(ino)?;
        self.fs(i).removexattr(local, name)
    }

    fn opened(&self, ino: u64) {
        if let Ok((i, local)) = self.split(ino) {
            self.fs(i).opened(local)
        }
    }

    fn released(&self, ino: u64) -> Result<()> {
        let (i, local) = self.split(ino)?;
        self.fs(i).released(local)
    }

    fn fsync(&self) -> Result<()> {
        for p in &self.placed {
            match p.mount.fs.fsync() {
                Ok(()) | Err(Error::ReadOnly) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Stands in for a filesystem ferry cannot read yet (NTFS...): an empty, read-only
/// directory, so the rest of the guest mounts and the gap is visible rather than fatal.
pub struct Placeholder {
    kind: &'static str,
}

impl Placeholder {
    const ROOT: u64 = 1;

    pub fn new(kind: &'static str) -> Self {
        Placeholder { kind }
    }
}

impl Filesystem for Placeholder {
    fn root_ino(&self) -> u64 {
        Self::ROOT
    }

    fn info(&self) -> FsInfo {
        FsInfo {
            kind: self.kind,
            uuid: [0; 16],
            label: Vec::new(),
            block_size: 4096,
            size_bytes: 0,
            free_bytes: 0,
        }
    }

    fn statfs(&self) -> Result<StatFs> {
        Ok(StatFs {
            bsize: 4096,
            namelen: 255,
            ..StatFs::default()
        })
    }

    fn getattr(&self, ino: u64) -> Result<Attr> {
        if ino != Self::ROOT {
            return Err(Error::NotFound);
        }
        Ok(Attr {
            ino,
            kind: FileType::Directory,
            mode: 0o40555,
            uid: 0,
            gid: 0,
            size: 0,
            blocks: 0,
            nlink: 2,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            crtime: None,
            rdev: 0,
            blksize: 4096,
        })
    }

    fn lookup(&self, dir: u64, _name: &[u8]) -> Result<Attr> {
        self.getattr(dir)?;
        Err(Error::NotFound)
    }

    fn readdir(
        &self,
        dir: u64,
        cookie: u64,
        sink: &mut dyn FnMut(DirEntry, u64) -> bool,
    ) -> Result<()> {
        self.getattr(dir)?;
        let from = usize::try_from(cookie).unwrap_or(usize::MAX);
        for (next, name) in (1u64..).zip([&b"."[..], b".."]).skip(from) {
            let e = DirEntry {
                ino: Self::ROOT,
                name: name.to_vec(),
                kind: FileType::Directory,
            };
            if !sink(e, next) {
                break;
            }
        }
        Ok(())
    }

    fn read(&self, ino: u64, _off: u64, _buf: &mut [u8]) -> Result<usize> {
        self.getattr(ino)?;
        Err(Error::IsDir(ino))
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        self.getattr(ino)?;
        Err(Error::NotSymlink(ino))
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    /// A tiny filesystem: inode 2 is the root; `dirs` lists (parent, name, ino, is_dir).
    struct Toy {
        entries: Vec<(u64, &'static str, u64, bool)>,
        blocks: u64,
    }

    impl Toy {
        fn attr(&self, ino: u64) -> Result<Attr> {
            let dir = ino == 2 || self.entries.iter().any(|e| e.2 == ino && e.3);
            if ino != 2 && !self.entries.iter().any(|e| e.2 == ino) {
                return Err(Error::NotFound);
            }
            let mut a = Placeholder::new("toy").getattr(1)?;
            a.ino = ino;
            if !dir {
                a.kind = FileType::RegularFile;
                a.mode = 0o100644;
            }
            Ok(a)
        }
    }

    impl Filesystem for Toy {
        fn root_ino(&self) -> u64 {
            2
        }
        fn info(&self) -> FsInfo {
            Placeholder::new("toy").info()
        }
        fn statfs(&self) -> Result<StatFs> {
            Ok(StatFs {
                blocks: self.blocks,
                ..StatFs::default()
            })
        }
        fn getattr(&self, ino: u64) -> Result<Attr> {
            self.attr(ino)
        }
        fn lookup(&self, dir: u64, name: &[u8]) -> Result<Attr> {
            if name == b".." {
                let p = self.entries.iter().find(|e| e.2 == dir).map_or(2, |e| e.0);
                return self.attr(p);
            }
            let e = self
                .entries
                .iter()
                .find(|e| e.0 == dir && e.1.as_bytes() == name);
            self.attr(e.ok_or(Error::NotFound)?.2)
        }
        fn readdir(
            &self,
            dir: u64,
            cookie: u64,
            sink: &mut dyn FnMut(DirEntry, u64) -> bool,
        ) -> Result<()> {
            let mine = self.entries.iter().filter(|e| e.0 == dir).enumerate();
            for (n, e) in mine.skip(cookie as usize) {
                let kind = if e.3 {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                let d = DirEntry {
                    ino: e.2,
                    name: e.1.as_bytes().to_vec(),
                    kind,
                };
                if !sink(d, n as u64 + 1) {
                    break;
                }
            }
            Ok(())
        }
        fn read(&self, _ino: u64, _off: u64, _buf: &mut [u8]) -> Result<usize> {
            Ok(0)
        }
        fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
            Err(Error::NotSymlink(ino))
        }
    }

    fn mount(name: &str, mp: &str, fs: Toy) -> Mount {
        Mount {
            device: name.into(),
            mountpoint: mp.into(),
            fs: Arc::new(fs),
        }
    }

    fn guest() -> Tree {
        let root = Toy {
            entries: vec![
                (2, "boot", 12, true),
                (2, "var", 13, true),
                (13, "x", 14, false),
            ],
            blocks: 100,
        };
        let boot = Toy {
            entries: vec![(2, "vmlinuz", 12, false)],
            blocks: 7,
        };
        let var = Toy {
            entries: vec![(2, "log", 20, true)],
            blocks: 9,
        };
        let log = Toy {
            entries: vec![(2, "messages", 12, false)],
            blocks: 3,
        };
        let mut t = Tree::new(mount("/dev/sda2", "/", root));
        t.mount(mount("/dev/sda1", "/boot", boot)).unwrap();
        t.mount(mount("/dev/vg/var", "/var", var)).unwrap();
        t.mount(mount("/dev/vg/log", "/var/log", log)).unwrap();
        t
    }

    #[test]
    fn crossing_and_unique_inodes() {
        let t = guest();
        let boot = path::resolve(&t, b"/boot", true).unwrap();
        assert_eq!(boot.ino, 1 << SHIFT | 2);
        let k = path::resolve(&t, b"/boot/vmlinuz", true).unwrap();
        assert_eq!(k.ino, 1 << SHIFT | 12);
        // The root filesystem keeps its own numbers; /boot's 12 is not the root's 12.
        assert_eq!(path::resolve(&t, b"/", true).unwrap().ino, 2);
        // /var hides the root filesystem's /var/x.
        assert!(matches!(
            path::resolve(&t, b"/var/x", true),
            Err(Error::NotFound)
        ));
        let m = path::resolve(&t, b"/var/log/messages", true).unwrap();
        assert_eq!(m.ino, 3 << SHIFT | 12);
        assert_eq!(t.statfs_at(m.ino).unwrap().blocks, 3);
        assert_eq!(t.statfs_at(boot.ino).unwrap().blocks, 7);
        assert_eq!(t.statfs_at(2).unwrap().blocks, 100);
        // `..` of a mounted root is the directory holding the mountpoint.
        let log = path::resolve(&t, b"/var/log", true).unwrap();
        assert_eq!(t.lookup(log.ino, b"..").unwrap().ino, 2 << SHIFT | 2);
        assert_eq!(t.lookup(boot.ino, b"..").unwrap().ino, 2);
    }

    #[test]
    fn readdir_shows_mounted_roots() {
        let t = guest();
        let mut seen = Vec::new();
        t.readdir(2, 0, &mut |e, _| {
            seen.push((String::from_utf8(e.name).unwrap(), e.ino));
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                ("boot".into(), 1 << SHIFT | 2),
                ("var".into(), 2 << SHIFT | 2)
            ]
        );
    }

    #[test]
    fn mountpoints_are_busy_and_filesystems_separate() {
        let t = guest();
        assert!(matches!(t.rmdir(2, b"boot"), Err(Error::Busy)));
        assert!(matches!(t.rename(2, b"var", 2, b"v"), Err(Error::Busy)));
        let k = path::resolve(&t, b"/boot/vmlinuz", true).unwrap();
        assert!(matches!(t.link(k.ino, 2, b"k"), Err(Error::CrossDevice)));
        assert!(matches!(t.rmdir(2, b"nothing"), Err(Error::ReadOnly)));
        assert!(matches!(t.getattr(9 << SHIFT | 2), Err(Error::NotFound)));
    }

    /// A Windows-like layout: D: attached beside the system volume's own entries.
    fn windows() -> Tree {
        let mut t = guest();
        let d = Toy {
            entries: vec![(2, "data.txt", 12, false)],
            blocks: 5,
        };
        t.attach(mount("/dev/sda3", "/D:", d)).unwrap();
        t
    }

    fn names(t: &Tree, dir: u64, per_call: usize) -> Vec<(String, u64)> {
        let mut seen = Vec::new();
        let mut cookie = 0;
        loop {
            let mut batch = Vec::new();
            t.readdir(dir, cookie, &mut |e, next| {
                if batch.len() == per_call {
                    return false;
                }
                batch.push((String::from_utf8(e.name).unwrap(), e.ino));
                cookie = next;
                true
            })
            .unwrap();
            if batch.is_empty() {
                return seen;
            }
            seen.extend(batch);
        }
    }

    #[test]
    fn attached_names_are_listed_and_crossed() {
        let t = windows();
        let d = path::resolve(&t, b"/D:/data.txt", true).unwrap();
        assert_eq!(d.ino, 4 << SHIFT | 12);
        assert_eq!(t.statfs_at(d.ino).unwrap().blocks, 5);
        let root = path::resolve(&t, b"/D:", true).unwrap();
        assert_eq!(t.lookup(root.ino, b"..").unwrap().ino, 2);
        let all = vec![
            ("boot".to_string(), 1 << SHIFT | 2),
            ("var".into(), 2 << SHIFT | 2),
            ("D:".into(), 4 << SHIFT | 2),
        ];
        // Resumed from every cookie, the listing is the same.
        for per_call in 1..4 {
            assert_eq!(names(&t, 2, per_call), all, "{per_call} a call");
        }
        // Only the root directory gains the name.
        assert!(!names(&t, 2 << SHIFT | 2, 8).iter().any(|(n, _)| n == "D:"));
        assert!(matches!(t.rmdir(2, b"D:"), Err(Error::Busy)));
        assert!(matches!(t.rename(2, b"D:", 2, b"E:"), Err(Error::Busy)));
        let new = NewInode {
            mode: 0o100644,
            uid: 0,
            gid: 0,
            rdev: 0,
        };
        assert!(matches!(t.create(2, b"D:", &new), Err(Error::Exists)));
    }

    #[test]
    fn attach_uses_an_existing_directory_and_refuses_odd_names() {
        let mut t = guest();
        let toy = || Toy {
            entries: vec![],
            blocks: 0,
        };
        // The root filesystem's own /boot: an ordinary mount over it.
        t.attach(mount("/dev/x", "/boot", toy())).unwrap();
        assert!(t.added.is_empty());
        assert!(matches!(
            t.attach(mount("/dev/x", "/a/b", toy())),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            t.attach(mount("/dev/x", "/", toy())),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn mountpoint_must_be_a_directory() {
        let mut t = guest();
        let e = t.mount(mount(
            "/dev/x",
            "/var/log/messages",
            Toy {
                entries: vec![],
                blocks: 0,
            },
        ));
        assert!(matches!(e, Err(Error::NotDir(_))));
        let e = t.mount(mount(
            "/dev/x",
            "/nowhere",
            Toy {
                entries: vec![],
                blocks: 0,
            },
        ));
        assert!(matches!(e, Err(Error::NotFound)));
    }
}
