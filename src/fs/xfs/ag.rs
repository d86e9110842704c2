//! AG headers (xfs_format.h `xfs_agf`, `xfs_agi`): each allocation group starts with a copy of
//! the superblock, then in the next sectors the AGF (free space: counts and btree roots) and
//! the AGI (inodes: allocated and free counts). The counters are read for statfs when the
//! superblock's lazy counters cannot be trusted (a dirty log), and so are the AGI's unlinked
//! lists with the inode btree records they touch: what the kernel frees at such a mount.

use super::{crc, Xfs};
use crate::bytes::be32;
use crate::fs::{Error, Result};

const AGF_MAGIC: u32 = 0x5841_4746;
const AGI_MAGIC: u32 = 0x5841_4749;
const AGF_CRC_OFF: usize = 216;
const AGI_CRC_OFF: usize = 312;
/// The AGF and AGI are the second and third sectors of an AG.
const AGF_SECTOR: u64 = 1;
const AGI_SECTOR: u64 = 2;
/// agi_unlinked: 64 hash buckets of unlinked inode lists, from byte 40 of the AGI.
const AGI_UNLINKED_OFF: usize = 40;
const AGI_UNLINKED_BUCKETS: usize = 64;
/// The end of an unlinked list (and of an empty bucket).
const NULLAGINO: u32 = u32::MAX;
/// Inode btree block magics (v4 `IABT`, v5 `IAB3`), and the v5 block header's CRC offset.
const IBT_MAGIC: u32 = 0x4941_4254;
const IBT3_MAGIC: u32 = 0x4941_4233;
const SBLOCK_CRC_OFF: usize = 52;
/// Short-form btree block headers: 16 bytes, 56 with the v5 fields.
const SBLOCK_HDR: usize = 16;
const SBLOCK3_HDR: usize = 56;
/// An inode btree record: startino, holemask/count/freecount (or freecount), free mask.
const INOBT_REC: usize = 16;
/// XFS_INODES_PER_CHUNK.
const INODES_PER_CHUNK: u32 = 64;
/// The deepest inode or refcount btree walked (the kernel's limits are lower).
const MAX_IBT_LEVELS: u32 = 9;
/// Refcount btree block magic (`R3FC`), its root and level in the AGF, and the flag of the
/// records of CoW staging extents (XFS_REFC_COWFLAG, in rc_startblock).
const REFC_MAGIC: u32 = 0x5233_4643;
const AGF_REFCOUNT_ROOT: usize = 88;
const AGF_REFCOUNT_LEVEL: usize = 92;
const REFC_COWFLAG: u32 = 1 << 31;

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
    pub(super) fn ag_sector(&self, agno: u32, sector: u64, what: &'static str) -> Result<Vec<u8>> {
        let at = self.ag_sector_at(agno, sector, what)?;
        // OK: the sector size is at most the block size, 64 KiB.
        let mut buf = vec![0u8; usize::from(self.sb.sectsize)];
        self.dev.read_at(&mut buf, at)?;
        Ok(buf)
    }

    /// The byte position of sector `sector` of AG `agno`.
    fn ag_sector_at(&self, agno: u32, sector: u64, what: &'static str) -> Result<u64> {
        let sect = u64::from(self.sb.sectsize);
        u64::from(agno)
            .checked_mul(u64::from(self.sb.agblocks))
            .and_then(|b| b.checked_mul(u64::from(self.sb.blocksize)))
            .and_then(|b| b.checked_add(sector.checked_mul(sect)?))
            .ok_or_else(|| Error::corrupt(what, 0, 0, format!("AG {agno} overflows")))
    }

    /// The AGF of AG `agno`, checked (magic, AG number, CRC on v5).
    pub(super) fn agf(&self, agno: u32) -> Result<Vec<u8>> {
        let f = self.ag_sector(agno, AGF_SECTOR, "xfs AGF")?;
        self.check_ag_header(agno, &f, AGF_SECTOR, AGF_MAGIC, AGF_CRC_OFF, "xfs AGF")?;
        Ok(f)
    }

    /// The AGF and AGI counters of AG `agno`, checked (magic, sequence, CRC on v5).
    pub fn ag_counts(&self, agno: u32) -> Result<AgCounts> {
        let f = self.agf(agno)?;
        let i = self.ag_sector(agno, AGI_SECTOR, "xfs AGI")?;
        self.check_ag_header(agno, &i, AGI_SECTOR, AGI_MAGIC, AGI_CRC_OFF, "xfs AGI")?;
        let v5 = self.sb.is_v5();
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

    /// Checks an AG header sector: its magic, its AG number and (v5) its CRC.
    fn check_ag_header(
        &self,
        agno: u32,
        b: &[u8],
        sector: u64,
        magic: u32,
        crc_off: usize,
        what: &'static str,
    ) -> Result<()> {
        let at = self.ag_sector_at(agno, sector, what)?;
        // The block the sector lies in, which also tells the AGs apart in the damage log.
        // The block size is not zero (Superblock::check_geometry).
        let blk = at.checked_div(u64::from(self.sb.blocksize)).unwrap_or(0);
        let bad =
            |detail: &str| Error::corrupt(what, 0, blk, format!("AG {agno}: {detail}")).at(at);
        if be32(b, 0) != magic {
            let e = bad("bad magic")
                .expected(format!("{magic:#010x}"), format!("{:#010x}", be32(b, 0)));
            return Err(self.report(e));
        }
        if be32(b, 8) != agno {
            return Err(self.report(bad("bad AG number").expected(agno, be32(b, 8))));
        }
        if self.sb.is_v5() {
            if let Some((computed, stored)) = crc::mismatch(b, crc_off) {
                let e = bad("CRC32c mismatch")
                    .expected(format!("{computed:#010x}"), format!("{stored:#010x}"));
                return Err(self.report(e));
            }
        }
        Ok(())
    }
}

