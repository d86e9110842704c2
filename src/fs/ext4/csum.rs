//! Metadata checksums (Documentation/filesystems/ext4/checksums.rst). With metadata_csum every
//! structure carries a crc32c seeded from the filesystem (`crc32c(~0, uuid)`, or
//! `s_checksum_seed` with csum_seed) and, for per-inode structures, from the inode number and
//! generation. The kernel's `ext4_chksum` is the bare crc32c update: no inversion before or
//! after, which `raw` undoes from the crate's standard (inverted) crc32c. Before metadata_csum,
//! gdt_csum protected only the group descriptors, with crc16.

use crate::bytes::le16;
use crate::bytes::le32;

/// The kernel's `crc32c(seed, data)`: the crc register carried in and out as is.
pub fn raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// CRC-16 (polynomial 0x8005, bit-reflected, no final xor), as the kernel's lib/crc16.c.
pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xa001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Where `s_checksum` sits: the superblock's last 4 bytes.
pub const SUPERBLOCK_CSUM_OFF: usize = 0x3fc;

/// Whether the superblock's own checksum matches (ext4_superblock_csum).
pub fn superblock_ok(sb: &[u8]) -> bool {
    sb.len() >= SUPERBLOCK_CSUM_OFF + 4
        && raw(!0, &sb[..SUPERBLOCK_CSUM_OFF]) == le32(sb, SUPERBLOCK_CSUM_OFF)
}

/// Stores the superblock's own checksum (the 1024-byte superblock).
pub fn superblock_set(sb: &mut [u8]) {
    let c = raw(!0, &sb[..SUPERBLOCK_CSUM_OFF]);
    put32(sb, SUPERBLOCK_CSUM_OFF, c);
}

/// Little-endian stores for the setters below.
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..][..4].copy_from_slice(&v.to_le_bytes());
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..][..2].copy_from_slice(&v.to_le_bytes());
}

/// The filesystem-wide seed when csum_seed is off: crc32c(~0, uuid).
pub fn uuid_seed(uuid: &[u8; 16]) -> u32 {
    raw(!0, uuid)
}

/// Offset of bg_checksum in a group descriptor.
const GD_CSUM_OFF: usize = 0x1e;

/// The checksum a group descriptor should carry. `desc` is the whole `desc_size`-byte
/// descriptor. With metadata_csum: the low 16 bits of crc32c(seed, group, desc with the
/// checksum field zeroed); with gdt_csum only: crc16 over uuid, group and the same bytes
/// (the part past 32 bytes only with 64bit, as ext4_group_desc_csum does).
pub fn group_desc(desc: &[u8], group: u32, metadata_csum: Option<u32>, uuid: &[u8; 16]) -> u16 {
    let tail = desc.get(GD_CSUM_OFF + 2..).unwrap_or(&[]);
    let head = &desc[..GD_CSUM_OFF.min(desc.len())];
    match metadata_csum {
        Some(seed) => {
            let c = raw(seed, &group.to_le_bytes());
            let c = raw(c, head);
            let c = raw(c, &[0, 0]);
            // The low 16 bits are what the descriptor stores.
            low16(raw(c, tail))
        }
        None => {
            let c = crc16(!0, uuid);
            let c = crc16(c, &group.to_le_bytes());
            let c = crc16(c, head);
            crc16(c, tail)
        }
    }
}

/// Stores the checksum of group descriptor `desc` (either kind, as `group_desc` computes it).
pub fn group_desc_set(desc: &mut [u8], group: u32, metadata_csum: Option<u32>, uuid: &[u8; 16]) {
    let c = group_desc(desc, group, metadata_csum, uuid);
    put16(desc, GD_CSUM_OFF, c);
}

/// The checksum of a block or inode bitmap (ext4_block_bitmap_csum_set and the inode one):
/// crc32c(fs seed, the first `bytes` bytes: clusters or inodes per group / 8), stored as two
/// 16-bit halves in the descriptor, the high one only in descriptors of 64 bytes or more.
pub fn bitmap(fs_seed: u32, bitmap: &[u8], bytes: usize) -> u32 {
    raw(fs_seed, &bitmap[..bytes.min(bitmap.len())])
}

