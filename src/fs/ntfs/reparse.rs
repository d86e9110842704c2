//! $REPARSE_POINT: a tag and its data. Symbolic links (IO_REPARSE_TAG_SYMLINK) and junctions
//! (IO_REPARSE_TAG_MOUNT_POINT) become symlinks, their Windows targets mapped the way ntfs-3g
//! maps them ([MS-FSCC] 2.1.2); other tags say the data lives elsewhere (WOF, deduplication,
//! cloud files) and such files are not read as if their $DATA were their content.

use crate::bytes::le16;
use crate::bytes::le32;

pub const TAG_MOUNT_POINT: u32 = 0xa000_0003;
pub const TAG_SYMLINK: u32 = 0xa000_000c;
pub const TAG_DEDUP: u32 = 0x8000_0013;
pub const TAG_WOF: u32 = 0x8000_0017;
/// Bit 31: a Microsoft tag (no GUID in the header).
const TAG_MICROSOFT: u32 = 0x8000_0000;
/// The flag of a symlink whose target is relative to the link's directory.
const SYMLINK_RELATIVE: u32 = 1;
/// Largest reparse data Windows stores (MAXIMUM_REPARSE_DATA_BUFFER_SIZE).
pub const MAX_SIZE: u64 = 16 << 10;

/// The tag of reparse data `b`.
pub fn tag(b: &[u8]) -> Option<u32> {
    (b.len() >= 8).then(|| le32(b, 0))
}

/// Whether a file with this tag keeps its content somewhere other than its unnamed $DATA
/// (reading $DATA would give wrong bytes): deduplication, WOF, HSM/SIS, cloud files.
pub fn data_elsewhere(tag: u32) -> bool {
    matches!(tag, TAG_DEDUP | TAG_WOF | 0xc000_0004 | 0x8000_0006 | 0x8000_0007)
        // IO_REPARSE_TAG_CLOUD and CLOUD_1..F: 0x9000_X01A.
        || tag & 0xffff_0fff == 0x9000_001a
}

/// Where a link points, before mapping into the mounted tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Relative to the link's directory; components separated by '\'.
    Relative(Vec<u16>),
    /// An absolute path on a drive ("C:\dir"), or drive-relative ("\dir": drive None).
    Absolute { drive: Option<u16>, path: Vec<u16> },
    /// A volume GUID path or anything else ntfs-3g does not map inside the volume.
    Other(Vec<u16>),
}

fn units(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// The target of a symlink or junction reparse point `b`; None for other tags or damage.
pub fn link_target(b: &[u8]) -> Option<Target> {
    let tag = tag(b)?;
    let len = usize::from(le16(b, 4));
    let header = if tag & TAG_MICROSOFT != 0 { 8 } else { 24 };
    if b.len().checked_sub(header) != Some(len) {
        return None;
    }
    let (buffer_at, flags) = match tag {
        TAG_MOUNT_POINT => (8 + 8, 0),
        TAG_SYMLINK => (8 + 12, le32(b, 16)),
        _ => return None,
    };
    let off = usize::from(le16(b, 8));
    let n = usize::from(le16(b, 10));
    let subst = units(b.get(buffer_at..)?.get(off..)?.get(..n)?);
    let bs = u16::from(b'\\');
    let colon = u16::from(b':');
    let q = u16::from(b'?');
    // "\??\C:\..." (junctions and full symlinks): the NT namespace prefix of a drive path.
    let full = subst.len() >= 4
        && subst[0] == bs
        && (subst[1] == q || subst[1] == bs)
        && subst[2] == q
        && subst[3] == bs;
    if tag == TAG_MOUNT_POINT || (full && flags & SYMLINK_RELATIVE == 0) {
        if !full {
            return Some(Target::Other(subst));
        }
        let rest = &subst[4..];
        if rest.len() >= 3 && rest[1] == colon && rest[2] == bs {
            return Some(Target::Absolute {
                drive: Some(rest[0]),
                path: rest[3..].to_vec(),
            });
        }
        return Some(Target::Other(subst));
    }
    if flags & SYMLINK_RELATIVE == 0 {
        return None;
    }
    if subst.len() >= 3 && subst[1] == colon && subst[2] == bs {
        return Some(Target::Absolute {
            drive: Some(subst[0]),
            path: subst[3..].to_vec(),
        });
    }
    if subst.first() == Some(&bs) {
        return Some(Target::Absolute {
            drive: None,
            path: subst[1..].to_vec(),
        });
    }
    Some(Target::Relative(subst))
}
