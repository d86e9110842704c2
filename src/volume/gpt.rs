//! The GUID Partition Table (UEFI spec, chapter 5 "GUID Partition Table (GPT) Disk Layout").
//!
//! The primary header sits at LBA 1 and its entry array usually at LBA 2; a backup header sits
//! at the last LBA with its own copy of the array before it (5.3.2 "GPT Header"). Both carry a
//! CRC32 of the header and of the entry array. The LBA size is the disk's logical block size,
//! which an image does not record: we look for the header at 512 and at 4096 bytes.

use super::bytes::{guid, non_empty, utf16le};
use super::slice::read_opt;
use super::table::{Partition, Role, Table, TableKind};
use super::{Error, Result};
use crate::block::BlockDevice;
use crate::bytes::le32;
use std::mem::{offset_of, size_of};
use zerocopy::byteorder::{LittleEndian, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

type Le32 = U32<LittleEndian>;
type Le64 = U64<LittleEndian>;

/// The GPT header (UEFI 5.3.2, "GPT Header" table), little-endian; the rest of its LBA is
/// reserved. One layout for reading here and for anything that writes a table.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct RawGptHeader {
    pub signature: [u8; 8],
    pub revision: Le32,
    pub header_size: Le32,
    pub header_crc32: Le32,
    pub reserved: Le32,
    pub my_lba: Le64,
    pub alternate_lba: Le64,
    pub first_usable_lba: Le64,
    pub last_usable_lba: Le64,
    pub disk_guid: [u8; 16],
    pub partition_entry_lba: Le64,
    pub number_of_partition_entries: Le32,
    pub size_of_partition_entry: Le32,
    pub partition_entry_array_crc32: Le32,
}

/// One partition entry (UEFI 5.3.3, "GPT Partition Entry"); entries may be longer than this
/// (size_of_partition_entry), the rest being reserved.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct RawGptEntry {
    pub partition_type_guid: [u8; 16],
    pub unique_partition_guid: [u8; 16],
    pub starting_lba: Le64,
    /// Inclusive.
    pub ending_lba: Le64,
    pub attributes: Le64,
    /// UTF-16LE, NUL-padded.
    pub partition_name: [U16<LittleEndian>; 36],
}

const _: () = assert!(size_of::<RawGptHeader>() == 92 && size_of::<RawGptEntry>() == 128);
const _: () = assert!(HEADER_MIN == 92 && ENTRY_MIN == 128);

pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Logical block sizes probed, in this order (512 first: a 4Kn disk has zeros at byte 512).
pub const SECTOR_SIZES: [u64; 2] = [512, 4096];
/// The header is 92 bytes in every UEFI revision so far; the rest of its LBA is reserved.
const HEADER_MIN: u32 = 92;
/// Largest entry array read. UEFI requires at least 16 KiB; tools write exactly that (128 × 128
/// bytes). 1 MiB leaves room for odd creators and bounds the allocation a corrupt count asks for.
pub const MAX_ENTRY_BYTES: u64 = 1 << 20;
/// UEFI 5.3.3: an entry is 128 × 2^n bytes.
const ENTRY_MIN: u32 = 128;

/// fdisk's names for common partition type GUIDs (lowercase).
pub fn type_name(g: &str) -> Option<&'static str> {
    Some(match g {
        "0fc63daf-8483-4772-8e79-3d69d8477de4" => "Linux filesystem",
        "e6d6d379-f507-44c2-a23c-238f2a3df928" => "Linux LVM",
        "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" => "Linux swap",
        "a19d880f-05fc-4d3b-a006-743f0f84911e" => "Linux RAID",
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709" => "Linux root (x86-64)",
        "44479540-f297-41b2-9af7-d131d5f0458a" => "Linux root (x86)",
        "b921b045-1df0-41c3-af44-4c6f280d3fae" => "Linux root (ARM-64)",
        "933ac7e1-2eb4-4f13-b844-0e14e2aef915" => "Linux home",
        "bc13c2ff-59e6-4262-a352-b275fd6f7172" => "Linux extended boot",
        "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" => "EFI System",
        "21686148-6449-6e6f-744e-656564454649" => "BIOS boot",
        "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7" => "Microsoft basic data",
        "e3c9e316-0b5c-4db8-817d-f92df00215ae" => "Microsoft reserved",
        "de94bba4-06d1-4d40-a16a-bfd50179d6ac" => "Windows recovery environment",
        "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3" => "Microsoft LDM metadata",
        "af9b60a0-1431-4f62-bc68-3311714a69ad" => "Microsoft LDM data",
        "aa31e02a-400f-11db-9590-000c2911d1b8" => "VMware VMFS",
        "9d275380-40ad-11db-bf97-000c2911d1b8" => "VMware Diagnostic",
        "48465300-0000-11aa-aa11-00306543ecac" => "Apple HFS/HFS+",
        _ => return None,
    })
}

