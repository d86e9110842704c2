//! `statfs` numbers as the kernel's ext4_statfs gives them, so `df` on a ferry mount matches a
//! kernel mount: the total excludes metadata ("bsddf", fs/ext4/super.c ext4_calculate_overhead),
//! free space is the sum of the group descriptors' counts (the superblock's copy goes stale on
//! a running system), and `bavail` also keeps back the kernel's reserve of 2% or 4096 clusters.

use super::superblock::Incompat;
use super::{dir, Ext4};
use crate::fs::{Result, StatFs};

impl Ext4 {
    /// Computes the numbers (reading every group descriptor; the caller caches the result).
    pub(super) fn compute_statfs(&self) -> Result<StatFs> {
        let sb = self.superblock();
        let ratio = 1u64 << sb.cluster_bits;
        let mut free_clusters = 0u64;
        let mut free_inodes = 0u64;
        // Metadata as block ranges: superblock and descriptor copies, bitmaps, inode tables.
        let mut meta: Vec<(u64, u64)> = Vec::new();
        let table_blocks = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size))
            .div_ceil(u64::from(sb.block_size()));
        for g in 0..sb.group_count {
            let gd = self.group_desc(g)?;
            free_clusters += u64::from(gd.free_clusters);
            free_inodes += u64::from(gd.free_inodes);
            let base = self.base_meta_blocks(g);
            if base > 0 {
                meta.push((sb.group_first_block(g), base));
            }
            meta.push((gd.block_bitmap, 1));
            meta.push((gd.inode_bitmap, 1));
            meta.push((gd.inode_table, table_blocks));
        }
        let overhead = if sb.cluster_bits > 0 && sb.overhead_clusters > 0 {
            u64::from(sb.overhead_clusters)
        } else {
            (u64::from(sb.first_data_block) >> sb.cluster_bits)
                + count_clusters(&mut meta, sb.cluster_bits)
                + self.journal_blocks().div_ceil(ratio)
        };
        let blocks = sb.blocks_count.saturating_sub(overhead * ratio);
        let bfree = free_clusters.saturating_mul(ratio);
        let resv = if sb.has_incompat(Incompat::EXTENTS) {
            ((sb.blocks_count >> sb.cluster_bits) / 50).min(4096) * ratio
        } else {
            0
        };
        Ok(StatFs {
            bsize: sb.block_size(),
            blocks,
            bfree,
            bavail: bfree.saturating_sub(sb.r_blocks_count.saturating_add(resv)),
            files: u64::from(sb.inodes_count),
            ffree: free_inodes,
            namelen: dir::MAX_NAME_LEN as u32,
        })
    }

    /// Blocks at the start of group `g` holding a superblock copy, its descriptor blocks and the
    /// reserved GDT blocks (kernel ext4_num_base_meta_blocks).
    pub(super) fn base_meta_blocks(&self, g: u32) -> u64 {
        let sb = self.superblock();
        let has_super = u64::from(sb.group_has_super(g));
        let per_block = u64::from(sb.block_size() / u32::from(sb.desc_size));
        let meta_bg = sb.has_incompat(Incompat::META_BG);
        if !meta_bg || u64::from(g) < u64::from(sb.first_meta_bg) * per_block {
            if has_super == 0 {
                return 0;
            }
            let gdt = if meta_bg {
                u64::from(sb.first_meta_bg)
            } else {
                (u64::from(sb.group_count) * u64::from(sb.desc_size))
                    .div_ceil(u64::from(sb.block_size()))
            };
            has_super + gdt + u64::from(sb.reserved_gdt_blocks)
        } else {
            // A meta group keeps its descriptor block in its first, second and last group.
            let first = u64::from(g) / per_block * per_block;
            let g = u64::from(g);
            has_super + u64::from(g == first || g == first + 1 || g == first + per_block - 1)
        }
    }

    /// Blocks of the internal journal (its inode's size), which the kernel counts as overhead.
    fn journal_blocks(&self) -> u64 {
        let sb = self.superblock();
        if sb.journal_inum == 0 || !sb.has_compat(super::superblock::Compat::HAS_JOURNAL) {
            return 0;
        }
        match self.inode(u64::from(sb.journal_inum)) {
            Ok(i) => i.size / u64::from(sb.block_size()),
            Err(e) => {
                log::warn!("ext4: journal inode: {e}");
                0
            }
        }
    }
}

/// Distinct clusters touched by the block ranges (sorted and merged in place).
fn count_clusters(ranges: &mut [(u64, u64)], cluster_bits: u32) -> u64 {
    let mut cl: Vec<(u64, u64)> = ranges
        .iter()
        .filter(|r| r.1 > 0)
        .map(|&(start, len)| {
            let end = start.saturating_add(len - 1);
            (start >> cluster_bits, end >> cluster_bits)
        })
        .collect();
    cl.sort_unstable();
    let mut total = 0;
    let mut cur: Option<(u64, u64)> = None;
    for (s, e) in cl {
        match cur {
            Some((cs, ce)) if s <= ce.saturating_add(1) => cur = Some((cs, ce.max(e))),
            _ => {
                if let Some((cs, ce)) = cur {
                    total += ce - cs + 1;
                }
                cur = Some((s, e));
            }
        }
    }
    if let Some((cs, ce)) = cur {
        total += ce - cs + 1;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::count_clusters;

    #[test]
    fn clusters_are_counted_once() {
        let mut r = vec![(10, 5), (12, 1), (14, 3), (100, 1), (0, 0)];
        assert_eq!(count_clusters(&mut r, 0), 7 + 1);
        // 16-block clusters: blocks 10..17 touch clusters 0 and 1; block 100 cluster 6.
        assert_eq!(count_clusters(&mut r, 4), 3);
    }
}
