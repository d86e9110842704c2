//! Layer 3: filesystems inside volumes. `Filesystem` mirrors the FUSE low-level API on the
//! filesystem's own inode numbers, so the FUSE adapter (`mount`) is a thin translation and
//! `ferry ls`/`cat` can walk a tree with no FUSE at all. The write half defaults to ReadOnly;
//! ext2/3/4 opened with `ext4::Ext4::open_rw` implements it.

pub mod ext4;
pub mod fat;
pub mod files;
pub mod ntfs;
pub mod path;
pub mod ranges;
pub mod xfs;

use crate::block::{self, BlockDevice};
use std::fmt;
use std::sync::Arc;

pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the filesystem layer. Each maps to one errno, but only at the FUSE boundary
/// (`mount::errno`); everything else keeps the context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such file or directory")]
    NotFound,
    #[error("inode {0} is not a directory")]
    NotDir(u64),
    #[error("inode {0} is a directory")]
    IsDir(u64),
    #[error("inode {0} is not a symbolic link")]
    NotSymlink(u64),
    #[error("name is longer than {max} bytes")]
    NameTooLong { max: usize },
    /// Damaged on-disk structure: which, where, and what was wrong (see [`Corruption`]).
    /// Boxed, as the largest and rarest variant.
    #[error("{0}")]
    Corrupt(Box<Corruption>),
    #[error(transparent)]
    Io(#[from] block::Error),
    /// A feature of this filesystem that ferry does not read (yet); says which.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An operation this filesystem implementation does not offer at all, or an attribute
    /// name no handler takes (as the kernel answers for "system.data" or "foo.bar").
    #[error("operation not supported")]
    NotSupported,
    /// The extended attribute asked for is not there.
    #[error("no such attribute")]
    NoAttr,
    /// Inode contents that need a key ferry does not have (fscrypt), as the kernel answers
    /// without the key.
    #[error("inode {0} is encrypted and the key is not available")]
    NoKey(u64),
    #[error("the filesystem is read-only")]
    ReadOnly,
    /// Too many symbolic links while resolving a path (the kernel's limit is 40).
    #[error("too many levels of symbolic links")]
    Loop,
    /// The entry is a mountpoint of the guest's tree (EBUSY, as for rmdir of a mountpoint).
    #[error("a filesystem is mounted there")]
    Busy,
    /// A link or rename between two filesystems of the guest's tree (EXDEV).
    #[error("across filesystems")]
    CrossDevice,
    /// The name to create is there already (EEXIST).
    #[error("file exists")]
    Exists,
    /// rmdir, or rename over, a directory that still has entries (ENOTEMPTY).
    #[error("directory not empty")]
    NotEmpty,
    /// No free block or inode left in the filesystem (ENOSPC).
    #[error("no space left on the filesystem")]
    NoSpace,
    /// A link count would pass the filesystem's limit (EMLINK).
    #[error("too many links")]
    TooManyLinks,
    /// A request the filesystem cannot do by its rules, e.g. moving a directory into itself
    /// (EINVAL); says what.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The inode forbids the change (immutable or append-only flag) (EPERM).
    #[error("operation not permitted")]
    NotPermitted,
    /// A file would grow past what the filesystem can address (EFBIG).
    #[error("file too large")]
    TooBig,
}

impl Error {
    /// Damage in `what`, owned by inode `ino` (0: a filesystem-wide structure), found in
    /// filesystem block `block` (0: not known). The builders below add what else is known.
    pub(crate) fn corrupt(
        what: &'static str,
        ino: u64,
        block: u64,
        detail: impl Into<String>,
    ) -> Self {
        Error::Corrupt(Box::new(Corruption {
            device: None,
            what,
            ino,
            block,
            offset: None,
            detail: detail.into(),
            mismatch: None,
        }))
    }

    /// A field that must hold one value and holds another (a magic number, a checksum, a
    /// count): `detail` names the field, the values are printed as given.
    pub(crate) fn mismatch(
        what: &'static str,
        ino: u64,
        detail: impl Into<String>,
        expected: impl fmt::Display,
        found: impl fmt::Display,
    ) -> Self {
        Error::corrupt(what, ino, 0, detail).expected(expected, found)
    }

