//! Byte-order field access for the on-disk structures whose offsets stay manual (ext4, XFS,
//! NTFS, jbd2 blocks, VMDK, partition tables, registry hives): the crate's one copy.
//!
//! Short buffers, one behaviour for the whole crate: a field that does not lie wholly inside the
//! buffer reads as **zero** (`le32`, `be64`, ...), never a panic. Why zero: every parser bounds a
//! structure (by a fixed size, or by the length its own header gives) before it reads the
//! structure's fields, so a read past the end is a slip in that check, not a value; on untrusted
//! input the slip must not become a panic, and a zero fails the magic, count or checksum
//! validation that follows. Where the absence of a field is itself meaningful (records walked by
//! position, whose end is only known by trying), the `try_` forms return `None` instead.

/// The `N` bytes at `at`, or `None` if they are not all inside `b` (offset overflow included).
fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Little-endian u16 at `at`, or `None` past the end of `b`.
pub(crate) fn try_le16(b: &[u8], at: usize) -> Option<u16> {
    array(b, at).map(u16::from_le_bytes)
}

/// Little-endian u32 at `at`, or `None` past the end of `b`.
pub(crate) fn try_le32(b: &[u8], at: usize) -> Option<u32> {
    array(b, at).map(u32::from_le_bytes)
}

/// Little-endian u64 at `at`, or `None` past the end of `b`.
pub(crate) fn try_le64(b: &[u8], at: usize) -> Option<u64> {
    array(b, at).map(u64::from_le_bytes)
}

/// Little-endian u16 at `at`; 0 past the end of `b` (see the module comment).
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    try_le16(b, at).unwrap_or(0)
}

/// Little-endian u32 at `at`; 0 past the end of `b` (see the module comment).
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    try_le32(b, at).unwrap_or(0)
}

/// Little-endian u64 at `at`; 0 past the end of `b` (see the module comment).
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    try_le64(b, at).unwrap_or(0)
}

/// Big-endian u16 at `at`; 0 past the end of `b` (see the module comment).
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    array(b, at).map_or(0, u16::from_be_bytes)
}

/// Big-endian u32 at `at`; 0 past the end of `b` (see the module comment).
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    array(b, at).map_or(0, u32::from_be_bytes)
}

/// Big-endian u64 at `at`; 0 past the end of `b` (see the module comment).
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    array(b, at).map_or(0, u64::from_be_bytes)
}

/// A length in memory as a byte count on disk, usable in constants. Lossless: ferry builds only
/// for targets whose `usize` is at most 64 bits wide (asserted below).
#[allow(clippy::as_conversions)] // widening; `u64::try_from` is not const
pub(crate) const fn wide(n: usize) -> u64 {
    n as u64
}
const _: () = assert!(usize::BITS <= u64::BITS);

/// How many bytes to move next: the `left` of a stream, at most `max` (a buffer's length).
pub(crate) fn upto(left: u64, max: usize) -> usize {
    usize::try_from(left).map_or(max, |l| l.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_orders() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(le16(&b, 1), 0x0302);
        assert_eq!(le32(&b, 0), 0x0403_0201);
        assert_eq!(le64(&b, 1), 0x0908_0706_0504_0302);
        assert_eq!(be16(&b, 1), 0x0203);
        assert_eq!(be32(&b, 0), 0x0102_0304);
        assert_eq!(be64(&b, 1), 0x0203_0405_0607_0809);
    }

    #[test]
    fn short_buffers_read_zero_or_none() {
        let b = [0xffu8; 7];
        assert_eq!(le64(&b, 0), 0);
        assert_eq!(be64(&b, 0), 0);
        assert_eq!(le32(&b, 4), 0);
        assert_eq!(be32(&b, 4), 0);
        assert_eq!(le16(&b, 6), 0);
        assert_eq!(be16(&b, 7), 0);
        assert_eq!(le32(&b, usize::MAX), 0);
        assert_eq!(try_le16(&b, 6), None);
        assert_eq!(try_le32(&b, usize::MAX - 1), None);
        assert_eq!(try_le64(&b, 0), None);
        assert_eq!(try_le16(&b, 5), Some(0xffff));
    }
}
