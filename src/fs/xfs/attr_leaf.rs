//! Attribute leaf blocks (xfs_da_format.h `xfs_attr_leafblock`, `xfs_attr3_leafblock`): a
//! header, entries (hash, offset of the name, flags) sorted by hash, and the names with
//! their values packed from the block's end: local ones (value length, name length, name,
//! value) or remote ones (first block of the value in the attribute fork, value length,
//! name length, name).

use super::attr::{Entry, Value, FLAG_LOCAL};
use crate::bytes::{be16, be32};

pub const MAGIC_V4: u16 = 0xfbee;
pub const MAGIC_V5: u16 = 0x3bee;
const HDR_V4: usize = 32;
const HDR_V5: usize = 80;

pub fn parse(b: &[u8], v5: bool) -> Result<Vec<Entry<'_>>, String> {
    let (hdr, count_at) = if v5 { (HDR_V5, 56) } else { (HDR_V4, 12) };
    let count = usize::from(be16(b, count_at));
    // A 16-bit count of 8-byte entries after the header: no overflow.
    let ents_end = count.saturating_mul(8).saturating_add(hdr);
    let Some(ents) = b.get(hdr..ents_end) else {
        return Err(format!("{count} entries do not fit the block"));
    };
    let mut out = Vec::with_capacity(count);
    for (i, e) in ents.chunks_exact(8).enumerate() {
        let nameidx = usize::from(be16(e, 4));
        let flags = e[6];
        let rec = b
            .get(nameidx..)
            .filter(|r| nameidx >= ents_end && !r.is_empty());
        let Some(rec) = rec else {
            return Err(format!("entry {i}: name at {nameidx}"));
        };
        if flags & FLAG_LOCAL != 0 {
            // xfs_attr_leaf_name_local: value length, name length, name, value.
            let valuelen = usize::from(be16(rec, 0));
            let namelen = usize::from(rec.get(2).copied().unwrap_or(0));
            let name_value = rec
                .get(3..)
                .and_then(|r| r.get(..namelen.saturating_add(valuelen)))
                .and_then(|r| r.split_at_checked(namelen))
                .filter(|_| namelen != 0);
            let Some((name, value)) = name_value else {
                return Err(format!("entry {i}: local name/value past the block"));
            };
            out.push(Entry {
                flags,
                name,
                value: Value::Local(value),
            });
        } else {
            // xfs_attr_leaf_name_remote: value block, value length, name length, name.
            let blk = be32(rec, 0);
            let len = be32(rec, 4);
            let namelen = usize::from(rec.get(8).copied().unwrap_or(0));
            let name = rec
                .get(9..)
                .and_then(|r| r.get(..namelen))
                .filter(|_| namelen != 0);
            let Some(name) = name else {
                return Err(format!("entry {i}: remote name past the block"));
            };
            out.push(Entry {
                flags,
                name,
                value: Value::Remote { blk, len },
            });
        }
    }
    Ok(out)
}
