//! Block group descriptors (Documentation/filesystems/ext4/group_descr.rst): an array right after
//! the superblock's block, 32 bytes each, or `s_desc_size` (>= 64) with the 64bit feature, whose
//! second half holds the high 32 bits of the block numbers. Only the inode table is needed to read.

use super::le32;
use crate::fs::{FsError, Result};

#[derive(Clone, Copy, Debug)]
pub struct GroupDesc {
    /// First block of this group's inode table.
    pub inode_table: u64,
}

impl GroupDesc {
    /// Parses one descriptor of `desc_size` bytes (already sliced out of its block).
    pub fn parse(b: &[u8], group: u32) -> Result<Self> {
        if b.len() < 32 {
            return Err(FsError::corrupt(
                "group descriptor",
                0,
                0,
                format!("group {group}: only {} bytes", b.len()),
            ));
        }
        let hi = if b.len() >= 64 {
            u64::from(le32(b, 0x28)) << 32
        } else {
            0
        };
        Ok(GroupDesc {
            inode_table: u64::from(le32(b, 0x8)) | hi,
        })
    }
}
