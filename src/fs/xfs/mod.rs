//! XFS reader (xfs_format.h of the kernel and xfsprogs; "XFS Algorithms & Data Structures"),
//! v4 and v5, read-only, over any `BlockDevice`. Inode numbers encode their AG, block and slot,
//! so lookups go straight to the inode; forks map logical blocks through extent lists or
//! bmbt trees (`bmap`); directories (`dir`) and attributes (`attr`) are read in every format.
//!
//! On v5 every metadata block is checked (CRC32c, magic, self address, owner, UUID) when
//! first read; a bad one is an error (EIO) for the object it belongs to, logged once, never a
//! failed open. A dirty log (a guest copied while running) is replayed in memory as the
//! kernel replays it at mount (`recover`), reading through a `replay_view::ReplayView`;
//! nothing is written to the source. With `OpenOptions { recovery: false }`, or when replay
//! is impossible, the tree is shown as it is on disk, with a warning, as
//! `mount -o ro,norecovery` shows it (`log`).

pub mod acl;
pub mod ag;
mod alloc_btree;
pub mod attr;
pub mod attr_leaf;
pub mod attr_sf;
pub mod bmap;
pub mod crc;
pub mod da_btree;
pub mod dir;
pub mod dir_data;
pub mod dir_leaf;
pub mod dir_sf;
pub mod inode;
mod intents;
pub mod log;
pub mod prefetch;
pub mod recover;
pub mod replay_view;
mod statfs;
pub mod superblock;
pub mod symlink;
mod touched;

use crate::block::BlockDevice;
use crate::bytes::{be64, wide};
use crate::fs::{Attr, DirEntry, Error, FileType, Filesystem, FsInfo, Result, StatFs};
use bmap::Extent;
use inode::Inode;
use lru::LruCache;
use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::sync::Arc;
use superblock::Superblock;

/// Bytes of metadata blocks kept in memory, whatever the block size.
pub const METADATA_CACHE_BYTES: usize = 8 << 20;
/// Extent lists kept in memory (per fork); lists are bounded by `bmap::MAX_EXTENTS`.
const EXTENT_CACHE: usize = 64;
/// Longest name in a directory entry (MAXNAMELEN - 1).
pub const MAX_NAME_LEN: usize = 255;

/// Whether `dev` starts with the XFS superblock magic (everything else is checked by `open`).
pub fn probe(dev: &dyn BlockDevice) -> Result<bool> {
    if dev.len() < wide(superblock::SIZE) {
        return Ok(false);
    }
    let mut m = [0u8; 4];
    dev.read_at(&mut m, 0)?;
    Ok(&m == superblock::MAGIC)
}

/// What a run of logical blocks of a fork holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// `len` blocks stored contiguously from linear block `linear`.
    Data { linear: u64, len: u64 },
    /// `len` blocks reading as zeros (unwritten extent or hole); u64::MAX past the last.
    Zero(u64),
}

/// A cached block: its bytes, the 512-byte address of its first block (the v5 self address)
/// and whether its checks passed already.
#[derive(Clone)]
struct Cached {
    data: Arc<[u8]>,
    daddr: u64,
    verified: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// A filesystem block by its linear number.
    Block(u64),
    /// A multi-block directory or attribute block of a fork: (inode, attr fork, first block).
    Fork(u64, bool, u64),
}

/// Extent lists by (inode, attribute fork).
type ExtentCache = LruCache<(u64, bool), Arc<Vec<Extent>>>;

/// How to open an XFS filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Replay a dirty log in memory (the default). Off, the tree is read as it is on disk,
    /// like `mount -o norecovery`.
    pub recovery: bool,
    /// After replay, finish the file mapping updates (BUIs) the log left unfinished, as the
    /// kernel does at mount (the default; `intents`). Off, the view is the replayed log
    /// alone, which tests use to show what finishing changes.
    pub finish_intents: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            recovery: true,
            finish_intents: true,
        }
    }
}

/// An XFS filesystem.
pub struct Xfs {
    dev: Arc<dyn BlockDevice>,
    sb: Superblock,
    cache: Mutex<LruCache<Key, Cached>>,
    extent_cache: Mutex<ExtentCache>,
    /// Inode clusters named to the device recently (`prefetch`).
    hinted: Mutex<prefetch::Hinted>,
    reported: crate::fs::DamageLog,
    statfs: std::sync::OnceLock<StatFs>,
    log: log::LogState,
    replay: Option<recover::ReplayInfo>,
    /// Forks and inode counts as the unfinished file mapping updates of a replayed log
    /// leave them (empty otherwise).
    finished: intents::Finished,
}

