//! ext2/3/4 reader (kernel Documentation/filesystems/ext4/). Read-only, over any `BlockDevice`.
//! Every block is read through `meta_block` (metadata, cached) or `read_run` (file data), both
//! of which check the block number against the filesystem size first.
//!
//! A filesystem that needs recovery is read through its replayed journal (`journal`).
//! With metadata_csum, every checksummed structure is verified when read (`checked_block`,
//! `inode`): a mismatch is an error on that object only (EIO), logged once, never a failed
//! open.

pub mod acl;
mod alloc;
pub mod blockmap;
pub mod casefold;
pub mod csum;
pub mod deleted;
pub mod dir;
mod dir_write;
mod dx_write;
pub mod extent;
mod extent_write;
mod filemap;
pub mod fscrypt;
pub mod group;
pub mod htree;
pub mod inline;
pub mod inode;
pub mod journal;
mod lookup;
mod ops;
mod orphan;
mod rw;
mod statfs;
pub mod superblock;
mod touched;
pub mod xattr;
mod xattr_write;

use crate::block::BlockDevice;
use crate::bytes::{le32, wide};
use crate::fs::{Attr, DirEntry, Error, FileType, Filesystem, FsInfo, Result, StatFs};
use group::GroupDesc;
use inode::Inode;
use lru::LruCache;
use parking_lot::Mutex;
use std::num::{NonZeroU64, NonZeroUsize};
use std::ops::Range;
use std::sync::Arc;
use superblock::Superblock;

/// The root directory's inode number (EXT4_ROOT_INO).
pub const ROOT_INO: u64 = 2;
/// Bytes of metadata blocks kept in memory: bounds RSS whatever the block size.
pub const METADATA_CACHE_BYTES: usize = 8 << 20;
/// Logical blocks a file can address (ext4_lblk_t is 32 bits).
pub const MAX_LOGICAL_BLOCKS: u64 = 1 << 32;
/// The kernel refuses symlink targets longer than PATH_MAX (including the NUL).
pub const MAX_SYMLINK_LEN: u64 = 4096;

/// Whether `dev` carries the ext2/3/4 superblock magic (everything else is checked by `open`).
pub fn probe(dev: &dyn BlockDevice) -> Result<bool> {
    let at = superblock::SUPERBLOCK_OFFSET + 0x38;
    let sb_end = superblock::SUPERBLOCK_OFFSET.saturating_add(wide(superblock::SUPERBLOCK_SIZE));
    if dev.len() < sb_end {
        return Ok(false);
    }
    let mut m = [0u8; 2];
    dev.read_at(&mut m, at)?;
    Ok(u16::from_le_bytes(m) == superblock::MAGIC)
}

/// What a run of logical blocks of a file holds, from `extent::map` or `blockmap::map`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// `len` blocks stored contiguously from physical block `pblk`.
    Data { pblk: u64, len: u64 },
    /// `len` blocks of an unwritten extent: allocated, read as zeros.
    Zero(u64),
    /// `len` blocks mapped nowhere (sparse): read as zeros.
    Hole(u64),
}

/// How to open a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Replay the journal in memory when the filesystem needs recovery (the default). Off, the
    /// tree is read as it is on disk, like `mount -o noload`.
    pub replay_journal: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            replay_journal: true,
        }
    }
}

/// An ext2, ext3 or ext4 filesystem.
pub struct Ext4 {
    dev: Arc<dyn BlockDevice>,
    sb: Superblock,
    cache: Mutex<LruCache<u64, Arc<[u8]>>>,
    replay: Option<journal::ReplayInfo>,
    /// Computed on first use: it reads every group descriptor.
    statfs: std::sync::OnceLock<StatFs>,
    /// Blocks whose checksum was verified, with what they were verified as (structure and
    /// owning inode, both part of the checksum), so that a cached block is checked once.
    verified: Mutex<LruCache<u64, (&'static str, u64)>>,
    /// Damage already logged: (structure, inode, block).
    reported: crate::fs::DamageLog,
    /// The writer's state; None when opened read-only.
    rw: Option<rw::RwState>,
}

impl Ext4 {
    /// Reads and validates the superblock and the root inode, replaying the journal in memory
    /// if the filesystem needs recovery.
    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<Self> {
        Self::open_with(dev, OpenOptions::default())
    }

