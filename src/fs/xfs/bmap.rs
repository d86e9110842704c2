//! Block mapping of a fork (xfs_format.h `xfs_bmbt_rec`, `xfs_bmdr_block`, `xfs_btree_block`
//! long form): a fork in extents format holds packed 16-byte records; in btree format a root
//! in the inode points (64-bit filesystem block numbers) to bmbt blocks ("BMAP", or "BMA3"
//! with CRC, owner and self address on v5) down to leaves of the same records. A record packs
//! the unwritten flag (1 bit), the logical offset (54), the start block (52) and length (21).
//! The whole list of a fork is loaded, checked (sorted, non-overlapping, as many as the inode
//! says) and then searched by binary search.

use super::inode::{Inode, FMT_BTREE, FMT_EXTENTS};
use super::{crc, Xfs};
use crate::bytes::{be16, be32, be64, wide};
use crate::fs::{Error, Result};
use std::sync::Arc;

pub const MAGIC_V4: u32 = 0x424d_4150;
pub const MAGIC_V5: u32 = 0x424d_4133;
const HDR_V4: usize = 24;
const HDR_V5: usize = 72;
const CRC_OFF: usize = 64;
const REC: usize = 16;
/// A fork of more extents than this is refused (24 bytes each in memory: 96 MiB).
pub const MAX_EXTENTS: u64 = 1 << 22;
/// bmbt height limit: far above what 2^48 extents need at the smallest fanout.
const MAX_LEVELS: u16 = 16;

/// One mapping: `len` blocks at logical block `off` of the fork, from filesystem block
/// `start` (AG-encoded, as on disk); unwritten extents read as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub off: u64,
    pub start: u64,
    pub len: u64,
    pub unwritten: bool,
}

/// Unpacks a 16-byte record.
pub fn decode(rec: &[u8]) -> Extent {
    let l0 = be64(rec, 0);
    let l1 = be64(rec, 8);
    Extent {
        unwritten: l0 >> 63 != 0,
        off: (l0 & ((1 << 63) - 1)) >> 9,
        start: ((l0 & 0x1ff) << 43) | (l1 >> 21),
        len: l1 & ((1 << 21) - 1),
    }
}

impl Xfs {
    /// The extent list of a fork (`attr`: the attribute fork), loaded once and cached.
    pub(super) fn extents(&self, ip: &Inode, attr: bool) -> Result<Arc<Vec<Extent>>> {
        let key = (ip.ino, attr);
        if let Some(e) = self.finished.lists.get(&key) {
            return Ok(e.clone());
        }
        if let Some(e) = self.extent_cache.lock().get(&key) {
            return Ok(e.clone());
        }
        let list = Arc::new(self.load_extents(ip, attr)?);
        self.extent_cache.lock().put(key, list.clone());
        Ok(list)
    }

    fn load_extents(&self, ip: &Inode, attr: bool) -> Result<Vec<Extent>> {
        let what = if attr {
            "xfs attr fork"
        } else {
            "xfs data fork"
        };
        let bad = |d: String| Error::corrupt(what, ip.ino, 0, d);
        let Some(fork) = ip.fork(attr) else {
            return Ok(Vec::new());
        };
        let n = ip.fork_nextents(attr);
        if n > MAX_EXTENTS {
            return Err(bad(format!("{n} extents")));
        }
        let mut out = Vec::new();
        match ip.fork_format(attr) {
            FMT_EXTENTS => {
                // The records must fit the fork.
                let recs = usize::try_from(n).ok().filter(|&k| k <= fork.len() / REC);
                let Some(recs) = recs else {
                    return Err(bad(format!("{n} extents in {} bytes", fork.len())));
                };
                out.extend(fork.chunks_exact(REC).take(recs).map(decode));
            }
            FMT_BTREE => {
                // xfs_bmdr_block: level, numrecs, then maxrecs keys and maxrecs pointers.
                let Some((head, body)) = fork.split_at_checked(4).filter(|(_, b)| b.len() >= 16)
                else {
                    return Err(bad("bmbt root too small".into()));
                };
                let level = be16(head, 0);
                let numrecs = usize::from(be16(head, 2));
                let maxrecs = body.len() / 16;
                if level == 0 || level > MAX_LEVELS || numrecs == 0 || numrecs > maxrecs {
                    return Err(bad(format!(
                        "bmbt root of level {level} with {numrecs} of {maxrecs} records"
                    )));
                }
                // The pointers follow maxrecs 8-byte keys (maxrecs * 16 <= body length).
                let ptrs = body.chunks_exact(8).skip(maxrecs).take(numrecs);
                for p in ptrs {
                    self.walk_bmbt(ip, be64(p, 0), level.saturating_sub(1), n, &mut out)?;
                }
            }
            f => return Err(bad(format!("format {f} has no extents"))),
        }
        if wide(out.len()) != n {
            return Err(bad(format!(
                "{} extents found, the inode says {n}",
                out.len()
            )));
        }
        let mut end = 0u64;
        for e in &out {
            if e.len == 0 || e.off < end {
                return Err(bad(format!(
                    "extent at block {} (+{}) overlaps or is empty",
                    e.off, e.len
                )));
            }
            // A 54-bit offset plus a 21-bit length (decode): no overflow.
            end = e.off.saturating_add(e.len);
        }
        Ok(out)
    }

