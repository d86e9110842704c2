//! The zlib stream that ferry's own calls into zlib's C code start from (qcow2's deflate,
//! gzip's indexed inflate), with the allocator functions zlib calls for its state.
#![allow(unsafe_code)] // allocator callbacks handed to zlib; each says why it is sound.

use libz_sys as z;
use std::ffi::c_void;
use std::os::raw::c_uint;

// zalloc/zfree are non-nullable in libz-sys's binding, so zlib's own defaults (Z_NULL)
// cannot be asked for.
unsafe extern "C" fn zalloc(_: *mut c_void, items: c_uint, size: c_uint) -> *mut c_void {
    // c_uint to usize is widening on every target ferry builds for; null is Z_MEM_ERROR.
    let (Ok(items), Ok(size)) = (usize::try_from(items), usize::try_from(size)) else {
        return std::ptr::null_mut();
    };
    // SAFETY: calloc checks the multiplication for overflow and returns null on failure,
    // which zlib reports as Z_MEM_ERROR.
    unsafe { libc::calloc(items, size) }
}

unsafe extern "C" fn zfree(_: *mut c_void, p: *mut c_void) {
    // SAFETY: `p` came from `zalloc` above (zlib frees only what it allocated).
    unsafe { libc::free(p) }
}

/// A blank stream, boxed: zlib's state points back at its `z_stream` and refuses one that
/// moved. Ready for `deflateInit2_` or `inflateInit2_`.
pub(crate) fn blank() -> Box<z::z_stream> {
    Box::new(z::z_stream {
        next_in: std::ptr::null_mut(),
        avail_in: 0,
        total_in: 0,
        next_out: std::ptr::null_mut(),
        avail_out: 0,
        total_out: 0,
        msg: std::ptr::null_mut(),
        state: std::ptr::null_mut(),
        zalloc,
        zfree,
        opaque: std::ptr::null_mut(),
        data_type: 0,
        adler: 0,
        reserved: 0,
    })
}
