//! L1 and L2 tables (qcow2.txt, "Cluster mapping"): decoding one L2 entry (standard or extended,
//! with its subcluster bitmap) into what the guest range maps to.

use crate::block::error::{Error, Result};
use std::path::Path;

/// Bits 9..55 of L1 and standard L2 entries: the host offset.
pub(crate) const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 0 (v3): the cluster reads as zeros.
pub(crate) const ZERO_FLAG: u64 = 1;

/// A mask of the low `n` bits (all 64 for n >= 64).
pub(crate) fn low_bits(n: u32) -> u64 {
    u64::MAX.checked_shl(n).map_or(u64::MAX, |high| !high)
}

/// What one allocation unit (a cluster, or a subcluster with extended L2) maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mapping {
    /// Guest data at this host offset (of the unit's first byte).
    Data { host: u64 },
    /// Reads as zeros.
    Zero,
    /// Not allocated in this image: read from the backing file.
    Unallocated,
    /// A compressed cluster: `size` bytes at `host`, inflating to one whole cluster.
    Compressed { host: u64, size: u64 },
}

impl Mapping {
    /// Whether `next`, found `dist` bytes after the start of `self`, extends the same run:
    /// contiguous host data, or more of the same zeros or holes (compressed clusters never
    /// join).
    pub(crate) fn continues_with(self, next: Mapping, dist: u64) -> bool {
        match (self, next) {
            (Mapping::Data { host: a }, Mapping::Data { host: b }) => {
                a.checked_add(dist) == Some(b)
            }
            (Mapping::Zero, Mapping::Zero) | (Mapping::Unallocated, Mapping::Unallocated) => true,
            _ => false,
        }
    }
}

/// The constants needed to decode entries of one image.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub cluster_bits: u32,
    pub extended: bool,
    pub file_len: u64,
}

impl Geometry {
    pub(crate) fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The cluster size as a buffer length.
    pub(crate) fn cluster_len(&self) -> usize {
        1 << self.cluster_bits
    }

    /// log2 of the allocation unit: subclusters (32 per cluster) with extended L2.
    pub(crate) fn unit_bits(&self) -> u32 {
        if self.extended {
            // Header::parse requires cluster_bits >= 14 for extended L2 entries.
            self.cluster_bits.saturating_sub(5)
        } else {
            self.cluster_bits
        }
    }

    /// Entries per L2 table (one cluster).
    pub(crate) fn l2_entries(&self) -> u64 {
        self.cluster_size() >> if self.extended { 4 } else { 3 }
    }

    /// Checks an L1 entry and returns the L2 table's host offset (0 = none allocated).
    pub(crate) fn l2_offset(&self, l1_entry: u64, path: &Path, l1_entry_pos: u64) -> Result<u64> {
        let off = l1_entry & OFFSET_MASK;
        if off == 0 {
            return Ok(0);
        }
        if off & low_bits(self.cluster_bits) != 0 || off < self.cluster_size() {
            return Err(Error::corrupt(
                path,
                "qcow2 L1 entry",
                l1_entry_pos,
                format!("L2 table offset {off:#x} is unaligned or inside the header cluster"),
            ));
        }
        Ok(off)
    }

