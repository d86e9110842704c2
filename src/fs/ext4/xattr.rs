//! Extended attributes (Documentation/filesystems/ext4/attributes.rst). They live in two
//! places: the inode's extra space after `128 + i_extra_isize` (a 4-byte magic, then entries
//! whose value offsets count from the first entry), and one external block named by
//! `i_file_acl` (a 32-byte header, then entries whose value offsets count from the block
//! start). Entries are 16 bytes plus the name padded to 4; a zero word ends the list; values
//! sit after it. With ea_inode, a value may instead be the contents of another inode.
//!
//! A name is stored as an index standing for a prefix ("user.", "trusted.", ...) and the rest.
//! The indexes the kernel has no handler for (system.data of inline data, richacl, lustre,
//! the encryption context) are neither listed nor readable, as through the kernel.

use super::inode::{self, Inode};
use super::superblock::Superblock;
use super::{acl, csum};
use crate::bytes::{le16, le32};
use crate::fs::{Error, FileType, Result};
use std::sync::Arc;

pub const MAGIC: u32 = 0xea02_0000;
/// Bytes of the external block's header (h_magic .. h_reserved).
pub const BLOCK_HEADER_LEN: usize = 32;
const ENTRY_HEADER: usize = 16;
/// Largest value size an entry may claim (EXT4_XATTR_SIZE_MAX); keeps EA inode reads bounded.
pub const MAX_VALUE_SIZE: u32 = 1 << 24;
/// Longest name after the prefix: e_name_len is one byte.
pub const MAX_NAME_LEN: usize = 255;

pub const INDEX_USER: u8 = 1;
pub const INDEX_ACL_ACCESS: u8 = 2;
pub const INDEX_ACL_DEFAULT: u8 = 3;
pub const INDEX_TRUSTED: u8 = 4;
pub const INDEX_SECURITY: u8 = 6;
/// "system." attributes: on ext4 only system.data (inline data), which has no handler.
pub const INDEX_SYSTEM: u8 = 7;
/// GNU Hurd's "gnu." attributes (EXT4_XATTR_INDEX_HURD).
pub const INDEX_HURD: u8 = 10;

/// The full names of the ACL attributes; stored with an empty name under their index.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// The indexes with a kernel handler and the prefix each stands for (ext4_xattr_handler_map).
const PREFIXES: &[(u8, &[u8])] = &[
    (INDEX_USER, b"user."),
    (INDEX_ACL_ACCESS, ACL_ACCESS),
    (INDEX_ACL_DEFAULT, ACL_DEFAULT),
    (INDEX_TRUSTED, b"trusted."),
    (INDEX_SECURITY, b"security."),
    (INDEX_HURD, b"gnu."),
];

/// Where a value is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// Inside the inode or block (already bounds-checked).
    Here(&'a [u8]),
    /// The contents of EA inode `ino`, `size` bytes.
    Inode { ino: u32, size: u32 },
}

/// One parsed entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub index: u8,
    pub name: &'a [u8],
    pub value: Value<'a>,
    /// e_hash: for an EA inode value, a hash of the name and the value's hash.
    pub hash: u32,
}

impl Entry<'_> {
    /// The name `listxattr` shows, or None for an index without a kernel handler.
    pub fn full_name(&self) -> Option<Vec<u8>> {
        let (_, prefix) = PREFIXES.iter().find(|(i, _)| *i == self.index)?;
        let mut n = prefix.to_vec();
        n.extend_from_slice(self.name);
        Some(n)
    }
}

/// Splits a full attribute name into (index, stored name) as the kernel's handlers resolve it.
/// None: no handler for that name (EOPNOTSUPP through the kernel). The ACL names take no
/// suffix; the prefixes need one.
pub fn split_name(full: &[u8]) -> Option<(u8, &[u8])> {
    if full == ACL_ACCESS {
        return Some((INDEX_ACL_ACCESS, b""));
    }
    if full == ACL_DEFAULT {
        return Some((INDEX_ACL_DEFAULT, b""));
    }
    PREFIXES
        .iter()
        .filter(|(i, _)| *i != INDEX_ACL_ACCESS && *i != INDEX_ACL_DEFAULT)
        .find_map(|(i, p)| full.strip_prefix(*p).map(|rest| (*i, rest)))
        .filter(|(_, rest)| !rest.is_empty())
}

