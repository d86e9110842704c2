//! $UpCase: the volume's table mapping each UTF-16 unit to its upper case, which defines how
//! Windows compares names (case-insensitively, unit by unit) and so the order of directory
//! indexes (COLLATION_FILENAME).

use std::cmp::Ordering;
use std::sync::OnceLock;

/// Entries of the table: one per UTF-16 code unit.
pub const ENTRIES: usize = 65536;

/// Units in one page of the table (4 KiB), read the first time a unit in it is folded.
pub const PAGE_UNITS: usize = 2048;

/// Bytes of one page.
pub const PAGE_BYTES: usize = 2 * PAGE_UNITS;

const PAGES: usize = ENTRIES / PAGE_UNITS;

/// A page of the table, or `None` where it cannot be read (its units then fold as ASCII).
pub type Load<'a> = &'a dyn Fn(usize) -> Option<Vec<u8>>;

/// The table as $UpCase stores it (little-endian units, decoded at each lookup), a page at a
/// time: names are mostly ASCII, so a volume is opened and browsed without its 128 KiB (one
/// read of the disk and 32 page faults at each mount), and a page is read when a name needs
/// it. Without a table, ASCII letters are folded.
pub struct UpCase {
    present: bool,
    pages: [OnceLock<Vec<u8>>; PAGES],
}

impl UpCase {
    /// A volume's table, its pages read through the `Load` each lookup passes.
    pub fn lazy() -> Self {
        UpCase {
            present: true,
            pages: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// ASCII-only folding, for a volume whose $UpCase cannot be read.
    pub fn ascii() -> Self {
        UpCase {
            present: false,
            pages: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    pub fn up(&self, c: u16, load: Load<'_>) -> u16 {
        let i = usize::from(c);
        let page = i / PAGE_UNITS;
        let table = if self.present {
            self.pages
                .get(page)
                .map(|p| p.get_or_init(|| load(page).unwrap_or_default()))
        } else {
            None
        };
        match table.and_then(|t| crate::bytes::try_le16(t, (i % PAGE_UNITS).saturating_mul(2))) {
            Some(u) => u,
            // Clearing bit 5 maps a-z to A-Z.
            None if (u16::from(b'a')..=u16::from(b'z')).contains(&c) => c & !0x20,
            None => c,
        }
    }

    /// Case-insensitive order of two names: unit by unit through the table, then by length.
    pub fn cmp_ignore_case(&self, a: &[u16], b: &[u16], load: Load<'_>) -> Ordering {
        for (&x, &y) in a.iter().zip(b) {
            match self.up(x, load).cmp(&self.up(y, load)) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        a.len().cmp(&b.len())
    }

    /// The order of names in a $I30 index: case-insensitive first, then exact.
    pub fn collate(&self, a: &[u16], b: &[u16], load: Load<'_>) -> Ordering {
        self.cmp_ignore_case(a, b, load).then_with(|| a.cmp(b))
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
        let loaded = std::cell::RefCell::new(Vec::new());
        let load = |p: usize| {
            loaded.borrow_mut().push(p);
            // The page before the last cannot be read.
            (p != PAGES - 2).then(|| b[p * PAGE_BYTES..(p + 1) * PAGE_BYTES].to_vec())
        };
        let t = UpCase::lazy();
        assert_eq!(t.up(0xe9, &load), 0xc9);
        assert_eq!(
            t.up(u16::from(b'a'), &load),
            u16::from(b'a'),
            "this table keeps a-z"
        );
        assert_eq!(*loaded.borrow(), [0], "one page read, once");
        assert_eq!(t.up(0xffff, &load), u16::from(b'A'));
        // A page that cannot be read folds ASCII only (here: leaves the unit as it is).
        let unread = u16::try_from((PAGES - 2) * PAGE_UNITS).unwrap();
        assert_eq!(t.up(unread, &load), unread);
        assert_eq!(t.up(unread, &load), unread);
        assert_eq!(*loaded.borrow(), [0, PAGES - 1, PAGES - 2]);
        let none = |_: usize| -> Option<Vec<u8>> { panic!("no table to read") };
        let a = UpCase::ascii();
        assert_eq!(a.up(u16::from(b'q'), &none), u16::from(b'Q'));
        assert_eq!(a.up(u16::from(b'{'), &none), u16::from(b'{'));
        assert_eq!(a.up(0xe9, &none), 0xe9);
        assert_eq!(
            a.collate(&[u16::from(b'a')], &[u16::from(b'B')], &none),
            Ordering::Less
        );
    }
}