    /// Sets the byte position (on the filesystem's device) of the damaged structure, unless
    /// the error has one already: a parser that knows the very field sets it first, its
    /// caller only knows where the structure starts. Other errors pass unchanged, so it can
    /// be applied to any `Result`'s error.
    pub(crate) fn at(mut self, offset: u64) -> Self {
        if let Error::Corrupt(c) = &mut self {
            c.offset.get_or_insert(offset);
        }
        self
    }

    /// Sets the filesystem block the damage was found in, unless the error already names one
    /// (the innermost layer knows best).
    pub(crate) fn in_block(mut self, block: u64) -> Self {
        if let Error::Corrupt(c) = &mut self {
            if c.block == 0 {
                c.block = block;
            }
        }
        self
    }

    /// Sets the value expected and the value found.
    pub(crate) fn expected(
        mut self,
        expected: impl fmt::Display,
        found: impl fmt::Display,
    ) -> Self {
        if let Error::Corrupt(c) = &mut self {
            c.mismatch = Some(Mismatch {
                expected: expected.to_string(),
                found: found.to_string(),
            });
        }
        self
    }

    /// Names the device or image the filesystem is on, unless the error names one already.
    /// The filesystem layer reads a bare `BlockDevice` and cannot know this; whoever opened
    /// the device (the guest's volume table, a CLI command) adds it.
    pub fn on_device(mut self, device: &str) -> Self {
        if let Error::Corrupt(c) = &mut self {
            c.device.get_or_insert_with(|| device.to_string());
        }
        self
    }

    /// The damage, when this error reports damage.
    pub fn corruption(&self) -> Option<&Corruption> {
        match self {
            Error::Corrupt(c) => Some(c),
            _ => None,
        }
    }
}

/// Where damage was found and what it was. Every field that is known is printed, always in
/// the same order and the same form as the block and volume layers' errors:
/// `DEVICE: corrupt WHAT (inode N, block B) at offset 0x…: DETAIL: expected X, found Y`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The device or image, once a caller that knows its name has set it.
    pub device: Option<String>,
    /// The on-disk structure (`superblock`, `xfs inode`, `extent tree`).
    pub what: &'static str,
    /// The inode the structure belongs to; 0 for filesystem-wide structures.
    pub ino: u64,
    /// The filesystem block it was found in; 0 when not known.
    pub block: u64,
    /// Its byte position on the device, when known.
    pub offset: Option<u64>,
    /// What is wrong with it.
    pub detail: String,
    /// For a magic number, checksum or count: what it must be and what it is.
    pub mismatch: Option<Mismatch>,
}

/// The value a field must hold and the value it holds, as they are best read (hex for magic
/// numbers and checksums, decimal for counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub expected: String,
    pub found: String,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.device {
            write!(f, "{d}: ")?;
        }
        write!(f, "corrupt {}", self.what)?;
        match (self.ino, self.block) {
            (0, 0) => {}
            (ino, 0) => write!(f, " (inode {ino})")?,
            (0, block) => write!(f, " (block {block})")?,
            (ino, block) => write!(f, " (inode {ino}, block {block})")?,
        }
        if let Some(o) = self.offset {
            write!(f, " at offset {o:#x}")?;
        }
        write!(f, ": {}", self.detail)?;
        if let Some(m) = &self.mismatch {
            write!(f, ": expected {}, found {}", m.expected, m.found)?;
        }
        Ok(())
    }
}

/// File type, as in the S_IFMT bits of the mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    RegularFile,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    NamedPipe,
    Socket,
}

impl FileType {
    /// From the S_IFMT bits of a mode; None for a value no Unix defines.
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & 0o170000 {
            0o100000 => FileType::RegularFile,
            0o040000 => FileType::Directory,
            0o120000 => FileType::Symlink,
            0o020000 => FileType::CharDevice,
            0o060000 => FileType::BlockDevice,
            0o010000 => FileType::NamedPipe,
            0o140000 => FileType::Socket,
            _ => return None,
        })
    }
}

