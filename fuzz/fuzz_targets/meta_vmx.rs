//! VMX parsing on arbitrary bytes: no panic, and any error names a line of the input.
#![no_main]

use ferry::meta::{libvirt, vmx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    match vmx::parse("fuzz.vmx", data, &|name| Ok(Some(name.to_string()))) {
        Ok(s) => {
            let _ = libvirt::write_domain(&s, &libvirt::Target::default());
        }
        Err(e) => assert!(e.line <= lines, "{e}"),
    }
});