    /// Decodes `words` (one standard entry, or an extended entry + bitmap) for subcluster `sc`.
    /// `entry_pos` is the entry's host offset, for error messages.
    pub(crate) fn classify(
        &self,
        word: u64,
        bitmap: u64,
        sc: u32,
        path: &Path,
        entry_pos: u64,
    ) -> Result<Mapping> {
        let bad = |detail: String| Error::corrupt(path, "qcow2 L2 entry", entry_pos, detail);
        let cs = self.cluster_size();
        if word & COMPRESSED != 0 {
            // x = 62 - (cluster_bits - 8) bits of offset, then the count of extra sectors
            // (cluster_bits is 9..=21: no subtraction below underflows, and size >= 1).
            let count_bits = self.cluster_bits.saturating_sub(8);
            let shift = 62u32.saturating_sub(count_bits);
            let host = word & low_bits(shift);
            let sectors = ((word >> shift) & low_bits(count_bits)).saturating_add(1);
            let size = sectors.saturating_mul(512).saturating_sub(host & 511);
            if host < cs {
                return Err(bad(format!(
                    "compressed cluster at {host:#x} lies in the header cluster"
                )));
            }
            if host >= self.file_len {
                return Err(Error::Truncated {
                    path: path.into(),
                    what: "qcow2 compressed cluster",
                    offset: host,
                    len: size,
                    file_len: self.file_len,
                });
            }
            return Ok(Mapping::Compressed { host, size });
        }
        let host = word & OFFSET_MASK;
        let data_at = |h: u64| -> Result<Mapping> {
            if h & low_bits(self.cluster_bits) != 0 || h < cs {
                return Err(bad(format!(
                    "data cluster offset {h:#x} is unaligned or inside the header cluster"
                )));
            }
            if h >= self.file_len {
                return Err(Error::Truncated {
                    path: path.into(),
                    what: "qcow2 data cluster",
                    offset: h,
                    len: cs,
                    file_len: self.file_len,
                });
            }
            Ok(Mapping::Data { host: h })
        };
        if !self.extended {
            if word & ZERO_FLAG != 0 {
                return Ok(Mapping::Zero);
            }
            if host == 0 {
                return Ok(Mapping::Unallocated);
            }
            return data_at(host);
        }
        let alloc = (bitmap >> sc) & 1 != 0;
        let zero = (bitmap >> 32 >> sc) & 1 != 0;
        match (alloc, zero) {
            (true, true) => Err(bad(format!(
                "subcluster {sc} is marked both allocated and zero"
            ))),
            (false, true) => Ok(Mapping::Zero),
            (false, false) => Ok(Mapping::Unallocated),
            (true, false) => {
                if host == 0 {
                    return Err(bad(format!(
                        "subcluster {sc} is allocated but the cluster has no host offset"
                    )));
                }
                data_at(host)?;
                // host < file length, and the subcluster lies inside its cluster.
                let host = host.checked_add(u64::from(sc) << self.unit_bits());
                Ok(Mapping::Data {
                    host: host.ok_or_else(|| bad(format!("subcluster {sc} overflows")))?,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(cluster_bits: u32, extended: bool) -> Geometry {
        Geometry {
            cluster_bits,
            extended,
            file_len: 1 << 40,
        }
    }

    fn classify(g: &Geometry, word: u64, bitmap: u64, sc: u32) -> Result<Mapping> {
        g.classify(word, bitmap, sc, Path::new("t.qcow2"), 0x1000)
    }

    #[test]
    fn compressed_descriptor_splits_at_62_minus_cluster_bits_minus_8() {
        // 64 KiB clusters: 54 offset bits, then 8 bits of extra sectors.
        let g = geo(16, false);
        let host = 0x12_3456_7a00u64 + 0x11; // not sector-aligned: allowed for compressed data
        let word = (1 << 62) | (3u64 << 54) | host;
        assert_eq!(
            classify(&g, word, 0, 0).unwrap(),
            Mapping::Compressed {
                host,
                size: 4 * 512 - 0x11
            }
        );
        // 2 MiB clusters: 49 offset bits, 13 bits of sectors.
        let g = geo(21, false);
        let word = (1 << 62) | (0x1fffu64 << 49) | 0x20_0000;
        assert_eq!(
            classify(&g, word, 0, 0).unwrap(),
            Mapping::Compressed {
                host: 0x20_0000,
                size: 0x2000 * 512
            }
        );
        // 512-byte clusters: 61 offset bits, 1 bit of sectors.
        let g = geo(9, false);
        let word = (1 << 62) | (1u64 << 61) | 0x400;
        assert_eq!(
            classify(&g, word, 0, 0).unwrap(),
            Mapping::Compressed {
                host: 0x400,
                size: 1024
            }
        );
    }

    #[test]
    fn standard_entries() {
        let g = geo(16, false);
        assert_eq!(classify(&g, 0, 0, 0).unwrap(), Mapping::Unallocated);
        assert_eq!(classify(&g, 1, 0, 0).unwrap(), Mapping::Zero);
        assert_eq!(
            classify(&g, (1 << 63) | 0x30000 | 1, 0, 0).unwrap(),
            Mapping::Zero
        ); // preallocated zero
        assert_eq!(
            classify(&g, (1 << 63) | 0x30000, 0, 0).unwrap(),
            Mapping::Data { host: 0x30000 }
        );
        assert!(classify(&g, 0x30200, 0, 0)
            .unwrap_err()
            .to_string()
            .contains("unaligned"));
        let e = geo(16, false)
            .classify(1 << 50, 0, 0, Path::new("t"), 0)
            .unwrap_err();
        assert!(
            matches!(e, Error::Truncated { .. }) || e.to_string().contains("past"),
            "{e}"
        );
    }

    #[test]
    fn extended_entries_use_the_subcluster_bitmap() {
        let g = geo(16, true);
        let host = 0x40000u64;
        let bitmap = (1u64 << 3) | (1u64 << (32 + 4));
        assert_eq!(
            classify(&g, host, bitmap, 3).unwrap(),
            Mapping::Data {
                host: host + 3 * 2048
            }
        );
        assert_eq!(classify(&g, host, bitmap, 4).unwrap(), Mapping::Zero);
        assert_eq!(classify(&g, host, bitmap, 5).unwrap(), Mapping::Unallocated);
        assert!(classify(&g, host, (1 << 7) | (1 << 39), 7).is_err()); // allocated and zero
        assert!(classify(&g, 0, 1 << 2, 2).is_err()); // allocated without a host cluster
    }
}
