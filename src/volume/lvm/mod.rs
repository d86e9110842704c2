//! LVM2: physical volume labels, the text metadata, and logical volumes mapped over PVs as
//! devices.
//!
//! `assemble` finds PV labels on the candidate devices, reads every metadata copy (each PV has
//! zero, one or two metadata areas), keeps the newest `seqno` of each VG (a damaged copy only
//! costs a warning while another one is good), and maps each LV whose segments are all linear
//! or striped. What cannot be read (a missing PV, another segment type, a segment past its PV)
//! is reported on that LV alone.

pub mod label;
pub mod lv;
pub mod metadata;
pub mod vgmeta;

use super::{Error, Result};
use crate::block::BlockDevice;
use crate::bytes::wide;
use label::{dashed, undashed, MdaHeader, PvLabel, SECTOR};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use vgmeta::{LvMeta, PvMeta, VgMeta};

/// A physical volume found on a candidate device.
#[derive(Clone, Debug, Serialize)]
pub struct Pv {
    /// Guest name of the device holding it (`/dev/sda2`).
    pub device: String,
    /// With dashes, as the metadata writes it (empty if the label was unreadable).
    pub uuid: String,
    pub vg_name: Option<String>,
    /// Device size in bytes as the PV label records it.
    pub size: u64,
    /// Where the data area (the first extent) starts, in bytes, per the label.
    pub pe_start: Option<u64>,
    /// Metadata areas on this PV (0, 1 or 2).
    pub metadata_areas: usize,
    /// Why this PV is unusable (corrupt label, no readable metadata).
    pub problem: Option<String>,
}

/// A logical volume. `dev` is None when it cannot be read (unsupported segment type, missing
/// PV); `problem` says why.
#[derive(Clone, Serialize)]
pub struct Lv {
    pub vg: String,
    pub name: String,
    pub uuid: String,
    pub size: u64,
    /// Segment types in order (`striped`, `thin`, `mirror`, ...; LVM writes linear as a
    /// one-stripe `striped`).
    pub segment_types: Vec<String>,
    /// False for LVM's internal LVs (mirror/raid legs, thin pool parts), which lack VISIBLE.
    pub visible: bool,
    #[serde(skip)]
    pub dev: Option<Arc<dyn BlockDevice>>,
    pub problem: Option<String>,
}

#[derive(Clone, Serialize)]
pub struct Vg {
    pub name: String,
    pub uuid: String,
    pub seqno: u64,
    /// In 512-byte sectors, as the metadata writes it.
    pub extent_size: u64,
    /// (PV uuid, guest device name if found on the given disks).
    pub pvs: Vec<(String, Option<String>)>,
    pub lvs: Vec<Lv>,
    pub warnings: Vec<String>,
}

/// One good metadata copy.
struct Copy {
    cand: usize,
    vg: VgMeta,
}

/// A candidate with a PV label.
struct Labelled {
    cand: usize,
    label: PvLabel,
    /// Copies that could not be used, as messages.
    bad_copies: Vec<String>,
}

/// Reads and parses the committed metadata in one area. None: the area holds no copy.
fn read_copy(dev: &dyn BlockDevice, area: label::DiskLocn, device: &str) -> Result<Option<VgMeta>> {
    let h = MdaHeader::read(dev, area, device)?;
    let Some(r) = h.committed() else {
        return Ok(None);
    };
    let (text, at) = h.read_text(dev, r, device)?;
    let tree = metadata::parse(&text).map_err(|e| {
        Error::corrupt(
            device,
            "lvm metadata text",
            at.saturating_add(wide(e.offset)),
            e.to_string(),
        )
    })?;
    VgMeta::from_tree(&tree)
        .map(Some)
        .map_err(|e| Error::corrupt(device, "lvm metadata", at, e))
}

