//! Compressed clusters (qcow2.txt, "Compressed Clusters Descriptor"): raw deflate (qemu writes
//! with a 4 KiB window) or one zstd frame, padded to 512-byte sectors. A cluster must inflate to
//! exactly one full cluster, as qemu requires.

use super::header::Compression;
use flate2::{Decompress, FlushDecompress, Status};
use std::cell::RefCell;

thread_local! {
    // Decoder state is ~40 KiB (zlib) / ~100 KiB (zstd): reused per thread, not per cluster.
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    static ZSTD: RefCell<Option<zstd::stream::raw::Decoder<'static>>> = const { RefCell::new(None) };
}

/// Inflates `input` into all of `out`. Errors say why, for the caller to wrap with the offset.
pub(crate) fn decompress(kind: Compression, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    match kind {
        Compression::Zlib => INFLATE.with(|d| {
            let mut d = d.borrow_mut();
            d.reset(false);
            let status = d.decompress(input, out, FlushDecompress::Finish);
            match status {
                Ok(Status::StreamEnd | Status::BufError | Status::Ok)
                    if d.total_out() == crate::bytes::wide(out.len()) =>
                {
                    Ok(())
                }
                Ok(_) => Err(format!(
                    "deflate stream yields {} bytes, expected {}",
                    d.total_out(),
                    out.len()
                )),
                Err(e) => Err(format!("deflate error: {e}")),
            }
        }),
        Compression::Zstd => ZSTD.with(|cell| {
            use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = Some(zstd::stream::raw::Decoder::new().map_err(|e| e.to_string())?);
            }
            let dec = cell.as_mut().ok_or("zstd decoder unavailable")?;
            dec.reinit().map_err(|e| format!("zstd error: {e}"))?;
            let mut inb = InBuffer::around(input);
            let want = out.len();
            let mut outb = OutBuffer::around(out);
            loop {
                let before = (inb.pos(), outb.pos());
                let hint = dec
                    .run(&mut inb, &mut outb)
                    .map_err(|e| format!("zstd error: {e}"))?;
                if outb.pos() == want {
                    return Ok(());
                }
                if hint == 0 || inb.pos() == input.len() || before == (inb.pos(), outb.pos()) {
                    return Err(format!(
                        "zstd frame yields {} bytes, expected {want}",
                        outb.pos()
                    ));
                }
            }
        }),
    }
}
