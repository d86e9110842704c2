//! The fuser adapter: FUSE requests translated onto one `fs::Filesystem`.
//!
//! Stateless: a FUSE node id *is* the filesystem's inode number, so there is no inode table to
//! grow and `forget` has nothing to do. The one exception is the root, which FUSE always calls
//! node 1; it swaps places with the filesystem's root inode (ext4's 2), so inode 1 (if a
//! damaged directory names it) stays reachable and the mapping stays a bijection.
//!
//! Writable mounts (`Adapter::writable`) pass the write half through. The kernel keeps its
//! page cache and attributes coherent by itself, since every change comes through this mount;
//! what the VFS would do above a local filesystem and FUSE leaves to the daemon (owners from
//! the caller, setgid directories, UTIME_NOW, rename and xattr flags) is done here, once for
//! every filesystem.

use crate::fs::{Attr, Error, FileType, Filesystem, NewInode, SetAttr, Timestamp};
use fuser::{
    BsdFileFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may keep attributes and names: nothing changes under the mount except
/// through it, so a day (the kernel still drops entries under memory pressure).
const TTL: Duration = Duration::from_secs(24 * 3600);

/// The largest read and write the kernel is asked to send (it may cap it lower).
pub const MAX_IO: u32 = 1 << 20;

/// Bytes of a regular file named for readahead when its directory is listed (readdirplus,
/// which walks such as tar and cp -r use before opening each file): the first 128 KiB, what
/// the kernel's first read of the file asks for with its initial readahead window.
const WALK_READAHEAD_FILE: u64 = 128 << 10;
/// Most bytes named for readahead per readdirplus reply, so a listing of huge files does not
/// queue more than the host disk serves before the walk reaches them.
const WALK_READAHEAD_REPLY: u64 = 4 << 20;

/// FUSE's name for the root node.
const FUSE_ROOT: u64 = 1;

/// Answers EROFS and returns unless the mount is writable.
macro_rules! writable_or_return {
    ($self:ident, $reply:ident) => {
        if !$self.writable {
            $reply.error(Errno::EROFS);
            return;
        }
    };
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(super::errno(e))
}

pub struct Adapter {
    fs: Arc<dyn Filesystem>,
    root: u64,
    writable: bool,
    /// Read-only, and the kernel can open files (directories) without asking: see `open`.
    no_open: bool,
    no_opendir: bool,
    /// Where reads above `reads::INLINE_READ` go.
    workers: super::reads::Workers,
}

impl Adapter {
    /// A read-only adapter: every write is EROFS, whatever the filesystem could do. Large
    /// reads go to up to `read_workers` (at least one) threads, started as reads need them.
    pub fn new(fs: Arc<dyn Filesystem>, read_workers: usize) -> Self {
        let root = fs.root_ino();
        Adapter {
            workers: super::reads::Workers::new(fs.clone(), read_workers.max(1)),
            fs,
            root,
            writable: false,
            no_open: false,
            no_opendir: false,
        }
    }

    /// An adapter that passes writes through to `fs`.
    pub fn writable(fs: Arc<dyn Filesystem>, read_workers: usize) -> Self {
        Adapter {
            writable: true,
            ..Adapter::new(fs, read_workers)
        }
    }

    /// The owner and mode of a new inode in `dir`, as the kernel's inode_init_owner gives
    /// them: the caller's uid, and the caller's gid unless `dir` is setgid, in which case the
    /// directory's group (and a new directory stays setgid).
    fn new_inode(&self, req: &Request, dir: u64, mode: u32, rdev: u64) -> Result<NewInode, Error> {
        let d = self.fs.getattr(dir)?;
        let mut n = NewInode {
            mode,
            uid: req.uid(),
            gid: req.gid(),
            rdev,
        };
        if d.mode & libc::S_ISGID != 0 {
            n.gid = d.gid;
            if mode & libc::S_IFMT == libc::S_IFDIR {
                n.mode |= libc::S_ISGID;
            }
        }
        Ok(n)
    }

    /// Creates an inode of any type in `parent` and answers with its entry.
    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        rdev: u64,
    ) -> Result<Attr, Error> {
        let dir = self.ino(parent);
        let new = self.new_inode(req, dir, mode, rdev)?;
        self.fs.create(dir, name.as_bytes(), &new)
    }

    fn reply_entry(&self, what: &str, r: Result<Attr, Error>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(&TTL, &self.file_attr(&a), Generation(0)),
            Err(e) => {
                log_write_error(what, &e);
                reply.error(errno(&e))
            }
        }
    }

    fn reply_empty(what: &str, r: Result<(), Error>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => {
                log_write_error(what, &e);
                reply.error(errno(&e))
            }
        }
    }

    /// FUSE node id → filesystem inode (an involution; see the module comment).
    fn ino(&self, node: INodeNo) -> u64 {
        self.swap(node.0)
    }

    /// Filesystem inode → FUSE node id.
    fn node(&self, ino: u64) -> INodeNo {
        INodeNo(self.swap(ino))
    }

    fn swap(&self, n: u64) -> u64 {
        if n == FUSE_ROOT {
            self.root
        } else if n == self.root {
            FUSE_ROOT
        } else {
            n
        }
    }

    fn file_attr(&self, a: &Attr) -> fuser::FileAttr {
        fuser::FileAttr {
            ino: self.node(a.ino),
            size: a.size,
            blocks: a.blocks,
            atime: system_time(a.atime),
            mtime: system_time(a.mtime),
            ctime: system_time(a.ctime),
            crtime: a.crtime.map_or(UNIX_EPOCH, system_time),
            kind: kind(a.kind),
            // The permission bits are the low 12 bits, which fit.
            perm: u16::try_from(a.mode & 0o7777).unwrap_or_default(),
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: fuse_rdev(a.rdev),
            blksize: a.blksize,
            flags: 0,
        }
    }

    /// Attributes for a getattr or setattr reply, where `ino` is only what stat shows (st_ino),
    /// not a node id: the filesystem's own number, so the root shows its own (ext4's 2) as the
    /// kernel's mount does, not FUSE's 1.
    fn stat_attr(&self, a: &Attr) -> fuser::FileAttr {
        fuser::FileAttr {
            ino: INodeNo(a.ino),
            ..self.file_attr(a)
        }
    }

    /// Attributes for a readdirplus entry. If the inode cannot be read, a placeholder with a
    /// zero TTL: the kernel lists the name and asks again (and gets the error) on first use.
    fn entry_attr(&self, ino: u64, kind_: FileType) -> (fuser::FileAttr, Duration) {
        match self.fs.getattr(ino) {
            Ok(a) => (self.file_attr(&a), TTL),
            Err(e) => {
                log::warn!("inode {ino}: {e}");
                let a = Attr {
                    ino,
                    kind: kind_,
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    blocks: 0,
                    nlink: 1,
                    atime: Timestamp::default(),
                    mtime: Timestamp::default(),
                    ctime: Timestamp::default(),
                    crtime: None,
                    rdev: 0,
                    blksize: 4096,
                };
                (self.file_attr(&a), Duration::ZERO)
            }
        }
    }
}