    /// Adds the records under bmbt block `fsb` (at `level`) to `out`, stopping past `max`.
    fn walk_bmbt(
        &self,
        ip: &Inode,
        fsb: u64,
        level: u16,
        max: u64,
        out: &mut Vec<Extent>,
    ) -> Result<()> {
        let what = "xfs bmbt block";
        let linear = self.fsb_to_linear(fsb, 1, what, ip.ino)?;
        let v5 = self.sb.is_v5();
        let daddr = self.sb.daddr(linear);
        let meta_uuid = self.sb.meta_uuid;
        let ino = ip.ino;
        let b = self.checked_block(linear, what, ino, |b| {
            let magic = be32(b, 0);
            if v5 {
                if magic != MAGIC_V5 {
                    return Err(format!("magic {magic:#x}"));
                }
                if !crc::verify(b, CRC_OFF) {
                    return Err("CRC32c mismatch".into());
                }
                if be64(b, 24) != daddr || b[40..56] != meta_uuid || be64(b, 56) != ino {
                    return Err("header names another block, filesystem or owner".into());
                }
            } else if magic != MAGIC_V4 {
                return Err(format!("magic {magic:#x}"));
            }
            Ok(())
        })?;
        let hdr = if v5 { HDR_V5 } else { HDR_V4 };
        let bad = |d: String| Error::corrupt(what, ino, linear, d);
        let got_level = be16(&b, 4);
        let numrecs = usize::from(be16(&b, 6));
        if got_level != level {
            return Err(bad(format!("level {got_level}, expected {level}")));
        }
        let body = b.get(hdr..).unwrap_or_default();
        if level == 0 {
            let maxrecs = body.len() / REC;
            if numrecs == 0 || numrecs > maxrecs {
                return Err(bad(format!("{numrecs} of {maxrecs} records")));
            }
            if wide(out.len()).saturating_add(wide(numrecs)) > max {
                return Err(bad(format!("more than the inode's {max} extents")));
            }
            out.extend(body.chunks_exact(REC).take(numrecs).map(decode));
            return Ok(());
        }
        let maxrecs = body.len() / 16;
        if numrecs == 0 || numrecs > maxrecs {
            return Err(bad(format!("{numrecs} of {maxrecs} keys")));
        }
        // The pointers follow maxrecs 8-byte keys; level > 0 here.
        for p in body.chunks_exact(8).skip(maxrecs).take(numrecs) {
            self.walk_bmbt(ip, be64(p, 0), level.saturating_sub(1), max, out)?;
        }
        Ok(())
    }
}

/// Where logical block `lblk` falls: the extent holding it, or the hole up to the next one
/// (None: past the last extent).
pub fn find(list: &[Extent], lblk: u64) -> std::result::Result<&Extent, Option<u64>> {
    // A 54-bit offset plus a 21-bit length (decode): no overflow.
    let i = list.partition_point(|e| e.off.saturating_add(e.len) <= lblk);
    match list.get(i) {
        Some(e) if e.off <= lblk => Ok(e),
        Some(e) => Err(Some(e.off)),
        None => Err(None),
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    #[test]
    fn record_fields() {
        // unwritten, startoff 0x12345, startblock 0xf_1234_5678_9abc, blockcount 0x1abcd
        let start: u64 = 0xf_1234_5678_9abc;
        let l0: u64 = (1 << 63) | (0x12345 << 9) | (start >> 43);
        let l1: u64 = ((start & ((1 << 43) - 1)) << 21) | 0x1abcd;
        let mut r = l0.to_be_bytes().to_vec();
        r.extend(l1.to_be_bytes());
        let e = decode(&r);
        assert_eq!(
            e,
            Extent {
                off: 0x12345,
                start,
                len: 0x1abcd,
                unwritten: true
            }
        );
        let list = [
            Extent {
                off: 2,
                start: 9,
                len: 3,
                unwritten: false,
            },
            Extent {
                off: 10,
                start: 20,
                len: 1,
                unwritten: false,
            },
        ];
        assert_eq!(find(&list, 0), Err(Some(2)));
        assert_eq!(find(&list, 4).unwrap().off, 2);
        assert_eq!(find(&list, 5), Err(Some(10)));
        assert_eq!(find(&list, 11), Err(None));
    }
}