    pub fn open_with(dev: Arc<dyn BlockDevice>, opts: OpenOptions) -> Result<Self> {
        let mut fs = Self::load(dev)?;
        if opts.replay_journal {
            // Like the kernel: superblock and group descriptors as on disk locate the
            // journal; everything after replay, the superblock included, is read anew.
            if let Some((view, info)) = journal::replay(&fs)? {
                fs = Self::load(view)?;
                fs.replay = Some(info);
            }
        } else if fs.sb.has_incompat(superblock::Incompat::RECOVER) {
            log::warn!("ext4: needs_recovery is set; showing the tree without journal replay");
        }
        let root = fs.inode(ROOT_INO)?;
        if root.kind != FileType::Directory {
            return Err(Error::corrupt("root inode", ROOT_INO, 0, "not a directory"));
        }
        Ok(fs)
    }

    /// What journal replay did at open; None when nothing was replayed.
    pub fn journal_replay(&self) -> Option<&journal::ReplayInfo> {
        self.replay.as_ref()
    }

    /// Superblock and geometry, without looking at the tree.
    fn load(dev: Arc<dyn BlockDevice>) -> Result<Self> {
        let mut buf = vec![0u8; superblock::SUPERBLOCK_SIZE];
        dev.read_at(&mut buf, superblock::SUPERBLOCK_OFFSET)?;
        let sb = Superblock::parse(&buf)?;
        let bs = u64::from(sb.block_size());
        let fs_bytes = sb.blocks_count.checked_mul(bs).ok_or_else(|| {
            Error::corrupt(
                "superblock",
                0,
                0,
                format!("{} blocks overflow", sb.blocks_count),
            )
        })?;
        if fs_bytes > dev.len() {
            log::warn!(
                "ext4: filesystem is {fs_bytes} bytes but the device only {}: truncated image?",
                dev.len()
            );
        }
        // u32 × u16: no overflow; at least one group (the superblock's check).
        let gdt_bytes = u64::from(sb.group_count).saturating_mul(u64::from(sb.desc_size));
        let last_desc_block = sb.descriptor_block(gdt_bytes.div_ceil(bs).saturating_sub(1));
        if last_desc_block >= sb.blocks_count {
            return Err(Error::corrupt(
                "superblock",
                0,
                0,
                format!(
                    "{} group descriptors do not fit the filesystem",
                    sb.group_count
                ),
            ));
        }
        // The block size is 1 KiB..64 KiB, so this is at least 128 entries.
        let entries = usize::try_from(bs)
            .ok()
            .and_then(|bs| METADATA_CACHE_BYTES.checked_div(bs))
            .and_then(NonZeroUsize::new)
            .unwrap_or(NonZeroUsize::MIN);
        Ok(Ext4 {
            dev,
            sb,
            cache: Mutex::new(LruCache::new(entries)),
            replay: None,
            statfs: std::sync::OnceLock::new(),
            verified: Mutex::new(LruCache::new(entries)),
            reported: crate::fs::DamageLog::new("ext4"),
            rw: None,
        })
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn block_size(&self) -> u32 {
        self.sb.block_size()
    }

    /// The block size as a length in memory (at most 64 KiB, so it fits any `usize`).
    pub fn block_size_usize(&self) -> usize {
        usize::try_from(self.block_size()).unwrap_or(usize::MAX)
    }

    /// The block size as a divisor (1024 << s_log_block_size, never zero).
    pub(crate) fn block_nz(&self) -> NonZeroU64 {
        NonZeroU64::new(u64::from(self.block_size())).unwrap_or(NonZeroU64::MIN)
    }

    /// Checks that `[blk, blk+count)` lies inside the filesystem; returns its byte offset.
    fn block_offset(&self, blk: u64, count: u64, what: &'static str, ino: u64) -> Result<u64> {
        match blk.checked_add(count) {
            // blk < blocks_count, whose size in bytes `open` checked fits a u64.
            Some(end) if end <= self.sb.blocks_count && blk != 0 => {
                Ok(blk.saturating_mul(u64::from(self.block_size())))
            }
            _ => Err(Error::corrupt(
                what,
                ino,
                blk,
                format!("block {blk} (+{count}) is outside the filesystem"),
            )
            .expected(
                format!("blocks 1..{}", self.sb.blocks_count),
                format!("{blk}..{}", blk.saturating_add(count)),
            )),
        }
    }

    /// One metadata block, through the LRU cache. Block 0 holds the boot sector and superblock,
    /// never a tree node, so it is refused like an out-of-range number.
    pub(crate) fn meta_block(&self, blk: u64, what: &'static str, ino: u64) -> Result<Arc<[u8]>> {
        if let Some(b) = self.pending_block(blk) {
            return Ok(b);
        }
        if let Some(b) = self.cache.lock().get(&blk) {
            return Ok(b.clone());
        }
        let off = self.block_offset(blk, 1, what, ino)?;
        let mut buf = vec![0u8; self.block_size_usize()];
        self.dev.read_at(&mut buf, off)?;
        let b: Arc<[u8]> = buf.into();
        self.cache.lock().put(blk, b.clone());
        Ok(b)
    }

    /// Logs damage once per object (FUSE asks about the same inode again and again); returns
    /// the error that reports it.
    fn damage(&self, what: &'static str, ino: u64, blk: u64, detail: String) -> Error {
        self.report(Error::corrupt(what, ino, blk, detail))
    }

    /// Logs `e` once per damaged object; returns it.
    fn report(&self, e: Error) -> Error {
        self.reported.report(e)
    }

    /// A metadata block verified once with `check` when metadata_csum is on (the checksum
    /// covers the owner `ino` for most structures, so a block is verified per owner). A
    /// mismatch is logged and is an error for this block only.
    pub(crate) fn checked_block(
        &self,
        blk: u64,
        what: &'static str,
        ino: u64,
        check: impl FnOnce(&[u8]) -> std::result::Result<(), String>,
    ) -> Result<Arc<[u8]>> {
        let b = self.meta_block(blk, what, ino)?;
        if !self.sb.metadata_csum || self.verified.lock().get(&blk) == Some(&(what, ino)) {
            return Ok(b);
        }
        match check(&b) {
            Ok(()) => {
                self.verified.lock().put(blk, (what, ino));
                Ok(b)
            }
            Err(d) => {
                let e = Error::corrupt(what, ino, blk, format!("checksum mismatch: {d}"));
                Err(self.report(e.at(blk.saturating_mul(u64::from(self.block_size())))))
            }
        }
    }

    /// The seed of an inode's own checksums (its extent blocks, directory blocks).
    pub(crate) fn inode_seed(&self, i: &Inode) -> u32 {
        // Inode numbers are checked against s_inodes_count, a u32.
        csum::inode_seed(self.sb.csum_seed, low32(i.ino), i.generation)
    }

    /// Where the descriptor of `group` lives: its block and the byte range in that block.
    fn desc_location(&self, group: u32) -> Result<(u64, Range<usize>)> {
        let bs = u64::from(self.block_size());
        let ds = u64::from(self.sb.desc_size);
        // u32 × u16: no overflow; the block size is nonzero.
        let pos = u64::from(group).saturating_mul(ds);
        let blk = self.sb.descriptor_block(pos.checked_div(bs).unwrap_or(0));
        // pos % bs < bs <= 64 KiB; desc_size is a power of two <= 1024 <= bs, so it fits.
        let range = slot_range(pos.checked_rem(bs), ds, bs).ok_or_else(|| {
            Error::corrupt(
                "group descriptors",
                0,
                blk,
                format!("descriptor {group} of {ds} bytes does not fit its block"),
            )
        })?;
        Ok((blk, range))
    }

    fn group_desc(&self, group: u32) -> Result<GroupDesc> {
        let bs = u64::from(self.block_size());
        let (blk, range) = self.desc_location(group)?;
        let block = self.meta_block(blk, "group descriptors", 0)?;
        let desc = block
            .get(range)
            .ok_or_else(|| Error::corrupt("group descriptors", 0, blk, "short descriptor block"))?;
        if let Some(kind) = self.sb.group_csum() {
            if !csum::group_desc_ok(desc, group, kind, &self.sb.uuid) {
                // Like the kernel on a read-only mount (ext4_check_descriptors), a descriptor
                // with a bad checksum is reported and still used: its inode table pointer is
                // range-checked below, and the inodes carry checksums of their own.
                let _ = self.damage(
                    "group descriptor",
                    0,
                    blk,
                    format!("group {group}: checksum mismatch; using it anyway"),
                );
            }
        }
        let gd = GroupDesc::parse(desc, group)?;
        // u32 × u16: no overflow.
        let table_blocks = u64::from(self.sb.inodes_per_group)
            .saturating_mul(u64::from(self.sb.inode_size))
            .div_ceil(bs);
        self.block_offset(gd.inode_table, table_blocks, "inode table", 0)?;
        Ok(gd)
    }

    /// Reads and parses inode `ino` (1-based, as directories and the API name them).
    pub fn inode(&self, ino: u64) -> Result<Inode> {
        let (blk, range) = self.inode_location(ino)?;
        let block = self.meta_block(blk, "inode table", ino)?;
        let slot = block
            .get(range.clone())
            .ok_or_else(|| Error::corrupt("inode", ino, blk, "short inode table block"))?;
        let offset = blk
            .saturating_mul(u64::from(self.block_size()))
            .saturating_add(wide(range.start));
        if self.sb.metadata_csum {
            // ino <= s_inodes_count, a u32.
            let seed = csum::inode_seed(self.sb.csum_seed, low32(ino), le32(slot, 0x64));
            match csum::inode_sums(seed, slot) {
                Some((computed, stored)) if computed == stored => {}
                sums => {
                    let e = Error::corrupt("inode", ino, blk, "checksum mismatch");
                    let e = match sums {
                        Some((c, s)) => e.expected(format!("{c:#x}"), format!("{s:#x}")),
                        None => e,
                    };
                    return Err(self.report(e.at(offset)));
                }
            }
        }
        Inode::parse(slot, ino, &self.sb).map_err(|e| e.in_block(blk).at(offset))
    }

    /// Where inode `ino` lives: its inode table block and the byte range of its slot there.
    pub(crate) fn inode_location(&self, ino: u64) -> Result<(u64, Range<usize>)> {
        if ino == 0 || ino > u64::from(self.sb.inodes_count) {
            return Err(Error::corrupt(
                "inode number",
                ino,
                0,
                format!("outside 1..={}", self.sb.inodes_count),
            ));
        }
        let ipg = u64::from(self.sb.inodes_per_group);
        // ino >= 1 (above); s_inodes_per_group is nonzero (the superblock's check) and
        // ino <= inodes_count <= group_count * ipg, so the group fits u32.
        let n = ino.saturating_sub(1);
        let (group, index) = n
            .checked_div(ipg)
            .and_then(|g| u32::try_from(g).ok())
            .zip(n.checked_rem(ipg))
            .ok_or_else(|| {
                Error::corrupt(
                    "superblock",
                    ino,
                    0,
                    format!("s_inodes_per_group {ipg} places no inode"),
                )
            })?;
        let gd = self.group_desc(group)?;
        let isz = u64::from(self.sb.inode_size);
        let bs = u64::from(self.block_size());
        // index < ipg (a u32) times a u16: no overflow. The table's blocks were checked
        // against the filesystem's size by group_desc.
        let pos = index.saturating_mul(isz);
        let blk = gd
            .inode_table
            .saturating_add(pos.checked_div(bs).unwrap_or(0));
        // The inode size is a power of two <= the block size, so the slot fits the block.
        let range = slot_range(pos.checked_rem(bs), isz, bs).ok_or_else(|| {
            Error::corrupt(
                "inode",
                ino,
                blk,
                format!("slot of {isz} bytes past its block"),
            )
        })?;
        Ok((blk, range))
    }

    /// Maps logical block `lblk` of `inode` through its extent tree or block map.
    fn map(&self, inode: &Inode, lblk: u64) -> Result<Run> {
        if inode.flags & inode::FL_INLINE_DATA != 0 {
            // Callers read inline inodes through `inline`; one reaching here is inconsistent.
            return Err(Error::corrupt(
                "inline data",
                inode.ino,
                0,
                "inline inode has no block map",
            ));
        }
        if inode.flags & inode::FL_EXTENTS != 0 {
            extent::map(self, inode, lblk)
        } else {
            blockmap::map(self, inode, lblk)
        }
    }

    /// Reads file bytes of `inode` at `off`; holes and unwritten extents read as zeros.
    fn read_data(&self, inode: &Inode, off: u64, buf: &mut [u8]) -> Result<usize> {
        if off >= inode.size {
            return Ok(0);
        }
        // The bytes to read: what is left of the file (off < size), at most buf.len().
        let left = inode.size.saturating_sub(off);
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        if inode.flags & inode::FL_INLINE_DATA != 0 {
            let data = inline::file_data(inode, &self.sb)?;
            let stored = data
                .get(usize::try_from(off).unwrap_or(usize::MAX)..)
                .unwrap_or(&[]);
            let k = stored.len().min(n);
            buf[..k].copy_from_slice(&stored[..k]);
            buf[k..n].fill(0);
            return Ok(n);
        }
        let bs = u64::from(self.block_size());
        let mut done = 0usize;
        while done < n {
            // off + done < size: no overflow; the block size is nonzero.
            let pos = off.saturating_add(wide(done));
            let lblk = pos.checked_div(bs).unwrap_or(0);
            let in_blk = pos.checked_rem(bs).unwrap_or(0);
            let run = self.map(inode, lblk)?;
            let (Run::Data { len, .. } | Run::Zero(len) | Run::Hole(len)) = run;
            let run_bytes = len.saturating_mul(bs).saturating_sub(in_blk);
            // At most n - done.
            let want = n.saturating_sub(done);
            let take = usize::try_from(run_bytes).map_or(want, |r| r.min(want));
            if take == 0 {
                return Err(Error::corrupt(
                    "block map",
                    inode.ino,
                    0,
                    format!("empty run at block {lblk}"),
                ));
            }
            // done + take <= n <= buf.len().
            let dst = &mut buf[done..][..take];
            match run {
                Run::Data { pblk, .. } => {
                    let nblk = in_blk.saturating_add(wide(take)).div_ceil(bs);
                    let at = self.block_offset(pblk, nblk, "file data", inode.ino)?;
                    // Inside the blocks block_offset checked.
                    self.dev.read_at(dst, at.saturating_add(in_blk))?;
                }
                Run::Zero(_) | Run::Hole(_) => dst.fill(0),
            }
            done = done.saturating_add(take);
        }
        Ok(n)
    }

    /// Calls `f(entry, offset, next_offset)` for each used entry of directory `dir` from byte
    /// position `start`; `f` returns false to stop. A damaged block (checksum or records) is
    /// an error, unless `damaged` is given: then the block is skipped and its error kept there
    /// (lookups find the names of the other blocks, as the kernel's do).
    fn walk_dir(
        &self,
        dir: &Inode,
        start: u64,
        mut damaged: Option<&mut Option<Error>>,
        f: &mut dyn FnMut(dir::RawEntry<'_>, u64, u64) -> Result<bool>,
    ) -> Result<()> {
        if dir.kind != FileType::Directory {
            return Err(Error::NotDir(dir.ino));
        }
        if dir.flags & inode::FL_INLINE_DATA != 0 {
            return self.walk_inline_dir(dir, start, f);
        }
        let bs = u64::from(self.block_size());
        // Logical block numbers are 32-bit in extent trees and (in practice) block maps, so a
        // larger size is damage; capping it keeps every byte position below 2^48.
        let blocks = dir.size.div_ceil(bs).min(MAX_LOGICAL_BLOCKS);
        let filetype = self.sb.has_incompat(superblock::Incompat::FILETYPE);
        let mut lblk = start.checked_div(bs).unwrap_or(0);
        while lblk < blocks {
            let run = self.map(dir, lblk)?;
            let (pblk, len) = match run {
                Run::Data { pblk, len } => (pblk, len),
                // Unwritten or missing directory blocks hold no entries.
                Run::Zero(len) | Run::Hole(len) => {
                    lblk = lblk.saturating_add(len);
                    continue;
                }
            };
            // lblk < blocks <= MAX_LOGICAL_BLOCKS: positions stay below 2^48.
            for k in 0..len.min(blocks.saturating_sub(lblk)) {
                let l = lblk.saturating_add(k);
                let base = l.saturating_mul(bs);
                let phys = pblk.checked_add(k).ok_or_else(|| {
                    Error::corrupt("directory", dir.ino, pblk, "block number overflows")
                })?;
                let walked = self
                    .dir_block(dir, l, phys)
                    .and_then(|block| walk_region(&block, filetype, dir.ino, phys, base, start, f));
                match (walked, damaged.as_deref_mut()) {
                    (Ok(true), _) => {}
                    (Ok(false), _) => return Ok(()),
                    (Err(e @ Error::Corrupt(_)), Some(slot)) => {
                        slot.get_or_insert(e);
                    }
                    (Err(e), _) => return Err(e),
                }
            }
            lblk = lblk.saturating_add(len);
        }
        Ok(())
    }

    /// `walk_dir` for an inline directory. It stores no "." and ".." records, so they are made
    /// up here as the kernel does, at positions 0 and 1; the records of the two regions follow
    /// at 2 + their offset in i_block's region, then 2 + 56 + their offset in "system.data".
    fn walk_inline_dir(
        &self,
        dir: &Inode,
        start: u64,
        f: &mut dyn FnMut(dir::RawEntry<'_>, u64, u64) -> Result<bool>,
    ) -> Result<()> {
        let (parent, regions) = inline::dir_regions(dir, &self.sb)?;
        let self_ino = u32::try_from(dir.ino).unwrap_or(0);
        for (pos, name, ino) in [(0u64, &b"."[..], self_ino), (1, &b".."[..], parent)] {
            if start <= pos {
                let e = dir::RawEntry {
                    offset: 0,
                    rec_len: 0,
                    ino,
                    name,
                    kind: Some(FileType::Directory),
                    tail: &[],
                };
                if !f(e, pos, pos.saturating_add(1))? {
                    return Ok(());
                }
            }
        }
        let filetype = self.sb.has_incompat(superblock::Incompat::FILETYPE);
        let mut base = 2u64;
        for region in regions {
            if region.is_empty() {
                continue;
            }
            if !walk_region(region, filetype, dir.ino, 0, base, start, f)? {
                return Ok(());
            }
            base = base.saturating_add(wide(region.len()));
        }
        Ok(())
    }

    /// st_blocks: i_blocks, plus for inline regular files the sectors of their size, as the
    /// kernel's ext4_file_getattr reports them so that tools do not take them for all-sparse.
    fn st_blocks(&self, i: &Inode) -> u64 {
        if i.kind == FileType::RegularFile && i.flags & inode::FL_INLINE_DATA != 0 {
            i.blocks512.saturating_add(i.size.div_ceil(512))
        } else {
            i.blocks512
        }
    }

    fn attr(&self, i: &Inode) -> Attr {
        Attr {
            ino: i.ino,
            kind: i.kind,
            mode: u32::from(i.mode),
            uid: i.uid,
            gid: i.gid,
            size: i.size,
            blocks: self.st_blocks(i),
            nlink: u32::from(i.links),
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            crtime: i.crtime,
            rdev: i.rdev(),
            blksize: self.block_size(),
        }
    }
}

impl Filesystem for Ext4 {
    fn root_ino(&self) -> u64 {
        ROOT_INO
    }

    fn info(&self) -> FsInfo {
        let bs = u64::from(self.block_size());
        let label_len = self
            .sb
            .volume_name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(16);
        FsInfo {
            kind: self.sb.kind(),
            uuid: self.sb.uuid,
            label: self.sb.volume_name[..label_len].to_vec(),
            block_size: self.block_size(),
            size_bytes: self.sb.blocks_count.saturating_mul(bs),
            free_bytes: self
                .sb_free()
                .map_or(self.sb.free_blocks_count, |f| f.0)
                .saturating_mul(bs),
        }
    }

    fn unused(&self) -> Result<Vec<std::ops::Range<u64>>> {
        self.unused_ranges()
    }

    fn touched(&self, ranges: &[std::ops::Range<u64>]) -> Result<crate::fs::Touched> {
        self.touched_ranges(ranges)
    }

    fn owned(&self, inodes: &[u64]) -> Result<Vec<std::ops::Range<u64>>> {
        self.owned_ranges(inodes)
    }

    fn statfs(&self) -> Result<StatFs> {
        let base = match self.statfs.get() {
            Some(s) => s.clone(),
            None => {
                let s = self.compute_statfs()?;
                self.statfs.get_or_init(|| s).clone()
            }
        };
        // Written to: the overhead stays, the free counts are the writer's.
        Ok(match self.sb_free() {
            Some((blocks, inodes)) => {
                // bavail <= bfree (compute_statfs).
                let reserve = base.bfree.saturating_sub(base.bavail);
                StatFs {
                    bfree: blocks,
                    bavail: blocks.saturating_sub(reserve),
                    ffree: inodes,
                    ..base
                }
            }
            None => base,
        })
    }

    fn getattr(&self, ino: u64) -> Result<Attr> {
        let i = self.inode(ino)?;
        let mut a = self.attr(&i);
        if i.kind == FileType::Symlink && i.flags & inode::FL_ENCRYPT != 0 {
            // st_size of an encrypted symlink is the length readlink returns
            // (fscrypt_symlink_getattr), here that of the no-key name.
            if let Ok(t) = self.symlink_target(&i) {
                a.size = wide(t.len());
            }
        }
        Ok(a)
    }

    fn lookup(&self, dir: u64, name: &[u8]) -> Result<Attr> {
        if name.len() > dir::MAX_NAME_LEN {
            return Err(Error::NameTooLong {
                max: dir::MAX_NAME_LEN,
            });
        }
        let d = self.inode(dir)?;
        match self.find(&d, name)? {
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
        let encrypted = d.flags & inode::FL_ENCRYPT != 0;
        let nokey_version = if encrypted {
            self.nokey_hash_version(&d)
        } else {
            None
        };
        self.walk_dir(&d, cookie, None, &mut |e, _, next| {
            let ino = u64::from(e.ino);
            let kind = match e.kind {
                Some(k) => k,
                // No (valid) file type byte: ext2 without filetype, or damage; ask the inode.
                None => self.inode(ino)?.kind,
            };
            let name = if encrypted {
                self.nokey_entry_name(&d, nokey_version, e.name, e.tail)
            } else {
                e.name.to_vec()
            };
            Ok(sink(DirEntry { ino, name, kind }, next))
        })
    }

    fn deleted_entries(&self, dir: u64) -> Result<Vec<crate::fs::DeletedEntry>> {
        Ext4::deleted_entries(self, dir)
    }

    fn removed_dir_entries(&self, dir: u64) -> Result<Vec<crate::fs::DeletedEntry>> {
        Ext4::removed_dir_entries(self, dir)
    }

    fn orphans(&self, dir: u64, errors: &mut Vec<String>) -> Result<Option<crate::fs::Orphans>> {
        Ok((dir == ROOT_INO).then(|| self.orphan_candidates(errors)))
    }

    fn read(&self, ino: u64, off: u64, buf: &mut [u8]) -> Result<usize> {
        let i = self.inode(ino)?;
        match i.kind {
            FileType::RegularFile => {}
            FileType::Directory => return Err(Error::IsDir(ino)),
            _ => {
                return Err(Error::Unsupported(format!(
                    "inode {ino} is not a regular file"
                )))
            }
        }
        if i.flags & inode::FL_ENCRYPT != 0 {
            return Err(Error::NoKey(ino));
        }
        self.read_data(&i, off, buf)
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let i = self.inode(ino)?;
        self.symlink_target(&i)
    }

    fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        self.list_xattrs(ino)
    }

    fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        self.get_xattr(ino, name)
    }

    fn write(&self, ino: u64, off: u64, data: &[u8]) -> Result<usize> {
        self.mutate(|| self.op_write(ino, off, data))
    }

    fn setattr(&self, ino: u64, changes: &crate::fs::SetAttr) -> Result<Attr> {
        self.mutate(|| self.op_setattr(ino, changes))?;
        self.getattr(ino)
    }

    fn create(&self, dir: u64, name: &[u8], new: &crate::fs::NewInode) -> Result<Attr> {
        let ino = self.mutate(|| self.op_create(dir, name, new, None))?;
        self.getattr(ino)
    }

    fn symlink(
        &self,
        dir: u64,
        name: &[u8],
        target: &[u8],
        new: &crate::fs::NewInode,
    ) -> Result<Attr> {
        let ino = self.mutate(|| self.op_create(dir, name, new, Some(target)))?;
        self.getattr(ino)
    }

    fn link(&self, ino: u64, dir: u64, name: &[u8]) -> Result<Attr> {
        self.mutate(|| self.op_link(ino, dir, name))?;
        self.getattr(ino)
    }

    fn unlink(&self, dir: u64, name: &[u8]) -> Result<()> {
        self.mutate(|| self.op_remove(dir, name, false))
    }

    fn rmdir(&self, dir: u64, name: &[u8]) -> Result<()> {
        self.mutate(|| self.op_remove(dir, name, true))
    }

    fn rename(&self, dir: u64, name: &[u8], new_dir: u64, new_name: &[u8]) -> Result<()> {
        self.rename_with(dir, name, new_dir, new_name, Default::default())
    }

    fn rename_with(
        &self,
        dir: u64,
        name: &[u8],
        new_dir: u64,
        new_name: &[u8],
        flags: crate::fs::RenameFlags,
    ) -> Result<()> {
        self.mutate(|| self.op_rename(dir, name, new_dir, new_name, flags))
    }

    fn setxattr(&self, ino: u64, name: &[u8], value: &[u8]) -> Result<()> {
        self.mutate(|| self.op_set_xattr(ino, name, Some(value)))
    }

    fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        self.mutate(|| self.op_set_xattr(ino, name, None))
    }

    fn fsync(&self) -> Result<()> {
        self.sync_device()
    }

    fn opened(&self, ino: u64) {
        self.file_opened(ino)
    }

    fn released(&self, ino: u64) -> Result<()> {
        self.file_released(ino)
    }
}

impl Ext4 {
    /// What readlink shows: the stored target, or for an encrypted symlink its no-key form.
    fn symlink_target(&self, i: &Inode) -> Result<Vec<u8>> {
        let ino = i.ino;
        let stored = self.symlink_stored(i)?;
        if i.flags & inode::FL_ENCRYPT != 0 {
            return fscrypt::symlink_target(&stored)
                .map_err(|d| Error::corrupt("encrypted symlink", ino, 0, d));
        }
        Ok(stored)
    }

