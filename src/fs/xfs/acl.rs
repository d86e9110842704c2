//! POSIX ACLs as XFS stores them (xfs_format.h `struct xfs_acl`: a big-endian count, then
//! 12-byte entries of tag, id and permissions) under the trusted names SGI_ACL_FILE and
//! SGI_ACL_DEFAULT, and as getxattr of system.posix_acl_access/_default returns them
//! (include/uapi/linux/posix_acl_xattr.h: version 2, then little-endian 8-byte entries of
//! tag, permissions and id, the id 0xffffffff where the tag names no one).

use crate::bytes::{be16, be32};

const XATTR_VERSION: u32 = 2;
const UNDEFINED_ID: u32 = u32::MAX;
const ENTRY: usize = 12;

const USER_OBJ: u32 = 0x01;
const USER: u32 = 0x02;
const GROUP_OBJ: u32 = 0x04;
const GROUP: u32 = 0x08;
const MASK: u32 = 0x10;
const OTHER: u32 = 0x20;

/// Entries an ACL may have: what fits a 64 KiB attribute value (XFS_ACL_MAX_ENTRIES on v5;
/// v4 allows 25).
pub fn max_entries(v5: bool) -> usize {
    if v5 {
        (65536 - 4) / ENTRY
    } else {
        25
    }
}

/// Converts an XFS ACL to the VFS xattr form, as xfs_acl_from_disk then posix_acl_to_xattr.
pub fn to_xattr(disk: &[u8], v5: bool) -> Result<Vec<u8>, String> {
    let count = be32(disk, 0);
    let body = disk.get(4..).filter(|body| {
        usize::try_from(count)
            .ok()
            .filter(|&c| c <= max_entries(v5))
            .and_then(|c| c.checked_mul(ENTRY))
            == Some(body.len())
    });
    let Some(body) = body else {
        return Err(format!(
            "ACL of {} bytes counts {count} entries",
            disk.len()
        ));
    };
    let mut out = XATTR_VERSION.to_le_bytes().to_vec();
    for e in body.chunks_exact(ENTRY) {
        let tag = be32(e, 0);
        let perm = be16(e, 8);
        let id = match tag {
            USER | GROUP => be32(e, 4),
            USER_OBJ | GROUP_OBJ | MASK | OTHER => UNDEFINED_ID,
            _ => return Err(format!("ACL tag {tag:#x}")),
        };
        // The tags above fit 16 bits.
        let tag = u16::try_from(tag).map_err(|_| format!("ACL tag {tag:#x}"))?;
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    #[test]
    fn converts() {
        let mut d = 2u32.to_be_bytes().to_vec();
        d.extend([0, 0, 0, 1, 0, 0, 0, 0, 0, 6, 0, 0]);
        d.extend([0, 0, 0, 2, 0, 0, 0x04, 0xd2, 0, 4, 0, 0]);
        let x = super::to_xattr(&d, true).unwrap();
        assert_eq!(
            x,
            [2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, 2, 0, 4, 0, 0xd2, 0x04, 0, 0]
        );
        assert!(super::to_xattr(&d[..20], true).is_err());
        d[3] = 0x40;
        assert!(super::to_xattr(&d, true).is_err());
    }
}
