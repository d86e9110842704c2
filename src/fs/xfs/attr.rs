//! Extended attributes (xfs_attr.c, xfs_attr_leaf.c, xfs_attr_remote.c, xfs_xattr.c). The
//! attribute fork is short-form in the inode (`attr_sf`), or blocks: one leaf (`attr_leaf`),
//! or leaves under a da-btree (`da_btree`). Large values live in "remote" blocks of the
//! fork, on v5 each with its own header ("XARM").
//!
//! Names carry a namespace in their flags: none for "user.", ROOT for "trusted.", SECURE for
//! "security.". POSIX ACLs are the trusted attributes SGI_ACL_FILE/SGI_ACL_DEFAULT, which the
//! kernel lists (for root) both under their own name and as system.posix_acl_access/_default,
//! converted to the VFS format (`acl`). Entries being set (INCOMPLETE) are not shown.

use super::inode::{Inode, FMT_LOCAL};
use super::{acl, attr_leaf, attr_sf, da_btree, Xfs};
use crate::bytes::{be32, wide};
use crate::fs::{Error, Result};

pub const FLAG_LOCAL: u8 = 0x01;
pub const FLAG_ROOT: u8 = 0x02;
pub const FLAG_SECURE: u8 = 0x04;
pub const FLAG_INCOMPLETE: u8 = 0x80;
const NS_MASK: u8 = FLAG_ROOT | FLAG_SECURE;

const ACL_FILE: &[u8] = b"SGI_ACL_FILE";
const ACL_DEFAULT: &[u8] = b"SGI_ACL_DEFAULT";
const POSIX_ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const POSIX_ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// Largest value an attribute holds (XATTR_SIZE_MAX).
pub const MAX_VALUE: u32 = 65536;
/// The v5 remote value block header (`xfs_attr3_rmt_hdr`).
const RMT_MAGIC: u32 = 0x5841_524d;
const RMT_HDR: usize = 56;
/// Offsets of CRC, self address, UUID and owner in that header.
const RMT_V5_HEADER: [usize; 4] = [12, 40, 16, 32];
/// Leaf blocks listed at most: a fork of 2^32 blocks cannot be walked in one call anyway.
const MAX_LEAVES: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    Local(&'a [u8]),
    /// `len` bytes from logical block `blk` of the attribute fork.
    Remote {
        blk: u32,
        len: u32,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub flags: u8,
    pub name: &'a [u8],
    pub value: Value<'a>,
}

/// An entry with its value resolved to bytes where it was local.
#[derive(Clone, Debug)]
struct Owned {
    flags: u8,
    name: Vec<u8>,
    local: Option<Vec<u8>>,
    remote: Option<(u32, u32)>,
}

/// The prefix of a namespace (None: a namespace no handler takes).
fn prefix(flags: u8) -> Option<&'static [u8]> {
    match flags & NS_MASK {
        0 => Some(b"user."),
        FLAG_ROOT => Some(b"trusted."),
        FLAG_SECURE => Some(b"security."),
        _ => None,
    }
}

