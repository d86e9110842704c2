//! inline_data (Documentation/filesystems/ext4/inlinedata.rst): small files, directories and
//! symlinks stored in the inode itself: the first 60 bytes in `i_block`, the rest in the value
//! of the in-inode extended attribute "system.data". An inline directory starts with the parent's
//! inode number (4 bytes) instead of "." and "..", followed by ordinary directory records.

use super::inode::{Inode, I_BLOCK_LEN};
use super::superblock::Superblock;
use super::xattr::{self, Value};
use crate::bytes::le32;
use crate::fs::{Error, Result};

/// The value of "system.data" in the inode's extra space; empty when absent.
fn system_data<'a>(inode: &'a Inode, sb: &Superblock) -> Result<&'a [u8]> {
    let entries = xattr::parse_ibody(&inode.xattr_area, sb, inode.ino)?;
    match xattr::find_unsorted(&entries, xattr::INDEX_SYSTEM, b"data").map(|e| e.value) {
        None => Ok(&[]),
        Some(Value::Here(v)) => Ok(v),
        Some(Value::Inode { .. }) => Err(Error::corrupt(
            "in-inode xattrs",
            inode.ino,
            0,
            "system.data stored in an EA inode",
        )),
    }
}

/// The bytes a file or symlink stores inline: i_block then "system.data", cut at `i_size`.
/// If `i_size` is larger, the rest reads as zeros (as the kernel's ext4_read_inline_folio
/// zero-fills the page after the inline bytes).
pub fn file_data(inode: &Inode, sb: &Superblock) -> Result<Vec<u8>> {
    let extra = system_data(inode, sb)?;
    // i_block, then as much of "system.data" as i_size still asks for.
    let size = usize::try_from(inode.size).unwrap_or(usize::MAX);
    let mut out = inode.i_block[..size.min(I_BLOCK_LEN)].to_vec();
    let more = size.saturating_sub(I_BLOCK_LEN).min(extra.len());
    out.extend_from_slice(&extra[..more]);
    Ok(out)
}

/// An inline directory: the parent's inode number, and its two regions of directory records
/// (the rest of i_block, and "system.data", which may be empty).
pub fn dir_regions<'a>(inode: &'a Inode, sb: &Superblock) -> Result<(u32, [&'a [u8]; 2])> {
    let extra = system_data(inode, sb)?;
    Ok((le32(&inode.i_block, 0), [&inode.i_block[4..], extra]))
}
