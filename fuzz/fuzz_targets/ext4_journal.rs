//! jbd2 journal recovery over arbitrary bytes: the input is a journal (superblock at byte 0,
//! block size taken from it when it is 1 KiB or 4 KiB), zero-padded on a 64 MiB device so that
//! the kernel's minimum journal length fits and replayed block numbers land inside the device.
//! Recovery runs its three passes; every replayed block is then read through the view. Seed it
//! with journals dumped from images that need recovery (`debugfs -R "dump <8> FILE"`, trimmed
//! of the trailing zeros).
#![no_main]

use ferry::block::{check_range, BlockDevice, Describe, Extent, ExtentKind, LayerInfo, Result};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

const DEVICE_LEN: u64 = 64 << 20;

/// The input followed by zeros, without allocating the zeros.
struct Padded(Vec<u8>);

impl BlockDevice for Padded {
    fn len(&self) -> u64 {
        DEVICE_LEN
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(off, buf.len() as u64, DEVICE_LEN)?;
        buf.fill(0);
        let off = off as usize;
        if off < self.0.len() {
            let n = buf.len().min(self.0.len() - off);
            buf[..n].copy_from_slice(&self.0[off..off + n]);
        }
        Ok(())
    }

    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(off, len, DEVICE_LEN)?;
        Ok(vec![Extent::new(off, len, ExtentKind::Data)])
    }
}

impl Describe for Padded {
    fn info(&self) -> Result<LayerInfo> {
        Ok(LayerInfo::default())
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > (1 << 20) {
        return;
    }
    let bs = match data.get(12..16).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) {
        Some(4096) => 4096,
        _ => 1024,
    };
    let dev = Arc::new(Padded(data.to_vec()));
    let Ok(Some((view, info))) = ferry::fs::ext4::journal::replay_device(dev, bs) else {
        return;
    };
    assert_eq!(info.blocks_mapped, view.replayed_blocks());
    let mut buf = vec![0u8; bs as usize + 7];
    let blocks: Vec<u64> = view.blocks().collect();
    for blk in blocks {
        assert!(view.copy_of(blk).is_some());
        // Straddling the block's start and end, to exercise partial and escaped reads.
        let at = (blk * u64::from(bs)).saturating_sub(3);
        let n = buf.len().min((DEVICE_LEN - at) as usize);
        view.read_at(&mut buf[..n], at).unwrap();
    }
    let _ = view.extents(0, DEVICE_LEN).unwrap();
});
