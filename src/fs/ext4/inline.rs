//! inline_data (Documentation/filesystems/ext4/inlinedata.rst): small files, directories and
//! symlinks stored in the inode itself: the first 60 bytes in `i_block`, the rest in the value
//! of the in-inode extended attribute "system.data". An inline directory starts with the parent's
//! inode number (4 bytes) instead of "." and "..", followed by ordinary directory records.

use super::inode::{Inode, I_BLOCK_LEN};
use super::{le16, le32};
use crate::fs::{FsError, Result};

/// Magic at the start of the in-inode extended attribute area (EXT4_XATTR_MAGIC).
const XATTR_MAGIC: u32 = 0xea02_0000;
/// Each xattr entry: 16 bytes of header, then the name, padded to 4 bytes.
const ENTRY_HEADER: usize = 16;
/// Name index of "system." attributes (EXT4_XATTR_INDEX_SYSTEM).
const INDEX_SYSTEM: u8 = 7;

/// The value of "system.data" in the inode's extra space; empty when absent.
fn system_data(inode: &Inode) -> Result<&[u8]> {
    let area = &inode.xattr_area[..];
    let bad = |d: String| FsError::corrupt("in-inode xattrs", inode.ino, 0, d);
    if area.len() < 4 || le32(area, 0) != XATTR_MAGIC {
        return Ok(&[]);
    }
    // Entry offsets and value offsets count from just after the magic.
    let body = &area[4..];
    let mut off = 0;
    while off + 4 <= body.len() && le32(body, off) != 0 {
        if off + ENTRY_HEADER > body.len() {
            return Err(bad(format!("entry at {off} runs past the inode")));
        }
        let e = &body[off..];
        let name_len = usize::from(e[0]);
        let index = e[1];
        let value_offs = usize::from(le16(e, 2));
        let value_inum = le32(e, 4);
        let value_size = le32(e, 8) as usize;
        let next = (off + ENTRY_HEADER + name_len + 3) & !3;
        if off + ENTRY_HEADER + name_len > body.len() {
            return Err(bad(format!("entry name at {off} runs past the inode")));
        }
        if index == INDEX_SYSTEM && &e[ENTRY_HEADER..ENTRY_HEADER + name_len] == b"data" {
            if value_inum != 0 {
                return Err(bad("system.data stored in an EA inode".into()));
            }
            return value_offs
                .checked_add(value_size)
                .and_then(|end| body.get(value_offs..end))
                .ok_or_else(|| {
                    bad(format!(
                        "value {value_offs}+{value_size} runs past the inode"
                    ))
                });
        }
        off = next;
    }
    Ok(&[])
}

/// The bytes a file or symlink stores inline: i_block then "system.data", cut at `i_size`.
/// If `i_size` is larger, the rest reads as zeros (as the kernel's ext4_read_inline_folio
/// zero-fills the page after the inline bytes).
pub fn file_data(inode: &Inode) -> Result<Vec<u8>> {
    let extra = system_data(inode)?;
    // OK: min with I_BLOCK_LEN + extra.len(), a few KiB at most.
    let size = inode.size.min((I_BLOCK_LEN + extra.len()) as u64) as usize;
    let mut out = inode.i_block[..size.min(I_BLOCK_LEN)].to_vec();
    if size > I_BLOCK_LEN {
        out.extend_from_slice(&extra[..size - I_BLOCK_LEN]);
    }
    Ok(out)
}

/// An inline directory: the parent's inode number, and its two regions of directory records
/// (the rest of i_block, and "system.data", which may be empty).
pub fn dir_regions(inode: &Inode) -> Result<(u32, [&[u8]; 2])> {
    let extra = system_data(inode)?;
    Ok((le32(&inode.i_block, 0), [&inode.i_block[4..], extra]))
}
