//! POSIX ACLs as ext4 stores them (fs/ext4/acl.h) and as getxattr returns them. On disk: a
//! 4-byte header (version 1), then entries of tag and permissions (4 bytes) for the owner,
//! owning group, mask and others, and of tag, permissions and id (8 bytes) for named users and
//! groups. Through the VFS (`system.posix_acl_access`/`_default`, include/uapi/linux/
//! posix_acl_xattr.h): version 2, and every entry 8 bytes, with id 0xffffffff where none applies.

use crate::bytes::le16;
use crate::bytes::le32;

const DISK_VERSION: u32 = 1;
const XATTR_VERSION: u32 = 2;
const UNDEFINED_ID: u32 = u32::MAX;

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// Converts an ACL from ext4's on-disk format to the VFS xattr format, as ext4_acl_from_disk
/// then posix_acl_to_xattr do. Ok(None) for an empty ACL (the kernel then reports no
/// attribute); Err describes the damage.
pub fn to_xattr(disk: &[u8]) -> Result<Option<Vec<u8>>, String> {
    if disk.len() < 4 {
        return Err(format!("ACL of {} bytes", disk.len()));
    }
    let version = le32(disk, 0);
    if version != DISK_VERSION {
        return Err(format!("ACL version {version}, expected {DISK_VERSION}"));
    }
    let mut out = XATTR_VERSION.to_le_bytes().to_vec();
    let mut rest = &disk[4..];
    while !rest.is_empty() {
        let at = disk.len().saturating_sub(rest.len());
        if rest.len() < 4 {
            return Err(format!("ACL entry at {at} cut short"));
        }
        let tag = le16(rest, 0);
        let perm = le16(rest, 2);
        let (id, len) = match tag {
            USER_OBJ | GROUP_OBJ | MASK | OTHER => (UNDEFINED_ID, 4),
            USER | GROUP => {
                if rest.len() < 8 {
                    return Err(format!("ACL entry at {at} cut short"));
                }
                (le32(rest, 4), 8)
            }
            _ => return Err(format!("ACL entry tag {tag:#x} at {}", at)),
        };
        rest = rest.get(len..).unwrap_or(&[]);
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok((out.len() > 4).then_some(out))
}

/// Converts an ACL from the VFS xattr format to ext4's on-disk one (posix_acl_from_xattr then
/// ext4_acl_to_disk), and gives the permission bits it implies for the file mode
/// (posix_acl_update_mode: owner from USER_OBJ, group from MASK or else GROUP_OBJ, other from
/// OTHER) and whether the ACL says no more than those bits (then the kernel stores none).
pub fn from_xattr(x: &[u8]) -> Result<(Vec<u8>, u16, bool), String> {
    if x.len() < 4 || x.len().saturating_sub(4) % 8 != 0 {
        return Err(format!("ACL of {} bytes", x.len()));
    }
    if le32(x, 0) != XATTR_VERSION {
        return Err(format!(
            "ACL version {}, expected {XATTR_VERSION}",
            le32(x, 0)
        ));
    }
    let mut out = DISK_VERSION.to_le_bytes().to_vec();
    let (mut user, mut group, mut mask, mut other) = (None, None, None, None);
    let mut extended = false;
    let mut prev_tag = 0u16;
    for e in x[4..].chunks_exact(8) {
        let tag = le16(e, 0);
        let perm = le16(e, 2);
        if perm & !7 != 0 || tag < prev_tag {
            return Err(format!("ACL entry tag {tag:#x} perm {perm:#o}"));
        }
        prev_tag = tag;
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        match tag {
            USER_OBJ => user = Some(perm),
            GROUP_OBJ => group = Some(perm),
            MASK => {
                mask = Some(perm);
                extended = true;
            }
            OTHER => other = Some(perm),
            USER | GROUP => {
                out.extend_from_slice(&e[4..8]);
                extended = true;
            }
            _ => return Err(format!("ACL entry tag {tag:#x}")),
        }
    }
    let (Some(u), Some(g), Some(o)) = (user, group, other) else {
        return Err("ACL without owner, group or other entry".into());
    };
    let g = mask.unwrap_or(g);
    Ok((out, (u << 6) | (g << 3) | o, !extended))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_rejects() {
        // user::rw-, user:1234:rw-, group::r--, mask::rw-, other::r--
        let mut d = 1u32.to_le_bytes().to_vec();
        d.extend([1, 0, 6, 0]);
        d.extend([2, 0, 6, 0, 0xd2, 0x04, 0, 0]);
        d.extend([4, 0, 4, 0]);
        d.extend([0x10, 0, 6, 0]);
        d.extend([0x20, 0, 4, 0]);
        let x = to_xattr(&d).unwrap().unwrap();
        assert_eq!(x.len(), 4 + 5 * 8);
        assert_eq!(&x[..12], &[2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&x[12..20], &[2, 0, 6, 0, 0xd2, 0x04, 0, 0]);
        assert_eq!(to_xattr(&1u32.to_le_bytes()).unwrap(), None);
        assert!(to_xattr(&d[..d.len() - 1]).is_err());
        assert!(to_xattr(&d[..10]).is_err());
        let mut v = d.clone();
        v[0] = 2;
        assert!(to_xattr(&v).is_err());
        let mut t = d.clone();
        t[4] = 0x40;
        assert!(to_xattr(&t).is_err());
        // And back: the same disk bytes, mode bits from owner, mask and other.
        let (disk, mode, plain) = from_xattr(&x).unwrap();
        assert_eq!(disk, d);
        assert_eq!((mode, plain), (0o664, false));
    }
}
