//! $FILE_NAME: a name of the file in its parent directory (one attribute per hard link and per
//! namespace), also the key of every directory index entry (Linux-NTFS documentation,
//! "$FILE_NAME").

use crate::bytes::{le32, le64};

/// Case-sensitive names (what ntfs-3g creates by default); looked up exactly.
pub const NS_POSIX: u8 = 0;
pub const NS_WIN32: u8 = 1;
/// The 8.3 alias of a long Win32 name: hidden from listings, found by lookup.
pub const NS_DOS: u8 = 2;
pub const NS_WIN32_AND_DOS: u8 = 3;
/// The header before the name.
pub const HEADER: usize = 0x42;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileName {
    pub parent: u64,
    /// File attribute flags as the directory copy has them (may lag $STANDARD_INFORMATION).
    pub flags: u32,
    pub namespace: u8,
    pub name: Vec<u16>,
}

impl FileName {
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        if b.len() < HEADER {
            return Err(format!("$FILE_NAME of {} bytes", b.len()));
        }
        let len = usize::from(b[0x40]);
        let name = b
            .get(HEADER..)
            // At most 255 UTF-16 units: no saturation.
            .and_then(|r| r.get(..len.saturating_mul(2)))
            .ok_or_else(|| format!("name of {len} units past the {} bytes", b.len()))?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(FileName {
            parent: le64(b, 0),
            flags: le32(b, 0x38),
            namespace: b[0x41],
            name,
        })
    }
}

/// A UTF-16 name as UTF-8 (unpaired surrogates become U+FFFD).
pub fn to_utf8(name: &[u16]) -> Vec<u8> {
    String::from_utf16_lossy(name).into_bytes()
}
