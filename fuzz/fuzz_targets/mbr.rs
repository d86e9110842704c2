//! MBR and EBR chains (and anything else `volume::discover` finds) on arbitrary disk bytes.
#![no_main]

use ferry::block::{self, BlockDevice, Extent, ExtentKind, LayerInfo};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

struct Mem(Vec<u8>);

impl BlockDevice for Mem {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> block::Result<()> {
        block::check_range(off, buf.len() as u64, self.len())?;
        let o = off as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
    fn extents(&self, off: u64, len: u64) -> block::Result<Vec<Extent>> {
        Ok(vec![Extent::new(off, len, ExtentKind::Data)])
    }
    fn info(&self) -> block::Result<LayerInfo> {
        Ok(LayerInfo::default())
    }
}

fuzz_target!(|data: &[u8]| {
    // The input is sector 0 onwards; EBRs the chain points to land in it or past the end.
    let d: Arc<dyn BlockDevice> = Arc::new(Mem(data.to_vec()));
    if let Ok(vols) = ferry::volume::discover(&[d]) {
        for v in vols {
            if let Some(dev) = v.dev {
                let mut b = vec![0u8; dev.len().min(512) as usize];
                let _ = dev.read_at(&mut b, 0);
            }
        }
    }
});
