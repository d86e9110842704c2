//! The filesystem as it is after journal replay, without writing anything: a `BlockDevice` over
//! the source that answers reads of replayed blocks from their copy in the log. Only the map
//! {filesystem block → where its last copy sits} is in memory; the bytes are read on demand,
//! and an escaped copy gets its magic number back (JBD2_FLAG_ESCAPE).

use super::block::MAGIC;
use crate::block::{check_range, BlockDevice, Describe, Extent, LayerInfo, Result};
use crate::bytes::wide;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where the replayed content of one filesystem block lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy {
    /// Byte offset of the log block holding it, on the same device.
    pub at: u64,
    /// The first four bytes must read as the jbd2 magic number (they are zero in the log).
    pub escaped: bool,
}

/// The source device with the replayed blocks laid over it.
pub struct ReplayView {
    inner: Arc<dyn BlockDevice>,
    block_size: u64,
    map: BTreeMap<u64, Copy>,
}

impl ReplayView {
    pub fn new(inner: Arc<dyn BlockDevice>, block_size: u32, map: BTreeMap<u64, Copy>) -> Self {
        ReplayView {
            inner,
            block_size: u64::from(block_size),
            map,
        }
    }

    /// Filesystem blocks whose content comes from the log.
    pub fn replayed_blocks(&self) -> usize {
        self.map.len()
    }

    /// The replayed filesystem blocks, in order.
    pub fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.map.keys().copied()
    }

    /// Where block `blk`'s replayed content lives, if it was replayed.
    pub fn copy_of(&self, blk: u64) -> Option<Copy> {
        self.map.get(&blk).copied()
    }

    /// The replayed blocks overlapping the byte range `[off, end)` (not empty: off < end).
    fn replayed_in(&self, off: u64, end: u64) -> impl Iterator<Item = (u64, Copy)> + '_ {
        // The filesystem's block size: nonzero.
        let block = |at: u64| at.checked_div(self.block_size).unwrap_or(0);
        let first = block(off);
        let last = block(end.saturating_sub(1));
        self.map.range(first..=last).map(|(b, c)| (*b, *c))
    }
}

impl BlockDevice for ReplayView {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(off, wide(buf.len()), self.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        // check_range: off + buf.len() lies inside the device.
        let end = off.saturating_add(wide(buf.len()));
        self.inner.read_at(buf, off)?;
        for (blk, copy) in self.replayed_in(off, end) {
            // The block overlaps off..end, so start <= from < to <= end and from..to lies
            // inside off..end, whose length is buf.len(): the steps below never saturate.
            let start = blk.saturating_mul(self.block_size);
            let from = start.max(off);
            let to = start.saturating_add(self.block_size).min(end);
            let in_buf = |at: u64| {
                usize::try_from(at.saturating_sub(off))
                    .unwrap_or(usize::MAX)
                    .min(buf.len())
            };
            let (lo, hi) = (in_buf(from), in_buf(to));
            let dst = buf.get_mut(lo..hi).unwrap_or_default();
            let in_blk = from.saturating_sub(start);
            // The copy lies inside the device (recovery located it there).
            self.inner.read_at(dst, copy.at.saturating_add(in_blk))?;
            if copy.escaped && in_blk < 4 {
                let magic = MAGIC.to_be_bytes();
                let skip = usize::try_from(in_blk).unwrap_or(magic.len());
                for (b, m) in dst.iter_mut().zip(magic.iter().skip(skip)) {
                    *b = *m;
                }
            }
        }
        Ok(())
    }

    /// The source's extents, with every replayed block reported as data.
    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(off, len, self.len())?;
        if len == 0 {
            return Ok(Vec::new());
        }
        // check_range: off + len lies inside the device.
        let end = off.saturating_add(len);
        let replayed: Vec<u64> = self.replayed_in(off, end).map(|(b, _)| b).collect();
        Ok(crate::block::extents_with_patches(
            self.inner.extents(off, len)?,
            &replayed,
            self.block_size,
        ))
    }
}

impl Describe for ReplayView {
    fn info(&self) -> Result<LayerInfo> {
        Ok(LayerInfo {
            format: "ext4 journal replay".into(),
            virtual_size: self.len(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;
    use crate::block::mem::MemDevice;

    #[test]
    fn reads_patch_replayed_blocks_and_unescape() {
        let mut disk = vec![0u8; 8 * 1024];
        for (i, b) in disk.iter_mut().enumerate() {
            *b = (i / 1024) as u8;
        }
        // Block 6 holds the log copy of block 2 (escaped: its magic was zeroed).
        disk[6 * 1024..6 * 1024 + 4].fill(0);
        let mut map = BTreeMap::new();
        map.insert(
            2,
            Copy {
                at: 6 * 1024,
                escaped: true,
            },
        );
        map.insert(
            3,
            Copy {
                at: 7 * 1024,
                escaped: false,
            },
        );
        let v = ReplayView::new(Arc::new(MemDevice(disk)), 1024, map);
        let mut buf = vec![0u8; 3000];
        v.read_at(&mut buf, 1500).unwrap();
        assert!(buf[..548].iter().all(|&b| b == 1));
        assert_eq!(&buf[548..552], &MAGIC.to_be_bytes());
        assert!(buf[552..1572].iter().all(|&b| b == 6));
        assert!(buf[1572..2596].iter().all(|&b| b == 7));
        assert!(buf[2596..].iter().all(|&b| b == 4));
        // A read starting inside the escaped word.
        let mut two = [0u8; 2];
        v.read_at(&mut two, 2048 + 2).unwrap();
        assert_eq!(two, [0x39, 0x98]);
        assert!(v.read_at(&mut two, 8 * 1024 - 1).is_err());
        let ext = v.extents(0, 8 * 1024).unwrap();
        assert_eq!(ext.len(), 1);
        assert_eq!(ext[0].length, 8 * 1024);
    }
}
