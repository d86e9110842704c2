//! $ATTRIBUTE_LIST: when a file's attributes do not fit its base record, this attribute lists
//! each attribute (type, name, starting VCN) and the MFT record holding it (Linux-NTFS
//! documentation, "$ATTRIBUTE_LIST").

use crate::bytes::{le16, le64};

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
    while pos + 0x1a <= b.len() {
        let kind = crate::bytes::le32(b, pos);
        let len = usize::from(le16(b, pos + 4));
        if len < 0x1a || pos + len > b.len() {
            return Err(format!("entry at byte {pos}: length {len}"));
        }
        let name_len = usize::from(b[pos + 6]);
        let name_off = usize::from(b[pos + 7]);
        let name = b
            .get(pos + name_off..pos + name_off + 2 * name_len)
            .filter(|_| name_off + 2 * name_len <= len)
            .ok_or_else(|| format!("entry at byte {pos}: name past the entry"))?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        if out.len() >= MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        out.push(Entry {
            kind,
            lowest_vcn: le64(b, pos + 8),
            record: le64(b, pos + 0x10),
            name,
        });
        pos += len;
    }
    Ok(out)
}