/// Errors a caller provokes (a name that exists, a directory not empty) are its business;
/// the others (damage, I/O, no space) go to the log.
fn log_write_error(what: &str, e: &Error) {
    match e {
        Error::NotFound | Error::ReadOnly | Error::NoAttr | Error::Busy => {}
        Error::CrossDevice | Error::NotDir(_) | Error::IsDir(_) => {}
        _ => log::warn!("{what}: {e}"),
    }
}

/// A time as FUSE gives it to setattr; `Now` is the daemon's clock, as the kernel's
/// UTIME_NOW is the caller's.
fn timestamp(t: TimeOrNow) -> Timestamp {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsecs: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            // Before the epoch: whole seconds down, nanoseconds up.
            let (secs, nsecs) = if d.subsec_nanos() == 0 {
                (d.as_secs(), 0)
            } else {
                // subsec_nanos is below 10^9; as_secs of a SystemTime error is far below 2^64.
                (
                    d.as_secs().saturating_add(1),
                    1_000_000_000u32.saturating_sub(d.subsec_nanos()),
                )
            };
            Timestamp {
                secs: i64::try_from(secs).map_or(-i64::MAX, i64::saturating_neg),
                nsecs,
            }
        }
    }
}

/// The kernel's 32-bit `new_encode_dev` (what FUSE carries) → st_rdev (glibc's makedev).
fn from_fuse_rdev(rdev: u32) -> u64 {
    let major = (rdev & 0xfff00) >> 8;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    libc::makedev(major, minor)
}

