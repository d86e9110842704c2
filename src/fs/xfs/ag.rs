//! AG headers (xfs_format.h `xfs_agf`, `xfs_agi`): each allocation group starts with a copy of
//! the superblock, then in the next sectors the AGF (free space: counts and btree roots) and
//! the AGI (inodes: allocated and free counts). Only the counters are read, for statfs when
//! the superblock's lazy counters cannot be trusted (a dirty log).

use super::{be32, crc, Xfs};
use crate::fs::{FsError, Result};

const AGF_MAGIC: u32 = 0x5841_4746;
const AGI_MAGIC: u32 = 0x5841_4749;
const AGF_CRC_OFF: usize = 216;
const AGI_CRC_OFF: usize = 312;
/// The AGF and AGI are the second and third sectors of an AG.
const AGF_SECTOR: u64 = 1;
const AGI_SECTOR: u64 = 2;

/// The counters of one AG.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgCounts {
    /// agf_length: blocks in this AG.
    pub length: u32,
    pub freeblks: u32,
    pub flcount: u32,
    /// Blocks of the free space (and rmap) btrees beyond their roots.
    pub btreeblks: u32,
    pub rmap_blocks: u32,
    pub icount: u32,
    pub ifree: u32,
}

impl Xfs {
    fn ag_sector(&self, agno: u32, sector: u64, what: &'static str) -> Result<Vec<u8>> {
        let sect = u64::from(self.sb.sectsize);
        let at = (u64::from(agno) * u64::from(self.sb.agblocks))
            .checked_mul(u64::from(self.sb.blocksize))
            .and_then(|b| b.checked_add(sector * sect))
            .ok_or_else(|| FsError::corrupt(what, 0, 0, format!("AG {agno} overflows")))?;
        // OK: the sector size is at most the block size, 64 KiB.
        let mut buf = vec![0u8; sect as usize];
        self.dev.read_at(&mut buf, at)?;
        Ok(buf)
    }

    /// The AGF and AGI counters of AG `agno`, checked (magic, sequence, CRC on v5).
    pub fn ag_counts(&self, agno: u32) -> Result<AgCounts> {
        let f = self.ag_sector(agno, AGF_SECTOR, "xfs AGF")?;
        let i = self.ag_sector(agno, AGI_SECTOR, "xfs AGI")?;
        let v5 = self.sb.is_v5();
        let check = |b: &[u8], magic: u32, crc_off: usize, what: &'static str| {
            if be32(b, 0) != magic || be32(b, 8) != agno {
                return Err(self.damage(what, 0, u64::from(agno), "bad magic or AG number".into()));
            }
            if v5 && !crc::verify(b, crc_off) {
                return Err(self.damage(what, 0, u64::from(agno), "CRC32c mismatch".into()));
            }
            Ok(())
        };
        check(&f, AGF_MAGIC, AGF_CRC_OFF, "xfs AGF")?;
        check(&i, AGI_MAGIC, AGI_CRC_OFF, "xfs AGI")?;
        Ok(AgCounts {
            length: be32(&f, 12),
            flcount: be32(&f, 48),
            freeblks: be32(&f, 52),
            btreeblks: be32(&f, 60),
            rmap_blocks: if v5 { be32(&f, 80) } else { 0 },
            icount: be32(&i, 16),
            ifree: be32(&i, 28),
        })
    }
}
