//! The on-disk inode (xfs_format.h `struct xfs_dinode`): a core of 100 bytes (v1/v2) or 176
//! bytes (v3, v5 filesystems: CRC, creation time, its own number and the filesystem UUID),
//! then the data fork and, from `di_forkoff * 8`, the attribute fork. Each fork is in one
//! format: device number, local (the bytes themselves), extent list, or bmbt root.
//! Verification follows the kernel's xfs_dinode_verify for what a reader depends on.

use super::crc;
use super::superblock::Superblock;
use crate::bytes::{be16, be32, be64, wide};
use crate::fs::{Error, FileType, Result, Timestamp};

pub const MAGIC: u16 = 0x494e;
/// Offset of di_ino, the inode's own number, in a v3 (v5 filesystem) inode core.
pub const V3_INO: usize = 152;
pub const V3_CORE: usize = 176;
pub const V2_CORE: usize = 100;
pub const CRC_OFF: usize = 100;

pub const FMT_DEV: u8 = 0;
pub const FMT_LOCAL: u8 = 1;
pub const FMT_EXTENTS: u8 = 2;
pub const FMT_BTREE: u8 = 3;

const FLAG_REALTIME: u16 = 0x0001;
const FLAG2_BIGTIME: u64 = 0x8;
const FLAG2_NREXT64: u64 = 0x10;
/// Seconds between the bigtime epoch and the Unix epoch (XFS_BIGTIME_EPOCH_OFFSET).
const BIGTIME_EPOCH_OFFSET: i64 = 1 << 31;
const NSEC_PER_SEC: u64 = 1_000_000_000;

#[derive(Clone, Debug)]
pub struct Inode {
    pub ino: u64,
    pub mode: u16,
    pub kind: FileType,
    pub version: u8,
    pub format: u8,
    pub aformat: u8,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub nblocks: u64,
    /// di_next_unlinked: the next inode of an AGI unlinked list (NULLAGINO at its end).
    pub next_unlinked: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    pub nextents: u64,
    pub anextents: u64,
    /// Device number in XFS's encoding (major << 18 | minor), for device nodes.
    pub dev: u32,
    pub data_fork: Vec<u8>,
    /// None when the inode has no attribute fork (di_forkoff 0).
    pub attr_fork: Option<Vec<u8>>,
}

fn timestamp(raw: &[u8], at: usize, bigtime: bool) -> Timestamp {
    if bigtime {
        let ns = be64(raw, at);
        // ns / 1e9 < 2^35 fits i64 and stays far from i64::MIN once the epoch offset
        // is taken; the remainder is below 1e9.
        Timestamp {
            secs: i64::try_from(ns / NSEC_PER_SEC)
                .unwrap_or(i64::MAX)
                .saturating_sub(BIGTIME_EPOCH_OFFSET),
            nsecs: u32::try_from(ns % NSEC_PER_SEC).unwrap_or(0),
        }
    } else {
        Timestamp {
            secs: i64::from(i32::from_be_bytes(be32(raw, at).to_be_bytes())),
            nsecs: be32(raw, at.saturating_add(4)),
        }
    }
}

