//! The MBR (the classic PC partition table) and the EBR chain of logical partitions.
//!
//! Conventions followed (there is no formal spec; these are what Linux `block/partitions/msdos.c`,
//! fdisk and Windows agree on): sector 0 ends with 0x55 0xAA and holds four 16-byte entries at
//! byte 446 (boot indicator, CHS start, type, CHS end, LBA start, sector count). Entries of type
//! 0x05, 0x0f or 0x85 are extended partitions: each holds a chain of EBRs, one per logical
//! partition, whose data entry is relative to that EBR and whose link entry is relative to the
//! start of the extended partition. UEFI spec "Legacy Master Boot Record (MBR)" and "Protective
//! MBR" describe type 0xee, which says the disk is really GPT.

use super::bytes::non_empty;
use super::slice::read_opt;
use super::table::{Partition, Role, Table, TableKind};
use super::Result;
use crate::block::BlockDevice;
use crate::bytes::le32;
use std::collections::HashSet;

/// MBR LBAs count 512-byte sectors (a 4Kn disk with an MBR is rare enough to leave out).
pub const SECTOR: u64 = 512;
/// SECTOR as a buffer length.
pub const SECTOR_LEN: usize = 512;
pub const PROTECTIVE: u8 = 0xee;
const ENTRIES_AT: usize = 446;
/// At most this many logical partitions are read (Linux reads at most DISK_MAX_PARTS - 4 too):
/// a longer chain is garbage or a loop that the visited set did not catch by offset alone.
pub const MAX_LOGICAL: usize = 128;
/// EBRs followed per extended partition, counting EBRs that hold no logical partition.
pub const MAX_EBRS: usize = 2 * MAX_LOGICAL;

#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub boot: u8,
    pub ptype: u8,
    pub start: u32,
    pub sectors: u32,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.ptype == 0 || self.sectors == 0
    }
    fn is_extended(&self) -> bool {
        matches!(self.ptype, 0x05 | 0x0f | 0x85)
    }
}

/// The four entries of an MBR or EBR sector (`sector` is at least 512 bytes).
pub fn entries(sector: &[u8]) -> [Entry; 4] {
    std::array::from_fn(|i| {
        // Entry i: bytes ENTRIES_AT + 16 i .. + 16; fields read as zero past a short sector.
        let e = sector
            .get(ENTRIES_AT..)
            .and_then(|s| s.chunks_exact(16).nth(i))
            .unwrap_or(&[]);
        Entry {
            boot: e.first().copied().unwrap_or(0),
            ptype: e.get(4).copied().unwrap_or(0),
            start: le32(e, 8),
            sectors: le32(e, 12),
        }
    })
}

pub fn has_signature(sector: &[u8]) -> bool {
    sector.get(510..512) == Some(&[0x55, 0xaa])
}

/// Signature present and every boot indicator 0x00 or 0x80: Linux and libblkid use the boot
/// indicators to tell a partition table from boot code that merely ends in 0x55AA.
pub fn looks_like_mbr(sector: &[u8]) -> bool {
    has_signature(sector)
        && entries(sector)
            .iter()
            .all(|e| e.boot == 0 || e.boot == 0x80)
}

/// fdisk's names for common MBR type bytes.
pub fn type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        0x01 => "FAT12",
        0x04 => "FAT16 <32M",
        0x05 => "Extended",
        0x06 => "FAT16",
        0x07 => "HPFS/NTFS/exFAT",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0x0e => "W95 FAT16 (LBA)",
        0x0f => "W95 Ext'd (LBA)",
        0x11 => "Hidden FAT12",
        0x12 => "Compaq diagnostics",
        0x17 => "Hidden HPFS/NTFS",
        0x1b => "Hidden W95 FAT32",
        0x1c => "Hidden W95 FAT32 (LBA)",
        0x27 => "Hidden NTFS WinRE",
        0x42 => "SFS",
        0x82 => "Linux swap / Solaris",
        0x83 => "Linux",
        0x85 => "Linux extended",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xa6 => "OpenBSD",
        0xa9 => "NetBSD",
        0xde => "Dell Utility",
        0xee => "GPT",
        0xef => "EFI (FAT-12/16/32)",
        0xfb => "VMware VMFS",
        0xfc => "VMware VMKCORE",
        0xfd => "Linux raid autodetect",
        _ => return None,
    })
}

/// Sector numbers of an EBR chain are sums of at most three u32 fields (an extended partition's
/// start, an EBR's link, an entry's start or count), so they stay below 2^34: the saturating
/// arithmetic below never saturates, and their byte offsets (below 2^43) never overflow either.
fn sum(sector: u64, n: u32) -> u64 {
    sector.saturating_add(u64::from(n))
}

/// The byte offset of an EBR chain's sector (see `sum`).
fn sector_offset(sector: u64) -> u64 {
    sector.saturating_mul(SECTOR)
}

