//! Directory data blocks (xfs_da_format.h `xfs_dir2_data_hdr`, `xfs_dir3_data_hdr`,
//! `xfs_dir2_data_entry`, `xfs_dir2_block_tail`): a header ("XD2D"/"XDD3"; "XD2B"/"XDB3" for a
//! single-block directory), then 8-byte aligned records: entries (inode number, name length,
//! name, file type with ftype, a tag that is the record's own offset) and free spaces (0xffff,
//! length, ..., tag). A single-block directory ends with its leaf (hash, address) pairs and a
//! tail (count, stale).

use crate::bytes::{be16, be32, be64};

pub const BLOCK_MAGIC_V4: u32 = 0x5844_3242;
pub const BLOCK_MAGIC_V5: u32 = 0x5844_4233;
pub const DATA_MAGIC_V4: u32 = 0x5844_3244;
pub const DATA_MAGIC_V5: u32 = 0x5844_4433;
/// Offsets of CRC, self address, UUID and owner in `xfs_dir3_blk_hdr`.
pub const V5_HEADER: [usize; 4] = [4, 8, 24, 40];
const HDR_V4: usize = 16;
const HDR_V5: usize = 64;
const FREE_TAG: u16 = 0xffff;

#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// Offset of the record in its block.
    pub off: usize,
    /// Bytes the record takes.
    pub len: usize,
    pub ino: u64,
    pub name: &'a [u8],
    /// The file type byte (0 without ftype).
    pub ftype: u8,
}

/// Whether the magic is right for the filesystem version; Some(true) for a block-form block.
pub fn kind(b: &[u8], v5: bool) -> Option<bool> {
    match (be32(b, 0), v5) {
        (BLOCK_MAGIC_V4, false) | (BLOCK_MAGIC_V5, true) => Some(true),
        (DATA_MAGIC_V4, false) | (DATA_MAGIC_V5, true) => Some(false),
        _ => None,
    }
}

/// Where the records of a block end: before the leaf and tail in a single-block directory.
fn records_end(b: &[u8], v5: bool, block_form: bool) -> Result<usize, String> {
    if !block_form {
        return Ok(b.len());
    }
    let count = be32(b, b.len() - 8) as usize;
    let hdr = if v5 { HDR_V5 } else { HDR_V4 };
    count
        .checked_mul(8)
        .and_then(|l| (b.len() - 8).checked_sub(l))
        .filter(|&e| e >= hdr)
        .ok_or_else(|| format!("block tail counts {count} leaf entries"))
}

/// The (hash, address) pairs of a single-block directory.
pub fn block_leaf(b: &[u8], v5: bool) -> Result<&[u8], String> {
    let end = records_end(b, v5, true)?;
    Ok(&b[end..b.len() - 8])
}

fn entry_size(namelen: usize, ftype: bool) -> usize {
    (8 + 1 + namelen + usize::from(ftype) + 2).next_multiple_of(8)
}

/// The entry at `off`, as a leaf address points to it.
pub fn entry_at(b: &[u8], off: usize, ftype: bool) -> Result<Entry<'_>, String> {
    if off + 12 > b.len() || be16(b, off) == FREE_TAG {
        return Err(format!("no entry at offset {off}"));
    }
    let namelen = usize::from(b[off + 8]);
    let len = entry_size(namelen, ftype);
    if namelen == 0 || off + len > b.len() {
        return Err(format!("entry at {off} with a name of {namelen} bytes"));
    }
    if usize::from(be16(b, off + len - 2)) != off {
        return Err(format!(
            "entry at {off} has the tag {}",
            be16(b, off + len - 2)
        ));
    }
    Ok(Entry {
        off,
        len,
        ino: be64(b, off),
        name: &b[off + 9..off + 9 + namelen],
        ftype: if ftype { b[off + 9 + namelen] } else { 0 },
    })
}

/// Every record of a data or single-block block, in order: entries as `Some`, free space as
/// None with its offset and length.
pub fn records(
    b: &[u8],
    v5: bool,
    ftype: bool,
) -> Result<Vec<(usize, usize, Option<Entry<'_>>)>, String> {
    let block_form = kind(b, v5).ok_or_else(|| format!("magic {:#x}", be32(b, 0)))?;
    let end = records_end(b, v5, block_form)?;
    let mut p = if v5 { HDR_V5 } else { HDR_V4 };
    let mut out = Vec::new();
    while p < end {
        if be16(b, p) == FREE_TAG {
            let len = usize::from(be16(b, p + 2));
            if len < 8 || len % 8 != 0 || p + len > end {
                return Err(format!("free space of {len} bytes at {p}"));
            }
            out.push((p, len, None));
            p += len;
            continue;
        }
        let e = entry_at(&b[..end], p, ftype)?;
        out.push((p, e.len, Some(e)));
        p += e.len;
    }
    Ok(out)
}
