//! WOF-compressed files (Windows Overlay Filter, "CompactOS", `compact /exe:`): the reparse
//! point (tag 0x80000017) names the algorithm, the unnamed $DATA only carries the size, and
//! the named stream "WofCompressedData" holds a table of chunk offsets followed by the chunks,
//! each compressed on its own or stored raw when compression did not help (the layout
//! wimlib and ntfs-3g's system-compression plugin document): XPRESS4K/8K/16K chunks
//! (xpress.rs) and LZX chunks (lzx.rs).

use super::attribute;
use super::inode::Inode;
use super::{lzx, xpress, Ntfs};
use crate::bytes::{le32, wide};
use crate::fs::Result;

/// "WofCompressedData".
const STREAM: &str = "WofCompressedData";
const PROVIDER_FILE: u32 = 2;
pub(super) const XPRESS4K: u32 = 0;
pub(super) const LZX: u32 = 1;
pub(super) const XPRESS8K: u32 = 2;
pub(super) const XPRESS16K: u32 = 3;

/// The algorithm and chunk size the reparse data `r` (with its 8-byte header) names.
fn algorithm(r: &[u8]) -> std::result::Result<(u32, u64), String> {
    if r.len() < 24 {
        return Err(format!("WOF reparse data of {} bytes", r.len()));
    }
    let (version, provider, fversion, alg) = (le32(r, 8), le32(r, 12), le32(r, 16), le32(r, 20));
    if version != 1 || provider != PROVIDER_FILE || fversion != 1 {
        return Err(format!(
            "WOF version {version}, provider {provider}, file info version {fversion}"
        ));
    }
    let chunk = match alg {
        XPRESS4K => 4096,
        XPRESS8K => 8192,
        XPRESS16K => 16384,
        LZX => 32768,
        a => return Err(format!("unknown WOF algorithm {a}")),
    };
    Ok((alg, chunk))
}

/// Where the data of a chunk lies in the stream: the chunk's `start` and `end` are offsets
/// past the `table`-byte offset table in a stream of `total` bytes; the data is at most the
/// chunk's `clen` bytes. Returns (stream offset, stored bytes), or None if the offsets are
/// damaged. 64-bit table entries can hold any value: their sum with the table is checked.
fn span(table: u64, start: u64, end: u64, clen: u64, total: u64) -> Option<(u64, u64)> {
    let stored = end.checked_sub(start).filter(|&s| s <= clen)?;
    table.checked_add(end).filter(|&e| e <= total)?;
    Some((table.checked_add(start)?, stored))
}

impl Ntfs {
    /// Reads the decompressed content of WOF file `i` at `off`.
    pub(super) fn read_wof(&self, i: &Inode, r: &[u8], off: u64, buf: &mut [u8]) -> Result<usize> {
        let ino = i.ino;
        let (alg, chunk) =
            algorithm(r).map_err(|e| self.damage("WOF reparse point", ino, None, e))?;
        let size = i.data().map_or(0, attribute::Attribute::size);
        let Some(left) = size.checked_sub(off).filter(|&l| l > 0) else {
            return Ok(0);
        };
        let name: Vec<u16> = STREAM.encode_utf16().collect();
        let s = i
            .find(attribute::DATA, &name)
            .ok_or_else(|| self.damage("WOF file", ino, None, format!("no {STREAM} stream")))?;
        let chunks = size.div_ceil(chunk);
        let entry: usize = if size > u64::from(u32::MAX) { 8 } else { 4 };
        // At least one chunk (size > off); at most 2^52 entries of 8 bytes: no saturation.
        let table = chunks.saturating_sub(1).saturating_mul(wide(entry));
        let total = s.size();
        let bad = |d: String| self.damage("WOF chunk table", ino, None, d);
        if table > total {
            return Err(bad(format!("{chunks} chunks, a stream of {total} bytes")));
        }
        // Offset of chunk k's data from the end of the table.
        let start_of = |k: u64| -> Result<u64> {
            let Some(before) = k.checked_sub(1) else {
                return Ok(0);
            };
            let mut e = [0u8; 8];
            // An entry of the table (k < chunks): no saturation.
            let at = before.saturating_mul(wide(entry));
            let n = self.read_attr(ino, s, at, &mut e[..entry])?;
            if n != entry {
                return Err(bad(format!("entry {k} cut short")));
            }
            Ok(u64::from_le_bytes(e))
        };
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let mut rest = &mut buf[..n];
        let mut pos = off;
        // At most 32 KiB.
        let mut plain = vec![0u8; usize::try_from(chunk).unwrap_or(0)];
        while !rest.is_empty() {
            // Chunk sizes are 4 to 32 KiB (`algorithm`); its first byte is at most `pos`.
            let k = pos.checked_div(chunk).unwrap_or(0);
            let first = k.saturating_mul(chunk);
            let clen = chunk.min(size.saturating_sub(first));
            let start = start_of(k)?;
            // k < chunks: no saturation.
            let end = if k.saturating_add(1) == chunks {
                total.saturating_sub(table)
            } else {
                start_of(k.saturating_add(1))?
            };
            let (at, stored) = span(table, start, end, clen, total)
                .ok_or_else(|| bad(format!("chunk {k} from {start} to {end} (of {clen} bytes)")))?;
            let out = &mut plain[..usize::try_from(clen).unwrap_or(0)];
            if stored == clen {
                self.read_attr(ino, s, at, out)?;
            } else {
                // Less than clen.
                let mut src = vec![0u8; usize::try_from(stored).unwrap_or(0)];
                self.read_attr(ino, s, at, &mut src)?;
                let decoded = if alg == LZX {
                    lzx::decompress(&src, out)
                } else {
                    xpress::decompress(&src, out)
                };
                decoded
                    .map_err(|e| self.damage("WOF chunk", ino, None, format!("chunk {k}: {e}")))?;
            }
            // Below clen.
            let in_chunk = usize::try_from(pos.saturating_sub(first)).unwrap_or(0);
            let take =
                super::stream::fill_front(&mut rest, out.get(in_chunk..).unwrap_or_default());
            // Inside the file's u64 size: no saturation.
            pos = pos.saturating_add(wide(take));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file over 4 GiB has 64-bit chunk offsets: offsets near 2^64 used to make
    /// `table + end` overflow (a panic in debug builds; in release builds it wrapped below
    /// the stream size, passed the check and the chunk read from past the stream's end,
    /// giving zeros or the previous chunk instead of an error).
    #[test]
    fn chunk_offsets_near_2_64_are_damage() {
        let (start, end) = (u64::MAX - 51, u64::MAX - 1);
        assert_eq!(span(8, start, end, 4096, 10_000), None);
        assert_eq!(span(8, 100, 150, 4096, 10_000), Some((108, 50)));
        assert_eq!(span(8, 100, 150, 40, 10_000), None);
        assert_eq!(span(8, 100, 9_993, 10_000, 10_000), None);
    }
}