/// A 32-bit sector count in bytes (below 2^41: no overflow).
fn sectors_bytes(n: u32) -> u64 {
    u64::from(n).saturating_mul(SECTOR)
}

fn partition(e: &Entry, number: u32, role: Role, base: u64, disk_id: u32) -> Option<Partition> {
    let start = base.checked_add(u64::from(e.start))?.checked_mul(SECTOR)?;
    Some(Partition {
        number,
        role,
        start,
        size: sectors_bytes(e.sectors),
        type_id: format!("{:x}", e.ptype),
        type_name: type_name(e.ptype).map(str::to_string),
        name: None,
        uuid: non_empty(if disk_id != 0 {
            format!("{disk_id:08x}-{number:02x}")
        } else {
            String::new()
        }),
        attributes: 0,
        bootable: e.boot == 0x80,
    })
}

/// Parses the MBR in `s0` (sector 0 of `dev`) and follows the EBR chain of every extended
/// partition. Problems in a chain end that chain with a warning; the primaries still count.
pub fn parse(dev: &dyn BlockDevice, name: &str, s0: &[u8]) -> Result<Table> {
    let disk_id = le32(s0, 440);
    let mut t = Table {
        kind: TableKind::Mbr,
        sector_size: SECTOR,
        id: format!("0x{disk_id:08x}"),
        usable_start: SECTOR,
        usable_end: dev.len(),
        partitions: Vec::new(),
        warnings: Vec::new(),
    };
    let primaries = entries(s0);
    for (number, e) in (1u32..).zip(primaries.iter()) {
        if e.is_empty() {
            continue;
        }
        let role = if e.is_extended() {
            Role::Extended
        } else {
            Role::Primary
        };
        if let Some(p) = partition(e, number, role, 0, disk_id) {
            t.partitions.push(p);
        }
    }
    let mut next_number = 5u32;
    for e in primaries
        .iter()
        .filter(|e| !e.is_empty() && e.is_extended())
    {
        read_chain(dev, name, e, disk_id, &mut next_number, &mut t)?;
    }
    Ok(t)
}

/// Follows the EBR chain of the extended partition `ext`, appending its logical partitions to
/// `t`. Loop-safe: every EBR is visited once, and the chain is cut at MAX_EBRS / MAX_LOGICAL.
fn read_chain(
    dev: &dyn BlockDevice,
    name: &str,
    ext: &Entry,
    disk_id: u32,
    next_number: &mut u32,
    t: &mut Table,
) -> Result<()> {
    let ext_start = u64::from(ext.start);
    let ext_end = sum(ext_start, ext.sectors);
    let mut seen = HashSet::new();
    let mut ebr = ext_start;
    for _ in 0..MAX_EBRS {
        if !seen.insert(ebr) {
            t.warnings.push(format!(
                "{name}: EBR chain loops back to sector {ebr}: logical partitions after it ignored"
            ));
            return Ok(());
        }
        let logicals = t
            .partitions
            .iter()
            .filter(|p| p.role == Role::Logical)
            .count();
        if logicals >= MAX_LOGICAL {
            t.warnings.push(format!(
                "{name}: more than {MAX_LOGICAL} logical partitions: the rest are ignored"
            ));
            return Ok(());
        }
        let off = sector_offset(ebr);
        let Some(sector) = read_opt(dev, off, SECTOR_LEN)? else {
            t.warnings.push(format!(
                "{name}: EBR at sector {ebr} (offset {off:#x}) lies past the end of the disk"
            ));
            return Ok(());
        };
        if !has_signature(&sector) {
            t.warnings.push(format!(
                "{name}: EBR at sector {ebr} (offset {off:#x}) has no 0x55AA signature: \
                 the logical partitions end here"
            ));
            return Ok(());
        }
        let mut link = None;
        for e in entries(&sector) {
            if e.is_empty() {
                continue;
            }
            if e.is_extended() {
                // The first link counts; Linux ignores any further one too.
                link.get_or_insert(e);
                continue;
            }
            let number = *next_number;
            match partition(&e, number, Role::Logical, ebr, disk_id) {
                Some(p) => {
                    let end = sum(sum(ebr, e.start), e.sectors);
                    if end > ext_end {
                        t.warnings.push(format!(
                            "{name}: logical partition {number} (EBR at sector {ebr}) ends at \
                             sector {end}, past its extended partition's end {ext_end}"
                        ));
                    }
                    t.partitions.push(p);
                    *next_number = next_number.saturating_add(1);
                }
                None => t.warnings.push(format!(
                    "{name}: logical partition in the EBR at sector {ebr} has an impossible start"
                )),
            }
        }
        match link {
            Some(l) => ebr = sum(ext_start, l.start),
            None => return Ok(()),
        }
    }
    t.warnings.push(format!(
        "{name}: EBR chain longer than {MAX_EBRS} links: the rest is ignored"
    ));
    Ok(())
}
