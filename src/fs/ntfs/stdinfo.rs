//! $STANDARD_INFORMATION: the four times and the DOS-style file attribute flags (Linux-NTFS
//! documentation, "$STANDARD_INFORMATION").

use crate::bytes::{le32, le64};
use crate::fs::Timestamp;

pub const ATTR_READONLY: u32 = 0x0001;
pub const ATTR_HIDDEN: u32 = 0x0002;
pub const ATTR_SYSTEM: u32 = 0x0004;
pub const ATTR_REPARSE_POINT: u32 = 0x0400;
pub const ATTR_ENCRYPTED: u32 = 0x4000;
/// In index keys and $FILE_NAME: the file is a directory (has a $I30 index).
pub const ATTR_DIRECTORY: u32 = 0x1000_0000;

/// 100 ns intervals between 1601-01-01 and 1970-01-01.
const EPOCH_DIFF: i64 = 116_444_736_000_000_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StdInfo {
    pub created: Timestamp,
    /// Last change of the data (mtime).
    pub modified: Timestamp,
    /// Last change of the MFT record (ctime).
    pub changed: Timestamp,
    pub accessed: Timestamp,
    pub flags: u32,
}

/// An NTFS time (signed 100 ns units since 1601, as ntfs-3g reads it) as a Unix timestamp.
pub fn time(t: u64) -> Timestamp {
    // The on-disk u64 reinterpreted as the signed value it is.
    let t = i64::from_ne_bytes(t.to_ne_bytes()).saturating_sub(EPOCH_DIFF);
    Timestamp {
        secs: t.div_euclid(10_000_000),
        // 0..10^7 times 100 < 2^32: no saturation.
        nsecs: u32::try_from(t.rem_euclid(10_000_000))
            .unwrap_or(0)
            .saturating_mul(100),
    }
}

impl StdInfo {
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        if b.len() < 0x24 {
            return Err(format!("$STANDARD_INFORMATION of {} bytes", b.len()));
        }
        Ok(StdInfo {
            created: time(le64(b, 0)),
            modified: time(le64(b, 8)),
            changed: time(le64(b, 0x10)),
            accessed: time(le64(b, 0x18)),
            flags: le32(b, 0x20),
        })
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    #[test]
    fn epoch_and_before() {
        assert_eq!(time(EPOCH_DIFF as u64), Timestamp { secs: 0, nsecs: 0 });
        assert_eq!(
            time(EPOCH_DIFF as u64 + 15),
            Timestamp {
                secs: 0,
                nsecs: 1500
            }
        );
        assert_eq!(
            time(EPOCH_DIFF as u64 - 1),
            Timestamp {
                secs: -1,
                nsecs: 999_999_900
            }
        );
    }
}
