//! The XFS superblock (xfs_format.h `struct xfs_dsb`, big-endian, sector 0 of the device and of
//! every AG). It fixes the geometry (block, sector, inode and directory block sizes, AG size
//! and count) and the features; v5 filesystems protect it with a CRC32c at `CRC_OFF`.
//! Features a reader must understand to read correctly (incompat) are refused by name when
//! unknown; read-only-compatible ones are only reported, as a read-only kernel mount does.

use super::crc;
use crate::bytes::{be16, be32, be64, wide};
use crate::fs::{Error, Result};

pub const MAGIC: &[u8; 4] = b"XFSB";
/// Bytes of the v5 superblock structure (the rest of the sector is zero).
pub const SIZE: usize = 264;
pub const CRC_OFF: usize = 224;

const VERSION_NUMBITS: u16 = 0x000f;
const VERSION_ATTRBIT: u16 = 0x0010;
const VERSION_NLINKBIT: u16 = 0x0020;
const VERSION_DIRV2BIT: u16 = 0x2000;
/// ASCII case-insensitive names: a different name hash and comparison (v4 only).
const VERSION_BORGBIT: u16 = 0x4000;
const VERSION_MOREBITSBIT: u16 = 0x8000;

bitflags::bitflags! {
    /// sb_features2 (v4 with the MOREBITS version bit; v5 keeps it for old tools). Unknown bits
    /// are kept (`from_bits_retain`) so that `check_features` can name them: the kernel refuses
    /// a v4 superblock with a features2 bit outside the ones it knows (xfs_sb_good_version).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Features2: u32 {
        const LAZYSBCOUNT = 1 << 1;
        const ATTR2 = 1 << 3;
        const PARENT = 1 << 4;
        const PROJID32 = 1 << 7;
        const CRC = 1 << 8;
        const FTYPE = 1 << 9;
        const _ = !0;
    }
}

impl Features2 {
    /// The features2 bits a v4 filesystem may carry (XFS_SB_VERSION2_OKBITS).
    const KNOWN_V4: Self = Self::LAZYSBCOUNT
        .union(Self::ATTR2)
        .union(Self::PROJID32)
        .union(Self::FTYPE);
}

bitflags::bitflags! {
    /// sb_features_log_incompat (v5): what the log's items need to be replayed. Set while the
    /// log holds such items and cleared on a clean unmount, so they matter only for replay;
    /// unknown bits are kept so that `recover::replay` can name them when it refuses.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct LogIncompat: u32 {
        /// Logged extended attribute updates (ATTRI/ATTRD items).
        const XATTRS = 1 << 0;
        /// Logged file mapping exchanges (XMI/XMD items).
        const EXCHMAPS = 1 << 1;
        const _ = !0;
    }
}

impl LogIncompat {
    /// The log features whose items replay recognises (the ATTRI and XMI intents in
    /// `recover::INTENTS`).
    pub const KNOWN: Self = Self::XATTRS.union(Self::EXCHMAPS);
}

