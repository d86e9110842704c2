//! Removed directory entries, read only for forensics (`ferry timeline`, issue 18): the
//! records `dir::deleted_records` finds in each directory block, with whether the inode they
//! name is in use again. Separate from readdir, which must never show them. Also the inodes
//! that are free but were once used, the candidates for fls's `$OrphanFiles`.

use super::rw::BG_INODE_UNINIT;
use super::{dir, htree, inode, superblock, Ext4, Run, MAX_LOGICAL_BLOCKS};
use crate::bytes::{le32, wide};
use crate::fs::{DeletedEntry, Error, FileType, Orphans, Result};

impl Ext4 {
    /// Whether inode `ino` is marked in use in its group's inode bitmap.
    pub fn inode_in_use(&self, ino: u64) -> Result<bool> {
        if ino == 0 || ino > u64::from(self.sb.inodes_count) {
            return Ok(false);
        }
        let ipg = u64::from(self.sb.inodes_per_group);
        // ino >= 1 (above); s_inodes_per_group is nonzero (the superblock's check) and
        // ino <= inodes_count, so the group fits u32 and the index a usize.
        let n = ino.saturating_sub(1);
        let place = n.checked_div(ipg).zip(n.checked_rem(ipg));
        let Some((g, i)) =
            place.and_then(|(g, i)| u32::try_from(g).ok().zip(usize::try_from(i).ok()))
        else {
            return Err(Error::corrupt(
                "superblock",
                ino,
                0,
                format!("s_inodes_per_group {ipg} places no inode"),
            ));
        };
        let (blk, map) = self.inode_bitmap(g)?;
        map.get(i / 8)
            .map(|b| b & (1 << (i % 8)) != 0)
            .ok_or_else(|| Error::corrupt("inode bitmap", ino, blk, "shorter than its group"))
    }

