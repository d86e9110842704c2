//! The filesystem as XFS log recovery would leave it, without writing anything: a
//! `BlockDevice` over the source in which every 512-byte sector (basic block, the unit of the
//! log's buffer addresses, xfs_daddr_t) that recovery rewrote reads as its replayed bytes.
//! Unlike jbd2, XFS logs byte ranges of buffers (128-byte chunks) and inode cores that need
//! converting, so the replayed sectors are held in memory, bounded by `MAX_OVERLAY_BYTES`.

use crate::block::{check_range, BlockDevice, Describe, Error, Extent, LayerInfo, Result};
use crate::bytes::wide;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bytes a sector (basic block) holds.
pub const BB: u64 = 512;
/// A sector as a slice length.
const BB_LEN: usize = 512;
/// Most bytes of replayed sectors kept in memory. Checkpoints are bounded by the CIL's space
/// limit (at most a few tens of MiB of metadata); a log whose replay would need more is
/// refused and the tree is shown as on disk.
pub const MAX_OVERLAY_BYTES: usize = 256 << 20;

/// Replayed sectors by their 512-byte address.
#[derive(Default)]
pub struct Sectors {
    map: BTreeMap<u64, Box<[u8]>>,
}

impl Sectors {
    pub fn bytes(&self) -> usize {
        self.map.len().saturating_mul(BB_LEN)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Reads `count` sectors from `daddr`: replayed ones from memory, the rest from `dev`.
    pub fn read(&self, dev: &dyn BlockDevice, daddr: u64, count: u64) -> Result<Vec<u8>> {
        let bytes = count.saturating_mul(BB);
        let off = daddr.saturating_mul(BB);
        check_range(off, bytes, dev.len())?;
        // Callers read one buffer, at most `recover::MAX_BUF_BBS` sectors.
        let len = usize::try_from(bytes).map_err(|_| Error::OutOfRange {
            offset: off,
            len: bytes,
            size: dev.len(),
        })?;
        let mut buf = vec![0u8; len];
        dev.read_at(&mut buf, off)?;
        self.patch(&mut buf, off);
        Ok(buf)
    }

    /// Overwrites sectors from `daddr` with `data` (whole sectors); false when that would
    /// pass `MAX_OVERLAY_BYTES` (or the last sector address).
    pub fn write(&mut self, daddr: u64, data: &[u8]) -> bool {
        for (i, s) in data.chunks(BB_LEN).enumerate() {
            let Some(at) = daddr.checked_add(wide(i)) else {
                return false;
            };
            // A chunk is at most a sector.
            if let Some(e) = self.map.get_mut(&at) {
                if let Some(e) = e.get_mut(..s.len()) {
                    e.copy_from_slice(s);
                }
                continue;
            }
            if self.bytes().saturating_add(BB_LEN) > MAX_OVERLAY_BYTES {
                return false;
            }
            let mut sector = vec![0u8; BB_LEN];
            if let Some(d) = sector.get_mut(..s.len()) {
                d.copy_from_slice(s);
            }
            self.map.insert(at, sector.into());
        }
        true
    }

    /// The replayed sectors in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.map.iter().map(|(s, d)| (*s, &d[..]))
    }

    /// Lays the replayed sectors over `buf`, which holds the device's bytes from `off`.
    pub fn patch(&self, buf: &mut [u8], off: u64) {
        if buf.is_empty() {
            return;
        }
        // Callers checked that off..end lies inside the device.
        let end = off.saturating_add(wide(buf.len()));
        let at = |x: u64, base: u64| usize::try_from(x.saturating_sub(base)).unwrap_or(usize::MAX);
        for (&s, data) in self.map.range(off / BB..end.div_ceil(BB)) {
            let start = s.saturating_mul(BB);
            let from = start.max(off);
            let to = start.saturating_add(BB).min(end);
            // from..to lies inside both the sector and off..end.
            let dst = buf.get_mut(at(from, off)..at(to, off));
            let src = data.get(at(from, start)..at(to, start));
            if let (Some(dst), Some(src)) = (dst, src) {
                dst.copy_from_slice(src);
            }
        }
    }
}

/// The source device with the replayed sectors laid over it.
pub struct ReplayView {
    inner: Arc<dyn BlockDevice>,
    sectors: Sectors,
}

impl ReplayView {
    pub fn new(inner: Arc<dyn BlockDevice>, sectors: Sectors) -> Self {
        ReplayView { inner, sectors }
    }

    /// Sectors whose content comes from log recovery.
    pub fn replayed_sectors(&self) -> usize {
        self.sectors.len()
    }
}

impl BlockDevice for ReplayView {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(off, wide(buf.len()), self.len())?;
        self.inner.read_at(buf, off)?;
        self.sectors.patch(buf, off);
        Ok(())
    }

    /// Replayed sectors are in memory already; the rest comes from the source.
    fn prefetch(&self, off: u64, len: u64) {
        self.inner.prefetch(off, len);
    }

    /// The source's extents, with every replayed sector reported as data.
    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(off, len, self.len())?;
        if len == 0 {
            return Ok(Vec::new());
        }
        // check_range: no overflow.
        let end = off.saturating_add(len);
        let replayed: Vec<u64> = self
            .sectors
            .map
            .range(off / BB..end.div_ceil(BB))
            .map(|(s, _)| *s)
            .collect();
        Ok(crate::block::extents_with_patches(
            self.inner.extents(off, len)?,
            &replayed,
            BB,
        ))
    }
}

impl Describe for ReplayView {
    fn info(&self) -> Result<LayerInfo> {
        Ok(LayerInfo {
            format: "xfs log recovery".into(),
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
    fn replayed_sectors_read_through_and_stay_bounded() {
        let disk: Vec<u8> = (0..8 * 512).map(|i| (i / 512) as u8).collect();
        let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice(disk));
        let mut s = Sectors::default();
        assert!(s.write(2, &[0xaa; 1024]));
        assert!(s.write(3, &[0xbb; 512]));
        assert_eq!(s.len(), 2);
        let b = s.read(dev.as_ref(), 1, 4).unwrap();
        assert!(b[..512].iter().all(|&x| x == 1));
        assert!(b[512..1024].iter().all(|&x| x == 0xaa));
        assert!(b[1024..1536].iter().all(|&x| x == 0xbb));
        assert!(b[1536..].iter().all(|&x| x == 4));
        let v = ReplayView::new(dev, s);
        let mut odd = [0u8; 10];
        v.read_at(&mut odd, 3 * 512 - 5).unwrap();
        assert_eq!(
            odd,
            [0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb]
        );
        assert!(v.read_at(&mut odd, 8 * 512 - 5).is_err());
        let ext = v.extents(0, 8 * 512).unwrap();
        assert_eq!(ext.iter().map(|e| e.length).sum::<u64>(), 8 * 512);
    }
}
