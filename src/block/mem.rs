//! A disk held in memory: for tests and fuzz targets, where thousands of mutants should cost
//! no files, and for small synthetic devices.

use super::{check_range, BlockDevice, Describe, Extent, ExtentKind, LayerInfo, Result};

pub struct MemDevice(pub Vec<u8>);

impl BlockDevice for MemDevice {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(off, buf.len() as u64, self.len())?;
        let o = off as usize; // in range: checked against a Vec's length
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
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
        self.0.lock().len() as u64
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let d = self.0.lock();
        check_range(off, buf.len() as u64, d.len() as u64)?;
        let o = off as usize; // in range: checked against a Vec's length
        buf.copy_from_slice(&d[o..o + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        let mut d = self.0.lock();
        check_range(off, buf.len() as u64, d.len() as u64)?;
        let o = off as usize; // in range: checked against a Vec's length
        d[o..o + buf.len()].copy_from_slice(buf);
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
