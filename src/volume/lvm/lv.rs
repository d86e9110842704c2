//! A linear or striped logical volume as a device: each segment maps a range of the LV onto one
//! PV range (linear) or onto N PV ranges in `stripe_size` chunks, round-robin (dm-stripe).

use crate::block::{
    check_range, push_extent, BlockDevice, Describe, Error, Extent, LayerInfo, Result,
};
use crate::bytes::wide;
use std::ops::Range;
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
            let n = wide(s.stripes.len());
            if n == 0 || s.stripe_size == 0 {
                return Err(format!("segment {i} has no stripes or a zero stripe size"));
            }
            // Each stripe's area: len / n bytes, a whole number of chunks.
            let area = s.len.checked_div(n).filter(|a| {
                s.len.checked_rem(n) == Some(0) && a.checked_rem(s.stripe_size) == Some(0)
            });
            let Some(area) = area else {
                return Err(format!(
                    "segment {i}: {} bytes do not divide into {n} stripes of {}-byte chunks",
                    s.len, s.stripe_size
                ));
            };
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
        // check_range: off + len does not overflow; `new`: no segment end overflows.
        let end = off.saturating_add(len);
        // First segment that ends after `pos`.
        let mut si = self
            .segs
            .partition_point(|s| s.start.saturating_add(s.len) <= pos);
        while pos < end {
            let piece = self
                .segs
                .get(si)
                .and_then(|s| Some((s, locate(s, pos)?)))
                .filter(|(_, (_, _, avail))| *avail > 0);
            let Some((s, (stripe, dev_off, avail))) = piece else {
                return Err(Error::corrupt(
                    format!("{}/{}", self.vg, self.lv),
                    "LV segment map",
                    pos,
                    "no stripe maps this offset",
                ));
            };
            let take = avail.min(end.saturating_sub(pos));
            f(pos, &stripe.dev, dev_off, take)?;
            pos = pos.saturating_add(take);
            if Some(pos) == s.start.checked_add(s.len) {
                si = si.saturating_add(1);
            }
        }
        Ok(())
    }
}

/// Where LV offset `pos` of segment `s` lies: the stripe, the offset on its device, and the
/// bytes left in that chunk (dm-stripe: chunk c goes to stripe c mod n, row c / n). `None`
/// only if `LvDevice::new`'s checks missed a case.
fn locate(s: &Seg, pos: u64) -> Option<(&Stripe, u64, u64)> {
    let o = pos.checked_sub(s.start)?;
    if let [one] = s.stripes.as_slice() {
        return Some((one, one.start.checked_add(o)?, s.len.checked_sub(o)?));
    }
    let n = wide(s.stripes.len());
    let chunk = o.checked_div(s.stripe_size)?;
    let within = o.checked_rem(s.stripe_size)?;
    let stripe = s
        .stripes
        .get(usize::try_from(chunk.checked_rem(n)?).ok()?)?;
    let row = chunk.checked_div(n)?;
    let dev_off = stripe
        .start
        .checked_add(row.checked_mul(s.stripe_size)?)?
        .checked_add(within)?;
    Some((stripe, dev_off, s.stripe_size.checked_sub(within)?))
}

/// Where the piece at LV offset `lv_off`, `n` bytes long, lies in a buffer for LV offset `off`.
fn piece(off: u64, lv_off: u64, n: u64) -> Option<Range<usize>> {
    let b = usize::try_from(lv_off.checked_sub(off)?).ok()?;
    Some(b..b.checked_add(usize::try_from(n).ok()?)?)
}

/// A piece `pieces` handed out that does not lie inside the caller's buffer of `len` bytes.
fn outside(off: u64, lv_off: u64, n: u64, len: u64) -> Error {
    Error::OutOfRange {
        offset: lv_off.saturating_sub(off),
        len: n,
        size: len,
    }
}

