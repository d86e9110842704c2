//! GPT headers and entry arrays on arbitrary bytes placed after a protective MBR, in 512- and
//! 4096-byte sector layouts (the first input byte picks which).
#![no_main]

use ferry::block::BlockDevice;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

use ferry::block::mem::MemDevice as Mem;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let ss = if pick & 1 == 0 { 512 } else { 4096 };
    let mut disk = vec![0u8; ss];
    disk[446 + 4] = 0xee;
    disk[446 + 8] = 1;
    disk[446 + 12..446 + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk.extend_from_slice(rest);
    let d: Arc<dyn BlockDevice> = Arc::new(Mem(disk));
    if let Ok(vols) = ferry::volume::discover(&[d]) {
        for v in vols {
            if let Some(dev) = v.dev {
                let mut b = vec![0u8; dev.len().min(512) as usize];
                let _ = dev.read_at(&mut b, 0);
            }
        }
    }
});