/// What the kernel's recovery of the AGI unlinked lists (xlog_recover_process_iunlinks) frees:
/// every inode still on a list is inactivated (its blocks freed, the inode freed) and an inode
/// chunk left wholly free is released (xfs_difree_inobt without `ikeep`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnlinkedRelease {
    /// Blocks freed: the inodes' own (di_nblocks) and those of released chunks.
    pub blocks: u64,
    /// Inodes freed.
    pub inodes: u64,
    /// Inodes of released chunks (no longer allocated at all).
    pub released: u64,
}

/// One inode btree record: the chunk's first inode (AG-relative), how many inodes it really
/// has (fewer with sparse inodes) and which are free.
#[derive(Clone, Copy, Debug)]
struct InobtRec {
    count: u32,
    free: u64,
}

impl Xfs {
    /// A short-form btree block (inode or refcount btree) at `agbno` of AG `agno`, checked:
    /// magic, CRC on v5, and its level `depth`. Returns it, its linear block and its count of
    /// records or keys.
    pub(super) fn sblock(
        &self,
        agno: u32,
        agbno: u32,
        magic: u32,
        depth: u32,
        what: &'static str,
    ) -> Result<(std::sync::Arc<[u8]>, u64, usize)> {
        let v5 = self.sb.is_v5();
        let fsb = (u64::from(agno) << self.sb.agblklog) | u64::from(agbno);
        let linear = self.fsb_to_linear(fsb, 1, what, 0)?;
        let b = self.checked_block(linear, what, 0, |b| {
            if be32(b, 0) != magic {
                return Err("bad magic".into());
            }
            if v5 && !crc::verify(b, SBLOCK_CRC_OFF) {
                return Err("CRC32c mismatch".into());
            }
            Ok(())
        })?;
        let level = u32::from(crate::bytes::be16(&b, 4));
        if level != depth {
            return Err(self.damage(what, 0, linear, format!("level {level}, expected {depth}")));
        }
        let n = usize::from(crate::bytes::be16(&b, 6));
        Ok((b, linear, n))
    }

