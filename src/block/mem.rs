//! A disk held in memory: for tests and fuzz targets, where thousands of mutants should cost
//! no files, and for small synthetic devices.

use super::{check_range, BlockDevice, Describe, Extent, ExtentKind, LayerInfo, Result};
use crate::bytes::wide;
use std::ops::Range;

/// `[off, off+n)` of a buffer of `len` bytes as an index range, checked as a device read.
fn span(len: usize, off: u64, n: usize) -> Result<Range<usize>> {
    check_range(off, wide(n), wide(len))?;
    // In range of a Vec's length, so both fit a usize.
    let start = usize::try_from(off).unwrap_or(len);
    Ok(start..start.saturating_add(n))
}

pub struct MemDevice(pub Vec<u8>);

impl BlockDevice for MemDevice {
    fn len(&self) -> u64 {
        wide(self.0.len())
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let r = span(self.0.len(), off, buf.len())?;
        buf.copy_from_slice(self.0.get(r).unwrap_or_default());
        Ok(())
    }

    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(off, len, self.len())?;
        Ok(vec![Extent::new(off, len, ExtentKind::Data)])
    }
}

impl Describe for MemDevice {
    fn info(&self) -> Result<LayerInfo> {
        Ok(LayerInfo {
            format: "memory".into(),
            virtual_size: self.len(),
            ..Default::default()
        })
    }
}

/// A writable disk held in memory: for tests and fuzz targets of the filesystem writers.
pub struct MemDeviceRw(parking_lot::Mutex<Vec<u8>>);

impl MemDeviceRw {
    pub fn new(data: Vec<u8>) -> Self {
        MemDeviceRw(parking_lot::Mutex::new(data))
    }

    /// A copy of the bytes as they are now.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().clone()
    }
}

impl BlockDevice for MemDeviceRw {
    fn len(&self) -> u64 {
        wide(self.0.lock().len())
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let d = self.0.lock();
        let r = span(d.len(), off, buf.len())?;
        buf.copy_from_slice(d.get(r).unwrap_or_default());
        Ok(())
    }

    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        let mut d = self.0.lock();
        let r = span(d.len(), off, buf.len())?;
        d.get_mut(r).unwrap_or_default().copy_from_slice(buf);
        Ok(())
    }

    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(off, len, self.len())?;
        Ok(vec![Extent::new(off, len, ExtentKind::Data)])
    }
}

impl Describe for MemDeviceRw {
    fn info(&self) -> Result<LayerInfo> {
        Ok(LayerInfo {
            format: "memory".into(),
            virtual_size: self.len(),
            ..Default::default()
        })
    }
}
