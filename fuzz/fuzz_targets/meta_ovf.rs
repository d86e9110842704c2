//! OVF descriptors and OVA manifests on arbitrary bytes: no panic, any error names a line
//! of the input, and what parses also makes a domain XML.
#![no_main]

use ferry::meta::{libvirt, ova, ovf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    match ovf::parse("fuzz.ovf", data) {
        Ok(o) => {
            assert_eq!(
                o.disk_files.len(),
                o.source
                    .disks
                    .iter()
                    .filter(|d| d.device == ferry::meta::DeviceKind::Disk)
                    .count()
            );
            assert!(o.disk_files.iter().all(|&f| f < o.files.len()));
            let _ = libvirt::write_domain(&o.source, &libvirt::Target::default());
        }
        Err(e) => assert!(e.line <= lines, "{e}"),
    }
    if let Err(e) = ova::parse_manifest("fuzz.mf", data) {
        assert!(e.line <= lines, "{e}");
    }
});