    /// The inode btree record of the chunk holding AG inode `agino` of AG `agno`.
    fn inobt_record(&self, agno: u32, agi: &[u8], agino: u32) -> Result<InobtRec> {
        let v5 = self.sb.is_v5();
        let (magic, hdr) = if v5 {
            (IBT3_MAGIC, SBLOCK3_HDR)
        } else {
            (IBT_MAGIC, SBLOCK_HDR)
        };
        let sparse = self.sb.has_sparse_inodes();
        // The block size is at most 64 KiB (check_geometry), above the header.
        let bs = usize::try_from(self.sb.blocksize).unwrap_or(usize::MAX);
        let mut agbno = be32(agi, 20);
        let levels = be32(agi, 24);
        let what = "xfs inode btree";
        let owner = u64::from(agno);
        if levels == 0 || levels > MAX_IBT_LEVELS {
            return Err(self.damage(what, 0, owner, format!("{levels} levels")));
        }
        for depth in (0..levels).rev() {
            let (b, linear, n) = self.sblock(agno, agbno, magic, depth, what)?;
            let body = b.get(hdr..).unwrap_or_default();
            if depth == 0 {
                let Some(rows) = n.checked_mul(INOBT_REC).and_then(|l| body.get(..l)) else {
                    return Err(self.damage(what, 0, linear, format!("{n} records")));
                };
                for r in rows.chunks_exact(INOBT_REC) {
                    let start = be32(r, 0);
                    if agino
                        .checked_sub(start)
                        .is_some_and(|d| d < INODES_PER_CHUNK)
                    {
                        let count = if sparse {
                            u32::from(r[6])
                        } else {
                            INODES_PER_CHUNK
                        };
                        return Ok(InobtRec {
                            count,
                            free: crate::bytes::be64(r, 8),
                        });
                    }
                }
                return Err(self.damage(
                    what,
                    0,
                    linear,
                    format!("no record for AG inode {agino}"),
                ));
            }
            // A node: keys (startino), then as many block pointers from the middle on.
            let max = bs.saturating_sub(hdr) / 8;
            if n == 0 || n > max {
                return Err(self.damage(what, 0, linear, format!("{n} keys")));
            }
            let i = body
                .chunks_exact(4)
                .take(n)
                .rposition(|k| be32(k, 0) <= agino)
                .unwrap_or(0);
            // The pointers follow max keys; i < n <= max, so pointer i is inside the block.
            let ptrs = body.get(max.saturating_mul(4)..).unwrap_or_default();
            agbno = ptrs.chunks_exact(4).nth(i).map_or(0, |p| be32(p, 0));
        }
        Err(self.damage(what, 0, owner, "no leaf reached".into()))
    }

    /// What recovering the AGI unlinked lists frees, as the kernel does after replaying a
    /// dirty log (nothing is written: this only changes the counts statfs reports). A list
    /// that is damaged (a loop, an inode that cannot be read) stops there, as the kernel
    /// gives up on that bucket.
    pub fn unlinked_release(&self) -> Result<UnlinkedRelease> {
        let mut out = UnlinkedRelease::default();
        let per_ag_inodes = u64::from(self.sb.agblocks) << self.sb.inopblog;
        for agno in 0..self.sb.agcount {
            let agi = self.ag_sector(agno, AGI_SECTOR, "xfs AGI")?;
            if be32(&agi, 0) != AGI_MAGIC {
                continue;
            }
            // Per chunk (by its record's identity: the AG inode of its first slot): the
            // record and the inodes freed in it.
            let mut chunks: std::collections::BTreeMap<u32, (InobtRec, u64)> =
                std::collections::BTreeMap::new();
            let mut seen = std::collections::HashSet::new();
            let heads = agi.get(AGI_UNLINKED_OFF..).unwrap_or_default();
            for head in heads.chunks_exact(4).take(AGI_UNLINKED_BUCKETS) {
                let mut agino = be32(head, 0);
                while agino != NULLAGINO && u64::from(agino) < per_ag_inodes {
                    if !seen.insert(agino) {
                        ::log::warn!("xfs: unlinked list of AG {agno} loops at {agino}");
                        break;
                    }
                    // agblklog + inopblog <= 64 (check_geometry) with agno below agcount.
                    let ag_shift =
                        u32::from(self.sb.agblklog).saturating_add(u32::from(self.sb.inopblog));
                    let ino = u64::from(agno).checked_shl(ag_shift).unwrap_or(0) | u64::from(agino);
                    let ip = match self.inode(ino) {
                        Ok(ip) => ip,
                        Err(e) => {
                            ::log::warn!("xfs: unlinked list of AG {agno}: inode {ino}: {e}");
                            break;
                        }
                    };
                    let rec = match self.inobt_record(agno, &agi, agino) {
                        Ok(r) => r,
                        Err(e) => {
                            ::log::warn!("xfs: unlinked list of AG {agno}: inode {ino}: {e}");
                            break;
                        }
                    };
                    let slot = agino % INODES_PER_CHUNK;
                    let first = agino.saturating_sub(slot);
                    let entry = chunks.entry(first).or_insert((rec, 0));
                    let bit = 1u64 << slot;
                    if entry.1 & bit == 0 && rec.free & bit == 0 {
                        entry.1 |= bit;
                        out.blocks = out.blocks.saturating_add(ip.nblocks);
                        out.inodes = out.inodes.saturating_add(1);
                    }
                    agino = ip.next_unlinked;
                }
            }
            for (rec, freed) in chunks.values() {
                let all_free = rec.free | freed == u64::MAX;
                if all_free && u32::from(self.sb.inopblock) <= INODES_PER_CHUNK {
                    out.released = out.released.saturating_add(u64::from(rec.count));
                    // At most 255 inodes of at most 2 KiB; the block size is not zero.
                    let bytes = u64::from(rec.count).saturating_mul(u64::from(self.sb.inodesize));
                    let blocks = bytes.checked_div(u64::from(self.sb.blocksize)).unwrap_or(0);
                    out.blocks = out.blocks.saturating_add(blocks);
                }
            }
        }
        Ok(out)
    }
}

