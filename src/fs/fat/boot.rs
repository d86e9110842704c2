//! The boot sector's BIOS parameter block (Microsoft "FAT: General Overview of On-Disk
//! Format", 2000): where the FATs, the fixed root directory and the data area are, and which
//! FAT width the volume uses. Checked as the Linux kernel's `fat_fill_super` checks it, so a
//! volume the kernel refuses is refused here too, with the field that is wrong.

use super::super::{Error, Result};
use crate::bytes::{le16, le32};

/// Size of the boot sector region read and checked.
pub(crate) const SECTOR: usize = 512;

/// The kernel's MAX_FAT12 / MAX_FAT16 / MAX_FAT32: the most clusters each width can number
/// (the rest of the value space is reserved, bad-cluster and end-of-chain marks).
const MAX_FAT12: u64 = 0xFF4;
const MAX_FAT16: u64 = 0xFFF4;
const MAX_FAT32: u64 = 0x0FFF_FFF6;

/// First cluster number of the data area (0 and 1 are reserved FAT entries).
pub(crate) const FIRST_CLUSTER: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

impl FatType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
    }
}

/// The geometry of a FAT volume, in bytes where it is a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) fat_type: FatType,
    pub(crate) bytes_per_sector: u32,
    pub(crate) cluster_size: u32,
    /// Byte offset of the first FAT.
    pub(crate) fat_start: u64,
    /// Bytes of one FAT.
    pub(crate) fat_bytes: u64,
    /// Byte offset of the fixed root directory (FAT12/16; on FAT32 where it would be, with
    /// room for `root_entries` entries, as the kernel computes it too).
    pub(crate) root_start: u64,
    pub(crate) root_entries: u32,
    /// Byte offset of cluster 2.
    pub(crate) data_start: u64,
    /// Clusters in the data area.
    pub(crate) clusters: u32,
    /// FAT32: the root directory's first cluster.
    pub(crate) root_cluster: u32,
    /// The volume serial number (blkid's UUID, printed XXXX-XXXX).
    pub(crate) serial: u32,
    /// The boot sector's 11-byte label field.
    pub(crate) label: [u8; 11],
    /// Bytes the volume spans (total sectors × sector size).
    pub(crate) volume_bytes: u64,
    /// The state byte's dirty bit (the kernel sets it while mounted read-write and clears it
    /// at unmount): the FAT may not match the directories.
    pub(crate) dirty: bool,
}

fn bad(field: &str, off: u64, detail: impl Into<String>) -> Error {
    Error::corrupt(
        "fat boot sector",
        0,
        0,
        format!("{field}: {}", detail.into()),
    )
    .at(off)
}

impl Geometry {
    /// Parses and checks the boot sector `b` (at least `SECTOR` bytes).
    pub(crate) fn parse(b: &[u8]) -> Result<Geometry> {
        if b.len() < SECTOR {
            return Err(bad("boot sector", 0, "shorter than 512 bytes"));
        }
        let bps = u32::from(le16(b, 11));
        if !(512..=4096).contains(&bps) || !bps.is_power_of_two() {
            return Err(bad(
                "bytes per sector",
                11,
                format!("{bps} is not 512..4096, a power of 2"),
            ));
        }
        let spc = u32::from(b[13]);
        if spc == 0 || !spc.is_power_of_two() {
            return Err(bad(
                "sectors per cluster",
                13,
                format!("{spc} is not a power of 2"),
            ));
        }
        let reserved = u64::from(le16(b, 14));
        if reserved == 0 {
            return Err(bad("reserved sectors", 14, "0"));
        }
        let fats = u64::from(b[16]);
        if fats == 0 {
            return Err(bad("number of FATs", 16, "0"));
        }
        let media = b[21];
        if media != 0xF0 && media < 0xF8 {
            return Err(bad(
                "media descriptor",
                21,
                format!("{media:#04x} is not 0xf0 or 0xf8..0xff"),
            ));
        }
        let root_entries = u32::from(le16(b, 17));
        if root_entries.checked_rem(bps / 32) != Some(0) {
            return Err(bad(
                "root directory entries",
                17,
                format!("{root_entries} does not fill whole {bps}-byte sectors"),
            ));
        }
        let fat16_len = u64::from(le16(b, 22));
        let fat32 = fat16_len == 0;
        let fat_sectors = if fat32 {
            u64::from(le32(b, 36))
        } else {
            fat16_len
        };
        if fat_sectors == 0 {
            return Err(bad("sectors per FAT", if fat32 { 36 } else { 22 }, "0"));
        }
        let total = match le16(b, 19) {
            0 => u64::from(le32(b, 32)),
            n => u64::from(n),
        };
        let bps64 = u64::from(bps);
        // The sector size is not zero (checked above). All u64 of at most 32-bit factors: no
        // overflow, so the saturating forms below never saturate.
        let root_sectors = (u64::from(root_entries) << 5)
            .checked_div(bps64)
            .unwrap_or(0);
        let root_first = reserved.saturating_add(fats.saturating_mul(fat_sectors));
        let data_first = root_first.saturating_add(root_sectors);
        if data_first >= total {
            return Err(bad(
                "total sectors",
                if le16(b, 19) == 0 { 32 } else { 19 },
                format!("{total} leave no data area after sector {data_first}"),
            ));
        }
        // data_first < total; spc is a power of 2, so not zero.
        let clusters = total
            .saturating_sub(data_first)
            .checked_div(u64::from(spc))
            .unwrap_or(0);
        let fat_type = if fat32 {
            FatType::Fat32
        } else if clusters <= MAX_FAT12 {
            FatType::Fat12
        } else {
            FatType::Fat16
        };
        let (bits, max): (u64, u64) = match fat_type {
            FatType::Fat12 => (12, MAX_FAT12),
            FatType::Fat16 => (16, MAX_FAT16),
            FatType::Fat32 => (32, MAX_FAT32),
        };
        // The kernel's max_fat(): entries the FAT has room for, less the two reserved.
        let room = fat_sectors
            .saturating_mul(bps64)
            .saturating_mul(8)
            .checked_div(bits)
            .unwrap_or(0)
            .saturating_sub(u64::from(FIRST_CLUSTER));
        if clusters > max.min(room) {
            return Err(bad(
                "cluster count",
                0,
                format!(
                    "{clusters} clusters do not fit a {} FAT of {fat_sectors} sectors",
                    fat_type.name()
                ),
            ));
        }
        if clusters == 0 {
            return Err(bad("cluster count", 0, "no clusters"));
        }
        // clusters <= MAX_FAT32 < 2^28 (checked above).
        let Ok(clusters) = u32::try_from(clusters) else {
            return Err(bad("cluster count", 0, format!("{clusters} clusters")));
        };
        let root_cluster = if fat32 { le32(b, 44) } else { 0 };
        let end = clusters.saturating_add(FIRST_CLUSTER);
        if fat32 && !(FIRST_CLUSTER..end).contains(&root_cluster) {
            return Err(bad(
                "root cluster",
                44,
                format!(
                    "{root_cluster} is outside clusters 2..{}",
                    end.saturating_sub(1)
                ),
            ));
        }
        let (serial_at, label_at) = if fat32 { (67, 71) } else { (39, 43) };
        // FAT_STATE_DIRTY in the reserved byte before the drive number's extended fields.
        let state_at = if fat32 { 65 } else { 37 };
        let dirty = b[state_at] & 1 != 0;
        let mut label = [0u8; 11];
        if let Some(l) = b.get(label_at..).and_then(|l| l.get(..11)) {
            label.copy_from_slice(l);
        }
        // Sector counts of at most 32 bits times a sector size of at most 4 KiB, and a
        // cluster of at most 128 sectors: no saturation.
        Ok(Geometry {
            fat_type,
            bytes_per_sector: bps,
            cluster_size: bps.saturating_mul(spc),
            fat_start: reserved.saturating_mul(bps64),
            fat_bytes: fat_sectors.saturating_mul(bps64),
            root_start: root_first.saturating_mul(bps64),
            root_entries,
            data_start: data_first.saturating_mul(bps64),
            clusters,
            root_cluster,
            serial: le32(b, serial_at),
            label,
            volume_bytes: total.saturating_mul(bps64),
            dirty,
        })
    }

