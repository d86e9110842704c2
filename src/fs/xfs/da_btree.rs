//! The directory/attribute B+tree (xfs_da_format.h `xfs_da_intnode`): interior nodes of
//! (hash, child block) pairs above leaf blocks of directories or attribute forks. A node
//! entry's hash is the largest in its subtree; leaves are chained (forw/back) in hash order.
//! Every block starts with `xfs_da_blkinfo` (forw, back, magic) — `xfs_da3_blkinfo` on v5,
//! which adds CRC, self address, LSN, UUID and owner.

use super::inode::Inode;
use super::Xfs;
use crate::bytes::{be16, be32};
use crate::fs::Result;
use std::sync::Arc;

pub const NODE_MAGIC_V4: u16 = 0xfebe;
pub const NODE_MAGIC_V5: u16 = 0x3ebe;
/// Offsets of CRC, self address, UUID and owner in `xfs_da3_blkinfo`.
pub const V5_HEADER: [usize; 4] = [12, 16, 32, 48];
const NODE_HDR_V4: usize = 16;
const NODE_HDR_V5: usize = 64;
/// Deepest tree the kernel builds (XFS_DA_NODE_MAXDEPTH).
pub const MAX_DEPTH: usize = 5;

/// The magic number of a da block (`xfs_da_blkinfo.magic`).
pub fn magic(b: &[u8]) -> u16 {
    be16(b, 8)
}

/// The next block in hash order (0: none).
pub fn forw(b: &[u8]) -> u32 {
    be32(b, 0)
}

pub fn is_node(b: &[u8]) -> bool {
    matches!(magic(b), NODE_MAGIC_V4 | NODE_MAGIC_V5)
}

/// xfs_da_hashname: the hash directories and attributes are indexed by.
pub fn hashname(name: &[u8]) -> u32 {
    let mut hash = 0u32;
    let mut chunks = name.chunks_exact(4);
    for c in &mut chunks {
        hash = (u32::from(c[0]) << 21)
            ^ (u32::from(c[1]) << 14)
            ^ (u32::from(c[2]) << 7)
            ^ u32::from(c[3])
            ^ hash.rotate_left(28);
    }
    match *chunks.remainder() {
        [a, b, c] => {
            (u32::from(a) << 14) ^ (u32::from(b) << 7) ^ u32::from(c) ^ hash.rotate_left(21)
        }
        [a, b] => (u32::from(a) << 7) ^ u32::from(b) ^ hash.rotate_left(14),
        [a] => u32::from(a) ^ hash.rotate_left(7),
        _ => hash,
    }
}

/// A node's level and its (hash, child block) entries.
pub fn node_entries(b: &[u8], v5: bool) -> std::result::Result<(u16, Vec<(u32, u32)>), String> {
    // Header size, then where its count and level are.
    let (hdr, count_at, level_at) = if v5 {
        (NODE_HDR_V5, 56, 58)
    } else {
        (NODE_HDR_V4, 12, 14)
    };
    let count = usize::from(be16(b, count_at));
    let level = be16(b, level_at);
    // A 16-bit count of 8-byte entries after the header: no overflow.
    let ents = b.get(hdr..count.saturating_mul(8).saturating_add(hdr));
    let ents = ents.filter(|_| count != 0 && level != 0 && usize::from(level) <= MAX_DEPTH);
    let Some(ents) = ents else {
        return Err(format!("node of level {level} with {count} entries"));
    };
    Ok((
        level,
        ents.chunks_exact(8)
            .map(|c| (be32(c, 0), be32(c, 4)))
            .collect(),
    ))
}

impl Xfs {
    /// A da block of a fork (`nfsb` filesystem blocks from `lblk`), with the v5 header checked
    /// and its magic among `magics` (v4 and v5 node magics are always accepted).
    pub(super) fn da_block(
        &self,
        ip: &Inode,
        attr: bool,
        lblk: u64,
        nfsb: u64,
        what: &'static str,
        magics: &[u16],
    ) -> Result<Arc<[u8]>> {
        let v5 = self.sb.is_v5();
        let ino = ip.ino;
        self.fork_block(ip, attr, lblk, nfsb, what, |b, daddr| {
            let m = magic(b);
            if !magics.contains(&m) && m != NODE_MAGIC_V4 && m != NODE_MAGIC_V5 {
                return Err(format!("magic {m:#06x}"));
            }
            // Every v5 da magic starts with the nibble 3, no v4 one does.
            if (m >> 12 == 3) != v5 {
                return Err(format!(
                    "magic {m:#06x} on a v{} filesystem",
                    if v5 { 5 } else { 4 }
                ));
            }
            if v5 {
                self.v5_header(b, daddr, ino, V5_HEADER)?;
            }
            Ok(())
        })
    }

    /// Descends from the root at `root` to the leaf that holds the first entry of `hash`
    /// (None: the leftmost leaf). Returns its block number and bytes. Attribute blocks are
    /// one filesystem block, directory blocks `1 << dirblklog`.
    pub(super) fn da_find_leaf(
        &self,
        ip: &Inode,
        attr: bool,
        root: u64,
        hash: Option<u32>,
        what: &'static str,
        leaf_magics: &[u16],
    ) -> Result<(u64, Arc<[u8]>)> {
        let nfsb = if attr { 1 } else { 1 << self.sb.dirblklog };
        let mut lblk = root;
        let mut above: Option<u16> = None;
        for _ in 0..=MAX_DEPTH {
            let b = self.da_block(ip, attr, lblk, nfsb, what, leaf_magics)?;
            if !is_node(&b) {
                if above.is_some_and(|l| l != 1) {
                    return Err(self.damage(
                        what,
                        ip.ino,
                        lblk,
                        "leaf where a node was due".into(),
                    ));
                }
                return Ok((lblk, b));
            }
            let (level, entries) = node_entries(&b, self.sb.is_v5())
                .map_err(|d| self.damage(what, ip.ino, lblk, d))?;
            if above.is_some_and(|l| level.checked_add(1) != Some(l)) {
                return Err(self.damage(what, ip.ino, lblk, format!("level {level} out of order")));
            }
            above = Some(level);
            let pick = match hash {
                None => entries.first(),
                Some(h) => entries.iter().find(|(eh, _)| *eh >= h).or(entries.last()),
            };
            // node_entries refuses a node without entries.
            let Some(&(_, child)) = pick else {
                return Err(self.damage(what, ip.ino, lblk, "node without entries".into()));
            };
            lblk = u64::from(child);
        }
        Err(self.damage(what, ip.ino, root, "tree deeper than 5 levels".into()))
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::hashname;

    #[test]
    fn hashes_like_the_kernel() {
        // Values computed by hand from xfs_da_hashname's definition.
        assert_eq!(hashname(b""), 0);
        assert_eq!(hashname(b"a"), 0x61);
        assert_eq!(hashname(b"ab"), (0x61 << 7) ^ 0x62);
        assert_eq!(hashname(b"."), 0x2e);
        assert_eq!(
            hashname(b"abcd"),
            (0x61 << 21) ^ (0x62 << 14) ^ (0x63 << 7) ^ 0x64
        );
        let h4 = hashname(b"abcd");
        assert_eq!(hashname(b"abcde"), 0x65 ^ h4.rotate_left(7));
    }
}
