//! The on-disk inode (Documentation/filesystems/ext4/inodes.rst): 128 bytes of the original
//! layout, then `i_extra_isize` bytes of extensions (high timestamp bits, creation time) inside a
//! slot of `s_inode_size` bytes. Fields beyond `128 + i_extra_isize` are absent, not zero.

use super::superblock::{Incompat, RoCompat, Superblock, GOOD_OLD_INODE_SIZE};
use crate::bytes::{le16, le32};
use crate::fs::{Error, FileType, Result, Timestamp};

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
    // The on-disk seconds are two's complement, as the format says.
    let base = i64::from(i32::from_le_bytes(secs.to_le_bytes()));
    match extra {
        None => Timestamp {
            secs: base,
            nsecs: 0,
        },
        Some(x) => Timestamp {
            // A 32-bit signed value plus at most 3 << 32: no overflow.
            secs: base.saturating_add(i64::from(x & 3) << 32),
            // A value above 999_999_999 is damage; clamp so callers always get a valid time.
            nsecs: (x >> 2).min(999_999_999),
        },
    }
}

impl Inode {
    /// Parses inode `ino` from its `s_inode_size`-byte slot.
    pub fn parse(b: &[u8], ino: u64, sb: &Superblock) -> Result<Self> {
        let bad = |detail: String| Error::corrupt("inode", ino, 0, detail);
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
            if e % 4 != 0 || e > b.len().saturating_sub(usize::from(GOOD_OLD_INODE_SIZE)) {
                return Err(bad(format!(
                    "i_extra_isize {e} does not fit a {}-byte inode",
                    b.len()
                )));
            }
            e
        } else {
            0
        };
        // extra_isize fits the slot (checked above).
        let end = usize::from(GOOD_OLD_INODE_SIZE).saturating_add(extra_isize);
        let extra = |at: usize| (at.saturating_add(4) <= end).then(|| le32(b, at));

