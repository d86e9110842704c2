//! qcow2 header and header-extension parsing on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferry::block::fuzzing::Qcow2Header::parse(data, std::path::Path::new("fuzz.qcow2"), data.len() as u64);
});
