//! A byte range of another device (a partition, a PV's data area) as a device of its own.

use crate::block::{check_range, BlockDevice, Describe, Error, Extent, LayerInfo, Result};
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
}

impl BlockDevice for Slice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(off, buf.len() as u64, self.len)?;
        self.dev.read_at(buf, self.start + off)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        check_range(off, buf.len() as u64, self.len)?;
        self.dev.write_at(buf, self.start + off)
    }

    fn flush(&self) -> Result<()> {
        self.dev.flush()
    }

    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(off, len, self.len)?;
        let mut v = self.dev.extents(self.start + off, len)?;
        for e in &mut v {
            e.offset -= self.start;
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
    if off.checked_add(n as u64).is_none_or(|e| e > dev.len()) {
        return Ok(None);
    }
    let mut b = vec![0u8; n];
    dev.read_at(&mut b, off)?;
    Ok(Some(b))
}
