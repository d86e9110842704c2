//! CRC32c of v5 metadata (libxfs xfs_cksum.h): the standard CRC32c (seed ~0, final inversion)
//! of the whole block with its own 4-byte CRC field taken as zero, stored little-endian in
//! that field.

/// The checksum of `buf` with the field at `off` counted as zeros.
pub fn compute(buf: &[u8], off: usize) -> u32 {
    let Some(end) = off.checked_add(4).filter(|&e| e <= buf.len()) else {
        return 0;
    };
    let c = crc32c::crc32c(&buf[..off]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, &buf[end..])
}

/// Whether the CRC stored at `off` matches `buf`.
pub fn verify(buf: &[u8], off: usize) -> bool {
    mismatch(buf, off).is_none()
}

/// The CRC `buf` should store at `off` and the one it stores, when they differ (the stored
/// one is 0 when the field lies outside `buf`): what an error about the mismatch shows.
pub fn mismatch(buf: &[u8], off: usize) -> Option<(u32, u32)> {
    let computed = compute(buf, off);
    match buf.get(off..off.saturating_add(4)) {
        Some(s) => {
            let stored = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            (stored != computed).then_some((computed, stored))
        }
        None => Some((computed, 0)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_counts_as_zero() {
        let mut b = vec![7u8; 64];
        let c = super::compute(&b, 8);
        b[8..12].copy_from_slice(&c.to_le_bytes());
        assert!(super::verify(&b, 8));
        // The field itself does not change the sum; any other byte does.
        assert_eq!(super::compute(&b, 8), c);
        b[20] ^= 1;
        assert!(!super::verify(&b, 8));
        assert!(!super::verify(&b, 62));
        // crc32c("123456789") is the standard check value 0xe3069283.
        let mut v = b"123456789\0\0\0\0".to_vec();
        assert_eq!(super::compute(&v, 9), crc32c::crc32c(b"123456789\0\0\0\0"));
        v.truncate(9);
        assert_eq!(crc32c::crc32c(&v), 0xe306_9283);
    }
}
