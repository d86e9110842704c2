//! $UpCase: the volume's table mapping each UTF-16 unit to its upper case, which defines how
//! Windows compares names (case-insensitively, unit by unit) and so the order of directory
//! indexes (COLLATION_FILENAME).

use std::cmp::Ordering;

/// Entries of the table: one per UTF-16 code unit.
pub const ENTRIES: usize = 65536;

pub struct UpCase(Vec<u16>);

impl UpCase {
    /// From the $UpCase data (128 KiB, little-endian).
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        if b.len() < 2 * ENTRIES {
            return Err(format!("{} bytes, want {}", b.len(), 2 * ENTRIES));
        }
        Ok(UpCase(
            b[..2 * ENTRIES]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ))
    }

    /// ASCII-only folding, for a volume whose $UpCase cannot be read.
    pub fn ascii() -> Self {
        UpCase(
            (0..=u16::MAX)
                .map(|c| {
                    if (u16::from(b'a')..=u16::from(b'z')).contains(&c) {
                        // Clearing bit 5 maps a-z to A-Z.
                        c & !0x20
                    } else {
                        c
                    }
                })
                .collect(),
        )
    }

    pub fn up(&self, c: u16) -> u16 {
        self.0[usize::from(c)]
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
