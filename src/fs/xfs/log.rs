//! Where the log's live part lies (xfs_log_recover.c xlog_find_head, xlog_find_tail,
//! xlog_check_unmount_rec). Every 512-byte block of the log starts with its cycle number
//! (record headers with the magic, the cycle following), so the head is where the cycle
//! drops; the last record before it names the tail (h_tail_lsn), and is an unmount record
//! exactly when the filesystem was unmounted cleanly. A dirty log is replayed in memory by
//! `recover`.

use super::Xfs;
use crate::block::BlockDevice;
use crate::bytes::{be32, be64, wide};
use crate::fs::{Error, Result};

/// XLOG_HEADER_MAGIC_NUM.
pub(super) const HEADER_MAGIC: u32 = 0xfeed_babe;
/// XLOG_UNMOUNT_TRANS in an operation header's flags.
pub(super) const UNMOUNT_TRANS: u8 = 0x20;
pub(super) const BB: u64 = 512;
/// A log block as a slice length.
const BB_LEN: usize = 512;
/// XLOG_MAX_RECORD_BSIZE.
pub(super) const MAX_RECORD_BYTES: u32 = 256 << 10;
/// Log records are at most 256 KiB plus headers: the last header is this close to the head.
#[allow(clippy::as_conversions)] // u32 to u64: From is not const
const MAX_RECORD_BBS: u64 = 2 * (MAX_RECORD_BYTES as u64) / BB + 64;
/// Up to 8 in-core logs of 256 KiB are written concurrently, so blocks of the previous cycle
/// can be left this far before the head (XLOG_TOTAL_REC_SHIFT).
#[allow(clippy::as_conversions)] // u32 to u64: From is not const
const HEAD_WINDOW_BBS: u64 = 8 * (MAX_RECORD_BYTES as u64) / BB;
/// Bytes of record header each extra header block covers (XLOG_HEADER_CYCLE_SIZE).
pub(super) const HEADER_CYCLE_SIZE: u32 = 32 << 10;
/// XLOG_VERSION_2: large records with extra header blocks.
pub(super) const VERSION_2: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogState {
    Clean,
    /// The log was dirty and `transactions` committed transactions were replayed in memory
    /// (details in `Xfs::replay_info`).
    Replayed {
        transactions: u64,
    },
    /// Not cleanly unmounted and not replayed (norecovery, or replay impossible): why.
    Dirty(String),
}

/// The log's place on the device.
#[derive(Clone, Copy, Debug)]
pub(super) struct LogArea {
    /// Byte offset of log block 0.
    pub start: u64,
    /// Size in 512-byte blocks.
    pub bbs: u64,
}

impl LogArea {
    /// `count` log blocks from `bb`, wrapping at the end of the log.
    pub(super) fn read(&self, dev: &dyn BlockDevice, bb: u64, count: u64) -> Result<Vec<u8>> {
        if count > self.bbs || bb >= self.bbs {
            return Err(Error::corrupt(
                "xfs log",
                0,
                bb,
                format!("{count} blocks from block {bb} of a {}-block log", self.bbs),
            ));
        }
        // count is at most one record (or the head window), checked by callers; the part
        // before the wrap is at most count.
        let bytes = |n: u64| n.checked_mul(BB).and_then(|b| usize::try_from(b).ok());
        let first = count.min(self.bbs.saturating_sub(bb));
        let at = bb.checked_mul(BB).and_then(|o| self.start.checked_add(o));
        let (Some(len), Some(first_len), Some(at)) = (bytes(count), bytes(first), at) else {
            return Err(Error::corrupt(
                "xfs log",
                0,
                bb,
                format!("{count} blocks from block {bb} past 2^64 bytes"),
            ));
        };
        let mut buf = vec![0u8; len];
        let (before, after) = buf.split_at_mut(first_len.min(len));
        dev.read_at(before, at)?;
        if !after.is_empty() {
            dev.read_at(after, self.start)?;
        }
        Ok(buf)
    }

    fn cycle(&self, dev: &dyn BlockDevice, bb: u64) -> Result<u32> {
        Ok(cycle_of(&self.read(dev, bb, 1)?))
    }

    /// Blocks from `from` forward to `to`, wrapping.
    pub(super) fn distance(&self, from: u64, to: u64) -> u64 {
        // Both are log blocks (below bbs, itself below 2^39): no overflow.
        to.saturating_add(self.bbs)
            .saturating_sub(from)
            .checked_rem(self.bbs)
            .unwrap_or(0)
    }
}

/// The cycle stamped at the start of a log block (xlog_get_cycle).
pub(super) fn cycle_of(b: &[u8]) -> u32 {
    if be32(b, 0) == HEADER_MAGIC {
        be32(b, 4)
    } else {
        be32(b, 0)
    }
}

/// What the log looks like at open.
pub(super) enum Scan {
    Clean,
    /// Records from block `tail` up to `head` (exclusive, wrapping) need replaying.
    Dirty {
        head: u64,
        tail: u64,
        why: String,
    },
    /// Dirty, but where is unclear.
    Unreadable(String),
}

impl Xfs {
    pub(super) fn log_area(&self) -> Result<LogArea> {
        let linear =
            self.fsb_to_linear(self.sb.logstart, u64::from(self.sb.logblocks), "xfs log", 0)?;
        let bs = u64::from(self.sb.blocksize);
        let start = linear.checked_mul(bs).ok_or_else(|| {
            Error::corrupt(
                "xfs log",
                0,
                linear,
                "log start past 2^64 bytes".to_string(),
            )
        })?;
        Ok(LogArea {
            start,
            // Two u32 factors: no overflow.
            bbs: u64::from(self.sb.logblocks).saturating_mul(bs) / BB,
        })
    }

