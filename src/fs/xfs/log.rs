//! Whether the log is clean (xfs_log_recover.c xlog_find_head, xlog_check_unmount_rec).
//! Every 512-byte block of the log starts with its cycle number (record headers with the
//! magic, the cycle following), so the head is where the cycle drops; the last record before
//! it is an unmount record exactly when the filesystem was unmounted cleanly. The log is not
//! replayed: a dirty one is reported and the tree read as it is on disk.

use super::{be32, Xfs};
use crate::fs::Result;

/// XLOG_HEADER_MAGIC_NUM.
const HEADER_MAGIC: u32 = 0xfeed_babe;
/// XLOG_UNMOUNT_TRANS in an operation header's flags.
const UNMOUNT_TRANS: u8 = 0x20;
const BB: u64 = 512;
/// Log records are at most 256 KiB plus headers: the last header is this close to the head.
const MAX_RECORD_BBS: u64 = 2 * (256 << 10) / BB + 64;
/// Bytes of record header each extra header block covers (XLOG_HEADER_CYCLE_SIZE).
const HEADER_CYCLE_SIZE: u32 = 32 << 10;
const VERSION_2: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogState {
    Clean,
    /// Not cleanly unmounted (or unreadable): why.
    Dirty(String),
}

impl Xfs {
    fn log_bb(&self, bb: u64) -> Result<Vec<u8>> {
        let start = self.sb.logstart;
        let linear = self.fsb_to_linear(start, u64::from(self.sb.logblocks), "xfs log", 0)?;
        let mut buf = vec![0u8; BB as usize];
        self.dev
            .read_at(&mut buf, linear * u64::from(self.sb.blocksize) + bb * BB)?;
        Ok(buf)
    }

    fn log_cycle(&self, bb: u64) -> Result<u32> {
        let b = self.log_bb(bb)?;
        Ok(if be32(&b, 0) == HEADER_MAGIC {
            be32(&b, 4)
        } else {
            be32(&b, 0)
        })
    }

    pub(super) fn log_state(&self) -> LogState {
        match self.find_log_state() {
            Ok(s) => s,
            Err(e) => LogState::Dirty(format!("log unreadable: {e}")),
        }
    }

    fn find_log_state(&self) -> Result<LogState> {
        let n = u64::from(self.sb.logblocks) * u64::from(self.sb.blocksize) / BB;
        if n < 2 {
            return Ok(LogState::Dirty("log of less than two blocks".into()));
        }
        let first = self.log_cycle(0)?;
        if first == 0 {
            // A zeroed log (xfs_repair -L, or never written) has nothing to replay.
            return Ok(LogState::Clean);
        }
        let last = self.log_cycle(n - 1)?;
        let head = if first == last {
            0
        } else {
            let (mut lo, mut hi) = (0, n - 1);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if self.log_cycle(mid)? == first {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            hi
        };
        let mut rec = None;
        for back in 1..=MAX_RECORD_BBS.min(n) {
            let bb = (head + n - back) % n;
            let b = self.log_bb(bb)?;
            if be32(&b, 0) == HEADER_MAGIC {
                rec = Some((bb, b));
                break;
            }
        }
        let Some((bb, hdr)) = rec else {
            return Ok(LogState::Dirty(format!(
                "no record header before the head at block {head}"
            )));
        };
        let ops = be32(&hdr, 40);
        let hblks = if be32(&hdr, 8) & VERSION_2 != 0 {
            u64::from(be32(&hdr, 320).div_ceil(HEADER_CYCLE_SIZE).max(1))
        } else {
            1
        };
        let data = self.log_bb((bb + hblks) % n)?;
        if ops == 1 && data[9] & UNMOUNT_TRANS != 0 {
            return Ok(LogState::Clean);
        }
        Ok(LogState::Dirty(format!(
            "the last record (log block {bb}, cycle {}) is not an unmount record",
            be32(&hdr, 4)
        )))
    }
}
