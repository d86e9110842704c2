//! Layer 2: volumes. Carves each disk into what the guest sees (partitions, LVM logical
//! volumes), each itself a `BlockDevice`, and recognises what each one holds.
//!
//! `discover` names everything as the guest would: disks `/dev/sda`, `/dev/sdb`, … in the order
//! given, partitions `/dev/sda1`, logical volumes `/dev/VG/LV` (alias `/dev/mapper/VG-LV`).

mod bytes;
pub mod content;
pub mod error;
pub mod gpt;
pub mod lvm;
pub mod mbr;
pub mod slice;
pub mod table;

pub use content::Content;
pub use error::{Error, Result};
pub use slice::Slice;
pub use table::{Partition, Role, Table, TableKind};

use crate::block::BlockDevice;
use serde::Serialize;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeKind {
    Disk,
    Partition,
    ExtendedPartition,
    LogicalVolume,
    /// Space on a partitioned disk that no partition covers.
    Free,
}

/// The partition-table facts of a partition volume.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionInfo {
    pub table: TableKind,
    pub number: u32,
    pub type_id: String,
    pub type_name: Option<String>,
    /// GPT partition name.
    pub name: Option<String>,
    /// PARTUUID.
    pub uuid: Option<String>,
    pub attributes: u64,
    pub bootable: bool,
    /// Start and size as the table gives them, in bytes (the volume may be clamped to the disk).
    pub table_start: u64,
    pub table_size: u64,
}

/// The table on a disk volume.
#[derive(Clone, Debug, Serialize)]
pub struct TableInfo {
    pub kind: TableKind,
    pub sector_size: u64,
    pub id: String,
}

/// The LVM facts of a logical volume.
#[derive(Clone, Debug, Serialize)]
pub struct LvInfo {
    pub vg: String,
    pub lv: String,
    pub uuid: String,
    pub segment_types: Vec<String>,
    /// Why it cannot be read (unsupported segment type, missing PV), if it cannot.
    pub problem: Option<String>,
}

/// The LVM facts of a physical volume (a partition or disk holding a PV label).
#[derive(Clone, Debug, Serialize)]
pub struct PvInfo {
    pub uuid: String,
    pub vg: Option<String>,
}

#[derive(Clone, Serialize)]
pub struct Volume {
    /// The guest's device name.
    pub name: String,
    /// Other names the guest has for it (`/dev/mapper/VG-LV`).
    pub aliases: Vec<String>,
    pub kind: VolumeKind,
    /// Name of the disk (partitions, free space) or `/dev/VG` (logical volumes).
    pub parent: Option<String>,
    /// The volume's bytes. None for a logical volume that cannot be mapped (see `lvm.problem`).
    #[serde(skip)]
    pub dev: Option<Arc<dyn BlockDevice>>,
    /// Where it starts on its parent disk (partitions, free space).
    pub offset: u64,
    pub size: u64,
    pub table: Option<TableInfo>,
    pub partition: Option<PartitionInfo>,
    pub lvm: Option<LvInfo>,
    pub pv: Option<PvInfo>,
    pub content: Option<Content>,
    /// Things a careful user should know (a damaged primary GPT, a clamped partition, ...).
    pub warnings: Vec<String>,
    /// Why this disk's table or this volume could not be read, when it could not.
    pub error: Option<String>,
}

impl Volume {
    fn new(name: String, kind: VolumeKind, dev: Option<Arc<dyn BlockDevice>>, size: u64) -> Self {
        Volume {
            name,
            aliases: Vec::new(),
            kind,
            parent: None,
            dev,
            offset: 0,
            size,
            table: None,
            partition: None,
            lvm: None,
            pv: None,
            content: None,
            warnings: Vec::new(),
            error: None,
        }
    }
}