/// Parses the entry table of a region (ext4_xattr_check_entries). Entries start at `first`;
/// value offsets count from `values_from`; everything must lie inside `region`.
fn parse_entries<'a>(
    region: &'a [u8],
    first: usize,
    values_from: usize,
    sb: &Superblock,
    bad: &dyn Fn(String) -> Error,
) -> Result<Vec<Entry<'a>>> {
    let end = region.len();
    let mut out = Vec::new();
    let mut off = first;
    loop {
        if off.checked_add(4).is_none_or(|e| e > end) {
            return Err(bad(format!("entry at {off} runs past the end ({end})")));
        }
        if le32(region, off) == 0 {
            break;
        }
        if off.checked_add(ENTRY_HEADER).is_none_or(|e| e > end) {
            return Err(bad(format!("entry at {off} runs past the end ({end})")));
        }
        let e = &region[off..];
        let name_len = usize::from(e[0]);
        // The next entry starts after the name, on a 4-byte boundary.
        let next = off
            .saturating_add(ENTRY_HEADER)
            .saturating_add(name_len)
            .checked_next_multiple_of(4)
            .unwrap_or(usize::MAX);
        if next >= end {
            return Err(bad(format!("entry at {off}: name out of bounds")));
        }
        let name = &e[ENTRY_HEADER..ENTRY_HEADER + name_len];
        if name.contains(&0) {
            return Err(bad(format!("entry at {off}: NUL inside the name")));
        }
        out.push((
            off,
            e[1],
            name,
            le16(e, 2),
            le32(e, 4),
            le32(e, 8),
            le32(e, 12),
        ));
        off = next;
    }
    // Values may not overlap the names or the terminating word.
    // off + 4 <= end: the loop read the terminating word there.
    let names_end = off.saturating_add(4);
    let mut entries = Vec::with_capacity(out.len());
    for (at, index, name, offs, inum, size, hash) in out {
        let bad_at = |d: &str| bad(format!("entry at {at}: {d}"));
        if size > MAX_VALUE_SIZE {
            return Err(bad_at(&format!("value size {size} too large")));
        }
        let value = if inum != 0 {
            if !sb.has_incompat(super::superblock::Incompat::EA_INODE) {
                return Err(bad_at("value in an EA inode without the ea_inode feature"));
            }
            if inum < sb.first_ino || inum > sb.inodes_count {
                return Err(bad_at(&format!("EA inode {inum} is not a valid inode")));
            }
            if size == 0 {
                return Err(bad_at("EA inode value of size 0"));
            }
            Value::Inode { ino: inum, size }
        } else if size == 0 {
            Value::Here(&[])
        } else {
            // size <= 2^24 (MAX_VALUE_SIZE, checked above).
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            let start = values_from.saturating_add(usize::from(offs));
            let padded = size.checked_next_multiple_of(4).unwrap_or(usize::MAX);
            let value = region.get(start..).and_then(|r| r.get(..size));
            let value = value.filter(|_| start >= names_end && padded <= end.saturating_sub(start));
            let Some(value) = value else {
                return Err(bad_at(&format!(
                    "value {offs}+{size} overlaps the names or runs past the end"
                )));
            };
            Value::Here(value)
        };
        entries.push(Entry {
            index,
            name,
            value,
            hash,
        });
    }
    Ok(entries)
}

/// The entries in an inode's extra space `area` (everything after `128 + i_extra_isize`).
/// Empty when the area is too small or does not start with the magic (no in-inode xattrs).
pub fn parse_ibody<'a>(area: &'a [u8], sb: &Superblock, ino: u64) -> Result<Vec<Entry<'a>>> {
    if area.len() < 4 || le32(area, 0) != MAGIC {
        return Ok(Vec::new());
    }
    let bad = |d: String| Error::corrupt("in-inode xattrs", ino, 0, d);
    parse_entries(&area[4..], 0, 0, sb, &bad)
}