    pub(super) fn scan_log(&self) -> Scan {
        match self.find_log() {
            Ok(s) => s,
            Err(e) => Scan::Unreadable(format!("log unreadable: {e}")),
        }
    }

    fn find_log(&self) -> Result<Scan> {
        let area = self.log_area()?;
        let dev = self.dev.as_ref();
        let n = area.bbs;
        if n < 2 {
            return Ok(Scan::Unreadable("log of less than two blocks".into()));
        }
        let first = area.cycle(dev, 0)?;
        if first == 0 {
            // A zeroed log (xfs_repair -L, or never written) has nothing to replay.
            return Ok(Scan::Clean);
        }
        // n >= 2 here; the differences below are taken in the order the search keeps
        // (lo < hi < n, w <= head).
        let last = area.cycle(dev, n.saturating_sub(1))?;
        // The head is the first block of an older cycle; with the whole log in one cycle it
        // is at the end (xlog_find_head).
        let mut head = if first == last {
            n
        } else {
            let (mut lo, mut hi) = (0, n.saturating_sub(1));
            while hi.saturating_sub(lo) > 1 {
                let mid = lo.saturating_add(hi.saturating_sub(lo) / 2);
                if area.cycle(dev, mid)? == first {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            hi
        };
        // Writes of the last in-core logs may have completed out of order: the first hole of
        // an older cycle shortly before the head is the real head (xlog_find_verify_cycle).
        let w = HEAD_WINDOW_BBS.min(head);
        if w > 0 {
            let from = head.saturating_sub(w);
            let win = area.read(dev, from, w)?;
            if let Some(i) = win.chunks_exact(BB_LEN).position(|b| cycle_of(b) != first) {
                head = from.saturating_add(wide(i));
            }
        }
        // n >= 2: the remainders below are defined; head < n and back <= n.
        let wrap = |b: u64| b.checked_rem(n).unwrap_or(0);
        let head = wrap(head);
        let back = MAX_RECORD_BBS.min(n);
        let from = wrap(head.saturating_add(n).saturating_sub(back));
        let win = area.read(dev, from, back)?;
        let Some((i, hdr)) = win
            .chunks_exact(BB_LEN)
            .enumerate()
            .rev()
            .find(|(_, b)| be32(b, 0) == HEADER_MAGIC)
        else {
            return Ok(Scan::Unreadable(format!(
                "no record header before the head at block {head}"
            )));
        };
        let bb = wrap(from.saturating_add(wide(i)));
        let ops = be32(hdr, 40);
        let hblks = header_blocks(hdr);
        let data = area.read(dev, wrap(bb.saturating_add(hblks)), 1)?;
        if ops == 1 && data[9] & UNMOUNT_TRANS != 0 {
            return Ok(Scan::Clean);
        }
        let tail_lsn = be64(hdr, 24);
        let tail = tail_lsn & 0xffff_ffff;
        if tail >= n {
            return Ok(Scan::Unreadable(format!(
                "the last record (log block {bb}) names tail block {tail} of {n}"
            )));
        }
        Ok(Scan::Dirty {
            head,
            tail,
            why: format!(
                "the last record (log block {bb}, cycle {}) is not an unmount record",
                be32(hdr, 4)
            ),
        })
    }
}

/// Header blocks of the record whose first header block is `hdr`: v2 records larger than
/// 32 KiB carry the cycle words of their further blocks in extra headers
/// (xlog_logrec_hblks).
pub(super) fn header_blocks(hdr: &[u8]) -> u64 {
    if be32(hdr, 8) & VERSION_2 != 0 {
        let size = be32(hdr, 320).min(MAX_RECORD_BYTES);
        u64::from(size.div_ceil(HEADER_CYCLE_SIZE).max(1))
    } else {
        1
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;
    use crate::block::mem::MemDevice;

    #[test]
    fn log_reads_wrap_at_the_end() {
        // A 4-block log at byte 512 of the device, each block filled with its number.
        let mut disk = vec![0xeeu8; 6 * 512];
        for bb in 0..4 {
            disk[512 + bb * 512..1024 + bb * 512].fill(bb as u8);
        }
        let dev = MemDevice(disk);
        let area = LogArea { start: 512, bbs: 4 };
        let b = area.read(&dev, 3, 2).unwrap();
        assert!(b[..512].iter().all(|&x| x == 3));
        assert!(b[512..].iter().all(|&x| x == 0));
        assert!(area.read(&dev, 4, 1).is_err());
        assert!(area.read(&dev, 0, 5).is_err());
        assert_eq!(area.distance(3, 1), 2);
        assert_eq!(area.distance(1, 3), 2);
        assert_eq!(area.distance(2, 2), 0);
        let mut hdr = vec![0u8; 512];
        hdr[..4].copy_from_slice(&HEADER_MAGIC.to_be_bytes());
        hdr[4..8].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(cycle_of(&hdr), 7);
        hdr[8..12].copy_from_slice(&VERSION_2.to_be_bytes());
        hdr[320..324].copy_from_slice(&(256u32 << 10).to_be_bytes());
        assert_eq!(header_blocks(&hdr), 8);
        hdr[320..324].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(header_blocks(&hdr), 8);
    }
}
