//! Block and inode allocation (Documentation/filesystems/ext4/allocators.rst): the per-group
//! bitmaps, the free counts in the group descriptors and the superblock, the uninit_bg flags
//! (a BLOCK_UNINIT or INODE_UNINIT group has no bitmap on disk yet: it is built here as the
//! kernel's ext4_init_block_bitmap does, then the flag cleared), bg_itable_unused and the
//! bitmap checksums. Blocks are taken from a goal onwards, so that a file growing at its end
//! stays one extent; directories are spread over the groups, files stay near their directory.

use super::rw::{BG_BLOCK_UNINIT, BG_INODE_UNINIT};
use super::superblock::Incompat;
use super::{csum, Ext4};
use crate::fs::{Error, Result};
use std::ops::Range;

/// Whether bit `i` of a bitmap is set (bitmaps are little-endian bit order).
fn bit(map: &[u8], i: usize) -> bool {
    map[i / 8] & (1 << (i % 8)) != 0
}

fn set_bit(map: &mut [u8], i: usize, on: bool) {
    if on {
        map[i / 8] |= 1 << (i % 8);
    } else {
        map[i / 8] &= !(1 << (i % 8));
    }
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
        (self.sb.blocks_count - first).min(u64::from(self.sb.blocks_per_group))
    }

    /// The group holding block `blk`.
    pub(crate) fn group_of_block(&self, blk: u64) -> u32 {
        let g = blk.saturating_sub(u64::from(self.sb.first_data_block))
            / u64::from(self.sb.blocks_per_group);
        // OK: clamped below group_count, a u32.
        g.min(u64::from(self.sb.group_count) - 1) as u32
    }

    /// The block bitmap of group `g` as it is or, for a BLOCK_UNINIT group, as it would be
    /// initialised: the group's superblock copy, descriptor and reserved GDT blocks, and its
    /// own bitmaps and inode table where they lie inside it; the padding past its last block.
    pub(super) fn block_bitmap(&self, g: u32) -> Result<(u64, Vec<u8>, bool)> {
        let gd = self.group_desc_pub(g)?;
        let (flags, free) = self.gd_peek(g, |d| (d.flags(), d.free_blocks()))?;
        let bs = self.block_size() as usize;
        let n = self.blocks_in_group(g);
        let uninit = flags & BG_BLOCK_UNINIT != 0 && self.sb.group_csum().is_some();
        self.block_offset(gd.block_bitmap, 1, "block bitmap", 0)?;
        if !uninit {
            let b = self.meta_block(gd.block_bitmap, "block bitmap", 0)?;
            return Ok((gd.block_bitmap, b.to_vec(), false));
        }
        let mut map = vec![0u8; bs];
        let first = self.sb.group_first_block(g);
        let base = self.base_meta_blocks(g).min(n);
        // OK: n <= blocks_per_group <= 8 * block size.
        set_range(&mut map, 0, base as usize);
        let table = self.inode_table_blocks();
        for (start, len) in [
            (gd.block_bitmap, 1),
            (gd.inode_bitmap, 1),
            (gd.inode_table, table),
        ] {
            for b in start..start + len {
                if b >= first && b < first + n {
                    set_bit(&mut map, (b - first) as usize, true);
                }
            }
        }
        set_range(&mut map, n as usize, bs * 8);
        let used = (0..n as usize).filter(|&i| bit(&map, i)).count() as u64;
        if n - used != u64::from(free) {
            return Err(Error::corrupt(
                "group descriptor",
                0,
                gd.block_bitmap,
                format!(
                    "group {g}: BLOCK_UNINIT with {free} free blocks, but {} are free after \
                     its metadata",
                    n - used
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
            meta.push(first..first + self.base_meta_blocks(g).min(n));
            meta.push(gd.block_bitmap..gd.block_bitmap + 1);
            meta.push(gd.inode_bitmap..gd.inode_bitmap + 1);
            meta.push(gd.inode_table..gd.inode_table + table);
            let (blk, map, _) = self.block_bitmap(g)?;
            // OK: n <= blocks_per_group, which the superblock check bounds by 8 * block size.
            let n = n as usize;
            let mut count = 0u64;
            let mut i = 0;
            while i < n {
                if bit(&map, i) {
                    i += 1;
                    continue;
                }
                let s = i;
                while i < n && !bit(&map, i) {
                    i += 1;
                }
                count += (i - s) as u64;
                let r = first + s as u64..first + i as u64;
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
        let mut j = 0;
        for r in &free {
            while j < meta.len() && meta[j].end <= r.start {
                j += 1;
            }
            if let Some(m) = meta[j..]
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
        Ok(free.into_iter().map(|r| r.start * bs..r.end * bs).collect())
    }

    /// Blocks of one group's inode table.
    pub(crate) fn inode_table_blocks(&self) -> u64 {
        (u64::from(self.sb.inodes_per_group) * u64::from(self.sb.inode_size))
            .div_ceil(u64::from(self.block_size()))
    }

    /// Whether block `blk` of group `g` is the group's own fixed metadata (superblock copy,
    /// descriptors, its bitmaps, its inode table), which a damaged bitmap could claim free.
    fn is_group_metadata(&self, g: u32, blk: u64) -> Result<bool> {
        let first = self.sb.group_first_block(g);
        if blk < first + self.base_meta_blocks(g) || blk < u64::from(self.sb.first_data_block) {
            return Ok(true);
        }
        let gd = self.group_desc_pub(g)?;
        Ok(blk == gd.block_bitmap
            || blk == gd.inode_bitmap
            || (blk >= gd.inode_table && blk < gd.inode_table + self.inode_table_blocks()))
    }

    /// Writes back a changed block bitmap and the descriptor's count, flag and checksum.
    fn put_block_bitmap(&self, g: u32, blk: u64, map: Vec<u8>, delta_free: i64) -> Result<()> {
        let bitmap_csum = self
            .sb
            .metadata_csum
            // OK: blocks_per_group <= 8 * block size.
            .then(|| {
                csum::bitmap(
                    self.sb.csum_seed,
                    &map,
                    self.sb.blocks_per_group as usize / 8,
                )
            });
        self.put_meta(blk, map)?;
        self.gd_edit(g, |d| {
            let free = i64::from(d.free_blocks()) + delta_free;
            // OK: 0 <= free <= blocks_per_group, checked by the callers' bitmaps.
            d.set_free_blocks(free.clamp(0, i64::from(u32::MAX)) as u32);
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
        let goal = goal.clamp(
            u64::from(self.sb.first_data_block),
            self.sb.blocks_count - 1,
        );
        let g0 = self.group_of_block(goal);
        for k in 0..=groups {
            let g = (g0 + k % groups.max(1)) % groups;
            let free = self.gd_peek(g, |d| d.free_blocks())?;
            if free == 0 {
                continue;
            }
            let first = self.sb.group_first_block(g);
            let n = self.blocks_in_group(g) as usize;
            let start = if k == 0 { (goal - first) as usize } else { 0 };
            let (blk, mut map, _) = self.block_bitmap(g)?;
            let free_here =
                |i: usize| !bit(&map, i) && !self.freed_by_this_operation(first + i as u64);
            let Some(i) = (start..n).find(|&i| free_here(i)) else {
                continue;
            };
            let mut len = 1;
            while (len as u64) < want && i + len < n && free_here(i + len) {
                len += 1;
            }
            self.before_reuse(first + i as u64, first + (i + len) as u64)?;
            for j in i..i + len {
                if self.is_group_metadata(g, first + j as u64)? {
                    return Err(Error::corrupt(
                        "block bitmap",
                        0,
                        blk,
                        format!("group {g}: metadata block {} marked free", first + j as u64),
                    ));
                }
                set_bit(&mut map, j, true);
            }
            if u64::from(free) < len as u64 {
                return Err(Error::corrupt(
                    "group descriptor",
                    0,
                    blk,
                    format!("group {g}: {free} free blocks, but the bitmap has more"),
                ));
            }
            self.put_block_bitmap(g, blk, map, -(len as i64))?;
            return Ok((first + i as u64, len as u64));
        }
        Err(Error::NoSpace)
    }

    /// Frees blocks `start..start+len`. `meta`: they held metadata (a journal revokes them).
    /// A block already free, or one outside the data area, is damage.
    pub(crate) fn free_blocks(&self, start: u64, len: u64, meta: bool) -> Result<()> {
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.sb.blocks_count);
        let Some(end) = end else {
            return Err(Error::corrupt(
                "block map",
                0,
                start,
                format!("freeing {len} blocks past the end of the filesystem"),
            ));
        };
        let mut b = start;
        while b < end {
            let g = self.group_of_block(b);
            let first = self.sb.group_first_block(g);
            let stop = end.min(first + self.blocks_in_group(g));
            let (blk, mut map, _) = self.block_bitmap(g)?;
            for x in b..stop {
                // OK: x - first < blocks_per_group.
                let i = (x - first) as usize;
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
            self.put_block_bitmap(g, blk, map, (stop - b) as i64)?;
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
            let bs = self.block_size() as usize;
            let mut map = vec![0u8; bs];
            set_range(&mut map, self.sb.inodes_per_group as usize, bs * 8);
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
                self.sb.inodes_per_group as usize / 8,
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
        // OK: parent <= inodes_count, so the group fits u32.
        let pg = ((parent.max(1) - 1) / u64::from(ipg)) as u32 % groups;
        let start = if is_dir && groups > 1 {
            self.rw_dir_rotor() % groups
        } else {
            pg
        };
        for k in 0..groups {
            let g = (start + k) % groups;
            let (free, free_blocks) = self.gd_peek(g, |d| (d.free_inodes(), d.free_blocks()))?;
            if free == 0 || (is_dir && k + 1 < groups && free_blocks == 0) {
                continue;
            }
            let (blk, mut map) = self.inode_bitmap(g)?;
            let from = if g == 0 {
                self.sb.first_ino.saturating_sub(1) as usize
            } else {
                0
            };
            let Some(i) = (from..ipg as usize).find(|&i| !bit(&map, i)) else {
                continue;
            };
            let ino = u64::from(g) * u64::from(ipg) + i as u64 + 1;
            if ino > u64::from(self.sb.inodes_count) {
                continue;
            }
            set_bit(&mut map, i, true);
            let c = self.put_inode_bitmap(blk, map)?;
            let csum_groups = self.sb.group_csum().is_some();
            self.gd_edit(g, |d| {
                d.set_free_inodes(d.free_inodes() - 1);
                if is_dir {
                    d.set_used_dirs(d.used_dirs() + 1);
                }
                if csum_groups {
                    d.set_flags(d.flags() & !BG_INODE_UNINIT);
                    // OK: i < ipg.
                    let unused = ipg - i as u32 - 1;
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
        let ipg = u64::from(self.sb.inodes_per_group);
        // OK: ino was validated by the caller's inode read.
        let g = ((ino - 1) / ipg) as u32;
        let i = ((ino - 1) % ipg) as usize;
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
            d.set_free_inodes(d.free_inodes() + 1);
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
        let ipg = u64::from(self.sb.inodes_per_group);
        // OK: ino <= inodes_count.
        let g = ((ino.max(1) - 1) / ipg) as u32;
        self.sb.group_first_block(g)
    }
}
