//! The fuser adapter: FUSE requests translated onto one `fs::Filesystem`.
//!
//! Stateless: a FUSE node id *is* the filesystem's inode number, so there is no inode table to
//! grow and `forget` has nothing to do. The one exception is the root, which FUSE always calls
//! node 1; it swaps places with the filesystem's root inode (ext4's 2), so inode 1 (if a
//! damaged directory names it) stays reachable and the mapping stays a bijection.

use crate::fs::{Attr, FileType, Filesystem, FsError, Timestamp};
use fuser::{
    Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyXattr, Request,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may keep attributes and names: nothing changes under a read-only mount,
/// so a day (the kernel still drops entries under memory pressure).
const TTL: Duration = Duration::from_secs(24 * 3600);

/// The largest read and write the kernel is asked to send (it may cap it lower).
pub const MAX_IO: u32 = 1 << 20;

/// FUSE's name for the root node.
const FUSE_ROOT: u64 = 1;

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(super::errno(e))
}

pub struct Adapter {
    fs: Arc<dyn Filesystem>,
    root: u64,
}

impl Adapter {
    pub fn new(fs: Arc<dyn Filesystem>) -> Self {
        let root = fs.root_ino();
        Adapter { fs, root }
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
            // OK: permission bits are the low 12 bits, which fit.
            perm: (a.mode & 0o7777) as u16,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: fuse_rdev(a.rdev),
            blksize: a.blksize,
            flags: 0,
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
                if !matches!(e, FsError::NotFound) {
                    log::warn!("lookup {name:?} in inode {}: {e}", self.ino(parent));
                }
                reply.error(errno(&e))
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(self.ino(ino)) {
            Ok(a) => reply.attr(&TTL, &self.file_attr(&a)),
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

    fn open(&self, _req: &Request, _ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            reply.error(Errno::EROFS);
            return;
        }
        // Read-only: the page cache never goes stale, so keep it across opens.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
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
        let ino = self.ino(ino);
        let mut buf = vec![0u8; size.min(MAX_IO) as usize];
        let mut done = 0;
        // A filesystem may return short reads (at run boundaries); FUSE wants the whole
        // request except at end of file.
        while done < buf.len() {
            match self.fs.read(ino, offset + done as u64, &mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) => {
                    log::warn!("read inode {ino} at {}: {e}", offset + done as u64);
                    reply.error(errno(&e));
                    return;
                }
            }
        }
        reply.data(&buf[..done]);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR);
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
            !reply.add(
                self.node(e.ino),
                next,
                kind(e.kind),
                OsStr::from_bytes(&e.name),
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
        let r = self.fs.readdir(dir, offset, &mut |e, next| {
            let (attr, ttl) = self.entry_attr(e.ino, e.kind);
            !reply.add(
                self.node(e.ino),
                next,
                OsStr::from_bytes(&e.name),
                &ttl,
                &attr,
                Generation(0),
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

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs_at(self.ino(ino)) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(errno(&e)),
        }
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
