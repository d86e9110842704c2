//! The LVM2 metadata text parser and the VG model on arbitrary text: Ok or Err, never a panic,
//! a hang or a stack overflow.
#![no_main]

use ferry::volume::lvm::{metadata, vgmeta::VgMeta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = metadata::parse(data) {
        let _ = VgMeta::from_tree(&tree);
    }
});
