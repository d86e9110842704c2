//! The device map: which of our volumes an fstab source names.
//!
//! Stable names (`UUID=`, `LABEL=`, `PARTUUID=`, `PARTLABEL=`, their `/dev/disk/by-*` forms,
//! LVM paths) are matched against what the volumes hold. Kernel names are matched by the
//! disk's position, whatever bus the source hypervisor put it on: `hda`, `xvda`, `vda`,
//! `cciss/c0d0` and `nvme0n1` all name our first disk, `sda` (what libguestfs does too). A
//! kernel name, and a `by-id`/`by-path` link (which spells the bus or the disk's serial), is
//! *hard-coded*: it stops working when the disk moves, so fixers rewrite it.

use super::devname::{index_letters, KernelDev};
use super::fstab::Spec;
use super::inspect::windows::DriveLetter;
use crate::volume::{TableKind, Volume, VolumeKind};
use serde::Serialize;

/// How one fstab source resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// Our name for the volume (`/dev/sda1`, `/dev/VG/LV`), when found.
    pub device: Option<String>,
    /// What matched: "uuid", "label", "partuuid", "partlabel", "lvm", "kernel name".
    pub by: Option<&'static str>,
    /// A bus-dependent name the guest will not find on the new hypervisor.
    pub hard_coded: bool,
    /// Why it did not resolve, or why the match is doubtful.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Whether a device path depends on the bus or the disk's identity.
pub fn is_hard_coded(path: &str) -> bool {
    if KernelDev::parse(path).is_some() {
        return true;
    }
    if let Some(id) = path.strip_prefix("/dev/disk/by-id/") {
        // dm-name-/dm-uuid-/lvm-pv-uuid- follow the volume, not the disk.
        return !(id.starts_with("dm-") || id.starts_with("lvm-pv-uuid-"));
    }
    path.starts_with("/dev/disk/by-path/")
}

/// Legs, metadata and other hidden parts of an LV carry the same filesystem UUID as the LV
/// itself; the LV is the one the guest mounts.
fn hidden_lv(v: &Volume) -> bool {
    v.lvm.as_ref().is_some_and(|l| {
        [
            "_rimage_", "_rmeta_", "_mimage_", "_mlog", "_tdata", "_tmeta", "_cdata",
        ]
        .iter()
        .any(|p| l.lv.contains(p))
    })
}

/// The volumes for which `pred` holds, the visible ones first.
fn find(vols: &[Volume], pred: impl Fn(&Volume) -> bool) -> Vec<&Volume> {
    let mut m: Vec<&Volume> = vols.iter().filter(|v| pred(v)).collect();
    m.sort_by_key(|v| hidden_lv(v));
    m
}

fn eq(a: &Option<String>, b: &str) -> bool {
    a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b))
}

fn by_name<'v>(vols: &'v [Volume], name: &str) -> Option<&'v Volume> {
    vols.iter()
        .find(|v| v.name == name || v.aliases.iter().any(|a| a == name))
}

