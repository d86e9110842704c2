//! The free-space btree by block number (xfs_format.h `xfs_alloc_rec`, the "bnobt": magic
//! `ABTB`, `AB3B` on v5): each AG's free extents, rooted in its AGF (`agf_roots[0]`,
//! `agf_levels[0]`). Read to leave free space out of a copy (`Filesystem::unused`), as
//! `fstrim` in virt-v2v's appliance would discard it.

use super::{log::LogState, Xfs};
use crate::bytes::be32;
use crate::fs::{Error, Result};
use std::ops::Range;

const ABTB_MAGIC: u32 = 0x4142_5442;
const ABTB3_MAGIC: u32 = 0x4142_3342;
/// AGF fields: bnobt root and levels, length of the AG, free blocks.
const AGF_LENGTH: usize = 12;
const AGF_BNO_ROOT: usize = 16;
const AGF_BNO_LEVEL: usize = 28;
const AGF_FREEBLKS: usize = 52;
/// Short-form btree block headers: 16 bytes, 56 with the v5 fields.
const SBLOCK_HDR: usize = 16;
const SBLOCK3_HDR: usize = 56;
/// A record or key: startblock, blockcount (both be32); a node pointer: an AG block (be32).
const REC: usize = 8;
const PTR: usize = 4;
/// The kernel allows at most XFS_BTREE_MAXLEVELS (9) levels in any short-form btree.
const MAX_LEVELS: u32 = 9;
/// The AG headers (superblock copy, AGF, AGI, AGFL) take the first four sectors of an AG.
const AG_HEADER_SECTORS: u64 = 4;

impl Xfs {
    /// The byte ranges of the filesystem that its free-space btrees hold as free. Refused when
    /// the log was not clean (the btrees on disk may predate what the log records), or when a
    /// btree disagrees with its AGF's free count or claims the AG headers or the internal log.
    pub(super) fn unused_ranges(&self) -> Result<Vec<Range<u64>>> {
        match &self.log {
            LogState::Clean => {}
            LogState::Replayed { .. } | LogState::Dirty(_) => {
                return Err(Error::Unsupported(
                    "xfs: the log was dirty, so the free-space btrees on disk may predate it"
                        .into(),
                ))
            }
        }
        let bs = u64::from(self.sb.blocksize);
        // Four sectors of at most 32 KiB; the block size is not zero (check_geometry).
        let headers = AG_HEADER_SECTORS
            .saturating_mul(u64::from(self.sb.sectsize))
            .div_ceil(bs);
        let log = self.internal_log()?;
        let mut out: Vec<Range<u64>> = Vec::new();
        for agno in 0..self.sb.agcount {
            // Two u32 factors, then an AG block below agblocks: no overflow.
            let base = u64::from(agno).saturating_mul(u64::from(self.sb.agblocks));
            for r in self.free_extents(agno)? {
                let start = base.saturating_add(u64::from(r.start));
                let end = base.saturating_add(u64::from(r.end));
                let refuse = |what: &str| {
                    Err(Error::Unsupported(format!(
                        "xfs: AG {agno}'s free-space btree marks {what} free (blocks {}..{})",
                        r.start, r.end
                    )))
                };
                if u64::from(r.start) < headers {
                    return refuse("the AG headers");
                }
                if log.as_ref().is_some_and(|l| start < l.end && l.start < end) {
                    return refuse("the internal log");
                }
                let (Some(start), Some(end)) = (start.checked_mul(bs), end.checked_mul(bs)) else {
                    return refuse("blocks past 2^64 bytes");
                };
                match out.last_mut() {
                    Some(last) if last.end == start => last.end = end,
                    _ => out.push(start..end),
                }
            }
        }
        Ok(out)
    }