    /// Byte offset of cluster `c` (2 ≤ c < clusters + 2, checked by the caller).
    pub(crate) fn cluster_offset(&self, c: u32) -> u64 {
        // Fewer than 2^28 clusters of at most 2 MiB: no saturation.
        let index = u64::from(c.saturating_sub(FIRST_CLUSTER));
        self.data_start
            .saturating_add(index.saturating_mul(u64::from(self.cluster_size)))
    }

    /// Whether `c` numbers a cluster of the data area.
    pub(crate) fn is_cluster(&self, c: u32) -> bool {
        c.checked_sub(FIRST_CLUSTER)
            .is_some_and(|i| i < self.clusters)
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    /// A FAT16 boot sector as mkfs.vfat writes it for a 32 MiB volume.
    pub(crate) fn fat16() -> Vec<u8> {
        let mut b = vec![0u8; SECTOR];
        b[0] = 0xEB;
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 4;
        b[14..16].copy_from_slice(&4u16.to_le_bytes());
        b[16] = 2;
        b[17..19].copy_from_slice(&512u16.to_le_bytes());
        b[19..21].copy_from_slice(&0u16.to_le_bytes());
        b[21] = 0xF8;
        b[22..24].copy_from_slice(&64u16.to_le_bytes());
        b[32..36].copy_from_slice(&65536u32.to_le_bytes());
        b[39..43].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        b[43..54].copy_from_slice(b"TESTLBL    ");
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn fat16_geometry() {
        let g = Geometry::parse(&fat16()).unwrap();
        assert_eq!(g.fat_type, FatType::Fat16);
        assert_eq!(g.cluster_size, 2048);
        assert_eq!(g.root_start, (4 + 128) * 512);
        assert_eq!(g.data_start, (4 + 128 + 32) * 512);
        assert_eq!(g.clusters, (65536 - 164) / 4);
        assert_eq!(g.serial, 0x1234_abcd);
    }

    #[test]
    fn fat_boot_sector_fields_are_checked() {
        let cases: [(usize, u8, &str); 5] = [
            (11, 0, "bytes per sector"),
            (13, 3, "sectors per cluster"),
            (16, 0, "number of FATs"),
            (21, 0x12, "media descriptor"),
            (22, 0, "sectors per FAT"),
        ];
        for (at, v, field) in cases {
            let mut b = fat16();
            b[at] = v;
            if at == 11 {
                b[12] = 0;
            }
            if at == 22 {
                b[36..40].fill(0);
            }
            let e = Geometry::parse(&b).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        let mut b = fat16();
        b[22..24].copy_from_slice(&1u16.to_le_bytes());
        let e = Geometry::parse(&b).unwrap_err().to_string();
        assert!(e.contains("do not fit"), "{e}");
    }
}
