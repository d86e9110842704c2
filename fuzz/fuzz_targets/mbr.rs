//! MBR and EBR chains (and anything else `volume::discover` finds) on arbitrary disk bytes.
#![no_main]

use ferry::block::BlockDevice;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

use ferry::block::mem::MemDevice as Mem;

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
