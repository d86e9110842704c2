//! The jbd2 journal superblock (Documentation/filesystems/ext4/journal.rst, "Super Block"):
//! the first block of the journal, big-endian. Version 1 has no feature words; version 2 adds
//! the features, UUID and (with csum v2/v3) a crc32c of itself. Validated as the kernel's
//! `journal_check_superblock` does: a journal it would refuse to load is refused here too.

use super::block::{crc32c, HEADER_LEN, MAGIC};
use crate::fs::{Error, Result};
use std::mem::{offset_of, size_of};
use zerocopy::byteorder::{BigEndian, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

type Be32 = U32<BigEndian>;

/// journal_superblock_t (include/linux/jbd2.h), big-endian: the one layout `parse` reads and
/// `encode_into` updates in place.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawJournalSuperblock {
    /// journal_header_t: h_magic, h_blocktype, h_sequence.
    pub h_magic: Be32,
    pub h_blocktype: Be32,
    pub h_sequence: Be32,
    pub s_blocksize: Be32,
    pub s_maxlen: Be32,
    pub s_first: Be32,
    pub s_sequence: Be32,
    pub s_start: Be32,
    pub s_errno: Be32,
    // Version 2 from here on.
    pub s_feature_compat: Be32,
    pub s_feature_incompat: Be32,
    pub s_feature_ro_compat: Be32,
    pub s_uuid: [u8; 16],
    pub s_nr_users: Be32,
    pub s_dynsuper: Be32,
    pub s_max_transaction: Be32,
    pub s_max_trans_data: Be32,
    pub s_checksum_type: u8,
    pub s_padding2: [u8; 3],
    pub s_num_fc_blks: Be32,
    pub s_head: Be32,
    pub s_padding: [Be32; 40],
    pub s_checksum: Be32,
    pub s_users: [u8; 16 * 48],
}

pub const BLOCKTYPE_SUPERBLOCK_V1: u32 = 3;
pub const BLOCKTYPE_SUPERBLOCK_V2: u32 = 4;

/// COMPAT: v1 transaction checksums (crc32_be over each transaction's blocks, in its commit).
pub const COMPAT_CHECKSUM: u32 = 0x1;
pub const INCOMPAT_REVOKE: u32 = 0x1;
/// Block numbers in tags and revoke records are 64-bit.
pub const INCOMPAT_64BIT: u32 = 0x2;
/// Commit blocks may reach the disk before the transaction's blocks (checksummed).
pub const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
pub const INCOMPAT_CSUM_V2: u32 = 0x8;
pub const INCOMPAT_CSUM_V3: u32 = 0x10;
/// The last s_num_fc_blks blocks hold ext4 fast-commit records, not jbd2 transactions.
pub const INCOMPAT_FAST_COMMIT: u32 = 0x20;
const KNOWN_INCOMPAT: u32 = INCOMPAT_REVOKE
    | INCOMPAT_64BIT
    | INCOMPAT_ASYNC_COMMIT
    | INCOMPAT_CSUM_V2
    | INCOMPAT_CSUM_V3
    | INCOMPAT_FAST_COMMIT;
/// jbd2 knows no RO_COMPAT feature: any bit set is refused.
const KNOWN_RO_COMPAT: u32 = 0;
/// s_checksum_type for crc32c, the only type csum v2/v3 allow.
pub const CHECKSUM_CRC32C: u8 = 4;
/// The kernel's JBD2_MIN_JOURNAL_BLOCKS: shorter journals are refused.
pub const MIN_JOURNAL_BLOCKS: u32 = 1024;
/// Fast-commit blocks when s_num_fc_blks is 0 (JBD2_DEFAULT_FAST_COMMIT_BLOCKS).
pub const DEFAULT_FAST_COMMIT_BLOCKS: u32 = 256;
/// The superblock structure is this long; its checksum covers exactly these bytes.
pub const SUPERBLOCK_LEN: usize = size_of::<RawJournalSuperblock>();
const CHECKSUM_OFF: usize = offset_of!(RawJournalSuperblock, s_checksum);
const _: () = assert!(SUPERBLOCK_LEN == 1024 && CHECKSUM_OFF == 0xfc);
const _: () = assert!(offset_of!(RawJournalSuperblock, s_blocksize) == HEADER_LEN);
const _: () = assert!(offset_of!(RawJournalSuperblock, s_checksum_type) == 0x50);
const _: () = assert!(offset_of!(RawJournalSuperblock, s_num_fc_blks) == 0x54);

