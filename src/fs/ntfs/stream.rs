//! Reading an attribute's value: resident bytes, or non-resident runs where sparse runs and
//! everything past the initialized size read as zeros, and compressed attributes decoded one
//! compression unit at a time (a unit with no sparse cluster is stored raw, one with some is
//! LZNT1 data in its allocated clusters, one with none allocated is zeros).

use super::attribute::{Attribute, Body, NonResident, FLAG_COMPRESSED, FLAG_ENCRYPTED};
use super::runlist::{self, Run};
use super::{lznt1, Ntfs};
use crate::bytes::wide;
use crate::fs::{Error, Result};

/// Largest compression unit decoded (16 clusters of 4 KiB is what Windows writes; NTFS does
/// not compress with larger clusters).
pub(super) const MAX_COMPRESSION_UNIT: u64 = 1 << 20;

/// `lznt1::CHUNK` as a byte count.
const CHUNK64: u64 = wide(lznt1::CHUNK);

/// For stream byte `pos` inside run `r` (clusters of `cs` bytes): the bytes from it to the
/// run's end, and where it lies on the volume (None: a sparse run). A run may end past 2^64
/// bytes (its VCNs are counted in clusters); its byte end then saturates, which still covers
/// every byte of the stream, whose size is a u64.
pub(super) fn locate(r: &Run, pos: u64, cs: u64) -> (u64, Option<u64>) {
    let left = r.end().saturating_mul(cs).saturating_sub(pos);
    let vcn = pos.checked_div(cs).unwrap_or(0);
    let in_cluster = pos.checked_rem(cs).unwrap_or(0);
    // runlist::decode keeps an allocated run inside the volume, whose bytes fit a u64.
    let at = r.lcn.and_then(|lcn| {
        lcn.checked_add(vcn.checked_sub(r.vcn)?)?
            .checked_mul(cs)?
            .checked_add(in_cluster)
    });
    (left, at)
}

