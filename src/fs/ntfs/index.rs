//! Directory indexes: $INDEX_ROOT (resident: the root node) and $INDEX_ALLOCATION (INDX
//! blocks, each a node protected by fixups), a B+ tree whose entries carry a $FILE_NAME key,
//! the MFT reference of the file, and, when the entry has a subnode, the VCN of the child
//! block holding the keys that sort before it (Linux-NTFS documentation, "$INDEX_ROOT",
//! "$INDEX_ALLOCATION", "Index Entry").

use super::fixup;
use super::flaw::Flaw;
use crate::bytes::{le16, le32, le64};

/// Entry flag: a child node precedes this entry.
pub const ENTRY_SUBNODE: u32 = 1;
/// Entry flag: the last entry of a node (no key; may still have a child).
pub const ENTRY_LAST: u32 = 2;
/// $I30 indexes are sorted by COLLATION_FILENAME.
pub const COLLATION_FILENAME: u32 = 1;
/// Entries in one node: a 64 KiB block of the smallest (16-byte) entries has fewer.
pub const MAX_NODE_ENTRIES: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub mref: u64,
    /// The key ($FILE_NAME value for $I30); empty for the last entry.
    pub key: Vec<u8>,
    pub child: Option<u64>,
    pub last: bool,
}

/// $INDEX_ROOT's own header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub indexed_type: u32,
    pub collation: u32,
    pub block_size: u32,
    pub entries: Vec<Entry>,
}

/// The entries of the node whose index header starts at `hdr` in `b`.
fn entries(b: &[u8], hdr: usize) -> Result<Vec<Entry>, Flaw> {
    let h = b.get(hdr..).unwrap_or_default();
    let first = usize::try_from(le32(h, 0)).unwrap_or(usize::MAX);
    let used = usize::try_from(le32(h, 4)).unwrap_or(usize::MAX);
    let start = hdr
        .checked_add(first)
        .filter(|&s| first >= 16 && s <= b.len());
    let node = hdr.checked_add(used).and_then(|e| b.get(..e));
    let (Some(mut pos), Some(node)) = (start, node) else {
        return Err(Flaw::at(
            hdr,
            format!(
                "entries from {first} to {used} past the node's {} bytes",
                b.len()
            ),
        ));
    };
    let end = node.len();
    let mut out = Vec::new();
    loop {
        // Offsets of the entry at `pos`, inside the node: no saturation.
        let at = |off: usize| pos.saturating_add(off);
        let Some(e) = node.get(pos..).filter(|e| e.len() >= 16) else {
            return Err(Flaw::at(
                pos,
                format!("entry at byte {pos} runs past the node's end {end}"),
            ));
        };
        let len = usize::from(le16(e, 8));
        let key_len = usize::from(le16(e, 10));
        let flags = le32(e, 12);
        let Some(e) = e.get(..len).filter(|_| len >= 16 && len % 8 == 0) else {
            return Err(Flaw::at(
                at(8),
                format!("entry at byte {pos}: length {len}"),
            ));
        };
        let last = flags & ENTRY_LAST != 0;
        // The subnode VCN is the entry's last 8 bytes; the key must end before it.
        let (room, child) = if flags & ENTRY_SUBNODE != 0 {
            let Some((room, vcn)) = e.split_last_chunk::<8>().filter(|_| len >= 24) else {
                return Err(Flaw::at(
                    pos,
                    format!("entry at byte {pos}: no room for its subnode VCN"),
                ));
            };
            (room, Some(u64::from_le_bytes(*vcn)))
        } else {
            (e, None)
        };
        let key = if last {
            Vec::new()
        } else {
            room.get(16..)
                .and_then(|k| k.get(..key_len))
                .ok_or_else(|| {
                    Flaw::at(
                        at(10),
                        format!("entry at byte {pos}: key of {key_len} bytes"),
                    )
                })?
                .to_vec()
        };
        if out.len() >= MAX_NODE_ENTRIES {
            return Err(Flaw::at(
                pos,
                format!("more than {MAX_NODE_ENTRIES} entries"),
            ));
        }
        out.push(Entry {
            mref: le64(e, 0),
            key,
            child,
            last,
        });
        if last {
            return Ok(out);
        }
        pos = at(len);
    }
}

impl Root {
    pub fn parse(b: &[u8]) -> Result<Self, Flaw> {
        if b.len() < 0x20 {
            return Err(format!("$INDEX_ROOT of {} bytes", b.len()).into());
        }
        Ok(Root {
            indexed_type: le32(b, 0),
            collation: le32(b, 4),
            block_size: le32(b, 8),
            entries: entries(b, 0x10)?,
        })
    }
}

/// The entries of INDX block `buf` (block-sized, from the disk), which must say it is the
/// block at `vcn`; fixups are applied here.
pub fn parse_block(buf: &mut [u8], vcn: u64) -> Result<Vec<Entry>, Flaw> {
    if buf.get(0..4) != Some(b"INDX") {
        return Err(Flaw::at(0, "magic").expected("INDX", format!("{:02x?}", buf.get(0..4))));
    }
    fixup::apply(buf).map_err(|e| e.within(0, "update sequence"))?;
    let own = le64(buf, 0x10);
    if own != vcn {
        return Err(Flaw::at(0x10, "the block's own VCN").expected(vcn, own));
    }
    entries(buf, 0x18)
}