impl Xfs {
    /// Reads and validates the superblock, replays a dirty log in memory and checks the root
    /// inode.
    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<Self> {
        Self::open_with(dev, OpenOptions::default())
    }

    pub fn open_with(dev: Arc<dyn BlockDevice>, opts: OpenOptions) -> Result<Self> {
        let mut fs = Self::load(dev.clone())?;
        match fs.scan_log() {
            log::Scan::Clean => {}
            log::Scan::Unreadable(why) => fs.log = log::LogState::Dirty(why),
            log::Scan::Dirty { why, .. } if !opts.recovery => {
                fs.log = log::LogState::Dirty(format!("{why}; not replayed (norecovery)"));
            }
            log::Scan::Dirty { head, tail, why } => match fs.replayed(dev, head, tail, opts) {
                Ok(r) => return Ok(r),
                Err(e) => fs.log = log::LogState::Dirty(format!("{why}; replay failed: {e}")),
            },
        }
        if let log::LogState::Dirty(why) = &fs.log {
            ::log::warn!(
                "xfs: the log is dirty ({why}); showing the tree as on disk without log recovery \
                 (as mount -o norecovery), recent changes may be missing"
            );
        }
        fs.check_root()?;
        Ok(fs)
    }

    /// The filesystem after log recovery, read through the replayed sectors (superblock
    /// included, as the kernel re-reads it after recovery).
    fn replayed(
        &self,
        dev: Arc<dyn BlockDevice>,
        head: u64,
        tail: u64,
        opts: OpenOptions,
    ) -> Result<Self> {
        let r = recover::replay(self, head, tail)?;
        let view: Arc<dyn BlockDevice> = Arc::new(replay_view::ReplayView::new(dev, r.sectors));
        let mut fs = Self::load(view)?;
        let mut info = r.info;
        if opts.finish_intents {
            info.finished_bmaps = fs.finish_bmaps(&info.unfinished_bmaps);
        } else if !info.unfinished_bmaps.is_empty() {
            ::log::warn!(
                "xfs: {} unfinished file mapping updates (BUI) in the log not finished \
                 (finish_intents off): the view lacks them",
                info.unfinished_bmaps.len()
            );
        }
        fs.check_root()?;
        if let Some(why) = &info.stopped {
            ::log::warn!(
                "xfs: log replay ended before the head ({why}); {} transactions replayed",
                info.transactions
            );
        }
        ::log::info!(
            "xfs: replayed {} transactions of the dirty log in memory ({} buffers, {} inodes, \
             {} inode chunks; {} sectors changed; {} of {} unfinished file mapping updates \
             finished)",
            info.transactions,
            info.buffers,
            info.inodes,
            info.icreates,
            info.sectors,
            info.finished_bmaps,
            info.unfinished_bmaps.len()
        );
        fs.log = log::LogState::Replayed {
            transactions: info.transactions,
        };
        fs.replay = Some(info);
        Ok(fs)
    }

    /// Reads and validates the superblock.
    fn load(dev: Arc<dyn BlockDevice>) -> Result<Self> {
        // The superblock's CRC covers its whole sector, up to 32 KiB (XFS_MAX_SECTORSIZE).
        let len = usize::try_from(dev.len()).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; len.min(32 << 10)];
        dev.read_at(&mut buf, 0)?;
        let sb = Superblock::parse(&buf)?;
        let bs = u64::from(sb.blocksize);
        let fs_bytes = sb.dblocks.saturating_mul(bs);
        if fs_bytes > dev.len() {
            ::log::warn!(
                "xfs: filesystem is {fs_bytes} bytes but the device only {}: truncated image?",
                dev.len()
            );
        }
        // The block size is not zero (Superblock::check_geometry).
        let per_block =
            usize::try_from(bs).map_or(0, |bs| METADATA_CACHE_BYTES.checked_div(bs).unwrap_or(0));
        let entries = NonZeroUsize::new(per_block).unwrap_or(NonZeroUsize::MIN);
        Ok(Xfs {
            dev,
            sb,
            cache: Mutex::new(LruCache::new(entries)),
            extent_cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(EXTENT_CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
            hinted: Mutex::new(prefetch::hinted()),
            reported: crate::fs::DamageLog::new("xfs"),
            statfs: std::sync::OnceLock::new(),
            log: log::LogState::Clean,
            replay: None,
            finished: intents::Finished::default(),
        })
    }

