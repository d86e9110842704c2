//! Walk readahead. A directory walk (tar, find, du) stats every entry it lists, and a cold
//! stat is a synchronous read of the entry's inode block: one host read after another. When a
//! directory block is listed, the inode clusters of its entries are named to the device
//! (`BlockDevice::prefetch`) first, so their reads are queued together and the stats that
//! follow find them in the host's page cache, as the kernel's own XFS reads a whole inode
//! cluster per inode. `prefetch_data` does the same for the first bytes of a regular file.

use super::{Run, Xfs};
use lru::LruCache;
use std::num::NonZeroUsize;

/// Most inode clusters named for one listed directory block: a 64 KiB block holds a few
/// thousand entries, and 64 clusters of 16 KiB (1 MiB of queued reads) is far ahead of the
/// stats that follow while keeping one listing from flooding the host disk's queue.
pub const MAX_CLUSTERS_PER_BLOCK: usize = 64;
/// Clusters remembered as named already (a listing is answered in many small requests that
/// each resume inside the same directory block): 8192 u64 keys, under 200 KiB.
const REMEMBERED: usize = 8192;
/// Bytes the kernel's XFS reads for an inode (XFS_INODE_BIG_CLUSTER_SIZE), scaled by the inode
/// size on v5 (xfs_ialloc_setup_geometry).
const BIG_CLUSTER: u64 = 8192;
/// Inodes in an inode chunk (XFS_INODES_PER_CHUNK): a cluster never spans two chunks.
const INODES_PER_CHUNK: u64 = 64;
/// Most extents of a file named by one `prefetch_data`: a small file has one or two.
const MAX_DATA_EXTENTS: usize = 4;
/// Ranges at most this far apart are named as one: XFS lays out a directory's small files
/// one after the other, and one hint over a small gap costs less than a hint per file.
const MERGE_GAP: u64 = 16 << 10;

/// `ranges` (offset, length) sorted and merged where they overlap or lie at most `gap` bytes
/// apart (`fs::ranges::merge_within`): the fewest hints that cover them all. Empty ranges are
/// dropped (a zero-length WILLNEED would mean "to the end of the file").
pub fn coalesce(ranges: Vec<(u64, u64)>, gap: u64) -> Vec<(u64, u64)> {
    let r = ranges
        .into_iter()
        .map(|(off, len)| off..off.saturating_add(len))
        .collect();
    crate::fs::ranges::merge_within(r, gap)
        .into_iter()
        .map(|r| (r.start, r.end.saturating_sub(r.start)))
        .collect()
}

/// Clusters named recently (bounded).
pub(super) type Hinted = LruCache<u64, ()>;

pub(super) fn hinted() -> Hinted {
    LruCache::new(NonZeroUsize::new(REMEMBERED).unwrap_or(NonZeroUsize::MIN))
}

impl Xfs {
    /// Blocks per inode cluster: at least one block, at most one inode chunk.
    pub(super) fn cluster_blocks(&self) -> u64 {
        let sb = &self.sb;
        let bytes = if sb.is_v5() {
            // inodesize is 256..2048 (check_geometry): the factor is 1..8.
            BIG_CLUSTER.saturating_mul(u64::from(sb.inodesize) / 256)
        } else {
            BIG_CLUSTER
        };
        let chunk = INODES_PER_CHUNK.saturating_mul(u64::from(sb.inodesize));
        let bs = u64::from(sb.blocksize);
        // The block size is not zero (check_geometry).
        bytes.min(chunk).checked_div(bs).unwrap_or(1).max(1)
    }

    /// The first linear block of the inode cluster holding `ino` (clusters are aligned in
    /// their AG) and the block holding the inode itself, or None for an inode number
    /// outside the filesystem.
    pub(super) fn cluster_of(&self, ino: u64) -> Option<(u64, u64)> {
        let sb = &self.sb;
        if !sb.valid_ino(ino) {
            return None;
        }
        let fsb = ino >> sb.inopblog;
        // agblklog <= 32 (check_geometry); valid_ino: the AG exists.
        let agno = fsb >> sb.agblklog;
        let agbno = fsb & (1u64 << sb.agblklog).saturating_sub(1);
        let n = self.cluster_blocks();
        let first = agbno.checked_div(n)?.saturating_mul(n);
        let ag = agno.checked_mul(u64::from(sb.agblocks))?;
        let linear = ag.checked_add(first)?;
        let own = ag.checked_add(agbno)?;
        // A cluster at the end of a short last AG is clipped by the device.
        (own < sb.dblocks).then_some((linear, own))
    }

