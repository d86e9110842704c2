//! $ATTRIBUTE_LIST: when a file's attributes do not fit its base record, this attribute lists
//! each attribute (type, name, starting VCN) and the MFT record holding it (Linux-NTFS
//! documentation, "$ATTRIBUTE_LIST").

use crate::bytes::{le16, le32, le64};

/// Entries accepted in one list (a 4 MiB list of the smallest entries): bounds the work.
pub const MAX_ENTRIES: usize = 1 << 17;
/// Bytes of an attribute list read (Windows keeps them under 256 KiB).
pub const MAX_SIZE: u64 = 4 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: u32,
    pub lowest_vcn: u64,
    /// MFT reference of the record holding the attribute.
    pub record: u64,
    pub name: Vec<u16>,
}

pub fn parse(b: &[u8]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut rest = b;
    while rest.len() >= 0x1a {
        let kind = le32(rest, 0);
        let len = usize::from(le16(rest, 4));
        let Some((e, next)) = rest.split_at_checked(len).filter(|_| len >= 0x1a) else {
            return Err(format!("entry at byte {pos}: length {len}"));
        };
        let name_len = usize::from(e[6]);
        let name_off = usize::from(e[7]);
        let name = e
            .get(name_off..)
            // At most 255 UTF-16 units: no saturation.
            .and_then(|r| r.get(..name_len.saturating_mul(2)))
            .ok_or_else(|| format!("entry at byte {pos}: name past the entry"))?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        if out.len() >= MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        out.push(Entry {
            kind,
            lowest_vcn: le64(e, 8),
            record: le64(e, 0x10),
            name,
        });
        // Within `b`: no saturation.
        pos = pos.saturating_add(len);
        rest = next;
    }
    Ok(out)
}
