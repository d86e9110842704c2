//! What a partition table says, whichever kind it is: the partitions in table order with Linux
//! numbering, the disk's identifier, the usable area and the warnings met while reading it.

use super::slice::read_opt;
use super::{content, gpt, mbr, Result};
use crate::block::BlockDevice;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// sfdisk calls it "dos".
    Mbr,
    Gpt,
}

impl TableKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Mbr => "mbr",
            TableKind::Gpt => "gpt",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    /// An MBR extended partition: a container of EBRs, not a volume of its own.
    Extended,
    Logical,
}

/// One entry of a table. `start`/`size` are in bytes as the table says them, before clamping to
/// the disk.
#[derive(Clone, Debug, Serialize)]
pub struct Partition {
    /// Linux numbering: MBR primaries 1-4 by slot, logicals from 5; GPT entry index + 1.
    pub number: u32,
    pub role: Role,
    pub start: u64,
    pub size: u64,
    /// MBR: the type byte in hex as sfdisk prints it ("83"); GPT: the type GUID, lowercase.
    pub type_id: String,
    /// fdisk's name for the type, when it is a common one.
    pub type_name: Option<String>,
    /// GPT partition name.
    pub name: Option<String>,
    /// PARTUUID as blkid prints it: the GPT unique GUID, or "DISKID-NN" on MBR.
    pub uuid: Option<String>,
    /// GPT attribute bits (UEFI table "GPT Partition Entry Attributes"); MBR: 0.
    pub attributes: u64,
    /// MBR boot indicator 0x80; GPT legacy BIOS bootable (attribute bit 2).
    pub bootable: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Table {
    pub kind: TableKind,
    pub sector_size: u64,
    /// MBR disk signature ("0xbaff7d5c") or GPT disk GUID.
    pub id: String,
    /// Bytes [first, end) where partitions may lie (GPT first/last usable LBA; MBR: after
    /// sector 0 to the disk end), for free space.
    pub usable_start: u64,
    pub usable_end: u64,
    pub partitions: Vec<Partition>,
    pub warnings: Vec<String>,
}

/// Reads the partition table of `dev` (named `name` in messages), or None when it has none. An
/// MBR with a protective (0xee) entry, or no MBR signature at all, sends us to GPT; a disk that
/// starts with a FAT/NTFS boot sector is a whole-disk filesystem, not an MBR.
pub fn read(dev: &dyn BlockDevice, name: &str) -> Result<Option<Table>> {
    let Some(s0) = read_opt(dev, 0, mbr::SECTOR_LEN)? else {
        return Ok(None);
    };
    let is_mbr = mbr::looks_like_mbr(&s0) && !content::is_boot_sector_fs(&s0);
    let protective = is_mbr && mbr::entries(&s0).iter().any(|e| e.ptype == mbr::PROTECTIVE);
    if protective || !is_mbr {
        match gpt::read(dev, name) {
            Ok(Some(mut t)) => {
                if !protective {
                    t.warnings
                        .push("GPT found without a protective MBR in sector 0".into());
                }
                return Ok(Some(t));
            }
            Ok(None) if protective => {
                let mut t = mbr::parse(dev, name, &s0)?;
                t.warnings.push(
                    "protective MBR (type 0xee) but no GPT header at LBA 1 or at the disk's \
                     last LBA: listing the MBR entries"
                        .into(),
                );
                return Ok(Some(t));
            }
            Ok(None) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(mbr::parse(dev, name, &s0)?))
}
