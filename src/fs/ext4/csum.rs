//! Metadata checksums (Documentation/filesystems/ext4/checksums.rst). With metadata_csum every
//! structure carries a crc32c seeded from the filesystem (`crc32c(~0, uuid)`, or
//! `s_checksum_seed` with csum_seed) and, for per-inode structures, from the inode number and
//! generation. The kernel's `ext4_chksum` is the bare crc32c update: no inversion before or
//! after, which `raw` undoes from the crate's standard (inverted) crc32c. Before metadata_csum,
//! gdt_csum protected only the group descriptors, with crc16.

use super::le16;
use super::le32;

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
            // OK: the low 16 bits are what the descriptor stores.
            (raw(c, tail) & 0xffff) as u16
        }
        None => {
            let c = crc16(!0, uuid);
            let c = crc16(c, &group.to_le_bytes());
            let c = crc16(c, head);
            crc16(c, tail)
        }
    }
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

/// Whether the inode slot `slot` (all `s_inode_size` bytes) carries the right checksum: the
/// crc32c over the whole slot with both checksum halves zeroed. The high half exists only if
/// `i_extra_isize` covers it; otherwise just the low 16 bits are compared (ext4_inode_csum).
pub fn inode_ok(seed: u32, slot: &[u8]) -> bool {
    if slot.len() < OLD_INODE {
        return false;
    }
    let c = raw(seed, &slot[..I_CSUM_LO]);
    let c = raw(c, &[0, 0]);
    let mut c = raw(c, &slot[I_CSUM_LO + 2..OLD_INODE]);
    let mut provided = u32::from(le16(slot, I_CSUM_LO));
    let mut mask = 0xffff;
    if slot.len() > OLD_INODE {
        let extra = usize::from(le16(slot, OLD_INODE));
        c = raw(c, &slot[OLD_INODE..I_CSUM_HI.min(slot.len())]);
        let mut rest = I_CSUM_HI;
        if OLD_INODE + extra >= I_CSUM_HI + 2 && slot.len() >= I_CSUM_HI + 2 {
            c = raw(c, &[0, 0]);
            rest += 2;
            provided |= u32::from(le16(slot, I_CSUM_HI)) << 16;
            mask = !0;
        }
        c = raw(c, slot.get(rest..).unwrap_or(&[]));
    }
    provided == c & mask
}

/// Checks the ext4_extent_tail after `max` entries of an extent tree block.
pub fn extent_block_ok(seed: u32, block: &[u8], max: usize) -> bool {
    let at = 12 + 12 * max;
    at + 4 <= block.len() && raw(seed, &block[..at]) == le32(block, at)
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

/// Checks an htree interior block (dx_root or dx_node): the dx_tail after `limit` entries
/// holds crc32c over the header and the `count` used entries, then the tail's reserved word
/// and a zeroed checksum (ext4_dx_csum). `count_offset` is where the count/limit pair sits.
pub fn dx_node(seed: u32, block: &[u8], count_offset: usize) -> Result<(), String> {
    let limit = usize::from(le16(block, count_offset));
    let count = usize::from(le16(block, count_offset + 2));
    let tail = count_offset + limit * 8;
    if tail + 8 > block.len() {
        return Err(format!("no room for the dx tail after {limit} entries"));
    }
    if count > limit {
        return Err(format!("count {count} above limit {limit}"));
    }
    let c = raw(seed, &block[..count_offset + count * 8]);
    let c = raw(c, &block[tail..tail + 4]);
    let got = raw(c, &[0; 4]);
    let want = le32(block, tail + 4);
    if want != got {
        return Err(format!("checksum {want:#010x}, computed {got:#010x}"));
    }
    Ok(())
}

/// Offset of h_checksum in an xattr block header.
const XATTR_CSUM_OFF: usize = 0x10;

/// Checks an extended attribute block: crc32c(fs seed, le64 block number, block with
/// h_checksum zeroed) (ext4_xattr_block_csum).
pub fn xattr_block_ok(fs_seed: u32, blk: u64, block: &[u8]) -> bool {
    if block.len() < 32 {
        return false;
    }
    let c = raw(fs_seed, &blk.to_le_bytes());
    let c = raw(c, &block[..XATTR_CSUM_OFF]);
    let c = raw(c, &[0; 4]);
    raw(c, &block[XATTR_CSUM_OFF + 4..]) == le32(block, XATTR_CSUM_OFF)
}

#[cfg(test)]
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
}