    fn check_root(&self) -> Result<()> {
        let root = self.inode(self.sb.rootino)?;
        if root.kind != FileType::Directory {
            return Err(Error::corrupt(
                "xfs root inode",
                self.sb.rootino,
                0,
                "not a directory",
            ));
        }
        Ok(())
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Whether the log was clean at open, replayed, or dirty and not replayed (why).
    pub fn log(&self) -> &log::LogState {
        &self.log
    }

    /// What log recovery did, when it ran.
    pub fn replay_info(&self) -> Option<&recover::ReplayInfo> {
        self.replay.as_ref()
    }

    /// A filesystem block number (AG number above `agblklog` bits, block in the AG below) as
    /// a linear block number, checking that `count` blocks from it lie inside one AG and the
    /// filesystem.
    fn fsb_to_linear(&self, fsb: u64, count: u64, what: &'static str, ino: u64) -> Result<u64> {
        let agno = fsb >> self.sb.agblklog;
        // agblklog <= 32 (Superblock::check_geometry).
        let agbno = fsb & (1u64 << self.sb.agblklog).saturating_sub(1);
        let ag_ok = agno < u64::from(self.sb.agcount)
            && agbno
                .checked_add(count)
                .is_some_and(|e| e <= u64::from(self.sb.agblocks));
        let linear = agno
            .checked_mul(u64::from(self.sb.agblocks))
            .and_then(|l| l.checked_add(agbno))
            .filter(|l| {
                ag_ok && count != 0 && l.checked_add(count).is_some_and(|e| e <= self.sb.dblocks)
            });
        let Some(linear) = linear else {
            return Err(self.damage(
                what,
                ino,
                fsb,
                format!("block {fsb:#x} (+{count}) is outside the filesystem"),
            ));
        };
        Ok(linear)
    }

    /// Logs damage once per object; returns the error that reports it.
    fn damage(&self, what: &'static str, ino: u64, blk: u64, detail: String) -> Error {
        self.report(Error::corrupt(what, ino, blk, detail))
    }

    /// Logs `e` once per damaged object (FUSE asks about the same inode again and again);
    /// returns it.
    fn report(&self, e: Error) -> Error {
        self.reported.report(e)
    }

    fn read_linear(&self, linear: u64, nblocks: u64) -> Result<Vec<u8>> {
        let bs = u64::from(self.sb.blocksize);
        // Callers ask for at most a 64 KiB directory block, inside the filesystem
        // (fsb_to_linear); a forged block count past 2^64 bytes is damage.
        let len = nblocks
            .checked_mul(bs)
            .and_then(|n| usize::try_from(n).ok());
        let at = linear.checked_mul(bs);
        let (Some(len), Some(at)) = (len, at) else {
            return Err(self.damage(
                "xfs block",
                0,
                linear,
                format!("{nblocks} blocks past the byte range"),
            ));
        };
        let mut buf = vec![0u8; len];
        self.dev.read_at(&mut buf, at)?;
        Ok(buf)
    }

    /// One filesystem block through the cache, verified once by `check` (its error becomes
    /// damage of `what` for this object).
    fn checked_block(
        &self,
        linear: u64,
        what: &'static str,
        ino: u64,
        check: impl FnOnce(&[u8]) -> std::result::Result<(), String>,
    ) -> Result<Arc<[u8]>> {
        let key = Key::Block(linear);
        let cached = self.cache.lock().get(&key).cloned();
        let c = match cached {
            Some(c) => c,
            None => {
                let data: Arc<[u8]> = self.read_linear(linear, 1)?.into();
                let c = Cached {
                    data,
                    daddr: self.sb.daddr(linear),
                    verified: false,
                };
                self.cache.lock().put(key, c.clone());
                c
            }
        };
        if !c.verified {
            let at = linear.saturating_mul(u64::from(self.sb.blocksize));
            check(&c.data).map_err(|d| self.report(Error::corrupt(what, ino, linear, d).at(at)))?;
            if let Some(e) = self.cache.lock().get_mut(&key) {
                e.verified = true;
            }
        }
        Ok(c.data)
    }

    /// Inode `ino`: its AG, block and slot come from the number itself.
    pub fn inode(&self, ino: u64) -> Result<Inode> {
        let sb = &self.sb;
        // inopblog <= 7 (Superblock::check_geometry).
        let slot = ino & (1u64 << sb.inopblog).saturating_sub(1);
        let fsb = ino >> sb.inopblog;
        if fsb >> sb.agblklog >= u64::from(sb.agcount) || (fsb >> sb.agblklog) >> 32 != 0 {
            return Err(Error::corrupt(
                "xfs inode number",
                ino,
                0,
                format!("AG {} of {}", fsb >> sb.agblklog, sb.agcount),
            ));
        }
        let linear = self.fsb_to_linear(fsb, 1, "xfs inode number", ino)?;
        let block = self.checked_block(linear, "xfs inode block", ino, |_| Ok(()))?;
        let isz = u64::from(sb.inodesize);
        let offset = linear
            .saturating_mul(u64::from(sb.blocksize))
            .saturating_add(slot.saturating_mul(isz));
        // slot < inopblock, so the slot lies inside the block.
        let raw = usize::try_from(slot)
            .ok()
            .and_then(|s| block.chunks_exact(usize::from(sb.inodesize)).nth(s))
            .ok_or_else(|| self.damage("xfs inode number", ino, linear, format!("slot {slot}")))?;
        let mut ip =
            Inode::parse(raw, ino, sb).map_err(|e| self.report(e.in_block(linear).at(offset)))?;
        self.finished.adjust(&mut ip);
        Ok(ip)
    }

    /// Whether inode `ino` is in use, asked quietly (forensics: a removed entry's inode may
    /// be free, its chunk freed and reused for data): its core has the inode magic, a mode
    /// (xfs_ifree zeroes it) and, on v5, its own number.
    fn inode_in_use(&self, ino: u64) -> bool {
        let sb = &self.sb;
        if !sb.valid_ino(ino) {
            return false;
        }
        let fsb = ino >> sb.inopblog;
        let Ok(linear) = self.fsb_to_linear(fsb, 1, "xfs inode number", ino) else {
            return false;
        };
        let Ok(block) = self.checked_block(linear, "xfs inode block", ino, |_| Ok(())) else {
            return false;
        };
        // The slot is below inopblock, so it lies inside the block.
        let slot = ino & (1u64 << sb.inopblog).saturating_sub(1);
        let core = usize::try_from(slot)
            .ok()
            .and_then(|s| block.chunks_exact(usize::from(sb.inodesize)).nth(s));
        let Some(core) = core else {
            return false;
        };
        crate::bytes::be16(core, 0) == inode::MAGIC
            && crate::bytes::be16(core, 2) != 0
            && (!sb.is_v5() || crate::bytes::be64(core, inode::V3_INO) == ino)
    }

    /// Maps logical block `lblk` of a fork.
    fn map(&self, ip: &Inode, attr: bool, lblk: u64) -> Result<Run> {
        let list = self.extents(ip, attr)?;
        Ok(match bmap::find(&list, lblk) {
            // find: e.off <= lblk < e.off + e.len, and a hole's next extent starts past lblk.
            Ok(e) => {
                let skip = lblk.saturating_sub(e.off);
                let len = e.len.saturating_sub(skip);
                if e.unwritten {
                    Run::Zero(len)
                } else {
                    let what = "xfs extent";
                    let linear = self.fsb_to_linear(e.start, e.len, what, ip.ino)?;
                    Run::Data {
                        linear: linear.saturating_add(skip),
                        len,
                    }
                }
            }
            Err(Some(next)) => Run::Zero(next.saturating_sub(lblk)),
            Err(None) => Run::Zero(u64::MAX),
        })
    }

    /// Reads file bytes at `off`; holes and unwritten extents read as zeros.
    fn read_data(&self, ip: &Inode, off: u64, buf: &mut [u8]) -> Result<usize> {
        if off >= ip.size {
            return Ok(0);
        }
        let bs = u64::from(self.sb.blocksize);
        // off < size: at most buf.len() bytes.
        let n =
            usize::try_from(ip.size.saturating_sub(off)).map_or(buf.len(), |r| r.min(buf.len()));
        let mut done = 0;
        while done < n {
            // Below the size (<= i64::MAX): no overflow.
            let pos = off.saturating_add(wide(done));
            // The block size is not zero (Superblock::check_geometry).
            let lblk = pos.checked_div(bs).unwrap_or(0);
            let in_blk = pos.checked_rem(bs).unwrap_or(0);
            let run = self.map(ip, false, lblk)?;
            let (Run::Data { len, .. } | Run::Zero(len)) = run;
            let run_bytes = len.saturating_mul(bs).saturating_sub(in_blk);
            let left = n.saturating_sub(done);
            let take = usize::try_from(run_bytes).map_or(left, |r| r.min(left));
            // done + take <= n <= buf.len().
            let Some(dst) = buf.get_mut(done..).and_then(|b| b.get_mut(..take)) else {
                break;
            };
            match run {
                Run::Data { linear, .. } => {
                    // linear is inside the filesystem (fsb_to_linear); a forged size
                    // past 2^64 bytes is damage.
                    let at = linear.checked_mul(bs).and_then(|a| a.checked_add(in_blk));
                    let at = at.ok_or_else(|| {
                        self.damage("xfs extent", ip.ino, linear, "block past 2^64 bytes".into())
                    })?;
                    self.dev.read_at(dst, at)?;
                }
                Run::Zero(_) => dst.fill(0),
            }
            done = done.saturating_add(take);
        }
        Ok(done)
    }

    /// `nfsb` blocks of a fork from logical block `lblk` (one directory or attribute block),
    /// which must all be mapped, verified once by `check(bytes, daddr)`.
    fn fork_block(
        &self,
        ip: &Inode,
        attr: bool,
        lblk: u64,
        nfsb: u64,
        what: &'static str,
        check: impl FnOnce(&[u8], u64) -> std::result::Result<(), String>,
    ) -> Result<Arc<[u8]>> {
        let key = Key::Fork(ip.ino, attr, lblk);
        let cached = self.cache.lock().get(&key).cloned();
        let c = match cached {
            Some(c) => c,
            None => {
                let mut data = Vec::new();
                let mut daddr = None;
                let mut at = lblk;
                let end = lblk
                    .checked_add(nfsb)
                    .ok_or_else(|| self.damage(what, ip.ino, lblk, "block overflows".into()))?;
                while at < end {
                    match self.map(ip, attr, at)? {
                        Run::Data { linear, len } => {
                            // at < end; the run is at least a block.
                            let take = len.min(end.saturating_sub(at));
                            daddr.get_or_insert(self.sb.daddr(linear));
                            data.extend(self.read_linear(linear, take)?);
                            at = at.saturating_add(take);
                        }
                        Run::Zero(_) => {
                            return Err(self.damage(
                                what,
                                ip.ino,
                                at,
                                format!("logical block {at} is not mapped"),
                            ))
                        }
                    }
                }
                let c = Cached {
                    data: data.into(),
                    daddr: daddr.unwrap_or(0),
                    verified: false,
                };
                self.cache.lock().put(key, c.clone());
                c
            }
        };
        if !c.verified {
            check(&c.data, c.daddr).map_err(|d| self.damage(what, ip.ino, lblk, d))?;
            if let Some(e) = self.cache.lock().get_mut(&key) {
                e.verified = true;
            }
        }
        Ok(c.data)
    }

    /// The v5 self-describing header checks shared by directory, da-btree, attribute,
    /// symlink and remote value blocks: CRC at `crc_off`, self address at `blkno_off`, UUID
    /// at `uuid_off`, owner at `owner_off`.
    fn v5_header(
        &self,
        b: &[u8],
        daddr: u64,
        owner: u64,
        [crc_off, blkno_off, uuid_off, owner_off]: [usize; 4],
    ) -> std::result::Result<(), String> {
        if !crc::verify(b, crc_off) {
            return Err("CRC32c mismatch".into());
        }
        if be64(b, blkno_off) != daddr {
            return Err(format!(
                "header says sector {}, read from {daddr}",
                be64(b, blkno_off)
            ));
        }
        if b.get(uuid_off..).and_then(|u| u.get(..16)) != Some(&self.sb.meta_uuid[..]) {
            return Err("filesystem UUID differs".into());
        }
        if be64(b, owner_off) != owner {
            return Err(format!("owned by inode {}", be64(b, owner_off)));
        }
        Ok(())
    }

    fn attr(&self, i: &Inode) -> Attr {
        Attr {
            ino: i.ino,
            kind: i.kind,
            mode: u32::from(i.mode),
            uid: i.uid,
            gid: i.gid,
            size: i.size,
            blocks: i.nblocks.saturating_mul(u64::from(self.sb.blocksize) / 512),
            nlink: i.nlink,
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            crtime: i.crtime,
            rdev: i.rdev(),
            // xfs_stat_blksize: the page size or the block size if larger.
            blksize: self.sb.blocksize.max(4096),
        }
    }
}

impl Filesystem for Xfs {
    fn root_ino(&self) -> u64 {
        self.sb.rootino
    }