/// Seconds since the epoch (may be negative) and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub secs: i64,
    pub nsecs: u32,
}

/// What `stat` shows for an inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileType,
    /// Full st_mode: file type bits and permissions.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Allocated space in 512-byte units (st_blocks).
    pub blocks: u64,
    pub nlink: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// Creation time; None when the inode has no room for it.
    pub crtime: Option<Timestamp>,
    /// Device number in the Linux encoding (as st_rdev), 0 for non-devices.
    pub rdev: u64,
    /// Preferred I/O size (the filesystem block size).
    pub blksize: u32,
}

/// One directory entry as `readdir` hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub name: Vec<u8>,
    pub kind: FileType,
}

/// `readdir` over a listing held in memory: `.` (`dir`) and `..` (`parent`) at positions 0
/// and 1, then `list` from position 2, each entry made by `entry` and handed out with the
/// position after it as its cookie, from position `cookie` on until `sink` returns false.
pub(crate) fn readdir_listed<T>(
    dir: u64,
    parent: u64,
    list: &[T],
    entry: impl Fn(&T) -> DirEntry,
    cookie: u64,
    sink: &mut dyn FnMut(DirEntry, u64) -> bool,
) {
    let dots = [(&b"."[..], dir), (&b".."[..], parent)];
    let mut pos = cookie;
    while let Some(&(name, ino)) = usize::try_from(pos).ok().and_then(|p| dots.get(p)) {
        let e = DirEntry {
            ino,
            name: name.to_vec(),
            kind: FileType::Directory,
        };
        // At most 2 here: the loop ran over the two dots.
        pos = pos.saturating_add(1);
        if !sink(e, pos) {
            return;
        }
    }
    // Entry k's cookie is k + 3 (after the two dots): the position after it.
    let start = usize::try_from(pos.saturating_sub(2)).unwrap_or(usize::MAX);
    for (next, t) in (3u64..).zip(list).skip(start) {
        if !sink(entry(t), next) {
            return;
        }
    }
}

/// A removed directory entry whose record is still readable (forensics: `ferry timeline`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedEntry {
    /// The inode the name pointed to (0 when that was cleared too).
    pub ino: u64,
    pub name: Vec<u8>,
    /// The type the record names, if it does.
    pub kind: Option<FileType>,
    /// The inode is in use again (by this file under another name, or by a new one): its
    /// metadata is no longer the removed file's. fls says "(deleted-realloc)".
    pub reallocated: bool,
    /// The inode is known to hold another file than the one the name was for (NTFS: the
    /// record's sequence number moved on since the index entry was written), so its
    /// metadata is not shown: fls shows none either.
    pub stale: bool,
}

/// Inodes no name reaches may be among these (forensics: fls's `$OrphanFiles`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Orphans {
    /// The number fls gives its virtual `$OrphanFiles` directory (last inode + 1).
    pub dir_ino: u64,
    /// Free inodes that were used, in number order; those a (removed) name still names are
    /// not orphans, which only a walk of the whole tree can tell.
    pub inodes: Vec<u64>,
    /// The name an orphan still carries itself (NTFS: its $FILE_NAME), which fls shows in
    /// place of `OrphanFile-N`.
    pub names: std::collections::BTreeMap<u64, Vec<u8>>,
}

/// `statfs` numbers, in blocks of `bsize` bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatFs {
    pub bsize: u32,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub namelen: u32,
}

/// What changed byte ranges of a filesystem's volume may have changed (`Filesystem::touched`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// The inodes whose on-disk records lie in the ranges, sorted: every inode whose
    /// attributes, mapping or directory entries may differ is among them (see the
    /// implementation for why).
    pub inodes: Vec<u64>,
    /// The parts of the ranges (volume bytes, normalized) that are neither fixed metadata,
    /// nor inode records, nor blocks of the filesystem's hidden inodes (journal, quota), nor
    /// free in its allocation map: they can only be sound if they belong to `inodes` (on this
    /// side or the other), which the caller checks with `Filesystem::owned`.
    pub residue: Vec<std::ops::Range<u64>>,
}

