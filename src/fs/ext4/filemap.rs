//! A file's block mapping while one operation edits it: the extent list of an extent-mapped
//! inode (stored back once, at the end, by `store_extents`), or the block map of an ext2/3
//! inode (edited in place). The write, truncate and directory code go through this alone, so
//! they work the same on both.

use super::extent_write::{self, Ext};
use super::inode::{self, InodeBuf};
use super::superblock::RoCompat;
use super::{Ext4, Run};
use crate::fs::{Error, Result};

pub(crate) enum FileMap {
    Extents { exts: Vec<Ext>, nodes: Vec<u64> },
    Blocks,
}

/// What a logical block is in a file being edited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// `len` blocks of data from `pblk`.
    Data { pblk: u64, len: u64 },
    /// `len` allocated blocks from `pblk` that read as zeros (an unwritten extent).
    Unwritten { pblk: u64, len: u64 },
    /// `len` unmapped blocks.
    Hole(u64),
}

impl Ext4 {
    /// The mapping of `b`, which must have one (not inline data, not a fast symlink), and
    /// whose i_blocks ferry can keep (not counted in filesystem blocks: EXT4_HUGE_FILE_FL).
    pub(crate) fn load_map(&self, b: &InodeBuf) -> Result<FileMap> {
        let i = b.parse(&self.sb)?;
        if i.flags & inode::FL_INLINE_DATA != 0 || i.flags & inode::FL_HUGE_FILE != 0 {
            return Err(Error::ReadOnly);
        }
        if i.flags & inode::FL_EXTENTS != 0 {
            let (exts, nodes) = self.extents_of(&i)?;
            Ok(FileMap::Extents { exts, nodes })
        } else {
            Ok(FileMap::Blocks)
        }
    }

    pub(crate) fn fm_lookup(&self, fm: &FileMap, b: &InodeBuf, lblk: u64) -> Result<Seg> {
        match fm {
            FileMap::Extents { exts, .. } => {
                let i = exts.partition_point(|e| e.end() <= lblk);
                Ok(match (exts.get(i), extent_write::lookup(exts, lblk)) {
                    (Some(e), Run::Zero(len)) => Seg::Unwritten {
                        // lblk lies in e (the lookup found it unwritten there).
                        pblk: e.pblk.saturating_add(lblk.saturating_sub(e.lblk)),
                        len,
                    },
                    (_, Run::Data { pblk, len }) => Seg::Data { pblk, len },
                    (_, Run::Hole(len)) | (None, Run::Zero(len)) => Seg::Hole(len),
                })
            }
            FileMap::Blocks => {
                let i = b.parse(&self.sb)?;
                Ok(match super::blockmap::map(self, &i, lblk)? {
                    Run::Data { pblk, len } => Seg::Data { pblk, len },
                    Run::Zero(len) | Run::Hole(len) => Seg::Hole(len),
                })
            }
        }
    }

    /// A goal for new blocks at `lblk`: right after the data before it, else near the inode.
    fn fm_goal(&self, fm: &FileMap, b: &InodeBuf, lblk: u64) -> Result<u64> {
        let near = match fm {
            FileMap::Extents { exts, .. } => extent_write::goal(exts, lblk),
            FileMap::Blocks if lblk > 0 => match self.fm_lookup(fm, b, lblk.saturating_sub(1))? {
                Seg::Data { pblk, .. } => pblk.checked_add(1),
                _ => None,
            },
            FileMap::Blocks => None,
        };
        Ok(near.unwrap_or_else(|| self.inode_goal(b.ino)))
    }

    /// Allocates and maps up to `len` blocks for the hole at `lblk`; returns (pblk, count).
    pub(crate) fn fm_alloc(
        &self,
        fm: &mut FileMap,
        b: &mut InodeBuf,
        lblk: u64,
        len: u64,
    ) -> Result<(u64, u64)> {
        // Logical block numbers are 32 bits in both mappings.
        if lblk.checked_add(len).is_none_or(|e| e > 1u64 << 32) {
            return Err(Error::TooBig);
        }
        let goal = self.fm_goal(fm, b, lblk)?;
        let (pblk, n) = self.alloc_blocks(goal, len)?;
        // i_blocks stays far below 2^64 (48 bits on disk).
        let added = n.saturating_mul(u64::from(self.block_size() / 512));
        b.set_blocks512(b.blocks512().saturating_add(added));
        match fm {
            FileMap::Extents { exts, .. } => extent_write::insert(
                exts,
                Ext {
                    lblk,
                    len: n,
                    pblk,
                    unwritten: false,
                },
            ),
            FileMap::Blocks => {
                // Inside the checked logical range and the allocated run.
                for k in 0..n {
                    self.bmap_set(b, lblk.saturating_add(k), pblk.saturating_add(k))?;
                }
            }
        }
        Ok((pblk, n))
    }

    pub(crate) fn fm_mark_written(fm: &mut FileMap, lblk: u64, len: u64) {
        if let FileMap::Extents { exts, .. } = fm {
            extent_write::mark_written(exts, lblk, len);
        }
    }

    /// Unmaps and frees everything from logical block `from` on (`meta`: directory blocks).
    pub(crate) fn fm_truncate(
        &self,
        fm: &mut FileMap,
        b: &mut InodeBuf,
        from: u64,
        meta: bool,
    ) -> Result<()> {
        match fm {
            FileMap::Extents { exts, .. } => {
                let per = u64::from(self.block_size() / 512);
                let mut runs = super::blockmap::Freed::default();
                for (p, n) in extent_write::truncate(exts, from) {
                    for k in 0..n {
                        // Inside a mapped extent.
                        runs.push(p.saturating_add(k));
                    }
                }
                for (p, n) in runs.runs() {
                    self.free_blocks(p, n, meta)?;
                    b.set_blocks512(b.blocks512().saturating_sub(n.saturating_mul(per)));
                }
                Ok(())
            }
            FileMap::Blocks => self.bmap_truncate(b, from, meta),
        }
    }

    /// Stores the edited mapping into `b` (the extent tree is laid out again).
    pub(crate) fn fm_store(&self, fm: FileMap, b: &mut InodeBuf) -> Result<()> {
        if let FileMap::Extents { exts, nodes } = fm {
            self.store_extents(b, &exts, nodes)?;
        }
        let limit = if self.sb.has_ro_compat(RoCompat::HUGE_FILE) {
            (1u64 << 48) - 1
        } else {
            u64::from(u32::MAX)
        };
        if b.blocks512() > limit {
            return Err(Error::TooBig);
        }
        Ok(())
    }
}