#[derive(Clone, Debug)]
pub struct JournalSuperblock {
    /// 1 or 2.
    pub version: u8,
    pub block_size: u32,
    /// Journal length in blocks.
    pub maxlen: u32,
    /// First block of the log (after the superblock).
    pub first: u32,
    /// Transaction ID expected at `start`.
    pub sequence: u32,
    /// Journal block where the log begins; 0 when the journal is clean.
    pub start: u32,
    /// Zero for version 1 superblocks (features are a version 2 thing).
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub uuid: [u8; 16],
    pub num_fc_blocks: u32,
}

impl JournalSuperblock {
    /// Parses and validates the superblock in `b` (one journal block, read from byte `at` of
    /// the filesystem's device) for a filesystem with blocks of `fs_block_size` bytes whose
    /// journal inode holds `total_len` blocks. Errors give the device byte of the field.
    pub fn parse(b: &[u8], at: u64, fs_block_size: u32, total_len: u64) -> Result<Self> {
        use std::mem::offset_of;
        let bad = |field: usize, detail: String| {
            let e = Error::corrupt("journal superblock", 0, 0, detail);
            match u64::try_from(field).ok().and_then(|f| at.checked_add(f)) {
                Some(pos) => e.at(pos),
                None => e,
            }
        };
        let Ok((raw, _)) = RawJournalSuperblock::ref_from_prefix(b) else {
            return Err(bad(0, format!("only {} bytes", b.len())));
        };
        let magic = raw.h_magic.get();
        if magic != MAGIC {
            return Err(bad(0, "magic".into())
                .expected(format_args!("{MAGIC:#010x}"), format_args!("{magic:#010x}")));
        }
        let version = match raw.h_blocktype.get() {
            BLOCKTYPE_SUPERBLOCK_V1 => 1,
            BLOCKTYPE_SUPERBLOCK_V2 => 2,
            t => {
                return Err(bad(
                    offset_of!(RawJournalSuperblock, h_blocktype),
                    format!("block type {t} is not a journal superblock"),
                ))
            }
        };
        let v2 = |field: &Be32| if version == 2 { field.get() } else { 0 };
        let sb = JournalSuperblock {
            version,
            block_size: raw.s_blocksize.get(),
            maxlen: raw.s_maxlen.get(),
            first: raw.s_first.get(),
            sequence: raw.s_sequence.get(),
            start: raw.s_start.get(),
            feature_compat: v2(&raw.s_feature_compat),
            feature_incompat: v2(&raw.s_feature_incompat),
            feature_ro_compat: v2(&raw.s_feature_ro_compat),
            uuid: raw.s_uuid,
            num_fc_blocks: v2(&raw.s_num_fc_blks),
        };
        if sb.block_size != fs_block_size {
            return Err(bad(
                offset_of!(RawJournalSuperblock, s_blocksize),
                "block size, the filesystem's".into(),
            )
            .expected(fs_block_size, sb.block_size));
        }
        if u64::from(sb.maxlen) > total_len {
            return Err(bad(
                offset_of!(RawJournalSuperblock, s_maxlen),
                format!(
                    "{} blocks long, but the journal inode holds only {total_len}",
                    sb.maxlen
                ),
            ));
        }
        if sb.first == 0 || u64::from(sb.first) >= total_len {
            return Err(bad(
                offset_of!(RawJournalSuperblock, s_first),
                format!("first log block {}", sb.first),
            ));
        }
        let unknown_incompat = sb.feature_incompat & !KNOWN_INCOMPAT;
        let unknown_ro = sb.feature_ro_compat & !KNOWN_RO_COMPAT;
        if unknown_incompat != 0 || unknown_ro != 0 {
            return Err(Error::Unsupported(format!(
                "journal features ferry does not know: incompat {unknown_incompat:#x}, \
                 ro_compat {unknown_ro:#x}"
            )));
        }
        let fc = if sb.has_incompat(INCOMPAT_FAST_COMMIT) {
            sb.fast_commit_blocks()
        } else {
            0
        };
        if sb
            .maxlen
            .checked_sub(MIN_JOURNAL_BLOCKS)
            .is_none_or(|room| room < fc)
        {
            return Err(bad(
                offset_of!(RawJournalSuperblock, s_maxlen),
                format!(
                    "{} blocks ({fc} for fast commits) is shorter than the {MIN_JOURNAL_BLOCKS} \
                     the kernel requires",
                    sb.maxlen
                ),
            ));
        }
        if sb.has_incompat(INCOMPAT_CSUM_V2) && sb.has_incompat(INCOMPAT_CSUM_V3) {
            return Err(bad(
                offset_of!(RawJournalSuperblock, s_feature_incompat),
                "both checksum v2 and v3 are set".into(),
            ));
        }
        if sb.csum_v2or3() && sb.feature_compat & COMPAT_CHECKSUM != 0 {
            return Err(bad(
                offset_of!(RawJournalSuperblock, s_feature_compat),
                "both checksum v1 and v2/v3 are set".into(),
            ));
        }
        if sb.csum_v2or3() {
            let ty = raw.s_checksum_type;
            if ty != CHECKSUM_CRC32C {
                return Err(bad(
                    offset_of!(RawJournalSuperblock, s_checksum_type),
                    "checksum type (4: crc32c)".into(),
                )
                .expected(CHECKSUM_CRC32C, ty));
            }
            let want = raw.s_checksum.get();
            let got = checksum(raw);
            if got != want {
                return Err(bad(
                    offset_of!(RawJournalSuperblock, s_checksum),
                    "checksum".into(),
                )
                .expected(format_args!("{got:#010x}"), format_args!("{want:#010x}")));
            }
        }
        Ok(sb)
    }

