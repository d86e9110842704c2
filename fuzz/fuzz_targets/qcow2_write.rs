//! The qcow2 writer over arbitrary bytes: open read-write (header, L1, refcount table), then
//! writes that allocate clusters, grow refcount blocks and copy-on-write, reads and extents.
//! The image lives in a memfd, so no disk I/O and no leftovers.
#![no_main]

use ferry::block::Qcow2Writer;
use ferry::block::BlockDevice;
use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::os::fd::FromRawFd;

fuzz_target!(|data: &[u8]| {
    let mut img = b"QFI\xfb".to_vec();
    img.extend_from_slice(data);
    // SAFETY: memfd_create with a NUL-terminated name; the fd is owned by `f` from here on.
    let fd = unsafe { libc::memfd_create(c"fuzzw".as_ptr(), 0) };
    assert!(fd >= 0);
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(&img).unwrap();
    let path = format!("/proc/self/fd/{fd}");
    let Ok(w) = Qcow2Writer::open(std::path::Path::new(&path)) else {
        return;
    };
    let len = w.len();
    if len == 0 {
        return;
    }
    let payload = vec![0x5au8; 70_000];
    let zeros = vec![0u8; 65_536];
    for i in 0..4u64 {
        let off = (len / 4).saturating_mul(i).saturating_add(i * 777) % len;
        let n = (payload.len() as u64).min(len - off) as usize;
        let _ = w.write_at(&payload[..n], off);
        let n = (zeros.len() as u64).min(len - off) as usize;
        let _ = w.write_at(&zeros[..n], off);
    }
    let mut buf = vec![0u8; 1 << 16];
    let n = (buf.len() as u64).min(len) as usize;
    let _ = w.read_at(&mut buf[..n], 0);
    let _ = w.extents(0, len.min(1 << 30));
});
