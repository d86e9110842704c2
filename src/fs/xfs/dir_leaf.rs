//! Directory leaf blocks (xfs_da_format.h `xfs_dir2_leaf`, `xfs_dir3_leaf`): the hash index of
//! a leaf or node directory, (hash, address) pairs sorted by hash, where the address is the
//! entry's byte position in the data space divided by 8 (0: a stale entry). A leaf directory
//! has one LEAF1 block; a node directory has LEAFN blocks under a da-btree. A single-block
//! directory keeps the same pairs in its block's tail (`dir_data::block_leaf`).

use crate::bytes::{be16, be32};

pub const LEAF1_MAGIC_V4: u16 = 0xd2f1;
pub const LEAFN_MAGIC_V4: u16 = 0xd2ff;
pub const LEAF1_MAGIC_V5: u16 = 0x3df1;
pub const LEAFN_MAGIC_V5: u16 = 0x3dff;
pub const MAGICS: &[u16] = &[
    LEAF1_MAGIC_V4,
    LEAFN_MAGIC_V4,
    LEAF1_MAGIC_V5,
    LEAFN_MAGIC_V5,
];
const HDR_V4: usize = 16;
const HDR_V5: usize = 64;
/// A stale leaf entry's address.
pub const NULL_DATAPTR: u32 = 0;

/// The (hash, address) pairs of a leaf block.
pub fn entries(b: &[u8], v5: bool) -> Result<Vec<(u32, u32)>, String> {
    let (hdr, count_at) = if v5 { (HDR_V5, 56) } else { (HDR_V4, 12) };
    let count = usize::from(be16(b, count_at));
    // A 16-bit count of 8-byte entries after the header: no overflow.
    let end = count.saturating_mul(8).saturating_add(hdr);
    let Some(ents) = b.get(hdr..end) else {
        return Err(format!("{count} leaf entries do not fit the block"));
    };
    Ok(pairs(ents))
}

/// Decodes packed (hash, address) pairs.
pub fn pairs(b: &[u8]) -> Vec<(u32, u32)> {
    b.chunks_exact(8)
        .map(|c| (be32(c, 0), be32(c, 4)))
        .collect()
}

/// The addresses of the entries of `hash`, and whether the run of that hash may go on in the
/// next leaf (it reaches the end of this one).
pub fn matches(pairs: &[(u32, u32)], hash: u32) -> (Vec<u32>, bool) {
    let first = pairs.partition_point(|p| p.0 < hash);
    let addrs: Vec<u32> = pairs[first..]
        .iter()
        .take_while(|p| p.0 == hash)
        .map(|p| p.1)
        .filter(|&a| a != NULL_DATAPTR)
        .collect();
    let more = pairs.last().is_none_or(|p| p.0 <= hash);
    (addrs, more)
}
