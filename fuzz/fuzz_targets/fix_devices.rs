//! The device-name rewriter and the text edits on arbitrary file contents: no panic, and
//! each is idempotent (a second pass changes nothing), as the engine requires.
#![no_main]

use ferry::fix::devices::{rewrite, Format};
use ferry::fix::facts::{DeviceEntry, DeviceMap, DiskBus};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let map = DeviceMap {
        devices: vec![DeviceEntry {
            device: "/dev/sda1".into(),
            stable: "UUID=0a5e2b3c".into(),
            fstype: None,
            hard_coded: true,
        }],
        disks: vec![],
    };
    for format in [Format::Fstab, Format::Crypttab, Format::Cmdline, Format::DeviceMap] {
        let once = rewrite(data, format, &map, DiskBus::VirtioBlk, "fuzz").data;
        let twice = rewrite(&once, format, &map, DiskBus::VirtioBlk, "fuzz").data;
        assert_eq!(once, twice, "{format:?} is not idempotent");
    }
    let line = [b"virtio_blk".to_vec()];
    let once = ferry::fix::action::ensure_lines(data, &line, None, None);
    assert_eq!(ferry::fix::action::ensure_lines(&once, &line, None, None), once);
});
