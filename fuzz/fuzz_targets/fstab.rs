//! fstab parsing and source classification on arbitrary bytes: no panic, the entry cap
//! holds, and every entry's source classifies.
#![no_main]

use ferry::guest::fstab::{parse, Spec, MAX_ENTRIES, MAX_WARNINGS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = parse(data);
    assert!(f.entries.len() <= MAX_ENTRIES);
    assert!(f.warnings.len() <= MAX_WARNINGS + 1);
    for e in &f.entries {
        let _ = (e.is_local(), e.is_network(), e.is_virtual(), e.is_bind());
        let _ = e.source();
    }
    let _ = Spec::parse(&String::from_utf8_lossy(data));
});