/// The low 16 bits of a checksum (what a C `(__u16)` cast keeps).
fn low16(c: u32) -> u16 {
    let [a, b, ..] = c.to_le_bytes();
    u16::from_le_bytes([a, b])
}

/// Whether group descriptor `desc` of `group` carries the right checksum.
pub fn group_desc_ok(desc: &[u8], group: u32, metadata_csum: Option<u32>, uuid: &[u8; 16]) -> bool {
    desc.len() >= GD_CSUM_OFF + 2
        && le16(desc, GD_CSUM_OFF) == group_desc(desc, group, metadata_csum, uuid)
}

/// The per-inode seed: crc32c(fs seed, inode number, generation), as ext4_iget computes it.
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    raw(raw(fs_seed, &ino.to_le_bytes()), &generation.to_le_bytes())
}

const I_CSUM_LO: usize = 0x7c;
const I_CSUM_HI: usize = 0x82;
const OLD_INODE: usize = 128;

/// The checksum of the inode slot `slot` (all `s_inode_size` bytes): the crc32c over the whole
/// slot with both checksum halves zeroed (ext4_inode_csum), and whether the slot has the high
/// half (only if `i_extra_isize` covers it; otherwise just the low 16 bits count). None for a
/// slot smaller than an inode.
fn inode_csum(seed: u32, slot: &[u8]) -> Option<(u32, bool)> {
    if slot.len() < OLD_INODE {
        return None;
    }
    let c = raw(seed, &slot[..I_CSUM_LO]);
    let c = raw(c, &[0, 0]);
    let mut c = raw(c, &slot[I_CSUM_LO + 2..OLD_INODE]);
    let mut hi = false;
    if slot.len() > OLD_INODE {
        let extra = usize::from(le16(slot, OLD_INODE));
        c = raw(c, &slot[OLD_INODE..I_CSUM_HI.min(slot.len())]);
        let mut rest = I_CSUM_HI;
        // 128 + a u16: no overflow.
        if OLD_INODE.saturating_add(extra) >= I_CSUM_HI + 2 && slot.len() >= I_CSUM_HI + 2 {
            c = raw(c, &[0, 0]);
            rest = I_CSUM_HI + 2;
            hi = true;
        }
        c = raw(c, slot.get(rest..).unwrap_or(&[]));
    }
    Some((c, hi))
}

/// Whether the inode slot `slot` carries the right checksum (see `inode_csum`).
pub fn inode_ok(seed: u32, slot: &[u8]) -> bool {
    inode_sums(seed, slot).is_some_and(|(computed, stored)| computed == stored)
}

/// The checksum of the inode slot `slot` and the one it stores, both as wide as the slot
/// stores it (16 bits without i_checksum_hi); None when the slot cannot hold one.
pub fn inode_sums(seed: u32, slot: &[u8]) -> Option<(u32, u32)> {
    let (c, hi) = inode_csum(seed, slot)?;
    let mut provided = u32::from(le16(slot, I_CSUM_LO));
    let mut mask = 0xffff;
    if hi {
        provided |= u32::from(le16(slot, I_CSUM_HI)) << 16;
        mask = !0;
    }
    Some((c & mask, provided))
}

/// Stores the checksum of the inode slot `slot` (see `inode_csum`).
pub fn inode_set(seed: u32, slot: &mut [u8]) {
    if let Some((c, hi)) = inode_csum(seed, slot) {
        // The halves are the low and high 16 bits.
        let [a, b, h0, h1] = c.to_le_bytes();
        put16(slot, I_CSUM_LO, u16::from_le_bytes([a, b]));
        if hi {
            put16(slot, I_CSUM_HI, u16::from_le_bytes([h0, h1]));
        }
    }
}

/// Checks the ext4_extent_tail after `max` entries of an extent tree block.
pub fn extent_block_ok(seed: u32, block: &[u8], max: usize) -> bool {
    let at = extent_tail(max);
    at.saturating_add(4) <= block.len() && raw(seed, &block[..at]) == le32(block, at)
}