/// Scans `candidates` (guest name, device: whole disks without a partition table, and every
/// partition) for PV labels, reads the newest metadata of each VG and maps its LVs.
pub fn assemble(candidates: &[(String, Arc<dyn BlockDevice>)]) -> Result<(Vec<Pv>, Vec<Vg>)> {
    let mut pvs = Vec::new();
    let mut labelled = Vec::new();
    let mut copies = Vec::new();
    for (ci, (name, dev)) in candidates.iter().enumerate() {
        let label = match PvLabel::find(dev.as_ref(), name) {
            Ok(None) => continue,
            Ok(Some(l)) => l,
            Err(e) => {
                log::warn!("{e}");
                pvs.push(Pv {
                    device: name.clone(),
                    uuid: String::new(),
                    vg_name: None,
                    size: 0,
                    pe_start: None,
                    metadata_areas: 0,
                    problem: Some(e.to_string()),
                });
                continue;
            }
        };
        let mut bad_copies = Vec::new();
        for area in &label.metadata_areas {
            match read_copy(dev.as_ref(), *area, name) {
                Ok(Some(vg)) => copies.push(Copy { cand: ci, vg }),
                Ok(None) => {}
                Err(e) => {
                    log::warn!("{e}");
                    bad_copies.push(e.to_string());
                }
            }
        }
        labelled.push(Labelled {
            cand: ci,
            label,
            bad_copies,
        });
    }

    // The newest copy of each VG (by VG uuid), in the order VGs were first seen.
    let mut order: Vec<String> = Vec::new();
    let mut best: HashMap<String, usize> = HashMap::new();
    for (i, c) in copies.iter().enumerate() {
        match best.get(&c.vg.id) {
            None => {
                order.push(c.vg.id.clone());
                best.insert(c.vg.id.clone(), i);
            }
            Some(&b) if copies[b].vg.seqno < c.vg.seqno => {
                best.insert(c.vg.id.clone(), i);
            }
            Some(_) => {}
        }
    }

    // PV uuid (no dashes) -> first labelled candidate holding it.
    let mut by_uuid: HashMap<String, usize> = HashMap::new();
    let mut dup_warnings: Vec<(String, String)> = Vec::new();
    for (li, l) in labelled.iter().enumerate() {
        if let Some(&first) = by_uuid.get(&l.label.uuid) {
            dup_warnings.push((
                l.label.uuid.clone(),
                format!(
                    "PV {} is on both {} and {}; using {}",
                    dashed(&l.label.uuid),
                    candidates[labelled[first].cand].0,
                    candidates[l.cand].0,
                    candidates[labelled[first].cand].0
                ),
            ));
        } else {
            by_uuid.insert(l.label.uuid.clone(), li);
        }
    }

    let mut vgs = Vec::new();
    let mut pv_vg: HashMap<usize, String> = HashMap::new();
    for id in &order {
        let meta = &copies[best[id]].vg;
        let mut warnings = Vec::new();
        let members: Vec<String> = meta.pvs.iter().map(|p| undashed(&p.id)).collect();
        for c in &copies {
            if c.vg.id == *id && c.vg.seqno < meta.seqno {
                warnings.push(format!(
                    "{} holds older metadata (seqno {}) than the newest (seqno {}), which is used",
                    candidates[c.cand].0, c.vg.seqno, meta.seqno
                ));
            }
        }
        for (uuid, w) in &dup_warnings {
            if members.contains(uuid) {
                warnings.push(w.clone());
            }
        }
        let mut vg_pvs = Vec::new();
        for (p, u) in meta.pvs.iter().zip(&members) {
            let found = by_uuid.get(u).map(|&li| &labelled[li]);
            if let Some(l) = found {
                pv_vg.insert(l.cand, meta.name.clone());
                let (cname, cdev) = &candidates[l.cand];
                if l.label.device_size > cdev.len() {
                    warnings.push(format!(
                        "PV {} on {cname} records a size of {} bytes but the device has only {}: \
                         the disk image may be truncated",
                        p.id,
                        l.label.device_size,
                        cdev.len()
                    ));
                }
                for b in &l.bad_copies {
                    warnings.push(format!("{b}; using another metadata copy"));
                }
            } else {
                warnings.push(format!(
                    "PV {} ({}, last seen as {}) is missing: no given disk holds it",
                    p.id,
                    p.key,
                    p.device.as_deref().unwrap_or("?")
                ));
            }
            vg_pvs.push((p.id.clone(), found.map(|l| candidates[l.cand].0.clone())));
        }
        // Segments name PVs by key (`pv0`); a map keeps hostile texts with many PVs linear.
        let pv_by_key: HashMap<&str, &PvMeta> =
            meta.pvs.iter().map(|p| (p.key.as_str(), p)).collect();
        let mut lvs: Vec<Lv> = meta
            .lvs
            .iter()
            .map(|l| map_lv(meta, l, candidates, &labelled, &by_uuid, &pv_by_key))
            .collect();
        mark_cow_stores(meta, &mut lvs);
        vgs.push(Vg {
            name: meta.name.clone(),
            uuid: meta.id.clone(),
            seqno: meta.seqno,
            extent_size: meta.extent_size,
            pvs: vg_pvs,
            lvs,
            warnings,
        });
    }

    for l in &labelled {
        let vg_name = pv_vg.get(&l.cand).cloned();
        let problem = if vg_name.is_none() && !l.bad_copies.is_empty() {
            Some(format!("no usable metadata: {}", l.bad_copies.join("; ")))
        } else {
            None
        };
        pvs.push(Pv {
            device: candidates[l.cand].0.clone(),
            uuid: dashed(&l.label.uuid),
            vg_name,
            size: l.label.device_size,
            pe_start: l.label.data_areas.first().map(|d| d.offset),
            metadata_areas: l.label.metadata_areas.len(),
            problem,
        });
    }
    Ok((pvs, vgs))
}

