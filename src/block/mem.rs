//! A disk held in memory: for tests and fuzz targets, where thousands of mutants should cost
//! no files, and for small synthetic devices.

use super::{check_range, BlockDevice, Extent, ExtentKind, LayerInfo, Result};

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

    fn info(&self) -> Result<LayerInfo> {
        Ok(LayerInfo {
            format: "memory".into(),
            virtual_size: self.len(),
            ..Default::default()
        })
    }
}
