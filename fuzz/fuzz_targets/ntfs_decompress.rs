//! The three NTFS decompressors on arbitrary bytes: LZNT1 compression units, and the XPRESS
//! Huffman and LZX chunks of WOF files. The first two bytes choose the decoder and the output
//! size (up to 64 KiB); the rest is the compressed input. No panic, no hang, no read or write
//! outside the buffers.
#![no_main]

use ferry::fs::ntfs::{lznt1, lzx, xpress};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [kind, size, src @ ..] = data else {
        return;
    };
    let mut dst = vec![0u8; (usize::from(*size) + 1) * 256];
    let lzx_len = dst.len().min(32768);
    let _ = match kind % 3 {
        0 => lznt1::decompress(src, &mut dst),
        1 => xpress::decompress(src, &mut dst),
        _ => lzx::decompress(src, &mut dst[..lzx_len]),
    };
});
