//! `statfs` as the kernel's xfs_fs_statfs reports it on a read-only mount: the data blocks
//! less an internal log; free blocks less the allocation set-aside (8 blocks per AG,
//! xfs_alloc_set_aside); as many files as there are inodes plus what the free space could
//! hold, capped by imax_pct. A read-only mount reserves no blocks (xfs_reserve_blocks and the
//! per-AG reservations are for writable mounts). With a dirty log (replayed or not) the
//! superblock's lazy counters are stale, so they are summed from the AG headers as the
//! kernel does then (xfs_initialize_perag_data), and after a replay what recovery then
//! frees is counted as free: the unlinked lists (`Xfs::unlinked_release`), the extents of
//! unfinished extent-free intents and leftover CoW staging extents (`Xfs::cow_leftovers`).

use super::{Xfs, MAX_NAME_LEN};
use crate::fs::{Result, StatFs};

/// xfs_alloc_set_aside: XFS_ALLOCBT_AGFL_RESERVE + 4 blocks per AG.
const SET_ASIDE_PER_AG: u64 = 8;
/// XFS_INODES_PER_CHUNK.
const INODES_PER_CHUNK: u64 = 64;
/// XFS_MAXINUMBER.
const MAX_INUMBER: u64 = (1 << 56) - 1;

impl Xfs {
    pub(super) fn compute_statfs(&self) -> Result<StatFs> {
        let sb = &self.sb;
        let (mut fdblocks, mut icount, mut ifree) = (sb.fdblocks, sb.icount, sb.ifree);
        if !matches!(self.log, super::log::LogState::Clean) {
            (fdblocks, icount, ifree) = (0, 0, 0);
            for ag in 0..sb.agcount {
                let c = self.ag_counts(ag)?;
                // Sums of u32 counters over at most 2^32 AGs: no overflow.
                fdblocks = fdblocks
                    .saturating_add(u64::from(c.freeblks))
                    .saturating_add(u64::from(c.flcount))
                    .saturating_add(u64::from(c.btreeblks));
                icount = icount.saturating_add(u64::from(c.icount));
                ifree = ifree.saturating_add(u64::from(c.ifree));
            }
        }
        // Recovery then frees what the AGI unlinked lists still hold (files removed while
        // open, whose inactivation had not run), as the kernel's mount does.
        if matches!(self.log, super::log::LogState::Replayed { .. }) {
            let r = self.unlinked_release()?;
            // Block counts of one filesystem: saturating is only a bound on forged ones.
            fdblocks = fdblocks
                .saturating_add(r.blocks)
                .saturating_add(self.replay.as_ref().map_or(0, |i| i.unfinished_free_blocks))
                .saturating_add(self.cow_leftovers()?);
            ifree = ifree.saturating_add(r.inodes).saturating_sub(r.released);
            icount = icount.saturating_sub(r.released);
        }
        let blocks = sb.dblocks.saturating_sub(u64::from(sb.logblocks));
        let bfree = fdblocks.saturating_sub(u64::from(sb.agcount).saturating_mul(SET_ASIDE_PER_AG));
        let fake = bfree
            .checked_shl(u32::from(sb.inopblog))
            .unwrap_or(u64::MAX);
        let mut files = icount.saturating_add(fake).min(MAX_INUMBER);
        if sb.imax_pct != 0 {
            let ialloc_blks = (INODES_PER_CHUNK.max(u64::from(sb.inopblock)) >> sb.inopblog).max(1);
            // ialloc_blks >= 1; a percentage of dblocks, rounded down to whole chunks.
            let max = (sb.dblocks.saturating_mul(u64::from(sb.imax_pct)) / 100)
                .checked_div(ialloc_blks)
                .unwrap_or(0)
                .saturating_mul(ialloc_blks);
            files = files.min(max << sb.inopblog);
        }
        files = files.max(icount);
        Ok(StatFs {
            bsize: sb.blocksize,
            blocks,
            bfree,
            bavail: bfree,
            files,
            ffree: files.saturating_sub(icount.saturating_sub(ifree)),
            namelen: u32::try_from(MAX_NAME_LEN).unwrap_or(u32::MAX),
        })
    }
}