    /// Names to the device the inode clusters of `inos` that are neither cached here nor
    /// named recently, at most `MAX_CLUSTERS_PER_BLOCK` of them.
    pub(super) fn prefetch_inodes(&self, inos: impl IntoIterator<Item = u64>) {
        let n = self.cluster_blocks();
        let bs = u64::from(self.sb.blocksize);
        let mut named = Vec::new();
        for ino in inos {
            if named.len() >= MAX_CLUSTERS_PER_BLOCK {
                break;
            }
            let Some((c, own)) = self.cluster_of(ino) else {
                continue;
            };
            if self.cache.lock().contains(&super::Key::Block(own))
                || self.hinted.lock().put(c, ()).is_some()
            {
                continue;
            }
            // linear < dblocks, so the byte offset fits (the device is at most 2^64 bytes).
            named.push((c.saturating_mul(bs), n.saturating_mul(bs)));
        }
        for (off, len) in coalesce(named, 0) {
            self.dev.prefetch(off, len);
        }
    }

    /// Names to the device where the first `len` bytes of each regular file `ino` of `files`
    /// lie (at most `MAX_DATA_EXTENTS` runs each), merged (`MERGE_GAP`); holes and anything
    /// unreadable are skipped: it is a hint.
    pub(super) fn prefetch_data(&self, files: &[(u64, u64)]) {
        let mut ranges = Vec::new();
        for &(ino, len) in files {
            self.data_ranges(ino, len, &mut ranges);
        }
        for (off, len) in coalesce(ranges, MERGE_GAP) {
            self.dev.prefetch(off, len);
        }
    }

    /// Where the first `len` bytes of regular file `ino` lie, pushed onto `out`.
    fn data_ranges(&self, ino: u64, len: u64, out: &mut Vec<(u64, u64)>) {
        let Ok(ip) = self.inode(ino) else {
            return;
        };
        if ip.kind != crate::fs::FileType::RegularFile {
            return;
        }
        let bs = u64::from(self.sb.blocksize);
        let len = len.min(ip.size);
        // The block size is not zero (check_geometry).
        let blocks = len.div_ceil(bs);
        let mut lblk = 0;
        for _ in 0..MAX_DATA_EXTENTS {
            if lblk >= blocks {
                break;
            }
            let Ok(run) = self.map(&ip, false, lblk) else {
                return;
            };
            let left = blocks.saturating_sub(lblk);
            let n = match run {
                Run::Data { linear, len } => {
                    let n = len.min(left);
                    out.push((linear.saturating_mul(bs), n.saturating_mul(bs)));
                    n
                }
                Run::Zero(len) => len.min(left),
            };
            lblk = lblk.saturating_add(n.max(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn coalesce_merges_near_and_overlapping_ranges_only() {
        let r = coalesce(
            vec![
                (8192, 4096),
                (0, 4096),
                (4096, 100),
                (40000, 10),
                (1 << 20, 1),
            ],
            4096,
        );
        assert_eq!(r, vec![(0, 12288), (40000, 10), (1 << 20, 1)]);
        // Overlap and containment; no gap allowed.
        let r = coalesce(vec![(0, 100), (50, 10), (100, 5), (106, 1)], 0);
        assert_eq!(r, vec![(0, 105), (106, 1)]);
        // Ranges at the end of the address space saturate instead of wrapping.
        let r = coalesce(vec![(u64::MAX - 10, 100), (u64::MAX - 5, 1)], 0);
        assert_eq!(r, vec![(u64::MAX - 10, 10)]);
        assert!(coalesce(Vec::new(), 0).is_empty());
    }
}
