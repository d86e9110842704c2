//! ext2/3 block maps (Documentation/filesystems/ext4/blockmap.rst): `i_block` holds 12 direct
//! block numbers, then one indirect, one double-indirect and one triple-indirect block number.
//! Indirect blocks are arrays of `block_size / 4` little-endian u32; 0 is a hole.

use super::inode::Inode;
use super::{le32, Ext4, Run};
use crate::fs::Result;

const DIRECT: u64 = 12;

/// The run starting at index `i` of the pointer array `ptr(0..n)`: consecutive zeros (a hole) or
/// consecutive block numbers (contiguous data).
fn scan(ptr: impl Fn(usize) -> u32, n: usize, i: usize) -> Run {
    let first = ptr(i);
    let mut k = 1;
    if first == 0 {
        while i + k < n && ptr(i + k) == 0 {
            k += 1;
        }
        return Run::Hole(k as u64);
    }
    while i + k < n && u64::from(ptr(i + k)) == u64::from(first) + k as u64 {
        k += 1;
    }
    Run::Data {
        pblk: u64::from(first),
        len: k as u64,
    }
}

/// Maps logical block `lblk` of a block-mapped inode. Depth is fixed by the logical block
/// number (at most three indirect levels), so the walk cannot loop.
pub fn map(fs: &Ext4, inode: &Inode, lblk: u64) -> Result<Run> {
    if lblk < DIRECT {
        // OK: lblk < 12.
        return Ok(scan(
            |i| inode.i_block_u32(i),
            DIRECT as usize,
            lblk as usize,
        ));
    }
    let per = u64::from(fs.block_size() / 4);
    let mut rem = lblk - DIRECT;
    let mut span = per;
    let mut levels = 1;
    while rem >= span {
        rem -= span;
        levels += 1;
        if levels > 3 {
            // Past what a triple-indirect block can address: nothing is mapped there.
            return Ok(Run::Hole(u64::MAX - lblk));
        }
        span *= per;
    }
    let mut ptr = inode.i_block_u32(11 + levels);
    for level in 0..levels {
        if ptr == 0 {
            return Ok(Run::Hole(span - rem));
        }
        let blk = fs.meta_block(u64::from(ptr), "indirect block", inode.ino)?;
        let child_span = span / per;
        // OK: rem < span, so the index is < per = block_size / 4.
        let idx = (rem / child_span) as usize;
        rem %= child_span;
        span = child_span;
        if level + 1 == levels {
            return Ok(scan(|i| le32(&blk, i * 4), per as usize, idx));
        }
        ptr = le32(&blk, idx * 4);
    }
    // Unreachable: the loop returns at its last level.
    Ok(Run::Hole(1))
}