/// A directory entry's name as the kernel can take it. A name holding `/` (only a damaged
/// filesystem has one) would make the kernel fail the whole listing with EIO, hiding every
/// other entry: it is listed with each `/` written `\x2f` (as systemd escapes), and logged.
fn listable<'a>(dir: u64, name: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    if !name.contains(&b'/') {
        return std::borrow::Cow::Borrowed(name);
    }
    log::warn!(
        "directory inode {dir}: the entry {:?} holds '/'; listed with it escaped",
        String::from_utf8_lossy(name)
    );
    let mut out = Vec::with_capacity(name.len().saturating_add(8));
    for &b in name {
        if b == b'/' {
            out.extend_from_slice(b"\\x2f");
        } else {
            out.push(b);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// How every open file is served. Every change goes through this mount (and so through the
/// kernel's page cache): the cache never goes stale, so it is kept across opens. Writes reach
/// the filesystem as they come and `flush` has nothing to push, so the kernel is told not to
/// send one at each close (a round trip per file of an untar).
fn open_flags() -> FopenFlags {
    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
}

fn kind(k: FileType) -> fuser::FileType {
    match k {
        FileType::RegularFile => fuser::FileType::RegularFile,
        FileType::Directory => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::CharDevice => fuser::FileType::CharDevice,
        FileType::BlockDevice => fuser::FileType::BlockDevice,
        FileType::NamedPipe => fuser::FileType::NamedPipe,
        FileType::Socket => fuser::FileType::Socket,
    }
}

fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::new(0, t.nsecs.min(999_999_999));
    let r = if t.secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
    };
    r.and_then(|s| s.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
}

/// st_rdev (glibc's makedev encoding) → the kernel's 32-bit `new_encode_dev`, which is what
/// FUSE carries: minor low byte, major in bits 8..20, the rest of minor above.
fn fuse_rdev(rdev: u64) -> u32 {
    let major = libc::major(rdev);
    let minor = libc::minor(rdev);
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// Answers a getxattr/listxattr request: the size when asked for it (`size` 0), the bytes
/// when they fit, ERANGE when they do not.
fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    let Ok(len) = u32::try_from(data.len()) else {
        reply.error(Errno::E2BIG);
        return;
    };
    if size == 0 {
        reply.size(len);
    } else if len <= size {
        reply.data(data);
    } else {
        reply.error(Errno::ERANGE);
    }
}

impl fuser::Filesystem for Adapter {
    /// The last request of a mount: make everything written durable before the daemon exits,
    /// so `ferry umount` returns with the overlay complete.
    fn destroy(&mut self) {
        if self.writable {
            if let Err(e) = self.fs.fsync() {
                log::error!("flushing the filesystem at unmount: {e}");
            }
        }
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Ask for what helps a read-only tree; a kernel lacking one just ignores the request.
        // Always readdirplus (not READDIRPLUS_AUTO, which uses it only for the first batch of a
        // listing): attributes cost us one cached inode read, while every LOOKUP saved is a
        // round trip and a directory search.
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_MAX_PAGES,
        ] {
            if config.add_capabilities(flag).is_err() {
                log::debug!("kernel lacks {flag:?}");
            }
        }
        if !self.writable {
            self.no_open = config
                .add_capabilities(InitFlags::FUSE_NO_OPEN_SUPPORT)
                .is_ok();
            self.no_opendir = config
                .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
                .is_ok();
        }
        let _ = config.set_max_write(MAX_IO);
        if let Err(max) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(self.ino(parent), name.as_bytes()) {
            Ok(a) => reply.entry(&TTL, &self.file_attr(&a), Generation(0)),
            Err(e) => {
                if !matches!(e, Error::NotFound) {
                    log::warn!("lookup {name:?} in inode {}: {e}", self.ino(parent));
                }
                reply.error(errno(&e))
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(self.ino(ino)) {
            Ok(a) => reply.attr(&TTL, &self.stat_attr(&a)),
            Err(e) => {
                log::warn!("inode {}: {e}", self.ino(ino));
                reply.error(errno(&e))
            }
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(self.ino(ino)) {
            Ok(t) => reply.data(&t),
            Err(e) => {
                log::warn!("readlink inode {}: {e}", self.ino(ino));
                reply.error(errno(&e))
            }
        }
    }

    /// A read-only mount has nothing to do at open or close, so where the kernel supports it
    /// (FUSE_NO_OPEN_SUPPORT) the first open is answered ENOSYS: from then on the kernel
    /// opens files by itself, keeping their cache (FOPEN_KEEP_CACHE, its default then), and
    /// sends neither OPEN nor RELEASE. That is two of the three round trips per small file of a
    /// walk that reads (a cold tar of 45 000 files sent 126 000 requests).
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY && !self.writable {
            reply.error(Errno::EROFS);
            return;
        }
        if self.no_open {
            reply.error(Errno::ENOSYS);
            return;
        }
        if self.writable {
            self.fs.opened(self.ino(ino));
        }
        reply.opened(FileHandle(0), open_flags());
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
        if !self.writable {
            reply.ok();
            return;
        }
        Self::reply_empty("release", self.fs.released(self.ino(ino)), reply)
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
        let job = super::reads::Job {
            ino: self.ino(ino),
            offset,
            size: usize::try_from(size.min(MAX_IO)).unwrap_or_default(),
            reply,
        };
        let job = if job.size > super::reads::INLINE_READ {
            match self.workers.offer(job) {
                None => return,
                Some(j) => j,
            }
        } else {
            job
        };
        super::reads::answer(self.fs.as_ref(), job);
    }

    /// Listings are cached by the kernel and, as with files (see `open_flags`), kept across
    /// opens: without FOPEN_KEEP_CACHE each opendir drops the cached listing, and every walk of
    /// the tree asks the daemon again for every entry and its attributes.
    ///
    /// Read-only, directories are opened by the kernel itself as files are (see `open`;
    /// FUSE_NO_OPENDIR_SUPPORT), with these same flags as its default.
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir {
            reply.error(Errno::ENOSYS);
            return;
        }
        reply.opened(
            FileHandle(0),
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dir = self.ino(ino);
        let r = self.fs.readdir(dir, offset, &mut |e, next| {
            let name = listable(dir, &e.name);
            !reply.add(
                self.node(e.ino),
                next,
                kind(e.kind),
                OsStr::from_bytes(&name),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => {
                log::warn!("readdir inode {dir}: {e}");
                reply.error(errno(&e))
            }
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let dir = self.ino(ino);
        let mut budget = WALK_READAHEAD_REPLY;
        let mut files = Vec::new();
        let r = self.fs.readdir(dir, offset, &mut |e, next| {
            let (attr, ttl) = self.entry_attr(e.ino, e.kind);
            let name = listable(dir, &e.name);
            let full = reply.add(
                self.node(e.ino),
                next,
                OsStr::from_bytes(&name),
                &ttl,
                &attr,
                Generation(0),
            );
            // An entry that did not fit comes first in the next reply, and is named there.
            if !full && attr.kind == fuser::FileType::RegularFile && attr.size > 0 && budget > 0 {
                let n = attr.size.min(WALK_READAHEAD_FILE).min(budget);
                files.push((e.ino, n));
                budget = budget.saturating_sub(n);
            }
            !full
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => {
                log::warn!("readdir inode {dir}: {e}");
                reply.error(errno(&e))
            }
        }
        // After the reply, so the walk goes on while the hints are queued.
        self.fs.prefetch(&files);
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs_at(self.ino(ino)) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(errno(&e)),
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
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        writable_or_return!(self, reply);
        let changes = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(timestamp),
            mtime: mtime.map(timestamp),
        };
        match self.fs.setattr(self.ino(ino), &changes) {
            Ok(a) => reply.attr(&TTL, &self.stat_attr(&a)),
            Err(e) => {
                log_write_error("setattr", &e);
                reply.error(errno(&e))
            }
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        writable_or_return!(self, reply);
        let r = self.make(req, parent, name, mode, from_fuse_rdev(rdev));
        self.reply_entry("mknod", r, reply)
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        writable_or_return!(self, reply);
        let mode = (mode & 0o7777) | libc::S_IFDIR;
        let r = self.make(req, parent, name, mode, 0);
        self.reply_entry("mkdir", r, reply)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        writable_or_return!(self, reply);
        Self::reply_empty(
            "unlink",
            self.fs.unlink(self.ino(parent), name.as_bytes()),
            reply,
        )
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        writable_or_return!(self, reply);
        Self::reply_empty(
            "rmdir",
            self.fs.rmdir(self.ino(parent), name.as_bytes()),
            reply,
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        writable_or_return!(self, reply);
        let dir = self.ino(parent);
        let r = self
            .new_inode(req, dir, libc::S_IFLNK | 0o777, 0)
            .and_then(|new| {
                self.fs.symlink(
                    dir,
                    link_name.as_bytes(),
                    target.as_os_str().as_bytes(),
                    &new,
                )
            });
        self.reply_entry("symlink", r, reply)
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
        writable_or_return!(self, reply);
        let (from, to) = (self.ino(parent), self.ino(newparent));
        let known = RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE;
        let r = if !flags.difference(known).is_empty() {
            // RENAME_WHITEOUT and anything newer: no filesystem here makes whiteouts.
            Err(Error::NotSupported)
        } else {
            let f = crate::fs::RenameFlags {
                noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
                exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
            };
            self.fs
                .rename_with(from, name.as_bytes(), to, newname.as_bytes(), f)
        };
        Self::reply_empty("rename", r, reply)
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        writable_or_return!(self, reply);
        let r = self
            .fs
            .link(self.ino(ino), self.ino(newparent), newname.as_bytes());
        self.reply_entry("link", r, reply)
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        writable_or_return!(self, reply);
        let ino = self.ino(ino);
        match self.fs.write(ino, offset, data) {
            // OK: a FUSE write is at most max_write (1 MiB) bytes.
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => {
                log_write_error(&format!("write inode {ino} at {offset}"), &e);
                reply.error(errno(&e))
            }
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
        // Writes reach the filesystem as they come; close has nothing left to push. Files the
        // kernel opened by itself (see `open`) lack FOPEN_NOFLUSH: ENOSYS tells it once that
        // no flush is ever needed.
        if self.no_open {
            reply.error(Errno::ENOSYS);
            return;
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if !self.writable {
            reply.ok();
            return;
        }
        Self::reply_empty("fsync", self.fs.fsync(), reply)
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        fuser::Filesystem::fsync(self, req, ino, fh, datasync, reply)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        writable_or_return!(self, reply);
        match self.make(req, parent, name, mode, 0) {
            Ok(a) => {
                self.fs.opened(a.ino);
                reply.created(
                    &TTL,
                    &self.file_attr(&a),
                    Generation(0),
                    FileHandle(0),
                    open_flags(),
                )
            }
            Err(e) => {
                log_write_error("create", &e);
                reply.error(errno(&e))
            }
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        writable_or_return!(self, reply);
        let ino = self.ino(ino);
        let name = name.as_bytes();
        let r = (|| {
            if flags & (libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
                let exists = match self.fs.getxattr(ino, name) {
                    Ok(_) => true,
                    Err(Error::NoAttr) => false,
                    Err(e) => return Err(e),
                };
                if exists && flags & libc::XATTR_CREATE != 0 {
                    return Err(Error::Exists);
                }
                if !exists && flags & libc::XATTR_REPLACE != 0 {
                    return Err(Error::NoAttr);
                }
            }
            self.fs.setxattr(ino, name, value)
        })();
        Self::reply_empty("setxattr", r, reply)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        writable_or_return!(self, reply);
        Self::reply_empty(
            "removexattr",
            self.fs.removexattr(self.ino(ino), name.as_bytes()),
            reply,
        )
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(self.ino(ino), name.as_bytes()) {
            Ok(v) => reply_xattr(reply, size, &v),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(self.ino(ino)) {
            Ok(names) => {
                let mut list = Vec::new();
                for n in names {
                    list.extend_from_slice(&n);
                    list.push(0);
                }
                reply_xattr(reply, size, &list)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdev_round_trips_through_the_kernel_encoding() {
        for (maj, min) in [
            (8u32, 1u32),
            (1, 3),
            (259, 0),
            (4095, 255),
            (7, 300),
            (0, 1048575),
        ] {
            let enc = fuse_rdev(libc::makedev(maj, min));
            // The kernel's new_decode_dev.
            let (dmaj, dmin) = ((enc & 0xfff00) >> 8, (enc & 0xff) | ((enc >> 12) & 0xfff00));
            assert_eq!((dmaj, dmin), (maj, min));
        }
    }

    #[test]
    fn a_slash_in_a_name_is_escaped_not_fatal() {
        assert_eq!(&*listable(2, b"plain"), b"plain");
        assert_eq!(&*listable(2, b"a/b/"), br"a\x2fb\x2f");
    }

    #[test]
    fn times_before_and_after_the_epoch() {
        let t = system_time(Timestamp {
            secs: -5,
            nsecs: 250,
        });
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::new(4, 999_999_750)
        );
        let t = system_time(Timestamp {
            secs: 4_102_444_800,
            nsecs: 7,
        });
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(4_102_444_800, 7)
        );
    }
}
