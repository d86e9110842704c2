//! Compressed qcow2 clusters in the zlib type, made by zlib's own C code with qemu's parameters
//! (`qcow2_compress` in qemu's block/qcow2-threads.c: level 6, raw deflate with a 4 KiB window,
//! memLevel 9, default strategy, into a buffer one byte short of the cluster).
//!
//! Why not flate2 with zlib-rs, which ferry uses to inflate: deflate output is not unique, and
//! zlib-rs (a zlib-ng port) neither matches zlib's match finder nor lets a caller choose memLevel
//! (flate2 fixes it at 8). Its clusters came out up to 0.4% larger in total than qemu-img's on
//! text, and a cluster qemu fits in `cluster - 1` bytes was sometimes stored plain. With the same
//! C code and parameters, `ferry convert -c` compresses exactly the clusters qemu-img does, to the
//! same lengths, so the image is never larger than qemu-img's.
#![allow(unsafe_code)] // FFI into zlib; every call is on a stream this module owns, see `Stream`.

use libz_sys as z;
use std::cell::RefCell;
use std::os::raw::{c_int, c_uint};

/// qemu's parameters (block/qcow2-threads.c, `qcow2_zlib_compress`).
const LEVEL: c_int = 6;
/// Negative: raw deflate without the zlib header; 12: the 4 KiB window qcow2 readers expect.
const WINDOW_BITS: c_int = -12;
const MEM_LEVEL: c_int = 9;

/// A deflate stream initialised once per thread and reset per cluster (`deflateReset` gives the
/// same output as a fresh `deflateInit2`, without allocating ~400 KiB of state each time).
struct Stream {
    /// Boxed: zlib's state points back at its `z_stream` and refuses a stream that moved.
    strm: Box<z::z_stream>,
}

impl Stream {
    fn new() -> Option<Stream> {
        let mut strm = crate::block::zstream::blank();
        let size = c_int::try_from(std::mem::size_of::<z::z_stream>()).ok()?;
        // SAFETY: `strm` is a valid, boxed z_stream with allocator functions; zlibVersion()
        // returns a static string, and the size is that of the struct zlib was built against.
        let rc = unsafe {
            z::deflateInit2_(
                &mut *strm,
                LEVEL,
                z::Z_DEFLATED,
                WINDOW_BITS,
                MEM_LEVEL,
                z::Z_DEFAULT_STRATEGY,
                z::zlibVersion(),
                size,
            )
        };
        (rc == z::Z_OK).then_some(Stream { strm })
    }

    /// Deflates all of `data` into at most `limit` bytes; None when it does not fit.
    fn compress(&mut self, data: &[u8], limit: usize) -> Option<Vec<u8>> {
        let avail_in = c_uint::try_from(data.len()).ok()?;
        let avail_out = c_uint::try_from(limit).ok()?;
        let mut out = vec![0u8; limit];
        let s = &mut *self.strm;
        // SAFETY: the stream was initialised by `new`; zlib only reads `avail_in` bytes from
        // `next_in` (it never writes through it, the binding's `*mut` notwithstanding) and
        // writes at most `avail_out` bytes to `next_out`, both live for this call; the
        // pointers are cleared before returning so none outlives its buffer.
        let rc = unsafe {
            if z::deflateReset(s) != z::Z_OK {
                return None;
            }
            s.next_in = data.as_ptr().cast_mut();
            s.avail_in = avail_in;
            s.next_out = out.as_mut_ptr();
            s.avail_out = avail_out;
            let rc = z::deflate(s, z::Z_FINISH);
            s.next_in = std::ptr::null_mut();
            s.next_out = std::ptr::null_mut();
            rc
        };
        // Z_OK or Z_BUF_ERROR with Z_FINISH: the output did not fit (qemu's -ENOMEM).
        if rc != z::Z_STREAM_END {
            return None;
        }
        let used = limit.checked_sub(usize::try_from(s.avail_out).ok()?)?;
        out.truncate(used);
        Some(out)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: initialised by `new` and not yet ended; deflateEnd frees zlib's state.
        unsafe {
            z::deflateEnd(&mut *self.strm);
        }
    }
}

thread_local! {
    static STREAM: RefCell<Option<Stream>> = const { RefCell::new(None) };
}

/// `data` deflated as qemu deflates a cluster, or None when it does not fit in `limit` bytes
/// (the caller then stores the cluster plain) or zlib cannot allocate its state.
pub(super) fn compress(data: &[u8], limit: usize) -> Option<Vec<u8>> {
    STREAM.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(Stream::new()?);
        }
        cell.as_mut()?.compress(data, limit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress, Status};

    fn inflate(c: &[u8], len: usize) -> Vec<u8> {
        let mut d = Decompress::new_with_window_bits(false, 12);
        let mut out = Vec::with_capacity(len);
        let st = d
            .decompress_vec(c, &mut out, FlushDecompress::Finish)
            .expect("inflate");
        assert_eq!(st, Status::StreamEnd);
        out
    }

    #[test]
    fn round_trips_and_reuses_the_stream() {
        let text: Vec<u8> = b"qcow2 cluster "
            .iter()
            .copied()
            .cycle()
            .take(65536)
            .collect();
        for _ in 0..3 {
            let c = compress(&text, text.len() - 1).expect("text compresses");
            assert!(c.len() < 1024, "{} bytes", c.len());
            assert_eq!(inflate(&c, text.len()), text);
        }
    }

    #[test]
    fn data_that_does_not_fit_is_refused() {
        // xorshift noise: deflate cannot shrink it, so it cannot fit one byte short.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        assert!(compress(&noise, noise.len() - 1).is_none());
        // The stream is usable after a refusal.
        let zeros = vec![0u8; 65536];
        let c = compress(&zeros, zeros.len() - 1).expect("zeros compress");
        assert_eq!(inflate(&c, zeros.len()), zeros);
    }
}
