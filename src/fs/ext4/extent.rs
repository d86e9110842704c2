//! Extent trees (Documentation/filesystems/ext4/ifork.rst, "Extent Tree"): a 12-byte header, then
//! 12-byte entries. Interior nodes hold index entries (first logical block, child block); leaves
//! hold extents (first logical block, length, first physical block). The root lives in `i_block`.
//! A length above 32768 marks an unwritten (preallocated) extent, which reads as zeros.

use super::inode::Inode;
use super::{csum, Ext4, Run};
use crate::bytes::{le16, le32};
use crate::fs::{Error, Result};

pub const MAGIC: u16 = 0xf30a;
/// The kernel's EXT4_MAX_EXTENT_DEPTH: deeper trees are damage. Depth also strictly decreases
/// from node to child, so the walk cannot loop.
pub const MAX_DEPTH: u16 = 5;
pub(crate) const HEADER_LEN: usize = 12;
pub(crate) const ENTRY_LEN: usize = 12;
/// Lengths above this are unwritten extents of (len - 32768) blocks.
pub(crate) const MAX_INIT_LEN: u32 = 32768;
/// Extents address 32-bit logical block numbers.
const LOGICAL_END: u64 = 1 << 32;

pub(crate) struct Header {
    pub entries: usize,
    pub depth: u16,
}

pub(crate) fn header(node: &[u8], ino: u64, blk: u64) -> Result<Header> {
    let bad = |d: String| Error::corrupt("extent header", ino, blk, d);
    if node.len() < HEADER_LEN {
        return Err(bad(format!("node of {} bytes", node.len())));
    }
    let magic = le16(node, 0);
    if magic != MAGIC {
        return Err(
            bad("eh_magic".into()).expected(format!("{MAGIC:#06x}"), format!("{magic:#06x}"))
        );
    }
    let entries = usize::from(le16(node, 2));
    let max = usize::from(le16(node, 4));
    let fit = node.len().saturating_sub(HEADER_LEN) / ENTRY_LEN;
    if entries > max || max > fit {
        return Err(bad(format!("eh_entries {entries}, eh_max {max}"))
            .expected(format!("at most {} entries", max.min(fit)), entries));
    }
    Ok(Header {
        entries,
        depth: le16(node, 6),
    })
}

/// Maps logical block `lblk` of `inode`: the run of blocks from `lblk` that is data at one
/// physical place, unwritten, or a hole (up to the next extent).
pub fn map(fs: &Ext4, inode: &Inode, lblk: u64) -> Result<Run> {
    let ino = inode.ino;
    if lblk >= LOGICAL_END {
        return Ok(Run::Hole(u64::MAX.saturating_sub(lblk)));
    }
    // Where the logical range of the current node ends (the next index entry of an ancestor).
    let mut bound = LOGICAL_END;
    let mut node_blk = 0; // 0: the root in i_block
    let mut owned;
    let mut node: &[u8] = &inode.i_block;
    let mut expected_depth: Option<u16> = None;
    loop {
        let h = header(node, ino, node_blk)?;
        let bad = |d: String| Error::corrupt("extent tree", ino, node_blk, d);
        match expected_depth {
            None if h.depth > MAX_DEPTH => return Err(bad(format!("depth {}", h.depth))),
            Some(d) if h.depth != d => {
                return Err(bad(format!("node depth {}, expected {d}", h.depth)))
            }
            _ => {}
        }
        // Entry i (header() checked that eh_entries fit the node; fields past it read as 0).
        let entry = |i: usize| {
            node.get(HEADER_LEN..)
                .and_then(|r| r.chunks_exact(ENTRY_LEN).nth(i))
                .unwrap_or(&[])
        };
        if h.depth == 0 {
            let mut prev_end = 0u64;
            for i in 0..h.entries {
                let e = entry(i);
                let start = u64::from(le32(e, 0));
                let raw = u32::from(le16(e, 4));
                let (len, unwritten) = if raw > MAX_INIT_LEN {
                    (raw.saturating_sub(MAX_INIT_LEN), true)
                } else {
                    (raw, false)
                };
                let len = u64::from(len);
                let pblk = u64::from(le32(e, 8)) | (u64::from(le16(e, 6)) << 32);
                if len == 0 || start < prev_end {
                    return Err(bad(format!(
                        "extent {i} (logical {start}, length {len}) overlaps or is empty"
                    )));
                }
                // A u32 start plus a 16-bit length: no overflow; the differences below are
                // taken in the order the comparisons establish.
                let end = start.saturating_add(len);
                if lblk < start {
                    return Ok(Run::Hole(start.saturating_sub(lblk)));
                }
                if lblk < end {
                    let skip = lblk.saturating_sub(start);
                    let len = end.saturating_sub(lblk);
                    if unwritten {
                        return Ok(Run::Zero(len));
                    }
                    let pblk = pblk
                        .checked_add(skip)
                        .ok_or_else(|| bad(format!("extent {i}: block {pblk} overflows")))?;
                    return Ok(Run::Data { pblk, len });
                }
                prev_end = end;
            }
            return Ok(Run::Hole(bound.saturating_sub(lblk).max(1)));
        }
        // Index node: the last entry starting at or before lblk covers it.
        let mut chosen = None;
        let mut prev: Option<u64> = None;
        for i in 0..h.entries {
            let first = u64::from(le32(entry(i), 0));
            if prev.is_some_and(|p| first <= p) {
                return Err(bad(format!("index entries out of order at {i}")));
            }
            prev = Some(first);
            if first <= lblk {
                chosen = Some(i);
            } else {
                bound = bound.min(first);
                break;
            }
        }
        let Some(i) = chosen else {
            // Before the first index entry (or no entries at all): a hole up to it.
            return Ok(Run::Hole(bound.saturating_sub(lblk).max(1)));
        };
        let e = entry(i);
        let child = u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32);
        // h.depth > 0 here (leaves returned above).
        expected_depth = Some(h.depth.saturating_sub(1));
        let seed = fs.inode_seed(inode);
        owned = fs.checked_block(child, "extent tree node", ino, |b| {
            // The tail follows eh_max entries; an invalid header is reported by `header`.
            let max = usize::from(le16(b, 4));
            if csum::extent_block_ok(seed, b, max) {
                Ok(())
            } else {
                Err(format!("extent tail after {max} entries"))
            }
        })?;
        node_blk = child;
        node = &owned;
    }
}