/// A header that passed validation (UEFI 5.3.2, "GPT Header" table).
#[derive(Clone, Debug)]
struct Header {
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: String,
    entries_lba: u64,
    count: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// Validates the header in `b` (one LBA read at `lba`): signature, size, CRC, its own LBA and
/// the entry array's geometry. The error text says which check failed.
fn parse_header(b: &[u8], lba: u64, ss: u64) -> std::result::Result<Header, String> {
    if b.get(..8) != Some(SIGNATURE.as_slice()) {
        return Err("no \"EFI PART\" signature".into());
    }
    let Ok((raw, _)) = RawGptHeader::ref_from_prefix(b) else {
        // Too short for a header: report the size field as far as it is there (0 if not).
        let size = le32(b, offset_of!(RawGptHeader, header_size));
        return Err(format!("header size {size} outside {HEADER_MIN}..={ss}"));
    };
    let size = raw.header_size.get();
    let in_lba = usize::try_from(size)
        .ok()
        .filter(|_| size >= HEADER_MIN && u64::from(size) <= ss)
        .and_then(|n| b.get(..n));
    let Some(in_lba) = in_lba else {
        return Err(format!("header size {size} outside {HEADER_MIN}..={ss}"));
    };
    let mut h = in_lba.to_vec();
    let stored = raw.header_crc32.get();
    let crc_at = offset_of!(RawGptHeader, header_crc32);
    // The CRC is computed with its own field zeroed (inside the 92 bytes checked above).
    if let Some(f) = h
        .get_mut(crc_at..)
        .and_then(|r| r.get_mut(..size_of::<Le32>()))
    {
        f.fill(0);
    }
    let crc = crc32fast::hash(&h);
    if crc != stored {
        return Err(format!(
            "header CRC32 {stored:#010x} does not match the computed {crc:#010x}"
        ));
    }
    let my_lba = raw.my_lba.get();
    if my_lba != lba {
        return Err(format!(
            "header says it is at LBA {my_lba}, read at LBA {lba}"
        ));
    }
    let first_usable = raw.first_usable_lba.get();
    let last_usable = raw.last_usable_lba.get();
    if first_usable > last_usable.saturating_add(1) {
        return Err(format!(
            "first usable LBA {first_usable} is past the last usable LBA {last_usable}"
        ));
    }
    let count = raw.number_of_partition_entries.get();
    let entry_size = raw.size_of_partition_entry.get();
    if entry_size < ENTRY_MIN || entry_size % ENTRY_MIN != 0 {
        return Err(format!(
            "partition entry size {entry_size} is not a multiple of {ENTRY_MIN}"
        ));
    }
    // Two u32: the product fits, and a saturated one would exceed the limit all the same.
    let bytes = u64::from(count).saturating_mul(u64::from(entry_size));
    if bytes > MAX_ENTRY_BYTES {
        return Err(format!(
            "{count} entries of {entry_size} bytes ({bytes} bytes) exceed the {MAX_ENTRY_BYTES}-byte limit"
        ));
    }
    let entries_lba = raw.partition_entry_lba.get();
    if entries_lba.checked_mul(ss).is_none() {
        return Err(format!("partition entry LBA {entries_lba} is impossible"));
    }
    Ok(Header {
        alternate_lba: raw.alternate_lba.get(),
        first_usable,
        last_usable,
        disk_guid: guid(&raw.disk_guid),
        entries_lba,
        count,
        entry_size,
        entries_crc: raw.partition_entry_array_crc32.get(),
    })
}

/// Reads the entry array of `h`; Ok(Err(reason)) when it is unreadable or fails its CRC.
fn read_entries(
    dev: &dyn BlockDevice,
    h: &Header,
    ss: u64,
) -> Result<std::result::Result<Vec<u8>, String>> {
    // Both products were checked in parse_header (the length against MAX_ENTRY_BYTES).
    let len = u64::from(h.count).saturating_mul(u64::from(h.entry_size));
    let (Some(off), Ok(n)) = (h.entries_lba.checked_mul(ss), usize::try_from(len)) else {
        return Ok(Err(format!(
            "partition entry array at LBA {} ({len} bytes) is impossible",
            h.entries_lba
        )));
    };
    let Some(buf) = read_opt(dev, off, n)? else {
        return Ok(Err(format!(
            "partition entry array at LBA {} ({len} bytes) lies past the end of the disk",
            h.entries_lba
        )));
    };
    let crc = crc32fast::hash(&buf);
    if crc != h.entries_crc {
        return Ok(Err(format!(
            "partition entry array CRC32 {:#010x} does not match the computed {crc:#010x}",
            h.entries_crc
        )));
    }
    Ok(Ok(buf))
}

/// Reads and validates the header at `lba`; Ok(None) when there is no signature there.
fn header_at(
    dev: &dyn BlockDevice,
    lba: u64,
    ss: u64,
) -> Result<Option<std::result::Result<Header, String>>> {
    let Some(off) = lba.checked_mul(ss) else {
        return Ok(None);
    };
    let Ok(n) = usize::try_from(ss) else {
        return Ok(None);
    };
    let Some(b) = read_opt(dev, off, n)? else {
        return Ok(None);
    };
    if b.get(..8) != Some(SIGNATURE.as_slice()) {
        return Ok(None);
    }
    Ok(Some(parse_header(&b, lba, ss)))
}

/// The last LBA of `dev` for sector size `ss`.
fn last_lba(dev: &dyn BlockDevice, ss: u64) -> Option<u64> {
    dev.len().checked_div(ss)?.checked_sub(1).filter(|&l| l > 1)
}

/// Reads the GPT of `dev`: Ok(None) if no header signature at LBA 1 or at the last LBA for
/// either sector size; the backup is used (with a warning) when the primary is damaged, and an
/// entry array with a bad CRC is used only when no copy is intact (with a warning too).
pub fn read(dev: &dyn BlockDevice, name: &str) -> Result<Option<Table>> {
    let mut primary = None;
    for ss in SECTOR_SIZES {
        if let Some(h) = header_at(dev, 1, ss)? {
            primary = Some((ss, h));
            break;
        }
    }
    let mut warnings = Vec::new();
    let (ss, primary) = match primary {
        Some(p) => p,
        None => {
            // No primary signature at all: a zeroed LBA 1. Look for a backup at the end.
            for ss in SECTOR_SIZES {
                let Some(last) = last_lba(dev, ss) else {
                    continue;
                };
                if let Some(Ok(h)) = header_at(dev, last, ss)? {
                    if let Ok(entries) = read_entries(dev, &h, ss)? {
                        warnings.push(format!(
                            "{name}: primary GPT header missing at LBA 1: using the backup at LBA {last}"
                        ));
                        return Ok(Some(table(name, &h, &entries, ss, warnings)));
                    }
                }
            }
            return Ok(None);
        }
    };
    let primary_hdr_offset = ss;
    let mut damaged_entries = None;
    let why = match &primary {
        Ok(h) => match read_entries(dev, h, ss)? {
            Ok(entries) => {
                check_backup(dev, name, h, ss, &mut warnings)?;
                return Ok(Some(table(name, h, &entries, ss, warnings)));
            }
            Err(why) => {
                let n = h.count.checked_mul(h.entry_size);
                let n = n.and_then(|n| usize::try_from(n).ok());
                if let (Some(n), Some(off)) = (n, h.entries_lba.checked_mul(ss)) {
                    if let Some(b) = read_opt(dev, off, n)? {
                        damaged_entries = Some((h.clone(), b));
                    }
                }
                why
            }
        },
        Err(why) => why.clone(),
    };
    // The primary is damaged: try the backup where the primary points, then at the last LBA.
    let mut backup_lbas = Vec::new();
    if let Ok(h) = &primary {
        backup_lbas.push(h.alternate_lba);
    }
    if let Some(l) = last_lba(dev, ss) {
        if !backup_lbas.contains(&l) {
            backup_lbas.push(l);
        }
    }
    for lba in backup_lbas {
        if let Some(Ok(h)) = header_at(dev, lba, ss)? {
            if let Ok(entries) = read_entries(dev, &h, ss)? {
                warnings.push(format!(
                    "{name}: primary GPT damaged ({why}): using the backup header at LBA {lba}"
                ));
                return Ok(Some(table(name, &h, &entries, ss, warnings)));
            }
        }
    }
    if let Some((h, entries)) = damaged_entries {
        warnings.push(format!(
            "{name}: GPT {why}, and no intact backup: the entries are listed as found, check them"
        ));
        return Ok(Some(table(name, &h, &entries, ss, warnings)));
    }
    Err(Error::corrupt(
        name,
        "gpt header",
        primary_hdr_offset,
        format!("{why}; no intact backup header either"),
    ))
}

/// Warns when the backup header the primary points to is missing or damaged (a truncated image
/// is the usual cause), without affecting what is listed.
fn check_backup(
    dev: &dyn BlockDevice,
    name: &str,
    h: &Header,
    ss: u64,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let lba = h.alternate_lba;
    match header_at(dev, lba, ss)? {
        Some(Ok(_)) => {}
        Some(Err(why)) => warnings.push(format!("{name}: backup GPT header at LBA {lba}: {why}")),
        None => warnings.push(format!(
            "{name}: no backup GPT header at LBA {lba} (the disk has {} sectors of {ss} bytes)",
            dev.len().checked_div(ss).unwrap_or(0)
        )),
    }
    Ok(())
}

/// Builds the table from a validated header and its entry array (UEFI 5.3.3 "GPT Partition
/// Entry Array": type GUID, unique GUID, first and last LBA inclusive, attributes, name).
fn table(name: &str, h: &Header, entries: &[u8], ss: u64, mut warnings: Vec<String>) -> Table {
    let mut partitions = Vec::new();
    // At least ENTRY_MIN (parse_header); a u32 always fits a 64-bit usize.
    let esize = usize::try_from(h.entry_size).unwrap_or(usize::MAX);
    for (i, e) in entries.chunks_exact(esize).enumerate() {
        // entry_size is a multiple of ENTRY_MIN (parse_header), so every chunk holds an entry.
        let Ok((e, _)) = RawGptEntry::ref_from_prefix(e) else {
            continue;
        };
        if e.partition_type_guid.iter().all(|&b| b == 0) {
            continue;
        }
        let number = u32::try_from(i).map_or(u32::MAX, |n| n.saturating_add(1));
        let first = e.starting_lba.get();
        let last = e.ending_lba.get();
        let range = last
            .checked_sub(first)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(ss))
            .and_then(|size| first.checked_mul(ss).map(|start| (start, size)));
        let Some((start, size)) = range else {
            warnings.push(format!(
                "{name}: GPT entry {number}: impossible LBA range {first}..={last}: ignored"
            ));
            continue;
        };
        if first < h.first_usable || last > h.last_usable {
            warnings.push(format!(
                "{name}: GPT entry {number} (LBA {first}..={last}) lies outside the usable LBAs \
                 {}..={}",
                h.first_usable, h.last_usable
            ));
        }
        let type_id = guid(&e.partition_type_guid);
        let attributes = e.attributes.get();
        partitions.push(Partition {
            number,
            role: Role::Primary,
            start,
            size,
            type_name: type_name(&type_id).map(str::to_string),
            type_id,
            name: non_empty(utf16le(e.partition_name.as_bytes())),
            uuid: Some(guid(&e.unique_partition_guid)),
            attributes,
            bootable: attributes & (1 << 2) != 0,
        });
    }
    let usable_start = h.first_usable.saturating_mul(ss);
    let usable_end = h.last_usable.saturating_add(1).saturating_mul(ss);
    Table {
        kind: TableKind::Gpt,
        sector_size: ss,
        id: h.disk_guid.clone(),
        usable_start,
        usable_end,
        partitions,
        warnings,
    }
}
