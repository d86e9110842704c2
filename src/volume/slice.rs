//! A byte range of another device (a partition, a PV's data area) as a device of its own.

use crate::block::{check_range, BlockDevice, Describe, Error, Extent, LayerInfo, Result};
use crate::bytes::wide;
use std::sync::Arc;

pub struct Slice {
    dev: Arc<dyn BlockDevice>,
    start: u64,
    len: u64,
}

impl Slice {
    /// `[start, start+len)` of `dev`; errors if the range does not lie inside it.
    pub fn new(dev: Arc<dyn BlockDevice>, start: u64, len: u64) -> Result<Self> {
        check_range(start, len, dev.len())?;
        Ok(Slice { dev, start, len })
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    /// The device offset of `[off, off+len)`, once that range lies inside the slice.
    fn at(&self, off: u64, len: u64) -> Result<u64> {
        check_range(off, len, self.len)?;
        // `new` checked that start + self.len fits the device: no overflow.
        self.start.checked_add(off).ok_or(Error::OutOfRange {
            offset: off,
            len,
            size: self.len,
        })
    }
}

impl BlockDevice for Slice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let at = self.at(off, wide(buf.len()))?;
        self.dev.read_at(buf, at)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        let at = self.at(off, wide(buf.len()))?;
        self.dev.write_at(buf, at)
    }

    fn flush(&self) -> Result<()> {
        self.dev.flush()
    }

    fn prefetch(&self, off: u64, len: u64) {
        // Clipped to the slice, so the hint never names the device beyond it.
        let len = len.min(self.len.saturating_sub(off));
        if let Ok(at) = self.at(off, len) {
            self.dev.prefetch(at, len);
        }
    }

    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        let at = self.at(off, len)?;
        let mut v = self.dev.extents(at, len)?;
        for e in &mut v {
            // The device's extents of [at, at+len) start at or after self.start.
            e.offset = e.offset.saturating_sub(self.start);
        }
        Ok(v)
    }
}

impl Describe for Slice {
    fn info(&self) -> Result<LayerInfo> {
        let mut i = self.dev.info()?;
        i.virtual_size = self.len;
        i.specific
            .push(("slice_offset".into(), serde_json::json!(self.start)));
        Ok(i)
    }
}

/// Reads `n` bytes at `off` of `dev`, or None where the device is too short (probing a small
/// volume for a signature far in is not an error).
pub fn read_opt(
    dev: &dyn BlockDevice,
    off: u64,
    n: usize,
) -> std::result::Result<Option<Vec<u8>>, Error> {
    if off.checked_add(wide(n)).is_none_or(|e| e > dev.len()) {
        return Ok(None);
    }
    let mut b = vec![0u8; n];
    dev.read_at(&mut b, off)?;
    Ok(Some(b))
}