    pub fn has_incompat(&self, f: u32) -> bool {
        self.feature_incompat & f != 0
    }

    /// Transaction checksums v1 (COMPAT_CHECKSUM).
    pub fn csum_v1(&self) -> bool {
        self.feature_compat & COMPAT_CHECKSUM != 0
    }

    /// Per-block crc32c checksums (v2 or v3).
    pub fn csum_v2or3(&self) -> bool {
        self.has_incompat(INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3)
    }

    /// Blocks reserved for fast commits at the end of the journal (jbd2_journal_get_num_fc_blks).
    pub fn fast_commit_blocks(&self) -> u32 {
        if self.num_fc_blocks == 0 {
            DEFAULT_FAST_COMMIT_BLOCKS
        } else {
            self.num_fc_blocks
        }
    }

    /// One past the last block of the circular log (the kernel's j_last): the fast-commit area
    /// follows it.
    pub fn last(&self) -> u32 {
        if self.has_incompat(INCOMPAT_FAST_COMMIT) {
            self.maxlen.saturating_sub(self.fast_commit_blocks())
        } else {
            self.maxlen
        }
    }

    /// Bytes of one descriptor tag (the kernel's journal_tag_bytes): 16 with csum v3, else 12
    /// (+2 with csum v2, -4 without 64-bit block numbers).
    pub fn tag_bytes(&self) -> usize {
        if self.has_incompat(INCOMPAT_CSUM_V3) {
            return 16;
        }
        match (
            self.has_incompat(INCOMPAT_CSUM_V2),
            self.has_incompat(INCOMPAT_64BIT),
        ) {
            (true, true) => 14,
            (true, false) => 10,
            (false, true) => 12,
            (false, false) => 8,
        }
    }

    /// Seed of every v2/v3 checksum: crc32c of the journal UUID.
    pub fn csum_seed(&self) -> u32 {
        crc32c(!0, &self.uuid)
    }

    /// Writes the fields a journal writer changes (s_sequence, s_start and, in a version 2
    /// superblock, the compat and incompat features, with s_checksum_type crc32c under csum
    /// v2/v3) into `b`, the superblock block this was parsed from, and refreshes its checksum
    /// (csum v2/v3). `b` must hold at least SUPERBLOCK_LEN bytes.
    pub fn encode_into(&self, b: &mut [u8]) {
        let Ok((raw, _)) = RawJournalSuperblock::mut_from_prefix(b) else {
            return;
        };
        raw.s_sequence.set(self.sequence);
        raw.s_start.set(self.start);
        if self.version == 2 {
            raw.s_feature_compat.set(self.feature_compat);
            raw.s_feature_incompat.set(self.feature_incompat);
        }
        if self.csum_v2or3() {
            raw.s_checksum_type = CHECKSUM_CRC32C;
            let c = checksum(raw);
            raw.s_checksum.set(c);
        }
    }
}