/// The entries of an external xattr block `blk` (already checksum-verified by the caller).
pub fn parse_block<'a>(
    block: &'a [u8],
    sb: &Superblock,
    ino: u64,
    blk: u64,
) -> Result<Vec<Entry<'a>>> {
    let bad = |d: String| Error::corrupt("xattr block", ino, blk, d);
    if block.len() < BLOCK_HEADER_LEN + 4 {
        return Err(bad(format!("block of {} bytes", block.len())));
    }
    let magic = le32(block, 0);
    if magic != MAGIC {
        return Err(bad(format!("magic {magic:#010x}, expected {MAGIC:#010x}")));
    }
    let blocks = le32(block, 8);
    if blocks != 1 {
        return Err(bad(format!("h_blocks {blocks}, expected 1")));
    }
    parse_entries(block, BLOCK_HEADER_LEN, 0, sb, &bad)
}

/// Finds (index, name) among in-inode entries: any position, exact match.
pub fn find_unsorted<'a, 'b>(
    entries: &'b [Entry<'a>],
    index: u8,
    name: &[u8],
) -> Option<&'b Entry<'a>> {
    entries.iter().find(|e| e.index == index && e.name == name)
}

/// Finds (index, name) in a block's entries the way ext4_xattr_find_entry does for sorted
/// blocks: entries are ordered by (index, name length, name), and the search stops at the
/// first entry not below the one sought, so an out-of-order entry is not found (as through
/// the kernel).
pub fn find_sorted<'a, 'b>(
    entries: &'b [Entry<'a>],
    index: u8,
    name: &[u8],
) -> Option<&'b Entry<'a>> {
    let key = (index, name.len(), name);
    entries
        .iter()
        .find(|e| key <= (e.index, e.name.len(), e.name))
        .filter(|e| (e.index, e.name) == (index, name))
}

/// The low 32 bits of a 64-bit value's little-endian bytes (what a C `(u32)` cast keeps).
fn low32(b: [u8; 8]) -> u32 {
    let [a, b, c, d, ..] = b;
    u32::from_le_bytes([a, b, c, d])
}

/// ext4_xattr_hash_entry: the e_hash of an entry whose value is in an EA inode, from its name
/// and the value's hash. `signed` gives the variant of kernels that took name bytes as signed
/// chars, which the kernel still accepts.
pub fn entry_hash(name: &[u8], value_hash: u32, signed: bool) -> u32 {
    let mut h = 0u32;
    for &c in name {
        let c = if signed {
            // The byte as a signed char, sign-extended to 32 bits.
            u32::from_ne_bytes(i32::from(i8::from_ne_bytes([c])).to_ne_bytes())
        } else {
            u32::from(c)
        };
        h = (h << 5) ^ (h >> 27) ^ c;
    }
    (h << 16) ^ (h >> 16) ^ value_hash
}

impl super::Ext4 {
    /// The external xattr block of `inode` (checksum verified), or None.
    fn xattr_block(&self, inode: &Inode) -> Result<Option<Arc<[u8]>>> {
        if inode.file_acl == 0 {
            return Ok(None);
        }
        let blk = inode.file_acl;
        let seed = self.sb.csum_seed;
        self.checked_block(blk, "xattr block", inode.ino, |b| {
            if csum::xattr_block_ok(seed, blk, b) {
                Ok(())
            } else {
                Err(format!("stored {:#010x}", le32(b, 0x10)))
            }
        })
        .map(Some)
    }

    /// Every attribute name of inode `ino` as listxattr shows it: the in-inode ones, then
    /// those of the block (ext4_listxattr), without the indexes that have no handler.
    pub(crate) fn list_xattrs(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let inode = self.inode(ino)?;
        let mut names: Vec<Vec<u8>> = parse_ibody(&inode.xattr_area, &self.sb, ino)?
            .iter()
            .filter_map(Entry::full_name)
            .collect();
        if let Some(block) = self.xattr_block(&inode)? {
            let entries = parse_block(&block, &self.sb, ino, inode.file_acl)?;
            names.extend(entries.iter().filter_map(Entry::full_name));
        }
        Ok(names)
    }

