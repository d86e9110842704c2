//! Which inodes a set of changed bytes may have changed (`Filesystem::touched`), and which
//! blocks inodes own (`Filesystem::owned`), for `ferry diff OVERLAY` on XFS (RHEL guests).
//!
//! The argument is ext4's (see `fs::ext4::touched`): every change a reader sees goes through
//! an inode's core or forks (times, sizes, extent lists, directory entries), so the inodes
//! whose records lie in the changed blocks hold every changed file. XFS v5 metadata blocks
//! say what they are and where they belong (magic, their own disk address, their owner),
//! which is how each changed block is classified on this side, without walking the btrees:
//! - an inode cluster block: its slots whose magic and `di_ino` match their place are touched;
//! - a bmbt block: its owner inode is touched (and the block is its);
//! - another AG btree block (free space by block and by size, inodes, free inodes, reverse
//!   map, reference counts), the AG headers, the internal log, or a block of the quota or
//!   realtime inodes: metadata, which decides nothing the tree shows once the inodes are
//!   compared;
//! - free in the free-space btree.
//!
//! What is left must be owned by a touched inode on one side (`owned`: its forks' extents),
//! which the caller checks. v4 filesystems (no self-describing blocks), a log replayed in
//! memory (the view is not the blocks) and realtime devices are refused (`Unsupported`): the
//! caller then compares everything.

use super::Xfs;
use crate::bytes::{be16, be32, be64, wide};
use crate::fs::ranges::{normalize, subtract};
use crate::fs::{Error, Result, Touched};
use std::ops::Range;

/// Sectors at the start of each AG: superblock, AGF, AGI, AGFL.
const AG_HEADER_SECTORS: u64 = 4;
/// v5 short-form (AG) btree block magics: bnobt, cntbt, inobt, finobt, rmapbt, refcountbt.
const AG_BTREE_MAGICS: [u32; 6] = [
    0x4142_3342,
    0x4142_3343,
    0x4941_4233,
    0x4649_4233,
    0x524d_4233,
    0x5233_4643,
];
/// Where a short-form v5 block records its own disk address (512-byte units).
const SBLOCK_BLKNO: usize = 16;
/// v5 long-form (bmbt) block magic, and where it records its disk address and owner inode.
const BMBT_MAGIC: u32 = 0x424d_4133;
const LBLOCK_BLKNO: usize = 24;
const LBLOCK_OWNER: usize = 56;
/// The inode magic "IN", the v3 inode's version, and where it records its own number.
const INODE_MAGIC: u16 = 0x494e;
const DI_VERSION: usize = 4;
const DI_INO: usize = 0x98;
/// Superblock fields not kept by `Superblock`: sb_rbmino, sb_rsumino, sb_uquotino,
/// sb_gquotino, sb_pquotino.
const HIDDEN_INODE_FIELDS: [usize; 5] = [0x40, 0x48, 0xa0, 0xa8, 0xe8];