impl Xfs {
    /// Blocks of CoW staging extents left in the refcount btrees: a crash between a
    /// copy-on-write's allocation and its remap leaves them, and the kernel frees them all at
    /// mount (xfs_refcount_recover_cow_leftovers). Only read, to count them free.
    pub fn cow_leftovers(&self) -> Result<u64> {
        if !self.sb.has_reflink() {
            return Ok(0);
        }
        let what = "xfs refcount btree";
        // The block size is at most 64 KiB (check_geometry), above the header.
        let bs = usize::try_from(self.sb.blocksize).unwrap_or(usize::MAX);
        let mut total = 0u64;
        for agno in 0..self.sb.agcount {
            let agf = self.ag_sector(agno, AGF_SECTOR, "xfs AGF")?;
            if be32(&agf, 0) != AGF_MAGIC {
                continue;
            }
            let levels = be32(&agf, AGF_REFCOUNT_LEVEL);
            if levels == 0 || levels > MAX_IBT_LEVELS {
                return Err(self.damage(what, 0, u64::from(agno), format!("{levels} levels")));
            }
            // levels >= 1 (checked above).
            let mut todo = vec![(be32(&agf, AGF_REFCOUNT_ROOT), levels.saturating_sub(1))];
            let mut visited = 0u64;
            while let Some((agbno, depth)) = todo.pop() {
                visited = visited.saturating_add(1);
                if visited > u64::from(self.sb.agblocks) {
                    return Err(self.damage(what, 0, u64::from(agno), "loops".into()));
                }
                let (b, linear, n) = self.sblock(agno, agbno, REFC_MAGIC, depth, what)?;
                let body = b.get(SBLOCK3_HDR..).unwrap_or_default();
                if depth == 0 {
                    // xfs_refcount_rec: start (with the CoW flag), length, refcount.
                    let Some(rows) = n.checked_mul(12).and_then(|l| body.get(..l)) else {
                        return Err(self.damage(what, 0, linear, format!("{n} records")));
                    };
                    for r in rows.chunks_exact(12) {
                        if be32(r, 0) & REFC_COWFLAG != 0 {
                            total = total.saturating_add(u64::from(be32(r, 4)));
                        }
                    }
                    continue;
                }
                let max = bs.saturating_sub(SBLOCK3_HDR) / 8;
                if n > max {
                    return Err(self.damage(what, 0, linear, format!("{n} keys")));
                }
                // The pointers follow max keys; n <= max, so all are inside the block.
                let ptrs = body.get(max.saturating_mul(4)..).unwrap_or_default();
                for p in ptrs.chunks_exact(4).take(n) {
                    // depth > 0 here.
                    todo.push((be32(p, 0), depth.saturating_sub(1)));
                }
            }
        }
        Ok(total)
    }
}