    fn info(&self) -> FsInfo {
        let bs = u64::from(self.sb.blocksize);
        FsInfo {
            kind: "xfs",
            uuid: self.sb.uuid,
            label: self.sb.label().to_vec(),
            block_size: self.sb.blocksize,
            size_bytes: self.sb.dblocks.saturating_mul(bs),
            free_bytes: self.sb.fdblocks.saturating_mul(bs),
        }
    }

    fn unused(&self) -> Result<Vec<std::ops::Range<u64>>> {
        self.unused_ranges()
    }

    fn deleted_entries(&self, dir: u64) -> Result<Vec<crate::fs::DeletedEntry>> {
        let d = self.inode(dir)?;
        Ok(self
            .dir_deleted(&d)?
            .into_iter()
            .map(|s| crate::fs::DeletedEntry {
                reallocated: s.ino != 0 && self.inode_in_use(s.ino),
                stale: false,
                ino: s.ino,
                name: s.name,
                kind: dir::ftype_kind(s.ftype),
            })
            .collect())
    }

    fn touched(&self, ranges: &[std::ops::Range<u64>]) -> Result<crate::fs::Touched> {
        self.touched_ranges(ranges)
    }

    fn owned(&self, inodes: &[u64]) -> Result<Vec<std::ops::Range<u64>>> {
        self.owned_ranges(inodes)
    }

