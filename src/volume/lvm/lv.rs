//! A linear or striped logical volume as a device: each segment maps a range of the LV onto one
//! PV range (linear) or onto N PV ranges in `stripe_size` chunks, round-robin (dm-stripe).

use crate::block::{check_range, push_extent, BlockDevice, Extent, LayerInfo, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// One stripe of a segment: its PV device and the byte offset of its first extent there.
#[derive(Clone)]
pub struct Stripe {
    pub dev: Arc<dyn BlockDevice>,
    pub start: u64,
}

/// A segment in bytes: `[start, start+len)` of the LV. With one stripe `stripe_size` is `len`.
#[derive(Clone)]
pub struct Seg {
    pub start: u64,
    pub len: u64,
    pub stripe_size: u64,
    pub stripes: Vec<Stripe>,
}

pub struct LvDevice {
    vg: String,
    lv: String,
    size: u64,
    segs: Vec<Seg>,
}

impl LvDevice {
    /// Checks that the segments tile `0..size` and that every stripe's area lies inside its
    /// device, so reads never compute an offset outside a PV.
    pub fn new(vg: &str, lv: &str, segs: Vec<Seg>) -> std::result::Result<Self, String> {
        let mut next = 0u64;
        for (i, s) in segs.iter().enumerate() {
            if s.start != next || s.len == 0 {
                return Err(format!("segment {i} does not continue the previous one"));
            }
            let n = s.stripes.len() as u64;
            if n == 0 || s.stripe_size == 0 {
                return Err(format!("segment {i} has no stripes or a zero stripe size"));
            }
            if s.len % n != 0 || (s.len / n) % s.stripe_size != 0 {
                return Err(format!(
                    "segment {i}: {} bytes do not divide into {n} stripes of {}-byte chunks",
                    s.len, s.stripe_size
                ));
            }
            let area = s.len / n;
            for st in &s.stripes {
                if st.start.checked_add(area).is_none_or(|e| e > st.dev.len()) {
                    return Err(format!(
                        "segment {i}: stripe area at {:#x} (+{area} bytes) lies past its PV's \
                         device ({} bytes)",
                        st.start,
                        st.dev.len()
                    ));
                }
            }
            next = s.start.checked_add(s.len).ok_or("LV size overflows")?;
        }
        Ok(LvDevice {
            vg: vg.into(),
            lv: lv.into(),
            size: next,
            segs,
        })
    }

    /// Calls `f(lv_offset, device, device_offset, n)` for each contiguous piece of
    /// `[off, off+len)`, in order.
    fn pieces(
        &self,
        off: u64,
        len: u64,
        mut f: impl FnMut(u64, &Arc<dyn BlockDevice>, u64, u64) -> Result<()>,
    ) -> Result<()> {
        check_range(off, len, self.size)?;
        let mut pos = off;
        let end = off + len;
        // First segment that ends after `pos`.
        let mut si = self.segs.partition_point(|s| s.start + s.len <= pos);
        while pos < end {
            let s = &self.segs[si];
            let o = pos - s.start;
            let n = s.stripes.len() as u64;
            let (idx, dev_off, avail) = if n == 1 {
                (0, s.stripes[0].start + o, s.len - o)
            } else {
                let chunk = o / s.stripe_size;
                let within = o % s.stripe_size;
                let idx = (chunk % n) as usize;
                let row = chunk / n;
                (
                    idx,
                    s.stripes[idx].start + row * s.stripe_size + within,
                    s.stripe_size - within,
                )
            };
            let take = avail.min(end - pos);
            f(pos, &s.stripes[idx].dev, dev_off, take)?;
            pos += take;
            if pos == s.start + s.len {
                si += 1;
            }
        }
        Ok(())
    }
}

impl BlockDevice for LvDevice {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.pieces(off, buf.len() as u64, |lv_off, dev, dev_off, n| {
            let b = (lv_off - off) as usize;
            dev.read_at(&mut buf[b..b + n as usize], dev_off)
        })
    }

    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        let mut out = Vec::new();
        self.pieces(off, len, |lv_off, dev, dev_off, n| {
            for mut e in dev.extents(dev_off, n)? {
                // A well-behaved device answers inside [dev_off, dev_off+n); saturate anyway.
                e.offset = e.offset.saturating_sub(dev_off).saturating_add(lv_off);
                push_extent(&mut out, e);
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn info(&self) -> Result<LayerInfo> {
        let types: Vec<&str> = self
            .segs
            .iter()
            .map(|s| {
                if s.stripes.len() > 1 {
                    "striped"
                } else {
                    "linear"
                }
            })
            .collect();
        Ok(LayerInfo {
            filename: PathBuf::from(format!("/dev/{}/{}", self.vg, self.lv)),
            format: "lvm-lv".into(),
            virtual_size: self.size,
            specific: vec![
                ("vg".into(), serde_json::json!(self.vg)),
                ("lv".into(), serde_json::json!(self.lv)),
                ("segments".into(), serde_json::json!(types)),
            ],
            ..Default::default()
        })
    }
}
