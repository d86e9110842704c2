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
    if hdr + count * 8 > b.len() {
        return Err(format!("{count} entries do not fit the block"));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let e = hdr + i * 8;
        let nameidx = usize::from(be16(b, e + 4));
        let flags = b[e + 6];
        if nameidx < hdr + count * 8 || nameidx >= b.len() {
            return Err(format!("entry {i}: name at {nameidx}"));
        }
        if flags & FLAG_LOCAL != 0 {
            let valuelen = usize::from(be16(b, nameidx));
            let namelen = usize::from(b.get(nameidx + 2).copied().unwrap_or(0));
            let name_at = nameidx + 3;
            let end = name_at + namelen + valuelen;
            if namelen == 0 || end > b.len() {
                return Err(format!("entry {i}: local name/value past the block"));
            }
            out.push(Entry {
                flags,
                name: &b[name_at..name_at + namelen],
                value: Value::Local(&b[name_at + namelen..end]),
            });
        } else {
            let blk = be32(b, nameidx);
            let len = be32(b, nameidx + 4);
            let namelen = usize::from(b.get(nameidx + 8).copied().unwrap_or(0));
            let name_at = nameidx + 9;
            if namelen == 0 || name_at + namelen > b.len() {
                return Err(format!("entry {i}: remote name past the block"));
            }
            out.push(Entry {
                flags,
                name: &b[name_at..name_at + namelen],
                value: Value::Remote { blk, len },
            });
        }
    }
    Ok(out)
}
