//! Removed directory entries, read only for forensics (`ferry timeline`, issue 18): the
//! records `dir::deleted_records` finds in each directory block, with whether the inode they
//! name is in use again. Separate from readdir, which must never show them. Also the inodes
//! that are free but were once used, the candidates for fls's `$OrphanFiles`.

use super::rw::BG_INODE_UNINIT;
use super::{dir, htree, inode, superblock, Ext4, Run, MAX_LOGICAL_BLOCKS};
use crate::fs::{DeletedEntry, Error, FileType, Orphans, Result};

impl Ext4 {
    /// Whether inode `ino` is marked in use in its group's inode bitmap.
    pub fn inode_in_use(&self, ino: u64) -> Result<bool> {
        if ino == 0 || ino > u64::from(self.sb.inodes_count) {
            return Ok(false);
        }
        let ipg = u64::from(self.sb.inodes_per_group);
        // OK: ino <= inodes_count, so the group fits u32.
        let g = ((ino - 1) / ipg) as u32;
        let i = ((ino - 1) % ipg) as usize;
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
            for k in 0..len.min(blocks - lblk) {
                let Some(phys) = pblk.checked_add(k) else {
                    break;
                };
                let Ok(block) = self.meta_block(phys, "directory block", dir_ino) else {
                    continue;
                };
                if indexed && htree::is_interior(&block, lblk + k) {
                    continue;
                }
                let base = (lblk + k).saturating_mul(bs);
                for r in dir::deleted_records(&block, filetype, self.sb.inodes_count) {
                    let ino = u64::from(r.ino);
                    let at = base.saturating_add(r.offset as u64);
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
        let bs = self.block_size() as usize;
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
            let base = u64::from(g) * u64::from(ipg);
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
            let per_block = (bs / isz).max(1) as u64;
            let mut i = 0u64;
            while i < used {
                let blk = table + i / per_block;
                let block = match self.meta_block(blk, "inode table", base + i + 1) {
                    Ok(b) => b,
                    Err(e) => {
                        errors.push(format!("ext4 group {g} inode table block {blk}: {e}"));
                        i = (i / per_block + 1) * per_block;
                        continue;
                    }
                };
                let end = ((i / per_block + 1) * per_block).min(used);
                while i < end {
                    // OK: i < ipg, a u32, so it fits usize.
                    let bit = i as usize;
                    let free = map.get(bit / 8).is_some_and(|b| b & (1 << (bit % 8)) == 0);
                    // OK: the slot is inside the block (inode size divides the block size).
                    let at = (i % per_block) as usize * isz;
                    let ctime = block
                        .get(at + 0xc..at + 0x10)
                        .map_or(0, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                    if free && ctime != 0 {
                        out.push(base + i + 1);
                    }
                    i += 1;
                }
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