impl Xfs {
    /// Every complete attribute of `ip`, in the order the kernel lists them.
    fn attr_entries(&self, ip: &Inode) -> Result<Vec<Owned>> {
        let what = "xfs attribute fork";
        let Some(fork) = ip.attr_fork.as_deref() else {
            return Ok(Vec::new());
        };
        let own = |e: &Entry<'_>| Owned {
            flags: e.flags,
            name: e.name.to_vec(),
            local: match e.value {
                Value::Local(v) => Some(v.to_vec()),
                Value::Remote { .. } => None,
            },
            remote: match e.value {
                Value::Remote { blk, len } => Some((blk, len)),
                Value::Local(_) => None,
            },
        };
        let keep = |o: &Owned| o.flags & FLAG_INCOMPLETE == 0;
        if ip.aformat == FMT_LOCAL {
            let entries = attr_sf::parse(fork).map_err(|d| self.damage(what, ip.ino, 0, d))?;
            return Ok(entries.iter().map(own).filter(keep).collect());
        }
        if ip.anextents == 0 {
            return Ok(Vec::new());
        }
        let v5 = self.sb.is_v5();
        let what = "xfs attribute leaf";
        let magics = [attr_leaf::MAGIC_V4, attr_leaf::MAGIC_V5];
        let (mut lblk, mut b) = self.da_find_leaf(ip, true, 0, None, what, &magics)?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_LEAVES {
            let entries =
                attr_leaf::parse(&b, v5).map_err(|d| self.damage(what, ip.ino, lblk, d))?;
            out.extend(entries.iter().map(own).filter(keep));
            let next = u64::from(da_btree::forw(&b));
            if next == 0 {
                return Ok(out);
            }
            if !seen.insert(lblk) || seen.contains(&next) {
                return Err(self.damage(what, ip.ino, lblk, "the leaf chain loops".into()));
            }
            lblk = next;
            b = self.da_block(ip, true, lblk, 1, what, &magics)?;
            if da_btree::is_node(&b) {
                return Err(self.damage(what, ip.ino, lblk, "node in the leaf chain".into()));
            }
        }
        Err(self.damage(what, ip.ino, lblk, "endless leaf chain".into()))
    }

    pub(super) fn list_xattrs(&self, ip: &Inode) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for e in self.attr_entries(ip)? {
            if e.flags & NS_MASK == FLAG_ROOT {
                if e.name == ACL_FILE {
                    out.push(POSIX_ACL_ACCESS.to_vec());
                } else if e.name == ACL_DEFAULT {
                    out.push(POSIX_ACL_DEFAULT.to_vec());
                }
            }
            if let Some(p) = prefix(e.flags) {
                out.push([p, &e.name[..]].concat());
            }
        }
        Ok(out)
    }

    pub(super) fn get_xattr(&self, ip: &Inode, full: &[u8]) -> Result<Vec<u8>> {
        let (ns, name, acl) = if full == POSIX_ACL_ACCESS {
            (FLAG_ROOT, ACL_FILE, true)
        } else if full == POSIX_ACL_DEFAULT {
            (FLAG_ROOT, ACL_DEFAULT, true)
        } else if let Some(n) = full.strip_prefix(b"user.") {
            (0, n, false)
        } else if let Some(n) = full.strip_prefix(b"trusted.") {
            (FLAG_ROOT, n, false)
        } else if let Some(n) = full.strip_prefix(b"security.") {
            (FLAG_SECURE, n, false)
        } else {
            return Err(Error::NotSupported);
        };
        if name.is_empty() {
            return Err(Error::NotSupported);
        }
        let entries = self.attr_entries(ip)?;
        let Some(e) = entries
            .into_iter()
            .find(|e| e.flags & NS_MASK == ns && e.name == name)
        else {
            return Err(Error::NoAttr);
        };
        let value = match (e.local, e.remote) {
            (Some(v), _) => v,
            (None, Some((blk, len))) => self.remote_value(ip, blk, len)?,
            (None, None) => return Err(Error::NoAttr),
        };
        if acl {
            return acl::to_xattr(&value, self.sb.is_v5())
                .map_err(|d| self.damage("xfs ACL", ip.ino, 0, d));
        }
        Ok(value)
    }

    /// A remote value: `len` bytes from block `blk` of the attribute fork, each block on v5
    /// with a header saying which part of which inode's value it holds.
    fn remote_value(&self, ip: &Inode, blk: u32, len: u32) -> Result<Vec<u8>> {
        let what = "xfs remote attribute value";
        if len > MAX_VALUE {
            return Err(self.damage(what, ip.ino, u64::from(blk), format!("{len} bytes")));
        }
        let v5 = self.sb.is_v5();
        // The block size is at most 64 KiB (Superblock::check_geometry), far above RMT_HDR.
        let bs = usize::try_from(self.sb.blocksize).unwrap_or(usize::MAX);
        let per = if v5 { bs.saturating_sub(RMT_HDR) } else { bs };
        let short = |d: String| self.damage(what, ip.ino, u64::from(blk), d);
        let len = usize::try_from(len).map_err(|_| short(format!("{len} bytes")))?;
        let mut out = Vec::with_capacity(len);
        let mut lblk = u64::from(blk);
        while out.len() < len {
            let want = per.min(len.saturating_sub(out.len()));
            let offset = out.len();
            let ino = ip.ino;
            let b = self.fork_block(ip, true, lblk, 1, what, |b, daddr| {
                if !v5 {
                    return Ok(());
                }
                if be32(b, 0) != RMT_MAGIC {
                    return Err(format!("magic {:#x}", be32(b, 0)));
                }
                self.v5_header(b, daddr, ino, RMT_V5_HEADER)?;
                if u64::from(be32(b, 4)) != wide(offset) || u64::from(be32(b, 8)) != wide(want) {
                    return Err(format!(
                        "holds {} bytes at {}, expected {want} at {offset}",
                        be32(b, 8),
                        be32(b, 4)
                    ));
                }
                Ok(())
            })?;
            let from = if v5 { RMT_HDR } else { 0 };
            let part = b.get(from..).and_then(|r| r.get(..want));
            let part = part.ok_or_else(|| short(format!("block {lblk} cut short")))?;
            out.extend_from_slice(part);
            lblk = lblk.saturating_add(1);
        }
        Ok(out)
    }
}
