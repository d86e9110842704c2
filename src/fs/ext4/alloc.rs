//! Block and inode allocation (Documentation/filesystems/ext4/allocators.rst): the per-group
//! bitmaps, the free counts in the group descriptors and the superblock, the uninit_bg flags
//! (a BLOCK_UNINIT or INODE_UNINIT group has no bitmap on disk yet: it is built here as the
//! kernel's ext4_init_block_bitmap does, then the flag cleared), bg_itable_unused and the
//! bitmap checksums. Blocks are taken from a goal onwards, so that a file growing at its end
//! stays one extent; directories are spread over the groups, files stay near their directory.

use super::rw::{BG_BLOCK_UNINIT, BG_INODE_UNINIT};
use super::superblock::Incompat;
use super::{csum, Ext4};
use crate::bytes::wide;
use crate::fs::{Error, Result};
use std::num::NonZeroU64;
use std::ops::Range;

/// The byte of bit `i` and its mask (bitmaps are little-endian bit order).
fn bit_at(i: usize) -> (usize, u8) {
    (i / 8, 1u8.rotate_left((i % 8).try_into().unwrap_or(0)))
}

/// Whether bit `i` of a bitmap is set. A bit past the map reads as set (in use): callers
/// bound their indices by the map (`bitmap_bits`), and nothing past it may be allocated.
fn bit(map: &[u8], i: usize) -> bool {
    let (at, mask) = bit_at(i);
    map.get(at).is_none_or(|b| b & mask != 0)
}

/// Sets or clears bit `i`; nothing past the map (see `bit`).
fn set_bit(map: &mut [u8], i: usize, on: bool) {
    let (at, mask) = bit_at(i);
    if let Some(b) = map.get_mut(at) {
        if on {
            *b |= mask;
        } else {
            *b &= !mask;
        }
    }
}

/// The `n` blocks of a group as bits of a bitmap of `map_len` bytes, if they fit it. The
/// superblock check refuses s_blocks_per_group above 8 * block size, as the kernel does; the
/// bit walks check it again here rather than depend on that.
fn bitmap_bits(n: u64, map_len: usize) -> Option<usize> {
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= map_len.saturating_mul(8))
}

/// The end of blocks `start..start + len` if they lie inside `data` (an empty span anywhere up
/// to its end). Block 0 of a 1 KiB-block filesystem lies before it: before this check freeing
/// it underflowed its index in group 0's bitmap (a panic, or an index far past the map).
fn data_span(start: u64, len: u64, data: &Range<u64>) -> Option<u64> {
    let end = start.checked_add(len).filter(|&e| e <= data.end)?;
    (len == 0 || start >= data.start).then_some(end)
}

/// Group `start + k` counted round the `groups` groups (computed in u64: with more than 2^31
/// groups the sum passes u32).
fn rotate(start: u32, k: u32, groups: u32) -> u32 {
    let g = u64::from(start)
        .saturating_add(u64::from(k))
        .checked_rem(u64::from(groups))
        .unwrap_or(0);
    // OK: below groups, a u32.
    u32::try_from(g).unwrap_or(0)
}

/// An index below a bound that fits a usize (a bitmap's bits), as a usize.
fn index(i: u64) -> usize {
    usize::try_from(i).unwrap_or(usize::MAX)
}

/// Sets bits `from..to` (bitmap padding past the group's last block or inode).
fn set_range(map: &mut [u8], from: usize, to: usize) {
    for i in from..to {
        set_bit(map, i, true);
    }
}

impl Ext4 {
    /// Blocks in group `g` (the last group may be short).
    pub(crate) fn blocks_in_group(&self, g: u32) -> u64 {
        let first = self.sb.group_first_block(g);
        // g < group_count: its first block is below blocks_count.
        (self.sb.blocks_count.saturating_sub(first)).min(u64::from(self.sb.blocks_per_group))
    }

    /// The blocks of group `g` as bits of its block bitmap of `map_len` bytes; an error if they
    /// do not fit it (see `bitmap_bits`: before this check such a group indexed past the map).
    fn group_bits(&self, g: u32, map_len: usize) -> Result<usize> {
        let n = self.blocks_in_group(g);
        bitmap_bits(n, map_len).ok_or_else(|| {
            Error::corrupt(
                "superblock",
                0,
                0,
                format!(
                    "group {g}: {n} blocks, more than its bitmap block holds (s_blocks_per_group \
                     {})",
                    self.sb.blocks_per_group
                ),
            )
        })
    }

