//! A whole qcow2 image from arbitrary bytes: open (header, L1), then reads and extents that walk
//! the L2 tables and inflate compressed clusters. The bytes live in a memfd, so no disk I/O.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::os::fd::FromRawFd;

fuzz_target!(|data: &[u8]| {
    // Make the input look like qcow2 so the fuzzer spends its time past the magic check.
    let mut img = b"QFI\xfb".to_vec();
    img.extend_from_slice(data);
    // SAFETY: memfd_create with a NUL-terminated name; the fd is owned by `f` from here on.
    let fd = unsafe { libc::memfd_create(c"fuzz".as_ptr(), 0) };
    assert!(fd >= 0);
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(&img).unwrap();
    let path = format!("/proc/self/fd/{fd}");
    let Ok(dev) = ferry::block::open_as(std::path::Path::new(&path), Some(ferry::block::Format::Qcow2)) else {
        return;
    };
    let len = dev.len();
    let mut buf = vec![0u8; 1 << 16];
    for i in 0..8u64 {
        let off = (len / 8).saturating_mul(i);
        let n = (buf.len() as u64).min(len - off) as usize;
        let _ = dev.read_at(&mut buf[..n], off);
    }
    let _ = dev.extents(0, len.min(1 << 30));
});
