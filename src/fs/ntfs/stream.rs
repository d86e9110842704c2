//! Reading an attribute's value: resident bytes, or non-resident runs where sparse runs and
//! everything past the initialized size read as zeros, and compressed attributes decoded one
//! compression unit at a time (a unit with no sparse cluster is stored raw, one with some is
//! LZNT1 data in its allocated clusters, one with none allocated is zeros).

use super::attribute::{Attribute, Body, NonResident, FLAG_COMPRESSED, FLAG_ENCRYPTED};
use super::runlist::{self, Run};
use super::{lznt1, Ntfs};
use crate::fs::{Error, Result};

/// Largest compression unit decoded (16 clusters of 4 KiB is what Windows writes; NTFS does
/// not compress with larger clusters).
pub(super) const MAX_COMPRESSION_UNIT: u64 = 1 << 20;

impl Ntfs {
    /// Reads `buf.len()` bytes (or up to the end) of attribute `a` of inode `ino` at `off`.
    pub(crate) fn read_attr(
        &self,
        ino: u64,
        a: &Attribute,
        off: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let size = a.size();
        if off >= size {
            return Ok(0);
        }
        // OK: bounded by buf.len().
        let n = (size - off).min(buf.len() as u64) as usize;
        let buf = &mut buf[..n];
        match &a.body {
            Body::Resident(v) => {
                // OK: off < size = v.len().
                let o = off as usize;
                buf.copy_from_slice(&v[o..o + n]);
            }
            Body::NonResident(nr) => {
                if a.flags & FLAG_ENCRYPTED != 0 {
                    return Err(Error::Unsupported(format!(
                        "inode {ino} is encrypted (EFS)"
                    )));
                }
                if a.flags & FLAG_COMPRESSED != 0 && nr.compression_unit != 0 {
                    self.read_compressed(ino, nr, off, buf)?;
                } else {
                    self.read_plain(ino, nr, off, buf)?;
                }
            }
        }
        Ok(n)
    }

    /// All of attribute `a` (callers bound its size first).
    pub(crate) fn read_whole(&self, ino: u64, a: &Attribute, limit: u64) -> Result<Vec<u8>> {
        let size = a.size();
        if size > limit {
            return Err(Error::corrupt(
                "attribute",
                ino,
                0,
                format!(
                    "type {:#x}: {size} bytes, more than the {limit} allowed",
                    a.kind
                ),
            ));
        }
        // OK: size <= limit, a small constant.
        let mut v = vec![0u8; size as usize];
        let n = self.read_attr(ino, a, 0, &mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// Uncompressed non-resident data: zeros past the initialized size and in sparse runs.
    fn read_plain(&self, ino: u64, nr: &NonResident, off: u64, buf: &mut [u8]) -> Result<()> {
        let init = nr.initialized_size;
        let valid = if off >= init {
            0
        } else {
            // OK: bounded by buf.len().
            (init - off).min(buf.len() as u64) as usize
        };
        self.read_runs(ino, &nr.runs, off, &mut buf[..valid])?;
        buf[valid..].fill(0);
        Ok(())
    }

    /// Bytes at `off` of the stream `runs` describe; sparse runs read as zeros, a VCN no run
    /// maps is damage.
    pub(crate) fn read_runs(&self, ino: u64, runs: &[Run], off: u64, buf: &mut [u8]) -> Result<()> {
        let cs = u64::from(self.boot.cluster_size);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            let vcn = pos / cs;
            let r = runlist::find(runs, vcn).ok_or_else(|| {
                self.damage(
                    "runlist",
                    ino,
                    None,
                    format!("no run maps VCN {vcn} (byte {pos})"),
                )
            })?;
            let run_end = (r.vcn + r.len) * cs;
            // OK: bounded by the buffer.
            let take = (run_end - pos).min((buf.len() - done) as u64) as usize;
            let dst = &mut buf[done..done + take];
            match r.lcn {
                None => dst.fill(0),
                Some(lcn) => {
                    let at = (lcn + (vcn - r.vcn)) * cs + pos % cs;
                    self.read_dev(dst, at, ino)?;
                }
            }
            done += take;
        }
        Ok(())
    }

    fn read_compressed(&self, ino: u64, nr: &NonResident, off: u64, buf: &mut [u8]) -> Result<()> {
        let cs = u64::from(self.boot.cluster_size);
        let unit_clusters = 1u64 << nr.compression_unit.min(16);
        let unit = unit_clusters * cs;
        if unit > MAX_COMPRESSION_UNIT || unit % lznt1::CHUNK as u64 != 0 {
            return Err(Error::Unsupported(format!(
                "inode {ino}: compression units of {unit} bytes"
            )));
        }
        // OK: unit <= 1 MiB.
        let mut plain = vec![0u8; unit as usize];
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            let k = pos / unit;
            let in_unit = pos % unit;
            // OK: bounded by the buffer.
            let take = (unit - in_unit).min((buf.len() - done) as u64) as usize;
            self.compression_unit(ino, nr, k, unit_clusters, &mut plain)?;
            // OK: in_unit < unit.
            let s = in_unit as usize;
            buf[done..done + take].copy_from_slice(&plain[s..s + take]);
            done += take;
        }
        // Past the initialized size the file reads as zeros.
        let init = nr.initialized_size;
        if off + (buf.len() as u64) > init {
            // OK: bounded by the buffer.
            let from = init.saturating_sub(off).min(buf.len() as u64) as usize;
            buf[from..].fill(0);
        }
        Ok(())
    }

    /// Decodes compression unit `k` into `out`.
    fn compression_unit(
        &self,
        ino: u64,
        nr: &NonResident,
        k: u64,
        unit_clusters: u64,
        out: &mut [u8],
    ) -> Result<()> {
        let cs = u64::from(self.boot.cluster_size);
        let first = k * unit_clusters;
        // The allocated clusters of the unit, in VCN order, and whether any is sparse.
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        let mut sparse = false;
        let mut vcn = first;
        while vcn < first + unit_clusters {
            let Some(r) = runlist::find(&nr.runs, vcn) else {
                // Past the last run: the rest of the unit is unallocated.
                sparse = true;
                break;
            };
            let n = (r.vcn + r.len - vcn).min(first + unit_clusters - vcn);
            match r.lcn {
                None => sparse = true,
                Some(lcn) => pieces.push((lcn + (vcn - r.vcn), n)),
            }
            vcn += n;
        }
        if pieces.is_empty() {
            out.fill(0);
            return Ok(());
        }
        if !sparse {
            let mut at = 0usize;
            for (lcn, n) in pieces {
                // OK: n clusters of this unit, at most out.len() bytes.
                let len = (n * cs) as usize;
                self.read_dev(&mut out[at..at + len], lcn * cs, ino)?;
                at += len;
            }
            return Ok(());
        }
        let total: u64 = pieces.iter().map(|p| p.1).sum();
        // OK: fewer clusters than the unit.
        let mut src = vec![0u8; (total * cs) as usize];
        let mut at = 0usize;
        for (lcn, n) in pieces {
            // OK: as above.
            let len = (n * cs) as usize;
            self.read_dev(&mut src[at..at + len], lcn * cs, ino)?;
            at += len;
        }
        lznt1::decompress(&src, out).map_err(|e| {
            self.damage(
                "compressed data",
                ino,
                None,
                format!("compression unit {k}: {e}"),
            )
        })
    }
}