    /// The group holding block `blk`.
    pub(crate) fn group_of_block(&self, blk: u64) -> u32 {
        // s_blocks_per_group is nonzero (the superblock's check).
        let g = blk
            .saturating_sub(u64::from(self.sb.first_data_block))
            .checked_div(u64::from(self.sb.blocks_per_group))
            .unwrap_or(0);
        // group_count >= 1 (the superblock's check).
        let last = self.sb.group_count.saturating_sub(1);
        u32::try_from(g).map_or(last, |g| g.min(last))
    }

    /// The block bitmap of group `g` as it is or, for a BLOCK_UNINIT group, as it would be
    /// initialised: the group's superblock copy, descriptor and reserved GDT blocks, and its
    /// own bitmaps and inode table where they lie inside it; the padding past its last block.
    pub(super) fn block_bitmap(&self, g: u32) -> Result<(u64, Vec<u8>, bool)> {
        let gd = self.group_desc_pub(g)?;
        let (flags, free) = self.gd_peek(g, |d| (d.flags(), d.free_blocks()))?;
        let bs = self.block_size_usize();
        let n = self.blocks_in_group(g);
        let uninit = flags & BG_BLOCK_UNINIT != 0 && self.sb.group_csum().is_some();
        self.block_offset(gd.block_bitmap, 1, "block bitmap", 0)?;
        if !uninit {
            let b = self.meta_block(gd.block_bitmap, "block bitmap", 0)?;
            return Ok((gd.block_bitmap, b.to_vec(), false));
        }
        let n_bits = self.group_bits(g, bs)?;
        let mut map = vec![0u8; bs];
        let first = self.sb.group_first_block(g);
        // Both at most n, whose bits fit the map (bitmap_bits).
        set_range(&mut map, 0, index(self.base_meta_blocks(g).min(n)));
        let table = self.inode_table_blocks();
        for (start, len) in [
            (gd.block_bitmap, 1),
            (gd.inode_bitmap, 1),
            (gd.inode_table, table),
        ] {
            // The part of start..start+len inside the group, relative to its first block.
            let to = start.saturating_add(len).saturating_sub(first).min(n);
            let from = start.saturating_sub(first).min(to);
            set_range(&mut map, index(from), index(to));
        }
        set_range(&mut map, n_bits, bs.saturating_mul(8));
        let used = wide((0..n_bits).filter(|&i| bit(&map, i)).count());
        // used counts bits of 0..n.
        let free_after = n.saturating_sub(used);
        if free_after != u64::from(free) {
            return Err(Error::corrupt(
                "group descriptor",
                0,
                gd.block_bitmap,
                format!(
                    "group {g}: BLOCK_UNINIT with {free} free blocks, but {free_after} are free \
                     after its metadata"
                ),
            ));
        }
        Ok((gd.block_bitmap, map, true))
    }

