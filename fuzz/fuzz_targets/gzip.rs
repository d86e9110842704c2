//! A gzip-stored disk (`ovf:compression="gzip"`) from arbitrary bytes: the indexing pass over
//! the stream, then reads at offsets spread over the output, which resume inflating at the
//! access points. The bytes live in a memfd, so no disk I/O.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::os::fd::FromRawFd;

fuzz_target!(|data: &[u8]| {
    // Start with the gzip magic, deflate method and no flags, so the fuzzer spends its time
    // in the deflate data and the trailer.
    let mut img = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03".to_vec();
    img.extend_from_slice(data);
    // SAFETY: memfd_create with a NUL-terminated name; the fd is owned by `f` from here on.
    let fd = unsafe { libc::memfd_create(c"fuzz".as_ptr(), 0) };
    assert!(fd >= 0);
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(&img).unwrap();
    let path = format!("/proc/self/fd/{fd}");
    let Ok(dev) = ferry::block::open_member(
        std::path::Path::new(&path),
        "fuzz",
        0,
        img.len() as u64,
        Some(ferry::block::Format::Raw),
        true,
    ) else {
        return;
    };
    let len = dev.len();
    let mut buf = vec![0u8; 1 << 16];
    for i in (0..8u64).rev() {
        let off = (len / 8).saturating_mul(i);
        let n = (buf.len() as u64).min(len - off) as usize;
        let _ = dev.read_at(&mut buf[..n], off);
    }
});