    /// The value of attribute `name` of inode `ino` as getxattr returns it: ACLs converted to
    /// the VFS format, values in EA inodes read from there.
    pub(crate) fn get_xattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let (index, suffix) = split_name(name).ok_or(Error::NotSupported)?;
        let inode = self.inode(ino)?;
        if suffix.len() > MAX_NAME_LEN {
            return Err(Error::NoAttr);
        }
        let ibody = parse_ibody(&inode.xattr_area, &self.sb, ino)?;
        let value = match find_unsorted(&ibody, index, suffix) {
            Some(e) => self.xattr_value(&inode, e)?,
            None => {
                let Some(block) = self.xattr_block(&inode)? else {
                    return Err(Error::NoAttr);
                };
                let entries = parse_block(&block, &self.sb, ino, inode.file_acl)?;
                match find_sorted(&entries, index, suffix) {
                    Some(e) => self.xattr_value(&inode, e)?,
                    None => return Err(Error::NoAttr),
                }
            }
        };
        if index == INDEX_ACL_ACCESS || index == INDEX_ACL_DEFAULT {
            return acl::to_xattr(&value)
                .map_err(|d| Error::corrupt("ACL", ino, inode.file_acl, d))?
                .ok_or(Error::NoAttr);
        }
        Ok(value)
    }

    /// The bytes of an entry's value, from where it is stored. An EA inode must be flagged as
    /// one, be exactly the value's size, and match the hashes (ext4_xattr_inode_get): the
    /// crc32c of the value in its i_atime, and the entry's e_hash over name and that crc.
    /// Lustre's older EA inodes carry no hash but point back to their owner instead.
    fn xattr_value(&self, owner: &Inode, e: &Entry<'_>) -> Result<Vec<u8>> {
        let (ea_ino, size) = match e.value {
            Value::Here(v) => return Ok(v.to_vec()),
            Value::Inode { ino, size } => (u64::from(ino), u64::from(size)),
        };
        let bad = |d: String| Error::corrupt("EA inode", ea_ino, 0, d);
        let ea = self.inode(ea_ino)?;
        if ea.flags & inode::FL_EA_INODE == 0 || ea.kind != FileType::RegularFile {
            return Err(bad(format!("not an EA inode (flags {:#x})", ea.flags)));
        }
        if ea.size != size {
            return Err(bad(format!("size {} but the entry says {size}", ea.size)));
        }
        // size <= MAX_VALUE_SIZE (16 MiB), checked when parsing the entry.
        let len = usize::try_from(size).map_err(|_| bad(format!("size {size}")))?;
        let mut value = vec![0u8; len];
        let n = self.read_data(&ea, 0, &mut value)?;
        value.truncate(n);
        // The low 32 bits, which is where the kernel keeps these.
        let lustre = low32(ea.mtime.secs.to_le_bytes()) == low32(owner.ino.to_le_bytes())
            && ea.generation == owner.generation;
        if !lustre {
            let h = csum::raw(self.sb.csum_seed, &value);
            let stored = low32(ea.atime.secs.to_le_bytes());
            if h != stored {
                return Err(bad(format!("value hash {h:#010x}, stored {stored:#010x}")));
            }
            if e.hash != entry_hash(e.name, h, false) && e.hash != entry_hash(e.name, h, true) {
                return Err(Error::corrupt(
                    "xattr entry",
                    owner.ino,
                    owner.file_acl,
                    format!("e_hash {:#010x} does not match EA inode {ea_ino}", e.hash),
                ));
            }
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(split_name(b"user.foo"), Some((INDEX_USER, &b"foo"[..])));
        assert_eq!(split_name(ACL_ACCESS), Some((INDEX_ACL_ACCESS, &b""[..])));
        assert_eq!(
            split_name(b"security.selinux"),
            Some((INDEX_SECURITY, &b"selinux"[..]))
        );
        assert_eq!(split_name(b"user."), None);
        assert_eq!(split_name(b"system.data"), None);
        assert_eq!(split_name(b"system.posix_acl_accessx"), None);
        let e = Entry {
            index: INDEX_SYSTEM,
            name: b"data",
            value: Value::Here(b""),
            hash: 0,
        };
        assert_eq!(e.full_name(), None);
        let e = Entry {
            index: INDEX_TRUSTED,
            ..e
        };
        assert_eq!(e.full_name().unwrap(), b"trusted.data");
    }
}