    /// Byte ranges the block bitmaps mark free (see `Filesystem::unused`). Refused while the
    /// journal holds transactions (the guest's replay would allocate from what the bitmaps
    /// say is free) and with bigalloc (a bit per cluster, not handled here). A bitmap whose
    /// free count differs from its group descriptor's, or that frees a group's fixed
    /// metadata, is damage: the whole filesystem is then refused rather than trusted in part.
    pub(crate) fn unused_ranges(&self) -> Result<Vec<Range<u64>>> {
        if self.journal_replay().is_some() || self.sb.has_incompat(Incompat::RECOVER) {
            return Err(Error::Unsupported(
                "ext4: the journal holds transactions not yet replayed".into(),
            ));
        }
        if self.sb.cluster_bits > 0 {
            return Err(Error::Unsupported(
                "ext4: bigalloc block bitmaps are not mapped".into(),
            ));
        }
        let table = self.inode_table_blocks();
        let mut free: Vec<Range<u64>> = Vec::new();
        let mut meta: Vec<Range<u64>> = Vec::new();
        for g in 0..self.sb.group_count {
            let gd = self.group_desc_pub(g)?;
            let first = self.sb.group_first_block(g);
            let n = self.blocks_in_group(g);
            // first + n <= blocks_count. A descriptor's block past the end (saturated here)
            // is refused by block_bitmap just below or by the overlap check.
            meta.push(first..first.saturating_add(self.base_meta_blocks(g).min(n)));
            meta.push(gd.block_bitmap..gd.block_bitmap.saturating_add(1));
            meta.push(gd.inode_bitmap..gd.inode_bitmap.saturating_add(1));
            meta.push(gd.inode_table..gd.inode_table.saturating_add(table));
            let (blk, map, _) = self.block_bitmap(g)?;
            let n = self.group_bits(g, map.len())?;
            let mut count = 0u64;
            let mut i = 0;
            while let Some(s) = (i..n).find(|&j| !bit(&map, j)) {
                i = (s..n).find(|&j| bit(&map, j)).unwrap_or(n);
                // Runs of 0..n: the sum is at most n; the ends at most first + n.
                count = count.saturating_add(wide((s..i).len()));
                let r = first.saturating_add(wide(s))..first.saturating_add(wide(i));
                match free.last_mut() {
                    Some(last) if last.end == r.start => last.end = r.end,
                    _ => free.push(r),
                }
            }
            if count != u64::from(gd.free_clusters) {
                return Err(Error::corrupt(
                    "block bitmap",
                    0,
                    blk,
                    format!(
                        "group {g}: {count} blocks free in the bitmap, {} in the descriptor",
                        gd.free_clusters
                    ),
                ));
            }
        }
        meta.retain(|r| r.start < r.end);
        meta.sort_by_key(|r| r.start);
        let mut rest = &meta[..];
        for r in &free {
            while let Some((m, tail)) = rest.split_first() {
                if m.end > r.start {
                    break;
                }
                rest = tail;
            }
            if let Some(m) = rest
                .iter()
                .take_while(|m| m.start < r.end)
                .find(|m| m.end > r.start)
            {
                return Err(Error::corrupt(
                    "block bitmap",
                    0,
                    m.start.max(r.start),
                    "a block of group metadata is marked free",
                ));
            }
        }
        let bs = u64::from(self.block_size());
        // Blocks below blocks_count, whose size in bytes `open` checked fits a u64.
        Ok(free
            .into_iter()
            .map(|r| r.start.saturating_mul(bs)..r.end.saturating_mul(bs))
            .collect())
    }

    /// Blocks of one group's inode table.
    pub(crate) fn inode_table_blocks(&self) -> u64 {
        // Two u32: the product fits.
        (u64::from(self.sb.inodes_per_group).saturating_mul(u64::from(self.sb.inode_size)))
            .div_ceil(u64::from(self.block_size()))
    }

    /// Whether block `blk` of group `g` is the group's own fixed metadata (superblock copy,
    /// descriptors, its bitmaps, its inode table), which a damaged bitmap could claim free.
    fn is_group_metadata(&self, g: u32, blk: u64) -> Result<bool> {
        let first = self.sb.group_first_block(g);
        // A group's first block and its count of base metadata blocks are far below 2^64.
        if blk < first.saturating_add(self.base_meta_blocks(g))
            || blk < u64::from(self.sb.first_data_block)
        {
            return Ok(true);
        }
        let gd = self.group_desc_pub(g)?;
        Ok(blk == gd.block_bitmap
            || blk == gd.inode_bitmap
            || blk
                .checked_sub(gd.inode_table)
                .is_some_and(|d| d < self.inode_table_blocks()))
    }

    /// Writes back a changed block bitmap and the descriptor's count, flag and checksum.
    fn put_block_bitmap(&self, g: u32, blk: u64, map: Vec<u8>, delta_free: i64) -> Result<()> {
        let bitmap_csum = self
            .sb
            .metadata_csum
            // csum::bitmap takes at most the map.
            .then(|| {
                csum::bitmap(
                    self.sb.csum_seed,
                    &map,
                    index(u64::from(self.sb.blocks_per_group / 8)),
                )
            });
        self.put_meta(blk, map)?;
        self.gd_edit(g, |d| {
            let free = i64::from(d.free_blocks()).saturating_add(delta_free);
            // 0 <= free <= blocks_per_group, checked by the callers' bitmaps.
            d.set_free_blocks(u32::try_from(free.max(0)).unwrap_or(u32::MAX));
            d.set_flags(d.flags() & !BG_BLOCK_UNINIT);
            if let Some(c) = bitmap_csum {
                d.set_block_bitmap_csum(c);
            }
        })?;
        self.sb_add_free(delta_free, 0);
        Ok(())
    }