/// Linux's name for the `i`th disk (0-based): sda … sdz, sdaa … sdzz, sdaaa … (bijective base 26).
pub fn disk_name(i: usize) -> String {
    // The digits of i + 1 in bijective base 26, least significant first.
    let mut n = i;
    let mut letters = Vec::new();
    loop {
        letters.push(b"abcdefghijklmnopqrstuvwxyz"[n % 26]);
        let Some(m) = (n / 26).checked_sub(1) else {
            break;
        };
        n = m;
    }
    letters.reverse();
    format!("/dev/sd{}", String::from_utf8_lossy(&letters))
}

/// The partition's name: `/dev/sda1` (Linux appends a `p` only after a trailing digit, which
/// sdX names never have).
fn partition_name(disk: &str, number: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

/// device-mapper's name for VG/LV: each `-` inside either name doubled, joined by one `-`.
pub fn mapper_name(vg: &str, lv: &str) -> String {
    format!(
        "/dev/mapper/{}-{}",
        vg.replace('-', "--"),
        lv.replace('-', "--")
    )
}

/// Gaps smaller than this between partitions are alignment padding, not free space worth listing.
pub const MIN_FREE: u64 = 1 << 20;

/// Finds every volume on `disks`: the disks themselves, their partitions (or a whole-disk
/// filesystem), LVM2 logical volumes over the PVs among them, and free space. A disk whose table
/// cannot be read is listed with the error; the others are unaffected.
pub fn discover(disks: &[Arc<dyn BlockDevice>]) -> Result<Vec<Volume>> {
    let mut out = Vec::new();
    for (i, dev) in disks.iter().enumerate() {
        disk_volumes(&disk_name(i), dev, &mut out);
    }
    let candidates: Vec<(String, Arc<dyn BlockDevice>)> = out
        .iter()
        .filter(|v| match v.kind {
            VolumeKind::Partition => true,
            VolumeKind::Disk => v.table.is_none() && v.error.is_none(),
            _ => false,
        })
        .filter_map(|v| v.dev.clone().map(|d| (v.name.clone(), d)))
        .collect();
    let (pvs, vgs) = lvm::assemble(&candidates)?;
    for pv in &pvs {
        let vg = vgs.iter().find(|g| pv.vg_name.as_deref() == Some(&g.name));
        if let Some(v) = out.iter_mut().find(|v| v.name == pv.device) {
            v.pv = Some(PvInfo {
                uuid: pv.uuid.clone(),
                vg: pv.vg_name.clone(),
            });
            if let Some(g) = vg {
                v.warnings.extend(g.warnings.iter().cloned());
            }
        }
    }
    for vg in &vgs {
        for lv in &vg.lvs {
            let mut v = Volume::new(
                format!("/dev/{}/{}", lv.vg, lv.name),
                VolumeKind::LogicalVolume,
                lv.dev.clone(),
                lv.size,
            );
            v.aliases.push(mapper_name(&lv.vg, &lv.name));
            v.parent = Some(format!("/dev/{}", lv.vg));
            v.lvm = Some(LvInfo {
                vg: lv.vg.clone(),
                lv: lv.name.clone(),
                uuid: lv.uuid.clone(),
                segment_types: lv.segment_types.clone(),
                problem: lv.problem.clone(),
            });
            if let Some(d) = &lv.dev {
                set_content(&mut v, d.as_ref());
            }
            out.push(v);
        }
    }
    Ok(out)
}

fn set_content(v: &mut Volume, dev: &dyn BlockDevice) {
    match content::probe(dev) {
        Ok(c) => v.content = c,
        Err(e) => v
            .warnings
            .push(format!("cannot probe the content of {}: {e}", v.name)),
    }
}

/// The disk volume for `dev`, then its partitions and free space (or its whole-disk content).
fn disk_volumes(name: &str, dev: &Arc<dyn BlockDevice>, out: &mut Vec<Volume>) {
    let mut disk = Volume::new(
        name.to_string(),
        VolumeKind::Disk,
        Some(dev.clone()),
        dev.len(),
    );
    let t = match table::read(dev.as_ref(), name) {
        Ok(Some(t)) => t,
        Ok(None) => {
            set_content(&mut disk, dev.as_ref());
            out.push(disk);
            return;
        }
        Err(e) => {
            disk.error = Some(e.to_string());
            out.push(disk);
            return;
        }
    };
    disk.table = Some(TableInfo {
        kind: t.kind,
        sector_size: t.sector_size,
        id: t.id.clone(),
    });
    disk.warnings = t.warnings.clone();
    out.push(disk);
    let len = dev.len();
    for p in &t.partitions {
        let pname = partition_name(name, p.number);
        let kind = match p.role {
            Role::Extended => VolumeKind::ExtendedPartition,
            _ => VolumeKind::Partition,
        };
        let (start, size, warning) = clamp(p.start, p.size, len, &pname);
        let slice: Option<Arc<dyn BlockDevice>> = match Slice::new(dev.clone(), start, size) {
            Ok(s) => Some(Arc::new(s)),
            Err(_) => None,
        };
        let mut v = Volume::new(pname, kind, slice.clone(), size);
        v.parent = Some(name.to_string());
        v.offset = start;
        v.partition = Some(PartitionInfo {
            table: t.kind,
            number: p.number,
            type_id: p.type_id.clone(),
            type_name: p.type_name.clone(),
            name: p.name.clone(),
            uuid: p.uuid.clone(),
            attributes: p.attributes,
            bootable: p.bootable,
            table_start: p.start,
            table_size: p.size,
        });
        if let Some(w) = warning {
            v.warnings.push(w);
        }
        if let (Some(s), VolumeKind::Partition) = (&slice, kind) {
            if size > 0 {
                set_content(&mut v, s.as_ref());
            }
        }
        out.push(v);
    }
    for (start, end) in free_ranges(&t, len) {
        let mut v = Volume::new(
            format!("{name}:free@{start}"),
            VolumeKind::Free,
            Slice::new(dev.clone(), start, end.saturating_sub(start))
                .ok()
                .map(|s| -> Arc<dyn BlockDevice> { Arc::new(s) }),
            end.saturating_sub(start),
        );
        v.parent = Some(name.to_string());
        v.offset = start;
        out.push(v);
    }
}

/// Clamps a partition to the disk as Linux does ("extends beyond EOD, truncated"): the part
/// inside the disk stays readable, and the warning names the partition. One that starts past
/// the end becomes empty.
fn clamp(start: u64, size: u64, len: u64, name: &str) -> (u64, u64, Option<String>) {
    let end = start.saturating_add(size);
    if start >= len && size > 0 {
        let w = format!(
            "{name}: starts at byte {start}, past the end of the disk ({len} bytes): listed empty"
        );
        return (len, 0, Some(w));
    }
    if end > len {
        let w = format!(
            "{name}: ends at byte {end}, past the end of the disk ({len} bytes): truncated to {} bytes",
            len.saturating_sub(start)
        );
        return (start, len.saturating_sub(start), Some(w));
    }
    (start, size, None)
}

/// Unpartitioned gaps of at least MIN_FREE bytes in the table's usable area (top level: primary
/// and extended partitions on MBR, all entries on GPT).
fn free_ranges(t: &Table, len: u64) -> Vec<(u64, u64)> {
    let mut used: Vec<(u64, u64)> = t
        .partitions
        .iter()
        .filter(|p| p.role != Role::Logical)
        .map(|p| (p.start, p.start.saturating_add(p.size)))
        .collect();
    used.sort_unstable();
    let end = t.usable_end.min(len);
    let mut pos = t.usable_start;
    let mut out = Vec::new();
    for (s, e) in used {
        if s > pos && s.min(end) >= pos.saturating_add(MIN_FREE) {
            out.push((pos, s.min(end)));
        }
        pos = pos.max(e);
    }
    if end >= pos.saturating_add(MIN_FREE) {
        out.push((pos, end));
    }
    out
}
