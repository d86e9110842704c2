//! The release-file parsers (os-release, redhat-release, SuSE-release, lsb-release, Gentoo,
//! version-only files) on arbitrary text: no panic.
#![no_main]

use ferry::guest::inspect::release;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t = String::from_utf8_lossy(data);
    let _ = release::os_release(&t);
    let _ = release::redhat_release(&t);
    let _ = release::suse_release(&t);
    let _ = release::lsb_release(&t);
    let _ = release::gentoo_release(&t);
    let _ = release::version_file("debian", &t);
});