impl Xfs {
    pub(super) fn touched_ranges(&self, ranges: &[Range<u64>]) -> Result<Touched> {
        let sb = &self.sb;
        let refuse = |why: &str| Err(Error::Unsupported(format!("xfs: {why}")));
        if !sb.is_v5() {
            return refuse("v4 blocks do not say what they are");
        }
        if !matches!(self.log, super::log::LogState::Clean) {
            return refuse("the log was replayed in memory (or needs to be)");
        }
        if sb.rblocks != 0 {
            return refuse("a realtime device holds file data elsewhere");
        }
        let bs = u64::from(sb.blocksize);
        let agblocks = u64::from(sb.agblocks);
        let end = sb.dblocks;
        let blocks = normalize(
            ranges
                .iter()
                // The block size is not zero (Superblock::check_geometry).
                .map(|r| r.start.checked_div(bs).unwrap_or(0).min(end)..r.end.div_ceil(bs).min(end))
                .collect(),
        );
        // Four sectors of at most 32 KiB; AG starts are products of two u32: no overflow.
        let headers = AG_HEADER_SECTORS
            .saturating_mul(u64::from(sb.sectsize))
            .div_ceil(bs);
        let mut meta: Vec<Range<u64>> = (0..u64::from(sb.agcount))
            .map(|ag| {
                let first = ag.saturating_mul(agblocks);
                first..first.saturating_add(headers)
            })
            .collect();
        if sb.logstart != 0 {
            let start = self.fsb_to_linear(sb.logstart, u64::from(sb.logblocks), "xfs log", 0)?;
            // fsb_to_linear checked that the log ends inside the filesystem.
            meta.push(start..start.saturating_add(u64::from(sb.logblocks)));
        }
        meta.extend(self.hidden_blocks()?);
        let mut inodes = Vec::new();
        for r in subtract(&blocks, &normalize(meta.clone())) {
            for linear in r {
                let b = self.read_linear(linear, 1)?;
                let daddr = sb.daddr(linear);
                let magic = be32(&b, 0);
                // linear < dblocks.
                let this = linear..linear.saturating_add(1);
                if AG_BTREE_MAGICS.contains(&magic) && be64(&b, SBLOCK_BLKNO) == daddr {
                    meta.push(this);
                } else if magic == BMBT_MAGIC && be64(&b, LBLOCK_BLKNO) == daddr {
                    inodes.push(be64(&b, LBLOCK_OWNER));
                    meta.push(this);
                } else {
                    let found = self.inodes_in(linear, &b);
                    if !found.is_empty() {
                        inodes.extend(found);
                        meta.push(this);
                    }
                }
            }
        }
        let mut rest = subtract(&blocks, &normalize(meta));
        if !rest.is_empty() {
            let free: Vec<Range<u64>> = self
                .unused_ranges()?
                .into_iter()
                .map(|r| r.start.checked_div(bs).unwrap_or(0)..r.end.checked_div(bs).unwrap_or(0))
                .collect();
            rest = subtract(&rest, &normalize(free));
        }
        inodes.sort_unstable();
        inodes.dedup();
        Ok(Touched {
            inodes,
            // Blocks inside the filesystem; saturating only bounds a forged geometry.
            residue: rest
                .into_iter()
                .map(|r| r.start.saturating_mul(bs)..r.end.saturating_mul(bs))
                .collect(),
        })
    }

    /// The inodes of block `linear` (contents `b`) whose slots hold a v3 inode that names
    /// itself: an inode cluster block on this side.
    fn inodes_in(&self, linear: u64, b: &[u8]) -> Vec<u64> {
        let sb = &self.sb;
        let agblocks = u64::from(sb.agblocks);
        // agblocks >= 2 (Superblock::check_geometry).
        let agno = linear.checked_div(agblocks).unwrap_or(0);
        let fsb = (agno << sb.agblklog) | linear.checked_rem(agblocks).unwrap_or(0);
        let isz = usize::from(sb.inodesize).max(1);
        b.chunks_exact(isz)
            .enumerate()
            .filter_map(|(slot, d)| {
                let ino = (fsb << sb.inopblog) | wide(slot);
                (be16(d, 0) == INODE_MAGIC && d[DI_VERSION] == 3 && be64(d, DI_INO) == ino)
                    .then_some(ino)
            })
            .collect()
    }

    /// Blocks (linear numbers) of the inodes no path names: the realtime bitmap and summary
    /// and the quota files. One that cannot be read is left out (its blocks then stay in the
    /// residue, which only makes the check stricter).
    fn hidden_blocks(&self) -> Result<Vec<Range<u64>>> {
        let sbuf = self.read_linear(0, 1)?;
        let inos: Vec<u64> = HIDDEN_INODE_FIELDS
            .iter()
            .map(|&at| be64(&sbuf, at))
            .filter(|&i| i != 0 && i != u64::MAX)
            .collect();
        Ok(self.blocks_of(&inos))
    }

    pub(super) fn owned_ranges(&self, inodes: &[u64]) -> Result<Vec<Range<u64>>> {
        let bs = u64::from(self.sb.blocksize);
        Ok(normalize(
            self.blocks_of(inodes)
                .into_iter()
                // Blocks inside the filesystem; saturating only bounds a forged geometry.
                .map(|r| r.start.saturating_mul(bs)..r.end.saturating_mul(bs))
                .collect(),
        ))
    }

    /// Linear block ranges of the extents of both forks of `inodes`; an inode or fork that
    /// cannot be read contributes nothing.
    fn blocks_of(&self, inodes: &[u64]) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        for &ino in inodes {
            let Ok(ip) = self.inode(ino) else { continue };
            if ip.mode == 0 {
                continue;
            }
            for attr in [false, true] {
                let Ok(list) = self.extents(&ip, attr) else {
                    continue;
                };
                for e in list.iter() {
                    if let Ok(l) = self.fsb_to_linear(e.start, e.len, "xfs extent", ino) {
                        // fsb_to_linear checked that the extent ends inside the filesystem.
                        out.push(l..l.saturating_add(e.len));
                    }
                }
            }
        }
        out
    }
}
