//! The ext2/3/4 superblock (kernel Documentation/filesystems/ext4/super.rst): 1024 bytes at byte
//! 1024 of the volume. Everything the reader later trusts about the geometry is validated here.

use super::csum;
use crate::bytes::{le16, le32};
use crate::fs::{Error, Result};

pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const SUPERBLOCK_SIZE: usize = 1024;
pub const MAGIC: u16 = 0xef53;
/// s_log_block_size is the block size as a shift of 1024; ext4 allows 1 KiB .. 64 KiB.
pub const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// The inode size of revision 0 filesystems (and the smallest allowed).
pub const GOOD_OLD_INODE_SIZE: u16 = 128;
/// The first non-reserved inode of revision 0 filesystems.
const GOOD_OLD_FIRST_INO: u32 = 11;
/// Group descriptors are 32 bytes without 64bit; with it, s_desc_size is a power of two from
/// 64 up to this (EXT4_MAX_DESC_SIZE, the kernel's bound).
pub const MAX_DESC_SIZE: u16 = 1024;

bitflags::bitflags! {
    /// s_feature_compat: features a reader and a writer may both ignore. Unknown bits are kept
    /// (`from_bits_retain`), so what the disk says is what the struct holds.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Compat: u32 {
        const HAS_JOURNAL = 0x4;
        const DIR_INDEX = 0x20;
        const SPARSE_SUPER2 = 0x200;
        const _ = !0;
    }
}

bitflags::bitflags! {
    /// s_feature_incompat: features a reader must understand (see `SUPPORTED`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Incompat: u32 {
        const COMPRESSION = 0x1;
        const FILETYPE = 0x2;
        const RECOVER = 0x4;
        const JOURNAL_DEV = 0x8;
        const META_BG = 0x10;
        const EXTENTS = 0x40;
        const IS_64BIT = 0x80;
        const MMP = 0x100;
        const FLEX_BG = 0x200;
        const EA_INODE = 0x400;
        const DIRDATA = 0x1000;
        const CSUM_SEED = 0x2000;
        const LARGEDIR = 0x4000;
        const INLINE_DATA = 0x8000;
        const ENCRYPT = 0x10000;
        const CASEFOLD = 0x20000;
        const _ = !0;
    }
}

impl Incompat {
    /// INCOMPAT features this reader understands well enough to read a tree correctly.
    /// RECOVER is accepted: `Ext4::open` replays the journal in memory (see `journal`).
    /// EA_INODE: values read from their inode (xattr.rs); CSUM_SEED: the checksum seed; ENCRYPT:
    /// no-key names, contents refused per inode (fscrypt.rs); CASEFOLD: case-insensitive lookups
    /// (casefold.rs); MMP only matters to writers. COMPRESSION, DIRDATA and
    /// JOURNAL_DEV are refused with a message naming them.
    pub const SUPPORTED: Self = Self::FILETYPE
        .union(Self::META_BG)
        .union(Self::INLINE_DATA)
        .union(Self::RECOVER)
        .union(Self::EXTENTS)
        .union(Self::IS_64BIT)
        .union(Self::MMP)
        .union(Self::FLEX_BG)
        .union(Self::EA_INODE)
        .union(Self::CSUM_SEED)
        .union(Self::LARGEDIR)
        .union(Self::ENCRYPT)
        .union(Self::CASEFOLD);
}

bitflags::bitflags! {
    /// s_feature_ro_compat: features only a writer must understand. A reader may ignore every
    /// one of them, so none is refused on read (the writer's list is in rw.rs).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct RoCompat: u32 {
        const SPARSE_SUPER = 0x1;
        const LARGE_FILE = 0x2;
        const BTREE_DIR = 0x4;
        const HUGE_FILE = 0x8;
        const GDT_CSUM = 0x10;
        const DIR_NLINK = 0x20;
        const EXTRA_ISIZE = 0x40;
        const HAS_SNAPSHOT = 0x80;
        const QUOTA = 0x100;
        const BIGALLOC = 0x200;
        const METADATA_CSUM = 0x400;
        const READONLY = 0x1000;
        const PROJECT = 0x2000;
        const SHARED_BLOCKS = 0x4000;
        const VERITY = 0x8000;
        const ORPHAN_PRESENT = 0x10000;
        const _ = !0;
    }
}

