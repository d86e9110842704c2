//! The descriptor parser on arbitrary text: must return Ok or Err, never panic.
#![no_main]

use ferry::block::fuzzing::VmdkDescriptor as Descriptor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Descriptor::parse(data);
});
