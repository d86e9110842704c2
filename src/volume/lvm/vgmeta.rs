//! The volume group as the metadata text describes it (LVM2 `lib/format_text/import_vsn1.c`
//! reads the same fields): the VG section with `physical_volumes` and `logical_volumes`, each LV
//! with `segmentN` sections. Problems of one LV are kept on that LV, so the others still work.

use super::metadata::{Section, Value};
use crate::bytes::wide;

/// LVM's own limits are far lower in practice; these bound the work on hostile text.
pub const MAX_PVS: usize = 100_000;
pub const MAX_LVS: usize = 100_000;
/// Segments over all LVs of the VG.
pub const MAX_SEGMENTS: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvMeta {
    /// The name segments refer to (`pv0`).
    pub key: String,
    /// With dashes, as written.
    pub id: String,
    /// The device LVM last saw it on (a hint only).
    pub device: Option<String>,
    /// Sectors.
    pub pe_start: u64,
    pub pe_count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegMeta {
    pub start_extent: u64,
    pub extent_count: u64,
    pub kind: String,
    pub stripe_count: u64,
    /// Sectors; 0 for single-stripe segments.
    pub stripe_size: u64,
    /// (PV key, first extent on that PV), one per stripe.
    pub stripes: Vec<(String, u64)>,
    /// For `snapshot` segments: the LV holding the copy-on-write exceptions, and the origin.
    pub cow_store: Option<String>,
    pub origin: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LvMeta {
    pub name: String,
    pub id: String,
    pub status: Vec<String>,
    pub segments: Vec<SegMeta>,
    /// Extents over all segments.
    pub extents: u64,
    /// Why the segment list is unusable, if it is.
    pub problem: Option<String>,
}

impl LvMeta {
    pub fn visible(&self) -> bool {
        self.status.iter().any(|s| s == "VISIBLE")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VgMeta {
    pub name: String,
    pub id: String,
    pub seqno: u64,
    /// Sectors.
    pub extent_size: u64,
    pub pvs: Vec<PvMeta>,
    pub lvs: Vec<LvMeta>,
}

fn uint(s: &Section, key: &str, ctx: &str) -> Result<u64, String> {
    match s.get(key) {
        Some(Value::Int(i)) => {
            u64::try_from(*i).map_err(|_| format!("{ctx}: {key} = {i} is negative"))
        }
        Some(_) => Err(format!("{ctx}: {key} is not an integer")),
        None => Err(format!("{ctx}: {key} is missing")),
    }
}

fn string(s: &Section, key: &str, ctx: &str) -> Result<String, String> {
    s.str(key)
        .map(str::to_string)
        .ok_or_else(|| format!("{ctx}: {key} is missing or not a string"))
}

impl VgMeta {
    /// Reads the VG from a parsed text: the one top-level section is the VG, named after it.
    pub fn from_tree(root: &Section) -> Result<Self, String> {
        let mut vgs = root.sections();
        let (name, vg) = vgs
            .next()
            .ok_or("no volume group section in the metadata text")?;
        if vgs.next().is_some() {
            return Err("more than one volume group section in the metadata text".into());
        }
        let ctx = format!("VG {name}");
        let id = string(vg, "id", &ctx)?;
        let seqno = uint(vg, "seqno", &ctx)?;
        let extent_size = uint(vg, "extent_size", &ctx)?;
        if extent_size == 0 || extent_size.checked_mul(512).is_none() {
            return Err(format!("{ctx}: extent_size {extent_size} is invalid"));
        }
        let mut pvs = Vec::new();
        if let Some(p) = vg.section("physical_volumes") {
            for (key, pv) in p.sections() {
                if pvs.len() >= MAX_PVS {
                    return Err(format!("{ctx}: more than {MAX_PVS} physical volumes"));
                }
                let pctx = format!("{ctx} PV {key}");
                pvs.push(PvMeta {
                    key: key.to_string(),
                    id: string(pv, "id", &pctx)?,
                    device: pv.str("device").map(str::to_string),
                    pe_start: uint(pv, "pe_start", &pctx)?,
                    pe_count: uint(pv, "pe_count", &pctx)?,
                });
            }
        }
        let mut lvs = Vec::new();
        let mut nseg = 0usize;
        if let Some(l) = vg.section("logical_volumes") {
            for (lname, lv) in l.sections() {
                if lvs.len() >= MAX_LVS {
                    return Err(format!("{ctx}: more than {MAX_LVS} logical volumes"));
                }
                let mut m = LvMeta {
                    name: lname.to_string(),
                    id: lv.str("id").unwrap_or_default().to_string(),
                    status: lv
                        .strings("status")
                        .unwrap_or_default()
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                    segments: Vec::new(),
                    extents: 0,
                    problem: None,
                };
                match segments(lv, lname, &mut nseg) {
                    Ok((segs, extents)) => {
                        m.segments = segs;
                        m.extents = extents;
                    }
                    Err(e) => m.problem = Some(e),
                }
                if nseg > MAX_SEGMENTS {
                    return Err(format!("{ctx}: more than {MAX_SEGMENTS} segments"));
                }
                lvs.push(m);
            }
        }
        Ok(VgMeta {
            name: name.to_string(),
            id,
            seqno,
            extent_size,
            pvs,
            lvs,
        })
    }
}

/// The segments of one LV, sorted and checked to tile `0..extents` without gaps or overlaps.
fn segments(lv: &Section, name: &str, nseg: &mut usize) -> Result<(Vec<SegMeta>, u64), String> {
    let mut segs = Vec::new();
    for (key, s) in lv.sections() {
        if !key.starts_with("segment") {
            continue;
        }
        *nseg = nseg.saturating_add(1);
        if *nseg > MAX_SEGMENTS {
            return Err(format!("more than {MAX_SEGMENTS} segments"));
        }
        let ctx = format!("LV {name} {key}");
        let kind = string(s, "type", &ctx)?;
        let mut seg = SegMeta {
            start_extent: uint(s, "start_extent", &ctx)?,
            extent_count: uint(s, "extent_count", &ctx)?,
            kind,
            stripe_count: 0,
            stripe_size: 0,
            stripes: Vec::new(),
            cow_store: s.str("cow_store").map(str::to_string),
            origin: s.str("origin").map(str::to_string),
        };
        if seg.kind == "striped" || seg.kind == "linear" {
            seg.stripe_count = uint(s, "stripe_count", &ctx).or_else(|e| {
                if seg.kind == "linear" {
                    Ok(1)
                } else {
                    Err(e)
                }
            })?;
            if seg.stripe_count > 1 {
                seg.stripe_size = uint(s, "stripe_size", &ctx)?;
            }
            let Some(Value::Array(a)) = s.get("stripes") else {
                return Err(format!("{ctx}: stripes is missing or not an array"));
            };
            let pairs = a.chunks_exact(2);
            if !pairs.remainder().is_empty()
                || wide(pairs.len()) != seg.stripe_count
                || a.is_empty()
            {
                return Err(format!(
                    "{ctx}: stripes lists {} entries for stripe_count {}",
                    a.len(),
                    seg.stripe_count
                ));
            }
            for pair in a.chunks_exact(2) {
                match (&pair[0], &pair[1]) {
                    (Value::Str(pv), Value::Int(pe)) if *pe >= 0 => {
                        // pe >= 0 (the guard): its magnitude is its value.
                        seg.stripes.push((pv.clone(), pe.unsigned_abs()));
                    }
                    _ => return Err(format!("{ctx}: stripes entry is not \"pvN\", extent")),
                }
            }
        }
        segs.push(seg);
    }
    segs.sort_by_key(|s| s.start_extent);
    let mut next = 0u64;
    for s in &segs {
        if s.start_extent != next {
            return Err(format!(
                "segments do not follow each other: extent {} expected, segment starts at {}",
                next, s.start_extent
            ));
        }
        next = next
            .checked_add(s.extent_count)
            .ok_or("segment extents overflow")?;
    }
    Ok((segs, next))
}