    /// Allocates up to `want` contiguous blocks, the first free one at or after `goal` (then
    /// in the following groups, wrapping around). Returns (first block, count >= 1).
    pub(crate) fn alloc_blocks(&self, goal: u64, want: u64) -> Result<(u64, u64)> {
        let want = want.max(1);
        let groups = self.sb.group_count;
        // blocks_count > first_data_block (the superblock's check).
        let goal = goal.clamp(
            u64::from(self.sb.first_data_block),
            self.sb.blocks_count.saturating_sub(1),
        );
        let g0 = self.group_of_block(goal);
        for k in 0..=groups {
            let g = rotate(g0, k, groups);
            let free = self.gd_peek(g, |d| d.free_blocks())?;
            if free == 0 {
                continue;
            }
            let first = self.sb.group_first_block(g);
            // goal lies in group g0, at or after its first block.
            let start = if k == 0 {
                index(goal.saturating_sub(first))
            } else {
                0
            };
            let (blk, mut map, _) = self.block_bitmap(g)?;
            let n = self.group_bits(g, map.len())?;
            // Below: i < n, which fits the map; first + n <= blocks_count.
            let free_here = |i: usize| {
                !bit(&map, i) && !self.freed_by_this_operation(first.saturating_add(wide(i)))
            };
            let Some(i) = (start..n).find(|&i| free_here(i)) else {
                continue;
            };
            let len = (i..n)
                .take(index(want))
                .take_while(|&j| free_here(j))
                .count();
            let end = i.saturating_add(len);
            let lo = first.saturating_add(wide(i));
            self.before_reuse(lo, first.saturating_add(wide(end)))?;
            for j in i..end {
                let b = first.saturating_add(wide(j));
                if self.is_group_metadata(g, b)? {
                    return Err(Error::corrupt(
                        "block bitmap",
                        0,
                        blk,
                        format!("group {g}: metadata block {b} marked free"),
                    ));
                }
                set_bit(&mut map, j, true);
            }
            if u64::from(free) < wide(len) {
                return Err(Error::corrupt(
                    "group descriptor",
                    0,
                    blk,
                    format!("group {g}: {free} free blocks, but the bitmap has more"),
                ));
            }
            // len <= n: no saturation.
            let delta = i64::try_from(len).unwrap_or(i64::MAX).saturating_neg();
            self.put_block_bitmap(g, blk, map, delta)?;
            return Ok((lo, wide(len)));
        }
        Err(Error::NoSpace)
    }

    /// Frees blocks `start..start+len`. `meta`: they held metadata (a journal revokes them).
    /// A block already free, or one outside the data area, is damage.
    pub(crate) fn free_blocks(&self, start: u64, len: u64, meta: bool) -> Result<()> {
        let data = u64::from(self.sb.first_data_block)..self.sb.blocks_count;
        let Some(end) = data_span(start, len, &data) else {
            return Err(Error::corrupt(
                "block map",
                0,
                start,
                format!("freeing {len} blocks outside the data area {data:?}"),
            ));
        };
        let mut b = start;
        while b < end {
            let g = self.group_of_block(b);
            let first = self.sb.group_first_block(g);
            // first + its group's blocks <= blocks_count.
            let stop = end.min(first.saturating_add(self.blocks_in_group(g)));
            let (blk, mut map, _) = self.block_bitmap(g)?;
            self.group_bits(g, map.len())?;
            for x in b..stop {
                // first_data_block <= b (data_span), so first <= x < first + n.
                let i = index(x.saturating_sub(first));
                if !bit(&map, i) || self.is_group_metadata(g, x)? {
                    return Err(Error::corrupt(
                        "block bitmap",
                        0,
                        x,
                        "freeing a block that is free or group metadata",
                    ));
                }
                set_bit(&mut map, i, false);
                if meta {
                    self.forget_meta(x)?;
                }
            }
            // At most a group's blocks.
            let freed = i64::try_from(stop.saturating_sub(b)).unwrap_or(i64::MAX);
            self.put_block_bitmap(g, blk, map, freed)?;
            self.note_freed(b, stop);
            b = stop;
        }
        Ok(())
    }

