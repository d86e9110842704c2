//! Removed directory entries, read only for forensics (`ferry timeline`, issue 18): the
//! records `dir::deleted_records` finds in each directory block, with whether the inode they
//! name is in use again. Separate from readdir, which must never show them.

use super::{dir, htree, inode, superblock, Ext4, Run, MAX_LOGICAL_BLOCKS};
use crate::fs::{DeletedEntry, FileType, FsError, Result};

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
            .ok_or_else(|| FsError::corrupt("inode bitmap", ino, blk, "shorter than its group"))
    }

    /// The removed entries still readable in directory `dir_ino`'s blocks, in block order.
    /// Inline, encrypted (names are ciphertext) and hash-index interior blocks are not
    /// searched; a block that cannot be read is skipped (its live entries are readdir's
    /// business, which reports the damage).
    pub fn deleted_entries(&self, dir_ino: u64) -> Result<Vec<DeletedEntry>> {
        let d = self.inode(dir_ino)?;
        if d.kind != FileType::Directory {
            return Err(FsError::NotDir(dir_ino));
        }
        if d.flags & (inode::FL_INLINE_DATA | inode::FL_ENCRYPT) != 0 {
            return Ok(Vec::new());
        }
        let bs = u64::from(self.block_size());
        let blocks = d.size.div_ceil(bs).min(MAX_LOGICAL_BLOCKS);
        let filetype = self.sb.has_incompat(superblock::INCOMPAT_FILETYPE);
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
                for r in dir::deleted_records(&block, filetype, self.sb.inodes_count) {
                    let ino = u64::from(r.ino);
                    out.push(DeletedEntry {
                        ino,
                        name: r.name,
                        kind: r.kind,
                        reallocated: self.inode_in_use(ino).unwrap_or(false),
                    });
                }
            }
            lblk = lblk.saturating_add(len.max(1));
        }
        Ok(out)
    }
}