/// Where the ext4_extent_tail follows the header and `max` (eh_max, a u16) entries; saturated
/// (then past any block) if `max` is absurd.
fn extent_tail(max: usize) -> usize {
    max.saturating_mul(12).saturating_add(12)
}

/// Stores the ext4_extent_tail after `max` entries of an extent tree block.
pub fn extent_block_set(seed: u32, block: &mut [u8], max: usize) {
    let at = extent_tail(max);
    if at.saturating_add(4) <= block.len() {
        let c = raw(seed, &block[..at]);
        put32(block, at, c);
    }
}

/// Bytes of the fake directory entry at the end of a leaf block that holds its checksum.
pub const DIRENT_TAIL_LEN: usize = 12;
/// det_reserved_ft of the checksum tail (EXT4_FT_DIR_CSUM).
const DIRENT_TAIL_FT: u8 = 0xde;

/// Checks a linear directory (or htree leaf) block: it must end in the 12-byte tail entry
/// (inode 0, rec_len 12, name_len 0, file type 0xde) holding crc32c of everything before it.
pub fn dir_leaf(seed: u32, block: &[u8]) -> Result<(), String> {
    let Some(at) = block.len().checked_sub(DIRENT_TAIL_LEN) else {
        return Err("block too small for a checksum tail".into());
    };
    let t = &block[at..];
    if le32(t, 0) != 0 || le16(t, 4) != 12 || t[6] != 0 || t[7] != DIRENT_TAIL_FT {
        return Err("no checksum tail entry at the end of the block".into());
    }
    let (want, got) = (le32(t, 8), raw(seed, &block[..at]));
    if want != got {
        return Err(format!("checksum {want:#010x}, computed {got:#010x}"));
    }
    Ok(())
}

/// Writes the checksum tail entry at the end of a directory leaf block (ext4_initialize_dirent_tail
/// and ext4_dirblock_csum_set): inode 0, rec_len 12, name_len 0, type 0xde, crc32c.
pub fn dir_leaf_set(seed: u32, block: &mut [u8]) {
    let Some(at) = block.len().checked_sub(DIRENT_TAIL_LEN) else {
        return;
    };
    let c = raw(seed, &block[..at]);
    let t = &mut block[at..];
    put32(t, 0, 0);
    // rec_len: DIRENT_TAIL_LEN.
    put16(t, 4, 12);
    t[6] = 0;
    t[7] = DIRENT_TAIL_FT;
    put32(t, 8, c);
}

/// Stores the dx_tail checksum of an htree interior block whose count/limit pair is at
/// `count_offset` (see `dx_node`). False if the tail does not fit.
pub fn dx_node_set(seed: u32, block: &mut [u8], count_offset: usize) -> bool {
    let Ok((used, tail)) = dx_layout(block, count_offset) else {
        return false;
    };
    let c = raw(seed, &block[..used]);
    let t = &mut block[tail..];
    let c = raw(c, &t[..4]);
    let c = raw(c, &[0; 4]);
    put32(t, 4, c);
    true
}

/// Where the entries in use end and where the dx_tail sits, after `limit` 8-byte entries from
/// the (limit, count) pair at `count_offset`. Err when the tail does not fit the block or
/// count exceeds limit. (Both are u16: the saturating arithmetic never saturates short of the
/// block size comparison.)
fn dx_layout(block: &[u8], count_offset: usize) -> Result<(usize, usize), String> {
    let limit = usize::from(le16(block, count_offset));
    let count = usize::from(le16(block, count_offset.saturating_add(2)));
    let tail = count_offset.saturating_add(limit.saturating_mul(8));
    if tail.saturating_add(8) > block.len() {
        return Err(format!("no room for the dx tail after {limit} entries"));
    }
    if count > limit {
        return Err(format!("count {count} above limit {limit}"));
    }
    // count <= limit: the entries in use end before the tail.
    Ok((count_offset.saturating_add(count.saturating_mul(8)), tail))
}