    /// The inode bitmap of group `g` (built for an INODE_UNINIT group: all free, padding set).
    pub(super) fn inode_bitmap(&self, g: u32) -> Result<(u64, Vec<u8>)> {
        let gd = self.group_desc_pub(g)?;
        let flags = self.gd_peek(g, |d| d.flags())?;
        self.block_offset(gd.inode_bitmap, 1, "inode bitmap", 0)?;
        if flags & BG_INODE_UNINIT != 0 && self.sb.group_csum().is_some() {
            let bs = self.block_size_usize();
            let mut map = vec![0u8; bs];
            let ipg = index(u64::from(self.sb.inodes_per_group));
            set_range(&mut map, ipg, bs.saturating_mul(8));
            return Ok((gd.inode_bitmap, map));
        }
        let b = self.meta_block(gd.inode_bitmap, "inode bitmap", 0)?;
        Ok((gd.inode_bitmap, b.to_vec()))
    }

    fn put_inode_bitmap(&self, blk: u64, map: Vec<u8>) -> Result<Option<u32>> {
        let c = self.sb.metadata_csum.then(|| {
            csum::bitmap(
                self.sb.csum_seed,
                &map,
                index(u64::from(self.sb.inodes_per_group / 8)),
            )
        });
        self.put_meta(blk, map)?;
        Ok(c)
    }

    /// Allocates an inode for a child of `parent`: a directory in the next group (round
    /// robin) that has free inodes, a file in its parent's group or the next one with room.
    pub(crate) fn alloc_inode(&self, parent: u64, is_dir: bool) -> Result<u64> {
        let groups = self.sb.group_count;
        let ipg = self.sb.inodes_per_group;
        // parent <= inodes_count: its group is a group.
        let pg = self.inode_bit(parent).map_or(0, |(g, _)| g);
        let start = if is_dir && groups > 1 {
            rotate(self.rw_dir_rotor(), 0, groups)
        } else {
            pg
        };
        for k in 0..groups {
            let g = rotate(start, k, groups);
            let (free, free_blocks) = self.gd_peek(g, |d| (d.free_inodes(), d.free_blocks()))?;
            let last = groups.saturating_sub(k) <= 1;
            if free == 0 || (is_dir && !last && free_blocks == 0) {
                continue;
            }
            let (blk, mut map) = self.inode_bitmap(g)?;
            let from = if g == 0 {
                index(u64::from(self.sb.first_ino.saturating_sub(1)))
            } else {
                0
            };
            // s_inodes_per_group is at most 8 * block size (the superblock's check).
            let Some(i) = (from..index(u64::from(ipg))).find(|&i| !bit(&map, i)) else {
                continue;
            };
            // Two u32 and an index below the second: no overflow.
            let ino = u64::from(g)
                .saturating_mul(u64::from(ipg))
                .saturating_add(wide(i))
                .saturating_add(1);
            if ino > u64::from(self.sb.inodes_count) {
                continue;
            }
            set_bit(&mut map, i, true);
            let c = self.put_inode_bitmap(blk, map)?;
            let csum_groups = self.sb.group_csum().is_some();
            self.gd_edit(g, |d| {
                // free > 0 (above); a count of directories past the inodes is damage that
                // is not made worse by wrapping to 0.
                d.set_free_inodes(d.free_inodes().saturating_sub(1));
                if is_dir {
                    d.set_used_dirs(d.used_dirs().saturating_add(1));
                }
                if csum_groups {
                    d.set_flags(d.flags() & !BG_INODE_UNINIT);
                    // i < ipg: no saturation.
                    let unused = ipg
                        .saturating_sub(u32::try_from(i).unwrap_or(ipg))
                        .saturating_sub(1);
                    if d.itable_unused() > unused {
                        d.set_itable_unused(unused);
                    }
                }
                if let Some(c) = c {
                    d.set_inode_bitmap_csum(c);
                }
            })?;
            self.sb_add_free(0, -1);
            return Ok(ino);
        }
        Err(Error::NoSpace)
    }

