//! The blocks of the jbd2 log (Documentation/filesystems/ext4/journal.rst): each starts with a
//! 12-byte big-endian header (magic, block type, transaction ID). Descriptor blocks list the
//! filesystem blocks whose copies follow them in the log; revoke blocks cancel earlier copies;
//! a commit block closes a transaction. With csum v2/v3 each block carries a crc32c seeded
//! with the journal UUID, computed exactly as the kernel's recovery (fs/jbd2/recovery.c)
//! verifies it.

use super::superblock::{JournalSuperblock, INCOMPAT_64BIT, INCOMPAT_CSUM_V3};
use crate::bytes::{be16, be32, be64};

pub const MAGIC: u32 = 0xc03b_3998;
pub const HEADER_LEN: usize = 12;
pub const BLOCKTYPE_DESCRIPTOR: u32 = 1;
pub const BLOCKTYPE_COMMIT: u32 = 2;
pub const BLOCKTYPE_REVOKE: u32 = 5;

/// The block's first four bytes were the magic number and were zeroed in the log copy.
pub const FLAG_ESCAPE: u16 = 1;
/// No 16-byte UUID follows this tag.
pub const FLAG_SAME_UUID: u16 = 2;
pub const FLAG_LAST_TAG: u16 = 8;
/// Size of the checksum tail of descriptor and revoke blocks (csum v2/v3).
pub const TAIL_LEN: usize = 4;
/// Revoke block header: the common header and r_count (bytes used, header included).
pub const REVOKE_HEADER_LEN: usize = 16;

/// h_chksum_type of a v1 (crc32_be) commit checksum, and its h_chksum_size.
pub const COMMIT_CRC32: u8 = 1;
pub const COMMIT_CRC32_SIZE: u8 = 4;
/// struct commit_header: header, type, size, padding, h_chksum[8], sec (be64), nsec.
const COMMIT_HEADER_LEN: usize = 60;
const COMMIT_CHKSUM_OFF: usize = 16;
const COMMIT_SEC_OFF: usize = 48;
const COMMIT_NSEC_OFF: usize = 56;

/// The kernel's crc32c(seed, data): no inversion on entry or exit (the callers seed with ~0).
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// The kernel's crc32_be: CRC-32 (polynomial 0x04c11db7) MSB first, no inversion; v1
/// transaction checksums use it.
pub fn crc32_be(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        let [top, ..] = crc.to_be_bytes();
        crc = (crc << 8) ^ CRC32_BE_TABLE[usize::from(top ^ b)];
    }
    crc
}

const CRC32_BE_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let (mut i, mut top) = (0, 0u32);
    while i < 256 {
        let mut c = top << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04c1_1db7
            } else {
                c << 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
        top += 1;
    }
    t
};

/// The common header of log blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub magic: u32,
    pub blocktype: u32,
    pub sequence: u32,
}

impl Header {
    pub fn parse(b: &[u8]) -> Self {
        Header {
            magic: be32(b, 0),
            blocktype: be32(b, 4),
            sequence: be32(b, 8),
        }
    }

    /// A log block header of `blocktype` for transaction `sequence`.
    pub fn new(blocktype: u32, sequence: u32) -> Self {
        Header {
            magic: MAGIC,
            blocktype,
            sequence,
        }
    }

    /// Writes the header into the first HEADER_LEN bytes of `b`.
    pub fn encode_into(&self, b: &mut [u8]) {
        put32(b, 0, self.magic);
        put32(b, 4, self.blocktype);
        put32(b, 8, self.sequence);
    }
}

/// Stores big-endian `v` at `at` if it fits (the writers size their blocks first).
fn put32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at.saturating_add(4)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    if let Some(s) = b.get_mut(at..at.saturating_add(8)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at.saturating_add(2)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// One descriptor tag: which filesystem block the next log block is a copy of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub blocknr: u64,
    pub flags: u16,
    /// The data block's checksum: 32 bits with csum v3, the low 16 with v2.
    pub checksum: u32,
}

