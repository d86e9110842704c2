//! The initramfs buffer reader (plain, gzip, zstd and lz4-legacy cpio members) and the
//! module-appending planner on arbitrary bytes: no panic, no unbounded allocation.
#![no_main]

use ferry::fix::initramfs::{add_modules, Outcome};
use ferry::guest::initramfs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = initramfs::list(data);
    let dep = b"kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko\n".to_vec();
    let mut read = |p: &str, _: u64| {
        if p.ends_with("modules.dep") {
            Some(dep.clone())
        } else if p.ends_with(".ko") {
            Some(vec![0u8; 64])
        } else {
            None
        }
    };
    if let Outcome::Appended { data: out, .. } =
        add_modules("/boot/initrd.img-1", data, "/lib/modules/1", &["virtio_blk".into()], &mut read)
    {
        assert!(out.starts_with(data));
        assert!(initramfs::list(&out).is_ok());
    }
});
