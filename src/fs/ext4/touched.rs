//! Which inodes a set of changed blocks may have changed (`Filesystem::touched`), and which
//! blocks inodes own (`Filesystem::owned`): what lets `ferry diff OVERLAY` compare only what
//! an overlay holds instead of both whole trees.
//!
//! Why the inode records are enough. Every change the tree shows goes through an inode:
//! data written or truncated moves mtime/ctime/size/i_blocks; chmod, chown, link counts and
//! xattrs move ctime (ctime cannot be set from user space); a directory entry added, removed
//! or renamed moves the directory's mtime and ctime (and a rename the moved inode's ctime).
//! So the inodes whose records lie in the changed blocks hold every changed file and every
//! directory whose entries changed. That argument is then checked, not trusted: every
//! other changed block must be accounted for. It is fixed metadata (superblock copies,
//! descriptors, bitmaps: they decide nothing the tree shows once the inode records are
//! compared), a block of a hidden inode (journal, quota, orphan file, resize: no path names
//! them), free in the allocation map of either side (then no unchanged inode owns it: an
//! unchanged inode owns the same blocks on both sides as long as none of its mapping blocks
//! changed, and a changed mapping block is allocated on both sides), or a block one of the
//! touched inodes owns on either side (data, extent-tree or indirect blocks, htree nodes,
//! the xattr block). What is left (`Touched::residue`, less `owned`) is a block rewritten
//! behind an unchanged inode (a directory rehashed by e2fsck -D, data patched on the raw
//! device): the caller then compares everything.
//!
//! Refused (`Unsupported`) when the journal was replayed in memory or still needs replay (the
//! view then differs from the blocks) and with bigalloc (bitmaps count clusters).
// Guard rails (issue 16 item 7): descriptors and block maps are untrusted. Block numbers are
// below s_blocks_count (48 bits at most) and inode numbers below 2^32, so the saturating steps
// below never saturate; byte positions are block numbers times the block size, inside the
// device.

use super::inode::{Inode, FL_EXTENTS, FL_INLINE_DATA};
use super::superblock::Incompat;
use super::Ext4;
use crate::bytes::{le32, wide};
use crate::fs::ranges::{normalize, subtract};
use crate::fs::{Error, FileType, Result, Touched};
use std::collections::HashSet;
use std::ops::Range;

/// Reserved inodes (below s_first_ino) that no path names, beside the superblock's own
/// hidden inodes: bad blocks (1), old quota (3, 4), boot loader (5), undelete (6), resize
/// (7), journal (8), exclude (9), replica (10).
const RESERVED_HIDDEN: [u64; 9] = [1, 3, 4, 5, 6, 7, 8, 9, 10];

/// Superblock fields not kept by `Superblock`: s_usr_quota_inum, s_grp_quota_inum,
/// s_prj_quota_inum, s_orphan_file_inum.
/// i_block pointers straight to data in a block-mapped inode.
const DIRECT_BLOCKS: usize = 12;

const HIDDEN_INODE_FIELDS: [usize; 4] = [0x240, 0x244, 0x26c, 0x280];

/// The range of the one block `b`.
fn one(b: u64) -> Range<u64> {
    b..b.saturating_add(1)
}

/// Block ranges as byte ranges (blocks of `bs` bytes).
fn bytes_of(r: Range<u64>, bs: u64) -> Range<u64> {
    r.start.saturating_mul(bs)..r.end.saturating_mul(bs)
}