/// The tags of descriptor block `b` in order, as the kernel walks them (count_tags and
/// jbd2_do_replay): fixed-size tags, each but the `SAME_UUID` ones followed by a UUID, up to
/// the `LAST_TAG` flag or the end of the block (before the checksum tail). At most
/// `b.len() / tag_bytes` tags, so the walk is bounded.
pub fn tags(b: &[u8], jsb: &JournalSuperblock) -> Vec<Tag> {
    let tag_bytes = jsb.tag_bytes();
    let size = b
        .len()
        .saturating_sub(if jsb.csum_v2or3() { TAIL_LEN } else { 0 });
    let wide = jsb.has_incompat(INCOMPAT_64BIT);
    let v3 = jsb.has_incompat(INCOMPAT_CSUM_V3);
    let mut out = Vec::new();
    // The tags (each followed by a 16-byte UUID unless FLAG_SAME_UUID) between the header and
    // the tail; a tag that does not fit ends the list.
    let mut rest = b
        .get(..size)
        .and_then(|r| r.get(HEADER_LEN..))
        .unwrap_or(&[]);
    while let Some(t) = rest.get(..tag_bytes) {
        let flags = be16(t, 6);
        let mut blocknr = u64::from(be32(t, 0));
        if wide {
            blocknr |= u64::from(be32(t, 8)) << 32;
        }
        let checksum = if v3 {
            be32(t, 12)
        } else {
            u32::from(be16(t, 4))
        };
        out.push(Tag {
            blocknr,
            flags,
            checksum,
        });
        let step = if flags & FLAG_SAME_UUID == 0 {
            tag_bytes.saturating_add(16)
        } else {
            tag_bytes
        };
        rest = rest.get(step..).unwrap_or(&[]);
        if flags & FLAG_LAST_TAG != 0 {
            break;
        }
    }
    out
}

/// Writes `tag` at byte `p` of a descriptor block in the layout `jsb` selects, the inverse of
/// `tags`: tag3 (csum v3: block, flags as a 32-bit word, high block, checksum) or the classic
/// tag (block, 16-bit checksum, 16-bit flags, high block with 64-bit), `tag_bytes` long.
pub fn encode_tag(b: &mut [u8], p: usize, tag: &Tag, jsb: &JournalSuperblock) {
    let tag_bytes = jsb.tag_bytes();
    let Some(t) = b.get_mut(p..p.saturating_add(tag_bytes)) else {
        return;
    };
    t.fill(0);
    // The low and high halves of the block number are stored separately.
    let [h0, h1, h2, h3, l0, l1, l2, l3] = tag.blocknr.to_be_bytes();
    let high = u32::from_be_bytes([h0, h1, h2, h3]);
    put32(t, 0, u32::from_be_bytes([l0, l1, l2, l3]));
    if jsb.has_incompat(INCOMPAT_CSUM_V3) {
        put32(t, 4, u32::from(tag.flags));
        put32(t, 8, high);
        put32(t, 12, tag.checksum);
    } else {
        // csum v2 keeps the low 16 bits of the checksum.
        let [.., c0, c1] = tag.checksum.to_be_bytes();
        put16(t, 4, u16::from_be_bytes([c0, c1]));
        put16(t, 6, tag.flags);
        if jsb.has_incompat(INCOMPAT_64BIT) {
            put32(t, 8, high);
        }
    }
}

/// Sets the checksum tail of a descriptor or revoke block (csum v2/v3; nothing otherwise): the
/// value `tail_csum_ok` checks.
pub fn set_tail_csum(b: &mut [u8], jsb: &JournalSuperblock, seed: u32) {
    if !jsb.csum_v2or3() {
        return;
    }
    let Some(at) = b.len().checked_sub(TAIL_LEN) else {
        return;
    };
    b[at..].fill(0);
    let c = crc32c(seed, b);
    put32(b, at, c);
}

/// Whether a descriptor or revoke block's tail checksum matches (always true without v2/v3).
pub fn tail_csum_ok(b: &[u8], jsb: &JournalSuperblock, seed: u32) -> bool {
    if !jsb.csum_v2or3() {
        return true;
    }
    let Some(at) = b.len().checked_sub(TAIL_LEN) else {
        return false;
    };
    let mut copy = b.to_vec();
    copy[at..].fill(0);
    crc32c(seed, &copy) == be32(b, at)
}