    /// The bytes a symlink stores: `i_size` bytes of i_block (fast) or of its data.
    fn symlink_stored(&self, i: &Inode) -> Result<Vec<u8>> {
        let ino = i.ino;
        if i.kind != FileType::Symlink {
            return Err(Error::NotSymlink(ino));
        }
        if i.size == 0 || i.size >= MAX_SYMLINK_LEN {
            return Err(Error::corrupt(
                "symlink",
                ino,
                0,
                format!("length {}", i.size),
            ));
        }
        // size < 4096.
        let len = usize::try_from(i.size).unwrap_or(0);
        // A fast symlink keeps its target in i_block and has no blocks of its own (apart from
        // an xattr block), as ext4_inode_is_fast_symlink decides.
        let ea_blocks = if i.file_acl != 0 {
            u64::from(self.block_size() / 512)
        } else {
            0
        };
        if i.flags & inode::FL_INLINE_DATA == 0 && i.blocks512.saturating_sub(ea_blocks) == 0 {
            if len >= inode::I_BLOCK_LEN {
                return Err(Error::corrupt(
                    "symlink",
                    ino,
                    0,
                    format!("fast symlink of length {len}"),
                ));
            }
            return Ok(i.i_block[..len].to_vec());
        }
        let mut buf = vec![0u8; len];
        let n = self.read_data(i, 0, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// The low 32 bits of an inode number (numbers are at most s_inodes_count, a u32).
fn low32(ino: u64) -> u32 {
    let [a, b, c, d, ..] = ino.to_le_bytes();
    u32::from_le_bytes([a, b, c, d])
}

/// The range of the `len` bytes at `at` of a block of `bs` bytes (None past its end, or when
/// `at` is None).
fn slot_range(at: Option<u64>, len: u64, bs: u64) -> Option<Range<usize>> {
    let end = at?.checked_add(len).filter(|&e| e <= bs)?;
    Some(usize::try_from(at?).ok()?..usize::try_from(end).ok()?)
}

/// Calls `f` with each record of one directory block or inline region whose position (`base` +
/// its offset) is at or after `start`, with that position and the next one. False once `f` asks
/// to stop.
fn walk_region(
    region: &[u8],
    filetype: bool,
    ino: u64,
    phys: u64,
    base: u64,
    start: u64,
    f: &mut dyn FnMut(dir::RawEntry<'_>, u64, u64) -> Result<bool>,
) -> Result<bool> {
    let mut go_on = true;
    dir::for_each_entry(region, filetype, ino, phys, |e| {
        // Positions below 2^48 plus offsets inside a block: no overflow.
        let at = base.saturating_add(wide(e.offset));
        if at < start {
            return Ok(true);
        }
        let next = at.saturating_add(wide(e.rec_len));
        go_on = f(e, at, next)?;
        Ok(go_on)
    })?;
    Ok(go_on)
}