impl BlockDevice for LvDevice {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let len = wide(buf.len());
        self.pieces(off, len, |lv_off, dev, dev_off, n| {
            let part = piece(off, lv_off, n).and_then(|r| buf.get_mut(r));
            dev.read_at(part.ok_or(outside(off, lv_off, n, len))?, dev_off)
        })
    }

    /// Writes land on the PV ranges the segments map, piece by piece as reads do (dm-linear and
    /// dm-stripe); a write past the LV's end is refused before any piece is written.
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        let len = wide(buf.len());
        self.pieces(off, len, |lv_off, dev, dev_off, n| {
            let part = piece(off, lv_off, n).and_then(|r| buf.get(r));
            dev.write_at(part.ok_or(outside(off, lv_off, n, len))?, dev_off)
        })
    }

    /// Flushes every distinct device under the LV once (the PVs of one disk share it).
    fn flush(&self) -> Result<()> {
        let mut done: Vec<*const ()> = Vec::new();
        for st in self.segs.iter().flat_map(|s| &s.stripes) {
            let key = Arc::as_ptr(&st.dev).cast::<()>();
            if !done.contains(&key) {
                done.push(key);
                st.dev.flush()?;
            }
        }
        Ok(())
    }

    /// The hint goes to each PV range the LV range maps (clipped to the LV).
    fn prefetch(&self, off: u64, len: u64) {
        let len = len.min(self.size.saturating_sub(off));
        let _ = self.pieces(off, len, |_, dev, dev_off, n| {
            dev.prefetch(dev_off, n);
            Ok(())
        });
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
}

impl Describe for LvDevice {
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

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // in-memory fixtures
mod tests {
    use super::*;
    use crate::block::{Error, ExtentKind};
    use parking_lot::Mutex;

    /// A writable disk in memory.
    struct Disk(Mutex<Vec<u8>>);

    impl BlockDevice for Disk {
        fn len(&self) -> u64 {
            self.0.lock().len() as u64
        }
        fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
            check_range(off, buf.len() as u64, self.len())?;
            let o = off as usize;
            buf.copy_from_slice(&self.0.lock()[o..o + buf.len()]);
            Ok(())
        }
        fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
            check_range(off, buf.len() as u64, self.len())?;
            let o = off as usize;
            self.0.lock()[o..o + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
            Ok(vec![Extent::new(off, len, ExtentKind::Data)])
        }
    }

    impl Describe for Disk {
        fn info(&self) -> Result<LayerInfo> {
            Ok(LayerInfo::default())
        }
    }

    /// A linear segment on disk A, then a 2-way striped one over A and B (4 KiB chunks).
    fn lv() -> (LvDevice, Arc<Disk>, Arc<Disk>) {
        let a = Arc::new(Disk(Mutex::new(vec![0; 1 << 20])));
        let b = Arc::new(Disk(Mutex::new(vec![0; 1 << 20])));
        let (da, db): (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) = (a.clone(), b.clone());
        let segs = vec![
            Seg {
                start: 0,
                len: 65536,
                stripe_size: 65536,
                stripes: vec![Stripe {
                    dev: da.clone(),
                    start: 4096,
                }],
            },
            Seg {
                start: 65536,
                len: 65536,
                stripe_size: 4096,
                stripes: vec![
                    Stripe {
                        dev: da,
                        start: 131072,
                    },
                    Stripe {
                        dev: db,
                        start: 8192,
                    },
                ],
            },
        ];
        (LvDevice::new("vg", "lv", segs).unwrap(), a, b)
    }

    #[test]
    fn writes_land_where_reads_come_from() {
        let (lv, a, b) = lv();
        // Across the segment boundary and three stripe chunks.
        let data: Vec<u8> = (0..12288u32).map(|i| (i % 251) as u8).collect();
        let off = 65536 - 2048;
        lv.write_at(&data, off).unwrap();
        let mut back = vec![0u8; data.len()];
        lv.read_at(&mut back, off).unwrap();
        assert_eq!(back, data);
        // The linear tail on A, then chunk 0 on A, chunk 1 on B, chunk 2 on A again.
        let (a, b) = (a.0.lock(), b.0.lock());
        assert_eq!(&a[4096 + 63488..4096 + 65536], &data[..2048]);
        assert_eq!(&a[131072..131072 + 4096], &data[2048..6144]);
        assert_eq!(&b[8192..8192 + 4096], &data[6144..10240]);
        assert_eq!(&a[131072 + 4096..131072 + 6144], &data[10240..]);
    }

    #[test]
    fn a_write_past_the_end_writes_nothing() {
        let (lv, a, b) = lv();
        let r = lv.write_at(&[7u8; 8192], 131072 - 4096);
        assert!(matches!(r, Err(Error::OutOfRange { .. })), "{r:?}");
        assert!(a.0.lock().iter().chain(b.0.lock().iter()).all(|&x| x == 0));
    }
}