/// An old-style snapshot keeps its copy-on-write exceptions in a plain striped LV that carries
/// the snapshot's name; read as is it would look like a (garbage) volume, so it is refused.
fn mark_cow_stores(meta: &VgMeta, lvs: &mut [Lv]) {
    let by_name: HashMap<String, usize> = lvs
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.clone(), i))
        .collect();
    for l in &meta.lvs {
        for s in l.segments.iter().filter(|s| s.kind == "snapshot") {
            let Some(cow) = &s.cow_store else { continue };
            if let Some(lv) = by_name.get(cow).map(|&i| &mut lvs[i]) {
                lv.dev = None;
                lv.problem = Some(format!(
                    "LV {}/{}: it is the copy-on-write store of an old-style snapshot of {}; \
                     snapshots are not supported (the origin is readable as it is now)",
                    meta.name,
                    cow,
                    s.origin.as_deref().unwrap_or("?")
                ));
            }
        }
    }
}

/// Segment types mapped to devices; LVM writes linear as one-stripe `striped`.
fn readable(kind: &str) -> bool {
    kind == "striped" || kind == "linear"
}

fn map_lv(
    vg: &VgMeta,
    l: &LvMeta,
    candidates: &[(String, Arc<dyn BlockDevice>)],
    labelled: &[Labelled],
    by_uuid: &HashMap<String, usize>,
    pv_by_key: &HashMap<&str, &PvMeta>,
) -> Lv {
    // VgMeta::from_tree checked that the product fits.
    let extent_bytes = vg.extent_size.saturating_mul(SECTOR);
    let mut out = Lv {
        vg: vg.name.clone(),
        name: l.name.clone(),
        uuid: l.id.clone(),
        size: l.extents.saturating_mul(extent_bytes),
        segment_types: l.segments.iter().map(|s| s.kind.clone()).collect(),
        visible: l.visible(),
        dev: None,
        problem: None,
    };
    let r = if let Some(p) = &l.problem {
        Err(p.clone())
    } else if let Some(s) = l.segments.iter().find(|s| !readable(&s.kind)) {
        let legs = match s.kind.as_str() {
            "mirror" => "; each leg (hidden LV *_mimage_N) holds a full copy and is readable",
            "raid1" => "; each leg (hidden LV *_rimage_N) holds a full copy and is readable",
            _ => "",
        };
        Err(format!(
            "segment type {} is not supported (only linear and striped LVs are readable){legs}",
            s.kind
        ))
    } else if l.segments.is_empty() {
        Err("the LV has no segments".to_string())
    } else {
        build_segments(l, extent_bytes, candidates, labelled, by_uuid, pv_by_key)
            .and_then(|segs| lv::LvDevice::new(&vg.name, &l.name, segs))
    };
    match r {
        Ok(d) => out.dev = Some(Arc::new(d)),
        Err(e) => out.problem = Some(format!("LV {}/{}: {e}", vg.name, l.name)),
    }
    out
}

fn build_segments(
    l: &LvMeta,
    extent_bytes: u64,
    candidates: &[(String, Arc<dyn BlockDevice>)],
    labelled: &[Labelled],
    by_uuid: &HashMap<String, usize>,
    pv_by_key: &HashMap<&str, &PvMeta>,
) -> std::result::Result<Vec<lv::Seg>, String> {
    let ovf = || "segment offsets overflow".to_string();
    let mut segs = Vec::new();
    for (no, s) in (1usize..).zip(&l.segments) {
        let n = wide(s.stripes.len());
        let area_extents = s
            .extent_count
            .checked_div(n)
            .filter(|_| s.extent_count != 0 && s.extent_count.checked_rem(n) == Some(0));
        let Some(area_extents) = area_extents else {
            return Err(format!(
                "segment {no} has {} extents, not a multiple of its {n} stripes",
                s.extent_count
            ));
        };
        let len = s.extent_count.checked_mul(extent_bytes).ok_or_else(ovf)?;
        let stripe_size = if n == 1 {
            len
        } else {
            s.stripe_size.checked_mul(SECTOR).ok_or_else(ovf)?
        };
        let mut stripes = Vec::new();
        for (pv_key, pe) in &s.stripes {
            let pv = pv_by_key
                .get(pv_key.as_str())
                .ok_or_else(|| format!("segment {no} uses {pv_key}, which the VG does not list"))?;
            let li = by_uuid.get(&undashed(&pv.id)).ok_or_else(|| {
                format!(
                    "PV {} ({pv_key}, last seen as {}) is missing: no given disk holds it",
                    pv.id,
                    pv.device.as_deref().unwrap_or("?")
                )
            })?;
            if pe.checked_add(area_extents).is_none_or(|e| e > pv.pe_count) {
                return Err(format!(
                    "segment {no} uses extents {pe}..{} of {pv_key}, which has only {}",
                    pe.saturating_add(area_extents),
                    pv.pe_count
                ));
            }
            let start = pe
                .checked_mul(extent_bytes)
                .and_then(|b| b.checked_add(pv.pe_start.checked_mul(SECTOR)?))
                .ok_or_else(ovf)?;
            let dev = candidates[labelled[*li].cand].1.clone();
            stripes.push(lv::Stripe { dev, start });
        }
        segs.push(lv::Seg {
            start: s.start_extent.checked_mul(extent_bytes).ok_or_else(ovf)?,
            len,
            stripe_size,
            stripes,
        });
    }
    Ok(segs)
}