/// s_flags: directory hashes treat name bytes as unsigned chars (EXT2_FLAGS_UNSIGNED_HASH).
pub const FLAGS_UNSIGNED_HASH: u32 = 0x2;
/// s_checksum_type for crc32c, the only algorithm metadata_csum defines.
const CSUM_TYPE_CRC32C: u8 = 1;

/// Names of INCOMPAT bits for error messages.
const INCOMPAT_NAMES: &[(Incompat, &str)] = &[
    (Incompat::COMPRESSION, "compression"),
    (
        Incompat::JOURNAL_DEV,
        "journal_dev (this is an external journal, not a filesystem)",
    ),
    (Incompat::DIRDATA, "dirdata"),
];

/// Damage in the primary superblock; `field` is the byte offset of the field within it.
fn bad(field: u64, detail: String) -> Error {
    Error::corrupt("superblock", 0, 0, detail).at(SUPERBLOCK_OFFSET.saturating_add(field))
}

#[derive(Clone, Debug)]
pub struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub r_blocks_count: u64,
    pub free_blocks_count: u64,
    pub free_inodes_count: u32,
    pub first_data_block: u32,
    pub log_block_size: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub rev_level: u32,
    pub first_ino: u32,
    pub inode_size: u16,
    pub feature_compat: Compat,
    pub feature_incompat: Incompat,
    pub feature_ro_compat: RoCompat,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    /// Bytes per group descriptor: 32, or s_desc_size with 64bit.
    pub desc_size: u16,
    /// With meta_bg: the first descriptor block that lives in its meta group rather than in the
    /// table after the superblock.
    pub first_meta_bg: u32,
    /// sparse_super2: the (at most two) groups holding superblock backups.
    pub backup_bgs: [u32; 2],
    /// Number of block groups, derived from the counts and checked against inodes_count.
    pub group_count: u32,
    /// log2(cluster size / block size) with bigalloc, else 0.
    pub cluster_bits: u32,
    /// GDT blocks set aside for online growth (resize_inode), after each descriptor table copy.
    pub reserved_gdt_blocks: u16,
    /// The internal journal's inode (0: none).
    pub journal_inum: u32,
    /// Metadata clusters as mke2fs counted them (0: unknown); the kernel trusts it with bigalloc.
    pub overhead_clusters: u32,
    /// Seed of every crc32c checksum: s_checksum_seed with csum_seed, else crc32c(~0, uuid).
    /// Also seeds the value hashes of EA inodes (which need it without metadata_csum).
    pub csum_seed: u32,
    /// metadata_csum is on with an algorithm we know (crc32c): checksums are verified.
    pub metadata_csum: bool,
    /// s_hash_seed: seeds the htree name hashes (all zero means the default seed).
    pub hash_seed: [u32; 4],
    /// s_def_hash_version: the hash of directories that have no dx_root saying otherwise.
    pub def_hash_version: u8,
    /// s_flags (signed/unsigned directory hash).
    pub flags: u32,
    /// s_encoding: the charset of casefolded directories (1 = UTF-8 12.1).
    pub encoding: u16,
}