    /// The removed entries still readable in directory `dir_ino`'s blocks, in block order.
    /// Inline, encrypted (names are ciphertext) and hash-index interior blocks are not
    /// searched; a block that cannot be read is skipped (its live entries are readdir's
    /// business, which reports the damage).
    pub fn deleted_entries(&self, dir_ino: u64) -> Result<Vec<DeletedEntry>> {
        Ok(self
            .deleted_entries_at(dir_ino)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// `deleted_entries`, each with its byte position in the directory.
    fn deleted_entries_at(&self, dir_ino: u64) -> Result<Vec<(u64, DeletedEntry)>> {
        let d = self.inode(dir_ino)?;
        if d.kind != FileType::Directory {
            return Err(Error::NotDir(dir_ino));
        }
        if d.flags & (inode::FL_INLINE_DATA | inode::FL_ENCRYPT) != 0 {
            return Ok(Vec::new());
        }
        let bs = u64::from(self.block_size());
        let blocks = d.size.div_ceil(bs).min(MAX_LOGICAL_BLOCKS);
        let filetype = self.sb.has_incompat(superblock::Incompat::FILETYPE);
        let indexed = self.is_indexed(&d);
        let mut out = Vec::new();
        let mut lblk = 0;
        while lblk < blocks {
            let (pblk, len) = match self.map(&d, lblk)? {
                Run::Data { pblk, len } => (pblk, len),
                Run::Zero(len) | Run::Hole(len) => {
                    lblk = lblk.saturating_add(len.max(1));
                    continue;
                }
            };
            // lblk < blocks (the loop's condition).
            for k in 0..len.min(blocks.saturating_sub(lblk)) {
                let Some(phys) = pblk.checked_add(k) else {
                    break;
                };
                let Ok(block) = self.meta_block(phys, "directory block", dir_ino) else {
                    continue;
                };
                // lblk + k < blocks.
                let lblk = lblk.saturating_add(k);
                if indexed && htree::is_interior(&block, lblk) {
                    continue;
                }
                let base = lblk.saturating_mul(bs);
                for r in dir::deleted_records(&block, filetype, self.sb.inodes_count) {
                    let ino = u64::from(r.ino);
                    let at = base.saturating_add(wide(r.offset));
                    out.push((
                        at,
                        DeletedEntry {
                            ino,
                            name: r.name,
                            kind: r.kind,
                            reallocated: self.inode_in_use(ino).unwrap_or(false),
                            stale: false,
                        },
                    ));
                }
            }
            lblk = lblk.saturating_add(len.max(1));
        }
        Ok(out)
    }

    /// Every record of directory `dir_ino` (removed itself, its blocks still there): its live
    /// records and those `deleted_entries` finds, in the order they lie in the directory as
    /// fls lists them (its orphan de-duplication stops at a record in use, so the order
    /// matters), each marked `reallocated` when its inode is in use (fls's
    /// "(deleted-realloc)": a name in a removed directory is removed too).
    pub fn removed_dir_entries(&self, dir_ino: u64) -> Result<Vec<DeletedEntry>> {
        let d = self.inode(dir_ino)?;
        if d.flags & inode::FL_ENCRYPT != 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        self.walk_dir(&d, 0, None, &mut |e, at, _| {
            if e.ino != 0 && e.name != b"." && e.name != b".." {
                let ino = u64::from(e.ino);
                out.push((
                    at,
                    DeletedEntry {
                        ino,
                        name: e.name.to_vec(),
                        kind: e.kind,
                        reallocated: self.inode_in_use(ino).unwrap_or(false),
                        stale: false,
                    },
                ));
            }
            Ok(true)
        })?;
        out.extend(self.deleted_entries_at(dir_ino)?);
        // Stable: a live record and a removed one never share a position.
        out.sort_by_key(|(at, _)| *at);
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }

    /// The inodes free in their group's bitmap whose change time is set, in number order:
    /// files removed whose inode still holds their metadata. The Sleuth Kit takes exactly
    /// these (free, and `i_ctime` nonzero) as candidates for `$OrphanFiles`; a freshly made
    /// filesystem has none. Bounded by the inode tables: an INODE_UNINIT group was never
    /// used and the tail a group's `bg_itable_unused` counts never held an inode, so neither
    /// is read. A group whose bitmap or table cannot be read is skipped and named in `errors`.
    pub fn free_used_inodes(&self, errors: &mut Vec<String>) -> Vec<u64> {
        let ipg = self.sb.inodes_per_group;
        let isz = usize::from(self.sb.inode_size);
        let bs = self.block_size_usize();
        let csum = self.sb.group_csum().is_some();
        let mut out = Vec::new();
        for g in 0..self.sb.group_count {
            let (flags, unused) = match self.gd_peek(g, |d| (d.flags(), d.itable_unused())) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(format!("ext4 group {g} descriptor: {e}"));
                    continue;
                }
            };
            if csum && flags & BG_INODE_UNINIT != 0 {
                continue;
            }
            let used = if csum {
                ipg.saturating_sub(unused)
            } else {
                ipg
            };
            // u32 × u32: no overflow.
            let base = u64::from(g).saturating_mul(u64::from(ipg));
            let used = u64::from(used).min(u64::from(self.sb.inodes_count).saturating_sub(base));
            if used == 0 {
                continue;
            }
            let map = match self.inode_bitmap(g) {
                Ok((_, m)) => m,
                Err(e) => {
                    errors.push(format!("ext4 group {g} inode bitmap: {e}"));
                    continue;
                }
            };
            let table = match self.group_desc_pub(g) {
                Ok(gd) => gd.inode_table,
                Err(e) => {
                    errors.push(format!("ext4 group {g} inode table: {e}"));
                    continue;
                }
            };
            // At least 1: the walk below always advances.
            let per_block = wide(bs.checked_div(isz).unwrap_or(0).max(1));
            // Block by block of the table: the group's inodes [first, end) are in block `blk`.
            // (All below ipg, a u32: the saturating steps never saturate.)
            let (mut first, mut blk) = (0u64, table);
            while first < used {
                let end = first.saturating_add(per_block).min(used);
                let ino = base.saturating_add(first).saturating_add(1);
                match self.meta_block(blk, "inode table", ino) {
                    Ok(block) => {
                        for (i, slot) in (first..end).zip(0usize..) {
                            // i < ipg, a u32, so it fits usize.
                            let bit = usize::try_from(i).unwrap_or(usize::MAX);
                            let free = map.get(bit / 8).is_some_and(|b| b & (1 << (bit % 8)) == 0);
                            // i_ctime of the slot (inside the block: the inode size divides
                            // the block size; past it would read 0).
                            let ctime = le32(&block, slot.saturating_mul(isz).saturating_add(0xc));
                            if free && ctime != 0 {
                                out.push(base.saturating_add(i).saturating_add(1));
                            }
                        }
                    }
                    Err(e) => errors.push(format!("ext4 group {g} inode table block {blk}: {e}")),
                }
                first = end;
                blk = blk.saturating_add(1);
            }
        }
        out
    }

    /// `free_used_inodes` with the number fls gives its `$OrphanFiles` directory (one past
    /// the last inode).
    pub fn orphan_candidates(&self, errors: &mut Vec<String>) -> Orphans {
        Orphans {
            dir_ino: u64::from(self.sb.inodes_count) + 1,
            inodes: self.free_used_inodes(errors),
            names: Default::default(),
        }
    }
}
