//! The NTFS boot sector (the BIOS parameter block of sector 0): geometry and where $MFT starts.
//! Layout as documented by the Linux-NTFS project ("NTFS Documentation", Boot Sector) and
//! Microsoft's FSCTL_GET_NTFS_VOLUME_DATA fields.

use crate::bytes::{le16, le64};
use crate::fs::{Error, Result};

/// Bytes of the boot sector read at open.
pub const BOOT_SECTOR_SIZE: usize = 512;
/// The OEM identifier at byte 3.
pub const OEM_ID: &[u8; 8] = b"NTFS    ";
/// Largest cluster Windows formats (2 MiB, Windows 10 1709 and later).
pub const MAX_CLUSTER_SIZE: u64 = 2 << 20;
/// MFT records and index blocks are protected by update sequence arrays with one entry per
/// 512-byte stride, so they are at least this large.
pub const MIN_RECORD_SIZE: u32 = 512;
/// Largest MFT record or index block accepted (Windows uses 1 KiB or 4 KiB records and 4 KiB
/// index blocks; the field could say more, which would only be damage).
pub const MAX_RECORD_SIZE: u32 = 64 << 10;

/// The fields of the boot sector ferry uses, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSector {
    pub bytes_per_sector: u32,
    pub cluster_size: u32,
    pub total_sectors: u64,
    pub mft_lcn: u64,
    pub mftmirr_lcn: u64,
    pub record_size: u32,
    pub index_block_size: u32,
    pub serial: u64,
}

/// Decodes the signed "clusters per record" byte: positive counts clusters, negative is a
/// power of two in bytes (-10 = 1 KiB).
fn record_bytes(v: u8, cluster: u64) -> Option<u64> {
    let s = i8::from_ne_bytes([v]);
    if s > 0 {
        u64::from(s.unsigned_abs()).checked_mul(cluster)
    } else {
        let shift = u32::from(s.unsigned_abs());
        if shift >= 32 {
            None
        } else {
            Some(1u64 << shift)
        }
    }
}

impl BootSector {
    pub fn parse(b: &[u8]) -> Result<Self> {
        let bad = |d: String| Error::corrupt("NTFS boot sector", 0, 0, d);
        if b.len() < BOOT_SECTOR_SIZE {
            return Err(bad(format!("{} bytes, want {BOOT_SECTOR_SIZE}", b.len())));
        }
        if &b[3..11] != OEM_ID {
            return Err(bad("no \"NTFS    \" OEM identifier at byte 3".into()));
        }
        let bps = u32::from(le16(b, 0x0b));
        if !(256..=4096).contains(&bps) || !bps.is_power_of_two() {
            return Err(bad(format!("{bps} bytes per sector at byte 0x0b")));
        }
        // Sectors per cluster: values above 0x80 are negative powers of two (2 MiB clusters
        // with 512-byte sectors are 0xf4 = -12, 4096 sectors).
        let spc_raw = b[0x0d];
        let spc: u64 = if spc_raw <= 0x80 {
            u64::from(spc_raw)
        } else {
            // 256 - spc_raw.
            let shift = u32::from(spc_raw.wrapping_neg());
            if shift > 31 {
                return Err(bad(format!("sectors per cluster byte {spc_raw:#x}")));
            }
            1 << shift
        };
        // At most 2^31 sectors of at most 4096 bytes: no saturation.
        let cluster = spc.saturating_mul(u64::from(bps));
        if spc == 0 || !spc.is_power_of_two() || cluster > MAX_CLUSTER_SIZE {
            return Err(bad(format!(
                "{spc} sectors per cluster ({cluster} bytes; at most {MAX_CLUSTER_SIZE})"
            )));
        }
        let total_sectors = le64(b, 0x28);
        let clusters = total_sectors
            .saturating_mul(u64::from(bps))
            .checked_div(cluster)
            .unwrap_or(0);
        let mft_lcn = le64(b, 0x30);
        let mftmirr_lcn = le64(b, 0x38);
        if mft_lcn == 0 || mft_lcn >= clusters {
            return Err(bad(format!(
                "$MFT at cluster {mft_lcn}, outside the volume's {clusters} clusters"
            )));
        }
        let sizes = |at: usize, what: &str| -> Result<u32> {
            let n = record_bytes(b[at], cluster);
            match n
                .filter(|n| n.is_power_of_two())
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (MIN_RECORD_SIZE..=MAX_RECORD_SIZE).contains(n))
            {
                Some(n) => Ok(n),
                None => Err(bad(format!(
                    "{what} size {n:?} from byte {at:#x} = {:#x}",
                    b[at]
                ))),
            }
        };
        let record_size = sizes(0x40, "MFT record")?;
        let index_block_size = sizes(0x44, "index block")?;
        Ok(BootSector {
            bytes_per_sector: bps,
            cluster_size: u32::try_from(cluster)
                .map_err(|_| bad(format!("cluster of {cluster} bytes")))?,
            total_sectors,
            mft_lcn,
            mftmirr_lcn,
            record_size,
            index_block_size,
            serial: le64(b, 0x48),
        })
    }

    /// Clusters in the volume.
    pub fn clusters(&self) -> u64 {
        self.total_sectors
            .saturating_mul(u64::from(self.bytes_per_sector))
            .checked_div(u64::from(self.cluster_size))
            .unwrap_or(0)
    }

    /// Bytes in the volume.
    pub fn size_bytes(&self) -> u64 {
        // At most total_sectors × bytes per sector (saturated): no saturation.
        self.clusters().saturating_mul(u64::from(self.cluster_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sector(spc: u8, rec: u8) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[3..11].copy_from_slice(OEM_ID);
        b[0x0b..0x0d].copy_from_slice(&512u16.to_le_bytes());
        b[0x0d] = spc;
        b[0x28..0x30].copy_from_slice(&(1u64 << 20).to_le_bytes());
        b[0x30..0x38].copy_from_slice(&4u64.to_le_bytes());
        b[0x40] = rec;
        b[0x44] = 0xf4;
        b
    }

    #[test]
    fn geometry() {
        let bs = BootSector::parse(&sector(8, 0xf6)).unwrap();
        assert_eq!(
            (bs.cluster_size, bs.record_size, bs.index_block_size),
            (4096, 1024, 4096)
        );
        // 2 MiB clusters are encoded as a negative power of two.
        let bs = BootSector::parse(&sector(0xf4, 0xf6)).unwrap();
        assert_eq!(bs.cluster_size, 2 << 20);
        assert!(BootSector::parse(&sector(3, 0xf6)).is_err());
        assert!(BootSector::parse(&sector(8, 0x7f)).is_err());
        assert!(BootSector::parse(&sector(0xe0, 0xf6)).is_err());
    }
}
