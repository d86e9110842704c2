//! The on-disk inode (Documentation/filesystems/ext4/inodes.rst): 128 bytes of the original
//! layout, then `i_extra_isize` bytes of extensions (high timestamp bits, creation time) inside a
//! slot of `s_inode_size` bytes. Fields beyond `128 + i_extra_isize` are absent, not zero.

use super::superblock::{Superblock, GOOD_OLD_INODE_SIZE, INCOMPAT_64BIT, RO_COMPAT_HUGE_FILE};
use super::{le16, le32};
use crate::fs::{FileType, FsError, Result, Timestamp};

/// Bytes of `i_block`: the extent tree root, the block map, a fast symlink or inline data.
pub const I_BLOCK_LEN: usize = 60;
const I_BLOCK_OFF: usize = 0x28;

pub const FL_INDEX: u32 = 0x1000;
pub const FL_CASEFOLD: u32 = 0x4000_0000;
pub const FL_ENCRYPT: u32 = 0x800;
pub const FL_HUGE_FILE: u32 = 0x40000;
pub const FL_EXTENTS: u32 = 0x80000;
pub const FL_EA_INODE: u32 = 0x200000;
pub const FL_INLINE_DATA: u32 = 0x1000_0000;

#[derive(Clone, Debug)]
pub struct Inode {
    pub ino: u64,
    pub mode: u16,
    pub kind: FileType,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// st_blocks, in 512-byte units.
    pub blocks512: u64,
    pub links: u16,
    pub flags: u32,
    /// i_generation: part of the per-inode checksum seed.
    pub generation: u32,
    /// The extended attribute block (i_file_acl, high 16 bits with 64bit); 0 for none.
    pub file_acl: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    pub i_block: [u8; I_BLOCK_LEN],
    /// The in-inode extended attribute space after `128 + i_extra_isize` (inline data lives in
    /// it); at most the inode size.
    pub xattr_area: Vec<u8>,
}

/// Decodes a timestamp: the 32-bit signed seconds, plus, when the `*_extra` field is present,
/// 2 epoch bits extending the seconds past 2038 and 30 bits of nanoseconds (as the kernel's
/// ext4_decode_extra_time does).
fn time(secs: u32, extra: Option<u32>) -> Timestamp {
    // OK: `as i32` reinterprets the on-disk two's complement seconds, as the format says.
    let base = i64::from(secs as i32);
    match extra {
        None => Timestamp {
            secs: base,
            nsecs: 0,
        },
        Some(x) => Timestamp {
            secs: base + (i64::from(x & 3) << 32),
            // A value above 999_999_999 is damage; clamp so callers always get a valid time.
            nsecs: (x >> 2).min(999_999_999),
        },
    }
}

impl Inode {
    /// Parses inode `ino` from its `s_inode_size`-byte slot.
    pub fn parse(b: &[u8], ino: u64, sb: &Superblock) -> Result<Self> {
        let bad = |detail: String| FsError::corrupt("inode", ino, 0, detail);
        if b.len() < usize::from(GOOD_OLD_INODE_SIZE) {
            return Err(bad(format!("slot of {} bytes", b.len())));
        }
        let mode = le16(b, 0x0);
        let kind = FileType::from_mode(u32::from(mode)).ok_or_else(|| {
            bad(format!(
                "mode {mode:#o} has no valid file type (unused inode?)"
            ))
        })?;
        // Extra fields exist if the slot is large and i_extra_isize covers them.
        let extra_isize = if b.len() > usize::from(GOOD_OLD_INODE_SIZE) {
            let e = usize::from(le16(b, 0x80));
            if e % 4 != 0 || usize::from(GOOD_OLD_INODE_SIZE) + e > b.len() {
                return Err(bad(format!(
                    "i_extra_isize {e} does not fit a {}-byte inode",
                    b.len()
                )));
            }
            e
        } else {
            0
        };
        let end = usize::from(GOOD_OLD_INODE_SIZE) + extra_isize;
        let extra = |at: usize| (at + 4 <= end).then(|| le32(b, at));

        let flags = le32(b, 0x20);
        let blocks_lo = u64::from(le32(b, 0x1c));
        let blocks = if sb.has_ro_compat(RO_COMPAT_HUGE_FILE) {
            let raw = blocks_lo | (u64::from(le16(b, 0x74)) << 32);
            if flags & FL_HUGE_FILE != 0 {
                // Counted in filesystem blocks instead of 512-byte sectors.
                raw.saturating_mul(u64::from(sb.block_size() / 512))
            } else {
                raw
            }
        } else {
            blocks_lo
        };
        let mut i_block = [0u8; I_BLOCK_LEN];
        i_block.copy_from_slice(&b[I_BLOCK_OFF..I_BLOCK_OFF + I_BLOCK_LEN]);
        Ok(Inode {
            ino,
            mode,
            kind,
            uid: u32::from(le16(b, 0x2)) | (u32::from(le16(b, 0x78)) << 16),
            gid: u32::from(le16(b, 0x18)) | (u32::from(le16(b, 0x7a)) << 16),
            size: u64::from(le32(b, 0x4)) | (u64::from(le32(b, 0x6c)) << 32),
            blocks512: blocks,
            links: le16(b, 0x1a),
            flags,
            generation: le32(b, 0x64),
            file_acl: u64::from(le32(b, 0x68))
                | if sb.has_incompat(INCOMPAT_64BIT) {
                    u64::from(le16(b, 0x76)) << 32
                } else {
                    0
                },
            ctime: time(le32(b, 0xc), extra(0x84)),
            mtime: time(le32(b, 0x10), extra(0x88)),
            atime: time(le32(b, 0x8), extra(0x8c)),
            crtime: extra(0x90).map(|s| time(s, extra(0x94))),
            i_block,
            xattr_area: b[end..].to_vec(),
        })
    }

    /// The `i`-th little-endian u32 of `i_block` (block map pointers, device numbers).
    pub fn i_block_u32(&self, i: usize) -> u32 {
        le32(&self.i_block, i * 4)
    }

    /// st_rdev for device nodes: the old 16-bit encoding in i_block[0] if set, else the new
    /// 32-bit one in i_block[1], both turned into Linux's makedev encoding.
    pub fn rdev(&self) -> u64 {
        if !matches!(self.kind, FileType::CharDevice | FileType::BlockDevice) {
            return 0;
        }
        let old = self.i_block_u32(0);
        let (major, minor) = if old != 0 {
            ((old >> 8) & 0xff, old & 0xff)
        } else {
            let new = self.i_block_u32(1);
            ((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00))
        };
        let (major, minor) = (u64::from(major), u64::from(minor));
        ((major & 0xfffff000) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & 0xffffff00) << 12)
            | (minor & 0xff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_with_epoch_bits() {
        // Before 1970: negative seconds, epoch bits 0.
        assert_eq!(
            time((-1i32) as u32, Some(0)),
            Timestamp { secs: -1, nsecs: 0 }
        );
        // 2100: the low 32 bits wrap negative, epoch 1 adds 2^32.
        let t2100: i64 = 4_107_542_400;
        let lo = (t2100 - (1 << 32)) as i32 as u32;
        let t = time(lo, Some(1 | (123_456_789 << 2)));
        assert_eq!(
            t,
            Timestamp {
                secs: t2100,
                nsecs: 123_456_789
            }
        );
        // Without the extra field: 32-bit signed seconds only.
        assert_eq!(time(lo, None).secs, t2100 - (1 << 32));
        // Nanoseconds beyond a second are clamped, not passed on.
        assert_eq!(time(0, Some(!3)).nsecs, 999_999_999);
    }
}