    fn statfs(&self) -> Result<StatFs> {
        if let Some(s) = self.statfs.get() {
            return Ok(s.clone());
        }
        let s = self.compute_statfs()?;
        Ok(self.statfs.get_or_init(|| s).clone())
    }

    fn getattr(&self, ino: u64) -> Result<Attr> {
        Ok(self.attr(&self.inode(ino)?))
    }

    fn lookup(&self, dir: u64, name: &[u8]) -> Result<Attr> {
        if name.len() > MAX_NAME_LEN {
            return Err(Error::NameTooLong { max: MAX_NAME_LEN });
        }
        let d = self.inode(dir)?;
        match self.dir_lookup(&d, name)? {
            Some(ino) => self.getattr(ino),
            None => Err(Error::NotFound),
        }
    }

    fn readdir(
        &self,
        dir: u64,
        cookie: u64,
        sink: &mut dyn FnMut(DirEntry, u64) -> bool,
    ) -> Result<()> {
        let d = self.inode(dir)?;
        self.dir_walk(&d, cookie, &mut |e, next| {
            let kind = match e.kind {
                Some(k) => k,
                // No file type in the entry (v4 without ftype): ask the inode.
                None => self.inode(e.ino)?.kind,
            };
            Ok(sink(
                DirEntry {
                    ino: e.ino,
                    name: e.name.to_vec(),
                    kind,
                },
                next,
            ))
        })
    }

    fn read(&self, ino: u64, off: u64, buf: &mut [u8]) -> Result<usize> {
        let i = self.inode(ino)?;
        match i.kind {
            FileType::RegularFile => self.read_data(&i, off, buf),
            FileType::Directory => Err(Error::IsDir(ino)),
            _ => Err(Error::Unsupported(format!(
                "inode {ino} is not a regular file"
            ))),
        }
    }

    fn prefetch(&self, files: &[(u64, u64)]) {
        self.prefetch_data(files);
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let i = self.inode(ino)?;
        self.symlink_target(&i)
    }

    fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let i = self.inode(ino)?;
        self.list_xattrs(&i)
    }

    fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let i = self.inode(ino)?;
        self.get_xattr(&i, name)
    }
}