/// Resolves an fstab source against the guest's volumes.
pub fn resolve(spec: &str, vols: &[Volume]) -> Resolution {
    let content = |v: &Volume| v.content.clone();
    let (by, matches): (&'static str, Vec<&Volume>) = match Spec::parse(spec) {
        Spec::Uuid(u) => (
            "uuid",
            find(vols, |v| eq(&content(v).and_then(|c| c.uuid), &u)),
        ),
        Spec::Label(l) => (
            "label",
            find(vols, |v| {
                content(v).and_then(|c| c.label).as_deref() == Some(l.as_str())
            }),
        ),
        Spec::PartUuid(u) => (
            "partuuid",
            find(vols, |v| {
                eq(&v.partition.as_ref().and_then(|p| p.uuid.clone()), &u)
            }),
        ),
        Spec::PartLabel(l) => (
            "partlabel",
            find(vols, |v| {
                v.partition.as_ref().and_then(|p| p.name.as_deref()) == Some(l.as_str())
            }),
        ),
        Spec::Path(p) => return resolve_path(&p, vols),
        Spec::Other(_) => {
            return Resolution {
                problem: Some("not a local device".into()),
                ..Resolution::default()
            }
        }
    };
    let problem = match matches.len() {
        0 => Some(format!("no volume has this {by}")),
        1 => None,
        n => Some(format!(
            "{n} volumes have this {by} ({}); took the first",
            matches
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    };
    Resolution {
        device: matches.first().map(|v| v.name.clone()),
        by: Some(by),
        hard_coded: false,
        problem,
    }
}

fn resolve_path(path: &str, vols: &[Volume]) -> Resolution {
    let hard_coded = is_hard_coded(path);
    let found = |v: &Volume, by| Resolution {
        device: Some(v.name.clone()),
        by: Some(by),
        hard_coded,
        problem: None,
    };
    let missing = |problem: String| Resolution {
        device: None,
        by: None,
        hard_coded,
        problem: Some(problem),
    };
    if let Some(v) = by_name(vols, path).filter(|v| v.lvm.is_some()) {
        return found(v, "lvm");
    }
    if let Some(id) = path.strip_prefix("/dev/disk/by-id/") {
        if let Some(name) = id.strip_prefix("dm-name-") {
            return match by_name(vols, &format!("/dev/mapper/{name}")) {
                Some(v) => found(v, "lvm"),
                None => missing(format!("no logical volume /dev/mapper/{name}")),
            };
        }
        if let Some(u) = id.strip_prefix("dm-uuid-LVM-") {
            // The VG's and the LV's UUIDs, 32 characters each, without dashes.
            let lv = u.get(32..).unwrap_or("");
            let m = find(vols, |v| {
                v.lvm
                    .as_ref()
                    .is_some_and(|l| l.uuid.replace('-', "") == lv)
            });
            return match m.first() {
                Some(v) => found(v, "lvm"),
                None => missing("no logical volume has this UUID".into()),
            };
        }
        return missing("names a disk by its serial number, which the image does not keep".into());
    }
    if path.starts_with("/dev/disk/by-path/") {
        return missing(
            "names a disk by its controller address, which the image does not keep".into(),
        );
    }
    let Some(k) = KernelDev::parse(path) else {
        return missing("not a device ferry knows how to find".into());
    };
    let Some(index) = k.index else {
        return missing("not a real disk position".into());
    };
    let ours = format!("/dev/sd{}{}", index_letters(index), k.part);
    match by_name(vols, &ours) {
        Some(v) if v.kind != VolumeKind::Free => found(v, "kernel name"),
        _ => missing(format!(
            "disk {} of the guest ({ours}) is not among the images given",
            u64::from(index) + 1
        )),
    }
}

/// How the source hypervisor named disks, from the kernel names the guest uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    /// `/dev/sdX`: SCSI, SATA, or USB (VMware, Hyper-V, physical).
    Sd,
    /// `/dev/hdX`: IDE (old kernels, old VMware and Xen HVM guests).
    Hd,
    /// `/dev/xvdX`: Xen paravirtual.
    Xvd,
    /// `/dev/vdX`: virtio-blk.
    Vd,
    /// `/dev/cciss/cCdD`: HP Smart Array.
    Cciss,
    /// `/dev/nvmeNn1`.
    Nvme,
}

impl Naming {
    /// The naming of the first hard-coded kernel name among `names`.
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Naming> {
        names.into_iter().find_map(|n| {
            let k = KernelDev::parse(n)?;
            let d = k.disk.strip_prefix("/dev/")?;
            Some(if d.starts_with("cciss/") {
                Naming::Cciss
            } else if d.starts_with("nvme") {
                Naming::Nvme
            } else if d.starts_with("xvd") {
                Naming::Xvd
            } else if d.starts_with("hd") {
                Naming::Hd
            } else if d.starts_with("vd") {
                Naming::Vd
            } else {
                Naming::Sd
            })
        })
    }

    /// The guest's name under this naming for our `/dev/sdXN`; None for other volumes.
    pub fn name(self, ours: &str) -> Option<String> {
        let k = KernelDev::parse(ours).filter(|k| k.disk.starts_with("/dev/sd"))?;
        let i = k.index?;
        let letters = index_letters(i);
        let part = &k.part;
        Some(match self {
            Naming::Sd => format!("/dev/sd{letters}{part}"),
            Naming::Hd => format!("/dev/hd{letters}{part}"),
            Naming::Xvd => format!("/dev/xvd{letters}{part}"),
            Naming::Vd => format!("/dev/vd{letters}{part}"),
            Naming::Cciss if part.is_empty() => format!("/dev/cciss/c0d{i}"),
            Naming::Cciss => format!("/dev/cciss/c0d{i}p{part}"),
            Naming::Nvme if part.is_empty() => format!("/dev/nvme{i}n1"),
            Naming::Nvme => format!("/dev/nvme{i}n1p{part}"),
        })
    }
}

/// The volumes a Windows drive letter from `MountedDevices` names: the GPT partition with
/// that unique partition GUID, or the partition of the MBR disk with that signature that
/// starts at that byte offset (what Windows itself keys a basic disk's volumes by). More
/// than one is a cloned disk the guest never saw beside its twin; none is a letter for a
/// disk not given (a CD-ROM, a USB stick), which the caller ignores.
pub fn drive_letter<'v>(dl: &DriveLetter, vols: &'v [Volume]) -> Vec<&'v Volume> {
    let part = |v: &&Volume| v.kind == VolumeKind::Partition;
    if let Some(guid) = &dl.gpt_partition {
        return vols
            .iter()
            .filter(part)
            .filter(|v| {
                v.partition
                    .as_ref()
                    .is_some_and(|p| p.table == TableKind::Gpt && eq(&p.uuid, guid))
            })
            .collect();
    }
    let (Some(sig), Some(offset)) = (&dl.mbr_signature, dl.mbr_offset) else {
        return Vec::new();
    };
    let disks: Vec<&str> = vols
        .iter()
        .filter(|v| {
            v.table
                .as_ref()
                .is_some_and(|t| t.kind == TableKind::Mbr && t.id.eq_ignore_ascii_case(sig))
        })
        .map(|v| v.name.as_str())
        .collect();
    vols.iter()
        .filter(part)
        .filter(|v| {
            v.parent.as_deref().is_some_and(|d| disks.contains(&d))
                && v.partition
                    .as_ref()
                    .is_some_and(|p| p.table == TableKind::Mbr && p.table_start == offset)
        })
        .collect()
}
