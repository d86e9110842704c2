//! Block group descriptors (Documentation/filesystems/ext4/group_descr.rst): an array right after
//! the superblock's block, 32 bytes each, or `s_desc_size` (>= 64) with the 64bit feature, whose
//! second half holds the high 32 bits of the block numbers (and counts). Reading needs the inode
//! table; `statfs` needs the rest, to count metadata and free space as the kernel does.

use crate::bytes::{le16, le32};
use crate::fs::{Error, Result};

#[derive(Clone, Copy, Debug)]
pub struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    /// First block of this group's inode table.
    pub inode_table: u64,
    /// Free clusters (blocks without bigalloc) in this group.
    pub free_clusters: u32,
    pub free_inodes: u32,
}

impl GroupDesc {
    /// Parses one descriptor of `desc_size` bytes (already sliced out of its block).
    pub fn parse(b: &[u8], group: u32) -> Result<Self> {
        if b.len() < 32 {
            return Err(Error::corrupt(
                "group descriptor",
                0,
                0,
                format!("group {group}: only {} bytes", b.len()),
            ));
        }
        let wide = b.len() >= 64;
        let block = |lo: usize, hi: usize| {
            u64::from(le32(b, lo))
                | if wide {
                    u64::from(le32(b, hi)) << 32
                } else {
                    0
                }
        };
        let count = |lo: usize, hi: usize| {
            u32::from(le16(b, lo))
                | if wide {
                    u32::from(le16(b, hi)) << 16
                } else {
                    0
                }
        };
        Ok(GroupDesc {
            block_bitmap: block(0x0, 0x20),
            inode_bitmap: block(0x4, 0x24),
            inode_table: block(0x8, 0x28),
            free_clusters: count(0xc, 0x2c),
            free_inodes: count(0xe, 0x2e),
        })
    }
}