        let flags = le32(b, 0x20);
        let blocks_lo = u64::from(le32(b, 0x1c));
        let blocks = if sb.has_ro_compat(RoCompat::HUGE_FILE) {
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
                | if sb.has_incompat(Incompat::IS_64BIT) {
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
        // Past i_block (saturated or not) reads as 0.
        le32(&self.i_block, i.saturating_mul(4))
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
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
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

/// Flags a writer must respect (EXT4_IMMUTABLE_FL, EXT4_APPEND_FL) or cannot write through
/// (EXT4_VERITY_FL: the contents are sealed by a Merkle tree).
pub const FL_IMMUTABLE: u32 = 0x10;
pub const FL_APPEND: u32 = 0x20;
pub const FL_VERITY: u32 = 0x10_0000;
/// Bytes of the extension fields ferry writes in new inodes (up to i_projid), the kernel's
/// sizeof(struct ext4_inode) - 128.
pub const EXTRA_ISIZE: u16 = 32;

/// Which timestamp of an inode: the offsets of its seconds and of its `_extra` word.
#[derive(Clone, Copy, Debug)]
pub enum TimeField {
    Atime,
    Mtime,
    Ctime,
    Crtime,
}

impl TimeField {
    fn offsets(self) -> (usize, usize) {
        match self {
            TimeField::Ctime => (0xc, 0x84),
            TimeField::Mtime => (0x10, 0x88),
            TimeField::Atime => (0x8, 0x8c),
            TimeField::Crtime => (0x90, 0x94),
        }
    }
}

/// The raw slot of one inode being edited (all `s_inode_size` bytes). Writers change fields
/// here and hand the slot to `Ext4::put_inode`, the one place inodes are written.
#[derive(Clone, Debug)]
pub struct InodeBuf {
    pub ino: u64,
    pub raw: Vec<u8>,
}

impl InodeBuf {
    fn put16(&mut self, at: usize, v: u16) {
        self.raw[at..][..2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(&mut self, at: usize, v: u32) {
        self.raw[at..][..4].copy_from_slice(&v.to_le_bytes());
    }

    /// Bytes of the slot that hold fields: 128 + i_extra_isize (128 for small inodes).
    fn fields_end(&self) -> usize {
        if self.raw.len() > usize::from(GOOD_OLD_INODE_SIZE) {
            // 128 + a u16: no overflow.
            usize::from(GOOD_OLD_INODE_SIZE).saturating_add(usize::from(le16(&self.raw, 0x80)))
        } else {
            usize::from(GOOD_OLD_INODE_SIZE)
        }
    }

    pub fn parse(&self, sb: &Superblock) -> Result<Inode> {
        Inode::parse(&self.raw, self.ino, sb)
    }

    pub fn mode(&self) -> u16 {
        le16(&self.raw, 0)
    }

    pub fn set_mode(&mut self, mode: u16) {
        self.put16(0, mode);
    }

    pub fn set_uid(&mut self, uid: u32) {
        // The low and high 16 bits.
        let [a, b, c, d] = uid.to_le_bytes();
        self.put16(0x2, u16::from_le_bytes([a, b]));
        self.put16(0x78, u16::from_le_bytes([c, d]));
    }

    pub fn set_gid(&mut self, gid: u32) {
        // The low and high 16 bits.
        let [a, b, c, d] = gid.to_le_bytes();
        self.put16(0x18, u16::from_le_bytes([a, b]));
        self.put16(0x7a, u16::from_le_bytes([c, d]));
    }

    pub fn size(&self) -> u64 {
        u64::from(le32(&self.raw, 0x4)) | (u64::from(le32(&self.raw, 0x6c)) << 32)
    }

    pub fn set_size(&mut self, size: u64) {
        // The low and high 32 bits.
        let [a, b, c, d, e, f, g, h] = size.to_le_bytes();
        self.put32(0x4, u32::from_le_bytes([a, b, c, d]));
        self.put32(0x6c, u32::from_le_bytes([e, f, g, h]));
    }

    pub fn links(&self) -> u16 {
        le16(&self.raw, 0x1a)
    }

    pub fn set_links(&mut self, n: u16) {
        self.put16(0x1a, n);
    }

    pub fn flags(&self) -> u32 {
        le32(&self.raw, 0x20)
    }

    pub fn set_flags(&mut self, f: u32) {
        self.put32(0x20, f);
    }

    pub fn generation(&self) -> u32 {
        le32(&self.raw, 0x64)
    }

    /// i_blocks in 512-byte units (the 48-bit field; callers refuse FL_HUGE_FILE inodes).
    pub fn blocks512(&self) -> u64 {
        u64::from(le32(&self.raw, 0x1c)) | (u64::from(le16(&self.raw, 0x74)) << 32)
    }

    pub fn set_blocks512(&mut self, n: u64) {
        // The low 32 and next 16 bits; callers bound n below 2^48.
        let [a, b, c, d, e, f, ..] = n.to_le_bytes();
        self.put32(0x1c, u32::from_le_bytes([a, b, c, d]));
        self.put16(0x74, u16::from_le_bytes([e, f]));
    }

    pub fn file_acl(&self) -> u64 {
        u64::from(le32(&self.raw, 0x68)) | (u64::from(le16(&self.raw, 0x76)) << 32)
    }

    pub fn set_file_acl(&mut self, blk: u64) {
        // The low 32 and next 16 bits (block numbers are below 2^48).
        let [a, b, c, d, e, f, ..] = blk.to_le_bytes();
        self.put32(0x68, u32::from_le_bytes([a, b, c, d]));
        self.put16(0x76, u16::from_le_bytes([e, f]));
    }

    /// i_dtime: the deletion time, or for an orphan the next orphan's inode number.
    pub fn dtime(&self) -> u32 {
        le32(&self.raw, 0x14)
    }

    pub fn set_dtime(&mut self, t: u32) {
        self.put32(0x14, t);
    }

    pub fn i_block(&self) -> &[u8] {
        &self.raw[I_BLOCK_OFF..][..I_BLOCK_LEN]
    }

    pub fn i_block_mut(&mut self) -> &mut [u8] {
        &mut self.raw[I_BLOCK_OFF..][..I_BLOCK_LEN]
    }

    /// Stores a timestamp as ext4_encode_extra_time does: the low 32 bits of the seconds, and
    /// in the `_extra` word (when i_extra_isize covers it) 2 epoch bits and the nanoseconds.
    pub fn set_time(&mut self, which: TimeField, t: Timestamp) {
        let (at, extra_at) = which.offsets();
        let end = self.fields_end();
        // The low 32 bits are what the field holds; the epoch bits (bits 32 and 33 of the
        // seconds less their sign-extended low half) carry the rest. Wrapping, as a C s64 does
        // in the kernel, for seconds at the very end of the i64 range.
        let [a, b, c, d, ..] = t.secs.to_le_bytes();
        let lo_bytes = [a, b, c, d];
        let lo = u32::from_le_bytes(lo_bytes);
        let high = t.secs.wrapping_sub(i64::from(i32::from_le_bytes(lo_bytes)));
        let epoch = u32::from(high.to_le_bytes()[4] & 3);
        if at.saturating_add(4) <= end {
            self.put32(at, lo);
        }
        if extra_at.saturating_add(4) <= end {
            self.put32(extra_at, epoch | (t.nsecs.min(999_999_999) << 2));
        }
    }

    /// Where in-inode xattrs live: after the fields, to the end of the slot.
    pub fn xattr_area_range(&self) -> std::ops::Range<usize> {
        self.fields_end().min(self.raw.len())..self.raw.len()
    }

    /// A fresh slot for a new inode: zeros, then i_extra_isize (when the slot has room), the
    /// generation, mode, owner, links and all four times.
    pub fn new(ino: u64, inode_size: usize, extra_isize: u16) -> Self {
        let mut b = InodeBuf {
            ino,
            raw: vec![0u8; inode_size],
        };
        if inode_size > usize::from(GOOD_OLD_INODE_SIZE) {
            let room = inode_size.saturating_sub(usize::from(GOOD_OLD_INODE_SIZE));
            let e = usize::from(extra_isize).min(room) & !3;
            // e <= extra_isize, a u16.
            b.put16(0x80, u16::try_from(e).unwrap_or(0));
        }
        b
    }

    pub fn set_generation(&mut self, g: u32) {
        self.put32(0x64, g);
    }

    /// Device numbers as ext4_encode_dev stores them: the old 16-bit form in i_block[0] when
    /// major and minor fit a byte each, else the new 32-bit form in i_block[1].
    pub fn set_rdev(&mut self, rdev: u64) {
        // Linux's makedev encoding; the masks keep each part below 2^32.
        let major =
            u32::try_from(((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)).unwrap_or(0);
        let minor = u32::try_from(((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)).unwrap_or(0);
        let ib = self.i_block_mut();
        ib.fill(0);
        if major < 256 && minor < 256 {
            ib[0..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
        } else {
            let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
            ib[4..8].copy_from_slice(&new.to_le_bytes());
        }
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod buf_tests {
    use super::*;

    #[test]
    fn rdev_round_trips() {
        let sb_bytes = {
            let mut b = vec![0u8; 1024];
            b[0..4].copy_from_slice(&1024u32.to_le_bytes());
            b[4..8].copy_from_slice(&8192u32.to_le_bytes());
            b[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
            b[0x20..0x24].copy_from_slice(&32768u32.to_le_bytes());
            b[0x28..0x2c].copy_from_slice(&1024u32.to_le_bytes());
            b[0x4c] = 1;
            b[0x38..0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
            b[0x58..0x5a].copy_from_slice(&256u16.to_le_bytes());
            b
        };
        let sb = Superblock::parse(&sb_bytes).unwrap();
        for (major, minor) in [(4u64, 64u64), (259, 70000), (8, 1), (4095, 1 << 19)] {
            let rdev = ((major & 0xfffff000) << 32)
                | ((major & 0xfff) << 8)
                | ((minor & 0xffffff00) << 12)
                | (minor & 0xff);
            let mut b = InodeBuf::new(12, 256, EXTRA_ISIZE);
            b.set_mode(0o20644);
            b.set_rdev(rdev);
            assert_eq!(b.parse(&sb).unwrap().rdev(), rdev, "{major}:{minor}");
        }
        let mut b = InodeBuf::new(12, 256, EXTRA_ISIZE);
        b.set_mode(0o100644);
        let t = Timestamp {
            secs: 4_107_542_400,
            nsecs: 5,
        };
        b.set_time(TimeField::Mtime, t);
        b.set_time(TimeField::Crtime, t);
        let i = b.parse(&sb).unwrap();
        assert_eq!((i.mtime, i.crtime), (t, Some(t)));
    }
}