/// Checks an htree interior block (dx_root or dx_node): the dx_tail after `limit` entries
/// holds crc32c over the header and the `count` used entries, then the tail's reserved word
/// and a zeroed checksum (ext4_dx_csum). `count_offset` is where the count/limit pair sits.
pub fn dx_node(seed: u32, block: &[u8], count_offset: usize) -> Result<(), String> {
    let (used, tail) = dx_layout(block, count_offset)?;
    let t = &block[tail..];
    let c = raw(seed, &block[..used]);
    let c = raw(c, &t[..4]);
    let got = raw(c, &[0; 4]);
    let want = le32(t, 4);
    if want != got {
        return Err(format!("checksum {want:#010x}, computed {got:#010x}"));
    }
    Ok(())
}

/// Offset of h_checksum in an xattr block header.
const XATTR_CSUM_OFF: usize = 0x10;

/// The checksum of an extended attribute block: crc32c(fs seed, le64 block number, block with
/// h_checksum zeroed) (ext4_xattr_block_csum).
fn xattr_block(fs_seed: u32, blk: u64, block: &[u8]) -> u32 {
    let c = raw(fs_seed, &blk.to_le_bytes());
    let c = raw(c, &block[..XATTR_CSUM_OFF]);
    let c = raw(c, &[0; 4]);
    raw(c, &block[XATTR_CSUM_OFF + 4..])
}

/// Checks an extended attribute block's checksum (see `xattr_block`).
pub fn xattr_block_ok(fs_seed: u32, blk: u64, block: &[u8]) -> bool {
    block.len() >= 32 && xattr_block(fs_seed, blk, block) == le32(block, XATTR_CSUM_OFF)
}

/// Stores an extended attribute block's checksum (see `xattr_block`).
pub fn xattr_block_set(fs_seed: u32, blk: u64, block: &mut [u8]) {
    if block.len() >= 32 {
        let c = xattr_block(fs_seed, blk, block);
        put32(block, XATTR_CSUM_OFF, c);
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    #[test]
    fn crc_conventions() {
        // The standard crc32c check value, and the kernel's raw form of the same.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(raw(!0, b"123456789"), !0xe306_9283);
        // Raw updates chain like one update over the concatenation.
        assert_eq!(raw(raw(7, b"abc"), b"def"), raw(7, b"abcdef"));
        // CRC-16/ARC check value (poly 0x8005 reflected, init 0).
        assert_eq!(crc16(0, b"123456789"), 0xbb3d);
    }

    #[test]
    fn setters_agree_with_checkers() {
        let mut sb = vec![7u8; 1024];
        superblock_set(&mut sb);
        assert!(superblock_ok(&sb));
        for len in [128usize, 256, 512] {
            let mut slot = vec![0x5au8; len];
            if len > 128 {
                slot[128..130].copy_from_slice(&32u16.to_le_bytes());
            }
            assert!(!inode_ok(9, &slot));
            inode_set(9, &mut slot);
            assert!(inode_ok(9, &slot), "inode of {len} bytes");
        }
        let mut d = vec![3u8; 64];
        group_desc_set(&mut d, 5, Some(11), &[1; 16]);
        assert!(group_desc_ok(&d, 5, Some(11), &[1; 16]));
        group_desc_set(&mut d, 5, None, &[1; 16]);
        assert!(group_desc_ok(&d, 5, None, &[1; 16]));
        let mut x = vec![1u8; 1024];
        xattr_block_set(4, 77, &mut x);
        assert!(xattr_block_ok(4, 77, &x));
        assert!(!xattr_block_ok(4, 78, &x));
        let mut leaf = vec![0u8; 1024];
        dir_leaf_set(3, &mut leaf);
        assert!(dir_leaf(3, &leaf).is_ok());
        let mut e = vec![0u8; 1024];
        e[4..6].copy_from_slice(&84u16.to_le_bytes());
        extent_block_set(8, &mut e, 84);
        assert!(extent_block_ok(8, &e, 84));
        let mut node = vec![0u8; 1024];
        node[8..10].copy_from_slice(&126u16.to_le_bytes());
        node[10..12].copy_from_slice(&1u16.to_le_bytes());
        assert!(dx_node_set(6, &mut node, 8));
        assert!(dx_node(6, &node, 8).is_ok());
    }
}