/// The set bits of `bits`, each as a hexadecimal mask ("0x40, 0x8000"), for error messages.
pub fn bit_names(bits: u32) -> String {
    (0..32)
        .map(|b| 1u32 << b)
        .filter(|m| bits & m != 0)
        .map(|m| format!("{m:#x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

bitflags::bitflags! {
    /// sb_features_incompat (v5): features a reader must understand. Unknown bits are kept
    /// (`from_bits_retain`) so that `check_features` can name them.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Incompat: u32 {
        const FTYPE = 1 << 0;
        const SPINODES = 1 << 1;
        const META_UUID = 1 << 2;
        const BIGTIME = 1 << 3;
        const NEEDSREPAIR = 1 << 4;
        const NREXT64 = 1 << 5;
        const EXCHRANGE = 1 << 6;
        const PARENT = 1 << 7;
        const METADIR = 1 << 8;
        const ZONED = 1 << 9;
        const _ = !0;
    }
}

impl Incompat {
    /// The incompat features this reader reads.
    const KNOWN: Self = Self::FTYPE
        .union(Self::SPINODES)
        .union(Self::META_UUID)
        .union(Self::BIGTIME)
        .union(Self::NEEDSREPAIR)
        .union(Self::NREXT64);
}

/// Incompat features of later xfsprogs, refused by their names.
const INCOMPAT_LATER: &[(Incompat, &str)] = &[
    (Incompat::EXCHRANGE, "exchange-range"),
    (Incompat::PARENT, "parent pointers"),
    (Incompat::METADIR, "metadir"),
    (Incompat::ZONED, "zoned"),
];

bitflags::bitflags! {
    /// sb_features_ro_compat (v5): features only a writer must understand.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct RoCompat: u32 {
        const FINOBT = 1 << 0;
        const RMAPBT = 1 << 1;
        const REFLINK = 1 << 2;
        const INOBTCNT = 1 << 3;
        const _ = !0;
    }
}

impl RoCompat {
    /// The read-only-compatible features this reader knows (others are reported, not refused).
    const KNOWN: Self = Self::FINOBT
        .union(Self::RMAPBT)
        .union(Self::REFLINK)
        .union(Self::INOBTCNT);
}

/// Smallest and largest block sizes XFS defines (XFS_MIN_BLOCKSIZE_LOG..XFS_MAX_BLOCKSIZE_LOG).
const MIN_BLOCKLOG: u8 = 9;
const MAX_BLOCKLOG: u8 = 16;
/// Inode sizes 256..2048 (XFS_DINODE_MIN_LOG..XFS_DINODE_MAX_LOG).
const MIN_INODELOG: u8 = 8;
const MAX_INODELOG: u8 = 11;
/// Directory blocks are at most 64 KiB (XFS_MAX_BLOCKSIZE).
const MAX_DIRBLOCK_LOG: u8 = 16;

#[derive(Clone, Debug)]
pub struct Superblock {
    pub blocksize: u32,
    pub dblocks: u64,
    pub rblocks: u64,
    pub uuid: [u8; 16],
    pub logstart: u64,
    pub rootino: u64,
    pub agblocks: u32,
    pub agcount: u32,
    pub logblocks: u32,
    pub versionnum: u16,
    pub sectsize: u16,
    pub inodesize: u16,
    pub inopblock: u16,
    pub fname: [u8; 12],
    pub blocklog: u8,
    pub inodelog: u8,
    pub inopblog: u8,
    pub agblklog: u8,
    pub inprogress: u8,
    pub imax_pct: u8,
    pub icount: u64,
    pub ifree: u64,
    pub fdblocks: u64,
    pub dirblklog: u8,
    pub features2: Features2,
    pub ro_compat: RoCompat,
    pub incompat: Incompat,
    pub log_incompat: LogIncompat,
    /// The UUID stamped in v5 metadata headers (sb_meta_uuid with meta_uuid, else sb_uuid).
    pub meta_uuid: [u8; 16],
}

impl Superblock {
    /// Parses and validates the primary superblock from its sector (`buf` holds at least
    /// `SIZE` bytes, and the whole sector when it is as long, for the CRC).
    pub fn parse(buf: &[u8]) -> Result<Self> {
        // The primary superblock is the device's first sector, so a field's position in
        // `buf` is its byte position on the device.
        let bad = |d: String| Error::corrupt("xfs superblock", 0, 0, d).at(0);
        if buf.len() < SIZE {
            return Err(bad(format!("only {} bytes", buf.len())));
        }
        if &buf[..4] != MAGIC {
            return Err(Error::mismatch(
                "xfs superblock",
                0,
                "no XFSB magic",
                format!("{:#010x}", u32::from_be_bytes(*MAGIC)),
                format!("{:#010x}", be32(buf, 0)),
            )
            .at(0));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&buf[32..48]);
        let mut fname = [0u8; 12];
        fname.copy_from_slice(&buf[108..120]);
        let mut meta_uuid = [0u8; 16];
        meta_uuid.copy_from_slice(&buf[248..264]);
        let mut sb = Superblock {
            blocksize: be32(buf, 4),
            dblocks: be64(buf, 8),
            rblocks: be64(buf, 16),
            uuid,
            logstart: be64(buf, 48),
            rootino: be64(buf, 56),
            agblocks: be32(buf, 84),
            agcount: be32(buf, 88),
            logblocks: be32(buf, 96),
            versionnum: be16(buf, 100),
            sectsize: be16(buf, 102),
            inodesize: be16(buf, 104),
            inopblock: be16(buf, 106),
            fname,
            blocklog: buf[120],
            inodelog: buf[122],
            inopblog: buf[123],
            agblklog: buf[124],
            inprogress: buf[126],
            imax_pct: buf[127],
            icount: be64(buf, 128),
            ifree: be64(buf, 136),
            fdblocks: be64(buf, 144),
            dirblklog: buf[192],
            features2: Features2::from_bits_retain(be32(buf, 200)),
            ro_compat: RoCompat::empty(),
            incompat: Incompat::empty(),
            log_incompat: LogIncompat::empty(),
            meta_uuid,
        };
        let version = sb.versionnum & VERSION_NUMBITS;
        match version {
            4 => {
                if sb.versionnum & VERSION_DIRV2BIT == 0 {
                    return Err(Error::Unsupported(
                        "XFS v4 with version 1 directories".into(),
                    ));
                }
                if sb.versionnum & VERSION_BORGBIT != 0 {
                    return Err(Error::Unsupported(
                        "XFS with ASCII case-insensitive names (ascii-ci)".into(),
                    ));
                }
                if sb.versionnum & VERSION_MOREBITSBIT == 0 {
                    sb.features2 = Features2::empty();
                }
                if sb.features2.contains(Features2::CRC) {
                    return Err(bad("v4 superblock with the CRC feature".into()));
                }
                let unknown = sb.features2.difference(Features2::KNOWN_V4);
                if !unknown.is_empty() {
                    return Err(Error::Unsupported(format!(
                        "XFS v4 features2 bits this reader does not know: {}",
                        bit_names(unknown.bits())
                    )));
                }
                sb.meta_uuid = sb.uuid;
            }
            5 => {
                sb.ro_compat = RoCompat::from_bits_retain(be32(buf, 212));
                sb.incompat = Incompat::from_bits_retain(be32(buf, 216));
                sb.log_incompat = LogIncompat::from_bits_retain(be32(buf, 220));
                let sect = usize::from(sb.sectsize).min(buf.len());
                if let Some((computed, stored)) = crc::mismatch(&buf[..sect], CRC_OFF) {
                    return Err(Error::mismatch(
                        "xfs superblock",
                        0,
                        "CRC32c mismatch",
                        format!("{computed:#010x}"),
                        format!("{stored:#010x}"),
                    )
                    .at(wide(CRC_OFF)));
                }
                if !sb.incompat.contains(Incompat::META_UUID) {
                    sb.meta_uuid = sb.uuid;
                }
            }
            v => return Err(Error::Unsupported(format!("XFS version {v}"))),
        }
        sb.check_features()?;
        sb.check_geometry().map_err(bad)?;
        Ok(sb)
    }

    fn check_features(&self) -> Result<()> {
        if self.incompat.contains(Incompat::NEEDSREPAIR) {
            return Err(Error::Unsupported(
                "XFS marked needsrepair (run xfs_repair first)".into(),
            ));
        }
        let unknown = self.incompat.difference(Incompat::KNOWN);
        if !unknown.is_empty() {
            let names: Vec<String> = (0..32)
                .map(|b| Incompat::from_bits_retain(1u32 << b))
                .filter(|bit| unknown.contains(*bit))
                .map(|bit| {
                    INCOMPAT_LATER.iter().find(|(b, _)| *b == bit).map_or_else(
                        || format!("unknown {:#x}", bit.bits()),
                        |(_, n)| n.to_string(),
                    )
                })
                .collect();
            return Err(Error::Unsupported(format!(
                "XFS incompatible features: {}",
                names.join(", ")
            )));
        }
        let ro_unknown = self.ro_compat.difference(RoCompat::KNOWN).bits();
        if ro_unknown != 0 {
            log::warn!(
                "xfs: unknown read-only-compatible features {ro_unknown:#x}; reading anyway"
            );
        }
        if self.rblocks != 0 {
            return Err(Error::Unsupported(
                "XFS with a realtime device (not read)".into(),
            ));
        }
        if self.logstart == 0 {
            return Err(Error::Unsupported(
                "XFS with an external log device (not read)".into(),
            ));
        }
        if self.inprogress != 0 {
            return Err(Error::Unsupported(
                "XFS that mkfs.xfs did not finish (sb_inprogress)".into(),
            ));
        }
        Ok(())
    }

    fn check_geometry(&self) -> std::result::Result<(), String> {
        if !(MIN_BLOCKLOG..=MAX_BLOCKLOG).contains(&self.blocklog)
            || self.blocksize != 1 << self.blocklog
        {
            return Err(format!(
                "block size {} (log {})",
                self.blocksize, self.blocklog
            ));
        }
        if !self.sectsize.is_power_of_two()
            || self.sectsize < 512
            || u32::from(self.sectsize) > self.blocksize
        {
            return Err(format!("sector size {}", self.sectsize));
        }
        if !(MIN_INODELOG..=MAX_INODELOG).contains(&self.inodelog)
            || self.inodesize != 1 << self.inodelog
            || u32::from(self.inodesize) > self.blocksize
            || (self.is_v5() && self.inodesize < 512)
        {
            return Err(format!("inode size {}", self.inodesize));
        }
        if self.blocklog.checked_sub(self.inodelog) != Some(self.inopblog)
            || u32::from(self.inopblock) != self.blocksize >> self.inodelog
        {
            return Err(format!(
                "{} inodes per block (log {})",
                self.inopblock, self.inopblog
            ));
        }
        if self.agcount == 0 || self.agblocks < 2 {
            return Err(format!("{} AGs of {} blocks", self.agcount, self.agblocks));
        }
        // xfs_highbit32(agblocks - 1) + 1: the bits of an AG block number.
        let want_agblklog = self
            .agblocks
            .checked_next_power_of_two()
            .map_or(u32::BITS, u32::trailing_zeros);
        if u32::from(self.agblklog) != want_agblklog {
            return Err(format!(
                "AG block log {} for {} blocks",
                self.agblklog, self.agblocks
            ));
        }
        // Two u32 factors: no overflow; agcount >= 1, so max >= agblocks.
        let max = u64::from(self.agcount).saturating_mul(u64::from(self.agblocks));
        let min = max.saturating_sub(u64::from(self.agblocks));
        if self.dblocks > max || self.dblocks <= min {
            return Err(format!(
                "{} blocks for {} AGs of {}",
                self.dblocks, self.agcount, self.agblocks
            ));
        }
        let agno_bits = u32::BITS.saturating_sub(self.agcount.leading_zeros());
        if u32::from(self.agblklog)
            .saturating_add(u32::from(self.inopblog))
            .saturating_add(agno_bits)
            > 64
        {
            return Err("inode numbers wider than 64 bits".into());
        }
        // A u8 sum: a forged sb_dirblklog must not wrap it below the limit.
        if self
            .blocklog
            .checked_add(self.dirblklog)
            .is_none_or(|l| l > MAX_DIRBLOCK_LOG)
        {
            return Err(format!("directory block log {}", self.dirblklog));
        }
        if self.logstart >= self.dblocks {
            return Err(format!(
                "log start {} outside the filesystem",
                self.logstart
            ));
        }
        Ok(())
    }

    /// Reflink (v5 only): a refcount btree in every AG.
    pub fn has_reflink(&self) -> bool {
        self.is_v5() && self.ro_compat.contains(RoCompat::REFLINK)
    }

    /// Sparse inode chunks (v5 only): inode btree records count their inodes.
    pub fn has_sparse_inodes(&self) -> bool {
        self.is_v5() && self.incompat.contains(Incompat::SPINODES)
    }

    /// xfs_verify_ino: the inode number lies in an AG, past its headers.
    pub fn valid_ino(&self, ino: u64) -> bool {
        let shift = u32::from(self.agblklog).saturating_add(u32::from(self.inopblog));
        let agno = ino.checked_shr(shift).unwrap_or(u64::MAX);
        // agblklog <= 32 (check_geometry).
        let agbno = (ino >> self.inopblog) & (1u64 << self.agblklog).saturating_sub(1);
        agno < u64::from(self.agcount) && agbno != 0 && agbno < u64::from(self.agblocks)
    }

    /// The 512-byte sector address (daddr) of linear block `linear`, as v5 headers record it.
    pub fn daddr(&self, linear: u64) -> u64 {
        // blocklog >= 9 (check_geometry).
        linear << self.blocklog.saturating_sub(9)
    }

    pub fn is_v5(&self) -> bool {
        self.versionnum & VERSION_NUMBITS == 5
    }

    /// Directory entries carry a file type byte.
    pub fn has_ftype(&self) -> bool {
        if self.is_v5() {
            self.incompat.contains(Incompat::FTYPE)
        } else {
            self.features2.contains(Features2::FTYPE)
        }
    }

    pub fn has_nlink(&self) -> bool {
        self.is_v5() || self.versionnum & VERSION_NLINKBIT != 0
    }

    pub fn has_attr(&self) -> bool {
        self.is_v5() || self.versionnum & VERSION_ATTRBIT != 0
    }

    /// Bytes of a directory block.
    pub fn dir_block_size(&self) -> u32 {
        self.blocksize << self.dirblklog
    }

    /// The label, without its NUL padding.
    pub fn label(&self) -> &[u8] {
        let n = self.fname.iter().position(|&c| c == 0).unwrap_or(12);
        &self.fname[..n]
    }

    /// The feature names `ferry inspect` logs, as xfs_info spells them.
    pub fn feature_names(&self) -> Vec<&'static str> {
        let mut v = vec![if self.is_v5() { "crc" } else { "v4" }];
        for (on, name) in [
            (self.has_ftype(), "ftype"),
            (self.ro_compat.contains(RoCompat::FINOBT), "finobt"),
            (self.ro_compat.contains(RoCompat::RMAPBT), "rmapbt"),
            (self.ro_compat.contains(RoCompat::REFLINK), "reflink"),
            (self.ro_compat.contains(RoCompat::INOBTCNT), "inobtcount"),
            (self.incompat.contains(Incompat::SPINODES), "sparse"),
            (self.incompat.contains(Incompat::BIGTIME), "bigtime"),
            (self.incompat.contains(Incompat::NREXT64), "nrext64"),
        ] {
            if on {
                v.push(name);
            }
        }
        v
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
pub(super) mod tests {
    use super::*;

    /// A sector holding a valid superblock of 4 AGs of 1024 4 KiB blocks: v4 (version 2
    /// directories, MOREBITS, 256-byte inodes) or v5 (512-byte inodes, CRC stamped).
    /// A valid superblock sector: 4 AGs of 1024 4 KiB blocks (4096 blocks).
    pub(in crate::fs::xfs) fn sector(v5: bool, features2: u32, log_incompat: u32) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        let mut put = |at: usize, v: &[u8]| b[at..][..v.len()].copy_from_slice(v);
        let inodelog: u8 = if v5 { 9 } else { 8 };
        put(0, MAGIC);
        put(4, &4096u32.to_be_bytes());
        put(8, &4096u64.to_be_bytes());
        put(48, &512u64.to_be_bytes());
        put(56, &128u64.to_be_bytes());
        put(84, &1024u32.to_be_bytes());
        put(88, &4u32.to_be_bytes());
        put(96, &256u32.to_be_bytes());
        let version = if v5 {
            5
        } else {
            4 | VERSION_DIRV2BIT | VERSION_MOREBITSBIT
        };
        put(100, &version.to_be_bytes());
        put(102, &512u16.to_be_bytes());
        put(104, &(1u16 << inodelog).to_be_bytes());
        put(106, &(4096u16 >> inodelog).to_be_bytes());
        put(120, &[12, 0, inodelog, 12 - inodelog, 10]);
        put(200, &features2.to_be_bytes());
        put(220, &log_incompat.to_be_bytes());
        if v5 {
            let c = crc::compute(&b, CRC_OFF);
            b[CRC_OFF..CRC_OFF + 4].copy_from_slice(&c.to_le_bytes());
        }
        b
    }

    #[test]
    fn features2_known_bits_read_unknown_bits_named() {
        let known = (Features2::LAZYSBCOUNT | Features2::ATTR2 | Features2::FTYPE).bits();
        let sb = Superblock::parse(&sector(false, known, 0)).unwrap();
        assert!(sb.has_ftype());
        assert_eq!(sb.features2.bits(), known);
        // Bit 11 and PARENT (never used by a released kernel) are refused by their masks.
        let odd = known | (1 << 11) | Features2::PARENT.bits();
        match Superblock::parse(&sector(false, odd, 0)) {
            Err(Error::Unsupported(m)) => assert!(m.ends_with("know: 0x10, 0x800"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Without MOREBITS features2 is not read at all, as the kernel ignores it.
        let mut b = sector(false, odd, 0);
        b[100..102].copy_from_slice(&(4 | VERSION_DIRV2BIT).to_be_bytes());
        let sb = Superblock::parse(&b).unwrap();
        assert!(sb.features2.is_empty() && !sb.has_ftype());
    }

    #[test]
    fn log_incompat_keeps_unknown_bits() {
        let bits = LogIncompat::XATTRS.bits() | (1 << 5);
        let sb = Superblock::parse(&sector(true, 0, bits)).unwrap();
        assert!(sb.log_incompat.contains(LogIncompat::XATTRS));
        assert_eq!(sb.log_incompat.bits(), bits);
        let unknown = sb.log_incompat.difference(LogIncompat::KNOWN);
        assert_eq!(bit_names(unknown.bits()), "0x20");
    }

    #[test]
    fn directory_block_log_does_not_wrap() {
        // 12 + 250 wraps a u8 to 6, which once passed the 64 KiB limit (and panicked in
        // debug builds); every value past the limit is refused.
        for dirblklog in [5, 250, 255] {
            let mut b = sector(false, 0, 0);
            b[192] = dirblklog;
            assert!(Superblock::parse(&b).is_err(), "sb_dirblklog {dirblklog}");
        }
        let mut b = sector(false, 0, 0);
        b[192] = 4;
        assert_eq!(Superblock::parse(&b).unwrap().dir_block_size(), 65536);
    }
}
