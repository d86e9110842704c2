//! Reads a whole image sequentially through the library in 1 MiB reads and prints the throughput:
//! the "library" half of contrib/bench/read.sh.
// A benchmark helper reading a test image: the library's guard-rail lints are not for it.
#![allow(clippy::as_conversions, clippy::arithmetic_side_effects)]

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: read_seq IMAGE [CHUNK_BYTES (0 = open only)]")?;
    let chunk: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1 << 20);
    let t = Instant::now();
    let dev = ferry::block::open(std::path::Path::new(&path))?;
    let len = dev.len();
    if chunk == 0 {
        // Open only: how long opening the image (and its chain) takes.
        println!(
            "{path}: opened {len} bytes in {:.3} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        return Ok(());
    }
    let mut buf = vec![0u8; chunk];
    let mut off = 0u64;
    let mut sum = 0u64;
    while off < len {
        let n = (chunk as u64).min(len - off) as usize;
        dev.read_at(&mut buf[..n], off)?;
        sum = sum.wrapping_add(u64::from(buf[n / 2]));
        off += n as u64;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{path}: {len} bytes in {s:.3} s = {:.0} MiB/s (checksum byte {sum})",
        len as f64 / s / 1048576.0
    );
    Ok(())
}