    /// Frees inode `ino` in its group's bitmap and counts.
    pub(crate) fn free_inode(&self, ino: u64, is_dir: bool) -> Result<()> {
        // ino was validated by the caller's inode read; anything else is refused.
        let Some((g, i)) = self.inode_bit(ino) else {
            return Err(Error::corrupt(
                "inode bitmap",
                ino,
                0,
                "freeing an inode outside the groups",
            ));
        };
        let (blk, mut map) = self.inode_bitmap(g)?;
        if !bit(&map, i) {
            return Err(Error::corrupt(
                "inode bitmap",
                ino,
                blk,
                "freeing an inode that is free",
            ));
        }
        set_bit(&mut map, i, false);
        let c = self.put_inode_bitmap(blk, map)?;
        self.gd_edit(g, |d| {
            // A count past the inodes is damage not made worse by wrapping to 0.
            d.set_free_inodes(d.free_inodes().saturating_add(1));
            if is_dir {
                d.set_used_dirs(d.used_dirs().saturating_sub(1));
            }
            if let Some(c) = c {
                d.set_inode_bitmap_csum(c);
            }
        })?;
        self.sb_add_free(0, 1);
        Ok(())
    }

    /// The goal block for data of inode `ino` with nothing better to go by: the start of
    /// its group's flex group (where flex_bg keeps the data of those groups together).
    pub(crate) fn inode_goal(&self, ino: u64) -> u64 {
        // ino <= inodes_count: its group is a group.
        let g = self.inode_bit(ino).map_or(0, |(g, _)| g);
        self.sb.group_first_block(g)
    }

    /// The group of inode `ino` and its bit in the group's inode bitmap; None for inode 0 and
    /// past the last group.
    fn inode_bit(&self, ino: u64) -> Option<(u32, usize)> {
        let ipg = NonZeroU64::new(u64::from(self.sb.inodes_per_group))?;
        let at = ino.checked_sub(1)?;
        let g = u32::try_from(at / ipg)
            .ok()
            .filter(|&g| g < self.sb.group_count)?;
        Some((g, index(at % ipg)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        let mut map = vec![0u8; 2];
        set_bit(&mut map, 9, true);
        set_range(&mut map, 0, 3);
        assert_eq!(map, [0b111, 0b10]);
        assert!(bit(&map, 9) && bit(&map, 2) && !bit(&map, 3) && !bit(&map, 15));
        set_bit(&mut map, 1, false);
        assert_eq!(map, [0b101, 0b10]);
        // Past the map: in use, and nothing is written.
        assert!(bit(&map, 16));
        set_bit(&mut map, 16, false);
        set_range(&mut map, 14, 40);
        assert_eq!(map, [0b101, 0b1100_0010]);
    }

    #[test]
    fn group_blocks_must_fit_the_bitmap() {
        // s_blocks_per_group 8193 on 1 KiB blocks: before the check the bitmap walks
        // indexed byte 1024 of a 1024-byte block (a panic on a damaged superblock).
        assert_eq!(bitmap_bits(8192, 1024), Some(8192));
        assert_eq!(bitmap_bits(8193, 1024), None);
        assert_eq!(bitmap_bits(0, 1024), Some(0));
    }

    #[test]
    fn freed_blocks_must_be_data_blocks() {
        let data = 1..8193;
        assert_eq!(data_span(1, 8192, &data), Some(8193));
        assert_eq!(data_span(5, 0, &data), Some(5));
        assert_eq!(data_span(0, 0, &data), Some(0));
        assert_eq!(data_span(0, 1, &data), None);
        assert_eq!(data_span(8192, 2, &data), None);
        assert_eq!(data_span(u64::MAX, 2, &data), None);
    }

    #[test]
    fn rotation_round_the_groups() {
        assert_eq!(rotate(3, 0, 5), 3);
        assert_eq!(rotate(3, 4, 5), 2);
        assert_eq!(rotate(3, 5, 5), 3);
        assert_eq!(rotate(0, 0, 0), 0);
        // More than 2^31 groups: before, start + k overflowed u32 (a panic in debug builds,
        // a wrong group in release).
        assert_eq!(rotate(u32::MAX - 2, 3, u32::MAX - 1), 2);
        assert_eq!(rotate(u32::MAX - 1, u32::MAX, u32::MAX), u32::MAX - 1);
    }
}
