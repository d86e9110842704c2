//! A sparse / streamOptimized / SEsparse file from arbitrary bytes: header parse, then open,
//! a bounded read and the extent map. Must never panic, hang or allocate without bound.
#![no_main]

use ferry::block::fuzzing::VmdkSparseHeader as SparseHeader;
use ferry::block::fuzzing::Vmdk;
use ferry::block::{BlockDevice, Describe};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = SparseHeader::parse(data, Path::new("fuzz.vmdk"));
    let path = std::env::temp_dir().join(format!("ferry-fuzz-vmdk-{}.vmdk", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(dev) = Vmdk::open_path(&path) {
        let mut buf = vec![0u8; 1 << 16];
        let n = dev.len().min(4 << 20);
        let mut off = 0;
        while off < n {
            let k = (n - off).min(buf.len() as u64) as usize;
            if dev.read_at(&mut buf[..k], off).is_err() {
                break;
            }
            off += k as u64;
        }
        let _ = dev.extents(0, dev.len().min(1 << 40));
        let _ = dev.info();
    }
    let _ = std::fs::remove_file(&path);
});
