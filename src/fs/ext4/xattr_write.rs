//! Writing extended attributes (Documentation/filesystems/ext4/attributes.rst). An operation
//! reads every entry of the inode (in its body and in its block) into a list, changes it,
//! and lays both places out again: entries stay where they were, a new one goes into the
//! inode body if it fits there, else into the block. Each entry carries its hash
//! (ext4_xattr_hash_entry), the block its header hash (ext4_xattr_rehash) and checksum. A
//! block shared by several inodes (h_refcount > 1) is never edited: the inode gets a copy
//! and the shared one a reference less. Values stored in EA inodes are not written by
//! ferry: such an inode's attributes are read-only.

use super::inode::{self, InodeBuf};
use super::xattr::{self, Value, BLOCK_HEADER_LEN, MAGIC};
use super::{acl, csum, Ext4};
use crate::bytes::le32;
use crate::fs::{Error, Result};

const ENTRY_HEADER: usize = 16;
/// ext4_xattr_hash_entry's shifts (NAME_HASH_SHIFT, VALUE_HASH_SHIFT) and the block's.
const NAME_HASH_SHIFT: u32 = 5;
const VALUE_HASH_SHIFT: u32 = 16;
const BLOCK_HASH_SHIFT: u32 = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Attr {
    index: u8,
    name: Vec<u8>,
    value: Vec<u8>,
}

/// e_hash of an entry whose value is stored with it: the name bytes (unsigned), then the
/// value as little-endian words, zero-padded.
fn entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut h = 0u32;
    for &c in name {
        h = (h << NAME_HASH_SHIFT) ^ (h >> (32 - NAME_HASH_SHIFT)) ^ u32::from(c);
    }
    for w in value.chunks(4) {
        let mut b = [0u8; 4];
        b[..w.len()].copy_from_slice(w);
        h = (h << VALUE_HASH_SHIFT) ^ (h >> (32 - VALUE_HASH_SHIFT)) ^ u32::from_le_bytes(b);
    }
    h
}

/// Bytes of an entry: its header and name, padded to 4 (None only on overflow).
fn entry_len(a: &Attr) -> Option<usize> {
    ENTRY_HEADER
        .checked_add(a.name.len())?
        .checked_next_multiple_of(4)
}

/// Bytes of a stored value, padded to 4 (None only on overflow).
fn value_len(a: &Attr) -> Option<usize> {
    a.value.len().checked_next_multiple_of(4)
}

/// Bytes `attrs` take in a region: entries, the 4-byte end marker, padded values.
fn needed(attrs: &[Attr]) -> Option<usize> {
    attrs.iter().try_fold(4usize, |n, a| {
        n.checked_add(entry_len(a)?)?.checked_add(value_len(a)?)
    })
}

/// Whether `attrs` fit `room` bytes once laid out.
fn fits(attrs: &[Attr], room: usize) -> bool {
    needed(attrs).is_some_and(|n| n <= room)
}

/// Lays `attrs` out in `region` from byte `first` (entries; value offsets count from
/// `values_base`), values packed at the end. Returns the entry hashes, or None if they do not
/// fit (callers check `fits` first, before any other change).
fn lay_out(
    region: &mut [u8],
    first: usize,
    values_base: usize,
    attrs: &[Attr],
) -> Option<Vec<u32>> {
    region.get_mut(first..)?.fill(0);
    let mut at = first;
    let mut vend = region.len();
    let mut hashes = Vec::with_capacity(attrs.len());
    for a in attrs {
        let h = entry_hash(&a.name, &a.value);
        hashes.push(h);
        let voff = if a.value.is_empty() {
            0
        } else {
            vend = vend.checked_sub(value_len(a)?)?;
            region
                .get_mut(vend..)?
                .get_mut(..a.value.len())?
                .copy_from_slice(&a.value);
            u16::try_from(vend.checked_sub(values_base)?).ok()?
        };
        let len = entry_len(a)?;
        let e = region.get_mut(at..)?.get_mut(..len)?;
        e[0] = u8::try_from(a.name.len()).ok()?;
        e[1] = a.index;
        e[2..4].copy_from_slice(&voff.to_le_bytes());
        e[4..8].fill(0);
        e[8..12].copy_from_slice(&u32::try_from(a.value.len()).ok()?.to_le_bytes());
        e[12..16].copy_from_slice(&h.to_le_bytes());
        // len >= ENTRY_HEADER + the name's length (entry_len).
        e[ENTRY_HEADER..][..a.name.len()].copy_from_slice(&a.name);
        at = at.checked_add(len)?;
    }
    // The entries and their end marker stay clear of the values.
    (at.checked_add(4)? <= vend).then_some(hashes)
}