    /// The internal log's linear blocks, if the log is inside the data device.
    fn internal_log(&self) -> Result<Option<Range<u64>>> {
        if self.sb.logstart == 0 {
            return Ok(None);
        }
        let blocks = u64::from(self.sb.logblocks);
        let start = self.fsb_to_linear(self.sb.logstart, blocks, "xfs log", 0)?;
        // fsb_to_linear checked that the log ends inside the filesystem.
        Ok(Some(start..start.saturating_add(blocks)))
    }

    /// The free extents of AG `agno` (AG block ranges), sorted, checked against each other,
    /// the AG's length and the AGF's free count.
    fn free_extents(&self, agno: u32) -> Result<Vec<Range<u32>>> {
        let what = "xfs free-space btree";
        let agf = self.agf(agno)?;
        let length = be32(&agf, AGF_LENGTH);
        let levels = be32(&agf, AGF_BNO_LEVEL);
        let owner = u64::from(agno);
        if levels == 0 || levels > MAX_LEVELS {
            return Err(self.damage(what, 0, owner, format!("AG {agno}: {levels} levels")));
        }
        let (magic, hdr) = if self.sb.is_v5() {
            (ABTB3_MAGIC, SBLOCK3_HDR)
        } else {
            (ABTB_MAGIC, SBLOCK_HDR)
        };
        // The block size is at most 64 KiB (check_geometry), above the header.
        let bs = usize::try_from(self.sb.blocksize).unwrap_or(usize::MAX);
        let max_ptrs = bs.saturating_sub(hdr) / (REC + PTR);
        let mut recs: Vec<Range<u32>> = Vec::new();
        // levels >= 1 (checked above).
        let mut todo = vec![(be32(&agf, AGF_BNO_ROOT), levels.saturating_sub(1))];
        let mut visited = 0u32;
        while let Some((agbno, depth)) = todo.pop() {
            visited = visited.saturating_add(1);
            if visited > length {
                return Err(self.damage(what, 0, owner, format!("AG {agno}: the btree loops")));
            }
            let (b, linear, n) = self.sblock(agno, agbno, magic, depth, what)?;
            let body = b.get(hdr..).unwrap_or_default();
            if depth == 0 {
                let Some(rows) = n.checked_mul(REC).and_then(|l| body.get(..l)) else {
                    return Err(self.damage(what, 0, linear, format!("{n} records")));
                };
                for (i, rec) in rows.chunks_exact(REC).enumerate() {
                    let (start, count) = (be32(rec, 0), be32(rec, 4));
                    match start.checked_add(count) {
                        Some(end) if count > 0 && end <= length => recs.push(start..end),
                        _ => {
                            return Err(self.damage(
                                what,
                                0,
                                linear,
                                format!("record {i}: {count} blocks at {start}, AG of {length}"),
                            ))
                        }
                    }
                }
                continue;
            }
            if n > max_ptrs {
                return Err(self.damage(what, 0, linear, format!("{n} keys")));
            }
            // Children pushed last-first, so the leaves come off the stack in key order. The
            // pointers follow max_ptrs keys; n <= max_ptrs, so all n are inside the block.
            let ptrs = body.get(max_ptrs.saturating_mul(REC)..).unwrap_or_default();
            for p in ptrs.chunks_exact(PTR).take(n).rev() {
                // depth > 0 here.
                todo.push((be32(p, 0), depth.saturating_sub(1)));
            }
        }
        recs.sort_by_key(|r| r.start);
        if let Some(w) = recs.windows(2).find(|w| w[1].start < w[0].end) {
            return Err(self.damage(
                what,
                0,
                owner,
                format!("AG {agno}: free extents {:?} and {:?} overlap", w[0], w[1]),
            ));
        }
        let total: u64 = recs
            .iter()
            .map(|r| u64::from(r.end.saturating_sub(r.start)))
            .fold(0, u64::saturating_add);
        let counted = be32(&agf, AGF_FREEBLKS);
        if total != u64::from(counted) {
            return Err(Error::Unsupported(format!(
                "xfs: AG {agno}'s free-space btree holds {total} blocks, its AGF counts {counted}"
            )));
        }
        Ok(recs)
    }
}
