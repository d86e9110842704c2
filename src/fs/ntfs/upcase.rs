//! $UpCase: the volume's table mapping each UTF-16 unit to its upper case, which defines how
//! Windows compares names (case-insensitively, unit by unit) and so the order of directory
//! indexes (COLLATION_FILENAME).

use std::cmp::Ordering;

/// Entries of the table: one per UTF-16 code unit.
pub const ENTRIES: usize = 65536;

/// The table as $UpCase stores it (little-endian units, decoded at each lookup: opening a
/// volume then neither converts nor copies its 128 KiB), or empty to fold ASCII letters only.
pub struct UpCase(Vec<u8>);

impl UpCase {
    /// From the $UpCase data (128 KiB, little-endian; anything after it is dropped).
    pub fn parse(mut b: Vec<u8>) -> Result<Self, String> {
        if b.len() < 2 * ENTRIES {
            return Err(format!("{} bytes, want {}", b.len(), 2 * ENTRIES));
        }
        b.truncate(2 * ENTRIES);
        Ok(UpCase(b))
    }

    /// ASCII-only folding, for a volume whose $UpCase cannot be read.
    pub fn ascii() -> Self {
        UpCase(Vec::new())
    }

    pub fn up(&self, c: u16) -> u16 {
        let at = usize::from(c).saturating_mul(2);
        match crate::bytes::try_le16(&self.0, at) {
            Some(u) => u,
            // Clearing bit 5 maps a-z to A-Z.
            None if (u16::from(b'a')..=u16::from(b'z')).contains(&c) => c & !0x20,
            None => c,
        }
    }

    /// Case-insensitive order of two names: unit by unit through the table, then by length.
    pub fn cmp_ignore_case(&self, a: &[u16], b: &[u16]) -> Ordering {
        for (&x, &y) in a.iter().zip(b) {
            match self.up(x).cmp(&self.up(y)) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        a.len().cmp(&b.len())
    }

    /// The order of names in a $I30 index: case-insensitive first, then exact.
    pub fn collate(&self, a: &[u16], b: &[u16]) -> Ordering {
        self.cmp_ignore_case(a, b).then_with(|| a.cmp(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_read_the_table_or_fold_ascii() {
        // Identity, except that 'é' (U+00E9) goes up to 'É' and the last unit to 'A'.
        let mut b: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
        b[2 * 0xe9..2 * 0xe9 + 2].copy_from_slice(&0xc9u16.to_le_bytes());
        b[2 * 0xffff..].copy_from_slice(&u16::from(b'A').to_le_bytes());
        b.extend_from_slice(b"trailing bytes are dropped");
        let t = UpCase::parse(b).unwrap();
        assert_eq!(t.up(0xe9), 0xc9);
        assert_eq!(
            t.up(u16::from(b'a')),
            u16::from(b'a'),
            "this table keeps a-z"
        );
        assert_eq!(t.up(0xffff), u16::from(b'A'));
        let a = UpCase::ascii();
        assert_eq!(a.up(u16::from(b'q')), u16::from(b'Q'));
        assert_eq!(a.up(u16::from(b'{')), u16::from(b'{'));
        assert_eq!(a.up(0xe9), 0xe9);
        assert_eq!(
            a.collate(&[u16::from(b'a')], &[u16::from(b'B')]),
            Ordering::Less
        );
        assert!(UpCase::parse(vec![0; 2 * ENTRIES - 1]).is_err());
    }
}