impl Superblock {
    /// Parses and validates the 1024-byte superblock.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < SUPERBLOCK_SIZE {
            return Err(bad(0, format!("only {} bytes", b.len())));
        }
        let magic = le16(b, 0x38);
        if magic != MAGIC {
            return Err(Error::mismatch(
                "superblock",
                0,
                "s_magic: not ext2/3/4",
                format!("{MAGIC:#06x}"),
                format!("{magic:#06x}"),
            )
            .at(SUPERBLOCK_OFFSET + 0x38));
        }
        let mut sb = Self::read_fields(b);
        sb.check_incompat()?;
        sb.read_checksum_setup(b);
        sb.check_geometry(b)?;
        Ok(sb)
    }

    /// The fields as stored, with revision 0's fixed values and the 64bit high halves; the
    /// derived ones (group count, cluster bits, checksum seed) are filled in later.
    fn read_fields(b: &[u8]) -> Self {
        let hi = |lo: u32, at: usize, is64: bool| {
            u64::from(lo)
                | if is64 {
                    u64::from(le32(b, at)) << 32
                } else {
                    0
                }
        };
        let feature_incompat = Incompat::from_bits_retain(le32(b, FEATURE_INCOMPAT_OFF));
        let is64 = feature_incompat.contains(Incompat::IS_64BIT);
        let rev_level = le32(b, 0x4c);
        let mut sb = Superblock {
            inodes_count: le32(b, 0x0),
            blocks_count: hi(le32(b, 0x4), 0x150, is64),
            r_blocks_count: hi(le32(b, 0x8), 0x154, is64),
            free_blocks_count: hi(le32(b, 0xc), 0x158, is64),
            free_inodes_count: le32(b, 0x10),
            reserved_gdt_blocks: le16(b, 0xce),
            journal_inum: le32(b, 0xe0),
            overhead_clusters: le32(b, 0x248),
            first_data_block: le32(b, 0x14),
            log_block_size: le32(b, 0x18),
            blocks_per_group: le32(b, 0x20),
            inodes_per_group: le32(b, 0x28),
            rev_level,
            first_ino: if rev_level == 0 {
                GOOD_OLD_FIRST_INO
            } else {
                le32(b, 0x54)
            },
            inode_size: if rev_level == 0 {
                GOOD_OLD_INODE_SIZE
            } else {
                le16(b, 0x58)
            },
            feature_compat: Compat::from_bits_retain(le32(b, 0x5c)),
            feature_incompat,
            feature_ro_compat: RoCompat::from_bits_retain(le32(b, FEATURE_RO_COMPAT_OFF)),
            uuid: [0; 16],
            volume_name: [0; 16],
            desc_size: if is64 { le16(b, 0xfe) } else { 32 },
            first_meta_bg: le32(b, 0x104),
            backup_bgs: [le32(b, 0x24c), le32(b, 0x250)],
            group_count: 0,
            cluster_bits: 0,
            csum_seed: 0,
            metadata_csum: false,
            hash_seed: [le32(b, 0xec), le32(b, 0xf0), le32(b, 0xf4), le32(b, 0xf8)],
            def_hash_version: b[0xfc],
            flags: le32(b, 0x160),
            encoding: le16(b, 0x27c),
        };
        sb.uuid.copy_from_slice(&b[0x68..0x78]);
        sb.volume_name.copy_from_slice(&b[0x78..0x88]);
        sb
    }

    /// Refuses INCOMPAT features this reader does not understand, naming the known ones.
    fn check_incompat(&self) -> Result<()> {
        let unknown = self.feature_incompat.difference(Incompat::SUPPORTED);
        if unknown.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = INCOMPAT_NAMES
            .iter()
            .filter(|(bit, _)| unknown.intersects(*bit))
            .map(|(_, n)| (*n).to_string())
            .collect();
        let rest = INCOMPAT_NAMES
            .iter()
            .fold(unknown, |a, (bit, _)| a.difference(*bit));
        let mut what = names.join(", ");
        if !rest.is_empty() {
            if !what.is_empty() {
                what.push_str(", ");
            }
            what.push_str(&format!("unknown bits {:#x}", rest.bits()));
        }
        Err(Error::Unsupported(format!(
            "ext4 incompatible features ferry cannot read yet: {what}"
        )))
    }

    /// The checksum seed, and whether metadata checksums are verified: only with crc32c, the
    /// one algorithm metadata_csum defines.
    fn read_checksum_setup(&mut self, b: &[u8]) {
        self.csum_seed = if self.has_incompat(Incompat::CSUM_SEED) {
            le32(b, 0x270)
        } else {
            csum::uuid_seed(&self.uuid)
        };
        if !self.has_ro_compat(RoCompat::METADATA_CSUM) {
            return;
        }
        let kind = b[0x175];
        if kind != CSUM_TYPE_CRC32C {
            log::error!(
                "ext4: metadata_csum with unknown checksum type {kind}; checksums are not \
                 verified"
            );
            return;
        }
        self.metadata_csum = true;
        // The kernel refuses to mount here. ferry only reads, and every field it uses is
        // validated in check_geometry, so a stale or damaged superblock checksum is reported
        // and the filesystem still opened: the other structures keep their checksums.
        if !csum::superblock_ok(b) {
            log::error!(
                "ext4: superblock checksum mismatch (stored {:#010x}, computed {:#010x}); \
                 reading on, but the superblock may be damaged",
                le32(b, csum::SUPERBLOCK_CSUM_OFF),
                csum::raw(!0, &b[..csum::SUPERBLOCK_CSUM_OFF])
            );
        }
    }

    /// Checks everything the reader later trusts about the geometry, and derives the
    /// cluster bits and the group count.
    fn check_geometry(&mut self, b: &[u8]) -> Result<()> {
        if self.has_ro_compat(RoCompat::BIGALLOC) {
            // s_log_cluster_size, in the same units as s_log_block_size; a cluster is at most
            // 2^16 blocks (the kernel's limit).
            let log_cluster = le32(b, 0x1c);
            match log_cluster.checked_sub(self.log_block_size) {
                Some(bits) if bits <= 16 => self.cluster_bits = bits,
                _ => {
                    return Err(bad(
                        0x1c,
                        format!(
                            "s_log_cluster_size {log_cluster} with s_log_block_size {}",
                            self.log_block_size
                        ),
                    ))
                }
            }
        }
        if self.log_block_size > MAX_LOG_BLOCK_SIZE {
            return Err(bad(
                0x18,
                format!(
                    "s_log_block_size {} (block size > 64 KiB)",
                    self.log_block_size
                ),
            ));
        }
        let bs = self.block_size();
        let bits_per_block = bs.saturating_mul(8);
        if self.blocks_per_group == 0 {
            return Err(bad(0x20, "s_blocks_per_group is 0".into()));
        }
        // A group's block bitmap is one block, one bit per cluster: the kernel refuses more
        // ("#blocks per group too big"), and the allocator's bit indices rely on it.
        let clusters_per_group = self.blocks_per_group >> self.cluster_bits;
        if clusters_per_group > bits_per_block {
            return Err(bad(
                0x20,
                format!(
                    "s_blocks_per_group {} ({clusters_per_group} clusters; one bitmap block \
                     holds {bits_per_block})",
                    self.blocks_per_group
                ),
            ));
        }
        if self.inodes_per_group == 0 || self.inodes_per_group > bits_per_block {
            return Err(bad(
                0x28,
                format!(
                    "s_inodes_per_group {} (must be 1..={bits_per_block}, one bitmap block)",
                    self.inodes_per_group
                ),
            ));
        }
        let expected_first = u32::from(bs == 1024);
        // Bigalloc with 1 KiB blocks may still start at 0; anything else is damage.
        if self.first_data_block > expected_first {
            return Err(bad(
                0x14,
                format!("s_first_data_block {}", self.first_data_block),
            ));
        }
        if self.blocks_count <= u64::from(self.first_data_block) {
            return Err(bad(
                0x4,
                format!("s_blocks_count {} leaves no groups", self.blocks_count),
            ));
        }
        // blocks_count > first_data_block (just checked).
        let groups = self
            .blocks_count
            .saturating_sub(u64::from(self.first_data_block))
            .div_ceil(u64::from(self.blocks_per_group));
        self.group_count = u32::try_from(groups)
            .map_err(|_| bad(0x4, format!("{groups} block groups (more than 2^32)")))?;
        // Two u32: the product fits.
        let max_inodes =
            u64::from(self.group_count).saturating_mul(u64::from(self.inodes_per_group));
        if u64::from(self.inodes_count) > max_inodes || self.inodes_count == 0 {
            return Err(Error::mismatch(
                "superblock",
                0,
                format!(
                    "s_inodes_count does not fit {} groups of {} inodes",
                    self.group_count, self.inodes_per_group
                ),
                format!("1..={max_inodes}"),
                self.inodes_count,
            )
            .at(SUPERBLOCK_OFFSET));
        }
        if self.inode_size < GOOD_OLD_INODE_SIZE
            || !self.inode_size.is_power_of_two()
            || u32::from(self.inode_size) > bs
        {
            return Err(bad(0x58, format!("s_inode_size {}", self.inode_size)));
        }
        if self.has_incompat(Incompat::IS_64BIT)
            && (self.desc_size < 64
                || self.desc_size > MAX_DESC_SIZE
                || !self.desc_size.is_power_of_two())
        {
            return Err(bad(
                0xfe,
                format!("s_desc_size {} with 64bit", self.desc_size),
            ));
        }
        Ok(())
    }

    pub fn block_size(&self) -> u32 {
        1024 << self.log_block_size
    }

    pub fn has_incompat(&self, f: Incompat) -> bool {
        self.feature_incompat.intersects(f)
    }

    /// Whether group `g` starts with a superblock copy (and, without meta_bg, descriptors):
    /// every group without sparse_super; with it groups 0, 1 and powers of 3, 5 and 7; with
    /// sparse_super2 group 0 and the two groups named in the superblock.
    pub fn group_has_super(&self, g: u32) -> bool {
        if g == 0 {
            return true;
        }
        if self.has_compat(Compat::SPARSE_SUPER2) {
            return self.backup_bgs.contains(&g);
        }
        if !self.has_ro_compat(RoCompat::SPARSE_SUPER) || g == 1 {
            return true;
        }
        let power_of = |base: u32| {
            // g > 0: n stays at least 1, and each division shrinks it.
            let mut n = g;
            while n.checked_rem(base) == Some(0) {
                n = n.checked_div(base).unwrap_or(1);
            }
            n == 1
        };
        power_of(3) || power_of(5) || power_of(7)
    }

    /// First block of group `g`.
    pub fn group_first_block(&self, g: u32) -> u64 {
        // u32 × u32 + u32: no overflow.
        u64::from(g)
            .saturating_mul(u64::from(self.blocks_per_group))
            .saturating_add(u64::from(self.first_data_block))
    }

    /// The block holding descriptor block number `nr` (kernel descriptor_loc): the table right
    /// after the superblock, or with meta_bg (from s_first_meta_bg on) the first block of the
    /// meta group's first group, after its superblock backup if it has one.
    pub fn descriptor_block(&self, nr: u64) -> u64 {
        // The superblock's own block (1 with 1 KiB blocks, else 0), which is not always
        // s_first_data_block: bigalloc with 1 KiB blocks starts data at block 0.
        // (Descriptor block numbers are below the group count, a u32, by the caller's bounds:
        // the saturating arithmetic below never saturates.)
        let first = SUPERBLOCK_OFFSET
            .checked_div(u64::from(self.block_size()))
            .unwrap_or(0)
            .saturating_add(1);
        if !self.has_incompat(Incompat::META_BG) || nr < u64::from(self.first_meta_bg) {
            return first.saturating_add(nr);
        }
        let per_block = self
            .block_size()
            .checked_div(u32::from(self.desc_size))
            .map_or(1, u64::from);
        // nr * per_block is a group number < group_count (a u32), by the caller's bounds.
        let bg = u32::try_from(nr.saturating_mul(per_block)).unwrap_or(u32::MAX);
        let mut has_super = u64::from(self.group_has_super(bg));
        if self.block_size() == 1024 && nr == 0 && self.first_data_block == 0 {
            has_super = has_super.saturating_add(1);
        }
        self.group_first_block(bg).saturating_add(has_super)
    }

    pub fn has_ro_compat(&self, f: RoCompat) -> bool {
        self.feature_ro_compat.intersects(f)
    }

    pub fn has_compat(&self, f: Compat) -> bool {
        self.feature_compat.intersects(f)
    }

    /// Which group descriptor checksum applies: Some(seed) for metadata_csum's crc32c, None
    /// for gdt_csum's crc16, or no checksum at all (outer None).
    pub fn group_csum(&self) -> Option<Option<u32>> {
        if self.metadata_csum {
            Some(Some(self.csum_seed))
        } else if self.has_ro_compat(RoCompat::GDT_CSUM) {
            Some(None)
        } else {
            None
        }
    }

    /// "ext4" if any ext4-only feature is on, else "ext3" with a journal, else "ext2" (blkid's rule).
    pub fn kind(&self) -> &'static str {
        let ext2_incompat = Incompat::FILETYPE | Incompat::RECOVER | Incompat::META_BG;
        let ext2_ro = RoCompat::SPARSE_SUPER | RoCompat::LARGE_FILE | RoCompat::BTREE_DIR;
        if !self.feature_incompat.difference(ext2_incompat).is_empty()
            || !self.feature_ro_compat.difference(ext2_ro).is_empty()
        {
            "ext4"
        } else if self.has_compat(Compat::HAS_JOURNAL) {
            "ext3"
        } else {
            "ext2"
        }
    }
}

