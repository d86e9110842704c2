//! LVM2 (placeholder until the reader lands): physical volume labels, the text metadata, and
//! logical volumes mapped over PVs as devices.

use super::Result;
use crate::block::BlockDevice;
use serde::Serialize;
use std::sync::Arc;

/// A physical volume found on a candidate device.
#[derive(Clone, Debug, Serialize)]
pub struct Pv {
    /// Guest name of the device holding it (`/dev/sda2`).
    pub device: String,
    pub uuid: String,
    pub vg_name: Option<String>,
    pub size: u64,
}

/// A logical volume. `dev` is None when it cannot be read (unsupported segment type, missing
/// PV); `problem` says why.
#[derive(Clone, Serialize)]
pub struct Lv {
    pub vg: String,
    pub name: String,
    pub uuid: String,
    pub size: u64,
    /// Segment types in order (`linear`, `striped`, `thin`, ...).
    pub segment_types: Vec<String>,
    #[serde(skip)]
    pub dev: Option<Arc<dyn BlockDevice>>,
    pub problem: Option<String>,
}

#[derive(Clone, Serialize)]
pub struct Vg {
    pub name: String,
    pub uuid: String,
    pub seqno: u64,
    pub extent_size: u64,
    /// (PV uuid, guest device name if found on the given disks).
    pub pvs: Vec<(String, Option<String>)>,
    pub lvs: Vec<Lv>,
    pub warnings: Vec<String>,
}

/// Scans `candidates` (guest name, device: whole disks without a partition table, and every
/// partition) for PV labels, reads the newest metadata of each VG and maps its LVs.
pub fn assemble(_candidates: &[(String, Arc<dyn BlockDevice>)]) -> Result<(Vec<Pv>, Vec<Vg>)> {
    Ok((Vec::new(), Vec::new()))
}