/// A filesystem described for inspection (`ferry filesystems`, guest detection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    /// "ext2", "ext3", "ext4", "xfs", "ntfs" or "vfat" (as blkid names them).
    pub kind: &'static str,
    pub uuid: [u8; 16],
    pub label: Vec<u8>,
    pub block_size: u32,
    pub size_bytes: u64,
    pub free_bytes: u64,
}

/// A filesystem on its own inode numbers. `&self` everywhere: implementations lock internally,
/// so the FUSE adapter serves several requests at once.
pub trait Filesystem: Send + Sync {
    /// The inode number of the root directory.
    fn root_ino(&self) -> u64;

    fn info(&self) -> FsInfo;

    fn statfs(&self) -> Result<StatFs>;

    /// The numbers of the filesystem `ino` is on: the same as `statfs` except in a tree that
    /// composes several filesystems (`guest::Tree`), where `df` of a mountpoint wants its own.
    fn statfs_at(&self, _ino: u64) -> Result<StatFs> {
        self.statfs()
    }

    fn getattr(&self, ino: u64) -> Result<Attr>;

    /// The entry `name` of directory `dir`.
    fn lookup(&self, dir: u64, name: &[u8]) -> Result<Attr>;

    /// Lists `dir` from `cookie` (0 = the start; otherwise a `next_cookie` handed out before).
    /// `sink` gets each entry with the cookie that resumes after it, and returns false when it
    /// wants no more (its buffer is full); that entry is then given again on the next call.
    fn readdir(
        &self,
        dir: u64,
        cookie: u64,
        sink: &mut dyn FnMut(DirEntry, u64) -> bool,
    ) -> Result<()>;

    /// Removed entries still readable in directory `dir`, for forensics; never part of
    /// `readdir`. Filesystems that cannot recover them (yet) have none.
    fn deleted_entries(&self, _dir: u64) -> Result<Vec<DeletedEntry>> {
        Ok(Vec::new())
    }

    /// Every record of `dir`, a removed directory whose blocks are still readable (its live
    /// records and its removed ones), for forensics: fls lists them under the removed name.
    /// `reallocated` says whether each record's inode is in use. None where the filesystem
    /// cannot tell.
    fn removed_dir_entries(&self, _dir: u64) -> Result<Vec<DeletedEntry>> {
        Ok(Vec::new())
    }

    /// When `dir` is the root of a filesystem that can tell freed-but-used inodes apart
    /// (ext4), those inodes (see `Orphans`); None elsewhere. Damage met on the way is pushed
    /// onto `errors` and the rest still returned.
    fn orphans(&self, _dir: u64, _errors: &mut Vec<String>) -> Result<Option<Orphans>> {
        Ok(None)
    }

    /// The metadata of `ino` for a removed entry or an orphan (forensics): where `getattr`
    /// refuses a file that is no longer in use but whose metadata is still readable (NTFS: a
    /// freed MFT record), as the structure holds it.
    fn removed_getattr(&self, ino: u64) -> Result<Attr> {
        self.getattr(ino)
    }

    /// For a comparison with another version of this filesystem that differs only in the
    /// byte ranges `ranges` of the volume (sorted, apart): which inodes those ranges may have
    /// changed (`Touched`). `Unsupported`, saying why, when the filesystem cannot tell (a
    /// journal replayed in memory makes the view differ from the blocks; a feature not
    /// mapped): callers then compare everything.
    fn touched(&self, _ranges: &[std::ops::Range<u64>]) -> Result<Touched> {
        Err(Error::Unsupported(format!(
            "{}: changed blocks are not mapped to inodes for this filesystem",
            self.info().kind
        )))
    }

    /// The byte ranges of the volume (normalized) holding the blocks of `inodes` as this
    /// side sees them: data, mapping-tree nodes, the xattr block. An inode not in use, or one
    /// that cannot be read, contributes nothing (which only makes a caller's check stricter).
    fn owned(&self, _inodes: &[u64]) -> Result<Vec<std::ops::Range<u64>>> {
        Err(Error::Unsupported(format!(
            "{}: inode blocks are not listed for this filesystem",
            self.info().kind
        )))
    }