impl Ext4 {
    pub(super) fn touched_ranges(&self, ranges: &[Range<u64>]) -> Result<Touched> {
        if self.journal_replay().is_some() || self.sb.has_incompat(Incompat::RECOVER) {
            return Err(Error::Unsupported(
                "ext4: the journal was replayed in memory (or needs to be)".into(),
            ));
        }
        if self.sb.cluster_bits > 0 {
            return Err(Error::Unsupported(
                "ext4: bigalloc block bitmaps are not mapped".into(),
            ));
        }
        let bs = u64::from(self.block_size());
        let end = self.sb.blocks_count;
        // Changed blocks, whole blocks around partial ones.
        let blocks = normalize(
            ranges
                .iter()
                .map(|r| r.start.checked_div(bs).unwrap_or(0).min(end)..r.end.div_ceil(bs).min(end))
                .collect(),
        );
        let table = self.inode_table_blocks();
        let ipg = u64::from(self.sb.inodes_per_group);
        // s_inode_size is nonzero (the superblock's check).
        let per_block = bs.checked_div(u64::from(self.sb.inode_size)).unwrap_or(0);
        // The boot block before the first group (1 KiB blocks) belongs to no file.
        let mut meta = Vec::new();
        meta.push(0..u64::from(self.sb.first_data_block));
        let mut inodes = Vec::new();
        for g in 0..self.sb.group_count {
            let gd = self.group_desc_pub(g)?;
            let first = self.sb.group_first_block(g);
            let base_meta = self.base_meta_blocks(g).min(self.blocks_in_group(g));
            meta.push(first..first.saturating_add(base_meta));
            meta.push(one(gd.block_bitmap));
            meta.push(one(gd.inode_bitmap));
            let t = gd.inode_table..gd.inode_table.saturating_add(table);
            // The group's inodes follow inode number g * ipg (u32 × u32: no overflow).
            let group_base = u64::from(g).saturating_mul(ipg);
            let group_end = group_base.saturating_add(ipg);
            for b in crate::fs::ranges::intersect(&blocks, std::slice::from_ref(&t)) {
                for blk in b {
                    // blk lies in t.
                    let in_table = blk.saturating_sub(t.start).saturating_mul(per_block);
                    let base = group_base.saturating_add(in_table);
                    let last = base.saturating_add(per_block).min(group_end);
                    inodes.extend(base.saturating_add(1)..=last);
                }
            }
            meta.push(t);
        }
        if self.sb.has_incompat(super::superblock::Incompat::MMP) {
            let mut raw = [0u8; 8];
            self.dev
                .read_at(&mut raw, super::superblock::SUPERBLOCK_OFFSET + 0x168)?;
            let mmp = u64::from_le_bytes(raw);
            meta.push(mmp..mmp.saturating_add(1));
        }
        meta.extend(self.hidden_blocks()?);
        let mut rest = subtract(&blocks, &normalize(meta));
        // Free in this side's bitmap: only the groups the rest falls in are read.
        let mut free = Vec::new();
        let mut groups: Vec<u32> = rest
            .iter()
            // Normalized ranges are not empty.
            .flat_map(|r| {
                self.group_of_block(r.start)..=self.group_of_block(r.end.saturating_sub(1))
            })
            .collect();
        groups.dedup();
        for g in groups {
            let (_, map, _) = self.block_bitmap(g)?;
            let first = self.sb.group_first_block(g);
            // At most blocks_per_group, which the superblock check bounds by the bitmap's bits
            // (8 * block size, per cluster with bigalloc); clipped to the map all the same.
            let n = usize::try_from(self.blocks_in_group(g))
                .unwrap_or(usize::MAX)
                .min(map.len().saturating_mul(8));
            for i in 0..n {
                if map.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) == 0) {
                    free.push(one(first.saturating_add(wide(i))));
                }
            }
        }
        rest = subtract(&rest, &normalize(free));
        inodes.sort_unstable();
        inodes.dedup();
        Ok(Touched {
            inodes,
            residue: rest.into_iter().map(|r| bytes_of(r, bs)).collect(),
        })
    }

    /// Blocks of the inodes no path names (block numbers, unsorted). One that cannot be read
    /// is left out: its blocks then stay in the residue, which only makes the check stricter.
    fn hidden_blocks(&self) -> Result<Vec<Range<u64>>> {
        let mut sb = [0u8; super::superblock::SUPERBLOCK_SIZE];
        self.dev
            .read_at(&mut sb, super::superblock::SUPERBLOCK_OFFSET)?;
        let mut inos: Vec<u64> = RESERVED_HIDDEN
            .iter()
            .copied()
            .filter(|&i| i < u64::from(self.sb.first_ino))
            .collect();
        inos.extend(
            HIDDEN_INODE_FIELDS
                .iter()
                .map(|&at| u64::from(le32(&sb, at))),
        );
        inos.push(u64::from(self.sb.journal_inum));
        inos.retain(|&i| i != 0 && i <= u64::from(self.sb.inodes_count));
        inos.sort_unstable();
        inos.dedup();
        let mut out = Vec::new();
        for ino in inos {
            if let Ok(i) = self.inode(ino) {
                // Hidden inodes keep no link count (the journal has 1, quota files 1, the
                // resize inode 1): all of them are counted.
                self.blocks_of(&i, &mut out)?;
            }
        }
        Ok(out)
    }

    pub(super) fn owned_ranges(&self, inodes: &[u64]) -> Result<Vec<Range<u64>>> {
        let mut out = Vec::new();
        for &ino in inodes {
            // Free slots share the touched inode-table blocks; they own nothing.
            if !self.inode_in_use(ino).unwrap_or(false) {
                continue;
            }
            let Ok(i) = self.inode(ino) else { continue };
            if i.links == 0 {
                continue;
            }
            self.blocks_of(&i, &mut out)?;
        }
        let bs = u64::from(self.block_size());
        Ok(normalize(out)
            .into_iter()
            .map(|r| bytes_of(r, bs))
            .collect())
    }

    /// Pushes the block numbers `i` owns: its xattr block, extent-tree nodes and extents, or
    /// its indirect and data blocks. A mapping that cannot be read is an error: the caller
    /// then compares everything.
    fn blocks_of(&self, i: &Inode, out: &mut Vec<Range<u64>>) -> Result<()> {
        if i.file_acl != 0 {
            out.push(one(i.file_acl));
        }
        let xattr_sectors = if i.file_acl != 0 {
            u64::from(self.block_size() / 512)
        } else {
            0
        };
        let fast_symlink = i.kind == FileType::Symlink
            && i.flags & FL_EXTENTS == 0
            && i.blocks512 <= xattr_sectors;
        if i.flags & FL_INLINE_DATA != 0
            || fast_symlink
            || !matches!(
                i.kind,
                FileType::RegularFile | FileType::Directory | FileType::Symlink
            )
        {
            return Ok(());
        }
        if i.flags & FL_EXTENTS != 0 {
            let (exts, nodes) = self.extents_of(i)?;
            out.extend(nodes.into_iter().map(one));
            out.extend(
                exts.into_iter()
                    .map(|e| e.pblk..e.pblk.saturating_add(e.len)),
            );
            return Ok(());
        }
        // k < 15: the pointers of i_block.
        let ptr = |k: usize| u64::from(le32(&i.i_block, k.saturating_mul(4)));
        for k in 0..DIRECT_BLOCKS {
            let p = ptr(k);
            if p != 0 {
                self.block_offset(p, 1, "block map", i.ino)?;
                out.push(one(p));
            }
        }
        let mut seen = HashSet::new();
        for (k, level) in [(12usize, 1u32), (13, 2), (14, 3)] {
            self.indirect_blocks(i.ino, ptr(k), level, &mut seen, out)?;
        }
        Ok(())
    }

    /// An indirect block of `level` (1: it points at data) and everything under it; an
    /// indirect block met twice is damage (it would multiply the work).
    fn indirect_blocks(
        &self,
        ino: u64,
        blk: u64,
        level: u32,
        seen: &mut HashSet<u64>,
        out: &mut Vec<Range<u64>>,
    ) -> Result<()> {
        if blk == 0 {
            return Ok(());
        }
        if !seen.insert(blk) {
            return Err(Error::corrupt(
                "block map",
                ino,
                blk,
                "indirect block reached twice",
            ));
        }
        let b = self.meta_block(blk, "indirect block", ino)?;
        out.push(one(blk));
        for w in b.chunks_exact(4) {
            let p = u64::from(le32(w, 0));
            if p == 0 {
                continue;
            }
            if level == 1 {
                self.block_offset(p, 1, "block map", ino)?;
                out.push(one(p));
            } else {
                // level > 1 here.
                self.indirect_blocks(ino, p, level.saturating_sub(1), seen, out)?;
            }
        }
        Ok(())
    }
}