/// Whether the v2/v3 checksum of commit block `b` matches (always true without v2/v3).
pub fn commit_csum_ok(b: &[u8], jsb: &JournalSuperblock, seed: u32) -> bool {
    if !jsb.csum_v2or3() {
        return true;
    }
    if b.len() < COMMIT_HEADER_LEN {
        return false;
    }
    let mut copy = b.to_vec();
    copy[COMMIT_CHKSUM_OFF..COMMIT_CHKSUM_OFF + 4].fill(0);
    crc32c(seed, &copy) == be32(b, COMMIT_CHKSUM_OFF)
}

/// The kernel's jbd2_commit_block_csum_verify_partial: the checksum matches a block holding
/// only the commit header followed by zeros. A commit block whose sector was written but not
/// the rest of a larger block is still a valid commit.
pub fn commit_csum_partial_ok(b: &[u8], seed: u32) -> bool {
    if b.len() < COMMIT_HEADER_LEN {
        return false;
    }
    let mut copy = vec![0u8; b.len()];
    copy[..COMMIT_HEADER_LEN].copy_from_slice(&b[..COMMIT_HEADER_LEN]);
    copy[COMMIT_CHKSUM_OFF..COMMIT_CHKSUM_OFF + 4].fill(0);
    crc32c(seed, &copy) == be32(b, COMMIT_CHKSUM_OFF)
}

/// The commit block fields recovery looks at.
#[derive(Clone, Copy, Debug)]
pub struct Commit {
    pub chksum_type: u8,
    pub chksum_size: u8,
    /// h_chksum[0]: the v1 crc32_be, or the v2/v3 crc32c.
    pub chksum: u32,
    pub sec: u64,
    pub nsec: u32,
}

impl Commit {
    pub fn parse(b: &[u8]) -> Self {
        Commit {
            chksum_type: b.get(12).copied().unwrap_or(0),
            chksum_size: b.get(13).copied().unwrap_or(0),
            chksum: be32(b, COMMIT_CHKSUM_OFF),
            sec: be64(b, COMMIT_SEC_OFF),
            nsec: be32(b, COMMIT_NSEC_OFF),
        }
    }

    /// Writes these fields into commit block `b` (after its header). With csum v2/v3 the
    /// checksum type and size are 0 and `chksum` is ignored: `set_commit_csum` computes it
    /// over the finished block.
    pub fn encode_into(&self, b: &mut [u8]) {
        if let Some(x) = b.get_mut(12) {
            *x = self.chksum_type;
        }
        if let Some(x) = b.get_mut(13) {
            *x = self.chksum_size;
        }
        put32(b, COMMIT_CHKSUM_OFF, self.chksum);
        // The seconds are stored as two big-endian halves: one big-endian u64.
        put64(b, COMMIT_SEC_OFF, self.sec);
        put32(b, COMMIT_NSEC_OFF, self.nsec);
    }
}

/// Sets the v2/v3 checksum of commit block `b`: crc32c over the block with h_chksum[0] zeroed
/// (jbd2_commit_block_csum_set), the value `commit_csum_ok` checks.
pub fn set_commit_csum(b: &mut [u8], seed: u32) {
    if b.len() < COMMIT_HEADER_LEN {
        return;
    }
    b[COMMIT_CHKSUM_OFF..COMMIT_CHKSUM_OFF + 4].fill(0);
    let c = crc32c(seed, b);
    put32(b, COMMIT_CHKSUM_OFF, c);
}

/// The kernel's v2/v3 data block checksum: crc32c over the big-endian transaction ID, then
/// over the block as stored in the log (escaped).
pub fn data_csum_ok(tag: &Tag, data: &[u8], sequence: u32, jsb: &JournalSuperblock) -> bool {
    !jsb.csum_v2or3() || tag.checksum == data_csum(data, sequence, jsb)
}