    /// Reads file bytes at `off` into `buf`; returns how many (0 at or past the end).
    fn read(&self, ino: u64, off: u64, buf: &mut [u8]) -> Result<usize>;

    /// A hint that the first `len` bytes of each regular file `(ino, len)` of `files` will be
    /// read soon (a walk such as tar listed their directory): a filesystem that knows where
    /// they lie asks its device to fetch them in the background. It reads nothing for the
    /// caller and cannot fail. The default does nothing.
    fn prefetch(&self, _files: &[(u64, u64)]) {}

    /// Byte ranges of the device that the filesystem's allocation maps mark free, sorted and
    /// apart: what a copy of the volume may leave as zeros, as if the guest had run `fstrim`
    /// (virt-v2v and virt-sparsify trim the same way). `Unsupported`, saying why, when the
    /// maps cannot be trusted as they are on disk (a journal or log still to replay, a volume
    /// left dirty) or the filesystem cannot tell yet. A range may only be given when nothing
    /// the guest will read is there: when in doubt, give less.
    fn unused(&self) -> Result<Vec<std::ops::Range<u64>>> {
        Err(Error::Unsupported(format!(
            "{}: free space is not mapped for this filesystem",
            self.info().kind
        )))
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>>;

    /// Full attribute names ("user.foo"), in the order the kernel lists them.
    fn listxattr(&self, _ino: u64) -> Result<Vec<Vec<u8>>> {
        Err(Error::NotSupported)
    }

    /// The value of attribute `name` (a full name); `NoAttr` when the inode has none such.
    fn getxattr(&self, _ino: u64, _name: &[u8]) -> Result<Vec<u8>> {
        Err(Error::NotSupported)
    }

    // The write half. Every filesystem is read-only so far; writers override these.

    /// Writes `data` at `off`, extending the file as needed; returns the bytes written.
    fn write(&self, _ino: u64, _off: u64, _data: &[u8]) -> Result<usize> {
        Err(Error::ReadOnly)
    }

    /// Changes the attributes that are `Some` (a new size truncates or extends).
    fn setattr(&self, _ino: u64, _changes: &SetAttr) -> Result<Attr> {
        Err(Error::ReadOnly)
    }

    /// Creates `name` in `dir`: a regular file, directory, device node, FIFO or socket, as the
    /// file type bits of `new.mode` say.
    fn create(&self, _dir: u64, _name: &[u8], _new: &NewInode) -> Result<Attr> {
        Err(Error::ReadOnly)
    }

    fn symlink(&self, _dir: u64, _name: &[u8], _target: &[u8], _new: &NewInode) -> Result<Attr> {
        Err(Error::ReadOnly)
    }

    /// A new name `name` in `dir` for inode `ino` (a hard link).
    fn link(&self, _ino: u64, _dir: u64, _name: &[u8]) -> Result<Attr> {
        Err(Error::ReadOnly)
    }

    /// Removes a non-directory entry.
    fn unlink(&self, _dir: u64, _name: &[u8]) -> Result<()> {
        Err(Error::ReadOnly)
    }

    /// Removes an empty directory.
    fn rmdir(&self, _dir: u64, _name: &[u8]) -> Result<()> {
        Err(Error::ReadOnly)
    }

    /// Moves `dir/name` to `new_dir/new_name`, replacing what is there as rename(2) does.
    fn rename(&self, _dir: u64, _name: &[u8], _new_dir: u64, _new_name: &[u8]) -> Result<()> {
        Err(Error::ReadOnly)
    }

    /// renameat2(2): `rename` with RENAME_NOREPLACE (`Exists` if the target is there) or
    /// RENAME_EXCHANGE (both names must exist; they swap). Without flags it is `rename`; a
    /// filesystem that does not implement the flags answers `NotSupported` for them.
    fn rename_with(
        &self,
        dir: u64,
        name: &[u8],
        new_dir: u64,
        new_name: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        if flags == RenameFlags::default() {
            self.rename(dir, name, new_dir, new_name)
        } else {
            Err(Error::NotSupported)
        }
    }

    fn setxattr(&self, _ino: u64, _name: &[u8], _value: &[u8]) -> Result<()> {
        Err(Error::ReadOnly)
    }

    fn removexattr(&self, _ino: u64, _name: &[u8]) -> Result<()> {
        Err(Error::ReadOnly)
    }

    /// Makes everything written so far durable (to the overlay, for an image).
    fn fsync(&self) -> Result<()> {
        Err(Error::ReadOnly)
    }

    /// A handle on file `ino` was opened. While one is open, removing the file's last name
    /// keeps the inode (POSIX: it lives until its last close).
    fn opened(&self, _ino: u64) {}

    /// A handle on file `ino` was closed: the last close of a file with no name left frees it.
    fn released(&self, _ino: u64) -> Result<()> {
        Ok(())
    }
}

/// The flags of renameat2(2) that `rename_with` takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// RENAME_NOREPLACE: fail with `Exists` rather than replace the target.
    pub noreplace: bool,
    /// RENAME_EXCHANGE: swap the two names atomically.
    pub exchange: bool,
}