/// The v2/v3 superblock checksum: crc32c over the structure with s_checksum zeroed
/// (jbd2_superblock_csum).
fn checksum(raw: &RawJournalSuperblock) -> u32 {
    let b = raw.as_bytes();
    let c = crc32c(!0, &b[..CHECKSUM_OFF]);
    let c = crc32c(c, &[0; size_of::<Be32>()]);
    crc32c(c, &b[CHECKSUM_OFF..][size_of::<Be32>()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(version: u32, incompat: u32) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        let put = |b: &mut Vec<u8>, at: usize, v: u32| {
            b[at..][..4].copy_from_slice(&v.to_be_bytes());
        };
        put(&mut b, 0, MAGIC);
        put(&mut b, 4, version);
        put(&mut b, 0xc, 1024);
        put(&mut b, 0x10, 2048);
        put(&mut b, 0x14, 1);
        put(&mut b, 0x18, 7);
        put(&mut b, 0x1c, 1);
        put(&mut b, 0x28, incompat);
        b[0x30..0x40].copy_from_slice(&[0xab; 16]);
        if incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3) != 0 {
            b[0x50] = CHECKSUM_CRC32C;
            let c = crc32c(!0, &b);
            put(&mut b, CHECKSUM_OFF, c);
        }
        b
    }

    #[test]
    fn tag_sizes_and_validation() {
        let s = JournalSuperblock::parse(&sample(4, INCOMPAT_CSUM_V3), 0, 1024, 2048).unwrap();
        assert_eq!((s.tag_bytes(), s.last(), s.csum_v2or3()), (16, 2048, true));
        let s = JournalSuperblock::parse(&sample(4, INCOMPAT_CSUM_V2), 0, 1024, 4096).unwrap();
        assert_eq!(s.tag_bytes(), 10);
        let s = JournalSuperblock::parse(&sample(4, INCOMPAT_64BIT), 0, 1024, 2048).unwrap();
        assert_eq!(s.tag_bytes(), 12);
        // Version 1 ignores the feature words.
        let s = JournalSuperblock::parse(&sample(3, INCOMPAT_64BIT), 0, 1024, 2048).unwrap();
        assert_eq!((s.tag_bytes(), s.feature_incompat), (8, 0));
        let s = JournalSuperblock::parse(&sample(4, INCOMPAT_FAST_COMMIT), 0, 1024, 2048).unwrap();
        assert_eq!(s.last(), 2048 - 256);

        let mut flipped = sample(4, INCOMPAT_CSUM_V3);
        flipped[0x18] ^= 1;
        // Errors name the field's byte on the device and the values.
        let e = JournalSuperblock::parse(&flipped, 4096, 1024, 2048).unwrap_err();
        let c = e.corruption().unwrap_or_else(|| panic!("{e}"));
        assert_eq!(
            (c.what, c.offset),
            ("journal superblock", Some(4096 + 0xfc))
        );
        let stored = u32::from_be_bytes(flipped[0xfc..0x100].try_into().unwrap());
        assert_eq!(
            c.mismatch.as_ref().unwrap().found,
            format!("{stored:#010x}")
        );
        let e = JournalSuperblock::parse(&sample(4, 0), 1 << 20, 4096, 2048).unwrap_err();
        let c = e.corruption().unwrap_or_else(|| panic!("{e}"));
        assert_eq!(c.offset, Some((1 << 20) + 0xc), "{e}");
        let m = c.mismatch.as_ref().unwrap();
        assert_eq!(
            (m.expected.as_str(), m.found.as_str()),
            ("4096", "1024"),
            "{e}"
        );
        assert!(JournalSuperblock::parse(&sample(4, 0), 0, 1024, 2047).is_err());
        assert!(JournalSuperblock::parse(&sample(4, 0x40), 0, 1024, 2048).is_err());
        assert!(JournalSuperblock::parse(&sample(5, 0), 0, 1024, 2048).is_err());
        assert!(JournalSuperblock::parse(
            &sample(4, INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3),
            0,
            1024,
            2048
        )
        .is_err());
        assert!(JournalSuperblock::parse(&sample(4, 0)[..512], 0, 1024, 2048).is_err());
    }
}