impl Inode {
    /// Parses the `inodesize` bytes of inode `ino`, checking its CRC on v5.
    pub fn parse(raw: &[u8], ino: u64, sb: &Superblock) -> Result<Inode> {
        let bad = |d: String| Error::corrupt("xfs inode", ino, 0, d);
        if raw.len() != usize::from(sb.inodesize) {
            return Err(bad(format!("slot of {} bytes", raw.len())));
        }
        if be16(raw, 0) != MAGIC {
            return Err(Error::mismatch(
                "xfs inode",
                ino,
                "magic",
                format!("{MAGIC:#06x}"),
                format!("{:#06x}", be16(raw, 0)),
            ));
        }
        let version = raw[4];
        let core = match (version, sb.is_v5()) {
            (3, true) => V3_CORE,
            (1 | 2, false) => V2_CORE,
            _ => return Err(bad(format!("version {version} on this filesystem"))),
        };
        if version == 3 {
            if let Some((computed, stored)) = crc::mismatch(raw, CRC_OFF) {
                return Err(Error::mismatch(
                    "xfs inode",
                    ino,
                    "CRC32c mismatch",
                    format!("{computed:#010x}"),
                    format!("{stored:#010x}"),
                ));
            }
            if be64(raw, V3_INO) != ino {
                return Err(Error::mismatch(
                    "xfs inode",
                    ino,
                    "di_ino: the inode names another number",
                    ino,
                    be64(raw, V3_INO),
                ));
            }
            if raw[160..176] != sb.meta_uuid {
                return Err(bad("filesystem UUID differs".into()));
            }
        }
        let mode = be16(raw, 2);
        if mode == 0 {
            return Err(bad("free inode (mode 0)".into()));
        }
        let kind =
            FileType::from_mode(u32::from(mode)).ok_or_else(|| bad(format!("mode {mode:o}")))?;
        let flags = be16(raw, 90);
        if flags & FLAG_REALTIME != 0 {
            return Err(Error::Unsupported(format!(
                "inode {ino} has its data on the realtime device"
            )));
        }
        let flags2 = if version == 3 { be64(raw, 120) } else { 0 };
        let bigtime = flags2 & FLAG2_BIGTIME != 0;
        let (nextents, anextents) = if flags2 & FLAG2_NREXT64 != 0 {
            (be64(raw, 24), u64::from(be32(raw, 76)))
        } else {
            (u64::from(be32(raw, 76)), u64::from(be16(raw, 80)))
        };
        let size = be64(raw, 56);
        if i64::try_from(size).is_err() {
            return Err(bad(format!("size {size}")));
        }
        // The literal area after the core (the slot is inodesize bytes, above the core).
        let lit = raw.get(core..).unwrap_or_default();
        let literal = lit.len();
        // di_forkoff counts 8-byte units.
        let forkoff = usize::from(raw[82]) << 3;
        if forkoff >= literal {
            return Err(bad(format!(
                "attr fork offset {forkoff} of {literal} bytes"
            )));
        }
        let dsize = if forkoff == 0 { literal } else { forkoff };
        let (data, attr) = lit.split_at_checked(dsize).unwrap_or((lit, &[]));
        let data_fork = data.to_vec();
        let attr_fork = (forkoff != 0).then(|| attr.to_vec());
        let format = raw[5];
        let aformat = raw[83];
        let fmt_ok = match kind {
            FileType::CharDevice
            | FileType::BlockDevice
            | FileType::NamedPipe
            | FileType::Socket => format == FMT_DEV,
            FileType::RegularFile => matches!(format, FMT_EXTENTS | FMT_BTREE),
            FileType::Directory | FileType::Symlink => {
                matches!(format, FMT_LOCAL | FMT_EXTENTS | FMT_BTREE)
            }
        };
        if !fmt_ok {
            return Err(bad(format!("data fork format {format} for a {kind:?}")));
        }
        if attr_fork.is_some() && !matches!(aformat, FMT_LOCAL | FMT_EXTENTS | FMT_BTREE) {
            return Err(bad(format!("attr fork format {aformat}")));
        }
        if format == FMT_LOCAL && size > wide(dsize) {
            return Err(bad(format!("local fork of {size} bytes in {dsize}")));
        }
        let nlink = if version == 1 {
            u32::from(be16(raw, 6))
        } else {
            be32(raw, 16)
        };
        Ok(Inode {
            ino,
            mode,
            kind,
            version,
            format,
            aformat,
            uid: be32(raw, 8),
            gid: be32(raw, 12),
            nlink,
            size,
            nblocks: be64(raw, 64),
            next_unlinked: be32(raw, 96),
            atime: timestamp(raw, 32, bigtime),
            mtime: timestamp(raw, 40, bigtime),
            ctime: timestamp(raw, 48, bigtime),
            crtime: (version == 3).then(|| timestamp(raw, 144, bigtime)),
            nextents,
            anextents,
            dev: if format == FMT_DEV {
                be32(&data_fork, 0)
            } else {
                0
            },
            data_fork,
            attr_fork,
        })
    }

    /// st_rdev as the kernel encodes it: xfs_to_linux_dev_t keeps 9 bits of the on-disk
    /// major (stored above an 18-bit minor), then the layout of glibc's makedev.
    pub fn rdev(&self) -> u64 {
        if !matches!(self.kind, FileType::CharDevice | FileType::BlockDevice) {
            return 0;
        }
        let major = u64::from((self.dev >> 18) & 0x1ff);
        let minor = u64::from(self.dev & 0x3ffff);
        ((major & 0xfffff000) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & 0xffffff00) << 12)
            | (minor & 0xff)
    }

    /// The fork's bytes: data fork (false) or attribute fork (true).
    pub fn fork(&self, attr: bool) -> Option<&[u8]> {
        if attr {
            self.attr_fork.as_deref()
        } else {
            Some(&self.data_fork)
        }
    }

    pub fn fork_format(&self, attr: bool) -> u8 {
        if attr {
            self.aformat
        } else {
            self.format
        }
    }

    pub fn fork_nextents(&self, attr: bool) -> u64 {
        if attr {
            self.anextents
        } else {
            self.nextents
        }
    }
}
