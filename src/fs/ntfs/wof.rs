//! WOF-compressed files (Windows Overlay Filter, "CompactOS", `compact /exe:`): the reparse
//! point (tag 0x80000017) names the algorithm, the unnamed $DATA only carries the size, and
//! the named stream "WofCompressedData" holds a table of chunk offsets followed by the chunks,
//! each compressed on its own or stored raw when compression did not help (the layout
//! wimlib and ntfs-3g's system-compression plugin document): XPRESS4K/8K/16K chunks
//! (xpress.rs) and LZX chunks (lzx.rs).

use super::attribute;
use super::inode::Inode;
use super::{lzx, xpress, Ntfs};
use crate::bytes::le32;
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

impl Ntfs {
    /// Reads the decompressed content of WOF file `i` at `off`.
    pub(super) fn read_wof(&self, i: &Inode, r: &[u8], off: u64, buf: &mut [u8]) -> Result<usize> {
        let ino = i.ino;
        let (alg, chunk) =
            algorithm(r).map_err(|e| self.damage("WOF reparse point", ino, None, e))?;
        let size = i.data().map_or(0, attribute::Attribute::size);
        if off >= size {
            return Ok(0);
        }
        let name: Vec<u16> = STREAM.encode_utf16().collect();
        let s = i
            .find(attribute::DATA, &name)
            .ok_or_else(|| self.damage("WOF file", ino, None, format!("no {STREAM} stream")))?;
        let chunks = size.div_ceil(chunk);
        let entry = if size > u64::from(u32::MAX) { 8 } else { 4 };
        let table = (chunks - 1) * entry;
        let total = s.size();
        let bad = |d: String| self.damage("WOF chunk table", ino, None, d);
        if table > total {
            return Err(bad(format!("{chunks} chunks, a stream of {total} bytes")));
        }
        // Offset of chunk k's data from the end of the table.
        let start_of = |k: u64| -> Result<u64> {
            if k == 0 {
                return Ok(0);
            }
            let mut e = [0u8; 8];
            // OK: entry is 4 or 8.
            let n = self.read_attr(ino, s, (k - 1) * entry, &mut e[..entry as usize])?;
            if n as u64 != entry {
                return Err(bad(format!("entry {k} cut short")));
            }
            Ok(u64::from_le_bytes(e))
        };
        // OK: bounded by buf.len().
        let n = (size - off).min(buf.len() as u64) as usize;
        let mut done = 0usize;
        // OK: chunk is at most 32 KiB.
        let mut plain = vec![0u8; chunk as usize];
        while done < n {
            let pos = off + done as u64;
            let k = pos / chunk;
            let clen = chunk.min(size - k * chunk);
            let start = start_of(k)?;
            let end = if k + 1 == chunks {
                total - table
            } else {
                start_of(k + 1)?
            };
            if end < start || end - start > clen || table + end > total {
                return Err(bad(format!(
                    "chunk {k} from {start} to {end} (of {clen} bytes)"
                )));
            }
            // OK: clen <= chunk.
            let out = &mut plain[..clen as usize];
            if end - start == clen {
                self.read_attr(ino, s, table + start, out)?;
            } else {
                // OK: end - start < clen.
                let mut src = vec![0u8; (end - start) as usize];
                self.read_attr(ino, s, table + start, &mut src)?;
                let decoded = if alg == LZX {
                    lzx::decompress(&src, out)
                } else {
                    xpress::decompress(&src, out)
                };
                decoded
                    .map_err(|e| self.damage("WOF chunk", ino, None, format!("chunk {k}: {e}")))?;
            }
            let in_chunk = (pos - k * chunk) as usize;
            let take = (out.len() - in_chunk).min(n - done);
            buf[done..done + take].copy_from_slice(&out[in_chunk..in_chunk + take]);
            done += take;
        }
        Ok(n)
    }
}