/// The checksum a tag carries for the log copy `data` in transaction `sequence`: all 32 bits
/// with csum v3, the low 16 with v2 (jbd2_block_tag_csum_set), 0 without v2/v3.
pub fn data_csum(data: &[u8], sequence: u32, jsb: &JournalSuperblock) -> u32 {
    if !jsb.csum_v2or3() {
        return 0;
    }
    let c = crc32c(jsb.csum_seed(), &sequence.to_be_bytes());
    let c = crc32c(c, data);
    if jsb.has_incompat(INCOMPAT_CSUM_V3) {
        c
    } else {
        c & 0xffff
    }
}

/// The bytes of revoke block `b` that hold records (r_count), or None when r_count is larger
/// than the block allows (the kernel fails recovery with EINVAL then).
pub fn revoke_records_end(b: &[u8], jsb: &JournalSuperblock) -> Option<usize> {
    // Past usize: more than any block holds.
    let rcount = usize::try_from(be32(b, HEADER_LEN)).unwrap_or(usize::MAX);
    let room = b
        .len()
        .saturating_sub(if jsb.csum_v2or3() { TAIL_LEN } else { 0 });
    (rcount <= room).then_some(rcount)
}

/// Bytes of one revoke record: 8 with 64-bit block numbers, else 4.
pub fn revoke_record_len(jsb: &JournalSuperblock) -> usize {
    if jsb.has_incompat(INCOMPAT_64BIT) {
        8
    } else {
        4
    }
}

/// Writes revoke records for `blocks` after the header of revoke block `b` and sets r_count;
/// the caller passes no more than fit before the checksum tail.
pub fn encode_revoke_records(b: &mut [u8], blocks: &[u64], jsb: &JournalSuperblock) {
    let len = revoke_record_len(jsb);
    let mut off = REVOKE_HEADER_LEN;
    for &blk in blocks {
        if len == 8 {
            // Stored as two big-endian halves: one big-endian u64.
            put64(b, off, blk);
        } else {
            // A journal without 64-bit block numbers only gets blocks below 2^32: the low half.
            let [.., l0, l1, l2, l3] = blk.to_be_bytes();
            put32(b, off, u32::from_be_bytes([l0, l1, l2, l3]));
        }
        off = off.saturating_add(len);
    }
    // off is within the block, at most 64 KiB.
    put32(b, HEADER_LEN, u32::try_from(off).unwrap_or(u32::MAX));
}

/// The block numbers a revoke block cancels (records between its header and `end`).
pub fn revoke_records(b: &[u8], end: usize, jsb: &JournalSuperblock) -> Vec<u64> {
    let len = revoke_record_len(jsb);
    b.get(..end.min(b.len()))
        .and_then(|r| r.get(REVOKE_HEADER_LEN..))
        .unwrap_or(&[])
        .chunks_exact(len)
        .map(|r| {
            if len == 8 {
                be64(r, 0)
            } else {
                u64::from(be32(r, 0))
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    #[test]
    fn crcs_match_the_reference_check_values() {
        // CRC-32/MPEG-2 (init ~0, no reflection, no final xor) is the kernel's crc32_be.
        assert_eq!(crc32_be(!0, b"123456789"), 0x0376_e6e7);
        // CRC-32C of "123456789" is 0xe3069283 with the usual inversions.
        assert_eq!(!crc32c(!0, b"123456789"), 0xe306_9283);
        assert_eq!(
            crc32c(crc32c(!0, b"1234"), b"56789"),
            crc32c(!0, b"123456789")
        );
    }

    #[test]
    fn header_and_commit_fields() {
        let mut b = vec![0u8; 1024];
        b[..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&2u32.to_be_bytes());
        b[8..12].copy_from_slice(&9u32.to_be_bytes());
        b[12] = COMMIT_CRC32;
        b[13] = COMMIT_CRC32_SIZE;
        b[48..56].copy_from_slice(&1234u64.to_be_bytes());
        let h = Header::parse(&b);
        assert_eq!(
            (h.magic, h.blocktype, h.sequence),
            (MAGIC, BLOCKTYPE_COMMIT, 9)
        );
        let c = Commit::parse(&b);
        assert_eq!((c.chksum_type, c.chksum_size, c.sec), (1, 4, 1234));
        assert_eq!(Commit::parse(&b[..10]).sec, 0);
    }
}