/// The owned entries of a parsed list; Err(ReadOnly) if a value lives in an EA inode.
fn own(entries: &[xattr::Entry<'_>]) -> Result<Vec<Attr>> {
    entries
        .iter()
        .map(|e| match e.value {
            Value::Here(v) => Ok(Attr {
                index: e.index,
                name: e.name.to_vec(),
                value: v.to_vec(),
            }),
            Value::Inode { .. } => Err(Error::ReadOnly),
        })
        .collect()
}

/// An inode's attributes: those in its body, those in its block, and the block's contents.
type Stored = (Vec<Attr>, Vec<Attr>, Option<Vec<u8>>);

impl Ext4 {
    /// The in-body and block attributes of `b`, and its block's contents if it has one.
    fn xattrs_of(&self, b: &InodeBuf) -> Result<Stored> {
        let area = &b.raw[b.xattr_area_range()];
        let ibody = own(&xattr::parse_ibody(area, &self.sb, b.ino)?)?;
        let blk = b.file_acl();
        if blk == 0 {
            return Ok((ibody, Vec::new(), None));
        }
        let seed = self.sb.csum_seed;
        let block = self.checked_block(blk, "xattr block", b.ino, |x| {
            if csum::xattr_block_ok(seed, blk, x) {
                Ok(())
            } else {
                Err(format!("stored {:#010x}", le32(x, 0x10)))
            }
        })?;
        let battrs = own(&xattr::parse_block(&block, &self.sb, b.ino, blk)?)?;
        Ok((ibody, battrs, Some(block.to_vec())))
    }

    /// Writes the xattr block contents for `attrs` at `blk` with reference count `refs`.
    fn put_xattr_block(&self, blk: u64, attrs: &[Attr], refs: u32) -> Result<()> {
        let mut block = vec![0u8; self.block_size_usize()];
        block[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        block[4..8].copy_from_slice(&refs.to_le_bytes());
        block[8..12].copy_from_slice(&1u32.to_le_bytes());
        let hashes = lay_out(&mut block, BLOCK_HEADER_LEN, 0, attrs).ok_or(Error::NoSpace)?;
        let mut h = 0u32;
        for eh in hashes {
            if eh == 0 {
                h = 0;
                break;
            }
            h = (h << BLOCK_HASH_SHIFT) ^ (h >> (32 - BLOCK_HASH_SHIFT)) ^ eh;
        }
        block[12..16].copy_from_slice(&h.to_le_bytes());
        if self.sb.metadata_csum {
            csum::xattr_block_set(self.sb.csum_seed, blk, &mut block);
        }
        self.put_meta(blk, block)
    }

    /// Drops `b`'s reference to its xattr block (freeing it when it was the last one).
    fn drop_xattr_block(&self, b: &mut InodeBuf, block: &[u8]) -> Result<()> {
        let blk = b.file_acl();
        let refs = le32(block, 4);
        if let Some(left) = refs.checked_sub(1).filter(|&r| r > 0) {
            let mut copy = block.to_vec();
            copy[4..8].copy_from_slice(&left.to_le_bytes());
            if self.sb.metadata_csum {
                csum::xattr_block_set(self.sb.csum_seed, blk, &mut copy);
            }
            self.put_meta(blk, copy)?;
        } else {
            self.free_blocks(blk, 1, true)?;
        }
        b.set_file_acl(0);
        b.set_blocks512(
            b.blocks512()
                .saturating_sub(u64::from(self.block_size() / 512)),
        );
        Ok(())
    }

    /// Before an inode is freed: its xattr block reference goes.
    pub(super) fn release_xattrs(&self, b: &mut InodeBuf) -> Result<()> {
        let (_, _, block) = self.xattrs_of(b)?;
        if let Some(block) = block {
            self.drop_xattr_block(b, &block)?;
        }
        Ok(())
    }

    /// setxattr (`value` Some) or removexattr (None) of the full name `full` on inode `ino`.
    pub(super) fn op_set_xattr(&self, ino: u64, full: &[u8], value: Option<&[u8]>) -> Result<()> {
        let (index, suffix) = xattr::split_name(full).ok_or(Error::NotSupported)?;
        if suffix.len() > xattr::MAX_NAME_LEN {
            return Err(Error::NameTooLong {
                max: xattr::MAX_NAME_LEN,
            });
        }
        let mut b = self.inode_buf(ino)?;
        let i = b.parse(&self.sb)?;
        if i.flags & inode::FL_IMMUTABLE != 0 || i.flags & inode::FL_APPEND != 0 {
            return Err(Error::NotPermitted);
        }
        if i.flags & (inode::FL_INLINE_DATA | inode::FL_EA_INODE) != 0 {
            return Err(Error::ReadOnly);
        }
        let mut value = value.map(<[u8]>::to_vec);
        let is_acl = index == xattr::INDEX_ACL_ACCESS || index == xattr::INDEX_ACL_DEFAULT;
        if let (true, Some(v)) = (is_acl, value.as_ref()) {
            let (disk, bits, plain) =
                acl::from_xattr(v).map_err(|d| Error::Invalid(format!("ACL: {d}")))?;
            if index == xattr::INDEX_ACL_ACCESS {
                b.set_mode((i.mode & !0o777) | bits);
            }
            value = if plain && index == xattr::INDEX_ACL_ACCESS {
                None
            } else {
                Some(disk)
            };
        }
        let (mut ibody, mut battrs, old_block) = self.xattrs_of(&b)?;
        let key = |a: &Attr| a.index == index && a.name == suffix;
        let in_body = ibody.iter().position(key);
        let in_block = battrs.iter().position(key);
        if let Some(p) = in_body {
            ibody.remove(p);
        }
        if let Some(p) = in_block {
            battrs.remove(p);
        }
        let existed = in_body.is_some() || in_block.is_some();
        if value.is_none() && !existed && !(is_acl && index == xattr::INDEX_ACL_ACCESS) {
            return Err(Error::NoAttr);
        }
        let area = b.xattr_area_range();
        // The body region: a 4-byte magic, then entries and values.
        let body_room = area.len().saturating_sub(4);
        // The block size is at least 1 KiB.
        let block_room = self.block_size_usize().saturating_sub(BLOCK_HEADER_LEN);
        let mut block_changed = in_block.is_some();
        if let Some(v) = value {
            let a = Attr {
                index,
                name: suffix.to_vec(),
                value: v,
            };
            let mut with = ibody.clone();
            with.push(a.clone());
            if area.len() > 4 && fits(&with, body_room) {
                ibody = with;
            } else {
                battrs.push(a);
                battrs.sort_by(|x, y| {
                    (x.index, x.name.len(), &x.name).cmp(&(y.index, y.name.len(), &y.name))
                });
                block_changed = true;
                if !fits(&battrs, block_room) {
                    return Err(Error::NoSpace);
                }
            }
        }
        // What was read back must fit again: entries whose values share bytes (which the
        // reader accepts) take more room laid out apart. Checked before anything is written.
        if !ibody.is_empty() && !fits(&ibody, body_room) {
            return Err(Error::corrupt(
                "in-inode xattrs",
                ino,
                0,
                "entries share value bytes and do not fit laid out apart",
            ));
        }
        if block_changed && !fits(&battrs, block_room) {
            return Err(Error::corrupt(
                "xattr block",
                ino,
                b.file_acl(),
                "entries share value bytes and do not fit laid out apart",
            ));
        }
        // The body.
        if !area.is_empty() {
            let region = &mut b.raw[area.clone()];
            if ibody.is_empty() {
                region.fill(0);
            } else {
                region[0..4].copy_from_slice(&MAGIC.to_le_bytes());
                lay_out(region, 4, 4, &ibody).ok_or(Error::NoSpace)?;
            }
        }
        // The block.
        if block_changed {
            let per = u64::from(self.block_size() / 512);
            match old_block {
                Some(old) if battrs.is_empty() => self.drop_xattr_block(&mut b, &old)?,
                Some(old) if le32(&old, 4) > 1 => {
                    self.drop_xattr_block(&mut b, &old)?;
                    let (blk, _) = self.alloc_blocks(self.inode_goal(ino), 1)?;
                    self.put_xattr_block(blk, &battrs, 1)?;
                    b.set_file_acl(blk);
                    // i_blocks is below 2^48 (48 bits on disk): no overflow.
                    b.set_blocks512(b.blocks512().saturating_add(per));
                }
                Some(_) => self.put_xattr_block(b.file_acl(), &battrs, 1)?,
                None if battrs.is_empty() => {}
                None => {
                    let (blk, _) = self.alloc_blocks(self.inode_goal(ino), 1)?;
                    self.put_xattr_block(blk, &battrs, 1)?;
                    b.set_file_acl(blk);
                    // i_blocks is below 2^48 (48 bits on disk): no overflow.
                    b.set_blocks512(b.blocks512().saturating_add(per));
                }
            }
        }
        Self::touch(&mut b, false);
        self.put_inode(&mut b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_ea_inode_form() {
        // With no value words, the hash is the name part alone; the reader's EA-inode form
        // then folds a value hash in the same way.
        let h = entry_hash(b"foo", &[]);
        assert_eq!(
            (h << 16) ^ (h >> 16) ^ 7,
            xattr::entry_hash(b"foo", 7, false)
        );
        assert_ne!(entry_hash(b"foo", b"a"), entry_hash(b"foo", b"b"));
    }

    /// A minimal valid superblock (1 KiB blocks, one group, no features).
    #[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
    fn superblock() -> super::super::superblock::Superblock {
        let mut sb = vec![0u8; 1024];
        let put = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put(&mut sb, 0x0, 1024);
        put(&mut sb, 0x4, 4096);
        put(&mut sb, 0x14, 1);
        put(&mut sb, 0x20, 8192);
        put(&mut sb, 0x28, 1024);
        put(&mut sb, 0x4c, 1);
        sb[0x38..0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        sb[0x58..0x5a].copy_from_slice(&256u16.to_le_bytes());
        super::super::superblock::Superblock::parse(&sb).unwrap()
    }

    #[test]
    #[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
    fn shared_values_that_no_longer_fit_are_refused_not_laid_out() {
        // An in-inode area of 96 bytes: magic, two 20-byte entries "a" and "b" and the end
        // marker, then one 40-byte value both entries point at (the reader accepts this).
        let mut area = vec![0u8; 96];
        area[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        for (k, name) in [b'a', b'b'].into_iter().enumerate() {
            let e = &mut area[4 + 20 * k..][..20];
            e[0] = 1;
            e[1] = xattr::INDEX_USER;
            e[2..4].copy_from_slice(&52u16.to_le_bytes());
            e[8..12].copy_from_slice(&40u32.to_le_bytes());
            e[16] = name;
        }
        area[56..96].fill(0x77);
        let attrs = own(&xattr::parse_ibody(&area, &superblock(), 12).unwrap()).unwrap();
        assert_eq!(attrs.len(), 2);
        let room = area.len() - 4;
        // Laid out apart they need 4 + 2 * (20 + 40) bytes: more than the 92 there are.
        assert_eq!(needed(&attrs), Some(124));
        assert!(!fits(&attrs, room));
        // Before the fix the second value was written over the entries (larger values:
        // an underflow, a panic).
        assert_eq!(lay_out(&mut area, 4, 4, &attrs), None);
        // One of them alone fits, and reads back as written.
        assert!(fits(&attrs[1..], room));
        let hashes = lay_out(&mut area, 4, 4, &attrs[1..]).unwrap();
        let back = own(&xattr::parse_ibody(&area, &superblock(), 12).unwrap()).unwrap();
        assert_eq!(back, attrs[1..]);
        assert_eq!(hashes, [entry_hash(b"b", &[0x77; 40])]);
    }
}