/// Offset of s_feature_incompat in the superblock.
const FEATURE_INCOMPAT_OFF: usize = 0x60;
/// Offset of s_feature_ro_compat.
const FEATURE_RO_COMPAT_OFF: usize = 0x64;

/// Sets (`on`) or clears INCOMPAT feature bits `bits` in the raw superblock `b` (its 1024
/// bytes) and refreshes its checksum. A writer of the superblock goes through here so that the
/// metadata_csum checksum always matches what it wrote.
pub fn set_incompat_raw(b: &mut [u8], bits: Incompat, on: bool) {
    if b.len() < SUPERBLOCK_SIZE {
        return;
    }
    let old = le32(b, FEATURE_INCOMPAT_OFF);
    let new = if on {
        old | bits.bits()
    } else {
        old & !bits.bits()
    };
    b[FEATURE_INCOMPAT_OFF..FEATURE_INCOMPAT_OFF + 4].copy_from_slice(&new.to_le_bytes());
    refresh_checksum_raw(b);
}

/// Recomputes s_checksum of the raw superblock `b` when it has metadata_csum with crc32c
/// (ext4_superblock_csum_set); otherwise leaves the bytes alone.
pub fn refresh_checksum_raw(b: &mut [u8]) {
    if b.len() < SUPERBLOCK_SIZE
        || !RoCompat::from_bits_retain(le32(b, FEATURE_RO_COMPAT_OFF))
            .contains(RoCompat::METADATA_CSUM)
        || b[0x175] != CSUM_TYPE_CRC32C
    {
        return;
    }
    let c = csum::raw(!0, &b[..csum::SUPERBLOCK_CSUM_OFF]);
    b[csum::SUPERBLOCK_CSUM_OFF..csum::SUPERBLOCK_CSUM_OFF + 4].copy_from_slice(&c.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid superblock: 4 KiB blocks, one group.
    fn sb() -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        let put =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..][..4].copy_from_slice(&v.to_le_bytes());
        put(&mut b, 0x0, 1024); // inodes
        put(&mut b, 0x4, 8192); // blocks
        put(&mut b, 0x18, 2); // 4 KiB
        put(&mut b, 0x20, 32768);
        put(&mut b, 0x28, 1024);
        put(&mut b, 0x4c, 1); // dynamic revision
        b[0x38..0x3a].copy_from_slice(&MAGIC.to_le_bytes());
        b[0x58..0x5a].copy_from_slice(&256u16.to_le_bytes());
        b
    }

    #[test]
    fn parses_and_validates() {
        let s = Superblock::parse(&sb()).unwrap();
        assert_eq!((s.block_size(), s.group_count, s.desc_size), (4096, 1, 32));
        assert_eq!(s.kind(), "ext2");
        let broken: &[(usize, &[u8])] = &[
            (0x38, &[0, 0]),            // magic
            (0x18, &[7, 0, 0, 0]),      // 128 KiB blocks
            (0x58, &[200, 0]),          // inode size not a power of two
            (0x58, &[0, 32]),           // inode size above the block size
            (0x28, &[0, 0, 0, 0]),      // no inodes per group
            (0x20, &[0, 0, 0, 0]),      // no blocks per group
            (0x20, &[1, 0x80, 0, 0]),   // 32769 blocks per group: past one bitmap block
            (0x0, &[0xff, 0xff, 0, 0]), // more inodes than the groups hold
            (0x4, &[0, 0, 0, 0]),       // no blocks
        ];
        for (at, bytes) in broken {
            let mut b = sb();
            b[*at..*at + bytes.len()].copy_from_slice(bytes);
            assert!(
                Superblock::parse(&b).is_err(),
                "accepted a change at {at:#x}"
            );
        }
        assert!(Superblock::parse(&sb()[..100]).is_err());
    }

    #[test]
    fn sparse_super_groups() {
        let mut b = sb();
        b[0x64..0x68].copy_from_slice(&RoCompat::SPARSE_SUPER.bits().to_le_bytes());
        let s = Superblock::parse(&b).unwrap();
        let with: Vec<u32> = (0..60).filter(|&g| s.group_has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }

    #[test]
    fn unknown_features_are_named_and_kept() {
        let mut b = sb();
        let bits = Incompat::COMPRESSION.bits() | Incompat::DIRDATA.bits() | 0x4000_0000;
        b[0x60..0x64].copy_from_slice(&bits.to_le_bytes());
        let e = Superblock::parse(&b).unwrap_err().to_string();
        assert!(
            e.contains("compression, dirdata, unknown bits 0x40000000"),
            "{e}"
        );
        let mut b = sb();
        b[0x64..0x68].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        let s = Superblock::parse(&b).unwrap();
        assert_eq!(s.feature_ro_compat.bits(), 0x8000_0000);
        assert_eq!(s.kind(), "ext4");
    }
}
