//! Xen xl/xm cfg and libvirt domain XML parsing on arbitrary bytes: no panic, errors point
//! inside the input, and whatever parses can be written back as a KVM domain.
#![no_main]

use ferry::meta::{libvirt, xen};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    for r in [xen::parse("fuzz.cfg", data), libvirt::parse("fuzz.xml", data)] {
        match r {
            Ok(s) => {
                let _ = libvirt::write_domain(&s, &libvirt::Target::default());
            }
            Err(e) => assert!(e.line <= lines, "{e}"),
        }
    }
});
