//! streamOptimized extents ("Virtual Disk Format 5.0", section "Stream-Optimized Compressed
//! Sparse Extents"): grains are zlib streams (RFC 1950) each preceded by a 12-byte grain marker
//! {lba u64, size u32}; metadata is written after the data, so the header's gdOffset may be
//! GD_AT_END and the real header is the footer copy near the end of the file.

use super::sparse::{SparseHeader, GD_AT_END, HEADER_LEN};
use crate::block::error::{Error, Result};
use crate::block::file::ImageFile;
use crate::bytes::{le32, le64, wide};
use flate2::{Decompress, FlushDecompress, Status};
use std::cell::RefCell;

/// Metadata marker types (section "Markers").
pub(crate) const MARKER_EOS: u32 = 0;
pub(crate) const MARKER_FOOTER: u32 = 3;
/// A grain marker: lba (u64) and size (u32) of the compressed data that follows.
pub(crate) const GRAIN_MARKER_LEN: u64 = wide(GRAIN_MARKER_BYTES);
/// GRAIN_MARKER_LEN as a buffer length.
const GRAIN_MARKER_BYTES: usize = 12;
/// The file ends with: footer marker, footer (a header copy), end-of-stream marker, 512 bytes each.
const TAIL_BYTES: usize = 3 * HEADER_LEN;
const TAIL_LEN: u64 = wide(TAIL_BYTES);

thread_local! {
    // ~40 KiB of zlib state: reused per thread, not made per grain.
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(true));
}

/// Reads and checks the footer of a streamOptimized file whose header has gdOffset GD_AT_END,
/// as qemu does: footer marker, header copy, end-of-stream marker, in the last 1536 bytes.
pub(crate) fn read_footer(file: &ImageFile) -> Result<SparseHeader> {
    let path = file.path();
    let Some(at) = file
        .len()
        .checked_sub(TAIL_LEN)
        .filter(|&a| a >= wide(HEADER_LEN))
    else {
        return Err(Error::Truncated {
            path: path.into(),
            what: "vmdk stream footer",
            offset: file.len().saturating_sub(TAIL_LEN),
            len: TAIL_LEN,
            file_len: file.len(),
        });
    };
    let mut tail = vec![0u8; TAIL_BYTES];
    file.read_exact_at(&mut tail, at, "vmdk stream footer")?;
    let bad = |off: u64, d: &str| {
        Error::corrupt(
            path,
            "vmdk stream footer",
            at.saturating_add(off),
            format!("{d}: the streamOptimized image has no valid footer (incomplete download or write?)"),
        )
    };
    if le32(&tail, 8) != 0 || le32(&tail, 12) != MARKER_FOOTER {
        return Err(bad(0, "footer marker missing"));
    }
    let eos = 2 * HEADER_LEN;
    if le64(&tail, eos) != 0 || le32(&tail, eos + 8) != 0 || le32(&tail, eos + 12) != MARKER_EOS {
        return Err(bad(wide(eos), "end-of-stream marker missing"));
    }
    let h = SparseHeader::parse(&tail[HEADER_LEN..2 * HEADER_LEN], path)
        .map_err(|e| bad(wide(HEADER_LEN), &format!("footer header: {e}")))?;
    if h.gd_offset == GD_AT_END {
        return Err(bad(
            wide(HEADER_LEN).saturating_add(56),
            "footer's gdOffset is GD_AT_END too",
        ));
    }
    Ok(h)
}

/// Reads the compressed grain at `host` and inflates it into `out` (one grain). `need` is how
/// many leading bytes must come out of the stream (the last grain of a disk may be short);
/// the rest is zero-filled. With `markers`, `host` is the grain marker.
pub(crate) fn read_grain(
    file: &ImageFile,
    host: u64,
    markers: bool,
    need: usize,
    out: &mut [u8],
) -> Result<()> {
    let path = file.path();
    let grain = wide(out.len());
    // qemu reads at most two grains of input: deflate never expands that much (a grain is at
    // most 64 MiB: no overflow).
    let max_in = grain.saturating_mul(2);
    let (read, data_at) = if markers {
        // The marker and, in the same read, a grain's worth of what follows it: grains
        // compress to less than their size, so one read of the file usually brings the whole
        // grain. Reading the 12-byte marker alone cost an image that is not in the page cache
        // a second trip to the disk for every grain (mount → first read of a stream VMDK
        // made 37 cold reads, a raw image 25).
        let first = GRAIN_MARKER_LEN
            .saturating_add(grain)
            .min(file.len().saturating_sub(host))
            .max(GRAIN_MARKER_LEN);
        let mut buf = vec![0u8; usize::try_from(first).unwrap_or(GRAIN_MARKER_BYTES)];
        file.read_exact_at(&mut buf, host, "vmdk grain marker")?;
        let size = u64::from(le32(&buf, 8));
        if size == 0 || size > max_in {
            return Err(Error::corrupt(
                path,
                "vmdk grain marker",
                host,
                format!("compressed size {size} outside 1..={max_in}"),
            ));
        }
        // size ≤ two grains of at most 64 MiB: no overflow, and it fits in memory.
        let total = usize::try_from(GRAIN_MARKER_LEN.saturating_add(size))
            .map_err(|_| Error::corrupt(path, "vmdk compressed grain", host, "too large"))?;
        let have = buf.len();
        buf.resize(total, 0);
        if let Some(rest) = buf.get_mut(have..).filter(|r| !r.is_empty()) {
            let at = host.saturating_add(wide(have));
            file.read_exact_at(rest, at, "vmdk compressed grain")?;
        }
        (buf, GRAIN_MARKER_BYTES)
    } else {
        let len = usize::try_from(max_in.min(file.len().saturating_sub(host)))
            .map_err(|_| Error::corrupt(path, "vmdk compressed grain", host, "too large"))?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, host, "vmdk compressed grain")?;
        (buf, 0)
    };
    let input = read.get(data_at..).unwrap_or_default();
    INFLATE
        .with(|d| {
            let mut d = d.borrow_mut();
            d.reset(true);
            let status = d.decompress(input, out, FlushDecompress::Finish);
            // At most out.len(): inflate fills the buffer it is given.
            let produced = usize::try_from(d.total_out()).unwrap_or(usize::MAX);
            match status {
                Ok(Status::StreamEnd) if produced >= need => {
                    if let Some(rest) = out.get_mut(produced..) {
                        rest.fill(0);
                    }
                    Ok(())
                }
                Ok(Status::StreamEnd) => Err(format!(
                    "grain inflates to {produced} bytes, expected {need}"
                )),
                Ok(_) => Err(format!(
                    "zlib stream does not end within one grain ({grain} bytes)"
                )),
                Err(e) => Err(format!("zlib error: {e}")),
            }
        })
        .map_err(|d| Error::corrupt(path, "vmdk compressed grain", host, d))
}