impl Ntfs {
    /// Reads `buf.len()` bytes (or up to the end) of attribute `a` of inode `ino` at `off`.
    pub(crate) fn read_attr(
        &self,
        ino: u64,
        a: &Attribute,
        off: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let Some(left) = a.size().checked_sub(off).filter(|&l| l > 0) else {
            return Ok(0);
        };
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let buf = &mut buf[..n];
        match &a.body {
            Body::Resident(v) => {
                // off < size = v.len().
                let src = usize::try_from(off)
                    .ok()
                    .and_then(|o| v.get(o..)?.get(..n))
                    .ok_or_else(|| self.damage("resident attribute", ino, None, "short value"))?;
                buf.copy_from_slice(src);
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
        let Some(len) = usize::try_from(size).ok().filter(|_| size <= limit) else {
            return Err(Error::corrupt(
                "attribute",
                ino,
                0,
                format!(
                    "type {:#x}: {size} bytes, more than the {limit} allowed",
                    a.kind
                ),
            ));
        };
        let mut v = vec![0u8; len];
        let n = self.read_attr(ino, a, 0, &mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// Uncompressed non-resident data: zeros past the initialized size and in sparse runs.
    fn read_plain(&self, ino: u64, nr: &NonResident, off: u64, buf: &mut [u8]) -> Result<()> {
        let valid = nr.initialized_size.checked_sub(off).map_or(0, |v| {
            usize::try_from(v).map_or(buf.len(), |v| v.min(buf.len()))
        });
        let (valid, zeros) = buf.split_at_mut(valid);
        self.read_runs(ino, &nr.runs, off, valid)?;
        zeros.fill(0);
        Ok(())
    }

    /// Bytes at `off` of the stream `runs` describe; sparse runs read as zeros, a VCN no run
    /// maps is damage.
    pub(crate) fn read_runs(&self, ino: u64, runs: &[Run], off: u64, buf: &mut [u8]) -> Result<()> {
        let cs = u64::from(self.boot.cluster_size);
        let mut rest = buf;
        let mut pos = off;
        while !rest.is_empty() {
            let vcn = pos.checked_div(cs).unwrap_or(0);
            let r = runlist::find(runs, vcn).ok_or_else(|| {
                self.damage(
                    "runlist",
                    ino,
                    None,
                    format!("no run maps VCN {vcn} (byte {pos})"),
                )
            })?;
            let (left, at) = locate(r, pos, cs);
            let take = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
            let (dst, next) = std::mem::take(&mut rest).split_at_mut(take);
            match (r.lcn, at) {
                (None, _) => dst.fill(0),
                (Some(_), Some(at)) => self.read_dev(dst, at, ino)?,
                (Some(lcn), None) => {
                    return Err(self.damage(
                        "runlist",
                        ino,
                        None,
                        format!("run at LCN {lcn} maps byte {pos} past 2^64"),
                    ))
                }
            }
            // At most off + buf.len(), inside the attribute's u64 size: no saturation.
            pos = pos.saturating_add(wide(take));
            rest = next;
        }
        Ok(())
    }

    fn read_compressed(&self, ino: u64, nr: &NonResident, off: u64, buf: &mut [u8]) -> Result<()> {
        let cs = u64::from(self.boot.cluster_size);
        let unit_clusters = 1u64 << nr.compression_unit.min(16);
        // 2^16 clusters of at most 2 MiB: no saturation.
        let unit = unit_clusters.saturating_mul(cs);
        if unit > MAX_COMPRESSION_UNIT || unit % CHUNK64 != 0 {
            return Err(Error::Unsupported(format!(
                "inode {ino}: compression units of {unit} bytes"
            )));
        }
        // At most MAX_COMPRESSION_UNIT, and at least CHUNK64 (so a divisor).
        let mut plain = vec![0u8; usize::try_from(unit).unwrap_or(0)];
        let len = buf.len();
        let mut rest = &mut buf[..];
        let mut pos = off;
        while !rest.is_empty() {
            let k = pos.checked_div(unit).unwrap_or(0);
            let in_unit = usize::try_from(pos.checked_rem(unit).unwrap_or(0)).unwrap_or(0);
            self.compression_unit(ino, nr, k, unit_clusters, &mut plain)?;
            let take = fill_front(&mut rest, plain.get(in_unit..).unwrap_or_default());
            // Inside the attribute's u64 size: no saturation.
            pos = pos.saturating_add(wide(take));
        }
        // Past the initialized size the file reads as zeros.
        let from = nr
            .initialized_size
            .checked_sub(off)
            .map_or(0, |v| usize::try_from(v).map_or(len, |v| v.min(len)));
        buf[from..].fill(0);
        Ok(())
    }

    /// Reads the clusters `pieces` (LCN, count) one after another into `dst`.
    fn read_pieces(&self, ino: u64, pieces: &[(u64, u64)], dst: &mut [u8]) -> Result<()> {
        let cs = u64::from(self.boot.cluster_size);
        let mut rest = dst;
        for &(lcn, n) in pieces {
            // Clusters of one compression unit (at most 1 MiB), inside the volume
            // (runlist::decode): no saturation.
            let len = usize::try_from(n.saturating_mul(cs)).unwrap_or(usize::MAX);
            let (piece, next) = std::mem::take(&mut rest)
                .split_at_mut_checked(len)
                .ok_or_else(|| self.damage("compressed data", ino, None, "unit overflows"))?;
            self.read_dev(piece, lcn.saturating_mul(cs), ino)?;
            rest = next;
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
        // Unit k holds the cluster of a byte position / cs: no saturation.
        let first = k.saturating_mul(unit_clusters);
        let end = first.saturating_add(unit_clusters);
        // The allocated clusters of the unit, in VCN order, and whether any is sparse.
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        let mut sparse = false;
        let mut vcn = first;
        while vcn < end {
            let Some(r) = runlist::find(&nr.runs, vcn) else {
                // Past the last run: the rest of the unit is unallocated.
                sparse = true;
                break;
            };
            // vcn lies in r and before end: at least one cluster.
            let n = r.end().min(end).saturating_sub(vcn);
            match r.lcn {
                None => sparse = true,
                // Inside the volume (runlist::decode): no saturation.
                Some(lcn) => pieces.push((lcn.saturating_add(vcn.saturating_sub(r.vcn)), n)),
            }
            vcn = vcn.saturating_add(n);
        }
        if pieces.is_empty() {
            out.fill(0);
            return Ok(());
        }
        if !sparse {
            return self.read_pieces(ino, &pieces, out);
        }
        // Fewer clusters than the unit.
        let total: u64 = pieces.iter().map(|p| p.1).sum();
        let mut src = vec![0u8; usize::try_from(total.saturating_mul(cs)).unwrap_or(0)];
        self.read_pieces(ino, &pieces, &mut src)?;
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

/// Copies as much of `src` as fits to the front of `rest` and moves `rest` past it: one
/// decoded unit or chunk handed to a read that may span several. Returns the bytes copied.
pub(super) fn fill_front(rest: &mut &mut [u8], src: &[u8]) -> usize {
    let take = src.len().min(rest.len());
    let (dst, next) = std::mem::take(rest).split_at_mut(take);
    dst.copy_from_slice(&src[..take]);
    *rest = next;
    take
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    /// A sparse run reaching past 2^64 bytes (a damaged or hostile runlist on a volume whose
    /// boot sector claims 2^60 sectors): its byte end used to overflow u64, a panic in debug
    /// builds and a wrapped length in release ones; it now covers the rest of the stream.
    #[test]
    fn run_ending_past_2_64_bytes() {
        let r = Run {
            vcn: 0,
            len: 1 << 56,
            lcn: None,
        };
        let pos = u64::MAX - 8191;
        assert_eq!(locate(&r, pos, 4096), (u64::MAX - pos, None));
        let r = Run {
            vcn: 10,
            len: 5,
            lcn: Some(100),
        };
        assert_eq!(
            locate(&r, 12 * 4096 + 7, 4096),
            (3 * 4096 - 7, Some(102 * 4096 + 7))
        );
    }
}