/// What `setattr` changes; None leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits only (the file type never changes).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
}

/// The inode `create` and `symlink` make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInode {
    /// File type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device number (as st_rdev) for device nodes, else 0.
    pub rdev: u64,
}

/// Damage already logged, per object (structure, inode, block): FUSE asks about the same
/// inode again and again, and one log line per damaged object is enough. Bounded: past
/// `DamageLog::OBJECTS`, damage seen long ago may be logged again.
pub(crate) struct DamageLog {
    /// The filesystem's name, prefixed to each line.
    fs: &'static str,
    seen: parking_lot::Mutex<lru::LruCache<(&'static str, u64, u64), ()>>,
}

impl DamageLog {
    const OBJECTS: usize = 4096;

    pub(crate) fn new(fs: &'static str) -> Self {
        DamageLog {
            fs,
            seen: parking_lot::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(Self::OBJECTS).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
        }
    }

    /// Logs `e` once per damaged object; returns it.
    pub(crate) fn report(&self, e: Error) -> Error {
        if let Some(c) = e.corruption() {
            if self.seen.lock().put((c.what, c.ino, c.block), ()).is_none() {
                log::error!("{}: {e}", self.fs);
            }
        }
        e
    }
}

/// Opens the filesystem on `dev` for writing: `dev` must be writable (an overlay, or a slice or
/// LV of one). A filesystem ferry cannot write (yet, or because of a feature it does not handle
/// safely) is refused with the reason, so the caller can keep it read-only.
pub fn open_writable(dev: Arc<dyn BlockDevice>) -> Result<Box<dyn Filesystem>> {
    if ext4::probe(dev.as_ref())? {
        return Ok(Box::new(ext4::Ext4::open_rw(dev)?));
    }
    Err(Error::Unsupported(
        "ferry writes ext2/3/4 only; this filesystem stays read-only".into(),
    ))
}

/// Opens the filesystem on `dev`, recognised by its content: ext2/3/4, XFS, NTFS or FAT
/// (read-only); anything else is `Unsupported`.
pub fn open(dev: Arc<dyn BlockDevice>) -> Result<Box<dyn Filesystem>> {
    if ext4::probe(dev.as_ref())? {
        return Ok(Box::new(ext4::Ext4::open(dev)?));
    }
    if ntfs::probe(dev.as_ref())? {
        return Ok(Box::new(ntfs::Ntfs::open(dev)?));
    }
    if xfs::probe(dev.as_ref())? {
        return Ok(Box::new(xfs::Xfs::open(dev)?));
    }
    // Last: a FAT boot sector is recognised by plausible fields only, no magic number.
    if fat::probe(dev.as_ref())? {
        return Ok(Box::new(fat::Fat::open(dev)?));
    }
    Err(Error::Unsupported(
        "no filesystem ferry can read here (it reads ext2/3/4, XFS, NTFS and FAT so far)".into(),
    ))
}
