//! The ELF header reader on arbitrary bytes, with and without a file size: no panic, and a
//! header it accepts with a size has its program header table inside that size.
#![no_main]

use ferry::guest::inspect::elf::Header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data, None).map(|h| h.arch());
    let size = data.len() as u64;
    if let Ok(h) = Header::parse(data, Some(size)) {
        let _ = h.arch();
        if h.phnum > 0 {
            let end = u64::from(h.phnum) * u64::from(h.phentsize) + h.phoff;
            assert!(end <= size);
        }
    }
});
